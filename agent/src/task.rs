//! Per-task state, pure: the state machine, the in-order status-update retry queue and the
//! bookkeeping the agent keeps for `/state`. No I/O and no clock reads (`now` is passed in).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use brim_proto::v1::{TaskInfo, TaskState, TaskStatus};
use brim_proto::Resources;

/// True when a task may move from `from` to `to`. Terminal states are final; a task moves
/// forward only (STAGING → STARTING → RUNNING → terminal, skipping allowed).
pub fn can_transition(from: TaskState, to: TaskState) -> bool {
    use TaskState::*;
    if from.is_terminal() || from == to {
        return false;
    }
    let rank = |s: TaskState| match s {
        TaskStaging => 1,
        TaskStarting => 2,
        TaskRunning => 3,
        TaskKilling => 4,
        s if s.is_terminal() => 5,
        _ => 0,
    };
    rank(to) > rank(from)
}

/// One status update waiting for the master's acknowledgement.
#[derive(Debug, Clone)]
struct Pending {
    status: TaskStatus,
    last_sent: Option<Instant>,
}

/// Status updates of one task, delivered in order: only the oldest unacknowledged update is
/// in flight — plus, when that one is TASK_STARTING, a TASK_RUNNING right behind it (on the
/// same ordered stream, so a launch's RUNNING does not wait for STARTING's round trip
/// through the framework). In-flight updates are resent, in order, every `resend` until
/// acknowledged; an ack for the RUNNING one acknowledges the STARTING one too.
#[derive(Debug, Clone, Default)]
pub struct UpdateQueue {
    pending: VecDeque<Pending>,
}

impl UpdateQueue {
    pub fn push(&mut self, status: TaskStatus) {
        self.pending.push_back(Pending {
            status,
            last_sent: None,
        });
    }

    /// How many updates are in flight: the oldest, and a RUNNING behind a STARTING.
    fn window(&self) -> usize {
        let state = |i: usize| self.pending.get(i).map(|p| p.status.state());
        match (state(0), state(1)) {
            (None, _) => 0,
            (Some(TaskState::TaskStarting), Some(TaskState::TaskRunning)) => 2,
            _ => 1,
        }
    }

    /// The updates to send now, oldest first: those in flight (see [`UpdateQueue`]) that
    /// were never sent (since the last [`UpdateQueue::resend_all`]) or were sent at least
    /// `resend` ago. Marks them sent.
    pub fn due(&mut self, now: Instant, resend: Duration) -> Vec<TaskStatus> {
        let window = self.window();
        self.pending
            .iter_mut()
            .take(window)
            .filter(|p| {
                p.last_sent
                    .is_none_or(|t| now.saturating_duration_since(t) >= resend)
            })
            .map(|p| {
                p.last_sent = Some(now);
                p.status.clone()
            })
            .collect()
    }

    /// Handles an acknowledgement; true when it matched an in-flight update, which is then
    /// dropped with every older one, so the next can go.
    pub fn ack(&mut self, uuid: &[u8]) -> bool {
        let window = self.window();
        let Some(i) = self
            .pending
            .iter()
            .take(window)
            .position(|p| p.status.uuid == uuid)
        else {
            return false;
        };
        self.pending.drain(..=i);
        true
    }

    /// Makes the in-flight updates due again at once (after a re-registration).
    pub fn resend_all(&mut self) {
        let window = self.window();
        for p in self.pending.iter_mut().take(window) {
            p.last_sent = None;
        }
    }

    /// State of the oldest update (the next one to go).
    pub fn front_state(&self) -> Option<TaskState> {
        self.pending.front().map(|p| p.status.state())
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// The queued updates, oldest first (for the checkpoint).
    pub fn statuses(&self) -> impl Iterator<Item = &TaskStatus> {
        self.pending.iter().map(|p| &p.status)
    }

    /// A queue holding `statuses` (restored from a checkpoint), none sent yet.
    pub fn from_statuses(statuses: impl IntoIterator<Item = TaskStatus>) -> Self {
        UpdateQueue {
            pending: statuses
                .into_iter()
                .map(|status| Pending {
                    status,
                    last_sent: None,
                })
                .collect(),
        }
    }
}

/// Everything the agent knows about one task.
#[derive(Debug)]
pub struct Task {
    pub info: TaskInfo,
    pub framework_id: String,
    /// Cgroup name of the task's container.
    pub container_id: String,
    pub resources: Resources,
    pub sandbox: PathBuf,
    /// Latest state (the newest update generated, acknowledged or not).
    pub state: TaskState,
    pub message: String,
    pub exit_code: Option<i32>,
    /// Pid of the task's supervisor while the task runs.
    pub pid: Option<i32>,
    /// The task's supervisor (checkpointed before the task starts).
    pub supervisor: Option<crate::checkpoint::SupervisorRef>,
    /// Version of this task's record; bumped on every change that is checkpointed.
    pub seq: u64,
    /// Newest `seq` known to be on disk: updates are held back until `durable_seq >= seq`.
    pub durable_seq: u64,
    /// Set once a kill was requested, with the grace period to use.
    pub kill_requested: Option<Duration>,
    /// Result of the latest health check that changed the task's health (None: unchecked).
    pub healthy: Option<bool>,
    pub updates: UpdateQueue,
    /// Seconds since the Unix epoch.
    pub started_time: f64,
    pub updated_time: f64,
}

impl Task {
    /// Still holds resources (not terminal).
    pub fn is_live(&self) -> bool {
        !self.state.is_terminal()
    }

    /// Done with: terminal and every update acknowledged.
    pub fn is_finished(&self) -> bool {
        self.state.is_terminal() && self.updates.is_empty()
    }
}

/// Bounded list of forgotten (terminal and acknowledged) tasks, newest last, for `/state`.
#[derive(Debug)]
pub struct Completed<T> {
    cap: usize,
    items: VecDeque<T>,
}

impl<T> Completed<T> {
    pub fn new(cap: usize) -> Self {
        Completed {
            cap,
            items: VecDeque::new(),
        }
    }

    pub fn push(&mut self, item: T) {
        if self.cap == 0 {
            return;
        }
        if self.items.len() == self.cap {
            self.items.pop_front();
        }
        self.items.push_back(item);
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &T> {
        self.items.iter()
    }
}

/// Ids used as directory names (framework and task ids): non-empty, at most 200 bytes,
/// letters, digits, `.`, `_`, `-`, `@`, `:` only, and not `.` or `..`.
pub fn check_id(kind: &str, id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err(format!("{kind} id is empty"));
    }
    if id.len() > 200 {
        return Err(format!("{kind} id is longer than 200 bytes"));
    }
    if id == "." || id == ".." {
        return Err(format!("{kind} id `{id}` is not allowed"));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@' | ':')))
    {
        return Err(format!(
            "{kind} id `{id}` contains `{c}`: use letters, digits, `.`, `_`, `-`, `@`, `:`"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use TaskState::*;

    fn status(state: TaskState, uuid: u8) -> TaskStatus {
        TaskStatus {
            task_id: "t".into(),
            state: state as i32,
            uuid: vec![uuid; 16],
            ..Default::default()
        }
    }

    #[test]
    fn transitions() {
        let check = |from, to, ok| assert_eq!(can_transition(from, to), ok, "{from:?} -> {to:?}");
        check(TaskStaging, TaskStarting, true);
        check(TaskStaging, TaskError, true);
        check(TaskStarting, TaskRunning, true);
        check(TaskStarting, TaskFailed, true);
        check(TaskRunning, TaskFinished, true);
        check(TaskRunning, TaskKilled, true);
        check(TaskRunning, TaskStarting, false);
        check(TaskRunning, TaskRunning, false);
        check(TaskFinished, TaskFailed, false);
        check(TaskKilled, TaskRunning, false);
    }

    fn uuids(v: &[TaskStatus]) -> Vec<u8> {
        v.iter().map(|s| s.uuid[0]).collect()
    }

    #[test]
    fn queue_sends_oldest_first_and_resends_until_acked() {
        let t0 = Instant::now();
        let resend = Duration::from_secs(3);
        let mut q = UpdateQueue::default();
        assert!(q.due(t0, resend).is_empty());
        q.push(status(TaskRunning, 1));
        q.push(status(TaskFinished, 2));

        assert_eq!(uuids(&q.due(t0, resend)), [1]);
        // In flight: not due again before `resend`, and the terminal one waits.
        assert!(q.due(t0 + Duration::from_secs(1), resend).is_empty());
        assert_eq!(uuids(&q.due(t0 + resend, resend)), [1]);

        // An ack for anything but the in-flight update is ignored.
        assert!(!q.ack(&[2; 16]));
        assert!(!q.ack(b""));
        assert!(q.ack(&[1; 16]));
        assert_eq!(uuids(&q.due(t0 + resend, resend)), [2]);
        assert_eq!(q.len(), 1);

        // Re-registration: due immediately.
        assert!(q.due(t0 + resend, resend).is_empty());
        q.resend_all();
        assert_eq!(uuids(&q.due(t0 + resend, resend)), [2]);
        assert!(q.ack(&[2; 16]));
        assert!(q.is_empty());
    }

    #[test]
    fn running_goes_right_behind_starting() {
        let t0 = Instant::now();
        let resend = Duration::from_secs(3);
        let mut q = UpdateQueue::default();
        q.push(status(TaskStarting, 1));
        assert_eq!(uuids(&q.due(t0, resend)), [1]);
        // RUNNING queued while STARTING is in flight: it goes at once, in order behind it;
        // the terminal update behind RUNNING still waits.
        q.push(status(TaskRunning, 2));
        q.push(status(TaskFinished, 3));
        assert_eq!(uuids(&q.due(t0, resend)), [2]);
        assert!(q.due(t0 + Duration::from_secs(1), resend).is_empty());
        // Unacknowledged: both resent, in order.
        assert_eq!(uuids(&q.due(t0 + resend, resend)), [1, 2]);
        // An ack of RUNNING covers STARTING; the terminal update is next.
        assert!(!q.ack(&[3; 16]));
        assert!(q.ack(&[2; 16]));
        assert_eq!(q.len(), 1);
        assert_eq!(uuids(&q.due(t0 + resend, resend)), [3]);

        // Acked one at a time, in order, works too.
        let mut q = UpdateQueue::default();
        q.push(status(TaskStarting, 1));
        q.push(status(TaskRunning, 2));
        assert_eq!(uuids(&q.due(t0, resend)), [1, 2]);
        assert!(q.ack(&[1; 16]));
        assert!(q.due(t0, resend).is_empty());
        assert!(q.ack(&[2; 16]));
        assert!(q.is_empty());
        // After a re-registration both go again.
        q.push(status(TaskStarting, 1));
        q.push(status(TaskRunning, 2));
        let _ = q.due(t0, resend);
        q.resend_all();
        assert_eq!(uuids(&q.due(t0, resend)), [1, 2]);
    }

    #[test]
    fn completed_is_bounded() {
        let mut c = Completed::new(2);
        for i in 0..5 {
            c.push(i);
        }
        assert_eq!(c.iter().copied().collect::<Vec<_>>(), vec![3, 4]);
        let mut none = Completed::new(0);
        none.push(1);
        assert_eq!(none.iter().count(), 0);
    }

    #[test]
    fn ids() {
        for ok in ["t1", "task.1_a-b", "fw@host:1", "x"] {
            assert!(check_id("task", ok).is_ok(), "{ok}");
        }
        for (bad, why) in [
            ("", "empty"),
            ("..", "not allowed"),
            (".", "not allowed"),
            ("a/b", "contains `/`"),
            ("a b", "contains ` `"),
            ("é", "contains `é`"),
        ] {
            let e = check_id("task", bad).expect_err(bad);
            assert!(e.contains(why), "{bad:?}: {e}");
        }
        assert!(check_id("task", &"a".repeat(201)).is_err());
    }
}
