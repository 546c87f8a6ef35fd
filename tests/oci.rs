//! OCI containers with the real `brim` binary and crun (issue [G] part 1's proof): a task
//! from a locally built busybox image runs in the image's root filesystem, is limited (a
//! memory hog is killed with CONTAINER_LIMITATION_MEMORY), is measured by eBPF like native
//! tasks, survives an agent `kill -9`, and leaves nothing behind; bad images and a missing
//! runtime fail with clear TASK_FAILED reasons and write nothing outside the container.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::{busybox_image, http_get, state, wait_for, Cluster};

const RES: &str = "cpus:2;mem:1024;ports:[31000-31099]";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The task (current or completed) whose name contains `name`.
fn task(c: &Cluster, name: &str) -> Option<serde_json::Value> {
    let s = state(&c.master_addr);
    s["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(s["completed_tasks"].as_array().into_iter().flatten())
        .find(|t| t["name"].as_str().is_some_and(|n| n == name))
        .cloned()
}

fn wait_state(c: &Cluster, name: &str, want: &str) -> serde_json::Value {
    wait_for(
        &format!("task {name} in {want}"),
        Duration::from_secs(60),
        || task(c, name).filter(|t| t["state"] == want),
    )
}

fn mounts_under(dir: &Path) -> usize {
    let d = dir.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&d))
        .count()
}

#[test]
fn oci_tasks_with_crun() {
    if !support::can_run_cluster("oci_tasks_with_crun")
        || !support::have_tools(
            "oci_tasks_with_crun",
            &["crun", "busybox", "tar", "gzip", "sha256sum", "unshare"],
        )
    {
        return;
    }
    let mut c = Cluster::new_with_master_flags(support::PATIENT_MASTER_FLAGS);
    c.start_agent(0, RES);
    c.wait_agents_active(1);
    scenario(&mut c);
}

fn scenario(c: &mut Cluster) {
    let layout = busybox_image(c.dir.path(), false);
    let archive = busybox_image(c.dir.path(), true);
    let img = layout.display().to_string();
    let work = c.dir.path().join("agent0");

    // 1. Runs in the image's root filesystem (its marker file, its busybox), with the
    //    sandbox mounted at /mnt/mesos/sandbox; output and exit code come back.
    let out = c.brim(&[
        "run", "--name", "hello", "--image", &img, "--",
        "cat /etc/brim-image; echo sandbox=$MESOS_SANDBOX; test -e /usr/bin/cargo || echo no-host-fs; exit 3",
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("brim busybox image"), "{stdout}");
    assert!(stdout.contains("sandbox=/mnt/mesos/sandbox"), "{stdout}");
    assert!(stdout.contains("no-host-fs"), "{stdout}");

    // The same image as a `docker save` archive.
    let out = c.brim(&[
        "run",
        "--name",
        "docker-archive",
        "--image",
        &archive.display().to_string(),
        "--",
        "cat /etc/brim-image",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("brim busybox image"));

    // 2. Limited: a hog over its 32 MiB is killed by the brim cgroup's limit.
    let out = c.brim(&[
        "run",
        "--name",
        "hog",
        "--mem",
        "32",
        "--image",
        &img,
        "--",
        "dd if=/dev/zero of=/dev/null bs=200M count=1",
    ]);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let t = wait_state(c, "hog", "TASK_FAILED");
    assert_eq!(t["reason"], "REASON_CONTAINER_LIMITATION_MEMORY", "{t}");

    // 3. Measured by eBPF like native tasks: the per-task on-CPU counter of a busy OCI task
    //    grows. 4. Survives an agent kill -9 (the supervisor runs crun), then finishes.
    let agent = c.agent_addrs[0].clone();
    let ebpf =
        http_get(&agent, "/metrics").is_some_and(|(_, m)| m.contains("brim_agent_ebpf_enabled 1"));
    let busy = c.brim_spawn(&[
        "run", "--name", "busy", "--cpus", "0.5", "--image", &img, "--",
        "i=0; end=$(( $(date +%s) + 120 )); while [ ! -e /mnt/mesos/sandbox/stop ] && [ $(date +%s) -lt $end ]; do i=$((i+1)); done; cat /etc/brim-image; echo busy-done",
    ]);
    let t = wait_state(c, "busy", "TASK_RUNNING");
    let id = t["id"].as_str().expect("task id").to_string();
    let fw = t["framework_id"]
        .as_str()
        .expect("framework id")
        .to_string();
    // crun runs from the agent's sealed in-memory copy of it (so it skips copying itself
    // on every start), not from /usr/bin/crun.
    let runtime_root = work.join("oci/runtime").display().to_string();
    let crun_exe = wait_for("the busy task's crun", Duration::from_secs(10), || {
        std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            // (The supervisor's argv carries crun's too.)
            let crun = !cmd.starts_with("brim-supervisor");
            (crun && cmd.contains(&runtime_root) && cmd.contains(" run "))
                .then(|| std::fs::read_link(e.path().join("exe")).ok())
                .flatten()
        })
    });
    assert!(
        crun_exe.display().to_string().starts_with("/memfd:crun"),
        "crun runs from {}",
        crun_exe.display()
    );
    // The task spins until this file appears in its sandbox (/mnt/mesos/sandbox inside).
    let stop = work.join("sandboxes").join(&fw).join(&id).join("stop");
    let oncpu = |agent: &str| -> Option<f64> {
        let (_, m) = http_get(agent, "/metrics")?;
        m.lines()
            .find(|l| l.starts_with("brim_agent_container_oncpu_ebpf_seconds") && l.contains(&id))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    };
    if ebpf {
        let first = wait_for(
            "an eBPF sample of the OCI task",
            Duration::from_secs(60),
            || oncpu(&agent).filter(|v| *v > 0.0),
        );
        let later = wait_for(
            "the OCI task's eBPF counter to grow",
            Duration::from_secs(60),
            || oncpu(&agent).filter(|v| *v > first + 0.1),
        );
        assert!(later > first);
    } else {
        assert!(
            std::env::var("BRIM_TEST_REQUIRE_ALL").as_deref() != Ok("1"),
            "eBPF is off on this agent: the OCI eBPF check cannot run"
        );
        eprintln!("eBPF unavailable: skipping the eBPF counter check");
    }
    c.kill9_agent(0);
    std::thread::sleep(Duration::from_millis(500));
    c.start_agent(0, RES);
    c.wait_agents_active(1);
    // Re-attached, not cleaned up: the running container keeps its bundle and rootfs.
    if task(c, "busy").is_some_and(|t| t["state"] == "TASK_RUNNING") {
        let dirs: Vec<_> = std::fs::read_dir(work.join("oci/containers"))
            .expect("containers dir")
            .flatten()
            .map(|e| e.path())
            .collect();
        assert_eq!(dirs.len(), 1, "{dirs:?}");
        assert!(
            dirs[0].join("rootfs/bin/busybox").exists(),
            "rootfs gone while the task runs"
        );
    }
    std::fs::write(&stop, "").expect("stop file");
    let out = busy.wait_with_output().expect("brim run");
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    // Still in its image after the restart (the rootfs was not cleaned up under it).
    assert!(stdout.contains("brim busybox image"), "{stdout}");
    assert!(stdout.contains("busy-done"), "{stdout}");

    // 5. Cleaned up: no container directory, no mount, no runtime state left.
    wait_for("OCI containers removed", Duration::from_secs(10), || {
        let left = std::fs::read_dir(work.join("oci/containers")).map_or(0, |d| d.count());
        (left == 0).then_some(())
    });
    assert_eq!(mounts_under(&work), 0, "a rootfs is still mounted");
    let state_left = std::fs::read_dir(work.join("oci/runtime")).map_or(0, |d| d.count());
    assert_eq!(state_left, 0, "crun state left behind");
    assert!(
        std::fs::read_dir(work.join("oci/layers")).map_or(0, |d| d.count()) >= 1,
        "the layer cache keeps the unpacked layer"
    );

    // 6. Bad input: an unknown image, a malicious layer, a missing runtime.
    let out = c.brim(&[
        "run",
        "--name",
        "unknown",
        "--image",
        "/nonexistent/image",
        "--",
        "true",
    ]);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let t = wait_state(c, "unknown", "TASK_FAILED");
    assert!(
        t["message"]
            .as_str()
            .is_some_and(|m| m.contains("not found")),
        "{t}"
    );

    let evil = evil_image(c.dir.path());
    let out = c.brim(&[
        "run",
        "--name",
        "evil",
        "--image",
        &evil.display().to_string(),
        "--",
        "true",
    ]);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let t = wait_state(c, "evil", "TASK_FAILED");
    let msg = t["message"].as_str().unwrap_or_default().to_string();
    assert!(msg.contains("refused") && msg.contains(".."), "{t}");
    assert!(
        !c.dir.path().join("pwned").exists(),
        "the layer wrote outside the cache"
    );
    assert!(!work.join("oci/pwned").exists());

    // runc, by flag: it joins the task's brim cgroups itself (linux.cgroupsPath).
    c.kill9_agent(0);
    c.start_agent_with_flags(0, RES, &["--oci-runtime", "runc"]);
    c.wait_agents_active(1);
    let out = c.brim(&[
        "run",
        "--name",
        "runc",
        "--image",
        &img,
        "--",
        "cat /etc/brim-image; cat /proc/self/cgroup",
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("brim busybox image"), "{stdout}");
    let mine = format!("{}-a0/", c.tag);
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("0::") && l.contains(&mine))
            && stdout
                .lines()
                .any(|l| l.contains(":memory:") && l.contains(&mine)),
        "runc's container is not in the task's cgroups: {stdout}"
    );
    // runc creates the container's cgroup in every v1 hierarchy: none may be left.
    let root = format!("{}-a0", c.tag);
    let containers_left = || -> Vec<String> {
        std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|h| std::fs::read_dir(h.path().join(&root)).ok())
            .flatten()
            .flatten()
            .filter(|e| e.path().is_dir())
            .map(|e| e.path().display().to_string())
            .filter(|p| !p.ends_with("/supervisors") && !p.ends_with("/revocable"))
            .collect()
    };
    let mut left = Vec::new();
    for _ in 0..100 {
        left = containers_left();
        if left.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(left.is_empty(), "container cgroups left behind: {left:?}");

    c.kill9_agent(0);
    c.start_agent_with_flags(0, RES, &["--oci-runtime", "/nonexistent/crun"]);
    c.wait_agents_active(1);
    let out = c.brim(&["run", "--name", "noruntime", "--image", &img, "--", "true"]);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let t = wait_state(c, "noruntime", "TASK_FAILED");
    assert!(
        t["message"]
            .as_str()
            .is_some_and(|m| m.contains("OCI runtime") && m.contains("not found")),
        "{t}"
    );
}

/// An OCI layout whose only layer holds `../../pwned` (made with a raw tar header: tar
/// tools refuse to write such names).
fn evil_image(dir: &Path) -> PathBuf {
    use std::fmt::Write as _;
    let out = dir.join("evil-oci");
    std::fs::create_dir_all(out.join("blobs/sha256")).expect("mkdir");
    let mut layer = vec![0u8; 512];
    let name = b"../../pwned";
    layer[..name.len()].copy_from_slice(name);
    layer[100..108].copy_from_slice(b"0000644\0");
    layer[108..116].copy_from_slice(b"0000000\0");
    layer[116..124].copy_from_slice(b"0000000\0");
    layer[124..136].copy_from_slice(b"00000000004\0");
    layer[136..148].copy_from_slice(b"00000000000\0");
    layer[156] = b'0';
    layer[257..263].copy_from_slice(b"ustar\0");
    layer[263..265].copy_from_slice(b"00");
    layer[148..156].copy_from_slice(b"        ");
    let sum: u32 = layer.iter().map(|&b| b as u32).sum();
    layer[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    layer.extend_from_slice(b"evil");
    layer.resize(1024, 0);
    layer.extend_from_slice(&[0u8; 1024]);
    let put = |bytes: &[u8]| -> (String, usize) {
        let tmp = out.join("tmp-blob");
        std::fs::write(&tmp, bytes).expect("write blob");
        let o = Command::new("sha256sum")
            .arg(&tmp)
            .output()
            .expect("sha256sum");
        let d = text(&o.stdout)
            .split_whitespace()
            .next()
            .expect("digest")
            .to_string();
        std::fs::rename(&tmp, out.join("blobs/sha256").join(&d)).expect("rename blob");
        (d, bytes.len())
    };
    let (ld, ls) = put(&layer);
    let (cd, cs) = put(br#"{"architecture":"amd64","os":"linux","config":{}}"#);
    let mut m = String::new();
    let _ = write!(
        m,
        r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{cd}","size":{cs}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:{ld}","size":{ls}}}]}}"#
    );
    let (md, ms) = put(m.as_bytes());
    std::fs::write(
        out.join("index.json"),
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{md}","size":{ms}}}]}}"#
        ),
    )
    .expect("index");
    std::fs::write(out.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)
        .expect("oci-layout");
    out
}

/// Operator hooks around tasks (native and OCI): the pre-launch and post-stop commands see
/// the task, a failing or hanging pre-launch hook fails the launch with a clear reason.
#[test]
fn lifecycle_hooks() {
    if !support::can_run_cluster("lifecycle_hooks")
        || !support::have_tools(
            "lifecycle_hooks",
            &["crun", "busybox", "tar", "gzip", "sha256sum", "unshare"],
        )
    {
        return;
    }
    let mut c = Cluster::new_with_master_flags(support::PATIENT_MASTER_FLAGS);
    let marks = c.dir.path().join("hook-marks");
    let m = marks.display().to_string();
    let pre = format!("echo \"pre $BRIM_CONTAINERIZER $(test -d \"${{BRIM_ROOTFS:-/nonexistent}}/bin\" && echo rootfs)\" >> {m}");
    let post = format!("echo \"post $BRIM_CONTAINERIZER $BRIM_TASK_ID\" >> {m}");
    c.start_agent_with_flags(
        0,
        RES,
        &["--hook-pre-launch", &pre, "--hook-post-stop", &post],
    );
    c.wait_agents_active(1);
    hooks_scenario(&mut c, &marks);
}

fn hooks_scenario(c: &mut Cluster, marks: &Path) {
    let img = busybox_image(c.dir.path(), false).display().to_string();
    let out = c.brim(&["run", "--name", "hooked-native", "--", "true"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = c.brim(&["run", "--name", "hooked-oci", "--image", &img, "--", "true"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let lines = wait_for("both post-stop hooks", Duration::from_secs(10), || {
        let t = std::fs::read_to_string(marks).unwrap_or_default();
        (t.matches("post ").count() >= 2).then_some(t)
    });
    assert!(lines.contains("pre native \n"), "{lines}");
    assert!(
        lines.contains("pre oci rootfs"),
        "the pre-launch hook sees the rootfs: {lines}"
    );
    assert!(lines.contains("post native "), "{lines}");
    assert!(lines.contains("post oci "), "{lines}");

    // A failing pre-launch hook fails the launch, with its exit status and stderr.
    c.kill9_agent(0);
    c.start_agent_with_flags(
        0,
        RES,
        &["--hook-pre-launch", "echo quota exceeded >&2; exit 4"],
    );
    c.wait_agents_active(1);
    let out = c.brim(&["run", "--name", "hook-fails", "--", "true"]);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let t = wait_state(c, "hook-fails", "TASK_FAILED");
    let msg = t["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("pre-launch hook")
            && msg.contains("exit status 4")
            && msg.contains("quota exceeded"),
        "{t}"
    );
    assert_eq!(t["reason"], "REASON_CONTAINER_LAUNCH_FAILED", "{t}");

    // A hanging one is killed at its timeout.
    c.kill9_agent(0);
    c.start_agent_with_flags(
        0,
        RES,
        &["--hook-pre-launch", "sleep 600", "--hook-timeout", "1"],
    );
    c.wait_agents_active(1);
    let out = c.brim(&["run", "--name", "hook-hangs", "--", "true"]);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let t = wait_state(c, "hook-hangs", "TASK_FAILED");
    assert!(
        t["message"]
            .as_str()
            .is_some_and(|m| m.contains("did not finish within 1.0 s")),
        "{t}"
    );
}
