//! [`WakeGated`]: a future polled again only after it asked to be, for a loop that polls a
//! rarely-ready future (the session's interruptions) next to busy ones.
//!
//! The dispatch loop polls its interruptions each time its task wakes, which is each time
//! deliveries arrive (with a `select!` per delivery, it was twice per delivery), and polling
//! the interruption future (a shutdown token, the connection's end, the broken token) costs
//! its sources a lock each even when nothing happened (callgrind: ~1 500 instructions per
//! task then). Behind this gate it is polled only when one of them woke it: the rest of the
//! time a poll is one atomic swap.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

/// The waker the gated future sees: it records the wake, then wakes the task.
#[derive(Debug)]
struct Gate {
    /// Set by a wake (and at the start): the inner future must be polled.
    woken: AtomicBool,
    /// The task to wake: the last waker the gated future was polled with.
    task: Mutex<Option<Waker>>,
}

impl Wake for Gate {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        let task = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(task) = task {
            task.wake();
        }
    }
}

/// `inner`, polled only when it woke its waker since its last poll (and on the first poll).
/// Like any future it must not be polled after it completed.
pub(crate) struct WakeGated<F> {
    /// The gated future.
    inner: Pin<Box<F>>,
    /// What `inner` wakes.
    gate: Arc<Gate>,
    /// `gate` as a waker, made once.
    waker: Waker,
    /// The task's waker as last given to `gate` (a copy, compared without its lock).
    task: Option<Waker>,
}

impl<F: Future> WakeGated<F> {
    /// Gates `inner` (boxed once, so that this stays `Unpin`).
    pub(crate) fn new(inner: F) -> Self {
        let gate = Arc::new(Gate {
            woken: AtomicBool::new(true),
            task: Mutex::new(None),
        });
        Self {
            inner: Box::pin(inner),
            waker: Waker::from(gate.clone()),
            gate,
            task: None,
        }
    }
}

impl<F: Future> Future for WakeGated<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        // The task to wake, given to the gate only when it is another (rare: the same task's
        // waker stays the same), so that a poll usually takes no lock.
        if !this.task.as_ref().is_some_and(|t| t.will_wake(cx.waker())) {
            let task = cx.waker().clone();
            *this
                .gate
                .task
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(task.clone());
            this.task = Some(task);
        }
        if !this.gate.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        this.inner
            .as_mut()
            .poll(&mut Context::from_waker(&this.waker))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn polls_again_only_after_a_wake() {
        let notify = Arc::new(tokio::sync::Notify::new());
        let polls = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let (n, p) = (notify.clone(), polls.clone());
        let mut gated = WakeGated::new(async move {
            let notified = n.notified();
            tokio::pin!(notified);
            std::future::poll_fn(|cx| {
                p.fetch_add(1, Ordering::Relaxed);
                notified.as_mut().poll(cx)
            })
            .await
        });
        for _ in 0..3 {
            assert!(futures_poll(&mut gated).is_pending());
        }
        assert_eq!(polls.load(Ordering::Relaxed), 1);
        notify.notify_one();
        assert!(futures_poll(&mut gated).is_ready());
        assert_eq!(polls.load(Ordering::Relaxed), 2);
    }

    /// One poll with a no-op waker.
    fn futures_poll<F: Future + Unpin>(f: &mut F) -> Poll<F::Output> {
        Pin::new(f).poll(&mut Context::from_waker(Waker::noop()))
    }
}
