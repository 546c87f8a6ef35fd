//! `brim task exec TASK -- CMD…`: runs a command inside a running task as a nested
//! container (the agent API's LAUNCH/WAIT/REMOVE_NESTED_CONTAINER), prints its output and
//! exits with its exit code. The master's `/state` says where the task runs; the CLI then
//! talks to that agent directly (with TLS: presenting its client certificate, as the
//! master's sandbox proxy does).

use std::io::Write;
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::{json, Value};

#[derive(clap::Args)]
pub(crate) struct TaskArgs {
    #[command(subcommand)]
    command: TaskCommand,
}

#[derive(clap::Subcommand)]
enum TaskCommand {
    /// Run a command inside a running task (its namespaces, cgroup, user, sandbox; an OCI
    /// task's image): one argument runs under `/bin/sh -c`, several are the program and
    /// its arguments. Exits with the command's exit code.
    #[command(after_long_help = super::help::TASK_EXEC)]
    Exec(ExecArgs),
}

#[derive(clap::Args)]
pub(crate) struct ExecArgs {
    /// Master address (host:port).
    #[arg(long, env = "BRIM_MASTER", default_value = super::DEFAULT_MASTER)]
    master: String,
    /// The task's framework, when several frameworks have a task of this id.
    #[arg(long)]
    framework: Option<String>,
    /// Start the command as a sidecar and return at once, printing its id (its output goes
    /// to `containers/<id>/{stdout,stderr}` in the task's sandbox; it ends with the task).
    #[arg(long)]
    detach: bool,
    /// Id of the nested container (default `exec-<random>`).
    #[arg(long)]
    id: Option<String>,
    /// The task.
    task_id: String,
    /// The command (after `--`).
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

pub(crate) async fn run(args: TaskArgs) -> anyhow::Result<u8> {
    match args.command {
        TaskCommand::Exec(a) => exec(a).await,
    }
}

/// Where a running task is: its agent's address, framework and container id.
struct Located {
    agent: String,
    framework_id: String,
    container_id: String,
}

async fn locate(http: &reqwest::Client, a: &ExecArgs) -> anyhow::Result<Located> {
    let security = super::security::client();
    let state = super::query::fetch_state(&a.master).await?;
    let matching: Vec<_> = state
        .tasks
        .iter()
        .chain(state.completed_tasks.iter())
        .filter(|t| t.id == a.task_id)
        .filter(|t| a.framework.as_ref().is_none_or(|f| *f == t.framework_id))
        .collect();
    let task = match matching.as_slice() {
        [] => bail!(
            "no task `{}` on the master at {}: see `brim tasks`",
            a.task_id,
            a.master
        ),
        [t] => *t,
        many if many.iter().filter(|t| !t.is_terminal()).count() == 1 => many
            .iter()
            .find(|t| !t.is_terminal())
            .copied()
            .unwrap_or(many[0]),
        many => bail!(
            "{} tasks have the id `{}` (frameworks {}): pass --framework",
            many.len(),
            a.task_id,
            many.iter()
                .map(|t| t.framework_id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    if task.state != "TASK_RUNNING" {
        bail!(
            "task `{}` is {}, not running: `brim task exec` needs a running task",
            task.id,
            task.state
        );
    }
    let Some(agent) = state.agents.iter().find(|ag| ag.id == task.agent_id) else {
        bail!(
            "the master knows no agent `{}` (of task `{}`)",
            task.agent_id,
            task.id
        );
    };
    let base = security.url(&agent.http_address);
    let agent_state: Value = http
        .get(format!("{base}/state"))
        .timeout(Duration::from_secs(15))
        .send()
        .await
        .with_context(|| format!("cannot reach the task's agent at {base}"))?
        .error_for_status()
        .with_context(|| format!("the agent at {base} refused /state"))?
        .json()
        .await
        .with_context(|| format!("the agent at {base} sent a /state that is not JSON"))?;
    let container_id = agent_state["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["id"] == task.id.as_str() && t["framework_id"] == task.framework_id.as_str())
        .and_then(|t| t["container_id"].as_str())
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .with_context(|| {
            format!(
                "the agent at {base} does not run task `{}` (any more)",
                task.id
            )
        })?;
    Ok(Located {
        agent: base,
        framework_id: task.framework_id.clone(),
        container_id,
    })
}

/// The agent API's answer, or an error with its message.
async fn call(
    http: &reqwest::Client,
    agent: &str,
    body: Value,
    timeout: Option<Duration>,
) -> anyhow::Result<Value> {
    let mut req = http.post(format!("{agent}/api/v1")).json(&body);
    if let Some(t) = timeout {
        req = req.timeout(t);
    }
    let resp = req
        .send()
        .await
        .with_context(|| format!("cannot reach the agent at {agent}"))?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    if !status.is_success() {
        bail!(
            "the agent refused {}: {} {}",
            body["type"].as_str().unwrap_or("the call"),
            status.as_u16(),
            text.trim()
        );
    }
    if text.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(&text).context("the agent's answer is not JSON")
}

/// A wait status (as `waitpid` gives it) as an exit code: the code, or 128 + signal.
pub(crate) fn exit_code_of(status: i64) -> u8 {
    let sig = status & 0x7f;
    if sig == 0 {
        ((status >> 8) & 0xff) as u8
    } else {
        (128 + sig).min(255) as u8
    }
}

async fn exec(a: ExecArgs) -> anyhow::Result<u8> {
    let security = super::security::client();
    let http = security
        .reqwest_builder()
        .context("cannot set up TLS for the agent")?
        .build()
        .context("cannot build an HTTP client")?;
    let at = locate(&http, &a).await?;
    let id = a.id.clone().unwrap_or_else(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        format!("exec-{}-{nanos:x}", std::process::id())
    });
    let command = match a.command.as_slice() {
        [one] => json!({"value": one, "shell": true}),
        [program, ..] => json!({"value": program, "shell": false, "arguments": a.command}),
        [] => bail!("no command given: brim task exec TASK -- CMD [ARGS…]"),
    };
    let cid = json!({"value": id, "parent": {"value": at.container_id}});
    call(
        &http,
        &at.agent,
        json!({"type": "LAUNCH_NESTED_CONTAINER",
               "launch_nested_container": {"container_id": cid, "command": command}}),
        Some(Duration::from_secs(30)),
    )
    .await?;
    if a.detach {
        println!("{id}");
        return Ok(0);
    }
    let wait = {
        let (http, agent, cid) = (http.clone(), at.agent.clone(), cid.clone());
        tokio::spawn(async move {
            call(
                &http,
                &agent,
                json!({"type": "WAIT_NESTED_CONTAINER", "wait_nested_container": {"container_id": cid}}),
                None,
            )
            .await
        })
    };
    tokio::pin!(wait);
    let out_url = |file: &str| {
        format!(
            "{}/sandbox/{}/{}/containers/{id}/{file}",
            at.agent, at.framework_id, a.task_id
        )
    };
    let (mut out_off, mut err_off) = (0u64, 0u64);
    let mut interrupted = false;
    let status = loop {
        let done = tokio::select! {
            r = &mut wait => Some(r),
            _ = tokio::time::sleep(Duration::from_millis(200)) => None,
            _ = tokio::signal::ctrl_c(), if !interrupted => {
                interrupted = true;
                let _ = call(&http, &at.agent, json!({"type": "KILL_NESTED_CONTAINER",
                    "kill_nested_container": {"container_id": cid}}), Some(Duration::from_secs(10))).await;
                None
            }
        };
        drain(
            &http,
            &out_url("stdout"),
            &mut out_off,
            &mut std::io::stdout(),
        )
        .await;
        drain(
            &http,
            &out_url("stderr"),
            &mut err_off,
            &mut std::io::stderr(),
        )
        .await;
        if let Some(r) = done {
            break r.context("waiting for the command failed")??;
        }
    };
    let raw = status["wait_nested_container"]["exit_status"]
        .as_i64()
        .context("the agent's WAIT answer has no exit_status")?;
    // Done with it: its output goes with it.
    let _ = call(
        &http,
        &at.agent,
        json!({"type": "REMOVE_NESTED_CONTAINER", "remove_nested_container": {"container_id": cid}}),
        Some(Duration::from_secs(10)),
    )
    .await;
    Ok(exit_code_of(raw))
}

/// Copies what is new in one output file.
async fn drain(http: &reqwest::Client, url: &str, offset: &mut u64, to: &mut impl Write) {
    loop {
        let Ok(resp) = http
            .get(url)
            .query(&[("offset", *offset)])
            .timeout(Duration::from_secs(15))
            .send()
            .await
        else {
            return;
        };
        if !resp.status().is_success() {
            return;
        }
        let Ok(bytes) = resp.bytes().await else {
            return;
        };
        if bytes.is_empty() {
            return;
        }
        *offset += bytes.len() as u64;
        let _ = to.write_all(&bytes);
        let _ = to.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::exit_code_of;

    #[test]
    fn wait_statuses_become_exit_codes() {
        assert_eq!(exit_code_of(0), 0);
        assert_eq!(exit_code_of(3 << 8), 3);
        assert_eq!(exit_code_of(9), 137);
        assert_eq!(exit_code_of(15), 143);
    }
}
