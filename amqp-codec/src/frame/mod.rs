//! Frames: the unit AMQP puts on the wire, one small file per kind.
//!
//! Each kind's file has its payload's `decode` and `encode` side by side; this module holds the
//! [`Frame`] enum and the 7-byte header every frame but the protocol header starts with.

mod body;
mod content_header;
mod header;
mod heartbeat;
mod method;
mod protocol_header;

pub use header::FrameHeader;
pub use protocol_header::ProtocolHeader;

use bytes::{BufMut, Bytes, BytesMut};

use crate::constants::{FRAME_END, FRAME_OVERHEAD, FrameType};
use crate::error::{DecodeError, EncodeError};
use crate::methods::Method;
use crate::properties::ContentHeader;

/// One decoded frame. Strings, tables and bodies inside it are slices of the read buffer.
// Boxing the large variant would cost a heap allocation per message; moves are cheaper.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// `AMQP` and a version: the first thing a client sends, or a server's answer to a version it
    /// does not speak (followed by closing the socket).
    ProtocolHeader(ProtocolHeader),
    /// A method on a channel (0 for the connection).
    Method {
        /// The channel.
        channel: u16,
        /// The method.
        method: Method,
    },
    /// A content header, following a content-bearing method.
    Header {
        /// The channel.
        channel: u16,
        /// The header.
        header: ContentHeader,
    },
    /// A piece of a content body, following the header.
    Body {
        /// The channel.
        channel: u16,
        /// The bytes, shared with the read buffer.
        body: Bytes,
    },
    /// A heartbeat (always channel 0).
    Heartbeat,
}

impl Frame {
    /// The channel the frame belongs to (0 for heartbeats and the protocol header).
    pub fn channel(&self) -> u16 {
        match self {
            Self::Method { channel, .. }
            | Self::Header { channel, .. }
            | Self::Body { channel, .. } => *channel,
            Self::Heartbeat | Self::ProtocolHeader(_) => 0,
        }
    }

    /// The frame type octet (`None` for the protocol header, which has none).
    pub fn frame_type(&self) -> Option<FrameType> {
        Some(match self {
            Self::Method { .. } => FrameType::METHOD,
            Self::Header { .. } => FrameType::HEADER,
            Self::Body { .. } => FrameType::BODY,
            Self::Heartbeat => FrameType::HEARTBEAT,
            Self::ProtocolHeader(_) => return None,
        })
    }

    /// Octets the whole frame takes on the wire.
    pub fn encoded_len(&self) -> usize {
        match self {
            Self::ProtocolHeader(_) => ProtocolHeader::LEN,
            Self::Method { method, .. } => FRAME_OVERHEAD + method.encoded_len(),
            Self::Header { header, .. } => FRAME_OVERHEAD + header.encoded_len(),
            Self::Body { body, .. } => FRAME_OVERHEAD + body.len(),
            Self::Heartbeat => FRAME_OVERHEAD,
        }
    }

    /// Appends the whole frame to `dst` (copying a body; see [`crate::Outbound`] to chain bodies
    /// instead). The size is computed first, so the header is written once, never patched.
    pub fn encode(&self, dst: &mut BytesMut) -> Result<(), EncodeError> {
        let (frame_type, channel) = match self {
            Self::ProtocolHeader(h) => {
                h.encode(dst);
                return Ok(());
            }
            Self::Method { channel, .. } => (FrameType::METHOD, *channel),
            Self::Header { channel, .. } => (FrameType::HEADER, *channel),
            Self::Body { channel, .. } => (FrameType::BODY, *channel),
            Self::Heartbeat => (FrameType::HEARTBEAT, 0),
        };
        let size = self.encoded_len() - FRAME_OVERHEAD;
        let size32 = u32::try_from(size).map_err(|_| EncodeError::TooLong { len: size })?;
        dst.reserve(size + FRAME_OVERHEAD);
        FrameHeader {
            frame_type,
            channel,
            size: size32,
        }
        .encode(dst);
        match self {
            Self::Method { method, .. } => method.encode(dst),
            Self::Header { header, .. } => header.encode(dst),
            Self::Body { body, .. } => dst.put_slice(body),
            Self::Heartbeat | Self::ProtocolHeader(_) => {}
        }
        dst.put_u8(FRAME_END);
        Ok(())
    }

    /// Decodes a frame's payload, given its header (already checked against frame-max and for
    /// its frame-end octet). The payload is moved in, so that the decoded frame can keep it as
    /// one of its slices rather than take another reference to it.
    // Returns the decoder's own `Result<Option<Frame>>` and is inlined into it, so that each
    // frame is built where the decoder returns it: re-wrapping a `Result<Frame>` copied the
    // 152-byte frame once more per frame.
    #[inline(always)]
    pub(crate) fn decode_payload(
        header: FrameHeader,
        payload: Bytes,
    ) -> Result<Option<Frame>, DecodeError> {
        let channel = header.channel;
        match header.frame_type {
            FrameType::BODY => Ok(Some(body::decode(channel, payload))),
            FrameType::METHOD => method::decode(channel, payload),
            FrameType::HEADER => content_header::decode(channel, payload).map(Some),
            FrameType::HEARTBEAT => heartbeat::decode(header).map(Some),
            frame_type => Err(DecodeError::UnknownFrameType { frame_type }),
        }
    }
}
