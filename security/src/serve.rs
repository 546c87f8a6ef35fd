//! Serving an axum router (gRPC routes included) over plaintext or TLS, with the peer's
//! verified certificate identity available to handlers as `ConnectInfo<Peer>`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use axum::Router;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshaken connections waiting for the server to pick them up.
const ACCEPT_QUEUE: usize = 128;

/// Who is on the other end of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub addr: SocketAddr,
    /// Common name of the client certificate, verified against the cluster CA during the
    /// handshake; `None` without TLS or when the client presented no certificate.
    pub certificate: Option<String>,
}

impl Connected<IncomingStream<'_, TcpListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> Self {
        Peer {
            addr: *stream.remote_addr(),
            certificate: None,
        }
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        stream.remote_addr().clone()
    }
}

/// A TCP listener that hands out TLS streams. Handshakes run in their own tasks (with a
/// deadline), so a slow or hostile client never holds up the others; failed handshakes (a
/// certificate not signed by the cluster CA, plaintext on a TLS port) are logged and dropped.
pub struct TlsListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, Peer)>,
    acceptor: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    pub fn new(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(ACCEPT_QUEUE);
        let tls = TlsAcceptor::from(config);
        let acceptor = tokio::spawn(async move {
            loop {
                let (stream, addr) = match tcp.accept().await {
                    Ok(s) => s,
                    Err(e) => {
                        // EMFILE and friends: wait instead of spinning.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let tls = tls.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let certificate = stream
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|c| c.first())
                                .and_then(crate::tls::certificate_principal);
                            let _ = tx.send((stream, Peer { addr, certificate })).await;
                        }
                        Ok(Err(e)) => tracing::warn!(peer = %addr, "TLS handshake refused: {e}"),
                        Err(_) => tracing::warn!(peer = %addr, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener {
            local,
            ready,
            acceptor,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = Peer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(s) => s,
            // The acceptor task only ends when aborted, i.e. when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(Peer {
            addr: self.local,
            certificate: None,
        })
    }
}

/// Time bounds of one listener, so that a slow or silent client cannot hold a connection or
/// a handler forever (slowloris) while long-lived streams stay up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeLimits {
    /// A new connection must deliver its first request's headers within this time of
    /// connecting (after the TLS handshake, which has its own 10 s bound), and every later HTTP/1 request's headers within this time of the
    /// previous response (idle keep-alive connections are closed after it).
    pub header_read: Duration,
    /// An HTTP request (body included) must be answered — the response headers sent —
    /// within this time, else 408. Streaming responses are not cut: the bound ends when the
    /// stream starts.
    pub request: Duration,
    /// The longest a gRPC handler may take to answer (for streams: to open the stream);
    /// a shorter `grpc-timeout` from the client wins. Past it: `DEADLINE_EXCEEDED`.
    pub grpc: Duration,
    /// HTTP/2 keepalive: ping an idle peer this often, drop it when a ping goes unanswered
    /// for `keepalive_timeout` (a dead framework or agent is noticed without traffic).
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        ServeLimits {
            header_read: Duration::from_secs(30),
            request: Duration::from_secs(60),
            grpc: Duration::from_secs(60),
            keepalive_interval: Duration::from_secs(20),
            keepalive_timeout: Duration::from_secs(20),
        }
    }
}

/// The `grpc-timeout` header (`<up to 8 digits><H|M|S|m|u|n>`); `None` when absent or
/// malformed (a malformed one is ignored, like tonic does).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || !value.is_ascii() {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    if digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// How long a request may take to be answered: gRPC calls get the shorter of the client's
/// `grpc-timeout` and the server's bound, other requests the HTTP bound.
pub fn request_deadline(grpc: bool, grpc_timeout: Option<&str>, limits: &ServeLimits) -> Duration {
    if !grpc {
        return limits.request;
    }
    grpc_timeout
        .and_then(parse_grpc_timeout)
        .map_or(limits.grpc, |client| client.min(limits.grpc))
}

fn is_grpc<B>(request: &axum::http::Request<B>) -> bool {
    request
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// The answer to a request that ran out of time.
fn expired(grpc: bool, after: Duration) -> axum::response::Response {
    use axum::response::IntoResponse;
    if grpc {
        let status = tonic::Status::deadline_exceeded(format!(
            "the call was not answered within {:.3}s (its deadline); retry, or raise the deadline",
            after.as_secs_f64()
        ));
        let mut r = status.into_http::<axum::body::Body>();
        // The status travels in the headers (a trailers-only response).
        r.headers_mut().insert(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/grpc"),
        );
        r
    } else {
        (
            axum::http::StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request was not completed within {:.0}s (a slow client, or a busy server); retry\n",
                after.as_secs_f64()
            ),
        )
            .into_response()
    }
}

/// A plain TCP listener in the shape of [`TlsListener`] (peer without certificate).
struct PlainListener(TcpListener);

impl Listener for PlainListener {
    type Io = TcpStream;
    type Addr = Peer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok((stream, addr)) => {
                    return (
                        stream,
                        Peer {
                            addr,
                            certificate: None,
                        },
                    )
                }
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(Peer {
            addr: self.0.local_addr()?,
            certificate: None,
        })
    }
}

/// Serves `router` on `listener` (TLS when `tls` is set) until `shutdown` resolves, with the
/// default [`ServeLimits`]. Handlers can read the caller with `ConnectInfo<Peer>`.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, tls, router, ServeLimits::default(), shutdown).await
}

/// [`serve`] with explicit time bounds.
pub async fn serve_with(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: Router,
    limits: ServeLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    match tls {
        None => run(PlainListener(listener), router, limits, shutdown).await,
        Some(config) => {
            run(
                TlsListener::new(listener, config)?,
                router,
                limits,
                shutdown,
            )
            .await
        }
    }
}

/// The accept loop: one task per connection, each with the limits; on shutdown, stop
/// accepting, let every connection finish its requests, and wait for them.
async fn run<L>(
    mut listener: L,
    router: Router,
    limits: ServeLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: Listener<Addr = Peer>,
    L::Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read);
    builder
        .http2()
        .timer(TokioTimer::new())
        .enable_connect_protocol()
        .keep_alive_interval(limits.keepalive_interval)
        .keep_alive_timeout(limits.keepalive_timeout);
    let builder = Arc::new(builder);
    let (closing_tx, closing) = tokio::sync::watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (io, peer) = tokio::select! {
            _ = &mut shutdown => break,
            // Reap finished connections so the set does not grow without bound.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => accepted,
        };
        connections.spawn(connection(
            builder.clone(),
            TokioIo::new(io),
            peer,
            router.clone(),
            limits,
            closing.clone(),
        ));
    }
    drop(listener);
    let _ = closing_tx.send(true);
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// Serves one connection. Until its first request arrives it is on a clock
/// (`limits.header_read`), which covers what hyper's header timeout does not: the
/// HTTP/2 preface and a silent client on a plaintext port.
async fn connection<I>(
    builder: Arc<hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>>,
    io: I,
    peer: Peer,
    router: Router,
    limits: ServeLimits,
    mut closing: tokio::sync::watch::Receiver<bool>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    use std::sync::atomic::{AtomicBool, Ordering};
    use tower::ServiceExt;
    let started = Arc::new(AtomicBool::new(false));
    let info = axum::extract::ConnectInfo(peer.clone());
    let service = {
        let started = started.clone();
        hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            started.store(true, Ordering::Relaxed);
            let mut request = request.map(axum::body::Body::new);
            request.extensions_mut().insert(info.clone());
            let grpc = is_grpc(&request);
            let deadline = request_deadline(
                grpc,
                request
                    .headers()
                    .get("grpc-timeout")
                    .and_then(|v| v.to_str().ok()),
                &limits,
            );
            let router = router.clone();
            async move {
                match tokio::time::timeout(deadline, router.oneshot(request)).await {
                    Ok(r) => r,
                    Err(_) => Ok(expired(grpc, deadline)),
                }
            }
        })
    };
    let conn = builder.serve_connection_with_upgrades(io, service);
    let mut conn = std::pin::pin!(conn);
    let first_request = tokio::time::sleep(limits.header_read);
    let mut first_request = std::pin::pin!(first_request);
    let mut waiting_first = true;
    let mut draining = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(peer = %peer.addr, "connection ended: {e}");
                }
                return;
            }
            _ = &mut first_request, if waiting_first => {
                waiting_first = false;
                if !started.load(Ordering::Relaxed) {
                    tracing::warn!(peer = %peer.addr, "no request within {:?} of connecting; closing the connection", limits.header_read);
                    return;
                }
            }
            _ = closing.wait_for(|c| *c), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_units() {
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("7u"), Some(Duration::from_micros(7)));
        assert_eq!(
            parse_grpc_timeout("99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
    }

    #[test]
    fn malformed_grpc_timeouts_are_ignored() {
        for bad in [
            "",
            "S",
            "5",
            "5s",
            "123456789S",
            "-1S",
            "1.5S",
            "5 S",
            "é5S",
        ] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn deadline_is_the_shorter_of_client_and_server() {
        let limits = ServeLimits {
            grpc: Duration::from_secs(10),
            request: Duration::from_secs(7),
            ..ServeLimits::default()
        };
        assert_eq!(
            request_deadline(true, Some("2S"), &limits),
            Duration::from_secs(2)
        );
        assert_eq!(
            request_deadline(true, Some("1H"), &limits),
            Duration::from_secs(10)
        );
        assert_eq!(
            request_deadline(true, None, &limits),
            Duration::from_secs(10)
        );
        assert_eq!(
            request_deadline(true, Some("junk"), &limits),
            Duration::from_secs(10)
        );
        // Plain HTTP ignores grpc-timeout.
        assert_eq!(
            request_deadline(false, Some("2S"), &limits),
            Duration::from_secs(7)
        );
    }
}
