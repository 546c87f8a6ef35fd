//! The master's cluster state and its transitions.
//!
//! [`Master`] owns every agent, framework, offer and task. It is driven by one tokio task (the
//! state actor in `actor.rs`); API handlers never touch it directly, they send commands and
//! await replies. Methods here take the current time as a parameter (`now`, a monotonic
//! `Duration`; `wall`, seconds since the Unix epoch for user-visible timestamps), so tests drive
//! them with a fake clock.
//!
//! Architecture Invariants:
//! - a registry change is written (fsync'd) before anyone is told about it;
//! - an offer's resources are held by the allocator until the offer is used, declined,
//!   rescinded or expires — exactly one of those, exactly once;
//! - a task's resources are recovered exactly once, when it first becomes terminal;
//! - revocable resources (an offer's or a task's `revocable` part) live only in the
//!   [`RevocablePool`], never in the DRF allocator, and follow the same hold/recover rules;
//! - a bad call returns an error `Status` and changes nothing.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::Duration;

use brim_proto::v1::{
    self, agent_message, event, master_message, operation, AgentInfo, Event, FrameworkInfo,
    MasterMessage, TaskInfo, TaskState, TaskStatus, TaskStatusReason, TaskStatusSource,
};
use brim_proto::{Resources, CAPABILITY_PARTITION_AWARE, CAPABILITY_REVOCABLE_RESOURCES};
use tokio::sync::mpsc;
use tonic::Status;

use crate::allocator::{Allocation, Allocator, AllocatorConfig, RevocablePool};
use crate::metrics::MasterMetrics;
use crate::registry::{
    AgentRecord, AgentRegistryState, FrameworkRecord, RegistryError, RegistrySnapshot,
    RegistryStore, RoleRecord, VolumeRecord,
};

/// Channel to one agent's stream.
pub type AgentTx = mpsc::Sender<Result<MasterMessage, Status>>;
/// Channel to one framework's event stream.
pub type FrameworkTx = mpsc::Sender<Result<Event, Status>>;

/// Tunables of the master state machine.
#[derive(Debug, Clone)]
pub struct StateConfig {
    /// Interval agents are told to heartbeat at.
    pub agent_heartbeat_interval: Duration,
    /// An agent silent for this many intervals is marked unreachable.
    pub max_missed_heartbeats: u32,
    /// Interval of heartbeat events to frameworks.
    pub framework_heartbeat_interval: Duration,
    /// An offer not used within this time is rescinded.
    pub offer_timeout: Duration,
    /// Failover timeout for frameworks that declare none (0).
    pub default_failover_timeout: Duration,
    /// Default refuse filter for declines and for the unused part of accepts.
    pub default_refuse: Duration,
    /// How many terminal tasks `/state` keeps.
    pub max_completed_tasks: usize,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            agent_heartbeat_interval: Duration::from_secs(15),
            max_missed_heartbeats: 5,
            framework_heartbeat_interval: Duration::from_secs(15),
            offer_timeout: Duration::from_secs(60),
            default_failover_timeout: Duration::from_secs(10),
            default_refuse: Duration::from_secs(5),
            max_completed_tasks: 1000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AgentLink {
    Connected,
    Disconnected,
    Unreachable,
}

impl AgentLink {
    fn as_str(self) -> &'static str {
        match self {
            AgentLink::Connected => "connected",
            AgentLink::Disconnected => "disconnected",
            AgentLink::Unreachable => "unreachable",
        }
    }
}

struct AgentEntry {
    info: AgentInfo,
    total: Resources,
    attributes: Vec<(String, String)>,
    tx: Option<AgentTx>,
    conn: u64,
    link: AgentLink,
    last_seen: Duration,
    registered_time: f64,
    /// Tasks the master reported LOST/UNREACHABLE when the agent became unreachable.
    partitioned_tasks: HashSet<TaskKey>,
    /// The agent's last slack report: what non-revocable tasks are estimated to use.
    used_estimate: Resources,
}

struct FrameworkEntry {
    info: FrameworkInfo,
    tx: Option<FrameworkTx>,
    conn: u64,
    disconnected_at: Option<Duration>,
    offers: HashSet<String>,
    registered_time: f64,
    suppressed: bool,
}

impl FrameworkEntry {
    fn revocable_capable(&self) -> bool {
        self.info
            .capabilities
            .iter()
            .any(|c| c == CAPABILITY_REVOCABLE_RESOURCES)
    }

    fn partition_aware(&self) -> bool {
        self.info
            .capabilities
            .iter()
            .any(|c| c == CAPABILITY_PARTITION_AWARE)
    }
}

type TaskKey = (String, String); // (framework id, task id)

#[derive(Clone)]
struct TaskEntry {
    info: TaskInfo,
    framework_id: String,
    /// The framework's principal when the task was launched (who may read its sandbox,
    /// also after the framework is gone).
    principal: String,
    agent_id: String,
    /// Non-revocable resources (held in the DRF allocator).
    resources: Resources,
    /// Revocable resources (held in the revocable pool); non-empty = a revocable task.
    revocable: Resources,
    /// Resources of its agent reserved for the framework's role (held in the allocator's
    /// reservation of that role) and that role.
    reserved: Resources,
    reserved_role: String,
    state: TaskState,
    status: Option<TaskStatus>,
    updated_time: f64,
    usage: Option<v1::ContainerUsage>,
}

struct OfferEntry {
    framework_id: String,
    agent_id: String,
    /// Non-revocable part (DRF allocator) and revocable part (revocable pool); an offer
    /// carries one or the other.
    resources: Resources,
    revocable: Resources,
    /// The part reserved for `role` (the framework's role when offered).
    reserved: Resources,
    role: String,
    /// Persistent volumes offered (their disk is part of `reserved`).
    volumes: Vec<VolumeRecord>,
    expires: Duration,
}

/// A RESERVE or UNRESERVE of one ACCEPT, validated, to apply in order.
enum ReservationChange {
    Reserve(Resources),
    Unreserve(Resources),
}

/// The resources of a RESERVE/UNRESERVE operation: every entry reserved for `role`, the
/// framework's role, and none revocable.
fn reservation_resources(list: &[v1::Resource], role: &str, op: &str) -> Result<Resources, Status> {
    if list.is_empty() {
        return Err(Status::invalid_argument(format!(
            "{op} operation has no resources"
        )));
    }
    if role == "*" {
        return Err(Status::invalid_argument(format!(
            "{op}: frameworks of role `*` cannot reserve resources; subscribe with a role"
        )));
    }
    for r in list {
        if r.revocable {
            return Err(Status::invalid_argument(format!(
                "{op}: resource `{}` is revocable; only non-revocable resources can be reserved",
                r.name
            )));
        }
        if r.reservation_role != role {
            return Err(Status::invalid_argument(format!(
                "{op}: resource `{}` names reservation role `{}` but the framework's role is `{role}`; reservations are for the framework's own role",
                r.name, r.reservation_role
            )));
        }
    }
    Resources::from_proto(list)
        .map_err(|e| Status::invalid_argument(format!("{op}: invalid resources: {e}")))
}

/// Persistent volume ids: printable, bounded, safe as a directory name on the agent.
fn validate_persistence_id(id: &str) -> Result<(), Status> {
    validate_task_id(id).map_err(|_| {
        Status::invalid_argument(format!(
            "persistence id `{id}` must be 1-255 letters, digits, `.`, `_` or `-`"
        ))
    })
}

/// A volume's path inside the sandbox: relative, no `..`, bounded.
fn validate_container_path(path: &str) -> Result<(), Status> {
    let p = std::path::Path::new(path);
    let ok = !path.is_empty()
        && path.len() <= 255
        && !path.contains('\0')
        && p.components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
    if ok {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "volume container_path `{path}` must be a relative path inside the sandbox without `..`"
        )))
    }
}

/// The persistent volumes named in a resource list (entries with `volume` set).
fn volume_entries(
    list: &[v1::Resource],
    role: &str,
    op: &str,
) -> Result<Vec<VolumeRecord>, Status> {
    let mut out = Vec::new();
    for r in list {
        let Some(v) = &r.volume else { continue };
        let size = match (&r.name[..], &r.value) {
            ("disk", Some(v1::resource::Value::Scalar(x))) if x.is_finite() && *x > 0.0 => *x,
            _ => {
                return Err(Status::invalid_argument(format!(
                    "{op}: persistent volume `{}` must be a `disk` scalar > 0",
                    v.persistence_id
                )))
            }
        };
        if r.revocable || r.reservation_role != role {
            return Err(Status::invalid_argument(format!(
                "{op}: persistent volume `{}` must be on disk reserved for the framework's role `{role}` (not revocable)",
                v.persistence_id
            )));
        }
        validate_persistence_id(&v.persistence_id)?;
        validate_container_path(&v.container_path)?;
        out.push(VolumeRecord {
            persistence_id: v.persistence_id.clone(),
            role: role.to_string(),
            disk: size,
            container_path: v.container_path.clone(),
        });
    }
    Ok(out)
}

/// The wire form of a persistent volume (a reserved `disk` entry with `volume`).
fn volume_resource(v: &VolumeRecord) -> v1::Resource {
    v1::Resource {
        name: "disk".into(),
        value: Some(v1::resource::Value::Scalar(v.disk)),
        reservation_role: v.role.clone(),
        volume: Some(v1::Volume {
            persistence_id: v.persistence_id.clone(),
            container_path: v.container_path.clone(),
        }),
        ..Default::default()
    }
}

/// The disk the volumes take.
fn volumes_disk<'a>(vols: impl IntoIterator<Item = &'a VolumeRecord>) -> Resources {
    let mut out = Resources::new();
    for v in vols {
        let mut one = Resources::new();
        if one.set_scalar("disk", v.disk).is_ok() {
            out.add(&one);
        }
    }
    out
}

/// Reservations of an agent (role -> resources) in the registry's operator syntax.
fn reservation_record(reservations: &BTreeMap<String, Resources>) -> BTreeMap<String, String> {
    reservations
        .iter()
        .filter(|(_, r)| !r.is_empty())
        .map(|(role, r)| (role.clone(), r.to_string()))
        .collect()
}

/// Task ids and names: printable, bounded, safe to use in paths on the agent.
fn validate_task_id(id: &str) -> Result<(), Status> {
    if id.is_empty() || id.len() > 255 {
        return Err(Status::invalid_argument("task id must be 1-255 characters"));
    }
    if id == "."
        || id == ".."
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        return Err(Status::invalid_argument(format!(
            "task id `{id}` may contain only letters, digits, `.`, `_` and `-`"
        )));
    }
    Ok(())
}

fn validate_role(role: &str) -> Result<(), Status> {
    if role == "*" {
        return Ok(());
    }
    if role.is_empty()
        || role.len() > 128
        || role.starts_with('.')
        || !role
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/".contains(c))
    {
        return Err(Status::invalid_argument(format!(
            "role `{role}` is invalid: use `*` or letters, digits, `.`, `_`, `-`, `/`"
        )));
    }
    Ok(())
}

/// The tasks of a LAUNCH or LAUNCH_GROUP operation, checked as a whole; for a group also its
/// executor, which every task of the group then carries (`TaskInfo.executor`), so the agent
/// and the master's task table know which tasks belong together.
fn launch_tasks(
    op: &operation::Operation,
) -> Result<(Vec<TaskInfo>, Option<v1::ExecutorInfo>), Status> {
    match op {
        operation::Operation::LaunchGroup(g) => {
            let executor = g.executor.clone().ok_or_else(|| {
                Status::invalid_argument(
                    "LAUNCH_GROUP needs an executor: set launch_group.executor",
                )
            })?;
            validate_task_id(&executor.executor_id).map_err(|_| {
                Status::invalid_argument(
                    "LAUNCH_GROUP: invalid executor id: use 1-255 characters of [A-Za-z0-9._-]",
                )
            })?;
            let default = executor.r#type == v1::executor_info::Type::Default as i32;
            let has_command = executor
                .command
                .as_ref()
                .is_some_and(|c| !c.value.is_empty());
            if default && has_command {
                return Err(Status::invalid_argument(
                    "LAUNCH_GROUP: a DEFAULT executor has no command (the agent runs the group): drop executor.command or make the executor CUSTOM",
                ));
            }
            if !default && !has_command {
                return Err(Status::invalid_argument(
                    "LAUNCH_GROUP: a CUSTOM executor needs a command: set executor.command, or use type DEFAULT",
                ));
            }
            let tasks = g
                .task_group
                .as_ref()
                .map(|t| t.tasks.clone())
                .unwrap_or_default();
            if tasks.is_empty() {
                return Err(Status::invalid_argument(
                    "LAUNCH_GROUP has no tasks: set launch_group.task_group.tasks",
                ));
            }
            let mut out = Vec::with_capacity(tasks.len());
            for mut t in tasks {
                if t.executor.as_ref().is_some_and(|e| *e != executor) {
                    return Err(Status::invalid_argument(format!(
                        "LAUNCH_GROUP: task {} names its own executor; tasks of a group run under the group's executor: drop task.executor",
                        t.task_id
                    )));
                }
                if default && t.command.as_ref().is_none_or(|c| c.value.is_empty()) {
                    return Err(Status::invalid_argument(format!(
                        "LAUNCH_GROUP: task {} has no command: the default executor runs each task's command",
                        t.task_id
                    )));
                }
                t.executor = Some(executor.clone());
                out.push(t);
            }
            Ok((out, Some(executor)))
        }
        operation::Operation::Launch(l) => {
            if l.task_infos.is_empty() {
                return Err(Status::invalid_argument("launch operation has no tasks"));
            }
            if let Some(t) = l.task_infos.iter().find(|t| {
                t.executor
                    .as_ref()
                    .is_some_and(|e| e.r#type == v1::executor_info::Type::Default as i32)
            }) {
                return Err(Status::invalid_argument(format!(
                    "task {} names a DEFAULT executor: launch it in a task group (LAUNCH_GROUP) instead",
                    t.task_id
                )));
            }
            Ok((l.task_infos.clone(), None))
        }
        _ => Err(Status::invalid_argument("not a launch operation")),
    }
}

fn refuse_duration(filters: Option<&v1::Filters>, default: Duration) -> Result<Duration, Status> {
    match filters.and_then(|f| f.refuse_seconds) {
        None => Ok(default),
        Some(s) if s.is_finite() && s >= 0.0 => {
            Ok(Duration::from_secs_f64(s.min(365.0 * 24.0 * 3600.0)))
        }
        Some(s) => Err(Status::invalid_argument(format!(
            "refuse_seconds {s} is invalid: use a finite number >= 0"
        ))),
    }
}

/// All cluster state owned by the master.
pub struct Master {
    config: StateConfig,
    master_id: String,
    allocator: Allocator,
    revocable: RevocablePool,
    registry: Box<dyn RegistryStore>,
    known: RegistrySnapshot,
    agents: HashMap<String, AgentEntry>,
    frameworks: HashMap<String, FrameworkEntry>,
    tasks: HashMap<TaskKey, TaskEntry>,
    completed: VecDeque<TaskEntry>,
    offers: HashMap<String, OfferEntry>,
    next_id: u64,
    next_conn: u64,
    last_framework_heartbeat: Duration,
    /// What the next allocation must look at: everything, or only these agents.
    pending_full: bool,
    pending_agents: HashSet<String>,
    /// Set when the registry refused a write because this master no longer leads.
    fenced: bool,
    pub(crate) metrics: MasterMetrics,
}

impl Master {
    /// Builds the state from the registry. Known frameworks start disconnected, within their
    /// failover timeout; known agents are admitted again when they re-register with their
    /// tasks (agents, not the registry, are the source of truth for tasks).
    pub fn new(
        config: StateConfig,
        master_id: String,
        registry: Box<dyn RegistryStore>,
        now: Duration,
    ) -> Result<Self, RegistryError> {
        let known = registry.load()?;
        let mut allocator = Allocator::new(AllocatorConfig {
            default_refuse: config.default_refuse,
        });
        for role in known.roles.values() {
            allocator.set_weight(&role.name, role.weight);
            if role.quota_guarantee.is_some() || role.quota_limit.is_some() {
                let parse = |s: &Option<String>| {
                    s.as_deref().map(Resources::parse).transpose().map_err(|e| {
                        RegistryError::Corrupt {
                            key: role.name.clone(),
                            why: e.to_string(),
                        }
                    })
                };
                allocator.set_quota(
                    &role.name,
                    crate::allocator::Quota {
                        guarantee: parse(&role.quota_guarantee)?.unwrap_or_default(),
                        limit: parse(&role.quota_limit)?,
                    },
                );
            }
        }
        let mut frameworks = HashMap::new();
        for f in known.frameworks.values() {
            let info = FrameworkInfo {
                user: f.user.clone(),
                name: f.name.clone(),
                id: f.id.clone(),
                role: f.role.clone(),
                failover_timeout: f.failover_timeout,
                capabilities: f.capabilities.clone(),
                hostname: f.hostname.clone(),
                principal: f.principal.clone(),
            };
            allocator.add_framework(&f.id, &f.role);
            allocator.set_framework_active(&f.id, false);
            frameworks.insert(
                f.id.clone(),
                FrameworkEntry {
                    info,
                    tx: None,
                    conn: 0,
                    disconnected_at: Some(now),
                    offers: HashSet::new(),
                    registered_time: f.registered_time,
                    suppressed: false,
                },
            );
        }
        Ok(Master {
            config,
            master_id,
            allocator,
            revocable: RevocablePool::new(),
            registry,
            known,
            agents: HashMap::new(),
            frameworks,
            tasks: HashMap::new(),
            completed: VecDeque::new(),
            offers: HashMap::new(),
            next_id: 0,
            next_conn: 0,
            last_framework_heartbeat: now,
            pending_full: true,
            pending_agents: HashSet::new(),
            fenced: false,
            metrics: MasterMetrics::new(),
        })
    }

    /// A registry write failed: the change is refused. A fenced write means another master
    /// leads now; this one must stop acting (see [`Master::is_fenced`]).
    fn registry_failed(&mut self, e: RegistryError) -> Status {
        if matches!(e, RegistryError::Fenced) {
            self.fenced = true;
            return Status::unavailable(
                "this master is no longer the leader; retry against the new leader",
            );
        }
        Status::unavailable(format!("master could not persist the change: {e}"))
    }

    /// True once the registry has refused a write for lack of leadership.
    pub fn is_fenced(&self) -> bool {
        self.fenced
    }

    pub fn master_id(&self) -> &str {
        &self.master_id
    }

    fn fresh_id(&mut self, kind: &str) -> String {
        self.next_id += 1;
        format!("{}-{kind}{}", self.master_id, self.next_id)
    }

    fn fresh_conn(&mut self) -> u64 {
        self.next_conn += 1;
        self.next_conn
    }

    // ----------------------------------------------------------------- agents

    /// Registers or re-registers an agent. Replies with the agent id and the connection id
    /// that later messages from this stream must carry.
    pub fn register_agent(
        &mut self,
        reg: agent_message::Register,
        tx: AgentTx,
        now: Duration,
        wall: f64,
    ) -> Result<(String, u64), Status> {
        let mut info = reg
            .agent_info
            .ok_or_else(|| Status::invalid_argument("register needs agent_info"))?;
        let total = Resources::from_proto(&info.resources)
            .map_err(|e| Status::invalid_argument(format!("agent resources are invalid: {e}")))?;
        if total.scalar("cpus") <= 0.0 && total.scalar("mem") <= 0.0 {
            return Err(Status::invalid_argument(
                "agent offers neither cpus nor mem: start it with --resources cpus:N;mem:MiB",
            ));
        }
        if info.hostname.is_empty() {
            info.hostname = "unknown".into();
        }
        // Validate the reported tasks before changing anything.
        let mut reported: Vec<(TaskKey, TaskEntry)> = Vec::new();
        for t in &reg.tasks {
            let task = t
                .task
                .clone()
                .ok_or_else(|| Status::invalid_argument("re-registered task without task info"))?;
            validate_task_id(&task.task_id)?;
            let invalid = |e: brim_proto::ResourceError| {
                Status::invalid_argument(format!(
                    "task {} has invalid resources: {e}",
                    task.task_id
                ))
            };
            let resources = Resources::from_proto_unreserved(&task.resources).map_err(invalid)?;
            let revocable = Resources::from_proto_revocable(&task.resources).map_err(invalid)?;
            let (reserved_role, reserved) = Resources::from_proto_reserved(&task.resources)
                .map_err(invalid)?
                .into_iter()
                .next()
                .unwrap_or_default();
            let state = TaskState::try_from(t.state).unwrap_or(TaskState::TaskUnknown);
            reported.push((
                (t.framework_id.clone(), task.task_id.clone()),
                TaskEntry {
                    info: task,
                    principal: self
                        .frameworks
                        .get(&t.framework_id)
                        .map(|f| f.info.principal.clone())
                        .or_else(|| {
                            self.known
                                .frameworks
                                .get(&t.framework_id)
                                .map(|f| f.principal.clone())
                        })
                        .unwrap_or_default(),
                    framework_id: t.framework_id.clone(),
                    agent_id: String::new(),
                    resources,
                    revocable,
                    reserved,
                    reserved_role,
                    state,
                    status: None,
                    updated_time: wall,
                    usage: None,
                },
            ));
        }

        let id = if info.id.is_empty() {
            self.fresh_id("S")
        } else {
            if let Some(rec) = self.known.agents.get(&info.id) {
                if rec.state == AgentRegistryState::Gone {
                    return Err(Status::failed_precondition(format!(
                        "agent {} was marked gone; wipe the agent's work dir so it registers as a new agent",
                        info.id
                    )));
                }
            }
            info.id.clone()
        };
        info.id = id.clone();
        let attributes: Vec<(String, String)> = info
            .attributes
            .iter()
            .map(|a| (a.name.clone(), a.value.clone()))
            .collect();
        let record = AgentRecord {
            id: id.clone(),
            hostname: info.hostname.clone(),
            http_address: info.http_address.clone(),
            resources: total.to_string(),
            attributes: attributes.clone(),
            state: AgentRegistryState::Admitted,
            since: wall,
            reservations: self
                .known
                .agents
                .get(&id)
                .map(|k| k.reservations.clone())
                .unwrap_or_default(),
            volumes: self
                .known
                .agents
                .get(&id)
                .map(|k| k.volumes.clone())
                .unwrap_or_default(),
        };
        // Re-registration of an unchanged, admitted agent needs no write: after a failover
        // thousands of agents come back at once and the registry must not be the bottleneck.
        let unchanged = self.known.agents.get(&id).is_some_and(|known| {
            AgentRecord {
                since: known.since,
                ..record.clone()
            } == *known
        });
        if !unchanged {
            self.registry
                .put_agent(&record)
                .map_err(|e| self.registry_failed(e))?;
            self.known.agents.insert(id.clone(), record);
        }

        // A previous incarnation of this agent: forget its offers and allocation.
        let previous = self.agents.remove(&id);
        if previous.is_some() {
            self.rescind_offers_on_agent(&id);
            self.allocator.remove_agent(&id);
            self.revocable.remove_agent(&id);
        }
        let partitioned = previous
            .as_ref()
            .map(|p| p.partitioned_tasks.clone())
            .unwrap_or_default();

        // Frameworks named by the agent that this master does not know (master failover).
        for f in &reg.frameworks {
            if !f.id.is_empty() && !self.frameworks.contains_key(&f.id) {
                let mut finfo = f.clone();
                if finfo.role.is_empty() {
                    finfo.role = "*".into();
                }
                self.allocator.add_framework(&finfo.id, &finfo.role);
                self.allocator.set_framework_active(&finfo.id, false);
                self.frameworks.insert(
                    finfo.id.clone(),
                    FrameworkEntry {
                        info: finfo,
                        tx: None,
                        conn: 0,
                        disconnected_at: Some(now),
                        offers: HashSet::new(),
                        registered_time: wall,
                        suppressed: false,
                    },
                );
            }
        }

        // Reconcile tasks: the agent is the source of truth.
        let reported_keys: HashSet<TaskKey> = reported.iter().map(|(k, _)| k.clone()).collect();
        // Only an agent this master already knew can have tasks in the table (tasks leave it
        // when their agent is removed), so a first registration skips the O(tasks) scan —
        // after a failover thousands of agents register at once.
        let vanished: Vec<TaskKey> = if previous.is_some() {
            self.tasks
                .iter()
                .filter(|(k, t)| t.agent_id == id && !reported_keys.contains(*k))
                .map(|(k, _)| k.clone())
                .collect()
        } else {
            Vec::new()
        };
        for key in vanished {
            // Already out of the allocator (agent removed above); do not recover again.
            if let Some(mut t) = self.tasks.remove(&key) {
                let status = self.master_status(
                    &t,
                    TaskState::TaskLost,
                    TaskStatusReason::ReasonAgentRestarted,
                    "the agent re-registered without this task",
                    wall,
                );
                t.state = TaskState::TaskLost;
                t.status = Some(status.clone());
                self.send_update(&t.framework_id.clone(), status);
                self.push_completed(t);
            }
        }
        let mut used: BTreeMap<String, Resources> = BTreeMap::new();
        let mut used_revocable: Vec<(String, Resources)> = Vec::new();
        let mut used_reserved: Vec<(String, String, Resources)> = Vec::new();
        let mut to_kill: Vec<(String, String)> = Vec::new();
        for (key, mut t) in reported {
            t.agent_id = id.clone();
            if t.state.is_terminal() {
                // Finished while we were apart; its final update is on its way. Keep for /state.
                self.tasks.remove(&key);
                self.push_completed(t);
                continue;
            }
            let fw_partition_aware = self
                .frameworks
                .get(&t.framework_id)
                .map(|f| f.partition_aware());
            if partitioned.contains(&key) && fw_partition_aware != Some(true) {
                // The framework was told TASK_LOST; Mesos semantics: kill it now.
                to_kill.push(key.clone());
            } else if partitioned.contains(&key) {
                let status = self.master_status(
                    &t,
                    t.state,
                    TaskStatusReason::ReasonUnspecified,
                    "agent re-registered after being unreachable",
                    wall,
                );
                t.status = Some(status.clone());
                self.send_update(&t.framework_id.clone(), status);
            }
            if !self.frameworks.contains_key(&t.framework_id) {
                self.allocator.add_framework(&t.framework_id, "*");
                self.allocator.set_framework_active(&t.framework_id, false);
            }
            used.entry(t.framework_id.clone())
                .or_default()
                .add(&t.resources);
            if !t.revocable.is_empty() {
                used_revocable.push((t.framework_id.clone(), t.revocable.clone()));
            }
            if !t.reserved.is_empty() {
                used_reserved.push((
                    t.framework_id.clone(),
                    t.reserved_role.clone(),
                    t.reserved.clone(),
                ));
            }
            if let Some(old) = self.tasks.get(&key) {
                t.status = old.status.clone();
                t.usage = old.usage.clone();
            }
            self.tasks.insert(key, t);
        }
        let used: Vec<(String, Resources)> = used.into_iter().collect();
        self.allocator.add_agent(&id, total.clone(), &used);
        let reservations: Vec<(String, Resources)> = self
            .known
            .agents
            .get(&id)
            .map(|k| {
                k.reservations
                    .iter()
                    .filter_map(|(role, r)| match Resources::parse(r) {
                        Ok(r) => Some((role.clone(), r)),
                        Err(e) => {
                            tracing::warn!(agent_id = %id, role, "ignoring a corrupt reservation in the registry: {e}");
                            None
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        self.allocator
            .set_agent_reservations(&id, &reservations, &used_reserved);
        self.allocator.set_agent_active(&id, true);
        self.revocable.add_agent(&id, &used_revocable);
        self.pending_agents.insert(id.clone());
        let conn = self.fresh_conn();
        let registered_time = previous.as_ref().map_or(wall, |p| p.registered_time);
        let registered = MasterMessage {
            message: Some(master_message::Message::Registered(
                master_message::Registered {
                    agent_id: id.clone(),
                    heartbeat_interval_seconds: self.config.agent_heartbeat_interval.as_secs_f64(),
                    master_id: self.master_id.clone(),
                },
            )),
        };
        let _ = tx.try_send(Ok(registered));
        for (fw, task) in to_kill {
            let _ = tx.try_send(Ok(kill_message(&fw, &task, None)));
        }
        self.agents.insert(
            id.clone(),
            AgentEntry {
                info,
                total,
                attributes,
                tx: Some(tx),
                conn,
                link: AgentLink::Connected,
                last_seen: now,
                registered_time,
                partitioned_tasks: HashSet::new(),
                used_estimate: Resources::new(),
            },
        );
        self.metrics.agent_registrations.inc();
        tracing::info!(agent_id = %id, "agent registered");
        Ok((id, conn))
    }

    /// A message on an agent's stream after registration.
    pub fn agent_message(
        &mut self,
        agent_id: &str,
        conn: u64,
        msg: agent_message::Message,
        now: Duration,
        wall: f64,
    ) {
        let Some(agent) = self.agents.get_mut(agent_id) else {
            return;
        };
        if agent.conn != conn {
            return; // a stale stream of an agent that has reconnected
        }
        agent.last_seen = now;
        match msg {
            agent_message::Message::Register(_) => {
                if let Some(tx) = &agent.tx {
                    let _ = tx.try_send(Ok(MasterMessage {
                        message: Some(master_message::Message::Error(master_message::Error {
                            message: "already registered on this stream; open a new stream to re-register".into(),
                        })),
                    }));
                }
            }
            agent_message::Message::Heartbeat(_) => {}
            agent_message::Message::StatusUpdate(u) => {
                if let Some(status) = u.status {
                    self.status_update(agent_id, status, wall);
                }
            }
            agent_message::Message::Usage(u) => {
                for c in u.containers {
                    if let Some(t) = self
                        .tasks
                        .get_mut(&(c.framework_id.clone(), c.task_id.clone()))
                    {
                        if t.agent_id == agent_id {
                            t.usage = Some(c);
                        }
                    }
                }
            }
            agent_message::Message::Slack(s) => self.agent_slack(agent_id, s, now),
            agent_message::Message::ExecutorMessage(m) => self.executor_message(agent_id, m),
        }
    }

    fn status_update(&mut self, agent_id: &str, mut status: TaskStatus, wall: f64) {
        self.metrics.status_updates.inc();
        status.agent_id = agent_id.to_string();
        if status.timestamp == 0.0 {
            status.timestamp = wall;
        }
        let key = (status.framework_id.clone(), status.task_id.clone());
        let state = TaskState::try_from(status.state).unwrap_or(TaskState::TaskUnknown);
        if let Some(t) = self.tasks.get_mut(&key) {
            if t.agent_id == agent_id {
                let was_terminal = t.state.is_terminal();
                t.state = state;
                t.status = Some(status.clone());
                t.updated_time = wall;
                if state.is_terminal() && !was_terminal {
                    let (fw, ag, res, rev) = (
                        t.framework_id.clone(),
                        t.agent_id.clone(),
                        t.resources.clone(),
                        t.revocable.clone(),
                    );
                    let (role, reserved) = (t.reserved_role.clone(), t.reserved.clone());
                    if let Some(t) = self.tasks.remove(&key) {
                        self.push_completed(t);
                    }
                    if self.agents.contains_key(&ag) {
                        self.recover(&fw, &ag, &res, None, Duration::ZERO);
                        self.recover_revocable(&fw, &ag, &rev, None, Duration::ZERO);
                        self.recover_reserved(&fw, &ag, &role, &reserved, None, Duration::ZERO);
                    }
                }
            }
        }
        let framework_known = self.frameworks.contains_key(&status.framework_id);
        if framework_known {
            self.send_update(&status.framework_id.clone(), status);
        } else if !status.uuid.is_empty() {
            // Nobody will ever acknowledge it: acknowledge on the framework's behalf so the
            // agent stops retrying.
            if let Some(tx) = self.agents.get(agent_id).and_then(|a| a.tx.as_ref()) {
                let _ = tx.try_send(Ok(ack_message(
                    &status.framework_id,
                    &status.task_id,
                    status.uuid,
                )));
            }
        }
    }

    /// The agent's stream ended. It keeps its tasks until it is declared unreachable.
    pub fn agent_disconnected(&mut self, agent_id: &str, conn: u64) {
        let Some(agent) = self.agents.get_mut(agent_id) else {
            return;
        };
        if agent.conn != conn || agent.link != AgentLink::Connected {
            return;
        }
        agent.tx = None;
        agent.link = AgentLink::Disconnected;
        tracing::warn!(agent_id, "agent disconnected");
        self.allocator.set_agent_active(agent_id, false);
        self.revocable.set_agent_active(agent_id, false);
        self.rescind_offers_on_agent(agent_id);
    }

    /// Operator call: the agent is gone for good (machine decommissioned). Its tasks become
    /// `TASK_GONE_BY_OPERATOR`, its resources leave the cluster, and it may never re-register
    /// with this id (a wiped agent registers as a new one).
    pub fn mark_agent_gone(&mut self, agent_id: &str, wall: f64) -> Result<(), Status> {
        let mut rec = self
            .known
            .agents
            .get(agent_id)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("agent {agent_id:?} is unknown")))?;
        if rec.state == AgentRegistryState::Gone {
            return Ok(());
        }
        rec.state = AgentRegistryState::Gone;
        rec.since = wall;
        self.registry
            .put_agent(&rec)
            .map_err(|e| self.registry_failed(e))?;
        self.known.agents.insert(agent_id.to_string(), rec);
        self.rescind_offers_on_agent(agent_id);
        self.allocator.remove_agent(agent_id);
        self.revocable.remove_agent(agent_id);
        let keys: Vec<TaskKey> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.agent_id == agent_id)
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            let Some(mut t) = self.tasks.remove(&key) else {
                continue;
            };
            let status = self.master_status(
                &t,
                TaskState::TaskGoneByOperator,
                TaskStatusReason::ReasonAgentRemoved,
                "the operator marked the agent gone",
                wall,
            );
            t.state = TaskState::TaskGoneByOperator;
            t.status = Some(status.clone());
            t.updated_time = wall;
            self.send_update(&t.framework_id.clone(), status);
            self.push_completed(t);
        }
        if let Some(agent) = self.agents.remove(agent_id) {
            if let Some(tx) = agent.tx {
                let _ = tx.try_send(Ok(MasterMessage {
                    message: Some(master_message::Message::Error(master_message::Error {
                        message: format!(
                            "agent {agent_id} was marked gone by the operator; wipe its work dir to register anew"
                        ),
                    })),
                }));
            }
        }
        tracing::warn!(agent_id, "agent marked gone by the operator");
        Ok(())
    }

    fn mark_unreachable(&mut self, agent_id: &str, wall: f64) {
        let keys: Vec<TaskKey> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.agent_id == agent_id)
            .map(|(k, _)| k.clone())
            .collect();
        self.rescind_offers_on_agent(agent_id);
        self.allocator.remove_agent(agent_id);
        self.revocable.remove_agent(agent_id);
        if let Some(rec) = self.known.agents.get_mut(agent_id) {
            rec.state = AgentRegistryState::Unreachable;
            rec.since = wall;
            let rec = rec.clone();
            if let Err(e) = self.registry.put_agent(&rec) {
                tracing::error!(agent_id, "cannot record agent as unreachable: {e}");
                self.registry_failed(e);
            }
        }
        let mut partitioned = HashSet::new();
        for key in keys {
            let Some(mut t) = self.tasks.remove(&key) else {
                continue;
            };
            let aware = self
                .frameworks
                .get(&t.framework_id)
                .is_some_and(FrameworkEntry::partition_aware);
            let state = if aware {
                TaskState::TaskUnreachable
            } else {
                TaskState::TaskLost
            };
            let status = self.master_status(
                &t,
                state,
                TaskStatusReason::ReasonAgentUnreachable,
                "agent stopped heartbeating and was marked unreachable",
                wall,
            );
            t.state = state;
            t.status = Some(status.clone());
            t.updated_time = wall;
            self.send_update(&t.framework_id.clone(), status);
            partitioned.insert(key);
            self.push_completed(t);
        }
        if let Some(agent) = self.agents.get_mut(agent_id) {
            agent.link = AgentLink::Unreachable;
            agent.tx = None;
            agent.partitioned_tasks = partitioned;
        }
        self.metrics.agents_marked_unreachable.inc();
        tracing::warn!(agent_id, "agent marked unreachable");
    }

    // -------------------------------------------------------------- frameworks

    /// A known framework's info (connected or within its failover timeout).
    pub fn framework_info(&self, framework_id: &str) -> Option<&FrameworkInfo> {
        if framework_id.is_empty() {
            return None;
        }
        self.frameworks.get(framework_id).map(|f| &f.info)
    }

    /// Subscribes a framework (new, or failing over to a new connection when its id is set).
    pub fn subscribe(
        &mut self,
        mut info: FrameworkInfo,
        tx: FrameworkTx,
        now: Duration,
        wall: f64,
    ) -> Result<(String, u64), Status> {
        if info.role.is_empty() {
            info.role = "*".into();
        }
        validate_role(&info.role)?;
        if info.name.len() > 256 || info.user.len() > 256 {
            return Err(Status::invalid_argument(
                "framework name and user must be at most 256 bytes",
            ));
        }
        if !info.failover_timeout.is_finite() || info.failover_timeout < 0.0 {
            return Err(Status::invalid_argument(format!(
                "failover_timeout {} is invalid: use a finite number of seconds >= 0",
                info.failover_timeout
            )));
        }
        if info.user.is_empty() {
            info.user = "root".into();
        }
        let id = if info.id.is_empty() {
            self.fresh_id("F")
        } else {
            if info.id.len() > 255 {
                return Err(Status::invalid_argument(
                    "framework id is longer than 255 bytes",
                ));
            }
            info.id.clone()
        };
        info.id = id.clone();
        if let Some(existing) = self.frameworks.get(&id) {
            if existing.info.role != info.role {
                return Err(Status::invalid_argument(format!(
                    "framework {id} is subscribed with role `{}`; changing roles on failover is not supported",
                    existing.info.role
                )));
            }
        }
        let registered_time = self.frameworks.get(&id).map_or(wall, |f| f.registered_time);
        let record = FrameworkRecord {
            id: id.clone(),
            name: info.name.clone(),
            user: info.user.clone(),
            role: info.role.clone(),
            principal: info.principal.clone(),
            capabilities: info.capabilities.clone(),
            failover_timeout: info.failover_timeout,
            hostname: info.hostname.clone(),
            registered_time,
        };
        self.registry
            .put_framework(&record)
            .map_err(|e| self.registry_failed(e))?;
        self.known.frameworks.insert(id.clone(), record);
        let conn = self.fresh_conn();
        match self.frameworks.get_mut(&id) {
            Some(f) => {
                if let Some(old) = f.tx.take() {
                    let _ = old.try_send(Ok(Event {
                        event: Some(event::Event::Error(event::Error {
                            message: "framework failed over to a new connection".into(),
                        })),
                    }));
                }
                f.info = info;
                f.conn = conn;
                f.disconnected_at = None;
                f.tx = Some(tx.clone());
                self.allocator.set_framework_active(&id, true);
            }
            None => {
                self.allocator.add_framework(&id, &info.role);
                self.frameworks.insert(
                    id.clone(),
                    FrameworkEntry {
                        info,
                        tx: Some(tx.clone()),
                        conn,
                        disconnected_at: None,
                        offers: HashSet::new(),
                        registered_time,
                        suppressed: false,
                    },
                );
            }
        }
        self.pending_full = true;
        let _ = tx.try_send(Ok(Event {
            event: Some(event::Event::Subscribed(event::Subscribed {
                framework_id: id.clone(),
                heartbeat_interval_seconds: self.config.framework_heartbeat_interval.as_secs_f64(),
                master_id: self.master_id.clone(),
            })),
        }));
        let _ = now;
        tracing::info!(framework_id = %id, "framework subscribed");
        Ok((id, conn))
    }

    /// The framework's event stream was dropped.
    pub fn framework_disconnected(&mut self, framework_id: &str, conn: u64, now: Duration) {
        let Some(f) = self.frameworks.get_mut(framework_id) else {
            return;
        };
        if f.conn != conn || f.tx.is_none() {
            return;
        }
        f.tx = None;
        f.disconnected_at = Some(now);
        self.allocator.set_framework_active(framework_id, false);
        self.rescind_framework_offers(framework_id, now);
        tracing::info!(framework_id, "framework disconnected");
    }

    fn remove_framework(&mut self, framework_id: &str, wall: f64) {
        let Some(_f) = self.frameworks.remove(framework_id) else {
            return;
        };
        let offer_ids: Vec<String> = self
            .offers
            .iter()
            .filter(|(_, o)| o.framework_id == framework_id)
            .map(|(id, _)| id.clone())
            .collect();
        for id in offer_ids {
            self.offers.remove(&id);
        }
        self.allocator.remove_framework(framework_id);
        self.revocable.remove_framework(framework_id);
        if let Err(e) = self.registry.remove_framework(framework_id) {
            tracing::error!(
                framework_id,
                "cannot remove framework from the registry: {e}"
            );
            self.registry_failed(e);
        }
        self.known.frameworks.remove(framework_id);
        // Kill its tasks on every agent; they leave the task table now.
        let keys: Vec<TaskKey> = self
            .tasks
            .iter()
            .filter(|(k, _)| k.0 == framework_id)
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            if let Some(mut t) = self.tasks.remove(&key) {
                t.state = TaskState::TaskKilled;
                t.updated_time = wall;
                t.status = Some(self.master_status(
                    &t,
                    TaskState::TaskKilled,
                    TaskStatusReason::ReasonFrameworkRemoved,
                    "framework was removed",
                    wall,
                ));
                self.push_completed(t);
            }
        }
        // Every connected agent hears of it, not only those with live tasks: a custom
        // executor outlives its tasks, and the master does not track executors.
        for agent in self.agents.values() {
            if let Some(tx) = agent.tx.as_ref() {
                let _ = tx.try_send(Ok(MasterMessage {
                    message: Some(master_message::Message::ShutdownFramework(
                        master_message::ShutdownFramework {
                            framework_id: framework_id.to_string(),
                        },
                    )),
                }));
            }
        }
        tracing::info!(framework_id, "framework removed");
    }

    /// Checks that `framework_id` names a subscribed framework.
    fn subscribed(&self, framework_id: &str) -> Result<&FrameworkEntry, Status> {
        match self.frameworks.get(framework_id) {
            None => Err(Status::not_found(format!(
                "framework {framework_id:?} is unknown; call Subscribe first"
            ))),
            Some(f) if f.tx.is_none() => Err(Status::failed_precondition(format!(
                "framework {framework_id} is not subscribed; call Subscribe to re-subscribe"
            ))),
            Some(f) => Ok(f),
        }
    }

    /// Accept offers, running the given operations on them.
    pub fn accept(
        &mut self,
        req: v1::AcceptRequest,
        now: Duration,
        wall: f64,
    ) -> Result<(), Status> {
        self.subscribed(&req.framework_id)?;
        let refuse = refuse_duration(req.filters.as_ref(), self.config.default_refuse)?;
        let agent_id = self.check_offers(&req.framework_id, &req.offer_ids)?;
        let mut offered = Resources::new();
        let mut offered_revocable = Resources::new();
        let mut offered_reserved = Resources::new();
        for id in &req.offer_ids {
            if let Some(o) = self.offers.get(id) {
                offered.add(&o.resources);
                offered_revocable.add(&o.revocable);
                offered_reserved.add(&o.reserved);
            }
        }
        let role = self
            .frameworks
            .get(&req.framework_id)
            .map(|f| f.info.role.clone())
            .unwrap_or_default();
        // Validate every operation before acting on any. Operations apply in order: a
        // RESERVE makes resources available to the LAUNCHes after it (Mesos semantics).
        // (task, unreserved, revocable, reserved, index of its task group in `groups`)
        let mut launches: Vec<(TaskInfo, Resources, Resources, Resources, Option<usize>)> =
            Vec::new();
        let mut groups: Vec<v1::ExecutorInfo> = Vec::new();
        let mut groups_seen = HashSet::new();
        let mut changes: Vec<ReservationChange> = Vec::new();
        let mut ids_seen = HashSet::new();
        let mut remaining = offered.clone();
        let mut remaining_revocable = offered_revocable.clone();
        let mut remaining_reserved = offered_reserved;
        // Persistent volumes: the agent's (for the registry), and those the offers carry
        // that no operation of this accept has used yet.
        let mut volumes: Vec<VolumeRecord> = self
            .known
            .agents
            .get(&agent_id)
            .map(|a| a.volumes.clone())
            .unwrap_or_default();
        let mut available: BTreeMap<String, VolumeRecord> = req
            .offer_ids
            .iter()
            .filter_map(|id| self.offers.get(id))
            .flat_map(|o| o.volumes.iter())
            .map(|v| (v.persistence_id.clone(), v.clone()))
            .collect();
        let mut volumes_changed = false;
        let mut destroyed: Vec<String> = Vec::new();
        for op in &req.operations {
            match &op.operation {
                Some(operation::Operation::Create(c)) => {
                    if c.volumes.is_empty() || c.volumes.iter().any(|r| r.volume.is_none()) {
                        return Err(Status::invalid_argument(
                            "CREATE needs volumes: `disk` resources with `volume` set",
                        ));
                    }
                    for v in volume_entries(&c.volumes, &role, "CREATE")? {
                        if volumes
                            .iter()
                            .any(|x| x.role == v.role && x.persistence_id == v.persistence_id)
                        {
                            return Err(Status::already_exists(format!(
                                "CREATE: persistent volume `{}` already exists on agent {agent_id}",
                                v.persistence_id
                            )));
                        }
                        let plain =
                            remaining_reserved.saturating_sub(&volumes_disk(available.values()));
                        let need = volumes_disk([&v]);
                        if !plain.contains(&need) {
                            return Err(Status::invalid_argument(format!(
                                "CREATE of volume `{}` needs {need} reserved for role `{role}` but the offers only have {} of it outside volumes; RESERVE disk first",
                                v.persistence_id,
                                plain.scalar("disk")
                            )));
                        }
                        available.insert(v.persistence_id.clone(), v.clone());
                        volumes.push(v);
                        volumes_changed = true;
                    }
                }
                Some(operation::Operation::Destroy(d)) => {
                    if d.volumes.is_empty() || d.volumes.iter().any(|r| r.volume.is_none()) {
                        return Err(Status::invalid_argument(
                            "DESTROY needs volumes: `disk` resources with `volume` set",
                        ));
                    }
                    for v in volume_entries(&d.volumes, &role, "DESTROY")? {
                        if available.remove(&v.persistence_id).is_none() {
                            return Err(Status::invalid_argument(format!(
                                "DESTROY: persistent volume `{}` is not in the offers (unknown, or in use by a task)",
                                v.persistence_id
                            )));
                        }
                        volumes.retain(|x| {
                            !(x.role == v.role && x.persistence_id == v.persistence_id)
                        });
                        destroyed.push(v.persistence_id);
                        volumes_changed = true;
                    }
                }
                Some(operation::Operation::Reserve(r)) => {
                    let res = reservation_resources(&r.resources, &role, "RESERVE")?;
                    remaining = remaining.checked_sub(&res).ok_or_else(|| {
                        Status::invalid_argument(format!(
                            "RESERVE of {res} but only {remaining} unreserved is left in the offers"
                        ))
                    })?;
                    remaining_reserved.add(&res);
                    changes.push(ReservationChange::Reserve(res));
                }
                Some(operation::Operation::Unreserve(r)) => {
                    let res = reservation_resources(&r.resources, &role, "UNRESERVE")?;
                    remaining_reserved = remaining_reserved.checked_sub(&res).ok_or_else(|| {
                        Status::invalid_argument(format!(
                            "UNRESERVE of {res} but only {remaining_reserved} reserved for role `{role}` is left in the offers"
                        ))
                    })?;
                    remaining.add(&res);
                    changes.push(ReservationChange::Unreserve(res));
                }
                Some(
                    op @ (operation::Operation::Launch(_) | operation::Operation::LaunchGroup(_)),
                ) => {
                    let (task_infos, group) = launch_tasks(op)?;
                    if let Some(executor) = &group {
                        if !groups_seen.insert(executor.executor_id.clone())
                            || self.tasks.values().any(|t| {
                                t.framework_id == req.framework_id
                                    && t.info
                                        .executor
                                        .as_ref()
                                        .is_some_and(|e| e.executor_id == executor.executor_id)
                            })
                        {
                            return Err(Status::already_exists(format!(
                                "LAUNCH_GROUP: executor id `{}` is already in use by this framework's tasks; give each task group its own executor id",
                                executor.executor_id
                            )));
                        }
                        groups.push(executor.clone());
                    }
                    for task in &task_infos {
                        validate_task_id(&task.task_id)?;
                        if task.name.len() > 1024 {
                            return Err(Status::invalid_argument(format!(
                                "task {} name is longer than 1024 bytes",
                                task.task_id
                            )));
                        }
                        if !ids_seen.insert(task.task_id.clone())
                            || self
                                .tasks
                                .contains_key(&(req.framework_id.clone(), task.task_id.clone()))
                        {
                            return Err(Status::already_exists(format!(
                                "task id {} is already in use by this framework",
                                task.task_id
                            )));
                        }
                        if !task.agent_id.is_empty() && task.agent_id != agent_id {
                            return Err(Status::invalid_argument(format!(
                                "task {} names agent {} but the offers are for agent {agent_id}",
                                task.task_id, task.agent_id
                            )));
                        }
                        // A custom executor's command stands in for the task's.
                        let executor_cmd = task.executor.as_ref().and_then(|e| e.command.as_ref());
                        let cmd = task.command.as_ref().or(executor_cmd).ok_or_else(|| {
                            Status::invalid_argument(format!(
                                "task {} has no command (nor an executor with one)",
                                task.task_id
                            ))
                        })?;
                        if cmd.value.is_empty() {
                            return Err(Status::invalid_argument(format!(
                                "task {} has an empty command",
                                task.task_id
                            )));
                        }
                        if !task.kill_grace_period_seconds.is_finite()
                            || task.kill_grace_period_seconds < 0.0
                        {
                            return Err(Status::invalid_argument(format!(
                                "task {} kill grace period must be a finite number >= 0",
                                task.task_id
                            )));
                        }
                        let invalid = |e: brim_proto::ResourceError| {
                            Status::invalid_argument(format!("task {}: {e}", task.task_id))
                        };
                        let res =
                            Resources::from_proto_unreserved(&task.resources).map_err(invalid)?;
                        let rev =
                            Resources::from_proto_revocable(&task.resources).map_err(invalid)?;
                        let mut reserved = Resources::new();
                        for (r, amount) in
                            Resources::from_proto_reserved(&task.resources).map_err(invalid)?
                        {
                            if r != role {
                                return Err(Status::invalid_argument(format!(
                                    "task {} uses resources reserved for role `{r}` but the framework's role is `{role}`",
                                    task.task_id
                                )));
                            }
                            reserved = amount;
                        }
                        for v in volume_entries(&task.resources, &role, "LAUNCH")? {
                            match available.get(&v.persistence_id) {
                                Some(o) if o.container_path == v.container_path && o.disk == v.disk => {
                                    available.remove(&v.persistence_id);
                                }
                                _ => {
                                    return Err(Status::invalid_argument(format!(
                                        "task {} uses persistent volume `{}` ({} MiB at `{}`) which the offers do not carry as such",
                                        task.task_id, v.persistence_id, v.disk, v.container_path
                                    )))
                                }
                            }
                        }
                        if !reserved.is_empty() {
                            remaining_reserved =
                                remaining_reserved.checked_sub(&reserved).ok_or_else(|| {
                                    Status::invalid_argument(format!(
                                        "task {} asks for reserved {reserved} but only {remaining_reserved} reserved for role `{role}` is left in the offers",
                                        task.task_id
                                    ))
                                })?;
                        }
                        if !rev.is_empty() {
                            remaining_revocable =
                                remaining_revocable.checked_sub(&rev).ok_or_else(|| {
                                    let why = if offered_revocable.is_empty() {
                                        "these offers carry no revocable resources (only frameworks with the REVOCABLE_RESOURCES capability get them)".to_string()
                                    } else {
                                        format!("only {remaining_revocable} revocable is left in the offers")
                                    };
                                    Status::invalid_argument(format!(
                                        "task {} asks for revocable {rev} but {why}",
                                        task.task_id
                                    ))
                                })?;
                        }
                        let mut both = res.clone();
                        both.add(&rev);
                        both.add(&reserved);
                        if both.scalar("cpus") <= 0.0 && both.scalar("mem") <= 0.0 {
                            return Err(Status::invalid_argument(format!(
                                "task {} must ask for some cpus or mem",
                                task.task_id
                            )));
                        }
                        remaining = remaining.checked_sub(&res).ok_or_else(|| {
                            Status::invalid_argument(format!(
                                "task {} asks for {res} but only {remaining} is left in the offers",
                                task.task_id
                            ))
                        })?;
                        launches.push((
                            task.clone(),
                            res,
                            rev,
                            reserved,
                            group.as_ref().map(|_| groups.len() - 1),
                        ));
                    }
                }
                None => return Err(Status::invalid_argument("operation has no type")),
            }
            // Plain reserved resources never come out of the volumes' disk.
            let in_volumes = volumes_disk(available.values());
            if !remaining_reserved.contains(&in_volumes) {
                return Err(Status::invalid_argument(format!(
                    "the operations use {} reserved disk that belongs to persistent volumes; name the volume (`volume` set) to use one, or DESTROY it first",
                    in_volumes.scalar("disk") - remaining_reserved.scalar("disk")
                )));
            }
        }
        // Act: the reservations first, durably, so that a registry failure changes nothing.
        if !changes.is_empty() || volumes_changed {
            let mut reservations: BTreeMap<String, Resources> = self
                .allocator
                .agent_reservations(&agent_id)
                .into_iter()
                .collect();
            for c in &changes {
                let mine = reservations.entry(role.clone()).or_default();
                match c {
                    ReservationChange::Reserve(r) => mine.add(r),
                    ReservationChange::Unreserve(r) => *mine = mine.saturating_sub(r),
                }
            }
            if let Some(known) = self.known.agents.get(&agent_id) {
                let record = AgentRecord {
                    reservations: reservation_record(&reservations),
                    volumes: volumes.clone(),
                    ..known.clone()
                };
                self.registry
                    .put_agent(&record)
                    .map_err(|e| self.registry_failed(e))?;
                self.known.agents.insert(agent_id.clone(), record);
            }
            for c in changes {
                let (what, done) = match &c {
                    ReservationChange::Reserve(r) => (
                        "reserved",
                        self.allocator
                            .reserve(&req.framework_id, &agent_id, &role, r),
                    ),
                    ReservationChange::Unreserve(r) => (
                        "unreserved",
                        self.allocator
                            .unreserve(&req.framework_id, &agent_id, &role, r),
                    ),
                };
                match done {
                    Ok(()) => {
                        tracing::info!(agent_id, role, framework_id = %req.framework_id, "resources {what}")
                    }
                    Err(e) => tracing::error!(agent_id, role, "reservation change lost: {e}"),
                }
            }
        }
        let framework_info = self
            .frameworks
            .get(&req.framework_id)
            .map(|f| f.info.clone())
            .unwrap_or_default();
        if !destroyed.is_empty() {
            if let Some(tx) = self.agents.get(&agent_id).and_then(|a| a.tx.as_ref()) {
                for id in &destroyed {
                    let msg = MasterMessage {
                        message: Some(master_message::Message::DestroyVolume(
                            master_message::DestroyVolume {
                                role: role.clone(),
                                persistence_id: id.clone(),
                            },
                        )),
                    };
                    if tx.try_send(Ok(msg)).is_err() {
                        tracing::warn!(
                            agent_id,
                            id,
                            "could not tell the agent to remove a destroyed volume's directory"
                        );
                    }
                }
            }
            tracing::info!(agent_id, role, ?destroyed, "persistent volumes destroyed");
        }
        for id in &req.offer_ids {
            self.offers.remove(id);
            if let Some(f) = self.frameworks.get_mut(&req.framework_id) {
                f.offers.remove(id);
            }
        }
        let agent_tx = self.agents.get(&agent_id).and_then(|a| a.tx.clone());
        // Each group goes to the agent in one message, sent with its first task.
        let mut group_tasks: Vec<Vec<TaskInfo>> = vec![Vec::new(); groups.len()];
        for (task, _, _, _, g) in &launches {
            if let Some(g) = g {
                let mut t = task.clone();
                t.agent_id = agent_id.clone();
                group_tasks[*g].push(t);
            }
        }
        let mut group_sent: Vec<Option<bool>> = vec![None; groups.len()];
        for (mut task, res, rev, reserved, group) in launches {
            task.agent_id = agent_id.clone();
            let entry = TaskEntry {
                info: task.clone(),
                principal: framework_info.principal.clone(),
                framework_id: req.framework_id.clone(),
                agent_id: agent_id.clone(),
                resources: res,
                revocable: rev,
                reserved,
                reserved_role: role.clone(),
                state: TaskState::TaskStaging,
                status: None,
                updated_time: wall,
                usage: None,
            };
            let key = (req.framework_id.clone(), task.task_id.clone());
            let sent = match group {
                Some(g) => *group_sent[g].get_or_insert_with(|| {
                    let msg = MasterMessage {
                        message: Some(master_message::Message::RunTaskGroup(
                            master_message::RunTaskGroup {
                                framework: Some(framework_info.clone()),
                                executor: Some(groups[g].clone()),
                                tasks: std::mem::take(&mut group_tasks[g]),
                            },
                        )),
                    };
                    agent_tx
                        .as_ref()
                        .is_some_and(|tx| tx.try_send(Ok(msg)).is_ok())
                }),
                None => {
                    let msg = MasterMessage {
                        message: Some(master_message::Message::RunTask(master_message::RunTask {
                            framework: Some(framework_info.clone()),
                            task: Some(task),
                        })),
                    };
                    agent_tx
                        .as_ref()
                        .is_some_and(|tx| tx.try_send(Ok(msg)).is_ok())
                }
            };
            if sent {
                self.tasks.insert(key, entry);
                self.metrics.tasks_launched.inc();
            } else {
                let status = self.master_status(
                    &entry,
                    TaskState::TaskDropped,
                    TaskStatusReason::ReasonAgentDisconnected,
                    "agent is not connected; task was not launched",
                    wall,
                );
                remaining.add(&entry.resources);
                remaining_revocable.add(&entry.revocable);
                remaining_reserved.add(&entry.reserved);
                self.send_update(&req.framework_id, status);
            }
        }
        if !remaining.is_empty() {
            self.recover(&req.framework_id, &agent_id, &remaining, Some(refuse), now);
        }
        if !remaining_revocable.is_empty() {
            self.recover_revocable(
                &req.framework_id,
                &agent_id,
                &remaining_revocable,
                Some(refuse),
                now,
            );
        }
        self.recover_reserved(
            &req.framework_id,
            &agent_id,
            &role,
            &remaining_reserved,
            Some(refuse),
            now,
        );
        Ok(())
    }

    /// Checks the offers exist, belong to the framework and are on one agent; returns the agent.
    fn check_offers(&self, framework_id: &str, offer_ids: &[String]) -> Result<String, Status> {
        if offer_ids.is_empty() {
            return Err(Status::invalid_argument("no offer ids given"));
        }
        let mut seen = HashSet::new();
        let mut agent: Option<&str> = None;
        for id in offer_ids {
            if !seen.insert(id) {
                return Err(Status::invalid_argument(format!(
                    "offer {id} is listed twice"
                )));
            }
            let o = self.offers.get(id).ok_or_else(|| {
                Status::not_found(format!(
                    "offer {id} is not outstanding (unknown, expired, rescinded or already used); wait for a new offer"
                ))
            })?;
            if o.framework_id != framework_id {
                return Err(Status::permission_denied(format!(
                    "offer {id} was made to another framework"
                )));
            }
            match agent {
                Some(a) if a != o.agent_id => {
                    return Err(Status::invalid_argument(
                        "offers from different agents cannot be accepted together",
                    ))
                }
                _ => agent = Some(&o.agent_id),
            }
        }
        Ok(agent.unwrap_or_default().to_string())
    }

    pub fn decline(&mut self, req: v1::DeclineRequest, now: Duration) -> Result<(), Status> {
        self.subscribed(&req.framework_id)?;
        let refuse = refuse_duration(req.filters.as_ref(), self.config.default_refuse)?;
        for id in &req.offer_ids {
            let o = self.offers.get(id).ok_or_else(|| {
                Status::not_found(format!(
                    "offer {id} is not outstanding (unknown, expired or used)"
                ))
            })?;
            if o.framework_id != req.framework_id {
                return Err(Status::permission_denied(format!(
                    "offer {id} was made to another framework"
                )));
            }
        }
        for id in &req.offer_ids {
            if let Some(o) = self.offers.remove(id) {
                if let Some(f) = self.frameworks.get_mut(&o.framework_id) {
                    f.offers.remove(id);
                }
                self.recover(
                    &o.framework_id,
                    &o.agent_id,
                    &o.resources,
                    Some(refuse),
                    now,
                );
                self.recover_revocable(
                    &o.framework_id,
                    &o.agent_id,
                    &o.revocable,
                    Some(refuse),
                    now,
                );
                self.recover_reserved(
                    &o.framework_id,
                    &o.agent_id,
                    &o.role,
                    &o.reserved,
                    Some(refuse),
                    now,
                );
                self.metrics.offers_declined.inc();
            }
        }
        Ok(())
    }

    pub fn kill(&mut self, req: v1::KillRequest) -> Result<(), Status> {
        self.subscribed(&req.framework_id)?;
        if let Some(g) = req.grace_period_seconds {
            if !g.is_finite() || g < 0.0 {
                return Err(Status::invalid_argument(
                    "grace_period_seconds must be finite and >= 0",
                ));
            }
        }
        let key = (req.framework_id.clone(), req.task_id.clone());
        let t = self.tasks.get_mut(&key).ok_or_else(|| {
            Status::not_found(format!(
                "task {:?} of framework {} is unknown or already terminal",
                req.task_id, req.framework_id
            ))
        })?;
        let tx = self
            .agents
            .get(&t.agent_id)
            .and_then(|a| a.tx.clone())
            .ok_or_else(|| {
                Status::unavailable(format!(
                    "agent {} of task {} is not connected; retry the kill later",
                    t.agent_id, req.task_id
                ))
            })?;
        tx.try_send(Ok(kill_message(
            &req.framework_id,
            &req.task_id,
            req.grace_period_seconds,
        )))
        .map_err(|_| Status::unavailable("agent channel is full; retry the kill"))?;
        if !t.state.is_terminal() {
            t.state = TaskState::TaskKilling;
        }
        Ok(())
    }

    pub fn acknowledge(&mut self, req: v1::AcknowledgeRequest) -> Result<(), Status> {
        self.subscribed(&req.framework_id)?;
        if req.uuid.len() != 16 {
            return Err(Status::invalid_argument(
                "uuid must be the 16 bytes of the update",
            ));
        }
        let key = (req.framework_id.clone(), req.task_id.clone());
        let agent_id = if !req.agent_id.is_empty() {
            req.agent_id.clone()
        } else if let Some(t) = self.tasks.get(&key) {
            t.agent_id.clone()
        } else if let Some(t) = self.completed.iter().rev().find(|t| {
            (t.framework_id.as_str(), t.info.task_id.as_str()) == (key.0.as_str(), key.1.as_str())
        }) {
            t.agent_id.clone()
        } else {
            return Err(Status::not_found(format!(
                "task {:?} is unknown",
                req.task_id
            )));
        };
        let agent = self
            .agents
            .get(&agent_id)
            .ok_or_else(|| Status::not_found(format!("agent {agent_id:?} is unknown")))?;
        if let Some(tx) = &agent.tx {
            let _ = tx.try_send(Ok(ack_message(&req.framework_id, &req.task_id, req.uuid)));
        }
        // A disconnected agent resends the update when it is back; that one gets acked.
        Ok(())
    }

    pub fn reconcile(&mut self, req: v1::ReconcileRequest, wall: f64) -> Result<(), Status> {
        let f = self.subscribed(&req.framework_id)?;
        let aware = f.partition_aware();
        let mut statuses = Vec::new();
        if req.tasks.is_empty() {
            for t in self
                .tasks
                .values()
                .filter(|t| t.framework_id == req.framework_id)
            {
                statuses.push(self.reconciliation_status(t, wall));
            }
        } else {
            for rt in &req.tasks {
                let key = (req.framework_id.clone(), rt.task_id.clone());
                if let Some(t) = self.tasks.get(&key) {
                    statuses.push(self.reconciliation_status(t, wall));
                } else if let Some(t) =
                    self.completed.iter().rev().find(|t| {
                        t.framework_id == req.framework_id && t.info.task_id == rt.task_id
                    })
                {
                    statuses.push(self.reconciliation_status(t, wall));
                } else if self.awaiting_reregistration(&rt.agent_id) {
                    // The agent is admitted but has not re-registered since this master
                    // took over: it may well still run the task. Answer once it is back
                    // (Mesos does the same), rather than wrongly reporting the task lost.
                    continue;
                } else {
                    let state = if aware {
                        TaskState::TaskUnknown
                    } else {
                        TaskState::TaskLost
                    };
                    statuses.push(TaskStatus {
                        task_id: rt.task_id.clone(),
                        state: state as i32,
                        message: "task is unknown to the master".into(),
                        reason: TaskStatusReason::ReasonReconciliation as i32,
                        source: TaskStatusSource::SourceMaster as i32,
                        agent_id: rt.agent_id.clone(),
                        framework_id: req.framework_id.clone(),
                        timestamp: wall,
                        uuid: Vec::new(),
                        exit_code: None,
                        healthy: None,
                        executor_id: String::new(),
                        container_id: String::new(),
                    });
                }
            }
        }
        for s in statuses {
            self.send_update(&req.framework_id, s);
        }
        Ok(())
    }

    /// True for an agent the registry admits that has not re-registered with this master.
    fn awaiting_reregistration(&self, agent_id: &str) -> bool {
        !agent_id.is_empty()
            && !self.agents.contains_key(agent_id)
            && self
                .known
                .agents
                .get(agent_id)
                .is_some_and(|a| a.state == AgentRegistryState::Admitted)
    }

    fn reconciliation_status(&self, t: &TaskEntry, wall: f64) -> TaskStatus {
        let mut s = t.status.clone().unwrap_or_else(|| TaskStatus {
            task_id: t.info.task_id.clone(),
            state: t.state as i32,
            agent_id: t.agent_id.clone(),
            framework_id: t.framework_id.clone(),
            source: TaskStatusSource::SourceMaster as i32,
            ..Default::default()
        });
        s.state = t.state as i32;
        s.reason = TaskStatusReason::ReasonReconciliation as i32;
        s.uuid = Vec::new();
        s.timestamp = wall;
        s
    }

    /// A framework message to one of its executors (Mesos MESSAGE): forwarded to the
    /// agent, best effort (the agent drops it when the executor is not there).
    pub fn message(&mut self, req: v1::MessageRequest) -> Result<(), Status> {
        self.subscribed(&req.framework_id)?;
        if req.executor_id.is_empty() {
            return Err(Status::invalid_argument("message needs an executor_id"));
        }
        let agent = self.agents.get(&req.agent_id).ok_or_else(|| {
            Status::not_found(format!(
                "agent {:?} is unknown; send messages to agents from this framework's offers or updates",
                req.agent_id
            ))
        })?;
        let Some(tx) = agent
            .tx
            .as_ref()
            .filter(|_| agent.link == AgentLink::Connected)
        else {
            return Err(Status::unavailable(format!(
                "agent {} is not connected; the message was not delivered",
                req.agent_id
            )));
        };
        let msg = MasterMessage {
            message: Some(master_message::Message::FrameworkMessage(
                master_message::FrameworkMessage {
                    framework_id: req.framework_id,
                    executor_id: req.executor_id,
                    data: req.data,
                },
            )),
        };
        tx.try_send(Ok(msg)).map_err(|_| {
            Status::resource_exhausted(format!(
                "agent {}'s queue is full; the message was not delivered",
                req.agent_id
            ))
        })
    }

    /// An executor's message to its framework: a MESSAGE event when the framework is
    /// subscribed, else dropped (best effort, as in Mesos).
    fn executor_message(&mut self, agent_id: &str, m: agent_message::ExecutorMessage) {
        let tx = self
            .frameworks
            .get(&m.framework_id)
            .and_then(|f| f.tx.clone());
        let delivered = tx.is_some_and(|tx| {
            tx.try_send(Ok(Event {
                event: Some(event::Event::Message(event::Message {
                    agent_id: agent_id.to_string(),
                    executor_id: m.executor_id.clone(),
                    data: m.data,
                })),
            }))
            .is_ok()
        });
        if !delivered {
            tracing::debug!(agent_id, framework_id = %m.framework_id, executor_id = %m.executor_id,
                "executor message dropped: the framework is not subscribed or not reading");
        }
    }

    pub fn revive(&mut self, framework_id: &str) -> Result<(), Status> {
        self.subscribed(framework_id)?;
        self.allocator.revive(framework_id);
        self.revocable.revive(framework_id);
        self.pending_full = true;
        if let Some(f) = self.frameworks.get_mut(framework_id) {
            f.suppressed = false;
        }
        Ok(())
    }

    pub fn suppress(&mut self, framework_id: &str) -> Result<(), Status> {
        self.subscribed(framework_id)?;
        self.allocator.suppress(framework_id);
        if let Some(f) = self.frameworks.get_mut(framework_id) {
            f.suppressed = true;
        }
        Ok(())
    }

    pub fn teardown(&mut self, framework_id: &str, wall: f64) -> Result<(), Status> {
        if !self.frameworks.contains_key(framework_id) {
            return Err(Status::not_found(format!(
                "framework {framework_id:?} is unknown"
            )));
        }
        if let Some(tx) = self.frameworks.get(framework_id).and_then(|f| f.tx.clone()) {
            let _ = tx.try_send(Ok(Event {
                event: Some(event::Event::Error(event::Error {
                    message: "framework was torn down".into(),
                })),
            }));
        }
        self.remove_framework(framework_id, wall);
        Ok(())
    }

    /// Sets a role's weight (operator call), durably.
    pub fn set_weight(&mut self, role: &str, weight: f64) -> Result<(), Status> {
        validate_role(role)?;
        if !weight.is_finite() || weight <= 0.0 {
            return Err(Status::invalid_argument(
                "weight must be a finite number > 0",
            ));
        }
        let mut rec = self.known.roles.get(role).cloned().unwrap_or(RoleRecord {
            name: role.into(),
            weight: 1.0,
            quota_guarantee: None,
            quota_limit: None,
        });
        rec.weight = weight;
        self.registry
            .put_role(&rec)
            .map_err(|e| self.registry_failed(e))?;
        self.known.roles.insert(role.into(), rec);
        self.allocator.set_weight(role, weight);
        self.pending_full = true;
        Ok(())
    }

    /// Sets a role's quota (operator call), durably.
    pub fn set_quota(
        &mut self,
        role: &str,
        guarantee: Resources,
        limit: Option<Resources>,
    ) -> Result<(), Status> {
        validate_role(role)?;
        if let Some(l) = &limit {
            if !l.contains(&guarantee) {
                return Err(Status::invalid_argument(
                    "quota guarantee must not exceed its limit",
                ));
            }
        }
        let mut rec = self.known.roles.get(role).cloned().unwrap_or(RoleRecord {
            name: role.into(),
            weight: 1.0,
            quota_guarantee: None,
            quota_limit: None,
        });
        rec.quota_guarantee = Some(guarantee.to_string());
        rec.quota_limit = limit.as_ref().map(ToString::to_string);
        self.registry
            .put_role(&rec)
            .map_err(|e| self.registry_failed(e))?;
        self.known.roles.insert(role.into(), rec);
        self.allocator
            .set_quota(role, crate::allocator::Quota { guarantee, limit });
        self.pending_full = true;
        Ok(())
    }

    // ------------------------------------------------------------- allocation

    /// Returns resources to the allocator and remembers that the agent needs a look.
    fn recover(
        &mut self,
        framework_id: &str,
        agent_id: &str,
        resources: &Resources,
        refuse: Option<Duration>,
        now: Duration,
    ) {
        self.allocator
            .recover(framework_id, agent_id, resources, refuse, now);
        self.pending_agents.insert(agent_id.to_string());
    }

    /// The reservation counterpart of [`Master::recover`]: what the framework held of
    /// `role`'s reservation on the agent.
    fn recover_reserved(
        &mut self,
        framework_id: &str,
        agent_id: &str,
        role: &str,
        resources: &Resources,
        refuse: Option<Duration>,
        now: Duration,
    ) {
        if resources.is_empty() {
            return;
        }
        self.allocator
            .recover_reserved(framework_id, agent_id, role, resources, refuse, now);
        self.pending_agents.insert(agent_id.to_string());
    }

    /// The revocable counterpart of [`Master::recover`].
    fn recover_revocable(
        &mut self,
        framework_id: &str,
        agent_id: &str,
        resources: &Resources,
        refuse: Option<Duration>,
        now: Duration,
    ) {
        if resources.is_empty() && refuse.is_none() {
            return;
        }
        self.revocable
            .recover(framework_id, agent_id, resources, refuse, now);
        self.pending_agents.insert(agent_id.to_string());
    }

    /// An agent published a new slack estimate. When it shrank below what frameworks hold
    /// of it, the outstanding revocable offers on the agent are rescinded (tasks beyond it
    /// are the agent's QoS controller's to evict); grown slack is offered at once.
    fn agent_slack(&mut self, agent_id: &str, s: agent_message::Slack, now: Duration) {
        let slack = match Resources::from_proto(&s.revocable) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(agent_id, "ignoring an invalid slack report: {e}");
                return;
            }
        };
        if let Some(a) = self.agents.get_mut(agent_id) {
            a.used_estimate = Resources::from_proto(&s.used_estimate).unwrap_or_default();
        }
        let excess = self.revocable.set_slack(agent_id, &slack);
        tracing::debug!(agent_id, %slack, %excess, "slack report");
        if !excess.is_empty() {
            let ids: Vec<String> = self
                .offers
                .iter()
                .filter(|(_, o)| o.agent_id == agent_id && !o.revocable.is_empty())
                .map(|(id, _)| id.clone())
                .collect();
            if !ids.is_empty() {
                tracing::info!(
                    agent_id,
                    %slack,
                    offers = ids.len(),
                    "slack shrank below what is offered: rescinding revocable offers"
                );
            }
            for id in ids {
                self.rescind(&id, now);
            }
        }
        self.pending_agents.insert(agent_id.to_string());
    }

    /// Frameworks that may receive revocable offers now, oldest registration first.
    fn revocable_eligible(&self) -> Vec<String> {
        let mut v: Vec<(&FrameworkEntry, &String)> = self
            .frameworks
            .iter()
            .filter(|(_, f)| f.tx.is_some() && !f.suppressed && f.revocable_capable())
            .map(|(id, f)| (f, id))
            .collect();
        v.sort_by(|a, b| {
            a.0.registered_time
                .total_cmp(&b.0.registered_time)
                .then(a.1.cmp(b.1))
        });
        v.into_iter().map(|(_, id)| id.clone()).collect()
    }

    /// Asks the next [`Master::allocate_pending`] for a full cycle (new demand, timers).
    pub fn request_full_allocation(&mut self) {
        self.pending_full = true;
    }

    /// Runs a full cycle when one was requested, else an incremental one over the agents
    /// whose free resources changed. Returns whether anything was examined.
    pub fn allocate_pending(&mut self, now: Duration) -> bool {
        let eligible = self.revocable_eligible();
        let (allocations, revocable) = if self.pending_full {
            self.pending_full = false;
            self.pending_agents.clear();
            (
                self.allocator.allocate(now),
                self.revocable.allocate(&eligible, None, now),
            )
        } else if !self.pending_agents.is_empty() {
            let agents: Vec<String> = self.pending_agents.drain().collect();
            (
                self.allocator.allocate_agents(&agents, now),
                self.revocable.allocate(&eligible, Some(&agents), now),
            )
        } else {
            return false;
        };
        self.make_offers(allocations, revocable, now);
        true
    }

    /// Runs one full allocation cycle and sends the resulting offers.
    pub fn allocate(&mut self, now: Duration) {
        self.pending_full = true;
        self.allocate_pending(now);
    }

    /// Sends the offers of one cycle: `allocations` from the DRF allocator, `revocable` from
    /// the revocable pool (sent as separate offers whose resources are all marked revocable).
    fn make_offers(
        &mut self,
        allocations: Vec<Allocation>,
        revocable: Vec<Allocation>,
        now: Duration,
    ) {
        // Per framework, each offer with the resources it holds (kept as `Resources` so an
        // undelivered offer is recovered without decoding its wire form again) and whether
        // they are revocable.
        type Pending = (
            v1::Offer,
            Resources,
            Resources,
            String,
            bool,
            Vec<VolumeRecord>,
        );
        let mut offered_now: HashSet<(String, String)> = HashSet::new();
        let mut per_framework: BTreeMap<String, Vec<Pending>> = BTreeMap::new();
        let tagged = allocations
            .into_iter()
            .map(|a| (a, false))
            .chain(revocable.into_iter().map(|a| (a, true)));
        for (a, is_revocable) in tagged {
            let Some(agent) = self.agents.get(&a.agent_id) else {
                if is_revocable {
                    self.revocable
                        .recover(&a.framework_id, &a.agent_id, &a.resources, None, now);
                } else {
                    self.allocator
                        .recover(&a.framework_id, &a.agent_id, &a.resources, None, now);
                    let role = self
                        .frameworks
                        .get(&a.framework_id)
                        .map(|f| f.info.role.clone())
                        .unwrap_or_default();
                    self.allocator.recover_reserved(
                        &a.framework_id,
                        &a.agent_id,
                        &role,
                        &a.reserved,
                        None,
                        now,
                    );
                }
                continue;
            };
            let role = self
                .frameworks
                .get(&a.framework_id)
                .map(|f| f.info.role.clone())
                .unwrap_or_default();
            let mut wire = a.resources.to_proto_with(is_revocable);
            // The role's persistent volumes that no task uses and no other offer carries
            // go out as such; the rest of the reservation as plain reserved resources.
            let mut plain = a.reserved.clone();
            let mut vols = Vec::new();
            if !plain.is_empty() {
                let busy = self.volumes_busy(&a.agent_id);
                for v in self
                    .known
                    .agents
                    .get(&a.agent_id)
                    .map(|r| r.volumes.as_slice())
                    .unwrap_or_default()
                {
                    let key = (a.agent_id.clone(), v.persistence_id.clone());
                    if v.role != role
                        || busy.contains(&v.persistence_id)
                        || offered_now.contains(&key)
                    {
                        continue;
                    }
                    if let Some(rest) = plain.checked_sub(&volumes_disk([v])) {
                        plain = rest;
                        offered_now.insert(key);
                        vols.push(v.clone());
                    }
                }
            }
            wire.extend(plain.to_proto_reserved(&role, ""));
            wire.extend(vols.iter().map(volume_resource));
            let offer = v1::Offer {
                id: String::new(),
                framework_id: a.framework_id.clone(),
                agent_id: a.agent_id.clone(),
                hostname: agent.info.hostname.clone(),
                resources: wire,
                attributes: agent.info.attributes.clone(),
                agent_http_address: agent.info.http_address.clone(),
                region: agent.info.region.clone(),
                zone: agent.info.zone.clone(),
            };
            per_framework.entry(a.framework_id).or_default().push((
                offer,
                a.resources,
                a.reserved,
                role,
                is_revocable,
                vols,
            ));
        }
        for (fw, mut offers) in per_framework {
            let tx = self.frameworks.get(&fw).and_then(|f| f.tx.clone());
            for (o, ..) in &mut offers {
                o.id = self.fresh_id("O");
            }
            let event = Event {
                event: Some(event::Event::Offers(event::Offers {
                    offers: offers.iter().map(|(o, ..)| o.clone()).collect(),
                })),
            };
            let delivered = tx.as_ref().is_some_and(|tx| tx.try_send(Ok(event)).is_ok());
            for (o, resources, reserved, role, is_revocable, volumes) in offers {
                if delivered {
                    let (resources, revocable) = if is_revocable {
                        (Resources::new(), resources)
                    } else {
                        (resources, Resources::new())
                    };
                    self.offers.insert(
                        o.id.clone(),
                        OfferEntry {
                            framework_id: fw.clone(),
                            agent_id: o.agent_id.clone(),
                            resources,
                            revocable,
                            reserved,
                            role,
                            volumes,
                            expires: now + self.config.offer_timeout,
                        },
                    );
                    if let Some(f) = self.frameworks.get_mut(&fw) {
                        f.offers.insert(o.id);
                    }
                    self.metrics.offers_sent.inc();
                } else if is_revocable {
                    self.recover_revocable(&fw, &o.agent_id, &resources, None, now);
                } else {
                    self.recover(&fw, &o.agent_id, &resources, None, now);
                    self.recover_reserved(&fw, &o.agent_id, &role, &reserved, None, now);
                }
            }
        }
    }

    /// Persistent volumes on the agent that a live task uses or an outstanding offer carries.
    fn volumes_busy(&self, agent_id: &str) -> HashSet<String> {
        let mut busy: HashSet<String> = self
            .tasks
            .values()
            .filter(|t| t.agent_id == agent_id)
            .flat_map(|t| t.info.resources.iter())
            .filter_map(|r| r.volume.as_ref().map(|v| v.persistence_id.clone()))
            .collect();
        for o in self.offers.values().filter(|o| o.agent_id == agent_id) {
            busy.extend(o.volumes.iter().map(|v| v.persistence_id.clone()));
        }
        busy
    }

    fn rescind(&mut self, offer_id: &str, now: Duration) {
        if let Some(o) = self.offers.remove(offer_id) {
            if let Some(f) = self.frameworks.get_mut(&o.framework_id) {
                f.offers.remove(offer_id);
                if let Some(tx) = &f.tx {
                    let _ = tx.try_send(Ok(Event {
                        event: Some(event::Event::Rescind(event::Rescind {
                            offer_id: offer_id.to_string(),
                        })),
                    }));
                }
            }
            if self
                .agents
                .get(&o.agent_id)
                .is_some_and(|a| a.link != AgentLink::Unreachable)
            {
                self.recover(&o.framework_id, &o.agent_id, &o.resources, None, now);
                self.recover_revocable(&o.framework_id, &o.agent_id, &o.revocable, None, now);
                self.recover_reserved(
                    &o.framework_id,
                    &o.agent_id,
                    &o.role,
                    &o.reserved,
                    None,
                    now,
                );
            }
            self.metrics.offers_rescinded.inc();
        }
    }

    fn rescind_offers_on_agent(&mut self, agent_id: &str) {
        let ids: Vec<String> = self
            .offers
            .iter()
            .filter(|(_, o)| o.agent_id == agent_id)
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            self.rescind(&id, Duration::ZERO);
        }
    }

    fn rescind_framework_offers(&mut self, framework_id: &str, now: Duration) {
        let ids: Vec<String> = self
            .offers
            .iter()
            .filter(|(_, o)| o.framework_id == framework_id)
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            self.rescind(&id, now);
        }
    }

    /// Periodic housekeeping: agent timeouts, offer expiry, framework failover timeouts,
    /// framework heartbeats.
    pub fn tick(&mut self, now: Duration, wall: f64) {
        let agent_timeout =
            self.config.agent_heartbeat_interval * self.config.max_missed_heartbeats;
        let silent: Vec<String> = self
            .agents
            .iter()
            .filter(|(_, a)| {
                a.link != AgentLink::Unreachable && now.saturating_sub(a.last_seen) > agent_timeout
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in silent {
            self.mark_unreachable(&id, wall);
        }
        let expired: Vec<String> = self
            .offers
            .iter()
            .filter(|(_, o)| o.expires <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            self.rescind(&id, now);
        }
        let gone: Vec<String> = self
            .frameworks
            .iter()
            .filter_map(|(id, f)| {
                let since = f.disconnected_at?;
                let timeout = if f.info.failover_timeout > 0.0 {
                    Duration::from_secs_f64(f.info.failover_timeout.min(1e9))
                } else {
                    self.config.default_failover_timeout
                };
                (now.saturating_sub(since) > timeout).then(|| id.clone())
            })
            .collect();
        for id in gone {
            tracing::info!(framework_id = %id, "framework failover timeout expired");
            self.remove_framework(&id, wall);
        }
        if now.saturating_sub(self.last_framework_heartbeat)
            >= self.config.framework_heartbeat_interval
        {
            self.last_framework_heartbeat = now;
            for f in self.frameworks.values() {
                if let Some(tx) = &f.tx {
                    let _ = tx.try_send(Ok(Event {
                        event: Some(event::Event::Heartbeat(event::Heartbeat {})),
                    }));
                }
            }
            for a in self.agents.values() {
                if let Some(tx) = &a.tx {
                    let _ = tx.try_send(Ok(MasterMessage {
                        message: Some(master_message::Message::Ping(master_message::Ping {})),
                    }));
                }
            }
        }
    }

    // ---------------------------------------------------------------- helpers

    fn master_status(
        &self,
        t: &TaskEntry,
        state: TaskState,
        reason: TaskStatusReason,
        message: &str,
        wall: f64,
    ) -> TaskStatus {
        TaskStatus {
            task_id: t.info.task_id.clone(),
            state: state as i32,
            message: message.to_string(),
            reason: reason as i32,
            source: TaskStatusSource::SourceMaster as i32,
            agent_id: t.agent_id.clone(),
            framework_id: t.framework_id.clone(),
            timestamp: wall,
            uuid: Vec::new(),
            exit_code: t.status.as_ref().and_then(|s| s.exit_code),
            healthy: t.status.as_ref().and_then(|s| s.healthy),
            executor_id: t
                .info
                .executor
                .as_ref()
                .map(|e| e.executor_id.clone())
                .unwrap_or_default(),
            container_id: t
                .status
                .as_ref()
                .map(|s| s.container_id.clone())
                .unwrap_or_default(),
        }
    }

    fn send_update(&self, framework_id: &str, status: TaskStatus) {
        if let Some(tx) = self
            .frameworks
            .get(framework_id)
            .and_then(|f| f.tx.as_ref())
        {
            let _ = tx.try_send(Ok(Event {
                event: Some(event::Event::Update(event::Update {
                    status: Some(status),
                })),
            }));
        }
    }

    fn push_completed(&mut self, t: TaskEntry) {
        self.metrics
            .tasks_terminal
            .get_or_create(&crate::metrics::StateLabel {
                state: t.state.name().to_string(),
            })
            .inc();
        self.completed.push_back(t);
        while self.completed.len() > self.config.max_completed_tasks {
            self.completed.pop_front();
        }
    }

    /// `/state` JSON (shape documented in docs/ARCHITECTURE.md).
    pub fn state_json(&self, started: f64, leader: &str) -> serde_json::Value {
        use serde_json::json;
        let mut agents: Vec<_> = self
            .agents
            .iter()
            .map(|(id, a)| {
                let used = self.agent_used(id);
                let reserved: BTreeMap<String, Resources> =
                    self.allocator.agent_reservations(id).into_iter().collect();
                let unreserved = reserved
                    .values()
                    .fold(a.total.clone(), |acc, r| acc.saturating_sub(r));
                let pool = self.revocable.agent_view(id);
                let revocable_used = self.agent_revocable_used(id);
                json!({
                    "id": id,
                    "hostname": a.info.hostname,
                    "http_address": a.info.http_address,
                    "active": a.link == AgentLink::Connected,
                    "status": a.link.as_str(),
                    "resources": a.total,
                    "used": used,
                    // Dynamic reservations: role -> reserved resources.
                    "reserved": reserved,
                    "unreserved": unreserved,
                    "volumes": self
                        .known
                        .agents
                        .get(id)
                        .map(|r| r.volumes.iter().map(|v| json!({
                            "persistence_id": v.persistence_id,
                            "role": v.role,
                            "disk": v.disk,
                            "container_path": v.container_path,
                        })).collect::<Vec<_>>())
                        .unwrap_or_default(),
                    // Oversubscription: the agent's published slack, what revocable tasks
                    // use of it, what is offered or used, and the agent's estimate of what
                    // its non-revocable tasks really use.
                    "revocable": pool.slack,
                    "revocable_used": revocable_used,
                    "revocable_allocated": pool.allocated,
                    "used_estimate": a.used_estimate,
                    "attributes": a.attributes.iter().cloned().collect::<BTreeMap<_, _>>(),
                    "region": a.info.region,
                    "zone": a.info.zone,
                    "registered_time": a.registered_time,
                })
            })
            .collect();
        agents.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
        let mut frameworks: Vec<_> = self
            .frameworks
            .iter()
            .map(|(id, f)| {
                let offered = f.offers.iter().filter_map(|o| self.offers.get(o)).fold(
                    Resources::new(),
                    |mut acc, o| {
                        acc.add(&o.resources);
                        acc.add(&o.revocable);
                        acc.add(&o.reserved);
                        acc
                    },
                );
                json!({
                    "id": id,
                    "name": f.info.name,
                    "role": f.info.role,
                    "user": f.info.user,
                    "principal": f.info.principal,
                    "active": f.tx.is_some() && !f.suppressed,
                    "connected": f.tx.is_some(),
                    "suppressed": f.suppressed,
                    "capabilities": f.info.capabilities,
                    "failover_timeout": f.info.failover_timeout,
                    "allocated": self.allocator.framework_allocated(id),
                    "offered": offered,
                    "tasks": self.tasks.values().filter(|t| &t.framework_id == id).count(),
                    "registered_time": f.registered_time,
                })
            })
            .collect();
        frameworks.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
        let task_json = |t: &TaskEntry| {
            json!({
                "id": t.info.task_id,
                "name": t.info.name,
                "framework_id": t.framework_id,
                "principal": t.principal,
                "agent_id": t.agent_id,
                // Its custom executor's, or its task group's (empty for plain tasks).
                "executor_id": t.info.executor.as_ref().map(|e| e.executor_id.as_str()).unwrap_or_default(),
                "state": t.state.name(),
                "resources": t.resources,
                "revocable": t.revocable,
                "reserved": t.reserved,
                "exit_code": t.status.as_ref().and_then(|s| s.exit_code),
                "message": t.status.as_ref().map(|s| s.message.clone()).unwrap_or_default(),
                "reason": t.status.as_ref().and_then(|s| TaskStatusReason::try_from(s.reason).ok()).map(|r| r.as_str_name()),
                "updated_time": t.updated_time,
                // Cumulative counters as the agent sent them (ContainerUsage).
                "usage": t.usage.as_ref().map(|u| json!({
                    "cpu_ns": u.cpu_ns,
                    "cpu_throttled_ns": u.cpu_throttled_ns,
                    "runq_wait_ns": u.runq_wait_ns,
                    "mem_current_bytes": u.mem_current_bytes,
                    "mem_rss_bytes": u.mem_rss_bytes,
                    "mem_cache_bytes": u.mem_cache_bytes,
                    "oom_events": u.oom_events,
                    "net_rx_bytes": u.net_rx_bytes,
                    "net_tx_bytes": u.net_tx_bytes,
                    "net_rx_packets": u.net_rx_packets,
                    "net_tx_packets": u.net_tx_packets,
                    "io_read_bytes": u.io_read_bytes,
                    "io_write_bytes": u.io_write_bytes,
                    "timestamp": u.timestamp,
                })),
            })
        };
        let mut tasks: Vec<_> = self.tasks.values().map(task_json).collect();
        tasks.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
        let completed: Vec<_> = self.completed.iter().map(task_json).collect();
        let mut role_names: HashSet<&str> = self
            .frameworks
            .values()
            .map(|f| f.info.role.as_str())
            .collect();
        role_names.extend(self.known.roles.keys().map(String::as_str));
        let mut roles: Vec<_> = role_names
            .into_iter()
            .map(|r| {
                let rec = self.known.roles.get(r);
                json!({
                    "name": r,
                    "weight": rec.map_or(1.0, |x| x.weight),
                    "share": self.allocator.role_share(r),
                    "quota": rec.and_then(|x| x.quota_guarantee.clone().map(|g| json!({"guarantee": g, "limit": x.quota_limit}))),
                })
            })
            .collect();
        roles.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "master_id": self.master_id,
            "start_time": started,
            "leader": leader,
            "agents": agents,
            "frameworks": frameworks,
            "tasks": tasks,
            "completed_tasks": completed,
            "roles": roles,
            "outstanding_offers": self.offers.len(),
        })
    }

    fn agent_revocable_used(&self, agent_id: &str) -> Resources {
        let mut used = Resources::new();
        for t in self.tasks.values().filter(|t| t.agent_id == agent_id) {
            used.add(&t.revocable);
        }
        used
    }

    fn agent_used(&self, agent_id: &str) -> Resources {
        let mut used = Resources::new();
        for t in self.tasks.values().filter(|t| t.agent_id == agent_id) {
            used.add(&t.resources);
            used.add(&t.reserved);
        }
        used
    }

    /// Refreshes gauges and renders Prometheus text.
    pub fn metrics_text(&mut self, uptime: Duration) -> String {
        let m = &self.metrics;
        m.uptime_secs.set(uptime.as_secs_f64());
        m.elected.set(1);
        let count =
            |link: AgentLink| self.agents.values().filter(|a| a.link == link).count() as i64;
        m.agents_connected.set(count(AgentLink::Connected));
        m.agents_disconnected.set(count(AgentLink::Disconnected));
        m.agents_unreachable.set(count(AgentLink::Unreachable));
        m.agents_active.set(count(AgentLink::Connected));
        m.frameworks_connected
            .set(self.frameworks.values().filter(|f| f.tx.is_some()).count() as i64);
        m.frameworks_disconnected
            .set(self.frameworks.values().filter(|f| f.tx.is_none()).count() as i64);
        m.outstanding_offers.set(self.offers.len() as i64);
        let mut by_state: HashMap<&'static str, i64> = HashMap::new();
        for t in self.tasks.values() {
            *by_state.entry(t.state.name()).or_default() += 1;
        }
        for s in [
            TaskState::TaskStaging,
            TaskState::TaskStarting,
            TaskState::TaskRunning,
            TaskState::TaskKilling,
        ] {
            m.set_tasks(s.name(), by_state.get(s.name()).copied().unwrap_or(0));
        }
        let mut total = Resources::new();
        for a in self
            .agents
            .values()
            .filter(|a| a.link != AgentLink::Unreachable)
        {
            total.add(&a.total);
        }
        let mut used = Resources::new();
        for t in self.tasks.values() {
            used.add(&t.resources);
            used.add(&t.reserved);
        }
        for r in ["cpus", "mem", "disk", "gpus"] {
            m.set_resource(r, total.scalar(r), used.scalar(r));
        }
        let slack = self.revocable.totals().slack;
        let mut revocable_used = Resources::new();
        for t in self.tasks.values() {
            revocable_used.add(&t.revocable);
        }
        m.cpus_revocable_total.set(slack.scalar("cpus"));
        m.mem_revocable_total.set(slack.scalar("mem"));
        m.cpus_revocable_used.set(revocable_used.scalar("cpus"));
        m.mem_revocable_used.set(revocable_used.scalar("mem"));
        m.encode()
    }

    /// Counts a terminal task by state for the `tasks_*_total` counters (called by the actor).
    pub(crate) fn record_call_error(&self) {
        self.metrics.invalid_calls.inc();
    }
}

fn kill_message(framework_id: &str, task_id: &str, grace: Option<f64>) -> MasterMessage {
    MasterMessage {
        message: Some(master_message::Message::KillTask(
            master_message::KillTask {
                framework_id: framework_id.to_string(),
                task_id: task_id.to_string(),
                grace_period_seconds: grace,
            },
        )),
    }
}

fn ack_message(framework_id: &str, task_id: &str, uuid: Vec<u8>) -> MasterMessage {
    MasterMessage {
        message: Some(master_message::Message::Acknowledge(
            master_message::AcknowledgeUpdate {
                framework_id: framework_id.to_string(),
                task_id: task_id.to_string(),
                uuid,
            },
        )),
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
