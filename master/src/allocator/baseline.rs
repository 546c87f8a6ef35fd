//! A straightforward reference allocator, the approach of the Mesos hierarchical allocator:
//! for every agent, compute every role's share from scratch, sort all roles, and for each
//! role in that order sort its frameworks, then offer the agent to the first framework that
//! may have it.
//!
//! It decides exactly like [`Allocator`](super::Allocator) (same semantics, same tie-breaks)
//! but costs O(agents · (roles · log roles + frameworks)) per cycle. It exists as an oracle
//! for tests and as the reference point of `cargo xtask bench allocator`; do not use it in
//! the master.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use brim_proto::Resources;

use super::{
    at_limit, capped_offer, guarantee_unmet, is_tiny, milli, share, Allocation, AllocatorConfig,
    Quota, DEFAULT_ROLE,
};

#[derive(Clone, Debug)]
struct Agent {
    id: String,
    total: Resources,
    free: Resources,
    active: bool,
    allocs: BTreeMap<String, Resources>,
}

#[derive(Clone, Debug)]
struct Framework {
    id: String,
    role: String,
    added: bool,
    active: bool,
    suppressed: bool,
    allocated: Resources,
    filters: HashMap<String, Duration>,
}

#[derive(Clone, Debug)]
struct Role {
    name: String,
    weight: f64,
    quota: Option<Quota>,
    allocated: Resources,
}

/// The reference allocator; same API as [`Allocator`](super::Allocator).
#[derive(Clone, Debug)]
pub struct BaselineAllocator {
    config: AllocatorConfig,
    /// In registration order.
    agents: Vec<Agent>,
    /// In registration order.
    frameworks: Vec<Framework>,
    /// In order of first mention.
    roles: Vec<Role>,
    /// Cluster scalar totals in thousandths.
    totals: BTreeMap<String, i64>,
}

fn dominant(allocated: &Resources, totals: &BTreeMap<String, i64>) -> f64 {
    allocated
        .scalars()
        .map(|(n, v)| share(milli(v), totals.get(n).copied().unwrap_or(0)))
        .fold(0.0, f64::max)
}

impl BaselineAllocator {
    pub fn new(config: AllocatorConfig) -> Self {
        BaselineAllocator {
            config,
            agents: Vec::new(),
            frameworks: Vec::new(),
            roles: Vec::new(),
            totals: BTreeMap::new(),
        }
    }

    pub fn default_refuse(&self) -> Duration {
        self.config.default_refuse
    }

    fn role_mut(&mut self, name: &str) -> &mut Role {
        let i = match self.roles.iter().position(|r| r.name == name) {
            Some(i) => i,
            None => {
                self.roles.push(Role {
                    name: name.to_string(),
                    weight: 1.0,
                    quota: None,
                    allocated: Resources::new(),
                });
                self.roles.len() - 1
            }
        };
        &mut self.roles[i]
    }

    fn role_index(&self, name: &str) -> Option<usize> {
        self.roles.iter().position(|r| r.name == name)
    }

    fn framework_index(&self, id: &str) -> Option<usize> {
        self.frameworks.iter().position(|f| f.id == id)
    }

    fn agent_index(&self, id: &str) -> Option<usize> {
        self.agents.iter().position(|a| a.id == id)
    }

    fn charge(&mut self, fw: usize, a: usize, r: &Resources) {
        let f = &mut self.frameworks[fw];
        f.allocated.add(r);
        self.agents[a]
            .allocs
            .entry(f.id.clone())
            .or_default()
            .add(r);
        let role = f.role.clone();
        self.role_mut(&role).allocated.add(r);
    }

    fn uncharge(&mut self, fw: usize, a: usize, r: &Resources) {
        let id = self.frameworks[fw].id.clone();
        let agent = &mut self.agents[a];
        let Some(held) = agent.allocs.get_mut(&id) else {
            return;
        };
        let kept = held.saturating_sub(r);
        let released = held.saturating_sub(&kept);
        if kept.is_empty() {
            agent.allocs.remove(&id);
        } else {
            *held = kept;
        }
        agent.free.add(&released);
        let f = &mut self.frameworks[fw];
        f.allocated = f.allocated.saturating_sub(&released);
        let role = f.role.clone();
        let role = self.role_mut(&role);
        role.allocated = role.allocated.saturating_sub(&released);
    }

    pub fn add_agent(&mut self, agent_id: &str, total: Resources, used: &[(String, Resources)]) {
        self.remove_agent(agent_id);
        for (n, v) in total.scalars() {
            *self.totals.entry(n.to_string()).or_insert(0) += milli(v);
        }
        self.agents.push(Agent {
            id: agent_id.to_string(),
            free: total.clone(),
            total,
            active: true,
            allocs: BTreeMap::new(),
        });
        let a = self.agents.len() - 1;
        for (framework_id, r) in used {
            let fw = match self.framework_index(framework_id) {
                Some(i) => i,
                None => {
                    self.role_mut(DEFAULT_ROLE);
                    self.frameworks.push(Framework {
                        id: framework_id.clone(),
                        role: DEFAULT_ROLE.to_string(),
                        added: false,
                        active: false,
                        suppressed: false,
                        allocated: Resources::new(),
                        filters: HashMap::new(),
                    });
                    self.frameworks.len() - 1
                }
            };
            let free = &mut self.agents[a].free;
            let fits = free.saturating_sub(&free.saturating_sub(r));
            if fits.is_empty() {
                continue;
            }
            *free = free.saturating_sub(&fits);
            self.charge(fw, a, &fits);
        }
    }

    pub fn remove_agent(&mut self, agent_id: &str) {
        let Some(a) = self.agent_index(agent_id) else {
            return;
        };
        let agent = self.agents.remove(a);
        for (n, v) in agent.total.scalars() {
            *self.totals.entry(n.to_string()).or_insert(0) -= milli(v);
        }
        for (fw, held) in &agent.allocs {
            if let Some(i) = self.framework_index(fw) {
                let f = &mut self.frameworks[i];
                f.allocated = f.allocated.saturating_sub(held);
                let role = f.role.clone();
                let role = self.role_mut(&role);
                role.allocated = role.allocated.saturating_sub(held);
            }
        }
        for f in &mut self.frameworks {
            f.filters.remove(agent_id);
        }
    }

    pub fn set_agent_active(&mut self, agent_id: &str, active: bool) {
        if let Some(a) = self.agent_index(agent_id) {
            self.agents[a].active = active;
        }
    }

    pub fn add_framework(&mut self, framework_id: &str, role: &str) {
        self.role_mut(role);
        let fw = match self.framework_index(framework_id) {
            Some(i) => i,
            None => {
                self.frameworks.push(Framework {
                    id: framework_id.to_string(),
                    role: role.to_string(),
                    added: false,
                    active: false,
                    suppressed: false,
                    allocated: Resources::new(),
                    filters: HashMap::new(),
                });
                self.frameworks.len() - 1
            }
        };
        let f = &mut self.frameworks[fw];
        f.added = true;
        f.active = true;
        if f.role != role {
            let old = std::mem::replace(&mut f.role, role.to_string());
            let held = f.allocated.clone();
            let from = self.role_mut(&old);
            from.allocated = from.allocated.saturating_sub(&held);
            self.role_mut(role).allocated.add(&held);
        }
    }

    pub fn remove_framework(&mut self, framework_id: &str) {
        let Some(fw) = self.framework_index(framework_id) else {
            return;
        };
        for a in 0..self.agents.len() {
            if let Some(held) = self.agents[a].allocs.get(framework_id).cloned() {
                self.uncharge(fw, a, &held);
            }
        }
        self.frameworks.remove(fw);
    }

    pub fn set_framework_active(&mut self, framework_id: &str, active: bool) {
        if let Some(fw) = self.framework_index(framework_id) {
            self.frameworks[fw].active = active;
        }
    }

    pub fn suppress(&mut self, framework_id: &str) {
        if let Some(fw) = self.framework_index(framework_id) {
            self.frameworks[fw].suppressed = true;
        }
    }

    pub fn revive(&mut self, framework_id: &str) {
        if let Some(fw) = self.framework_index(framework_id) {
            self.frameworks[fw].suppressed = false;
            self.frameworks[fw].filters.clear();
        }
    }

    pub fn set_weight(&mut self, role: &str, weight: f64) {
        let r = self.role_mut(role);
        if weight.is_finite() && weight > 0.0 {
            r.weight = weight;
        }
    }

    pub fn set_quota(&mut self, role: &str, quota: Quota) {
        let r = self.role_mut(role);
        r.quota = if quota.guarantee.is_empty() && quota.limit.is_none() {
            None
        } else {
            Some(quota)
        };
    }

    pub fn recover(
        &mut self,
        framework_id: &str,
        agent_id: &str,
        resources: &Resources,
        refuse: Option<Duration>,
        now: Duration,
    ) {
        let (Some(fw), Some(a)) = (
            self.framework_index(framework_id),
            self.agent_index(agent_id),
        ) else {
            return;
        };
        self.uncharge(fw, a, resources);
        if let Some(d) = refuse.filter(|d| !d.is_zero()) {
            self.frameworks[fw]
                .filters
                .insert(agent_id.to_string(), now.saturating_add(d));
        }
    }

    pub fn allocate(&mut self, now: Duration) -> Vec<Allocation> {
        let agents: Vec<usize> = (0..self.agents.len()).collect();
        self.run(&agents, now)
    }

    pub fn allocate_agents(&mut self, agent_ids: &[String], now: Duration) -> Vec<Allocation> {
        let mut agents: Vec<usize> = agent_ids
            .iter()
            .filter_map(|id| self.agent_index(id))
            .collect();
        agents.sort_unstable();
        agents.dedup();
        self.run(&agents, now)
    }

    fn run(&mut self, agents: &[usize], now: Duration) -> Vec<Allocation> {
        let mut out = Vec::new();
        let mut offered = vec![false; self.agents.len()];
        for guarantee_stage in [true, false] {
            for &a in agents {
                if offered[a] || !self.agents[a].active || is_tiny(&self.agents[a].free) {
                    continue;
                }
                let Some((role, fw)) = self.pick(a, guarantee_stage, now) else {
                    continue;
                };
                let agent = &self.agents[a];
                let r = &self.roles[role];
                let offer = capped_offer(&agent.free, r.quota.as_ref(), |n| {
                    milli(r.allocated.scalar(n))
                })
                .unwrap_or_else(|| agent.free.clone());
                let agent = &mut self.agents[a];
                agent.free = agent.free.saturating_sub(&offer);
                offered[a] = true;
                if offer.is_empty() {
                    continue;
                }
                self.charge(fw, a, &offer);
                out.push(Allocation {
                    framework_id: self.frameworks[fw].id.clone(),
                    agent_id: self.agents[a].id.clone(),
                    resources: offer,
                    reserved: Resources::new(),
                });
            }
        }
        out
    }

    /// Sorts all roles, then each role's frameworks, and returns the first that may have `a`.
    fn pick(&self, a: usize, guarantee_stage: bool, now: Duration) -> Option<(usize, usize)> {
        let agent_id = &self.agents[a].id;
        let eligible = |f: &Framework| {
            f.added
                && f.active
                && !f.suppressed
                && f.filters.get(agent_id).is_none_or(|&until| now >= until)
        };
        let mut roles: Vec<(f64, usize)> = self
            .roles
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                let alloc = |n: &str| milli(r.allocated.scalar(n));
                !at_limit(r.quota.as_ref(), alloc)
                    && (!guarantee_stage || guarantee_unmet(r.quota.as_ref(), alloc))
            })
            .map(|(i, r)| (dominant(&r.allocated, &self.totals) / r.weight, i))
            .collect();
        roles.sort_by(|x, y| x.0.total_cmp(&y.0).then(x.1.cmp(&y.1)));
        for (_, r) in roles {
            let name = &self.roles[r].name;
            let mut fws: Vec<(f64, usize)> = self
                .frameworks
                .iter()
                .enumerate()
                .filter(|(_, f)| &f.role == name && eligible(f))
                .map(|(i, f)| (dominant(&f.allocated, &self.totals), i))
                .collect();
            fws.sort_by(|x, y| x.0.total_cmp(&y.0).then(x.1.cmp(&y.1)));
            if let Some(&(_, fw)) = fws.first() {
                return Some((r, fw));
            }
        }
        None
    }

    pub fn framework_allocated(&self, framework_id: &str) -> Resources {
        self.framework_index(framework_id)
            .map(|i| self.frameworks[i].allocated.clone())
            .unwrap_or_default()
    }

    pub fn role_share(&self, role: &str) -> f64 {
        self.role_index(role).map_or(0.0, |i| {
            dominant(&self.roles[i].allocated, &self.totals) / self.roles[i].weight
        })
    }

    pub fn total(&self) -> Resources {
        let mut out = Resources::new();
        for a in &self.agents {
            out.add(&a.total);
        }
        out
    }

    pub fn allocated_total(&self) -> Resources {
        let mut out = Resources::new();
        for a in &self.agents {
            for held in a.allocs.values() {
                out.add(held);
            }
        }
        out
    }
}
