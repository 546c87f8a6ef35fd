//! A tiny fake master (tonic server implementing `AgentService`) and helpers shared by the
//! agent's integration tests.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use brim_agent::{AgentConfig, AgentHandle, Isolation};
use brim_proto::v1::agent_message::Message as FromAgent;
use brim_proto::v1::agent_service_server::{AgentService, AgentServiceServer};
use brim_proto::v1::master_message::{self, Message as ToAgent};
use brim_proto::v1::{
    AgentMessage, CommandInfo, FrameworkInfo, MasterMessage, TaskInfo, TaskState, TaskStatus,
};
use brim_proto::Resources;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

pub const WAIT: Duration = Duration::from_secs(15);

/// One `Attach` stream as the fake master sees it.
pub struct Session {
    pub inbound: Streaming<AgentMessage>,
    pub outbound: mpsc::Sender<Result<MasterMessage, Status>>,
    pub heartbeats: usize,
    pub usage: Vec<brim_proto::v1::ContainerUsage>,
}

struct Fake {
    sessions: mpsc::Sender<Session>,
}

type Out = Pin<Box<dyn tokio_stream::Stream<Item = Result<MasterMessage, Status>> + Send>>;

#[tonic::async_trait]
impl AgentService for Fake {
    type AttachStream = Out;

    async fn attach(&self, req: Request<Streaming<AgentMessage>>) -> Result<Response<Out>, Status> {
        let (tx, rx) = mpsc::channel(64);
        let session = Session {
            inbound: req.into_inner(),
            outbound: tx,
            heartbeats: 0,
            usage: Vec::new(),
        };
        self.sessions
            .send(session)
            .await
            .map_err(|_| Status::unavailable("test over"))?;
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

pub struct FakeMaster {
    pub addr: SocketAddr,
    pub sessions: mpsc::Receiver<Session>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeMaster {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeMaster {
    pub async fn start() -> FakeMaster {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake master");
        let addr = listener.local_addr().expect("local addr");
        let (tx, rx) = mpsc::channel(8);
        let server = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(AgentServiceServer::new(Fake { sessions: tx }))
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await;
        });
        FakeMaster {
            addr,
            sessions: rx,
            server,
        }
    }

    /// Waits for the agent to attach; returns the session and its `register`.
    pub async fn accept(&mut self) -> (Session, brim_proto::v1::agent_message::Register) {
        let mut s = tokio::time::timeout(WAIT, self.sessions.recv())
            .await
            .expect("agent did not attach in time")
            .expect("fake master closed");
        let first = tokio::time::timeout(WAIT, s.inbound.message())
            .await
            .expect("no register in time")
            .expect("stream error")
            .expect("stream closed before register");
        match first.message {
            Some(FromAgent::Register(r)) => (s, r),
            other => panic!("first message must be register, got {other:?}"),
        }
    }
}

impl Session {
    pub async fn send(&self, m: ToAgent) {
        self.outbound
            .send(Ok(MasterMessage { message: Some(m) }))
            .await
            .expect("agent stream gone");
    }

    pub async fn registered(&self, agent_id: &str, heartbeat: f64) {
        self.send(ToAgent::Registered(master_message::Registered {
            agent_id: agent_id.into(),
            heartbeat_interval_seconds: heartbeat,
            master_id: "fake-master".into(),
        }))
        .await;
    }

    pub async fn run_task(&self, framework_id: &str, task: TaskInfo) {
        self.send(ToAgent::RunTask(master_message::RunTask {
            framework: Some(FrameworkInfo {
                id: framework_id.into(),
                name: "test".into(),
                user: "root".into(),
                ..Default::default()
            }),
            task: Some(task),
        }))
        .await;
    }

    pub async fn kill(&self, framework_id: &str, task_id: &str, grace: Option<f64>) {
        self.send(ToAgent::KillTask(master_message::KillTask {
            framework_id: framework_id.into(),
            task_id: task_id.into(),
            grace_period_seconds: grace,
        }))
        .await;
    }

    pub async fn ack(&self, s: &TaskStatus) {
        self.send(ToAgent::Acknowledge(master_message::AcknowledgeUpdate {
            framework_id: s.framework_id.clone(),
            task_id: s.task_id.clone(),
            uuid: s.uuid.clone(),
        }))
        .await;
    }

    /// Next status update (heartbeats and usage are counted and skipped).
    pub async fn update(&mut self) -> TaskStatus {
        self.update_within(WAIT)
            .await
            .expect("no status update in time")
    }

    pub async fn update_within(&mut self, wait: Duration) -> Option<TaskStatus> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let m = tokio::time::timeout_at(deadline, self.inbound.message())
                .await
                .ok()?;
            match m
                .expect("stream error")
                .expect("agent closed the stream")
                .message
            {
                Some(FromAgent::StatusUpdate(u)) => {
                    return Some(u.status.expect("update without status"))
                }
                Some(FromAgent::Heartbeat(_)) => self.heartbeats += 1,
                Some(FromAgent::Usage(u)) => self.usage.extend(u.containers),
                other => panic!("unexpected message from agent: {other:?}"),
            }
        }
    }

    /// Next update, acknowledged; asserts its task and state.
    pub async fn expect(&mut self, task_id: &str, state: TaskState) -> TaskStatus {
        let s = self.update().await;
        assert_eq!(
            (s.task_id.as_str(), s.state()),
            (task_id, state),
            "unexpected update: {s:?}"
        );
        self.ack(&s).await;
        s
    }
}

pub fn shell_task(id: &str, cmd: &str, resources: &str) -> TaskInfo {
    TaskInfo {
        name: id.into(),
        task_id: id.into(),
        resources: Resources::parse(resources)
            .expect("test resources")
            .to_proto(),
        command: Some(CommandInfo {
            shell: true,
            value: cmd.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn config(
    master: SocketAddr,
    work_dir: &std::path::Path,
    isolation: Isolation,
    cgroup: &str,
) -> AgentConfig {
    let mut c = AgentConfig::new(master.to_string(), work_dir.to_path_buf());
    c.http_addr = "127.0.0.1:0".parse().expect("addr");
    c.resources =
        Some(Resources::parse("cpus:2;mem:1024;disk:1000;ports:[31000-31010]").expect("res"));
    c.isolation = isolation;
    c.cgroup_name = cgroup.into();
    // The fake master's framework runs as root.
    c.allow_root_tasks = true;
    c.status_update_retry = Duration::from_millis(400);
    c.usage_interval = Duration::from_millis(200);
    c.max_reconnect_backoff = Duration::from_millis(500);
    c.default_kill_grace = Duration::from_secs(1);
    c.attributes = vec![("rack".into(), "r1".into())];
    c
}

/// Starts an agent and returns it with a way to stop it (the shutdown future's trigger) and
/// the join handle of `run_until`.
pub async fn start_agent(
    config: AgentConfig,
) -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), brim_agent::AgentError>>,
) {
    let handle: AgentHandle = brim_agent::start(config).await.expect("agent start");
    let addr = handle.http_addr();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let join = tokio::spawn(handle.run_until(async move {
        let _ = rx.await;
    }));
    (addr, tx, join)
}

pub async fn state(http: SocketAddr) -> serde_json::Value {
    reqwest::get(format!("http://{http}/state"))
        .await
        .expect("GET /state")
        .json()
        .await
        .expect("state json")
}

pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// Whether a test can run on this machine: `true` when nothing is `unavailable`; otherwise it
/// prints why and returns `false` (skip) — or panics when `BRIM_TEST_REQUIRE_ALL=1`, so CI
/// never skips silently.
pub fn run_or_skip(test: &str, unavailable: Option<String>) -> bool {
    let Some(why) = unavailable else {
        return true;
    };
    if std::env::var("BRIM_TEST_REQUIRE_ALL").as_deref() == Ok("1") {
        panic!("{test}: cannot run ({why}) and BRIM_TEST_REQUIRE_ALL=1");
    }
    // Straight to the stderr handle: the test harness captures eprintln!, this should show.
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        format!("SKIPPED {test}: {why} (set BRIM_TEST_REQUIRE_ALL=1 to make this a failure)\n")
            .as_bytes(),
    );
    false
}
