//! QoS for oversubscription: decides which revocable tasks to evict so the owners
//! (non-revocable tasks) stop suffering. Mesos kills every revocable task at once; brim
//! evicts the most recently started first, and only as many as needed.
//!
//! Pure code: no I/O and no clock. Time is [`QosInput::now`] (since an arbitrary epoch
//! chosen by the caller); the caller feeds one [`QosInput`] per telemetry sample (≈ 1 s) to
//! [`QosController::evaluate`] and kills what it returns (`TASK_KILLED`,
//! `CONTAINER_PREEMPTED`), counting `brim_agent_revocable_evictions_total{reason}` with
//! [`EvictionReason::as_str`] and logging [`Eviction::cause`].
//!
//! # Rules
//!
//! Evaluated in this order, each one evicting youngest first (largest `started`, ties by
//! id) among the revocable tasks not already evicted:
//!
//! 1. **memory** — `mem_available_mb < mem_available_min_mb`, or PSI `some avg10 >
//!    mem_psi_some_avg10_max`: free `max(0, min − available) + mem_margin_mb` MB, minus the
//!    memory of tasks already evicted but still present. Memory of a task is `mem_bytes`, or
//!    its allocation while `mem_bytes` is 0 (not measured yet).
//! 2. **cpu** — over the last interval the owners' aggregate run-queue wait rate (ns waited
//!    per ns of wall = cpus of unmet demand, throttling excluded) is above
//!    `runq_wait_min_ms_per_s` *and* the ratio `wait / (wait + on-cpu)` is above
//!    `runq_wait_ratio`: free `wait rate × cpu_free_factor` cpus, minus the cpu of tasks
//!    already evicted but still present. CPU of a task is its measured rate. Only tasks measured at `cpu_min_task_cpus` or more are
//!    evicted: a starved revocable task (e.g. in a `cpu.idle` subtree) frees nothing, and
//!    the owners' wait then comes from elsewhere (when it grows, their usage shrinks the
//!    slack and rule 3 evicts it); a task not measured yet (launched less than one interval
//!    ago) waits for its first rate, else every new revocable task is killed before it
//!    runs whenever the owners wait for reasons of their own. An owner's wait excludes the
//!    time its cgroup was throttled by its own CPU quota.
//! 3. **slack** — the revocable allocations of the tasks not evicted exceed `slack × (1 +
//!    slack_tolerance)` in cpus or mem: evict until both fit.
//!
//! A rule that fires with something left to free evicts at least one task. After the memory
//! or cpu rule evicted, it does not fire again for [`QosConfig::cooldown`] (the kills need
//! an interval to show in the measurements). The slack rule has no cooldown: it is
//! arithmetic on allocations, and evicted tasks already count as gone.
//!
//! An evicted id is remembered (counted as gone, never returned again) until it disappears
//! from [`QosInput::revocable`]. A kill that never completes therefore keeps its task
//! counted as gone: the caller must make kills finish.
//!
//! # Bad input
//! Rates come from cumulative counters with the same rules as [`crate::slack`]: a counter
//! going backwards re-baselines (no negative rate), zero elapsed time gives no rate, a clock
//! going backwards drops every baseline and every cooldown, vanished tasks are forgotten.
//! NaN, infinite or negative allocations count as 0; NaN or infinite memory or PSI readings
//! are ignored; a NaN slack counts as 0.
//!
//! Architecture Invariant: nothing in this module does I/O or reads a clock.
//! Architecture Invariant: an id is returned at most once while it stays in the input, and
//! only ids present in [`QosInput::revocable`] are returned.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::time::Duration;

use crate::slack::SlackEstimate;

const MB: f64 = 1024.0 * 1024.0;

/// Knobs of the [`QosController`]; [`QosConfig::default`] gives the documented defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct QosConfig {
    /// Owners' run-queue wait / (wait + on-cpu) above which they suffer, in (0, 1]
    /// (default 0.25).
    pub runq_wait_ratio: f64,
    /// Absolute wait rate, ms per s, below which contention is noise (default 100). Revocable
    /// tasks run SCHED_IDLE (`cpu.idle`) where the kernel has it, so owners preempt them at
    /// every wakeup and a little wait comes from elsewhere on the host: the rule is a safety
    /// net for real starvation, not a reaction to noise.
    pub runq_wait_min_ms_per_s: f64,
    /// Cpus freed per cpu of owners' wait, ≥ 1 (default 1.5).
    pub cpu_free_factor: f64,
    /// The cpu rule only evicts revocable tasks measured at this many cpus or more (or not
    /// measured yet): a starved task frees nothing (default 0.05).
    pub cpu_min_task_cpus: f64,
    /// Available memory below which revocable tasks are evicted, MB (default 256).
    pub mem_available_min_mb: f64,
    /// Extra MB freed on memory pressure beyond the deficit (default 64).
    pub mem_margin_mb: f64,
    /// PSI memory `some avg10` above which revocable tasks are evicted, in [0, 100];
    /// `None` ignores PSI (default `Some(10.0)`).
    pub mem_psi_some_avg10_max: Option<f64>,
    /// Revocable allocations may exceed the slack by this fraction before evictions, ≥ 0
    /// (default 0.05).
    pub slack_tolerance: f64,
    /// Quiet time of the cpu and memory rules after they evicted (default 1 s).
    pub cooldown: Duration,
}

impl Default for QosConfig {
    fn default() -> Self {
        QosConfig {
            runq_wait_ratio: 0.25,
            runq_wait_min_ms_per_s: 100.0,
            cpu_free_factor: 1.5,
            cpu_min_task_cpus: 0.05,
            mem_available_min_mb: 256.0,
            mem_margin_mb: 64.0,
            mem_psi_some_avg10_max: Some(10.0),
            slack_tolerance: 0.05,
            cooldown: Duration::from_secs(1),
        }
    }
}

/// Why a [`QosConfig`] was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QosConfigError {
    #[error("qos run-queue wait ratio must be in (0, 1], e.g. 0.10 (got {0})")]
    RunqWaitRatio(f64),
    #[error("qos {knob} must be a finite number ≥ 0 (got {value})")]
    NotNonNegative { knob: &'static str, value: f64 },
    #[error("qos cpu free factor must be a finite number ≥ 1, e.g. 1.5 (got {0})")]
    CpuFreeFactor(f64),
    #[error("qos memory PSI some avg10 maximum must be in [0, 100], e.g. 10 (got {0})")]
    Psi(f64),
}

impl QosConfig {
    /// Checks every knob; the error says which one and what is accepted.
    pub fn validate(&self) -> Result<(), QosConfigError> {
        if !(self.runq_wait_ratio > 0.0 && self.runq_wait_ratio <= 1.0) {
            return Err(QosConfigError::RunqWaitRatio(self.runq_wait_ratio));
        }
        for (knob, value) in [
            ("run-queue wait minimum (ms/s)", self.runq_wait_min_ms_per_s),
            ("available memory minimum (MB)", self.mem_available_min_mb),
            ("memory margin (MB)", self.mem_margin_mb),
            ("slack tolerance", self.slack_tolerance),
            ("cpu min task cpus", self.cpu_min_task_cpus),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(QosConfigError::NotNonNegative { knob, value });
            }
        }
        if !(self.cpu_free_factor.is_finite() && self.cpu_free_factor >= 1.0) {
            return Err(QosConfigError::CpuFreeFactor(self.cpu_free_factor));
        }
        if let Some(p) = self.mem_psi_some_avg10_max {
            if !(0.0..=100.0).contains(&p) {
                return Err(QosConfigError::Psi(p));
            }
        }
        Ok(())
    }
}

/// A non-revocable task whose suffering the controller watches.
#[derive(Debug, Clone, PartialEq)]
pub struct OwnerUsage {
    pub id: String,
    /// Cumulative CPU time, ns.
    pub cpu_ns: u64,
    /// Cumulative run-queue wait (runnable but not running), ns.
    pub runq_wait_ns: u64,
    /// Cumulative time its cgroup was throttled by its own CPU quota (`cpu.stat`), ns. The
    /// eBPF wait counts throttled time as runnable; that part is self-inflicted (the task is
    /// at its hard limit) and evicting revocable tasks cannot help it, so it is subtracted.
    pub throttled_ns: u64,
}

/// A task running on revocable resources: an eviction candidate.
#[derive(Debug, Clone, PartialEq)]
pub struct RevocableTask {
    pub id: String,
    /// When it started (same epoch as [`QosInput::now`]); the largest is evicted first.
    pub started: Duration,
    pub allocated_cpus: f64,
    pub allocated_mem_mb: f64,
    /// Cumulative CPU time, ns.
    pub cpu_ns: u64,
    /// Current memory use, bytes (0 = not measured yet).
    pub mem_bytes: u64,
}

/// One sample of everything the controller looks at.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct QosInput {
    pub now: Duration,
    pub owners: Vec<OwnerUsage>,
    pub revocable: Vec<RevocableTask>,
    /// `MemAvailable` of the machine (or the agent's share of it), MB; `None` if unknown.
    pub mem_available_mb: Option<f64>,
    /// PSI memory `some avg10` (percent); `None` when PSI is not enabled.
    pub mem_psi_some_avg10: Option<f64>,
    /// The current slack estimate; `None` before there is one (the slack rule then waits).
    pub slack: Option<SlackEstimate>,
}

/// Why a revocable task was evicted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EvictionReason {
    Cpu,
    Memory,
    Slack,
}

impl EvictionReason {
    pub const ALL: [EvictionReason; 3] = [
        EvictionReason::Cpu,
        EvictionReason::Memory,
        EvictionReason::Slack,
    ];

    /// The `reason` label of `brim_agent_revocable_evictions_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            EvictionReason::Cpu => "cpu_contention",
            EvictionReason::Memory => "memory_pressure",
            EvictionReason::Slack => "slack_shrink",
        }
    }

    fn index(self) -> usize {
        match self {
            EvictionReason::Cpu => 0,
            EvictionReason::Memory => 1,
            EvictionReason::Slack => 2,
        }
    }
}

impl fmt::Display for EvictionReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A decision: kill this revocable task.
#[derive(Debug, Clone, PartialEq)]
pub struct Eviction {
    pub id: String,
    pub reason: EvictionReason,
    /// A sentence with the numbers behind the decision, for the log and the status message.
    pub cause: String,
}

#[derive(Debug, Clone, Copy)]
struct OwnerBase {
    at: Duration,
    cpu_ns: u64,
    wait_ns: u64,
    throttled_ns: u64,
}

#[derive(Debug, Clone, Copy)]
struct RevTrack {
    base: Option<(Duration, u64)>,
    rate: Option<f64>,
}

/// Decides evictions from a stream of [`QosInput`]s. See the module docs.
#[derive(Debug, Clone)]
pub struct QosController {
    config: QosConfig,
    owners: HashMap<String, OwnerBase>,
    revocable: HashMap<String, RevTrack>,
    evicted: HashMap<String, EvictionReason>,
    last_eviction: [Option<Duration>; 3],
    last_now: Option<Duration>,
    notes: Vec<String>,
}

/// `x` if it is a finite non-negative number, else 0.
fn sane(x: f64) -> f64 {
    if x.is_finite() && x > 0.0 {
        x
    } else {
        0.0
    }
}

/// A candidate with what evicting it would free.
struct Candidate<'a> {
    task: &'a RevocableTask,
    /// Measured rate, or the allocation before there is one.
    cpus: f64,
    /// The measured rate, if any.
    measured: Option<f64>,
    mem_mb: f64,
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        "task"
    } else {
        "tasks"
    }
}

impl QosController {
    /// A new controller; refuses an invalid configuration.
    pub fn new(config: QosConfig) -> Result<Self, QosConfigError> {
        config.validate()?;
        Ok(QosController {
            config,
            owners: HashMap::new(),
            revocable: HashMap::new(),
            evicted: HashMap::new(),
            last_eviction: [None; 3],
            last_now: None,
            notes: Vec::new(),
        })
    }

    pub fn config(&self) -> &QosConfig {
        &self.config
    }

    /// Why a rule that fired evicted nothing (e.g. only starved revocable tasks), since the
    /// last call: for a debug log.
    pub fn take_notes(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notes)
    }

    /// Evicted tasks still present in the last input (their kill is under way).
    pub fn pending(&self) -> impl Iterator<Item = (&str, EvictionReason)> {
        self.evicted.iter().map(|(id, r)| (id.as_str(), *r))
    }

    /// Takes one sample; returns the tasks to evict now, youngest first within each reason.
    pub fn evaluate(&mut self, input: &QosInput) -> Vec<Eviction> {
        let now = input.now;
        if self.last_now.is_some_and(|last| now < last) {
            self.owners.clear();
            for t in self.revocable.values_mut() {
                t.base = None;
            }
            self.last_eviction = [None; 3];
        }
        self.last_now = Some(now);

        let owner_rates = self.owner_rates(input);
        let candidates = self.candidates(input);
        let present: HashSet<&str> = candidates.iter().map(|c| c.task.id.as_str()).collect();
        self.evicted.retain(|id, _| present.contains(id.as_str()));

        let mut out = Vec::new();
        self.memory_rule(input, &candidates, &mut out);
        if let Some((wait, cpu)) = owner_rates {
            self.cpu_rule(now, wait, cpu, &candidates, &mut out);
        }
        if let Some(slack) = &input.slack {
            self.slack_rule(now, slack, &candidates, &mut out);
        }
        out
    }

    /// Aggregate (wait, on-cpu) rates of the owners over the last interval; `None` when no
    /// owner has two usable samples yet.
    fn owner_rates(&mut self, input: &QosInput) -> Option<(f64, f64)> {
        let now = input.now;
        let mut seen = HashSet::new();
        let (mut wait, mut cpu, mut measured) = (0.0, 0.0, false);
        for o in &input.owners {
            if !seen.insert(o.id.as_str()) {
                continue;
            }
            let fresh = OwnerBase {
                at: now,
                cpu_ns: o.cpu_ns,
                wait_ns: o.runq_wait_ns,
                throttled_ns: o.throttled_ns,
            };
            match self.owners.get(&o.id).copied() {
                Some(b)
                    if o.cpu_ns >= b.cpu_ns
                        && o.runq_wait_ns >= b.wait_ns
                        && o.throttled_ns >= b.throttled_ns =>
                {
                    if now > b.at {
                        let dt = (now - b.at).as_nanos() as f64;
                        let waited = o.runq_wait_ns - b.wait_ns;
                        let throttled = o.throttled_ns - b.throttled_ns;
                        wait += waited.saturating_sub(throttled) as f64 / dt;
                        cpu += (o.cpu_ns - b.cpu_ns) as f64 / dt;
                        measured = true;
                        self.owners.insert(o.id.clone(), fresh);
                    }
                }
                _ => {
                    self.owners.insert(o.id.clone(), fresh);
                }
            }
        }
        self.owners.retain(|id, _| seen.contains(id.as_str()));
        measured.then_some((sane(wait), sane(cpu)))
    }

    /// Every distinct revocable task, youngest first, with its current cpu rate and memory.
    fn candidates<'a>(&mut self, input: &'a QosInput) -> Vec<Candidate<'a>> {
        let now = input.now;
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for t in &input.revocable {
            if !seen.insert(t.id.as_str()) {
                continue;
            }
            let track = self.revocable.entry(t.id.clone()).or_insert(RevTrack {
                base: None,
                rate: None,
            });
            match track.base {
                Some((at, ns)) if t.cpu_ns >= ns && now > at => {
                    let dt = (now - at).as_nanos() as f64;
                    track.rate = Some(sane((t.cpu_ns - ns) as f64 / dt));
                    track.base = Some((now, t.cpu_ns));
                }
                Some((_, ns)) if t.cpu_ns >= ns => {}
                _ => track.base = Some((now, t.cpu_ns)),
            }
            let mem_mb = if t.mem_bytes > 0 {
                t.mem_bytes as f64 / MB
            } else {
                sane(t.allocated_mem_mb)
            };
            out.push(Candidate {
                task: t,
                cpus: track.rate.unwrap_or_else(|| sane(t.allocated_cpus)),
                measured: track.rate,
                mem_mb,
            });
        }
        self.revocable.retain(|id, _| seen.contains(id.as_str()));
        out.sort_by(|a, b| {
            b.task
                .started
                .cmp(&a.task.started)
                .then_with(|| b.task.id.cmp(&a.task.id))
        });
        out
    }

    fn cooling(&self, now: Duration, reason: EvictionReason) -> bool {
        self.last_eviction[reason.index()]
            .is_some_and(|at| now >= at && now - at < self.config.cooldown)
    }

    /// What the evicted-but-present tasks free once their kill completes: (cpus, MB).
    fn pending_amounts(&self, candidates: &[Candidate<'_>]) -> (f64, f64) {
        candidates
            .iter()
            .filter(|c| self.evicted.contains_key(&c.task.id))
            .fold((0.0, 0.0), |(c, m), x| (c + x.cpus, m + x.mem_mb))
    }

    /// Evicts youngest live candidates until `freed(candidate)` sums to `need` (> 0); returns
    /// the chosen ones and what they free.
    fn pick<'c, 'a>(
        &self,
        candidates: &'c [Candidate<'a>],
        need: f64,
        eligible: impl Fn(&Candidate<'a>) -> bool,
        freed: impl Fn(&Candidate<'a>) -> f64,
    ) -> (Vec<&'c Candidate<'a>>, f64) {
        let mut chosen = Vec::new();
        let mut sum = 0.0;
        let live = candidates
            .iter()
            .filter(|c| !self.evicted.contains_key(&c.task.id) && eligible(c));
        for c in live {
            if sum >= need && !chosen.is_empty() {
                break;
            }
            sum += freed(c);
            chosen.push(c);
        }
        (chosen, sum)
    }

    fn record(
        &mut self,
        now: Duration,
        reason: EvictionReason,
        chosen: &[&Candidate<'_>],
        cause: String,
        out: &mut Vec<Eviction>,
    ) {
        if chosen.is_empty() {
            return;
        }
        self.last_eviction[reason.index()] = Some(now);
        for c in chosen {
            self.evicted.insert(c.task.id.clone(), reason);
            out.push(Eviction {
                id: c.task.id.clone(),
                reason,
                cause: cause.clone(),
            });
        }
    }

    fn memory_rule(
        &mut self,
        input: &QosInput,
        candidates: &[Candidate<'_>],
        out: &mut Vec<Eviction>,
    ) {
        let cfg = &self.config;
        let available = input.mem_available_mb.filter(|a| a.is_finite());
        let psi = input.mem_psi_some_avg10.filter(|p| p.is_finite());
        let low = available.filter(|a| *a < cfg.mem_available_min_mb);
        let pressure = match (cfg.mem_psi_some_avg10_max, psi) {
            (Some(max), Some(p)) if p > max => Some((p, max)),
            _ => None,
        };
        if (low.is_none() && pressure.is_none()) || self.cooling(input.now, EvictionReason::Memory)
        {
            return;
        }
        let deficit = low.map_or(0.0, |a| cfg.mem_available_min_mb - a);
        let (_, pending_mem) = self.pending_amounts(candidates);
        let need = deficit + cfg.mem_margin_mb - pending_mem;
        if need <= 0.0 {
            return;
        }
        let mut why = Vec::new();
        if let Some(a) = low {
            why.push(format!(
                "memory available {a:.0} MB < {:.0} MB",
                cfg.mem_available_min_mb
            ));
        }
        if let Some((p, max)) = pressure {
            why.push(format!("memory PSI some avg10 {p:.1} > {max:.1}"));
        }
        let (chosen, freed) = self.pick(candidates, need, |_| true, |c| c.mem_mb);
        let cause = format!(
            "{}; evicting {} youngest revocable {} holding {freed:.0} MB to free {need:.0} MB",
            why.join(", "),
            chosen.len(),
            plural(chosen.len()),
        );
        self.record(input.now, EvictionReason::Memory, &chosen, cause, out);
    }

    fn cpu_rule(
        &mut self,
        now: Duration,
        wait: f64,
        cpu: f64,
        candidates: &[Candidate<'_>],
        out: &mut Vec<Eviction>,
    ) {
        let cfg = &self.config;
        let wait_ms_per_s = wait * 1000.0;
        let ratio = if wait + cpu > 0.0 {
            wait / (wait + cpu)
        } else {
            0.0
        };
        if wait_ms_per_s <= cfg.runq_wait_min_ms_per_s
            || ratio <= cfg.runq_wait_ratio
            || self.cooling(now, EvictionReason::Cpu)
        {
            return;
        }
        let (pending_cpus, _) = self.pending_amounts(candidates);
        let need = wait * cfg.cpu_free_factor - pending_cpus;
        if need <= 0.0 {
            return;
        }
        let min = cfg.cpu_min_task_cpus;
        let (chosen, freed) = self.pick(
            candidates,
            need,
            |c| c.measured.is_some_and(|r| r >= min),
            |c| c.cpus,
        );
        if chosen.is_empty() {
            self.notes.push(format!(
                "owners waited {wait_ms_per_s:.0} ms/s on the run queue (ratio {ratio:.2}) but no \
                 revocable task uses {min:.2} cpus or more: nothing to evict for cpu"
            ));
            return;
        }
        let cause = format!(
            "owners waited {wait_ms_per_s:.0} ms/s on the run queue (ratio {ratio:.2} > {:.2}); \
             evicting {} youngest revocable {} holding {freed:.1} cpus to free {need:.1}",
            cfg.runq_wait_ratio,
            chosen.len(),
            plural(chosen.len()),
        );
        self.record(now, EvictionReason::Cpu, &chosen, cause, out);
    }

    fn slack_rule(
        &mut self,
        now: Duration,
        slack: &SlackEstimate,
        candidates: &[Candidate<'_>],
        out: &mut Vec<Eviction>,
    ) {
        let tol = 1.0 + self.config.slack_tolerance;
        let (limit_cpus, limit_mem) = (sane(slack.cpus) * tol, sane(slack.mem_mb) * tol);
        let live: Vec<&Candidate<'_>> = candidates
            .iter()
            .filter(|c| !self.evicted.contains_key(&c.task.id))
            .collect();
        let mut cpus: f64 = live.iter().map(|c| sane(c.task.allocated_cpus)).sum();
        let mut mem: f64 = live.iter().map(|c| sane(c.task.allocated_mem_mb)).sum();
        if cpus <= limit_cpus && mem <= limit_mem {
            return;
        }
        let before = (cpus, mem);
        let mut chosen = Vec::new();
        for c in live {
            if cpus <= limit_cpus && mem <= limit_mem {
                break;
            }
            cpus -= sane(c.task.allocated_cpus);
            mem -= sane(c.task.allocated_mem_mb);
            chosen.push(c);
        }
        let cause = format!(
            "revocable tasks hold {:.2} cpus / {:.0} MB but slack shrank to {:.2} cpus / {:.0} MB; \
             evicting {} youngest revocable {}",
            before.0,
            before.1,
            sane(slack.cpus),
            sane(slack.mem_mb),
            chosen.len(),
            plural(chosen.len()),
        );
        self.record(now, EvictionReason::Slack, &chosen, cause, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const GB: u64 = 1024 * 1024 * 1024;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn ms(m: u64) -> Duration {
        Duration::from_millis(m)
    }

    fn owner(id: &str, cpu_ns: u64, wait_ns: u64) -> OwnerUsage {
        OwnerUsage {
            id: id.into(),
            cpu_ns,
            runq_wait_ns: wait_ns,
            throttled_ns: 0,
        }
    }

    fn rev(id: &str, started: u64, cpus: f64, mem_mb: f64) -> RevocableTask {
        RevocableTask {
            id: id.into(),
            started: secs(started),
            allocated_cpus: cpus,
            allocated_mem_mb: mem_mb,
            cpu_ns: 0,
            mem_bytes: 0,
        }
    }

    /// Four revocable tasks of 1 cpu / 1024 MB started at 10, 20, 30, 40 s, each measured
    /// at `rate` cpus (from `t` seconds of running) and 512 MB.
    fn batch(t: u64, rate: f64) -> Vec<RevocableTask> {
        (1..=4)
            .map(|i| RevocableTask {
                cpu_ns: (t as f64 * rate * 1e9) as u64,
                mem_bytes: GB / 2,
                ..rev(&format!("b{i}"), i * 10, 1.0, 1024.0)
            })
            .collect()
    }

    /// Tighter cpu thresholds than the defaults, so the rule's arithmetic shows with small
    /// numbers.
    fn controller() -> QosController {
        QosController::new(QosConfig {
            runq_wait_ratio: 0.10,
            runq_wait_min_ms_per_s: 20.0,
            ..QosConfig::default()
        })
        .expect("valid config")
    }

    fn ids(ev: &[Eviction]) -> Vec<&str> {
        ev.iter().map(|e| e.id.as_str()).collect()
    }

    /// Two samples 1 s apart where the owner ran `cpu` cpus and waited `wait` cpus and the
    /// batch tasks ran `rate` cpus each; returns the second sample's evictions.
    fn contended(q: &mut QosController, cpu: f64, wait: f64, rate: f64) -> Vec<Eviction> {
        let input = |t: u64| QosInput {
            now: secs(t),
            owners: vec![owner(
                "svc",
                (t as f64 * cpu * 1e9) as u64,
                (t as f64 * wait * 1e9) as u64,
            )],
            revocable: batch(t, rate),
            ..QosInput::default()
        };
        let first = q.evaluate(&input(1));
        assert!(first.is_empty(), "no rates yet: {first:?}");
        q.evaluate(&input(2))
    }

    #[test]
    fn cpu_contention_evicts_youngest_until_wait_is_covered() {
        // check(owner cpu, owner wait, batch cpu rate, expected evictions)
        fn check(cpu: f64, wait: f64, rate: f64, want: &[&str]) {
            let mut q = controller();
            let ev = contended(&mut q, cpu, wait, rate);
            assert_eq!(ids(&ev), want, "cpu {cpu} wait {wait} rate {rate}");
            assert!(ev.iter().all(|e| e.reason == EvictionReason::Cpu));
        }
        // wait 0.5 cpus × 1.5 = 0.75 cpus to free: one 0.9-cpu task covers it.
        check(2.0, 0.5, 0.9, &["b4"]);
        // wait 1.0 × 1.5 = 1.5: two tasks.
        check(2.0, 1.0, 0.9, &["b4", "b3"]);
        // Starved revocable tasks free nothing: none goes.
        check(2.0, 1.0, 0.0, &[]);
        check(2.0, 1.0, 0.04, &[]);
        check(2.0, 1.0, 0.05, &["b4", "b3", "b2", "b1"]);
        // Below the absolute floor (15 ms/s) or the ratio (0.05 / 2.05 < 0.10): nothing.
        check(2.0, 0.015, 0.9, &[]);
        check(2.0, 0.05, 0.9, &[]);
    }

    #[test]
    fn cpu_cause_has_the_numbers() {
        let mut q = controller();
        let ev = contended(&mut q, 0.43, 0.31, 0.9);
        assert_eq!(ids(&ev), ["b4"]);
        assert_eq!(
            ev[0].cause,
            "owners waited 310 ms/s on the run queue (ratio 0.42 > 0.10); evicting 1 youngest \
             revocable task holding 0.9 cpus to free 0.5"
        );
        assert_eq!(ev[0].reason.as_str(), "cpu_contention");
    }

    #[test]
    fn cpu_rule_skips_starved_tasks_and_says_so() {
        let mut q = controller();
        let mk = |t: u64| QosInput {
            now: secs(t),
            owners: vec![owner("svc", t * 2_000_000_000, t * 1_000_000_000)],
            revocable: batch(t, 1.0)
                .into_iter()
                .map(|mut r| {
                    if r.id != "b2" {
                        r.cpu_ns = 0; // starved
                    }
                    r
                })
                .collect(),
            ..QosInput::default()
        };
        assert!(q.evaluate(&mk(1)).is_empty());
        // Only b2 does any work: it goes, the younger starved b3 and b4 stay.
        let ev = q.evaluate(&mk(2));
        assert_eq!(ids(&ev), ["b2"]);
        assert!(q.take_notes().is_empty());
        // Past the cooldown, b2 still dying counts as 1 cpu freed; 0.5 more is needed but
        // nobody left is measurable: nothing, and a note says why.
        let ev = q.evaluate(&mk(3));
        assert!(ev.is_empty(), "{ev:?}");
        let notes = q.take_notes();
        assert_eq!(notes.len(), 1);
        assert!(
            notes[0].contains("no revocable task uses 0.05 cpus"),
            "{notes:?}"
        );
    }

    #[test]
    fn cpu_rule_waits_for_a_new_task_first_rate() {
        let mut q = controller();
        let mut input = QosInput {
            now: secs(1),
            owners: vec![owner("svc", 0, 0)],
            revocable: vec![rev("old", 1, 1.0, 100.0)],
            ..QosInput::default()
        };
        assert!(q.evaluate(&input).is_empty());
        input.now = secs(2);
        input.owners = vec![owner("svc", 1_000_000_000, 500_000_000)];
        // 0.75 cpus to free; "new" just started (no rate): "old" (1 cpu) goes.
        input.revocable = vec![rev("old", 1, 1.0, 100.0), rev("new", 2, 0.5, 100.0)];
        input.revocable[0].cpu_ns = 1_000_000_000;
        let ev = q.evaluate(&input);
        assert_eq!(ids(&ev), ["old"]);
    }

    #[test]
    fn throttled_time_is_not_contention() {
        // check(owner wait s/s, of which throttled s/s, expected)
        fn check(wait: f64, throttled: f64, want: &[&str]) {
            let mut q = controller();
            let mk = |t: u64| QosInput {
                now: secs(t),
                owners: vec![OwnerUsage {
                    throttled_ns: (t as f64 * throttled * 1e9) as u64,
                    ..owner("svc", t * 250_000_000, (t as f64 * wait * 1e9) as u64)
                }],
                revocable: batch(t, 1.0),
                ..QosInput::default()
            };
            assert!(q.evaluate(&mk(1)).is_empty());
            assert_eq!(
                ids(&q.evaluate(&mk(2))),
                want,
                "wait {wait} throttled {throttled}"
            );
        }
        // A burner at its 0.25-cpu quota: runnable all the time, throttled 75 %.
        check(0.75, 0.75, &[]);
        // Half of it is real contention: 0.5 × 1.5 = 0.75 cpus to free.
        check(0.75, 0.25, &["b4"]);
        // Throttled more than waited (counters from different sources): no negative wait.
        check(0.1, 0.9, &[]);
    }

    #[test]
    fn memory_pressure_evicts_until_deficit_and_margin_are_covered() {
        // check(available MB, psi, expected)
        fn check(available: Option<f64>, psi: Option<f64>, want: &[&str]) {
            let mut q = controller();
            let ev = q.evaluate(&QosInput {
                now: secs(5),
                revocable: batch(5, 1.0),
                mem_available_mb: available,
                mem_psi_some_avg10: psi,
                ..QosInput::default()
            });
            assert_eq!(ids(&ev), want, "available {available:?} psi {psi:?}");
            assert!(ev.iter().all(|e| e.reason == EvictionReason::Memory));
        }
        // Each task holds 512 MB.
        check(Some(200.0), None, &["b4"]); // 56 + 64 MB
        check(Some(-1000.0), None, &["b4", "b3", "b2"]); // 1256 + 64 MB
        check(Some(300.0), Some(25.0), &["b4"]); // PSI alone: the margin, at least one
        check(Some(300.0), Some(5.0), &[]);
        check(None, None, &[]);
        check(Some(f64::NAN), Some(f64::INFINITY), &[]);
        let mut q = QosController::new(QosConfig {
            mem_psi_some_avg10_max: None,
            ..QosConfig::default()
        })
        .expect("valid config");
        let ev = q.evaluate(&QosInput {
            now: secs(5),
            revocable: batch(5, 1.0),
            mem_psi_some_avg10: Some(90.0),
            ..QosInput::default()
        });
        assert!(ev.is_empty(), "PSI disabled: {ev:?}");
    }

    #[test]
    fn memory_cause_has_the_numbers() {
        let mut q = controller();
        let ev = q.evaluate(&QosInput {
            now: secs(5),
            revocable: batch(5, 1.0),
            mem_available_mb: Some(100.0),
            mem_psi_some_avg10: Some(23.14),
            ..QosInput::default()
        });
        assert_eq!(
            ev[0].cause,
            "memory available 100 MB < 256 MB, memory PSI some avg10 23.1 > 10.0; evicting 1 \
             youngest revocable task holding 512 MB to free 220 MB"
        );
        assert_eq!(ev[0].reason.to_string(), "memory_pressure");
    }

    #[test]
    fn slack_shrink_evicts_until_allocations_fit() {
        // check(slack cpus, slack mem, expected)
        fn check(cpus: f64, mem_mb: f64, want: &[&str]) {
            let mut q = controller();
            let ev = q.evaluate(&QosInput {
                now: secs(5),
                revocable: batch(5, 1.0),
                slack: Some(SlackEstimate {
                    cpus,
                    mem_mb,
                    used_cpus: 1.0,
                    used_mem_mb: 1.0,
                }),
                ..QosInput::default()
            });
            assert_eq!(ids(&ev), want, "slack {cpus} / {mem_mb}");
            assert!(ev.iter().all(|e| e.reason == EvictionReason::Slack));
        }
        // 4 tasks × (1 cpu, 1024 MB); tolerance 5 %.
        check(4.0, 4096.0, &[]);
        check(3.85, 4096.0, &[]); // 4 ≤ 3.85 × 1.05
        check(3.5, 4096.0, &["b4"]);
        check(4.0, 2000.0, &["b4", "b3"]);
        check(0.0, 0.0, &["b4", "b3", "b2", "b1"]);
        check(f64::NAN, 8192.0, &["b4", "b3", "b2", "b1"]);
    }

    #[test]
    fn slack_cause_has_the_numbers() {
        let mut q = controller();
        let ev = q.evaluate(&QosInput {
            now: secs(5),
            revocable: batch(5, 1.0),
            slack: Some(SlackEstimate {
                cpus: 2.5,
                mem_mb: 8000.0,
                used_cpus: 1.0,
                used_mem_mb: 1.0,
            }),
            ..QosInput::default()
        });
        assert_eq!(ids(&ev), ["b4", "b3"]);
        assert_eq!(
            ev[0].cause,
            "revocable tasks hold 4.00 cpus / 4096 MB but slack shrank to 2.50 cpus / 8000 MB; \
             evicting 2 youngest revocable tasks"
        );
    }

    #[test]
    fn cooldown_then_evicted_tasks_count_as_gone() {
        let mut q = controller();
        // Owner waits 1 cpu per s for ever; batch runs at 0.5 cpus per task.
        let input = |now: Duration, revocable: Vec<RevocableTask>| {
            let s = now.as_secs_f64();
            QosInput {
                now,
                owners: vec![owner("svc", (s * 2e9) as u64, (s * 1e9) as u64)],
                revocable,
                ..QosInput::default()
            }
        };
        assert!(q.evaluate(&input(secs(1), batch(1, 0.5))).is_empty());
        // 1.5 cpus to free → b4, b3, b2 (0.5 each).
        let ev = q.evaluate(&input(secs(2), batch(2, 0.5)));
        assert_eq!(ids(&ev), ["b4", "b3", "b2"]);
        // 0.5 s later, still contended, kills not done: cooldown.
        let ev = q.evaluate(&input(ms(2500), batch(2, 0.5)));
        assert!(ev.is_empty(), "{ev:?}");
        // 1 s later, kills still not done: the 1.5 cpus they free cover the need.
        let ev = q.evaluate(&input(secs(3), batch(3, 0.5)));
        assert!(ev.is_empty(), "{ev:?}");
        // The kills are done but the owner still suffers: the last one goes.
        let ev = q.evaluate(&input(secs(4), batch(4, 0.5)[..1].to_vec()));
        assert_eq!(ids(&ev), ["b1"]);
    }

    #[test]
    fn an_evicted_task_is_never_returned_twice_while_present() {
        let mut q = controller();
        let slack = |cpus| {
            Some(SlackEstimate {
                cpus,
                mem_mb: 1e6,
                used_cpus: 0.0,
                used_mem_mb: 0.0,
            })
        };
        let input = |t: u64, s| QosInput {
            now: secs(t),
            revocable: batch(t, 1.0),
            mem_available_mb: Some(100.0),
            slack: s,
            ..QosInput::default()
        };
        // Memory evicts b4; the slack rule counts it gone and needs only b3 more.
        let ev = q.evaluate(&input(1, slack(2.5)));
        assert_eq!(
            ev.iter()
                .map(|e| (e.id.as_str(), e.reason))
                .collect::<Vec<_>>(),
            [
                ("b4", EvictionReason::Memory),
                ("b3", EvictionReason::Slack)
            ]
        );
        // Same pressure next second: b4 still dying covers the memory need; nothing twice.
        let ev = q.evaluate(&input(2, slack(2.5)));
        assert!(ev.is_empty(), "{ev:?}");
        assert_eq!(q.pending().count(), 2);
        // b4 disappears then comes back (same id, new task): it is a candidate again.
        let mut tasks = batch(3, 1.0);
        tasks.remove(3);
        q.evaluate(&QosInput {
            now: secs(3),
            revocable: tasks,
            ..QosInput::default()
        });
        let ev = q.evaluate(&input(4, slack(2.5)));
        assert_eq!(ids(&ev), ["b4"], "b3 still counted as gone");
    }

    #[test]
    fn bad_counters_and_clock_jumps_never_give_bogus_evictions() {
        let mut q = controller();
        let mk = |now: Duration, cpu: u64, wait: u64| QosInput {
            now,
            owners: vec![owner("svc", cpu, wait), owner("svc", cpu, wait)],
            revocable: batch(1, 1.0),
            ..QosInput::default()
        };
        assert!(q
            .evaluate(&mk(secs(10), 10_000_000_000, 5_000_000_000))
            .is_empty());
        // Counters reset: no rate (no negative wait), re-baseline.
        assert!(q.evaluate(&mk(secs(11), 0, 0)).is_empty());
        // Same instant: no rate.
        assert!(q.evaluate(&mk(secs(11), 1, 900_000_000_000)).is_empty());
        // Clock back: baselines dropped, nothing measured this round.
        assert!(q
            .evaluate(&mk(secs(2), 2_000_000_000, 900_000_000_000))
            .is_empty());
        // Measured again from the new baseline: owner ran 1 cpu, waited 0 → fine.
        assert!(q
            .evaluate(&mk(secs(3), 3_000_000_000, 900_000_000_000))
            .is_empty());
        // Vanished owner is forgotten.
        q.evaluate(&QosInput {
            now: secs(4),
            ..QosInput::default()
        });
        assert!(q.owners.is_empty() && q.revocable.is_empty());
    }

    #[test]
    fn invalid_configs_are_refused_with_a_reason() {
        fn check(cfg: QosConfig, want: &str) {
            let err = QosController::new(cfg).expect_err("must be refused");
            assert!(err.to_string().contains(want), "{err}");
        }
        let d = QosConfig::default;
        check(
            QosConfig {
                runq_wait_ratio: 0.0,
                ..d()
            },
            "ratio",
        );
        check(
            QosConfig {
                runq_wait_ratio: f64::NAN,
                ..d()
            },
            "ratio",
        );
        check(
            QosConfig {
                runq_wait_min_ms_per_s: -1.0,
                ..d()
            },
            "ms/s",
        );
        check(
            QosConfig {
                mem_available_min_mb: f64::NAN,
                ..d()
            },
            "available memory",
        );
        check(
            QosConfig {
                mem_margin_mb: f64::INFINITY,
                ..d()
            },
            "margin",
        );
        check(
            QosConfig {
                slack_tolerance: -0.1,
                ..d()
            },
            "slack tolerance",
        );
        check(
            QosConfig {
                cpu_free_factor: 0.5,
                ..d()
            },
            "free factor",
        );
        check(
            QosConfig {
                cpu_min_task_cpus: -1.0,
                ..d()
            },
            "min task cpus",
        );
        check(
            QosConfig {
                mem_psi_some_avg10_max: Some(101.0),
                ..d()
            },
            "PSI",
        );
        check(
            QosConfig {
                mem_psi_some_avg10_max: Some(f64::NAN),
                ..d()
            },
            "PSI",
        );
        assert!(d().validate().is_ok());
        assert_eq!(
            EvictionReason::ALL.map(EvictionReason::as_str),
            ["cpu_contention", "memory_pressure", "slack_shrink"]
        );
    }

    #[derive(Debug, Clone)]
    struct Round {
        dt_ms: i64,
        owner_cpu_ms: u32,
        owner_wait_ms: u32,
        owner_reset: bool,
        /// Which of 6 revocable tasks are present.
        present: Vec<bool>,
        alloc: f64,
        task_cpu_ms: u32,
        task_reset: bool,
        mem_available: Option<f64>,
        psi: Option<f64>,
        slack: Option<f64>,
    }

    fn arb_f64() -> impl Strategy<Value = f64> {
        prop_oneof![
            4 => -100.0f64..10_000.0,
            1 => Just(f64::NAN),
            1 => Just(f64::INFINITY),
            1 => Just(f64::NEG_INFINITY),
        ]
    }

    fn arb_round() -> impl Strategy<Value = Round> {
        (
            (
                prop_oneof![4 => 0i64..3_000, 1 => -5_000i64..0, 1 => Just(600_000i64)],
                0u32..4_000,
                0u32..4_000,
                proptest::bool::weighted(0.1),
            ),
            (
                proptest::collection::vec(proptest::bool::weighted(0.8), 6),
                arb_f64(),
                0u32..2_000,
                proptest::bool::weighted(0.1),
            ),
            (
                proptest::option::of(arb_f64()),
                proptest::option::of(arb_f64()),
                proptest::option::of(arb_f64()),
            ),
        )
            .prop_map(
                |(
                    (dt_ms, owner_cpu_ms, owner_wait_ms, owner_reset),
                    (present, alloc, task_cpu_ms, task_reset),
                    (mem_available, psi, slack),
                )| Round {
                    dt_ms,
                    owner_cpu_ms,
                    owner_wait_ms,
                    owner_reset,
                    present,
                    alloc,
                    task_cpu_ms,
                    task_reset,
                    mem_available,
                    psi,
                    slack,
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// No panic on any input; only present tasks are evicted; never twice while present;
        /// each round's evictions are younger than every task left; no cpu or memory
        /// eviction inside the cooldown.
        #[test]
        fn decisions_stay_sane(rounds in proptest::collection::vec(arb_round(), 1..80)) {
            let mut q = controller();
            let mut now = secs(1_000);
            let (mut ocpu, mut owait) = (0u64, 0u64);
            let mut tcpu = [0u64; 6];
            let mut evicted: HashSet<String> = HashSet::new();
            let mut last: HashMap<EvictionReason, Duration> = HashMap::new();
            let mut prev_now = now;
            for r in rounds {
                now = if r.dt_ms >= 0 {
                    now + ms(r.dt_ms as u64)
                } else {
                    now.saturating_sub(ms(r.dt_ms.unsigned_abs()))
                };
                if r.owner_reset { (ocpu, owait) = (0, 0) }
                ocpu += u64::from(r.owner_cpu_ms) * 1_000_000;
                owait += u64::from(r.owner_wait_ms) * 1_000_000;
                let mut revocable = Vec::new();
                for (i, p) in r.present.iter().enumerate() {
                    if r.task_reset { tcpu[i] = 0 }
                    tcpu[i] += u64::from(r.task_cpu_ms) * 1_000_000;
                    if *p {
                        revocable.push(RevocableTask {
                            id: format!("r{i}"),
                            started: secs(i as u64 % 3),
                            allocated_cpus: r.alloc,
                            allocated_mem_mb: r.alloc * 100.0,
                            cpu_ns: tcpu[i],
                            mem_bytes: tcpu[i] / 10,
                        });
                    } else {
                        evicted.remove(&format!("r{i}"));
                    }
                }
                let input = QosInput {
                    now,
                    owners: vec![owner("svc", ocpu, owait)],
                    revocable: revocable.clone(),
                    mem_available_mb: r.mem_available,
                    mem_psi_some_avg10: r.psi,
                    slack: r.slack.map(|s| SlackEstimate {
                        cpus: s / 100.0,
                        mem_mb: s,
                        used_cpus: 0.0,
                        used_mem_mb: 0.0,
                    }),
                };
                let ev = q.evaluate(&input);
                if now < prev_now { last.clear() }
                prev_now = now;
                for e in &ev {
                    prop_assert!(revocable.iter().any(|t| t.id == e.id), "{} not present", e.id);
                    prop_assert!(evicted.insert(e.id.clone()), "{} evicted twice", e.id);
                    prop_assert!(!e.cause.is_empty());
                    if e.reason != EvictionReason::Slack {
                        if let Some(at) = last.get(&e.reason) {
                            prop_assert!(now - *at >= q.config.cooldown, "{:?} in cooldown", e.reason);
                        }
                    }
                }
                for e in &ev { last.insert(e.reason, now); }
                let rank = |t: &RevocableTask| (t.started, t.id.clone());
                // The cpu rule skips starved tasks; memory and slack take the youngest.
                let oldest_evicted = ev
                    .iter()
                    .filter(|e| e.reason != EvictionReason::Cpu)
                    .filter_map(|e| revocable.iter().find(|t| t.id == e.id))
                    .map(rank)
                    .min();
                if let Some(oldest) = oldest_evicted {
                    for t in revocable.iter().filter(|t| !evicted.contains(&t.id)) {
                        prop_assert!(rank(t) < oldest, "{} left but younger than an evicted task", t.id);
                    }
                }
            }
        }
    }
}
