//! Launches N echo tasks, prints their status updates, exits when all are terminal.
//!
//! ```sh
//! brim dev &                                     # a local master + agent
//! cargo run -p brim-framework --example hello -- 5
//! BRIM_MASTER=10.0.0.1:5050 cargo run -p brim-framework --example hello
//! ```

use std::collections::BTreeMap;

use brim_framework::v1::{Filters, Offer, TaskState, TaskStatus};
use brim_framework::{
    launch_operation, Driver, DriverConfig, DriverHandle, OfferPacker, Scheduler, TaskBuilder,
};

struct Hello {
    /// Tasks still to launch, by index.
    todo: Vec<u32>,
    /// Last state of every launched task.
    states: BTreeMap<String, TaskState>,
}

impl Hello {
    fn task(i: u32) -> TaskBuilder {
        TaskBuilder::new(format!("hello-{i}"), "hello")
            .shell(format!("echo hello from task {i} on $(hostname)"))
            .cpus(0.1)
            .mem(32.0)
    }
}

impl Scheduler for Hello {
    async fn registered(&mut self, _: &DriverHandle, framework_id: &str) {
        println!("registered as {framework_id}");
    }

    async fn offers(&mut self, driver: &DriverHandle, offers: Vec<Offer>) {
        for offer in offers {
            // Pack as many of the remaining tasks as fit on this offer.
            let Ok(mut packer) = OfferPacker::new(&offer) else {
                continue;
            };
            let mut tasks = Vec::new();
            while let Some(&i) = self.todo.first() {
                let Ok(task) = packer.place(&Hello::task(i)) else {
                    break;
                };
                tasks.push(task);
                self.todo.remove(0);
            }
            if tasks.is_empty() {
                // Nothing to do here: do not offer this agent again for a minute.
                let _ = driver.decline(vec![offer.id], Some(60.0)).await;
                continue;
            }
            println!("launching {} task(s) on {}", tasks.len(), offer.hostname);
            let ids: Vec<String> = tasks.iter().map(|t| t.task_id.clone()).collect();
            let ops = vec![launch_operation(tasks)];
            match driver.accept(vec![offer.id], ops, Filters::default()).await {
                Ok(()) => {
                    for id in ids {
                        self.states.insert(id, TaskState::TaskStaging);
                    }
                }
                Err(e) => eprintln!("launch failed: {e}"),
            }
        }
        if self.todo.is_empty() {
            let _ = driver.suppress().await;
        }
    }

    async fn update(&mut self, driver: &DriverHandle, status: TaskStatus) {
        let exit = status
            .exit_code
            .map(|c| format!(" (exit {c})"))
            .unwrap_or_default();
        println!(
            "{} {}{exit} {}",
            status.task_id,
            status.state().name(),
            status.message
        );
        self.states.insert(status.task_id.clone(), status.state());
        let all_done = self.todo.is_empty() && self.states.values().all(|s| s.is_terminal());
        if all_done {
            println!("all tasks done");
            let _ = driver.teardown().await;
        }
    }

    async fn error(&mut self, _: &DriverHandle, message: String) {
        eprintln!("the master aborted us: {message}");
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: u32 = match std::env::args().nth(1) {
        Some(s) => s
            .parse()
            .map_err(|_| format!("`{s}` is not a number of tasks"))?,
        None => 3,
    };
    let master = std::env::var("BRIM_MASTER").unwrap_or_else(|_| "127.0.0.1:5050".to_string());
    let mut config = DriverConfig::new(master, "hello");
    // TLS and token from BRIM_TLS_CA/BRIM_TLS_CERT/BRIM_TLS_KEY/BRIM_TOKEN, else the CA
    // `brim dev` made; BRIM_INSECURE=1 for a plaintext master.
    config.security =
        brim_framework::ClientOptions::from_env().resolve(&brim_framework::dev_tls_dir())?;
    config.reconnect_timeout = Some(std::time::Duration::from_secs(30));
    let driver = Driver::new(config)?;
    let mut hello = Hello {
        todo: (0..n).collect(),
        states: BTreeMap::new(),
    };
    driver.run(&mut hello).await?;
    Ok(())
}
