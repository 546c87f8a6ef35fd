//! Fetcher, health checks, the disk quota and sandbox path traversal with the real `brim`
//! binary: one master, one agent, a probe framework and an HTTP file server on loopback.

mod support;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use brim_framework::v1::{
    HealthCheck, HealthCheckKind, TaskState, TaskStatus, TaskStatusReason, Uri,
};
use brim_framework::{OfferPacker, Resources, TaskBuilder};
use support::probe::{ProbeEvent, ProbeFramework};
use support::{http_get, Cluster};

const RES: &str = "cpus:2;mem:1024;disk:1000;ports:[31000-31099]";

/// Serves files of `dir` over HTTP/1.0 on 127.0.0.1 (404 for anything else).
fn serve_dir(dir: &Path) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    let dir = dir.to_path_buf();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let req = String::from_utf8_lossy(&req).to_string();
            let path = req.split_whitespace().nth(1).unwrap_or("/").to_string();
            let file = dir.join(path.trim_start_matches('/'));
            match std::fs::read(&file) {
                Ok(body) if !path.contains("..") => {
                    let _ = write!(
                        s,
                        "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n",
                        body.len()
                    );
                    let _ = s.write_all(&body);
                }
                _ => {
                    let _ = s.write_all(b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n");
                }
            }
        }
    });
    port
}

fn sh(cmd: &str) {
    let st = Command::new("sh").arg("-c").arg(cmd).status().expect("sh");
    assert!(st.success(), "`{cmd}` failed");
}

fn uri(value: String, extract: bool, executable: bool) -> Uri {
    Uri {
        value,
        extract,
        executable,
        ..Default::default()
    }
}

#[test]
fn fetcher_health_checks_disk_quota_and_sandbox_paths() {
    if !support::can_run_cluster("fetcher_health_checks_disk_quota_and_sandbox_paths") {
        return;
    }
    if !support::have_tools(
        "fetcher_health_checks_disk_quota_and_sandbox_paths",
        &["tar", "dd"],
    ) {
        return;
    }
    let mut c = Cluster::new();
    c.start_agent(0, RES);
    let s = c.wait_agents_active(1);
    let agent = s["agents"][0]["id"].as_str().expect("agent id").to_string();
    scenario(&c, &agent);
}

fn scenario(c: &Cluster, agent: &str) {
    let files = tempfile::tempdir().expect("tempdir");
    let f = files.path();
    // app.tar.gz: app/run.sh (executable) and app/data.txt
    std::fs::create_dir_all(f.join("src/app")).expect("mkdir");
    std::fs::write(f.join("src/app/run.sh"), "#!/bin/sh\ncat app/data.txt\n").expect("write");
    std::fs::write(f.join("src/app/data.txt"), "fetched-data\n").expect("write");
    sh(&format!(
        "chmod 755 {0}/src/app/run.sh && tar -C {0}/src -czf {0}/app.tar.gz app",
        f.display()
    ));
    std::fs::write(f.join("tool"), "#!/bin/sh\necho tool-ran\n").expect("write");
    // evil.tar: an entry `../escaped` that would land outside the sandbox
    std::fs::create_dir_all(f.join("evil/sub")).expect("mkdir");
    std::fs::write(f.join("evil/escaped"), "x").expect("write");
    sh(&format!(
        "cd {0}/evil/sub && tar -cPf {0}/evil.tar ../escaped",
        f.display()
    ));
    let port = serve_dir(f);
    let http = |name: &str| format!("http://127.0.0.1:{port}/{name}");

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut fw = ProbeFramework::start(&c.master_addr, "fetch-health").await;
        let offer = fw.offer_on(agent).await;
        let small = Resources::parse("cpus:0.1;mem:32;disk:10").expect("resources");
        let mut packer = OfferPacker::new(&offer).expect("offer");
        let mut place = |b: TaskBuilder| packer.place(&b.resources(&small)).expect("place");
        let tasks = vec![
            // fetched over http and extracted, plus a local file made executable
            place(
                TaskBuilder::new("fetch-ok", "fetch-ok")
                    .shell("./app/run.sh && ./tool")
                    .uri(uri(http("app.tar.gz"), true, false))
                    .uri(uri(f.join("tool").display().to_string(), false, true)),
            ),
            place(
                TaskBuilder::new("fetch-remote", "fetch-remote")
                    .shell("true")
                    .uri(uri("http://10.1.2.3/app.tar".into(), false, false)),
            ),
            place(
                TaskBuilder::new("fetch-404", "fetch-404")
                    .shell("true")
                    .uri(uri(http("missing.tar"), true, false)),
            ),
            place(
                TaskBuilder::new("fetch-evil", "fetch-evil")
                    .shell("true")
                    .uri(uri(http("evil.tar"), true, false)),
            ),
            // healthy while `ready` exists, then unhealthy, then killed
            place(
                TaskBuilder::new("health", "health")
                    .shell("touch ready; sleep 2; rm ready; sleep 600")
                    .health_check(HealthCheck {
                        kind: HealthCheckKind::Command as i32,
                        command: "test -f ready".into(),
                        interval_seconds: 0.3,
                        grace_period_seconds: 5.0,
                        timeout_seconds: 2.0,
                        consecutive_failures: 3,
                        ..Default::default()
                    })
                    .kill_grace(Duration::from_millis(200)),
            ),
            // writes 20 MiB into a 10 MiB disk allowance
            place(
                TaskBuilder::new("disk-hog", "disk-hog")
                    .shell("dd if=/dev/zero of=big bs=1M count=20 2>/dev/null; sleep 600"),
            ),
        ];
        fw.handle.launch(&offer.id, tasks).await.expect("launch");

        let mut finals: HashMap<String, TaskStatus> = HashMap::new();
        let mut health: Vec<Option<bool>> = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
        while finals.len() < 6 {
            let ev = tokio::time::timeout_at(deadline, fw.events.recv())
                .await
                .unwrap_or_else(|_| panic!("tasks did not end within 40 s; ended: {finals:?}"));
            match ev {
                Some(ProbeEvent::Update(s)) => {
                    if s.task_id == "health" && s.state() == TaskState::TaskRunning {
                        health.push(s.healthy);
                    }
                    if s.state().is_terminal() {
                        finals.insert(s.task_id.clone(), s);
                    }
                }
                Some(ProbeEvent::Offers(offers)) => {
                    let ids = offers.into_iter().map(|o| o.id).collect();
                    let _ = fw.handle.decline(ids, Some(1.0)).await;
                }
                None => panic!("driver stopped"),
            }
        }
        let check = |id: &str, state: TaskState, needle: &str| {
            let s = &finals[id];
            assert_eq!(s.state(), state, "{id}: {}", s.message);
            assert!(
                s.message.contains(needle),
                "{id}: {:?} lacks {needle:?}",
                s.message
            );
            s.clone()
        };
        check("fetch-ok", TaskState::TaskFinished, "");
        check("fetch-remote", TaskState::TaskFailed, "only loopback");
        check("fetch-404", TaskState::TaskFailed, "HTTP 404");
        check("fetch-evil", TaskState::TaskFailed, "contains `..`");
        let h = check(
            "health",
            TaskState::TaskKilled,
            "consecutive failed health checks",
        );
        assert_eq!(h.healthy, Some(false));
        assert_eq!(
            h.reason(),
            TaskStatusReason::ReasonTaskHealthCheckStatusUpdated
        );
        assert_eq!(
            health,
            vec![None, Some(true), Some(false)],
            "health updates of the health task"
        );
        let d = check("disk-hog", TaskState::TaskFailed, "disk quota exceeded");
        assert_eq!(d.reason(), TaskStatusReason::ReasonContainerLimitationDisk);
        assert!(!f.join("escaped").exists() && !f.join("evil/sub/escaped").exists());

        // the fetch-ok task's output, read through the agent's sandbox endpoint
        let fid = fw.handle.framework_id().unwrap_or_default();
        let agent_http = c.agent_addrs[0].clone();
        let (code, out) = http_get(&agent_http, &format!("/sandbox/{fid}/fetch-ok/stdout"))
            .expect("agent reachable");
        assert_eq!(code, 200, "{out}");
        assert_eq!(out, "fetched-data\ntool-ran\n");

        // path traversal in sandbox file requests: 400 or 404, never a file outside
        for path in [
            format!("/sandbox/{fid}/fetch-ok/../../../../etc/shadow"),
            format!("/sandbox/{fid}/fetch-ok/..%2F..%2F..%2F..%2Fetc%2Fshadow"),
            format!("/sandbox/{fid}/fetch-ok/%2e%2e%2f%2e%2e%2fetc%2fshadow"),
            format!("/sandbox/{fid}/..%2F..%2F..%2Fetc/shadow"),
            "/sandbox/..%2F..%2F..%2F/..%2F..%2Fetc/shadow".to_string(),
            format!("/sandbox/{fid}/fetch-ok/%252e%252e%252fshadow"),
            format!("/sandbox/{fid}/fetch-ok/app%2F..%2F..%2Fstdout"),
            format!("/sandbox/{fid}/fetch-ok/app/data.txt"),
            "/sandbox/../../etc/shadow".to_string(),
        ] {
            let (code, body) = http_get(&agent_http, &path).expect("agent reachable");
            assert!(code == 400 || code == 404, "{path}: HTTP {code}: {body}");
            assert!(!body.contains("root:"), "{path}: leaked {body}");
            let via_master = format!("/agents/{agent}{path}");
            if let Some((code, body)) = http_get(&c.master_addr, &via_master) {
                // Paths the proxy route does not match fall through to the gRPC router,
                // which answers 200 with an empty body (grpc-status UNIMPLEMENTED).
                assert!(
                    code >= 400 || body.is_empty(),
                    "{via_master}: HTTP {code}: {body}"
                );
                assert!(!body.contains("root:"), "{via_master}: leaked {body}");
            }
        }
    });
}
