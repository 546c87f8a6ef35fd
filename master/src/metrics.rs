//! Master metrics in Prometheus text format, named after Mesos' `master/*` figures with a
//! `brim_master_` prefix (e.g. Mesos `master/tasks_running` is `brim_master_tasks_running`).

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct StateLabel {
    pub(crate) state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ResourceLabel {
    pub(crate) resource: String,
}

/// Every metric the master exports. Gauges are refreshed from the state at scrape time.
pub struct MasterMetrics {
    registry: Registry,
    pub(crate) uptime_secs: Gauge<f64, AtomicU64>,
    pub(crate) elected: Gauge,
    pub(crate) elected_time: Gauge<f64, AtomicU64>,
    pub(crate) masters: Gauge,
    pub(crate) agents_active: Gauge,
    pub(crate) agents_connected: Gauge,
    pub(crate) agents_disconnected: Gauge,
    pub(crate) agents_unreachable: Gauge,
    pub(crate) frameworks_connected: Gauge,
    pub(crate) frameworks_disconnected: Gauge,
    pub(crate) outstanding_offers: Gauge,
    tasks: Family<StateLabel, Gauge>,
    pub(crate) tasks_terminal: Family<StateLabel, Counter>,
    resources_total: Family<ResourceLabel, Gauge<f64, AtomicU64>>,
    resources_used: Family<ResourceLabel, Gauge<f64, AtomicU64>>,
    /// Revocable pool (Mesos `master/cpus_revocable_total` etc.): slack agents published,
    /// and what revocable tasks use of it.
    pub(crate) cpus_revocable_total: Gauge<f64, AtomicU64>,
    pub(crate) cpus_revocable_used: Gauge<f64, AtomicU64>,
    pub(crate) mem_revocable_total: Gauge<f64, AtomicU64>,
    pub(crate) mem_revocable_used: Gauge<f64, AtomicU64>,
    pub(crate) offers_sent: Counter,
    pub(crate) offers_declined: Counter,
    pub(crate) offers_rescinded: Counter,
    pub(crate) tasks_launched: Counter,
    pub(crate) status_updates: Counter,
    pub(crate) agent_registrations: Counter,
    pub(crate) agents_marked_unreachable: Counter,
    pub(crate) invalid_calls: Counter,
    pub(crate) allocation_cycle_seconds: Histogram,
}

impl Default for MasterMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl MasterMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("brim_master");
        let mut m = MasterMetrics {
            registry: Registry::default(),
            uptime_secs: Gauge::default(),
            elected: Gauge::default(),
            elected_time: Gauge::default(),
            masters: Gauge::default(),
            agents_active: Gauge::default(),
            agents_connected: Gauge::default(),
            agents_disconnected: Gauge::default(),
            agents_unreachable: Gauge::default(),
            frameworks_connected: Gauge::default(),
            frameworks_disconnected: Gauge::default(),
            outstanding_offers: Gauge::default(),
            tasks: Family::default(),
            tasks_terminal: Family::default(),
            resources_total: Family::default(),
            resources_used: Family::default(),
            cpus_revocable_total: Gauge::default(),
            cpus_revocable_used: Gauge::default(),
            mem_revocable_total: Gauge::default(),
            mem_revocable_used: Gauge::default(),
            offers_sent: Counter::default(),
            offers_declined: Counter::default(),
            offers_rescinded: Counter::default(),
            tasks_launched: Counter::default(),
            status_updates: Counter::default(),
            agent_registrations: Counter::default(),
            agents_marked_unreachable: Counter::default(),
            invalid_calls: Counter::default(),
            allocation_cycle_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
        };
        registry.register(
            "uptime_secs",
            "Seconds since this master started",
            m.uptime_secs.clone(),
        );
        registry.register(
            "elected",
            "1 when this master is the leader",
            m.elected.clone(),
        );
        registry.register(
            "elected_time_secs",
            "When this master became the leader (Unix time)",
            m.elected_time.clone(),
        );
        registry.register(
            "masters",
            "Masters taking part in the election (leader + standbys)",
            m.masters.clone(),
        );
        registry.register(
            "agents_active",
            "Agents connected and offered",
            m.agents_active.clone(),
        );
        registry.register(
            "agents_connected",
            "Agents with an open stream",
            m.agents_connected.clone(),
        );
        registry.register(
            "agents_disconnected",
            "Agents whose stream dropped, not yet unreachable",
            m.agents_disconnected.clone(),
        );
        registry.register(
            "agents_unreachable",
            "Agents marked unreachable",
            m.agents_unreachable.clone(),
        );
        registry.register(
            "frameworks_connected",
            "Frameworks with an open event stream",
            m.frameworks_connected.clone(),
        );
        registry.register(
            "frameworks_disconnected",
            "Frameworks within their failover timeout",
            m.frameworks_disconnected.clone(),
        );
        registry.register(
            "outstanding_offers",
            "Offers not yet used or declined",
            m.outstanding_offers.clone(),
        );
        registry.register("tasks", "Non-terminal tasks by state", m.tasks.clone());
        registry.register(
            "tasks_terminal",
            "Tasks that reached a terminal state",
            m.tasks_terminal.clone(),
        );
        registry.register(
            "resources_total",
            "Resources of reachable agents",
            m.resources_total.clone(),
        );
        registry.register(
            "resources_used",
            "Resources held by tasks",
            m.resources_used.clone(),
        );
        registry.register(
            "cpus_revocable_total",
            "Revocable cpus: the slack agents published",
            m.cpus_revocable_total.clone(),
        );
        registry.register(
            "cpus_revocable_used",
            "Revocable cpus held by revocable tasks",
            m.cpus_revocable_used.clone(),
        );
        registry.register(
            "mem_revocable_total",
            "Revocable mem (MiB): the slack agents published",
            m.mem_revocable_total.clone(),
        );
        registry.register(
            "mem_revocable_used",
            "Revocable mem (MiB) held by revocable tasks",
            m.mem_revocable_used.clone(),
        );
        registry.register(
            "offers_sent",
            "Offers sent to frameworks",
            m.offers_sent.clone(),
        );
        registry.register(
            "offers_declined",
            "Offers declined by frameworks",
            m.offers_declined.clone(),
        );
        registry.register(
            "offers_rescinded",
            "Offers rescinded or expired",
            m.offers_rescinded.clone(),
        );
        registry.register(
            "tasks_launched",
            "Tasks sent to agents",
            m.tasks_launched.clone(),
        );
        registry.register(
            "status_updates",
            "Status updates received from agents",
            m.status_updates.clone(),
        );
        registry.register(
            "agent_registrations",
            "Agent (re-)registrations",
            m.agent_registrations.clone(),
        );
        registry.register(
            "agents_marked_unreachable",
            "Agents marked unreachable after missing heartbeats",
            m.agents_marked_unreachable.clone(),
        );
        registry.register(
            "invalid_calls",
            "Calls rejected as invalid",
            m.invalid_calls.clone(),
        );
        registry.register(
            "allocation_cycle_seconds",
            "Time of one allocation cycle",
            m.allocation_cycle_seconds.clone(),
        );
        m.registry = registry;
        m
    }

    pub(crate) fn set_tasks(&self, state: &str, n: i64) {
        self.tasks
            .get_or_create(&StateLabel {
                state: state.to_string(),
            })
            .set(n);
    }

    pub(crate) fn set_resource(&self, resource: &str, total: f64, used: f64) {
        let l = ResourceLabel {
            resource: resource.to_string(),
        };
        self.resources_total.get_or_create(&l).set(total);
        self.resources_used.get_or_create(&l).set(used);
    }

    /// Prometheus text exposition (classic format, as `promtool check metrics` expects).
    /// Exports the guard's refusals: `brim_master_authz_denied{action}` and
    /// `brim_master_unauthenticated_requests`.
    pub(crate) fn register_guard(&mut self, guard: &crate::auth::Guard) {
        self.registry.register(
            "authz_denied",
            "Calls denied by the ACLs, by action",
            guard.denied.clone(),
        );
        self.registry.register(
            "unauthenticated_requests",
            "Requests refused for missing or wrong credentials",
            guard.unauthenticated.clone(),
        );
        self.registry.register(
            "rate_limited",
            "Subscribe and register attempts refused by the rate limits (and subscription streams over the cap), by kind",
            guard.rate_limited.clone(),
        );
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!("cannot encode metrics: {e}");
        }
        out
    }
}
