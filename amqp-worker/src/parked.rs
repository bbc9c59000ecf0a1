//! Looking at a queue's messages without moving them: [`peek`], for the parking queue (and
//! the catch-all of delayed sends) behind `amqp-worker parked list` and `parked peek`.
//!
//! The messages are taken from the head with basic.get *without* ack on a channel of their
//! own and never settled; closing that channel at the end hands them all back, and RabbitMQ
//! puts requeued messages back in their original positions: nothing is lost or reordered. While
//! the look lasts they are unacknowledged (not in the ready count, not delivered to anyone
//! else), and afterwards they carry the `redelivered` flag; on a quorum queue each look counts
//! as a delivery (`x-delivery-count`).

use amqp_client::GetOptions;
use amqp_client::amqp_codec::{BasicProperties, ReplyCode};
use amqp_client::{Connection, QueueDeclareOptions};
use bytes::Bytes;

use crate::error::WorkerError;

/// One message seen by [`peek`].
#[derive(Debug, Clone)]
pub struct Peeked {
    /// Its position from the head of the queue, 1 for the first.
    pub position: u64,
    /// The exchange it was last published to.
    pub exchange: String,
    /// Its routing key.
    pub routing_key: String,
    /// Its properties and headers (`x-last-error`, `x-attempts`, `x-park-reason`, ...).
    pub properties: BasicProperties,
    /// Its body.
    pub body: Bytes,
}

impl Peeked {
    /// The message id, if it has one.
    pub fn message_id(&self) -> Option<String> {
        self.properties
            .message_id()
            .and_then(|s| s.as_str().map(str::to_owned))
    }
}

/// What [`peek`] saw.
#[derive(Debug, Clone, Default)]
pub struct PeekResult {
    /// Ready messages in the queue when the look started.
    pub waiting: u32,
    /// How many were looked at.
    pub scanned: u64,
    /// Those kept by the filter, in queue order.
    pub kept: Vec<Peeked>,
}

/// Looks at the messages of `queue` from its head without moving them (see the module docs):
/// at most the number waiting when it starts, stopping once `limit` were kept. `keep` chooses
/// which are returned (the others are only counted). A missing queue is
/// [`WorkerError::Missing`].
pub async fn peek(
    conn: &Connection,
    queue: &str,
    limit: usize,
    mut keep: impl FnMut(&Peeked) -> bool,
) -> Result<PeekResult, WorkerError> {
    let channel = conn.open_channel().await?;
    let passive = QueueDeclareOptions::default().with_passive();
    let waiting = channel
        .queue_declare(queue, passive)
        .await
        .map_err(|source| {
            if source.reply_code() == Some(ReplyCode::NOT_FOUND) {
                WorkerError::Missing {
                    what: format!("queue '{queue}'"),
                    source,
                }
            } else {
                WorkerError::Client(source)
            }
        })?
        .message_count;
    let mut out = PeekResult {
        waiting,
        ..PeekResult::default()
    };
    while out.scanned < u64::from(waiting) && out.kept.len() < limit {
        // Never acked: the channel's close below hands every one back.
        let Some(got) = channel.basic_get(queue, GetOptions::default()).await? else {
            break;
        };
        out.scanned += 1;
        let d = got.delivery;
        let seen = Peeked {
            position: out.scanned,
            exchange: d.exchange.to_string(),
            routing_key: d.routing_key.to_string(),
            properties: d.properties.clone(),
            body: d.body.clone(),
        };
        if keep(&seen) {
            out.kept.push(seen);
        }
    }
    channel.close().await?;
    Ok(out)
}
