//! Compiles proto/brim/v1/*.proto with protox (pure Rust, no protoc needed).
fn main() {
    let files = [
        "brim/v1/common.proto",
        "brim/v1/scheduler.proto",
        "brim/v1/agent.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = match protox::compile(files, ["."]) {
        Ok(fds) => fds,
        Err(e) => panic!("proto files do not compile: {e}"),
    };
    if let Err(e) = tonic_prost_build::configure().compile_fds(fds) {
        panic!("tonic code generation failed: {e}");
    }
}
