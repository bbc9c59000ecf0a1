//! The futures and streams handed out by a channel: [`Consumer`] (a stream of deliveries) and
//! [`PublishConfirm`] (the broker's answer to one publish).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use amqp_codec::ShortStr;
use futures_core::Stream;

use crate::channel::Channel;
use crate::error::Error;
use crate::message::{Confirmation, Delivery};
use crate::shared::Shared;

/// A consumer's deliveries, as a [`Stream`] (or with [`recv`](Self::recv)).
///
/// The buffer between the socket and the stream is bounded: a consumer that stops reading
/// holds at most its prefetch (or `Limits::consumer_buffer`) messages, after which the
/// connection stops reading until it catches up. The stream ends after a cancel; if the
/// broker cancelled it (queue deleted) or the channel closed, the last item is the error.
/// Dropping a consumer cancels it and hands its unprocessed messages back to the broker.
#[derive(Debug)]
pub struct Consumer {
    /// Keeps the channel open, and settles deliveries.
    channel: Channel,
    /// The consumer tag (the broker's if it chose one).
    tag: ShortStr,
    /// True once the stream ended.
    done: bool,
}

impl Consumer {
    pub(crate) fn new(channel: Channel, tag: ShortStr) -> Self {
        Self {
            channel,
            tag,
            done: false,
        }
    }

    /// The consumer tag.
    pub fn tag(&self) -> &str {
        self.tag.as_str().unwrap_or_default()
    }

    /// The channel the consumer runs on.
    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// The next delivery; `None` once the consumer ended.
    pub async fn recv(&mut self) -> Option<Result<Delivery, Error>> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }

    /// Cancels the consumer (basic.cancel); the stream then yields what it buffered and ends.
    pub async fn cancel(&self) -> Result<(), Error> {
        self.channel.basic_cancel(self.tag()).await
    }
}

impl Stream for Consumer {
    type Item = Result<Delivery, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        let (id, epoch) = this.channel.ids();
        let shared = this.channel.shared();
        let (poll, resume) = shared.lock().poll_delivery(id, epoch, &this.tag, cx);
        if resume {
            shared.wake_driver();
        }
        match poll {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(err))) => Poll::Ready(Some(Err(err))),
            // The acker (a reference count on the connection) only for a delivery in hand.
            Poll::Ready(Some(Ok(raw))) => {
                Poll::Ready(Some(Delivery::from_raw(raw, this.channel.acker())))
            }
        }
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let (id, epoch) = self.channel.ids();
        let shared = self.channel.shared();
        shared.lock().drop_consumer(id, epoch, &self.tag);
        shared.wake_driver();
    }
}

/// The broker's answer to one publish: resolves with [`Confirmation::Ack`] or
/// [`Confirmation::Nack`] in confirm mode (with the returned message if it was unroutable and
/// mandatory), [`Confirmation::NotRequested`] otherwise, or an error if the channel or
/// connection closed first. Never hangs: closing resolves every pending confirm.
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
        let poll =
            self.shared
                .lock()
                .poll_confirm(self.channel, self.epoch, self.generation, seq, cx);
        if poll.is_ready() {
            self.done = true;
        }
        poll
    }
}

impl Drop for PublishConfirm {
    fn drop(&mut self) {
        if let (Some(seq), false) = (self.seq, self.done) {
            self.shared
                .lock()
                .forget_confirm(self.channel, self.epoch, self.generation, seq);
        }
    }
}
