//! A Mesos scheduler and a custom executor that speak only protobuf (`application/x-protobuf`
//! requests and RecordIO event streams), written with Google's Python `protobuf` package from
//! the Mesos protos' descriptors, run a task on a real brim master and agent:
//! `tests/mesos/protobuf_scheduler.py` (SUBSCRIBE, OFFERS, ACCEPT/LAUNCH, UPDATE, ACKNOWLEDGE,
//! TEARDOWN against `/api/v1/scheduler`) and `tests/mesos/protobuf_executor.py` (SUBSCRIBE,
//! LAUNCH, UPDATE, ACKNOWLEDGED against the agent's `/api/v1/executor`). A protobuf encoder
//! independent of brim's, so a transcoding mistake on either side shows up here.

mod support;

use std::time::Duration;

use support::Cluster;

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/mesos/protobuf_scheduler.py"
);

#[test]
fn protobuf_scheduler_and_executor_run_a_task() {
    if !support::can_run_cluster("mesos_protobuf") {
        return;
    }
    let Some(py) =
        support::python_with("from google.protobuf import descriptor_pool, message_factory")
    else {
        let why = "mesos_protobuf: skipped: no python3 with google.protobuf (apt-get install python3-protobuf; see .ci/run)";
        assert!(
            std::env::var("BRIM_TEST_REQUIRE_ALL").as_deref() != Ok("1"),
            "{why}, and BRIM_TEST_REQUIRE_ALL=1 forbids skipping"
        );
        eprintln!("{why}");
        return;
    };
    let mut c = Cluster::new();
    c.start_agent(0, "cpus:1;mem:512");
    c.wait_agents_active(1);
    let fds = c.dir.path().join("mesos_v1.fds");
    std::fs::write(&fds, brim_proto::mesos::descriptor_set()).expect("write descriptors");

    let fds_arg = fds.display().to_string();
    let (ok, out, err) = support::run_python(
        &py,
        SCRIPT,
        &[&c.master_addr, &fds_arg],
        Duration::from_secs(90),
    );
    let expect = [
        "STEP subscribed",
        &format!("master port {}", c.master_port),
        "STEP offer",
        "STEP accept 202",
        // Both updates come from the protobuf executor over the agent's executor API, carry
        // its 16-byte uuid, and are acknowledged in protobuf (202), back to the executor
        // (which exits only once both ACKNOWLEDGED events arrived).
        "STEP update pb-task TASK_RUNNING SOURCE_EXECUTOR uuid16 from the protobuf executor",
        "STEP ack TASK_RUNNING 202",
        "STEP update pb-task TASK_FINISHED SOURCE_EXECUTOR uuid16 from the protobuf executor",
        "STEP ack TASK_FINISHED 202",
        "STEP teardown 202",
    ];
    let missing: Vec<&str> = expect
        .iter()
        .copied()
        .filter(|e| !out.contains(e))
        .collect();
    if !ok || !missing.is_empty() {
        panic!("protobuf scheduler failed (missing {missing:?})\n--- stdout ---\n{out}\n--- stderr ---\n{err}");
    }
    eprintln!("{out}");
    c.cleanup_cgroups();
}
