//! brim's built-in long-lived frameworks, hosted by the master (DESIGN.md §6):
//!
//! - [`services`]: Marathon-like long-running services — declarative specs (instances,
//!   resources, command, env, constraints), rolling restarts bounded by `max_unavailable` /
//!   `max_surge`, scaling, and restart of failed instances with exponential backoff.
//! - [`cron`]: Chronos-like scheduled jobs — 5- or 6-field cron expressions in a time zone,
//!   concurrency policy, retries and a run history with exit codes.
//!
//! Both are ordinary frameworks built only on the public SDK (`brim-framework`): the master
//! process starts them as SDK clients of itself over loopback ([`host`]), serves their HTTP
//! API under `/api/services` and `/api/cron` on its own port, and they keep their state in
//! JSON documents under the master's work dir ([`store`]). Decision logic (validation,
//! placement, rolling-restart planning, next fire times) is pure, with time as a parameter.
#![forbid(unsafe_code)]

pub mod cron;
pub mod host;
pub mod services;
pub mod store;
mod util;
