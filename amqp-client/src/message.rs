//! Messages the broker hands to the application: deliveries (from consumers and basic.get),
//! returned messages, and the outcome of a confirmed publish.
//!
//! Every string, table and body here is a slice of the connection's read buffer: receiving a
//! message allocates nothing.

use std::fmt;
use std::sync::Arc;

use amqp_codec::methods::{BasicAck, BasicNack, BasicReject};
use amqp_codec::{BasicProperties, Method, ShortStr};
use bytes::Bytes;

use crate::error::Error;
use crate::options::NackOptions;
use crate::proto::RawDelivery;
use crate::shared::Shared;
use crate::unreadable::{SettleByTag, UnreadableDelivery};

/// A message delivered to a consumer or fetched with basic.get.
///
/// Settle it with [`ack`](Self::ack), [`requeue`](Self::requeue), [`reject`](Self::reject)
/// (dead-letter) or [`nack`](Self::nack) (unless it was consumed with `no_ack`). Settling after its channel closed returns
/// [`Error::StaleDelivery`]: the broker has already requeued it, and its tag means nothing on
/// any other channel.
///
/// ```no_run
/// # async fn demo(mut consumer: amqp_client::Consumer) -> Result<(), amqp_client::Error> {
/// while let Some(delivery) = consumer.recv().await {
///     let delivery = delivery?;
///     match std::str::from_utf8(&delivery.body) {
///         Ok(text) => {
///             println!("{} (redelivered: {}): {text}", delivery.routing_key, delivery.redelivered);
///             delivery.ack()?;
///         }
///         // It will never read better: dead-letter it (or drop it) rather than requeue it.
///         Err(_) => delivery.reject()?,
///     }
/// }
/// # Ok(()) }
/// ```
pub struct Delivery {
    /// The channel-scoped tag used to settle the message.
    pub delivery_tag: u64,
    /// True if the broker delivered this message before (to this or another consumer).
    pub redelivered: bool,
    /// The exchange it was published to (empty for the default exchange).
    pub exchange: ShortStr,
    /// The routing key it was published with.
    pub routing_key: ShortStr,
    /// The consumer it was delivered to (empty for basic.get).
    pub consumer_tag: ShortStr,
    /// Content type, headers, delivery mode, message id and the other properties.
    pub properties: BasicProperties,
    /// The body, a slice of the read buffer.
    pub body: Bytes,
    /// How to settle it: the channel it came on, and which opening of that channel.
    pub(crate) acker: Acker,
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("delivery_tag", &self.delivery_tag)
            .field("redelivered", &self.redelivered)
            .field("exchange", &self.exchange)
            .field("routing_key", &self.routing_key)
            .field("consumer_tag", &self.consumer_tag)
            .field("properties", &self.properties)
            .field("body_len", &self.body.len())
            .field("channel", &self.acker.channel)
            .finish()
    }
}

impl Delivery {
    /// Acknowledges this message: the broker forgets it.
    pub fn ack(&self) -> Result<(), Error> {
        self.acker.send(
            self.delivery_tag,
            &Method::BasicAck(BasicAck {
                delivery_tag: self.delivery_tag,
                multiple: false,
            }),
        )
    }

    /// Acknowledges this message and every earlier unsettled one on its channel.
    pub fn ack_multiple(&self) -> Result<(), Error> {
        self.acker.send(
            self.delivery_tag,
            &Method::BasicAck(BasicAck {
                delivery_tag: self.delivery_tag,
                multiple: true,
            }),
        )
    }

    /// Negatively acknowledges it (and, with `multiple`, every earlier unsettled delivery of
    /// its channel): requeued or dead-lettered as `options` say.
    pub fn nack(&self, options: NackOptions) -> Result<(), Error> {
        let nack = BasicNack {
            delivery_tag: self.delivery_tag,
            multiple: options.multiple,
            requeue: options.requeue,
        };
        self.acker.send(self.delivery_tag, &Method::BasicNack(nack))
    }

    /// Puts it back in its queue, to be delivered again (basic.reject with requeue).
    pub fn requeue(&self) -> Result<(), Error> {
        self.reject_with(true)
    }

    /// Rejects it: the broker dead-letters it (to its queue's dead-letter exchange) or drops
    /// it if the queue has none.
    pub fn reject(&self) -> Result<(), Error> {
        self.reject_with(false)
    }

    fn reject_with(&self, requeue: bool) -> Result<(), Error> {
        let reject = BasicReject {
            delivery_tag: self.delivery_tag,
            requeue,
        };
        self.acker
            .send(self.delivery_tag, &Method::BasicReject(reject))
    }

    /// The channel number this delivery arrived on.
    pub fn channel_id(&self) -> u16 {
        self.acker.channel
    }

    /// A tracing span for handling this delivery: debug level, named `delivery`, with the
    /// consumer tag, delivery tag, exchange, routing key, channel and redelivered flag. Made
    /// only when called, so a delivery that is not traced costs nothing; enter it (or
    /// `instrument` the handling future with it) so that what the handler logs carries them.
    ///
    /// ```no_run
    /// # async fn demo(mut consumer: amqp_client::Consumer) -> Result<(), amqp_client::Error> {
    /// while let Some(delivery) = consumer.recv().await {
    ///     let delivery = delivery?;
    ///     let _span = delivery.span().entered();
    ///     tracing::info!(bytes = delivery.body.len(), "handling");
    ///     delivery.ack()?;
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// With the feature `trace-context`, the span also has the `trace_id` of the message's
    /// `traceparent` header, when it has a valid one.
    pub fn span(&self) -> tracing::Span {
        let span = tracing::debug_span!(
            "delivery",
            consumer_tag = %self.consumer_tag,
            delivery_tag = self.delivery_tag,
            exchange = %self.exchange,
            routing_key = %self.routing_key,
            channel = self.acker.channel,
            redelivered = self.redelivered,
            trace_id = tracing::field::Empty,
        );
        #[cfg(feature = "trace-context")]
        if !span.is_disabled()
            && let Some(ctx) = self.trace_context()
        {
            span.record("trace_id", ctx.trace_id_hex());
        }
        span
    }
}

/// Settles deliveries of one opening of one channel.
#[derive(Clone)]
pub(crate) struct Acker {
    /// The connection's shared state.
    pub(crate) shared: Arc<Shared>,
    /// The channel number.
    pub(crate) channel: u16,
    /// Which opening of that channel number: acks for an older opening are refused.
    pub(crate) epoch: u64,
    /// Which connection under that opening (recovery moves it on): acks from before a
    /// recovery are refused.
    pub(crate) generation: u64,
}

impl Acker {
    fn send(&self, delivery_tag: u64, method: &Method) -> Result<(), Error> {
        let ids = (self.channel, self.epoch, Some(self.generation));
        settle(&self.shared, ids, delivery_tag, method)
    }
}

impl fmt::Debug for Acker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Acker")
            .field("channel", &self.channel)
            .field("generation", &self.generation)
            .finish()
    }
}

impl SettleByTag for Acker {
    fn settle(&self, delivery_tag: u64, method: &Method) -> Result<(), Error> {
        self.send(delivery_tag, method)
    }

    fn channel(&self) -> u16 {
        self.channel
    }
}

/// Sends an ack, nack or reject for `delivery_tag` of (channel, opening, generation), and wakes
/// the driver to write it. Without a generation (a bare tag from the application) the
/// current one is assumed.
pub(crate) fn settle(
    shared: &Shared,
    (channel, epoch, generation): (u16, u64, Option<u64>),
    delivery_tag: u64,
    method: &Method,
) -> Result<(), Error> {
    shared.queue(|core| {
        let generation = generation
            .or_else(|| core.generation(channel, epoch))
            .unwrap_or_default();
        core.settle(channel, epoch, generation, delivery_tag, method)
    })
}

impl Delivery {
    /// A delivery as the connection received it, with what settles it; an
    /// [`Error::UnreadableDelivery`] if the client dropped its content.
    pub(crate) fn from_raw(raw: RawDelivery, mut acker: Acker) -> Result<Self, Error> {
        acker.generation = raw.generation;
        let parts = raw.into_parts();
        if let Some(dropped) = parts.dropped {
            return Err(Error::UnreadableDelivery(Box::new(UnreadableDelivery {
                delivery_tag: parts.delivery_tag,
                redelivered: parts.redelivered,
                exchange: parts.exchange,
                routing_key: parts.routing_key,
                consumer_tag: parts.consumer_tag,
                body_size: dropped.body_size,
                reason: dropped.reason,
                settler: Arc::new(acker),
            })));
        }
        Ok(Self {
            delivery_tag: parts.delivery_tag,
            redelivered: parts.redelivered,
            exchange: parts.exchange,
            routing_key: parts.routing_key,
            consumer_tag: parts.consumer_tag,
            properties: parts.properties,
            body: parts.body,
            acker,
        })
    }
}

/// A message fetched with basic.get, with the broker's count of messages left.
#[derive(Debug)]
pub struct GetMessage {
    /// The message.
    pub delivery: Delivery,
    /// Messages left in the queue after this one.
    pub message_count: u32,
}
