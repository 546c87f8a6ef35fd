//! Every raw libc / nix call the agent makes lives here, so the rest of the crate is plain
//! Rust that can be tested without root.
//!
//! Architecture Invariant: no other module of `brim-agent` contains `unsafe` or calls libc.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;

use nix::errno::Errno;
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

use crate::clone3::{CloneArgs, CLONE_INTO_CGROUP};

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

// ------------------------------------------------------------------ network namespaces

/// Creates a network namespace held by a bind mount of its nsfs file at `path` (what
/// `ip netns add` does), so it outlives every process in it. A throwaway thread
/// `unshare`s into the new namespace; the agent's own threads stay where they are.
pub(crate) fn create_netns(path: &Path) -> io::Result<()> {
    File::create(path)?;
    let target = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::other("network namespace path contains a NUL byte"))?;
    let made = std::thread::spawn(move || -> io::Result<()> {
        // SAFETY: unshare affects only this thread, which exits right after.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: NUL-terminated strings; a bind mount of this thread's nsfs file.
        let r = unsafe {
            libc::mount(
                c"/proc/thread-self/ns/net".as_ptr(),
                target.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    })
    .join()
    .map_err(|_| io::Error::other("the network namespace thread panicked"))?;
    if made.is_err() {
        let _ = std::fs::remove_file(path);
    }
    made
}

/// Releases a network namespace made by [`create_netns`] (detaches the bind mount and
/// removes the file). A missing one is fine.
pub(crate) fn remove_netns(path: &Path) -> io::Result<()> {
    if !path.exists() {
        return Ok(());
    }
    let target = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::other("network namespace path contains a NUL byte"))?;
    // SAFETY: a NUL-terminated path; MNT_DETACH of a bind mount.
    if unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) } != 0 {
        let e = io::Error::last_os_error();
        // EINVAL: not a mount point (a leftover file).
        if e.raw_os_error() != Some(libc::EINVAL) {
            return Err(e);
        }
    }
    std::fs::remove_file(path)
}

// ------------------------------------------------------------------ task supervisors

pub(crate) use crate::supervisor_spec::{MountPlan, Stage, SupervisorArgs};

/// Most persistent volumes one task can mount (the master refuses none: a task with more
/// fails to start with a clear error from `supervisor::spawn`).
pub(crate) const MAX_VOLUMES: usize = 16;

/// Everything a supervisor and its task need, allocated before the clone: the clone's child
/// only makes raw syscalls on this data until it execs `brim-supervisor`.
#[derive(Debug)]
pub(crate) struct SpawnSpec {
    pub program: CString,
    /// A sealed copy of `program` ([`sealed_executable`]) the task is exec'd from; the
    /// caller keeps it open until the spawn returned.
    pub program_fd: Option<i32>,
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
    /// Without `namespaces`: a private mount namespace in which the supervisor detaches
    /// these mounts before it starts the task.
    pub private_unmounts: Vec<CString>,
    /// An existing network namespace (a task group's, `pods`) the supervisor joins
    /// (`setns`) after the go byte, so its task starts in it.
    pub join_netns: Option<File>,
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

/// `brim-supervisor` (`agent/supervisor/main.rs`), compiled by `build.rs`.
static SUPERVISOR_ELF: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/brim-supervisor"));

/// `MFD_EXEC` (Linux 6.3): an executable memfd even where `vm.memfd_noexec` defaults to
/// non-executable ones.
const MFD_EXEC: libc::c_uint = 0x10;

/// A read-only fd of a sealed memfd holding `brim-supervisor`, made once per process. Every
/// supervisor execs this same copy (its pages are shared); no file on disk to find, keep
/// in step with the agent, or have replaced under it.
fn supervisor_exe() -> io::Result<i32> {
    static EXE: std::sync::OnceLock<Result<OwnedFd, String>> = std::sync::OnceLock::new();
    let exe = EXE.get_or_init(|| {
        make_supervisor_exe().map_err(|e| {
            format!("cannot put the embedded brim-supervisor in a memfd: {e} (check vm.memfd_noexec: supervisors are exec'd from a memfd)")
        })
    });
    match exe {
        Ok(fd) => Ok(fd.as_raw_fd()),
        Err(e) => Err(io::Error::other(e.clone())),
    }
}

/// Puts the embedded supervisor program in its memfd now (else the first launch does).
pub(crate) fn prepare_supervisor() -> io::Result<()> {
    supervisor_exe().map(drop)
}

fn make_supervisor_exe() -> io::Result<OwnedFd> {
    sealed_executable(c"brim-supervisor", &mut &SUPERVISOR_ELF[..])
}

/// A read-only fd of a new memfd holding `content`, sealed against every change
/// (`F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE`), to exec with `execveat`.
/// Nothing can alter what runs from it — not a task writing to `/proc/<pid>/exe`
/// (CVE-2019-5736), not an upgrade of a file on disk — and every process exec'd from it
/// shares its pages. Exactly these seals are what crun and runc look for on
/// `/proc/self/exe` before they skip copying themselves into a memfd of their own.
pub(crate) fn sealed_executable(name: &CStr, content: &mut dyn io::Read) -> io::Result<OwnedFd> {
    let base = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    // SAFETY: a NUL-terminated name and flags; returns a new fd or -1.
    let mut fd = unsafe { libc::memfd_create(name.as_ptr(), base | MFD_EXEC) };
    if fd < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
        // Kernels before 6.3 do not know MFD_EXEC (their memfds are executable).
        // SAFETY: as above.
        fd = unsafe { libc::memfd_create(name.as_ptr(), base) };
    }
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: memfd_create returned a new fd nobody else owns.
    let mut file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    io::copy(content, &mut file)?;
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: fcntl on an fd we own.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // Exec'd through a read-only fd: no open writable file behind it (ETXTBSY).
    let ro = std::fs::File::open(format!("/proc/self/fd/{}", file.as_raw_fd()))?;
    Ok(OwnedFd::from(ro))
}

/// What the clone's child needs to exec the supervisor (read through the shared memory of
/// a `CLONE_VM` child, or from a copy after a fork-like clone).
struct ExecStart<'a> {
    exe: i32,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    /// fds the supervisor inherits (their close-on-exec flag is cleared in the child).
    inherit: &'a [i32],
    err_w: i32,
    /// errno of a failed exec, for the parent (shared memory with `CLONE_VM`).
    exec_errno: std::sync::atomic::AtomicI32,
}

/// The clone's child: a new session, the inherited fds, exec. Raw syscalls only.
fn exec_supervisor(s: &ExecStart<'_>) -> ! {
    // SAFETY: raw syscalls on data the parent keeps alive until this child exec'd or exited.
    unsafe {
        libc::setsid();
        for &fd in s.inherit {
            libc::fcntl(fd, libc::F_SETFD, 0);
        }
        libc::syscall(
            libc::SYS_execveat,
            s.exe,
            c"".as_ptr(),
            s.argv,
            s.envp,
            libc::AT_EMPTY_PATH,
        );
        let errno = *libc::__errno_location();
        s.exec_errno
            .store(errno, std::sync::atomic::Ordering::SeqCst);
        let mut buf = [0u8; 8];
        buf[..4].copy_from_slice(&(Stage::Supervisor as i32).to_ne_bytes());
        buf[4..].copy_from_slice(&errno.to_ne_bytes());
        libc::write(s.err_w, buf.as_ptr().cast(), buf.len());
        libc::_exit(127);
    }
}

/// First function of a `CLONE_VM` supervisor child, on its own stack.
#[cfg(target_arch = "x86_64")]
extern "C" fn exec_entry(arg: *const libc::c_void) -> ! {
    // SAFETY: `arg` is the `ExecStart` of `spawn_supervisor`, alive until this child exec'd
    // or exited (CLONE_VFORK suspends its parent until then).
    exec_supervisor(unsafe { &*arg.cast::<ExecStart<'_>>() })
}

/// Size of the stack the clone's child runs on until it execs (raw syscalls only).
#[cfg(target_arch = "x86_64")]
const EXEC_STACK_SIZE: usize = 16 * 1024;

#[cfg(target_arch = "x86_64")]
#[repr(C, align(16))]
struct ExecStack([u8; EXEC_STACK_SIZE]);

/// Starts a supervisor: `brim-supervisor` exec'd by a child of the agent in its own session
/// (and, with `spec.namespaces`, PID 1 of new PID/mount/UTS/IPC namespaces) that outlives the
/// agent, waits for the go byte, starts the task, forwards signals to it, reaps it and writes
/// its wait status to `exit` in `spec.exit_dir` (write + rename).
///
/// The child is a `clone3(CLONE_VM | CLONE_VFORK)` on a small stack of its own, created in
/// the supervisors' cgroup2 directory (`CLONE_INTO_CGROUP`): nothing of the agent's memory
/// map is copied (before, every supervisor was a fork of the whole agent: page-table copies,
/// copy-on-write faults in the agent after each, and ~1.3 MiB PSS per supervisor). Kernels
/// without `clone3`/`CLONE_INTO_CGROUP` and other architectures get a fork-like clone.
pub(crate) fn spawn_supervisor(spec: &SpawnSpec) -> io::Result<Spawned> {
    let exe = supervisor_exe()?;
    let (go_r, go_w) = pipe_cloexec()?;
    let (err_r, err_w) = pipe_cloexec()?;
    let null = dev_null()?;
    let task_procs: Vec<i32> = spec.task_procs.iter().map(AsRawFd::as_raw_fd).collect();
    let (task_dirs, task_files): (Vec<i32>, Vec<i32>) =
        task_procs.iter().partition(|&&fd| is_dir(fd));
    let supervisor_fd = spec.supervisor_procs.as_ref().map(AsRawFd::as_raw_fd);
    let supervisor_dir = supervisor_fd.filter(|&fd| is_dir(fd));
    let mut args = SupervisorArgs {
        go: go_r.as_raw_fd(),
        err: err_w.as_raw_fd(),
        null: null.as_raw_fd(),
        stdout: spec.stdout.as_raw_fd(),
        stderr: spec.stderr.as_raw_fd(),
        exit_dir: spec.exit_dir.as_raw_fd(),
        supervisor_tasks: supervisor_fd.filter(|_| supervisor_dir.is_none()),
        supervisor_dir,
        born_in_cgroup: supervisor_dir.is_some(),
        task_dirs,
        task_files,
        user: spec.user.clone(),
        rlimits: spec.rlimits.clone(),
        escalate: escalate_signal(),
        program: spec.program.clone(),
        program_fd: spec.program_fd,
        cwd: spec.cwd.clone(),
        mounts: spec.namespaces.clone(),
        unmounts: spec.private_unmounts.clone(),
        netns: spec.join_netns.as_ref().map(AsRawFd::as_raw_fd),
        argv: spec.argv.clone(),
        envp: spec.envp.clone(),
    };
    let argv = args.encode();
    // The same argv saying the supervisor was not created in its cgroup, for the fallback.
    args.born_in_cgroup = false;
    let argv_unborn = args.encode();
    let ptrs = |v: &[CString]| -> Vec<*const libc::c_char> {
        v.iter()
            .map(|a| a.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect()
    };
    let argv_ptrs = ptrs(&argv);
    let argv_unborn_ptrs = ptrs(&argv_unborn);
    let envp_ptrs: [*const libc::c_char; 1] = [std::ptr::null()];
    let mut inherit: Vec<i32> = vec![
        go_r.as_raw_fd(),
        err_w.as_raw_fd(),
        null.as_raw_fd(),
        spec.stdout.as_raw_fd(),
        spec.stderr.as_raw_fd(),
        spec.exit_dir.as_raw_fd(),
    ];
    inherit.extend(&task_procs);
    inherit.extend(supervisor_fd);
    inherit.extend(spec.join_netns.as_ref().map(AsRawFd::as_raw_fd));
    inherit.extend(spec.program_fd);
    let mut start = ExecStart {
        exe,
        argv: argv_ptrs.as_ptr(),
        envp: envp_ptrs.as_ptr(),
        inherit: &inherit,
        err_w: err_w.as_raw_fd(),
        exec_errno: std::sync::atomic::AtomicI32::new(0),
    };
    let mut flags: u64 = 0;
    if spec.namespaces.is_some() {
        flags |= (libc::CLONE_NEWPID | libc::CLONE_NEWNS | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC)
            as u64;
        if spec.network_namespace {
            flags |= libc::CLONE_NEWNET as u64;
        }
    } else if !spec.private_unmounts.is_empty() {
        flags |= libc::CLONE_NEWNS as u64;
    }
    // Block every signal around the clone so the supervisor starts with them blocked (it
    // takes them with sigwaitinfo; the mask survives the exec) and no agent handler ever
    // runs in the child, which shares the agent's memory until it execs.
    // SAFETY: sigset_t is plain data; sigfillset/pthread_sigmask get valid pointers.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers to initialized sigsets.
    unsafe {
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let mut pid: libc::c_long = -(libc::ENOSYS as libc::c_long);
    #[cfg(target_arch = "x86_64")]
    let mut pid = {
        let mut stack = Box::new(ExecStack([0; EXEC_STACK_SIZE]));
        let mut args = CloneArgs {
            flags: flags
                | (libc::CLONE_VM | libc::CLONE_VFORK) as u64
                | supervisor_dir.map_or(0, |_| CLONE_INTO_CGROUP),
            exit_signal: libc::SIGCHLD as u64,
            stack: stack.0.as_mut_ptr() as u64,
            stack_size: EXEC_STACK_SIZE as u64,
            cgroup: supervisor_dir.map_or(0, |d| d as u64),
            ..CloneArgs::default()
        };
        // SAFETY: `args` describes a stack that stays alive (and untouched by this thread,
        // which CLONE_VFORK suspends) until the child exec'd or exited; `exec_entry` never
        // returns and only reads `start` (alive as long) and makes raw syscalls; every
        // signal is blocked, so no handler runs on the shared memory.
        unsafe { clone3_on_stack(&mut args, exec_entry, std::ptr::from_ref(&start).cast()) }
    };
    let mut clone_err = None;
    if pid < 0 {
        let errno = (-pid) as i32;
        if errno == libc::ENOSYS || errno == libc::E2BIG {
            // No clone3 (or no CLONE_INTO_CGROUP): a fork-like clone; the supervisor joins
            // its cgroup itself.
            start.argv = argv_unborn_ptrs.as_ptr();
            // SAFETY: fork-like; the child only makes raw syscalls on data allocated above
            // and never returns (`exec_supervisor` ends in exec or `_exit`).
            pid = unsafe { clone_fork(flags) };
            if pid == 0 {
                exec_supervisor(&start);
            }
            if pid < 0 {
                clone_err = Some(io::Error::last_os_error());
            }
        } else {
            clone_err = Some(io::Error::from_raw_os_error(errno));
        }
    }
    // SAFETY: restores the mask saved above.
    unsafe {
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
    }
    if let Some(e) = clone_err {
        return Err(e);
    }
    let exec_errno = start.exec_errno.load(std::sync::atomic::Ordering::SeqCst);
    if exec_errno != 0 {
        // The child exited: reap it.
        // SAFETY: waitpid on our own child with a valid status pointer.
        unsafe {
            let mut st = 0;
            libc::waitpid(pid as i32, &mut st, 0);
        }
        return Err(io::Error::new(
            io::Error::from_raw_os_error(exec_errno).kind(),
            format!(
                "cannot exec the embedded brim-supervisor: {}",
                io::Error::from_raw_os_error(exec_errno)
            ),
        ));
    }
    drop(go_r);
    drop(err_w);
    Ok(Spawned {
        pid: pid as i32,
        go: File::from(go_w),
        errors: File::from(err_r),
    })
}

/// True when `fd` is a directory (a cgroup2 join handle) rather than a file.
fn is_dir(fd: i32) -> bool {
    // SAFETY: `stat` is plain data that fstat fills; any fd value is safe to pass.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        libc::fstat(fd, &mut st) == 0 && (st.st_mode & libc::S_IFMT) == libc::S_IFDIR
    }
}

/// A fork-like clone with the namespace `flags`. Returns what the syscall returns (pid, 0 in
/// the child, -1 with errno).
///
/// # Safety
/// As for fork in a multi-threaded process: the child may only make async-signal-safe
/// calls and must end in `_exit` or exec.
unsafe fn clone_fork(flags: u64) -> libc::c_long {
    // SAFETY: without CLONE_VM, clone is fork-like: the child returns here on a copy of this
    // stack (the caller's contract covers the rest).
    unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD as u64) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    }
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

    fn sample_args() -> SupervisorArgs {
        let c = |s: &str| CString::new(s).expect("no NUL");
        SupervisorArgs {
            go: 5,
            err: 6,
            null: 7,
            stdout: 8,
            stderr: 9,
            exit_dir: 10,
            supervisor_tasks: None,
            supervisor_dir: Some(11),
            born_in_cgroup: true,
            task_dirs: vec![12, 13],
            task_files: vec![14],
            user: Some((1000, 100, vec![100, 27])),
            rlimits: vec![(4, 0, 0), (7, 65536, u64::MAX)],
            escalate: 63,
            program: c("/bin/sh"),
            program_fd: Some(16),
            cwd: c("/w/sandboxes/fw/t=1"),
            mounts: Some(MountPlan {
                work_dir: c("/w"),
                mkdirs: vec![c("/w/sandboxes"), c("/w/sandboxes/fw")],
                sandbox: c("/w/sandboxes/fw/t=1"),
                volumes: vec![(c("/w/volumes/v"), c("/w/sandboxes/fw/t=1/data"))],
                readonly: vec![c("/w/sandboxes/fw/t=1/data")],
            }),
            unmounts: Vec::new(),
            netns: Some(15),
            argv: vec![c("sh"), c("-c"), c("echo a=b --; exit 3"), c("")],
            envp: vec![c("PATH=/bin"), c("LD_PRELOAD=/x.so"), c("EMPTY=")],
        }
    }

    fn os(v: Vec<CString>) -> Vec<std::ffi::OsString> {
        use std::os::unix::ffi::OsStringExt;
        v.into_iter()
            .map(|c| std::ffi::OsString::from_vec(c.into_bytes()))
            .collect()
    }

    #[test]
    fn supervisor_args_round_trip() {
        let a = sample_args();
        let argv = os(a.encode());
        assert_eq!(SupervisorArgs::error_fd(&argv), Some(6));
        assert_eq!(SupervisorArgs::decode(argv).expect("decodes"), a);
        let mut plain = sample_args();
        plain.user = None;
        plain.mounts = None;
        plain.supervisor_dir = None;
        plain.supervisor_tasks = Some(11);
        plain.born_in_cgroup = false;
        plain.envp.clear();
        plain.unmounts = vec![CString::new("/sys/fs/cgroup/unified").expect("no NUL")];
        assert_eq!(
            SupervisorArgs::decode(os(plain.encode())).expect("decodes"),
            plain
        );
    }

    #[test]
    fn bad_supervisor_args_are_errors() {
        let good = os(sample_args().encode());
        let decode = |v: Vec<std::ffi::OsString>| SupervisorArgs::decode(v);
        assert!(decode(Vec::new()).is_err());
        let mut wrong0 = good.clone();
        wrong0[0] = "sh".into();
        assert!(decode(wrong0).is_err());
        let mut short = good.clone();
        short.pop();
        assert!(decode(short).expect_err("must fail").contains("expected"));
        let mut unknown = good.clone();
        unknown.insert(2, "bogus=1".into());
        assert!(decode(unknown).expect_err("must fail").contains("bogus"));
        let mut bad_fd = good.clone();
        bad_fd[2] = "go=-3".into();
        assert!(decode(bad_fd).is_err());
        let missing: Vec<_> = good
            .iter()
            .filter(|a| !a.to_string_lossy().starts_with("program="))
            .cloned()
            .collect();
        assert!(decode(missing).is_err());
    }

    #[test]
    fn refuses_to_signal_init_or_everyone() {
        assert!(signal_group(1, Signal::SIGTERM).is_err());
        assert!(signal_group(0, Signal::SIGTERM).is_err());
        assert!(signal_pid(-1, Signal::SIGTERM).is_err());
    }
}
