//! Task groups (pods) end to end on a real agent (issue [G] part 3): a pod of three tasks
//! with `brim.network=none` shares one loopback (task A serves HTTP on 127.0.0.1, task B
//! fetches from it, a task outside the pod and the host cannot), shares a directory (task C
//! writes the file A serves), has one cgroup and one TASK_RUNNING per task, survives an
//! agent `kill -9` + restart, and is killed as a whole when one task is killed. A pod whose
//! one task cannot start never starts any.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use brim_framework::v1::{self, TaskState, TaskStatus};
use brim_framework::{Resources, TaskBuilder};
use support::probe::{ProbeEvent, ProbeFramework};
use support::{wait_for, Cluster};

/// Every update seen so far, per task.
#[derive(Default)]
struct Seen(HashMap<String, Vec<TaskStatus>>);

impl Seen {
    fn last(&self, task: &str) -> Option<&TaskStatus> {
        self.0.get(task).and_then(|v| v.last())
    }
}

/// Collects updates (declining offers) until `done` holds, for at most 30 s.
async fn until(fw: &mut ProbeFramework, seen: &mut Seen, what: &str, done: impl Fn(&Seen) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !done(seen) {
        let ev = tokio::time::timeout_at(deadline, fw.events.recv())
            .await
            .unwrap_or_else(|_| {
                let states: Vec<String> = seen
                    .0
                    .iter()
                    .map(|(k, v)| {
                        let l = v.last().expect("one update");
                        format!("{k}: {:?} {}", l.state(), l.message)
                    })
                    .collect();
                panic!("timed out waiting for {what}; tasks: {states:?}")
            });
        match ev {
            Some(ProbeEvent::Update(s)) => seen.0.entry(s.task_id.clone()).or_default().push(s),
            Some(ProbeEvent::Offers(offers)) => {
                let ids = offers.into_iter().map(|o| o.id).collect();
                let _ = fw.handle.decline(ids, Some(1.0)).await;
            }
            None => panic!("driver stopped while waiting for {what}"),
        }
    }
}

fn in_state(seen: &Seen, tasks: &[&str], state: TaskState) -> bool {
    tasks
        .iter()
        .all(|t| seen.last(t).is_some_and(|s| s.state() == state))
}

fn pod_task(id: &str, shell: &str, offer: &v1::Offer) -> v1::TaskInfo {
    let ask = Resources::parse("cpus:0.1;mem:32").expect("resources");
    let mut t = TaskBuilder::new(id, id)
        .shell(shell)
        .resources(&ask)
        .build_for(offer)
        .expect("task");
    t.labels.push(v1::Label {
        key: "brim.network".into(),
        value: "none".into(),
    });
    t
}

/// The agent's view of its tasks (`/state`).
fn agent_tasks(agent: &str) -> Vec<serde_json::Value> {
    let (_, body) = support::http_get(agent, "/state").expect("agent /state");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    v["tasks"].as_array().cloned().unwrap_or_default()
}

/// The task process under a supervisor (its only child).
fn task_pid(supervisor: i64) -> i64 {
    wait_for("the task process", Duration::from_secs(10), || {
        let children =
            std::fs::read_to_string(format!("/proc/{supervisor}/task/{supervisor}/children"))
                .ok()?;
        children.split_whitespace().next()?.parse().ok()
    })
}

/// Prints every task's stderr (on failure).
fn dump_sandboxes(work_dir: &std::path::Path) {
    let Ok(fws) = std::fs::read_dir(work_dir.join("sandboxes")) else {
        return;
    };
    for fw in fws.flatten() {
        for t in std::fs::read_dir(fw.path()).into_iter().flatten().flatten() {
            let err = std::fs::read_to_string(t.path().join("stderr")).unwrap_or_default();
            eprintln!("--- {} stderr ---\n{err}", t.path().display());
        }
    }
}

fn netns_of(pid: i64) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/net"))
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

fn cgroup_of(pid: i64) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default()
}

#[test]
fn a_pod_shares_loopback_and_a_directory_and_ends_together() {
    if !support::can_run_cluster("a_pod_shares_loopback_and_a_directory_and_ends_together")
        || !support::have_tools(
            "a_pod_shares_loopback_and_a_directory_and_ends_together",
            &["busybox", "ip", "nsenter"],
        )
    {
        return;
    }
    let mut c = Cluster::new();
    c.start_agent(0, "cpus:2;mem:1024");
    let s = c.wait_agents_active(1);
    let agent = s["agents"][0]["id"].as_str().expect("agent").to_string();
    let agent_http = c.agent_addrs[0].clone();
    let master = c.master_addr.clone();
    let work_dir = c.dir.path().join("agent0");
    // From the agent's port range: the eBPF bind policy lets a task bind only its ports.
    let port = (31000..32000)
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free port in the agent's range");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rt.block_on(async {
            let mut fw = ProbeFramework::start(&master, "pods").await;
            let mut seen = Seen::default();
            let offer = fw.offer_on(&agent).await;
            let serve = format!(
                "exec busybox httpd -f -p 127.0.0.1:{port} -h \"$MESOS_SANDBOX/shared\""
            );
            let fetch = format!(
                "until busybox wget -q -O got http://127.0.0.1:{port}/note; do sleep 0.1; done; cat got; exec sleep 600"
            );
            let write = "echo written-by-c > \"$MESOS_SANDBOX/shared/note\"; exec sleep 600";
            let mut a = pod_task("a", &serve, &offer);
            a.resources = Resources::parse(&format!("cpus:0.1;mem:32;ports:[{port}-{port}]"))
                .expect("resources")
                .to_proto();
            a.health_check = Some(v1::HealthCheck {
                kind: v1::HealthCheckKind::Command as i32,
                command: format!("busybox wget -q -O /dev/null http://127.0.0.1:{port}/note"),
                interval_seconds: 0.5,
                ..Default::default()
            });
            let tasks = vec![a, pod_task("b", &fetch, &offer), pod_task("c", write, &offer)];
            fw.handle
                .launch_group(&offer.id, "web-pod", tasks)
                .await
                .expect("launch the group");
            until(&mut fw, &mut seen, "the pod to run", |s| {
                in_state(s, &["a", "b", "c"], TaskState::TaskRunning)
            })
            .await;
            for t in ["a", "b", "c"] {
                let s = seen.last(t).expect("update");
                assert_eq!(s.executor_id, "web-pod", "updates name the group's executor");
            }
            // A's health check runs inside the pod and sees the file C wrote.
            until(&mut fw, &mut seen, "task a healthy", |s| {
                s.0.get("a")
                    .is_some_and(|v| v.iter().any(|u| u.healthy == Some(true)))
            })
            .await;
            // B reached A over the pod's loopback and read what C wrote in the shared dir.
            let b_out = work_dir.join(format!("sandboxes/{}/b/stdout", offer.framework_id));
            wait_for("b to fetch the note", Duration::from_secs(20), || {
                std::fs::read_to_string(&b_out)
                    .ok()
                    .filter(|s| s.contains("written-by-c"))
            });
            // The host's loopback is another one.
            assert!(
                std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
                "the pod's listener must not be reachable from the host"
            );
            // One network namespace for the pod, one cgroup per task.
            let tasks = agent_tasks(&agent_http);
            let mut netns = Vec::new();
            let mut cgroups = Vec::new();
            for t in ["a", "b", "c"] {
                let v = tasks.iter().find(|v| v["id"] == t).expect("task on agent");
                let pid = task_pid(v["pid"].as_i64().expect("pid"));
                let container = v["container_id"].as_str().expect("container").to_string();
                let cg = cgroup_of(pid);
                assert!(cg.contains(&container), "task {t} is in its own cgroup: {cg}");
                cgroups.push(cg);
                netns.push(netns_of(pid));
            }
            assert!(netns.iter().all(|n| *n == netns[0] && !n.is_empty()), "{netns:?}");
            assert_ne!(netns[0], netns_of(std::process::id() as i64));
            assert!(cgroups[0] != cgroups[1] && cgroups[1] != cgroups[2]);
            let holder = work_dir.join(format!("pods/{}/web-pod/netns", offer.framework_id));
            assert!(holder.exists(), "the pod's netns is held at {}", holder.display());

            // A task outside the pod cannot reach A's listener.
            let offer = fw.offer_on(&agent).await;
            let mut outsider = pod_task(
                "outsider",
                &format!("busybox wget -q -T 2 -O - http://127.0.0.1:{port}/note"),
                &offer,
            );
            outsider.labels.clear();
            fw.handle
                .launch(&offer.id, vec![outsider])
                .await
                .expect("launch the outsider");
            until(&mut fw, &mut seen, "the outsider to end", |s| {
                s.last("outsider").is_some_and(|u| u.state().is_terminal())
            })
            .await;
            assert_eq!(
                seen.last("outsider").map(|s| s.state()),
                Some(TaskState::TaskFailed)
            );

            // The agent dies and comes back: the pod keeps running, the same namespace. The
            // restart waits until the master saw the old agent go, and the kill below until it
            // has the new one (else the master refuses the kill: agent not connected).
            c.kill9_agent(0);
            c.start_agent(0, "cpus:2;mem:1024");
            c.wait_agents_active(1);
            wait_for("the pod re-attached", Duration::from_secs(30), || {
                let tasks = support::http_get(&agent_http, "/state")
                    .and_then(|(_, b)| serde_json::from_str::<serde_json::Value>(&b).ok())?;
                let running = tasks["tasks"]
                    .as_array()?
                    .iter()
                    .filter(|t| t["state"] == "TASK_RUNNING")
                    .count();
                (running == 3).then_some(())
            });
            let tasks = agent_tasks(&agent_http);
            let a = tasks.iter().find(|v| v["id"] == "a").expect("a");
            assert_eq!(netns_of(task_pid(a["pid"].as_i64().expect("pid"))), netns[0]);

            // Killing one task kills the group.
            fw.handle
                .kill("b", &agent, None)
                .await
                .expect("kill b");
            until(&mut fw, &mut seen, "the group to end", |s| {
                in_state(s, &["a", "b", "c"], TaskState::TaskKilled)
            })
            .await;
            for t in ["a", "c"] {
                let m = &seen.last(t).expect("update").message;
                assert!(m.contains("killed with its task group: task b"), "{t}: {m}");
            }
            wait_for("the pod's netns released", Duration::from_secs(10), || {
                (!holder.exists()).then_some(())
            });
            fw.handle.stop();
        })
    }));
    if result.is_err() {
        // The cluster's logs follow when it is dropped during the unwind.
        dump_sandboxes(&c.dir.path().join("agent0"));
    }
    c.cleanup_cgroups();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

#[test]
fn a_pod_starts_all_or_nothing() {
    if !support::can_run_cluster("a_pod_starts_all_or_nothing") {
        return;
    }
    let mut c = Cluster::new();
    c.start_agent(0, "cpus:2;mem:1024");
    let s = c.wait_agents_active(1);
    let agent = s["agents"][0]["id"].as_str().expect("agent").to_string();
    let master = c.master_addr.clone();
    let work_dir = c.dir.path().join("agent0");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rt.block_on(async {
            let mut fw = ProbeFramework::start(&master, "pods-fail").await;
            let mut seen = Seen::default();
            let offer = fw.offer_on(&agent).await;
            let good = pod_task("good", "touch started; exec sleep 600", &offer);
            let mut bad = pod_task("bad", "x", &offer);
            bad.command = Some(v1::CommandInfo {
                value: "/nonexistent/brim-no-such-program".into(),
                ..Default::default()
            });
            fw.handle
                .launch_group(&offer.id, "broken-pod", vec![good, bad])
                .await
                .expect("launch the group");
            until(&mut fw, &mut seen, "the pod to fail", |s| {
                in_state(s, &["good", "bad"], TaskState::TaskFailed)
            })
            .await;
            let m = &seen.last("good").expect("update").message;
            assert!(m.contains("task bad could not start"), "{m}");
            assert!(
                !seen.0["good"]
                    .iter()
                    .any(|u| u.state() == TaskState::TaskRunning),
                "no task of the pod ran"
            );
            assert!(
                !work_dir
                    .join(format!("sandboxes/{}/good/started", offer.framework_id))
                    .exists(),
                "the good task's command never ran"
            );
            fw.handle.stop();
        })
    }));
    if result.is_err() {
        // The cluster's logs follow when it is dropped during the unwind.
        dump_sandboxes(&c.dir.path().join("agent0"));
    }
    c.cleanup_cgroups();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}
