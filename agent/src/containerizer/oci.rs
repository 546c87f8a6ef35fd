//! The `oci` containerizer: provisions the task's image (`store.rs`), writes an OCI runtime
//! bundle (`config.json` + `rootfs/`) and has the task's supervisor run `crun run` (or
//! `runc run`) in the foreground as the task's process.
//!
//! Placement in brim's cgroups: the supervisor joins the task's cgroups before it execs the
//! runtime, and crun runs with `--cgroup-manager=disabled`, so the container's processes
//! inherit exactly the cgroups native tasks get (limits, eBPF counters, OOM accounting).
//! crun 1.8 refuses any cgroup work on hybrid hosts whose cgroup2 tree has a controller
//! (`cgroups in hybrid mode not supported`), even with the manager disabled; on such hosts
//! crun runs in a private mount namespace where `/sys/fs/cgroup/unified` is unmounted, so
//! it sees a legacy layout (nothing else changes: cgroup membership is per process, not
//! per mount). runc has no disabled manager: it is given the task's cgroup as
//! `linux.cgroupsPath` and joins it itself.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use super::manifest::ImageConfig;
use super::store::{ImageStore, StoreConfig};
use super::{ContainerizerError, LaunchRequest, Prepared, SealedProgram};

/// Where the container sees its sandbox (Mesos' path).
pub const SANDBOX_IN_CONTAINER: &str = "/mnt/mesos/sandbox";
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Which OCI runtime.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuntimeKind {
    Crun,
    Runc,
}

/// A resolved OCI runtime binary.
#[derive(Clone, Debug)]
pub struct Runtime {
    pub kind: RuntimeKind,
    pub path: PathBuf,
}

/// Finds `name` (`crun`, `runc` or a path) on `PATH`.
pub fn find_runtime(name: &str) -> Result<Runtime, String> {
    let kind = if Path::new(name)
        .file_name()
        .is_some_and(|f| f.to_string_lossy().contains("runc"))
    {
        RuntimeKind::Runc
    } else {
        RuntimeKind::Crun
    };
    let path = find_program(name).ok_or_else(|| {
        format!("OCI runtime `{name}` not found on this agent: install it (Debian package `crun` or `runc`) or pass its path with --oci-runtime")
    })?;
    Ok(Runtime { kind, path })
}

fn find_program(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return p.is_file().then_some(p);
    }
    let path = std::env::var("PATH").unwrap_or_else(|_| DEFAULT_PATH.into());
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// The runtime binary copied into a sealed memfd once, exec'd by every container's
/// supervisor. On every start crun and runc otherwise copy themselves into a memfd (or
/// bind-mount themselves read-only) before anything else, so a container cannot overwrite
/// the host's runtime through `/proc/self/exe` (CVE-2019-5736); they skip that when
/// `/proc/self/exe` already is a fully sealed memfd — the copy made here, shared by all
/// launches. Re-made when the file on disk changes (a runtime upgrade).
#[derive(Debug, Default)]
struct SealedRuntime {
    current: std::sync::Mutex<Option<(FileIdentity, SealedProgram)>>,
}

/// What tells one version of a file from the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileIdentity {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
}

impl FileIdentity {
    fn of(m: &std::fs::Metadata) -> FileIdentity {
        use std::os::unix::fs::MetadataExt;
        FileIdentity {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        }
    }
}

impl SealedRuntime {
    /// The sealed copy of `path`, made now if there is none or the file changed.
    fn get(&self, path: &Path) -> std::io::Result<SealedProgram> {
        let id = FileIdentity::of(&std::fs::metadata(path)?);
        let mut current = self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((have, program)) = current.as_ref() {
            if *have == id {
                return Ok(program.clone());
            }
        }
        let mut file = std::fs::File::open(path)?;
        // Named after the runtime: its processes show as `memfd:crun` in ps/top.
        let name = path
            .file_name()
            .and_then(|n| std::ffi::CString::new(n.as_encoded_bytes()).ok())
            .unwrap_or_else(|| c"oci-runtime".to_owned());
        let copy = SealedProgram(std::sync::Arc::new(crate::sys::sealed_executable(
            &name, &mut file,
        )?));
        // Copied from the file we stat'ed, unless it was replaced meanwhile: then the
        // next launch sees a new identity and copies again.
        let id = FileIdentity::of(&file.metadata()?);
        *current = Some((id, copy.clone()));
        Ok(copy)
    }
}

/// Settings of the OCI containerizer.
#[derive(Clone, Debug)]
pub struct OciConfig {
    /// `crun`, `runc`, or a path to either.
    pub runtime: String,
    pub store: StoreConfig,
    /// cgroup2 is mounted at `/sys/fs/cgroup/unified` beside v1 controllers.
    pub hybrid_cgroups: bool,
    /// The agent's root cgroup directories (`CgroupBackend::root_paths`): runc creates the
    /// container's cgroup in every v1 hierarchy, and its empty parents are removed only in
    /// the hierarchies the agent does not manage.
    pub cgroup_roots: Vec<PathBuf>,
}

/// The OCI containerizer.
#[derive(Debug)]
pub struct OciContainerizer {
    runtime: Result<Runtime, String>,
    store: ImageStore,
    /// `--root` of the runtime (its state), `<work_dir>/oci/runtime`.
    state_dir: PathBuf,
    hybrid: bool,
    cgroup_roots: Vec<PathBuf>,
    sealed: SealedRuntime,
}

impl OciContainerizer {
    pub fn new(config: OciConfig, fetcher: std::sync::Arc<crate::fetcher::Fetcher>) -> Self {
        let state_dir = config.store.root.join("runtime");
        OciContainerizer {
            runtime: find_runtime(&config.runtime),
            store: ImageStore::new(config.store, fetcher),
            state_dir,
            hybrid: config.hybrid_cgroups,
            cgroup_roots: config.cgroup_roots,
            sealed: SealedRuntime::default(),
        }
    }

    pub fn store(&self) -> &ImageStore {
        &self.store
    }

    fn runtime(&self) -> Result<&Runtime, ContainerizerError> {
        self.runtime
            .as_ref()
            .map_err(|e| ContainerizerError::Runtime(e.clone()))
    }

    /// The supervisor's program and argv for `<runtime> run` of the bundle `bundle`, and the
    /// mounts to detach in the supervisor's private mount namespace first: on a hybrid host,
    /// crun must not see the cgroup2 mount (docs/CONTAINERIZERS.md). The supervisor does
    /// that itself, rather than through `unshare`, `sh` and `umount` (three more programs
    /// exec'd per launch, at the task's cpu share).
    fn command(
        &self,
        rt: &Runtime,
        bundle: &Path,
        id: &str,
    ) -> (String, Vec<String>, Vec<PathBuf>) {
        let rt_path = rt.path.display().to_string();
        let state = self.state_dir.display().to_string();
        let bundle = bundle.display().to_string();
        let mut run = vec![rt_path.clone(), "--root".into(), state];
        if rt.kind == RuntimeKind::Crun {
            run.push("--cgroup-manager=disabled".into());
        }
        run.extend(["run".into(), "--bundle".into(), bundle, id.to_string()]);
        let unmounts = if rt.kind == RuntimeKind::Crun && self.hybrid {
            vec![PathBuf::from("/sys/fs/cgroup/unified")]
        } else {
            Vec::new()
        };
        (rt_path, run, unmounts)
    }

    /// The argv that runs a command (appended to it) inside the running container `id`
    /// through the runtime's `exec`: in the container's namespaces and root filesystem, as
    /// its user, with its environment, in its sandbox. Health checks of OCI tasks use it.
    pub fn exec_argv(&self, id: &str) -> Result<Vec<String>, ContainerizerError> {
        Ok(exec_argv(self.runtime()?, &self.state_dir, id))
    }

    /// Prepares the bundle of one container and the supervisor's command (blocking).
    pub fn prepare(&self, req: &LaunchRequest<'_>) -> Result<Prepared, ContainerizerError> {
        let rt = self.runtime()?.clone();
        let image = super::container_of(req.info)
            .and_then(|c| c.image.clone())
            .filter(|i| !i.uri.is_empty())
            .ok_or(ContainerizerError::NoImage)?;
        let provisioned = self.store.provision(&image, req.container_id)?;
        let args = process_args(req.command, &provisioned.config)?;
        let env = container_env(&req.env, req.sandbox, &provisioned.config);
        let user = req.user.map(|u| (u.uid, u.gid, u.groups.clone()));
        let cgroups_path = (rt.kind == RuntimeKind::Runc)
            .then(|| req.cgroup_path.clone())
            .flatten();
        let spec = runtime_spec(&SpecInput {
            args,
            env,
            cwd: provisioned
                .config
                .working_dir
                .clone()
                .filter(|w| !w.is_empty() && req.command.value.is_empty())
                .unwrap_or_else(|| SANDBOX_IN_CONTAINER.into()),
            user,
            sandbox: req.sandbox.to_path_buf(),
            hostname: format!(
                "brim-{}",
                &req.container_id[..req.container_id.len().min(12)]
            ),
            cgroups_path,
            volumes: req.volumes.iter().map(spec_volume).collect(),
        });
        let bundle = self.store.container_dir(req.container_id);
        let config = bundle.join("config.json");
        let text = serde_json::to_vec_pretty(&spec).map_err(|e| ContainerizerError::Io {
            action: "encode",
            path: config.clone(),
            source: std::io::Error::other(e),
        })?;
        std::fs::write(&config, text).map_err(|source| ContainerizerError::Io {
            action: "write",
            path: config.clone(),
            source,
        })?;
        std::fs::create_dir_all(&self.state_dir).map_err(|source| ContainerizerError::Io {
            action: "create",
            path: self.state_dir.clone(),
            source,
        })?;
        let (program, argv, private_unmounts) = self.command(&rt, &bundle, req.container_id);
        let program_fd = match self.sealed.get(&rt.path) {
            Ok(p) => Some(p),
            Err(e) => {
                // Still runs: the runtime then makes its own copy, as it does by itself.
                tracing::warn!(runtime = %rt.path.display(), error = %e,
                    "cannot copy the OCI runtime into a sealed memfd; running it from disk");
                None
            }
        };
        Ok(Prepared {
            program,
            argv,
            env: vec![("PATH".into(), DEFAULT_PATH.into())],
            // The runtime needs root; the container's process runs as the task's user.
            run_as_task_user: false,
            namespaces: false,
            private_unmounts,
            program_fd,
        })
    }

    /// Deletes the runtime's state of the container (if the runtime was killed) and its
    /// bundle (unmounting the rootfs). Blocking.
    pub fn destroy(&self, id: &str) -> Result<(), ContainerizerError> {
        if self.state_dir.join(id).exists() {
            if let Ok(rt) = self.runtime() {
                let _ = Command::new(&rt.path)
                    .arg("--root")
                    .arg(&self.state_dir)
                    .args(["delete", "--force", id])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .status();
            }
            let _ = std::fs::remove_dir_all(self.state_dir.join(id));
        }
        self.remove_runtime_cgroups(&self.store.container_dir(id));
        self.store.release(id)?;
        Ok(())
    }

    /// runc (`linux.cgroupsPath`) creates the container's cgroup in every v1 hierarchy, the
    /// ones brim does not use included, and cannot remove them while it still sits in them:
    /// removes the (empty) leaves everywhere, and their empty parents outside brim's roots.
    fn remove_runtime_cgroups(&self, bundle: &Path) {
        let Ok(text) = std::fs::read(bundle.join("config.json")) else {
            return;
        };
        let Some(rel) = serde_json::from_slice::<Value>(&text)
            .ok()
            .and_then(|v| v["linux"]["cgroupsPath"].as_str().map(str::to_string))
            .and_then(|p| {
                super::layer::normalize(p.trim_start_matches('/').as_bytes())
                    .ok()
                    .flatten()
            })
        else {
            return;
        };
        let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
            return;
        };
        for h in hierarchies.flatten().map(|e| e.path()) {
            if std::fs::remove_dir(h.join(&rel)).is_err() {
                continue;
            }
            let mut parent = rel.parent();
            while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
                let dir = h.join(p);
                if self.cgroup_roots.iter().any(|r| r.starts_with(&dir)) {
                    break;
                }
                if std::fs::remove_dir(&dir).is_err() {
                    break;
                }
                parent = p.parent();
            }
        }
    }

    /// Destroys the containers no live task owns (after an agent restart).
    pub fn recover(&self, live: &HashSet<String>) -> Vec<String> {
        self.store.remove_partial();
        let mut removed = Vec::new();
        for id in self.store.containers() {
            if !live.contains(&id) {
                match self.destroy(&id) {
                    Ok(()) => removed.push(id),
                    Err(e) => {
                        tracing::warn!(container = %id, error = %e, "cannot remove a leftover OCI container")
                    }
                }
            }
        }
        self.store.evict(&HashSet::new());
        removed
    }
}

/// The container's argv: the task's command when it has one (shell commands through the
/// image's `/bin/sh`), else the image's entrypoint + cmd.
/// `<runtime> --root <state> exec --cwd <sandbox> <id>`. crun runs with its
/// cgroup manager disabled (the agent placed the container; the caller puts the exec'd
/// process into the task's cgroups).
fn exec_argv(rt: &Runtime, state_dir: &Path, id: &str) -> Vec<String> {
    let mut argv = vec![
        rt.path.display().to_string(),
        "--root".into(),
        state_dir.display().to_string(),
    ];
    if rt.kind == RuntimeKind::Crun {
        argv.push("--cgroup-manager=disabled".into());
    }
    argv.extend(["exec", "--cwd", SANDBOX_IN_CONTAINER, id].map(String::from));
    argv
}

pub fn process_args(
    command: &brim_proto::v1::CommandInfo,
    image: &ImageConfig,
) -> Result<Vec<String>, ContainerizerError> {
    let args = if command.value.is_empty() {
        let mut a = image.entrypoint.clone().unwrap_or_default();
        a.extend(image.cmd.clone().unwrap_or_default());
        a
    } else if command.shell {
        vec!["/bin/sh".into(), "-c".into(), command.value.clone()]
    } else if command.arguments.is_empty() {
        vec![command.value.clone()]
    } else {
        // Mesos: `value` is the executable, `arguments` its argv (argv[0] included); OCI
        // runtimes exec args[0], so the value goes first.
        let mut a = vec![command.value.clone()];
        a.extend(command.arguments.iter().skip(1).cloned());
        a
    };
    if args.is_empty() {
        return Err(ContainerizerError::NoCommand);
    }
    if args.iter().any(|a| a.contains('\0')) {
        return Err(ContainerizerError::Nul);
    }
    Ok(args)
}

/// The container's environment: the image's, then the task's (which wins), with the host
/// sandbox path replaced by [`SANDBOX_IN_CONTAINER`] and the agent's PATH by the image's.
pub fn container_env(
    task: &[(String, String)],
    sandbox: &Path,
    image: &ImageConfig,
) -> Vec<String> {
    let host_sandbox = sandbox.display().to_string();
    let mut env: Vec<(String, String)> = image
        .env
        .iter()
        .flatten()
        .filter_map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    let image_path = env.iter().any(|(k, _)| k == "PATH");
    for (k, v) in task {
        if k == "PATH" && image_path {
            continue;
        }
        let v = if *v == host_sandbox {
            SANDBOX_IN_CONTAINER.to_string()
        } else {
            v.clone()
        };
        env.retain(|(n, _)| n != k);
        env.push((k.clone(), v));
    }
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.push(("PATH".into(), DEFAULT_PATH.into()));
    }
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// A validated volume as the runtime spec's mount: (source on the host, destination in the
/// container, read-only). Sandbox targets land under [`SANDBOX_IN_CONTAINER`].
pub fn spec_volume(b: &crate::volumes::Bind) -> (String, String, bool) {
    let destination = match &b.target {
        crate::volumes::Target::Sandbox(rel) => Path::new(SANDBOX_IN_CONTAINER).join(rel),
        crate::volumes::Target::Container(abs) => abs.clone(),
    };
    (
        b.source.display().to_string(),
        destination.display().to_string(),
        b.readonly,
    )
}

/// Everything the runtime spec depends on.
#[derive(Clone, Debug)]
pub struct SpecInput {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    /// (uid, gid, supplementary gids); `None` = root in the container.
    pub user: Option<(u32, u32, Vec<u32>)>,
    /// The host sandbox, bind-mounted at [`SANDBOX_IN_CONTAINER`].
    pub sandbox: PathBuf,
    pub hostname: String,
    /// `linux.cgroupsPath` (runc only).
    pub cgroups_path: Option<String>,
    /// Volumes (source, destination, read-only), mounted after the sandbox.
    pub volumes: Vec<(String, String, bool)>,
}

/// The OCI runtime spec (`config.json`) of a task container (pure). Host network (like
/// native tasks), own PID, mount, IPC and UTS namespaces, Docker's default capabilities,
/// no new privileges, the sandbox mounted read-write; rlimits are the supervisor's
/// (inherited through the runtime).
pub fn runtime_spec(s: &SpecInput) -> Value {
    let caps = [
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_FSETID",
        "CAP_FOWNER",
        "CAP_MKNOD",
        "CAP_NET_RAW",
        "CAP_SETGID",
        "CAP_SETUID",
        "CAP_SETFCAP",
        "CAP_SETPCAP",
        "CAP_NET_BIND_SERVICE",
        "CAP_SYS_CHROOT",
        "CAP_KILL",
        "CAP_AUDIT_WRITE",
    ];
    let (uid, gid, groups) = s.user.clone().unwrap_or((0, 0, Vec::new()));
    let mut linux = json!({
        "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}],
        "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
            "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
            "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
        "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
            "/proc/sysrq-trigger"],
    });
    if let Some(p) = &s.cgroups_path {
        linux["cgroupsPath"] = json!(p);
    }
    let mut spec = json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": uid, "gid": gid, "additionalGids": groups},
            "args": s.args,
            "env": s.env,
            "cwd": s.cwd,
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "noNewPrivileges": true,
        },
        "root": {"path": "rootfs", "readonly": false},
        "hostname": s.hostname,
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": SANDBOX_IN_CONTAINER, "type": "bind",
             "source": s.sandbox.display().to_string(), "options": ["rbind", "rw"]},
        ],
        "linux": linux,
    });
    if let Some(mounts) = spec["mounts"].as_array_mut() {
        for (source, destination, readonly) in &s.volumes {
            let mode = if *readonly { "ro" } else { "rw" };
            mounts.push(json!({"destination": destination, "type": "bind",
                "source": source, "options": ["rbind", "rprivate", mode]}));
        }
    }
    spec
}

#[cfg(test)]
mod tests {
    use super::*;
    use brim_proto::v1::CommandInfo;

    /// Runs the sealed program through its fd, as the supervisor's `execveat` does.
    fn run_sealed(p: &SealedProgram) -> std::process::ExitStatus {
        use std::os::fd::AsRawFd;
        Command::new(format!("/proc/self/fd/{}", p.0.as_raw_fd()))
            .status()
            .expect("exec the sealed copy")
    }

    #[test]
    fn sealed_runtime_is_one_fully_sealed_copy_until_the_file_changes() {
        use std::os::fd::AsRawFd;
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = dir.path().join("crun");
        std::fs::copy("/bin/true", &rt).expect("copy /bin/true");
        let sealed = SealedRuntime::default();
        let a = sealed.get(&rt).expect("sealed copy");
        assert_eq!(
            sealed.get(&rt).expect("again"),
            a,
            "one copy for every launch"
        );
        // SAFETY: fcntl on an fd the test owns.
        let seals = unsafe { libc::fcntl(a.0.as_raw_fd(), libc::F_GET_SEALS) };
        // Exactly the set crun and runc check before skipping their own copy.
        assert_eq!(
            seals,
            libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE
        );
        assert!(run_sealed(&a).success());
        // An upgrade replaces the file: the next launch gets a fresh copy of the new one.
        std::fs::remove_file(&rt).expect("rm");
        std::fs::copy("/bin/false", &rt).expect("copy /bin/false");
        let b = sealed.get(&rt).expect("new copy");
        assert_ne!(b, a);
        assert!(!run_sealed(&b).success(), "the copy is of the new file");
        // The old copy stays valid for launches that hold it.
        assert!(run_sealed(&a).success());
        std::fs::remove_file(&rt).expect("rm");
        assert!(sealed.get(&rt).is_err(), "a missing runtime is an error");
    }

    #[test]
    fn args_from_command_or_image() {
        let img = ImageConfig {
            entrypoint: Some(vec!["/bin/app".into()]),
            cmd: Some(vec!["--serve".into()]),
            ..Default::default()
        };
        let shell = CommandInfo {
            shell: true,
            value: "echo hi".into(),
            ..Default::default()
        };
        assert_eq!(
            process_args(&shell, &img).expect("shell"),
            ["/bin/sh", "-c", "echo hi"]
        );
        assert_eq!(
            process_args(&CommandInfo::default(), &img).expect("image"),
            ["/bin/app", "--serve"]
        );
        let exec = CommandInfo {
            value: "/bin/echo".into(),
            arguments: vec!["echo".into(), "a".into()],
            ..Default::default()
        };
        assert_eq!(process_args(&exec, &img).expect("exec"), ["/bin/echo", "a"]);
        assert!(process_args(&CommandInfo::default(), &ImageConfig::default()).is_err());
    }

    #[test]
    fn env_maps_the_sandbox_and_keeps_the_image_path() {
        let img = ImageConfig {
            env: Some(vec!["PATH=/img/bin".into(), "A=1".into()]),
            ..Default::default()
        };
        let task = vec![
            ("PATH".to_string(), "/agent/bin".to_string()),
            ("MESOS_SANDBOX".to_string(), "/w/s/t".to_string()),
            ("A".to_string(), "2".to_string()),
        ];
        let env = container_env(&task, Path::new("/w/s/t"), &img);
        assert!(env.contains(&"PATH=/img/bin".to_string()));
        assert!(env.contains(&"MESOS_SANDBOX=/mnt/mesos/sandbox".to_string()));
        assert!(env.contains(&"A=2".to_string()));
        assert!(!env.contains(&"A=1".to_string()));
    }

    #[test]
    fn spec_shape() {
        let s = runtime_spec(&SpecInput {
            args: vec!["/bin/sh".into()],
            env: vec!["PATH=/bin".into()],
            cwd: SANDBOX_IN_CONTAINER.into(),
            user: Some((65534, 65534, vec![])),
            sandbox: "/w/s".into(),
            hostname: "brim-x".into(),
            cgroups_path: None,
            volumes: vec![
                spec_volume(&crate::volumes::Bind {
                    source: "/data/ro".into(),
                    target: crate::volumes::Target::Container("/opt/ro".into()),
                    readonly: true,
                }),
                spec_volume(&crate::volumes::Bind {
                    source: "/w/volumes/db/v".into(),
                    target: crate::volumes::Target::Sandbox("data/pg".into()),
                    readonly: false,
                }),
            ],
        });
        let mounts = s["mounts"].as_array().expect("mounts");
        let n = mounts.len();
        assert_eq!(mounts[n - 3]["destination"], SANDBOX_IN_CONTAINER);
        assert_eq!(
            mounts[n - 2],
            json!({"destination": "/opt/ro", "type": "bind", "source": "/data/ro",
                "options": ["rbind", "rprivate", "ro"]})
        );
        assert_eq!(
            mounts[n - 1]["destination"],
            "/mnt/mesos/sandbox/data/pg",
            "after the sandbox, so it is not hidden by it"
        );
        assert_eq!(s["process"]["user"]["uid"], 65534);
        assert_eq!(s["root"]["path"], "rootfs");
        assert!(s["linux"].get("cgroupsPath").is_none());
        let ns: Vec<&str> = s["linux"]["namespaces"]
            .as_array()
            .expect("namespaces")
            .iter()
            .filter_map(|n| n["type"].as_str())
            .collect();
        assert!(!ns.contains(&"network"), "host network like native tasks");
        assert!(!ns.contains(&"cgroup"));
        assert!(
            s["mounts"]
                .as_array()
                .expect("mounts")
                .iter()
                .all(|m| m["type"] != "cgroup"),
            "no cgroup mount (crun refuses it on hybrid hosts)"
        );
    }

    #[test]
    fn exec_argv_enters_the_container_in_its_sandbox() {
        let crun = Runtime {
            kind: RuntimeKind::Crun,
            path: "/usr/bin/crun".into(),
        };
        let argv = exec_argv(&crun, Path::new("/w/oci/runtime"), "c1");
        assert_eq!(
            argv,
            [
                "/usr/bin/crun",
                "--root",
                "/w/oci/runtime",
                "--cgroup-manager=disabled",
                "exec",
                "--cwd",
                "/mnt/mesos/sandbox",
                "c1",
            ]
        );
        let runc = Runtime {
            kind: RuntimeKind::Runc,
            path: "/usr/sbin/runc".into(),
        };
        let argv = exec_argv(&runc, Path::new("/r"), "c2");
        assert_eq!(argv[..4], ["/usr/sbin/runc", "--root", "/r", "exec"]);
    }

    #[test]
    fn missing_runtime_is_a_clear_error() {
        let e = find_runtime("brim-no-such-runtime").expect_err("missing");
        assert!(e.contains("not found"), "{e}");
        assert!(find_runtime("/nonexistent/runc").is_err());
        assert_eq!(
            find_runtime("/bin/sh").map(|r| r.kind),
            Ok(RuntimeKind::Crun)
        );
    }
}
