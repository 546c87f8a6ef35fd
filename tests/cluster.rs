//! End-to-end: a real master and two real agents on loopback (own work dirs, ports and
//! cgroup roots), tasks driven through the SDK and through `brim run`, a task killed, an
//! agent killed (its tasks become LOST), and a master restart (the registry survives).

mod support;

use std::time::Duration;

use brim_framework::v1::TaskState;
use support::probe::ProbeFramework;
use support::{state, wait_for, Cluster};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

#[test]
fn cluster_end_to_end() {
    if !support::can_run_cluster("cluster_end_to_end") {
        return;
    }
    let mut c = Cluster::new();
    c.start_agent(0, "cpus:1;mem:512;ports:[31000-31099]");
    c.start_agent(1, "cpus:1;mem:512;ports:[32000-32099]");
    let s = c.wait_agents_active(2);
    scenario(&mut c, s);
}

fn scenario(c: &mut Cluster, s: serde_json::Value) {
    let agents = s["agents"].as_array().expect("agents").clone();
    let racks: Vec<_> = agents
        .iter()
        .map(|a| a["attributes"]["rack"].clone())
        .collect();
    assert!(
        racks.contains(&"r0".into()) && racks.contains(&"r1".into()),
        "{racks:?}"
    );
    let agent_id_of = |rack: &str| {
        agents
            .iter()
            .find(|a| a["attributes"]["rack"] == rack)
            .and_then(|a| a["id"].as_str())
            .expect("agent id")
            .to_string()
    };
    let (a0, a1) = (agent_id_of("r0"), agent_id_of("r1"));

    // --- brim run: output streamed, exit code propagated.
    let out = c.brim(&["run", "--", "echo hello from brim"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("hello from brim"),
        "stdout: {}",
        text(&out.stdout)
    );

    let out = c.brim(&[
        "run",
        "--",
        "sh",
        "-c",
        "echo to-out; echo to-err >&2; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3), "stderr: {}", text(&out.stderr));
    assert!(text(&out.stdout).contains("to-out"));
    assert!(text(&out.stderr).contains("to-err"));

    let out = c.brim(&[
        "run",
        "--instances",
        "3",
        "--cpus",
        "0.2",
        "--mem",
        "32",
        "--",
        "echo instance",
    ]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).matches("instance").count(),
        3,
        "{}",
        text(&out.stdout)
    );

    // Nothing can fit: a clear explanation, not a hang.
    let out = c.brim(&["run", "--cpus", "64", "--timeout", "5", "--", "true"]);
    assert_ne!(out.status.code(), Some(0));
    let err = text(&out.stderr);
    assert!(
        err.contains("cpus"),
        "should explain what does not fit: {err}"
    );

    // --- operator views.
    let out = c.brim(&["tasks", "--json", "--all"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = c.brim(&["agents"]);
    assert!(text(&out.stdout).contains(&a0), "{}", text(&out.stdout));

    // --- SDK: launch on agent 1, kill it; launch a long task on agent 1, then kill agent 1.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let master = c.master_addr.clone();
    let fw_id = rt.block_on(async {
        let mut fw = ProbeFramework::start(&master, "it-probe").await;
        fw.run_sleeper_on(&a1, "victim").await;
        fw.handle
            .kill("victim", &a1, Some(Duration::from_secs(1)))
            .await
            .expect("kill");
        fw.wait_state("victim", TaskState::TaskKilled).await;

        // Unknown task: a clear error, nothing breaks.
        let err = fw.handle.kill("no-such-task", &a1, None).await;
        assert!(err.is_err(), "killing an unknown task must fail");

        fw.run_sleeper_on(&a1, "doomed").await;
        c.agents[1].kill9();
        let lost = fw.wait_state("doomed", TaskState::TaskLost).await;
        assert!(!lost.message.is_empty());
        // Stop without tearing down: the framework stays registered (failover timeout 1 h)
        // and must not hoard offers while nobody reads them.
        let id = fw.handle.framework_id().expect("framework id");
        fw.handle.stop();
        id
    });
    let s = state(&c.master_addr);
    let a1_state = s["agents"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["id"] == a1.as_str()))
        .map(|x| x["status"].clone());
    assert_eq!(a1_state, Some("unreachable".into()));

    // --- master restart: the registry keeps frameworks; agent 0 comes back with its id.
    if let Some(m) = c.master.as_mut() {
        m.kill9();
    }
    c.start_master();
    let s = wait_for("agent 0 re-registered", Duration::from_secs(30), || {
        let s = state(&c.master_addr);
        let back = s["agents"].as_array().is_some_and(|a| {
            a.iter()
                .any(|x| x["id"] == a0.as_str() && x["active"] == true)
        });
        back.then_some(s)
    });
    let frameworks: Vec<_> = s["frameworks"]
        .as_array()
        .expect("frameworks")
        .iter()
        .map(|f| f["id"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        frameworks.contains(&fw_id),
        "framework {fw_id} should survive a master restart: {frameworks:?}"
    );
    // The cluster still runs work after the restart.
    let out = c.brim(&["run", "--", "echo after restart"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert!(text(&out.stdout).contains("after restart"));
    drop(rt);
}
