// SPDX-License-Identifier: GPL-2.0
/* net: IP-layer bytes and packets in and out of each task cgroup (cgroup_skb), and an
 * optional egress token bucket: packets over the rate are dropped with a congestion
 * notification so TCP backs off.
 *
 * Cost per packet: one bpf_skb_cgroup_id() and an inlined array lookup (brim_filter) for
 * untracked cgroups; two more inlined array lookups for tracked ones (brim_slot_info, the
 * per-cpu counters: no atomics); the token bucket (hash lookup + spin lock) only for cgroups
 * marked `limited`. */
#include "brim.h"

char LICENSE[] SEC("license") = "GPL";

/* Indexed by the cgroup's slot (see brim.h). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, BRIM_MAX_TASKS);
	__type(key, __u32);
	__type(value, struct brim_net_stat);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} brim_net SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, BRIM_MAX_TASKS);
	__type(key, __u64);
	__type(value, struct brim_net_limit);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} brim_net_limit SEC(".maps");

/* cgroup_skb verdicts. */
#define BRIM_SKB_DROP 0
#define BRIM_SKB_PASS 1
#define BRIM_SKB_DROP_CN 2

SEC("cgroup_skb/ingress")
int brim_net_ingress(struct __sk_buff *skb)
{
	__u64 cg = bpf_skb_cgroup_id(skb);
	__u32 slot;
	if (!brim_slot_of(cg, &slot))
		return BRIM_SKB_PASS;
	struct brim_net_stat *s = bpf_map_lookup_elem(&brim_net, &slot);
	if (s) {
		s->rx_bytes += skb->len;
		s->rx_packets++;
	}
	return BRIM_SKB_PASS;
}

SEC("cgroup_skb/egress")
int brim_net_egress(struct __sk_buff *skb)
{
	__u64 cg = bpf_skb_cgroup_id(skb);
	__u32 slot;
	if (!brim_slot_of(cg, &slot))
		return BRIM_SKB_PASS;
	struct brim_net_stat *s = bpf_map_lookup_elem(&brim_net, &slot);
	if (!s)
		return BRIM_SKB_PASS;
	__u32 len = skb->len;
	struct brim_net_limit *l = s->limited ? bpf_map_lookup_elem(&brim_net_limit, &cg) : 0;
	if (l) {
		__u64 now = bpf_ktime_get_ns();
		int pass;
		bpf_spin_lock(&l->lock);
		if (now > l->last_ns) {
			__u64 add = (now - l->last_ns) * l->rate_bytes_per_sec / 1000000000ULL;
			/* Keep the remainder for the next packet: only move last_ns by whole bytes. */
			if (add > 0) {
				l->tokens += add;
				if (l->tokens > l->burst_bytes)
					l->tokens = l->burst_bytes;
				l->last_ns = now;
			}
		}
		pass = l->tokens >= len;
		if (pass)
			l->tokens -= len;
		bpf_spin_unlock(&l->lock);
		if (!pass) {
			s->tx_dropped_bytes += len;
			s->tx_dropped_packets++;
			return BRIM_SKB_DROP_CN;
		}
	}
	s->tx_bytes += len;
	s->tx_packets++;
	return BRIM_SKB_PASS;
}
