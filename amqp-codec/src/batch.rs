//! [`FrameBatch`]: every whole frame of a read buffer split off at once, read in place.

use bytes::Bytes;

use crate::constants::FrameType;
use crate::delivery::{DeliveryRef, Parts, owned_deliver};
use crate::error::DecodeError;
use crate::frame::Frame;
use crate::methods::Method;
use crate::read::deliver::{DeliverArgs, Hot, hot};
use crate::read::envelope::frame;
use crate::read::envelope::{Envelope, split_checked};
use crate::read::properties::{fixed, header};

/// The whole frames at the front of a read buffer, split off at once by
/// [`crate::FrameDecoder::decode_batch`]: one shared chunk, so one reference count for all of
/// them where [`crate::FrameDecoder::decode`] takes one per frame. Their envelopes were checked
/// when the batch was split off; their payloads are read as the batch is iterated.
///
/// ```
/// use amqp_codec::{FrameDecoder, Inbound};
/// use bytes::BytesMut;
///
/// let mut decoder = FrameDecoder::new();
/// // Two heartbeats and half of a third.
/// let mut buf = BytesMut::from(&[8u8, 0, 0, 0, 0, 0, 0, 0xCE, 8, 0, 0, 0, 0, 0, 0, 0xCE, 8, 0][..]);
/// let batch = decoder.decode_batch(&mut buf)?.expect("two whole frames");
/// assert_eq!(batch.frames(), 2);
/// assert_eq!(buf.len(), 2, "the partial frame stays in the buffer");
/// for item in &batch {
///     assert!(matches!(item?, Inbound::Frame(amqp_codec::Frame::Heartbeat)));
/// }
/// # Ok::<(), amqp_codec::DecodeError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameBatch {
    bytes: Bytes,
    frames: usize,
}

impl FrameBatch {
    /// `frames` whole frames, their envelopes checked, in `bytes`.
    pub(crate) fn new(bytes: Bytes, frames: usize) -> Self {
        Self { bytes, frames }
    }

    /// How many frames it holds.
    pub fn frames(&self) -> usize {
        self.frames
    }

    /// Its bytes: the frames, envelopes included.
    pub fn as_bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// Its frames in order, deliveries read whole and in place (see [`Inbound`]).
    pub fn iter(&self) -> BatchIter<'_> {
        BatchIter {
            owner: &self.bytes,
            rest: &self.bytes,
            max_body_size: u64::MAX,
        }
    }
}

impl<'a> IntoIterator for &'a FrameBatch {
    type Item = Result<Inbound<'a>, DecodeError>;
    type IntoIter = BatchIter<'a>;
    fn into_iter(self) -> BatchIter<'a> {
        self.iter()
    }
}

/// What a [`FrameBatch`] holds, in order.
// Boxing either variant would cost an allocation per message; moves are cheaper.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound<'a> {
    /// A whole delivery: `basic.deliver`, its content header and its body in one body frame (or
    /// none, for an empty body), back to back on one channel, read in place. It stands for all
    /// of those frames: the channel's [`crate::ContentAssembler`] does not see them, and must be
    /// between messages ([`crate::ContentAssembler::expect_idle`]).
    Delivery(DeliveryRef<'a>),
    /// Any other frame, as [`crate::FrameDecoder::decode`] would have returned it: every frame
    /// of a delivery that is not read whole (a body in several frames, other frames between
    /// its own, a body over [`BatchIter::max_body_size`], anything malformed) comes this way,
    /// one frame at a time, for the assembler.
    Frame(Frame),
}

/// Iterator over a [`FrameBatch`]. A frame whose payload does not decode is an error item (the
/// same error [`crate::FrameDecoder::decode`] returns for it), and the iteration goes on with
/// the next frame.
#[derive(Debug, Clone)]
pub struct BatchIter<'a> {
    /// The batch's bytes, to share for owned frames.
    owner: &'a Bytes,
    /// The frames not read yet.
    rest: &'a [u8],
    /// Bodies larger than this are not read whole.
    max_body_size: u64,
}

impl<'a> BatchIter<'a> {
    /// Hands a delivery whose body exceeds `limit` bytes over frame by frame
    /// ([`Inbound::Frame`]), so that an assembler with that limit drops it, as it would have
    /// from [`crate::FrameDecoder::decode`]'s frames.
    pub fn max_body_size(mut self, limit: u64) -> Self {
        self.max_body_size = limit;
        self
    }

    /// The frames not read yet, as a batch of their own that shares this one's bytes (no
    /// copy), or `None` if none is left: a reader that must stop in the middle of a batch
    /// (a client whose consumer's buffer is full) keeps it and iterates it later.
    pub fn rest(&self) -> Option<FrameBatch> {
        if self.rest.is_empty() {
            return None;
        }
        let mut frames = 0;
        let mut left = self.rest;
        while let Some((_, _, after)) = split_checked(left) {
            frames += 1;
            left = after;
        }
        Some(FrameBatch::new(self.owner.slice_ref(self.rest), frames))
    }

    /// The delivery that starts with the method frame just read (`args`, on `channel`; `start`
    /// is where its frame began), if its header and body follow on the same channel and read
    /// whole; the iteration then moves past them. Otherwise `None`, and nothing moves.
    #[inline(always)]
    fn whole_delivery(
        &mut self,
        channel: u16,
        args: DeliverArgs<'a>,
        start: &'a [u8],
    ) -> Option<DeliveryRef<'a>> {
        let (Envelope::Frame { header: h, .. }, payload, mut rest) = split_checked(self.rest)?
        else {
            return None;
        };
        if h.frame_type != FrameType::HEADER || h.channel != channel {
            return None;
        }
        // A body in several frames is handed over before the properties are checked.
        let (_, (_, _, body_size)) = fixed(payload).ok()?;
        if body_size != 0 && frame(rest).map(|(b, _)| u64::from(b.size)) != Some(body_size) {
            return None;
        }
        // A malformed header is the assembler's to report; a nonzero weight (it should be 0)
        // is kept by the owned header, so that it re-encodes as it came.
        let read = header(payload).ok()?;
        if read.weight != 0 || read.body_size > self.max_body_size {
            return None;
        }
        let mut body: &[u8] = &[];
        if read.body_size != 0 {
            let (Envelope::Frame { header: b, .. }, payload, after) = split_checked(rest)? else {
                return None;
            };
            if b.frame_type != FrameType::BODY
                || b.channel != channel
                || payload.len() as u64 != read.body_size
            {
                return None;
            }
            (body, rest) = (payload, after);
        }
        let frames = start.get(..start.len() - rest.len()).unwrap_or_default();
        // An owned `Delivery` keeps 32-bit offsets: a larger one (a body near 4 GiB in one
        // frame) goes frame by frame.
        if u32::try_from(frames.len()).is_err() {
            return None;
        }
        self.rest = rest;
        Some(DeliveryRef::new(
            Parts {
                channel,
                delivery_tag: args.delivery_tag,
                redelivered: args.redelivered,
                consumer_tag: args.consumer_tag,
                exchange: args.exchange,
                routing_key: args.routing_key,
                flags: read.flags,
                properties: read.raw,
                body,
                frames,
            },
            self.owner,
        ))
    }
}

impl<'a> Iterator for BatchIter<'a> {
    type Item = Result<Inbound<'a>, DecodeError>;

    // Inlined into the caller's loop: a delivery is built where the caller reads it. Anything
    // else is `one_frame`'s, out of line.
    #[inline(always)]
    fn next(&mut self) -> Option<Self::Item> {
        let start = self.rest;
        let (envelope, payload, rest) = split_checked(start)?;
        self.rest = rest;
        let mut method = None;
        if let Envelope::Frame { header, .. } = envelope
            && header.frame_type == FrameType::METHOD
        {
            method = hot(payload);
            if let Some(Hot::Deliver(args)) = method
                && let Some(delivery) = self.whole_delivery(header.channel, args, start)
            {
                return Some(Ok(Inbound::Delivery(delivery)));
            }
        }
        Some(self.one_frame(envelope, payload, method))
    }
}

impl<'a> BatchIter<'a> {
    /// The frame of `envelope` and `payload` on its own, `method` being what
    /// [`crate::read::deliver`] read of its payload if it is a method frame: owned, as
    /// [`crate::FrameDecoder::decode`] returns it (confirms, which hold no string, share
    /// nothing).
    #[inline(never)]
    fn one_frame(
        &self,
        envelope: Envelope,
        payload: &'a [u8],
        method: Option<Hot<'a>>,
    ) -> Result<Inbound<'a>, DecodeError> {
        let header = match envelope {
            Envelope::Protocol(header) => {
                return Ok(Inbound::Frame(Frame::ProtocolHeader(header)));
            }
            Envelope::Frame { header, .. } => header,
        };
        let channel = header.channel;
        let method = match method {
            Some(Hot::Deliver(args)) => Method::BasicDeliver(owned_deliver(args, self.owner)),
            Some(Hot::Ack(ack)) => Method::BasicAck(ack),
            Some(Hot::Nack(nack)) => Method::BasicNack(nack),
            None => {
                let payload = self.owner.slice_ref(payload);
                return match Frame::decode_payload(header, payload)? {
                    Some(frame) => Ok(Inbound::Frame(frame)),
                    // Every frame type of a checked envelope decodes to a frame.
                    None => Err(DecodeError::UnknownFrameType {
                        frame_type: header.frame_type,
                    }),
                };
            }
        };
        Ok(Inbound::Frame(Frame::Method { channel, method }))
    }
}
