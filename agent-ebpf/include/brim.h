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
/* Entries of brim_filter (a power of two): the cheap "is this cgroup tracked?" test. */
#define BRIM_FILTER_SLOTS 65536

/* brim_slot_info value: the cgroup a slot belongs to (0: free) and when the agent
 * (re)started tracking it (CLOCK_MONOTONIC ns). */
struct brim_slot {
	__u64 cgid;
	__u64 since_ns;
};

/* Every tracked cgroup has a slot (0 .. max tasks - 1) assigned by the agent; the per-cpu
 * counters (brim_sched, brim_net) are arrays indexed by it, so their lookups are inlined by
 * the verifier (no helper call, no hashing).
 *
 * brim_filter, indexed by (cgroup id & (BRIM_FILTER_SLOTS - 1)): low 32 bits = how many
 * tracked cgroups fall in this bucket, high 32 bits = slot + 1 of the only one when there is
 * exactly one. So an event of an untracked cgroup (almost all of them on a busy host) costs
 * one inlined array lookup, a tracked one two (filter + brim_slot_info to confirm the id);
 * only buckets shared by several tracked cgroups need the brim_slots hash. The three maps
 * are shared by every object through their pins. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, BRIM_FILTER_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} brim_filter SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, BRIM_MAX_TASKS);
	__type(key, __u32);
	__type(value, struct brim_slot);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} brim_slot_info SEC(".maps");

/* cgroup id -> slot, for buckets of brim_filter with more than one tracked cgroup. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, BRIM_MAX_TASKS);
	__type(key, __u64);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} brim_slots SEC(".maps");

/* The slot of a tracked cgroup (and its brim_slot_info entry); NULL when untracked. */
static __always_inline struct brim_slot *brim_slot_of(__u64 cg, __u32 *slot)
{
	__u32 k = cg & (BRIM_FILTER_SLOTS - 1);
	__u64 *f = bpf_map_lookup_elem(&brim_filter, &k);
	if (!f || !(__u32)*f)
		return 0;
	__u32 s = *f >> 32;
	if (s) {
		s -= 1;
	} else {
		__u32 *sp = bpf_map_lookup_elem(&brim_slots, &cg);
		if (!sp)
			return 0;
		s = *sp;
	}
	struct brim_slot *si = bpf_map_lookup_elem(&brim_slot_info, &s);
	if (!si || si->cgid != cg)
		return 0;
	*slot = s;
	return si;
}

/* brim_sched value (per cpu). */
struct brim_sched_stat {
	__u64 oncpu_ns;
	__u64 runq_ns;
	__u64 runq_count;
	__u64 switches;
	__u64 runq_hist[BRIM_RUNQ_BUCKETS];
};

/* brim_net value (per cpu). `limited`: the cgroup has a brim_net_limit entry (written by
 * the agent on every cpu), so unlimited tasks skip that lookup. */
struct brim_net_stat {
	__u64 rx_bytes;
	__u64 rx_packets;
	__u64 tx_bytes;
	__u64 tx_packets;
	__u64 tx_dropped_bytes;
	__u64 tx_dropped_packets;
	__u64 limited;
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

/* Device rules per task (cgroup/dev) on top of the built-in allow-list, at most this many. */
#define BRIM_MAX_DEV_RULES 16
/* One rule in a u64: minor (bits 0-31, 0xffffffff: any), major (bits 32-47, 0xffff: any),
 * device types (bits 48-55: BPF_DEVCG_DEV_BLOCK 1 | BPF_DEVCG_DEV_CHAR 2), accesses
 * allowed (bits 56-63: BPF_DEVCG_ACC_MKNOD 1 | READ 2 | WRITE 4). */
#define BRIM_DEV_ANY_MINOR 0xffffffffULL
#define BRIM_DEV_ANY_MAJOR 0xffffULL

/* brim_dev_allow value (indexed by slot): count = used rules. */
struct brim_dev_allow {
	__u64 count;
	__u64 rule[BRIM_MAX_DEV_RULES];
};

/* brim_mem value. */
struct brim_mem_stat {
	__u64 oom_kills;
	__u64 reclaim_events;
};

/* v2 cgroup id of a task given as a BTF pointer (tp_btf arguments): plain loads, no helper
 * calls (BPF_CORE_READ would cost one bpf_probe_read_kernel per hop). */
static __always_inline __u64 brim_task_cgroup_id(struct task_struct *t)
{
	return t->cgroups->dfl_cgrp->kn->id;
}

#endif
