//! `cargo xtask bench launch [--tasks N]`: native task launch throughput and latency on one
//! agent (root, cgroups). Runs a master in this process, the agent in a child process (this
//! binary re-executed as `__launch-agent`, so its memory can be measured on its own) and a
//! framework on the SDK. Launches N `/bin/true` tasks, then N `sleep 60` tasks, each batch in
//! one accept, and measures launches/s and accept→TASK_RUNNING latency; times N direct
//! fork/exec of `/bin/true` in the same run as the floor; with the N sleepers running it
//! reads the agent's RSS and the supervisors' PSS. Writes `bench-results/launch.json` and
//! prints the table for docs/BENCHMARKS.md.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use brim_framework::v1::{Offer, TaskStatus};
use brim_framework::{
    Driver, DriverConfig, DriverHandle, OfferPacker, Resources, Scheduler, TaskBuilder,
};
use serde::Serialize;
use tokio::sync::mpsc;

const AGENT_RESOURCES: &str = "cpus:64;mem:65536;disk:100000";
const TASK_RESOURCES: &str = "cpus:0.01;mem:16";

#[derive(Serialize)]
struct Report {
    native_tasks_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    fork_exec_per_s: f64,
    agent_bytes_per_task: f64,
    tasks: usize,
    sleep_tasks_per_s: f64,
    sleep_p50_ms: f64,
    sleep_p99_ms: f64,
    agent_rss_idle_bytes: u64,
    agent_rss_loaded_bytes: u64,
    supervisor_pss_bytes_per_task: f64,
    supervisors_seen: usize,
    single_p50_ms: f64,
    single_p99_ms: f64,
    cpus: usize,
    /// `some avg60` of /proc/pressure/cpu (% of time runnable tasks waited for a CPU) at the
    /// start and the end of the run: other load on the machine.
    cpu_pressure_start: f64,
    cpu_pressure_end: f64,
    /// OCI tasks (busybox image, crun) against plain `crun run` of the same bundle
    /// (`oci_launch.rs`); `None` when crun or busybox-static is missing.
    oci: Option<crate::oci_launch::OciReport>,
}

/// `some avg60` of the CPU pressure stall information (NaN without PSI).
fn cpu_pressure() -> f64 {
    std::fs::read_to_string("/proc/pressure/cpu")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("some"))?
                .split_whitespace()
                .find_map(|f| f.strip_prefix("avg60="))?
                .parse()
                .ok()
        })
        .unwrap_or(f64::NAN)
}

/// What a bench framework hears, forwarded to the bench's loop.
pub(crate) enum Event {
    Offers(Vec<Offer>),
    Update(TaskStatus),
}

/// A scheduler that forwards every offer and update to the bench.
pub(crate) struct Forward(pub(crate) mpsc::UnboundedSender<Event>);

impl Scheduler for Forward {
    async fn offers(&mut self, _d: &DriverHandle, offers: Vec<Offer>) {
        let _ = self.0.send(Event::Offers(offers));
    }
    async fn update(&mut self, _d: &DriverHandle, status: TaskStatus) {
        let _ = self.0.send(Event::Update(status));
    }
}

/// The agent child: killed (SIGTERM, so it cleans its tasks and cgroups) on drop.
pub(crate) struct AgentProc(pub(crate) Child);

impl Drop for AgentProc {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

pub(crate) fn bench_launch(root: &Path, rest: &[&str]) -> Result<()> {
    let tasks = match rest {
        [] => 1000,
        ["--tasks", n] => n.parse().context("--tasks takes a number")?,
        _ => bail!("usage: cargo xtask bench launch [--tasks N]"),
    };
    let uid = std::fs::read_to_string("/proc/self/status")?
        .lines()
        .find_map(|l| {
            l.strip_prefix("Uid:")
                .map(|v| v.split_whitespace().next().unwrap_or("").to_string())
        })
        .unwrap_or_default();
    if uid != "0" {
        bail!("bench launch needs root (cgroups, supervisors): run it with sudo");
    }
    let rt = tokio::runtime::Runtime::new()?;
    let report = rt.block_on(run(tasks))?;
    let out = root.join("bench-results");
    std::fs::create_dir_all(&out)?;
    let path = out.join("launch.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")?;
    if let Some(o) = &report.oci {
        let oci_path = out.join("launch-oci.json");
        std::fs::write(&oci_path, serde_json::to_string_pretty(o)? + "\n")?;
    }
    println!("{}", table(&report));
    println!("wrote {}", path.display());
    Ok(())
}

fn table(r: &Report) -> String {
    let mib = |b: f64| b / (1024.0 * 1024.0);
    let oci = match &r.oci {
        Some(o) => format!(
            "\n| OCI `/bin/true` (busybox image) accept→FINISHED p50 / p99, one at a time ({} runs; first, unpacking: {:.0} ms) | {:.1} ms / {:.1} ms | — |\n\
             | plain `crun run` of the same bundle p50 / p99 (lean: no wrapper programs) | {:.1} ms / {:.1} ms | — |\n\
             | the same `crun run` as typed by hand (`sh`, `unshare` wrappers) p50 | {:.1} ms | — |\n\
             | brim's overhead over lean crun (p50) | {:.0} % | ≤ 20 % |",
            o.runs, o.brim_cold_ms, o.brim_p50_ms, o.brim_p99_ms, o.crun_p50_ms, o.crun_p99_ms, o.crun_by_hand_p50_ms, o.overhead_pct
        ),
        None => "\n| OCI rows | skipped (crun or busybox-static missing) | — |".to_string(),
    };
    let native = format!(
        "| metric | measured | target |\n|---|---|---|\n\
         | `/bin/true` launches/s ({n} tasks, one accept) | {:.0} | ≥ 200 |\n\
         | accept→RUNNING p50 / p99, one task at a time on an idle agent | {:.1} ms / {:.1} ms | p50 ≤ 10 ms |\n\
         | accept→RUNNING p50 / p99 (`/bin/true`) | {:.1} ms / {:.1} ms | p50 ≤ 10 ms |\n\
         | `sleep 60` launches/s ({n} tasks) | {:.0} | ≥ 200 |\n\
         | accept→RUNNING p50 / p99 (`sleep 60`) | {:.1} ms / {:.1} ms | p50 ≤ 10 ms |\n\
         | direct fork/exec of `/bin/true` (floor) | {:.0}/s | — |\n\
         | agent RSS idle → with {n} running | {:.1} MiB → {:.1} MiB | — |\n\
         | agent memory per running task | {:.1} KiB | ≤ 1 MiB |\n\
         | supervisor PSS per task ({} seen) | {:.1} KiB | — |\n\
         | CPU pressure (PSI some avg60) start → end | {:.0} % → {:.0} % | — |",
        r.native_tasks_per_s,
        r.single_p50_ms,
        r.single_p99_ms,
        r.p50_ms,
        r.p99_ms,
        r.sleep_tasks_per_s,
        r.sleep_p50_ms,
        r.sleep_p99_ms,
        r.fork_exec_per_s,
        mib(r.agent_rss_idle_bytes as f64),
        mib(r.agent_rss_loaded_bytes as f64),
        r.agent_bytes_per_task / 1024.0,
        r.supervisors_seen,
        r.supervisor_pss_bytes_per_task / 1024.0,
        r.cpu_pressure_start,
        r.cpu_pressure_end,
        n = r.tasks,
    );
    native + &oci
}

/// The agent process (`xtask __launch-agent MASTER WORK_DIR PORT CGROUP`).
pub(crate) fn agent_main(args: &[&str]) -> Result<()> {
    let [master, work_dir, port, cgroup] = args else {
        bail!("usage: xtask __launch-agent MASTER WORK_DIR PORT CGROUP");
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    let mut config = brim_agent::AgentConfig::new(*master, PathBuf::from(work_dir));
    config.http_addr = SocketAddr::from(([127, 0, 0, 1], port.parse::<u16>()?));
    config.resources = Some(Resources::parse(AGENT_RESOURCES)?);
    config.cgroup_name = (*cgroup).to_string();
    config.allow_root_tasks = true;
    config.default_kill_grace = Duration::from_millis(500);
    config.heartbeat_interval = Duration::from_secs(5);
    run_agent_until_sigterm(config)
}

/// Runs an agent in this process until SIGTERM (the benches' agent children).
pub(crate) fn run_agent_until_sigterm(config: brim_agent::AgentConfig) -> Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let handle = brim_agent::start(config).await?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        handle
            .run_until(async move {
                term.recv().await;
            })
            .await?;
        Ok(())
    })
}

fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// PSS of every direct child of `parent` (the task supervisors), and how many there are.
fn children_pss(parent: u32) -> (u64, usize) {
    let mut total = 0;
    let mut n = 0;
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return (0, 0);
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let ppid = status
            .lines()
            .find_map(|l| l.strip_prefix("PPid:"))
            .and_then(|v| v.trim().parse::<u32>().ok());
        if ppid != Some(parent) {
            continue;
        }
        let pss = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("Pss:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0);
        total += pss * 1024;
        n += 1;
    }
    (total, n)
}

pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Waits for an offer with at least `need` (declining the others).
pub(crate) async fn offer(
    rx: &mut mpsc::UnboundedReceiver<Event>,
    h: &DriverHandle,
    need: &Resources,
) -> Result<Offer> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let ev = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .context("no offer big enough within 60 s (is the agent up?)")?;
        match ev {
            Some(Event::Offers(offers)) => {
                let mut found = None;
                for o in offers {
                    let fits = Resources::from_proto(&o.resources).is_ok_and(|r| r.contains(need));
                    if fits && found.is_none() {
                        found = Some(o);
                    } else {
                        let _ = h.decline(vec![o.id], Some(0.2)).await;
                    }
                }
                if let Some(o) = found {
                    return Ok(o);
                }
            }
            Some(Event::Update(_)) => {}
            None => bail!("framework driver stopped"),
        }
    }
}

/// Launches `n` tasks running `cmd` in one accept; returns (launches/s, sorted latencies ms)
/// once every task reached RUNNING (or ended).
async fn phase(
    rx: &mut mpsc::UnboundedReceiver<Event>,
    h: &DriverHandle,
    prefix: &str,
    argv: &[&str],
    n: usize,
) -> Result<(f64, Vec<f64>, usize)> {
    let per = Resources::parse(TASK_RESOURCES)?;
    let mut need = Resources::new();
    for _ in 0..n {
        need.add(&per);
    }
    let o = offer(rx, h, &need).await?;
    let mut packer = OfferPacker::new(&o)?;
    let mut infos = Vec::with_capacity(n);
    for i in 0..n {
        let b = TaskBuilder::new(format!("{prefix}-{i}"), prefix)
            .command(argv.iter().copied())
            .resources(&per);
        infos.push(packer.place(&b)?);
    }
    let t0 = Instant::now();
    h.launch(&o.id, infos).await.context("accept")?;
    let mut launched: HashMap<String, f64> = HashMap::new();
    let mut ended = 0;
    let mut last = t0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    while launched.len() < n {
        let ev = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .with_context(|| {
                format!(
                    "only {} of {n} {prefix} tasks running after 300 s",
                    launched.len()
                )
            })?;
        match ev {
            Some(Event::Update(s)) if s.task_id.starts_with(prefix) => {
                use brim_framework::v1::TaskState::*;
                let st = s.state();
                if st.is_terminal() {
                    ended += 1;
                }
                if st == TaskRunning || st.is_terminal() {
                    if matches!(st, TaskFailed | TaskError | TaskLost | TaskDropped) {
                        bail!("task {} ended {:?}: {}", s.task_id, st, s.message);
                    }
                    if let std::collections::hash_map::Entry::Vacant(e) = launched.entry(s.task_id)
                    {
                        last = Instant::now();
                        e.insert(last.duration_since(t0).as_secs_f64() * 1000.0);
                    }
                }
            }
            Some(Event::Offers(offers)) => {
                let ids = offers.into_iter().map(|o| o.id).collect();
                let _ = h.decline(ids, Some(0.2)).await;
            }
            Some(_) => {}
            None => bail!("framework driver stopped"),
        }
    }
    let rate = n as f64 / last.duration_since(t0).as_secs_f64();
    let mut lat: Vec<f64> = launched.into_values().collect();
    lat.sort_by(f64::total_cmp);
    Ok((rate, lat, ended))
}

/// Launches `k` `/bin/true` tasks one at a time on an otherwise idle agent; returns the
/// sorted accept→RUNNING latencies (ms).
async fn single(
    rx: &mut mpsc::UnboundedReceiver<Event>,
    h: &DriverHandle,
    k: usize,
) -> Result<Vec<f64>> {
    let per = Resources::parse(TASK_RESOURCES)?;
    let mut lat = Vec::with_capacity(k);
    for i in 0..k {
        let id = format!("single-{i}");
        let b = TaskBuilder::new(&id, "single").command(["/bin/true"]);
        lat.push(
            time_one_launch(rx, h, &id, b, &per, Duration::from_secs(30), |st| {
                use brim_framework::v1::TaskState::*;
                if matches!(st, TaskFailed | TaskError | TaskLost | TaskDropped) {
                    Reached::Failed
                } else if st == TaskRunning || st.is_terminal() {
                    Reached::Yes
                } else {
                    Reached::NotYet
                }
            })
            .await?,
        );
    }
    lat.sort_by(f64::total_cmp);
    Ok(lat)
}

/// Whether a task's update is the one a timed launch waits for.
pub(crate) enum Reached {
    Yes,
    NotYet,
    Failed,
}

/// Accepts the next offer holding `per` with the one task `b` (id `id`) and waits, declining
/// other offers, for the update `reached` accepts; returns accept → that update (ms).
pub(crate) async fn time_one_launch(
    rx: &mut mpsc::UnboundedReceiver<Event>,
    h: &DriverHandle,
    id: &str,
    b: TaskBuilder,
    per: &brim_framework::Resources,
    within: Duration,
    reached: impl Fn(brim_framework::v1::TaskState) -> Reached,
) -> Result<f64> {
    let o = offer(rx, h, per).await?;
    let task = b.resources(per).build_for(&o)?;
    let t0 = Instant::now();
    h.accept(
        vec![o.id.clone()],
        vec![brim_framework::launch_operation(vec![task])],
        brim_framework::v1::Filters {
            refuse_seconds: Some(0.0),
        },
    )
    .await
    .context("accept")?;
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv())
            .await
            .with_context(|| format!("{id} did not get there within {within:?}"))?
        {
            Some(Event::Update(s)) if s.task_id == id => match reached(s.state()) {
                Reached::Yes => return Ok(t0.elapsed().as_secs_f64() * 1000.0),
                Reached::Failed => bail!("task {id} ended {:?}: {}", s.state(), s.message),
                Reached::NotYet => {}
            },
            Some(Event::Offers(offers)) => {
                let ids = offers.into_iter().map(|o| o.id).collect();
                let _ = h.decline(ids, Some(0.0)).await;
            }
            Some(_) => {}
            None => bail!("framework driver stopped"),
        }
    }
}

/// Waits until `n` more tasks with `prefix` are terminal.
async fn wait_terminal(
    rx: &mut mpsc::UnboundedReceiver<Event>,
    h: &DriverHandle,
    prefix: &str,
    n: usize,
) -> Result<()> {
    let mut done = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    while done < n {
        match tokio::time::timeout_at(deadline, rx.recv())
            .await
            .context("tasks did not end")?
        {
            Some(Event::Update(s)) if s.task_id.starts_with(prefix) && s.state().is_terminal() => {
                done += 1
            }
            Some(Event::Offers(offers)) => {
                let ids = offers.into_iter().map(|o| o.id).collect();
                let _ = h.decline(ids, Some(0.2)).await;
            }
            Some(_) => {}
            None => bail!("framework driver stopped"),
        }
    }
    Ok(())
}

fn fork_exec_floor(n: usize) -> Result<f64> {
    let t0 = Instant::now();
    for _ in 0..n {
        let st = Command::new("/bin/true")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        if !st.success() {
            bail!("/bin/true failed");
        }
    }
    Ok(n as f64 / t0.elapsed().as_secs_f64())
}

async fn run(n: usize) -> Result<Report> {
    let pressure_start = cpu_pressure();
    let work = std::env::temp_dir().join(format!("brim-bench-launch-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let mut mc = brim_master::MasterConfig::new(listen, work.join("master"));
    mc.state.agent_heartbeat_interval = Duration::from_secs(30);
    let master = brim_master::start(mc).await?;
    let master_addr = master.addr().to_string();

    let log = std::fs::File::create(work.join("agent.log"))?;
    let agent = AgentProc(
        Command::new(std::env::current_exe()?)
            .args([
                "__launch-agent",
                &master_addr,
                &work.join("agent").display().to_string(),
                &free_port()?.to_string(),
                &format!("brim-bench-{}", std::process::id()),
            ])
            // BRIM_BENCH_AGENT_LOG=brim_agent=debug shows each launch's timings.
            .env(
                "RUST_LOG",
                std::env::var("BRIM_BENCH_AGENT_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting the agent")?,
    );
    let agent_pid = agent.0.id();

    let mut config = DriverConfig::new(master_addr.clone(), "bench-launch");
    config.framework.user = "root".into();
    config.call_timeout = Duration::from_secs(60);
    let driver = Driver::new(config)?;
    let h = driver.handle();
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let _ = driver.run(&mut Forward(tx)).await;
    });

    // Registered and idle: the first offer.
    let idle = offer(&mut rx, &h, &Resources::parse(TASK_RESOURCES)?).await?;
    let _ = h.decline(vec![idle.id], Some(0.0)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_idle = rss_bytes(agent_pid);

    println!("single launches on an idle agent ...");
    let single_lat = single(&mut rx, &h, 30).await?;
    println!("OCI: 20 × /bin/true in the busybox image through brim, and with plain crun ...");
    let oci = match crate::oci_launch::measure(&mut rx, &h, &work, 20).await {
        Ok(r) => Some(r),
        Err(e) => {
            println!("OCI rows skipped: {e:#}");
            None
        }
    };
    println!("fork/exec floor: {n} × /bin/true ...");
    let floor = fork_exec_floor(n)?;
    println!("launching {n} × /bin/true ...");
    let (true_rate, true_lat, ended) = phase(&mut rx, &h, "true", &["/bin/true"], n).await?;
    wait_terminal(&mut rx, &h, "true", n - ended).await?;
    println!("launching {n} × sleep 60 ...");
    let (sleep_rate, sleep_lat, _) = phase(&mut rx, &h, "sleep", &["/bin/sleep", "60"], n).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_loaded = rss_bytes(agent_pid);
    let (pss, sups) = children_pss(agent_pid);
    drop(agent);
    let _ = master.stop().await;
    if std::env::var_os("BRIM_BENCH_AGENT_LOG").is_some() {
        let kept = std::env::temp_dir().join("brim-bench-launch-agent.log");
        if std::fs::copy(work.join("agent.log"), &kept).is_ok() {
            println!("agent log kept in {}", kept.display());
        }
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(Report {
        native_tasks_per_s: true_rate,
        p50_ms: percentile(&true_lat, 0.50),
        p99_ms: percentile(&true_lat, 0.99),
        fork_exec_per_s: floor,
        agent_bytes_per_task: rss_loaded.saturating_sub(rss_idle) as f64 / n as f64,
        tasks: n,
        sleep_tasks_per_s: sleep_rate,
        sleep_p50_ms: percentile(&sleep_lat, 0.50),
        sleep_p99_ms: percentile(&sleep_lat, 0.99),
        agent_rss_idle_bytes: rss_idle,
        agent_rss_loaded_bytes: rss_loaded,
        supervisor_pss_bytes_per_task: if sups == 0 {
            0.0
        } else {
            pss as f64 / sups as f64
        },
        supervisors_seen: sups,
        single_p50_ms: percentile(&single_lat, 0.50),
        single_p99_ms: percentile(&single_lat, 0.99),
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_pressure_start: pressure_start,
        cpu_pressure_end: cpu_pressure(),
        oci,
    })
}
