//! The fetcher's limits come from the agent's configuration (`brim agent
//! --fetcher-max-download-mb`, `--fetcher-cache-mb`): a URI above the download limit fails
//! the launch with a clear message, one within it is fetched. Runs without root (no
//! isolation).

mod common;

use brim_agent::Isolation;
use brim_proto::v1::{TaskState, Uri};
use common::{config, shell_task, start_agent, unique, FakeMaster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_limit_comes_from_the_agent_config() {
    let files = tempfile::tempdir().expect("tempdir");
    let big = files.path().join("big.bin");
    let small = files.path().join("small.txt");
    std::fs::write(&big, vec![7u8; 4096]).expect("big");
    std::fs::write(&small, b"fits\n").expect("small");

    let work = tempfile::tempdir().expect("tempdir");
    let mut master = FakeMaster::start().await;
    let mut cfg = config(
        master.addr,
        work.path(),
        Isolation::None,
        &unique("brim-fetch"),
    );
    cfg.fetcher_max_bytes = 1000;
    cfg.fetcher_cache_bytes = 2000;
    let (_http, stop, join) = start_agent(cfg).await;
    let (mut s, _) = master.accept().await;
    s.registered("agent-fetch", 1.0).await;

    let with_uri = |id: &str, path: &std::path::Path| {
        let mut t = shell_task(id, "cat small.txt", "cpus:0.1;mem:32");
        if let Some(c) = t.command.as_mut() {
            c.uris.push(Uri {
                value: path.display().to_string(),
                cache: true,
                ..Default::default()
            });
        }
        t
    };
    s.run_task("fw", with_uri("too-big", &big)).await;
    s.expect("too-big", TaskState::TaskStarting).await;
    let failed = s.expect("too-big", TaskState::TaskFailed).await;
    assert!(
        failed
            .message
            .contains("larger than the fetcher limit of 1000 bytes"),
        "{failed:?}"
    );

    s.run_task("fw", with_uri("fits", &small)).await;
    s.expect("fits", TaskState::TaskStarting).await;
    s.expect("fits", TaskState::TaskRunning).await;
    let done = s.expect("fits", TaskState::TaskFinished).await;
    assert_eq!(done.exit_code, Some(0), "{done:?}");

    let _ = stop.send(());
    let _ = join.await;
}
