//! The state actor: one tokio task owns [`Master`] and serves commands from the API handlers
//! in arrival order. It also runs the periodic tick and batches allocation: after a burst of
//! commands that may free resources it runs one allocation cycle, and a full cycle runs at
//! least every `allocation_interval`.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use brim_proto::v1::{self, agent_message, FrameworkInfo};
use tokio::sync::{mpsc, oneshot};
use tonic::Status;

use crate::state::{AgentTx, FrameworkTx, Master};

/// A framework call, already decoded.
pub(crate) enum Call {
    Accept(v1::AcceptRequest),
    Decline(v1::DeclineRequest),
    Kill(v1::KillRequest),
    Acknowledge(v1::AcknowledgeRequest),
    Reconcile(v1::ReconcileRequest),
    Revive(String),
    Suppress(String),
    Teardown(String),
}

pub(crate) enum Command {
    RegisterAgent {
        register: agent_message::Register,
        tx: AgentTx,
        reply: oneshot::Sender<Result<(String, u64), Status>>,
    },
    AgentMessage {
        agent_id: String,
        conn: u64,
        message: agent_message::Message,
    },
    AgentDisconnected {
        agent_id: String,
        conn: u64,
    },
    Subscribe {
        info: FrameworkInfo,
        tx: FrameworkTx,
        reply: oneshot::Sender<Result<(String, u64), Status>>,
    },
    FrameworkDisconnected {
        framework_id: String,
        conn: u64,
    },
    Call {
        call: Call,
        reply: oneshot::Sender<Result<(), Status>>,
    },
    State {
        reply: oneshot::Sender<serde_json::Value>,
    },
    Metrics {
        reply: oneshot::Sender<String>,
    },
    MarkAgentGone {
        agent_id: String,
        reply: oneshot::Sender<Result<(), Status>>,
    },
}

/// Handle API code uses to talk to the actor.
#[derive(Clone)]
pub(crate) struct MasterHandle {
    tx: mpsc::Sender<Command>,
}

impl MasterHandle {
    pub(crate) async fn send(&self, cmd: Command) -> Result<(), Status> {
        self.tx
            .send(cmd)
            .await
            .map_err(|_| Status::unavailable("master is shutting down"))
    }

    /// Fire-and-forget from a `Drop` (no await possible there).
    pub(crate) fn try_send(&self, cmd: Command) {
        if self.tx.try_send(cmd).is_err() {
            tracing::warn!("master command queue full or closed; dropping a disconnect notice");
        }
    }

    pub(crate) async fn call(&self, call: Call) -> Result<(), Status> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Call { call, reply }).await?;
        rx.await
            .map_err(|_| Status::internal("master dropped the call; retry"))?
    }
}

pub(crate) struct ActorConfig {
    pub(crate) allocation_interval: Duration,
    pub(crate) tick_interval: Duration,
    pub(crate) leader_address: String,
    /// Every master taking part (HA: the election's candidates; else just this one).
    pub(crate) masters: tokio::sync::watch::Receiver<Vec<String>>,
    /// When this master became the leader (seconds since the Unix epoch).
    pub(crate) elected_time: f64,
}

pub(crate) fn wall_clock() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Spawns the actor; it stops when every handle is dropped or `shutdown` fires.
pub(crate) fn spawn(
    mut master: Master,
    config: ActorConfig,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> (MasterHandle, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<Command>(4096);
    let epoch = Instant::now();
    let started = wall_clock();
    let join = tokio::spawn(async move {
        let mut tick = tokio::time::interval(config.tick_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut alloc = tokio::time::interval(config.allocation_interval);
        alloc.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                cmd = rx.recv() => {
                    let Some(cmd) = cmd else { break };
                    handle(&mut master, cmd, epoch.elapsed(), started, &config);
                    // Drain what is already queued, then allocate once for the whole batch.
                    while let Ok(cmd) = rx.try_recv() {
                        handle(&mut master, cmd, epoch.elapsed(), started, &config);
                    }
                }
                _ = tick.tick() => {
                    master.tick(epoch.elapsed(), wall_clock());
                }
                _ = alloc.tick() => {
                    // Filters expire with time: look at everything once per interval.
                    master.request_full_allocation();
                }
                _ = shutdown.changed() => break,
            }
            if master.is_fenced() {
                tracing::error!(
                    "registry write fenced: another master leads; stopping the state actor"
                );
                break;
            }
            let t0 = Instant::now();
            if master.allocate_pending(epoch.elapsed()) {
                master
                    .metrics
                    .allocation_cycle_seconds
                    .observe(t0.elapsed().as_secs_f64());
            }
        }
        tracing::info!("master state actor stopped");
    });
    (MasterHandle { tx }, join)
}

/// Applies one command. Allocation follows from what the command changed (see
/// `Master::allocate_pending`).
fn handle(master: &mut Master, cmd: Command, now: Duration, started: f64, config: &ActorConfig) {
    let wall = wall_clock();
    match cmd {
        Command::RegisterAgent {
            register,
            tx,
            reply,
        } => {
            let _ = reply.send(master.register_agent(register, tx, now, wall));
        }
        Command::AgentMessage {
            agent_id,
            conn,
            message,
        } => master.agent_message(&agent_id, conn, message, now, wall),
        Command::AgentDisconnected { agent_id, conn } => master.agent_disconnected(&agent_id, conn),
        Command::Subscribe { info, tx, reply } => {
            let _ = reply.send(master.subscribe(info, tx, now, wall));
        }
        Command::FrameworkDisconnected { framework_id, conn } => {
            master.framework_disconnected(&framework_id, conn, now)
        }
        Command::Call { call, reply } => {
            let r = match call {
                Call::Accept(req) => master.accept(req, now, wall),
                Call::Decline(req) => master.decline(req, now),
                Call::Kill(req) => master.kill(req),
                Call::Acknowledge(req) => master.acknowledge(req),
                Call::Reconcile(req) => master.reconcile(req, wall),
                Call::Revive(id) => master.revive(&id),
                Call::Suppress(id) => master.suppress(&id),
                Call::Teardown(id) => master.teardown(&id, wall),
            };
            if r.is_err() {
                master.record_call_error();
            }
            let _ = reply.send(r);
        }
        Command::State { reply } => {
            let mut state = master.state_json(started, &config.leader_address);
            state["masters"] = serde_json::json!(*config.masters.borrow());
            state["elected_time"] = serde_json::json!(config.elected_time);
            let _ = reply.send(state);
        }
        Command::MarkAgentGone { agent_id, reply } => {
            let _ = reply.send(master.mark_agent_gone(&agent_id, wall));
        }
        Command::Metrics { reply } => {
            master.metrics.elected_time.set(config.elected_time);
            master
                .metrics
                .masters
                .set(config.masters.borrow().len() as i64);
            let _ = reply.send(master.metrics_text(now));
        }
    }
}
