//! `Resources::parse`, the operator syntax (`cpus:4;mem:1024;ports:[31000-32000]`) of agent
//! `--resources`, quotas and the CLI: never a panic, and every accepted input round-trips
//! through `Display` (parse(display(r)) == r), and through protobuf.
#![no_main]

use brim_proto::Resources;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(r) = Resources::parse(text) else {
        return;
    };
    let shown = r.to_string();
    let again = Resources::parse(&shown)
        .unwrap_or_else(|e| panic!("display of {text:?} is {shown:?}, which does not parse: {e}"));
    assert_eq!(again, r, "{text:?} -> {shown:?}");
    let proto = Resources::from_proto(&r.to_proto()).expect("own protobuf");
    assert_eq!(proto, r, "protobuf round trip of {text:?}");
    // Arithmetic on what was accepted stays panic-free.
    let mut sum = r.clone();
    sum.add(&again);
    assert!(sum.contains(&r));
    let diff = sum.checked_sub(&r).expect("a sum contains its parts");
    assert!(r.checked_sub(&r).is_some_and(|z| z.is_empty()));
    let mut back = diff;
    back.add(&r);
    assert!(back.contains(&r));
});
