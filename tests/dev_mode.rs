//! `brim dev` — the README's first command — starts a working one-machine cluster over TLS
//! (a throwaway CA in its work dir), runs a task, and stops cleanly on Ctrl-C (SIGINT),
//! removing its cgroups.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::{free_port, http_get, https, wait_for, BRIM};

#[test]
fn brim_dev_runs_a_task_and_stops_cleanly() {
    if !support::can_run_cluster("brim_dev_runs_a_task_and_stops_cleanly")
        || !support::have_tools("brim_dev_runs_a_task_and_stops_cleanly", &["curl"])
    {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (port, agent_port) = (free_port(), free_port());
    let cgroup = format!("brim-dev-test-{}", std::process::id());
    let log = dir.path().join("dev.log");
    let mut dev = Command::new(BRIM)
        .args([
            "dev",
            "--port",
            &port.to_string(),
            "--agent-port",
            &agent_port.to_string(),
            "--work-dir",
            &dir.path().display().to_string(),
            "--cgroup-name",
            &cgroup,
        ])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).expect("log"))
        .stderr(Stdio::null())
        .spawn()
        .expect("start brim dev");
    let master = format!("127.0.0.1:{port}");
    let tls = dir.path().join("tls");
    let (ca, cert, key) = (
        tls.join("ca.pem"),
        tls.join("operator.pem"),
        tls.join("operator-key.pem"),
    );
    let state_url = format!("https://{master}/state");
    wait_for(
        "an active agent in brim dev",
        Duration::from_secs(30),
        || {
            let (_, body) = https("GET", &state_url, &ca, Some((&cert, &key)), None, None)?;
            let s: serde_json::Value = serde_json::from_str(&body).ok()?;
            (s["agents"][0]["active"] == true).then_some(())
        },
    );
    let banner = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        banner.contains("brim run -- echo hello"),
        "banner: {banner}"
    );
    assert!(
        banner.contains(&format!("https://{master}/metrics")),
        "banner: {banner}"
    );
    // TLS only: a plaintext request gets no HTTP answer.
    assert_eq!(
        http_get(&master, "/health"),
        None,
        "plaintext must not be served"
    );

    // The CLI finds the CA and its certificate through the variables the banner prints.
    assert!(banner.contains("BRIM_TLS_CA="), "banner: {banner}");
    let out = Command::new(BRIM)
        .args(["run", "--master", &master, "--", "echo hello from dev"])
        .env("BRIM_TLS_CA", &ca)
        .env("BRIM_TLS_CERT", &cert)
        .env("BRIM_TLS_KEY", &key)
        .output()
        .expect("brim run");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("hello from dev"));

    // `--devices` extends the task's device allow-list (enforced with eBPF: only when the
    // agent could load its programs, i.e. as root with BTF).
    let agent = format!("127.0.0.1:{agent_port}");
    let ebpf =
        http_get(&agent, "/metrics").is_some_and(|(_, m)| m.contains("brim_agent_ebpf_enabled 1"));
    let devices_present = ["/dev/fuse", "/dev/loop-control"]
        .iter()
        .all(|d| std::path::Path::new(d).exists());
    if ebpf && devices_present {
        let script = "(exec 3<>/dev/fuse) 2>/dev/null && echo fuse-ok || echo fuse-denied; \
                      (exec 4</dev/loop-control) 2>/dev/null && echo loop-ok || echo loop-denied";
        let out = Command::new(BRIM)
            .args([
                "run",
                "--master",
                &master,
                "--devices",
                "/dev/fuse rw",
                "--",
                script,
            ])
            .output()
            .expect("brim run --devices");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("fuse-ok") && stdout.contains("loop-denied"),
            "{stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let bad = Command::new(BRIM)
            .args([
                "run",
                "--master",
                &master,
                "--devices",
                "c 10",
                "--",
                "true",
            ])
            .output()
            .expect("brim run --devices");
        assert!(!bad.status.success());
        assert!(String::from_utf8_lossy(&bad.stderr).contains("MAJOR:MINOR"));
    } else {
        eprintln!("skipping the --devices check: eBPF off in brim dev or no /dev/fuse");
    }

    // Ctrl-C: stops cleanly with exit 0 and leaves no cgroup behind.
    // SAFETY: kill(2) on our own child's pid with a valid signal.
    unsafe {
        libc::kill(dev.id() as i32, libc::SIGINT);
    }
    let status = wait_for("brim dev to exit", Duration::from_secs(20), || {
        dev.try_wait().ok().flatten()
    });
    assert!(status.success(), "brim dev exited with {status}");
    for hierarchy in ["memory", "cpu", "unified"] {
        let p = std::path::Path::new("/sys/fs/cgroup")
            .join(hierarchy)
            .join(&cgroup);
        assert!(!p.exists(), "{} should be removed on shutdown", p.display());
    }
    assert!(
        https(
            "GET",
            &format!("https://{master}/health"),
            &ca,
            None,
            None,
            None
        )
        .is_none(),
        "master should be down"
    );
}
