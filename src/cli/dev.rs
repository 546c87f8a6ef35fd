//! `brim dev`: a master and a local agent in one process, embedded registry — the first
//! thing a newcomer runs.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use anyhow::Context;

use super::daemon::{default_work_dir, shutdown_signal, AgentTuning, MasterTuning, PolicyArgs};
use super::security::SecurityArgs;

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
    #[command(flatten)]
    pub(crate) policy: PolicyArgs,
}

pub(crate) async fn run(a: DevArgs, security: &SecurityArgs) -> anyhow::Result<()> {
    let work_dir = a
        .work_dir
        .clone()
        .unwrap_or_else(|| default_work_dir("dev"));
    let tls = super::security::dev_tls(
        security,
        &work_dir,
        (!a.ip.is_unspecified()).then(|| a.ip.to_string()),
    )?;
    let mut master_config = a
        .master
        .config(SocketAddr::new(a.ip, a.port), work_dir.join("master"));
    master_config.security = a.policy.security(tls.as_ref().map(|t| t.master.clone()));
    let hosted = super::daemon::host_frameworks(&mut master_config)?;
    let master = brim_master::start(master_config).await?;
    let master_addr = master.addr();
    let connect_host = if a.ip.is_unspecified() {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        a.ip
    };
    let master_target = SocketAddr::new(connect_host, master_addr.port()).to_string();
    let frameworks = hosted.start(
        &master_target,
        super::security::loopback_client(tls.as_ref().map(|t| &t.master)),
    );
    let mut agent_config = a.agent.config(
        master_target.clone(),
        work_dir.join("agent"),
        SocketAddr::new(a.ip, a.agent_port),
    )?;
    // One machine, your own tasks: `brim run` as root just works, and so does
    // `brim run --revocable` (slack is lent to revocable tasks, evicted when owners need it).
    agent_config.allow_root_tasks = true;
    agent_config.oversubscription.enabled = true;
    agent_config.tls = tls.as_ref().map(|t| t.agent.clone());
    let agent = brim_agent::start(agent_config)
        .await
        .context("starting the local agent")?;
    let agent_http = agent.http_addr();
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!("brim dev is running (work dir {})", work_dir.display());
    println!("  master   {master_target}   gRPC + HTTP");
    println!("  web UI   {scheme}://{master_target}/");
    println!("  agent    {agent_http}   sandboxes: {scheme}://{agent_http}/state");
    println!("  state    {scheme}://{master_target}/state");
    println!("  metrics  {scheme}://{master_target}/metrics");
    match tls.as_ref().and_then(|t| t.dir.as_ref()) {
        Some(dir) => {
            println!(
                "  TLS      throwaway CA and certificates in {}",
                dir.display()
            );
            if *dir != super::security::dev_tls_dir() {
                let (cert, key) = brim_security::pki::cert_files(dir, super::security::DEV_CLIENT);
                println!(
                    "           clients: export BRIM_TLS_CA={} BRIM_TLS_CERT={} BRIM_TLS_KEY={}",
                    dir.join("ca.pem").display(),
                    cert.display(),
                    key.display()
                );
            }
            println!(
                "           curl --cacert {0}/ca.pem --cert {0}/operator.pem --key {0}/operator-key.pem {scheme}://{master_target}/state",
                dir.display()
            );
        }
        None if tls.is_none() => println!("  PLAINTEXT (--insecure): clients need --insecure too"),
        None => {}
    }
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
