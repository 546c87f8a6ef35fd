//! Agent crash recovery with the real `brim` binary: `kill -9` the agent while a task runs,
//! while a task exits, while the master is away (its final update cannot be acknowledged),
//! while a launch is half done (its URI still being fetched), then restart it and check that
//! no task was lost, none ran twice and every exit status and update arrived. Then a wiped
//! work dir and a corrupt checkpoint.

mod support;

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use brim_framework::v1::{TaskState, Uri};
use brim_framework::{Resources, TaskBuilder};
use support::probe::ProbeFramework;
use support::{http_get, state, wait_for, Cluster};

const RES: &str = "cpus:2;mem:1024;ports:[31000-31099]";

fn agent_id(c: &Cluster) -> String {
    let s = c.wait_agents_active(1);
    s["agents"][0]["id"].as_str().expect("agent id").to_string()
}

/// Waits until the master lists a task whose command marker is `name` in `state`.
fn wait_task_state(c: &Cluster, name: &str, want: &str) {
    let addr = c.master_addr.clone();
    wait_for(
        &format!("a task named {name} in {want}"),
        Duration::from_secs(30),
        || {
            let s = state(&addr);
            s["tasks"]
                .as_array()
                .into_iter()
                .flatten()
                .chain(s["completed_tasks"].as_array().into_iter().flatten())
                .any(|t| t["name"].as_str().is_some_and(|n| n.contains(name)) && t["state"] == want)
                .then_some(())
        },
    )
}

fn finish(mut child: Child, what: &str) -> (Option<i32>, String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what}: brim run did not finish in 60 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().expect("brim run output");
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn count_lines(path: &Path, line: &str) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| *l == line)
        .count()
}

/// Task processes (not the `brim run` clients) whose command line contains `pattern`.
fn pids_running(pattern: &str) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| {
            std::fs::read(e.path().join("cmdline"))
                .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
                .is_ok_and(|c| c.contains(pattern) && !c.contains(" run "))
        })
        .count()
}

#[test]
fn agent_crash_recovery_matrix() {
    if !support::can_run_cluster("agent_crash_recovery_matrix") {
        return;
    }
    let mut c = Cluster::new_with_master_flags(support::PATIENT_MASTER_FLAGS);
    c.start_agent(0, RES);
    scenario(&mut c);
}

fn scenario(c: &mut Cluster) {
    let id0 = agent_id(c);
    let marks = c.dir.path().join("marks");
    let m = marks.display().to_string();

    // 1. kill -9 while a task runs: it keeps running, the restarted agent re-attaches, the
    //    framework gets its output and exit code, and it ran exactly once.
    let run = c.brim_spawn(&[
        "run",
        "--name",
        "survivor",
        "--",
        &format!("echo survivor-start >> {m}; sleep 3; echo survivor-done; exit 0"),
    ]);
    wait_task_state(c, "survivor", "TASK_RUNNING");
    c.agents[0].kill9();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(count_lines(&marks, "survivor-start"), 1);
    assert!(
        pids_running("survivor-done") >= 1,
        "the task died with the agent"
    );
    c.start_agent(0, RES);
    assert_eq!(agent_id(c), id0, "a restarted agent keeps its id");
    let (code, out) = finish(run, "survivor");
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("survivor-done"), "{out}");
    assert_eq!(count_lines(&marks, "survivor-start"), 1, "ran twice");

    // 2. kill -9, and the task exits while the agent is down: its exit code still arrives.
    let run = c.brim_spawn(&[
        "run",
        "--name",
        "leaver",
        "--",
        &format!("echo leaver-start >> {m}; sleep 1; exit 7"),
    ]);
    wait_task_state(c, "leaver", "TASK_RUNNING");
    c.agents[0].kill9();
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(pids_running("leaver-start"), 0, "task should have ended");
    c.start_agent(0, RES);
    let (code, out) = finish(run, "leaver");
    assert_eq!(code, Some(7), "{out}");
    assert_eq!(count_lines(&marks, "leaver-start"), 1, "ran twice");
    assert_eq!(agent_id(c), id0);

    // 3. The final update cannot be acknowledged (master down) when the agent dies: the
    //    restarted agent still has it (checkpointed) and delivers it.
    let run = c.brim_spawn(&[
        "run",
        "--name",
        "unacked",
        "--",
        &format!("echo unacked-start >> {m}; sleep 2; exit 5"),
    ]);
    wait_task_state(c, "unacked", "TASK_RUNNING");
    if let Some(mut master) = c.master.take() {
        master.kill9();
    }
    // The task ends and its TASK_FAILED waits for an ack that cannot come.
    let agent_http = c.agent_addrs[0].clone();
    wait_for(
        "the agent to hold an unacknowledged terminal update",
        Duration::from_secs(20),
        || {
            let (_, body) = http_get(&agent_http, "/state")?;
            let s: serde_json::Value = serde_json::from_str(&body).ok()?;
            s["tasks"]
                .as_array()?
                .iter()
                .any(|t| {
                    t["state"] == "TASK_FAILED" && t["unacknowledged_updates"].as_u64() > Some(0)
                })
                .then_some(())
        },
    );
    c.agents[0].kill9();
    c.start_master_with_flags(support::PATIENT_MASTER_FLAGS);
    c.start_agent(0, RES);
    let (code, out) = finish(run, "unacked");
    assert_eq!(code, Some(5), "{out}");
    assert_eq!(count_lines(&marks, "unacked-start"), 1, "ran twice");
    assert_eq!(agent_id(c), id0);

    // 4. kill -9 while a launch is half done: the task's URI is being fetched (from a server
    //    that never answers) when the agent dies. The restarted agent reports it failed and
    //    never starts it: it runs zero times, not once late or twice.
    half_done_launch(c, &id0, &m);
    assert_eq!(
        count_lines(&marks, "half-start"),
        0,
        "a half-launched task ran"
    );
    assert_eq!(agent_id(c), id0);

    // 5. A corrupt checkpoint is reported, not fatal; a wiped work dir makes a new agent
    //    that kills what the old one left behind.
    let run = c.brim_spawn(&["run", "--name", "orphan", "--", "sleep 7777"]);
    wait_task_state(c, "orphan", "TASK_RUNNING");
    c.agents[0].kill9();
    let work = c.dir.path().join("agent0");
    let bogus = work.join("meta/tasks/fw-bogus/t.ckpt");
    std::fs::create_dir_all(bogus.parent().expect("parent")).expect("mkdir");
    std::fs::write(&bogus, b"brim-checkpoint 1 deadbeef 3\n{x}").expect("write");
    c.start_agent(0, RES);
    let agent_http = c.agent_addrs[0].clone();
    let s = wait_for("agent /state", Duration::from_secs(30), || {
        let (_, body) = http_get(&agent_http, "/state")?;
        serde_json::from_str::<serde_json::Value>(&body).ok()
    });
    let errors = s["recovery_errors"].to_string();
    assert!(errors.contains("checksum"), "recovery_errors: {errors}");
    assert_eq!(agent_id(c), id0);
    assert!(pids_running("sleep 7777") >= 1, "restart must kill nothing");
    c.agents[0].kill9();
    std::fs::remove_dir_all(&work).expect("wipe work dir");
    c.start_agent(0, RES);
    wait_for(
        "a new agent id after the wipe",
        Duration::from_secs(30),
        || {
            let s = state(&c.master_addr);
            s["agents"]
                .as_array()?
                .iter()
                .any(|a| a["active"] == true && a["id"] != id0.as_str())
                .then_some(())
        },
    );
    wait_for(
        "the old agent's task to be killed",
        Duration::from_secs(10),
        || (pids_running("sleep 7777") == 0).then_some(()),
    );
    let (code, out) = finish(run, "orphan");
    assert_ne!(code, Some(0), "{out}");
}

/// Row 4 of the matrix: the agent is killed while fetching a task's URI.
fn half_done_launch(c: &mut Cluster, agent: &str, marks: &str) {
    // Accepts connections and never answers, so the fetch hangs.
    let stall = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = stall.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in stall.incoming().flatten() {
            held.push(s);
        }
    });
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut fw = rt.block_on(async {
        let mut fw = ProbeFramework::start(&c.master_addr, "half-launch").await;
        let offer = fw.offer_on(agent).await;
        let task = TaskBuilder::new("half", "half")
            .shell(format!("echo half-start >> {marks}"))
            .resources(&Resources::parse("cpus:0.1;mem:32").expect("resources"))
            .uri(Uri {
                value: format!("http://127.0.0.1:{port}/slow.bin"),
                ..Default::default()
            })
            .build_for(&offer)
            .expect("task");
        fw.handle
            .launch(&offer.id, vec![task])
            .await
            .expect("launch");
        fw.wait_state("half", TaskState::TaskStarting).await;
        fw
    });
    // STARTING is sent before the fetch: let the fetch begin.
    std::thread::sleep(Duration::from_millis(300));
    c.agents[0].kill9();
    c.start_agent(0, RES);
    let failed = rt.block_on(fw.wait_state("half", TaskState::TaskFailed));
    assert!(
        failed.message.contains("never started"),
        "half-launched task: {}",
        failed.message
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(pids_running("half-start"), 0);
}
