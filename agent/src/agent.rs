//! The agent's core: its task table and what happens on each master command. Master link,
//! HTTP server and per-task supervisors all go through [`Agent`].

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use brim_proto::v1::{
    self, AgentInfo, AgentTask, Attribute, ContainerUsage, FrameworkInfo, TaskInfo, TaskState,
    TaskStatus, TaskStatusReason, TaskStatusSource,
};
use brim_proto::Resources;
use nix::sys::signal::Signal;
use serde::Serialize;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

use crate::cgroups::{self, CgroupBackend, Limits};
use crate::checkpoint::{self, SupervisorRef, TaskRecord};
use crate::config::AgentConfig;
use crate::launcher::{self, TaskEnv};
use crate::supervisor::{self, ExitRecord};
use crate::task::{self, Completed, Task};

/// Name of the cgroup (under the agent root) that holds every task supervisor.
pub(crate) const SUPERVISORS_CGROUP: &str = "supervisors";

/// (framework id, task id).
pub(crate) type TaskKey = (String, String);

pub(crate) fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The command of a task's custom executor, when it has one (its process, in place of the
/// task's command, which the executor receives with the task).
fn custom_executor_command(info: &TaskInfo) -> Option<&v1::CommandInfo> {
    crate::pods::custom_executor(info).and_then(|e| e.command.as_ref())
}

/// The executor a task runs under (its custom executor's or its group's id), for updates.
fn executor_id_of(info: &TaskInfo) -> String {
    info.executor
        .as_ref()
        .map(|e| e.executor_id.clone())
        .unwrap_or_default()
}

/// A task as `/state` shows it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct TaskView {
    pub id: String,
    pub name: String,
    pub framework_id: String,
    pub container_id: String,
    pub state: &'static str,
    pub resources: Resources,
    pub exit_code: Option<i32>,
    pub message: String,
    pub pid: Option<i32>,
    pub sandbox: PathBuf,
    pub unacknowledged_updates: usize,
    pub started_time: f64,
    pub updated_time: f64,
}

impl TaskView {
    fn of(t: &Task) -> Self {
        TaskView {
            id: t.info.task_id.clone(),
            name: t.info.name.clone(),
            framework_id: t.framework_id.clone(),
            container_id: t.container_id.clone(),
            state: t.state.name(),
            resources: t.resources.clone(),
            exit_code: t.exit_code,
            message: t.message.clone(),
            pid: t.pid,
            sandbox: t.sandbox.clone(),
            unacknowledged_updates: t.updates.len(),
            started_time: t.started_time,
            updated_time: t.updated_time,
        }
    }
}

#[derive(Debug)]
pub(crate) struct State {
    pub agent_id: Option<String>,
    pub master_id: Option<String>,
    pub connected: bool,
    pub shutting_down: bool,
    pub tasks: HashMap<TaskKey, Task>,
    pub completed: Completed<TaskView>,
    /// Kill requests to running supervisors (grace period).
    killers: HashMap<TaskKey, mpsc::UnboundedSender<Duration>>,
    /// Updates sent once, never retried (TASK_LOST for unknown tasks, duplicate launches).
    pub oneshot: VecDeque<TaskStatus>,
    /// Frameworks of the tasks the agent holds (sent on re-registration so a failed-over
    /// master learns them).
    frameworks: HashMap<String, FrameworkInfo>,
    /// Why the agent killed a task with its group (the message of its TASK_KILLED).
    group_kills: HashMap<TaskKey, String>,
    /// Tasks of a group that failed to start: their end kills no other task (the group's
    /// start gate fails those).
    quiet_ends: std::collections::HashSet<TaskKey>,
}

/// A run_task request that passed validation.
#[derive(Debug)]
pub(crate) struct ValidatedTask {
    key: TaskKey,
    info: TaskInfo,
    /// Non-revocable resources (counted against the agent's free resources).
    resources: Resources,
    /// Revocable resources (oversubscribed slack): a non-empty set makes the task revocable,
    /// placed in the revocable cgroup subtree and evictable by the QoS controller.
    revocable: Resources,
    sandbox: PathBuf,
    container_id: String,
    /// The task group being launched with this task (default executor).
    pod: Option<Arc<crate::pods::PodLaunch>>,
}

#[derive(Debug)]
pub(crate) struct Agent {
    pub config: AgentConfig,
    pub total: Resources,
    pub hostname: String,
    pub http_address: String,
    pub cgroups: Option<Arc<dyn CgroupBackend>>,
    /// Usage sampling and the eBPF programs (`telemetry`, `ebpf`).
    pub telemetry: Arc<crate::telemetry::Telemetry>,
    state: Mutex<State>,
    /// Woken when there is something new to send to the master.
    pub outbox: Notify,
    supervisors: Mutex<Vec<JoinHandle<()>>>,
    /// Checkpoint layout and writer (started by [`Agent::start_checkpoints`]).
    pub layout: checkpoint::Layout,
    checkpoints: OnceLock<checkpoint::Writer>,
    /// Problems found while recovering (corrupt checkpoints, vanished supervisors), shown in
    /// `/state`.
    pub recovery_errors: Mutex<Vec<String>>,
    /// Whether the supervisors' cgroup exists.
    pub supervisors_cgroup: std::sync::atomic::AtomicBool,
    /// Fetches task URIs; its cache is shared by every task.
    pub fetcher: Arc<crate::fetcher::Fetcher>,
    /// Custom executors (Mesos executor API, `executor_api`).
    pub executors: crate::executor_api::Executors,
    /// The bridge, addresses and port forwards of `--network bridge` tasks.
    pub network: Arc<crate::network::Network>,
    /// Slack estimation and the QoS controller (`--oversubscribe`).
    pub oversubscription: crate::oversubscription::Oversubscription,
    /// The OCI containerizer (tasks with an OCI `container`; docs/CONTAINERIZERS.md).
    pub oci: Arc<crate::containerizer::oci::OciContainerizer>,
    /// Launches between creating their cgroups and cloning their supervisor (see
    /// [`launch_slots`]).
    launch_slots: tokio::sync::Semaphore,
    /// Nested containers (debug/sidecar processes inside running tasks; `nested`).
    pub nested: crate::nested::Registry,
    /// The key tasks' agent API tokens derive from (`nested::token`).
    pub api_key: Vec<u8>,
}

/// How many launches may create cgroups and clone supervisors at once: about the CPUs
/// that work runs on. Each in-flight launch parks a blocking-pool thread, and every
/// thread's stack and malloc arena is more memory map for each supervisor clone to copy
/// (a 1,000-task burst once ran ~500 such threads).
pub(crate) fn launch_slots(cpus: usize) -> usize {
    cpus.clamp(2, 8)
}

/// A task whose supervisor runs, as the waiting code needs it.
#[derive(Debug, Clone)]
pub(crate) struct Running {
    pub key: TaskKey,
    pub container_id: String,
    pub mem_mib: f64,
    pub pid: i32,
    /// A kill was requested before the agent restarted.
    pub kill_requested: bool,
}

pub(crate) struct Outcome {
    state: TaskState,
    reason: TaskStatusReason,
    message: String,
    exit_code: Option<i32>,
}

impl Agent {
    pub(crate) fn new(
        config: AgentConfig,
        total: Resources,
        hostname: String,
        http_address: String,
        cgroups: Option<Arc<dyn CgroupBackend>>,
        agent_id: Option<String>,
    ) -> Self {
        let completed = Completed::new(config.max_completed_tasks);
        let telemetry = Arc::new(crate::telemetry::Telemetry::start(
            &config,
            cgroups.as_ref(),
        ));
        let work_dir = config.work_dir.clone();
        let fetcher_config = crate::fetcher::FetcherConfig {
            cache_bytes: config.fetcher_cache_bytes,
            max_bytes: config.fetcher_max_bytes,
            ..crate::fetcher::FetcherConfig::new(&work_dir)
        };
        let network = Arc::new(crate::network::Network::new(
            &config.bridge_name,
            &config.bridge_cidr,
        ));
        let oversubscription =
            crate::oversubscription::Oversubscription::new(&config.oversubscription);
        let fetcher = Arc::new(crate::fetcher::Fetcher::new(fetcher_config));
        let oci = Arc::new(crate::containerizer::oci::OciContainerizer::new(
            crate::containerizer::oci::OciConfig {
                runtime: config.oci_runtime.clone(),
                store: crate::containerizer::store::StoreConfig {
                    root: work_dir.join("oci"),
                    cache_bytes: config.image_cache_bytes,
                    limits: Default::default(),
                    overlay: config.image_overlay,
                },
                hybrid_cgroups: cgroups.as_ref().is_some_and(|c| c.kind() == "hybrid"),
                cgroup_roots: cgroups.as_ref().map(|c| c.root_paths()).unwrap_or_default(),
            },
            Arc::clone(&fetcher),
        ));
        Agent {
            config,
            total,
            hostname,
            http_address,
            cgroups,
            telemetry,
            state: Mutex::new(State {
                agent_id,
                master_id: None,
                connected: false,
                shutting_down: false,
                tasks: HashMap::new(),
                completed,
                killers: HashMap::new(),
                oneshot: VecDeque::new(),
                frameworks: HashMap::new(),
                group_kills: HashMap::new(),
                quiet_ends: Default::default(),
            }),
            outbox: Notify::new(),
            supervisors: Mutex::new(Vec::new()),
            layout: checkpoint::Layout::new(&work_dir),
            checkpoints: OnceLock::new(),
            recovery_errors: Mutex::new(Vec::new()),
            supervisors_cgroup: std::sync::atomic::AtomicBool::new(false),
            fetcher,
            executors: Default::default(),
            network,
            oversubscription,
            oci,
            launch_slots: tokio::sync::Semaphore::new(launch_slots(
                std::thread::available_parallelism().map_or(2, |n| n.get()),
            )),
            nested: Default::default(),
            api_key: crate::nested::load_key(&work_dir).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot keep the agent API key in the work dir: tasks' tokens will not survive a restart");
                uuid::Uuid::new_v4().as_bytes().to_vec()
            }),
        }
    }

    /// Starts the checkpoint writer; from now on every task change is checkpointed and
    /// status updates wait for their checkpoint.
    pub(crate) fn start_checkpoints(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let writer = checkpoint::Writer::start(Some(self.layout.journal()), move |done| {
            if let Some(agent) = weak.upgrade() {
                agent.mark_durable(done);
            }
        });
        let _ = self.checkpoints.set(writer);
    }

    fn mark_durable(&self, done: Vec<(TaskKey, u64)>) {
        let mut st = self.state();
        for (key, seq) in done {
            if let Some(t) = st.tasks.get_mut(&key) {
                t.durable_seq = t.durable_seq.max(seq);
            }
        }
        drop(st);
        self.outbox.notify_one();
    }

    /// The checkpoint record of a task.
    fn record(st: &State, t: &Task) -> TaskRecord {
        TaskRecord {
            framework: st
                .frameworks
                .get(&t.framework_id)
                .map(checkpoint::to_hex)
                .unwrap_or_default(),
            task: checkpoint::to_hex(&t.info),
            framework_id: t.framework_id.clone(),
            container_id: t.container_id.clone(),
            sandbox: t.sandbox.clone(),
            state: t.state as i32,
            message: t.message.clone(),
            exit_code: t.exit_code,
            supervisor: t.supervisor,
            kill_grace_seconds: t.kill_requested.map(|d| d.as_secs_f64()),
            started_time: t.started_time,
            updated_time: t.updated_time,
            updates: t.updates.statuses().map(checkpoint::to_hex).collect(),
        }
    }

    /// Queues a checkpoint of the task `key` (bumping its seq). `done` is told when the
    /// record is on disk.
    fn persist(
        &self,
        st: &mut State,
        key: &TaskKey,
        done: Option<tokio::sync::oneshot::Sender<std::io::Result<()>>>,
    ) {
        let Some(writer) = self.checkpoints.get() else {
            if let Some(d) = done {
                let _ = d.send(Ok(()));
            }
            return;
        };
        let Some(t) = st.tasks.get(key) else {
            return;
        };
        let bytes = checkpoint::encode(&Self::record(st, t));
        let Some(t) = st.tasks.get_mut(key) else {
            return;
        };
        t.seq += 1;
        writer.send(checkpoint::Op::Write {
            key: key.clone(),
            seq: t.seq,
            path: self.layout.task(&key.0, &key.1),
            bytes,
            done,
        });
    }

    /// Removes the checkpoint of a forgotten task.
    fn unpersist(&self, key: &TaskKey, t: &Task) {
        if let Some(writer) = self.checkpoints.get() {
            let mut paths = vec![self.layout.task(&key.0, &key.1)];
            if !t.container_id.is_empty() {
                paths.push(self.layout.container(&t.container_id));
            }
            writer.send(checkpoint::Op::Remove {
                key: key.clone(),
                seq: t.seq + 1,
                paths,
            });
        }
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn agent_id(&self) -> String {
        self.state().agent_id.clone().unwrap_or_default()
    }

    /// Resources held by live tasks.
    pub(crate) fn used(state: &State) -> Resources {
        let mut used = Resources::new();
        for t in state.tasks.values().filter(|t| t.is_live()) {
            used.add(&t.resources);
        }
        used
    }

    fn sandbox_dir(&self, framework_id: &str, task_id: &str) -> PathBuf {
        self.config
            .work_dir
            .join("sandboxes")
            .join(framework_id)
            .join(task_id)
    }

    fn status(
        &self,
        agent_id: &str,
        key: &TaskKey,
        state: TaskState,
        reason: TaskStatusReason,
        message: String,
        exit_code: Option<i32>,
    ) -> TaskStatus {
        TaskStatus {
            task_id: key.1.clone(),
            state: state as i32,
            message,
            reason: reason as i32,
            source: TaskStatusSource::SourceAgent as i32,
            agent_id: agent_id.to_string(),
            framework_id: key.0.clone(),
            timestamp: now_secs(),
            uuid: uuid::Uuid::new_v4().as_bytes().to_vec(),
            exit_code,
            healthy: None,
            executor_id: String::new(),
            container_id: String::new(),
        }
    }

    /// Records a new state for a task and queues its status update. Returns false (and does
    /// nothing) when the transition is not allowed, e.g. after a terminal state.
    fn update(
        &self,
        key: &TaskKey,
        state: TaskState,
        reason: TaskStatusReason,
        message: String,
        exit_code: Option<i32>,
    ) -> bool {
        let mut st = self.state();
        let agent_id = st.agent_id.clone().unwrap_or_default();
        let mut status = self.status(&agent_id, key, state, reason, message.clone(), exit_code);
        let Some(t) = st.tasks.get_mut(key) else {
            return false;
        };
        if !task::can_transition(t.state, state) {
            tracing::debug!(task = %key.1, from = ?t.state, to = ?state, "ignoring transition");
            return false;
        }
        status.healthy = t.healthy;
        status.executor_id = executor_id_of(&t.info);
        status.container_id = t.container_id.clone();
        tracing::info!(framework = %key.0, task = %key.1, state = state.name(), %message, "task update");
        t.state = state;
        t.message = message;
        t.exit_code = exit_code.or(t.exit_code);
        t.updated_time = status.timestamp;
        t.updates.push(status);
        if state.is_terminal() {
            t.pid = None;
            st.killers.remove(key);
        }
        self.persist(&mut st, key, None);
        drop(st);
        self.outbox.notify_one();
        true
    }

    fn send_oneshot(&self, status: TaskStatus) {
        self.state().oneshot.push_back(status);
        self.outbox.notify_one();
    }

    /// Checks a run_task request against the agent's rules and free resources.
    fn validate(
        &self,
        st: &State,
        framework_id: &str,
        info: &TaskInfo,
    ) -> Result<ValidatedTask, String> {
        if st.shutting_down {
            return Err("agent is shutting down: launch the task elsewhere".into());
        }
        task::check_id("framework", framework_id)?;
        task::check_id("task", &info.task_id)?;
        let key = (framework_id.to_string(), info.task_id.clone());
        let resources = Resources::from_proto(&info.resources)
            .map_err(|e| format!("invalid task resources: {e}"))?;
        let revocable = Resources::from_proto_revocable(&info.resources)
            .map_err(|e| format!("invalid task resources: {e}"))?;
        if !revocable.is_empty() && !self.config.oversubscription.enabled {
            return Err(
                "task asks for revocable resources but this agent does not oversubscribe: start it with --oversubscribe"
                    .into(),
            );
        }
        let oci = crate::containerizer::is_oci(info);
        // With a custom executor the executor is the process (the task's command is the
        // executor's to interpret, as in Mesos).
        let command = match custom_executor_command(info).or(info.command.as_ref()) {
            Some(c) => c.clone(),
            // An image may say what to run.
            None if oci => v1::CommandInfo::default(),
            None => return Err("task has no command: set task.command".into()),
        };
        if oci
            && crate::containerizer::container_of(info)
                .and_then(|c| c.image.as_ref())
                .is_none_or(|i| i.uri.is_empty())
        {
            return Err(format!(
                "the task asks for an OCI container but names no image: set {}.image.uri",
                crate::containerizer::container_field(info)
            ));
        }
        let binds = self.volume_binds(info, &self.sandbox_dir(framework_id, &info.task_id))?;
        if !binds.is_empty() && !oci && !self.namespaces() {
            return Err(format!(
                "{}.volumes need task mount namespaces: this agent has none (run it as root, with isolation and namespaces on)",
                crate::containerizer::container_field(info)
            ));
        }
        if info
            .executor
            .as_ref()
            .is_some_and(|e| task::check_id("executor", &e.executor_id).is_err())
        {
            return Err("invalid executor id: use 1-255 characters of [A-Za-z0-9._-]".into());
        }
        if !(oci && command.value.is_empty()) {
            launcher::argv(&command).map_err(|e| e.to_string())?;
        }
        if !(info.kill_grace_period_seconds.is_finite() && info.kill_grace_period_seconds >= 0.0) {
            return Err("kill_grace_period_seconds must be a finite number >= 0".into());
        }
        if let Some(h) = &info.health_check {
            crate::health::validate(h, first_port(&resources))?;
        }
        let network = crate::network::Mode::of(info)?;
        if network.private() && oci {
            return Err(format!(
                "OCI containers use the host network for now: drop the {} label",
                crate::network::LABEL
            ));
        }
        if network.private() && !self.namespaces() {
            return Err(format!(
                "a private network ({} label) needs task namespaces: this agent has none (run it as root, with isolation and namespaces on)",
                crate::network::LABEL
            ));
        }
        let free = self.total.saturating_sub(&Self::used(st));
        if !free.contains(&resources) {
            return Err(format!(
                "task needs {resources} but the agent only has {free} free (total {})",
                self.total
            ));
        }
        let container_id = if revocable.is_empty() {
            uuid::Uuid::new_v4().to_string()
        } else {
            format!("{}{}", cgroups::REVOCABLE_ID_PREFIX, uuid::Uuid::new_v4())
        };
        Ok(ValidatedTask {
            sandbox: self.sandbox_dir(framework_id, &info.task_id),
            key,
            info: info.clone(),
            resources,
            revocable,
            container_id,
            pod: None,
        })
    }

    /// Handles the master's `destroy_volume`: removes the volume's directory, off the
    /// async threads.
    pub(crate) fn destroy_volume(&self, role: String, persistence_id: String) {
        let work_dir = self.config.work_dir.clone();
        tokio::task::spawn_blocking(move || {
            match crate::volumes::destroy(&work_dir, &role, &persistence_id) {
                Ok(()) => tracing::info!(role, persistence_id, "persistent volume destroyed"),
                Err(e) => tracing::warn!(
                    role,
                    persistence_id,
                    "cannot remove a destroyed volume: {e}"
                ),
            }
        });
    }

    /// Handles the master's `run_task`.
    pub(crate) fn run_task(self: &Arc<Self>, framework: FrameworkInfo, info: TaskInfo) {
        self.admit_task(framework, info, true);
    }

    /// Admits one task and starts it (or its custom executor); `deliver`: hand the task to
    /// its custom executor (a LAUNCH event) — a task group's are handed over together.
    fn admit_task(self: &Arc<Self>, framework: FrameworkInfo, info: TaskInfo, deliver: bool) {
        let key: TaskKey = (framework.id.clone(), info.task_id.clone());
        let mut st = self.state();
        if st.tasks.contains_key(&key) {
            let agent_id = st.agent_id.clone().unwrap_or_default();
            drop(st);
            tracing::warn!(framework = %key.0, task = %key.1, "refusing duplicate task id");
            let status = self.status(
                &agent_id,
                &key,
                TaskState::TaskError,
                TaskStatusReason::ReasonTaskInvalid,
                format!(
                    "task id `{}` is already in use on this agent: use a unique task id",
                    key.1
                ),
                None,
            );
            self.send_oneshot(status);
            return;
        }
        let validated = self.validate(&st, &framework.id, &info);
        st.tasks.insert(
            key.clone(),
            Self::staging_task(&info, &framework.id, &validated),
        );
        st.frameworks
            .insert(framework.id.clone(), framework.clone());
        let v = match validated {
            Ok(v) => v,
            Err(why) => {
                drop(st);
                tracing::warn!(framework = %key.0, task = %key.1, %why, "refusing task");
                self.update(
                    &key,
                    TaskState::TaskError,
                    TaskStatusReason::ReasonTaskInvalid,
                    why,
                    None,
                );
                return;
            }
        };
        let agent_id = st.agent_id.clone().unwrap_or_default();
        if let Some(e) = crate::pods::custom_executor(&info) {
            let ekey = (framework.id.clone(), e.executor_id.clone());
            if self.executors.is_live(&ekey) {
                // The executor already runs: it gets the task, no process of its own.
                if let Some(t) = st.tasks.get_mut(&key) {
                    t.container_id.clear();
                }
                // Checkpointed now: after an agent restart the executor's re-subscription
                // is reconciled against it (`executor_api::reconcile`).
                self.persist(&mut st, &key, None);
                drop(st);
                if deliver {
                    self.executors.launch(&ekey, &info, &agent_id);
                }
                return;
            }
        }
        let (tx, rx) = mpsc::unbounded_channel();
        if let Some(e) = crate::pods::custom_executor(&info) {
            self.executors.start(
                framework.clone(),
                e.clone(),
                key.clone(),
                v.container_id.clone(),
                tx.clone(),
            );
            let ekey = (framework.id.clone(), e.executor_id.clone());
            if deliver {
                self.executors.launch(&ekey, &info, &agent_id);
            }
        }
        st.killers.insert(key, tx);
        st.frameworks.insert(framework.id.clone(), framework);
        drop(st);
        let agent = Arc::clone(self);
        let handle = tokio::spawn(async move { agent.supervise(v, rx).await });
        let mut sups = self.supervisors.lock().unwrap_or_else(|p| p.into_inner());
        sups.retain(|h| !h.is_finished());
        sups.push(handle);
    }

    /// Handles the master's `run_task_group`: a task group (pod). A custom executor gets
    /// the group's tasks like any of its tasks (each with a LAUNCH_GROUP event, see
    /// `executor_api`); the default executor (the agent) launches them as one unit (see
    /// `pods`): all valid or all refused, started together.
    pub(crate) fn run_task_group(
        self: &Arc<Self>,
        framework: FrameworkInfo,
        executor: v1::ExecutorInfo,
        tasks: Vec<TaskInfo>,
    ) {
        let tasks: Vec<TaskInfo> = tasks
            .into_iter()
            .map(|mut t| {
                t.executor = Some(executor.clone());
                t
            })
            .collect();
        if executor.r#type != v1::executor_info::Type::Default as i32 {
            // A custom executor: each task is admitted like any of its tasks, then the
            // executor gets those admitted in one LAUNCH_GROUP event.
            for t in &tasks {
                self.admit_task(framework.clone(), t.clone(), false);
            }
            let ekey = (framework.id.clone(), executor.executor_id.clone());
            let (admitted, agent_id): (Vec<TaskInfo>, String) = {
                let st = self.state();
                let admitted = tasks
                    .into_iter()
                    .filter(|t| {
                        st.tasks
                            .get(&(framework.id.clone(), t.task_id.clone()))
                            .is_some_and(|x| x.is_live() && x.kill_requested.is_none())
                    })
                    .collect();
                (admitted, st.agent_id.clone().unwrap_or_default())
            };
            if !admitted.is_empty() {
                self.executors.launch_group(&ekey, &admitted, &agent_id);
            }
            return;
        }
        let pod_key: crate::pods::PodKey = (framework.id.clone(), executor.executor_id.clone());
        let mut st = self.state();
        let agent_id = st.agent_id.clone().unwrap_or_default();
        if let Some(dup) = tasks.iter().find(|t| {
            st.tasks
                .contains_key(&(framework.id.clone(), t.task_id.clone()))
        }) {
            let why = format!(
                "task group refused: task id `{}` is already in use on this agent: use unique task ids",
                dup.task_id
            );
            drop(st);
            for t in &tasks {
                let key = (framework.id.clone(), t.task_id.clone());
                self.send_oneshot(self.status(
                    &agent_id,
                    &key,
                    TaskState::TaskError,
                    TaskStatusReason::ReasonTaskInvalid,
                    why.clone(),
                    None,
                ));
            }
            return;
        }
        let mut refused = crate::pods::check_group(&tasks).err();
        if refused.is_none()
            && st.tasks.values().any(|t| {
                t.framework_id == pod_key.0
                    && t.is_live()
                    && crate::pods::default_executor(&t.info)
                        .is_some_and(|e| e.executor_id == pod_key.1)
            })
        {
            refused = Some(format!(
                "a task group with executor id `{}` already runs here: give each group its own executor id",
                pod_key.1
            ));
        }
        let mode = crate::pods::check_group(&tasks).unwrap_or_default();
        st.frameworks
            .insert(framework.id.clone(), framework.clone());
        let mut validated = Vec::with_capacity(tasks.len());
        for info in &tasks {
            let key: TaskKey = (framework.id.clone(), info.task_id.clone());
            let v = self.validate(&st, &framework.id, info);
            let task = Self::staging_task(info, &framework.id, &v);
            st.tasks.insert(key.clone(), task);
            if refused.is_none() {
                if let Err(why) = &v {
                    refused = Some(format!("task {}: {why}", info.task_id));
                }
            }
            validated.push((key, v));
        }
        if let Some(why) = refused {
            drop(st);
            tracing::warn!(framework = %pod_key.0, executor = %pod_key.1, %why, "refusing task group");
            for (key, v) in validated {
                let message = match v {
                    Err(own) => own,
                    Ok(_) => format!("task group refused: {why}"),
                };
                self.update(
                    &key,
                    TaskState::TaskError,
                    TaskStatusReason::ReasonTaskInvalid,
                    message,
                    None,
                );
            }
            return;
        }
        tracing::info!(framework = %pod_key.0, executor = %pod_key.1, tasks = validated.len(), "launching task group");
        let pod = Arc::new(crate::pods::PodLaunch {
            key: pod_key,
            gate: crate::pods::StartGate::new(validated.len()),
            mode,
            netns: tokio::sync::OnceCell::new(),
        });
        let mut handles = Vec::new();
        for (key, v) in validated {
            let Ok(mut v) = v else { continue };
            v.pod = Some(Arc::clone(&pod));
            let (tx, rx) = mpsc::unbounded_channel();
            st.killers.insert(key, tx);
            let agent = Arc::clone(self);
            handles.push(tokio::spawn(async move { agent.supervise(v, rx).await }));
        }
        drop(st);
        let mut sups = self.supervisors.lock().unwrap_or_else(|p| p.into_inner());
        sups.retain(|h| !h.is_finished());
        sups.extend(handles);
    }

    /// A task as the table holds it while it is staged.
    fn staging_task(
        info: &TaskInfo,
        framework_id: &str,
        validated: &Result<ValidatedTask, String>,
    ) -> Task {
        let now = now_secs();
        let (resources, sandbox, container_id) = match validated {
            Ok(v) => (
                v.resources.clone(),
                v.sandbox.clone(),
                v.container_id.clone(),
            ),
            Err(_) => (Resources::new(), PathBuf::new(), String::new()),
        };
        Task {
            info: info.clone(),
            framework_id: framework_id.to_string(),
            container_id,
            resources,
            sandbox,
            state: TaskState::TaskStaging,
            message: String::new(),
            exit_code: None,
            pid: None,
            supervisor: None,
            seq: 0,
            durable_seq: 0,
            kill_requested: None,
            healthy: None,
            updates: Default::default(),
            started_time: now,
            updated_time: now,
        }
    }

    /// The task group (default executor) a task belongs to.
    fn pod_key_of(&self, key: &TaskKey) -> Option<crate::pods::PodKey> {
        let st = self.state();
        let e = crate::pods::default_executor(&st.tasks.get(key)?.info)?;
        Some((key.0.clone(), e.executor_id.clone()))
    }

    /// After a task of a group ended: the default executor's kill policy (`pods`) — the
    /// others are killed unless it finished. `ended` is the state it ended in, used when
    /// the task is already forgotten. True when no task of the group is left alive, so its
    /// network namespace can be released.
    fn pod_task_ended(
        &self,
        key: &TaskKey,
        pod_key: &crate::pods::PodKey,
        ended: TaskState,
    ) -> bool {
        let after = {
            let mut st = self.state();
            let state = st.tasks.get(key).map_or(ended, |t| t.state);
            let members: Vec<crate::pods::Member> = st
                .tasks
                .iter()
                .filter(|(k, t)| {
                    k.0 == pod_key.0
                        && crate::pods::default_executor(&t.info)
                            .is_some_and(|e| e.executor_id == pod_key.1)
                })
                .map(|(k, t)| crate::pods::Member {
                    task_id: k.1.clone(),
                    state: t.state,
                    killing: t.kill_requested.is_some(),
                })
                .collect();
            let mut after = crate::pods::after_task_end(&key.1, state, &members);
            if st.quiet_ends.remove(key) {
                after.kill.clear();
            }
            for id in &after.kill {
                st.group_kills
                    .insert((key.0.clone(), id.clone()), after.message.clone());
            }
            after
        };
        for id in &after.kill {
            tracing::info!(framework = %key.0, task = %id, "{}", after.message);
            self.kill_task(&key.0, id, None);
        }
        after.release
    }

    /// Releases a finished group's network namespace.
    async fn release_pod(&self, pod_key: &crate::pods::PodKey) {
        let path = crate::pods::netns_path(&self.config.work_dir, pod_key);
        match tokio::task::spawn_blocking(move || crate::sys::remove_netns(&path)).await {
            Ok(Ok(())) => {
                tracing::info!(framework = %pod_key.0, executor = %pod_key.1, "task group ended")
            }
            Ok(Err(e)) => {
                tracing::warn!(executor = %pod_key.1, error = %e, "cannot release the task group's network namespace")
            }
            Err(e) => tracing::warn!(error = %e, "network namespace release panicked"),
        }
    }

    /// After recovery: releases the network namespaces of groups none of whose tasks is
    /// live any more (they ended, or were forgotten, while the agent was down).
    pub(crate) async fn release_idle_pods(&self) {
        let root = self.config.work_dir.join("pods");
        let Ok(frameworks) = std::fs::read_dir(&root) else {
            return;
        };
        let mut idle = Vec::new();
        for fw in frameworks.flatten() {
            let Ok(groups) = std::fs::read_dir(fw.path()) else {
                continue;
            };
            for g in groups.flatten() {
                let key: crate::pods::PodKey = (
                    fw.file_name().to_string_lossy().into_owned(),
                    g.file_name().to_string_lossy().into_owned(),
                );
                let live = self.state().tasks.iter().any(|(k, t)| {
                    k.0 == key.0
                        && t.is_live()
                        && crate::pods::default_executor(&t.info)
                            .is_some_and(|e| e.executor_id == key.1)
                });
                if !live && crate::pods::netns_path(&self.config.work_dir, &key).exists() {
                    idle.push(key);
                }
            }
        }
        for key in idle {
            self.release_pod(&key).await;
        }
    }

    /// The network namespace of a group being launched (`none` network), made once.
    async fn pod_netns(&self, pod: &crate::pods::PodLaunch) -> Result<PathBuf, String> {
        pod.netns
            .get_or_init(|| async {
                let path = crate::pods::netns_path(&self.config.work_dir, &pod.key);
                let net = Arc::clone(&self.network);
                tokio::task::spawn_blocking(move || {
                    if let Some(dir) = path.parent() {
                        std::fs::create_dir_all(dir)
                            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
                    }
                    // A leftover of an earlier group with the same id.
                    let _ = crate::sys::remove_netns(&path);
                    crate::sys::create_netns(&path).map_err(|e| {
                        format!(
                            "cannot create the group's network namespace at {}: {e}",
                            path.display()
                        )
                    })?;
                    net.loopback_at(&path).map_err(|e| e.to_string())?;
                    Ok(path)
                })
                .await
                .map_err(|e| e.to_string())?
            })
            .await
            .clone()
    }

    /// Launches one task and follows it to its end.
    async fn supervise(
        self: Arc<Self>,
        v: ValidatedTask,
        mut kill_rx: mpsc::UnboundedReceiver<Duration>,
    ) {
        let key = v.key.clone();
        // A custom executor reports its tasks' states itself (Mesos).
        let starting = if crate::pods::custom_executor(&v.info).is_some() {
            TaskState::TaskStaging
        } else {
            TaskState::TaskStarting
        };
        self.update(
            &key,
            starting,
            TaskStatusReason::ReasonUnspecified,
            String::new(),
            None,
        );
        let launched = self.launch(&v).await;
        self.nested.serve_socket(&self, &v.container_id);
        if let (Some(pod), Err(_) | Ok(None)) = (&v.pod, &launched) {
            let why = match &launched {
                Err((e, _)) => format!("task {} could not start: {e}", key.1),
                _ => format!("task {} was killed before it started", key.1),
            };
            if pod.gate.fail(why) {
                // The gate fails the rest of the group; no kills needed.
                self.state().quiet_ends.insert(key.clone());
            }
        }
        let outcome = match launched {
            Err((e, started)) => {
                let msg = e.to_string();
                tracing::warn!(task = %key.1, error = %msg, "launch failed");
                if let Some((pid, fd)) = started {
                    // The supervisor exits on its own once the launch failed.
                    let _ = supervisor::wait(fd).await;
                    tracing::debug!(task = %key.1, pid, "supervisor of a failed launch exited");
                }
                Outcome {
                    state: TaskState::TaskFailed,
                    reason: TaskStatusReason::ReasonContainerLaunchFailed,
                    message: msg,
                    exit_code: None,
                }
            }
            Ok(None) => Outcome {
                state: TaskState::TaskKilled,
                reason: TaskStatusReason::ReasonTaskKilledDuringLaunch,
                message: "task killed before it started".into(),
                exit_code: None,
            },
            Ok(Some((running, fd))) => self.wait(&running, fd, &mut kill_rx).await,
        };
        self.finish(&key, &v.container_id, outcome).await;
    }

    /// Follows a task re-attached after an agent restart to its end.
    pub(crate) async fn supervise_recovered(
        self: Arc<Self>,
        running: Running,
        pidfd: std::os::fd::OwnedFd,
        mut kill_rx: mpsc::UnboundedReceiver<Duration>,
    ) {
        // Nested containers are not checkpointed: those the previous agent started end now.
        self.end_nested(&running.container_id).await;
        self.nested_socket_again(&running.container_id);
        let outcome = self.wait(&running, pidfd, &mut kill_rx).await;
        self.finish(&running.key, &running.container_id, outcome)
            .await;
    }

    /// Records the task's end (after the post-stop hook and the task's network are gone),
    /// then removes its container.
    async fn finish(&self, key: &TaskKey, container_id: &str, mut outcome: Outcome) {
        if let Some(why) = self.state().group_kills.remove(key) {
            if outcome.state == TaskState::TaskKilled {
                outcome.message = why;
            }
        }
        if !container_id.is_empty() && self.config.hooks.post_stop.is_some() {
            let (sandbox, oci) = {
                let st = self.state();
                st.tasks.get(key).map_or((PathBuf::new(), false), |t| {
                    (t.sandbox.clone(), crate::containerizer::is_oci(&t.info))
                })
            };
            let ctx = self.hook_context(key, container_id, &sandbox, oci);
            if let Err(e) = crate::containerizer::hooks::run(
                &self.config.hooks,
                crate::containerizer::hooks::Stage::PostStop,
                &ctx,
            )
            .await
            {
                tracing::warn!(task = %key.1, error = %e, "post-stop hook failed");
            }
        }
        if self.network.has(container_id) {
            let (net, id) = (Arc::clone(&self.network), container_id.to_string());
            let _ = tokio::task::spawn_blocking(move || net.detach(&id)).await;
        }
        if let Some((tasks, timed_out)) = self.executors.container_exited(key) {
            // A custom executor exited: whatever it had not finished cannot run any more.
            let (state, reason, message) = if timed_out {
                (
                    TaskState::TaskFailed,
                    TaskStatusReason::ReasonExecutorReregistrationTimeout,
                    format!(
                        "executor did not re-subscribe within {:?} of the agent's restart and was killed (agent flag --executor-reregistration-timeout)",
                        self.config.executor_reregistration_timeout
                    ),
                )
            } else if outcome.state == TaskState::TaskKilled {
                (
                    TaskState::TaskKilled,
                    TaskStatusReason::ReasonExecutorTerminated,
                    format!("executor terminated: {}", outcome.message),
                )
            } else {
                (
                    TaskState::TaskFailed,
                    TaskStatusReason::ReasonExecutorTerminated,
                    format!("executor terminated: {}", outcome.message),
                )
            };
            for k in tasks {
                self.update(&k, state, reason, message.clone(), None);
            }
            self.release_container(key, container_id).await;
            // The executor's container task, kept while the executor ran, may be done now.
            let mut st = self.state();
            if st.tasks.get(key).is_some_and(|t| t.is_finished()) {
                if let Some(t) = st.tasks.remove(key) {
                    self.unpersist(key, &t);
                    st.completed.push(TaskView::of(&t));
                }
            }
            return;
        }
        // The group's kill policy is decided before the container's release: the terminal
        // update may be acknowledged — and the task forgotten — while the kernel removes
        // its cgroups, and the group must still learn that this task ended.
        let pod = self.pod_key_of(key);
        let ended = outcome.state;
        self.update(
            key,
            outcome.state,
            outcome.reason,
            outcome.message,
            outcome.exit_code,
        );
        let group_done = pod.as_ref().map(|p| self.pod_task_ended(key, p, ended));
        self.release_container(key, container_id).await;
        if let (Some(p), Some(true)) = (&pod, group_done) {
            self.release_pod(p).await;
        }
    }

    /// Removes an ended task's cgroups and OCI bundle (unmounting its rootfs). It runs after
    /// the terminal update is queued, as Mesos's container destruction follows the
    /// executor's last update: the framework hears of the end without waiting for the
    /// kernel (cgroup rmdir, unmount). An agent that dies in between finds the leftovers at
    /// start-up and removes them (cgroups of no recovered task, bundles of no live container).
    async fn release_container(&self, key: &TaskKey, container_id: &str) {
        self.end_nested(container_id).await;
        if let Some(cg) = self.cgroups.clone() {
            let id = container_id.to_string();
            if !id.is_empty() {
                let res =
                    tokio::task::spawn_blocking(move || cgroups::destroy(cg.as_ref(), &id)).await;
                match res {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(task = %key.1, error = %e, "cgroup cleanup failed")
                    }
                    Err(e) => tracing::warn!(task = %key.1, error = %e, "cgroup cleanup panicked"),
                }
            }
        }
        if !container_id.is_empty() && self.oci.store().container_dir(container_id).exists() {
            let (oci, id) = (Arc::clone(&self.oci), container_id.to_string());
            match tokio::task::spawn_blocking(move || oci.destroy(&id)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(task = %key.1, error = %e, "OCI container cleanup failed")
                }
                Err(e) => {
                    tracing::warn!(task = %key.1, error = %e, "OCI container cleanup panicked")
                }
            }
        }
    }

    /// A status update from a custom executor (`executor_api`): recorded and queued for the
    /// master like the agent's own, with the executor's uuid. False when the transition is
    /// not allowed (nothing queued).
    pub(crate) fn executor_update(&self, status: TaskStatus) -> bool {
        let key: TaskKey = (status.framework_id.clone(), status.task_id.clone());
        let state = TaskState::try_from(status.state).unwrap_or(TaskState::TaskUnknown);
        let mut st = self.state();
        let Some(t) = st.tasks.get_mut(&key) else {
            return false;
        };
        if !task::can_transition(t.state, state) {
            tracing::debug!(task = %key.1, from = ?t.state, to = ?state, "ignoring executor transition");
            return false;
        }
        tracing::info!(framework = %key.0, task = %key.1, state = state.name(), "executor task update");
        t.state = state;
        t.message = status.message.clone();
        t.updated_time = status.timestamp;
        t.updates.push(status);
        if state.is_terminal() {
            t.pid = None;
            st.killers.remove(&key);
        }
        self.persist(&mut st, &key, None);
        drop(st);
        self.outbox.notify_one();
        true
    }

    /// What the agent knows of a custom executor's tasks (`tasks`: id, LAUNCH still queued),
    /// for reconciling its re-subscription. Tasks the agent forgot are left out.
    pub(crate) fn executor_task_facts(
        &self,
        framework_id: &str,
        tasks: Vec<(String, bool)>,
    ) -> Vec<crate::executor_api::reconcile::KnownTask> {
        let st = self.state();
        tasks
            .into_iter()
            .filter_map(|(id, launch_pending)| {
                let t = st.tasks.get(&(framework_id.to_string(), id.clone()))?;
                Some(crate::executor_api::reconcile::KnownTask {
                    id,
                    state: t.state,
                    queued: t.updates.statuses().map(|u| u.uuid.clone()).collect(),
                    launch_pending,
                    kill_requested: t.kill_requested.is_some(),
                })
            })
            .collect()
    }

    /// A task its re-subscribing executor never received (the agent went down between
    /// accepting it and sending the LAUNCH): TASK_LOST, as Mesos does.
    pub(crate) fn executor_task_lost(&self, framework_id: &str, task_id: &str) {
        self.update(
            &(framework_id.to_string(), task_id.to_string()),
            TaskState::TaskLost,
            TaskStatusReason::ReasonAgentRestarted,
            "task launched during an agent restart: its executor never received it; launch it again".into(),
            None,
        );
    }

    /// Reports a change of a running task's health (a TASK_RUNNING update with `healthy`).
    fn health_update(&self, key: &TaskKey, healthy: bool, message: String) {
        let mut st = self.state();
        let agent_id = st.agent_id.clone().unwrap_or_default();
        let mut status = self.status(
            &agent_id,
            key,
            TaskState::TaskRunning,
            TaskStatusReason::ReasonTaskHealthCheckStatusUpdated,
            message,
            None,
        );
        status.healthy = Some(healthy);
        let Some(t) = st.tasks.get_mut(key) else {
            return;
        };
        if t.state != TaskState::TaskRunning {
            return;
        }
        status.executor_id = executor_id_of(&t.info);
        tracing::info!(framework = %key.0, task = %key.1, healthy, "task health changed");
        t.healthy = Some(healthy);
        t.updated_time = status.timestamp;
        t.updates.push(status);
        self.persist(&mut st, key, None);
        drop(st);
        self.outbox.notify_one();
    }

    /// What to watch while a task runs: its sandbox's disk use (with a `disk` resource) and
    /// its health check.
    fn watch(&self, r: &Running) -> TaskWatch {
        let st = self.state();
        let Some(t) = st.tasks.get(&r.key) else {
            return TaskWatch::default();
        };
        let disk_mib = t.resources.scalar("disk");
        let disk_limit = (disk_mib > 0.0).then_some((disk_mib * 1024.0 * 1024.0) as u64);
        let health = t
            .info
            .health_check
            .as_ref()
            .and_then(|h| crate::health::validate(h, first_port(&t.resources)).ok());
        let env = if health.is_some() {
            let command = t.info.command.clone().unwrap_or_default();
            let agent_id = st.agent_id.clone().unwrap_or_default();
            launcher::environment(
                &command,
                &TaskEnv {
                    task_id: &r.key.1,
                    framework_id: &r.key.0,
                    agent_id: &agent_id,
                    sandbox: &t.sandbox,
                    resources: &t.resources,
                    host: "127.0.0.1",
                },
            )
        } else {
            Vec::new()
        };
        // An OCI task's command check runs in its container (the runtime's `exec`), whatever
        // the agent's isolation; a native task's in its namespaces when it has them.
        let container_exec = crate::containerizer::is_oci(&t.info)
            .then(|| self.oci.exec_argv(&r.container_id).ok())
            .flatten();
        let inside = match &health {
            Some(c)
                if matches!(c.kind, crate::health::Kind::Command(_))
                    && (self.namespaces() || container_exec.is_some()) =>
            {
                let user = [
                    t.info.command.as_ref().map_or("", |c| c.user.as_str()),
                    st.frameworks.get(&r.key.0).map_or("", |f| f.user.as_str()),
                ]
                .into_iter()
                .find(|u| !u.is_empty())
                .unwrap_or(self.config.default_task_user.as_str())
                .to_string();
                let user = supervisor::resolve_user(&user, self.config.allow_root_tasks)
                    .ok()
                    .map(|u| (u.uid, u.gid));
                Some(crate::health::InTask {
                    supervisor_pid: r.pid,
                    cgroup_procs: self
                        .cgroups
                        .as_ref()
                        .map(|cg| {
                            cg.paths(&r.container_id)
                                .into_iter()
                                .map(|p| p.join("cgroup.procs"))
                                .collect()
                        })
                        .unwrap_or_default(),
                    user,
                    container_exec,
                })
            }
            _ => None,
        };
        let now = tokio::time::Instant::now();
        TaskWatch {
            inside,
            sandbox: t.sandbox.clone(),
            disk_limit,
            disk_mib,
            next_disk: Some(now + DISK_CHECK_INTERVAL),
            tracker: health
                .as_ref()
                .map(|c| crate::health::Tracker::new(c, now.into_std())),
            next_health: health
                .as_ref()
                .map(|c| now + c.interval.min(Duration::from_secs(1))),
            health,
            env,
        }
    }

    /// The user a task runs as: the command's, else the framework's, else the agent's
    /// default. `None` when the agent cannot switch users (not root).
    /// The user of the framework (as registered), empty when unknown.
    pub(crate) fn framework_user(&self, framework_id: &str) -> String {
        self.state()
            .frameworks
            .get(framework_id)
            .map(|f| f.user.clone())
            .unwrap_or_default()
    }

    fn task_user(
        &self,
        v: &ValidatedTask,
    ) -> Result<Option<supervisor::TaskUser>, supervisor::SupervisorError> {
        if !crate::sys::is_root() {
            return Ok(None);
        }
        let command_user = v.info.command.as_ref().map_or("", |c| c.user.as_str());
        let framework_user = self
            .state()
            .frameworks
            .get(&v.key.0)
            .map(|f| f.user.clone())
            .unwrap_or_default();
        let name = [command_user, framework_user.as_str()]
            .into_iter()
            .find(|u| !u.is_empty())
            .unwrap_or(self.config.default_task_user.as_str());
        supervisor::resolve_user(name, self.config.allow_root_tasks).map(Some)
    }

    /// What the operator's hooks are told about a task.
    fn hook_context<'a>(
        &'a self,
        key: &'a TaskKey,
        container_id: &'a str,
        sandbox: &'a Path,
        oci: bool,
    ) -> crate::containerizer::hooks::HookContext<'a> {
        crate::containerizer::hooks::HookContext {
            task_id: &key.1,
            framework_id: &key.0,
            container_id,
            sandbox,
            containerizer: if oci { "oci" } else { "native" },
            bundle: oci.then(|| self.oci.store().container_dir(container_id)),
        }
    }

    /// Whether tasks get their own namespaces.
    pub(crate) fn namespaces(&self) -> bool {
        self.config.namespaces
            && self.config.isolation != crate::config::Isolation::None
            && crate::sys::is_root()
    }

    /// The task's container volumes, validated against `--allowed-host-paths` (host paths
    /// resolved now). Refusals name the field.
    fn volume_binds(
        &self,
        info: &TaskInfo,
        sandbox: &std::path::Path,
    ) -> Result<Vec<crate::volumes::Bind>, String> {
        let Some(c) = crate::containerizer::container_of(info) else {
            return Ok(Vec::new());
        };
        crate::volumes::plan(
            &c.volumes,
            crate::containerizer::is_oci(info),
            &self.config.allowed_host_paths,
            sandbox,
            &format!("{}.volumes", crate::containerizer::container_field(info)),
            &|p| p.canonicalize(),
        )
    }

    /// Creates the sandbox and cgroup, starts the supervisor, checkpoints it, then lets it
    /// start the task. `Ok(None)`: killed meanwhile. On error after the supervisor started,
    /// its pid and pidfd come back so the caller can wait for it to go away.
    #[allow(clippy::type_complexity)]
    async fn launch(
        &self,
        v: &ValidatedTask,
    ) -> Result<
        Option<(Running, std::os::fd::OwnedFd)>,
        (launcher::LaunchError, Option<(i32, std::os::fd::OwnedFd)>),
    > {
        let t0 = std::time::Instant::now();
        let command = custom_executor_command(&v.info)
            .or(v.info.command.as_ref())
            .cloned()
            .unwrap_or_default();
        let oci = crate::containerizer::is_oci(&v.info);
        if !oci {
            launcher::argv(&command).map_err(|e| (e, None))?;
        }
        let network = crate::network::Mode::of(&v.info).unwrap_or_default();
        let (stdout, stderr) = launcher::prepare_sandbox(&v.sandbox).map_err(|e| (e, None))?;
        if !command.uris.is_empty() {
            let fetcher = Arc::clone(&self.fetcher);
            let (uris, sandbox) = (command.uris.clone(), v.sandbox.clone());
            tokio::task::spawn_blocking(move || fetcher.fetch_all(&uris, &sandbox))
                .await
                .map_err(|e| (launcher::LaunchError::Internal(e.to_string()), None))?
                .map_err(|e| (e.into(), None))?;
        }
        let user = self.task_user(v).map_err(|e| (e.into(), None))?;
        if let Some(u) = &user {
            supervisor::chown(&v.sandbox, u).map_err(|e| (e.into(), None))?;
            // Everything in the fresh sandbox (stdout, stderr, fetched files) is the task's.
            crate::fetcher::chown_tree(&v.sandbox, u.uid, u.gid).map_err(|e| {
                (
                    launcher::LaunchError::Sandbox {
                        path: v.sandbox.clone(),
                        source: e,
                    },
                    None,
                )
            })?;
        }
        // Persistent volumes: created on first use, linked into the sandbox.
        let owner = user.as_ref().map(|u| (u.uid, u.gid));
        let bind_volumes = self.namespaces() || oci;
        let persistent = crate::volumes::attach(
            &self.config.work_dir,
            &v.info,
            &v.sandbox,
            owner,
            bind_volumes,
        )
        .map_err(|(path, source)| (launcher::LaunchError::Sandbox { path, source }, None))?;
        // Container volumes: host paths resolved again now, sandbox directories made.
        let binds = self.volume_binds(&v.info, &v.sandbox).map_err(|why| {
            (
                launcher::LaunchError::Sandbox {
                    path: v.sandbox.clone(),
                    source: std::io::Error::other(why),
                },
                None,
            )
        })?;
        crate::volumes::prepare_binds(&binds, &v.sandbox, owner)
            .map_err(|(path, source)| (launcher::LaunchError::Sandbox { path, source }, None))?;
        let mut oci_volumes = Vec::new();
        let mut volume_mounts = Vec::new();
        for (dir, link) in persistent {
            if oci {
                let rel = link.strip_prefix(&v.sandbox).unwrap_or(&link).to_path_buf();
                oci_volumes.push(crate::volumes::Bind {
                    source: dir,
                    target: crate::volumes::Target::Sandbox(rel),
                    readonly: false,
                });
            } else {
                volume_mounts.push((dir, link, false));
            }
        }
        for b in binds {
            if oci {
                oci_volumes.push(b);
            } else if let crate::volumes::Target::Sandbox(rel) = &b.target {
                volume_mounts.push((b.source, v.sandbox.join(rel), b.readonly));
            }
        }
        let mut pod_netns = None;
        if let Some(pod) = &v.pod {
            let shared = crate::pods::shared_dir(&self.config.work_dir, &pod.key);
            let link = v.sandbox.join(crate::pods::SHARED_IN_SANDBOX);
            let bind = self.namespaces();
            crate::pods::attach_shared(&shared, &link, bind).map_err(|(path, source)| {
                (launcher::LaunchError::Sandbox { path, source }, None)
            })?;
            if bind {
                volume_mounts.push((shared, link, false));
            }
            if pod.mode.private() {
                pod_netns = Some(
                    self.pod_netns(pod)
                        .await
                        .map_err(|e| (launcher::LaunchError::Pod(e), None))?,
                );
            }
        }
        let agent_id = self.agent_id();
        let host = self
            .http_address
            .rsplit_once(':')
            .map_or(self.hostname.as_str(), |(h, _)| h);
        let mut env = launcher::environment(
            &command,
            &TaskEnv {
                task_id: &v.key.1,
                framework_id: &v.key.0,
                agent_id: &agent_id,
                sandbox: &v.sandbox,
                resources: &v.resources,
                host,
            },
        );
        // The agent API (nested containers) for the task itself: its container id, the
        // endpoint and, in the sandbox, its token.
        env.extend([
            ("BRIM_CONTAINER_ID".to_string(), v.container_id.clone()),
            (
                "BRIM_AGENT_API".to_string(),
                format!(
                    "{}://{}/api/v1",
                    if self.config.tls.is_some() {
                        "https"
                    } else {
                        "http"
                    },
                    self.http_address
                ),
            ),
        ]);
        crate::nested::write_token(
            &v.sandbox,
            &crate::nested::token(&self.api_key, &v.container_id),
            owner,
        )
        .map_err(|source| {
            (
                launcher::LaunchError::Sandbox {
                    path: v.sandbox.join(crate::nested::TOKEN_FILE),
                    source,
                },
                None,
            )
        })?;
        self.nested
            .bind_socket(
                &self.config.work_dir.join("run"),
                &v.container_id,
                &v.sandbox,
                owner,
            )
            .map_err(|source| {
                (
                    launcher::LaunchError::Sandbox {
                        path: v.sandbox.join(crate::nested::SOCKET_FILE),
                        source,
                    },
                    None,
                )
            })?;
        if let Some(e) = crate::pods::custom_executor(&v.info) {
            env.extend(crate::executor_api::environment(
                &self.http_address,
                &e.executor_id,
                &agent_id,
            ));
        }
        // An OCI task's provisioning (rootfs mount, config.json) runs on one blocking thread
        // while its cgroups are made on another: neither needs the other. (A launch slot is
        // then held while a first launch unpacks its image; cached images take ~1 ms.)
        let provision = async {
            use crate::containerizer::{Containerizer, LaunchRequest};
            let cgroup_path = self
                .cgroups
                .as_ref()
                .and_then(|cg| cg.unified_path(&v.container_id))
                .and_then(|p| {
                    let rel = p
                        .strip_prefix("/sys/fs/cgroup/unified")
                        .or_else(|_| p.strip_prefix("/sys/fs/cgroup"))
                        .ok()?;
                    Some(format!("/{}", rel.display()))
                });
            let prepared = if oci {
                // Unpacking an image takes a while: off the event loop.
                let containerizer = Arc::clone(&self.oci);
                let (id, info, cmd, sandbox, u, volumes) = (
                    v.container_id.clone(),
                    v.info.clone(),
                    command.clone(),
                    v.sandbox.clone(),
                    user.clone(),
                    oci_volumes,
                );
                tokio::task::spawn_blocking(move || {
                    containerizer.prepare(&LaunchRequest {
                        container_id: &id,
                        info: &info,
                        command: &cmd,
                        env,
                        sandbox: &sandbox,
                        user: u.as_ref(),
                        cgroup_path,
                        volumes,
                    })
                })
                .await
                .map_err(|e| (launcher::LaunchError::Internal(e.to_string()), None))?
            } else {
                crate::containerizer::native::NativeContainerizer {
                    namespaces: self.namespaces(),
                }
                .prepare(&LaunchRequest {
                    container_id: &v.container_id,
                    info: &v.info,
                    command: &command,
                    env,
                    sandbox: &v.sandbox,
                    user: user.as_ref(),
                    cgroup_path,
                    volumes: Vec::new(),
                })
            };
            prepared.map_err(|e| (e.into(), None))
        };
        let cgroups = async {
            let slot = self
                .launch_slots
                .acquire()
                .await
                .map_err(|e| (launcher::LaunchError::Internal(e.to_string()), None))?;
            let Some(cg) = self.cgroups.clone() else {
                return Ok((slot, Vec::new(), None));
            };
            // A revocable task is limited by what it asked for, like any other.
            let mut all = v.resources.clone();
            all.add(&v.revocable);
            let limits = Limits {
                cpus: all.scalar("cpus"),
                cpu_hard_limit: self.config.cpu_hard_limit,
                mem_bytes: match all.scalar("mem") {
                    m if m > 0.0 => Some((m * 1024.0 * 1024.0) as u64),
                    _ => None,
                },
                pids_max: Some(self.config.task_pids_max),
            };
            let id = v.container_id.clone();
            // Tracked (bind filter, counters) before the task's process exists.
            let tel = Arc::clone(&self.telemetry);
            let (key, info, res) = (v.key.clone(), v.info.clone(), v.resources.clone());
            let role = self.framework_role(&v.key.0);
            let with_sup = self
                .supervisors_cgroup
                .load(std::sync::atomic::Ordering::Relaxed);
            let opened = tokio::task::spawn_blocking(move || {
                cg.create(&id, &limits)?;
                tel.register(&key, &id, cg.unified_path(&id), &info, &res, role);
                let procs = cgroups::open_procs(cg.as_ref(), &id)?;
                let sup = if with_sup {
                    cgroups::open_procs(cg.as_ref(), SUPERVISORS_CGROUP)
                        .ok()
                        .and_then(|mut v| (!v.is_empty()).then(|| v.remove(0)))
                } else {
                    None
                };
                Ok::<_, cgroups::CgroupError>((procs, sup))
            })
            .await
            .map_err(|e| (launcher::LaunchError::Internal(e.to_string()), None))?
            .map_err(|e| (e.into(), None))?;
            Ok((slot, opened.0, opened.1))
        };
        // Both finish before either's error is looked at, so a failed launch never leaves a
        // provisioning running behind the cleanup.
        let (prepared, made) = tokio::join!(provision, cgroups);
        let prepared = prepared?;
        let (slot, procs, sup_procs) = made?;
        crate::containerizer::hooks::run(
            &self.config.hooks,
            crate::containerizer::hooks::Stage::PreLaunch,
            &self.hook_context(&v.key, &v.container_id, &v.sandbox, oci),
        )
        .await
        .map_err(|e| {
            (
                crate::containerizer::ContainerizerError::from(e).into(),
                None,
            )
        })?;
        let spec = supervisor::TaskSpec {
            program: prepared.program,
            argv: prepared.argv,
            env: prepared.env,
            sandbox: v.sandbox.clone(),
            work_dir: self.config.work_dir.clone(),
            stdout,
            stderr,
            task_procs: procs,
            supervisor_procs: sup_procs,
            exit_dir: self.layout.container(&v.container_id),
            user: user.filter(|_| prepared.run_as_task_user),
            rlimits: supervisor::default_rlimits(),
            namespaces: prepared.namespaces,
            network_namespace: network.private(),
            volumes: volume_mounts,
            private_unmounts: prepared.private_unmounts,
            join_netns: pod_netns,
            program_fd: prepared.program_fd.map(|p| p.0),
        };
        if !spec.volumes.is_empty() && !spec.namespaces {
            return Err((
                launcher::LaunchError::Internal(
                    "volumes were prepared for a mount namespace the task does not get".into(),
                ),
                None,
            ));
        }
        let t_cgroup = t0.elapsed();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let killed = |st: &State| {
            st.tasks
                .get(&v.key)
                .is_none_or(|t| t.kill_requested.is_some())
        };
        if killed(&self.state()) {
            return Ok(None);
        }
        // Cloning the supervisor takes milliseconds: off the event loop and the state lock.
        let pending = tokio::task::spawn_blocking(move || supervisor::spawn(spec))
            .await
            .map_err(|e| (launcher::LaunchError::Internal(e.to_string()), None))?
            .map_err(|e| (e.into(), None))?;
        drop(slot);
        // A kill that came meanwhile: dropping the supervisor's go pipe makes it exit
        // without starting the task. Later kills reach the supervisor (`wait`).
        let pending = match self.record_supervisor(&v.key, pending, done_tx) {
            Ok(p) => p,
            Err(pid) => {
                if let Ok(fd) = crate::sys::pidfd_open(pid) {
                    let _ = supervisor::wait(fd).await;
                }
                return Ok(None);
            }
        };
        let pid = pending.pid;
        let pidfd = match crate::sys::pidfd_open(pid) {
            Ok(fd) => fd,
            Err(e) => {
                drop(pending);
                return Err((
                    launcher::LaunchError::Internal(format!("cannot watch the supervisor: {e}")),
                    None,
                ));
            }
        };
        if network.private() && v.pod.is_none() {
            if let Err(e) = self.setup_network(v, network, pid).await {
                // Dropping the go pipe makes the supervisor exit without starting the task.
                drop(pending);
                return Err((e.into(), Some((pid, pidfd))));
            }
        }
        let t_spawn = t0.elapsed();
        // The task starts only once its supervisor is on disk.
        if let Ok(Err(e)) = done_rx.await {
            tracing::error!(task = %v.key.1, error = %e, "checkpoint failed: this task will not survive an agent restart");
        }
        let t_durable = t0.elapsed();
        if let Some(pod) = &v.pod {
            // A group starts together: none runs until every task is ready.
            if let Err(why) = pod.gate.arrive().await {
                drop(pending);
                return Err((launcher::LaunchError::Pod(why), Some((pid, pidfd))));
            }
        }
        if let Err(e) = pending.go().await {
            return Err((e.into(), Some((pid, pidfd))));
        }
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        tracing::debug!(
            task = %v.key.1,
            sandbox_and_cgroup_ms = ms(t_cgroup),
            supervisor_ms = ms(t_spawn),
            durable_ms = ms(t_durable),
            exec_ms = ms(t0.elapsed()),
            "launch timings (cumulative)"
        );
        if crate::pods::custom_executor(&v.info).is_none() {
            self.update(
                &v.key,
                TaskState::TaskRunning,
                TaskStatusReason::ReasonUnspecified,
                String::new(),
                None,
            );
        }
        Ok(Some((
            Running {
                key: v.key.clone(),
                container_id: v.container_id.clone(),
                mem_mib: v.resources.scalar("mem") + v.revocable.scalar("mem"),
                pid,
                kill_requested: false,
            },
            pidfd,
        )))
    }

    /// Configures the private network namespace of a task's supervisor (`network`): `lo`
    /// only, or a veth into the bridge plus port forwards.
    async fn setup_network(
        &self,
        v: &ValidatedTask,
        mode: crate::network::Mode,
        pid: i32,
    ) -> Result<(), crate::network::NetworkError> {
        let (net, id) = (Arc::clone(&self.network), v.container_id.clone());
        let bridged = mode == crate::network::Mode::Bridge;
        tokio::task::spawn_blocking(move || {
            if bridged {
                net.attach(&id, pid).map(drop)
            } else {
                net.loopback(pid)
            }
        })
        .await
        .map_err(|e| crate::network::NetworkError::Failed {
            cmd: "network setup".into(),
            stderr: e.to_string(),
        })??;
        if bridged {
            if let Err(e) = self.network.forward(&v.container_id, &ports(&v.resources)) {
                let (net, id) = (Arc::clone(&self.network), v.container_id.clone());
                let _ = tokio::task::spawn_blocking(move || net.detach(&id)).await;
                return Err(e);
            }
        }
        Ok(())
    }

    /// Records a task's supervisor and checkpoints it (`done` is told when it is durable).
    /// `Err(pid)` when the task was killed or forgotten meanwhile: the supervisor is dropped
    /// (it exits without starting the task) and the caller reaps it.
    fn record_supervisor(
        &self,
        key: &TaskKey,
        pending: supervisor::Pending,
        done: tokio::sync::oneshot::Sender<std::io::Result<()>>,
    ) -> Result<supervisor::Pending, i32> {
        let mut st = self.state();
        let Some(t) = st.tasks.get_mut(key).filter(|t| t.kill_requested.is_none()) else {
            return Err(pending.pid);
        };
        t.supervisor = Some(SupervisorRef {
            pid: pending.pid,
            start_time: pending.start_time,
        });
        t.pid = Some(pending.pid);
        self.persist(&mut st, key, Some(done));
        Ok(pending)
    }

    /// Waits for the supervisor to exit, handling kill requests (SIGTERM forwarded to the
    /// task, grace, then the supervisor SIGKILLs it), and reads the recorded exit status.
    async fn wait(
        &self,
        r: &Running,
        pidfd: std::os::fd::OwnedFd,
        kill_rx: &mut mpsc::UnboundedReceiver<Duration>,
    ) -> Outcome {
        let exit = supervisor::wait(pidfd);
        tokio::pin!(exit);
        let mut killed = false;
        let mut watch = self.watch(r);
        // Set when the agent itself ends the task (disk quota, failed health checks).
        let mut limitation: Option<Outcome> = None;
        let mut kill_grace = None;
        let waited = loop {
            tokio::select! {
                st = &mut exit => break Some(st),
                Some(grace) = kill_rx.recv() => {
                    killed = true;
                    kill_grace = Some(grace);
                    break None;
                }
                event = watch.next() => match event {
                    WatchEvent::Health(healthy, message) => {
                        self.health_update(&r.key, healthy, message);
                    }
                    WatchEvent::Unhealthy(message) => {
                        killed = true;
                        kill_grace = Some(self.kill_grace_of(&r.key));
                        limitation = Some(Outcome {
                            state: TaskState::TaskKilled,
                            reason: TaskStatusReason::ReasonTaskHealthCheckStatusUpdated,
                            message,
                            exit_code: None,
                        });
                        break None;
                    }
                    WatchEvent::Disk(message) => {
                        killed = true;
                        kill_grace = Some(Duration::ZERO);
                        limitation = Some(Outcome {
                            state: TaskState::TaskFailed,
                            reason: TaskStatusReason::ReasonContainerLimitationDisk,
                            message,
                            exit_code: None,
                        });
                        break None;
                    }
                },
            }
        };
        let waited = match waited {
            Some(st) => st,
            None => {
                let grace = kill_grace.unwrap_or_default();
                tracing::info!(task = %r.key.1, ?grace, "killing task");
                let _ = supervisor::signal(r.pid, libc::SIGTERM);
                match tokio::time::timeout(grace, &mut exit).await {
                    Ok(st) => st,
                    Err(_) => {
                        let _ = supervisor::signal(r.pid, supervisor::escalate_signal());
                        exit.await
                    }
                }
            }
        };
        if let Err(e) = waited {
            return Outcome {
                state: TaskState::TaskFailed,
                reason: TaskStatusReason::ReasonExecutorTerminated,
                message: format!("lost track of the task's supervisor: {e}"),
                exit_code: None,
            };
        }
        let outcome = self.outcome_of(r, killed);
        match limitation {
            Some(mut l) => {
                l.exit_code = outcome.exit_code;
                l
            }
            None => outcome,
        }
    }

    /// The grace period of a task killed by the agent (its own, else the agent default).
    fn kill_grace_of(&self, key: &TaskKey) -> Duration {
        let st = self.state();
        match st.tasks.get(key).map(|t| t.info.kill_grace_period_seconds) {
            Some(g) if g > 0.0 && g.is_finite() => Duration::from_secs_f64(g),
            _ => self.config.default_kill_grace,
        }
    }

    /// The outcome of a task whose supervisor exited, from its `exit` file.
    pub(crate) fn outcome_of(&self, r: &Running, killed: bool) -> Outcome {
        let record = supervisor::read_exit(&self.layout.container(&r.container_id));
        let status = match record {
            Ok(Some(ExitRecord::Exited(s))) => s,
            Ok(Some(ExitRecord::Aborted)) => {
                return Outcome {
                    state: if killed {
                        TaskState::TaskKilled
                    } else {
                        TaskState::TaskFailed
                    },
                    reason: TaskStatusReason::ReasonAgentRestarted,
                    message: "the agent restarted while launching the task; it never started: launch it again".into(),
                    exit_code: None,
                }
            }
            Ok(None) => {
                return Outcome {
                    state: TaskState::TaskFailed,
                    reason: TaskStatusReason::ReasonExecutorTerminated,
                    message: "the task's supervisor died without recording the exit status (killed by hand?)".into(),
                    exit_code: None,
                }
            }
            Err(e) => {
                return Outcome {
                    state: TaskState::TaskFailed,
                    reason: TaskStatusReason::ReasonExecutorTerminated,
                    message: format!("cannot read the task's exit status: {e}"),
                    exit_code: None,
                }
            }
        };
        let oom = self
            .cgroups
            .as_ref()
            .and_then(|cg| cg.oom_kills(&r.container_id).ok())
            .is_some_and(|n| n > 0);
        let code = launcher::exit_code(status);
        let how = match std::os::unix::process::ExitStatusExt::signal(&status) {
            Some(sig) => format!(
                "command terminated by signal {sig} ({})",
                Signal::try_from(sig).map_or("unknown", |s| s.as_str())
            ),
            None => format!("command exited with status {code}"),
        };
        if killed {
            match self.oversubscription.take_preempted(&r.key) {
                // Mesos semantics for an evicted revocable task.
                Some(cause) => Outcome {
                    state: TaskState::TaskKilled,
                    reason: TaskStatusReason::ReasonContainerPreempted,
                    message: format!("{cause}; {how}"),
                    exit_code: Some(code),
                },
                None => Outcome {
                    state: TaskState::TaskKilled,
                    reason: TaskStatusReason::ReasonUnspecified,
                    message: format!("task killed: {how}"),
                    exit_code: Some(code),
                },
            }
        } else if oom && code != 0 {
            Outcome {
                state: TaskState::TaskFailed,
                reason: TaskStatusReason::ReasonContainerLimitationMemory,
                message: format!(
                    "memory limit of {} MiB exceeded: {how}; give the task more mem",
                    r.mem_mib
                ),
                exit_code: Some(code),
            }
        } else if code == 0 {
            Outcome {
                state: TaskState::TaskFinished,
                reason: TaskStatusReason::ReasonUnspecified,
                message: how,
                exit_code: Some(0),
            }
        } else {
            Outcome {
                state: TaskState::TaskFailed,
                reason: TaskStatusReason::ReasonCommandExecutorFailed,
                message: how,
                exit_code: Some(code),
            }
        }
    }

    /// Re-creates tasks from their checkpoints and re-attaches to the supervisors that still
    /// run. Returns the live tasks whose supervisor is gone (to settle with
    /// [`Agent::settle_recovered`]), the pids of the supervisors re-attached to, and
    /// problems met.
    pub(crate) fn restore(
        self: &Arc<Self>,
        records: Vec<TaskRecord>,
    ) -> (Vec<Running>, Vec<i32>, Vec<String>) {
        let mut ended = Vec::new();
        let mut live = Vec::new();
        let mut errors = Vec::new();
        let mut started = Vec::new();
        let mut bridged = Vec::new();
        let mut st = self.state();
        for r in records {
            let Some(info) = checkpoint::from_hex::<TaskInfo>(&r.task) else {
                errors.push(format!(
                    "checkpoint of a task of framework {} holds an undecodable task; it is forgotten",
                    r.framework_id
                ));
                continue;
            };
            let key: TaskKey = (r.framework_id.clone(), info.task_id.clone());
            let framework =
                checkpoint::from_hex::<FrameworkInfo>(&r.framework).unwrap_or_else(|| {
                    FrameworkInfo {
                        id: r.framework_id.clone(),
                        ..Default::default()
                    }
                });
            let state = TaskState::try_from(r.state).unwrap_or(TaskState::TaskUnknown);
            let resources = Resources::from_proto(&info.resources).unwrap_or_default();
            let updates = task::UpdateQueue::from_statuses(
                r.updates
                    .iter()
                    .filter_map(|h| checkpoint::from_hex::<TaskStatus>(h)),
            );
            let kill = r
                .kill_grace_seconds
                .filter(|g| g.is_finite() && *g >= 0.0)
                .map(Duration::from_secs_f64);
            st.frameworks.insert(key.0.clone(), framework);
            st.tasks.insert(
                key.clone(),
                Task {
                    info,
                    framework_id: r.framework_id.clone(),
                    container_id: r.container_id.clone(),
                    resources: resources.clone(),
                    sandbox: r.sandbox.clone(),
                    state,
                    message: r.message.clone(),
                    exit_code: r.exit_code,
                    pid: None,
                    supervisor: r.supervisor,
                    seq: 0,
                    durable_seq: 0,
                    kill_requested: kill,
                    healthy: None,
                    updates,
                    started_time: r.started_time,
                    updated_time: r.updated_time,
                },
            );
            // A custom executor may outlive the task whose container runs it: that ended
            // task is re-attached to like a live one (its container still holds the
            // executor), but only while its supervisor still runs.
            let executor_container = crate::pods::custom_executor(&st.tasks[&key].info).is_some();
            if r.container_id.is_empty() || (state.is_terminal() && !executor_container) {
                continue;
            }
            let mut running = Running {
                key: key.clone(),
                container_id: r.container_id.clone(),
                mem_mib: resources.scalar("mem"),
                pid: 0,
                kill_requested: kill.is_some(),
            };
            let attached = r
                .supervisor
                .and_then(|s| supervisor::attach(s.pid, s.start_time).map(|fd| (s.pid, fd)));
            let Some((pid, fd)) = attached else {
                if !state.is_terminal() {
                    running.pid = r.supervisor.map_or(0, |s| s.pid);
                    ended.push(running);
                }
                continue;
            };
            running.pid = pid;
            live.push(pid);
            if crate::network::Mode::of(&st.tasks[&key].info) == Ok(crate::network::Mode::Bridge) {
                bridged.push((r.container_id.clone(), pid, ports(&resources)));
            }
            if let Some(t) = st.tasks.get_mut(&key) {
                t.pid = Some(pid);
            }
            if !state.is_terminal()
                && state != TaskState::TaskRunning
                && state != TaskState::TaskKilling
                && supervisor::has_children(pid)
            {
                started.push(key.clone());
            }
            let (tx, rx) = mpsc::unbounded_channel();
            // A custom executor's task is killed by its executor (KILL, sent again when it
            // re-subscribes): its container runs the executor, which may run other tasks.
            if let Some(g) = kill.filter(|_| !executor_container) {
                let _ = tx.send(g);
            }
            st.killers.insert(key.clone(), tx);
            tracing::info!(framework = %key.0, task = %key.1, pid, "re-attached to a running task");
            let agent = Arc::clone(self);
            let handle =
                tokio::spawn(async move { agent.supervise_recovered(running, fd, rx).await });
            self.supervisors
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(handle);
        }
        self.recover_executors(&st);
        drop(st);
        for (id, pid, ports) in bridged {
            // Its address comes from its namespace; the forwards died with the old agent.
            let net = Arc::clone(&self.network);
            tokio::spawn(async move {
                let n = Arc::clone(&net);
                let c = id.clone();
                let ip = tokio::task::spawn_blocking(move || n.reattach(&c, pid))
                    .await
                    .ok()
                    .flatten();
                match ip {
                    Some(_) => {
                        if let Err(e) = net.forward(&id, &ports) {
                            tracing::warn!(container = %id, error = %e, "cannot forward a recovered task's ports");
                        }
                    }
                    None => {
                        tracing::warn!(container = %id, "cannot find a recovered task's bridge address")
                    }
                }
            });
        }
        for key in started {
            // Started while the agent was down, after its last checkpoint.
            self.update(
                &key,
                TaskState::TaskRunning,
                TaskStatusReason::ReasonUnspecified,
                String::new(),
                None,
            );
        }
        (ended, live, errors)
    }

    /// Re-creates the custom executors whose container tasks were restored, as awaiting
    /// re-subscription: the checkpoint of every task holds its TaskInfo (with the
    /// ExecutorInfo), FrameworkInfo and container id, and a task handed to a running
    /// executor has no container of its own — so the executor's container is the live task
    /// naming it that has one, and its tasks are every task naming it.
    fn recover_executors(&self, st: &State) {
        for (key, t) in &st.tasks {
            // Pods' default executor is the agent itself: nothing to re-subscribe.
            let Some(info) = crate::pods::custom_executor(&t.info) else {
                continue;
            };
            // Live, or ended while its container (re-attached) still runs the executor.
            if t.container_id.is_empty() || !(t.is_live() || st.killers.contains_key(key)) {
                continue;
            }
            let tasks: Vec<String> = st
                .tasks
                .iter()
                .filter(|(k, o)| {
                    k.0 == key.0
                        && o.info
                            .executor
                            .as_ref()
                            .is_some_and(|e| e.executor_id == info.executor_id)
                })
                .map(|(k, _)| k.1.clone())
                .collect();
            // A container whose supervisor is gone gets a sender nobody reads: it is
            // settled at once as exited.
            let kill = st
                .killers
                .get(key)
                .cloned()
                .unwrap_or_else(|| mpsc::unbounded_channel().0);
            let framework = st
                .frameworks
                .get(&key.0)
                .cloned()
                .unwrap_or_else(|| FrameworkInfo {
                    id: key.0.clone(),
                    ..Default::default()
                });
            tracing::info!(framework = %key.0, executor = %info.executor_id, tasks = tasks.len(), "recovered a custom executor; awaiting its re-subscription");
            self.executors.recover(
                framework,
                info.clone(),
                key.clone(),
                t.container_id.clone(),
                tasks,
                kill,
            );
        }
    }

    /// Kills the recovered custom executors that have not re-subscribed by now (called
    /// `executor_reregistration_timeout` after recovery); their tasks then fail.
    pub(crate) fn expire_executors(&self) {
        for key in self.executors.awaiting_resubscription() {
            if self.executors.expire(&key) {
                tracing::warn!(
                    framework = %key.0,
                    executor = %key.1,
                    timeout = ?self.config.executor_reregistration_timeout,
                    "custom executor did not re-subscribe after the agent restarted: killing it"
                );
            }
        }
    }

    /// Settles a recovered task whose supervisor is gone, from its `exit` file.
    pub(crate) async fn settle_recovered(&self, r: Running) {
        let outcome = if r.pid == 0 {
            Outcome {
                state: TaskState::TaskFailed,
                reason: TaskStatusReason::ReasonAgentRestarted,
                message: "the agent restarted while launching the task; it never started: launch it again".into(),
                exit_code: None,
            }
        } else {
            self.outcome_of(&r, r.kill_requested)
        };
        tracing::info!(framework = %r.key.0, task = %r.key.1, state = outcome.state.name(), "task ended while the agent was down");
        self.finish(&r.key, &r.container_id, outcome).await;
    }

    /// Container ids of every task that is not terminal.
    pub(crate) fn live_containers(&self) -> std::collections::HashSet<String> {
        self.state()
            .tasks
            .iter()
            .filter(|(k, t)| {
                (t.is_live() || self.executors.runs_container(k)) && !t.container_id.is_empty()
            })
            .map(|(_, t)| t.container_id.clone())
            .collect()
    }

    /// Handles `kill_task`: SIGTERM, grace, SIGKILL; TASK_LOST for a task the agent does
    /// not know.
    pub(crate) fn kill_task(&self, framework_id: &str, task_id: &str, grace: Option<f64>) {
        let key: TaskKey = (framework_id.to_string(), task_id.to_string());
        let mut st = self.state();
        let Some(t) = st.tasks.get_mut(&key) else {
            let agent_id = st.agent_id.clone().unwrap_or_default();
            drop(st);
            tracing::info!(
                framework = framework_id,
                task = task_id,
                "kill for unknown task"
            );
            let status = self.status(
                &agent_id,
                &key,
                TaskState::TaskLost,
                TaskStatusReason::ReasonTaskUnknown,
                "task is unknown to this agent".into(),
                None,
            );
            self.send_oneshot(status);
            return;
        };
        if !t.is_live() || t.kill_requested.is_some() {
            return;
        }
        let grace = match grace {
            Some(g) if g.is_finite() && g >= 0.0 => Duration::from_secs_f64(g.min(3600.0)),
            _ if t.info.kill_grace_period_seconds > 0.0 => {
                Duration::from_secs_f64(t.info.kill_grace_period_seconds.min(3600.0))
            }
            _ => self.config.default_kill_grace,
        };
        t.kill_requested = Some(grace);
        let custom = crate::pods::custom_executor(&t.info).is_some();
        let no_container = t.container_id.is_empty();
        // A custom executor is asked to kill the task (KILL); its container is killed only
        // when the executor cannot be asked.
        if !(custom && self.executors.kill_task(framework_id, task_id)) {
            if let Some(tx) = st.killers.get(&key) {
                let _ = tx.send(grace);
            } else if custom && no_container {
                drop(st);
                self.update(
                    &key,
                    TaskState::TaskKilled,
                    TaskStatusReason::ReasonTaskKilledDuringLaunch,
                    "task killed before its executor started it".into(),
                    None,
                );
                return;
            }
        }
        self.persist(&mut st, &key, None);
    }

    /// Live tasks as the oversubscription loop needs them.
    pub(crate) fn oversubscription_facts(&self) -> Vec<crate::oversubscription::TaskFacts> {
        let st = self.state();
        st.tasks
            .iter()
            .filter(|(_, t)| t.is_live())
            .map(|(k, t)| crate::oversubscription::TaskFacts {
                key: k.clone(),
                resources: t.resources.clone(),
                revocable: Resources::from_proto_revocable(&t.info.resources).unwrap_or_default(),
                started_time: t.started_time,
                killing: t.kill_requested.is_some(),
            })
            .collect()
    }

    /// Handles `shutdown_framework`: kills every task of that framework.
    pub(crate) fn shutdown_framework(&self, framework_id: &str) {
        let ids: Vec<String> = self
            .state()
            .tasks
            .iter()
            .filter(|(k, t)| k.0 == framework_id && t.is_live())
            .map(|(k, _)| k.1.clone())
            .collect();
        tracing::info!(
            framework = framework_id,
            tasks = ids.len(),
            "shutting down framework"
        );
        for id in ids {
            self.kill_task(framework_id, &id, None);
        }
        self.executors
            .shutdown_framework(framework_id, self.config.default_kill_grace);
    }

    /// Handles an acknowledgement; forgets a terminal task once its last update is acked.
    pub(crate) fn acknowledge(&self, framework_id: &str, task_id: &str, uuid: &[u8]) {
        let key: TaskKey = (framework_id.to_string(), task_id.to_string());
        let mut st = self.state();
        let Some(t) = st.tasks.get_mut(&key) else {
            tracing::debug!(
                framework = framework_id,
                task = task_id,
                "ack for unknown task"
            );
            return;
        };
        if !t.updates.ack(uuid) {
            tracing::debug!(task = task_id, "ack does not match the update in flight");
            return;
        }
        if crate::pods::custom_executor(&t.info).is_some() {
            self.executors.acknowledged(framework_id, task_id, uuid);
        }
        // The task whose container runs a custom executor stays (checkpointed) while the
        // executor runs: an agent restart re-attaches to the executor through it.
        let finished = t.is_finished() && !self.executors.runs_container(&key);
        if finished {
            if let Some(t) = st.tasks.remove(&key) {
                self.unpersist(&key, &t);
                st.completed.push(TaskView::of(&t));
            }
        } else {
            self.persist(&mut st, &key, None);
        }
        drop(st);
        // The next update of this task may go now.
        self.outbox.notify_one();
    }

    /// Status updates to send now: due in-flight updates, then one-shot ones.
    pub(crate) fn due_updates(&self, now: Instant) -> Vec<TaskStatus> {
        let retry = self.config.status_update_retry;
        let mut st = self.state();
        let mut out: Vec<TaskStatus> = st
            .tasks
            .values_mut()
            // An update goes out only once the record holding it is on disk — except
            // STARTING and RUNNING: after a crash `restore` derives them again from the
            // supervisor, whose record is durable before the task starts.
            .filter(|t| {
                t.durable_seq >= t.seq
                    || matches!(
                        t.updates.front_state(),
                        Some(TaskState::TaskStarting | TaskState::TaskRunning)
                    )
            })
            .flat_map(|t| t.updates.due(now, retry))
            .collect();
        out.extend(st.oneshot.drain(..));
        out
    }

    /// The `register` message: identity, resources, every task not yet forgotten (except
    /// refused ones, which never held resources: the master would reject their ids; their
    /// TASK_ERROR update is resent after registration) and the frameworks of those tasks.
    /// A task handed to a running custom executor has no container of its own but holds
    /// resources: it is reported too (else the master would call it lost).
    pub(crate) fn register_message(&self) -> v1::agent_message::Register {
        let mut st = self.state();
        let held: Vec<&Task> = st
            .tasks
            .values()
            .filter(|t| {
                !t.is_finished()
                    && (!t.container_id.is_empty()
                        || (crate::pods::custom_executor(&t.info).is_some()
                            && !t.resources.is_empty()))
            })
            .collect();
        let framework_ids: std::collections::HashSet<String> =
            held.iter().map(|t| t.framework_id.clone()).collect();
        let tasks = held
            .into_iter()
            .map(|t| AgentTask {
                task: Some(t.info.clone()),
                framework_id: t.framework_id.clone(),
                state: t.state as i32,
            })
            .collect();
        st.frameworks.retain(|id, _| framework_ids.contains(id));
        let frameworks = st.frameworks.values().cloned().collect();
        v1::agent_message::Register {
            agent_info: Some(AgentInfo {
                hostname: self.hostname.clone(),
                http_address: self.http_address.clone(),
                resources: self.total.to_proto(),
                attributes: self
                    .config
                    .attributes
                    .iter()
                    .map(|(name, value)| Attribute {
                        name: name.clone(),
                        value: value.clone(),
                    })
                    .collect(),
                id: st.agent_id.clone().unwrap_or_default(),
                ..Default::default()
            }),
            tasks,
            frameworks,
            version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }

    /// Records a (re-)registration: keeps the id and makes in-flight updates due at once.
    /// Returns true when the id changed (the caller persists it).
    pub(crate) fn registered(&self, agent_id: &str, master_id: &str) -> bool {
        let mut st = self.state();
        let changed = st.agent_id.as_deref() != Some(agent_id);
        st.agent_id = Some(agent_id.to_string());
        st.master_id = Some(master_id.to_string());
        st.connected = true;
        for t in st.tasks.values_mut() {
            t.updates.resend_all();
        }
        changed
    }

    pub(crate) fn set_disconnected(&self) {
        self.state().connected = false;
    }

    /// Newest usage sample of every running task's container.
    pub(crate) fn usage(&self) -> Vec<ContainerUsage> {
        self.telemetry.usage()
    }

    /// Role of a framework the agent knows (empty when unknown).
    pub(crate) fn framework_role(&self, framework_id: &str) -> String {
        self.state()
            .frameworks
            .get(framework_id)
            .map(|f| f.role.clone())
            .unwrap_or_default()
    }

    /// Kills every task and waits until each one is gone and its cgroup removed.
    pub(crate) async fn shutdown_tasks(&self) {
        let live: Vec<TaskKey> = {
            let mut st = self.state();
            st.shutting_down = true;
            st.tasks
                .iter()
                .filter(|(_, t)| t.is_live())
                .map(|(k, _)| k.clone())
                .collect()
        };
        if !live.is_empty() {
            tracing::info!(tasks = live.len(), "killing tasks before exit");
        }
        for (fw, id) in &live {
            self.kill_task(fw, id, None);
        }
        let handles: Vec<JoinHandle<()>> =
            std::mem::take(&mut *self.supervisors.lock().unwrap_or_else(|p| p.into_inner()));
        for h in handles {
            if let Err(e) = h.await {
                tracing::warn!(error = %e, "task supervisor failed");
            }
        }
        if let Some(cg) = self.cgroups.clone() {
            if self
                .supervisors_cgroup
                .load(std::sync::atomic::Ordering::Relaxed)
            {
                let _ = tokio::task::spawn_blocking(move || {
                    cgroups::destroy(cg.as_ref(), SUPERVISORS_CGROUP)
                })
                .await;
            }
        }
    }

    /// `/state` JSON.
    pub(crate) fn state_json(&self) -> serde_json::Value {
        let st = self.state();
        let mut tasks: Vec<TaskView> = st.tasks.values().map(TaskView::of).collect();
        tasks.sort_by(|a, b| a.started_time.total_cmp(&b.started_time));
        let completed: Vec<&TaskView> = st.completed.iter().collect();
        serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "agent_id": st.agent_id,
            "master_id": st.master_id,
            "master": self.config.master,
            "connected": st.connected,
            "hostname": self.hostname,
            "http_address": self.http_address,
            "isolation": self.cgroups.as_ref().map_or("none", |c| c.kind()),
            "resources": self.total,
            "used": Self::used(&st),
            "attributes": self.config.attributes.iter().cloned().collect::<HashMap<_, _>>(),
            "tasks": tasks,
            "completed_tasks": completed,
            "recovery_errors": *self.recovery_errors.lock().unwrap_or_else(|p| p.into_inner()),
            "oversubscription": self.oversubscription.view(),
        })
    }

    /// State name and sandbox of a task (live or completed), for the sandbox endpoint.
    pub(crate) fn lookup(
        &self,
        framework_id: &str,
        task_id: &str,
    ) -> Option<(&'static str, PathBuf)> {
        let st = self.state();
        if let Some(t) = st
            .tasks
            .get(&(framework_id.to_string(), task_id.to_string()))
        {
            if t.sandbox.as_os_str().is_empty() {
                return None;
            }
            return Some((t.state.name(), t.sandbox.clone()));
        }
        let found = st
            .completed
            .iter()
            .rev()
            .find(|t| t.framework_id == framework_id && t.id == task_id)
            .filter(|t| !t.sandbox.as_os_str().is_empty())
            .map(|t| (t.state, t.sandbox.clone()));
        found
    }
}

/// How often a task's sandbox is measured against its `disk` resource.
const DISK_CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// Every port of a task.
fn ports(resources: &Resources) -> Vec<u16> {
    resources
        .ranges("ports")
        .map(|r| {
            r.intervals()
                .iter()
                .flat_map(|&(b, e)| b..=e)
                .filter_map(|p| u16::try_from(p).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The task's first port (PORT0), if it has ports.
fn first_port(resources: &Resources) -> Option<u16> {
    resources
        .ranges("ports")
        .and_then(|r| r.intervals().first().map(|&(b, _)| b))
        .and_then(|p| u16::try_from(p).ok())
}

/// Something the agent noticed about a running task.
enum WatchEvent {
    /// Health changed (healthy, message).
    Health(bool, String),
    /// Too many failed health checks in a row.
    Unhealthy(String),
    /// The sandbox outgrew the task's `disk` resource.
    Disk(String),
}

/// The periodic checks of one running task: disk use of the sandbox and the health check.
#[derive(Default)]
struct TaskWatch {
    sandbox: PathBuf,
    disk_limit: Option<u64>,
    disk_mib: f64,
    next_disk: Option<tokio::time::Instant>,
    health: Option<crate::health::Check>,
    tracker: Option<crate::health::Tracker>,
    next_health: Option<tokio::time::Instant>,
    env: Vec<(String, String)>,
    /// Command checks of an isolated task run inside it.
    inside: Option<crate::health::InTask>,
}

impl TaskWatch {
    /// The next event; pending forever when there is nothing to watch.
    async fn next(&mut self) -> WatchEvent {
        loop {
            let disk_at = self.disk_limit.and(self.next_disk);
            let health_at = self.health.as_ref().and(self.next_health);
            let at = match (disk_at, health_at) {
                (Some(a), Some(b)) => a.min(b),
                (Some(a), None) | (None, Some(a)) => a,
                (None, None) => return std::future::pending().await,
            };
            tokio::time::sleep_until(at).await;
            let now = tokio::time::Instant::now();
            if let (Some(limit), Some(due)) = (self.disk_limit, disk_at) {
                if due <= now {
                    self.next_disk = Some(now + DISK_CHECK_INTERVAL);
                    let dir = self.sandbox.clone();
                    let used =
                        tokio::task::spawn_blocking(move || crate::fetcher::disk_usage(&dir))
                            .await
                            .unwrap_or(0);
                    if used > limit {
                        return WatchEvent::Disk(format!(
                            "disk quota exceeded: the sandbox uses {:.1} MiB of the {} MiB `disk` resource; give the task more disk or write less",
                            used as f64 / (1024.0 * 1024.0),
                            self.disk_mib
                        ));
                    }
                }
            }
            if let (Some(check), Some(due)) = (self.health.clone(), health_at) {
                if due <= now {
                    let result = crate::health::probe(
                        &check,
                        &self.sandbox,
                        &self.env,
                        self.inside.as_ref(),
                    )
                    .await;
                    let after = tokio::time::Instant::now();
                    self.next_health = Some(after + check.interval);
                    let Some(tracker) = self.tracker.as_mut() else {
                        continue;
                    };
                    let message = match &result {
                        Ok(()) => "health check passed".to_string(),
                        Err(e) => e.clone(),
                    };
                    match tracker.record(result.is_ok(), after.into_std()) {
                        crate::health::Verdict::Quiet => {}
                        crate::health::Verdict::Report(h) => return WatchEvent::Health(h, message),
                        crate::health::Verdict::Kill => {
                            return WatchEvent::Unhealthy(format!(
                                "task killed after {} consecutive failed health checks: {message}",
                                check.max_failures
                            ))
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::launch_slots;

    #[test]
    fn launch_slots_follow_the_cpus_within_bounds() {
        assert_eq!(launch_slots(1), 2);
        assert_eq!(launch_slots(2), 2);
        assert_eq!(launch_slots(6), 6);
        assert_eq!(launch_slots(64), 8);
    }
}
