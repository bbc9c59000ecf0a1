//! The client's errors: one enum, layered by where the failure came from (the URI, the socket,
//! TLS, the protocol, the broker closing a channel or the connection, the application).
//!
//! Errors are `Clone` because one failure (say the connection dying) is delivered to every
//! waiter at once: pending RPCs, confirms and consumers on every channel.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use amqp_codec::{ClassId, EncodeError, PropertyError, ReplyCode};

use crate::tls::TlsError;
use crate::unreadable::UnreadableDelivery;
use crate::uri::UriError;

/// Why a channel or connection was closed, as the closing `close` method said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseReason {
    /// The reply code, e.g. 404 NOT_FOUND or 320 CONNECTION_FORCED.
    pub code: ReplyCode,
    /// The reply text (lossily decoded; RabbitMQ sends ASCII).
    pub text: String,
    /// Class of the method that caused it, or 0.
    pub class_id: ClassId,
    /// Method that caused it, or 0.
    pub method_id: u16,
}

impl CloseReason {
    /// The reason a connection.close or channel.close carries, as its fields arrive.
    pub(crate) fn from_wire(
        reply_code: u16,
        reply_text: &[u8],
        class_id: u16,
        method_id: u16,
    ) -> Self {
        Self {
            code: ReplyCode(reply_code),
            text: String::from_utf8_lossy(reply_text).into_owned(),
            class_id: ClassId(class_id),
            method_id,
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code.0)?;
        if let Some(name) = self.code.name() {
            write!(f, " {name}")?;
        }
        write!(f, ": {}", self.text)?;
        if self.class_id.0 != 0 {
            match amqp_codec::methods::method_info(self.class_id, self.method_id) {
                Some(info) => write!(f, " (caused by {})", info.name)?,
                None => write!(f, " (caused by {}.{})", self.class_id.0, self.method_id)?,
            }
        }
        Ok(())
    }
}

/// A step of connecting, as named by [`Error::ConnectTimeout`]: what was still awaited when
/// the time ran out tells a firewall (TCP) from a TLS mismatch, a peer that is not a broker
/// (start), an authentication that never answers (tune) or a vhost that hangs (open-ok).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectStep {
    /// The TCP connection.
    Tcp,
    /// The TLS handshake.
    Tls,
    /// connection.start, the broker's first word after the protocol header.
    Start,
    /// connection.tune (or connection.secure), the answer to the credentials.
    Tune,
    /// connection.open-ok, the answer to opening the virtual host.
    OpenOk,
    /// A reply while recovery re-declared the topology on a new connection.
    TopologyReplay,
}

impl fmt::Display for ConnectStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcp => "the TCP connection",
            Self::Tls => "the TLS handshake",
            Self::Start => "connection.start",
            Self::Tune => "connection.tune (after sending the credentials)",
            Self::OpenOk => "connection.open-ok (after opening the virtual host)",
            Self::TopologyReplay => "a reply while re-declaring the topology",
        })
    }
}

/// Everything that can go wrong in the client.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The connection URI does not parse.
    #[error("invalid connection URI: {0}")]
    Uri(#[from] UriError),
    /// A socket operation failed (connect, read, write).
    #[error("I/O error: {0}")]
    Io(Arc<io::Error>),
    /// TLS setup or handshake failed.
    #[error("TLS error: {0}")]
    Tls(#[from] TlsError),
    /// TCP connect, TLS or the AMQP handshake did not finish within `connection_timeout`.
    #[error("connecting to {address} timed out after {timeout:?} waiting for {step}")]
    ConnectTimeout {
        /// `host:port` (never credentials).
        address: String,
        /// The configured bound.
        timeout: Duration,
        /// What was still awaited when the time ran out.
        step: ConnectStep,
    },
    /// The peer does not speak AMQP 0-9-1 (wrong greeting, or it answered with its own
    /// protocol header).
    #[error("the peer is not an AMQP 0-9-1 broker: {0}")]
    NotAmqp(String),
    /// The peer accepted the TCP connection and closed it before sending connection.start,
    /// without a byte: what a load balancer or port forward does while no broker is behind
    /// it, and what a node that is starting or stopping may do. Recoverable.
    #[error(
        "{address} accepted the connection and closed it before connection.start (no broker behind a proxy, or one starting or stopping)"
    )]
    ClosedBeforeStart {
        /// `host:port` (never credentials).
        address: String,
    },
    /// The broker refused the credentials (RabbitMQ closes with 403 ACCESS_REFUSED).
    #[error("authentication failed with {mechanism}: {reason}")]
    AuthenticationFailed {
        /// The SASL mechanism used.
        mechanism: &'static str,
        /// The broker's reason.
        reason: String,
    },
    /// The broker does not offer the configured SASL mechanism.
    #[error("the broker does not offer the {wanted} mechanism (it offers: {offered})")]
    MechanismNotOffered {
        /// The configured mechanism.
        wanted: &'static str,
        /// What the broker offers.
        offered: String,
    },
    /// The peer broke the protocol; the client closed the connection with the error's reply
    /// code (501, 502, 503, 504 or 505).
    #[error("protocol violation by the peer ({code}): {message}")]
    Protocol {
        /// The reply code sent in our connection.close.
        code: ReplyCode,
        /// What was wrong.
        message: String,
    },
    /// A message or header was too large to send, or a name too long.
    #[error("cannot encode: {0}")]
    Encode(#[from] EncodeError),
    /// A message property could not be set (a string longer than 255 bytes), from
    /// [`PropertiesBuilder::build`](amqp_codec::PropertiesBuilder::build).
    #[error("invalid message properties: {0}")]
    Properties(#[from] PropertyError),
    /// The broker closed the connection (hard error or shutdown).
    #[error("connection closed by the broker: {0}")]
    ConnectionClosed(CloseReason),
    /// The broker closed the channel (soft error); the connection and other channels live on.
    #[error("channel closed by the broker: {0}")]
    ChannelClosed(CloseReason),
    /// No frame arrived for two heartbeat intervals.
    #[error("heartbeat timeout: no frame from the broker for {0:?}")]
    HeartbeatTimeout(Duration),
    /// The peer closed the socket without connection.close.
    #[error("the broker closed the socket")]
    ConnectionLost,
    /// The application closed the connection.
    #[error("the connection was closed by the application")]
    ConnectionClosedByApp,
    /// The client closed the channel because of what the broker sent on it, e.g. a message
    /// over `Limits::max_message_size` (311); the connection and other channels live on.
    #[error("channel closed by the client: {0}")]
    ChannelAborted(CloseReason),
    /// The application closed the channel.
    #[error("the channel was closed by the application")]
    ChannelClosedByApp,
    /// Every channel id up to channel-max is in use.
    #[error("no free channel: all {0} channel ids are in use")]
    ChannelsExhausted(u16),
    /// A delivery whose content the client dropped (over `Limits::max_message_size`, or
    /// properties that do not parse). Not the end of anything: the consumer's stream goes on,
    /// and the delivery must be settled (usually [`UnreadableDelivery::reject`], which
    /// dead-letters it) so that it does not come back.
    #[error("{0}")]
    UnreadableDelivery(Box<UnreadableDelivery>),
    /// An ack, nack or reject for a delivery whose channel is gone: the broker requeues the
    /// message itself; sending the tag on another channel could ack the wrong message.
    #[error(
        "delivery {delivery_tag} belongs to a channel that is closed; the broker redelivers it"
    )]
    StaleDelivery {
        /// The tag the application tried to settle.
        delivery_tag: u64,
    },
    /// The channel is not in a state that allows the call (e.g. waiting for confirms on a
    /// channel without confirm mode).
    #[error("invalid use: {0}")]
    InvalidUse(&'static str),
    /// A consumer was cancelled by the broker (its queue was deleted, or a node failed).
    #[error("consumer {consumer_tag} was cancelled by the broker")]
    ConsumerCancelled {
        /// The consumer's tag.
        consumer_tag: String,
    },
    /// The connection was lost and is being recovered; the call was not sent. Retry it
    /// later, or raise `RecoveryPolicy::wait_while_recovering` to have calls wait.
    #[error("the connection is being recovered; the call was not sent")]
    Recovering,
    /// Automatic recovery gave up (attempts or time exhausted, or an error that cannot be
    /// recovered such as refused credentials).
    #[error("connection recovery gave up after {attempts} attempts: {last_error}")]
    RecoveryFailed {
        /// Attempts made.
        attempts: u32,
        /// The error of the last attempt (or the one that ended recovery).
        last_error: Box<Error>,
    },
}

impl From<io::Error> for Error {
    fn from(err: io::Error) -> Self {
        Self::Io(Arc::new(err))
    }
}

impl Error {
    /// The AMQP reply code behind this error, if there is one.
    pub fn reply_code(&self) -> Option<ReplyCode> {
        match self {
            Self::ConnectionClosed(reason)
            | Self::ChannelClosed(reason)
            | Self::ChannelAborted(reason) => Some(reason.code),
            Self::Protocol { code, .. } => Some(*code),
            Self::AuthenticationFailed { .. } => Some(ReplyCode::ACCESS_REFUSED),
            _ => None,
        }
    }

    /// True if only a channel is affected: the connection and its other channels still work.
    pub fn is_channel_error(&self) -> bool {
        matches!(
            self,
            Self::ChannelClosed(_)
                | Self::ChannelAborted(_)
                | Self::ChannelClosedByApp
                | Self::ConsumerCancelled { .. }
        )
    }

    /// True if the connection is gone.
    pub fn is_connection_error(&self) -> bool {
        matches!(
            self,
            Self::Io(_)
                | Self::ConnectionClosed(_)
                | Self::HeartbeatTimeout(_)
                | Self::ConnectionLost
                | Self::ClosedBeforeStart { .. }
                | Self::ConnectionClosedByApp
                | Self::Protocol { .. }
                | Self::Recovering
                | Self::RecoveryFailed { .. }
        )
    }

    /// The one rule for "will trying again (a new connection) help?", used by automatic
    /// recovery and by `amqp-worker`'s reconnect loop alike.
    ///
    /// True for failures of the path or of the broker's availability, which a later attempt
    /// may find fixed: I/O errors (refused, reset, unreachable), a lost socket, a peer that
    /// accepted and closed before connection.start ([`Error::ClosedBeforeStart`]: a proxy
    /// with no broker behind it, a node starting or stopping), a heartbeat timeout, a connect
    /// timeout, recovery in progress, and the broker closing the connection with 320
    /// CONNECTION_FORCED (shutdown, `rabbitmqctl close_connection`) or 541 INTERNAL_ERROR.
    ///
    /// False for what the same attempt would meet again: a bad URI or TLS setup, refused
    /// credentials (403), an unknown vhost or a connection limit (530), a missing SASL
    /// mechanism, a peer that answered with something other than AMQP 0-9-1
    /// ([`Error::NotAmqp`]), a protocol violation by the peer ([`Error::Protocol`]: a broker
    /// or proxy bug, to be seen rather than retried), any other connection.close code, the
    /// application closing the connection, channel-level errors, and recovery having given
    /// up. A process that retries these forever only hides a configuration mistake; it should
    /// exit and say why.
    pub fn is_recoverable(&self) -> bool {
        match self {
            Self::Io(_)
            | Self::ConnectionLost
            | Self::ClosedBeforeStart { .. }
            | Self::HeartbeatTimeout(_)
            | Self::ConnectTimeout { .. }
            | Self::Recovering => true,
            Self::ConnectionClosed(reason) => matches!(
                reason.code,
                ReplyCode::CONNECTION_FORCED | ReplyCode::INTERNAL_ERROR
            ),
            _ => false,
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
