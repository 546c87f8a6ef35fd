//! Per-task usage: every `usage_interval` the sampler reads each running task's counters and
//! appends a [`Sample`] to the task's bounded ring. With eBPF, CPU time, OOM kills, run-queue
//! wait, network and denied binds come from the maps (read for all tasks under one lock) and
//! only what eBPF does not give is read from cgroupfs (throttling, memory sizes: on hybrid
//! hosts 3 files instead of 5 per task); without eBPF everything comes from cgroupfs.
//! The master link sends the newest sample of each task; `/state` shows the ring and
//! `/metrics` the newest sample.
//!
//! Without eBPF (no BTF, no permission, or `EbpfMode::Off`) only the cgroupfs counters are
//! sampled; the agent logs a loud warning and exports `brim_agent_ebpf_enabled 0`.

pub(crate) mod policy;

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use brim_proto::v1::{ContainerUsage, TaskInfo};
use brim_proto::Resources;
use serde::Serialize;

use crate::agent::Agent;
use crate::cgroups::CgroupBackend;
use crate::config::{AgentConfig, EbpfMode};
use crate::ebpf::{self, EbpfConfig, EbpfUsage, Probes, ProgStats};

/// (framework id, task id).
pub(crate) type TaskKey = (String, String);

/// Samples kept per task (at the default 1 s interval: the last minute).
pub(crate) const RING_LEN: usize = 60;

/// Cumulative counters of one task at one time.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(crate) struct Sample {
    /// Seconds since the Unix epoch.
    pub(crate) timestamp: f64,
    /// Where `cpu_ns` and `oom_events` come from: `ebpf` (the maps) or `cgroupfs`.
    pub(crate) cpu_source: &'static str,
    pub(crate) cpu_ns: u64,
    pub(crate) cpu_throttled_ns: u64,
    pub(crate) mem_current_bytes: u64,
    pub(crate) mem_rss_bytes: u64,
    pub(crate) mem_cache_bytes: u64,
    pub(crate) oom_events: u64,
    /// The rest needs eBPF (zero without it).
    pub(crate) oncpu_ebpf_ns: u64,
    pub(crate) runq_wait_ns: u64,
    pub(crate) runq_waits: u64,
    pub(crate) runq_hist: Vec<u64>,
    pub(crate) net_rx_bytes: u64,
    pub(crate) net_rx_packets: u64,
    pub(crate) net_tx_bytes: u64,
    pub(crate) net_tx_packets: u64,
    pub(crate) net_tx_dropped_packets: u64,
    pub(crate) mem_reclaim_events: u64,
    pub(crate) bind_denied: u64,
    pub(crate) dev_denied: u64,
}

impl Sample {
    fn from_parts(
        timestamp: f64,
        cg: Option<crate::cgroups::CgroupUsage>,
        e: Option<EbpfUsage>,
    ) -> Sample {
        let cg = cg.unwrap_or_default();
        let (cpu_source, cpu_ns) = match &e {
            // The same kernel counter cpuacct charges (se.sum_exec_runtime).
            Some(e) => ("ebpf", e.oncpu_ns),
            None => ("cgroupfs", cg.cpu_ns),
        };
        let e = e.unwrap_or_default();
        Sample {
            timestamp,
            cpu_source,
            cpu_ns,
            cpu_throttled_ns: cg.cpu_throttled_ns,
            mem_current_bytes: cg.mem_current_bytes,
            mem_rss_bytes: cg.mem_rss_bytes,
            mem_cache_bytes: cg.mem_cache_bytes,
            // eBPF counts OOM victims (mark_victim); cgroupfs (polling path) every kill.
            oom_events: cg.oom_events.max(e.oom_kills),
            oncpu_ebpf_ns: e.oncpu_ns,
            runq_wait_ns: e.runq_wait_ns,
            runq_waits: e.runq_waits,
            runq_hist: e.runq_hist,
            net_rx_bytes: e.net_rx_bytes,
            net_rx_packets: e.net_rx_packets,
            net_tx_bytes: e.net_tx_bytes,
            net_tx_packets: e.net_tx_packets,
            net_tx_dropped_packets: e.net_tx_dropped_packets,
            mem_reclaim_events: e.reclaim_events,
            bind_denied: e.bind_denied,
            dev_denied: e.dev_denied,
        }
    }

    /// The proto form sent to the master (cumulative counters).
    pub(crate) fn to_proto(&self, key: &TaskKey) -> ContainerUsage {
        ContainerUsage {
            framework_id: key.0.clone(),
            task_id: key.1.clone(),
            cpu_ns: self.cpu_ns,
            cpu_throttled_ns: self.cpu_throttled_ns,
            runq_wait_ns: self.runq_wait_ns,
            mem_current_bytes: self.mem_current_bytes,
            mem_rss_bytes: self.mem_rss_bytes,
            mem_cache_bytes: self.mem_cache_bytes,
            oom_events: self.oom_events,
            net_rx_bytes: self.net_rx_bytes,
            net_tx_bytes: self.net_tx_bytes,
            net_rx_packets: self.net_rx_packets,
            net_tx_packets: self.net_tx_packets,
            io_read_bytes: 0,
            io_write_bytes: 0,
            timestamp: self.timestamp,
        }
    }
}

/// Identity of a task for metric labels.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub(crate) struct TaskLabels {
    pub(crate) task_name: String,
    pub(crate) role: String,
    pub(crate) executor_id: String,
}

#[derive(Debug)]
struct Tracked {
    container_id: String,
    cgroup_id: Option<u64>,
    labels: TaskLabels,
    ring: VecDeque<Sample>,
}

/// The agent's telemetry: optional eBPF probes and a ring of samples per task.
#[derive(Debug)]
pub(crate) struct Telemetry {
    /// Taken out (detached, maps unpinned) on clean shutdown.
    probes: Mutex<Option<Probes>>,
    /// Why eBPF is off, for `/state`.
    ebpf_off_reason: Option<String>,
    tasks: Mutex<HashMap<TaskKey, Tracked>>,
    ring_len: usize,
    /// Devices every task may open beyond the built-in list (`--device-allow`).
    device_defaults: Vec<ebpf::DeviceRule>,
    /// Why pressure stall information (`/proc/pressure`) is unavailable, for `/state`.
    psi_off_reason: Option<String>,
}

/// Path probed for PSI (what the memory-pressure QoS rule reads).
const PSI_PROBE: &str = "/proc/pressure/memory";

/// Why PSI is unavailable given the result of reading `/proc/pressure/memory`; `None`: on.
pub(crate) fn psi_off_reason(read: &std::io::Result<String>) -> Option<String> {
    match read {
        Ok(_) => None,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(format!(
            "{PSI_PROBE} absent: kernel built without CONFIG_PSI"
        )),
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Some(format!(
            "{PSI_PROBE}: PSI disabled (CONFIG_PSI_DEFAULT_DISABLED): boot with psi=1"
        )),
        Err(e) => Some(format!("{PSI_PROBE}: {e}")),
    }
}

/// PSI status of this host, warning once when it is off.
fn probe_psi() -> Option<String> {
    let reason = psi_off_reason(&std::fs::read_to_string(PSI_PROBE));
    if let Some(r) = &reason {
        tracing::warn!(reason = %r, "pressure stall information (PSI) unavailable: no pressure signal for memory-pressure evictions");
    }
    reason
}

/// The agent's root directory in the cgroup2 hierarchy, if it has one.
fn unified_root(cg: &dyn CgroupBackend) -> Option<PathBuf> {
    cg.unified_path("probe")
        .and_then(|p| p.parent().map(PathBuf::from))
}

impl Telemetry {
    /// Telemetry without eBPF (cgroupfs polling only).
    pub(crate) fn polling(reason: String) -> Telemetry {
        Telemetry {
            probes: Mutex::new(None),
            ebpf_off_reason: Some(reason),
            tasks: Mutex::new(HashMap::new()),
            ring_len: RING_LEN,
            device_defaults: Vec::new(),
            psi_off_reason: probe_psi(),
        }
    }

    /// Loads the eBPF programs unless `config` turns them off; falls back to polling (with a
    /// loud warning) when they cannot load.
    pub(crate) fn start(
        config: &AgentConfig,
        cgroups: Option<&Arc<dyn CgroupBackend>>,
    ) -> Telemetry {
        let reason = match (config.ebpf, cgroups) {
            (EbpfMode::Off, _) => "disabled by configuration (--no-ebpf)".to_string(),
            (_, None) => "no cgroups: tasks run unisolated".to_string(),
            (EbpfMode::Auto, Some(cg)) => match unified_root(cg.as_ref()) {
                None => ebpf::EbpfError::NoCgroup2.to_string(),
                Some(root) => {
                    let pin_dir = PathBuf::from(ebpf::PIN_ROOT).join(&config.cgroup_name);
                    match Probes::load(EbpfConfig {
                        root_cgroup: root.clone(),
                        pin_dir,
                        max_tasks: config.ebpf_max_tasks,
                    }) {
                        Ok(p) => {
                            tracing::info!(cgroup = %root.display(), max_tasks = config.ebpf_max_tasks, "eBPF telemetry enabled");
                            // Entries a previous agent pinned for cgroups gone since.
                            let stale = p.untrack_missing(&root);
                            if stale > 0 {
                                tracing::info!(
                                    stale,
                                    "forgot eBPF entries of cgroups removed while no agent ran"
                                );
                            }
                            return Telemetry {
                                probes: Mutex::new(Some(p)),
                                ebpf_off_reason: None,
                                tasks: Mutex::new(HashMap::new()),
                                ring_len: RING_LEN,
                                device_defaults: config.device_allow.clone(),
                                psi_off_reason: probe_psi(),
                            };
                        }
                        Err(e) => e.to_string(),
                    }
                }
            },
        };
        tracing::warn!(
            reason = %reason,
            "eBPF TELEMETRY OFF: usage comes from cgroupfs polling only (no run-queue wait, network counters or bind enforcement)"
        );
        Telemetry::polling(reason)
    }

    fn tasks(&self) -> MutexGuard<'_, HashMap<TaskKey, Tracked>> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn probes(&self) -> MutexGuard<'_, Option<Probes>> {
        self.probes.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn ebpf_enabled(&self) -> bool {
        self.probes().is_some()
    }

    pub(crate) fn ebpf_off_reason(&self) -> Option<&str> {
        self.ebpf_off_reason.as_deref()
    }

    /// Whether `/proc/pressure` is readable (probed at start).
    pub(crate) fn psi_enabled(&self) -> bool {
        self.psi_off_reason.is_none()
    }

    /// Starts following a task whose container was just created (before its process runs:
    /// the bind filter must be in place first). `unified` is its cgroup2 directory.
    pub(crate) fn register(
        &self,
        key: &TaskKey,
        container_id: &str,
        unified: Option<PathBuf>,
        info: &TaskInfo,
        resources: &Resources,
        role: String,
    ) {
        let policy = match policy::task_policy(info, resources, &self.device_defaults) {
            Ok(p) => p,
            Err(why) => {
                // Fail safe: no egress limit, and no device beyond the agent's defaults.
                tracing::warn!(task = %key.1, %why, "ignoring the task's egress and device labels");
                policy::task_policy(&TaskInfo::default(), resources, &self.device_defaults)
                    .unwrap_or_default()
            }
        };
        let policy = &policy;
        let labels = TaskLabels {
            task_name: info.name.clone(),
            role,
            // Command tasks run under the command executor, whose id is the task id (Mesos).
            executor_id: key.1.clone(),
        };
        let mut cgroup_id = None;
        if let (Some(p), Some(dir)) = (self.probes().as_ref(), unified) {
            match ebpf::cgroup_id(&dir) {
                Ok(id) => match p.track(id, policy) {
                    Ok(()) => cgroup_id = Some(id),
                    Err(e) => {
                        tracing::warn!(task = %key.1, error = %e, "task not tracked by eBPF: its network, run-queue and bind enforcement are off")
                    }
                },
                Err(e) => {
                    tracing::warn!(task = %key.1, dir = %dir.display(), error = %e, "no cgroup id for the task")
                }
            }
        }
        self.tasks().insert(
            key.clone(),
            Tracked {
                container_id: container_id.to_string(),
                cgroup_id,
                labels,
                ring: VecDeque::new(),
            },
        );
    }

    /// Applies a task's eBPF policy (bind ports, devices, egress) to one of its nested
    /// containers' cgroup and counts it apart; returns the cgroup id to [`untrack_nested`]
    /// later, `None` without eBPF. The programs look policies up by the current cgroup, so
    /// an untracked nested cgroup would escape the task's port and device rules.
    ///
    /// [`untrack_nested`]: Telemetry::untrack_nested
    pub(crate) fn track_nested(
        &self,
        unified: &std::path::Path,
        info: &TaskInfo,
        resources: &Resources,
    ) -> Result<Option<u64>, String> {
        let probes = self.probes();
        let Some(p) = probes.as_ref() else {
            return Ok(None);
        };
        let policy = policy::task_policy(info, resources, &self.device_defaults)
            .or_else(|_| {
                policy::task_policy(&TaskInfo::default(), resources, &self.device_defaults)
            })
            .unwrap_or_default();
        let id = ebpf::cgroup_id(unified).map_err(|e| e.to_string())?;
        p.track(id, &policy).map_err(|e| e.to_string())?;
        Ok(Some(id))
    }

    /// Forgets a nested container's cgroup (see [`Telemetry::track_nested`]).
    pub(crate) fn untrack_nested(&self, cgroup_id: u64) {
        if let Some(p) = self.probes().as_ref() {
            p.untrack(cgroup_id);
        }
    }

    /// Stops following a task (its container is gone): its map entries and ring go.
    pub(crate) fn unregister(&self, key: &TaskKey) {
        let t = self.tasks().remove(key);
        if let (Some(p), Some(id)) = (self.probes().as_ref(), t.and_then(|t| t.cgroup_id)) {
            p.untrack(id);
        }
    }

    /// Takes one sample of every registered task. Blocking (reads cgroupfs).
    pub(crate) fn sample(&self, cgroups: Option<&dyn CgroupBackend>, now: f64) {
        let targets: Vec<(TaskKey, String, Option<u64>)> = self
            .tasks()
            .iter()
            .map(|(k, t)| (k.clone(), t.container_id.clone(), t.cgroup_id))
            .collect();
        let ids: Vec<u64> = targets.iter().filter_map(|t| t.2).collect();
        let mut ebpf = match self.probes().as_ref() {
            Some(p) if !ids.is_empty() => p.read_many(&ids),
            _ => HashMap::new(),
        };
        let mut samples = Vec::with_capacity(targets.len());
        for (key, cid, cgid) in targets {
            let e = cgid.and_then(|id| ebpf.remove(&id));
            let cg = cgroups.and_then(|c| {
                if e.is_some() {
                    c.usage_without_ebpf_counters(&cid).ok()
                } else {
                    c.usage(&cid).ok()
                }
            });
            if cg.is_none() && e.is_none() {
                continue;
            }
            samples.push((key, Sample::from_parts(now, cg, e)));
        }
        let mut tasks = self.tasks();
        for (key, s) in samples {
            // A task unregistered meanwhile stays gone.
            if let Some(t) = tasks.get_mut(&key) {
                if t.ring.len() == self.ring_len {
                    t.ring.pop_front();
                }
                t.ring.push_back(s);
            }
        }
    }

    /// Newest sample of every task that has one, with its labels.
    pub(crate) fn latest(&self) -> Vec<(TaskKey, TaskLabels, Sample)> {
        self.tasks()
            .iter()
            .filter_map(|(k, t)| Some((k.clone(), t.labels.clone(), t.ring.back()?.clone())))
            .collect()
    }

    /// The ring of one task, oldest first.
    pub(crate) fn history(&self, key: &TaskKey) -> Vec<Sample> {
        self.tasks()
            .get(key)
            .map(|t| t.ring.iter().cloned().collect())
            .unwrap_or_default()
    }

    pub(crate) fn prog_stats(&self) -> Vec<ProgStats> {
        self.probes()
            .as_ref()
            .map(Probes::prog_stats)
            .unwrap_or_default()
    }

    /// Clean shutdown (every task is gone): detach and remove the pinned maps.
    pub(crate) fn shutdown(&self) {
        let probes = self.probes().take();
        if let Some(p) = probes {
            p.unpin();
        }
    }
}

impl Telemetry {
    /// Newest usage of every task, for the master.
    pub(crate) fn usage(&self) -> Vec<ContainerUsage> {
        self.latest()
            .into_iter()
            .map(|(k, _, s)| s.to_proto(&k))
            .collect()
    }

    /// One sampling pass over the agent's tasks: registers running tasks it does not follow
    /// yet (tasks recovered after an agent restart), forgets ended ones (their map entries
    /// go with them), then samples. Blocking: call from a blocking thread.
    pub(crate) fn sample_agent(&self, agent: &Agent) {
        let (live, running): (HashSet<TaskKey>, Vec<Running>) = {
            let st = agent.state();
            let live = st
                .tasks
                .iter()
                .filter(|(_, t)| t.is_live() && !t.container_id.is_empty())
                .map(|(k, _)| k.clone())
                .collect();
            let running = st
                .tasks
                .iter()
                .filter(|(_, t)| t.is_live() && t.pid.is_some() && !t.container_id.is_empty())
                .map(|(k, t)| {
                    (
                        k.clone(),
                        t.container_id.clone(),
                        t.info.clone(),
                        t.resources.clone(),
                    )
                })
                .collect();
            (live, running)
        };
        let gone: Vec<TaskKey> = self
            .tasks()
            .keys()
            .filter(|k| !live.contains(*k))
            .cloned()
            .collect();
        for k in gone {
            self.unregister(&k);
        }
        let cg = agent.cgroups.as_deref();
        for (key, cid, info, resources) in running {
            if self.tasks().contains_key(&key) {
                continue;
            }
            let role = agent.framework_role(&key.0);
            let unified = cg.and_then(|c| c.unified_path(&cid));
            self.register(&key, &cid, unified, &info, &resources, role);
        }
        self.sample(cg, crate::agent::now_secs());
    }

    /// `/state` additions: whether eBPF and PSI are on (and why not), and each task's usage
    /// ring.
    pub(crate) fn annotate_state(&self, state: &mut serde_json::Value) {
        state["ebpf"] = serde_json::json!({
            "enabled": self.ebpf_enabled(),
            "reason": self.ebpf_off_reason(),
        });
        state["psi"] = serde_json::json!({
            "enabled": self.psi_enabled(),
            "reason": self.psi_off_reason,
        });
        let Some(tasks) = state.get_mut("tasks").and_then(|t| t.as_array_mut()) else {
            return;
        };
        for t in tasks {
            let key = (
                t["framework_id"].as_str().unwrap_or_default().to_string(),
                t["id"].as_str().unwrap_or_default().to_string(),
            );
            let ring = self.history(&key);
            t["usage"] = serde_json::to_value(ring.last()).unwrap_or_default();
            t["usage_history"] = serde_json::to_value(&ring).unwrap_or_default();
        }
    }
}

/// A running task as the sampler sees it: key, container id, task and resources.
type Running = (TaskKey, String, TaskInfo, Resources);

/// Samples every `usage_interval` until `stop` turns true.
pub(crate) async fn run(agent: Arc<Agent>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let period = agent
        .config
        .usage_interval
        .max(std::time::Duration::from_millis(100));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let a = Arc::clone(&agent);
                let t = Arc::clone(&agent.telemetry);
                if let Err(e) = tokio::task::spawn_blocking(move || t.sample_agent(&a)).await {
                    tracing::warn!(error = %e, "usage sampling failed");
                }
            }
            r = stop.changed() => {
                if r.is_err() || *stop.borrow() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psi_reasons() {
        assert_eq!(psi_off_reason(&Ok("some avg10=0.00".into())), None);
        let absent = psi_off_reason(&Err(std::io::ErrorKind::NotFound.into()));
        assert!(absent.is_some_and(|r| r.contains("CONFIG_PSI")));
        let off = psi_off_reason(&Err(std::io::Error::from_raw_os_error(libc::EOPNOTSUPP)));
        assert!(off.is_some_and(|r| r.contains("psi=1")));
        let other = psi_off_reason(&Err(std::io::Error::from_raw_os_error(libc::EACCES)));
        assert!(other.is_some_and(|r| r.contains("/proc/pressure/memory")));
    }
}
