//! Mesos v1 JSON ↔ brim.v1: the calls a Mesos scheduler sends (decoded with serde into
//! structs that mirror `mesos/v1/scheduler/scheduler.proto`), and the events brim sends back
//! (built as `serde_json::Value` in the exact Mesos field layout).
//!
//! Mesos's JSON is protobuf's JSON mapping: wrappers such as `FrameworkID` are `{"value": …}`,
//! enums are their names (`"TASK_RUNNING"`), `bytes` are base64. Unknown fields are ignored
//! (as Mesos does); a known field with the wrong type is an error.

use base64::Engine;
use brim_proto::v1::{self, event, TaskState, TaskStatusReason, TaskStatusSource};
use serde::Deserialize;
use serde_json::{json, Map, Value};

/// Why a Mesos JSON value cannot become its brim.v1 counterpart.
#[derive(Debug, thiserror::Error, PartialEq)]
pub(crate) enum MesosJsonError {
    /// Valid JSON in the wrong shape (Mesos: "Failed to convert JSON into Call protobuf").
    #[error("{0}")]
    Shape(String),
    /// A feature brim does not implement yet.
    #[error("{0}")]
    Unsupported(String),
}

// ---------------------------------------------------------------------------------- calls

/// `{"value": "…"}` — FrameworkID, AgentID, TaskID, OfferID, ExecutorID.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct Id {
    pub(crate) value: String,
}

/// `scheduler::Call`.
#[derive(Debug, Deserialize)]
pub(crate) struct Call {
    #[serde(default)]
    pub(crate) framework_id: Option<Id>,
    #[serde(rename = "type")]
    pub(crate) kind: String,
    #[serde(default)]
    pub(crate) subscribe: Option<Subscribe>,
    #[serde(default)]
    pub(crate) accept: Option<Accept>,
    #[serde(default)]
    pub(crate) decline: Option<Decline>,
    #[serde(default)]
    pub(crate) kill: Option<Kill>,
    #[serde(default)]
    pub(crate) shutdown: Option<Shutdown>,
    #[serde(default)]
    pub(crate) acknowledge: Option<Acknowledge>,
    #[serde(default)]
    pub(crate) reconcile: Option<Reconcile>,
    #[serde(default)]
    pub(crate) message: Option<Message>,
    #[serde(default)]
    pub(crate) revive: Option<Roles>,
    #[serde(default)]
    pub(crate) suppress: Option<Roles>,
    #[serde(default)]
    pub(crate) update_framework: Option<Subscribe>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Subscribe {
    pub(crate) framework_info: FrameworkInfo,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Capability {
    #[serde(rename = "type")]
    pub(crate) kind: String,
}

/// `mesos.v1.FrameworkInfo` (the fields brim uses; others are ignored).
#[derive(Debug, Deserialize)]
pub(crate) struct FrameworkInfo {
    pub(crate) user: String,
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) id: Option<Id>,
    #[serde(default)]
    pub(crate) failover_timeout: Option<f64>,
    #[serde(default)]
    pub(crate) role: Option<String>,
    #[serde(default)]
    pub(crate) roles: Vec<String>,
    #[serde(default)]
    pub(crate) hostname: Option<String>,
    #[serde(default)]
    pub(crate) principal: Option<String>,
    #[serde(default)]
    pub(crate) capabilities: Vec<Capability>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct Filters {
    #[serde(default)]
    pub(crate) refuse_seconds: Option<f64>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Accept {
    #[serde(default)]
    pub(crate) offer_ids: Vec<Id>,
    #[serde(default)]
    pub(crate) operations: Vec<Operation>,
    #[serde(default)]
    pub(crate) filters: Option<Filters>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Operation {
    #[serde(rename = "type")]
    pub(crate) kind: String,
    #[serde(default)]
    pub(crate) launch: Option<Launch>,
    #[serde(default)]
    pub(crate) reserve: Option<ResourceList>,
    #[serde(default)]
    pub(crate) unreserve: Option<ResourceList>,
    #[serde(default)]
    pub(crate) create: Option<VolumeList>,
    #[serde(default)]
    pub(crate) destroy: Option<VolumeList>,
    #[serde(default)]
    pub(crate) launch_group: Option<LaunchGroup>,
}

/// `Offer.Operation.LaunchGroup`: an executor and a `TaskGroupInfo`.
#[derive(Debug, Deserialize)]
pub(crate) struct LaunchGroup {
    pub(crate) executor: ExecutorInfo,
    pub(crate) task_group: TaskGroupInfo,
}

/// `mesos.v1.TaskGroupInfo`.
#[derive(Debug, Deserialize)]
pub(crate) struct TaskGroupInfo {
    #[serde(default)]
    pub(crate) tasks: Vec<TaskInfo>,
}

/// `Offer.Operation.Create` / `Destroy`: `{"volumes": [...]}`.
#[derive(Debug, Deserialize)]
pub(crate) struct VolumeList {
    #[serde(default)]
    pub(crate) volumes: Vec<Resource>,
}

/// `Offer.Operation.Reserve` / `Unreserve`: `{"resources": [...]}`.
#[derive(Debug, Deserialize)]
pub(crate) struct ResourceList {
    #[serde(default)]
    pub(crate) resources: Vec<Resource>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Launch {
    #[serde(default)]
    pub(crate) task_infos: Vec<TaskInfo>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Decline {
    #[serde(default)]
    pub(crate) offer_ids: Vec<Id>,
    #[serde(default)]
    pub(crate) filters: Option<Filters>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct DurationInfo {
    pub(crate) nanoseconds: i64,
}

#[derive(Debug, Deserialize)]
pub(crate) struct KillPolicy {
    #[serde(default)]
    pub(crate) grace_period: Option<DurationInfo>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Kill {
    pub(crate) task_id: Id,
    #[serde(default)]
    pub(crate) agent_id: Option<Id>,
    #[serde(default)]
    pub(crate) kill_policy: Option<KillPolicy>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Shutdown {
    pub(crate) executor_id: Id,
    pub(crate) agent_id: Id,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Acknowledge {
    pub(crate) agent_id: Id,
    pub(crate) task_id: Id,
    pub(crate) uuid: String,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ReconcileTask {
    pub(crate) task_id: Id,
    #[serde(default)]
    pub(crate) agent_id: Option<Id>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct Reconcile {
    #[serde(default)]
    pub(crate) tasks: Vec<ReconcileTask>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Message {
    pub(crate) agent_id: Id,
    pub(crate) executor_id: Id,
    pub(crate) data: String,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct Roles {
    #[serde(default)]
    pub(crate) roles: Vec<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Label {
    pub(crate) key: String,
    #[serde(default)]
    pub(crate) value: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct Labels {
    #[serde(default)]
    pub(crate) labels: Vec<Label>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Variable {
    pub(crate) name: String,
    #[serde(default, rename = "type")]
    pub(crate) kind: Option<String>,
    #[serde(default)]
    pub(crate) value: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct Environment {
    #[serde(default)]
    pub(crate) variables: Vec<Variable>,
}

/// `mesos.v1.CommandInfo`. `shell` defaults to true, as in Mesos.
#[derive(Debug, Deserialize)]
pub(crate) struct CommandInfo {
    #[serde(default)]
    pub(crate) shell: Option<bool>,
    #[serde(default)]
    pub(crate) value: Option<String>,
    #[serde(default)]
    pub(crate) arguments: Vec<String>,
    #[serde(default)]
    pub(crate) environment: Option<Environment>,
    #[serde(default)]
    pub(crate) user: Option<String>,
    #[serde(default)]
    pub(crate) uris: Vec<Value>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Scalar {
    pub(crate) value: f64,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Range {
    pub(crate) begin: u64,
    pub(crate) end: u64,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct Ranges {
    #[serde(default)]
    pub(crate) range: Vec<Range>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct Set {
    #[serde(default)]
    pub(crate) item: Vec<String>,
}

/// `mesos.v1.Resource`.
#[derive(Debug, Deserialize)]
pub(crate) struct Resource {
    pub(crate) name: String,
    #[serde(rename = "type")]
    pub(crate) kind: String,
    #[serde(default)]
    pub(crate) scalar: Option<Scalar>,
    #[serde(default)]
    pub(crate) ranges: Option<Ranges>,
    #[serde(default)]
    pub(crate) set: Option<Set>,
    #[serde(default)]
    pub(crate) revocable: Option<Value>,
    /// Post-refinement reservations (the last one is the resource's role).
    #[serde(default)]
    pub(crate) reservations: Vec<ReservationInfo>,
    /// Pre-refinement format: `role` plus `reservation`.
    #[serde(default)]
    pub(crate) role: Option<String>,
    #[serde(default)]
    pub(crate) reservation: Option<ReservationInfo>,
    #[serde(default)]
    pub(crate) disk: Option<Value>,
}

/// `mesos.v1.Resource.ReservationInfo`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ReservationInfo {
    #[serde(default, rename = "type")]
    pub(crate) kind: Option<String>,
    #[serde(default)]
    pub(crate) role: Option<String>,
    #[serde(default)]
    pub(crate) principal: Option<String>,
}

/// `mesos.v1.ExecutorInfo` (a custom executor; brim runs it on the agent).
#[derive(Debug, Deserialize)]
pub(crate) struct ExecutorInfo {
    pub(crate) executor_id: Id,
    /// `DEFAULT` (the agent runs a task group) or `CUSTOM`.
    #[serde(default, rename = "type")]
    pub(crate) kind: Option<String>,
    #[serde(default)]
    pub(crate) name: Option<String>,
    #[serde(default)]
    pub(crate) command: Option<CommandInfo>,
    #[serde(default)]
    pub(crate) container: Option<Value>,
}

/// `mesos.v1.TaskInfo`.
#[derive(Debug, Deserialize)]
pub(crate) struct TaskInfo {
    pub(crate) name: String,
    pub(crate) task_id: Id,
    #[serde(default)]
    pub(crate) agent_id: Option<Id>,
    #[serde(default)]
    pub(crate) resources: Vec<Resource>,
    #[serde(default)]
    pub(crate) executor: Option<ExecutorInfo>,
    #[serde(default)]
    pub(crate) command: Option<CommandInfo>,
    #[serde(default)]
    pub(crate) container: Option<Value>,
    #[serde(default)]
    pub(crate) kill_policy: Option<KillPolicy>,
    #[serde(default)]
    pub(crate) labels: Option<Labels>,
}

// ------------------------------------------------------------------- call → brim.v1

fn shape(msg: impl Into<String>) -> MesosJsonError {
    MesosJsonError::Shape(msg.into())
}

fn unsupported(msg: impl Into<String>) -> MesosJsonError {
    MesosJsonError::Unsupported(msg.into())
}

/// Stand-in for Mesos's `failover_timeout: 0` (remove on disconnect), in seconds.
pub(crate) const MIN_FAILOVER_TIMEOUT: f64 = 0.001;

/// Mesos FrameworkInfo → brim FrameworkInfo. brim frameworks have exactly one role.
pub(crate) fn framework_info(fi: &FrameworkInfo) -> Result<v1::FrameworkInfo, MesosJsonError> {
    let capabilities: Vec<String> = fi.capabilities.iter().map(|c| c.kind.clone()).collect();
    let role =
        match (fi.role.as_deref(), fi.roles.as_slice()) {
            (_, [one]) => one.clone(),
            (_, [_, _, ..]) => return Err(unsupported(
                "brim supports one role per framework; subscribe with a single entry in 'roles'",
            )),
            (Some(r), []) => r.to_string(),
            (None, []) => "*".to_string(),
        };
    if let Some(t) = fi.failover_timeout {
        if !t.is_finite() || t < 0.0 {
            return Err(shape("'failover_timeout' must be a finite number >= 0"));
        }
    }
    Ok(v1::FrameworkInfo {
        user: fi.user.clone(),
        name: fi.name.clone(),
        id: fi.id.as_ref().map(|i| i.value.clone()).unwrap_or_default(),
        role,
        // Mesos removes a framework with failover_timeout 0 (the default) as soon as it
        // disconnects; brim reads 0 as "the master's default", so ask for the shortest.
        failover_timeout: match fi.failover_timeout.unwrap_or(0.0) {
            t if t > 0.0 => t,
            _ => MIN_FAILOVER_TIMEOUT,
        },
        capabilities,
        hostname: fi.hostname.clone().unwrap_or_default(),
        principal: fi.principal.clone().unwrap_or_default(),
    })
}

/// Refuse filter in seconds (validated by the master).
pub(crate) fn filters(f: Option<&Filters>) -> Option<v1::Filters> {
    f.map(|f| v1::Filters {
        refuse_seconds: f.refuse_seconds,
    })
}

/// The reservation of a Mesos resource: `(role, principal)`, `None` when unreserved. Both
/// formats are read: `reservations` (the last, refined one is the role; brim keeps one level
/// and refuses refinements and static reservations) and the older `role` + `reservation`.
fn reservation(r: &Resource) -> Result<Option<(String, String)>, MesosJsonError> {
    let principal = |i: &ReservationInfo| i.principal.clone().unwrap_or_default();
    if let Some(last) = r.reservations.last() {
        if r.reservations.len() > 1 {
            return Err(unsupported(format!(
                "resource {}: refined reservations (more than one entry in 'reservations') are not supported by brim yet",
                r.name
            )));
        }
        if last.kind.as_deref() == Some("STATIC") {
            return Err(unsupported(format!(
                "resource {}: STATIC reservations are not supported by brim; use DYNAMIC",
                r.name
            )));
        }
        let role =
            last.role.clone().filter(|x| !x.is_empty()).ok_or_else(|| {
                shape(format!("resource {}: a reservation needs a 'role'", r.name))
            })?;
        return Ok(Some((role, principal(last))));
    }
    match r.role.as_deref() {
        None | Some("*") | Some("") => Ok(None),
        Some(role) => Ok(Some((
            role.to_string(),
            r.reservation.as_ref().map(principal).unwrap_or_default(),
        ))),
    }
}

/// A Mesos `DiskInfo`: persistent volumes (`persistence.id` + `volume.container_path`) are
/// carried; disk sources (MOUNT/PATH/BLOCK/RAW) and host paths are not supported.
fn volume(r: &Resource) -> Result<Option<v1::Volume>, MesosJsonError> {
    let Some(disk) = r.disk.as_ref() else {
        return Ok(None);
    };
    if disk.get("source").is_some_and(|v| !v.is_null()) {
        return Err(unsupported(format!(
            "resource {}: disk sources (MOUNT, PATH, BLOCK, RAW) are not supported by brim yet",
            r.name
        )));
    }
    let Some(id) = disk.pointer("/persistence/id").and_then(Value::as_str) else {
        return Ok(None);
    };
    let vol = disk.get("volume");
    if vol
        .and_then(|v| v.get("host_path"))
        .is_some_and(|v| !v.is_null())
    {
        return Err(unsupported(format!(
            "resource {}: persistent volumes with a host_path are not supported by brim",
            r.name
        )));
    }
    let container_path = vol
        .and_then(|v| v.get("container_path"))
        .and_then(Value::as_str)
        .ok_or_else(|| {
            shape(format!(
                "resource {}: persistent volume {id} needs 'volume.container_path'",
                r.name
            ))
        })?;
    Ok(Some(v1::Volume {
        persistence_id: id.to_string(),
        container_path: container_path.to_string(),
    }))
}

/// Mesos Resource → brim Resource. Dynamic reservations are carried (`reservations` or the
/// older `role`/`reservation`), and persistent volumes (`disk.persistence`, `disk.volume`);
/// `allocation_info` is accepted and ignored.
pub(crate) fn resource(r: &Resource) -> Result<v1::Resource, MesosJsonError> {
    let reserved = reservation(r)?;
    let volume = volume(r)?;
    let value =
        match r.kind.as_str() {
            "SCALAR" => {
                let s = r.scalar.as_ref().ok_or_else(|| {
                    shape(format!("resource {}: SCALAR without 'scalar'", r.name))
                })?;
                v1::resource::Value::Scalar(s.value)
            }
            "RANGES" => {
                let rs = r.ranges.as_ref().ok_or_else(|| {
                    shape(format!("resource {}: RANGES without 'ranges'", r.name))
                })?;
                v1::resource::Value::Ranges(v1::Ranges {
                    range: rs
                        .range
                        .iter()
                        .map(|x| v1::Range {
                            begin: x.begin,
                            end: x.end,
                        })
                        .collect(),
                })
            }
            "SET" => {
                let s = r
                    .set
                    .as_ref()
                    .ok_or_else(|| shape(format!("resource {}: SET without 'set'", r.name)))?;
                v1::resource::Value::Set(v1::Set {
                    item: s.item.clone(),
                })
            }
            other => {
                return Err(shape(format!(
                    "resource {}: unknown type {other:?}; use SCALAR, RANGES or SET",
                    r.name
                )))
            }
        };
    let (reservation_role, reservation_principal) = reserved.unwrap_or_default();
    Ok(v1::Resource {
        name: r.name.clone(),
        value: Some(value),
        revocable: r.revocable.is_some(),
        reservation_role,
        reservation_principal,
        volume,
    })
}

fn grace_seconds(k: Option<&KillPolicy>) -> Option<f64> {
    k.and_then(|k| k.grace_period.as_ref())
        .map(|g| g.nanoseconds.max(0) as f64 / 1e9)
}

/// Mesos `ContainerInfo` → brim's: `type` MESOS (or absent) with an optional `mesos.image`
/// (`type: DOCKER`, `docker.name` = an absolute path on the agent or a file:// / http(s)://
/// URI of an OCI layout or archive: brim pulls from no registry) and `volumes` (HOST_PATH
/// and SANDBOX_PATH sources, the legacy top-level `host_path`, mode RW/RO). `None` when it
/// asks for nothing brim does (no image, no volumes).
pub(crate) fn container_info(c: &Value) -> Result<Option<v1::ContainerInfo>, MesosJsonError> {
    match c.get("type").and_then(Value::as_str) {
        None | Some("MESOS") => {}
        Some("DOCKER") => {
            return Err(unsupported(
                "container type DOCKER (the Docker containerizer) is not supported by brim: use type MESOS with mesos.image",
            ))
        }
        Some(other) => {
            return Err(shape(format!(
                "container.type `{other}` is unknown: use MESOS"
            )))
        }
    }
    let image = match c.get("mesos").and_then(|m| m.get("image")) {
        None => None,
        Some(i) => {
            if i.get("type").and_then(Value::as_str) != Some("DOCKER") {
                return Err(unsupported(
                    "container.mesos.image: only type DOCKER with docker.name is supported (APPC is not)",
                ));
            }
            let name = i
                .get("docker")
                .and_then(|d| d.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| shape("container.mesos.image needs 'docker.name'"))?;
            let local = name.starts_with('/')
                || ["file://", "http://", "https://"]
                    .iter()
                    .any(|p| name.starts_with(p));
            if !local {
                return Err(unsupported(format!(
                    "container.mesos.image.docker.name `{name}`: brim pulls from no registry; name an OCI image layout or archive by an absolute path on the agent or an http:// URI"
                )));
            }
            Some(v1::Image {
                kind: v1::image::Kind::Auto as i32,
                uri: name.to_string(),
            })
        }
    };
    let mut volumes = Vec::new();
    for (i, v) in c
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let f = format!("container.volumes[{i}]");
        let container_path = v
            .get("container_path")
            .and_then(Value::as_str)
            .ok_or_else(|| shape(format!("{f} needs 'container_path'")))?;
        let mode = match v.get("mode").and_then(Value::as_str) {
            Some("RW") => v1::container_volume::Mode::Rw,
            Some("RO") => v1::container_volume::Mode::Ro,
            _ => return Err(shape(format!("{f}.mode must be RW or RO"))),
        };
        let src = v.get("source");
        let path_of = |o: Option<&Value>, what: &str| {
            o.and_then(|p| p.get("path"))
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| shape(format!("{f}.source needs '{what}.path'")))
        };
        let source = match (
            src.and_then(|s| s.get("type")).and_then(Value::as_str),
            v.get("host_path"),
        ) {
            (None, Some(h)) => v1::container_volume::Source::HostPath(
                h.as_str()
                    .ok_or_else(|| shape(format!("{f}.host_path must be a string")))?
                    .to_string(),
            ),
            (Some("HOST_PATH"), _) => v1::container_volume::Source::HostPath(path_of(
                src.and_then(|s| s.get("host_path")),
                "host_path",
            )?),
            (Some("SANDBOX_PATH"), _) => {
                let sp = src.and_then(|s| s.get("sandbox_path"));
                if sp.and_then(|p| p.get("type")).and_then(Value::as_str) == Some("PARENT") {
                    return Err(unsupported(format!(
                        "{f}: SANDBOX_PATH of type PARENT needs task groups; use SELF"
                    )));
                }
                v1::container_volume::Source::SandboxPath(path_of(sp, "sandbox_path")?)
            }
            (Some(other), _) => {
                return Err(unsupported(format!(
                    "{f}.source.type {other} is not supported: use HOST_PATH or SANDBOX_PATH"
                )))
            }
            (None, None) => {
                return Err(unsupported(format!(
                    "{f} has no host_path or source (image volumes are not supported)"
                )))
            }
        };
        volumes.push(v1::ContainerVolume {
            container_path: container_path.to_string(),
            mode: mode as i32,
            source: Some(source),
        });
    }
    if image.is_none() && volumes.is_empty() {
        return Ok(None);
    }
    Ok(Some(v1::ContainerInfo {
        r#type: if image.is_some() {
            v1::container_info::Type::Oci as i32
        } else {
            v1::container_info::Type::Native as i32
        },
        image,
        volumes,
    }))
}

/// Mesos TaskInfo → brim TaskInfo. Errors are per task: the caller turns them into a
/// TASK_ERROR update (Mesos semantics), so one bad task does not fail the whole call.
pub(crate) fn task_info(t: &TaskInfo) -> Result<v1::TaskInfo, MesosJsonError> {
    let container = t
        .container
        .as_ref()
        .map(container_info)
        .transpose()?
        .flatten();
    let executor_container = t
        .executor
        .as_ref()
        .and_then(|e| e.container.as_ref())
        .map(container_info)
        .transpose()?
        .flatten();
    let executor = match (&t.executor, &t.command) {
        (Some(_), Some(_)) => return Err(shape(
            "Task should have at least one (but not both) of CommandInfo or ExecutorInfo present",
        )),
        (None, None) => return Err(shape("task has neither 'command' nor 'executor'")),
        (Some(e), None) => {
            if e.kind.as_deref() == Some("DEFAULT") {
                return Err(shape(
                    "a DEFAULT executor runs task groups only: use a LAUNCH_GROUP operation",
                ));
            }
            let cmd = e
                .command
                .as_ref()
                .ok_or_else(|| shape("executor has no 'command'"))?;
            if e.executor_id.value.is_empty() {
                return Err(shape(
                    "Expecting 'executor.executor_id.value' to be present",
                ));
            }
            Some(v1::ExecutorInfo {
                executor_id: e.executor_id.value.clone(),
                name: e.name.clone().unwrap_or_default(),
                command: Some(command_info(cmd)?),
                container: executor_container,
                r#type: v1::executor_info::Type::Custom as i32,
            })
        }
        (None, Some(_)) => None,
    };
    let command = t.command.as_ref().map(command_info).transpose()?;
    let resources = t
        .resources
        .iter()
        .map(resource)
        .collect::<Result<Vec<_>, _>>()?;
    let mut task = v1::TaskInfo {
        name: t.name.clone(),
        task_id: t.task_id.value.clone(),
        agent_id: t
            .agent_id
            .as_ref()
            .map(|a| a.value.clone())
            .unwrap_or_default(),
        resources,
        command,
        kill_grace_period_seconds: grace_seconds(t.kill_policy.as_ref()).unwrap_or(0.0),
        labels: t
            .labels
            .iter()
            .flat_map(|l| &l.labels)
            .map(|l| v1::Label {
                key: l.key.clone(),
                value: l.value.clone().unwrap_or_default(),
            })
            .collect(),
        ..Default::default()
    };
    task.container = container;
    task.executor = executor;
    Ok(task)
}

/// Mesos LAUNCH_GROUP → brim `Operation.LaunchGroup`. Any problem with the executor or
/// one task is the whole group's (Mesos refuses a task group as a unit).
pub(crate) fn launch_group(g: &LaunchGroup) -> Result<v1::operation::LaunchGroup, MesosJsonError> {
    let e = &g.executor;
    if e.executor_id.value.is_empty() {
        return Err(shape(
            "Expecting 'executor.executor_id.value' to be present",
        ));
    }
    let (kind, command) = match e.kind.as_deref() {
        Some("DEFAULT") => {
            if e.command.is_some() {
                return Err(shape(
                    "'ExecutorInfo.command' must not be set for 'DEFAULT' executor",
                ));
            }
            (v1::executor_info::Type::Default, None)
        }
        Some("CUSTOM") => {
            let cmd = e
                .command
                .as_ref()
                .ok_or_else(|| shape("'ExecutorInfo.command' must be set for 'CUSTOM' executor"))?;
            (v1::executor_info::Type::Custom, Some(command_info(cmd)?))
        }
        other => {
            return Err(shape(format!(
            "'ExecutorInfo.type' must be 'DEFAULT' or 'CUSTOM' for a LAUNCH_GROUP, not {other:?}"
        )))
        }
    };
    if e.container.is_some() {
        return Err(unsupported(
            "an executor container is not supported by the Mesos API of brim yet: drop executor.container",
        ));
    }
    if g.task_group.tasks.is_empty() {
        return Err(shape("Task group is empty"));
    }
    let mut tasks = Vec::with_capacity(g.task_group.tasks.len());
    for t in &g.task_group.tasks {
        if t.executor.is_some() {
            return Err(shape(format!(
                "task '{}' of a task group must not set 'executor'",
                t.task_id.value
            )));
        }
        tasks.push(task_info(t).map_err(|e| match e {
            MesosJsonError::Shape(m) => shape(format!("task '{}': {m}", t.task_id.value)),
            MesosJsonError::Unsupported(m) => {
                unsupported(format!("task '{}': {m}", t.task_id.value))
            }
        })?);
    }
    Ok(v1::operation::LaunchGroup {
        executor: Some(v1::ExecutorInfo {
            executor_id: e.executor_id.value.clone(),
            name: e.name.clone().unwrap_or_default(),
            command,
            container: None,
            r#type: kind as i32,
        }),
        task_group: Some(v1::TaskGroup { tasks }),
    })
}

/// Mesos CommandInfo → brim CommandInfo (a task's or an executor's).
fn command_info(cmd: &CommandInfo) -> Result<v1::CommandInfo, MesosJsonError> {
    if !cmd.uris.is_empty() {
        return Err(unsupported(
            "command URIs (the Mesos fetcher) are not supported by brim yet",
        ));
    }
    let mut environment = Vec::new();
    for v in cmd.environment.iter().flat_map(|e| &e.variables) {
        if matches!(v.kind.as_deref(), Some("SECRET")) {
            return Err(unsupported(format!(
                "environment variable {}: secrets are not supported by brim yet",
                v.name
            )));
        }
        environment.push(v1::EnvironmentVariable {
            name: v.name.clone(),
            value: v.value.clone().unwrap_or_default(),
        });
    }
    let mut c = v1::CommandInfo {
        shell: cmd.shell.unwrap_or(true),
        value: cmd.value.clone().unwrap_or_default(),
        arguments: cmd.arguments.clone(),
        environment,
        ..Default::default()
    };
    c.user = cmd.user.clone().unwrap_or_default();
    Ok(c)
}

/// Kill call → brim KillRequest.
pub(crate) fn kill(framework_id: &str, k: &Kill) -> v1::KillRequest {
    v1::KillRequest {
        framework_id: framework_id.to_string(),
        task_id: k.task_id.value.clone(),
        agent_id: k
            .agent_id
            .as_ref()
            .map(|a| a.value.clone())
            .unwrap_or_default(),
        grace_period_seconds: grace_seconds(k.kill_policy.as_ref()),
    }
}

/// The 16 bytes of a status update uuid from its base64 form.
pub(crate) fn decode_uuid(text: &str) -> Result<Vec<u8>, MesosJsonError> {
    let engines = [
        &base64::engine::general_purpose::STANDARD,
        &base64::engine::general_purpose::URL_SAFE,
        &base64::engine::general_purpose::STANDARD_NO_PAD,
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ];
    for e in engines {
        if let Ok(bytes) = e.decode(text) {
            if bytes.len() == 16 {
                return Ok(bytes);
            }
            return Err(shape(format!(
                "'uuid' decodes to {} bytes; expected the 16 bytes of the update's uuid",
                bytes.len()
            )));
        }
    }
    Err(shape("'uuid' is not valid base64"))
}

/// The bytes of a MESSAGE's `data` (base64, as Mesos's JSON for `bytes`).
pub(crate) fn decode_data(text: &str) -> Result<Vec<u8>, MesosJsonError> {
    let engines = [
        &base64::engine::general_purpose::STANDARD,
        &base64::engine::general_purpose::URL_SAFE,
        &base64::engine::general_purpose::STANDARD_NO_PAD,
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ];
    engines
        .iter()
        .find_map(|e| e.decode(text).ok())
        .ok_or_else(|| shape("'message.data' is not valid base64"))
}

/// Base64 of an update uuid, as Mesos sends it.
pub(crate) fn encode_uuid(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

// ------------------------------------------------------------------ brim.v1 → events

/// What the event encoder needs to know about the subscription.
#[derive(Debug, Clone)]
pub(crate) struct EventContext {
    /// The framework declared REVOCABLE_RESOURCES.
    pub(crate) revocable: bool,
    pub(crate) role: String,
    /// The leading master's `host:port`, for `master_info` in SUBSCRIBED.
    pub(crate) leader: String,
}

fn id(v: &str) -> Value {
    json!({ "value": v })
}

/// `host:port` → (host, port); port 0 when absent or invalid.
fn split_host_port(addr: &str) -> (&str, u16) {
    match addr.rsplit_once(':') {
        Some((h, p)) => (h.trim_matches(['[', ']']), p.parse().unwrap_or(0)),
        None => (addr, 0),
    }
}

/// Mesos `Address` JSON for `host:port`.
fn address(addr: &str) -> Value {
    let (host, port) = split_host_port(addr);
    let mut a = Map::new();
    a.insert("hostname".into(), json!(host));
    if host.parse::<std::net::IpAddr>().is_ok() {
        a.insert("ip".into(), json!(host));
    }
    a.insert("port".into(), json!(port));
    Value::Object(a)
}

/// `MasterInfo` for SUBSCRIBED (and `/master/state`): `ip` is the IPv4 address as the
/// little-endian u32 Mesos stores (network byte order read as a host integer).
pub(crate) fn master_info(master_id: &str, leader: &str) -> Value {
    let (host, port) = split_host_port(leader);
    let ip = host
        .parse::<std::net::Ipv4Addr>()
        .map_or(0, |ip| u32::from_le_bytes(ip.octets()));
    json!({
        "id": master_id,
        "ip": ip,
        "port": port,
        "hostname": host,
        "version": env!("CARGO_PKG_VERSION"),
        "address": address(leader),
    })
}

/// brim Resource → Mesos Resource JSON; `None` for a revocable resource the framework did not
/// opt into.
pub(crate) fn resource_json(r: &v1::Resource, ctx: &EventContext) -> Option<Value> {
    if r.revocable && !ctx.revocable {
        return None;
    }
    let mut m = Map::new();
    m.insert("name".into(), json!(r.name));
    match r.value.as_ref()? {
        v1::resource::Value::Scalar(s) => {
            m.insert("type".into(), json!("SCALAR"));
            m.insert("scalar".into(), json!({ "value": s }));
        }
        v1::resource::Value::Ranges(rs) => {
            m.insert("type".into(), json!("RANGES"));
            let range: Vec<Value> = rs
                .range
                .iter()
                .map(|x| json!({"begin": x.begin, "end": x.end}))
                .collect();
            m.insert("ranges".into(), json!({ "range": range }));
        }
        v1::resource::Value::Set(s) => {
            m.insert("type".into(), json!("SET"));
            m.insert("set".into(), json!({ "item": s.item }));
        }
    }
    if r.reservation_role.is_empty() {
        m.insert("role".into(), json!("*"));
    } else {
        // Both formats: `reservations` (RESERVATION_REFINEMENT frameworks, Mesos >= 1.4)
        // and the older `role` + `reservation` that pymesos-era frameworks read.
        let mut info = Map::new();
        info.insert("type".into(), json!("DYNAMIC"));
        info.insert("role".into(), json!(r.reservation_role));
        if !r.reservation_principal.is_empty() {
            info.insert("principal".into(), json!(r.reservation_principal));
        }
        m.insert("reservations".into(), json!([Value::Object(info)]));
        m.insert("role".into(), json!(r.reservation_role));
        let reservation = if r.reservation_principal.is_empty() {
            json!({})
        } else {
            json!({ "principal": r.reservation_principal })
        };
        m.insert("reservation".into(), reservation);
    }
    if let Some(v) = &r.volume {
        m.insert(
            "disk".into(),
            json!({
                "persistence": {"id": v.persistence_id},
                "volume": {"container_path": v.container_path, "mode": "RW"},
            }),
        );
    }
    m.insert("allocation_info".into(), json!({ "role": ctx.role }));
    if r.revocable {
        m.insert("revocable".into(), json!({}));
    }
    Some(Value::Object(m))
}

/// brim attribute → Mesos Attribute: numbers become SCALAR, everything else TEXT (the agent
/// flag parser of Mesos does the same).
pub(crate) fn attribute_json(a: &v1::Attribute) -> Value {
    match a.value.parse::<f64>() {
        Ok(v) if v.is_finite() => {
            json!({"name": a.name, "type": "SCALAR", "scalar": {"value": v}})
        }
        _ => json!({"name": a.name, "type": "TEXT", "text": {"value": a.value}}),
    }
}

/// brim Offer → Mesos Offer JSON.
pub(crate) fn offer_json(o: &v1::Offer, ctx: &EventContext) -> Value {
    let mut m = Map::new();
    m.insert("id".into(), id(&o.id));
    m.insert("framework_id".into(), id(&o.framework_id));
    m.insert("agent_id".into(), id(&o.agent_id));
    m.insert("hostname".into(), json!(o.hostname));
    if !o.agent_http_address.is_empty() {
        m.insert(
            "url".into(),
            json!({
                "scheme": "http",
                "address": address(&o.agent_http_address),
                "path": "/slave(1)",
            }),
        );
    }
    let resources: Vec<Value> = o
        .resources
        .iter()
        .filter_map(|r| resource_json(r, ctx))
        .collect();
    m.insert("resources".into(), Value::Array(resources));
    let attributes: Vec<Value> = o.attributes.iter().map(attribute_json).collect();
    m.insert("attributes".into(), Value::Array(attributes));
    m.insert("executor_ids".into(), json!([]));
    m.insert("allocation_info".into(), json!({ "role": ctx.role }));
    if !o.region.is_empty() || !o.zone.is_empty() {
        m.insert(
            "domain".into(),
            json!({"fault_domain": {"region": {"name": o.region}, "zone": {"name": o.zone}}}),
        );
    }
    Value::Object(m)
}

/// brim TaskStatus → Mesos TaskStatus JSON (uuid in base64, only when an ack is expected).
pub(crate) fn status_json(s: &v1::TaskStatus) -> Value {
    let mut m = Map::new();
    m.insert("task_id".into(), id(&s.task_id));
    let state = TaskState::try_from(s.state).unwrap_or(TaskState::TaskUnknown);
    let state = if state == TaskState::Unspecified {
        TaskState::TaskUnknown
    } else {
        state
    };
    m.insert("state".into(), json!(state.as_str_name()));
    let message = match (s.message.is_empty(), s.exit_code) {
        (true, Some(code)) => format!("Command exited with status {code}"),
        _ => s.message.clone(),
    };
    if !message.is_empty() {
        m.insert("message".into(), json!(message));
    }
    let source =
        TaskStatusSource::try_from(s.source).unwrap_or(TaskStatusSource::SourceUnspecified);
    if source != TaskStatusSource::SourceUnspecified {
        m.insert("source".into(), json!(source.as_str_name()));
    }
    if !s.executor_id.is_empty() {
        m.insert("executor_id".into(), id(&s.executor_id));
    } else if source == TaskStatusSource::SourceExecutor {
        // The command executor's id is the task id (as in Mesos).
        m.insert("executor_id".into(), id(&s.task_id));
    }
    let reason =
        TaskStatusReason::try_from(s.reason).unwrap_or(TaskStatusReason::ReasonUnspecified);
    if reason != TaskStatusReason::ReasonUnspecified {
        m.insert("reason".into(), json!(reason.as_str_name()));
    }
    if !s.agent_id.is_empty() {
        m.insert("agent_id".into(), id(&s.agent_id));
    }
    if !s.container_id.is_empty() {
        // The parent to name in the agent API's LAUNCH_NESTED_CONTAINER.
        m.insert(
            "container_status".into(),
            json!({"container_id": id(&s.container_id)}),
        );
    }
    m.insert("timestamp".into(), json!(s.timestamp));
    if !s.uuid.is_empty() {
        m.insert("uuid".into(), json!(encode_uuid(&s.uuid)));
    }
    Value::Object(m)
}

/// brim Event → Mesos Event JSON; `None` for an empty event.
pub(crate) fn event_json(e: &v1::Event, ctx: &EventContext) -> Option<Value> {
    Some(match e.event.as_ref()? {
        event::Event::Subscribed(s) => json!({
            "type": "SUBSCRIBED",
            "subscribed": {
                "framework_id": id(&s.framework_id),
                "heartbeat_interval_seconds": s.heartbeat_interval_seconds,
                "master_info": master_info(&s.master_id, &ctx.leader),
            },
        }),
        event::Event::Offers(o) => {
            let offers: Vec<Value> = o.offers.iter().map(|o| offer_json(o, ctx)).collect();
            json!({"type": "OFFERS", "offers": {"offers": offers}})
        }
        event::Event::Rescind(r) => json!({
            "type": "RESCIND",
            "rescind": {"offer_id": id(&r.offer_id)},
        }),
        event::Event::Update(u) => {
            let status = u.status.as_ref().map(status_json)?;
            json!({"type": "UPDATE", "update": {"status": status}})
        }
        event::Event::Failure(f) => json!({
            "type": "FAILURE",
            "failure": {"agent_id": id(&f.agent_id)},
        }),
        event::Event::Error(e) => json!({
            "type": "ERROR",
            "error": {"message": e.message},
        }),
        event::Event::Heartbeat(_) => json!({"type": "HEARTBEAT"}),
        event::Event::Message(m) => json!({
            "type": "MESSAGE",
            "message": {
                "agent_id": id(&m.agent_id),
                "executor_id": id(&m.executor_id),
                "data": encode_uuid(&m.data),
            },
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ctx(revocable: bool) -> EventContext {
        EventContext {
            revocable,
            role: "*".into(),
            leader: "127.0.0.1:5050".into(),
        }
    }

    fn decode_call(text: &str) -> Result<Call, String> {
        serde_json::from_str::<Call>(text).map_err(|e| e.to_string())
    }

    #[test]
    fn pymesos_launch_decodes_to_a_shell_command_task() {
        let call = decode_call(
            r#"{"type":"ACCEPT","framework_id":{"value":"F1"},
                "accept":{"offer_ids":[{"value":"O1"}],
                "operations":[{"type":"LAUNCH","launch":{"task_infos":[{
                  "name":"t","task_id":{"value":"t1"},"agent_id":{"value":"A1"},
                  "command":{"value":"echo hi","environment":{"variables":[{"name":"X","value":"1"}]}},
                  "resources":[{"name":"cpus","type":"SCALAR","scalar":{"value":0.1},"role":"*"},
                               {"name":"ports","type":"RANGES","ranges":{"range":[{"begin":31000,"end":31001}]}}],
                  "kill_policy":{"grace_period":{"nanoseconds":2000000000}}}]}}],
                "filters":{"refuse_seconds":5.0}}}"#,
        )
        .expect("decodes");
        let accept = call.accept.expect("accept");
        let task = task_info(
            &accept.operations[0]
                .launch
                .as_ref()
                .expect("launch")
                .task_infos[0],
        )
        .expect("converts");
        let cmd = task.command.expect("command");
        assert!(cmd.shell, "Mesos CommandInfo.shell defaults to true");
        assert_eq!(cmd.value, "echo hi");
        assert_eq!(cmd.environment[0].name, "X");
        assert_eq!(task.agent_id, "A1");
        assert_eq!(task.kill_grace_period_seconds, 2.0);
        assert_eq!(task.resources.len(), 2);
        assert_eq!(
            filters(accept.filters.as_ref()).and_then(|f| f.refuse_seconds),
            Some(5.0)
        );
    }

    #[test]
    fn launch_group_decodes_as_a_unit() {
        let g: LaunchGroup = serde_json::from_str(
            r#"{"executor":{"executor_id":{"value":"pod"},"type":"DEFAULT","resources":[]},
                "task_group":{"tasks":[
                  {"name":"a","task_id":{"value":"a"},"command":{"value":"sleep 9"}},
                  {"name":"b","task_id":{"value":"b"},"command":{"value":"sleep 9"}}]}}"#,
        )
        .expect("shape ok");
        let lg = launch_group(&g).expect("valid");
        let e = lg.executor.expect("executor");
        assert_eq!(e.executor_id, "pod");
        assert_eq!(e.r#type, v1::executor_info::Type::Default as i32);
        assert!(e.command.is_none());
        let tasks = lg.task_group.expect("group").tasks;
        assert_eq!(tasks.len(), 2);
        assert!(tasks.iter().all(|t| t.command.is_some()));
        for (bad, why) in [
            (
                r#"{"executor":{"executor_id":{"value":"p"}},"task_group":{"tasks":[{"name":"a","task_id":{"value":"a"},"command":{"value":"x"}}]}}"#,
                "must be 'DEFAULT' or 'CUSTOM'",
            ),
            (
                r#"{"executor":{"executor_id":{"value":"p"},"type":"DEFAULT","command":{"value":"x"}},"task_group":{"tasks":[{"name":"a","task_id":{"value":"a"},"command":{"value":"x"}}]}}"#,
                "must not be set for 'DEFAULT'",
            ),
            (
                r#"{"executor":{"executor_id":{"value":"p"},"type":"DEFAULT"},"task_group":{"tasks":[]}}"#,
                "Task group is empty",
            ),
            (
                r#"{"executor":{"executor_id":{"value":"p"},"type":"DEFAULT"},"task_group":{"tasks":[{"name":"a","task_id":{"value":"a"}}]}}"#,
                "task 'a': task has neither",
            ),
        ] {
            let g: LaunchGroup = serde_json::from_str(bad).expect("shape ok");
            let e = launch_group(&g).expect_err(why).to_string();
            assert!(e.contains(why), "{why}: {e}");
        }
        let call = decode_call(
            r#"{"type":"ACCEPT","accept":{"offer_ids":[{"value":"o"}],"operations":[{"type":"LAUNCH_GROUP","launch_group":{"executor":{"executor_id":{"value":"pod"},"type":"DEFAULT"},"task_group":{"tasks":[]}}}]}}"#,
        )
        .expect("an ACCEPT with LAUNCH_GROUP decodes");
        let ops = &call.accept.expect("accept").operations;
        assert!(ops[0].launch_group.is_some());
        let status = status_json(&v1::TaskStatus {
            task_id: "a".into(),
            state: TaskState::TaskRunning as i32,
            executor_id: "pod".into(),
            ..Default::default()
        });
        assert_eq!(status["executor_id"]["value"], "pod");
        assert!(status.get("container_status").is_none());
    }

    #[test]
    fn statuses_name_the_container_for_nested_launches() {
        let status = status_json(&v1::TaskStatus {
            task_id: "a".into(),
            state: TaskState::TaskRunning as i32,
            container_id: "c-1".into(),
            ..Default::default()
        });
        assert_eq!(status["container_status"]["container_id"]["value"], "c-1");
    }

    #[test]
    fn custom_executor_tasks_carry_the_executor() {
        let t: TaskInfo = serde_json::from_str(
            r#"{"name":"t","task_id":{"value":"t"},"executor":{"executor_id":{"value":"e1"},"name":"ex","command":{"value":"run-it"}}}"#,
        )
        .expect("shape ok");
        let task = task_info(&t).expect("valid");
        assert!(task.command.is_none());
        let e = task.executor.expect("executor");
        assert_eq!((e.executor_id.as_str(), e.name.as_str()), ("e1", "ex"));
        assert_eq!(e.command.expect("command").value, "run-it");
    }

    #[test]
    fn reservations_round_trip_in_both_formats() {
        let refined: Resource = serde_json::from_str(
            r#"{"name":"cpus","type":"SCALAR","scalar":{"value":8},"reservations":[{"type":"DYNAMIC","role":"ads","principal":"ops"}]}"#,
        )
        .expect("shape ok");
        let r = resource(&refined).expect("valid");
        assert_eq!(
            (
                r.reservation_role.as_str(),
                r.reservation_principal.as_str()
            ),
            ("ads", "ops")
        );
        let legacy: Resource = serde_json::from_str(
            r#"{"name":"mem","type":"SCALAR","scalar":{"value":4096},"role":"ads","reservation":{"principal":"ops"}}"#,
        )
        .expect("shape ok");
        let r = resource(&legacy).expect("valid");
        assert_eq!(
            (
                r.reservation_role.as_str(),
                r.reservation_principal.as_str()
            ),
            ("ads", "ops")
        );
        let plain: Resource = serde_json::from_str(
            r#"{"name":"mem","type":"SCALAR","scalar":{"value":1},"role":"*"}"#,
        )
        .expect("shape ok");
        assert!(resource(&plain).expect("valid").reservation_role.is_empty());
        let out = resource_json(&r, &ctx(false)).expect("shown");
        assert_eq!(out["reservations"][0]["type"], "DYNAMIC");
        assert_eq!(out["reservations"][0]["role"], "ads");
        assert_eq!(out["reservations"][0]["principal"], "ops");
        assert_eq!(out["role"], "ads");
        assert_eq!(out["reservation"]["principal"], "ops");
    }

    #[test]
    fn containers_map_images_and_volumes() {
        let t: TaskInfo = serde_json::from_value(json!({
            "name": "t", "task_id": {"value": "t"}, "command": {"value": "x"},
            "container": {"type": "MESOS",
                "mesos": {"image": {"type": "DOCKER", "docker": {"name": "/srv/busybox-oci"}}},
                "volumes": [
                    {"container_path": "/data", "mode": "RO",
                     "source": {"type": "HOST_PATH", "host_path": {"path": "/srv/data"}}},
                    {"container_path": "/legacy", "mode": "RW", "host_path": "/srv/l"},
                    {"container_path": "view", "mode": "RW",
                     "source": {"type": "SANDBOX_PATH",
                                "sandbox_path": {"type": "SELF", "path": "out"}}}]}
        }))
        .expect("shape ok");
        let c = task_info(&t).expect("valid").container.expect("container");
        assert_eq!(c.r#type, v1::container_info::Type::Oci as i32);
        assert_eq!(c.image.expect("image").uri, "/srv/busybox-oci");
        use v1::container_volume::{Mode, Source};
        let got: Vec<_> = c
            .volumes
            .iter()
            .map(|v| (v.container_path.as_str(), v.mode, v.source.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "/data",
                    Mode::Ro as i32,
                    Some(Source::HostPath("/srv/data".into()))
                ),
                (
                    "/legacy",
                    Mode::Rw as i32,
                    Some(Source::HostPath("/srv/l".into()))
                ),
                (
                    "view",
                    Mode::Rw as i32,
                    Some(Source::SandboxPath("out".into()))
                ),
            ]
        );
        // An executor's container goes to the executor; an empty one is no container.
        let t: TaskInfo = serde_json::from_value(json!({
            "name": "t", "task_id": {"value": "t"},
            "container": {"type": "MESOS"},
            "executor": {"executor_id": {"value": "e"}, "command": {"value": "./ex"},
                "container": {"type": "MESOS", "mesos": {"image": {"type": "DOCKER",
                    "docker": {"name": "http://h/img.tar"}}}}}
        }))
        .expect("shape ok");
        let b = task_info(&t).expect("valid");
        assert!(b.container.is_none());
        let e = b.executor.expect("executor").container.expect("container");
        assert_eq!(e.image.expect("image").uri, "http://h/img.tar");
    }

    #[test]
    fn unsupported_task_features_are_named() {
        for (json, needle) in [
            (
                r#"{"name":"t","task_id":{"value":"t"},"executor":{"executor_id":{"value":"e"}}}"#,
                "executor has no 'command'",
            ),
            (
                r#"{"name":"t","task_id":{"value":"t"},"command":{"value":"x"},"executor":{"executor_id":{"value":"e"},"command":{"value":"x"}}}"#,
                "not both",
            ),
            (
                r#"{"name":"t","task_id":{"value":"t"},"command":{"value":"x","uris":[{"value":"http://x"}]}}"#,
                "URIs",
            ),
            (
                r#"{"name":"t","task_id":{"value":"t"},"container":{"type":"DOCKER","docker":{"image":"x"}},"command":{"value":"x"}}"#,
                "container type DOCKER",
            ),
            (
                r#"{"name":"t","task_id":{"value":"t"},"container":{"type":"MESOS","mesos":{"image":{"type":"DOCKER","docker":{"name":"busybox:latest"}}}},"command":{"value":"x"}}"#,
                "pulls from no registry",
            ),
            (
                r#"{"name":"t","task_id":{"value":"t"},"container":{"volumes":[{"container_path":"x","mode":"RW","source":{"type":"SANDBOX_PATH","sandbox_path":{"type":"PARENT","path":"p"}}}]},"command":{"value":"x"}}"#,
                "PARENT",
            ),
            (
                r#"{"name":"t","task_id":{"value":"t"},"container":{"volumes":[{"container_path":"x","mode":"RX","host_path":"/h"}]},"command":{"value":"x"}}"#,
                "container.volumes[0].mode",
            ),
            (
                r#"{"name":"t","task_id":{"value":"t"},"command":{"value":"x"},"resources":[{"name":"cpus","type":"SCALAR","scalar":{"value":1},"reservations":[{"type":"DYNAMIC","role":"r"},{"type":"DYNAMIC","role":"r/x"}]}]}"#,
                "refined reservations",
            ),
            (
                r#"{"name":"t","task_id":{"value":"t"},"command":{"value":"x"},"resources":[{"name":"cpus","type":"SCALAR","scalar":{"value":1},"reservations":[{"type":"STATIC","role":"r"}]}]}"#,
                "STATIC",
            ),
        ] {
            let t: TaskInfo = serde_json::from_str(json).expect("shape ok");
            let err = task_info(&t).expect_err("unsupported").to_string();
            assert!(err.contains(needle), "{err} should mention {needle}");
        }
    }

    #[test]
    fn revocable_resources_only_for_capable_frameworks() {
        let r = v1::Resource {
            name: "cpus".into(),
            value: Some(v1::resource::Value::Scalar(1.0)),
            revocable: true,
            ..Default::default()
        };
        assert!(resource_json(&r, &ctx(false)).is_none());
        let j = resource_json(&r, &ctx(true)).expect("shown");
        assert_eq!(j["revocable"], json!({}));
        let plain = v1::Resource {
            revocable: false,
            ..r
        };
        let j = resource_json(&plain, &ctx(true)).expect("shown");
        assert!(j.get("revocable").is_none());
        assert_eq!(j["scalar"]["value"], json!(1.0));
        assert_eq!(j["type"], "SCALAR");
    }

    #[test]
    fn status_has_mesos_names_and_base64_uuid() {
        let s = v1::TaskStatus {
            task_id: "t1".into(),
            state: TaskState::TaskRunning as i32,
            source: TaskStatusSource::SourceExecutor as i32,
            reason: TaskStatusReason::ReasonUnspecified as i32,
            agent_id: "A1".into(),
            uuid: vec![0xab; 16],
            timestamp: 1.5,
            ..Default::default()
        };
        let j = status_json(&s);
        assert_eq!(j["state"], "TASK_RUNNING");
        assert_eq!(j["source"], "SOURCE_EXECUTOR");
        assert!(j.get("reason").is_none());
        assert_eq!(j["agent_id"]["value"], "A1");
        let uuid = j["uuid"].as_str().expect("uuid");
        assert_eq!(decode_uuid(uuid).expect("roundtrip"), vec![0xab; 16]);
    }

    #[test]
    fn master_info_ip_is_mesos_integer() {
        let m = master_info("id", "127.0.0.1:5050");
        assert_eq!(m["ip"], json!(16_777_343u32));
        assert_eq!(m["port"], json!(5050));
        assert_eq!(m["address"]["ip"], "127.0.0.1");
    }

    #[test]
    fn roles_and_capabilities() {
        let fi: FrameworkInfo = serde_json::from_str(
            r#"{"user":"u","name":"n","roles":["web"],"capabilities":[{"type":"MULTI_ROLE"},{"type":"REVOCABLE_RESOURCES"}]}"#,
        )
        .expect("shape");
        let b = framework_info(&fi).expect("converts");
        assert_eq!(b.role, "web");
        assert!(b.capabilities.contains(&"REVOCABLE_RESOURCES".to_string()));
        let fi: FrameworkInfo =
            serde_json::from_str(r#"{"user":"u","name":"n","roles":["a","b"]}"#).expect("shape");
        assert!(framework_info(&fi).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_the_call_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(call) = serde_json::from_slice::<Call>(&bytes) {
                if let Some(a) = &call.accept {
                    for op in &a.operations {
                        for t in op.launch.iter().flat_map(|l| &l.task_infos) {
                            let _ = task_info(t);
                        }
                    }
                }
                if let Some(s) = &call.subscribe {
                    let _ = framework_info(&s.framework_info);
                }
            }
        }

        #[test]
        fn arbitrary_json_tasks_never_panic(name in ".{0,20}", kind in "SCALAR|RANGES|SET|[A-Z]{0,6}",
                                            v in any::<f64>(), b in any::<u64>(), e in any::<u64>(),
                                            uuid in ".{0,40}") {
            let task = json!({"name": name, "task_id": {"value": name},
                "command": {"value": name, "shell": false},
                "resources": [{"name": name, "type": kind, "scalar": {"value": v},
                               "ranges": {"range": [{"begin": b, "end": e}]}, "set": {"item": [name]}}]});
            if let Ok(t) = serde_json::from_value::<TaskInfo>(task) {
                let _ = task_info(&t);
            }
            let _ = decode_uuid(&uuid);
        }
    }
}
