//! HTTP API of the services framework, served on the master's port:
//!
//! | method | path | body | |
//! |---|---|---|---|
//! | GET | `/api/services` | | every service with counts |
//! | POST | `/api/services` | a spec (JSON) | create or update (`apply`) |
//! | GET | `/api/services/{id}` | | one service: tasks, events, why it waits |
//! | POST | `/api/services/{id}/scale` | `{"instances": n}` | |
//! | POST | `/api/services/{id}/restart` | | rolling restart (new version) |
//! | DELETE | `/api/services/{id}` | | stop every instance, then forget |
//!
//! Errors are `{"error": "...", "problems": [{"field", "problem"}]}` with 4xx/5xx.

use std::collections::VecDeque;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use brim_framework::state::StateClient;
use serde::{Deserialize, Serialize};

use super::constraints::{why_unplaceable, AgentFacts};
use super::spec::{ServiceSpec, SpecError};
use super::{ServiceEvent, ServiceRecord, Services};
use crate::util::{json_body, now_ms, ApiError};

pub fn router(services: Arc<Services>) -> Router {
    Router::new()
        .route("/api/services", get(list).post(apply))
        .route("/api/services/{id}", get(show).delete(remove))
        .route("/api/services/{id}/scale", post(scale))
        .route("/api/services/{id}/restart", post(restart))
        .with_state(services)
}

/// One service as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceView {
    pub id: String,
    pub version: u64,
    pub instances: u32,
    pub running: usize,
    pub healthy: usize,
    pub staging: usize,
    pub killing: usize,
    pub removing: bool,
    pub failures: u32,
    /// Seconds until failed instances may be relaunched.
    pub backoff_seconds: f64,
    /// Why instances are not placed, when some wait.
    pub waiting: Option<String>,
    pub tasks: Vec<TaskView>,
    pub events: VecDeque<ServiceEvent>,
    pub spec: ServiceSpec,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskView {
    pub id: String,
    pub version: u64,
    pub state: String,
    pub healthy: bool,
    pub killing: bool,
    pub agent_id: String,
    pub hostname: String,
    pub ports: Vec<String>,
}

/// The answer to an apply.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApplyResult {
    pub id: String,
    /// `created`, `updated` (new version, rolling restart), `scaled` or `unchanged`.
    pub outcome: String,
    pub version: u64,
    /// Why the spec cannot be fully placed on the current agents, if so.
    pub warnings: Vec<String>,
}

fn view(svc: &ServiceRecord, waiting: Option<String>, now: u64) -> ServiceView {
    let tasks: Vec<TaskView> = svc
        .tasks
        .iter()
        .map(|(id, t)| TaskView {
            id: id.clone(),
            version: t.version,
            state: t.state.clone(),
            healthy: svc.healthy(t, now) && !t.killing,
            killing: t.killing,
            agent_id: t.agent.agent_id.clone(),
            hostname: t.agent.hostname.clone(),
            ports: t.ports.clone(),
        })
        .collect();
    let count = |f: &dyn Fn(&TaskView) -> bool| tasks.iter().filter(|t| f(t)).count();
    ServiceView {
        id: svc.spec.id.clone(),
        version: svc.version,
        instances: svc.spec.instances,
        running: count(&|t| t.state == "TASK_RUNNING" && !t.killing),
        healthy: count(&|t| t.healthy),
        staging: count(&|t| t.state != "TASK_RUNNING" && !t.killing),
        killing: count(&|t| t.killing),
        removing: svc.removing,
        failures: svc.failures,
        backoff_seconds: svc.backoff_until_ms.saturating_sub(now) as f64 / 1000.0,
        waiting,
        events: svc.events.clone(),
        spec: svc.spec.clone(),
        tasks,
    }
}

/// Agents as the master's `/state` lists them (active ones).
async fn cluster_agents(services: &Services) -> Option<Vec<AgentFacts>> {
    let (master, security) = services.master()?;
    let state = StateClient::with_security(&master, &security)
        .ok()?
        .fetch()
        .await
        .ok()?;
    Some(
        state
            .active_agents()
            .map(|a| AgentFacts {
                agent_id: a.id.clone(),
                hostname: a.hostname.clone(),
                attributes: a
                    .attributes
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            v.as_str().map_or_else(|| v.to_string(), str::to_string),
                        )
                    })
                    .collect(),
            })
            .collect(),
    )
}

async fn list(State(services): State<Arc<Services>>) -> Json<Vec<ServiceView>> {
    let now = now_ms();
    let s = services.lock();
    Json(
        s.doc
            .services
            .values()
            .map(|svc| view(svc, None, now))
            .collect(),
    )
}

async fn show(
    State(services): State<Arc<Services>>,
    Path(id): Path<String>,
) -> Result<Json<ServiceView>, ApiError> {
    let agents = cluster_agents(&services).await;
    let now = now_ms();
    let s = services.lock();
    let svc = s
        .doc
        .services
        .get(&id)
        .ok_or_else(|| ApiError::not_found("service", &id))?;
    let live = svc
        .tasks
        .values()
        .filter(|t| !t.killing && t.version == svc.version)
        .count();
    let missing = (svc.target() as usize).saturating_sub(live);
    let waiting = (missing > 0 && !svc.removing).then(|| {
        let mut why = Vec::new();
        if now < svc.backoff_until_ms {
            why.push(format!(
                "backing off after {} failure(s) for {:.1}s more",
                svc.failures,
                (svc.backoff_until_ms - now) as f64 / 1000.0
            ));
        }
        let constraints = s.constraints.get(&id).map_or(&[][..], Vec::as_slice);
        if let Some(agents) = &agents {
            if let Some(w) = why_unplaceable(constraints, svc.spec.instances, agents) {
                why.push(w);
            }
        }
        if let Some(w) = s.waiting.get(&id) {
            let per_agent: Vec<String> = w
                .reasons
                .iter()
                .map(|(a, r)| format!("agent {a}: {r}"))
                .collect();
            if !per_agent.is_empty() {
                why.push(format!(
                    "last offers declined for {:.0}s: {}",
                    now.saturating_sub(w.since_ms) as f64 / 1000.0,
                    per_agent.join("; ")
                ));
            }
        }
        if why.is_empty() {
            why.push("waiting for offers".into());
        }
        format!("{missing} instance(s) not placed: {}", why.join("; "))
    });
    Ok(Json(view(svc, waiting, now)))
}

async fn apply(
    State(services): State<Arc<Services>>,
    body: Bytes,
) -> Result<(StatusCode, Json<ApplyResult>), ApiError> {
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "body is not UTF-8"))?;
    let valid = ServiceSpec::from_json(text)
        .and_then(ServiceSpec::validate)
        .map_err(|e: SpecError| ApiError {
            status: StatusCode::BAD_REQUEST,
            message: e.to_string(),
            problems: e.problems(),
        })?;
    let agents = cluster_agents(&services).await;
    let now = now_ms();
    let mut s = services.lock();
    let id = valid.spec.id.clone();
    let warnings: Vec<String> = agents
        .and_then(|a| why_unplaceable(&valid.constraints, valid.spec.instances, &a))
        .into_iter()
        .collect();
    let (outcome, version, status) = match s.doc.services.get_mut(&id) {
        None => {
            let mut rec = ServiceRecord {
                spec: valid.spec.clone(),
                version: 1,
                removing: false,
                tasks: Default::default(),
                failures: 0,
                backoff_until_ms: 0,
                events: VecDeque::new(),
            };
            rec.event(now, format!("created with {} instance(s)", rec.spec.instances));
            s.doc.services.insert(id.clone(), rec);
            ("created", 1, StatusCode::CREATED)
        }
        Some(rec) if rec.removing => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("service `{id}` is being removed; apply it again once `brim service list` no longer shows it"),
            ))
        }
        Some(rec) if rec.spec == valid.spec => ("unchanged", rec.version, StatusCode::OK),
        Some(rec) if rec.spec.same_except_instances(&valid.spec) => {
            rec.event(now, format!("scaled from {} to {} instance(s)", rec.spec.instances, valid.spec.instances));
            rec.spec = valid.spec.clone();
            ("scaled", rec.version, StatusCode::OK)
        }
        Some(rec) => {
            rec.version += 1;
            rec.spec = valid.spec.clone();
            rec.failures = 0;
            rec.backoff_until_ms = 0;
            let v = rec.version;
            rec.event(now, format!("spec updated: rolling restart to version {v}"));
            ("updated", v, StatusCode::OK)
        }
    };
    s.constraints.insert(id.clone(), valid.constraints);
    s.save().map_err(ApiError::internal)?;
    drop(s);
    services.wake.notify_one();
    Ok((
        status,
        Json(ApplyResult {
            id,
            outcome: outcome.into(),
            version,
            warnings,
        }),
    ))
}

#[derive(Deserialize)]
struct ScaleBody {
    instances: u32,
}

async fn scale(
    State(services): State<Arc<Services>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<ServiceView>, ApiError> {
    let b: ScaleBody = json_body(&body)?;
    if b.instances > super::spec::MAX_INSTANCES {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "instances must be at most {}, got {}",
                super::spec::MAX_INSTANCES,
                b.instances
            ),
        ));
    }
    mutate(&services, &id, |rec, now| {
        rec.event(
            now,
            format!(
                "scaled from {} to {} instance(s)",
                rec.spec.instances, b.instances
            ),
        );
        rec.spec.instances = b.instances;
    })
}

async fn restart(
    State(services): State<Arc<Services>>,
    Path(id): Path<String>,
) -> Result<Json<ServiceView>, ApiError> {
    mutate(&services, &id, |rec, now| {
        rec.version += 1;
        rec.failures = 0;
        rec.backoff_until_ms = 0;
        let v = rec.version;
        rec.event(
            now,
            format!("restart requested: rolling restart to version {v}"),
        );
    })
}

async fn remove(
    State(services): State<Arc<Services>>,
    Path(id): Path<String>,
) -> Result<Json<ServiceView>, ApiError> {
    mutate(&services, &id, |rec, now| {
        rec.removing = true;
        rec.event(now, "removal requested: stopping every instance".into());
    })
}

fn mutate(
    services: &Services,
    id: &str,
    f: impl FnOnce(&mut ServiceRecord, u64),
) -> Result<Json<ServiceView>, ApiError> {
    let now = now_ms();
    let mut s = services.lock();
    let rec = s
        .doc
        .services
        .get_mut(id)
        .ok_or_else(|| ApiError::not_found("service", id))?;
    if rec.removing {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("service `{id}` is being removed"),
        ));
    }
    f(rec, now);
    let v = view(rec, None, now);
    s.save().map_err(ApiError::internal)?;
    drop(s);
    services.wake.notify_one();
    Ok(Json(v))
}
