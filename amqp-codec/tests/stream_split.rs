//! The frame decoder is indifferent to how a byte stream is cut into reads: a stream of mixed
//! frames (protocol header, connection methods, deliver triples, multi-frame and empty bodies,
//! interleaved channels, heartbeats) decodes to the same frames whole, split at every single
//! boundary, fed byte by byte, and split at random sets of boundaries (also for random frame
//! streams). Incomplete input is `Ok(None)` and leaves the buffer untouched. Decoded bodies and
//! strings are slices of the read buffer, not copies.

mod common;

use std::ops::Range;

use amqp_codec::methods::{
    BasicAck, BasicConsumeOk, BasicDeliver, BasicGetOk, ChannelOpenOk, ConnectionClose,
    ConnectionStart, ConnectionTune,
};
use amqp_codec::{
    ContentHeader, FieldTable, FieldValue, Frame, FrameDecoder, LongStr, Method, PropertiesBuilder,
    ProtocolHeader, ShortStr,
};
use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;

use common::{any_method, bytes_up_to, properties};

/// Largest frame in the scenario; bodies above 504 bytes span several frames.
const FRAME_MAX: u32 = 512;

fn deliver(channel: u16, tag: u64) -> Frame {
    Frame::Method {
        channel,
        method: Method::BasicDeliver(BasicDeliver {
            consumer_tag: ShortStr::from_static("amq.ctag-1"),
            delivery_tag: tag,
            redelivered: tag & 1 == 0,
            exchange: ShortStr::from_static("events"),
            routing_key: ShortStr::from_static("order.created"),
        }),
    }
}

fn header(channel: u16, body_size: u64) -> Frame {
    let properties = PropertiesBuilder::default()
        .with_content_type("application/json")
        .persistent()
        .build()
        .expect("valid properties");
    Frame::Header {
        channel,
        header: ContentHeader::basic(body_size, properties),
    }
}

fn body(channel: u16, bytes: &[u8]) -> Frame {
    Frame::Body {
        channel,
        body: Bytes::copy_from_slice(bytes),
    }
}

/// A realistic session, as a client would read it (plus the client's protocol header first).
fn scenario() -> Vec<Frame> {
    let server_properties: FieldTable = FieldTable::builder()
        .insert("product", "RabbitMQ")
        .insert(
            "capabilities",
            FieldTable::builder()
                .insert("publisher_confirms", true)
                .insert("consumer_cancel_notify", true)
                .build()
                .expect("valid"),
        )
        .build()
        .expect("valid");
    let mut frames = vec![
        Frame::ProtocolHeader(ProtocolHeader::AMQP_0_9_1),
        Frame::Method {
            channel: 0,
            method: Method::ConnectionStart(ConnectionStart {
                version_major: 0,
                version_minor: 9,
                server_properties,
                mechanisms: LongStr::from("PLAIN AMQPLAIN"),
                locales: LongStr::from("en_US"),
            }),
        },
        Frame::Method {
            channel: 0,
            method: Method::ConnectionTune(ConnectionTune {
                channel_max: 2047,
                frame_max: FRAME_MAX,
                heartbeat: 60,
            }),
        },
        Frame::Heartbeat,
        Frame::Method {
            channel: 1,
            method: Method::ChannelOpenOk(ChannelOpenOk::default()),
        },
        Frame::Method {
            channel: 1,
            method: Method::BasicConsumeOk(BasicConsumeOk {
                consumer_tag: ShortStr::from_static("amq.ctag-1"),
            }),
        },
    ];
    for tag in 1..=3 {
        let payload = format!("{{\"order\":{tag}}}");
        frames.extend([
            deliver(1, tag),
            header(1, payload.len() as u64),
            body(1, payload.as_bytes()),
        ]);
    }
    frames.push(Frame::Heartbeat);
    // A 1300-byte body in frames of 504, 504 and 292 bytes.
    let big: Vec<u8> = (0..1300u32).map(|i| (i * 7 % 251) as u8).collect();
    frames.extend([deliver(1, 4), header(1, 1300)]);
    frames.extend(big.chunks(504).map(|c| body(1, c)));
    // An empty body: no body frame at all.
    frames.extend([deliver(1, 5), header(1, 0)]);
    // Channel 2's get-ok interleaved with channel 1's delivery.
    let get_ok = Method::BasicGetOk(BasicGetOk {
        delivery_tag: 1,
        message_count: 9,
        ..Default::default()
    });
    frames.extend([
        Frame::Method {
            channel: 2,
            method: get_ok,
        },
        deliver(1, 6),
        header(2, 600),
        header(1, 2),
        body(2, &[0xAB; 504]),
        body(1, b"ok"),
        body(2, &[0xCD; 96]),
        Frame::Heartbeat,
        Frame::Method {
            channel: 1,
            method: Method::BasicAck(BasicAck {
                delivery_tag: 6,
                multiple: true,
            }),
        },
        Frame::Method {
            channel: 0,
            method: Method::ConnectionClose(ConnectionClose {
                reply_code: 200,
                reply_text: ShortStr::from_static("Goodbye"),
                class_id: 0,
                method_id: 0,
            }),
        },
    ]);
    frames
}

fn encode_all(frames: &[Frame]) -> Vec<u8> {
    let mut wire = BytesMut::new();
    for f in frames {
        f.encode(&mut wire).expect("encodes");
    }
    wire.to_vec()
}

/// Decodes every complete frame in `buf`. Each `Ok(None)` must leave the buffer as it was.
fn drain(decoder: &mut FrameDecoder, buf: &mut BytesMut, out: &mut Vec<Frame>) {
    loop {
        let before = buf.clone();
        match decoder.decode(buf).expect("a valid stream") {
            Some(frame) => out.push(frame),
            None => {
                assert_eq!(*buf, before, "Ok(None) must not consume or change bytes");
                return;
            }
        }
    }
}

/// Decodes `stream` delivered in reads that end at each of `cuts` (sorted, in `0..=len`).
fn decode_split(
    stream: &[u8],
    cuts: impl IntoIterator<Item = usize>,
    frame_max: u32,
) -> Vec<Frame> {
    let mut decoder = FrameDecoder::with_frame_max(frame_max);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut start = 0;
    for cut in cuts.into_iter().chain([stream.len()]) {
        buf.extend_from_slice(&stream[start..cut]);
        start = cut;
        drain(&mut decoder, &mut buf, &mut frames);
    }
    assert!(buf.is_empty(), "{} bytes left over", buf.len());
    frames
}

fn contains(region: &Range<usize>, bytes: &[u8]) -> bool {
    let start = bytes.as_ptr() as usize;
    region.contains(&start) && start + bytes.len() <= region.end
}

#[test]
fn whole_stream_decodes_to_the_frames_and_shares_the_buffer() {
    let frames = scenario();
    let stream = encode_all(&frames);
    let mut buf = BytesMut::from(&stream[..]);
    let base = buf.as_ptr() as usize;
    let region = base..base + buf.len();

    let mut decoder = FrameDecoder::with_frame_max(FRAME_MAX);
    let mut decoded = Vec::new();
    while !buf.is_empty() {
        let expected_len = frames[decoded.len()].encoded_len();
        assert_eq!(decoder.next_frame_len(&buf), Ok(Some(expected_len)));
        let before = buf.len();
        let frame = decoder.decode(&mut buf).expect("valid").expect("complete");
        assert_eq!(before - buf.len(), expected_len);
        decoded.push(frame);
    }
    assert_eq!(decoded, frames);

    let mut bodies = 0;
    for frame in &decoded {
        match frame {
            Frame::Body { body, .. } => {
                assert!(
                    contains(&region, body),
                    "body copied out of the read buffer"
                );
                bodies += 1;
            }
            Frame::Method {
                method: Method::BasicDeliver(d),
                ..
            } => {
                assert!(contains(&region, &d.consumer_tag));
                assert!(contains(&region, &d.routing_key));
            }
            Frame::Header { header, .. } => {
                let content_type = &header.properties.content_type().expect("set");
                assert!(contains(&region, content_type));
            }
            Frame::Method {
                method: Method::ConnectionStart(start),
                ..
            } => {
                assert!(contains(&region, start.server_properties.as_raw()));
                let Some(FieldValue::Table(caps)) = start.server_properties.get("capabilities")
                else {
                    panic!("capabilities table");
                };
                assert!(contains(&region, caps.as_raw()));
            }
            _ => {}
        }
    }
    assert_eq!(bodies, 9);
}

#[test]
fn every_single_split_point_gives_the_same_frames() {
    let frames = scenario();
    let stream = encode_all(&frames);
    assert!(
        stream.len() > 2500,
        "a stream long enough to matter: {}",
        stream.len()
    );
    for cut in 0..=stream.len() {
        assert_eq!(
            decode_split(&stream, [cut], FRAME_MAX),
            frames,
            "split at {cut}"
        );
    }
}

#[test]
fn byte_by_byte_feeding_gives_the_same_frames() {
    let frames = scenario();
    let stream = encode_all(&frames);
    assert_eq!(decode_split(&stream, 1..stream.len(), FRAME_MAX), frames);
}

#[test]
fn incomplete_input_is_read_more_and_claims_no_memory() {
    // A body frame claiming 4 GiB - 1 with frame-max off: nothing consumed, nothing reserved.
    let mut buf = BytesMut::with_capacity(16);
    buf.extend_from_slice(&[3, 0, 1, 0xFF, 0xFF, 0xFF, 0xFF, b'x']);
    let mut decoder = FrameDecoder::with_frame_max(0);
    assert_eq!(decoder.decode(&mut buf), Ok(None));
    assert_eq!(&buf[..], &[3, 0, 1, 0xFF, 0xFF, 0xFF, 0xFF, b'x']);
    assert!(buf.capacity() <= 16);
    assert_eq!(decoder.next_frame_len(&buf), Ok(Some(0xFFFF_FFFF + 8)));
    // Every proper prefix of a protocol header and of a frame header.
    for n in 0..8 {
        let mut buf = BytesMut::from(&b"AMQP\x00\x00\x09\x01"[..n]);
        assert_eq!(decoder.decode(&mut buf), Ok(None));
        assert_eq!(buf.len(), n);
    }
}

proptest! {
    #[test]
    fn random_split_points_give_the_same_frames(cuts in vec(any::<prop::sample::Index>(), 0..40)) {
        let frames = scenario();
        let stream = encode_all(&frames);
        prop_assert_eq!(decode_split(&stream, sorted_cuts(&cuts, stream.len()), FRAME_MAX), frames);
    }

    #[test]
    fn random_frame_streams_survive_random_splits(
        with_protocol_header in any::<bool>(),
        frames in vec(frame(), 1..12),
        cuts in vec(any::<prop::sample::Index>(), 0..16),
    ) {
        let mut frames = frames;
        if with_protocol_header {
            frames.insert(0, Frame::ProtocolHeader(ProtocolHeader::AMQP_0_9_1));
        }
        let stream = encode_all(&frames);
        prop_assert_eq!(&decode_split(&stream, sorted_cuts(&cuts, stream.len()), 0), &frames);
        prop_assert_eq!(&decode_split(&stream, [], 0), &frames);
    }
}

/// Read boundaries in `0..=len`, in order (duplicates make empty reads).
fn sorted_cuts(cuts: &[prop::sample::Index], len: usize) -> Vec<usize> {
    let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(len + 1)).collect();
    cuts.sort_unstable();
    cuts
}

/// Any frame but the protocol header (which only starts a stream).
fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        (any::<u16>(), any_method())
            .prop_map(|(channel, method)| Frame::Method { channel, method }),
        (any::<u16>(), any::<u64>(), properties()).prop_map(|(channel, size, p)| Frame::Header {
            channel,
            header: ContentHeader::basic(size, p),
        }),
        (any::<u16>(), bytes_up_to(700)).prop_map(|(channel, b)| Frame::Body {
            channel,
            body: Bytes::from(b),
        }),
        Just(Frame::Heartbeat),
    ]
}
