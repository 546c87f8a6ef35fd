//! The driver: subscription, event loop, acknowledgements, heartbeat watchdog, failover,
//! and the calls a framework makes.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use brim_proto::v1::scheduler_client::SchedulerClient;
use brim_proto::v1::{self, event, operation, reconcile_request, Filters, FrameworkInfo};
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};

use crate::{DriverError, Scheduler};

/// Largest event the driver accepts (one event can carry many offers).
const MAX_EVENT_BYTES: usize = 4 * brim_proto::MAX_MESSAGE_BYTES;
/// Heartbeat interval assumed when the master announces none.
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(15);

/// How the driver connects and behaves. Build with [`DriverConfig::new`], then adjust fields.
#[derive(Clone, Debug)]
pub struct DriverConfig {
    /// Master address, `host:port` (the gRPC and HTTP port, default 5050).
    pub master: String,
    /// Sent on every subscription; `id` is filled in by the driver on re-subscription.
    pub framework: FrameworkInfo,
    /// Deadline of each unary call (accept, decline, ...).
    pub call_timeout: Duration,
    /// Deadline to open a connection and get the subscription answered.
    pub connect_timeout: Duration,
    /// First and largest delay between reconnection attempts (doubling in between).
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Give up (and return [`DriverError::ReconnectTimeout`]) after being unable to
    /// subscribe for this long; `None` retries forever.
    pub reconnect_timeout: Option<Duration>,
    /// Reconnect when no event (heartbeats included) arrived for this many heartbeat intervals.
    pub heartbeat_misses: u32,
    /// Ask for implicit reconciliation after every re-subscription, to learn what changed
    /// while disconnected.
    pub reconcile_on_resubscribe: bool,
    /// TLS (CA, optional client certificate) and bearer token; the default is plaintext
    /// without a token, for masters started with `--insecure`.
    pub security: brim_security::ClientSecurity,
}

impl DriverConfig {
    /// Defaults: role `*`, the current `$USER`, failover timeout 60 s, 10 s call timeout,
    /// backoff 250 ms..10 s, retry forever, 3 missed heartbeats, reconcile on failover.
    pub fn new(master: impl Into<String>, framework_name: impl Into<String>) -> Self {
        DriverConfig {
            master: master.into(),
            framework: FrameworkInfo {
                user: std::env::var("USER").unwrap_or_default(),
                name: framework_name.into(),
                id: String::new(),
                role: "*".to_string(),
                failover_timeout: 60.0,
                capabilities: Vec::new(),
                hostname: hostname(),
                principal: String::new(),
            },
            call_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            backoff_min: Duration::from_millis(250),
            backoff_max: Duration::from_secs(10),
            reconnect_timeout: None,
            heartbeat_misses: 3,
            reconcile_on_resubscribe: true,
            security: brim_security::ClientSecurity::default(),
        }
    }
}

impl DriverConfig {
    /// Declares a capability (e.g. [`brim_proto::CAPABILITY_REVOCABLE_RESOURCES`] to receive
    /// revocable offers); declaring one twice is harmless.
    pub fn with_capability(mut self, capability: &str) -> Self {
        if !self.framework.capabilities.iter().any(|c| c == capability) {
            self.framework.capabilities.push(capability.to_string());
        }
        self
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_default()
}

/// Checks `host:port` (a leading `http://` or `https://` is tolerated) and returns
/// `<scheme>://host:port`.
pub(crate) fn master_uri(address: &str, scheme: &str) -> Result<String, DriverError> {
    let invalid = |why: &str| DriverError::InvalidMaster {
        address: address.to_string(),
        why: why.to_string(),
    };
    let hostport = address
        .strip_prefix("http://")
        .or_else(|| address.strip_prefix("https://"))
        .unwrap_or(address);
    let (host, port) = hostport
        .rsplit_once(':')
        .ok_or_else(|| invalid("no port"))?;
    if host.is_empty() || host.contains('/') {
        return Err(invalid("bad host"));
    }
    port.parse::<u16>()
        .map_err(|_| invalid(&format!("`{port}` is not a port number")))?;
    Ok(format!("{scheme}://{hostport}"))
}

fn endpoint_for(address: &str, config: &DriverConfig) -> Result<Endpoint, DriverError> {
    let invalid = |why: String| DriverError::InvalidMaster {
        address: address.to_string(),
        why,
    };
    let uri = master_uri(address, config.security.scheme())?;
    let mut endpoint = Endpoint::from_shared(uri)
        .map_err(|e| invalid(e.to_string()))?
        .connect_timeout(config.connect_timeout)
        .tcp_nodelay(true)
        // A master that vanished (no FIN: power off, partition) is noticed on the event
        // stream by the missed heartbeats, and on the connection itself by keepalives.
        .tcp_keepalive(Some(brim_security::TCP_KEEPALIVE))
        .http2_keep_alive_interval(brim_security::HTTP2_KEEPALIVE)
        .keep_alive_timeout(brim_security::HTTP2_KEEPALIVE)
        .keep_alive_while_idle(true);
    if let Some(tls) = &config.security.tls {
        let tls = tls.tonic_config().map_err(|e| invalid(e.to_string()))?;
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| invalid(e.to_string()))?;
    }
    Ok(endpoint)
}

/// The `authorization` metadata of every call, from the configured token.
fn token_metadata(
    config: &DriverConfig,
) -> Result<Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>, DriverError> {
    config
        .security
        .token
        .as_ref()
        .map(|t| {
            format!("Bearer {t}")
                .parse()
                .map_err(|_| DriverError::InvalidMaster {
                    address: config.master.clone(),
                    why: "the token must be printable ASCII".into(),
                })
        })
        .transpose()
}

/// Runs a [`Scheduler`] against a master. Create it, keep a [`DriverHandle`] if calls must be
/// made from outside the callbacks, then `run` it.
pub struct Driver {
    config: DriverConfig,
    /// Every master given (`host:port,host:port`), as endpoints.
    masters: Vec<Endpoint>,
    /// Which master to try next, and the leader a standby pointed at, if any.
    target: std::sync::Mutex<(usize, Option<Endpoint>)>,
    /// How long the master asked us to wait (`retry-after` on RESOURCE_EXHAUSTED).
    retry_hint: std::sync::Mutex<Option<Duration>>,
    handle: DriverHandle,
}

/// The leader a standby named in its refusal (`brim-leader` metadata), if any.
fn leader_hint(status: &tonic::Status) -> Option<String> {
    status
        .metadata()
        .get(brim_proto::LEADER_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

impl Driver {
    /// Validates the configuration. Nothing connects until [`Driver::run`].
    pub fn new(config: DriverConfig) -> Result<Self, DriverError> {
        let masters = config
            .master
            .split(',')
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .map(|m| endpoint_for(m, &config))
            .collect::<Result<Vec<_>, _>>()?;
        if masters.is_empty() {
            return Err(DriverError::InvalidMaster {
                address: config.master.clone(),
                why: "no master address given".into(),
            });
        }
        let (stop, _) = watch::channel(false);
        let handle = DriverHandle {
            inner: Arc::new(Inner {
                token: token_metadata(&config)?,
                master: config.master.clone(),
                call_timeout: config.call_timeout,
                client: RwLock::new(None),
                framework_id: RwLock::new(non_empty(&config.framework.id)),
                stop,
            }),
        };
        Ok(Driver {
            config,
            masters,
            target: std::sync::Mutex::new((0, None)),
            retry_hint: std::sync::Mutex::new(None),
            handle,
        })
    }

    /// A handle for calls; clones share the connection and the framework id.
    pub fn handle(&self) -> DriverHandle {
        self.handle.clone()
    }

    /// Subscribes and dispatches events to `scheduler` until [`DriverHandle::stop`] (or
    /// `teardown`) is called — then `Ok` — or the master aborts the framework, refuses the
    /// subscription, or stays unreachable past `reconnect_timeout`.
    pub async fn run<S: Scheduler>(self, scheduler: &mut S) -> Result<(), DriverError> {
        let mut stop = self.handle.inner.stop.subscribe();
        let mut backoff = self.config.backoff_min;
        let mut unreachable_since = Instant::now();
        loop {
            if *stop.borrow_and_update() {
                return Ok(());
            }
            let error = match self.session(scheduler, &mut stop).await {
                Session::Stopped => return Ok(()),
                Session::Fatal(e) => return Err(e),
                Session::Lost { error, subscribed } => {
                    if subscribed {
                        tracing::warn!(master = %self.config.master, %error, "disconnected from the master; reconnecting");
                        scheduler.disconnected(&self.handle).await;
                        backoff = self.config.backoff_min;
                        unreachable_since = Instant::now();
                    } else {
                        tracing::debug!(master = %self.config.master, %error, "subscription attempt failed");
                    }
                    error
                }
            };
            if let Some(limit) = self.config.reconnect_timeout {
                if unreachable_since.elapsed() >= limit {
                    return Err(DriverError::ReconnectTimeout {
                        master: self.config.master.clone(),
                        seconds: limit.as_secs_f64(),
                        last_error: error,
                    });
                }
            }
            let hint = self
                .retry_hint
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            tokio::select! {
                _ = tokio::time::sleep(jitter(retry_wait(backoff, hint))) => {}
                _ = stop.changed() => return Ok(()),
            }
            // Back off only after a whole round over the masters (or when no leader is
            // known): during a failover the next master is usually the new leader.
            let round_done = {
                let t = self.target.lock().unwrap_or_else(|p| p.into_inner());
                t.1.is_none() && t.0.is_multiple_of(self.masters.len())
            };
            if round_done {
                backoff = (backoff * 2).min(self.config.backoff_max);
            }
        }
    }

    /// One connection: subscribe, then dispatch events until the stream ends.
    async fn session<S: Scheduler>(
        &self,
        scheduler: &mut S,
        stop: &mut watch::Receiver<bool>,
    ) -> Session {
        let lost = |error: String| Session::Lost {
            error,
            subscribed: false,
        };
        // A standby's leader hint first, else the masters in turn.
        let endpoint = {
            let mut t = self.target.lock().unwrap_or_else(|p| p.into_inner());
            match t.1.take() {
                Some(leader) => leader,
                None => {
                    let e = self.masters[t.0 % self.masters.len()].clone();
                    t.0 = (t.0 + 1) % self.masters.len();
                    e
                }
            }
        };
        let channel = tokio::select! {
            c = endpoint.connect() => match c {
                Ok(c) => c,
                Err(e) => return lost(format!("cannot connect to {}: {}", endpoint.uri(), brim_proto::error_chain(&e))),
            },
            _ = stop.changed() => return Session::Stopped,
        };
        let client = SchedulerClient::new(channel).max_decoding_message_size(MAX_EVENT_BYTES);
        self.handle.set_client(client.clone());

        let previous_id = self.handle.framework_id();
        let mut info = self.config.framework.clone();
        info.id = previous_id.clone().unwrap_or_default();
        // No grpc-timeout on the request: a deadline would bound the whole event stream.
        let request = self.handle.authorized(v1::SubscribeRequest {
            framework_info: Some(info),
        });
        let answer_within = self.config.connect_timeout + self.config.call_timeout;
        let mut client = client;
        let answered = tokio::select! {
            r = tokio::time::timeout(answer_within, client.subscribe(request)) => r,
            _ = stop.changed() => return Session::Stopped,
        };
        let mut stream = match answered {
            Err(_) => {
                return lost(format!(
                    "the master did not answer the subscription within {:.0}s",
                    answer_within.as_secs_f64()
                ))
            }
            Ok(Ok(r)) => r.into_inner(),
            Ok(Err(status)) if is_retryable(status.code()) => {
                if let Some(wait) = brim_proto::retry_after(&status) {
                    tracing::warn!(master = %endpoint.uri(), "the master is rate limiting subscriptions: {}", status.message());
                    *self.retry_hint.lock().unwrap_or_else(|p| p.into_inner()) = Some(wait);
                }
                if let Some(leader) = leader_hint(&status) {
                    if let Ok(e) = endpoint_for(&leader, &self.config) {
                        self.target.lock().unwrap_or_else(|p| p.into_inner()).1 = Some(e);
                    }
                }
                return lost(format!("subscribe failed: {}", status.message()));
            }
            Ok(Err(status)) => {
                return Session::Fatal(DriverError::SubscribeRefused {
                    master: self.config.master.clone(),
                    code: status.code(),
                    message: status.message().to_string(),
                });
            }
        };

        let mut subscribed = false;
        let mut watchdog = self.config.connect_timeout + self.config.call_timeout;
        let lost = |error: String, subscribed: bool| Session::Lost { error, subscribed };
        loop {
            let next = tokio::select! {
                biased;
                _ = stop.changed() => return Session::Stopped,
                r = tokio::time::timeout(watchdog, stream.message()) => r,
            };
            let event = match next {
                Err(_) => {
                    return lost(
                        format!(
                            "no event from the master for {:.1}s",
                            watchdog.as_secs_f64()
                        ),
                        subscribed,
                    )
                }
                Ok(Err(status)) => {
                    return lost(
                        format!("event stream failed: {}", status.message()),
                        subscribed,
                    )
                }
                Ok(Ok(None)) => {
                    return lost("the master closed the event stream".into(), subscribed)
                }
                Ok(Ok(Some(v1::Event { event: None }))) => continue,
                Ok(Ok(Some(v1::Event { event: Some(e) }))) => e,
            };
            let h = &self.handle;
            match event {
                event::Event::Subscribed(s) => {
                    if s.framework_id.is_empty() {
                        return Session::Fatal(DriverError::SubscribeRefused {
                            master: self.config.master.clone(),
                            code: tonic::Code::Internal,
                            message: "SUBSCRIBED carried no framework id".into(),
                        });
                    }
                    let interval = if s.heartbeat_interval_seconds.is_finite()
                        && s.heartbeat_interval_seconds > 0.0
                    {
                        Duration::from_secs_f64(s.heartbeat_interval_seconds.min(3600.0))
                    } else {
                        DEFAULT_HEARTBEAT
                    };
                    watchdog = interval * self.config.heartbeat_misses.max(1);
                    subscribed = true;
                    h.set_framework_id(&s.framework_id);
                    tracing::info!(framework_id = %s.framework_id, master_id = %s.master_id, "subscribed");
                    scheduler.registered(h, &s.framework_id).await;
                    if previous_id.is_some() && self.config.reconcile_on_resubscribe {
                        if let Err(e) = h.reconcile(Vec::new()).await {
                            tracing::warn!(error = %e, "implicit reconciliation after failover failed");
                        }
                    }
                }
                _ if !subscribed => {
                    tracing::warn!("ignoring an event received before SUBSCRIBED");
                }
                event::Event::Offers(o) => scheduler.offers(h, o.offers).await,
                event::Event::Rescind(r) => scheduler.rescinded(h, r.offer_id).await,
                event::Event::Message(m) => {
                    scheduler
                        .message(h, m.agent_id, m.executor_id, m.data)
                        .await
                }
                event::Event::Update(u) => {
                    let Some(status) = u.status else { continue };
                    let ack = (!status.uuid.is_empty()).then(|| v1::AcknowledgeRequest {
                        framework_id: String::new(),
                        agent_id: status.agent_id.clone(),
                        task_id: status.task_id.clone(),
                        uuid: status.uuid.clone(),
                    });
                    scheduler.update(h, status).await;
                    if let Some(ack) = ack {
                        if let Err(e) = h.acknowledge(ack).await {
                            tracing::warn!(error = %e, "acknowledging a status update failed; the master will resend it");
                        }
                    }
                }
                event::Event::Failure(f) => scheduler.failure(h, f.agent_id).await,
                event::Event::Error(e) => {
                    scheduler.error(h, e.message.clone()).await;
                    return Session::Fatal(DriverError::Aborted(e.message));
                }
                event::Event::Heartbeat(_) => {}
            }
        }
    }
}

enum Session {
    Stopped,
    Fatal(DriverError),
    Lost { error: String, subscribed: bool },
}

/// Codes after which re-subscribing can help (transport trouble, master restarting).
fn is_retryable(code: tonic::Code) -> bool {
    use tonic::Code::*;
    matches!(
        code,
        Unavailable
            | DeadlineExceeded
            | Cancelled
            | Unknown
            | Internal
            | ResourceExhausted
            | Aborted
    )
}

/// The pause before the next subscription attempt: the backoff, or the master's retry hint
/// when it asked for longer.
fn retry_wait(backoff: Duration, hint: Option<Duration>) -> Duration {
    hint.map_or(backoff, |h| h.max(backoff))
}

/// `d` plus up to 25 % pseudo-random jitter, so many frameworks do not reconnect in lockstep.
fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.subsec_nanos());
    d + d.mul_f64(f64::from(nanos % 1000) / 4000.0)
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

struct Inner {
    /// `Bearer <token>` sent with every call.
    token: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    master: String,
    call_timeout: Duration,
    client: RwLock<Option<SchedulerClient<Channel>>>,
    framework_id: RwLock<Option<String>>,
    stop: watch::Sender<bool>,
}

/// Issues calls for a framework. Cheap to clone; works inside callbacks and from other tasks
/// (e.g. a Ctrl-C handler) as long as the driver subscribed once.
#[derive(Clone)]
pub struct DriverHandle {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for DriverHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DriverHandle")
            .field("master", &self.inner.master)
            .field("framework_id", &self.framework_id())
            .finish()
    }
}

impl DriverHandle {
    /// The id the master assigned, once subscribed.
    pub fn framework_id(&self) -> Option<String> {
        self.inner
            .framework_id
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The master address this driver talks to.
    pub fn master(&self) -> &str {
        &self.inner.master
    }

    fn set_framework_id(&self, id: &str) {
        *self
            .inner
            .framework_id
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(id.to_string());
    }

    fn set_client(&self, client: SchedulerClient<Channel>) {
        *self
            .inner
            .client
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(client);
    }

    /// The framework id and a client, or `NotSubscribed`.
    fn ready(&self) -> Result<(String, SchedulerClient<Channel>), DriverError> {
        let id = self.framework_id().ok_or(DriverError::NotSubscribed)?;
        let client = self
            .inner
            .client
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or(DriverError::NotSubscribed)?;
        Ok((id, client))
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut r = self.authorized(message);
        r.set_timeout(self.inner.call_timeout);
        r
    }

    /// A request carrying the token, if any.
    fn authorized<T>(&self, message: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(message);
        if let Some(t) = &self.inner.token {
            r.metadata_mut().insert("authorization", t.clone());
        }
        r
    }

    fn fail(&self, call: &'static str) -> impl FnOnce(tonic::Status) -> DriverError + '_ {
        move |status| DriverError::from_status(&self.inner.master, call, status)
    }

    /// Accepts offers (all on the same agent) with operations; whatever the operations do not
    /// use is declined with `filters`.
    pub async fn accept(
        &self,
        offer_ids: Vec<String>,
        operations: Vec<v1::Operation>,
        filters: Filters,
    ) -> Result<(), DriverError> {
        let (framework_id, mut client) = self.ready()?;
        let req = self.request(v1::AcceptRequest {
            framework_id,
            offer_ids,
            operations,
            filters: Some(filters),
        });
        client.accept(req).await.map_err(self.fail("accept"))?;
        Ok(())
    }

    /// Launches `tasks` on one offer; the rest of the offer is declined with the default filter.
    pub async fn launch(
        &self,
        offer_id: &str,
        tasks: Vec<v1::TaskInfo>,
    ) -> Result<(), DriverError> {
        self.accept(
            vec![offer_id.to_string()],
            vec![launch_operation(tasks)],
            Filters::default(),
        )
        .await
    }

    /// Launches `tasks` from one offer as a task group (pod) named `executor_id`, run by the
    /// agent's default executor: started together, sharing a network namespace and a
    /// `$MESOS_SANDBOX/shared` directory, killed together (docs/CONTAINERIZERS.md, "Pods").
    pub async fn launch_group(
        &self,
        offer_id: &str,
        executor_id: &str,
        tasks: Vec<v1::TaskInfo>,
    ) -> Result<(), DriverError> {
        self.accept(
            vec![offer_id.to_string()],
            vec![launch_group_operation(executor_id, tasks)],
            Filters::default(),
        )
        .await
    }

    /// Declines offers; `refuse_seconds` keeps the master from re-offering those agents'
    /// resources to this framework for that long (`None` = the master's default, 5 s).
    pub async fn decline(
        &self,
        offer_ids: Vec<String>,
        refuse_seconds: Option<f64>,
    ) -> Result<(), DriverError> {
        let (framework_id, mut client) = self.ready()?;
        let req = self.request(v1::DeclineRequest {
            framework_id,
            offer_ids,
            filters: Some(Filters { refuse_seconds }),
        });
        client.decline(req).await.map_err(self.fail("decline"))?;
        Ok(())
    }

    /// Kills a task; `grace` overrides its SIGTERM→SIGKILL grace period.
    pub async fn kill(
        &self,
        task_id: &str,
        agent_id: &str,
        grace: Option<Duration>,
    ) -> Result<(), DriverError> {
        let (framework_id, mut client) = self.ready()?;
        let req = self.request(v1::KillRequest {
            framework_id,
            task_id: task_id.to_string(),
            agent_id: agent_id.to_string(),
            grace_period_seconds: grace.map(|g| g.as_secs_f64()),
        });
        client.kill(req).await.map_err(self.fail("kill"))?;
        Ok(())
    }

    /// Asks for the latest state of `(task_id, agent_id)` pairs; empty = every task the master
    /// knows for this framework (implicit reconciliation). Answers arrive as updates.
    pub async fn reconcile(&self, tasks: Vec<(String, String)>) -> Result<(), DriverError> {
        let (framework_id, mut client) = self.ready()?;
        let req = self.request(v1::ReconcileRequest {
            framework_id,
            tasks: tasks
                .into_iter()
                .map(|(task_id, agent_id)| reconcile_request::Task { task_id, agent_id })
                .collect(),
        });
        client
            .reconcile(req)
            .await
            .map_err(self.fail("reconcile"))?;
        Ok(())
    }

    /// Resumes offers after `suppress` and clears this framework's refuse filters.
    pub async fn revive(&self) -> Result<(), DriverError> {
        let (framework_id, mut client) = self.ready()?;
        let req = self.request(v1::ReviveRequest { framework_id });
        client.revive(req).await.map_err(self.fail("revive"))?;
        Ok(())
    }

    /// Sends `data` to the framework's custom executor `executor_id` on `agent_id` (Mesos
    /// MESSAGE; best effort: an executor that is not running there never gets it).
    pub async fn message(
        &self,
        agent_id: &str,
        executor_id: &str,
        data: Vec<u8>,
    ) -> Result<(), DriverError> {
        let (framework_id, mut client) = self.ready()?;
        let req = self.request(v1::MessageRequest {
            framework_id,
            agent_id: agent_id.into(),
            executor_id: executor_id.into(),
            data,
        });
        client.message(req).await.map_err(self.fail("message"))?;
        Ok(())
    }

    /// Stops offers until `revive`.
    pub async fn suppress(&self) -> Result<(), DriverError> {
        let (framework_id, mut client) = self.ready()?;
        let req = self.request(v1::SuppressRequest { framework_id });
        client.suppress(req).await.map_err(self.fail("suppress"))?;
        Ok(())
    }

    /// Unregisters the framework (the master kills its tasks) and stops the driver.
    pub async fn teardown(&self) -> Result<(), DriverError> {
        let result = async {
            let (framework_id, mut client) = self.ready()?;
            let req = self.request(v1::TeardownRequest { framework_id });
            client.teardown(req).await.map_err(self.fail("teardown"))?;
            Ok(())
        }
        .await;
        self.stop();
        result
    }

    /// Makes [`Driver::run`] return `Ok` without unregistering: the master keeps the
    /// framework's tasks for its failover timeout, so a new driver with the same id can resume.
    pub fn stop(&self) {
        self.inner.stop.send_replace(true);
    }

    /// True once `stop` or `teardown` was called.
    pub fn is_stopped(&self) -> bool {
        *self.inner.stop.borrow()
    }

    async fn acknowledge(&self, mut ack: v1::AcknowledgeRequest) -> Result<(), DriverError> {
        let (framework_id, mut client) = self.ready()?;
        ack.framework_id = framework_id;
        let req = self.request(ack);
        client
            .acknowledge(req)
            .await
            .map_err(self.fail("acknowledge"))?;
        Ok(())
    }
}

/// A `RESERVE` operation for [`DriverHandle::accept`]: `resources` (unreserved ones of the
/// offers) become reserved on their agent for `role`, which must be the framework's role;
/// from then on they are offered only to frameworks of that role, across master restarts,
/// until an `UNRESERVE`. Operations apply in order: tasks launched after it in the same
/// accept may use the reservation (resources with `reservation_role` set).
pub fn reserve_operation(resources: &brim_proto::Resources, role: &str) -> v1::Operation {
    v1::Operation {
        operation: Some(operation::Operation::Reserve(operation::Reserve {
            resources: resources.to_proto_reserved(role, ""),
        })),
    }
}

/// An `UNRESERVE` operation for [`DriverHandle::accept`]: reserved resources of the offers
/// (reserved for the framework's `role`) go back to the shared pool.
pub fn unreserve_operation(resources: &brim_proto::Resources, role: &str) -> v1::Operation {
    v1::Operation {
        operation: Some(operation::Operation::Unreserve(operation::Unreserve {
            resources: resources.to_proto_reserved(role, ""),
        })),
    }
}

/// A persistent volume as a resource: `disk_mib` of `role`'s reserved disk, known by
/// `persistence_id` on its agent and seen by tasks at `container_path` in their sandbox.
/// Use it in [`create_volume_operation`], [`destroy_volume_operation`] and in the resources
/// of the tasks that use the volume (as offers carry it back).
pub fn volume(
    role: &str,
    persistence_id: &str,
    container_path: &str,
    disk_mib: f64,
) -> v1::Resource {
    v1::Resource {
        name: "disk".into(),
        value: Some(v1::resource::Value::Scalar(disk_mib)),
        reservation_role: role.into(),
        volume: Some(v1::Volume {
            persistence_id: persistence_id.into(),
            container_path: container_path.into(),
        }),
        ..Default::default()
    }
}

/// A `CREATE` operation for [`DriverHandle::accept`]: persistent volumes (see [`volume`]) on
/// disk reserved for the framework's role (RESERVE it first, possibly in the same accept).
pub fn create_volume_operation(volumes: Vec<v1::Resource>) -> v1::Operation {
    v1::Operation {
        operation: Some(operation::Operation::Create(operation::Create { volumes })),
    }
}

/// A `DESTROY` operation for [`DriverHandle::accept`]: volumes the offers carry (no task
/// uses them) are deleted on their agent; their disk stays reserved.
pub fn destroy_volume_operation(volumes: Vec<v1::Resource>) -> v1::Operation {
    v1::Operation {
        operation: Some(operation::Operation::Destroy(operation::Destroy {
            volumes,
        })),
    }
}

/// A `LAUNCH` operation for [`DriverHandle::accept`].
pub fn launch_operation(tasks: Vec<v1::TaskInfo>) -> v1::Operation {
    v1::Operation {
        operation: Some(operation::Operation::Launch(operation::Launch {
            task_infos: tasks,
        })),
    }
}

/// A LAUNCH_GROUP operation: `tasks` as one task group under the agent's default executor
/// `executor_id` (unique per framework while the group runs).
pub fn launch_group_operation(executor_id: &str, tasks: Vec<v1::TaskInfo>) -> v1::Operation {
    v1::Operation {
        operation: Some(operation::Operation::LaunchGroup(operation::LaunchGroup {
            executor: Some(v1::ExecutorInfo {
                executor_id: executor_id.to_string(),
                name: executor_id.to_string(),
                command: None,
                container: None,
                r#type: v1::executor_info::Type::Default as i32,
            }),
            task_group: Some(v1::TaskGroup { tasks }),
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn master_addresses() {
        for ok in [
            "127.0.0.1:5050",
            "master.example:5050",
            "http://h:1",
            "[::1]:5050",
        ] {
            assert!(master_uri(ok, "http").is_ok(), "`{ok}` should be accepted");
        }
        for bad in ["", "host", ":5050", "host:port", "host:99999", "h/x:1"] {
            assert!(
                master_uri(bad, "http").is_err(),
                "`{bad}` should be rejected"
            );
        }
        assert_eq!(
            master_uri("https://h:1", "https").ok().as_deref(),
            Some("https://h:1")
        );
        assert_eq!(
            master_uri("h:1", "https").ok().as_deref(),
            Some("https://h:1")
        );
    }

    #[test]
    fn the_master_retry_hint_lengthens_the_backoff_never_shortens_it() {
        let b = Duration::from_millis(500);
        assert_eq!(retry_wait(b, None), b);
        assert_eq!(
            retry_wait(b, Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
        assert_eq!(retry_wait(b, Some(Duration::from_millis(100))), b);
        let j = jitter(Duration::from_secs(4));
        assert!(
            j >= Duration::from_secs(4) && j <= Duration::from_secs(5),
            "{j:?}"
        );
    }
}
