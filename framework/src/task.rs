//! Building tasks from offers: [`TaskBuilder`] for one task, [`OfferPacker`] to place several
//! tasks on one offer, port picking, and exit codes of finished tasks.

use std::time::Duration;

use brim_proto::v1::{
    self, CommandInfo, EnvironmentVariable, HealthCheck, Label, Offer, TaskInfo, TaskState, Uri,
};
use brim_proto::{RangeSet, ResourceError, Resources};

/// Why a task could not be built or placed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TaskError {
    #[error("task id is empty: every task needs an id unique within its framework")]
    EmptyId,
    #[error("task `{0}` has no command: call `.shell(...)` or `.command(...)`")]
    NoCommand(String),
    #[error("task `{task_id}` has invalid resources: {source}")]
    InvalidResources {
        task_id: String,
        #[source]
        source: ResourceError,
    },
    #[error("offer `{offer_id}` carries invalid resources: {source}")]
    InvalidOffer {
        offer_id: String,
        #[source]
        source: ResourceError,
    },
    #[error("task `{task_id}` needs {need} but offer `{offer_id}` has {available} left")]
    DoesNotFit {
        task_id: String,
        offer_id: String,
        need: Box<Resources>,
        available: Box<Resources>,
    },
    #[error("task `{task_id}` needs {need} ports but offer `{offer_id}` has {available} left")]
    NotEnoughPorts {
        task_id: String,
        offer_id: String,
        need: u64,
        available: u64,
    },
}

fn mode(readonly: bool) -> i32 {
    use brim_proto::v1::container_volume::Mode;
    if readonly {
        Mode::Ro as i32
    } else {
        Mode::Rw as i32
    }
}

/// A host-path container volume (for [`TaskBuilder::volume`] or an executor's container).
pub fn host_volume(
    host_path: impl Into<String>,
    container_path: impl Into<String>,
    readonly: bool,
) -> brim_proto::v1::ContainerVolume {
    use brim_proto::v1::{container_volume, ContainerVolume};
    ContainerVolume {
        container_path: container_path.into(),
        mode: mode(readonly),
        source: Some(container_volume::Source::HostPath(host_path.into())),
    }
}

/// Parses `SOURCE:TARGET[:ro|:rw]` (`brim run --volume`, services' `volumes`): an absolute
/// SOURCE is a directory of the agent (allowed by its `--allowed-host-paths`), a relative one
/// a directory of the sandbox; TARGET relative = in the sandbox, absolute = in the image.
pub fn parse_volume(s: &str) -> Result<brim_proto::v1::ContainerVolume, String> {
    use brim_proto::v1::{container_volume, ContainerVolume};
    let (rest, readonly) = match s.rsplit_once(':') {
        Some((r, "ro")) => (r, true),
        Some((r, "rw")) => (r, false),
        _ => (s, false),
    };
    let Some((src, dst)) = rest
        .split_once(':')
        .filter(|(a, b)| !a.is_empty() && !b.is_empty() && !b.contains(':'))
    else {
        return Err(format!(
            "`{s}` must look like SOURCE:TARGET or SOURCE:TARGET:ro"
        ));
    };
    let source = if src.starts_with('/') {
        container_volume::Source::HostPath(src.to_string())
    } else {
        container_volume::Source::SandboxPath(src.to_string())
    };
    Ok(ContainerVolume {
        container_path: dst.to_string(),
        mode: mode(readonly),
        source: Some(source),
    })
}

/// Builds a [`TaskInfo`]:
/// `TaskBuilder::new("web-1", "web").shell("./serve").cpus(0.5).mem(128.0).ports(1).build_for(&offer)`.
///
/// Ports asked with [`TaskBuilder::ports`] are picked from the offer and exported to the task
/// as `PORT0`, `PORT1`, ...
#[derive(Clone, Debug)]
pub struct TaskBuilder {
    task_id: String,
    name: String,
    command: Option<CommandInfo>,
    env: Vec<EnvironmentVariable>,
    user: String,
    resources: Resources,
    resource_error: Option<ResourceError>,
    ports: u64,
    kill_grace: Option<Duration>,
    labels: Vec<Label>,
    uris: Vec<Uri>,
    health_check: Option<HealthCheck>,
    container: Option<brim_proto::v1::ContainerInfo>,
}

impl TaskBuilder {
    pub fn new(task_id: impl Into<String>, name: impl Into<String>) -> Self {
        TaskBuilder {
            task_id: task_id.into(),
            name: name.into(),
            command: None,
            env: Vec::new(),
            user: String::new(),
            resources: Resources::new(),
            resource_error: None,
            ports: 0,
            kill_grace: None,
            labels: Vec::new(),
            uris: Vec::new(),
            health_check: None,
            container: None,
        }
    }

    /// Runs the task in an OCI container of `image` (crun on the agent): an absolute path
    /// on the agent to an OCI image layout directory, an OCI or `docker save` tarball, or an
    /// `http://` URI of one. The command runs in the image's root filesystem (the image's
    /// entrypoint/cmd when no command is set). See docs/CONTAINERIZERS.md.
    pub fn image(mut self, image: impl Into<String>) -> Self {
        use brim_proto::v1::{container_info, ContainerInfo, Image};
        self.container = Some(ContainerInfo {
            r#type: container_info::Type::Oci as i32,
            image: Some(Image {
                kind: 0,
                uri: image.into(),
            }),
            volumes: self.container.take().map(|c| c.volumes).unwrap_or_default(),
        });
        self
    }

    /// Mounts the agent's directory `host_path` at `container_path` (relative = inside the
    /// sandbox; absolute = in the image, OCI tasks only), read-only when `readonly`. The
    /// agent allows only paths under its `--allowed-host-paths` (else TASK_ERROR).
    pub fn host_volume(
        self,
        host_path: impl Into<String>,
        container_path: impl Into<String>,
        readonly: bool,
    ) -> Self {
        self.volume(host_volume(host_path, container_path, readonly))
    }

    /// Mounts the sandbox directory `sandbox_path` (relative, created if missing) at
    /// `container_path` too, read-only when `readonly`.
    pub fn sandbox_volume(
        self,
        sandbox_path: impl Into<String>,
        container_path: impl Into<String>,
        readonly: bool,
    ) -> Self {
        use brim_proto::v1::{container_volume, ContainerVolume};
        self.volume(ContainerVolume {
            container_path: container_path.into(),
            mode: mode(readonly),
            source: Some(container_volume::Source::SandboxPath(sandbox_path.into())),
        })
    }

    /// Adds a container volume (`ContainerInfo.volumes`); a task without a container gets a
    /// native one.
    pub fn volume(mut self, volume: brim_proto::v1::ContainerVolume) -> Self {
        self.container
            .get_or_insert_with(Default::default)
            .volumes
            .push(volume);
        self
    }

    /// Runs `command` with `/bin/sh -c`.
    pub fn shell(mut self, command: impl Into<String>) -> Self {
        self.command = Some(CommandInfo {
            shell: true,
            value: command.into(),
            ..CommandInfo::default()
        });
        self
    }

    /// Executes `argv[0]` directly with `argv` as its arguments (no shell).
    pub fn command<I, S>(mut self, argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let arguments: Vec<String> = argv.into_iter().map(Into::into).collect();
        self.command = Some(CommandInfo {
            shell: false,
            value: arguments.first().cloned().unwrap_or_default(),
            arguments,
            ..CommandInfo::default()
        });
        self
    }

    /// Adds an environment variable.
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push(EnvironmentVariable {
            name: name.into(),
            value: value.into(),
        });
        self
    }

    /// Unix user to run as (default: the framework's user).
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = user.into();
        self
    }

    /// Replaces the task's resources.
    pub fn resources(mut self, resources: &Resources) -> Self {
        self.resources = resources.clone();
        self
    }

    /// Sets one scalar resource, e.g. `scalar("gpus", 1.0)`.
    pub fn scalar(mut self, name: &str, amount: f64) -> Self {
        if let Err(e) = self.resources.set_scalar(name, amount) {
            self.resource_error.get_or_insert(e);
        }
        self
    }

    pub fn cpus(self, cpus: f64) -> Self {
        self.scalar("cpus", cpus)
    }

    /// Memory in MiB.
    pub fn mem(self, mib: f64) -> Self {
        self.scalar("mem", mib)
    }

    /// Number of ports to pick from the offer's `ports` ranges.
    pub fn ports(mut self, count: u64) -> Self {
        self.ports = count;
        self
    }

    /// SIGTERM→SIGKILL grace period when the task is killed.
    pub fn kill_grace(mut self, grace: Duration) -> Self {
        self.kill_grace = Some(grace);
        self
    }

    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.push(Label {
            key: key.into(),
            value: value.into(),
        });
        self
    }

    /// Fetches a file into the sandbox before the command starts: an absolute path,
    /// `file://` or `http://` URL on the agent's loopback, e.g.
    /// `.uri(Uri { value: "http://127.0.0.1:8000/app.tgz".into(), extract: true, ..Default::default() })`.
    pub fn uri(mut self, uri: Uri) -> Self {
        self.uris.push(uri);
        self
    }

    /// Checks the task's health while it runs (results come as TASK_RUNNING updates with
    /// `healthy` set; too many failures in a row kill the task).
    pub fn health_check(mut self, check: HealthCheck) -> Self {
        self.health_check = Some(check);
        self
    }

    pub fn task_id(&self) -> &str {
        &self.task_id
    }

    /// The resources asked, without the ports picked at placement.
    pub fn needs(&self) -> &Resources {
        &self.resources
    }

    /// Builds the task for `offer`, checking the offer holds everything it needs.
    pub fn build_for(&self, offer: &Offer) -> Result<TaskInfo, TaskError> {
        OfferPacker::new(offer)?.place(self)
    }

    fn validate(&self) -> Result<CommandInfo, TaskError> {
        if self.task_id.is_empty() {
            return Err(TaskError::EmptyId);
        }
        if let Some(e) = &self.resource_error {
            return Err(TaskError::InvalidResources {
                task_id: self.task_id.clone(),
                source: e.clone(),
            });
        }
        match &self.command {
            Some(c) if !c.value.is_empty() => Ok(c.clone()),
            _ => Err(TaskError::NoCommand(self.task_id.clone())),
        }
    }
}

/// Places tasks on one offer, keeping track of what is left:
/// ```no_run
/// # fn f(offer: &brim_framework::v1::Offer, b: &brim_framework::TaskBuilder) {
/// let mut packer = brim_framework::OfferPacker::new(offer).expect("valid offer");
/// let mut tasks = Vec::new();
/// while let Ok(t) = packer.place(b) { tasks.push(t); break; }
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct OfferPacker {
    offer_id: String,
    agent_id: String,
    remaining: Resources,
    /// Packing the offer's revocable resources: tasks placed are revocable.
    revocable: bool,
    /// Packing the offer's resources reserved for this role: tasks placed use them.
    reservation_role: Option<String>,
}

impl OfferPacker {
    /// Starts from the offer's unreserved, non-revocable resources.
    pub fn new(offer: &Offer) -> Result<Self, TaskError> {
        Self::from_offer(offer, false)
    }

    /// Starts from the offer's resources reserved for `role` (dynamic reservations, see
    /// [`crate::reserve_operation`]). Tasks placed use the reservation.
    pub fn reserved(offer: &Offer, role: &str) -> Result<Self, TaskError> {
        let mut all = Resources::from_proto_reserved(&offer.resources).map_err(|source| {
            TaskError::InvalidOffer {
                offer_id: offer.id.clone(),
                source,
            }
        })?;
        Ok(OfferPacker {
            offer_id: offer.id.clone(),
            agent_id: offer.agent_id.clone(),
            remaining: all.remove(role).unwrap_or_default(),
            revocable: false,
            reservation_role: Some(role.to_string()),
        })
    }

    /// Starts from the offer's revocable resources (oversubscribed slack, offered only to
    /// frameworks with the `REVOCABLE_RESOURCES` capability). Tasks placed ask for revocable
    /// resources: they run at the lowest priority and may be preempted (`TASK_KILLED` with
    /// reason `REASON_CONTAINER_PREEMPTED`) when the resources' owners need them back.
    pub fn revocable(offer: &Offer) -> Result<Self, TaskError> {
        Self::from_offer(offer, true)
    }

    fn from_offer(offer: &Offer, revocable: bool) -> Result<Self, TaskError> {
        let decode = if revocable {
            Resources::from_proto_revocable
        } else {
            Resources::from_proto_unreserved
        };
        let remaining = decode(&offer.resources).map_err(|source| TaskError::InvalidOffer {
            offer_id: offer.id.clone(),
            source,
        })?;
        Ok(OfferPacker {
            offer_id: offer.id.clone(),
            agent_id: offer.agent_id.clone(),
            remaining,
            revocable,
            reservation_role: None,
        })
    }

    /// Whether tasks placed by this packer are revocable.
    pub fn is_revocable(&self) -> bool {
        self.revocable
    }

    /// What is still unplaced.
    pub fn remaining(&self) -> &Resources {
        &self.remaining
    }

    /// True when `task` would fit in what is left.
    pub fn fits(&self, task: &TaskBuilder) -> bool {
        self.clone().place(task).is_ok()
    }

    /// Builds `task` from what is left and subtracts its resources (ports included).
    pub fn place(&mut self, task: &TaskBuilder) -> Result<TaskInfo, TaskError> {
        let mut command = task.validate()?;
        let mut resources = task.resources.clone();
        if task.ports > 0 {
            let free = self.remaining.ranges("ports").cloned().unwrap_or_default();
            let picked =
                pick_ports(&free, task.ports).ok_or_else(|| TaskError::NotEnoughPorts {
                    task_id: task.task_id.clone(),
                    offer_id: self.offer_id.clone(),
                    need: task.ports,
                    available: free.count(),
                })?;
            let mut with_ports = Resources::new();
            with_ports
                .set_ranges("ports", picked.clone())
                .map_err(|source| TaskError::InvalidResources {
                    task_id: task.task_id.clone(),
                    source,
                })?;
            resources.add(&with_ports);
            let values = picked
                .intervals()
                .iter()
                .flat_map(|&(b, e)| b..=e)
                .enumerate();
            for (i, port) in values {
                command.environment.push(EnvironmentVariable {
                    name: format!("PORT{i}"),
                    value: port.to_string(),
                });
            }
        }
        let left = self
            .remaining
            .checked_sub(&resources)
            .ok_or_else(|| TaskError::DoesNotFit {
                task_id: task.task_id.clone(),
                offer_id: self.offer_id.clone(),
                need: Box::new(resources.clone()),
                available: Box::new(self.remaining.clone()),
            })?;
        self.remaining = left;
        command.environment.extend(task.env.iter().cloned());
        if !task.user.is_empty() {
            command.user = task.user.clone();
        }
        command.uris.extend(task.uris.iter().cloned());
        Ok(TaskInfo {
            name: task.name.clone(),
            task_id: task.task_id.clone(),
            agent_id: self.agent_id.clone(),
            resources: match &self.reservation_role {
                Some(role) => resources.to_proto_reserved(role, ""),
                None => resources.to_proto_with(self.revocable),
            },
            command: Some(command),
            kill_grace_period_seconds: task.kill_grace.map_or(0.0, |g| g.as_secs_f64()),
            labels: task.labels.clone(),
            health_check: task.health_check.clone(),
            executor: None,
            container: task.container.clone(),
        })
    }
}

/// The first `count` ports of `available`, or `None` when there are fewer.
pub fn pick_ports(available: &RangeSet, count: u64) -> Option<RangeSet> {
    (available.count() >= count).then(|| available.take(count))
}

/// The exit code a terminal status stands for, shell-style: the process's own code (or
/// 128+signal) when the agent reported one, else 0 for FINISHED, 137 for KILLED and 1 for
/// every other terminal state. `None` while the task is not terminal.
pub fn exit_code_of(status: &v1::TaskStatus) -> Option<i32> {
    let state = status.state();
    if !state.is_terminal() {
        return None;
    }
    Some(match (status.exit_code, state) {
        (Some(code), _) => code,
        (None, TaskState::TaskFinished) => 0,
        (None, TaskState::TaskKilled) => 137,
        (None, _) => 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(s: &str) -> Resources {
        Resources::parse(s).unwrap_or_else(|e| panic!("`{s}` should parse: {e}"))
    }

    fn offer(resources: &str) -> Offer {
        Offer {
            id: "o1".into(),
            agent_id: "a1".into(),
            resources: res(resources).to_proto(),
            ..Offer::default()
        }
    }

    #[test]
    fn reserved_packer_uses_only_the_roles_reservation_and_marks_tasks() {
        let mut resources = res("cpus:1;mem:512").to_proto();
        resources.extend(res("cpus:3;mem:2048").to_proto_reserved("db", ""));
        let o = Offer {
            resources,
            ..offer("cpus:0")
        };
        let b = TaskBuilder::new("t1", "db")
            .shell("true")
            .cpus(2.0)
            .mem(1024.0);
        assert!(OfferPacker::new(&o).expect("valid").place(&b).is_err());
        assert!(OfferPacker::reserved(&o, "web")
            .expect("valid")
            .place(&b)
            .is_err());
        let mut p = OfferPacker::reserved(&o, "db").expect("valid");
        let t = p.place(&b).expect("fits the reservation");
        assert!(t.resources.iter().all(|r| r.reservation_role == "db"));
        assert_eq!(p.remaining(), &res("cpus:1;mem:1024"));
    }

    #[test]
    fn revocable_packer_uses_only_the_revocable_part_and_marks_tasks() {
        let mut resources = res("cpus:1;mem:512").to_proto();
        resources.extend(res("cpus:3;mem:2048").to_proto_with(true));
        let o = Offer {
            resources,
            ..offer("cpus:0")
        };
        let b = TaskBuilder::new("t1", "batch")
            .shell("true")
            .cpus(2.0)
            .mem(1024.0);
        // The plain part cannot hold it; the revocable part can.
        assert!(!OfferPacker::new(&o).expect("valid").fits(&b));
        let mut p = OfferPacker::revocable(&o).expect("valid");
        assert!(p.is_revocable());
        let t = p.place(&b).expect("fits in revocable");
        assert!(t.resources.iter().all(|r| r.revocable));
        assert_eq!(
            Resources::from_proto_revocable(&t.resources).expect("valid"),
            res("cpus:2;mem:1024")
        );
        assert_eq!(p.remaining(), &res("cpus:1;mem:1024"));
        assert!(p.place(&b).is_err(), "only 1 revocable cpu left");
    }

    #[test]
    fn shell_task_takes_what_it_asks() {
        let t = TaskBuilder::new("t1", "hello")
            .shell("echo hi")
            .cpus(0.5)
            .mem(64.0)
            .env("A", "1")
            .build_for(&offer("cpus:2;mem:1024"))
            .unwrap_or_else(|e| panic!("should fit: {e}"));
        assert_eq!(t.agent_id, "a1");
        let c = t.command.unwrap_or_else(|| panic!("command set"));
        assert!(c.shell);
        assert_eq!(c.value, "echo hi");
        assert_eq!(c.environment.len(), 1);
        assert_eq!(
            Resources::from_proto(&t.resources).ok(),
            Some(res("cpus:0.5;mem:64"))
        );
    }

    #[test]
    fn exec_task_keeps_argv0() {
        let t = TaskBuilder::new("t1", "ls")
            .command(["ls", "-l", "/"])
            .build_for(&offer("cpus:1"))
            .unwrap_or_else(|e| panic!("should build: {e}"));
        let c = t.command.unwrap_or_else(|| panic!("command set"));
        assert!(!c.shell);
        assert_eq!(c.value, "ls");
        assert_eq!(c.arguments, ["ls", "-l", "/"]);
    }

    #[test]
    fn packer_places_until_full_and_picks_distinct_ports() {
        let mut p = OfferPacker::new(&offer("cpus:1;mem:256;ports:[31000-31002]"))
            .unwrap_or_else(|e| panic!("valid offer: {e}"));
        let b = |i: u32| {
            TaskBuilder::new(format!("t{i}"), "w")
                .shell("true")
                .cpus(0.3)
                .mem(64.0)
                .ports(1)
        };
        let mut ports = Vec::new();
        for i in 0..3 {
            let t = p
                .place(&b(i))
                .unwrap_or_else(|e| panic!("task {i} should fit: {e}"));
            let env = t.command.map(|c| c.environment).unwrap_or_default();
            ports.push(env[0].value.clone());
        }
        assert_eq!(ports, ["31000", "31001", "31002"]);
        assert_eq!(p.remaining(), &res("cpus:0.1;mem:64"));
        assert!(matches!(
            p.place(&b(4)),
            Err(TaskError::NotEnoughPorts { .. })
        ));
        let big = TaskBuilder::new("x", "x").shell("true").cpus(0.2);
        assert!(matches!(p.place(&big), Err(TaskError::DoesNotFit { .. })));
        assert!(!p.fits(&big));
    }

    #[test]
    fn builder_errors_are_clear() {
        let o = offer("cpus:1");
        let check = |b: TaskBuilder, want: &str| match b.build_for(&o) {
            Err(e) => assert!(
                e.to_string().contains(want),
                "`{e}` should mention `{want}`"
            ),
            Ok(_) => panic!("should fail with `{want}`"),
        };
        check(TaskBuilder::new("", "x").shell("true"), "id is empty");
        check(TaskBuilder::new("t", "x"), "has no command");
        check(
            TaskBuilder::new("t", "x").shell("true").cpus(-1.0),
            "invalid resources",
        );
        check(
            TaskBuilder::new("t", "x").shell("true").cpus(2.0),
            "needs cpus:2",
        );
    }

    #[test]
    fn exit_codes() {
        let check = |state: TaskState, code: Option<i32>, want: Option<i32>| {
            let mut s = v1::TaskStatus {
                exit_code: code,
                ..v1::TaskStatus::default()
            };
            s.set_state(state);
            assert_eq!(exit_code_of(&s), want, "{state:?} {code:?}");
        };
        check(TaskState::TaskRunning, None, None);
        check(TaskState::TaskFinished, Some(0), Some(0));
        check(TaskState::TaskFinished, None, Some(0));
        check(TaskState::TaskFailed, Some(3), Some(3));
        check(TaskState::TaskFailed, Some(143), Some(143));
        check(TaskState::TaskKilled, None, Some(137));
        check(TaskState::TaskLost, None, Some(1));
        check(TaskState::TaskError, None, Some(1));
    }
}
