//! The driver against a fake master: a tonic `Scheduler` server that records calls and lets
//! each test push events or drop the stream.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use brim_framework::v1::scheduler_server::{Scheduler as SchedulerService, SchedulerServer};
use brim_framework::v1::{self, event, operation, Event, FrameworkInfo, Offer, TaskStatus};
use brim_framework::{
    Driver, DriverConfig, DriverError, DriverHandle, Resources, Scheduler, TaskBuilder,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status};

/// Calls the fake master received, in order.
#[derive(Debug)]
enum Call {
    Subscribe(FrameworkInfo),
    Accept(v1::AcceptRequest),
    Decline(v1::DeclineRequest),
    Kill(v1::KillRequest),
    Ack(v1::AcknowledgeRequest),
    Reconcile(v1::ReconcileRequest),
    Revive,
    Suppress,
    Teardown(v1::TeardownRequest),
    Message(v1::MessageRequest),
}

type EventSender = mpsc::Sender<Result<Event, Status>>;

#[derive(Clone)]
struct FakeMaster {
    calls: mpsc::UnboundedSender<Call>,
    /// The open event stream, if any; dropping it ends the subscription.
    stream: Arc<Mutex<Option<EventSender>>>,
    heartbeat_interval: f64,
    refuse: Option<tonic::Code>,
    /// Shared with the scheduler, to check the order of callbacks and calls.
    log: Log,
}

type Log = Arc<Mutex<Vec<String>>>;

fn log(log: &Log, entry: String) {
    log.lock().expect("lock").push(entry);
}

type Reply = Result<Response<v1::CallResponse>, Status>;

impl FakeMaster {
    fn record(&self, call: Call) -> Reply {
        let _ = self.calls.send(call);
        Ok(Response::new(v1::CallResponse {}))
    }
}

#[tonic::async_trait]
impl SchedulerService for FakeMaster {
    type SubscribeStream = ReceiverStream<Result<Event, Status>>;

    async fn subscribe(
        &self,
        request: Request<v1::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let info = request.into_inner().framework_info.unwrap_or_default();
        let id = if info.id.is_empty() {
            "fw-1".to_string()
        } else {
            info.id.clone()
        };
        let _ = self.calls.send(Call::Subscribe(info));
        if let Some(code) = self.refuse {
            return Err(Status::new(code, "role `nope` is not allowed"));
        }
        let (tx, rx) = mpsc::channel(16);
        let subscribed = event::Event::Subscribed(event::Subscribed {
            framework_id: id,
            heartbeat_interval_seconds: self.heartbeat_interval,
            master_id: "m-1".into(),
        });
        let _ = tx
            .send(Ok(Event {
                event: Some(subscribed),
            }))
            .await;
        *self.stream.lock().expect("lock") = Some(tx);
        Ok(Response::new(ReceiverStream::new(rx)))
    }
    async fn accept(&self, r: Request<v1::AcceptRequest>) -> Reply {
        self.record(Call::Accept(r.into_inner()))
    }
    async fn decline(&self, r: Request<v1::DeclineRequest>) -> Reply {
        self.record(Call::Decline(r.into_inner()))
    }
    async fn kill(&self, r: Request<v1::KillRequest>) -> Reply {
        self.record(Call::Kill(r.into_inner()))
    }
    async fn acknowledge(&self, r: Request<v1::AcknowledgeRequest>) -> Reply {
        let ack = r.into_inner();
        log(&self.log, format!("ack {}", ack.task_id));
        self.record(Call::Ack(ack))
    }
    async fn reconcile(&self, r: Request<v1::ReconcileRequest>) -> Reply {
        self.record(Call::Reconcile(r.into_inner()))
    }
    async fn revive(&self, _: Request<v1::ReviveRequest>) -> Reply {
        self.record(Call::Revive)
    }
    async fn suppress(&self, _: Request<v1::SuppressRequest>) -> Reply {
        self.record(Call::Suppress)
    }
    async fn teardown(&self, r: Request<v1::TeardownRequest>) -> Reply {
        self.record(Call::Teardown(r.into_inner()))
    }
    async fn message(&self, r: Request<v1::MessageRequest>) -> Reply {
        self.record(Call::Message(r.into_inner()))
    }
}

/// What the scheduler saw, in order.
#[derive(Debug, PartialEq)]
enum Seen {
    Registered(String),
    Offers(usize),
    Rescinded(String),
    Update(String, v1::TaskState),
    Failure(String),
    Error(String),
    Disconnected,
}

/// Launches one small task on every offer.
struct Recorder {
    seen: mpsc::UnboundedSender<Seen>,
    log: Log,
}

impl Scheduler for Recorder {
    async fn registered(&mut self, _: &DriverHandle, framework_id: &str) {
        let _ = self.seen.send(Seen::Registered(framework_id.to_string()));
    }
    async fn offers(&mut self, driver: &DriverHandle, offers: Vec<Offer>) {
        let _ = self.seen.send(Seen::Offers(offers.len()));
        for offer in offers {
            let task = TaskBuilder::new(format!("task-{}", offer.id), "hello")
                .shell("echo hi")
                .cpus(0.5)
                .mem(32.0)
                .build_for(&offer);
            match task {
                Ok(t) => driver
                    .launch(&offer.id, vec![t])
                    .await
                    .expect("launch accepted"),
                Err(_) => driver
                    .decline(vec![offer.id.clone()], Some(30.0))
                    .await
                    .expect("decline accepted"),
            }
        }
    }
    async fn rescinded(&mut self, _: &DriverHandle, offer_id: String) {
        let _ = self.seen.send(Seen::Rescinded(offer_id));
    }
    async fn update(&mut self, _: &DriverHandle, status: TaskStatus) {
        log(&self.log, format!("update {}", status.task_id));
        // A slow callback: the acknowledgement must still come after it.
        tokio::time::sleep(Duration::from_millis(30)).await;
        log(&self.log, format!("update {} done", status.task_id));
        let _ = self
            .seen
            .send(Seen::Update(status.task_id.clone(), status.state()));
    }
    async fn failure(&mut self, _: &DriverHandle, agent_id: String) {
        let _ = self.seen.send(Seen::Failure(agent_id));
    }
    async fn error(&mut self, _: &DriverHandle, message: String) {
        let _ = self.seen.send(Seen::Error(message));
    }
    async fn disconnected(&mut self, _: &DriverHandle) {
        let _ = self.seen.send(Seen::Disconnected);
    }
}

struct Harness {
    fake: FakeMaster,
    calls: mpsc::UnboundedReceiver<Call>,
    seen: mpsc::UnboundedReceiver<Seen>,
    handle: DriverHandle,
    run: tokio::task::JoinHandle<Result<(), DriverError>>,
}

const WAIT: Duration = Duration::from_secs(5);

async fn next<T>(rx: &mut mpsc::UnboundedReceiver<T>, what: &str) -> T {
    match tokio::time::timeout(WAIT, rx.recv()).await {
        Ok(Some(v)) => v,
        Ok(None) => panic!("channel closed while waiting for {what}"),
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

fn config(addr: &str) -> DriverConfig {
    let mut c = DriverConfig::new(addr, "test-fw");
    c.framework.role = "batch".into();
    c.backoff_min = Duration::from_millis(20);
    c.backoff_max = Duration::from_millis(100);
    c.connect_timeout = Duration::from_secs(2);
    c
}

async fn start(heartbeat_interval: f64, refuse: Option<tonic::Code>) -> Harness {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local addr").to_string();
    let (calls_tx, calls) = mpsc::unbounded_channel();
    let fake = FakeMaster {
        calls: calls_tx,
        stream: Arc::new(Mutex::new(None)),
        heartbeat_interval,
        refuse,
        log: Log::default(),
    };
    let server = tonic::transport::Server::builder()
        .add_service(SchedulerServer::new(fake.clone()))
        .serve_with_incoming(TcpListenerStream::new(listener));
    tokio::spawn(server);
    let (seen_tx, seen) = mpsc::unbounded_channel();
    let driver = Driver::new(config(&addr)).expect("valid config");
    let handle = driver.handle();
    let mut recorder = Recorder {
        seen: seen_tx,
        log: fake.log.clone(),
    };
    let run = tokio::spawn(async move { driver.run(&mut recorder).await });
    Harness {
        fake,
        calls,
        seen,
        handle,
        run,
    }
}

impl Harness {
    async fn push(&self, e: event::Event) {
        let tx = self
            .fake
            .stream
            .lock()
            .expect("lock")
            .clone()
            .expect("a subscriber");
        tx.send(Ok(Event { event: Some(e) }))
            .await
            .expect("stream open");
    }

    /// Subscription and `registered`, returning the FrameworkInfo sent.
    async fn subscribed(&mut self) -> FrameworkInfo {
        let info = match next(&mut self.calls, "subscribe").await {
            Call::Subscribe(info) => info,
            other => panic!("expected a subscription, got {other:?}"),
        };
        assert_eq!(
            next(&mut self.seen, "registered").await,
            Seen::Registered("fw-1".into())
        );
        info
    }

    async fn finish(self) -> Result<(), DriverError> {
        match tokio::time::timeout(WAIT, self.run).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => panic!("driver task panicked: {e}"),
            Err(_) => panic!("driver did not return"),
        }
    }
}

fn offer(id: &str, resources: &str) -> Offer {
    Offer {
        id: id.into(),
        framework_id: "fw-1".into(),
        agent_id: "agent-1".into(),
        hostname: "h1".into(),
        resources: Resources::parse(resources).expect("valid").to_proto(),
        agent_http_address: "127.0.0.1:5051".into(),
        ..Offer::default()
    }
}

fn update(task_id: &str, state: v1::TaskState, uuid: &[u8]) -> event::Event {
    let mut status = TaskStatus {
        task_id: task_id.into(),
        agent_id: "agent-1".into(),
        framework_id: "fw-1".into(),
        uuid: uuid.to_vec(),
        ..TaskStatus::default()
    };
    status.set_state(state);
    event::Event::Update(event::Update {
        status: Some(status),
    })
}

#[tokio::test]
async fn subscribes_then_offers_become_accepts_and_declines() {
    let mut h = start(15.0, None).await;
    let info = h.subscribed().await;
    assert_eq!(
        (info.name.as_str(), info.role.as_str(), info.id.as_str()),
        ("test-fw", "batch", "")
    );
    assert_eq!(h.handle.framework_id().as_deref(), Some("fw-1"));

    h.push(event::Event::Offers(event::Offers {
        offers: vec![
            offer("o1", "cpus:2;mem:1024"),
            offer("o2", "cpus:0.1;mem:1024"),
        ],
    }))
    .await;
    assert_eq!(next(&mut h.seen, "offers").await, Seen::Offers(2));
    match next(&mut h.calls, "accept").await {
        Call::Accept(a) => {
            assert_eq!(a.framework_id, "fw-1");
            assert_eq!(a.offer_ids, ["o1"]);
            let [v1::Operation {
                operation: Some(operation::Operation::Launch(l)),
            }] = a.operations.as_slice()
            else {
                panic!("expected one launch, got {:?}", a.operations)
            };
            let [t] = l.task_infos.as_slice() else {
                panic!("one task expected")
            };
            assert_eq!(
                (t.task_id.as_str(), t.agent_id.as_str()),
                ("task-o1", "agent-1")
            );
            assert_eq!(
                Resources::from_proto(&t.resources).expect("valid"),
                Resources::cpus_mem(0.5, 32.0).expect("valid")
            );
            assert_eq!(
                t.command.as_ref().map(|c| c.value.as_str()),
                Some("echo hi")
            );
        }
        other => panic!("expected accept, got {other:?}"),
    }
    match next(&mut h.calls, "decline").await {
        Call::Decline(d) => {
            assert_eq!(d.offer_ids, ["o2"]);
            assert_eq!(d.filters.and_then(|f| f.refuse_seconds), Some(30.0));
        }
        other => panic!("expected decline, got {other:?}"),
    }

    h.push(event::Event::Rescind(event::Rescind {
        offer_id: "o9".into(),
    }))
    .await;
    h.push(event::Event::Failure(event::Failure {
        agent_id: "agent-2".into(),
    }))
    .await;
    assert_eq!(
        next(&mut h.seen, "rescind").await,
        Seen::Rescinded("o9".into())
    );
    assert_eq!(
        next(&mut h.seen, "failure").await,
        Seen::Failure("agent-2".into())
    );

    h.handle
        .kill("task-o1", "agent-1", Some(Duration::from_secs(3)))
        .await
        .expect("kill");
    match next(&mut h.calls, "kill").await {
        Call::Kill(k) => {
            assert_eq!(
                (k.task_id.as_str(), k.agent_id.as_str()),
                ("task-o1", "agent-1")
            );
            assert_eq!(k.grace_period_seconds, Some(3.0));
        }
        other => panic!("expected kill, got {other:?}"),
    }
    h.handle.suppress().await.expect("suppress");
    h.handle.revive().await.expect("revive");
    assert!(matches!(
        next(&mut h.calls, "suppress").await,
        Call::Suppress
    ));
    assert!(matches!(next(&mut h.calls, "revive").await, Call::Revive));
    h.handle
        .message("agent-1", "exec-1", b"ping".to_vec())
        .await
        .expect("message");
    match next(&mut h.calls, "message").await {
        Call::Message(m) => assert_eq!(
            (
                m.framework_id.as_str(),
                m.agent_id.as_str(),
                m.executor_id.as_str(),
                &m.data[..]
            ),
            ("fw-1", "agent-1", "exec-1", &b"ping"[..])
        ),
        other => panic!("expected message, got {other:?}"),
    }

    h.handle.teardown().await.expect("teardown");
    match next(&mut h.calls, "teardown").await {
        Call::Teardown(t) => assert_eq!(t.framework_id, "fw-1"),
        other => panic!("expected teardown, got {other:?}"),
    }
    h.finish().await.expect("teardown stops the driver cleanly");
}

#[tokio::test]
async fn updates_are_acknowledged_after_the_callback() {
    let mut h = start(15.0, None).await;
    h.subscribed().await;
    // Master-generated (no uuid): delivered, not acknowledged.
    h.push(update("t0", v1::TaskState::TaskLost, b"")).await;
    h.push(update("t1", v1::TaskState::TaskRunning, b"uuid-1"))
        .await;
    assert_eq!(
        next(&mut h.seen, "update t0").await,
        Seen::Update("t0".into(), v1::TaskState::TaskLost)
    );
    assert_eq!(
        next(&mut h.seen, "update t1").await,
        Seen::Update("t1".into(), v1::TaskState::TaskRunning)
    );
    match next(&mut h.calls, "ack").await {
        Call::Ack(a) => {
            assert_eq!(a.framework_id, "fw-1");
            assert_eq!((a.task_id.as_str(), a.agent_id.as_str()), ("t1", "agent-1"));
            assert_eq!(a.uuid, b"uuid-1");
        }
        other => panic!("expected the ack of t1 only, got {other:?}"),
    }
    assert_eq!(
        *h.fake.log.lock().expect("lock"),
        [
            "update t0",
            "update t0 done",
            "update t1",
            "update t1 done",
            "ack t1"
        ],
        "acknowledged only after the callback returned"
    );
    h.handle.stop();
    h.finish().await.expect("stop returns Ok");
}

#[tokio::test]
async fn resubscribes_with_the_same_id_after_the_stream_drops() {
    let mut h = start(15.0, None).await;
    h.subscribed().await;
    h.fake.stream.lock().expect("lock").take();
    assert_eq!(next(&mut h.seen, "disconnected").await, Seen::Disconnected);
    let info = h.subscribed().await;
    assert_eq!(
        info.id, "fw-1",
        "failover must re-subscribe with the framework id"
    );
    match next(&mut h.calls, "reconcile").await {
        Call::Reconcile(r) => assert!(r.tasks.is_empty(), "implicit reconciliation"),
        other => panic!("expected reconcile after failover, got {other:?}"),
    }
    // Still functional after failover.
    h.push(update("t1", v1::TaskState::TaskFinished, b"u"))
        .await;
    assert_eq!(
        next(&mut h.seen, "update").await,
        Seen::Update("t1".into(), v1::TaskState::TaskFinished)
    );
    assert!(matches!(next(&mut h.calls, "ack").await, Call::Ack(_)));
    h.handle.stop();
    h.finish().await.expect("stop returns Ok");
}

#[tokio::test]
async fn missed_heartbeats_trigger_a_reconnect() {
    // 50 ms heartbeats that never come: the watchdog fires after ~150 ms.
    let mut h = start(0.05, None).await;
    h.subscribed().await;
    assert_eq!(next(&mut h.seen, "disconnected").await, Seen::Disconnected);
    let info = h.subscribed().await;
    assert_eq!(info.id, "fw-1");
    h.handle.stop();
    h.finish().await.expect("stop returns Ok");
}

#[tokio::test]
async fn regular_heartbeats_keep_the_subscription() {
    let mut h = start(0.2, None).await;
    h.subscribed().await;
    for _ in 0..20 {
        h.push(event::Event::Heartbeat(event::Heartbeat {})).await;
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    // 800 ms of 40 ms heartbeats, well past the 600 ms watchdog.
    assert!(h.seen.try_recv().is_err(), "no disconnection expected");
    assert!(h.calls.try_recv().is_err(), "no re-subscription expected");
    h.handle.stop();
    h.finish().await.expect("stop returns Ok");
}

#[tokio::test]
async fn master_error_aborts_the_driver() {
    let mut h = start(15.0, None).await;
    h.subscribed().await;
    h.push(event::Event::Error(event::Error {
        message: "framework removed".into(),
    }))
    .await;
    assert_eq!(
        next(&mut h.seen, "error").await,
        Seen::Error("framework removed".into())
    );
    match h.finish().await {
        Err(DriverError::Aborted(m)) => assert_eq!(m, "framework removed"),
        other => panic!("expected Aborted, got {other:?}"),
    }
}

#[tokio::test]
async fn refused_subscription_is_fatal_with_the_masters_reason() {
    let mut h = start(15.0, Some(tonic::Code::PermissionDenied)).await;
    assert!(matches!(
        next(&mut h.calls, "subscribe").await,
        Call::Subscribe(_)
    ));
    match h.finish().await {
        Err(e @ DriverError::SubscribeRefused { .. }) => {
            assert!(e.to_string().contains("role `nope` is not allowed"), "{e}")
        }
        other => panic!("expected SubscribeRefused, got {other:?}"),
    }
}

#[tokio::test]
async fn calls_before_subscription_and_unreachable_masters_fail_clearly() {
    // Nothing listens on this port (bound then released).
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").to_string()
    };
    let mut c = config(&addr);
    c.reconnect_timeout = Some(Duration::from_millis(300));
    let driver = Driver::new(c).expect("valid config");
    let handle = driver.handle();
    assert!(matches!(
        handle.revive().await,
        Err(DriverError::NotSubscribed)
    ));
    let (tx, _rx) = mpsc::unbounded_channel();
    let err = driver
        .run(&mut Recorder {
            seen: tx,
            log: Log::default(),
        })
        .await
        .expect_err("nobody listens");
    assert!(matches!(err, DriverError::ReconnectTimeout { .. }), "{err}");
    assert!(err.to_string().contains(&addr), "{err}");

    let bad = Driver::new(DriverConfig::new("localhost", "x")).err();
    assert!(
        matches!(bad, Some(DriverError::InvalidMaster { .. })),
        "{bad:?}"
    );
}
