//! A framework for tests: forwards every event to the test, which drives it through the
//! handle (offers on a given agent, launch a sleeper, wait for a task state).

use std::time::Duration;

use brim_framework::v1::{Offer, TaskState, TaskStatus};
use brim_framework::{Driver, DriverConfig, DriverHandle, Resources, Scheduler, TaskBuilder};
use tokio::sync::mpsc;

/// Forwards every event to the test, which drives the framework through the handle.
pub struct Probe {
    events: mpsc::UnboundedSender<ProbeEvent>,
}

#[derive(Debug)]
pub enum ProbeEvent {
    Offers(Vec<Offer>),
    Update(TaskStatus),
}

impl Scheduler for Probe {
    async fn offers(&mut self, _d: &DriverHandle, offers: Vec<Offer>) {
        let _ = self.events.send(ProbeEvent::Offers(offers));
    }
    async fn update(&mut self, _d: &DriverHandle, status: TaskStatus) {
        let _ = self.events.send(ProbeEvent::Update(status));
    }
}

pub struct ProbeFramework {
    pub handle: DriverHandle,
    pub events: mpsc::UnboundedReceiver<ProbeEvent>,
}

impl ProbeFramework {
    pub async fn start(master: &str, name: &str) -> ProbeFramework {
        Self::start_with(master, name, |_| {}).await
    }

    /// Like [`ProbeFramework::start`], letting the test adjust the configuration (user,
    /// capabilities, ...). The failover timeout is one hour unless changed.
    pub async fn start_with(
        master: &str,
        name: &str,
        adjust: impl FnOnce(&mut DriverConfig),
    ) -> ProbeFramework {
        let mut config = DriverConfig::new(master, name);
        config.framework.failover_timeout = 3600.0;
        adjust(&mut config);
        let driver = Driver::new(config).expect("driver");
        let handle = driver.handle();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut probe = Probe { events: tx };
            let _ = driver.run(&mut probe).await;
        });
        ProbeFramework { handle, events: rx }
    }

    /// Next offer on `agent_id` (declining offers from other agents).
    pub async fn offer_on(&mut self, agent_id: &str) -> Offer {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let ev = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .unwrap_or_else(|_| panic!("no offer for agent {agent_id} within 30 s"));
            if let Some(ProbeEvent::Offers(offers)) = ev {
                let mut found = None;
                for o in offers {
                    if o.agent_id == agent_id && found.is_none() {
                        found = Some(o);
                    } else {
                        let _ = self.handle.decline(vec![o.id.clone()], Some(1.0)).await;
                    }
                }
                if let Some(o) = found {
                    return o;
                }
            }
        }
    }

    /// Launches a long `sleep` as `task_id` on `agent_id` and waits until it runs.
    pub async fn run_sleeper_on(&mut self, agent_id: &str, task_id: &str) {
        let ask = Resources::parse("cpus:0.2;mem:32").expect("resources");
        let offer = self.offer_on(agent_id).await;
        let task = TaskBuilder::new(task_id, task_id)
            .shell("sleep 600")
            .resources(&ask)
            .build_for(&offer)
            .expect("task");
        self.handle
            .launch(&offer.id, vec![task])
            .await
            .expect("launch");
        self.wait_state(task_id, TaskState::TaskRunning).await;
    }

    /// Waits for `task` to reach `state`, returning that status.
    pub async fn wait_state(&mut self, task: &str, state: TaskState) -> TaskStatus {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let ev = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .unwrap_or_else(|_| panic!("task {task} did not reach {state:?} within 30 s"));
            match ev {
                Some(ProbeEvent::Update(s)) if s.task_id == task => {
                    if s.state() == state {
                        return s;
                    }
                    assert!(
                        !s.state().is_terminal(),
                        "task {task} ended in {:?} ({}) while waiting for {state:?}",
                        s.state(),
                        s.message
                    );
                }
                Some(ProbeEvent::Offers(offers)) => {
                    let ids = offers.into_iter().map(|o| o.id).collect();
                    let _ = self.handle.decline(ids, Some(1.0)).await;
                }
                Some(_) => {}
                None => panic!("driver stopped while waiting for {task}"),
            }
        }
    }
}
