//! End-to-end: the services framework hosted by a real `brim master`, driven with `brim
//! service` as an operator would. A service of 3 instances spread over two racks; one task
//! killed and replaced (with backoff); a rolling restart that never drops below
//! `instances − max_unavailable` running; scale down; a master restart that keeps the
//! service and its tasks; invalid specs and impossible constraints explained; removal.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use support::{state, wait_for, Cluster};

const AGENT: &str = "cpus:2;mem:1024;ports:[31000-31100]";

fn json_of(out: &std::process::Output, what: &str) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{what} printed no JSON: {e}"))
}

fn show(c: &Cluster, id: &str) -> serde_json::Value {
    json_of(
        &c.brim(&["service", "show", id, "--json"]),
        "brim service show",
    )
}

/// Task ids of `svc`'s tasks the master reports RUNNING.
fn running_in_master(c: &Cluster, svc: &str) -> BTreeSet<String> {
    state(&c.master_addr)["tasks"]
        .as_array()
        .map(|ts| {
            ts.iter()
                .filter(|t| t["name"] == svc && t["state"] == "TASK_RUNNING")
                .filter_map(|t| t["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn healthy_ids(v: &serde_json::Value) -> Vec<String> {
    v["tasks"]
        .as_array()
        .map(|ts| {
            ts.iter()
                .filter(|t| t["healthy"] == true)
                .filter_map(|t| t["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// SIGKILLs the processes of task `task_id` (found by `BRIM_TASK_ID` in their environment).
fn kill_task_processes(task_id: &str) -> usize {
    let needle = format!("BRIM_TASK_ID={task_id}\0");
    let mut killed = 0;
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(env) = std::fs::read(e.path().join("environ")) else {
            continue;
        };
        if env.windows(needle.len()).any(|w| w == needle.as_bytes()) {
            // SAFETY: kill(2) on a pid read from /proc; at worst it is gone (ESRCH).
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
            killed += 1;
        }
    }
    killed
}

fn write(c: &Cluster, name: &str, text: &str) -> String {
    let p = c.dir.path().join(name);
    std::fs::write(&p, text).unwrap_or_else(|e| panic!("write {name}: {e}"));
    p.display().to_string()
}

#[test]
fn services_lifecycle() {
    if !support::can_run_cluster("services_lifecycle") {
        return;
    }
    let mut c = Cluster::new();
    c.start_agent(0, AGENT);
    c.start_agent(1, AGENT);
    c.wait_agents_active(2);
    let started = Instant::now();
    lifecycle(&mut c);
    eprintln!("services_lifecycle took {:?}", started.elapsed());
}

fn lifecycle(c: &mut Cluster) {
    let app = write(
        c,
        "web.toml",
        r#"
id = "web"
instances = 3
cmd = "sleep 1000"
cpus = 0.1
mem = 16
ports = 1
constraints = ["rack:GROUP_BY"]
[upgrade]
max_unavailable = 1
max_surge = 1
[backoff]
initial_seconds = 0.5
"#,
    );
    let out = c.brim(&["service", "apply", &app]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("service web created (version 1)"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Three healthy instances, spread 2/1 over the two racks.
    let v = wait_for("3 healthy web instances", Duration::from_secs(30), || {
        let v = show(c, "web");
        (v["healthy"] == 3).then_some(v)
    });
    let racks: BTreeSet<String> = v["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["agent_id"].as_str().map(str::to_string))
        .collect();
    assert_eq!(racks.len(), 2, "GROUP_BY rack should use both agents: {v}");
    assert_eq!(running_in_master(c, "web").len(), 3);

    // Kill one instance's process: it fails, and a replacement comes up after the backoff.
    let before = healthy_ids(&v);
    let victim = before[0].clone();
    assert!(
        kill_task_processes(&victim) > 0,
        "no process found for {victim}"
    );
    let v = wait_for(
        "the killed instance replaced",
        Duration::from_secs(30),
        || {
            let v = show(c, "web");
            let ids = healthy_ids(&v);
            (v["healthy"] == 3 && !ids.contains(&victim)).then_some(v)
        },
    );
    let events = v["events"].to_string();
    assert!(
        events.contains(&format!("task {victim}"))
            && events.contains("TASK_FAILED")
            && events.contains("relaunching in 0.5s"),
        "{events}"
    );

    // Rolling restart: never fewer than instances - max_unavailable = 2 running.
    let out = c.brim(&["service", "restart", "web"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut min_running = usize::MAX;
    let mut max_live = 0;
    wait_for(
        "the rolling restart to finish",
        Duration::from_secs(40),
        || {
            min_running = min_running.min(running_in_master(c, "web").len());
            let v = show(c, "web");
            let tasks = v["tasks"].as_array().cloned().unwrap_or_default();
            max_live = max_live.max(tasks.iter().filter(|t| t["killing"] == false).count());
            let done = tasks.len() == 3
                && tasks
                    .iter()
                    .all(|t| t["version"] == 2 && t["healthy"] == true);
            done.then_some(())
        },
    );
    assert!(
        min_running >= 2,
        "running instances dropped to {min_running} during the restart"
    );
    assert!(
        max_live <= 4,
        "{max_live} live instances: more than instances + max_surge"
    );

    // Scale down to 1.
    let out = c.brim(&["service", "scale", "web", "1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kept = wait_for("web scaled to 1", Duration::from_secs(20), || {
        let running = running_in_master(c, "web");
        (running.len() == 1).then_some(running)
    });

    // Master restart: the service and its running task survive (no relaunch).
    if let Some(mut m) = c.master.take() {
        m.kill9();
    }
    c.start_master();
    c.wait_agents_active(2);
    wait_for(
        "web back after the master restart",
        Duration::from_secs(30),
        || {
            let out = c.brim(&["service", "show", "web", "--json"]);
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            let ids: BTreeSet<String> = healthy_ids(&v).into_iter().collect();
            (ids == kept && running_in_master(c, "web") == kept).then_some(())
        },
    );

    // Bad specs: the file, the field and the problem.
    let bad = write(
        c,
        "bad.toml",
        "id = \"Bad_Id\"\ncmd = \"true\"\ncpus = 0\nconstraints = [\"rack:LIKE:(\"]\n",
    );
    let out = c.brim(&["service", "apply", &bad]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a bad spec must fail");
    for want in [
        "bad.toml: invalid service spec",
        "id: `Bad_Id` may only contain",
        "cpus: must be in (0, 1024], got 0",
        "constraints[0]: `rack:LIKE:(`: invalid regex",
    ] {
        assert!(err.contains(want), "`{err}` should mention `{want}`");
    }
    let typo = write(c, "typo.toml", "id = \"x\"\ncmd = \"true\"\ninstnces = 2\n");
    let out = c.brim(&["service", "apply", &typo]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("line 3") && err.contains("unknown field `instnces`"),
        "{err}"
    );

    // Impossible constraints: said at apply time, and by `show` while it waits.
    let pinned = write(
        c,
        "pinned.toml",
        "id = \"pinned\"\ncmd = \"sleep 100\"\nconstraints = [\"rack:LIKE:zz\"]\n",
    );
    let out = c.brim(&["service", "apply", &pinned]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success()
            && err.contains("warning: no agent satisfies the constraints")
            && err.contains("rack:LIKE:zz: rack=r0 does not match"),
        "{err}"
    );
    let out = c.brim(&["service", "show", "pinned"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("waiting:    1 instance(s) not placed: no agent satisfies"),
        "{text}"
    );
    let unique = write(c, "unique.toml", "id = \"uniq\"\ninstances = 3\ncmd = \"sleep 100\"\nmem = 8\nconstraints = [\"rack:UNIQUE\"]\n");
    let out = c.brim(&["service", "apply", &unique]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("rack:UNIQUE allows at most 2 instances") && err.contains("r0, r1"),
        "{err}"
    );
    wait_for(
        "2 of 3 uniq instances, with the reason for the third",
        Duration::from_secs(30),
        || {
            let v = show(c, "uniq");
            let waiting = v["waiting"].as_str().unwrap_or("").to_string();
            (v["healthy"] == 2 && waiting.contains("rack:UNIQUE allows at most 2")).then_some(())
        },
    );

    // Health checks: an instance counts as healthy only once the agent's check passes.
    let checked = write(
        c,
        "checked.toml",
        "id = \"checked\"\ninstances = 1\ncmd = \"sleep 5; touch ready; sleep 600\"\nmem = 8\n\
         [health_check]\nkind = \"command\"\ncommand = \"test -f ready\"\n\
         interval_seconds = 0.5\ngrace_period_seconds = 30\n",
    );
    let out = c.brim(&["service", "apply", &checked]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let running = wait_for(
        "the checked instance RUNNING",
        Duration::from_secs(30),
        || {
            let v = show(c, "checked");
            let tasks = v["tasks"].as_array().cloned().unwrap_or_default();
            tasks
                .iter()
                .any(|t| t["state"] == "TASK_RUNNING")
                .then_some(v)
        },
    );
    assert_eq!(
        running["healthy"], 0,
        "not healthy before its check passes: {running}"
    );
    wait_for(
        "the checked instance healthy",
        Duration::from_secs(30),
        || (show(c, "checked")["healthy"] == 1).then_some(()),
    );

    // Remove: every instance stops, then the service is gone.
    for id in ["web", "pinned", "uniq", "checked"] {
        let out = c.brim(&["service", "remove", id]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    wait_for("services removed", Duration::from_secs(30), || {
        let list = json_of(&c.brim(&["service", "list", "--json"]), "brim service list");
        (list.as_array().is_some_and(Vec::is_empty)
            && running_in_master(c, "web").is_empty()
            && running_in_master(c, "uniq").is_empty())
        .then_some(())
    });
    let out = c.brim(&["service", "show", "web"]);
    assert!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("no service named `web`")
    );
}
