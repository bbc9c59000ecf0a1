//! Options for channel operations, with the constructors a call usually needs, so that an
//! ordinary call names only what it changes: `QueueDeclareOptions::durable()`,
//! `ConsumeOptions::default().with_prefetch_hint()`... Arguments (`x-` settings) are part of
//! the options, empty by default, so that a call without any passes none.
//!
//! Every struct is `#[non_exhaustive]`: new flags can come without breaking callers, who build
//! them with the constructors and `with_` methods (or `default()` and field assignment).
//!
//! ```
//! use amqp_client::{FieldTable, QueueDeclareOptions};
//! let options = QueueDeclareOptions::durable()
//!     .with_argument("x-queue-type", "quorum")
//!     .with_argument("x-max-length", 10_000);
//! assert!(options.durable);
//! assert_eq!(options.arguments.len(), 2);
//! ```

use std::fmt;

use amqp_codec::{FieldTable, FieldValue};

/// Exchange types RabbitMQ ships with; any other name (a plugin's type) via `Custom`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
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

/// Adds `with_argument` and `with_arguments` to an options struct with an `arguments` table.
macro_rules! arguments {
    ($ty:ty) => {
        impl $ty {
            /// The same options with the argument `key` set to `value` (a later value for the
            /// same key replaces an earlier one).
            pub fn with_argument(mut self, key: &str, value: impl Into<FieldValue>) -> Self {
                self.arguments.insert(key, value);
                self
            }

            /// The same options with `arguments` as their arguments.
            pub fn with_arguments(mut self, arguments: impl Into<FieldTable>) -> Self {
                self.arguments = arguments.into();
                self
            }
        }
    };
}

/// Adds a `with_` method per flag, each turning it on.
macro_rules! flags {
    ($ty:ty { $($flag:ident => $with:ident),* $(,)? }) => {
        impl $ty {
            $(
                #[doc = concat!("The same options with `", stringify!($flag), "` on.")]
                pub const fn $with(mut self) -> Self {
                    self.$flag = true;
                    self
                }
            )*
        }
    };
}

/// exchange.declare flags and arguments.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
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
    /// `x-` arguments, e.g. `alternate-exchange`.
    pub arguments: FieldTable,
}

impl ExchangeDeclareOptions {
    /// A durable exchange: it survives a broker restart.
    pub fn durable() -> Self {
        Self::default().with_durable()
    }

    /// Only check that the exchange exists.
    pub fn passive() -> Self {
        Self::default().with_passive()
    }
}

flags!(ExchangeDeclareOptions {
    passive => with_passive,
    durable => with_durable,
    auto_delete => with_auto_delete,
    internal => with_internal,
    nowait => with_nowait,
});
arguments!(ExchangeDeclareOptions);

/// exchange.delete flags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExchangeDeleteOptions {
    /// Only delete if it has no bindings.
    pub if_unused: bool,
    /// Do not wait for delete-ok.
    pub nowait: bool,
}

impl ExchangeDeleteOptions {
    /// Only delete the exchange if it has no bindings.
    pub fn if_unused() -> Self {
        Self::default().with_if_unused()
    }
}

flags!(ExchangeDeleteOptions {
    if_unused => with_if_unused,
    nowait => with_nowait,
});

/// queue.declare flags and arguments.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
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
    /// `x-` arguments: `x-queue-type`, `x-message-ttl`, `x-dead-letter-exchange`,
    /// `x-max-length` and the like.
    pub arguments: FieldTable,
}

impl QueueDeclareOptions {
    /// A durable queue: it and its persistent messages survive a broker restart.
    pub fn durable() -> Self {
        Self::default().with_durable()
    }

    /// An exclusive queue: this connection's only, deleted when it closes (a reply queue, a
    /// subscriber's queue).
    pub fn exclusive() -> Self {
        Self::default().with_exclusive()
    }

    /// Only check that the queue exists (and read its counts).
    pub fn passive() -> Self {
        Self::default().with_passive()
    }
}

flags!(QueueDeclareOptions {
    passive => with_passive,
    durable => with_durable,
    exclusive => with_exclusive,
    auto_delete => with_auto_delete,
    nowait => with_nowait,
});
arguments!(QueueDeclareOptions);

/// queue.delete flags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueDeleteOptions {
    /// Only delete if it has no consumers.
    pub if_unused: bool,
    /// Only delete if it is empty.
    pub if_empty: bool,
    /// Do not wait for delete-ok.
    pub nowait: bool,
}

impl QueueDeleteOptions {
    /// Only delete the queue if nothing consumes from it.
    pub fn if_unused() -> Self {
        Self::default().with_if_unused()
    }

    /// Only delete the queue if it is empty.
    pub fn if_empty() -> Self {
        Self::default().with_if_empty()
    }
}

flags!(QueueDeleteOptions {
    if_unused => with_if_unused,
    if_empty => with_if_empty,
    nowait => with_nowait,
});

/// queue.bind, queue.unbind, exchange.bind and exchange.unbind: arguments (a headers
/// exchange's `x-match` and values) and the no-wait flag.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct BindOptions {
    /// Do not wait for the -ok (ignored by queue.unbind, which has no no-wait form): sent in order
    /// with the channel's other requests; a failure closes the channel later.
    pub nowait: bool,
    /// Binding arguments, e.g. `x-match` for a headers exchange.
    pub arguments: FieldTable,
}

flags!(BindOptions {
    nowait => with_nowait,
});
arguments!(BindOptions);

/// basic.qos settings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct QosOptions {
    /// Bytes of unacknowledged messages allowed (0: no limit; RabbitMQ supports only 0).
    pub prefetch_size: u32,
    /// True: the limit is shared by the channel's consumers (RabbitMQ's meaning); false: per
    /// consumer.
    pub global: bool,
}

impl QosOptions {
    /// The limit shared by the channel's consumers.
    pub fn global() -> Self {
        Self::default().with_global()
    }
}

flags!(QosOptions {
    global => with_global,
});

/// basic.consume flags and arguments.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
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
    /// `x-` arguments, e.g. `x-priority` or `x-stream-offset`.
    pub arguments: FieldTable,
}

impl ConsumeOptions {
    /// A consumer whose deliveries the broker forgets as it sends them (no acks; a message
    /// in flight when the consumer dies is lost).
    pub fn no_ack() -> Self {
        Self::default().with_no_ack()
    }

    /// A consumer with this tag.
    pub fn tagged(tag: impl Into<String>) -> Self {
        Self {
            consumer_tag: tag.into(),
            ..Self::default()
        }
    }
}

flags!(ConsumeOptions {
    no_local => with_no_local,
    no_ack => with_no_ack,
    exclusive => with_exclusive,
    nowait => with_nowait,
});
arguments!(ConsumeOptions);

/// basic.publish flags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PublishOptions {
    /// Return the message (basic.return, 312 NO_ROUTE) if no queue receives it, instead of
    /// dropping it silently.
    pub mandatory: bool,
    /// Deprecated by RabbitMQ (it closes the connection with 540); kept for other brokers.
    pub immediate: bool,
}

impl PublishOptions {
    /// A mandatory publish: an unroutable message comes back (with its confirm, in confirm
    /// mode) instead of being dropped.
    pub const fn mandatory() -> Self {
        Self {
            mandatory: true,
            immediate: false,
        }
    }
}

flags!(PublishOptions {
    mandatory => with_mandatory,
    immediate => with_immediate,
});

/// basic.get settings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GetOptions {
    /// The broker forgets the message as it sends it (no ack needed, nothing redelivered).
    pub no_ack: bool,
}

impl GetOptions {
    /// A get whose message needs no ack.
    pub fn no_ack() -> Self {
        Self::default().with_no_ack()
    }
}

flags!(GetOptions {
    no_ack => with_no_ack,
});

/// How a negatively acknowledged or rejected message is disposed of.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NackOptions {
    /// Also every earlier unsettled delivery of the channel (basic.nack only).
    pub multiple: bool,
    /// Put back in the queue to be delivered again; otherwise dead-lettered (to the queue's
    /// dead-letter exchange) or dropped.
    pub requeue: bool,
}

impl NackOptions {
    /// Put the message back in its queue.
    pub fn requeue() -> Self {
        Self::default().with_requeue()
    }

    /// Dead-letter the message (or drop it, if its queue has no dead-letter exchange).
    pub fn dead_letter() -> Self {
        Self::default()
    }
}

flags!(NackOptions {
    multiple => with_multiple,
    requeue => with_requeue,
});

/// basic.recover settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoverOptions {
    /// Requeue the unacknowledged messages (to any consumer) rather than redeliver them to
    /// this channel; RabbitMQ only supports requeueing. Default true.
    pub requeue: bool,
}

impl Default for RecoverOptions {
    fn default() -> Self {
        Self { requeue: true }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors_set_what_they_name_and_arguments_chain() {
        let q = QueueDeclareOptions::durable()
            .with_argument("x-max-length", 10i64)
            .with_argument("x-max-length", 20i64);
        assert!(q.durable && !q.exclusive);
        assert_eq!(q.arguments.get("x-max-length"), Some(FieldValue::I64(20)));
        assert_eq!(
            q.arguments.len(),
            1,
            "a later value replaces the earlier one"
        );
        assert!(QueueDeclareOptions::exclusive().exclusive);
        assert!(ExchangeDeclareOptions::durable().with_internal().internal);
        assert!(ConsumeOptions::no_ack().no_ack);
        assert_eq!(ConsumeOptions::tagged("c1").consumer_tag, "c1");
        assert!(NackOptions::requeue().requeue);
        assert!(!NackOptions::dead_letter().requeue);
        assert!(RecoverOptions::default().requeue);
        assert!(PublishOptions::mandatory().mandatory);
    }
}
