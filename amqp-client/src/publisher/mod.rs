//! [`ReliablePublisher`]: at-least-once publishing, built in.
//!
//! Each message is kept (bounded in count and bytes) until the broker confirmed it; a nack, a
//! channel the broker closed, or a connection lost before the confirm sends it again (after
//! recovery, when the connection recovers), and the message's [`PublishReceipt`] resolves only
//! when the broker confirmed it, or when it definitively failed ([`PublishFailure`]).
//!
//! Layout: this file is the application's side (configuration, the publish call with its
//! back-pressure, the receipt); [`tracker`] is the task that owns the unconfirmed messages,
//! awaits their confirms and sends them again.
//!
//! **Duplicates.** At-least-once means a message can arrive twice: when the connection is lost
//! after the broker routed a message but before its confirm arrived, the message is published
//! again. Consumers that must not act twice deduplicate (a `message_id`, an idempotent effect).

mod tracker;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::channel::IntoShortStr;
use crate::connection::Connection;
use crate::error::Error;
use amqp_codec::BasicProperties;
use tracker::{Input, Tracked, Tracker};

/// How a [`ReliablePublisher`] bounds its memory and when it gives up on a message.
///
/// ```
/// use amqp_client::PublisherConfig;
/// let config = PublisherConfig::default()
///     .with_max_in_flight(256)
///     .with_max_in_flight_bytes(16 << 20)
///     .with_max_refusals(3);
/// assert_eq!(config.max_in_flight, 256);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PublisherConfig {
    /// Unconfirmed messages kept at most; a publish waits (back-pressure) while this many are.
    /// Default 1024.
    pub max_in_flight: u32,
    /// Body bytes kept at most, unconfirmed; a publish waits while they would exceed it. A
    /// single body larger than this is let through alone. Default 64 MiB.
    pub max_in_flight_bytes: u32,
    /// How many times the broker may refuse one message (basic.nack, or a channel error such
    /// as 404 for a missing exchange) before its receipt fails with
    /// [`PublishFailure::RetriesExhausted`]. Default 5.
    pub max_refusals: u32,
    /// Publish with the mandatory flag, so an unroutable message is
    /// [`PublishFailure::Unroutable`] instead of being dropped by the broker. Default true.
    pub mandatory: bool,
    /// Publish again the messages whose confirm was lost with the connection, once automatic
    /// recovery brought it back. Default true. Turn it off when the caller republishes itself
    /// (the worker does, for retries tied to a delivery that the broker requeues anyway);
    /// such a message's receipt then fails with [`PublishFailure::Failed`].
    pub republish_after_loss: bool,
}

impl Default for PublisherConfig {
    fn default() -> Self {
        Self {
            max_in_flight: 1024,
            max_in_flight_bytes: 64 << 20,
            max_refusals: 5,
            mandatory: true,
            republish_after_loss: true,
        }
    }
}

impl PublisherConfig {
    /// Sets [`max_in_flight`](Self::max_in_flight) (at least 1).
    pub fn with_max_in_flight(mut self, messages: u32) -> Self {
        self.max_in_flight = messages.max(1);
        self
    }

    /// Sets [`max_in_flight_bytes`](Self::max_in_flight_bytes) (at least 1).
    pub fn with_max_in_flight_bytes(mut self, bytes: u32) -> Self {
        self.max_in_flight_bytes = bytes.max(1);
        self
    }

    /// Sets [`max_refusals`](Self::max_refusals).
    pub fn with_max_refusals(mut self, refusals: u32) -> Self {
        self.max_refusals = refusals;
        self
    }

    /// Sets [`mandatory`](Self::mandatory).
    pub fn with_mandatory(mut self, mandatory: bool) -> Self {
        self.mandatory = mandatory;
        self
    }

    /// Sets [`republish_after_loss`](Self::republish_after_loss).
    pub fn with_republish_after_loss(mut self, republish: bool) -> Self {
        self.republish_after_loss = republish;
        self
    }
}

/// Why a message of a [`ReliablePublisher`] was definitively not taken by the broker.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum PublishFailure {
    /// The broker could not route the message (a mandatory publish returned, usually 312
    /// NO_ROUTE). Not retried: the same route would fail again.
    #[error("the message was returned as unroutable ({reply_code} {reply_text})")]
    Unroutable {
        /// The broker's code (312 NO_ROUTE).
        reply_code: u16,
        /// The broker's text.
        reply_text: String,
    },
    /// The broker refused the message [`max_refusals`](PublisherConfig::max_refusals) times
    /// (nacks, or channel errors).
    #[error("the broker refused the message {refusals} times{}", last_error.as_ref().map(|e| format!(" (last: {e})")).unwrap_or_default())]
    RetriesExhausted {
        /// How many times it was refused.
        refusals: u32,
        /// The last channel error, if the last refusal was one (a nack carries no reason).
        last_error: Option<Error>,
    },
    /// The publish could not be made and trying again would not help: the connection ended
    /// for good (closed, or recovery gave up), or the message cannot be encoded.
    #[error("the message could not be published: {0}")]
    Failed(Error),
    /// The publisher's task ended before the outcome was known (its runtime shut down).
    #[error("the publisher stopped before the message was confirmed")]
    Abandoned,
}

/// The outcome of one message of a [`ReliablePublisher`], as a future: `Ok(())` once the
/// broker confirmed it, or the [`PublishFailure`] that ended it. Dropping it does not stop the
/// message: it is still published and retried.
#[derive(Debug)]
#[must_use = "a message is only known to be safe once its receipt resolved Ok"]
pub struct PublishReceipt {
    /// Where the tracker sends the outcome.
    outcome: oneshot::Receiver<Result<(), PublishFailure>>,
}

impl Future for PublishReceipt {
    type Output = Result<(), PublishFailure>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.outcome)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(PublishFailure::Abandoned)))
    }
}

/// At-least-once publishing: a confirm-mode channel that keeps every unconfirmed message,
/// publishes it again after a nack, a channel error or (with automatic recovery on) a
/// connection loss, and resolves each message's [`PublishReceipt`] only when the broker
/// confirmed it or it definitively failed. Memory is bounded ([`PublisherConfig`]): `publish`
/// waits while the limits are reached.
///
/// A message may reach its queue twice (see the module's note on duplicates); none that the
/// application was told is confirmed is lost.
///
/// ```no_run
/// use amqp_client::prelude::*;
///
/// # async fn demo() -> Result<(), amqp_client::Error> {
/// let config = ConnectionConfig::from_uri("amqp://guest:guest@127.0.0.1:5672/%2f")?
///     .with_recovery(RecoveryPolicy::default());
/// let conn = Connection::connect_with(config).await?;
/// let publisher = conn.reliable_publisher(PublisherConfig::default()).await?;
/// let props = BasicProperties::persistent();
/// let mut receipts = Vec::new();
/// for i in 0..1000 {
///     receipts.push(publisher.publish("", "tasks", &props, format!("task {i}")).await?);
/// }
/// for receipt in receipts {
///     if let Err(failure) = receipt.await {
///         eprintln!("not taken: {failure}");
///     }
/// }
/// publisher.close().await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct ReliablePublisher {
    /// The channel publishes go out on, shared with the tracker (which replaces it when the
    /// broker closes it). A std mutex: held only to clone the handle, never across an await.
    channel: Arc<Mutex<crate::Channel>>,
    /// Where each publish hands its message to the tracker; `None` once closed.
    to_tracker: Mutex<Option<mpsc::UnboundedSender<Input>>>,
    /// One permit per unconfirmed message.
    count: Arc<Semaphore>,
    /// One permit per unconfirmed body byte.
    bytes: Arc<Semaphore>,
    /// The limits and retry rules.
    config: PublisherConfig,
    /// Resolved when the tracker ended (every receipt settled, the channel closed).
    finished: Mutex<Option<oneshot::Receiver<()>>>,
}

impl ReliablePublisher {
    /// Opens a confirm-mode channel on `conn` and starts the task that tracks its confirms.
    pub async fn open(conn: &Connection, config: PublisherConfig) -> Result<Self, Error> {
        // The fields are public: the bounds are made at least 1 here, once, as the setters do.
        let (messages, bytes) = (config.max_in_flight, config.max_in_flight_bytes);
        let config = config
            .with_max_in_flight(messages)
            .with_max_in_flight_bytes(bytes);
        let channel = Arc::new(Mutex::new(tracker::open_channel(conn).await?));
        let (to_tracker, inputs) = mpsc::unbounded_channel();
        let (done, finished) = oneshot::channel();
        let tracker = Tracker::new(conn.clone(), channel.clone(), config.clone(), inputs);
        tokio::spawn(async move {
            tracker.run().await;
            let _ = done.send(());
        });
        Ok(Self {
            channel,
            to_tracker: Mutex::new(Some(to_tracker)),
            count: Arc::new(Semaphore::new(config.max_in_flight as usize)),
            bytes: Arc::new(Semaphore::new(config.max_in_flight_bytes as usize)),
            config,
            finished: Mutex::new(Some(finished)),
        })
    }

    /// Publishes a message; the returned receipt resolves once the broker confirmed it (or it
    /// definitively failed). Waits first while the in-flight limits are reached.
    ///
    /// `Err` only when the message was not taken at all: a name over 255 bytes, or the
    /// publisher closed.
    pub async fn publish(
        &self,
        exchange: impl IntoShortStr,
        routing_key: impl IntoShortStr,
        properties: &BasicProperties,
        body: impl Into<Bytes>,
    ) -> Result<PublishReceipt, Error> {
        let exchange = exchange.into_short_str()?;
        let routing_key = routing_key.into_short_str()?;
        let body = body.into();
        let closed = || Error::InvalidUse("publish on a closed ReliablePublisher");
        if !self.is_open() {
            return Err(closed());
        }
        let count = self
            .count
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| closed())?;
        let size = u32::try_from(body.len())
            .unwrap_or(u32::MAX)
            .clamp(1, self.config.max_in_flight_bytes);
        let bytes = self
            .bytes
            .clone()
            .acquire_many_owned(size)
            .await
            .map_err(|_| closed())?;
        let (reply, outcome) = oneshot::channel();
        let tracked = Tracked {
            exchange,
            routing_key,
            properties: properties.clone(),
            body,
            refusals: 0,
            reply,
            _room: (count, bytes),
        };
        let channel = self.channel();
        let sent = tracker::send(&channel, &tracked, self.config.mandatory).await;
        let input = Input { tracked, sent };
        let guard = self.to_tracker.lock().unwrap_or_else(|p| p.into_inner());
        match guard.as_ref() {
            Some(tx) if tx.send(input).is_ok() => Ok(PublishReceipt { outcome }),
            _ => Err(closed()),
        }
    }

    /// Messages published and not yet settled (confirmed or failed).
    pub fn in_flight(&self) -> usize {
        self.config.max_in_flight as usize - self.count.available_permits()
    }

    /// Waits until every message published so far is settled.
    pub async fn flush(&self) {
        // Every permit back means nothing is in flight; they are released at once.
        let _ = self.count.acquire_many(self.config.max_in_flight).await;
    }

    /// Stops taking messages, waits until every one published is settled, and closes the
    /// channel. Receipts of a publisher that is dropped instead still resolve (its task runs
    /// until they do).
    pub async fn close(&self) -> Result<(), Error> {
        self.to_tracker
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let finished = self
            .finished
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(finished) = finished {
            let _ = finished.await;
        }
        Ok(())
    }

    /// True until [`close`](Self::close) was called.
    pub fn is_open(&self) -> bool {
        self.to_tracker
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// The channel in use now.
    fn channel(&self) -> crate::Channel {
        self.channel
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Connection {
    /// A [`ReliablePublisher`] on a new confirm-mode channel of this connection. Turn on
    /// automatic recovery ([`ConnectionConfig::with_recovery`](crate::ConnectionConfig::with_recovery))
    /// for messages to survive a lost connection.
    pub async fn reliable_publisher(
        &self,
        config: PublisherConfig,
    ) -> Result<ReliablePublisher, Error> {
        ReliablePublisher::open(self, config).await
    }
}

#[cfg(test)]
mod tests;
