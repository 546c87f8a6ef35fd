//! Framework failover: a scheduler that dies and comes back with its framework id (within
//! its failover timeout) gets its running tasks back — learns them by reconciliation — and
//! can kill them.

mod support;

use std::time::Duration;

use brim_framework::v1::TaskState;
use support::probe::ProbeFramework;
use support::Cluster;

#[test]
fn restarted_scheduler_gets_its_tasks_back() {
    if !support::can_run_cluster("restarted_scheduler_gets_its_tasks_back") {
        return;
    }
    let mut c = Cluster::new();
    c.start_agent(0, "cpus:1;mem:256");
    let s = c.wait_agents_active(1);
    let agent = s["agents"][0]["id"].as_str().expect("agent").to_string();
    let master = c.master_addr.clone();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let nobody = |cfg: &mut brim_framework::DriverConfig| {
            cfg.framework.user = "nobody".into();
            cfg.framework.failover_timeout = 60.0;
        };
        let mut first = ProbeFramework::start_with(&master, "failover", nobody).await;
        first.run_sleeper_on(&agent, "keeper").await;
        let id = first.handle.framework_id().expect("framework id");
        // The scheduler process dies (no teardown).
        first.handle.stop();
        drop(first);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut second = ProbeFramework::start_with(&master, "failover", |cfg| {
            nobody(cfg);
            cfg.framework.id = id.clone();
        })
        .await;
        // Re-subscribing with the id triggers implicit reconciliation.
        let status = second.wait_state("keeper", TaskState::TaskRunning).await;
        assert_eq!(status.agent_id, agent);
        assert_eq!(second.handle.framework_id().as_deref(), Some(id.as_str()));
        second
            .handle
            .kill("keeper", &agent, Some(Duration::from_secs(1)))
            .await
            .expect("kill after failover");
        second.wait_state("keeper", TaskState::TaskKilled).await;
        second.handle.stop();
    });
}
