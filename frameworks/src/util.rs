//! Small helpers shared by the hosted frameworks: wall-clock milliseconds, answering offers
//! and HTTP errors.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::services::spec::FieldProblem;

/// Milliseconds since the Unix epoch (the frameworks' persisted clock).
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// How long declined (and partly used) offers stay away while work still waits for resources.
pub(crate) const REFUSE_WAITING: f64 = 1.0;
/// The same when nothing waits: the framework suppresses offers soon anyway.
pub(crate) const REFUSE_IDLE: f64 = 10.0;

/// Launches `accepts` (one accept per offer) and declines the rest, with a refuse filter that
/// depends on whether work still waits. Returns the task ids of every launch the master
/// refused, with the error, so the caller can put that work back in line.
pub(crate) async fn answer_offers(
    driver: &brim_framework::DriverHandle,
    accepts: Vec<(String, Vec<brim_framework::v1::TaskInfo>)>,
    declines: Vec<String>,
    still_waiting: bool,
) -> Vec<(Vec<String>, brim_framework::DriverError)> {
    let refuse = if still_waiting {
        REFUSE_WAITING
    } else {
        REFUSE_IDLE
    };
    let mut failed = Vec::new();
    for (offer_id, tasks) in accepts {
        let ids: Vec<String> = tasks.iter().map(|t| t.task_id.clone()).collect();
        let filters = brim_framework::v1::Filters {
            refuse_seconds: Some(refuse),
        };
        if let Err(e) = driver
            .accept(
                vec![offer_id],
                vec![brim_framework::launch_operation(tasks)],
                filters,
            )
            .await
        {
            failed.push((ids, e));
        }
    }
    if !declines.is_empty() {
        if let Err(e) = driver.decline(declines, Some(refuse)).await {
            tracing::warn!(error = %e, "declining offers failed");
        }
    }
    failed
}

/// An HTTP API error: `{"error": "...", "problems": [{"field": ..., "problem": ...}]}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
    pub(crate) problems: Vec<FieldProblem>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            problems: Vec::new(),
        }
    }

    pub(crate) fn not_found(what: &str, id: &str) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, format!("no {what} named `{id}`"))
    }

    pub(crate) fn internal(message: impl std::fmt::Display) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            axum::Json(serde_json::json!({
                "error": self.message,
                "problems": self.problems,
            })),
        )
            .into_response()
    }
}

/// Parses a JSON body ourselves so a bad one gets our error shape (with line and column).
pub(crate) fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")))
}
