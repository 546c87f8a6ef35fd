//! Tasks in real cgroups on this machine (hybrid or pure v2). Needs root and a cgroupfs:
//! without them each test prints why and skips, unless BRIM_TEST_REQUIRE_ALL=1, where it
//! fails instead.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use brim_agent::Isolation;
use brim_proto::v1::TaskState;
use common::*;

/// Why real-cgroup tests cannot run here, if they cannot.
fn unavailable() -> Option<String> {
    // /proc/self/status carries the effective uid (third field of `Uid:`).
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2))
        .unwrap_or("");
    if euid != "0" {
        return Some(format!("not root (euid {euid})"));
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    if let Err(e) = brim_agent::cgroups::detect_layout(&mountinfo) {
        return Some(e.to_string());
    }
    None
}

fn can_run(test: &str) -> bool {
    common::run_or_skip(test, unavailable())
}

fn hybrid() -> bool {
    Path::new("/sys/fs/cgroup/memory/cgroup.procs").exists()
}

/// Every directory a container of `root` would have on this machine.
fn cgroup_dirs(root: &str, container: &str) -> Vec<PathBuf> {
    if hybrid() {
        ["cpu", "cpuacct", "memory", "pids", "unified"]
            .iter()
            .map(|c| {
                Path::new("/sys/fs/cgroup")
                    .join(c)
                    .join(root)
                    .join(container)
            })
            .collect()
    } else {
        vec![Path::new("/sys/fs/cgroup").join(root).join(container)]
    }
}

const SCRIPT: &str = r#"cat /proc/self/cgroup
if [ -f /sys/fs/cgroup/memory/cgroup.procs ]; then
  m=$(grep ':memory:' /proc/self/cgroup | cut -d: -f3)
  c=$(grep ':cpu:' /proc/self/cgroup | cut -d: -f3)
  echo "limit=$(cat /sys/fs/cgroup/memory$m/memory.limit_in_bytes)"
  echo "shares=$(cat /sys/fs/cgroup/cpu$c/cpu.shares)"
  echo "memsw=$(cat /sys/fs/cgroup/memory$m/memory.memsw.limit_in_bytes 2>/dev/null)"
else
  p=$(grep '^0::' /proc/self/cgroup | cut -d: -f3)
  echo "limit=$(cat /sys/fs/cgroup$p/memory.max)"
  echo "weight=$(cat /sys/fs/cgroup$p/cpu.weight)"
fi
echo hi; exit 3"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_runs_inside_its_cgroup_with_limits() {
    if !can_run("task_runs_inside_its_cgroup_with_limits") {
        return;
    }
    let root = unique("brim-test");
    let work = tempfile::tempdir().expect("tempdir");
    let mut master = FakeMaster::start().await;
    let (http, stop, join) =
        start_agent(config(master.addr, work.path(), Isolation::Cgroups, &root)).await;
    let (mut s, _) = master.accept().await;
    s.registered("agent-cg", 1.0).await;
    assert_eq!(
        state(http).await["isolation"],
        if hybrid() { "hybrid" } else { "v2" }
    );

    s.run_task("fw", shell_task("cg1", SCRIPT, "cpus:0.5;mem:32"))
        .await;
    s.expect("cg1", TaskState::TaskStarting).await;
    s.expect("cg1", TaskState::TaskRunning).await;
    // The task stays listed until its terminal update is acknowledged.
    let container = state(http).await["tasks"][0]["container_id"]
        .as_str()
        .expect("container id in /state")
        .to_string();
    let done = s.expect("cg1", TaskState::TaskFailed).await;
    assert_eq!(done.exit_code, Some(3), "{done:?}");

    let out = std::fs::read_to_string(work.path().join("sandboxes/fw/cg1/stdout")).expect("stdout");
    assert!(out.ends_with("hi\n"), "{out}");
    let member = format!("/{root}/{container}");
    if hybrid() {
        for c in ["cpu", "cpuacct", "memory", "pids"] {
            assert!(
                out.lines().any(|l| l
                    .split(':')
                    .nth(1)
                    .is_some_and(|cs| cs.split(',').any(|x| x == c))
                    && l.ends_with(&member)),
                "not in the {c} cgroup {member}:\n{out}"
            );
        }
        assert!(
            out.contains(&format!("0::{member}")),
            "not in the v2 cgroup {member}:\n{out}"
        );
        assert!(
            out.contains("limit=33554432"),
            "memory.limit_in_bytes not set:\n{out}"
        );
        assert!(out.contains("shares=512"), "cpu.shares not set:\n{out}");
        if Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists() {
            assert!(
                out.contains("memsw=33554432"),
                "memory.memsw.limit_in_bytes not set:\n{out}"
            );
        }
    } else {
        assert!(
            out.contains(&format!("0::{member}")),
            "not in the cgroup {member}:\n{out}"
        );
        assert!(out.contains("limit=33554432"), "memory.max not set:\n{out}");
        assert!(out.contains("weight=50"), "cpu.weight not set:\n{out}");
    }
    // The cgroups go right after the terminal update (which does not wait for the rmdirs).
    let deadline = Instant::now() + WAIT;
    for d in cgroup_dirs(&root, &container) {
        while d.exists() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!d.exists(), "cgroup {} left behind", d.display());
    }

    stop.send(()).expect("stop");
    tokio::time::timeout(WAIT, join)
        .await
        .expect("stop in time")
        .expect("join")
        .expect("run");
    for d in cgroup_dirs(&root, "") {
        assert!(!d.exists(), "agent root cgroup {} left behind", d.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_escalates_and_cleans_up() {
    if !can_run("kill_escalates_and_cleans_up") {
        return;
    }
    let root = unique("brim-test");
    let work = tempfile::tempdir().expect("tempdir");
    let mut master = FakeMaster::start().await;
    let (http, stop, join) =
        start_agent(config(master.addr, work.path(), Isolation::Cgroups, &root)).await;
    let (mut s, _) = master.accept().await;
    s.registered("agent-kill", 1.0).await;

    // Plain sleep (with a background child): SIGTERM ends it at once.
    s.run_task(
        "fw",
        shell_task("k1", "sleep 60 & sleep 60", "cpus:0.1;mem:32"),
    )
    .await;
    s.expect("k1", TaskState::TaskStarting).await;
    s.expect("k1", TaskState::TaskRunning).await;
    let container = state(http).await["tasks"][0]["container_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    // Give sh time to fork the background sleep, and the agent time to sample usage.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let metrics = reqwest::get(format!("http://{http}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics body");
    assert!(
        metrics.contains("brim_agent_cgroups_enabled 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"brim_agent_container_memory_bytes{framework_id="fw",task_id="k1",task_name="k1",role="",executor_id="k1"}"#
        ),
        "{metrics}"
    );
    let t0 = Instant::now();
    s.kill("fw", "k1", Some(10.0)).await;
    let k = s.expect("k1", TaskState::TaskKilled).await;
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "SIGTERM kill took {:?}",
        t0.elapsed()
    );
    assert_eq!(k.exit_code, Some(143));
    let deadline = Instant::now() + WAIT;
    for d in cgroup_dirs(&root, &container) {
        while d.exists() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            !d.exists(),
            "cgroup {} left behind (background child survived?)",
            d.display()
        );
    }

    // A task ignoring SIGTERM: SIGKILL after the grace period.
    s.run_task(
        "fw",
        shell_task(
            "k2",
            "trap '' TERM; while true; do sleep 0.1; done",
            "cpus:0.1;mem:32",
        ),
    )
    .await;
    s.expect("k2", TaskState::TaskStarting).await;
    s.expect("k2", TaskState::TaskRunning).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t0 = Instant::now();
    s.kill("fw", "k2", Some(1.0)).await;
    let k = s.expect("k2", TaskState::TaskKilled).await;
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(6),
        "kill took {took:?}"
    );
    assert_eq!(k.exit_code, Some(137));

    // Agent shutdown kills what still runs and removes all cgroups.
    s.run_task("fw", shell_task("k3", "sleep 60", "cpus:0.1;mem:32"))
        .await;
    s.expect("k3", TaskState::TaskStarting).await;
    s.expect("k3", TaskState::TaskRunning).await;
    stop.send(()).expect("stop");
    tokio::time::timeout(WAIT, join)
        .await
        .expect("stop in time")
        .expect("join")
        .expect("run");
    for d in cgroup_dirs(&root, "") {
        assert!(!d.exists(), "agent root cgroup {} left behind", d.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_limit_breach_is_reported() {
    if !can_run("memory_limit_breach_is_reported") {
        return;
    }
    let root = unique("brim-test");
    let work = tempfile::tempdir().expect("tempdir");
    let mut master = FakeMaster::start().await;
    let (_http, stop, join) =
        start_agent(config(master.addr, work.path(), Isolation::Cgroups, &root)).await;
    let (mut s, _) = master.accept().await;
    s.registered("agent-oom", 1.0).await;
    // Grows a shell variable past 16 MiB.
    let hog = "x=xxxxxxxxxxxxxxxx; while true; do x=$x$x; done";
    s.run_task("fw", shell_task("oom", hog, "cpus:0.1;mem:16"))
        .await;
    s.expect("oom", TaskState::TaskStarting).await;
    s.expect("oom", TaskState::TaskRunning).await;
    let f = s.expect("oom", TaskState::TaskFailed).await;
    assert_eq!(f.exit_code, Some(137), "{f:?}");
    assert_eq!(
        f.reason(),
        brim_proto::v1::TaskStatusReason::ReasonContainerLimitationMemory,
        "{f:?}"
    );
    stop.send(()).expect("stop");
    tokio::time::timeout(WAIT, join)
        .await
        .expect("stop in time")
        .expect("join")
        .expect("run");
}
