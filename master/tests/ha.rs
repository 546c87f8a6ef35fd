//! HA against a real etcd: one of two masters leads, the standby redirects HTTP and refuses
//! gRPC with the leader's address, the registry lives in etcd and survives the leader, the
//! standby takes over when the leader stops, and a master whose fence is stale cannot write.

#[path = "support/etcd.rs"]
mod etcd_support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use brim_master::registry::etcd::{EtcdRegistry, Fence};
use brim_master::registry::{AgentRecord, AgentRegistryState, RegistryError, RegistryStore};
use brim_master::{HaConfig, MasterConfig, RunningMaster};
use brim_proto::v1::{self, scheduler_client::SchedulerClient};
use etcd_support::{etcd_binary, Etcd};

async fn ha_master(etcd: &Etcd, dir: &std::path::Path) -> RunningMaster {
    // Bind once to learn a free port, then advertise exactly that address.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    let listen: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let mut config = MasterConfig::new(listen, dir.to_path_buf());
    config.ha = Some(HaConfig {
        etcd: vec![etcd.endpoint.clone()],
        advertise: listen.to_string(),
        lease_ttl: Duration::from_secs(2),
        prefix: "/brim-test".into(),
        etcd_tls: None,
    });
    brim_master::start(config).await.expect("master starts")
}

async fn get(addr: SocketAddr, path: &str) -> (u16, Option<String>, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await;
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let location = text
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("location:"))
        .map(|l| l[9..].trim().to_string());
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, location, body)
}

/// Waits until `/health` says `ok` (leader) on one of the masters; returns its index.
async fn wait_leader(masters: &[SocketAddr], timeout: Duration) -> usize {
    let start = Instant::now();
    loop {
        for (i, m) in masters.iter().enumerate() {
            let (code, _, body) = get(*m, "/health").await;
            if code == 200 && body.starts_with("ok") {
                return i;
            }
        }
        assert!(start.elapsed() < timeout, "no leader within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_redirects_then_takes_over_with_the_registry() {
    let Some(bin) = etcd_binary("standby_redirects_then_takes_over_with_the_registry") else {
        return;
    };
    let etcd = Etcd::start(&bin);
    let dir = tempfile::tempdir().expect("tempdir");
    let a = ha_master(&etcd, &dir.path().join("a")).await;
    let b = ha_master(&etcd, &dir.path().join("b")).await;
    let addrs = [a.addr(), b.addr()];
    let leader = wait_leader(&addrs, Duration::from_secs(10)).await;
    let standby = 1 - leader;
    let (leader_addr, standby_addr) = (addrs[leader], addrs[standby]);

    // Standby: health says so, HTTP redirects to the leader, gRPC names the leader.
    let (code, _, body) = get(standby_addr, "/health").await;
    assert_eq!((code, body.trim()), (200, "standby"));
    let start = Instant::now();
    let location = loop {
        let (code, location, _) = get(standby_addr, "/state").await;
        if code == 307 {
            break location;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "standby never learned the leader"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(location, Some(format!("http://{leader_addr}/state")));
    let mut client = SchedulerClient::connect(format!("http://{standby_addr}"))
        .await
        .expect("connect standby");
    let err = client
        .revive(v1::ReviveRequest {
            framework_id: "x".into(),
        })
        .await
        .expect_err("a standby refuses calls");
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert_eq!(
        err.metadata()
            .get(brim_proto::LEADER_HEADER)
            .and_then(|v| v.to_str().ok()),
        Some(leader_addr.to_string().as_str())
    );

    // A framework registers with the leader: the record lands in etcd.
    let mut client = SchedulerClient::connect(format!("http://{leader_addr}"))
        .await
        .expect("connect leader");
    let mut events = client
        .subscribe(v1::SubscribeRequest {
            framework_info: Some(v1::FrameworkInfo {
                name: "survivor".into(),
                failover_timeout: 3600.0,
                ..Default::default()
            }),
        })
        .await
        .expect("subscribe")
        .into_inner();
    let framework_id = match events.message().await.expect("event").and_then(|e| e.event) {
        Some(v1::event::Event::Subscribed(s)) => s.framework_id,
        other => panic!("expected SUBSCRIBED, got {other:?}"),
    };
    drop(events);

    // The leader goes away; the standby takes over within the lease TTL and knows the
    // framework from the registry.
    let stopped = Instant::now();
    let (old, new) = if leader == 0 { (a, b) } else { (b, a) };
    old.stop().await.expect("stop leader");
    let now_leader = wait_leader(&[standby_addr], Duration::from_secs(10)).await;
    assert_eq!(now_leader, 0);
    let failover = stopped.elapsed();
    assert!(
        failover < Duration::from_secs(10),
        "failover took {failover:?}"
    );
    let (code, _, body) = get(standby_addr, "/state").await;
    assert_eq!(code, 200, "{body}");
    let state: serde_json::Value = serde_json::from_str(&body).expect("json");
    let known: Vec<&str> = state["frameworks"]
        .as_array()
        .expect("frameworks")
        .iter()
        .filter_map(|f| f["id"].as_str())
        .collect();
    assert!(
        known.contains(&framework_id.as_str()),
        "{known:?} should include {framework_id}"
    );
    assert_eq!(state["leader"], standby_addr.to_string());
    eprintln!("failover to the standby took {failover:?}");
    new.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_fence_cannot_write_the_registry() {
    let Some(bin) = etcd_binary("a_stale_fence_cannot_write_the_registry") else {
        return;
    };
    let etcd = Etcd::start(&bin);
    let client = brim_master::election::connect(std::slice::from_ref(&etcd.endpoint))
        .await
        .expect("connect");
    let election =
        brim_master::election::Election::new(client.clone(), "/fence", Duration::from_secs(2));
    let leadership = election.campaign("me:1").await.expect("campaign");
    let record = AgentRecord {
        id: "a1".into(),
        hostname: "h".into(),
        http_address: "x:1".into(),
        resources: "cpus:1".into(),
        attributes: vec![],
        state: AgentRegistryState::Admitted,
        since: 0.0,
        reservations: Default::default(),
        volumes: Vec::new(),
    };
    let good = leadership.fence.clone();
    let stale = Fence {
        key: good.key.clone(),
        revision: good.revision + 1000,
    };
    let outcome = tokio::task::spawn_blocking(move || {
        let mut ok = EtcdRegistry::new(client.clone(), "/fence", Some(good)).expect("registry");
        ok.put_agent(&record).expect("the leader writes");
        let mut fenced = EtcdRegistry::new(client, "/fence", Some(stale)).expect("registry");
        let err = fenced.put_agent(&record);
        let loaded = ok.load().expect("load");
        (err, loaded)
    })
    .await
    .expect("join");
    assert!(
        matches!(outcome.0, Err(RegistryError::Fenced)),
        "{:?}",
        outcome.0
    );
    assert_eq!(outcome.1.agents["a1"].state, AgentRegistryState::Admitted);
    drop(leadership);
}
