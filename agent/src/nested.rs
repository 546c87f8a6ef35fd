//! Nested containers: a debug or sidecar process started inside a running task (Mesos's
//! agent API calls `LAUNCH_NESTED_CONTAINER`, `WAIT_NESTED_CONTAINER`,
//! `KILL_NESTED_CONTAINER`, `REMOVE_NESTED_CONTAINER` on `POST /api/v1`).
//!
//! A nested container's parent is a running task, named by its container id (the
//! `container_id` the agent's `/state` shows, `BRIM_CONTAINER_ID` in the task's environment).
//! The nested process joins the task's namespaces (`nsenter` into its supervisor's, or the
//! OCI runtime's `exec` into its container), runs as the task's user with the sandbox as
//! working directory, writes `<sandbox>/containers/<id>/{stdout,stderr}`, and sits in its own
//! cgroup `<task cgroup>/nested/<id>` in every hierarchy. That cgroup enables no controller
//! of its own, so the kernel charges it to the task's (the task's limits cap the total) and
//! cgroup v2's no-internal-processes rule never applies; it has its own cgroup id, so the
//! eBPF counters tell it apart. Nested containers end with their task and are not
//! checkpointed: an agent restart kills them (docs/CONTAINERIZERS.md, "Nested containers").
//!
//! [`parse`] and [`Registry`] are the pure core; [`api`] is the HTTP shell.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::agent::Agent;

/// Largest request body of the agent API.
pub(crate) const MAX_BODY: usize = 64 * 1024;
/// Nested containers one task may have at a time (running or ended and not removed).
pub(crate) const MAX_PER_PARENT: usize = 64;
/// Child of a task's cgroup (every hierarchy) holding its nested containers' cgroups.
pub(crate) const CGROUP_DIR: &str = "nested";
/// Directory of the task's sandbox holding one directory per nested container.
pub(crate) const SANDBOX_DIR: &str = "containers";
/// The task's token for the agent API, relative to its sandbox (mode 0600, the task's).
pub(crate) const TOKEN_FILE: &str = ".brim/agent-token";
/// The agent API for the task itself, relative to its sandbox: a unix socket serving only
/// this task's nested containers (reachable from any network namespace).
pub(crate) const SOCKET_FILE: &str = ".brim/agent.sock";
/// Most arguments or environment variables of one nested command.
const MAX_ARGS: usize = 1024;

/// A call the API understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Launch {
        parent: String,
        id: String,
        /// Program and arguments (a shell command is `/bin/sh -c …`).
        argv: Vec<String>,
        env: Vec<(String, String)>,
    },
    Wait {
        parent: String,
        id: String,
    },
    Kill {
        parent: String,
        id: String,
        signal: i32,
    },
    Remove {
        parent: String,
        id: String,
    },
}

impl Request {
    /// The nested container the call is about.
    pub fn id(&self) -> &str {
        match self {
            Request::Launch { id, .. }
            | Request::Wait { id, .. }
            | Request::Kill { id, .. }
            | Request::Remove { id, .. } => id,
        }
    }

    /// The parent container the call is about.
    pub fn parent(&self) -> &str {
        match self {
            Request::Launch { parent, .. }
            | Request::Wait { parent, .. }
            | Request::Kill { parent, .. }
            | Request::Remove { parent, .. } => parent,
        }
    }
}

/// Why a call was refused; each maps to an HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Internal(String),
}

impl CallError {
    pub fn status(&self) -> StatusCode {
        match self {
            CallError::BadRequest(_) => StatusCode::BAD_REQUEST,
            CallError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            CallError::NotFound(_) => StatusCode::NOT_FOUND,
            CallError::Conflict(_) => StatusCode::CONFLICT,
            CallError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

#[derive(Debug, Deserialize)]
struct Call {
    #[serde(rename = "type")]
    kind: Option<String>,
    launch_nested_container: Option<LaunchBody>,
    wait_nested_container: Option<IdBody>,
    kill_nested_container: Option<KillBody>,
    remove_nested_container: Option<IdBody>,
}

#[derive(Debug, Deserialize)]
struct ContainerId {
    value: String,
    parent: Option<Box<ContainerId>>,
}

#[derive(Debug, Deserialize)]
struct LaunchBody {
    container_id: ContainerId,
    command: Option<Command>,
    container: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct IdBody {
    container_id: ContainerId,
}

#[derive(Debug, Deserialize)]
struct KillBody {
    container_id: ContainerId,
    signal: Option<i32>,
}

#[derive(Debug, Deserialize)]
struct Command {
    value: Option<String>,
    shell: Option<bool>,
    #[serde(default)]
    arguments: Vec<String>,
    environment: Option<Environment>,
}

#[derive(Debug, Deserialize)]
struct Environment {
    #[serde(default)]
    variables: Vec<Variable>,
}

#[derive(Debug, Deserialize)]
struct Variable {
    name: String,
    #[serde(default)]
    value: String,
}

/// A nested container's id (also a cgroup and a directory name): short and plain.
pub fn check_nested_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 64 || id == "." || id == ".." {
        return Err(format!(
            "nested container id `{id}` must be 1 to 64 characters (not `.` or `..`)"
        ));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "nested container id `{id}` contains `{c}`: use letters, digits, `.`, `_`, `-`"
        ));
    }
    Ok(())
}

/// `container_id` with exactly one parent: (parent, id).
fn ids(c: &ContainerId) -> Result<(String, String), CallError> {
    let Some(parent) = &c.parent else {
        return Err(CallError::BadRequest(
            "container_id.parent is missing: name the task's container (its container_id in the agent's /state, BRIM_CONTAINER_ID in the task)".into(),
        ));
    };
    if parent.parent.is_some() {
        return Err(CallError::BadRequest(
            "container_id.parent has a parent itself: brim nests one level, under a task's container".into(),
        ));
    }
    check_nested_id(&c.value).map_err(CallError::BadRequest)?;
    crate::cgroups::check_name(&parent.value).map_err(|_| {
        CallError::BadRequest(format!(
            "container_id.parent.value `{}` is not a container id",
            parent.value
        ))
    })?;
    Ok((parent.value.clone(), c.value.clone()))
}

fn argv_of(c: &Command) -> Result<Vec<String>, CallError> {
    let value = c.value.clone().unwrap_or_default();
    let argv = if c.shell.unwrap_or(true) {
        if value.is_empty() {
            return Err(CallError::BadRequest(
                "launch_nested_container.command.value is empty: give a shell command".into(),
            ));
        }
        vec!["/bin/sh".into(), "-c".into(), value]
    } else if value.is_empty() {
        return Err(CallError::BadRequest(
            "launch_nested_container.command.value is empty: give the program to run".into(),
        ));
    } else {
        // Mesos: `value` is the executable, `arguments` its argv (argv[0] included).
        std::iter::once(value)
            .chain(c.arguments.iter().skip(1).cloned())
            .collect()
    };
    if argv.len() > MAX_ARGS {
        return Err(CallError::BadRequest(format!(
            "more than {MAX_ARGS} arguments"
        )));
    }
    if argv.iter().any(|a| a.contains('\0')) {
        return Err(CallError::BadRequest(
            "an argument contains a NUL byte".into(),
        ));
    }
    Ok(argv)
}

fn env_of(c: &Command) -> Result<Vec<(String, String)>, CallError> {
    let vars = c
        .environment
        .as_ref()
        .map(|e| e.variables.as_slice())
        .unwrap_or_default();
    if vars.len() > MAX_ARGS {
        return Err(CallError::BadRequest(format!(
            "more than {MAX_ARGS} environment variables"
        )));
    }
    vars.iter()
        .map(|v| {
            if v.name.is_empty() || v.name.contains(['=', '\0']) || v.value.contains('\0') {
                Err(CallError::BadRequest(format!(
                    "environment variable `{}` is not valid: a name without `=` or NUL, a value without NUL",
                    v.name.escape_debug()
                )))
            } else {
                Ok((v.name.clone(), v.value.clone()))
            }
        })
        .collect()
}

/// Decodes one JSON call of the agent API.
pub fn parse(body: &[u8]) -> Result<Request, CallError> {
    let call: Call = serde_json::from_slice(body).map_err(|e| {
        CallError::BadRequest(format!(
            "malformed call: {e}: send JSON like {{\"type\":\"LAUNCH_NESTED_CONTAINER\",\"launch_nested_container\":{{…}}}}"
        ))
    })?;
    let kind = call.kind.unwrap_or_default();
    let missing = |field: &str| CallError::BadRequest(format!("{kind} call without `{field}`"));
    match kind.as_str() {
        "LAUNCH_NESTED_CONTAINER" => {
            let l = call
                .launch_nested_container
                .ok_or_else(|| missing("launch_nested_container"))?;
            let (parent, id) = ids(&l.container_id)?;
            if l.container.is_some() {
                return Err(CallError::BadRequest(
                    "launch_nested_container.container is not supported: a nested container runs in its parent's container (image, volumes)".into(),
                ));
            }
            let command = l
                .command
                .ok_or_else(|| missing("launch_nested_container.command"))?;
            Ok(Request::Launch {
                parent,
                id,
                argv: argv_of(&command)?,
                env: env_of(&command)?,
            })
        }
        "WAIT_NESTED_CONTAINER" => {
            let w = call
                .wait_nested_container
                .ok_or_else(|| missing("wait_nested_container"))?;
            let (parent, id) = ids(&w.container_id)?;
            Ok(Request::Wait { parent, id })
        }
        "KILL_NESTED_CONTAINER" => {
            let k = call
                .kill_nested_container
                .ok_or_else(|| missing("kill_nested_container"))?;
            let (parent, id) = ids(&k.container_id)?;
            let signal = k.signal.unwrap_or(libc::SIGKILL);
            if nix::sys::signal::Signal::try_from(signal).is_err() {
                return Err(CallError::BadRequest(format!(
                    "kill_nested_container.signal {signal} is not a signal"
                )));
            }
            Ok(Request::Kill { parent, id, signal })
        }
        "REMOVE_NESTED_CONTAINER" => {
            let r = call
                .remove_nested_container
                .ok_or_else(|| missing("remove_nested_container"))?;
            let (parent, id) = ids(&r.container_id)?;
            Ok(Request::Remove { parent, id })
        }
        "" => Err(CallError::BadRequest(
            "call without `type`: use LAUNCH_NESTED_CONTAINER, WAIT_NESTED_CONTAINER, KILL_NESTED_CONTAINER or REMOVE_NESTED_CONTAINER".into(),
        )),
        other => Err(CallError::BadRequest(format!(
            "call type `{other}` is not supported by brim's agent API: use LAUNCH_NESTED_CONTAINER, WAIT_NESTED_CONTAINER, KILL_NESTED_CONTAINER or REMOVE_NESTED_CONTAINER"
        ))),
    }
}

/// The cgroup directories of nested container `id` of a task whose cgroups are `parent`.
pub(crate) fn cgroup_dirs(parent: &[PathBuf], id: &str) -> Vec<PathBuf> {
    parent.iter().map(|p| p.join(CGROUP_DIR).join(id)).collect()
}

/// Creates the nested container's cgroups under the task's. Nothing is written to any
/// `cgroup.subtree_control`: the nested cgroup has no controller of its own (pure cgroup2
/// forbids enabling controllers below a cgroup holding processes, and the task's processes
/// stay where they are); the kernel charges it to the task's cgroup, whose limits thus cap
/// task and nested together.
pub(crate) fn create_cgroups(dirs: &[PathBuf]) -> io::Result<()> {
    for d in dirs {
        if let Some(parent) = d.parent() {
            match std::fs::create_dir(parent) {
                Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
                _ => {}
            }
        }
        std::fs::create_dir(d)?;
    }
    Ok(())
}

/// Opens the `cgroup.procs` files of the nested cgroups, for the child to join them all
/// before it execs.
pub(crate) fn open_procs(dirs: &[PathBuf]) -> io::Result<Vec<File>> {
    dirs.iter()
        .map(|d| {
            std::fs::OpenOptions::new()
                .write(true)
                .open(d.join("cgroup.procs"))
        })
        .collect()
}

/// Pids in the given cgroups.
pub(crate) fn pids_in(dirs: &[PathBuf]) -> Vec<i32> {
    let mut out: Vec<i32> = dirs
        .iter()
        .filter_map(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok())
        .flat_map(|t| {
            t.lines()
                .filter_map(|l| l.trim().parse::<i32>().ok())
                .collect::<Vec<_>>()
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// Kills whatever runs in the nested container's cgroups and removes them (blocking).
pub(crate) fn destroy_cgroups(dirs: &[PathBuf]) -> io::Result<()> {
    for _ in 0..100 {
        let left = pids_in(dirs);
        if left.is_empty() {
            break;
        }
        for pid in left {
            let _ = crate::sys::signal_pid(pid, nix::sys::signal::Signal::SIGKILL);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let mut first = None;
    for d in dirs {
        if let Err(e) = remove_cgroup_dir(d) {
            first.get_or_insert(e);
        }
        // The `nested` directory goes with its last child.
        if let Some(parent) = d.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }
    first.map_or(Ok(()), Err)
}

/// Kills and removes every nested container cgroup under a task's cgroups (its end, or
/// leftovers of nested containers after an agent restart). Blocking.
pub(crate) fn destroy_all_under(parent: &[PathBuf]) -> io::Result<()> {
    let mut ids: Vec<String> = Vec::new();
    for p in parent {
        if let Ok(rd) = std::fs::read_dir(p.join(CGROUP_DIR)) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    ids.push(e.file_name().to_string_lossy().into_owned());
                }
            }
        }
    }
    ids.sort();
    ids.dedup();
    let mut first = None;
    for id in ids {
        if let Err(e) = destroy_cgroups(&cgroup_dirs(parent, &id)) {
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}

/// `rmdir` of a cgroup; on a plain directory (fake cgroupfs of tests) its files go first.
fn remove_cgroup_dir(d: &Path) -> io::Result<()> {
    for _ in 0..50 {
        match std::fs::remove_dir(d) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            Err(e) => {
                if crate::sys::is_cgroup_fs(d) {
                    return Err(e);
                }
                return std::fs::remove_dir_all(d);
            }
        }
    }
    Err(io::Error::other(format!(
        "cgroup {} stayed busy",
        d.display()
    )))
}

/// One nested container the agent knows.
#[derive(Debug)]
struct Entry {
    /// The raw wait status once it ended.
    exit: watch::Sender<Option<i32>>,
    cgroups: Vec<PathBuf>,
    dir: PathBuf,
    /// Its process group (the child `setsid`s), once started: what is signalled when the
    /// agent has no cgroups to find its processes by.
    pgid: Option<i32>,
}

/// What to signal to reach every process of a nested container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Targets {
    pub(crate) cgroups: Vec<PathBuf>,
    pub(crate) pgid: Option<i32>,
}

impl Targets {
    /// Sends `sig` to every process in its cgroups, or without cgroups (an agent not
    /// running as root) to its process group (blocking). The group is the fallback only:
    /// once the group is empty its id may be reused.
    pub(crate) fn signal(&self, sig: nix::sys::signal::Signal) {
        if let (Some(pgid), true) = (self.pgid, self.cgroups.is_empty()) {
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), sig);
        }
        for pid in pids_in(&self.cgroups) {
            let _ = crate::sys::signal_pid(pid, sig);
        }
    }
}

/// The agent's nested containers, by parent container id and id.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    inner: Mutex<HashMap<String, HashMap<String, Entry>>>,
    /// Per task container: its socket (bound, not served yet) or the task serving it.
    sockets: Mutex<HashMap<String, Socket>>,
}

#[derive(Debug)]
enum Socket {
    Bound(std::os::unix::net::UnixListener, PathBuf),
    Served(tokio::task::JoinHandle<()>, PathBuf),
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, HashMap<String, Entry>>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Claims `id` under `parent` before anything is made.
    fn reserve(
        &self,
        parent: &str,
        id: &str,
        cgroups: Vec<PathBuf>,
        dir: PathBuf,
    ) -> Result<(), CallError> {
        let mut all = self.lock();
        let children = all.entry(parent.to_string()).or_default();
        if children.contains_key(id) {
            return Err(CallError::Conflict(format!(
                "nested container `{id}` already exists in container `{parent}`: pick another id, or REMOVE it once it ended"
            )));
        }
        if children.len() >= MAX_PER_PARENT {
            return Err(CallError::Conflict(format!(
                "container `{parent}` already has {MAX_PER_PARENT} nested containers: REMOVE ended ones first"
            )));
        }
        children.insert(
            id.to_string(),
            Entry {
                exit: watch::channel(None).0,
                cgroups,
                dir,
                pgid: None,
            },
        );
        Ok(())
    }

    fn forget(&self, parent: &str, id: &str) {
        let mut all = self.lock();
        if let Some(c) = all.get_mut(parent) {
            c.remove(id);
            if c.is_empty() {
                all.remove(parent);
            }
        }
    }

    fn started(&self, parent: &str, id: &str, pid: i32) {
        if let Some(e) = self.lock().get_mut(parent).and_then(|c| c.get_mut(id)) {
            e.pgid = Some(pid);
        }
    }

    fn ended(&self, parent: &str, id: &str, status: i32) {
        if let Some(e) = self.lock().get(parent).and_then(|c| c.get(id)) {
            e.exit.send_replace(Some(status));
        }
    }

    fn unknown(parent: &str, id: &str) -> CallError {
        CallError::NotFound(format!(
            "no nested container `{id}` in container `{parent}` on this agent"
        ))
    }

    fn waiter(&self, parent: &str, id: &str) -> Result<watch::Receiver<Option<i32>>, CallError> {
        self.lock()
            .get(parent)
            .and_then(|c| c.get(id))
            .map(|e| e.exit.subscribe())
            .ok_or_else(|| Self::unknown(parent, id))
    }

    /// What to signal of a running nested container; `None` once it ended.
    fn running_targets(&self, parent: &str, id: &str) -> Result<Option<Targets>, CallError> {
        let all = self.lock();
        let e = all
            .get(parent)
            .and_then(|c| c.get(id))
            .ok_or_else(|| Self::unknown(parent, id))?;
        let running = e.exit.borrow().is_none();
        Ok(running.then(|| Targets {
            cgroups: e.cgroups.clone(),
            pgid: e.pgid,
        }))
    }

    /// Forgets an ended nested container; returns its sandbox directory.
    fn remove(&self, parent: &str, id: &str) -> Result<PathBuf, CallError> {
        let mut all = self.lock();
        let children = all
            .get_mut(parent)
            .ok_or_else(|| Self::unknown(parent, id))?;
        let e = children.get(id).ok_or_else(|| Self::unknown(parent, id))?;
        if e.exit.borrow().is_none() {
            return Err(CallError::Conflict(format!(
                "nested container `{id}` is still running: KILL it and WAIT for it first"
            )));
        }
        let dir = e.dir.clone();
        children.remove(id);
        if children.is_empty() {
            all.remove(parent);
        }
        Ok(dir)
    }

    /// The parent ended: its nested containers are forgotten; returns what to kill of
    /// those still running.
    pub(crate) fn parent_ended(&self, parent: &str) -> Vec<Targets> {
        let gone = self.lock().remove(parent).unwrap_or_default();
        gone.into_values()
            .filter_map(|e| {
                // Waiters hear of the end: killed with the parent.
                let running = e.exit.borrow().is_none();
                if running {
                    e.exit.send_replace(Some(libc::SIGKILL));
                }
                running.then_some(Targets {
                    cgroups: e.cgroups,
                    pgid: e.pgid,
                })
            })
            .collect()
    }

    /// The nested containers of one task for `/state`: id, running, exit status (sorted).
    pub(crate) fn describe(&self, parent: &str) -> Vec<serde_json::Value> {
        let all = self.lock();
        let mut out: Vec<(String, serde_json::Value)> = all
            .get(parent)
            .into_iter()
            .flatten()
            .map(|(id, e)| {
                let exit = *e.exit.borrow();
                (
                    id.clone(),
                    serde_json::json!({"id": id, "running": exit.is_none(), "exit_status": exit}),
                )
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out.into_iter().map(|(_, v)| v).collect()
    }

    /// How many nested containers run (for `/state`).
    pub(crate) fn running(&self) -> usize {
        self.lock()
            .values()
            .flat_map(|c| c.values())
            .filter(|e| e.exit.borrow().is_none())
            .count()
    }
}

impl Registry {
    fn sockets(&self) -> MutexGuard<'_, HashMap<String, Socket>> {
        self.sockets.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Binds the task's socket at `<sandbox>/.brim/agent.sock` (0600, the task's user).
    /// It is bound under the agent's work dir and renamed into the sandbox: a socket path
    /// is limited to 108 bytes, sandboxes paths are not. Blocking.
    pub(crate) fn bind_socket(
        &self,
        run_dir: &Path,
        container_id: &str,
        sandbox: &Path,
        owner: Option<(u32, u32)>,
    ) -> io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let rel = Path::new(SOCKET_FILE);
        let dir = crate::volumes::mkdir_in(sandbox, rel.parent().unwrap_or(Path::new("")))?;
        std::fs::create_dir_all(run_dir)?;
        let tmp = run_dir.join(format!("{}.sock", uuid::Uuid::new_v4().simple()));
        let listener = std::os::unix::net::UnixListener::bind(&tmp)?;
        listener.set_nonblocking(true)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&tmp, Some(uid), Some(gid))?;
            std::os::unix::fs::lchown(&dir, Some(uid), Some(gid))?;
        }
        let path = sandbox.join(rel);
        // rename replaces a file, never follows a link the task left there.
        if let Err(e) = std::fs::rename(&tmp, &path) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        self.sockets()
            .insert(container_id.to_string(), Socket::Bound(listener, path));
        Ok(())
    }

    /// Starts serving a bound socket (connections made meanwhile wait in its backlog).
    pub(crate) fn serve_socket(&self, agent: &Arc<Agent>, container_id: &str) {
        let mut sockets = self.sockets();
        let Some(Socket::Bound(..)) = sockets.get(container_id) else {
            return;
        };
        let Some(Socket::Bound(listener, path)) = sockets.remove(container_id) else {
            return;
        };
        let listener = match tokio::net::UnixListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(container = container_id, error = %e, "cannot serve the task's agent socket");
                let _ = std::fs::remove_file(&path);
                return;
            }
        };
        let router = axum::Router::new()
            .route("/api/v1", axum::routing::post(api_socket))
            .with_state((Arc::clone(agent), container_id.to_string()));
        let id = container_id.to_string();
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::warn!(container = %id, error = %e, "the task's agent socket failed");
            }
        });
        sockets.insert(container_id.to_string(), Socket::Served(task, path));
    }

    /// Stops serving the task's socket and removes it.
    pub(crate) fn close_socket(&self, container_id: &str) {
        let path = match self.sockets().remove(container_id) {
            Some(Socket::Bound(_, path)) => path,
            Some(Socket::Served(task, path)) => {
                task.abort();
                path
            }
            None => return,
        };
        let _ = std::fs::remove_file(path);
    }
}

/// `POST /api/v1` on a task's socket: only that task's nested containers, no other
/// credential needed (the socket is the task's, mode 0600 in its sandbox).
async fn api_socket(
    axum::extract::State((agent, container)): axum::extract::State<(Arc<Agent>, String)>,
    request: axum::extract::Request,
) -> Response {
    let body = match call_body(request).await {
        Ok(b) => b,
        Err(too_large) => return too_large,
    };
    let result = async {
        let req = parse(&body)?;
        if req.parent() != container {
            return Err(CallError::Unauthorized(format!(
                "this socket serves container `{container}` only: a task may only manage its own nested containers"
            )));
        }
        handle(&agent, req).await
    }
    .await;
    reply(result)
}

/// What a nested launch needs to know of its parent task.
#[derive(Debug, Clone)]
pub(crate) struct Parent {
    pub(crate) task_id: String,
    pub(crate) supervisor_pid: i32,
    pub(crate) sandbox: PathBuf,
    /// The OCI runtime's `exec` argv into the task's container (OCI tasks).
    pub(crate) container_exec: Option<Vec<String>>,
    /// Whether the task has namespaces of its own to join (native tasks).
    pub(crate) namespaces: bool,
    pub(crate) user: Option<(u32, u32)>,
    /// The task's cgroup directories (every hierarchy).
    pub(crate) cgroups: Vec<PathBuf>,
    /// The task's environment (native tasks' nested processes start with it).
    pub(crate) env: Vec<(String, String)>,
    /// An OCI task's container environment (its `config.json`), empty otherwise.
    pub(crate) container_env: Vec<(String, String)>,
    /// The task's cgroup2 directory (eBPF), if any.
    pub(crate) unified: Option<PathBuf>,
    /// The task's description and resources (its eBPF policy applies to nested too).
    pub(crate) info: brim_proto::v1::TaskInfo,
    pub(crate) resources: brim_proto::Resources,
}

/// The command that runs `argv` inside the parent.
pub(crate) fn command_for(parent: &Parent, argv: &[String]) -> std::process::Command {
    if let Some((program, args)) = parent.container_exec.as_ref().and_then(|a| a.split_first()) {
        let mut c = std::process::Command::new(program);
        c.args(args).args(argv);
        return c;
    }
    if parent.namespaces {
        let mut c = std::process::Command::new("nsenter");
        c.arg(format!("--target={}", parent.supervisor_pid))
            .args(["--mount", "--uts", "--ipc", "--net", "--pid"])
            .arg(format!("--wd={}", parent.sandbox.display()));
        if let Some((uid, gid)) = parent.user {
            c.arg(format!("--setuid={uid}"))
                .arg(format!("--setgid={gid}"));
        }
        c.arg("--").args(argv);
        return c;
    }
    let (program, args) = argv.split_first().map_or(("", &[][..]), |(p, a)| (p, a));
    let mut c = std::process::Command::new(program);
    c.args(args).current_dir(&parent.sandbox);
    if let Some((uid, gid)) = parent.user {
        use std::os::unix::process::CommandExt;
        c.uid(uid).gid(gid);
    }
    c
}

/// The task's secret for the agent API, derived from the agent's key and its container id.
pub(crate) fn token(key: &[u8], container_id: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"brim-nested-v1\0");
    h.update(key);
    h.update(container_id.as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The agent's key for task tokens: `<work_dir>/meta/agent-api.key`, made once (0600).
pub(crate) fn load_key(work_dir: &Path) -> io::Result<Vec<u8>> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = work_dir.join("meta");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("agent-api.key");
    match std::fs::read(&path) {
        Ok(k) if k.len() >= 32 => return Ok(k),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let key: Vec<u8> = (0..2)
        .flat_map(|_| *uuid::Uuid::new_v4().as_bytes())
        .collect();
    let tmp = dir.join("agent-api.key.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(&key)?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(key)
}

/// Writes the task's token into its sandbox (0600, owned by the task's user), without
/// following links the sandbox may hold.
pub(crate) fn write_token(
    sandbox: &Path,
    token: &str,
    owner: Option<(u32, u32)>,
) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let rel = Path::new(TOKEN_FILE);
    let dir = crate::volumes::mkdir_in(sandbox, rel.parent().unwrap_or(Path::new("")))?;
    let path = sandbox.join(rel);
    let _ = std::fs::remove_file(&path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)?;
    f.write_all(token.as_bytes())?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::lchown(&dir, Some(uid), Some(gid))?;
        std::os::unix::fs::fchown(&f, Some(uid), Some(gid))?;
    }
    Ok(())
}

/// Whether the request may act on `parent`: with TLS, a certificate signed by the cluster
/// CA, or the parent task's own token (`Authorization: Bearer …`, what the task finds in its
/// sandbox); without TLS, anyone (as every private endpoint of an agent started
/// `--insecure`).
pub(crate) fn authorize(
    tls: bool,
    certified: bool,
    bearer: Option<&str>,
    key: &[u8],
    parent: &str,
) -> Result<(), CallError> {
    if tls && certified {
        return Ok(());
    }
    if bearer.is_some_and(|b| constant_eq(b.as_bytes(), token(key, parent).as_bytes())) {
        return Ok(());
    }
    if !tls {
        return Ok(());
    }
    Err(CallError::Unauthorized(format!(
        "the agent API needs a client certificate signed by the cluster CA, or the token of container `{parent}` (a task: Authorization: Bearer $(cat $MESOS_SANDBOX/.brim/agent-token)); a task may only manage its own nested containers"
    )))
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Agent {
    /// Kills and forgets the nested containers of a container that ended (or of a task the
    /// previous agent ran), removing their cgroups.
    pub(crate) async fn end_nested(&self, container_id: &str) {
        self.nested.close_socket(container_id);
        let running = self.nested.parent_ended(container_id);
        if !running.is_empty() {
            let _ = tokio::task::spawn_blocking(move || {
                for t in running {
                    t.signal(nix::sys::signal::Signal::SIGKILL);
                }
            })
            .await;
        }
        let Some(cg) = self.cgroups.clone() else {
            return;
        };
        if container_id.is_empty() {
            return;
        }
        let paths = cg.paths(container_id);
        let res =
            tokio::task::spawn_blocking(move || crate::nested::destroy_all_under(&paths)).await;
        if let Ok(Err(e)) = res {
            tracing::warn!(container = %container_id, error = %e, "nested container cleanup failed");
        }
    }

    /// Serves a re-attached task's socket again (the previous agent's went with it).
    pub(crate) fn nested_socket_again(self: &Arc<Self>, container_id: &str) {
        let Ok(parent) = self.nested_parent(container_id) else {
            return;
        };
        match self.nested.bind_socket(
            &self.config.work_dir.join("run"),
            container_id,
            &parent.sandbox,
            parent.user,
        ) {
            Ok(()) => self.nested.serve_socket(self, container_id),
            Err(e) => {
                tracing::warn!(task = %parent.task_id, error = %e, "cannot make the task's agent socket")
            }
        }
    }

    /// What a nested container launched under `container_id` needs of its task: refused
    /// when no task has that container or the task is not running.
    pub(crate) fn nested_parent(
        &self,
        container_id: &str,
    ) -> Result<crate::nested::Parent, crate::nested::CallError> {
        use crate::nested::CallError;
        let st = self.state();
        let Some((key, t)) = st
            .tasks
            .iter()
            .find(|(_, t)| t.container_id == container_id && !container_id.is_empty())
        else {
            return Err(CallError::NotFound(format!(
                "no task on this agent has container `{container_id}`: use the container_id of a running task (agent /state, BRIM_CONTAINER_ID)"
            )));
        };
        let pid = match (t.state, t.pid) {
            (brim_proto::v1::TaskState::TaskRunning, Some(pid)) if t.kill_requested.is_none() => pid,
            _ => {
                return Err(CallError::Conflict(format!(
                    "task `{}` (container `{container_id}`) is {}, not running: nested containers start only in running tasks",
                    key.1,
                    t.state.name()
                )))
            }
        };
        let oci = crate::containerizer::is_oci(&t.info);
        let container_env = if oci {
            container_env(
                &self
                    .oci
                    .store()
                    .container_dir(container_id)
                    .join("config.json"),
            )
        } else {
            Vec::new()
        };
        let container_exec = if oci {
            Some(
                self.oci
                    .exec_argv(container_id)
                    .map_err(|e| CallError::Internal(e.to_string()))?,
            )
        } else {
            None
        };
        let (key, info, sandbox, resources) = (
            key.clone(),
            t.info.clone(),
            t.sandbox.clone(),
            t.resources.clone(),
        );
        let agent_id = st.agent_id.clone().unwrap_or_default();
        drop(st);
        let user = if crate::sys::is_root() {
            let framework_user = self.framework_user(&key.0);
            let name = [
                info.command.as_ref().map_or("", |c| c.user.as_str()),
                framework_user.as_str(),
            ]
            .into_iter()
            .find(|u| !u.is_empty())
            .unwrap_or(self.config.default_task_user.as_str())
            .to_string();
            crate::supervisor::resolve_user(&name, self.config.allow_root_tasks)
                .map_err(|e| CallError::Internal(e.to_string()))
                .map(|u| Some((u.uid, u.gid)))?
        } else {
            None
        };
        let command = info.command.clone().unwrap_or_default();
        let mut env = crate::launcher::environment(
            &command,
            &crate::launcher::TaskEnv {
                task_id: &key.1,
                framework_id: &key.0,
                agent_id: &agent_id,
                sandbox: &sandbox,
                resources: &resources,
                host: "127.0.0.1",
            },
        );
        env.push(("BRIM_CONTAINER_ID".into(), container_id.to_string()));
        Ok(crate::nested::Parent {
            task_id: key.1.clone(),
            supervisor_pid: pid,
            sandbox,
            container_exec,
            namespaces: self.namespaces(),
            user,
            cgroups: self
                .cgroups
                .as_ref()
                .map(|cg| cg.paths(container_id))
                .unwrap_or_default(),
            env,
            container_env,
            unified: self
                .cgroups
                .as_ref()
                .and_then(|cg| cg.unified_path(container_id)),
            info,
            resources,
        })
    }
}

/// `process.env` of an OCI runtime bundle's `config.json` (empty when unreadable).
fn container_env(config: &Path) -> Vec<(String, String)> {
    let Ok(text) = std::fs::read(config) else {
        return Vec::new();
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&text) else {
        return Vec::new();
    };
    v["process"]["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e.as_str()?.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// `POST /api/v1`.
pub(crate) async fn api(
    axum::extract::State(agent): axum::extract::State<Arc<Agent>>,
    request: axum::extract::Request,
) -> Response {
    let certified = request
        .extensions()
        .get::<axum::extract::ConnectInfo<brim_security::Peer>>()
        .is_some_and(|c| c.0.certificate.is_some());
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(brim_security::bearer)
        .map(str::to_string);
    let body = match call_body(request).await {
        Ok(b) => b,
        Err(too_large) => return too_large,
    };
    let result = async {
        let req = parse(&body)?;
        authorize(
            agent.config.tls.is_some(),
            certified,
            bearer.as_deref(),
            &agent.api_key,
            req.parent(),
        )?;
        handle(&agent, req).await
    }
    .await;
    reply(result)
}

/// The body of one API call, at most [`MAX_BODY`] bytes; a 413 answer otherwise.
async fn call_body(request: axum::extract::Request) -> Result<axum::body::Bytes, Response> {
    axum::body::to_bytes(request.into_body(), MAX_BODY)
        .await
        .map_err(|_| {
            (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body over {MAX_BODY} bytes (or unreadable): send one JSON call\n"),
            )
                .into_response()
        })
}

fn reply(result: Result<Answer, CallError>) -> Response {
    match result {
        Ok(Answer::Done(None)) => StatusCode::OK.into_response(),
        Ok(Answer::Done(Some(v))) => axum::Json(v).into_response(),
        Ok(Answer::Wait(rx)) => {
            let body = futures::stream::once(async move {
                let status = wait_exit(rx).await;
                let v = serde_json::json!({
                    "type": "WAIT_NESTED_CONTAINER",
                    "wait_nested_container": { "exit_status": status }
                });
                Ok::<_, std::convert::Infallible>(axum::body::Bytes::from(v.to_string()))
            });
            (
                [(header::CONTENT_TYPE, "application/json")],
                axum::body::Body::from_stream(body),
            )
                .into_response()
        }
        Err(e) => (e.status(), format!("{e}\n")).into_response(),
    }
}

/// A call's answer.
enum Answer {
    /// `200`, with this JSON body if any.
    Done(Option<serde_json::Value>),
    /// `200` at once, the WAIT body when the container ends: the response has started, so
    /// the server's request deadline does not cut a long wait.
    Wait(watch::Receiver<Option<i32>>),
}

async fn wait_exit(mut rx: watch::Receiver<Option<i32>>) -> i32 {
    loop {
        if let Some(s) = *rx.borrow_and_update() {
            return s;
        }
        if rx.changed().await.is_err() {
            // Forgotten without an end (cannot happen: ends are sent first).
            return libc::SIGKILL;
        }
    }
}

async fn handle(agent: &Arc<Agent>, req: Request) -> Result<Answer, CallError> {
    match req {
        Request::Launch {
            parent,
            id,
            argv,
            env,
        } => launch(agent, &parent, &id, argv, env)
            .await
            .map(|()| Answer::Done(None)),
        Request::Wait { parent, id } => Ok(Answer::Wait(agent.nested.waiter(&parent, &id)?)),
        Request::Kill { parent, id, signal } => {
            if let Some(targets) = agent.nested.running_targets(&parent, &id)? {
                let sig = nix::sys::signal::Signal::try_from(signal)
                    .map_err(|e| CallError::BadRequest(e.to_string()))?;
                let _ = tokio::task::spawn_blocking(move || targets.signal(sig)).await;
            }
            Ok(Answer::Done(None))
        }
        Request::Remove { parent, id } => {
            let dir = agent.nested.remove(&parent, &id)?;
            let _ = tokio::task::spawn_blocking(move || remove_output(&dir)).await;
            Ok(Answer::Done(None))
        }
    }
}

/// Deletes a nested container's output directory, never through a link the task may have
/// put in its place (or in place of `containers/`). Blocking.
fn remove_output(dir: &Path) -> io::Result<()> {
    let real_dir = |p: &Path| std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_dir());
    match dir.parent() {
        Some(parent) if real_dir(parent) && real_dir(dir) => std::fs::remove_dir_all(dir),
        _ => Ok(()),
    }
}

async fn launch(
    agent: &Arc<Agent>,
    parent_id: &str,
    id: &str,
    argv: Vec<String>,
    extra_env: Vec<(String, String)>,
) -> Result<(), CallError> {
    let parent = agent.nested_parent(parent_id)?;
    let dirs = cgroup_dirs(&parent.cgroups, id);
    let out_dir = parent.sandbox.join(SANDBOX_DIR).join(id);
    agent
        .nested
        .reserve(parent_id, id, dirs.clone(), out_dir.clone())?;
    let prepared = {
        let (parent, dirs, id) = (parent.clone(), dirs.clone(), id.to_string());
        tokio::task::spawn_blocking(move || prepare(&parent, &id, &dirs))
            .await
            .map_err(|e| CallError::Internal(e.to_string()))
            .and_then(|r| r)
    };
    let (stdout, stderr, procs) = match prepared {
        Ok(p) => p,
        Err(e) => {
            agent.nested.forget(parent_id, id);
            let d = dirs.clone();
            let _ = tokio::task::spawn_blocking(move || destroy_cgroups(&d)).await;
            return Err(e);
        }
    };
    // The task's eBPF policy (ports it may bind, devices) covers the nested cgroup too.
    let tracked = match parent.unified.as_ref().map(|u| u.join(CGROUP_DIR).join(id)) {
        Some(dir) => match agent
            .telemetry
            .track_nested(&dir, &parent.info, &parent.resources)
        {
            Ok(t) => t,
            Err(e) => {
                agent.nested.forget(parent_id, id);
                let d = dirs.clone();
                let _ = tokio::task::spawn_blocking(move || destroy_cgroups(&d)).await;
                return Err(CallError::Internal(format!(
                    "cannot apply task `{}`'s eBPF policy to nested container `{id}`: {e}",
                    parent.task_id
                )));
            }
        },
        None => None,
    };
    let mut parent = parent;
    let env = if let Some(exec) = parent.container_exec.as_mut() {
        // The runtime's exec gives the process the container's environment; the call's
        // variables go on top as `--env` (before the container id, exec's last argument).
        // crun replaces the container's environment when given any `--env`: pass it whole.
        if !extra_env.is_empty() {
            let mut all: Vec<(String, String)> = parent.container_env.clone();
            for (k, v) in extra_env {
                all.retain(|(n, _)| *n != k);
                all.push((k, v));
            }
            let at = exec.len().saturating_sub(1);
            exec.splice(at..at, all.iter().map(|(k, v)| format!("--env={k}={v}")));
        }
        vec![(
            "PATH".to_string(),
            std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into()),
        )]
    } else {
        let mut env = parent.env.clone();
        for (k, v) in extra_env {
            env.retain(|(n, _)| *n != k);
            env.push((k, v));
        }
        env
    };
    let mut cmd = command_for(&parent, &argv);
    cmd.env_clear()
        .envs(env)
        .stdin(std::process::Stdio::null())
        .stdout(stdout)
        .stderr(stderr);
    crate::sys::prepare_child(&mut cmd, &procs);
    let spawned = tokio::process::Command::from(cmd).spawn();
    drop(procs);
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            if let Some(t) = tracked {
                agent.telemetry.untrack_nested(t);
            }
            agent.nested.forget(parent_id, id);
            let d = dirs.clone();
            let _ = tokio::task::spawn_blocking(move || destroy_cgroups(&d)).await;
            return Err(CallError::Internal(format!(
                "cannot start nested container `{id}` in task `{}`: {e}",
                parent.task_id
            )));
        }
    };
    tracing::info!(task = %parent.task_id, parent = %parent_id, nested = %id, pid = ?child.id(), "nested container launched");
    let pgid = child.id().and_then(|p| i32::try_from(p).ok());
    if let Some(p) = pgid {
        agent.nested.started(parent_id, id, p);
    }
    let (agent, parent_id, id) = (Arc::clone(agent), parent_id.to_string(), id.to_string());
    tokio::spawn(async move {
        use std::os::unix::process::ExitStatusExt;
        let status = match child.wait().await {
            Ok(s) => s.into_raw(),
            Err(_) => libc::SIGKILL,
        };
        // Whatever it left behind (background processes) ends with it.
        let d = dirs.clone();
        match tokio::task::spawn_blocking(move || {
            Targets {
                cgroups: d.clone(),
                pgid,
            }
            .signal(nix::sys::signal::Signal::SIGKILL);
            destroy_cgroups(&d)
        })
        .await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(nested = %id, error = %e, "nested cgroup cleanup failed"),
            Err(e) => tracing::warn!(nested = %id, error = %e, "nested cgroup cleanup panicked"),
        }
        if let Some(t) = tracked {
            agent.telemetry.untrack_nested(t);
        }
        tracing::info!(parent = %parent_id, nested = %id, status, "nested container ended");
        agent.nested.ended(&parent_id, &id, status);
    });
    Ok(())
}

/// Makes the output directory and files (the task's, nothing followed through a link) and
/// the cgroups. Blocking.
fn prepare(
    parent: &Parent,
    id: &str,
    dirs: &[PathBuf],
) -> Result<(File, File, Vec<File>), CallError> {
    use std::os::unix::fs::OpenOptionsExt;
    let internal = |what: &str, e: io::Error| {
        CallError::Internal(format!(
            "cannot prepare nested container `{id}` ({what}): {e}"
        ))
    };
    let out = crate::volumes::mkdir_in(&parent.sandbox, &Path::new(SANDBOX_DIR).join(id))
        .map_err(|e| internal("output directory", e))?;
    let open = |name: &str| -> io::Result<File> {
        let p = out.join(name);
        let _ = std::fs::remove_file(&p);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(p)
    };
    let stdout = open("stdout").map_err(|e| internal("stdout", e))?;
    let stderr = open("stderr").map_err(|e| internal("stderr", e))?;
    if let Some((uid, gid)) = parent.user {
        for p in [parent.sandbox.join(SANDBOX_DIR), out.clone()] {
            std::os::unix::fs::lchown(&p, Some(uid), Some(gid))
                .map_err(|e| internal("chown", e))?;
        }
        for f in [&stdout, &stderr] {
            std::os::unix::fs::fchown(f, Some(uid), Some(gid)).map_err(|e| internal("chown", e))?;
        }
    }
    create_cgroups(dirs).map_err(|e| internal("cgroup", e))?;
    let procs = open_procs(dirs).map_err(|e| internal("cgroup", e))?;
    Ok((stdout, stderr, procs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launch_json(parent: &str, id: &str, cmd: &str) -> String {
        serde_json::json!({
            "type": "LAUNCH_NESTED_CONTAINER",
            "launch_nested_container": {
                "container_id": {"value": id, "parent": {"value": parent}},
                "command": {"value": cmd}
            }
        })
        .to_string()
    }

    #[test]
    fn parses_the_four_calls() {
        let r = parse(launch_json("c-1", "dbg-1", "echo hi").as_bytes()).expect("launch");
        assert_eq!(
            r,
            Request::Launch {
                parent: "c-1".into(),
                id: "dbg-1".into(),
                argv: vec!["/bin/sh".into(), "-c".into(), "echo hi".into()],
                env: vec![],
            }
        );
        let raw = br#"{"type":"LAUNCH_NESTED_CONTAINER","launch_nested_container":{"container_id":{"value":"x","parent":{"value":"p"}},"command":{"shell":false,"value":"/bin/echo","arguments":["echo","a","b"],"environment":{"variables":[{"name":"K","value":"v"}]}}}}"#;
        let Request::Launch { argv, env, .. } = parse(raw).expect("launch") else {
            panic!("not a launch")
        };
        assert_eq!(argv, ["/bin/echo", "a", "b"]);
        assert_eq!(env, [("K".to_string(), "v".to_string())]);
        for (kind, field) in [
            ("WAIT_NESTED_CONTAINER", "wait_nested_container"),
            ("REMOVE_NESTED_CONTAINER", "remove_nested_container"),
            ("KILL_NESTED_CONTAINER", "kill_nested_container"),
        ] {
            let v = serde_json::json!({"type": kind, field: {"container_id": {"value": "x", "parent": {"value": "p"}}}});
            let r = parse(v.to_string().as_bytes()).expect(kind);
            assert_eq!(r.parent(), "p");
            if let Request::Kill { signal, .. } = r {
                assert_eq!(signal, libc::SIGKILL);
            }
        }
    }

    #[test]
    fn refuses_bad_calls_with_reasons() {
        let bad = |body: &str, want: &str| {
            let e = parse(body.as_bytes()).expect_err(body);
            assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{body}");
            assert!(e.to_string().contains(want), "{body}: {e}");
        };
        bad("{not json", "malformed call");
        bad("[]", "malformed call");
        bad("{}", "without `type`");
        bad(r#"{"type":"GET_STATE"}"#, "not supported");
        bad(
            r#"{"type":"LAUNCH_NESTED_CONTAINER"}"#,
            "without `launch_nested_container`",
        );
        bad(&launch_json("p", "../x", "true"), "contains `/`");
        bad(&launch_json("p", "", "true"), "1 to 64");
        bad(&launch_json("../p", "x", "true"), "not a container id");
        bad(&launch_json("p", "x", ""), "command.value is empty");
        bad(
            r#"{"type":"LAUNCH_NESTED_CONTAINER","launch_nested_container":{"container_id":{"value":"x"},"command":{"value":"true"}}}"#,
            "parent is missing",
        );
        bad(
            r#"{"type":"LAUNCH_NESTED_CONTAINER","launch_nested_container":{"container_id":{"value":"x","parent":{"value":"p","parent":{"value":"q"}}},"command":{"value":"true"}}}"#,
            "one level",
        );
        bad(
            r#"{"type":"LAUNCH_NESTED_CONTAINER","launch_nested_container":{"container_id":{"value":"x","parent":{"value":"p"}},"command":{"value":"true"},"container":{"type":"DOCKER"}}}"#,
            "not supported",
        );
        bad(
            r#"{"type":"LAUNCH_NESTED_CONTAINER","launch_nested_container":{"container_id":{"value":"x","parent":{"value":"p"}},"command":{"value":"true","environment":{"variables":[{"name":"A=B","value":"v"}]}}}}"#,
            "not valid",
        );
        bad(
            r#"{"type":"KILL_NESTED_CONTAINER","kill_nested_container":{"container_id":{"value":"x","parent":{"value":"p"}},"signal":999}}"#,
            "not a signal",
        );
    }

    #[test]
    fn registry_refuses_duplicates_and_running_removals() {
        let r = Registry::default();
        r.reserve("p", "a", vec![], PathBuf::from("/x"))
            .expect("first");
        let dup = r
            .reserve("p", "a", vec![], PathBuf::from("/x"))
            .expect_err("dup");
        assert_eq!(dup.status(), StatusCode::CONFLICT);
        // Same id under another parent is another container.
        r.reserve("q", "a", vec![], PathBuf::from("/y"))
            .expect("other parent");
        assert_eq!(r.running(), 2);
        let busy = r.remove("p", "a").expect_err("running");
        assert_eq!(busy.status(), StatusCode::CONFLICT);
        assert_eq!(
            r.remove("p", "zz").expect_err("unknown").status(),
            StatusCode::NOT_FOUND
        );
        let mut w = r.waiter("p", "a").expect("waiter");
        r.ended("p", "a", 3 << 8);
        assert_eq!(*w.borrow_and_update(), Some(3 << 8));
        assert_eq!(r.running_targets("p", "a").expect("known"), None);
        assert_eq!(r.remove("p", "a").expect("ended"), PathBuf::from("/x"));
        assert_eq!(
            r.waiter("p", "a").expect_err("gone").status(),
            StatusCode::NOT_FOUND
        );
        // The parent's end ends and forgets the rest.
        let mut w = r.waiter("q", "a").expect("waiter");
        assert_eq!(r.parent_ended("q").len(), 1);
        assert_eq!(*w.borrow_and_update(), Some(libc::SIGKILL));
        assert_eq!(r.running(), 0);
        for i in 0..MAX_PER_PARENT {
            r.reserve("p", &format!("n{i}"), vec![], PathBuf::new())
                .expect("below the cap");
        }
        assert_eq!(
            r.reserve("p", "one-more", vec![], PathBuf::new())
                .expect_err("cap")
                .status(),
            StatusCode::CONFLICT
        );
    }

    #[test]
    fn tokens_belong_to_one_container() {
        let key = b"0123456789abcdef0123456789abcdef";
        let t = token(key, "c1");
        assert_eq!(t.len(), 64);
        assert_ne!(t, token(key, "c2"));
        assert_ne!(t, token(b"another key, another agent......", "c1"));
        // TLS: a certificate or the parent's own token.
        assert!(authorize(true, true, None, key, "c1").is_ok());
        assert!(authorize(true, false, Some(&t), key, "c1").is_ok());
        let e = authorize(true, false, Some(&t), key, "c2").expect_err("foreign");
        assert_eq!(e.status(), StatusCode::UNAUTHORIZED);
        assert!(e.to_string().contains("only manage its own"));
        assert!(authorize(true, false, None, key, "c1").is_err());
        assert!(authorize(true, false, Some("nope"), key, "c1").is_err());
        // Without TLS the API is open like the agent's other private endpoints.
        assert!(authorize(false, false, None, key, "c1").is_ok());
    }

    /// Pure cgroup2 (a fake cgroupfs): the task's processes stay in its cgroup, which
    /// enables no controller for children (the no-internal-processes rule), and the nested
    /// cgroup is a plain child joined through its own `cgroup.procs`.
    #[test]
    fn v2_layout_keeps_the_task_cgroup_a_valid_parent() {
        let tmp = tempfile::tempdir().expect("tmp");
        let task = tmp.path().join("brim").join("c-1");
        std::fs::create_dir_all(&task).expect("task cgroup");
        std::fs::write(task.join("cgroup.procs"), "100\n101\n").expect("procs");
        std::fs::write(task.join("cgroup.subtree_control"), "").expect("subtree");
        std::fs::write(task.join("memory.max"), "33554432").expect("limit");
        let dirs = cgroup_dirs(std::slice::from_ref(&task), "dbg-1");
        assert_eq!(dirs, [task.join("nested").join("dbg-1")]);
        create_cgroups(&dirs).expect("create");
        // The kernel provides cgroup.procs in a new cgroup; the fake cgroupfs needs it made.
        std::fs::write(dirs[0].join("cgroup.procs"), "").expect("procs");
        assert_eq!(open_procs(&dirs).expect("open").len(), 1);
        assert!(create_cgroups(&dirs).is_err(), "an id is created once");
        assert_eq!(
            std::fs::read_to_string(task.join("cgroup.subtree_control")).expect("read"),
            "",
            "no controller enabled below the task's cgroup"
        );
        assert_eq!(
            std::fs::read_to_string(task.join("cgroup.procs")).expect("read"),
            "100\n101\n",
            "the task's processes were not moved"
        );
        assert!(pids_in(&dirs).is_empty());
        destroy_all_under(std::slice::from_ref(&task)).expect("destroy");
        assert!(!task.join("nested").exists());
        assert!(task.join("memory.max").exists(), "the task's cgroup stays");
    }
}
