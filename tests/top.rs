//! `brim top` in a real terminal: tmux runs it against a real master and agent with a busy
//! task; the test reads the screen (capture-pane), presses keys (send-keys) and checks what a
//! person would see: the task with its cpu use, the agent with its slack, sorting, quitting.

mod support;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use support::{state, wait_for, Cluster, BRIM};

/// A private tmux server (its own socket), killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run tmux")
    }

    fn screen(&self) -> String {
        let out = self.run(&["capture-pane", "-p", "-t", "top"]);
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// Waits until the screen satisfies `ok`; the panic shows the last screen.
    fn wait_screen(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let mut last = String::new();
        let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_for(what, Duration::from_secs(15), || {
                last = self.screen();
                ok(&last).then(|| last.clone())
            })
        }));
        found.unwrap_or_else(|_| panic!("timed out waiting for {what}; screen:\n{last}"))
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "top"];
        args.extend_from_slice(keys);
        let out = self.run(&args);
        assert!(out.status.success(), "send-keys: {out:?}");
    }

    fn alive(&self) -> bool {
        self.run(&["has-session", "-t", "top"]).status.success()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

#[test]
fn top_shows_tasks_and_agents_sorts_and_quits() {
    if !support::can_run_cluster("top") || !support::have_tools("top", &["tmux"]) {
        return;
    }
    let mut c = Cluster::new();
    c.start_agent(0, "cpus:2;mem:1024");
    c.wait_agents_active(1);
    let mut spin = c.brim_spawn(&[
        "run",
        "--name",
        "spinner",
        "--cpus",
        "0.5",
        "--",
        "while :; do :; done",
    ]);
    let mut idle = c.brim_spawn(&[
        "run",
        "--name",
        "idler",
        "--cpus",
        "0.25",
        "--mem",
        "32",
        "--",
        "sleep 600",
    ]);
    let master = c.master_addr.clone();
    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_for("both tasks to run", Duration::from_secs(30), || {
            let s = state(&master);
            let running = s["tasks"]
                .as_array()?
                .iter()
                .filter(|t| t["state"] == "TASK_RUNNING")
                .count();
            (running == 2).then_some(())
        })
    }));
    if ran.is_err() {
        for child in [&mut spin, &mut idle] {
            let _ = child.kill();
            if let Ok(out) = child.try_wait().map(|_| ()).and_then(|()| {
                let mut err = String::new();
                use std::io::Read;
                child
                    .stderr
                    .take()
                    .map_or(Ok(0), |mut e| e.read_to_string(&mut err))
                    .map(|_| err)
            }) {
                eprintln!("--- brim run stderr ---\n{out}");
            }
        }
        eprintln!("--- /state ---\n{:#}", state(&master));
        panic!("both tasks did not run within 30 s (logs below)");
    }

    let tmux = Tmux {
        socket: format!("brim-top-test-{}", std::process::id()),
    };
    let cmd = format!("env BRIM_MASTER={master} BRIM_INSECURE=1 {BRIM} top --interval 0.5");
    let out = tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "top",
        "-x",
        "160",
        "-y",
        "40",
        &cmd,
    ]);
    assert!(out.status.success(), "tmux new-session: {out:?}");

    // The busy task shows a measured cpu rate and sorts first by cpu (the default).
    let screen = tmux.wait_screen("the spinner with a cpu reading", |s| {
        s.lines()
            .any(|l| l.contains("spinner") && l.contains("RUNNING") && l.contains('%'))
            && s.contains("idler")
    });
    assert!(screen.contains("sort: cpu"), "{screen}");
    let pos = |s: &str, name: &str| {
        s.find(name)
            .unwrap_or_else(|| panic!("{name} missing:\n{s}"))
    };
    assert!(
        pos(&screen, "spinner") < pos(&screen, "idler"),
        "cpu sort:\n{screen}"
    );
    // The agent row: allocation 0.75 of 2 cpus; the header totals.
    assert!(screen.contains("0.75/2"), "agent allocation:\n{screen}");
    assert!(screen.contains("agents 1/1"), "{screen}");
    assert!(screen.contains("tasks 2 running"), "{screen}");

    // `n` sorts by name: idler before spinner; `n` again reverses.
    tmux.keys(&["n"]);
    let screen = tmux.wait_screen("name sort", |s| s.contains("sort: name"));
    assert!(
        pos(&screen, "idler") < pos(&screen, "spinner"),
        "name sort:\n{screen}"
    );
    tmux.keys(&["n"]);
    let screen = tmux.wait_screen("reversed name sort", |s| s.contains("sort: name ▲"));
    assert!(
        pos(&screen, "spinner") < pos(&screen, "idler"),
        "reversed:\n{screen}"
    );

    // Tab moves sorting to the agents table.
    tmux.keys(&["Tab"]);
    tmux.wait_screen("agents focused", |s| s.contains("agents · sort:"));

    // q quits and gives the terminal back.
    tmux.keys(&["q"]);
    wait_for("brim top to exit on q", Duration::from_secs(5), || {
        (!tmux.alive()).then_some(())
    });

    // Ctrl-C quits too. A fresh tmux server: the first one exits on its own once its last
    // session is gone, and a new session started while it shuts down fails with "server
    // exited unexpectedly".
    let tmux = Tmux {
        socket: format!("brim-top-test-ctrlc-{}", std::process::id()),
    };
    let out = tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "top",
        "-x",
        "160",
        "-y",
        "40",
        &cmd,
    ]);
    assert!(out.status.success(), "tmux new-session: {out:?}");
    tmux.wait_screen("brim top again", |s| s.contains("spinner"));
    tmux.keys(&["C-c"]);
    wait_for("brim top to exit on Ctrl-C", Duration::from_secs(5), || {
        (!tmux.alive()).then_some(())
    });

    for child in [&mut spin, &mut idle] {
        let _ = child.kill();
        let _ = child.wait();
    }
    c.cleanup_cgroups();
}

#[test]
fn top_reports_an_unreachable_master_on_screen() {
    if !support::have_tools("top_unreachable", &["tmux"]) {
        return;
    }
    let tmux = Tmux {
        socket: format!("brim-top-test-u-{}", std::process::id()),
    };
    let port = support::free_port();
    let cmd = format!("{BRIM} top --insecure --master 127.0.0.1:{port}");
    let out = tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "top",
        "-x",
        "120",
        "-y",
        "20",
        &cmd,
    ]);
    assert!(out.status.success(), "tmux new-session: {out:?}");
    tmux.wait_screen("the error line", |s| s.contains("master unreachable"));
    tmux.keys(&["q"]);
    wait_for("brim top to exit", Duration::from_secs(5), || {
        (!tmux.alive()).then_some(())
    });
}

#[test]
fn run_shows_a_progress_bar_on_a_terminal_only() {
    if !support::can_run_cluster("run_progress") || !support::have_tools("run_progress", &["tmux"])
    {
        return;
    }
    let mut c = Cluster::new();
    c.start_agent(0, "cpus:2;mem:1024");
    c.wait_agents_active(1);
    let master = c.master_addr.clone();

    // On a terminal: the bar shows while instances run, then clears; output stays intact.
    let tmux = Tmux {
        socket: format!("brim-run-test-{}", std::process::id()),
    };
    let cmd = format!(
        "env BRIM_MASTER={master} BRIM_INSECURE=1 {BRIM} run --instances 3 -- 'sleep 2; echo finished $BRIM_INSTANCE'; \
         echo exit=$?; sleep 60"
    );
    let out = tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "top",
        "-x",
        "120",
        "-y",
        "20",
        &cmd,
    ]);
    assert!(out.status.success(), "tmux new-session: {out:?}");
    tmux.wait_screen("the progress bar", |s| {
        s.contains("/3 done") && s.contains("running")
    });
    let ended = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        tmux.wait_screen("the job to end", |s| s.contains("exit="))
    }));
    let screen = ended.unwrap_or_else(|_| {
        eprintln!("--- /state ---\n{:#}", state(&master));
        panic!("the job did not end (logs below)");
    });
    assert!(screen.contains("exit=0"), "{screen}");
    for i in 0..3 {
        assert!(screen.contains(&format!("[{i}] finished {i}")), "{screen}");
    }
    assert!(
        !screen.contains("/3 done"),
        "the bar is cleared at the end:\n{screen}"
    );

    // Not a terminal: no bar in the output.
    let out = c.brim(&["run", "--instances", "2", "--", "echo piped $BRIM_INSTANCE"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        !stderr.contains("done"),
        "no bar when stderr is a pipe: {stderr}"
    );
    c.cleanup_cgroups();
}
