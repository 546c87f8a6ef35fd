// SPDX-License-Identifier: GPL-2.0
/* sched: on-CPU time and run-queue wait (total + log2 histogram) per task cgroup.
 * tp_btf/sched_wakeup(_new) stamps when a task becomes runnable, tp_btf/sched_switch closes
 * the previous task's on-CPU slice and the next task's run-queue wait. */
#include "brim.h"

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, BRIM_MAX_TASKS);
	__type(key, __u64);
	__type(value, struct brim_sched_stat);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} brim_sched SEC(".maps");

/* Per thread: when it went on CPU, when it became runnable. Not pinned: after an agent
 * restart nothing is stamped, so no slice spans the time the programs were detached. */
struct brim_thread {
	__u64 oncpu_ts;
	__u64 runnable_ts;
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

static __always_inline void runnable(struct task_struct *p)
{
	__u64 cg = brim_task_cgroup_id(p);
	if (!bpf_map_lookup_elem(&brim_sched, &cg))
		return;
	struct brim_thread *t = bpf_task_storage_get(&brim_thread_ts, p, 0,
						     BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (t)
		t->runnable_ts = bpf_ktime_get_ns();
}

SEC("tp_btf/sched_wakeup")
int BPF_PROG(brim_sched_wakeup, struct task_struct *p)
{
	runnable(p);
	return 0;
}

SEC("tp_btf/sched_wakeup_new")
int BPF_PROG(brim_sched_wakeup_new, struct task_struct *p)
{
	runnable(p);
	return 0;
}

SEC("tp_btf/sched_switch")
int BPF_PROG(brim_sched_switch, bool preempt, struct task_struct *prev, struct task_struct *next,
	     unsigned int prev_state)
{
	__u64 now = bpf_ktime_get_ns();

	/* prev leaves the CPU (it is still `current`). */
	__u64 cg = bpf_get_current_cgroup_id();
	struct brim_sched_stat *s = bpf_map_lookup_elem(&brim_sched, &cg);
	if (s) {
		struct brim_thread *t = bpf_task_storage_get(&brim_thread_ts, prev, 0, 0);
		if (t) {
			if (t->oncpu_ts && now > t->oncpu_ts)
				s->oncpu_ns += now - t->oncpu_ts;
			t->oncpu_ts = 0;
			/* Preempted while runnable: it waits in the run queue from now. */
			t->runnable_ts = prev_state == 0 ? now : 0;
		} else if (prev_state == 0) {
			t = bpf_task_storage_get(&brim_thread_ts, prev, 0,
						 BPF_LOCAL_STORAGE_GET_F_CREATE);
			if (t)
				t->runnable_ts = now;
		}
		s->switches++;
	}

	/* next goes on CPU. */
	cg = brim_task_cgroup_id(next);
	s = bpf_map_lookup_elem(&brim_sched, &cg);
	if (!s)
		return 0;
	struct brim_thread *t = bpf_task_storage_get(&brim_thread_ts, next, 0,
						     BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!t)
		return 0;
	if (t->runnable_ts && now > t->runnable_ts) {
		__u64 wait = now - t->runnable_ts;
		s->runq_ns += wait;
		s->runq_count++;
		__u32 b = log2_bucket(wait);
		if (b < BRIM_RUNQ_BUCKETS)
			s->runq_hist[b]++;
	}
	t->runnable_ts = 0;
	t->oncpu_ts = now;
	return 0;
}
