//! Mesos v1 protobuf bodies (`application/x-protobuf` on `/api/v1/scheduler` and
//! `/api/v1/executor`): `brim_proto::mesos::decode` of every Mesos message (first byte picks),
//! and for scheduler calls the master's JSON call path on the transcoded JSON. Never a panic;
//! whatever decodes re-encodes, and re-decodes to the same JSON.
#![no_main]

use brim_proto::mesos::{decode, encode, MesosMessage};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let message = MesosMessage::ALL[usize::from(pick) % MesosMessage::ALL.len()];
    let Ok(json) = decode(message, body) else {
        return;
    };
    if message == MesosMessage::SchedulerCall {
        let _ = brim_master::mesos::fuzz_decode_call(json.to_string().as_bytes());
    }
    let again = match encode(message, &json) {
        Ok(bytes) => bytes,
        Err(e) => panic!("decoded {message:?} does not re-encode: {e}\n{json}"),
    };
    match decode(message, &again) {
        Ok(back) => assert_eq!(back, json, "{message:?} changed across a round trip"),
        Err(e) => panic!("re-encoded {message:?} does not decode: {e}\n{json}"),
    }
});
