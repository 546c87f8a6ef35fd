//! Mesos v1 **executor HTTP API** on the agent port (`POST /api/v1/executor`), so a custom
//! executor named in a task's `ExecutorInfo` (e.g. pymesos's `MesosExecutorDriver`) runs
//! tasks on brim. See docs/MESOS_API.md.
//!
//! Model: the first task naming `(framework, executor_id)` starts the executor's command as
//! that task's container (own cgroup, sandbox, supervisor; the Mesos executor environment from
//! [`environment`]); later tasks naming the same executor while it lives are handed to it
//! without a process of their own. Tasks reach the executor as `LAUNCH` events once it
//! SUBSCRIBEs (queued until then); a kill becomes `KILL`, a framework shutdown `SHUTDOWN`.
//! The executor's `UPDATE`s go through the agent's normal status-update queue (checkpointed,
//! resent to the master until the framework acknowledges) and the framework's acknowledgement
//! is handed back as `ACKNOWLEDGED`. When the executor's process exits, its tasks that are
//! not terminal fail with `REASON_EXECUTOR_TERMINATED`.
//!
//! Architecture Invariants:
//! - the registry lock is never held while taking the agent's state lock (the agent may call
//!   in here with its state locked);
//! - an event stream is bounded (`STREAM_EVENTS`); a client that stops reading loses its
//!   stream and gets the queued tasks again when it re-subscribes.

pub(crate) mod json;
pub(crate) mod reconcile;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use brim_proto::mesos::{self, ContentTypeError, MediaType, MesosMessage};
use brim_proto::recordio;
use brim_proto::v1;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::agent::{Agent, TaskKey};

/// Events buffered for one executor stream before it is dropped as too slow.
const STREAM_EVENTS: usize = 1024;
/// Largest request body accepted (same bound as the master's Mesos endpoint).
const MAX_BODY_BYTES: usize = brim_proto::MAX_MESSAGE_BYTES;

/// (framework id, executor id).
pub(crate) type ExecutorKey = (String, String);

#[derive(Debug)]
struct Executor {
    info: v1::ExecutorInfo,
    framework: v1::FrameworkInfo,
    /// The task whose container runs the executor's process.
    container_task: TaskKey,
    container_id: String,
    /// Task ids handed to this executor (launched or queued).
    tasks: Vec<String>,
    /// LAUNCH events waiting for a subscription.
    queued: Vec<Value>,
    stream: Option<mpsc::Sender<Bytes>>,
    /// Kills the executor's container (grace before SIGKILL).
    kill: mpsc::UnboundedSender<Duration>,
    /// Re-created from checkpoints after an agent restart and not subscribed since.
    awaiting_resubscription: bool,
    /// Killed for not re-subscribing in time (its tasks fail with that reason).
    reregistration_timed_out: bool,
}

impl Executor {
    /// Sends one event; drops the stream when the client is gone or too slow.
    fn send(&mut self, event: &Value) -> bool {
        let Some(tx) = &self.stream else {
            return false;
        };
        let bytes = Bytes::from(recordio::encode(event.to_string().as_bytes()));
        if tx.try_send(bytes).is_err() {
            tracing::info!(executor = %self.info.executor_id, "executor stream closed or too slow; dropping it");
            self.stream = None;
            return false;
        }
        true
    }
}

/// The live custom executors of this agent.
#[derive(Debug, Default)]
pub(crate) struct Executors {
    inner: Mutex<HashMap<ExecutorKey, Executor>>,
    /// Executor → framework messages waiting for the master link (best effort, bounded).
    outgoing: Mutex<std::collections::VecDeque<v1::agent_message::ExecutorMessage>>,
}

/// Executor messages kept while the master link is busy or down; more are dropped.
const MAX_OUTGOING_MESSAGES: usize = 1024;

impl Executors {
    fn lock(&self) -> MutexGuard<'_, HashMap<ExecutorKey, Executor>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A framework message for executor `(framework_id, executor_id)`: a MESSAGE event.
    /// False when that executor is not subscribed here (the message is dropped).
    pub(crate) fn message(&self, framework_id: &str, executor_id: &str, data: &[u8]) -> bool {
        let mut all = self.lock();
        let key = (framework_id.to_string(), executor_id.to_string());
        all.get_mut(&key).is_some_and(|e| {
            e.send(&json!({"type": "MESSAGE", "message": {"data": json::base64_encode(data)}}))
        })
    }

    /// Queues an executor's message for its framework; false when the queue is full.
    fn queue_message(&self, framework_id: &str, executor_id: &str, data: Vec<u8>) -> bool {
        let mut q = self.outgoing.lock().unwrap_or_else(|p| p.into_inner());
        if q.len() >= MAX_OUTGOING_MESSAGES {
            return false;
        }
        q.push_back(v1::agent_message::ExecutorMessage {
            framework_id: framework_id.to_string(),
            executor_id: executor_id.to_string(),
            data,
        });
        true
    }

    /// The queued executor messages, for the master link to send.
    pub(crate) fn take_messages(&self) -> Vec<v1::agent_message::ExecutorMessage> {
        let mut q = self.outgoing.lock().unwrap_or_else(|p| p.into_inner());
        q.drain(..).collect()
    }

    /// Whether `(framework, executor_id)` has a live executor (which then takes `task`).
    pub(crate) fn is_live(&self, key: &ExecutorKey) -> bool {
        self.lock().contains_key(key)
    }

    /// Registers an executor whose process is about to start as `container_task`'s container.
    pub(crate) fn start(
        &self,
        framework: v1::FrameworkInfo,
        info: v1::ExecutorInfo,
        container_task: TaskKey,
        container_id: String,
        kill: mpsc::UnboundedSender<Duration>,
    ) {
        let key = (framework.id.clone(), info.executor_id.clone());
        self.lock().insert(
            key,
            Executor {
                info,
                framework,
                container_task,
                container_id,
                tasks: Vec::new(),
                queued: Vec::new(),
                stream: None,
                kill,
                awaiting_resubscription: false,
                reregistration_timed_out: false,
            },
        );
    }

    /// Re-creates an executor after an agent restart (from its tasks' checkpoints): its
    /// process still runs as `container_task`'s container, running `tasks`; it is awaiting
    /// re-subscription until it SUBSCRIBEs again (see [`Executors::expire`]).
    pub(crate) fn recover(
        &self,
        framework: v1::FrameworkInfo,
        info: v1::ExecutorInfo,
        container_task: TaskKey,
        container_id: String,
        tasks: Vec<String>,
        kill: mpsc::UnboundedSender<Duration>,
    ) {
        let key = (framework.id.clone(), info.executor_id.clone());
        self.lock().insert(
            key,
            Executor {
                info,
                framework,
                container_task,
                container_id,
                tasks,
                queued: Vec::new(),
                stream: None,
                kill,
                awaiting_resubscription: true,
                reregistration_timed_out: false,
            },
        );
    }

    /// Executors re-created after a restart that have not re-subscribed.
    pub(crate) fn awaiting_resubscription(&self) -> Vec<ExecutorKey> {
        self.lock()
            .iter()
            .filter(|(_, e)| e.awaiting_resubscription)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// The re-registration timeout passed: kills `key`'s container (SIGKILL) if it still
    /// has not re-subscribed; its tasks then fail with REASON_EXECUTOR_REREGISTRATION_TIMEOUT.
    /// True when it was killed.
    pub(crate) fn expire(&self, key: &ExecutorKey) -> bool {
        let mut all = self.lock();
        let Some(e) = all.get_mut(key).filter(|e| e.awaiting_resubscription) else {
            return false;
        };
        e.reregistration_timed_out = true;
        let _ = e.kill.send(Duration::ZERO);
        true
    }

    /// Hands a task to its executor: LAUNCH now when subscribed, else when it subscribes.
    pub(crate) fn launch(&self, key: &ExecutorKey, task: &v1::TaskInfo, agent_id: &str) {
        let mut all = self.lock();
        let Some(e) = all.get_mut(key) else {
            return;
        };
        let event = json!({
            "type": "LAUNCH",
            "launch": {"task": json::task_json(task, &key.0, agent_id, &e.framework.role)},
        });
        e.tasks.push(task.task_id.clone());
        if !e.send(&event) {
            e.queued.push(event);
        }
    }

    /// Hands a task group to its executor as one LAUNCH_GROUP event (Mesos): now when
    /// subscribed, else when it subscribes.
    pub(crate) fn launch_group(&self, key: &ExecutorKey, tasks: &[v1::TaskInfo], agent_id: &str) {
        let mut all = self.lock();
        let Some(e) = all.get_mut(key) else {
            return;
        };
        let tasks_json: Vec<Value> = tasks
            .iter()
            .map(|t| json::task_json(t, &key.0, agent_id, &e.framework.role))
            .collect();
        let event = json!({
            "type": "LAUNCH_GROUP",
            "launch_group": {"task_group": {"tasks": tasks_json}},
        });
        e.tasks.extend(tasks.iter().map(|t| t.task_id.clone()));
        if !e.send(&event) {
            e.queued.push(event);
        }
    }

    /// Asks the executor running `task` to kill it. False when it cannot be asked (not
    /// subscribed), so the caller kills the container instead.
    pub(crate) fn kill_task(&self, framework_id: &str, task_id: &str) -> bool {
        let mut all = self.lock();
        let Some(e) = all
            .iter_mut()
            .find(|(k, e)| k.0 == framework_id && e.tasks.iter().any(|t| t == task_id))
            .map(|(_, e)| e)
        else {
            return false;
        };
        // A task still queued is simply never launched (nor the rest of its group).
        let before = e.queued.len();
        e.queued.retain(|ev| {
            ev["launch"]["task"]["task_id"]["value"] != task_id
                && !ev["launch_group"]["task_group"]["tasks"]
                    .as_array()
                    .is_some_and(|ts| ts.iter().any(|t| t["task_id"]["value"] == task_id))
        });
        if e.queued.len() != before {
            return false;
        }
        e.send(&json!({"type": "KILL", "kill": {"task_id": json::id(task_id)}}))
    }

    /// The framework acknowledged an executor's update: tell the executor.
    pub(crate) fn acknowledged(&self, framework_id: &str, task_id: &str, uuid: &[u8]) {
        let mut all = self.lock();
        if let Some(e) = all
            .iter_mut()
            .find(|(k, e)| k.0 == framework_id && e.tasks.iter().any(|t| t == task_id))
            .map(|(_, e)| e)
        {
            e.send(&json!({
                "type": "ACKNOWLEDGED",
                "acknowledged": {"task_id": json::id(task_id), "uuid": json::base64_encode(uuid)},
            }));
        }
    }

    /// Framework shutdown: SHUTDOWN to its executors, then their containers are killed after
    /// `grace` (the executor may exit on its own before).
    pub(crate) fn shutdown_framework(&self, framework_id: &str, grace: Duration) {
        let mut all = self.lock();
        for (_, e) in all.iter_mut().filter(|(k, _)| k.0 == framework_id) {
            e.send(&json!({"type": "SHUTDOWN"}));
            let _ = e.kill.send(grace);
        }
    }

    /// Whether `task`'s container runs a live executor.
    pub(crate) fn runs_container(&self, task: &TaskKey) -> bool {
        self.lock().values().any(|e| &e.container_task == task)
    }

    /// The container of `task` exited. If it ran an executor, forgets it and returns every
    /// task handed to it (they cannot run any more) and whether it was killed for not
    /// re-subscribing after an agent restart.
    pub(crate) fn container_exited(&self, task: &TaskKey) -> Option<(Vec<TaskKey>, bool)> {
        let mut all = self.lock();
        let key = all
            .iter()
            .find(|(_, e)| &e.container_task == task)
            .map(|(k, _)| k.clone())?;
        let e = all.remove(&key)?;
        let mut tasks: Vec<TaskKey> = e.tasks.into_iter().map(|t| (key.0.clone(), t)).collect();
        if !tasks.contains(task) {
            tasks.push(task.clone());
        }
        Some((tasks, e.reregistration_timed_out))
    }

    /// The executor's `(ExecutorInfo, FrameworkInfo, container id)`, when it is live.
    fn describe(&self, key: &ExecutorKey) -> Option<(v1::ExecutorInfo, v1::FrameworkInfo, String)> {
        self.lock()
            .get(key)
            .map(|e| (e.info.clone(), e.framework.clone(), e.container_id.clone()))
    }

    /// Attaches a new event stream (replacing an older one) and flushes queued LAUNCHes.
    fn subscribe(&self, key: &ExecutorKey, first: &Value) -> Option<mpsc::Receiver<Bytes>> {
        let mut all = self.lock();
        let e = all.get_mut(key)?;
        let (tx, rx) = mpsc::channel(STREAM_EVENTS);
        e.stream = Some(tx);
        e.awaiting_resubscription = false;
        e.send(first);
        let queued = std::mem::take(&mut e.queued);
        let mut left = Vec::new();
        for ev in queued {
            if !e.send(&ev) {
                left.push(ev);
            }
        }
        e.queued = left;
        Some(rx)
    }

    /// The executor's tasks and whether each one's LAUNCH is still queued (for
    /// [`reconcile::reconcile`]).
    fn tasks_of(&self, key: &ExecutorKey) -> Vec<(String, bool)> {
        self.lock().get(key).map_or_else(Vec::new, |e| {
            e.tasks
                .iter()
                .map(|t| {
                    let pending = e.queued.iter().any(|ev| {
                        ev["launch"]["task"]["task_id"]["value"] == t.as_str()
                            || ev["launch_group"]["task_group"]["tasks"]
                                .as_array()
                                .is_some_and(|ts| {
                                    ts.iter().any(|x| x["task_id"]["value"] == t.as_str())
                                })
                    });
                    (t.clone(), pending)
                })
                .collect()
        })
    }

    /// Sends ACKNOWLEDGED for one of `key`'s updates (whichever task it names).
    fn acknowledge_to(&self, key: &ExecutorKey, task_id: &str, uuid: &[u8]) {
        if let Some(e) = self.lock().get_mut(key) {
            e.send(&json!({
                "type": "ACKNOWLEDGED",
                "acknowledged": {"task_id": json::id(task_id), "uuid": json::base64_encode(uuid)},
            }));
        }
    }

    /// Whether `task_id` was handed to the executor `key`.
    fn owns(&self, key: &ExecutorKey, task_id: &str) -> bool {
        self.lock()
            .get(key)
            .is_some_and(|e| e.tasks.iter().any(|t| t == task_id))
    }
}

/// The Mesos executor environment (on top of the task environment, which already has
/// `MESOS_FRAMEWORK_ID`, `MESOS_AGENT_ID`, `MESOS_SANDBOX`, `MESOS_DIRECTORY`).
pub(crate) fn environment(
    agent_endpoint: &str,
    executor_id: &str,
    agent_id: &str,
) -> Vec<(String, String)> {
    [
        ("MESOS_AGENT_ENDPOINT", agent_endpoint),
        ("MESOS_EXECUTOR_ID", executor_id),
        ("MESOS_SLAVE_ID", agent_id),
        // brim checkpoints every task: executors keep running across agent restarts.
        ("MESOS_CHECKPOINT", "1"),
        ("MESOS_RECOVERY_TIMEOUT", "15mins"),
        ("MESOS_SUBSCRIPTION_BACKOFF_MAX", "2secs"),
        ("MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD", "5secs"),
        ("MESOS_HTTP_COMMAND_EXECUTOR", "0"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        msg.into(),
    )
        .into_response()
}

fn bad(msg: impl Into<String>) -> Response {
    error(StatusCode::BAD_REQUEST, msg)
}

/// `POST /api/v1/executor`.
pub(crate) async fn executor(
    State(agent): State<Arc<Agent>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let format = match mesos::request_media_type(
        headers
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap_or_default()),
    ) {
        Ok(f) => f,
        Err(e @ ContentTypeError::Missing) => return bad(e.to_string()),
        Err(e @ ContentTypeError::Unsupported) => {
            return error(StatusCode::UNSUPPORTED_MEDIA_TYPE, e.to_string())
        }
    };
    if body.len() > MAX_BODY_BYTES {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("Request body exceeds {MAX_BODY_BYTES} bytes"),
        );
    }
    let call: Value = match format {
        MediaType::Json => match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => return bad(format!("Failed to parse body into JSON: {e}")),
        },
        MediaType::Protobuf => match mesos::decode(MesosMessage::ExecutorCall, &body) {
            Ok(v) => v,
            Err(e) => return bad(e.to_string()),
        },
    };
    let ids = (
        call.get("framework_id")
            .and_then(|v| v.get("value"))
            .and_then(Value::as_str),
        call.get("executor_id")
            .and_then(|v| v.get("value"))
            .and_then(Value::as_str),
    );
    let (Some(fw), Some(eid)) = ids else {
        return bad("Failed to validate executor::Call: Expecting 'framework_id' and 'executor_id' to be present");
    };
    let key: ExecutorKey = (fw.to_string(), eid.to_string());
    let Some((info, framework, container_id)) = agent.executors.describe(&key) else {
        return bad(format!(
            "Executor '{eid}' of framework '{fw}' is not running on this agent"
        ));
    };
    let agent_id = agent.state().agent_id.clone().unwrap_or_default();
    match call.get("type").and_then(Value::as_str).unwrap_or_default() {
        "SUBSCRIBE" => {
            let accept = headers
                .get(header::ACCEPT)
                .map(|v| v.to_str().unwrap_or_default());
            let Some(stream_format) = mesos::response_media_type(accept) else {
                return error(
                    StatusCode::NOT_ACCEPTABLE,
                    "Expecting 'Accept' to allow 'application/json' or 'application/x-protobuf'",
                );
            };
            let (host, port) = agent
                .http_address
                .rsplit_once(':')
                .map_or((agent.hostname.as_str(), 0u16), |(h, p)| {
                    (h, p.parse().unwrap_or(0))
                });
            let subscribed = json!({
                "type": "SUBSCRIBED",
                "subscribed": {
                    "executor_info": json::executor_info_json(&info, fw),
                    "framework_info": json::framework_info_json(&framework),
                    "agent_info": {"id": json::id(&agent_id), "hostname": host, "port": port},
                    "container_id": json::id(&container_id),
                },
            });
            let (unacked_tasks, unacked_updates) = match unacknowledged(&call, fw, &agent_id) {
                Ok(u) => u,
                Err(e) => return bad(format!("Failed to validate executor::Call: {e}")),
            };
            // Before subscribing, which sends the queued LAUNCHes.
            let known = agent.executor_task_facts(fw, agent.executors.tasks_of(&key));
            let Some(rx) = agent.executors.subscribe(&key, &subscribed) else {
                return bad("Executor is gone");
            };
            tracing::info!(
                framework = fw,
                executor = eid,
                unacknowledged_tasks = unacked_tasks.len(),
                unacknowledged_updates = unacked_updates.len(),
                "executor subscribed"
            );
            resubscribed(&agent, &key, &known, &unacked_tasks, unacked_updates);
            let every = agent.config.executor_heartbeat_interval;
            let ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            let stream =
                futures::stream::unfold((rx, ticks), move |(mut rx, mut ticks)| async move {
                    loop {
                        let record = tokio::select! {
                            r = rx.recv() => r?,
                            _ = ticks.tick() => Bytes::from(recordio::encode(HEARTBEAT.as_bytes())),
                        };
                        match stream_format {
                            MediaType::Json => {
                                return Some((
                                    Ok::<_, std::convert::Infallible>(record),
                                    (rx, ticks),
                                ))
                            }
                            MediaType::Protobuf => match protobuf_record(&record) {
                                Ok(b) => return Some((Ok(b), (rx, ticks))),
                                Err(e) => tracing::error!("executor event not sent: {e}"),
                            },
                        }
                    }
                });
            Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, stream_format.as_str())
                .body(Body::from_stream(stream))
                .unwrap_or_else(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
        }
        "UPDATE" => {
            let Some(status) = call.get("update").and_then(|u| u.get("status")) else {
                return bad("Failed to validate executor::Call: Expecting 'update' to be present");
            };
            let status = match json::status_from_json(status, fw, &agent_id) {
                Ok(s) => s,
                Err(e) => return bad(format!("Failed to validate executor::Call: {e}")),
            };
            if !agent.executors.owns(&key, &status.task_id) {
                return bad(format!(
                    "Task '{}' was not launched on executor '{eid}'",
                    status.task_id
                ));
            }
            let (task_id, uuid) = (status.task_id.clone(), status.uuid.clone());
            if !agent.executor_update(status) {
                // Not a valid transition (e.g. after a terminal state): nothing to forward, so
                // acknowledge at once or the executor would hold on to it.
                agent.executors.acknowledged(fw, &task_id, &uuid);
            }
            StatusCode::ACCEPTED.into_response()
        }
        "MESSAGE" => {
            let Some(data) = call
                .get("message")
                .and_then(|m| m.get("data"))
                .and_then(Value::as_str)
            else {
                return bad(
                    "Failed to validate executor::Call: Expecting 'message.data' to be present",
                );
            };
            let Some(data) = json::base64_decode(data) else {
                return bad(
                    "Failed to validate executor::Call: 'message.data' is not valid base64",
                );
            };
            // Best effort, as in Mesos: carried to the master with the next link round.
            if agent.executors.queue_message(fw, eid, data) {
                agent.outbox.notify_one();
            } else {
                tracing::warn!(
                    framework = fw,
                    executor = eid,
                    "executor MESSAGE dropped: too many queued for the master"
                );
            }
            StatusCode::ACCEPTED.into_response()
        }
        other => bad(format!(
            "Failed to convert JSON into Call protobuf: unknown executor call type {other:?}"
        )),
    }
}

/// The event sent every `executor_heartbeat_interval` on an idle or busy executor stream.
const HEARTBEAT: &str = r#"{"type":"HEARTBEAT"}"#;

/// A SUBSCRIBE's `unacknowledged_tasks` (ids) and `unacknowledged_updates` (statuses).
fn unacknowledged(
    call: &Value,
    framework_id: &str,
    agent_id: &str,
) -> Result<(Vec<String>, Vec<v1::TaskStatus>), String> {
    let subscribe = call.get("subscribe");
    let list = |name: &str| {
        subscribe
            .and_then(|s| s.get(name))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let mut tasks = Vec::new();
    for t in list("unacknowledged_tasks") {
        let id = t
            .get("task_id")
            .and_then(|i| i.get("value"))
            .and_then(Value::as_str)
            .ok_or("Expecting 'task_id' in every 'subscribe.unacknowledged_tasks'")?;
        tasks.push(id.to_string());
    }
    let mut updates = Vec::new();
    for u in list("unacknowledged_updates") {
        let status = u
            .get("status")
            .ok_or("Expecting 'status' in every 'subscribe.unacknowledged_updates'")?;
        updates.push(json::status_from_json(status, framework_id, agent_id)?);
    }
    Ok((tasks, updates))
}

/// Reconciles what a (re-)subscribing executor reports with what the agent knows
/// ([`reconcile::reconcile`]) and carries the decision out.
fn resubscribed(
    agent: &Agent,
    key: &ExecutorKey,
    known: &[reconcile::KnownTask],
    unacked_tasks: &[String],
    updates: Vec<v1::TaskStatus>,
) {
    let reported: Vec<reconcile::ReportedUpdate> = updates
        .iter()
        .map(|u| reconcile::ReportedUpdate {
            task_id: u.task_id.clone(),
            state: v1::TaskState::try_from(u.state).unwrap_or(v1::TaskState::TaskUnknown),
            uuid: u.uuid.clone(),
        })
        .collect();
    let decision = reconcile::reconcile(known, unacked_tasks, &reported);
    for i in &decision.acknowledge {
        let u = &updates[*i];
        agent.executors.acknowledge_to(key, &u.task_id, &u.uuid);
    }
    for i in &decision.take {
        let u = updates[*i].clone();
        let (task_id, uuid) = (u.task_id.clone(), u.uuid.clone());
        if !agent.executor_update(u) {
            agent.executors.acknowledge_to(key, &task_id, &uuid);
        }
    }
    for task_id in &decision.kill {
        agent.executors.kill_task(&key.0, task_id);
    }
    for task_id in &decision.lost {
        tracing::warn!(framework = %key.0, executor = %key.1, task = %task_id, "the executor never received this task before the agent restarted: TASK_LOST");
        agent.executor_task_lost(&key.0, task_id);
    }
}

/// One RecordIO-framed JSON event (as queued for a stream) → the same event as a framed
/// protobuf `executor::Event`, for executors that asked for `application/x-protobuf`.
fn protobuf_record(framed_json: &[u8]) -> Result<Bytes, String> {
    let mut decoder = recordio::Decoder::new(MAX_BODY_BYTES);
    let records = decoder.feed(framed_json).map_err(|e| e.to_string())?;
    let [record] = records.as_slice() else {
        return Err(format!("expected one record, got {}", records.len()));
    };
    let event: Value = serde_json::from_slice(record).map_err(|e| e.to_string())?;
    let bytes = mesos::encode(MesosMessage::ExecutorEvent, &event).map_err(|e| e.to_string())?;
    Ok(Bytes::from(recordio::encode(&bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes one queued event, checking on the way that its protobuf form carries exactly
    /// the same event (the stream an `application/x-protobuf` executor reads).
    fn decode(b: &Bytes) -> Value {
        let mut d = recordio::Decoder::new(1 << 20);
        let mut recs = d.feed(b).expect("recordio");
        assert_eq!(recs.len(), 1);
        let event: Value = serde_json::from_slice(&recs.remove(0)).expect("json");
        let pb = protobuf_record(b).expect("protobuf form");
        let mut recs = d.feed(&pb).expect("recordio");
        let back = mesos::decode(MesosMessage::ExecutorEvent, &recs.remove(0)).expect("decode");
        assert_eq!(back, without_empty_lists(event.clone()));
        event
    }

    /// Protobuf has no "present but empty" repeated field.
    fn without_empty_lists(v: Value) -> Value {
        match v {
            Value::Object(m) => Value::Object(
                m.into_iter()
                    .filter(|(_, v)| v.as_array().is_none_or(|a| !a.is_empty()))
                    .map(|(k, v)| (k, without_empty_lists(v)))
                    .collect(),
            ),
            Value::Array(a) => Value::Array(a.into_iter().map(without_empty_lists).collect()),
            other => other,
        }
    }

    /// SUBSCRIBED and LAUNCH as the agent builds them have exact protobuf forms.
    #[test]
    // `..Default::default()` stays so that fields added to the brim messages later still build.
    #[allow(clippy::needless_update)]
    fn full_events_have_exact_protobuf_forms() {
        let command = v1::CommandInfo {
            value: "exec ./run".into(),
            shell: true,
            arguments: vec!["a".into()],
            environment: vec![v1::EnvironmentVariable {
                name: "K".into(),
                value: "V".into(),
            }],
            user: "nobody".into(),
            ..Default::default()
        };
        let executor = v1::ExecutorInfo {
            executor_id: "e".into(),
            name: "ex".into(),
            command: Some(command.clone()),
            ..Default::default()
        };
        let framework = v1::FrameworkInfo {
            id: "f".into(),
            user: "u".into(),
            name: "n".into(),
            role: "*".into(),
            failover_timeout: 60.0,
            hostname: "h".into(),
            principal: "p".into(),
            capabilities: vec![brim_proto::CAPABILITY_PARTITION_AWARE.into()],
            ..Default::default()
        };
        let task = v1::TaskInfo {
            task_id: "t".into(),
            name: "t".into(),
            resources: vec![v1::Resource {
                name: "cpus".into(),
                value: Some(v1::resource::Value::Scalar(0.5)),
                ..Default::default()
            }],
            executor: Some(executor.clone()),
            command: Some(command),
            kill_grace_period_seconds: 2.5,
            labels: vec![v1::Label {
                key: "k".into(),
                value: "v".into(),
            }],
            ..Default::default()
        };
        let subscribed = json!({"type": "SUBSCRIBED", "subscribed": {
            "executor_info": json::executor_info_json(&executor, "f"),
            "framework_info": json::framework_info_json(&framework),
            "agent_info": {"id": json::id("a"), "hostname": "h", "port": 5051},
            "container_id": json::id("c"),
        }});
        let launch =
            json!({"type": "LAUNCH", "launch": {"task": json::task_json(&task, "f", "a", "*")}});
        for event in [subscribed, launch] {
            decode(&Bytes::from(recordio::encode(event.to_string().as_bytes())));
        }
    }

    /// Executor `e` of framework `f` (role `*`) started in the container of task
    /// `container_task`; its key and the receiver of the kills sent to its container.
    fn started_executor(
        container_task: &str,
    ) -> (Executors, ExecutorKey, mpsc::UnboundedReceiver<Duration>) {
        let ex = Executors::default();
        let fw = v1::FrameworkInfo {
            id: "f".into(),
            role: "*".into(),
            ..Default::default()
        };
        let info = v1::ExecutorInfo {
            executor_id: "e".into(),
            ..Default::default()
        };
        let (kill, killed) = mpsc::unbounded_channel();
        ex.start(
            fw,
            info,
            ("f".into(), container_task.into()),
            "c1".into(),
            kill,
        );
        (ex, ("f".into(), "e".into()), killed)
    }

    #[test]
    fn a_task_group_reaches_its_executor_as_one_launch_group() {
        let (ex, key, _killed) = started_executor("a");
        let task = |id: &str| v1::TaskInfo {
            task_id: id.into(),
            name: id.into(),
            command: Some(v1::CommandInfo {
                value: "x".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        ex.launch_group(&key, &[task("a"), task("b")], "ag");
        ex.launch_group(&key, &[task("c"), task("d")], "ag");
        // Killing a queued task drops its whole queued group: it never launches.
        assert!(!ex.kill_task("f", "d"));
        let mut rx = ex
            .subscribe(&key, &json!({"type": "SUBSCRIBED"}))
            .expect("live");
        assert_eq!(
            decode(&rx.try_recv().expect("subscribed"))["type"],
            "SUBSCRIBED"
        );
        let ev = decode(&rx.try_recv().expect("launch group"));
        assert_eq!(ev["type"], "LAUNCH_GROUP");
        let ids: Vec<&str> = ev["launch_group"]["task_group"]["tasks"]
            .as_array()
            .expect("tasks")
            .iter()
            .filter_map(|t| t["task_id"]["value"].as_str())
            .collect();
        assert_eq!(ids, ["a", "b"]);
        assert!(rx.try_recv().is_err(), "the killed group was dropped");
        assert!(ex.owns(&key, "b"));
    }

    #[test]
    fn heartbeat_has_an_exact_protobuf_form() {
        let event = decode(&Bytes::from(recordio::encode(HEARTBEAT.as_bytes())));
        assert_eq!(event["type"], "HEARTBEAT");
    }

    #[test]
    fn a_recovered_executor_awaits_resubscription_or_is_killed() {
        let ex = Executors::default();
        let fw = v1::FrameworkInfo {
            id: "f".into(),
            ..Default::default()
        };
        let info = v1::ExecutorInfo {
            executor_id: "e".into(),
            ..Default::default()
        };
        let key: ExecutorKey = ("f".into(), "e".into());
        let (kill, mut killed) = mpsc::unbounded_channel();
        let container: TaskKey = ("f".into(), "t1".into());
        let tasks = vec!["t1".to_string(), "t2".to_string()];
        ex.recover(
            fw.clone(),
            info.clone(),
            container.clone(),
            "c".into(),
            tasks.clone(),
            kill,
        );
        assert_eq!(ex.awaiting_resubscription(), vec![key.clone()]);
        assert!(ex.owns(&key, "t2"), "its tasks are known again");
        assert_eq!(
            ex.tasks_of(&key),
            vec![("t1".to_string(), false), ("t2".to_string(), false)]
        );
        // Subscribing in time: no longer awaited, expiry does nothing.
        let _rx = ex
            .subscribe(&key, &json!({"type": "SUBSCRIBED"}))
            .expect("live");
        assert!(ex.awaiting_resubscription().is_empty());
        assert!(!ex.expire(&key));
        assert!(killed.try_recv().is_err());
        assert_eq!(ex.container_exited(&container).map(|g| g.1), Some(false));
        // Never subscribing: killed at once (SIGKILL), and its exit says why.
        let (kill, mut killed) = mpsc::unbounded_channel();
        ex.recover(fw, info, container.clone(), "c".into(), tasks, kill);
        assert!(ex.expire(&key));
        assert_eq!(killed.try_recv().ok(), Some(Duration::ZERO));
        let (gone, timed_out) = ex.container_exited(&container).expect("an executor");
        assert!(timed_out);
        assert_eq!(gone.len(), 2);
    }

    #[test]
    fn unacknowledged_tasks_and_updates_are_read_from_subscribe() {
        let uuid = json::base64_encode(&[7; 16]);
        let call = json!({"type": "SUBSCRIBE", "subscribe": {
            "unacknowledged_tasks": [{"task_id": {"value": "t1"}, "name": "x"}],
            "unacknowledged_updates": [{"status": {"task_id": {"value": "t1"}, "state": "TASK_RUNNING", "uuid": uuid}}],
        }});
        let (tasks, updates) = unacknowledged(&call, "f", "a").expect("valid");
        assert_eq!(tasks, vec!["t1".to_string()]);
        assert_eq!(updates[0].uuid, vec![7; 16]);
        assert_eq!(
            unacknowledged(&json!({"type": "SUBSCRIBE"}), "f", "a"),
            Ok((Vec::new(), Vec::new()))
        );
        let bad = json!({"subscribe": {"unacknowledged_updates": [{"status": {"task_id": {"value": "t"}, "state": "TASK_RUNNING", "uuid": "AA=="}}]}});
        let err = unacknowledged(&bad, "f", "a").expect_err("short uuid");
        assert!(err.contains("16"), "{err}");
        let bad = json!({"subscribe": {"unacknowledged_tasks": [{"name": "no id"}]}});
        assert!(unacknowledged(&bad, "f", "a").is_err());
    }

    #[test]
    fn queues_until_subscribed_then_streams_events() {
        let (ex, key, mut killed) = started_executor("t1");
        assert!(ex.is_live(&key));
        for t in ["t1", "t2"] {
            let task = v1::TaskInfo {
                task_id: t.into(),
                ..Default::default()
            };
            ex.launch(&key, &task, "a");
        }
        let mut rx = ex
            .subscribe(&key, &json!({"type": "SUBSCRIBED"}))
            .expect("live");
        let kinds: Vec<Value> = (0..3)
            .map(|_| decode(&rx.try_recv().expect("event")))
            .collect();
        assert_eq!(kinds[0]["type"], "SUBSCRIBED");
        assert_eq!(kinds[1]["launch"]["task"]["task_id"]["value"], "t1");
        assert_eq!(kinds[2]["launch"]["task"]["agent_id"]["value"], "a");
        assert!(ex.owns(&key, "t2") && !ex.owns(&key, "t3"));
        assert!(ex.kill_task("f", "t2"));
        assert_eq!(decode(&rx.try_recv().expect("kill"))["type"], "KILL");
        ex.acknowledged("f", "t1", &[1; 16]);
        let ack = decode(&rx.try_recv().expect("ack"));
        assert_eq!(ack["acknowledged"]["uuid"], json::base64_encode(&[1; 16]));
        // Framework messages: a MESSAGE event with base64 data; none for unknown executors.
        assert!(ex.message("f", "e", b"hi"));
        let m = decode(&rx.try_recv().expect("message"));
        assert_eq!(m["message"]["data"], json::base64_encode(b"hi"));
        assert!(!ex.message("f", "other", b"hi"));
        // Executor messages queue for the master link, bounded.
        assert!(ex.queue_message("f", "e", b"up".to_vec()));
        let out = ex.take_messages();
        assert_eq!((out.len(), &out[0].data[..]), (1, &b"up"[..]));
        for _ in 0..MAX_OUTGOING_MESSAGES {
            assert!(ex.queue_message("f", "e", Vec::new()));
        }
        assert!(!ex.queue_message("f", "e", Vec::new()), "full: dropped");
        assert_eq!(ex.take_messages().len(), MAX_OUTGOING_MESSAGES);
        ex.shutdown_framework("f", Duration::from_secs(1));
        assert_eq!(
            decode(&rx.try_recv().expect("shutdown"))["type"],
            "SHUTDOWN"
        );
        assert_eq!(killed.try_recv().ok(), Some(Duration::from_secs(1)));
        let (gone, timed_out) = ex
            .container_exited(&("f".into(), "t1".into()))
            .expect("was an executor");
        assert_eq!((gone.len(), timed_out), (2, false));
        assert!(!ex.is_live(&key));
    }
}
