//! The eBPF programs on their own, on a real cgroup2 directory: CPU accounting against
//! cpuacct, exact loopback bytes, bind enforcement. Needs root, BTF and bpffs: without them
//! each test prints why and skips, unless BRIM_TEST_REQUIRE_ALL=1, where it fails instead.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use brim_agent::ebpf::{cgroup_id, DeviceRule, EbpfConfig, Probes, TaskPolicy};

fn unavailable() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2))
        .unwrap_or("");
    if euid != "0" {
        return Some(format!("not root (euid {euid})"));
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        return Some("no kernel BTF at /sys/kernel/btf/vmlinux".into());
    }
    if unified().is_none() {
        return Some("no cgroup2 hierarchy".into());
    }
    None
}

fn can_run(test: &str) -> bool {
    common::run_or_skip(test, unavailable())
}

/// The cgroup2 mount: /sys/fs/cgroup/unified on hybrid machines, else /sys/fs/cgroup.
fn unified() -> Option<PathBuf> {
    let hybrid = PathBuf::from("/sys/fs/cgroup/unified");
    if hybrid.join("cgroup.procs").exists() {
        return Some(hybrid);
    }
    let v2 = PathBuf::from("/sys/fs/cgroup");
    v2.join("cgroup.controllers").exists().then_some(v2)
}

/// A root cgroup with one child, removed on drop.
struct Cg {
    root: PathBuf,
    child: PathBuf,
}

impl Cg {
    fn new(name: &str) -> Cg {
        let root = unified()
            .expect("cgroup2")
            .join(format!("{name}-{}", std::process::id()));
        let child = root.join("c1");
        std::fs::create_dir_all(&child).expect("mkdir cgroup");
        Cg { root, child }
    }
}

impl Drop for Cg {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.child);
        let _ = std::fs::remove_dir(&self.root);
        // Pins of a test that failed before `unpin` (bpffs allows removing them recursively).
        if let Some(name) = self.root.file_name() {
            let _ = std::fs::remove_dir_all(PathBuf::from("/sys/fs/bpf/brim").join(name));
        }
    }
}

fn probes(cg: &Cg) -> Probes {
    let name = cg
        .root
        .file_name()
        .expect("name")
        .to_string_lossy()
        .to_string();
    Probes::load(EbpfConfig {
        root_cgroup: cg.root.clone(),
        pin_dir: PathBuf::from("/sys/fs/bpf/brim").join(name),
        max_tasks: 64,
    })
    .expect("load eBPF programs")
}

/// Runs `script` with sh inside `dir` (cgroup2) and returns its stdout.
fn run_in(dir: &Path, script: &str) -> (String, String) {
    let full = format!("echo $$ > {}/cgroup.procs; {script}", dir.display());
    let out = Command::new("sh").arg("-c").arg(full).output().expect("sh");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn loads_and_counts() {
    if !can_run("loads_and_counts") {
        return;
    }
    let cg = Cg::new("brim-ebpf-probe");
    let p = probes(&cg);
    let id = cgroup_id(&cg.child).expect("cgroup id");
    // A port free right now (other tests and benches on the host use fixed ones).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let denied_port = if port > 1024 { port - 1 } else { port + 1 };
    p.track(
        id,
        &TaskPolicy {
            ports: Some(vec![(port, port)]),
            ..Default::default()
        },
    )
    .expect("track");
    let (out, err) = run_in(
        &cg.child,
        &format!("i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; python3 -c 'import socket; s=socket.socket(); s.bind((\"127.0.0.1\", {port})); print(\"ok-allocated\"); t=socket.socket();\ntry:\n t.bind((\"127.0.0.1\", {denied_port})); print(\"bound-unallocated\")\nexcept OSError as e: print(\"err\", e.errno)'"),
    );
    let u = p.read(id).expect("tracked");
    eprintln!("{out} {err} {u:?}");
    eprintln!("{:?}", p.prog_stats());
    assert!(u.oncpu_ns > 0);
    assert!(out.contains("ok-allocated"), "{out} {err}");
    assert!(out.contains("err 1"), "{out} {err}");
    // Batched reads (BPF_MAP_LOOKUP_BATCH) agree with per-entry lookups, with other slots
    // around (ids no cgroup has: entries that stay zero) and an untracked id left out.
    let mut ids: Vec<u64> = (0..20).map(|i| (1 << 40) + i).collect();
    for &other in &ids {
        p.track(other, &TaskPolicy::default()).expect("track");
    }
    p.untrack(ids[3]);
    ids.push(id);
    let batched = p.read_many(&ids);
    assert_eq!(batched.len(), ids.len() - 1, "untracked ids are left out");
    assert_eq!(batched, p.read_many_per_key(&ids));
    assert_eq!(batched[&id].oncpu_ns, p.read(id).expect("tracked").oncpu_ns);
    assert_eq!(batched[&id].bind_denied, 1);
    p.unpin();
}

/// Opens each `(path, python mode)` inside `dir` and prints `path ok` or `path errno N`.
fn open_devices(dir: &Path, opens: &[(&str, &str)]) -> String {
    let mut py = String::from("import os\n");
    for (path, mode) in opens {
        py.push_str(&format!(
            "try:\n os.close(os.open('{path}', {mode})); print('{path} {mode} ok')\nexcept OSError as e: print('{path} {mode} errno', e.errno)\n"
        ));
    }
    let (out, err) = run_in(dir, &format!("python3 -c \"{py}\""));
    assert!(err.is_empty(), "{err}");
    out
}

#[test]
fn device_allow_list() {
    if !can_run("device_allow_list") {
        return;
    }
    for dev in ["/dev/fuse", "/dev/kmsg", "/dev/loop-control"] {
        if !Path::new(dev).exists() {
            common::run_or_skip("device_allow_list", Some(format!("no {dev}")));
            return;
        }
    }
    let cg = Cg::new("brim-ebpf-dev");
    let p = probes(&cg);
    let id = cgroup_id(&cg.child).expect("cgroup id");
    let opens = [
        ("/dev/null", "os.O_RDWR"),
        ("/dev/fuse", "os.O_RDWR"),
        ("/dev/kmsg", "os.O_RDONLY"),
        ("/dev/kmsg", "os.O_WRONLY"),
        ("/dev/loop-control", "os.O_RDONLY"),
    ];
    // Built-in list only.
    p.track(id, &TaskPolicy::default()).expect("track");
    let out = open_devices(&cg.child, &opens);
    for want in [
        "/dev/null os.O_RDWR ok",
        "/dev/fuse os.O_RDWR errno 1",
        "/dev/kmsg os.O_RDONLY errno 1",
        "/dev/loop-control os.O_RDONLY errno 1",
    ] {
        assert!(out.contains(want), "{want}: {out}");
    }
    let denied = p.read(id).expect("tracked").dev_denied;
    assert!(denied >= 4, "denied opens are counted: {denied}");
    // A path rule and a numeric read-only rule extend it (a re-track, as when the agent
    // restarts, replaces the rules).
    let devices = vec![
        DeviceRule::parse("/dev/fuse").expect("rule"),
        DeviceRule::parse("c 1:11 r").expect("rule"),
    ];
    p.track(
        id,
        &TaskPolicy {
            devices,
            ..Default::default()
        },
    )
    .expect("track");
    let out = open_devices(&cg.child, &opens);
    for want in [
        "/dev/null os.O_RDWR ok",
        "/dev/fuse os.O_RDWR ok",
        "/dev/kmsg os.O_RDONLY ok",
        "/dev/kmsg os.O_WRONLY errno 1",
        "/dev/loop-control os.O_RDONLY errno 1",
    ] {
        assert!(out.contains(want), "{want}: {out}");
    }
    // Another cgroup in the same slot later (untrack + track) starts without them.
    p.untrack(id);
    p.track(id, &TaskPolicy::default()).expect("track");
    let out = open_devices(&cg.child, &opens);
    assert!(out.contains("/dev/fuse os.O_RDWR errno 1"), "{out}");
    p.unpin();
}

/// An agent restart (the probes dropped without unpinning, as when the agent dies, then
/// loaded again and the task re-tracked) keeps the counters exactly where they were: no
/// reset, no double counting; untracking removes the task's entries, so a later task of the
/// same cgroup id starts from zero.
#[test]
fn restart_keeps_counters_untrack_removes_them() {
    if !can_run("restart_keeps_counters_untrack_removes_them") {
        return;
    }
    let cg = Cg::new("brim-ebpf-restart");
    let id = cgroup_id(&cg.child).expect("cgroup id");
    // No ports: any bind of a fixed port is denied (and counted in the bind_denied hash map).
    let policy = TaskPolicy {
        ports: Some(vec![]),
        ..Default::default()
    };
    let work = "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; python3 -c 'import socket\ntry:\n socket.socket().bind((\"127.0.0.1\", 1))\nexcept OSError as e: print(\"err\", e.errno)'";
    let p = probes(&cg);
    p.track(id, &policy).expect("track");
    let (out, err) = run_in(&cg.child, work);
    assert!(out.contains("err 1"), "{out} {err}");
    let before = p.read_many(&[id]).remove(&id).expect("tracked");
    assert!(before.oncpu_ns > 0 && before.bind_denied == 1, "{before:?}");

    drop(p);
    let p = probes(&cg);
    assert!(p.tracked().contains(&id), "the pinned slot survives");
    // A cgroup the previous agent tracked and that went meanwhile (an id no directory has):
    // the new agent forgets it, and keeps the live one.
    let gone = 1u64 << 41;
    p.track(gone, &TaskPolicy::default()).expect("track");
    assert_eq!(p.untrack_missing(&cg.root), 1);
    assert!(!p.tracked().contains(&gone) && p.tracked().contains(&id));
    p.track(id, &policy).expect("re-track");
    let after = p.read_many(&[id]).remove(&id).expect("tracked");
    assert_eq!(after, before, "counters continue exactly where they were");
    let (out, _) = run_in(&cg.child, work);
    assert!(out.contains("err 1"), "enforcement re-attached: {out}");
    let later = p.read_many(&[id]).remove(&id).expect("tracked");
    assert!(later.oncpu_ns > after.oncpu_ns, "{later:?}");
    assert_eq!(later.bind_denied, 2, "{later:?}");

    p.untrack(id);
    assert!(p.read(id).is_none() && !p.tracked().contains(&id));
    assert!(p.read_many(&[id]).is_empty());
    p.track(id, &TaskPolicy::default()).expect("track again");
    let fresh = p.read_many(&[id]).remove(&id).expect("tracked");
    assert_eq!(fresh.oncpu_ns, 0, "{fresh:?}");
    assert_eq!(fresh.bind_denied, 0, "{fresh:?}");
    let pins = PathBuf::from("/sys/fs/bpf/brim").join(
        cg.root
            .file_name()
            .expect("name")
            .to_string_lossy()
            .to_string(),
    );
    p.unpin();
    assert!(!pins.exists(), "pins removed on a clean shutdown");
}
