//! The agent's core: its task table and what happens on each master command. Master link,
//! HTTP server and per-task supervisors all go through [`Agent`].

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
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
use crate::config::AgentConfig;
use crate::launcher::{self, LaunchSpec, TaskEnv};
use crate::sys;
use crate::task::{self, Completed, Task};

/// (framework id, task id).
pub(crate) type TaskKey = (String, String);

pub(crate) fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
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
}

/// A run_task request that passed validation.
#[derive(Debug)]
pub(crate) struct ValidatedTask {
    key: TaskKey,
    info: TaskInfo,
    resources: Resources,
    sandbox: PathBuf,
    container_id: String,
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
}

struct Outcome {
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
        let telemetry = Arc::new(crate::telemetry::Telemetry::start(&config, cgroups.as_ref()));
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
            }),
            outbox: Notify::new(),
            supervisors: Mutex::new(Vec::new()),
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
        let status = self.status(&agent_id, key, state, reason, message.clone(), exit_code);
        let Some(t) = st.tasks.get_mut(key) else {
            return false;
        };
        if !task::can_transition(t.state, state) {
            tracing::debug!(task = %key.1, from = ?t.state, to = ?state, "ignoring transition");
            return false;
        }
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
        let command = info
            .command
            .as_ref()
            .ok_or("task has no command: set task.command")?;
        launcher::argv(command).map_err(|e| e.to_string())?;
        if !(info.kill_grace_period_seconds.is_finite() && info.kill_grace_period_seconds >= 0.0) {
            return Err("kill_grace_period_seconds must be a finite number >= 0".into());
        }
        let free = self.total.saturating_sub(&Self::used(st));
        if !free.contains(&resources) {
            return Err(format!(
                "task needs {resources} but the agent only has {free} free (total {})",
                self.total
            ));
        }
        Ok(ValidatedTask {
            sandbox: self.sandbox_dir(framework_id, &info.task_id),
            key,
            info: info.clone(),
            resources,
            container_id: uuid::Uuid::new_v4().to_string(),
        })
    }

    /// Handles the master's `run_task`.
    pub(crate) fn run_task(self: &Arc<Self>, framework: FrameworkInfo, info: TaskInfo) {
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
        let now = now_secs();
        let (resources, sandbox, container_id) = match &validated {
            Ok(v) => (
                v.resources.clone(),
                v.sandbox.clone(),
                v.container_id.clone(),
            ),
            Err(_) => (Resources::new(), PathBuf::new(), String::new()),
        };
        st.tasks.insert(
            key.clone(),
            Task {
                info: info.clone(),
                framework_id: framework.id.clone(),
                container_id,
                resources,
                sandbox,
                state: TaskState::TaskStaging,
                message: String::new(),
                exit_code: None,
                pid: None,
                kill_requested: None,
                updates: Default::default(),
                started_time: now,
                updated_time: now,
            },
        );
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
        let (tx, rx) = mpsc::unbounded_channel();
        st.killers.insert(key, tx);
        st.frameworks.insert(framework.id.clone(), framework);
        drop(st);
        let agent = Arc::clone(self);
        let handle = tokio::spawn(async move { agent.supervise(v, rx).await });
        let mut sups = self.supervisors.lock().unwrap_or_else(|p| p.into_inner());
        sups.retain(|h| !h.is_finished());
        sups.push(handle);
    }

    /// Launches one task and follows it to its end.
    async fn supervise(
        self: Arc<Self>,
        v: ValidatedTask,
        mut kill_rx: mpsc::UnboundedReceiver<Duration>,
    ) {
        let key = v.key.clone();
        self.update(
            &key,
            TaskState::TaskStarting,
            TaskStatusReason::ReasonUnspecified,
            String::new(),
            None,
        );
        let outcome = match self.launch(&v).await {
            Err(e) => {
                let msg = e.to_string();
                tracing::warn!(task = %key.1, error = %msg, "launch failed");
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
            Ok(Some(child)) => self.wait(&v, child, &mut kill_rx).await,
        };
        if let Some(cg) = self.cgroups.clone() {
            let id = v.container_id.clone();
            let res = tokio::task::spawn_blocking(move || cgroups::destroy(cg.as_ref(), &id)).await;
            match res {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(task = %key.1, error = %e, "cgroup cleanup failed"),
                Err(e) => tracing::warn!(task = %key.1, error = %e, "cgroup cleanup panicked"),
            }
        }
        self.update(
            &key,
            outcome.state,
            outcome.reason,
            outcome.message,
            outcome.exit_code,
        );
    }

    /// Creates the sandbox and cgroup and starts the process. `Ok(None)`: killed meanwhile.
    async fn launch(
        &self,
        v: &ValidatedTask,
    ) -> Result<Option<tokio::process::Child>, launcher::LaunchError> {
        let command = v.info.command.clone().unwrap_or_default();
        let (program, argv) = launcher::argv(&command)?;
        let (stdout, stderr) = launcher::prepare_sandbox(&v.sandbox)?;
        let mut procs = Vec::new();
        if let Some(cg) = self.cgroups.clone() {
            let limits = Limits {
                cpus: v.resources.scalar("cpus"),
                cpu_hard_limit: self.config.cpu_hard_limit,
                mem_bytes: match v.resources.scalar("mem") {
                    m if m > 0.0 => Some((m * 1024.0 * 1024.0) as u64),
                    _ => None,
                },
            };
            let id = v.container_id.clone();
            // Tracked (bind filter, counters) before the task's process exists.
            let tel = Arc::clone(&self.telemetry);
            let (key, info, res) = (v.key.clone(), v.info.clone(), v.resources.clone());
            let role = self.framework_role(&v.key.0);
            procs = tokio::task::spawn_blocking(move || {
                cg.create(&id, &limits)?;
                tel.register(&key, &id, cg.unified_path(&id), &info, &res, role);
                cgroups::open_procs(cg.as_ref(), &id)
            })
            .await
            .map_err(|e| launcher::LaunchError::Internal(e.to_string()))??;
        }
        let agent_id = self.agent_id();
        let host = self
            .http_address
            .rsplit_once(':')
            .map_or(self.hostname.as_str(), |(h, _)| h);
        let env = launcher::environment(
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
        let mut st = self.state();
        let Some(t) = st.tasks.get_mut(&v.key) else {
            return Ok(None);
        };
        if t.kill_requested.is_some() {
            return Ok(None);
        }
        // Spawn under the lock so a concurrent kill either sees the pid or is seen above.
        let child = launcher::spawn(LaunchSpec {
            program,
            argv,
            env,
            cwd: v.sandbox.clone(),
            stdout,
            stderr,
            cgroup_procs: procs,
        })?;
        t.pid = child.id().and_then(|p| i32::try_from(p).ok());
        drop(st);
        self.update(
            &v.key,
            TaskState::TaskRunning,
            TaskStatusReason::ReasonUnspecified,
            String::new(),
            None,
        );
        Ok(Some(child))
    }

    /// Waits for the process, handling kill requests (SIGTERM, grace, SIGKILL).
    async fn wait(
        &self,
        v: &ValidatedTask,
        mut child: tokio::process::Child,
        kill_rx: &mut mpsc::UnboundedReceiver<Duration>,
    ) -> Outcome {
        let pgid = child.id().and_then(|p| i32::try_from(p).ok()).unwrap_or(0);
        let mut killed = false;
        let status = tokio::select! {
            st = child.wait() => st,
            Some(grace) = kill_rx.recv() => {
                killed = true;
                tracing::info!(task = %v.key.1, ?grace, "killing task");
                let _ = sys::signal_group(pgid, Signal::SIGTERM);
                match tokio::time::timeout(grace, child.wait()).await {
                    Ok(st) => st,
                    Err(_) => {
                        let _ = sys::signal_group(pgid, Signal::SIGKILL);
                        child.wait().await
                    }
                }
            }
        };
        if self.cgroups.is_none() {
            // Without a cgroup the process group is all we can reach.
            let _ = sys::signal_group(pgid, Signal::SIGKILL);
        }
        let oom = self
            .cgroups
            .as_ref()
            .and_then(|cg| cg.usage(&v.container_id).ok())
            .is_some_and(|u| u.oom_events > 0);
        let status = match status {
            Ok(s) => s,
            Err(e) => {
                return Outcome {
                    state: TaskState::TaskFailed,
                    reason: TaskStatusReason::ReasonCommandExecutorFailed,
                    message: format!("lost track of the task's process: {e}"),
                    exit_code: None,
                };
            }
        };
        let code = launcher::exit_code(status);
        let how = match std::os::unix::process::ExitStatusExt::signal(&status) {
            Some(sig) => format!(
                "command terminated by signal {sig} ({})",
                Signal::try_from(sig).map_or("unknown", |s| s.as_str())
            ),
            None => format!("command exited with status {code}"),
        };
        if killed {
            Outcome {
                state: TaskState::TaskKilled,
                reason: TaskStatusReason::ReasonUnspecified,
                message: format!("task killed: {how}"),
                exit_code: Some(code),
            }
        } else if oom && code != 0 {
            Outcome {
                state: TaskState::TaskFailed,
                reason: TaskStatusReason::ReasonContainerLimitationMemory,
                message: format!(
                    "memory limit of {} MiB exceeded: {how}; give the task more mem",
                    v.resources.scalar("mem")
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
        if let Some(tx) = st.killers.get(&key) {
            let _ = tx.send(grace);
        }
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
        let finished = t.is_finished();
        if finished {
            if let Some(t) = st.tasks.remove(&key) {
                st.completed.push(TaskView::of(&t));
            }
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
            .filter_map(|t| t.updates.due(now, retry))
            .collect();
        out.extend(st.oneshot.drain(..));
        out
    }

    /// The `register` message: identity, resources, every task not yet forgotten (except
    /// refused ones, which never held resources: the master would reject their ids; their
    /// TASK_ERROR update is resent after registration) and the frameworks of those tasks.
    pub(crate) fn register_message(&self) -> v1::agent_message::Register {
        let mut st = self.state();
        let held: Vec<&Task> = st
            .tasks
            .values()
            .filter(|t| !t.container_id.is_empty())
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
