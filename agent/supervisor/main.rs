//! `brim-supervisor`: the per-task supervisor the agent execs (see the launch protocol in
//! `agent/src/supervisor.rs`). A small program of its own, compiled by `agent/build.rs` and
//! embedded in the agent, so a launch no longer copies the agent's memory map (the clone
//! that starts it shares the agent's memory until the exec, like `posix_spawn`).
//!
//! It depends on nothing but std and the C library (declared below): `build.rs` compiles it
//! with plain `rustc`, outside cargo. It is single-threaded, so after the exec it may
//! allocate; the task child (a fork of this small process) still sticks to raw calls.

#![allow(non_camel_case_types)]

#[allow(dead_code)] // the encoder half is the agent's
mod clone3;
mod spec;

use std::ffi::{c_char, c_int, c_long, c_ulong, c_void, CString};

use clone3::{CloneArgs, CLONE_INTO_CGROUP};
use spec::{MountPlan, Stage, SupervisorArgs};

type pid_t = i32;

/// glibc's `sigset_t` (1,024 bits).
#[repr(C)]
struct SigSet([u64; 16]);

#[repr(C)]
struct Rlimit {
    cur: u64,
    max: u64,
}

extern "C" {
    fn setsid() -> pid_t;
    fn write(fd: c_int, buf: *const c_void, n: usize) -> isize;
    fn read(fd: c_int, buf: *mut c_void, n: usize) -> isize;
    fn close(fd: c_int) -> c_int;
    fn open(path: *const c_char, flags: c_int, ...) -> c_int;
    fn openat(dirfd: c_int, path: *const c_char, flags: c_int, ...) -> c_int;
    fn renameat(od: c_int, op: *const c_char, nd: c_int, np: *const c_char) -> c_int;
    fn dup2(old: c_int, new: c_int) -> c_int;
    fn fcntl(fd: c_int, cmd: c_int, ...) -> c_int;
    fn mount(
        src: *const c_char,
        target: *const c_char,
        fstype: *const c_char,
        flags: c_ulong,
        data: *const c_void,
    ) -> c_int;
    fn umount2(target: *const c_char, flags: c_int) -> c_int;
    fn mkdir(path: *const c_char, mode: u32) -> c_int;
    fn chdir(path: *const c_char) -> c_int;
    fn execve(path: *const c_char, argv: *const *const c_char, envp: *const *const c_char)
        -> c_int;
    fn execveat(
        dirfd: c_int,
        path: *const c_char,
        argv: *const *const c_char,
        envp: *const *const c_char,
        flags: c_int,
    ) -> c_int;
    fn _exit(code: c_int) -> !;
    fn kill(pid: pid_t, sig: c_int) -> c_int;
    fn waitpid(pid: pid_t, status: *mut c_int, options: c_int) -> pid_t;
    fn sigwaitinfo(set: *const SigSet, info: *mut c_void) -> c_int;
    fn sigprocmask(how: c_int, set: *const SigSet, old: *mut SigSet) -> c_int;
    fn sigemptyset(set: *mut SigSet) -> c_int;
    fn sigaddset(set: *mut SigSet, sig: c_int) -> c_int;
    fn setrlimit(resource: c_int, rlim: *const Rlimit) -> c_int;
    fn signal(sig: c_int, handler: usize) -> usize;
    fn syscall(n: c_long, ...) -> c_long;
    fn fork() -> pid_t;
    fn __errno_location() -> *mut c_int;
    fn setgroups(n: usize, groups: *const u32) -> c_int;
    fn setresgid(r: u32, e: u32, s: u32) -> c_int;
    fn setresuid(r: u32, e: u32, s: u32) -> c_int;
    fn prctl(option: c_int, arg: c_ulong, ...) -> c_int;
    fn setns(fd: c_int, nstype: c_int) -> c_int;
}

const O_WRONLY: c_int = 0o1;
const CLONE_NEWNET: c_int = 0x4000_0000;
const O_CREAT: c_int = 0o100;
const O_TRUNC: c_int = 0o1000;
const O_CLOEXEC: c_int = 0o2000000;
const O_PATH: c_int = 0o10000000;
const AT_EMPTY_PATH: c_int = 0x1000;
#[cfg(any(target_arch = "aarch64", target_arch = "arm"))]
const O_DIRECTORY: c_int = 0o40000;
#[cfg(not(any(target_arch = "aarch64", target_arch = "arm")))]
const O_DIRECTORY: c_int = 0o200000;
const MS_RDONLY: c_ulong = 1;
const MS_NOSUID: c_ulong = 2;
const MS_NODEV: c_ulong = 4;
const MS_NOEXEC: c_ulong = 8;
const MS_BIND: c_ulong = 4096;
const MS_REMOUNT: c_ulong = 32;
const MS_REC: c_ulong = 16384;
const MS_PRIVATE: c_ulong = 1 << 18;
const MNT_DETACH: c_int = 2;
const F_SETFD: c_int = 2;
const FD_CLOEXEC: c_int = 1;
const SIG_SETMASK: c_int = 2;
const SIG_DFL: usize = 0;
const SIGHUP: c_int = 1;
const SIGINT: c_int = 2;
const SIGQUIT: c_int = 3;
const SIGKILL: c_int = 9;
const SIGUSR1: c_int = 10;
const SIGUSR2: c_int = 12;
const SIGTERM: c_int = 15;
const SIGCHLD: c_int = 17;
const SIGSTOP: c_int = 19;
/// glibc's SIGRTMAX.
const SIGRTMAX: c_int = 64;
const WNOHANG: c_int = 1;
const EINTR: c_int = 4;
const E2BIG: c_int = 7;
const EAGAIN: c_int = 11;
const ENOMEM: c_int = 12;
const EEXIST: c_int = 17;
const EINVAL: c_int = 22;
const ENOSYS: c_int = 38;
const PR_SET_NAME: c_int = 15;
/// Same number on every architecture (added after the syscall tables were unified).
const SYS_CLONE3: c_long = 435;
const SYS_CLOSE_RANGE: c_long = 436;
/// Signals forwarded to the task's process group.
const FORWARDED: [c_int; 6] = [SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2];

fn errno() -> c_int {
    // SAFETY: __errno_location returns this thread's errno slot.
    unsafe { *__errno_location() }
}

fn set_errno(e: c_int) {
    // SAFETY: as above.
    unsafe { *__errno_location() = e };
}

/// Writes the decimal form of `v` into `buf`, returns its length. Allocation-free.
fn format_num(v: i64, buf: &mut [u8; 24]) -> usize {
    let neg = v < 0;
    let mut v = v.unsigned_abs();
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
    let mut i = 0;
    if neg {
        buf[0] = b'-';
        i = 1;
    }
    for k in 0..n {
        buf[i + k] = tmp[n - 1 - k];
    }
    i + n
}

struct Supervisor {
    a: SupervisorArgs,
    argv: Vec<*const c_char>,
    envp: Vec<*const c_char>,
}

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let err_fd = SupervisorArgs::error_fd(&args);
    let a = match SupervisorArgs::decode(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("brim-supervisor: bad arguments from the agent ({e}); the agent and its supervisor must come from the same build");
            if let Some(fd) = err_fd {
                report(fd, Stage::Supervisor, EINVAL);
            }
            std::process::exit(2);
        }
    };
    let argv = a
        .argv
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let envp = a
        .envp
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    Supervisor { a, argv, envp }.run()
}

fn report(err_fd: c_int, stage: Stage, errno: c_int) {
    let mut buf = [0u8; 8];
    buf[..4].copy_from_slice(&(stage as i32).to_ne_bytes());
    buf[4..].copy_from_slice(&errno.to_ne_bytes());
    // SAFETY: writes 8 initialized bytes to a pipe fd.
    unsafe {
        write(err_fd, buf.as_ptr().cast(), buf.len());
    }
}

/// Moves the calling process into the cgroup2 directory `dir` (its `cgroup.procs`).
/// Async-signal-safe. False (errno set) on failure.
fn join_cgroup2(dir: c_int) -> bool {
    // SAFETY: a NUL-terminated literal, an fd we own, a 1-byte buffer.
    unsafe {
        let fd = openat(dir, c"cgroup.procs".as_ptr(), O_WRONLY | O_CLOEXEC);
        if fd < 0 {
            return false;
        }
        let ok = write(fd, b"0".as_ptr().cast(), 1) == 1;
        close(fd);
        ok
    }
}

impl Supervisor {
    fn report(&self, stage: Stage, errno: c_int) {
        report(self.a.err, stage, errno);
    }

    /// Writes `text` to `exit` in the exit dir: write to a temp file, rename (a reader sees
    /// all of it or nothing). No fsync: the agent reads the record once this process is
    /// gone, and its checkpoint of the terminal status (fsync'd before the status goes
    /// out) is what makes the end durable. A crash of the agent leaves the file in the page
    /// cache; only a crash of the host within a few milliseconds of the task's end loses
    /// it, and then nobody had been told of the end: the restarted agent reports the task
    /// failed without an exit status. (Two fsyncs here cost ~0.6 ms per task.)
    fn write_exit(&self, text: &[u8]) {
        let dir = self.a.exit_dir;
        // SAFETY: NUL-terminated literals, a valid dir fd, a buffer of `text.len()` bytes.
        unsafe {
            let fd = openat(
                dir,
                c"exit.tmp".as_ptr(),
                O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
                0o644 as c_int,
            );
            if fd < 0 {
                return;
            }
            write(fd, text.as_ptr().cast(), text.len());
            close(fd);
            renameat(dir, c"exit.tmp".as_ptr(), dir, c"exit".as_ptr());
        }
    }

    fn keep(&self) -> Vec<c_int> {
        let a = &self.a;
        let mut keep = vec![a.go, a.err, a.null, a.stdout, a.stderr, a.exit_dir];
        keep.extend(&a.task_dirs);
        keep.extend(&a.task_files);
        keep.extend(a.supervisor_tasks);
        keep.extend(a.supervisor_dir);
        keep.extend(a.netns);
        keep.extend(a.program_fd);
        keep.sort_unstable();
        keep.dedup();
        keep
    }

    /// Closes every fd above 2 but `keep`, then marks those close-on-exec (the task gets
    /// only its stdio).
    fn tidy_fds(&self) {
        let keep = self.keep();
        let mut lo: u32 = 3;
        for &fd in &keep {
            let fd = fd as u32;
            if fd > lo {
                // SAFETY: closes fds this process does not use.
                unsafe { syscall(SYS_CLOSE_RANGE, lo, fd - 1, 0u32) };
            }
            lo = lo.max(fd + 1);
        }
        // SAFETY: as above.
        unsafe { syscall(SYS_CLOSE_RANGE, lo, u32::MAX, 0u32) };
        for &fd in &keep {
            // SAFETY: sets a flag on an fd we own.
            unsafe { fcntl(fd, F_SETFD, FD_CLOEXEC) };
        }
    }

    fn run(self) -> ! {
        // SAFETY: raw libc calls on data this process owns.
        unsafe {
            prctl(PR_SET_NAME, c"brim-supervisor".as_ptr() as c_ulong);
            // Already a session leader when the agent's clone made it one.
            setsid();
            if let Some(fd) = self.a.supervisor_tasks {
                write(fd, b"0".as_ptr().cast(), 1);
            }
            if let Some(dir) = self.a.supervisor_dir {
                if !self.a.born_in_cgroup {
                    join_cgroup2(dir);
                }
            }
            self.tidy_fds();
            for fd in 0..3 {
                dup2(self.a.null, fd);
            }
            // Out of reach of the global OOM killer: the exit status must survive.
            let adj = open(c"/proc/self/oom_score_adj".as_ptr(), O_WRONLY | O_CLOEXEC);
            if adj >= 0 {
                write(adj, b"-1000".as_ptr().cast(), 5);
                close(adj);
            }
            // Everything that needs no go-ahead is set up while the agent makes the launch
            // durable: only the task's start waits for the go byte. A failed step is
            // reported now and acted on after the go byte (or its absence), so the agent
            // reads it where it reads every setup error.
            let setup = self.prepare_namespaces();
            let mut b = [0u8; 1];
            let n = loop {
                let n = read(self.a.go, b.as_mut_ptr().cast(), 1);
                if n < 0 && errno() == EINTR {
                    continue;
                }
                break n;
            };
            close(self.a.go);
            if n != 1 || setup.is_err() {
                // The agent went away (or gave up) before the launch was checkpointed, or
                // the setup failed (reported above).
                self.write_exit(b"aborted\n");
                _exit(0);
            }
            let pid = self.start_task();
            if pid < 0 {
                let e = errno();
                let stage = match e {
                    EAGAIN | ENOMEM => Stage::Fork,
                    _ if !self.a.task_dirs.is_empty() => Stage::Cgroup,
                    _ => Stage::Fork,
                };
                self.report(stage, e);
                self.write_exit(b"aborted\n");
                _exit(0);
            }
            // The task holds the error pipe (close-on-exec) until it exec'd: the agent
            // reads EOF then, or the task's setup error.
            close(self.a.err);
            let mut set: SigSet = std::mem::zeroed();
            sigemptyset(&mut set);
            sigaddset(&mut set, SIGCHLD);
            sigaddset(&mut set, self.a.escalate);
            for s in FORWARDED {
                sigaddset(&mut set, s);
            }
            let status: c_int;
            'wait: loop {
                let sig = sigwaitinfo(&set, std::ptr::null_mut());
                if sig == SIGCHLD {
                    loop {
                        let mut st = 0;
                        let r = waitpid(-1, &mut st, WNOHANG);
                        if r <= 0 {
                            break;
                        }
                        if r == pid {
                            status = st;
                            break 'wait;
                        }
                    }
                } else if sig == self.a.escalate {
                    kill(-pid, SIGKILL);
                    if self.a.mounts.is_some() {
                        // PID 1 of the namespace: every other process in it.
                        kill(-1, SIGKILL);
                    }
                } else if sig > 0 {
                    kill(-pid, sig);
                }
            }
            let mut buf = [0u8; 40];
            buf[..5].copy_from_slice(b"exit ");
            let mut num = [0u8; 24];
            let len = format_num(i64::from(status), &mut num);
            buf[5..5 + len].copy_from_slice(&num[..len]);
            buf[5 + len] = b'\n';
            self.write_exit(&buf[..6 + len]);
            _exit(0);
        }
    }

    /// The supervisor's namespaces, before the go byte: mounts detached from its private
    /// mount namespace, the task group's network namespace joined, the task's mount
    /// namespace set up. A failure is reported on the error pipe.
    fn prepare_namespaces(&self) -> Result<(), ()> {
        if self.a.mounts.is_none() && !self.a.unmounts.is_empty() {
            if let Err(e) = self.detach_mounts() {
                self.report(Stage::Mounts, e);
                return Err(());
            }
        }
        if let Some(ns) = self.a.netns {
            // A task group's network namespace: the task starts in it.
            // SAFETY: setns/close on an fd this process owns.
            if unsafe { setns(ns, CLONE_NEWNET) } != 0 {
                self.report(Stage::Network, errno());
                return Err(());
            }
            // SAFETY: as above.
            unsafe { close(ns) };
        }
        if let Some(m) = &self.a.mounts {
            if let Err(e) = self.setup_mounts(m) {
                self.report(Stage::Mounts, e);
                return Err(());
            }
        }
        Ok(())
    }

    /// In the private mount namespace the agent's clone made: stops propagation, then
    /// detaches `unmounts` (`umount -l`; one that is not mounted is no error). Returns the
    /// errno of the failed step.
    fn detach_mounts(&self) -> Result<(), c_int> {
        // SAFETY: mount/umount2 on NUL-terminated strings.
        unsafe {
            if mount(
                c"none".as_ptr(),
                c"/".as_ptr(),
                std::ptr::null(),
                MS_REC | MS_PRIVATE,
                std::ptr::null(),
            ) != 0
            {
                return Err(errno());
            }
            for u in &self.a.unmounts {
                umount2(u.as_ptr(), MNT_DETACH);
            }
        }
        Ok(())
    }

    /// Returns the errno of the failed step.
    fn setup_mounts(&self, m: &MountPlan) -> Result<(), c_int> {
        let check = |r: c_int| if r == 0 { Ok(()) } else { Err(errno()) };
        // SAFETY: mount/mkdir/open on NUL-terminated strings.
        unsafe {
            check(mount(
                c"none".as_ptr(),
                c"/".as_ptr(),
                std::ptr::null(),
                MS_REC | MS_PRIVATE,
                std::ptr::null(),
            ))?;
            // Opened in this mount namespace (a bind source must belong to it), before the
            // tmpfs hides the path.
            let fd = open(m.sandbox.as_ptr(), O_PATH | O_DIRECTORY | O_CLOEXEC);
            if fd < 0 {
                return Err(errno());
            }
            // The volumes too, before the tmpfs hides them.
            let mut volume_fds = Vec::with_capacity(m.volumes.len());
            for (dir, _) in &m.volumes {
                let vfd = open(dir.as_ptr(), O_PATH | O_DIRECTORY | O_CLOEXEC);
                if vfd < 0 {
                    return Err(errno());
                }
                volume_fds.push(vfd);
            }
            check(mount(
                c"tmpfs".as_ptr(),
                m.work_dir.as_ptr(),
                c"tmpfs".as_ptr(),
                MS_NOSUID | MS_NODEV,
                c"mode=755,size=1m".as_ptr().cast(),
            ))?;
            for d in &m.mkdirs {
                let r = mkdir(d.as_ptr(), 0o755);
                if r != 0 && errno() != EEXIST {
                    return Err(errno());
                }
            }
            let by_fd = |fd: c_int| CString::new(format!("/proc/self/fd/{fd}")).unwrap_or_default();
            check(mount(
                by_fd(fd).as_ptr(),
                m.sandbox.as_ptr(),
                std::ptr::null(),
                MS_BIND | MS_REC,
                std::ptr::null(),
            ))?;
            close(fd);
            for ((_, target), vfd) in m.volumes.iter().zip(volume_fds) {
                check(mount(
                    by_fd(vfd).as_ptr(),
                    target.as_ptr(),
                    std::ptr::null(),
                    MS_BIND,
                    std::ptr::null(),
                ))?;
                close(vfd);
            }
            // A bind mount takes `ro` only on a remount of itself.
            for target in &m.readonly {
                check(mount(
                    std::ptr::null(),
                    target.as_ptr(),
                    std::ptr::null(),
                    MS_BIND | MS_REMOUNT | MS_RDONLY,
                    std::ptr::null(),
                ))?;
            }
            check(mount(
                c"proc".as_ptr(),
                c"/proc".as_ptr(),
                c"proc".as_ptr(),
                MS_NOSUID | MS_NODEV | MS_NOEXEC,
                std::ptr::null(),
            ))?;
        }
        Ok(())
    }

    /// Starts the task: a fork of this small process, created in its first cgroup2
    /// directory (`clone3` with `CLONE_INTO_CGROUP`) when it has one and the kernel can.
    /// Returns its pid, or -1 with errno.
    fn start_task(&self) -> pid_t {
        let dir = self.a.task_dirs.first().copied();
        if let Some(d) = dir {
            let mut args = CloneArgs {
                flags: CLONE_INTO_CGROUP,
                exit_signal: SIGCHLD as u64,
                cgroup: d as u64,
                ..CloneArgs::default()
            };
            // SAFETY: without CLONE_VM and with no stack given, clone3 is fork-like; the
            // process is single-threaded, so the child may continue normally.
            let pid = unsafe {
                syscall(
                    SYS_CLONE3,
                    std::ptr::from_mut(&mut args),
                    std::mem::size_of::<CloneArgs>(),
                )
            };
            if pid == 0 {
                self.task_main(dir);
            }
            if pid > 0 {
                return pid as pid_t;
            }
            let e = errno();
            if e != ENOSYS && e != E2BIG {
                set_errno(e);
                return -1;
            }
        }
        // SAFETY: fork of a single-threaded process.
        let pid = unsafe { fork() };
        if pid == 0 {
            self.task_main(None);
        }
        pid
    }

    /// The task between fork and exec. `born_in`: the cgroup2 directory the clone created
    /// it in. It joins its cgroups late (the cpu hierarchy last, see `cgroups::join_plan`)
    /// so that little runs at the task's own cpu share, but before the user switch and
    /// always before exec: the command never runs outside its limits.
    fn task_main(&self, born_in: Option<c_int>) -> ! {
        let a = &self.a;
        // SAFETY: raw libc calls on data allocated before the fork.
        unsafe {
            let fail = |stage: Stage| -> ! {
                self.report(stage, errno());
                _exit(127);
            };
            if setsid() == -1 {
                fail(Stage::Session);
            }
            for sig in 1..=SIGRTMAX {
                if sig != SIGKILL && sig != SIGSTOP {
                    signal(sig, SIG_DFL);
                }
            }
            let adj = open(c"/proc/self/oom_score_adj".as_ptr(), O_WRONLY | O_CLOEXEC);
            if adj >= 0 {
                write(adj, b"0".as_ptr().cast(), 1);
                close(adj);
            }
            for &(res, soft, hard) in &a.rlimits {
                let lim = Rlimit {
                    cur: soft,
                    max: hard,
                };
                if setrlimit(res, &lim) != 0 {
                    fail(Stage::Rlimit);
                }
            }
            if dup2(a.null, 0) < 0 || dup2(a.stdout, 1) < 0 || dup2(a.stderr, 2) < 0 {
                fail(Stage::Stdio);
            }
            for &dir in &a.task_dirs {
                if Some(dir) != born_in && !join_cgroup2(dir) {
                    fail(Stage::Cgroup);
                }
            }
            for &fd in &a.task_files {
                if write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    fail(Stage::Cgroup);
                }
            }
            if let Some((uid, gid, groups)) = &a.user {
                if setgroups(groups.len(), groups.as_ptr()) != 0
                    || setresgid(*gid, *gid, *gid) != 0
                    || setresuid(*uid, *uid, *uid) != 0
                {
                    fail(Stage::User);
                }
            }
            if chdir(a.cwd.as_ptr()) != 0 {
                fail(Stage::Chdir);
            }
            let mut none: SigSet = std::mem::zeroed();
            sigemptyset(&mut none);
            sigprocmask(SIG_SETMASK, &none, std::ptr::null_mut());
            match a.program_fd {
                // A sealed copy of the program (an OCI runtime): exec'd through its fd,
                // close-on-exec like every fd kept, which an ELF program does not need.
                Some(fd) => execveat(
                    fd,
                    c"".as_ptr(),
                    self.argv.as_ptr(),
                    self.envp.as_ptr(),
                    AT_EMPTY_PATH,
                ),
                None => execve(a.program.as_ptr(), self.argv.as_ptr(), self.envp.as_ptr()),
            };
            fail(Stage::Exec);
        }
    }
}
