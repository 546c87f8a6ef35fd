//! `/metrics` in the Prometheus text format, built fresh on each scrape from the agent's
//! state and its containers' cgroup counters.

use std::collections::BTreeMap;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

use crate::agent::Agent;

type Labels = Vec<(String, String)>;
type FGauge = Gauge<f64, AtomicU64>;
type FCounter = Counter<f64, AtomicU64>;

fn gauge(reg: &mut Registry, name: &str, help: &str, value: f64) {
    let g = FGauge::default();
    g.set(value);
    reg.register(name, help, g);
}

/// Renders the agent's metrics. Reads cgroup files: call from a blocking thread.
pub(crate) fn render(agent: &Agent) -> String {
    let mut reg = Registry::with_prefix("brim_agent");
    gauge(
        &mut reg,
        "cgroups_enabled",
        "1 when tasks run in cgroups, 0 when the agent runs them unisolated",
        f64::from(u8::from(agent.cgroups.is_some())),
    );
    gauge(
        &mut reg,
        "ebpf_enabled",
        "1 when eBPF telemetry is active; 0: usage comes from cgroupfs polling only",
        0.0,
    );

    let (connected, states, used, names) = {
        let st = agent.state();
        let mut states: BTreeMap<&'static str, u64> = BTreeMap::new();
        let mut names = BTreeMap::new();
        for t in st.tasks.values() {
            *states.entry(t.state.name()).or_default() += 1;
            names.insert(
                (t.framework_id.clone(), t.info.task_id.clone()),
                t.info.name.clone(),
            );
        }
        (st.connected, states, Agent::used(&st), names)
    };
    gauge(
        &mut reg,
        "master_connected",
        "1 while the agent is registered with a master",
        f64::from(u8::from(connected)),
    );
    let tasks = Family::<Labels, FGauge>::default();
    for (state, n) in states {
        tasks
            .get_or_create(&vec![("state".into(), state.into())])
            .set(n as f64);
    }
    reg.register("tasks", "Tasks known to the agent, by state", tasks);
    let total = Family::<Labels, FGauge>::default();
    let used_f = Family::<Labels, FGauge>::default();
    for (name, v) in agent.total.scalars() {
        let l = vec![("resource".to_string(), name.to_string())];
        total.get_or_create(&l).set(v);
        used_f.get_or_create(&l).set(used.scalar(name));
    }
    reg.register("resources", "Scalar resources the agent offers", total);
    reg.register(
        "resources_used",
        "Scalar resources held by live tasks",
        used_f,
    );

    let cpu = Family::<Labels, FCounter>::default();
    let throttled = Family::<Labels, FCounter>::default();
    let oom = Family::<Labels, FCounter>::default();
    let mem = Family::<Labels, FGauge>::default();
    let rss = Family::<Labels, FGauge>::default();
    for u in agent.usage() {
        let name = names
            .get(&(u.framework_id.clone(), u.task_id.clone()))
            .cloned()
            .unwrap_or_default();
        let l: Labels = vec![
            ("framework_id".into(), u.framework_id.clone()),
            ("task_id".into(), u.task_id.clone()),
            ("task_name".into(), name),
        ];
        cpu.get_or_create(&l).inc_by(u.cpu_ns as f64 / 1e9);
        throttled
            .get_or_create(&l)
            .inc_by(u.cpu_throttled_ns as f64 / 1e9);
        oom.get_or_create(&l).inc_by(u.oom_events as f64);
        mem.get_or_create(&l).set(u.mem_current_bytes as f64);
        rss.get_or_create(&l).set(u.mem_rss_bytes as f64);
    }
    reg.register(
        "container_cpu_seconds",
        "CPU time used by the task's container",
        cpu,
    );
    reg.register(
        "container_cpu_throttled_seconds",
        "Time the task's container was throttled by its CPU quota",
        throttled,
    );
    reg.register(
        "container_oom_events",
        "OOM kills in the task's container",
        oom,
    );
    reg.register(
        "container_memory_bytes",
        "Memory charged to the task's container",
        mem,
    );
    reg.register(
        "container_memory_rss_bytes",
        "Anonymous (RSS) memory of the task's container",
        rss,
    );

    let mut out = String::new();
    if let Err(e) = encode(&mut out, &reg) {
        tracing::warn!(error = %e, "cannot encode metrics");
    }
    out
}
