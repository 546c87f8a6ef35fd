//! Per-task networking, chosen with the task label `brim.network` (`brim run --network`):
//!
//! - `host` (default): the agent's own network;
//! - `none`: a private network namespace with only `lo` (up);
//! - `bridge`: a private network namespace with `eth0`, one end of a veth pair whose other
//!   end (`bv<container id prefix>`) is enslaved to the agent's bridge (`brim0`,
//!   `10.213.0.1/16` by default), an address from that subnet and a default route through
//!   the bridge. The agent forwards each of the task's allocated ports from the host (every
//!   host address, loopback included) to the task's address (TCP, in user space).
//!
//! The namespace is created by the supervisor's clone (`CLONE_NEWNET`); the agent configures
//! it (iproute2 `ip`, `nsenter`) before the go byte, so the task starts with its network
//! ready. A veth pair disappears with its namespace when the task's supervisor exits; the
//! agent also deletes it when the task ends and, at start-up, every `bv*` link on its bridge
//! that no recovered task owns.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::process::Command;
use std::sync::Mutex;

use brim_proto::v1::TaskInfo;
use tokio::task::JoinHandle;

/// Task label selecting the network mode.
pub const LABEL: &str = "brim.network";

/// How a task is networked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    #[default]
    Host,
    None,
    Bridge,
}

impl Mode {
    /// The mode a task asks for (its `brim.network` label; host without one).
    pub fn of(info: &TaskInfo) -> Result<Mode, String> {
        let Some(label) = info.labels.iter().rev().find(|l| l.key == LABEL) else {
            return Ok(Mode::Host);
        };
        match label.value.as_str() {
            "" | "host" => Ok(Mode::Host),
            "none" => Ok(Mode::None),
            "bridge" => Ok(Mode::Bridge),
            other => Err(format!(
                "unknown network `{other}` in label {LABEL}: use none, host or bridge"
            )),
        }
    }

    /// Whether the task gets its own network namespace.
    pub fn private(self) -> bool {
        self != Mode::Host
    }
}

/// Why a task's network could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("cannot run `{cmd}`: {source} (is iproute2 installed?)")]
    Spawn {
        cmd: String,
        #[source]
        source: io::Error,
    },
    #[error("`{cmd}` failed: {stderr}")]
    Failed { cmd: String, stderr: String },
    #[error("no free address left in the bridge subnet {0}")]
    Exhausted(String),
    #[error("invalid bridge address `{0}`: use a.b.c.d/prefix with a prefix of 8 to 30")]
    Cidr(String),
    #[error("cannot forward port {port} to the task: {source}")]
    Forward {
        port: u16,
        #[source]
        source: io::Error,
    },
}

/// Runs a command, turning a failure into its stderr.
fn run(program: &str, args: &[&str]) -> Result<String, NetworkError> {
    let cmd = format!("{program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|source| NetworkError::Spawn {
            cmd: cmd.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(NetworkError::Failed {
            cmd,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ip` inside the network namespace of process `pid`.
fn ip_in(pid: i32, args: &[&str]) -> Result<String, NetworkError> {
    let ns = format!("--net=/proc/{pid}/ns/net");
    let mut all = vec![ns.as_str(), "ip"];
    all.extend_from_slice(args);
    run("nsenter", &all)
}

/// Host-side veth name of a container (at most 15 bytes, IFNAMSIZ).
pub fn veth_name(container_id: &str) -> String {
    let hex: String = container_id
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(12)
        .collect();
    format!("bv{hex}")
}

/// Parses `a.b.c.d/prefix` (the bridge's own address).
fn parse_cidr(cidr: &str) -> Result<(Ipv4Addr, u8), NetworkError> {
    let bad = || NetworkError::Cidr(cidr.to_string());
    let (addr, prefix) = cidr.split_once('/').ok_or_else(bad)?;
    let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
    let prefix: u8 = prefix.parse().map_err(|_| bad())?;
    if !(8..=30).contains(&prefix) {
        return Err(bad());
    }
    Ok((addr, prefix))
}

/// Checks a bridge address (`a.b.c.d/prefix`, prefix 8 to 30).
pub fn validate_cidr(cidr: &str) -> Result<(), String> {
    parse_cidr(cidr).map(drop).map_err(|e| e.to_string())
}

/// A bridged task's network, as the agent tracks it.
#[derive(Debug)]
struct Attached {
    ip: Ipv4Addr,
    forwards: Vec<JoinHandle<()>>,
}

/// The agent's bridge and the addresses and port forwards of its bridged tasks.
#[derive(Debug)]
pub struct Network {
    bridge: String,
    cidr: String,
    tasks: Mutex<HashMap<String, Attached>>,
}

impl Network {
    pub fn new(bridge: &str, cidr: &str) -> Self {
        Network {
            bridge: bridge.to_string(),
            cidr: cidr.to_string(),
            tasks: Mutex::new(HashMap::new()),
        }
    }

    fn tasks(&self) -> std::sync::MutexGuard<'_, HashMap<String, Attached>> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the agent tracks a bridged task with this container id.
    pub fn has(&self, container_id: &str) -> bool {
        self.tasks().contains_key(container_id)
    }

    /// Brings `lo` up in the namespace of `pid` (mode `none`). Blocking.
    pub fn loopback(&self, pid: i32) -> Result<(), NetworkError> {
        ip_in(pid, &["link", "set", "lo", "up"]).map(drop)
    }

    /// Brings `lo` up in the network namespace held at `path` (a task group's). Blocking.
    pub fn loopback_at(&self, path: &std::path::Path) -> Result<(), NetworkError> {
        let ns = format!("--net={}", path.display());
        run("nsenter", &[&ns, "ip", "link", "set", "lo", "up"]).map(drop)
    }

    /// Creates the bridge when it does not exist yet. Blocking.
    fn ensure_bridge(&self) -> Result<(Ipv4Addr, u8), NetworkError> {
        let (gw, prefix) = parse_cidr(&self.cidr)?;
        if run("ip", &["link", "show", "dev", &self.bridge]).is_err() {
            match run("ip", &["link", "add", &self.bridge, "type", "bridge"]) {
                Err(NetworkError::Failed { stderr, .. }) if stderr.contains("exists") => {}
                r => r.map(drop)?,
            }
        }
        let addrs = run("ip", &["-o", "-4", "addr", "show", "dev", &self.bridge])?;
        if !addrs.contains(&format!(" {gw}/")) {
            match run("ip", &["addr", "add", &self.cidr, "dev", &self.bridge]) {
                Err(NetworkError::Failed { stderr, .. }) if stderr.contains("exists") => {}
                r => r.map(drop)?,
            }
        }
        run("ip", &["link", "set", &self.bridge, "up"])?;
        Ok((gw, prefix))
    }

    /// Lowest free address of the subnet (the gateway and the broadcast address excluded).
    fn allocate(&self, gw: Ipv4Addr, prefix: u8) -> Result<Ipv4Addr, NetworkError> {
        let used: HashSet<Ipv4Addr> = self.tasks().values().map(|a| a.ip).collect();
        let mask = u32::MAX << (32 - u32::from(prefix));
        let net = u32::from(gw) & mask;
        let size = !mask;
        (1..size)
            .map(|i| Ipv4Addr::from(net | i))
            .find(|ip| *ip != gw && !used.contains(ip))
            .ok_or_else(|| NetworkError::Exhausted(self.cidr.clone()))
    }

    /// Connects the namespace of `pid` to the bridge: veth pair, address, default route.
    /// Returns the task's address. Blocking.
    pub fn attach(&self, container_id: &str, pid: i32) -> Result<Ipv4Addr, NetworkError> {
        let (gw, prefix) = self.ensure_bridge()?;
        let ip = {
            let ip = self.allocate(gw, prefix)?;
            // Reserved at once: concurrent launches get other addresses.
            self.tasks().insert(
                container_id.to_string(),
                Attached {
                    ip,
                    forwards: Vec::new(),
                },
            );
            ip
        };
        let host = veth_name(container_id);
        let pid_s = pid.to_string();
        let addr = format!("{ip}/{prefix}");
        let gw_s = gw.to_string();
        let setup = || -> Result<(), NetworkError> {
            run(
                "ip",
                &[
                    "link", "add", &host, "type", "veth", "peer", "name", "eth0", "netns", &pid_s,
                ],
            )?;
            run("ip", &["link", "set", &host, "master", &self.bridge, "up"])?;
            ip_in(pid, &["link", "set", "lo", "up"])?;
            ip_in(pid, &["addr", "add", &addr, "dev", "eth0"])?;
            ip_in(pid, &["link", "set", "eth0", "up"])?;
            ip_in(pid, &["route", "add", "default", "via", &gw_s])?;
            Ok(())
        };
        if let Err(e) = setup() {
            self.detach(container_id);
            return Err(e);
        }
        tracing::debug!(container = container_id, %ip, veth = %host, "task bridged");
        Ok(ip)
    }

    /// Forwards each host port in `ports` (all host addresses) to the same port of the
    /// bridged task `container_id`. Must run inside the tokio runtime.
    pub fn forward(&self, container_id: &str, ports: &[u16]) -> Result<(), NetworkError> {
        let mut tasks = self.tasks();
        let Some(a) = tasks.get_mut(container_id) else {
            return Ok(());
        };
        for &port in ports {
            let listener = std::net::TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], port)))
                .and_then(|l| {
                    l.set_nonblocking(true)?;
                    tokio::net::TcpListener::from_std(l)
                })
                .map_err(|source| NetworkError::Forward { port, source })?;
            let target = SocketAddrV4::new(a.ip, port);
            a.forwards.push(tokio::spawn(proxy(listener, target)));
        }
        Ok(())
    }

    /// Re-adopts a bridged task after an agent restart: reads its address from its
    /// namespace and forwards its ports again. Blocking (call from a blocking thread).
    pub fn reattach(&self, container_id: &str, pid: i32) -> Option<Ipv4Addr> {
        let out = ip_in(pid, &["-o", "-4", "addr", "show", "dev", "eth0"]).ok()?;
        let ip: Ipv4Addr = out
            .split_whitespace()
            .skip_while(|w| *w != "inet")
            .nth(1)?
            .split('/')
            .next()?
            .parse()
            .ok()?;
        self.tasks().insert(
            container_id.to_string(),
            Attached {
                ip,
                forwards: Vec::new(),
            },
        );
        Some(ip)
    }

    /// Stops the forwards of a task, deletes its veth (if its namespace has not taken it
    /// along already) and frees its address. Blocking.
    pub fn detach(&self, container_id: &str) {
        let Some(a) = self.tasks().remove(container_id) else {
            return;
        };
        for f in a.forwards {
            f.abort();
        }
        let host = veth_name(container_id);
        let _ = run("ip", &["link", "del", &host]);
    }

    /// Deletes every `bv*` veth on the agent's bridge whose container is not in `keep`
    /// (leftovers of tasks that ended while the agent was down). Returns how many. Blocking.
    pub fn cleanup(&self, keep: &HashSet<String>) -> usize {
        let Ok(out) = run("ip", &["-o", "link", "show", "master", &self.bridge]) else {
            return 0;
        };
        let owned: HashSet<String> = keep.iter().map(|c| veth_name(c)).collect();
        let mut removed = 0;
        for line in out.lines() {
            // "12: bv0123456789ab@if2: <...> ..."
            let Some(name) = line
                .split(':')
                .nth(1)
                .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
            else {
                continue;
            };
            if !name.starts_with("bv") || owned.contains(&name) {
                continue;
            }
            tracing::warn!(veth = %name, "removing a leftover task veth");
            if run("ip", &["link", "del", &name]).is_ok() {
                removed += 1;
            }
        }
        removed
    }
}

/// Accepts on `listener` and pipes every connection to `target`.
async fn proxy(listener: tokio::net::TcpListener, target: SocketAddrV4) {
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            match tokio::net::TcpStream::connect(target).await {
                Ok(mut outbound) => {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
                Err(e) => tracing::debug!(%target, error = %e, "port forward: task not reachable"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use brim_proto::v1::Label;

    fn task(labels: &[(&str, &str)]) -> TaskInfo {
        TaskInfo {
            labels: labels
                .iter()
                .map(|(k, v)| Label {
                    key: k.to_string(),
                    value: v.to_string(),
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn modes_from_labels() {
        assert_eq!(Mode::of(&task(&[])), Ok(Mode::Host));
        assert_eq!(Mode::of(&task(&[(LABEL, "none")])), Ok(Mode::None));
        assert_eq!(Mode::of(&task(&[(LABEL, "bridge")])), Ok(Mode::Bridge));
        assert_eq!(Mode::of(&task(&[("other", "x")])), Ok(Mode::Host));
        let e = Mode::of(&task(&[(LABEL, "overlay")])).expect_err("unknown");
        assert!(e.contains("none, host or bridge"), "{e}");
    }

    #[test]
    fn veth_names_fit_ifnamsiz() {
        let n = veth_name("1fcb04ca-94eb-46dc-a94c-c7330ef827ec");
        assert_eq!(n, "bv1fcb04ca94eb");
        assert!(n.len() <= 15);
    }

    #[test]
    fn allocates_addresses() {
        assert!(parse_cidr("10.0.0.1").is_err());
        assert!(parse_cidr("10.0.0.1/31").is_err());
        assert!(parse_cidr("x/16").is_err());
        let n = Network::new("brtest", "10.9.0.1/30");
        let (gw, p) = parse_cidr("10.9.0.1/30").expect("cidr");
        let a = n.allocate(gw, p).expect("first");
        assert_eq!(a, Ipv4Addr::new(10, 9, 0, 2));
        n.tasks().insert(
            "c1".into(),
            Attached {
                ip: a,
                forwards: Vec::new(),
            },
        );
        assert!(matches!(n.allocate(gw, p), Err(NetworkError::Exhausted(_))));
    }
}
