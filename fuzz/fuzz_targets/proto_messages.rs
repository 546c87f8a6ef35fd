//! Every protobuf message brim decodes off the network (agent stream both ways, scheduler
//! calls, scheduler events), each followed by the resource validation the receiver runs
//! (`Resources::from_proto`, `from_proto_revocable`) on every resource list inside. The first
//! byte picks the message type. Never a panic; what decodes re-encodes and decodes to itself.
#![no_main]

use brim_proto::v1::{self, agent_message, event, master_message, operation};
use brim_proto::Resources;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fn check(list: &[v1::Resource]) {
    if let Ok(r) = Resources::from_proto(list) {
        // What validated survives its own encoding.
        assert_eq!(Resources::from_proto(&r.to_proto()).as_ref(), Ok(&r));
    }
    if let Ok(r) = Resources::from_proto_revocable(list) {
        assert_eq!(
            Resources::from_proto_revocable(&r.to_proto_with(true)).as_ref(),
            Ok(&r)
        );
    }
}

fn task(t: &v1::TaskInfo) {
    check(&t.resources);
}

fn round_trip<M: Message + Default + PartialEq + std::fmt::Debug>(m: &M) {
    let again = M::decode(m.encode_to_vec().as_slice()).expect("own encoding decodes");
    // NaN doubles are the only values that are not equal to themselves.
    if format!("{m:?}").contains("NaN") {
        return;
    }
    assert_eq!(&again, m);
}

fn decode<M: Message + Default + PartialEq + std::fmt::Debug>(bytes: &[u8]) -> Option<M> {
    let m = M::decode(bytes).ok()?;
    round_trip(&m);
    Some(m)
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, bytes)) = data.split_first() else {
        return;
    };
    match kind % 8 {
        0 => {
            let Some(m) = decode::<v1::AgentMessage>(bytes) else {
                return;
            };
            match m.message {
                Some(agent_message::Message::Register(r)) => {
                    if let Some(info) = &r.agent_info {
                        check(&info.resources);
                    }
                    for t in r.tasks.iter().filter_map(|t| t.task.as_ref()) {
                        task(t);
                    }
                }
                Some(agent_message::Message::Slack(s)) => {
                    check(&s.revocable);
                    check(&s.used_estimate);
                }
                _ => {}
            }
        }
        1 => {
            let Some(m) = decode::<v1::MasterMessage>(bytes) else {
                return;
            };
            if let Some(master_message::Message::RunTask(r)) = &m.message {
                if let Some(t) = &r.task {
                    task(t);
                }
            }
        }
        2 => {
            let _ = decode::<v1::SubscribeRequest>(bytes);
        }
        3 => {
            let Some(a) = decode::<v1::AcceptRequest>(bytes) else {
                return;
            };
            for op in &a.operations {
                if let Some(operation::Operation::Launch(l)) = &op.operation {
                    l.task_infos.iter().for_each(task);
                }
            }
        }
        4 => {
            let Some(e) = decode::<v1::Event>(bytes) else {
                return;
            };
            if let Some(event::Event::Offers(o)) = &e.event {
                for offer in &o.offers {
                    check(&offer.resources);
                }
            }
        }
        5 => {
            let _ = decode::<v1::DeclineRequest>(bytes);
            let _ = decode::<v1::KillRequest>(bytes);
        }
        6 => {
            let _ = decode::<v1::AcknowledgeRequest>(bytes);
            let _ = decode::<v1::ReconcileRequest>(bytes);
        }
        _ => {
            let _ = decode::<v1::Resource>(bytes).map(|r| check(std::slice::from_ref(&r)));
        }
    }
});
