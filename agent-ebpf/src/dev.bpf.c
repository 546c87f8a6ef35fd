// SPDX-License-Identifier: GPL-2.0
/* dev: device allow-list of task cgroups (cgroup/dev, checked on open and mknod of device
 * nodes). Tasks may use the devices every process expects (null, zero, full, random,
 * urandom, tty, console, ptmx, pseudo-terminals); any other device, every block device
 * included, fails with EPERM. Cgroups the agent does not track are not restricted. */
#include "brim.h"

/* uapi bpf.h, not in vmlinux.h (macros). */
#define BRIM_DEVCG_DEV_CHAR 2

char LICENSE[] SEC("license") = "GPL";

/* Denied device accesses per slot, for the agent's metrics. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, BRIM_MAX_TASKS);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} brim_dev_denied SEC(".maps");

static __always_inline int allowed_char(__u32 major, __u32 minor)
{
	switch (major) {
	case 1: /* mem: null, zero, full, random, urandom */
		return minor == 3 || minor == 5 || minor == 7 || minor == 8 || minor == 9;
	case 5: /* tty, console, ptmx */
		return minor <= 2;
	default: /* pseudo-terminal slaves (UNIX98_PTY_SLAVE_MAJOR .. + 7) */
		return major >= 136 && major <= 143;
	}
}

SEC("cgroup/dev")
int brim_dev(struct bpf_cgroup_dev_ctx *ctx)
{
	__u32 slot;
	if (!brim_slot_of(bpf_get_current_cgroup_id(), &slot))
		return 1;
	__u32 type = ctx->access_type & 0xFFFF;
	if (type == BRIM_DEVCG_DEV_CHAR && allowed_char(ctx->major, ctx->minor))
		return 1;
	__u64 *d = bpf_map_lookup_elem(&brim_dev_denied, &slot);
	if (d)
		*d += 1;
	return 0;
}
