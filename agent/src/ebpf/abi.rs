//! Map layouts shared with `agent-ebpf/include/brim.h`, as arrays of `u64` (aya reads and
//! writes them as plain bytes; every C struct there has only `u64` fields, no padding).
//! Names of objects, programs and maps are constants here, never literals elsewhere.

/// log2 buckets of the run-queue wait histogram (`BRIM_RUNQ_BUCKETS`).
pub const RUNQ_BUCKETS: usize = 40;
/// Port ranges per task in `brim_ports` (`BRIM_MAX_PORT_RANGES`).
pub const MAX_PORT_RANGES: usize = 16;

/// `struct brim_sched_stat`: oncpu_ns, runq_ns, runq_count, switches, runq_hist[40].
pub type SchedStat = [u64; 4 + RUNQ_BUCKETS];
pub const SCHED_ONCPU_NS: usize = 0;
pub const SCHED_RUNQ_NS: usize = 1;
pub const SCHED_RUNQ_COUNT: usize = 2;
pub const SCHED_SWITCHES: usize = 3;
pub const SCHED_HIST: usize = 4;

/// `struct brim_net_stat`: rx_bytes, rx_packets, tx_bytes, tx_packets, tx_dropped_bytes,
/// tx_dropped_packets, limited.
pub type NetStat = [u64; 7];
pub const NET_LIMITED: usize = 6;

/// `struct brim_slot`: cgid (0: free), since_ns (CLOCK_MONOTONIC).
pub type SlotInfo = [u64; 2];

/// Entries of `brim_filter` (`BRIM_FILTER_SLOTS`, a power of two).
pub const FILTER_SLOTS: u64 = 65536;

/// `struct brim_net_limit`: spin lock + pad (one u64), rate_bytes_per_sec, burst_bytes,
/// tokens, last_ns.
pub type NetLimit = [u64; 5];

/// `struct brim_ports`: count, lo[16], hi[16].
pub type Ports = [u64; 1 + 2 * MAX_PORT_RANGES];

/// Rules per task in `brim_dev_allow` (`BRIM_MAX_DEV_RULES`).
pub const MAX_DEV_RULES: usize = 16;
/// `BRIM_DEV_ANY_MINOR` / `BRIM_DEV_ANY_MAJOR`: wildcards of a device rule.
pub const DEV_ANY_MINOR: u64 = 0xffff_ffff;
pub const DEV_ANY_MAJOR: u64 = 0xffff;
/// `struct brim_dev_allow`: count, rule[16] (see `devices::DeviceRule::encode`).
pub type DevAllow = [u64; 1 + MAX_DEV_RULES];

/// `struct brim_mem_stat`: oom_kills, reclaim_events.
pub type MemStat = [u64; 2];

/// One compiled object: its file name in `agent-ebpf/obj/` and its embedded bytes.
pub struct Object {
    pub file: &'static str,
    pub bytes: &'static [u8],
}

pub const SCHED: Object = Object {
    file: "sched.bpf.o",
    bytes: aya::include_bytes_aligned!("../../../agent-ebpf/obj/sched.bpf.o"),
};
pub const NET: Object = Object {
    file: "net.bpf.o",
    bytes: aya::include_bytes_aligned!("../../../agent-ebpf/obj/net.bpf.o"),
};
pub const SOCK: Object = Object {
    file: "sock.bpf.o",
    bytes: aya::include_bytes_aligned!("../../../agent-ebpf/obj/sock.bpf.o"),
};
pub const DEV: Object = Object {
    file: "dev.bpf.o",
    bytes: aya::include_bytes_aligned!("../../../agent-ebpf/obj/dev.bpf.o"),
};
pub const MEM: Object = Object {
    file: "mem.bpf.o",
    bytes: aya::include_bytes_aligned!("../../../agent-ebpf/obj/mem.bpf.o"),
};

// Programs: (name, tracepoint) for tp_btf ones.
pub const PROG_SCHED_SWITCH: (&str, &str) = ("brim_sched_switch", "sched_switch");
pub const PROG_OOM_VICTIM: (&str, &str) = ("brim_oom_victim", "mark_victim");
pub const PROG_MEMCG_RECLAIM: (&str, &str) =
    ("brim_memcg_reclaim", "mm_vmscan_memcg_reclaim_begin");
pub const PROG_NET_INGRESS: &str = "brim_net_ingress";
pub const PROG_NET_EGRESS: &str = "brim_net_egress";
pub const PROG_BIND4: &str = "brim_bind4";
pub const PROG_BIND6: &str = "brim_bind6";
pub const PROG_DEV: &str = "brim_dev";

// Maps (pinned by name): keyed by cgroup id, except brim_sched / brim_net / brim_slot_info (by the slot
// the agent assigns in brim_slots) and brim_filter (by cgroup id & (FILTER_SLOTS - 1)).
pub const MAP_FILTER: &str = "brim_filter";
pub const MAP_SLOTS: &str = "brim_slots";
pub const MAP_SLOT_INFO: &str = "brim_slot_info";
pub const MAP_SCHED: &str = "brim_sched";
pub const MAP_NET: &str = "brim_net";
pub const MAP_NET_LIMIT: &str = "brim_net_limit";
pub const MAP_PORTS: &str = "brim_ports";
pub const MAP_BIND_DENIED: &str = "brim_bind_denied";
pub const MAP_MEM: &str = "brim_mem";
pub const MAP_DEV_DENIED: &str = "brim_dev_denied";
pub const MAP_DEV_ALLOW: &str = "brim_dev_allow";
/// Every pinned map, for cleanup.
pub const PINNED_MAPS: [&str; 11] = [
    MAP_DEV_DENIED,
    MAP_DEV_ALLOW,
    MAP_FILTER,
    MAP_SLOTS,
    MAP_SLOT_INFO,
    MAP_SCHED,
    MAP_NET,
    MAP_NET_LIMIT,
    MAP_PORTS,
    MAP_BIND_DENIED,
    MAP_MEM,
];
