//! Task groups (pods) run by the agent's default executor (`ExecutorInfo.type = DEFAULT`,
//! `MasterMessage.RunTaskGroup`): the tasks of a group
//!
//! - start together: each task's launch stops right before its supervisor's go byte until
//!   every task of the group got there ([`StartGate`]); one failing to launch fails them all;
//! - share one network namespace (`none` mode: `lo` only; `host`: the agent's, trivially
//!   shared), held by a bind mount of its nsfs file at `<work_dir>/pods/<framework>/<executor>/netns`
//!   so it outlives the agent and every task; the supervisors `setns` into it;
//! - share a directory, `<work_dir>/pods/<framework>/<executor>/shared`, mounted at
//!   `$MESOS_SANDBOX/shared` in every task (a symlink without mount namespaces);
//! - each keep their own cgroup, sandbox, supervisor, status updates and health check;
//! - end together: one task ending in any state but `TASK_FINISHED` (failed, killed, lost)
//!   kills the others ([`after_task_end`], Mesos' default executor kill policy). The group's
//!   network namespace is released when its last task is terminal.
//!
//! Membership is not stored separately: every task of a group carries the group's
//! `ExecutorInfo` in its `TaskInfo`, which the agent checkpoints with the task, so the group
//! is rebuilt from the task table after an agent restart.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use brim_proto::v1::{executor_info, ExecutorInfo, TaskInfo, TaskState};
use tokio::sync::Notify;

/// A group: (framework id, executor id).
pub(crate) type PodKey = (String, String);

/// The default executor of a task, when it belongs to a task group.
pub(crate) fn default_executor(info: &TaskInfo) -> Option<&ExecutorInfo> {
    info.executor
        .as_ref()
        .filter(|e| e.r#type == executor_info::Type::Default as i32)
}

/// The custom executor of a task, when it has one.
pub(crate) fn custom_executor(info: &TaskInfo) -> Option<&ExecutorInfo> {
    info.executor
        .as_ref()
        .filter(|e| e.r#type != executor_info::Type::Default as i32)
}

/// Where a group's shared state lives on the agent.
pub(crate) fn pod_dir(work_dir: &Path, key: &PodKey) -> PathBuf {
    work_dir.join("pods").join(&key.0).join(&key.1)
}

/// The file holding a group's network namespace.
pub(crate) fn netns_path(work_dir: &Path, key: &PodKey) -> PathBuf {
    pod_dir(work_dir, key).join("netns")
}

/// The directory every task of a group sees at `$MESOS_SANDBOX/shared`.
pub(crate) fn shared_dir(work_dir: &Path, key: &PodKey) -> PathBuf {
    pod_dir(work_dir, key).join("shared")
}

/// Name of the shared directory inside each task's sandbox.
pub(crate) const SHARED_IN_SANDBOX: &str = "shared";

/// Creates a group's shared directory (world-writable and sticky, like `/tmp`: the tasks
/// may run as different users) and its mount point in a task's sandbox; without mount
/// namespaces (`bind` false) a symlink to it instead.
pub(crate) fn attach_shared(
    shared: &Path,
    link: &Path,
    bind: bool,
) -> Result<(), (PathBuf, std::io::Error)> {
    use std::os::unix::fs::PermissionsExt;
    let err = |p: &Path| {
        let p = p.to_path_buf();
        move |e: std::io::Error| (p, e)
    };
    if !shared.exists() {
        std::fs::create_dir_all(shared).map_err(err(shared))?;
        std::fs::set_permissions(shared, std::fs::Permissions::from_mode(0o1777))
            .map_err(err(shared))?;
    }
    if bind {
        std::fs::create_dir_all(link).map_err(err(link))
    } else {
        std::os::unix::fs::symlink(shared, link).map_err(err(link))
    }
}

/// One member of a group, as the kill policy sees it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Member {
    pub task_id: String,
    pub state: TaskState,
    /// A kill was already asked for.
    pub killing: bool,
}

/// What to do after a member of a group ended.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct AfterEnd {
    /// Members to kill, with the message their TASK_KILLED carries.
    pub kill: Vec<String>,
    pub message: String,
    /// Every member is terminal: release the group's network namespace.
    pub release: bool,
}

/// The default executor's kill policy: a member ending in any state but `TASK_FINISHED`
/// kills every other live member not being killed yet. `members` includes the ended one.
pub(crate) fn after_task_end(ended: &str, state: TaskState, members: &[Member]) -> AfterEnd {
    let release = members.iter().all(|m| m.state.is_terminal());
    if state == TaskState::TaskFinished {
        return AfterEnd {
            release,
            ..Default::default()
        };
    }
    let kill = members
        .iter()
        .filter(|m| m.task_id != ended && !m.state.is_terminal() && !m.killing)
        .map(|m| m.task_id.clone())
        .collect();
    AfterEnd {
        kill,
        message: format!(
            "killed with its task group: task {ended} ended {}",
            state.as_str_name()
        ),
        release,
    }
}

/// What the group's tasks agree on before any starts: checked on the whole group.
pub(crate) fn check_group(tasks: &[TaskInfo]) -> Result<crate::network::Mode, String> {
    let mut mode = None;
    let mut ids = std::collections::HashSet::new();
    for t in tasks {
        if !ids.insert(t.task_id.as_str()) {
            return Err(format!(
                "task id `{}` appears twice in the group: give every task its own id",
                t.task_id
            ));
        }
        let m = crate::network::Mode::of(t)?;
        if *mode.get_or_insert(m) != m {
            return Err(format!(
                "the tasks of a group share one network: give them all the same {} label",
                crate::network::LABEL
            ));
        }
        if crate::containerizer::is_oci(t) {
            return Err(
                "tasks of a group run in the native containerizer for now: drop task.container"
                    .into(),
            );
        }
    }
    let mode = mode.ok_or("the task group has no tasks")?;
    if mode == crate::network::Mode::Bridge {
        return Err(format!(
            "task groups support the `none` and `host` networks for now: set {} to none or host",
            crate::network::LABEL
        ));
    }
    Ok(mode)
}

#[derive(Debug, Default)]
struct GateState {
    arrived: usize,
    failed: Option<String>,
}

/// Holds every task of a group right before its start until all of them are ready, or
/// tells them all that one failed.
#[derive(Debug)]
pub(crate) struct StartGate {
    expected: usize,
    state: Mutex<GateState>,
    notify: Notify,
}

impl StartGate {
    pub(crate) fn new(expected: usize) -> Self {
        StartGate {
            expected,
            state: Mutex::new(GateState::default()),
            notify: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn check(&self) -> Option<Result<(), String>> {
        let st = self.lock();
        if let Some(why) = &st.failed {
            return Some(Err(why.clone()));
        }
        (st.arrived >= self.expected).then_some(Ok(()))
    }

    /// One task is ready to start; waits for the others. `Err`: a task of the group could
    /// not be launched (the reason).
    pub(crate) async fn arrive(&self) -> Result<(), String> {
        self.lock().arrived += 1;
        self.notify.notify_waiters();
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(r) = self.check() {
                return r;
            }
            notified.await;
        }
    }

    /// A task of the group cannot start: every waiting (and later) task is told so. True
    /// when the group failed to start (false: it had started already, the kill policy
    /// ends it).
    pub(crate) fn fail(&self, why: String) -> bool {
        let failed = {
            let mut st = self.lock();
            if st.failed.is_none() && st.arrived < self.expected {
                st.failed = Some(why);
            }
            st.failed.is_some()
        };
        self.notify.notify_waiters();
        failed
    }
}

/// A task group being launched: what each member's launch shares.
#[derive(Debug)]
pub(crate) struct PodLaunch {
    pub key: PodKey,
    pub gate: StartGate,
    pub mode: crate::network::Mode,
    /// The group's network namespace, made by the first member that needs it.
    pub netns: tokio::sync::OnceCell<Result<PathBuf, String>>,
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use brim_proto::v1::Label;

    use super::*;

    fn m(id: &str, state: TaskState) -> Member {
        Member {
            task_id: id.into(),
            state,
            killing: false,
        }
    }

    #[test]
    fn a_failed_task_kills_the_rest_of_its_group() {
        let members = [
            m("a", TaskState::TaskFailed),
            m("b", TaskState::TaskRunning),
            Member {
                killing: true,
                ..m("c", TaskState::TaskRunning)
            },
            m("d", TaskState::TaskFinished),
        ];
        let after = after_task_end("a", TaskState::TaskFailed, &members);
        assert_eq!(after.kill, vec!["b".to_string()]);
        assert!(
            after.message.contains("task a ended TASK_FAILED"),
            "{}",
            after.message
        );
        assert!(!after.release);
    }

    #[test]
    fn a_finished_task_leaves_its_group_running() {
        let members = [
            m("a", TaskState::TaskFinished),
            m("b", TaskState::TaskRunning),
        ];
        let after = after_task_end("a", TaskState::TaskFinished, &members);
        assert!(after.kill.is_empty());
        assert!(!after.release);
    }

    #[test]
    fn the_last_terminal_task_releases_the_group() {
        let members = [m("a", TaskState::TaskKilled), m("b", TaskState::TaskKilled)];
        let after = after_task_end("b", TaskState::TaskKilled, &members);
        assert!(after.kill.is_empty());
        assert!(after.release);
    }

    fn task(id: &str, network: &str) -> TaskInfo {
        TaskInfo {
            task_id: id.into(),
            labels: vec![Label {
                key: crate::network::LABEL.into(),
                value: network.into(),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn a_group_shares_one_network_mode() {
        assert_eq!(
            check_group(&[task("a", "none"), task("b", "none")]),
            Ok(crate::network::Mode::None)
        );
        let e = check_group(&[task("a", "none"), task("b", "host")]).expect_err("mixed");
        assert!(e.contains("same brim.network label"), "{e}");
        let e = check_group(&[task("a", "none"), task("a", "none")]).expect_err("dup");
        assert!(e.contains("appears twice"), "{e}");
        let e = check_group(&[task("a", "bridge")]).expect_err("bridge");
        assert!(e.contains("`none` and `host`"), "{e}");
        assert!(check_group(&[]).is_err());
    }

    #[test]
    fn executor_kinds() {
        let mut t = task("a", "host");
        assert!(default_executor(&t).is_none() && custom_executor(&t).is_none());
        t.executor = Some(ExecutorInfo {
            executor_id: "e".into(),
            r#type: executor_info::Type::Default as i32,
            ..Default::default()
        });
        assert!(default_executor(&t).is_some() && custom_executor(&t).is_none());
        t.executor = Some(ExecutorInfo {
            executor_id: "e".into(),
            ..Default::default()
        });
        assert!(default_executor(&t).is_none() && custom_executor(&t).is_some());
    }

    #[tokio::test]
    async fn the_gate_opens_when_all_arrived() {
        let gate = Arc::new(StartGate::new(3));
        let mut waiting = Vec::new();
        for _ in 0..2 {
            let g = Arc::clone(&gate);
            waiting.push(tokio::spawn(async move { g.arrive().await }));
        }
        tokio::task::yield_now().await;
        assert!(waiting.iter().all(|h| !h.is_finished()));
        assert_eq!(gate.arrive().await, Ok(()));
        for h in waiting {
            assert_eq!(h.await.expect("join"), Ok(()));
        }
    }

    #[tokio::test]
    async fn the_gate_fails_everyone_when_one_cannot_start() {
        let gate = Arc::new(StartGate::new(3));
        let g = Arc::clone(&gate);
        let first = tokio::spawn(async move { g.arrive().await });
        tokio::task::yield_now().await;
        assert!(gate.fail("task b could not start: no such file".into()));
        let e = first.await.expect("join").expect_err("failed");
        assert!(e.contains("task b"), "{e}");
        // A late arrival hears it too.
        assert!(gate.arrive().await.is_err());
    }
}
