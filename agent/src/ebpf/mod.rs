//! eBPF telemetry and enforcement: loads the C programs of `agent-ebpf/` with aya, attaches
//! them once (tracepoints globally, cgroup programs at the agent's root cgroup2 directory,
//! where they see every task's cgroup below it), and reads/writes their maps, which are
//! keyed by the cgroup id (inode number) of each task's cgroup2 directory.
//!
//! Restart behaviour: the counter maps are pinned under
//! `/sys/fs/bpf/brim/<cgroup root>/layout-<N>/` and reused by the next agent, so the counters
//! of tasks that survive an agent restart continue where they were (no reset, no double
//! counting); events while no agent runs are not counted (pins of another map layout, left by
//! an older agent, are removed with a warning). Programs are attached
//! through bpf links owned by the agent process, so a dead agent leaves nothing attached and
//! a new one attaches exactly one set. The per-thread counters are not pinned: a thread
//! first seen by a new agent counts from then on (see `brim_slot.since_ns`). A clean
//! shutdown (which kills every task) removes the pin directory.
//!
//! The objects are embedded at build time from `agent-ebpf/obj/`; `BRIM_EBPF_OBJ_DIR`
//! points the agent at another directory (CI tests the freshly rebuilt objects this way).

pub mod abi;
pub mod devices;

pub use devices::DeviceRule;

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use aya::maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray, PerCpuValues};
use aya::programs::{
    BtfTracePoint, CgroupAttachMode, CgroupDevice, CgroupSkb, CgroupSkbAttachType, CgroupSockAddr,
};
use aya::{Btf, Ebpf, EbpfLoader};

use abi::*;

/// Environment variable naming a directory of objects to load instead of the embedded ones.
pub const OBJ_DIR_ENV: &str = "BRIM_EBPF_OBJ_DIR";
/// Root of the agent's pinned maps in bpffs.
pub const PIN_ROOT: &str = "/sys/fs/bpf/brim";

/// Why eBPF telemetry is unavailable.
#[derive(Debug, thiserror::Error)]
pub enum EbpfError {
    #[error("kernel BTF unavailable ({0}): eBPF needs a kernel with CONFIG_DEBUG_INFO_BTF (/sys/kernel/btf/vmlinux)")]
    Btf(String),
    #[error("no cgroup2 hierarchy to attach to: mount cgroup2 (e.g. at /sys/fs/cgroup/unified)")]
    NoCgroup2,
    #[error("cannot open {path}: {source} (the agent needs root for eBPF)")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot load eBPF object {object}: {detail} (needs root/CAP_BPF, a mounted bpffs at /sys/fs/bpf, and a 5.11+ kernel)")]
    Load { object: String, detail: String },
    #[error("eBPF program {program}: {detail}")]
    Program { program: String, detail: String },
    #[error("eBPF map {map}: {detail}")]
    Map { map: &'static str, detail: String },
    #[error("eBPF map {map} is full ({max} tasks): raise the agent's max tasks")]
    MapFull { map: &'static str, max: u32 },
}

fn prog_err(program: &str, e: impl std::error::Error) -> EbpfError {
    let detail = brim_proto::error_chain(&e);
    EbpfError::Program {
        program: program.to_string(),
        detail,
    }
}

fn missing_prog(program: &str) -> EbpfError {
    EbpfError::Program {
        program: program.to_string(),
        detail: "missing from its object (rebuild with `cargo xtask ebpf`)".into(),
    }
}

fn map_err(map: &'static str, e: impl std::fmt::Display) -> EbpfError {
    EbpfError::Map {
        map,
        detail: e.to_string(),
    }
}

/// Where and how to attach.
#[derive(Debug, Clone)]
pub struct EbpfConfig {
    /// The agent's root directory in the cgroup2 hierarchy (tasks are below it).
    pub root_cgroup: PathBuf,
    /// Map pin directory (`/sys/fs/bpf/brim/<cgroup root name>`).
    pub pin_dir: PathBuf,
    /// Map sizes: tasks the agent can track at once.
    pub max_tasks: u32,
}

/// Counters of one cgroup from the maps (cumulative since the entry was created).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EbpfUsage {
    pub oncpu_ns: u64,
    pub runq_wait_ns: u64,
    pub runq_waits: u64,
    pub switches: u64,
    /// Run-queue waits per log2(ns) bucket.
    pub runq_hist: Vec<u64>,
    pub net_rx_bytes: u64,
    pub net_rx_packets: u64,
    pub net_tx_bytes: u64,
    pub net_tx_packets: u64,
    pub net_tx_dropped_bytes: u64,
    pub net_tx_dropped_packets: u64,
    pub oom_kills: u64,
    pub reclaim_events: u64,
    pub bind_denied: u64,
    /// Device accesses outside the allow-list (`cgroup/dev`).
    pub dev_denied: u64,
}

/// What the agent allows one task's cgroup.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskPolicy {
    /// Port ranges it may bind (inclusive); `None`: bind is not restricted.
    pub ports: Option<Vec<(u16, u16)>>,
    /// Egress limit in bytes per second; `None`: unlimited.
    pub egress_bytes_per_sec: Option<u64>,
    /// Devices allowed beyond the built-in list (at most `abi::MAX_DEV_RULES`).
    pub devices: Vec<DeviceRule>,
}

/// Run statistics of one program (non-zero only while `kernel.bpf_stats_enabled` is 1).
#[derive(Debug, Clone, PartialEq)]
pub struct ProgStats {
    pub name: &'static str,
    pub run_count: u64,
    pub run_time_ns: u64,
}

struct Maps {
    filter: Array<MapData, u64>,
    slots: BpfHashMap<MapData, u64, u32>,
    slot_info: Array<MapData, SlotInfo>,
    sched: PerCpuArray<MapData, SchedStat>,
    /// Userspace copy of `brim_slots` (saves a syscall per read) and the free slots.
    slot_of: HashMap<u64, u32>,
    free: Vec<u32>,
    net: PerCpuArray<MapData, NetStat>,
    net_limit: BpfHashMap<MapData, u64, NetLimit>,
    ports: BpfHashMap<MapData, u64, Ports>,
    bind_denied: BpfHashMap<MapData, u64, u64>,
    mem: BpfHashMap<MapData, u64, MemStat>,
    dev_denied: PerCpuArray<MapData, u64>,
    dev_allow: Array<MapData, DevAllow>,
    /// Descriptors of the counter maps for batch reads (aya 0.14 has no batch lookup).
    batch: BatchFds,
}

struct BatchFds {
    sched: OwnedFd,
    net: OwnedFd,
    dev_denied: OwnedFd,
    mem: OwnedFd,
    bind_denied: OwnedFd,
}

/// Loaded and attached programs and their maps. Dropping it detaches everything.
pub struct Probes {
    config: EbpfConfig,
    nr_cpus: usize,
    maps: Mutex<Maps>,
    /// Loaded objects (own the programs and their links).
    objects: Mutex<Vec<Ebpf>>,
    /// Set when a batch read failed (kernel without BPF_MAP_LOOKUP_BATCH): per-key reads.
    no_batch: AtomicBool,
}

impl std::fmt::Debug for Probes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probes")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Object bytes: from `BRIM_EBPF_OBJ_DIR` when set, else embedded.
fn object_bytes(o: &Object) -> Result<std::borrow::Cow<'static, [u8]>, EbpfError> {
    match std::env::var_os(OBJ_DIR_ENV) {
        Some(dir) if !dir.is_empty() => {
            let path = Path::new(&dir).join(o.file);
            std::fs::read(&path)
                .map(std::borrow::Cow::Owned)
                .map_err(|source| EbpfError::Io { path, source })
        }
        _ => Ok(std::borrow::Cow::Borrowed(o.bytes)),
    }
}

fn load(
    o: &Object,
    pin_dir: &Path,
    max: u32,
    maps: &[&'static str],
    btf: &Btf,
) -> Result<Ebpf, EbpfError> {
    let bytes = object_bytes(o)?;
    // aya parses the ELF in place and needs 8-byte alignment: embedded objects are aligned,
    // a file read into a Vec is copied to an aligned offset of a slightly larger buffer.
    let mut buf = vec![0u8; bytes.len() + 8];
    let off = buf.as_ptr().align_offset(8).min(8);
    let aligned = &mut buf[off..off + bytes.len()];
    aligned.copy_from_slice(&bytes);
    let mut loader = EbpfLoader::new();
    loader
        .btf(Some(btf))
        .default_map_pin_directory(pin_dir)
        // Task storage (per-thread timestamps) is used by programs only.
        .allow_unsupported_maps();
    for m in maps.iter().chain(&[MAP_SLOTS, MAP_SLOT_INFO]) {
        loader.map_max_entries(m, max);
    }
    loader.load(&*aligned).map_err(|e| EbpfError::Load {
        object: o.file.to_string(),
        detail: e.to_string(),
    })
}

fn tp_btf(ebpf: &mut Ebpf, (name, tp): (&str, &str), btf: &Btf) -> Result<(), EbpfError> {
    let p: &mut BtfTracePoint = ebpf
        .program_mut(name)
        .ok_or_else(|| missing_prog(name))?
        .try_into()
        .map_err(|e| prog_err(name, e))?;
    p.load(tp, btf).map_err(|e| prog_err(name, e))?;
    p.attach().map_err(|e| prog_err(name, e))?;
    Ok(())
}

fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, EbpfError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let m = ebpf
        .take_map(name)
        .ok_or_else(|| map_err(name, "missing from its object"))?;
    T::try_from(m).map_err(|e| map_err(name, e))
}

/// A second descriptor of a map (for batch reads, which aya 0.14 does not offer).
fn map_fd(ebpf: &Ebpf, name: &'static str) -> Result<OwnedFd, EbpfError> {
    use aya::maps::Map;
    let m = ebpf
        .map(name)
        .ok_or_else(|| map_err(name, "missing from its object"))?;
    let data = match m {
        Map::Array(d) | Map::PerCpuArray(d) | Map::HashMap(d) => d,
        _ => return Err(map_err(name, "unexpected map type")),
    };
    data.fd()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| map_err(name, e))
}

impl Probes {
    /// Loads every object and attaches every program. Fails as a whole: the caller falls
    /// back to cgroupfs polling.
    pub fn load(config: EbpfConfig) -> Result<Probes, EbpfError> {
        let btf = Btf::from_sys_fs().map_err(|e| EbpfError::Btf(e.to_string()))?;
        let nr_cpus = aya::util::nr_cpus().map_err(|(what, e)| EbpfError::Io {
            path: PathBuf::from(what),
            source: e,
        })?;
        reset_stale_pins(&config.pin_dir);
        let pin_dir = config.pin_dir.join(PIN_LAYOUT);
        std::fs::create_dir_all(&pin_dir).map_err(|source| EbpfError::Io {
            path: pin_dir.clone(),
            source,
        })?;
        let cgroup = File::open(&config.root_cgroup).map_err(|source| EbpfError::Io {
            path: config.root_cgroup.clone(),
            source,
        })?;
        // Cgroup programs attach through bpf links, which always coexist with other programs
        // (multi-attach); link_create rejects attach flags, hence `Single` (= flags 0).
        let max = config.max_tasks.max(1);
        let pin = pin_dir.as_path();

        // brim_slots / brim_slot_info / brim_filter are in every object (brim.h) and shared
        // through their pins: every object sizes them alike.
        let mut sched = load(&SCHED, pin, max, &[MAP_SCHED], &btf)?;
        tp_btf(&mut sched, PROG_SCHED_SWITCH, &btf)?;
        let mut mem = load(&MEM, pin, max, &[MAP_MEM], &btf)?;
        tp_btf(&mut mem, PROG_OOM_VICTIM, &btf)?;
        tp_btf(&mut mem, PROG_MEMCG_RECLAIM, &btf)?;

        let mut net = load(&NET, pin, max, &[MAP_NET, MAP_NET_LIMIT], &btf)?;
        for (name, ty) in [
            (PROG_NET_INGRESS, CgroupSkbAttachType::Ingress),
            (PROG_NET_EGRESS, CgroupSkbAttachType::Egress),
        ] {
            let p: &mut CgroupSkb = net
                .program_mut(name)
                .ok_or_else(|| missing_prog(name))?
                .try_into()
                .map_err(|e| prog_err(name, e))?;
            p.load().map_err(|e| prog_err(name, e))?;
            p.attach(&cgroup, ty, CgroupAttachMode::Single)
                .map_err(|e| prog_err(name, e))?;
        }
        let mut sock = load(&SOCK, pin, max, &[MAP_PORTS, MAP_BIND_DENIED], &btf)?;
        for name in [PROG_BIND4, PROG_BIND6] {
            let p: &mut CgroupSockAddr = sock
                .program_mut(name)
                .ok_or_else(|| missing_prog(name))?
                .try_into()
                .map_err(|e| prog_err(name, e))?;
            p.load().map_err(|e| prog_err(name, e))?;
            p.attach(&cgroup, CgroupAttachMode::Single)
                .map_err(|e| prog_err(name, e))?;
        }
        let slots: BpfHashMap<MapData, u64, u32> = take(&mut sched, MAP_SLOTS)?;
        // Pinned slots survive an agent restart: the free list is what they do not use.
        let slot_of: HashMap<u64, u32> = slots.iter().filter_map(Result::ok).collect();
        let used: HashSet<u32> = slot_of.values().copied().collect();
        let free = (0..max).rev().filter(|s| !used.contains(s)).collect();
        let mut dev = load(&DEV, pin, max, &[MAP_DEV_DENIED, MAP_DEV_ALLOW], &btf)?;
        {
            let p: &mut CgroupDevice = dev
                .program_mut(PROG_DEV)
                .ok_or_else(|| missing_prog(PROG_DEV))?
                .try_into()
                .map_err(|e| prog_err(PROG_DEV, e))?;
            p.load().map_err(|e| prog_err(PROG_DEV, e))?;
            p.attach(&cgroup, CgroupAttachMode::Single)
                .map_err(|e| prog_err(PROG_DEV, e))?;
        }
        let batch = BatchFds {
            sched: map_fd(&sched, MAP_SCHED)?,
            net: map_fd(&net, MAP_NET)?,
            dev_denied: map_fd(&dev, MAP_DEV_DENIED)?,
            mem: map_fd(&mem, MAP_MEM)?,
            bind_denied: map_fd(&sock, MAP_BIND_DENIED)?,
        };
        let maps = Maps {
            batch,
            dev_denied: take(&mut dev, MAP_DEV_DENIED)?,
            dev_allow: take(&mut dev, MAP_DEV_ALLOW)?,
            filter: take(&mut sched, MAP_FILTER)?,
            slots,
            slot_info: take(&mut sched, MAP_SLOT_INFO)?,
            slot_of,
            free,
            sched: take(&mut sched, MAP_SCHED)?,
            net: take(&mut net, MAP_NET)?,
            net_limit: take(&mut net, MAP_NET_LIMIT)?,
            ports: take(&mut sock, MAP_PORTS)?,
            bind_denied: take(&mut sock, MAP_BIND_DENIED)?,
            mem: take(&mut mem, MAP_MEM)?,
        };
        Ok(Probes {
            config,
            nr_cpus,
            maps: Mutex::new(maps),
            objects: Mutex::new(vec![sched, net, sock, mem, dev]),
            no_batch: AtomicBool::new(false),
        })
    }

    fn maps(&self) -> std::sync::MutexGuard<'_, Maps> {
        self.maps.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts tracking a cgroup (before the task's process starts, so its first bind is
    /// already checked). Keeps existing counters (an agent restart re-tracks its tasks).
    pub fn track(&self, cgroup_id: u64, policy: &TaskPolicy) -> Result<(), EbpfError> {
        let max = self.config.max_tasks;
        let mut m = self.maps();
        let full = |map: &'static str, e: aya::maps::MapError| match &e {
            aya::maps::MapError::SyscallError(s)
                if s.io_error.raw_os_error() == Some(libc::E2BIG) =>
            {
                EbpfError::MapFull { map, max }
            }
            _ => map_err(map, e),
        };
        // (Re)start time: threads born before it (e.g. running across an agent restart)
        // are counted from their next switch-out on, never from their start.
        let since = crate::sys::monotonic_ns();
        let limited = u64::from(policy.egress_bytes_per_sec.is_some());
        match m.slot_of.get(&cgroup_id).copied() {
            Some(slot) => {
                m.slot_info
                    .set(slot, [cgroup_id, since], 0)
                    .map_err(|e| map_err(MAP_SLOT_INFO, e))?;
                let old = m.net.get(&slot, 0).map_err(|e| map_err(MAP_NET, e))?;
                if old.iter().any(|r| r[NET_LIMITED] != limited) {
                    let rows: Vec<NetStat> = old
                        .iter()
                        .map(|r| {
                            let mut r = *r;
                            r[NET_LIMITED] = limited;
                            r
                        })
                        .collect();
                    let v = PerCpuValues::try_from(rows).map_err(|e| map_err(MAP_NET, e))?;
                    m.net.set(slot, v, 0).map_err(|e| map_err(MAP_NET, e))?;
                }
            }
            None => {
                let slot = m.free.pop().ok_or(EbpfError::MapFull {
                    map: MAP_SCHED,
                    max,
                })?;
                // Counters first, then the slot's owner, then the lookups that find it.
                let zero = PerCpuValues::try_from(vec![[0u64; 4 + RUNQ_BUCKETS]; self.nr_cpus])
                    .map_err(|e| map_err(MAP_SCHED, e))?;
                let mut net_row = [0u64; 7];
                net_row[NET_LIMITED] = limited;
                let net_zero = PerCpuValues::try_from(vec![net_row; self.nr_cpus])
                    .map_err(|e| map_err(MAP_NET, e))?;
                let dev_zero = PerCpuValues::try_from(vec![0u64; self.nr_cpus])
                    .map_err(|e| map_err(MAP_DEV_DENIED, e))?;
                let r = m
                    .dev_denied
                    .set(slot, dev_zero, 0)
                    .map_err(|e| map_err(MAP_DEV_DENIED, e))
                    .and_then(|()| {
                        m.sched
                            .set(slot, zero, 0)
                            .map_err(|e| map_err(MAP_SCHED, e))
                    })
                    .and_then(|()| {
                        m.net
                            .set(slot, net_zero, 0)
                            .map_err(|e| map_err(MAP_NET, e))
                    })
                    .and_then(|()| {
                        m.slot_info
                            .set(slot, [cgroup_id, since], 0)
                            .map_err(|e| map_err(MAP_SLOT_INFO, e))
                    })
                    .and_then(|()| {
                        m.slots
                            .insert(cgroup_id, slot, 0)
                            .map_err(|e| full(MAP_SLOTS, e))
                    });
                if let Err(e) = r {
                    let _ = m.slot_info.set(slot, [0, 0], 0);
                    m.free.push(slot);
                    return Err(e);
                }
                m.slot_of.insert(cgroup_id, slot);
                refresh_filter(&mut m, cgroup_id)?;
            }
        }
        // Device rules before the task starts (a reused slot's old rules are overwritten).
        if let Some(&slot) = m.slot_of.get(&cgroup_id) {
            if policy.devices.len() > MAX_DEV_RULES {
                tracing::warn!(
                    cgroup_id,
                    rules = policy.devices.len(),
                    "task has more device rules than the device filter holds; only the first {MAX_DEV_RULES} are allowed"
                );
            }
            let mut v: DevAllow = [0; 1 + MAX_DEV_RULES];
            let n = policy.devices.len().min(MAX_DEV_RULES);
            v[0] = n as u64;
            for (i, r) in policy.devices.iter().take(n).enumerate() {
                v[1 + i] = r.encode();
            }
            m.dev_allow
                .set(slot, v, 0)
                .map_err(|e| map_err(MAP_DEV_ALLOW, e))?;
        }
        if m.mem.get(&cgroup_id, 0).is_err() {
            m.mem
                .insert(cgroup_id, [0u64; 2], 0)
                .map_err(|e| full(MAP_MEM, e))?;
        }
        if m.bind_denied.get(&cgroup_id, 0).is_err() {
            m.bind_denied
                .insert(cgroup_id, 0, 0)
                .map_err(|e| full(MAP_BIND_DENIED, e))?;
        }
        match &policy.ports {
            Some(ranges) => {
                let mut v: Ports = [0; 1 + 2 * MAX_PORT_RANGES];
                if ranges.len() > MAX_PORT_RANGES {
                    tracing::warn!(
                        cgroup_id,
                        ranges = ranges.len(),
                        "task has more port ranges than the bind filter holds; only the first {MAX_PORT_RANGES} are allowed"
                    );
                }
                let n = ranges.len().min(MAX_PORT_RANGES);
                v[0] = n as u64;
                for (i, &(lo, hi)) in ranges.iter().take(n).enumerate() {
                    v[1 + i] = u64::from(lo);
                    v[1 + MAX_PORT_RANGES + i] = u64::from(hi);
                }
                m.ports
                    .insert(cgroup_id, v, 0)
                    .map_err(|e| full(MAP_PORTS, e))?;
            }
            None => {
                let _ = m.ports.remove(&cgroup_id);
            }
        }
        match policy.egress_bytes_per_sec {
            Some(rate) if m.net_limit.get(&cgroup_id, 0).is_err() => {
                // Burst: 10 ms at the rate, at least 64 KiB (one TSO segment).
                let burst = (rate / 100).max(64 * 1024);
                let v: NetLimit = [0, rate, burst, burst, 0];
                m.net_limit
                    .insert(cgroup_id, v, 0)
                    .map_err(|e| full(MAP_NET_LIMIT, e))?;
            }
            Some(_) => {}
            None => {
                let _ = m.net_limit.remove(&cgroup_id);
            }
        }
        Ok(())
    }

    /// Forgets a cgroup (its container is gone).
    pub fn untrack(&self, cgroup_id: u64) {
        let mut m = self.maps();
        if let Some(slot) = m.slot_of.remove(&cgroup_id) {
            let _ = refresh_filter(&mut m, cgroup_id);
            let _ = m.slots.remove(&cgroup_id);
            let _ = m.slot_info.set(slot, [0, 0], 0);
            let _ = m.dev_allow.set(slot, [0; 1 + MAX_DEV_RULES], 0);
            m.free.push(slot);
        }
        let _ = m.net_limit.remove(&cgroup_id);
        let _ = m.ports.remove(&cgroup_id);
        let _ = m.bind_denied.remove(&cgroup_id);
        let _ = m.mem.remove(&cgroup_id);
    }

    /// Forgets tracked cgroups that no longer exist below `root` (up to 3 levels deep):
    /// entries pinned by a previous agent for tasks that ended while no agent ran would
    /// otherwise hold their slots forever. Returns how many went.
    pub fn untrack_missing(&self, root: &Path) -> usize {
        fn walk(dir: &Path, depth: u32, ids: &mut HashSet<u64>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    if let Ok(id) = cgroup_id(&e.path()) {
                        ids.insert(id);
                    }
                    if depth > 1 {
                        walk(&e.path(), depth - 1, ids);
                    }
                }
            }
        }
        // Listing first, then the tracked set: a cgroup created meanwhile is tracked after
        // its directory exists, so it is either listed or not yet tracked.
        let mut live = HashSet::new();
        walk(root, 3, &mut live);
        if !root.is_dir() {
            return 0;
        }
        let stale: Vec<u64> = self
            .tracked()
            .into_iter()
            .filter(|id| !live.contains(id))
            .collect();
        for &id in &stale {
            self.untrack(id);
        }
        stale.len()
    }

    /// Cgroup ids with an entry in the maps.
    pub fn tracked(&self) -> HashSet<u64> {
        self.maps().slot_of.keys().copied().collect()
    }

    /// Counters of a tracked cgroup; `None` when it is not tracked.
    pub fn read(&self, cgroup_id: u64) -> Option<EbpfUsage> {
        Self::read_one(&self.maps(), cgroup_id)
    }

    /// Counters of many cgroups under one lock (one sampling pass); untracked ones are left
    /// out. Five `BPF_MAP_LOOKUP_BATCH` calls in all (the slot-indexed arrays up to the
    /// highest slot asked for, the two hash maps whole), whatever the number of cgroups; on a
    /// kernel without batch lookups, the per-key path ([`Probes::read_many_per_key`]).
    pub fn read_many(&self, cgroup_ids: &[u64]) -> HashMap<u64, EbpfUsage> {
        let m = self.maps();
        if !self.no_batch.load(Ordering::Relaxed) {
            match self.read_batched(&m, cgroup_ids) {
                Ok(r) => return r,
                Err(e) => {
                    self.no_batch.store(true, Ordering::Relaxed);
                    tracing::warn!(error = %e, "batch reads of the eBPF maps failed: reading them one entry at a time from now on");
                }
            }
        }
        Self::per_key(&m, cgroup_ids)
    }

    /// [`Probes::read_many`] with one lookup syscall per map and cgroup (5 per cgroup): the
    /// fallback, kept public to compare with in `cargo xtask bench telemetry`.
    pub fn read_many_per_key(&self, cgroup_ids: &[u64]) -> HashMap<u64, EbpfUsage> {
        Self::per_key(&self.maps(), cgroup_ids)
    }

    fn per_key(m: &Maps, cgroup_ids: &[u64]) -> HashMap<u64, EbpfUsage> {
        cgroup_ids
            .iter()
            .filter_map(|&id| Some((id, Self::read_one(m, id)?)))
            .collect()
    }

    fn read_batched(
        &self,
        m: &Maps,
        cgroup_ids: &[u64],
    ) -> std::io::Result<HashMap<u64, EbpfUsage>> {
        let wanted: Vec<(u64, u32)> = cgroup_ids
            .iter()
            .filter_map(|&id| Some((id, *m.slot_of.get(&id)?)))
            .collect();
        let Some(hi) = wanted.iter().map(|&(_, s)| s + 1).max() else {
            return Ok(HashMap::new());
        };
        let cpus = self.nr_cpus;
        let sched_size = std::mem::size_of::<SchedStat>();
        let net_size = std::mem::size_of::<NetStat>();
        let sched = batch::array(m.batch.sched.as_fd(), hi, sched_size * cpus)?;
        let net = batch::array(m.batch.net.as_fd(), hi, net_size * cpus)?;
        let dev = batch::array(m.batch.dev_denied.as_fd(), hi, 8 * cpus)?;
        let chunk = u32::try_from(m.slot_of.len()).unwrap_or(u32::MAX).max(64);
        let mem = batch::hash(m.batch.mem.as_fd(), std::mem::size_of::<MemStat>(), chunk)?;
        let denied = batch::hash(m.batch.bind_denied.as_fd(), 8, chunk)?;
        let mut out = HashMap::with_capacity(wanted.len());
        for (id, slot) in wanted {
            let slot = slot as usize;
            let mut u = EbpfUsage {
                runq_hist: vec![0; RUNQ_BUCKETS],
                ..Default::default()
            };
            for cpu in 0..cpus {
                let s = batch::u64s(&sched, (slot * cpus + cpu) * sched_size, 4 + RUNQ_BUCKETS);
                u.oncpu_ns += s[SCHED_ONCPU_NS];
                u.runq_wait_ns += s[SCHED_RUNQ_NS];
                u.runq_waits += s[SCHED_RUNQ_COUNT];
                u.switches += s[SCHED_SWITCHES];
                for (h, v) in u.runq_hist.iter_mut().zip(&s[SCHED_HIST..]) {
                    *h += v;
                }
                let n = batch::u64s(&net, (slot * cpus + cpu) * net_size, 6);
                u.net_rx_bytes += n[0];
                u.net_rx_packets += n[1];
                u.net_tx_bytes += n[2];
                u.net_tx_packets += n[3];
                u.net_tx_dropped_bytes += n[4];
                u.net_tx_dropped_packets += n[5];
                u.dev_denied += batch::u64s(&dev, (slot * cpus + cpu) * 8, 1)[0];
            }
            if let Some(v) = mem.get(&id) {
                let v = batch::u64s(v, 0, 2);
                u.oom_kills = v[0];
                u.reclaim_events = v[1];
            }
            if let Some(v) = denied.get(&id) {
                u.bind_denied = batch::u64s(v, 0, 1)[0];
            }
            out.insert(id, u);
        }
        Ok(out)
    }

    fn read_one(m: &Maps, cgroup_id: u64) -> Option<EbpfUsage> {
        let slot = *m.slot_of.get(&cgroup_id)?;
        let sched = m.sched.get(&slot, 0).ok()?;
        let mut u = EbpfUsage {
            runq_hist: vec![0; RUNQ_BUCKETS],
            ..Default::default()
        };
        for s in sched.iter() {
            u.oncpu_ns += s[SCHED_ONCPU_NS];
            u.runq_wait_ns += s[SCHED_RUNQ_NS];
            u.runq_waits += s[SCHED_RUNQ_COUNT];
            u.switches += s[SCHED_SWITCHES];
            for (h, v) in u.runq_hist.iter_mut().zip(&s[SCHED_HIST..]) {
                *h += v;
            }
        }
        if let Ok(net) = m.net.get(&slot, 0) {
            for s in net.iter() {
                u.net_rx_bytes += s[0];
                u.net_rx_packets += s[1];
                u.net_tx_bytes += s[2];
                u.net_tx_packets += s[3];
                u.net_tx_dropped_bytes += s[4];
                u.net_tx_dropped_packets += s[5];
            }
        }
        if let Ok(mem) = m.mem.get(&cgroup_id, 0) {
            u.oom_kills = mem[0];
            u.reclaim_events = mem[1];
        }
        u.bind_denied = m.bind_denied.get(&cgroup_id, 0).unwrap_or(0);
        if let Ok(d) = m.dev_denied.get(&slot, 0) {
            u.dev_denied = d.iter().sum();
        }
        Some(u)
    }

    /// Run counts and time of every program (kernel `bpf_stats`).
    pub fn prog_stats(&self) -> Vec<ProgStats> {
        let objects = self.objects.lock().unwrap_or_else(|p| p.into_inner());
        let names = [
            PROG_SCHED_SWITCH.0,
            PROG_OOM_VICTIM.0,
            PROG_MEMCG_RECLAIM.0,
            PROG_NET_INGRESS,
            PROG_NET_EGRESS,
            PROG_BIND4,
            PROG_BIND6,
            PROG_DEV,
        ];
        let mut out = Vec::new();
        for name in names {
            for o in objects.iter() {
                if let Some(p) = o.program(name) {
                    if let Ok(info) = p.info() {
                        out.push(ProgStats {
                            name,
                            run_count: info.run_count(),
                            run_time_ns: u64::try_from(info.run_time().as_nanos())
                                .unwrap_or(u64::MAX),
                        });
                    }
                }
            }
        }
        out
    }

    /// Detaches everything and removes the pinned maps (clean shutdown: no task survives).
    pub fn unpin(self) {
        let dir = self.config.pin_dir.clone();
        drop(self);
        let layout = dir.join(PIN_LAYOUT);
        for m in PINNED_MAPS {
            let _ = std::fs::remove_file(layout.join(m));
        }
        let _ = std::fs::remove_dir(&layout);
        let _ = std::fs::remove_dir(&dir);
    }
}

/// Map layout of the pinned maps, the name of the directory under the pin directory that
/// holds them (bpffs has no regular files to record it in); bump when a pinned map changes
/// type or value size.
const PIN_LAYOUT: &str = "layout-3";

/// Pins left by an agent with another map layout cannot be reused (loading would fail):
/// remove them (other layout directories, and maps pinned directly in `dir` by the first
/// agents), loudly.
fn reset_stale_pins(dir: &Path) {
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name == PIN_LAYOUT {
            continue;
        }
        let path = e.path();
        if path.is_dir() {
            for m in std::fs::read_dir(&path).into_iter().flatten().flatten() {
                let _ = std::fs::remove_file(m.path());
            }
            if std::fs::remove_dir(&path).is_ok() {
                removed.push(name);
            }
        } else if std::fs::remove_file(&path).is_ok() {
            removed.push(name);
        }
    }
    if !removed.is_empty() {
        tracing::warn!(dir = %dir.display(), pins = ?removed, "pinned eBPF maps of another map layout removed: counters of running tasks restart from zero");
    }
}

/// Rewrites the `brim_filter` bucket of a cgroup id from the tracked set: how many tracked
/// cgroups share it, and the slot + 1 of the only one (see `brim.h`).
fn refresh_filter(m: &mut Maps, cgroup_id: u64) -> Result<(), EbpfError> {
    let bucket = cgroup_id & (FILTER_SLOTS - 1);
    let mut members = m
        .slot_of
        .iter()
        .filter(|(id, _)| *id & (FILTER_SLOTS - 1) == bucket);
    let v = match (members.next(), members.count()) {
        (None, _) => 0,
        (Some((_, &slot)), 0) => (u64::from(slot) + 1) << 32 | 1,
        (Some(_), more) => more as u64 + 1,
    };
    m.filter
        .set(bucket as u32, v, 0)
        .map_err(|e| map_err(MAP_FILTER, e))
}

/// Batch reads of whole maps.
mod batch {
    use std::collections::HashMap;
    use std::io;
    use std::os::fd::BorrowedFd;

    /// `n` u64s at byte `off` of `buf` (zeros past its end: never panics).
    pub(super) fn u64s(buf: &[u8], off: usize, n: usize) -> Vec<u64> {
        (0..n)
            .map(|i| {
                buf.get(off + 8 * i..off + 8 * i + 8)
                    .and_then(|b| b.try_into().ok())
                    .map_or(0, u64::from_ne_bytes)
            })
            .collect()
    }

    /// Values of entries `0..n` of an array map (`value_size`: per-cpu maps, the row of
    /// every possible cpu), in key order; entries the kernel did not return are zeros.
    pub(super) fn array(fd: BorrowedFd<'_>, n: u32, value_size: usize) -> io::Result<Vec<u8>> {
        let mut out = vec![0u8; n as usize * value_size];
        let mut keys = vec![0u8; n as usize * 4];
        let mut values = vec![0u8; n as usize * value_size];
        let (mut token, mut next) = ([0u8; 8], [0u8; 8]);
        let mut first = true;
        loop {
            let (got, end) = crate::sys::bpf_map_lookup_batch(
                fd,
                (!first).then_some(&token[..]),
                &mut next,
                &mut keys,
                &mut values,
                n,
                (4, value_size),
            )?;
            for i in 0..got as usize {
                let key = u32::from_ne_bytes([
                    keys[4 * i],
                    keys[4 * i + 1],
                    keys[4 * i + 2],
                    keys[4 * i + 3],
                ]);
                if key < n {
                    let (k, v) = (key as usize * value_size, i * value_size);
                    out[k..k + value_size].copy_from_slice(&values[v..v + value_size]);
                }
            }
            let last = (0..got as usize)
                .map(|i| {
                    u32::from_ne_bytes([
                        keys[4 * i],
                        keys[4 * i + 1],
                        keys[4 * i + 2],
                        keys[4 * i + 3],
                    ])
                })
                .max();
            if end || got == 0 || last.is_some_and(|k| k + 1 >= n) {
                return Ok(out);
            }
            token = next;
            first = false;
        }
    }

    /// Every entry of a hash map keyed by u64, `chunk` entries per call.
    pub(super) fn hash(
        fd: BorrowedFd<'_>,
        value_size: usize,
        mut chunk: u32,
    ) -> io::Result<HashMap<u64, Vec<u8>>> {
        let mut out = HashMap::new();
        let (mut token, mut next) = ([0u8; 8], [0u8; 8]);
        let mut first = true;
        loop {
            let mut keys = vec![0u8; chunk as usize * 8];
            let mut values = vec![0u8; chunk as usize * value_size];
            let r = crate::sys::bpf_map_lookup_batch(
                fd,
                (!first).then_some(&token[..]),
                &mut next,
                &mut keys,
                &mut values,
                chunk,
                (8, value_size),
            );
            let (got, end) = match r {
                // A bucket holds more entries than `chunk`: retry with room for them.
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) && chunk < 1 << 20 => {
                    chunk *= 2;
                    continue;
                }
                r => r?,
            };
            for i in 0..got as usize {
                let key = u64s(&keys, 8 * i, 1)[0];
                out.insert(key, values[i * value_size..(i + 1) * value_size].to_vec());
            }
            if end {
                return Ok(out);
            }
            token = next;
            first = false;
        }
    }
}

/// The cgroup id of a cgroup2 directory (its inode number), as `bpf_get_current_cgroup_id`.
pub fn cgroup_id(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(dir).map(|m| m.ino())
}
