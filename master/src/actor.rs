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
    Message(v1::MessageRequest),
}

impl Call {
    /// The framework the call is made for.
    pub(crate) fn framework_id(&self) -> &str {
        match self {
            Call::Accept(r) => &r.framework_id,
            Call::Decline(r) => &r.framework_id,
            Call::Kill(r) => &r.framework_id,
            Call::Acknowledge(r) => &r.framework_id,
            Call::Reconcile(r) => &r.framework_id,
            Call::Message(r) => &r.framework_id,
            Call::Revive(id) | Call::Suppress(id) | Call::Teardown(id) => id,
        }
    }
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
        /// The authenticated principal, if any.
        caller: Option<String>,
        tx: FrameworkTx,
        reply: oneshot::Sender<Result<(String, u64), Status>>,
    },
    FrameworkDisconnected {
        framework_id: String,
        conn: u64,
    },
    Call {
        call: Call,
        /// The authenticated principal; `None` for Mesos HTTP calls (bound to their
        /// subscription by the stream id) and anonymous callers.
        caller: Option<String>,
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
    SetWeight {
        role: String,
        weight: f64,
        reply: oneshot::Sender<Result<(), Status>>,
    },
    SetQuota {
        role: String,
        guarantee: brim_proto::Resources,
        limit: Option<brim_proto::Resources>,
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
        self.call_as(None, call).await
    }

    /// A call made by `caller` (checked against the framework's principal).
    pub(crate) async fn call_as(&self, caller: Option<String>, call: Call) -> Result<(), Status> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Call {
            call,
            caller,
            reply,
        })
        .await?;
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
    /// Authorization of subscriptions and calls.
    pub(crate) guard: std::sync::Arc<crate::auth::Guard>,
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
        Command::Subscribe {
            mut info,
            caller,
            tx,
            reply,
        } => {
            let existing = master.framework_info(&info.id);
            let r = config
                .guard
                .check_subscribe(caller.as_deref(), &mut info, existing)
                .and_then(|()| master.subscribe(info, tx, now, wall));
            let _ = reply.send(r);
        }
        Command::FrameworkDisconnected { framework_id, conn } => {
            master.framework_disconnected(&framework_id, conn, now)
        }
        Command::Call {
            call,
            caller,
            reply,
        } => {
            if let Err(e) = config.guard.check_call(caller.as_deref(), master, &call) {
                let _ = reply.send(Err(e));
                return;
            }
            let r = match call {
                Call::Accept(req) => master.accept(req, now, wall),
                Call::Decline(req) => master.decline(req, now),
                Call::Kill(req) => master.kill(req),
                Call::Acknowledge(req) => master.acknowledge(req),
                Call::Reconcile(req) => master.reconcile(req, wall),
                Call::Revive(id) => master.revive(&id),
                Call::Suppress(id) => master.suppress(&id),
                Call::Teardown(id) => master.teardown(&id, wall),
                Call::Message(req) => master.message(req),
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
        Command::SetWeight {
            role,
            weight,
            reply,
        } => {
            let _ = reply.send(master.set_weight(&role, weight));
        }
        Command::SetQuota {
            role,
            guarantee,
            limit,
            reply,
        } => {
            let _ = reply.send(master.set_quota(&role, guarantee, limit));
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
