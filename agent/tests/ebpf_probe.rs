//! The eBPF programs on their own, on a real cgroup2 directory: CPU accounting against
//! cpuacct, exact loopback bytes, bind enforcement. Needs root, BTF and bpffs: without them
//! each test prints why and skips, unless BRIM_TEST_REQUIRE_ALL=1, where it fails instead.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use brim_agent::ebpf::{cgroup_id, EbpfConfig, Probes, TaskPolicy};

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
    p.track(
        id,
        &TaskPolicy {
            ports: Some(vec![(31000, 31001)]),
            egress_bytes_per_sec: None,
        },
    )
    .expect("track");
    let (out, err) = run_in(
        &cg.child,
        "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; python3 -c 'import socket; s=socket.socket(); s.bind((\"127.0.0.1\", 31000)); print(\"ok31000\"); t=socket.socket();\ntry:\n t.bind((\"127.0.0.1\", 31005)); print(\"bound31005\")\nexcept OSError as e: print(\"err\", e.errno)'",
    );
    let u = p.read(id).expect("tracked");
    eprintln!("{out} {err} {u:?}");
    eprintln!("{:?}", p.prog_stats());
    assert!(u.oncpu_ns > 0);
    assert!(out.contains("ok31000"), "{out} {err}");
    assert!(out.contains("err 1"), "{out} {err}");
    p.unpin();
}
