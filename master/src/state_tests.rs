//! State-machine tests: a `Master` over an in-memory registry, driven with a fake clock and
//! real channels standing in for agent and framework streams.

use super::*;
use crate::registry::MemoryRegistry;
use brim_proto::v1::{agent_message, event, master_message};
use tonic::Code;

const T0: Duration = Duration::from_secs(100);

struct Harness {
    m: Master,
    agent_rx: HashMap<String, mpsc::Receiver<Result<MasterMessage, Status>>>,
    fw_rx: HashMap<String, mpsc::Receiver<Result<Event, Status>>>,
    now: Duration,
}

fn res(s: &str) -> Resources {
    Resources::parse(s).unwrap_or_else(|e| panic!("test resources `{s}`: {e}"))
}

impl Harness {
    fn new() -> Self {
        let config = StateConfig {
            agent_heartbeat_interval: Duration::from_secs(1),
            max_missed_heartbeats: 3,
            offer_timeout: Duration::from_secs(10),
            ..StateConfig::default()
        };
        Harness {
            m: Master::new(config, "m".into(), Box::new(MemoryRegistry::default()), T0)
                .expect("master"),
            agent_rx: HashMap::new(),
            fw_rx: HashMap::new(),
            now: T0,
        }
    }

    fn add_agent(&mut self, resources: &str) -> (String, u64) {
        let (tx, rx) = mpsc::channel(64);
        let reg = agent_message::Register {
            agent_info: Some(AgentInfo {
                hostname: "host".into(),
                http_address: "127.0.0.1:5051".into(),
                resources: res(resources).to_proto(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let (id, conn) = self
            .m
            .register_agent(reg, tx, self.now, 1.0)
            .expect("register");
        self.agent_rx.insert(id.clone(), rx);
        assert!(matches!(
            self.next_agent(&id),
            Some(master_message::Message::Registered(_))
        ));
        (id, conn)
    }

    fn subscribe(&mut self, name: &str, capabilities: &[&str]) -> String {
        let (tx, rx) = mpsc::channel(64);
        let info = FrameworkInfo {
            name: name.into(),
            capabilities: capabilities.iter().map(|c| c.to_string()).collect(),
            ..Default::default()
        };
        let (id, _) = self
            .m
            .subscribe(info, tx, self.now, 1.0)
            .expect("subscribe");
        self.fw_rx.insert(id.clone(), rx);
        assert!(matches!(
            self.next_event(&id),
            Some(event::Event::Subscribed(_))
        ));
        id
    }

    fn next_agent(&mut self, agent: &str) -> Option<master_message::Message> {
        let rx = self.agent_rx.get_mut(agent)?;
        rx.try_recv()
            .ok()
            .and_then(|m| m.ok())
            .and_then(|m| m.message)
    }

    fn next_event(&mut self, fw: &str) -> Option<event::Event> {
        let rx = self.fw_rx.get_mut(fw)?;
        rx.try_recv()
            .ok()
            .and_then(|m| m.ok())
            .and_then(|m| m.event)
    }

    /// Allocates and returns the offers the framework received.
    fn offers(&mut self, fw: &str) -> Vec<v1::Offer> {
        self.m.allocate(self.now);
        let mut out = Vec::new();
        while let Some(e) = self.next_event(fw) {
            if let event::Event::Offers(o) = e {
                out.extend(o.offers);
            }
        }
        out
    }

    fn accept(&mut self, fw: &str, offer: &str, tasks: Vec<TaskInfo>) -> Result<(), Status> {
        self.m.accept(
            v1::AcceptRequest {
                framework_id: fw.into(),
                offer_ids: vec![offer.into()],
                operations: vec![v1::Operation {
                    operation: Some(operation::Operation::Launch(operation::Launch {
                        task_infos: tasks,
                    })),
                }],
                filters: None,
            },
            self.now,
            2.0,
        )
    }

    fn update(&mut self, agent: &str, conn: u64, fw: &str, task: &str, state: TaskState) {
        self.m.agent_message(
            agent,
            conn,
            agent_message::Message::StatusUpdate(agent_message::StatusUpdate {
                status: Some(TaskStatus {
                    task_id: task.into(),
                    framework_id: fw.into(),
                    state: state as i32,
                    uuid: vec![7; 16],
                    ..Default::default()
                }),
            }),
            self.now,
            3.0,
        );
    }
}

fn task(id: &str, resources: &str) -> TaskInfo {
    TaskInfo {
        name: id.into(),
        task_id: id.into(),
        resources: res(resources).to_proto(),
        command: Some(v1::CommandInfo {
            shell: true,
            value: "true".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn offer_launch_update_and_recover() {
    let mut h = Harness::new();
    let (agent, conn) = h.add_agent("cpus:4;mem:4096");
    let fw = h.subscribe("f", &[]);
    let offers = h.offers(&fw);
    assert_eq!(offers.len(), 1);
    assert_eq!(
        Resources::from_proto(&offers[0].resources).expect("valid"),
        res("cpus:4;mem:4096")
    );
    h.accept(&fw, &offers[0].id, vec![task("t1", "cpus:1;mem:128")])
        .expect("accept");
    match h.next_agent(&agent) {
        Some(master_message::Message::RunTask(r)) => {
            assert_eq!(r.task.expect("task").task_id, "t1");
        }
        other => panic!("expected run_task, got {other:?}"),
    }
    // The unused part is filtered for this framework for the default refuse time.
    assert!(h.offers(&fw).is_empty());
    h.now += Duration::from_secs(6);
    let again = h.offers(&fw);
    assert_eq!(
        Resources::from_proto(&again[0].resources).expect("valid"),
        res("cpus:3;mem:3968")
    );
    h.update(&agent, conn, &fw, "t1", TaskState::TaskRunning);
    assert!(matches!(h.next_event(&fw), Some(event::Event::Update(_))));
    h.update(&agent, conn, &fw, "t1", TaskState::TaskFinished);
    match h.next_event(&fw) {
        Some(event::Event::Update(u)) => {
            assert_eq!(
                u.status.expect("status").state,
                TaskState::TaskFinished as i32
            )
        }
        other => panic!("expected update, got {other:?}"),
    }
    // Decline the outstanding offer: now everything is free again.
    h.m.decline(
        v1::DeclineRequest {
            framework_id: fw.clone(),
            offer_ids: vec![again[0].id.clone()],
            filters: Some(v1::Filters {
                refuse_seconds: Some(0.0),
            }),
        },
        h.now,
    )
    .expect("decline");
    let all = h.offers(&fw);
    assert_eq!(
        Resources::from_proto(&all[0].resources).expect("valid"),
        res("cpus:4;mem:4096")
    );
}

#[test]
fn bad_accepts_are_rejected_and_change_nothing() {
    let mut h = Harness::new();
    let (_agent, _) = h.add_agent("cpus:2;mem:1024;ports:[31000-31010]");
    let fw = h.subscribe("f", &[]);
    let other = h.subscribe("g", &[]);
    let offers = h.offers(&fw);
    let offer = offers[0].id.clone();
    let nan = TaskInfo {
        resources: vec![v1::Resource {
            name: "cpus".into(),
            value: Some(v1::resource::Value::Scalar(f64::NAN)),
            revocable: false,
            ..Default::default()
        }],
        ..task("nan", "cpus:1")
    };
    let cases: Vec<(&str, Result<(), Status>, Code)> = vec![
        (
            "unknown framework",
            h.accept("nope", &offer, vec![task("a", "cpus:1")]),
            Code::NotFound,
        ),
        (
            "foreign offer",
            h.accept(&other, &offer, vec![task("a", "cpus:1")]),
            Code::PermissionDenied,
        ),
        (
            "unknown offer",
            h.accept(&fw, "O-nope", vec![task("a", "cpus:1")]),
            Code::NotFound,
        ),
        (
            "too much",
            h.accept(&fw, &offer, vec![task("a", "cpus:3")]),
            Code::InvalidArgument,
        ),
        (
            "ports not offered",
            h.accept(&fw, &offer, vec![task("a", "cpus:1;ports:[80-80]")]),
            Code::InvalidArgument,
        ),
        (
            "sum too much",
            h.accept(
                &fw,
                &offer,
                vec![task("a", "cpus:1.5"), task("b", "cpus:1")],
            ),
            Code::InvalidArgument,
        ),
        (
            "duplicate ids",
            h.accept(
                &fw,
                &offer,
                vec![task("a", "cpus:0.5"), task("a", "cpus:0.5")],
            ),
            Code::AlreadyExists,
        ),
        (
            "nan",
            h.accept(&fw, &offer, vec![nan]),
            Code::InvalidArgument,
        ),
        (
            "negative",
            h.accept(
                &fw,
                &offer,
                vec![TaskInfo {
                    resources: vec![v1::Resource {
                        name: "mem".into(),
                        value: Some(v1::resource::Value::Scalar(-1.0)),
                        revocable: false,
                        ..Default::default()
                    }],
                    ..task("neg", "cpus:1")
                }],
            ),
            Code::InvalidArgument,
        ),
        (
            "bad id",
            h.accept(&fw, &offer, vec![task("../x", "cpus:1")]),
            Code::InvalidArgument,
        ),
        (
            "no command",
            h.accept(
                &fw,
                &offer,
                vec![TaskInfo {
                    command: None,
                    ..task("c", "cpus:1")
                }],
            ),
            Code::InvalidArgument,
        ),
        (
            "no resources",
            h.accept(&fw, &offer, vec![task("e", "")]),
            Code::InvalidArgument,
        ),
    ];
    for (what, result, code) in cases {
        match result {
            Err(s) => {
                assert_eq!(s.code(), code, "{what}: {}", s.message());
                assert!(!s.message().is_empty(), "{what}: empty message");
            }
            Ok(()) => panic!("{what}: should have been rejected"),
        }
    }
    // The offer is still valid after all those failures.
    h.accept(&fw, &offer, vec![task("ok", "cpus:1;ports:[31000-31000]")])
        .expect("a valid accept still works");
    // ...and is gone afterwards.
    let again = h.accept(&fw, &offer, vec![task("ok2", "cpus:0.1")]);
    assert_eq!(again.err().map(|s| s.code()), Some(Code::NotFound));
    // Duplicate of a live task id.
    h.m.suppress(&other).expect("suppress");
    h.now += Duration::from_secs(6);
    let offers = h.offers(&fw);
    let dup = h.accept(&fw, &offers[0].id, vec![task("ok", "cpus:0.1")]);
    assert_eq!(dup.err().map(|s| s.code()), Some(Code::AlreadyExists));
}

#[test]
fn expired_offers_are_rescinded_and_cannot_be_accepted() {
    let mut h = Harness::new();
    let (agent, conn) = h.add_agent("cpus:1;mem:512");
    let fw = h.subscribe("f", &[]);
    let offer = h.offers(&fw)[0].id.clone();
    // Keep the agent alive while time passes.
    for _ in 0..11 {
        h.now += Duration::from_secs(1);
        h.m.agent_message(
            &agent,
            conn,
            agent_message::Message::Heartbeat(agent_message::Heartbeat {}),
            h.now,
            0.0,
        );
        h.m.tick(h.now, 0.0);
    }
    assert!(matches!(h.next_event(&fw), Some(event::Event::Rescind(r)) if r.offer_id == offer));
    let err = h
        .accept(&fw, &offer, vec![task("t", "cpus:1")])
        .expect_err("expired");
    assert_eq!(err.code(), Code::NotFound);
}

#[test]
fn silent_agent_becomes_unreachable_and_tasks_lost_or_unreachable() {
    let mut h = Harness::new();
    let (agent, _conn) = h.add_agent("cpus:2;mem:1024");
    let plain = h.subscribe("plain", &[]);
    let aware = h.subscribe("aware", &[brim_proto::CAPABILITY_PARTITION_AWARE]);
    h.m.allocate(h.now);
    // Whoever got the offer launches; give the other one the next round.
    let mut launched = Vec::new();
    for fw in [plain.clone(), aware.clone()] {
        for _ in 0..2 {
            let offers = h.offers(&fw);
            if let Some(o) = offers.first() {
                h.accept(
                    &fw,
                    &o.id,
                    vec![task(&format!("t-{}", launched.len()), "cpus:1;mem:100")],
                )
                .expect("accept");
                launched.push(fw.clone());
                break;
            }
            h.now += Duration::from_secs(6);
        }
    }
    assert_eq!(launched.len(), 2, "both frameworks should have launched");
    h.now += Duration::from_secs(4);
    h.m.tick(h.now, 9.0);
    let state_of = |h: &mut Harness, fw: &str| loop {
        match h.next_event(fw) {
            Some(event::Event::Update(u)) => break u.status.expect("status").state,
            Some(_) => continue,
            None => panic!("no update for {fw}"),
        }
    };
    assert_eq!(state_of(&mut h, &plain), TaskState::TaskLost as i32);
    assert_eq!(state_of(&mut h, &aware), TaskState::TaskUnreachable as i32);
    let s = h.m.state_json(0.0, "x");
    assert_eq!(s["agents"][0]["status"], "unreachable");
    assert_eq!(s["tasks"].as_array().map(Vec::len), Some(0));
    let _ = agent;
}

#[test]
fn acknowledgements_reach_the_agent() {
    let mut h = Harness::new();
    let (agent, conn) = h.add_agent("cpus:2;mem:1024");
    let fw = h.subscribe("f", &[]);
    let o = h.offers(&fw)[0].id.clone();
    h.accept(&fw, &o, vec![task("t", "cpus:1")])
        .expect("accept");
    let _run = h.next_agent(&agent);
    h.update(&agent, conn, &fw, "t", TaskState::TaskRunning);
    h.m.acknowledge(v1::AcknowledgeRequest {
        framework_id: fw.clone(),
        agent_id: agent.clone(),
        task_id: "t".into(),
        uuid: vec![7; 16],
    })
    .expect("ack");
    match h.next_agent(&agent) {
        Some(master_message::Message::Acknowledge(a)) => assert_eq!(a.uuid, vec![7; 16]),
        other => panic!("expected acknowledge, got {other:?}"),
    }
    let bad = h.m.acknowledge(v1::AcknowledgeRequest {
        framework_id: fw.clone(),
        agent_id: agent.clone(),
        task_id: "t".into(),
        uuid: vec![1, 2],
    });
    assert_eq!(bad.err().map(|s| s.code()), Some(Code::InvalidArgument));
    let unknown_kill = h.m.kill(v1::KillRequest {
        framework_id: fw,
        task_id: "nope".into(),
        ..Default::default()
    });
    assert_eq!(unknown_kill.err().map(|s| s.code()), Some(Code::NotFound));
}

#[test]
fn reregistration_rebuilds_tasks_after_master_restart() {
    let mut h = Harness::new();
    let (tx, mut rx) = mpsc::channel(64);
    let reg = agent_message::Register {
        agent_info: Some(AgentInfo {
            id: "S-old".into(),
            hostname: "h".into(),
            resources: res("cpus:4;mem:1024").to_proto(),
            ..Default::default()
        }),
        tasks: vec![v1::AgentTask {
            task: Some(task("survivor", "cpus:3;mem:100")),
            framework_id: "F-old".into(),
            state: TaskState::TaskRunning as i32,
        }],
        frameworks: vec![FrameworkInfo {
            id: "F-old".into(),
            name: "old".into(),
            role: "*".into(),
            ..Default::default()
        }],
        version: String::new(),
    };
    let (id, _) =
        h.m.register_agent(reg, tx, h.now, 0.0)
            .expect("re-register");
    assert_eq!(id, "S-old");
    assert!(rx.try_recv().is_ok());
    let s = h.m.state_json(0.0, "x");
    assert_eq!(s["tasks"][0]["id"], "survivor");
    assert_eq!(s["tasks"][0]["state"], "TASK_RUNNING");
    // Only what the survivor does not hold is offered to a new framework.
    let fw = h.subscribe("new", &[]);
    let offers = h.offers(&fw);
    assert_eq!(
        Resources::from_proto(&offers[0].resources).expect("valid"),
        res("cpus:1;mem:924")
    );
}

#[test]
fn invalid_registrations_and_subscriptions_are_rejected() {
    let mut h = Harness::new();
    let (tx, _rx) = mpsc::channel(4);
    let no_info =
        h.m.register_agent(agent_message::Register::default(), tx.clone(), h.now, 0.0);
    assert_eq!(no_info.err().map(|s| s.code()), Some(Code::InvalidArgument));
    let empty = agent_message::Register {
        agent_info: Some(AgentInfo::default()),
        ..Default::default()
    };
    assert!(h.m.register_agent(empty, tx, h.now, 0.0).is_err());
    let (ftx, _frx) = mpsc::channel(4);
    for info in [
        FrameworkInfo {
            role: "bad role!".into(),
            ..Default::default()
        },
        FrameworkInfo {
            failover_timeout: f64::NAN,
            ..Default::default()
        },
        FrameworkInfo {
            failover_timeout: -1.0,
            ..Default::default()
        },
    ] {
        assert!(h.m.subscribe(info, ftx.clone(), h.now, 0.0).is_err());
    }
}

#[test]
fn teardown_reaches_agents_where_the_framework_has_no_live_task() {
    // A custom executor outlives its tasks and the master does not track executors: every
    // connected agent must hear of the teardown to shut such an executor down.
    let mut h = Harness::new();
    let (a1, _) = h.add_agent("cpus:1;mem:256");
    let (a2, _) = h.add_agent("cpus:1;mem:256");
    let fw = h.subscribe("f", &[]);
    h.m.teardown(&fw, 0.0).expect("teardown");
    for a in [&a1, &a2] {
        assert!(matches!(
            h.next_agent(a),
            Some(master_message::Message::ShutdownFramework(_))
        ));
    }
}

#[test]
fn teardown_kills_tasks_and_frees_resources() {
    let mut h = Harness::new();
    let (agent, _) = h.add_agent("cpus:2;mem:1024");
    let fw = h.subscribe("f", &[]);
    let o = h.offers(&fw)[0].id.clone();
    h.accept(&fw, &o, vec![task("t", "cpus:2;mem:1024")])
        .expect("accept");
    let _run = h.next_agent(&agent);
    h.m.teardown(&fw, 0.0).expect("teardown");
    assert!(matches!(
        h.next_agent(&agent),
        Some(master_message::Message::ShutdownFramework(_))
    ));
    let g = h.subscribe("g", &[]);
    let offers = h.offers(&g);
    assert_eq!(
        Resources::from_proto(&offers[0].resources).expect("valid"),
        res("cpus:2;mem:1024")
    );
    assert_eq!(
        h.m.teardown("nope", 0.0).err().map(|s| s.code()),
        Some(Code::NotFound)
    );
}

#[test]
fn an_agent_marked_gone_loses_its_tasks_and_cannot_come_back() {
    let mut h = Harness::new();
    let (agent, _) = h.add_agent("cpus:2;mem:1024");
    let fw = h.subscribe("f", &[]);
    let o = h.offers(&fw)[0].id.clone();
    h.accept(&fw, &o, vec![task("t", "cpus:1")])
        .expect("accept");
    let _run = h.next_agent(&agent);
    h.m.mark_agent_gone(&agent, 5.0).expect("mark gone");
    let state = loop {
        match h.next_event(&fw) {
            Some(event::Event::Update(u)) => break u.status.expect("status").state,
            Some(_) => continue,
            None => panic!("no update"),
        }
    };
    assert_eq!(state, TaskState::TaskGoneByOperator as i32);
    let (tx, _rx) = mpsc::channel(4);
    let again = agent_message::Register {
        agent_info: Some(AgentInfo {
            id: agent.clone(),
            hostname: "h".into(),
            resources: res("cpus:2;mem:1024").to_proto(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let err =
        h.m.register_agent(again, tx, h.now, 6.0)
            .expect_err("gone agents are refused");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("gone"), "{}", err.message());
    assert_eq!(
        h.m.mark_agent_gone("nope", 0.0).err().map(|s| s.code()),
        Some(Code::NotFound)
    );
}

#[test]
fn reconciliation_waits_for_agents_that_have_not_reregistered() {
    let mut registry = MemoryRegistry::default();
    registry
        .put_agent(&AgentRecord {
            id: "S-known".into(),
            hostname: "h".into(),
            http_address: String::new(),
            resources: "cpus:1".into(),
            attributes: vec![],
            state: AgentRegistryState::Admitted,
            since: 0.0,
            reservations: Default::default(),
            volumes: Vec::new(),
        })
        .expect("put");
    let mut h = Harness::new();
    h.m = Master::new(StateConfig::default(), "m".into(), Box::new(registry), T0).expect("master");
    let fw = h.subscribe("f", &[]);
    let task = |task_id: &str, agent_id: &str| v1::reconcile_request::Task {
        task_id: task_id.into(),
        agent_id: agent_id.into(),
    };
    h.m.reconcile(
        v1::ReconcileRequest {
            framework_id: fw.clone(),
            tasks: vec![
                task("on-known", "S-known"),
                task("on-stranger", "S-stranger"),
            ],
        },
        1.0,
    )
    .expect("reconcile");
    let mut answered = Vec::new();
    while let Some(e) = h.next_event(&fw) {
        if let event::Event::Update(u) = e {
            let s = u.status.expect("status");
            answered.push((s.task_id, s.state));
        }
    }
    assert_eq!(
        answered,
        vec![("on-stranger".to_string(), TaskState::TaskLost as i32)]
    );
}

// ------------------------------------------------------------------ oversubscription

impl Harness {
    fn slack(&mut self, agent: &str, conn: u64, slack: &str) {
        self.m.agent_message(
            agent,
            conn,
            agent_message::Message::Slack(agent_message::Slack {
                revocable: res(slack).to_proto(),
                used_estimate: Vec::new(),
            }),
            self.now,
            4.0,
        );
    }
}

fn revocable_task(id: &str, resources: &str) -> TaskInfo {
    TaskInfo {
        resources: res(resources).to_proto_with(true),
        ..task(id, resources)
    }
}

fn split(o: &v1::Offer) -> (Resources, Resources) {
    (
        Resources::from_proto(&o.resources).expect("valid"),
        Resources::from_proto_revocable(&o.resources).expect("valid"),
    )
}

#[test]
fn slack_is_offered_only_to_revocable_frameworks_and_outside_drf() {
    let mut h = Harness::new();
    let (agent, conn) = h.add_agent("cpus:4;mem:4096");
    let service = h.subscribe("service", &[]);
    let batch = h.subscribe("batch", &[CAPABILITY_REVOCABLE_RESOURCES]);
    // The service takes the whole agent.
    let offers = h.offers(&service);
    assert_eq!(offers.len(), 1);
    h.accept(
        &service,
        &offers[0].id,
        vec![task("svc", "cpus:4;mem:4096")],
    )
    .expect("accept");
    h.update(&agent, conn, &service, "svc", TaskState::TaskRunning);
    // The agent reports slack: the service uses little of its allocation.
    h.slack(&agent, conn, "cpus:3;mem:2048");
    assert!(
        h.offers(&service).is_empty(),
        "no revocable for non-capable"
    );
    let offers = h.offers(&batch);
    assert_eq!(offers.len(), 1);
    let (plain, rev) = split(&offers[0]);
    assert!(plain.is_empty());
    assert_eq!(rev, res("cpus:3;mem:2048"));
    assert!(offers[0].resources.iter().all(|r| r.revocable));
    // A revocable task launches on it; the DRF shares do not see it.
    h.accept(
        &batch,
        &offers[0].id,
        vec![revocable_task("b1", "cpus:2;mem:1024")],
    )
    .expect("accept revocable");
    assert_eq!(h.m.allocator.framework_allocated(&batch), Resources::new());
    let state = h.m.state_json(0.0, "");
    let a = &state["agents"][0];
    assert_eq!(a["revocable"]["cpus"], 3.0);
    assert_eq!(a["revocable_used"]["cpus"], 2.0);
    let text = h.m.metrics_text(Duration::ZERO);
    assert!(
        text.contains("brim_master_cpus_revocable_total 3"),
        "{text}"
    );
    assert!(text.contains("brim_master_cpus_revocable_used 2"), "{text}");
    // The unused revocable part is refused for the default time, then re-offered.
    h.now += Duration::from_secs(6);
    let offers = h.offers(&batch);
    assert_eq!(split(&offers[0]).1, res("cpus:1;mem:1024"));
    // The task finishes: its revocable share comes back.
    h.update(&agent, conn, &batch, "b1", TaskState::TaskFinished);
    let state = h.m.state_json(0.0, "");
    assert_eq!(state["agents"][0]["revocable_used"]["cpus"], Value::Null);
    let again = h.offers(&batch);
    assert_eq!(split(&again[0]).1, res("cpus:2;mem:1024"));
}

use serde_json::Value;

#[test]
fn shrinking_slack_rescinds_revocable_offers_and_they_cannot_be_accepted() {
    let mut h = Harness::new();
    let (agent, conn) = h.add_agent("cpus:4;mem:4096");
    let batch = h.subscribe("batch", &[CAPABILITY_REVOCABLE_RESOURCES]);
    // Plain resources first (they are unallocated), then slack as a separate offer.
    let plain = h.offers(&batch);
    assert_eq!(plain.len(), 1);
    h.slack(&agent, conn, "cpus:2;mem:1024");
    let offers = h.offers(&batch);
    assert_eq!(offers.len(), 1);
    let rev_offer = offers[0].id.clone();
    h.slack(&agent, conn, "cpus:0.5;mem:1024");
    let mut rescinded = false;
    let mut reoffered = Vec::new();
    h.m.allocate_pending(h.now);
    while let Some(e) = h.next_event(&batch) {
        match e {
            event::Event::Rescind(r) => {
                assert_eq!(r.offer_id, rev_offer);
                rescinded = true;
            }
            event::Event::Offers(o) => reoffered.extend(o.offers),
            _ => {}
        }
    }
    assert!(rescinded, "the revocable offer is rescinded");
    assert_eq!(reoffered.len(), 1);
    assert_eq!(split(&reoffered[0]).1, res("cpus:0.5;mem:1024"));
    // The plain offer is untouched.
    assert!(h.m.offers.contains_key(&plain[0].id));
    let err = h
        .accept(
            &batch,
            &rev_offer,
            vec![revocable_task("b1", "cpus:1;mem:10")],
        )
        .expect_err("rescinded offer");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    // Asking for revocable resources from a plain offer fails clearly.
    let err = h
        .accept(
            &batch,
            &plain[0].id,
            vec![revocable_task("b2", "cpus:1;mem:10")],
        )
        .expect_err("plain offer has no revocable");
    assert!(err.message().contains("revocable"), "{err:?}");
    // More than the revocable offer holds fails too and changes nothing.
    let err = h
        .accept(
            &batch,
            &reoffered[0].id,
            vec![revocable_task("b3", "cpus:1;mem:10")],
        )
        .expect_err("too much");
    assert!(err.message().contains("revocable"), "{err:?}");
    h.accept(
        &batch,
        &reoffered[0].id,
        vec![revocable_task("b3", "cpus:0.5;mem:10")],
    )
    .expect("fits");
}

#[test]
fn reregistration_restores_revocable_tasks_into_the_pool() {
    let mut h = Harness::new();
    let (agent, conn) = h.add_agent("cpus:4;mem:4096");
    let batch = h.subscribe("batch", &[CAPABILITY_REVOCABLE_RESOURCES]);
    let _ = h.offers(&batch);
    h.slack(&agent, conn, "cpus:2;mem:1024");
    let offers = h.offers(&batch);
    h.accept(
        &batch,
        &offers[0].id,
        vec![revocable_task("b1", "cpus:2;mem:1024")],
    )
    .expect("accept");
    // The agent reconnects with its task (e.g. after a master failover).
    let (tx, rx) = mpsc::channel(64);
    let reg = agent_message::Register {
        agent_info: Some(AgentInfo {
            id: agent.clone(),
            hostname: "host".into(),
            http_address: "127.0.0.1:5051".into(),
            resources: res("cpus:4;mem:4096").to_proto(),
            ..Default::default()
        }),
        tasks: vec![v1::AgentTask {
            task: Some(revocable_task("b1", "cpus:2;mem:1024")),
            framework_id: batch.clone(),
            state: TaskState::TaskRunning as i32,
        }],
        ..Default::default()
    };
    let (_, conn) =
        h.m.register_agent(reg, tx, h.now, 5.0)
            .expect("re-register");
    h.agent_rx.insert(agent.clone(), rx);
    h.slack(&agent, conn, "cpus:2;mem:1024");
    // Everything of the slack is held by the task: nothing revocable to offer.
    h.now += Duration::from_secs(10);
    assert!(h.offers(&batch).iter().all(|o| split(o).1.is_empty()));
    let state = h.m.state_json(0.0, "");
    assert_eq!(state["agents"][0]["revocable_used"]["cpus"], 2.0);
    // Invalid slack reports are ignored, never a panic.
    h.m.agent_message(
        &agent,
        conn,
        agent_message::Message::Slack(agent_message::Slack {
            revocable: vec![v1::Resource {
                name: "cpus".into(),
                value: Some(v1::resource::Value::Scalar(f64::NAN)),
                revocable: false,
                ..Default::default()
            }],
            used_estimate: Vec::new(),
        }),
        h.now,
        6.0,
    );
    assert_eq!(
        h.m.state_json(0.0, "")["agents"][0]["revocable"]["cpus"],
        2.0
    );
}

// ---- dynamic reservations ----

fn subscribe_role(h: &mut Harness, name: &str, role: &str) -> String {
    let (tx, rx) = mpsc::channel(64);
    let info = FrameworkInfo {
        name: name.into(),
        role: role.into(),
        ..Default::default()
    };
    let (id, _) = h.m.subscribe(info, tx, h.now, 1.0).expect("subscribe");
    h.fw_rx.insert(id.clone(), rx);
    assert!(matches!(
        h.next_event(&id),
        Some(event::Event::Subscribed(_))
    ));
    id
}

fn reserved_wire(s: &str, role: &str) -> Vec<v1::Resource> {
    res(s).to_proto_reserved(role, "")
}

fn ops(fw: &str, offer: &str, operations: Vec<operation::Operation>) -> v1::AcceptRequest {
    v1::AcceptRequest {
        framework_id: fw.into(),
        offer_ids: vec![offer.into()],
        operations: operations
            .into_iter()
            .map(|o| v1::Operation { operation: Some(o) })
            .collect(),
        filters: Some(v1::Filters {
            refuse_seconds: Some(0.0),
        }),
    }
}

fn reserve_op(s: &str, role: &str) -> operation::Operation {
    operation::Operation::Reserve(operation::Reserve {
        resources: reserved_wire(s, role),
    })
}

fn split_reserved(o: &v1::Offer) -> (Resources, BTreeMap<String, Resources>) {
    (
        Resources::from_proto_unreserved(&o.resources).expect("valid"),
        Resources::from_proto_reserved(&o.resources).expect("valid"),
    )
}

#[test]
fn reserve_launch_unreserve_and_survive_a_master_restart() {
    let mut h = Harness::new();
    let (agent, _conn) = h.add_agent("cpus:4;mem:4096");
    let db = subscribe_role(&mut h, "db", "db");
    let offers = h.offers(&db);
    assert_eq!(offers.len(), 1);
    // RESERVE then LAUNCH on the reservation, in one ACCEPT (Mesos order semantics).
    let mut t = task("t1", "cpus:0");
    t.resources = reserved_wire("cpus:1;mem:512", "db");
    h.m.accept(
        ops(
            &db,
            &offers[0].id,
            vec![
                reserve_op("cpus:2;mem:1024", "db"),
                operation::Operation::Launch(operation::Launch {
                    task_infos: vec![t],
                }),
            ],
        ),
        h.now,
        2.0,
    )
    .expect("accept");
    assert!(matches!(
        h.next_agent(&agent),
        Some(master_message::Message::RunTask(_))
    ));
    let record = &h.m.registry.load().expect("load").agents[&agent];
    assert_eq!(
        record.reservations["db"],
        res("cpus:2;mem:1024").to_string()
    );
    let state = h.m.state_json(0.0, "");
    assert_eq!(state["agents"][0]["reserved"]["db"]["cpus"], 2.0);
    assert_eq!(state["agents"][0]["unreserved"]["cpus"], 2.0);
    let mesos = crate::mesos::mesos_state(&state);
    assert_eq!(
        mesos["slaves"][0]["reserved_resources"]["db"]["mem"],
        1024.0
    );
    assert_eq!(mesos["slaves"][0]["unreserved_resources"]["mem"], 3072.0);
    // A framework of another role never sees the reservation.
    let web = subscribe_role(&mut h, "web", "web");
    h.m.suppress(&db).expect("suppress");
    let offers = h.offers(&web);
    assert_eq!(offers.len(), 1);
    let (unreserved, reserved) = split_reserved(&offers[0]);
    assert_eq!(unreserved, res("cpus:2;mem:3072"));
    assert!(reserved.is_empty());
    h.m.decline(
        v1::DeclineRequest {
            framework_id: web.clone(),
            offer_ids: vec![offers[0].id.clone()],
            filters: Some(v1::Filters {
                refuse_seconds: Some(1000.0),
            }),
        },
        h.now,
    )
    .expect("decline");
    h.m.revive(&db).expect("revive");
    let offers = h.offers(&db);
    assert_eq!(offers.len(), 1);
    let (unreserved, reserved) = split_reserved(&offers[0]);
    assert_eq!(unreserved, res("cpus:2;mem:3072"));
    assert_eq!(
        reserved["db"],
        res("cpus:1;mem:512"),
        "the task holds the rest"
    );
    // Bad reservation calls are refused and change nothing.
    for (bad, why) in [
        (reserve_op("cpus:1", "web"), "framework's role"),
        (reserve_op("cpus:3", "db"), "unreserved is left"),
        (
            operation::Operation::Unreserve(operation::Unreserve {
                resources: reserved_wire("cpus:2", "db"),
            }),
            "reserved for role `db` is left",
        ),
        (
            operation::Operation::Reserve(operation::Reserve { resources: vec![] }),
            "no resources",
        ),
    ] {
        let err =
            h.m.accept(ops(&db, &offers[0].id, vec![bad]), h.now, 2.0)
                .expect_err("refused");
        assert!(err.message().contains(why), "{why}: {}", err.message());
    }
    // UNRESERVE what is free of the reservation: the registry follows.
    h.m.accept(
        ops(
            &db,
            &offers[0].id,
            vec![operation::Operation::Unreserve(operation::Unreserve {
                resources: reserved_wire("cpus:1;mem:512", "db"),
            })],
        ),
        h.now,
        2.0,
    )
    .expect("unreserve");
    let snapshot = h.m.registry.load().expect("load");
    assert_eq!(
        snapshot.agents[&agent].reservations["db"],
        res("cpus:1;mem:512").to_string()
    );

    // A new master from the same registry: the agent re-registers with its task on the
    // reservation; the reservation and what the task holds of it are back.
    let mut registry = MemoryRegistry::default();
    for a in snapshot.agents.values() {
        registry.put_agent(a).expect("put");
    }
    for f in snapshot.frameworks.values() {
        registry.put_framework(f).expect("put");
    }
    let mut h2 = Harness::new();
    h2.m =
        Master::new(StateConfig::default(), "m2".into(), Box::new(registry), T0).expect("master");
    let (tx, _rx) = mpsc::channel(64);
    let mut running = task("t1", "cpus:0");
    running.resources = reserved_wire("cpus:1;mem:512", "db");
    h2.m.register_agent(
        agent_message::Register {
            agent_info: Some(AgentInfo {
                id: agent.clone(),
                hostname: "host".into(),
                resources: res("cpus:4;mem:4096").to_proto(),
                ..Default::default()
            }),
            tasks: vec![v1::AgentTask {
                task: Some(running),
                framework_id: db.clone(),
                state: TaskState::TaskRunning as i32,
            }],
            ..Default::default()
        },
        tx,
        T0,
        5.0,
    )
    .expect("re-register");
    assert_eq!(
        h2.m.allocator.agent_reservations(&agent),
        vec![("db".to_string(), res("cpus:1;mem:512"))]
    );
    assert_eq!(
        h2.m.allocator.framework_allocated(&db),
        res("cpus:1;mem:512")
    );
}

#[test]
fn frameworks_of_role_star_cannot_reserve_and_tasks_cannot_use_other_roles() {
    let mut h = Harness::new();
    h.add_agent("cpus:4;mem:4096");
    let star = h.subscribe("star", &[]);
    let offers = h.offers(&star);
    let err =
        h.m.accept(
            ops(&star, &offers[0].id, vec![reserve_op("cpus:1", "*")]),
            h.now,
            2.0,
        )
        .expect_err("refused");
    assert!(
        err.message().contains("role `*` cannot reserve"),
        "{}",
        err.message()
    );
    let mut t = task("t1", "cpus:0");
    t.resources = reserved_wire("cpus:1;mem:64", "db");
    let err = h
        .accept(&star, &offers[0].id, vec![t])
        .expect_err("refused");
    assert!(
        err.message().contains("reserved for role `db`"),
        "{}",
        err.message()
    );
    assert!(h.m.offers.contains_key(&offers[0].id), "nothing changed");
}

// ---- persistent volumes ----

fn volume_wire(id: &str, path: &str, disk: f64) -> v1::Resource {
    v1::Resource {
        name: "disk".into(),
        value: Some(v1::resource::Value::Scalar(disk)),
        reservation_role: "db".into(),
        volume: Some(v1::Volume {
            persistence_id: id.into(),
            container_path: path.into(),
        }),
        ..Default::default()
    }
}

fn offered_volumes(o: &v1::Offer) -> Vec<String> {
    o.resources
        .iter()
        .filter_map(|r| r.volume.as_ref().map(|v| v.persistence_id.clone()))
        .collect()
}

#[test]
fn volumes_are_created_offered_back_used_and_destroyed() {
    let mut h = Harness::new();
    let (agent, conn) = h.add_agent("cpus:4;mem:4096;disk:1000");
    let db = subscribe_role(&mut h, "db", "db");
    let offers = h.offers(&db);
    let create = |id: &str, path: &str, disk: f64| {
        operation::Operation::Create(operation::Create {
            volumes: vec![volume_wire(id, path, disk)],
        })
    };
    // CREATE needs reserved disk outside other volumes; bad volumes are refused first.
    for (ops_list, why) in [
        (vec![create("v1", "data", 100.0)], "outside volumes"),
        (
            vec![reserve_op("disk:100", "db"), create("v1", "../x", 100.0)],
            "relative path",
        ),
        (
            vec![reserve_op("disk:100", "db"), create("../v", "data", 100.0)],
            "persistence id",
        ),
        (
            vec![reserve_op("disk:100", "db"), create("v1", "data", 150.0)],
            "outside volumes",
        ),
    ] {
        let err =
            h.m.accept(ops(&db, &offers[0].id, ops_list), h.now, 2.0)
                .expect_err("refused");
        assert!(err.message().contains(why), "{why}: {}", err.message());
    }
    let mut writer = task("writer", "cpus:0");
    let mut uses = reserved_wire("cpus:1;mem:64", "db");
    uses.push(volume_wire("v1", "data", 100.0));
    writer.resources = uses.clone();
    h.m.accept(
        ops(
            &db,
            &offers[0].id,
            vec![
                reserve_op("cpus:1;mem:64;disk:300", "db"),
                create("v1", "data", 100.0),
                operation::Operation::Launch(operation::Launch {
                    task_infos: vec![writer],
                }),
            ],
        ),
        h.now,
        2.0,
    )
    .expect("reserve + create + launch");
    let rec = h.m.registry.load().expect("load").agents[&agent].clone();
    assert_eq!(rec.volumes.len(), 1);
    assert_eq!(rec.volumes[0].persistence_id, "v1");
    // While the writer runs, the volume is not offered; plain reserved disk is.
    let offers = h.offers(&db);
    assert!(offered_volumes(&offers[0]).is_empty());
    let (_, reserved) = split_reserved(&offers[0]);
    assert_eq!(reserved["db"], res("disk:200"));
    h.m.decline(
        v1::DeclineRequest {
            framework_id: db.clone(),
            offer_ids: vec![offers[0].id.clone()],
            filters: Some(v1::Filters {
                refuse_seconds: Some(0.0),
            }),
        },
        h.now,
    )
    .expect("decline");
    h.update(&agent, conn, &db, "writer", TaskState::TaskFinished);
    let offers = h.offers(&db);
    assert_eq!(offered_volumes(&offers[0]), vec!["v1".to_string()]);
    // Plain reserved resources cannot be taken out of the volume's disk.
    let mut greedy = task("greedy", "cpus:0");
    greedy.resources = reserved_wire("cpus:1;mem:64;disk:250", "db");
    let err = h
        .accept(&db, &offers[0].id, vec![greedy])
        .expect_err("refused");
    assert!(
        err.message().contains("persistent volumes"),
        "{}",
        err.message()
    );
    // A volume the offers do not carry cannot be used or destroyed.
    let mut wrong = task("wrong", "cpus:0");
    let mut w = reserved_wire("cpus:1;mem:64", "db");
    w.push(volume_wire("v2", "data", 100.0));
    wrong.resources = w;
    assert!(h.accept(&db, &offers[0].id, vec![wrong]).is_err());
    // DESTROY: the registry forgets it, the agent is told to remove its directory.
    h.m.accept(
        ops(
            &db,
            &offers[0].id,
            vec![operation::Operation::Destroy(operation::Destroy {
                volumes: vec![volume_wire("v1", "data", 100.0)],
            })],
        ),
        h.now,
        2.0,
    )
    .expect("destroy");
    assert!(h.m.registry.load().expect("load").agents[&agent]
        .volumes
        .is_empty());
    let mut told = false;
    while let Some(m) = h.next_agent(&agent) {
        if let master_message::Message::DestroyVolume(d) = m {
            assert_eq!((d.role.as_str(), d.persistence_id.as_str()), ("db", "v1"));
            told = true;
        }
    }
    assert!(told, "the agent is told to remove the volume");
    assert_eq!(
        h.m.allocator.agent_reservations(&agent),
        vec![("db".to_string(), res("cpus:1;mem:64;disk:300"))],
        "the disk stays reserved"
    );
}

#[test]
fn messages_go_both_ways_and_bad_ones_are_refused() {
    let mut h = Harness::new();
    let (agent, conn) = h.add_agent("cpus:1;mem:512");
    let fw = h.subscribe("f", &[]);
    let req = |agent_id: &str, executor_id: &str| v1::MessageRequest {
        framework_id: fw.clone(),
        agent_id: agent_id.into(),
        executor_id: executor_id.into(),
        data: b"ping".to_vec(),
    };
    h.m.message(req(&agent, "e1")).expect("message");
    match h.next_agent(&agent) {
        Some(master_message::Message::FrameworkMessage(m)) => {
            assert_eq!((m.executor_id.as_str(), &m.data[..]), ("e1", &b"ping"[..]))
        }
        other => panic!("expected a framework message, got {other:?}"),
    }
    assert_eq!(
        h.m.message(req("nope", "e1")).err().map(|s| s.code()),
        Some(Code::NotFound)
    );
    assert_eq!(
        h.m.message(req(&agent, "")).err().map(|s| s.code()),
        Some(Code::InvalidArgument)
    );
    h.m.agent_message(
        &agent,
        conn,
        agent_message::Message::ExecutorMessage(agent_message::ExecutorMessage {
            framework_id: fw.clone(),
            executor_id: "e1".into(),
            data: b"pong".to_vec(),
        }),
        h.now,
        1.0,
    );
    match h.next_event(&fw) {
        Some(event::Event::Message(m)) => assert_eq!(
            (m.agent_id.as_str(), m.executor_id.as_str(), &m.data[..]),
            (agent.as_str(), "e1", &b"pong"[..])
        ),
        other => panic!("expected a message event, got {other:?}"),
    }
    // For an unknown framework: dropped, nothing breaks.
    h.m.agent_message(
        &agent,
        conn,
        agent_message::Message::ExecutorMessage(agent_message::ExecutorMessage {
            framework_id: "gone".into(),
            executor_id: "e1".into(),
            data: vec![],
        }),
        h.now,
        1.0,
    );
}

fn group_op(
    executor: &str,
    kind: v1::executor_info::Type,
    tasks: Vec<TaskInfo>,
) -> operation::Operation {
    operation::Operation::LaunchGroup(operation::LaunchGroup {
        executor: Some(v1::ExecutorInfo {
            executor_id: executor.into(),
            r#type: kind as i32,
            ..Default::default()
        }),
        task_group: Some(v1::TaskGroup { tasks }),
    })
}

#[test]
fn a_task_group_goes_to_the_agent_as_one_message_or_not_at_all() {
    let mut h = Harness::new();
    let (agent, _) = h.add_agent("cpus:2;mem:1024");
    let fw = h.subscribe("pods", &[]);
    let offer = h.offers(&fw).remove(0);
    let default = v1::executor_info::Type::Default;
    // Refused as a whole, nothing changes: more than offered, a DEFAULT executor with a
    // command, a CUSTOM one without, an empty group, a task without a command.
    let too_big = group_op(
        "p",
        default,
        vec![task("a", "cpus:1.5"), task("b", "cpus:1")],
    );
    let e =
        h.m.accept(ops(&fw, &offer.id, vec![too_big]), h.now, 2.0)
            .expect_err("over the offer");
    assert!(e.message().contains("task b asks for"), "{}", e.message());
    let mut with_cmd = group_op("p", default, vec![task("a", "cpus:0.5")]);
    if let operation::Operation::LaunchGroup(g) = &mut with_cmd {
        if let Some(e) = g.executor.as_mut() {
            e.command = Some(v1::CommandInfo {
                value: "x".into(),
                ..Default::default()
            });
        }
    }
    for (op, why) in [
        (with_cmd, "DEFAULT executor has no command"),
        (
            group_op(
                "p",
                v1::executor_info::Type::Custom,
                vec![task("a", "cpus:0.5")],
            ),
            "CUSTOM executor needs a command",
        ),
        (group_op("p", default, vec![]), "has no tasks"),
        (
            group_op(
                "p",
                default,
                vec![TaskInfo {
                    command: None,
                    ..task("a", "cpus:0.5")
                }],
            ),
            "has no command",
        ),
    ] {
        let e =
            h.m.accept(ops(&fw, &offer.id, vec![op]), h.now, 2.0)
                .expect_err(why);
        assert!(e.message().contains(why), "{why}: {}", e.message());
    }
    assert!(h.next_agent(&agent).is_none(), "nothing was sent");
    // A valid group: one RunTaskGroup, every task carrying the group's executor.
    let group = group_op(
        "web",
        default,
        vec![task("a", "cpus:0.5"), task("b", "cpus:0.5")],
    );
    h.m.accept(ops(&fw, &offer.id, vec![group]), h.now, 2.0)
        .expect("launch group");
    match h.next_agent(&agent) {
        Some(master_message::Message::RunTaskGroup(g)) => {
            assert_eq!(
                g.executor.as_ref().map(|e| e.executor_id.as_str()),
                Some("web")
            );
            assert_eq!(g.tasks.len(), 2);
            assert!(g
                .tasks
                .iter()
                .all(|t| t.executor == g.executor && t.agent_id == agent));
        }
        other => panic!("expected one RunTaskGroup, got {other:?}"),
    }
    assert!(h.next_agent(&agent).is_none(), "one message for the group");
    assert_eq!(h.m.tasks.len(), 2);
    // The executor id names one running group per framework.
    let offer = h.offers(&fw).remove(0);
    let again = group_op("web", default, vec![task("c", "cpus:0.5")]);
    let e =
        h.m.accept(ops(&fw, &offer.id, vec![again]), h.now, 2.0)
            .expect_err("executor id in use");
    assert!(e.message().contains("already in use"), "{}", e.message());
}
