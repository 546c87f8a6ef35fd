//! ZooKeeper leader publication for Mesos clients, real processes: a real ZooKeeper, etcd and
//! two `brim master --etcd … --zk zk://…/mesos`. The leader's ephemeral `json.info_<seq>`
//! znode appears with its MasterInfo in Mesos's JSON shape; pymesos, given only the `zk://`
//! URL, finds the leader through it and runs a task; when the leader is `kill -9`ed its znode
//! goes with its ZooKeeper session and the new leader's appears.

#[path = "../master/tests/support/etcd.rs"]
mod etcd_support;
mod support;
#[path = "../master/tests/support/zookeeper.rs"]
mod zookeeper;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use brim_master::zk::{leader_child, Session, ZkUrl};
use serde_json::Value;
use support::{free_port, http_get, wait_for, Proc, BRIM};

const PYMESOS_ZK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/mesos/pymesos_zk.py");

fn spawn(dir: &std::path::Path, name: &str, args: &[String]) -> Proc {
    let log = dir.join(format!("{name}.log"));
    let out = std::fs::File::create(&log).expect("log");
    let child = Command::new(BRIM)
        .env(support::INSECURE.0, support::INSECURE.1)
        .env("RUST_LOG", "info")
        .args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("log"))
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
    Proc {
        child,
        name: name.into(),
        log,
    }
}

/// The `json.info_` children of the path and the lowest one's MasterInfo JSON.
fn published(url: &ZkUrl) -> Option<(Vec<String>, Value)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut s = Session::connect(url, Duration::from_secs(4)).await.ok()?;
        let kids: Vec<String> = s
            .children(&url.path)
            .await
            .ok()?
            .into_iter()
            .filter(|k| k.starts_with("json.info_"))
            .collect();
        let lowest = leader_child(&kids)?.clone();
        let data = s.data(&format!("{}/{lowest}", url.path)).await.ok()?;
        let _ = s.close().await;
        Some((kids, serde_json::from_slice(&data).ok()?))
    })
}

/// The MasterInfo Mesos clients read: pid, address, ip as Mesos's integer, port, id.
fn assert_master_info(info: &Value, port: u16) {
    assert_eq!(info["pid"], format!("master@127.0.0.1:{port}"), "{info}");
    assert_eq!(info["port"], port, "{info}");
    assert_eq!(
        info["ip"], 16_777_343u32,
        "127.0.0.1 as Mesos's integer: {info}"
    );
    assert_eq!(info["hostname"], "127.0.0.1", "{info}");
    assert_eq!(
        info["address"],
        serde_json::json!({"hostname": "127.0.0.1", "ip": "127.0.0.1", "port": port}),
        "{info}"
    );
    assert!(
        info["id"].as_str().is_some_and(|id| !id.is_empty()),
        "{info}"
    );
    assert!(info["version"].is_string(), "{info}");
}

#[test]
fn leader_published_to_zookeeper_pymesos_finds_it_and_failover_moves_it() {
    let test = "mesos_zk";
    if !support::can_run_cluster(test) || !zookeeper::available(test) {
        return;
    }
    let Some(etcd_bin) = etcd_support::etcd_binary(test) else {
        return;
    };
    let Some(py) = support::python_with("import pymesos, http_parser, kazoo") else {
        let why = "mesos_zk: skipped: no python3 with pymesos and kazoo (see .ci/run)";
        assert!(
            std::env::var("BRIM_TEST_REQUIRE_ALL").as_deref() != Ok("1"),
            "{why}, and BRIM_TEST_REQUIRE_ALL=1 forbids skipping"
        );
        eprintln!("{why}");
        return;
    };
    let zk = zookeeper::ZooKeeper::start();
    let etcd = etcd_support::Etcd::start(&etcd_bin);
    // Only for its temp dir and its cgroup tag: dropping it removes what the agent left.
    let cluster = support::Cluster::new();
    let dir = &cluster.dir;
    let zk_url = format!("zk://{}/mesos", zk.address);
    let url: ZkUrl = zk_url.parse().expect("zk url");
    let ports = [free_port(), free_port()];
    let master = |i: usize| -> Proc {
        let port = ports[i].to_string();
        let args: Vec<String> = [
            "master",
            "--ip",
            "127.0.0.1",
            "--port",
            &port,
            "--work-dir",
            &dir.path().join(format!("m{i}")).display().to_string(),
            "--etcd",
            &etcd.endpoint,
            "--advertise",
            &format!("127.0.0.1:{port}"),
            "--lease-ttl",
            "2s",
            "--zk",
            &zk_url,
            "--allocation-interval",
            "200ms",
        ]
        .map(String::from)
        .to_vec();
        spawn(dir.path(), &format!("master{i}"), &args)
    };
    let mut masters = vec![Some(master(0)), Some(master(1))];
    let leader = || {
        ports.iter().position(|p| {
            http_get(&format!("127.0.0.1:{p}"), "/health")
                .is_some_and(|(c, b)| c == 200 && b.starts_with("ok"))
        })
    };
    let first = wait_for("a leader", Duration::from_secs(30), leader);
    let (kids, info) = wait_for(
        "the leader's json.info_ znode",
        Duration::from_secs(20),
        || published(&url),
    );
    assert_eq!(kids.len(), 1, "only the leader publishes: {kids:?}");
    assert_master_info(&info, ports[first]);

    // pymesos with nothing but the zk:// URL registers with the leader and runs a task.
    let master_list = ports
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    let agent_args: Vec<String> = [
        "agent",
        "--master",
        &master_list,
        "--ip",
        "127.0.0.1",
        "--port",
        &free_port().to_string(),
        "--work-dir",
        &dir.path().join("agent").display().to_string(),
        "--cgroup-name",
        &format!("{}-agent", cluster.tag),
        "--resources",
        "cpus:1;mem:256",
    ]
    .map(String::from)
    .to_vec();
    let agent = spawn(dir.path(), "agent", &agent_args);
    wait_for("the agent registered", Duration::from_secs(30), || {
        let (_, body) = http_get(&format!("127.0.0.1:{}", ports[first]), "/state")?;
        let s: Value = serde_json::from_str(&body).ok()?;
        (s["agents"].as_array()?.iter().any(|a| a["active"] == true)).then_some(())
    });
    let (ok, out, err) = support::run_python(&py, PYMESOS_ZK, &[&zk_url], Duration::from_secs(90));
    let expect = [
        "STEP registered".to_string(),
        format!("with master 127.0.0.1:{}", ports[first]),
        "STEP launched".to_string(),
        "STEP update zk-task TASK_FINISHED".to_string(),
        "STEP torn down".to_string(),
    ];
    let missing: Vec<&String> = expect
        .iter()
        .filter(|e| !out.contains(e.as_str()))
        .collect();
    assert!(
        ok && missing.is_empty(),
        "pymesos over zk:// failed (missing {missing:?})\n--- stdout ---\n{out}\n--- stderr ---\n{err}\n--- master log ---\n{}",
        masters[first].as_ref().map(Proc::log_text).unwrap_or_default()
    );

    // kill -9 the leader: its session expires, its znode goes, the new leader's appears.
    let killed_at = Instant::now();
    if let Some(mut p) = masters[first].take() {
        p.kill9();
    }
    let second = 1 - first;
    let (kids, info) = wait_for(
        "the new leader's znode (the old one gone with its session)",
        Duration::from_secs(30),
        || published(&url).filter(|(kids, info)| kids.len() == 1 && info["port"] == ports[second]),
    );
    assert_master_info(&info, ports[second]);
    eprintln!(
        "mesos_zk: znode moved to the new leader {:?} after kill -9 ({kids:?})",
        killed_at.elapsed()
    );
    assert_eq!(leader(), Some(second));
    drop(agent);
    drop(masters);
}
