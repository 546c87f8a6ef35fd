// SPDX-License-Identifier: GPL-2.0
/* dev: device allow-list of task cgroups (cgroup/dev, checked on open and mknod of device
 * nodes). Tasks may use the devices every process expects (null, zero, full, random,
 * urandom, tty, console, ptmx, pseudo-terminals) plus the rules the agent wrote for their
 * slot in brim_dev_allow (operator defaults from --device-allow and the task's `devices`
 * label, e.g. a GPU or /dev/fuse); any other device, every block device included, fails
 * with EPERM. Cgroups the agent does not track are not restricted. */
#include "brim.h"

/* uapi bpf.h, not in vmlinux.h (macros). */
#define BRIM_DEVCG_DEV_CHAR 2

char LICENSE[] SEC("license") = "GPL";

/* Extra rules per slot (see brim.h), written by the agent before the task starts. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, BRIM_MAX_TASKS);
	__type(key, __u32);
	__type(value, struct brim_dev_allow);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} brim_dev_allow SEC(".maps");

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

static __always_inline int allowed_by_rules(__u32 slot, __u32 type, __u32 access, __u32 major,
					    __u32 minor)
{
	struct brim_dev_allow *a = bpf_map_lookup_elem(&brim_dev_allow, &slot);
	if (!a)
		return 0;
	__u64 n = a->count;
	for (int i = 0; i < BRIM_MAX_DEV_RULES; i++) {
		if (i >= n)
			break;
		__u64 r = a->rule[i];
		__u32 rminor = r;
		__u32 rmajor = (r >> 32) & 0xffff;
		__u32 rtypes = (r >> 48) & 0xff;
		__u32 raccess = r >> 56;
		if (!(rtypes & type) || (access & ~raccess))
			continue;
		if (rmajor != BRIM_DEV_ANY_MAJOR && rmajor != major)
			continue;
		if (rminor != (__u32)BRIM_DEV_ANY_MINOR && rminor != minor)
			continue;
		return 1;
	}
	return 0;
}

SEC("cgroup/dev")
int brim_dev(struct bpf_cgroup_dev_ctx *ctx)
{
	__u32 slot;
	if (!brim_slot_of(bpf_get_current_cgroup_id(), &slot))
		return 1;
	/* Every context field read once, up front: the verifier rejects loads through a
	 * context pointer the compiler offset (as it may when a field is read on two paths). */
	__u32 access_type = ctx->access_type;
	__u32 major = ctx->major;
	__u32 minor = ctx->minor;
	__u32 type = access_type & 0xFFFF;
	__u32 access = access_type >> 16;
	if (type == BRIM_DEVCG_DEV_CHAR && allowed_char(major, minor))
		return 1;
	if (allowed_by_rules(slot, type, access, major, minor))
		return 1;
	__u64 *d = bpf_map_lookup_elem(&brim_dev_denied, &slot);
	if (d)
		*d += 1;
	return 0;
}
