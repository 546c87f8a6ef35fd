//! Service specs of the services framework (TOML and JSON, as `brim services` and the
//! framework's HTTP API read them), then validation and what the scheduler derives from a
//! valid spec (health check protobuf, backoff): never a panic.
#![no_main]

use brim_frameworks::services::spec::ServiceSpec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let parsed = if mode % 2 == 0 {
        ServiceSpec::from_toml(text)
    } else {
        ServiceSpec::from_json(text)
    };
    let Ok(spec) = parsed else {
        return;
    };
    let Ok(valid) = spec.validate() else {
        return;
    };
    let spec = &valid.spec;
    if let Some(hc) = &spec.health_check {
        let _ = hc.to_proto();
    }
    for failures in [0, 1, 7, 64, u32::MAX] {
        let _ = spec.backoff.delay(failures);
    }
    assert!(spec.same_except_instances(spec));
    // The framework stores specs as JSON: a valid spec survives that.
    let json = serde_json::to_string(spec).expect("a valid spec serializes");
    assert_eq!(
        &ServiceSpec::from_json(&json).expect("own JSON"),
        spec,
        "{json}"
    );
});
