//! Fixtures and measured loops of the codec benchmarks, shared by the criterion bench
//! (`benches/codec.rs`) and the instruction-count driver (`examples/profile.rs`), so that both
//! measure exactly the same code on exactly the same bytes.
//!
//! Every fixture is built with our encoder; the criterion bench asserts, before timing anything,
//! that amq-protocol decodes (or encodes) the same bytes to the same values.

use std::hint::black_box;

use amq_protocol::frame::{AMQPContentHeader, AMQPFrame, WriteContext, gen_frame, parse_frame};
use amq_protocol::protocol::{AMQPClass, BasicProperties as TheirProperties, basic};
use amq_protocol::types::parsing::parse_field_table;
use amq_protocol::types::{
    AMQPValue, ByteArray, DecimalValue, FieldArray as TheirArray, FieldTable as TheirTable,
    LongString, ShortString,
};
use amqp_codec::methods::{BasicDeliver, BasicPublish};
use amqp_codec::{
    BasicProperties, ContentAssembler, Decimal, FRAME_OVERHEAD, FieldArray, FieldTable, FieldValue,
    FrameDecoder, Method, Outbound, PropertiesBuilder, ShortStr,
};
use bytes::{Buf, BufMut, Bytes, BytesMut};

/// RabbitMQ's default frame-max.
pub const FRAME_MAX: u32 = 131_072;
/// Largest body slice one frame carries at that frame-max.
pub const MAX_BODY_PER_FRAME: usize = FRAME_MAX as usize - FRAME_OVERHEAD;
/// The channel every fixture uses.
pub const CHANNEL: u16 = 1;

/// Body sizes for `deliver_triple`, with the number of deliveries per buffer: 256 for the small
/// ones, 16 for 128 KiB so that one buffer stays at 2 MiB rather than 32.
pub const DELIVER_SIZES: [(&str, usize, usize); 3] = [
    ("64B", 64, 256),
    ("4KiB", 4 * 1024, 256),
    ("128KiB", 128 * 1024, 16),
];

// ---------------------------------------------------------------------------------------------
// Fixtures, built with our encoder.

/// A short string from a fixture literal.
pub fn short(s: &str) -> ShortStr {
    ShortStr::try_from(s).expect("fixture strings fit in a short string")
}

/// A body of `len` bytes of printable, not all equal, content.
pub fn body(len: usize) -> Bytes {
    (0..len).map(|i| b' ' + (i % 95) as u8).collect()
}

/// A small application headers table, as a producer might set: keys in sorted order, so that
/// amq-protocol (which keeps tables in a `BTreeMap`) encodes it to the same bytes.
pub fn small_headers() -> FieldTable {
    FieldTable::builder()
        .insert("x-attempt", 1i32)
        .insert("x-tenant", "acme-eu")
        .insert("x-trace-id", "4bf92f3577b34da6a3ce929d0e0e4736")
        .build()
        .expect("fixture keys fit in short strings")
}

/// The properties of a delivered or published message: content-type, delivery-mode 2,
/// message-id and a small headers table.
pub fn properties(message_id: u64) -> BasicProperties {
    PropertiesBuilder::default()
        .with_content_type("application/json")
        .persistent()
        .with_message_id(short(&format!("msg-{message_id:016x}")))
        .with_headers(small_headers())
        .build()
        .expect("fixture properties fit")
}

/// The basic.deliver every `deliver_triple` message starts with.
pub fn deliver(delivery_tag: u64) -> Method {
    Method::BasicDeliver(BasicDeliver {
        consumer_tag: ShortStr::from_static("amq.ctag-3jXq0vPcXvyrBj6Yq8mKxA"),
        delivery_tag,
        redelivered: false,
        exchange: ShortStr::from_static("orders"),
        routing_key: ShortStr::from_static("orders.created.eu-west-1"),
    })
}

/// The basic.publish `publish_encode` encodes.
pub fn publish() -> Method {
    Method::BasicPublish(BasicPublish {
        ticket: 0,
        exchange: ShortStr::from_static("orders"),
        routing_key: ShortStr::from_static("orders.created.eu-west-1"),
        mandatory: false,
        immediate: false,
    })
}

/// Encodes one message (method, header, body frames) with our `Outbound`, as contiguous bytes.
pub fn encode_ours(method: &Method, properties: &BasicProperties, body: &Bytes) -> Bytes {
    let mut out = Outbound::new();
    out.push_content(CHANNEL, method, properties, body.clone(), FRAME_MAX)
        .expect("fixture message fits in frame-max");
    out.copy_to_bytes(out.remaining())
}

/// Body frames a body of `len` bytes takes at frame-max 131072.
pub fn body_frames(len: usize) -> usize {
    len.div_ceil(MAX_BODY_PER_FRAME)
}

/// `count` deliveries of `body`, back to back, as RabbitMQ would write them to the socket.
pub fn deliveries(count: usize, body: &Bytes) -> Bytes {
    let mut wire = BytesMut::new();
    for i in 0..count {
        let tag = i as u64 + 1;
        wire.put(encode_ours(&deliver(tag), &properties(tag), body));
    }
    wire.freeze()
}

/// A 20-entry table of mixed types, with its 4-byte length prefix, in wire order: ints of
/// every width, bools, long strings, a nested table, an array, a timestamp, a decimal, floats.
pub fn table_20() -> Bytes {
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

/// A short string in amq-protocol's type.
pub fn their_short(s: &ShortStr) -> ShortString {
    ShortString::from(s.as_str().expect("fixture strings are UTF-8"))
}

/// A table value in amq-protocol's type.
pub fn their_value(v: &FieldValue) -> AMQPValue {
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

/// A table in amq-protocol's type.
pub fn their_table(t: &FieldTable) -> TheirTable {
    let mut theirs = TheirTable::default();
    for (k, v) in t {
        theirs.insert(their_short(&k), their_value(&v));
    }
    theirs
}

/// Properties in amq-protocol's type.
pub fn their_properties(p: &BasicProperties) -> TheirProperties {
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

/// A basic method in amq-protocol's type.
pub fn their_method(m: &Method) -> AMQPClass {
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
pub fn their_frames(method: &Method, properties: &BasicProperties, body: &[u8]) -> Vec<AMQPFrame> {
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
// The measured loops of `deliver_triple`, and table walks.

/// `deliver_triple`, ours: decodes every frame in `buf` and assembles the messages; returns the
/// number of frames.
#[inline(never)]
pub fn decode_ours(
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

/// `deliver_triple`, theirs: parses every frame in `input` with amq-protocol (which does not
/// assemble messages); returns the number of frames.
#[inline(never)]
pub fn decode_theirs(mut input: &[u8]) -> usize {
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
pub fn walk_table(table: &FieldTable) -> usize {
    table
        .iter()
        .map(|(key, value)| {
            black_box(key);
            1 + walk_value(value)
        })
        .sum()
}

/// Reads one value, walking into nested tables and arrays.
pub fn walk_value(value: FieldValue) -> usize {
    let nested = match &value {
        FieldValue::Table(t) => walk_table(t),
        FieldValue::Array(a) => a.iter().map(walk_value).sum::<usize>(),
        _ => 0,
    };
    black_box(value);
    nested
}

/// Reads every value of an amq-protocol table (already fully decoded, nested ones included).
pub fn walk_their_table(table: &TheirTable) -> usize {
    table
        .inner()
        .iter()
        .map(|(key, value)| {
            black_box(key);
            1 + walk_their_value(value)
        })
        .sum()
}

/// Reads one amq-protocol value, walking into nested tables and arrays.
pub fn walk_their_value(value: &AMQPValue) -> usize {
    let nested = match value {
        AMQPValue::FieldTable(t) => walk_their_table(t),
        AMQPValue::FieldArray(a) => a.as_slice().iter().map(walk_their_value).sum::<usize>(),
        _ => 0,
    };
    black_box(value);
    nested
}

// ---------------------------------------------------------------------------------------------
// One iteration of each measured group, never inlined so that callgrind can count it alone.

/// `publish_encode`, ours: one publish (method, header, 64 B body) queued, then drained as a
/// socket write would.
#[inline(never)]
pub fn encode_publish_ours(
    out: &mut Outbound,
    method: &Method,
    properties: &BasicProperties,
    body: &Bytes,
) {
    out.push_content(CHANNEL, method, properties, body.clone(), FRAME_MAX)
        .expect("fits in frame-max");
    black_box(&*out);
    out.advance(out.remaining());
}

/// `publish_encode`, theirs: the same three frames with `gen_frame` into a reused `Vec`.
#[inline(never)]
pub fn encode_publish_theirs(buf: &mut Vec<u8>, frames: &[AMQPFrame]) {
    buf.clear();
    let mut ctx = WriteContext::from(std::mem::take(buf));
    for frame in frames {
        ctx = gen_frame(frame)(ctx).expect("fits");
    }
    *buf = ctx.into_inner().0;
    black_box(&*buf);
}

/// `table_decode_20`, ours: validate the entries (without the length prefix), then read every
/// value.
#[inline(never)]
pub fn table_ours(raw: &Bytes) -> usize {
    let table = FieldTable::from_raw(black_box(raw).clone()).expect("valid table");
    walk_table(&table)
}

/// `table_decode_20`, theirs: parse the table (with its length prefix) into a `BTreeMap`, then
/// read every value.
#[inline(never)]
pub fn table_theirs(wire: &[u8]) -> usize {
    let (_, table) = parse_field_table(black_box(wire)).expect("valid table");
    walk_their_table(&table)
}
