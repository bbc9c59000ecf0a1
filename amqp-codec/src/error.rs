//! Typed decode and encode errors, each mapped to the AMQP reply code a peer should close with.

use crate::constants::{ClassId, FrameType, ReplyCode};

/// What went wrong inside a frame's payload: a field that does not parse.
///
/// It is wrapped in a [`DecodeError`] that says which method, header or table it was found in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FieldError {
    /// The payload ended before the field did.
    #[error("{what} runs past the end of the payload")]
    Truncated {
        /// The kind of field being read (`"short string"`, `"long"`, ...).
        what: &'static str,
    },
    /// Bytes were left over after the last field.
    #[error("{count} unexpected trailing bytes")]
    TrailingBytes {
        /// How many bytes were left over.
        count: usize,
    },
    /// A field table or array used a type letter RabbitMQ does not define.
    #[error("unknown field value type {letter:#04x} ({})", *letter as char)]
    UnknownFieldType {
        /// The type octet found.
        letter: u8,
    },
    /// A content header set a property flag that basic does not define.
    #[error("unknown property flags {flags:#06x}")]
    UnknownProperties {
        /// The flag bits that name no property.
        flags: u16,
    },
}

/// An error decoding bytes from a peer. Every variant maps to the reply code the spec asks a peer
/// to close the connection with ([`DecodeError::reply_code`]).
///
/// An incomplete frame is never an error: the decoder answers "need more bytes" instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The frame header declared a size above the negotiated frame-max. Detected from the 7-byte
    /// header alone, before the payload is awaited or any room is made for it.
    #[error("frame of {declared} bytes exceeds the negotiated frame-max of {frame_max}")]
    FrameTooLarge {
        /// Total frame size declared (header, payload and frame-end).
        declared: u64,
        /// The negotiated limit.
        frame_max: u32,
    },
    /// The octet after the payload was not `0xCE`.
    #[error("frame-end octet is {found:#04x}, expected 0xce")]
    BadFrameEnd {
        /// The octet found.
        found: u8,
    },
    /// A frame type that AMQP 0-9-1 does not define, e.g. a non-AMQP peer's greeting.
    #[error("unknown frame type {frame_type}")]
    UnknownFrameType {
        /// The type octet found.
        frame_type: FrameType,
    },
    /// Bytes starting with `A` that are not an AMQP protocol header.
    #[error("malformed protocol header {header:?}")]
    BadProtocolHeader {
        /// The eight bytes received.
        header: [u8; 8],
    },
    /// A heartbeat frame on a channel other than 0, or with a payload.
    #[error("heartbeat frame on channel {channel} with {size} payload bytes")]
    BadHeartbeat {
        /// The channel it arrived on.
        channel: u16,
        /// Its payload size.
        size: u32,
    },
    /// A method or content-header frame too short to hold its fixed fields.
    #[error("{frame_type} frame with only {size} payload bytes")]
    FrameTooShort {
        /// The kind of frame.
        frame_type: FrameType,
        /// Its payload size.
        size: u32,
    },
    /// A method id this crate does not know.
    #[error("unknown method {class_id}.{method_id}")]
    UnknownMethod {
        /// The class id found.
        class_id: ClassId,
        /// The method id found.
        method_id: u16,
    },
    /// A known method whose arguments do not parse.
    #[error("malformed {name} arguments: {source}")]
    BadMethod {
        /// The method's class id.
        class_id: ClassId,
        /// The method's id.
        method_id: u16,
        /// The method's spec name, e.g. `"basic.deliver"`.
        name: &'static str,
        /// What failed.
        source: FieldError,
    },
    /// A content header for a class that carries no content (only basic does in 0-9-1).
    #[error("content header for class {class_id}, which has no content")]
    UnknownContentClass {
        /// The class id found.
        class_id: ClassId,
    },
    /// A content header whose property list does not parse. Its fixed part was read, so the
    /// frame boundary and the body's size are known: a client can skip the body and hand the
    /// message over as unreadable ([`crate::ContentAssembler::push_bad_header`]) rather than
    /// close the connection over one message.
    #[error("malformed content header on channel {channel}: {source}")]
    BadContentHeader {
        /// The channel the header arrived on (0 when decoded outside a frame).
        channel: u16,
        /// The body size the header declared.
        body_size: u64,
        /// What failed.
        source: FieldError,
    },
    /// A standalone field table that does not parse.
    #[error("malformed field table: {source}")]
    BadFieldTable {
        /// What failed.
        source: FieldError,
    },
    /// A frame arrived that the content state machine did not expect (e.g. a body frame with no
    /// header before it, or a method in the middle of a message).
    #[error("unexpected {got} frame on channel {channel} while {expected}")]
    UnexpectedFrame {
        /// The channel.
        channel: u16,
        /// The kind of frame received.
        got: FrameType,
        /// What the state machine was waiting for.
        expected: &'static str,
    },
    /// The content header's class differs from the method's class.
    #[error("content header class {header} does not match method class {method}")]
    ContentClassMismatch {
        /// The method's class.
        method: ClassId,
        /// The header's class.
        header: ClassId,
    },
    /// Body frames delivered more bytes than the content header declared.
    #[error("content body of {received} bytes exceeds the declared {declared}")]
    BodyTooLong {
        /// The body size declared by the content header.
        declared: u64,
        /// Bytes received so far, including the frame that overflowed.
        received: u64,
    },
}

impl DecodeError {
    /// The reply code a peer should close the connection with.
    pub fn reply_code(&self) -> ReplyCode {
        match self {
            Self::FrameTooLarge { .. }
            | Self::BadFrameEnd { .. }
            | Self::UnknownFrameType { .. }
            | Self::BadProtocolHeader { .. }
            | Self::BadHeartbeat { .. }
            | Self::FrameTooShort { .. }
            | Self::BodyTooLong { .. } => ReplyCode::FRAME_ERROR,
            Self::BadMethod { .. } | Self::BadContentHeader { .. } | Self::BadFieldTable { .. } => {
                ReplyCode::SYNTAX_ERROR
            }
            Self::UnknownMethod { .. } | Self::UnknownContentClass { .. } => {
                ReplyCode::COMMAND_INVALID
            }
            Self::UnexpectedFrame { .. } | Self::ContentClassMismatch { .. } => {
                ReplyCode::UNEXPECTED_FRAME
            }
        }
    }

    /// The class and method ids to put in a `connection.close` answering this error, when the
    /// offending frame was a method frame (0, 0 otherwise, as the spec allows).
    pub fn offending_method(&self) -> (ClassId, u16) {
        match self {
            Self::UnknownMethod {
                class_id,
                method_id,
            }
            | Self::BadMethod {
                class_id,
                method_id,
                ..
            } => (*class_id, *method_id),
            _ => (ClassId(0), 0),
        }
    }
}

/// An error encoding a frame: something the caller asked for cannot be put on the wire.
///
/// Encoding checks sizes before writing, so an error leaves the output untouched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// A short string longer than 255 bytes.
    #[error("short string of {len} bytes exceeds 255")]
    ShortStrTooLong {
        /// Its length.
        len: usize,
    },
    /// A long string, table, array or body longer than 2^32 - 1 bytes.
    #[error("value of {len} bytes exceeds the 32-bit length limit")]
    TooLong {
        /// Its length.
        len: usize,
    },
    /// A method frame larger than the negotiated frame-max (methods cannot be split).
    #[error("{name} frame of {size} bytes exceeds frame-max {frame_max}")]
    MethodTooLarge {
        /// The method's spec name.
        name: &'static str,
        /// Total frame size it would need.
        size: usize,
        /// The negotiated limit.
        frame_max: u32,
    },
    /// A content header (mostly its headers table) larger than frame-max; nothing was written.
    #[error("content header frame of {size} bytes exceeds frame-max {frame_max}")]
    ContentHeaderTooLarge {
        /// Total frame size it would need.
        size: usize,
        /// The negotiated limit.
        frame_max: u32,
    },
    /// A content body given with a method that carries no content.
    #[error("{name} carries no content")]
    NoContent {
        /// The method's spec name.
        name: &'static str,
    },
}
