//! Issue 11's proof on a real cluster over TLS: a master with a cluster CA, a credentials
//! file and ACLs; an agent certified by the CA, and agents that are not (a foreign CA, a
//! principal without the agent grant); frameworks and operators with tokens.
//!
//! Refused: an agent with a foreign certificate; a wrong token (401 / UNAUTHENTICATED); a
//! role the principal does not own (403 / PERMISSION_DENIED); a task as root; sandbox path
//! traversal and other principals' sandboxes; operator calls without the grant. Every
//! denial is counted in /metrics, and the credentials file is re-read when it changes.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use support::{free_port, http_get, https, wait_for, Proc, BRIM};

const ALICE: &str = "alice-token-0123456789";
const BOB: &str = "bob-token-0123456789ab";
const OPS: &str = "ops-token-0123456789abc";
const CAROL: &str = "carol-token-0123456789";

struct Secure {
    dir: tempfile::TempDir,
    master: String,
    procs: Vec<Proc>,
    tag: String,
}

impl Secure {
    fn pki(&self) -> PathBuf {
        self.dir.path().join("pki")
    }
    fn ca(&self) -> PathBuf {
        self.pki().join("ca.pem")
    }
    fn pair(&self, name: &str) -> (PathBuf, PathBuf) {
        (
            self.pki().join(format!("{name}.pem")),
            self.pki().join(format!("{name}-key.pem")),
        )
    }

    fn spawn(&mut self, name: &str, args: &[String]) {
        let log = self.dir.path().join(format!("{name}.log"));
        let out = std::fs::File::create(&log).expect("log");
        let child = Command::new(BRIM)
            .args(args)
            .env("RUST_LOG", "info")
            .env_remove("BRIM_INSECURE")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("spawn brim");
        self.procs.push(Proc {
            child,
            name: name.into(),
            log,
        });
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }

    /// Starts an agent presenting `cert`/`key` and trusting `ca`.
    fn agent(&mut self, name: &str, cert: &Path, key: &Path, ca: &Path) -> String {
        let port = free_port();
        let args: Vec<String> = vec![
            "agent".into(),
            "--master".into(),
            self.master.clone(),
            "--ip".into(),
            "127.0.0.1".into(),
            "--port".into(),
            port.to_string(),
            "--work-dir".into(),
            self.dir.path().join(name).display().to_string(),
            "--cgroup-name".into(),
            format!("{}-{name}", self.tag),
            "--resources".into(),
            "cpus:2;mem:1024;ports:[31000-31100]".into(),
            "--tls-cert".into(),
            cert.display().to_string(),
            "--tls-key".into(),
            key.display().to_string(),
            "--tls-ca".into(),
            ca.display().to_string(),
        ];
        self.spawn(name, &args);
        format!("127.0.0.1:{port}")
    }

    /// An HTTPS request to the master with a token.
    fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (u16, String) {
        https(
            method,
            &format!("https://{}{path}", self.master),
            &self.ca(),
            None,
            token,
            body,
        )
        .unwrap_or_else(|| panic!("no answer from the master for {method} {path}"))
    }

    fn state(&self) -> serde_json::Value {
        let (code, body) = self.call("GET", "/state", Some(OPS), None);
        assert_eq!(code, 200, "/state: {body}");
        serde_json::from_str(&body).expect("/state is JSON")
    }

    /// `brim <args>` with the cluster CA and `token` (no client certificate).
    fn brim(&self, token: &str, args: &[&str]) -> Output {
        Command::new(BRIM)
            .args(args)
            .env("BRIM_MASTER", &self.master)
            .env("BRIM_TLS_CA", self.ca())
            .env("BRIM_TOKEN", token)
            .env_remove("BRIM_INSECURE")
            .env_remove("BRIM_TLS_CERT")
            .env_remove("BRIM_TLS_KEY")
            .stdin(Stdio::null())
            .output()
            .expect("run brim")
    }
}

impl Drop for Secure {
    fn drop(&mut self) {
        // Agents first (they remove their cgroups), then the master.
        while self.procs.len() > 1 {
            self.procs.pop();
        }
        self.procs.clear();
    }
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn write_credentials(path: &Path, extra: &str) {
    std::fs::write(
        path,
        format!(
            "[[credential]]\nprincipal = \"alice\"\ntoken = \"{ALICE}\"\n\
             [[credential]]\nprincipal = \"bob\"\ntoken = \"{BOB}\"\n\
             [[credential]]\nprincipal = \"ops\"\ntoken = \"{OPS}\"\n{extra}"
        ),
    )
    .expect("write credentials");
}

#[test]
fn tls_authentication_and_authorization_refuse_what_they_should() {
    if !support::can_run_cluster("security") || !support::have_tools("security", &["curl"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut c = Secure {
        master: format!("127.0.0.1:{port}"),
        dir,
        procs: Vec::new(),
        tag: format!("brim-sec-{}", std::process::id()),
    };
    let certs = |dir: &Path, names: &[&str]| {
        let mut args = vec!["certs".to_string(), dir.display().to_string()];
        args.extend(names.iter().map(|n| n.to_string()));
        args.extend(["--host", "127.0.0.1", "--host", "localhost"].map(String::from));
        let out = Command::new(BRIM).args(&args).output().expect("brim certs");
        assert!(out.status.success(), "brim certs: {}", text(&out));
    };
    certs(&c.pki(), &["master", "agent0", "alice", "ops"]);
    let foreign = c.dir.path().join("foreign");
    certs(&foreign, &["agent0"]);

    let creds = c.dir.path().join("credentials.toml");
    write_credentials(&creds, "");
    let acls = c.dir.path().join("acls.toml");
    std::fs::write(
        &acls,
        r#"
        [[principal]]
        name = "agent0"
        agent = true

        [[principal]]
        name = "master"          # the hosted services and cron frameworks
        roles = ["*"]
        users = ["nobody"]

        [[principal]]
        name = "alice"
        roles = ["analytics"]
        users = ["nobody"]

        [[principal]]
        name = "bob"
        roles = ["*"]
        users = ["nobody"]

        [[principal]]
        name = "ops"
        roles = ["*"]
        users = ["*"]
        operator = "*"
        "#,
    )
    .expect("write acls");

    // Plaintext needs --insecure: without TLS flags the master refuses to start.
    let refused = Command::new(BRIM)
        .args(["master", "--port", &free_port().to_string()])
        .env_remove("BRIM_INSECURE")
        .env("HOME", c.dir.path())
        .output()
        .expect("brim master");
    assert!(!refused.status.success(), "{}", text(&refused));
    assert!(text(&refused).contains("--insecure"), "{}", text(&refused));

    let (mcert, mkey) = c.pair("master");
    let master_args: Vec<String> = [
        "master",
        "--ip",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--work-dir",
        &c.dir.path().join("master").display().to_string(),
        "--allocation-interval",
        "200ms",
        "--tls-cert",
        &mcert.display().to_string(),
        "--tls-key",
        &mkey.display().to_string(),
        "--tls-ca",
        &c.ca().display().to_string(),
        "--credentials",
        &creds.display().to_string(),
        "--acls",
        &acls.display().to_string(),
    ]
    .map(String::from)
    .to_vec();
    c.spawn("master", &master_args);
    let health = format!("https://{}/health", c.master);
    wait_for("master /health over TLS", Duration::from_secs(30), || {
        https("GET", &health, &c.ca(), None, None, None).filter(|(code, _)| *code == 200)
    });
    assert_eq!(
        http_get(&c.master, "/health"),
        None,
        "plaintext must not be served"
    );

    // --- agents: only a certificate from the cluster CA, of a principal granted `agent`.
    let (acert, akey) = c.pair("agent0");
    let ca = c.ca();
    let agent_addr = c.agent("agent0", &acert, &akey, &ca);
    let (fcert, fkey) = (foreign.join("agent0.pem"), foreign.join("agent0-key.pem"));
    c.agent("foreign", &fcert, &fkey, &ca);
    let (alice_cert, alice_key) = c.pair("alice");
    c.agent("alice-agent", &alice_cert, &alice_key, &ca);
    let agent_id = wait_for("agent0 active", Duration::from_secs(30), || {
        let s = c.state();
        let agents = s["agents"].as_array()?.clone();
        (agents.len() == 1 && agents[0]["active"] == true)
            .then(|| agents[0]["id"].as_str().map(str::to_string))
            .flatten()
    });
    wait_for(
        "the foreign agent to be refused",
        Duration::from_secs(20),
        || {
            c.log("master")
                .contains("TLS handshake refused")
                .then_some(())
        },
    );
    wait_for(
        "alice's agent to be refused",
        Duration::from_secs(20),
        || {
            c.log("alice-agent")
                .contains("may not register an agent")
                .then_some(())
        },
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        c.state()["agents"].as_array().map(Vec::len),
        Some(1),
        "only the certified agent registers"
    );

    // --- authentication: no credentials or a wrong token → 401 / UNAUTHENTICATED.
    assert_eq!(c.call("GET", "/state", None, None).0, 401);
    assert_eq!(
        c.call("GET", "/state", Some("wrong-token-0123456789"), None)
            .0,
        401
    );
    assert_eq!(c.call("GET", "/metrics", None, None).0, 401);
    assert_eq!(
        c.call("GET", "/health", None, None).0,
        200,
        "/health is public"
    );
    let subscribe = r#"{"type":"SUBSCRIBE","subscribe":{"framework_info":{"user":"nobody","name":"m","roles":["analytics"]}}}"#;
    let (code, body) = c.call(
        "POST",
        "/api/v1/scheduler",
        Some("wrong-token-0123456789"),
        Some(subscribe),
    );
    assert_eq!(code, 401, "mesos subscribe with a wrong token: {body}");
    let wrong = c.brim(
        "wrong-token-0123456789",
        &["run", "--timeout", "10", "--", "true"],
    );
    assert!(!wrong.status.success(), "{}", text(&wrong));
    // `brim run` reads /state before subscribing: the master answers 401 (the gRPC
    // UNAUTHENTICATED of the same check is in master/tests/auth.rs).
    assert!(text(&wrong).contains("HTTP 401"), "{}", text(&wrong));

    // --- authorization: a role the principal does not own → 403 / PERMISSION_DENIED.
    let (code, body) = c.call(
        "POST",
        "/api/v1/scheduler",
        Some(ALICE),
        Some(&subscribe.replace("analytics", "web")),
    );
    assert_eq!(code, 403, "alice subscribing under `web`: {body}");
    let role = c.brim(
        ALICE,
        &["run", "--role", "web", "--timeout", "10", "--", "true"],
    );
    assert!(!role.status.success(), "{}", text(&role));
    assert!(
        text(&role).contains("may not subscribe under role `web`"),
        "{}",
        text(&role)
    );

    // --- task containment: root is refused unless granted; an allowed user runs.
    let root = c.brim(
        ALICE,
        &[
            "run",
            "--role",
            "analytics",
            "--user",
            "root",
            "--timeout",
            "5",
            "--",
            "id -u",
        ],
    );
    assert_eq!(root.status.code(), Some(2), "{}", text(&root));
    assert!(
        text(&root).contains("may not run tasks as user `root`"),
        "{}",
        text(&root)
    );
    let ok = c.brim(
        ALICE,
        &[
            "run",
            "--role",
            "analytics",
            "--user",
            "nobody",
            "--timeout",
            "30",
            "--",
            "echo alice-was-here; id -u",
        ],
    );
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok));
    let out = String::from_utf8_lossy(&ok.stdout).to_string();
    assert!(out.contains("alice-was-here"), "{}", text(&ok));
    assert!(
        !out.lines().any(|l| l.trim() == "0"),
        "the task ran as root: {out}"
    );

    // --- sandboxes: confined to the task's files, and only its owner (or `sandboxes`) reads.
    let s = c.state();
    let task = ["tasks", "completed_tasks"]
        .iter()
        .filter_map(|k| s[*k].as_array())
        .flatten()
        .find(|t| t["principal"] == "alice")
        .cloned()
        .unwrap_or_else(|| panic!("alice's task in /state: {s}"));
    let (fw, tid) = (
        task["framework_id"]
            .as_str()
            .expect("framework id")
            .to_string(),
        task["id"].as_str().expect("task id").to_string(),
    );
    let own = format!("/agents/{agent_id}/sandbox/{fw}/{tid}/stdout");
    let (code, body) = c.call("GET", &own, Some(ALICE), None);
    assert_eq!(code, 200, "alice reads her own task: {body}");
    assert!(body.contains("alice-was-here"), "{body}");
    assert_eq!(
        c.call("GET", &own, Some(BOB), None).0,
        403,
        "bob reads alice's task"
    );
    assert_eq!(
        c.call("GET", &own, Some(OPS), None).0,
        200,
        "ops has `sandboxes`"
    );
    for evil in [
        format!("/agents/{agent_id}/sandbox/{fw}/..%2F..%2F..%2Fetc/stdout"),
        format!("/agents/{agent_id}/sandbox/%2e%2e/%2e%2e/stdout"),
        format!("/agents/{agent_id}/sandbox/{fw}/{tid}/..%2F..%2F..%2F..%2Fetc%2Fpasswd"),
        format!("/agents/{agent_id}/sandbox/{fw}/{tid}/passwd"),
    ] {
        let (code, body) = c.call("GET", &evil, Some(OPS), None);
        assert!(code == 400 || code == 404, "{evil} answered {code}: {body}");
        assert!(!body.contains("root:"), "{evil} leaked a file: {body}");
    }
    let (ocert, okey) = c.pair("ops");
    for evil in [
        format!("/sandbox/{fw}/..%2F..%2F..%2Fetc/stdout"),
        format!("/sandbox/..%2F..%2F..%2F..%2Fetc/{tid}/stdout"),
        format!("/sandbox/{fw}/{tid}/..%2F..%2Fmeta"),
        format!("/sandbox/{fw}/{tid}/%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd"),
    ] {
        let answer = https(
            "GET",
            &format!("https://{agent_addr}{evil}"),
            &c.ca(),
            Some((&ocert, &okey)),
            None,
            None,
        );
        let (code, body) = answer.unwrap_or_else(|| panic!("no answer from the agent for {evil}"));
        assert!(
            code == 400 || code == 404,
            "agent {evil} answered {code}: {body}"
        );
        assert!(
            !body.contains("root:"),
            "agent {evil} leaked a file: {body}"
        );
    }
    // Without a client certificate the agent serves no task data at all.
    let bare = https(
        "GET",
        &format!("https://{agent_addr}/sandbox/{fw}/{tid}/stdout"),
        &c.ca(),
        None,
        None,
        None,
    );
    assert_eq!(bare.map(|(code, _)| code), Some(401));

    // --- operator calls: only with the grant.
    assert_eq!(
        c.call("PUT", "/roles/analytics/weight", Some(ALICE), Some("2"))
            .0,
        403
    );
    let (code, body) = c.call("PUT", "/roles/analytics/weight", Some(OPS), Some("2"));
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        c.call("POST", &format!("/agents/{agent_id}/gone"), Some(BOB), None)
            .0,
        403
    );
    assert_eq!(
        c.call(
            "POST",
            &format!("/frameworks/{fw}/teardown"),
            Some(BOB),
            None
        )
        .0,
        403
    );
    assert_eq!(
        c.call(
            "PUT",
            "/roles/analytics/quota",
            Some(ALICE),
            Some(r#"{"guarantee":"cpus:1"}"#)
        )
        .0,
        403
    );

    // --- every denial is counted.
    let (_, metrics) = c.call("GET", "/metrics", Some(OPS), None);
    for action in [
        "register_role",
        "run_as_user",
        "register_agent",
        "sandboxes",
        "weight",
        "maintenance",
        "teardown",
        "quota",
    ] {
        let line = format!("brim_master_authz_denied_total{{action=\"{action}\"}}");
        assert!(metrics.contains(&line), "{line} missing:\n{metrics}");
    }
    assert!(
        metrics.contains("brim_master_unauthenticated_requests_total"),
        "{metrics}"
    );

    // --- the credentials file is watched: a new token works without a restart.
    assert_eq!(c.call("GET", "/state", Some(CAROL), None).0, 401);
    write_credentials(
        &creds,
        &format!("[[credential]]\nprincipal = \"carol\"\ntoken = \"{CAROL}\"\n"),
    );
    wait_for(
        "carol's token to be accepted",
        Duration::from_secs(10),
        || (c.call("GET", "/state", Some(CAROL), None).0 == 200).then_some(()),
    );
}
