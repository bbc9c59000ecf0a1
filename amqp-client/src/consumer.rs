//! [`Consumer`]: a consumer's deliveries, as a stream.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use amqp_codec::ShortStr;
use futures_core::Stream;

use crate::channel::Channel;
use crate::error::Error;
use crate::message::Delivery;
use crate::proto::{RawDelivery, WaiterId};

/// A consumer's deliveries, as a [`Stream`] (or with [`recv`](Self::recv)).
///
/// The buffer between the socket and the stream is bounded: a consumer that stops reading
/// holds at most its prefetch (or `Limits::consumer_buffer`, plus the 31 it may have taken
/// ahead) messages, after which the connection stops reading until it catches up. The stream
/// ends after a cancel; if the broker cancelled it (queue deleted) or the channel closed, the
/// last item is the error.
/// Dropping a consumer cancels it and hands its unprocessed messages back to the broker.
///
/// ```no_run
/// use amqp_client::{Channel, ConsumeOptions, QosOptions};
///
/// # async fn demo(ch: Channel) -> Result<(), amqp_client::Error> {
/// // At most 32 unacknowledged deliveries in flight to this channel.
/// ch.basic_qos(32, QosOptions::default()).await?;
/// let mut consumer = ch.basic_consume("tasks", ConsumeOptions::default()).await?;
/// while let Some(delivery) = consumer.recv().await {
///     let delivery = delivery?; // an error is the last item: cancelled by the broker, closed
///     // ... work on delivery.body ...
///     delivery.ack()?;
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Consumer {
    /// Keeps the channel open, and settles deliveries.
    channel: Channel,
    /// The consumer tag (the broker's if it chose one).
    tag: ShortStr,
    /// True once the stream ended.
    done: bool,
    /// The id the core wakes this stream's task by, once it waited.
    waiter: Option<WaiterId>,
    /// Deliveries taken from the connection's buffer with the last one handed out, not handed
    /// out yet: a run of them is taken under one lock rather than one lock each (on a
    /// multi-threaded runtime the driver, decoding the next read, holds that lock too: 1.08
    /// -> 0.98 µs of CPU per consumed message). Handed back with the buffer if the stream is
    /// dropped; dropped unseen if the connection is lost meanwhile, like the buffer.
    ahead: VecDeque<RawDelivery>,
    /// [`Shared::losses`](crate::shared::Shared) when `ahead` was filled.
    ahead_losses: u64,
}

/// Most deliveries taken ahead at once, besides the one handed out.
pub(crate) const TAKE_AHEAD: usize = 31;

impl Consumer {
    pub(crate) fn new(channel: Channel, tag: ShortStr) -> Self {
        Self {
            channel,
            tag,
            done: false,
            waiter: None,
            ahead: VecDeque::new(),
            ahead_losses: 0,
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
        let shared = this.channel.shared();
        if !this.ahead.is_empty() && shared.losses() != this.ahead_losses {
            // Their connection is gone: the broker requeued them, their tags mean nothing.
            this.ahead.clear();
        }
        if let Some(raw) = this.ahead.pop_front() {
            return Poll::Ready(Some(Delivery::from_raw(raw, this.channel.acker())));
        }
        let (id, epoch) = this.channel.ids();
        let (poll, resume) = {
            let mut guard = shared.lock();
            let (core, waiters) = guard.parts();
            let waiter = waiters.prepare(&mut this.waiter, cx.waker());
            this.ahead_losses = shared.losses();
            core.poll_deliveries(id, epoch, &this.tag, waiter, &mut this.ahead, TAKE_AHEAD)
        };
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
        let (id, epoch) = self.channel.ids();
        let shared = self.channel.shared();
        let mut guard = shared.lock();
        guard.waiters().release(&mut self.waiter);
        if self.done {
            return;
        }
        // What it took ahead before a recovery is of an older generation of the channel: the
        // core hands back only the current generation's.
        guard.drop_consumer(id, epoch, &self.tag, std::mem::take(&mut self.ahead));
        drop(guard);
        shared.wake_driver();
    }
}
