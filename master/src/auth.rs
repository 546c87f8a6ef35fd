//! Authentication and authorization at the master's edge (docs/SECURITY.md).
//!
//! Every request passes [`authenticate`] first: a bearer token (looked up in the credentials
//! file) or a client certificate verified against the cluster CA names the caller's
//! principal. With a credentials file, every route but the public ones (`/health`,
//! `/version`, the UI's static files) needs a principal, else 401 / `UNAUTHENTICATED`; a
//! wrong token is refused in any case. Agents must present a certificate whenever the master
//! serves TLS.
//!
//! [`Guard::authorize`] then decides per action from the ACL file: without one, every
//! authenticated caller may do everything; with one, everything not granted is denied,
//! logged and counted (`brim_master_authz_denied`).

use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use brim_proto::v1::{self, FrameworkInfo};
use brim_security::{Acls, Action, Credentials, OperatorCall, Peer, Watched};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tonic::Status;

use crate::actor::Call;
use crate::ratelimit::{Attempt, RateLimits, Refusal, StreamSlot, Throttle};
use crate::state::Master;

/// gRPC path of the agents' stream.
const AGENT_ATTACH: &str = "/brim.v1.AgentService/Attach";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ActionLabel {
    pub(crate) action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct KindLabel {
    pub(crate) kind: String,
}

/// Who made a request, as established by [`authenticate`] (a request extension).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Caller {
    /// From the bearer token, else from the client certificate; `None`: anonymous (only
    /// possible without a credentials file).
    pub(crate) principal: Option<String>,
    /// Whether the principal comes from a client certificate.
    pub(crate) certificate: bool,
}

/// The master's security policy: TLS on or off, the watched credentials and ACL files, and
/// the counters of refusals.
pub struct Guard {
    tls: bool,
    credentials: Option<Arc<Watched<Credentials>>>,
    acls: Option<Arc<Watched<Acls>>>,
    pub(crate) denied: Family<ActionLabel, Counter>,
    pub(crate) unauthenticated: Counter,
    throttle: Throttle,
    /// Attempts refused by the rate limits, by kind (`subscribe`, `register`, `streams`).
    pub(crate) rate_limited: Family<KindLabel, Counter>,
}

impl Guard {
    pub fn new(
        tls: bool,
        credentials: Option<Arc<Watched<Credentials>>>,
        acls: Option<Arc<Watched<Acls>>>,
    ) -> Guard {
        Guard {
            tls,
            credentials,
            acls,
            denied: Family::default(),
            unauthenticated: Counter::default(),
            throttle: Throttle::new(RateLimits::default()),
            rate_limited: Family::default(),
        }
    }

    /// The same guard with rate limits on subscriptions and registrations.
    pub fn with_rate_limits(mut self, limits: RateLimits) -> Guard {
        self.throttle = Throttle::new(limits);
        self
    }

    /// Counts a subscribe or register attempt from `peer` as `principal`; over the limit:
    /// `RESOURCE_EXHAUSTED` with a retry hint, logged and counted.
    pub(crate) fn admit(
        &self,
        attempt: Attempt,
        peer: Option<&Peer>,
        principal: Option<&str>,
    ) -> Result<(), Status> {
        self.throttle
            .admit(
                attempt,
                peer.map(|p| p.addr.ip()),
                principal,
                std::time::Instant::now(),
            )
            .map_err(|r| self.rate_limited(r, peer, principal))
    }

    /// A place for one more subscription stream (kept while the stream is open).
    pub(crate) fn open_stream(
        &self,
        peer: Option<&Peer>,
        principal: Option<&str>,
    ) -> Result<StreamSlot, Status> {
        self.throttle
            .open_stream()
            .map_err(|r| self.rate_limited(r, peer, principal))
    }

    fn rate_limited(&self, r: Refusal, peer: Option<&Peer>, principal: Option<&str>) -> Status {
        self.rate_limited
            .get_or_create(&KindLabel {
                kind: r.attempt.to_string(),
            })
            .inc();
        tracing::warn!(
            peer = ?peer.map(|p| p.addr),
            principal = principal.unwrap_or("-"),
            kind = r.attempt,
            "rate limited: {}",
            r.why
        );
        let mut status = Status::resource_exhausted(r.why);
        let seconds = r.retry_after.as_secs_f64().ceil().max(1.0) as u64;
        let millis = r.retry_after.as_millis().max(1) as u64;
        let md = status.metadata_mut();
        if let Ok(v) = seconds.to_string().parse() {
            md.insert(brim_proto::RETRY_AFTER_HEADER, v);
        }
        if let Ok(v) = millis.to_string().parse() {
            md.insert("grpc-retry-pushback-ms", v);
        }
        status
    }

    /// No TLS, no credentials, no ACLs: every caller may do everything.
    pub fn open() -> Guard {
        Guard::new(false, None, None)
    }

    /// Whether every non-public request needs a principal.
    fn authentication_required(&self) -> bool {
        self.credentials.is_some()
    }

    /// Establishes the caller from an `Authorization` header value (`Bearer <token>`, or
    /// `Basic base64(principal:token)` as Mesos frameworks send) and the connection.
    fn caller(&self, authorization: Option<&str>, peer: Option<&Peer>) -> Result<Caller, String> {
        if let Some(value) = authorization {
            let Some(credentials) = &self.credentials else {
                return Err("this master has no credentials file: no token is valid".into());
            };
            let now = jiff::Timestamp::now();
            let credentials = credentials.get();
            let principal = if let Some(token) = brim_security::bearer(value) {
                credentials.bearer(token, now)
            } else if let Some((principal, secret)) = brim_security::basic(value) {
                credentials.basic(&principal, &secret, now)
            } else {
                return Err(
                    "the Authorization header must be `Bearer <token>` or `Basic base64(<principal>:<token>)`"
                        .into(),
                );
            };
            return principal
                .map(|p| Caller {
                    principal: Some(p.to_string()),
                    certificate: false,
                })
                .map_err(|e| e.to_string());
        }
        let certificate = peer.and_then(|p| p.certificate.clone());
        Ok(Caller {
            certificate: certificate.is_some(),
            principal: certificate,
        })
    }

    fn count_unauthenticated(&self, what: &str, why: &str, peer: Option<&Peer>) {
        self.unauthenticated.inc();
        tracing::warn!(
            peer = ?peer.map(|p| p.addr),
            "unauthenticated {what}: {why}"
        );
    }

    /// Whether `caller` may do `action`; a denial is logged, counted and returned as
    /// `PERMISSION_DENIED`.
    pub(crate) fn authorize(&self, caller: Option<&str>, action: Action<'_>) -> Result<(), Status> {
        let Some(acls) = &self.acls else {
            return Ok(());
        };
        if acls.get().allows(caller, &action) {
            return Ok(());
        }
        self.denied
            .get_or_create(&ActionLabel {
                action: action.kind().to_string(),
            })
            .inc();
        let who = caller.unwrap_or("an unauthenticated caller");
        let what = match &action {
            Action::RegisterRole(role) => format!("subscribe under role `{role}`"),
            Action::UseRevocable => "use revocable resources".to_string(),
            Action::RunAsUser(user) => format!("run tasks as user `{user}`"),
            Action::RegisterAgent => "register an agent".to_string(),
            Action::Operator(call) => format!("make the `{}` operator call", call.name()),
        };
        tracing::warn!(
            principal = who,
            action = action.kind(),
            "authorization denied: {what}"
        );
        Err(Status::permission_denied(format!(
            "principal `{who}` may not {what}: ask the operator to grant it in the ACL file"
        )))
    }

    /// Subscribe: the principal is the authenticated one (a framework may not claim another),
    /// and it must own the role (and the revocable capability when asked for).
    pub(crate) fn check_subscribe(
        &self,
        caller: Option<&str>,
        info: &mut FrameworkInfo,
        existing: Option<&FrameworkInfo>,
    ) -> Result<(), Status> {
        if let Some(p) = caller {
            if !info.principal.is_empty() && info.principal != p {
                return Err(Status::permission_denied(format!(
                    "framework_info.principal is `{}` but the caller authenticated as `{p}`",
                    info.principal
                )));
            }
            info.principal = p.to_string();
        }
        if let Some(old) = existing {
            if !old.principal.is_empty() && old.principal != info.principal {
                return Err(Status::permission_denied(format!(
                    "framework {} belongs to principal `{}`",
                    old.id, old.principal
                )));
            }
        }
        let role = if info.role.is_empty() {
            "*"
        } else {
            &info.role
        };
        self.authorize(caller, Action::RegisterRole(role))?;
        if info
            .capabilities
            .iter()
            .any(|c| c == brim_proto::CAPABILITY_REVOCABLE_RESOURCES)
        {
            self.authorize(caller, Action::UseRevocable)?;
        }
        Ok(())
    }

    /// A framework call: made by the framework's own principal, launching tasks only as
    /// users that principal may run as.
    pub(crate) fn check_call(
        &self,
        caller: Option<&str>,
        master: &Master,
        call: &Call,
    ) -> Result<(), Status> {
        let framework_id = call.framework_id();
        let Some(info) = master.framework_info(framework_id) else {
            // Unknown framework: the call itself reports it.
            return Ok(());
        };
        if let Some(p) = caller {
            if !info.principal.is_empty() && info.principal != p {
                return Err(Status::permission_denied(format!(
                    "framework {framework_id} belongs to principal `{}`, not `{p}`",
                    info.principal
                )));
            }
        }
        if let Call::Accept(req) = call {
            // Every operation that launches tasks (the match fails to compile when another
            // kind of operation is added, so it is looked at here too).
            for task in req
                .operations
                .iter()
                .filter_map(|o| o.operation.as_ref())
                .flat_map(|op| match op {
                    v1::operation::Operation::Launch(l) => l.task_infos.iter(),
                    v1::operation::Operation::LaunchGroup(g) => g
                        .task_group
                        .as_ref()
                        .map_or(&[][..], |t| t.tasks.as_slice())
                        .iter(),
                    // Reservations are only ever for the framework's own role.
                    v1::operation::Operation::Reserve(_)
                    | v1::operation::Operation::Unreserve(_)
                    | v1::operation::Operation::Create(_)
                    | v1::operation::Operation::Destroy(_) => [].iter(),
                })
            {
                let user = task
                    .command
                    .as_ref()
                    .map(|c| c.user.as_str())
                    .filter(|u| !u.is_empty())
                    .unwrap_or(info.user.as_str());
                // Mesos HTTP calls are bound to the subscriber by their stream id and carry
                // no caller of their own: the framework's principal stands for them.
                let who = caller.or(Some(info.principal.as_str()).filter(|p| !p.is_empty()));
                self.authorize(who, Action::RunAsUser(user))?;
            }
        }
        Ok(())
    }

    /// An operator call on something owned by `owner` (a framework's principal): its owner
    /// may, others need the grant.
    pub(crate) fn check_operator(
        &self,
        caller: Option<&str>,
        call: OperatorCall,
        owner: Option<&str>,
    ) -> Result<(), Status> {
        if caller.is_some() && owner.is_some_and(|o| !o.is_empty()) && caller == owner {
            return Ok(());
        }
        self.authorize(caller, Action::Operator(call))
    }

    /// Agents: a verified certificate whenever TLS is on, and the ACL grant when there are ACLs.
    fn check_agent(&self, caller: &Caller) -> Result<(), Status> {
        if self.tls && !caller.certificate {
            return Err(Status::unauthenticated(
                "agents must present a client certificate signed by the cluster CA (--tls-cert/--tls-key)",
            ));
        }
        self.authorize(caller.principal.as_deref(), Action::RegisterAgent)
    }
}

/// Routes anyone may call: liveness, version and the UI's static files (no cluster data).
fn public(path: &str) -> bool {
    matches!(path, "/health" | "/version" | "/" | "/ui" | "/ui/") || path.starts_with("/ui/")
}

fn is_grpc(request: &Request) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// A refusal in the caller's protocol: a gRPC status, or HTTP 401/403 with a text body.
pub(crate) fn refuse(grpc: bool, status: Status) -> Response {
    if grpc {
        return status.into_http();
    }
    let code = match status.code() {
        tonic::Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        tonic::Code::PermissionDenied => StatusCode::FORBIDDEN,
        tonic::Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::BAD_REQUEST,
    };
    let mut r = (code, format!("{}\n", status.message())).into_response();
    if let Some(v) = status
        .metadata()
        .get(brim_proto::RETRY_AFTER_HEADER)
        .and_then(|v| header::HeaderValue::from_bytes(v.as_bytes()).ok())
    {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    if code == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"brim\", Basic realm=\"brim\""),
        );
    }
    r
}

/// Largest request body read (and dropped) before an HTTP refusal is sent.
const DRAIN_LIMIT: usize = 64 * 1024;

/// Refuses an HTTP (not gRPC) request after reading a small body: HTTP/2 clients such as
/// curl report an answer that arrives before their body was read as a stream error instead
/// of showing the 401.
async fn refuse_http(request: Request, grpc: bool, status: Status) -> Response {
    if !grpc {
        let body = request.into_body();
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            axum::body::to_bytes(body, DRAIN_LIMIT),
        )
        .await;
    }
    refuse(grpc, status)
}

/// Middleware: establishes the [`Caller`] of every request (or refuses it).
pub(crate) async fn authenticate(
    State(guard): State<Arc<Guard>>,
    mut request: Request,
    next: Next,
) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<Peer>>()
        .map(|c| c.0.clone());
    let grpc = is_grpc(&request);
    let authorization = match request.headers().get(header::AUTHORIZATION) {
        None => None,
        Some(v) => match v.to_str() {
            Ok(s) if s.len() <= brim_security::policy::MAX_TOKEN_BYTES + 16 => Some(s.to_string()),
            _ => {
                guard.count_unauthenticated(
                    "request",
                    "malformed Authorization header",
                    peer.as_ref(),
                );
                return refuse(
                    grpc,
                    Status::unauthenticated("malformed Authorization header"),
                );
            }
        },
    };
    let caller = match guard.caller(authorization.as_deref(), peer.as_ref()) {
        Ok(c) => c,
        Err(why) => {
            guard.count_unauthenticated("request", &why, peer.as_ref());
            return refuse_http(request, grpc, Status::unauthenticated(why)).await;
        }
    };
    let path = request.uri().path().to_string();
    let path = path.as_str();
    if path == AGENT_ATTACH {
        if let Err(s) = guard.check_agent(&caller) {
            if s.code() == tonic::Code::Unauthenticated {
                guard.count_unauthenticated("agent", s.message(), peer.as_ref());
            }
            return refuse_http(request, grpc, s).await;
        }
    } else if caller.principal.is_none() && guard.authentication_required() && !public(path) {
        guard.count_unauthenticated("request", "no credentials", peer.as_ref());
        return refuse_http(
            request,
            grpc,
            Status::unauthenticated(
                "this master requires authentication: send `Authorization: Bearer <token>` or a client certificate",
            ),
        )
        .await;
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}
