//! Counts heap allocations on the codec's hot paths with a counting global allocator:
//! decoding a `basic.deliver` + header + body triple out of a `BytesMut` (and assembling it into
//! a message) allocates nothing after warm-up; so does decoding in batches, deliveries read in
//! place, also when the bytes arrive in 64 KiB reads appended to the decoder's buffer (which is
//! then reused, never reallocated); a body of several frames allocates only the list of its
//! chunks, never a copy; encoding a publish allocates nothing after warm-up (the outbound
//! buffer is reused once written out).

use amqp_codec::methods::{BasicDeliver, BasicPublish};
use amqp_codec::{
    Assembled, BasicProperties, ContentAssembler, FieldTable, FrameDecoder, Inbound, Method,
    Outbound, PropertiesBuilder, ShortStr,
};
use amqp_test_support::alloc_counter::{CountingAllocator, count};
use bytes::{Buf, Bytes, BytesMut};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

const FRAME_MAX: u32 = 131_072;

fn properties() -> BasicProperties {
    PropertiesBuilder::default()
        .with_content_type("application/json")
        .persistent()
        .with_message_id("id-1")
        .with_headers(
            FieldTable::builder()
                .insert("x-attempt", 1i32)
                .insert("source", "tests")
                .build()
                .expect("table"),
        )
        .build()
        .expect("valid properties")
}

/// `n` deliver triples with `body_len`-byte bodies, as the broker would send them.
fn deliveries(n: u64, body_len: usize) -> BytesMut {
    let mut out = Outbound::new();
    let body = Bytes::from(vec![7u8; body_len]);
    for tag in 1..=n {
        let deliver = Method::BasicDeliver(BasicDeliver {
            consumer_tag: ShortStr::from_static("ctag-1"),
            delivery_tag: tag,
            redelivered: false,
            exchange: ShortStr::from_static("tasks"),
            routing_key: ShortStr::from_static("work"),
        });
        out.push_content(1, &deliver, &properties(), body.clone(), FRAME_MAX)
            .expect("encodable");
    }
    BytesMut::from(out.copy_to_bytes(out.remaining()).as_ref())
}

fn decode_messages(
    decoder: &mut FrameDecoder,
    asm: &mut ContentAssembler,
    buf: &mut BytesMut,
    n: usize,
) -> u64 {
    let mut tags = 0;
    let mut got = 0;
    while got < n {
        let frame = decoder.decode(buf).expect("valid").expect("complete");
        if let Some(Assembled::Content(c)) = asm.push(frame).expect("in order") {
            if let Method::BasicDeliver(d) = &c.method {
                tags += d.delivery_tag;
            }
            got += 1;
        }
    }
    tags
}

#[test]
fn decoding_deliver_triples_allocates_nothing() {
    for body_len in [64, 4096, 100_000] {
        let mut buf = deliveries(1100, body_len);
        let mut decoder = FrameDecoder::with_frame_max(FRAME_MAX);
        let mut asm = ContentAssembler::new(u64::MAX);
        // Warm-up: the first split turns the buffer into a shared one (one allocation, once).
        decode_messages(&mut decoder, &mut asm, &mut buf, 100);
        let (tags, counts) = count(|| decode_messages(&mut decoder, &mut asm, &mut buf, 1000));
        assert_eq!(
            tags,
            (101..=1100).sum::<u64>(),
            "every message decoded, in order"
        );
        assert_eq!(counts.allocations, 0, "{body_len}-byte bodies: {counts:?}");
        assert!(buf.is_empty());
    }
}

/// Reads every batch `buf` holds, deliveries in place; returns the sum of their tags and of
/// their bodies' and content types' lengths.
fn read_batches(decoder: &mut FrameDecoder, buf: &mut BytesMut) -> u64 {
    let mut sum = 0;
    while let Some(batch) = decoder.decode_batch(buf).expect("valid") {
        for item in &batch {
            let Ok(Inbound::Delivery(d)) = item else {
                panic!("whole deliveries: {item:?}");
            };
            let content_type = d.properties().content_type().unwrap_or_default();
            sum += d.delivery_tag() + (d.body().len() + content_type.len()) as u64;
        }
    }
    sum
}

#[test]
fn decoding_in_batches_allocates_nothing_even_from_64_kib_reads() {
    for body_len in [64, 4096, 100_000] {
        let wire = deliveries(1100, body_len);
        let per_message = (body_len + "application/json".len()) as u64;
        let expected = |tags: std::ops::RangeInclusive<u64>| {
            tags.clone().sum::<u64>() + per_message * tags.count() as u64
        };

        // The whole buffer at once.
        let mut buf = wire.clone();
        let mut decoder = FrameDecoder::with_frame_max(FRAME_MAX);
        let (sum, counts) = count(|| read_batches(&mut decoder, &mut buf));
        assert_eq!(sum, expected(1..=1100), "every message read");
        // The first split shares the buffer (one allocation, once).
        assert!(
            counts.allocations <= 1,
            "{body_len}-byte bodies: {counts:?}"
        );

        // 64 KiB reads into the decoder's own buffer, as from a socket: after the first few,
        // the buffer is reused as it is (a delivery cut by a read waits in it for the rest).
        let mut buf = BytesMut::with_capacity(2 * 64 * 1024 + 2 * FRAME_MAX as usize);
        let mut reads = wire.chunks(64 * 1024);
        let mut sum = 0;
        for read in reads.by_ref().take(4) {
            buf.extend_from_slice(read);
            sum += read_batches(&mut decoder, &mut buf);
        }
        let (rest, counts) = count(|| {
            let mut sum = 0;
            for read in reads {
                buf.extend_from_slice(read);
                sum += read_batches(&mut decoder, &mut buf);
            }
            sum
        });
        assert_eq!(sum + rest, expected(1..=1100), "every message read");
        assert_eq!(counts.allocations, 0, "{body_len}-byte bodies: {counts:?}");
        assert!(buf.is_empty());
    }
}

#[test]
fn decoded_body_shares_the_read_buffer() {
    let mut buf = deliveries(1, 64);
    let region = buf.as_ptr_range();
    let mut decoder = FrameDecoder::with_frame_max(FRAME_MAX);
    let mut asm = ContentAssembler::new(u64::MAX);
    let content = loop {
        let frame = decoder.decode(&mut buf).expect("valid").expect("complete");
        if let Some(Assembled::Content(c)) = asm.push(frame).expect("in order") {
            break c;
        }
    };
    let body = content.body.as_single().expect("one frame, one chunk");
    assert!(
        region.contains(&body.as_ptr()),
        "the body is a slice of the read buffer"
    );
    let Method::BasicDeliver(d) = &content.method else {
        panic!("deliver")
    };
    assert!(
        region.contains(&d.routing_key.as_bytes().as_ptr()),
        "so are short strings"
    );
    let headers = content.header.properties.headers().expect("headers");
    assert!(region.contains(&headers.as_raw().as_ptr()), "and tables");
}

#[test]
fn a_multi_frame_body_is_chained_not_copied() {
    // 300 000 bytes at frame-max 131 072: three body frames per message.
    let mut buf = deliveries(110, 300_000);
    let mut decoder = FrameDecoder::with_frame_max(FRAME_MAX);
    let mut asm = ContentAssembler::new(u64::MAX);
    decode_messages(&mut decoder, &mut asm, &mut buf, 10);
    let (_, counts) = count(|| decode_messages(&mut decoder, &mut asm, &mut buf, 100));
    // One allocation per message, for the list of its chunks; none the size of a body.
    assert!(counts.allocations <= 100, "{counts:?}");
    assert!(counts.bytes <= 100 * 1024, "{counts:?}");

    let mut buf = deliveries(1, 300_000);
    let region = buf.as_ptr_range();
    let content = loop {
        let frame = decoder.decode(&mut buf).expect("valid").expect("complete");
        if let Some(Assembled::Content(c)) = asm.push(frame).expect("in order") {
            break c;
        }
    };
    assert_eq!(content.body.len(), 300_000);
    assert_eq!(content.body.chunks().len(), 3);
    for chunk in content.body.chunks() {
        assert!(
            region.contains(&chunk.as_ptr()),
            "each chunk is a slice of the read buffer"
        );
    }
}

#[test]
fn encoding_a_publish_allocates_nothing() {
    let publish = Method::BasicPublish(BasicPublish {
        exchange: ShortStr::from_static("tasks"),
        routing_key: ShortStr::from_static("work"),
        mandatory: true,
        ..Default::default()
    });
    let props = properties();
    let body = Bytes::from(vec![1u8; 64]);
    let mut out = Outbound::with_capacity(64 * 1024);
    let mut sink = Vec::with_capacity(1 << 20);
    let publish_n = |n: usize, out: &mut Outbound, sink: &mut Vec<u8>| {
        for _ in 0..n {
            out.push_content(1, &publish, &props, body.clone(), FRAME_MAX)
                .expect("encodable");
            // What a socket write does: take the bytes, advance past them.
            while out.has_remaining() {
                let chunk = out.chunk();
                let len = chunk.len();
                if sink.len() + len > sink.capacity() {
                    sink.clear();
                }
                sink.extend_from_slice(chunk);
                out.advance(len);
            }
        }
    };
    publish_n(100, &mut out, &mut sink);
    let (_, counts) = count(|| publish_n(10_000, &mut out, &mut sink));
    assert_eq!(
        counts.allocations, 0,
        "no allocation encoding 10 000 publishes: {counts:?}"
    );
}

#[test]
fn a_frame_claiming_4_gib_is_refused_from_its_header_reserving_nothing() {
    let mut decoder = FrameDecoder::with_frame_max(FRAME_MAX);
    // A method frame header claiming 0xFFFFFFFF payload bytes; nothing else arrives.
    let mut buf = BytesMut::with_capacity(64);
    buf.extend_from_slice(&[1, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF]);
    let capacity = buf.capacity();
    let (result, counts) = count(|| decoder.decode(&mut buf));
    assert!(
        matches!(result, Err(amqp_codec::DecodeError::FrameTooLarge { .. })),
        "{result:?}"
    );
    assert_eq!(counts.allocations, 0, "{counts:?}");
    assert_eq!(
        buf.capacity(),
        capacity,
        "no room made for the claimed payload"
    );
}
