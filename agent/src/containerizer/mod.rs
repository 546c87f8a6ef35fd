//! Containerizers: how a task's command becomes the process its supervisor execs, and what
//! is left to clean up after it.
//!
//! [`Containerizer`] is implemented by [`native::NativeContainerizer`] (the command runs on
//! the agent's filesystem, through `launcher.rs`/`supervisor.rs`) and
//! [`oci::OciContainerizer`] (an image's root filesystem run by crun or runc). Both share
//! the rest of a task's life: the supervisor (launch, wait, kill, recovery after an agent
//! restart) and the task's cgroups (limits, stats, eBPF), which the agent owns for every
//! task alike. See docs/CONTAINERIZERS.md.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use brim_proto::v1::{container_info, CommandInfo, ContainerInfo, TaskInfo};

use crate::supervisor::TaskUser;

pub mod hooks;
pub mod layer;
pub mod manifest;
pub mod native;
pub mod oci;
pub mod store;

/// Why a container could not be prepared or cleaned up.
#[derive(Debug, thiserror::Error)]
pub enum ContainerizerError {
    #[error("{0}")]
    Runtime(String),
    #[error("the task asks for an OCI container but names no image: set container.image.uri")]
    NoImage,
    #[error("the task has no command and its image defines no entrypoint/cmd: set command.value")]
    NoCommand,
    #[error("the command or an argument contains a NUL byte: remove it")]
    Nul,
    #[error(transparent)]
    Image(#[from] store::ImageError),
    #[error(transparent)]
    Native(#[from] crate::supervisor::SupervisorError),
    #[error(transparent)]
    Hook(#[from] hooks::HookError),
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What a containerizer is given to launch one task.
#[derive(Debug)]
pub struct LaunchRequest<'a> {
    pub container_id: &'a str,
    pub info: &'a TaskInfo,
    pub command: &'a CommandInfo,
    /// The task's environment (`launcher::environment`).
    pub env: Vec<(String, String)>,
    pub sandbox: &'a Path,
    pub user: Option<&'a TaskUser>,
    /// The task's cgroup relative to the hierarchy roots (`/brim/<id>`), for runtimes that
    /// place the container themselves.
    pub cgroup_path: Option<String>,
    /// Volumes to mount (validated: `volumes::plan`, persistent volumes); OCI only, native
    /// tasks get theirs from the supervisor.
    pub volumes: Vec<crate::volumes::Bind>,
}

/// What the supervisor execs for the task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// Absolute path.
    pub program: String,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    /// The supervisor switches to the task's user before exec (native); an OCI runtime
    /// needs root and switches inside the container.
    pub run_as_task_user: bool,
    /// The supervisor's own namespaces (native, when the agent isolates); an OCI runtime
    /// makes the container's.
    pub namespaces: bool,
    /// Without `namespaces`: mount points the supervisor detaches (`umount -l`) in a private
    /// mount namespace of its own before it starts the task (crun on a hybrid cgroup host:
    /// the cgroup2 mount at `/sys/fs/cgroup/unified`, see docs/CONTAINERIZERS.md).
    pub private_unmounts: Vec<PathBuf>,
    /// A sealed in-memory copy of `program` to exec instead of the file (OCI runtimes).
    pub program_fd: Option<SealedProgram>,
}

/// A program copied into a sealed memfd (`sys::sealed_executable`), shared by every launch
/// that execs it. Equal only to itself.
#[derive(Debug, Clone)]
pub struct SealedProgram(pub std::sync::Arc<std::os::fd::OwnedFd>);

impl PartialEq for SealedProgram {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for SealedProgram {}

/// A way to contain tasks. Blocking methods: call them from a blocking thread.
pub trait Containerizer: Send + Sync + std::fmt::Debug {
    /// `native` or `oci` (logs, `/state`).
    fn name(&self) -> &'static str;
    /// Prepares everything the task needs on disk and returns what its supervisor execs.
    fn prepare(&self, req: &LaunchRequest<'_>) -> Result<Prepared, ContainerizerError>;
    /// Removes what `prepare` made once the task ended (idempotent).
    fn destroy(&self, container_id: &str) -> Result<(), ContainerizerError>;
    /// After an agent restart: removes leftovers of containers not in `live`; returns them.
    fn recover(&self, live: &HashSet<String>) -> Vec<String>;
}

impl Containerizer for oci::OciContainerizer {
    fn name(&self) -> &'static str {
        "oci"
    }
    fn prepare(&self, req: &LaunchRequest<'_>) -> Result<Prepared, ContainerizerError> {
        oci::OciContainerizer::prepare(self, req)
    }
    fn destroy(&self, container_id: &str) -> Result<(), ContainerizerError> {
        oci::OciContainerizer::destroy(self, container_id)
    }
    fn recover(&self, live: &HashSet<String>) -> Vec<String> {
        oci::OciContainerizer::recover(self, live)
    }
}

/// The container a task's process runs in: its custom executor's when that names one
/// (Mesos `ExecutorInfo.container`), else the task's own.
pub fn container_of(info: &TaskInfo) -> Option<&ContainerInfo> {
    info.executor
        .as_ref()
        .and_then(|e| e.container.as_ref())
        .or(info.container.as_ref())
}

/// The field [`container_of`] comes from, for messages.
pub fn container_field(info: &TaskInfo) -> &'static str {
    if info
        .executor
        .as_ref()
        .is_some_and(|e| e.container.is_some())
    {
        "executor.container"
    } else {
        "container"
    }
}

/// Whether a task runs in an OCI container.
pub fn is_oci(info: &TaskInfo) -> bool {
    container_of(info).is_some_and(|c| c.r#type == container_info::Type::Oci as i32)
}
