//! `cargo xtask bench telemetry`: measures the agent's eBPF telemetry on this machine (root,
//! BTF, hybrid or v2 cgroups) and writes `bench-results/telemetry.json`.
//!
//! - accuracy: a CPU burner in a tracked cgroup, eBPF on-CPU ns vs `cpuacct.usage`; UDP
//!   datagrams through loopback, eBPF tx bytes vs what was sent (+28 header bytes each);
//! - overhead: ns per program run from `kernel.bpf_stats_enabled`; a pipe ping-pong with
//!   the programs attached vs detached, alternating in the same run;
//! - agent cost: CPU time of one sampling pass over 200 task cgroups as the agent does it with
//!   eBPF (all map entries under one lock + the cgroupfs files eBPF does not replace) next to
//!   cgroupfs polling alone, as % of a core at a 1 s interval.
//!
//! Workloads run as `xtask __burn|__udp|__pingpong` child processes placed in the cgroup.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use brim_agent::cgroups::hybrid::{HybridBackend, HybridMounts};
use brim_agent::cgroups::{CgroupBackend, Limits};
use brim_agent::ebpf::{cgroup_id, EbpfConfig, Probes, TaskPolicy};
use serde::Serialize;

#[derive(Serialize)]
struct Results {
    sched_ns_per_event: f64,
    net_ns_per_packet: f64,
    cpu_error_pct: f64,
    net_bytes_exact: bool,
    ctxswitch_slowdown_pct: f64,
    agent_cpu_pct_200_tasks: f64,
    polling_cpu_pct_200_tasks: f64,
}

const UNIFIED: &str = "/sys/fs/cgroup/unified";
const CPUACCT: &str = "/sys/fs/cgroup/cpuacct";
const STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";
const DATAGRAMS: u64 = 2000;
const PAYLOAD: u64 = 1000;
const ROUND_TRIPS: u64 = 200_000;

/// Entry points of the workload child processes.
pub(crate) fn workload(args: &[&str]) -> Result<()> {
    match args {
        ["__burn", ms] => {
            let end = Instant::now() + Duration::from_millis(ms.parse()?);
            let mut x = 0u64;
            while Instant::now() < end {
                for i in 0..10_000u64 {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(i);
                }
            }
            std::hint::black_box(x);
        }
        ["__udp", port] => {
            let s = std::net::UdpSocket::bind("127.0.0.1:0")?;
            let buf = vec![7u8; PAYLOAD as usize];
            for _ in 0..DATAGRAMS {
                s.send_to(&buf, ("127.0.0.1", port.parse::<u16>()?))?;
            }
        }
        ["__pingpong"] => {
            let (mut a, mut b) = std::os::unix::net::UnixStream::pair()?;
            let t = std::thread::spawn(move || -> std::io::Result<()> {
                let mut c = [0u8; 1];
                for _ in 0..ROUND_TRIPS {
                    b.read_exact(&mut c)?;
                    b.write_all(&c)?;
                }
                Ok(())
            });
            let mut c = [1u8; 1];
            for _ in 0..ROUND_TRIPS {
                a.write_all(&c)?;
                a.read_exact(&mut c)?;
            }
            t.join()
                .map_err(|_| anyhow::anyhow!("ping-pong thread panicked"))??;
            println!("cpu_ns {}", self_cpu_ns());
        }
        _ => bail!("unknown workload {args:?}"),
    }
    Ok(())
}

/// Runs `xtask <args>` inside the cgroups `dirs` (joined before exec) and returns the CPU
/// time (user + system) it reports on stdout: what the programs add is charged to the
/// switching task.
fn run_cpu(dirs: &[PathBuf], args: &str) -> Result<Duration> {
    let exe = std::env::current_exe()?;
    let joins: String = dirs
        .iter()
        .map(|d| format!("echo $$ > {}/cgroup.procs && ", d.display()))
        .collect();
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("{joins}exec {} {args}", exe.display()))
        .output()?;
    if !out.status.success() {
        bail!("workload `{args}` failed: {}", out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let ns: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("cpu_ns "))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("workload `{args}` reported no cpu_ns: {text:?}"))?;
    Ok(Duration::from_nanos(ns))
}

/// CPU time (user + system, every thread, 10 ms ticks) of this process: /proc/self/stat.
fn self_cpu_ns() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at field 3 (state).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    f.iter().sum::<u64>() * 10_000_000
}

/// Runs `xtask <args>` inside the cgroups `dirs` (joined before exec); returns its wall time.
fn run_in(dirs: &[PathBuf], args: &str) -> Result<Duration> {
    let exe = std::env::current_exe()?;
    let joins: String = dirs
        .iter()
        .map(|d| format!("echo $$ > {}/cgroup.procs && ", d.display()))
        .collect();
    let t0 = Instant::now();
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!("{joins}exec {} {args}", exe.display()))
        .status()?;
    let took = t0.elapsed();
    if !st.success() {
        bail!("workload `{args}` failed: {st}");
    }
    Ok(took)
}

/// On-CPU ns of the calling thread.
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn load(root: &Path, name: &str) -> Result<Probes> {
    Probes::load(EbpfConfig {
        root_cgroup: root.to_path_buf(),
        pin_dir: PathBuf::from("/sys/fs/bpf/brim").join(name),
        max_tasks: 512,
    })
    .context("loading the eBPF programs")
}

pub(crate) fn bench_telemetry(ws: &Path) -> Result<()> {
    if !Path::new(UNIFIED).join("cgroup.procs").exists() || !Path::new(CPUACCT).exists() {
        bail!("needs the hybrid cgroup layout ({UNIFIED} and {CPUACCT}) and root");
    }
    let name = format!("brim-bench-{}", std::process::id());
    let root = Path::new(UNIFIED).join(&name);
    let c1 = [root.join("c1"), Path::new(CPUACCT).join(&name).join("c1")];
    for d in &c1 {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let old_stats = std::fs::read_to_string(STATS).unwrap_or_else(|_| "0".into());
    let result = measure(ws, &name, &root, &c1);
    let _ = std::fs::write(STATS, old_stats.trim());
    for d in c1.iter().chain([&root, &Path::new(CPUACCT).join(&name)]) {
        let _ = std::fs::remove_dir(d);
    }
    let _ = std::fs::remove_dir_all(Path::new("/sys/fs/bpf/brim").join(&name));
    result
}

fn measure(ws: &Path, name: &str, root: &Path, c1: &[PathBuf; 2]) -> Result<()> {
    let id = cgroup_id(&c1[0])?;
    let policy = TaskPolicy::default();

    // Context-switch microbenchmark: attached vs detached, alternating. The host is shared, so
    // wall time swings with other load: compare the ping-pong's own CPU time (user + system;
    // the programs run in the switching task's context and are charged to it), as the median
    // of the per-pair ratios of 9 pairs.
    let (mut ratios, mut on, mut off) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..9 {
        let p = load(root, name)?;
        p.track(id, &policy)?;
        let a = run_cpu(c1, "__pingpong")?.as_secs_f64();
        drop(p);
        let b = run_cpu(c1, "__pingpong")?.as_secs_f64();
        ratios.push(a / b);
        on.push(a);
        off.push(b);
    }
    let slowdown = (median(ratios) - 1.0) * 100.0;
    let (on, off) = (median(on), median(off));
    println!("ping-pong {ROUND_TRIPS} round trips, CPU time: attached {on:.3} s, detached {off:.3} s (median pair ratio {slowdown:+.2} %)");

    // Run statistics cost time themselves: on only from here (not for the ping-pong).
    std::fs::write(STATS, "1").context("enabling kernel.bpf_stats_enabled")?;
    let p = load(root, name)?;
    p.track(id, &policy)?;
    let before = p.prog_stats();
    // Accuracy: CPU.
    let acct = c1[1].join("cpuacct.usage");
    let read_acct = || -> Result<u64> { Ok(std::fs::read_to_string(&acct)?.trim().parse()?) };
    let (a0, e0) = (read_acct()?, p.read(id).map_or(0, |u| u.oncpu_ns));
    run_in(c1, "__burn 1500")?;
    run_in(c1, "__pingpong")?;
    let (a1, e1) = (read_acct()?, p.read(id).map_or(0, |u| u.oncpu_ns));
    let (acct_ns, ebpf_ns) = ((a1 - a0) as f64, (e1 - e0) as f64);
    let cpu_err = (ebpf_ns - acct_ns).abs() / acct_ns * 100.0;
    println!("cpu: cpuacct {acct_ns:.0} ns, eBPF {ebpf_ns:.0} ns, error {cpu_err:.3} %");
    // Accuracy: network.
    let rx = std::net::UdpSocket::bind("127.0.0.1:0")?;
    rx.set_read_timeout(Some(Duration::from_secs(5)))?;
    let port = rx.local_addr()?.port();
    let n0 = p.read(id).map_or(0, |u| u.net_tx_bytes);
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        let mut got = 0u64;
        while got < DATAGRAMS && rx.recv(&mut buf).is_ok() {
            got += 1;
        }
        got
    });
    run_in(c1, &format!("__udp {port}"))?;
    let received = reader
        .join()
        .map_err(|_| anyhow::anyhow!("receiver panicked"))?;
    let sent = p.read(id).map_or(0, |u| u.net_tx_bytes) - n0;
    // Every send_to succeeded; the receiver may drop some (socket buffer), the sender's
    // count is what must match.
    let exact = sent == DATAGRAMS * (PAYLOAD + 28);
    println!(
        "net: eBPF tx {sent} bytes, expected {} ({received} datagrams received)",
        DATAGRAMS * (PAYLOAD + 28)
    );
    // Per-run cost.
    let after = p.prog_stats();
    let cost = |names: &[&str]| -> f64 {
        let (mut n, mut t) = (0u64, 0u64);
        for a in after.iter().filter(|a| names.contains(&a.name)) {
            let b = before.iter().find(|b| b.name == a.name);
            n += a.run_count - b.map_or(0, |b| b.run_count);
            t += a.run_time_ns - b.map_or(0, |b| b.run_time_ns);
        }
        if n == 0 {
            0.0
        } else {
            t as f64 / n as f64
        }
    };
    let sched = cost(&[
        "brim_sched_switch",
        "brim_sched_wakeup",
        "brim_sched_wakeup_new",
    ]);
    let net = cost(&["brim_net_ingress", "brim_net_egress"]);
    println!("ns per run: sched {sched:.1}, net {net:.1}");

    // Agent sampling cost at 200 tasks.
    let cg_name = format!("{name}-tasks");
    let backend = HybridBackend::new(HybridMounts::under(Path::new("/sys/fs/cgroup")), &cg_name);
    backend.prepare()?;
    let mut ids = Vec::new();
    for i in 0..200 {
        let cid = format!("t{i}");
        backend.create(
            &cid,
            &Limits {
                cpus: 0.1,
                ..Default::default()
            },
        )?;
        let dir = backend.unified_path(&cid).context("no cgroup2 dir")?;
        let cgid = cgroup_id(&dir)?;
        p.track(cgid, &policy)?;
        ids.push((cid, cgid));
    }
    let passes = 50;
    let t0 = thread_cpu_ns();
    for _ in 0..passes {
        for (cid, _) in &ids {
            std::hint::black_box(backend.usage(cid)?);
        }
    }
    let polling_ns = (thread_cpu_ns() - t0) as f64 / f64::from(passes);
    let cgids: Vec<u64> = ids.iter().map(|(_, id)| *id).collect();
    let t0 = thread_cpu_ns();
    for _ in 0..passes {
        std::hint::black_box(p.read_many(&cgids));
        for (cid, _) in &ids {
            std::hint::black_box(backend.usage_without_ebpf_counters(cid)?);
        }
    }
    let agent_ns = (thread_cpu_ns() - t0) as f64 / f64::from(passes);
    for (cid, cgid) in &ids {
        p.untrack(*cgid);
        let _ = brim_agent::cgroups::destroy(&backend, cid);
    }
    let _ = brim_agent::cgroups::remove_root(&backend);
    // One pass per second: ns per pass / 1e9 ns * 100 %.
    let (agent_pct, polling_pct) = (agent_ns / 1e7, polling_ns / 1e7);
    println!("200 tasks, 1 s interval: agent (cgroupfs + eBPF maps) {agent_pct:.3} % of a core, cgroupfs polling {polling_pct:.3} %");

    let r = Results {
        sched_ns_per_event: (sched * 10.0).round() / 10.0,
        net_ns_per_packet: (net * 10.0).round() / 10.0,
        cpu_error_pct: (cpu_err * 1000.0).round() / 1000.0,
        net_bytes_exact: exact,
        ctxswitch_slowdown_pct: (slowdown * 100.0).round() / 100.0,
        agent_cpu_pct_200_tasks: (agent_pct * 1000.0).round() / 1000.0,
        polling_cpu_pct_200_tasks: (polling_pct * 1000.0).round() / 1000.0,
    };
    let path = ws.join("bench-results").join("telemetry.json");
    std::fs::write(&path, serde_json::to_string_pretty(&r)? + "\n")?;
    println!("wrote {}", path.display());
    Ok(())
}
