//! The OCI rows of `cargo xtask bench launch`: `/bin/true` in the busybox image
//! (scripts/busybox-image.sh) launched through brim one task at a time (accept →
//! TASK_FINISHED), next to plain `crun run` of a bundle of the same image with the same
//! runtime spec, in the same run. brim's overhead over crun is the difference of the medians.
//!
//! Plain crun runs exactly as the agent runs it (`--cgroup-manager=disabled`, and on hybrid
//! hosts inside a private mount namespace without the cgroup2 mount: crun 1.8 refuses
//! hybrid hosts otherwise, see docs/CONTAINERIZERS.md) and in a cpu cgroup with the task's
//! share (0.1 cpus): under CPU contention a runtime at that share runs much slower than one
//! in the root cgroup, and the task's limits are part of the workload, not of brim's
//! overhead. The comparison isolates what brim adds: offer/accept, provisioning (overlay
//! mount of the cached layer, config.json), supervisor, cgroups, checkpoints and status
//! updates.
//!
//! The baseline is crun started lean: the forked child joins the cgroup and makes the mount
//! namespace itself before it execs crun, so nothing but crun runs (what crun costs on a
//! pure cgroup2 host, where no namespace is needed). The same run also times crun as an
//! operator would type it on this host (`sh` to join the cgroup, `unshare … sh -c 'umount
//! …; exec crun'`), which pays for four more programs: reported, not the target's baseline.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use brim_agent::containerizer::{oci, store};
use brim_framework::{DriverHandle, Resources, TaskBuilder};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::launch::{percentile, time_one_launch, Event, Reached};

const TASK_CPUS: f64 = 0.1;

/// A cpu cgroup with the task's share for plain crun; its `cgroup.procs` (removed on drop).
struct CpuCgroup(std::path::PathBuf);

impl CpuCgroup {
    fn new(name: &str) -> Result<CpuCgroup> {
        let v1 = Path::new("/sys/fs/cgroup/cpu");
        let (dir, file, value) = if v1.join("cpu.shares").exists() {
            (
                v1.join(name),
                "cpu.shares",
                brim_agent::cgroups::hybrid::cpu_shares(TASK_CPUS),
            )
        } else {
            (
                Path::new("/sys/fs/cgroup").join(name),
                "cpu.weight",
                brim_agent::cgroups::v2::cpu_weight(TASK_CPUS),
            )
        };
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(dir.join(file), value.to_string())
            .with_context(|| format!("setting {file} of {}", dir.display()))?;
        Ok(CpuCgroup(dir))
    }
    fn procs(&self) -> std::path::PathBuf {
        self.0.join("cgroup.procs")
    }
}

impl Drop for CpuCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[derive(Serialize, Clone, Copy, Debug)]
pub(crate) struct OciReport {
    pub(crate) runs: usize,
    /// accept → TASK_FINISHED of `/bin/true` in the image, one task at a time (layer cached).
    pub(crate) brim_p50_ms: f64,
    pub(crate) brim_p99_ms: f64,
    /// The first launch (the layer unpacked into the cache).
    pub(crate) brim_cold_ms: f64,
    /// Wall time of `crun run` of the same image's bundle (create, start, wait, delete),
    /// started lean: fork, join the cpu cgroup (and on hybrid hosts make the private mount
    /// namespace) in the child, exec crun.
    pub(crate) crun_p50_ms: f64,
    pub(crate) crun_p99_ms: f64,
    /// The same, started as an operator would type it here: `sh` to join the cgroup and,
    /// on hybrid hosts, `unshare … sh -c 'umount -l …; exec crun …'` (docs/CONTAINERIZERS.md).
    pub(crate) crun_by_hand_p50_ms: f64,
    /// (brim p50 − crun p50) / crun p50, in %.
    pub(crate) overhead_pct: f64,
}

fn build_image(work: &Path) -> Result<std::path::PathBuf> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/busybox-image.sh");
    let out = work.join("busybox-oci");
    let st = Command::new(&script)
        .arg(&out)
        .status()
        .with_context(|| format!("running {}", script.display()))?;
    if !st.success() {
        bail!("scripts/busybox-image.sh failed (is busybox-static installed?)");
    }
    Ok(out)
}

/// Launches `/bin/true` in `image` and waits for its end; returns accept → terminal (ms).
async fn one(
    rx: &mut mpsc::UnboundedReceiver<Event>,
    h: &DriverHandle,
    image: &str,
    id: &str,
) -> Result<f64> {
    let per = Resources::parse(&format!("cpus:{TASK_CPUS};mem:32"))?;
    let b = TaskBuilder::new(id, "oci")
        .command(["/bin/true"])
        .image(image);
    time_one_launch(rx, h, id, b, &per, Duration::from_secs(60), |st| {
        if st == brim_framework::v1::TaskState::TaskFinished {
            Reached::Yes
        } else if st.is_terminal() {
            Reached::Failed
        } else {
            Reached::NotYet
        }
    })
    .await
}

/// `crun run` of a bundle of `image` (provisioned with brim's own store, same spec), `k`
/// times lean and `k` times as typed by hand, alternately; their wall times (ms).
fn plain_crun(work: &Path, image: &Path, k: usize) -> Result<(Vec<f64>, Vec<f64>)> {
    let crun = oci::find_runtime("crun").map_err(anyhow::Error::msg)?;
    let fetcher = Arc::new(brim_agent::fetcher::Fetcher::new(
        brim_agent::fetcher::FetcherConfig::new(&work.join("crun")),
    ));
    let st = store::ImageStore::new(
        store::StoreConfig {
            root: work.join("crun/oci"),
            cache_bytes: 1 << 30,
            limits: Default::default(),
            overlay: true,
        },
        fetcher,
    );
    let image = brim_framework::v1::Image {
        kind: 0,
        uri: image.display().to_string(),
    };
    let p = st.provision(&image, "bundle")?;
    let sandbox = work.join("crun/sandbox");
    std::fs::create_dir_all(&sandbox)?;
    let spec = oci::runtime_spec(&oci::SpecInput {
        args: vec!["/bin/true".into()],
        env: vec!["PATH=/bin".into()],
        cwd: oci::SANDBOX_IN_CONTAINER.into(),
        user: None,
        sandbox,
        hostname: "crun-bench".into(),
        cgroups_path: None,
        volumes: Vec::new(),
    });
    let bundle = st.container_dir("bundle");
    std::fs::write(bundle.join("config.json"), serde_json::to_vec(&spec)?)?;
    let state = work.join("crun/state");
    let hybrid = Path::new("/sys/fs/cgroup/unified/cgroup.controllers").exists();
    let cg = CpuCgroup::new(&format!("brim-bench-crun-{}", std::process::id()))?;
    let mut lean = Vec::with_capacity(k);
    let mut wrapped = Vec::with_capacity(k);
    for i in 0..2 * k {
        let id = format!("crun-bench-{i}");
        // Alternately: lean, then as an operator types it (wrapper programs).
        let by_hand = i % 2 == 1;
        let mut cmd = if by_hand {
            // Joins the cpu cgroup, then execs the rest.
            let mut cmd = Command::new("/bin/sh");
            cmd.arg("-c")
                .arg("echo $$ > \"$0\" && shift && exec \"$@\"")
                .arg(cg.procs())
                .arg("-");
            if hybrid {
                cmd.args([
                    "unshare",
                    "--mount",
                    "--propagation",
                    "private",
                    "--",
                    "/bin/sh",
                    "-c",
                    "umount -l /sys/fs/cgroup/unified 2>/dev/null; exec \"$0\" \"$@\"",
                ]);
            }
            cmd.arg(&crun.path);
            cmd
        } else {
            lean_command(&crun.path, &cg.procs(), hybrid)?
        };
        cmd.arg("--root")
            .arg(&state)
            .args(["--cgroup-manager=disabled", "run", "--bundle"])
            .arg(&bundle)
            .arg(&id)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let t0 = Instant::now();
        let s = cmd.status().context("running crun")?;
        let ms = t0.elapsed().as_secs_f64() * 1000.0;
        if !s.success() {
            bail!("plain `crun run` failed: {s}");
        }
        if by_hand {
            wrapped.push(ms);
        } else {
            lean.push(ms);
        }
    }
    debug_assert!(p.rootfs.ends_with("rootfs"));
    drop(cg);
    st.release("bundle")?;
    Ok((lean, wrapped))
}

/// `crun` started with nothing in between: the child joins the cpu cgroup and, on a
/// hybrid host, makes its private mount namespace without the cgroup2 mount itself
/// (between fork and exec), as brim's supervisor does — the cheapest way to run crun here.
fn lean_command(crun: &Path, procs: &Path, hybrid: bool) -> Result<Command> {
    use std::os::unix::process::CommandExt;
    let procs = std::fs::OpenOptions::new()
        .write(true)
        .open(procs)
        .with_context(|| format!("opening {}", procs.display()))?;
    let mut cmd = Command::new(crun);
    // SAFETY: the closure runs between fork and exec and makes only async-signal-safe
    // raw calls on data allocated before the fork (the fd, C string literals).
    unsafe {
        cmd.pre_exec(move || {
            use std::os::fd::AsRawFd;
            if libc::write(procs.as_raw_fd(), b"0".as_ptr().cast(), 1) != 1 {
                return Err(std::io::Error::last_os_error());
            }
            if hybrid {
                if libc::unshare(libc::CLONE_NEWNS) != 0
                    || libc::mount(
                        c"none".as_ptr(),
                        c"/".as_ptr(),
                        std::ptr::null(),
                        libc::MS_REC | libc::MS_PRIVATE,
                        std::ptr::null(),
                    ) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                libc::umount2(c"/sys/fs/cgroup/unified".as_ptr(), libc::MNT_DETACH);
            }
            Ok(())
        });
    }
    Ok(cmd)
}

/// Runs both, interleaved in the same run (brim first, then crun, twice), `k` each.
pub(crate) async fn measure(
    rx: &mut mpsc::UnboundedReceiver<Event>,
    h: &DriverHandle,
    work: &Path,
    k: usize,
) -> Result<OciReport> {
    let image = build_image(work)?;
    let img = image.display().to_string();
    let cold = one(rx, h, &img, "oci-cold").await?;
    let mut brim = Vec::with_capacity(k);
    let mut crun = Vec::with_capacity(k);
    let mut by_hand = Vec::with_capacity(k);
    for half in 0..2 {
        for i in 0..k / 2 {
            brim.push(one(rx, h, &img, &format!("oci-{half}-{i}")).await?);
        }
        let (w, im) = (work.to_path_buf(), image.clone());
        let (lean, wrapped) = tokio::task::spawn_blocking(move || plain_crun(&w, &im, k / 2))
            .await
            .context("crun bench thread")??;
        crun.extend(lean);
        by_hand.extend(wrapped);
    }
    brim.sort_by(f64::total_cmp);
    crun.sort_by(f64::total_cmp);
    by_hand.sort_by(f64::total_cmp);
    let (b, c) = (percentile(&brim, 0.5), percentile(&crun, 0.5));
    Ok(OciReport {
        runs: brim.len(),
        brim_p50_ms: b,
        brim_p99_ms: percentile(&brim, 0.99),
        brim_cold_ms: cold,
        crun_p50_ms: c,
        crun_p99_ms: percentile(&crun, 0.99),
        crun_by_hand_p50_ms: percentile(&by_hand, 0.5),
        overhead_pct: (b - c) / c * 100.0,
    })
}
