//! Codec benchmarks: `amqp-codec` side by side with `amq-protocol` (the codec lapin uses).
//!
//! Every group runs both implementations on the same input, with `Throughput::Elements` set to
//! the frames (or tables) one iteration handles, so criterion reports frames per second and
//! `benches/report` can divide one by the other.
//!
//! * `deliver_triple/{64B,4KiB,128KiB}`: decoding a buffer of basic.deliver + content header +
//!   body frame(s), as RabbitMQ sends them with frame-max 131072 (a 128 KiB body takes two body
//!   frames). Ours decodes with `FrameDecoder` and assembles whole messages with
//!   `ContentAssembler`; theirs runs `parse_frame` over the buffer. Both get a fresh copy of the
//!   same bytes per iteration, made outside the timed section.
//! * `publish_encode`: basic.publish + header + 64 B body; ours via `Outbound::push_content`
//!   (drained after each message), theirs via `gen_frame` into a reused `Vec`.
//! * `table_decode_20`: a 20-entry field table of mixed types; ours `FieldTable::from_raw` and
//!   a walk over every entry (nested ones included), theirs `parse_field_table`, which builds a
//!   `BTreeMap`, and a walk over its entries.
//!
//! Every fixture is built with our encoder, and a setup assertion checks that amq-protocol
//! decodes (or encodes) the same bytes to the same values before anything is timed.

use std::hint::black_box;
use std::time::Duration;

use amq_protocol::frame::{AMQPContentHeader, AMQPFrame, WriteContext, gen_frame, parse_frame};
use amq_protocol::protocol::{AMQPClass, BasicProperties as TheirProperties, basic};
use amq_protocol::types::parsing::parse_field_table;
use amq_protocol::types::{
    AMQPValue, ByteArray, DecimalValue, FieldArray as TheirArray, FieldTable as TheirTable,
    LongString, ShortString,
};
use amqp_codec::methods::{BasicDeliver, BasicPublish};
use amqp_codec::{
    Assembled, BasicProperties, ContentAssembler, Decimal, FRAME_OVERHEAD, FieldArray, FieldTable,
    FieldValue, FrameDecoder, Method, Outbound, PropertiesBuilder, ShortStr,
};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

/// RabbitMQ's default frame-max.
const FRAME_MAX: u32 = 131_072;
/// Largest body slice one frame carries at that frame-max.
const MAX_BODY_PER_FRAME: usize = FRAME_MAX as usize - FRAME_OVERHEAD;
/// The channel every fixture uses.
const CHANNEL: u16 = 1;

/// Body sizes for `deliver_triple`, with the number of deliveries per buffer: 256 for the small
/// ones, 16 for 128 KiB so that one buffer stays at 2 MiB rather than 32.
const DELIVER_SIZES: [(&str, usize, usize); 3] = [
    ("64B", 64, 256),
    ("4KiB", 4 * 1024, 256),
    ("128KiB", 128 * 1024, 16),
];

// ---------------------------------------------------------------------------------------------
// Fixtures, built with our encoder.

fn short(s: &str) -> ShortStr {
    ShortStr::try_from(s).expect("fixture strings fit in a short string")
}

/// A body of `len` bytes of printable, not all equal, content.
fn body(len: usize) -> Bytes {
    (0..len).map(|i| b' ' + (i % 95) as u8).collect()
}

/// A small application headers table, as a producer might set: keys in sorted order, so that
/// amq-protocol (which keeps tables in a `BTreeMap`) encodes it to the same bytes.
fn small_headers() -> FieldTable {
    FieldTable::builder()
        .insert("x-attempt", 1i32)
        .insert("x-tenant", "acme-eu")
        .insert("x-trace-id", "4bf92f3577b34da6a3ce929d0e0e4736")
        .build()
        .expect("fixture keys fit in short strings")
}

/// The properties of a delivered or published message: content-type, delivery-mode 2,
/// message-id and a small headers table.
fn properties(message_id: u64) -> BasicProperties {
    PropertiesBuilder {
        content_type: Some(ShortStr::from_static("application/json")),
        delivery_mode: Some(BasicProperties::PERSISTENT),
        message_id: Some(short(&format!("msg-{message_id:016x}"))),
        headers: Some(small_headers()),
        ..Default::default()
    }
    .build()
}

fn deliver(delivery_tag: u64) -> Method {
    Method::BasicDeliver(BasicDeliver {
        consumer_tag: ShortStr::from_static("amq.ctag-3jXq0vPcXvyrBj6Yq8mKxA"),
        delivery_tag,
        redelivered: false,
        exchange: ShortStr::from_static("orders"),
        routing_key: ShortStr::from_static("orders.created.eu-west-1"),
    })
}

fn publish() -> Method {
    Method::BasicPublish(BasicPublish {
        ticket: 0,
        exchange: ShortStr::from_static("orders"),
        routing_key: ShortStr::from_static("orders.created.eu-west-1"),
        mandatory: false,
        immediate: false,
    })
}

/// Encodes one message (method, header, body frames) with our `Outbound`, as contiguous bytes.
fn encode_ours(method: &Method, properties: &BasicProperties, body: &Bytes) -> Bytes {
    let mut out = Outbound::new();
    out.push_content(CHANNEL, method, properties, body.clone(), FRAME_MAX)
        .expect("fixture message fits in frame-max");
    out.copy_to_bytes(out.remaining())
}

/// Body frames a body of `len` bytes takes at frame-max 131072.
fn body_frames(len: usize) -> usize {
    len.div_ceil(MAX_BODY_PER_FRAME)
}

/// `count` deliveries of `body`, back to back, as RabbitMQ would write them to the socket.
fn deliveries(count: usize, body: &Bytes) -> Bytes {
    let mut wire = BytesMut::new();
    for i in 0..count {
        let tag = i as u64 + 1;
        wire.put(encode_ours(&deliver(tag), &properties(tag), body));
    }
    wire.freeze()
}

/// A 20-entry table of mixed types, with its 4-byte length prefix, in wire order: ints of
/// every width, bools, long strings, a nested table, an array, a timestamp, a decimal, floats.
fn table_20() -> Bytes {
    let x_death = FieldTable::builder()
        .insert("count", 3i64)
        .insert("exchange", "orders")
        .insert("queue", "orders.created")
        .insert("reason", "rejected")
        .insert("time", FieldValue::Timestamp(1_717_171_717))
        .build()
        .expect("fixture keys fit in short strings");
    let routing_keys: FieldArray = [
        FieldValue::from("orders.created.eu-west-1"),
        FieldValue::from("orders.created"),
        FieldValue::I32(7),
    ]
    .into_iter()
    .collect();
    let table = FieldTable::builder()
        .insert("x-priority", 5u8)
        .insert("x-offset", -3i8)
        .insert("x-shard", -1234i16)
        .insert("x-port", 5672u16)
        .insert("x-message-ttl", 60_000i32)
        .insert("x-max-length", 3_000_000_000u32)
        .insert("x-max-length-bytes", 1i64 << 40)
        .insert("x-redelivered", true)
        .insert("x-compressed", false)
        .insert("content-source", "orders-service.eu-west-1.prod")
        .insert("x-trace-id", "4bf92f3577b34da6a3ce929d0e0e4736")
        .insert(
            "x-reply-text",
            "PRECONDITION_FAILED - inequivalent arg 'durable' for queue 'orders'",
        )
        .insert("x-death", x_death)
        .insert("x-routing-keys", routing_keys)
        .insert("x-published-at", FieldValue::Timestamp(1_717_171_000))
        .insert(
            "x-amount",
            Decimal {
                scale: 2,
                value: 1_234_567,
            },
        )
        .insert("x-ratio", 0.75f32)
        .insert("x-score", 0.123_456_789f64)
        .insert("x-retries", 2i32)
        .insert("x-queue-type", "quorum")
        .build()
        .expect("fixture keys fit in short strings");
    let mut wire = BytesMut::new();
    wire.put_u32(u32::try_from(table.encoded_len()).expect("a small table"));
    wire.put_slice(table.as_raw());
    wire.freeze()
}

// ---------------------------------------------------------------------------------------------
// The same values in amq-protocol's types, for the setup assertions.

fn their_short(s: &ShortStr) -> ShortString {
    ShortString::from(s.as_str().expect("fixture strings are UTF-8"))
}

fn their_value(v: &FieldValue) -> AMQPValue {
    match v {
        FieldValue::Bool(v) => AMQPValue::Boolean(*v),
        FieldValue::I8(v) => AMQPValue::ShortShortInt(*v),
        FieldValue::U8(v) => AMQPValue::ShortShortUInt(*v),
        FieldValue::I16(v) => AMQPValue::ShortInt(*v),
        FieldValue::U16(v) => AMQPValue::ShortUInt(*v),
        FieldValue::I32(v) => AMQPValue::LongInt(*v),
        FieldValue::U32(v) => AMQPValue::LongUInt(*v),
        FieldValue::I64(v) => AMQPValue::LongLongInt(*v),
        FieldValue::F32(v) => AMQPValue::Float(*v),
        FieldValue::F64(v) => AMQPValue::Double(*v),
        FieldValue::Decimal(d) => AMQPValue::DecimalValue(DecimalValue {
            scale: d.scale,
            value: d.value,
        }),
        FieldValue::LongStr(s) => AMQPValue::LongString(LongString::from(s.as_bytes().to_vec())),
        FieldValue::Array(a) => AMQPValue::FieldArray(TheirArray::from(
            a.iter().map(|v| their_value(&v)).collect::<Vec<_>>(),
        )),
        FieldValue::Timestamp(v) => AMQPValue::Timestamp(*v),
        FieldValue::Table(t) => AMQPValue::FieldTable(their_table(t)),
        FieldValue::Void => AMQPValue::Void,
        FieldValue::ByteArray(b) => AMQPValue::ByteArray(ByteArray::from(b.to_vec())),
    }
}

fn their_table(t: &FieldTable) -> TheirTable {
    let mut theirs = TheirTable::default();
    for (k, v) in t {
        theirs.insert(their_short(&k), their_value(&v));
    }
    theirs
}

fn their_properties(p: &BasicProperties) -> TheirProperties {
    // Only the properties the fixtures set.
    let p = p.to_builder();
    let mut theirs = TheirProperties::default();
    if let Some(v) = &p.content_type {
        theirs = theirs.with_content_type(their_short(v));
    }
    if let Some(v) = &p.headers {
        theirs = theirs.with_headers(their_table(v));
    }
    if let Some(v) = p.delivery_mode {
        theirs = theirs.with_delivery_mode(v);
    }
    if let Some(v) = &p.message_id {
        theirs = theirs.with_message_id(their_short(v));
    }
    theirs
}

fn their_method(m: &Method) -> AMQPClass {
    AMQPClass::Basic(match m {
        Method::BasicDeliver(d) => basic::AMQPMethod::Deliver(basic::Deliver {
            consumer_tag: their_short(&d.consumer_tag),
            delivery_tag: d.delivery_tag,
            redelivered: d.redelivered,
            exchange: their_short(&d.exchange),
            routing_key: their_short(&d.routing_key),
        }),
        Method::BasicPublish(p) => basic::AMQPMethod::Publish(basic::Publish {
            exchange: their_short(&p.exchange),
            routing_key: their_short(&p.routing_key),
            mandatory: p.mandatory,
            immediate: p.immediate,
        }),
        other => panic!("no fixture uses {}", other.name()),
    })
}

/// One message as amq-protocol's frames.
fn their_frames(method: &Method, properties: &BasicProperties, body: &[u8]) -> Vec<AMQPFrame> {
    let mut frames = vec![
        AMQPFrame::Method(CHANNEL, their_method(method)),
        AMQPFrame::Header(
            CHANNEL,
            AMQPContentHeader {
                class_id: 60,
                body_size: body.len() as u64,
                properties: their_properties(properties),
            },
        ),
    ];
    frames.extend(
        body.chunks(MAX_BODY_PER_FRAME)
            .map(|chunk| AMQPFrame::Body(CHANNEL, chunk.to_vec())),
    );
    frames
}

// ---------------------------------------------------------------------------------------------
// The measured loops.

/// Decodes every frame in `buf` and assembles the messages; returns the number of frames.
fn decode_ours(
    buf: &mut BytesMut,
    decoder: &mut FrameDecoder,
    asm: &mut ContentAssembler,
) -> usize {
    let mut frames = 0;
    while let Some(frame) = decoder.decode(buf).expect("fixture frames are valid") {
        frames += 1;
        if let Some(done) = asm.push(frame).expect("fixture frames are in order") {
            black_box(done);
        }
    }
    frames
}

/// Parses every frame in `input` with amq-protocol; returns the number of frames.
fn decode_theirs(mut input: &[u8]) -> usize {
    let mut frames = 0;
    while !input.is_empty() {
        let (rest, frame) = parse_frame(input).expect("fixture frames are valid");
        black_box(frame);
        input = rest;
        frames += 1;
    }
    frames
}

/// Reads every value of a table, walking into nested tables and arrays.
fn walk_table(table: &FieldTable) -> usize {
    table
        .iter()
        .map(|(key, value)| {
            black_box(key);
            1 + walk_value(value)
        })
        .sum()
}

fn walk_value(value: FieldValue) -> usize {
    let nested = match &value {
        FieldValue::Table(t) => walk_table(t),
        FieldValue::Array(a) => a.iter().map(walk_value).sum::<usize>(),
        _ => 0,
    };
    black_box(value);
    nested
}

/// Reads every value of an amq-protocol table (already fully decoded, nested ones included).
fn walk_their_table(table: &TheirTable) -> usize {
    table
        .inner()
        .iter()
        .map(|(key, value)| {
            black_box(key);
            1 + walk_their_value(value)
        })
        .sum()
}

fn walk_their_value(value: &AMQPValue) -> usize {
    let nested = match value {
        AMQPValue::FieldTable(t) => walk_their_table(t),
        AMQPValue::FieldArray(a) => a.as_slice().iter().map(walk_their_value).sum::<usize>(),
        _ => 0,
    };
    black_box(value);
    nested
}

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
        b.iter(|| {
            out.push_content(CHANNEL, &method, &props, body.clone(), FRAME_MAX)
                .expect("fits in frame-max");
            black_box(&out);
            out.advance(out.remaining());
        });
    });
    group.bench_function("amq-protocol", |b| {
        let mut buf = Vec::with_capacity(4096);
        b.iter(|| {
            buf.clear();
            let mut ctx = WriteContext::from(std::mem::take(&mut buf));
            for frame in &their {
                ctx = gen_frame(frame)(ctx).expect("fits");
            }
            buf = ctx.into_inner().0;
            black_box(&buf);
        });
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
        b.iter(|| {
            let table = FieldTable::from_raw(black_box(&raw).clone()).expect("valid table");
            black_box(walk_table(&table))
        });
    });
    group.bench_function("amq-protocol", |b| {
        b.iter(|| {
            let (_, table) = parse_field_table(black_box(&wire[..])).expect("valid table");
            black_box(walk_their_table(&table))
        });
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
