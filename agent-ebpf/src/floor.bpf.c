// SPDX-License-Identifier: GPL-2.0
/* floor: empty programs on the same hooks as brim's, for `cargo xtask bench telemetry` only
 * (the agent never loads them). With kernel.bpf_stats_enabled every program run is timed by
 * two clock reads and a per-cpu stats update around it; on a VM that accounting alone costs
 * tens of ns. Attached next to brim's programs, an empty program sees the same events, so
 * its run_time_ns per run is the floor to subtract: brim's own cost is the difference. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

SEC("cgroup_skb/ingress")
int brim_floor_ingress(struct __sk_buff *skb)
{
	return 1;
}

SEC("cgroup_skb/egress")
int brim_floor_egress(struct __sk_buff *skb)
{
	return 1;
}

SEC("tp_btf/sched_switch")
int BPF_PROG(brim_floor_switch, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	return 0;
}
