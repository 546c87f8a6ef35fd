//! ZooKeeper server replies as the master's leader publication reads them
//! (`brim_master::zk`): frame length prefixes, ConnectResponse, reply headers and the bodies
//! of create, getChildren and getData. Never a panic, never an allocation from a lying length.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    brim_master::zk::fuzz_decode(data);
});
