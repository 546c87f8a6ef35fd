//! Every raw libc / nix call the agent makes lives here, so the rest of the crate is plain
//! Rust that can be tested without root.
//!
//! Architecture Invariant: no other module of `brim-agent` contains `unsafe` or calls libc.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;

use nix::errno::Errno;
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

/// Sends `sig` to the process group `pgid`. A group that no longer exists is not an error.
#[allow(dead_code)] // tasks are signalled through their supervisors now
pub(crate) fn signal_group(pgid: i32, sig: Signal) -> io::Result<()> {
    if pgid <= 1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refusing to signal process group {pgid}"),
        ));
    }
    match signal::killpg(Pid::from_raw(pgid), sig) {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(e) => Err(io::Error::from(e)),
    }
}

/// Sends `sig` to one process. A process that no longer exists is not an error.
pub(crate) fn signal_pid(pid: i32, sig: Signal) -> io::Result<()> {
    if pid <= 1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refusing to signal pid {pid}"),
        ));
    }
    match signal::kill(Pid::from_raw(pid), sig) {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(e) => Err(io::Error::from(e)),
    }
}

/// True when the effective user is root (needed to manage cgroups).
pub(crate) fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The machine's hostname, or `None` when it cannot be read.
pub(crate) fn hostname() -> Option<String> {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
}

/// Free bytes available to unprivileged users on the filesystem holding `path`.
pub(crate) fn free_disk_bytes(path: &Path) -> io::Result<u64> {
    let st = nix::sys::statvfs::statvfs(path).map_err(io::Error::from)?;
    #[allow(clippy::unnecessary_cast)] // the field types differ between libcs
    Ok((st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64))
}

/// True when `path` is on a cgroup (v1) or cgroup2 filesystem.
pub(crate) fn is_cgroup_fs(path: &Path) -> bool {
    use nix::sys::statfs::{statfs, CGROUP2_SUPER_MAGIC, CGROUP_SUPER_MAGIC};
    match statfs(path) {
        Ok(st) => {
            let t = st.filesystem_type();
            t == CGROUP_SUPER_MAGIC || t == CGROUP2_SUPER_MAGIC
        }
        Err(_) => false,
    }
}

/// Prepares `cmd` so that the child, between fork and exec:
/// 1. starts a new session (so it leads its own process group, pgid = pid, and has no
///    controlling terminal: a Ctrl-C aimed at the agent does not reach it directly), then
/// 2. writes its own pid into every `cgroup.procs` file in `procs` (opened by the caller,
///    who must keep them open until `spawn` returns), so it never runs its command outside
///    its cgroups' limits.
///
/// If any step fails the child exits before exec and `spawn` returns that error.
pub(crate) fn prepare_child(cmd: &mut std::process::Command, procs: &[File]) {
    let fds: Vec<i32> = procs.iter().map(AsRawFd::as_raw_fd).collect();
    let hook = move || -> io::Result<()> {
        // Only async-signal-safe operations below: we are in the forked child of a
        // multi-threaded process. No allocation (the fd list was built before fork).
        // SAFETY: setsid has no memory-safety preconditions.
        if unsafe { libc::setsid() } == -1 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: getpid has no preconditions.
        let pid = unsafe { libc::getpid() };
        let mut buf = [0u8; 24];
        let len = format_pid(pid, &mut buf);
        for &fd in &fds {
            // SAFETY: `fd` is an open file descriptor inherited from the parent (the
            // caller keeps the `File`s alive until spawn returns); `buf[..len]` is
            // initialized memory of length `len`.
            let n = unsafe { libc::write(fd, buf.as_ptr().cast(), len) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    };
    // SAFETY: the hook only calls async-signal-safe functions (setsid, getpid, write) and
    // does not allocate or take locks, as required between fork and exec.
    unsafe {
        cmd.pre_exec(hook);
    }
}

/// Writes the decimal form of `pid` into `buf`, returns its length. Allocation-free.
fn format_pid(pid: i32, buf: &mut [u8; 24]) -> usize {
    let mut v = i64::from(pid).unsigned_abs();
    let mut tmp = [0u8; 24];
    let mut n = 0;
    loop {
        tmp[n] = b'0' + (v % 10) as u8;
        n += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    for i in 0..n {
        buf[i] = tmp[n - 1 - i];
    }
    n
}

// ------------------------------------------------------------------ task supervisors

/// Where in the supervisor/task setup a launch failed (reported through the error pipe).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub(crate) enum Stage {
    Session = 1,
    Cgroup = 2,
    Mounts = 3,
    Rlimit = 4,
    User = 5,
    Chdir = 6,
    Exec = 7,
    Fork = 8,
    Stdio = 9,
}

impl Stage {
    pub(crate) fn from_i32(v: i32) -> Option<Stage> {
        use Stage::*;
        [
            Session, Cgroup, Mounts, Rlimit, User, Chdir, Exec, Fork, Stdio,
        ]
        .into_iter()
        .find(|s| *s as i32 == v)
    }
}

/// Most persistent volumes one task can mount (the master refuses none: a task with more
/// fails to start with a clear error from `supervisor::spawn`).
pub(crate) const MAX_VOLUMES: usize = 16;

/// Private mount namespace setup: hide the agent's work dir behind a tmpfs, bind the task's
/// own sandbox back at the same path, mount a fresh `/proc` for the new PID namespace.
#[derive(Debug)]
pub(crate) struct MountPlan {
    /// The agent's work dir (covered by a tmpfs).
    pub work_dir: CString,
    /// Directories to create in that tmpfs, parents first, ending with the sandbox path.
    pub mkdirs: Vec<CString>,
    pub sandbox: CString,
    /// Persistent volumes: (directory under the work dir, mount point in the sandbox),
    /// bind-mounted after the sandbox.
    pub volumes: Vec<(CString, CString)>,
}

/// Everything a supervisor and its task need, allocated before the fork: the children only
/// make raw syscalls on this data.
#[derive(Debug)]
pub(crate) struct SpawnSpec {
    pub program: CString,
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
    pub cwd: CString,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    /// Join handles of the task's cgroups (`cgroups::open_procs`): cgroup v1 `tasks` files
    /// the task writes `0` (itself) into, and cgroup2 directories: the task is created in
    /// the first (`CLONE_INTO_CGROUP`) and writes `0` into the `cgroup.procs` of any other.
    pub task_procs: Vec<File>,
    /// Join handle of the supervisors' cgroup (a `tasks` file or a cgroup2 directory, as
    /// above), joined by the supervisor.
    pub supervisor_procs: Option<File>,
    /// Directory the supervisor writes `exit` into (through this fd, so hiding the work dir
    /// in the task's mount namespace does not matter).
    pub exit_dir: File,
    /// (uid, gid, supplementary groups) to switch to; `None` keeps the agent's user.
    pub user: Option<(u32, u32, Vec<u32>)>,
    /// (resource, soft, hard).
    pub rlimits: Vec<(i32, u64, u64)>,
    /// New PID, mount, UTS and IPC namespaces with this mount plan.
    pub namespaces: Option<MountPlan>,
    /// A new network namespace too (with `namespaces`).
    pub network_namespace: bool,
}

/// A supervisor waiting for the go byte.
#[derive(Debug)]
pub(crate) struct Spawned {
    pub pid: i32,
    /// Write one byte to let the supervisor start the task; dropping it unwritten makes the
    /// supervisor exit without starting anything.
    pub go: File,
    /// EOF once the task exec'd; 8 bytes (stage, errno) when its setup failed.
    pub errors: File,
}

/// Signal the agent sends a supervisor to SIGKILL its task (and, with a PID namespace,
/// everything in it): a real-time signal no task is told about.
pub(crate) fn escalate_signal() -> i32 {
    libc::SIGRTMAX() - 1
}

/// Signals a supervisor forwards to its task's process group.
const FORWARDED: [i32; 6] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

fn pipe_cloexec() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0i32; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Opens `/dev/null` read-write.
fn dev_null() -> io::Result<OwnedFd> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    Ok(OwnedFd::from(f))
}

/// Starts a supervisor: a child of the agent in its own session (and, with
/// `spec.namespaces`, PID 1 of new PID/mount/UTS/IPC namespaces) that outlives the agent,
/// waits for the go byte, starts the task, forwards signals to it, reaps it and writes its
/// wait status to `exit` in `spec.exit_dir` (write + fsync + rename).
pub(crate) fn spawn_supervisor(spec: &SpawnSpec) -> io::Result<Spawned> {
    let (go_r, go_w) = pipe_cloexec()?;
    let (err_r, err_w) = pipe_cloexec()?;
    let null = dev_null()?;
    let argv_ptrs: Vec<*const libc::c_char> = spec
        .argv
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let envp_ptrs: Vec<*const libc::c_char> = spec
        .envp
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let task_procs: Vec<i32> = spec.task_procs.iter().map(AsRawFd::as_raw_fd).collect();
    let (task_dirs, task_files): (Vec<i32>, Vec<i32>) =
        task_procs.iter().partition(|&&fd| is_dir(fd));
    let supervisor_dir = spec
        .supervisor_procs
        .as_ref()
        .map(AsRawFd::as_raw_fd)
        .filter(|&fd| is_dir(fd));
    let groups: Vec<libc::gid_t> = spec.user.as_ref().map(|u| u.2.clone()).unwrap_or_default();
    // The fds the supervisor keeps; everything else it inherited is closed at once.
    let mut keep: Vec<i32> = vec![
        go_r.as_raw_fd(),
        err_w.as_raw_fd(),
        null.as_raw_fd(),
        spec.stdout.as_raw_fd(),
        spec.stderr.as_raw_fd(),
        spec.exit_dir.as_raw_fd(),
    ];
    keep.extend(&task_procs);
    if let Some(p) = &spec.supervisor_procs {
        keep.push(p.as_raw_fd());
    }
    keep.sort_unstable();
    keep.dedup();
    let child = Child {
        spec,
        go_r: go_r.as_raw_fd(),
        err_w: err_w.as_raw_fd(),
        null: null.as_raw_fd(),
        argv: &argv_ptrs,
        envp: &envp_ptrs,
        task_files: &task_files,
        task_dirs: &task_dirs,
        supervisor_dir,
        groups: &groups,
        keep: &keep,
        escalate: escalate_signal(),
    };
    let mut flags: u64 = 0;
    if spec.namespaces.is_some() {
        flags |= (libc::CLONE_NEWPID | libc::CLONE_NEWNS | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC)
            as u64;
        if spec.network_namespace {
            flags |= libc::CLONE_NEWNET as u64;
        }
    }
    // Block every signal around the clone so the supervisor starts with them blocked (it
    // takes them with sigwaitinfo) and no agent handler ever runs in it.
    // SAFETY: sigset_t is plain data; sigfillset/pthread_sigmask get valid pointers.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers to initialized sigsets.
    unsafe {
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
    }
    // SAFETY: a clone without CLONE_VM behaves like fork: the child gets a copy of this
    // address space and runs on a copy of this stack. The child only makes raw syscalls on
    // data allocated above (no allocation, no locks, no glibc fork handlers) and never
    // returns: `supervisor_main` ends in `_exit`.
    let (pid, born_in_cgroup) = unsafe { clone_fork(flags, supervisor_dir) };
    if pid == 0 {
        child.supervisor_main(born_in_cgroup);
    }
    let clone_err = io::Error::last_os_error();
    // SAFETY: restores the mask saved above.
    unsafe {
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
    }
    if pid < 0 {
        return Err(clone_err);
    }
    drop(go_r);
    drop(err_w);
    Ok(Spawned {
        pid: pid as i32,
        go: File::from(go_w),
        errors: File::from(err_r),
    })
}

/// The data the forked supervisor and task use, all allocated before the clone.
struct Child<'a> {
    spec: &'a SpawnSpec,
    go_r: i32,
    err_w: i32,
    null: i32,
    argv: &'a [*const libc::c_char],
    envp: &'a [*const libc::c_char],
    /// cgroup v1 `tasks` files the task writes `0` into.
    task_files: &'a [i32],
    /// cgroup2 directories: the task is created in the first.
    task_dirs: &'a [i32],
    /// The supervisors' cgroup2 directory (else `spec.supervisor_procs` is a `tasks` file).
    supervisor_dir: Option<i32>,
    groups: &'a [libc::gid_t],
    keep: &'a [i32],
    escalate: i32,
}

// Everything below runs in forked children: raw syscalls only, no allocation, no locks.
impl Child<'_> {
    fn report(&self, stage: Stage, errno: i32) {
        let mut buf = [0u8; 8];
        buf[..4].copy_from_slice(&(stage as i32).to_ne_bytes());
        buf[4..].copy_from_slice(&errno.to_ne_bytes());
        // SAFETY: writes 8 initialized bytes to a pipe fd we own.
        unsafe {
            libc::write(self.err_w, buf.as_ptr().cast(), buf.len());
        }
    }

    fn errno() -> i32 {
        // SAFETY: __errno_location returns this thread's errno slot.
        unsafe { *libc::__errno_location() }
    }

    /// Writes `text` to `exit` in the exit dir: write to a temp file, fsync, rename, fsync
    /// the directory.
    fn write_exit(&self, text: &[u8]) {
        let dir = self.spec.exit_dir.as_raw_fd();
        // SAFETY: NUL-terminated literals, a valid dir fd, a buffer of `text.len()` bytes.
        unsafe {
            let fd = libc::openat(
                dir,
                c"exit.tmp".as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC,
                0o644,
            );
            if fd < 0 {
                return;
            }
            libc::write(fd, text.as_ptr().cast(), text.len());
            libc::fsync(fd);
            libc::close(fd);
            libc::renameat(dir, c"exit.tmp".as_ptr(), dir, c"exit".as_ptr());
            libc::fsync(dir);
        }
    }

    fn close_others(&self) {
        let mut lo: u32 = 3;
        for &fd in self.keep {
            let fd = fd as u32;
            if fd > lo {
                // SAFETY: closes fds this process does not use.
                unsafe { libc::syscall(libc::SYS_close_range, lo, fd - 1, 0u32) };
            }
            lo = lo.max(fd + 1);
        }
        // SAFETY: as above.
        unsafe { libc::syscall(libc::SYS_close_range, lo, u32::MAX, 0u32) };
    }

    /// `born_in_cgroup`: the clone created this process in the supervisors' cgroup2
    /// directory already.
    fn supervisor_main(&self, born_in_cgroup: bool) -> ! {
        // SAFETY: raw syscalls on pre-allocated data, see `spawn_supervisor`.
        unsafe {
            libc::setsid();
            if let Some(p) = &self.spec.supervisor_procs {
                if self.supervisor_dir.is_none() {
                    libc::write(p.as_raw_fd(), b"0".as_ptr().cast(), 1);
                } else if !born_in_cgroup {
                    join_cgroup2(p.as_raw_fd());
                }
            }
            self.close_others();
            for fd in 0..3 {
                libc::dup2(self.null, fd);
            }
            // Out of reach of the global OOM killer: the exit status must survive.
            let adj = libc::open(c"/proc/self/oom_score_adj".as_ptr(), libc::O_WRONLY);
            if adj >= 0 {
                libc::write(adj, b"-1000".as_ptr().cast(), 5);
                libc::close(adj);
            }
            let mut b = [0u8; 1];
            let n = loop {
                let n = libc::read(self.go_r, b.as_mut_ptr().cast(), 1);
                if n < 0 && Self::errno() == libc::EINTR {
                    continue;
                }
                break n;
            };
            libc::close(self.go_r);
            if n != 1 {
                // The agent went away (or gave up) before the launch was checkpointed.
                self.write_exit(b"aborted\n");
                libc::_exit(0);
            }
            if let Some(m) = &self.spec.namespaces {
                if let Err(e) = self.setup_mounts(m) {
                    self.report(Stage::Mounts, e);
                    self.write_exit(b"aborted\n");
                    libc::_exit(0);
                }
            }
            let pid = self.start_task();
            if pid < 0 {
                let errno = Self::errno();
                let stage = match errno {
                    libc::EAGAIN | libc::ENOMEM => Stage::Fork,
                    _ if !self.task_dirs.is_empty() => Stage::Cgroup,
                    _ => Stage::Fork,
                };
                self.report(stage, errno);
                self.write_exit(b"aborted\n");
                libc::_exit(0);
            }
            let pid = pid as i32;
            libc::close(self.err_w);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGCHLD);
            libc::sigaddset(&mut set, self.escalate);
            for s in FORWARDED {
                libc::sigaddset(&mut set, s);
            }
            let status: i32;
            'wait: loop {
                let sig = libc::sigwaitinfo(&set, std::ptr::null_mut());
                if sig == libc::SIGCHLD {
                    loop {
                        let mut st = 0;
                        let r = libc::waitpid(-1, &mut st, libc::WNOHANG);
                        if r <= 0 {
                            break;
                        }
                        if r == pid {
                            status = st;
                            break 'wait;
                        }
                    }
                } else if sig == self.escalate {
                    libc::kill(-pid, libc::SIGKILL);
                    if self.spec.namespaces.is_some() {
                        // PID 1 of the namespace: every other process in it.
                        libc::kill(-1, libc::SIGKILL);
                    }
                } else if sig > 0 {
                    libc::kill(-pid, sig);
                }
            }
            let mut buf = [0u8; 40];
            buf[..5].copy_from_slice(b"exit ");
            let mut num = [0u8; 24];
            let len = format_pid(status, &mut num);
            buf[5..5 + len].copy_from_slice(&num[..len]);
            buf[5 + len] = b'\n';
            self.write_exit(&buf[..6 + len]);
            libc::_exit(0);
        }
    }

    /// Returns the errno of the failed step.
    fn setup_mounts(&self, m: &MountPlan) -> Result<(), i32> {
        let check = |r: i32| if r == 0 { Ok(()) } else { Err(Self::errno()) };
        // SAFETY: mount/mkdir/open on NUL-terminated strings allocated before the fork, or
        // built in the stack buffer below.
        unsafe {
            check(libc::mount(
                c"none".as_ptr(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            // Opened in this mount namespace (a bind source must belong to it), before the
            // tmpfs hides the path.
            let fd = libc::open(
                m.sandbox.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            );
            if fd < 0 {
                return Err(Self::errno());
            }
            // The volumes too, before the tmpfs hides them (at most a few: a fixed array,
            // no allocation after the fork).
            let mut volume_fds = [-1i32; MAX_VOLUMES];
            for (i, (dir, _)) in m.volumes.iter().take(MAX_VOLUMES).enumerate() {
                volume_fds[i] = libc::open(
                    dir.as_ptr(),
                    libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
                );
                if volume_fds[i] < 0 {
                    return Err(Self::errno());
                }
            }
            check(libc::mount(
                c"tmpfs".as_ptr(),
                m.work_dir.as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                c"mode=755,size=1m".as_ptr().cast(),
            ))?;
            for d in &m.mkdirs {
                let r = libc::mkdir(d.as_ptr(), 0o755);
                if r != 0 && Self::errno() != libc::EEXIST {
                    return Err(Self::errno());
                }
            }
            let mut src = [0u8; 48];
            let prefix = b"/proc/self/fd/";
            src[..prefix.len()].copy_from_slice(prefix);
            let mut num = [0u8; 24];
            let len = format_pid(fd, &mut num);
            src[prefix.len()..prefix.len() + len].copy_from_slice(&num[..len]);
            // src[prefix.len() + len] is already NUL.
            check(libc::mount(
                src.as_ptr().cast(),
                m.sandbox.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND | libc::MS_REC,
                std::ptr::null(),
            ))?;
            libc::close(fd);
            for (i, (_, target)) in m.volumes.iter().take(MAX_VOLUMES).enumerate() {
                let mut num = [0u8; 24];
                let len = format_pid(volume_fds[i], &mut num);
                src[prefix.len()..prefix.len() + len].copy_from_slice(&num[..len]);
                src[prefix.len() + len] = 0;
                check(libc::mount(
                    src.as_ptr().cast(),
                    target.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND,
                    std::ptr::null(),
                ))?;
                libc::close(volume_fds[i]);
            }
            check(libc::mount(
                c"proc".as_ptr(),
                c"/proc".as_ptr(),
                c"proc".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                std::ptr::null(),
            ))?;
        }
        Ok(())
    }

    /// Starts the task and returns its pid once it exec'd (or exited), -1 with errno when
    /// it could not be created.
    ///
    /// The task is a `CLONE_VM | CLONE_VFORK` child on a small stack of its own: no copy of
    /// this process's memory map (a copy of the agent's) at the clone and none to tear down
    /// at exec, the two biggest costs of a launch before, the second one paid at the
    /// task's own cpu share. It is created in its first cgroup2 directory
    /// (`CLONE_INTO_CGROUP`). Kernels without `clone3` (< 5.3), without
    /// `CLONE_INTO_CGROUP` (< 5.7) or other architectures get a fork-like clone.
    fn start_task(&self) -> libc::c_long {
        #[cfg(target_arch = "x86_64")]
        {
            let dir = self.task_dirs.first().copied();
            let mut stack = TaskStack([0; TASK_STACK_SIZE]);
            let start = TaskStart {
                child: self,
                born_in: dir,
            };
            let mut args = CloneArgs {
                flags: (libc::CLONE_VM | libc::CLONE_VFORK) as u64
                    | dir.map_or(0, |_| CLONE_INTO_CGROUP),
                exit_signal: libc::SIGCHLD as u64,
                stack: stack.0.as_mut_ptr() as u64,
                stack_size: TASK_STACK_SIZE as u64,
                cgroup: dir.map_or(0, |d| d as u64),
                ..CloneArgs::default()
            };
            // SAFETY: `args` describes a stack that stays alive (and untouched by this
            // process, which CLONE_VFORK suspends) until the child exec'd or exited;
            // `task_entry` never returns and only reads `start`, which outlives the child's
            // use of it for the same reason.
            let r = unsafe {
                clone3_on_stack(&mut args, task_entry, std::ptr::from_ref(&start).cast())
            };
            if r >= 0 {
                return r;
            }
            let errno = (-r) as i32;
            if errno != libc::ENOSYS && errno != libc::E2BIG {
                // SAFETY: this thread's errno slot.
                unsafe { *libc::__errno_location() = errno };
                return -1;
            }
        }
        // SAFETY: fork-like (no CLONE_VM), see `spawn_supervisor`; `task_main` never returns.
        unsafe {
            let pid = libc::syscall(
                libc::SYS_clone,
                libc::SIGCHLD as libc::c_ulong,
                0usize,
                0usize,
                0usize,
                0usize,
            );
            if pid == 0 {
                self.task_main(None);
            }
            pid
        }
    }

    /// The task between clone and exec. `born_in`: the cgroup2 directory the clone created
    /// it in. It joins its cgroups late (the cpu hierarchy last, see `cgroups::join_plan`)
    /// so that little runs at the task's own cpu share, but before the user switch and
    /// always before exec: the command never runs outside its limits.
    fn task_main(&self, born_in: Option<i32>) -> ! {
        let spec = self.spec;
        // SAFETY: raw syscalls on pre-allocated data, see `spawn_supervisor`.
        unsafe {
            let fail = |stage: Stage| -> ! {
                self.report(stage, Self::errno());
                libc::_exit(127);
            };
            if libc::setsid() == -1 {
                fail(Stage::Session);
            }
            for sig in 1..libc::SIGRTMAX() {
                if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                    libc::signal(sig, libc::SIG_DFL);
                }
            }
            let adj = libc::open(c"/proc/self/oom_score_adj".as_ptr(), libc::O_WRONLY);
            if adj >= 0 {
                libc::write(adj, b"0".as_ptr().cast(), 1);
                libc::close(adj);
            }
            for &(res, soft, hard) in &spec.rlimits {
                let lim = libc::rlimit {
                    rlim_cur: soft as libc::rlim_t,
                    rlim_max: hard as libc::rlim_t,
                };
                if libc::setrlimit(res as _, &lim) != 0 {
                    fail(Stage::Rlimit);
                }
            }
            if libc::dup2(self.null, 0) < 0
                || libc::dup2(spec.stdout.as_raw_fd(), 1) < 0
                || libc::dup2(spec.stderr.as_raw_fd(), 2) < 0
            {
                fail(Stage::Stdio);
            }
            for &dir in self.task_dirs {
                if Some(dir) != born_in && !join_cgroup2(dir) {
                    fail(Stage::Cgroup);
                }
            }
            for &fd in self.task_files {
                if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    fail(Stage::Cgroup);
                }
            }
            if let Some((uid, gid, _)) = &spec.user {
                // Raw syscalls, not glibc's wrappers: in a child cloned from the
                // multi-threaded agent, glibc's set*id broadcast to "all threads" can wait
                // forever on a lock another agent thread held at clone time. The kernel
                // calls change only this process, which is all we want here.
                if libc::syscall(
                    libc::SYS_setgroups,
                    self.groups.len() as libc::c_long,
                    self.groups.as_ptr(),
                ) != 0
                    || libc::syscall(
                        libc::SYS_setresgid,
                        *gid as libc::c_long,
                        *gid as libc::c_long,
                        *gid as libc::c_long,
                    ) != 0
                    || libc::syscall(
                        libc::SYS_setresuid,
                        *uid as libc::c_long,
                        *uid as libc::c_long,
                        *uid as libc::c_long,
                    ) != 0
                {
                    fail(Stage::User);
                }
            }
            if libc::chdir(spec.cwd.as_ptr()) != 0 {
                fail(Stage::Chdir);
            }
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            libc::execve(
                spec.program.as_ptr(),
                self.argv.as_ptr(),
                self.envp.as_ptr(),
            );
            fail(Stage::Exec);
        }
    }
}

/// Size of the stack a task runs on between its clone and exec (raw syscalls only).
const TASK_STACK_SIZE: usize = 32 * 1024;

#[repr(C, align(16))]
struct TaskStack([u8; TASK_STACK_SIZE]);

/// What `task_entry` gets.
struct TaskStart<'a> {
    child: &'a Child<'a>,
    born_in: Option<i32>,
}

/// First function of a `CLONE_VM` task child, on its own stack.
extern "C" fn task_entry(arg: *const libc::c_void) -> ! {
    // SAFETY: `arg` is the `TaskStart` of `start_task`, alive until this child exec'd or
    // exited (its parent is suspended until then).
    let start: &TaskStart<'_> = unsafe { &*arg.cast() };
    start.child.task_main(start.born_in)
}

/// `struct clone_args` of `clone3(2)`, up to `cgroup` (`CLONE_ARGS_SIZE_VER2`).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// True when `fd` is a directory (a cgroup2 join handle) rather than a file.
fn is_dir(fd: i32) -> bool {
    // SAFETY: `stat` is plain data that fstat fills; any fd value is safe to pass.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        libc::fstat(fd, &mut st) == 0 && (st.st_mode & libc::S_IFMT) == libc::S_IFDIR
    }
}

/// Moves the calling process into the cgroup2 directory `dir` (its `cgroup.procs`).
/// Async-signal-safe. False (errno set) on failure.
fn join_cgroup2(dir: i32) -> bool {
    // SAFETY: a NUL-terminated literal, an fd the caller owns, a 1-byte buffer.
    unsafe {
        let fd = libc::openat(
            dir,
            c"cgroup.procs".as_ptr(),
            libc::O_WRONLY | libc::O_CLOEXEC,
        );
        if fd < 0 {
            return false;
        }
        let ok = libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
        libc::close(fd);
        ok
    }
}

/// A fork-like clone with the namespace `flags`: created in the cgroup2 directory `cgroup`
/// (`clone3` with `CLONE_INTO_CGROUP`) when given and the kernel can. Returns what the
/// syscall returns (pid, 0 in the child, -1 with errno) and whether the child was created
/// in `cgroup`.
///
/// # Safety
/// As for fork in a multi-threaded process: the child may only make async-signal-safe
/// calls and must end in `_exit` or exec.
unsafe fn clone_fork(flags: u64, cgroup: Option<i32>) -> (libc::c_long, bool) {
    if let Some(fd) = cgroup {
        let mut args = CloneArgs {
            flags: flags | CLONE_INTO_CGROUP,
            exit_signal: libc::SIGCHLD as u64,
            cgroup: fd as u64,
            ..CloneArgs::default()
        };
        // SAFETY: without CLONE_VM and with no stack given, clone3 is fork-like: the child
        // returns here on a copy of this stack (the caller's contract covers the rest).
        let pid = unsafe {
            libc::syscall(
                libc::SYS_clone3,
                std::ptr::from_mut(&mut args),
                std::mem::size_of::<CloneArgs>(),
            )
        };
        let errno = io::Error::last_os_error().raw_os_error();
        if pid >= 0 || !matches!(errno, Some(libc::ENOSYS | libc::E2BIG)) {
            return (pid, true);
        }
    }
    // SAFETY: fork-like, as above.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD as u64) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    (pid, false)
}

/// `clone3(args)` whose child starts on `args.stack` (16-byte aligned top) by calling
/// `entry(arg)`; returns the raw syscall result in the parent (pid or -errno).
///
/// # Safety
/// The stack must stay valid and unused by anyone else until the child exec'd or exited;
/// `entry` must never return and, with CLONE_VM, only make async-signal-safe calls.
#[cfg(target_arch = "x86_64")]
unsafe fn clone3_on_stack(
    args: &mut CloneArgs,
    entry: extern "C" fn(*const libc::c_void) -> !,
    arg: *const libc::c_void,
) -> libc::c_long {
    let ret: libc::c_long;
    // SAFETY: the syscall clobbers rcx and r11 (declared) and rax (the result). In the child
    // (rax = 0) the kernel has switched to the new stack; it calls `entry(arg)` there, which
    // never returns (`ud2` traps otherwise), so no Rust code runs on in the child after the
    // asm block. The parent continues after label 2 with its registers intact.
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "xor ebp, ebp",
            "mov rdi, r12",
            "call r13",
            "ud2",
            "2:",
            inlateout("rax") libc::SYS_clone3 => ret,
            in("rdi") std::ptr::from_mut(args),
            in("rsi") std::mem::size_of::<CloneArgs>(),
            in("r12") arg,
            in("r13") entry,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

/// Opens a pidfd for `pid` (a handle that cannot be confused with a later process reusing
/// the pid; readable once the process exits).
pub(crate) fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    if pid <= 1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refusing to open a pidfd for pid {pid}"),
        ));
    }
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0u32) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the syscall returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Reaps the exited process behind `pidfd` when it is a child of the agent (a supervisor
/// re-attached after a restart is not: nothing to reap then).
pub(crate) fn reap(pidfd: &OwnedFd) {
    // SAFETY: siginfo_t is plain data; waitid gets a valid pidfd and a valid pointer.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        libc::waitid(
            libc::P_PIDFD,
            pidfd.as_raw_fd() as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG,
        );
    }
}

/// Waits until the process behind `pidfd` exits, then reaps it (see [`reap`]).
pub(crate) async fn wait_pidfd(pidfd: OwnedFd) -> io::Result<()> {
    use tokio::io::unix::AsyncFd;
    // SAFETY: the AsyncFd owns the OwnedFd, so the fd stays open and `as_raw_fd` returns the
    // same descriptor for the AsyncFd's whole life.
    let afd = unsafe { AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) }
        .map_err(|e| e.into_parts().1)?;
    let _guard = afd.readable().await?;
    reap(afd.get_ref());
    Ok(())
}

/// Reads `pipe` to EOF on the event loop (it is switched to non-blocking).
pub(crate) async fn read_pipe_to_end(pipe: File) -> io::Result<Vec<u8>> {
    use std::io::Read;
    use tokio::io::unix::AsyncFd;
    let flags = nix::fcntl::fcntl(&pipe, nix::fcntl::FcntlArg::F_GETFL)?;
    let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(&pipe, nix::fcntl::FcntlArg::F_SETFL(flags))?;
    // SAFETY: the AsyncFd owns the File, so the fd stays open and `as_raw_fd` returns the
    // same descriptor for the AsyncFd's whole life.
    let afd = unsafe { AsyncFd::register_with_interest(pipe, tokio::io::Interest::READABLE) }
        .map_err(|e| e.into_parts().1)?;
    let mut buf = Vec::new();
    loop {
        let mut guard = afd.readable().await?;
        let mut chunk = [0u8; 64];
        match guard.try_io(|f| f.get_ref().read(&mut chunk)) {
            Ok(Ok(0)) => return Ok(buf),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => {}
        }
    }
}

/// The agent's own hard limit of an rlimit resource.
pub(crate) fn hard_rlimit(resource: i32) -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the valid rlimit struct passed.
    if unsafe { libc::getrlimit(resource as _, &mut lim) } != 0 {
        return None;
    }
    #[allow(clippy::unnecessary_cast)] // rlim_t differs between libcs
    Some(lim.rlim_max as u64)
}

/// Sends a raw signal number (real-time signals included) to one process.
pub(crate) fn signal_raw(pid: i32, sig: i32) -> io::Result<()> {
    if pid <= 1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refusing to signal pid {pid}"),
        ));
    }
    // SAFETY: kill(2) with a positive pid has no memory-safety preconditions.
    if unsafe { libc::kill(pid, sig) } == -1 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ESRCH) {
            return Ok(());
        }
        return Err(e);
    }
    Ok(())
}

/// Changes the owner of `path` (the task's sandbox and its stdio files).
pub(crate) fn chown(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
}

/// CLOCK_MONOTONIC in ns (the clock of `bpf_ktime_get_ns` and `task_struct.start_time`).
pub(crate) fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given; CLOCK_MONOTONIC cannot fail.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// `BPF_MAP_LOOKUP_BATCH` (not wrapped by aya 0.14): copies up to `count` entries of the map
/// `map_fd` after the position `in_batch` (`None`: from the first) into `keys` and
/// `values` (`count` × key size and × value size, per-cpu values × possible cpus, each
/// rounded up to 8 bytes), and the position to continue from into `out_batch` (at least the
/// key size; 4 bytes for hash maps); `sizes`: the map's (key size, value size). Returns the
/// entries copied and whether the map's end was reached.
pub(crate) fn bpf_map_lookup_batch(
    map_fd: std::os::fd::BorrowedFd<'_>,
    in_batch: Option<&[u8]>,
    out_batch: &mut [u8],
    keys: &mut [u8],
    values: &mut [u8],
    count: u32,
    (key_size, value_size): (usize, usize),
) -> io::Result<(u32, bool)> {
    // The `batch` member of `union bpf_attr` (uapi/linux/bpf.h).
    #[repr(C)]
    struct BatchAttr {
        in_batch: u64,
        out_batch: u64,
        keys: u64,
        values: u64,
        count: u32,
        map_fd: u32,
        elem_flags: u64,
        flags: u64,
    }
    const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
    let n = count as usize;
    if keys.len() < n * key_size
        || values.len() < n * value_size
        || out_batch.len() < key_size.max(4)
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "batch buffers smaller than count entries",
        ));
    }
    if let Some(b) = in_batch {
        if b.len() < key_size.max(4) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "short in_batch",
            ));
        }
    }
    let mut attr = BatchAttr {
        in_batch: in_batch.map_or(0, |b| b.as_ptr() as u64),
        out_batch: out_batch.as_mut_ptr() as u64,
        keys: keys.as_mut_ptr() as u64,
        values: values.as_mut_ptr() as u64,
        count,
        map_fd: map_fd.as_raw_fd() as u32,
        elem_flags: 0,
        flags: 0,
    };
    // SAFETY: the attribute points at buffers checked above to hold `count` keys and values
    // of the sizes the caller gives (the map's), and the batch positions; all outlive the
    // call. The kernel writes at most `count` entries and updates `attr.count`.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_LOOKUP_BATCH,
            &mut attr as *mut BatchAttr,
            std::mem::size_of::<BatchAttr>() as libc::c_uint,
        )
    };
    if r == 0 {
        return Ok((attr.count, false));
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        // The end of the map: `count` holds what was copied before it.
        Some(libc::ENOENT) => Ok((attr.count, true)),
        _ => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(pid: i32, expected: &str) {
        let mut buf = [0u8; 24];
        let n = format_pid(pid, &mut buf);
        assert_eq!(&buf[..n], expected.as_bytes(), "pid {pid}");
    }

    #[test]
    fn formats_pids() {
        check(0, "0");
        check(7, "7");
        check(10, "10");
        check(4194304, "4194304");
        check(i32::MAX, "2147483647");
    }

    #[test]
    fn refuses_to_signal_init_or_everyone() {
        assert!(signal_group(1, Signal::SIGTERM).is_err());
        assert!(signal_group(0, Signal::SIGTERM).is_err());
        assert!(signal_pid(-1, Signal::SIGTERM).is_err());
    }
}
