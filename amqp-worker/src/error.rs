//! [`WorkerError`]: why [`Worker::run`](crate::Worker::run) or a topology operation stopped.

use std::time::Duration;

use amqp_client::amqp_codec::ReplyCode;

use crate::config::ConfigError;
use crate::publisher::PublishError;

/// Why the worker stopped (a clean shutdown is `Ok`, not an error).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The broker refused a declaration, e.g. 406 PRECONDITION_FAILED because the queue
    /// exists with other arguments.
    #[error("declaring {what} failed: {source}{hint}", hint = declare_hint(.source))]
    Declare {
        /// What was being declared (`queue 'tasks'`).
        what: String,
        /// What the broker said.
        source: amqp_client::Error,
    },
    /// Something the configuration's bindings name, and that it does not declare itself, does
    /// not exist on the broker. Checked before anything is declared: nothing was.
    #[error(
        "{what} does not exist and the configuration does not declare it ({source}); nothing was declared"
    )]
    Missing {
        /// What is missing and which binding names it.
        what: String,
        /// What the broker said (404 NOT_FOUND).
        source: amqp_client::Error,
    },
    /// An error no reconnect can fix, by the client's one rule
    /// ([`amqp_client::Error::is_recoverable`] is false): bad credentials, an unknown vhost, a
    /// bad URI, a peer that is not an AMQP 0-9-1 broker.
    #[error("cannot connect to the broker at {address}: {source}")]
    Connect {
        /// `host:port`.
        address: String,
        /// Why.
        source: amqp_client::Error,
    },
    /// No working connection for the configured give-up deadline.
    #[error(
        "gave up after {waited:?} without a working broker connection (last error: {last_error})"
    )]
    GaveUp {
        /// How long it tried.
        waited: Duration,
        /// The last failure.
        last_error: String,
    },
    /// Moving parked tasks failed.
    #[error("moving parked tasks from '{queue}' failed: {source}")]
    Requeue {
        /// The parking queue.
        queue: String,
        /// Why.
        source: PublishError,
    },
    /// A client call failed where no more specific variant applies.
    #[error(transparent)]
    Client(#[from] amqp_client::Error),
}

fn declare_hint(err: &amqp_client::Error) -> &'static str {
    if err.reply_code() == Some(ReplyCode::PRECONDITION_FAILED) {
        " (it already exists with other arguments or flags: delete it or match its settings)"
    } else {
        ""
    }
}
