//! The services framework on the SDK: places instances on offers (constraints, resources),
//! records status updates (failures start the backoff), and a reconcile loop that applies the
//! planner's kills and revives or suppresses offers.

use std::sync::Arc;
use std::time::Duration;

use brim_framework::v1::{Offer, TaskState, TaskStatus};
use brim_framework::{exit_code_of, DriverHandle, OfferPacker, Scheduler, TaskBuilder};

use super::constraints::{check_all, AgentFacts};
use super::plan::{plan, PlanTask};
use super::{ServiceRecord, Services, ServicesState, TaskRecord, Waiting};
use crate::util::{answer_offers, now_ms};

/// Refuse filter on offers nothing wanted, and on offers that did not fit while waiting.
/// Resend a kill that has not ended its task after this long.
const KILL_RESEND_MS: u64 = 5000;
/// Reconcile loop period (it also runs when woken).
const TICK: Duration = Duration::from_millis(250);

/// Offers to accept with their tasks, offers to decline, and whether instances still wait.
type Placed = (
    Vec<(String, Vec<brim_framework::v1::TaskInfo>)>,
    Vec<String>,
    bool,
);

pub struct ServicesScheduler {
    pub services: Arc<Services>,
}

/// `web.v3.17` → `web`.
fn service_of(task_id: &str) -> &str {
    task_id.split('.').next().unwrap_or("")
}

fn facts(offer: &Offer) -> AgentFacts {
    AgentFacts {
        agent_id: offer.agent_id.clone(),
        hostname: offer.hostname.clone(),
        attributes: offer
            .attributes
            .iter()
            .map(|a| (a.name.clone(), a.value.clone()))
            .collect(),
    }
}

/// The planner's view of a service's tasks.
fn plan_tasks(svc: &ServiceRecord, now: u64) -> Vec<PlanTask> {
    svc.tasks
        .iter()
        .map(|(id, t)| PlanTask {
            id: id.clone(),
            version: t.version,
            healthy: svc.healthy(t, now),
            killing: t.killing,
            seq: t.seq,
        })
        .collect()
}

/// How many instances each service may launch now (plan, minus backoff).
fn launch_wants(s: &ServicesState, now: u64) -> Vec<(String, u32)> {
    s.doc
        .services
        .iter()
        .filter(|(_, svc)| !svc.removing && now >= svc.backoff_until_ms)
        .filter_map(|(id, svc)| {
            let p = plan(
                svc.target(),
                svc.version,
                &svc.spec.upgrade,
                &plan_tasks(svc, now),
            );
            (p.launch > 0).then(|| (id.clone(), p.launch))
        })
        .collect()
}

impl ServicesScheduler {
    /// Places what services want on `offers`; returns (offer, tasks) to accept and offers to
    /// decline.
    fn place(&self, offers: &[Offer]) -> Placed {
        let now = now_ms();
        let mut s = self.services.lock();
        for o in offers {
            s.agents.insert(o.agent_id.clone(), facts(o));
        }
        let known: Vec<AgentFacts> = s.agents.values().cloned().collect();
        let mut wants = launch_wants(&s, now);
        let mut accepts = Vec::new();
        let mut declines = Vec::new();
        let mut launched_any = false;
        for offer in offers {
            let agent = facts(offer);
            let Ok(mut packer) = OfferPacker::new(offer) else {
                declines.push(offer.id.clone());
                continue;
            };
            let mut tasks = Vec::new();
            for (service_id, want) in wants.iter_mut() {
                while *want > 0 {
                    let ServicesState {
                        doc,
                        constraints,
                        waiting,
                        ..
                    } = &mut *s;
                    let Some(svc) = doc.services.get_mut(service_id.as_str()) else {
                        break;
                    };
                    let placed: Vec<AgentFacts> = svc
                        .tasks
                        .values()
                        .filter(|t| !t.killing)
                        .map(|t| t.agent.clone())
                        .collect();
                    let cs = constraints
                        .get(service_id.as_str())
                        .map_or(&[][..], Vec::as_slice);
                    let fits = check_all(cs, &agent, &placed, &known).and_then(|()| {
                        let seq = doc.next_seq + 1;
                        let id = format!("{}.v{}.{seq}", svc.spec.id, svc.version);
                        let mut b = TaskBuilder::new(&id, &svc.spec.id)
                            .shell(&svc.spec.cmd)
                            .cpus(svc.spec.cpus)
                            .mem(svc.spec.mem)
                            .ports(u64::from(svc.spec.ports))
                            .kill_grace(Duration::from_secs_f64(svc.spec.kill_grace_seconds))
                            .label("brim.service", &svc.spec.id)
                            .label("brim.version", svc.version.to_string())
                            .env("BRIM_SERVICE", &svc.spec.id);
                        for (k, v) in &svc.spec.env {
                            b = b.env(k, v);
                        }
                        if let Some(u) = &svc.spec.user {
                            b = b.user(u);
                        }
                        if let Some(i) = &svc.spec.image {
                            b = b.image(i);
                        }
                        // Validated with the spec; a bad one cannot get here.
                        for v in svc
                            .spec
                            .volumes
                            .iter()
                            .filter_map(|v| brim_framework::parse_volume(v).ok())
                        {
                            b = b.volume(v);
                        }
                        if let Some(hc) = &svc.spec.health_check {
                            b = b.health_check(hc.to_proto());
                        }
                        packer.place(&b).map_err(|e| e.to_string())
                    });
                    match fits {
                        Ok(task) => {
                            doc.next_seq += 1;
                            let ports = task
                                .command
                                .as_ref()
                                .map(|c| {
                                    c.environment
                                        .iter()
                                        .filter(|e| e.name.starts_with("PORT"))
                                        .map(|e| e.value.clone())
                                        .collect()
                                })
                                .unwrap_or_default();
                            svc.tasks.insert(
                                task.task_id.clone(),
                                TaskRecord {
                                    seq: doc.next_seq,
                                    version: svc.version,
                                    agent: agent.clone(),
                                    state: "TASK_STAGING".into(),
                                    killing: false,
                                    kill_sent_ms: 0,
                                    launched_ms: now,
                                    running_since_ms: None,
                                    ports,
                                    check_healthy: None,
                                },
                            );
                            tasks.push(task);
                            *want -= 1;
                            launched_any = true;
                        }
                        Err(why) => {
                            let w = waiting
                                .entry(service_id.clone())
                                .or_insert_with(|| Waiting {
                                    since_ms: now,
                                    ..Waiting::default()
                                });
                            w.reasons.insert(offer.agent_id.clone(), why);
                            break;
                        }
                    }
                }
            }
            if tasks.is_empty() {
                declines.push(offer.id.clone());
            } else {
                accepts.push((offer.id.clone(), tasks));
            }
        }
        // Fully placed services have nothing to explain any more.
        for (id, want) in &wants {
            if *want == 0 {
                s.waiting.remove(id);
            }
        }
        let still_wanting = wants.iter().any(|(_, w)| *w > 0);
        if launched_any {
            let _ = s.save();
        }
        (accepts, declines, still_wanting)
    }
}

impl Scheduler for ServicesScheduler {
    async fn registered(&mut self, _driver: &DriverHandle, framework_id: &str) {
        {
            let mut s = self.services.lock();
            s.doc.framework_id = Some(framework_id.to_string());
            s.suppressed = false;
            s.wanted_offers = false;
            // Reconcile every known task at once: the master holds back its answer for
            // tasks on agents that have not re-registered since it took over.
            s.reconcile_at_ms = Some(now_ms());
            let _ = s.save();
        }
        self.services.wake.notify_one();
    }

    async fn offers(&mut self, driver: &DriverHandle, offers: Vec<Offer>) {
        let (accepts, declines, still_wanting) = self.place(&offers);
        let failed = answer_offers(driver, accepts, declines, still_wanting).await;
        if !failed.is_empty() {
            let now = now_ms();
            let mut s = self.services.lock();
            for (ids, e) in failed {
                for id in ids {
                    if let Some(svc) = s.doc.services.get_mut(service_of(&id)) {
                        svc.tasks.remove(&id);
                        svc.event(now, format!("launching {id} failed: {e}"));
                    }
                }
            }
            let _ = s.save();
        }
        self.services.wake.notify_one();
    }

    async fn update(&mut self, driver: &DriverHandle, status: TaskStatus) {
        let state = status.state();
        let orphan = {
            let now = now_ms();
            let mut s = self.services.lock();
            let known = s
                .doc
                .services
                .get_mut(service_of(&status.task_id))
                .and_then(|svc| svc.tasks.contains_key(&status.task_id).then_some(svc));
            match known {
                None => !state.is_terminal(),
                Some(svc) => {
                    on_update(svc, &status, now);
                    let _ = s.save();
                    false
                }
            }
        };
        if orphan {
            // A task of a removed service (or from a lost state): stop it.
            tracing::info!(task = %status.task_id, "killing a task no service owns");
            if let Err(e) = driver.kill(&status.task_id, &status.agent_id, None).await {
                tracing::warn!(task = %status.task_id, error = %e, "cannot kill an orphan task");
            }
        }
        self.services.wake.notify_one();
    }
}

/// Applies one status update to a service's task table.
fn on_update(svc: &mut ServiceRecord, status: &TaskStatus, now: u64) {
    let state = status.state();
    let Some(t) = svc.tasks.get_mut(&status.task_id) else {
        return;
    };
    t.state = state.as_str_name().to_string();
    if state == TaskState::TaskRunning && t.running_since_ms.is_none() {
        t.running_since_ms = Some(now);
    }
    if let Some(h) = status.healthy {
        t.check_healthy = Some(h);
    }
    if !state.is_terminal() {
        return;
    }
    let Some(t) = svc.tasks.remove(&status.task_id) else {
        return;
    };
    let code = exit_code_of(status).map_or(String::new(), |c| format!(" (exit code {c})"));
    let message = if status.message.is_empty() {
        String::new()
    } else {
        format!(": {}", status.message)
    };
    if t.killing {
        svc.event(
            now,
            format!(
                "task {} stopped ({}{code})",
                status.task_id,
                state.as_str_name()
            ),
        );
        return;
    }
    let ran_ms = t.running_since_ms.map_or(0, |s| now.saturating_sub(s));
    let reset_ms = (svc.spec.backoff.reset_after_seconds * 1000.0) as u64;
    svc.failures = if ran_ms >= reset_ms && t.running_since_ms.is_some() {
        1
    } else {
        svc.failures.saturating_add(1)
    };
    let delay = svc.spec.backoff.delay(svc.failures);
    svc.backoff_until_ms = now + delay.as_millis() as u64;
    svc.event(
        now,
        format!(
            "task {} on {} ended {}{code}{message}; failure {} in a row, relaunching in {:.1}s",
            status.task_id,
            t.agent.hostname,
            state.as_str_name(),
            svc.failures,
            delay.as_secs_f64()
        ),
    );
}

/// The reconcile loop: applies kills from the planner, removes finished removals, and keeps
/// offers flowing exactly while some service has instances to place.
pub async fn run_loop(services: Arc<Services>, driver: DriverHandle) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = services.wake.notified() => {}
        }
        if driver.framework_id().is_none() {
            continue;
        }
        let now = now_ms();
        let (kills, revive, suppress, reconcile) = {
            let mut s = services.lock();
            let reconcile: Vec<(String, String)> = match s.reconcile_at_ms {
                Some(at) if at <= now => {
                    s.reconcile_at_ms = None;
                    s.doc
                        .services
                        .values()
                        .flat_map(|svc| {
                            svc.tasks
                                .iter()
                                .map(|(id, t)| (id.clone(), t.agent.agent_id.clone()))
                        })
                        .collect()
                }
                _ => Vec::new(),
            };
            let mut kills = Vec::new();
            let mut changed = false;
            let mut done = Vec::new();
            for (id, svc) in s.doc.services.iter_mut() {
                let p = plan(
                    svc.target(),
                    svc.version,
                    &svc.spec.upgrade,
                    &plan_tasks(svc, now),
                );
                let grace = Duration::from_secs_f64(svc.spec.kill_grace_seconds);
                for task_id in p.kill {
                    if let Some(t) = svc.tasks.get_mut(&task_id) {
                        t.killing = true;
                        changed = true;
                    }
                }
                for (task_id, t) in svc.tasks.iter_mut() {
                    if t.killing && now.saturating_sub(t.kill_sent_ms) >= KILL_RESEND_MS {
                        t.kill_sent_ms = now;
                        kills.push((task_id.clone(), t.agent.agent_id.clone(), grace));
                    }
                }
                if svc.removing && svc.tasks.is_empty() {
                    done.push(id.clone());
                }
            }
            for id in done {
                s.doc.services.remove(&id);
                s.constraints.remove(&id);
                s.waiting.remove(&id);
                tracing::info!(service = %id, "service removed");
                changed = true;
            }
            if changed || !kills.is_empty() {
                let _ = s.save();
            }
            let wants = !launch_wants(&s, now).is_empty();
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
                tracing::warn!(error = %e, "reconciling service tasks failed");
            }
        }
        for (task_id, agent_id, grace) in kills {
            if let Err(e) = driver.kill(&task_id, &agent_id, Some(grace)).await {
                tracing::warn!(task = %task_id, error = %e, "kill failed; will retry");
            }
        }
        if revive {
            if let Err(e) = driver.revive().await {
                tracing::warn!(error = %e, "revive failed");
                services.lock().wanted_offers = false;
            }
        }
        if suppress {
            if let Err(e) = driver.suppress().await {
                tracing::warn!(error = %e, "suppress failed");
                services.lock().suppressed = false;
            }
        }
    }
}
