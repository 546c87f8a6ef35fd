//! The `native` containerizer: the command runs on the agent's own filesystem. It delegates
//! to the launcher (argv) and the supervisor (program resolution); it has nothing on disk
//! beyond the sandbox and cgroups the agent manages for every task.

use std::collections::HashSet;

use super::{Containerizer, ContainerizerError, LaunchRequest, Prepared};
use crate::launcher;
use crate::supervisor;

/// The native containerizer; `namespaces` is the agent's isolation decision.
#[derive(Debug, Clone, Copy)]
pub struct NativeContainerizer {
    pub namespaces: bool,
}

impl Containerizer for NativeContainerizer {
    fn name(&self) -> &'static str {
        "native"
    }

    fn prepare(&self, req: &LaunchRequest<'_>) -> Result<Prepared, ContainerizerError> {
        let (program, argv) = launcher::argv(req.command).map_err(|e| match e {
            launcher::LaunchError::NulByte => ContainerizerError::Nul,
            _ => ContainerizerError::NoCommand,
        })?;
        let path = req
            .env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map_or("", |(_, p)| p.as_str());
        let program = supervisor::resolve_program(&program, path, req.sandbox)?;
        Ok(Prepared {
            program,
            argv,
            env: req.env.clone(),
            run_as_task_user: true,
            namespaces: self.namespaces,
            private_unmounts: Vec::new(),
            program_fd: None,
        })
    }

    fn destroy(&self, _container_id: &str) -> Result<(), ContainerizerError> {
        // Sandbox and cgroups are the agent's; nothing of the native containerizer's own.
        Ok(())
    }

    fn recover(&self, _live: &HashSet<String>) -> Vec<String> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use brim_proto::v1::{CommandInfo, TaskInfo};
    use std::path::Path;

    #[test]
    fn resolves_the_command_like_the_launcher() {
        let info = TaskInfo::default();
        let cmd = CommandInfo {
            shell: true,
            value: "echo hi".into(),
            ..Default::default()
        };
        let req = LaunchRequest {
            container_id: "c",
            info: &info,
            command: &cmd,
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            sandbox: Path::new("/"),
            user: None,
            cgroup_path: None,
            volumes: Vec::new(),
        };
        let p = NativeContainerizer { namespaces: true }
            .prepare(&req)
            .expect("prepare");
        assert_eq!(p.program, "/bin/sh");
        assert_eq!(p.argv, ["sh", "-c", "echo hi"]);
        assert!(p.run_as_task_user && p.namespaces);
    }
}
