//! Real isolation (root + cgroups): a task sees only its own PIDs and its own sandbox, runs
//! as its user, and a fork bomb stops at pids.max. Skips (or fails under
//! `BRIM_TEST_REQUIRE_ALL=1`) without root.

mod common;

use brim_agent::Isolation;
use brim_proto::v1::TaskState;
use common::{config, shell_task, start_agent, unique, FakeMaster, WAIT};

fn can_run(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let ready = root && std::path::Path::new("/sys/fs/cgroup").exists();
    common::run_or_skip(test, (!ready).then(|| "needs root and cgroups".to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_are_isolated_and_limited() {
    if !can_run("tasks_are_isolated_and_limited") {
        return;
    }
    let root = unique("brim-iso");
    let work = tempfile::tempdir().expect("tempdir");
    let mut master = FakeMaster::start().await;
    let mut cfg = config(master.addr, work.path(), Isolation::Cgroups, &root);
    cfg.task_pids_max = 16;
    let (_http, stop, join) = start_agent(cfg).await;
    let (mut s, _) = master.accept().await;
    s.registered("agent-iso", 1.0).await;

    // A neighbour whose sandbox file must stay invisible.
    s.run_task(
        "fw",
        shell_task("other", "echo secret > secret; sleep 30", "cpus:0.1;mem:32"),
    )
    .await;
    s.expect("other", TaskState::TaskStarting).await;
    s.expect("other", TaskState::TaskRunning).await;

    let mut probe = shell_task(
        "probe",
        "echo pid=$$; echo procs=$(ls /proc | grep -c '^[0-9]'); echo uid=$(id -u); \
         ls ../other/secret 2>/dev/null && echo SEEN || echo hidden",
        "cpus:0.1;mem:32",
    );
    if let Some(c) = probe.command.as_mut() {
        c.user = "nobody".into();
    }
    s.run_task("fw", probe).await;
    s.expect("probe", TaskState::TaskStarting).await;
    s.expect("probe", TaskState::TaskRunning).await;
    let done = s.expect("probe", TaskState::TaskFinished).await;
    assert_eq!(done.exit_code, Some(0), "{done:?}");
    let out =
        std::fs::read_to_string(work.path().join("sandboxes/fw/probe/stdout")).expect("stdout");
    assert!(
        out.contains("pid=2\n"),
        "not in its own PID namespace:\n{out}"
    );
    let procs: usize = out
        .lines()
        .find_map(|l| l.strip_prefix("procs="))
        .and_then(|n| n.parse().ok())
        .expect("procs line");
    assert!(procs <= 8, "sees host processes ({procs}):\n{out}");
    assert!(out.contains("uid=65534\n"), "not running as nobody:\n{out}");
    assert!(
        out.contains("hidden"),
        "sees another task's sandbox:\n{out}"
    );

    // Fork bomb: stops at pids.max.
    s.run_task(
        "fw",
        shell_task(
            "bomb",
            "n=0; for i in $(seq 40); do sleep 5 & n=$((n+1)); done 2>/dev/null; wait; echo spawned",
            "cpus:0.1;mem:64",
        ),
    )
    .await;
    s.expect("bomb", TaskState::TaskStarting).await;
    s.expect("bomb", TaskState::TaskRunning).await;
    let _ = s.update().await;
    let err =
        std::fs::read_to_string(work.path().join("sandboxes/fw/bomb/stderr")).unwrap_or_default();
    let out =
        std::fs::read_to_string(work.path().join("sandboxes/fw/bomb/stdout")).unwrap_or_default();
    assert!(
        err.to_lowercase().contains("fork")
            || err.contains("Resource temporarily unavailable")
            || !out.contains("spawned"),
        "pids.max did not bite: stdout {out:?} stderr {err:?}"
    );

    // Bad specs: unknown user, missing binary.
    let mut bad = shell_task("baduser", "true", "cpus:0.1;mem:32");
    if let Some(c) = bad.command.as_mut() {
        c.user = "brim-no-such-user".into();
    }
    s.run_task("fw", bad).await;
    s.expect("baduser", TaskState::TaskStarting).await;
    let f = s.expect("baduser", TaskState::TaskFailed).await;
    assert!(
        f.message.contains("unknown user `brim-no-such-user`"),
        "{f:?}"
    );
    let mut missing = shell_task("nobin", "", "cpus:0.1;mem:32");
    if let Some(c) = missing.command.as_mut() {
        c.shell = false;
        c.value = "brim-no-such-binary".into();
    }
    s.run_task("fw", missing).await;
    s.expect("nobin", TaskState::TaskStarting).await;
    let f = s.expect("nobin", TaskState::TaskFailed).await;
    assert!(f.message.contains("not found"), "{f:?}");

    stop.send(()).expect("stop");
    tokio::time::timeout(WAIT, join)
        .await
        .expect("stop in time")
        .expect("join")
        .expect("run");
}
