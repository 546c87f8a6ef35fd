//! HA chaos, real processes: etcd, three `brim master --etcd` and two agents that know all
//! three masters. A framework runs long tasks; the leader is `kill -9`ed again and again.
//! After every failover a new leader serves offers (a fresh task runs to completion), every
//! long task is still RUNNING (none lost, none launched twice), and the failover is quick.

#[path = "../master/tests/support/etcd.rs"]
mod etcd_support;
mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use brim_framework::v1::{Offer, TaskState, TaskStatus};
use brim_framework::{Driver, DriverConfig, DriverHandle, Resources, Scheduler, TaskBuilder};
use support::{free_port, http_get, wait_for, Proc, BRIM};
use tokio::sync::mpsc;

/// Failovers to survive; each costs about the lease TTL plus re-registration.
const ROUNDS: usize = 10;
const LONG_TASKS: usize = 4;

struct Masters {
    ports: Vec<u16>,
    procs: Vec<Option<Proc>>,
    etcd: String,
    dir: std::path::PathBuf,
}

impl Masters {
    fn start(&mut self, i: usize) {
        let port = self.ports[i];
        let log = self.dir.join(format!("master{i}.log"));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log");
        let err = out.try_clone().expect("log");
        let child = Command::new(BRIM)
            .env(support::INSECURE.0, support::INSECURE.1)
            .args([
                "master",
                "--ip",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--work-dir",
                &self.dir.join(format!("m{i}")).display().to_string(),
                "--etcd",
                &self.etcd,
                "--advertise",
                &format!("127.0.0.1:{port}"),
                "--lease-ttl",
                "2s",
                "--agent-heartbeat-interval",
                "500ms",
                "--max-missed-heartbeats",
                "6",
                "--allocation-interval",
                "200ms",
                "--framework-heartbeat-interval",
                "1s",
            ])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn master");
        self.procs[i] = Some(Proc {
            child,
            name: format!("master{i}"),
            log,
        });
    }

    fn list(&self) -> String {
        self.ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Index of the master whose /health says it leads.
    fn leader(&self) -> Option<usize> {
        self.ports.iter().position(|p| {
            http_get(&format!("127.0.0.1:{p}"), "/health")
                .is_some_and(|(c, b)| c == 200 && b.starts_with("ok"))
        })
    }
}

/// etcd plus `n` HA masters, or `None` (after saying why) when the machine cannot run them.
fn etcd_and_masters(
    test: &str,
    n: usize,
) -> Option<(etcd_support::Etcd, tempfile::TempDir, Masters)> {
    if !support::can_run_cluster(test) {
        return None;
    }
    let bin = etcd_support::etcd_binary(test)?;
    let etcd = etcd_support::Etcd::start(&bin);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut m = Masters {
        ports: (0..n).map(|_| free_port()).collect(),
        procs: (0..n).map(|_| None).collect(),
        etcd: etcd.endpoint.clone(),
        dir: dir.path().to_path_buf(),
    };
    for i in 0..n {
        m.start(i);
    }
    Some((etcd, dir, m))
}

/// An agent that knows every master, with its own work dir and cgroup root.
fn spawn_agent(m: &Masters, name: &str, cgroup: &str, resources: &str) -> Proc {
    let log = m.dir.join(format!("{name}.log"));
    let out = std::fs::File::create(&log).expect("log");
    let child = Command::new(BRIM)
        .env(support::INSECURE.0, support::INSECURE.1)
        .args([
            "agent",
            "--master",
            &m.list(),
            "--ip",
            "127.0.0.1",
            "--port",
            &free_port().to_string(),
            "--work-dir",
            &m.dir.join(name).display().to_string(),
            "--cgroup-name",
            cgroup,
            "--resources",
            resources,
        ])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("log"))
        .stderr(out)
        .spawn()
        .expect("spawn agent");
    Proc {
        child,
        name: name.into(),
        log,
    }
}

/// A framework (user `nobody`, 1 h failover timeout) that knows every master.
fn start_framework(
    rt: &tokio::runtime::Runtime,
    m: &Masters,
    name: &str,
) -> (DriverHandle, mpsc::UnboundedReceiver<Ev>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut config = DriverConfig::new(m.list(), name);
    config.framework.failover_timeout = 3600.0;
    config.framework.user = "nobody".into();
    config.backoff_max = Duration::from_secs(1);
    let driver = Driver::new(config).expect("driver");
    let h = driver.handle();
    rt.spawn(async move {
        let _ = driver.run(&mut Probe(tx)).await;
    });
    (h, rx)
}

enum Ev {
    Offers(Vec<Offer>),
    Update(TaskStatus),
}

struct Probe(mpsc::UnboundedSender<Ev>);

impl Scheduler for Probe {
    async fn offers(&mut self, _d: &DriverHandle, offers: Vec<Offer>) {
        let _ = self.0.send(Ev::Offers(offers));
    }
    async fn update(&mut self, _d: &DriverHandle, status: TaskStatus) {
        let _ = self.0.send(Ev::Update(status));
    }
}

/// Launches `task` (shell `cmd`) on the first offer that fits, declining the rest; then
/// waits for `until`.
async fn launch_and_wait(
    h: &DriverHandle,
    rx: &mut mpsc::UnboundedReceiver<Ev>,
    task: &str,
    cmd: &str,
    until: TaskState,
    timeout: Duration,
) -> TaskStatus {
    let ask = Resources::parse("cpus:0.1;mem:16").expect("resources");
    let deadline = tokio::time::Instant::now() + timeout;
    let mut launched = false;
    loop {
        let ev = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| {
                panic!("{task}: no {until:?} within {timeout:?} (launched: {launched})")
            });
        match ev {
            Some(Ev::Offers(offers)) => {
                for o in offers {
                    if !launched {
                        if let Ok(t) = TaskBuilder::new(task, task)
                            .shell(cmd)
                            .resources(&ask)
                            .build_for(&o)
                        {
                            launched = h.launch(&o.id, vec![t]).await.is_ok();
                            if launched {
                                continue;
                            }
                        }
                    }
                    let _ = h.decline(vec![o.id.clone()], Some(0.5)).await;
                }
            }
            Some(Ev::Update(s)) if s.task_id == task && s.state() == until => return s,
            Some(Ev::Update(s)) if s.task_id == task && s.state().is_terminal() => {
                panic!("{task} ended in {:?}: {}", s.state(), s.message)
            }
            Some(_) => {}
            None => panic!("driver stopped"),
        }
    }
}

#[test]
fn leader_killed_repeatedly_loses_no_task() {
    let Some((_etcd, _dir, mut masters)) =
        etcd_and_masters("leader_killed_repeatedly_loses_no_task", 3)
    else {
        return;
    };
    let tag = format!("brim-ha-{}", std::process::id());
    let agents: Vec<Proc> = (0..2)
        .map(|i| {
            spawn_agent(
                &masters,
                &format!("agent{i}"),
                &format!("{tag}-a{i}"),
                "cpus:2;mem:1024",
            )
        })
        .collect();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| chaos(&mut masters)));
    if result.is_err() {
        for p in masters.procs.iter().flatten().chain(agents.iter()) {
            eprintln!("--- {} ---\n{}", p.name, p.log_text());
        }
    }
    drop(agents);
    drop(masters);
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

fn running_long_tasks(m: &Masters) -> usize {
    let Some(i) = m.leader() else { return 0 };
    let Some((200, body)) = http_get(&format!("127.0.0.1:{}", m.ports[i]), "/state") else {
        return 0;
    };
    let s: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    s["tasks"].as_array().map_or(0, |t| {
        t.iter()
            .filter(|t| {
                t["state"] == "TASK_RUNNING"
                    && t["id"].as_str().is_some_and(|id| id.starts_with("long-"))
            })
            .count()
    })
}

fn chaos(m: &mut Masters) {
    wait_for("a leader", Duration::from_secs(20), || m.leader());
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (h, mut rx) = start_framework(&rt, m, "ha-chaos");
    rt.block_on(async {
        for i in 0..LONG_TASKS {
            launch_and_wait(
                &h,
                &mut rx,
                &format!("long-{i}"),
                "sleep 3600",
                TaskState::TaskRunning,
                Duration::from_secs(30),
            )
            .await;
        }
    });
    let mut failovers = Vec::new();
    for round in 0..ROUNDS {
        let leader = m.leader().expect("a leader before the kill");
        if let Some(p) = m.procs[leader].as_mut() {
            p.kill9();
        }
        let killed = Instant::now();
        let new_leader = wait_for("a new leader", Duration::from_secs(15), || {
            m.leader().filter(|l| *l != leader)
        });
        let elected = killed.elapsed();
        wait_for(
            "every long task RUNNING on the new leader",
            Duration::from_secs(15),
            || (running_long_tasks(m) == LONG_TASKS).then_some(()),
        );
        let recovered = killed.elapsed();
        // The new leader serves offers: a fresh task runs to completion.
        rt.block_on(launch_and_wait(
            &h,
            &mut rx,
            &format!("probe-{round}"),
            "true",
            TaskState::TaskFinished,
            Duration::from_secs(20),
        ));
        eprintln!(
            "round {round}: master {leader} killed, master {new_leader} elected after {elected:?}, tasks back after {recovered:?}"
        );
        failovers.push(recovered);
        m.start(leader);
    }
    // No long task was lost or ran twice: exactly LONG_TASKS, each RUNNING, on the leader.
    assert_eq!(running_long_tasks(m), LONG_TASKS);
    let worst = failovers.iter().max().copied().unwrap_or_default();
    eprintln!("worst failover (kill → tasks visible on the new leader): {worst:?}");
    assert!(worst <= Duration::from_secs(8), "a failover took {worst:?}");
    h.stop();
    // Operators and `brim run` only need the list of masters: standbys redirect.
    let brim = |args: &[&str]| {
        Command::new(BRIM)
            .env(support::INSECURE.0, support::INSECURE.1)
            .args(args)
            .env("BRIM_MASTER", m.list())
            .stdin(Stdio::null())
            .output()
            .expect("run brim")
    };
    let out = brim(&["run", "--user", "nobody", "--", "echo via the master list"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("via the master list"));
    let out = brim(&["tasks", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("long-0"));
}

/// Split brain: a leader frozen with SIGSTOP loses its lease; a standby takes over. When
/// the old leader thaws it must not act as leader: it steps down (exits, to be restarted as
/// a standby) and never answers as leader again.
#[test]
fn a_frozen_leader_steps_down_when_it_thaws() {
    let Some((_etcd, _dir, mut m)) =
        etcd_and_masters("a_frozen_leader_steps_down_when_it_thaws", 2)
    else {
        return;
    };
    let old = wait_for("a leader", Duration::from_secs(20), || m.leader());
    let pid = m.procs[old].as_ref().map(|p| p.child.id()).expect("pid");
    // SAFETY: kill(2) on a child this test started, with valid signals.
    unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
    let new = wait_for("the standby to take over", Duration::from_secs(20), || {
        let other = 1 - old;
        http_get(&format!("127.0.0.1:{}", m.ports[other]), "/health")
            .is_some_and(|(c, b)| c == 200 && b.starts_with("ok"))
            .then_some(other)
    });
    // SAFETY: as above.
    unsafe { libc::kill(pid as i32, libc::SIGCONT) };
    let status = wait_for(
        "the thawed leader to step down",
        Duration::from_secs(20),
        || {
            m.procs[old]
                .as_mut()
                .and_then(|p| p.child.try_wait().ok().flatten())
        },
    );
    assert!(
        !status.success(),
        "a deposed leader exits with an error, got {status}"
    );
    let log = m.procs[old]
        .as_ref()
        .map(Proc::log_text)
        .unwrap_or_default();
    assert!(log.contains("lost leadership"), "log should say why: {log}");
    // Exactly one leader, the new one.
    assert_eq!(m.leader(), Some(new));
}

/// etcd goes down: the leader can no longer prove its lease and steps down (as do standbys,
/// which cannot campaign). A supervisor restarts them; once etcd is back a leader is elected
/// from the same registry and the running task is still there, never relaunched.
#[test]
fn etcd_restart_loses_no_task() {
    let Some((mut etcd, _dir, mut m)) = etcd_and_masters("etcd_restart_loses_no_task", 2) else {
        return;
    };
    wait_for("a leader", Duration::from_secs(20), || m.leader());
    let _agent = spawn_agent(
        &m,
        "agent",
        &format!("brim-etcd-{}", std::process::id()),
        "cpus:1;mem:256",
    );
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (h, mut rx) = start_framework(&rt, &m, "etcd-restart");
    rt.block_on(launch_and_wait(
        &h,
        &mut rx,
        "long-survivor",
        "sleep 3600",
        TaskState::TaskRunning,
        Duration::from_secs(30),
    ));

    etcd.restart(Duration::from_secs(4));
    // Supervisor: restart masters that stepped down, until one leads with the task back.
    wait_for(
        "a leader with the task RUNNING after etcd restarted",
        Duration::from_secs(40),
        || {
            for i in 0..m.procs.len() {
                let exited = m.procs[i]
                    .as_mut()
                    .is_some_and(|p| matches!(p.child.try_wait(), Ok(Some(_))));
                if exited {
                    m.start(i);
                }
            }
            (running_long_tasks(&m) == 1).then_some(())
        },
    );
    // The task was not relaunched: its agent still runs the original process.
    let leader = m.leader().expect("leader");
    let (_, body) = http_get(&format!("127.0.0.1:{}", m.ports[leader]), "/state").expect("state");
    let s: serde_json::Value = serde_json::from_str(&body).expect("json");
    let framework_known = s["frameworks"]
        .as_array()
        .is_some_and(|f| f.iter().any(|f| f["name"] == "etcd-restart"));
    assert!(
        framework_known,
        "the framework survives in the etcd registry: {s}"
    );
    h.stop();
}
