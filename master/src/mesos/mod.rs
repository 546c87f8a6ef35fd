//! Mesos v1 API compatibility on the master port: `POST /api/v1/scheduler` (JSON, RecordIO
//! event stream, `Mesos-Stream-Id`) and `GET /master/state` in Mesos shape, so unmodified
//! Mesos frameworks (pymesos, …) run on brim. See docs/MESOS_API.md.
//!
//! This is an edge translation only: a Mesos SUBSCRIBE is a `Command::Subscribe` with an
//! event channel, every other call becomes a `Call::*` for the state actor, and brim.v1 events
//! are turned into Mesos JSON as they leave (`json.rs`).
//!
//! Architecture Invariants:
//! - no cluster state lives here; the only edge state is which Mesos stream id belongs to
//!   which framework subscription (checked on every call, dropped with the stream);
//! - every request body is bounded (`MAX_BODY_BYTES`) before it is parsed;
//! - a dropped event stream tells the actor the framework disconnected, exactly like a
//!   dropped gRPC stream.

pub(crate) mod json;
/// RecordIO framing, shared with the agent's executor API (lives in `brim-proto`).
pub use brim_proto::recordio;
mod scheduler_api;
#[doc(hidden)]
pub use scheduler_api::fuzz_decode_call;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use brim_proto::v1::{self, Event};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tonic::Status;

use crate::actor::{Command, MasterHandle};

/// Largest request body accepted on `/api/v1/scheduler` (same as a gRPC message).
pub(crate) const MAX_BODY_BYTES: usize = brim_proto::MAX_MESSAGE_BYTES;

/// An HTTP error with a Mesos-like plain-text message.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MesosApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotAcceptable(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    NotImplemented(String),
    #[error("{0}")]
    Unavailable(String),
}

impl MesosApiError {
    fn status(&self) -> StatusCode {
        match self {
            MesosApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            MesosApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            MesosApiError::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            MesosApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            MesosApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            MesosApiError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            MesosApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// A state-actor error on a call that Mesos would have rejected synchronously.
    fn from_status(s: &Status) -> MesosApiError {
        use tonic::Code;
        let msg = s.message().to_string();
        match s.code() {
            Code::FailedPrecondition => MesosApiError::Forbidden(msg),
            Code::PermissionDenied => MesosApiError::Forbidden(msg),
            Code::Unavailable | Code::Internal => MesosApiError::Unavailable(msg),
            _ => MesosApiError::BadRequest(msg),
        }
    }
}

impl IntoResponse for MesosApiError {
    fn into_response(self) -> Response {
        (
            self.status(),
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            self.to_string(),
        )
            .into_response()
    }
}

/// One live Mesos subscription.
#[derive(Clone)]
struct Subscription {
    stream_id: String,
    /// Upgrades while the actor still feeds this stream; fails after failover/teardown.
    events: mpsc::WeakSender<Result<Event, Status>>,
    info: v1::FrameworkInfo,
}

impl Subscription {
    fn partition_aware(&self) -> bool {
        self.info
            .capabilities
            .iter()
            .any(|c| c == brim_proto::CAPABILITY_PARTITION_AWARE)
    }
}

/// Shared by the Mesos handlers.
pub(crate) struct MesosApi {
    master: MasterHandle,
    /// framework id → its current Mesos subscription.
    subscriptions: Mutex<HashMap<String, Subscription>>,
}

impl MesosApi {
    fn subscription(&self, framework_id: &str) -> Option<Subscription> {
        self.subscriptions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(framework_id)
            .cloned()
    }

    fn set_subscription(&self, framework_id: &str, sub: Subscription) {
        self.subscriptions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(framework_id.to_string(), sub);
    }

    /// Forgets the subscription if `stream_id` is still the current one.
    fn end_subscription(&self, framework_id: &str, stream_id: &str) {
        let mut subs = self
            .subscriptions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if subs
            .get(framework_id)
            .is_some_and(|s| s.stream_id == stream_id)
        {
            subs.remove(framework_id);
        }
    }

    /// The master's `/state` JSON (brim shape).
    async fn state(&self) -> Result<Value, MesosApiError> {
        let (reply, rx) = oneshot::channel();
        self.master
            .send(Command::State { reply })
            .await
            .map_err(|_| MesosApiError::Unavailable("Master is shutting down".into()))?;
        rx.await
            .map_err(|_| MesosApiError::Unavailable("Master is shutting down".into()))
    }
}

/// Routes of the Mesos API, merged into the master's router.
pub(crate) fn router(master: MasterHandle) -> Router {
    let api = Arc::new(MesosApi {
        master,
        subscriptions: Mutex::new(HashMap::new()),
    });
    Router::new()
        .route("/api/v1/scheduler", post(scheduler_api::scheduler))
        .route("/master/api/v1/scheduler", post(scheduler_api::scheduler))
        .route("/master/state", get(master_state))
        .route("/master/state.json", get(master_state))
        .route("/state.json", get(master_state))
        .with_state(api)
}

async fn master_state(axum::extract::State(api): axum::extract::State<Arc<MesosApi>>) -> Response {
    match api.state().await {
        Ok(s) => axum::Json(mesos_state(&s)).into_response(),
        Err(e) => e.into_response(),
    }
}

fn terminal(state: &str) -> bool {
    v1::TaskState::from_str_name(state).is_some_and(v1::TaskState::is_terminal)
}

/// brim `/state` → Mesos `/master/state` (the keys tools read: frameworks, slaves, tasks).
pub(crate) fn mesos_state(s: &Value) -> Value {
    let leader = s["leader"].as_str().unwrap_or_default();
    let master_id = s["master_id"].as_str().unwrap_or_default();
    let (host, _) = leader.rsplit_once(':').unwrap_or((leader, ""));
    let empty = Vec::new();
    let arr = |k: &str| s[k].as_array().unwrap_or(&empty).clone();
    let task = |t: &Value| {
        json!({
            "id": t["id"],
            "name": t["name"],
            "framework_id": t["framework_id"],
            "executor_id": t["executor_id"].as_str().unwrap_or_default(),
            "slave_id": t["agent_id"],
            "state": t["state"],
            "resources": t["resources"],
            "statuses": [{"state": t["state"], "timestamp": t["updated_time"]}],
        })
    };
    let all_tasks: Vec<Value> = arr("tasks")
        .into_iter()
        .chain(arr("completed_tasks"))
        .collect();
    let slaves: Vec<Value> = arr("agents")
        .iter()
        .map(|a| {
            let http = a["http_address"].as_str().unwrap_or_default();
            let port: u64 = http
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse().ok())
                .unwrap_or(0);
            json!({
                "id": a["id"],
                "hostname": a["hostname"],
                "port": port,
                "pid": format!("slave(1)@{http}"),
                "resources": a["resources"],
                "used_resources": a["used"],
                "unreserved_resources": a["unreserved"],
                "reserved_resources": a["reserved"],
                "attributes": a["attributes"],
                "active": a["active"],
                "registered_time": a["registered_time"],
                "version": s["version"],
            })
        })
        .collect();
    let active = slaves.iter().filter(|a| a["active"] == true).count();
    let frameworks: Vec<Value> = arr("frameworks")
        .iter()
        .map(|f| {
            let mine = |done: bool| -> Vec<Value> {
                all_tasks
                    .iter()
                    .filter(|t| {
                        t["framework_id"] == f["id"]
                            && terminal(t["state"].as_str().unwrap_or_default()) == done
                    })
                    .map(task)
                    .collect()
            };
            json!({
                "id": f["id"],
                "name": f["name"],
                "user": f["user"],
                "role": f["role"],
                "roles": [f["role"]],
                "principal": f["principal"],
                "active": f["active"],
                "connected": f["connected"],
                "capabilities": f["capabilities"],
                "failover_timeout": f["failover_timeout"],
                "registered_time": f["registered_time"],
                "resources": f["allocated"],
                "used_resources": f["allocated"],
                "offered_resources": f["offered"],
                "tasks": mine(false),
                "completed_tasks": mine(true),
            })
        })
        .collect();
    json!({
        "version": s["version"],
        "id": master_id,
        "pid": format!("master@{leader}"),
        "hostname": host,
        "leader": format!("master@{leader}"),
        "leader_info": json::master_info(master_id, leader),
        "start_time": s["start_time"],
        "activated_slaves": active,
        "deactivated_slaves": slaves.len() - active,
        "slaves": slaves,
        "frameworks": frameworks,
        "completed_frameworks": [],
        "unregistered_frameworks": [],
        "orphan_tasks": [],
    })
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A standby master answers `/api/v1/scheduler` with a 307 whose `Location` names the
    /// leader (Mesos semantics; pymesos follows it to the `netloc` of `Location`).
    #[tokio::test]
    async fn standby_redirects_scheduler_calls_to_the_leader() {
        let (_tx, rx) = tokio::sync::watch::channel(Some("127.0.0.9:5050".to_string()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = crate::server::standby_router(rx, false);
        tokio::spawn(async move { axum::serve(listener, app).await });
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let body = r#"{"type":"SUBSCRIBE","subscribe":{"framework_info":{"user":"u","name":"n"}}}"#;
        let req = format!(
            "POST /api/v1/scheduler HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nAccept: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await.expect("write");
        let mut resp = String::new();
        s.read_to_string(&mut resp).await.expect("read");
        assert!(resp.starts_with("HTTP/1.1 307"), "{resp}");
        assert!(
            resp.to_ascii_lowercase()
                .contains("location: http://127.0.0.9:5050/api/v1/scheduler\r\n"),
            "{resp}"
        );
    }
}
