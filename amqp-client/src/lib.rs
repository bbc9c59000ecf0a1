//! A tokio client for RabbitMQ (AMQP 0-9-1) built on [`amqp_codec`].
//!
//! * [`Connection`]: one socket and one driver task on the caller's runtime; many
//!   [`Channel`]s multiplexed over it; heartbeats; blocked/unblocked; clean close.
//! * [`Channel`]: declare and bind exchanges and queues, qos, consume (a bounded
//!   [`Consumer`] stream), get, publish (the body `Bytes` is never copied), publisher confirms
//!   ([`PublishConfirm`]), acks, transactions.
//! * Errors are one [`Error`] enum with [`Error::reply_code`] and channel-vs-connection
//!   classification. Nothing waits forever: every pending call fails when its channel or
//!   connection ends.
//!
//! ```no_run
//! use amqp_client::{Connection, PublishOptions, QueueDeclareOptions, ConsumeOptions};
//! use amqp_codec::{BasicProperties, table::FieldTable};
//!
//! # async fn demo() -> Result<(), amqp_client::Error> {
//! let conn = Connection::connect("amqp://guest:guest@127.0.0.1:5672/%2f").await?;
//! let ch = conn.open_channel().await?;
//! ch.queue_declare("tasks", QueueDeclareOptions { durable: true, ..Default::default() }, FieldTable::default()).await?;
//! ch.confirm_select().await?;
//! let props = BasicProperties::builder().with_delivery_mode(2).build();
//! let confirm = ch.basic_publish("", "tasks", PublishOptions::default(), &props, "hello").await?;
//! assert!(confirm.await?.is_ack());
//! let mut consumer = ch.basic_consume("tasks", ConsumeOptions::default(), FieldTable::default()).await?;
//! if let Some(delivery) = consumer.recv().await {
//!     let delivery = delivery?;
//!     delivery.ack()?;
//! }
//! conn.close().await
//! # }
//! ```
//!
//! ## Layout
//! * `proto/`: the sans-IO core (handshake, channels, confirms, consumer buffers), driven by
//!   bytes in, bytes out and time passed in.
//! * `driver/`: the task that owns the socket, and read batching (`read_pacer.rs` decides,
//!   `low_water.rs` sets the socket's low-water mark). `shared.rs`: the core under its
//!   mutex. `stats.rs`: counts of reads and writes, and of deliveries not simply handed over.
//! * `connection.rs`, `channel.rs`, `consumer.rs`, `message.rs`: the public handles.
//! * `config.rs`, `uri.rs`, `auth.rs`, `tls.rs`: settings, URI parsing, SASL, rustls.
//! * `recovery/`: automatic recovery, opt-in with one line
//!   ([`ConnectionConfig::with_recovery`]): the supervisor task (backoff, failover) and the
//!   topology replay; the core's side (suspending channels, recording topology) is in
//!   `proto/recovery.rs` and `proto/topology.rs`.

// No unsafe code, except the one audited module `driver/low_water.rs` (SO_RCVLOWAT).
#![deny(unsafe_code)]

mod auth;
mod channel;
mod config;
mod confirm;
mod connection;
mod consumer;
mod driver;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod message;
mod names;
mod options;
#[doc(hidden)]
pub mod profiling;
mod proto;
mod recovery;
mod shared;
mod stats;
mod tls;
mod unreadable;
mod uri;

pub use amqp_codec;
pub use amqp_codec::DiscardReason;
pub use channel::{Channel, IntoShortStr, QueueInfo};
pub use config::{
    AuthMechanism, ConnectionConfig, ConnectionConfigBuilder, Limits, ReadBatching, Secret,
    TlsOptions,
};
pub use confirm::PublishConfirm;
pub use connection::Connection;
pub use consumer::Consumer;
pub use error::{CloseReason, ConnectStep, Error, Result};
pub use message::{Delivery, GetMessage};
pub use options::{
    ConsumeOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, ExchangeKind, PublishOptions,
    QosOptions, QueueDeclareOptions, QueueDeleteOptions,
};
pub use proto::{Confirmation, ConnectionState, ReturnedMessage};
pub use recovery::{RecoveryEvent, RecoveryHook, RecoveryHooks, RecoveryPolicy};
pub use stats::{DeliveryStats, IoStats};
pub use tls::TlsError;
pub use unreadable::UnreadableDelivery;
pub use uri::{UriError, redact_uri};
