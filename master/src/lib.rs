//! The brim master: the state actor, the pure DRF allocator, the durable registry and the
//! API edge (gRPC for agents and frameworks, HTTP for operators and Prometheus) on one port.
#![forbid(unsafe_code)]

mod actor;
pub mod allocator;
pub mod mesos;
pub mod metrics;
pub mod registry;
mod server;
pub mod state;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use registry::{MemoryRegistry, RedbRegistry, RegistryError, RegistryStore};
pub use state::StateConfig;

/// Why the master could not start.
#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    #[error("cannot listen on {addr}: {source}; is another master (or `brim dev`) running? pick another --port")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot create work dir {path}: {source}")]
    WorkDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("registry: {0}")]
    Registry(#[from] RegistryError),
    #[error("server failed: {0}")]
    Serve(std::io::Error),
}

/// How to run a master.
#[derive(Debug, Clone)]
pub struct MasterConfig {
    pub listen: SocketAddr,
    /// Registry file lives here (`registry.redb`).
    pub work_dir: PathBuf,
    pub allocation_interval: Duration,
    pub state: StateConfig,
}

impl MasterConfig {
    pub fn new(listen: SocketAddr, work_dir: PathBuf) -> Self {
        MasterConfig {
            listen,
            work_dir,
            allocation_interval: Duration::from_secs(1),
            state: StateConfig::default(),
        }
    }
}

/// A running master.
pub struct RunningMaster {
    addr: SocketAddr,
    shutdown: tokio::sync::watch::Sender<bool>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    actor: tokio::task::JoinHandle<()>,
}

impl RunningMaster {
    /// Address the master actually listens on (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving and waits for the actor to finish.
    pub async fn stop(self) -> Result<(), MasterError> {
        let _ = self.shutdown.send(true);
        let served = self.server.await;
        let _ = self.actor.await;
        match served {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(MasterError::Serve(e)),
            Err(e) => Err(MasterError::Serve(std::io::Error::other(e.to_string()))),
        }
    }

    /// Runs until the server stops on its own (error) — for daemons.
    pub async fn wait(&mut self) -> Result<(), MasterError> {
        match (&mut self.server).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(MasterError::Serve(e)),
            Err(e) => Err(MasterError::Serve(std::io::Error::other(e.to_string()))),
        }
    }
}

/// Opens the registry, binds the port and starts serving.
pub async fn start(config: MasterConfig) -> Result<RunningMaster, MasterError> {
    std::fs::create_dir_all(&config.work_dir).map_err(|source| MasterError::WorkDir {
        path: config.work_dir.clone(),
        source,
    })?;
    let registry = RedbRegistry::open(&config.work_dir.join("registry.redb"))?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| MasterError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| MasterError::Bind {
        addr: config.listen,
        source,
    })?;
    let master_id = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
    let master = state::Master::new(
        config.state.clone(),
        master_id.clone(),
        Box::new(registry),
        Duration::ZERO,
    )?;
    let (shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
    let (handle, actor) = actor::spawn(
        master,
        actor::ActorConfig {
            allocation_interval: config.allocation_interval,
            tick_interval: Duration::from_millis(250),
            leader_address: addr.to_string(),
        },
        shutdown_rx.clone(),
    );
    let router = server::router(handle);
    let mut rx = shutdown_rx;
    let server = tokio::spawn(server::serve(listener, router, async move {
        let _ = rx.wait_for(|v| *v).await;
    }));
    tracing::info!(%addr, %master_id, "master listening (gRPC + HTTP)");
    Ok(RunningMaster {
        addr,
        shutdown,
        server,
        actor,
    })
}
