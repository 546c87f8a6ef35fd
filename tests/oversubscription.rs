//! End-to-end oversubscription on one real agent (`--oversubscribe`): a "service" framework
//! holds most of the agent's cpus but sleeps; the agent measures that, publishes slack, and
//! the master offers it — marked revocable — only to a framework with the
//! `REVOCABLE_RESOURCES` capability. Revocable cpu-bound tasks run on it in the revocable
//! cgroup subtree. When the service's load jumps (it fills 900 MiB of its 1 GiB and burns
//! cpu), the slack shrinks below what the revocable tasks hold and the QoS controller evicts
//! them (`TASK_KILLED`, `REASON_CONTAINER_PREEMPTED`) and counts it in the agent's metrics.
//! Memory makes the jump deterministic: how much cpu the service gets on a loaded test
//! machine is not.

mod support;

use std::time::{Duration, Instant};

use brim_framework::v1::{Offer, TaskState, TaskStatusReason};
use brim_framework::{OfferPacker, Resources, TaskBuilder, CAPABILITY_REVOCABLE_RESOURCES};
use support::probe::{ProbeEvent, ProbeFramework};
use support::{http_get, state, wait_for, Cluster};

fn has_revocable(o: &Offer) -> bool {
    o.resources.iter().any(|r| r.revocable)
}

/// Offers received within `within`, every one declined (briefly) after being recorded.
async fn collect_offers(p: &mut ProbeFramework, within: Duration) -> Vec<Offer> {
    let deadline = tokio::time::Instant::now() + within;
    let mut seen = Vec::new();
    while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, p.events.recv()).await {
        if let ProbeEvent::Offers(offers) = ev {
            let ids = offers.iter().map(|o| o.id.clone()).collect();
            let _ = p.handle.decline(ids, Some(0.2)).await;
            seen.extend(offers);
        }
    }
    seen
}

/// Waits until every task in `tasks` runs (in whatever order their updates come).
async fn wait_running(p: &mut ProbeFramework, tasks: &[&str]) {
    let mut left: Vec<&str> = tasks.to_vec();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !left.is_empty() {
        let ev = tokio::time::timeout_at(deadline, p.events.recv())
            .await
            .unwrap_or_else(|_| panic!("{left:?} not running within 30 s"));
        match ev {
            Some(ProbeEvent::Update(s)) => {
                assert!(
                    !s.state().is_terminal(),
                    "{} ended: {:?} {}",
                    s.task_id,
                    s.state(),
                    s.message
                );
                if s.state() == TaskState::TaskRunning {
                    left.retain(|t| *t != s.task_id);
                }
            }
            Some(ProbeEvent::Offers(o)) => {
                let ids = o.into_iter().map(|o| o.id).collect();
                let _ = p.handle.decline(ids, Some(5.0)).await;
            }
            None => panic!("driver stopped"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocable_work_fills_slack_and_is_evicted_when_the_service_needs_it() {
    if !support::can_run_cluster(
        "revocable_work_fills_slack_and_is_evicted_when_the_service_needs_it",
    ) {
        return;
    }
    let mut c = Cluster::new();
    c.start_agent_with_flags(
        0,
        "cpus:2;mem:2048",
        &["--oversubscribe", "--slack-window", "3s"],
    );
    let s = c.wait_agents_active(1);
    let agent_id = s["agents"][0]["id"].as_str().expect("agent id").to_string();
    let master = c.master_addr.clone();

    // The service: 1.8 cpus, sleeping until the test raises its load.
    let flag = c.dir.path().join("load");
    let mut service = ProbeFramework::start(&master, "service").await;
    let offer = service.offer_on(&agent_id).await;
    assert!(!has_revocable(&offer), "no revocable before any slack");
    let task = TaskBuilder::new("svc", "svc")
        .shell(format!(
            "while [ ! -e {f} ]; do sleep 1; done; exec python3 -c {script}",
            f = flag.display(),
            script = "'b = b\"x\" * (900 << 20)\nwhile True: pass'",
        ))
        .resources(&Resources::parse("cpus:1.8;mem:1024").expect("resources"))
        .build_for(&offer)
        .expect("service task");
    service
        .handle
        .launch(&offer.id, vec![task])
        .await
        .expect("launch service");
    service.wait_state("svc", TaskState::TaskRunning).await;

    // The agent measures the idle service and lends most of its cpus.
    let slack = wait_for("slack published", Duration::from_secs(30), || {
        let a = &state(&master)["agents"][0];
        let cpus = a["revocable"]["cpus"].as_f64().unwrap_or(0.0);
        (cpus >= 1.2).then_some(cpus)
    });
    assert!(
        slack <= 1.8 + 1e-9,
        "slack {slack} beyond the service's allocation"
    );

    // A framework without the capability never sees revocable resources.
    let mut plain = ProbeFramework::start(&master, "plain").await;
    let seen = collect_offers(&mut plain, Duration::from_secs(3)).await;
    assert!(
        seen.iter().all(|o| !has_revocable(o)),
        "a framework without REVOCABLE_RESOURCES got a revocable offer: {seen:?}"
    );
    plain.handle.stop();

    // The revocable framework gets the slack and runs two cpu-bound tasks on it.
    let mut batch = ProbeFramework::start_with(&master, "batch", |c| {
        *c = c.clone().with_capability(CAPABILITY_REVOCABLE_RESOURCES);
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let rev_offer = loop {
        assert!(Instant::now() < deadline, "no revocable offer within 30 s");
        let o = batch.offer_on(&agent_id).await;
        if has_revocable(&o) {
            break o;
        }
        let _ = batch.handle.decline(vec![o.id], Some(1.0)).await;
    };
    let mut packer = OfferPacker::revocable(&rev_offer).expect("revocable offer");
    let busy = TaskBuilder::new("b0", "busy")
        .shell("while :; do :; done")
        .cpus(0.5)
        .mem(32.0);
    let tasks = vec![
        packer.place(&busy).expect("b0 fits"),
        packer
            .place(
                &TaskBuilder::new("b1", "busy")
                    .shell("while :; do :; done")
                    .cpus(0.5)
                    .mem(32.0),
            )
            .expect("b1 fits"),
    ];
    assert!(tasks
        .iter()
        .all(|t| t.resources.iter().all(|r| r.revocable)));
    batch
        .handle
        .launch(&rev_offer.id, tasks)
        .await
        .expect("launch revocable");
    wait_running(&mut batch, &["b0", "b1"]).await;
    let used = wait_for("revocable use in /state", Duration::from_secs(10), || {
        let a = &state(&master)["agents"][0];
        a["revocable_used"]["cpus"].as_f64().filter(|c| *c >= 1.0)
    });
    assert_eq!(used, 1.0);
    // The revocable tasks live in the revocable cgroup subtree.
    let agent_state: serde_json::Value = serde_json::from_str(
        &http_get(&c.agent_addrs[0], "/state")
            .expect("agent /state")
            .1,
    )
    .expect("json");
    assert_eq!(agent_state["oversubscription"]["enabled"], true);

    // The service's load jumps: the revocable tasks are evicted.
    std::fs::write(&flag, b"go").expect("raise the service's load");
    let jumped = Instant::now();
    let mut preempted = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    while preempted.len() < 2 {
        let ev = tokio::time::timeout_at(deadline, batch.events.recv())
            .await
            .unwrap_or_else(|_| panic!("revocable tasks not evicted within 40 s: {preempted:?}"));
        match ev {
            Some(ProbeEvent::Update(s)) if s.state().is_terminal() => {
                assert_eq!(s.state(), TaskState::TaskKilled, "{s:?}");
                assert_eq!(
                    s.reason(),
                    TaskStatusReason::ReasonContainerPreempted,
                    "{s:?}"
                );
                assert!(s.message.contains("preempted"), "{}", s.message);
                preempted.push(s.task_id.clone());
            }
            Some(ProbeEvent::Offers(o)) => {
                let ids = o.into_iter().map(|o| o.id).collect();
                let _ = batch.handle.decline(ids, Some(5.0)).await;
            }
            Some(_) => {}
            None => panic!("batch driver stopped"),
        }
    }
    eprintln!(
        "both revocable tasks evicted {:.1} s after the load jump",
        jumped.elapsed().as_secs_f64()
    );
    if std::env::var_os("BRIM_TEST_DUMP").is_some() {
        c.dump_logs();
    }
    let metrics = http_get(&c.agent_addrs[0], "/metrics").expect("metrics").1;
    let evictions: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("brim_agent_revocable_evictions_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(evictions >= 2.0, "{metrics}");
    // The service was never touched.
    let s = state(&master);
    let svc = s["tasks"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["id"] == "svc"))
        .cloned()
        .expect("service task listed");
    assert_eq!(svc["state"], "TASK_RUNNING");
    batch.handle.stop();
    service.handle.stop();
}
