//! One consumer's bounded buffer of deliveries, between the connection (which fills it as
//! frames arrive) and the application's `Consumer` stream (which drains it).

use std::collections::VecDeque;
use std::task::Poll;

use amqp_codec::{BasicProperties, DiscardReason, ShortStr};
use bytes::Bytes;

use super::events::{Events, WaiterId};
use crate::error::Error;

/// A delivery as the connection received it, before it gets its acker: what a consumer's
/// buffer holds, so kept small (96 bytes; `a_waiting_delivery_stays_small`).
#[derive(Debug)]
pub(crate) struct RawDelivery {
    /// The message.
    message: Received,
    /// The channel's generation it arrived in: its tag is only valid in that one.
    pub(crate) generation: u64,
}

/// How a delivery came in.
#[derive(Debug)]
enum Received {
    /// Read whole and in place from one read (its method, header and body frames back to
    /// back): the frames' bytes with one reference count, and where each field is in them.
    /// Its strings, properties and body are shared out when the application takes it.
    Whole(amqp_codec::Delivery),
    /// Put together frame by frame (a body in several frames, a basic.get-ok), or its content
    /// dropped. Boxed: the rarer case, and larger.
    Assembled(Box<DeliveryParts>),
}

/// A delivery's fields, owned: what [`crate::Delivery`] is made of.
#[derive(Debug)]
pub(crate) struct DeliveryParts {
    /// The channel-scoped tag to settle it with.
    pub(crate) delivery_tag: u64,
    /// Delivered before and not acknowledged.
    pub(crate) redelivered: bool,
    /// The exchange it was published to.
    pub(crate) exchange: ShortStr,
    /// The routing key it was published with.
    pub(crate) routing_key: ShortStr,
    /// The consumer it was delivered to; empty for a basic.get-ok.
    pub(crate) consumer_tag: ShortStr,
    /// Its properties, shared with the read buffer.
    pub(crate) properties: BasicProperties,
    /// Its body, shared with the read buffer (or joined, from several frames).
    pub(crate) body: Bytes,
    /// Set when the client dropped the content (over the size limit, or properties that do
    /// not parse): `properties` and `body` are then empty, and the application gets an
    /// [`Error::UnreadableDelivery`] carrying the tag instead of a delivery.
    pub(crate) dropped: Option<Dropped>,
}

impl RawDelivery {
    /// A delivery read whole in place, in channel generation `generation`.
    #[inline]
    pub(crate) fn whole(delivery: amqp_codec::Delivery, generation: u64) -> Self {
        Self {
            message: Received::Whole(delivery),
            generation,
        }
    }

    /// A delivery put together from its frames, in channel generation `generation`.
    pub(crate) fn assembled(parts: DeliveryParts, generation: u64) -> Self {
        Self {
            message: Received::Assembled(Box::new(parts)),
            generation,
        }
    }

    /// The channel-scoped tag to settle it with.
    #[inline]
    pub(crate) fn delivery_tag(&self) -> u64 {
        match &self.message {
            Received::Whole(d) => d.delivery_tag(),
            Received::Assembled(p) => p.delivery_tag,
        }
    }

    /// The tag of the consumer it was delivered to.
    #[inline]
    pub(crate) fn consumer_tag(&self) -> &[u8] {
        match &self.message {
            Received::Whole(d) => d.consumer_tag(),
            Received::Assembled(p) => p.consumer_tag.as_bytes(),
        }
    }

    /// Its fields, owned: a whole delivery's strings, properties and body share its bytes
    /// (one reference count each).
    pub(crate) fn into_parts(self) -> DeliveryParts {
        match self.message {
            Received::Whole(d) => {
                let method = d.view().to_method();
                DeliveryParts {
                    delivery_tag: method.delivery_tag,
                    redelivered: method.redelivered,
                    exchange: method.exchange,
                    routing_key: method.routing_key,
                    consumer_tag: method.consumer_tag,
                    properties: d.to_properties(),
                    body: d.body_bytes(),
                    dropped: None,
                }
            }
            Received::Assembled(parts) => *parts,
        }
    }
}

/// Why a delivery's content was dropped, and how large it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Dropped {
    /// The body size its header declared.
    pub(crate) body_size: u64,
    /// Why it was not kept.
    pub(crate) reason: DiscardReason,
}

/// A consumer's buffer.
#[derive(Debug)]
pub(crate) struct ConsumerSlot {
    /// Deliveries received and not yet taken by the application.
    queue: VecDeque<RawDelivery>,
    /// Bound on `queue`; at it, the connection stops reading the socket.
    capacity: usize,
    /// The application's task waiting for the next delivery, woken through the events.
    waiter: Option<WaiterId>,
    /// Set when the consumer ended: the stream yields what is buffered, then this (if an
    /// error), then ends.
    end: Option<Option<Error>>,
    /// Whether the broker considers its deliveries acknowledged on sending (no-ack): then
    /// they wait for no settlement.
    no_ack: bool,
}

impl ConsumerSlot {
    pub(crate) fn new(capacity: usize, no_ack: bool) -> Self {
        Self {
            queue: VecDeque::new(),
            capacity: capacity.max(1),
            waiter: None,
            end: None,
            no_ack,
        }
    }

    /// True for a no-ack consumer.
    pub(crate) fn no_ack(&self) -> bool {
        self.no_ack
    }

    /// Buffers a delivery (waking the stream's task). Returns true when the buffer is now
    /// full.
    #[inline]
    pub(crate) fn push(&mut self, delivery: RawDelivery, events: &mut Events) -> bool {
        self.queue.push_back(delivery);
        events.wake(self.waiter.take());
        self.is_full()
    }

    pub(crate) fn is_full(&self) -> bool {
        self.queue.len() >= self.capacity
    }

    /// Ends the stream: `None` for a clean end (cancelled by the application), `Some` for a
    /// failure (cancelled by the broker, channel or connection closed).
    pub(crate) fn end(&mut self, error: Option<Error>, events: &mut Events) {
        if self.end.is_none() {
            self.end = Some(error);
        }
        events.wake(self.waiter.take());
    }

    /// Drops what is buffered (the connection it came on is gone).
    pub(crate) fn clear(&mut self) {
        self.queue.clear();
    }

    pub(crate) fn is_ended(&self) -> bool {
        self.end.is_some()
    }

    /// Next delivery, the end, or pending (then `waiter` is woken when that changes).
    /// `was_full` tells the caller that the buffer just dropped below its bound (so the
    /// connection may resume reading).
    pub(crate) fn poll_next(
        &mut self,
        waiter: WaiterId,
    ) -> (Poll<Option<Result<RawDelivery, Error>>>, bool) {
        let was_full = self.is_full();
        if let Some(d) = self.queue.pop_front() {
            return (Poll::Ready(Some(Ok(d))), was_full);
        }
        match &mut self.end {
            Some(end) => (Poll::Ready(end.take().map(Err)), false),
            None => {
                self.waiter = Some(waiter);
                (Poll::Pending, false)
            }
        }
    }

    /// Moves up to `max` buffered deliveries into `into`, oldest first.
    pub(crate) fn take_up_to(&mut self, into: &mut VecDeque<RawDelivery>, max: usize) {
        let n = max.min(self.queue.len());
        into.extend(self.queue.drain(..n));
    }

    /// Takes what is buffered, without waiting (a dropped consumer hands it back).
    pub(crate) fn take_buffered(&mut self) -> impl Iterator<Item = RawDelivery> + '_ {
        self.queue.drain(..)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_waiting_delivery_stays_small() {
        // Every delivery waiting in a consumer's buffer is one: at 1 000 channels with 40
        // each in flight, 200 bytes each made 8 MB of buffers.
        let size = std::mem::size_of::<RawDelivery>();
        assert!(size <= 96, "RawDelivery is {size} bytes");
    }
}
