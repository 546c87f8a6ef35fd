//! Nested containers end to end (issue [G] part 3): `brim task exec` into a native task
//! with its own network namespace (it reaches the task's 127.0.0.1 listener, prints output,
//! passes the exit code on) and into an OCI task (it sees the image); the nested process
//! sits in a cgroup under the task's, the task's memory limit caps it (an OOM kills the
//! hog, the task keeps running), KILL and the task's end remove it; the agent API refuses
//! bad calls with clear 4xx answers; a pod task launches a sidecar itself through the
//! agent API with its token, and the other task of the pod reaches the sidecar.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use brim_framework::v1::{self, TaskState};
use brim_framework::{Resources, TaskBuilder};
use support::probe::ProbeFramework;
use support::{busybox_image, wait_for, Cluster};

const RES: &str = "cpus:2;mem:1024;ports:[31000-31099]";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn show(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        text(&o.stdout),
        text(&o.stderr)
    )
}

/// A POST of `body` to the agent; (status, body).
fn post(addr: &str, path: &str, body: &[u8], headers: &[(&str, &str)]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect to the agent");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut head = format!(
        "POST {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).expect("write head");
    // A refused oversized body may close the connection before all of it is written.
    let _ = s.write_all(body);
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let t = text(&buf);
    let (head, body) = t.split_once("\r\n\r\n").unwrap_or((&t, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, body.to_string())
}

fn api(agent: &str, body: serde_json::Value) -> (u16, String) {
    post(agent, "/api/v1", body.to_string().as_bytes(), &[])
}

fn cid(parent: &str, id: &str) -> serde_json::Value {
    serde_json::json!({"value": id, "parent": {"value": parent}})
}

/// The container id of a task, from the agent's /state.
fn container_of(agent: &str, task: &str) -> String {
    let (_, body) = support::http_get(agent, "/state").expect("agent /state");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    v["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["id"] == task)
        .and_then(|t| t["container_id"].as_str())
        .unwrap_or_else(|| panic!("task {task} on the agent: {v}"))
        .to_string()
}

/// Live (not zombie) processes whose /proc/PID/cgroup mentions `needle`, with that file.
fn procs_in_cgroup(needle: &str) -> Vec<(i32, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
        });
        if zombie {
            continue;
        }
        if let Ok(cg) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) {
            if cg.contains(needle) {
                out.push((pid, cg));
            }
        }
    }
    out
}

/// The directories a nested container's cgroup may have (pure v2, or hybrid's v1
/// hierarchies and cgroup2).
/// Waits (`within`) until no process is left in nested container `id` of `container`
/// (under the agent's cgroup root `root`), then (10 s) until its cgroups are removed.
fn wait_nested_gone(why: &str, within: Duration, (root, container, id): (&str, &str, &str)) {
    let needle = format!("/{root}/{container}/nested/{id}");
    wait_for(why, within, || {
        procs_in_cgroup(&needle).is_empty().then_some(())
    });
    wait_for(
        &format!("the cgroups of nested container {id} to be removed"),
        Duration::from_secs(10),
        || {
            nested_dirs(root, container, id)
                .iter()
                .all(|d| !d.exists())
                .then_some(())
        },
    );
}

fn nested_dirs(root: &str, container: &str, id: &str) -> Vec<PathBuf> {
    ["", "unified", "memory", "cpu,cpuacct", "cpu", "pids"]
        .iter()
        .map(|h| {
            PathBuf::from("/sys/fs/cgroup")
                .join(h)
                .join(root)
                .join(container)
                .join("nested")
                .join(id)
        })
        .collect()
}

fn agent_task_state(agent: &str, task: &str) -> String {
    let (_, body) = support::http_get(agent, "/state").expect("agent /state");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    v["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(v["completed_tasks"].as_array().into_iter().flatten())
        .find(|t| t["id"] == task)
        .and_then(|t| t["state"].as_str())
        .unwrap_or("")
        .to_string()
}

/// A free port of `range` (the agent offers 31000-31099; the two tests of this file run in
/// parallel on the host's loopback, so each takes its own half).
fn free_port_in_range(mut range: std::ops::Range<u16>) -> u16 {
    range
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free port in the agent's range")
}

#[test]
fn exec_into_native_and_oci_tasks() {
    let name = "exec_into_native_and_oci_tasks";
    if !support::can_run_cluster(name)
        || !support::have_tools(
            name,
            &[
                "crun",
                "busybox",
                "tar",
                "gzip",
                "sha256sum",
                "nsenter",
                "curl",
            ],
        )
    {
        return;
    }
    let mut c = Cluster::new();
    c.start_agent(0, RES);
    let s = c.wait_agents_active(1);
    let agent_id = s["agents"][0]["id"].as_str().expect("agent").to_string();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rt.block_on(native_and_oci(&mut c, &agent_id))
    }));
    if let Err(panic) = result {
        let work = c.dir.path().join("agent0/sandboxes");
        for fw in std::fs::read_dir(work).into_iter().flatten().flatten() {
            for t in std::fs::read_dir(fw.path()).into_iter().flatten().flatten() {
                let err = std::fs::read_to_string(t.path().join("stderr")).unwrap_or_default();
                eprintln!("--- {} stderr ---\n{err}", t.path().display());
            }
        }
        std::panic::resume_unwind(panic);
    }
}

async fn native_and_oci(c: &mut Cluster, agent_id: &str) {
    let agent = c.agent_addrs[0].clone();
    let root = format!("{}-a0", c.tag);
    let mut fw = ProbeFramework::start(&c.master_addr, "nested").await;
    let port = free_port_in_range(31000..31050);

    // A native task in its own network namespace (`none`: only its loopback) serving on
    // 127.0.0.1, with 64 MiB of memory; it ends when `stop` appears in its sandbox.
    let offer = fw.offer_on(agent_id).await;
    let web = TaskBuilder::new("web", "web")
        .shell(format!(
            "echo task-page > index.html; busybox httpd -p 127.0.0.1:{port} -h .; \
             while [ ! -e stop ]; do sleep 0.2; done; echo parent-done"
        ))
        .resources(
            &Resources::parse(&format!("cpus:0.2;mem:64;ports:[{port}-{port}]"))
                .expect("resources"),
        )
        .label("brim.network", "none")
        .build_for(&offer)
        .expect("task");
    fw.handle
        .launch(&offer.id, vec![web])
        .await
        .expect("launch");
    let running = fw.wait_state("web", TaskState::TaskRunning).await;
    let web_cid = container_of(&agent, "web");
    // The status update names the container to nest under (Mesos container_status).
    assert_eq!(running.container_id, web_cid);

    // 1. exec sees the task's network: its listener on 127.0.0.1, which the host's loopback
    //    does not have; output and the exit code come back.
    let started = std::time::Instant::now();
    let out = c.brim(&[
        "task",
        "exec",
        "web",
        "--",
        &format!(
            "until busybox wget -q -O - http://127.0.0.1:{port}/index.html; do sleep 0.1; done; echo to-stderr >&2; exit 7"
        ),
    ]);
    let exec_ms = started.elapsed().as_millis();
    assert_eq!(out.status.code(), Some(7), "{}", show(&out));
    assert!(text(&out.stdout).contains("task-page"), "{}", show(&out));
    assert!(text(&out.stderr).contains("to-stderr"), "{}", show(&out));
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the task's listener is in its own network namespace"
    );
    eprintln!("nested: brim task exec round trip (wget inside the task): {exec_ms} ms");
    // What an exec costs end to end (CLI: master /state, agent /state, LAUNCH, WAIT,
    // output, REMOVE; agent: nsenter, cgroup made and removed): 20 `true`s.
    let mut ms: Vec<u128> = (0..20)
        .map(|_| {
            let t = std::time::Instant::now();
            let out = c.brim(&["task", "exec", "web", "--", "true"]);
            assert_eq!(out.status.code(), Some(0), "{}", show(&out));
            t.elapsed().as_millis()
        })
        .collect();
    ms.sort_unstable();
    eprintln!(
        "nested: brim task exec -- true, 20 runs: median {} ms, max {} ms",
        ms[10], ms[19]
    );
    // Several arguments: program and arguments, no shell; exit 0.
    let out = c.brim(&["task", "exec", "web", "--", "busybox", "echo", "a b", "c"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(text(&out.stdout), "a b c\n", "{}", show(&out));

    // 2. Placement: a detached sleeper sits in <task cgroup>/nested/sleeper.
    let out = c.brim(&[
        "task",
        "exec",
        "--detach",
        "--id",
        "sleeper",
        "web",
        "--",
        "sleep 600",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(text(&out.stdout).trim(), "sleeper");
    let needle = format!("/{root}/{web_cid}/nested/sleeper");
    let procs = wait_for(
        "the sleeper in its nested cgroup",
        Duration::from_secs(10),
        || {
            let p = procs_in_cgroup(&needle);
            (!p.is_empty()).then_some(p)
        },
    );
    for (pid, cg) in &procs {
        for line in cg.lines().filter(|l| l.contains(&web_cid)) {
            assert!(
                line.ends_with(&format!("/{root}/{web_cid}/nested/sleeper")),
                "pid {pid}: every hierarchy of the task nests it: {cg}"
            );
        }
    }
    assert!(
        nested_dirs(&root, &web_cid, "sleeper")
            .iter()
            .any(|d| d.is_dir()),
        "the nested cgroup exists"
    );
    // The agent's /state lists it under its task.
    let (_, body) = support::http_get(&agent, "/state").expect("agent /state");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    let web = v["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["id"] == "web")
        .expect("web");
    assert_eq!(
        web["nested_containers"],
        serde_json::json!([{"id": "sleeper", "running": true, "exit_status": null}]),
        "{web}"
    );
    assert_eq!(v["nested_containers_running"], 1);
    // The same id again is refused; a REMOVE of a running container too.
    let launch_again = serde_json::json!({"type": "LAUNCH_NESTED_CONTAINER",
        "launch_nested_container": {"container_id": cid(&web_cid, "sleeper"), "command": {"value": "true"}}});
    let (code, body) = api(&agent, launch_again);
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("already exists"), "{body}");
    let (code, body) = api(
        &agent,
        serde_json::json!({"type": "REMOVE_NESTED_CONTAINER",
            "remove_nested_container": {"container_id": cid(&web_cid, "sleeper")}}),
    );
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("still running"), "{body}");
    // A WAIT answers 200 at once and its body when the container ends (a long wait is
    // not cut by the agent's request deadline); KILL ends it: SIGKILL, nothing left.
    let wait_body = serde_json::json!({"type": "WAIT_NESTED_CONTAINER",
        "wait_nested_container": {"container_id": cid(&web_cid, "sleeper")}})
    .to_string();
    let mut waiting = TcpStream::connect(&agent).expect("connect");
    waiting
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        waiting,
        "POST /api/v1 HTTP/1.1\r\nHost: {agent}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{wait_body}",
        wait_body.len()
    )
    .expect("send WAIT");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = waiting
            .read(&mut byte)
            .expect("WAIT's head before the container ends");
        assert_eq!(n, 1, "WAIT closed early: {}", text(&head));
        head.push(byte[0]);
    }
    assert!(text(&head).starts_with("HTTP/1.1 200"), "{}", text(&head));
    let (code, body) = api(
        &agent,
        serde_json::json!({"type": "KILL_NESTED_CONTAINER",
            "kill_nested_container": {"container_id": cid(&web_cid, "sleeper")}}),
    );
    assert_eq!(code, 200, "{body}");
    let mut rest = Vec::new();
    let _ = waiting.read_to_end(&mut rest);
    let rest = text(&rest);
    assert!(
        rest.contains(
            r#"{"type":"WAIT_NESTED_CONTAINER","wait_nested_container":{"exit_status":9}}"#
        ),
        "{rest}"
    );
    let (code, body) = api(
        &agent,
        serde_json::json!({"type": "WAIT_NESTED_CONTAINER",
            "wait_nested_container": {"container_id": cid(&web_cid, "sleeper")}}),
    );
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("wait answer");
    assert_eq!(v["wait_nested_container"]["exit_status"], 9, "{body}");
    let left = procs_in_cgroup(&needle);
    assert!(left.is_empty(), "killed: {left:?}");
    assert!(
        nested_dirs(&root, &web_cid, "sleeper")
            .iter()
            .all(|d| !d.exists()),
        "the nested cgroup is removed"
    );
    let remove = serde_json::json!({"type": "REMOVE_NESTED_CONTAINER",
        "remove_nested_container": {"container_id": cid(&web_cid, "sleeper")}});
    assert_eq!(api(&agent, remove.clone()).0, 200);
    assert_eq!(api(&agent, remove).0, 404);

    // 3. The task's memory limit caps its nested containers: a 200 MB hog in a 64 MiB task
    //    is OOM-killed, the task keeps running and answers the next exec.
    let out = c.brim(&[
        "task",
        "exec",
        "web",
        "--",
        "dd if=/dev/zero of=/dev/null bs=200M count=1",
    ]);
    assert_eq!(out.status.code(), Some(137), "{}", show(&out));
    assert_eq!(agent_task_state(&agent, "web"), "TASK_RUNNING");
    let out = c.brim(&["task", "exec", "web", "--", "cat index.html"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(text(&out.stdout), "task-page\n");

    // 4. Bad calls: clear 4xx answers.
    let bad: Vec<(Vec<u8>, u16, &str)> = vec![
        (b"{not json".to_vec(), 400, "malformed call"),
        (br#"{"type":"GET_STATE"}"#.to_vec(), 400, "not supported"),
        (
            serde_json::json!({"type": "LAUNCH_NESTED_CONTAINER",
                "launch_nested_container": {"container_id": cid("no-such-container", "x"), "command": {"value": "true"}}})
            .to_string()
            .into_bytes(),
            404,
            "no task on this agent has container",
        ),
        (
            serde_json::json!({"type": "LAUNCH_NESTED_CONTAINER",
                "launch_nested_container": {"container_id": cid(&web_cid, "../x"), "command": {"value": "true"}}})
            .to_string()
            .into_bytes(),
            400,
            "contains `/`",
        ),
        (
            serde_json::json!({"type": "WAIT_NESTED_CONTAINER",
                "wait_nested_container": {"container_id": cid(&web_cid, "never")}})
            .to_string()
            .into_bytes(),
            404,
            "no nested container `never`",
        ),
        (vec![b' '; 200 * 1024], 413, "over 65536 bytes"),
    ];
    for (body, want, msg) in bad {
        let (code, answer) = post(&agent, "/api/v1", &body, &[]);
        assert_eq!(code, want, "{answer}");
        assert!(answer.contains(msg), "want `{msg}` in: {answer}");
    }

    // 5. Nested containers are not checkpointed: an agent kill -9 + restart kills them;
    //    the task runs on and takes new ones.
    let out = c.brim(&[
        "task",
        "exec",
        "--detach",
        "--id",
        "survivor",
        "web",
        "--",
        "sleep 600",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let needle = format!("/{root}/{web_cid}/nested/survivor");
    wait_for("the survivor-to-be runs", Duration::from_secs(10), || {
        (!procs_in_cgroup(&needle).is_empty()).then_some(())
    });
    c.kill9_agent(0);
    assert!(
        !procs_in_cgroup(&needle).is_empty(),
        "a nested container outlives the agent process itself"
    );
    c.start_agent(0, RES);
    c.wait_agents_active(1);
    wait_nested_gone(
        "the restarted agent to kill the nested container",
        Duration::from_secs(20),
        (&root, &web_cid, "survivor"),
    );
    let out = wait_for("exec after the restart", Duration::from_secs(20), || {
        let o = c.brim(&["task", "exec", "web", "--", "cat index.html"]);
        (o.status.code() == Some(0)).then_some(o)
    });
    assert_eq!(text(&out.stdout), "task-page\n");
    // The task's own socket is served again by the new agent.
    let sock = c.dir.path().join(format!(
        "agent0/sandboxes/{}/web/.brim/agent.sock",
        running.framework_id
    ));
    let wait_never = serde_json::json!({"type": "WAIT_NESTED_CONTAINER",
        "wait_nested_container": {"container_id": cid(&web_cid, "never")}})
    .to_string();
    let out = std::process::Command::new("curl")
        .args(["-sS", "-w", "\n%{http_code}", "--unix-socket"])
        .arg(&sock)
        .args([
            "-H",
            "Content-Type: application/json",
            "-d",
            &wait_never,
            "http://agent/api/v1",
        ])
        .output()
        .expect("curl");
    assert!(text(&out.stdout).ends_with("404"), "{}", show(&out));

    // 6. The task's end ends its nested containers and removes their cgroups.
    let out = c.brim(&[
        "task",
        "exec",
        "--detach",
        "--id",
        "orphan",
        "web",
        "--",
        "sleep 600",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let needle = format!("/{root}/{web_cid}/nested/orphan");
    wait_for("the orphan-to-be runs", Duration::from_secs(10), || {
        (!procs_in_cgroup(&needle).is_empty()).then_some(())
    });
    let out = c.brim(&["task", "exec", "web", "--", "touch stop"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    fw.wait_state("web", TaskState::TaskFinished).await;
    wait_nested_gone(
        "the nested container to die with its task",
        Duration::from_secs(10),
        (&root, &web_cid, "orphan"),
    );
    // Parent not running (finished): the CLI and the API say so.
    let out = c.brim(&["task", "exec", "web", "--", "true"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(text(&out.stderr).contains("not running"), "{}", show(&out));
    let (code, body) = api(
        &agent,
        serde_json::json!({"type": "LAUNCH_NESTED_CONTAINER",
            "launch_nested_container": {"container_id": cid(&web_cid, "late"), "command": {"value": "true"}}}),
    );
    assert!(code == 404 || code == 409, "{code} {body}");
    let out = c.brim(&["task", "exec", "no-such-task", "--", "true"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        text(&out.stderr).contains("no task `no-such-task`"),
        "{}",
        show(&out)
    );

    // 7. An OCI task: exec runs in its container and sees the image's filesystem.
    let img = busybox_image(c.dir.path(), false).display().to_string();
    let offer = fw.offer_on(agent_id).await;
    let boxed = TaskBuilder::new("box", "box")
        .shell("while [ ! -e /mnt/mesos/sandbox/stop ]; do sleep 0.2; done")
        .resources(&Resources::parse("cpus:0.2;mem:64").expect("resources"))
        .image(img.as_str())
        .build_for(&offer)
        .expect("task");
    fw.handle
        .launch(&offer.id, vec![boxed])
        .await
        .expect("launch");
    fw.wait_state("box", TaskState::TaskRunning).await;
    let box_cid = container_of(&agent, "box");
    let out = c.brim(&[
        "task",
        "exec",
        "box",
        "--",
        "cat /etc/brim-image; test -e /usr/bin/cargo || echo no-host-fs; pwd; exit 4",
    ]);
    assert_eq!(out.status.code(), Some(4), "{}", show(&out));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("brim busybox image"), "{}", show(&out));
    assert!(stdout.contains("no-host-fs"), "{}", show(&out));
    assert!(stdout.contains("/mnt/mesos/sandbox"), "{}", show(&out));
    // The call's environment reaches an OCI exec too (on top of the container's).
    let (code, body) = api(
        &agent,
        serde_json::json!({"type": "LAUNCH_NESTED_CONTAINER",
            "launch_nested_container": {"container_id": cid(&box_cid, "env"),
                "command": {"value": "echo \"$GREETING in $MESOS_SANDBOX\"",
                    "environment": {"variables": [{"name": "GREETING", "value": "hello"}]}}}}),
    );
    assert_eq!(code, 200, "{body}");
    let (code, body) = api(
        &agent,
        serde_json::json!({"type": "WAIT_NESTED_CONTAINER",
            "wait_nested_container": {"container_id": cid(&box_cid, "env")}}),
    );
    assert_eq!(code, 200, "{body}");
    let box_sandbox = c
        .dir
        .path()
        .join(format!("agent0/sandboxes/{}/box", offer.framework_id));
    assert_eq!(
        std::fs::read_to_string(box_sandbox.join("containers/env/stdout")).expect("output"),
        "hello in /mnt/mesos/sandbox\n"
    );
    let out = c.brim(&[
        "task",
        "exec",
        "--detach",
        "--id",
        "side",
        "box",
        "--",
        "sleep 600",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let needle = format!("/{root}/{box_cid}/nested/side");
    wait_for(
        "the OCI sidecar in its nested cgroup",
        Duration::from_secs(10),
        || (!procs_in_cgroup(&needle).is_empty()).then_some(()),
    );
    let out = c.brim(&["task", "exec", "box", "--", "touch /mnt/mesos/sandbox/stop"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    fw.wait_state("box", TaskState::TaskFinished).await;
    wait_for(
        "the OCI sidecar to die with its task",
        Duration::from_secs(10),
        || procs_in_cgroup(&needle).is_empty().then_some(()),
    );
}

fn pod_task(id: &str, shell: &str, ports: &str, offer: &v1::Offer) -> v1::TaskInfo {
    let ask = Resources::parse(&format!("cpus:0.1;mem:32{ports}")).expect("resources");
    TaskBuilder::new(id, id)
        .shell(shell)
        .resources(&ask)
        .label("brim.network", "none")
        .build_for(offer)
        .expect("task")
}

/// A task of a pod with its own network (`none`) starts a sidecar itself through the agent
/// API on the socket in its sandbox (its container id from `BRIM_CONTAINER_ID`); the pod's
/// other task reaches the sidecar on the pod's loopback, the host does not.
#[test]
fn a_pod_task_launches_a_sidecar() {
    let name = "a_pod_task_launches_a_sidecar";
    if !support::can_run_cluster(name) || !support::have_tools(name, &["busybox", "curl"]) {
        return;
    }
    let mut c = Cluster::new();
    c.start_agent(0, RES);
    let s = c.wait_agents_active(1);
    let agent_id = s["agents"][0]["id"].as_str().expect("agent").to_string();
    let agent = c.agent_addrs[0].clone();
    let root = format!("{}-a0", c.tag);
    let work = c.dir.path().join("agent0");
    let port = free_port_in_range(31050..31100);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut fw = ProbeFramework::start(&c.master_addr, "sidecars").await;
        let offer = fw.offer_on(&agent_id).await;
        // The sidecar serves from A's sandbox (its working directory) on A's port.
        let launch = format!(
            r#"{{"type":"LAUNCH_NESTED_CONTAINER","launch_nested_container":{{"container_id":{{"value":"web-sidecar","parent":{{"value":"'"$BRIM_CONTAINER_ID"'"}}}},"command":{{"value":"echo sidecar-page > index.html; exec busybox httpd -f -p 127.0.0.1:{port} -h ."}}}}}}"#
        );
        // The pod has its own network (`none`): the agent's TCP address is out of reach, its
        // socket in the task's sandbox is not.
        let a = format!(
            "curl -sS --fail-with-body --unix-socket \"$MESOS_SANDBOX/.brim/agent.sock\" \
             -H 'Content-Type: application/json' -d '{launch}' http://agent/api/v1 && echo launched; exec sleep 600"
        );
        let b = format!(
            "until busybox wget -q -O got http://127.0.0.1:{port}/index.html; do sleep 0.1; done; cat got; exec sleep 600"
        );
        let tasks = vec![
            pod_task("a", &a, &format!(";ports:[{port}-{port}]"), &offer),
            pod_task("b", &b, "", &offer),
        ];
        fw.handle
            .launch_group(&offer.id, "sidecar-pod", tasks)
            .await
            .expect("launch the group");
        fw.wait_state("a", TaskState::TaskRunning).await;
        let fw_id = offer.framework_id.clone();
        let a_out = work.join(format!("sandboxes/{fw_id}/a/stdout"));
        let b_out = work.join(format!("sandboxes/{fw_id}/b/stdout"));
        let a_err = work.join(format!("sandboxes/{fw_id}/a/stderr"));
        let reached = std::panic::catch_unwind(|| {
            wait_for("b to reach a's sidecar", Duration::from_secs(20), || {
                let got = std::fs::read_to_string(&b_out).ok()?;
                got.contains("sidecar-page").then_some(())
            })
        });
        assert!(
            reached.is_ok(),
            "a's output: {} / {}",
            std::fs::read_to_string(&a_out).unwrap_or_default(),
            std::fs::read_to_string(&a_err).unwrap_or_default()
        );
        assert!(std::fs::read_to_string(&a_out)
            .unwrap_or_default()
            .contains("launched"));
        assert!(
            TcpStream::connect(("127.0.0.1", port)).is_err(),
            "the sidecar serves on the pod's loopback, not the host's"
        );
        let a_cid = container_of(&agent, "a");
        let needle = format!("/{root}/{a_cid}/nested/web-sidecar");
        assert!(!procs_in_cgroup(&needle).is_empty(), "sidecar in a's cgroup");
        // A's socket serves A's container only: a launch into B through it is refused.
        let b_cid = container_of(&agent, "b");
        let into_b = serde_json::json!({"type": "LAUNCH_NESTED_CONTAINER",
            "launch_nested_container": {"container_id": cid(&b_cid, "x"), "command": {"value": "true"}}})
        .to_string();
        let sock = work.join(format!("sandboxes/{fw_id}/a/.brim/agent.sock"));
        let out = std::process::Command::new("curl")
            .args(["-sS", "-w", "\n%{http_code}", "--unix-socket"])
            .arg(&sock)
            .args(["-H", "Content-Type: application/json", "-d", &into_b, "http://agent/api/v1"])
            .output()
            .expect("curl");
        let answer = text(&out.stdout);
        assert!(answer.ends_with("401"), "{answer}");
        assert!(answer.contains("only manage its own"), "{answer}");

        // Killing the pod (kill a) ends the sidecar.
        fw.handle.kill("a", &agent_id, None).await.expect("kill a");
        fw.wait_state("a", TaskState::TaskKilled).await;
        wait_for("the sidecar to end with its task", Duration::from_secs(10), || {
            procs_in_cgroup(&needle).is_empty().then_some(())
        });
        wait_for("a's socket to be removed", Duration::from_secs(10), || {
            (!sock.exists()).then_some(())
        });
    });
}

/// Over TLS (`brim dev`'s CA): `brim task exec` presents the operator's certificate; the
/// agent API refuses a caller with neither a CA-signed certificate nor the parent task's
/// token, and a task's token opens only its own container.
#[test]
fn the_agent_api_over_tls_takes_a_certificate_or_the_task_token() {
    let name = "the_agent_api_over_tls_takes_a_certificate_or_the_task_token";
    if !support::can_run_cluster(name) || !support::have_tools(name, &["curl", "nsenter"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (port, agent_port) = (support::free_port(), support::free_port());
    let cgroup = format!("brim-nested-tls-{}", std::process::id());
    let mut dev = std::process::Command::new(support::BRIM)
        .args([
            "dev",
            "--port",
            &port.to_string(),
            "--agent-port",
            &agent_port.to_string(),
            "--work-dir",
            &dir.path().display().to_string(),
            "--cgroup-name",
            &cgroup,
        ])
        .env_remove("BRIM_INSECURE")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start brim dev");
    let master = format!("127.0.0.1:{port}");
    let agent = format!("https://127.0.0.1:{agent_port}");
    let tls = dir.path().join("tls");
    let (ca, cert, key) = (
        tls.join("ca.pem"),
        tls.join("operator.pem"),
        tls.join("operator-key.pem"),
    );
    let brim = |args: &[&str]| {
        let mut c = std::process::Command::new(support::BRIM);
        c.args(args)
            .env_remove("BRIM_INSECURE")
            .env("BRIM_MASTER", &master)
            .env("BRIM_TLS_CA", &ca)
            .env("BRIM_TLS_CERT", &cert)
            .env("BRIM_TLS_KEY", &key)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        c
    };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let state_url = format!("https://{master}/state");
        wait_for("brim dev's agent", Duration::from_secs(30), || {
            let (_, body) =
                support::https("GET", &state_url, &ca, Some((&cert, &key)), None, None)?;
            let s: serde_json::Value = serde_json::from_str(&body).ok()?;
            (s["agents"][0]["active"] == true).then_some(())
        });
        let mut run = brim(&["run", "--name", "sleeper", "--", "sleep 600"])
            .spawn()
            .expect("brim run");
        let task = wait_for("the sleeper to run", Duration::from_secs(30), || {
            let (_, body) =
                support::https("GET", &state_url, &ca, Some((&cert, &key)), None, None)?;
            let s: serde_json::Value = serde_json::from_str(&body).ok()?;
            s["tasks"]
                .as_array()?
                .iter()
                .find(|t| t["name"] == "sleeper" && t["state"] == "TASK_RUNNING")
                .and_then(|t| t["id"].as_str().map(str::to_string))
        });
        let out = brim(&["task", "exec", &task, "--", "echo over-tls; exit 5"])
            .output()
            .expect("brim task exec");
        assert_eq!(out.status.code(), Some(5), "{}", show(&out));
        assert_eq!(text(&out.stdout), "over-tls\n", "{}", show(&out));

        let (_, body) = support::https(
            "GET",
            &format!("{agent}/state"),
            &ca,
            Some((&cert, &key)),
            None,
            None,
        )
        .expect("agent /state with the operator's certificate");
        let s: serde_json::Value = serde_json::from_str(&body).expect("json");
        let t = s["tasks"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| t["id"] == task.as_str())
            .expect("the task on the agent")
            .clone();
        let parent = t["container_id"]
            .as_str()
            .expect("container id")
            .to_string();
        let sandbox = PathBuf::from(t["sandbox"].as_str().expect("sandbox"));
        let token = std::fs::read_to_string(sandbox.join(".brim/agent-token")).expect("token");
        let wait = |parent: &str| {
            serde_json::json!({"type": "WAIT_NESTED_CONTAINER",
                "wait_nested_container": {"container_id": cid(parent, "never")}})
            .to_string()
        };
        let api = format!("{agent}/api/v1");
        let call = |identity: Option<(&std::path::Path, &std::path::Path)>,
                    token: Option<&str>,
                    body: &str| {
            support::https("POST", &api, &ca, identity, token, Some(body))
                .expect("an answer from the agent API")
        };
        // Neither certificate nor token: 401.
        let (code, body) = call(None, None, &wait(&parent));
        assert_eq!(code, 401, "{body}");
        assert!(body.contains("client certificate"), "{body}");
        // The task's token for its own container: past authorization (404: no such child).
        let (code, body) = call(None, Some(&token), &wait(&parent));
        assert_eq!(code, 404, "{body}");
        // The same token for another container: 401.
        let (code, body) = call(None, Some(&token), &wait("another-container"));
        assert_eq!(code, 401, "{body}");
        assert!(body.contains("only manage its own"), "{body}");
        // A CA-signed certificate: past authorization.
        let (code, body) = call(Some((&cert, &key)), None, &wait(&parent));
        assert_eq!(code, 404, "{body}");
        // The token launches in its own container.
        let launch = serde_json::json!({"type": "LAUNCH_NESTED_CONTAINER",
            "launch_nested_container": {"container_id": cid(&parent, "by-token"),
                "command": {"value": "echo launched-by-token"}}})
        .to_string();
        let (code, body) = call(None, Some(&token), &launch);
        assert_eq!(code, 200, "{body}");
        let wait_own = serde_json::json!({"type": "WAIT_NESTED_CONTAINER",
            "wait_nested_container": {"container_id": cid(&parent, "by-token")}})
        .to_string();
        let (code, body) = call(None, Some(&token), &wait_own);
        assert_eq!(code, 200, "{body}");
        assert!(body.contains("\"exit_status\":0"), "{body}");
        assert_eq!(
            std::fs::read_to_string(sandbox.join("containers/by-token/stdout")).expect("out"),
            "launched-by-token\n"
        );
        let _ = run.kill();
        let _ = run.wait();
    }));
    // SAFETY: kill(2) on our own child's pid with a valid signal.
    unsafe {
        libc::kill(dev.id() as i32, libc::SIGINT);
    }
    let _ = wait_for("brim dev to exit", Duration::from_secs(20), || {
        dev.try_wait().ok().flatten()
    });
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}
