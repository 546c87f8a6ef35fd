//! The brim master: the state actor, the pure DRF allocator, the durable registry and the
//! API edge (gRPC for agents and frameworks, HTTP for operators and Prometheus) on one port.
#![forbid(unsafe_code)]

mod actor;
pub mod allocator;
mod auth;
pub mod election;
pub mod mesos;
pub mod metrics;
pub mod ratelimit;
pub mod registry;
mod server;
pub mod state;
mod ui;
pub mod zk;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use std::sync::Arc;

use brim_security::{Acls, Credentials, TlsFiles, Watched};
use tokio::sync::watch;

pub use auth::Guard;

pub use registry::{MemoryRegistry, RedbRegistry, RegistryError, RegistryStore};
pub use state::StateConfig;
pub use zk::ZkUrl;

/// Why the master could not start or stopped.
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
    #[error("election: {0}")]
    Election(#[from] election::ElectionError),
    #[error("lost leadership (etcd lease expired or was revoked); restart this master to rejoin as a standby")]
    LostLeadership,
    #[error("server failed: {0}")]
    Serve(std::io::Error),
    #[error("TLS: {0}")]
    Tls(#[from] brim_security::TlsError),
    #[error("{0}")]
    Policy(#[from] brim_security::policy::PolicyError),
    #[error("cannot build the HTTP client for agents: {0}")]
    HttpClient(String),
}

/// How the master protects its port (docs/SECURITY.md).
#[derive(Debug, Clone, Default)]
pub struct MasterSecurity {
    /// Serve TLS with this certificate and verify client certificates (agents must present
    /// one) against the CA; the same certificate is the master's client identity towards
    /// agents. `None`: plaintext (`--insecure`).
    pub tls: Option<TlsFiles>,
    /// Bearer tokens (`--credentials`): with a file, every non-public request needs a token
    /// or a client certificate. Re-read when it changes.
    pub credentials: Option<PathBuf>,
    /// Per-principal permissions (`--acls`): with a file, anything not granted is denied.
    /// Re-read when it changes.
    pub acls: Option<PathBuf>,
    /// Time bounds of the listener: header read, request and gRPC deadlines, HTTP/2
    /// keepalive (a slow or silent client cannot hold a connection or handler forever).
    pub limits: brim_security::ServeLimits,
    /// Rate limits on subscribe and registration storms and the cap on open subscription
    /// streams; off by default here, on by default in `brim master`.
    pub rate_limits: ratelimit::RateLimits,
}

/// How often the credentials and ACL files are checked for changes.
const POLICY_POLL: Duration = Duration::from_secs(1);

/// The loaded security settings: the listener's TLS, the guard, the agents' HTTP client and
/// the watchers of the policy files (stopped on drop).
struct Edge {
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: brim_security::ServeLimits,
    guard: Arc<Guard>,
    agents_http: ui::AgentClient,
    watchers: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Edge {
    fn drop(&mut self) {
        for w in &self.watchers {
            w.abort();
        }
    }
}

impl Edge {
    fn load(s: &MasterSecurity) -> Result<Edge, MasterError> {
        let tls = s
            .tls
            .as_ref()
            .map(brim_security::tls::server_config)
            .transpose()?;
        let client = brim_security::ClientSecurity {
            tls: s.tls.as_ref().map(|f| brim_security::ClientTls {
                ca: f.ca.clone(),
                identity: Some((f.cert.clone(), f.key.clone())),
            }),
            token: None,
        };
        let http = client
            .reqwest_builder()?
            .build()
            .map_err(|e| MasterError::HttpClient(e.to_string()))?;
        let credentials = s
            .credentials
            .as_deref()
            .map(|p| Watched::load(p, Credentials::parse).map(Arc::new))
            .transpose()?;
        let acls = s
            .acls
            .as_deref()
            .map(|p| Watched::load(p, Acls::parse).map(Arc::new))
            .transpose()?;
        if tls.is_none() {
            tracing::warn!("serving PLAINTEXT (--insecure): anyone who reaches this port can register agents and frameworks and read everything");
        }
        if acls.is_some() && credentials.is_none() && tls.is_none() {
            tracing::warn!("ACLs without credentials or TLS: no caller has a principal, so every authorized call is denied");
        }
        let mut watchers = Vec::new();
        if let Some(c) = &credentials {
            watchers.push(c.watch(POLICY_POLL));
        }
        if let Some(a) = &acls {
            watchers.push(a.watch(POLICY_POLL));
        }
        Ok(Edge {
            tls,
            limits: s.limits,
            guard: Arc::new(
                Guard::new(s.tls.is_some(), credentials, acls).with_rate_limits(s.rate_limits),
            ),
            agents_http: ui::AgentClient {
                http,
                scheme: client.scheme(),
            },
            watchers,
        })
    }
}

/// High availability: leader election and the registry in etcd.
#[derive(Debug, Clone)]
pub struct HaConfig {
    /// etcd client endpoints, e.g. `http://127.0.0.1:2379`.
    pub etcd: Vec<String>,
    /// Address (host:port) other masters, agents and frameworks reach this master at.
    pub advertise: String,
    /// Leader lease TTL: a dead leader is replaced about this long after it stops.
    pub lease_ttl: Duration,
    /// Key prefix of this cluster in etcd.
    pub prefix: String,
    /// TLS to etcd (`https://` endpoints): the CA that signed etcd's certificate and this
    /// master's client certificate when etcd checks them. `None`: plaintext.
    pub etcd_tls: Option<brim_security::ClientTls>,
}

/// Publication of the leader to ZooKeeper for Mesos clients using `zk://` detection.
#[derive(Debug, Clone)]
pub struct ZkConfig {
    /// Where (`zk://host:port[,…]/path`).
    pub url: zk::ZkUrl,
    /// The leader's `host:port` written into its `MasterInfo` (a single master's; in HA mode
    /// the `HaConfig::advertise` of whichever master leads is used instead).
    pub advertise: String,
}

/// How to run a master.
#[derive(Debug, Clone)]
pub struct MasterConfig {
    pub listen: SocketAddr,
    /// Registry file lives here (`registry.redb`) when not in HA mode.
    pub work_dir: PathBuf,
    pub allocation_interval: Duration,
    pub state: StateConfig,
    /// `Some` runs in HA mode (etcd); `None` is a single master that always leads.
    pub ha: Option<HaConfig>,
    /// More HTTP routes served by the leader on the same port (the hosted frameworks'
    /// `/api/services` and `/api/cron`).
    pub extra_routes: Option<axum::Router>,
    /// TLS, authentication and authorization; the default is plaintext and open.
    pub security: MasterSecurity,
    /// `Some`: the leader publishes itself to ZooKeeper in Mesos's `json.info_` format.
    pub zk: Option<ZkConfig>,
}

impl MasterConfig {
    pub fn new(listen: SocketAddr, work_dir: PathBuf) -> Self {
        MasterConfig {
            listen,
            work_dir,
            allocation_interval: Duration::from_secs(1),
            state: StateConfig::default(),
            ha: None,
            extra_routes: None,
            security: MasterSecurity::default(),
            zk: None,
        }
    }
}

/// A running master.
pub struct RunningMaster {
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    leading: watch::Receiver<bool>,
    main: tokio::task::JoinHandle<Result<(), MasterError>>,
}

fn joined(r: Result<Result<(), MasterError>, tokio::task::JoinError>) -> Result<(), MasterError> {
    r.unwrap_or_else(|e| Err(MasterError::Serve(std::io::Error::other(e.to_string()))))
}

impl RunningMaster {
    /// Address the master actually listens on (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Turns `true` once this master leads (at once for a single master; after winning the
    /// election in HA mode). Work that only the leader may do waits for it.
    pub fn leading(&self) -> watch::Receiver<bool> {
        self.leading.clone()
    }

    /// Stops serving and waits for the actor to finish.
    pub async fn stop(self) -> Result<(), MasterError> {
        let _ = self.shutdown.send(true);
        joined(self.main.await)
    }

    /// Runs until the master stops on its own (error, lost leadership) — for daemons.
    pub async fn wait(&mut self) -> Result<(), MasterError> {
        joined((&mut self.main).await)
    }
}

/// Resolves once the flag is set (or its sender is gone), holding no borrow across awaits.
async fn until_true(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|v| *v).await;
}

/// Binds the master's port. TCP_NODELAY is set on the listening socket, so every accepted
/// connection inherits it: with Nagle on, a small message written while the previous one is
/// unacknowledged (a status update right after a run_task, an update to a framework) waits for
/// the peer's delayed ACK — 40 ms on Linux, on every launch.
async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, MasterError> {
    let err = |source| MasterError::Bind { addr, source };
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(err)?;
    socket.set_reuseaddr(true).map_err(err)?;
    socket.set_nodelay(true).map_err(err)?;
    socket.bind(addr).map_err(err)?;
    socket.listen(1024).map_err(err)
}

/// Binds the port and starts serving: as the leader right away (single master, embedded
/// registry), or as a standby that campaigns for leadership in etcd (HA).
pub async fn start(config: MasterConfig) -> Result<RunningMaster, MasterError> {
    std::fs::create_dir_all(&config.work_dir).map_err(|source| MasterError::WorkDir {
        path: config.work_dir.clone(),
        source,
    })?;
    let edge = Arc::new(Edge::load(&config.security)?);
    if let Some(ha) = &config.ha {
        // Fail at start, not in the connect-retry loop, on what retrying cannot fix.
        election::endpoints_for(&ha.etcd, ha.etcd_tls.is_some())?;
        if let Some(tls) = &ha.etcd_tls {
            tls.tonic_config()?;
        }
    }
    let listener = bind(config.listen).await?;
    let addr = listener.local_addr().map_err(|source| MasterError::Bind {
        addr: config.listen,
        source,
    })?;
    let (shutdown, shutdown_rx) = watch::channel(false);
    let (leading_tx, leading) = watch::channel(false);
    let main = match config.ha.clone() {
        None => {
            let registry = RedbRegistry::open(&config.work_dir.join("registry.redb"))?;
            tokio::spawn(lead(
                config,
                edge,
                listener,
                Box::new(registry),
                shutdown_rx,
                Role {
                    lost: None,
                    address: addr.to_string(),
                    masters: watch::channel(vec![addr.to_string()]).1,
                    leading: leading_tx,
                },
            ))
        }
        Some(ha) => tokio::spawn(run_ha(config, edge, ha, listener, shutdown_rx, leading_tx)),
    };
    Ok(RunningMaster {
        addr,
        shutdown,
        leading,
        main,
    })
}

/// Serves as the leader until shutdown or, in HA mode, until leadership is lost.
/// What a leading master needs to know about its leadership.
struct Role {
    /// Flips to `true` when leadership is lost (HA); `None` for a single master.
    lost: Option<watch::Receiver<bool>>,
    /// The address clients reach the leader at.
    address: String,
    /// Every master taking part (leader + standbys).
    masters: watch::Receiver<Vec<String>>,
    /// Set to `true` once serving as leader.
    leading: watch::Sender<bool>,
}

async fn lead(
    config: MasterConfig,
    edge: Arc<Edge>,
    listener: tokio::net::TcpListener,
    registry: Box<dyn RegistryStore>,
    mut shutdown: watch::Receiver<bool>,
    role: Role,
) -> Result<(), MasterError> {
    let Role {
        mut lost,
        address: leader_address,
        masters,
        leading,
    } = role;
    let addr = listener.local_addr().map_err(MasterError::Serve)?;
    let master_id = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
    let zk_info = config.zk.as_ref().map(|zk| {
        let advertise = if config.ha.is_some() {
            &leader_address
        } else {
            &zk.advertise
        };
        (zk.url.clone(), zk::master_info(&master_id, advertise))
    });
    let mut master = state::Master::new(
        config.state.clone(),
        master_id.clone(),
        registry,
        Duration::ZERO,
    )?;
    master.metrics.register_guard(&edge.guard);
    let (stop_tx, stop_rx) = watch::channel(false);
    let (handle, actor) = actor::spawn(
        master,
        actor::ActorConfig {
            allocation_interval: config.allocation_interval,
            tick_interval: Duration::from_millis(250),
            leader_address,
            masters,
            elected_time: actor::wall_clock(),
            guard: edge.guard.clone(),
        },
        stop_rx.clone(),
    );
    let router = server::router(
        handle,
        edge.guard.clone(),
        edge.agents_http.clone(),
        config.extra_routes.clone(),
    );
    let mut server_stop = stop_rx;
    let mut server = tokio::spawn(server::serve(
        listener,
        edge.tls.clone(),
        edge.limits,
        router,
        async move {
            let _ = server_stop.wait_for(|v| *v).await;
        },
    ));
    tracing::info!(%addr, %master_id, "master leading (gRPC + HTTP)");
    // Mesos clients with `zk://` find the leader there; the node goes when `stop_tx` fires.
    let zk_publisher =
        zk_info.map(|(url, info)| tokio::spawn(zk::publish(url, info, stop_tx.subscribe())));
    let _ = leading.send(true);
    let lost_leadership = async {
        match lost.as_mut() {
            Some(l) => {
                let _ = l.wait_for(|v| *v).await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    let mut actor = actor;
    let outcome = tokio::select! {
        _ = &mut actor => {
            // The actor only stops on its own when the registry fenced it off.
            let _ = stop_tx.send(true);
            let _ = server.await;
            return Err(MasterError::LostLeadership);
        }
        r = &mut server => {
            return match r {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(MasterError::Serve(e)),
                Err(e) => Err(MasterError::Serve(std::io::Error::other(e.to_string()))),
            };
        }
        _ = until_true(&mut shutdown) => Ok(()),
        _ = lost_leadership => {
            tracing::error!("lost leadership: stopping at once");
            Err(MasterError::LostLeadership)
        }
    };
    let _ = stop_tx.send(true);
    if let Some(p) = zk_publisher {
        // Closing the session removes the znode at once (else it expires with the session).
        let _ = tokio::time::timeout(Duration::from_secs(2), p).await;
    }
    let _ = server.await;
    let _ = actor.await;
    outcome
}

/// HA: connect to etcd (retrying), serve as a standby while campaigning, then lead.
async fn run_ha(
    config: MasterConfig,
    edge: Arc<Edge>,
    ha: HaConfig,
    listener: tokio::net::TcpListener,
    mut shutdown: watch::Receiver<bool>,
    leading: watch::Sender<bool>,
) -> Result<(), MasterError> {
    let addr = listener.local_addr().map_err(MasterError::Serve)?;
    let mut backoff = Duration::from_millis(250);
    let client = loop {
        match election::connect_with(&ha.etcd, ha.etcd_tls.as_ref()).await {
            Ok(c) => break c,
            Err(e) => {
                tracing::warn!("{e}; retrying in {backoff:?}");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = until_true(&mut shutdown) => return Ok(()),
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    };
    let election = std::sync::Arc::new(election::Election::new(
        client.clone(),
        &ha.prefix,
        ha.lease_ttl,
    ));
    // Standby: redirect to whoever leads while we campaign.
    let (leader_tx, leader_rx) = watch::channel::<Option<String>>(None);
    let watcher = {
        let election = election.clone();
        tokio::spawn(async move {
            loop {
                let current = election.leader().await;
                if *leader_tx.borrow() != current {
                    let _ = leader_tx.send(current);
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };
    let (standby_stop_tx, mut standby_stop) = watch::channel(false);
    let standby = tokio::spawn(server::serve(
        listener,
        edge.tls.clone(),
        edge.limits,
        server::standby_router(leader_rx, edge.tls.is_some()),
        async move {
            let _ = standby_stop.wait_for(|v| *v).await;
        },
    ));
    tracing::info!(%addr, advertise = %ha.advertise, "standby master: campaigning for leadership");
    let leadership = tokio::select! {
        l = election.campaign(&ha.advertise) => l,
        _ = until_true(&mut shutdown) => {
            watcher.abort();
            let _ = standby_stop_tx.send(true);
            let _ = standby.await;
            return Ok(());
        }
    };
    watcher.abort();
    let _ = standby_stop_tx.send(true);
    let _ = standby.await;
    let leadership = leadership?;
    if *leadership.lost.borrow() {
        return Err(MasterError::LostLeadership);
    }
    tracing::info!(advertise = %ha.advertise, "elected leader");
    let registry =
        registry::etcd::EtcdRegistry::new(client, &ha.prefix, Some(leadership.fence.clone()))?;
    let listener = bind(addr).await?;
    let lost = leadership.lost.clone();
    let (masters_tx, masters_rx) = watch::channel(vec![ha.advertise.clone()]);
    let candidates = tokio::spawn(async move {
        loop {
            if let Some(list) = election.candidates().await {
                let _ = masters_tx.send(list);
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let r = lead(
        config,
        edge,
        listener,
        Box::new(registry),
        shutdown,
        Role {
            lost: Some(lost),
            address: ha.advertise.clone(),
            masters: masters_rx,
            leading,
        },
    )
    .await;
    candidates.abort();
    drop(leadership);
    r
}
