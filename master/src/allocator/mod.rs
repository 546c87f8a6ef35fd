//! The allocator: weighted Dominant Resource Fairness over roles, then over the frameworks of
//! a role, with quotas (guarantee + limit), refuse filters and suppress/revive.
//!
//! Pure code: no I/O and no clock. Time is the `now: Duration` parameter (since an arbitrary
//! epoch, chosen by the caller).
//!
//! # Semantics
//!
//! - **Shares.** A client's dominant share is the maximum over scalar resources of
//!   `allocated / cluster total`; a role's share is divided by its weight (default 1).
//!   Frameworks within a role are compared by their unweighted dominant share. Offered
//!   resources count as allocated until [`Allocator::recover`]ed (Mesos semantics).
//! - **One framework per agent per cycle.** For every agent with free resources the cycle
//!   picks the role with the lowest share, then its framework with the lowest share, and
//!   offers that framework everything free on the agent. An agent whose free pool has less
//!   than 0.01 cpus *and* less than 32 MiB mem is skipped (no tiny leftovers).
//! - **Quota.** Stage 1 of a cycle walks the agents and offers them only to roles whose
//!   guarantee (on every scalar it names) is not met yet; stage 2 walks the agents that are
//!   left and offers them by fair share. A role never gets more than its limit: a role that
//!   reached its limit on any limited scalar is not offered anything, and the scalars offered
//!   to a limited role are capped at what the limit leaves.
//! - **Filters.** `recover(.., refuse: Some(d), now)` keeps that agent away from that
//!   framework until `now + d`; `revive` clears every filter of the framework.
//! - **Eligibility.** Inactive agents are never offered; inactive or suppressed frameworks
//!   get no offers but keep what they hold.
//! - **Order.** Ties in share are broken by registration order (frameworks, agents) and by
//!   first mention (roles); agents are walked in registration order. This is what makes the
//!   [`baseline`] a usable oracle: both allocators decide exactly the same.
//!
//! - **Reservations.** Resources an agent reserves for a role (dynamic reservations, Mesos
//!   RESERVE) leave the agent's unreserved pool and are offered only to frameworks of that
//!   role: with the agent's unreserved resources when the cycle picks such a framework, else
//!   by themselves after the stages (to the role's framework with the lowest share, whatever
//!   the role's limit). What a framework holds of a reservation counts to its and its role's
//!   shares like anything else. The [`baseline`] does not model reservations.
//!
//! Not modelled here (yet): headroom held back for unmet guarantees of roles without demand,
//! inverse offers, limits on range or set resources.
//!
//! Revocable (oversubscribed) resources live in a separate pool, [`RevocablePool`]: they
//! never enter the DRF allocator, its shares or its quotas.
//!
//! Architecture Invariant: nothing in this module does I/O or reads a clock.

use std::time::Duration;

use brim_proto::Resources;

pub mod baseline;
mod drf;
pub mod revocable;
#[cfg(test)]
mod tests;

pub use baseline::BaselineAllocator;
pub use drf::{Allocator, ReservationError};
pub use revocable::{PoolView, RevocablePool};

/// Knobs of the allocator.
#[derive(Clone, Debug, PartialEq)]
pub struct AllocatorConfig {
    /// How long a declined offer keeps the agent away from the framework when the decline
    /// names no filter. The allocator does not apply it by itself: the caller passes it to
    /// [`Allocator::recover`] (see [`Allocator::default_refuse`]).
    pub default_refuse: Duration,
}

impl Default for AllocatorConfig {
    fn default() -> Self {
        AllocatorConfig {
            default_refuse: Duration::from_secs(5),
        }
    }
}

/// Quota of a role. Only scalar resources of `guarantee` and `limit` are taken into account.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Quota {
    /// Resources the role is offered before any fair-share allocation.
    pub guarantee: Resources,
    /// Resources the role never goes beyond (`None`: unlimited).
    pub limit: Option<Resources>,
}

/// One offer decided by a cycle: everything in `resources` is now allocated to the framework.
#[derive(Clone, Debug, PartialEq)]
pub struct Allocation {
    pub framework_id: String,
    pub agent_id: String,
    /// Unreserved resources.
    pub resources: Resources,
    /// Resources of the agent reserved for the framework's role (dynamic reservations).
    pub reserved: Resources,
}

/// The role frameworks get when they are only known from an agent's re-registration.
pub(crate) const DEFAULT_ROLE: &str = "*";

/// Fixed-point thousandths of a scalar value (what `Resources` stores internally).
pub(crate) fn milli(v: f64) -> i64 {
    (v * 1000.0).round() as i64
}

/// Share of one resource; 0 when the cluster has none of it.
pub(crate) fn share(allocated_milli: i64, total_milli: i64) -> f64 {
    if total_milli <= 0 || allocated_milli <= 0 {
        0.0
    } else {
        allocated_milli as f64 / total_milli as f64
    }
}

/// Sort key of a share: non-negative floats order like their bit patterns.
pub(crate) fn share_key(share: f64) -> u64 {
    share.max(0.0).to_bits()
}

/// True when a free pool is not worth offering: < 0.01 cpus and < 32 MiB mem.
pub(crate) fn is_tiny(free: &Resources) -> bool {
    milli(free.scalar("cpus")) < 10 && milli(free.scalar("mem")) < 32_000
}

/// True when the role reached its limit on some limited scalar.
pub(crate) fn at_limit(quota: Option<&Quota>, allocated_milli: impl Fn(&str) -> i64) -> bool {
    let Some(limit) = quota.and_then(|q| q.limit.as_ref()) else {
        return false;
    };
    limit
        .scalars()
        .any(|(name, v)| allocated_milli(name) >= milli(v))
}

/// True when the role holds less than its guarantee on some guaranteed scalar.
pub(crate) fn guarantee_unmet(
    quota: Option<&Quota>,
    allocated_milli: impl Fn(&str) -> i64,
) -> bool {
    let Some(q) = quota else { return false };
    q.guarantee
        .scalars()
        .any(|(name, v)| allocated_milli(name) < milli(v))
}

/// The part of `free` a role may be offered under its limit, or `None` when all of `free`
/// fits (the common case, which lets the caller move the pool instead of copying it).
pub(crate) fn capped_offer(
    free: &Resources,
    quota: Option<&Quota>,
    allocated_milli: impl Fn(&str) -> i64,
) -> Option<Resources> {
    let limit = quota.and_then(|q| q.limit.as_ref())?;
    let mut capped: Option<Resources> = None;
    for (name, lim) in limit.scalars() {
        let room = (milli(lim) - allocated_milli(name)).max(0);
        if milli(free.scalar(name)) > room {
            let offer = capped.get_or_insert_with(|| free.clone());
            // `room` came from valid values, so this cannot fail; if it did, offering
            // nothing of that resource still respects the limit.
            if offer.set_scalar(name, room as f64 / 1000.0).is_err() {
                let _ = offer.set_scalar(name, 0.0);
            }
        }
    }
    capped
}
