//! `brim tasks|agents|frameworks`: tables (or JSON) from the master's `/state`.
//! Also the one place the CLI turns a master address into `/state` ([`fetch_state`]).

use brim_framework::state::{MasterState, StateClient, StateError};
use brim_framework::Resources;
use serde_json::Value;

#[derive(clap::Args)]
pub(crate) struct QueryArgs {
    /// Master address, host:port.
    #[arg(long, env = "BRIM_MASTER", default_value = super::DEFAULT_MASTER)]
    pub(crate) master: String,
    /// Print the entries of the master's /state JSON instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
    /// Include finished tasks and disconnected frameworks.
    #[arg(long)]
    pub(crate) all: bool,
}

#[derive(clap::Args)]
pub(crate) struct AgentsArgs {
    #[command(flatten)]
    pub(crate) query: QueryArgs,
    /// Oversubscription columns: what non-revocable tasks hold (ALLOC), what the agent
    /// estimates they really use (EST. USED), and the revocable slack it lends with what
    /// revocable tasks use of it (REVOCABLE used/lent), for cpus and mem.
    #[arg(long)]
    pub(crate) slack: bool,
}

#[derive(clap::Args)]
pub(crate) struct TasksArgs {
    #[command(flatten)]
    pub(crate) query: QueryArgs,
    /// Add usage columns from the master's /state: CPU% and RUNQ% (run-queue wait per
    /// wall-clock second) are rates between two /state reads one second apart (the agents'
    /// default usage interval; `-` when no new sample arrived in between), MEM and NET RX/TX
    /// are the newest cumulative values.
    #[arg(long)]
    pub(crate) usage: bool,
}

/// Turns a `/state` failure into an error that says what to do.
fn explain(e: StateError) -> anyhow::Error {
    match e {
        StateError::Unreachable { .. } => anyhow::anyhow!(
            "{e}\nhint: is a master running there? start a local cluster with `brim dev`, or \
             point to a running master with --master HOST:PORT or BRIM_MASTER"
        ),
        other => other.into(),
    }
}

async fn fetch_json(master: &str) -> anyhow::Result<(Value, MasterState)> {
    let client = StateClient::with_security(master, &super::security::client()).map_err(explain)?;
    let json = client.fetch_json().await.map_err(explain)?;
    let state = MasterState::from_json(json.clone()).map_err(|e| {
        explain(StateError::Decode {
            master: master.to_string(),
            message: e.to_string(),
        })
    })?;
    Ok((json, state))
}

/// The master's `/state`, with an actionable error when the master is unreachable.
pub(crate) async fn fetch_state(master: &str) -> anyhow::Result<MasterState> {
    Ok(fetch_json(master).await?.1)
}

/// `tasks[].usage` of a /state JSON by (framework id, task id).
fn usage_by_task(json: &Value) -> std::collections::HashMap<(String, String), Value> {
    json["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["usage"].is_object())
        .map(|t| {
            let key = (
                t["framework_id"].as_str().unwrap_or_default().to_string(),
                t["id"].as_str().unwrap_or_default().to_string(),
            );
            (key, t["usage"].clone())
        })
        .collect()
}

fn bytes(b: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let (mut v, mut i) = (b, 0);
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    format!("{}{}", num((v * 10.0).round() / 10.0), UNITS[i])
}

/// Usage columns of one task: CPU%, MEM, NET RX, NET TX, RUNQ% (see [`TasksArgs::usage`]).
fn usage_columns(old: Option<&Value>, new: Option<&Value>) -> Vec<String> {
    let Some(new) = new else {
        return vec!["-".to_string(); 5];
    };
    let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or(0.0);
    let rate = |k: &str| match old {
        Some(old) if f(new, "timestamp") > f(old, "timestamp") => {
            let dt = f(new, "timestamp") - f(old, "timestamp");
            format!("{:.1}", (f(new, k) - f(old, k)).max(0.0) / 1e9 / dt * 100.0)
        }
        _ => "-".to_string(),
    };
    vec![
        rate("cpu_ns"),
        bytes(f(new, "mem_current_bytes")),
        bytes(f(new, "net_rx_bytes")),
        bytes(f(new, "net_tx_bytes")),
        rate("runq_wait_ns"),
    ]
}

pub(crate) async fn tasks(args: TasksArgs) -> anyhow::Result<()> {
    let a = args.query;
    let first = if args.usage && !a.json {
        let (f, _) = fetch_json(&a.master).await?;
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        Some(f)
    } else {
        None
    };
    let (json, state) = fetch_json(&a.master).await?;
    let (old_usage, new_usage) = (
        first.as_ref().map(usage_by_task).unwrap_or_default(),
        usage_by_task(&json),
    );
    let live = state.tasks.iter().map(|t| a.all || !t.is_terminal());
    let completed = state.completed_tasks.iter().map(|_| a.all);
    let keep: Vec<bool> = live.chain(completed).collect();
    if a.json {
        return print_json(&json, &["tasks", "completed_tasks"], &keep);
    }
    let rows = state
        .tasks
        .iter()
        .chain(&state.completed_tasks)
        .zip(&keep)
        .filter(|(_, &k)| k)
        .map(|(t, _)| {
            let mut row = vec![
                t.id.clone(),
                t.name.clone(),
                t.state.clone(),
                t.agent_id.clone(),
                t.framework_id.clone(),
                num(t.resources.scalar("cpus")),
                num(t.resources.scalar("mem")),
                t.exit_code
                    .map_or_else(|| "-".to_string(), |c| c.to_string()),
            ];
            if args.usage {
                let key = (t.framework_id.clone(), t.id.clone());
                row.extend(usage_columns(old_usage.get(&key), new_usage.get(&key)));
            }
            row
        })
        .collect();
    let mut headers = vec![
        "ID",
        "NAME",
        "STATE",
        "AGENT",
        "FRAMEWORK",
        "CPUS",
        "MEM",
        "EXIT",
    ];
    if args.usage {
        headers.extend(["CPU%", "MEM USED", "NET RX", "NET TX", "RUNQ%"]);
    }
    print_table(&headers, rows);
    Ok(())
}

pub(crate) async fn agents(args: AgentsArgs) -> anyhow::Result<()> {
    let a = &args.query;
    let (json, state) = fetch_json(&a.master).await?;
    // Disconnected agents matter to an operator: always listed.
    let keep = vec![true; state.agents.len()];
    if a.json {
        return print_json(&json, &["agents"], &keep);
    }
    let rows = state
        .agents
        .iter()
        .map(|x| {
            let active = match (x.active, x.status.as_str()) {
                (true, _) => "yes".to_string(),
                (false, "") => "no".to_string(),
                (false, status) => format!("no ({status})"),
            };
            let mut row = vec![
                x.id.clone(),
                x.hostname.clone(),
                x.http_address.clone(),
                active,
            ];
            if args.slack {
                for r in ["cpus", "mem"] {
                    row.push(used_total(&x.used, &x.resources, r));
                    row.push(num(x.used_estimate.scalar(r)));
                    row.push(used_total(&x.revocable_used, &x.revocable, r));
                }
            } else {
                row.push(used_total(&x.used, &x.resources, "cpus"));
                row.push(used_total(&x.used, &x.resources, "mem"));
            }
            row
        })
        .collect();
    let headers: &[&str] = if args.slack {
        &[
            "ID",
            "HOSTNAME",
            "ADDRESS",
            "ACTIVE",
            "CPUS ALLOC",
            "CPUS EST. USED",
            "CPUS REVOCABLE",
            "MEM ALLOC",
            "MEM EST. USED",
            "MEM REVOCABLE",
        ]
    } else {
        &["ID", "HOSTNAME", "ADDRESS", "ACTIVE", "CPUS", "MEM"]
    };
    print_table(headers, rows);
    Ok(())
}

pub(crate) async fn frameworks(a: QueryArgs) -> anyhow::Result<()> {
    let (json, state) = fetch_json(&a.master).await?;
    let keep: Vec<bool> = state
        .frameworks
        .iter()
        .map(|f| a.all || f.connected)
        .collect();
    if a.json {
        return print_json(&json, &["frameworks"], &keep);
    }
    let rows = state
        .frameworks
        .iter()
        .zip(&keep)
        .filter(|(_, &k)| k)
        .map(|(f, _)| {
            let running = state
                .tasks
                .iter()
                .filter(|t| t.framework_id == f.id && !t.is_terminal())
                .count();
            let active = match (f.active, f.connected, f.suppressed) {
                (true, _, _) => "yes",
                (false, false, _) => "no (disconnected)",
                (false, true, true) => "no (suppressed)",
                (false, true, false) => "no",
            };
            vec![
                f.id.clone(),
                f.name.clone(),
                f.role.clone(),
                active.to_string(),
                running.to_string(),
                num(f.allocated.scalar("cpus")),
                num(f.allocated.scalar("mem")),
            ]
        })
        .collect();
    print_table(
        &["ID", "NAME", "ROLE", "ACTIVE", "TASKS", "CPUS", "MEM"],
        rows,
    );
    Ok(())
}

/// Prints the kept elements of the arrays `json[keys[0]]`, `json[keys[1]]`, ... (in that
/// order, as one array), pretty.
fn print_json(json: &Value, keys: &[&str], keep: &[bool]) -> anyhow::Result<()> {
    let items: Vec<&Value> = keys
        .iter()
        .filter_map(|k| json.get(k).and_then(Value::as_array))
        .flatten()
        .zip(keep)
        .filter(|(_, &k)| k)
        .map(|(x, _)| x)
        .collect();
    println!("{}", serde_json::to_string_pretty(&items)?);
    Ok(())
}

/// `1.5`, `64`, `0.125`: at most three decimals, no trailing zeros.
fn num(x: f64) -> String {
    let s = format!("{x:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0" } else { s }.to_string()
}

fn used_total(used: &Resources, total: &Resources, name: &str) -> String {
    format!("{}/{}", num(used.scalar(name)), num(total.scalar(name)))
}

/// Left-aligned columns separated by two spaces; the last column is not padded.
fn render_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let last = row.len().saturating_sub(1);
        for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                out.push_str(cell);
                out.push_str(&" ".repeat(w - cell.chars().count() + 2));
            }
        }
        out.push('\n');
    }
    out
}

fn print_table(headers: &[&str], rows: Vec<Vec<String>>) {
    print!("{}", render_table(headers, &rows));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_columns_rates_and_sizes() {
        let old =
            serde_json::json!({"timestamp": 10.0, "cpu_ns": 1_000_000_000u64, "runq_wait_ns": 0});
        let new = serde_json::json!({
            "timestamp": 12.0, "cpu_ns": 2_000_000_000u64, "runq_wait_ns": 100_000_000u64,
            "mem_current_bytes": 3u64 << 20, "net_rx_bytes": 512, "net_tx_bytes": 2048,
        });
        assert_eq!(
            usage_columns(Some(&old), Some(&new)),
            ["50.0", "3MiB", "512B", "2KiB", "5.0"]
        );
        // No newer sample between the two reads: no rate.
        assert_eq!(usage_columns(Some(&new), Some(&new))[0], "-");
        assert_eq!(usage_columns(None, None), vec!["-"; 5]);
    }

    #[test]
    fn tables_align_and_numbers_are_short() {
        let t = render_table(
            &["ID", "CPUS"],
            &[
                vec!["task-1".into(), num(0.5)],
                vec!["t".into(), num(1024.0)],
            ],
        );
        assert_eq!(t, "ID      CPUS\ntask-1  0.5\nt       1024\n");
        assert_eq!(num(0.1 + 0.2), "0.3");
        assert_eq!(num(0.0), "0");
    }
}
