//! Agent HTTP API (default port 5051): `/health`, `/state`, `/metrics`, sandbox files.

use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use crate::agent::Agent;
use crate::task::check_id;

/// Largest body of one sandbox read.
pub const MAX_READ: u64 = 1024 * 1024;
/// Header carrying the task's state on sandbox reads.
pub const TASK_STATE_HEADER: &str = "x-brim-task-state";

pub(crate) fn router(agent: Arc<Agent>) -> Router {
    let tls = agent.config.tls.is_some();
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/state", get(state))
        .route("/metrics", get(metrics))
        .route("/sandbox/{framework_id}/{task_id}/{file}", get(sandbox))
        .route(
            "/sandbox/{framework_id}/{task_id}/containers/{nested_id}/{file}",
            get(nested_output),
        )
        .route("/api/v1", axum::routing::post(crate::nested::api))
        .route(
            "/api/v1/executor",
            axum::routing::post(crate::executor_api::executor),
        )
        .fallback(fallback)
        .with_state(agent)
        .layer(axum::middleware::from_fn(move |r, n| certified(tls, r, n)))
}

/// With TLS, task data (`/state`, sandboxes) is served only to clients with a certificate
/// signed by the cluster CA: the master's sandbox proxy and operators' tools. `/health` and
/// `/metrics` stay open for probes and Prometheus, and the executor API for the executors
/// the agent itself started.
async fn certified(
    tls: bool,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = request.uri().path();
    // `/api/v1` (nested containers) authorizes in its handler: a certificate, or the
    // parent task's own token.
    let private = path == "/state" || path.starts_with("/sandbox");
    let certified = request
        .extensions()
        .get::<axum::extract::ConnectInfo<brim_security::Peer>>()
        .is_some_and(|c| c.0.certificate.is_some());
    if tls && private && !certified {
        return error(
            StatusCode::UNAUTHORIZED,
            "this agent serves task data only to clients with a certificate signed by the cluster CA"
                .into(),
        );
    }
    next.run(request).await
}

async fn fallback(uri: axum::http::Uri) -> Response {
    if uri.path().starts_with("/sandbox") {
        return error(
            StatusCode::BAD_REQUEST,
            "bad sandbox path: use /sandbox/<framework_id>/<task_id>/<stdout|stderr>".into(),
        );
    }
    error(
        StatusCode::NOT_FOUND,
        "not found: try /health, /state or /sandbox/<framework_id>/<task_id>/stdout".into(),
    )
}

async fn metrics(State(agent): State<Arc<Agent>>, headers: axum::http::HeaderMap) -> Response {
    // Prometheus asks for OpenMetrics; anything else (curl, promtool) gets the classic text.
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    match tokio::task::spawn_blocking(move || crate::metrics::render(&agent)).await {
        Ok(text) if openmetrics => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            )],
            text,
        )
            .into_response(),
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            )],
            crate::metrics::to_classic_text(&text),
        )
            .into_response(),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot render metrics: {e}"),
        ),
    }
}

async fn state(State(agent): State<Arc<Agent>>) -> Json<serde_json::Value> {
    let mut v = agent.state_json();
    agent.telemetry.annotate_state(&mut v);
    v["nested_containers_running"] = agent.nested.running().into();
    if let Some(tasks) = v["tasks"].as_array_mut() {
        for t in tasks {
            let nested = t["container_id"]
                .as_str()
                .map(|c| agent.nested.describe(c))
                .unwrap_or_default();
            if !nested.is_empty() {
                t["nested_containers"] = nested.into();
            }
        }
    }
    Json(v)
}

#[derive(Debug, Deserialize)]
struct ReadQuery {
    offset: Option<u64>,
}

fn error(code: StatusCode, msg: String) -> Response {
    (code, format!("{msg}\n")).into_response()
}

/// Up to [`MAX_READ`] bytes of `path` from `offset`; a missing file is no data yet. With
/// `within`, the file must resolve inside that directory and not be a symlink (a task owns
/// its sandbox and could plant links to the agent's files).
async fn read_from(
    path: std::path::PathBuf,
    offset: u64,
    within: Option<std::path::PathBuf>,
) -> std::io::Result<Vec<u8>> {
    let read = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
        use std::os::unix::fs::OpenOptionsExt;
        if let Some(base) = within {
            match (
                path.parent().map(std::fs::canonicalize),
                std::fs::canonicalize(&base),
            ) {
                (Some(Ok(dir)), Ok(base)) if dir.starts_with(&base) => {}
                (Some(Err(e)), _) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Ok(Vec::new())
                }
                _ => {
                    return Err(std::io::Error::other(
                        "the output directory leaves the sandbox",
                    ))
                }
            }
        }
        let mut f = match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&path)
        {
            Ok(f) => f,
            // Not created yet (task still staging): no data yet.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let meta = f.metadata()?;
        if !meta.is_file() {
            return Err(std::io::Error::other("not a regular file"));
        }
        let len = meta.len();
        if offset >= len {
            return Ok(Vec::new());
        }
        f.seek(SeekFrom::Start(offset))?;
        let mut buf = Vec::new();
        f.take(MAX_READ).read_to_end(&mut buf)?;
        Ok(buf)
    })
    .await;
    read.map_err(std::io::Error::other)?
}

/// Checks a sandbox read (the offset, the ids, `stdout`/`stderr`) and finds the task: its
/// query, state and sandbox, or the error answer.
#[allow(clippy::result_large_err)]
fn output_of(
    agent: &Agent,
    query: Result<Query<ReadQuery>, axum::extract::rejection::QueryRejection>,
    framework_id: &str,
    task_id: &str,
    file: &str,
) -> Result<(ReadQuery, &'static str, std::path::PathBuf), Response> {
    let Ok(Query(q)) = query else {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "offset must be a non-negative integer".into(),
        ));
    };
    for (kind, id) in [("framework", framework_id), ("task", task_id)] {
        check_id(kind, id).map_err(|e| error(StatusCode::BAD_REQUEST, e))?;
    }
    if file != "stdout" && file != "stderr" {
        return Err(error(
            StatusCode::BAD_REQUEST,
            format!("unknown sandbox file `{file}`: use stdout or stderr"),
        ));
    }
    let (state, dir) = agent.lookup(framework_id, task_id).ok_or_else(|| {
        error(
            StatusCode::NOT_FOUND,
            format!("task `{task_id}` of framework `{framework_id}` is unknown to this agent"),
        )
    })?;
    Ok((q, state, dir))
}

/// `GET /sandbox/{framework}/{task}/containers/{nested}/{stdout|stderr}`: a nested
/// container's output (same offsets and limits as the task's).
async fn nested_output(
    State(agent): State<Arc<Agent>>,
    Path((framework_id, task_id, nested_id, file)): Path<(String, String, String, String)>,
    query: Result<Query<ReadQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if let Err(e) = crate::nested::check_nested_id(&nested_id) {
        return error(StatusCode::BAD_REQUEST, e);
    }
    let (q, task_state, dir) = match output_of(&agent, query, &framework_id, &task_id, &file) {
        Ok(found) => found,
        Err(refused) => return refused,
    };
    let path = dir
        .join(crate::nested::SANDBOX_DIR)
        .join(&nested_id)
        .join(&file);
    match read_from(path, q.offset.unwrap_or(0), Some(dir)).await {
        Ok(bytes) => (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                ),
                (
                    header::HeaderName::from_static(TASK_STATE_HEADER),
                    HeaderValue::from_static(task_state),
                ),
            ],
            bytes,
        )
            .into_response(),
        Err(e) => error(
            StatusCode::BAD_REQUEST,
            format!("cannot read {file} of nested container `{nested_id}`: {e}"),
        ),
    }
}

async fn sandbox(
    State(agent): State<Arc<Agent>>,
    Path((framework_id, task_id, file)): Path<(String, String, String)>,
    query: Result<Query<ReadQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let (q, task_state, dir) = match output_of(&agent, query, &framework_id, &task_id, &file) {
        Ok(found) => found,
        Err(refused) => return refused,
    };
    let offset = q.offset.unwrap_or(0);
    let path = dir.join(&file);
    let bytes = match read_from(path, offset, None).await {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot read {file}: {e}"),
            )
        }
    };
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            ),
            (
                header::HeaderName::from_static(TASK_STATE_HEADER),
                HeaderValue::from_static(task_state),
            ),
        ],
        bytes,
    )
        .into_response()
}
