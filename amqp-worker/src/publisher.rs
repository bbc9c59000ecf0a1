//! [`Publisher`]: every publish is persistent (unless the properties say otherwise),
//! mandatory and confirmed, on the client's [`ReliablePublisher`]: a nack, or a channel the
//! broker closed, sends the message again, and (for [`Publisher::open`]) so does a connection
//! lost before the confirm, once recovery brought it back. An unroutable message is
//! [`PublishError::Unroutable`], a message the broker kept refusing [`PublishError::Nacked`]:
//! nothing is lost silently.
//!
//! Delayed send ([`Publisher::send_delayed`]) is in [`crate::delayed`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use amqp_client::amqp_codec::{BasicProperties, ShortStr};
use amqp_client::{Connection, PublishFailure, PublishReceipt, PublisherConfig, ReliablePublisher};
use bytes::Bytes;

pub use crate::delayed::{
    DELAY_TARGET_HEADER, DELAYED_EXCHANGE, UNROUTABLE_EXCHANGE, UNROUTABLE_QUEUE, delay_queue_name,
};

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
    /// The broker refused responsibility for the message (basic.nack), each time it was
    /// sent.
    #[error(
        "the broker nacked the message to exchange '{exchange}' with routing key '{routing_key}'"
    )]
    Nacked {
        /// The exchange published to.
        exchange: String,
        /// The routing key used.
        routing_key: String,
    },
    /// Declaring the delay queue of a delayed send, or its route to the target, failed.
    #[error("declaring {what} for a delayed send failed: {source}")]
    DelayQueue {
        /// The delay queue or route (`delay queue '...'`).
        what: String,
        /// What the client said.
        source: amqp_client::Error,
    },
    /// The target of a delayed send does not exist (checked before sending): the message
    /// would have nowhere to go when its delay ends.
    #[error("the delayed message's target {target} does not exist ({source})")]
    NoTarget {
        /// `queue 'name'` or `exchange 'name'`.
        target: String,
        /// What the broker said (404 NOT_FOUND).
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
            Self::Client(e)
            | Self::DelayQueue { source: e, .. }
            | Self::NoTarget { source: e, .. } => e.is_connection_error(),
            _ => false,
        }
    }

    /// True when the publishing channel is closed and a new one is needed. (A delayed send's
    /// checks run on channels of their own: their refusals leave it open.)
    pub fn is_channel_error(&self) -> bool {
        match self {
            Self::Client(e) => e.is_channel_error(),
            _ => false,
        }
    }
}

/// A publish sent and not yet confirmed; [`wait`](Self::wait) for the broker's answer.
#[derive(Debug)]
#[must_use = "a publish is only known to be safe once its confirm was awaited"]
pub struct PendingConfirm {
    receipt: PublishReceipt,
    exchange: String,
    routing_key: String,
}

impl PendingConfirm {
    /// The broker's answer: `Ok` once it acked a routed message.
    pub async fn wait(self) -> Result<(), PublishError> {
        let failure = match self.receipt.await {
            Ok(()) => return Ok(()),
            Err(failure) => failure,
        };
        Err(match failure {
            PublishFailure::Unroutable {
                reply_code,
                reply_text,
            } => PublishError::Unroutable {
                exchange: self.exchange,
                routing_key: self.routing_key,
                reply_code,
                reply_text,
            },
            PublishFailure::RetriesExhausted {
                last_error: Some(err),
                ..
            }
            | PublishFailure::Failed(err) => PublishError::Client(err),
            // Nacks only, or an outcome this version does not know: not safe either way.
            PublishFailure::RetriesExhausted { .. } => PublishError::Nacked {
                exchange: self.exchange,
                routing_key: self.routing_key,
            },
            _ => PublishError::Client(amqp_client::Error::ConnectionLost),
        })
    }
}

/// A confirm-mode channel that publishes mandatory, persistent messages, each kept until
/// confirmed and sent again after a nack (see the module docs).
///
/// ```no_run
/// use amqp_worker::{Publisher, task_properties};
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let conn = amqp_client::Connection::connect("amqp://guest:guest@127.0.0.1:5672/%2f").await?;
/// let publisher = Publisher::open(&conn).await?;
/// // One at a time: back once the broker confirmed it (and an unroutable task is an error).
/// publisher.publish("", "thumbnails", &task_properties("img-1"), "img-1.png").await?;
/// // Many in flight, their confirms awaited afterwards.
/// let mut pending = Vec::new();
/// for i in 2..=100 {
///     let id = format!("img-{i}");
///     let body = format!("{id}.png");
///     pending.push(publisher.send("", "thumbnails", &task_properties(&id), body).await?);
/// }
/// for confirm in pending {
///     confirm.wait().await?;
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Publisher {
    /// The client's at-least-once publisher: the unconfirmed messages and their retries.
    pub(crate) inner: ReliablePublisher,
    /// The connection, for the short-lived channels of delayed sends' checks.
    pub(crate) conn: Connection,
    /// Delayed routes and queues prepared, and when (prepared again after a minute, which
    /// re-checks the target and renews the delay queue's `x-expires`).
    pub(crate) delay_queues: Mutex<HashMap<String, Instant>>,
}

impl Publisher {
    /// Opens a confirm-mode channel on `conn`. With the connection's automatic recovery on,
    /// a message whose confirm was lost with the connection is sent again once it recovered
    /// (it may then arrive twice; see [`ReliablePublisher`]).
    pub async fn open(conn: &Connection) -> Result<Self, PublishError> {
        Self::open_with(conn, PublisherConfig::default()).await
    }

    /// [`open`](Self::open) with the publisher's bounds and retry rules given (mandatory is
    /// always on).
    pub async fn open_with(
        conn: &Connection,
        config: PublisherConfig,
    ) -> Result<Self, PublishError> {
        Ok(Self::open_on(conn, config).await?)
    }

    /// [`open_with`](Self::open_with), with the client's error.
    pub(crate) async fn open_on(
        conn: &Connection,
        config: PublisherConfig,
    ) -> Result<Self, amqp_client::Error> {
        let inner = conn.reliable_publisher(config.with_mandatory(true)).await?;
        Ok(Self {
            inner,
            conn: conn.clone(),
            delay_queues: Mutex::new(HashMap::new()),
        })
    }

    /// True until closed.
    pub fn is_open(&self) -> bool {
        self.inner.is_open()
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
                .persistent()
                .build()
                .expect("valid properties with a delivery mode added stay valid");
            &persistent
        } else {
            properties
        };
        let receipt = self
            .inner
            .publish(exchange, routing_key, properties, body)
            .await?;
        Ok(PendingConfirm {
            receipt,
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

    /// Waits until every message sent is settled, then closes the channel.
    pub async fn close(&self) -> Result<(), PublishError> {
        Ok(self.inner.close().await?)
    }
}

/// Persistent properties with a message id and the current time, the usual start for a task.
///
/// A message id is a short string: an id longer than 255 bytes cannot be sent as one and is
/// left out (the task still goes; the worker then logs it without an id). Callers that build ids
/// from input check their length first, as `amqp-worker publish` does with `--id-prefix`.
pub fn task_properties(message_id: &str) -> BasicProperties {
    let mut b = BasicProperties::builder().persistent();
    if let Ok(id) = ShortStr::try_from(message_id) {
        b = b.with_message_id(id);
    }
    b.with_timestamp(crate::retry::unix_now())
        .build()
        .expect("no string setter was given a value that could fail")
}
