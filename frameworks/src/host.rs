//! Hosting the built-in frameworks inside the master process: open their state under the
//! master's work dir, give the master their HTTP routes, and run them as SDK clients of the
//! master over loopback (failing over with it: they re-subscribe with their stored ids).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use brim_framework::{ClientSecurity, Driver, DriverConfig, DriverError, Scheduler};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::cron::{self, Cron};
use crate::services::{self, Services};
use crate::store::StoreError;

/// How long the master keeps the hosted frameworks' tasks while they are away (a week).
const FAILOVER_TIMEOUT_SECS: f64 = 7.0 * 24.0 * 3600.0;

/// User the hosted frameworks' tasks run as unless a service or job names one (agents
/// refuse root tasks by default).
pub const DEFAULT_TASK_USER: &str = "nobody";

/// Why the hosted frameworks could not start.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("hosted frameworks: {0}")]
    Store(#[from] StoreError),
}

/// The services and cron frameworks' state, before and while they run.
#[derive(Clone)]
pub struct Hosted {
    services: Arc<Services>,
    cron: Arc<Cron>,
}

impl Hosted {
    /// Loads `dir/services.json` and `dir/cron.json` (absent files are empty states).
    pub fn open(dir: &Path) -> Result<Self, HostError> {
        Ok(Hosted {
            services: Arc::new(Services::open(&dir.join("services.json"))?),
            cron: Arc::new(Cron::open(&dir.join("cron.json"))?),
        })
    }

    /// `/api/services/...` and `/api/cron/...`, to merge into the master's router.
    pub fn router(&self) -> axum::Router {
        services::router(self.services.clone()).merge(cron::router(self.cron.clone()))
    }

    /// Starts both frameworks against `master` (host:port, normally loopback), connecting
    /// with `security` (the master's own certificate when it serves TLS).
    pub fn start(&self, master: &str, security: ClientSecurity) -> HostedFrameworks {
        self.services.set_master(master, security.clone());
        let (stop, stop_rx) = watch::channel(false);
        let s = self.services.clone();
        let c = self.cron.clone();
        let tasks = vec![
            tokio::spawn(supervise(
                master.to_string(),
                security.clone(),
                services::FRAMEWORK_NAME,
                stop_rx.clone(),
                {
                    let s = s.clone();
                    move || s.framework_id()
                },
                {
                    let s = s.clone();
                    move || s.forget_framework()
                },
                {
                    let s = s.clone();
                    move || services::ServicesScheduler {
                        services: s.clone(),
                    }
                },
                move |h| tokio::spawn(services::run_loop(s.clone(), h)),
            )),
            tokio::spawn(supervise(
                master.to_string(),
                security,
                cron::FRAMEWORK_NAME,
                stop_rx,
                {
                    let c = c.clone();
                    move || c.framework_id()
                },
                {
                    let c = c.clone();
                    move || c.forget_framework()
                },
                {
                    let c = c.clone();
                    move || cron::CronScheduler { cron: c.clone() }
                },
                move |h| tokio::spawn(cron::run_loop(c.clone(), h)),
            )),
        ];
        HostedFrameworks { stop, tasks }
    }
}

/// Running hosted frameworks; `stop` disconnects them without tearing them down, so their
/// tasks keep running and the next master start resumes them.
pub struct HostedFrameworks {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl HostedFrameworks {
    pub async fn stop(self) {
        self.stop.send_replace(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }
}

/// Runs one framework until stopped: (re)creates its driver with the stored framework id;
/// if the master refuses that id (it forgot the framework), starts over with a fresh one.
#[allow(clippy::too_many_arguments)]
async fn supervise<S, F>(
    master: String,
    security: ClientSecurity,
    name: &'static str,
    mut stop: watch::Receiver<bool>,
    stored_id: impl Fn() -> Option<String> + Send,
    forget: impl Fn() + Send,
    make: impl Fn() -> S + Send,
    spawn_loop: F,
) where
    S: Scheduler,
    F: Fn(brim_framework::DriverHandle) -> JoinHandle<()> + Send,
{
    loop {
        let mut config = DriverConfig::new(&master, name);
        config.security = security.clone();
        config.framework.failover_timeout = FAILOVER_TIMEOUT_SECS;
        config.framework.user = DEFAULT_TASK_USER.into();
        config.framework.id = stored_id().unwrap_or_default();
        let driver = match Driver::new(config) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(framework = name, error = %e, "cannot create the driver");
                return;
            }
        };
        let handle = driver.handle();
        let ticker = spawn_loop(handle.clone());
        let mut scheduler = make();
        let result = {
            let run = driver.run(&mut scheduler);
            tokio::pin!(run);
            tokio::select! {
                r = &mut run => r,
                _ = stopped(&mut stop) => {
                    handle.stop();
                    let _ = run.await;
                    Ok(())
                }
            }
        };
        ticker.abort();
        match result {
            Ok(()) => return,
            Err(e @ (DriverError::SubscribeRefused { .. } | DriverError::Aborted(_))) => {
                tracing::warn!(framework = name, error = %e, "the master refused our framework id; subscribing afresh");
                forget();
            }
            Err(e) => {
                tracing::warn!(framework = name, error = %e, "framework driver stopped; restarting")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stopped(&mut stop) => return,
        }
    }
}

/// Resolves once `stop` is set (the `Ref` `wait_for` returns is not `Send`; drop it here).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|v| *v).await;
}
