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
    let pid = c.agents[0].child.id();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        scenario(
            &mut c,
            &agent,
            || signal(pid, libc::SIGSTOP),
            || signal(pid, libc::SIGCONT),
        )
    }));
    if let Some(a) = c.agents.first() {
        signal(a.child.id(), libc::SIGCONT);
    }
    c.cleanup_cgroups();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

/// Runs the partition story; `cut` isolates the agent from the master, `heal` undoes it.
fn scenario(c: &mut Cluster, agent: &str, cut: impl Fn(), heal: impl Fn()) {
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
    cut();
    rt.block_on(async {
        aware
            .wait_state("aware-task", TaskState::TaskUnreachable)
            .await;
        let lost = plain.wait_state("plain-task", TaskState::TaskLost).await;
        assert!(lost.message.contains("unreachable"), "{}", lost.message);
    });
    let s = support::state(&c.master_addr);
    assert_eq!(s["agents"][0]["status"], "unreachable");

    heal();
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

fn ip(args: &[&str]) {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace for the agent, joined to the host by a veth pair with link-local
/// addresses; deleted (with its veth) on drop.
struct Netns {
    name: String,
    host_if: String,
    host_ip: String,
    ns_ip: String,
}

impl Netns {
    fn new() -> Netns {
        let id = std::process::id() % 10_000;
        let subnet = 1 + std::process::id() % 250;
        let n = Netns {
            name: format!("brim-part-{id}"),
            host_if: format!("bph{id}"),
            host_ip: format!("169.254.{subnet}.1"),
            ns_ip: format!("169.254.{subnet}.2"),
        };
        let ns_if = format!("bpn{id}");
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &n.name])
            .output();
        ip(&["netns", "add", &n.name]);
        ip(&[
            "link", "add", &n.host_if, "type", "veth", "peer", "name", &ns_if,
        ]);
        ip(&["link", "set", &ns_if, "netns", &n.name]);
        ip(&[
            "addr",
            "add",
            &format!("{}/30", n.host_ip),
            "dev",
            &n.host_if,
        ]);
        ip(&["link", "set", &n.host_if, "up"]);
        ip(&[
            "netns",
            "exec",
            &n.name,
            "ip",
            "addr",
            "add",
            &format!("{}/30", n.ns_ip),
            "dev",
            &ns_if,
        ]);
        ip(&["netns", "exec", &n.name, "ip", "link", "set", &ns_if, "up"]);
        ip(&["netns", "exec", &n.name, "ip", "link", "set", "lo", "up"]);
        n
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// The same story with a real network partition: the agent lives in its own network
/// namespace and the veth link to it is taken down, then up again.
#[test]
fn network_partition_with_netns_and_veth() {
    if !support::can_run_cluster("network_partition_with_netns_and_veth")
        || !support::have_tools("network_partition_with_netns_and_veth", &["ip"])
    {
        return;
    }
    let net = Netns::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let port = support::free_port();
    let master_addr = format!("{}:{port}", net.host_ip);
    let spawn = |name: &str, program: &str, args: Vec<String>| {
        let log = dir.path().join(format!("{name}.log"));
        let out = std::fs::File::create(&log).expect("log");
        let child = std::process::Command::new(program)
            .args(&args)
            .env("RUST_LOG", "info")
            .env(support::INSECURE.0, support::INSECURE.1)
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("spawn");
        support::Proc {
            child,
            name: name.into(),
            log,
        }
    };
    let mut margs: Vec<String> = vec![
        "master".into(),
        "--ip".into(),
        net.host_ip.clone(),
        "--port".into(),
        port.to_string(),
        "--work-dir".into(),
        dir.path().join("master").display().to_string(),
    ];
    margs.extend(support::MASTER_FLAGS.iter().map(|s| s.to_string()));
    let master = spawn("master", support::BRIM, margs);
    wait_for("master /health", Duration::from_secs(30), || {
        http_get(&master_addr, "/health").filter(|(c, _)| *c == 200)
    });
    let tag = format!("brim-netns-{}", std::process::id());
    let agent_port = support::free_port();
    let agent = spawn(
        "agent0",
        "ip",
        vec![
            "netns".into(),
            "exec".into(),
            net.name.clone(),
            support::BRIM.into(),
            "agent".into(),
            "--master".into(),
            master_addr.clone(),
            "--ip".into(),
            net.ns_ip.clone(),
            "--port".into(),
            agent_port.to_string(),
            "--work-dir".into(),
            dir.path().join("agent0").display().to_string(),
            "--cgroup-name".into(),
            format!("{tag}-a0"),
            "--resources".into(),
            "cpus:2;mem:512".into(),
        ],
    );
    let mut c = Cluster {
        dir: tempfile::tempdir().expect("tempdir"),
        master_addr: master_addr.clone(),
        master_port: port,
        master: Some(master),
        agents: vec![agent],
        agent_addrs: vec![format!("{}:{agent_port}", net.ns_ip)],
        tag,
    };
    let s = c.wait_agents_active(1);
    let agent_id = s["agents"][0]["id"].as_str().expect("agent id").to_string();
    let host_if = net.host_if.clone();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        scenario(
            &mut c,
            &agent_id,
            || ip(&["link", "set", &host_if, "down"]),
            || ip(&["link", "set", &host_if, "up"]),
        )
    }));
    c.agents.clear();
    c.cleanup_cgroups();
    drop(net);
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}
