//! Unmodified pymesos (from PyPI) drives a real brim master and agent through the Mesos v1
//! scheduler and executor HTTP APIs: command tasks launched, two tasks run by a custom pymesos
//! executor, updates acknowledged, offers declined with filters, a task killed, a
//! reconciliation, and a teardown. The scheduler is `tests/mesos/pymesos_scheduler.py` (its
//! executor `tests/mesos/pymesos_executor.py`); it prints `STEP …` lines that this test checks.

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use support::{state, Cluster};

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/mesos/pymesos_scheduler.py"
);

const AVMESOS_SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/mesos/avmesos_scheduler.py"
);

/// A python3 that can `import pymesos`: `$BRIM_PYTHON`, then the system python (where
/// `.ci/run` installs it), then whatever `python3` is on PATH.
fn python_with_pymesos() -> Option<PathBuf> {
    support::python_with("import pymesos, http_parser")
}

/// Skips (printing why) unless BRIM_TEST_REQUIRE_ALL=1, where it fails instead.
fn skip(why: &str) {
    if std::env::var("BRIM_TEST_REQUIRE_ALL").as_deref() == Ok("1") {
        panic!("{why}, and BRIM_TEST_REQUIRE_ALL=1 forbids skipping");
    }
    eprintln!("{why}");
}

#[test]
fn pymesos_scheduler_launches_acks_declines_kills_and_tears_down() {
    if !support::can_run_cluster("mesos_pymesos") {
        return;
    }
    let Some(py) = python_with_pymesos() else {
        skip("mesos_pymesos: skipped: no python3 with pymesos (pip install pymesos; see .ci/run)");
        return;
    };
    let mut c = Cluster::new();
    c.start_agent(0, "cpus:1;mem:512;ports:[31000-31009]");
    c.wait_agents_active(1);

    let (ok, out, err) =
        support::run_python(&py, SCRIPT, &[&c.master_addr], Duration::from_secs(150));
    let expect = [
        "STEP registered",
        "STEP offer",
        "STEP launched 4 tasks",
        // Two tasks run by one unmodified pymesos custom executor (tests/mesos/
        // pymesos_executor.py) over the agent's /api/v1/executor; their updates come from
        // the executor, carry a uuid and are acknowledged back to it.
        "STEP update custom TASK_RUNNING - SOURCE_EXECUTOR uuid",
        "STEP update custom TASK_FINISHED - SOURCE_EXECUTOR uuid finished by the pymesos executor",
        "STEP update custom2 TASK_RUNNING - SOURCE_EXECUTOR uuid",
        "STEP update custom2 TASK_FINISHED - SOURCE_EXECUTOR uuid finished by the pymesos executor",
        // MESSAGE both ways: scheduler -> master -> agent -> executor (MESSAGE event), and the
        // executor's MESSAGE call -> agent -> master -> scheduler (MESSAGE event, base64 data).
        "STEP message sent to executor e1",
        "STEP message from executor e1 pong:ping",
        "STEP update echo TASK_FINISHED",
        "STEP kill sent sleeper",
        "STEP update sleeper TASK_KILLED",
        "STEP declined",
        "STEP reconcile sent",
        "REASON_RECONCILIATION",
        "STEP torn down",
    ];
    let missing: Vec<&str> = expect
        .iter()
        .copied()
        .filter(|e| !out.contains(e))
        .collect();
    if !ok || !missing.is_empty() {
        panic!("pymesos scheduler failed (missing {missing:?})\n--- stdout ---\n{out}\n--- stderr ---\n{err}");
    }
    // Updates from the agent carry a uuid and were acknowledged (none left unacked).
    assert!(
        out.contains("TASK_FINISHED - SOURCE_") || out.contains("TASK_FINISHED REASON_"),
        "{out}"
    );
    assert!(
        !out.contains("STEP FAIL"),
        "pymesos scheduler reported a failure:\n{out}"
    );

    // TEARDOWN removed the framework and its tasks: nothing leaked on the master.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = state(&c.master_addr);
        // (The master hosts brim's own frameworks too; only the pymesos one must be gone.)
        let gone = s["frameworks"]
            .as_array()
            .is_some_and(|f| f.iter().all(|f| f["name"] != "pymesos-probe"));
        let no_tasks = s["tasks"].as_array().is_some_and(|t| {
            t.iter().all(|t| {
                !["echo", "sleeper", "custom", "custom2"]
                    .contains(&t["id"].as_str().unwrap_or_default())
            })
        });
        if gone && no_tasks {
            break;
        }
        if Instant::now() > deadline {
            panic!("framework or tasks left after TEARDOWN: {s:#}\n--- stdout ---\n{out}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    c.cleanup_cgroups();
}

const LAUNCH_GROUP_SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/mesos/pymesos_launch_group.py"
);

/// LAUNCH_GROUP from unmodified pymesos (raw operation dicts through `acceptOffers`): an
/// invalid group is refused whole (TASK_ERROR for each task), a valid one under the DEFAULT
/// executor runs two tasks sharing `$MESOS_SANDBOX/shared`, their updates carry the group's
/// `executor_id`, `/master/state` lists them, and killing one kills both.
#[test]
fn pymesos_launches_a_task_group() {
    if !support::can_run_cluster("mesos_pymesos_launch_group") {
        return;
    }
    let Some(py) = python_with_pymesos() else {
        skip("mesos_pymesos_launch_group: skipped: no python3 with pymesos (pip install pymesos; see .ci/run)");
        return;
    };
    let mut c = Cluster::new();
    c.start_agent(0, "cpus:1;mem:512");
    c.wait_agents_active(1);
    let (ok, out, err) = support::run_python(
        &py,
        LAUNCH_GROUP_SCRIPT,
        &[&c.master_addr],
        Duration::from_secs(90),
    );
    let expect = [
        "STEP launched groups",
        "STEP update bad1 TASK_ERROR executor=- 'ExecutorInfo.command' must not be set for 'DEFAULT' executor",
        "STEP update bad2 TASK_ERROR",
        "STEP update writer TASK_RUNNING executor=pod",
        "STEP update reader TASK_RUNNING executor=pod",
        "STEP state tasks reader,writer",
        "STEP update reader TASK_KILLED executor=pod",
        "STEP update writer TASK_KILLED executor=pod killed with its task group: task reader ended TASK_KILLED",
        "STEP torn down",
    ];
    let missing: Vec<&str> = expect
        .iter()
        .copied()
        .filter(|e| !out.contains(e))
        .collect();
    if !ok || !missing.is_empty() {
        panic!("pymesos LAUNCH_GROUP failed (missing {missing:?})\n--- stdout ---\n{out}\n--- stderr ---\n{err}");
    }
    c.cleanup_cgroups();
}

/// A second client library: avmesos (PyPI), with its own RecordIO parsing and requests-based
/// calls, subscribes, launches a command task, acknowledges its updates and tears down.
#[test]
fn avmesos_scheduler_launches_and_tears_down() {
    if !support::can_run_cluster("mesos_avmesos") {
        return;
    }
    let Some(py) = support::python_with("import avmesos.client") else {
        skip("mesos_avmesos: skipped: no python3 with avmesos (pip install avmesos; see .ci/run)");
        return;
    };
    let mut c = Cluster::new();
    c.start_agent(0, "cpus:1;mem:512;ports:[31000-31009]");
    c.wait_agents_active(1);
    let (ok, out, err) = support::run_python(
        &py,
        AVMESOS_SCRIPT,
        &[&c.master_addr],
        Duration::from_secs(90),
    );
    let expect = [
        "STEP subscribed",
        "STEP launched av-echo",
        "STEP update av-echo TASK_RUNNING SOURCE_AGENT uuid",
        "STEP update av-echo TASK_FINISHED SOURCE_AGENT uuid",
        "STEP teardown sent",
        "STEP done",
    ];
    let missing: Vec<&str> = expect
        .iter()
        .copied()
        .filter(|e| !out.contains(e))
        .collect();
    if !ok || !missing.is_empty() {
        panic!("avmesos scheduler failed (missing {missing:?})\n--- stdout ---\n{out}\n--- stderr ---\n{err}");
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = state(&c.master_addr);
        let gone = s["frameworks"]
            .as_array()
            .is_some_and(|f| f.iter().all(|f| f["name"] != "avmesos-probe"));
        if gone {
            break;
        }
        if Instant::now() > deadline {
            panic!("avmesos framework left after TEARDOWN: {s:#}\n--- stdout ---\n{out}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    c.cleanup_cgroups();
}
