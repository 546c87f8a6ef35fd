//! brim's wire vocabulary: the `brim.v1` protobuf messages and gRPC services, and
//! [`Resources`], the resource arithmetic (scalars, ranges, sets) that master, agent and
//! frameworks all share.
#![forbid(unsafe_code)]

/// Generated protobuf messages and tonic clients/servers for package `brim.v1`.
#[allow(unreachable_pub, clippy::all, clippy::unwrap_used, missing_docs)]
pub mod v1 {
    tonic::include_proto!("brim.v1");
}

pub mod recordio;
pub mod resources;

pub use resources::{RangeSet, ResourceError, Resources};

/// Largest gRPC message master and agent accept (4 MiB, gRPC's usual default).
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// HTTP header and gRPC metadata key with which a standby master names the leader's
/// `host:port`; clients reconnect there.
pub const LEADER_HEADER: &str = "brim-leader";

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
