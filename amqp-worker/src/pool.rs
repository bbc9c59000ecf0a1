//! [`Pool`]: the worker's `concurrency` runners, started once per worker, and the queue of
//! deliveries they take their work from.
//!
//! The session's dispatch loop moves each delivery from the consumer into the pool's queue;
//! a runner takes the oldest, settles it (see [`settle::process`]), and takes the next
//! itself, with no hand-off in between. The [`Feed`] rations wakes: slow handlers run side by
//! side, while a stream of quick ones costs no wake per task.
//!
//! History, each step measured by callgrind on `benches/examples/worker.rs`: a tokio task
//! spawned per delivery cost ~3 000 instructions (its cell allocated, the future copied in
//! and out); runners handed one delivery each through an inbox, and reporting idle through
//! a second channel, cost two channel hops and two task wakes per task (~1 500
//! instructions). `concurrency` still bounds the handlers running at once, across sessions.
//! What no runner has started stays in the queue, which a restart discards (the broker
//! requeues what a closed channel held) and the graceful stop hands back.

use std::collections::VecDeque;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;

use amqp_client::{Delivery, NackOptions};
use tokio_util::sync::CancellationToken;

use crate::feed::Feed;
use crate::handler::Handler;
use crate::publisher::Publisher;
use crate::settle;
use crate::worker::Ctx;

/// What a session gives each of its deliveries: one `Arc` shared by all of them (a clone
/// per delivery, not one of each field: a `CancellationToken` clone and drop take a lock each).
pub(crate) struct Link {
    /// The session's confirm-mode publisher (retries, parking).
    pub(crate) publisher: Arc<Publisher>,
    /// Cancelled when the publishing channel failed: the session must restart.
    pub(crate) broken: CancellationToken,
}

/// One delivery to settle, with what its session gives it.
pub(crate) struct Job {
    /// The delivery.
    pub(crate) delivery: Delivery,
    /// Its session's publisher and broken token.
    pub(crate) link: Arc<Link>,
}

/// The runners, and the queue they take deliveries from.
pub(crate) struct Pool {
    /// Shared with every runner.
    feed: Arc<Feed<Job>>,
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

    /// Queues `job` for the next free runner (waking one if needed). `false` if the pool is
    /// closed: the job's delivery is handed back to the broker (requeued).
    pub(crate) fn push(&self, job: Job) -> bool {
        match self.feed.push(job) {
            Ok(()) => true,
            Err(job) => {
                let _ = job.delivery.nack(NackOptions::requeue());
                false
            }
        }
    }

    /// Takes every job no runner has started (a session ending: its channel is closing).
    pub(crate) fn take_queued(&self) -> VecDeque<Job> {
        self.feed.take_all()
    }

    /// Closes the pool: each runner finishes the job it has, then ends. Returns the jobs no
    /// runner started, for the caller to hand back.
    pub(crate) fn close(&self) -> VecDeque<Job> {
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

/// A runner: settles one job after another, until the pool closes.
async fn run<H: Handler>(ctx: Arc<Ctx<H>>, feed: Arc<Feed<Job>>) {
    while let Some(job) = feed.next().await {
        let mut work = pin!(settle::process(
            &ctx,
            job.delivery,
            &job.link.publisher,
            &job.link.broken
        ));
        // The handler's panic is caught inside `process`; one here is a bug in the worker
        // itself: this job is abandoned (unacknowledged, the broker redelivers it when the
        // channel closes), and the runner lives on.
        let outcome = std::future::poll_fn(|cx| {
            match std::panic::catch_unwind(AssertUnwindSafe(|| work.as_mut().poll(cx))) {
                Ok(poll) => poll.map(Ok),
                Err(_) => Poll::Ready(Err(())),
            }
        })
        .await;
        if outcome.is_err() {
            tracing::error!(
                "a task runner panicked outside the handler; the task is redelivered once its channel closes"
            );
        }
    }
}
