//! The operator-facing text of the real binary: completion scripts that the shells accept,
//! long help with examples, `brim version`. No cluster needed.

use std::process::{Command, Output, Stdio};

const BRIM: &str = env!("CARGO_BIN_EXE_brim");

fn brim(args: &[&str]) -> Output {
    Command::new(BRIM)
        .args(args)
        .env_remove("BRIM_MASTER")
        .stdin(Stdio::null())
        .output()
        .expect("run brim")
}

fn stdout_ok(args: &[&str]) -> String {
    let out = brim(args);
    assert!(
        out.status.success(),
        "brim {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// Checks a script's syntax with `shell -n` when that shell is installed.
fn shell_accepts(shell: &str, script: &str) {
    let Some(_) = std::env::var_os("PATH")
        .and_then(|p| std::env::split_paths(&p).find(|d| d.join(shell).is_file()))
    else {
        eprintln!("completions: {shell} not installed; syntax not checked");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("brim.completion");
    std::fs::write(&path, script).expect("write script");
    let out = Command::new(shell)
        .arg("-n")
        .arg(&path)
        .output()
        .expect("run shell");
    assert!(
        out.status.success(),
        "{shell} -n rejects the script: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn completion_scripts_cover_every_subcommand() {
    for shell in ["bash", "zsh", "fish"] {
        let script = stdout_ok(&["completions", shell]);
        for sub in ["dev", "run", "tasks", "top", "completions", "version"] {
            assert!(script.contains(sub), "{shell} script lacks `{sub}`");
        }
        assert!(
            script.contains("interval"),
            "{shell} script lacks top's flags"
        );
        shell_accepts(shell, &script);
    }
    let out = brim(&["completions", "tcsh"]);
    assert!(!out.status.success(), "unknown shells are refused");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bash") && err.contains("zsh"), "{err}");
}

#[test]
fn long_help_has_examples() {
    let top = stdout_ok(&["--help"]);
    assert!(top.contains("Getting started"), "{top}");
    assert!(top.contains("BRIM_MASTER"), "{top}");
    for (cmd, want) in [
        ("run", "Examples:"),
        ("top", "Keys:"),
        ("completions", "Install:"),
        ("tasks", "Examples:"),
        ("dev", "Examples:"),
    ] {
        let help = stdout_ok(&["help", cmd]);
        assert!(help.contains(want), "brim help {cmd}:\n{help}");
    }
    // Short help stays short.
    let short = stdout_ok(&["top", "-h"]);
    assert!(!short.contains("Keys:"), "{short}");
}

#[test]
fn version_prints_client_and_explains_an_unreachable_master() {
    let v = stdout_ok(&["version"]);
    assert_eq!(v.trim(), format!("brim {}", env!("CARGO_PKG_VERSION")));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let master = format!("127.0.0.1:{port}");
    let v = stdout_ok(&["version", "--master", &master]);
    assert!(v.contains(&format!("master {master}: unreachable")), "{v}");
    let json: serde_json::Value =
        serde_json::from_str(&stdout_ok(&["version", "--json"])).expect("version --json is JSON");
    assert_eq!(json["client"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(
        stdout_ok(&["--version"]).trim(),
        format!("brim {}", env!("CARGO_PKG_VERSION"))
    );
}
