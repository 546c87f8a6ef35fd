//! Agent configuration (what `brim agent` / `brim dev` fill in from flags).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use brim_proto::Resources;

/// Default agent HTTP port, as in Mesos.
pub const DEFAULT_HTTP_PORT: u16 = 5051;

/// How tasks are isolated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Isolation {
    /// Cgroups when the agent can manage them (root, cgroupfs mounted); otherwise run tasks
    /// without resource limits and say so loudly in the log and in `/state`.
    #[default]
    Auto,
    /// Cgroups or refuse to start.
    Cgroups,
    /// No cgroups (plain processes in their own session): development only.
    None,
}

/// Whether the agent uses eBPF for telemetry and enforcement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum EbpfMode {
    /// Load the programs; when they cannot load (no BTF, no permission, old kernel), fall back
    /// to cgroupfs polling and say so loudly (log, `/state`, `brim_agent_ebpf_enabled 0`).
    #[default]
    Auto,
    /// cgroupfs polling only.
    Off,
}

#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// `host:port` of the master (gRPC over plaintext HTTP/2); `http://` prefix optional.
    pub master: String,
    /// Sandboxes (`sandboxes/<framework>/<task>/`) and the checkpointed agent id live here.
    pub work_dir: PathBuf,
    /// HTTP listen address; port 0 picks a free port (see `AgentHandle::http_addr`).
    pub http_addr: SocketAddr,
    /// Host put in `AgentInfo.http_address`; default: 127.0.0.1 when bound to loopback,
    /// the bound IP when bound to one, else the hostname if it resolves, else 127.0.0.1.
    pub advertise_host: Option<String>,
    /// Overrides (per resource name) of the auto-detected resources.
    pub resources: Option<Resources>,
    pub attributes: Vec<(String, String)>,
    /// Agent root cgroup name; tasks get `<root>/<container-id>`.
    pub cgroup_name: String,
    pub isolation: Isolation,
    /// Also cap tasks' CPU time at their `cpus` (CFS quota), not only weight it.
    pub cpu_hard_limit: bool,
    /// Heartbeat period until the master dictates one in `registered`.
    pub heartbeat_interval: Duration,
    /// SIGTERM → SIGKILL delay when neither the task nor the kill request sets one.
    pub default_kill_grace: Duration,
    /// How often container usage is sampled and sent to the master.
    pub usage_interval: Duration,
    /// How often an unacknowledged status update is resent.
    pub status_update_retry: Duration,
    /// How long a custom executor that was running when the agent went down has to
    /// re-subscribe after the agent restarts before it is killed and its tasks fail
    /// (`--executor-reregistration-timeout`; Mesos: `--executor_reregistration_timeout`).
    pub executor_reregistration_timeout: Duration,
    /// Period of HEARTBEAT events on executor event streams (`--executor-heartbeat-interval`).
    pub executor_heartbeat_interval: Duration,
    /// Longest wait between reconnection attempts to the master.
    pub max_reconnect_backoff: Duration,
    /// How many finished tasks `/state` remembers.
    pub max_completed_tasks: usize,
    /// eBPF telemetry and enforcement (see [`EbpfMode`]).
    pub ebpf: EbpfMode,
    /// eBPF map sizes: tasks the agent can track at once (more run, untracked, with a warning).
    pub ebpf_max_tasks: u32,
    /// Devices every task may open beyond the built-in list (enforced with eBPF); tasks add
    /// their own with the `devices` label.
    pub device_allow: Vec<crate::ebpf::DeviceRule>,
    /// Let tasks run as root (a task or framework asking for `root`). Off by default: such
    /// tasks fail with a message saying how to allow it. `brim dev` turns it on.
    pub allow_root_tasks: bool,
    /// User for tasks whose command and framework name none (only used when the agent runs
    /// as root and can switch users).
    pub default_task_user: String,
    /// Private PID, mount, UTS and IPC namespaces per task (when the agent runs as root and
    /// isolation is not `None`).
    pub namespaces: bool,
    /// `pids.max` of each task's cgroup (fork bombs stop there).
    pub task_pids_max: u64,
    /// Bridge of `--network bridge` tasks (created on first use) and its own address and
    /// prefix; tasks get the other addresses of that subnet.
    pub bridge_name: String,
    pub bridge_cidr: String,
    /// Total size of the fetcher's cache shared by every task (least recently used files
    /// are evicted past it).
    pub fetcher_cache_bytes: u64,
    /// Largest single file a task may fetch (a bigger one fails the launch).
    pub fetcher_max_bytes: u64,
    /// OCI runtime for image tasks: `crun` (default), `runc`, or a path (`--oci-runtime`).
    pub oci_runtime: String,
    /// Bound on the unpacked image layer cache (`--image-cache-mb`).
    pub image_cache_bytes: u64,
    /// Assemble container root filesystems with overlayfs (else by copying layers).
    pub image_overlay: bool,
    /// Host directories tasks may mount (`--allowed-host-paths`), canonical; empty = none.
    pub allowed_host_paths: Vec<PathBuf>,
    /// Operator hooks around every task (`--hook-pre-launch`, `--hook-post-stop`,
    /// `--hook-timeout`).
    pub hooks: crate::containerizer::hooks::HookConfig,
    /// Oversubscription (`--oversubscribe`): slack estimation, revocable tasks, QoS evictions.
    pub oversubscription: crate::oversubscription::OversubscriptionConfig,
    /// TLS for the HTTP API and the master link: this certificate is served and presented
    /// to the master (which admits only agents certified by the cluster CA), and the CA
    /// verifies the master and HTTP clients. `None`: plaintext (`--insecure`).
    pub tls: Option<brim_security::TlsFiles>,
}

impl AgentConfig {
    /// Defaults for everything but the master address and the work dir.
    pub fn new(master: impl Into<String>, work_dir: PathBuf) -> Self {
        AgentConfig {
            master: master.into(),
            work_dir,
            http_addr: SocketAddr::from((Ipv4Addr::UNSPECIFIED, DEFAULT_HTTP_PORT)),
            advertise_host: None,
            resources: None,
            attributes: Vec::new(),
            cgroup_name: "brim".to_string(),
            isolation: Isolation::Auto,
            cpu_hard_limit: false,
            heartbeat_interval: Duration::from_secs(15),
            default_kill_grace: Duration::from_secs(3),
            usage_interval: Duration::from_secs(1),
            status_update_retry: Duration::from_secs(3),
            // Mesos defaults to 2s (at most 15s), but pymesos's executor driver retries with
            // a backoff that grows to 15s: 20s lets it come back after any agent downtime.
            executor_reregistration_timeout: Duration::from_secs(20),
            // Mesos: 30 minutes; brim keeps idle streams alive through proxies that drop
            // connections silent for a minute, like the master's framework heartbeats.
            executor_heartbeat_interval: Duration::from_secs(15),
            max_reconnect_backoff: Duration::from_secs(10),
            max_completed_tasks: 200,
            ebpf: EbpfMode::Auto,
            ebpf_max_tasks: 4096,
            device_allow: Vec::new(),
            allow_root_tasks: false,
            default_task_user: "nobody".to_string(),
            namespaces: true,
            task_pids_max: 4096,
            bridge_name: "brim0".to_string(),
            bridge_cidr: "10.213.0.1/16".to_string(),
            fetcher_cache_bytes: 1 << 30,
            fetcher_max_bytes: 512 << 20,
            oci_runtime: "crun".to_string(),
            image_cache_bytes: 2 << 30,
            image_overlay: true,
            allowed_host_paths: Vec::new(),
            hooks: crate::containerizer::hooks::HookConfig {
                pre_launch: None,
                post_stop: None,
                timeout: Duration::from_secs(30),
            },
            oversubscription: Default::default(),
            tls: None,
        }
    }
}

/// One master address (`host:port`, or a URI) as a URI tonic can dial.
pub(crate) fn master_uri(master: &str, tls: bool) -> String {
    if master.contains("://") {
        master.to_string()
    } else if tls {
        format!("https://{master}")
    } else {
        format!("http://{master}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let c = AgentConfig::new("127.0.0.1:5050", PathBuf::from("/tmp/w"));
        assert_eq!(c.http_addr.port(), 5051);
        assert_eq!(c.default_kill_grace, Duration::from_secs(3));
        assert_eq!(c.cgroup_name, "brim");
        assert_eq!(master_uri(&c.master, false), "http://127.0.0.1:5050");
        assert_eq!(master_uri(&c.master, true), "https://127.0.0.1:5050");
        let c = AgentConfig::new("http://m:1", PathBuf::from("/tmp/w"));
        assert_eq!(master_uri(&c.master, true), "http://m:1");
    }
}
