//! HTTP API of the cron framework, served on the master's port:
//!
//! | method | path | body | |
//! |---|---|---|---|
//! | GET | `/api/cron` | | every job with its next fire and last run |
//! | POST | `/api/cron` | a [`JobSpec`] (JSON) | add or replace a job |
//! | GET | `/api/cron/{name}` | | the job and its run history |
//! | DELETE | `/api/cron/{name}` | | remove it (active runs are killed) |

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::scheduler::next_fire;
use super::{Cron, JobRecord, JobSpec, Run};
use crate::util::{json_body, now_ms, ApiError};

pub fn router(cron: Arc<Cron>) -> Router {
    Router::new()
        .route("/api/cron", get(list).post(add))
        .route("/api/cron/{name}", get(show).delete(remove))
        .with_state(cron)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobView {
    pub spec: JobSpec,
    pub next_fire_ms: Option<u64>,
    pub fires: u64,
    pub active: usize,
    pub last: Option<Run>,
    /// Only in `GET /api/cron/{name}`.
    #[serde(default)]
    pub runs: Vec<Run>,
}

fn view(job: &JobRecord, with_runs: bool) -> JobView {
    JobView {
        spec: job.spec.clone(),
        next_fire_ms: job.next_fire_ms,
        fires: job.fires,
        active: job.runs.iter().filter(|r| r.state.is_active()).count(),
        last: job.runs.back().cloned(),
        runs: if with_runs {
            job.runs.iter().cloned().collect()
        } else {
            Vec::new()
        },
    }
}

async fn list(State(cron): State<Arc<Cron>>) -> Json<Vec<JobView>> {
    let s = cron.lock();
    Json(s.doc.jobs.values().map(|j| view(j, false)).collect())
}

async fn show(
    State(cron): State<Arc<Cron>>,
    Path(name): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    let s = cron.lock();
    let job = s
        .doc
        .jobs
        .get(&name)
        .ok_or_else(|| ApiError::not_found("cron job", &name))?;
    Ok(Json(view(job, true)))
}

async fn add(
    State(cron): State<Arc<Cron>>,
    body: Bytes,
) -> Result<(StatusCode, Json<JobView>), ApiError> {
    let spec: JobSpec = json_body(&body)?;
    let schedule = spec.validate().map_err(|problems| ApiError {
        status: StatusCode::BAD_REQUEST,
        message: format!(
            "invalid cron job: {}",
            problems
                .iter()
                .map(|p| format!("{}: {}", p.field, p.problem))
                .collect::<Vec<_>>()
                .join("; ")
        ),
        problems,
    })?;
    let now = now_ms();
    let mut s = cron.lock();
    let name = spec.name.clone();
    let next = next_fire(&schedule, now);
    if next.is_none() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("schedule `{}` does not fire within 5 years", spec.schedule),
        ));
    }
    let status = match s.doc.jobs.get_mut(&name) {
        Some(job) => {
            job.spec = spec;
            job.next_fire_ms = next;
            StatusCode::OK
        }
        None => {
            s.doc.jobs.insert(
                name.clone(),
                JobRecord {
                    spec,
                    created_ms: now,
                    next_fire_ms: next,
                    fires: 0,
                    runs: Default::default(),
                },
            );
            StatusCode::CREATED
        }
    };
    s.schedules.insert(name.clone(), schedule);
    s.save().map_err(ApiError::internal)?;
    let v = s.doc.jobs.get(&name).map(|j| view(j, false));
    drop(s);
    cron.wake.notify_one();
    v.map(|v| (status, Json(v)))
        .ok_or_else(|| ApiError::internal("job vanished"))
}

async fn remove(
    State(cron): State<Arc<Cron>>,
    Path(name): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    let mut s = cron.lock();
    let job = s
        .doc
        .jobs
        .remove(&name)
        .ok_or_else(|| ApiError::not_found("cron job", &name))?;
    s.schedules.remove(&name);
    for r in job
        .runs
        .iter()
        .filter(|r| r.state.is_active() && !r.task_id.is_empty())
    {
        s.kills.push((r.task_id.clone(), r.agent_id.clone()));
    }
    s.save().map_err(ApiError::internal)?;
    drop(s);
    cron.wake.notify_one();
    Ok(Json(view(&job, false)))
}
