//! A throwaway etcd server for tests (Debian's `etcd-server`), on free loopback ports with
//! its data in a temp dir; killed on drop. Shared by master/tests and the root tests/.
#![allow(dead_code, unreachable_pub)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Etcd {
    child: Child,
    pub endpoint: String,
    binary: String,
    args: Vec<String>,
    /// With TLS: the CA, and the client certificate and key the health check presents.
    tls: Option<EtcdTls>,
    _dir: tempfile::TempDir,
}

/// etcd over TLS: its server certificate and key, the CA it trusts for client certificates
/// (`--client-cert-auth`), and a client certificate for health checks.
#[derive(Clone)]
pub struct EtcdTls {
    pub ca: std::path::PathBuf,
    pub server: (std::path::PathBuf, std::path::PathBuf),
    pub client: (std::path::PathBuf, std::path::PathBuf),
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Finds the etcd binary, or explains why the test cannot run (and fails when
/// `BRIM_TEST_REQUIRE_ALL=1`, so CI never skips silently).
pub fn etcd_binary(test: &str) -> Option<String> {
    for p in ["/usr/bin/etcd", "/usr/local/bin/etcd"] {
        if std::path::Path::new(p).exists() {
            return Some(p.to_string());
        }
    }
    let why = format!("{test}: skipped: etcd not installed (apt-get install etcd-server)");
    if std::env::var("BRIM_TEST_REQUIRE_ALL").as_deref() == Ok("1") {
        panic!("{why}, and BRIM_TEST_REQUIRE_ALL=1 forbids skipping");
    }
    eprintln!("{why}");
    None
}

impl Etcd {
    pub fn start(binary: &str) -> Etcd {
        Etcd::start_with(binary, None)
    }

    /// etcd serving clients over TLS only (`https://`), requiring client certificates
    /// signed by `tls.ca`.
    pub fn start_tls(binary: &str, tls: EtcdTls) -> Etcd {
        Etcd::start_with(binary, Some(tls))
    }

    fn start_with(binary: &str, tls: Option<EtcdTls>) -> Etcd {
        let dir = tempfile::tempdir().expect("tempdir");
        let (client, peer) = (free_port(), free_port());
        let scheme = if tls.is_some() { "https" } else { "http" };
        let endpoint = format!("{scheme}://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let args: Vec<String> = [
            "--name",
            "t",
            "--data-dir",
            &dir.path().join("data").display().to_string(),
            "--listen-client-urls",
            &endpoint,
            "--advertise-client-urls",
            &endpoint,
            "--listen-peer-urls",
            &peer_url,
            "--initial-advertise-peer-urls",
            &peer_url,
            "--initial-cluster",
            &format!("t={peer_url}"),
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        let mut args = args;
        if let Some(t) = &tls {
            for (flag, path) in [
                ("--cert-file", &t.server.0),
                ("--key-file", &t.server.1),
                ("--trusted-ca-file", &t.ca),
            ] {
                args.push(flag.to_string());
                args.push(path.display().to_string());
            }
            args.push("--client-cert-auth".to_string());
        }
        let child = spawn(binary, &args);
        let e = Etcd {
            child,
            endpoint,
            binary: binary.to_string(),
            args,
            tls,
            _dir: dir,
        };
        e.wait_healthy();
        e
    }

    /// Kills etcd and starts it again on the same ports and data (a member restart).
    pub fn restart(&mut self, down_for: Duration) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(down_for);
        self.child = spawn(&self.binary, &self.args);
        self.wait_healthy();
    }

    fn wait_healthy(&self) {
        if let Some(t) = &self.tls {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let out = Command::new("curl")
                    .args(["-sS", "--max-time", "2", "--cacert"])
                    .arg(&t.ca)
                    .arg("--cert")
                    .arg(&t.client.0)
                    .arg("--key")
                    .arg(&t.client.1)
                    .arg(format!("{}/health", self.endpoint))
                    .stdin(Stdio::null())
                    .output();
                if out.is_ok_and(|o| {
                    String::from_utf8_lossy(&o.stdout).contains("\"health\":\"true\"")
                }) {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "etcd (TLS) did not become healthy in 20 s"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let client = self.endpoint.trim_start_matches("http://").to_string();
        let deadline = Instant::now() + Duration::from_secs(20);
        let addr = client;
        loop {
            if let Ok(mut s) = std::net::TcpStream::connect(&addr) {
                use std::io::{Read, Write};
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = write!(s, "GET /health HTTP/1.0\r\nHost: {addr}\r\n\r\n");
                let mut body = String::new();
                let _ = s.read_to_string(&mut body);
                if body.contains("\"health\":\"true\"") {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "etcd did not become healthy in 20 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn spawn(binary: &str, args: &[String]) -> Child {
    Command::new(binary)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start etcd")
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
