//! The agent API's JSON calls (`POST /api/v1` and each task's socket: nested containers,
//! `brim_agent::nested::parse`). Never a panic; an accepted call names a nested container id
//! that is a plain file and cgroup name, one parent of the same kind, and a launch has a
//! program and no NUL bytes anywhere it reaches exec.
#![no_main]

use brim_agent::nested::{check_nested_id, parse, Request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(req) = parse(data) else {
        return;
    };
    assert!(check_nested_id(req.id()).is_ok(), "accepted id {:?}", req.id());
    let parent = req.parent();
    assert!(
        !parent.is_empty()
            && parent != "."
            && parent != ".."
            && parent
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')),
        "accepted parent {parent:?}"
    );
    if let Request::Launch { argv, env, .. } = &req {
        assert!(!argv.is_empty() && !argv[0].is_empty());
        assert!(argv.iter().all(|a| !a.contains('\0')));
        assert!(env
            .iter()
            .all(|(k, v)| !k.is_empty() && !k.contains(['=', '\0']) && !v.contains('\0')));
    }
});
