//! Agent start-up: same agent or new agent, re-attaching to what survived the previous
//! incarnation, and cleaning up what nobody owns any more.
//!
//! - Same work dir (agent id present) and same resources → same agent id: every
//!   checkpointed task is restored, running supervisors are re-attached to, tasks that
//!   ended meanwhile are settled from their `exit` files, unacknowledged updates are resent.
//! - Wiped work dir, or a different resource set → a new agent: every leftover supervisor,
//!   task process and container cgroup under the agent's root cgroup is killed and removed.
//! - In both cases container cgroups and supervisors no restored task owns are killed.
//!
//! Architecture Invariant: a restart of the same agent kills nothing that a checkpoint owns.

use std::path::Path;
use std::sync::Arc;

use brim_proto::Resources;

use crate::agent::{Agent, SUPERVISORS_CGROUP};
use crate::cgroups::{self, CgroupBackend, Limits};
use crate::checkpoint::{self, Layout};
use crate::{master_link, supervisor};

/// Whether this start continues the previous agent; returns the agent id to reuse.
/// Records the resources for the next start.
pub(crate) fn identity(
    work_dir: &Path,
    total: &Resources,
    configured: Option<&Resources>,
) -> Option<String> {
    let layout = Layout::new(work_dir);
    let previous = std::fs::read_to_string(layout.resources()).ok();
    let now = identity_resources(total, configured);
    let id = master_link::load_agent_id(work_dir);
    let same = previous.as_deref().is_none_or(|p| p.trim() == now);
    let keep = match (&id, same) {
        (Some(_), true) => id,
        (Some(old), false) => {
            tracing::warn!(
                agent_id = %old,
                previous = previous.as_deref().unwrap_or("").trim(),
                now = %now,
                "resources changed since the last run: registering as a new agent and killing leftover tasks"
            );
            let _ = std::fs::remove_file(work_dir.join("agent_id"));
            None
        }
        (None, _) => None,
    };
    if let Err(e) = checkpoint::write_atomic(&layout.resources(), now.as_bytes()) {
        tracing::warn!(error = %e, "cannot checkpoint the agent's resources");
    }
    keep
}

/// The resources that define the agent's identity: everything but an auto-detected `disk`
/// (free space changes from one start to the next).
fn identity_resources(total: &Resources, configured: Option<&Resources>) -> String {
    let disk_configured = configured.is_some_and(|c| c.scalar("disk") > 0.0);
    total
        .to_string()
        .split(';')
        .filter(|r| disk_configured || !r.starts_with("disk:"))
        .collect::<Vec<_>>()
        .join(";")
}

/// Container cgroups under the agent's root (first hierarchy), including the revocable
/// ones under [`cgroups::REVOCABLE_PARENT`] (which is not a container itself).
fn container_ids(cg: &dyn CgroupBackend) -> Vec<String> {
    let Some(root) = cg.root_paths().into_iter().next() else {
        return Vec::new();
    };
    let dirs = |dir: &std::path::Path| -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect()
    };
    let mut ids: Vec<String> = dirs(&root)
        .into_iter()
        .filter(|id| id != cgroups::REVOCABLE_PARENT)
        .collect();
    ids.extend(
        dirs(&root.join(cgroups::REVOCABLE_PARENT))
            .into_iter()
            .filter(|id| cgroups::is_revocable_id(id)),
    );
    ids
}

/// Restores or discards the previous incarnation's tasks; `same_agent` from [`identity`].
pub(crate) async fn recover(agent: &Arc<Agent>, same_agent: bool) {
    let layout = agent.layout.clone();
    let (records, errors) = tokio::task::spawn_blocking({
        let layout = layout.clone();
        move || layout.load_tasks()
    })
    .await
    .unwrap_or_default();
    let mut problems: Vec<String> = errors.iter().map(ToString::to_string).collect();
    let mut live_supervisors = Vec::new();
    if same_agent {
        let (ended, live, errs) = agent.restore(records);
        problems.extend(errs);
        live_supervisors = live;
        if !ended.is_empty() || !live_supervisors.is_empty() {
            tracing::info!(
                running = live_supervisors.len(),
                ended = ended.len(),
                "recovered tasks from checkpoints"
            );
        }
        for r in ended {
            agent.settle_recovered(r).await;
        }
        agent.release_idle_pods().await;
        if !agent.executors.awaiting_resubscription().is_empty() {
            // Running custom executors reconnect on their own (Mesos executor drivers retry
            // while MESOS_CHECKPOINT is set); those that do not are killed.
            let a = Arc::clone(agent);
            tokio::spawn(async move {
                tokio::time::sleep(a.config.executor_reregistration_timeout).await;
                a.expire_executors();
            });
        }
    } else {
        let mut killed = 0;
        for r in &records {
            if let Some(s) = r.supervisor {
                if let Some(_fd) = supervisor::attach(s.pid, s.start_time) {
                    supervisor::kill_orphan(s.pid);
                    killed += 1;
                }
            }
        }
        if killed > 0 || !records.is_empty() {
            tracing::warn!(
                tasks = records.len(),
                killed,
                "new agent identity: discarding the previous agent's tasks"
            );
        }
        let l = layout.clone();
        let _ = tokio::task::spawn_blocking(move || l.wipe_tasks()).await;
        // The previous agent's task groups are gone with its tasks.
        agent.release_idle_pods().await;
    }
    for p in &problems {
        tracing::error!(problem = %p, "recovery problem");
    }
    agent
        .recovery_errors
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .extend(problems);
    let keep = agent.live_containers();
    if crate::sys::is_root() {
        let (net, owned) = (Arc::clone(&agent.network), keep.clone());
        let _ = tokio::task::spawn_blocking(move || net.cleanup(&owned)).await;
    }
    {
        let (oci, live) = (Arc::clone(&agent.oci), keep.clone());
        if let Ok(removed) = tokio::task::spawn_blocking(move || oci.recover(&live)).await {
            if !removed.is_empty() {
                tracing::info!(containers = ?removed, "removed leftover OCI containers");
            }
        }
    }
    let Some(cg) = agent.cgroups.clone() else {
        return;
    };
    let created = tokio::task::spawn_blocking(move || {
        cleanup_cgroups(cg.as_ref(), &keep, &live_supervisors);
        cg.create(
            SUPERVISORS_CGROUP,
            &Limits {
                cpus: 1.0,
                ..Default::default()
            },
        )
    })
    .await;
    match created {
        Ok(Ok(())) => agent
            .supervisors_cgroup
            .store(true, std::sync::atomic::Ordering::Relaxed),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot create the supervisors' cgroup; leftovers of a wiped work dir will not be found")
        }
        Err(e) => tracing::warn!(error = %e, "supervisors' cgroup setup panicked"),
    }
}

/// Kills and removes container cgroups not in `keep`, and supervisors not in `live`.
fn cleanup_cgroups(cg: &dyn CgroupBackend, keep: &std::collections::HashSet<String>, live: &[i32]) {
    for pid in cgroups::pids(cg, SUPERVISORS_CGROUP) {
        if !live.contains(&pid) {
            tracing::warn!(pid, "killing a supervisor no task owns");
            supervisor::kill_orphan(pid);
        }
    }
    for id in container_ids(cg) {
        if id == SUPERVISORS_CGROUP || keep.contains(&id) {
            continue;
        }
        tracing::warn!(container = %id, "removing a leftover container cgroup");
        if let Err(e) = cgroups::destroy(cg, &id) {
            tracing::warn!(container = %id, error = %e, "leftover cgroup not removed");
        }
    }
}
