//! The services framework (Marathon-like): long-running services from declarative specs.
//!
//! - [`spec`]: the spec and its validation;
//! - [`constraints`]: placement constraints (pure);
//! - [`plan`]: the kill/launch planner behind scaling and rolling restarts (pure);
//! - `scheduler`: the SDK [`brim_framework::Scheduler`] and the reconcile loop;
//! - `api`: the HTTP API under `/api/services`.
//!
//! A RUNNING task counts as healthy when the agent's health check (`health_check`) passes
//! or, for services without one, once it has been running `healthy_after_seconds`.

mod api;
pub mod constraints;
pub mod plan;
mod scheduler;
pub mod spec;

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

pub use api::{router, ApplyResult, ServiceView, TaskView};
pub use scheduler::{run_loop, ServicesScheduler};

use crate::store::{JsonStore, StoreError};
use constraints::{AgentFacts, Constraint};
use spec::ServiceSpec;

/// Framework name the services framework registers with.
pub const FRAMEWORK_NAME: &str = "brim-services";
/// Events kept per service.
const MAX_EVENTS: usize = 30;

/// The persisted document (`services.json`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ServicesDoc {
    pub framework_id: Option<String>,
    pub next_seq: u64,
    pub services: BTreeMap<String, ServiceRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceRecord {
    pub spec: ServiceSpec,
    /// Bumped when the spec changes (other than `instances`) or on restart.
    pub version: u64,
    pub removing: bool,
    pub tasks: BTreeMap<String, TaskRecord>,
    /// Consecutive failures (drives the backoff).
    pub failures: u32,
    pub backoff_until_ms: u64,
    pub events: VecDeque<ServiceEvent>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceEvent {
    pub at_ms: u64,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskRecord {
    pub seq: u64,
    pub version: u64,
    pub agent: AgentFacts,
    /// `TASK_STAGING`, `TASK_RUNNING`, ...
    pub state: String,
    pub killing: bool,
    pub kill_sent_ms: u64,
    pub launched_ms: u64,
    pub running_since_ms: Option<u64>,
    /// `PORT0`... values.
    pub ports: Vec<String>,
    /// The agent's latest health-check result (services with a `health_check`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_healthy: Option<bool>,
}

impl ServiceRecord {
    fn event(&mut self, at_ms: u64, message: String) {
        tracing::info!(service = %self.spec.id, "{message}");
        self.events.push_back(ServiceEvent { at_ms, message });
        while self.events.len() > MAX_EVENTS {
            self.events.pop_front();
        }
    }

    /// Healthy: RUNNING and its health check passing, or — without a check — RUNNING for at
    /// least `healthy_after_seconds`.
    fn healthy(&self, t: &TaskRecord, now_ms: u64) -> bool {
        if t.state != "TASK_RUNNING" {
            return false;
        }
        if self.spec.health_check.is_some() {
            return t.check_healthy == Some(true);
        }
        let after = (self.spec.healthy_after_seconds * 1000.0) as u64;
        t.running_since_ms.is_some_and(|s| s + after <= now_ms)
    }

    fn target(&self) -> u32 {
        if self.removing {
            0
        } else {
            self.spec.instances
        }
    }
}

/// Placement trouble of a service that has instances to place: per agent, why not.
#[derive(Debug, Clone, Default)]
struct Waiting {
    since_ms: u64,
    reasons: BTreeMap<String, String>,
}

/// Everything the scheduler, the reconcile loop and the HTTP API share.
pub struct ServicesState {
    doc: ServicesDoc,
    store: JsonStore<ServicesDoc>,
    constraints: BTreeMap<String, Vec<Constraint>>,
    agents: BTreeMap<String, AgentFacts>,
    waiting: BTreeMap<String, Waiting>,
    suppressed: bool,
    wanted_offers: bool,
    /// When to ask the master about every task we know (after re-subscribing).
    reconcile_at_ms: Option<u64>,
}

impl ServicesState {
    /// Saves the document; on failure logs (the in-memory state stays authoritative).
    fn save(&self) -> Result<(), StoreError> {
        self.store.save(&self.doc).inspect_err(|e| {
            tracing::error!(error = %e, "cannot persist the services state");
        })
    }
}

/// Shared handle: state behind a mutex (never held across an await) and a wake-up for the
/// reconcile loop.
pub struct Services {
    state: Mutex<ServicesState>,
    wake: Notify,
    master: Mutex<Option<(String, brim_framework::ClientSecurity)>>,
}

impl Services {
    /// Loads `path` (an absent file is an empty state) and compiles every spec's constraints.
    pub fn open(path: &std::path::Path) -> Result<Self, StoreError> {
        let store = JsonStore::new(path);
        let doc: ServicesDoc = store.load()?;
        let mut constraints = BTreeMap::new();
        for (id, s) in &doc.services {
            // Stored specs were validated when applied; a spec no longer valid places nothing.
            match s.spec.clone().validate() {
                Ok(v) => {
                    constraints.insert(id.clone(), v.constraints);
                }
                Err(e) => tracing::error!(service = %id, error = %e, "stored spec is invalid"),
            }
        }
        Ok(Services {
            state: Mutex::new(ServicesState {
                doc,
                store,
                constraints,
                agents: BTreeMap::new(),
                waiting: BTreeMap::new(),
                suppressed: false,
                wanted_offers: false,
                reconcile_at_ms: None,
            }),
            wake: Notify::new(),
            master: Mutex::new(None),
        })
    }

    fn lock(&self) -> MutexGuard<'_, ServicesState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The framework id stored from a previous run, to fail over with.
    pub fn framework_id(&self) -> Option<String> {
        self.lock().doc.framework_id.clone()
    }

    /// Where the master's `/state` is (for placement explanations).
    pub fn set_master(&self, master: &str, security: brim_framework::ClientSecurity) {
        *self.master.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((master.to_string(), security));
    }

    fn master(&self) -> Option<(String, brim_framework::ClientSecurity)> {
        self.master
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The master no longer knows our framework id (torn down, or its registry was lost):
    /// every task record is gone with it; the next subscription starts fresh.
    pub fn forget_framework(&self) {
        let mut s = self.lock();
        s.doc.framework_id = None;
        let now = crate::util::now_ms();
        for svc in s.doc.services.values_mut() {
            if !svc.tasks.is_empty() {
                let n = svc.tasks.len();
                svc.tasks.clear();
                svc.event(
                    now,
                    format!("the master forgot this framework; {n} task record(s) dropped"),
                );
            }
        }
        let _ = s.save();
    }
}
