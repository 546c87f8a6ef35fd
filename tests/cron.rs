//! End-to-end: the cron framework hosted by a real `brim master`, driven with `brim cron`.
//! A seconds-granularity job runs repeatedly with exit codes in its history; a failing job is
//! retried; `forbid` skips fires while a run is active; bad expressions are rejected with
//! the field and the problem; removal.

mod support;

use std::time::{Duration, Instant};

use support::{wait_for, Cluster};

fn runs(c: &Cluster, name: &str) -> Vec<serde_json::Value> {
    let out = c.brim(&["cron", "runs", name, "--json"]);
    assert!(
        out.status.success(),
        "brim cron runs failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout)
        .unwrap_or_else(|e| panic!("runs JSON: {e}"))
}

fn add(c: &Cluster, args: &[&str]) {
    let mut all = vec!["cron", "add"];
    all.extend_from_slice(args);
    let out = c.brim(&all);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("added; next run"),
        "{all:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn cron_jobs() {
    if !support::can_run_cluster("cron_jobs") {
        return;
    }
    let mut c = Cluster::new();
    c.start_agent(0, "cpus:2;mem:1024");
    c.wait_agents_active(1);
    let started = Instant::now();
    jobs(&c);
    eprintln!("cron_jobs took {:?}", started.elapsed());
}

fn jobs(c: &Cluster) {
    // Invalid input: every bad field, with what is wrong.
    let out = c.brim(&[
        "cron",
        "add",
        "bad",
        "--schedule",
        "*/0 * * * *",
        "--tz",
        "Nowhere/City",
        "--",
        "true",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a bad job must be rejected");
    for want in [
        "--schedule: minute field `*/0`: step must be at least 1",
        "--tz: unknown time zone `Nowhere/City`",
    ] {
        assert!(err.contains(want), "`{err}` should mention `{want}`");
    }
    let out = c.brim(&["cron", "add", "bad", "--schedule", "* * *", "--", "true"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("expected 5 fields"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = c.brim(&[
        "cron",
        "add",
        "bad",
        "--schedule",
        "* * * * *",
        "--concurrency",
        "sometimes",
        "--",
        "true",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("use allow, forbid or replace"));

    // Every 2 seconds (6-field form), in a time zone: runs with exit codes.
    add(
        c,
        &[
            "tick",
            "--schedule",
            "*/2 * * * * *",
            "--tz",
            "Europe/Paris",
            "--",
            "echo tick",
        ],
    );
    // Fails every time; one retry per fire.
    add(
        c,
        &[
            "flaky",
            "--schedule",
            "*/3 * * * * *",
            "--retries",
            "1",
            "--",
            "exit 3",
        ],
    );
    // Runs longer than its period: forbid skips fires while it runs.
    add(
        c,
        &[
            "slow",
            "--schedule",
            "* * * * * *",
            "--concurrency",
            "forbid",
            "--",
            "sleep 3",
        ],
    );

    wait_for("tick to succeed twice", Duration::from_secs(30), || {
        let ok = runs(c, "tick")
            .iter()
            .filter(|r| r["state"] == "succeeded" && r["exit_code"] == 0)
            .count();
        (ok >= 2).then_some(())
    });
    wait_for(
        "flaky to fail and be retried",
        Duration::from_secs(30),
        || {
            let rs = runs(c, "flaky");
            let failed = |attempt: u32| {
                rs.iter().any(|r| {
                    r["fire"] == 1
                        && r["attempt"] == attempt
                        && r["state"] == "failed"
                        && r["exit_code"] == 3
                })
            };
            let no_third = !rs.iter().any(|r| r["attempt"] == 3);
            (failed(1) && failed(2) && no_third).then_some(())
        },
    );
    wait_for("slow to skip a fire", Duration::from_secs(30), || {
        let rs = runs(c, "slow");
        let skipped = rs.iter().any(|r| {
            r["state"] == "skipped" && r["message"].as_str().is_some_and(|m| m.contains("forbid"))
        });
        let active = rs
            .iter()
            .filter(|r| r["state"] == "running" || r["state"] == "queued")
            .count();
        assert!(active <= 1, "forbid allowed {active} active runs: {rs:?}");
        skipped.then_some(())
    });

    let out = c.brim(&["cron", "runs", "tick"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("succeeded") && text.contains("CET") || text.contains("CEST"),
        "{text}"
    );
    let out = c.brim(&["cron", "list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        ["tick", "flaky", "slow", "*/2 * * * * *"]
            .iter()
            .all(|w| text.contains(w)),
        "{text}"
    );

    for name in ["tick", "flaky", "slow"] {
        let out = c.brim(&["cron", "remove", name]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = c.brim(&["cron", "list", "--json"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
    let out = c.brim(&["cron", "runs", "tick"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no cron job named `tick`"));
}
