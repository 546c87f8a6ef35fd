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
//! Architecture Invariant: every path built here stays under `<work_dir>/volumes` (role
//! and id components are checked) or under the task's sandbox (container paths are
//! relative, without `..`).

use std::io;
use std::path::{Component, Path, PathBuf};

use brim_proto::v1::TaskInfo;

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
            std::fs::create_dir_all(&link).map_err(err(&link))?;
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
}
