//! Subcommand implementations. Each file is one command family.

pub(crate) mod completions;
pub(crate) mod cron;
pub(crate) mod daemon;
pub(crate) mod dev;
pub(crate) mod help;
pub(crate) mod progress;
pub(crate) mod query;
pub(crate) mod run;
pub(crate) mod security;
pub(crate) mod service;
pub(crate) mod task;
pub(crate) mod top;
pub(crate) mod version;

/// Master address: `--master`, else `BRIM_MASTER`, else 127.0.0.1:5050.
pub(crate) const DEFAULT_MASTER: &str = "127.0.0.1:5050";

/// Logs to stderr; daemons default to `info`, client commands to `warn`. `RUST_LOG` overrides.
pub(crate) fn init_logging(daemon: bool) {
    let default = if daemon { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
