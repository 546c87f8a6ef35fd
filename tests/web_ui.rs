//! The web UI in a real browser: a master and an agent (real processes), a task started with
//! `brim run`, and headless Chromium driven through chromedriver's W3C WebDriver HTTP API.
//! Checks that every page loads and shows the task, that the task filter works, that the
//! task page streams its stdout (through the master's sandbox proxy) and draws usage, and
//! saves screenshots under `target/tmp/` (printed) for a person to look at.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{free_port, http_get, state, wait_for, Cluster};

const MARKER: &str = "hello-from-the-web-ui-test";
/// W3C WebDriver's element reference key.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// chromedriver killed on drop.
struct Driver {
    child: Child,
    base: String,
    http: reqwest::Client,
    rt: tokio::runtime::Runtime,
    session: Option<String>,
}

impl Driver {
    fn start(chromium: &Path) -> Driver {
        let port = free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chromedriver");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("http client");
        let mut d = Driver {
            child,
            base: format!("http://127.0.0.1:{port}"),
            http,
            rt,
            session: None,
        };
        wait_for("chromedriver /status", Duration::from_secs(20), || {
            d.try_call("GET", "/status", None)
                .ok()
                .filter(|v| v["ready"] == true)
        });
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium.display().to_string(),
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1400,1000", "--hide-scrollbars"],
            },
        }}});
        let v = d.call("POST", "/session", Some(caps));
        let id = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no sessionId in {v}"))
            .to_string();
        d.session = Some(id);
        d
    }

    /// One WebDriver command; returns `value`, panics with the driver's message on errors.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.try_call(method, path, body)
            .unwrap_or_else(|e| panic!("webdriver {method} {path}: {e}"))
    }

    fn try_call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("{}{path}", self.base);
        let req = match method {
            "GET" => self.http.get(&url),
            "DELETE" => self.http.delete(&url),
            _ => self
                .http
                .post(&url)
                .json(&body.unwrap_or_else(|| json!({}))),
        };
        self.rt.block_on(async move {
            let resp = req.send().await.map_err(|e| e.to_string())?;
            let status = resp.status();
            let v: Value = resp.json().await.map_err(|e| e.to_string())?;
            if status.is_success() {
                Ok(v["value"].clone())
            } else {
                Err(format!("HTTP {status}: {}", v["value"]))
            }
        })
    }

    fn session_path(&self, rest: &str) -> String {
        format!(
            "/session/{}{rest}",
            self.session.as_deref().unwrap_or("none")
        )
    }

    fn goto(&self, url: &str) {
        self.call(
            "POST",
            &self.session_path("/url"),
            Some(json!({ "url": url })),
        );
    }

    /// Runs `script` (a function body) in the page and returns its result.
    fn js(&self, script: &str) -> Value {
        self.call(
            "POST",
            &self.session_path("/execute/sync"),
            Some(json!({"script": script, "args": []})),
        )
    }

    /// Text of the first element matching `css`, if there is one.
    fn text(&self, css: &str) -> Option<String> {
        let found = self
            .try_call(
                "POST",
                &self.session_path("/element"),
                Some(json!({"using": "css selector", "value": css})),
            )
            .ok()?;
        let id = found[ELEMENT].as_str()?.to_string();
        let text = self
            .try_call(
                "GET",
                &self.session_path(&format!("/element/{id}/text")),
                None,
            )
            .ok()?;
        text.as_str().map(str::to_string)
    }

    /// Waits until the element `css` exists and its text satisfies `ok`; returns the text.
    /// The panic shows the last text seen.
    fn wait_text(&self, what: &str, css: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut last = None;
        while Instant::now() < deadline {
            last = self.text(css);
            if let Some(t) = last.as_deref().filter(|t| ok(t)) {
                return t.to_string();
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("timed out waiting for {what} ({css}); last text: {last:?}");
    }

    /// Clicks the first element matching `css`.
    fn click(&self, css: &str) {
        let found = self.call(
            "POST",
            &self.session_path("/element"),
            Some(json!({"using": "css selector", "value": css})),
        );
        let id = found[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {found}"))
            .to_string();
        self.call(
            "POST",
            &self.session_path(&format!("/element/{id}/click")),
            Some(json!({})),
        );
    }

    /// Saves a PNG screenshot to `path`.
    fn screenshot(&self, path: &Path) {
        let v = self.call("GET", &self.session_path("/screenshot"), None);
        let b64 = v.as_str().expect("screenshot is a base64 string");
        let png = base64_decode(b64);
        assert!(png.starts_with(b"\x89PNG"), "screenshot is not a PNG");
        std::fs::write(path, png).expect("write screenshot");
        eprintln!("web_ui: screenshot saved to {}", path.display());
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if self.session.is_some() {
            let _ = self.try_call("DELETE", &self.session_path(""), None);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Standard base64 (the screenshot encoding); ignores anything outside the alphabet.
fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for v in s.bytes().filter_map(val) {
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

fn artifact_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("web_ui");
    std::fs::create_dir_all(&dir).expect("artifact dir");
    dir
}

/// A `brim run` child killed (and reaped) on drop.
struct RunChild(Child);

impl Drop for RunChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn pages_load_and_show_a_running_task() {
    if !support::can_run_cluster("web_ui")
        || !support::have_tools("web_ui", &["chromium", "chromedriver"])
    {
        return;
    }
    let chromium = support::find_in_path("chromium").expect("chromium on PATH");
    let started = Instant::now();
    let mut c = Cluster::new();
    c.start_agent(0, "cpus:2;mem:1024");
    c.wait_agents_active(1);
    let script =
        format!("echo {MARKER}; i=0; while :; do i=$((i+1)); echo tick $i; sleep 0.3; done");
    let _run = RunChild(c.brim_spawn(&["run", "--name", "web-probe", "--", &script]));
    let master = c.master_addr.clone();
    let task = wait_for("the task to run", Duration::from_secs(30), || {
        let s = state(&master);
        s["tasks"]
            .as_array()?
            .iter()
            .find(|t| {
                t["name"] == "web-probe" && t["state"] == "TASK_RUNNING" && !t["usage"].is_null()
            })
            .cloned()
    });
    let (task_id, agent_id, framework_id) = (
        task["id"].as_str().expect("task id").to_string(),
        task["agent_id"].as_str().expect("agent id").to_string(),
        task["framework_id"]
            .as_str()
            .expect("framework id")
            .to_string(),
    );

    // The sandbox proxy, as the page uses it.
    let path = format!("/agents/{agent_id}/sandbox/{framework_id}/{task_id}/stdout?offset=0");
    let (code, body) = wait_for("stdout through the proxy", Duration::from_secs(10), || {
        http_get(&master, &path).filter(|(_, b)| b.contains(MARKER))
    });
    assert_eq!(code, 200, "{body}");
    let bad = [
        (
            format!("/agents/{agent_id}/sandbox/{framework_id}/{task_id}/passwd"),
            400,
        ),
        (
            format!("/agents/nope/sandbox/{framework_id}/{task_id}/stdout"),
            404,
        ),
        (
            format!("/agents/{agent_id}/sandbox/{framework_id}/{task_id}/stdout?offset=-1"),
            400,
        ),
    ];
    for (p, want) in bad {
        let (code, body) = http_get(&master, &p).expect("master reachable");
        assert_eq!(code, want, "{p}: {body}");
    }

    let d = Driver::start(&chromium);
    let base = format!("http://{master}");
    let artifacts = artifact_dir();

    // Overview: the agent and the running task are counted.
    d.goto(&format!("{base}/#/"));
    let cards = d.wait_text("overview cards", "#overview-cards", |t| {
        t.contains("TASKS RUNNING") || t.contains("Tasks running")
    });
    assert!(
        cards.contains("Revocable") || cards.contains("REVOCABLE"),
        "{cards}"
    );
    d.wait_text("the task in recent tasks", "#overview-tasks", |t| {
        t.contains(&task_id)
    });
    d.screenshot(&artifacts.join("overview.png"));

    // Agents and frameworks.
    d.goto(&format!("{base}/#/agents"));
    let agents = d.wait_text("agents table", "#agents-table", |t| t.contains("connected"));
    assert!(agents.contains("rack:r0"), "{agents}");
    // The agent's name links to its tasks.
    d.click("#agents-table a");
    d.wait_text(
        "the agent's tasks",
        &format!("tr[data-task-id=\"{task_id}\"]"),
        |t| t.contains("web-probe"),
    );
    let filter_value = d.js("return document.getElementById('task-text-filter').value;");
    assert_eq!(filter_value, json!(agent_id), "filtered by the agent's id");
    d.goto(&format!("{base}/#/frameworks"));
    d.wait_text("frameworks table", "#frameworks-table", |t| {
        t.contains("brim-run")
    });

    // Tasks: the task is listed; the text filter hides it and brings it back.
    d.goto(&format!("{base}/#/tasks"));
    let row = format!("tr[data-task-id=\"{task_id}\"]");
    let text = d.wait_text("the task row", &row, |t| t.contains("RUNNING"));
    assert!(text.contains("web-probe"), "{text}");
    let filter = |q: &str| {
        d.js(&format!(
            "const i = document.getElementById('task-text-filter'); i.value = {}; \
             i.dispatchEvent(new Event('input')); return true;",
            json!(q)
        ));
    };
    filter("no-such-task-anywhere");
    d.wait_text("the filter to hide the task", "#tasks-body", |t| {
        t.contains("No tasks match")
    });
    filter("web-pro");
    d.wait_text("the filter to show the task", &row, |t| {
        t.contains("web-probe")
    });
    d.js(
        "const s = document.getElementById('task-state-filter'); s.value = 'terminal'; \
          s.dispatchEvent(new Event('change')); return true;",
    );
    d.wait_text("the state filter to hide the task", "#tasks-body", |t| {
        t.contains("No tasks match")
    });

    // The task page: stdout streamed through the proxy, usage graphs drawn.
    d.goto(&format!("{base}/#/task/{task_id}"));
    d.wait_text("stdout on the task page", "#task-stdout", |t| {
        t.contains(MARKER) && t.contains("tick")
    });
    d.wait_text("the memory reading", "#chart-mem-now", |t| t.contains('B'));
    d.wait_text("the cpu reading", "#chart-cpu-now", |t| t.contains('%'));
    let details = d.text("#task-details").unwrap_or_default();
    assert!(
        details.contains("RUNNING") && details.contains("brim-run"),
        "{details}"
    );
    let drawn = d.js("const c = document.getElementById('chart-mem'); \
                      return c.width > 0 && c.height > 0;");
    assert_eq!(drawn, json!(true), "memory chart canvas has a size");
    // Tall enough to show the graphs and the sandbox panes in one picture.
    d.call(
        "POST",
        &d.session_path("/window/rect"),
        Some(json!({"width": 1400, "height": 1500})),
    );
    d.screenshot(&artifacts.join("task.png"));

    // Slack: explains oversubscription and lists the agent with its revocable columns.
    d.goto(&format!("{base}/#/slack"));
    let notice = d.wait_text("slack notice", "#slack-notice", |t| !t.is_empty());
    assert!(notice.contains("oversubscription"), "{notice}");
    d.wait_text("slack table", "#slack-table", |t| {
        t.contains("Revocable") || t.contains("REVOCABLE")
    });
    d.screenshot(&artifacts.join("slack.png"));

    drop(d);
    c.cleanup_cgroups();
    eprintln!("web_ui: done in {:?}", started.elapsed());
}

#[test]
fn base64_decodes_what_webdriver_sends() {
    assert_eq!(base64_decode("aGVsbG8="), b"hello");
    assert_eq!(base64_decode("iVBORw0KGgo="), b"\x89PNG\r\n\x1a\n");
    assert_eq!(base64_decode(""), b"");
}
