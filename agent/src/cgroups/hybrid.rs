//! Hybrid layout: cgroup v1 controllers carry the limits and the accounting
//! (`cpu.shares`, `memory.limit_in_bytes`, `cpuacct.usage`), and every container also gets a
//! directory in the cgroup2 ("unified") hierarchy so eBPF programs can attach to it.

use std::path::{Path, PathBuf};

use super::{
    keyed, mkdir, read_keyed, read_u64, write_file, CgroupBackend, CgroupError, CgroupUsage, Limits,
};

/// CFS period used for `cpu.cfs_quota_us`, in microseconds.
const CPU_PERIOD_US: u64 = 100_000;

/// Mount points of the v1 controllers the agent uses, and of the cgroup2 hierarchy.
/// Co-mounted controllers (`cpu,cpuacct`) share one path.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HybridMounts {
    pub cpu: Option<PathBuf>,
    pub cpuacct: Option<PathBuf>,
    pub memory: Option<PathBuf>,
    pub pids: Option<PathBuf>,
    pub unified: Option<PathBuf>,
}

impl HybridMounts {
    /// The conventional layout under `base` (`base/{cpu,cpuacct,memory,pids,unified}`).
    pub fn under(base: &Path) -> Self {
        HybridMounts {
            cpu: Some(base.join("cpu")),
            cpuacct: Some(base.join("cpuacct")),
            memory: Some(base.join("memory")),
            pids: Some(base.join("pids")),
            unified: Some(base.join("unified")),
        }
    }

    /// Distinct mount points, in a stable order: cpu, cpuacct, memory, pids, unified (the
    /// cpu hierarchy first: [`super::join_plan`] joins it last).
    fn all(&self) -> Vec<&Path> {
        let mut out: Vec<&Path> = Vec::new();
        for p in [
            &self.cpu,
            &self.cpuacct,
            &self.memory,
            &self.pids,
            &self.unified,
        ]
        .into_iter()
        .flatten()
        {
            if !out.contains(&p.as_path()) {
                out.push(p);
            }
        }
        out
    }
}

#[derive(Debug, Clone)]
pub struct HybridBackend {
    mounts: HybridMounts,
    root: String,
}

/// `cpu.shares` for a cpu share: 1024 per cpu, at least 2 (the kernel minimum).
pub fn cpu_shares(cpus: f64) -> u64 {
    ((cpus * 1024.0).round() as u64).clamp(2, 262_144)
}

impl HybridBackend {
    pub fn new(mounts: HybridMounts, root: &str) -> Self {
        HybridBackend {
            mounts,
            root: root.to_string(),
        }
    }

    fn dir(&self, mount: &Option<PathBuf>, id: &str) -> Option<PathBuf> {
        mount
            .as_ref()
            .map(|m| m.join(&self.root).join(super::relative_dir(id)))
    }
}

impl HybridBackend {
    /// The revocable subtree: `cpu.shares` 2 (the minimum) and `cpu.idle` 1 (SCHED_IDLE for
    /// the group, where the kernel has it), and a zero memory soft limit so global reclaim
    /// takes from revocable tasks first.
    fn prepare_revocable_parent(&self) -> Result<(), CgroupError> {
        for m in self.mounts.all() {
            mkdir(&m.join(&self.root).join(super::REVOCABLE_PARENT))?;
        }
        let parent = |mount: &Option<PathBuf>| {
            mount
                .as_ref()
                .map(|m| m.join(&self.root).join(super::REVOCABLE_PARENT))
        };
        if let Some(cpu) = parent(&self.mounts.cpu) {
            // An idle group refuses weight changes (EINVAL): set the weight first, once.
            if !super::is_idle(&cpu) {
                write_file(&cpu.join("cpu.shares"), "2")?;
                super::write_optional(&cpu.join("cpu.idle"), "1")?;
            }
        }
        if let Some(mem) = parent(&self.mounts.memory) {
            super::write_optional(&mem.join("memory.soft_limit_in_bytes"), "0")?;
        }
        Ok(())
    }
}

impl CgroupBackend for HybridBackend {
    fn kind(&self) -> &'static str {
        "hybrid"
    }

    fn prepare(&self) -> Result<(), CgroupError> {
        for m in self.mounts.all() {
            mkdir(&m.join(&self.root))?;
        }
        Ok(())
    }

    fn create(&self, id: &str, limits: &Limits) -> Result<(), CgroupError> {
        super::check_name(id)?;
        if super::is_revocable_id(id) {
            self.prepare_revocable_parent()?;
        }
        for d in self.paths(id) {
            mkdir(&d)?;
        }
        if let Some(cpu) = self.dir(&self.mounts.cpu, id) {
            write_file(
                &cpu.join("cpu.shares"),
                &cpu_shares(limits.cpus).to_string(),
            )?;
            if limits.cpu_hard_limit && limits.cpus > 0.0 {
                let quota = ((limits.cpus * CPU_PERIOD_US as f64).round() as u64).max(1_000);
                write_file(&cpu.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
                write_file(&cpu.join("cpu.cfs_quota_us"), &quota.to_string())?;
            }
        }
        if let (Some(mem), Some(bytes)) = (self.dir(&self.mounts.memory, id), limits.mem_bytes) {
            write_file(&mem.join("memory.limit_in_bytes"), &bytes.to_string())?;
            // No swap beyond the limit (as memory.swap.max=0 on v2); only where the kernel
            // accounts swap, and after limit_in_bytes, which memsw may not go below.
            let memsw = mem.join("memory.memsw.limit_in_bytes");
            if memsw.exists() {
                write_file(&memsw, &bytes.to_string())?;
            }
        }
        if let (Some(pids), Some(n)) = (self.dir(&self.mounts.pids, id), limits.pids_max) {
            write_file(&pids.join("pids.max"), &n.to_string())?;
        }
        Ok(())
    }

    fn paths(&self, id: &str) -> Vec<PathBuf> {
        self.mounts
            .all()
            .into_iter()
            .map(|m| m.join(&self.root).join(super::relative_dir(id)))
            .collect()
    }

    fn unified_path(&self, id: &str) -> Option<PathBuf> {
        self.dir(&self.mounts.unified, id)
    }

    fn usage(&self, id: &str) -> Result<CgroupUsage, CgroupError> {
        let mut u = CgroupUsage::default();
        if let Some(acct) = self.dir(&self.mounts.cpuacct, id) {
            u.cpu_ns = read_u64(&acct.join("cpuacct.usage"))?.unwrap_or(0);
        }
        if let Some(cpu) = self.dir(&self.mounts.cpu, id) {
            u.cpu_throttled_ns = keyed(&read_keyed(&cpu.join("cpu.stat"))?, "throttled_time");
        }
        if let Some(mem) = self.dir(&self.mounts.memory, id) {
            u.mem_current_bytes = read_u64(&mem.join("memory.usage_in_bytes"))?.unwrap_or(0);
            let stat = read_keyed(&mem.join("memory.stat"))?;
            u.mem_rss_bytes = keyed(&stat, "total_rss");
            u.mem_cache_bytes = keyed(&stat, "total_cache");
            u.oom_events = keyed(&read_keyed(&mem.join("memory.oom_control"))?, "oom_kill");
        }
        Ok(u)
    }

    /// Skips `cpuacct.usage` and `memory.oom_control` (2 of the 5 files `usage` reads).
    fn usage_without_ebpf_counters(&self, id: &str) -> Result<CgroupUsage, CgroupError> {
        let mut u = CgroupUsage::default();
        if let Some(cpu) = self.dir(&self.mounts.cpu, id) {
            u.cpu_throttled_ns = keyed(&read_keyed(&cpu.join("cpu.stat"))?, "throttled_time");
        }
        if let Some(mem) = self.dir(&self.mounts.memory, id) {
            u.mem_current_bytes = read_u64(&mem.join("memory.usage_in_bytes"))?.unwrap_or(0);
            let stat = read_keyed(&mem.join("memory.stat"))?;
            u.mem_rss_bytes = keyed(&stat, "total_rss");
            u.mem_cache_bytes = keyed(&stat, "total_cache");
        }
        Ok(u)
    }

    fn oom_kills(&self, id: &str) -> Result<u64, CgroupError> {
        match self.dir(&self.mounts.memory, id) {
            Some(mem) => Ok(keyed(
                &read_keyed(&mem.join("memory.oom_control"))?,
                "oom_kill",
            )),
            None => Ok(0),
        }
    }

    fn root_paths(&self) -> Vec<PathBuf> {
        self.mounts
            .all()
            .into_iter()
            .map(|m| m.join(&self.root))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::cgroups;

    fn read(p: &Path) -> String {
        fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
    }

    /// A tempdir with the (empty) mount points of the conventional hybrid layout.
    fn fake_base() -> tempfile::TempDir {
        let base = tempfile::tempdir().expect("tempdir");
        for c in ["cpu", "cpuacct", "memory", "pids", "unified"] {
            fs::create_dir(base.path().join(c)).expect("mkdir mount");
        }
        base
    }

    #[test]
    fn shares() {
        assert_eq!(cpu_shares(1.0), 1024);
        assert_eq!(cpu_shares(0.5), 512);
        assert_eq!(cpu_shares(0.0), 2);
        assert_eq!(cpu_shares(1e6), 262_144);
    }

    #[test]
    fn revocable_containers_join_the_revocable_parent_in_every_hierarchy() {
        let base = fake_base();
        let b = HybridBackend::new(HybridMounts::under(base.path()), "brim-t");
        b.prepare().expect("prepare");
        b.create(
            "rev-1",
            &Limits {
                cpus: 1.0,
                ..Default::default()
            },
        )
        .expect("create");
        let p = |c: &str| base.path().join(c).join("brim-t/revocable");
        assert_eq!(read(&p("cpu").join("cpu.shares")), "2");
        assert_eq!(read(&p("cpu").join("rev-1/cpu.shares")), "1024");
        assert_eq!(
            b.paths("rev-1"),
            ["cpu", "cpuacct", "memory", "pids", "unified"]
                .map(|c| p(c).join("rev-1"))
                .to_vec()
        );
        assert_eq!(b.unified_path("rev-1"), Some(p("unified").join("rev-1")));
        cgroups::destroy(&b, "rev-1").expect("destroy");
        cgroups::remove_root(&b).expect("root and revocable parent removed");
        assert!(!base.path().join("cpu/brim-t").exists());
    }

    #[test]
    fn create_joins_every_hierarchy_and_writes_limits() {
        let base = fake_base();
        let b = HybridBackend::new(HybridMounts::under(base.path()), "brim-t");
        b.prepare().expect("prepare");
        for c in ["cpu", "cpuacct", "memory", "pids", "unified"] {
            assert!(
                base.path().join(c).join("brim-t").is_dir(),
                "{c} root missing"
            );
        }
        let limits = Limits {
            cpus: 1.5,
            cpu_hard_limit: true,
            mem_bytes: Some(64 << 20),
            pids_max: None,
        };
        b.create("c1", &limits).expect("create");
        let p = |c: &str| base.path().join(c).join("brim-t/c1");
        assert_eq!(read(&p("cpu").join("cpu.shares")), "1536");
        assert_eq!(read(&p("cpu").join("cpu.cfs_quota_us")), "150000");
        assert_eq!(read(&p("cpu").join("cpu.cfs_period_us")), "100000");
        assert_eq!(read(&p("memory").join("memory.limit_in_bytes")), "67108864");
        assert_eq!(
            b.paths("c1"),
            ["cpu", "cpuacct", "memory", "pids", "unified"]
                .map(p)
                .to_vec()
        );
        assert_eq!(b.unified_path("c1"), Some(p("unified")));

        cgroups::destroy(&b, "c1").expect("destroy");
        for c in ["cpu", "cpuacct", "memory", "pids", "unified"] {
            assert!(!p(c).exists(), "{c} cgroup left behind");
        }
        cgroups::remove_root(&b).expect("remove root");
        assert!(!base.path().join("memory/brim-t").exists());
    }

    #[test]
    fn comounted_controllers_get_one_directory() {
        let base = tempfile::tempdir().expect("tempdir");
        let both = base.path().join("cpu,cpuacct");
        let mounts = HybridMounts {
            cpu: Some(both.clone()),
            cpuacct: Some(both.clone()),
            memory: Some(base.path().join("memory")),
            pids: None,
            unified: None,
        };
        let b = HybridBackend::new(mounts, "brim-t");
        assert_eq!(
            b.paths("x"),
            vec![both.join("brim-t/x"), base.path().join("memory/brim-t/x")]
        );
        assert_eq!(b.unified_path("x"), None);
    }

    #[test]
    fn reads_usage() {
        let base = fake_base();
        let b = HybridBackend::new(HybridMounts::under(base.path()), "brim-t");
        b.prepare().expect("prepare");
        b.create(
            "c1",
            &Limits {
                cpus: 1.0,
                cpu_hard_limit: false,
                mem_bytes: None,
                pids_max: None,
            },
        )
        .expect("create");
        let p = |c: &str| base.path().join(c).join("brim-t/c1");
        fs::write(p("cpuacct").join("cpuacct.usage"), "123456789\n").expect("w");
        fs::write(
            p("cpu").join("cpu.stat"),
            "nr_periods 3\nthrottled_time 55\n",
        )
        .expect("w");
        fs::write(p("memory").join("memory.usage_in_bytes"), "8192\n").expect("w");
        fs::write(
            p("memory").join("memory.stat"),
            "cache 1\nrss 2\ntotal_cache 100\ntotal_rss 200\n",
        )
        .expect("w");
        fs::write(
            p("memory").join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        )
        .expect("w");
        assert_eq!(
            b.usage("c1").expect("usage"),
            CgroupUsage {
                cpu_ns: 123_456_789,
                cpu_throttled_ns: 55,
                mem_current_bytes: 8192,
                mem_rss_bytes: 200,
                mem_cache_bytes: 100,
                oom_events: 2,
            }
        );
        assert_eq!(b.oom_kills("c1").expect("oom kills"), 2);
        assert!(!p("memory").join("memory.limit_in_bytes").exists());
    }
}
