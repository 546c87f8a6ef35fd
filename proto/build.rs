//! Compiles proto/brim/v1/*.proto with protox (pure Rust, no protoc needed), and the vendored
//! Apache Mesos v1 protos (proto/mesos/v1, Apache-2.0) into a descriptor set that the Mesos
//! API edge uses to transcode protobuf bodies (`src/mesos.rs`).
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

    let mesos = [
        "mesos/v1/mesos.proto",
        "mesos/v1/scheduler/scheduler.proto",
        "mesos/v1/executor/executor.proto",
    ];
    for f in &mesos {
        println!("cargo:rerun-if-changed={f}");
    }
    let set = protox::Compiler::new(["."])
        .and_then(|mut c| {
            c.include_imports(true).include_source_info(false);
            c.open_files(mesos)?;
            Ok(c.encode_file_descriptor_set())
        })
        .unwrap_or_else(|e| panic!("vendored Mesos protos do not compile: {e}"));
    let out = std::env::var("OUT_DIR").unwrap_or_else(|e| panic!("OUT_DIR: {e}"));
    let path = std::path::Path::new(&out).join("mesos_v1.bin");
    std::fs::write(&path, set).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}
