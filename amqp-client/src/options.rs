//! Option structs for channel operations. Each has the defaults a service usually wants, so a
//! call site names only what it changes: `QueueDeclareOptions { durable: true, ..Default::default() }`.

use std::fmt;

/// Exchange types RabbitMQ ships with; any other name (a plugin's type) via `Custom`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExchangeKind {
    /// Routes by exact routing key.
    Direct,
    /// Routes to every bound queue.
    Fanout,
    /// Routes by routing-key pattern (`*` one word, `#` any number).
    Topic,
    /// Routes by header values (`x-match: all | any`).
    Headers,
    /// Another type, e.g. `x-consistent-hash`.
    Custom(String),
}

impl ExchangeKind {
    /// The type name on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Direct => "direct",
            Self::Fanout => "fanout",
            Self::Topic => "topic",
            Self::Headers => "headers",
            Self::Custom(name) => name,
        }
    }
}

impl fmt::Display for ExchangeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// exchange.declare flags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExchangeDeclareOptions {
    /// Only check that it exists (404 if not); change nothing.
    pub passive: bool,
    /// Survives a broker restart.
    pub durable: bool,
    /// Deleted when its last binding goes.
    pub auto_delete: bool,
    /// Cannot be published to directly, only through exchange-to-exchange bindings.
    pub internal: bool,
    /// Do not wait for declare-ok.
    pub nowait: bool,
}

/// exchange.delete flags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExchangeDeleteOptions {
    /// Only delete if it has no bindings.
    pub if_unused: bool,
    /// Do not wait for delete-ok.
    pub nowait: bool,
}

/// queue.declare flags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueDeclareOptions {
    /// Only check that it exists (404 if not).
    pub passive: bool,
    /// Survives a broker restart.
    pub durable: bool,
    /// Used by this connection only, deleted when it closes.
    pub exclusive: bool,
    /// Deleted when its last consumer goes.
    pub auto_delete: bool,
    /// Do not wait for declare-ok (the name must then be given).
    pub nowait: bool,
}

/// queue.delete flags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueDeleteOptions {
    /// Only delete if it has no consumers.
    pub if_unused: bool,
    /// Only delete if it is empty.
    pub if_empty: bool,
    /// Do not wait for delete-ok.
    pub nowait: bool,
}

/// basic.qos settings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QosOptions {
    /// Bytes of unacknowledged messages allowed (0: no limit; RabbitMQ supports only 0).
    pub prefetch_size: u32,
    /// True: the limit is shared by the channel's consumers (RabbitMQ's meaning); false: per
    /// consumer.
    pub global: bool,
}

/// basic.consume flags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsumeOptions {
    /// The consumer tag; empty lets the broker choose one.
    pub consumer_tag: String,
    /// Do not deliver messages published on this connection (not supported by RabbitMQ).
    pub no_local: bool,
    /// Automatic acknowledgement: the broker forgets a message as soon as it is sent. Loses
    /// messages if the consumer dies; leave false for reliable processing.
    pub no_ack: bool,
    /// The only consumer of the queue (403 if another exists).
    pub exclusive: bool,
    /// Do not wait for consume-ok (a consumer tag must then be given).
    pub nowait: bool,
}

/// basic.publish flags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublishOptions {
    /// Return the message (basic.return, 312 NO_ROUTE) if no queue receives it, instead of
    /// dropping it silently.
    pub mandatory: bool,
    /// Deprecated by RabbitMQ (it closes the connection with 540); kept for other brokers.
    pub immediate: bool,
}
