//! Task health checks (command, HTTP, TCP): [`Tracker`] is the pure policy (grace period,
//! consecutive failures, when to report), [`probe`] runs one check.

use std::path::Path;
use std::time::{Duration, Instant};

use brim_proto::v1::{HealthCheck, HealthCheckKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A validated health check.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub kind: Kind,
    pub grace: Duration,
    pub interval: Duration,
    pub timeout: Duration,
    pub max_failures: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Command(String),
    Http { port: u16, path: String },
    Tcp { port: u16 },
}

/// Checks a `HealthCheck` from the wire; `first_port` is the task's PORT0, if any.
pub fn validate(h: &HealthCheck, first_port: Option<u16>) -> Result<Check, String> {
    let secs = |v: f64, default: f64, what: &str| -> Result<Duration, String> {
        if !(0.0..=86_400.0).contains(&v) {
            return Err(format!(
                "health check {what} must be between 0 and 86400 seconds"
            ));
        }
        Ok(Duration::from_secs_f64(if v == 0.0 { default } else { v }))
    };
    let port = || -> Result<u16, String> {
        match h.port {
            0 => first_port.ok_or_else(|| {
                "health check has no port: set health_check.port or give the task a port".into()
            }),
            p => u16::try_from(p).map_err(|_| format!("health check port {p} is not a valid port")),
        }
    };
    let kind = match h.kind() {
        HealthCheckKind::Command if h.command.is_empty() => {
            return Err("command health check without a command: set health_check.command".into())
        }
        HealthCheckKind::Command => Kind::Command(h.command.clone()),
        HealthCheckKind::Http => {
            let path = if h.path.is_empty() {
                "/".to_string()
            } else {
                h.path.clone()
            };
            if !path.starts_with('/') || path.chars().any(|c| c.is_control() || c == ' ') {
                return Err(format!(
                    "health check path `{path}` must start with `/` and have no spaces"
                ));
            }
            Kind::Http {
                port: port()?,
                path,
            }
        }
        HealthCheckKind::Tcp => Kind::Tcp { port: port()? },
        HealthCheckKind::Unspecified => {
            return Err("health check kind is unset: use COMMAND, HTTP or TCP".into())
        }
    };
    Ok(Check {
        kind,
        grace: secs(h.grace_period_seconds, 0.0, "grace_period_seconds")?,
        interval: secs(h.interval_seconds, 10.0, "interval_seconds")?,
        timeout: secs(h.timeout_seconds, 20.0, "timeout_seconds")?,
        max_failures: if h.consecutive_failures == 0 {
            3
        } else {
            h.consecutive_failures
        },
    })
}

/// What to do after a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing to report.
    Quiet,
    /// Health changed: send a TASK_RUNNING update with `healthy` set.
    Report(bool),
    /// Too many failures in a row: kill the task.
    Kill,
}

/// Health state of one task. Failures within the grace period (before the first success)
/// do not count; the first result and every change are reported; `max_failures` failures in
/// a row kill the task.
#[derive(Debug, Clone)]
pub struct Tracker {
    started: Instant,
    grace: Duration,
    max_failures: u32,
    failures: u32,
    passed_once: bool,
    healthy: Option<bool>,
}

impl Tracker {
    pub fn new(check: &Check, started: Instant) -> Self {
        Tracker {
            started,
            grace: check.grace,
            max_failures: check.max_failures,
            failures: 0,
            passed_once: false,
            healthy: None,
        }
    }

    pub fn healthy(&self) -> Option<bool> {
        self.healthy
    }

    pub fn record(&mut self, ok: bool, now: Instant) -> Verdict {
        if ok {
            self.passed_once = true;
            self.failures = 0;
            return self.set(true);
        }
        if !self.passed_once && now.saturating_duration_since(self.started) < self.grace {
            return Verdict::Quiet;
        }
        self.failures += 1;
        if self.failures >= self.max_failures {
            self.healthy = Some(false);
            return Verdict::Kill;
        }
        self.set(false)
    }

    fn set(&mut self, healthy: bool) -> Verdict {
        if self.healthy == Some(healthy) {
            Verdict::Quiet
        } else {
            self.healthy = Some(healthy);
            Verdict::Report(healthy)
        }
    }
}

/// Where a command check of an isolated task runs: inside the task's namespaces (those of
/// its supervisor, PID 1 of its PID namespace), in its cgroups, as its user.
#[derive(Clone, Debug)]
pub struct InTask {
    pub supervisor_pid: i32,
    /// `cgroup.procs` files of the task's cgroups.
    pub cgroup_procs: Vec<std::path::PathBuf>,
    /// (uid, gid); `None` keeps the agent's.
    pub user: Option<(u32, u32)>,
    /// An OCI task: the argv of the runtime's `exec` into its container (the container's
    /// root filesystem, namespaces, user and environment), to which `/bin/sh -c <check>` is
    /// appended; used instead of `nsenter` into the supervisor's namespaces.
    pub container_exec: Option<Vec<String>>,
}

impl InTask {
    /// `nsenter` into the task's mount, UTS, IPC, network and PID namespaces, in its sandbox
    /// (the same path inside), as its user, running `/bin/sh -c cmd`.
    fn command(&self, cmd: &str, sandbox: &Path) -> std::process::Command {
        if let Some((program, args)) = self
            .container_exec
            .as_ref()
            .and_then(|argv| argv.split_first())
        {
            let mut c = std::process::Command::new(program);
            c.args(args).args(["/bin/sh", "-c", cmd]);
            return c;
        }
        let mut c = std::process::Command::new("nsenter");
        c.arg(format!("--target={}", self.supervisor_pid))
            .args(["--mount", "--uts", "--ipc", "--net", "--pid"])
            .arg(format!("--wd={}", sandbox.display()));
        if let Some((uid, gid)) = self.user {
            c.arg(format!("--setuid={uid}"))
                .arg(format!("--setgid={gid}"));
        }
        c.args(["--", "/bin/sh", "-c", cmd]);
        c
    }
}

/// Runs one check; `Err` says why it failed. Command checks run inside the task (`inside`)
/// when it is isolated, else on the host in its sandbox.
pub async fn probe(
    check: &Check,
    sandbox: &Path,
    env: &[(String, String)],
    inside: Option<&InTask>,
) -> Result<(), String> {
    let fut = async {
        match &check.kind {
            Kind::Command(cmd) => {
                let (mut command, procs) = match inside {
                    Some(t) => {
                        let procs: Vec<std::fs::File> = t
                            .cgroup_procs
                            .iter()
                            .filter_map(|p| std::fs::OpenOptions::new().write(true).open(p).ok())
                            .collect();
                        (t.command(cmd, sandbox), procs)
                    }
                    None => {
                        let mut c = std::process::Command::new("/bin/sh");
                        c.arg("-c").arg(cmd).current_dir(sandbox);
                        (c, Vec::new())
                    }
                };
                // The check's processes count against the task's limits.
                crate::sys::prepare_child(&mut command, &procs);
                let st = tokio::process::Command::from(command)
                    .env_clear()
                    .envs(env.iter().map(|(k, v)| (k, v)))
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .kill_on_drop(true)
                    .status()
                    .await
                    .map_err(|e| format!("cannot run the health check command: {e}"))?;
                if st.success() {
                    Ok(())
                } else {
                    Err(format!("health check command failed ({st})"))
                }
            }
            Kind::Tcp { port } => tokio::net::TcpStream::connect(("127.0.0.1", *port))
                .await
                .map(drop)
                .map_err(|e| format!("TCP health check on port {port}: {e}")),
            Kind::Http { port, path } => {
                let mut s = tokio::net::TcpStream::connect(("127.0.0.1", *port))
                    .await
                    .map_err(|e| format!("HTTP health check on port {port}: {e}"))?;
                s.write_all(
                    format!(
                        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: brim-health\r\n\r\n"
                    )
                    .as_bytes(),
                )
                .await
                .map_err(|e| format!("HTTP health check on port {port}: {e}"))?;
                let mut buf = [0u8; 64];
                let mut n = 0;
                while n < 12 {
                    match s.read(&mut buf[n..]).await {
                        Ok(0) => break,
                        Ok(k) => n += k,
                        Err(e) => return Err(format!("HTTP health check on port {port}: {e}")),
                    }
                }
                let line = String::from_utf8_lossy(&buf[..n]);
                let code: u16 = line
                    .split_whitespace()
                    .nth(1)
                    .and_then(|c| c.parse().ok())
                    .ok_or_else(|| {
                        format!("HTTP health check on port {port}: not an HTTP response")
                    })?;
                if (200..400).contains(&code) {
                    Ok(())
                } else {
                    Err(format!(
                        "HTTP health check on port {port}{path}: status {code}"
                    ))
                }
            }
        }
    };
    match tokio::time::timeout(check.timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(format!("health check timed out after {:?}", check.timeout)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hc(kind: HealthCheckKind) -> HealthCheck {
        HealthCheck {
            kind: kind as i32,
            ..Default::default()
        }
    }

    #[test]
    fn validates() {
        let mut h = hc(HealthCheckKind::Command);
        assert!(validate(&h, None)
            .expect_err("no cmd")
            .contains("without a command"));
        h.command = "true".into();
        let c = validate(&h, None).expect("ok");
        assert_eq!(c.interval, Duration::from_secs(10));
        assert_eq!(c.max_failures, 3);
        let h = hc(HealthCheckKind::Tcp);
        assert!(validate(&h, None).expect_err("no port").contains("no port"));
        assert_eq!(
            validate(&h, Some(31000)).expect("ok").kind,
            Kind::Tcp { port: 31000 }
        );
        let mut h = hc(HealthCheckKind::Http);
        h.port = 70000;
        assert!(validate(&h, None).is_err());
        h.port = 8080;
        h.path = "no-slash".into();
        assert!(validate(&h, None).is_err());
        h.path = String::new();
        assert_eq!(
            validate(&h, None).expect("ok").kind,
            Kind::Http {
                port: 8080,
                path: "/".into()
            }
        );
        h.interval_seconds = f64::NAN;
        assert!(validate(&h, None).is_err());
        assert!(validate(&hc(HealthCheckKind::Unspecified), None).is_err());
    }

    fn tracker(grace: u64, max: u32) -> (Tracker, Instant) {
        let t0 = Instant::now();
        let c = Check {
            kind: Kind::Tcp { port: 1 },
            grace: Duration::from_secs(grace),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            max_failures: max,
        };
        (Tracker::new(&c, t0), t0)
    }

    /// Feeds (seconds since start, result) and checks each verdict.
    fn check(grace: u64, max: u32, steps: &[(u64, bool, Verdict)]) {
        let (mut t, t0) = tracker(grace, max);
        for (i, (at, ok, want)) in steps.iter().enumerate() {
            let got = t.record(*ok, t0 + Duration::from_secs(*at));
            assert_eq!(&got, want, "step {i}");
        }
    }

    #[test]
    fn tracks_health() {
        use Verdict::*;
        // failures in the grace period are ignored
        check(
            10,
            2,
            &[
                (1, false, Quiet),
                (2, false, Quiet),
                (3, true, Report(true)),
            ],
        );
        // after a first success the grace period no longer applies
        check(
            10,
            3,
            &[
                (1, true, Report(true)),
                (2, false, Report(false)),
                (3, false, Quiet),
                (4, false, Kill),
            ],
        );
        // consecutive only: a success resets the count
        check(
            0,
            2,
            &[
                (1, false, Report(false)),
                (2, true, Report(true)),
                (3, false, Report(false)),
                (4, false, Kill),
            ],
        );
        check(0, 1, &[(0, false, Kill)]);
        check(
            5,
            2,
            &[
                (1, false, Quiet),
                (6, false, Report(false)),
                (7, false, Kill),
            ],
        );
    }

    #[tokio::test]
    async fn probes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mk = |kind| Check {
            kind,
            grace: Duration::ZERO,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(2),
            max_failures: 1,
        };
        let env = vec![("PATH".to_string(), "/usr/bin:/bin".to_string())];
        probe(
            &mk(Kind::Command("test -d .".into())),
            dir.path(),
            &env,
            None,
        )
        .await
        .expect("command ok");
        assert!(
            probe(&mk(Kind::Command("exit 3".into())), dir.path(), &env, None)
                .await
                .is_err()
        );
        let mut slow = mk(Kind::Command("sleep 5".into()));
        slow.timeout = Duration::from_millis(200);
        let e = probe(&slow, dir.path(), &env, None)
            .await
            .expect_err("timeout");
        assert!(e.contains("timed out"), "{e}");

        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = l.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = [0u8; 512];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let bad = String::from_utf8_lossy(&buf[..n]).starts_with("GET /bad");
                let code = if bad { "503 Busy" } else { "200 OK" };
                let _ = s
                    .write_all(format!("HTTP/1.0 {code}\r\n\r\n").as_bytes())
                    .await;
            }
        });
        probe(&mk(Kind::Tcp { port }), dir.path(), &env, None)
            .await
            .expect("tcp");
        probe(
            &mk(Kind::Http {
                port,
                path: "/ok".into(),
            }),
            dir.path(),
            &env,
            None,
        )
        .await
        .expect("http 200");
        let e = probe(
            &mk(Kind::Http {
                port,
                path: "/bad".into(),
            }),
            dir.path(),
            &env,
            None,
        )
        .await
        .expect_err("503");
        assert!(e.contains("status 503"), "{e}");
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let p = closed.local_addr().expect("addr").port();
        drop(closed);
        assert!(probe(&mk(Kind::Tcp { port: p }), dir.path(), &env, None)
            .await
            .is_err());
    }
}
