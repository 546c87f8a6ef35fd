//! brim's framework (scheduler) SDK.
//!
//! A framework implements [`Scheduler`] and hands it to a [`Driver`], which subscribes to the
//! master, runs the event loop, acknowledges status updates, watches heartbeats and
//! re-subscribes with the same framework id after a disconnection (failover). Calls (accept,
//! decline, kill, ...) go through a cloneable [`DriverHandle`], usable inside callbacks and from
//! any other task.
//!
//! ```no_run
//! use brim_framework::{Driver, DriverConfig, DriverHandle, Scheduler, TaskBuilder};
//! use brim_framework::v1::{Offer, TaskStatus};
//! use brim_proto::Resources;
//!
//! struct Echo { launched: bool }
//!
//! impl Scheduler for Echo {
//!     async fn offers(&mut self, driver: &DriverHandle, offers: Vec<Offer>) {
//!         for offer in offers {
//!             if self.launched {
//!                 let _ = driver.decline(vec![offer.id.clone()], Some(60.0)).await;
//!                 continue;
//!             }
//!             let ask = Resources::cpus_mem(0.1, 32.0).expect("valid resources");
//!             let Ok(task) = TaskBuilder::new("echo-1", "echo").shell("echo hi").resources(&ask)
//!                 .build_for(&offer) else { continue };
//!             self.launched = driver.launch(&offer.id, vec![task]).await.is_ok();
//!         }
//!     }
//!     async fn update(&mut self, driver: &DriverHandle, status: TaskStatus) {
//!         if status.state().is_terminal() {
//!             driver.stop();
//!         }
//!     }
//! }
//!
//! # async fn go() -> Result<(), brim_framework::DriverError> {
//! let driver = Driver::new(DriverConfig::new("127.0.0.1:5050", "echo"))?;
//! driver.run(&mut Echo { launched: false }).await
//! # }
//! ```
#![forbid(unsafe_code)]

mod driver;
mod error;
pub mod output;
mod scheduler;
pub mod state;
mod task;

pub use brim_proto::v1;
pub use brim_proto::{Resources, CAPABILITY_PARTITION_AWARE, CAPABILITY_REVOCABLE_RESOURCES};
pub use brim_security::{dev_tls_dir, ClientOptions, ClientSecurity, ClientTls};
pub use driver::{
    create_volume_operation, destroy_volume_operation, launch_group_operation, launch_operation,
    reserve_operation, unreserve_operation, volume, Driver, DriverConfig, DriverHandle,
};
pub use error::DriverError;
pub use scheduler::Scheduler;
pub use task::{
    exit_code_of, host_volume, parse_volume, pick_ports, OfferPacker, TaskBuilder, TaskError,
};
