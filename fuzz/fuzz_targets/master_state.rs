//! The master's state machine (`brim_master::state::Master`, the code behind the gRPC agent
//! and scheduler services) driven by a sequence of fuzzed protobuf messages: agent stream
//! messages (register, status updates, usage, slack), framework subscriptions, accepts with
//! task launches, declines, kills, acknowledgements, reconciliation and clock ticks. This
//! reaches the validation the master applies to tasks and resources, not just decoding.
//!
//! Input: records of `kind: u8, len: u16 LE, payload[len]`. An accept or decline without a
//! framework id or offer ids gets the first framework and its current offers, so launches get
//! past offer checks. Never a panic.
#![no_main]

use std::time::Duration;

use brim_master::registry::MemoryRegistry;
use brim_master::state::{Master, StateConfig};
use brim_proto::v1::{self, agent_message, event, AgentMessage, Event, MasterMessage};
use brim_proto::{Resources, CAPABILITY_REVOCABLE_RESOURCES};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use tokio::sync::mpsc;
use tonic::Status;

const QUEUE: usize = 4096;

struct World {
    m: Master,
    now: Duration,
    agents: Vec<(String, u64, mpsc::Receiver<Result<MasterMessage, Status>>)>,
    frameworks: Vec<(String, mpsc::Receiver<Result<Event, Status>>)>,
    /// Outstanding offers: (framework id, offer id).
    offers: Vec<(String, String)>,
}

impl World {
    fn new() -> World {
        let now = Duration::from_secs(1000);
        let m = Master::new(
            StateConfig::default(),
            "fuzz".into(),
            Box::new(MemoryRegistry::default()),
            now,
        )
        .expect("memory registry");
        let mut w = World {
            m,
            now,
            agents: Vec::new(),
            frameworks: Vec::new(),
            offers: Vec::new(),
        };
        let resources = Resources::parse("cpus:4;mem:4096;disk:1000;ports:[31000-32000]")
            .expect("static resources");
        w.register(agent_message::Register {
            agent_info: Some(v1::AgentInfo {
                hostname: "host".into(),
                http_address: "127.0.0.1:5051".into(),
                resources: resources.to_proto(),
                ..Default::default()
            }),
            ..Default::default()
        });
        let slack = Resources::parse("cpus:2;mem:1024").expect("static resources");
        w.agent(agent_message::Message::Slack(agent_message::Slack {
            revocable: slack.to_proto_with(true),
            used_estimate: Vec::new(),
        }));
        w.subscribe(v1::FrameworkInfo {
            name: "fuzz".into(),
            user: "nobody".into(),
            capabilities: vec![CAPABILITY_REVOCABLE_RESOURCES.into()],
            ..Default::default()
        });
        w.settle();
        w
    }

    fn wall(&self) -> f64 {
        self.now.as_secs_f64()
    }

    fn register(&mut self, reg: agent_message::Register) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let wall = self.wall();
        if let Ok((id, conn)) = self.m.register_agent(reg, tx, self.now, wall) {
            self.agents.push((id, conn, rx));
        }
    }

    fn agent(&mut self, msg: agent_message::Message) {
        let wall = self.wall();
        if let Some((id, conn, _)) = self.agents.last() {
            self.m.agent_message(id, *conn, msg, self.now, wall);
        }
    }

    fn subscribe(&mut self, info: v1::FrameworkInfo) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let wall = self.wall();
        if let Ok((id, _)) = self.m.subscribe(info, tx, self.now, wall) {
            self.frameworks.push((id, rx));
        }
    }

    fn first_framework(&self) -> String {
        self.frameworks
            .first()
            .map(|(id, _)| id.clone())
            .unwrap_or_default()
    }

    fn fill(&self, framework_id: &mut String, offer_ids: &mut Vec<String>) {
        if framework_id.is_empty() {
            *framework_id = self.first_framework();
        }
        if offer_ids.is_empty() {
            offer_ids.extend(
                self.offers
                    .iter()
                    .filter(|(f, _)| f == framework_id)
                    .map(|(_, o)| o.clone()),
            );
        }
    }

    /// Runs the allocator and drains every stream, tracking offers.
    fn settle(&mut self) {
        self.m.allocate(self.now);
        for (_, _, rx) in &mut self.agents {
            while rx.try_recv().is_ok() {}
        }
        for (fid, rx) in &mut self.frameworks {
            while let Ok(ev) = rx.try_recv() {
                match ev.ok().and_then(|e| e.event) {
                    Some(event::Event::Offers(o)) => {
                        self.offers
                            .extend(o.offers.into_iter().map(|o| (fid.clone(), o.id)));
                    }
                    Some(event::Event::Rescind(r)) => self.offers.retain(|(_, o)| *o != r.offer_id),
                    _ => {}
                }
            }
        }
    }

    fn step(&mut self, kind: u8, payload: &[u8]) {
        let wall = self.wall();
        match kind % 10 {
            0 => match AgentMessage::decode(payload).ok().and_then(|m| m.message) {
                Some(agent_message::Message::Register(r)) => self.register(r),
                Some(msg) => self.agent(msg),
                None => {}
            },
            1 => {
                if let Ok(s) = v1::SubscribeRequest::decode(payload) {
                    self.subscribe(s.framework_info.unwrap_or_default());
                }
            }
            2 => {
                if let Ok(mut a) = v1::AcceptRequest::decode(payload) {
                    self.fill(&mut a.framework_id, &mut a.offer_ids);
                    let used = a.offer_ids.clone();
                    let _ = self.m.accept(a, self.now, wall);
                    self.offers.retain(|(_, o)| !used.contains(o));
                }
            }
            3 => {
                if let Ok(mut d) = v1::DeclineRequest::decode(payload) {
                    self.fill(&mut d.framework_id, &mut d.offer_ids);
                    let used = d.offer_ids.clone();
                    let _ = self.m.decline(d, self.now);
                    self.offers.retain(|(_, o)| !used.contains(o));
                }
            }
            4 => {
                if let Ok(mut k) = v1::KillRequest::decode(payload) {
                    if k.framework_id.is_empty() {
                        k.framework_id = self.first_framework();
                    }
                    let _ = self.m.kill(k);
                }
            }
            5 => {
                if let Ok(mut a) = v1::AcknowledgeRequest::decode(payload) {
                    if a.framework_id.is_empty() {
                        a.framework_id = self.first_framework();
                    }
                    let _ = self.m.acknowledge(a);
                }
            }
            6 => {
                if let Ok(mut r) = v1::ReconcileRequest::decode(payload) {
                    if r.framework_id.is_empty() {
                        r.framework_id = self.first_framework();
                    }
                    let _ = self.m.reconcile(r, wall);
                }
            }
            7 => {
                let secs = payload.first().copied().unwrap_or(1);
                self.now += Duration::from_secs(u64::from(secs));
                let wall = self.wall();
                self.m.tick(self.now, wall);
            }
            8 => {
                let fid = self.first_framework();
                let _ = match payload.first().copied().unwrap_or(0) % 4 {
                    0 => self.m.revive(&fid),
                    1 => self.m.suppress(&fid),
                    2 => self.m.teardown(&fid, wall),
                    _ => {
                        if let Some((id, conn, _)) = self.agents.last() {
                            self.m.agent_disconnected(&id.clone(), *conn);
                        }
                        Ok(())
                    }
                };
            }
            _ => {
                if let Ok(text) = std::str::from_utf8(payload) {
                    let (role, value) = text.split_once('=').unwrap_or((text, "1"));
                    if let Ok(w) = value.parse::<f64>() {
                        let _ = self.m.set_weight(role, w);
                    }
                }
            }
        }
        self.settle();
    }
}

fuzz_target!(|data: &[u8]| {
    let mut w = World::new();
    let mut rest = data;
    while rest.len() >= 3 {
        let kind = rest[0];
        let len = usize::from(u16::from_le_bytes([rest[1], rest[2]])).min(rest.len() - 3);
        let (payload, tail) = rest[3..].split_at(len);
        w.step(kind, payload);
        rest = tail;
    }
    let _ = w.m.state_json(0.0, "fuzz");
    let _ = w.m.metrics_text(Duration::from_secs(1));
});
