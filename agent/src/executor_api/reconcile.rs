//! What the agent does with an executor's SUBSCRIBE that carries `unacknowledged_tasks` and
//! `unacknowledged_updates` (an executor reconnecting, typically after an agent restart) —
//! Mesos's `Slave::subscribe` for a known executor, as a plain decision over data:
//!
//! - an update whose uuid the agent already queues is not taken again (the framework's
//!   acknowledgement reaches the executor as usual);
//! - an update for a task the agent no longer knows (acknowledged and forgotten), or
//!   repeating the state the agent already recorded (it was acknowledged, but the
//!   ACKNOWLEDGED event was lost with the old agent), is acknowledged to the executor at once;
//! - any other update is taken, as if sent with UPDATE;
//! - a task the agent still has as STAGING that the executor neither reports among its
//!   unacknowledged tasks nor updates, and that is not about to be sent to it, was never
//!   received by the executor (the agent went down before the LAUNCH reached it): it is lost;
//! - a task the framework asked to kill that has not ended gets its KILL again.

use brim_proto::v1::TaskState;

/// One task the agent gave this executor, as the agent knows it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct KnownTask {
    pub id: String,
    pub state: TaskState,
    /// uuids of the updates the agent still queues for the framework.
    pub queued: Vec<Vec<u8>>,
    /// Its LAUNCH is still queued for this executor (goes out with this subscription).
    pub launch_pending: bool,
    /// The framework asked to kill it (the KILL may have been lost with the old agent).
    pub kill_requested: bool,
}

/// One of the executor's unacknowledged updates.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ReportedUpdate {
    pub task_id: String,
    pub state: TaskState,
    pub uuid: Vec<u8>,
}

/// The decision for one SUBSCRIBE.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Reconciliation {
    /// Indexes (into the reported updates) to take as UPDATE calls, in order.
    pub take: Vec<usize>,
    /// Indexes of updates to acknowledge to the executor at once.
    pub acknowledge: Vec<usize>,
    /// Tasks the executor never received: they become TASK_LOST.
    pub lost: Vec<String>,
    /// Tasks to send KILL again: a kill was asked and they have not ended.
    pub kill: Vec<String>,
}

pub(crate) fn reconcile(
    known: &[KnownTask],
    unacknowledged_tasks: &[String],
    updates: &[ReportedUpdate],
) -> Reconciliation {
    let mut out = Reconciliation::default();
    for (i, u) in updates.iter().enumerate() {
        match known.iter().find(|k| k.id == u.task_id) {
            None => out.acknowledge.push(i),
            Some(k) if k.queued.contains(&u.uuid) => {}
            Some(k) if k.state == u.state => out.acknowledge.push(i),
            Some(_) => out.take.push(i),
        }
    }
    for k in known {
        let reported =
            unacknowledged_tasks.contains(&k.id) || updates.iter().any(|u| u.task_id == k.id);
        if k.state == TaskState::TaskStaging && !reported && !k.launch_pending {
            out.lost.push(k.id.clone());
        } else if k.kill_requested && !k.state.is_terminal() {
            out.kill.push(k.id.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str, state: TaskState, queued: &[u8]) -> KnownTask {
        KnownTask {
            id: id.into(),
            state,
            queued: queued.iter().map(|b| vec![*b; 16]).collect(),
            launch_pending: false,
            kill_requested: false,
        }
    }

    fn update(task_id: &str, state: TaskState, uuid: u8) -> ReportedUpdate {
        ReportedUpdate {
            task_id: task_id.into(),
            state,
            uuid: vec![uuid; 16],
        }
    }

    #[test]
    fn a_running_task_with_nothing_unacknowledged_keeps_running() {
        let known = [task("t", TaskState::TaskRunning, &[])];
        assert_eq!(reconcile(&known, &[], &[]), Reconciliation::default());
    }

    #[test]
    fn updates_are_taken_once_and_duplicates_acknowledged() {
        let known = [
            task("queued", TaskState::TaskRunning, &[1]),
            task("new", TaskState::TaskRunning, &[]),
            task("repeat", TaskState::TaskRunning, &[]),
        ];
        let updates = [
            update("queued", TaskState::TaskRunning, 1),
            update("new", TaskState::TaskFinished, 2),
            update("repeat", TaskState::TaskRunning, 3),
            update("forgotten", TaskState::TaskFinished, 4),
        ];
        let r = reconcile(&known, &[], &updates);
        assert_eq!(r.take, vec![1], "only the update the agent does not have");
        assert_eq!(r.acknowledge, vec![2, 3], "already recorded or forgotten");
        assert!(r.lost.is_empty());
    }

    #[test]
    fn staging_tasks_the_executor_never_received_are_lost() {
        let mut pending = task("pending", TaskState::TaskStaging, &[]);
        pending.launch_pending = true;
        let known = [
            task("never", TaskState::TaskStaging, &[]),
            task("unacked", TaskState::TaskStaging, &[]),
            task("updated", TaskState::TaskStaging, &[]),
            task("running", TaskState::TaskRunning, &[]),
            pending,
        ];
        let updates = [update("updated", TaskState::TaskRunning, 9)];
        let r = reconcile(&known, &["unacked".into()], &updates);
        assert_eq!(r.lost, vec!["never".to_string()]);
        assert_eq!(r.take, vec![0]);
        assert!(r.kill.is_empty());
    }

    #[test]
    fn kills_asked_before_the_restart_are_sent_again_until_the_task_ends() {
        let mut killing = task("killing", TaskState::TaskRunning, &[]);
        killing.kill_requested = true;
        let mut killed = task("killed", TaskState::TaskKilled, &[]);
        killed.kill_requested = true;
        let r = reconcile(&[killing, killed], &[], &[]);
        assert_eq!(r.kill, vec!["killing".to_string()]);
    }
}
