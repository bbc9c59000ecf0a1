//! [`Pool`]: the worker's `concurrency` runners, started once per worker, and the queue of
//! deliveries they take their work from.
//!
//! The session's dispatch loop moves each delivery from the consumer into the pool's queue;
//! a runner takes the oldest, settles it (see [`settle::process`]), and takes the next
//! itself, with no hand-off in between. The [`Feed`] rations wakes: slow handlers run side by
//! side, while a stream of quick ones costs no wake per task.
//!
//! History, each step measured by callgrind on `benches/examples/worker/`: a tokio task
//! spawned per delivery cost ~3 000 instructions (its cell allocated, the future copied in
//! and out); runners handed one delivery each through an inbox, and reporting idle through
//! a second channel, cost two channel hops and two task wakes per task (~1 500
//! instructions). `concurrency` still bounds the handlers running at once, across sessions.
//! What no runner has started stays in the queue, which a restart discards (the broker
//! requeues what a closed channel held) and the graceful stop hands back.

use std::collections::VecDeque;
use std::pin::pin;
use std::sync::Arc;

use amqp_client::{Delivery, NackOptions};
use tokio_util::sync::CancellationToken;

use crate::feed::Feed;
use crate::handler::Handler;
use crate::publisher::Publisher;
use crate::settle;
use crate::worker::Ctx;

/// What a session gives each of its deliveries: the context of the pool's queue while the
/// session runs, which a runner clones only when it takes the first delivery of a new
/// session (see [`Feed`]). A runner keeps the last one until then: a closed publisher's
/// handle, nothing more.
pub(crate) struct Link {
    /// The session's confirm-mode publisher (retries, parking).
    pub(crate) publisher: Arc<Publisher>,
    /// Cancelled when the publishing channel failed: the session must restart.
    pub(crate) broken: CancellationToken,
}

/// The runners, and the queue they take deliveries from.
pub(crate) struct Pool {
    /// Shared with every runner: the deliveries, under their session's [`Link`].
    feed: Arc<Feed<Delivery, Link>>,
}

impl Pool {
    /// Starts `concurrency` runners, all idle, tracked by the worker's task tracker.
    pub(crate) fn start<H: Handler>(ctx: &Arc<Ctx<H>>) -> Self {
        let feed = Arc::new(Feed::new());
        for _ in 0..ctx.config.concurrency {
            ctx.tracker.spawn(run(ctx.clone(), feed.clone()));
        }
        Self { feed }
    }

    /// A session starts: the deliveries it pushes from now on are settled with `link`.
    /// Returns what an earlier session left queued (none: each takes its own back at its end).
    pub(crate) fn start_session(&self, link: Arc<Link>) -> VecDeque<Delivery> {
        self.feed.start_context(link)
    }

    /// Queues `delivery` for the next free runner (waking one if needed). `false` if the pool
    /// is closed: the delivery is handed back to the broker (requeued).
    pub(crate) fn push(&self, delivery: Delivery) -> bool {
        match self.feed.push(delivery) {
            Ok(()) => true,
            Err(delivery) => {
                let _ = delivery.nack(NackOptions::requeue());
                false
            }
        }
    }

    /// Takes every delivery no runner has started (a session ending: its channel is closing).
    pub(crate) fn take_queued(&self) -> VecDeque<Delivery> {
        self.feed.take_all()
    }

    /// Closes the pool: each runner finishes the delivery it has, then ends. Returns the
    /// deliveries no runner started, for the caller to hand back.
    pub(crate) fn close(&self) -> VecDeque<Delivery> {
        self.feed.close()
    }
}

impl Drop for Pool {
    /// A worker ending without the graceful stop (its connection gave up) ends its runners
    /// too; what they had not started is settled by the connection's end.
    fn drop(&mut self) {
        drop(self.close());
    }
}

/// A runner: settles one delivery after another, until the pool closes.
async fn run<H: Handler>(ctx: Arc<Ctx<H>>, feed: Arc<Feed<Delivery, Link>>) {
    // The session of the last delivery, kept for the next.
    let mut held = None;
    // The delivery being settled. Taken into this slot and settled by reference: the
    // future that settles it starts as a few pointers (callgrind: passing the delivery
    // down by value, then the task through each layer, cost ~15 copies of ~200 bytes per
    // task).
    let mut slot = None;
    while let Some(link) = feed.next(&mut held, &mut slot).await {
        if let Some(delivery) = slot.as_mut() {
            settle_caught(&ctx, delivery, link).await;
        }
        // Dropped here, not in the queue's lock when the next one is taken.
        slot = None;
    }
}

/// Settles `delivery`; a panic here is a bug in the worker itself (the handler's is caught
/// inside [`settle::process`]): the delivery is abandoned, unacknowledged (the broker
/// redelivers it when its channel closes), and the runner lives on.
async fn settle_caught<H: Handler>(ctx: &Arc<Ctx<H>>, delivery: &mut Delivery, link: &Link) {
    let mut work = pin!(settle::process(ctx, delivery, link));
    let outcome = std::future::poll_fn(|cx| settle::poll_catching(work.as_mut(), cx)).await;
    if outcome.is_err() {
        tracing::error!(
            "a task runner panicked outside the handler; the task is redelivered once its channel closes"
        );
    }
}
