//! The hosted frameworks run their tasks in OCI images (issue [H]: "command or image"): a
//! service whose instances and a cron job whose runs read `/etc/brim-image`, a file that
//! exists only in the locally built busybox image (scripts/busybox-image.sh), so they keep
//! running / exit 0 only when crun really ran them in the image's root filesystem. A
//! registry-style image name is refused at `apply`/`add` with the field and the reason. The
//! service's instances also need their `volumes` entry (an allowed host directory, RO).

mod support;

use std::path::Path;
use std::time::Duration;

use support::{busybox_image, state, wait_for, Cluster};

const AGENT: &str = "cpus:2;mem:1024;ports:[31000-31100]";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn services_and_cron_jobs_run_in_images() {
    if !support::can_run_cluster("framework_images")
        || !support::have_tools(
            "framework_images",
            &["crun", "busybox", "tar", "gzip", "sha256sum"],
        )
    {
        return;
    }
    assert!(
        !Path::new("/etc/brim-image").exists(),
        "/etc/brim-image exists on this host: the test could not tell the image's root apart"
    );
    let mut c = Cluster::new();
    // The service also mounts an allowed host directory (`volumes`).
    let shared = c.dir.path().join("shared");
    std::fs::create_dir_all(&shared).unwrap_or_else(|e| panic!("shared dir: {e}"));
    std::fs::write(shared.join("marker"), "shared\n").unwrap_or_else(|e| panic!("marker: {e}"));
    let allow = shared.display().to_string();
    c.start_agent_with_flags(0, AGENT, &["--allowed-host-paths", &allow]);
    c.wait_agents_active(1);
    scenario(&mut c);
}

fn scenario(c: &mut Cluster) {
    let image = busybox_image(c.dir.path(), false);
    let image = image.display().to_string();

    // A registry name is refused with the field and why.
    let bad = c.dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "id = \"bad\"\ncmd = \"true\"\nimage = \"busybox:latest\"\n",
    )
    .unwrap_or_else(|e| panic!("write spec: {e}"));
    let out = c.brim(&["service", "apply", &bad.display().to_string()]);
    let err = text(&out.stderr);
    assert!(
        !out.status.success(),
        "a registry image name must be refused"
    );
    assert!(
        err.contains("image") && err.contains("registry names"),
        "{err}"
    );

    // Two instances that stay up only inside the image, with the host directory mounted.
    // Their command health check passes only when it runs inside the container too: the
    // image's marker, the mounted directory and the container's sandbox path.
    let app = c.dir.path().join("web.toml");
    let shared = c.dir.path().join("shared").display().to_string();
    std::fs::write(
        &app,
        format!(
            "id = \"imgweb\"\ninstances = 2\n\
             cmd = \"cat /etc/brim-image && grep -qx shared /shared/marker && exec sleep 600\"\n\
             cpus = 0.1\nmem = 32\nimage = \"{image}\"\n\
             volumes = [\"{shared}:/shared:ro\"]\n\
             [health_check]\nkind = \"command\"\n\
             command = \"test -f /etc/brim-image && test -f /shared/marker && test \\\"$MESOS_SANDBOX\\\" = /mnt/mesos/sandbox && test \\\"$PWD\\\" = /mnt/mesos/sandbox\"\n\
             interval_seconds = 0.5\ngrace_period_seconds = 20\n"
        ),
    )
    .unwrap_or_else(|e| panic!("write spec: {e}"));
    let out = c.brim(&["service", "apply", &app.display().to_string()]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let ids = wait_for(
        "2 healthy imgweb instances",
        Duration::from_secs(60),
        || {
            let out = c.brim(&["service", "show", "imgweb", "--json"]);
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            let healthy: Vec<String> = v["tasks"]
                .as_array()?
                .iter()
                .filter(|t| t["healthy"] == true)
                .filter_map(|t| t["id"].as_str().map(str::to_string))
                .collect();
            (healthy.len() == 2).then_some(healthy)
        },
    );
    // The master sees them as OCI tasks of the image, still running.
    let st = state(&c.master_addr);
    for id in &ids {
        let t = st["tasks"]
            .as_array()
            .and_then(|ts| ts.iter().find(|t| t["id"] == id.as_str()))
            .unwrap_or_else(|| panic!("task {id} not in /state: {st:#}"));
        assert_eq!(t["state"], "TASK_RUNNING", "{t:#}");
    }

    // A cron job every 2 s whose command fails outside the image.
    let out = c.brim(&[
        "cron",
        "add",
        "imgcat",
        "--schedule",
        "*/2 * * * * *",
        "--image",
        &image,
        "--",
        "cat /etc/brim-image",
    ]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    wait_for("imgcat to succeed twice", Duration::from_secs(60), || {
        let out = c.brim(&["cron", "runs", "imgcat", "--json"]);
        let rs: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).ok()?;
        let ok = rs
            .iter()
            .filter(|r| r["state"] == "succeeded" && r["exit_code"] == 0)
            .count();
        (ok >= 2).then_some(())
    });

    for args in [
        &["cron", "remove", "imgcat"][..],
        &["service", "remove", "imgweb"][..],
    ] {
        let out = c.brim(args);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    }
    wait_for("imgweb's tasks to end", Duration::from_secs(30), || {
        let st = state(&c.master_addr);
        let live = st["tasks"].as_array().is_some_and(|ts| {
            ts.iter()
                .any(|t| t["name"] == "imgweb" && t["state"] == "TASK_RUNNING")
        });
        (!live).then_some(())
    });
}
