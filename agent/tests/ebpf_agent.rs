//! eBPF telemetry and enforcement through a real agent: CPU from the scheduler probes
//! against cpuacct/cpu.stat (within 2 %), exact loopback bytes, EPERM for a bind outside the
//! task's ports, and the cgroupfs-polling fallback. Needs root, cgroups, BTF and bpffs:
//! without them each test prints why and skips, unless BRIM_TEST_REQUIRE_ALL=1, where it
//! fails instead.

mod common;

use std::time::{Duration, Instant};

use brim_agent::{EbpfMode, Isolation};
use brim_proto::v1::TaskState;
use common::*;

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
    if !std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
        return Some("no kernel BTF at /sys/kernel/btf/vmlinux".into());
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    if !mountinfo.contains(" - cgroup2 ") {
        return Some("no cgroup2 hierarchy mounted".into());
    }
    if !mountinfo.contains(" - bpf ") {
        return Some("bpffs not mounted at /sys/fs/bpf (mount -t bpf bpf /sys/fs/bpf)".into());
    }
    None
}

fn can_run(test: &str) -> bool {
    common::run_or_skip(test, unavailable())
}

const DATAGRAMS: u64 = 100;
const PAYLOAD: u64 = 1000;

/// A port free on the host now (other tests and benches use fixed ones) for the task's
/// `ports`, and one outside them.
#[derive(Clone, Copy)]
struct BindPorts {
    allocated: u16,
    unallocated: u16,
}

impl BindPorts {
    fn pick() -> BindPorts {
        let allocated = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        BindPorts {
            allocated,
            unallocated: if allocated > 1024 {
                allocated - 1
            } else {
                allocated + 1
            },
        }
    }

    /// Offers the allocated port from the agent (the task's resources must fit them).
    fn offer(&self, cfg: &mut brim_agent::AgentConfig) {
        let p = self.allocated;
        cfg.resources = Some(
            brim_proto::Resources::parse(&format!("cpus:2;mem:1024;disk:1000;ports:[{p}-{p}]"))
                .expect("resources"),
        );
    }

    fn resources(&self) -> String {
        let p = self.allocated;
        format!("cpus:1;mem:128;ports:[{p}-{p}]")
    }
}

/// Burns CPU, sends DATAGRAMS UDP datagrams of PAYLOAD bytes to `port` (paced, so none is
/// dropped at the receiving socket), tries to bind an
/// allocated and an unallocated port, then idles so the counters settle.
fn script(port: u16, bind: BindPorts) -> String {
    let BindPorts {
        allocated,
        unallocated,
    } = bind;
    format!(
        r#"i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done
python3 - <<'PY'
import socket, errno, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range({DATAGRAMS}):
    s.sendto(b"x" * {PAYLOAD}, ("127.0.0.1", {port}))
    time.sleep(0.001)  # the test's receiver keeps up even on a loaded host
a = socket.socket()
a.bind(("127.0.0.1", {allocated}))
print("bind-allocated ok")
b = socket.socket()
try:
    b.bind(("127.0.0.1", {unallocated}))
    print("bind-unallocated ok")
except OSError as e:
    print("bind-unallocated errno", e.errno)
PY
sleep 30"#
    )
}

async fn task_usage(http: std::net::SocketAddr, id: &str) -> serde_json::Value {
    let st = state(http).await;
    st["tasks"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["id"] == id))
        .map(|t| t["usage"].clone())
        .unwrap_or_default()
}

async fn task_container(http: std::net::SocketAddr, id: &str) -> String {
    let st = state(http).await;
    st["tasks"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["id"] == id))
        .and_then(|t| t["container_id"].as_str())
        .expect("task container id")
        .to_string()
}

/// CPU ns of a container of the agent whose root cgroup is `root`, from cgroupfs:
/// `cpuacct.usage` (hybrid layout) or `cpu.stat` usage_usec (v2).
fn cpuacct_usage(root: &str, container: &str) -> u64 {
    let file = format!("/sys/fs/cgroup/cpuacct/{root}/{container}/cpuacct.usage");
    if !std::path::Path::new("/sys/fs/cgroup/cpuacct").exists() {
        let stat = std::fs::read_to_string(format!("/sys/fs/cgroup/{root}/{container}/cpu.stat"))
            .expect("cpu.stat");
        let usec: u64 = stat
            .lines()
            .find_map(|l| l.strip_prefix("usage_usec "))
            .and_then(|v| v.trim().parse().ok())
            .expect("usage_usec");
        return usec * 1000;
    }
    std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("{file}: {e}"))
        .trim()
        .parse()
        .expect("cpuacct.usage")
}

/// Waits until the task's stdout contains `want`; returns it.
async fn stdout_with(http: std::net::SocketAddr, fw: &str, id: &str, want: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = reqwest::get(format!("http://{http}/sandbox/{fw}/{id}/stdout"))
            .await
            .expect("GET stdout")
            .text()
            .await
            .unwrap_or_default();
        if text.contains(want) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "stdout never had `{want}`: {text:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn metrics(http: std::net::SocketAddr) -> String {
    reqwest::get(format!("http://{http}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text")
}

/// Receives datagrams on loopback until `n` arrived or a deadline passes.
fn receiver() -> (std::net::UdpSocket, u16) {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind receiver");
    let port = s.local_addr().expect("addr").port();
    (s, port)
}

fn drain(s: &std::net::UdpSocket, n: u64) -> u64 {
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut buf = [0u8; 2048];
    let mut got = 0;
    while got < n {
        match s.recv(&mut buf) {
            Ok(len) => {
                assert_eq!(len as u64, PAYLOAD);
                got += 1;
            }
            Err(_) => break,
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ebpf_cpu_net_and_bind() {
    if !can_run("ebpf_cpu_net_and_bind") {
        return;
    }
    let mut master = FakeMaster::start().await;
    let work = tempfile::tempdir().expect("tempdir");
    let cg = unique("brim-ebpf");
    let mut cfg = config(master.addr, work.path(), Isolation::Cgroups, &cg);
    let bind = BindPorts::pick();
    bind.offer(&mut cfg);
    let (http, stop, join) = start_agent(cfg).await;
    let (mut s, _) = master.accept().await;
    s.registered("agent-1", 30.0).await;

    let (rx, port) = receiver();
    let recv = std::thread::spawn(move || drain(&rx, DATAGRAMS));
    s.run_task(
        "fw",
        shell_task("t1", &script(port, bind), &bind.resources()),
    )
    .await;
    s.expect("t1", TaskState::TaskStarting).await;
    s.expect("t1", TaskState::TaskRunning).await;
    let out = stdout_with(http, "fw", "t1", "bind-unallocated").await;
    assert!(out.contains("bind-allocated ok"), "{out}");
    assert!(
        out.contains("bind-unallocated errno 1"),
        "binding a port outside the task's ports must fail with EPERM: {out}"
    );
    assert_eq!(recv.join().expect("receiver"), DATAGRAMS);

    // Counters settle once the task idles; wait for a sample taken after that.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let u = task_usage(http, "t1").await;
    // With eBPF the agent's cpu_ns is the eBPF counter: compare it with the container's
    // cpuacct.usage read here (the task idles, so both are settled).
    assert_eq!(u["cpu_source"], "ebpf", "{u}");
    assert_eq!(u["cpu_ns"], u["oncpu_ebpf_ns"], "{u}");
    let (cpu, ebpf_cpu) = (
        cpuacct_usage(&cg, &task_container(http, "t1").await),
        u["oncpu_ebpf_ns"].as_u64().expect("oncpu"),
    );
    assert!(cpu > 50_000_000, "the task burned CPU: {u}");
    let err = (ebpf_cpu as f64 - cpu as f64).abs() / cpu as f64 * 100.0;
    assert!(
        err <= 2.0,
        "eBPF CPU {ebpf_cpu} ns vs cgroup {cpu} ns: {err:.2} % apart"
    );
    // IP-layer bytes: 20 (IPv4) + 8 (UDP) header bytes per datagram.
    assert_eq!(u["net_tx_packets"].as_u64(), Some(DATAGRAMS), "{u}");
    assert_eq!(
        u["net_tx_bytes"].as_u64(),
        Some(DATAGRAMS * (PAYLOAD + 28)),
        "{u}"
    );
    assert_eq!(u["bind_denied"].as_u64(), Some(1), "{u}");
    assert!(u["runq_waits"].as_u64().unwrap_or(0) > 0, "{u}");

    let m = metrics(http).await;
    assert!(m.contains("brim_agent_ebpf_enabled 1"), "{m}");
    // PSI is reported as this host has it (off by default on some kernels: psi=1 turns it on).
    let psi = std::fs::read_to_string("/proc/pressure/memory").is_ok();
    assert!(
        m.contains(&format!("brim_agent_psi_enabled {}", u8::from(psi))),
        "{m}"
    );
    let line = m
        .lines()
        .find(|l| l.starts_with("brim_agent_container_network_transmit_bytes_total{"))
        .unwrap_or_else(|| panic!("no per-task network series: {m}"));
    for label in [
        "framework_id=\"fw\"",
        "task_id=\"t1\"",
        "task_name=\"t1\"",
        "executor_id=\"t1\"",
        "role=",
    ] {
        assert!(line.contains(label), "{label} missing: {line}");
    }
    let value: f64 = line
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no value: {line}"));
    assert_eq!(value, (DATAGRAMS * (PAYLOAD + 28)) as f64, "{line}");
    // The master gets the same counters.
    let deadline = Instant::now() + WAIT;
    while !s
        .usage
        .iter()
        .any(|c| c.net_tx_bytes == DATAGRAMS * (PAYLOAD + 28))
    {
        assert!(Instant::now() < deadline, "usage never reached the master");
        let _ = s.update_within(Duration::from_millis(300)).await;
    }

    s.kill("fw", "t1", Some(0.0)).await;
    s.expect("t1", TaskState::TaskKilled).await;
    // Series go with the task.
    let deadline = Instant::now() + WAIT;
    while metrics(http).await.contains("task_id=\"t1\"") {
        assert!(Instant::now() < deadline, "series of the ended task stayed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = stop.send(());
    join.await.expect("join").expect("agent stopped cleanly");
    assert!(
        !std::path::Path::new("/sys/fs/bpf/brim").join(&cg).exists(),
        "pinned maps left behind after a clean shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_fallback_without_ebpf() {
    if !can_run("polling_fallback_without_ebpf") {
        return;
    }
    let mut master = FakeMaster::start().await;
    let work = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(
        master.addr,
        work.path(),
        Isolation::Cgroups,
        &unique("brim-poll"),
    );
    cfg.ebpf = EbpfMode::Off;
    let bind = BindPorts::pick();
    bind.offer(&mut cfg);
    let (http, stop, join) = start_agent(cfg).await;
    let (mut s, _) = master.accept().await;
    s.registered("agent-1", 30.0).await;
    s.run_task("fw", shell_task("t1", &script(9, bind), &bind.resources()))
        .await;
    s.expect("t1", TaskState::TaskStarting).await;
    s.expect("t1", TaskState::TaskRunning).await;
    let out = stdout_with(http, "fw", "t1", "bind-unallocated").await;
    assert!(
        out.contains("bind-unallocated ok"),
        "no enforcement without eBPF: {out}"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    let u = task_usage(http, "t1").await;
    assert!(u["cpu_ns"].as_u64().unwrap_or(0) > 0, "{u}");
    assert_eq!(u["net_tx_bytes"].as_u64(), Some(0), "{u}");
    let st = state(http).await;
    assert_eq!(st["ebpf"]["enabled"], false, "{st}");
    assert!(
        st["ebpf"]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("disabled"),
        "{st}"
    );
    let m = metrics(http).await;
    assert!(m.contains("brim_agent_ebpf_enabled 0"), "{m}");
    assert!(m.contains("brim_agent_container_cpu_seconds_total{"), "{m}");
    s.kill("fw", "t1", Some(0.0)).await;
    s.expect("t1", TaskState::TaskKilled).await;
    let _ = stop.send(());
    join.await.expect("join").expect("agent stopped cleanly");
}

/// A task with a `net_egress_mbps` label: what passes its egress (UDP on loopback, sent as
/// fast as it can for 3 s) stays within 10 % of the rate, the rest is dropped. Then an OOM
/// kill in the task's cgroup (a child over the memory limit) shows in its usage, counted by
/// the eBPF program (`mark_victim`): on the eBPF path the agent reads no OOM file. And the
/// device allow-list: /dev/urandom opens, /dev/kmsg fails with EPERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_limit_and_oom_kill() {
    if !can_run("egress_limit_and_oom_kill") {
        return;
    }
    const MBPS: f64 = 16.0;
    let mut master = FakeMaster::start().await;
    let work = tempfile::tempdir().expect("tempdir");
    let cg = unique("brim-egress");
    let cfg = config(master.addr, work.path(), Isolation::Cgroups, &cg);
    let (http, stop, join) = start_agent(cfg).await;
    let (mut s, _) = master.accept().await;
    s.registered("agent-1", 30.0).await;

    // A sink nobody reads: the sender's datagrams are counted on egress either way.
    let sink = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind sink");
    let port = sink.local_addr().expect("addr").port();
    let script = format!(
        r#"head -c 16 /dev/urandom > /dev/null && echo urandom ok
python3 - <<'PY'
try:
    open("/dev/kmsg", "rb")
    print("kmsg opened")
except OSError as e:
    print("kmsg errno", e.errno)
PY
python3 - <<'PY'
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
buf = b"x" * {PAYLOAD}
t0 = time.monotonic()
while time.monotonic() - t0 < 3.0:
    s.sendto(buf, ("127.0.0.1", {port}))
print("sent for", time.monotonic() - t0)
PY
python3 -c 'b = b"x" * (256 << 20); print(len(b))' || echo "child killed"
echo oom-done
sleep 30"#
    );
    let mut task = shell_task("t1", &script, "cpus:1;mem:64");
    task.labels.push(brim_proto::v1::Label {
        key: "net_egress_mbps".into(),
        value: MBPS.to_string(),
    });
    s.run_task("fw", task).await;
    s.expect("t1", TaskState::TaskStarting).await;
    s.expect("t1", TaskState::TaskRunning).await;
    let out = stdout_with(http, "fw", "t1", "oom-done").await;
    let secs: f64 = out
        .lines()
        .find_map(|l| l.strip_prefix("sent for "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no send time: {out}"));
    assert!(
        out.contains("child killed"),
        "the child must be OOM killed: {out}"
    );
    // Device allow-list (cgroup/dev): urandom is in it, kmsg is not.
    assert!(out.contains("urandom ok"), "{out}");
    assert!(
        out.contains("kmsg errno 1"),
        "kmsg must fail with EPERM: {out}"
    );

    let deadline = Instant::now() + WAIT;
    let u = loop {
        let u = task_usage(http, "t1").await;
        if u["oom_events"].as_u64().unwrap_or(0) >= 1 {
            break u;
        }
        assert!(Instant::now() < deadline, "no OOM kill in the usage: {u}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(u["cpu_source"], "ebpf", "{u}");
    assert!(u["dev_denied"].as_u64().unwrap_or(0) >= 1, "{u}");
    let passed = u["net_tx_bytes"].as_u64().expect("tx bytes") as f64;
    let rate = MBPS * 1e6 / 8.0;
    let got = passed / secs;
    let err = (got - rate).abs() / rate * 100.0;
    assert!(
        err <= 10.0,
        "egress {got:.0} B/s vs limit {rate:.0} B/s: {err:.1} % apart ({u})"
    );
    assert!(
        u["net_tx_dropped_packets"].as_u64().unwrap_or(0) > 0,
        "the sender outpaces the limit, so packets are dropped: {u}"
    );

    s.kill("fw", "t1", Some(0.0)).await;
    s.expect("t1", TaskState::TaskKilled).await;
    let _ = stop.send(());
    join.await.expect("join").expect("agent stopped cleanly");
    drop(sink);
}

/// Device allow-list beyond the built-in devices: the operator's `--device-allow` (here
/// /dev/fuse) applies to every task, a task's `devices` label adds its own (/dev/kmsg read
/// only); everything else fails with EPERM. An invalid label leaves only the defaults.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_allow_from_flag_and_label() {
    if !can_run("device_allow_from_flag_and_label") {
        return;
    }
    for dev in ["/dev/fuse", "/dev/kmsg", "/dev/loop-control"] {
        if !std::path::Path::new(dev).exists() {
            common::run_or_skip(
                "device_allow_from_flag_and_label",
                Some(format!("no {dev}")),
            );
            return;
        }
    }
    let mut master = FakeMaster::start().await;
    let work = tempfile::tempdir().expect("tempdir");
    let cg = unique("brim-devices");
    let mut cfg = config(master.addr, work.path(), Isolation::Cgroups, &cg);
    cfg.device_allow = vec![brim_agent::ebpf::DeviceRule::parse("/dev/fuse").expect("rule")];
    let (http, stop, join) = start_agent(cfg).await;
    let (mut s, _) = master.accept().await;
    s.registered("agent-1", 30.0).await;

    let script = r#"python3 - <<'PY'
import os
for path, mode in [("/dev/fuse", os.O_RDWR), ("/dev/kmsg", os.O_RDONLY), ("/dev/kmsg", os.O_WRONLY), ("/dev/loop-control", os.O_RDONLY)]:
    try:
        os.close(os.open(path, mode)); print(path, mode, "ok")
    except OSError as e:
        print(path, mode, "errno", e.errno)
PY
echo devices-done
sleep 30"#;
    for (id, label) in [("t1", "c 1:11 r"), ("t2", "c 1")] {
        let mut task = shell_task(id, script, "cpus:0.5;mem:64");
        task.labels.push(brim_proto::v1::Label {
            key: "devices".into(),
            value: label.into(),
        });
        s.run_task("fw", task).await;
        s.expect(id, TaskState::TaskStarting).await;
        s.expect(id, TaskState::TaskRunning).await;
    }
    // os.O_RDWR, O_RDONLY, O_WRONLY on Linux, as the script prints them.
    let (rdwr, rdonly, wronly) = (2, 0, 1);
    let t1 = stdout_with(http, "fw", "t1", "devices-done").await;
    for want in [
        format!("/dev/fuse {rdwr} ok"),
        format!("/dev/kmsg {rdonly} ok"),
        format!("/dev/kmsg {wronly} errno 1"),
        format!("/dev/loop-control {rdonly} errno 1"),
    ] {
        assert!(t1.contains(&want), "t1 (label `c 1:11 r`): {want}: {t1}");
    }
    let t2 = stdout_with(http, "fw", "t2", "devices-done").await;
    for want in [
        format!("/dev/fuse {rdwr} ok"),
        format!("/dev/kmsg {rdonly} errno 1"),
        format!("/dev/loop-control {rdonly} errno 1"),
    ] {
        assert!(t2.contains(&want), "t2 (invalid label): {want}: {t2}");
    }
    for id in ["t1", "t2"] {
        s.kill("fw", id, Some(0.0)).await;
        s.expect(id, TaskState::TaskKilled).await;
    }
    let _ = stop.send(());
    join.await.expect("join").expect("agent stopped cleanly");
}
