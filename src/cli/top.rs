//! `brim top`: a live terminal view of the cluster from the master's `/state` — per-task cpu
//! (rate of the cumulative `cpu_ns` counter), memory, state and agent, and per-agent
//! allocation, measured use and slack. Sortable; works on any terminal (ratatui + crossterm,
//! no mouse, no true colour needed).
//!
//! The pure parts (rates, sorting, formatting, rows) are plain functions tested below; the
//! terminal loop is a thin shell around them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use brim_framework::state::StateClient;
use crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Paragraph, Row, Table};
use ratatui::Frame;
use serde::Deserialize;
use tokio::sync::{mpsc, Notify};

#[derive(clap::Args)]
pub(crate) struct TopArgs {
    /// Master address, host:port.
    #[arg(long, env = "BRIM_MASTER", default_value = super::DEFAULT_MASTER)]
    pub(crate) master: String,
    /// Seconds between refreshes.
    #[arg(long, short = 'n', value_name = "SECS", default_value_t = 1.0, value_parser = parse_interval)]
    pub(crate) interval: f64,
    /// Initial sort column: cpu, mem, name, state, agent or slack.
    #[arg(long, default_value = "cpu", value_parser = parse_sort)]
    pub(crate) sort: SortKey,
    /// Show ended tasks too (toggle with `t`).
    #[arg(long)]
    pub(crate) all: bool,
}

fn parse_interval(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if (0.1..=3600.0).contains(&x) => Ok(x),
        _ => Err(format!(
            "`{s}` is not an interval: give seconds between 0.1 and 3600"
        )),
    }
}

fn parse_sort(s: &str) -> Result<SortKey, String> {
    SortKey::ALL
        .into_iter()
        .find(|k| k.name() == s)
        .ok_or_else(|| {
            format!("unknown sort column `{s}`: use cpu, mem, name, state, agent or slack")
        })
}

// ---------- the /state subset brim top reads ----------

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
struct TopState {
    master_id: String,
    leader: String,
    agents: Vec<AgentJson>,
    tasks: Vec<TaskJson>,
    completed_tasks: Vec<TaskJson>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
struct AgentJson {
    id: String,
    hostname: String,
    active: bool,
    status: String,
    resources: BTreeMap<String, serde_json::Value>,
    used: BTreeMap<String, serde_json::Value>,
    /// Not in /state yet (oversubscription): 0 until it is.
    revocable: BTreeMap<String, serde_json::Value>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
struct TaskJson {
    id: String,
    name: String,
    framework_id: String,
    agent_id: String,
    state: String,
    resources: BTreeMap<String, serde_json::Value>,
    usage: Option<UsageJson>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
struct UsageJson {
    cpu_ns: Option<u64>,
    mem_current_bytes: Option<u64>,
    timestamp: Option<f64>,
}

fn scalar(map: &BTreeMap<String, serde_json::Value>, name: &str) -> f64 {
    map.get(name)
        .and_then(serde_json::Value::as_f64)
        .unwrap_or(0.0)
}

fn is_terminal(state: &str) -> bool {
    brim_framework::v1::TaskState::from_str_name(state)
        .is_some_and(brim_framework::v1::TaskState::is_terminal)
}

// ---------- rates ----------

/// CPUs used between two samples of a cumulative cpu-ns counter (1.0 = one core busy);
/// `None` when time did not advance or the counter went back (container restarted).
fn cpu_rate(prev: Sample, cur: Sample) -> Option<f64> {
    let dt = cur.1 - prev.1;
    if dt <= 0.0 || cur.0 < prev.0 {
        return None;
    }
    Some((cur.0 - prev.0) as f64 / 1e9 / dt)
}

/// One usage sample: (cumulative cpu ns, timestamp in seconds).
type Sample = (u64, f64);

/// Remembers the last two distinct usage samples per task and derives the cpu rate.
#[derive(Default)]
struct Rates {
    /// task id → (latest sample, the one before it).
    samples: HashMap<String, (Sample, Option<Sample>)>,
}

impl Rates {
    /// Feeds one `/state`; forgets tasks that left it.
    fn observe(&mut self, tasks: &[TaskJson]) {
        let mut seen = HashMap::with_capacity(tasks.len());
        for t in tasks {
            let Some(UsageJson {
                cpu_ns: Some(ns),
                timestamp: Some(ts),
                ..
            }) = t.usage
            else {
                continue;
            };
            let entry = match self.samples.remove(&t.id) {
                None => ((ns, ts), None),
                Some((latest, _)) if ts > latest.1 => ((ns, ts), Some(latest)),
                Some(same) => same,
            };
            seen.insert(t.id.clone(), entry);
        }
        self.samples = seen;
    }

    /// CPUs the task used over its last sample interval.
    fn cpus(&self, task_id: &str) -> Option<f64> {
        let (latest, prev) = self.samples.get(task_id)?;
        cpu_rate((*prev)?, *latest)
    }
}

// ---------- rows and sorting ----------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SortKey {
    Cpu,
    Mem,
    Name,
    State,
    Agent,
    Slack,
}

impl SortKey {
    const ALL: [SortKey; 6] = [
        SortKey::Cpu,
        SortKey::Mem,
        SortKey::Name,
        SortKey::State,
        SortKey::Agent,
        SortKey::Slack,
    ];

    fn name(self) -> &'static str {
        match self {
            SortKey::Cpu => "cpu",
            SortKey::Mem => "mem",
            SortKey::Name => "name",
            SortKey::State => "state",
            SortKey::Agent => "agent",
            SortKey::Slack => "slack",
        }
    }

    fn from_key(c: char) -> Option<SortKey> {
        Some(match c {
            'c' => SortKey::Cpu,
            'm' => SortKey::Mem,
            'n' => SortKey::Name,
            's' => SortKey::State,
            'a' => SortKey::Agent,
            'l' => SortKey::Slack,
            _ => return None,
        })
    }

    /// Numbers sort biggest first, names A→Z; `reverse` flips either.
    fn descending(self) -> bool {
        matches!(self, SortKey::Cpu | SortKey::Mem | SortKey::Slack)
    }
}

#[derive(Clone, Debug, PartialEq)]
struct TaskRow {
    id: String,
    name: String,
    state: String,
    agent: String,
    /// Measured cpus (None until two samples arrived).
    cpu: Option<f64>,
    cpus_asked: f64,
    mem_bytes: Option<u64>,
    mem_asked_mb: f64,
}

impl TaskRow {
    /// Asked minus used cpus: what the task holds but does not use.
    fn slack(&self) -> f64 {
        (self.cpus_asked - self.cpu.unwrap_or(0.0)).max(0.0)
    }
}

#[derive(Clone, Debug, PartialEq)]
struct AgentRow {
    id: String,
    hostname: String,
    active: bool,
    status: String,
    cpus_total: f64,
    cpus_alloc: f64,
    /// Sum of measured cpu of its running tasks.
    cpus_used: f64,
    mem_total_mb: f64,
    mem_alloc_mb: f64,
    mem_used_bytes: u64,
    revocable_cpus: f64,
    tasks: usize,
}

impl AgentRow {
    /// Allocated but unused cpus: what oversubscription could offer as revocable.
    fn slack(&self) -> f64 {
        (self.cpus_alloc - self.cpus_used).max(0.0)
    }
}

fn task_rows(state: &TopState, rates: &Rates, all: bool) -> Vec<TaskRow> {
    let host: HashMap<&str, &str> = state
        .agents
        .iter()
        .map(|a| {
            let name = if a.hostname.is_empty() {
                &a.id
            } else {
                &a.hostname
            };
            (a.id.as_str(), name.as_str())
        })
        .collect();
    let completed = state.completed_tasks.iter().filter(|_| all);
    state
        .tasks
        .iter()
        .filter(|t| all || !is_terminal(&t.state))
        .chain(completed)
        .map(|t| TaskRow {
            id: t.id.clone(),
            name: t.name.clone(),
            state: t.state.trim_start_matches("TASK_").to_string(),
            agent: host
                .get(t.agent_id.as_str())
                .map_or_else(|| t.agent_id.clone(), |h| h.to_string()),
            cpu: rates.cpus(&t.id).filter(|_| !is_terminal(&t.state)),
            cpus_asked: scalar(&t.resources, "cpus"),
            mem_bytes: t.usage.and_then(|u| u.mem_current_bytes),
            mem_asked_mb: scalar(&t.resources, "mem"),
        })
        .collect()
}

fn agent_rows(state: &TopState, rates: &Rates) -> Vec<AgentRow> {
    state
        .agents
        .iter()
        .map(|a| {
            let running: Vec<&TaskJson> = state
                .tasks
                .iter()
                .filter(|t| t.agent_id == a.id && !is_terminal(&t.state))
                .collect();
            AgentRow {
                id: a.id.clone(),
                hostname: a.hostname.clone(),
                active: a.active,
                status: a.status.clone(),
                cpus_total: scalar(&a.resources, "cpus"),
                cpus_alloc: scalar(&a.used, "cpus"),
                cpus_used: running.iter().filter_map(|t| rates.cpus(&t.id)).sum(),
                mem_total_mb: scalar(&a.resources, "mem"),
                mem_alloc_mb: scalar(&a.used, "mem"),
                mem_used_bytes: running
                    .iter()
                    .filter_map(|t| t.usage.and_then(|u| u.mem_current_bytes))
                    .sum(),
                revocable_cpus: scalar(&a.revocable, "cpus"),
                tasks: running.len(),
            }
        })
        .collect()
}

fn sort_tasks(rows: &mut [TaskRow], key: SortKey, reverse: bool) {
    use std::cmp::Ordering;
    let num = |a: f64, b: f64| a.total_cmp(&b);
    rows.sort_by(|a, b| {
        let o = match key {
            SortKey::Cpu => num(a.cpu.unwrap_or(-1.0), b.cpu.unwrap_or(-1.0)),
            SortKey::Mem => a.mem_bytes.cmp(&b.mem_bytes),
            SortKey::Name => a.name.cmp(&b.name),
            SortKey::State => a.state.cmp(&b.state),
            SortKey::Agent => a.agent.cmp(&b.agent),
            SortKey::Slack => num(a.slack(), b.slack()),
        };
        let o = if key.descending() { o.reverse() } else { o };
        let o = if reverse { o.reverse() } else { o };
        // Stable, readable ties: by id.
        if o == Ordering::Equal {
            a.id.cmp(&b.id)
        } else {
            o
        }
    });
}

fn sort_agents(rows: &mut [AgentRow], key: SortKey, reverse: bool) {
    use std::cmp::Ordering;
    rows.sort_by(|a, b| {
        let o = match key {
            SortKey::Cpu => a.cpus_used.total_cmp(&b.cpus_used),
            SortKey::Mem => a.mem_used_bytes.cmp(&b.mem_used_bytes),
            SortKey::Name | SortKey::Agent => a.hostname.cmp(&b.hostname),
            SortKey::State => b.active.cmp(&a.active).then(a.status.cmp(&b.status)),
            SortKey::Slack => a.slack().total_cmp(&b.slack()),
        };
        let o = if key.descending() { o.reverse() } else { o };
        let o = if reverse { o.reverse() } else { o };
        if o == Ordering::Equal {
            a.id.cmp(&b.id)
        } else {
            o
        }
    });
}

// ---------- formatting ----------

/// `512B`, `1.5K`, `64M`, `2.0G`: at most four characters of number, binary units.
fn fmt_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "K", "M", "G", "T"];
    let mut x = b as f64;
    let mut i = 0;
    while x >= 1024.0 && i < UNITS.len() - 1 {
        x /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b}B")
    } else if x < 10.0 {
        format!("{x:.1}{}", UNITS[i])
    } else {
        format!("{x:.0}{}", UNITS[i])
    }
}

/// Percent of one core, `-` before the second sample.
fn fmt_cpu(cpus: Option<f64>) -> String {
    cpus.map_or_else(|| "-".to_string(), |c| format!("{:.1}%", c * 100.0))
}

/// `0.5`, `2`, `0.125`: at most three decimals, no trailing zeros.
fn fmt_num(x: f64) -> String {
    let s = format!("{x:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0" } else { s }.to_string()
}

fn fmt_mb(mb: f64) -> String {
    // Truncation is intended: MiB → bytes for display only.
    fmt_bytes((mb.max(0.0) * 1024.0 * 1024.0) as u64)
}

// ---------- the terminal shell ----------

/// Everything the screen shows.
struct View {
    master: String,
    interval: f64,
    sort: SortKey,
    reverse: bool,
    all: bool,
    focus_agents: bool,
    state: Option<TopState>,
    error: Option<String>,
    rates: Rates,
}

enum Input {
    Quit,
    Redraw,
    Refresh,
}

impl View {
    /// Applies one key; `None` when it means nothing here.
    fn key(&mut self, k: KeyEvent) -> Option<Input> {
        if k.kind == KeyEventKind::Release {
            return None;
        }
        match k.code {
            KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => Some(Input::Quit),
            KeyCode::Char('q') | KeyCode::Esc => Some(Input::Quit),
            KeyCode::Char('r') => {
                self.reverse = !self.reverse;
                Some(Input::Redraw)
            }
            KeyCode::Char('t') => {
                self.all = !self.all;
                Some(Input::Redraw)
            }
            KeyCode::Tab => {
                self.focus_agents = !self.focus_agents;
                Some(Input::Redraw)
            }
            KeyCode::Char(' ') => Some(Input::Refresh),
            KeyCode::Char(c) => {
                let key = SortKey::from_key(c)?;
                if key == self.sort {
                    self.reverse = !self.reverse;
                } else {
                    self.sort = key;
                    self.reverse = false;
                }
                Some(Input::Redraw)
            }
            _ => None,
        }
    }

    fn draw(&self, f: &mut Frame) {
        let empty = TopState::default();
        let state = self.state.as_ref().unwrap_or(&empty);
        let mut tasks = task_rows(state, &self.rates, self.all);
        let mut agents = agent_rows(state, &self.rates);
        let (tsort, asort) = if self.focus_agents {
            (SortKey::Cpu, self.sort)
        } else {
            (self.sort, SortKey::Name)
        };
        sort_tasks(&mut tasks, tsort, !self.focus_agents && self.reverse);
        sort_agents(&mut agents, asort, self.focus_agents && self.reverse);

        let agent_height = (agents.len() as u16).saturating_add(3).min(12);
        let [head, agent_area, task_area, help] = Layout::vertical([
            Constraint::Length(3),
            Constraint::Length(agent_height),
            Constraint::Min(5),
            Constraint::Length(1),
        ])
        .areas(f.area());

        f.render_widget(Paragraph::new(self.header(state, &tasks, &agents)), head);

        let bold = Style::new().add_modifier(Modifier::BOLD);
        let focus = |on: bool| {
            if on {
                Style::new().fg(Color::Cyan)
            } else {
                Style::new()
            }
        };
        let arrow = if self.reverse { "▲" } else { "▼" };
        let title = |name: &str, on: bool, key: SortKey| {
            if on {
                format!(" {name} · sort: {} {arrow} ", key.name())
            } else {
                format!(" {name} ")
            }
        };

        let agent_table = Table::new(
            agents.iter().map(|a| {
                let status = if a.active {
                    "up".to_string()
                } else if a.status.is_empty() {
                    "down".to_string()
                } else {
                    a.status.clone()
                };
                Row::new(vec![
                    Cell::from(if a.hostname.is_empty() {
                        a.id.clone()
                    } else {
                        a.hostname.clone()
                    }),
                    Cell::from(status),
                    Cell::from(format!(
                        "{}/{}",
                        fmt_num(a.cpus_alloc),
                        fmt_num(a.cpus_total)
                    )),
                    Cell::from(format!("{:.2}", a.cpus_used)),
                    Cell::from(format!(
                        "{}/{}",
                        fmt_mb(a.mem_alloc_mb),
                        fmt_mb(a.mem_total_mb)
                    )),
                    Cell::from(fmt_bytes(a.mem_used_bytes)),
                    Cell::from(format!("{:.2}", a.slack())),
                    Cell::from(fmt_num(a.revocable_cpus)),
                    Cell::from(a.tasks.to_string()),
                ])
            }),
            // Fits 80 columns: allocated/total, then measured use, per resource.
            [
                Constraint::Min(10),
                Constraint::Length(7),
                Constraint::Length(9),
                Constraint::Length(6),
                Constraint::Length(11),
                Constraint::Length(6),
                Constraint::Length(6),
                Constraint::Length(5),
                Constraint::Length(5),
            ],
        )
        .header(
            Row::new([
                "AGENT", "STATUS", "CPUS", "USED", "MEM", "USED", "SLACK", "REVOC", "TASKS",
            ])
            .style(bold),
        )
        .block(
            Block::bordered()
                .title(title("agents", self.focus_agents, asort))
                .border_style(focus(self.focus_agents)),
        );
        f.render_widget(agent_table, agent_area);

        let task_table = Table::new(
            tasks.iter().map(|t| {
                let state_style = match t.state.as_str() {
                    "RUNNING" => Style::new().fg(Color::Green),
                    "FINISHED" => Style::new().fg(Color::Blue),
                    "STAGING" | "STARTING" | "KILLING" => Style::new().fg(Color::Yellow),
                    _ => Style::new().fg(Color::Red),
                };
                Row::new(vec![
                    Cell::from(t.id.clone()),
                    Cell::from(t.name.clone()),
                    Cell::from(t.state.clone()).style(state_style),
                    Cell::from(t.agent.clone()),
                    Cell::from(fmt_cpu(t.cpu)),
                    Cell::from(fmt_num(t.cpus_asked)),
                    Cell::from(t.mem_bytes.map_or_else(|| "-".to_string(), fmt_bytes)),
                    Cell::from(fmt_mb(t.mem_asked_mb)),
                ])
            }),
            [
                Constraint::Min(22),
                Constraint::Min(10),
                Constraint::Length(9),
                Constraint::Min(10),
                Constraint::Length(8),
                Constraint::Length(6),
                Constraint::Length(7),
                Constraint::Length(7),
            ],
        )
        .header(
            Row::new([
                "TASK", "NAME", "STATE", "AGENT", "CPU", "ASKED", "MEM", "LIMIT",
            ])
            .style(bold),
        )
        .block(
            Block::bordered()
                .title(title(
                    if self.all { "tasks (all)" } else { "tasks" },
                    !self.focus_agents,
                    tsort,
                ))
                .border_style(focus(!self.focus_agents)),
        );
        f.render_widget(task_table, task_area);

        f.render_widget(
            Paragraph::new(
                " q quit  c/m/n/s/a/l sort  r reverse  tab agents|tasks  t ended  space refresh",
            )
            .style(Style::new().add_modifier(Modifier::DIM)),
            help,
        );
    }

    fn header(&self, state: &TopState, tasks: &[TaskRow], agents: &[AgentRow]) -> Vec<Line<'_>> {
        let sum = |f: fn(&AgentRow) -> f64| agents.iter().filter(|a| a.active).map(f).sum::<f64>();
        let running = tasks.iter().filter(|t| t.state == "RUNNING").count();
        let first = Line::from(vec![
            Span::styled("brim top", Style::new().add_modifier(Modifier::BOLD)),
            Span::raw(format!(
                "  master {} ({})  every {}s{}",
                self.master,
                if state.master_id.is_empty() {
                    "-"
                } else {
                    &state.master_id
                },
                fmt_num(self.interval),
                if state.leader.is_empty() || state.leader == self.master {
                    String::new()
                } else {
                    format!("  leader {}", state.leader)
                },
            )),
        ]);
        if let Some(e) = &self.error {
            let error = Line::from(Span::styled(
                format!("master unreachable: {e}"),
                Style::new().fg(Color::Red),
            ));
            return vec![first, error];
        }
        let second = Line::from(format!(
            "agents {}/{}  tasks {running} running  {} ended",
            agents.iter().filter(|a| a.active).count(),
            agents.len(),
            state.completed_tasks.len(),
        ));
        let third = Line::from(format!(
            "cpus {}/{} alloc, {:.2} used, {:.2} slack, {} revocable  mem {}/{}",
            fmt_num(sum(|a| a.cpus_alloc)),
            fmt_num(sum(|a| a.cpus_total)),
            sum(|a| a.cpus_used),
            sum(AgentRow::slack),
            fmt_num(sum(|a| a.revocable_cpus)),
            fmt_mb(sum(|a| a.mem_alloc_mb)),
            fmt_mb(sum(|a| a.mem_total_mb)),
        ));
        vec![first, second, third]
    }
}

/// Reads keys on a thread (crossterm's reader blocks) until the receiver goes away.
fn spawn_key_reader() -> mpsc::UnboundedReceiver<KeyEvent> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || loop {
        if tx.is_closed() {
            return;
        }
        match event::poll(Duration::from_millis(100)) {
            Ok(true) => match event::read() {
                Ok(Event::Key(k)) => {
                    if tx.send(k).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => return,
            },
            Ok(false) => {}
            Err(_) => return,
        }
    });
    rx
}

pub(crate) async fn run(a: TopArgs) -> anyhow::Result<()> {
    let client = StateClient::with_security(&a.master, &super::security::client())?;
    let mut view = View {
        master: a.master.clone(),
        interval: a.interval,
        sort: a.sort,
        reverse: false,
        all: a.all,
        focus_agents: false,
        state: None,
        error: None,
        rates: Rates::default(),
    };
    let mut terminal =
        ratatui::try_init().context("cannot set up the terminal (is this a TTY?)")?;
    let result = event_loop(&mut terminal, &client, &mut view).await;
    ratatui::restore();
    result
}

/// Fetches `/state` every `interval` (or at once when `now` is notified) on its own task, so
/// a slow master never delays keys: the screen stays responsive and `q` always quits.
fn spawn_fetcher(
    client: StateClient,
    interval: Duration,
    now: Arc<Notify>,
) -> (mpsc::Receiver<Result<TopState, String>>, AbortOnDrop) {
    let (tx, rx) = mpsc::channel(1);
    let task = tokio::spawn(async move {
        loop {
            let result = match client.fetch_json().await {
                Ok(json) => serde_json::from_value::<TopState>(json)
                    .map_err(|e| format!("cannot read /state: {e}")),
                Err(e) => Err(e.to_string()),
            };
            if tx.send(result).await.is_err() {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                () = now.notified() => {}
            }
        }
    });
    (rx, AbortOnDrop(task))
}

/// Stops a background task when the screen goes away.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn event_loop(
    terminal: &mut ratatui::DefaultTerminal,
    client: &StateClient,
    view: &mut View,
) -> anyhow::Result<()> {
    let mut keys = spawn_key_reader();
    let now = Arc::new(Notify::new());
    let (mut states, _fetcher) = spawn_fetcher(
        client.clone(),
        Duration::from_secs_f64(view.interval),
        now.clone(),
    );
    loop {
        terminal
            .draw(|f| view.draw(f))
            .context("cannot draw to the terminal")?;
        tokio::select! {
            r = states.recv() => match r {
                Some(Ok(s)) => {
                    view.rates.observe(&s.tasks);
                    view.state = Some(s);
                    view.error = None;
                }
                Some(Err(e)) => view.error = Some(e),
                None => return Ok(()),
            },
            k = keys.recv() => match k.and_then(|k| view.key(k)) {
                Some(Input::Quit) => return Ok(()),
                Some(Input::Refresh) => now.notify_one(),
                Some(Input::Redraw) => {}
                // The reader ended (no terminal): nothing more will come.
                None if keys.is_closed() => return Ok(()),
                None => continue,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str, state: &str, cpu_ns: u64, ts: f64, mem: u64) -> TaskJson {
        TaskJson {
            id: id.into(),
            name: format!("n-{id}"),
            framework_id: "f".into(),
            agent_id: "a1".into(),
            state: state.into(),
            resources: serde_json::from_value(serde_json::json!({"cpus": 0.5, "mem": 64}))
                .unwrap_or_else(|e| panic!("{e}")),
            usage: Some(UsageJson {
                cpu_ns: Some(cpu_ns),
                mem_current_bytes: Some(mem),
                timestamp: Some(ts),
            }),
        }
    }

    #[test]
    fn cpu_rate_from_cumulative_counters() {
        let check = |prev: Sample, cur: Sample, want: Option<f64>| {
            let got = cpu_rate(prev, cur);
            match (got, want) {
                (Some(g), Some(w)) => {
                    assert!((g - w).abs() < 1e-9, "{prev:?}->{cur:?}: {g} != {w}")
                }
                _ => assert_eq!(got, want, "{prev:?}->{cur:?}"),
            }
        };
        check((0, 10.0), (1_000_000_000, 11.0), Some(1.0));
        check((0, 10.0), (500_000_000, 12.0), Some(0.25));
        check((5, 10.0), (2_000_000_005, 11.0), Some(2.0));
        check((0, 10.0), (100, 10.0), None); // no time passed
        check((900, 10.0), (100, 11.0), None); // counter reset
    }

    #[test]
    fn rates_need_two_distinct_samples_and_forget_gone_tasks() {
        let mut r = Rates::default();
        r.observe(&[task("t1", "TASK_RUNNING", 0, 100.0, 1)]);
        assert_eq!(r.cpus("t1"), None);
        // Same sample again (master has not received a new one): no change.
        r.observe(&[task("t1", "TASK_RUNNING", 0, 100.0, 1)]);
        assert_eq!(r.cpus("t1"), None);
        r.observe(&[task("t1", "TASK_RUNNING", 250_000_000, 101.0, 1)]);
        assert_eq!(r.cpus("t1"), Some(0.25));
        r.observe(&[task("t1", "TASK_RUNNING", 250_000_000, 101.0, 1)]);
        assert_eq!(
            r.cpus("t1"),
            Some(0.25),
            "a repeated sample keeps the last rate"
        );
        r.observe(&[]);
        assert_eq!(r.cpus("t1"), None);
    }

    fn rows() -> Vec<TaskRow> {
        let row = |id: &str, name: &str, state: &str, cpu: Option<f64>, mem: Option<u64>| TaskRow {
            id: id.into(),
            name: name.into(),
            state: state.into(),
            agent: format!("h-{id}"),
            cpu,
            cpus_asked: 1.0,
            mem_bytes: mem,
            mem_asked_mb: 64.0,
        };
        vec![
            row("a", "web", "RUNNING", Some(0.2), Some(300)),
            row("b", "db", "STAGING", None, None),
            row("c", "batch", "RUNNING", Some(0.9), Some(100)),
        ]
    }

    #[test]
    fn sorting_by_each_key() {
        let check = |key: SortKey, reverse: bool, want: &[&str]| {
            let mut r = rows();
            sort_tasks(&mut r, key, reverse);
            let got: Vec<&str> = r.iter().map(|t| t.id.as_str()).collect();
            assert_eq!(got, want, "{key:?} reverse={reverse}");
        };
        check(SortKey::Cpu, false, &["c", "a", "b"]);
        check(SortKey::Cpu, true, &["b", "a", "c"]);
        check(SortKey::Mem, false, &["a", "c", "b"]);
        check(SortKey::Name, false, &["c", "b", "a"]);
        check(SortKey::State, false, &["a", "c", "b"]);
        check(SortKey::Agent, false, &["a", "b", "c"]);
        check(SortKey::Slack, false, &["b", "a", "c"]);
    }

    #[test]
    fn keys_change_sort_and_quit() {
        let mut v = View {
            master: "m".into(),
            interval: 1.0,
            sort: SortKey::Cpu,
            reverse: false,
            all: false,
            focus_agents: false,
            state: None,
            error: None,
            rates: Rates::default(),
        };
        let press = |c: KeyCode, m: KeyModifiers| KeyEvent::new(c, m);
        assert!(matches!(
            v.key(press(KeyCode::Char('m'), KeyModifiers::NONE)),
            Some(Input::Redraw)
        ));
        assert_eq!((v.sort, v.reverse), (SortKey::Mem, false));
        v.key(press(KeyCode::Char('m'), KeyModifiers::NONE));
        assert_eq!(
            (v.sort, v.reverse),
            (SortKey::Mem, true),
            "same key again reverses"
        );
        v.key(press(KeyCode::Char('n'), KeyModifiers::NONE));
        assert_eq!((v.sort, v.reverse), (SortKey::Name, false));
        assert!(v
            .key(press(KeyCode::Char('x'), KeyModifiers::NONE))
            .is_none());
        assert!(matches!(
            v.key(press(KeyCode::Char('c'), KeyModifiers::CONTROL)),
            Some(Input::Quit)
        ));
        assert!(matches!(
            v.key(press(KeyCode::Char('q'), KeyModifiers::NONE)),
            Some(Input::Quit)
        ));
    }

    #[test]
    fn rows_from_state_hide_ended_tasks_and_sum_agents() {
        let state: TopState = serde_json::from_value(serde_json::json!({
            "agents": [{"id": "a1", "hostname": "h1", "active": true,
                        "resources": {"cpus": 4, "mem": 1024}, "used": {"cpus": 1, "mem": 128}}],
            "tasks": [
                {"id": "t1", "state": "TASK_RUNNING", "agent_id": "a1", "resources": {"cpus": 0.5, "mem": 64},
                 "usage": {"cpu_ns": 0, "mem_current_bytes": 1048576, "timestamp": 1.0}},
                {"id": "t2", "state": "TASK_RUNNING", "agent_id": "a1", "resources": {"cpus": 0.5, "mem": 64}},
                {"id": "t3", "state": "TASK_FINISHED", "agent_id": "a1"}],
            "completed_tasks": [{"id": "t0", "state": "TASK_FAILED", "agent_id": "gone"}]
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let mut rates = Rates::default();
        rates.observe(&state.tasks);
        let mut later = state.clone();
        later.tasks[0].usage = Some(UsageJson {
            cpu_ns: Some(500_000_000),
            mem_current_bytes: Some(1048576),
            timestamp: Some(2.0),
        });
        rates.observe(&later.tasks);

        let live = task_rows(&later, &rates, false);
        assert_eq!(
            live.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
            ["t1", "t2"]
        );
        assert_eq!(live[0].agent, "h1");
        assert_eq!(live[0].cpu, Some(0.5));
        assert_eq!(live[1].cpu, None);
        assert_eq!(live[1].mem_bytes, None);
        let all = task_rows(&later, &rates, true);
        assert_eq!(all.len(), 4);
        assert_eq!(all[3].agent, "gone", "unknown agents show their id");

        let agents = agent_rows(&later, &rates);
        assert_eq!(agents.len(), 1);
        let a = &agents[0];
        assert_eq!(
            (a.cpus_total, a.cpus_alloc, a.cpus_used, a.tasks),
            (4.0, 1.0, 0.5, 2)
        );
        assert_eq!(a.slack(), 0.5);
        assert_eq!(a.mem_used_bytes, 1048576);
        assert_eq!(a.revocable_cpus, 0.0);
    }

    #[test]
    fn formatting() {
        assert_eq!(fmt_bytes(512), "512B");
        assert_eq!(fmt_bytes(1536), "1.5K");
        assert_eq!(fmt_bytes(64 * 1024 * 1024), "64M");
        assert_eq!(fmt_bytes(3 * 1024 * 1024 * 1024), "3.0G");
        assert_eq!(fmt_cpu(None), "-");
        assert_eq!(fmt_cpu(Some(0.256)), "25.6%");
        assert_eq!(fmt_num(0.1 + 0.2), "0.3");
        assert_eq!(fmt_mb(64.0), "64M");
        assert!(parse_interval("0.5").is_ok());
        assert!(parse_interval("0").is_err());
        assert!(parse_interval("abc").is_err());
        assert_eq!(parse_sort("mem"), Ok(SortKey::Mem));
        assert!(parse_sort("bogus").is_err());
    }
}
