//! Operator life-cycle hooks (`--hook-pre-launch`, `--hook-post-stop`): shell commands the
//! agent runs around every task, with a timeout. A failing or hanging pre-launch hook fails
//! the launch (`TASK_FAILED`, `REASON_CONTAINER_LAUNCH_FAILED`, with the hook's exit status
//! and the end of its stderr); a post-stop hook's failure is logged (the task already ended).
//!
//! Hooks run as the agent's user with `/bin/sh -c`, a clean environment (`PATH` plus the
//! `BRIM_HOOK`, `BRIM_TASK_ID`, `BRIM_FRAMEWORK_ID`, `BRIM_CONTAINER_ID`, `BRIM_SANDBOX`,
//! `BRIM_CONTAINERIZER`, and for OCI tasks `BRIM_ROOTFS`/`BRIM_BUNDLE` variables), in the
//! task's sandbox, stdin from /dev/null; the whole process group is killed on timeout.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// Which hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    PreLaunch,
    PostStop,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::PreLaunch => "pre-launch",
            Stage::PostStop => "post-stop",
        }
    }
}

/// The hooks an operator configured.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HookConfig {
    pub pre_launch: Option<String>,
    pub post_stop: Option<String>,
    pub timeout: Duration,
}

impl HookConfig {
    pub fn command(&self, stage: Stage) -> Option<&str> {
        match stage {
            Stage::PreLaunch => self.pre_launch.as_deref(),
            Stage::PostStop => self.post_stop.as_deref(),
        }
        .filter(|c| !c.trim().is_empty())
    }
}

/// What a hook is told about the task.
#[derive(Clone, Debug)]
pub struct HookContext<'a> {
    pub task_id: &'a str,
    pub framework_id: &'a str,
    pub container_id: &'a str,
    pub sandbox: &'a Path,
    pub containerizer: &'a str,
    /// The OCI bundle directory (its `rootfs/` is the container's root).
    pub bundle: Option<PathBuf>,
}

/// The hook's environment (pure).
pub fn environment(stage: Stage, c: &HookContext<'_>) -> Vec<(String, String)> {
    let mut env = vec![
        (
            "PATH".to_string(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
        ),
        ("BRIM_HOOK".into(), stage.as_str().into()),
        ("BRIM_TASK_ID".into(), c.task_id.into()),
        ("BRIM_FRAMEWORK_ID".into(), c.framework_id.into()),
        ("BRIM_CONTAINER_ID".into(), c.container_id.into()),
        ("BRIM_SANDBOX".into(), c.sandbox.display().to_string()),
        ("BRIM_CONTAINERIZER".into(), c.containerizer.into()),
    ];
    if let Some(b) = &c.bundle {
        env.push(("BRIM_BUNDLE".into(), b.display().to_string()));
        env.push(("BRIM_ROOTFS".into(), b.join("rootfs").display().to_string()));
    }
    env
}

/// Why a hook failed.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum HookError {
    #[error("{stage} hook `{command}` failed ({status}){stderr}: fix the hook or the agent's --hook-{stage} flag")]
    Failed {
        stage: &'static str,
        command: String,
        status: String,
        stderr: String,
    },
    #[error("{stage} hook `{command}` did not finish within {secs:.1} s and was killed: make it faster or raise --hook-timeout")]
    TimedOut {
        stage: &'static str,
        command: String,
        secs: f64,
    },
}

/// The last `max` bytes of `bytes` as text, trimmed, prefixed for an error message.
fn tail(bytes: &[u8], max: usize) -> String {
    let start = bytes.len().saturating_sub(max);
    let t = String::from_utf8_lossy(&bytes[start..]).trim().to_string();
    if t.is_empty() {
        String::new()
    } else {
        format!(": {t}")
    }
}

/// Runs the configured hook of `stage` (nothing when none is configured).
pub async fn run(
    config: &HookConfig,
    stage: Stage,
    ctx: &HookContext<'_>,
) -> Result<(), HookError> {
    let Some(command) = config.command(stage) else {
        return Ok(());
    };
    let cwd = if ctx.sandbox.is_dir() {
        ctx.sandbox.to_path_buf()
    } else {
        PathBuf::from("/")
    };
    let mut cmd = tokio::process::Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(command)
        .env_clear()
        .envs(environment(stage, ctx))
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let failed = |status: String, stderr: String| HookError::Failed {
        stage: stage.as_str(),
        command: command.to_string(),
        status,
        stderr,
    };
    let child = cmd
        .spawn()
        .map_err(|e| failed(format!("cannot start /bin/sh: {e}"), String::new()))?;
    let pid = child.id();
    match tokio::time::timeout(config.timeout, child.wait_with_output()).await {
        Ok(Ok(out)) if out.status.success() => Ok(()),
        Ok(Ok(out)) => Err(failed(
            match out.status.code() {
                Some(c) => format!("exit status {c}"),
                None => format!("{}", out.status),
            },
            tail(&out.stderr, 512),
        )),
        Ok(Err(e)) => Err(failed(format!("cannot wait for it: {e}"), String::new())),
        Err(_) => {
            // Everything the hook started, not just its shell.
            if let Some(pid) = pid {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            Err(HookError::TimedOut {
                stage: stage.as_str(),
                command: command.to_string(),
                secs: config.timeout.as_secs_f64(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(sandbox: &Path) -> HookContext<'_> {
        HookContext {
            task_id: "t1",
            framework_id: "fw",
            container_id: "c1",
            sandbox,
            containerizer: "oci",
            bundle: Some(PathBuf::from("/w/oci/containers/c1")),
        }
    }

    #[test]
    fn environment_names_the_task() {
        let env = environment(Stage::PostStop, &ctx(Path::new("/s")));
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("BRIM_HOOK"), Some("post-stop"));
        assert_eq!(get("BRIM_TASK_ID"), Some("t1"));
        assert_eq!(get("BRIM_ROOTFS"), Some("/w/oci/containers/c1/rootfs"));
    }

    #[test]
    fn blank_hooks_are_none() {
        let c = HookConfig {
            pre_launch: Some("  ".into()),
            ..Default::default()
        };
        assert_eq!(c.command(Stage::PreLaunch), None);
    }

    #[tokio::test]
    async fn runs_fails_and_times_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = |cmd: &str, ms| HookConfig {
            pre_launch: Some(cmd.into()),
            post_stop: None,
            timeout: Duration::from_millis(ms),
        };
        let c = ctx(dir.path());
        run(
            &cfg("echo \"$BRIM_TASK_ID\" > mark", 10_000),
            Stage::PreLaunch,
            &c,
        )
        .await
        .expect("runs");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("mark")).expect("mark"),
            "t1\n"
        );
        let e = run(&cfg("echo nope >&2; exit 3", 10_000), Stage::PreLaunch, &c)
            .await
            .expect_err("fails");
        let msg = e.to_string();
        assert!(
            msg.contains("exit status 3") && msg.contains("nope"),
            "{msg}"
        );
        let e = run(&cfg("sleep 30", 200), Stage::PreLaunch, &c)
            .await
            .expect_err("times out");
        assert!(matches!(e, HookError::TimedOut { .. }), "{e}");
        // No hook for a stage: nothing runs.
        run(&cfg("exit 1", 10_000), Stage::PostStop, &c)
            .await
            .expect("no post-stop hook");
    }
}
