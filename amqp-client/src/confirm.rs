//! [`PublishConfirm`]: the broker's answer to one publish, as a future.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::error::Error;
use crate::proto::{Confirmation, WaiterId};
use crate::shared::Shared;

/// The broker's answer to one publish: in confirm mode [`Confirmation::Acked`],
/// [`Confirmation::Returned`] (a mandatory message it could not route) or
/// [`Confirmation::Nacked`]; [`Confirmation::NotRequested`] otherwise; or an error if the
/// channel or connection closed first. Never hangs: closing resolves every pending confirm.
///
/// ```no_run
/// # async fn demo(channel: amqp_client::Channel) -> Result<(), amqp_client::Error> {
/// use amqp_client::{BasicProperties, Confirmation, PublishOptions};
/// channel.confirm_select().await?;
/// let props = BasicProperties::persistent();
/// let confirm = channel
///     .basic_publish("", "tasks", PublishOptions::mandatory(), &props, "hello")
///     .await?;
/// match confirm.await? {
///     Confirmation::Acked => {}
///     Confirmation::Returned(r) => eprintln!("no queue for it: {}", r.reply_code),
///     other => eprintln!("not taken: {other:?}"),
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[must_use = "a publish confirm does nothing unless awaited; drop it to ignore the outcome"]
pub struct PublishConfirm {
    shared: Arc<Shared>,
    channel: u16,
    epoch: u64,
    /// The channel's generation the publish went out in (a recovery fails it).
    generation: u64,
    /// The publish's sequence number; `None` outside confirm mode.
    seq: Option<u64>,
    /// True once the outcome was collected.
    done: bool,
    /// The id the core wakes this future's task by, while it waits.
    waiter: Option<WaiterId>,
}

impl PublishConfirm {
    pub(crate) fn new(
        shared: Arc<Shared>,
        (channel, epoch, generation): (u16, u64, u64),
        seq: Option<u64>,
    ) -> Self {
        Self {
            shared,
            channel,
            epoch,
            generation,
            seq,
            done: false,
            waiter: None,
        }
    }

    /// The publish's sequence number (its delivery tag in the broker's confirms).
    pub fn sequence(&self) -> Option<u64> {
        self.seq
    }
}

impl Future for PublishConfirm {
    type Output = Result<Confirmation, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(seq) = self.seq else {
            self.done = true;
            return Poll::Ready(Ok(Confirmation::NotRequested));
        };
        if self.done {
            return Poll::Ready(Err(Error::InvalidUse("confirm polled after completion")));
        }
        let this = &mut *self;
        let mut guard = this.shared.lock();
        let (core, waiters) = guard.parts();
        let waiter = waiters.prepare(&mut this.waiter, cx.waker());
        let poll = core.poll_confirm(this.channel, this.epoch, this.generation, seq, waiter);
        if poll.is_ready() {
            this.done = true;
            waiters.release(&mut this.waiter);
        }
        poll
    }
}

impl Drop for PublishConfirm {
    fn drop(&mut self) {
        if let (Some(seq), false) = (self.seq, self.done) {
            let mut guard = self.shared.lock();
            guard.waiters().release(&mut self.waiter);
            guard.forget_confirm(self.channel, self.epoch, self.generation, seq);
        }
    }
}
