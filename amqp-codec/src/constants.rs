//! Open newtypes for the wire enums: reply codes, class ids and frame types.
//!
//! They are newtypes rather than Rust enums so that a value this crate does not name (a future
//! reply code, a vendor class) survives decoding and can still be reported and re-encoded.

use std::fmt;

/// The octet that ends every frame (`%xCE`).
pub const FRAME_END: u8 = 0xCE;

/// The smallest frame-max a peer may negotiate, and the limit before tuning (spec: frame-min-size).
pub const FRAME_MIN_SIZE: u32 = 4096;

/// Octets of a frame that are not payload: type (1), channel (2), size (4) and frame-end (1).
pub const FRAME_OVERHEAD: usize = 8;

/// Octets of the frame header that precedes the payload: type, channel and size.
pub const FRAME_HEADER_SIZE: usize = 7;

/// An AMQP reply code, as carried by `connection.close`, `channel.close` and `basic.return`.
///
/// Codes 311-313 and 403-406 are soft errors that close a channel; 320, 402, 501-506, 530, 540
/// and 541 are hard errors that close the connection.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReplyCode(pub u16);

impl ReplyCode {
    /// 200: the method completed successfully.
    pub const REPLY_SUCCESS: Self = Self(200);
    /// 311: the content was too large to be accepted (soft).
    pub const CONTENT_TOO_LARGE: Self = Self(311);
    /// 312: a mandatory message could not be routed (returned with `basic.return`).
    pub const NO_ROUTE: Self = Self(312);
    /// 313: an immediate message had no consumer to take it.
    pub const NO_CONSUMERS: Self = Self(313);
    /// 320: an operator or the broker forced the connection closed (hard).
    pub const CONNECTION_FORCED: Self = Self(320);
    /// 402: the virtual host path is invalid (hard).
    pub const INVALID_PATH: Self = Self(402);
    /// 403: access to the resource is refused, also used for failed authentication.
    pub const ACCESS_REFUSED: Self = Self(403);
    /// 404: the exchange or queue does not exist (soft).
    pub const NOT_FOUND: Self = Self(404);
    /// 405: the resource is locked by another connection, e.g. an exclusive queue (soft).
    pub const RESOURCE_LOCKED: Self = Self(405);
    /// 406: a precondition failed, e.g. redeclaring with other arguments or an unknown tag (soft).
    pub const PRECONDITION_FAILED: Self = Self(406);
    /// 501: a malformed frame (hard).
    pub const FRAME_ERROR: Self = Self(501);
    /// 502: a frame with illegal field values (hard).
    pub const SYNTAX_ERROR: Self = Self(502);
    /// 503: an invalid sequence of frames or an unknown method (hard).
    pub const COMMAND_INVALID: Self = Self(503);
    /// 504: a channel that is not open, or a channel-level protocol error (hard).
    pub const CHANNEL_ERROR: Self = Self(504);
    /// 505: a frame the peer did not expect in this state, e.g. content out of order (hard).
    pub const UNEXPECTED_FRAME: Self = Self(505);
    /// 506: the server ran out of a resource (hard).
    pub const RESOURCE_ERROR: Self = Self(506);
    /// 530: the operation is not allowed, e.g. an unknown virtual host (hard).
    pub const NOT_ALLOWED: Self = Self(530);
    /// 540: the method is not implemented by the peer (hard).
    pub const NOT_IMPLEMENTED: Self = Self(540);
    /// 541: the peer hit an internal error (hard).
    pub const INTERNAL_ERROR: Self = Self(541);

    /// The spec's name for this code, if it is one the spec defines.
    pub const fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            200 => "REPLY_SUCCESS",
            311 => "CONTENT_TOO_LARGE",
            312 => "NO_ROUTE",
            313 => "NO_CONSUMERS",
            320 => "CONNECTION_FORCED",
            402 => "INVALID_PATH",
            403 => "ACCESS_REFUSED",
            404 => "NOT_FOUND",
            405 => "RESOURCE_LOCKED",
            406 => "PRECONDITION_FAILED",
            501 => "FRAME_ERROR",
            502 => "SYNTAX_ERROR",
            503 => "COMMAND_INVALID",
            504 => "CHANNEL_ERROR",
            505 => "UNEXPECTED_FRAME",
            506 => "RESOURCE_ERROR",
            530 => "NOT_ALLOWED",
            540 => "NOT_IMPLEMENTED",
            541 => "INTERNAL_ERROR",
            _ => return None,
        })
    }

    /// True for the soft errors, which close only the channel they happened on.
    pub const fn is_channel_error(self) -> bool {
        matches!(self.0, 311..=313 | 403..=406)
    }

    /// True for the hard errors, which close the whole connection. Unknown codes count as hard,
    /// the safe reading for a peer that cannot tell what was lost.
    pub const fn is_connection_error(self) -> bool {
        !self.is_channel_error() && self.0 != 200
    }
}

impl fmt::Debug for ReplyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{}({name})", self.0),
            None => write!(f, "{}", self.0),
        }
    }
}

impl fmt::Display for ReplyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// An AMQP class id (connection = 10, basic = 60, ...).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ClassId(pub u16);

impl ClassId {
    /// 10: connection negotiation and control.
    pub const CONNECTION: Self = Self(10);
    /// 20: channel open, flow and close.
    pub const CHANNEL: Self = Self(20);
    /// 30: access tickets (deprecated in 0-9-1, kept for wire completeness).
    pub const ACCESS: Self = Self(30);
    /// 40: exchanges.
    pub const EXCHANGE: Self = Self(40);
    /// 50: queues.
    pub const QUEUE: Self = Self(50);
    /// 60: messages: publish, consume, get, ack, and the content-bearing class.
    pub const BASIC: Self = Self(60);
    /// 85: publisher confirms (RabbitMQ extension).
    pub const CONFIRM: Self = Self(85);
    /// 90: transactions.
    pub const TX: Self = Self(90);

    /// The class's name, if this crate knows the class.
    pub const fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            10 => "connection",
            20 => "channel",
            30 => "access",
            40 => "exchange",
            50 => "queue",
            60 => "basic",
            85 => "confirm",
            90 => "tx",
            _ => return None,
        })
    }
}

impl fmt::Debug for ClassId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{}({name})", self.0),
            None => write!(f, "{}", self.0),
        }
    }
}

impl fmt::Display for ClassId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// The frame type octet.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FrameType(pub u8);

impl FrameType {
    /// 1: a method frame.
    pub const METHOD: Self = Self(1);
    /// 2: a content header frame.
    pub const HEADER: Self = Self(2);
    /// 3: a content body frame.
    pub const BODY: Self = Self(3);
    /// 8: a heartbeat frame (RabbitMQ and the 0-9-1 spec use 8, not the XML's 4).
    pub const HEARTBEAT: Self = Self(8);
}

impl fmt::Debug for FrameType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.0 {
            1 => "method",
            2 => "header",
            3 => "body",
            8 => "heartbeat",
            _ => return write!(f, "{}", self.0),
        };
        write!(f, "{}({name})", self.0)
    }
}

impl fmt::Display for FrameType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn soft_and_hard_codes_follow_the_spec() {
        for soft in [311, 312, 313, 403, 404, 405, 406] {
            assert!(ReplyCode(soft).is_channel_error(), "{soft}");
            assert!(!ReplyCode(soft).is_connection_error(), "{soft}");
        }
        for hard in [320, 402, 501, 502, 503, 504, 505, 506, 530, 540, 541, 999] {
            assert!(ReplyCode(hard).is_connection_error(), "{hard}");
        }
        assert!(!ReplyCode::REPLY_SUCCESS.is_connection_error());
    }

    #[test]
    fn unknown_values_survive_and_print() {
        assert_eq!(format!("{:?}", ReplyCode(777)), "777");
        assert_eq!(format!("{}", ReplyCode::NOT_FOUND), "404(NOT_FOUND)");
        assert_eq!(format!("{:?}", ClassId(12)), "12");
        assert_eq!(format!("{:?}", FrameType(9)), "9");
    }
}
