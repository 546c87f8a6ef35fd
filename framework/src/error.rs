//! Errors of the driver and its calls.

/// Why the driver or one of its calls failed.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("invalid master address `{address}`: {why} (expected host:port, e.g. 127.0.0.1:5050)")]
    InvalidMaster { address: String, why: String },
    #[error(
        "not subscribed yet: calls need the framework id the master assigns on subscription; \
         issue them from Scheduler callbacks (after `registered`)"
    )]
    NotSubscribed,
    #[error("the master at {master} rejected {call}: {message}")]
    Rejected {
        master: String,
        call: &'static str,
        code: tonic::Code,
        message: String,
    },
    #[error(
        "cannot reach the master at {master} for {call}: {message}; is a master running there?"
    )]
    Unavailable {
        master: String,
        call: &'static str,
        message: String,
    },
    #[error("the master at {master} refused the subscription: {message}")]
    SubscribeRefused {
        master: String,
        code: tonic::Code,
        message: String,
    },
    #[error(
        "lost the master at {master} and could not re-subscribe within {seconds:.0}s \
         (last error: {last_error}); check the master is running and reachable"
    )]
    ReconnectTimeout {
        master: String,
        seconds: f64,
        last_error: String,
    },
    #[error("the master aborted this framework: {0}")]
    Aborted(String),
}

impl DriverError {
    /// Classifies a gRPC status returned by `call`.
    pub(crate) fn from_status(master: &str, call: &'static str, status: tonic::Status) -> Self {
        let message = if status.message().is_empty() {
            status.code().description().to_string()
        } else {
            status.message().to_string()
        };
        match status.code() {
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
                DriverError::Unavailable {
                    master: master.to_string(),
                    call,
                    message,
                }
            }
            code => DriverError::Rejected {
                master: master.to_string(),
                call,
                code,
                message,
            },
        }
    }

    /// The gRPC code of a rejected call, if the master answered.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            DriverError::Rejected { code, .. } | DriverError::SubscribeRefused { code, .. } => {
                Some(*code)
            }
            _ => None,
        }
    }
}
