//! [`Publisher`]: every publish is persistent (unless the properties say otherwise),
//! mandatory and confirmed. An unroutable message is [`PublishError::Unroutable`], a broker
//! nack is [`PublishError::Nacked`]: nothing is lost silently.
//!
//! Delayed send ([`Publisher::send_delayed`]) puts the message in a durable delay queue with a
//! per-queue TTL whose dead-letter exchange and routing key are the target's. One queue per
//! (target, delay) pair: with a per-message `expiration` in one shared queue, a message with a
//! long delay at the head would hold back every shorter one behind it (RabbitMQ only expires
//! messages at the head of a queue). The delay queues expire themselves (`x-expires`) when
//! unused for the delay plus ten minutes.
//!
//! Caveat: routing to the target happens when the delay ends, by dead-lettering, which is not
//! mandatory; a target exchange with no matching queue at that moment drops the message.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use amqp_client::amqp_codec::{BasicProperties, FieldTable, FieldValue, ShortStr};
use amqp_client::{
    Channel, Confirmation, Connection, PublishConfirm, PublishOptions, QueueDeclareOptions,
};
use bytes::Bytes;

/// The queue that keeps delayed messages whose target was gone when their delay ended (see
/// the module docs); its depth is the `amqp_worker_delayed_unroutable_messages` gauge.
pub const UNROUTABLE_QUEUE: &str = "amqp-worker.unroutable";

/// Why a publish did not reach a queue.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The broker could not route the message (basic.return, usually 312 NO_ROUTE).
    #[error(
        "the message to exchange '{exchange}' with routing key '{routing_key}' was returned as unroutable ({reply_code} {reply_text})"
    )]
    Unroutable {
        /// The exchange published to.
        exchange: String,
        /// The routing key used.
        routing_key: String,
        /// The broker's code (312 NO_ROUTE).
        reply_code: u16,
        /// The broker's text.
        reply_text: String,
    },
    /// The broker refused responsibility for the message (basic.nack).
    #[error(
        "the broker nacked the message to exchange '{exchange}' with routing key '{routing_key}'"
    )]
    Nacked {
        /// The exchange published to.
        exchange: String,
        /// The routing key used.
        routing_key: String,
    },
    /// Declaring the delay queue of a delayed send failed.
    #[error("declaring delay queue '{queue}' failed: {source}")]
    DelayQueue {
        /// The delay queue.
        queue: String,
        /// What the client said.
        source: amqp_client::Error,
    },
    /// The channel or connection failed.
    #[error(transparent)]
    Client(#[from] amqp_client::Error),
}

impl PublishError {
    /// True when the connection is gone (worth reconnecting and publishing again).
    pub fn is_connection_error(&self) -> bool {
        match self {
            Self::Client(e) | Self::DelayQueue { source: e, .. } => e.is_connection_error(),
            _ => false,
        }
    }

    /// True when the publishing channel is closed and a new one is needed.
    pub fn is_channel_error(&self) -> bool {
        match self {
            Self::Client(e) | Self::DelayQueue { source: e, .. } => e.is_channel_error(),
            _ => false,
        }
    }
}

/// A publish sent and not yet confirmed; [`wait`](Self::wait) for the broker's answer.
#[derive(Debug)]
#[must_use = "a publish is only known to be safe once its confirm was awaited"]
pub struct PendingConfirm {
    confirm: PublishConfirm,
    exchange: String,
    routing_key: String,
}

impl PendingConfirm {
    /// The broker's answer: `Ok` once it acked a routed message.
    pub async fn wait(self) -> Result<(), PublishError> {
        match self.confirm.await? {
            Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
            Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned)) => {
                Err(PublishError::Unroutable {
                    exchange: self.exchange,
                    routing_key: self.routing_key,
                    reply_code: returned.reply_code.0,
                    reply_text: String::from_utf8_lossy(&returned.reply_text).into_owned(),
                })
            }
            Confirmation::Nack(None) => Err(PublishError::Nacked {
                exchange: self.exchange,
                routing_key: self.routing_key,
            }),
        }
    }
}

/// A confirm-mode channel that publishes mandatory, persistent messages.
#[derive(Debug)]
pub struct Publisher {
    channel: Channel,
    /// Delay queues declared, and when (re-declared after a minute to renew `x-expires`).
    delay_queues: Mutex<HashMap<String, Instant>>,
}

impl Publisher {
    /// Opens a channel on `conn` and puts it in confirm mode.
    pub async fn open(conn: &Connection) -> Result<Self, PublishError> {
        let channel = conn.open_channel().await?;
        channel.confirm_select().await?;
        Ok(Self {
            channel,
            delay_queues: Mutex::new(HashMap::new()),
        })
    }

    /// True while the channel is open.
    pub fn is_open(&self) -> bool {
        self.channel.is_open()
    }

    /// Sends a message; await the returned [`PendingConfirm`] for the outcome. Many sends can
    /// be in flight before their confirms are awaited.
    pub async fn send(
        &self,
        exchange: &str,
        routing_key: &str,
        properties: &BasicProperties,
        body: impl Into<Bytes>,
    ) -> Result<PendingConfirm, PublishError> {
        let persistent;
        let properties = if properties.delivery_mode().is_none() {
            persistent = properties
                .to_builder()
                .with_delivery_mode(BasicProperties::PERSISTENT)
                .build();
            &persistent
        } else {
            properties
        };
        let options = PublishOptions {
            mandatory: true,
            ..PublishOptions::default()
        };
        let confirm = self
            .channel
            .basic_publish(exchange, routing_key, options, properties, body)
            .await?;
        Ok(PendingConfirm {
            confirm,
            exchange: exchange.to_owned(),
            routing_key: routing_key.to_owned(),
        })
    }

    /// Sends a message and waits for its confirm.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        properties: &BasicProperties,
        body: impl Into<Bytes>,
    ) -> Result<(), PublishError> {
        self.send(exchange, routing_key, properties, body)
            .await?
            .wait()
            .await
    }

    /// Sends a message that reaches `exchange` with `routing_key` after `delay` (see the
    /// module docs for how, and for the caveat).
    pub async fn send_delayed(
        &self,
        exchange: &str,
        routing_key: &str,
        delay: Duration,
        properties: &BasicProperties,
        body: impl Into<Bytes>,
    ) -> Result<PendingConfirm, PublishError> {
        let queue = delay_queue_name(exchange, routing_key, delay);
        self.declare_delay_queue(&queue, exchange, routing_key, delay)
            .await?;
        self.send("", &queue, properties, body).await
    }

    /// [`send_delayed`](Self::send_delayed) and wait for the confirm.
    pub async fn publish_delayed(
        &self,
        exchange: &str,
        routing_key: &str,
        delay: Duration,
        properties: &BasicProperties,
        body: impl Into<Bytes>,
    ) -> Result<(), PublishError> {
        self.send_delayed(exchange, routing_key, delay, properties, body)
            .await?
            .wait()
            .await
    }

    async fn declare_delay_queue(
        &self,
        queue: &str,
        exchange: &str,
        routing_key: &str,
        delay: Duration,
    ) -> Result<(), PublishError> {
        let fresh = self
            .delay_queues
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(queue)
            .is_some_and(|at| at.elapsed() < Duration::from_secs(60));
        if fresh {
            return Ok(());
        }
        let ttl = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
        let args: FieldTable = [
            ("x-message-ttl", FieldValue::I64(ttl)),
            ("x-expires", FieldValue::I64(ttl.saturating_add(600_000))),
            ("x-dead-letter-exchange", exchange.into()),
            ("x-dead-letter-routing-key", routing_key.into()),
        ]
        .into_iter()
        .map(|(k, v)| (ShortStr::from_static(k), v))
        .collect();
        let options = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        self.channel
            .queue_declare(queue, options, args)
            .await
            .map_err(|source| PublishError::DelayQueue {
                queue: queue.to_owned(),
                source,
            })?;
        self.delay_queues
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(queue.to_owned(), Instant::now());
        Ok(())
    }

    /// Closes the channel.
    pub async fn close(&self) -> Result<(), PublishError> {
        Ok(self.channel.close().await?)
    }
}

/// The delay queue of a delayed send: `amqp-worker.delay.<exchange>.<routing key>.<delay>`
/// (`amq.default` for the default exchange), or a hash of the target when that is too long.
pub fn delay_queue_name(exchange: &str, routing_key: &str, delay: Duration) -> String {
    let target = if exchange.is_empty() {
        "amq.default"
    } else {
        exchange
    };
    let label = crate::config::format_duration(delay);
    let name = format!("amqp-worker.delay.{target}.{routing_key}.{label}");
    if name.len() <= ShortStr::MAX_LEN {
        return name;
    }
    // FNV-1a: stable across builds, unlike the standard library's hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in exchange.bytes().chain([0]).chain(routing_key.bytes()) {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("amqp-worker.delay.{hash:016x}.{label}")
}

/// Persistent properties with a message id and the current time, the usual start for a task.
pub fn task_properties(message_id: &str) -> BasicProperties {
    let mut b = BasicProperties::builder().with_delivery_mode(BasicProperties::PERSISTENT);
    if let Ok(id) = ShortStr::try_from(message_id) {
        b = b.with_message_id(id);
    }
    b.with_timestamp(crate::retry::unix_now()).build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_queue_names_fit() {
        assert_eq!(
            delay_queue_name("", "jobs", Duration::from_secs(5)),
            "amqp-worker.delay.amq.default.jobs.5s"
        );
        let long = "k".repeat(300);
        let n = delay_queue_name("x", &long, Duration::from_millis(1500));
        assert!(n.len() <= 255 && n.ends_with(".1500ms"), "{n}");
        assert_eq!(n, delay_queue_name("x", &long, Duration::from_millis(1500)));
    }
}
