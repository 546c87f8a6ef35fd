//! The agent against a fake master: registration, run_task updates in order and resent
//! until acknowledged, validation errors, kill, TASK_LOST, reconnection with re-registration,
//! and the HTTP API. Runs without cgroups (Isolation::None), so it needs no root.

mod common;

use std::time::{Duration, Instant};

use brim_agent::Isolation;
use brim_proto::v1::{CommandInfo, TaskState, TaskStatusReason};
use brim_proto::Resources;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_runs_tasks_and_retries_updates() {
    let work = tempfile::tempdir().expect("tempdir");
    let mut master = FakeMaster::start().await;
    let cfg = config(master.addr, work.path(), Isolation::None, "unused");
    let (http, stop, join) = start_agent(cfg).await;

    // Registration: fresh agent, no id, its resources and attributes.
    let (mut s, reg) = master.accept().await;
    let info = reg.agent_info.expect("agent_info");
    assert_eq!(info.id, "");
    assert_eq!(info.http_address, format!("127.0.0.1:{}", http.port()));
    let total = Resources::from_proto(&info.resources).expect("resources");
    assert_eq!(total.scalar("cpus"), 2.0);
    assert_eq!(total.scalar("mem"), 1024.0);
    assert_eq!(info.attributes[0].name, "rack");
    assert!(reg.tasks.is_empty());
    s.registered("agent-1", 0.2).await;

    // A task: STARTING, RUNNING right behind it without waiting for its ack, both resent
    // (oldest first) until acked, FINISHED only after that.
    s.run_task(
        "fw1",
        shell_task(
            "t1",
            "echo hello $PORT0 $BRIM_TASK_ID; echo oops >&2",
            "cpus:0.5;mem:32;ports:[31000-31000]",
        ),
    )
    .await;
    let starting = s.update().await;
    assert_eq!(starting.state(), TaskState::TaskStarting);
    assert_eq!(starting.uuid.len(), 16);
    assert_eq!(starting.agent_id, "agent-1");
    assert_eq!(starting.framework_id, "fw1");
    let running = s.update().await;
    assert_eq!(running.state(), TaskState::TaskRunning);
    assert_ne!(running.uuid, starting.uuid);
    let t0 = Instant::now();
    let again = s.update().await;
    assert_eq!(
        again.uuid, starting.uuid,
        "the unacked updates must be resent oldest first, not the next one"
    );
    assert!(
        t0.elapsed() >= Duration::from_millis(200),
        "resent too early: {:?}",
        t0.elapsed()
    );
    assert_eq!(s.update().await.uuid, running.uuid);
    // The ack of RUNNING acknowledges STARTING too.
    s.ack(&running).await;
    let fin = s.expect("t1", TaskState::TaskFinished).await;
    assert_eq!(fin.exit_code, Some(0));
    assert!(
        s.heartbeats > 0,
        "no heartbeat at the master's 0.2 s interval"
    );
    assert_eq!(
        std::fs::read_to_string(work.path().join("agent_id")).expect("agent_id persisted"),
        "agent-1"
    );

    // Sandbox over HTTP.
    let base = format!("http://{http}");
    let r = reqwest::get(format!("{base}/sandbox/fw1/t1/stdout"))
        .await
        .expect("get");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-brim-task-state"], "TASK_FINISHED");
    assert_eq!(r.text().await.expect("body"), "hello 31000 t1\n");
    let r = reqwest::get(format!("{base}/sandbox/fw1/t1/stdout?offset=6"))
        .await
        .expect("get");
    assert_eq!(r.text().await.expect("body"), "31000 t1\n");
    let r = reqwest::get(format!("{base}/sandbox/fw1/t1/stdout?offset=999"))
        .await
        .expect("get");
    assert_eq!(r.text().await.expect("body"), "");
    let r = reqwest::get(format!("{base}/sandbox/fw1/t1/stderr"))
        .await
        .expect("get");
    assert_eq!(r.text().await.expect("body"), "oops\n");
    for (path, code) in [
        ("/health", 200),
        ("/sandbox/fw1/nope/stdout", 404),
        ("/sandbox/fw1/t1/environ", 400),
        ("/sandbox/fw1/t1/stdout?offset=-1", 400),
        ("/sandbox/fw1/..%2F..%2Fetc/stdout", 400),
        ("/sandbox/fw1/a%2Fb/stdout", 400),
        ("/sandbox//t1/stdout", 400),
        ("/metrics", 200),
        ("/nothing", 404),
    ] {
        let r = reqwest::get(format!("{base}{path}")).await.expect("get");
        assert_eq!(r.status().as_u16(), code, "{path}");
    }

    // Paths the client would normalize away, sent raw.
    for path in [
        "/sandbox/../t1/stdout",
        "/sandbox/fw1/../stdout",
        "/sandbox/%2E%2E/t1/stdout",
    ] {
        assert_eq!(raw_get_status(http, path).await, 400, "{path}");
    }

    // Completed tasks are forgotten once acknowledged but listed in /state.
    let st = state(http).await;
    assert_eq!(st["agent_id"], "agent-1");
    assert_eq!(st["isolation"], "none");
    assert_eq!(st["tasks"].as_array().map(Vec::len), Some(0), "{st}");
    assert_eq!(st["completed_tasks"][0]["id"], "t1");
    assert_eq!(st["completed_tasks"][0]["state"], "TASK_FINISHED");

    // Nonzero exit.
    s.run_task("fw1", shell_task("t2", "exit 3", "cpus:0.1;mem:16"))
        .await;
    s.expect("t2", TaskState::TaskStarting).await;
    s.expect("t2", TaskState::TaskRunning).await;
    let failed = s.expect("t2", TaskState::TaskFailed).await;
    assert_eq!(failed.exit_code, Some(3));
    assert!(failed.message.contains("status 3"), "{}", failed.message);

    // Launch failure: missing binary.
    let mut missing = shell_task("t3", "", "cpus:0.1;mem:16");
    missing.command = Some(CommandInfo {
        shell: false,
        value: "/nonexistent/brim-binary".into(),
        ..Default::default()
    });
    s.run_task("fw1", missing).await;
    s.expect("t3", TaskState::TaskStarting).await;
    let f = s.expect("t3", TaskState::TaskFailed).await;
    assert_eq!(f.reason(), TaskStatusReason::ReasonContainerLaunchFailed);
    assert!(
        f.message.contains("/nonexistent/brim-binary"),
        "{}",
        f.message
    );

    // Validation errors: TASK_ERROR with a clear message.
    s.run_task("fw1", shell_task("bad/id", "true", "cpus:0.1"))
        .await;
    let e = s.expect("bad/id", TaskState::TaskError).await;
    assert!(e.message.contains("contains `/`"), "{}", e.message);
    s.run_task("fw1", shell_task("big", "true", "cpus:64;mem:16"))
        .await;
    let e = s.expect("big", TaskState::TaskError).await;
    assert!(e.message.contains("free"), "{}", e.message);
    s.run_task(
        "fw1",
        shell_task("noport", "true", "cpus:0.1;ports:[80-80]"),
    )
    .await;
    s.expect("noport", TaskState::TaskError).await;

    // Kill of an unknown task: TASK_LOST.
    s.kill("fw1", "ghost", None).await;
    let lost = s.expect("ghost", TaskState::TaskLost).await;
    assert_eq!(lost.reason(), TaskStatusReason::ReasonTaskUnknown);

    // A long task; the master goes away with RUNNING unacknowledged.
    s.run_task("fw1", shell_task("long", "sleep 60", "cpus:1;mem:64"))
        .await;
    s.expect("long", TaskState::TaskStarting).await;
    let running = s.update().await;
    assert_eq!(running.state(), TaskState::TaskRunning);
    // Resources are held: another 1.5 cpus do not fit any more (2 total, 1 used).
    s.run_task("fw1", shell_task("nofit", "true", "cpus:1.5"))
        .await;
    s.expect("nofit", TaskState::TaskError).await;
    // A refused task whose TASK_ERROR is still unacknowledged when the master goes away:
    // not reported as a task on re-registration (the master would reject its id).
    s.run_task("fw1", shell_task("bad id", "true", "cpus:0.1"))
        .await;
    let refused = s.update().await;
    assert_eq!(refused.state(), TaskState::TaskError);
    drop(s);

    // Re-registration with the persisted id and the live task; RUNNING resent at once.
    let (mut s, reg) = master.accept().await;
    assert_eq!(reg.agent_info.expect("info").id, "agent-1");
    assert_eq!(reg.tasks.len(), 1, "{:?}", reg.tasks);
    assert_eq!(reg.tasks[0].state(), TaskState::TaskRunning);
    assert_eq!(reg.tasks[0].framework_id, "fw1");
    assert_eq!(reg.frameworks.len(), 1, "{:?}", reg.frameworks);
    assert_eq!(reg.frameworks[0].id, "fw1");
    s.registered("agent-1", 1.0).await;
    // Both in-flight updates are resent at once (order across tasks is not defined).
    let mut resent = vec![s.update().await, s.update().await];
    resent.sort_by_key(|u| u.task_id.clone());
    assert_eq!(resent[0].uuid, refused.uuid);
    assert_eq!(resent[1].uuid, running.uuid);
    for u in &resent {
        s.ack(u).await;
    }

    // Kill: SIGTERM ends `sleep` well within the grace period.
    let t0 = Instant::now();
    s.kill("fw1", "long", Some(5.0)).await;
    let killed = s.expect("long", TaskState::TaskKilled).await;
    assert!(
        t0.elapsed() < Duration::from_secs(4),
        "kill took {:?}",
        t0.elapsed()
    );
    assert_eq!(killed.exit_code, Some(128 + 15));

    // shutdown_framework kills everything of that framework.
    s.run_task("fw2", shell_task("a", "sleep 60", "cpus:0.1"))
        .await;
    s.expect("a", TaskState::TaskStarting).await;
    s.expect("a", TaskState::TaskRunning).await;
    s.send(brim_proto::v1::master_message::Message::ShutdownFramework(
        brim_proto::v1::master_message::ShutdownFramework {
            framework_id: "fw2".into(),
        },
    ))
    .await;
    s.expect("a", TaskState::TaskKilled).await;

    // Clean shutdown kills running tasks.
    s.run_task("fw1", shell_task("last", "sleep 60", "cpus:0.1"))
        .await;
    s.expect("last", TaskState::TaskStarting).await;
    s.expect("last", TaskState::TaskRunning).await;
    let pid = state(http).await["tasks"][0]["pid"].as_i64().expect("pid");
    stop.send(()).expect("stop");
    tokio::time::timeout(WAIT, join)
        .await
        .expect("agent did not stop in time")
        .expect("join")
        .expect("agent run");
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "task process {pid} survived the agent's shutdown"
    );
}

/// Status code of a GET sent byte for byte (no client-side path normalization).
async fn raw_get_status(addr: std::net::SocketAddr, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut c = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    c.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    c.read_to_end(&mut buf).await.expect("read");
    let text = String::from_utf8_lossy(&buf);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad response: {text}"))
}
