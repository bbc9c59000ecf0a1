//! `Outbound::push_content` splits a body into frames of at most frame-max (4096 and 131072, body
//! sizes around every frame boundary), and what it queues, read with `chunks_vectored` or
//! `copy_to_bytes` (or chunk by chunk), decodes through `FrameDecoder` and `ContentAssembler` to
//! the same method, properties and body. Body chunks point into the caller's body (no copy).
//! Oversized content headers and methods are refused with the queue left exactly as it was.

mod common;

use std::io::IoSlice;
use std::ops::Range;

use amqp_codec::methods::{BasicAck, BasicPublish, ConnectionStartOk};
use amqp_codec::{
    Assembled, BasicProperties, Content, ContentAssembler, EncodeError, FieldTable, Frame,
    FrameDecoder, LongStr, Method, Outbound, PropertiesBuilder, ShortStr,
};
use bytes::{Buf, Bytes, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;

use common::{content_method, properties};

fn publish() -> Method {
    Method::BasicPublish(BasicPublish {
        ticket: 0,
        exchange: ShortStr::from_static("events"),
        routing_key: ShortStr::from_static("order.created"),
        mandatory: true,
        immediate: false,
    })
}

fn props() -> BasicProperties {
    let headers = FieldTable::builder()
        .insert("x-retries", 3i32)
        .insert("trace", "abc")
        .build()
        .expect("valid");
    PropertiesBuilder::default()
        .with_content_type("application/octet-stream")
        .with_headers(headers)
        .persistent()
        .with_message_id("m-1")
        .build()
        .expect("valid properties")
}

fn body_of(len: usize) -> Bytes {
    (0..len)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into()
}

/// What `chunks_vectored` exposes: the bytes, and each slice's address range.
fn vectored(out: &Outbound) -> (Vec<u8>, Vec<Range<usize>>) {
    let mut io = vec![IoSlice::new(&[]); 1024];
    let n = out.chunks_vectored(&mut io);
    assert!(n < io.len(), "room for every chunk");
    let bytes: Vec<u8> = io[..n].iter().flat_map(|s| s.iter().copied()).collect();
    assert_eq!(
        bytes.len(),
        out.remaining(),
        "vectored chunks cover remaining()"
    );
    let ranges = io[..n]
        .iter()
        .map(|s| s.as_ptr() as usize..s.as_ptr() as usize + s.len())
        .collect();
    (bytes, ranges)
}

/// Decodes one content (method, header, body frames) from `wire`, checking every frame against
/// `frame_max`; returns it and how many body frames carried it.
fn decode_content(wire: &[u8], frame_max: u32) -> (Content, usize) {
    let mut decoder = FrameDecoder::with_frame_max(frame_max);
    let mut assembler = ContentAssembler::new(u64::MAX);
    let mut buf = BytesMut::from(wire);
    let mut body_frames = 0;
    loop {
        let frame = decoder
            .decode(&mut buf)
            .expect("valid")
            .expect("a complete frame");
        body_frames += usize::from(matches!(frame, Frame::Body { .. }));
        if let Some(done) = assembler.push(frame).expect("in order") {
            let Assembled::Content(content) = done else {
                panic!("expected content, got {done:?}");
            };
            assert!(buf.is_empty(), "{} bytes after the content", buf.len());
            return (content, body_frames);
        }
    }
}

#[test]
fn bodies_around_frame_boundaries_roundtrip_without_copies() {
    for frame_max in [4096u32, 131_072] {
        let fm = frame_max as usize;
        let per_frame = fm - 8;
        let sizes = [
            0,
            1,
            Outbound::COPY_BODY_UP_TO,
            Outbound::COPY_BODY_UP_TO + 1,
            per_frame - 1,
            per_frame,
            per_frame + 1,
            fm,
            2 * per_frame,
            2 * per_frame + 1,
            2 * fm,
            3 * fm,
            5 * fm + 7,
        ];
        for len in sizes {
            let body = body_of(len);
            let body_range = body.as_ptr() as usize..body.as_ptr() as usize + len;
            let mut out = Outbound::new();
            out.push_content(7, &publish(), &props(), body.clone(), frame_max)
                .expect("fits");
            let (wire, slices) = vectored(&out);

            // The body's bytes are the caller's memory, in order, one slice per frame; a small
            // body is copied into the encoded frames instead.
            let in_body: Vec<&Range<usize>> = slices
                .iter()
                .filter(|s| !s.is_empty() && body_range.contains(&s.start))
                .collect();
            let frames = len.div_ceil(per_frame);
            let chained = if len <= Outbound::COPY_BODY_UP_TO {
                0
            } else {
                frames
            };
            assert_eq!(in_body.len(), chained, "frame_max {fm}, body {len}");
            let mut next = body_range.start;
            for s in &in_body {
                assert_eq!(s.start, next, "body slices in order, contiguous");
                assert!(s.end <= body_range.end && s.len() <= per_frame);
                next = s.end;
            }
            if chained > 0 {
                assert_eq!(next, body_range.end, "the whole body is chained");
            }

            let copied = out.copy_to_bytes(out.remaining());
            assert_eq!(&copied[..], &wire[..]);
            assert!(out.is_empty());

            let (content, body_frames) = decode_content(&wire, frame_max);
            assert_eq!(body_frames, frames);
            assert_eq!(content.method, publish());
            assert_eq!(content.header.body_size, len as u64);
            assert_eq!(content.header.properties, props());
            assert_eq!(content.body, body);
            // Decoded, the body is one chunk per body frame: chained, never joined.
            assert_eq!(content.body.chunks().len(), frames.max(1));
            assert!(content.body.chunks().all(|c| c.len() <= per_frame));
        }
    }
}

#[test]
fn no_frame_max_means_one_body_frame() {
    let body = body_of(300_000);
    let mut out = Outbound::new();
    out.push_content(1, &publish(), &props(), body.clone(), 0)
        .expect("fits");
    let wire = out.copy_to_bytes(out.remaining());
    let (content, body_frames) = decode_content(&wire, 0);
    assert_eq!(body_frames, 1);
    assert_eq!(content.body, body);
    assert!(content.body.as_single().is_some(), "one frame, one chunk");
}

/// An `Outbound` already holding a heartbeat, a method and a content, so that a refused push has
/// both frozen chunks and buffered bytes to disturb.
fn busy_outbound(frame_max: u32) -> Outbound {
    let mut out = Outbound::new();
    out.push_protocol_header();
    out.push_heartbeat();
    out.push_content(1, &publish(), &props(), body_of(10_000), frame_max)
        .expect("fits");
    let ack = Method::BasicAck(BasicAck {
        delivery_tag: 1,
        multiple: false,
    });
    out.push_method(1, &ack, frame_max).expect("fits");
    out
}

/// Properties whose content header frame is exactly `frame_size` bytes: 8 frame overhead, 12
/// class/weight/size, 2 flags, 4 table length, then one `S` entry of `1 + 1 + 1 + 4 + n` bytes.
fn props_with_header_frame_of(frame_size: usize) -> BasicProperties {
    let n = frame_size - 33;
    let headers = FieldTable::builder()
        .insert("k", LongStr::from(vec![b'h'; n]))
        .build()
        .expect("valid");
    PropertiesBuilder::default()
        .with_headers(headers)
        .build()
        .expect("valid properties")
}

#[test]
fn content_header_larger_than_frame_max_is_refused_and_nothing_is_queued() {
    for frame_max in [4096u32, 131_072] {
        let fm = frame_max as usize;
        let fits = props_with_header_frame_of(fm);
        let mut out = busy_outbound(frame_max);
        out.push_content(1, &publish(), &fits, body_of(3), frame_max)
            .expect("a header of exactly frame-max fits");
        let wire = out.copy_to_bytes(out.remaining());
        let mut buf = BytesMut::from(&wire[..]);
        let mut decoder = FrameDecoder::with_frame_max(frame_max);
        while !buf.is_empty() {
            decoder.decode(&mut buf).expect("valid").expect("complete");
        }

        for too_large in [fm + 1, 2 * fm + 100] {
            let mut out = busy_outbound(frame_max);
            let (before, _) = vectored(&out);
            let remaining = out.remaining();
            let err = out.push_content(
                1,
                &publish(),
                &props_with_header_frame_of(too_large),
                body_of(100),
                frame_max,
            );
            assert_eq!(
                err,
                Err(EncodeError::ContentHeaderTooLarge {
                    size: too_large,
                    frame_max
                })
            );
            assert_eq!(out.remaining(), remaining);
            assert_eq!(vectored(&out).0, before, "queue unchanged");
        }
    }
}

/// connection.start-ok whose frame is exactly `frame_size` bytes: 8 overhead, 4 ids, 4 empty
/// table, 6 "PLAIN", 4 + n response, 6 "en_US".
fn start_ok_of(frame_size: usize) -> Method {
    Method::ConnectionStartOk(ConnectionStartOk {
        client_properties: FieldTable::new(),
        mechanism: ShortStr::from_static("PLAIN"),
        response: LongStr::from(vec![0; frame_size - 32]),
        locale: ShortStr::from_static("en_US"),
    })
}

#[test]
fn method_larger_than_frame_max_is_refused_and_nothing_is_queued() {
    let frame_max = 4096u32;
    let mut out = busy_outbound(frame_max);
    out.push_method(0, &start_ok_of(4096), frame_max)
        .expect("exactly frame-max fits");

    let mut out = busy_outbound(frame_max);
    let (before, _) = vectored(&out);
    let too_large = Err(EncodeError::MethodTooLarge {
        name: "connection.start-ok",
        size: 4097,
        frame_max,
    });
    assert_eq!(out.push_method(0, &start_ok_of(4097), frame_max), too_large);
    let frame = Frame::Method {
        channel: 0,
        method: start_ok_of(4097),
    };
    assert_eq!(out.push_frame(&frame, frame_max), too_large);

    // A content method can only outgrow a small frame-max: 4 + 2 + 256 + 256 + 1 = 519 bytes.
    let long = ShortStr::from_bytes(Bytes::from(vec![b'r'; 255])).expect("255 bytes");
    let big_publish = Method::BasicPublish(BasicPublish {
        exchange: long.clone(),
        routing_key: long,
        ..Default::default()
    });
    assert_eq!(
        out.push_content(1, &big_publish, &props(), body_of(10), 512),
        Err(EncodeError::MethodTooLarge {
            name: "basic.publish",
            size: 527,
            frame_max: 512
        })
    );
    let ack = Method::BasicAck(BasicAck::default());
    assert_eq!(
        out.push_content(1, &ack, &props(), body_of(10), frame_max),
        Err(EncodeError::NoContent { name: "basic.ack" })
    );
    assert_eq!(vectored(&out).0, before, "queue unchanged");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any content method, properties and body; the queue read back in random-sized steps
    /// through `chunk`/`advance` gives the same bytes as `chunks_vectored`.
    #[test]
    fn any_content_roundtrips(
        method in content_method(),
        properties in properties(),
        len in prop_oneof![0..10usize, 4070..4110usize, 0..20_000usize],
        channel in 1..u16::MAX,
        steps in vec(1..3000usize, 1..64),
    ) {
        let frame_max = 4096u32;
        let body = body_of(len);
        let mut out = Outbound::new();
        let header_frame = 8 + 12 + properties.encoded_len();
        let result = out.push_content(channel, &method, &properties, body.clone(), frame_max);
        if header_frame > frame_max as usize {
            prop_assert_eq!(
                result,
                Err(EncodeError::ContentHeaderTooLarge { size: header_frame, frame_max })
            );
            prop_assert!(out.is_empty());
            return Ok(());
        }
        prop_assert_eq!(result, Ok(()));
        let (wire, _) = vectored(&out);

        let mut read = Vec::new();
        for step in steps.iter().cycle() {
            if !out.has_remaining() {
                break;
            }
            let chunk = out.chunk();
            prop_assert!(!chunk.is_empty());
            let n = (*step).min(chunk.len());
            read.extend_from_slice(&chunk[..n]);
            out.advance(n);
        }
        prop_assert_eq!(&read, &wire);

        let (content, body_frames) = decode_content(&wire, frame_max);
        prop_assert_eq!(body_frames, len.div_ceil(4088));
        prop_assert_eq!(content.method, method);
        prop_assert_eq!(content.header.properties, properties);
        prop_assert_eq!(content.body, body);
    }
}

/// basic.publish's arguments are written by hand in `push_content` (the hot path): its method
/// frame must be byte for byte the one the generic writer (`push_method`) produces, for every
/// combination of the bits, a ticket, and names from empty to 255 bytes.
#[test]
fn push_content_writes_the_publish_method_frame_push_method_writes() {
    let long = "k".repeat(255);
    for (exchange, routing_key) in [("", ""), ("events", "order.created"), ("x", long.as_str())] {
        for (mandatory, immediate, ticket) in [
            (false, false, 0),
            (true, false, 7),
            (false, true, 0),
            (true, true, 0xABCD),
        ] {
            let method = Method::BasicPublish(BasicPublish {
                ticket,
                exchange: ShortStr::try_from(exchange).unwrap(),
                routing_key: ShortStr::try_from(routing_key).unwrap(),
                mandatory,
                immediate,
            });
            let mut content = Outbound::new();
            content
                .push_content(1, &method, &BasicProperties::default(), Bytes::new(), 0)
                .unwrap();
            let mut alone = Outbound::new();
            alone.push_method(1, &method, 0).unwrap();
            let expected = alone.copy_to_bytes(alone.remaining());
            let got = content.copy_to_bytes(content.remaining());
            assert_eq!(got[..expected.len()], expected[..], "{method:?}");
        }
    }
}
