//! The web UI: static assets compiled into the binary (no build step, nothing fetched at run
//! time), served at `/` and `/ui/...`, plus a read-only proxy to the agents' sandbox files so a
//! browser that can reach the master can read task output without reaching the agents
//! (`/agents/{agent_id}/sandbox/{framework_id}/{task_id}/{stdout|stderr}?offset=N`).
//!
//! The page itself polls `/state` once a second; see `assets/app.js`.

use std::time::Duration;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use brim_proto::error_chain;
use brim_security::OperatorCall;
use serde::Deserialize;
use tokio::sync::oneshot;

use crate::actor::{Command, MasterHandle};
use crate::auth::{Caller, Guard};

/// How the master reaches agents' HTTP APIs: plaintext, or TLS with the master's own
/// certificate as client identity (agents serve sandboxes only to certified clients).
#[derive(Clone)]
pub(crate) struct AgentClient {
    pub(crate) http: reqwest::Client,
    pub(crate) scheme: &'static str,
}

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");

/// How long one proxied sandbox read may take.
const PROXY_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest proxied body: the agent sends at most 1 MiB per read; a little headroom.
const PROXY_MAX_BODY: usize = 2 * 1024 * 1024;
/// Header the agent sets on sandbox reads; passed through.
const TASK_STATE_HEADER: &str = "x-brim-task-state";

/// Why a proxied sandbox read failed.
#[derive(Debug, thiserror::Error)]
enum ProxyError {
    #[error("bad {kind} id `{id}`: use letters, digits, `.`, `_` or `-`")]
    BadId { kind: &'static str, id: String },
    #[error("unknown sandbox file `{0}`: use stdout or stderr")]
    BadFile(String),
    #[error("agent `{0}` is unknown to this master")]
    UnknownAgent(String),
    #[error("agent `{0}` has no HTTP address")]
    NoAddress(String),
    #[error("master is shutting down")]
    ShuttingDown,
    #[error("cannot reach agent at {addr}: {why}")]
    Unreachable { addr: String, why: String },
    #[error("{}", .0.message())]
    Denied(tonic::Status),
}

impl IntoResponse for ProxyError {
    fn into_response(self) -> Response {
        let code = match &self {
            ProxyError::BadId { .. } | ProxyError::BadFile(_) => StatusCode::BAD_REQUEST,
            ProxyError::UnknownAgent(_) => StatusCode::NOT_FOUND,
            ProxyError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::NoAddress(_) | ProxyError::Unreachable { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::Denied(s) => return crate::auth::refuse(false, s.clone()),
        };
        (code, format!("{self}\n")).into_response()
    }
}

/// The UI routes, the base of the master's HTTP router (which supplies the state).
pub(crate) fn router() -> Router<MasterHandle> {
    Router::new()
        .route("/", get(index))
        .route("/ui", get(index))
        .route("/ui/", get(index))
        .route("/ui/app.js", get(app_js))
        .route("/ui/style.css", get(style_css))
        .route(
            "/agents/{agent_id}/sandbox/{framework_id}/{task_id}/{file}",
            get(sandbox),
        )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn style_css() -> Response {
    asset("text/css; charset=utf-8", STYLE_CSS)
}

#[derive(Debug, Deserialize)]
struct ReadQuery {
    offset: Option<u64>,
}

/// Ids travel into another URL: only plain characters pass.
fn check_id(kind: &'static str, id: &str) -> Result<(), ProxyError> {
    let ok = !id.is_empty()
        && id.len() <= 256
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && id != "."
        && id != "..";
    if ok {
        Ok(())
    } else {
        Err(ProxyError::BadId {
            kind,
            id: id.chars().take(64).collect(),
        })
    }
}

/// The agent's `http_address` and the task's owner (the principal its framework had), from
/// the master's own view (the actor's `/state`).
async fn agent_address(
    master: &MasterHandle,
    agent_id: &str,
    framework_id: &str,
    task_id: &str,
) -> Result<(String, Option<String>), ProxyError> {
    let (reply, rx) = oneshot::channel();
    master
        .send(Command::State { reply })
        .await
        .map_err(|_| ProxyError::ShuttingDown)?;
    let state = rx.await.map_err(|_| ProxyError::ShuttingDown)?;
    let owner = ["tasks", "completed_tasks"]
        .iter()
        .filter_map(|k| state[*k].as_array())
        .flatten()
        .find(|t| t["framework_id"] == framework_id && t["id"] == task_id)
        .and_then(|t| t["principal"].as_str())
        .map(str::to_string);
    let agent = state["agents"]
        .as_array()
        .and_then(|agents| agents.iter().find(|a| a["id"] == agent_id))
        .ok_or_else(|| ProxyError::UnknownAgent(agent_id.to_string()))?;
    match agent["http_address"].as_str() {
        Some(addr) if !addr.is_empty() => Ok((addr.to_string(), owner)),
        _ => Err(ProxyError::NoAddress(agent_id.to_string())),
    }
}

async fn sandbox(
    State(master): State<MasterHandle>,
    Extension(guard): Extension<Arc<Guard>>,
    Extension(caller): Extension<Caller>,
    Extension(client): Extension<AgentClient>,
    Path((agent_id, framework_id, task_id, file)): Path<(String, String, String, String)>,
    query: Result<Query<ReadQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = query else {
        return (
            StatusCode::BAD_REQUEST,
            "offset must be a non-negative integer\n",
        )
            .into_response();
    };
    let target = SandboxTarget {
        agent_id: &agent_id,
        framework_id: &framework_id,
        task_id: &task_id,
        file: &file,
    };
    match proxy(&master, &guard, &caller, &client, target, q).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// One sandbox file of one task on one agent.
struct SandboxTarget<'a> {
    agent_id: &'a str,
    framework_id: &'a str,
    task_id: &'a str,
    file: &'a str,
}

async fn proxy(
    master: &MasterHandle,
    guard: &Guard,
    caller: &Caller,
    client: &AgentClient,
    target: SandboxTarget<'_>,
    q: ReadQuery,
) -> Result<Response, ProxyError> {
    let SandboxTarget {
        agent_id,
        framework_id,
        task_id,
        file,
    } = target;
    check_id("agent", agent_id)?;
    check_id("framework", framework_id)?;
    check_id("task", task_id)?;
    if file != "stdout" && file != "stderr" {
        return Err(ProxyError::BadFile(file.chars().take(64).collect()));
    }
    let (addr, owner) = agent_address(master, agent_id, framework_id, task_id).await?;
    // Reading another principal's task output is the `sandboxes` operator call.
    guard
        .check_operator(
            caller.principal.as_deref(),
            OperatorCall::Sandboxes,
            owner.as_deref(),
        )
        .map_err(ProxyError::Denied)?;
    let offset = q.offset.unwrap_or(0);
    let unreachable = |why: String| ProxyError::Unreachable {
        addr: addr.clone(),
        why,
    };
    let url = format!(
        "{}://{addr}/sandbox/{framework_id}/{task_id}/{file}?offset={offset}",
        client.scheme
    );
    let resp = tokio::time::timeout(PROXY_TIMEOUT, client.http.get(&url).send())
        .await
        .map_err(|_| unreachable("timed out".into()))?
        .map_err(|e| unreachable(error_chain(&e)))?;
    let status = resp.status();
    let task_state = resp.headers().get(TASK_STATE_HEADER).cloned();
    let body = tokio::time::timeout(PROXY_TIMEOUT, async {
        let mut resp = resp;
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| error_chain(&e))? {
            body.extend_from_slice(&chunk);
            if body.len() > PROXY_MAX_BODY {
                return Err("the agent sent more than a sandbox read holds".to_string());
            }
        }
        Ok(body)
    })
    .await
    .map_err(|_| unreachable("timed out reading the body".into()))?
    .map_err(unreachable)?;
    let mut out = Response::new(Body::from(body));
    *out.status_mut() = status;
    let headers = out.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(v) = task_state {
        headers.insert(TASK_STATE_HEADER, v);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_that_could_escape_the_url_are_refused() {
        let check = |id: &str, ok: bool| assert_eq!(check_id("task", id).is_ok(), ok, "{id:?}");
        check("brim-run-1a2b.0", true);
        check("task_1", true);
        check("", false);
        check("..", false);
        check("a/b", false);
        check("a?offset=1", false);
        check("a%2Fb", false);
        check(&"x".repeat(257), false);
    }

    #[test]
    fn assets_reference_each_other() {
        assert!(INDEX_HTML.contains("/ui/app.js"));
        assert!(INDEX_HTML.contains("/ui/style.css"));
        assert!(APP_JS.contains("/state"));
        assert!(APP_JS.contains("/agents/"));
    }
}
