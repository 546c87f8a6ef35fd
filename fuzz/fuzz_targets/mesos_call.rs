//! Mesos v1 scheduler API call bodies (`POST /api/v1/scheduler`, JSON): the master's
//! `decode_call` plus the conversions of framework infos, task infos and resources that the
//! handlers apply before anything reaches the state actor. Never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = brim_master::mesos::fuzz_decode_call(data);
});
