//! Messages arriving on a channel: deliveries into their consumer's buffer, basic.return into
//! the confirm of its publish, and what becomes of a message the client dropped or a delivery
//! nobody on this channel consumes.
//!
//! No message may stall its queue: one whose content the client will not keep (over
//! `Limits::max_message_size`) or cannot read (properties that do not parse) still reaches its
//! consumer, as an unreadable delivery the application can reject; one for a consumer the
//! channel does not know is handed back to the broker when that is safe, and counted.

use amqp_codec::methods::BasicReject;
use amqp_codec::{BasicProperties, Content, Discarded, Method, ReplyCode};
use bytes::Bytes;

use super::{ChannelState, Effect, Io, Reply, Violation};
use crate::proto::ReturnedMessage;
use crate::proto::consumers::{DeliveryParts, Dropped, RawDelivery};

/// What a channel did with deliveries it could not simply hand to a consumer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct DeliveryTally {
    /// Deliveries whose content was dropped (too large, unreadable properties) and handed to
    /// the application as unreadable.
    pub(crate) unreadable: u64,
    /// Deliveries no consumer took (ended, dropped or unknown), rejected with requeue.
    pub(crate) orphans_requeued: u64,
    /// Deliveries for a consumer the channel did not know, left alone because they may have
    /// been no-ack deliveries (which the broker does not let a client reject).
    pub(crate) orphans_ignored: u64,
}

impl DeliveryTally {
    /// Adds `other`'s counts to these.
    pub(crate) fn add(&mut self, other: &Self) {
        self.unreadable += other.unreadable;
        self.orphans_requeued += other.orphans_requeued;
        self.orphans_ignored += other.orphans_ignored;
    }
}

impl ChannelState {
    pub(super) fn handle_content(
        &mut self,
        content: Content,
        io: &mut Io<'_>,
    ) -> Result<Effect, Violation> {
        match content.method {
            Method::BasicDeliver(d) => {
                let parts = DeliveryParts {
                    delivery_tag: d.delivery_tag,
                    redelivered: d.redelivered,
                    exchange: d.exchange,
                    routing_key: d.routing_key,
                    consumer_tag: d.consumer_tag,
                    properties: content.header.properties,
                    body: Bytes::from(content.body),
                    dropped: None,
                };
                Ok(self.deliver(RawDelivery::assembled(parts, self.generation), io))
            }
            Method::BasicReturn(r) => {
                self.returned(ReturnedMessage {
                    reply_code: ReplyCode(r.reply_code),
                    reply_text: r.reply_text,
                    exchange: r.exchange,
                    routing_key: r.routing_key,
                    properties: content.header.properties,
                    body: Bytes::from(content.body),
                    content_dropped: None,
                });
                Ok(Effect::None)
            }
            _ => {
                let generation = self.generation;
                self.complete(Reply::Content(content, generation), io)
            }
        }
    }

    /// A message whose content the assembler dropped: a delivery goes to its consumer as
    /// unreadable, a basic.get's reply likewise, a return to its publish's confirm.
    pub(super) fn handle_discarded(
        &mut self,
        discarded: Discarded,
        io: &mut Io<'_>,
    ) -> Result<Effect, Violation> {
        let dropped = Dropped {
            body_size: discarded.body_size,
            reason: discarded.reason.clone(),
        };
        tracing::warn!(channel = self.id, method = discarded.method.name(), reason = %dropped.reason, "message content dropped");
        match discarded.method {
            Method::BasicDeliver(d) => {
                self.tally.unreadable += 1;
                let parts = DeliveryParts {
                    delivery_tag: d.delivery_tag,
                    redelivered: d.redelivered,
                    exchange: d.exchange,
                    routing_key: d.routing_key,
                    consumer_tag: d.consumer_tag,
                    properties: BasicProperties::default(),
                    body: Bytes::new(),
                    dropped: Some(dropped),
                };
                Ok(self.deliver(RawDelivery::assembled(parts, self.generation), io))
            }
            Method::BasicReturn(r) => {
                self.returned(ReturnedMessage {
                    reply_code: ReplyCode(r.reply_code),
                    reply_text: r.reply_text,
                    exchange: r.exchange,
                    routing_key: r.routing_key,
                    properties: BasicProperties::default(),
                    body: Bytes::new(),
                    content_dropped: Some(dropped.reason),
                });
                Ok(Effect::None)
            }
            method => {
                if matches!(method, Method::BasicGetOk(_)) {
                    self.tally.unreadable += 1;
                }
                let generation = self.generation;
                let discarded = Discarded {
                    method,
                    ..discarded
                };
                self.complete(Reply::Discarded(discarded, generation), io)
            }
        }
    }

    /// Hands a delivery to its consumer's buffer, or settles it if no consumer takes it.
    #[inline]
    pub(crate) fn deliver(&mut self, raw: RawDelivery, io: &mut Io<'_>) -> Effect {
        if let Some(slot) = self.consumers.get_mut(raw.consumer_tag())
            && !slot.is_ended()
        {
            self.unsettled.delivered(raw.delivery_tag(), !slot.no_ack());
            self.messages.delivered += 1;
            return if slot.push(raw, io.events) {
                Effect::ConsumerFull
            } else {
                Effect::None
            };
        }
        let tag = raw.consumer_tag();
        let no_ack = match self.consumers.get(tag) {
            Some(ended) => Some(ended.no_ack()),
            None => self.detached.get(tag).copied(),
        };
        self.orphan(&raw, no_ack, io);
        Effect::None
    }

    /// A delivery no consumer takes: its consumer ended, was dropped by the application, or
    /// is unknown. Rejected with requeue (so another consumer gets it and it never waits
    /// unacknowledged until the channel closes), unless it may be a no-ack delivery, which
    /// the broker counts as settled and would not let us reject.
    fn orphan(&mut self, raw: &RawDelivery, no_ack: Option<bool>, io: &mut Io<'_>) {
        // Settled here and now (or no-ack), so it holds up no coalescing of acks.
        let delivery_tag = raw.delivery_tag();
        self.unsettled.delivered(delivery_tag, false);
        match no_ack {
            // A no-ack consumer's: the broker has already forgotten it.
            Some(true) => {}
            // Unknown, on a channel that had no-ack consumers: perhaps unacknowledged at the
            // broker and never seen by the application, so no multiple ack may cover it.
            None if self.any_no_ack => {
                self.unsettled.give_up();
                self.tally.orphans_ignored += 1;
                tracing::warn!(
                    channel = self.id,
                    consumer_tag = %String::from_utf8_lossy(raw.consumer_tag()),
                    delivery_tag,
                    "delivery for a consumer this channel does not know, left alone (it may be \
                     a no-ack delivery)"
                );
            }
            Some(false) | None => {
                let reject = Method::BasicReject(BasicReject {
                    delivery_tag,
                    requeue: true,
                });
                io.send(self.id, &reject);
                self.tally.orphans_requeued += 1;
                if no_ack.is_none() {
                    tracing::warn!(
                        channel = self.id,
                        consumer_tag = %String::from_utf8_lossy(raw.consumer_tag()),
                        delivery_tag,
                        "delivery for a consumer this channel does not know, requeued"
                    );
                }
            }
        }
    }

    /// A basic.return: in confirm mode it travels with its publish's confirm, otherwise it
    /// waits (bounded) for the application.
    fn returned(&mut self, ret: ReturnedMessage) {
        self.messages.returned += 1;
        let unclaimed = match &mut self.confirms {
            Some(confirms) => confirms.attach_return(Box::new(ret)).err().map(|b| *b),
            None => Some(ret),
        };
        if let Some(ret) = unclaimed {
            if self.returns.len() >= self.max_returns {
                tracing::warn!(
                    channel = self.id,
                    "too many returned messages held; dropping the oldest"
                );
                self.returns.pop_front();
            }
            self.returns.push_back(ret);
        }
    }
}
