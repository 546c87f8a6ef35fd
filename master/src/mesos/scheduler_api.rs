//! `POST /api/v1/scheduler`: the Mesos v1 scheduler HTTP API.
//!
//! Request checks happen in the order Mesos's master applies them (content type, body, JSON,
//! call validation, then for non-SUBSCRIBE calls: framework known, subscribed, over HTTP,
//! `Mesos-Stream-Id` present and current), with Mesos's messages. Accepted calls get 202; as in
//! Mesos, problems found later (an offer that expired, an invalid task) come back as task
//! status updates on the event stream, not as HTTP errors.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use brim_proto::mesos::{self, ContentTypeError, MediaType, MesosMessage};
use brim_proto::v1::{self, event, Event, TaskState, TaskStatusReason, TaskStatusSource};
use futures::Stream;
use tokio::sync::{mpsc, oneshot};
use tonic::{Code, Status};

use super::json::{self, EventContext, MesosJsonError};
use super::recordio;
use super::{MesosApi, MesosApiError, Subscription, MAX_BODY_BYTES};
use crate::actor::{wall_clock, Call, Command};

/// Queue depth of one event stream (as for gRPC subscriptions).
const STREAM_QUEUE: usize = 1024;
const STREAM_ID_HEADER: &str = "mesos-stream-id";

type ApiResult = Result<Response, MesosApiError>;

pub(crate) async fn scheduler(
    State(api): State<Arc<MesosApi>>,
    caller: Option<axum::Extension<crate::auth::Caller>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let caller = caller.and_then(|c| c.0.principal);
    match handle(api, caller, headers, body).await {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!("mesos scheduler call rejected: {e}");
            e.into_response()
        }
    }
}

fn bad(msg: impl Into<String>) -> MesosApiError {
    MesosApiError::BadRequest(msg.into())
}

fn invalid(msg: impl std::fmt::Display) -> MesosApiError {
    bad(format!("Failed to validate scheduler::Call: {msg}"))
}

fn need<T>(field: Option<T>, name: &str) -> Result<T, MesosApiError> {
    field.ok_or_else(|| invalid(format!("Expecting '{name}' to be present")))
}

/// The request body's format (`Content-Type`), with Mesos's 400/415 for anything else.
fn check_content_type(headers: &HeaderMap) -> Result<MediaType, MesosApiError> {
    let ct = headers.get(header::CONTENT_TYPE).map(header_str);
    mesos::request_media_type(ct).map_err(|e| match e {
        ContentTypeError::Missing => bad(e.to_string()),
        ContentTypeError::Unsupported => MesosApiError::UnsupportedMediaType(e.to_string()),
    })
}

fn header_str(v: &HeaderValue) -> &str {
    v.to_str().unwrap_or_default()
}

/// The event stream's format (`Accept`), or Mesos's 406.
fn response_format(headers: &HeaderMap) -> Result<MediaType, MesosApiError> {
    mesos::response_media_type(headers.get(header::ACCEPT).map(header_str)).ok_or_else(|| {
        MesosApiError::NotAcceptable(
            "Expecting 'Accept' to allow 'application/json' or 'application/x-protobuf'".into(),
        )
    })
}

async fn read_body(headers: &HeaderMap, body: Body) -> Result<Bytes, MesosApiError> {
    let too_large = || {
        MesosApiError::PayloadTooLarge(format!(
            "Request body exceeds the {MAX_BODY_BYTES}-byte limit"
        ))
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| too_large())
}

/// A protobuf call body (bounded by the caller): transcoded to the Mesos JSON it stands for,
/// then shape-checked like a JSON body.
pub(crate) fn decode_protobuf_call(bytes: &[u8]) -> Result<json::Call, MesosApiError> {
    let value =
        mesos::decode(MesosMessage::SchedulerCall, bytes).map_err(|e| bad(e.to_string()))?;
    serde_json::from_value(value)
        .map_err(|e| bad(format!("Failed to validate scheduler::Call: {e}")))
}

/// Parses and shape-checks a call body (bounded by the caller).
pub(crate) fn decode_call(bytes: &[u8]) -> Result<json::Call, MesosApiError> {
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| bad(format!("Failed to parse body into JSON: {e}")))?;
    serde_json::from_value(value)
        .map_err(|e| bad(format!("Failed to convert JSON into Call protobuf: {e}")))
}

/// Fuzzing entry point (`fuzz/fuzz_targets/mesos_call.rs`): decodes a call body and runs every
/// master-independent conversion the handlers run on it (framework info, filters, offer
/// operations, task infos and their resources, kill, acknowledgement uuid). Not an API.
#[doc(hidden)]
pub fn fuzz_decode_call(bytes: &[u8]) -> Result<(), String> {
    let call = decode_call(bytes).map_err(|e| e.to_string())?;
    let fid = call.framework_id.map(|f| f.value).unwrap_or_default();
    for s in call.subscribe.iter().chain(call.update_framework.iter()) {
        json::framework_info(&s.framework_info).map_err(|e| e.to_string())?;
    }
    if let Some(a) = &call.accept {
        let _ = json::filters(a.filters.as_ref());
        for op in &a.operations {
            let volumes = op
                .create
                .iter()
                .chain(op.destroy.iter())
                .flat_map(|l| l.volumes.iter());
            for r in op
                .reserve
                .iter()
                .chain(op.unreserve.iter())
                .flat_map(|l| l.resources.iter())
                .chain(volumes)
            {
                json::resource(r).map_err(|e| e.to_string())?;
            }
            for t in op.launch.iter().flat_map(|l| l.task_infos.iter()) {
                let task = json::task_info(t).map_err(|e| e.to_string())?;
                brim_proto::Resources::from_proto(&task.resources).map_err(|e| e.to_string())?;
                brim_proto::Resources::from_proto_revocable(&task.resources)
                    .map_err(|e| e.to_string())?;
            }
        }
    }
    if let Some(d) = &call.decline {
        let _ = json::filters(d.filters.as_ref());
    }
    if let Some(k) = &call.kill {
        let _ = json::kill(&fid, k);
    }
    if let Some(a) = &call.acknowledge {
        json::decode_uuid(&a.uuid).map_err(|e| e.to_string())?;
    }
    Ok(())
}

async fn handle(
    api: Arc<MesosApi>,
    caller: Option<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let format = check_content_type(&headers)?;
    let bytes = read_body(&headers, body).await?;
    let call = match format {
        MediaType::Json => decode_call(&bytes)?,
        MediaType::Protobuf => decode_protobuf_call(&bytes)?,
    };
    if call.kind == "SUBSCRIBE" {
        return subscribe(api, caller, &headers, call).await;
    }
    let framework_id = need(call.framework_id.as_ref(), "framework_id")?
        .value
        .clone();
    if framework_id.is_empty() {
        return Err(invalid("Expecting 'framework_id.value' to be non-empty"));
    }
    let sub = authorize(&api, &framework_id, &headers).await?;
    dispatch(&api, &sub, &framework_id, call).await
}

/// Mesos's checks for a non-SUBSCRIBE call, in Mesos's order.
async fn authorize(
    api: &MesosApi,
    framework_id: &str,
    headers: &HeaderMap,
) -> Result<(Subscription, mpsc::Sender<Result<Event, Status>>), MesosApiError> {
    let live = api
        .subscription(framework_id)
        .and_then(|s| s.events.upgrade().map(|tx| (s, tx)));
    let Some((sub, tx)) = live else {
        let state = api.state().await?;
        let fw = state["frameworks"]
            .as_array()
            .and_then(|fs| fs.iter().find(|f| f["id"] == framework_id).cloned());
        return Err(match fw {
            None => bad("Framework cannot be found"),
            Some(f) if f["connected"] == true => {
                MesosApiError::Forbidden("Framework is not connected via HTTP".into())
            }
            Some(_) => MesosApiError::Forbidden("Framework is not subscribed".into()),
        });
    };
    let Some(got) = headers.get(STREAM_ID_HEADER) else {
        return Err(bad(
            "All non-subscribe calls should include the 'Mesos-Stream-Id' header",
        ));
    };
    let got = got.to_str().unwrap_or_default();
    if got != sub.stream_id {
        return Err(bad(format!(
            "The stream ID '{got}' included in this request didn't match the stream ID currently associated with framework ID {framework_id}"
        )));
    }
    Ok((sub, tx))
}

fn accepted() -> ApiResult {
    Ok(StatusCode::ACCEPTED.into_response())
}

/// A master-generated status update (no uuid: nothing to acknowledge).
fn master_update(
    framework_id: &str,
    task_id: &str,
    agent_id: &str,
    state: TaskState,
    reason: TaskStatusReason,
    message: String,
) -> Event {
    Event {
        event: Some(event::Event::Update(event::Update {
            status: Some(v1::TaskStatus {
                task_id: task_id.to_string(),
                state: state as i32,
                message,
                reason: reason as i32,
                source: TaskStatusSource::SourceMaster as i32,
                agent_id: agent_id.to_string(),
                framework_id: framework_id.to_string(),
                timestamp: wall_clock(),
                ..Default::default()
            }),
        })),
    }
}

fn inject(tx: &mpsc::Sender<Result<Event, Status>>, ev: Event) {
    if tx.try_send(Ok(ev)).is_err() {
        tracing::warn!("mesos event stream is full; dropping a master-generated update");
    }
}

async fn dispatch(
    api: &MesosApi,
    (sub, tx): &(Subscription, mpsc::Sender<Result<Event, Status>>),
    framework_id: &str,
    call: json::Call,
) -> ApiResult {
    let fid = framework_id.to_string();
    let master = &api.master;
    match call.kind.as_str() {
        "TEARDOWN" => {
            master
                .call(Call::Teardown(fid))
                .await
                .map_err(|s| MesosApiError::from_status(&s))?;
            accepted()
        }
        "ACCEPT" => accept(api, sub, tx, framework_id, need(call.accept, "accept")?).await,
        "DECLINE" => {
            let d = need(call.decline, "decline")?;
            let ids: Vec<String> = d.offer_ids.iter().map(|o| o.value.clone()).collect();
            decline(api, framework_id, &ids, json::filters(d.filters.as_ref())).await;
            accepted()
        }
        "REVIVE" => {
            if !names_role(call.revive.as_ref(), &sub.info.role) {
                return accepted();
            }
            master
                .call(Call::Revive(fid))
                .await
                .map_err(|s| MesosApiError::from_status(&s))?;
            accepted()
        }
        "SUPPRESS" => {
            if !names_role(call.suppress.as_ref(), &sub.info.role) {
                return accepted();
            }
            master
                .call(Call::Suppress(fid))
                .await
                .map_err(|s| MesosApiError::from_status(&s))?;
            accepted()
        }
        "KILL" => {
            let k = need(call.kill, "kill")?;
            let req = json::kill(framework_id, &k);
            kill(api, req).await;
            accepted()
        }
        "SHUTDOWN" => {
            // brim runs each task under its own command executor whose id is the task id (as
            // Mesos's command executor); shutting that executor down kills the task.
            let s = need(call.shutdown, "shutdown")?;
            let req = v1::KillRequest {
                framework_id: fid,
                task_id: s.executor_id.value.clone(),
                agent_id: s.agent_id.value.clone(),
                grace_period_seconds: None,
            };
            if let Err(e) = master.call(Call::Kill(req)).await {
                tracing::debug!(executor_id = %s.executor_id.value, "SHUTDOWN: {}", e.message());
            }
            accepted()
        }
        "ACKNOWLEDGE" => {
            let a = need(call.acknowledge, "acknowledge")?;
            let uuid = json::decode_uuid(&a.uuid).map_err(invalid)?;
            let req = v1::AcknowledgeRequest {
                framework_id: fid,
                agent_id: a.agent_id.value.clone(),
                task_id: a.task_id.value.clone(),
                uuid,
            };
            if let Err(e) = master.call(Call::Acknowledge(req)).await {
                // Mesos drops acknowledgements for unknown tasks/agents silently.
                tracing::debug!(task_id = %a.task_id.value, "ACKNOWLEDGE ignored: {}", e.message());
            }
            accepted()
        }
        "RECONCILE" => {
            let r = call.reconcile.unwrap_or_default();
            let req = v1::ReconcileRequest {
                framework_id: fid,
                tasks: r
                    .tasks
                    .iter()
                    .map(|t| v1::reconcile_request::Task {
                        task_id: t.task_id.value.clone(),
                        agent_id: t
                            .agent_id
                            .as_ref()
                            .map(|a| a.value.clone())
                            .unwrap_or_default(),
                    })
                    .collect(),
            };
            master
                .call(Call::Reconcile(req))
                .await
                .map_err(|s| MesosApiError::from_status(&s))?;
            accepted()
        }
        "MESSAGE" => {
            let m = need(call.message, "message")?;
            let data = json::decode_data(&m.data).map_err(invalid)?;
            let req = v1::MessageRequest {
                framework_id: framework_id.to_string(),
                agent_id: m.agent_id.value,
                executor_id: m.executor_id.value,
                data,
            };
            // Best effort, as in Mesos: a message to an unknown or disconnected agent is
            // dropped (logged), not an error of the call.
            match master.call(Call::Message(req)).await {
                Err(s) if s.code() == Code::FailedPrecondition => {
                    return Err(MesosApiError::from_status(&s))
                }
                Err(s) => tracing::info!("MESSAGE dropped: {}", s.message()),
                Ok(()) => {}
            }
            accepted()
        }
        // brim never sends inverse offers (no maintenance schedules yet); REQUEST is a no-op
        // in Mesos too.
        "REQUEST" | "ACCEPT_INVERSE_OFFERS" | "DECLINE_INVERSE_OFFERS" => accepted(),
        "UPDATE_FRAMEWORK" => {
            let u = need(call.update_framework, "update_framework")?;
            let info = json::framework_info(&u.framework_info).map_err(invalid)?;
            if info.id != framework_id {
                return Err(invalid(
                    "'framework_info.id' differs from 'framework_id' of the call",
                ));
            }
            let mut current = sub.info.clone();
            current.id = info.id.clone();
            if info == current {
                return Ok(StatusCode::OK.into_response());
            }
            Err(bad(
                "UPDATE_FRAMEWORK with a changed FrameworkInfo is not supported by brim yet; SUBSCRIBE again with the new FrameworkInfo (failover keeps the tasks)",
            ))
        }
        "ACKNOWLEDGE_OPERATION_STATUS" | "RECONCILE_OPERATIONS" => Err(bad(format!(
            "{} is not supported by brim yet (no offer operation feedback)",
            call.kind
        ))),
        "UNKNOWN" => Err(MesosApiError::NotImplemented(
            "Received 'UNKNOWN' call".into(),
        )),
        other => Err(bad(format!(
            "Failed to convert JSON into Call protobuf: unknown call type {other:?}"
        ))),
    }
}

/// REVIVE/SUPPRESS apply to all roles when `roles` is empty, else to the roles listed; a brim
/// framework has exactly one.
fn names_role(r: Option<&json::Roles>, role: &str) -> bool {
    r.is_none_or(|r| r.roles.is_empty() || r.roles.iter().any(|x| x == role))
}

/// Declines offers; like Mesos, offers that are no longer valid are skipped, the rest declined.
async fn decline(api: &MesosApi, framework_id: &str, ids: &[String], filters: Option<v1::Filters>) {
    let req = |offer_ids: Vec<String>| v1::DeclineRequest {
        framework_id: framework_id.to_string(),
        offer_ids,
        filters,
    };
    if api
        .master
        .call(Call::Decline(req(ids.to_vec())))
        .await
        .is_ok()
    {
        return;
    }
    for id in ids {
        if let Err(e) = api.master.call(Call::Decline(req(vec![id.clone()]))).await {
            tracing::debug!(offer_id = %id, "DECLINE skipped: {}", e.message());
        }
    }
}

/// Kill; for a task the master does not know, Mesos answers with a reconciliation update.
async fn kill(api: &MesosApi, req: v1::KillRequest) {
    match api.master.call(Call::Kill(req.clone())).await {
        Ok(()) => {}
        Err(e) if e.code() == Code::NotFound => {
            let r = v1::ReconcileRequest {
                framework_id: req.framework_id.clone(),
                tasks: vec![v1::reconcile_request::Task {
                    task_id: req.task_id.clone(),
                    agent_id: req.agent_id.clone(),
                }],
            };
            let _ = api.master.call(Call::Reconcile(r)).await;
        }
        Err(e) => tracing::warn!(task_id = %req.task_id, "KILL not delivered: {}", e.message()),
    }
}

const UNSUPPORTED_OPERATIONS: &[&str] = &[
    "GROW_VOLUME",
    "SHRINK_VOLUME",
    "CREATE_DISK",
    "DESTROY_DISK",
];

async fn accept(
    api: &MesosApi,
    sub: &Subscription,
    tx: &mpsc::Sender<Result<Event, Status>>,
    framework_id: &str,
    a: json::Accept,
) -> ApiResult {
    let offer_ids: Vec<String> = a.offer_ids.iter().map(|o| o.value.clone()).collect();
    let filters = json::filters(a.filters.as_ref());
    // The operations in order; a LAUNCH is `None` here and filled with its valid tasks below.
    let mut ops: Vec<Option<v1::operation::Operation>> = Vec::new();
    let mut launches = Vec::new();
    // The tasks of the valid LAUNCH_GROUPs (told of a refused ACCEPT like LAUNCH's).
    let mut grouped: Vec<v1::TaskInfo> = Vec::new();
    let reservation = |list: Option<&Vec<json::Resource>>, kind: &str| {
        let list = list.ok_or_else(|| {
            invalid(format!(
                "Expecting '{}' to be present in a {kind} operation",
                kind.to_lowercase()
            ))
        })?;
        list.iter()
            .map(json::resource)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(format!("Invalid {kind} operation: {e}")))
    };
    for op in &a.operations {
        match op.kind.as_str() {
            "LAUNCH" => {
                let l = op.launch.as_ref().ok_or_else(|| {
                    invalid("Expecting 'launch' to be present in a LAUNCH operation")
                })?;
                launches.push(l.task_infos.iter().collect::<Vec<_>>());
                ops.push(None);
            }
            "LAUNCH_GROUP" => {
                let g = op.launch_group.as_ref().ok_or_else(|| {
                    invalid("Expecting 'launch_group' to be present in a LAUNCH_GROUP operation")
                })?;
                match json::launch_group(g) {
                    Ok(lg) => {
                        grouped.extend(lg.task_group.iter().flat_map(|t| t.tasks.clone()));
                        ops.push(Some(v1::operation::Operation::LaunchGroup(lg)));
                    }
                    // A task group is valid or refused as a whole (Mesos).
                    Err(e) => {
                        for t in &g.task_group.tasks {
                            let agent_id =
                                t.agent_id.as_ref().map(|a| a.value.as_str()).unwrap_or("");
                            inject(
                                tx,
                                master_update(
                                    framework_id,
                                    &t.task_id.value,
                                    agent_id,
                                    TaskState::TaskError,
                                    TaskStatusReason::ReasonTaskInvalid,
                                    e.to_string(),
                                ),
                            );
                        }
                    }
                }
            }
            "RESERVE" => {
                let resources = reservation(op.reserve.as_ref().map(|l| &l.resources), "RESERVE")?;
                ops.push(Some(v1::operation::Operation::Reserve(
                    v1::operation::Reserve { resources },
                )));
            }
            "UNRESERVE" => {
                let resources =
                    reservation(op.unreserve.as_ref().map(|l| &l.resources), "UNRESERVE")?;
                ops.push(Some(v1::operation::Operation::Unreserve(
                    v1::operation::Unreserve { resources },
                )));
            }
            "CREATE" => {
                let volumes = reservation(op.create.as_ref().map(|l| &l.volumes), "CREATE")?;
                ops.push(Some(v1::operation::Operation::Create(
                    v1::operation::Create { volumes },
                )));
            }
            "DESTROY" => {
                let volumes = reservation(op.destroy.as_ref().map(|l| &l.volumes), "DESTROY")?;
                ops.push(Some(v1::operation::Operation::Destroy(
                    v1::operation::Destroy { volumes },
                )));
            }
            kind if UNSUPPORTED_OPERATIONS.contains(&kind) => {
                return Err(bad(format!(
                    "Offer operation {kind} is not supported by brim yet; LAUNCH, LAUNCH_GROUP, RESERVE, UNRESERVE, CREATE and DESTROY are"
                )))
            }
            other => {
                return Err(bad(format!(
                "Failed to convert JSON into Call protobuf: unknown offer operation type {other:?}"
            )))
            }
        }
    }
    // Per-task conversion problems become TASK_ERROR (Mesos validates each task).
    let mut good = Vec::new();
    let mut launch_ops = Vec::new();
    for tasks in launches {
        let first = good.len();
        for t in tasks {
            let agent_id = t.agent_id.as_ref().map(|a| a.value.as_str()).unwrap_or("");
            match json::task_info(t) {
                Ok(task) => good.push(task),
                Err(e @ (MesosJsonError::Shape(_) | MesosJsonError::Unsupported(_))) => inject(
                    tx,
                    master_update(
                        framework_id,
                        &t.task_id.value,
                        agent_id,
                        TaskState::TaskError,
                        TaskStatusReason::ReasonTaskInvalid,
                        e.to_string(),
                    ),
                ),
            }
        }
        launch_ops.push(good[first..].to_vec());
    }
    let mut launch_ops = launch_ops.into_iter();
    good.extend(grouped);
    let operations: Vec<v1::Operation> = ops
        .into_iter()
        .filter_map(|op| {
            let op = match op {
                Some(op) => op,
                None => {
                    let task_infos = launch_ops.next().unwrap_or_default();
                    if task_infos.is_empty() {
                        return None;
                    }
                    v1::operation::Operation::Launch(v1::operation::Launch { task_infos })
                }
            };
            Some(v1::Operation {
                operation: Some(op),
            })
        })
        .collect();
    if operations.is_empty() {
        // An ACCEPT without (valid) operations is a DECLINE in Mesos.
        decline(api, framework_id, &offer_ids, filters).await;
        return accepted();
    }
    let req = v1::AcceptRequest {
        framework_id: framework_id.to_string(),
        offer_ids: offer_ids.clone(),
        operations,
        filters,
    };
    let Err(e) = api.master.call(Call::Accept(req)).await else {
        return accepted();
    };
    if e.code() == Code::FailedPrecondition {
        return Err(MesosApiError::from_status(&e));
    }
    let m = e.message();
    let offers_bad = matches!(e.code(), Code::NotFound | Code::PermissionDenied)
        || m.starts_with("offer ")
        || m.starts_with("no offer ids")
        || m.starts_with("offers from different agents");
    let (state, reason, message) = if offers_bad {
        let lost = if sub.partition_aware() {
            TaskState::TaskDropped
        } else {
            TaskState::TaskLost
        };
        (
            lost,
            TaskStatusReason::ReasonInvalidOffers,
            format!("Task launched with invalid offers: {}", e.message()),
        )
    } else {
        (
            TaskState::TaskError,
            TaskStatusReason::ReasonTaskInvalid,
            e.message().to_string(),
        )
    };
    for t in &good {
        inject(
            tx,
            master_update(
                framework_id,
                &t.task_id,
                &t.agent_id,
                state,
                reason,
                message.clone(),
            ),
        );
    }
    if good.is_empty() {
        // Mesos drops invalid reservation operations (there is no operation feedback
        // without an operation id); brim logs why.
        tracing::warn!(framework_id, "ACCEPT dropped: {message}");
    }
    // Mesos gives the offered resources back when an accept fails validation.
    decline(api, framework_id, &offer_ids, None).await;
    accepted()
}

async fn subscribe(
    api: Arc<MesosApi>,
    caller: Option<String>,
    headers: &HeaderMap,
    call: json::Call,
) -> ApiResult {
    let format = response_format(headers)?;
    if headers.contains_key(STREAM_ID_HEADER) {
        return Err(bad(
            "Subscribe calls should not include the 'Mesos-Stream-Id' header",
        ));
    }
    let s = need(call.subscribe, "subscribe")?;
    let info = json::framework_info(&s.framework_info).map_err(invalid)?;
    if let Some(fid) = &call.framework_id {
        if fid.value != info.id {
            return Err(invalid(
                "'framework_id' differs from 'subscribe.framework_info.id'",
            ));
        }
    }
    let state = api.state().await?;
    let leader = state["leader"].as_str().unwrap_or_default().to_string();
    let (tx, rx) = mpsc::channel(STREAM_QUEUE);
    let events = tx.downgrade();
    let (reply, reply_rx) = oneshot::channel();
    api.master
        .send(Command::Subscribe {
            info: info.clone(),
            caller,
            tx,
            reply,
        })
        .await
        .map_err(|s| MesosApiError::from_status(&s))?;
    let (framework_id, conn) = reply_rx
        .await
        .map_err(|_| MesosApiError::Unavailable("Master dropped the subscription; retry".into()))?
        .map_err(|s| MesosApiError::from_status(&s))?;
    let stream_id = uuid::Uuid::new_v4().to_string();
    let mut info = info;
    info.id = framework_id.clone();
    let ctx = EventContext {
        revocable: info
            .capabilities
            .iter()
            .any(|c| c == brim_proto::CAPABILITY_REVOCABLE_RESOURCES),
        role: info.role.clone(),
        leader,
    };
    api.set_subscription(
        &framework_id,
        Subscription {
            stream_id: stream_id.clone(),
            events,
            info,
        },
    );
    tracing::info!(%framework_id, %stream_id, "mesos framework subscribed over HTTP");
    let stream = EventStream {
        rx,
        ctx,
        api,
        framework_id,
        stream_id: stream_id.clone(),
        conn,
        format,
    };
    let mut resp = Response::new(Body::from_stream(stream));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.as_str()),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(&stream_id) {
        h.insert("Mesos-Stream-Id", v);
    }
    Ok(resp)
}

/// The RecordIO body of a subscription. Dropping it (client gone, master stopping) tells the
/// actor the framework disconnected and forgets the stream id.
struct EventStream {
    rx: mpsc::Receiver<Result<Event, Status>>,
    ctx: EventContext,
    api: Arc<MesosApi>,
    framework_id: String,
    stream_id: String,
    conn: u64,
    /// Record encoding: Mesos JSON, or the protobuf `scheduler::Event` it transcodes to.
    format: MediaType,
}

impl Stream for EventStream {
    type Item = Result<Bytes, std::convert::Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(Ok(ev))) => {
                    let Some(j) = json::event_json(&ev, &self.ctx) else {
                        continue;
                    };
                    let record = match self.format {
                        MediaType::Json => j.to_string().into_bytes(),
                        MediaType::Protobuf => {
                            match mesos::encode(MesosMessage::SchedulerEvent, &j) {
                                Ok(b) => b,
                                Err(e) => {
                                    tracing::error!(framework_id = %self.framework_id,
                                        "mesos event not sent: {e}");
                                    continue;
                                }
                            }
                        }
                    };
                    return Poll::Ready(Some(Ok(Bytes::from(recordio::encode(&record)))));
                }
                Poll::Ready(Some(Err(_)) | None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.api
            .end_subscription(&self.framework_id, &self.stream_id);
        self.api.master.try_send(Command::FrameworkDisconnected {
            framework_id: self.framework_id.clone(),
            conn: self.conn,
        });
        tracing::info!(framework_id = %self.framework_id, stream_id = %self.stream_id,
            "mesos event stream closed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn content_types() {
        let check = |ct: Option<&str>| {
            let mut h = HeaderMap::new();
            if let Some(ct) = ct {
                h.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_str(ct).expect("header"),
                );
            }
            check_content_type(&h).map_err(|e| e.status().as_u16())
        };
        assert_eq!(check(Some("application/json")), Ok(MediaType::Json));
        assert_eq!(
            check(Some("Application/JSON; charset=utf-8")),
            Ok(MediaType::Json)
        );
        assert_eq!(check(None), Err(400));
        assert_eq!(check(Some("text/plain")), Err(415));
        assert_eq!(
            check(Some("application/x-protobuf")),
            Ok(MediaType::Protobuf)
        );
    }

    /// Every event shape the JSON stream sends has an exact protobuf form: transcoding it to
    /// `scheduler::Event` and back loses nothing (a key the Mesos protos lack would vanish).
    #[test]
    fn every_event_survives_protobuf_exactly() {
        use brim_proto::v1::event::Event as E;
        let resource = |value, role: &str, revocable, volume: Option<v1::Volume>| v1::Resource {
            name: "r".into(),
            value: Some(value),
            revocable,
            reservation_role: role.into(),
            reservation_principal: if role.is_empty() { "" } else { "ops" }.into(),
            volume,
        };
        let offer = v1::Offer {
            id: "o1".into(),
            framework_id: "f1".into(),
            agent_id: "a1".into(),
            hostname: "h".into(),
            resources: vec![
                resource(v1::resource::Value::Scalar(1.5), "", true, None),
                resource(
                    v1::resource::Value::Ranges(v1::Ranges {
                        range: vec![v1::Range {
                            begin: 31000,
                            end: 31009,
                        }],
                    }),
                    "ads",
                    false,
                    None,
                ),
                resource(
                    v1::resource::Value::Set(v1::Set {
                        item: vec!["gpu0".into()],
                    }),
                    "ads",
                    false,
                    Some(v1::Volume {
                        persistence_id: "p".into(),
                        container_path: "data".into(),
                    }),
                ),
            ],
            attributes: vec![
                v1::Attribute {
                    name: "rack".into(),
                    value: "r1".into(),
                },
                v1::Attribute {
                    name: "n".into(),
                    value: "3".into(),
                },
            ],
            agent_http_address: "127.0.0.1:5051".into(),
            region: "eu".into(),
            zone: "z1".into(),
        };
        let status = v1::TaskStatus {
            task_id: "t1".into(),
            state: TaskState::TaskFailed as i32,
            source: TaskStatusSource::SourceExecutor as i32,
            reason: TaskStatusReason::ReasonCommandExecutorFailed as i32,
            agent_id: "a1".into(),
            uuid: vec![7; 16],
            timestamp: 1.5,
            exit_code: Some(3),
            ..Default::default()
        };
        let events = [
            E::Subscribed(event::Subscribed {
                framework_id: "f1".into(),
                heartbeat_interval_seconds: 15.0,
                master_id: "m1".into(),
            }),
            E::Offers(event::Offers {
                offers: vec![offer],
            }),
            E::Rescind(event::Rescind {
                offer_id: "o1".into(),
            }),
            E::Update(event::Update {
                status: Some(status),
            }),
            E::Failure(event::Failure {
                agent_id: "a1".into(),
            }),
            E::Error(event::Error {
                message: "gone".into(),
            }),
            E::Heartbeat(event::Heartbeat {}),
            E::Message(event::Message {
                agent_id: "a1".into(),
                executor_id: "e1".into(),
                data: b"hi".to_vec(),
            }),
        ];
        let ctx = EventContext {
            revocable: true,
            role: "ads".into(),
            leader: "127.0.0.1:5050".into(),
        };
        for e in events {
            let j = json::event_json(&Event { event: Some(e) }, &ctx).expect("event");
            let bytes = mesos::encode(MesosMessage::SchedulerEvent, &j).expect("encode");
            let back = mesos::decode(MesosMessage::SchedulerEvent, &bytes).expect("decode");
            assert_eq!(back, without_empty_lists(j));
        }
    }

    /// Protobuf has no "present but empty" repeated field.
    fn without_empty_lists(v: serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
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

    #[test]
    fn protobuf_calls_decode_like_their_json() {
        let text = r#"{"type":"ACCEPT","framework_id":{"value":"F1"},"accept":{"offer_ids":[{"value":"o1"}],
            "operations":[{"type":"LAUNCH","launch":{"task_infos":[{"name":"t","task_id":{"value":"t1"},
            "agent_id":{"value":"a1"},"command":{"value":"sleep 1"},
            "resources":[{"name":"cpus","type":"SCALAR","scalar":{"value":0.1}}]}]}}],
            "filters":{"refuse_seconds":1.0}}}"#;
        let value: serde_json::Value = serde_json::from_str(text).expect("json");
        let bytes = mesos::encode(MesosMessage::SchedulerCall, &value).expect("encode");
        let from_pb = decode_protobuf_call(&bytes).expect("protobuf call");
        let from_json = decode_call(text.as_bytes()).expect("json call");
        assert_eq!(format!("{from_pb:?}"), format!("{from_json:?}"));
        let err = decode_protobuf_call(&[0x10, 0x01, 0xb8, 0x3e, 0x01]).expect_err("unknown");
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        assert!(
            err.to_string().contains("unknown field number 999"),
            "{err}"
        );
        let err = decode_protobuf_call(b"{\"type\":\"SUBSCRIBE\"}").expect_err("json as pb");
        assert!(
            err.to_string()
                .starts_with("Failed to parse body into Call protobuf"),
            "{err}"
        );
    }

    #[test]
    fn call_decoding_errors_are_mesos_messages() {
        let err = |b: &str| decode_call(b.as_bytes()).expect_err("rejected").to_string();
        assert!(err("{").starts_with("Failed to parse body into JSON"));
        assert!(err(r#"{"framework_id":{"value":"x"}}"#)
            .starts_with("Failed to convert JSON into Call protobuf"));
        assert!(err(r#"{"type":"ACCEPT","accept":{"offer_ids":"nope"}}"#)
            .starts_with("Failed to convert JSON into Call protobuf"));
    }

    /// The committed seeds of the `mesos_call` fuzz target are valid calls, and the fuzz
    /// entry point turns broken ones into errors.
    #[test]
    fn fuzz_seeds_decode_and_broken_calls_are_errors() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/mesos_call");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("dir entry").path();
            if path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("seed-"))
            {
                let body = std::fs::read(&path).expect("seed");
                if let Err(e) = fuzz_decode_call(&body) {
                    panic!("{}: {e}", path.display());
                }
                seen += 1;
            }
        }
        assert!(seen >= 5, "only {seen} seeds in {}", dir.display());
        for broken in [
            &br#"{"type":"ACKNOWLEDGE","acknowledge":{"agent_id":{"value":"a"},"task_id":{"value":"t"},"uuid":"!!"}}"#[..],
            br#"{"type":"ACCEPT","accept":{"operations":[{"type":"LAUNCH","launch":{"task_infos":[{"name":"t","task_id":{"value":"t"},"agent_id":{"value":"a"},"resources":[{"name":"cpus","type":"SCALAR","scalar":{"value":-1}}]}]}}]}}"#,
            br#"{"type":"SUBSCRIBE","subscribe":{"framework_info":{"user":"u","name":"n","failover_timeout":1e999}}}"#,
            b"[",
        ] {
            assert!(fuzz_decode_call(broken).is_err(), "{}", String::from_utf8_lossy(broken));
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bodies_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
            let _ = decode_call(&bytes);
        }

        #[test]
        fn arbitrary_json_calls_never_panic(kind in "[A-Z_]{0,24}", v in any::<i64>(), s in ".{0,16}") {
            let body = serde_json::json!({"type": kind, "framework_id": {"value": s},
                "accept": {"offer_ids": [{"value": s}], "operations": [{"type": kind}]},
                "kill": {"task_id": {"value": s}, "kill_policy": {"grace_period": {"nanoseconds": v}}},
                "acknowledge": {"agent_id": {"value": s}, "task_id": {"value": s}, "uuid": s}});
            if let Ok(call) = decode_call(body.to_string().as_bytes()) {
                if let Some(k) = &call.kill {
                    let r = json::kill("f", k);
                    prop_assert!(r.grace_period_seconds.is_none_or(|g| g >= 0.0 && g.is_finite()));
                }
            }
        }
    }
}
