//! Mesos v1 scheduler HTTP API conformance: the exchanges of the Mesos documentation
//! ("Scheduler HTTP API": SUBSCRIBE, ACCEPT/LAUNCH, DECLINE, KILL, ACKNOWLEDGE, RECONCILE, …)
//! replayed against an in-process master with a fake agent, asserting status codes, headers
//! and the exact field layout of events; then bad input (content types, malformed JSON,
//! stream ids, failover, disconnects, oversized bodies) with Mesos's errors.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use brim_master::mesos::recordio;
use brim_proto::v1::{
    self, agent_message, agent_service_client::AgentServiceClient, master_message,
    scheduler_client::SchedulerClient, AgentMessage, TaskState, TaskStatusSource,
};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

const T: Duration = Duration::from_secs(10);

async fn start() -> (brim_master::RunningMaster, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let addr: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let mut config = brim_master::MasterConfig::new(addr, dir.path().to_path_buf());
    config.allocation_interval = Duration::from_millis(100);
    let m = brim_master::start(config).await.expect("master starts");
    (m, dir)
}

// ------------------------------------------------------------------------ fake agent

/// What the master told the fake agent.
#[derive(Debug)]
#[allow(dead_code)] // fields are read through Debug in `agent_saw`
enum AgentSaw {
    Run(String),
    /// A task's brim container (task id, its `ContainerInfo`), after its `Run`.
    Container(String, v1::ContainerInfo),
    Kill(String),
    Ack(String, Vec<u8>),
    Shutdown(String),
    Message(String, Vec<u8>),
}

/// Registers an agent with cpus:2;mem:1024;ports:[31000-31009] and attributes rack:r1,
/// level:3; it runs every task (TASK_RUNNING with a uuid) and kills on request.
async fn fake_agent(addr: SocketAddr) -> mpsc::UnboundedReceiver<AgentSaw> {
    let mut client = AgentServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("agent connects");
    let (tx, rx) = mpsc::channel::<AgentMessage>(64);
    let resources = brim_proto::Resources::parse("cpus:2;mem:1024;disk:1024;ports:[31000-31009]")
        .expect("resources")
        .to_proto();
    tx.send(AgentMessage {
        message: Some(agent_message::Message::Register(agent_message::Register {
            agent_info: Some(v1::AgentInfo {
                hostname: "agent-host".into(),
                http_address: "127.0.0.1:5051".into(),
                resources,
                attributes: vec![
                    v1::Attribute {
                        name: "rack".into(),
                        value: "r1".into(),
                    },
                    v1::Attribute {
                        name: "level".into(),
                        value: "3".into(),
                    },
                ],
                ..Default::default()
            }),
            ..Default::default()
        })),
    })
    .await
    .expect("register queued");
    let mut inbound = client
        .attach(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("attach")
        .into_inner();
    let (saw_tx, saw_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut agent_id = String::new();
        while let Ok(Some(msg)) = inbound.message().await {
            let status = |fw: &str, task: &str, state: TaskState, agent: &str| AgentMessage {
                message: Some(agent_message::Message::StatusUpdate(
                    agent_message::StatusUpdate {
                        status: Some(v1::TaskStatus {
                            task_id: task.into(),
                            state: state as i32,
                            source: TaskStatusSource::SourceExecutor as i32,
                            agent_id: agent.into(),
                            framework_id: fw.into(),
                            timestamp: 1.0,
                            uuid: uuid::Uuid::new_v4().as_bytes().to_vec(),
                            ..Default::default()
                        }),
                    },
                )),
            };
            match msg.message {
                Some(master_message::Message::Registered(r)) => agent_id = r.agent_id,
                Some(master_message::Message::RunTask(r)) => {
                    let task = r.task.unwrap_or_default();
                    let fw = r.framework.unwrap_or_default().id;
                    let _ = saw_tx.send(AgentSaw::Run(task.task_id.clone()));
                    if let Some(c) = &task.container {
                        let _ = saw_tx.send(AgentSaw::Container(task.task_id.clone(), c.clone()));
                    }
                    let _ = tx
                        .send(status(
                            &fw,
                            &task.task_id,
                            TaskState::TaskRunning,
                            &agent_id,
                        ))
                        .await;
                }
                Some(master_message::Message::KillTask(k)) => {
                    let _ = saw_tx.send(AgentSaw::Kill(k.task_id.clone()));
                    let _ = tx
                        .send(status(
                            &k.framework_id,
                            &k.task_id,
                            TaskState::TaskKilled,
                            &agent_id,
                        ))
                        .await;
                }
                Some(master_message::Message::Acknowledge(a)) => {
                    let _ = saw_tx.send(AgentSaw::Ack(a.task_id, a.uuid));
                }
                Some(master_message::Message::ShutdownFramework(s)) => {
                    let _ = saw_tx.send(AgentSaw::Shutdown(s.framework_id));
                }
                Some(master_message::Message::FrameworkMessage(m)) => {
                    // The executor answers every framework message.
                    let mut reply = b"pong:".to_vec();
                    reply.extend_from_slice(&m.data);
                    let _ = saw_tx.send(AgentSaw::Message(m.executor_id.clone(), m.data));
                    let _ = tx
                        .send(AgentMessage {
                            message: Some(agent_message::Message::ExecutorMessage(
                                agent_message::ExecutorMessage {
                                    framework_id: m.framework_id,
                                    executor_id: m.executor_id,
                                    data: reply,
                                },
                            )),
                        })
                        .await;
                }
                _ => {}
            }
        }
    });
    saw_rx
}

async fn agent_saw(rx: &mut mpsc::UnboundedReceiver<AgentSaw>, what: &str) -> AgentSaw {
    loop {
        let got = tokio::time::timeout(T, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("agent never saw {what}"))
            .unwrap_or_else(|| panic!("agent stream ended before {what}"));
        if format!("{got:?}").starts_with(what) {
            return got;
        }
    }
}

// ------------------------------------------------------------------------ raw HTTP

struct HttpReply {
    status: u16,
    #[allow(dead_code)] // kept for debugging failed assertions
    headers: HashMap<String, String>,
    body: String,
}

fn request(path: &str, headers: &[(&str, &str)], body: &[u8], method: &str) -> Vec<u8> {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: brim\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

fn parse_head(head: &str) -> (u16, HashMap<String, String>) {
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers)
}

async fn send(addr: SocketAddr, method: &str, headers: &[(&str, &str)], body: &[u8]) -> HttpReply {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    // The master may answer (413) and close before an oversized body is fully written.
    let _ = s
        .write_all(&request("/api/v1/scheduler", headers, body, method))
        .await;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match tokio::time::timeout(T, s.read(&mut chunk))
            .await
            .expect("reply in time")
        {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n").expect("http reply");
    let (status, headers) = parse_head(head);
    HttpReply {
        status,
        headers,
        body: body.to_string(),
    }
}

const JSON: (&str, &str) = ("Content-Type", "application/json");

async fn call(addr: SocketAddr, stream_id: &str, body: Value) -> HttpReply {
    send(
        addr,
        "POST",
        &[JSON, ("Mesos-Stream-Id", stream_id)],
        body.to_string().as_bytes(),
    )
    .await
}

/// A SUBSCRIBE stream: chunked transfer encoding carrying RecordIO-framed JSON events.
struct EventStream {
    sock: TcpStream,
    raw: Vec<u8>,
    records: recordio::Decoder,
    ready: std::collections::VecDeque<Value>,
    stream_id: String,
    headers: HashMap<String, String>,
    ended: bool,
}

impl EventStream {
    async fn open(addr: SocketAddr, body: Value) -> Result<EventStream, HttpReply> {
        let mut sock = TcpStream::connect(addr).await.expect("connect");
        sock.write_all(&request(
            "/api/v1/scheduler",
            &[JSON, ("Accept", "application/json")],
            body.to_string().as_bytes(),
            "POST",
        ))
        .await
        .expect("write");
        let mut raw = Vec::new();
        let head_end = loop {
            if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            let mut buf = [0u8; 4096];
            let n = tokio::time::timeout(T, sock.read(&mut buf))
                .await
                .expect("headers in time")
                .expect("read");
            assert!(n > 0, "connection closed before headers");
            raw.extend_from_slice(&buf[..n]);
        };
        let head = String::from_utf8_lossy(&raw[..head_end]).to_string();
        let (status, headers) = parse_head(&head);
        let rest = raw[head_end + 4..].to_vec();
        if status != 200 {
            let mut body = rest;
            let _ = tokio::time::timeout(T, sock.read_to_end(&mut body)).await;
            return Err(HttpReply {
                status,
                headers,
                body: String::from_utf8_lossy(&body).to_string(),
            });
        }
        Ok(EventStream {
            sock,
            raw: rest,
            records: recordio::Decoder::new(1 << 20),
            ready: Default::default(),
            stream_id: headers.get("mesos-stream-id").cloned().unwrap_or_default(),
            headers,
            ended: false,
        })
    }

    /// Decodes whole chunks from `raw` into records.
    fn dechunk(&mut self) {
        loop {
            let Some(nl) = self.raw.windows(2).position(|w| w == b"\r\n") else {
                return;
            };
            let size = usize::from_str_radix(
                std::str::from_utf8(&self.raw[..nl])
                    .expect("chunk size")
                    .trim(),
                16,
            )
            .expect("hex chunk size");
            if size == 0 {
                self.ended = true;
                return;
            }
            if self.raw.len() < nl + 2 + size + 2 {
                return;
            }
            let data = self.raw[nl + 2..nl + 2 + size].to_vec();
            self.raw.drain(..nl + 2 + size + 2);
            for r in self.records.feed(&data).expect("valid RecordIO") {
                self.ready
                    .push_back(serde_json::from_slice(&r).expect("event is JSON"));
            }
        }
    }

    /// Next event (any type), or None when the stream ended.
    async fn next(&mut self) -> Option<Value> {
        loop {
            self.dechunk();
            if let Some(v) = self.ready.pop_front() {
                return Some(v);
            }
            if self.ended {
                return None;
            }
            let mut buf = [0u8; 8192];
            let n = tokio::time::timeout(T, self.sock.read(&mut buf))
                .await
                .expect("event in time")
                .ok()?;
            if n == 0 {
                return None;
            }
            self.raw.extend_from_slice(&buf[..n]);
        }
    }

    /// Next event of `kind`, skipping others (HEARTBEAT, OFFERS, …).
    async fn expect(&mut self, kind: &str) -> Value {
        loop {
            match self.next().await {
                Some(e) if e["type"] == kind => return e,
                Some(_) => continue,
                None => panic!("stream ended before a {kind} event"),
            }
        }
    }
}

fn subscribe_body(extra: Value) -> Value {
    // The SUBSCRIBE request of the Mesos docs.
    let mut fi = json!({
        "user": "foo",
        "name": "Example HTTP Framework",
        "roles": ["test"],
        "capabilities": [{"type": "MULTI_ROLE"}]
    });
    if let (Some(fi), Some(extra)) = (fi.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            fi.insert(k.clone(), v.clone());
        }
    }
    json!({"type": "SUBSCRIBE", "subscribe": {"framework_info": fi}})
}

fn fw(id: &str) -> Value {
    json!({ "value": id })
}

// ---------------------------------------------------------------------- conformance

#[tokio::test]
async fn mesos_doc_exchanges_round_trip() {
    let (m, _dir) = start().await;
    let addr = m.addr();
    let mut agent = fake_agent(addr).await;

    // SUBSCRIBE → 200, chunked RecordIO, Mesos-Stream-Id, SUBSCRIBED first.
    let mut s = EventStream::open(addr, subscribe_body(json!({})))
        .await
        .unwrap_or_else(|r| panic!("subscribe failed: {} {}", r.status, r.body));
    assert_eq!(s.headers["content-type"], "application/json");
    assert_eq!(s.headers["transfer-encoding"], "chunked");
    assert_eq!(s.stream_id.len(), 36, "stream id is a UUID");
    let sub = s.next().await.expect("first event");
    assert_eq!(sub["type"], "SUBSCRIBED");
    let framework_id = sub["subscribed"]["framework_id"]["value"]
        .as_str()
        .expect("framework_id.value")
        .to_string();
    assert!(sub["subscribed"]["heartbeat_interval_seconds"].is_number());
    let mi = &sub["subscribed"]["master_info"];
    for k in ["id", "ip", "port", "hostname", "version", "address"] {
        assert!(mi.get(k).is_some(), "master_info.{k} missing: {mi}");
    }
    assert_eq!(
        mi["ip"],
        json!(16_777_343u32),
        "127.0.0.1 as Mesos's integer"
    );
    assert_eq!(mi["port"], json!(addr.port()));

    // OFFERS with the Mesos Offer layout.
    let ev = s.expect("OFFERS").await;
    let offer = &ev["offers"]["offers"][0];
    let offer_id = offer["id"]["value"].as_str().expect("offer id").to_string();
    let agent_id = offer["agent_id"]["value"]
        .as_str()
        .expect("agent id")
        .to_string();
    assert_eq!(offer["framework_id"]["value"], framework_id.as_str());
    assert_eq!(offer["hostname"], "agent-host");
    assert_eq!(offer["url"]["scheme"], "http");
    assert_eq!(offer["url"]["address"]["port"], 5051);
    assert_eq!(offer["allocation_info"]["role"], "test");
    let res: HashMap<&str, &Value> = offer["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .map(|r| (r["name"].as_str().expect("name"), r))
        .collect();
    assert_eq!(res["cpus"]["type"], "SCALAR");
    assert_eq!(res["cpus"]["scalar"]["value"], 2.0);
    assert_eq!(res["cpus"]["role"], "*");
    assert_eq!(res["cpus"]["allocation_info"]["role"], "test");
    assert!(res["cpus"].get("revocable").is_none());
    assert_eq!(res["ports"]["type"], "RANGES");
    assert_eq!(
        res["ports"]["ranges"]["range"][0],
        json!({"begin": 31000, "end": 31009})
    );
    let attrs = offer["attributes"].as_array().expect("attributes");
    assert!(attrs.contains(&json!({"name": "rack", "type": "TEXT", "text": {"value": "r1"}})));
    assert!(attrs.contains(&json!({"name": "level", "type": "SCALAR", "scalar": {"value": 3.0}})));

    // ACCEPT with a LAUNCH operation, as in the docs → 202; the agent runs the task.
    let accept = json!({
        "framework_id": fw(&framework_id),
        "type": "ACCEPT",
        "accept": {
            "offer_ids": [{"value": offer_id}],
            "operations": [{"type": "LAUNCH", "launch": {"task_infos": [{
                "name": "My Task",
                "task_id": {"value": "12220-3440-12532-my-task"},
                "agent_id": {"value": agent_id},
                "executor": null,
                "command": {"shell": true, "value": "ls -la"},
                "resources": [
                    {"name": "cpus", "role": "*", "type": "SCALAR", "scalar": {"value": 1.0}},
                    {"name": "mem", "role": "*", "type": "SCALAR", "scalar": {"value": 128.0}}
                ]
            }]}}],
            "filters": {"refuse_seconds": 5.0}
        }
    });
    let r = call(addr, &s.stream_id, accept).await;
    assert_eq!((r.status, r.body.as_str()), (202, ""));
    agent_saw(&mut agent, "Run(\"12220-3440-12532-my-task\"").await;

    // UPDATE with the TaskStatus layout and a base64 uuid; ACKNOWLEDGE reaches the agent.
    let up = s.expect("UPDATE").await;
    let st = &up["update"]["status"];
    assert_eq!(st["task_id"]["value"], "12220-3440-12532-my-task");
    assert_eq!(st["state"], "TASK_RUNNING");
    assert_eq!(st["source"], "SOURCE_EXECUTOR");
    assert_eq!(st["agent_id"]["value"], agent_id.as_str());
    assert_eq!(st["executor_id"]["value"], "12220-3440-12532-my-task");
    assert!(st["timestamp"].is_number());
    let uuid = st["uuid"].as_str().expect("uuid").to_string();
    let ack = json!({
        "framework_id": fw(&framework_id),
        "type": "ACKNOWLEDGE",
        "acknowledge": {"agent_id": {"value": agent_id}, "task_id": {"value": "12220-3440-12532-my-task"}, "uuid": uuid}
    });
    assert_eq!(call(addr, &s.stream_id, ack).await.status, 202);
    match agent_saw(&mut agent, "Ack").await {
        AgentSaw::Ack(task, bytes) => {
            assert_eq!(task, "12220-3440-12532-my-task");
            assert_eq!(bytes.len(), 16);
        }
        other => panic!("expected an ack, got {other:?}"),
    }

    // The rest of the agent is offered again (refuse 5 s applies to what we left); revive
    // clears filters. DECLINE it with a filter (docs body) → 202.
    let revive = json!({"framework_id": fw(&framework_id), "type": "REVIVE"});
    assert_eq!(call(addr, &s.stream_id, revive).await.status, 202);
    let ev = s.expect("OFFERS").await;
    let offer_id = ev["offers"]["offers"][0]["id"]["value"]
        .as_str()
        .expect("offer id")
        .to_string();
    let decline = json!({
        "framework_id": fw(&framework_id),
        "type": "DECLINE",
        "decline": {"offer_ids": [{"value": offer_id}], "filters": {"refuse_seconds": 5.0}}
    });
    assert_eq!(call(addr, &s.stream_id, decline.clone()).await.status, 202);
    // Declining again (now unknown) is ignored, as in Mesos.
    assert_eq!(call(addr, &s.stream_id, decline).await.status, 202);

    // RECONCILE (explicit) → UPDATE with REASON_RECONCILIATION and no uuid.
    let reconcile = json!({
        "framework_id": fw(&framework_id),
        "type": "RECONCILE",
        "reconcile": {"tasks": [{"task_id": {"value": "12220-3440-12532-my-task"}, "agent_id": {"value": agent_id}}]}
    });
    assert_eq!(call(addr, &s.stream_id, reconcile).await.status, 202);
    let up = s.expect("UPDATE").await;
    assert_eq!(up["update"]["status"]["reason"], "REASON_RECONCILIATION");
    assert_eq!(up["update"]["status"]["state"], "TASK_RUNNING");
    assert!(up["update"]["status"].get("uuid").is_none());

    // KILL → the agent kills → UPDATE TASK_KILLED.
    let kill = json!({
        "framework_id": fw(&framework_id),
        "type": "KILL",
        "kill": {"task_id": {"value": "12220-3440-12532-my-task"}, "agent_id": {"value": agent_id}}
    });
    assert_eq!(call(addr, &s.stream_id, kill).await.status, 202);
    agent_saw(&mut agent, "Kill(\"12220-3440-12532-my-task\"").await;
    let up = s.expect("UPDATE").await;
    assert_eq!(up["update"]["status"]["state"], "TASK_KILLED");

    // KILL of an unknown task → 202 and a TASK_LOST reconciliation update (Mesos).
    let kill = json!({"framework_id": fw(&framework_id), "type": "KILL",
        "kill": {"task_id": {"value": "nope"}}});
    assert_eq!(call(addr, &s.stream_id, kill).await.status, 202);
    let up = s.expect("UPDATE").await;
    assert_eq!(up["update"]["status"]["task_id"]["value"], "nope");
    assert_eq!(up["update"]["status"]["state"], "TASK_LOST");

    // Calls brim accepts as no-ops, like Mesos.
    for body in [
        json!({"framework_id": fw(&framework_id), "type": "SUPPRESS", "suppress": {"roles": ["test"]}}),
        json!({"framework_id": fw(&framework_id), "type": "REVIVE", "revive": {"roles": ["test"]}}),
        json!({"framework_id": fw(&framework_id), "type": "REQUEST", "request": {"requests": [{"agent_id": {"value": agent_id}}]}}),
        json!({"framework_id": fw(&framework_id), "type": "MESSAGE", "message": {"agent_id": {"value": agent_id}, "executor_id": {"value": "e"}, "data": "aGVsbG8="}}),
        json!({"framework_id": fw(&framework_id), "type": "ACCEPT_INVERSE_OFFERS", "accept_inverse_offers": {"inverse_offer_ids": [{"value": "x"}]}}),
        json!({"framework_id": fw(&framework_id), "type": "DECLINE_INVERSE_OFFERS", "decline_inverse_offers": {"inverse_offer_ids": [{"value": "x"}]}}),
        json!({"framework_id": fw(&framework_id), "type": "SHUTDOWN", "shutdown": {"executor_id": {"value": "e"}, "agent_id": {"value": agent_id}}}),
    ] {
        let r = call(addr, &s.stream_id, body.clone()).await;
        assert_eq!(r.status, 202, "{body}: {}", r.body);
    }

    // MESSAGE (scheduler-http-api.md body) reaches the executor's agent with the decoded
    // bytes; the executor's answer comes back as a MESSAGE event with base64 `data`.
    match agent_saw(&mut agent, "Message").await {
        AgentSaw::Message(executor, data) => {
            assert_eq!((executor.as_str(), &data[..]), ("e", &b"hello"[..]))
        }
        other => panic!("expected a framework message, got {other:?}"),
    }
    let ev = s.expect("MESSAGE").await;
    assert_eq!(ev["message"]["agent_id"]["value"], agent_id.as_str());
    assert_eq!(ev["message"]["executor_id"]["value"], "e");
    assert_eq!(
        ev["message"]["data"], "cG9uZzpoZWxsbw==",
        "base64 of pong:hello"
    );
    // A MESSAGE whose data is not base64 is a 400; to an unknown agent it is dropped (202).
    let bad = json!({"framework_id": fw(&framework_id), "type": "MESSAGE",
        "message": {"agent_id": {"value": agent_id}, "executor_id": {"value": "e"}, "data": "%%%"}});
    let r = call(addr, &s.stream_id, bad).await;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("base64"), "{}", r.body);
    let lost = json!({"framework_id": fw(&framework_id), "type": "MESSAGE",
        "message": {"agent_id": {"value": "nope"}, "executor_id": {"value": "e"}, "data": "aGk="}});
    assert_eq!(call(addr, &s.stream_id, lost).await.status, 202);

    // A LAUNCH_GROUP without its executor is malformed: refused as Mesos refuses a call its
    // protobuf cannot hold, naming the missing field.
    let group = json!({"framework_id": fw(&framework_id), "type": "ACCEPT",
        "accept": {"offer_ids": [{"value": "x"}], "operations": [{"type": "LAUNCH_GROUP", "launch_group": {}}]}});
    let r = call(addr, &s.stream_id, group).await;
    assert_eq!(r.status, 400);
    assert!(
        r.body.contains("Failed to convert JSON into Call protobuf") && r.body.contains("executor"),
        "{}",
        r.body
    );

    // UPDATE_FRAMEWORK with the same FrameworkInfo → 200; a changed one → 400 with advice.
    let mut fi =
        subscribe_body(json!({"id": fw(&framework_id)}))["subscribe"]["framework_info"].clone();
    let upd = |fi: &Value| {
        json!({"framework_id": fw(&framework_id), "type": "UPDATE_FRAMEWORK",
        "update_framework": {"framework_info": fi}})
    };
    assert_eq!(call(addr, &s.stream_id, upd(&fi)).await.status, 200);
    fi["name"] = json!("renamed");
    let r = call(addr, &s.stream_id, upd(&fi)).await;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("SUBSCRIBE again"), "{}", r.body);

    // TEARDOWN → 202; the stream gets ERROR and ends; the agent is told to shut it down.
    let teardown = json!({"framework_id": fw(&framework_id), "type": "TEARDOWN"});
    assert_eq!(call(addr, &s.stream_id, teardown).await.status, 202);
    s.expect("ERROR").await;
    while s.next().await.is_some() {}
    let r = call(
        addr,
        &s.stream_id,
        json!({"framework_id": fw(&framework_id), "type": "REVIVE"}),
    )
    .await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (400, "Framework cannot be found")
    );
    m.stop().await.expect("master stops");
}

#[tokio::test]
async fn accept_problems_come_back_as_task_updates() {
    let (m, _dir) = start().await;
    let addr = m.addr();
    let _agent = fake_agent(addr).await;
    let mut s = EventStream::open(
        addr,
        subscribe_body(json!({"capabilities": [{"type": "PARTITION_AWARE"}]})),
    )
    .await
    .unwrap_or_else(|r| panic!("subscribe failed: {}", r.body));
    let sub = s.expect("SUBSCRIBED").await;
    let fid = sub["subscribed"]["framework_id"]["value"]
        .as_str()
        .expect("id")
        .to_string();
    let ev = s.expect("OFFERS").await;
    let offer_id = ev["offers"]["offers"][0]["id"]["value"]
        .as_str()
        .expect("offer")
        .to_string();
    let task = |id: &str, cpus: f64| {
        json!({"name": id, "task_id": {"value": id},
        "command": {"value": "true"},
        "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": cpus}}]})
    };
    // More cpus than offered → TASK_ERROR (REASON_TASK_INVALID), offer given back.
    let accept = |offer: &str, t: Value| {
        json!({"framework_id": fw(&fid), "type": "ACCEPT",
        "accept": {"offer_ids": [{"value": offer}], "operations": [{"type": "LAUNCH", "launch": {"task_infos": [t]}}]}})
    };
    assert_eq!(
        call(addr, &s.stream_id, accept(&offer_id, task("big", 64.0)))
            .await
            .status,
        202
    );
    let up = s.expect("UPDATE").await;
    assert_eq!(up["update"]["status"]["state"], "TASK_ERROR");
    assert_eq!(up["update"]["status"]["reason"], "REASON_TASK_INVALID");
    assert_eq!(up["update"]["status"]["source"], "SOURCE_MASTER");
    // The same (now used) offer again → TASK_DROPPED for a partition-aware framework.
    assert_eq!(
        call(addr, &s.stream_id, accept(&offer_id, task("late", 0.1)))
            .await
            .status,
        202
    );
    let up = s.expect("UPDATE").await;
    assert_eq!(up["update"]["status"]["state"], "TASK_DROPPED");
    assert_eq!(up["update"]["status"]["reason"], "REASON_INVALID_OFFERS");
    // The declined resources come back in a new offer after a revive.
    let revive = json!({"framework_id": fw(&fid), "type": "REVIVE"});
    assert_eq!(call(addr, &s.stream_id, revive).await.status, 202);
    s.expect("OFFERS").await;
    m.stop().await.expect("master stops");
}

// ------------------------------------------------------------------------ bad input

#[tokio::test]
async fn bad_requests_get_mesos_errors_and_the_master_survives() {
    let (m, _dir) = start().await;
    let addr = m.addr();
    let check = |r: HttpReply, status: u16, needle: &str| {
        assert_eq!(
            r.status, status,
            "expected {status} ({needle}), got: {}",
            r.body
        );
        assert!(
            r.body.contains(needle),
            "{:?} should contain {needle:?}",
            r.body
        );
    };
    let sub = subscribe_body(json!({})).to_string();
    check(
        send(addr, "POST", &[], sub.as_bytes()).await,
        400,
        "Expecting 'Content-Type' to be present",
    );
    check(
        send(
            addr,
            "POST",
            &[("Content-Type", "text/plain")],
            sub.as_bytes(),
        )
        .await,
        415,
        "Expecting 'Content-Type' of application/json",
    );
    check(
        send(
            addr,
            "POST",
            &[("Content-Type", "application/x-protobuf")],
            b"\x08\x01",
        )
        .await,
        400,
        "Failed to parse body into Call protobuf",
    );
    check(
        send(addr, "POST", &[JSON], b"{\"type\": ").await,
        400,
        "Failed to parse body into JSON",
    );
    check(
        send(addr, "POST", &[JSON], b"[1,2]").await,
        400,
        "Failed to convert JSON into Call protobuf",
    );
    check(
        send(
            addr,
            "POST",
            &[JSON],
            br#"{"type":"BOGUS","framework_id":{"value":"x"}}"#,
        )
        .await,
        400,
        "",
    );
    check(
        send(addr, "POST", &[JSON], br#"{"type":"SUBSCRIBE"}"#).await,
        400,
        "Expecting 'subscribe' to be present",
    );
    check(
        send(
            addr,
            "POST",
            &[JSON],
            br#"{"type":"SUBSCRIBE","subscribe":{"framework_info":{"name":"x"}}}"#,
        )
        .await,
        400,
        "missing field `user`",
    );
    check(
        send(
            addr,
            "POST",
            &[JSON, ("Mesos-Stream-Id", "x")],
            sub.as_bytes(),
        )
        .await,
        400,
        "Subscribe calls should not include the 'Mesos-Stream-Id' header",
    );
    check(
        send(
            addr,
            "POST",
            &[JSON, ("Accept", "text/html")],
            sub.as_bytes(),
        )
        .await,
        406,
        "Expecting 'Accept' to allow",
    );
    // Calls before SUBSCRIBE.
    check(
        send(addr, "POST", &[JSON], br#"{"type":"REVIVE"}"#).await,
        400,
        "Expecting 'framework_id' to be present",
    );
    check(
        send(
            addr,
            "POST",
            &[JSON],
            br#"{"type":"REVIVE","framework_id":{"value":"never"}}"#,
        )
        .await,
        400,
        "Framework cannot be found",
    );
    // Oversized bodies: declared and streamed.
    let big = vec![b' '; brim_proto::MAX_MESSAGE_BYTES + 1];
    check(send(addr, "POST", &[JSON], &big).await, 413, "exceeds");
    // GET is not a scheduler call.
    assert_eq!(send(addr, "GET", &[], b"").await.status, 405);

    // Subscribed framework: missing / wrong stream id.
    let mut s = EventStream::open(addr, subscribe_body(json!({"failover_timeout": 0.0})))
        .await
        .unwrap_or_else(|r| panic!("subscribe failed: {}", r.body));
    let fid = s.expect("SUBSCRIBED").await["subscribed"]["framework_id"]["value"]
        .as_str()
        .expect("id")
        .to_string();
    let revive = json!({"framework_id": fw(&fid), "type": "REVIVE"}).to_string();
    check(
        send(addr, "POST", &[JSON], revive.as_bytes()).await,
        400,
        "All non-subscribe calls should include the 'Mesos-Stream-Id' header",
    );
    check(
        send(
            addr,
            "POST",
            &[JSON, ("Mesos-Stream-Id", "bogus")],
            revive.as_bytes(),
        )
        .await,
        400,
        "The stream ID 'bogus' included in this request didn't match",
    );
    let r = call(addr, &s.stream_id, json!({"framework_id": fw(&fid), "type": "ACKNOWLEDGE",
        "acknowledge": {"agent_id": {"value": "a"}, "task_id": {"value": "t"}, "uuid": "not base64!"}})).await;
    check(r, 400, "Failed to validate scheduler::Call");
    // A framework subscribed over gRPC cannot be driven over HTTP.
    let mut grpc = SchedulerClient::connect(format!("http://{addr}"))
        .await
        .expect("grpc");
    let mut grpc_stream = grpc
        .subscribe(v1::SubscribeRequest {
            framework_info: Some(v1::FrameworkInfo {
                name: "grpc".into(),
                ..Default::default()
            }),
        })
        .await
        .expect("grpc subscribe")
        .into_inner();
    let grpc_id = match grpc_stream
        .message()
        .await
        .expect("event")
        .and_then(|e| e.event)
    {
        Some(v1::event::Event::Subscribed(s)) => s.framework_id,
        other => panic!("expected subscribed, got {other:?}"),
    };
    let body = json!({"framework_id": fw(&grpc_id), "type": "REVIVE"}).to_string();
    check(
        send(
            addr,
            "POST",
            &[JSON, ("Mesos-Stream-Id", "x")],
            body.as_bytes(),
        )
        .await,
        403,
        "Framework is not connected via HTTP",
    );

    // Second SUBSCRIBE for the same framework (failover): the old stream gets ERROR and
    // closes, its stream id stops working, the new one works.
    let mut s2 = EventStream::open(
        addr,
        subscribe_body(json!({"id": fw(&fid), "failover_timeout": 0.0})),
    )
    .await
    .unwrap_or_else(|r| panic!("resubscribe failed: {}", r.body));
    let again = s2.expect("SUBSCRIBED").await;
    assert_eq!(again["subscribed"]["framework_id"]["value"], fid.as_str());
    assert_ne!(s2.stream_id, s.stream_id);
    let err = s.expect("ERROR").await;
    assert!(err["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("failed over")));
    while s.next().await.is_some() {}
    check(
        call(
            addr,
            &s.stream_id,
            json!({"framework_id": fw(&fid), "type": "REVIVE"}),
        )
        .await,
        400,
        "didn't match the stream ID",
    );
    assert_eq!(
        call(
            addr,
            &s2.stream_id,
            json!({"framework_id": fw(&fid), "type": "REVIVE"})
        )
        .await
        .status,
        202
    );

    // Client disconnects: the framework is disconnected (403 on calls) and, with
    // failover_timeout 0, removed — nothing leaks.
    let old_stream_id = s2.stream_id.clone();
    drop(s2);
    let mut tries = 0;
    loop {
        let r = call(
            addr,
            &old_stream_id,
            json!({"framework_id": fw(&fid), "type": "REVIVE"}),
        )
        .await;
        if r.status == 403 || r.body == "Framework cannot be found" {
            break;
        }
        tries += 1;
        assert!(
            tries < 50,
            "framework still subscribed after its stream dropped: {}",
            r.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut gone = false;
    for _ in 0..50 {
        let r = call(
            addr,
            &old_stream_id,
            json!({"framework_id": fw(&fid), "type": "REVIVE"}),
        )
        .await;
        if r.status == 400 && r.body == "Framework cannot be found" {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        gone,
        "framework with failover_timeout 0 was not removed after disconnecting"
    );

    // Still healthy after all that.
    let mut h = TcpStream::connect(addr).await.expect("connect");
    h.write_all(b"GET /health HTTP/1.0\r\n\r\n")
        .await
        .expect("write");
    let mut buf = String::new();
    h.read_to_string(&mut buf).await.expect("read");
    assert!(
        buf.starts_with("HTTP/1.0 200") || buf.starts_with("HTTP/1.1 200"),
        "{buf}"
    );
    // /master/state in Mesos shape.
    let mut h = TcpStream::connect(addr).await.expect("connect");
    h.write_all(b"GET /master/state HTTP/1.0\r\n\r\n")
        .await
        .expect("write");
    let mut buf = String::new();
    h.read_to_string(&mut buf).await.expect("read");
    let (_, body) = buf.split_once("\r\n\r\n").expect("reply");
    let st: Value = serde_json::from_str(body).expect("json");
    for k in [
        "frameworks",
        "slaves",
        "leader",
        "id",
        "pid",
        "activated_slaves",
        "completed_frameworks",
    ] {
        assert!(st.get(k).is_some(), "/master/state lacks {k}: {st}");
    }
    m.stop().await.expect("master stops");
}

/// RESERVE and UNRESERVE in the shape of Mesos's reservation.md ("Framework API"): the
/// offer operation with `reservations: [{type: DYNAMIC, role, principal}]`, the reserved
/// resources coming back in later offers, and UNRESERVE giving them back.
#[tokio::test]
async fn reservation_doc_exchanges_round_trip() {
    let (m, _dir) = start().await;
    let addr = m.addr();
    let _agent = fake_agent(addr).await;
    let mut s = EventStream::open(addr, subscribe_body(json!({"principal": "ops"})))
        .await
        .unwrap_or_else(|r| panic!("subscribe failed: {}", r.body));
    let sub = s.expect("SUBSCRIBED").await;
    let fid = sub["subscribed"]["framework_id"]["value"]
        .as_str()
        .expect("id")
        .to_string();
    let offer_id = |ev: &Value| {
        ev["offers"]["offers"][0]["id"]["value"]
            .as_str()
            .expect("offer id")
            .to_string()
    };
    let reserved_of = |ev: &Value| -> Vec<Value> {
        ev["offers"]["offers"][0]["resources"]
            .as_array()
            .expect("resources")
            .iter()
            .filter(|r| r.get("reservations").is_some())
            .cloned()
            .collect()
    };
    let ev = s.expect("OFFERS").await;
    assert!(reserved_of(&ev).is_empty());
    let reservation = json!([{"type": "DYNAMIC", "role": "test", "principal": "ops"}]);
    let resources = json!([
        {"name": "cpus", "type": "SCALAR", "scalar": {"value": 1}, "reservations": reservation},
        {"name": "mem", "type": "SCALAR", "scalar": {"value": 512}, "reservations": reservation}
    ]);
    let accept = |offer: String, op: Value| {
        json!({"framework_id": fw(&fid), "type": "ACCEPT",
            "accept": {"offer_ids": [{"value": offer}], "operations": [op],
                       "filters": {"refuse_seconds": 0.0}}})
    };
    let r = call(
        addr,
        &s.stream_id,
        accept(
            offer_id(&ev),
            json!({"type": "RESERVE", "reserve": {"resources": resources}}),
        ),
    )
    .await;
    assert_eq!((r.status, r.body.as_str()), (202, ""));

    // The next offer carries the reservation in both Mesos formats.
    let ev = s.expect("OFFERS").await;
    let reserved = reserved_of(&ev);
    assert_eq!(reserved.len(), 2, "{ev}");
    for r in &reserved {
        assert_eq!(r["reservations"][0]["type"], "DYNAMIC");
        assert_eq!(r["reservations"][0]["role"], "test");
        assert_eq!(r["role"], "test");
        assert_eq!(r["allocation_info"]["role"], "test");
    }
    // An UNRESERVE of more than is reserved is dropped (as Mesos drops invalid operations)
    // and the offer given back; a correct UNRESERVE works.
    let bad = json!([
        {"name": "cpus", "type": "SCALAR", "scalar": {"value": 2}, "reservations": reservation}
    ]);
    let r = call(
        addr,
        &s.stream_id,
        accept(
            offer_id(&ev),
            json!({"type": "UNRESERVE", "unreserve": {"resources": bad}}),
        ),
    )
    .await;
    assert_eq!(r.status, 202, "dropped like Mesos: {}", r.body);
    let ev = s.expect("OFFERS").await;
    assert_eq!(reserved_of(&ev).len(), 2, "nothing was unreserved");
    let r = call(
        addr,
        &s.stream_id,
        accept(
            offer_id(&ev),
            json!({"type": "UNRESERVE", "unreserve": {"resources": resources}}),
        ),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let ev = s.expect("OFFERS").await;
    assert!(reserved_of(&ev).is_empty(), "{ev}");

    // Reservations of another role, and a RESERVE without its body, are refused.
    let other = json!([{"name": "cpus", "type": "SCALAR", "scalar": {"value": 1},
        "reservations": [{"type": "DYNAMIC", "role": "other"}]}]);
    let r = call(
        addr,
        &s.stream_id,
        accept(
            offer_id(&ev),
            json!({"type": "RESERVE", "reserve": {"resources": other}}),
        ),
    )
    .await;
    assert_eq!(r.status, 202);
    let ev = s.expect("OFFERS").await;
    assert!(reserved_of(&ev).is_empty(), "{ev}");
    let r = call(
        addr,
        &s.stream_id,
        accept(offer_id(&ev), json!({"type": "RESERVE"})),
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("Expecting 'reserve'"), "{}", r.body);
    m.stop().await.expect("master stops");
}

/// CREATE, LAUNCH on, and DESTROY a persistent volume in the shape of Mesos's
/// persistent-volume.md (the older `role` + `reservation` format with `disk.persistence` and
/// `disk.volume`), after a RESERVE of the disk.
#[tokio::test]
async fn persistent_volume_doc_exchanges_round_trip() {
    let (m, _dir) = start().await;
    let addr = m.addr();
    let mut agent = fake_agent(addr).await;
    let mut s = EventStream::open(addr, subscribe_body(json!({"principal": "ops"})))
        .await
        .unwrap_or_else(|r| panic!("subscribe failed: {}", r.body));
    let sub = s.expect("SUBSCRIBED").await;
    let fid = sub["subscribed"]["framework_id"]["value"]
        .as_str()
        .expect("id")
        .to_string();
    let offer_of = |ev: &Value| ev["offers"]["offers"][0].clone();
    let volumes_of = |offer: &Value| -> Vec<Value> {
        offer["resources"]
            .as_array()
            .expect("resources")
            .iter()
            .filter(|r| r.get("disk").is_some())
            .cloned()
            .collect()
    };
    let accept = |offer: &Value, ops: Value| {
        json!({"framework_id": fw(&fid), "type": "ACCEPT",
            "accept": {"offer_ids": [offer["id"].clone()], "operations": ops,
                       "filters": {"refuse_seconds": 0.0}}})
    };
    let volume = json!({
        "name": "disk", "type": "SCALAR", "scalar": {"value": 256},
        "role": "test", "reservation": {"principal": "ops"},
        "disk": {"persistence": {"id": "pg-data", "principal": "ops"},
                 "volume": {"container_path": "data", "mode": "RW"}}
    });
    let offer = offer_of(&s.expect("OFFERS").await);
    let agent_id = offer["agent_id"]["value"]
        .as_str()
        .expect("agent")
        .to_string();
    let ops = json!([
        {"type": "RESERVE", "reserve": {"resources": [
            {"name": "disk", "type": "SCALAR", "scalar": {"value": 512},
             "role": "test", "reservation": {"principal": "ops"}}]}},
        {"type": "CREATE", "create": {"volumes": [volume.clone()]}}
    ]);
    let r = call(addr, &s.stream_id, accept(&offer, ops)).await;
    assert_eq!((r.status, r.body.as_str()), (202, ""));

    // The volume comes back with its persistence id and container path.
    let offer = offer_of(&s.expect("OFFERS").await);
    let vols = volumes_of(&offer);
    assert_eq!(vols.len(), 1, "{offer}");
    assert_eq!(vols[0]["disk"]["persistence"]["id"], "pg-data");
    assert_eq!(vols[0]["disk"]["volume"]["container_path"], "data");
    assert_eq!(vols[0]["disk"]["volume"]["mode"], "RW");
    assert_eq!(vols[0]["reservations"][0]["role"], "test");
    assert_eq!(vols[0]["scalar"]["value"], 256.0);

    // LAUNCH a task on it.
    let launch = json!([{"type": "LAUNCH", "launch": {"task_infos": [{
    "name": "db", "task_id": {"value": "db-1"}, "agent_id": {"value": agent_id},
    "command": {"value": "sleep 1000"},
    "resources": [
        {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.5}},
        {"name": "mem", "type": "SCALAR", "scalar": {"value": 64}},
        volume.clone()
    ]}]}}]);
    let r = call(addr, &s.stream_id, accept(&offer, launch)).await;
    assert_eq!(r.status, 202, "{}", r.body);
    agent_saw(&mut agent, "Run(\"db-1\"").await;
    // While it runs the volume is in no offer.
    loop {
        let ev = s.next().await.expect("event");
        if ev["type"] == "OFFERS" {
            assert!(volumes_of(&offer_of(&ev)).is_empty(), "in use: {ev}");
        }
        if ev["type"] == "UPDATE" {
            assert_eq!(ev["update"]["status"]["state"], "TASK_RUNNING");
            break;
        }
    }
    let kill = json!({"framework_id": fw(&fid), "type": "KILL",
        "kill": {"task_id": {"value": "db-1"}, "agent_id": {"value": agent_id}}});
    assert_eq!(call(addr, &s.stream_id, kill).await.status, 202);
    loop {
        let up = s.expect("UPDATE").await;
        if up["update"]["status"]["state"] == "TASK_KILLED" {
            break;
        }
    }
    // DESTROY once it is offered again; then it is gone from offers for good.
    let offer = loop {
        let o = offer_of(&s.expect("OFFERS").await);
        if !volumes_of(&o).is_empty() {
            break o;
        }
        let decline = json!({"framework_id": fw(&fid), "type": "DECLINE",
            "decline": {"offer_ids": [o["id"].clone()], "filters": {"refuse_seconds": 0.0}}});
        call(addr, &s.stream_id, decline).await;
    };
    let destroy = json!([{"type": "DESTROY", "destroy": {"volumes": [volume.clone()]}}]);
    let r = call(addr, &s.stream_id, accept(&offer, destroy)).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let offer = offer_of(&s.expect("OFFERS").await);
    assert!(volumes_of(&offer).is_empty(), "destroyed: {offer}");
    // CREATE without its body is a 400.
    let r = call(
        addr,
        &s.stream_id,
        accept(&offer, json!([{"type": "CREATE"}])),
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("Expecting 'create'"), "{}", r.body);
    m.stop().await.expect("master stops");
}

/// Mesos `ContainerInfo` with `type: MESOS`, a `mesos.image` naming an image on the agent and
/// `volumes` (HOST_PATH, SANDBOX_PATH, RO/RW), as the Mesos docs (container-image.md,
/// host_path and sandbox_path volumes) write them: the agent is asked to run the task in that
/// image with those volumes; a registry image and the Docker containerizer are refused per
/// task with TASK_ERROR.
#[tokio::test]
async fn container_doc_exchanges_round_trip() {
    let (m, _dir) = start().await;
    let addr = m.addr();
    let mut agent = fake_agent(addr).await;
    let mut s = EventStream::open(addr, subscribe_body(json!({})))
        .await
        .unwrap_or_else(|r| panic!("subscribe failed: {}", r.body));
    let sub = s.expect("SUBSCRIBED").await;
    let fid = sub["subscribed"]["framework_id"]["value"]
        .as_str()
        .expect("id")
        .to_string();
    let offer = s.expect("OFFERS").await["offers"]["offers"][0].clone();
    let task = |id: &str, container: Value| {
        json!({"name": id, "task_id": {"value": id},
            "agent_id": offer["agent_id"].clone(),
            "command": {"value": "ls /data"},
            "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}},
                          {"name": "mem", "type": "SCALAR", "scalar": {"value": 32}}],
            "container": container})
    };
    let ok = task(
        "in-image",
        json!({"type": "MESOS",
            "mesos": {"image": {"type": "DOCKER", "docker": {"name": "/srv/busybox-oci"}}},
            "volumes": [
                {"container_path": "/data", "mode": "RO",
                 "source": {"type": "HOST_PATH", "host_path": {"path": "/srv/data"}}},
                {"container_path": "/scratch", "mode": "RW",
                 "source": {"type": "SANDBOX_PATH",
                            "sandbox_path": {"type": "SELF", "path": "scratch"}}}]}),
    );
    let registry = task(
        "registry",
        json!({"type": "MESOS",
            "mesos": {"image": {"type": "DOCKER", "docker": {"name": "library/busybox"}}}}),
    );
    let docker = task(
        "docker",
        json!({"type": "DOCKER", "docker": {"image": "busybox"}}),
    );
    let accept = json!({"framework_id": fw(&fid), "type": "ACCEPT",
        "accept": {"offer_ids": [offer["id"].clone()], "operations": [
            {"type": "LAUNCH", "launch": {"task_infos": [ok, registry, docker]}}]}});
    let r = call(addr, &s.stream_id, accept).await;
    assert_eq!((r.status, r.body.as_str()), (202, ""));
    let AgentSaw::Container(id, c) = agent_saw(&mut agent, "Container").await else {
        unreachable!("agent_saw matched Container")
    };
    assert_eq!(id, "in-image");
    assert_eq!(c.r#type, v1::container_info::Type::Oci as i32);
    assert_eq!(c.image.map(|i| i.uri).as_deref(), Some("/srv/busybox-oci"));
    use v1::container_volume::{Mode, Source};
    assert_eq!(c.volumes.len(), 2);
    assert_eq!(
        (
            c.volumes[0].container_path.as_str(),
            c.volumes[0].mode,
            c.volumes[0].source.clone()
        ),
        (
            "/data",
            Mode::Ro as i32,
            Some(Source::HostPath("/srv/data".into()))
        )
    );
    assert_eq!(
        c.volumes[1].source,
        Some(Source::SandboxPath("scratch".into()))
    );
    let mut errors = HashMap::new();
    while errors.len() < 2 {
        let up = s.expect("UPDATE").await;
        let st = &up["update"]["status"];
        if st["state"] == "TASK_ERROR" {
            errors.insert(
                st["task_id"]["value"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                st["message"].as_str().unwrap_or_default().to_string(),
            );
        }
    }
    assert!(
        errors["registry"].contains("pulls from no registry"),
        "{errors:?}"
    );
    assert!(
        errors["docker"].contains("container type DOCKER"),
        "{errors:?}"
    );
    m.stop().await.expect("master stops");
}
