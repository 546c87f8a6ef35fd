//! A real Prometheus (Debian `prometheus` package) scrapes an agent and a per-task series
//! comes back through its HTTP API; `promtool check metrics` accepts the agent's /metrics.
//! Needs root and cgroups (per-task usage) and the prometheus/promtool binaries: without
//! them the test prints why and skips, unless BRIM_TEST_REQUIRE_ALL=1, where it fails.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use brim_agent::Isolation;
use brim_proto::v1::TaskState;
use common::*;

fn which(bin: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {bin}"))
        .output()
        .is_ok_and(|o| o.status.success())
}

fn unavailable() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2))
        .unwrap_or("");
    if euid != "0" {
        return Some(format!("not root (euid {euid})"));
    }
    for bin in ["prometheus", "promtool"] {
        if !which(bin) {
            return Some(format!("{bin} not installed (apt-get install prometheus)"));
        }
    }
    None
}

fn can_run(test: &str) -> bool {
    common::run_or_skip(test, unavailable())
}

/// Kills Prometheus when the test ends, however it ends.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_per_task_series() {
    if !can_run("prometheus_scrapes_per_task_series") {
        return;
    }
    let mut master = FakeMaster::start().await;
    let work = tempfile::tempdir().expect("tempdir");
    let cfg = config(
        master.addr,
        work.path(),
        Isolation::Cgroups,
        &unique("brim-prom"),
    );
    let (http, stop, join) = start_agent(cfg).await;
    let (mut s, _) = master.accept().await;
    s.registered("agent-1", 30.0).await;
    s.run_task("fw", shell_task("t1", "sleep 120", "cpus:0.5;mem:64"))
        .await;
    s.expect("t1", TaskState::TaskStarting).await;
    s.expect("t1", TaskState::TaskRunning).await;

    // promtool lints what the agent serves, once a sample of the task is in.
    let deadline = Instant::now() + WAIT;
    let text = loop {
        let text = reqwest::get(format!("http://{http}/metrics"))
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("body");
        if text.contains("task_id=\"t1\"") {
            break text;
        }
        assert!(Instant::now() < deadline, "no per-task series: {text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    check
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("feed promtool");
    let out = check.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics failed: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Prometheus on a free loopback port, everything in a tempdir.
    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: brim-agent\n    static_configs:\n      - targets: ['{http}']\n"
        ),
    )
    .expect("write config");
    let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log");
    let prom = Child(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start prometheus"),
    );
    let query = format!(
        "http://127.0.0.1:{port}/api/v1/query?query=brim_agent_container_memory_bytes%7Btask_id%3D%22t1%22%2Cframework_id%3D%22fw%22%7D"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let result = loop {
        if let Ok(r) = reqwest::get(&query).await {
            if let Ok(v) = r.json::<serde_json::Value>().await {
                if v["data"]["result"]
                    .as_array()
                    .is_some_and(|a| !a.is_empty())
                {
                    break v;
                }
            }
        }
        if Instant::now() > deadline {
            let log =
                std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default();
            panic!("Prometheus never returned the task's series; its log:\n{log}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let series = &result["data"]["result"][0];
    assert_eq!(series["metric"]["task_name"], "t1", "{result}");
    assert_eq!(series["metric"]["executor_id"], "t1", "{result}");
    assert_eq!(series["metric"]["job"], "brim-agent", "{result}");
    drop(prom);

    s.kill("fw", "t1", Some(0.0)).await;
    s.expect("t1", TaskState::TaskKilled).await;
    let _ = stop.send(());
    join.await.expect("join").expect("agent stopped cleanly");
}
