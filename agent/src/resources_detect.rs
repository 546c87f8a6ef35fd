//! What this machine offers: cpus = online cpus, mem = MemTotal minus a 1 GiB reserve (never
//! more than half), disk = free space of the work dir's filesystem minus 10 %,
//! ports = [31000-32000].

use std::path::Path;

use brim_proto::{RangeSet, ResourceError, Resources};

use crate::sys;

/// Memory left to the system, in MiB.
const MEM_RESERVE_MIB: u64 = 1024;

/// Parses `MemTotal` (MiB) out of `/proc/meminfo` text.
pub fn mem_total_mib(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

/// Memory to offer out of `total` MiB: the reserve comes off, but at least half remains.
pub fn offered_mem_mib(total: u64) -> u64 {
    total.saturating_sub(MEM_RESERVE_MIB).max(total / 2)
}

/// Disk to offer out of `free` MiB: 90 %.
pub fn offered_disk_mib(free: u64) -> u64 {
    free - free / 10
}

/// Auto-detected resources of this machine, with `overrides` applied per name.
pub fn detect(work_dir: &Path, overrides: Option<&Resources>) -> Result<Resources, ResourceError> {
    let mut r = Resources::new();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    r.set_scalar("cpus", cpus as f64)?;
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| mem_total_mib(&t))
        .map_or(0, offered_mem_mib);
    r.set_scalar("mem", mem as f64)?;
    match sys::free_disk_bytes(work_dir) {
        Ok(bytes) => r.set_scalar("disk", offered_disk_mib(bytes >> 20) as f64)?,
        Err(e) => {
            tracing::warn!(error = %e, dir = %work_dir.display(), "cannot read free disk space; offering no disk")
        }
    }
    r.set_ranges("ports", RangeSet::new(vec![(31000, 32000)]))?;
    if let Some(o) = overrides {
        r.override_with(o);
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory() {
        assert_eq!(
            mem_total_mib("MemTotal:       16384000 kB\nMemFree: 1 kB\n"),
            Some(16000)
        );
        assert_eq!(mem_total_mib("MemFree: 1 kB\n"), None);
        assert_eq!(offered_mem_mib(16000), 14976);
        assert_eq!(offered_mem_mib(1500), 750);
        assert_eq!(offered_mem_mib(0), 0);
        assert_eq!(offered_disk_mib(1000), 900);
    }

    #[test]
    fn detects_and_overrides() {
        let dir = tempfile::tempdir().expect("tempdir");
        let o = Resources::parse("cpus:3;gpus:1").expect("parse");
        let r = detect(dir.path(), Some(&o)).expect("detect");
        assert_eq!(r.scalar("cpus"), 3.0);
        assert_eq!(r.scalar("gpus"), 1.0);
        assert!(r.scalar("mem") > 0.0);
        assert_eq!(
            r.ranges("ports").map(ToString::to_string).as_deref(),
            Some("[31000-32000]")
        );
    }
}
