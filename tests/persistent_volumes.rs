//! Persistent volumes end to end (the stateful-framework proof): a framework of role `db`
//! RESERVEs cpus, mem and disk on a real agent, CREATEs a volume on the reserved disk and
//! launches a task that writes into it; after that task ended, the next offer carries the
//! volume back and a second task reads the file; DESTROY removes the volume's directory on
//! the agent. Then the reservation is UNRESERVEd and the whole agent is unreserved again.

mod support;

use std::time::Duration;

use brim_framework::v1::{self, TaskState};
use brim_framework::{
    create_volume_operation, destroy_volume_operation, launch_operation, reserve_operation,
    unreserve_operation, volume, Resources,
};
use support::probe::{ProbeEvent, ProbeFramework};
use support::{wait_for, Cluster};

fn task(id: &str, shell: &str, agent: &str, volume_res: &v1::Resource) -> v1::TaskInfo {
    let mut resources = Resources::parse("cpus:0.25;mem:64")
        .expect("resources")
        .to_proto_reserved("db", "");
    resources.push(volume_res.clone());
    v1::TaskInfo {
        name: id.into(),
        task_id: id.into(),
        agent_id: agent.into(),
        resources,
        command: Some(v1::CommandInfo {
            shell: true,
            value: shell.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn volumes_of(o: &v1::Offer) -> Vec<String> {
    o.resources
        .iter()
        .filter_map(|r| r.volume.as_ref().map(|v| v.persistence_id.clone()))
        .collect()
}

/// Next offer on the agent that satisfies `want` (others are declined for a moment).
async fn offer_where(
    fw: &mut ProbeFramework,
    agent: &str,
    want: impl Fn(&v1::Offer) -> bool,
) -> v1::Offer {
    for _ in 0..50 {
        let o = fw.offer_on(agent).await;
        if want(&o) {
            return o;
        }
        let _ = fw.handle.decline(vec![o.id.clone()], Some(0.2)).await;
    }
    panic!("no suitable offer on {agent}");
}

#[test]
fn a_volume_keeps_data_across_tasks_until_destroyed() {
    if !support::can_run_cluster("a_volume_keeps_data_across_tasks_until_destroyed") {
        return;
    }
    let mut c = Cluster::new();
    c.start_agent(0, "cpus:2;mem:1024;disk:1024");
    let s = c.wait_agents_active(1);
    let agent = s["agents"][0]["id"].as_str().expect("agent").to_string();
    let master = c.master_addr.clone();
    let volume_dir = c.dir.path().join("agent0/volumes/db/pg-data");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rt.block_on(async {
            let mut fw = ProbeFramework::start_with(&master, "stateful", |cfg| {
                cfg.framework.role = "db".into();
            })
            .await;
            let vol = volume("db", "pg-data", "data/pg", 256.0);
            // RESERVE, CREATE and LAUNCH in one ACCEPT: the writer.
            let offer = fw.offer_on(&agent).await;
            let reserved = Resources::parse("cpus:0.5;mem:128;disk:512").expect("resources");
            fw.handle
                .accept(
                    vec![offer.id.clone()],
                    vec![
                        reserve_operation(&reserved, "db"),
                        create_volume_operation(vec![vol.clone()]),
                        launch_operation(vec![task(
                            "writer",
                            "echo kept-across-tasks > data/pg/file",
                            &agent,
                            &vol,
                        )]),
                    ],
                    v1::Filters {
                        refuse_seconds: Some(0.1),
                    },
                )
                .await
                .expect("reserve + create + launch");
            fw.wait_state("writer", TaskState::TaskFinished).await;
            assert!(
                volume_dir.join("file").exists(),
                "the volume is on the agent"
            );
            let st = support::state(&master);
            assert_eq!(st["agents"][0]["reserved"]["db"]["disk"], 512.0, "{st}");
            assert_eq!(st["agents"][0]["volumes"][0]["persistence_id"], "pg-data");

            // The volume comes back in an offer; a second task reads what the first wrote.
            let offer = offer_where(&mut fw, &agent, |o| volumes_of(o) == ["pg-data"]).await;
            fw.handle
                .accept(
                    vec![offer.id.clone()],
                    vec![launch_operation(vec![task(
                        "reader",
                        "grep -qx kept-across-tasks data/pg/file",
                        &agent,
                        &vol,
                    )])],
                    v1::Filters {
                        refuse_seconds: Some(0.1),
                    },
                )
                .await
                .expect("launch the reader");
            fw.wait_state("reader", TaskState::TaskFinished).await;

            // DESTROY the volume (its directory goes), then UNRESERVE everything.
            let offer = offer_where(&mut fw, &agent, |o| volumes_of(o) == ["pg-data"]).await;
            fw.handle
                .accept(
                    vec![offer.id.clone()],
                    vec![
                        destroy_volume_operation(vec![vol.clone()]),
                        unreserve_operation(&reserved, "db"),
                    ],
                    v1::Filters {
                        refuse_seconds: Some(0.1),
                    },
                )
                .await
                .expect("destroy + unreserve");
            wait_for(
                "the volume directory to go",
                Duration::from_secs(10),
                || (!volume_dir.exists()).then_some(()),
            );
            let st = support::state(&master);
            assert!(
                st["agents"][0]["reserved"]
                    .as_object()
                    .is_some_and(|m| m.is_empty()),
                "{st}"
            );
            let offer = offer_where(&mut fw, &agent, |o| {
                o.resources.iter().all(|r| r.reservation_role.is_empty())
                    && Resources::from_proto(&o.resources).is_ok_and(|r| r.scalar("disk") == 1024.0)
            })
            .await;
            let _ = fw.handle.decline(vec![offer.id], None).await;
            while let Ok(ProbeEvent::Update(_)) = fw.events.try_recv() {}
            fw.handle.stop();
        })
    }));
    // The cluster's logs follow when it is dropped during the unwind.
    c.cleanup_cgroups();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}
