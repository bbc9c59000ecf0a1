//! Codec benchmarks: `amqp-codec` side by side with `amq-protocol` (the codec lapin uses).
//!
//! Every group runs both implementations on the same input, with `Throughput::Elements` set to
//! the frames (or tables) one iteration handles, so criterion reports frames per second and
//! `benches/report` can divide one by the other.
//!
//! * `deliver_triple/{64B,4KiB,128KiB}`: decoding a buffer of basic.deliver + content header +
//!   body frame(s), as RabbitMQ sends them with frame-max 131072 (a 128 KiB body takes two body
//!   frames). Ours decodes with `FrameDecoder` and assembles whole messages with
//!   `ContentAssembler` (method, header and body into one `Content`, the body a `Body` chain of
//!   the frames' slices); theirs runs `parse_frame` over the buffer and stops there:
//!   amq-protocol has no assembler, so its side does not assemble messages (it does copy each
//!   body frame's payload into a `Vec`, where ours shares the read buffer). Both count frames,
//!   and both get a fresh copy of the same bytes per iteration, made outside the timed section;
//!   decoded values are dropped inside it, on both sides.
//! * `publish_encode`: basic.publish + header + 64 B body; ours via `Outbound::push_content`
//!   (drained after each message), theirs via `gen_frame` into a reused `Vec`.
//! * `table_decode_20`: a 20-entry field table of mixed types; ours `FieldTable::from_raw` and
//!   a walk over every entry (nested ones included), theirs `parse_field_table`, which builds a
//!   `BTreeMap`, and a walk over its entries.
//!
//! Every fixture is built with our encoder, and a setup assertion checks that amq-protocol
//! decodes (or encodes) the same bytes to the same values before anything is timed. The fixtures
//! and the measured loops live in the crate's library (`src/lib.rs`), shared with
//! `examples/profile.rs`, which runs the same loops under callgrind to count instructions.

use std::hint::black_box;
use std::time::Duration;

use amq_protocol::frame::{WriteContext, gen_frame, parse_frame};
use amq_protocol::types::parsing::parse_field_table;
use amqp_benches::*;
use amqp_codec::{Assembled, ContentAssembler, FieldTable, FrameDecoder, Outbound};
use bytes::BytesMut;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

// ---------------------------------------------------------------------------------------------
// Groups.

fn deliver_triple(c: &mut Criterion) {
    for (name, size, count) in DELIVER_SIZES {
        let body = body(size);
        let wire = deliveries(count, &body);
        let frames_per_message = 2 + body_frames(size);
        let frames = count * frames_per_message;

        // Setup assertions: both decoders see the same frames in these bytes.
        let mut decoder = FrameDecoder::with_frame_max(FRAME_MAX);
        let mut asm = ContentAssembler::new(u64::MAX);
        let mut buf = BytesMut::from(&wire[..]);
        let mut messages = Vec::new();
        while let Some(frame) = decoder.decode(&mut buf).expect("valid frames") {
            if let Some(Assembled::Content(content)) = asm.push(frame).expect("in order") {
                messages.push(content);
            }
        }
        assert_eq!(messages.len(), count, "{name}: every delivery assembled");
        let mut expected = Vec::new();
        for (i, content) in messages.iter().enumerate() {
            let tag = i as u64 + 1;
            assert_eq!(content.method, deliver(tag));
            assert_eq!(content.header.properties, properties(tag));
            assert_eq!(content.header.body_size, size as u64);
            assert_eq!(content.body, body);
            expected.extend(their_frames(&deliver(tag), &properties(tag), &body));
        }
        let mut theirs = Vec::new();
        let mut input = &wire[..];
        while !input.is_empty() {
            let (rest, frame) = parse_frame(input).expect("amq-protocol parses our frames");
            theirs.push(frame);
            input = rest;
        }
        assert_eq!(theirs.len(), frames, "{name}: frame count");
        assert!(
            theirs == expected,
            "{name}: amq-protocol decodes the same values"
        );
        assert_eq!(
            decode_ours(&mut BytesMut::from(&wire[..]), &mut decoder, &mut asm),
            frames
        );
        assert_eq!(decode_theirs(&wire), frames);

        let mut group = c.benchmark_group(format!("deliver_triple/{name}"));
        group.throughput(Throughput::Elements(frames as u64));
        // Each iteration decodes a fresh copy of `wire`, made outside the timed section.
        group.bench_function("amqp-codec", |b| {
            b.iter_batched_ref(
                || BytesMut::from(&wire[..]),
                |buf| black_box(decode_ours(buf, &mut decoder, &mut asm)),
                BatchSize::LargeInput,
            );
        });
        group.bench_function("amq-protocol", |b| {
            b.iter_batched_ref(
                || BytesMut::from(&wire[..]),
                |buf| black_box(decode_theirs(buf)),
                BatchSize::LargeInput,
            );
        });
        group.finish();
    }
}

fn publish_encode(c: &mut Criterion) {
    let method = publish();
    let props = properties(42);
    let body = body(64);
    let their = their_frames(&method, &props, &body);
    assert_eq!(their.len(), 3);

    // Setup assertion: both encoders write the same bytes.
    let ours = encode_ours(&method, &props, &body);
    let mut ctx = WriteContext::from(Vec::new());
    for frame in &their {
        ctx = gen_frame(frame)(ctx).expect("amq-protocol encodes the fixture");
    }
    assert_eq!(&ctx.into_inner().0[..], &ours[..], "same bytes on the wire");

    let mut group = c.benchmark_group("publish_encode");
    group.throughput(Throughput::Elements(their.len() as u64));
    group.bench_function("amqp-codec", |b| {
        let mut out = Outbound::with_capacity(4096);
        b.iter(|| encode_publish_ours(&mut out, &method, &props, &body));
    });
    group.bench_function("amq-protocol", |b| {
        let mut buf = Vec::with_capacity(4096);
        b.iter(|| encode_publish_theirs(&mut buf, &their));
    });
    group.finish();
}

fn table_decode_20(c: &mut Criterion) {
    let wire = table_20();
    let raw = wire.slice(4..);

    // Setup assertions: 20 entries, decoded to the same values by both.
    let ours = FieldTable::from_raw(raw.clone()).expect("valid table");
    assert_eq!(ours.iter().count(), 20);
    let (rest, theirs) = parse_field_table(&wire[..]).expect("amq-protocol parses our table");
    assert!(rest.is_empty());
    assert_eq!(theirs, their_table(&ours), "same values");
    assert_eq!(walk_table(&ours), walk_their_table(&theirs));

    let mut group = c.benchmark_group("table_decode_20");
    group.throughput(Throughput::Elements(1));
    group.bench_function("amqp-codec", |b| {
        b.iter(|| black_box(table_ours(&raw)));
    });
    group.bench_function("amq-protocol", |b| {
        b.iter(|| black_box(table_theirs(&wire)));
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = deliver_triple, publish_encode, table_decode_20
}
criterion_main!(benches);
