//! What the agent tells an exec'd supervisor (`brim-supervisor`, `agent/supervisor/main.rs`):
//! the supervisor's argv, encoded by the agent and decoded by the supervisor. Shared by both
//! (std only): the agent includes this file as `sys::spec`, the supervisor as `spec`.
//!
//! Layout: `brim-supervisor`, then `key=value` fields (fds are the numbers the supervisor
//! inherits), then the task's argv and environment, their lengths given by `argc=` and
//! `envc=`. The supervisor's own environment stays empty: the task's variables (an
//! `LD_PRELOAD`, say) never reach the supervisor, which runs as the agent's user.
//! Unknown keys are an error, so an agent and supervisor that disagree fail loudly; the two
//! come from the same build (the supervisor is embedded in the agent).

use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStringExt;

/// Where in the supervisor/task setup a launch failed (reported through the error pipe as
/// `(stage, errno)`, two native-endian i32).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum Stage {
    Session = 1,
    Cgroup = 2,
    Mounts = 3,
    Rlimit = 4,
    User = 5,
    Chdir = 6,
    Exec = 7,
    Fork = 8,
    Stdio = 9,
    /// The supervisor could not start (exec or argument decoding).
    Supervisor = 10,
    /// Joining the task group's network namespace.
    Network = 11,
}

impl Stage {
    pub fn from_i32(v: i32) -> Option<Stage> {
        use Stage::*;
        [
            Session, Cgroup, Mounts, Rlimit, User, Chdir, Exec, Fork, Stdio, Supervisor, Network,
        ]
        .into_iter()
        .find(|s| *s as i32 == v)
    }
}

/// Private mount namespace setup: hide the agent's work dir behind a tmpfs, bind the task's
/// own sandbox back at the same path, mount a fresh `/proc` for the new PID namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MountPlan {
    /// The agent's work dir (covered by a tmpfs).
    pub work_dir: CString,
    /// Directories to create in that tmpfs, parents first, ending with the sandbox path.
    pub mkdirs: Vec<CString>,
    pub sandbox: CString,
    /// Persistent volumes: (directory under the work dir, mount point in the sandbox),
    /// bind-mounted after the sandbox.
    pub volumes: Vec<(CString, CString)>,
    /// Mount points of `volumes` remounted read-only after their bind.
    pub readonly: Vec<CString>,
}

/// Everything an exec'd supervisor needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SupervisorArgs {
    /// Read end of the go pipe.
    pub go: i32,
    /// Write end of the error pipe.
    pub err: i32,
    /// `/dev/null`, read-write.
    pub null: i32,
    pub stdout: i32,
    pub stderr: i32,
    /// Directory `exit` is written into.
    pub exit_dir: i32,
    /// The supervisors' cgroup v1 `tasks` file (the supervisor writes `0` into it).
    pub supervisor_tasks: Option<i32>,
    /// The supervisors' cgroup2 directory, and whether the clone created the supervisor in
    /// it already (`CLONE_INTO_CGROUP`).
    pub supervisor_dir: Option<i32>,
    pub born_in_cgroup: bool,
    /// The task's cgroup2 directories (created in the first) and v1 `tasks` files.
    pub task_dirs: Vec<i32>,
    pub task_files: Vec<i32>,
    /// (uid, gid, supplementary groups).
    pub user: Option<(u32, u32, Vec<u32>)>,
    /// (resource, soft, hard).
    pub rlimits: Vec<(i32, u64, u64)>,
    /// Signal that makes the supervisor SIGKILL the task.
    pub escalate: i32,
    pub program: CString,
    /// Exec the task from this fd (`execveat(AT_EMPTY_PATH)`, a sealed copy of `program`)
    /// instead of by path.
    pub program_fd: Option<i32>,
    pub cwd: CString,
    /// Set up this mount namespace (the supervisor is PID 1 of new namespaces).
    pub mounts: Option<MountPlan>,
    /// Without `mounts`: mounts to detach (`umount -l`) in the supervisor's own private
    /// mount namespace before the task starts.
    pub unmounts: Vec<CString>,
    /// A task group's network namespace to join (`setns`) after the go byte.
    pub netns: Option<i32>,
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
}

/// The supervisor's `argv[0]`.
pub const ARGV0: &str = "brim-supervisor";

fn kv(key: &str, value: impl std::fmt::Display) -> CString {
    // Keys and numbers never contain NUL.
    CString::new(format!("{key}={value}")).unwrap_or_default()
}

fn kv_bytes(key: &str, value: &CString) -> CString {
    let mut b = format!("{key}=").into_bytes();
    b.extend_from_slice(value.as_bytes());
    // `value` is a CString: no interior NUL.
    CString::new(b).unwrap_or_default()
}

impl SupervisorArgs {
    /// The supervisor's argv, `argv[0]` included.
    pub fn encode(&self) -> Vec<CString> {
        let mut a = vec![CString::new(ARGV0).unwrap_or_default()];
        a.push(kv("err", self.err));
        a.push(kv("go", self.go));
        a.push(kv("null", self.null));
        a.push(kv("stdout", self.stdout));
        a.push(kv("stderr", self.stderr));
        a.push(kv("exit_dir", self.exit_dir));
        if let Some(fd) = self.supervisor_tasks {
            a.push(kv("supervisor_tasks", fd));
        }
        if let Some(fd) = self.supervisor_dir {
            a.push(kv("supervisor_dir", fd));
        }
        a.push(kv("born_in_cgroup", u8::from(self.born_in_cgroup)));
        if let Some(fd) = self.netns {
            a.push(kv("netns", fd));
        }
        for fd in &self.task_dirs {
            a.push(kv("task_dir", fd));
        }
        for fd in &self.task_files {
            a.push(kv("task_file", fd));
        }
        if let Some((uid, gid, groups)) = &self.user {
            a.push(kv("uid", uid));
            a.push(kv("gid", gid));
            for g in groups {
                a.push(kv("group", g));
            }
        }
        for (res, soft, hard) in &self.rlimits {
            a.push(kv("rlimit", format!("{res}:{soft}:{hard}")));
        }
        a.push(kv("escalate", self.escalate));
        a.push(kv_bytes("program", &self.program));
        if let Some(fd) = self.program_fd {
            a.push(kv("program_fd", fd));
        }
        a.push(kv_bytes("cwd", &self.cwd));
        if let Some(m) = &self.mounts {
            a.push(kv_bytes("work_dir", &m.work_dir));
            for d in &m.mkdirs {
                a.push(kv_bytes("mkdir", d));
            }
            a.push(kv_bytes("sandbox", &m.sandbox));
            for (dir, target) in &m.volumes {
                a.push(kv_bytes("volume_dir", dir));
                a.push(kv_bytes("volume_target", target));
            }
            for target in &m.readonly {
                a.push(kv_bytes("volume_ro", target));
            }
        }
        for u in &self.unmounts {
            a.push(kv_bytes("unmount", u));
        }
        a.push(kv("argc", self.argv.len()));
        a.push(kv("envc", self.envp.len()));
        a.extend(self.argv.iter().cloned());
        a.extend(self.envp.iter().cloned());
        a
    }

    /// The error pipe from an argv, before (and whether or not) the rest decodes: where a
    /// supervisor reports that it could not decode the rest.
    pub fn error_fd(args: &[OsString]) -> Option<i32> {
        let first = args.get(1)?.to_str()?;
        first.strip_prefix("err=")?.parse().ok()
    }

    /// Decodes an argv made by [`SupervisorArgs::encode`] (`argv[0]` included).
    pub fn decode(args: Vec<OsString>) -> Result<SupervisorArgs, String> {
        let mut it = args.into_iter().map(OsString::into_vec);
        match it.next() {
            Some(a0) if a0 == ARGV0.as_bytes() => {}
            _ => return Err(format!("argv[0] is not {ARGV0}")),
        }
        let mut s = SupervisorArgs::default();
        let mut mounts: Option<MountPlan> = None;
        let (mut uid, mut gid, mut groups) = (None, None, Vec::new());
        let mut volume_dir: Option<CString> = None;
        let (mut argc, mut envc) = (None, None);
        let mut have = (false, false, false, false, false, false, false);
        for field in it.by_ref() {
            let eq = field
                .iter()
                .position(|&b| b == b'=')
                .ok_or_else(|| format!("field without `=`: {}", String::from_utf8_lossy(&field)))?;
            let key = std::str::from_utf8(&field[..eq]).map_err(|_| "non-UTF-8 key".to_string())?;
            let raw = &field[eq + 1..];
            let text = || std::str::from_utf8(raw).map_err(|_| format!("`{key}` is not UTF-8"));
            let fd = || -> Result<i32, String> {
                text()?
                    .parse::<i32>()
                    .ok()
                    .filter(|&fd| fd >= 0)
                    .ok_or_else(|| format!("`{key}` is not a file descriptor"))
            };
            let num = || -> Result<u64, String> {
                text()?
                    .parse::<u64>()
                    .map_err(|_| format!("`{key}` is not a number"))
            };
            let cstr = || CString::new(raw).map_err(|_| format!("`{key}` contains NUL"));
            let plan = |m: &mut Option<MountPlan>| -> MountPlan { m.take().unwrap_or_default() };
            match key {
                "err" => s.err = fd()?,
                "go" => (s.go, have.0) = (fd()?, true),
                "null" => (s.null, have.1) = (fd()?, true),
                "stdout" => (s.stdout, have.2) = (fd()?, true),
                "stderr" => (s.stderr, have.3) = (fd()?, true),
                "exit_dir" => (s.exit_dir, have.4) = (fd()?, true),
                "supervisor_tasks" => s.supervisor_tasks = Some(fd()?),
                "supervisor_dir" => s.supervisor_dir = Some(fd()?),
                "born_in_cgroup" => s.born_in_cgroup = num()? != 0,
                "netns" => s.netns = Some(fd()?),
                "program_fd" => s.program_fd = Some(fd()?),
                "task_dir" => s.task_dirs.push(fd()?),
                "task_file" => s.task_files.push(fd()?),
                "uid" => uid = Some(u32::try_from(num()?).map_err(|_| "uid out of range")?),
                "gid" => gid = Some(u32::try_from(num()?).map_err(|_| "gid out of range")?),
                "group" => groups.push(u32::try_from(num()?).map_err(|_| "group out of range")?),
                "rlimit" => {
                    let t = text()?;
                    let mut p = t.split(':');
                    let mut next = || p.next().ok_or_else(|| format!("bad rlimit `{t}`"));
                    let res = next()?
                        .parse::<i32>()
                        .map_err(|_| format!("bad rlimit `{t}`"))?;
                    let soft = next()?
                        .parse::<u64>()
                        .map_err(|_| format!("bad rlimit `{t}`"))?;
                    let hard = next()?
                        .parse::<u64>()
                        .map_err(|_| format!("bad rlimit `{t}`"))?;
                    s.rlimits.push((res, soft, hard));
                }
                "escalate" => {
                    s.escalate = i32::try_from(num()?).map_err(|_| "escalate out of range")?;
                    have.5 = true;
                }
                "program" => (s.program, have.6) = (cstr()?, true),
                "cwd" => s.cwd = cstr()?,
                "work_dir" => {
                    let mut m = plan(&mut mounts);
                    m.work_dir = cstr()?;
                    mounts = Some(m);
                }
                "mkdir" => {
                    let mut m = plan(&mut mounts);
                    m.mkdirs.push(cstr()?);
                    mounts = Some(m);
                }
                "sandbox" => {
                    let mut m = plan(&mut mounts);
                    m.sandbox = cstr()?;
                    mounts = Some(m);
                }
                "volume_dir" => volume_dir = Some(cstr()?),
                "volume_target" => {
                    let dir = volume_dir
                        .take()
                        .ok_or("volume_target without volume_dir")?;
                    let mut m = plan(&mut mounts);
                    m.volumes.push((dir, cstr()?));
                    mounts = Some(m);
                }
                "volume_ro" => {
                    let mut m = plan(&mut mounts);
                    m.readonly.push(cstr()?);
                    mounts = Some(m);
                }
                "unmount" => s.unmounts.push(cstr()?),
                "argc" => argc = Some(num()? as usize),
                "envc" => {
                    envc = Some(num()? as usize);
                    break;
                }
                other => return Err(format!("unknown field `{other}`")),
            }
        }
        let (Some(argc), Some(envc)) = (argc, envc) else {
            return Err("argc/envc missing".into());
        };
        if !(have.0 && have.1 && have.2 && have.3 && have.4 && have.5 && have.6) {
            return Err("a required field is missing".into());
        }
        if volume_dir.is_some() {
            return Err("volume_dir without volume_target".into());
        }
        if let Some(m) = &mounts {
            if m.work_dir.is_empty() || m.sandbox.is_empty() {
                return Err("mount plan without work_dir or sandbox".into());
            }
            if !s.unmounts.is_empty() {
                return Err("unmount comes without a mount plan".into());
            }
        }
        s.user = match (uid, gid) {
            (Some(u), Some(g)) => Some((u, g, groups)),
            (None, None) if groups.is_empty() => None,
            _ => return Err("uid, gid and groups come together".into()),
        };
        s.mounts = mounts;
        let rest: Vec<Vec<u8>> = it.collect();
        if rest.len() != argc + envc {
            return Err(format!(
                "expected {argc} arguments and {envc} variables, got {} strings",
                rest.len()
            ));
        }
        let mut rest = rest
            .into_iter()
            .map(|b| CString::new(b).map_err(|_| "NUL in argv"));
        s.argv = rest.by_ref().take(argc).collect::<Result<_, _>>()?;
        s.envp = rest.collect::<Result<_, _>>()?;
        Ok(s)
    }
}
