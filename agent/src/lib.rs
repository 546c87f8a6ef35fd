//! brim agent: runs tasks in cgroups on one machine and reports to the master.
//!
//! - [`start`] / [`run`]: the entry points (`brim agent`, `brim dev`).
//! - `agent`: the task table and the handling of master commands.
//! - `master_link`: the `AgentService.Attach` stream (register, heartbeats, status updates
//!   resent until acknowledged, usage) with reconnection.
//! - `launcher`: command → process in its sandbox and cgroups; `task`: pure per-task state.
//! - [`cgroups`]: the [`cgroups::CgroupBackend`] trait, v2 and hybrid backends.
//! - [`slack`], [`qos`] (pure) and [`oversubscription`] (their shell): slack estimates
//!   published to the master, revocable tasks evicted when their owners suffer.
//! - `http`: `/health`, `/state`, `/metrics`, `/sandbox/{framework}/{task}/{stdout|stderr}`.
//! - `sys`: every raw syscall.
//!
//! Architecture Invariant: only `sys` contains `unsafe` / calls libc directly.
//! Architecture Invariant: a lost master connection never kills tasks; only agent shutdown,
//! `kill_task` and `shutdown_framework` do.

mod agent;
pub mod cgroups;
pub mod checkpoint;
mod config;
pub mod containerizer;
pub mod ebpf;
mod executor_api;
pub mod fetcher;
pub mod health;
mod http;
pub mod launcher;
mod master_link;
mod metrics;
pub mod nested;
pub mod network;
pub mod oversubscription;
mod pods;
pub mod qos;
mod recovery;
pub mod resources_detect;
pub mod slack;
pub mod supervisor;
// The clone3 argument block, shared with the supervisor program like `supervisor_spec`.
#[allow(unreachable_pub)]
#[path = "../supervisor/clone3.rs"]
mod clone3;
// Shared with the supervisor program (`agent/supervisor/main.rs`), whose crate it belongs to
// as much (public items) and which uses the decoding half.
#[allow(unreachable_pub, dead_code)]
#[path = "../supervisor/spec.rs"]
mod supervisor_spec;
mod sys;
pub mod task;
mod telemetry;
pub mod volumes;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::{AgentConfig, EbpfMode, Isolation, DEFAULT_HTTP_PORT};
pub use containerizer::hooks::HookConfig;
pub use http::{MAX_READ, TASK_STATE_HEADER};

use crate::agent::Agent;
use crate::cgroups::{CgroupBackend, CgroupError};

/// Why the agent could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("invalid agent configuration: {0}")]
    Config(String),
    #[error("cannot use work dir {path}: {source} (pass a writable --work-dir)")]
    WorkDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source} (pick another --http-addr/port)")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid resources: {0}")]
    Resources(#[from] brim_proto::ResourceError),
    #[error("cgroups unavailable: {0}")]
    Cgroup(#[from] CgroupError),
    #[error("agent HTTP server failed: {0}")]
    Http(std::io::Error),
    #[error("TLS: {0}")]
    Tls(#[from] brim_security::TlsError),
}

/// A started agent: HTTP is listening and the master link is running.
/// Call [`AgentHandle::run_until`] to keep it running and shut it down cleanly.
#[derive(Debug)]
pub struct AgentHandle {
    agent: Arc<Agent>,
    http_addr: SocketAddr,
    stop: watch::Sender<bool>,
    http_task: JoinHandle<std::io::Result<()>>,
    link_task: JoinHandle<()>,
}

impl AgentHandle {
    /// The address the HTTP server is bound to (the real port when configured with 0).
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// `host:port` advertised to the master in `AgentInfo.http_address`.
    pub fn advertised_http_address(&self) -> &str {
        &self.agent.http_address
    }

    /// The agent id assigned by the master (after the first registration, or persisted).
    pub fn agent_id(&self) -> Option<String> {
        self.agent.state().agent_id.clone()
    }

    /// Runs until `shutdown` completes, then kills every task (SIGTERM, grace, SIGKILL),
    /// removes their cgroups and stops.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), AgentError> {
        let AgentHandle {
            agent,
            stop,
            mut http_task,
            link_task,
            ..
        } = self;
        let http_failed = tokio::select! {
            _ = shutdown => None,
            r = &mut http_task => Some(r),
        };
        tracing::info!("agent shutting down");
        // Tasks first, while the master link can still deliver their final updates.
        agent.shutdown_tasks().await;
        let a = Arc::clone(&agent);
        let flush = async move {
            while a.state().tasks.values().any(|t| !t.updates.is_empty()) && a.state().connected {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), flush).await;
        let _ = stop.send(true);
        let _ = link_task.await;
        // Every task is gone: nothing to keep counting across a restart.
        agent.telemetry.shutdown();
        if let Some(cg) = agent.cgroups.clone() {
            let _ = tokio::task::spawn_blocking(move || {
                if let Err(e) = cgroups::remove_root(cg.as_ref()) {
                    tracing::debug!(error = %e, "agent root cgroup not removed");
                }
            })
            .await;
        }
        match http_failed {
            Some(Ok(Ok(()))) | None => {
                http_task.abort();
                Ok(())
            }
            Some(Ok(Err(e))) => Err(AgentError::Http(e)),
            Some(Err(e)) => Err(AgentError::Http(std::io::Error::other(e.to_string()))),
        }
    }
}

fn pick_cgroups(config: &AgentConfig) -> Result<Option<Arc<dyn CgroupBackend>>, AgentError> {
    if config.isolation == Isolation::None {
        tracing::warn!("isolation disabled: tasks run without cgroup limits");
        return Ok(None);
    }
    let attempt = || -> Result<Arc<dyn CgroupBackend>, CgroupError> {
        if !sys::is_root() {
            return Err(CgroupError::Io {
                action: "manage",
                path: PathBuf::from("/sys/fs/cgroup"),
                source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
            });
        }
        let backend: Arc<dyn CgroupBackend> = Arc::from(cgroups::detect(&config.cgroup_name)?);
        backend.prepare()?;
        Ok(backend)
    };
    match attempt() {
        Ok(b) => {
            tracing::info!(layout = b.kind(), root = %config.cgroup_name, "cgroup isolation enabled");
            Ok(Some(b))
        }
        Err(e) if config.isolation == Isolation::Auto => {
            tracing::warn!(error = %e, "CGROUPS UNAVAILABLE: tasks run WITHOUT resource limits (run the agent as root for isolation)");
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// Host to advertise for an HTTP server bound to `bound`.
async fn advertise_host(config: &AgentConfig, bound: SocketAddr, hostname: &str) -> String {
    if let Some(h) = &config.advertise_host {
        return h.clone();
    }
    let ip = bound.ip();
    if ip.is_loopback() {
        return ip.to_string();
    }
    if !ip.is_unspecified() {
        return ip.to_string();
    }
    match tokio::net::lookup_host((hostname, bound.port())).await {
        Ok(mut addrs) => match addrs.next() {
            Some(_) => hostname.to_string(),
            None => "127.0.0.1".to_string(),
        },
        Err(_) => "127.0.0.1".to_string(),
    }
}

fn host_port(host: &str, port: u16) -> String {
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => format!("[{v6}]:{port}"),
        _ => format!("{host}:{port}"),
    }
}

/// Starts the agent: prepares the work dir and cgroups, binds HTTP and starts the master
/// link. Returns once the HTTP server listens.
pub async fn start(config: AgentConfig) -> Result<AgentHandle, AgentError> {
    if config.master.trim().is_empty() {
        return Err(AgentError::Config(
            "master address is empty: pass host:port".into(),
        ));
    }
    cgroups::check_name(&config.cgroup_name).map_err(|e| AgentError::Config(e.to_string()))?;
    let wd = config.work_dir.clone();
    std::fs::create_dir_all(wd.join("sandboxes")).map_err(|source| AgentError::WorkDir {
        path: wd.clone(),
        source,
    })?;
    let total = resources_detect::detect(&wd, config.resources.as_ref())?;
    // The embedded supervisor program, ready before the first launch (and a problem with it,
    // a `vm.memfd_noexec = 2` say, told at once rather than at every launch).
    if let Err(e) = sys::prepare_supervisor() {
        tracing::error!(error = %e, "tasks cannot be launched on this agent");
    }
    let tls = config
        .tls
        .as_ref()
        .map(brim_security::tls::server_config)
        .transpose()?;
    if tls.is_none() {
        tracing::warn!("PLAINTEXT (--insecure): the HTTP API serves anyone and the master link is unauthenticated");
    }
    let listener = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .map_err(|source| AgentError::Bind {
            addr: config.http_addr,
            source,
        })?;
    let http_addr = listener.local_addr().map_err(|source| AgentError::Bind {
        addr: config.http_addr,
        source,
    })?;
    // After binding, so a busy port leaves no agent root cgroup behind.
    let cg = pick_cgroups(&config)?;
    let hostname = sys::hostname().unwrap_or_else(|| "localhost".into());
    let http_address = host_port(
        &advertise_host(&config, http_addr, &hostname).await,
        http_addr.port(),
    );
    let agent_id = recovery::identity(&wd, &total, config.resources.as_ref());
    let same_agent = agent_id.is_some();
    tracing::info!(%http_addr, advertised = %http_address, resources = %total, agent_id = ?agent_id, "agent starting");
    let agent = Arc::new(Agent::new(
        config,
        total,
        hostname,
        http_address,
        cg,
        agent_id,
    ));
    agent.start_checkpoints();
    recovery::recover(&agent, same_agent).await;

    let (stop, stop_rx) = watch::channel(false);
    let app = http::router(Arc::clone(&agent));
    let mut http_stop = stop_rx.clone();
    let http_task = tokio::spawn(brim_security::serve(listener, tls, app, async move {
        let _ = http_stop.wait_for(|s| *s).await;
    }));
    tokio::spawn(telemetry::run(Arc::clone(&agent), stop_rx.clone()));
    tokio::spawn(oversubscription::run(Arc::clone(&agent), stop_rx.clone()));
    let link_task = tokio::spawn(master_link::run(Arc::clone(&agent), stop_rx));
    Ok(AgentHandle {
        agent,
        http_addr,
        stop,
        http_task,
        link_task,
    })
}

/// Starts the agent and runs it until `shutdown` completes (see [`AgentHandle::run_until`]).
pub async fn run(
    config: AgentConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AgentError> {
    start(config).await?.run_until(shutdown).await
}
