//! Multi-process cluster harness: starts the real `brim` binary as master and agents on
//! loopback, each with its own work dir, port and cgroup root, and talks to them over HTTP.
#![allow(dead_code, unreachable_pub)]

pub mod probe;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BRIM: &str = env!("CARGO_BIN_EXE_brim");

/// The clusters of these tests speak plaintext (they poll HTTP with [`http_get`]); brim
/// refuses that without being told. tests/security.rs covers the TLS path.
pub const INSECURE: (&str, &str) = ("BRIM_INSECURE", "1");

/// Returns false (after printing why) when this machine cannot run cluster tests; panics
/// instead when `BRIM_TEST_REQUIRE_ALL=1`, so CI never silently skips.
pub fn can_run_cluster(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let cgroups = Path::new("/sys/fs/cgroup").exists();
    if root && cgroups {
        return true;
    }
    let why = format!("{test}: skipped: needs root and cgroups (root={root}, cgroupfs={cgroups})");
    if std::env::var("BRIM_TEST_REQUIRE_ALL").as_deref() == Ok("1") {
        panic!("{why}, and BRIM_TEST_REQUIRE_ALL=1 forbids skipping");
    }
    eprintln!("{why}");
    false
}

pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

/// Plain HTTP/1.0 GET on loopback; returns (status, body).
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// An HTTPS request with curl, verifying the server with `ca` and presenting `identity`
/// (certificate, key) and `token` when given; returns (status, body), `None` when no HTTP
/// answer came (refused connection or TLS handshake).
pub fn https(
    method: &str,
    url: &str,
    ca: &Path,
    identity: Option<(&Path, &Path)>,
    token: Option<&str>,
    body: Option<&str>,
) -> Option<(u16, String)> {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "--max-time",
        "10",
        "-X",
        method,
        "-w",
        "\n%{http_code}",
    ])
    .arg("--cacert")
    .arg(ca);
    if let Some((cert, key)) = identity {
        cmd.arg("--cert").arg(cert).arg("--key").arg(key);
    }
    if let Some(t) = token {
        cmd.arg("-H").arg(format!("Authorization: Bearer {t}"));
    }
    if let Some(b) = body {
        cmd.args(["-H", "Content-Type: application/json", "--data-binary", b]);
    }
    let out = cmd.arg(url).stdin(Stdio::null()).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n')?;
    let code: u16 = code.trim().parse().ok()?;
    (code != 0).then(|| (code, body.to_string()))
}

pub fn state(master: &str) -> serde_json::Value {
    let (code, body) = http_get(master, "/state").expect("master /state reachable");
    assert_eq!(code, 200, "/state returned {code}: {body}");
    serde_json::from_str(&body).expect("/state is JSON")
}

/// Polls `f` until it returns Some or `timeout` passes.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A child process killed on drop.
pub struct Proc {
    pub child: Child,
    pub name: String,
    pub log: PathBuf,
}

impl Proc {
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // SIGTERM first so agents clean their cgroups, then make sure.
        // SAFETY: kill(2) on our own child's pid with a valid signal number.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub master_addr: String,
    pub master_port: u16,
    pub master: Option<Proc>,
    pub agents: Vec<Proc>,
    pub agent_addrs: Vec<String>,
    pub tag: String,
}

/// Fast timeouts so agent loss is seen in seconds.
pub const MASTER_FLAGS: &[&str] = &[
    "--agent-heartbeat-interval",
    "500ms",
    "--max-missed-heartbeats",
    "4",
    "--allocation-interval",
    "200ms",
];

/// For tests that restart agents: heartbeats as fast, but the master waits 30 s before it
/// gives up on an agent, so a restart within seconds never marks it gone.
pub const PATIENT_MASTER_FLAGS: &[&str] = &[
    "--agent-heartbeat-interval",
    "500ms",
    "--max-missed-heartbeats",
    "60",
    "--allocation-interval",
    "200ms",
];

impl Cluster {
    pub fn new() -> Cluster {
        Cluster::new_with_master_flags(MASTER_FLAGS)
    }

    fn spawn(&self, name: &str, args: &[String]) -> Proc {
        let log = self.dir.path().join(format!("{name}.log"));
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = Command::new(BRIM)
            .args(args)
            .env("RUST_LOG", "info")
            .env(INSECURE.0, INSECURE.1)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn brim");
        Proc {
            child,
            name: name.into(),
            log,
        }
    }

    pub fn start_master(&mut self) {
        self.start_master_with_flags(MASTER_FLAGS);
    }

    /// Starts agent `i` (reusing its work dir and port if it ran before).
    pub fn start_agent(&mut self, i: usize, resources: &str) {
        self.start_agent_with_flags(i, resources, &[]);
    }

    /// Like [`Cluster::start_agent`], with extra `brim agent` flags.
    pub fn start_agent_with_flags(&mut self, i: usize, resources: &str, extra: &[&str]) {
        let port = if i < self.agent_addrs.len() {
            self.agent_addrs[i]
                .rsplit(':')
                .next()
                .and_then(|p| p.parse().ok())
                .unwrap_or_else(free_port)
        } else {
            free_port()
        };
        let args: Vec<String> = vec![
            "agent".into(),
            "--master".into(),
            self.master_addr.clone(),
            "--ip".into(),
            "127.0.0.1".into(),
            "--port".into(),
            port.to_string(),
            "--work-dir".into(),
            self.dir
                .path()
                .join(format!("agent{i}"))
                .display()
                .to_string(),
            "--cgroup-name".into(),
            format!("{}-a{i}", self.tag),
            "--resources".into(),
            resources.into(),
            "--attributes".into(),
            format!("rack:r{i}"),
            // Tests run as root and their frameworks as root.
            "--allow-root-tasks".into(),
        ];
        let args: Vec<String> = args
            .into_iter()
            .chain(extra.iter().map(|s| s.to_string()))
            .collect();
        let p = self.spawn(&format!("agent{i}"), &args);
        let addr = format!("127.0.0.1:{port}");
        if i < self.agents.len() {
            self.agents[i] = p;
            self.agent_addrs[i] = addr;
        } else {
            self.agents.push(p);
            self.agent_addrs.push(addr);
        }
    }

    pub fn wait_agents_active(&self, n: usize) -> serde_json::Value {
        let addr = self.master_addr.clone();
        wait_for(
            &format!("{n} active agents"),
            Duration::from_secs(30),
            || {
                let s = state(&addr);
                let active = s["agents"]
                    .as_array()
                    .map_or(0, |a| a.iter().filter(|x| x["active"] == true).count());
                (active == n).then_some(s)
            },
        )
    }

    /// Kills agent `i` with SIGKILL and waits until the master has marked it inactive, so
    /// that a following [`Cluster::wait_agents_active`] counts its restart, not the dead
    /// registration (a `brim run` in between would find no agent and give up).
    pub fn kill9_agent(&mut self, i: usize) {
        let addr = self.master_addr.clone();
        let active = |s: &serde_json::Value| {
            s["agents"]
                .as_array()
                .map_or(0, |a| a.iter().filter(|x| x["active"] == true).count())
        };
        let before = active(&state(&addr));
        self.agents[i].kill9();
        wait_for(
            "the master to see the killed agent go",
            Duration::from_secs(30),
            || (active(&state(&addr)) < before).then_some(()),
        );
    }

    /// Runs `brim <args>` against this cluster and returns its output.
    pub fn brim(&self, args: &[&str]) -> Output {
        Command::new(BRIM)
            .args(args)
            .env("BRIM_MASTER", &self.master_addr)
            .env(INSECURE.0, INSECURE.1)
            .stdin(Stdio::null())
            .output()
            .expect("run brim")
    }

    pub fn brim_spawn(&self, args: &[&str]) -> Child {
        Command::new(BRIM)
            .args(args)
            .env("BRIM_MASTER", &self.master_addr)
            .env(INSECURE.0, INSECURE.1)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn brim")
    }

    pub fn dump_logs(&self) {
        if let Some(m) = &self.master {
            eprintln!("--- master log ---\n{}", m.log_text());
        }
        for a in &self.agents {
            eprintln!("--- {} log ---\n{}", a.name, a.log_text());
        }
    }
}

impl Cluster {
    /// Kills whatever is left in this cluster's cgroups (an agent killed with -9 leaves its
    /// tasks behind) and removes the cgroups.
    pub fn cleanup_cgroups(&self) {
        let roots = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"];
        let mut dirs = Vec::new();
        for root in roots {
            let Ok(entries) = std::fs::read_dir(root) else {
                continue;
            };
            for e in entries.flatten() {
                let p = e.path();
                if p.join("cgroup.procs").exists() || p.is_dir() {
                    dirs.push(p);
                }
            }
        }
        for hierarchy in dirs {
            let Ok(entries) = std::fs::read_dir(&hierarchy) else {
                continue;
            };
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(&self.tag) {
                    kill_tree(&e.path());
                }
            }
        }
        // The agents' eBPF map pins (`/sys/fs/bpf/brim/<cgroup name>`) outlive them by
        // design (a restarted agent keeps counting); a finished test's are garbage.
        if let Ok(entries) = std::fs::read_dir("/sys/fs/bpf/brim") {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(&self.tag) {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    }
}

fn kill_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.path().is_dir() {
                kill_tree(&e.path());
            }
        }
    }
    if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            // SAFETY: kill(2) with a pid read from a cgroup this test created; worst case the
            // process is already gone and kill returns ESRCH.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
    for _ in 0..20 {
        if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Where `tool` is on `PATH`, if anywhere.
/// A python3 for which `import_line` succeeds: `$BRIM_PYTHON`, then the system python
/// (where `.ci/run` installs pymesos, kazoo and protobuf), then `python3` on PATH.
pub fn python_with(import_line: &str) -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Ok(p) = std::env::var("BRIM_PYTHON") {
        candidates.push(p.into());
    }
    candidates.push("/usr/bin/python3".into());
    candidates.push("python3".into());
    candidates.into_iter().find(|py| {
        Command::new(py)
            .args(["-c", import_line])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// Runs `py -B script args…` (no bytecode written into the tree) with a deadline, killing
/// it when the deadline passes; returns (exit success, stdout, stderr).
pub fn run_python(
    py: &Path,
    script: &str,
    args: &[&str],
    deadline: Duration,
) -> (bool, String, String) {
    let mut child = Command::new(py)
        .arg("-B")
        .arg(script)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn python");
    // Drained while it runs: a chatty script must not block on a full pipe (64 KiB) and
    // look like a hang.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_string(&mut text);
            }
            text
        })
    };
    let out_reader = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err_reader = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait python") {
            break Some(s);
        }
        if start.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = out_reader.join().unwrap_or_default();
    let mut err = err_reader.join().unwrap_or_default();
    if status.is_none() {
        err.push_str(&format!("\n(killed after {deadline:?})"));
    }
    (status.is_some_and(|s| s.success()), out, err)
}

pub fn find_in_path(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
}

/// Returns false (after printing why) when a program the test drives (chromium, tmux, ...)
/// is not installed; panics instead under `BRIM_TEST_REQUIRE_ALL=1`, like [`can_run_cluster`].
pub fn have_tools(test: &str, tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| find_in_path(t).is_none())
        .collect();
    if missing.is_empty() {
        return true;
    }
    let why = format!(
        "{test}: skipped: {} not installed (apt-get install {})",
        missing.join(", "),
        missing.join(" ")
    );
    if std::env::var("BRIM_TEST_REQUIRE_ALL").as_deref() == Ok("1") {
        panic!("{why}, and BRIM_TEST_REQUIRE_ALL=1 forbids skipping");
    }
    eprintln!("{why}");
    false
}

impl Cluster {
    /// Like [`Cluster::new`] with other master flags (e.g. a longer agent timeout for tests
    /// that restart agents).
    pub fn new_with_master_flags(flags: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let tag = format!("brim-it-{}-{}", std::process::id(), port);
        let mut c = Cluster {
            dir,
            master_addr: format!("127.0.0.1:{port}"),
            master_port: port,
            master: None,
            agents: Vec::new(),
            agent_addrs: Vec::new(),
            tag,
        };
        c.start_master_with_flags(flags);
        c
    }

    /// Starts (or restarts) the master with `flags` instead of [`MASTER_FLAGS`].
    pub fn start_master_with_flags(&mut self, flags: &[&str]) {
        let mut args: Vec<String> = vec![
            "master".into(),
            "--ip".into(),
            "127.0.0.1".into(),
            "--port".into(),
            self.master_port.to_string(),
            "--work-dir".into(),
            self.dir.path().join("master").display().to_string(),
        ];
        args.extend(flags.iter().map(|s| s.to_string()));
        let p = self.spawn("master", &args);
        self.master = Some(p);
        let addr = self.master_addr.clone();
        wait_for("master /health", Duration::from_secs(30), || {
            http_get(&addr, "/health").filter(|(c, _)| *c == 200)
        });
    }
}

impl Drop for Cluster {
    /// Stops agents (they kill their tasks and remove their cgroups), then the master, then
    /// removes whatever an agent killed with -9 left behind, so no test leaks cgroups.
    ///
    /// When the test is failing (panicking), the master's and agents' logs are printed first,
    /// so scenarios need no wrapper of their own.
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        self.agents.clear();
        self.master.take();
        self.cleanup_cgroups();
    }
}

/// Builds the test busybox image in `dir` with scripts/busybox-image.sh: an OCI image layout
/// directory, or with `docker` a `docker save` archive. Needs busybox-static, tar, gzip.
pub fn busybox_image(dir: &Path, docker: bool) -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/busybox-image.sh");
    let out = if docker {
        dir.join("busybox.tar")
    } else {
        dir.join("busybox-oci")
    };
    let mut cmd = Command::new(script);
    if docker {
        cmd.arg("--docker");
    }
    let st = cmd
        .arg(&out)
        .status()
        .expect("run scripts/busybox-image.sh");
    assert!(st.success(), "building the busybox image failed");
    out
}
