//! Dev automation for brim: `cargo xtask <task>`. No product logic lives here.
//!
//! Tasks:
//! - `bench allocator [--quick]`: times full allocation cycles of the allocator and of the
//!   baseline on the reference scenario and writes `bench-results/allocator.json`.
//! - `ebpf [--out DIR] [--check]`: builds the agent's eBPF objects (see `ebpf.rs`).
//! - `bench telemetry`: measures the agent's eBPF telemetry (see `telemetry.rs`) and writes
//!   `bench-results/telemetry.json`.
//! - `bench launch [--tasks N]`: native task launches on one agent (see `launch.rs`), writes
//!   `bench-results/launch.json`; OCI launches against plain crun (`oci_launch.rs`),
//!   `bench-results/launch-oci.json`.
//! - `bench oversub [--phase-secs N]`: oversubscription on one agent (see `oversub.rs`), writes
//!   `bench-results/oversub.json`.

mod ebpf;
mod failover;
mod launch;
mod oci_launch;
mod oversub;
mod telemetry;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use brim_master::allocator::{Allocation, Allocator, AllocatorConfig, BaselineAllocator};
use brim_proto::{RangeSet, Resources};
use serde::Serialize;

const USAGE: &str =
    "usage: cargo xtask bench allocator [--quick] | bench telemetry | bench launch [--tasks N] | bench oversub [--phase-secs N] | ebpf [--out DIR] [--check]";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["bench", "allocator", rest @ ..] => {
            let quick = match rest {
                [] => false,
                ["--quick"] => true,
                _ => bail!("unknown arguments {rest:?}; {USAGE}"),
            };
            bench_allocator(quick)
        }
        ["ebpf", rest @ ..] => ebpf::ebpf(&workspace_root(), rest),
        ["bench", "failover", rest @ ..] => failover::bench_failover(&workspace_root(), rest),
        ["bench", "telemetry"] => telemetry::bench_telemetry(&workspace_root()),
        ["bench", "launch", rest @ ..] => launch::bench_launch(&workspace_root(), rest),
        ["__launch-agent", rest @ ..] => launch::agent_main(rest),
        ["bench", "oversub", rest @ ..] => oversub::bench_oversub(&workspace_root(), rest),
        ["__oversub-agent", rest @ ..] => oversub::agent_main(rest),
        [w, ..] if w.starts_with("__oversub-") => oversub::workload(&args),
        [w, ..] if w.starts_with("__") => telemetry::workload(&args),
        _ => bail!("unknown task {args:?}; {USAGE}"),
    }
}

/// One row of `bench-results/allocator.json`.
#[derive(Serialize)]
struct Row {
    agents: usize,
    frameworks: usize,
    cycle_ms: f64,
    baseline_ms: f64,
}

/// Repetitions of the allocator's cycle per size (the median is reported).
const CYCLE_REPS: usize = 9;
/// At most this many baseline repetitions ...
const BASELINE_MAX_REPS: usize = 5;
/// ... and no new one once this much time went into the baseline for a size.
const BASELINE_BUDGET: Duration = Duration::from_secs(20);

fn bench_allocator(quick: bool) -> Result<()> {
    let (agent_sizes, framework_sizes): (&[usize], &[usize]) = if quick {
        (&[1_000, 10_000], &[100, 1_000])
    } else {
        (&[1_000, 10_000, 50_000], &[100, 1_000, 3_000])
    };
    println!("scenario: roles = frameworks/10, agents of cpus:32;mem:262144;ports:[31000-32000],");
    println!("every framework wants more than it gets; median of full allocate() cycles from zero");
    println!();
    println!("| agents | frameworks | cycle ms | baseline ms | baseline/cycle | 1-agent incr µs |");
    println!("|-------:|-----------:|---------:|------------:|---------------:|----------------:|");
    let mut rows = Vec::new();
    for &agents in agent_sizes {
        for &frameworks in framework_sizes {
            let (row, incremental_us) = bench_one(agents, frameworks)?;
            println!(
                "| {:>6} | {:>10} | {:>8.2} | {:>11.1} | {:>13.0}x | {:>14.0} |",
                row.agents,
                row.frameworks,
                row.cycle_ms,
                row.baseline_ms,
                row.baseline_ms / row.cycle_ms,
                incremental_us,
            );
            rows.push(row);
        }
    }
    let path = workspace_root()
        .join("bench-results")
        .join("allocator.json");
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let json = serde_json::to_string_pretty(&rows)?;
    std::fs::write(&path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
    println!();
    println!("wrote {}", path.display());
    Ok(())
}

fn workspace_root() -> PathBuf {
    let xtask = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    xtask.parent().map_or(xtask.clone(), PathBuf::from)
}

fn agent_resources() -> Result<Resources> {
    let mut r = Resources::cpus_mem(32.0, 256.0 * 1024.0)?;
    r.set_ranges("ports", RangeSet::new(vec![(31_000, 32_000)]))?;
    Ok(r)
}

/// The same calls on both allocators, so the scenario is built once.
macro_rules! build_scenario {
    ($alloc:expr, $agents:expr, $frameworks:expr, $total:expr) => {{
        let mut a = $alloc;
        let roles = ($frameworks / 10).max(1);
        for i in 0..$agents {
            a.add_agent(&format!("agent-{i:06}"), $total.clone(), &[]);
        }
        for i in 0..$frameworks {
            a.add_framework(
                &format!("framework-{i:05}"),
                &format!("role-{:04}", i % roles),
            );
        }
        a
    }};
}

fn bench_one(agents: usize, frameworks: usize) -> Result<(Row, f64)> {
    let total = agent_resources()?;
    let now = Duration::from_secs(1);

    let fast = build_scenario!(
        Allocator::new(AllocatorConfig::default()),
        agents,
        frameworks,
        total
    );
    let mut cycle = Vec::new();
    let mut decided: Vec<Allocation> = Vec::new();
    let mut after = fast.clone();
    for _ in 0..CYCLE_REPS {
        let mut fresh = fast.clone();
        let start = Instant::now();
        let allocs = fresh.allocate(now);
        cycle.push(start.elapsed());
        decided = allocs;
        after = fresh;
    }
    if decided.len() != agents {
        bail!(
            "allocator offered {} agents out of {agents}: the scenario is broken",
            decided.len()
        );
    }
    drop(fast);
    let incremental_us = time_incremental(&mut after, &decided, now);
    drop(after);

    let base = build_scenario!(
        BaselineAllocator::new(AllocatorConfig::default()),
        agents,
        frameworks,
        total
    );
    let mut baseline = Vec::new();
    let mut spent = Duration::ZERO;
    while baseline.len() < BASELINE_MAX_REPS && spent < BASELINE_BUDGET {
        let mut fresh = base.clone();
        let start = Instant::now();
        let allocs = fresh.allocate(now);
        let took = start.elapsed();
        baseline.push(took);
        spent += took;
        if baseline.len() == 1 && allocs != decided {
            bail!("allocator and baseline decided differently for {agents} x {frameworks}");
        }
    }
    Ok((
        Row {
            agents,
            frameworks,
            cycle_ms: median_ms(&mut cycle),
            baseline_ms: median_ms(&mut baseline),
        },
        incremental_us,
    ))
}

/// Median time of an incremental cycle over one agent whose offer was just declined
/// (what the master runs after a decline), on the state a full cycle left behind.
fn time_incremental(a: &mut Allocator, decided: &[Allocation], now: Duration) -> f64 {
    let mut samples = Vec::new();
    for offer in decided.iter().step_by((decided.len() / 9).max(1)).take(9) {
        a.recover(
            &offer.framework_id,
            &offer.agent_id,
            &offer.resources,
            None,
            now,
        );
        let ids = [offer.agent_id.clone()];
        let start = Instant::now();
        let allocs = a.allocate_agents(&ids, now);
        samples.push(start.elapsed());
        drop(allocs);
    }
    median_ms(&mut samples) * 1000.0
}

fn median_ms(samples: &mut [Duration]) -> f64 {
    samples.sort_unstable();
    samples
        .get(samples.len() / 2)
        .map_or(0.0, |d| (d.as_secs_f64() * 1e6).round() / 1e3)
}
