//! Decoding in batches ([`FrameDecoder::decode_batch`], deliveries read whole and in place) is
//! the same as decoding frame by frame and assembling ([`FrameDecoder::decode`],
//! [`ContentAssembler`]): for random streams of deliveries, other content and any frame, cut
//! into random reads, corrupted or not, both give the same messages and the same first error
//! (what a batch leaves out at the end of a stream, a delivery awaiting its body, read frame by
//! frame then).
//! Reading a delivery in place takes no reference count; keeping it takes one.

mod common;

use std::collections::HashMap;

use amqp_codec::methods::{BasicAck, BasicDeliver};
use amqp_codec::{
    Assembled, BasicProperties, ContentAssembler, ContentHeader, DecodeError, Frame, FrameDecoder,
    Inbound, Method, Outbound, PropertiesBuilder, ProtocolHeader, ShortStr,
};
use bytes::{Buf, Bytes, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;

use common::{any_method, bytes_up_to, content_method, properties};

/// Small enough that bodies over 504 bytes take several frames.
const FRAME_MAX: u32 = 512;
/// The assemblers' limit, and the batches': larger bodies are dropped as they come.
const MAX_BODY: u64 = 300;

/// What a client sees: messages and methods per channel, and the first connection error.
#[derive(Debug, PartialEq)]
enum Event {
    Assembled(u16, Assembled),
    Heartbeat,
    Protocol(ProtocolHeader),
    Error(DecodeError),
}

/// A client's per-channel assemblers, fed frames (or whole deliveries); `Err` once the
/// connection would be closed.
#[derive(Default)]
struct Client {
    channels: HashMap<u16, ContentAssembler>,
    events: Vec<Event>,
    closed: bool,
}

impl Client {
    fn channel(&mut self, channel: u16) -> &mut ContentAssembler {
        self.channels
            .entry(channel)
            .or_insert_with(|| ContentAssembler::new(MAX_BODY))
    }

    fn outcome(&mut self, channel: u16, result: Result<Option<Assembled>, DecodeError>) {
        match result {
            Ok(Some(done)) => self.events.push(Event::Assembled(channel, done)),
            Ok(None) => {}
            Err(err) => self.error(err),
        }
    }

    fn error(&mut self, err: DecodeError) {
        // A malformed header loses its message, not the connection.
        if let DecodeError::BadContentHeader {
            channel,
            body_size,
            source,
        } = err
        {
            let result = self
                .channel(channel)
                .push_bad_header(channel, body_size, source);
            return self.outcome(channel, result);
        }
        self.events.push(Event::Error(err));
        self.closed = true;
    }

    /// Decodes frame by frame as far as `buf` goes.
    fn drain(&mut self, decoder: &mut FrameDecoder, buf: &mut BytesMut) {
        while !self.closed {
            let before = buf.len();
            match decoder.decode(buf) {
                Ok(Some(frame)) => self.frame(frame),
                Ok(None) => break,
                // Nothing consumed: the frame's end is unknown, the connection is closed.
                Err(err) if buf.len() == before => {
                    self.events.push(Event::Error(err));
                    self.closed = true;
                }
                Err(err) => self.error(err),
            }
        }
    }

    fn frame(&mut self, frame: Frame) {
        match frame {
            Frame::Heartbeat => self.events.push(Event::Heartbeat),
            Frame::ProtocolHeader(h) => self.events.push(Event::Protocol(h)),
            frame => {
                let channel = frame.channel();
                let result = self.channel(channel).push(frame);
                self.outcome(channel, result);
            }
        }
    }
}

impl Client {
    /// One item of a batch.
    fn item(&mut self, item: Result<Inbound<'_>, DecodeError>) {
        match item {
            Ok(Inbound::Delivery(delivery)) => {
                let channel = delivery.channel();
                match self.channel(channel).expect_idle(channel) {
                    Ok(()) => {
                        let content = Assembled::Content(delivery.to_content());
                        self.events.push(Event::Assembled(channel, content));
                    }
                    Err(err) => self.error(err),
                }
            }
            Ok(Inbound::Frame(frame)) => self.frame(frame),
            Err(err) => self.error(err),
        }
    }
}

/// Frame by frame: `stream` read at `cuts`, each read decoded as far as it goes.
fn by_frames(stream: &[u8], cuts: &[usize]) -> Vec<Event> {
    let mut client = Client::default();
    let mut decoder = FrameDecoder::with_frame_max(FRAME_MAX);
    let mut buf = BytesMut::new();
    for read in reads(stream, cuts) {
        buf.extend_from_slice(read);
        client.drain(&mut decoder, &mut buf);
    }
    client.events
}

/// In batches: `stream` read at `cuts`, the whole frames of each read split off and iterated.
fn by_batches(stream: &[u8], cuts: &[usize]) -> Vec<Event> {
    by_batches_stopping(stream, cuts, usize::MAX)
}

/// As [`by_batches`], but the iteration stops after every `stop_every` items and goes on with
/// [`BatchIter::rest`], as a reader does that must stop in the middle of a batch.
fn by_batches_stopping(stream: &[u8], cuts: &[usize], stop_every: usize) -> Vec<Event> {
    let mut client = Client::default();
    let mut decoder = FrameDecoder::with_frame_max(FRAME_MAX);
    let mut buf = BytesMut::new();
    for read in reads(stream, cuts) {
        buf.extend_from_slice(read);
        while !client.closed {
            let mut batch = match decoder.decode_batch(&mut buf) {
                Ok(Some(batch)) => batch,
                Ok(None) => break,
                Err(err) => {
                    client.events.push(Event::Error(err));
                    client.closed = true;
                    break;
                }
            };
            'batch: loop {
                let mut items = batch.iter().max_body_size(MAX_BODY);
                let mut read = 0;
                while let Some(item) = items.next() {
                    if client.closed {
                        break 'batch;
                    }
                    client.item(item);
                    read += 1;
                    if read == stop_every {
                        match items.rest() {
                            Some(rest) => {
                                batch = rest;
                                continue 'batch;
                            }
                            None => break 'batch,
                        }
                    }
                }
                break;
            }
        }
    }
    // The stream ends: what a batch left out (a delivery awaiting its body) is read frame by
    // frame, as it would have been with the rest of the stream.
    client.drain(&mut decoder, &mut buf);
    client.events
}

/// `stream` cut at `cuts` (sorted, in `0..=len`).
fn reads<'a>(stream: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut reads = Vec::new();
    let mut from = 0;
    for &cut in cuts.iter().chain([&stream.len()]) {
        reads.push(&stream[from..cut]);
        from = cut;
    }
    reads
}

/// A piece of a stream: a whole message (a content method, its header and body frames), or
/// one frame.
#[derive(Debug, Clone)]
enum Piece {
    Message(u16, Method, BasicProperties, Vec<u8>),
    Frame(Frame),
}

fn deliver(tag: u64) -> Method {
    Method::BasicDeliver(BasicDeliver {
        consumer_tag: ShortStr::from_static("ctag"),
        delivery_tag: tag,
        redelivered: tag & 1 == 0,
        exchange: ShortStr::from_static("ex"),
        routing_key: ShortStr::from_static("jobs"),
    })
}

fn piece() -> impl Strategy<Value = Piece> {
    let channel = 0..3u16;
    prop_oneof![
        // Mostly deliveries, bodies of 0 to 1200 bytes (up to three frames, some over the limit).
        4 => (channel.clone(), any::<u64>(), properties(), bytes_up_to(1200))
            .prop_map(|(c, tag, p, b)| Piece::Message(c, deliver(tag), p, b)),
        1 => (channel.clone(), content_method(), properties(), bytes_up_to(600))
            .prop_map(|(c, m, p, b)| Piece::Message(c, m, p, b)),
        1 => (channel.clone(), any_method())
            .prop_map(|(channel, method)| Piece::Frame(Frame::Method { channel, method })),
        1 => (channel.clone(), any::<u64>(), properties()).prop_map(|(channel, size, p)| {
            Piece::Frame(Frame::Header { channel, header: ContentHeader::basic(size % 2000, p) })
        }),
        1 => (channel, bytes_up_to(300)).prop_map(|(channel, b)| {
            Piece::Frame(Frame::Body { channel, body: Bytes::from(b) })
        }),
        1 => Just(Piece::Frame(Frame::Heartbeat)),
    ]
}

/// The pieces' bytes.
fn encode(pieces: &[Piece]) -> Vec<u8> {
    let mut out = Outbound::new();
    for piece in pieces {
        match piece {
            Piece::Message(channel, method, properties, body) => {
                // Frames over the limit (a method or header this large) are skipped.
                let _ = out.push_content(
                    *channel,
                    method,
                    properties,
                    Bytes::from(body.clone()),
                    FRAME_MAX,
                );
            }
            Piece::Frame(frame) => {
                let _ = out.push_frame(frame, FRAME_MAX);
            }
        }
    }
    out.copy_to_bytes(out.remaining()).to_vec()
}

fn sorted_cuts(cuts: &[prop::sample::Index], len: usize) -> Vec<usize> {
    let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(len + 1)).collect();
    cuts.sort_unstable();
    cuts
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn batches_read_what_frames_do(
        pieces in vec(piece(), 1..16),
        cuts in vec(any::<prop::sample::Index>(), 0..12),
        corrupt in prop::option::of((any::<prop::sample::Index>(), any::<u8>())),
        stop_every in 1usize..4,
    ) {
        let mut stream = encode(&pieces);
        if let (Some((at, value)), false) = (corrupt, stream.is_empty()) {
            let at = at.index(stream.len());
            stream[at] = value;
        }
        let cuts = sorted_cuts(&cuts, stream.len());
        let frames = by_frames(&stream, &cuts);
        prop_assert_eq!(by_batches_stopping(&stream, &cuts, stop_every), by_frames(&stream, &cuts));
        prop_assert_eq!(by_batches(&stream, &cuts), frames);
        prop_assert_eq!(by_batches(&stream, &[]), by_frames(&stream, &[]));
    }
}

/// One minimal delivery's frames.
fn delivery_bytes(tag: u64, body: &[u8]) -> Vec<u8> {
    let properties = PropertiesBuilder::default()
        .with_content_type("text/plain")
        .with_delivery_mode(BasicProperties::TRANSIENT)
        .build()
        .expect("valid properties");
    let mut out = Outbound::new();
    out.push_content(
        1,
        &deliver(tag),
        &properties,
        Bytes::copy_from_slice(body),
        FRAME_MAX,
    )
    .expect("fits");
    out.copy_to_bytes(out.remaining()).to_vec()
}

#[test]
fn a_delivery_is_read_in_place_without_a_reference_count() {
    let mut buf = BytesMut::from(&delivery_bytes(7, b"hello")[..]);
    let region = buf.as_ptr_range();
    let batch = FrameDecoder::new()
        .decode_batch(&mut buf)
        .expect("valid")
        .expect("whole");
    assert!(buf.is_empty());
    drop(buf);
    assert_eq!(batch.frames(), 3);
    // Only the batch holds the bytes now.
    assert!(batch.as_bytes().is_unique());
    let items: Vec<_> = batch.iter().collect();
    let [Ok(Inbound::Delivery(delivery))] = &items[..] else {
        panic!("one delivery: {items:?}");
    };
    let properties = delivery.properties();
    assert_eq!(delivery.channel(), 1);
    assert_eq!(delivery.delivery_tag(), 7);
    assert_eq!(delivery.routing_key(), b"jobs");
    assert_eq!(delivery.exchange(), b"ex");
    assert_eq!(delivery.consumer_tag(), b"ctag");
    assert_eq!(properties.content_type(), Some(&b"text/plain"[..]));
    assert_eq!(properties.delivery_mode(), Some(1));
    assert_eq!(delivery.body(), b"hello");
    for field in [
        delivery.routing_key(),
        properties.content_type().expect("set"),
        delivery.body(),
    ] {
        assert!(region.contains(&field.as_ptr()), "read in place");
    }
    assert!(
        batch.as_bytes().is_unique(),
        "reading took no reference count"
    );

    // Kept: one reference count for the whole message, released with it.
    let kept = delivery.to_delivery();
    assert!(!batch.as_bytes().is_unique());
    assert_eq!(kept.view(), *delivery);
    assert_eq!(kept.body(), b"hello");
    assert_eq!(kept.properties().content_type(), Some(&b"text/plain"[..]));
    assert!(region.contains(&kept.routing_key().as_ptr()));
    drop(items);
    drop(kept);
    assert!(batch.as_bytes().is_unique());
}

/// Octets of the first frame of `wire`.
fn deliver_frame_len(wire: &[u8]) -> usize {
    8 + u32::from_be_bytes([wire[3], wire[4], wire[5], wire[6]]) as usize
}

#[test]
fn a_delivery_awaiting_its_body_stays_in_the_buffer() {
    let wire = delivery_bytes(1, b"body");
    let body_frame = 8 + 4;
    let mut decoder = FrameDecoder::new();
    // The method and the header, and part of the body frame.
    let mut buf = BytesMut::from(&wire[..wire.len() - 3]);
    assert_eq!(decoder.decode_batch(&mut buf), Ok(None));
    assert_eq!(buf.len(), wire.len() - 3, "nothing consumed");
    // Only the method and the header, or only the method: the same.
    let header_frame = wire.len() - body_frame - deliver_frame_len(&wire);
    for len in [
        wire.len() - body_frame,
        wire.len() - body_frame - header_frame,
    ] {
        let mut buf = BytesMut::from(&wire[..len]);
        assert_eq!(decoder.decode_batch(&mut buf), Ok(None), "{len} bytes");
        assert_eq!(buf.len(), len);
    }
    let mut buf = BytesMut::from(&wire[..wire.len() - body_frame]);
    // The body comes: one whole delivery.
    buf.extend_from_slice(&wire[wire.len() - body_frame..]);
    let batch = decoder
        .decode_batch(&mut buf)
        .expect("valid")
        .expect("whole");
    assert!(matches!(
        batch.iter().next(),
        Some(Ok(Inbound::Delivery(d))) if d.body() == b"body"
    ));
    // A frame after a delivery awaiting its body lets both out (nothing waits on a peer that
    // does not send the body).
    let mut buf = BytesMut::from(&wire[..wire.len() - body_frame]);
    buf.extend_from_slice(&[8, 0, 0, 0, 0, 0, 0, 0xCE]);
    let batch = decoder
        .decode_batch(&mut buf)
        .expect("valid")
        .expect("whole");
    assert_eq!(batch.frames(), 3);
    let items: Vec<_> = batch.iter().collect();
    assert!(matches!(
        &items[..],
        [
            Ok(Inbound::Frame(Frame::Method { .. })),
            Ok(Inbound::Frame(Frame::Header { .. })),
            Ok(Inbound::Frame(Frame::Heartbeat)),
        ]
    ));
}

#[test]
fn envelope_errors_come_first_or_end_the_batch() {
    let mut decoder = FrameDecoder::new();
    let heartbeat = [8u8, 0, 0, 0, 0, 0, 0, 0xCE];
    let bad_end = [8u8, 0, 0, 0, 0, 0, 0, 0xCD];
    // First: refused, nothing consumed.
    let mut buf = BytesMut::from(&bad_end[..]);
    assert_eq!(
        decoder.decode_batch(&mut buf),
        Err(DecodeError::BadFrameEnd { found: 0xCD })
    );
    assert_eq!(buf.len(), 8);
    // Behind a whole frame: the batch ends before it, the next call refuses it.
    let mut buf = BytesMut::from(&[&heartbeat[..], &bad_end[..]].concat()[..]);
    let batch = decoder
        .decode_batch(&mut buf)
        .expect("one frame")
        .expect("whole");
    assert_eq!(batch.frames(), 1);
    assert_eq!(
        decoder.decode_batch(&mut buf),
        Err(DecodeError::BadFrameEnd { found: 0xCD })
    );
    // Behind a delivery awaiting its body, too: nothing is left waiting before an error.
    let wire = delivery_bytes(1, b"body");
    let mut buf = BytesMut::from(&wire[..wire.len() - 12]);
    buf.extend_from_slice(&bad_end);
    let batch = decoder
        .decode_batch(&mut buf)
        .expect("two frames")
        .expect("whole");
    assert_eq!(batch.frames(), 2);
    assert!(decoder.decode_batch(&mut buf).is_err());
}

#[test]
fn a_delivery_in_the_middle_of_a_message_is_out_of_order() {
    let mut asm = ContentAssembler::new(u64::MAX);
    assert_eq!(asm.expect_idle(1), Ok(()));
    asm.push(Frame::Method {
        channel: 1,
        method: deliver(1),
    })
    .expect("starts a message");
    let err = asm.expect_idle(1).unwrap_err();
    assert!(matches!(
        err,
        DecodeError::UnexpectedFrame { channel: 1, .. }
    ));
    assert!(asm.is_idle(), "the partial message is dropped");
}

#[test]
fn bodies_over_the_limit_and_confirms_come_as_frames() {
    let mut wire = delivery_bytes(1, &[7; 100]);
    let mut out = Outbound::new();
    out.push_method(
        1,
        &Method::BasicAck(BasicAck {
            delivery_tag: 9,
            multiple: true,
        }),
        FRAME_MAX,
    )
    .expect("fits");
    wire.extend_from_slice(&out.copy_to_bytes(out.remaining()));
    let mut buf = BytesMut::from(&wire[..]);
    let batch = FrameDecoder::new()
        .decode_batch(&mut buf)
        .expect("valid")
        .expect("whole");
    let items: Vec<_> = batch.iter().max_body_size(99).collect();
    assert!(matches!(
        &items[..],
        [
            Ok(Inbound::Frame(Frame::Method { .. })),
            Ok(Inbound::Frame(Frame::Header { .. })),
            Ok(Inbound::Frame(Frame::Body { .. })),
            Ok(Inbound::Frame(Frame::Method {
                method: Method::BasicAck(BasicAck {
                    delivery_tag: 9,
                    multiple: true
                }),
                ..
            })),
        ]
    ));
    let items: Vec<_> = batch.iter().max_body_size(100).collect();
    assert!(matches!(
        &items[..],
        [Ok(Inbound::Delivery(_)), Ok(Inbound::Frame(_))]
    ));
}

#[test]
fn a_batch_stopped_midway_hands_over_the_rest_without_a_copy() {
    let first = delivery_bytes(1, b"one");
    let wire = [first.clone(), delivery_bytes(2, b"two")].concat();
    let mut buf = BytesMut::from(&wire[..]);
    let batch = FrameDecoder::new()
        .decode_batch(&mut buf)
        .expect("valid")
        .expect("whole");
    let mut items = batch.iter();
    let Some(Ok(Inbound::Delivery(one))) = items.next() else {
        panic!("the first delivery");
    };
    assert_eq!(one.delivery_tag(), 1);
    let rest = items.rest().expect("the second delivery is left");
    assert_eq!(rest.frames(), 3);
    assert_eq!(
        rest.as_bytes().as_ptr(),
        batch.as_bytes()[first.len()..].as_ptr(),
        "the rest shares the batch's bytes"
    );
    let mut rest_items = rest.iter();
    let Some(Ok(Inbound::Delivery(two))) = rest_items.next() else {
        panic!("the second delivery");
    };
    assert_eq!((two.delivery_tag(), two.body()), (2, &b"two"[..]));
    assert!(rest_items.next().is_none());
    assert!(rest_items.rest().is_none(), "nothing is left");
}

#[test]
fn an_owned_delivery_stays_small() {
    // A client keeps one per delivery waiting in a consumer's buffer.
    let size = std::mem::size_of::<amqp_codec::Delivery>();
    assert!(size <= 88, "Delivery is {size} bytes");
}
