//! The agent's side of `AgentService.Attach`: dial, register, then heartbeat, send status
//! updates (resending until acknowledged) and usage, and dispatch the master's commands.
//! When the stream breaks the agent reconnects with backoff; tasks keep running.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use brim_proto::v1::agent_message::{self, Heartbeat, StatusUpdate, Usage};
use brim_proto::v1::agent_service_client::AgentServiceClient;
use brim_proto::v1::master_message::Message as FromMaster;
use brim_proto::v1::{AgentMessage, MasterMessage};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use crate::agent::Agent;

/// How long the master has to answer `register`.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(15);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const MIN_BACKOFF: Duration = Duration::from_millis(250);

/// Why one session with the master ended.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LinkError {
    #[error("invalid master address `{0}`: use host:port")]
    Address(String),
    #[error("cannot connect to the master: {0}")]
    Connect(#[from] tonic::transport::Error),
    #[error("master refused the stream: {0}")]
    Status(#[from] tonic::Status),
    #[error("master closed the stream")]
    Closed,
    #[error("master did not answer `register` within {0:?}")]
    RegisterTimeout(Duration),
    #[error("master sent {0} before `registered`")]
    Unexpected(&'static str),
    #[error("master error: {0}")]
    Master(String),
    #[error("TLS: {0}")]
    Tls(String),
}

/// Writes the agent id atomically (temp file + rename).
pub(crate) fn persist_agent_id(work_dir: &Path, id: &str) -> std::io::Result<()> {
    let tmp = work_dir.join("agent_id.tmp");
    std::fs::write(&tmp, id)?;
    std::fs::rename(&tmp, work_dir.join("agent_id"))
}

/// Reads the persisted agent id, if any.
pub(crate) fn load_agent_id(work_dir: &Path) -> Option<String> {
    let id = std::fs::read_to_string(work_dir.join("agent_id")).ok()?;
    let id = id.trim();
    (!id.is_empty()).then(|| id.to_string())
}

/// Next reconnection delay: doubling from 250 ms up to `max`.
pub(crate) fn next_backoff(current: Duration, max: Duration) -> Duration {
    (current * 2).clamp(MIN_BACKOFF, max.max(MIN_BACKOFF))
}

/// The pause before reconnecting: the backoff, or the master's retry hint when it asked for
/// longer, plus up to 25 % jitter (`noise` in 0..1000) so that agents cut off together do
/// not come back in lockstep.
pub(crate) fn reconnect_wait(backoff: Duration, hint: Option<Duration>, noise: u32) -> Duration {
    let base = hint.map_or(backoff, |h| h.max(backoff));
    base + base.mul_f64(f64::from(noise % 1000) / 4000.0)
}

/// Pseudo-random 0..1000 for jitter (no randomness needed beyond spreading agents apart).
fn noise() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.subsec_nanos() % 1000)
}

/// Runs sessions with the master until `shutdown` turns true.
/// `--master` may list several masters (`a:5050,b:5050`): they are tried in turn, and a
/// standby's answer naming the leader (`brim-leader`) sends the next attempt there.
pub(crate) async fn run(agent: Arc<Agent>, mut shutdown: watch::Receiver<bool>) {
    let mut backoff = MIN_BACKOFF;
    let masters: Vec<String> = agent
        .config
        .master
        .split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .map(str::to_string)
        .collect();
    let mut next = 0usize;
    let mut leader: Option<String> = None;
    // The master's `retry-after` when it rate limited the last attempt.
    let mut hint: Option<Duration> = None;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let target = leader.take().unwrap_or_else(|| {
            let m = masters
                .get(next % masters.len().max(1))
                .cloned()
                .unwrap_or_else(|| agent.config.master.clone());
            next += 1;
            m
        });
        let mut registered = false;
        let result = tokio::select! {
            r = session(&agent, &target, &mut registered) => r,
            _ = shutdown.changed() => return,
        };
        agent.set_disconnected();
        match result {
            Ok(()) => return,
            Err(LinkError::Status(s)) if s.metadata().get(brim_proto::LEADER_HEADER).is_some() => {
                leader = s
                    .metadata()
                    .get(brim_proto::LEADER_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                tracing::info!(standby = %target, leader = ?leader, "master is a standby; following the leader");
                backoff = MIN_BACKOFF;
            }
            Err(e) => {
                if registered {
                    backoff = MIN_BACKOFF;
                }
                hint = match &e {
                    LinkError::Status(s) => brim_proto::retry_after(s),
                    _ => None,
                };
                tracing::warn!(error = %e, retry_in = ?reconnect_wait(backoff, hint, 0), master = %agent.config.master, "master link down");
            }
        }
        let wait = reconnect_wait(backoff, hint.take(), noise());
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
        // Back off only after a whole round over the masters: during a failover the next
        // one in the list is usually the new leader.
        if masters.len() <= 1 || next.is_multiple_of(masters.len()) {
            backoff = next_backoff(backoff, agent.config.max_reconnect_backoff);
        }
    }
}

fn msg(m: agent_message::Message) -> AgentMessage {
    AgentMessage { message: Some(m) }
}

/// One connection: register, then serve until the stream breaks. Only returns `Ok` never:
/// the caller stops it by dropping the future.
async fn session(
    agent: &Arc<Agent>,
    master: &str,
    registered_flag: &mut bool,
) -> Result<(), LinkError> {
    let tls = agent.config.tls.as_ref();
    let uri = crate::config::master_uri(master, tls.is_some());
    let mut endpoint = tonic::transport::Endpoint::from_shared(uri.clone())
        .map_err(|_| LinkError::Address(master.to_string()))?;
    if let Some(files) = tls {
        let client = brim_security::ClientTls {
            ca: files.ca.clone(),
            identity: Some((files.cert.clone(), files.key.clone())),
        };
        let config = client
            .tonic_config()
            .map_err(|e| LinkError::Tls(e.to_string()))?;
        endpoint = endpoint
            .tls_config(config)
            .map_err(|e| LinkError::Tls(e.to_string()))?;
    }
    let endpoint = endpoint
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_keepalive(Some(brim_security::TCP_KEEPALIVE))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(20));
    let channel = endpoint.connect().await?;
    let mut client = AgentServiceClient::new(channel)
        .max_decoding_message_size(brim_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(brim_proto::MAX_MESSAGE_BYTES);

    let (tx, rx) = mpsc::channel::<AgentMessage>(1024);
    let register = agent.register_message();
    tracing::info!(
        master = %master,
        agent_id = register.agent_info.as_ref().map_or("", |i| i.id.as_str()),
        tasks = register.tasks.len(),
        "registering with master"
    );
    tx.send(msg(agent_message::Message::Register(register)))
        .await
        .map_err(|_| LinkError::Closed)?;
    let mut inbound = client.attach(ReceiverStream::new(rx)).await?.into_inner();

    // First answer must be `registered`.
    let first = tokio::time::timeout(REGISTER_TIMEOUT, inbound.message())
        .await
        .map_err(|_| LinkError::RegisterTimeout(REGISTER_TIMEOUT))??
        .ok_or(LinkError::Closed)?;
    let reg = match first.message {
        Some(FromMaster::Registered(r)) => r,
        Some(FromMaster::Error(e)) => return Err(LinkError::Master(e.message)),
        Some(_) => return Err(LinkError::Unexpected("another message")),
        None => return Err(LinkError::Unexpected("an empty message")),
    };
    if agent.registered(&reg.agent_id, &reg.master_id) {
        if let Err(e) = persist_agent_id(&agent.config.work_dir, &reg.agent_id) {
            tracing::warn!(error = %e, "cannot persist the agent id; a restart will register as a new agent");
        }
    }
    *registered_flag = true;
    tracing::info!(agent_id = %reg.agent_id, master_id = %reg.master_id, "registered with master");

    let hb = if reg.heartbeat_interval_seconds.is_finite() && reg.heartbeat_interval_seconds > 0.0 {
        Duration::from_secs_f64(reg.heartbeat_interval_seconds.clamp(0.05, 3600.0))
    } else {
        agent.config.heartbeat_interval
    };
    let mut heartbeat = tokio::time::interval(hb);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut usage =
        tokio::time::interval(agent.config.usage_interval.max(Duration::from_millis(100)));
    usage.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Resend check: a fraction of the retry period so resends are roughly on time.
    let mut resend = tokio::time::interval(
        (agent.config.status_update_retry / 4).max(Duration::from_millis(20)),
    );
    resend.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The master forgets an agent's slack when it (re-)registers: send the current estimate,
    // then every change.
    let mut slack = agent.oversubscription.subscribe();
    let current = slack.borrow_and_update().clone();
    if let Some(e) = current {
        tx.send(msg(agent_message::Message::Slack(
            crate::oversubscription::slack_message(&e),
        )))
        .await
        .map_err(|_| LinkError::Closed)?;
    }

    loop {
        tokio::select! {
            Ok(()) = slack.changed() => {
                let current = slack.borrow_and_update().clone();
                if let Some(e) = current {
                    tx.send(msg(agent_message::Message::Slack(crate::oversubscription::slack_message(&e)))).await.map_err(|_| LinkError::Closed)?;
                }
            }
            m = inbound.message() => {
                match m? {
                    Some(m) => handle(agent, m),
                    None => return Err(LinkError::Closed),
                }
            }
            _ = heartbeat.tick() => {
                tx.send(msg(agent_message::Message::Heartbeat(Heartbeat {}))).await.map_err(|_| LinkError::Closed)?;
            }
            _ = usage.tick() => {
                let a = Arc::clone(agent);
                let containers = tokio::task::spawn_blocking(move || a.usage()).await.unwrap_or_default();
                if !containers.is_empty() {
                    tx.send(msg(agent_message::Message::Usage(Usage { containers }))).await.map_err(|_| LinkError::Closed)?;
                }
            }
            _ = resend.tick() => send_updates(agent, &tx).await?,
            _ = agent.outbox.notified() => send_updates(agent, &tx).await?,
        }
    }
}

async fn send_updates(agent: &Agent, tx: &mpsc::Sender<AgentMessage>) -> Result<(), LinkError> {
    for m in agent.executors.take_messages() {
        tx.send(msg(agent_message::Message::ExecutorMessage(m)))
            .await
            .map_err(|_| LinkError::Closed)?;
    }
    for status in agent.due_updates(Instant::now()) {
        tracing::debug!(task = %status.task_id, state = status.state, "sending status update");
        tx.send(msg(agent_message::Message::StatusUpdate(StatusUpdate {
            status: Some(status),
        })))
        .await
        .map_err(|_| LinkError::Closed)?;
    }
    Ok(())
}

fn handle(agent: &Arc<Agent>, m: MasterMessage) {
    match m.message {
        Some(FromMaster::RunTask(r)) => match r.task {
            Some(task) => agent.run_task(r.framework.unwrap_or_default(), task),
            None => tracing::warn!("master sent run_task without a task; ignoring"),
        },
        Some(FromMaster::RunTaskGroup(g)) => match g.executor {
            Some(executor) if !g.tasks.is_empty() => {
                agent.run_task_group(g.framework.unwrap_or_default(), executor, g.tasks)
            }
            _ => {
                tracing::warn!("master sent run_task_group without an executor or tasks; ignoring")
            }
        },
        Some(FromMaster::KillTask(k)) => {
            agent.kill_task(&k.framework_id, &k.task_id, k.grace_period_seconds)
        }
        Some(FromMaster::Acknowledge(a)) => agent.acknowledge(&a.framework_id, &a.task_id, &a.uuid),
        Some(FromMaster::ShutdownFramework(s)) => agent.shutdown_framework(&s.framework_id),
        Some(FromMaster::Error(e)) => {
            tracing::warn!(message = %e.message, "master reported an error")
        }
        Some(FromMaster::Ping(_)) => {}
        Some(FromMaster::DestroyVolume(d)) => agent.destroy_volume(d.role, d.persistence_id),
        Some(FromMaster::FrameworkMessage(m)) => {
            if !agent
                .executors
                .message(&m.framework_id, &m.executor_id, &m.data)
            {
                tracing::info!(framework = %m.framework_id, executor = %m.executor_id,
                    "framework message dropped: that executor is not subscribed on this agent");
            }
        }
        Some(FromMaster::Registered(r)) => {
            // A repeated `registered` (e.g. master failover handled in-stream): adopt it.
            if agent.registered(&r.agent_id, &r.master_id) {
                if let Err(e) = persist_agent_id(&agent.config.work_dir, &r.agent_id) {
                    tracing::warn!(error = %e, "cannot persist the agent id");
                }
            }
        }
        None => tracing::debug!("empty message from master"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_waits_honour_the_retry_hint_and_spread_out() {
        let b = Duration::from_secs(1);
        assert_eq!(reconnect_wait(b, None, 0), b);
        assert_eq!(reconnect_wait(b, None, 999), b + b.mul_f64(0.24975));
        assert_eq!(
            reconnect_wait(b, Some(Duration::from_secs(4)), 0),
            Duration::from_secs(4)
        );
        assert_eq!(reconnect_wait(b, Some(Duration::from_millis(10)), 0), b);
    }

    #[test]
    fn backoff_doubles_up_to_max() {
        let max = Duration::from_secs(10);
        let mut b = MIN_BACKOFF;
        let mut seen = Vec::new();
        for _ in 0..8 {
            b = next_backoff(b, max);
            seen.push(b.as_millis());
        }
        assert_eq!(seen, vec![500, 1000, 2000, 4000, 8000, 10000, 10000, 10000]);
    }

    #[test]
    fn agent_id_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(load_agent_id(dir.path()), None);
        persist_agent_id(dir.path(), "a-1").expect("persist");
        assert_eq!(load_agent_id(dir.path()).as_deref(), Some("a-1"));
        persist_agent_id(dir.path(), "a-2").expect("persist");
        assert_eq!(load_agent_id(dir.path()).as_deref(), Some("a-2"));
    }
}
