//! brim's wire vocabulary: the `brim.v1` protobuf messages and gRPC services, and
//! [`Resources`], the resource arithmetic (scalars, ranges, sets) that master, agent and
//! frameworks all share.
#![forbid(unsafe_code)]

/// Generated protobuf messages and tonic clients/servers for package `brim.v1`.
#[allow(unreachable_pub, clippy::all, clippy::unwrap_used, missing_docs)]
pub mod v1 {
    tonic::include_proto!("brim.v1");
}

pub mod mesos;
pub mod recordio;
pub mod resources;

pub use resources::{RangeSet, ResourceError, Resources};

/// Largest gRPC message master and agent accept (4 MiB, gRPC's usual default).
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// HTTP header and gRPC metadata key with which a standby master names the leader's
/// `host:port`; clients reconnect there.
pub const LEADER_HEADER: &str = "brim-leader";

/// HTTP header and gRPC metadata key with which the master, refusing an attempt over its
/// rate limit (429 / `RESOURCE_EXHAUSTED`), says in how many seconds to retry.
pub const RETRY_AFTER_HEADER: &str = "retry-after";

/// Longest retry hint a client follows (a larger one is taken as this).
pub const MAX_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(300);

/// The retry hint of a refusal: `retry-after` seconds (integer or decimal), capped at
/// [`MAX_RETRY_AFTER`]; `None` when absent or not a non-negative number.
pub fn retry_after(status: &tonic::Status) -> Option<std::time::Duration> {
    let v = status.metadata().get(RETRY_AFTER_HEADER)?.to_str().ok()?;
    parse_retry_after(v)
}

/// `Retry-After` as seconds (the HTTP-date form is not used by brim).
pub fn parse_retry_after(value: &str) -> Option<std::time::Duration> {
    let secs: f64 = value.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0)
        .then(|| std::time::Duration::from_secs_f64(secs.min(MAX_RETRY_AFTER.as_secs_f64())))
}

/// Capability a framework declares to receive revocable (oversubscribed) resources.
pub const CAPABILITY_REVOCABLE_RESOURCES: &str = "REVOCABLE_RESOURCES";
/// Capability a framework declares to see TASK_UNREACHABLE instead of TASK_LOST.
pub const CAPABILITY_PARTITION_AWARE: &str = "PARTITION_AWARE";

impl v1::TaskState {
    /// True for states after which the task never changes again.
    pub fn is_terminal(self) -> bool {
        use v1::TaskState::*;
        matches!(
            self,
            TaskFinished
                | TaskFailed
                | TaskKilled
                | TaskError
                | TaskLost
                | TaskDropped
                | TaskGone
                | TaskGoneByOperator
        )
    }

    /// Mesos-style short name, e.g. `TASK_RUNNING`.
    pub fn name(self) -> &'static str {
        self.as_str_name()
    }
}

/// An error followed by its sources, `outer: inner: root` (the outer message of transport
/// errors rarely says why).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

#[cfg(test)]
mod retry_tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn retry_hints_are_read_and_capped() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after(" 0.5 "), Some(Duration::from_millis(500)));
        assert_eq!(parse_retry_after("999999"), Some(MAX_RETRY_AFTER));
        for bad in [
            "",
            "-1",
            "soon",
            "NaN",
            "inf",
            "Wed, 21 Oct 2015 07:28:00 GMT",
        ] {
            assert_eq!(parse_retry_after(bad), None, "{bad:?}");
        }
        let mut s = tonic::Status::resource_exhausted("slow down");
        assert_eq!(retry_after(&s), None);
        s.metadata_mut()
            .insert(RETRY_AFTER_HEADER, "2".parse().expect("ascii"));
        assert_eq!(retry_after(&s), Some(Duration::from_secs(2)));
    }
}
