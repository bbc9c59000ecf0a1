//! Delayed send ([`Publisher::send_delayed`]) without silent loss.
//!
//! The message waits in a durable delay queue with a per-queue TTL (one queue per target and
//! delay: with a per-message `expiration` in one shared queue a long delay at the head would
//! hold back every shorter one behind it, as RabbitMQ expires messages only at the head). When
//! the delay ends the broker dead-letters it; that hop is not mandatory, so a target with no
//! route then would drop it. Hence:
//!
//! ```text
//!  send_delayed ──► amqp-worker.delayed.<target>.<key>.<delay>   (TTL = delay)
//!                      │ dead-letters, routing key kept
//!                      ▼
//!                   amqp-worker.delayed  (headers exchange, alternate-exchange ↓)
//!                      │ binding: amqp-worker-delay-target = "queue:<q>" ──► queue <q>
//!                      │ binding: amqp-worker-delay-target = "exchange:<x>" ──► exchange <x>
//!                      ▼ no binding matches (the target was deleted meanwhile)
//!                   amqp-worker.unroutable (fanout) ──► queue amqp-worker.unroutable
//! ```
//!
//! Before sending, the target is checked: a missing queue (default exchange) or exchange is
//! [`PublishError::NoTarget`], never a message that will be dropped later. The message carries
//! the [`DELAY_TARGET_HEADER`]; the worker-owned headers exchange routes it to its target by
//! that header through a binding the send makes (queue.bind or exchange.bind), and its
//! alternate exchange catches it if that binding is gone, i.e. the target was deleted during
//! the delay. The catch-all queue's depth is the `amqp_worker_delayed_unroutable_messages`
//! gauge of every worker.
//!
//! Limits: routing *inside* a target exchange is the target's business. If it exists but has
//! no binding for the routing key when the delay ends, RabbitMQ drops the message unless that
//! exchange has an `alternate-exchange` of its own (declare it with
//! `alternate-exchange = "amqp-worker.unroutable"` to catch those too); whether it will have a
//! matching binding later cannot be checked now. A target queue deleted and re-created during
//! the delay loses the binding the send made: the message lands in the catch-all queue.

use std::time::{Duration, Instant};

use amqp_client::BindOptions;
use amqp_client::amqp_codec::{BasicProperties, FieldTable, FieldValue, ReplyCode, ShortStr};
use amqp_client::{Channel, ExchangeDeclareOptions, ExchangeKind, QueueDeclareOptions};
use bytes::Bytes;

use crate::publisher::{PendingConfirm, PublishError, Publisher};

/// The worker-owned headers exchange delay queues dead-letter into.
pub const DELAYED_EXCHANGE: &str = "amqp-worker.delayed";
/// The alternate exchange of [`DELAYED_EXCHANGE`] (fanout).
pub const UNROUTABLE_EXCHANGE: &str = "amqp-worker.unroutable";
/// The queue that keeps delayed messages whose target was gone when their delay ended.
pub const UNROUTABLE_QUEUE: &str = "amqp-worker.unroutable";
/// The header that routes a delayed message to its target: `queue:<name>` or
/// `exchange:<name>` (RabbitMQ's headers exchange ignores headers starting with `x-`).
pub const DELAY_TARGET_HEADER: &str = "amqp-worker-delay-target";

/// How long a prepared route and delay queue are trusted before they are prepared again.
const PREPARED_FOR: Duration = Duration::from_secs(60);

fn table(entries: Vec<(&'static str, FieldValue)>) -> FieldTable {
    entries
        .into_iter()
        .map(|(k, v)| (ShortStr::from_static(k), v))
        .collect()
}

fn durable_queue() -> QueueDeclareOptions {
    QueueDeclareOptions::durable()
}

fn durable_exchange() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions::durable()
}

/// The [`DELAY_TARGET_HEADER`] value for a target.
fn target_label(exchange: &str, routing_key: &str) -> String {
    if exchange.is_empty() {
        format!("queue:{routing_key}")
    } else {
        format!("exchange:{exchange}")
    }
}

/// The delay queue of a delayed send: `amqp-worker.delayed.<exchange>.<routing key>.<delay>`
/// (`amq.default` for the default exchange), or a hash of the target when that is too long.
pub fn delay_queue_name(exchange: &str, routing_key: &str, delay: Duration) -> String {
    let target = if exchange.is_empty() {
        "amq.default"
    } else {
        exchange
    };
    let label = crate::config::format_duration(delay);
    let name = format!("amqp-worker.delayed.{target}.{routing_key}.{label}");
    if name.len() <= ShortStr::MAX_LEN {
        return name;
    }
    // FNV-1a: stable across builds, unlike the standard library's hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in exchange.bytes().chain([0]).chain(routing_key.bytes()) {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("amqp-worker.delayed.{hash:016x}.{label}")
}

/// Declares the worker-owned route of delayed messages: the headers exchange, its
/// alternate exchange and the catch-all queue. Idempotent.
async fn declare_route(ch: &Channel) -> Result<(), amqp_client::Error> {
    ch.exchange_declare(
        UNROUTABLE_EXCHANGE,
        ExchangeKind::Fanout,
        durable_exchange(),
    )
    .await?;
    ch.queue_declare(UNROUTABLE_QUEUE, durable_queue()).await?;
    ch.queue_bind(
        UNROUTABLE_QUEUE,
        UNROUTABLE_EXCHANGE,
        "",
        BindOptions::default(),
    )
    .await?;
    ch.exchange_declare(
        DELAYED_EXCHANGE,
        ExchangeKind::Headers,
        durable_exchange().with_arguments(table(vec![(
            "alternate-exchange",
            UNROUTABLE_EXCHANGE.into(),
        )])),
    )
    .await
}

impl Publisher {
    /// Checks that the target of a delayed send exists (the queue `routing_key` for the
    /// default exchange, else `exchange`), binds it to [`DELAYED_EXCHANGE`] and declares the
    /// delay queue; after this, [`send_delayed`](Self::send_delayed) only publishes. Done by
    /// `send_delayed` itself, at most once a minute per target and delay; call it first to
    /// learn of a missing target before sending anything.
    pub async fn prepare_delayed(
        &self,
        exchange: &str,
        routing_key: &str,
        delay: Duration,
    ) -> Result<(), PublishError> {
        let queue = delay_queue_name(exchange, routing_key, delay);
        let fresh = self
            .delay_queues
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&queue)
            .is_some_and(|at| at.elapsed() < PREPARED_FOR);
        if fresh {
            return Ok(());
        }
        // Its own channel: a 404 from a passive declare closes the channel it came on.
        let ch = self.conn.open_channel().await?;
        let result = prepare_on(&ch, &queue, exchange, routing_key, delay).await;
        if result.is_ok() {
            let _ = ch.close().await;
            self.delay_queues
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(queue, Instant::now());
        }
        result
    }

    /// Sends a message that reaches `exchange` with `routing_key` after `delay` (see the
    /// module docs for how, and for the limits); fails with [`PublishError::NoTarget`] if the
    /// target does not exist now.
    pub async fn send_delayed(
        &self,
        exchange: &str,
        routing_key: &str,
        delay: Duration,
        properties: &BasicProperties,
        body: impl Into<Bytes>,
    ) -> Result<PendingConfirm, PublishError> {
        self.prepare_delayed(exchange, routing_key, delay).await?;
        let mut headers: Vec<(ShortStr, FieldValue)> = properties
            .headers()
            .map(|h| {
                h.iter()
                    .filter(|(k, _)| k.as_str() != Some(DELAY_TARGET_HEADER))
                    .collect()
            })
            .unwrap_or_default();
        headers.push((
            ShortStr::from_static(DELAY_TARGET_HEADER),
            target_label(exchange, routing_key).as_str().into(),
        ));
        let mut b = properties.to_builder();
        b.headers = Some(headers.into_iter().collect());
        let queue = delay_queue_name(exchange, routing_key, delay);
        self.send(
            "",
            &queue,
            &b.build()
                .expect("re-encoding valid properties with a new headers table cannot fail"),
            body,
        )
        .await
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
}

async fn prepare_on(
    ch: &Channel,
    queue: &str,
    exchange: &str,
    routing_key: &str,
    delay: Duration,
) -> Result<(), PublishError> {
    let failed = |what: String| move |source| PublishError::DelayQueue { what, source };
    declare_route(ch)
        .await
        .map_err(failed(format!("exchange '{DELAYED_EXCHANGE}'")))?;
    let (target, passive) = if exchange.is_empty() {
        let passive = QueueDeclareOptions::default().with_passive();
        let r = ch.queue_declare(routing_key, passive).await.map(drop);
        (format!("queue '{routing_key}'"), r)
    } else {
        let passive = ExchangeDeclareOptions::default().with_passive();
        let r = ch
            .exchange_declare(exchange, ExchangeKind::Direct, passive)
            .await;
        (format!("exchange '{exchange}'"), r)
    };
    passive.map_err(|source| {
        if source.reply_code() == Some(ReplyCode::NOT_FOUND) {
            PublishError::NoTarget {
                target: target.clone(),
                source,
            }
        } else {
            PublishError::DelayQueue {
                what: target.clone(),
                source,
            }
        }
    })?;
    let args = table(vec![
        ("x-match", "all".into()),
        (
            DELAY_TARGET_HEADER,
            target_label(exchange, routing_key).as_str().into(),
        ),
    ]);
    let bound = if exchange.is_empty() {
        ch.queue_bind(
            routing_key,
            DELAYED_EXCHANGE,
            "",
            BindOptions::default().with_arguments(args),
        )
        .await
    } else {
        ch.exchange_bind(
            exchange,
            DELAYED_EXCHANGE,
            "",
            BindOptions::default().with_arguments(args),
        )
        .await
    };
    bound.map_err(failed(format!(
        "the binding of {target} to '{DELAYED_EXCHANGE}'"
    )))?;
    let ttl = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
    let args = table(vec![
        ("x-message-ttl", FieldValue::I64(ttl)),
        ("x-expires", FieldValue::I64(ttl.saturating_add(600_000))),
        ("x-dead-letter-exchange", DELAYED_EXCHANGE.into()),
        ("x-dead-letter-routing-key", routing_key.into()),
    ]);
    ch.queue_declare(queue, durable_queue().with_arguments(args))
        .await
        .map_err(failed(format!("delay queue '{queue}'")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_queue_names_fit() {
        assert_eq!(
            delay_queue_name("", "jobs", Duration::from_secs(5)),
            "amqp-worker.delayed.amq.default.jobs.5s"
        );
        let long = "k".repeat(300);
        let n = delay_queue_name("x", &long, Duration::from_millis(1500));
        assert!(n.len() <= 255 && n.ends_with(".1500ms"), "{n}");
        assert_eq!(n, delay_queue_name("x", &long, Duration::from_millis(1500)));
        assert_eq!(target_label("", "jobs"), "queue:jobs");
        assert_eq!(target_label("uploads", "k"), "exchange:uploads");
    }
}
