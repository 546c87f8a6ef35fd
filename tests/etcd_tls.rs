//! Issue 11: the master's connection to etcd over TLS. A real etcd (Debian's etcd-server)
//! serves clients only over TLS and demands a client certificate signed by the cluster CA;
//! certificates come from `brim certs`. A master given `--etcd-ca/--etcd-cert/--etcd-key`
//! wins the election and serves as leader (election and registry both go through etcd); a
//! master without a client certificate never leads, and one pointing at `https://` without a
//! CA refuses to start with an error that names the flag.

mod support;

#[path = "../master/tests/support/etcd.rs"]
mod etcd_support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{free_port, http_get, Proc, BRIM};

fn master(dir: &Path, name: &str, etcd: &str, extra: &[String]) -> (Proc, String) {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let log = dir.join(format!("{name}.log"));
    let out = std::fs::File::create(&log).expect("log");
    let child = Command::new(BRIM)
        .args([
            "master",
            "--ip",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--work-dir",
            &dir.join(name).display().to_string(),
            "--etcd",
            etcd,
            "--advertise",
            &addr,
            "--lease-ttl",
            "2s",
        ])
        .args(extra)
        .env("BRIM_INSECURE", "1")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("log"))
        .stderr(out)
        .spawn()
        .expect("spawn brim master");
    (
        Proc {
            child,
            name: name.into(),
            log,
        },
        addr,
    )
}

#[test]
fn the_master_reaches_etcd_over_mutual_tls() {
    let Some(bin) = etcd_support::etcd_binary("etcd_tls") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = dir.path().join("pki");
    let out = Command::new(BRIM)
        .args([
            "certs",
            &pki.display().to_string(),
            "etcd",
            "master",
            "--host",
            "127.0.0.1",
        ])
        .output()
        .expect("brim certs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let file = |n: &str| pki.join(n);
    let etcd = etcd_support::Etcd::start_tls(
        &bin,
        etcd_support::EtcdTls {
            ca: file("ca.pem"),
            server: (file("etcd.pem"), file("etcd-key.pem")),
            client: (file("master.pem"), file("master-key.pem")),
        },
    );
    assert!(etcd.endpoint.starts_with("https://"), "{}", etcd.endpoint);
    let path = |n: &str| file(n).display().to_string();

    // https without a CA: refused at start, naming the flag.
    let out = Command::new(BRIM)
        .args([
            "master",
            "--port",
            &free_port().to_string(),
            "--etcd",
            &etcd.endpoint,
        ])
        .args(["--work-dir", &dir.path().join("noca").display().to_string()])
        .env("BRIM_INSECURE", "1")
        .stdin(Stdio::null())
        .output()
        .expect("brim master");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started without --etcd-ca: {stderr}");
    assert!(stderr.contains("--etcd-ca"), "{stderr}");

    // The CA but no client certificate: etcd refuses it, so it never leads.
    let (mut anonymous, anonymous_addr) = master(
        dir.path(),
        "anonymous",
        &etcd.endpoint,
        &["--etcd-ca".into(), path("ca.pem")],
    );

    // Mutual TLS: elected, and serving as the leader.
    let (mut leader, addr) = master(
        dir.path(),
        "leader",
        &etcd.endpoint,
        &[
            "--etcd-ca".into(),
            path("ca.pem"),
            "--etcd-cert".into(),
            path("master.pem"),
            "--etcd-key".into(),
            path("master-key.pem"),
        ],
    );
    let start = Instant::now();
    let elected = wait_for_leader(&addr, Duration::from_secs(30));
    if !elected {
        eprintln!("--- leader log ---\n{}", leader.log_text());
        panic!("the master with a client certificate did not lead within 30 s");
    }
    eprintln!("leading {:?} after start", start.elapsed());
    let (code, body) = http_get(&addr, "/state").expect("state");
    assert_eq!(code, 200, "{body}");
    let state: serde_json::Value = serde_json::from_str(&body).expect("state json");
    assert_eq!(state["leader"], addr.as_str(), "{state}");

    // The anonymous one is refused by etcd (it says so and stops) and does not lead.
    let log = wait_for_log(&anonymous, "client certificate", Duration::from_secs(30));
    eprintln!("--- the master without a client certificate ---\n{log}");
    let health = http_get(&anonymous_addr, "/health").map(|r| r.1);
    assert_ne!(
        health.as_deref(),
        Some("ok\n"),
        "a master without a client certificate became leader"
    );
    anonymous.kill9();
    leader.kill9();
}

/// The log of `p` once a warning, error or fatal line mentions `what` (panics after `limit`).
fn wait_for_log(p: &Proc, what: &str, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let log = p.log_text();
        if log.lines().any(|l| {
            (l.contains("WARN") || l.contains("ERROR") || l.starts_with("brim: "))
                && l.contains(what)
        }) {
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "{} said nothing about {what}:\n{log}",
            p.name
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Whether `/health` answers `ok` (a leader; standbys answer `standby`) within `limit`.
fn wait_for_leader(addr: &str, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if http_get(addr, "/health").is_some_and(|(c, b)| c == 200 && b == "ok\n") {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}
