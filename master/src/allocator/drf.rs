//! The production allocator.
//!
//! Data layout: agents, frameworks and roles are interned to `u32` slots (string ids only at
//! the API boundary); scalar resources are interned to small indices so that shares are
//! computed from `Vec<i64>` fixed-point sums, and the cluster's scalar totals are kept up to
//! date on agent add/remove. A cycle builds, once, an ordered set of roles keyed by
//! `(share, slot)` and one ordered set of frameworks per role; after each offer only the
//! picked framework's and role's keys are updated (O(log n)), so a cycle costs
//! O(agents · log(frameworks)) plus O(frameworks · log) of setup, instead of re-sorting
//! everything for every agent as the [`baseline`](super::baseline) does.
//!
//! Removed agents and frameworks leave an empty slot behind so that the relative order of
//! the others (which breaks ties) never changes; slots are compacted, order-preserving, once
//! they outnumber the live ones.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::mem;
use std::time::Duration;

use brim_proto::Resources;

use super::{
    at_limit, capped_offer, guarantee_unmet, is_tiny, milli, share, share_key, Allocation,
    AllocatorConfig, Quota, DEFAULT_ROLE,
};

/// `(share bits, slot)`: the order in which clients are offered resources.
type Key = (u64, u32);

/// Compaction starts once there are this many empty slots (and more empty than live ones).
const COMPACT_MIN_DEAD: usize = 1024;

#[derive(Clone, Debug)]
struct Agent {
    id: String,
    total: Resources,
    free: Resources,
    active: bool,
    /// What each framework holds here (offered or used by tasks) of the unreserved
    /// resources. Few entries per agent.
    allocs: Holdings<u32>,
    /// Dynamic reservations, one entry per role with something reserved here.
    reserved: Vec<Reserved>,
    /// What frameworks hold of reservations, keyed by (framework, role).
    reserved_allocs: Holdings<(u32, u32)>,
    /// Number of the last cycle that offered this agent.
    offered_in: u64,
}

impl Agent {
    /// Whether `fw` holds anything here, reserved or not.
    fn holds_anything(&self, fw: u32) -> bool {
        self.allocs.iter().any(|(x, _)| *x == fw)
            || self.reserved_allocs.iter().any(|((x, _), _)| *x == fw)
    }
}

/// What frameworks hold of one pool of an agent, one entry per key: the framework for the
/// unreserved pool, (framework, role) for reservations. Invariant: no entry is empty.
#[derive(Clone, Debug)]
struct Holdings<K>(Vec<(K, Resources)>);

impl<K: Copy + PartialEq> Holdings<K> {
    fn new() -> Self {
        Holdings(Vec::new())
    }

    fn iter(&self) -> impl Iterator<Item = &(K, Resources)> {
        self.0.iter()
    }

    fn keys_mut(&mut self) -> impl Iterator<Item = &mut K> {
        self.0.iter_mut().map(|(k, _)| k)
    }

    /// Adds `r` to `key`'s holding.
    fn add(&mut self, key: K, r: &Resources) {
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some((_, held)) => held.add(r),
            None => self.0.push((key, r.clone())),
        }
    }

    /// Takes all of `r` out of `key`'s holding; false (and nothing taken) when it does not
    /// hold all of it.
    fn take_all(&mut self, key: K, r: &Resources) -> bool {
        let Some(pos) = self
            .0
            .iter()
            .position(|(k, held)| *k == key && held.contains(r))
        else {
            return false;
        };
        self.release_at(pos, r);
        true
    }

    /// Takes what `key` holds of `r` out of its holding and returns it (`None` when `key`
    /// holds nothing).
    fn release(&mut self, key: K, r: &Resources) -> Option<Resources> {
        let pos = self.0.iter().position(|(k, _)| *k == key)?;
        Some(self.release_at(pos, r))
    }

    fn release_at(&mut self, pos: usize, r: &Resources) -> Resources {
        let held = &mut self.0[pos].1;
        let kept = held.saturating_sub(r);
        let released = held.saturating_sub(&kept);
        if kept.is_empty() {
            self.0.swap_remove(pos);
        } else {
            *held = kept;
        }
        released
    }

    /// Removes and returns every holding whose key `matches`.
    fn remove_where(&mut self, matches: impl Fn(K) -> bool) -> Vec<(K, Resources)> {
        let (gone, kept) = mem::take(&mut self.0)
            .into_iter()
            .partition(|(k, _)| matches(*k));
        self.0 = kept;
        gone
    }
}

/// Resources of an agent reserved for one role: `free` is the part no framework holds.
/// `Agent::free` never includes reserved resources.
#[derive(Clone, Debug)]
struct Reserved {
    role: u32,
    total: Resources,
    free: Resources,
}

/// Why a reservation change was refused (the caller validates first; this is the backstop).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ReservationError {
    #[error("framework `{framework_id}` or agent `{agent_id}` is unknown to the allocator")]
    Unknown {
        framework_id: String,
        agent_id: String,
    },
    #[error("framework `{framework_id}` does not hold {resources} ({what}) on agent `{agent_id}`; use resources of an outstanding offer")]
    NotHeld {
        framework_id: String,
        agent_id: String,
        resources: Box<Resources>,
        what: &'static str,
    },
}

#[derive(Clone, Debug)]
struct Framework {
    id: String,
    role: u32,
    /// False while the framework is only known from an agent's re-registration.
    added: bool,
    active: bool,
    suppressed: bool,
    /// Allocated scalars in thousandths, indexed like `Allocator::scalar_names`.
    scalars: Vec<i64>,
    /// Agents this framework holds something on.
    agents: HashSet<u32>,
    /// Refuse filters: agent slot -> time until which it is not offered.
    filters: HashMap<u32, Duration>,
}

impl Framework {
    fn eligible(&self) -> bool {
        self.added && self.active && !self.suppressed
    }

    fn filtered(&self, agent: u32, now: Duration) -> bool {
        !self.filters.is_empty() && self.filters.get(&agent).is_some_and(|&until| now < until)
    }
}

#[derive(Clone, Debug)]
struct Role {
    name: String,
    weight: f64,
    quota: Option<Quota>,
    scalars: Vec<i64>,
    /// Framework slots with this role.
    members: Vec<u32>,
}

/// Interned scalar resource names.
#[derive(Clone, Debug, Default)]
struct ScalarNames(Vec<String>);

impl ScalarNames {
    fn lookup(&self, name: &str) -> Option<usize> {
        self.0.iter().position(|n| n == name)
    }

    fn intern(&mut self, name: &str) -> usize {
        match self.lookup(name) {
            Some(i) => i,
            None => {
                self.0.push(name.to_string());
                self.0.len() - 1
            }
        }
    }

    /// `dst += sign * scalars(r)`.
    fn accumulate(&mut self, dst: &mut Vec<i64>, r: &Resources, sign: i64) {
        for (name, v) in r.scalars() {
            let i = self.intern(name);
            if dst.len() <= i {
                dst.resize(i + 1, 0);
            }
            dst[i] += sign * milli(v);
        }
    }

    fn get(&self, v: &[i64], name: &str) -> i64 {
        self.lookup(name)
            .and_then(|i| v.get(i).copied())
            .unwrap_or(0)
    }
}

fn dominant_share(allocated: &[i64], totals: &[i64]) -> f64 {
    allocated
        .iter()
        .zip(totals)
        .map(|(&a, &t)| share(a, t))
        .fold(0.0, f64::max)
}

/// Which roles a stage of the cycle offers to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Roles whose guarantee is not met yet.
    Guarantee,
    /// Every role, by fair share.
    FairShare,
}

/// Ordered views built at the start of a cycle and maintained during it.
struct Cycle {
    number: u64,
    now: Duration,
    /// Eligible frameworks of each role (indexed by role slot).
    frameworks: Vec<BTreeSet<Key>>,
    /// Roles with an eligible framework and below their limit.
    roles: BTreeSet<Key>,
    /// The subset of `roles` whose guarantee is not met.
    unmet: BTreeSet<Key>,
}

/// Weighted DRF allocator. See the [module docs](super) for the semantics.
#[derive(Clone, Debug)]
pub struct Allocator {
    config: AllocatorConfig,
    scalar_names: ScalarNames,
    /// Cluster total of every scalar, in thousandths.
    totals: Vec<i64>,
    agents: Vec<Option<Agent>>,
    agent_slots: HashMap<String, u32>,
    frameworks: Vec<Option<Framework>>,
    framework_slots: HashMap<String, u32>,
    roles: Vec<Role>,
    role_slots: HashMap<String, u32>,
    cycles: u64,
}

impl Allocator {
    pub fn new(config: AllocatorConfig) -> Self {
        Allocator {
            config,
            scalar_names: ScalarNames::default(),
            totals: Vec::new(),
            agents: Vec::new(),
            agent_slots: HashMap::new(),
            frameworks: Vec::new(),
            framework_slots: HashMap::new(),
            roles: Vec::new(),
            role_slots: HashMap::new(),
            cycles: 0,
        }
    }

    /// The refuse duration the caller should pass to [`Allocator::recover`] for a decline
    /// that names none.
    pub fn default_refuse(&self) -> Duration {
        self.config.default_refuse
    }

    // ---- agents ----

    /// Adds an agent (replacing one with the same id). `used` lists what frameworks already
    /// run there; a framework not known yet is recorded, inactive, in role `*` until it is
    /// added. Usage that does not fit in `total` is ignored.
    pub fn add_agent(&mut self, agent_id: &str, total: Resources, used: &[(String, Resources)]) {
        self.remove_agent(agent_id);
        let slot = self.agents.len() as u32;
        self.scalar_names.accumulate(&mut self.totals, &total, 1);
        self.agents.push(Some(Agent {
            id: agent_id.to_string(),
            free: total.clone(),
            total,
            active: true,
            allocs: Holdings::new(),
            reserved: Vec::new(),
            reserved_allocs: Holdings::new(),
            offered_in: 0,
        }));
        self.agent_slots.insert(agent_id.to_string(), slot);
        for (framework_id, resources) in used {
            let fw = self.framework_slot_or_placeholder(framework_id);
            let Some(agent) = self.agent_mut(slot) else {
                return;
            };
            let fits = agent
                .free
                .saturating_sub(&agent.free.saturating_sub(resources));
            if fits.is_empty() {
                continue;
            }
            agent.free = agent.free.saturating_sub(&fits);
            self.charge(fw, slot, &fits);
        }
    }

    /// Forgets an agent and everything allocated on it.
    pub fn remove_agent(&mut self, agent_id: &str) {
        let Some(slot) = self.agent_slots.remove(agent_id) else {
            return;
        };
        let Some(agent) = self.agents.get_mut(slot as usize).and_then(Option::take) else {
            return;
        };
        self.scalar_names
            .accumulate(&mut self.totals, &agent.total, -1);
        let held = agent
            .allocs
            .iter()
            .map(|(fw, r)| (fw, r))
            .chain(agent.reserved_allocs.iter().map(|((fw, _), r)| (fw, r)));
        for (fw, resources) in held {
            if let Some(f) = self
                .frameworks
                .get_mut(*fw as usize)
                .and_then(Option::as_mut)
            {
                f.agents.remove(&slot);
                self.scalar_names.accumulate(&mut f.scalars, resources, -1);
                let role = f.role as usize;
                self.scalar_names
                    .accumulate(&mut self.roles[role].scalars, resources, -1);
            }
        }
        for f in self.frameworks.iter_mut().flatten() {
            f.filters.remove(&slot);
        }
        self.compact_agents_if_sparse();
    }

    /// Inactive agents are never offered; what is allocated there stays allocated.
    pub fn set_agent_active(&mut self, agent_id: &str, active: bool) {
        if let Some(&slot) = self.agent_slots.get(agent_id) {
            if let Some(a) = self.agent_mut(slot) {
                a.active = active;
            }
        }
    }

    // ---- frameworks ----

    /// Adds (or re-adds, keeping its allocations) an active framework in `role`.
    pub fn add_framework(&mut self, framework_id: &str, role: &str) {
        let role = self.role_slot(role);
        let slot = match self.framework_slots.get(framework_id) {
            Some(&slot) => slot,
            None => self.push_framework(framework_id, role),
        };
        self.move_framework_to_role(slot, role);
        if let Some(f) = self.framework_mut(slot) {
            f.added = true;
            f.active = true;
        }
    }

    /// Forgets a framework; everything it holds goes back to the agents' free pools.
    pub fn remove_framework(&mut self, framework_id: &str) {
        let Some(slot) = self.framework_slots.remove(framework_id) else {
            return;
        };
        let Some(f) = self
            .frameworks
            .get_mut(slot as usize)
            .and_then(Option::take)
        else {
            return;
        };
        for &a in &f.agents {
            if let Some(agent) = self.agents.get_mut(a as usize).and_then(Option::as_mut) {
                for (_, held) in agent.allocs.remove_where(|fw| fw == slot) {
                    agent.free.add(&held);
                }
                for ((_, role), held) in agent.reserved_allocs.remove_where(|(fw, _)| fw == slot) {
                    if let Some(r) = agent.reserved.iter_mut().find(|r| r.role == role) {
                        r.free.add(&held);
                    }
                }
            }
        }
        let role = &mut self.roles[f.role as usize];
        for (dst, v) in role.scalars.iter_mut().zip(&f.scalars) {
            *dst -= v;
        }
        role.members.retain(|&m| m != slot);
        self.compact_frameworks_if_sparse();
    }

    /// A disconnected framework gets no offers but keeps its allocations.
    pub fn set_framework_active(&mut self, framework_id: &str, active: bool) {
        if let Some(f) = self.framework_by_id(framework_id) {
            f.active = active;
        }
    }

    /// Stops offers to the framework until it revives.
    pub fn suppress(&mut self, framework_id: &str) {
        if let Some(f) = self.framework_by_id(framework_id) {
            f.suppressed = true;
        }
    }

    /// Resumes offers to the framework and clears its refuse filters.
    pub fn revive(&mut self, framework_id: &str) {
        if let Some(f) = self.framework_by_id(framework_id) {
            f.suppressed = false;
            f.filters.clear();
        }
    }

    // ---- roles ----

    /// Sets a role's weight. A weight that is not a finite number > 0 is ignored.
    pub fn set_weight(&mut self, role: &str, weight: f64) {
        let r = self.role_slot(role) as usize;
        if weight.is_finite() && weight > 0.0 {
            self.roles[r].weight = weight;
        }
    }

    /// Sets a role's quota (an empty guarantee and no limit is the same as no quota).
    pub fn set_quota(&mut self, role: &str, quota: Quota) {
        let r = self.role_slot(role) as usize;
        self.roles[r].quota = if quota.guarantee.is_empty() && quota.limit.is_none() {
            None
        } else {
            Some(quota)
        };
    }

    // ---- resources flow ----

    /// Returns resources a framework held on an agent (declined or rescinded offer, ended
    /// task) to the agent's free pool. Only what the framework actually holds there is
    /// returned. `refuse: Some(d)` with `d > 0` keeps the agent away from the framework
    /// until `now + d`.
    pub fn recover(
        &mut self,
        framework_id: &str,
        agent_id: &str,
        resources: &Resources,
        refuse: Option<Duration>,
        now: Duration,
    ) {
        let (Some(&fw), Some(&agent)) = (
            self.framework_slots.get(framework_id),
            self.agent_slots.get(agent_id),
        ) else {
            return;
        };
        self.uncharge(fw, agent, resources);
        if let Some(d) = refuse.filter(|d| !d.is_zero()) {
            if let Some(f) = self.framework_mut(fw) {
                f.filters.insert(agent, now.saturating_add(d));
            }
        }
    }

    /// A full cycle over every agent.
    pub fn allocate(&mut self, now: Duration) -> Vec<Allocation> {
        let agents: Vec<u32> = (0..self.agents.len() as u32).collect();
        self.run_cycle(&agents, now)
    }

    /// An incremental cycle over the given agents only (unknown ids are ignored).
    pub fn allocate_agents(&mut self, agent_ids: &[String], now: Duration) -> Vec<Allocation> {
        let mut agents: Vec<u32> = agent_ids
            .iter()
            .filter_map(|id| self.agent_slots.get(id).copied())
            .collect();
        agents.sort_unstable();
        agents.dedup();
        self.run_cycle(&agents, now)
    }

    // ---- reservations ----

    /// Restores an agent's reservations (registry) after [`Allocator::add_agent`]: each
    /// `(role, resources)` leaves the unreserved pool (only what fits), then `used` — what
    /// frameworks' tasks use of those reservations, `(framework, role, resources)` — is
    /// charged to them.
    pub fn set_agent_reservations(
        &mut self,
        agent_id: &str,
        reservations: &[(String, Resources)],
        used: &[(String, String, Resources)],
    ) {
        let Some(&a) = self.agent_slots.get(agent_id) else {
            return;
        };
        let roles: Vec<u32> = reservations
            .iter()
            .map(|(role, _)| self.role_slot(role))
            .collect();
        let Some(agent) = self.agent_mut(a) else {
            return;
        };
        for (role, (_, r)) in roles.into_iter().zip(reservations) {
            let fits = agent.free.saturating_sub(&agent.free.saturating_sub(r));
            if fits.is_empty() {
                continue;
            }
            agent.free = agent.free.saturating_sub(&fits);
            match agent.reserved.iter_mut().find(|x| x.role == role) {
                Some(x) => {
                    x.total.add(&fits);
                    x.free.add(&fits);
                }
                None => agent.reserved.push(Reserved {
                    role,
                    total: fits.clone(),
                    free: fits,
                }),
            }
        }
        for (framework_id, role, r) in used {
            let fw = self.framework_slot_or_placeholder(framework_id);
            let role = self.role_slot(role);
            let Some(agent) = self.agent_mut(a) else {
                return;
            };
            let Some(pool) = agent.reserved.iter_mut().find(|x| x.role == role) else {
                continue;
            };
            let fits = pool.free.saturating_sub(&pool.free.saturating_sub(r));
            if fits.is_empty() {
                continue;
            }
            pool.free = pool.free.saturating_sub(&fits);
            self.charge_reserved(fw, a, role, &fits);
        }
    }

    /// RESERVE: `resources`, which the framework holds unreserved on the agent (an offer),
    /// become reserved for `role` and stay held by the framework (reserved) until recovered.
    pub fn reserve(
        &mut self,
        framework_id: &str,
        agent_id: &str,
        role: &str,
        resources: &Resources,
    ) -> Result<(), ReservationError> {
        let (fw, a) = self.slots(framework_id, agent_id)?;
        let role = self.role_slot(role);
        let not_held = || ReservationError::NotHeld {
            framework_id: framework_id.to_string(),
            agent_id: agent_id.to_string(),
            resources: Box::new(resources.clone()),
            what: "unreserved",
        };
        let agent = self.agent_mut(a).ok_or_else(not_held)?;
        if !agent.allocs.take_all(fw, resources) {
            return Err(not_held());
        }
        match agent.reserved.iter_mut().find(|x| x.role == role) {
            Some(x) => x.total.add(resources),
            None => agent.reserved.push(Reserved {
                role,
                total: resources.clone(),
                free: Resources::new(),
            }),
        }
        agent.reserved_allocs.add((fw, role), resources);
        Ok(())
    }

    /// UNRESERVE: `resources`, which the framework holds of `role`'s reservation on the
    /// agent, stop being reserved; the framework keeps holding them, unreserved.
    pub fn unreserve(
        &mut self,
        framework_id: &str,
        agent_id: &str,
        role: &str,
        resources: &Resources,
    ) -> Result<(), ReservationError> {
        let (fw, a) = self.slots(framework_id, agent_id)?;
        let role = self.role_slot(role);
        let not_held = || ReservationError::NotHeld {
            framework_id: framework_id.to_string(),
            agent_id: agent_id.to_string(),
            resources: Box::new(resources.clone()),
            what: "reserved",
        };
        let agent = self.agent_mut(a).ok_or_else(not_held)?;
        if !agent.reserved_allocs.take_all((fw, role), resources) {
            return Err(not_held());
        }
        if let Some(i) = agent.reserved.iter().position(|x| x.role == role) {
            let pool = &mut agent.reserved[i];
            pool.total = pool.total.saturating_sub(resources);
            if pool.total.is_empty() && pool.free.is_empty() {
                agent.reserved.swap_remove(i);
            }
        }
        agent.allocs.add(fw, resources);
        Ok(())
    }

    /// The reserved counterpart of [`Allocator::recover`]: what the framework held of
    /// `role`'s reservation on the agent goes back to that reservation's free part.
    pub fn recover_reserved(
        &mut self,
        framework_id: &str,
        agent_id: &str,
        role: &str,
        resources: &Resources,
        refuse: Option<Duration>,
        now: Duration,
    ) {
        let (Some(&fw), Some(&a), Some(&role)) = (
            self.framework_slots.get(framework_id),
            self.agent_slots.get(agent_id),
            self.role_slots.get(role),
        ) else {
            return;
        };
        self.uncharge_reserved(fw, a, role, resources);
        if let Some(d) = refuse.filter(|d| !d.is_zero()) {
            if let Some(f) = self.framework_mut(fw) {
                f.filters.insert(a, now.saturating_add(d));
            }
        }
    }

    /// The agent's reservations: (role, total reserved), in no particular order.
    pub fn agent_reservations(&self, agent_id: &str) -> Vec<(String, Resources)> {
        let Some(agent) = self.agent_slots.get(agent_id).and_then(|&a| self.agent(a)) else {
            return Vec::new();
        };
        agent
            .reserved
            .iter()
            .filter(|r| !r.total.is_empty())
            .map(|r| (self.roles[r.role as usize].name.clone(), r.total.clone()))
            .collect()
    }

    fn slots(&self, framework_id: &str, agent_id: &str) -> Result<(u32, u32), ReservationError> {
        match (
            self.framework_slots.get(framework_id),
            self.agent_slots.get(agent_id),
        ) {
            (Some(&fw), Some(&a)) => Ok((fw, a)),
            _ => Err(ReservationError::Unknown {
                framework_id: framework_id.to_string(),
                agent_id: agent_id.to_string(),
            }),
        }
    }

    // ---- views ----

    /// Everything the framework holds (offered or used), summed over agents.
    pub fn framework_allocated(&self, framework_id: &str) -> Resources {
        let mut out = Resources::new();
        let Some(&slot) = self.framework_slots.get(framework_id) else {
            return out;
        };
        let Some(f) = self.framework(slot) else {
            return out;
        };
        for &a in &f.agents {
            if let Some(agent) = self.agent(a) {
                for (fw, held) in agent.allocs.iter() {
                    if *fw == slot {
                        out.add(held);
                    }
                }
                for ((fw, _), held) in agent.reserved_allocs.iter() {
                    if *fw == slot {
                        out.add(held);
                    }
                }
            }
        }
        out
    }

    /// The role's dominant share divided by its weight (0 for unknown roles).
    pub fn role_share(&self, role: &str) -> f64 {
        self.role_slots
            .get(role)
            .map_or(0.0, |&r| self.role_share_of(r))
    }

    /// Sum of every agent's total.
    pub fn total(&self) -> Resources {
        let mut out = Resources::new();
        for a in self.agents.iter().flatten() {
            out.add(&a.total);
        }
        out
    }

    /// Sum of everything allocated on every agent.
    pub fn allocated_total(&self) -> Resources {
        let mut out = Resources::new();
        for a in self.agents.iter().flatten() {
            for (_, held) in a.allocs.iter() {
                out.add(held);
            }
            for (_, held) in a.reserved_allocs.iter() {
                out.add(held);
            }
        }
        out
    }

    /// The role's weight (1 unless set).
    pub fn weight(&self, role: &str) -> f64 {
        self.role_slots
            .get(role)
            .map_or(1.0, |&r| self.roles[r as usize].weight)
    }

    /// The role's quota, if any.
    pub fn quota(&self, role: &str) -> Option<&Quota> {
        self.role_slots
            .get(role)
            .and_then(|&r| self.roles[r as usize].quota.as_ref())
    }

    /// Names of every role known (mentioned by a framework, weight or quota), in order of
    /// first mention.
    pub fn roles(&self) -> impl Iterator<Item = &str> {
        self.roles.iter().map(|r| r.name.as_str())
    }

    // ---- the cycle ----

    fn run_cycle(&mut self, agents: &[u32], now: Duration) -> Vec<Allocation> {
        self.cycles += 1;
        let mut cycle = self.build_cycle(now);
        let mut out = Vec::new();
        for stage in [Stage::Guarantee, Stage::FairShare] {
            for &a in agents {
                let candidates = match stage {
                    Stage::Guarantee => &cycle.unmet,
                    Stage::FairShare => &cycle.roles,
                };
                if candidates.is_empty() {
                    break;
                }
                if let Some(offer) = self.offer_agent(a, stage, &mut cycle) {
                    out.push(offer);
                }
            }
        }
        for &a in agents {
            self.offer_reservations(a, &mut cycle, &mut out);
        }
        out
    }

    /// Offers what is still free of the agent's reservations, each to the framework of its
    /// role with the lowest share (regardless of the role's limit: reserved resources are
    /// the role's own). Runs after the stages, so a framework offered the agent there
    /// already got its role's reserved part with it.
    fn offer_reservations(&mut self, a: u32, cycle: &mut Cycle, out: &mut Vec<Allocation>) {
        let Some(agent) = self.agent(a) else { return };
        if !agent.active {
            return;
        }
        let roles: Vec<u32> = agent
            .reserved
            .iter()
            .filter(|r| !r.free.is_empty())
            .map(|r| r.role)
            .collect();
        for role in roles {
            let Some(fw) = cycle
                .frameworks
                .get(role as usize)
                .and_then(|set| {
                    set.iter().find(|&&(_, f)| {
                        self.framework(f).is_some_and(|x| !x.filtered(a, cycle.now))
                    })
                })
                .map(|&(_, f)| f)
            else {
                continue;
            };
            let old_role = (share_key(self.role_share_of(role)), role);
            let old_fw = (self.framework_key(fw), fw);
            let Some(agent) = self.agent_mut(a) else {
                return;
            };
            let Some(pool) = agent.reserved.iter_mut().find(|r| r.role == role) else {
                continue;
            };
            let reserved = mem::take(&mut pool.free);
            let agent_id = agent.id.clone();
            self.charge_reserved(fw, a, role, &reserved);
            self.rekey(cycle, role, fw, old_role, old_fw);
            if let Some(f) = self.framework(fw) {
                out.push(Allocation {
                    framework_id: f.id.clone(),
                    agent_id,
                    resources: Resources::new(),
                    reserved,
                });
            }
        }
    }

    /// Updates the cycle's ordered sets after `fw` (of `role`) was charged.
    fn rekey(&self, cycle: &mut Cycle, role: u32, fw: u32, old_role: Key, old_fw: Key) {
        let set = &mut cycle.frameworks[role as usize];
        if set.remove(&old_fw) {
            set.insert((self.framework_key(fw), fw));
        }
        let new_role = (share_key(self.role_share_of(role)), role);
        let at_limit = self.role_at_limit(role);
        if cycle.roles.remove(&old_role) && !at_limit {
            cycle.roles.insert(new_role);
        }
        if cycle.unmet.remove(&old_role) && !at_limit && self.role_guarantee_unmet(role) {
            cycle.unmet.insert(new_role);
        }
    }

    fn build_cycle(&mut self, now: Duration) -> Cycle {
        let mut frameworks = vec![BTreeSet::new(); self.roles.len()];
        for (slot, f) in self.frameworks.iter_mut().enumerate() {
            let Some(f) = f.as_mut().filter(|f| f.eligible()) else {
                continue;
            };
            f.filters.retain(|_, until| now < *until);
            let key = share_key(dominant_share(&f.scalars, &self.totals));
            frameworks[f.role as usize].insert((key, slot as u32));
        }
        let mut roles = BTreeSet::new();
        let mut unmet = BTreeSet::new();
        for r in 0..self.roles.len() as u32 {
            if frameworks[r as usize].is_empty() || self.role_at_limit(r) {
                continue;
            }
            let key = (share_key(self.role_share_of(r)), r);
            roles.insert(key);
            if self.role_guarantee_unmet(r) {
                unmet.insert(key);
            }
        }
        Cycle {
            number: self.cycles,
            now,
            frameworks,
            roles,
            unmet,
        }
    }

    /// Offers agent `a`'s free pool to the first eligible framework of the stage, if any.
    fn offer_agent(&mut self, a: u32, stage: Stage, cycle: &mut Cycle) -> Option<Allocation> {
        let agent = self.agent(a)?;
        if !agent.active || agent.offered_in == cycle.number || is_tiny(&agent.free) {
            return None;
        }
        let candidates = match stage {
            Stage::Guarantee => &cycle.unmet,
            Stage::FairShare => &cycle.roles,
        };
        let (role, fw) = candidates.iter().find_map(|&(_, r)| {
            cycle.frameworks[r as usize].iter().find_map(|&(_, f)| {
                let eligible = self
                    .framework(f)
                    .is_some_and(|fw| !fw.filtered(a, cycle.now));
                eligible.then_some((r, f))
            })
        })?;

        let old_role = (share_key(self.role_share_of(role)), role);
        let old_fw = (self.framework_key(fw), fw);
        let capped = {
            let r = &self.roles[role as usize];
            capped_offer(&agent.free, r.quota.as_ref(), |n| {
                self.scalar_names.get(&r.scalars, n)
            })
        };
        let agent = self.agent_mut(a)?;
        let offer = match capped {
            Some(capped) => {
                agent.free = agent.free.saturating_sub(&capped);
                capped
            }
            None => mem::take(&mut agent.free),
        };
        agent.offered_in = cycle.number;
        let agent_id = agent.id.clone();
        // The role's own reservation on the agent goes with the offer.
        let reserved = agent
            .reserved
            .iter_mut()
            .find(|r| r.role == role)
            .map(|r| mem::take(&mut r.free))
            .unwrap_or_default();
        if offer.is_empty() && reserved.is_empty() {
            return None;
        }
        self.charge(fw, a, &offer);
        if !reserved.is_empty() {
            self.charge_reserved(fw, a, role, &reserved);
        }
        self.rekey(cycle, role, fw, old_role, old_fw);
        Some(Allocation {
            framework_id: self.framework(fw)?.id.clone(),
            agent_id,
            resources: offer,
            reserved,
        })
    }

    // ---- bookkeeping ----

    /// Records `r` (already taken out of the agent's free pool) as held by `fw` on `a`.
    fn charge(&mut self, fw: u32, a: u32, r: &Resources) {
        let Some(agent) = self.agents.get_mut(a as usize).and_then(Option::as_mut) else {
            return;
        };
        let Some(f) = self
            .frameworks
            .get_mut(fw as usize)
            .and_then(Option::as_mut)
        else {
            return;
        };
        agent.allocs.add(fw, r);
        f.agents.insert(a);
        self.scalar_names.accumulate(&mut f.scalars, r, 1);
        let role = f.role as usize;
        self.scalar_names
            .accumulate(&mut self.roles[role].scalars, r, 1);
    }

    /// Records `r` (already taken out of `role`'s reservation's free part on `a`) as held
    /// by `fw`; it counts to the framework's and its role's shares like anything else.
    fn charge_reserved(&mut self, fw: u32, a: u32, role: u32, r: &Resources) {
        let Some(agent) = self.agents.get_mut(a as usize).and_then(Option::as_mut) else {
            return;
        };
        let Some(f) = self
            .frameworks
            .get_mut(fw as usize)
            .and_then(Option::as_mut)
        else {
            return;
        };
        agent.reserved_allocs.add((fw, role), r);
        f.agents.insert(a);
        self.scalar_names.accumulate(&mut f.scalars, r, 1);
        let role = f.role as usize;
        self.scalar_names
            .accumulate(&mut self.roles[role].scalars, r, 1);
    }

    /// Moves what `fw` holds of `role`'s reservation on `a` back to its free part.
    fn uncharge_reserved(&mut self, fw: u32, a: u32, role: u32, r: &Resources) {
        let Some(agent) = self.agents.get_mut(a as usize).and_then(Option::as_mut) else {
            return;
        };
        let Some(f) = self
            .frameworks
            .get_mut(fw as usize)
            .and_then(Option::as_mut)
        else {
            return;
        };
        let Some(released) = agent.reserved_allocs.release((fw, role), r) else {
            return;
        };
        if !agent.holds_anything(fw) {
            f.agents.remove(&a);
        }
        if let Some(pool) = agent.reserved.iter_mut().find(|x| x.role == role) {
            pool.free.add(&released);
        }
        self.scalar_names.accumulate(&mut f.scalars, &released, -1);
        let role = f.role as usize;
        self.scalar_names
            .accumulate(&mut self.roles[role].scalars, &released, -1);
    }

    /// Moves what `fw` holds of `r` on `a` back to the agent's free pool.
    fn uncharge(&mut self, fw: u32, a: u32, r: &Resources) {
        let Some(agent) = self.agents.get_mut(a as usize).and_then(Option::as_mut) else {
            return;
        };
        let Some(f) = self
            .frameworks
            .get_mut(fw as usize)
            .and_then(Option::as_mut)
        else {
            return;
        };
        let Some(released) = agent.allocs.release(fw, r) else {
            return;
        };
        if !agent.holds_anything(fw) {
            f.agents.remove(&a);
        }
        agent.free.add(&released);
        self.scalar_names.accumulate(&mut f.scalars, &released, -1);
        let role = f.role as usize;
        self.scalar_names
            .accumulate(&mut self.roles[role].scalars, &released, -1);
    }

    fn move_framework_to_role(&mut self, fw: u32, role: u32) {
        let Some(f) = self
            .frameworks
            .get_mut(fw as usize)
            .and_then(Option::as_mut)
        else {
            return;
        };
        let old = mem::replace(&mut f.role, role);
        if old == role {
            return;
        }
        let scalars = f.scalars.clone();
        let from = &mut self.roles[old as usize];
        from.members.retain(|&m| m != fw);
        for (dst, v) in from.scalars.iter_mut().zip(&scalars) {
            *dst -= v;
        }
        let to = &mut self.roles[role as usize];
        to.members.push(fw);
        if to.scalars.len() < scalars.len() {
            to.scalars.resize(scalars.len(), 0);
        }
        for (dst, v) in to.scalars.iter_mut().zip(&scalars) {
            *dst += v;
        }
    }

    fn framework_slot_or_placeholder(&mut self, framework_id: &str) -> u32 {
        if let Some(&slot) = self.framework_slots.get(framework_id) {
            return slot;
        }
        let role = self.role_slot(DEFAULT_ROLE);
        self.push_framework(framework_id, role)
    }

    fn push_framework(&mut self, framework_id: &str, role: u32) -> u32 {
        let slot = self.frameworks.len() as u32;
        self.frameworks.push(Some(Framework {
            id: framework_id.to_string(),
            role,
            added: false,
            active: false,
            suppressed: false,
            scalars: Vec::new(),
            agents: HashSet::new(),
            filters: HashMap::new(),
        }));
        self.framework_slots.insert(framework_id.to_string(), slot);
        self.roles[role as usize].members.push(slot);
        slot
    }

    fn role_slot(&mut self, name: &str) -> u32 {
        if let Some(&r) = self.role_slots.get(name) {
            return r;
        }
        let r = self.roles.len() as u32;
        self.roles.push(Role {
            name: name.to_string(),
            weight: 1.0,
            quota: None,
            scalars: Vec::new(),
            members: Vec::new(),
        });
        self.role_slots.insert(name.to_string(), r);
        r
    }

    fn role_share_of(&self, r: u32) -> f64 {
        let role = &self.roles[r as usize];
        dominant_share(&role.scalars, &self.totals) / role.weight
    }

    fn framework_key(&self, fw: u32) -> u64 {
        self.framework(fw)
            .map_or(0, |f| share_key(dominant_share(&f.scalars, &self.totals)))
    }

    fn role_at_limit(&self, r: u32) -> bool {
        let role = &self.roles[r as usize];
        at_limit(role.quota.as_ref(), |n| {
            self.scalar_names.get(&role.scalars, n)
        })
    }

    fn role_guarantee_unmet(&self, r: u32) -> bool {
        let role = &self.roles[r as usize];
        guarantee_unmet(role.quota.as_ref(), |n| {
            self.scalar_names.get(&role.scalars, n)
        })
    }

    fn agent(&self, a: u32) -> Option<&Agent> {
        self.agents.get(a as usize).and_then(Option::as_ref)
    }

    fn agent_mut(&mut self, a: u32) -> Option<&mut Agent> {
        self.agents.get_mut(a as usize).and_then(Option::as_mut)
    }

    fn framework(&self, fw: u32) -> Option<&Framework> {
        self.frameworks.get(fw as usize).and_then(Option::as_ref)
    }

    fn framework_mut(&mut self, fw: u32) -> Option<&mut Framework> {
        self.frameworks
            .get_mut(fw as usize)
            .and_then(Option::as_mut)
    }

    fn framework_by_id(&mut self, framework_id: &str) -> Option<&mut Framework> {
        let slot = *self.framework_slots.get(framework_id)?;
        self.framework_mut(slot)
    }

    // ---- compaction ----

    fn compact_agents_if_sparse(&mut self) {
        let live = self.agent_slots.len();
        let dead = self.agents.len() - live;
        if dead < COMPACT_MIN_DEAD || dead <= live {
            return;
        }
        let remap = compact(&mut self.agents);
        for slot in self.agent_slots.values_mut() {
            *slot = remap[*slot as usize];
        }
        for f in self.frameworks.iter_mut().flatten() {
            f.agents = f.agents.iter().map(|&a| remap[a as usize]).collect();
            f.filters = f
                .filters
                .iter()
                .filter(|(&a, _)| remap[a as usize] != u32::MAX)
                .map(|(&a, &until)| (remap[a as usize], until))
                .collect();
        }
    }

    fn compact_frameworks_if_sparse(&mut self) {
        let live = self.framework_slots.len();
        let dead = self.frameworks.len() - live;
        if dead < COMPACT_MIN_DEAD || dead <= live {
            return;
        }
        let remap = compact(&mut self.frameworks);
        for slot in self.framework_slots.values_mut() {
            *slot = remap[*slot as usize];
        }
        for a in self.agents.iter_mut().flatten() {
            for fw in a.allocs.keys_mut() {
                *fw = remap[*fw as usize];
            }
            for (fw, _) in a.reserved_allocs.keys_mut() {
                *fw = remap[*fw as usize];
            }
        }
        for r in &mut self.roles {
            for m in &mut r.members {
                *m = remap[*m as usize];
            }
        }
    }
}

/// Drops the empty slots, keeping the order of the others; returns old slot -> new slot
/// (`u32::MAX` for dropped slots).
fn compact<T>(slots: &mut Vec<Option<T>>) -> Vec<u32> {
    let mut remap = Vec::with_capacity(slots.len());
    let mut next = 0u32;
    for s in slots.iter() {
        if s.is_some() {
            remap.push(next);
            next += 1;
        } else {
            remap.push(u32::MAX);
        }
    }
    slots.retain(Option::is_some);
    remap
}
