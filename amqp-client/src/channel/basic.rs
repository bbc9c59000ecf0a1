//! The `basic` class on the message path: publish, get, and settling deliveries by tag.

use amqp_codec::methods::{BasicAck, BasicGet, BasicNack, BasicReject};
use amqp_codec::{BasicProperties, Method, PublishArgs, ShortStr};
use bytes::Bytes;

use super::{Channel, IntoShortStr};
use crate::confirm::PublishConfirm;
use crate::error::Error;
use crate::message::{Acker, Delivery, GetMessage};
use crate::options::{GetOptions, NackOptions, PublishOptions};
use crate::proto::{DeliveryParts, Dropped, Publish, RawDelivery, Reply};

impl Channel {
    /// Fetches one message, or `None` if the queue is empty. Without
    /// [`GetOptions::no_ack`], settle it like a consumer's delivery.
    pub async fn basic_get(
        &self,
        queue: impl IntoShortStr,
        options: GetOptions,
    ) -> Result<Option<GetMessage>, Error> {
        let method = Method::BasicGet(BasicGet {
            ticket: 0,
            queue: queue.into_short_str()?,
            no_ack: options.no_ack,
        });
        match self.call(method).await? {
            Reply::Method(Method::BasicGetEmpty(_)) => Ok(None),
            Reply::Content(content, generation) => {
                let Method::BasicGetOk(ok) = content.method else {
                    return Err(Error::InvalidUse("unexpected reply to basic.get"));
                };
                let parts = DeliveryParts {
                    delivery_tag: ok.delivery_tag,
                    redelivered: ok.redelivered,
                    exchange: ok.exchange,
                    routing_key: ok.routing_key,
                    consumer_tag: ShortStr::default(),
                    properties: content.header.properties,
                    body: Bytes::from(content.body),
                    dropped: None,
                };
                let raw = RawDelivery::assembled(parts, generation);
                let delivery = Delivery::from_raw(raw, self.acker())?;
                Ok(Some(GetMessage {
                    delivery,
                    message_count: ok.message_count,
                }))
            }
            // Content the client dropped: an error carrying the tag, to reject it by.
            Reply::Discarded(discarded, generation) => {
                let Method::BasicGetOk(ok) = discarded.method else {
                    return Err(Error::InvalidUse("unexpected reply to basic.get"));
                };
                let parts = DeliveryParts {
                    delivery_tag: ok.delivery_tag,
                    redelivered: ok.redelivered,
                    exchange: ok.exchange,
                    routing_key: ok.routing_key,
                    consumer_tag: ShortStr::default(),
                    properties: BasicProperties::default(),
                    body: Bytes::new(),
                    dropped: Some(Dropped {
                        body_size: discarded.body_size,
                        reason: discarded.reason,
                    }),
                };
                let raw = RawDelivery::assembled(parts, generation);
                Delivery::from_raw(raw, self.acker()).map(|_| None)
            }
            Reply::Method(_) => Err(Error::InvalidUse("unexpected reply to basic.get")),
        }
    }

    pub(crate) fn acker(&self) -> Acker {
        Acker {
            shared: self.shared().clone(),
            channel: self.inner.id,
            epoch: self.inner.epoch,
            generation: 0,
        }
    }

    /// Publishes a message. Waits (without buffering more) while the broker blocks the
    /// connection, the channel's flow is off, or the outbound queue is full. The returned
    /// future resolves with the broker's confirm in confirm mode, at once otherwise.
    ///
    /// The names (`&str`, `String`, [`ShortStr`], bytes) are written straight into the frame
    /// and the body (`&'static str`, `String`, `Vec<u8>`, `Bytes`) is never copied on its way
    /// to the socket: a publish allocates nothing of its own (a mandatory publish in confirm
    /// mode keeps a copy of its names, to match its return).
    ///
    /// ```no_run
    /// # async fn demo(channel: amqp_client::Channel) -> Result<(), amqp_client::Error> {
    /// use amqp_client::{BasicProperties, PublishOptions};
    /// let props = BasicProperties::persistent();
    /// channel
    ///     .basic_publish("", "tasks", PublishOptions::default(), &props, "hello")
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn basic_publish(
        &self,
        exchange: impl AsRef<[u8]>,
        routing_key: impl AsRef<[u8]>,
        options: PublishOptions,
        properties: &BasicProperties,
        body: impl Into<Bytes>,
    ) -> Result<PublishConfirm, Error> {
        let args = PublishArgs {
            exchange: exchange.as_ref(),
            routing_key: routing_key.as_ref(),
            mandatory: options.mandatory,
            immediate: options.immediate,
        };
        let mut body = body.into();
        let (id, epoch) = (self.inner.id, self.inner.epoch);
        let shared = self.shared();
        let mut recovery_deadline = None;
        // Registering with the gate takes its lock, so it is done only once a publish has to
        // wait; then the check runs again before sleeping, so no wake-up in between is lost.
        let gate = shared.publish_gate().notified();
        tokio::pin!(gate);
        let mut armed = false;
        loop {
            let outcome = shared.queue(|core| core.publish(id, epoch, &args, properties, body))?;
            match outcome {
                Publish::Queued { seq, generation } => {
                    let ids = (id, epoch, generation);
                    return Ok(PublishConfirm::new(shared.clone(), ids, seq));
                }
                Publish::MustWait(back) => body = back,
                Publish::Recovering(back) => {
                    crate::recovery::wait_out(shared, &mut recovery_deadline).await?;
                    body = back;
                    continue;
                }
            }
            if armed {
                gate.as_mut().await;
                gate.set(shared.publish_gate().notified());
                armed = false;
            } else {
                gate.as_mut().enable();
                armed = true;
            }
        }
    }

    /// Acknowledges a delivery by tag (prefer [`Delivery::ack`], which cannot mix channels).
    pub fn basic_ack(&self, delivery_tag: u64) -> Result<(), Error> {
        let ack = BasicAck {
            delivery_tag,
            multiple: false,
        };
        self.settle(delivery_tag, &Method::BasicAck(ack))
    }

    /// Acknowledges a delivery and every earlier unsettled one of this channel, by tag.
    pub fn basic_ack_multiple(&self, delivery_tag: u64) -> Result<(), Error> {
        let ack = BasicAck {
            delivery_tag,
            multiple: true,
        };
        self.settle(delivery_tag, &Method::BasicAck(ack))
    }

    /// Negatively acknowledges by tag: requeued or dead-lettered as `options` say.
    pub fn basic_nack(&self, delivery_tag: u64, options: NackOptions) -> Result<(), Error> {
        let nack = BasicNack {
            delivery_tag,
            multiple: options.multiple,
            requeue: options.requeue,
        };
        self.settle(delivery_tag, &Method::BasicNack(nack))
    }

    /// Rejects by tag (one message: `options.multiple` does not apply).
    pub fn basic_reject(&self, delivery_tag: u64, options: NackOptions) -> Result<(), Error> {
        let reject = BasicReject {
            delivery_tag,
            requeue: options.requeue,
        };
        self.settle(delivery_tag, &Method::BasicReject(reject))
    }

    fn settle(&self, tag: u64, method: &Method) -> Result<(), Error> {
        let ids = (self.inner.id, self.inner.epoch, None);
        crate::message::settle(self.shared(), ids, tag, method)
    }
}
