// SPDX-License-Identifier: GPL-2.0
/* sock: a task may bind only the ports of its `ports` resource (and port 0, which asks the
 * kernel for an ephemeral one); any other bind fails with EPERM. Cgroups the agent does not
 * manage are not restricted. */
#include "brim.h"

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, BRIM_MAX_TASKS);
	__type(key, __u64);
	__type(value, struct brim_ports);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} brim_ports SEC(".maps");

/* Denied binds per cgroup, for the agent's metrics. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, BRIM_MAX_TASKS);
	__type(key, __u64);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} brim_bind_denied SEC(".maps");

static __always_inline int check_bind(struct bpf_sock_addr *ctx)
{
	__u64 cg = bpf_get_current_cgroup_id();
	struct brim_ports *p = bpf_map_lookup_elem(&brim_ports, &cg);
	if (!p)
		return 1;
	__u64 port = bpf_ntohs(ctx->user_port);
	if (port == 0)
		return 1;
	for (int i = 0; i < BRIM_MAX_PORT_RANGES; i++) {
		if (i >= p->count)
			break;
		if (port >= p->lo[i] && port <= p->hi[i])
			return 1;
	}
	__u64 *d = bpf_map_lookup_elem(&brim_bind_denied, &cg);
	if (d)
		__sync_fetch_and_add(d, 1);
	return 0;
}

SEC("cgroup/bind4")
int brim_bind4(struct bpf_sock_addr *ctx)
{
	return check_bind(ctx);
}

SEC("cgroup/bind6")
int brim_bind6(struct bpf_sock_addr *ctx)
{
	return check_bind(ctx);
}
