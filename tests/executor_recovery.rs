//! Custom executors survive an agent restart (Mesos semantics): an unmodified pymesos
//! executor (`tests/mesos/pymesos_recovery_executor.py`, launched by the pymesos scheduler
//! `tests/mesos/pymesos_recovery_scheduler.py`) runs a task that never ends; the agent is
//! `kill -9`ed and restarted; the executor's driver reconnects and re-SUBSCRIBEs, the same
//! process keeps running a task handed to it — even though the task whose container runs the
//! executor was killed before the restart — the framework's KILLs reach it, and the
//! framework gets exactly one terminal update per task. A second executor is frozen (SIGSTOP) across the restart: it
//! never re-subscribes, so `--executor-reregistration-timeout` kills it and its task fails
//! with REASON_EXECUTOR_REREGISTRATION_TIMEOUT. HEARTBEAT events reach the executor.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::{wait_for, Cluster};

const SCHEDULER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/mesos/pymesos_recovery_scheduler.py"
);
const RES: &str = "cpus:1;mem:512;ports:[31000-31009]";

/// A scheduler process, killed if the test ends (or fails) before it exits.
struct Scheduler(Child);

impl Drop for Scheduler {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the scheduler in `mode`; its output goes to `<dir>/<mode>.out`.
fn scheduler(py: &Path, c: &Cluster, mode: &str) -> (Scheduler, PathBuf) {
    let out = c.dir.path().join(format!("{mode}.out"));
    let f = std::fs::File::create(&out).expect("scheduler output file");
    let child = Command::new(py)
        .args([SCHEDULER, &c.master_addr, mode])
        .arg(c.dir.path())
        .stdin(Stdio::null())
        .stdout(f.try_clone().expect("dup"))
        .stderr(f)
        .spawn()
        .expect("spawn the pymesos scheduler");
    (Scheduler(child), out)
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// The executor's pid as it sees it (its task's PID namespace), from its TASK_RUNNING
/// message ("running in executor pid N"), and its pid on the host.
fn wait_running_pid(out: &Path, task: &str, others: &[i32]) -> (i32, i32) {
    let ns_pid: i32 = wait_for(
        &format!("{task} TASK_RUNNING"),
        Duration::from_secs(60),
        || {
            read(out)
                .lines()
                .find(|l| l.starts_with(&format!("STEP update {task} TASK_RUNNING")))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|p| p.parse().ok())
        },
    );
    let host = host_pid(ns_pid, others).expect("the executor's process on the host");
    (ns_pid, host)
}

/// The host pid of the recovery executor whose innermost pid is `ns_pid` (each has its own
/// PID namespace, so several may have the same one: `others` are left out).
fn host_pid(ns_pid: i32, others: &[i32]) -> Option<i32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        if others.contains(&pid) {
            return None;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        if !String::from_utf8_lossy(&cmdline).contains("pymesos_recovery_executor.py") {
            return None;
        }
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let nspid = status.lines().find(|l| l.starts_with("NSpid:"))?;
        let inner: i32 = nspid.split_whitespace().last()?.parse().ok()?;
        (inner == ns_pid).then_some(pid)
    })
}

fn alive(pid: i32) -> bool {
    // /proc/<pid>/stat's state: a zombie is not alive.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, r)| !r.starts_with('Z')))
        .unwrap_or(false)
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) with a valid signal on a pid this test read from its own executor.
    unsafe {
        libc::kill(pid, sig);
    }
}

fn wait_exit(mut sched: Scheduler, what: &str) -> bool {
    wait_for(what, Duration::from_secs(90), || {
        sched.0.try_wait().ok().flatten().map(|s| s.success())
    })
}

#[test]
fn pymesos_executor_survives_agent_restart_or_times_out() {
    if !support::can_run_cluster("executor_recovery") {
        return;
    }
    let Some(py) = support::python_with("import pymesos, http_parser") else {
        let why = "executor_recovery: skipped: no python3 with pymesos (see .ci/run)";
        if std::env::var("BRIM_TEST_REQUIRE_ALL").as_deref() == Ok("1") {
            panic!("{why}, and BRIM_TEST_REQUIRE_ALL=1 forbids skipping");
        }
        eprintln!("{why}");
        return;
    };
    let mut c = Cluster::new_with_master_flags(support::PATIENT_MASTER_FLAGS);
    let fast_heartbeats = ["--executor-heartbeat-interval", "300ms"];
    c.start_agent_with_flags(0, RES, &fast_heartbeats);
    c.wait_agents_active(1);

    // 1. kill -9 the agent under a running executor; it re-subscribes to the new agent.
    let (sched, out) = scheduler(&py, &c, "kill");
    let (ns_pid, pid) = wait_running_pid(&out, "kill", &[]);
    let (ns_pid2, _) = wait_running_pid(&out, "kill2", &[]);
    assert_eq!(ns_pid2, ns_pid, "one executor runs both tasks");
    assert!(alive(pid));
    // The task whose container runs the executor ends first (killed, acknowledged): the
    // executor keeps running the other one, and must survive the restart all the same.
    std::fs::write(c.dir.path().join("kill-kill"), b"").expect("kill file");
    wait_for("kill TASK_KILLED", Duration::from_secs(30), || {
        read(&out)
            .contains("STEP update kill TASK_KILLED")
            .then_some(())
    });
    std::thread::sleep(Duration::from_secs(1)); // its acknowledgement reaches the agent
    c.agents[0].kill9();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(alive(pid), "the executor died with the agent");
    c.start_agent_with_flags(0, RES, &fast_heartbeats);
    let agent = c.agents[0].log.clone();
    wait_for(
        "the executor to re-subscribe to the restarted agent",
        Duration::from_secs(40),
        || read(&agent).contains("executor subscribed").then_some(()),
    );
    assert!(
        read(&agent).contains("recovered a custom executor"),
        "{}",
        read(&agent)
    );
    assert!(alive(pid), "same executor process after the restart");
    std::fs::write(c.dir.path().join("kill-kill2"), b"").expect("kill file");
    let ok = wait_exit(sched, "the kill scheduler");
    let text = read(&out);
    assert!(ok, "{text}");
    // One terminal update per task, from the executor; the second task was handed to the
    // running executor (no container of its own): the restarted agent still reports it to
    // the master, and the same executor process — which saw HEARTBEATs — is asked to kill it.
    for task in ["kill", "kill2"] {
        let terminal: Vec<&str> = text
            .lines()
            .filter(|l| {
                l.starts_with(&format!("STEP update {task} TASK_")) && !l.contains("TASK_RUNNING")
            })
            .collect();
        assert_eq!(terminal.len(), 1, "exactly one terminal update:\n{text}");
        let killed = terminal[0];
        assert!(killed.contains("TASK_KILLED"), "{killed}");
        assert!(killed.contains("SOURCE_EXECUTOR"), "{killed}");
        assert!(
            killed.contains(&format!("killed by the executor pid {ns_pid} after")),
            "KILL reached the same executor: {killed}"
        );
    }
    let killed2 = text
        .lines()
        .find(|l| l.starts_with("STEP update kill2 TASK_KILLED"))
        .unwrap_or_default();
    let heartbeats: u32 = killed2
        .split_whitespace()
        .rev()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(heartbeats >= 2, "HEARTBEAT events: {killed2}");

    // 2. An executor frozen across the restart never re-subscribes: it is killed after the
    //    re-registration timeout and its task fails saying so.
    let (sched, out) = scheduler(&py, &c, "stuck");
    let first = pid;
    let (_, pid) = wait_running_pid(&out, "stuck", &[first]);
    signal(pid, libc::SIGSTOP);
    c.agents[0].kill9();
    c.start_agent_with_flags(0, RES, &["--executor-reregistration-timeout", "2s"]);
    let ok = wait_exit(sched, "the stuck scheduler");
    let text = read(&out);
    assert!(ok, "{text}");
    let terminal: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("STEP update stuck TASK_") && !l.contains("TASK_RUNNING"))
        .collect();
    assert_eq!(terminal.len(), 1, "exactly one terminal update:\n{text}");
    assert!(
        terminal[0].contains("TASK_FAILED REASON_EXECUTOR_REREGISTRATION_TIMEOUT"),
        "{text}"
    );
    assert!(terminal[0].contains("did not re-subscribe"), "{text}");
    wait_for(
        "the stuck executor to be killed",
        Duration::from_secs(10),
        || (!alive(pid)).then_some(()),
    );
}
