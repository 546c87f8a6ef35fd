//! The callbacks a framework implements.

use std::future::Future;

use brim_proto::v1::{Offer, TaskStatus};

use crate::DriverHandle;

/// A framework's scheduler: the driver calls these, one at a time and in event order, from
/// [`crate::Driver::run`]. Every callback gets a [`DriverHandle`] to issue calls; awaiting a
/// call inside a callback delays the next event, which keeps reasoning sequential.
///
/// Implement the methods with `async fn`; all have no-op defaults except where noted.
pub trait Scheduler: Send {
    /// Subscribed (or re-subscribed after a reconnection) with this framework id.
    fn registered(
        &mut self,
        driver: &DriverHandle,
        framework_id: &str,
    ) -> impl Future<Output = ()> + Send {
        let _ = (driver, framework_id);
        async {}
    }

    /// New resource offers. Each must eventually be accepted or declined (or it stays
    /// allocated to this framework until the master rescinds it).
    fn offers(
        &mut self,
        driver: &DriverHandle,
        offers: Vec<Offer>,
    ) -> impl Future<Output = ()> + Send {
        let _ = (driver, offers);
        async {}
    }

    /// The master withdrew an offer; it can no longer be accepted.
    fn rescinded(
        &mut self,
        driver: &DriverHandle,
        offer_id: String,
    ) -> impl Future<Output = ()> + Send {
        let _ = (driver, offer_id);
        async {}
    }

    /// A task changed state. The driver acknowledges it (when it carries a uuid) after this
    /// returns, so an update is redelivered if the framework dies while handling it.
    fn update(
        &mut self,
        driver: &DriverHandle,
        status: TaskStatus,
    ) -> impl Future<Output = ()> + Send {
        let _ = (driver, status);
        async {}
    }

    /// An agent was removed; its tasks get their own (LOST/UNREACHABLE) updates.
    fn failure(
        &mut self,
        driver: &DriverHandle,
        agent_id: String,
    ) -> impl Future<Output = ()> + Send {
        let _ = (driver, agent_id);
        async {}
    }

    /// The master aborted this framework; [`crate::Driver::run`] returns
    /// [`crate::DriverError::Aborted`] right after this.
    fn error(&mut self, driver: &DriverHandle, message: String) -> impl Future<Output = ()> + Send {
        let _ = (driver, message);
        async {}
    }

    /// A message from one of this framework's custom executors (Mesos MESSAGE; best effort).
    fn message(
        &mut self,
        driver: &DriverHandle,
        agent_id: String,
        executor_id: String,
        data: Vec<u8>,
    ) -> impl Future<Output = ()> + Send {
        let _ = (driver, agent_id, executor_id, data);
        async {}
    }

    /// The connection to the master was lost; the driver is reconnecting.
    fn disconnected(&mut self, driver: &DriverHandle) -> impl Future<Output = ()> + Send {
        let _ = driver;
        async {}
    }
}
