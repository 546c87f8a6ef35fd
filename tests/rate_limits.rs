//! Issue 11 part 5, rate limits: a storm of subscribe attempts (gRPC and the Mesos HTTP API)
//! and of agent registrations from one peer is mostly refused — RESOURCE_EXHAUSTED / 429
//! with a retry hint, counted in `brim_master_rate_limited_total{kind}` — while a framework
//! of another principal, from another address, still subscribes and runs a task. The cap on
//! open subscription streams refuses one more and admits it again once a stream closes.
//!
//! The storms come from 127.0.0.2 and 127.0.0.3 (all of 127/8 is loopback on Linux), the
//! legitimate framework and the agent from 127.0.0.1.

mod support;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::time::Duration;

use brim_proto::v1::agent_service_client::AgentServiceClient;
use brim_proto::v1::scheduler_client::SchedulerClient;
use brim_proto::v1::{AgentMessage, FrameworkInfo, SubscribeRequest};
use support::{wait_for, Cluster};

const STORM_TOKEN: &str = "storm-token-0123456789";
const CALM_TOKEN: &str = "calm-token-01234567890";
const STORM: usize = 300;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// GET with a bearer token over plain HTTP/1.0; (status, body).
fn get_with_token(addr: &str, path: &str, token: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\r\n"
    )
    .expect("write");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read");
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, body.to_string())
}

/// The value of `brim_master_rate_limited_total{kind="<kind>"}` (0 when absent).
fn rate_limited(metrics: &str, kind: &str) -> f64 {
    let prefix = format!("brim_master_rate_limited_total{{kind=\"{kind}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn channel_from(addr: &str, source: Ipv4Addr) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .local_address(Some(IpAddr::V4(source)))
        .connect()
        .await
        .expect("connect to the master")
}

fn framework(name: &str) -> SubscribeRequest {
    SubscribeRequest {
        framework_info: Some(FrameworkInfo {
            user: "nobody".into(),
            name: name.into(),
            role: "*".into(),
            failover_timeout: 60.0,
            ..Default::default()
        }),
    }
}

/// One Mesos HTTP SUBSCRIBE from `source`; the status line's code and the Retry-After.
async fn mesos_subscribe(addr: &str, source: Ipv4Addr) -> (u16, Option<String>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(std::net::SocketAddr::new(IpAddr::V4(source), 0))
        .expect("bind the source address");
    let mut s = socket
        .connect(addr.parse().expect("master address"))
        .await
        .expect("connect");
    let body = r#"{"type":"SUBSCRIBE","subscribe":{"framework_info":{"user":"nobody","name":"mesos-storm"}}}"#;
    let request = format!(
        "POST /api/v1/scheduler HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {STORM_TOKEN}\r\n\
         Content-Type: application/json\r\nAccept: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes()).await.expect("write");
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(0);
    let head = String::from_utf8_lossy(&buf[..n]).to_string();
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let retry = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("retry-after: ")
                .or_else(|| l.strip_prefix("Retry-After: "))
        })
        .map(|v| v.trim().to_string());
    (code, retry)
}

#[test]
fn a_subscribe_and_register_storm_is_refused_while_others_work() {
    if !support::can_run_cluster("rate_limits") {
        return;
    }
    let mut flags: Vec<String> = support::MASTER_FLAGS
        .iter()
        .map(|s| s.to_string())
        .collect();
    let credentials = tempfile::NamedTempFile::new().expect("credentials file");
    std::fs::write(
        credentials.path(),
        format!(
            "[[credential]]\nprincipal = \"storm\"\ntoken = \"{STORM_TOKEN}\"\n\n\
             [[credential]]\nprincipal = \"calm\"\ntoken = \"{CALM_TOKEN}\"\n"
        ),
    )
    .expect("write credentials");
    flags.extend(
        [
            "--credentials",
            &credentials.path().display().to_string(),
            "--subscribe-rate",
            "2",
            "--subscribe-burst",
            "10",
            "--register-rate",
            "2",
            "--register-burst",
            "10",
        ]
        .map(String::from),
    );
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut c = Cluster::new_with_master_flags(&flags);
    c.start_agent(0, "cpus:1;mem:256");
    let addr = c.master_addr.clone();
    wait_for("the agent", Duration::from_secs(30), || {
        let (code, body) = get_with_token(&addr, "/state", CALM_TOKEN);
        let state: serde_json::Value = serde_json::from_str(&body).ok()?;
        let active = state["agents"]
            .as_array()
            .is_some_and(|a| a.iter().any(|a| a["active"] == true));
        (code == 200 && active).then_some(())
    });

    let (grpc_refused, mesos_refused, register_refused) = runtime().block_on(async {
        // gRPC subscribe storm from 127.0.0.2, all at once on one connection.
        let channel = channel_from(&addr, Ipv4Addr::new(127, 0, 0, 2)).await;
        let mut attempts = tokio::task::JoinSet::new();
        for i in 0..STORM {
            let mut client = SchedulerClient::new(channel.clone());
            attempts.spawn(async move {
                let mut r = tonic::Request::new(framework(&format!("storm-{i}")));
                r.metadata_mut().insert(
                    "authorization",
                    format!("Bearer {STORM_TOKEN}").parse().expect("ascii"),
                );
                // Admitted: the stream is closed at once.
                client.subscribe(r).await.err()
            });
        }
        let mut grpc_refused = 0;
        while let Some(r) = attempts.join_next().await {
            if let Some(status) = r.expect("attempt task") {
                assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
                let hint = brim_proto::retry_after(&status);
                assert!(
                    hint.is_some_and(|h| h >= Duration::from_secs(1)),
                    "{status:?}"
                );
                grpc_refused += 1;
            }
        }

        // The Mesos HTTP API from the same peer (and principal): its buckets are empty.
        let mut mesos_refused = 0;
        for _ in 0..20 {
            let (code, retry) = mesos_subscribe(&addr, Ipv4Addr::new(127, 0, 0, 2)).await;
            if code == 429 {
                assert!(retry.is_some(), "429 without Retry-After");
                mesos_refused += 1;
            }
        }

        // Registration storm from 127.0.0.3: streams that never send `register`.
        let channel = channel_from(&addr, Ipv4Addr::new(127, 0, 0, 3)).await;
        let mut attempts = tokio::task::JoinSet::new();
        for _ in 0..STORM {
            let mut client = AgentServiceClient::new(channel.clone());
            attempts.spawn(async move {
                let (_tx, rx) = tokio::sync::mpsc::channel::<AgentMessage>(1);
                let call = client.attach(tokio_stream::wrappers::ReceiverStream::new(rx));
                // Admitted ones wait for `register`: give up on them.
                matches!(
                    tokio::time::timeout(Duration::from_secs(2), call).await,
                    Ok(Err(s)) if s.code() == tonic::Code::ResourceExhausted
                )
            });
        }
        let mut register_refused = 0;
        while let Some(r) = attempts.join_next().await {
            if r.expect("attempt task") {
                register_refused += 1;
            }
        }
        (grpc_refused, mesos_refused, register_refused)
    });
    eprintln!(
        "refused: {grpc_refused}/{STORM} gRPC subscribes, {mesos_refused}/20 Mesos subscribes, {register_refused}/{STORM} registrations"
    );
    assert!(grpc_refused >= STORM * 3 / 4, "{grpc_refused} of {STORM}");
    assert!(mesos_refused >= 15, "{mesos_refused} of 20");
    assert!(
        register_refused >= STORM * 3 / 4,
        "{register_refused} of {STORM}"
    );

    // Meanwhile another principal from another address subscribes and runs a task.
    assert_eq!(support::http_get(&addr, "/health").map(|r| r.0), Some(200));
    let out = std::process::Command::new(support::BRIM)
        .args(["run", "--", "echo calm framework ran"])
        .env("BRIM_MASTER", &addr)
        .env("BRIM_INSECURE", "1")
        .env("BRIM_TOKEN", CALM_TOKEN)
        .output()
        .expect("run brim");
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || !stdout.contains("calm framework ran") {
        panic!(
            "the calm framework failed during the storm: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let (code, metrics) = get_with_token(&addr, "/metrics", CALM_TOKEN);
    assert_eq!(code, 200, "{metrics}");
    let subscribe = rate_limited(&metrics, "subscribe");
    let register = rate_limited(&metrics, "register");
    assert_eq!(
        subscribe,
        (grpc_refused + mesos_refused) as f64,
        "every refused subscribe is counted"
    );
    assert_eq!(register, register_refused as f64);
    let log = c.master.as_ref().map(|m| m.log_text()).unwrap_or_default();
    assert!(log.contains("rate limited"), "no log line for the refusals");
}

#[test]
fn open_subscription_streams_are_capped() {
    let mut flags: Vec<&str> = support::MASTER_FLAGS.to_vec();
    // The master's own services and cron frameworks hold two streams.
    flags.extend(["--max-subscriptions", "4", "--subscribe-rate", "0"]);
    let c = Cluster::new_with_master_flags(&flags);
    let addr = c.master_addr.clone();
    wait_for("the hosted frameworks", Duration::from_secs(30), || {
        let s = support::state(&addr);
        let connected = s["frameworks"]
            .as_array()
            .map_or(0, |f| f.iter().filter(|f| f["connected"] == true).count());
        (connected == 2).then_some(())
    });
    runtime().block_on(async {
        let channel = channel_from(&addr, Ipv4Addr::LOCALHOST).await;
        let mut client = SchedulerClient::new(channel);
        let first = client
            .subscribe(framework("one"))
            .await
            .expect("third stream");
        let _second = client
            .subscribe(framework("two"))
            .await
            .expect("fourth stream");
        let status = client
            .subscribe(framework("three"))
            .await
            .expect_err("a fifth stream is over the cap");
        assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
        assert!(
            status.message().contains("--max-subscriptions"),
            "{status:?}"
        );
        // Closing one gives its place back.
        drop(first);
        let again = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                match client.subscribe(framework("three")).await {
                    Ok(s) => return s,
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        })
        .await;
        assert!(
            again.is_ok(),
            "the place of a closed stream was not given back"
        );
    });
    let metrics = support::http_get(&addr, "/metrics")
        .map(|r| r.1)
        .unwrap_or_default();
    assert!(rate_limited(&metrics, "streams") >= 1.0, "{metrics}");
}
