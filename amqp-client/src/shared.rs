//! State shared between the application's handles and the driver task: the sans-IO core
//! under a mutex, and the two wake-up signals around it.
//!
//! The lock is held only for in-memory work (never across an await or a socket call), so a
//! `std::sync::Mutex` is the right tool: cheaper than an async mutex and never held long.

use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::proto::Core;

/// What handles and the driver share.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The protocol state.
    core: Mutex<Core>,
    /// Wakes the driver: output was queued, or a consumer drained and reading may resume.
    driver: Notify,
    /// Wakes publishers held by back-pressure (blocked connection, channel flow, a full
    /// outbound queue) and anyone waiting for the connection to end.
    pub(crate) publish_gate: Arc<Notify>,
}

impl Shared {
    pub(crate) fn new(core: Core, publish_gate: Arc<Notify>) -> Self {
        Self {
            core: Mutex::new(core),
            driver: Notify::new(),
            publish_gate,
        }
    }

    /// Locks the core. A panic while the lock was held cannot leave the core half-updated in
    /// a way that matters more than losing the connection, so a poisoned lock is used as is.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Core> {
        self.core
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Tells the driver there is work (a permit is stored if it is busy).
    pub(crate) fn wake_driver(&self) {
        self.driver.notify_one();
    }

    /// Waits for [`wake_driver`](Self::wake_driver).
    pub(crate) async fn driver_woken(&self) {
        self.driver.notified().await;
    }
}
