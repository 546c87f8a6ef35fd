//! Volumes for every task kind and custom executors in OCI containers (issue [G] parts 3-4),
//! with the real `brim` binary, crun and the busybox image, as root:
//! - `brim run --image … --volume SRC:DST:ro` mounts an allowed host directory read-only;
//! - host-path volumes inside `--allowed-host-paths` are visible in OCI and native tasks, a
//!   read-only one refuses writes with EROFS, a read-write one is written through;
//! - a sandbox-path volume shares a sandbox directory at another path (OCI and native);
//! - a host path outside the allow-list, one escaping through a symlink, a `..` or `/proc`
//!   target and an absolute native target give TASK_ERROR naming the field, and nothing is
//!   mounted or written outside;
//! - an OCI task writes into a persistent volume (RESERVE + CREATE), a second OCI task on the
//!   same agent reads it;
//! - a pymesos custom executor (tests/mesos/oci_executor.py) started from its ExecutorInfo
//!   inside the busybox image (the agent's python reached through read-only host-path
//!   volumes) runs two tasks whose commands see the image's files.

mod support;

use std::collections::HashMap;
use std::path::Path;

use brim_framework::v1::{self, container_info, TaskState};
use brim_framework::{
    create_volume_operation, host_volume, launch_operation, reserve_operation, volume, Resources,
    TaskBuilder,
};
use support::probe::{ProbeEvent, ProbeFramework};
use support::{busybox_image, Cluster};

fn oci(image: &str, volumes: Vec<v1::ContainerVolume>) -> v1::ContainerInfo {
    v1::ContainerInfo {
        r#type: container_info::Type::Oci as i32,
        image: Some(v1::Image {
            kind: 0,
            uri: image.into(),
        }),
        volumes,
    }
}

fn sandbox_vol(sandbox_path: &str, container_path: &str, readonly: bool) -> v1::ContainerVolume {
    v1::ContainerVolume {
        container_path: container_path.into(),
        mode: if readonly {
            v1::container_volume::Mode::Ro as i32
        } else {
            v1::container_volume::Mode::Rw as i32
        },
        source: Some(v1::container_volume::Source::SandboxPath(
            sandbox_path.into(),
        )),
    }
}

/// A shell task of 0.1 cpus / 64 MiB in `container` (native when `None`), for `offer`.
fn task(
    id: &str,
    shell: &str,
    container: Option<v1::ContainerInfo>,
    offer: &v1::Offer,
) -> v1::TaskInfo {
    let mut t = TaskBuilder::new(id, id)
        .shell(shell)
        .resources(&Resources::parse("cpus:0.1;mem:64").expect("resources"))
        .build_for(offer)
        .expect("task fits");
    t.container = container;
    t
}

/// Waits until every task of `ids` reached a terminal state; their last statuses.
async fn terminal(fw: &mut ProbeFramework, ids: &[&str]) -> HashMap<String, v1::TaskStatus> {
    let mut done = HashMap::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(90);
    while ids.iter().any(|i| !done.contains_key(*i)) {
        let ev = tokio::time::timeout_at(deadline, fw.events.recv())
            .await
            .unwrap_or_else(|_| panic!("tasks {ids:?} did not all end; ended: {done:?}"));
        match ev {
            Some(ProbeEvent::Update(s)) if s.state().is_terminal() => {
                done.insert(s.task_id.clone(), s);
            }
            Some(ProbeEvent::Offers(offers)) => {
                let ids = offers.into_iter().map(|o| o.id).collect();
                let _ = fw.handle.decline(ids, Some(0.2)).await;
            }
            Some(_) => {}
            None => panic!("driver stopped"),
        }
    }
    done
}

fn assert_state(done: &HashMap<String, v1::TaskStatus>, id: &str, want: TaskState) {
    let s = &done[id];
    assert_eq!(s.state(), want, "{id}: {}", s.message);
}

fn mounts_mentioning(dir: &Path) -> usize {
    let d = dir.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&d))
        .count()
}

#[test]
fn volumes_for_oci_and_native_tasks_and_an_executor_in_an_image() {
    if !support::can_run_cluster("volumes_for_oci_and_native_tasks_and_an_executor_in_an_image")
        || !support::have_tools(
            "volumes_for_oci_and_native_tasks_and_an_executor_in_an_image",
            &["crun", "busybox", "tar", "gzip", "sha256sum", "unshare"],
        )
    {
        return;
    }
    let python_ok = std::process::Command::new("/usr/bin/python3")
        .args(["-c", "import pymesos, http_parser"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !python_ok {
        assert!(
            std::env::var("BRIM_TEST_REQUIRE_ALL").is_err(),
            "volumes: /usr/bin/python3 cannot import pymesos (see .ci/run)"
        );
        eprintln!("volumes: skipped: /usr/bin/python3 cannot import pymesos (see .ci/run)");
        return;
    }
    let mut c = Cluster::new_with_master_flags(support::PATIENT_MASTER_FLAGS);
    let base = c.dir.path().to_path_buf();
    let allowed = base.join("allowed");
    let outside = base.join("outside");
    for d in ["ro", "rw", "exec"] {
        std::fs::create_dir_all(allowed.join(d)).expect("allowed dirs");
    }
    std::fs::create_dir_all(&outside).expect("outside");
    std::fs::write(allowed.join("ro/hello"), "from-host\n").expect("hello");
    std::fs::write(outside.join("secret"), "s\n").expect("secret");
    std::os::unix::fs::symlink(&outside, allowed.join("escape")).expect("symlink");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/mesos/oci_executor.py"),
        allowed.join("exec/oci_executor.py"),
    )
    .expect("executor script");
    let allow = format!("{},/usr", allowed.display());
    c.start_agent_with_flags(
        0,
        "cpus:4;mem:2048;disk:1024",
        &["--allowed-host-paths", &allow],
    );
    let s = c.wait_agents_active(1);
    let agent = s["agents"][0]["id"].as_str().expect("agent").to_string();
    let img = busybox_image(&base, false).display().to_string();
    let master = c.master_addr.clone();
    let a = |p: &str| allowed.join(p).display().to_string();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // 0. The CLI: `brim run --image … --volume SRC:DST:ro`.
        let out = c.brim(&[
            "run",
            "--name",
            "cli-volume",
            "--image",
            &img,
            "--volume",
            &format!("{}:/cli:ro", a("ro")),
            "--",
            "cat /cli/hello; touch /cli/x 2>&1 | grep -o 'Read-only file system'",
        ]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("from-host"), "{stdout}");
        assert!(stdout.contains("Read-only file system"), "{stdout}");
        rt.block_on(async {
            let mut fw = ProbeFramework::start_with(&master, "volumes", |cfg| {
                cfg.framework.role = "db".into();
            })
            .await;

            // 1. Host paths (RO and RW) and sandbox paths, in OCI and native tasks.
            let offer = fw.offer_on(&agent).await;
            let tasks = vec![
                task(
                    "oci-host",
                    "grep -qx from-host /opt/ro/hello \
                     && ! touch /opt/ro/new 2>/mnt/mesos/sandbox/err \
                     && grep -q 'Read-only file system' /mnt/mesos/sandbox/err \
                     && echo written > /opt/rw/out",
                    Some(oci(
                        &img,
                        vec![
                            host_volume(a("ro"), "/opt/ro", true),
                            host_volume(a("rw"), "/opt/rw", false),
                        ],
                    )),
                    &offer,
                ),
                task(
                    "oci-sandbox",
                    "echo shared > /shared/f && grep -qx shared /mnt/mesos/sandbox/out/f",
                    Some(oci(&img, vec![sandbox_vol("out", "/shared", false)])),
                    &offer,
                ),
                task(
                    "native",
                    "echo n > out/f && grep -qx n view/f \
                     && ! touch view/g 2>err && grep -q 'Read-only file system' err \
                     && grep -qx from-host host/hello",
                    Some(v1::ContainerInfo {
                        volumes: vec![
                            sandbox_vol("out", "view", true),
                            host_volume(a("ro"), "host", true),
                        ],
                        ..Default::default()
                    }),
                    &offer,
                ),
            ];
            fw.handle.launch(&offer.id, tasks).await.expect("launch");
            let done = terminal(&mut fw, &["oci-host", "oci-sandbox", "native"]).await;
            for id in ["oci-host", "oci-sandbox", "native"] {
                assert_state(&done, id, TaskState::TaskFinished);
            }
            assert_eq!(
                std::fs::read_to_string(allowed.join("rw/out")).expect("written through"),
                "written\n"
            );
            assert!(!allowed.join("ro/new").exists(), "read-only stayed so");

            // 2. Refused: outside the allow-list, escaping through a symlink, `..`, /proc,
            //    an absolute native target, an unknown mode.
            let offer = fw.offer_on(&agent).await;
            let outside_s = outside.display().to_string();
            let refused: Vec<(&str, v1::ContainerInfo, &str)> = vec![
                (
                    "outside",
                    oci(&img, vec![host_volume(&outside_s, "/x", false)]),
                    "container.volumes[0].host_path",
                ),
                (
                    "escape",
                    oci(
                        &img,
                        vec![
                            host_volume(a("ro"), "/ok", true),
                            host_volume(a("escape"), "/x", false),
                        ],
                    ),
                    "container.volumes[1].host_path",
                ),
                (
                    "dotdot",
                    oci(&img, vec![host_volume(a("rw"), "/opt/../x", false)]),
                    "container.volumes[0].container_path `/opt/../x` contains `..`",
                ),
                (
                    "proc",
                    oci(&img, vec![host_volume(a("rw"), "/proc/sys", false)]),
                    "under /proc",
                ),
                (
                    "native-abs",
                    v1::ContainerInfo {
                        volumes: vec![host_volume(a("rw"), "/etc/x", false)],
                        ..Default::default()
                    },
                    "is absolute",
                ),
            ];
            let ids: Vec<&str> = refused.iter().map(|r| r.0).collect();
            let tasks = refused
                .iter()
                .map(|(id, ci, _)| task(id, "touch /x/pwned", Some(ci.clone()), &offer))
                .collect();
            fw.handle.launch(&offer.id, tasks).await.expect("launch");
            let done = terminal(&mut fw, &ids).await;
            for (id, _, want) in &refused {
                let s = &done[*id];
                assert_eq!(s.state(), TaskState::TaskError, "{id}: {}", s.message);
                assert!(s.message.contains(want), "{id}: {}", s.message);
            }
            assert!(done["outside"].message.contains("--allowed-host-paths"));
            assert!(
                done["escape"]
                    .message
                    .contains(&format!("resolved: {}", outside.display())),
                "{}",
                done["escape"].message
            );
            assert_eq!(mounts_mentioning(&outside), 0, "nothing mounted");
            assert_eq!(
                std::fs::read_dir(&outside).expect("outside").count(),
                1,
                "nothing written outside"
            );

            // 3. A persistent volume on reserved disk: written by one OCI task, read by the
            //    next one on the same agent.
            let vol = volume("db", "oci-data", "data/pg", 256.0);
            let with_volume = |mut t: v1::TaskInfo, o: &v1::Offer| {
                t.resources = Resources::parse("cpus:0.1;mem:64")
                    .expect("resources")
                    .to_proto_reserved("db", "");
                t.resources.push(vol.clone());
                t.agent_id = o.agent_id.clone();
                t
            };
            let offer = fw.offer_on(&agent).await;
            let writer = with_volume(
                task(
                    "pv-writer",
                    "echo kept > /mnt/mesos/sandbox/data/pg/file",
                    Some(oci(&img, vec![])),
                    &offer,
                ),
                &offer,
            );
            let reserved = Resources::parse("cpus:0.5;mem:256;disk:512").expect("resources");
            fw.handle
                .accept(
                    vec![offer.id.clone()],
                    vec![
                        reserve_operation(&reserved, "db"),
                        create_volume_operation(vec![vol.clone()]),
                        launch_operation(vec![writer]),
                    ],
                    v1::Filters {
                        refuse_seconds: Some(0.1),
                    },
                )
                .await
                .expect("reserve + create + launch");
            let done = terminal(&mut fw, &["pv-writer"]).await;
            assert_state(&done, "pv-writer", TaskState::TaskFinished);
            let on_agent = base.join("agent0/volumes/db/oci-data/file");
            assert_eq!(
                std::fs::read_to_string(&on_agent).expect("volume"),
                "kept\n"
            );
            let offer = loop {
                let o = fw.offer_on(&agent).await;
                if o.resources.iter().any(|r| r.volume.is_some()) {
                    break o;
                }
                let _ = fw.handle.decline(vec![o.id.clone()], Some(0.2)).await;
            };
            let reader = with_volume(
                task(
                    "pv-reader",
                    "grep -qx kept data/pg/file && cat /etc/brim-image",
                    Some(oci(&img, vec![])),
                    &offer,
                ),
                &offer,
            );
            fw.handle
                .launch(&offer.id, vec![reader])
                .await
                .expect("launch reader");
            let done = terminal(&mut fw, &["pv-reader"]).await;
            assert_state(&done, "pv-reader", TaskState::TaskFinished);

            // 4. A custom executor in the busybox image runs two tasks.
            let offer = fw.offer_on(&agent).await;
            let executor = v1::ExecutorInfo {
                executor_id: "in-image".into(),
                name: "oci-executor".into(),
                r#type: v1::executor_info::Type::Custom as i32,
                command: Some(v1::CommandInfo {
                    shell: true,
                    value: "exec /usr/bin/python3 /opt/exec/oci_executor.py".into(),
                    ..Default::default()
                }),
                container: Some(oci(
                    &img,
                    vec![
                        host_volume("/usr", "/usr", true),
                        host_volume("/usr/lib", "/lib", true),
                        host_volume("/usr/lib64", "/lib64", true),
                        host_volume(a("exec"), "/opt/exec", true),
                    ],
                )),
            };
            let cmd = "cat /etc/brim-image; test ! -e /work && echo in-image";
            let tasks: Vec<v1::TaskInfo> = ["ex-1", "ex-2"]
                .into_iter()
                .map(|id| {
                    let mut t = TaskBuilder::new(id, id)
                        .shell(cmd)
                        .resources(&Resources::parse("cpus:0.1;mem:128").expect("resources"))
                        .build_for(&offer)
                        .expect("task fits");
                    t.executor = Some(executor.clone());
                    t
                })
                .collect();
            fw.handle.launch(&offer.id, tasks).await.expect("launch");
            let done = terminal(&mut fw, &["ex-1", "ex-2"]).await;
            let mut pids = Vec::new();
            for id in ["ex-1", "ex-2"] {
                assert_state(&done, id, TaskState::TaskFinished);
                let m = &done[id].message;
                assert!(m.contains("brim busybox image"), "{id}: {m}");
                assert!(m.contains("in-image"), "{id}: {m}");
                pids.push(m.split(':').next().unwrap_or_default().to_string());
            }
            assert_eq!(pids[0], pids[1], "one executor ran both tasks");
            // Tearing the framework down shuts its executor down.
            fw.handle.teardown().await.expect("teardown");
            fw.handle.stop();
        })
    }));
    // The cluster's logs follow when it is dropped during the unwind.
    c.cleanup_cgroups();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}
