// SPDX-License-Identifier: GPL-2.0
/* sched: on-CPU time and run-queue wait (total + log2 histogram) per task cgroup, from one
 * program on tp_btf/sched_switch that only looks at the task leaving the CPU.
 *
 * The kernel already keeps both numbers per thread: se.sum_exec_runtime (what cpuacct and
 * cpu.stat charge) and sched_info.run_delay/pcount (CONFIG_SCHED_INFO: total run-queue wait
 * and number of arrivals on a CPU). At each switch-out the program adds the thread's deltas
 * since its previous switch-out to its cgroup, so it needs no timestamps, no wakeup programs
 * and no bpf_ktime_get_ns().
 *
 * Cost per event: untracked cgroup = 4 loads + an inlined array lookup (brim_filter).
 * Tracked = + two inlined array lookups (brim_slot_info, and brim_sched: per cpu, indexed by
 * the slot, no atomics) + one task-storage lookup (the thread's previous counters). */
#include "brim.h"

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, BRIM_MAX_TASKS);
	__type(key, __u32);
	__type(value, struct brim_sched_stat);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} brim_sched SEC(".maps");

/* Per thread (created only for threads of tracked cgroups): the kernel counters at its
 * previous switch-out. Not pinned: after an agent restart a thread first seen again starts
 * from its current counters (see `since_ns`), never double counts. A thread that moved
 * between tracked cgroups keeps them: what it ran since its last switch-out goes to the
 * cgroup it is in now. */
struct brim_thread {
	__u64 sum_exec;
	__u64 run_delay;
	__u64 pcount;
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct brim_thread);
} brim_thread_ts SEC(".maps");

static __always_inline __u32 log2_bucket(__u64 v)
{
	__u32 r = 0;
	/* Bounded shifts: at most 6 steps. */
	if (v >= (1ULL << 32)) { v >>= 32; r += 32; }
	if (v >= (1ULL << 16)) { v >>= 16; r += 16; }
	if (v >= (1ULL << 8)) { v >>= 8; r += 8; }
	if (v >= (1ULL << 4)) { v >>= 4; r += 4; }
	if (v >= (1ULL << 2)) { v >>= 2; r += 2; }
	if (v >= (1ULL << 1)) { r += 1; }
	if (r >= BRIM_RUNQ_BUCKETS)
		r = BRIM_RUNQ_BUCKETS - 1;
	return r;
}

SEC("tp_btf/sched_switch")
int BPF_PROG(brim_sched_switch, bool preempt, struct task_struct *prev, struct task_struct *next,
	     unsigned int prev_state)
{
	__u32 slot;
	struct brim_slot *si = brim_slot_of(brim_task_cgroup_id(prev), &slot);
	if (!si)
		return 0;
	struct brim_thread *t = bpf_task_storage_get(&brim_thread_ts, prev, 0, 0);
	if (!t) {
		t = bpf_task_storage_get(&brim_thread_ts, prev, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
		if (!t)
			return 0;
		/* Born since the agent tracks the cgroup: all of its time is the task's. Else
		 * (running before this agent attached): count from now on. */
		if (prev->start_time < si->since_ns) {
			t->sum_exec = prev->se.sum_exec_runtime;
			t->run_delay = prev->sched_info.run_delay;
			t->pcount = prev->sched_info.pcount;
		}
	}

	struct brim_sched_stat *s = bpf_map_lookup_elem(&brim_sched, &slot);
	if (!s)
		return 0;
	__u64 sum = prev->se.sum_exec_runtime;
	if (sum > t->sum_exec)
		s->oncpu_ns += sum - t->sum_exec;
	t->sum_exec = sum;
	__u64 pc = prev->sched_info.pcount;
	if (pc > t->pcount) {
		__u64 rd = prev->sched_info.run_delay;
		__u64 n = pc - t->pcount;
		__u64 wait = rd > t->run_delay ? rd - t->run_delay : 0;
		s->runq_ns += wait;
		s->runq_count += n;
		__u32 b = log2_bucket(n == 1 ? wait : wait / n);
		if (b < BRIM_RUNQ_BUCKETS)
			s->runq_hist[b] += n;
		t->run_delay = rd;
		t->pcount = pc;
	}
	s->switches++;
	return 0;
}
