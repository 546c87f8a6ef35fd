//! Small helpers shared by the hosted frameworks: wall-clock milliseconds and HTTP errors.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::services::spec::FieldProblem;

/// Milliseconds since the Unix epoch (the frameworks' persisted clock).
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
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
