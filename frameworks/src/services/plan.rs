//! The reconciliation planner: given a service's target (instances, version, upgrade bounds)
//! and its live tasks, which tasks to kill now and how many new ones to launch. Pure; the
//! scheduler applies the plan and asks again after every change.
//!
//! Rolling restart rules (Kubernetes-style):
//! - available = tasks that are healthy and not being killed; a kill of a healthy task of an
//!   old version happens only while available stays ≥ `instances − max_unavailable`;
//! - live = tasks not being killed; a launch happens only while live stays ≤
//!   `instances + max_surge`;
//! - non-healthy old tasks are killed at once (they do not count as available), and tasks of
//!   the current version beyond `instances` are killed (non-healthy first) — that is a scale
//!   down, which the operator asked for.

use super::spec::Upgrade;

/// What the planner needs to know about one task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanTask {
    pub id: String,
    pub version: u64,
    /// RUNNING (and past `healthy_after_seconds`).
    pub healthy: bool,
    /// A kill was already sent.
    pub killing: bool,
    /// Launch order, to kill the newest first on scale down.
    pub seq: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub kill: Vec<String>,
    pub launch: u32,
}

pub fn plan(instances: u32, version: u64, upgrade: &Upgrade, tasks: &[PlanTask]) -> Plan {
    let target = instances as usize;
    let min_available = target.saturating_sub(upgrade.max_unavailable as usize);
    let max_live = target + upgrade.max_surge as usize;
    let live: Vec<&PlanTask> = tasks.iter().filter(|t| !t.killing).collect();
    let mut kill: Vec<&PlanTask> = Vec::new();

    // Scale down: current-version tasks beyond the target, unhealthy then newest first.
    let mut current: Vec<&PlanTask> = live
        .iter()
        .copied()
        .filter(|t| t.version == version)
        .collect();
    current.sort_by_key(|t| (t.healthy, std::cmp::Reverse(t.seq)));
    let excess = current.len().saturating_sub(target);
    kill.extend(current.iter().take(excess).copied());

    let mut available = live
        .iter()
        .filter(|t| t.healthy && !kill.iter().any(|k| k.id == t.id))
        .count();
    // Old versions: unhealthy ones go at once, healthy ones while availability allows.
    let mut old: Vec<&PlanTask> = live
        .iter()
        .copied()
        .filter(|t| t.version != version)
        .collect();
    old.sort_by_key(|t| (t.healthy, t.seq));
    for t in old {
        if !t.healthy {
            kill.push(t);
        } else if available > min_available {
            kill.push(t);
            available -= 1;
        }
    }

    let live_after = live.len() - kill.len();
    let current_after = current.len() - excess;
    let need = target.saturating_sub(current_after);
    let room = max_live.saturating_sub(live_after);
    Plan {
        kill: kill.into_iter().map(|t| t.id.clone()).collect(),
        launch: need.min(room) as u32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn task(id: &str, version: u64, healthy: bool) -> PlanTask {
        PlanTask {
            id: id.into(),
            version,
            healthy,
            killing: false,
            seq: id
                .trim_start_matches(char::is_alphabetic)
                .parse()
                .unwrap_or(0),
        }
    }

    fn up(max_unavailable: u32, max_surge: u32) -> Upgrade {
        Upgrade {
            max_unavailable,
            max_surge,
        }
    }

    #[test]
    fn scale_up_and_down() {
        assert_eq!(
            plan(3, 1, &up(0, 1), &[]),
            Plan {
                kill: vec![],
                launch: 3
            }
        );
        let tasks = [
            task("t1", 1, true),
            task("t2", 1, false),
            task("t3", 1, true),
        ];
        // Down to 1: the unhealthy one first, then the newest healthy.
        assert_eq!(
            plan(1, 1, &up(0, 1), &tasks),
            Plan {
                kill: vec!["t2".into(), "t3".into()],
                launch: 0
            }
        );
        assert_eq!(plan(3, 1, &up(0, 1), &tasks), Plan::default());
        assert_eq!(plan(0, 1, &up(0, 1), &tasks).kill.len(), 3);
    }

    #[test]
    fn rolling_restart_steps() {
        let old = [
            task("t1", 1, true),
            task("t2", 1, true),
            task("t3", 1, true),
        ];
        // Surge only: launch one new first, kill nothing yet.
        assert_eq!(
            plan(3, 2, &up(0, 1), &old),
            Plan {
                kill: vec![],
                launch: 1
            }
        );
        // Unavailable only: kill one old, then launch its replacement.
        assert_eq!(
            plan(3, 2, &up(1, 0), &old),
            Plan {
                kill: vec!["t1".into()],
                launch: 1
            }
        );
        // Both: one down and one extra.
        assert_eq!(
            plan(3, 2, &up(1, 1), &old),
            Plan {
                kill: vec!["t1".into()],
                launch: 2
            }
        );
        // A healthy new one lets one old go.
        let mut mid = old.to_vec();
        mid.push(task("t4", 2, true));
        assert_eq!(
            plan(3, 2, &up(0, 1), &mid),
            Plan {
                kill: vec!["t1".into()],
                launch: 1
            }
        );
        // Unhealthy old ones go at once (and free their place under the surge cap).
        let sick = [task("t1", 1, false), task("t2", 1, true)];
        assert_eq!(
            plan(2, 2, &up(0, 1), &sick),
            Plan {
                kill: vec!["t1".into()],
                launch: 2
            }
        );
    }

    /// Applies plans round after round while killed tasks end and new ones turn healthy.
    fn simulate(
        instances: u32,
        upgrade: Upgrade,
        start: Vec<(bool, bool)>,
        coin: Vec<bool>,
    ) -> Result<(), TestCaseError> {
        // Start: some tasks of version 1; the target is version 2.
        let mut seq = 0u64;
        let mut tasks: Vec<PlanTask> = start
            .iter()
            .map(|&(healthy, current)| {
                seq += 1;
                PlanTask {
                    id: format!("t{seq}"),
                    version: if current { 2 } else { 1 },
                    healthy,
                    killing: false,
                    seq,
                }
            })
            .collect();
        let min_available = instances.saturating_sub(upgrade.max_unavailable) as usize;
        let max_live = (instances + upgrade.max_surge) as usize;
        let mut coins = coin.into_iter().cycle();
        for round in 0..200 {
            // After a while the world always moves, so a periodic coin cannot starve a task.
            let force = round >= 50;
            let available = |ts: &[PlanTask]| ts.iter().filter(|t| t.healthy && !t.killing).count();
            let live = |ts: &[PlanTask]| ts.iter().filter(|t| !t.killing).count();
            let (avail_before, live_before) = (available(&tasks), live(&tasks));
            let p = plan(instances, 2, &upgrade, &tasks);
            for t in tasks.iter_mut() {
                if p.kill.contains(&t.id) {
                    prop_assert!(!t.killing, "killed twice: {}", t.id);
                    t.killing = true;
                }
            }
            prop_assert!(
                available(&tasks) >= avail_before.min(min_available),
                "availability dropped from {avail_before} to {} (floor {min_available})",
                available(&tasks)
            );
            for _ in 0..p.launch {
                seq += 1;
                tasks.push(PlanTask {
                    id: format!("t{seq}"),
                    version: 2,
                    healthy: false,
                    killing: false,
                    seq,
                });
            }
            prop_assert!(
                live(&tasks) <= live_before.max(max_live),
                "live grew to {} (was {live_before}, cap {max_live})",
                live(&tasks)
            );
            let done = tasks.len() == instances as usize
                && tasks
                    .iter()
                    .all(|t| t.version == 2 && t.healthy && !t.killing);
            if done {
                return Ok(());
            }
            // The world moves: killed tasks end, new ones become healthy (randomly).
            tasks.retain(|t| !(t.killing && (force || coins.next().unwrap_or(true))));
            for t in tasks
                .iter_mut()
                .filter(|t| !t.healthy && !t.killing && t.version == 2)
            {
                t.healthy = force || coins.next().unwrap_or(true);
            }
        }
        prop_assert!(false, "did not converge: {tasks:?}");
        Ok(())
    }

    proptest! {
        #[test]
        fn restarts_keep_bounds_and_converge(
            instances in 0u32..8,
            max_unavailable in 0u32..3,
            max_surge in 0u32..3,
            start in proptest::collection::vec((any::<bool>(), any::<bool>()), 0..10),
            coin in proptest::collection::vec(any::<bool>(), 1..16),
        ) {
            prop_assume!(max_unavailable + max_surge > 0);
            // Make the coin sequence eventually say yes, so the world does make progress.
            let mut coin = coin;
            coin.push(true);
            simulate(instances, Upgrade { max_unavailable, max_surge }, start, coin)?;
        }
    }
}
