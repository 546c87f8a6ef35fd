//! Slack estimation: how much of what the owners (non-revocable tasks) hold they do not use,
//! so the master can lend it out as revocable resources.
//!
//! Pure code: no I/O and no clock. Time is the `now: Duration` parameter of
//! [`SlackEstimator::observe`] (since an arbitrary epoch chosen by the caller); the caller
//! feeds one observation per telemetry sample (≈ 1 s).
//!
//! # Semantics
//!
//! - **Usage.** CPU use of a task is the rate of its cumulative `cpu_ns` counter between two
//!   observations (cpus = ns of cpu per ns of wall), memory is its current `mem_bytes`. Every
//!   observation later than the previous one adds one aggregate sample (sum over the non-revocable tasks)
//!   to a sliding window of [`SlackConfig::window`]. A task whose rate is unknown this round
//!   (new, or counter reset) counts with its last known rate, or its allocation if it never
//!   had one: an unmeasured owner is assumed busy. A sample with such an allocation stand-in
//!   is used as the latest sample only (it can shrink slack at once) and is not stored in
//!   the window, so a new owner does not hold slack down for a whole window.
//! - **Estimate.** Per resource `used = max(percentile of the window, latest sample) × margin`
//!   and `revocable = max(0, allocated_nonrevocable − used)`, plus `max(0, total −
//!   allocated_nonrevocable)` when [`SlackConfig::include_unallocated`], capped at the
//!   agent total. Revocable tasks never count: neither their usage (they are what slack is
//!   lent to) nor their allocation (it is drawn from the revocable pool itself, which the
//!   master accounts for).
//! - **Hysteresis, in the safe direction.** Because of the `max` with the latest sample, a
//!   usage jump shrinks slack at once; slack grows back only as the window forgets high
//!   samples, and growth is further smoothed (EWMA with [`SlackConfig::growth_alpha`]).
//!   Shrinks are never smoothed.
//! - **Publication.** [`SlackEstimator::observe`] returns `Some` when the estimate should be
//!   sent to the master: the first time the window holds [`SlackConfig::min_samples`]
//!   samples; then when cpus or mem grew by at least `min_change_*`, or shrank by at least
//!   half of `min_change_*` (shrinks matter for safety, so they publish at half the
//!   threshold), or dropped to zero from anything above. A shrink is published even when the
//!   window is thin again (after a long gap), growth only with `min_samples` samples.
//! - **Bad input.** Gaps are fine (the rate spans the gap; samples older than the window are
//!   dropped). A counter going backwards is a new task (no negative rate). A clock going
//!   backwards drops every rate baseline and re-stamps the window's samples to `now` (they
//!   age out one window later; high samples are kept, which is the safe side). Tasks missing
//!   from an observation are forgotten. Allocations that are NaN, infinite or negative count
//!   as 0; a non-finite or negative total yields zero slack.
//!
//! Architecture Invariant: nothing in this module does I/O or reads a clock.
//! Architecture Invariant: every estimate satisfies `0 ≤ cpus ≤ total cpus`,
//! `0 ≤ mem_mb ≤ total mem` and all its fields are finite.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use serde::{Deserialize, Serialize};

const MB: f64 = 1024.0 * 1024.0;

/// Knobs of the [`SlackEstimator`]; [`SlackConfig::default`] gives the documented defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct SlackConfig {
    /// How far back usage samples are remembered (default 60 s).
    pub window: Duration,
    /// Percentile of the window taken as the usage estimate, in (0, 1] (default 0.95).
    pub percentile: f64,
    /// Safety multiplier on usage, ≥ 1 (default 1.2).
    pub margin: f64,
    /// Also lend out capacity no owner holds (default false).
    pub include_unallocated: bool,
    /// Growth in cpus that is worth publishing (default 0.1).
    pub min_change_cpus: f64,
    /// Growth in MB of memory that is worth publishing (default 64).
    pub min_change_mem_mb: f64,
    /// Samples the window needs before anything is published (default 3).
    pub min_samples: usize,
    /// EWMA weight of a growth step, in (0, 1]; 1 = no smoothing (default 0.5).
    pub growth_alpha: f64,
}

impl Default for SlackConfig {
    fn default() -> Self {
        SlackConfig {
            window: Duration::from_secs(60),
            percentile: 0.95,
            margin: 1.2,
            include_unallocated: false,
            min_change_cpus: 0.1,
            min_change_mem_mb: 64.0,
            min_samples: 3,
            growth_alpha: 0.5,
        }
    }
}

/// Why a [`SlackConfig`] was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SlackConfigError {
    #[error("slack window must be longer than zero (got {0:?})")]
    Window(Duration),
    #[error("slack percentile must be in (0, 1], e.g. 0.95 (got {0})")]
    Percentile(f64),
    #[error("slack margin must be a finite number ≥ 1, e.g. 1.2 (got {0})")]
    Margin(f64),
    #[error("slack min change for {resource} must be a finite number ≥ 0 (got {value})")]
    MinChange { resource: &'static str, value: f64 },
    #[error("slack min samples must be at least 1 (got 0)")]
    MinSamples,
    #[error("slack growth alpha must be in (0, 1]; 1 disables smoothing (got {0})")]
    GrowthAlpha(f64),
}

impl SlackConfig {
    /// Checks every knob; the error says which one and what is accepted.
    pub fn validate(&self) -> Result<(), SlackConfigError> {
        if self.window.is_zero() {
            return Err(SlackConfigError::Window(self.window));
        }
        if !(self.percentile > 0.0 && self.percentile <= 1.0) {
            return Err(SlackConfigError::Percentile(self.percentile));
        }
        if !(self.margin.is_finite() && self.margin >= 1.0) {
            return Err(SlackConfigError::Margin(self.margin));
        }
        for (resource, value) in [
            ("cpus", self.min_change_cpus),
            ("mem", self.min_change_mem_mb),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(SlackConfigError::MinChange { resource, value });
            }
        }
        if self.min_samples == 0 {
            return Err(SlackConfigError::MinSamples);
        }
        if !(self.growth_alpha > 0.0 && self.growth_alpha <= 1.0) {
            return Err(SlackConfigError::GrowthAlpha(self.growth_alpha));
        }
        Ok(())
    }
}

/// The agent's schedulable totals (what it registered with).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AgentTotals {
    pub cpus: f64,
    pub mem_mb: f64,
}

/// One task as seen by one observation.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskUsage {
    pub id: String,
    /// Runs on revocable resources (lent slack): neither its usage nor its allocation counts.
    pub revocable: bool,
    pub allocated_cpus: f64,
    pub allocated_mem_mb: f64,
    /// Cumulative CPU time, ns.
    pub cpu_ns: u64,
    /// Current memory use, bytes.
    pub mem_bytes: u64,
}

/// What the agent can lend out, and the usage estimate it was derived from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlackEstimate {
    /// Revocable cpus.
    pub cpus: f64,
    /// Revocable memory, MB.
    pub mem_mb: f64,
    /// The owners' usage estimate, cpus: `max(percentile, latest) × margin`.
    pub used_cpus: f64,
    /// The owners' usage estimate, MB: `max(percentile, latest) × margin`.
    pub used_mem_mb: f64,
}

#[derive(Debug, Clone, Copy)]
struct Baseline {
    at: Duration,
    cpu_ns: u64,
}

#[derive(Debug, Clone, Copy)]
struct TaskTrack {
    /// `None` after a counter reset or clock jump: the next observation re-baselines.
    baseline: Option<Baseline>,
    /// Last measured rate (cpus), kept across resets.
    rate: Option<f64>,
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Duration,
    cpus: f64,
    mem_mb: f64,
}

/// Estimates revocable slack from a stream of observations. See the module docs.
#[derive(Debug, Clone)]
pub struct SlackEstimator {
    config: SlackConfig,
    tasks: HashMap<String, TaskTrack>,
    window: VecDeque<Sample>,
    last_now: Option<Duration>,
    /// Smoothed (cpus, mem) slack: shrinks at once, grows by EWMA.
    smoothed: Option<(f64, f64)>,
    current: Option<SlackEstimate>,
    published: Option<SlackEstimate>,
}

/// `x` if it is a finite non-negative number, else 0.
fn sane(x: f64) -> f64 {
    if x.is_finite() && x > 0.0 {
        x
    } else {
        0.0
    }
}

/// Nearest-rank percentile of `values`, `p` in (0, 1]; 0 when empty.
fn percentile(values: &mut [f64], p: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return 0.0;
    }
    let rank = (p * n as f64).ceil() as usize;
    values[rank.clamp(1, n) - 1]
}

impl SlackEstimator {
    /// A new estimator; refuses an invalid configuration.
    pub fn new(config: SlackConfig) -> Result<Self, SlackConfigError> {
        config.validate()?;
        Ok(SlackEstimator {
            config,
            tasks: HashMap::new(),
            window: VecDeque::new(),
            last_now: None,
            smoothed: None,
            current: None,
            published: None,
        })
    }

    pub fn config(&self) -> &SlackConfig {
        &self.config
    }

    /// The latest estimate (published or not); `None` until the window first had
    /// `min_samples` samples.
    pub fn current(&self) -> Option<SlackEstimate> {
        self.current.clone()
    }

    /// The last estimate [`SlackEstimator::observe`] returned.
    pub fn published(&self) -> Option<SlackEstimate> {
        self.published.clone()
    }

    /// Samples currently in the window.
    pub fn samples(&self) -> usize {
        self.window.len()
    }

    /// Feeds one observation; returns the estimate when it should be published.
    pub fn observe(
        &mut self,
        now: Duration,
        total: AgentTotals,
        tasks: &[TaskUsage],
    ) -> Option<SlackEstimate> {
        let total_cpus = sane(total.cpus);
        let total_mem = sane(total.mem_mb);
        let clock_back = self.last_now.is_some_and(|last| now < last);
        let advanced = self.last_now.is_some_and(|last| now > last);
        if clock_back {
            for t in self.tasks.values_mut() {
                t.baseline = None;
            }
            for s in &mut self.window {
                s.at = now;
            }
        }
        self.last_now = Some(now);

        // Rates, and forget tasks that vanished.
        let mut seen: HashSet<&str> = HashSet::with_capacity(tasks.len());
        let mut used_cpus = 0.0;
        let mut used_mem = 0.0;
        let mut alloc_cpus = 0.0;
        let mut alloc_mem = 0.0;
        let mut all_known = true;
        for t in tasks.iter().filter(|t| !t.revocable) {
            if !seen.insert(t.id.as_str()) {
                continue; // a duplicate id counts once
            }
            let a_cpus = sane(t.allocated_cpus);
            alloc_cpus += a_cpus;
            alloc_mem += sane(t.allocated_mem_mb);
            let track = self.tasks.entry(t.id.clone()).or_insert(TaskTrack {
                baseline: None,
                rate: None,
            });
            match track.baseline {
                Some(b) if t.cpu_ns >= b.cpu_ns && now > b.at => {
                    let dt = (now - b.at).as_nanos() as f64;
                    let rate = (t.cpu_ns - b.cpu_ns) as f64 / dt;
                    let rate = if total_cpus > 0.0 {
                        rate.min(total_cpus)
                    } else {
                        rate
                    };
                    track.rate = Some(sane(rate));
                    track.baseline = Some(Baseline {
                        at: now,
                        cpu_ns: t.cpu_ns,
                    });
                }
                // Zero elapsed time: keep the older baseline, the next pair spans more.
                Some(b) if t.cpu_ns >= b.cpu_ns => {}
                // New task, counter reset or clock jump: start over from here.
                _ => {
                    track.baseline = Some(Baseline {
                        at: now,
                        cpu_ns: t.cpu_ns,
                    })
                }
            }
            match track.rate {
                Some(rate) => used_cpus += rate,
                None => {
                    used_cpus += a_cpus;
                    all_known = false;
                }
            }
            used_mem += t.mem_bytes as f64 / MB;
        }
        self.tasks.retain(|id, _| seen.contains(id.as_str()));

        // The first observation, one at the same instant and one after a clock jump back add
        // no sample. A sample where some owner has no rate yet (it counts with its
        // allocation) is only the latest value: it may shrink slack now, but it stays out of
        // the window so it does not hold slack down for a whole window.
        let sample = Sample {
            at: now,
            cpus: sane(used_cpus),
            mem_mb: sane(used_mem),
        };
        let mut transient = None;
        if advanced && all_known {
            self.window.push_back(sample);
        } else if advanced {
            transient = Some(sample);
        }
        let horizon = now.saturating_sub(self.config.window);
        while self.window.front().is_some_and(|s| s.at < horizon) {
            self.window.pop_front();
        }
        let latest = transient.or_else(|| self.window.back().copied())?;

        let mut cpus: Vec<f64> = self.window.iter().map(|s| s.cpus).collect();
        let mut mem: Vec<f64> = self.window.iter().map(|s| s.mem_mb).collect();
        let p = self.config.percentile;
        let est_cpus = sane(percentile(&mut cpus, p).max(latest.cpus) * self.config.margin);
        let est_mem = sane(percentile(&mut mem, p).max(latest.mem_mb) * self.config.margin);

        let mut raw_cpus = (alloc_cpus - est_cpus).max(0.0);
        let mut raw_mem = (alloc_mem - est_mem).max(0.0);
        if self.config.include_unallocated {
            raw_cpus += (total_cpus - alloc_cpus).max(0.0);
            raw_mem += (total_mem - alloc_mem).max(0.0);
        }
        let raw = (sane(raw_cpus).min(total_cpus), sane(raw_mem).min(total_mem));
        let alpha = self.config.growth_alpha;
        let grow = |old: f64, new: f64| {
            if new <= old {
                new
            } else {
                sane(old + alpha * (new - old)).min(new)
            }
        };
        let (s_cpus, s_mem) = match self.smoothed {
            Some((c, m)) => (grow(c, raw.0), grow(m, raw.1)),
            None => raw,
        };
        self.smoothed = Some((s_cpus, s_mem));
        let estimate = SlackEstimate {
            cpus: s_cpus,
            mem_mb: s_mem,
            used_cpus: est_cpus,
            used_mem_mb: est_mem,
        };

        let valid = self.window.len() >= self.config.min_samples;
        if valid || self.current.is_some() {
            self.current = Some(estimate.clone());
        }
        let publish = match &self.published {
            None => valid,
            Some(old) => {
                let (dc, dm) = (estimate.cpus - old.cpus, estimate.mem_mb - old.mem_mb);
                let (mc, mm) = (self.config.min_change_cpus, self.config.min_change_mem_mb);
                let shrink = (dc < 0.0 && dc <= -mc / 2.0)
                    || (dm < 0.0 && dm <= -mm / 2.0)
                    || (estimate.cpus == 0.0 && old.cpus > 0.0)
                    || (estimate.mem_mb == 0.0 && old.mem_mb > 0.0);
                let growth = valid && (dc >= mc || dm >= mm) && (dc > 0.0 || dm > 0.0);
                shrink || growth
            }
        };
        if publish {
            self.published = Some(estimate.clone());
            Some(estimate)
        } else {
            None
        }
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

    fn owner(id: &str, cpus: f64, mem_mb: f64, cpu_ns: u64, mem_bytes: u64) -> TaskUsage {
        TaskUsage {
            id: id.into(),
            revocable: false,
            allocated_cpus: cpus,
            allocated_mem_mb: mem_mb,
            cpu_ns,
            mem_bytes,
        }
    }

    fn totals(cpus: f64, mem_mb: f64) -> AgentTotals {
        AgentTotals { cpus, mem_mb }
    }

    /// No smoothing and publish-on-any-change, so tests see the formula directly.
    fn exact() -> SlackConfig {
        SlackConfig {
            growth_alpha: 1.0,
            min_change_cpus: 0.0,
            min_change_mem_mb: 0.0,
            ..SlackConfig::default()
        }
    }

    /// Feeds `n` observations 1 s apart of one owner holding `alloc` cpus / 4096 MB and
    /// using `use_cpus` cpus / 1 GiB, starting at `start` with counter `ns`; returns the
    /// time and counter after, and the last published estimate.
    fn run(
        est: &mut SlackEstimator,
        start: u64,
        ns: u64,
        n: u64,
        use_cpus: f64,
    ) -> (u64, u64, Option<SlackEstimate>) {
        let mut last = None;
        let mut ns = ns;
        for i in 0..n {
            let t = start + i;
            if i > 0 || start > 0 {
                ns += (use_cpus * 1e9) as u64;
            }
            let tasks = [owner("svc", 4.0, 4096.0, ns, GB)];
            if let Some(e) = est.observe(secs(t), totals(8.0, 16384.0), &tasks) {
                last = Some(e);
            }
        }
        (start + n, ns, last)
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-6
    }

    #[test]
    fn formula_allocated_minus_margin_times_usage() {
        let mut est = SlackEstimator::new(exact()).expect("valid config");
        let (_, _, e) = run(&mut est, 0, 0, 5, 1.0);
        let e = e.expect("published after min_samples");
        // used 1 cpu × 1.2 → 4 − 1.2 = 2.8; 1024 MB × 1.2 → 4096 − 1228.8.
        assert!(close(e.used_cpus, 1.2), "{e:?}");
        assert!(close(e.cpus, 2.8), "{e:?}");
        assert!(close(e.used_mem_mb, 1228.8), "{e:?}");
        assert!(close(e.mem_mb, 4096.0 - 1228.8), "{e:?}");
    }

    #[test]
    fn nothing_published_before_min_samples() {
        let mut est = SlackEstimator::new(exact()).expect("valid config");
        let mut published = Vec::new();
        let mut ns = 0;
        for t in 0..4 {
            let tasks = [owner("svc", 4.0, 4096.0, ns, GB)];
            published.push(est.observe(secs(t), totals(8.0, 16384.0), &tasks).is_some());
            ns += 1_000_000_000;
        }
        // t=0 sets baselines; samples at t=1,2,3 → valid at the third sample.
        assert_eq!(published, [false, false, false, true]);
        assert!(est.current().is_some());
    }

    #[test]
    fn unallocated_capacity_only_when_enabled() {
        for (include, want) in [(false, 2.8), (true, 6.8)] {
            let mut est = SlackEstimator::new(SlackConfig {
                include_unallocated: include,
                ..exact()
            })
            .expect("valid config");
            let (_, _, e) = run(&mut est, 0, 0, 5, 1.0);
            let e = e.expect("published");
            assert!(close(e.cpus, want), "include={include}: {e:?}");
        }
    }

    #[test]
    fn revocable_tasks_neither_use_nor_hold() {
        let mut est = SlackEstimator::new(exact()).expect("valid config");
        let mut last = None;
        for t in 0..5u64 {
            let mut batch = owner("batch", 2.0, 2048.0, t * 2_000_000_000, 2 * GB);
            batch.revocable = true;
            let tasks = [owner("svc", 4.0, 4096.0, t * 1_000_000_000, GB), batch];
            if let Some(e) = est.observe(secs(t), totals(8.0, 16384.0), &tasks) {
                last = Some(e);
            }
        }
        let e = last.expect("published");
        assert!(close(e.cpus, 2.8), "{e:?}");
    }

    #[test]
    fn usage_jump_shrinks_at_once_and_grows_back_only_as_window_forgets() {
        let cfg = SlackConfig {
            window: secs(10),
            ..exact()
        };
        let mut est = SlackEstimator::new(cfg).expect("valid config");
        let (t, ns, e) = run(&mut est, 0, 0, 12, 1.0);
        assert!(close(e.expect("published").cpus, 2.8));
        // Jump to 3 cpus: the very next observation shrinks slack to 4 − 3.6 = 0.4.
        let ns = ns + 3_000_000_000;
        let e = est
            .observe(
                secs(t),
                totals(8.0, 16384.0),
                &[owner("svc", 4.0, 4096.0, ns, GB)],
            )
            .expect("a shrink is published at once");
        assert!(close(e.cpus, 0.4), "{e:?}");
        // Back to 1 cpu: slack stays low while the high sample is in the 10 s window…
        let (t, ns, _) = run(&mut est, t + 1, ns, 9, 1.0);
        assert!(close(est.current().expect("current").cpus, 0.4));
        // …and comes back when it leaves it.
        let (_, _, e) = run(&mut est, t, ns, 3, 1.0);
        assert!(close(e.expect("growth published").cpus, 2.8));
    }

    #[test]
    fn growth_is_smoothed_shrink_is_not() {
        let cfg = SlackConfig {
            window: secs(5),
            growth_alpha: 0.5,
            min_change_cpus: 0.0,
            min_change_mem_mb: 0.0,
            ..SlackConfig::default()
        };
        let mut est = SlackEstimator::new(cfg).expect("valid config");
        let (t, ns, _) = run(&mut est, 0, 0, 10, 3.0);
        assert!(close(est.current().expect("current").cpus, 0.4));
        // Usage falls to 1 cpu; once the window forgot the 3-cpu samples the raw slack is
        // 2.8 but the published value only moves halfway per observation.
        let (t, ns, _) = run(&mut est, t, ns, 6, 1.0);
        let c1 = est.current().expect("current").cpus;
        assert!(c1 > 0.4 && c1 < 2.8, "{c1}");
        let (t, ns, _) = run(&mut est, t, ns, 1, 1.0);
        let c2 = est.current().expect("current").cpus;
        assert!(close(c2, c1 + (2.8 - c1) / 2.0), "{c1} → {c2}");
        // A jump to 3.5 cpus: straight down, no smoothing.
        let ns = ns + 3_500_000_000;
        let e = est
            .observe(
                secs(t),
                totals(8.0, 16384.0),
                &[owner("svc", 4.0, 4096.0, ns, GB)],
            )
            .expect("shrink published");
        assert!(close(e.cpus, 0.0), "{e:?}");
    }

    #[test]
    fn publication_thresholds() {
        // check(sequence of per-second cpu use, expected published flags after warm-up)
        fn check(uses: &[f64], want: &[bool]) {
            let cfg = SlackConfig {
                window: Duration::from_millis(500),
                growth_alpha: 1.0,
                min_samples: 1,
                ..SlackConfig::default()
            };
            let mut est = SlackEstimator::new(cfg).expect("valid config");
            let (t, mut ns, e) = run(&mut est, 0, 0, 2, 1.0);
            assert!(e.is_some(), "first valid estimate is published");
            let mut got = Vec::new();
            for (i, u) in uses.iter().enumerate() {
                ns += (u * 1e9) as u64;
                let tasks = [owner("svc", 4.0, 4096.0, ns, GB)];
                got.push(
                    est.observe(secs(t + i as u64), totals(8.0, 16384.0), &tasks)
                        .is_some(),
                );
            }
            assert_eq!(got, want, "uses {uses:?}");
        }
        // The window holds only the latest sample; slack = 4 − 1.2 × use.
        // A shrink of 0.06 (≥ 0.05) publishes, the growth back by 0.06 (< 0.1) does not.
        check(&[1.0, 1.05, 1.0], &[false, true, false]);
        // Growth accumulates against the last published value: +0.048, +0.084, +0.12.
        check(&[0.96, 0.93, 0.9], &[false, false, true]);
        // Shrinks below half the threshold do not publish: −0.024, −0.048.
        check(&[1.02, 1.04], &[false, false]);
        check(&[0.5], &[true]);
    }

    #[test]
    fn slack_dropping_to_zero_is_always_published() {
        let cfg = SlackConfig {
            min_change_cpus: 10.0,
            min_change_mem_mb: 100_000.0,
            growth_alpha: 1.0,
            ..SlackConfig::default()
        };
        let mut est = SlackEstimator::new(cfg).expect("valid config");
        let (t, ns, e) = run(&mut est, 0, 0, 5, 3.3); // slack 4 − 3.96 = 0.04
        assert!(e.is_some());
        let ns = ns + 4_000_000_000;
        let e = est.observe(
            secs(t),
            totals(8.0, 16384.0),
            &[owner("svc", 4.0, 4096.0, ns, GB)],
        );
        assert_eq!(e.map(|e| e.cpus), Some(0.0));
    }

    #[test]
    fn counter_reset_is_a_new_task_without_negative_rate() {
        let mut est = SlackEstimator::new(exact()).expect("valid config");
        let (t, _, _) = run(&mut est, 0, 0, 5, 1.0);
        // Counter back to 0: the last known rate (1 cpu) stands in for this round.
        est.observe(
            secs(t),
            totals(8.0, 16384.0),
            &[owner("svc", 4.0, 4096.0, 0, GB)],
        );
        let e = est.current().expect("current");
        assert!(close(e.cpus, 2.8), "{e:?}");
        let e2 = est.observe(
            secs(t + 1),
            totals(8.0, 16384.0),
            &[owner("svc", 4.0, 4096.0, 1_000_000_000, GB)],
        );
        assert!(e2.is_none(), "steady 1 cpu: nothing new to publish");
        assert!(close(est.current().expect("current").cpus, 2.8));
    }

    #[test]
    fn clock_jump_back_rebaselines_and_keeps_high_samples() {
        let cfg = SlackConfig {
            window: secs(10),
            ..exact()
        };
        let mut est = SlackEstimator::new(cfg).expect("valid config");
        let (_, ns, _) = run(&mut est, 100, 0, 5, 2.0); // slack 4 − 2.4 = 1.6
        let before = est.current().expect("current");
        // The clock goes back to 3 s: no sample, no panic, the window is kept.
        let e = est.observe(
            secs(3),
            totals(8.0, 16384.0),
            &[owner("svc", 4.0, 4096.0, ns, GB)],
        );
        assert!(e.is_none());
        assert_eq!(est.current(), Some(before));
        // Lower usage afterwards: the re-stamped 2-cpu samples hold slack down for a window.
        let (_, _, _) = run(&mut est, 4, ns, 5, 1.0);
        assert!(close(est.current().expect("current").cpus, 1.6));
        let (_, _, _) = run(&mut est, 9, ns + 5_000_000_000, 8, 1.0);
        assert!(close(est.current().expect("current").cpus, 2.8));
    }

    #[test]
    fn long_gap_drops_old_samples_and_rate_spans_the_gap() {
        let cfg = SlackConfig {
            window: secs(10),
            ..exact()
        };
        let mut est = SlackEstimator::new(cfg).expect("valid config");
        let (t, ns, _) = run(&mut est, 0, 0, 5, 3.0);
        // 100 s later, 100 cpu-seconds more: 1 cpu on average over the gap.
        let e = est.observe(
            secs(t + 99),
            totals(8.0, 16384.0),
            &[owner("svc", 4.0, 4096.0, ns + 100_000_000_000, GB)],
        );
        assert_eq!(est.samples(), 1);
        // A growth with a thin window is not published, but the estimate moves on.
        assert!(e.is_none());
        assert!(close(est.current().expect("current").cpus, 2.8));
    }

    #[test]
    fn vanished_task_is_forgotten() {
        let mut est = SlackEstimator::new(exact()).expect("valid config");
        let mut ns = 0;
        for t in 0..4u64 {
            let tasks = [
                owner("a", 2.0, 1024.0, ns, GB / 2),
                owner("b", 2.0, 1024.0, ns, GB / 2),
            ];
            est.observe(secs(t), totals(8.0, 16384.0), &tasks);
            ns += 500_000_000;
        }
        assert_eq!(est.tasks.len(), 2);
        est.observe(
            secs(4),
            totals(8.0, 16384.0),
            &[owner("a", 2.0, 1024.0, ns, GB / 2)],
        );
        assert_eq!(est.tasks.len(), 1);
        // b's allocation is gone at once; the window still holds samples of 1 cpu used by
        // both: 2 − 1.2 = 0.8.
        assert!(close(est.current().expect("current").cpus, 0.8));
    }

    #[test]
    fn unmeasured_owner_shrinks_now_but_stays_out_of_the_window() {
        let mut est = SlackEstimator::new(exact()).expect("valid config");
        let (t, ns, _) = run(&mut est, 0, 0, 5, 1.0);
        let window = est.samples();
        let tasks = [
            owner("svc", 4.0, 4096.0, ns + 1_000_000_000, GB),
            owner("new", 2.0, 1024.0, 0, 0),
        ];
        let e = est.observe(secs(t), totals(8.0, 16384.0), &tasks);
        assert!(close(e.expect("shrink published").cpus, 2.4));
        assert_eq!(est.samples(), window, "the stand-in sample is not stored");
        // Next round "new" is measured (idle): slack is back to 6 − 1.2 at once.
        let tasks = [
            owner("svc", 4.0, 4096.0, ns + 2_000_000_000, GB),
            owner("new", 2.0, 1024.0, 0, 0),
        ];
        let e = est.observe(secs(t + 1), totals(8.0, 16384.0), &tasks);
        assert!(close(e.expect("growth published").cpus, 4.8));
    }

    #[test]
    fn bad_allocations_and_totals_give_zero_not_nan() {
        let mut est = SlackEstimator::new(exact()).expect("valid config");
        for t in 0..5u64 {
            let tasks = [
                owner("nan", f64::NAN, f64::INFINITY, t, 0),
                owner("neg", -3.0, -1.0, t * 1_000_000_000, u64::MAX),
            ];
            est.observe(secs(t), totals(f64::NAN, -5.0), &tasks);
        }
        let e = est.current().expect("current");
        assert_eq!((e.cpus, e.mem_mb), (0.0, 0.0));
        assert!(e.used_cpus.is_finite() && e.used_mem_mb.is_finite());
    }

    #[test]
    fn zero_elapsed_time_gives_no_rate() {
        let mut est = SlackEstimator::new(exact()).expect("valid config");
        let (t, ns, _) = run(&mut est, 0, 0, 5, 1.0);
        let e = est.observe(
            secs(t - 1),
            totals(8.0, 16384.0),
            &[owner("svc", 4.0, 4096.0, ns + 50_000_000_000, GB)],
        );
        assert!(e.is_none());
        assert!(close(est.current().expect("current").cpus, 2.8));
        // The next pair spans from the older baseline: 51 cpu-s over 1 s → capped at 8.
        est.observe(
            secs(t),
            totals(8.0, 16384.0),
            &[owner("svc", 4.0, 4096.0, ns + 51_000_000_000, GB)],
        );
        assert_eq!(est.current().expect("current").cpus, 0.0);
    }

    #[test]
    fn invalid_configs_are_refused_with_a_reason() {
        fn check(cfg: SlackConfig, want: &str) {
            let err = SlackEstimator::new(cfg).expect_err("must be refused");
            assert!(err.to_string().contains(want), "{err}");
        }
        let d = SlackConfig::default;
        check(
            SlackConfig {
                window: Duration::ZERO,
                ..d()
            },
            "window",
        );
        check(
            SlackConfig {
                percentile: 0.0,
                ..d()
            },
            "percentile",
        );
        check(
            SlackConfig {
                percentile: 1.5,
                ..d()
            },
            "percentile",
        );
        check(
            SlackConfig {
                percentile: f64::NAN,
                ..d()
            },
            "percentile",
        );
        check(SlackConfig { margin: 0.9, ..d() }, "margin");
        check(
            SlackConfig {
                margin: f64::INFINITY,
                ..d()
            },
            "margin",
        );
        check(
            SlackConfig {
                min_change_cpus: -1.0,
                ..d()
            },
            "cpus",
        );
        check(
            SlackConfig {
                min_change_mem_mb: f64::NAN,
                ..d()
            },
            "mem",
        );
        check(
            SlackConfig {
                min_samples: 0,
                ..d()
            },
            "min samples",
        );
        check(
            SlackConfig {
                growth_alpha: 0.0,
                ..d()
            },
            "alpha",
        );
        assert!(d().validate().is_ok());
    }

    #[derive(Debug, Clone)]
    enum Step {
        /// Advance the clock by this many ms (0 = same instant).
        Tick(u64),
        /// Move the clock back by this many ms.
        Back(u64),
        /// A counter reset of task i.
        Reset(usize),
        /// Task i vanishes (until it is re-added by a later step).
        Vanish(usize),
        /// Task i uses this many milli-cpus this step.
        Use(usize, u32),
        /// Set task i's allocation (possibly nonsense).
        Alloc(usize, f64),
    }

    fn arb_step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => prop_oneof![Just(0u64), 1u64..3_000, Just(600_000)].prop_map(Step::Tick),
            1 => (1u64..200_000).prop_map(Step::Back),
            1 => (0usize..4).prop_map(Step::Reset),
            1 => (0usize..4).prop_map(Step::Vanish),
            4 => ((0usize..4), 0u32..20_000).prop_map(|(i, m)| Step::Use(i, m)),
            1 => (
                (0usize..4),
                prop_oneof![
                    Just(f64::NAN),
                    Just(f64::INFINITY),
                    Just(-1.0),
                    0.0f64..16.0
                ]
            )
                .prop_map(|(i, a)| Step::Alloc(i, a)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Whatever the sequence of gaps, resets, clock jumps, vanishing tasks and nonsense
        /// allocations: 0 ≤ slack ≤ total, everything finite, no panic.
        #[test]
        fn slack_stays_within_bounds(
            steps in proptest::collection::vec(arb_step(), 1..120),
            include_unallocated in any::<bool>(),
            revocable in proptest::collection::vec(any::<bool>(), 4),
            total_cpus in prop_oneof![Just(f64::NAN), 0.0f64..64.0],
            total_mem in prop_oneof![Just(-1.0), 0.0f64..65536.0],
        ) {
            let cfg = SlackConfig {
                window: secs(10),
                include_unallocated,
                min_samples: 1,
                ..SlackConfig::default()
            };
            let mut est = SlackEstimator::new(cfg).expect("valid config");
            let mut now = secs(1_000);
            let mut tasks: Vec<Option<TaskUsage>> = (0..4)
                .map(|i| {
                    let mut t = owner(&format!("t{i}"), 2.0, 2048.0, 0, GB);
                    t.revocable = revocable[i];
                    Some(t)
                })
                .collect();
            for step in steps {
                match step {
                    Step::Tick(ms) => now += Duration::from_millis(ms),
                    Step::Back(ms) => now = now.saturating_sub(Duration::from_millis(ms)),
                    Step::Reset(i) => if let Some(t) = &mut tasks[i] { t.cpu_ns = 0 },
                    Step::Vanish(i) => {
                        tasks[i] = match tasks[i].take() {
                            Some(_) => None,
                            None => Some(owner(&format!("t{i}"), 1.0, 512.0, 0, 0)),
                        }
                    }
                    Step::Use(i, m) => if let Some(t) = &mut tasks[i] {
                        t.cpu_ns = t.cpu_ns.saturating_add(u64::from(m) * 1_000_000);
                        t.mem_bytes = u64::from(m) * 1_000_000;
                    },
                    Step::Alloc(i, a) => if let Some(t) = &mut tasks[i] {
                        t.allocated_cpus = a;
                        t.allocated_mem_mb = a * 1024.0;
                    },
                }
                let present: Vec<TaskUsage> = tasks.iter().flatten().cloned().collect();
                let published = est.observe(now, totals(total_cpus, total_mem), &present);
                let tc = sane(total_cpus);
                let tm = sane(total_mem);
                for e in published.iter().chain(est.current().iter()) {
                    prop_assert!(e.cpus.is_finite() && e.mem_mb.is_finite(), "{:?}", e);
                    prop_assert!(e.used_cpus.is_finite() && e.used_mem_mb.is_finite(), "{:?}", e);
                    prop_assert!(e.cpus >= 0.0 && e.cpus <= tc, "{:?} total {}", e, tc);
                    prop_assert!(e.mem_mb >= 0.0 && e.mem_mb <= tm, "{:?} total {}", e, tm);
                    prop_assert!(e.used_cpus >= 0.0 && e.used_mem_mb >= 0.0, "{:?}", e);
                }
            }
        }
    }
}
