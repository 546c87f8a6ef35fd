//! `brim cron add|list|runs|remove`: the cron framework's client, through its HTTP API
//! (`/api/cron` on the master port, docs/FRAMEWORKS.md).

use anyhow::Context;
use brim_frameworks::cron::policy::Concurrency;
use brim_frameworks::cron::{format_time, JobSpec, JobView, RunState};
use reqwest::Method;

use super::service::Api;

#[derive(clap::Args)]
pub(crate) struct CronArgs {
    /// Master address, host:port.
    #[arg(long, env = "BRIM_MASTER", default_value = super::DEFAULT_MASTER, global = true)]
    pub(crate) master: String,
    #[command(subcommand)]
    pub(crate) command: CronCommand,
}

#[derive(clap::Subcommand)]
pub(crate) enum CronCommand {
    /// Add (or replace) a job: `brim cron add NAME --schedule '*/5 * * * *' -- CMD`.
    Add(AddArgs),
    /// List jobs with their next and last run.
    List {
        #[arg(long)]
        json: bool,
    },
    /// A job's run history (attempts, states, exit codes).
    Runs {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Remove a job (its active runs are killed).
    Remove { name: String },
}

#[derive(clap::Args)]
pub(crate) struct AddArgs {
    /// Job name: lowercase letters, digits and `-`.
    pub(crate) name: String,
    /// Cron expression: 5 fields (minute hour day-of-month month day-of-week), or 6 with
    /// seconds first, or @hourly/@daily/@weekly/@monthly/@yearly.
    #[arg(long)]
    pub(crate) schedule: String,
    /// IANA time zone the schedule is read in.
    #[arg(long, default_value = "UTC")]
    pub(crate) tz: String,
    /// When a run is still active at the next fire: allow another, forbid (skip), replace.
    #[arg(long, default_value = "forbid")]
    pub(crate) concurrency: Concurrency,
    /// Retries of a failed run (non-zero exit, lost task).
    #[arg(long, default_value_t = 0)]
    pub(crate) retries: u32,
    /// CPUs per run.
    #[arg(long, default_value_t = 0.1)]
    pub(crate) cpus: f64,
    /// Memory per run, MiB.
    #[arg(long, value_name = "MB", default_value_t = 32.0)]
    pub(crate) mem: f64,
    /// Unix user to run as (default: nobody).
    #[arg(long)]
    pub(crate) user: Option<String>,
    /// Environment variable (repeatable), NAME=value.
    #[arg(long = "env", value_name = "K=V")]
    pub(crate) env: Vec<String>,
    /// Run in an OCI container of this image (an absolute path on the agents to an OCI image
    /// layout directory or an OCI/`docker save` tarball, or an http:// URI of one).
    #[arg(long, value_name = "PATH_OR_URI")]
    pub(crate) image: Option<String>,
    /// The command: one argument runs with `/bin/sh -c`, several are executed directly.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true, num_args = 1.., value_name = "CMD")]
    pub(crate) command: Vec<String>,
}

pub(crate) async fn run(a: CronArgs) -> anyhow::Result<u8> {
    let api = Api::new(&a.master)?;
    match a.command {
        CronCommand::Add(add) => {
            let mut env = std::collections::BTreeMap::new();
            for kv in &add.env {
                match kv.split_once('=') {
                    Some((k, v)) if !k.is_empty() => {
                        env.insert(k.to_string(), v.to_string());
                    }
                    _ => anyhow::bail!("--env `{kv}` must look like NAME=value"),
                }
            }
            let spec = JobSpec {
                name: add.name,
                schedule: add.schedule,
                tz: add.tz,
                cmd: add.command,
                concurrency: add.concurrency,
                retries: add.retries,
                cpus: add.cpus,
                mem: add.mem,
                env,
                user: add.user,
                image: add.image,
            };
            if let Err(problems) = spec.validate() {
                let lines: Vec<String> = problems
                    .iter()
                    .map(|p| format!("  --{}: {}", flag_of(&p.field), p.problem))
                    .collect();
                anyhow::bail!("invalid cron job:\n{}", lines.join("\n"));
            }
            let body = serde_json::to_string(&spec).context("encoding the job")?;
            let v: JobView = api.call(Method::POST, "/api/cron", Some(body)).await?;
            let next = v
                .next_fire_ms
                .map_or("never".to_string(), |ms| format_time(ms, &v.spec.tz));
            println!("cron job {} added; next run {next}", v.spec.name);
        }
        CronCommand::List { json } => {
            let jobs: Vec<JobView> = api.call(Method::GET, "/api/cron", None).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&jobs)?);
                return Ok(0);
            }
            println!(
                "{:<20} {:<18} {:<8} {:>6} {:<26} LAST",
                "NAME", "SCHEDULE", "POLICY", "ACTIVE", "NEXT"
            );
            for j in &jobs {
                let next = j
                    .next_fire_ms
                    .map_or("-".into(), |ms| format_time(ms, &j.spec.tz));
                let last = j.last.as_ref().map_or("-".into(), |r| {
                    format!(
                        "{:?}{}",
                        r.state,
                        r.exit_code.map_or(String::new(), |c| format!(" ({c})"))
                    )
                    .to_lowercase()
                });
                println!(
                    "{:<20} {:<18} {:<8} {:>6} {:<26} {last}",
                    j.spec.name,
                    j.spec.schedule,
                    format!("{:?}", j.spec.concurrency).to_lowercase(),
                    j.active,
                    next
                );
            }
        }
        CronCommand::Runs { name, json } => {
            let j: JobView = api
                .call(Method::GET, &format!("/api/cron/{name}"), None)
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&j.runs)?);
                return Ok(0);
            }
            println!(
                "{:>5} {:>7} {:<10} {:>4} {:<26} {:>8}  MESSAGE",
                "FIRE", "ATTEMPT", "STATE", "EXIT", "SCHEDULED", "SECONDS"
            );
            for r in &j.runs {
                let secs = match (r.started_ms, r.ended_ms) {
                    (Some(s), Some(e)) if r.state != RunState::Skipped => {
                        format!("{:.1}", e.saturating_sub(s) as f64 / 1000.0)
                    }
                    _ => "-".into(),
                };
                println!(
                    "{:>5} {:>7} {:<10} {:>4} {:<26} {:>8}  {}",
                    r.fire,
                    r.attempt,
                    format!("{:?}", r.state).to_lowercase(),
                    r.exit_code.map_or("-".into(), |c| c.to_string()),
                    format_time(r.scheduled_ms, &j.spec.tz),
                    secs,
                    r.message
                );
            }
        }
        CronCommand::Remove { name } => {
            let _: JobView = api
                .call(Method::DELETE, &format!("/api/cron/{name}"), None)
                .await?;
            println!("cron job {name} removed");
        }
    }
    Ok(0)
}

/// The `brim cron add` flag a spec field comes from.
fn flag_of(field: &str) -> &str {
    match field {
        "cmd" => "command",
        "name" => "name (argument)",
        f => f,
    }
}
