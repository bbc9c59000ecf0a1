//! Frame envelopes: the 7-byte header in front of every frame's payload (type, channel, size)
//! and the frame-end octet after it; and the 8-byte protocol header, which has neither.
//!
//! One reader for the decoder ([`crate::FrameDecoder::decode`], `next_frame_len`), the batch
//! splitter ([`crate::FrameDecoder::decode_batch`]) and the batch's iterator, so that they cannot
//! disagree on where a frame ends or which one is refused.

use super::deliver::{Hot, hot};
use super::properties::header;
use super::{Fail, PResult, What};
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
// A leaf, like the primitives, rather than `(octet, short, long).map(..)`, which LLVM packs
// into a register and unpacks again: it is read twice per frame (splitting a batch off, then
// iterating it), and this way decoding costs 205 instructions per frame instead of 223
// (`benches/callgrind minimal-64B-whole`).
#[inline(always)]
pub(crate) fn frame_header(input: &[u8]) -> PResult<'_, FrameHeader> {
    match input.split_first_chunk::<7>() {
        Some((&[frame_type, c0, c1, s0, s1, s2, s3], rest)) => Ok((
            rest,
            FrameHeader {
                frame_type: FrameType(frame_type),
                channel: u16::from_be_bytes([c0, c1]),
                size: u32::from_be_bytes([s0, s1, s2, s3]),
            },
        )),
        None => Err(nom::Err::Error(Fail::Truncated(What::Octet))),
    }
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

/// Steps over the whole frames at the front of `src` whose envelopes are sound: how many, and
/// the octets they take. The first frame's error is returned; a later frame's stops the walk
/// before it (it is reported when it comes first).
///
/// When the whole frames end with a delivery whose body has not arrived (its `basic.deliver`,
/// and its header if that came too), those are left out, for the next walk to take with their
/// body. A batch then holds whole deliveries, which can be read in place, and none of its bytes
/// is kept past it by an assembler awaiting the rest of a message; so the read buffer is no
/// longer shared when the next read is appended to it, and is reused instead of reallocated
/// once per read (`benches/callgrind minimal-4KiB-stream`: 0.72 atomic operations per message
/// before, 0.13 after; on the clock, 75 ns per frame before, 47 after, on a busy machine). At
/// most two frames, each within frame-max, are left out, and only while nothing follows them.
pub(crate) fn whole_frames(src: &[u8], frame_max: u32) -> Result<(usize, usize), DecodeError> {
    let limit = if frame_max == 0 {
        u64::MAX
    } else {
        u64::from(frame_max)
    };
    let mut frames = 0;
    let mut rest = src;
    // Where the last two whole frames start (empty: none).
    let (mut last, mut before_last): (&[u8], &[u8]) = (&[], &[]);
    loop {
        // The common case, inline: a frame of a known type within frame-max, all there.
        while let Ok((after, header)) = frame_header(rest) {
            let known = matches!(
                header.frame_type,
                FrameType::METHOD | FrameType::HEADER | FrameType::BODY | FrameType::HEARTBEAT
            );
            if !known || u64::from(header.size) + FRAME_OVERHEAD as u64 > limit {
                break;
            }
            let end = after
                .get(header.size as usize..)
                .and_then(<[u8]>::split_first);
            let Some((&FRAME_END, next)) = end else {
                break;
            };
            (before_last, last) = (last, rest);
            frames += 1;
            rest = next;
        }
        // Anything else: the protocol header, an error, or a frame not all there.
        match whole(rest, frame_max) {
            Ok(Some(envelope)) => {
                (before_last, last) = (last, rest);
                rest = rest.get(envelope.len()..).unwrap_or_default();
                frames += 1;
            }
            Ok(None) => break,
            Err(err) if frames == 0 => return Err(err),
            // Reported when it comes first; nothing is left out before it.
            Err(_) => return Ok((frames, src.len() - rest.len())),
        }
    }
    let (left_out, from) = match awaiting_body(before_last, last) {
        Awaiting::Nothing => return Ok((frames, src.len() - rest.len())),
        Awaiting::Method => (1, last),
        Awaiting::MethodAndHeader => (2, before_last),
    };
    Ok((frames - left_out, src.len() - from.len()))
}

/// What, of the last two whole frames, is a delivery awaiting its body.
enum Awaiting {
    Nothing,
    /// The last frame, its `basic.deliver`.
    Method,
    /// The last two: its `basic.deliver` and its header, which declares a body.
    MethodAndHeader,
}

/// The header and payload of the checked frame at the front of `src`.
#[inline(always)]
pub(crate) fn frame(src: &[u8]) -> Option<(FrameHeader, &[u8])> {
    let (after, header) = frame_header(src).ok()?;
    Some((header, after.get(..header.size as usize)?))
}

/// Which of the frames starting at `before_last` and `last` (checked; empty: no frame) are a
/// delivery whose body has not arrived: a well-formed `basic.deliver`, and its well-formed
/// header on the same channel declaring a body. Anything malformed is handed out at once, to be
/// reported.
fn awaiting_body(before_last: &[u8], last: &[u8]) -> Awaiting {
    let deliver_channel = |at: &[u8]| match frame(at) {
        Some((h, payload)) if h.frame_type == FrameType::METHOD => {
            matches!(hot(payload), Some(Hot::Deliver(_))).then_some(h.channel)
        }
        _ => None,
    };
    if deliver_channel(last).is_some() {
        return Awaiting::Method;
    }
    let Some((h, payload)) = frame(last) else {
        return Awaiting::Nothing;
    };
    if h.frame_type != FrameType::HEADER {
        return Awaiting::Nothing;
    }
    match (header(payload), deliver_channel(before_last)) {
        (Ok(read), Some(channel)) if read.body_size > 0 && channel == h.channel => {
            Awaiting::MethodAndHeader
        }
        _ => Awaiting::Nothing,
    }
}

/// The envelope at the front of `src`, whose envelopes [`whole_frames`] checked: the envelope,
/// the frame's payload (empty for the protocol header), and what follows it.
#[inline(always)]
pub(crate) fn split_checked(src: &[u8]) -> Option<(Envelope, &[u8], &[u8])> {
    if src.first() == Some(&b'A') {
        let (bytes, rest) = src.split_first_chunk::<8>()?;
        let header = ProtocolHeader::decode(*bytes).ok()?;
        return Some((Envelope::Protocol(header), &[], rest));
    }
    let (after_header, header) = frame_header(src).ok()?;
    let size = header.size as usize;
    let (payload, rest) = after_header.split_at_checked(size)?;
    let len = size + FRAME_OVERHEAD;
    // The frame-end octet.
    let rest = rest.get(1..)?;
    Some((Envelope::Frame { header, len }, payload, rest))
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
