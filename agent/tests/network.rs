//! Per-task networks (root, iproute2, python3): a `none` task cannot reach a listener on the
//! host while a `host` task can; a `bridge` task's allocated port is reachable from the host
//! on loopback, its veth goes away when it ends, and a leftover veth on the agent's bridge is
//! removed when the agent starts. Skips (or fails under `BRIM_TEST_REQUIRE_ALL=1`) without
//! root or the tools.

mod common;

use std::io::{Read, Write};
use std::process::Command;
use std::time::Duration;

use brim_agent::network::LABEL;
use brim_agent::Isolation;
use brim_proto::v1::{HealthCheck, HealthCheckKind, Label, TaskInfo, TaskState};
use common::{config, shell_task, start_agent, state, unique, FakeMaster};

fn tool(name: &str) -> bool {
    Command::new(name)
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
        || Command::new(name)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
}

fn can_run(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let missing = if !root {
        Some("needs root".to_string())
    } else if !std::path::Path::new("/sys/fs/cgroup").exists() {
        Some("needs cgroups".to_string())
    } else {
        ["ip", "nsenter", "python3"]
            .into_iter()
            .find(|t| !tool(t))
            .map(|t| format!("needs `{t}`"))
    };
    common::run_or_skip(test, missing)
}

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Deletes the test's bridge (and what hangs on it) however the test ends.
struct BridgeGuard(String);

impl Drop for BridgeGuard {
    fn drop(&mut self) {
        ip(&["link", "del", &self.0]);
    }
}

fn with_network(mut t: TaskInfo, mode: &str) -> TaskInfo {
    t.labels.push(Label {
        key: LABEL.into(),
        value: mode.into(),
    });
    t
}

/// A task that exits 0 when it can connect to every `addr:port` and 1 when it cannot.
fn connect_task(id: &str, addrs: &[&str], port: u16) -> TaskInfo {
    let targets: Vec<String> = addrs.iter().map(|a| format!("('{a}', {port})")).collect();
    shell_task(
        id,
        &format!(
            "python3 -c \"import socket,sys\nfor t in [{}]:\n  try: socket.create_connection(t, 2).close(); print('reached', t)\n  except OSError as e: print('unreachable', t, e); sys.exit(1)\"",
            targets.join(",")
        ),
        "cpus:0.1;mem:64",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn none_host_and_bridge_networks() {
    if !can_run("none_host_and_bridge_networks") {
        return;
    }
    let bridge = format!("bt{}", &unique("x")[2..12]);
    let _guard = BridgeGuard(bridge.clone());
    let gateway = "10.214.0.1";
    // A leftover of a crashed agent: a task veth on the agent's bridge that no task owns.
    assert!(ip(&["link", "add", &bridge, "type", "bridge"]));
    assert!(ip(&[
        "addr",
        "add",
        &format!("{gateway}/16"),
        "dev",
        &bridge
    ]));
    assert!(ip(&["link", "set", &bridge, "up"]));
    let leftover = format!("bv{}", &unique("x")[2..14]);
    let peer = format!("pe{}", &unique("x")[2..12]);
    assert!(ip(&[
        "link", "add", &leftover, "type", "veth", "peer", "name", &peer
    ]));
    assert!(ip(&["link", "set", &leftover, "master", &bridge]));

    let root = unique("brim-net");
    let work = tempfile::tempdir().expect("tempdir");
    let mut master = FakeMaster::start().await;
    let mut cfg = config(master.addr, work.path(), Isolation::Cgroups, &root);
    cfg.bridge_name = bridge.clone();
    cfg.bridge_cidr = format!("{gateway}/16");
    let (http, stop, join) = start_agent(cfg).await;
    let (mut s, _) = master.accept().await;
    s.registered("agent-net", 1.0).await;
    assert!(
        !ip(&["link", "show", "dev", &leftover]),
        "the leftover veth {leftover} survived the agent's start"
    );

    // A listener on the host, on every address (the bridge's included).
    let listener = std::net::TcpListener::bind("0.0.0.0:0").expect("listener");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for c in listener.incoming() {
            drop(c);
        }
    });

    // Control: on the host network the listener is reachable.
    s.run_task("fw", connect_task("on-host", &["127.0.0.1", gateway], port))
        .await;
    s.expect("on-host", TaskState::TaskStarting).await;
    s.expect("on-host", TaskState::TaskRunning).await;
    let done = s.expect("on-host", TaskState::TaskFinished).await;
    assert_eq!(done.exit_code, Some(0), "{done:?}");

    // none: only its own loopback.
    for (id, addr) in [("none-lo", "127.0.0.1"), ("none-gw", gateway)] {
        s.run_task("fw", with_network(connect_task(id, &[addr], port), "none"))
            .await;
        s.expect(id, TaskState::TaskStarting).await;
        s.expect(id, TaskState::TaskRunning).await;
        let done = s.expect(id, TaskState::TaskFailed).await;
        assert_eq!(done.exit_code, Some(1), "{id} reached the host: {done:?}");
        let out = std::fs::read_to_string(work.path().join(format!("sandboxes/fw/{id}/stdout")))
            .expect("stdout");
        assert!(out.contains("unreachable"), "{id}: {out}");
    }

    // bridge: its port answers on the host's loopback.
    let server = shell_task(
        "bridged",
        "exec python3 -c \"import os,socket\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\ns.bind(('0.0.0.0', int(os.environ['PORT0']))); s.listen(8)\nwhile True:\n  c,a=s.accept(); c.sendall(b'hello from the bridge\\n'); c.close()\"",
        "cpus:0.1;mem:64;ports:[31005-31005]",
    );
    s.run_task("fw", with_network(server, "bridge")).await;
    s.expect("bridged", TaskState::TaskStarting).await;
    s.expect("bridged", TaskState::TaskRunning).await;
    let st = state(http).await;
    let container = st["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["id"] == "bridged")
        .and_then(|t| t["container_id"].as_str())
        .expect("container id")
        .to_string();
    let veth = brim_agent::network::veth_name(&container);
    assert!(ip(&["link", "show", "dev", &veth]), "no veth {veth}");
    let mut answer = String::new();
    for _ in 0..50 {
        if let Ok(mut c) = std::net::TcpStream::connect("127.0.0.1:31005") {
            let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = c.write_all(b"hi\n");
            let _ = c.read_to_string(&mut answer);
            if !answer.is_empty() {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(answer, "hello from the bridge\n");

    s.kill("fw", "bridged", Some(0.5)).await;
    let killed = s.update().await;
    let killed = if killed.state() == TaskState::TaskKilling {
        s.ack(&killed).await;
        s.update().await
    } else {
        killed
    };
    assert_eq!(killed.state(), TaskState::TaskKilled, "{killed:?}");
    s.ack(&killed).await;
    assert!(
        !ip(&["link", "show", "dev", &veth]),
        "veth {veth} outlived its task"
    );
    assert!(
        std::net::TcpStream::connect("127.0.0.1:31005").is_err(),
        "the port is still forwarded after the task ended"
    );

    // A command health check runs inside the task: its mount namespace hides the agent's
    // work dir (which the host sees), its network is the task's.
    let mut checked = with_network(shell_task("checked", "sleep 30", "cpus:0.1;mem:32"), "none");
    checked.health_check = Some(HealthCheck {
        kind: HealthCheckKind::Command as i32,
        command: format!(
            "test ! -e {}/meta && test -e stdout && test \"$(ip -o link | wc -l)\" = 1",
            work.path().display()
        ),
        interval_seconds: 0.2,
        ..Default::default()
    });
    s.run_task("fw", checked).await;
    s.expect("checked", TaskState::TaskStarting).await;
    s.expect("checked", TaskState::TaskRunning).await;
    let health = s.expect("checked", TaskState::TaskRunning).await;
    assert_eq!(health.healthy, Some(true), "{health:?}");
    s.kill("fw", "checked", Some(0.5)).await;
    loop {
        let u = s.update().await;
        s.ack(&u).await;
        if u.task_id == "checked" && u.state() == TaskState::TaskKilled {
            break;
        }
    }

    // A bad network is refused with a clear message.
    s.run_task(
        "fw",
        with_network(shell_task("bad", "true", "cpus:0.1;mem:16"), "overlay"),
    )
    .await;
    let bad = s.expect("bad", TaskState::TaskError).await;
    assert!(bad.message.contains("none, host or bridge"), "{bad:?}");

    let _ = stop.send(());
    let _ = join.await;
}
