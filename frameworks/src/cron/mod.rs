//! The cron framework (Chronos-like): jobs on cron schedules in a time zone, a concurrency
//! policy, retries, and a bounded run history with exit codes.
//!
//! - [`expr`]: cron expressions and next fire times (pure, time as a parameter);
//! - [`policy`]: fire and retry decisions (pure);
//! - `scheduler`: the SDK scheduler and the tick loop that fires jobs;
//! - `api`: the HTTP API under `/api/cron`.
//!
//! Fires missed while the framework was down (master restart) collapse into at most one run,
//! at the first tick after it is back.

mod api;
pub mod expr;
pub mod policy;
mod scheduler;

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

pub use api::{router, JobView};
pub use scheduler::{run_loop, CronScheduler};

use crate::services::spec::{valid_id, valid_image, valid_user, FieldProblem};
use crate::store::{JsonStore, StoreError};
use expr::Schedule;
use policy::Concurrency;

/// Framework name the cron framework registers with.
pub const FRAMEWORK_NAME: &str = "brim-cron";
/// Runs kept per job (active ones are never dropped).
const MAX_RUNS: usize = 100;
/// Most retries a job may ask for.
pub const MAX_RETRIES: u32 = 20;

/// A job as `brim cron add` sends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    pub name: String,
    /// 5 fields (minute hour dom month dow), or 6 with seconds first, or `@daily`...
    pub schedule: String,
    #[serde(default = "utc")]
    pub tz: String,
    /// One element runs with `/bin/sh -c`; several are executed directly.
    pub cmd: Vec<String>,
    #[serde(default)]
    pub concurrency: Concurrency,
    #[serde(default)]
    pub retries: u32,
    #[serde(default = "default_cpus")]
    pub cpus: f64,
    #[serde(default = "default_mem")]
    pub mem: f64,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Unix user to run as (default: `nobody`, the hosted frameworks' user).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Run in an OCI container of this image (an absolute path on the agents or an
    /// `http://`/`file://` URI of an OCI image layout or image tarball).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

fn utc() -> String {
    "UTC".into()
}
fn default_cpus() -> f64 {
    0.1
}
fn default_mem() -> f64 {
    32.0
}

impl JobSpec {
    /// Checks every field; returns the parsed schedule.
    pub fn validate(&self) -> Result<Schedule, Vec<FieldProblem>> {
        let mut problems = Vec::new();
        let mut bad = |field: &str, problem: String| {
            problems.push(FieldProblem {
                field: field.into(),
                problem,
            })
        };
        if let Err(why) = valid_id(&self.name) {
            bad("name", why);
        }
        let schedule = match Schedule::parse(&self.schedule, &self.tz) {
            Ok(s) => Some(s),
            Err(e @ expr::CronError::TimeZone(_)) => {
                bad("tz", e.to_string());
                None
            }
            Err(e) => {
                bad("schedule", e.to_string());
                if let Err(tz) = Schedule::parse("* * * * *", &self.tz) {
                    bad("tz", tz.to_string());
                }
                None
            }
        };
        if let Some(Err(why)) = self.user.as_deref().map(valid_user) {
            bad("user", why);
        }
        if let Some(Err(why)) = self.image.as_deref().map(valid_image) {
            bad("image", why);
        }
        if self.cmd.first().is_none_or(|c| c.trim().is_empty()) {
            bad("cmd", "must not be empty".into());
        }
        if self.retries > MAX_RETRIES {
            bad(
                "retries",
                format!("must be at most {MAX_RETRIES}, got {}", self.retries),
            );
        }
        if !(self.cpus.is_finite() && self.cpus > 0.0 && self.cpus <= 1024.0) {
            bad("cpus", format!("must be in (0, 1024], got {}", self.cpus));
        }
        if !(self.mem.is_finite() && self.mem > 0.0) {
            bad(
                "mem",
                format!("must be a positive number of MiB, got {}", self.mem),
            );
        }
        match schedule {
            Some(s) if problems.is_empty() => Ok(s),
            _ => Err(problems),
        }
    }
}

/// `queued` → `running` → `succeeded` | `failed` | `killed`; or `skipped` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Killed,
    Skipped,
}

impl RunState {
    pub fn is_active(self) -> bool {
        matches!(self, RunState::Queued | RunState::Running)
    }
}

/// One attempt of one fire.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    /// Fire number (1, 2, ...); retries share it.
    pub fire: u64,
    /// 1-based.
    pub attempt: u32,
    pub scheduled_ms: u64,
    pub state: RunState,
    pub task_id: String,
    pub agent_id: String,
    pub exit_code: Option<i32>,
    pub started_ms: Option<u64>,
    pub ended_ms: Option<u64>,
    pub message: String,
    /// Being killed by a `replace` fire.
    pub replaced: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobRecord {
    pub spec: JobSpec,
    pub created_ms: u64,
    pub next_fire_ms: Option<u64>,
    pub fires: u64,
    pub runs: VecDeque<Run>,
}

impl JobRecord {
    fn push_run(&mut self, run: Run) {
        self.runs.push_back(run);
        while self.runs.len() > MAX_RUNS {
            match self.runs.iter().position(|r| !r.state.is_active()) {
                Some(i) => {
                    self.runs.remove(i);
                }
                None => break,
            }
        }
    }
}

/// The persisted document (`cron.json`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CronDoc {
    pub framework_id: Option<String>,
    pub jobs: BTreeMap<String, JobRecord>,
}

pub struct CronState {
    doc: CronDoc,
    store: JsonStore<CronDoc>,
    schedules: BTreeMap<String, Schedule>,
    /// Kills to send (task, agent), queued by the API and the tick.
    kills: Vec<(String, String)>,
    suppressed: bool,
    wanted_offers: bool,
    /// When to ask the master about every active run (after re-subscribing).
    reconcile_at_ms: Option<u64>,
}

impl CronState {
    fn save(&self) -> Result<(), StoreError> {
        self.store.save(&self.doc).inspect_err(|e| {
            tracing::error!(error = %e, "cannot persist the cron state");
        })
    }
}

pub struct Cron {
    state: Mutex<CronState>,
    wake: Notify,
}

impl Cron {
    pub fn open(path: &std::path::Path) -> Result<Self, StoreError> {
        let store = JsonStore::new(path);
        let doc: CronDoc = store.load()?;
        let mut schedules = BTreeMap::new();
        for (name, job) in &doc.jobs {
            match job.spec.validate() {
                Ok(s) => {
                    schedules.insert(name.clone(), s);
                }
                Err(p) => tracing::error!(job = %name, problems = ?p, "stored job is invalid"),
            }
        }
        Ok(Cron {
            state: Mutex::new(CronState {
                doc,
                store,
                schedules,
                kills: Vec::new(),
                suppressed: false,
                wanted_offers: false,
                reconcile_at_ms: None,
            }),
            wake: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, CronState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn framework_id(&self) -> Option<String> {
        self.lock().doc.framework_id.clone()
    }

    /// The master no longer knows our framework: active runs are lost with it.
    pub fn forget_framework(&self) {
        let mut s = self.lock();
        s.doc.framework_id = None;
        let now = crate::util::now_ms();
        for job in s.doc.jobs.values_mut() {
            for r in job.runs.iter_mut().filter(|r| r.state == RunState::Running) {
                r.state = RunState::Failed;
                r.ended_ms = Some(now);
                r.message = "lost: the master forgot the cron framework".into();
            }
        }
        let _ = s.save();
    }
}

/// `2024-05-01 09:00:00 CEST` for a Unix-epoch millisecond in `tz` (UTC if unknown).
pub fn format_time(ms: u64, tz: &str) -> String {
    let zone = jiff::tz::TimeZone::get(tz).unwrap_or(jiff::tz::TimeZone::UTC);
    match jiff::Timestamp::from_millisecond(ms as i64) {
        Ok(t) => t
            .to_zoned_datetime(zone)
            .strftime("%Y-%m-%d %H:%M:%S %Z")
            .to_string(),
        Err(_) => format!("{ms}ms"),
    }
}
