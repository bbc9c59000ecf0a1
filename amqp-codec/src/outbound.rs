//! The outbound queue: frames encoded for one vectored write, content bodies chained, not copied
//! (small ones excepted).
//!
//! Method frames, content headers and frame headers are encoded into one growing buffer. When a
//! body is queued, what the buffer holds so far is frozen into a chunk and the caller's body
//! [`Bytes`] (or, split at frame-max, slices of it) follow as chunks of their own, so the body
//! is never copied on its way to the socket. A body of at most
//! [`Outbound::COPY_BODY_UP_TO`] bytes is copied into the buffer instead: cheaper than a chunk
//! of its own, and a run of small messages then goes out as one piece. The queue implements
//! [`Buf`], and [`Buf::chunks_vectored`] hands everything queued to one `writev`.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes, BytesMut};

use crate::constants::{ClassId, FRAME_END, FRAME_HEADER_SIZE, FRAME_OVERHEAD, FrameType};
use crate::error::EncodeError;
use crate::frame::{Frame, FrameHeader, ProtocolHeader};
use crate::methods::{BasicAck, BasicPublish, Method};
use crate::properties::BasicProperties;
use crate::strings::ShortStr;
use crate::wire::BufSink;

/// Encoded frames waiting to be written, in order.
///
/// ```
/// use amqp_codec::{BasicProperties, Method, Outbound, ShortStr, methods::BasicPublish};
/// use bytes::{Buf, Bytes};
///
/// let mut out = Outbound::new();
/// let publish = Method::BasicPublish(BasicPublish {
///     routing_key: ShortStr::from_static("tasks"),
///     ..Default::default()
/// });
/// let body = Bytes::from_static(b"hello");
/// out.push_content(1, &publish, &BasicProperties::default(), body, 131_072)?;
/// // method frame + header frame + body frame
/// assert_eq!(out.remaining(), (8 + 4 + 2 + 1 + 6 + 1) + (8 + 14) + (8 + 5));
/// # Ok::<(), amqp_codec::EncodeError>(())
/// ```
#[derive(Debug, Default)]
pub struct Outbound {
    /// Bytes encoded after the last chunk; they go out after every chunk.
    buf: BytesMut,
    /// Frozen pieces ready to go, ahead of `buf`: encoded frames and chained bodies.
    chunks: VecDeque<Bytes>,
    /// Total length of `chunks`, so `remaining` does not walk them.
    chunked_len: usize,
    /// The frame queued last, if it is a basic.ack still in `buf`: what
    /// [`extend_ack`](Self::extend_ack) may rewrite. Any other frame queued, and any byte
    /// taken, clears it.
    last_ack: Option<LastAck>,
}

/// Where the basic.ack queued last sits in [`Outbound::buf`].
#[derive(Debug, Clone, Copy)]
struct LastAck {
    /// Its channel.
    channel: u16,
    /// Its delivery tag.
    delivery_tag: u64,
    /// Offset of its frame header in `buf`.
    offset: usize,
}

/// A basic.ack frame: header, class and method ids, delivery tag, the `multiple` bit, frame-end.
const ACK_FRAME_LEN: usize = FRAME_HEADER_SIZE + 4 + 8 + 1 + 1;
/// Offset of the delivery tag in a basic.ack frame.
const ACK_TAG_AT: usize = FRAME_HEADER_SIZE + 4;

impl Outbound {
    /// Content bodies up to this many bytes are copied into the encode buffer rather than
    /// chained: the split that freezes the buffer, the chunk and the iovec a chained body costs
    /// are more than copying it (callgrind on the publish bench's child with 64 B bodies: 14%
    /// fewer instructions; A/B on the multi-thread runtime, 0.75 against 0.85 µs of CPU per
    /// confirmed publish).
    pub const COPY_BODY_UP_TO: usize = 512;

    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty queue with room for `capacity` bytes of encoded frames.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            buf: BytesMut::with_capacity(capacity),
            ..Self::default()
        }
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// Queues the protocol header for AMQP 0-9-1.
    pub fn push_protocol_header(&mut self) {
        self.last_ack = None;
        ProtocolHeader::AMQP_0_9_1.encode(&mut self.buf);
    }

    /// Queues a heartbeat frame.
    pub fn push_heartbeat(&mut self) {
        self.last_ack = None;
        self.frame_header(FrameType::HEARTBEAT, 0, 0);
        self.buf.extend_from_slice(&[FRAME_END]);
    }

    /// Queues a method frame, refusing one larger than `frame_max` (0: no limit).
    pub fn push_method(
        &mut self,
        channel: u16,
        method: &Method,
        frame_max: u32,
    ) -> Result<(), EncodeError> {
        let len = method.encoded_len();
        check_method_size(method.name(), len, frame_max)?;
        self.put_method(channel, method, len);
        Ok(())
    }

    /// Queues basic.ack on `channel`, a frame [`extend_ack`](Self::extend_ack) may later
    /// rewrite while it is the last one queued.
    pub fn push_ack(&mut self, channel: u16, delivery_tag: u64, multiple: bool) {
        self.room(ACK_FRAME_LEN);
        let offset = self.buf.len();
        let mut frame = [0; ACK_FRAME_LEN];
        frame[..FRAME_HEADER_SIZE].copy_from_slice(&frame_header(
            FrameType::METHOD,
            channel,
            ACK_FRAME_LEN - FRAME_OVERHEAD,
        ));
        frame[7..9].copy_from_slice(&BasicAck::CLASS_ID.0.to_be_bytes());
        frame[9..11].copy_from_slice(&BasicAck::METHOD_ID.to_be_bytes());
        frame[ACK_TAG_AT..ACK_TAG_AT + 8].copy_from_slice(&delivery_tag.to_be_bytes());
        frame[ACK_TAG_AT + 8] = u8::from(multiple);
        frame[ACK_FRAME_LEN - 1] = FRAME_END;
        self.buf.extend_from_slice(&frame);
        self.last_ack = Some(LastAck {
            channel,
            delivery_tag,
            offset,
        });
    }

    /// Turns the frame queued last, if it is a basic.ack on `channel` for a tag below
    /// `delivery_tag` and has not been taken yet, into basic.ack(`delivery_tag`, multiple).
    /// Returns false (and changes nothing) otherwise.
    ///
    /// This is how acks of consecutive deliveries coalesce: the caller knows what the broker
    /// does not, that every delivery up to `delivery_tag` has been settled by this frame or an
    /// earlier one, so one multiple ack says what the single acks would have said. Only the last
    /// frame can be rewritten, so no other frame for the channel ever moves past it.
    pub fn extend_ack(&mut self, channel: u16, delivery_tag: u64) -> bool {
        let Some(last) = &mut self.last_ack else {
            return false;
        };
        if last.channel != channel || last.delivery_tag >= delivery_tag {
            return false;
        }
        let Some(frame) = self.buf.get_mut(last.offset..last.offset + ACK_FRAME_LEN) else {
            return false;
        };
        frame[ACK_TAG_AT..ACK_TAG_AT + 8].copy_from_slice(&delivery_tag.to_be_bytes());
        frame[ACK_TAG_AT + 8] = 1;
        last.delivery_tag = delivery_tag;
        true
    }

    /// Queues any frame; a body frame's bytes are chained, not copied.
    pub fn push_frame(&mut self, frame: &Frame, frame_max: u32) -> Result<(), EncodeError> {
        self.last_ack = None;
        match frame {
            Frame::Method { channel, method } => self.push_method(*channel, method, frame_max),
            Frame::Body { channel, body } => {
                let size = u32::try_from(body.len())
                    .map_err(|_| EncodeError::TooLong { len: body.len() })?;
                self.frame_header(FrameType::BODY, *channel, size);
                self.chain(body.clone());
                self.buf.extend_from_slice(&[FRAME_END]);
                Ok(())
            }
            other => {
                if let Frame::Header { header, .. } = other {
                    check_header_size(header.encoded_len(), frame_max)?;
                }
                other.encode(&mut self.buf)
            }
        }
    }

    /// Queues a content-bearing method (publish, or deliver/get-ok/return for a server), its
    /// content header and its body, split into body frames of at most `frame_max` bytes
    /// (0: no limit).
    ///
    /// Sizes are checked before anything is written: a method or content header larger than
    /// frame-max (say, a huge `headers` table) is refused and the queue is left as it was. The
    /// body is moved in and chained (copied if at most [`Outbound::COPY_BODY_UP_TO`] bytes);
    /// it is only sliced, never copied, when it spans frames.
    pub fn push_content(
        &mut self,
        channel: u16,
        method: &Method,
        properties: &BasicProperties,
        body: Bytes,
        frame_max: u32,
    ) -> Result<(), EncodeError> {
        // basic.publish, the message path, by hand (its reserved ticket is 0 in practice;
        // another value goes through the generic writer so that it round-trips).
        if let Method::BasicPublish(p) = method
            && p.ticket == 0
        {
            let args = PublishArgs {
                exchange: &p.exchange,
                routing_key: &p.routing_key,
                mandatory: p.mandatory,
                immediate: p.immediate,
            };
            return self.push_publish(channel, &args, properties, body, frame_max);
        }
        if !method.has_content() {
            return Err(EncodeError::NoContent {
                name: method.name(),
            });
        }
        let method_len = method.encoded_len();
        check_method_size(method.name(), method_len, frame_max)?;
        let info = method.info();
        let head = MethodHead {
            class_id: info.class_id,
            method_id: info.method_id,
            len: method_len,
        };
        self.put_content(channel, &head, properties, body, frame_max, |buf| {
            method.write_args(&mut BufSink::new(buf));
        })
    }

    /// Queues a basic.publish whose names are borrowed (see [`PublishArgs`]), its content
    /// header and its body, as [`push_content`](Self::push_content) does: nothing is made per
    /// message but the frames themselves.
    ///
    /// ```
    /// use amqp_codec::{BasicProperties, Outbound, PublishArgs};
    /// let mut out = Outbound::new();
    /// let args = PublishArgs::new(b"", b"tasks");
    /// out.push_publish(1, &args, &BasicProperties::default(), "hello".into(), 131_072)?;
    /// # Ok::<(), amqp_codec::EncodeError>(())
    /// ```
    pub fn push_publish(
        &mut self,
        channel: u16,
        args: &PublishArgs<'_>,
        properties: &BasicProperties,
        body: Bytes,
        frame_max: u32,
    ) -> Result<(), EncodeError> {
        for name in [args.exchange, args.routing_key] {
            if name.len() > ShortStr::MAX_LEN {
                return Err(EncodeError::ShortStrTooLong { len: name.len() });
            }
        }
        // class, method, ticket, two short strings, the bits.
        let method_len = 4 + 2 + 1 + args.exchange.len() + 1 + args.routing_key.len() + 1;
        check_method_size("basic.publish", method_len, frame_max)?;
        let head = MethodHead {
            class_id: ClassId::BASIC,
            method_id: BasicPublish::METHOD_ID,
            len: method_len,
        };
        self.put_content(channel, &head, properties, body, frame_max, |buf| {
            // ticket 0, exchange, routing key, then the bits mandatory and immediate, LSB
            // first: by hand, a third of the instructions of the generic field writer.
            buf.extend_from_slice(&[0, 0, args.exchange.len() as u8]);
            buf.extend_from_slice(args.exchange);
            buf.extend_from_slice(&[args.routing_key.len() as u8]);
            buf.extend_from_slice(args.routing_key);
            buf.extend_from_slice(&[u8::from(args.mandatory) | (u8::from(args.immediate) << 1)]);
        })
    }

    /// The frames of one message: the method (its arguments written by `write_args`), the
    /// content header, and the body chained in frames of at most `frame_max` bytes.
    fn put_content(
        &mut self,
        channel: u16,
        method: &MethodHead,
        properties: &BasicProperties,
        body: Bytes,
        frame_max: u32,
        write_args: impl FnOnce(&mut BytesMut),
    ) -> Result<(), EncodeError> {
        self.last_ack = None;
        let header_len = 12 + properties.encoded_len();
        check_header_size(header_len, frame_max)?;
        let body_len = body.len();

        // Room, once, for all that goes into `buf`: the method frame, the header frame, and
        // the first body frame's header and frame-end (further body frames reserve their own).
        // Fixed-size parts are gathered into arrays and written in one piece each.
        let copied = if body_len <= Self::COPY_BODY_UP_TO {
            body_len
        } else {
            0
        };
        self.room(3 * FRAME_OVERHEAD + method.len + header_len + copied);
        let mut method_head = [0; FRAME_HEADER_SIZE + 4];
        method_head[..7].copy_from_slice(&frame_header(FrameType::METHOD, channel, method.len));
        method_head[7..9].copy_from_slice(&method.class_id.0.to_be_bytes());
        method_head[9..].copy_from_slice(&method.method_id.to_be_bytes());
        self.buf.extend_from_slice(&method_head);
        write_args(&mut self.buf);
        // The method's frame-end, then the header frame up to its properties.
        let mut head = [0; 1 + FRAME_HEADER_SIZE + 14];
        head[0] = FRAME_END;
        head[1..8].copy_from_slice(&frame_header(FrameType::HEADER, channel, header_len));
        head[8..10].copy_from_slice(&ClassId::BASIC.0.to_be_bytes());
        // head[10..12]: weight, 0.
        head[12..20].copy_from_slice(&(body_len as u64).to_be_bytes());
        head[20..22].copy_from_slice(&properties.wire_flags().to_be_bytes());
        self.buf.extend_from_slice(&head);
        self.buf.extend_from_slice(properties.wire_raw());

        // Each body frame's header goes out with the previous frame's frame-end.
        let max_chunk = max_body_per_frame(frame_max);
        if body_len <= max_chunk {
            if body_len > 0 {
                self.put_body_head(channel, body_len);
                if copied > 0 {
                    self.buf.extend_from_slice(&body);
                } else {
                    self.chain(body);
                }
            }
        } else {
            let mut offset = 0;
            while offset < body_len {
                let end = (offset + max_chunk).min(body_len);
                self.room(FRAME_OVERHEAD);
                self.put_body_head(channel, end - offset);
                self.chain(body.slice(offset..end));
                offset = end;
            }
        }
        self.buf.extend_from_slice(&[FRAME_END]);
        Ok(())
    }

    /// The previous frame's frame-end, then a body frame's header.
    fn put_body_head(&mut self, channel: u16, len: usize) {
        let mut head = [FRAME_END; 1 + FRAME_HEADER_SIZE];
        head[1..].copy_from_slice(&frame_header(FrameType::BODY, channel, len));
        self.buf.extend_from_slice(&head);
    }

    /// A method frame's header, class id and method id, in one piece.
    fn put_method_head(&mut self, channel: u16, method: &Method, len: usize) {
        let info = method.info();
        let mut head = [0; FRAME_HEADER_SIZE + 4];
        head[..7].copy_from_slice(&frame_header(FrameType::METHOD, channel, len));
        head[7..9].copy_from_slice(&info.class_id.0.to_be_bytes());
        head[9..].copy_from_slice(&info.method_id.to_be_bytes());
        self.buf.extend_from_slice(&head);
    }

    fn put_method(&mut self, channel: u16, method: &Method, len: usize) {
        self.last_ack = None;
        self.room(len + FRAME_OVERHEAD);
        self.put_method_head(channel, method, len);
        method.write_args(&mut BufSink::new(&mut self.buf));
        self.buf.extend_from_slice(&[FRAME_END]);
    }

    fn frame_header(&mut self, frame_type: FrameType, channel: u16, size: u32) {
        FrameHeader {
            frame_type,
            channel,
            size,
        }
        .encode(&mut self.buf);
    }

    /// Makes room in `buf` for `needed` more bytes. When it must grow, it grows by at least
    /// [`MIN_BLOCK`]: frames queued one by one (a publish freezes `buf` into a chunk each time)
    /// then share one allocation instead of each paying for a buffer of their own exact size
    /// and for its reference count.
    fn room(&mut self, needed: usize) {
        if self.buf.capacity() - self.buf.len() < needed {
            self.buf.reserve(needed.max(MIN_BLOCK));
        }
    }

    /// Freezes what `buf` holds into a chunk, then queues `bytes` after it.
    fn chain(&mut self, bytes: Bytes) {
        if !self.buf.is_empty() {
            let head = self.buf.split().freeze();
            self.chunked_len += head.len();
            self.chunks.push_back(head);
        }
        if !bytes.is_empty() {
            self.chunked_len += bytes.len();
            self.chunks.push_back(bytes);
        }
    }
}

/// Smallest growth of the encode buffer (see [`Outbound::room`]).
const MIN_BLOCK: usize = 8 * 1024;

/// A frame header's bytes; `len` was checked to fit a `u32` (a payload of at most frame-max, or of
/// a body slice of at most `u32::MAX - 8`).
fn frame_header(frame_type: FrameType, channel: u16, len: usize) -> [u8; FRAME_HEADER_SIZE] {
    FrameHeader {
        frame_type,
        channel,
        size: len as u32,
    }
    .to_bytes()
}

fn max_body_per_frame(frame_max: u32) -> usize {
    if frame_max == 0 {
        u32::MAX as usize - FRAME_OVERHEAD
    } else {
        (frame_max as usize).saturating_sub(FRAME_OVERHEAD).max(1)
    }
}

fn check_method_size(name: &'static str, len: usize, frame_max: u32) -> Result<(), EncodeError> {
    let size = len + FRAME_OVERHEAD;
    if (frame_max != 0 && size > frame_max as usize) || u32::try_from(len).is_err() {
        return Err(EncodeError::MethodTooLarge {
            name,
            size,
            frame_max,
        });
    }
    Ok(())
}

fn check_header_size(len: usize, frame_max: u32) -> Result<(), EncodeError> {
    let size = len + FRAME_OVERHEAD;
    if (frame_max != 0 && size > frame_max as usize) || u32::try_from(len).is_err() {
        return Err(EncodeError::ContentHeaderTooLarge { size, frame_max });
    }
    Ok(())
}

impl Buf for Outbound {
    fn remaining(&self) -> usize {
        self.chunked_len + self.buf.len()
    }

    fn chunk(&self) -> &[u8] {
        match self.chunks.front() {
            Some(c) => c,
            None => &self.buf,
        }
    }

    fn advance(&mut self, mut cnt: usize) {
        if cnt > 0 {
            // Offsets into `buf` move, and the frame may be on its way to the socket.
            self.last_ack = None;
        }
        while cnt > 0 {
            let Some(front) = self.chunks.front_mut() else {
                self.buf.advance(cnt);
                return;
            };
            if cnt < front.len() {
                front.advance(cnt);
                self.chunked_len -= cnt;
                return;
            }
            cnt -= front.len();
            self.chunked_len -= front.len();
            self.chunks.pop_front();
        }
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for chunk in self.chunks.iter().map(|c| &c[..]).chain([&self.buf[..]]) {
            if n == dst.len() {
                break;
            }
            if !chunk.is_empty() {
                dst[n] = IoSlice::new(chunk);
                n += 1;
            }
        }
        n
    }
}

/// A method frame's fixed part: what it is and how long its payload is.
struct MethodHead {
    class_id: ClassId,
    method_id: u16,
    /// The payload's length (class and method ids included).
    len: usize,
}

/// basic.publish's arguments with borrowed names, for [`Outbound::push_publish`]: a client
/// publishing with `&str` names writes them straight into the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishArgs<'a> {
    /// The exchange (empty for the default exchange); at most 255 bytes.
    pub exchange: &'a [u8],
    /// The routing key; at most 255 bytes.
    pub routing_key: &'a [u8],
    /// Return the message if no queue receives it.
    pub mandatory: bool,
    /// Deprecated by RabbitMQ; kept for other brokers.
    pub immediate: bool,
}

impl<'a> PublishArgs<'a> {
    /// A plain publish to `exchange` with `routing_key`.
    pub fn new(exchange: &'a [u8], routing_key: &'a [u8]) -> Self {
        Self {
            exchange,
            routing_key,
            mandatory: false,
            immediate: false,
        }
    }
}
