//! `brim run`: the batch framework. Registers as `brim-run`, places N instances of a command
//! on offers, streams their output from the agents' sandboxes and exits with the tasks' code.
//! Built only on the public SDK (`brim-framework`), like any other framework.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;
use brim_framework::output::{LinePrefixer, SandboxFile, SandboxReader};
use brim_framework::state::MasterState;
use brim_framework::v1::{Filters, Offer, TaskInfo, TaskState, TaskStatus, TaskStatusReason};
use brim_framework::{
    exit_code_of, launch_operation, Driver, DriverConfig, DriverHandle, OfferPacker, Resources,
    Scheduler, TaskBuilder,
};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::watch;

/// How often task output is polled.
const POLL: Duration = Duration::from_millis(200);
/// Refuse filter on offers once every instance is placed.
const REFUSE_WHEN_PLACED: f64 = 3600.0;
/// How long to wait for killed tasks to end, and for output to drain, before giving up.
const DRAIN: Duration = Duration::from_secs(10);
/// Longest wait before placing a preempted revocable instance again.
const MAX_PREEMPTION_BACKOFF: Duration = Duration::from_secs(30);

/// Exit code when nothing could be placed.
const EXIT_UNPLACEABLE: u8 = 2;
/// Exit code after Ctrl-C, as shells do.
const EXIT_INTERRUPTED: u8 = 130;

#[derive(clap::Args)]
pub(crate) struct RunArgs {
    /// Master address, host:port (several, comma-separated, for HA masters).
    #[arg(long, env = "BRIM_MASTER", default_value = super::DEFAULT_MASTER)]
    pub(crate) master: String,
    /// Unix user the tasks run as (default: yours). Agents refuse root unless started with
    /// --allow-root-tasks, as `brim dev` is.
    #[arg(long, env = "BRIM_USER")]
    pub(crate) user: Option<String>,
    /// The tasks' network: `host` (the agent's), `none` (only loopback) or `bridge` (own
    /// address behind the agent's bridge, allocated ports forwarded from the host). Private
    /// networks need an agent running as root with namespaces.
    #[arg(long, value_parser = ["none", "host", "bridge"])]
    pub(crate) network: Option<String>,
    /// CPUs per instance.
    #[arg(long, default_value_t = 0.1)]
    pub(crate) cpus: f64,
    /// Memory per instance, MiB.
    #[arg(long, value_name = "MB", default_value_t = 64.0)]
    pub(crate) mem: f64,
    /// Task name (default: the command's name).
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// Number of instances; their output lines are prefixed with `[i] `.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub(crate) instances: u32,
    /// Role to get resources from.
    #[arg(long, default_value = "*")]
    pub(crate) role: String,
    /// Give up (exit 2) when no instance could be placed for this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub(crate) timeout: f64,
    /// Run on revocable slack: resources agents started with --oversubscribe lend while
    /// their owners do not use them. Instances run at the lowest priority and may be
    /// preempted when the owners need the resources back; preempted instances are retried.
    #[arg(long)]
    pub(crate) revocable: bool,
    /// Devices the tasks may open beyond the built-in ones (null, zero, random, tty, ...) and
    /// the agent's --device-allow: comma-separated `c|b|a MAJOR:MINOR [rwm]` rules (`*`: any)
    /// or device paths of the agent's host, e.g. `--devices 'c 195:* rwm,/dev/fuse'`.
    #[arg(long, value_name = "RULES", value_parser = parse_devices)]
    pub(crate) devices: Option<String>,
    /// Environment variable for the task (repeatable).
    #[arg(long = "env", value_name = "K=V", value_parser = parse_env)]
    pub(crate) env: Vec<(String, String)>,
    /// Run in an OCI container of this image (an absolute path on the agent to an OCI image
    /// layout directory or an OCI/`docker save` tarball, or an http:// URI of one).
    #[arg(long, value_name = "PATH_OR_URI")]
    pub(crate) image: Option<String>,
    /// Mount a directory into the task (repeatable): `SOURCE:TARGET[:ro|:rw]`. An absolute
    /// SOURCE is the agent's (allowed by its --allowed-host-paths), a relative one a
    /// directory of the sandbox; TARGET relative = in the sandbox, absolute = in the image
    /// (with --image).
    #[arg(long = "volume", value_name = "SRC:DST[:ro]", value_parser = parse_volume)]
    pub(crate) volumes: Vec<brim_framework::v1::ContainerVolume>,
    /// The command: one argument runs with `/bin/sh -c`, several are executed directly.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        required = true,
        num_args = 1..,
        value_name = "CMD"
    )]
    pub(crate) command: Vec<String>,
}

fn parse_devices(s: &str) -> Result<String, String> {
    brim_agent::ebpf::DeviceRule::check_list_syntax(s).map(|()| s.trim().to_string())
}

fn parse_volume(s: &str) -> Result<brim_framework::v1::ContainerVolume, String> {
    brim_framework::parse_volume(s)
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() && !k.contains(char::is_whitespace) => {
            Ok((k.to_string(), v.to_string()))
        }
        _ => Err(format!("`{s}` must look like NAME=value")),
    }
}

/// What to run: fixed for the whole job.
struct Job {
    master: String,
    need: Resources,
    name: String,
    instances: u32,
    command: Vec<String>,
    network: Option<String>,
    devices: Option<String>,
    env: Vec<(String, String)>,
    image: Option<String>,
    volumes: Vec<brim_framework::v1::ContainerVolume>,
    run_id: String,
    timeout: Duration,
    revocable: bool,
}

impl Job {
    fn from_args(a: &RunArgs) -> anyhow::Result<Self> {
        if !(a.cpus.is_finite() && a.cpus > 0.0) {
            anyhow::bail!("--cpus must be a positive number, got {}", a.cpus);
        }
        if !(a.mem.is_finite() && a.mem > 0.0) {
            anyhow::bail!("--mem must be a positive number of MiB, got {}", a.mem);
        }
        if !(a.timeout.is_finite() && a.timeout > 0.0 && a.timeout <= 1e6) {
            anyhow::bail!(
                "--timeout must be a positive number of seconds, got {}",
                a.timeout
            );
        }
        if a.command.first().is_none_or(|c| c.trim().is_empty()) {
            anyhow::bail!("no command given: use `brim run [OPTIONS] -- CMD [ARGS...]`");
        }
        let need = Resources::cpus_mem(a.cpus, a.mem).context("invalid --cpus/--mem")?;
        let name = match &a.name {
            Some(n) if !n.trim().is_empty() => n.trim().to_string(),
            _ => default_name(&a.command),
        };
        Ok(Job {
            master: a.master.clone(),
            need,
            name,
            instances: a.instances,
            command: a.command.clone(),
            network: a.network.clone(),
            devices: a.devices.clone(),
            env: a.env.clone(),
            image: a.image.clone(),
            volumes: a.volumes.clone(),
            run_id: run_id(),
            timeout: Duration::from_secs_f64(a.timeout),
            revocable: a.revocable,
        })
    }

    /// `run-<id>-<instance>`, with `.<attempt>` for retries of preempted instances.
    fn task_id(&self, instance: u32, attempt: u32) -> String {
        match attempt {
            0 => format!("run-{}-{instance}", self.run_id),
            n => format!("run-{}-{instance}.{n}", self.run_id),
        }
    }

    fn builder(&self, instance: u32, attempt: u32) -> TaskBuilder {
        let b = TaskBuilder::new(self.task_id(instance, attempt), &self.name).resources(&self.need);
        let mut b = match self.command.as_slice() {
            [one] => b.shell(one),
            argv => b.command(argv.iter().cloned()),
        };
        if let Some(n) = &self.network {
            b = b.label(brim_agent::network::LABEL, n);
        }
        if let Some(d) = &self.devices {
            b = b.label(brim_agent::ebpf::devices::DEVICES_LABEL, d);
        }
        for (k, v) in &self.env {
            b = b.env(k, v);
        }
        if let Some(i) = &self.image {
            b = b.image(i);
        }
        for v in &self.volumes {
            b = b.volume(v.clone());
        }
        b.env("BRIM_INSTANCE", instance.to_string())
            .env("BRIM_INSTANCES", self.instances.to_string())
    }

    /// `[i] ` in front of output lines and messages, only with several instances.
    fn prefix(&self, instance: u32) -> Option<String> {
        (self.instances > 1).then(|| format!("[{instance}] "))
    }
}

/// The command's name: `echo` for `echo hello` or `/bin/echo hello`.
fn default_name(command: &[String]) -> String {
    let first = match command {
        [one] => one.split_whitespace().next().unwrap_or(""),
        argv => argv.first().map_or("", String::as_str),
    };
    let base = first.rsplit('/').next().unwrap_or(first);
    let clean: String = base
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "._-".contains(*c))
        .take(64)
        .collect();
    if clean.is_empty() {
        "brim-run".to_string()
    } else {
        clean
    }
}

/// Eight hex digits, different for every run (task ids stay unique in `brim tasks --all`).
fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mixed = (nanos as u64) ^ (u64::from(std::process::id()) << 20);
    format!("{:08x}", mixed.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32)
}

struct TaskEntry {
    instance: u32,
    agent_id: String,
    exit: Option<i32>,
    finished: watch::Sender<bool>,
}

/// What the scheduler and the supervising loop share.
struct Progress {
    framework_id: Option<String>,
    /// Instances not launched yet, in order.
    pending: Vec<u32>,
    tasks: BTreeMap<String, TaskEntry>,
    /// (instance, exit code) in completion order.
    completed: Vec<(u32, i32)>,
    followers: Vec<tokio::task::JoinHandle<()>>,
    last_progress: Instant,
    offers_seen: u64,
    last_error: Option<String>,
    suppressed: bool,
    interrupted: bool,
    /// Attempts so far per instance (revocable instances are retried when preempted).
    attempts: BTreeMap<u32, u32>,
    /// After a preemption the owners need their resources: no new placement before this
    /// (exponential backoff over consecutive preemptions, 1 s to 30 s).
    retry_at: Option<Instant>,
    preemptions: u32,
}

impl Progress {
    fn new(instances: u32) -> Self {
        Progress {
            framework_id: None,
            pending: (0..instances).collect(),
            tasks: BTreeMap::new(),
            completed: Vec::new(),
            followers: Vec::new(),
            last_progress: Instant::now(),
            offers_seen: 0,
            last_error: None,
            suppressed: false,
            interrupted: false,
            attempts: BTreeMap::new(),
            retry_at: None,
            preemptions: 0,
        }
    }

    /// Time left before placing again after a preemption.
    fn backing_off(&self) -> Option<Duration> {
        self.retry_at
            .and_then(|t| t.checked_duration_since(Instant::now()))
            .filter(|d| !d.is_zero())
    }

    fn active(&self) -> impl Iterator<Item = (&String, &TaskEntry)> {
        self.tasks.iter().filter(|(_, t)| t.exit.is_none())
    }

    fn done(&self) -> bool {
        self.pending.is_empty() && self.active().next().is_none()
    }

    /// Where the instances are, for the progress bar.
    fn counts(&self) -> super::progress::Counts {
        super::progress::Counts {
            queued: self.pending.len(),
            running: self.active().count(),
            done: self.completed.len(),
            failed: self.completed.iter().filter(|c| c.1 != 0).count(),
        }
    }

    /// Nothing placed for `timeout` while nothing of ours runs (so nothing will free up).
    fn stalled(&self, timeout: Duration) -> bool {
        !self.interrupted
            && !self.pending.is_empty()
            && self.active().next().is_none()
            && self.last_progress.elapsed() >= timeout
    }

    /// First nonzero exit code in completion order, else 0.
    fn exit_code(&self, instances: u32) -> u8 {
        if self.completed.len() < instances as usize {
            return 1;
        }
        self.completed
            .iter()
            .map(|&(_, code)| code)
            .find(|&c| c != 0)
            .map_or(0, |c| u8::try_from(c).unwrap_or(1))
    }
}

type Shared = Arc<Mutex<Progress>>;

fn lock(s: &Shared) -> MutexGuard<'_, Progress> {
    s.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The batch scheduler.
struct Batch {
    job: Arc<Job>,
    shared: Shared,
    http: reqwest::Client,
}

impl Scheduler for Batch {
    async fn registered(&mut self, _: &DriverHandle, framework_id: &str) {
        let mut p = lock(&self.shared);
        p.framework_id = Some(framework_id.to_string());
        p.last_progress = Instant::now();
    }

    async fn offers(&mut self, driver: &DriverHandle, offers: Vec<Offer>) {
        let mut launches: Vec<(Offer, Vec<(u32, TaskInfo)>)> = Vec::new();
        let mut declines = Vec::new();
        {
            let mut p = lock(&self.shared);
            p.offers_seen += offers.len() as u64;
            for offer in offers {
                let Some(placed) = self.place(&mut p, &offer) else {
                    declines.push(offer.id);
                    continue;
                };
                launches.push((offer, placed));
            }
        }
        for (offer, placed) in launches {
            let refuse = lock(&self.shared)
                .pending
                .is_empty()
                .then_some(REFUSE_WHEN_PLACED);
            let tasks = placed.iter().map(|(_, t)| t.clone()).collect();
            let accepted = driver
                .accept(
                    vec![offer.id.clone()],
                    vec![launch_operation(tasks)],
                    Filters {
                        refuse_seconds: refuse,
                    },
                )
                .await;
            match accepted {
                Ok(()) => self.launched(driver, &offer, placed).await,
                Err(e) => {
                    tracing::warn!(offer = %offer.id, error = %e, "launch failed; will retry on another offer");
                    let mut p = lock(&self.shared);
                    p.pending.extend(placed.iter().map(|(i, _)| *i));
                    p.pending.sort_unstable();
                    p.last_error = Some(e.to_string());
                }
            }
        }
        let (placed_all, backoff) = {
            let p = lock(&self.shared);
            (p.pending.is_empty(), p.backing_off())
        };
        if !declines.is_empty() {
            let refuse = match backoff {
                Some(d) => Some(d.as_secs_f64()),
                None => placed_all.then_some(REFUSE_WHEN_PLACED),
            };
            if let Err(e) = driver.decline(declines, refuse).await {
                tracing::warn!(error = %e, "declining offers failed");
            }
        }
        let suppress = {
            let mut p = lock(&self.shared);
            let s = p.pending.is_empty() && !p.suppressed;
            p.suppressed |= s;
            s
        };
        if suppress {
            if let Err(e) = driver.suppress().await {
                tracing::warn!(error = %e, "suppressing offers failed");
            }
        }
    }

    async fn update(&mut self, driver: &DriverHandle, status: TaskStatus) {
        let revive = {
            let mut p = lock(&self.shared);
            let Some(entry) = p.tasks.get_mut(&status.task_id) else {
                return;
            };
            tracing::info!(task = %status.task_id, state = status.state().name(), "task update");
            if entry.exit.is_some() {
                return;
            }
            let Some(code) = exit_code_of(&status) else {
                return;
            };
            entry.exit = Some(code);
            entry.finished.send_replace(true);
            let instance = entry.instance;
            if self.job.revocable
                && status.reason() == TaskStatusReason::ReasonContainerPreempted
                && !p.interrupted
            {
                // Work on slack is preemptible by design: run the instance again.
                let who = self.job.prefix(instance).unwrap_or_default();
                super::progress::suspend(|| {
                    eprintln!(
                        "brim: {who}task {} was preempted ({}); retrying",
                        status.task_id, status.message
                    )
                });
                *p.attempts.entry(instance).or_default() += 1;
                let backoff =
                    Duration::from_secs(1 << p.preemptions.min(5)).min(MAX_PREEMPTION_BACKOFF);
                p.preemptions += 1;
                p.retry_at = Some(Instant::now() + backoff);
                p.pending.push(instance);
                p.pending.sort_unstable();
                p.suppressed = false;
                // The stall timeout counts from the end of the backoff.
                p.last_progress = Instant::now() + backoff;
                true
            } else {
                super::progress::suspend(|| report_end(&self.job, instance, &status, code));
                p.completed.push((instance, code));
                p.last_progress = Instant::now();
                if p.done() {
                    driver.stop();
                }
                // Queued instances: what this task held is free again, so lift our refuse
                // filters.
                !p.pending.is_empty() && !p.interrupted
            }
        };
        if revive {
            if let Err(e) = driver.revive().await {
                tracing::warn!(error = %e, "reviving offers failed");
            }
        }
    }
}

impl Batch {
    /// Packs pending instances onto `offer` (its revocable part with --revocable, else its
    /// plain part); `None` when nothing goes there.
    fn place(&self, p: &mut Progress, offer: &Offer) -> Option<Vec<(u32, TaskInfo)>> {
        if p.interrupted || p.pending.is_empty() || p.backing_off().is_some() {
            return None;
        }
        let mut packer = if self.job.revocable {
            OfferPacker::revocable(offer).ok()?
        } else {
            OfferPacker::new(offer).ok()?
        };
        let mut placed = Vec::new();
        while let Some(&instance) = p.pending.first() {
            let attempt = p.attempts.get(&instance).copied().unwrap_or(0);
            match packer.place(&self.job.builder(instance, attempt)) {
                Ok(task) => {
                    placed.push((instance, task));
                    p.pending.remove(0);
                }
                Err(_) => break,
            }
        }
        (!placed.is_empty()).then_some(placed)
    }

    /// Records launched tasks and starts following their output.
    async fn launched(&self, driver: &DriverHandle, offer: &Offer, placed: Vec<(u32, TaskInfo)>) {
        let interrupted = {
            let mut p = lock(&self.shared);
            p.last_progress = Instant::now();
            let framework_id = p.framework_id.clone().unwrap_or_default();
            for (instance, task) in &placed {
                let (finished, _) = watch::channel(false);
                for file in [SandboxFile::Stdout, SandboxFile::Stderr] {
                    let security = super::security::client();
                    // Agents serving TLS hand task output only to certified clients: with
                    // a token alone, read through the master's proxy.
                    let reader = match &security.tls {
                        Some(tls) if tls.identity.is_none() => SandboxReader::via_master(
                            self.http.clone(),
                            &security.url(first_master(&self.job.master)),
                            &offer.agent_id,
                            &framework_id,
                            &task.task_id,
                            file,
                        ),
                        _ => SandboxReader::new(
                            self.http.clone(),
                            &security.url(&offer.agent_http_address),
                            &framework_id,
                            &task.task_id,
                            file,
                        ),
                    };
                    match reader {
                        Ok(r) => p.followers.push(tokio::spawn(follow(
                            r,
                            finished.subscribe(),
                            self.job.prefix(*instance),
                            file,
                            task.task_id.clone(),
                        ))),
                        Err(e) => eprintln!(
                            "brim: cannot stream the {} of {}: {e}",
                            file.as_str(),
                            task.task_id
                        ),
                    }
                }
                p.tasks.insert(
                    task.task_id.clone(),
                    TaskEntry {
                        instance: *instance,
                        agent_id: offer.agent_id.clone(),
                        exit: None,
                        finished,
                    },
                );
            }
            p.interrupted
        };
        // Ctrl-C came while this launch was in flight: kill what it started.
        if interrupted {
            for (_, task) in placed {
                if let Err(e) = driver.kill(&task.task_id, &offer.agent_id, None).await {
                    eprintln!("brim: cannot kill {}: {e}", task.task_id);
                }
            }
        }
    }
}

/// Tells the user how a task ended when its exit code alone does not.
fn report_end(job: &Job, instance: u32, status: &TaskStatus, code: i32) {
    let who = job.prefix(instance).unwrap_or_default();
    let state = status.state();
    if status.exit_code.is_none() && state != TaskState::TaskFinished {
        let message = if status.message.is_empty() {
            String::new()
        } else {
            format!(": {}", status.message)
        };
        eprintln!(
            "brim: {who}task {} {}{message}",
            status.task_id,
            state.name()
        );
    } else if job.instances > 1 && code != 0 {
        eprintln!("brim: {who}task {} exited with code {code}", status.task_id);
    }
}

/// Streams one sandbox file to our stdout/stderr until the task ended and the file is drained.
async fn follow(
    reader: SandboxReader,
    finished: watch::Receiver<bool>,
    prefix: Option<String>,
    file: SandboxFile,
    task_id: String,
) {
    let mut prefixer = prefix.map(LinePrefixer::new);
    let result = reader
        .follow(finished, POLL, |bytes| match prefixer.as_mut() {
            Some(p) => emit(file, &p.push(bytes)),
            None => emit(file, bytes),
        })
        .await;
    if let Some(p) = prefixer.as_mut() {
        emit(file, &p.finish());
    }
    if let Err(e) = result {
        eprintln!("brim: lost the {} of {task_id}: {e}", file.as_str());
    }
}

fn emit(file: SandboxFile, bytes: &[u8]) {
    super::progress::suspend(|| emit_now(file, bytes));
}

fn emit_now(file: SandboxFile, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    // Write errors (closed pipe) are ignored: the task's outcome still decides the exit code.
    let _ = match file {
        SandboxFile::Stdout => {
            let mut out = std::io::stdout().lock();
            out.write_all(bytes).and_then(|()| out.flush())
        }
        SandboxFile::Stderr => {
            let mut err = std::io::stderr().lock();
            err.write_all(bytes).and_then(|()| err.flush())
        }
    };
}

/// Why no agent will ever hold one instance, if that is the case.
fn never_fits(state: &MasterState, need: &Resources, master: &str) -> Option<String> {
    let n = state.active_agents().count();
    if n == 0 {
        return Some(format!(
            "no agents are registered with the master at {master}: start one with \
             `brim agent --master {master}`, or run `brim dev` for a local cluster"
        ));
    }
    if state.can_ever_fit(need) {
        return None;
    }
    let largest = state.closest_agent(need)?;
    let mut shown = Resources::new();
    for (name, _) in need.scalars() {
        let _ = shown.set_scalar(name, largest.resources.scalar(name));
    }
    let shown = if shown.is_empty() {
        "none of it".to_string()
    } else {
        shown.to_string()
    };
    Some(format!(
        "no agent can fit {need}: the largest agent offers {shown} ({n} agent{} registered)",
        if n == 1 { "" } else { "s" }
    ))
}

/// The first of `a,b,c` master addresses.
fn first_master(masters: &str) -> &str {
    masters.split(',').map(str::trim).next().unwrap_or(masters)
}

/// What the supervisor knows when placement stalled.
struct Stall {
    placed: usize,
    offers_seen: u64,
    last_error: Option<String>,
}

/// Explains a stalled placement, asking the master for the cluster's shape again.
async fn explain_stall(job: &Job, p: &Stall) -> String {
    let secs = job.timeout.as_secs_f64();
    let need = &job.need;
    let placed = p.placed;
    let mut why = match super::query::fetch_state(&job.master).await {
        Ok(state) => match never_fits(&state, need, &job.master) {
            Some(why) => why,
            None => {
                let n = state.active_agents().count();
                let big = state
                    .active_agents()
                    .filter(|a| a.resources.contains(need))
                    .count();
                format!(
                    "no offer could fit {need} within {secs}s: {big} of {n} agents are large \
                     enough but none had it free ({}); retry later or raise --timeout",
                    offers_received(p.offers_seen)
                )
            }
        },
        Err(_) => format!(
            "no offer could fit {need} within {secs}s ({})",
            offers_received(p.offers_seen)
        ),
    };
    if placed > 0 {
        why.push_str(&format!("; placed {placed} of {} instances", job.instances));
    }
    if let Some(e) = &p.last_error {
        why.push_str(&format!("; last launch error: {e}"));
    }
    if job.revocable {
        why.push_str(
            "; --revocable runs only on slack: agents must run with --oversubscribe and their \
             tasks must leave allocated resources unused (see `brim agents --slack`)",
        );
    }
    why
}

fn offers_received(n: u64) -> String {
    match n {
        0 => "no offers received".to_string(),
        1 => "1 offer received".to_string(),
        n => format!("{n} offers received"),
    }
}

enum Outcome {
    Finished,
    Unplaceable(String),
    Interrupted,
    Failed(anyhow::Error),
}

async fn next_signal(int: &mut Signal, term: &mut Signal) {
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
}

/// Runs the driver until the job is done, cannot be placed, or is interrupted.
async fn supervise(driver: Driver, batch: &mut Batch, handle: &DriverHandle) -> Outcome {
    let (job, shared) = (batch.job.clone(), batch.shared.clone());
    let signals =
        signal(SignalKind::interrupt()).and_then(|i| Ok((i, signal(SignalKind::terminate())?)));
    let (mut sigint, mut sigterm) = match signals {
        Ok(s) => s,
        Err(e) => return Outcome::Failed(anyhow::anyhow!("cannot install signal handlers: {e}")),
    };
    let run = driver.run(batch);
    tokio::pin!(run);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut kill_deadline: Option<Instant> = None;
    loop {
        tokio::select! {
            r = &mut run => {
                return match r {
                    Ok(()) if lock(&shared).interrupted => Outcome::Interrupted,
                    Ok(()) => Outcome::Finished,
                    Err(e) => Outcome::Failed(e.into()),
                };
            }
            () = next_signal(&mut sigint, &mut sigterm) => {
                if kill_deadline.is_some() {
                    return Outcome::Interrupted;
                }
                let targets: Vec<(String, String)> = {
                    let mut p = lock(&shared);
                    p.interrupted = true;
                    p.pending.clear();
                    p.active().map(|(id, t)| (id.clone(), t.agent_id.clone())).collect()
                };
                if targets.is_empty() {
                    return Outcome::Interrupted;
                }
                eprintln!(
                    "brim: interrupted: killing {} task{} (Ctrl-C again to stop waiting)",
                    targets.len(),
                    if targets.len() == 1 { "" } else { "s" }
                );
                for (task_id, agent_id) in targets {
                    if let Err(e) = handle.kill(&task_id, &agent_id, None).await {
                        eprintln!("brim: cannot kill {task_id}: {e}");
                    }
                }
                kill_deadline = Some(Instant::now() + DRAIN);
            }
            _ = tick.tick() => {
                super::progress::show(lock(&shared).counts());
                if let Some(deadline) = kill_deadline {
                    if Instant::now() >= deadline {
                        eprintln!("brim: tasks did not end within {}s of the kill; tearing down", DRAIN.as_secs());
                        return Outcome::Interrupted;
                    }
                    continue;
                }
                let stalled = {
                    let p = lock(&shared);
                    p.stalled(job.timeout).then(|| p.framework_id.is_some())
                };
                match stalled {
                    Some(true) => {
                        let stall = {
                            let p = lock(&shared);
                            Stall {
                                placed: job.instances as usize - p.pending.len(),
                                offers_seen: p.offers_seen,
                                last_error: p.last_error.clone(),
                            }
                        };
                        return Outcome::Unplaceable(explain_stall(&job, &stall).await);
                    }
                    Some(false) => {
                        return Outcome::Failed(anyhow::anyhow!(
                            "the master at {} did not answer the subscription within {}s",
                            job.master,
                            job.timeout.as_secs_f64()
                        ));
                    }
                    None => {}
                }
            }
        }
    }
}

pub(crate) async fn run(a: RunArgs) -> anyhow::Result<u8> {
    let job = Arc::new(Job::from_args(&a)?);
    let state = super::query::fetch_state(&job.master).await?;
    if let Some(why) = never_fits(&state, &job.need, &job.master) {
        eprintln!("brim: {why}");
        return Ok(EXIT_UNPLACEABLE);
    }

    let security = super::security::client();
    let mut config = DriverConfig::new(&job.master, "brim-run");
    if job.revocable {
        config = config.with_capability(brim_framework::CAPABILITY_REVOCABLE_RESOURCES);
    }
    config.security = security.clone();
    config.framework.role = a.role.clone();
    if let Some(user) = &a.user {
        config.framework.user = user.clone();
    }
    config.reconnect_timeout = Some(Duration::from_secs(60));
    let driver = Driver::new(config)?;
    let handle = driver.handle();
    let shared = Arc::new(Mutex::new(Progress::new(job.instances)));
    super::progress::start(job.instances);
    let http = security
        .reqwest_builder()?
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(30))
        .build()
        .context("cannot build an HTTP client")?;
    let mut batch = Batch {
        job: job.clone(),
        shared: shared.clone(),
        http,
    };

    let outcome = supervise(driver, &mut batch, &handle).await;
    handle.stop();

    // Let the output drain: followers end once their task is terminal and the file is read.
    let followers = {
        let mut p = lock(&shared);
        if !matches!(outcome, Outcome::Finished) {
            for t in p.tasks.values() {
                t.finished.send_replace(true);
            }
        }
        std::mem::take(&mut p.followers)
    };
    let deadline = tokio::time::Instant::now() + DRAIN;
    for f in followers {
        if tokio::time::timeout_at(deadline, f).await.is_err() {
            eprintln!(
                "brim: gave up waiting for task output after {}s",
                DRAIN.as_secs()
            );
            break;
        }
    }

    super::progress::finish();
    if handle.framework_id().is_some() {
        if let Err(e) = handle.teardown().await {
            eprintln!("brim: warning: {e}");
        }
    }

    match outcome {
        Outcome::Finished => Ok(lock(&shared).exit_code(job.instances)),
        Outcome::Unplaceable(why) => {
            eprintln!("brim: {why}");
            Ok(EXIT_UNPLACEABLE)
        }
        Outcome::Interrupted => Ok(EXIT_INTERRUPTED),
        Outcome::Failed(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_and_names() {
        assert_eq!(parse_env("A=b=c"), Ok(("A".into(), "b=c".into())));
        assert!(parse_env("=x").is_err());
        assert!(parse_env("nope").is_err());
        assert_eq!(
            parse_devices(" c 195:* rwm,/dev/fuse "),
            Ok("c 195:* rwm,/dev/fuse".into())
        );
        let e = parse_devices("c 195").expect_err("no minor");
        assert!(e.contains("MAJOR:MINOR"), "{e}");
        assert_eq!(default_name(&["echo hello".into()]), "echo");
        assert_eq!(default_name(&["/bin/ls".into(), "-l".into()]), "ls");
        assert_eq!(default_name(&["$(x)".into()]), "x");
        assert_eq!(default_name(&["!!".into()]), "brim-run");
    }

    #[test]
    fn volumes_parse() {
        use brim_framework::v1::container_volume::{Mode, Source};
        let v = parse_volume("/srv/a:/data:ro").expect("host ro");
        assert_eq!(v.source, Some(Source::HostPath("/srv/a".into())));
        assert_eq!(
            (v.container_path.as_str(), v.mode),
            ("/data", Mode::Ro as i32)
        );
        let v = parse_volume("out:view").expect("sandbox rw");
        assert_eq!(v.source, Some(Source::SandboxPath("out".into())));
        assert_eq!(
            (v.container_path.as_str(), v.mode),
            ("view", Mode::Rw as i32)
        );
        for bad in ["/srv", ":x", "/a:", "/a:b:c", "/a:b:c:ro"] {
            assert!(parse_volume(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn exit_code_is_the_first_failure() {
        let check = |completed: Vec<(u32, i32)>, instances: u32, want: u8| {
            let mut p = Progress::new(instances);
            p.completed = completed.clone();
            assert_eq!(p.exit_code(instances), want, "{completed:?}");
        };
        check(vec![(0, 0)], 1, 0);
        check(vec![(0, 3)], 1, 3);
        check(vec![(1, 0), (0, 137), (2, 1)], 3, 137);
        check(vec![(0, 0)], 2, 1);
        check(vec![(0, 300)], 1, 1);
    }

    #[test]
    fn unplaceable_explanations() {
        let state: MasterState = serde_json::from_value(serde_json::json!({
            "agents": [
                {"id": "a1", "active": true, "resources": {"cpus": 2, "mem": 23000, "disk": 100}},
                {"id": "a2", "active": true, "resources": {"cpus": 1, "mem": 512}}
            ]
        }))
        .unwrap_or_else(|e| panic!("valid state: {e}"));
        let need = Resources::cpus_mem(64.0, 64.0).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            never_fits(&state, &need, "m:5050").as_deref(),
            Some(
                "no agent can fit cpus:64;mem:64: the largest agent offers cpus:2;mem:23000 \
                 (2 agents registered)"
            )
        );
        let small = Resources::cpus_mem(1.0, 64.0).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(never_fits(&state, &small, "m:5050"), None);
        let empty = MasterState::default();
        let why = never_fits(&empty, &small, "m:5050").unwrap_or_default();
        assert!(why.contains("no agents are registered"), "{why}");
    }
}
