//! `cargo xtask bench failover [--agents N] [--tasks-per-agent K]`: leader failover with many
//! agents. Starts etcd (Debian's etcd-server) and two HA masters in this process, connects N
//! lightweight simulated agents speaking the real `AgentService.Attach` protocol over
//! loopback (each reporting K running tasks), stops the leader, and measures how long until
//! the standby is elected and until every agent (with all its tasks) has re-registered with
//! it. Writes `bench-results/failover.json`.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use brim_proto::v1::{
    self, agent_message, agent_service_client::AgentServiceClient, master_message, AgentMessage,
};
use brim_proto::Resources;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

/// Agents share this many HTTP/2 connections per master (many streams each).
const CONNECTIONS: usize = 100;

struct Etcd(Child);

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn start_etcd(dir: &Path) -> Result<(Etcd, String)> {
    let (client, peer) = (free_port()?, free_port()?);
    let endpoint = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let child = Command::new("etcd")
        .args([
            "--name",
            "bench",
            "--data-dir",
            &dir.join("etcd").display().to_string(),
            "--listen-client-urls",
            &endpoint,
            "--advertise-client-urls",
            &endpoint,
            "--listen-peer-urls",
            &peer_url,
            "--initial-advertise-peer-urls",
            &peer_url,
            "--initial-cluster",
            &format!("bench={peer_url}"),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting etcd (apt-get install etcd-server)")?;
    Ok((Etcd(child), endpoint))
}

async fn start_master(etcd: &str, dir: &Path) -> Result<brim_master::RunningMaster> {
    let port = free_port()?;
    let listen: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let mut config = brim_master::MasterConfig::new(listen, dir.to_path_buf());
    config.state.agent_heartbeat_interval = Duration::from_secs(30);
    config.ha = Some(brim_master::HaConfig {
        etcd: vec![etcd.to_string()],
        advertise: listen.to_string(),
        lease_ttl: Duration::from_secs(2),
        prefix: "/brim-bench".into(),
        etcd_tls: None,
    });
    Ok(brim_master::start(config).await?)
}

async fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.ok()?;
    let text = String::from_utf8_lossy(&buf).to_string();
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, text.split_once("\r\n\r\n")?.1.to_string()))
}

async fn leads(addr: SocketAddr) -> bool {
    http_get(addr, "/health")
        .await
        .is_some_and(|(c, b)| c == 200 && b.starts_with("ok"))
}

/// A metric value from the master's `/metrics`.
async fn metric(addr: SocketAddr, name: &str) -> Option<f64> {
    let (_, body) = http_get(addr, "/metrics").await?;
    body.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn register_message(id: &str, index: usize, tasks: usize, total: &Resources) -> AgentMessage {
    let task_res = Resources::parse("cpus:0.1;mem:32").unwrap_or_default();
    let framework = "bench-framework".to_string();
    AgentMessage {
        message: Some(agent_message::Message::Register(agent_message::Register {
            agent_info: Some(v1::AgentInfo {
                hostname: format!("sim-{index}"),
                http_address: format!("127.0.0.1:{}", 20000 + index % 40000),
                resources: total.to_proto(),
                id: id.to_string(),
                ..Default::default()
            }),
            tasks: (0..tasks)
                .map(|t| v1::AgentTask {
                    task: Some(v1::TaskInfo {
                        name: "sim".into(),
                        task_id: format!("sim-{index}-{t}"),
                        agent_id: id.to_string(),
                        resources: task_res.to_proto(),
                        command: Some(v1::CommandInfo {
                            shell: true,
                            value: "sleep".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    framework_id: framework.clone(),
                    state: v1::TaskState::TaskRunning as i32,
                })
                .collect(),
            frameworks: vec![v1::FrameworkInfo {
                id: framework,
                name: "bench".into(),
                role: "*".into(),
                ..Default::default()
            }],
            version: "sim".into(),
        })),
    }
}

/// One simulated agent: (re-)registers with whichever channel set is current, heartbeats,
/// and reconnects when its stream ends.
async fn simulate(
    index: usize,
    tasks: usize,
    channels: Arc<tokio::sync::RwLock<Vec<Channel>>>,
    registered: Arc<AtomicUsize>,
) {
    let total = Resources::parse("cpus:32;mem:262144;ports:[31000-32000]").unwrap_or_default();
    let mut id = String::new();
    loop {
        let channel = {
            let c = channels.read().await;
            c[index % c.len()].clone()
        };
        let mut client = AgentServiceClient::new(channel);
        let (tx, rx) = mpsc::channel(4);
        if tx
            .send(register_message(&id, index, tasks, &total))
            .await
            .is_err()
        {
            return;
        }
        if let Ok(resp) = client.attach(ReceiverStream::new(rx)).await {
            let mut inbound = resp.into_inner();
            while let Ok(Some(m)) = inbound.message().await {
                if let Some(master_message::Message::Registered(r)) = m.message {
                    id = r.agent_id;
                    registered.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        drop(tx);
        tokio::time::sleep(Duration::from_millis(100 + (index % 100) as u64 * 5)).await;
    }
}

async fn channels_to(addr: SocketAddr) -> Result<Vec<Channel>> {
    let mut v = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        v.push(
            Endpoint::from_shared(format!("http://{addr}"))?
                .http2_adaptive_window(true)
                .connect_lazy(),
        );
    }
    Ok(v)
}

pub(crate) fn bench_failover(root: &Path, args: &[&str]) -> Result<()> {
    let mut agents = 10_000usize;
    let mut per_agent = 10usize;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match *a {
            "--agents" => agents = it.next().context("--agents N")?.parse()?,
            "--tasks-per-agent" => per_agent = it.next().context("--tasks-per-agent K")?.parse()?,
            other => bail!("unknown argument {other}: use --agents N --tasks-per-agent K"),
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(root, agents, per_agent))
}

async fn run(root: &Path, agents: usize, per_agent: usize) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("brim-bench-failover-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (_etcd, endpoint) = start_etcd(&dir)?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let first = start_master(&endpoint, &dir.join("m1")).await?;
    let first_addr = first.addr();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !leads(first_addr).await {
        if Instant::now() > deadline {
            bail!("the first master did not become leader");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let second = start_master(&endpoint, &dir.join("m2")).await?;
    let second_addr = second.addr();

    let channels = Arc::new(tokio::sync::RwLock::new(channels_to(first_addr).await?));
    let registered = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    for i in 0..agents {
        tokio::spawn(simulate(i, per_agent, channels.clone(), registered.clone()));
    }
    loop {
        let n = registered.load(Ordering::Relaxed);
        if n >= agents {
            break;
        }
        if t0.elapsed() > Duration::from_secs(600) {
            bail!("only {n} of {agents} agents registered in 600 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let initial = t0.elapsed();
    println!(
        "{agents} agents with {} tasks registered in {initial:.1?}",
        agents * per_agent
    );

    // Point the simulators at the standby (as a multi-master agent would after the leader
    // dies) and stop the leader without resigning: the standby waits out the lease.
    *channels.write().await = channels_to(second_addr).await?;
    registered.store(0, Ordering::Relaxed);
    let killed = Instant::now();
    first.stop().await?;
    while !leads(second_addr).await {
        if killed.elapsed() > Duration::from_secs(60) {
            bail!("the standby was not elected within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elected = killed.elapsed();
    let want_tasks = (agents * per_agent) as f64;
    loop {
        let connected = metric(second_addr, "brim_master_agents_connected ")
            .await
            .unwrap_or(0.0);
        let running = metric(second_addr, "brim_master_tasks{state=\"TASK_RUNNING\"}")
            .await
            .unwrap_or(0.0);
        if connected as usize >= agents && running >= want_tasks {
            break;
        }
        if killed.elapsed() > Duration::from_secs(600) {
            bail!("only {connected} agents / {running} tasks back after 600 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let reregistered = killed.elapsed();
    println!(
        "failover: standby elected after {:.2} s, all {agents} agents / {} tasks re-registered after {:.2} s",
        elected.as_secs_f64(),
        agents * per_agent,
        reregistered.as_secs_f64()
    );
    let out = serde_json::json!({
        "agents": agents,
        "tasks": agents * per_agent,
        "leader_elected_s": (elected.as_secs_f64() * 100.0).round() / 100.0,
        "reregistered_s": (reregistered.as_secs_f64() * 100.0).round() / 100.0,
        "initial_registration_s": (initial.as_secs_f64() * 100.0).round() / 100.0,
        "lease_ttl_s": 2,
    });
    let path = root.join("bench-results/failover.json");
    std::fs::write(&path, serde_json::to_string_pretty(&out)? + "\n")?;
    println!("wrote {}", path.display());
    second.stop().await?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
