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
use crate::telemetry::Sample;

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
        f64::from(u8::from(agent.telemetry.ebpf_enabled())),
    );
    gauge(
        &mut reg,
        "psi_enabled",
        "1 when pressure stall information (/proc/pressure) is readable; 0: off (see /state psi.reason)",
        f64::from(u8::from(agent.telemetry.psi_enabled())),
    );
    let stats_on = std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled")
        .is_ok_and(|t| t.trim() == "1");
    gauge(
        &mut reg,
        "ebpf_stats_enabled",
        "1 while kernel.bpf_stats_enabled=1 (program run counts and times below are live)",
        f64::from(u8::from(stats_on)),
    );
    let runs = Family::<Labels, FCounter>::default();
    let run_time = Family::<Labels, FCounter>::default();
    for p in agent.telemetry.prog_stats() {
        let l = vec![("program".to_string(), p.name.to_string())];
        runs.get_or_create(&l).inc_by(p.run_count as f64);
        run_time
            .get_or_create(&l)
            .inc_by(p.run_time_ns as f64 / 1e9);
    }
    reg.register(
        "ebpf_program_runs",
        "Runs of each eBPF program (counted while kernel.bpf_stats_enabled=1)",
        runs,
    );
    reg.register(
        "ebpf_program_run_seconds",
        "Time spent in each eBPF program (counted while kernel.bpf_stats_enabled=1)",
        run_time,
    );

    let (connected, states, used) = {
        let st = agent.state();
        let mut states: BTreeMap<&'static str, u64> = BTreeMap::new();
        for t in st.tasks.values() {
            *states.entry(t.state.name()).or_default() += 1;
        }
        (st.connected, states, Agent::used(&st))
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

    let o = &agent.oversubscription;
    gauge(
        &mut reg,
        "oversubscription_enabled",
        "1 when the agent estimates slack and runs revocable tasks (--oversubscribe)",
        f64::from(u8::from(o.enabled())),
    );
    if o.enabled() {
        let evictions = Family::<Labels, FCounter>::default();
        for (reason, n) in o.evictions() {
            evictions
                .get_or_create(&vec![("reason".to_string(), reason.to_string())])
                .inc_by(n as f64);
        }
        reg.register(
            "revocable_evictions",
            "Revocable tasks evicted by the QoS controller, by reason",
            evictions,
        );
        let slack = o.view().slack;
        let slack_f = Family::<Labels, FGauge>::default();
        let used_est = Family::<Labels, FGauge>::default();
        if let Some(e) = slack {
            for (name, v, u) in [
                ("cpus", e.cpus, e.used_cpus),
                ("mem", e.mem_mb, e.used_mem_mb),
            ] {
                let l = vec![("resource".to_string(), name.to_string())];
                slack_f.get_or_create(&l).set(v);
                used_est.get_or_create(&l).set(u);
            }
        }
        reg.register(
            "slack",
            "Published slack estimate: revocable resources the agent lends",
            slack_f,
        );
        reg.register(
            "usage_estimate",
            "What non-revocable tasks are estimated to use (high percentile x margin)",
            used_est,
        );
    }

    per_task(&mut reg, agent);

    let mut out = String::new();
    if let Err(e) = encode(&mut out, &reg) {
        tracing::warn!(error = %e, "cannot encode metrics");
    }
    out
}

/// Per-task series from the newest usage sample of each running task. The registry is built
/// per scrape, so a task's series disappear with the task.
fn per_task(reg: &mut Registry, agent: &Agent) {
    type Get = fn(&Sample) -> f64;
    let counters: [(&str, &str, Get); 12] = [
        ("container_cpu_seconds", "CPU time used by the task's container (eBPF maps, else cgroupfs)", |s| s.cpu_ns as f64 / 1e9),
        ("container_cpu_throttled_seconds", "Time the task's container was throttled by its CPU quota", |s| s.cpu_throttled_ns as f64 / 1e9),
        ("container_oncpu_ebpf_seconds", "On-CPU time of the task's threads seen by the eBPF scheduler probes (as of their last context switch)", |s| s.oncpu_ebpf_ns as f64 / 1e9),
        ("container_runq_wait_seconds", "Time the task's threads waited in a run queue (eBPF)", |s| s.runq_wait_ns as f64 / 1e9),
        ("container_runq_waits", "Run-queue waits of the task's threads (eBPF)", |s| s.runq_waits as f64),
        ("container_oom_events", "OOM kills in the task's container", |s| s.oom_events as f64),
        ("container_network_receive_bytes", "IP-layer bytes received by the task's sockets (eBPF)", |s| s.net_rx_bytes as f64),
        ("container_network_transmit_bytes", "IP-layer bytes sent by the task's sockets (eBPF)", |s| s.net_tx_bytes as f64),
        ("container_network_receive_packets", "Packets (skbs) received by the task's sockets (eBPF)", |s| s.net_rx_packets as f64),
        ("container_network_transmit_packets", "Packets (skbs) sent by the task's sockets (eBPF)", |s| s.net_tx_packets as f64),
        ("container_network_transmit_dropped_packets", "Packets dropped by the task's egress limit (eBPF)", |s| s.net_tx_dropped_packets as f64),
        ("container_bind_denied", "Binds of ports outside the task's allocation, denied with EPERM (eBPF)", |s| s.bind_denied as f64),
    ];
    let gauges: [(&str, &str, Get); 3] = [
        (
            "container_memory_bytes",
            "Memory charged to the task's container",
            |s| s.mem_current_bytes as f64,
        ),
        (
            "container_memory_rss_bytes",
            "Anonymous (RSS) memory of the task's container",
            |s| s.mem_rss_bytes as f64,
        ),
        (
            "container_memory_cache_bytes",
            "Page cache charged to the task's container",
            |s| s.mem_cache_bytes as f64,
        ),
    ];
    let latest = agent.telemetry.latest();
    let label_sets: Vec<Labels> = latest
        .iter()
        .map(|(k, l, _)| {
            vec![
                ("framework_id".into(), k.0.clone()),
                ("task_id".into(), k.1.clone()),
                ("task_name".into(), l.task_name.clone()),
                ("role".into(), l.role.clone()),
                ("executor_id".into(), l.executor_id.clone()),
            ]
        })
        .collect();
    for (name, help, get) in counters {
        let f = Family::<Labels, FCounter>::default();
        for ((_, _, s), l) in latest.iter().zip(&label_sets) {
            f.get_or_create(l).inc_by(get(s));
        }
        reg.register(name, help, f);
    }
    for (name, help, get) in gauges {
        let f = Family::<Labels, FGauge>::default();
        for ((_, _, s), l) in latest.iter().zip(&label_sets) {
            f.get_or_create(l).set(get(s));
        }
        reg.register(name, help, f);
    }
}

/// The classic Prometheus text format (0.0.4) of an OpenMetrics exposition, for clients that
/// do not ask for OpenMetrics (curl, `promtool check metrics`): counter families are named
/// with their `_total` suffix, and `# EOF` / `# UNIT` lines go.
pub(crate) fn to_classic_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 256);
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let suffix = if counters.contains(name) {
                    "_total"
                } else {
                    ""
                };
                out.push_str(&format!("{prefix}{name}{suffix} {tail}\n"));
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classic_text() {
        let om = "# HELP a_runs Runs.\n# TYPE a_runs counter\na_runs_total{p=\"x\"} 1.0\n# HELP b Bytes.\n# TYPE b gauge\n# UNIT b bytes\nb 2.0\n# EOF\n";
        assert_eq!(
            to_classic_text(om),
            "# HELP a_runs_total Runs.\n# TYPE a_runs_total counter\na_runs_total{p=\"x\"} 1.0\n# HELP b Bytes.\n# TYPE b gauge\nb 2.0\n"
        );
    }
}
