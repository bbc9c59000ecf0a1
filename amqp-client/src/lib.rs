//! A tokio client for RabbitMQ (AMQP 0-9-1) built on [`amqp_codec`].
//!
//! * [`Connection`]: one socket and one driver task on the caller's runtime; many
//!   [`Channel`]s multiplexed over it; heartbeats; blocked/unblocked; clean close.
//! * [`Channel`]: declare and bind exchanges and queues, qos, consume (a bounded
//!   [`Consumer`] stream), get, publish (the body `Bytes` is never copied), publisher confirms
//!   ([`PublishConfirm`]), acks, transactions.
//! * [`ReliablePublisher`]: at-least-once publishing built in: every unconfirmed message kept
//!   (bounded, with back-pressure), sent again after a nack or a lost connection, and a
//!   [`PublishReceipt`] per message that resolves only when the broker confirmed it or it
//!   definitively failed ([`PublishFailure`]).
//! * Errors are one [`Error`] enum with [`Error::reply_code`] and channel-vs-connection
//!   classification. Nothing waits forever: every pending call fails when its channel or
//!   connection ends.
//!
//! ```no_run
//! use amqp_client::prelude::*;
//!
//! # async fn demo() -> Result<(), amqp_client::Error> {
//! let conn = Connection::connect("amqp://guest:guest@127.0.0.1:5672/%2f").await?;
//! let ch = conn.open_channel().await?;
//! ch.queue_declare("tasks", QueueDeclareOptions::durable()).await?;
//! ch.confirm_select().await?;
//! let props = BasicProperties::persistent();
//! let confirm = ch.basic_publish("", "tasks", PublishOptions::mandatory(), &props, "hello").await?;
//! assert!(confirm.await?.is_acked());
//! let mut consumer = ch.basic_consume("tasks", ConsumeOptions::default()).await?;
//! if let Some(delivery) = consumer.recv().await {
//!     delivery?.ack()?;
//! }
//! conn.close().await
//! # }
//! ```
//!
//! ## Features
//!
//! * `tls` (default): `amqps://` and [`TlsOptions`] through rustls with the *ring* provider,
//!   from PEM files or a prebuilt `rustls::ClientConfig` ([`TlsOptions::rustls_config`]). Without
//!   it the crate has no TLS code; a TLS connection fails with [`TlsError::NotEnabled`].
//! * `native-roots` (default): the system's CA certificates when neither a CA file nor a
//!   rustls configuration is given.
//! * `metrics`: the counts of [`Connection::message_stats`] also go to the
//!   [`metrics`](https://docs.rs/metrics) facade, as counters `amqp_client_published_total`,
//!   `amqp_client_confirmed_total`, ... with a `connection` label (the connection's name),
//!   reported once a second and when the connection ends. Off, it costs nothing.
//! * `trace-context`: W3C Trace Context in message headers (`TraceContext`: `traceparent`
//!   and `tracestate` parsed, printed, injected and extracted; `Delivery::trace_context`).
//! * `internals`: not public API (the fuzz targets' and profiling loops' entry points).
//!
//! ## Layout
//! Three layers, each depending only on the ones below it (see `ARCHITECTURE.md`):
//!
//! | layer | files | what it does |
//! |---|---|---|
//! | core | `proto/` | the sans-IO protocol state: bytes in, frames out, time passed in, events (`proto/events.rs`) handed up; no runtime. `proto/mod.rs` maps its files |
//! | async glue | `shared.rs`, `driver/` | `shared.rs`: the core under its mutex, beside the wakers and reply channels of the tasks waiting on it, dispatching the core's events; `driver/`: the task that owns the socket (`read_pacer.rs` decides read batching, `low_water.rs` sets `SO_RCVLOWAT`, `batcher.rs` applies it) |
//! | recovery | `recovery/` | the policy layer around a connection: the one rule of what is recovered (`policy.rs`), the recorded topology (`topology.rs`), the supervisor (`supervisor.rs`), replay and hooks (`replay.rs`), the first connection retried (`initial.rs`), calls waiting out recovery (`gate.rs`) |
//! | handles | `connection.rs`, `channel/` (`basic.rs` publish, get, settle; `bind.rs` bindings), `consumer.rs`, `confirm.rs`, `message.rs`, `unreadable.rs` | the public API |
//! | at-least-once | `publisher/` (`mod.rs` the API and its bounds, `tracker.rs` the task that awaits confirms and sends again) | [`ReliablePublisher`] on top of a channel |
//! | settings | `config.rs`, `uri/`, `auth.rs`, `tls/`, `options.rs`, `names.rs` | configuration, URI parsing, SASL, rustls (`tls/connect.rs`, feature `tls`), call options, names |
//! | reports | `error.rs`, `stats.rs`, `metrics_facade.rs`, `trace_context/` | errors; counts of reads, writes, messages and deliveries not simply handed over; the counts through the `metrics` facade (feature `metrics`); W3C trace context in headers (feature `trace-context`) |
//! | internal | `fuzzing.rs`, `profiling.rs` (feature `internals`) | the fuzz target's and the profiling loops' entry points, over `proto/harness.rs`; not public API |

// No unsafe code, except the one audited module `driver/low_water.rs` (SO_RCVLOWAT).
#![deny(unsafe_code)]

// The README's example compiles as a doctest (`no_run`: it needs a broker).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

// The lapin migration page's `amqp-client` snippets compile as doctests too (its lapin snippets
// are `ignore`d). The page lives in the crate (`docs/`, packaged) so the include resolves in the
// published tarball as well.
#[cfg(doctest)]
#[doc = include_str!("../docs/coming-from-lapin.md")]
struct ComingFromLapinDoctests;

mod auth;
mod channel;
mod config;
mod confirm;
mod connection;
mod consumer;
mod driver;
mod error;
#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod fuzzing;
mod message;
#[cfg(feature = "metrics")]
mod metrics_facade;
mod names;
mod options;
#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod profiling;
mod proto;
mod publisher;
mod recovery;
mod shared;
mod stats;
mod tls;
#[cfg(feature = "trace-context")]
mod trace_context;
mod unreadable;
mod uri;

pub use amqp_codec;
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
    BindOptions, ConsumeOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, ExchangeKind,
    GetOptions, NackOptions, PublishOptions, QosOptions, QueueDeclareOptions, QueueDeleteOptions,
    RecoverOptions,
};
// The codec's types an application meets, at the root: no `amqp_codec::` path needed.
pub use amqp_codec::{
    BasicProperties, Decimal, DiscardReason, FieldArray, FieldTable, FieldValue, LongStr,
    PropertiesBuilder, PropertyError, ReplyCode, ShortStr, ValueError, field_table,
};

/// Everything an ordinary program uses, in one import: `use amqp_client::prelude::*;`.
pub mod prelude {
    pub use crate::{
        BasicProperties, BindOptions, Channel, Confirmation, ConnectStep, Connection,
        ConnectionConfig, ConsumeOptions, Consumer, Delivery, Error, ExchangeDeclareOptions,
        ExchangeDeleteOptions, ExchangeKind, FieldArray, FieldTable, FieldValue, GetOptions,
        NackOptions, PropertyError, PublishConfirm, PublishFailure, PublishOptions, PublishReceipt,
        PublisherConfig, QosOptions, QueueDeclareOptions, QueueDeleteOptions, RecoverOptions,
        RecoveryPolicy, ReliablePublisher, ShortStr, field_table,
    };
}
pub use proto::{Confirmation, ConnectionState, ReturnedMessage};
pub use publisher::{PublishFailure, PublishReceipt, PublisherConfig, ReliablePublisher};
pub use recovery::{RecoveryEvent, RecoveryHook, RecoveryHooks, RecoveryPolicy};
/// The rustls this crate was built with, for [`TlsOptions::from_rustls`] (feature `tls`).
#[cfg(feature = "tls")]
pub use rustls;
pub use stats::{DeliveryStats, IoStats};
pub use stats::{MessageStats, StatsHandle};
pub use tls::{RustlsConfig, TlsError};
#[cfg(feature = "trace-context")]
pub use trace_context::{TRACEPARENT, TRACESTATE, TraceContext, TraceContextError};
pub use unreadable::UnreadableDelivery;
pub use uri::{UriError, redact_uri};
