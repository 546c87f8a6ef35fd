//! Persistent volumes (Mesos CREATE/DESTROY): directories under
//! `<work_dir>/volumes/<role>/<persistence_id>` that outlive the tasks using them.
//!
//! A task whose resources name a volume (`Resource.volume`) finds it at its
//! `container_path` inside the sandbox: the agent creates the volume directory on first use.
//! A task in its own mount namespace (which hides the work dir) gets it bind-mounted there by
//! its supervisor, inside that namespace only (the agent leaves an empty mount point in the
//! sandbox); a task without namespaces gets a symlink. Either way nothing in the agent's
//! namespace points into the volume from the sandbox but a symlink, which sandbox removal
//! does not follow. The directory is removed only when the master says the volume was
//! destroyed.
//!
//! Container volumes (`ContainerInfo.volumes`, Mesos HOST_PATH / SANDBOX_PATH): a host
//! directory under an entry of the agent's `--allowed-host-paths`, or a directory of the
//! sandbox, mounted at a container path, read-write or read-only. [`plan`] validates them
//! (pure over a path resolver) into [`Bind`]s; native tasks get them bind-mounted by their
//! supervisor in their mount namespace, OCI tasks as `mounts` of the runtime spec.
//!
//! Architecture Invariant: every path built here stays under `<work_dir>/volumes` (role
//! and id components are checked) or under the task's sandbox (container paths are
//! relative, without `..`), or is an absolute path inside an OCI container's root, or a
//! resolved host path under an allowed entry. Mount points in the sandbox are created
//! without following symlinks ([`mkdir_in`]).

use std::io;
use std::path::{Component, Path, PathBuf};

use brim_proto::v1::{container_volume, ContainerVolume, TaskInfo};

/// Where a mount appears in the task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Relative to the sandbox (normal components only).
    Sandbox(PathBuf),
    /// An absolute path in an OCI container's root filesystem (normalized).
    Container(PathBuf),
}

/// One validated mount: a host directory at a target, read-only or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    pub source: PathBuf,
    pub target: Target,
    pub readonly: bool,
}

/// Where an OCI task's sandbox is mounted (targets at or above it would hide it).
const SANDBOX_IN_CONTAINER: &str = "/mnt/mesos/sandbox";

/// Validates a container path: relative (inside the sandbox), or absolute for OCI tasks;
/// no `..`, not `/`, not under `/proc`, `/sys`, `/dev`, not the sandbox or above it.
pub fn container_target(path: &str, oci: bool, field: &str) -> Result<Target, String> {
    if path.is_empty() || path.contains('\0') {
        return Err(format!("{field} is empty or contains NUL: set a path"));
    }
    let p = Path::new(path);
    if p.components().any(|c| c == Component::ParentDir) {
        return Err(format!(
            "{field} `{path}` contains `..`: use a path without it"
        ));
    }
    if !p.is_absolute() {
        let rel = safe_relative(path).ok_or_else(|| {
            format!("{field} `{path}` is not a plain relative path: drop `.` components")
        })?;
        return Ok(Target::Sandbox(rel.to_path_buf()));
    }
    if !oci {
        return Err(format!(
            "{field} `{path}` is absolute: native tasks take paths relative to their sandbox (absolute paths need an OCI container)"
        ));
    }
    let norm: PathBuf = p
        .components()
        .filter(|c| matches!(c, Component::RootDir | Component::Normal(_)))
        .collect();
    if norm == Path::new("/") {
        return Err(format!("{field} is `/`: mount below the root"));
    }
    for banned in ["/proc", "/sys", "/dev"] {
        if norm.starts_with(banned) {
            return Err(format!(
                "{field} `{path}` is under {banned}: the runtime owns it, pick another path"
            ));
        }
    }
    if Path::new(SANDBOX_IN_CONTAINER).starts_with(&norm) {
        return Err(format!(
            "{field} `{path}` would hide the sandbox at {SANDBOX_IN_CONTAINER}: pick another path"
        ));
    }
    Ok(Target::Container(norm))
}

/// Validates a task's container volumes into binds. `resolve` canonicalizes a host path
/// (symlinks followed; `std::fs::canonicalize` outside tests); `allowed` are the agent's
/// canonical `--allowed-host-paths`. Sandbox sources are returned relative to `sandbox`
/// ([`resolve_sandbox_sources`] makes and checks them once the sandbox exists). `field`
/// names the list in messages (`container.volumes`).
pub fn plan(
    volumes: &[ContainerVolume],
    oci: bool,
    allowed: &[PathBuf],
    sandbox: &Path,
    field: &str,
    resolve: &dyn Fn(&Path) -> io::Result<PathBuf>,
) -> Result<Vec<Bind>, String> {
    let mut out: Vec<Bind> = Vec::new();
    for (i, v) in volumes.iter().enumerate() {
        let f = format!("{field}[{i}]");
        let target = container_target(&v.container_path, oci, &format!("{f}.container_path"))?;
        if out.iter().any(|b| b.target == target) {
            return Err(format!(
                "{f}.container_path `{}` is used twice: one volume per path",
                v.container_path
            ));
        }
        let readonly = match container_volume::Mode::try_from(v.mode) {
            Ok(container_volume::Mode::Rw) => false,
            Ok(container_volume::Mode::Ro) => true,
            Err(_) => return Err(format!("{f}.mode {} is unknown: use RW or RO", v.mode)),
        };
        let source = match &v.source {
            Some(container_volume::Source::HostPath(h)) => {
                let hp = Path::new(h);
                if !hp.is_absolute() || h.contains('\0') {
                    return Err(format!(
                        "{f}.host_path `{h}` is not an absolute path: name a directory on the agent"
                    ));
                }
                let real = resolve(hp).map_err(|e| {
                    format!("{f}.host_path `{h}` cannot be resolved on this agent: {e}")
                })?;
                if !allowed.iter().any(|a| real.starts_with(a)) {
                    return Err(format!(
                        "{f}.host_path `{h}` (resolved: {}) is not under the agent's --allowed-host-paths: ask the operator to allow it",
                        real.display()
                    ));
                }
                real
            }
            Some(container_volume::Source::SandboxPath(s)) => {
                let rel = safe_relative(s).ok_or_else(|| {
                    format!(
                        "{f}.sandbox_path `{s}` is not a plain relative path: use one without `..`"
                    )
                })?;
                sandbox.join(rel)
            }
            None => return Err(format!("{f} has no source: set host_path or sandbox_path")),
        };
        out.push(Bind {
            source,
            target,
            readonly,
        });
    }
    Ok(out)
}

/// Creates `base/rel` (each component a directory, none a symlink) and returns it: nothing
/// is created through a link a fetched archive may have left in the sandbox.
pub fn mkdir_in(base: &Path, rel: &Path) -> io::Result<PathBuf> {
    std::fs::create_dir_all(base)?;
    let mut cur = base.to_path_buf();
    for c in rel.components() {
        let Component::Normal(name) = c else {
            return Err(io::Error::other(format!(
                "{} is not a plain relative path",
                rel.display()
            )));
        };
        cur.push(name);
        match std::fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_dir() => {}
            Ok(_) => {
                return Err(io::Error::other(format!(
                    "{} exists and is not a directory (a symlink is not followed)",
                    cur.display()
                )))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => std::fs::create_dir(&cur)?,
            Err(e) => return Err(e),
        }
    }
    Ok(cur)
}

/// Makes the sandbox sources and sandbox mount points of `binds` (the sandbox exists now),
/// owned by `owner` when created.
pub fn prepare_binds(
    binds: &[Bind],
    sandbox: &Path,
    owner: Option<(u32, u32)>,
) -> Result<(), (PathBuf, io::Error)> {
    let chown = |p: &Path| -> Result<(), (PathBuf, io::Error)> {
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(p, Some(uid), Some(gid)).map_err(|e| (p.to_path_buf(), e))?;
        }
        Ok(())
    };
    for b in binds {
        if let Ok(rel) = b.source.strip_prefix(sandbox) {
            let made = mkdir_in(sandbox, rel).map_err(|e| (b.source.clone(), e))?;
            chown(&made)?;
        }
        if let Target::Sandbox(rel) = &b.target {
            let made = mkdir_in(sandbox, rel).map_err(|e| (sandbox.join(rel), e))?;
            chown(&made)?;
        }
    }
    Ok(())
}

/// A path component list that is safe to join: non-empty, only normal components.
fn safe_relative(s: &str) -> Option<&Path> {
    let p = Path::new(s);
    let ok = !s.is_empty()
        && !s.contains('\0')
        && p.components().all(|c| matches!(c, Component::Normal(_)));
    ok.then_some(p)
}

/// The directory of a volume, or `None` when the role or id could leave `volumes/`.
pub fn volume_dir(work_dir: &Path, role: &str, persistence_id: &str) -> Option<PathBuf> {
    let role = safe_relative(role)?;
    if persistence_id.contains('/') {
        return None;
    }
    let id = safe_relative(persistence_id)?;
    Some(work_dir.join("volumes").join(role).join(id))
}

/// `(volume directory, link in the sandbox)` of every volume the task uses.
pub fn task_volumes(
    work_dir: &Path,
    task: &TaskInfo,
    sandbox: &Path,
) -> Result<Vec<(PathBuf, PathBuf)>, String> {
    let mut out = Vec::new();
    for r in &task.resources {
        let Some(v) = &r.volume else { continue };
        let dir =
            volume_dir(work_dir, &r.reservation_role, &v.persistence_id).ok_or_else(|| {
                format!(
                    "persistent volume `{}` of role `{}` has an unsafe id or role",
                    v.persistence_id, r.reservation_role
                )
            })?;
        let rel = safe_relative(&v.container_path).ok_or_else(|| {
            format!(
                "persistent volume `{}` has container_path `{}`: use a relative path without `..`",
                v.persistence_id, v.container_path
            )
        })?;
        out.push((dir, sandbox.join(rel)));
    }
    Ok(out)
}

/// Creates the task's volume directories (owned by `owner` when given, on creation) and
/// makes each available in the sandbox: with `bind`, an empty mount point is made and the
/// `(volume directory, mount point)` pairs returned for the supervisor to bind-mount;
/// otherwise a symlink is made and nothing returned.
pub fn attach(
    work_dir: &Path,
    task: &TaskInfo,
    sandbox: &Path,
    owner: Option<(u32, u32)>,
    bind: bool,
) -> Result<Vec<(PathBuf, PathBuf)>, (PathBuf, io::Error)> {
    let mut mounts = Vec::new();
    let volumes = task_volumes(work_dir, task, sandbox)
        .map_err(|why| (sandbox.to_path_buf(), io::Error::other(why)))?;
    for (dir, link) in volumes {
        let err = |p: &Path| {
            let p = p.to_path_buf();
            move |e: io::Error| (p, e)
        };
        if !dir.exists() {
            std::fs::create_dir_all(&dir).map_err(err(&dir))?;
            if let Some((uid, gid)) = owner {
                std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).map_err(err(&dir))?;
            }
        }
        if bind {
            let rel = link.strip_prefix(sandbox).unwrap_or(&link).to_path_buf();
            mkdir_in(sandbox, &rel).map_err(err(&link))?;
            mounts.push((dir, link));
        } else {
            if let Some(parent) = link.parent() {
                std::fs::create_dir_all(parent).map_err(err(parent))?;
            }
            std::os::unix::fs::symlink(&dir, &link).map_err(err(&link))?;
        }
    }
    Ok(mounts)
}

/// Removes a destroyed volume's directory (a missing one is fine).
pub fn destroy(work_dir: &Path, role: &str, persistence_id: &str) -> io::Result<()> {
    let dir = volume_dir(work_dir, role, persistence_id).ok_or_else(|| {
        io::Error::other(format!(
            "persistent volume `{persistence_id}` of role `{role}` has an unsafe id or role"
        ))
    })?;
    match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use brim_proto::v1;

    fn task_with(role: &str, id: &str, path: &str) -> TaskInfo {
        TaskInfo {
            task_id: "t".into(),
            resources: vec![v1::Resource {
                name: "disk".into(),
                value: Some(v1::resource::Value::Scalar(64.0)),
                reservation_role: role.into(),
                volume: Some(v1::Volume {
                    persistence_id: id.into(),
                    container_path: path.into(),
                }),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn paths_stay_inside_volumes_and_the_sandbox() {
        let w = Path::new("/w");
        assert_eq!(
            volume_dir(w, "db/eu", "v1"),
            Some(PathBuf::from("/w/volumes/db/eu/v1"))
        );
        for (role, id) in [
            ("..", "v"),
            ("db", ".."),
            ("db", "a/b"),
            ("/abs", "v"),
            ("", "v"),
        ] {
            assert_eq!(volume_dir(w, role, id), None, "{role} {id}");
        }
        let t = task_with("db", "v1", "data");
        assert_eq!(
            task_volumes(w, &t, Path::new("/s")),
            Ok(vec![(
                PathBuf::from("/w/volumes/db/v1"),
                PathBuf::from("/s/data")
            )])
        );
        assert!(task_volumes(w, &task_with("db", "v1", "../x"), Path::new("/s")).is_err());
        assert!(task_volumes(w, &task_with("db", "v1", "/etc"), Path::new("/s")).is_err());
    }

    #[test]
    fn a_volume_outlives_the_sandbox_until_destroyed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let work = dir.path().join("work");
        let t = task_with("db", "v1", "data/pg");
        let first = dir.path().join("sandbox1");
        std::fs::create_dir_all(&first).expect("sandbox");
        assert!(attach(&work, &t, &first, None, false)
            .expect("attach")
            .is_empty());
        std::fs::write(first.join("data/pg/file"), "kept").expect("write through the link");
        std::fs::remove_dir_all(&first).expect("sandbox gone");
        let second = dir.path().join("sandbox2");
        std::fs::create_dir_all(&second).expect("sandbox");
        attach(&work, &t, &second, None, false).expect("attach again");
        let third = dir.path().join("sandbox3");
        let mounts = attach(&work, &t, &third, None, true).expect("mount point");
        assert_eq!(
            mounts,
            vec![(work.join("volumes/db/v1"), third.join("data/pg"))]
        );
        assert!(third.join("data/pg").is_dir());
        assert_eq!(
            std::fs::read_to_string(second.join("data/pg/file")).expect("read"),
            "kept"
        );
        destroy(&work, "db", "v1").expect("destroy");
        assert!(!work.join("volumes/db/v1").exists());
        destroy(&work, "db", "v1").expect("destroying twice is fine");
    }

    fn vol(path: &str, mode: i32, source: Option<container_volume::Source>) -> ContainerVolume {
        ContainerVolume {
            container_path: path.into(),
            mode,
            source,
        }
    }

    fn host(p: &str) -> Option<container_volume::Source> {
        Some(container_volume::Source::HostPath(p.into()))
    }

    fn sandboxed(p: &str) -> Option<container_volume::Source> {
        Some(container_volume::Source::SandboxPath(p.into()))
    }

    /// A resolver where `/data/link` points at `/etc` and everything else is itself.
    fn fake_resolve(p: &Path) -> io::Result<PathBuf> {
        if p.starts_with("/missing") {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        }
        Ok(match p.strip_prefix("/data/link") {
            Ok(rest) => Path::new("/etc").join(rest),
            Err(_) => p.to_path_buf(),
        })
    }

    fn plan_one(v: ContainerVolume, oci: bool) -> Result<Vec<Bind>, String> {
        plan(
            &[v],
            oci,
            &[PathBuf::from("/data")],
            Path::new("/s"),
            "container.volumes",
            &fake_resolve,
        )
    }

    #[test]
    fn container_paths_are_checked() {
        let ro = container_volume::Mode::Ro as i32;
        assert_eq!(
            plan_one(vol("/opt/x/", ro, host("/data/a")), true),
            Ok(vec![Bind {
                source: "/data/a".into(),
                target: Target::Container("/opt/x".into()),
                readonly: true,
            }])
        );
        assert_eq!(
            plan_one(vol("shared", 0, sandboxed("in/out")), false),
            Ok(vec![Bind {
                source: "/s/in/out".into(),
                target: Target::Sandbox("shared".into()),
                readonly: false,
            }])
        );
        for (path, oci, want) in [
            ("/opt", false, "absolute"),
            ("", true, "empty"),
            ("/", true, "below the root"),
            ("/proc/x", true, "/proc"),
            ("/sys", true, "/sys"),
            ("/dev/sda", true, "/dev"),
            ("/opt/../proc", true, ".."),
            ("a/../../b", false, ".."),
            ("./a", false, "plain relative"),
            ("/mnt/mesos", true, "hide the sandbox"),
            ("/mnt", true, "hide the sandbox"),
        ] {
            let e = plan_one(vol(path, 0, host("/data/a")), oci).expect_err(path);
            assert!(e.contains(want), "{path}: {e}");
            assert!(e.contains("container.volumes[0].container_path"), "{e}");
        }
        // Inside the sandbox of an OCI container is fine.
        assert!(plan_one(vol("/mnt/mesos/sandbox/x", 0, host("/data/a")), true).is_ok());
    }

    #[test]
    fn host_paths_must_resolve_under_the_allow_list() {
        for (src, want) in [
            ("/etc", "--allowed-host-paths"),
            ("/data/link/shadow", "resolved: /etc/shadow"),
            ("/database", "--allowed-host-paths"),
            ("relative", "absolute"),
            ("/missing/x", "cannot be resolved"),
        ] {
            let e = plan_one(vol("/x", 0, host(src)), true).expect_err(src);
            assert!(e.contains(want), "{src}: {e}");
            assert!(e.contains("container.volumes[0].host_path"), "{e}");
        }
        // The default allow-list is empty: nothing is allowed.
        let none = plan(
            &[vol("/x", 0, host("/data"))],
            true,
            &[],
            Path::new("/s"),
            "executor.container.volumes",
            &fake_resolve,
        )
        .expect_err("empty allow-list");
        assert!(
            none.contains("executor.container.volumes[0].host_path"),
            "{none}"
        );
    }

    #[test]
    fn other_bad_volumes_name_their_field() {
        for (v, want) in [
            (vol("/x", 7, host("/data")), "[0].mode 7"),
            (vol("/x", 0, None), "no source"),
            (vol("/x", 0, sandboxed("../up")), "[0].sandbox_path"),
            (vol("/x", 0, sandboxed("/abs")), "[0].sandbox_path"),
        ] {
            let e = plan_one(v, true).expect_err(want);
            assert!(e.contains(want), "{want}: {e}");
        }
        let twice = plan(
            &[vol("a", 0, host("/data")), vol("a", 0, sandboxed("b"))],
            false,
            &[PathBuf::from("/data")],
            Path::new("/s"),
            "container.volumes",
            &fake_resolve,
        )
        .expect_err("twice");
        assert!(
            twice.contains("[1].container_path `a` is used twice"),
            "{twice}"
        );
    }

    #[test]
    fn mount_points_are_not_made_through_symlinks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sandbox = dir.path().join("s");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(&outside).expect("outside");
        std::fs::create_dir_all(&sandbox).expect("sandbox");
        std::os::unix::fs::symlink(&outside, sandbox.join("link")).expect("symlink");
        assert!(mkdir_in(&sandbox, Path::new("link/x")).is_err());
        assert!(!outside.join("x").exists(), "nothing made outside");
        let binds = [Bind {
            source: sandbox.join("link/y"),
            target: Target::Sandbox("m".into()),
            readonly: false,
        }];
        assert!(prepare_binds(&binds, &sandbox, None).is_err());
        assert!(!outside.join("y").exists());
        assert_eq!(
            mkdir_in(&sandbox, Path::new("a/b")).expect("mkdir"),
            sandbox.join("a/b")
        );
        assert!(sandbox.join("a/b").is_dir());
    }
}
