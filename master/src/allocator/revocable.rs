//! The revocable pool: oversubscribed slack, kept apart from the DRF allocator.
//!
//! Each agent publishes a slack estimate (resources allocated to its non-revocable tasks but
//! not used by them). The pool offers that slack — and only that — to frameworks that declared
//! the `REVOCABLE_RESOURCES` capability. Revocable resources never enter the DRF allocator, so
//! they count in no fairness share and no quota (Mesos semantics).
//!
//! # Semantics
//!
//! - **Allocated.** Per agent, what each framework holds of the pool: offered, or used by its
//!   revocable tasks, until [`RevocablePool::recover`]ed (same rule as the DRF allocator).
//! - **Free** = slack − allocated (never negative). When the slack shrinks below what is
//!   allocated, [`RevocablePool::set_slack`] reports the excess so that the caller rescinds
//!   outstanding revocable offers; what tasks hold beyond the slack is the agent's QoS
//!   controller's business (it evicts).
//! - **Who gets it.** One framework per agent per cycle: among the eligible frameworks the
//!   one holding the least revocable cpus cluster-wide (then mem, then the caller's order),
//!   skipping frameworks that refused the agent, gets all of the agent's free slack. Tiny
//!   leftovers (< 0.01 cpus and < 32 MiB) are not offered.
//!
//! Architecture Invariant: nothing in this module does I/O or reads a clock; no scalar it
//! reports is negative.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use brim_proto::Resources;

use super::{is_tiny, Allocation};

#[derive(Clone, Debug, Default)]
struct PoolAgent {
    slack: Resources,
    active: bool,
    /// What each framework holds here (offered or used by revocable tasks).
    allocated: BTreeMap<String, Resources>,
}

impl PoolAgent {
    fn allocated_total(&self) -> Resources {
        let mut sum = Resources::new();
        for r in self.allocated.values() {
            sum.add(r);
        }
        sum
    }
}

/// Per-agent view of the pool, for `/state` and metrics.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PoolView {
    pub slack: Resources,
    pub allocated: Resources,
}

/// Revocable slack per agent and what frameworks hold of it.
#[derive(Debug, Default)]
pub struct RevocablePool {
    agents: HashMap<String, PoolAgent>,
    /// Refuse filters: (framework, agent) -> not offered until then.
    filters: HashMap<(String, String), Duration>,
}

impl RevocablePool {
    pub fn new() -> Self {
        RevocablePool::default()
    }

    /// An agent (re-)joins with the revocable resources its tasks hold. Its slack starts at
    /// zero until the agent publishes an estimate.
    pub fn add_agent(&mut self, agent_id: &str, used: &[(String, Resources)]) {
        let mut allocated: BTreeMap<String, Resources> = BTreeMap::new();
        for (fw, r) in used {
            if !r.is_empty() {
                allocated.entry(fw.clone()).or_default().add(r);
            }
        }
        self.agents.insert(
            agent_id.to_string(),
            PoolAgent {
                slack: Resources::new(),
                active: true,
                allocated,
            },
        );
    }

    pub fn remove_agent(&mut self, agent_id: &str) {
        self.agents.remove(agent_id);
        self.filters.retain(|(_, a), _| a != agent_id);
    }

    pub fn set_agent_active(&mut self, agent_id: &str, active: bool) {
        if let Some(a) = self.agents.get_mut(agent_id) {
            a.active = active;
        }
    }

    /// Sets the agent's slack (only its scalars count). Returns what the frameworks hold
    /// beyond the new slack (empty when everything still fits): the caller rescinds
    /// revocable offers on the agent to give it back.
    pub fn set_slack(&mut self, agent_id: &str, slack: &Resources) -> Resources {
        let Some(a) = self.agents.get_mut(agent_id) else {
            return Resources::new();
        };
        let mut scalars = Resources::new();
        for (name, v) in slack.scalars() {
            // `Resources` never holds a negative or NaN scalar.
            let _ = scalars.set_scalar(name, v);
        }
        a.slack = scalars;
        a.allocated_total().saturating_sub(&a.slack)
    }

    /// Something a framework held comes back: a declined/rescinded/expired offer, a finished
    /// revocable task, or the unused part of an accepted offer. `refuse` keeps the agent away
    /// from the framework until `now + refuse`.
    pub fn recover(
        &mut self,
        framework_id: &str,
        agent_id: &str,
        resources: &Resources,
        refuse: Option<Duration>,
        now: Duration,
    ) {
        if let Some(a) = self.agents.get_mut(agent_id) {
            if let Some(held) = a.allocated.get_mut(framework_id) {
                *held = held.saturating_sub(resources);
                if held.is_empty() || is_tiny_scalars(held) {
                    a.allocated.remove(framework_id);
                }
            }
        }
        if let Some(d) = refuse {
            if !d.is_zero() {
                self.filters
                    .insert((framework_id.to_string(), agent_id.to_string()), now + d);
            }
        }
    }

    /// The framework is gone: everything it held returns, its filters go.
    pub fn remove_framework(&mut self, framework_id: &str) {
        for a in self.agents.values_mut() {
            a.allocated.remove(framework_id);
        }
        self.filters.retain(|(f, _), _| f != framework_id);
    }

    /// Clears every filter of the framework (revive).
    pub fn revive(&mut self, framework_id: &str) {
        self.filters.retain(|(f, _), _| f != framework_id);
    }

    /// Offers free slack. `eligible` are the frameworks that may receive revocable offers now
    /// (capable, subscribed, not suppressed), in the caller's tie-break order; `agents` limits
    /// the cycle to those agents (`None`: all). Agents are walked in id order.
    pub fn allocate(
        &mut self,
        eligible: &[String],
        agents: Option<&[String]>,
        now: Duration,
    ) -> Vec<Allocation> {
        if eligible.is_empty() {
            return Vec::new();
        }
        self.filters.retain(|_, until| *until > now);
        let mut held: HashMap<&str, (f64, f64)> =
            eligible.iter().map(|f| (f.as_str(), (0.0, 0.0))).collect();
        for a in self.agents.values() {
            for (fw, r) in &a.allocated {
                if let Some(h) = held.get_mut(fw.as_str()) {
                    h.0 += r.scalar("cpus");
                    h.1 += r.scalar("mem");
                }
            }
        }
        let mut ids: Vec<String> = match agents {
            Some(list) => list
                .iter()
                .filter(|a| self.agents.contains_key(*a))
                .cloned()
                .collect(),
            None => self.agents.keys().cloned().collect(),
        };
        ids.sort();
        ids.dedup();
        let mut out = Vec::new();
        for agent_id in ids {
            let Some(a) = self.agents.get(&agent_id) else {
                continue;
            };
            if !a.active {
                continue;
            }
            let free = a.slack.saturating_sub(&a.allocated_total());
            if is_tiny(&free) {
                continue;
            }
            let pick = eligible
                .iter()
                .enumerate()
                .filter(|(_, f)| !self.filters.contains_key(&((*f).clone(), agent_id.clone())))
                .min_by(|(i, f), (j, g)| {
                    let hf = held.get(f.as_str()).copied().unwrap_or_default();
                    let hg = held.get(g.as_str()).copied().unwrap_or_default();
                    hf.0.total_cmp(&hg.0)
                        .then(hf.1.total_cmp(&hg.1))
                        .then(i.cmp(j))
                })
                .map(|(_, f)| f.clone());
            let Some(fw) = pick else {
                continue;
            };
            if let Some(h) = held.get_mut(fw.as_str()) {
                h.0 += free.scalar("cpus");
                h.1 += free.scalar("mem");
            }
            if let Some(a) = self.agents.get_mut(&agent_id) {
                a.allocated.entry(fw.clone()).or_default().add(&free);
            }
            out.push(Allocation {
                framework_id: fw,
                agent_id,
                resources: free,
                reserved: Resources::new(),
            });
        }
        out
    }

    /// Slack and what frameworks hold of it on one agent.
    pub fn agent_view(&self, agent_id: &str) -> PoolView {
        self.agents
            .get(agent_id)
            .map(|a| PoolView {
                slack: a.slack.clone(),
                allocated: a.allocated_total(),
            })
            .unwrap_or_default()
    }

    /// Cluster-wide slack and allocation (active and inactive agents).
    pub fn totals(&self) -> PoolView {
        let mut v = PoolView::default();
        for a in self.agents.values() {
            v.slack.add(&a.slack);
            v.allocated.add(&a.allocated_total());
        }
        v
    }
}

/// After subtraction fixed-point leftovers are exact, but a framework holding nothing but
/// zero scalars should not linger.
fn is_tiny_scalars(r: &Resources) -> bool {
    r.scalars().all(|(_, v)| v <= 0.0)
        && r.all_ranges().next().is_none()
        && r.all_sets().next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(s: &str) -> Resources {
        Resources::parse(s).expect("valid test resources")
    }

    fn fws(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn offers_free_slack_to_the_framework_holding_least() {
        let mut p = RevocablePool::new();
        p.add_agent("a1", &[("f1".into(), res("cpus:1;mem:100"))]);
        p.add_agent("a2", &[]);
        assert!(p.set_slack("a1", &res("cpus:3;mem:1000")).is_empty());
        p.set_slack("a2", &res("cpus:2;mem:500"));
        let out = p.allocate(&fws(&["f1", "f2"]), None, Duration::ZERO);
        assert_eq!(out.len(), 2);
        // f2 holds nothing, so it gets a1 (walked first); then f1 (1 cpu) vs f2 (2 cpus).
        assert_eq!(out[0].framework_id, "f2");
        assert_eq!(out[0].agent_id, "a1");
        assert_eq!(out[0].resources, res("cpus:2;mem:900"));
        assert_eq!(out[1].framework_id, "f1");
        assert_eq!(out[1].resources, res("cpus:2;mem:500"));
        // Everything is allocated now: nothing more to offer.
        assert!(p
            .allocate(&fws(&["f1", "f2"]), None, Duration::ZERO)
            .is_empty());
    }

    #[test]
    fn shrinking_slack_reports_the_excess() {
        let mut p = RevocablePool::new();
        p.add_agent("a1", &[]);
        p.set_slack("a1", &res("cpus:4;mem:1000"));
        let out = p.allocate(&fws(&["f1"]), None, Duration::ZERO);
        assert_eq!(out[0].resources, res("cpus:4;mem:1000"));
        let excess = p.set_slack("a1", &res("cpus:1;mem:1000"));
        assert_eq!(excess, res("cpus:3"));
        // The offer is rescinded: recovered; now the new slack is offered again.
        p.recover("f1", "a1", &out[0].resources, None, Duration::ZERO);
        let out = p.allocate(&fws(&["f1"]), None, Duration::ZERO);
        assert_eq!(out[0].resources, res("cpus:1;mem:1000"));
    }

    #[test]
    fn refuse_filters_and_revive() {
        let mut p = RevocablePool::new();
        p.add_agent("a1", &[]);
        p.set_slack("a1", &res("cpus:2;mem:200"));
        let out = p.allocate(&fws(&["f1"]), None, Duration::ZERO);
        p.recover(
            "f1",
            "a1",
            &out[0].resources,
            Some(Duration::from_secs(5)),
            Duration::ZERO,
        );
        assert!(p
            .allocate(&fws(&["f1"]), None, Duration::from_secs(1))
            .is_empty());
        assert_eq!(
            p.allocate(&fws(&["f1"]), None, Duration::from_secs(6))
                .len(),
            1
        );
        p.recover(
            "f1",
            "a1",
            &res("cpus:2;mem:200"),
            Some(Duration::from_secs(5)),
            Duration::from_secs(6),
        );
        p.revive("f1");
        assert_eq!(
            p.allocate(&fws(&["f1"]), None, Duration::from_secs(7))
                .len(),
            1
        );
    }

    #[test]
    fn inactive_agents_tiny_leftovers_and_no_eligible_frameworks_get_nothing() {
        let mut p = RevocablePool::new();
        p.add_agent("a1", &[]);
        p.set_slack("a1", &res("cpus:0.005;mem:10"));
        p.add_agent("a2", &[]);
        p.set_slack("a2", &res("cpus:1;mem:100"));
        p.set_agent_active("a2", false);
        assert!(p.allocate(&fws(&["f1"]), None, Duration::ZERO).is_empty());
        p.set_agent_active("a2", true);
        assert!(p.allocate(&[], None, Duration::ZERO).is_empty());
        let only_a1 = p.allocate(&fws(&["f1"]), Some(&fws(&["a1", "zz"])), Duration::ZERO);
        assert!(only_a1.is_empty());
        assert_eq!(
            p.allocate(&fws(&["f1"]), Some(&fws(&["a2"])), Duration::ZERO)
                .len(),
            1
        );
    }

    #[test]
    fn removing_a_framework_or_agent_returns_everything() {
        let mut p = RevocablePool::new();
        p.add_agent("a1", &[("f1".into(), res("cpus:1;mem:100"))]);
        p.set_slack("a1", &res("cpus:2;mem:200"));
        assert_eq!(p.totals().allocated, res("cpus:1;mem:100"));
        p.remove_framework("f1");
        assert_eq!(p.totals().allocated, Resources::new());
        assert_eq!(p.agent_view("a1").slack, res("cpus:2;mem:200"));
        p.remove_agent("a1");
        assert_eq!(p.totals(), PoolView::default());
        // Unknown ids are ignored, never a panic.
        p.recover("f9", "a9", &res("cpus:1"), None, Duration::ZERO);
        assert!(p.set_slack("a9", &res("cpus:1")).is_empty());
    }
}
