//! `brim dev`: a master and a local agent in one process, embedded registry — the first
//! thing a newcomer runs.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use anyhow::Context;

use super::daemon::{default_work_dir, shutdown_signal, AgentTuning, MasterTuning};

#[derive(clap::Args)]
pub(crate) struct DevArgs {
    /// Master port (gRPC + HTTP).
    #[arg(long, default_value_t = 5050)]
    pub(crate) port: u16,
    /// Agent HTTP port.
    #[arg(long, default_value_t = 5051)]
    pub(crate) agent_port: u16,
    /// Listen address for both (loopback by default: a dev cluster is not exposed).
    #[arg(long, default_value = "127.0.0.1")]
    pub(crate) ip: IpAddr,
    /// Work dir for the registry, sandboxes and checkpoints (default ~/.brim/dev).
    #[arg(long)]
    pub(crate) work_dir: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) master: MasterTuning,
    #[command(flatten)]
    pub(crate) agent: AgentTuning,
}

pub(crate) async fn run(a: DevArgs) -> anyhow::Result<()> {
    let work_dir = a
        .work_dir
        .clone()
        .unwrap_or_else(|| default_work_dir("dev"));
    let mut master_config = a
        .master
        .config(SocketAddr::new(a.ip, a.port), work_dir.join("master"));
    let hosted = super::daemon::host_frameworks(&mut master_config)?;
    let master = brim_master::start(master_config).await?;
    let master_addr = master.addr();
    let connect_host = if a.ip.is_unspecified() {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        a.ip
    };
    let master_target = SocketAddr::new(connect_host, master_addr.port()).to_string();
    let frameworks = hosted.start(&master_target);
    let mut agent_config = a.agent.config(
        master_target.clone(),
        work_dir.join("agent"),
        SocketAddr::new(a.ip, a.agent_port),
    )?;
    // One machine, your own tasks: `brim run` as root just works, and so does
    // `brim run --revocable` (slack is lent to revocable tasks, evicted when owners need it).
    agent_config.allow_root_tasks = true;
    agent_config.oversubscription.enabled = true;
    let agent = brim_agent::start(agent_config)
        .await
        .context("starting the local agent")?;
    let agent_http = agent.http_addr();
    println!("brim dev is running (work dir {})", work_dir.display());
    println!("  master   {master_target}   gRPC + HTTP");
    println!("  web UI   http://{master_target}/");
    println!("  agent    {agent_http}   sandboxes: http://{agent_http}/state");
    println!("  state    http://{master_target}/state");
    println!("  metrics  http://{master_target}/metrics");
    println!("  try      brim run -- echo hello     (in another terminal)");
    println!("           brim tasks");
    println!("           brim top                   (live usage; q quits)");
    println!("Ctrl-C stops the agent (killing its tasks) and the master.");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let agent_task = tokio::spawn(agent.run_until(async move {
        let _ = stop_rx.await;
    }));
    shutdown_signal().await;
    println!("stopping…");
    frameworks.stop().await;
    let _ = stop_tx.send(());
    match agent_task.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("brim: agent stopped with an error: {e}"),
        Err(e) => eprintln!("brim: agent task failed: {e}"),
    }
    master.stop().await?;
    println!("stopped.");
    Ok(())
}
