//! Every raw libc / nix call the agent makes lives here, so the rest of the crate is plain
//! Rust that can be tested without root.
//!
//! Architecture Invariant: no other module of `brim-agent` contains `unsafe` or calls libc.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;

use nix::errno::Errno;
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

/// Sends `sig` to the process group `pgid`. A group that no longer exists is not an error.
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
