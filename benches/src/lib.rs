//! Fixtures and measured loops of the codec benchmarks, shared by the criterion bench
//! (`benches/codec.rs`) and the instruction-count driver (`examples/profile.rs`), so that both
//! measure exactly the same code on exactly the same bytes.
//!
//! Deliveries come in two shapes ([`Shape`]) and two body sizes, and are decoded on two paths:
//! the whole buffer already in memory, or arriving in [`READ_CHUNK`] reads appended to the
//! decoder's own buffer, as a socket delivers them ([`Path`]). Every fixture is built with our
//! encoder; the criterion bench asserts, before timing anything, that amq-protocol decodes (or
//! encodes) the same bytes to the same values.

mod loops;
mod theirs;

pub use loops::*;
pub use theirs::*;

use amqp_codec::methods::{BasicDeliver, BasicPublish};
use amqp_codec::{
    BasicProperties, Decimal, FRAME_OVERHEAD, FieldArray, FieldTable, FieldValue, Method, Outbound,
    PropertiesBuilder, ShortStr,
};
use bytes::{Buf, BufMut, Bytes, BytesMut};

/// RabbitMQ's default frame-max.
pub const FRAME_MAX: u32 = 131_072;
/// Largest body slice one frame carries at that frame-max.
pub const MAX_BODY_PER_FRAME: usize = FRAME_MAX as usize - FRAME_OVERHEAD;
/// The channel every fixture uses.
pub const CHANNEL: u16 = 1;
/// Bytes per read on the stream path: what one `read` of a busy socket returns.
pub const READ_CHUNK: usize = 64 * 1024;
/// Bytes of deliveries per buffer (about; whole messages): large enough for the stream path to
/// take 16 reads, small enough to stay in the last-level cache.
pub const WIRE_BYTES: usize = 1 << 20;

/// Body sizes of the delivery workloads.
pub const BODY_SIZES: [(&str, usize); 2] = [("64B", 64), ("4KiB", 4 * 1024)];
/// The large-body workload: rich deliveries of 128 KiB (two body frames at frame-max 131072),
/// 16 per buffer, whole buffer only.
pub const LARGE_BODY: (&str, usize, usize) = ("128KiB", 128 * 1024, 16);

// ---------------------------------------------------------------------------------------------
// Shapes and paths.

/// What a delivery carries besides its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Short consumer tag, exchange and routing key; only content-type and delivery-mode set.
    Minimal,
    /// A server-named consumer tag, a longer routing key; content-type, delivery-mode, a
    /// message-id and a three-entry headers table.
    Rich,
}

impl Shape {
    /// Both shapes, minimal first.
    pub const ALL: [Shape; 2] = [Shape::Minimal, Shape::Rich];

    /// The name in workload and group names.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Minimal => "minimal",
            Self::Rich => "rich",
        }
    }

    /// The shape named `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The basic.deliver of message `delivery_tag`.
    pub fn deliver(self, delivery_tag: u64) -> Method {
        let (consumer_tag, exchange, routing_key) = match self {
            Self::Minimal => ("ctag", "ex", "jobs"),
            Self::Rich => (
                "amq.ctag-3jXq0vPcXvyrBj6Yq8mKxA",
                "orders",
                "orders.created.eu-west-1",
            ),
        };
        Method::BasicDeliver(BasicDeliver {
            consumer_tag: ShortStr::from_static(consumer_tag),
            delivery_tag,
            redelivered: false,
            exchange: ShortStr::from_static(exchange),
            routing_key: ShortStr::from_static(routing_key),
        })
    }

    /// The properties of message `message_id`.
    pub fn properties(self, message_id: u64) -> BasicProperties {
        match self {
            Self::Minimal => PropertiesBuilder::default()
                .with_content_type("text/plain")
                .with_delivery_mode(BasicProperties::TRANSIENT)
                .build()
                .expect("fixture properties fit"),
            Self::Rich => properties(message_id),
        }
    }
}

/// How the bytes reach the decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// The whole buffer is in memory before decoding starts (a fresh copy per iteration, made
    /// outside the measured section).
    Whole,
    /// [`READ_CHUNK`] bytes at a time are appended to the decoder's own buffer, which is decoded
    /// as far as it goes after each read, as a socket read loop does; the copies are measured.
    Stream,
}

impl Path {
    /// Both paths.
    pub const ALL: [Path; 2] = [Path::Whole, Path::Stream];

    /// The name in workload and group names.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Whole => "whole",
            Self::Stream => "stream",
        }
    }
}

/// One delivery workload's bytes: `messages` deliveries of `body_len`-byte bodies.
#[derive(Debug, Clone)]
pub struct Workload {
    /// The shape of every delivery.
    pub shape: Shape,
    /// Body bytes per delivery.
    pub body_len: usize,
    /// Deliveries in `wire`.
    pub messages: usize,
    /// The deliveries, back to back, as RabbitMQ writes them to the socket.
    pub wire: Bytes,
}

impl Workload {
    /// About [`WIRE_BYTES`] of deliveries of `shape` with `body_len`-byte bodies.
    pub fn new(shape: Shape, body_len: usize) -> Self {
        let one = encode_ours(&shape.deliver(1), &shape.properties(1), &body(body_len)).len();
        Self::with_messages(shape, body_len, (WIRE_BYTES / one).max(16))
    }

    /// Exactly `messages` deliveries.
    pub fn with_messages(shape: Shape, body_len: usize, messages: usize) -> Self {
        Self {
            shape,
            body_len,
            messages,
            wire: deliveries(shape, messages, &body(body_len)),
        }
    }

    /// Frames in `wire`: method, header and body frames of every delivery.
    pub fn frames(&self) -> usize {
        self.messages * (2 + body_frames(self.body_len))
    }
}

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

/// The properties of a rich delivery, and of the publish: content-type, delivery-mode 2,
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

/// `count` deliveries of `shape` with `body`, back to back, as RabbitMQ would write them.
pub fn deliveries(shape: Shape, count: usize, body: &Bytes) -> Bytes {
    let mut wire = BytesMut::new();
    for i in 0..count {
        let tag = i as u64 + 1;
        wire.put(encode_ours(
            &shape.deliver(tag),
            &shape.properties(tag),
            body,
        ));
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
