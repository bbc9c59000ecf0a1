//! [`UnreadableDelivery`]: a delivery whose content the client dropped, handed to the
//! application (inside [`Error::UnreadableDelivery`]) with what it needs to settle it.
//!
//! It lives apart from the handles: errors carry it, and errors are below the handles, so it
//! settles through a small trait the handles implement.

use std::fmt;
use std::sync::Arc;

use amqp_codec::methods::{BasicAck, BasicReject};
use amqp_codec::{DiscardReason, Method, ShortStr};

use crate::error::Error;

/// Settles a delivery of one channel opening by its tag (implemented by the handles' acker).
pub(crate) trait SettleByTag: Send + Sync {
    /// Sends `method` (an ack, nack or reject) for `delivery_tag`.
    fn settle(&self, delivery_tag: u64, method: &Method) -> Result<(), Error>;
    /// The channel number.
    fn channel(&self) -> u16;
}

/// A delivery whose content the client dropped: its body exceeded
/// [`Limits::max_message_size`](crate::Limits), or its properties do not parse. It arrives as
/// [`Error::UnreadableDelivery`] in its consumer's stream (or from `basic_get`), which goes on
/// afterwards: the connection and every channel stay up.
///
/// Settle it, or it stays unacknowledged (holding a prefetch slot) until its channel closes,
/// and then comes back: [`reject`](Self::reject) dead-letters it (to the queue's dead-letter
/// exchange, byte for byte as it was published, or drops it if the queue has none);
/// [`requeue`](Self::requeue) puts it back (for a limit you will raise); [`ack`](Self::ack)
/// drops it.
///
/// ```no_run
/// # async fn demo(mut consumer: amqp_client::Consumer) -> Result<(), amqp_client::Error> {
/// use amqp_client::Error;
/// while let Some(item) = consumer.recv().await {
///     match item {
///         Ok(delivery) => delivery.ack()?,
///         Err(Error::UnreadableDelivery(unreadable)) => unreadable.reject()?,
///         Err(other) => return Err(other),
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct UnreadableDelivery {
    /// The channel-scoped tag that settles it.
    pub delivery_tag: u64,
    /// True if the broker delivered this message before.
    pub redelivered: bool,
    /// The exchange it was published to.
    pub exchange: ShortStr,
    /// The routing key it was published with.
    pub routing_key: ShortStr,
    /// The consumer it was delivered to (empty for basic.get).
    pub consumer_tag: ShortStr,
    /// The body size its content header declared.
    pub body_size: u64,
    /// Why its content was dropped.
    pub reason: DiscardReason,
    /// How to settle it: the channel it came on, by tag (a trait object, so that errors do
    /// not depend on the handles).
    pub(crate) settler: Arc<dyn SettleByTag>,
}

impl UnreadableDelivery {
    /// Rejects it without requeue: the broker dead-letters it (or drops it if its queue has
    /// no dead-letter exchange).
    pub fn reject(&self) -> Result<(), Error> {
        self.settle(false)
    }

    /// Rejects it with requeue: the broker puts it back and delivers it again, to this
    /// consumer or another.
    pub fn requeue(&self) -> Result<(), Error> {
        self.settle(true)
    }

    /// Acknowledges it: the broker forgets it.
    pub fn ack(&self) -> Result<(), Error> {
        let ack = Method::BasicAck(BasicAck {
            delivery_tag: self.delivery_tag,
            multiple: false,
        });
        self.settler.settle(self.delivery_tag, &ack)
    }

    /// The channel number it arrived on.
    pub fn channel_id(&self) -> u16 {
        self.settler.channel()
    }

    fn settle(&self, requeue: bool) -> Result<(), Error> {
        let reject = Method::BasicReject(BasicReject {
            delivery_tag: self.delivery_tag,
            requeue,
        });
        self.settler.settle(self.delivery_tag, &reject)
    }
}

impl fmt::Debug for UnreadableDelivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnreadableDelivery")
            .field("delivery_tag", &self.delivery_tag)
            .field("redelivered", &self.redelivered)
            .field("exchange", &self.exchange)
            .field("routing_key", &self.routing_key)
            .field("consumer_tag", &self.consumer_tag)
            .field("body_size", &self.body_size)
            .field("reason", &self.reason)
            .field("channel", &self.settler.channel())
            .finish()
    }
}

impl fmt::Display for UnreadableDelivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "delivery {} on channel {} (exchange {:?}, routing key {:?}) cannot be read: {}",
            self.delivery_tag,
            self.settler.channel(),
            self.exchange,
            self.routing_key,
            self.reason
        )
    }
}
