//! Turns a `CommandInfo` into a running process: argv, environment, sandbox stdio, its own
//! session, and its cgroups joined between fork and exec.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};

use brim_proto::v1::CommandInfo;
use brim_proto::Resources;

use crate::cgroups::CgroupError;
use crate::sys;

/// Why a task could not be launched.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("task has no command: set command.value")]
    NoCommand,
    #[error("command contains a NUL byte: remove it")]
    NulByte,
    #[error("cannot prepare sandbox {path}: {source}")]
    Sandbox {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot execute `{program}`: {source} (check that it exists on the agent and is executable)")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot set up the task's cgroup: {0}")]
    Cgroup(#[from] CgroupError),
    #[error("cannot set up the task's network: {0}")]
    Network(#[from] crate::network::NetworkError),
    #[error("cannot launch the task group: {0}")]
    Pod(String),
    #[error("internal error while launching ({0}); see the agent log")]
    Internal(String),
    #[error(transparent)]
    Supervisor(#[from] crate::supervisor::SupervisorError),
    #[error(transparent)]
    Fetch(#[from] crate::fetcher::FetchError),
    #[error(transparent)]
    Container(#[from] crate::containerizer::ContainerizerError),
}

/// Program and argv (argv[0] included) for a command.
/// `shell` → `/bin/sh -c value`; else `value` with `arguments` (or `[value]` when empty).
pub fn argv(cmd: &CommandInfo) -> Result<(String, Vec<String>), LaunchError> {
    if cmd.value.is_empty() {
        return Err(LaunchError::NoCommand);
    }
    let (program, argv) = if cmd.shell {
        (
            "/bin/sh".to_string(),
            vec!["sh".to_string(), "-c".to_string(), cmd.value.clone()],
        )
    } else if cmd.arguments.is_empty() {
        (cmd.value.clone(), vec![cmd.value.clone()])
    } else {
        (cmd.value.clone(), cmd.arguments.clone())
    };
    if program.contains('\0') || argv.iter().any(|a| a.contains('\0')) {
        return Err(LaunchError::NulByte);
    }
    Ok((program, argv))
}

/// Identity of the task, for its environment.
#[derive(Debug, Clone)]
pub struct TaskEnv<'a> {
    pub task_id: &'a str,
    pub framework_id: &'a str,
    pub agent_id: &'a str,
    pub sandbox: &'a Path,
    pub resources: &'a Resources,
    pub host: &'a str,
}

/// The task's environment: a clean base (PATH, HOME=sandbox), the BRIM_/MESOS_ variables,
/// `PORT0..N`/`PORTS` from its ports, then the command's own variables (which win).
pub fn environment(cmd: &CommandInfo, t: &TaskEnv<'_>) -> Vec<(String, String)> {
    let sandbox = t.sandbox.display().to_string();
    let path = std::env::var("PATH")
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    let mut env: Vec<(String, String)> = vec![
        ("PATH".into(), path),
        ("HOME".into(), sandbox.clone()),
        ("BRIM_TASK_ID".into(), t.task_id.into()),
        ("BRIM_FRAMEWORK_ID".into(), t.framework_id.into()),
        ("BRIM_AGENT_ID".into(), t.agent_id.into()),
        ("BRIM_SANDBOX".into(), sandbox.clone()),
        ("MESOS_TASK_ID".into(), t.task_id.into()),
        ("MESOS_FRAMEWORK_ID".into(), t.framework_id.into()),
        ("MESOS_AGENT_ID".into(), t.agent_id.into()),
        ("MESOS_SANDBOX".into(), sandbox.clone()),
        ("MESOS_DIRECTORY".into(), sandbox),
        ("HOST".into(), t.host.into()),
    ];
    let mut ports = Vec::new();
    if let Some(rs) = t.resources.ranges("ports") {
        for &(b, e) in rs.intervals() {
            // Bounded by the agent's own port ranges, which fit in memory by construction.
            ports.extend(b..=e);
        }
    }
    for (i, p) in ports.iter().enumerate() {
        env.push((format!("PORT{i}"), p.to_string()));
    }
    if let Some(first) = ports.first() {
        env.push(("PORT".into(), first.to_string()));
        env.push((
            "PORTS".into(),
            ports
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
        ));
    }
    for v in &cmd.environment {
        env.retain(|(k, _)| *k != v.name);
        env.push((v.name.clone(), v.value.clone()));
    }
    env
}

/// Exit status as a task exit code: the code, or 128 + signal.
pub fn exit_code(status: ExitStatus) -> i32 {
    match (status.code(), status.signal()) {
        (Some(c), _) => c,
        (None, Some(s)) => 128 + s,
        (None, None) => 255,
    }
}

/// Creates the sandbox directory and creates (truncating: a reused task id starts afresh)
/// its `stdout` and `stderr` files.
pub fn prepare_sandbox(dir: &Path) -> Result<(File, File), LaunchError> {
    let err = |path: &Path, source| LaunchError::Sandbox {
        path: path.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(|e| err(dir, e))?;
    let open = |name: &str| {
        let p = dir.join(name);
        OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&p)
            .map_err(|e| err(&p, e))
    };
    Ok((open("stdout")?, open("stderr")?))
}

/// What to start.
#[derive(Debug)]
pub struct LaunchSpec {
    pub program: String,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    pub stdout: File,
    pub stderr: File,
    /// Open `cgroup.procs` files the child joins before exec (empty without cgroups).
    pub cgroup_procs: Vec<File>,
}

/// Starts the process: own session/process group (pgid = pid), cgroups joined before exec,
/// stdin from /dev/null, stdout/stderr to the sandbox files, clean environment.
pub fn spawn(spec: LaunchSpec) -> Result<tokio::process::Child, LaunchError> {
    let mut cmd = std::process::Command::new(&spec.program);
    if let Some((argv0, rest)) = spec.argv.split_first() {
        std::os::unix::process::CommandExt::arg0(&mut cmd, argv0);
        cmd.args(rest);
    }
    cmd.env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&spec.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::from(spec.stdout))
        .stderr(Stdio::from(spec.stderr));
    sys::prepare_child(&mut cmd, &spec.cgroup_procs);
    let child = tokio::process::Command::from(cmd)
        .spawn()
        .map_err(|source| LaunchError::Spawn {
            program: spec.program.clone(),
            source,
        });
    // The cgroup.procs files were only needed until the child exec'd.
    drop(spec.cgroup_procs);
    child
}

#[cfg(test)]
mod tests {
    use brim_proto::v1::EnvironmentVariable;

    use super::*;

    fn cmd(shell: bool, value: &str, args: &[&str]) -> CommandInfo {
        CommandInfo {
            shell,
            value: value.into(),
            arguments: args.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn check(c: CommandInfo, program: &str, expected: &[&str]) {
        let (p, a) = argv(&c).expect("argv");
        assert_eq!(p, program);
        assert_eq!(a, expected);
    }

    #[test]
    fn builds_argv() {
        check(
            cmd(true, "echo hi; exit 3", &[]),
            "/bin/sh",
            &["sh", "-c", "echo hi; exit 3"],
        );
        check(cmd(false, "/bin/echo", &[]), "/bin/echo", &["/bin/echo"]);
        check(
            cmd(false, "/bin/echo", &["echo", "a", "b"]),
            "/bin/echo",
            &["echo", "a", "b"],
        );
        assert!(matches!(
            argv(&cmd(true, "", &[])),
            Err(LaunchError::NoCommand)
        ));
        assert!(matches!(
            argv(&cmd(false, "a\0b", &[])),
            Err(LaunchError::NulByte)
        ));
    }

    #[test]
    fn builds_environment() {
        let mut c = cmd(true, "true", &[]);
        c.environment = vec![
            EnvironmentVariable {
                name: "FOO".into(),
                value: "bar".into(),
            },
            EnvironmentVariable {
                name: "HOME".into(),
                value: "/custom".into(),
            },
        ];
        let res = Resources::parse("cpus:1;ports:[31000-31001,31005-31005]").expect("parse");
        let env = environment(
            &c,
            &TaskEnv {
                task_id: "t1",
                framework_id: "fw",
                agent_id: "a1",
                sandbox: Path::new("/w/sandboxes/fw/t1"),
                resources: &res,
                host: "h",
            },
        );
        let get = |k: &str| {
            let all: Vec<_> = env.iter().filter(|(n, _)| n == k).collect();
            assert!(all.len() <= 1, "{k} set twice");
            all.first().map(|(_, v)| v.as_str())
        };
        assert_eq!(get("BRIM_TASK_ID"), Some("t1"));
        assert_eq!(get("MESOS_FRAMEWORK_ID"), Some("fw"));
        assert_eq!(get("BRIM_SANDBOX"), Some("/w/sandboxes/fw/t1"));
        assert_eq!(get("PORT0"), Some("31000"));
        assert_eq!(get("PORT1"), Some("31001"));
        assert_eq!(get("PORT2"), Some("31005"));
        assert_eq!(get("PORT3"), None);
        assert_eq!(get("PORT"), Some("31000"));
        assert_eq!(get("PORTS"), Some("31000,31001,31005"));
        assert_eq!(get("FOO"), Some("bar"));
        assert_eq!(get("HOME"), Some("/custom"));
        assert!(get("PATH").is_some());
    }

    #[test]
    fn exit_codes() {
        assert_eq!(exit_code(ExitStatus::from_raw(0)), 0);
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(exit_code(ExitStatus::from_raw(9)), 137);
        assert_eq!(exit_code(ExitStatus::from_raw(15)), 143);
    }

    #[tokio::test]
    async fn spawns_without_cgroups() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (stdout, stderr) = prepare_sandbox(dir.path()).expect("sandbox");
        let (program, argv) =
            argv(&cmd(true, "echo out; echo err >&2; pwd; exit 4", &[])).expect("argv");
        let mut child = spawn(LaunchSpec {
            program,
            argv,
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            cwd: dir.path().to_path_buf(),
            stdout,
            stderr,
            cgroup_procs: Vec::new(),
        })
        .expect("spawn");
        let st = child.wait().await.expect("wait");
        assert_eq!(exit_code(st), 4);
        let out = std::fs::read_to_string(dir.path().join("stdout")).expect("stdout");
        let cwd = dir.path().canonicalize().expect("canon");
        assert_eq!(out, format!("out\n{}\n", cwd.display()));
        assert_eq!(
            std::fs::read_to_string(dir.path().join("stderr")).expect("stderr"),
            "err\n"
        );
    }

    #[tokio::test]
    async fn missing_binary_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (stdout, stderr) = prepare_sandbox(dir.path()).expect("sandbox");
        let e = spawn(LaunchSpec {
            program: "/nonexistent/brim-nope".into(),
            argv: vec!["brim-nope".into()],
            env: Vec::new(),
            cwd: dir.path().to_path_buf(),
            stdout,
            stderr,
            cgroup_procs: Vec::new(),
        })
        .expect_err("must fail");
        let msg = e.to_string();
        assert!(
            msg.contains("cannot execute `/nonexistent/brim-nope`"),
            "{msg}"
        );
        assert!(msg.contains("No such file"), "{msg}");
    }
}
