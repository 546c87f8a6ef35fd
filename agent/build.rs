//! Compiles `brim-supervisor` (`supervisor/main.rs`, std only) with the same `rustc` for the
//! same target, into `OUT_DIR`; `sys.rs` embeds it (`include_bytes!`) and execs it from a
//! memfd. Statically linked when the C library allows it (no dynamic loader work per launch,
//! fewer private pages per supervisor), dynamically otherwise.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=supervisor/main.rs");
    println!("cargo:rerun-if-changed=supervisor/spec.rs");
    println!("cargo:rerun-if-changed=supervisor/clone3.rs");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let target = std::env::var("TARGET").expect("cargo sets TARGET");
    let bin = out.join("brim-supervisor");
    let compile = |static_crt: bool| {
        let mut c = Command::new(&rustc);
        c.args(["--edition", "2021", "--crate-name", "brim_supervisor"])
            .args([
                "--crate-type",
                "bin",
                "-C",
                "opt-level=3",
                "-C",
                "panic=abort",
            ])
            .args(["-C", "strip=symbols", "-C", "codegen-units=1"])
            .args(["--target", &target])
            .arg("supervisor/main.rs")
            .arg("-o")
            .arg(&bin);
        if static_crt {
            c.args(["-C", "target-feature=+crt-static"]);
        }
        c.status().is_ok_and(|s| s.success())
    };
    if !compile(true) && !compile(false) {
        panic!(
            "cannot compile agent/supervisor/main.rs with {:?} for {target}: see the errors above",
            rustc
        );
    }
}
