//! State shared between the application's handles and the driver task: the sans-IO core under
//! a mutex, beside the wakers and reply channels of the tasks waiting on it, and the layer
//! that turns the core's events into wake-ups.
//!
//! The lock is held only for in-memory work (never across an await or a socket call), so a
//! `std::sync::Mutex` is the right tool: cheaper than an async mutex and never held long.
//! Every access goes through a [`Guard`]; when it is dropped, the events the core queued
//! meanwhile are dispatched, still under the lock, so none is ever missed or reordered: a
//! reply goes to its caller's channel, a [`WaiterId`]'s task is woken, a lost transport is
//! handed to the recovery layer, and state changes go to their watchers.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::task::Waker;

use rustc_hash::FxHashMap;
use tokio::sync::{Notify, broadcast, oneshot, watch};

use crate::error::Error;
use crate::proto::{ConnectionState, Core, Event, Reply, RequestId, WaiterId};
use crate::recovery::{self, Recovery, RecoveryEvent};
use crate::stats::IoCounters;

/// Recovery events kept for a slow subscriber before it starts missing some.
const EVENT_BACKLOG: usize = 64;

/// Where the answer to one request goes.
pub(crate) type ReplyRx = oneshot::Receiver<Result<Reply, Error>>;

/// What handles and the driver share.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The core and what waits on it, under one lock.
    state: Mutex<State>,
    /// Wakes the driver: output was queued, or a consumer drained and reading may resume.
    driver: Notify,
    /// Wakes publishers held by back-pressure (blocked connection, channel flow, a full
    /// outbound queue) when the core says they may try again.
    publish_gate: Notify,
    /// The broker's blocked state, for `Connection::blocked`.
    blocked: watch::Sender<Option<String>>,
    /// Where the connection stands, for `Connection::state` (and calls waiting out recovery).
    conn_state: watch::Sender<ConnectionState>,
    /// What recovery did, for whoever subscribed. Made on the first subscription: a
    /// broadcast channel fills its backlog's slots up front, which an idle connection that
    /// nobody watches should not pay for (an event with no subscriber goes nowhere anyway).
    events: std::sync::OnceLock<broadcast::Sender<RecoveryEvent>>,
    /// Reads and writes the driver made, for [`Connection::io_stats`](crate::Connection::io_stats).
    pub(crate) io: IoCounters,
    /// Transports lost so far: a `Consumer` reads it without the lock to learn that the
    /// deliveries it took ahead came on a connection that is gone.
    losses: AtomicU64,
    /// What was reported to the `metrics` facade so far (feature `metrics`).
    #[cfg(feature = "metrics")]
    pub(crate) metrics: crate::metrics_facade::Reporter,
}

/// What the lock guards.
#[derive(Debug)]
pub(crate) struct State {
    /// The protocol state.
    pub(crate) core: Core,
    /// The tasks and calls waiting on it.
    pub(crate) waiters: Waiters,
    /// The recovery layer's state (policy, recorded topology), when recovery is on.
    pub(crate) recovery: Option<Recovery>,
}

impl Shared {
    pub(crate) fn new(core: Core) -> Self {
        let recovery = core.config.recovery.clone().map(Recovery::new);
        #[cfg(feature = "metrics")]
        let metrics = crate::metrics_facade::Reporter::new(core.config.connection_name.as_deref());
        Self {
            state: Mutex::new(State {
                core,
                waiters: Waiters::default(),
                recovery,
            }),
            driver: Notify::new(),
            publish_gate: Notify::new(),
            blocked: watch::channel(None).0,
            conn_state: watch::channel(ConnectionState::Connected).0,
            events: std::sync::OnceLock::new(),
            io: IoCounters::default(),
            losses: AtomicU64::new(0),
            #[cfg(feature = "metrics")]
            metrics,
        }
    }

    /// Transports lost so far (see [`Event::Lost`]).
    pub(crate) fn losses(&self) -> u64 {
        self.losses.load(Ordering::Acquire)
    }

    /// Reports the connection's message counts to the `metrics` facade (what grew since the
    /// last report). True once the connection is over for good (no recovery under way).
    #[cfg(feature = "metrics")]
    pub(crate) fn report_metrics(&self) -> bool {
        let (stats, over) = {
            let core = self.lock();
            (
                core.message_stats(),
                core.is_finished() && !core.is_recovering(),
            )
        };
        self.metrics.report(stats);
        over
    }

    /// Locks the core. A panic while the lock was held cannot leave the core half-updated in
    /// a way that matters more than losing the connection, so a poisoned lock is used as is.
    pub(crate) fn lock(&self) -> Guard<'_> {
        Guard {
            shared: self,
            state: self
                .state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
            woken: WakeAfterUnlock::default(),
        }
    }

    /// Runs `queue` (which queues frames, or not) on the locked core, and wakes the driver if
    /// it put the first frame into an empty queue. A queue that already held frames needs no
    /// wake-up: one is pending, or the driver is awake and takes them before it waits again
    /// (it takes the whole queue under the lock at the top of every turn, and waits with
    /// nothing to write only after finding the queue empty). This spares a cross-thread
    /// wake-up per publish or ack on a multi-threaded runtime.
    pub(crate) fn queue<R>(&self, queue: impl FnOnce(&mut Core) -> R) -> R {
        let mut guard = self.lock();
        let was_empty = !guard.has_queued_output();
        let result = queue(&mut guard);
        let wake = was_empty && guard.has_queued_output();
        drop(guard);
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

    /// The gate publishers held by back-pressure wait on; a publisher registers with it, then
    /// then publishes again: a publish the core holds back marks that a publisher waits, so
    /// the next change that may let it go is reported.
    pub(crate) fn publish_gate(&self) -> &Notify {
        &self.publish_gate
    }

    /// A receiver of the connection's state.
    pub(crate) fn state(&self) -> watch::Receiver<ConnectionState> {
        self.conn_state.subscribe()
    }

    /// A receiver of the broker's blocked state.
    pub(crate) fn blocked(&self) -> watch::Receiver<Option<String>> {
        self.blocked.subscribe()
    }

    /// Publishes a recovery event (nobody listening is fine).
    pub(crate) fn emit(&self, event: RecoveryEvent) {
        if let Some(events) = self.events.get() {
            let _ = events.send(event);
        }
    }

    /// A subscription to the recovery events from now on.
    pub(crate) fn subscribe_events(&self) -> broadcast::Receiver<RecoveryEvent> {
        self.events
            .get_or_init(|| broadcast::channel(EVENT_BACKLOG).0)
            .subscribe()
    }

    /// Acts on every event the core queued: called with the lock held, as a guard drops; the
    /// tasks to wake go into `woken`, woken once the lock is released.
    fn dispatch(&self, state: &mut State, woken: &mut WakeAfterUnlock) {
        while let Some(event) = state.core.poll_event() {
            match event {
                Event::Reply { request, result } => state.waiters.reply(request, result),
                Event::Wake(waiter) => {
                    if let Some(waker) = state.waiters.take_waker(waiter) {
                        woken.push(waker);
                    }
                }
                Event::Opened(result) => state.waiters.opened(result),
                Event::Closed => state.waiters.closed(),
                Event::SecretUpdated(result) => state.waiters.secret_updated(result),
                Event::PublishersMayProceed => self.publish_gate.notify_waiters(),
                Event::Blocked(reason) => {
                    self.blocked.send_replace(reason);
                }
                Event::State(new) => {
                    self.conn_state.send_replace(new);
                    self.publish_gate.notify_waiters();
                }
                Event::Lost(err) => {
                    self.losses.fetch_add(1, Ordering::Release);
                    recovery::on_lost(&mut state.core, state.recovery.as_mut(), &err);
                }
            }
        }
    }
}

/// The core under its lock; dropping it dispatches the core's events.
pub(crate) struct Guard<'a> {
    /// Where events go.
    shared: &'a Shared,
    /// The locked state.
    state: MutexGuard<'a, State>,
    /// Tasks the events woke, woken as this field drops: after `state`, so after the unlock
    /// (fields drop in order). A task woken under the lock ran into it at once: perf on a
    /// consumer at prefetch 16 found the driver's unlock waking it a second time in 14% of
    /// all wake-ups (a futex wait and wake each).
    woken: WakeAfterUnlock,
}

/// Up to [`WakeAfterUnlock::ROOM`] wakers, woken when dropped; beyond that, woken at once.
#[derive(Default)]
struct WakeAfterUnlock {
    /// The wakers kept, `len` of them at the front.
    wakers: [Option<Waker>; WakeAfterUnlock::ROOM],
    /// How many are kept.
    len: usize,
}

impl WakeAfterUnlock {
    /// Wakers kept per lock: a read usually wakes one consumer or publisher, a few at most;
    /// a read that wakes more (many channels) wakes the rest under the lock, as before.
    const ROOM: usize = 4;

    fn push(&mut self, waker: Waker) {
        match self.wakers.get_mut(self.len) {
            Some(slot) => {
                *slot = Some(waker);
                self.len += 1;
            }
            None => waker.wake(),
        }
    }
}

impl Drop for WakeAfterUnlock {
    fn drop(&mut self) {
        for waker in self.wakers[..self.len].iter_mut().filter_map(Option::take) {
            waker.wake();
        }
    }
}

impl Guard<'_> {
    /// The tasks and calls waiting on the core.
    pub(crate) fn waiters(&mut self) -> &mut Waiters {
        &mut self.state.waiters
    }

    /// The core and its waiters, borrowed together.
    pub(crate) fn parts(&mut self) -> (&mut Core, &mut Waiters) {
        let state = &mut *self.state;
        (&mut state.core, &mut state.waiters)
    }

    /// The recovery layer's state, when recovery is on.
    pub(crate) fn recovery(&mut self) -> Option<&mut Recovery> {
        self.state.recovery.as_mut()
    }
}

impl Deref for Guard<'_> {
    type Target = Core;
    fn deref(&self) -> &Core {
        &self.state.core
    }
}

impl DerefMut for Guard<'_> {
    fn deref_mut(&mut self) -> &mut Core {
        &mut self.state.core
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        if !self.state.core.events.is_empty() {
            self.shared.dispatch(&mut self.state, &mut self.woken);
        }
    }
}

impl std::fmt::Debug for Guard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard").finish_non_exhaustive()
    }
}

/// The tasks and calls waiting on the core: wakers by [`WaiterId`] (a slab whose free slots
/// are reused, so a steady stream of confirms allocates nothing), and the channels replies go
/// to.
#[derive(Debug, Default)]
pub(crate) struct Waiters {
    /// Wakers by waiter id.
    wakers: Vec<Option<Waker>>,
    /// Ids free for reuse.
    free: Vec<u32>,
    /// Calls waiting for their reply, by request.
    replies: FxHashMap<RequestId, oneshot::Sender<Result<Reply, Error>>>,
    /// The `connect` (or recovery attempt) waiting for the handshake.
    open: Option<oneshot::Sender<Result<(), Error>>>,
    /// `close` calls waiting for the close to finish.
    closing: Vec<oneshot::Sender<Result<(), Error>>>,
    /// An update-secret waiting for its ok.
    secret: Option<oneshot::Sender<Result<(), Error>>>,
}

impl Waiters {
    /// The id a task polls under, allocated on its first wait and kept in `slot`, with the
    /// task's current waker recorded.
    pub(crate) fn prepare(&mut self, slot: &mut Option<WaiterId>, waker: &Waker) -> WaiterId {
        let id = *slot.get_or_insert_with(|| match self.free.pop() {
            Some(i) => WaiterId(i),
            None => {
                self.wakers.push(None);
                WaiterId(u32::try_from(self.wakers.len() - 1).unwrap_or(u32::MAX))
            }
        });
        if let Some(entry) = self.wakers.get_mut(id.0 as usize) {
            match entry {
                Some(w) if w.will_wake(waker) => {}
                _ => *entry = Some(waker.clone()),
            }
        }
        id
    }

    /// The task under `slot` no longer waits: its id is free for another.
    pub(crate) fn release(&mut self, slot: &mut Option<WaiterId>) {
        if let Some(id) = slot.take()
            && let Some(entry) = self.wakers.get_mut(id.0 as usize)
        {
            *entry = None;
            self.free.push(id.0);
        }
    }

    /// The waker registered for `id`, taken: the caller wakes it, after the unlock (a
    /// spurious wake-up if the id changed hands meanwhile).
    fn take_waker(&mut self, id: WaiterId) -> Option<Waker> {
        self.wakers.get_mut(id.0 as usize).and_then(Option::take)
    }

    /// The receiver of the reply to `request`.
    pub(crate) fn expect_reply(&mut self, request: RequestId) -> ReplyRx {
        let (tx, rx) = oneshot::channel();
        self.replies.insert(request, tx);
        rx
    }

    fn reply(&mut self, request: RequestId, result: Result<Reply, Error>) {
        if let Some(tx) = self.replies.remove(&request) {
            let _ = tx.send(result);
        }
    }

    /// The receiver of the end of the current handshake.
    pub(crate) fn expect_open(&mut self) -> oneshot::Receiver<Result<(), Error>> {
        let (tx, rx) = oneshot::channel();
        self.open = Some(tx);
        rx
    }

    fn opened(&mut self, result: Result<(), Error>) {
        if let Some(tx) = self.open.take() {
            let _ = tx.send(result);
        }
    }

    /// The receiver of the end of a close the application asked for.
    pub(crate) fn expect_close(&mut self) -> oneshot::Receiver<Result<(), Error>> {
        let (tx, rx) = oneshot::channel();
        self.closing.push(tx);
        rx
    }

    fn closed(&mut self) {
        for tx in self.closing.drain(..) {
            let _ = tx.send(Ok(()));
        }
    }

    /// The receiver of the answer to an update-secret.
    pub(crate) fn expect_secret(&mut self) -> oneshot::Receiver<Result<(), Error>> {
        let (tx, rx) = oneshot::channel();
        self.secret = Some(tx);
        rx
    }

    fn secret_updated(&mut self, result: Result<(), Error>) {
        if let Some(tx) = self.secret.take() {
            let _ = tx.send(result);
        }
    }
}

/// A waiter id borrowed for one wait (e.g. `wait_for_confirms`), released when dropped.
#[derive(Debug)]
pub(crate) struct WaiterSlot<'a> {
    /// Where the id is released.
    shared: &'a Shared,
    /// The id, once the wait needed one.
    id: Option<WaiterId>,
}

impl<'a> WaiterSlot<'a> {
    pub(crate) fn new(shared: &'a Shared) -> Self {
        Self { shared, id: None }
    }

    /// The slot to prepare the id in ([`Waiters::prepare`]).
    pub(crate) fn slot(&mut self) -> &mut Option<WaiterId> {
        &mut self.id
    }
}

impl Drop for WaiterSlot<'_> {
    fn drop(&mut self) {
        if self.id.is_some() {
            self.shared.lock().waiters().release(&mut self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, OnceLock};
    use std::task::{Wake, Waker};
    use std::time::Instant;

    use super::Shared;
    use crate::config::ConnectionConfig;
    use crate::proto::Core;

    /// A task's waker that records, when woken, whether the core's lock was free.
    struct Probe {
        /// The connection whose lock it tries.
        shared: OnceLock<Arc<Shared>>,
        /// Wake-ups that found the lock free.
        free: AtomicUsize,
        /// Wake-ups that found it held.
        held: AtomicUsize,
    }

    impl Wake for Probe {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }

        fn wake_by_ref(self: &Arc<Self>) {
            let Some(shared) = self.shared.get() else {
                return;
            };
            let counter = match shared.state.try_lock() {
                Ok(_) => &self.free,
                Err(_) => &self.held,
            };
            counter.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Registers `n` probes as waiters, then queues a wake-up for each under one lock.
    fn wake_under_one_lock(n: usize) -> Vec<Arc<Probe>> {
        let config = ConnectionConfig::default();
        let shared = Arc::new(Shared::new(Core::new(config, Instant::now())));
        let probes: Vec<Arc<Probe>> = (0..n)
            .map(|_| {
                let probe = Arc::new(Probe {
                    shared: OnceLock::new(),
                    free: AtomicUsize::new(0),
                    held: AtomicUsize::new(0),
                });
                let _ = probe.shared.set(shared.clone());
                probe
            })
            .collect();
        let mut guard = shared.lock();
        let ids: Vec<_> = probes
            .iter()
            .map(|p| {
                let waker = Waker::from(p.clone());
                guard.waiters().prepare(&mut None, &waker)
            })
            .collect();
        for id in ids {
            guard.events.wake(Some(id));
        }
        drop(guard);
        probes
    }

    #[test]
    fn tasks_are_woken_after_the_lock_is_released() {
        let probes = wake_under_one_lock(2);
        for p in &probes {
            assert_eq!(p.free.load(Ordering::SeqCst), 1, "woken once, lock free");
            assert_eq!(p.held.load(Ordering::SeqCst), 0, "not woken under the lock");
        }
    }

    #[test]
    fn more_wake_ups_than_kept_still_wake_every_task_once() {
        let probes = wake_under_one_lock(super::WakeAfterUnlock::ROOM + 3);
        let free: usize = probes.iter().map(|p| p.free.load(Ordering::SeqCst)).sum();
        let held: usize = probes.iter().map(|p| p.held.load(Ordering::SeqCst)).sum();
        assert_eq!(free + held, probes.len(), "every task woken exactly once");
        assert_eq!(
            free,
            super::WakeAfterUnlock::ROOM,
            "the kept ones after the unlock"
        );
    }
}
