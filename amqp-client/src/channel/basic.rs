//! The `basic` class on the message path: publish, get, and settling deliveries by tag.

use amqp_codec::methods::{BasicAck, BasicGet, BasicNack, BasicPublish, BasicReject};
use amqp_codec::{BasicProperties, Method, ShortStr};
use bytes::Bytes;

use super::{Channel, IntoShortStr, short};
use crate::confirm::PublishConfirm;
use crate::error::Error;
use crate::message::{Acker, Delivery, GetMessage};
use crate::options::PublishOptions;
use crate::proto::{Dropped, Publish, RawDelivery, Reply};

impl Channel {
    /// Fetches one message, or `None` if the queue is empty.
    pub async fn basic_get(&self, queue: &str, no_ack: bool) -> Result<Option<GetMessage>, Error> {
        let method = Method::BasicGet(BasicGet {
            ticket: 0,
            queue: short(queue)?,
            no_ack,
        });
        match self.call(method).await? {
            Reply::Method(Method::BasicGetEmpty(_)) => Ok(None),
            Reply::Content(content, generation) => {
                let Method::BasicGetOk(ok) = content.method else {
                    return Err(Error::InvalidUse("unexpected reply to basic.get"));
                };
                let raw = RawDelivery {
                    delivery_tag: ok.delivery_tag,
                    redelivered: ok.redelivered,
                    exchange: ok.exchange,
                    routing_key: ok.routing_key,
                    consumer_tag: ShortStr::default(),
                    properties: content.header.properties,
                    body: Bytes::from(content.body),
                    generation,
                    dropped: None,
                };
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
                let raw = RawDelivery {
                    delivery_tag: ok.delivery_tag,
                    redelivered: ok.redelivered,
                    exchange: ok.exchange,
                    routing_key: ok.routing_key,
                    consumer_tag: ShortStr::default(),
                    properties: BasicProperties::default(),
                    body: Bytes::new(),
                    generation,
                    dropped: Some(Box::new(Dropped {
                        body_size: discarded.body_size,
                        reason: discarded.reason,
                    })),
                };
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
    /// future resolves with the broker's confirm in confirm mode, at once otherwise. The body
    /// is never copied on its way to the socket.
    pub async fn basic_publish(
        &self,
        exchange: impl IntoShortStr,
        routing_key: impl IntoShortStr,
        options: PublishOptions,
        properties: &BasicProperties,
        body: impl Into<Bytes>,
    ) -> Result<PublishConfirm, Error> {
        let method = Method::BasicPublish(BasicPublish {
            ticket: 0,
            exchange: exchange.into_short_str()?,
            routing_key: routing_key.into_short_str()?,
            mandatory: options.mandatory,
            immediate: options.immediate,
        });
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
            let outcome =
                shared.queue(|core| core.publish(id, epoch, &method, properties, body))?;
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
    pub fn basic_ack(&self, delivery_tag: u64, multiple: bool) -> Result<(), Error> {
        self.settle(
            delivery_tag,
            &Method::BasicAck(BasicAck {
                delivery_tag,
                multiple,
            }),
        )
    }

    /// Negatively acknowledges by tag.
    pub fn basic_nack(
        &self,
        delivery_tag: u64,
        multiple: bool,
        requeue: bool,
    ) -> Result<(), Error> {
        self.settle(
            delivery_tag,
            &Method::BasicNack(BasicNack {
                delivery_tag,
                multiple,
                requeue,
            }),
        )
    }

    /// Rejects by tag.
    pub fn basic_reject(&self, delivery_tag: u64, requeue: bool) -> Result<(), Error> {
        self.settle(
            delivery_tag,
            &Method::BasicReject(BasicReject {
                delivery_tag,
                requeue,
            }),
        )
    }

    fn settle(&self, tag: u64, method: &Method) -> Result<(), Error> {
        let ids = (self.inner.id, self.inner.epoch, None);
        crate::message::settle(self.shared(), ids, tag, method)
    }
}
