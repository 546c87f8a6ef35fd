//! Per-task supervisors: the process that outlives the agent.
//!
//! Launch protocol (see [`sys::spawn_supervisor`] for the child side):
//! 1. the agent starts a supervisor: `brim-supervisor` (`agent/supervisor/main.rs`, a small
//!    program compiled by `agent/build.rs` and embedded in the agent, exec'd from a sealed
//!    memfd by a `CLONE_VM | CLONE_VFORK` child, so nothing of the agent's memory is copied),
//!    in its own session, created in the supervisors' cgroup (with isolation, PID 1 of new
//!    PID, mount, UTS and IPC namespaces). Its argv carries the launch
//!    (`supervisor/spec.rs`); it sets up its namespaces (mounts, a task group's network)
//!    and waits for a go byte;
//! 2. the agent checkpoints the supervisor's pid and start time, then sends the go byte —
//!    so a task never runs without a durable record of who supervises it (an agent killed
//!    before the go byte leaves a supervisor that exits without starting anything);
//! 3. the supervisor starts the task (joins its cgroups before exec, rlimits, user), then
//!    forwards signals to it, reaps it and writes its wait status to
//!    `meta/containers/<id>/exit` (write + rename, no fsync: the agent's checkpoint of the
//!    terminal status is the durable record, fsync'd before the status goes out);
//! 4. the agent waits on a pidfd of the supervisor. After an agent restart it re-opens the
//!    pidfd (checking the start time so a reused pid is never mistaken for it) or, when the
//!    supervisor is gone, reads the `exit` file.
//!
//! Architecture Invariant: the agent signals supervisors, never tasks: SIGTERM is
//! forwarded to the task's process group, [`sys::escalate_signal`] makes the supervisor
//! SIGKILL the task (and everything in its PID namespace).

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;

use crate::sys::{self, MountPlan, SpawnSpec, Stage};

/// Why a supervisor could not start a task.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("unknown user `{0}` on this agent: create it or set the task's/framework's user to an existing one")]
    UnknownUser(String),
    #[error("refusing to run the task as root: set a non-root user on the task or framework, or start the agent with --allow-root-tasks")]
    RootNotAllowed,
    #[error("cannot look up user `{user}`: {source}")]
    UserLookup {
        user: String,
        #[source]
        source: nix::Error,
    },
    #[error("command `{0}` not found on this agent's PATH: install it or use an absolute path")]
    NotFound(String),
    #[error("`{0}` contains a NUL byte: remove it")]
    Nul(String),
    #[error("cannot start the task's supervisor: {0}")]
    Spawn(io::Error),
    #[error("task setup failed while {stage}: {source}")]
    Setup {
        stage: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// A resolved Unix user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

/// Looks `name` up in the user database; root is refused unless `allow_root`.
pub fn resolve_user(name: &str, allow_root: bool) -> Result<TaskUser, SupervisorError> {
    let user = nix::unistd::User::from_name(name)
        .map_err(|source| SupervisorError::UserLookup {
            user: name.to_string(),
            source,
        })?
        .ok_or_else(|| SupervisorError::UnknownUser(name.to_string()))?;
    if user.uid.is_root() && !allow_root {
        return Err(SupervisorError::RootNotAllowed);
    }
    let cname = CString::new(name).map_err(|_| SupervisorError::Nul(name.to_string()))?;
    let groups = nix::unistd::getgrouplist(&cname, user.gid)
        .map(|g| g.into_iter().map(|g| g.as_raw()).collect())
        .unwrap_or_else(|_| vec![user.gid.as_raw()]);
    Ok(TaskUser {
        name: name.to_string(),
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
        groups,
    })
}

/// `program` as an absolute path: kept when it contains a `/`, else searched on `path`
/// (the task's PATH). A clear error when it does not exist.
pub fn resolve_program(program: &str, path: &str, cwd: &Path) -> Result<String, SupervisorError> {
    if program.contains('/') {
        let p = if Path::new(program).is_absolute() {
            PathBuf::from(program)
        } else {
            cwd.join(program)
        };
        return if p.exists() {
            Ok(p.display().to_string())
        } else {
            Err(SupervisorError::NotFound(program.to_string()))
        };
    }
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let p = Path::new(dir).join(program);
        if p.is_file() {
            return Ok(p.display().to_string());
        }
    }
    Err(SupervisorError::NotFound(program.to_string()))
}

/// What a task needs from its supervisor.
#[derive(Debug)]
pub struct TaskSpec {
    /// Absolute path (see [`resolve_program`]).
    pub program: String,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub sandbox: PathBuf,
    /// The agent's work dir (hidden from the task when `namespaces`).
    pub work_dir: PathBuf,
    pub stdout: File,
    pub stderr: File,
    pub task_procs: Vec<File>,
    pub supervisor_procs: Option<File>,
    /// `meta/containers/<id>`: where the supervisor writes `exit`.
    pub exit_dir: PathBuf,
    pub user: Option<TaskUser>,
    /// (resource, soft, hard), `libc::RLIMIT_*`.
    pub rlimits: Vec<(i32, u64, u64)>,
    pub namespaces: bool,
    /// A private network namespace (with `namespaces`; see `network`).
    pub network_namespace: bool,
    /// Volumes to bind-mount (with `namespaces`): (persistent volume or container volume
    /// source, mount point inside the sandbox, read-only). See `volumes`.
    pub volumes: Vec<(PathBuf, PathBuf, bool)>,
    /// Without `namespaces`: mounts detached in a private mount namespace of the supervisor
    /// before the task starts (`Prepared::private_unmounts`).
    pub private_unmounts: Vec<PathBuf>,
    /// A task group's network namespace (a file held by `pods`) to join instead of making
    /// one (with `namespaces`).
    pub join_netns: Option<PathBuf>,
    /// A sealed copy of `program` to exec the task from (`Prepared::program_fd`).
    pub program_fd: Option<std::sync::Arc<OwnedFd>>,
}

/// A supervisor that waits for [`Pending::go`].
#[derive(Debug)]
pub struct Pending {
    pub pid: i32,
    /// `/proc/<pid>/stat` start time, to tell it from a later process with the same pid.
    pub start_time: u64,
    go: File,
    errors: File,
}

fn cstr(s: &str) -> Result<CString, SupervisorError> {
    CString::new(s).map_err(|_| SupervisorError::Nul(s.to_string()))
}

fn io_err<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> SupervisorError + 'a {
    move |source| SupervisorError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Starts the supervisor of one task (it waits for [`Pending::go`]).
pub fn spawn(t: TaskSpec) -> Result<Pending, SupervisorError> {
    std::fs::create_dir_all(&t.exit_dir).map_err(io_err("create", &t.exit_dir))?;
    let _ = std::fs::remove_file(t.exit_dir.join("exit"));
    let exit_dir = File::open(&t.exit_dir).map_err(io_err("open", &t.exit_dir))?;
    let namespaces = if t.namespaces {
        let sandbox = t
            .sandbox
            .canonicalize()
            .map_err(io_err("resolve", &t.sandbox))?;
        let work_dir = t
            .work_dir
            .canonicalize()
            .map_err(io_err("resolve", &t.work_dir))?;
        let rel = sandbox
            .strip_prefix(&work_dir)
            .map_err(|_| SupervisorError::Io {
                action: "place",
                path: sandbox.clone(),
                source: io::Error::other("the sandbox is not inside the work dir"),
            })?;
        let mut mkdirs = Vec::new();
        let mut cur = work_dir.clone();
        for c in rel.components() {
            cur.push(c);
            mkdirs.push(cstr(&cur.display().to_string())?);
        }
        if t.volumes.len() > crate::sys::MAX_VOLUMES {
            return Err(SupervisorError::Io {
                action: "mount",
                path: t.sandbox.clone(),
                source: io::Error::other(format!(
                    "a task may use at most {} volumes",
                    crate::sys::MAX_VOLUMES
                )),
            });
        }
        let mut volumes = Vec::new();
        let mut readonly_targets = Vec::new();
        for (dir, target, readonly) in &t.volumes {
            let dir = dir.canonicalize().map_err(io_err("resolve", dir))?;
            let target = target.canonicalize().map_err(io_err("resolve", target))?;
            if !target.starts_with(&sandbox) {
                return Err(SupervisorError::Io {
                    action: "place",
                    path: target,
                    source: io::Error::other("a volume's mount point is not inside the sandbox"),
                });
            }
            let target = cstr(&target.display().to_string())?;
            if *readonly {
                readonly_targets.push(target.clone());
            }
            volumes.push((cstr(&dir.display().to_string())?, target));
        }
        Some(MountPlan {
            work_dir: cstr(&work_dir.display().to_string())?,
            mkdirs,
            sandbox: cstr(&sandbox.display().to_string())?,
            volumes,
            readonly: readonly_targets,
        })
    } else {
        None
    };
    let join_netns = match (&t.join_netns, &namespaces) {
        (Some(p), Some(_)) => Some(File::open(p).map_err(io_err("open", p))?),
        _ => None,
    };
    // Held until the spawn returned: the supervisor has its own copy of the fd by then.
    let program_fd = t.program_fd;
    let spec = SpawnSpec {
        join_netns,
        program: cstr(&t.program)?,
        program_fd: program_fd.as_ref().map(|f| f.as_raw_fd()),
        argv: t.argv.iter().map(|a| cstr(a)).collect::<Result<_, _>>()?,
        envp: t
            .env
            .iter()
            .map(|(k, v)| cstr(&format!("{k}={v}")))
            .collect::<Result<_, _>>()?,
        cwd: cstr(&t.sandbox.display().to_string())?,
        stdout: OwnedFd::from(t.stdout),
        stderr: OwnedFd::from(t.stderr),
        task_procs: t.task_procs,
        supervisor_procs: t.supervisor_procs,
        exit_dir,
        user: t.user.map(|u| (u.uid, u.gid, u.groups)),
        rlimits: t.rlimits,
        network_namespace: t.network_namespace && namespaces.is_some() && t.join_netns.is_none(),
        private_unmounts: if namespaces.is_none() {
            t.private_unmounts
                .iter()
                .map(|p| cstr(&p.display().to_string()))
                .collect::<Result<_, _>>()?
        } else {
            Vec::new()
        },
        namespaces,
    };
    let s = sys::spawn_supervisor(&spec).map_err(SupervisorError::Spawn)?;
    let start_time = start_time(s.pid).unwrap_or(0);
    Ok(Pending {
        pid: s.pid,
        start_time,
        go: s.go,
        errors: s.errors,
    })
}

impl Pending {
    /// Lets the supervisor start the task and waits until the task exec'd (`Ok`) or its
    /// setup failed. Awaited on the event loop, not on a blocking thread: a burst of
    /// launches would park one thread each, and every thread's stack makes the next
    /// supervisor clone (a copy of the agent's memory map) slower.
    pub async fn go(mut self) -> Result<(), SupervisorError> {
        let gone = |e: io::Error| {
            SupervisorError::Spawn(io::Error::other(format!("supervisor gone: {e}")))
        };
        // One byte into an empty pipe: never blocks.
        self.go.write_all(b"g").map_err(gone)?;
        drop(self.go);
        // EOF once the task exec'd (or the supervisor died); a setup error otherwise.
        let buf = sys::read_pipe_to_end(self.errors).await.unwrap_or_default();
        setup_result(&buf)
    }
}

/// What the supervisor reported on its error pipe: nothing (the task exec'd) or the stage
/// and errno of the failed setup step.
fn setup_result(buf: &[u8]) -> Result<(), SupervisorError> {
    if buf.len() < 8 {
        return Ok(());
    }
    let stage = i32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let errno = i32::from_ne_bytes([buf[4], buf[5], buf[6], buf[7]]);
    let stage = match Stage::from_i32(stage) {
        Some(Stage::Session) => "starting a session",
        Some(Stage::Cgroup) => "joining its cgroups",
        Some(Stage::Mounts) => "setting up its mount namespace",
        Some(Stage::Rlimit) => "setting rlimits",
        Some(Stage::User) => "switching to its user",
        Some(Stage::Chdir) => "entering its sandbox",
        Some(Stage::Exec) => "executing the command",
        Some(Stage::Fork) => "forking",
        Some(Stage::Stdio) => "redirecting stdio",
        Some(Stage::Supervisor) => "starting its supervisor",
        Some(Stage::Network) => "joining its task group's network namespace",
        None => "starting",
    };
    Err(SupervisorError::Setup {
        stage,
        source: io::Error::from_raw_os_error(errno),
    })
}

/// What a supervisor wrote before exiting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitRecord {
    /// The task ran and ended with this wait status.
    Exited(ExitStatus),
    /// The task never started (no go byte, or its setup failed).
    Aborted,
}

/// Reads `exit` in a container's meta dir; `Ok(None)` when there is none (yet).
pub fn read_exit(dir: &Path) -> Result<Option<ExitRecord>, SupervisorError> {
    let path = dir.join("exit");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("read", &path)(e)),
    };
    parse_exit(&text)
        .map(Some)
        .ok_or_else(|| SupervisorError::Io {
            action: "parse",
            path,
            source: io::Error::other(format!("unexpected content {text:?}")),
        })
}

fn parse_exit(text: &str) -> Option<ExitRecord> {
    let t = text.trim();
    if t == "aborted" {
        return Some(ExitRecord::Aborted);
    }
    let raw = t.strip_prefix("exit ")?.parse::<i32>().ok()?;
    Some(ExitRecord::Exited(ExitStatus::from_raw(raw)))
}

/// Start time (clock ticks since boot, field 22 of `/proc/<pid>/stat`).
pub fn start_time(pid: i32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = text.rsplit_once(')')?.1;
    after.split_whitespace().nth(19)?.parse().ok()
}

/// A pidfd of the supervisor `pid` if it still runs and is the one that started at
/// `start_time`.
pub fn attach(pid: i32, start_time: u64) -> Option<OwnedFd> {
    let fd = sys::pidfd_open(pid).ok()?;
    // Checked after opening: the pidfd now pins this very process.
    (self::start_time(pid) == Some(start_time)).then_some(fd)
}

/// True when `pid` has child processes (a supervisor that started its task).
pub fn has_children(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .is_ok_and(|c| !c.trim().is_empty())
}

/// Waits until the supervisor behind `pidfd` exits and reaps it if it is our child.
pub async fn wait(pidfd: OwnedFd) -> io::Result<()> {
    sys::wait_pidfd(pidfd).await
}

/// Kills a supervisor (and with it its task and PID namespace) that no task owns.
pub fn kill_orphan(pid: i32) {
    let _ = sys::signal_raw(pid, sys::escalate_signal());
    let _ = sys::signal_raw(pid, libc::SIGKILL);
}

/// Asks a supervisor to forward `sig` to its task, or with [`sys::escalate_signal`] to
/// SIGKILL it.
pub fn signal(pid: i32, sig: i32) -> io::Result<()> {
    sys::signal_raw(pid, sig)
}

pub fn escalate_signal() -> i32 {
    sys::escalate_signal()
}

/// Default rlimits of tasks: no core dumps, 64 Ki open files — never above the agent's own
/// hard limits (raising those needs privileges the agent may not have).
pub fn default_rlimits() -> Vec<(i32, u64, u64)> {
    let clamp = |raw: i32, want: u64| {
        let v = want.min(sys::hard_rlimit(raw).unwrap_or(want));
        (raw, v, v)
    };
    vec![
        clamp(libc::RLIMIT_CORE as i32, 0),
        clamp(libc::RLIMIT_NOFILE as i32, 65536),
    ]
}

/// Changes the owner of a path (sandbox dir and stdio files before a user switch).
pub fn chown(path: &Path, user: &TaskUser) -> Result<(), SupervisorError> {
    sys::chown(path, user.uid, user.gid).map_err(io_err("chown", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exit_files() {
        assert_eq!(parse_exit("aborted\n"), Some(ExitRecord::Aborted));
        assert_eq!(
            parse_exit("exit 768\n"),
            Some(ExitRecord::Exited(ExitStatus::from_raw(3 << 8)))
        );
        assert_eq!(parse_exit("exit x"), None);
        assert_eq!(parse_exit(""), None);
    }

    #[test]
    fn resolves_programs() {
        let cwd = Path::new("/");
        assert_eq!(
            resolve_program("sh", "/nonexistent:/bin", cwd).expect("sh"),
            "/bin/sh"
        );
        assert!(matches!(
            resolve_program("brim-no-such-cmd", "/bin:/usr/bin", cwd),
            Err(SupervisorError::NotFound(_))
        ));
        assert!(resolve_program("/bin/sh", "", cwd).is_ok());
    }

    #[test]
    fn users() {
        assert!(matches!(
            resolve_user("brim-no-such-user-x", false),
            Err(SupervisorError::UnknownUser(_))
        ));
        assert!(matches!(
            resolve_user("root", false),
            Err(SupervisorError::RootNotAllowed)
        ));
        assert_eq!(resolve_user("root", true).expect("root").uid, 0);
    }

    #[test]
    fn own_start_time() {
        let pid = std::process::id() as i32;
        let t = start_time(pid).expect("start time of self");
        assert_eq!(start_time(pid), Some(t));
        assert!(attach(pid, t + 1).is_none());
    }
}
