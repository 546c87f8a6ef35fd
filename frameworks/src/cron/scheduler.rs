//! The cron framework on the SDK: a tick loop fires due jobs (applying the concurrency
//! policy), offers run queued attempts, status updates record exit codes and queue retries.

use std::sync::Arc;
use std::time::Duration;

use brim_framework::v1::{Offer, TaskInfo, TaskState, TaskStatus};
use brim_framework::{exit_code_of, DriverHandle, OfferPacker, Resources, Scheduler, TaskBuilder};
use jiff::Timestamp;

use super::policy::{on_fire, should_retry, FireAction};
use super::{Cron, CronState, JobRecord, Run, RunState};
use crate::util::{answer_offers, now_ms};

const TICK: Duration = Duration::from_millis(200);

/// Offers to accept with their tasks, offers to decline, and whether runs still wait.
type Placed = (Vec<(String, Vec<TaskInfo>)>, Vec<String>, bool);

pub struct CronScheduler {
    pub cron: Arc<Cron>,
}

/// `backup.12.1` → `backup`.
fn job_of(task_id: &str) -> &str {
    task_id.split('.').next().unwrap_or("")
}

/// The next fire strictly after `after_ms`.
pub(crate) fn next_fire(schedule: &super::expr::Schedule, after_ms: u64) -> Option<u64> {
    let after = Timestamp::from_millisecond(after_ms as i64).ok()?;
    let next = schedule.next_after(after)?;
    u64::try_from(next.as_millisecond()).ok()
}

fn builder(job: &JobRecord, run: &Run) -> TaskBuilder {
    let spec = &job.spec;
    let id = format!("{}.{}.{}", spec.name, run.fire, run.attempt);
    let b = TaskBuilder::new(id, &spec.name);
    let mut b = match spec.cmd.as_slice() {
        [one] => b.shell(one),
        argv => b.command(argv.iter().cloned()),
    };
    if let Ok(r) = Resources::cpus_mem(spec.cpus, spec.mem) {
        b = b.resources(&r);
    }
    for (k, v) in &spec.env {
        b = b.env(k, v);
    }
    if let Some(u) = &spec.user {
        b = b.user(u);
    }
    if let Some(i) = &spec.image {
        b = b.image(i);
    }
    b.env("BRIM_CRON_JOB", &spec.name)
        .env("BRIM_CRON_FIRE", run.fire.to_string())
        .env("BRIM_CRON_ATTEMPT", run.attempt.to_string())
        .label("brim.cron", &spec.name)
}

/// Fires every due job at `now`; returns true when something changed.
pub(crate) fn fire_due(s: &mut CronState, now: u64) -> bool {
    let mut changed = false;
    let CronState {
        doc,
        schedules,
        kills,
        ..
    } = s;
    for (name, job) in doc.jobs.iter_mut() {
        let Some(schedule) = schedules.get(name) else {
            continue;
        };
        let Some(due) = job.next_fire_ms else {
            job.next_fire_ms = next_fire(schedule, now);
            changed = true;
            continue;
        };
        if due > now {
            continue;
        }
        job.fires += 1;
        let fire = job.fires;
        let active = job
            .runs
            .iter()
            .filter(|r| r.state.is_active() && !r.replaced)
            .count();
        let mut run = Run {
            fire,
            attempt: 1,
            scheduled_ms: due,
            state: RunState::Queued,
            task_id: String::new(),
            agent_id: String::new(),
            exit_code: None,
            started_ms: None,
            ended_ms: None,
            message: String::new(),
            replaced: false,
        };
        match on_fire(job.spec.concurrency, active) {
            FireAction::Launch => {}
            FireAction::Skip => {
                run.state = RunState::Skipped;
                run.ended_ms = Some(now);
                run.message = format!("skipped: {active} run(s) still active (concurrency forbid)");
            }
            FireAction::ReplaceThenLaunch => {
                for r in job
                    .runs
                    .iter_mut()
                    .filter(|r| r.state.is_active() && !r.replaced)
                {
                    r.replaced = true;
                    r.message = format!("replaced by fire {fire}");
                    if r.state == RunState::Queued {
                        r.state = RunState::Killed;
                        r.ended_ms = Some(now);
                    } else {
                        kills.push((r.task_id.clone(), r.agent_id.clone()));
                    }
                }
            }
        }
        tracing::info!(job = %name, fire, state = ?run.state, "cron job fired");
        job.push_run(run);
        // Missed fires collapse: the next one is after now, not after the missed time.
        job.next_fire_ms = next_fire(schedule, now.max(due));
        changed = true;
    }
    changed
}

impl CronScheduler {
    fn place(&self, offers: &[Offer]) -> Placed {
        let now = now_ms();
        let mut s = self.cron.lock();
        let mut accepts = Vec::new();
        let mut declines = Vec::new();
        let mut launched = false;
        for offer in offers {
            let Ok(mut packer) = OfferPacker::new(offer) else {
                declines.push(offer.id.clone());
                continue;
            };
            let mut tasks = Vec::new();
            for job in s.doc.jobs.values_mut() {
                let queued: Vec<usize> = job
                    .runs
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| r.state == RunState::Queued && r.task_id.is_empty())
                    .map(|(i, _)| i)
                    .collect();
                for i in queued {
                    let b = builder(job, &job.runs[i]);
                    let Ok(task) = packer.place(&b) else { break };
                    let r = &mut job.runs[i];
                    r.task_id = task.task_id.clone();
                    r.agent_id = offer.agent_id.clone();
                    r.started_ms = Some(now);
                    tasks.push(task);
                    launched = true;
                }
            }
            if tasks.is_empty() {
                declines.push(offer.id.clone());
            } else {
                accepts.push((offer.id.clone(), tasks));
            }
        }
        let still = s.doc.jobs.values().any(|j| {
            j.runs
                .iter()
                .any(|r| r.state == RunState::Queued && r.task_id.is_empty())
        });
        if launched {
            let _ = s.save();
        }
        (accepts, declines, still)
    }
}

impl Scheduler for CronScheduler {
    async fn registered(&mut self, _driver: &DriverHandle, framework_id: &str) {
        {
            let mut s = self.cron.lock();
            s.doc.framework_id = Some(framework_id.to_string());
            s.suppressed = false;
            s.wanted_offers = false;
            s.reconcile_at_ms = Some(now_ms());
            let _ = s.save();
        }
        self.cron.wake.notify_one();
    }

    async fn offers(&mut self, driver: &DriverHandle, offers: Vec<Offer>) {
        let (accepts, declines, still) = self.place(&offers);
        let failed = answer_offers(driver, accepts, declines, still).await;
        if !failed.is_empty() {
            let mut s = self.cron.lock();
            for (ids, e) in failed {
                for job in s.doc.jobs.values_mut() {
                    for r in job.runs.iter_mut().filter(|r| ids.contains(&r.task_id)) {
                        r.task_id.clear();
                        r.agent_id.clear();
                        r.message = format!("launch failed, will retry: {e}");
                    }
                }
            }
            let _ = s.save();
        }
        self.cron.wake.notify_one();
    }

    async fn update(&mut self, driver: &DriverHandle, status: TaskStatus) {
        let known = {
            let mut s = self.cron.lock();
            let now = now_ms();
            let changed = match s.doc.jobs.get_mut(job_of(&status.task_id)) {
                Some(job) => on_update(job, &status, now),
                None => false,
            };
            if changed {
                let _ = s.save();
            }
            changed
        };
        if !known && !status.state().is_terminal() {
            tracing::info!(task = %status.task_id, "killing a task no cron job owns");
            if let Err(e) = driver.kill(&status.task_id, &status.agent_id, None).await {
                tracing::warn!(error = %e, "cannot kill an orphan cron task");
            }
        }
        self.cron.wake.notify_one();
    }
}

/// Records an update in the job's runs; queues a retry when the policy says so. Returns
/// false when no active run has this task.
fn on_update(job: &mut JobRecord, status: &TaskStatus, now: u64) -> bool {
    let state = status.state();
    let Some(run) = job
        .runs
        .iter_mut()
        .find(|r| r.task_id == status.task_id && r.state.is_active())
    else {
        return job.runs.iter().any(|r| r.task_id == status.task_id);
    };
    if state == TaskState::TaskRunning {
        run.state = RunState::Running;
        return true;
    }
    let Some(code) = exit_code_of(status) else {
        return true;
    };
    run.exit_code = Some(code);
    run.ended_ms = Some(now);
    let succeeded = state == TaskState::TaskFinished && code == 0;
    run.state = if succeeded {
        RunState::Succeeded
    } else if run.replaced || state == TaskState::TaskKilled {
        RunState::Killed
    } else {
        RunState::Failed
    };
    if !succeeded && !status.message.is_empty() && run.message.is_empty() {
        run.message = format!("{}: {}", state.as_str_name(), status.message);
    }
    let (fire, attempt, scheduled, replaced) =
        (run.fire, run.attempt, run.scheduled_ms, run.replaced);
    if should_retry(succeeded, replaced, attempt, job.spec.retries) {
        job.push_run(Run {
            fire,
            attempt: attempt + 1,
            scheduled_ms: scheduled,
            state: RunState::Queued,
            task_id: String::new(),
            agent_id: String::new(),
            exit_code: None,
            started_ms: None,
            ended_ms: None,
            message: format!(
                "retry {attempt} of {} after exit code {code}",
                job.spec.retries
            ),
            replaced: false,
        });
    }
    true
}

/// Fires due jobs, sends kills, and keeps offers flowing while runs are queued.
pub async fn run_loop(cron: Arc<Cron>, driver: DriverHandle) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = cron.wake.notified() => {}
        }
        let now = now_ms();
        let subscribed = driver.framework_id().is_some();
        let (kills, revive, suppress, reconcile) = {
            let mut s = cron.lock();
            if fire_due(&mut s, now) {
                let _ = s.save();
            }
            if !subscribed {
                continue;
            }
            let kills = std::mem::take(&mut s.kills);
            let reconcile: Vec<(String, String)> = match s.reconcile_at_ms {
                Some(at) if at <= now => {
                    s.reconcile_at_ms = None;
                    s.doc
                        .jobs
                        .values()
                        .flat_map(|j| j.runs.iter())
                        .filter(|r| r.state.is_active() && !r.task_id.is_empty())
                        .map(|r| (r.task_id.clone(), r.agent_id.clone()))
                        .collect()
                }
                _ => Vec::new(),
            };
            let wants = s.doc.jobs.values().any(|j| {
                j.runs
                    .iter()
                    .any(|r| r.state == RunState::Queued && r.task_id.is_empty())
            });
            let revive = wants && (s.suppressed || !s.wanted_offers);
            let suppress = !wants && !s.suppressed;
            s.wanted_offers = wants;
            if revive {
                s.suppressed = false;
            }
            if suppress {
                s.suppressed = true;
            }
            (kills, revive, suppress, reconcile)
        };
        if !reconcile.is_empty() {
            if let Err(e) = driver.reconcile(reconcile).await {
                tracing::warn!(error = %e, "reconciling cron tasks failed");
            }
        }
        for (task_id, agent_id) in kills {
            if let Err(e) = driver.kill(&task_id, &agent_id, None).await {
                tracing::warn!(task = %task_id, error = %e, "kill failed");
            }
        }
        if revive {
            if let Err(e) = driver.revive().await {
                tracing::warn!(error = %e, "revive failed");
                cron.lock().wanted_offers = false;
            }
        }
        if suppress {
            if let Err(e) = driver.suppress().await {
                tracing::warn!(error = %e, "suppress failed");
                cron.lock().suppressed = false;
            }
        }
    }
}
