//! State shared between the application's handles and the driver task: the sans-IO core
//! under a mutex, and the two wake-up signals around it.
//!
//! The lock is held only for in-memory work (never across an await or a socket call), so a
//! `std::sync::Mutex` is the right tool: cheaper than an async mutex and never held long.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, broadcast};
use tokio::time::Instant;

use crate::error::Error;
use crate::proto::Core;
use crate::recovery::{ConnectionState, RecoveryEvent};
use crate::stats::IoCounters;

/// Recovery events kept for a slow subscriber before it starts missing some.
const EVENT_BACKLOG: usize = 64;

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
    /// What recovery did, for whoever subscribed.
    pub(crate) events: broadcast::Sender<RecoveryEvent>,
    /// How long a call made during recovery waits for it (zero: fail at once).
    recovery_wait: Duration,
    /// Reads and writes the driver made, for [`Connection::io_stats`](crate::Connection::io_stats).
    pub(crate) io: IoCounters,
}

impl Shared {
    pub(crate) fn new(core: Core, publish_gate: Arc<Notify>) -> Self {
        let recovery_wait = core
            .config
            .recovery
            .as_ref()
            .map_or(Duration::ZERO, |p| p.wait_while_recovering);
        Self {
            core: Mutex::new(core),
            driver: Notify::new(),
            publish_gate,
            events: broadcast::channel(EVENT_BACKLOG).0,
            recovery_wait,
            io: IoCounters::default(),
        }
    }

    /// Publishes a recovery event (nobody listening is fine).
    pub(crate) fn emit(&self, event: RecoveryEvent) {
        let _ = self.events.send(event);
    }

    /// A call met a connection under recovery: waits for it to end, at most the policy's
    /// `wait_while_recovering` from the call's first wait (kept in `deadline`). `Ok` to retry
    /// the call; otherwise the error the call gets (`RecoveryFailed`, or `Recovering` if the
    /// bound passed first).
    pub(crate) async fn wait_out_recovery(
        &self,
        deadline: &mut Option<Instant>,
    ) -> Result<(), Error> {
        let until = *deadline.get_or_insert_with(|| Instant::now() + self.recovery_wait);
        if self.wait_recovered(until).await {
            return Ok(());
        }
        Err(self.lock().closed_error().unwrap_or(Error::Recovering))
    }

    /// Waits until recovery ends or `deadline`. True if the connection is open again.
    async fn wait_recovered(&self, deadline: Instant) -> bool {
        let mut state = self.lock().state_tx.subscribe();
        let open = |s: &ConnectionState| {
            matches!(
                s,
                ConnectionState::Connected | ConnectionState::Recovered { .. }
            )
        };
        let ended = tokio::time::timeout_at(
            deadline,
            state.wait_for(|s| !matches!(s, ConnectionState::Recovering { .. })),
        )
        .await;
        match ended {
            Ok(Ok(s)) => open(&s),
            _ => false,
        }
    }

    /// Locks the core. A panic while the lock was held cannot leave the core half-updated in
    /// a way that matters more than losing the connection, so a poisoned lock is used as is.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Core> {
        self.core
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs `queue` (which queues frames, or not) on the locked core, and wakes the driver if
    /// it put the first frame into an empty queue. A queue that already held frames needs no
    /// wake-up: one is pending, or the driver is awake and takes them before it waits again
    /// (it takes the whole queue under the lock at the top of every turn, and waits with
    /// nothing to write only after finding the queue empty). This spares a cross-thread
    /// wake-up per publish or ack on a multi-threaded runtime.
    pub(crate) fn queue<R>(&self, queue: impl FnOnce(&mut Core) -> R) -> R {
        let mut core = self.lock();
        let was_empty = !core.has_queued_output();
        let result = queue(&mut core);
        let wake = was_empty && core.has_queued_output();
        drop(core);
        if wake {
            self.wake_driver();
        }
        result
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
