//! Codec benchmarks: `amqp-codec` side by side with `amq-protocol` (the codec lapin uses).
//!
//! Every group runs both implementations on the same input, with `Throughput::Elements` set to
//! the frames (or tables) one iteration handles, so criterion reports frames per second and
//! `benches/report` can divide one by the other.
//!
//! * `deliver/{minimal,rich}/{64B,4KiB}/{whole,stream}`: decoding about 1 MiB of
//!   basic.deliver + content header + body frames, as RabbitMQ sends them with frame-max
//!   131072, and reading each delivery as an application does (routing key, content type,
//!   delivery mode, body), on both sides. Two shapes, so that no choice of input flatters: a
//!   minimal delivery (short strings, content-type and delivery-mode only) and a rich one
//!   (server-named consumer tag, message-id, a headers table). Two paths: `whole`, the buffer
//!   already in memory (a fresh copy per iteration, made outside the timed section); `stream`,
//!   64 KiB reads appended to the decoder's own buffer and decoded as far as they go, as a socket
//!   read loop does (the copies are timed, for both sides). Ours (`amqp-codec`) splits the whole
//!   frames off in batches (`FrameDecoder::decode_batch`) and reads each delivery whole and in
//!   place (`DeliveryRef`); `amqp-codec frames` is ours frame by frame (`FrameDecoder::decode`
//!   and `ContentAssembler`, which hand out owned `Frame`s and `Content`s). amq-protocol has no
//!   assembler, so its side reads each frame as it comes (and copies each body into a `Vec` and
//!   each string into a `String`, where ours reads them in place). Each group also times
//!   `envelope`: a loop that only steps over the frame envelopes (type, size, frame-end) of the
//!   same bytes, on the same path: the lower bound of any decoder.
//! * `deliver/rich/128KiB/whole`: rich deliveries of 128 KiB (two body frames each).
//! * `publish_encode`: basic.publish + header + 64 B body; ours via `Outbound::push_content`
//!   (drained after each message), theirs via `gen_frame` into a reused `Vec`.
//! * `table_decode_20`: a 20-entry field table of mixed types; ours `FieldTable::from_raw` and
//!   a walk over every entry (nested ones included), theirs `parse_field_table`, which builds a
//!   `BTreeMap`, and a walk over its entries.
//!
//! Every fixture is built with our encoder, and a setup assertion checks that amq-protocol
//! decodes (or encodes) the same bytes to the same values before anything is timed. The fixtures
//! and the measured loops live in the crate's library (`src/`), shared with
//! `examples/profile.rs`, which runs the same loops under callgrind (`benches/callgrind`).

use std::hint::black_box;
use std::time::Duration;

use amq_protocol::frame::{WriteContext, gen_frame, parse_frame};
use amq_protocol::types::parsing::parse_field_table;
use amqp_benches::*;
use amqp_codec::{Assembled, ContentAssembler, FieldTable, FrameDecoder, Inbound, Outbound};
use bytes::BytesMut;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

// ---------------------------------------------------------------------------------------------
// Groups.

/// Checks that both codecs see the same deliveries in `load`'s bytes, and that every loop
/// counts every frame.
fn check_workload(load: &Workload) {
    let body = body(load.body_len);
    let name = format!("{} {} B", load.shape.name(), load.body_len);
    let mut decoder = FrameDecoder::with_frame_max(FRAME_MAX);
    let mut asm = ContentAssembler::new(u64::MAX);
    let mut buf = BytesMut::from(&load.wire[..]);
    let mut messages = Vec::new();
    while let Some(frame) = decoder.decode(&mut buf).expect("valid frames") {
        if let Some(Assembled::Content(content)) = asm.push(frame).expect("in order") {
            messages.push(content);
        }
    }
    assert_eq!(
        messages.len(),
        load.messages,
        "{name}: every delivery assembled"
    );
    let mut expected = Vec::new();
    for (i, content) in messages.iter().enumerate() {
        let tag = i as u64 + 1;
        let (deliver, properties) = (load.shape.deliver(tag), load.shape.properties(tag));
        assert_eq!(content.method, deliver);
        assert_eq!(content.header.properties, properties);
        assert_eq!(content.header.body_size, load.body_len as u64);
        assert_eq!(content.body, body);
        expected.extend(their_frames(&deliver, &properties, &body));
    }
    let mut theirs = Vec::new();
    let mut input = &load.wire[..];
    while !input.is_empty() {
        let (rest, frame) = parse_frame(input).expect("amq-protocol parses our frames");
        theirs.push(frame);
        input = rest;
    }
    assert!(
        theirs == expected,
        "{name}: amq-protocol decodes the same values"
    );
    let frames = load.frames();
    assert_eq!(theirs.len(), frames, "{name}: frame count");
    // Read in batches, the same messages.
    let mut wire = BytesMut::from(&load.wire[..]);
    let mut batched = Vec::new();
    while let Some(batch) = decoder.decode_batch(&mut wire).expect("valid frames") {
        for item in &batch {
            match item.expect("valid frames") {
                Inbound::Delivery(delivery) => batched.push(delivery.to_content()),
                Inbound::Frame(frame) => {
                    if let Some(Assembled::Content(content)) = asm.push(frame).expect("in order") {
                        batched.push(content);
                    }
                }
            }
        }
    }
    assert!(
        batched == messages,
        "{name}: batches read the same messages"
    );
    let mut wire = BytesMut::from(&load.wire[..]);
    assert_eq!(decode_ours(&mut wire, &mut decoder, &mut asm), frames);
    let mut wire = BytesMut::from(&load.wire[..]);
    assert_eq!(decode_frames(&mut wire, &mut decoder, &mut asm), frames);
    assert_eq!(decode_theirs(&load.wire), frames);
    assert_eq!(envelopes(&load.wire), frames);
    let mut stream = BytesMut::new();
    assert_eq!(
        stream_ours(&load.wire, &mut stream, &mut decoder, &mut asm),
        frames
    );
    assert!(stream.is_empty());
    assert_eq!(
        stream_frames(&load.wire, &mut stream, &mut decoder, &mut asm),
        frames
    );
    assert_eq!(stream_theirs(&load.wire, &mut Vec::new()), frames);
    assert_eq!(stream_envelopes(&load.wire, &mut stream), frames);
}

/// One group: both codecs and the envelope walk on `load`, over `path`.
fn deliver_group(c: &mut Criterion, load: &Workload, size: &str, path: Path) {
    let wire = &load.wire;
    let mut decoder = FrameDecoder::with_frame_max(FRAME_MAX);
    let mut asm = ContentAssembler::new(u64::MAX);
    let mut group = c.benchmark_group(format!(
        "deliver/{}/{size}/{}",
        load.shape.name(),
        path.name()
    ));
    group.throughput(Throughput::Elements(load.frames() as u64));
    match path {
        // Each iteration decodes a fresh copy of `wire`, made outside the timed section.
        Path::Whole => {
            let fresh = || BytesMut::from(&wire[..]);
            group.bench_function("amqp-codec", |b| {
                b.iter_batched_ref(
                    fresh,
                    |buf| black_box(decode_ours(buf, &mut decoder, &mut asm)),
                    BatchSize::LargeInput,
                );
            });
            group.bench_function("amqp-codec frames", |b| {
                b.iter_batched_ref(
                    fresh,
                    |buf| black_box(decode_frames(buf, &mut decoder, &mut asm)),
                    BatchSize::LargeInput,
                );
            });
            group.bench_function("amq-protocol", |b| {
                b.iter_batched_ref(
                    fresh,
                    |buf| black_box(decode_theirs(buf)),
                    BatchSize::LargeInput,
                );
            });
            group.bench_function("envelope", |b| {
                b.iter_batched_ref(
                    fresh,
                    |buf| black_box(envelopes(buf)),
                    BatchSize::LargeInput,
                );
            });
        }
        // Each iteration reads `wire` into the side's own buffer, kept from one to the next.
        Path::Stream => {
            let mut buf = BytesMut::new();
            group.bench_function("amqp-codec", |b| {
                b.iter(|| black_box(stream_ours(wire, &mut buf, &mut decoder, &mut asm)));
            });
            group.bench_function("amqp-codec frames", |b| {
                b.iter(|| black_box(stream_frames(wire, &mut buf, &mut decoder, &mut asm)));
            });
            let mut theirs = Vec::new();
            group.bench_function("amq-protocol", |b| {
                b.iter(|| black_box(stream_theirs(wire, &mut theirs)));
            });
            group.bench_function("envelope", |b| {
                b.iter(|| black_box(stream_envelopes(wire, &mut buf)));
            });
        }
    }
    group.finish();
}

fn deliver(c: &mut Criterion) {
    for shape in Shape::ALL {
        for (size, len) in BODY_SIZES {
            let load = Workload::new(shape, len);
            check_workload(&load);
            for path in Path::ALL {
                deliver_group(c, &load, size, path);
            }
        }
    }
    let (size, len, messages) = LARGE_BODY;
    let load = Workload::with_messages(Shape::Rich, len, messages);
    check_workload(&load);
    deliver_group(c, &load, size, Path::Whole);
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
    targets = deliver, publish_encode, table_decode_20
}
criterion_main!(benches);
