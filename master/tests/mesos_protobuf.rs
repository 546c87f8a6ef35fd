//! Mesos v1 scheduler HTTP API with protobuf bodies (`application/x-protobuf`): a whole
//! session in protobuf (SUBSCRIBE → SUBSCRIBED + OFFERS as protobuf RecordIO → ACCEPT/LAUNCH
//! → UPDATE → ACKNOWLEDGE), every request/response content-type pairing, and bad protobuf
//! input with Mesos-like errors. The client builds and reads messages field by field from the
//! vendored Mesos protos (no JSON involved), so it checks the master's transcoding rather than
//! repeating it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use brim_master::mesos::recordio;
use brim_proto::v1::{
    self, agent_message, agent_service_client::AgentServiceClient, master_message, AgentMessage,
    TaskState, TaskStatusSource,
};
use prost::Message as _;
use prost_reflect::{DynamicMessage, Kind, MessageDescriptor, ReflectMessage, Value as P};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

const T: Duration = Duration::from_secs(10);
const PB: &str = "application/x-protobuf";
const JSON: &str = "application/json";

async fn start() -> (brim_master::RunningMaster, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let addr: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let mut config = brim_master::MasterConfig::new(addr, dir.path().to_path_buf());
    config.allocation_interval = Duration::from_millis(100);
    let m = brim_master::start(config).await.expect("master starts");
    (m, dir)
}

/// A gRPC agent with cpus:2;mem:1024 that runs every task (TASK_RUNNING with a uuid) and
/// reports the acknowledgements it gets as `(task id, uuid)`.
async fn fake_agent(addr: SocketAddr) -> mpsc::UnboundedReceiver<(String, Vec<u8>)> {
    let mut client = AgentServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("agent connects");
    let (tx, rx) = mpsc::channel::<AgentMessage>(64);
    let resources = brim_proto::Resources::parse("cpus:2;mem:1024")
        .expect("resources")
        .to_proto();
    tx.send(AgentMessage {
        message: Some(agent_message::Message::Register(agent_message::Register {
            agent_info: Some(v1::AgentInfo {
                hostname: "agent-host".into(),
                http_address: "127.0.0.1:5051".into(),
                resources,
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
    let (acks_tx, acks) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut agent_id = String::new();
        while let Ok(Some(msg)) = inbound.message().await {
            match msg.message {
                Some(master_message::Message::Registered(r)) => agent_id = r.agent_id,
                Some(master_message::Message::RunTask(r)) => {
                    let task = r.task.unwrap_or_default();
                    let status = v1::TaskStatus {
                        task_id: task.task_id,
                        state: TaskState::TaskRunning as i32,
                        source: TaskStatusSource::SourceExecutor as i32,
                        agent_id: agent_id.clone(),
                        framework_id: r.framework.unwrap_or_default().id,
                        timestamp: 1.0,
                        uuid: uuid::Uuid::new_v4().as_bytes().to_vec(),
                        ..Default::default()
                    };
                    let _ = tx
                        .send(AgentMessage {
                            message: Some(agent_message::Message::StatusUpdate(
                                agent_message::StatusUpdate {
                                    status: Some(status),
                                },
                            )),
                        })
                        .await;
                }
                Some(master_message::Message::Acknowledge(a)) => {
                    let _ = acks_tx.send((a.task_id, a.uuid));
                }
                _ => {}
            }
        }
    });
    acks
}

// ---------------------------------------------------------- protobuf, field by field

fn descriptor(name: &str) -> MessageDescriptor {
    brim_proto::mesos::descriptor_pool()
        .expect("descriptors")
        .get_message_by_name(name)
        .unwrap_or_else(|| panic!("{name} not in the Mesos protos"))
}

/// A field value to set: enums by name, messages as nested field lists.
enum V {
    S(String),
    E(&'static str),
    D(f64),
    B(bool),
    Bytes(Vec<u8>),
    M(Vec<(&'static str, V)>),
    L(Vec<V>),
}

fn string(v: &str) -> V {
    V::S(v.to_string())
}

fn id(v: &str) -> V {
    V::M(vec![("value", string(v))])
}

fn to_value(kind: &Kind, v: &V) -> P {
    match v {
        V::S(x) => P::String(x.clone()),
        V::E(name) => {
            let e = kind.as_enum().expect("enum field");
            P::EnumNumber(
                e.get_value_by_name(name)
                    .unwrap_or_else(|| panic!("{name} is not a {}", e.full_name()))
                    .number(),
            )
        }
        V::D(x) => P::F64(*x),
        V::B(x) => P::Bool(*x),
        V::Bytes(x) => P::Bytes(x.clone().into()),
        V::M(fields) => P::Message(build(kind.as_message().expect("message field"), fields)),
        V::L(items) => P::List(items.iter().map(|i| to_value(kind, i)).collect()),
    }
}

fn build(desc: &MessageDescriptor, fields: &[(&'static str, V)]) -> DynamicMessage {
    let mut m = DynamicMessage::new(desc.clone());
    for (name, v) in fields {
        let f = desc
            .get_field_by_name(name)
            .unwrap_or_else(|| panic!("{} has no field {name}", desc.full_name()));
        m.set_field(&f, to_value(&f.kind(), v));
    }
    m
}

fn call(fields: Vec<(&'static str, V)>) -> Vec<u8> {
    build(&descriptor("mesos.v1.scheduler.Call"), &fields).encode_to_vec()
}

/// The field at a dotted path (`a.b.0.c`, numbers index lists).
fn at(m: &DynamicMessage, path: &str) -> P {
    let mut cur = P::Message(m.clone());
    for part in path.split('.') {
        cur = match (&cur, part.parse::<usize>()) {
            (P::List(items), Ok(i)) => items
                .get(i)
                .cloned()
                .unwrap_or_else(|| panic!("{path}: no item {i}")),
            (P::Message(msg), _) => {
                let f = msg
                    .descriptor()
                    .get_field_by_name(part)
                    .unwrap_or_else(|| panic!("{path}: no field {part}"));
                assert!(
                    msg.has_field(&f) || f.is_list(),
                    "{path}: {part} not set in {msg:?}"
                );
                msg.get_field(&f).into_owned()
            }
            _ => panic!("{path}: cannot step into {part}"),
        };
    }
    cur
}

fn text(m: &DynamicMessage, path: &str) -> String {
    match at(m, path) {
        P::String(s) => s,
        other => panic!("{path} is not a string: {other:?}"),
    }
}

/// The name of the enum at `path` (a field of message at `parent`).
fn enum_name(m: &DynamicMessage, path: &str) -> String {
    let (parent, field) = path.rsplit_once('.').map_or(("", path), |(p, f)| (p, f));
    let P::Message(owner) = (if parent.is_empty() {
        P::Message(m.clone())
    } else {
        at(m, parent)
    }) else {
        panic!("{parent} is not a message");
    };
    let f = owner.descriptor().get_field_by_name(field).expect("field");
    let n = owner.get_field(&f).as_enum_number().expect("enum");
    f.kind()
        .as_enum()
        .and_then(|e| e.get_value(n))
        .map(|v| v.name().to_string())
        .unwrap_or_else(|| format!("unknown enum number {n}"))
}

// ------------------------------------------------------------------------- raw HTTP

fn request(headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut req =
        "POST /api/v1/scheduler HTTP/1.1\r\nHost: brim\r\nConnection: close\r\n".to_string();
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

/// One non-streaming request: (status, body text).
async fn send(addr: SocketAddr, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
    let mut sock = TcpStream::connect(addr).await.expect("connect");
    let _ = sock.write_all(&request(headers, body)).await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(T, sock.read_to_end(&mut buf))
        .await
        .expect("reply in time");
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n").expect("http reply");
    (parse_head(head).0, body.to_string())
}

/// A SUBSCRIBE stream whose records are handed out raw.
struct EventStream {
    sock: TcpStream,
    raw: Vec<u8>,
    records: recordio::Decoder,
    ready: std::collections::VecDeque<Vec<u8>>,
    stream_id: String,
    content_type: String,
}

impl EventStream {
    async fn open(
        addr: SocketAddr,
        content_type: &str,
        accept: &str,
        body: &[u8],
    ) -> Result<EventStream, (u16, String)> {
        let mut sock = TcpStream::connect(addr).await.expect("connect");
        sock.write_all(&request(
            &[("Content-Type", content_type), ("Accept", accept)],
            body,
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
        let (status, headers) = parse_head(&String::from_utf8_lossy(&raw[..head_end]));
        let rest = raw[head_end + 4..].to_vec();
        if status != 200 {
            let mut body = rest;
            let _ = tokio::time::timeout(T, sock.read_to_end(&mut body)).await;
            return Err((status, String::from_utf8_lossy(&body).to_string()));
        }
        assert_eq!(headers["transfer-encoding"], "chunked");
        Ok(EventStream {
            sock,
            raw: rest,
            records: recordio::Decoder::new(1 << 20),
            ready: Default::default(),
            stream_id: headers["mesos-stream-id"].clone(),
            content_type: headers["content-type"].clone(),
        })
    }

    async fn next_record(&mut self) -> Vec<u8> {
        loop {
            while let Some(nl) = self.raw.windows(2).position(|w| w == b"\r\n") {
                let size = usize::from_str_radix(
                    std::str::from_utf8(&self.raw[..nl])
                        .expect("chunk size")
                        .trim(),
                    16,
                )
                .expect("hex chunk size");
                assert!(size > 0, "stream ended");
                if self.raw.len() < nl + 2 + size + 2 {
                    break;
                }
                let data = self.raw[nl + 2..nl + 2 + size].to_vec();
                self.raw.drain(..nl + 2 + size + 2);
                self.ready
                    .extend(self.records.feed(&data).expect("valid RecordIO"));
            }
            if let Some(r) = self.ready.pop_front() {
                return r;
            }
            let mut buf = [0u8; 8192];
            let n = tokio::time::timeout(T, self.sock.read(&mut buf))
                .await
                .expect("event in time")
                .expect("read");
            assert!(n > 0, "stream closed");
            self.raw.extend_from_slice(&buf[..n]);
        }
    }

    /// Next protobuf event of `kind`, skipping others.
    async fn expect_pb(&mut self, kind: &str) -> DynamicMessage {
        loop {
            let r = self.next_record().await;
            let ev = DynamicMessage::decode(descriptor("mesos.v1.scheduler.Event"), &r[..])
                .unwrap_or_else(|e| panic!("record is not a protobuf Event ({e}): {r:?}"));
            assert_eq!(ev.unknown_fields().count(), 0);
            if enum_name(&ev, "type") == kind {
                return ev;
            }
        }
    }

    /// Next JSON event of `kind`, skipping others.
    async fn expect_json(&mut self, kind: &str) -> Value {
        loop {
            let r = self.next_record().await;
            let ev: Value = serde_json::from_slice(&r).expect("record is JSON");
            if ev["type"] == kind {
                return ev;
            }
        }
    }
}

fn subscribe_pb() -> Vec<u8> {
    call(vec![
        ("type", V::E("SUBSCRIBE")),
        (
            "subscribe",
            V::M(vec![(
                "framework_info",
                V::M(vec![
                    ("user", string("foo")),
                    ("name", string("protobuf framework")),
                    ("roles", V::L(vec![string("test")])),
                    (
                        "capabilities",
                        V::L(vec![V::M(vec![("type", V::E("MULTI_ROLE"))])]),
                    ),
                ]),
            )]),
        ),
    ])
}

fn subscribe_json() -> Vec<u8> {
    json!({"type": "SUBSCRIBE", "subscribe": {"framework_info": {
        "user": "foo", "name": "json framework", "roles": ["test"],
        "capabilities": [{"type": "MULTI_ROLE"}]}}})
    .to_string()
    .into_bytes()
}

// --------------------------------------------------------------------------- tests

#[tokio::test]
async fn whole_session_in_protobuf() {
    let (m, _dir) = start().await;
    let addr = m.addr();
    let mut acks = fake_agent(addr).await;

    let mut s = EventStream::open(addr, PB, PB, &subscribe_pb())
        .await
        .unwrap_or_else(|(c, b)| panic!("subscribe failed: {c} {b}"));
    assert_eq!(s.content_type, PB);
    let sub = s.expect_pb("SUBSCRIBED").await;
    let framework_id = text(&sub, "subscribed.framework_id.value");
    assert!(!framework_id.is_empty());
    assert!(matches!(at(&sub, "subscribed.heartbeat_interval_seconds"), P::F64(x) if x > 0.0));
    assert_eq!(at(&sub, "subscribed.master_info.ip"), P::U32(16_777_343));
    assert_eq!(
        at(&sub, "subscribed.master_info.port"),
        P::U32(u32::from(addr.port()))
    );
    assert_eq!(text(&sub, "subscribed.master_info.address.ip"), "127.0.0.1");

    let offers = s.expect_pb("OFFERS").await;
    let offer_id = text(&offers, "offers.offers.0.id.value");
    let agent_id = text(&offers, "offers.offers.0.agent_id.value");
    assert_eq!(text(&offers, "offers.offers.0.hostname"), "agent-host");
    assert_eq!(
        text(&offers, "offers.offers.0.framework_id.value"),
        framework_id
    );
    let P::List(resources) = at(&offers, "offers.offers.0.resources") else {
        panic!("resources");
    };
    let cpus = resources
        .iter()
        .filter_map(|r| r.as_message())
        .find(|r| text(r, "name") == "cpus")
        .expect("cpus offered");
    assert_eq!(enum_name(cpus, "type"), "SCALAR");
    assert_eq!(at(cpus, "scalar.value"), P::F64(2.0));
    assert_eq!(text(cpus, "allocation_info.role"), "test");

    // ACCEPT with LAUNCH, in protobuf → 202, and the task's UPDATE arrives in protobuf.
    let scalar = |name: &str, v: f64| {
        V::M(vec![
            ("name", string(name)),
            ("type", V::E("SCALAR")),
            ("scalar", V::M(vec![("value", V::D(v))])),
        ])
    };
    let accept = call(vec![
        ("framework_id", id(&framework_id)),
        ("type", V::E("ACCEPT")),
        (
            "accept",
            V::M(vec![
                ("offer_ids", V::L(vec![id(&offer_id)])),
                (
                    "operations",
                    V::L(vec![V::M(vec![
                        ("type", V::E("LAUNCH")),
                        (
                            "launch",
                            V::M(vec![(
                                "task_infos",
                                V::L(vec![V::M(vec![
                                    ("name", string("pb task")),
                                    ("task_id", id("pb-task-1")),
                                    ("agent_id", id(&agent_id)),
                                    (
                                        "command",
                                        V::M(vec![
                                            ("shell", V::B(true)),
                                            ("value", string("sleep 9")),
                                        ]),
                                    ),
                                    (
                                        "resources",
                                        V::L(vec![scalar("cpus", 1.0), scalar("mem", 64.0)]),
                                    ),
                                ])]),
                            )]),
                        ),
                    ])]),
                ),
                ("filters", V::M(vec![("refuse_seconds", V::D(5.0))])),
            ]),
        ),
    ]);
    let (code, body) = send(
        addr,
        &[("Content-Type", PB), ("Mesos-Stream-Id", &s.stream_id)],
        &accept,
    )
    .await;
    assert_eq!(code, 202, "{body}");
    let update = s.expect_pb("UPDATE").await;
    assert_eq!(text(&update, "update.status.task_id.value"), "pb-task-1");
    assert_eq!(enum_name(&update, "update.status.state"), "TASK_RUNNING");
    assert_eq!(
        text(&update, "update.status.agent_id.value"),
        agent_id.as_str()
    );
    let P::Bytes(uuid) = at(&update, "update.status.uuid") else {
        panic!("uuid is bytes");
    };
    assert_eq!(uuid.len(), 16);

    // ACKNOWLEDGE in protobuf → 202; the agent gets the very uuid.
    let ack = call(vec![
        ("framework_id", id(&framework_id)),
        ("type", V::E("ACKNOWLEDGE")),
        (
            "acknowledge",
            V::M(vec![
                ("agent_id", id(&agent_id)),
                ("task_id", id("pb-task-1")),
                ("uuid", V::Bytes(uuid.to_vec())),
            ]),
        ),
    ]);
    let (code, body) = send(
        addr,
        &[("Content-Type", PB), ("Mesos-Stream-Id", &s.stream_id)],
        &ack,
    )
    .await;
    assert_eq!(code, 202, "{body}");
    let (task, acked) = tokio::time::timeout(T, acks.recv())
        .await
        .expect("ack reaches the agent in time")
        .expect("agent alive");
    assert_eq!((task.as_str(), &acked[..]), ("pb-task-1", &uuid[..]));

    // TEARDOWN in protobuf ends the stream's framework.
    let teardown = call(vec![
        ("framework_id", id(&framework_id)),
        ("type", V::E("TEARDOWN")),
    ]);
    let (code, body) = send(
        addr,
        &[("Content-Type", PB), ("Mesos-Stream-Id", &s.stream_id)],
        &teardown,
    )
    .await;
    assert_eq!(code, 202, "{body}");
    m.stop().await.expect("master stops");
}

#[tokio::test]
async fn every_content_type_pairing() {
    let (m, _dir) = start().await;
    let addr = m.addr();
    let _acks = fake_agent(addr).await;
    let pairings: [(&str, &str, &[u8]); 4] = [
        (JSON, JSON, &subscribe_json()),
        (JSON, PB, &subscribe_json()),
        (PB, JSON, &subscribe_pb()),
        (PB, PB, &subscribe_pb()),
    ];
    for (content_type, accept, body) in pairings {
        let mut s = EventStream::open(addr, content_type, accept, body)
            .await
            .unwrap_or_else(|(c, b)| panic!("{content_type} → {accept}: {c} {b}"));
        assert_eq!(s.content_type, accept);
        let (framework_id, offer_id) = if accept == PB {
            let sub = s.expect_pb("SUBSCRIBED").await;
            let offers = s.expect_pb("OFFERS").await;
            (
                text(&sub, "subscribed.framework_id.value"),
                text(&offers, "offers.offers.0.id.value"),
            )
        } else {
            let sub = s.expect_json("SUBSCRIBED").await;
            let offers = s.expect_json("OFFERS").await;
            (
                sub["subscribed"]["framework_id"]["value"]
                    .as_str()
                    .expect("framework id")
                    .to_string(),
                offers["offers"]["offers"][0]["id"]["value"]
                    .as_str()
                    .expect("offer id")
                    .to_string(),
            )
        };
        // A call in the request format, then TEARDOWN so the next pairing gets the offers.
        let (decline, teardown) = if content_type == PB {
            (
                call(vec![
                    ("framework_id", id(&framework_id)),
                    ("type", V::E("DECLINE")),
                    (
                        "decline",
                        V::M(vec![("offer_ids", V::L(vec![id(&offer_id)]))]),
                    ),
                ]),
                call(vec![
                    ("framework_id", id(&framework_id)),
                    ("type", V::E("TEARDOWN")),
                ]),
            )
        } else {
            (
                json!({"framework_id": {"value": framework_id}, "type": "DECLINE",
                    "decline": {"offer_ids": [{"value": offer_id}]}})
                .to_string()
                .into_bytes(),
                json!({"framework_id": {"value": framework_id}, "type": "TEARDOWN"})
                    .to_string()
                    .into_bytes(),
            )
        };
        for body in [decline, teardown] {
            let (code, text) = send(
                addr,
                &[
                    ("Content-Type", content_type),
                    ("Mesos-Stream-Id", &s.stream_id),
                ],
                &body,
            )
            .await;
            assert_eq!(code, 202, "{content_type}: {text}");
        }
    }
    m.stop().await.expect("master stops");
}

#[tokio::test]
async fn bad_protobuf_gets_mesos_errors_and_the_master_survives() {
    let (m, _dir) = start().await;
    let addr = m.addr();
    let _acks = fake_agent(addr).await;
    // SUBSCRIBE plus field 999 (an unknown field) → 400 naming it.
    let mut unknown = subscribe_pb();
    unknown.extend_from_slice(&[0xb8, 0x3e, 0x01]);
    // framework_info with unknown field 77, nested two levels down.
    let nested = {
        let fi = build(
            &descriptor("mesos.v1.FrameworkInfo"),
            &[("user", string("foo")), ("name", string("n"))],
        );
        let mut fi = fi.encode_to_vec();
        fi.extend_from_slice(&[0xe8, 0x04, 0x01]);
        // Call.subscribe (3) = Subscribe { framework_info (1) = … }
        let mut inner = vec![0x0a];
        prost::encoding::encode_varint(fi.len() as u64, &mut inner);
        inner.extend_from_slice(&fi);
        let mut body = call(vec![("type", V::E("SUBSCRIBE"))]);
        body.push(0x1a);
        prost::encoding::encode_varint(inner.len() as u64, &mut body);
        body.extend_from_slice(&inner);
        body
    };
    let cases: [(&str, &str, Vec<u8>, u16, &str); 7] = [
        (
            PB,
            PB,
            unknown,
            400,
            "unknown field number 999 in 'mesos.v1.scheduler.Call'",
        ),
        (
            PB,
            PB,
            nested,
            400,
            "unknown field number 77 in 'mesos.v1.FrameworkInfo'",
        ),
        (
            PB,
            PB,
            vec![0x1a, 0x7f, 0x01],
            400,
            "Failed to parse body into Call protobuf",
        ),
        (
            PB,
            PB,
            subscribe_json(),
            400,
            "Failed to parse body into Call protobuf",
        ),
        (
            PB,
            "text/html",
            subscribe_pb(),
            406,
            "Expecting 'Accept' to allow",
        ),
        (
            JSON,
            "application/json;q=0",
            subscribe_json(),
            406,
            "Expecting 'Accept' to allow",
        ),
        (
            "text/plain",
            PB,
            subscribe_pb(),
            415,
            "Expecting 'Content-Type' of application/json or application/x-protobuf",
        ),
    ];
    for (content_type, accept, body, code, message) in cases {
        match EventStream::open(addr, content_type, accept, &body).await {
            Ok(_) => panic!("{content_type} → {accept} {body:?} was accepted"),
            Err((c, text)) => {
                assert_eq!(c, code, "{text}");
                assert!(text.contains(message), "{code}: {text}");
            }
        }
    }
    // A protobuf body over the limit → 413 without reading it.
    let huge = vec![0u8; brim_proto::MAX_MESSAGE_BYTES + 1];
    let (code, _) = send(addr, &[("Content-Type", PB)], &huge).await;
    assert_eq!(code, 413);
    // Still serving.
    let mut s = EventStream::open(addr, PB, PB, &subscribe_pb())
        .await
        .unwrap_or_else(|(c, b)| panic!("subscribe after bad input: {c} {b}"));
    s.expect_pb("SUBSCRIBED").await;
    m.stop().await.expect("master stops");
}
