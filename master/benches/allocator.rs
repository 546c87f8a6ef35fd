//! Criterion bench of one full allocation cycle (10,000 agents x 1,000 frameworks, the
//! reference scenario of `cargo xtask bench allocator`, which also times the baseline).

use std::time::Duration;

use brim_master::allocator::{Allocator, AllocatorConfig};
use brim_proto::{RangeSet, Resources};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};

fn scenario(agents: usize, frameworks: usize) -> Allocator {
    let mut total = Resources::cpus_mem(32.0, 256.0 * 1024.0).expect("valid resources");
    total
        .set_ranges("ports", RangeSet::new(vec![(31_000, 32_000)]))
        .expect("valid ports");
    let mut a = Allocator::new(AllocatorConfig::default());
    let roles = (frameworks / 10).max(1);
    for i in 0..agents {
        a.add_agent(&format!("agent-{i:06}"), total.clone(), &[]);
    }
    for i in 0..frameworks {
        a.add_framework(
            &format!("framework-{i:05}"),
            &format!("role-{:04}", i % roles),
        );
    }
    a
}

fn full_cycle(c: &mut Criterion) {
    let base = scenario(10_000, 1_000);
    let mut group = c.benchmark_group("allocator");
    group.sample_size(20);
    group.bench_function("allocate_10k_agents_1k_frameworks", |b| {
        b.iter_batched(
            || base.clone(),
            |mut a| a.allocate(Duration::from_secs(1)),
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, full_cycle);
criterion_main!(benches);
