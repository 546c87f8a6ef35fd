//! A throwaway ZooKeeper server for tests (Debian's `zookeeper`, run with java directly: no
//! service, no system config), on a free loopback port with its data and config in a temp
//! dir, a short tick so sessions expire in seconds; killed on drop. Shared by master/tests
//! and the root tests/.
#![allow(dead_code, unreachable_pub)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct ZooKeeper {
    child: Child,
    /// `127.0.0.1:port`.
    pub address: String,
    dir: tempfile::TempDir,
}

const JAR: &str = "/usr/share/java/zookeeper.jar";

/// Whether ZooKeeper and java are installed; otherwise says why (and fails when
/// `BRIM_TEST_REQUIRE_ALL=1`, so CI never skips silently).
pub fn available(test: &str) -> bool {
    let java = std::path::Path::new("/usr/bin/java").exists();
    if java && std::path::Path::new(JAR).exists() {
        return true;
    }
    let why = format!("{test}: skipped: ZooKeeper not installed (apt-get install zookeeper)");
    if std::env::var("BRIM_TEST_REQUIRE_ALL").as_deref() == Ok("1") {
        panic!("{why}, and BRIM_TEST_REQUIRE_ALL=1 forbids skipping");
    }
    eprintln!("{why}");
    false
}

impl ZooKeeper {
    /// Starts a standalone server (tick 500 ms: sessions of 1–10 s) and waits until it serves.
    pub fn start() -> ZooKeeper {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let cfg = dir.path().join("zoo.cfg");
        std::fs::write(
            &cfg,
            format!(
                "tickTime=500\ndataDir={}\nclientPort={port}\nclientPortAddress=127.0.0.1\n\
                 admin.enableServer=false\n4lw.commands.whitelist=srvr\n",
                dir.path().join("data").display()
            ),
        )
        .expect("zoo.cfg");
        let log = std::fs::File::create(dir.path().join("zookeeper.log")).expect("log");
        let child = Command::new("/usr/bin/java")
            .args([
                "-Xmx256m",
                "-cp",
                &format!("{JAR}:/usr/share/java/*"),
                "org.apache.zookeeper.server.ZooKeeperServerMain",
            ])
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn zookeeper");
        let zk = ZooKeeper {
            child,
            address: format!("127.0.0.1:{port}"),
            dir,
        };
        let start = Instant::now();
        while !zk.serving() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "ZooKeeper did not start: {}",
                zk.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        zk
    }

    /// `srvr` answers with the server's mode once it serves clients.
    fn serving(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(&self.address) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        if s.write_all(b"srvr").is_err() {
            return false;
        }
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out.contains("Mode:")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("zookeeper.log")).unwrap_or_default()
    }
}

impl Drop for ZooKeeper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
