//! Per-container cgroups: one [`CgroupBackend`] trait, two layouts.
//!
//! - [`v2::V2Backend`]: a pure cgroup2 hierarchy (`/sys/fs/cgroup` is cgroup2).
//! - [`hybrid::HybridBackend`]: v1 controllers (`/sys/fs/cgroup/{cpu,cpuacct,memory,pids}`)
//!   for limits and accounting, plus the cgroup2 hierarchy at `/sys/fs/cgroup/unified` that
//!   eBPF programs attach to.
//!
//! Each container gets `<mount>/<root>/<container-id>` in every hierarchy. Backends take
//! their mount points as paths so tests run them on a fake cgroupfs in a tempdir; the
//! helpers here ([`open_procs`], [`pids`], [`destroy`]) work on any backend.

pub mod hybrid;
pub mod v2;

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::sys;

/// Why a cgroup operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cannot {action} {path}: {source} (the agent needs root and a writable cgroupfs)")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("unexpected content in {path}: {why}")]
    Parse { path: PathBuf, why: String },
    #[error("invalid cgroup name `{0}`: use letters, digits, `.`, `_` and `-` only")]
    InvalidName(String),
    #[error(
        "cgroup {0} still has processes after repeated SIGKILL; kill them by hand and rmdir it"
    )]
    Busy(PathBuf),
    #[error("no usable cgroup hierarchy found in /proc/self/mountinfo (need cgroup2 at /sys/fs/cgroup or v1 cpu+memory controllers)")]
    NoHierarchy,
}

impl CgroupError {
    pub(crate) fn io(action: &'static str, path: &Path, source: io::Error) -> Self {
        CgroupError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Limits applied to one container.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Limits {
    /// CPU share: becomes `cpu.shares` (1024 per cpu) or `cpu.weight` (100 per cpu).
    pub cpus: f64,
    /// Also cap CPU time at `cpus` (CFS quota / `cpu.max`), not just weight it.
    pub cpu_hard_limit: bool,
    /// Memory limit in bytes (`memory.max` / `memory.limit_in_bytes`); `None` = unlimited.
    pub mem_bytes: Option<u64>,
    /// Most processes/threads in the container (`pids.max`); `None` = unlimited.
    pub pids_max: Option<u64>,
}

/// Cumulative counters of one container's cgroup.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CgroupUsage {
    pub cpu_ns: u64,
    pub cpu_throttled_ns: u64,
    pub mem_current_bytes: u64,
    pub mem_rss_bytes: u64,
    pub mem_cache_bytes: u64,
    pub oom_events: u64,
}

/// One cgroup layout. Implementations only touch files under their mount points.
pub trait CgroupBackend: Send + Sync + std::fmt::Debug {
    /// Short name for logs and `/state`: `v2` or `hybrid`.
    fn kind(&self) -> &'static str;
    /// Creates the agent's root cgroup(s) and enables the controllers children need.
    fn prepare(&self) -> Result<(), CgroupError>;
    /// Creates the container's cgroup in every hierarchy and writes its limits.
    fn create(&self, id: &str, limits: &Limits) -> Result<(), CgroupError>;
    /// Every directory of this container (one per hierarchy); a process joins all of them.
    fn paths(&self, id: &str) -> Vec<PathBuf>;
    /// The v2 directory of the container, when there is one (eBPF attaches there).
    fn unified_path(&self, id: &str) -> Option<PathBuf>;
    /// Current counters.
    fn usage(&self, id: &str) -> Result<CgroupUsage, CgroupError>;
    /// The counters eBPF does not give (throttling, memory sizes): the eBPF sampling path
    /// takes CPU time and OOM kills from the maps, and backends may skip those files here
    /// (`cpu_ns` and `oom_events` are then 0). Default: everything.
    fn usage_without_ebpf_counters(&self, id: &str) -> Result<CgroupUsage, CgroupError> {
        self.usage(id)
    }
    /// OOM kills in the container so far (read when its task ends, to tell an OOM kill
    /// from another SIGKILL). Backends read only the file that has them; default: `usage`.
    fn oom_kills(&self, id: &str) -> Result<u64, CgroupError> {
        self.usage(id).map(|u| u.oom_events)
    }
    /// The agent root directories (one per hierarchy), removed on shutdown when empty.
    fn root_paths(&self) -> Vec<PathBuf>;
}

/// Revocable (oversubscribed) containers live under this child of the agent's root, which
/// has the lowest cpu weight and is `cpu.idle` where the kernel has it (SCHED_IDLE for the
/// whole subtree: owners preempt them at once), so they yield first.
pub const REVOCABLE_PARENT: &str = "revocable";
/// Container ids with this prefix are revocable and placed under [`REVOCABLE_PARENT`].
pub const REVOCABLE_ID_PREFIX: &str = "rev-";

/// Whether the container id names a revocable container.
pub fn is_revocable_id(id: &str) -> bool {
    id.starts_with(REVOCABLE_ID_PREFIX)
}

/// The container's directory relative to the agent's root in every hierarchy.
pub(crate) fn relative_dir(id: &str) -> PathBuf {
    if is_revocable_id(id) {
        Path::new(REVOCABLE_PARENT).join(id)
    } else {
        PathBuf::from(id)
    }
}

/// Writes a control file that only some kernels have (e.g. `cpu.idle`, 5.15+); absent is fine.
pub(crate) fn write_optional(path: &Path, value: &str) -> Result<(), CgroupError> {
    if path.exists() {
        write_file(path, value)
    } else {
        Ok(())
    }
}

/// Whether the cgroup directory is already `cpu.idle` (SCHED_IDLE).
pub(crate) fn is_idle(dir: &Path) -> bool {
    fs::read_to_string(dir.join("cpu.idle")).is_ok_and(|v| v.trim() == "1")
}

/// Cgroup names become directory names: keep them boring.
pub(crate) fn check_name(name: &str) -> Result<(), CgroupError> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(CgroupError::InvalidName(name.to_string()))
    }
}

pub(crate) fn write_file(path: &Path, value: &str) -> Result<(), CgroupError> {
    fs::write(path, value).map_err(|e| CgroupError::io("write", path, e))
}

pub(crate) fn mkdir(path: &Path) -> Result<(), CgroupError> {
    match fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(CgroupError::io("create", path, e)),
    }
}

/// Reads a single-number file; missing file = `None`.
pub(crate) fn read_u64(path: &Path) -> Result<Option<u64>, CgroupError> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(CgroupError::io("read", path, e)),
    };
    let t = text.trim();
    if t == "max" {
        return Ok(Some(u64::MAX));
    }
    t.parse().map(Some).map_err(|_| CgroupError::Parse {
        path: path.to_path_buf(),
        why: format!("`{t}` is not a number"),
    })
}

/// Reads a `key value` per line file (cpu.stat, memory.stat, memory.events); missing = empty.
pub(crate) fn read_keyed(path: &Path) -> Result<Vec<(String, u64)>, CgroupError> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(CgroupError::io("read", path, e)),
    };
    Ok(parse_keyed(&text))
}

pub(crate) fn parse_keyed(text: &str) -> Vec<(String, u64)> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let k = it.next()?;
            let v = it.next()?.parse().ok()?;
            Some((k.to_string(), v))
        })
        .collect()
}

pub(crate) fn keyed(list: &[(String, u64)], key: &str) -> u64 {
    list.iter().find(|(k, _)| k == key).map_or(0, |&(_, v)| v)
}

/// How a process joins one hierarchy of a container's cgroup on its way to exec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Join {
    /// A cgroup v1 hierarchy: the process writes `0` into the `tasks` file. That moves the
    /// calling thread only (a freshly cloned, single-threaded process: the whole process),
    /// which the kernel does without taking the global threadgroup lock for writing, while
    /// a write to `cgroup.procs` waits for an RCU grace period (5–90 ms measured).
    Tasks(PathBuf),
    /// The cgroup2 hierarchy: the directory itself. The process is created in it
    /// (`clone3` with `CLONE_INTO_CGROUP`, no migration at all), or, on kernels without
    /// that, writes `0` into its `cgroup.procs`.
    Dir(PathBuf),
}

/// How to join every hierarchy of a container whose directories are `paths`, `unified`
/// being the cgroup2 one: the cgroup2 directory first, then the v1 hierarchies in reverse
/// order, so the cpu hierarchy (first in [`CgroupBackend::paths`]) comes last and the
/// task runs as little as possible of its pre-exec setup at its own (small) cpu share.
pub fn join_plan(paths: Vec<PathBuf>, unified: Option<&Path>) -> Vec<Join> {
    let (dirs, v1): (Vec<PathBuf>, Vec<PathBuf>) = paths
        .into_iter()
        .partition(|p| Some(p.as_path()) == unified);
    dirs.into_iter()
        .map(Join::Dir)
        .chain(v1.into_iter().rev().map(|p| Join::Tasks(p.join("tasks"))))
        .collect()
}

/// Opens the join handles of every hierarchy of the container (see [`join_plan`], in that
/// order): the v1 `tasks` files for writing, the cgroup2 directory read-only. The
/// supervisor hands them to the task, which joins them all before exec.
pub fn open_procs(backend: &dyn CgroupBackend, id: &str) -> Result<Vec<File>, CgroupError> {
    let unified = backend.unified_path(id);
    join_plan(backend.paths(id), unified.as_deref())
        .into_iter()
        .map(|j| match j {
            Join::Tasks(p) => OpenOptions::new()
                .write(true)
                .open(&p)
                .map_err(|e| CgroupError::io("open", &p, e)),
            Join::Dir(p) => File::open(&p).map_err(|e| CgroupError::io("open", &p, e)),
        })
        .collect()
}

/// Pids in the container's cgroups (all hierarchies, deduplicated).
pub fn pids(backend: &dyn CgroupBackend, id: &str) -> Vec<i32> {
    let mut out: Vec<i32> = Vec::new();
    for dir in backend.paths(id) {
        if let Ok(text) = fs::read_to_string(dir.join("cgroup.procs")) {
            out.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Kills whatever still runs in the container's cgroups (its nested containers' too) and
/// removes them from every hierarchy. Blocking (sleeps briefly between attempts): call from a blocking thread.
pub fn destroy(backend: &dyn CgroupBackend, id: &str) -> Result<(), CgroupError> {
    // Nested containers' cgroups (`<id>/nested/<child>`) first: a cgroup with children
    // cannot be removed.
    if let Err(e) = crate::nested::destroy_all_under(&backend.paths(id)) {
        tracing::warn!(cgroup = id, error = %e, "cannot remove nested container cgroups");
    }
    for attempt in 0..40 {
        let left = pids(backend, id);
        if left.is_empty() {
            break;
        }
        if attempt == 0 {
            tracing::debug!(cgroup = id, pids = ?left, "killing leftover processes");
        }
        for pid in left {
            let _ = sys::signal_pid(pid, Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut first_err = None;
    for dir in backend.paths(id) {
        if let Err(e) = remove_dir(&dir) {
            first_err.get_or_insert(e);
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// Removes the agent's root cgroups (only succeeds once they are empty).
pub fn remove_root(backend: &dyn CgroupBackend) -> Result<(), CgroupError> {
    let mut first_err = None;
    for dir in backend.root_paths() {
        let revocable = dir.join(REVOCABLE_PARENT);
        if revocable.is_dir() {
            if let Err(e) = remove_dir(&revocable) {
                first_err.get_or_insert(e);
            }
        }
        if let Err(e) = remove_dir(&dir) {
            first_err.get_or_insert(e);
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// `rmdir` of a cgroup directory, retried briefly while the kernel finishes tearing down
/// exited processes. On a real cgroupfs the control files are virtual and `rmdir` removes
/// the whole directory; on a plain directory (the fake cgroupfs of tests) the files are
/// removed first.
fn remove_dir(dir: &Path) -> Result<(), CgroupError> {
    for _ in 0..20 {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                if !sys::is_cgroup_fs(dir) {
                    return fs::remove_dir_all(dir).map_err(|e| CgroupError::io("remove", dir, e));
                }
                if e.raw_os_error() != Some(libc::EBUSY) {
                    return Err(CgroupError::io("remove", dir, e));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    Err(CgroupError::Busy(dir.to_path_buf()))
}

/// The cgroup layout of this machine.
#[derive(Clone, Debug, PartialEq)]
pub enum Layout {
    /// Pure cgroup2 mounted at this path.
    V2 { mount: PathBuf },
    /// cgroup v1 controllers (plus, usually, a cgroup2 hierarchy for eBPF).
    Hybrid(hybrid::HybridMounts),
}

/// Finds the cgroup layout from the text of `/proc/self/mountinfo`.
pub fn detect_layout(mountinfo: &str) -> Result<Layout, CgroupError> {
    let mut v2_mounts = Vec::new();
    let mut mounts = hybrid::HybridMounts::default();
    for line in mountinfo.lines() {
        // 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let Some(mount_point) = left.split_whitespace().nth(4) else {
            continue;
        };
        let mut r = right.split_whitespace();
        let (Some(fstype), Some(_source), Some(opts)) = (r.next(), r.next(), r.next()) else {
            continue;
        };
        let mp = PathBuf::from(mount_point);
        match fstype {
            "cgroup2" => v2_mounts.push(mp),
            "cgroup" => {
                for opt in opts.split(',') {
                    let slot = match opt {
                        "cpu" => &mut mounts.cpu,
                        "cpuacct" => &mut mounts.cpuacct,
                        "memory" => &mut mounts.memory,
                        "pids" => &mut mounts.pids,
                        _ => continue,
                    };
                    slot.get_or_insert_with(|| mp.clone());
                }
            }
            _ => {}
        }
    }
    if mounts.cpu.is_some() && mounts.memory.is_some() {
        mounts.unified = v2_mounts
            .iter()
            .find(|p| p.as_path() == Path::new("/sys/fs/cgroup/unified"))
            .or_else(|| v2_mounts.first())
            .cloned();
        return Ok(Layout::Hybrid(mounts));
    }
    if let Some(mount) = v2_mounts
        .iter()
        .find(|p| p.as_path() == Path::new("/sys/fs/cgroup"))
        .or_else(|| v2_mounts.first())
    {
        return Ok(Layout::V2 {
            mount: mount.clone(),
        });
    }
    Err(CgroupError::NoHierarchy)
}

/// The backend for `layout`, with the agent's root cgroup named `root`.
pub fn backend_for(layout: &Layout, root: &str) -> Result<Box<dyn CgroupBackend>, CgroupError> {
    check_name(root)?;
    Ok(match layout {
        Layout::V2 { mount } => Box::new(v2::V2Backend::new(mount, root)),
        Layout::Hybrid(m) => Box::new(hybrid::HybridBackend::new(m.clone(), root)),
    })
}

/// Detects this machine's layout and returns its backend.
pub fn detect(root: &str) -> Result<Box<dyn CgroupBackend>, CgroupError> {
    let path = Path::new("/proc/self/mountinfo");
    let text = fs::read_to_string(path).map_err(|e| CgroupError::io("read", path, e))?;
    backend_for(&detect_layout(&text)?, root)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const COMOUNTED: &str = "\
25 24 0:22 / /sys/fs/cgroup/cpu,cpuacct rw shared:9 - cgroup cgroup rw,cpu,cpuacct
26 24 0:23 / /sys/fs/cgroup/memory rw shared:10 - cgroup cgroup rw,memory
27 24 0:24 / /sys/fs/cgroup/unified rw shared:4 - cgroup2 cgroup2 rw,nsdelegate
";
    const V2: &str = "\
22 1 0:20 / /sys rw,nosuid shared:7 - sysfs sysfs rw
30 22 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    fn p(s: &str) -> Option<PathBuf> {
        Some(PathBuf::from(s))
    }

    #[test]
    fn detects_layouts() {
        assert_eq!(
            detect_layout(HYBRID).expect("hybrid"),
            Layout::Hybrid(hybrid::HybridMounts {
                cpu: p("/sys/fs/cgroup/cpu"),
                cpuacct: p("/sys/fs/cgroup/cpuacct"),
                memory: p("/sys/fs/cgroup/memory"),
                pids: p("/sys/fs/cgroup/pids"),
                unified: p("/sys/fs/cgroup/unified"),
            })
        );
        assert_eq!(
            detect_layout(COMOUNTED).expect("comounted"),
            Layout::Hybrid(hybrid::HybridMounts {
                cpu: p("/sys/fs/cgroup/cpu,cpuacct"),
                cpuacct: p("/sys/fs/cgroup/cpu,cpuacct"),
                memory: p("/sys/fs/cgroup/memory"),
                pids: None,
                unified: p("/sys/fs/cgroup/unified"),
            })
        );
        assert_eq!(
            detect_layout(V2).expect("v2"),
            Layout::V2 {
                mount: PathBuf::from("/sys/fs/cgroup")
            }
        );
        assert!(matches!(
            detect_layout("1 2 3:4 / / rw - ext4 /dev/sda rw"),
            Err(CgroupError::NoHierarchy)
        ));
    }

    #[test]
    fn parses_keyed_files() {
        let list = parse_keyed("usage_usec 12\nuser_usec 7\nbogus\nnr_throttled x\n");
        assert_eq!(keyed(&list, "usage_usec"), 12);
        assert_eq!(keyed(&list, "user_usec"), 7);
        assert_eq!(keyed(&list, "nr_throttled"), 0);
        assert_eq!(keyed(&list, "missing"), 0);
    }

    #[test]
    fn joins_cgroup2_first_and_the_cpu_hierarchy_last() {
        let b = Path::new("/sys/fs/cgroup");
        let paths: Vec<PathBuf> = ["cpu", "cpuacct", "memory", "pids", "unified"]
            .iter()
            .map(|h| b.join(h).join("brim/c1"))
            .collect();
        let unified = b.join("unified/brim/c1");
        let plan = join_plan(paths, Some(&unified));
        let t = |h: &str| Join::Tasks(b.join(h).join("brim/c1/tasks"));
        assert_eq!(
            plan,
            vec![
                Join::Dir(unified.clone()),
                t("pids"),
                t("memory"),
                t("cpuacct"),
                t("cpu"),
            ]
        );
        // Pure cgroup2: one directory to be born into.
        assert_eq!(
            join_plan(vec![unified.clone()], Some(&unified)),
            vec![Join::Dir(unified.clone())]
        );
        // No cgroup2 hierarchy: v1 only.
        assert_eq!(
            join_plan(vec![b.join("cpu/x"), b.join("memory/x")], None),
            vec![
                Join::Tasks(b.join("memory/x/tasks")),
                Join::Tasks(b.join("cpu/x/tasks"))
            ]
        );
    }

    #[test]
    fn rejects_bad_names() {
        for bad in ["", ".", "..", "a/b", "a b", "../x"] {
            assert!(check_name(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["brim", "brim-test-1a2b", "c.1_x"] {
            assert!(check_name(good).is_ok(), "{good:?} rejected");
        }
    }
}
