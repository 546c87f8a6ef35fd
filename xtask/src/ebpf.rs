//! `cargo xtask ebpf [--out DIR] [--check]`: builds `agent-ebpf/src/*.bpf.c` into stripped
//! CO-RE objects.
//!
//! - default: regenerates `agent-ebpf/include/vmlinux.h` from the running kernel's BTF,
//!   compiles every program with the pinned flags into `agent-ebpf/obj/` (committed; the
//!   agent embeds them so `cargo build` needs no clang) and records the sha256 of every
//!   input in `agent-ebpf/obj/SOURCES.sha256`.
//! - `--out DIR`: compiles into DIR instead (CI points the agent's eBPF tests at it with
//!   `BRIM_EBPF_OBJ_DIR=DIR`, so the tests run on objects rebuilt by the pinned clang).
//! - `--check`: fails when the committed objects are stale, i.e. an input (source, header,
//!   flags) changed since they were built. Bytes of the objects themselves are not compared:
//!   they legitimately differ with the kernel BTF the CI machine has.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

const CLANG: &str = "clang-19";
const STRIP: &str = "llvm-strip-19";
/// Pinned compile flags (part of the freshness hash).
const CFLAGS: &[&str] = &[
    "-g",
    "-O2",
    "-Wall",
    "-Werror",
    "-target",
    "bpf",
    "-D__TARGET_ARCH_x86",
    "-Iinclude",
];

fn run(cmd: &mut Command) -> Result<std::process::Output> {
    let out = cmd.output().with_context(|| {
        format!("running {cmd:?} (install clang-19 llvm-19 libbpf-dev bpftool)")
    })?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

/// The `.bpf.c` sources, sorted.
fn sources(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir.join("src")).context("reading agent-ebpf/src")? {
        let name = e?.file_name().to_string_lossy().into_owned();
        if name.ends_with(".bpf.c") {
            out.push(name);
        }
    }
    out.sort();
    Ok(out)
}

/// `sha256  path` lines of every input plus the flags line: the freshness record.
fn inputs_digest(dir: &Path) -> Result<String> {
    let mut files: Vec<String> = sources(dir)?.iter().map(|s| format!("src/{s}")).collect();
    let mut headers: Vec<String> = std::fs::read_dir(dir.join("include"))
        .context("reading agent-ebpf/include")?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".h") && n != "vmlinux.h")
        .map(|n| format!("include/{n}"))
        .collect();
    headers.sort();
    files.extend(headers);
    let out = run(Command::new("sha256sum").current_dir(dir).args(&files))?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&format!("flags {} {}\n", CLANG, CFLAGS.join(" ")));
    Ok(text)
}

pub(crate) fn ebpf(root: &Path, args: &[&str]) -> Result<()> {
    let dir = root.join("agent-ebpf");
    let record = dir.join("obj").join("SOURCES.sha256");
    let mut out_dir: Option<PathBuf> = None;
    let mut check = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match *a {
            "--check" => check = true,
            "--out" => {
                let d = it.next().context("--out needs a directory")?;
                out_dir = Some(PathBuf::from(d));
            }
            other => {
                bail!("unknown argument {other}; usage: cargo xtask ebpf [--out DIR] [--check]")
            }
        }
    }
    if check {
        let want = inputs_digest(&dir)?;
        let have = std::fs::read_to_string(&record).unwrap_or_default();
        if want != have {
            bail!(
                "agent-ebpf/obj is stale: its inputs changed since the objects were built; run `cargo xtask ebpf` and commit agent-ebpf/obj\n--- recorded\n{have}--- now\n{want}"
            );
        }
        for s in sources(&dir)? {
            let o = dir.join("obj").join(s.replace(".c", ".o"));
            if !o.exists() {
                bail!("{} is missing: run `cargo xtask ebpf`", o.display());
            }
        }
        println!("agent-ebpf/obj is fresh");
        return Ok(());
    }
    let vmlinux = dir.join("include").join("vmlinux.h");
    let btf = run(Command::new("bpftool").args([
        "btf",
        "dump",
        "file",
        "/sys/kernel/btf/vmlinux",
        "format",
        "c",
    ]))?;
    std::fs::write(&vmlinux, &btf.stdout)
        .with_context(|| format!("writing {}", vmlinux.display()))?;
    let out = match &out_dir {
        Some(d) => std::path::absolute(d)?,
        None => dir.join("obj"),
    };
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    for s in sources(&dir)? {
        let obj = out.join(s.replace(".c", ".o"));
        // Relative paths: the line info kept in .BTF.ext names `src/<file>`, not this checkout.
        run(Command::new(CLANG)
            .current_dir(&dir)
            .args(CFLAGS)
            .arg("-c")
            .arg(format!("src/{s}"))
            .arg("-o")
            .arg(&obj))?;
        run(Command::new(STRIP).arg("-g").arg(&obj))?;
        println!("built {}", obj.display());
    }
    if out_dir.is_none() {
        std::fs::write(&record, inputs_digest(&dir)?)
            .with_context(|| format!("writing {}", record.display()))?;
        println!("recorded inputs in {}", record.display());
    }
    Ok(())
}
