//! Network edge: gRPC (scheduler + agent services) and HTTP (`/health`, `/version`,
//! `/metrics`, `/state`) on one port. Handlers decode, then hand the work to the state actor.

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use brim_proto::v1::{
    self, agent_message,
    agent_service_server::{AgentService, AgentServiceServer},
    scheduler_server::{Scheduler, SchedulerServer},
    AgentMessage, Event, MasterMessage,
};
use brim_proto::{LEADER_HEADER, MAX_MESSAGE_BYTES};
use futures::{Stream, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response as GrpcResponse, Status, Streaming};

use crate::actor::{Call, Command, MasterHandle};
use crate::auth::{Caller, Guard};
use crate::ratelimit::Attempt;
use brim_security::OperatorCall;
use std::sync::Arc;

/// How long a new agent stream may take to send `register`.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);
/// Queue depth per connected agent / framework.
const STREAM_QUEUE: usize = 1024;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// An outbound stream that tells the actor when the peer goes away (the stream is dropped).
struct WatchedStream<T> {
    inner: ReceiverStream<Result<T, Status>>,
    on_drop: Option<(MasterHandle, Command)>,
    /// Its place among the open subscription streams.
    _slot: crate::ratelimit::StreamSlot,
}

impl<T> Stream for WatchedStream<T> {
    type Item = Result<T, Status>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.inner).poll_next(cx)
    }
}

impl<T> Drop for WatchedStream<T> {
    fn drop(&mut self) {
        if let Some((handle, cmd)) = self.on_drop.take() {
            handle.try_send(cmd);
        }
    }
}

#[derive(Clone)]
struct SchedulerApi {
    master: MasterHandle,
    guard: Arc<Guard>,
}

/// The connection a gRPC request came on.
fn peer<T>(request: &Request<T>) -> Option<brim_security::Peer> {
    request
        .extensions()
        .get::<axum::extract::ConnectInfo<brim_security::Peer>>()
        .map(|c| c.0.clone())
}

/// The principal the authentication middleware established for a gRPC request.
fn caller<T>(request: &Request<T>) -> Option<String> {
    request
        .extensions()
        .get::<Caller>()
        .and_then(|c| c.principal.clone())
}

fn fw_id(id: &str) -> Result<(), Status> {
    if id.is_empty() {
        return Err(Status::invalid_argument(
            "framework_id is empty; use the id from the SUBSCRIBED event",
        ));
    }
    Ok(())
}

#[tonic::async_trait]
impl Scheduler for SchedulerApi {
    type SubscribeStream = BoxStream<Event>;

    async fn subscribe(
        &self,
        request: Request<v1::SubscribeRequest>,
    ) -> Result<GrpcResponse<Self::SubscribeStream>, Status> {
        let caller = caller(&request);
        let peer = peer(&request);
        self.guard
            .admit(Attempt::Subscribe, peer.as_ref(), caller.as_deref())?;
        let slot = self.guard.open_stream(peer.as_ref(), caller.as_deref())?;
        let info = request
            .into_inner()
            .framework_info
            .ok_or_else(|| Status::invalid_argument("subscribe needs framework_info"))?;
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        let (reply, reply_rx) = oneshot::channel();
        self.master
            .send(Command::Subscribe {
                info,
                caller,
                tx,
                reply,
            })
            .await?;
        let (framework_id, conn) = reply_rx
            .await
            .map_err(|_| Status::internal("master dropped the subscription; retry"))??;
        let stream = WatchedStream {
            inner: ReceiverStream::new(rx),
            on_drop: Some((
                self.master.clone(),
                Command::FrameworkDisconnected { framework_id, conn },
            )),
            _slot: slot,
        };
        Ok(GrpcResponse::new(Box::pin(stream)))
    }

    async fn accept(
        &self,
        r: Request<v1::AcceptRequest>,
    ) -> Result<GrpcResponse<v1::CallResponse>, Status> {
        let caller = caller(&r);
        let r = r.into_inner();
        fw_id(&r.framework_id)?;
        self.master.call_as(caller, Call::Accept(r)).await?;
        Ok(GrpcResponse::new(v1::CallResponse {}))
    }

    async fn decline(
        &self,
        r: Request<v1::DeclineRequest>,
    ) -> Result<GrpcResponse<v1::CallResponse>, Status> {
        let caller = caller(&r);
        let r = r.into_inner();
        fw_id(&r.framework_id)?;
        self.master.call_as(caller, Call::Decline(r)).await?;
        Ok(GrpcResponse::new(v1::CallResponse {}))
    }

    async fn kill(
        &self,
        r: Request<v1::KillRequest>,
    ) -> Result<GrpcResponse<v1::CallResponse>, Status> {
        let caller = caller(&r);
        let r = r.into_inner();
        fw_id(&r.framework_id)?;
        self.master.call_as(caller, Call::Kill(r)).await?;
        Ok(GrpcResponse::new(v1::CallResponse {}))
    }

    async fn acknowledge(
        &self,
        r: Request<v1::AcknowledgeRequest>,
    ) -> Result<GrpcResponse<v1::CallResponse>, Status> {
        let caller = caller(&r);
        let r = r.into_inner();
        fw_id(&r.framework_id)?;
        self.master.call_as(caller, Call::Acknowledge(r)).await?;
        Ok(GrpcResponse::new(v1::CallResponse {}))
    }

    async fn reconcile(
        &self,
        r: Request<v1::ReconcileRequest>,
    ) -> Result<GrpcResponse<v1::CallResponse>, Status> {
        let caller = caller(&r);
        let r = r.into_inner();
        fw_id(&r.framework_id)?;
        self.master.call_as(caller, Call::Reconcile(r)).await?;
        Ok(GrpcResponse::new(v1::CallResponse {}))
    }

    async fn revive(
        &self,
        r: Request<v1::ReviveRequest>,
    ) -> Result<GrpcResponse<v1::CallResponse>, Status> {
        let caller = caller(&r);
        let r = r.into_inner();
        fw_id(&r.framework_id)?;
        self.master
            .call_as(caller, Call::Revive(r.framework_id))
            .await?;
        Ok(GrpcResponse::new(v1::CallResponse {}))
    }

    async fn suppress(
        &self,
        r: Request<v1::SuppressRequest>,
    ) -> Result<GrpcResponse<v1::CallResponse>, Status> {
        let caller = caller(&r);
        let r = r.into_inner();
        fw_id(&r.framework_id)?;
        self.master
            .call_as(caller, Call::Suppress(r.framework_id))
            .await?;
        Ok(GrpcResponse::new(v1::CallResponse {}))
    }

    async fn teardown(
        &self,
        r: Request<v1::TeardownRequest>,
    ) -> Result<GrpcResponse<v1::CallResponse>, Status> {
        let caller = caller(&r);
        let r = r.into_inner();
        fw_id(&r.framework_id)?;
        self.master
            .call_as(caller, Call::Teardown(r.framework_id))
            .await?;
        Ok(GrpcResponse::new(v1::CallResponse {}))
    }

    async fn message(
        &self,
        r: Request<v1::MessageRequest>,
    ) -> Result<GrpcResponse<v1::CallResponse>, Status> {
        let caller = caller(&r);
        let r = r.into_inner();
        fw_id(&r.framework_id)?;
        self.master.call_as(caller, Call::Message(r)).await?;
        Ok(GrpcResponse::new(v1::CallResponse {}))
    }
}

#[derive(Clone)]
struct AgentApi {
    master: MasterHandle,
    guard: Arc<Guard>,
}

#[tonic::async_trait]
impl AgentService for AgentApi {
    type AttachStream = BoxStream<MasterMessage>;

    async fn attach(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<GrpcResponse<Self::AttachStream>, Status> {
        self.guard.admit(
            Attempt::Register,
            peer(&request).as_ref(),
            caller(&request).as_deref(),
        )?;
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(REGISTER_TIMEOUT, inbound.next())
            .await
            .map_err(|_| Status::deadline_exceeded("agent did not send register within 10 s"))?
            .ok_or_else(|| Status::invalid_argument("agent stream closed before register"))??;
        let register = match first.message {
            Some(agent_message::Message::Register(r)) => r,
            _ => {
                return Err(Status::invalid_argument(
                    "the first message on an agent stream must be `register`",
                ))
            }
        };
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        let (reply, reply_rx) = oneshot::channel();
        self.master
            .send(Command::RegisterAgent {
                register,
                tx,
                reply,
            })
            .await?;
        let (agent_id, conn) = reply_rx
            .await
            .map_err(|_| Status::internal("master dropped the registration; retry"))??;
        let master = self.master.clone();
        tokio::spawn(async move {
            loop {
                match inbound.next().await {
                    Some(Ok(msg)) => {
                        let Some(message) = msg.message else { continue };
                        if master
                            .send(Command::AgentMessage {
                                agent_id: agent_id.clone(),
                                conn,
                                message,
                            })
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!(%agent_id, "agent stream error: {e}");
                        break;
                    }
                    None => break,
                }
            }
            let _ = master
                .send(Command::AgentDisconnected { agent_id, conn })
                .await;
        });
        Ok(GrpcResponse::new(Box::pin(ReceiverStream::new(rx))))
    }
}

async fn health() -> &'static str {
    "ok\n"
}

async fn version() -> Response {
    axum::Json(serde_json::json!({
        "name": "brim",
        "version": env!("CARGO_PKG_VERSION"),
    }))
    .into_response()
}

async fn state(State(master): State<MasterHandle>) -> Response {
    let (reply, rx) = oneshot::channel();
    if master.send(Command::State { reply }).await.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "master is shutting down\n").into_response();
    }
    match rx.await {
        Ok(v) => axum::Json(v).into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "master is shutting down\n").into_response(),
    }
}

/// The reply of an operator command as HTTP.
async fn operator_reply(
    master: &MasterHandle,
    cmd: Command,
    rx: oneshot::Receiver<Result<(), Status>>,
    done: &'static str,
) -> Response {
    if master.send(cmd).await.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "master is shutting down\n").into_response();
    }
    match rx.await {
        Ok(Ok(())) => (StatusCode::OK, format!("{done}\n")).into_response(),
        Ok(Err(s)) => {
            let code = match s.code() {
                tonic::Code::NotFound => StatusCode::NOT_FOUND,
                tonic::Code::InvalidArgument => StatusCode::BAD_REQUEST,
                tonic::Code::PermissionDenied => StatusCode::FORBIDDEN,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            };
            (code, format!("{}\n", s.message())).into_response()
        }
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "master is shutting down\n").into_response(),
    }
}

/// `POST /agents/{id}/gone`: the operator retires an agent for good (`maintenance`).
async fn mark_agent_gone(
    State(master): State<MasterHandle>,
    Extension(guard): Extension<Arc<Guard>>,
    Extension(caller): Extension<Caller>,
    axum::extract::Path(agent_id): axum::extract::Path<String>,
) -> Response {
    if let Err(s) =
        guard.check_operator(caller.principal.as_deref(), OperatorCall::Maintenance, None)
    {
        return crate::auth::refuse(false, s);
    }
    let (reply, rx) = oneshot::channel();
    operator_reply(
        &master,
        Command::MarkAgentGone { agent_id, reply },
        rx,
        "marked gone",
    )
    .await
}

/// The principal a framework subscribed as (`None`: unknown framework or none recorded).
pub(crate) async fn framework_principal(
    master: &MasterHandle,
    framework_id: &str,
) -> Option<String> {
    let (reply, rx) = oneshot::channel();
    master.send(Command::State { reply }).await.ok()?;
    let state = rx.await.ok()?;
    state["frameworks"]
        .as_array()?
        .iter()
        .find(|f| f["id"] == framework_id)?["principal"]
        .as_str()
        .map(str::to_string)
}

/// `POST /frameworks/{id}/teardown`: kill a framework's tasks and forget it (`teardown`,
/// unless the caller is the framework's own principal).
async fn teardown_framework(
    State(master): State<MasterHandle>,
    Extension(guard): Extension<Arc<Guard>>,
    Extension(caller): Extension<Caller>,
    axum::extract::Path(framework_id): axum::extract::Path<String>,
) -> Response {
    let owner = framework_principal(&master, &framework_id).await;
    if let Err(s) = guard.check_operator(
        caller.principal.as_deref(),
        OperatorCall::Teardown,
        owner.as_deref(),
    ) {
        return crate::auth::refuse(false, s);
    }
    let (reply, rx) = oneshot::channel();
    operator_reply(
        &master,
        Command::Call {
            call: Call::Teardown(framework_id),
            caller: None,
            reply,
        },
        rx,
        "torn down",
    )
    .await
}

/// `PUT /roles/{role}/weight` with the weight as the body (`weight`).
async fn set_weight(
    State(master): State<MasterHandle>,
    Extension(guard): Extension<Arc<Guard>>,
    Extension(caller): Extension<Caller>,
    axum::extract::Path(role): axum::extract::Path<String>,
    body: String,
) -> Response {
    if let Err(s) = guard.check_operator(caller.principal.as_deref(), OperatorCall::Weight, None) {
        return crate::auth::refuse(false, s);
    }
    let Ok(weight) = body.trim().parse::<f64>() else {
        return (
            StatusCode::BAD_REQUEST,
            "the body must be the weight, a positive number\n",
        )
            .into_response();
    };
    let (reply, rx) = oneshot::channel();
    operator_reply(
        &master,
        Command::SetWeight {
            role,
            weight,
            reply,
        },
        rx,
        "weight set",
    )
    .await
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct QuotaBody {
    guarantee: String,
    #[serde(default)]
    limit: Option<String>,
}

/// `PUT /roles/{role}/quota` with `{"guarantee": "cpus:2;mem:1024", "limit": "..."}` (`quota`).
async fn set_quota(
    State(master): State<MasterHandle>,
    Extension(guard): Extension<Arc<Guard>>,
    Extension(caller): Extension<Caller>,
    axum::extract::Path(role): axum::extract::Path<String>,
    body: axum::body::Bytes,
) -> Response {
    if let Err(s) = guard.check_operator(caller.principal.as_deref(), OperatorCall::Quota, None) {
        return crate::auth::refuse(false, s);
    }
    let parsed = serde_json::from_slice::<QuotaBody>(&body)
        .map_err(|e| e.to_string())
        .and_then(|q| {
            let guarantee =
                brim_proto::Resources::parse(&q.guarantee).map_err(|e| e.to_string())?;
            let limit = q
                .limit
                .map(|l| brim_proto::Resources::parse(&l).map_err(|e| e.to_string()))
                .transpose()?;
            Ok((guarantee, limit))
        });
    let (guarantee, limit) = match parsed {
        Ok(q) => q,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("bad quota: {e}; send {{\"guarantee\": \"cpus:2;mem:1024\", \"limit\": \"cpus:4\"}}\n"),
            )
                .into_response()
        }
    };
    let (reply, rx) = oneshot::channel();
    operator_reply(
        &master,
        Command::SetQuota {
            role,
            guarantee,
            limit,
            reply,
        },
        rx,
        "quota set",
    )
    .await
}

async fn metrics(State(master): State<MasterHandle>) -> Response {
    let (reply, rx) = oneshot::channel();
    if master.send(Command::Metrics { reply }).await.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "master is shutting down\n").into_response();
    }
    match rx.await {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "master is shutting down\n").into_response(),
    }
}

/// The Mesos scheduler API under the same limits as gRPC: a `SUBSCRIBE` call counts against
/// the peer's and principal's subscribe buckets (429 with `Retry-After` over the limit) and
/// takes a place among the open subscription streams for as long as its event stream lives.
async fn throttle_mesos(
    State(guard): State<Arc<Guard>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if request.method() != axum::http::Method::POST || !request.uri().path().ends_with("/scheduler")
    {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    // The scheduler API reads at most this much too; a bigger body gets its error there.
    let Ok(bytes) = axum::body::to_bytes(body, MAX_MESSAGE_BYTES + 1).await else {
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body exceeds the {MAX_MESSAGE_BYTES}-byte limit\n"),
        )
            .into_response();
    };
    #[derive(serde::Deserialize)]
    struct Kind {
        #[serde(rename = "type")]
        kind: Option<String>,
    }
    let subscribe = bytes.windows(9).any(|w| w == b"SUBSCRIBE")
        && serde_json::from_slice::<Kind>(&bytes)
            .ok()
            .and_then(|k| k.kind)
            .is_some_and(|k| k == "SUBSCRIBE");
    let request = axum::extract::Request::from_parts(parts, axum::body::Body::from(bytes));
    if !subscribe {
        return next.run(request).await;
    }
    let peer = request
        .extensions()
        .get::<axum::extract::ConnectInfo<brim_security::Peer>>()
        .map(|c| c.0.clone());
    let principal = request
        .extensions()
        .get::<Caller>()
        .and_then(|c| c.principal.clone());
    let admitted = guard
        .admit(Attempt::Subscribe, peer.as_ref(), principal.as_deref())
        .and_then(|()| guard.open_stream(peer.as_ref(), principal.as_deref()));
    let slot = match admitted {
        Ok(slot) => slot,
        Err(status) => return crate::auth::refuse(false, status),
    };
    let response = next.run(request).await;
    if !response.status().is_success() {
        return response;
    }
    // The slot lives as long as the event stream.
    response.map(|body| {
        axum::body::Body::from_stream(body.into_data_stream().map(move |chunk| {
            let _held = &slot;
            chunk
        }))
    })
}

/// Builds the combined gRPC + HTTP router (plus `extra` routes), every route behind the
/// authentication middleware.
pub(crate) fn router(
    master: MasterHandle,
    guard: Arc<Guard>,
    agents_http: crate::ui::AgentClient,
    extra: Option<Router>,
) -> Router {
    let scheduler = SchedulerServer::new(SchedulerApi {
        master: master.clone(),
        guard: guard.clone(),
    })
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let agents = AgentServiceServer::new(AgentApi {
        master: master.clone(),
        guard: guard.clone(),
    })
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let grpc = tonic::service::Routes::new(scheduler)
        .add_service(agents)
        .into_axum_router();
    let http = crate::ui::router()
        .route("/health", get(health))
        .route("/version", get(version))
        .route("/state", get(state))
        .route("/metrics", get(metrics))
        .route(
            "/agents/{agent_id}/gone",
            axum::routing::post(mark_agent_gone),
        )
        .route(
            "/frameworks/{framework_id}/teardown",
            axum::routing::post(teardown_framework),
        )
        .route("/roles/{role}/weight", axum::routing::put(set_weight))
        .route("/roles/{role}/quota", axum::routing::put(set_quota))
        .with_state(master.clone());
    let mesos = crate::mesos::router(master).layer(axum::middleware::from_fn_with_state(
        guard.clone(),
        throttle_mesos,
    ));
    let mut all = grpc.merge(http).merge(mesos);
    if let Some(extra) = extra {
        all = all.merge(extra);
    }
    all.layer(Extension(guard.clone()))
        .layer(Extension(agents_http))
        .layer(axum::middleware::from_fn_with_state(
            guard,
            crate::auth::authenticate,
        ))
}

/// Serves `router` on `listener` (TLS when `tls` is set) until `shutdown` resolves.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: brim_security::ServeLimits,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    tracing::debug!(?addr, tls = tls.is_some(), ?limits, "serving");
    brim_security::serve_with(listener, tls, router, limits, shutdown).await
}

/// A standby master: `/health` and `/version` answer; HTTP requests are redirected (307) to
/// the leader; gRPC calls fail with UNAVAILABLE carrying the leader's address in the
/// `brim-leader` metadata, so agents and framework drivers can follow it.
pub(crate) fn standby_router(
    leader: tokio::sync::watch::Receiver<Option<String>>,
    tls: bool,
) -> Router {
    let scheme = if tls { "https" } else { "http" };
    async fn standby_health() -> &'static str {
        "standby\n"
    }
    async fn elsewhere(
        State((leader, scheme)): State<(
            tokio::sync::watch::Receiver<Option<String>>,
            &'static str,
        )>,
        request: axum::extract::Request,
    ) -> Response {
        let leader = leader.borrow().clone();
        let grpc = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/grpc"));
        if grpc {
            let message = match &leader {
                Some(l) => format!("this master is a standby; the leader is at {l}"),
                None => "this master is a standby and no leader is elected yet; retry".into(),
            };
            let mut r = Response::new(axum::body::Body::empty());
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/grpc"),
            );
            h.insert("grpc-status", header::HeaderValue::from_static("14"));
            if let Ok(v) = header::HeaderValue::from_str(&message) {
                h.insert("grpc-message", v);
            }
            if let Some(v) = leader
                .as_deref()
                .and_then(|l| header::HeaderValue::from_str(l).ok())
            {
                h.insert(LEADER_HEADER, v);
            }
            return r;
        }
        match leader {
            Some(l) => {
                let path = request
                    .uri()
                    .path_and_query()
                    .map_or("/", |p| p.as_str())
                    .to_string();
                let mut r = (
                    StatusCode::TEMPORARY_REDIRECT,
                    format!("this master is a standby; the leader is at {l}\n"),
                )
                    .into_response();
                if let Ok(v) = header::HeaderValue::from_str(&format!("{scheme}://{l}{path}")) {
                    r.headers_mut().insert(header::LOCATION, v);
                }
                if let Ok(v) = header::HeaderValue::from_str(&l) {
                    r.headers_mut().insert(LEADER_HEADER, v);
                }
                r
            }
            None => (
                StatusCode::SERVICE_UNAVAILABLE,
                "this master is a standby and no leader is elected yet; retry\n",
            )
                .into_response(),
        }
    }
    Router::new()
        .route("/health", get(standby_health))
        .route("/version", get(version))
        .fallback(elsewhere)
        .with_state((leader, scheme))
}
