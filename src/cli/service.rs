//! `brim service apply|list|show|scale|restart|remove`: the services framework's client. It
//! talks to the framework the master hosts through its HTTP API (`/api/services` on the
//! master port, docs/FRAMEWORKS.md).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use brim_frameworks::services::spec::ServiceSpec;
use brim_frameworks::services::{ApplyResult, ServiceView};
use serde::de::DeserializeOwned;

#[derive(clap::Args)]
pub(crate) struct ServiceArgs {
    /// Master address, host:port.
    #[arg(long, env = "BRIM_MASTER", default_value = super::DEFAULT_MASTER, global = true)]
    pub(crate) master: String,
    #[command(subcommand)]
    pub(crate) command: ServiceCommand,
}

#[derive(clap::Subcommand)]
pub(crate) enum ServiceCommand {
    /// Create or update a service from a spec file (`.toml`, or `.json`).
    Apply {
        /// The spec: id, instances, cmd, cpus, mem, ports, env, constraints, upgrade, backoff.
        file: PathBuf,
    },
    /// List services with their instance counts.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show one service: tasks, recent events and why instances wait.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Change the number of instances.
    Scale { id: String, instances: u32 },
    /// Rolling restart of every instance (bounded by max_unavailable / max_surge).
    Restart { id: String },
    /// Stop every instance and forget the service.
    Remove { id: String },
}

/// A client of one of the hosted frameworks' HTTP APIs.
pub(crate) struct Api {
    master: String,
    base: String,
    http: reqwest::Client,
}

impl Api {
    pub(crate) fn new(master: &str) -> anyhow::Result<Self> {
        let hostport = master
            .strip_prefix("http://")
            .or_else(|| master.strip_prefix("https://"))
            .unwrap_or(master);
        if !hostport.contains(':') {
            anyhow::bail!(
                "invalid master address `{master}`: expected host:port, e.g. 127.0.0.1:5050"
            );
        }
        let security = super::security::client();
        let http = security
            .reqwest_builder()?
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(20))
            .build()
            .context("cannot build an HTTP client")?;
        Ok(Api {
            master: master.to_string(),
            base: security.url(hostport),
            http,
        })
    }

    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<String>,
    ) -> anyhow::Result<T> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let resp = req.send().await.map_err(|e| {
            let mut cur: &dyn std::error::Error = &e;
            while let Some(next) = cur.source() {
                cur = next;
            }
            anyhow::anyhow!(
                "cannot reach the master at {}: {cur}; is `brim master` or `brim dev` running?",
                self.master
            )
        })?;
        let status = resp.status();
        let text = resp.text().await.context("reading the master's answer")?;
        if status.is_success() {
            return serde_json::from_str(&text)
                .with_context(|| format!("the master sent an unreadable answer for {path}"));
        }
        let err: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        match err["error"].as_str() {
            Some(message) => {
                let mut msg = message.to_string();
                if let Some(problems) = err["problems"].as_array().filter(|p| p.len() > 1) {
                    for p in problems {
                        msg.push_str(&format!(
                            "\n  {}: {}",
                            p["field"].as_str().unwrap_or("?"),
                            p["problem"].as_str().unwrap_or("?")
                        ));
                    }
                }
                anyhow::bail!("{msg}")
            }
            None if status == reqwest::StatusCode::NOT_FOUND => anyhow::bail!(
                "the master at {} does not serve {path}: it does not host the built-in frameworks \
                 (an older brim, or a standby master)",
                self.master
            ),
            None => anyhow::bail!(
                "the master at {} answered HTTP {status} for {path}",
                self.master
            ),
        }
    }
}

pub(crate) async fn run(a: ServiceArgs) -> anyhow::Result<u8> {
    let api = Api::new(&a.master)?;
    use reqwest::Method;
    match a.command {
        ServiceCommand::Apply { file } => {
            let name = file.display().to_string();
            let text =
                std::fs::read_to_string(&file).with_context(|| format!("cannot read {name}"))?;
            let spec = ServiceSpec::from_file_text(&name, &text)
                .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
            if let Err(e) = spec.clone().validate() {
                let lines: Vec<String> = e
                    .problems()
                    .iter()
                    .map(|p| format!("  {}: {}", p.field, p.problem))
                    .collect();
                anyhow::bail!("{name}: invalid service spec:\n{}", lines.join("\n"));
            }
            let body = serde_json::to_string(&spec).context("encoding the spec")?;
            let r: ApplyResult = api.call(Method::POST, "/api/services", Some(body)).await?;
            println!("service {} {} (version {})", r.id, r.outcome, r.version);
            for w in &r.warnings {
                eprintln!("warning: {w}");
            }
        }
        ServiceCommand::List { json } => {
            let list: Vec<ServiceView> = api.call(Method::GET, "/api/services", None).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(0);
            }
            println!(
                "{:<24} {:>9} {:>7} {:>7} {:>7}  STATUS",
                "ID", "INSTANCES", "RUNNING", "HEALTHY", "VERSION"
            );
            for s in &list {
                println!(
                    "{:<24} {:>9} {:>7} {:>7} {:>7}  {}",
                    s.id,
                    s.instances,
                    s.running,
                    s.healthy,
                    s.version,
                    status_word(s)
                );
            }
        }
        ServiceCommand::Show { id, json } => {
            let s: ServiceView = api
                .call(Method::GET, &format!("/api/services/{id}"), None)
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
                return Ok(0);
            }
            print_service(&s);
        }
        ServiceCommand::Scale { id, instances } => {
            let body = serde_json::json!({ "instances": instances }).to_string();
            let s: ServiceView = api
                .call(
                    Method::POST,
                    &format!("/api/services/{id}/scale"),
                    Some(body),
                )
                .await?;
            println!("service {} scaled to {} instance(s)", s.id, s.instances);
        }
        ServiceCommand::Restart { id } => {
            let s: ServiceView = api
                .call(Method::POST, &format!("/api/services/{id}/restart"), None)
                .await?;
            println!("service {}: rolling restart to version {}", s.id, s.version);
        }
        ServiceCommand::Remove { id } => {
            let s: ServiceView = api
                .call(Method::DELETE, &format!("/api/services/{id}"), None)
                .await?;
            println!(
                "service {}: stopping {} task(s), then removing",
                s.id,
                s.tasks.len()
            );
        }
    }
    Ok(0)
}

fn status_word(s: &ServiceView) -> String {
    if s.removing {
        "removing".into()
    } else if s.backoff_seconds > 0.0 {
        format!("backoff {:.0}s", s.backoff_seconds.ceil())
    } else if s.tasks.iter().any(|t| t.version != s.version) {
        "restarting".into()
    } else if s.healthy == s.instances as usize && s.tasks.len() == s.instances as usize {
        "ok".into()
    } else if s.healthy < s.instances as usize {
        "deploying".into()
    } else {
        "scaling".into()
    }
}

fn print_service(s: &ServiceView) {
    println!("id:         {}", s.id);
    println!("status:     {}", status_word(s));
    println!("version:    {}", s.version);
    println!(
        "instances:  {} ({} running, {} healthy, {} starting, {} stopping)",
        s.instances, s.running, s.healthy, s.staging, s.killing
    );
    println!("command:    {}", s.spec.cmd);
    println!(
        "resources:  cpus:{} mem:{} ports:{}",
        s.spec.cpus, s.spec.mem, s.spec.ports
    );
    if !s.spec.constraints.is_empty() {
        println!("constraints: {}", s.spec.constraints.join(", "));
    }
    println!(
        "upgrade:    max_unavailable {} max_surge {}",
        s.spec.upgrade.max_unavailable, s.spec.upgrade.max_surge
    );
    if s.failures > 0 {
        println!("failures:   {} in a row", s.failures);
    }
    if let Some(w) = &s.waiting {
        println!("waiting:    {w}");
    }
    if !s.tasks.is_empty() {
        println!(
            "\n{:<28} {:>3} {:<14} {:<20} PORTS",
            "TASK", "VER", "STATE", "HOST"
        );
        for t in &s.tasks {
            let state = if t.killing {
                "KILLING"
            } else {
                t.state.trim_start_matches("TASK_")
            };
            println!(
                "{:<28} {:>3} {:<14} {:<20} {}",
                t.id,
                t.version,
                state,
                t.hostname,
                t.ports.join(",")
            );
        }
    }
    if !s.events.is_empty() {
        println!("\nrecent events:");
        for e in s.events.iter().rev().take(10).rev() {
            println!(
                "  {}  {}",
                brim_frameworks::cron::format_time(e.at_ms, "UTC"),
                e.message
            );
        }
    }
}
