//! Partitions: an agent that stops answering (SIGSTOP: its process and connection freeze, as
//! behind a dead switch) is marked unreachable; a PARTITION_AWARE framework sees
//! TASK_UNREACHABLE and then its task RUNNING again when the agent returns, while another
//! framework sees TASK_LOST and its task is killed on return (Mesos semantics). Finally the
//! operator marks the agent gone: its tasks are GONE_BY_OPERATOR and it cannot re-register.

mod support;

use std::time::Duration;

use brim_framework::v1::TaskState;
use support::probe::ProbeFramework;
use support::{http_get, wait_for, Cluster};

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a child process this test started, with a valid signal number.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

fn post(addr: &str, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    write!(
        s,
        "POST {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: 0\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let code = buf.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, buf))
}

#[test]
fn partitioned_agent_unreachable_then_back() {
    if !support::can_run_cluster("partitioned_agent_unreachable_then_back") {
        return;
    }
    let mut c = Cluster::new();
    c.start_agent(0, "cpus:2;mem:512");
    let s = c.wait_agents_active(1);
    let agent = s["agents"][0]["id"].as_str().expect("agent id").to_string();
    let result =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| scenario(&mut c, &agent)));
    if result.is_err() {
        c.dump_logs();
    }
    if let Some(a) = c.agents.first() {
        signal(a.child.id(), libc::SIGCONT);
    }
    c.cleanup_cgroups();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

fn scenario(c: &mut Cluster, agent: &str) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let master = c.master_addr.clone();
    let (mut aware, mut plain) = rt.block_on(async {
        let user = |cfg: &mut brim_framework::DriverConfig| cfg.framework.user = "nobody".into();
        let mut aware = ProbeFramework::start_with(&master, "aware", |cfg| {
            user(cfg);
            cfg.framework.capabilities = vec![brim_proto::CAPABILITY_PARTITION_AWARE.into()];
        })
        .await;
        // One at a time: a probe that is not being polled sits on its offers.
        aware.run_sleeper_on(agent, "aware-task").await;
        let mut plain = ProbeFramework::start_with(&master, "plain", user).await;
        plain.run_sleeper_on(agent, "plain-task").await;
        (aware, plain)
    });
    let agent_pid = c.agents[0].child.id();
    signal(agent_pid, libc::SIGSTOP);
    rt.block_on(async {
        aware
            .wait_state("aware-task", TaskState::TaskUnreachable)
            .await;
        let lost = plain.wait_state("plain-task", TaskState::TaskLost).await;
        assert!(lost.message.contains("unreachable"), "{}", lost.message);
    });
    let s = support::state(&c.master_addr);
    assert_eq!(s["agents"][0]["status"], "unreachable");

    signal(agent_pid, libc::SIGCONT);
    rt.block_on(async {
        // The partition-aware framework learns its task is running again...
        aware.wait_state("aware-task", TaskState::TaskRunning).await;
    });
    // ...and the other framework's task, already reported lost, is killed on the agent.
    let agent_http = c.agent_addrs[0].clone();
    wait_for(
        "the LOST task killed on the returning agent",
        Duration::from_secs(20),
        || {
            let (_, body) = http_get(&agent_http, "/state")?;
            let v: serde_json::Value = serde_json::from_str(&body).ok()?;
            let running = v["tasks"]
                .as_array()?
                .iter()
                .any(|t| t["id"] == "plain-task" && t["state"] == "TASK_RUNNING");
            (!running).then_some(())
        },
    );
    let s = support::state(&c.master_addr);
    assert_eq!(s["agents"][0]["status"], "connected");

    // The operator retires the agent: tasks gone, re-registration refused.
    let (code, body) = post(&c.master_addr, &format!("/agents/{agent}/gone")).expect("post");
    assert_eq!(code, 200, "{body}");
    rt.block_on(async {
        aware
            .wait_state("aware-task", TaskState::TaskGoneByOperator)
            .await;
    });
    std::thread::sleep(Duration::from_secs(2));
    let s = support::state(&c.master_addr);
    let listed = s["agents"]
        .as_array()
        .is_some_and(|a| a.iter().any(|x| x["id"] == agent && x["active"] == true));
    assert!(!listed, "a gone agent must not be active again: {s}");
    let (code, _) = post(&c.master_addr, "/agents/no-such-agent/gone").expect("post");
    assert_eq!(code, 404);
    aware.handle.stop();
    plain.handle.stop();
}
