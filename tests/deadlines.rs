//! Issue 11 part 5, deadlines: a master started with short bounds (2 s to send headers and
//! to finish a request, 3 s for a gRPC call to be answered) disconnects a slowloris client,
//! answers a half-sent body with 408, ends a gRPC call that outlives its deadline — the
//! server's or the shorter one the client sent — with DEADLINE_EXCEEDED, and still keeps an
//! idle event stream open for as long as the framework wants it. On the client side, the
//! SDK and the CLI against a server that accepts connections and never answers fail with a
//! clear error instead of hanging.
//!
//! Wall-clock checks are generous ("within 30 s" for a 2 s bound): they prove "bounded",
//! not "fast".

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use brim_proto::v1::agent_service_client::AgentServiceClient;
use brim_proto::v1::scheduler_client::SchedulerClient;
use brim_proto::v1::{AgentMessage, FrameworkInfo, SubscribeRequest};
use support::{http_get, Cluster};

/// Far above every bound under test: only a hang gets near it.
const GENEROUS: Duration = Duration::from_secs(30);

fn master() -> Cluster {
    Cluster::new_with_master_flags(&[
        "--header-read-timeout",
        "2s",
        "--request-timeout",
        "2s",
        "--grpc-timeout",
        "3s",
        "--keepalive",
        "1s",
        // No heartbeats on the event stream during the idle check.
        "--framework-heartbeat-interval",
        "600s",
    ])
}

/// Reads until the server closes the connection; returns what it sent and how long that
/// took, or panics if it is still open after [`GENEROUS`].
fn until_closed(mut s: TcpStream, what: &str) -> (String, Duration) {
    let start = Instant::now();
    s.set_read_timeout(Some(GENEROUS)).expect("read timeout");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!(
                "{what}: the master kept the connection open for {:?} ({e})",
                start.elapsed()
            ),
        }
    }
    (String::from_utf8_lossy(&got).into_owned(), start.elapsed())
}

#[test]
fn slow_and_silent_http_clients_are_cut_off() {
    let cluster = master();
    let addr = cluster.master_addr.clone();

    // Connects and says nothing.
    let silent = TcpStream::connect(&addr).expect("connect");
    let (sent, took) = until_closed(silent, "a silent connection");
    assert!(sent.is_empty(), "a silent client got {sent:?}");
    eprintln!("silent connection closed after {took:?}");

    // Half a request head, then nothing (slowloris).
    let mut half = TcpStream::connect(&addr).expect("connect");
    half.write_all(b"GET /health HTTP/1.1\r\nHost: brim\r\nX-Slow: ")
        .expect("write");
    let (_, took) = until_closed(half, "a half-sent request head");
    eprintln!("half-sent head closed after {took:?}");

    // A complete head, then a body that stops after 1 of 100 bytes.
    let mut body = TcpStream::connect(&addr).expect("connect");
    body.write_all(
        b"PUT /roles/slow/weight HTTP/1.1\r\nHost: brim\r\nContent-Length: 100\r\n\r\n1",
    )
    .expect("write");
    let (answer, took) = until_closed(body, "a half-sent body");
    assert!(
        answer.starts_with("HTTP/1.1 408"),
        "a stalled body should get 408, got {answer:?}"
    );
    eprintln!("stalled body answered 408 after {took:?}");

    // Kept alive between requests (the header clock restarts after each answer), and the
    // master still serves everyone else.
    let mut kept = TcpStream::connect(&addr).expect("connect");
    kept.set_read_timeout(Some(GENEROUS)).expect("read timeout");
    for _ in 0..2 {
        kept.write_all(b"GET /health HTTP/1.1\r\nHost: brim\r\n\r\n")
            .expect("write");
        let mut buf = [0u8; 512];
        let n = kept
            .read(&mut buf)
            .expect("answer on a kept-alive connection");
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(http_get(&addr, "/health").map(|r| r.0), Some(200));
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A gRPC client whose only clock is the server's: tonic's own channel would also enforce
/// `grpc-timeout` locally, which would hide whether the master honours it.
fn raw_agent_client(
    addr: &str,
) -> AgentServiceClient<
    hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        tonic::body::Body,
    >,
> {
    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let origin = format!("http://{addr}").parse().expect("origin");
    AgentServiceClient::with_origin(http, origin)
}

#[test]
fn grpc_calls_end_at_their_deadline() {
    let cluster = master();
    let addr = cluster.master_addr.clone();
    runtime().block_on(async {
        // An agent stream that never sends `register`: the master would wait 10 s for it;
        // its 3 s gRPC bound ends the call first.
        let (_tx, rx) = tokio::sync::mpsc::channel::<AgentMessage>(1);
        let start = Instant::now();
        let r = tokio::time::timeout(
            GENEROUS,
            raw_agent_client(&addr).attach(tokio_stream::wrappers::ReceiverStream::new(rx)),
        )
        .await
        .expect("the master left the call hanging");
        let status = r.expect_err("an attach without register must fail");
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
        assert!(status.message().contains("3.000s"), "{status:?}");
        eprintln!(
            "server bound: DEADLINE_EXCEEDED after {:?}",
            start.elapsed()
        );

        // The client's own, shorter deadline wins, enforced by the master.
        let (_tx, rx) = tokio::sync::mpsc::channel::<AgentMessage>(1);
        let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        request
            .metadata_mut()
            .insert("grpc-timeout", "1000m".parse().expect("metadata"));
        let start = Instant::now();
        let status = tokio::time::timeout(GENEROUS, raw_agent_client(&addr).attach(request))
            .await
            .expect("the master left the call hanging")
            .expect_err("an attach without register must fail");
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
        assert!(status.message().contains("1.000s"), "{status:?}");
        eprintln!(
            "client deadline: DEADLINE_EXCEEDED after {:?}",
            start.elapsed()
        );
    });
}

#[test]
fn an_idle_event_stream_outlives_every_bound() {
    let cluster = master();
    let addr = cluster.master_addr.clone();
    runtime().block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect to the master");
        let mut client = SchedulerClient::new(channel);
        let mut events = client
            .subscribe(SubscribeRequest {
                framework_info: Some(FrameworkInfo {
                    user: "nobody".into(),
                    name: "idle".into(),
                    role: "*".into(),
                    failover_timeout: 60.0,
                    ..Default::default()
                }),
            })
            .await
            .expect("subscribe")
            .into_inner();
        let subscribed = events.message().await.expect("first event");
        assert!(subscribed.is_some(), "the stream ended before SUBSCRIBED");
        // Quiet for longer than the header, request and gRPC bounds together, with
        // keepalive pings every second.
        tokio::time::sleep(Duration::from_secs(8)).await;
        let quiet = tokio::time::timeout(Duration::from_millis(200), events.message()).await;
        assert!(
            quiet.is_err(),
            "the idle stream was closed (or sent something): {quiet:?}"
        );
        let state = support::state(&addr);
        let idle = state["frameworks"]
            .as_array()
            .and_then(|f| f.iter().find(|f| f["name"] == "idle"))
            .cloned()
            .unwrap_or_default();
        assert_eq!(idle["connected"], true, "after an idle period: {state}");
        drop(events);
    });
}

#[test]
fn clients_give_up_on_a_silent_master() {
    // Accepts connections, never reads or answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = silent.local_addr().expect("addr").to_string();
    let held = std::thread::spawn(move || {
        let mut conns = Vec::new();
        silent.set_nonblocking(true).expect("nonblocking");
        let until = Instant::now() + Duration::from_secs(60);
        while Instant::now() < until {
            match silent.accept() {
                Ok((c, _)) => conns.push(c),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    });

    // The SDK: the subscription is never answered; the driver retries, then gives up.
    runtime().block_on(async {
        let mut config = brim_framework::DriverConfig::new(addr.clone(), "silent");
        config.connect_timeout = Duration::from_secs(1);
        config.call_timeout = Duration::from_secs(1);
        config.reconnect_timeout = Some(Duration::from_secs(3));
        let driver = brim_framework::Driver::new(config).expect("driver");
        struct Idle;
        impl brim_framework::Scheduler for Idle {}
        let start = Instant::now();
        let r = tokio::time::timeout(GENEROUS, driver.run(&mut Idle))
            .await
            .expect("the driver hung on a silent master");
        let e = r.expect_err("a silent master cannot be subscribed to");
        let text = e.to_string();
        assert!(text.contains("did not answer"), "{text}");
        eprintln!("SDK gave up after {:?}: {text}", start.elapsed());
    });

    // The CLI.
    let start = Instant::now();
    let out = std::process::Command::new(support::BRIM)
        .args(["agents", "--master", &addr])
        .env("BRIM_INSECURE", "1")
        .output()
        .expect("run brim");
    assert!(!out.status.success());
    assert!(
        start.elapsed() < GENEROUS,
        "brim agents took {:?}",
        start.elapsed()
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&addr), "{stderr}");
    eprintln!("CLI gave up after {:?}: {stderr}", start.elapsed());
    drop(held);
}
