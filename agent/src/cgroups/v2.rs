//! Pure cgroup v2: `<mount>/<root>/<id>` with `cpu.weight`, optional `cpu.max` and
//! `memory.max`; controllers enabled through `cgroup.subtree_control`.

use std::fs;
use std::path::{Path, PathBuf};

use super::{
    is_revocable_id, keyed, mkdir, read_keyed, read_u64, relative_dir, write_file, write_optional,
    CgroupBackend, CgroupError, CgroupUsage, Limits, REVOCABLE_PARENT,
};

/// Controllers the agent wants for its containers (enabled when the kernel offers them).
const WANTED: [&str; 3] = ["cpu", "memory", "pids"];
/// CFS period used for `cpu.max`, in microseconds.
const CPU_PERIOD_US: u64 = 100_000;

#[derive(Debug, Clone)]
pub struct V2Backend {
    mount: PathBuf,
    root: PathBuf,
}

impl V2Backend {
    /// `mount` is the cgroup2 mount point (e.g. `/sys/fs/cgroup`), `root` the agent's
    /// cgroup name under it.
    pub fn new(mount: &Path, root: &str) -> Self {
        V2Backend {
            mount: mount.to_path_buf(),
            root: mount.join(root),
        }
    }
}

/// `cpu.weight` for a cpu share: 100 (the kernel default) per cpu, within [1, 10000].
pub fn cpu_weight(cpus: f64) -> u64 {
    ((cpus * 100.0).round() as u64).clamp(1, 10_000)
}

/// `cpu.max` content capping the group at `cpus` cpus.
pub fn cpu_max(cpus: f64) -> String {
    let quota = ((cpus * CPU_PERIOD_US as f64).round() as u64).max(1_000);
    format!("{quota} {CPU_PERIOD_US}")
}

/// Enables the wanted controllers that `dir/cgroup.controllers` offers for `dir`'s children.
pub(crate) fn enable_controllers(dir: &Path) -> Result<(), CgroupError> {
    let path = dir.join("cgroup.controllers");
    let available = fs::read_to_string(&path).map_err(|e| CgroupError::io("read", &path, e))?;
    let line = WANTED
        .iter()
        .filter(|c| available.split_whitespace().any(|a| a == **c))
        .map(|c| format!("+{c}"))
        .collect::<Vec<_>>()
        .join(" ");
    if line.is_empty() {
        return Ok(());
    }
    write_file(&dir.join("cgroup.subtree_control"), &line)
}

impl CgroupBackend for V2Backend {
    fn kind(&self) -> &'static str {
        "v2"
    }

    fn prepare(&self) -> Result<(), CgroupError> {
        // The mount's own subtree_control may already be managed by systemd; a failure here
        // only matters if the controllers end up missing below.
        if let Err(e) = enable_controllers(&self.mount) {
            tracing::warn!(error = %e, "could not enable controllers at the cgroup2 root");
        }
        mkdir(&self.root)?;
        enable_controllers(&self.root)
    }

    fn create(&self, id: &str, limits: &Limits) -> Result<(), CgroupError> {
        super::check_name(id)?;
        if is_revocable_id(id) {
            // Lowest weight and SCHED_IDLE for the whole revocable subtree.
            let parent = self.root.join(REVOCABLE_PARENT);
            mkdir(&parent)?;
            // An idle group refuses weight changes (EINVAL): set the weight first, once.
            if !super::is_idle(&parent) {
                write_file(&parent.join("cpu.weight"), "1")?;
                write_optional(&parent.join("cpu.idle"), "1")?;
            }
            enable_controllers(&parent)?;
        }
        let dir = self.root.join(relative_dir(id));
        mkdir(&dir)?;
        write_file(
            &dir.join("cpu.weight"),
            &cpu_weight(limits.cpus).to_string(),
        )?;
        if limits.cpu_hard_limit && limits.cpus > 0.0 {
            write_file(&dir.join("cpu.max"), &cpu_max(limits.cpus))?;
        }
        if let Some(bytes) = limits.mem_bytes {
            write_file(&dir.join("memory.max"), &bytes.to_string())?;
            // No swap beyond the limit, like memory.memsw on v1 would do.
            let swap = dir.join("memory.swap.max");
            if swap.exists() {
                write_file(&swap, "0")?;
            }
        }
        if let Some(n) = limits.pids_max {
            write_file(&dir.join("pids.max"), &n.to_string())?;
        }
        Ok(())
    }

    fn paths(&self, id: &str) -> Vec<PathBuf> {
        vec![self.root.join(relative_dir(id))]
    }

    fn unified_path(&self, id: &str) -> Option<PathBuf> {
        Some(self.root.join(relative_dir(id)))
    }

    fn usage(&self, id: &str) -> Result<CgroupUsage, CgroupError> {
        let dir = self.root.join(relative_dir(id));
        let cpu = read_keyed(&dir.join("cpu.stat"))?;
        let mem = read_keyed(&dir.join("memory.stat"))?;
        let events = read_keyed(&dir.join("memory.events"))?;
        Ok(CgroupUsage {
            cpu_ns: keyed(&cpu, "usage_usec").saturating_mul(1000),
            cpu_throttled_ns: keyed(&cpu, "throttled_usec").saturating_mul(1000),
            mem_current_bytes: read_u64(&dir.join("memory.current"))?.unwrap_or(0),
            mem_rss_bytes: keyed(&mem, "anon"),
            mem_cache_bytes: keyed(&mem, "file"),
            oom_events: keyed(&events, "oom_kill"),
        })
    }

    fn oom_kills(&self, id: &str) -> Result<u64, CgroupError> {
        let dir = self.root.join(relative_dir(id));
        Ok(keyed(&read_keyed(&dir.join("memory.events"))?, "oom_kill"))
    }

    fn root_paths(&self) -> Vec<PathBuf> {
        vec![self.root.clone()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroups;

    fn read(p: &Path) -> String {
        fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
    }

    fn fake_mount() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(
            dir.path().join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        )
        .expect("write controllers");
        dir
    }

    #[test]
    fn weights_and_quotas() {
        assert_eq!(cpu_weight(1.0), 100);
        assert_eq!(cpu_weight(0.001), 1);
        assert_eq!(cpu_weight(2.5), 250);
        assert_eq!(cpu_weight(500.0), 10_000);
        assert_eq!(cpu_max(0.5), "50000 100000");
        assert_eq!(cpu_max(0.0001), "1000 100000");
    }

    #[test]
    fn prepare_enables_controllers_on_mount_and_root() {
        let mount = fake_mount();
        let b = V2Backend::new(mount.path(), "brim-t");
        // The kernel populates cgroup.controllers of a new cgroup; emulate it.
        fs::create_dir(mount.path().join("brim-t")).expect("mkdir root");
        fs::write(
            mount.path().join("brim-t/cgroup.controllers"),
            "cpu memory\n",
        )
        .expect("write controllers");
        b.prepare().expect("prepare");
        assert_eq!(
            read(&mount.path().join("cgroup.subtree_control")),
            "+cpu +memory +pids"
        );
        assert_eq!(
            read(&mount.path().join("brim-t/cgroup.subtree_control")),
            "+cpu +memory"
        );
    }

    #[test]
    fn revocable_containers_live_under_an_idle_lowest_weight_parent() {
        let mount = fake_mount();
        let b = V2Backend::new(mount.path(), "brim-t");
        let root = mount.path().join("brim-t");
        fs::create_dir(&root).expect("mkdir root");
        // The kernel would populate these; emulate a kernel with cpu.idle.
        fs::create_dir(root.join("revocable")).expect("mkdir parent");
        fs::write(
            root.join("revocable/cgroup.controllers"),
            "cpu memory pids\n",
        )
        .expect("controllers");
        fs::write(root.join("revocable/cpu.idle"), "0").expect("idle");
        let id = "rev-abc";
        assert!(cgroups::is_revocable_id(id));
        b.create(
            id,
            &Limits {
                cpus: 0.5,
                ..Default::default()
            },
        )
        .expect("create");
        assert_eq!(read(&root.join("revocable/cpu.weight")), "1");
        assert_eq!(read(&root.join("revocable/cpu.idle")), "1");
        assert_eq!(
            read(&root.join("revocable/cgroup.subtree_control")),
            "+cpu +memory +pids"
        );
        assert_eq!(read(&root.join("revocable/rev-abc/cpu.weight")), "50");
        assert_eq!(b.paths(id), vec![root.join("revocable/rev-abc")]);
        assert_eq!(b.unified_path(id), Some(root.join("revocable/rev-abc")));
        // A second revocable container does not touch the idle parent's weight again.
        fs::write(root.join("revocable/cpu.weight"), "untouched").expect("mark");
        b.create("rev-def", &Limits::default())
            .expect("create second");
        assert_eq!(read(&root.join("revocable/cpu.weight")), "untouched");
        cgroups::destroy(&b, id).expect("destroy");
        cgroups::destroy(&b, "rev-def").expect("destroy");
        assert!(!root.join("revocable/rev-abc").exists());
    }

    #[test]
    fn create_writes_limits_and_destroy_removes() {
        let mount = fake_mount();
        let b = V2Backend::new(mount.path(), "brim-t");
        fs::create_dir(mount.path().join("brim-t")).expect("mkdir root");
        let limits = Limits {
            cpus: 1.5,
            cpu_hard_limit: true,
            mem_bytes: Some(128 << 20),
            pids_max: None,
        };
        b.create("c1", &limits).expect("create");
        let dir = mount.path().join("brim-t/c1");
        assert_eq!(read(&dir.join("cpu.weight")), "150");
        assert_eq!(read(&dir.join("cpu.max")), "150000 100000");
        assert_eq!(read(&dir.join("memory.max")), "134217728");
        assert_eq!(b.paths("c1"), vec![dir.clone()]);
        assert_eq!(b.unified_path("c1"), Some(dir.clone()));

        // Soft limit only, no memory limit: neither cpu.max nor memory.max.
        b.create(
            "c2",
            &Limits {
                cpus: 1.0,
                cpu_hard_limit: false,
                mem_bytes: None,
                pids_max: None,
            },
        )
        .expect("create c2");
        assert!(!mount.path().join("brim-t/c2/cpu.max").exists());
        assert!(!mount.path().join("brim-t/c2/memory.max").exists());

        fs::write(dir.join("cgroup.procs"), "").expect("procs");
        assert!(cgroups::pids(&b, "c1").is_empty());
        cgroups::destroy(&b, "c1").expect("destroy");
        assert!(!dir.exists());
        cgroups::destroy(&b, "c2").expect("destroy c2");
        cgroups::remove_root(&b).expect("remove root");
        assert!(!mount.path().join("brim-t").exists());
    }

    #[test]
    fn reads_usage() {
        let mount = fake_mount();
        let b = V2Backend::new(mount.path(), "brim-t");
        let dir = mount.path().join("brim-t/c1");
        fs::create_dir_all(&dir).expect("mkdir");
        fs::write(
            dir.join("cpu.stat"),
            "usage_usec 2500\nuser_usec 2000\nthrottled_usec 7\n",
        )
        .expect("cpu.stat");
        fs::write(dir.join("memory.current"), "4096\n").expect("memory.current");
        fs::write(dir.join("memory.stat"), "anon 1024\nfile 2048\n").expect("memory.stat");
        fs::write(dir.join("memory.events"), "low 0\noom 1\noom_kill 1\n").expect("events");
        let u = b.usage("c1").expect("usage");
        assert_eq!(
            u,
            CgroupUsage {
                cpu_ns: 2_500_000,
                cpu_throttled_ns: 7_000,
                mem_current_bytes: 4096,
                mem_rss_bytes: 1024,
                mem_cache_bytes: 2048,
                oom_events: 1,
            }
        );
        assert_eq!(b.oom_kills("c1").expect("oom kills"), 1);
    }

    #[test]
    fn rejects_traversal_in_ids() {
        let mount = fake_mount();
        let b = V2Backend::new(mount.path(), "brim-t");
        assert!(matches!(
            b.create("../escape", &Limits::default()),
            Err(CgroupError::InvalidName(_))
        ));
    }
}
