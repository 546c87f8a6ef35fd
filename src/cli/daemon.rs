//! `brim master` and `brim agent`: the long-running daemons.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use brim_proto::Resources;

use super::security::SecurityArgs;

/// Parses `1s`, `500ms`, `2m`, `1.5` (seconds).
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like 1s, 500ms or 2m"))?;
    let secs = match unit {
        "ms" => v / 1000.0,
        "s" => v,
        "m" => v * 60.0,
        "h" => v * 3600.0,
        _ => {
            return Err(format!(
                "`{s}` has unknown unit `{unit}`: use ms, s, m or h"
            ))
        }
    };
    if !(0.0..=1e9).contains(&secs) {
        return Err(format!("`{s}` is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_resources(s: &str) -> Result<Resources, String> {
    Resources::parse(s).map_err(|e| e.to_string())
}

/// Agent attributes, `rack:r1;zone:z2` on the command line.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Attributes(pub(crate) Vec<(String, String)>);

/// Parses `rack:r1;zone:z2`.
pub(crate) fn parse_attributes(s: &str) -> Result<Attributes, String> {
    s.split(';')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.split_once(':')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| format!("attribute `{p}` must look like name:value"))
        })
        .collect::<Result<_, _>>()
        .map(Attributes)
}

/// Default work dir: `$HOME/.brim/<what>`, or `/var/lib/brim/<what>` without a home.
pub(crate) fn default_work_dir(what: &str) -> PathBuf {
    match std::env::var_os("HOME") {
        Some(h) if !h.is_empty() => PathBuf::from(h).join(".brim").join(what),
        _ => PathBuf::from("/var/lib/brim").join(what),
    }
}

#[derive(clap::Args, Clone)]
pub(crate) struct MasterTuning {
    /// Maximum time between full allocation cycles.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub(crate) allocation_interval: Duration,
    /// Offers not used within this time are rescinded.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub(crate) offer_timeout: Duration,
    /// Interval agents heartbeat at.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub(crate) agent_heartbeat_interval: Duration,
    /// Missed heartbeats before an agent is marked unreachable (its tasks LOST/UNREACHABLE).
    #[arg(long, default_value_t = 5)]
    pub(crate) max_missed_heartbeats: u32,
    /// Heartbeat interval of framework event streams.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub(crate) framework_heartbeat_interval: Duration,
    /// Failover timeout for frameworks that declare none.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub(crate) default_failover_timeout: Duration,
}

impl MasterTuning {
    pub(crate) fn config(
        &self,
        listen: SocketAddr,
        work_dir: PathBuf,
    ) -> brim_master::MasterConfig {
        let mut c = brim_master::MasterConfig::new(listen, work_dir);
        c.allocation_interval = self.allocation_interval;
        c.state.offer_timeout = self.offer_timeout;
        c.state.agent_heartbeat_interval = self.agent_heartbeat_interval;
        c.state.max_missed_heartbeats = self.max_missed_heartbeats.max(1);
        c.state.framework_heartbeat_interval = self.framework_heartbeat_interval;
        c.state.default_failover_timeout = self.default_failover_timeout;
        c
    }
}

/// Authentication and authorization files of a master.
#[derive(clap::Args, Clone)]
pub(crate) struct PolicyArgs {
    /// Bearer tokens (TOML `[[credential]] principal = ".." token = ".."`): every call then
    /// needs a token or a client certificate. Re-read when it changes.
    #[arg(long, value_name = "FILE")]
    pub(crate) credentials: Option<PathBuf>,
    /// Per-principal permissions (TOML `[[principal]]`, docs/SECURITY.md): anything not
    /// granted is denied. Re-read when it changes.
    #[arg(long, value_name = "FILE")]
    pub(crate) acls: Option<PathBuf>,
    /// A client must send a request's headers within this time (of connecting, or of the
    /// previous answer on a kept-alive connection), else the connection is closed.
    #[arg(long, default_value = "30s", value_parser = parse_bound)]
    pub(crate) header_read_timeout: Duration,
    /// An HTTP request, body included, must be answered within this time, else 408
    /// (streamed answers, e.g. Mesos subscriptions, are not cut once they start).
    #[arg(long, default_value = "60s", value_parser = parse_bound)]
    pub(crate) request_timeout: Duration,
    /// Longest a gRPC call may take to be answered (a stream: to open); a shorter
    /// `grpc-timeout` sent by the client wins. Past it: DEADLINE_EXCEEDED.
    #[arg(long, default_value = "60s", value_parser = parse_bound)]
    pub(crate) grpc_timeout: Duration,
    /// HTTP/2 keepalive: ping peers this often and drop one that does not answer within
    /// the same time, so dead agents and frameworks are noticed without traffic.
    #[arg(long, default_value = "20s", value_parser = parse_bound)]
    pub(crate) keepalive: Duration,
    /// Framework subscriptions allowed per second, per peer IP and per principal, after a
    /// burst of `--subscribe-burst`; more get 429 / RESOURCE_EXHAUSTED with a retry hint.
    /// 0 turns the limit off.
    #[arg(long, default_value_t = 10.0, value_name = "PER_SECOND", value_parser = parse_rate)]
    pub(crate) subscribe_rate: f64,
    #[arg(long, default_value_t = 50, value_name = "N")]
    pub(crate) subscribe_burst: u32,
    /// Agent registrations allowed per second, per peer IP and per principal, after a burst
    /// of `--register-burst` (raise both for thousands of agents sharing one certificate
    /// or address). 0 turns the limit off.
    #[arg(long, default_value_t = 20.0, value_name = "PER_SECOND", value_parser = parse_rate)]
    pub(crate) register_rate: f64,
    #[arg(long, default_value_t = 200, value_name = "N")]
    pub(crate) register_burst: u32,
    /// Framework subscription streams (gRPC and Mesos HTTP) open at once; 0: no cap.
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    pub(crate) max_subscriptions: usize,
}

/// Attempts per second: a non-negative number (0: no limit).
fn parse_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!(
            "`{s}` is not a rate: give attempts per second, e.g. 10 or 0.5 (0 turns the limit off)"
        )),
    }
}

/// A positive duration (a zero bound would refuse everything).
fn parse_bound(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_millis(10) {
        return Err(format!("`{s}` is too short: give at least 10ms"));
    }
    Ok(d)
}

impl PolicyArgs {
    pub(crate) fn security(
        &self,
        tls: Option<brim_security::TlsFiles>,
    ) -> brim_master::MasterSecurity {
        brim_master::MasterSecurity {
            tls,
            credentials: self.credentials.clone(),
            acls: self.acls.clone(),
            limits: brim_security::ServeLimits {
                header_read: self.header_read_timeout,
                request: self.request_timeout,
                grpc: self.grpc_timeout,
                keepalive_interval: self.keepalive,
                keepalive_timeout: self.keepalive,
            },
            rate_limits: brim_master::ratelimit::RateLimits {
                subscribe: brim_master::ratelimit::Rate::new(
                    self.subscribe_rate,
                    self.subscribe_burst,
                ),
                register: brim_master::ratelimit::Rate::new(
                    self.register_rate,
                    self.register_burst,
                ),
                max_subscriptions: (self.max_subscriptions > 0).then_some(self.max_subscriptions),
            },
        }
    }
}

#[derive(clap::Args)]
pub(crate) struct MasterArgs {
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    pub(crate) ip: IpAddr,
    /// Port for gRPC and HTTP (Mesos' default 5050).
    #[arg(long, default_value_t = 5050)]
    pub(crate) port: u16,
    /// Registry and other durable state (default ~/.brim/master).
    #[arg(long)]
    pub(crate) work_dir: Option<PathBuf>,
    /// HA mode: etcd endpoints (comma-separated), e.g. `http://127.0.0.1:2379`. The registry
    /// lives in etcd and masters elect a leader; standbys redirect to it.
    #[arg(long, value_delimiter = ',')]
    pub(crate) etcd: Vec<String>,
    /// Address other masters, agents and frameworks reach this master at (HA mode; default
    /// the listen address, or the host name when listening on 0.0.0.0). Also what `--zk`
    /// publishes.
    #[arg(long)]
    pub(crate) advertise: Option<String>,
    /// Leader lease TTL in HA mode: a dead leader is replaced after about this long.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub(crate) lease_ttl: Duration,
    /// Key prefix of this cluster in etcd.
    #[arg(long, default_value = "/brim")]
    pub(crate) etcd_prefix: String,
    /// Publish the leading master to ZooKeeper for Mesos clients that detect their master
    /// with `zk://` (an ephemeral `json.info_<seq>` znode with its MasterInfo JSON under
    /// the path, as Mesos masters write), e.g. `zk://127.0.0.1:2181/mesos`.
    #[arg(long, value_name = "zk://HOST:PORT[,…]/PATH", value_parser = parse_zk)]
    pub(crate) zk: Option<brim_master::zk::ZkUrl>,
    /// Talk to etcd over TLS (`https://` endpoints), verifying its certificate with this CA.
    #[arg(long, value_name = "FILE")]
    pub(crate) etcd_ca: Option<PathBuf>,
    /// Client certificate (and `--etcd-key`) to present to an etcd started with
    /// `--client-cert-auth`.
    #[arg(long, value_name = "FILE", requires = "etcd_key")]
    pub(crate) etcd_cert: Option<PathBuf>,
    #[arg(long, value_name = "FILE", requires = "etcd_cert")]
    pub(crate) etcd_key: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) tuning: MasterTuning,
    #[command(flatten)]
    pub(crate) policy: PolicyArgs,
}

#[derive(clap::Args, Clone)]
pub(crate) struct AgentTuning {
    /// Override auto-detected resources, e.g. `cpus:4;mem:8192;ports:[31000-32000]`.
    #[arg(long, value_parser = parse_resources)]
    pub(crate) resources: Option<Resources>,
    /// Attributes offered with this agent's resources, e.g. `rack:r1;zone:z2`.
    #[arg(long, value_parser = parse_attributes, default_value = "")]
    pub(crate) attributes: Attributes,
    /// Name of the agent's root cgroup (tasks live under it).
    #[arg(long, default_value = "brim")]
    pub(crate) cgroup_name: String,
    /// Host name to advertise to the master and frameworks.
    #[arg(long)]
    pub(crate) hostname: Option<String>,
    /// Let tasks run as root when their command or framework asks for `root` (off: such
    /// tasks fail with TASK_FAILED). `brim dev` always allows it.
    #[arg(long)]
    pub(crate) allow_root_tasks: bool,
    /// User for tasks whose command and framework name no user.
    #[arg(long, default_value = "nobody")]
    pub(crate) task_user: String,
    /// Bridge that `--network bridge` tasks are attached to (created on first use).
    #[arg(long, default_value = "brim0")]
    pub(crate) bridge: String,
    /// The bridge's own address and prefix; bridged tasks get the others of that subnet.
    #[arg(long, default_value = "10.213.0.1/16", value_parser = parse_bridge_cidr)]
    pub(crate) bridge_cidr: String,
    /// Size of the fetcher's cache of task URIs, shared by every task (MiB).
    #[arg(long, value_name = "MB", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=16_777_216))]
    pub(crate) fetcher_cache_mb: u64,
    /// Largest file a task may fetch (MiB); a bigger one fails its launch.
    #[arg(long, value_name = "MB", default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..=16_777_216))]
    pub(crate) fetcher_max_download_mb: u64,
    /// OCI runtime for tasks with an image: `crun`, `runc`, or a path to either.
    #[arg(long, value_name = "RUNTIME", default_value = "crun")]
    pub(crate) oci_runtime: String,
    /// Size bound of the unpacked image layer cache (MiB); layers in use are kept.
    #[arg(long, value_name = "MB", default_value_t = 2048, value_parser = clap::value_parser!(u64).range(1..=16_777_216))]
    pub(crate) image_cache_mb: u64,
    /// Host directories tasks may mount as volumes (`container.volumes[].host_path`),
    /// comma-separated; each is resolved (symlinks followed) at start-up. Default: none.
    #[arg(long, value_name = "DIR,...", value_delimiter = ',')]
    pub(crate) allowed_host_paths: Vec<std::path::PathBuf>,
    /// Shell command run (as the agent's user, in the task's sandbox, with BRIM_TASK_ID,
    /// BRIM_CONTAINER_ID, BRIM_SANDBOX, BRIM_ROOTFS… set) before every task starts; a
    /// failure or timeout fails the launch.
    #[arg(long, value_name = "CMD")]
    pub(crate) hook_pre_launch: Option<String>,
    /// Shell command run after every task stopped, before its container is removed; a
    /// failure is logged.
    #[arg(long, value_name = "CMD")]
    pub(crate) hook_post_stop: Option<String>,
    /// How long a hook may run before it is killed (seconds).
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    pub(crate) hook_timeout: f64,
    /// Do not load the eBPF programs: usage from cgroupfs polling only, no network counters,
    /// run-queue wait, egress limits or bind enforcement.
    #[arg(long)]
    pub(crate) no_ebpf: bool,
    #[command(flatten)]
    pub(crate) oversubscription: OversubscriptionArgs,
    /// A device every task may open beyond the built-in ones (null, zero, random, tty, ...),
    /// enforced with eBPF: `c|b|a MAJOR:MINOR [rwm]` (`*`: any) or a device path, e.g.
    /// `--device-allow 'c 195:* rwm'`. Repeatable; tasks add their own with the `devices` label.
    #[arg(long = "device-allow", value_parser = brim_agent::ebpf::DeviceRule::parse)]
    pub(crate) device_allow: Vec<brim_agent::ebpf::DeviceRule>,
    /// After a restart, how long a custom executor that was running has to re-subscribe
    /// before it is killed and its tasks fail (REASON_EXECUTOR_REREGISTRATION_TIMEOUT).
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub(crate) executor_reregistration_timeout: Duration,
    /// Period of HEARTBEAT events on the executor API's event streams.
    #[arg(long, default_value = "15s", value_parser = parse_positive_duration)]
    pub(crate) executor_heartbeat_interval: Duration,
}

fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err(format!("`{s}` must be more than zero")),
        d => Ok(d),
    }
}

/// Oversubscription knobs (`brim agent --oversubscribe`).
#[derive(clap::Args, Clone)]
pub(crate) struct OversubscriptionArgs {
    /// Lend allocated-but-unused cpus and mem as revocable resources: estimate slack from
    /// measured usage, run revocable tasks in a low-priority cgroup subtree, and evict them
    /// (youngest first) when the owners' run-queue wait or memory pressure says so.
    #[arg(long)]
    pub(crate) oversubscribe: bool,
    /// Usage history the slack estimate looks at.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub(crate) slack_window: Duration,
    /// Percentile of the owners' usage over the window that the estimate assumes, in (0, 1].
    #[arg(long, default_value_t = 0.95)]
    pub(crate) slack_percentile: f64,
    /// Safety margin multiplied onto that usage (>= 1).
    #[arg(long, default_value_t = 1.2)]
    pub(crate) slack_margin: f64,
    /// Also lend resources no task has been allocated (off: only allocated-but-unused).
    #[arg(long)]
    pub(crate) slack_include_unallocated: bool,
    /// Owners' run-queue wait ratio (wait / (wait + on-cpu)) above which revocable tasks are
    /// evicted.
    #[arg(long, default_value_t = 0.25)]
    pub(crate) qos_runq_wait_ratio: f64,
    /// Owners' absolute run-queue wait (ms per s) below which contention is ignored.
    #[arg(long, default_value_t = 100.0)]
    pub(crate) qos_runq_wait_min_ms: f64,
    /// Host MemAvailable (MiB) below which revocable tasks are evicted.
    #[arg(long, default_value_t = 256.0)]
    pub(crate) qos_mem_available_min: f64,
    /// PSI memory `some avg10` (%) above which revocable tasks are evicted (when PSI is on).
    #[arg(long, default_value_t = 10.0)]
    pub(crate) qos_mem_psi_max: f64,
}

impl OversubscriptionArgs {
    pub(crate) fn config(
        &self,
    ) -> Result<brim_agent::oversubscription::OversubscriptionConfig, String> {
        let slack = brim_agent::slack::SlackConfig {
            window: self.slack_window,
            percentile: self.slack_percentile,
            margin: self.slack_margin,
            include_unallocated: self.slack_include_unallocated,
            ..Default::default()
        };
        slack.validate().map_err(|e| e.to_string())?;
        let qos = brim_agent::qos::QosConfig {
            runq_wait_ratio: self.qos_runq_wait_ratio,
            runq_wait_min_ms_per_s: self.qos_runq_wait_min_ms,
            mem_available_min_mb: self.qos_mem_available_min,
            mem_psi_some_avg10_max: Some(self.qos_mem_psi_max),
            ..Default::default()
        };
        qos.validate().map_err(|e| e.to_string())?;
        Ok(brim_agent::oversubscription::OversubscriptionConfig {
            enabled: self.oversubscribe,
            slack,
            qos,
        })
    }
}

#[derive(clap::Args)]
pub(crate) struct AgentArgs {
    /// Master address host:port.
    #[arg(long, env = "BRIM_MASTER", default_value = super::DEFAULT_MASTER)]
    pub(crate) master: String,
    /// Address to listen on for the agent's HTTP API.
    #[arg(long, default_value = "0.0.0.0")]
    pub(crate) ip: IpAddr,
    /// HTTP port (Mesos' default 5051).
    #[arg(long, default_value_t = 5051)]
    pub(crate) port: u16,
    /// Sandboxes and checkpoints (default ~/.brim/agent).
    #[arg(long)]
    pub(crate) work_dir: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) tuning: AgentTuning,
}

impl AgentTuning {
    pub(crate) fn config(
        &self,
        master: String,
        work_dir: PathBuf,
        http: SocketAddr,
    ) -> anyhow::Result<brim_agent::AgentConfig> {
        let mut c = brim_agent::AgentConfig::new(master, work_dir);
        c.oversubscription = self
            .oversubscription
            .config()
            .map_err(|e| anyhow::anyhow!("invalid oversubscription flags: {e}"))?;
        c.http_addr = http;
        c.resources = self.resources.clone();
        c.attributes = self.attributes.0.clone();
        c.cgroup_name = self.cgroup_name.clone();
        c.allow_root_tasks = self.allow_root_tasks;
        c.default_task_user = self.task_user.clone();
        c.bridge_name = self.bridge.clone();
        c.bridge_cidr = self.bridge_cidr.clone();
        c.fetcher_cache_bytes = self.fetcher_cache_mb << 20;
        c.fetcher_max_bytes = self.fetcher_max_download_mb << 20;
        c.oci_runtime = self.oci_runtime.clone();
        c.image_cache_bytes = self.image_cache_mb << 20;
        c.allowed_host_paths = self
            .allowed_host_paths
            .iter()
            .filter(|p| !p.as_os_str().is_empty())
            .map(|p| {
                if !p.is_absolute() {
                    anyhow::bail!("--allowed-host-paths: `{}` is not absolute", p.display());
                }
                p.canonicalize().map_err(|e| {
                    anyhow::anyhow!(
                        "--allowed-host-paths: cannot resolve `{}`: {e} (create it or drop it)",
                        p.display()
                    )
                })
            })
            .collect::<anyhow::Result<_>>()?;
        if !(self.hook_timeout.is_finite()
            && self.hook_timeout > 0.0
            && self.hook_timeout <= 86_400.0)
        {
            anyhow::bail!(
                "--hook-timeout must be a number of seconds in (0, 86400], got {}",
                self.hook_timeout
            );
        }
        c.hooks = brim_agent::HookConfig {
            pre_launch: self.hook_pre_launch.clone(),
            post_stop: self.hook_post_stop.clone(),
            timeout: std::time::Duration::from_secs_f64(self.hook_timeout),
        };
        if self.no_ebpf {
            c.ebpf = brim_agent::EbpfMode::Off;
        }
        c.device_allow = self.device_allow.clone();
        c.executor_reregistration_timeout = self.executor_reregistration_timeout;
        c.executor_heartbeat_interval = self.executor_heartbeat_interval;
        if self.hostname.is_some() {
            c.advertise_host = self.hostname.clone();
        }
        Ok(c)
    }
}

fn parse_bridge_cidr(s: &str) -> Result<String, String> {
    brim_agent::network::validate_cidr(s).map(|()| s.to_string())
}

/// The TLS settings towards etcd from `--etcd-ca/--etcd-cert/--etcd-key`.
fn etcd_tls(
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
) -> anyhow::Result<Option<brim_security::ClientTls>> {
    let identity = cert.zip(key);
    match ca {
        Some(ca) => Ok(Some(brim_security::ClientTls { ca, identity })),
        None if identity.is_some() => anyhow::bail!(
            "--etcd-cert/--etcd-key need --etcd-ca (the CA that signed etcd's certificate)"
        ),
        None => Ok(None),
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

pub(crate) async fn master(a: MasterArgs, security: &SecurityArgs) -> anyhow::Result<()> {
    let tls = security.node("master")?;
    let work_dir = a.work_dir.unwrap_or_else(|| default_work_dir("master"));
    let mut config = a.tuning.config(SocketAddr::new(a.ip, a.port), work_dir);
    config.security = a.policy.security(tls.clone());
    let loopback_security = super::security::loopback_client(tls.as_ref());
    let advertise = a.advertise.unwrap_or_else(|| {
        if a.ip.is_unspecified() {
            let host = std::fs::read_to_string("/etc/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "127.0.0.1".into());
            format!("{host}:{}", a.port)
        } else {
            SocketAddr::new(a.ip, a.port).to_string()
        }
    });
    config.zk = a.zk.map(|url| brim_master::ZkConfig {
        url,
        advertise: advertise.clone(),
    });
    if !a.etcd.is_empty() {
        config.ha = Some(brim_master::HaConfig {
            etcd: a.etcd,
            advertise,
            lease_ttl: a.lease_ttl,
            prefix: a.etcd_prefix,
            etcd_tls: etcd_tls(a.etcd_ca, a.etcd_cert, a.etcd_key)?,
        });
    }
    let hosted = host_frameworks(&mut config)?;
    let mut running = brim_master::start(config).await?;
    // Only the leader hosts the built-in frameworks: a standby's copies would register with
    // the leader as extra frameworks. In HA mode this waits for the election.
    let addr = running.addr();
    let mut leading = running.leading();
    let frameworks = tokio::select! {
        _ = leading.wait_for(|l| *l) => hosted.start(&loopback(addr), loopback_security),
        r = running.wait() => return r.context("master stopped"),
        _ = shutdown_signal() => {
            tracing::info!("shutting down");
            running.stop().await?;
            return Ok(());
        }
    };
    tokio::select! {
        r = running.wait() => {
            frameworks.stop().await;
            r.context("master stopped")?
        }
        _ = shutdown_signal() => {
            tracing::info!("shutting down");
            frameworks.stop().await;
            running.stop().await?;
        }
    }
    Ok(())
}

/// Opens the built-in frameworks' state (`<work dir>/frameworks/`) and serves their HTTP API
/// (`/api/services`, `/api/cron`) on the master's port. Start them with `Hosted::start` once
/// the master listens; they connect to it over loopback like any framework (docs/FRAMEWORKS.md).
pub(crate) fn host_frameworks(
    config: &mut brim_master::MasterConfig,
) -> anyhow::Result<brim_frameworks::host::Hosted> {
    let hosted = brim_frameworks::host::Hosted::open(&config.work_dir.join("frameworks"))?;
    config.extra_routes = Some(hosted.router());
    Ok(hosted)
}

/// `host:port` to reach a master bound at `addr` from this machine.
pub(crate) fn loopback(addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), addr.port()).to_string()
    } else {
        addr.to_string()
    }
}

pub(crate) async fn agent(a: AgentArgs, security: &SecurityArgs) -> anyhow::Result<()> {
    let tls = security.node("agent")?;
    let work_dir = a.work_dir.unwrap_or_else(|| default_work_dir("agent"));
    let mut config = a
        .tuning
        .config(a.master, work_dir, SocketAddr::new(a.ip, a.port))?;
    config.tls = tls;
    brim_agent::run(config, shutdown_signal())
        .await
        .context("agent failed")?;
    Ok(())
}

fn parse_zk(s: &str) -> Result<brim_master::zk::ZkUrl, String> {
    s.parse()
        .map_err(|e: brim_master::zk::ZkError| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        for (s, ms) in [("1s", 1000), ("500ms", 500), ("2m", 120_000), ("1.5", 1500)] {
            assert_eq!(parse_duration(s), Ok(Duration::from_millis(ms)), "{s}");
        }
        for bad in ["", "x", "1y", "-1s", "nan"] {
            assert!(parse_duration(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn attributes() {
        assert_eq!(
            parse_attributes("rack:r1; zone:z2"),
            Ok(Attributes(vec![
                ("rack".into(), "r1".into()),
                ("zone".into(), "z2".into())
            ]))
        );
        assert!(parse_attributes("rack").is_err());
        assert_eq!(parse_attributes(""), Ok(Attributes::default()));
    }
}
