//! A single master with `zk` set publishes itself to a real ZooKeeper as Mesos masters do
//! (ephemeral sequential `json.info_<seq>`, MasterInfo JSON), and its znode is gone as soon as
//! the master stops (the session is closed, not left to expire).

#[path = "support/zookeeper.rs"]
mod zookeeper;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use brim_master::zk::{Session, ZkUrl};

async fn children(url: &ZkUrl) -> Vec<String> {
    let mut s = Session::connect(url, Duration::from_secs(4))
        .await
        .expect("zookeeper session");
    let kids = s.children(&url.path).await.unwrap_or_default();
    let _ = s.close().await;
    kids
}

#[tokio::test]
async fn single_master_publishes_and_unpublishes_on_stop() {
    if !zookeeper::available("zk_publish") {
        return;
    }
    let zk = zookeeper::ZooKeeper::start();
    let url: ZkUrl = format!("zk://{}/brim/mesos", zk.address)
        .parse()
        .expect("url");
    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let mut config = brim_master::MasterConfig::new(addr, dir.path().to_path_buf());
    config.zk = Some(brim_master::ZkConfig {
        url: url.clone(),
        advertise: addr.to_string(),
    });
    let m = brim_master::start(config).await.expect("master starts");

    let start = Instant::now();
    let node = loop {
        let kids = children(&url).await;
        if let [one] = kids.as_slice() {
            break one.clone();
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no json.info_ znode under {}: {kids:?}",
            url.path
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(node.starts_with("json.info_"), "{node}");
    let mut s = Session::connect(&url, Duration::from_secs(4))
        .await
        .expect("session");
    let data = s.data(&format!("{}/{node}", url.path)).await.expect("data");
    let _ = s.close().await;
    let info: serde_json::Value = serde_json::from_slice(&data).expect("MasterInfo JSON");
    assert_eq!(info["pid"], format!("master@{addr}"));
    assert_eq!(info["address"]["port"], port);
    assert_eq!(info["address"]["ip"], "127.0.0.1");
    assert_eq!(info["ip"], 16_777_343u32);

    m.stop().await.expect("master stops");
    // Closed with the session, not left for the session timeout.
    assert_eq!(children(&url).await, Vec::<String>::new());
}
