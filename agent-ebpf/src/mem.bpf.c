// SPDX-License-Identifier: GPL-2.0
/* mem: OOM kills (tp_btf/mark_victim, attributed to the victim's cgroup) and memcg reclaim
 * events (tp_btf/mm_vmscan_memcg_reclaim_begin, attributed to the allocating task's cgroup).
 * Memory sizes themselves come from cgroupfs. */
#include "brim.h"

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, BRIM_MAX_TASKS);
	__type(key, __u64);
	__type(value, struct brim_mem_stat);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} brim_mem SEC(".maps");

SEC("tp_btf/mark_victim")
int BPF_PROG(brim_oom_victim, struct task_struct *task)
{
	__u64 cg = brim_task_cgroup_id(task);
	__u32 slot;
	if (!brim_slot_of(cg, &slot))
		return 0;
	struct brim_mem_stat *s = bpf_map_lookup_elem(&brim_mem, &cg);
	if (s)
		__sync_fetch_and_add(&s->oom_kills, 1);
	return 0;
}

SEC("tp_btf/mm_vmscan_memcg_reclaim_begin")
int BPF_PROG(brim_memcg_reclaim, int order, gfp_t gfp_flags)
{
	__u64 cg = bpf_get_current_cgroup_id();
	__u32 slot;
	if (!brim_slot_of(cg, &slot))
		return 0;
	struct brim_mem_stat *s = bpf_map_lookup_elem(&brim_mem, &cg);
	if (s)
		__sync_fetch_and_add(&s->reclaim_events, 1);
	return 0;
}
