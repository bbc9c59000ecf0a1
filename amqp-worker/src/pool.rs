//! [`Pool`]: the worker's `concurrency` runners, started once per worker and handed one
//! delivery at a time, instead of a tokio task spawned per delivery.
//!
//! A spawned task per delivery cost ~3 000 instructions (callgrind, `benches/examples/
//! worker.rs`): the task's cell allocated with 128-byte alignment (glibc's slow
//! `posix_memalign` path), the ~1.5 KB future copied into it and out of its stages, the
//! cell freed. A runner takes a delivery from its inbox, settles it (see
//! [`settle::process`]), then says it is idle again; the dispatch loop hands a delivery
//! only to an idle runner, so `concurrency` bounds the handlers running at once across
//! sessions, as the semaphore it replaces did, and nothing waits in an inbox: what the
//! worker has not started stays in the consumer's buffer, which the graceful stop requeues.

use std::sync::Arc;

use amqp_client::Delivery;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

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

/// The runners, and which of them are idle.
pub(crate) struct Pool<H> {
    /// The worker.
    ctx: Arc<Ctx<H>>,
    /// Each runner's inbox, by index (never more than one job in it: only an idle runner is
    /// handed one); empty once closed.
    inboxes: Vec<mpsc::UnboundedSender<Job>>,
    /// Indexes of idle runners: each runner sends its own after settling a job.
    idle: mpsc::UnboundedReceiver<usize>,
    /// Given to each runner, to say it is idle.
    idle_tx: mpsc::UnboundedSender<usize>,
    /// An idle runner taken from `idle` and not handed a job yet (the session ended
    /// meanwhile): the next job is its.
    ready: Option<usize>,
}

impl<H: Handler> Pool<H> {
    /// Starts `concurrency` runners, all idle, tracked by the worker's task tracker.
    pub(crate) fn start(ctx: &Arc<Ctx<H>>) -> Self {
        let n = ctx.config.concurrency;
        let (idle_tx, idle) = mpsc::unbounded_channel();
        let mut pool = Self {
            ctx: ctx.clone(),
            inboxes: Vec::with_capacity(n),
            idle,
            idle_tx,
            ready: None,
        };
        for index in 0..n {
            let inbox = pool.spawn_runner(index);
            pool.inboxes.push(inbox);
            let _ = pool.idle_tx.send(index);
        }
        pool
    }

    /// Spawns runner `index`; returns its inbox.
    fn spawn_runner(&self, index: usize) -> mpsc::UnboundedSender<Job> {
        let (inbox, jobs) = mpsc::unbounded_channel();
        self.ctx
            .tracker
            .spawn(run(self.ctx.clone(), index, jobs, self.idle_tx.clone()));
        inbox
    }

    /// Waits until a runner is idle; cancel-safe (a runner taken stays reserved for the
    /// next [`hand`](Self::hand)).
    pub(crate) async fn ready(&mut self) {
        if self.ready.is_none() {
            // Never `None`: the pool holds a sender itself.
            self.ready = self.idle.recv().await;
        }
    }

    /// Hands `job` to the runner [`ready`](Self::ready) reserved (the caller awaited it).
    pub(crate) fn hand(&mut self, job: Job) {
        let Some(index) = self.ready.take() else {
            debug_assert!(false, "hand() without ready()");
            return;
        };
        let Some(inbox) = self.inboxes.get(index) else {
            return; // closed: the job is dropped unsettled, and the broker requeues it
        };
        if let Err(mpsc::error::SendError(job)) = inbox.send(job) {
            // The runner is gone (a panic outside the handler, which is caught): a new one
            // takes its place, with an empty inbox, and this job.
            tracing::warn!(runner = index, "a task runner ended unexpectedly; replaced");
            let inbox = self.spawn_runner(index);
            let _ = inbox.send(job);
            self.inboxes[index] = inbox;
        }
    }

    /// Closes every inbox: each runner finishes the job it has, then ends.
    pub(crate) fn close(&mut self) {
        self.inboxes.clear();
    }
}

/// Runner `index`: settles each job of its inbox, then says it is idle, until the inbox
/// closes.
async fn run<H: Handler>(
    ctx: Arc<Ctx<H>>,
    index: usize,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    idle: mpsc::UnboundedSender<usize>,
) {
    while let Some(job) = jobs.recv().await {
        settle::process(&ctx, job.delivery, &job.link.publisher, &job.link.broken).await;
        if idle.send(index).is_err() {
            break;
        }
    }
}
