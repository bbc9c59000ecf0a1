//! What the core reports to the application, whatever runs it: where the connection stands,
//! the broker's answer to a publish, and a message the broker returned. Plain data, re-exported
//! at the crate's root.

use amqp_codec::{BasicProperties, DiscardReason, ReplyCode, ShortStr};
use bytes::Bytes;

use crate::error::Error;

/// Where a connection stands, as [`Connection::state`](crate::Connection::state) reports it.
#[derive(Debug, Clone)]
pub enum ConnectionState {
    /// Open, never lost.
    Connected,
    /// Lost; `attempt` reconnections tried so far (0 before the first).
    Recovering {
        /// Attempts made so far.
        attempt: u32,
    },
    /// Open again after `count` recoveries in all.
    Recovered {
        /// How many times the connection was recovered since it was opened.
        count: u32,
    },
    /// Recovery gave up, or the connection ended without recovery; every call fails with
    /// this error.
    Failed(Error),
    /// Closed by the application.
    Closed,
}

/// A mandatory message the broker could not route, sent back with basic.return.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReturnedMessage {
    /// Why: usually 312 NO_ROUTE.
    pub reply_code: ReplyCode,
    /// The broker's text.
    pub reply_text: ShortStr,
    /// The exchange it was published to.
    pub exchange: ShortStr,
    /// The routing key it was published with.
    pub routing_key: ShortStr,
    /// Its properties (empty if `content_dropped`).
    pub properties: BasicProperties,
    /// Its body (empty if `content_dropped`).
    pub body: Bytes,
    /// Set when the client could not keep the returned content (over
    /// `Limits::max_message_size`, or properties that do not parse): the return itself still
    /// counts, with empty properties and body.
    pub content_dropped: Option<DiscardReason>,
}

/// The broker's answer to one publish.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Confirmation {
    /// basic.ack: the broker routed the message and took responsibility for it.
    Acked,
    /// basic.ack of a mandatory message the broker could not route: it came back with
    /// basic.return (here) and was not delivered anywhere.
    Returned(Box<ReturnedMessage>),
    /// basic.nack: the broker could not take the message (e.g. a queue limit with
    /// `reject-publish`, or an internal error). Carries the message if it was also returned.
    Nacked(Option<Box<ReturnedMessage>>),
    /// The channel is not in confirm mode: nothing to wait for.
    NotRequested,
}

impl Confirmation {
    /// True when the broker took the message and routed it ([`Confirmation::Acked`]): the
    /// one outcome that means it is safe.
    pub fn is_acked(&self) -> bool {
        matches!(self, Self::Acked)
    }

    /// True for a nack.
    pub fn is_nacked(&self) -> bool {
        matches!(self, Self::Nacked(_))
    }

    /// The returned message, if the broker could not route it.
    pub fn returned(&self) -> Option<&ReturnedMessage> {
        match self {
            Self::Returned(r) => Some(r),
            Self::Nacked(r) => r.as_deref(),
            Self::Acked | Self::NotRequested => None,
        }
    }
}
