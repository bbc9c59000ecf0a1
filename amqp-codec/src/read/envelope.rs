//! Frame envelopes: the 7-byte header in front of every frame's payload (type, channel, size)
//! and the frame-end octet after it; and the 8-byte protocol header, which has neither.
//!
//! One reader for [`crate::FrameDecoder::decode`], `next_frame_len` and
//! [`crate::FrameHeader::parse`], so that they cannot disagree on where a frame ends or which
//! one is refused.

use nom::Parser;

use super::{PResult, long, octet, short};
use crate::constants::{FRAME_END, FRAME_OVERHEAD, FrameType};
use crate::error::DecodeError;
use crate::frame::{FrameHeader, ProtocolHeader};

/// What starts at the front of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Envelope {
    /// A frame: its header and its whole length (header, payload and frame-end).
    Frame {
        /// Type, channel and payload size.
        header: FrameHeader,
        /// Octets of the whole frame.
        len: usize,
    },
    /// The protocol header, 8 octets.
    Protocol(ProtocolHeader),
}

impl Envelope {
    /// Octets it takes.
    #[inline(always)]
    pub(crate) fn len(&self) -> usize {
        match self {
            Self::Frame { len, .. } => *len,
            Self::Protocol(_) => ProtocolHeader::LEN,
        }
    }
}

/// The frame header: type (octet), channel (short), payload size (long).
#[inline(always)]
pub(crate) fn frame_header(input: &[u8]) -> PResult<'_, FrameHeader> {
    (octet, short, long)
        .map(|(frame_type, channel, size)| FrameHeader {
            frame_type: FrameType(frame_type),
            channel,
            size,
        })
        .parse_complete(input)
}

/// Checks a frame header on its own: a known type, a size within `frame_max` (0: no limit).
/// Returns the whole frame's length.
#[inline(always)]
pub(crate) fn check_header(header: &FrameHeader, frame_max: u32) -> Result<usize, DecodeError> {
    match header.frame_type {
        FrameType::METHOD | FrameType::HEADER | FrameType::BODY | FrameType::HEARTBEAT => {}
        frame_type => return Err(DecodeError::UnknownFrameType { frame_type }),
    }
    let total = u64::from(header.size) + FRAME_OVERHEAD as u64;
    if frame_max != 0 && total > u64::from(frame_max) {
        return Err(DecodeError::FrameTooLarge {
            declared: total,
            frame_max,
        });
    }
    // At most 2^32 + 7: fits in a 64-bit usize; on a 32-bit target only with frame-max 0, where
    // it saturates and is never all buffered.
    Ok(usize::try_from(total).unwrap_or(usize::MAX))
}

/// The envelope at the front of `src` as far as its header goes: the protocol header once all
/// 8 octets are in, a frame as soon as its 7-octet header is (its payload may not be).
/// `Ok(None)`: more bytes are needed to know. A frame's header is checked on its own (type,
/// size), so an oversized frame is refused before its payload is awaited.
#[inline(always)]
pub(crate) fn peek(src: &[u8], frame_max: u32) -> Result<Option<Envelope>, DecodeError> {
    let Some(&first) = src.first() else {
        return Ok(None);
    };
    if first == b'A' {
        return protocol_header(src).map(|p| p.map(Envelope::Protocol));
    }
    let Ok((_, header)) = frame_header(src) else {
        return Ok(None);
    };
    let len = check_header(&header, frame_max)?;
    Ok(Some(Envelope::Frame { header, len }))
}

/// The envelope at the front of `src` if the whole of it is buffered, frame-end checked.
/// `Ok(None)`: more bytes are needed. Errors leave the frame's end unknown: the connection
/// must be closed.
#[inline(always)]
pub(crate) fn whole(src: &[u8], frame_max: u32) -> Result<Option<Envelope>, DecodeError> {
    let envelope = peek(src, frame_max)?;
    if let Some(Envelope::Frame { len, .. }) = envelope {
        let Some(&end) = src.get(len - 1) else {
            return Ok(None);
        };
        if end != FRAME_END {
            return Err(DecodeError::BadFrameEnd { found: end });
        }
    }
    Ok(envelope)
}

/// The protocol header, recognised by its leading `A` (no frame type is 65). A wrong prefix is
/// refused as soon as it shows; a right one waits for all 8 octets.
#[cold]
fn protocol_header(src: &[u8]) -> Result<Option<ProtocolHeader>, DecodeError> {
    let prefix = &src[..src.len().min(4)];
    if !b"AMQP".starts_with(prefix) {
        let mut header = [0; 8];
        header[..prefix.len()].copy_from_slice(prefix);
        return Err(DecodeError::BadProtocolHeader { header });
    }
    match src.first_chunk::<8>() {
        Some(&bytes) => ProtocolHeader::decode(bytes).map(Some),
        None => Ok(None),
    }
}
