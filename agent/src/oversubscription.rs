//! The oversubscription loop: the thin shell around the pure [`SlackEstimator`] and
//! [`QosController`].
//!
//! Every usage interval it reads the tasks' newest usage (telemetry: eBPF or cgroupfs) and the
//! host's memory state (`/proc/meminfo`, `/proc/pressure/memory` when PSI is on), publishes
//! the slack estimate to the master when the estimator says it changed meaningfully, and
//! evicts the revocable tasks the QoS controller picks: `TASK_KILLED` with reason
//! `REASON_CONTAINER_PREEMPTED`, counted in `brim_agent_revocable_evictions_total{reason}`
//! and logged with the controller's cause.
//!
//! Architecture Invariant: decisions are made only by the pure modules; this file gathers
//! their inputs and carries out their outputs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use brim_proto::v1::agent_message;
use brim_proto::Resources;
use serde::Serialize;
use tokio::sync::watch;

use crate::agent::Agent;
use crate::qos::{EvictionReason, OwnerUsage, QosConfig, QosController, QosInput, RevocableTask};
use crate::slack::{AgentTotals, SlackConfig, SlackEstimate, SlackEstimator, TaskUsage};
use crate::telemetry::TaskKey;

/// `--oversubscribe` and its knobs.
#[derive(Debug, Clone, Default)]
pub struct OversubscriptionConfig {
    /// Estimate and publish slack, accept revocable tasks, run the QoS controller.
    pub enabled: bool,
    pub slack: SlackConfig,
    pub qos: QosConfig,
}

/// What the agent knows of one live task for the estimator and the controller.
#[derive(Debug, Clone)]
pub(crate) struct TaskFacts {
    pub key: TaskKey,
    /// Non-revocable and revocable resources the task holds.
    pub resources: Resources,
    pub revocable: Resources,
    /// Seconds since the Unix epoch.
    pub started_time: f64,
    /// A kill was already requested (evicted or killed): not a candidate again.
    pub killing: bool,
}

/// Per-agent oversubscription state (owned by [`Agent`]).
#[derive(Debug)]
pub struct Oversubscription {
    enabled: bool,
    estimator: Mutex<Option<SlackEstimator>>,
    qos: Mutex<Option<QosController>>,
    /// The newest published estimate; the master link sends every change.
    slack_tx: watch::Sender<Option<SlackEstimate>>,
    /// Evicted tasks and the controller's cause, until their final update is built.
    preempted: Mutex<HashMap<TaskKey, String>>,
    evictions: Mutex<HashMap<&'static str, u64>>,
}

/// Serialisable view for `/state`.
#[derive(Debug, Clone, Serialize)]
pub struct OversubscriptionView {
    pub enabled: bool,
    pub slack: Option<SlackEstimate>,
    pub evictions: HashMap<&'static str, u64>,
}

impl Oversubscription {
    /// Invalid knobs are refused at flag parsing (`validate`); here they disable the feature
    /// with an error in the log rather than taking the agent down.
    pub(crate) fn new(config: &OversubscriptionConfig) -> Self {
        let (estimator, qos) = if config.enabled {
            let e = SlackEstimator::new(config.slack.clone())
                .map_err(|e| tracing::error!("oversubscription disabled: slack config: {e}"))
                .ok();
            let q = QosController::new(config.qos.clone())
                .map_err(|e| tracing::error!("oversubscription disabled: QoS config: {e}"))
                .ok();
            (e, q)
        } else {
            (None, None)
        };
        let enabled = estimator.is_some() && qos.is_some();
        Oversubscription {
            enabled,
            estimator: Mutex::new(estimator),
            qos: Mutex::new(qos),
            slack_tx: watch::channel(None).0,
            preempted: Mutex::new(HashMap::new()),
            evictions: Mutex::new(HashMap::new()),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Receives every published slack estimate (the master link).
    pub(crate) fn subscribe(&self) -> watch::Receiver<Option<SlackEstimate>> {
        self.slack_tx.subscribe()
    }

    /// The cause of a task's eviction, taken once when its final update is built.
    pub(crate) fn take_preempted(&self, key: &TaskKey) -> Option<String> {
        lock(&self.preempted).remove(key)
    }

    /// Evictions so far, by reason label (for `/metrics`).
    pub fn evictions(&self) -> Vec<(&'static str, u64)> {
        let counts = lock(&self.evictions);
        EvictionReason::ALL
            .iter()
            .map(|r| (r.as_str(), counts.get(r.as_str()).copied().unwrap_or(0)))
            .collect()
    }

    pub fn view(&self) -> OversubscriptionView {
        OversubscriptionView {
            enabled: self.enabled,
            slack: self.slack_tx.borrow().clone(),
            evictions: lock(&self.evictions).clone(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The wire form of an estimate: revocable cpus/mem, and what the owners use.
pub(crate) fn slack_message(e: &SlackEstimate) -> agent_message::Slack {
    let scalars = |cpus: f64, mem: f64| {
        let mut r = Resources::new();
        // Estimates are finite and >= 0 (estimator invariant); a refusal leaves the entry out.
        let _ = r.set_scalar("cpus", cpus);
        let _ = r.set_scalar("mem", mem);
        r.to_proto()
    };
    agent_message::Slack {
        revocable: scalars(e.cpus, e.mem_mb),
        used_estimate: scalars(e.used_cpus, e.used_mem_mb),
    }
}

/// Runs until shutdown: one step per usage interval.
pub(crate) async fn run(agent: Arc<Agent>, mut shutdown: watch::Receiver<bool>) {
    if !agent.oversubscription.enabled() {
        return;
    }
    let epoch = Instant::now();
    let mut tick =
        tokio::time::interval(agent.config.usage_interval.max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let a = Arc::clone(&agent);
                let now = epoch.elapsed();
                if let Err(e) = tokio::task::spawn_blocking(move || step(&a, now)).await {
                    tracing::error!(error = %e, "oversubscription step panicked");
                }
            }
            _ = shutdown.changed() => return,
        }
    }
}

/// One observation: estimate, publish, evict.
///
/// `now` is the time the newest usage sample was taken (Unix epoch), not this tick's: the
/// telemetry samples on its own tick, and rating counters against the step's clock made a
/// tick that saw the same sample twice read 0 and the next read 2× (the slack percentile
/// then kept the doubled values). `_tick` is the loop clock, unused since.
fn step(agent: &Arc<Agent>, _tick: Duration) {
    let o = &agent.oversubscription;
    let facts = agent.oversubscription_facts();
    let usage = agent.usage();
    let now = usage
        .iter()
        .map(|u| u.timestamp)
        .filter(|t| t.is_finite() && *t > 0.0)
        .fold(None, |m: Option<f64>, t| Some(m.map_or(t, |m| m.max(t))))
        .and_then(|t| Duration::try_from_secs_f64(t).ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
        });
    let usage: HashMap<TaskKey, (u64, u64, u64, u64)> = usage
        .into_iter()
        .map(|u| {
            (
                (u.framework_id, u.task_id),
                (
                    u.cpu_ns,
                    u.runq_wait_ns,
                    u.mem_current_bytes,
                    u.cpu_throttled_ns,
                ),
            )
        })
        .collect();
    let id = |k: &TaskKey| format!("{}/{}", k.0, k.1);
    let counters = |k: &TaskKey| usage.get(k).copied().unwrap_or_default();

    let tasks: Vec<TaskUsage> = facts
        .iter()
        .filter(|f| !f.killing)
        .map(|f| {
            let (cpu_ns, _, mem, _) = counters(&f.key);
            let mut all = f.resources.clone();
            all.add(&f.revocable);
            TaskUsage {
                id: id(&f.key),
                revocable: !f.revocable.is_empty(),
                allocated_cpus: all.scalar("cpus"),
                allocated_mem_mb: all.scalar("mem"),
                cpu_ns,
                mem_bytes: mem,
            }
        })
        .collect();
    let totals = AgentTotals {
        cpus: agent.total.scalar("cpus"),
        mem_mb: agent.total.scalar("mem"),
    };
    let (publish, current) = {
        let mut est = lock(&o.estimator);
        let Some(est) = est.as_mut() else { return };
        let p = est.observe(now, totals, &tasks);
        (p, est.current())
    };
    if let Some(e) = publish {
        tracing::info!(
            cpus = e.cpus,
            mem_mb = e.mem_mb,
            used_cpus = e.used_cpus,
            used_mem_mb = e.used_mem_mb,
            "publishing slack estimate"
        );
        o.slack_tx.send_replace(Some(e));
    }

    let input = QosInput {
        now,
        owners: facts
            .iter()
            .filter(|f| f.revocable.is_empty())
            .map(|f| {
                let (cpu_ns, runq_wait_ns, _, throttled_ns) = counters(&f.key);
                OwnerUsage {
                    id: id(&f.key),
                    cpu_ns,
                    runq_wait_ns,
                    throttled_ns,
                }
            })
            .collect(),
        revocable: facts
            .iter()
            .filter(|f| !f.revocable.is_empty() && !f.killing)
            .map(|f| {
                let (cpu_ns, _, mem, _) = counters(&f.key);
                let mut all = f.resources.clone();
                all.add(&f.revocable);
                RevocableTask {
                    id: id(&f.key),
                    started: Duration::try_from_secs_f64(f.started_time).unwrap_or_default(),
                    allocated_cpus: all.scalar("cpus"),
                    allocated_mem_mb: all.scalar("mem"),
                    cpu_ns,
                    mem_bytes: mem,
                }
            })
            .collect(),
        mem_available_mb: mem_available_mb(),
        mem_psi_some_avg10: memory_psi_some_avg10(),
        slack: current,
    };
    let evictions = {
        let mut q = lock(&o.qos);
        let Some(q) = q.as_mut() else { return };
        q.evaluate(&input)
    };
    for e in evictions {
        let Some(f) = facts.iter().find(|f| id(&f.key) == e.id) else {
            continue;
        };
        tracing::warn!(
            framework = %f.key.0,
            task = %f.key.1,
            reason = e.reason.as_str(),
            cause = %e.cause,
            "evicting revocable task"
        );
        *lock(&o.evictions).entry(e.reason.as_str()).or_default() += 1;
        lock(&o.preempted).insert(
            f.key.clone(),
            format!(
                "revocable task preempted ({}): {}",
                e.reason.as_str(),
                e.cause
            ),
        );
        // No grace: the owners need the resources now.
        agent.kill_task(&f.key.0, &f.key.1, Some(0.0));
    }
}

/// `MemAvailable` from `/proc/meminfo`, in MiB.
fn mem_available_mb() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_meminfo_available(&text)
}

fn parse_meminfo_available(text: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// `some avg10` of `/proc/pressure/memory` (None when PSI is off or absent).
fn memory_psi_some_avg10() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/pressure/memory").ok()?;
    parse_psi_some_avg10(&text)
}

fn parse_psi_some_avg10(text: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.starts_with("some "))?;
    let v = line
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("avg10="))?;
    v.parse().ok().filter(|x: &f64| x.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_meminfo_and_psi() {
        let mi = "MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:   2048000 kB\n";
        assert_eq!(parse_meminfo_available(mi), Some(2000.0));
        assert_eq!(parse_meminfo_available("garbage"), None);
        assert_eq!(parse_meminfo_available("MemAvailable: x kB"), None);
        let psi = "some avg10=12.09 avg60=7.04 avg300=6.22 total=2522025777\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";
        assert_eq!(parse_psi_some_avg10(psi), Some(12.09));
        assert_eq!(parse_psi_some_avg10("some avg10=nan"), None);
        assert_eq!(parse_psi_some_avg10(""), None);
    }

    #[test]
    fn slack_message_carries_cpus_and_mem() {
        let m = slack_message(&SlackEstimate {
            cpus: 1.5,
            mem_mb: 512.0,
            used_cpus: 0.25,
            used_mem_mb: 100.0,
        });
        let r = Resources::from_proto(&m.revocable).expect("valid");
        assert_eq!(r.scalar("cpus"), 1.5);
        assert_eq!(r.scalar("mem"), 512.0);
        let u = Resources::from_proto(&m.used_estimate).expect("valid");
        assert_eq!(u.scalar("cpus"), 0.25);
    }
}
