/* Shared definitions of brim's eBPF programs. Every map is keyed by the cgroup id of a
 * task's container (the inode number of its cgroup2 directory). The agent inserts an entry
 * when it creates a container and deletes it when the container goes: programs only update
 * entries that exist, so a map never fills up with cgroups the agent does not manage.
 *
 * The layouts below are mirrored in agent/src/ebpf/abi.rs as arrays of u64: keep them in
 * sync (u64 fields only, no padding). */
#ifndef BRIM_H
#define BRIM_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>

/* Default map size; the agent overrides max_entries to its max tasks at load time. */
#define BRIM_MAX_TASKS 4096
/* log2 buckets of the run-queue wait histogram (ns): bucket i counts waits in [2^i, 2^(i+1)). */
#define BRIM_RUNQ_BUCKETS 40
/* Port ranges a task may bind (the `ports` resource), at most this many. */
#define BRIM_MAX_PORT_RANGES 16

/* brim_sched value (per cpu). */
struct brim_sched_stat {
	__u64 oncpu_ns;
	__u64 runq_ns;
	__u64 runq_count;
	__u64 switches;
	__u64 runq_hist[BRIM_RUNQ_BUCKETS];
};

/* brim_net value (per cpu). */
struct brim_net_stat {
	__u64 rx_bytes;
	__u64 rx_packets;
	__u64 tx_bytes;
	__u64 tx_packets;
	__u64 tx_dropped_bytes;
	__u64 tx_dropped_packets;
};

/* brim_net_limit value: token bucket of the task's egress. */
struct brim_net_limit {
	struct bpf_spin_lock lock;
	__u32 pad;
	__u64 rate_bytes_per_sec;
	__u64 burst_bytes;
	__u64 tokens;
	__u64 last_ns;
};

/* brim_ports value: [lo, hi] port ranges the task may bind; count = used ranges. */
struct brim_ports {
	__u64 count;
	__u64 lo[BRIM_MAX_PORT_RANGES];
	__u64 hi[BRIM_MAX_PORT_RANGES];
};

/* brim_mem value. */
struct brim_mem_stat {
	__u64 oom_kills;
	__u64 reclaim_events;
};

/* v2 cgroup id of any task (bpf_get_current_cgroup_id() only covers the current one). */
static __always_inline __u64 brim_task_cgroup_id(struct task_struct *t)
{
	return BPF_CORE_READ(t, cgroups, dfl_cgrp, kn, id);
}

#endif
