//! amq-protocol's side: our fixtures' values in its types (for the setup assertions) and its
//! measured loops, the counterparts of `loops.rs`.

use std::hint::black_box;

use amq_protocol::frame::{AMQPContentHeader, AMQPFrame, WriteContext, gen_frame, parse_frame};
use amq_protocol::protocol::{AMQPClass, BasicProperties as TheirProperties, basic};
use amq_protocol::types::parsing::parse_field_table;
use amq_protocol::types::{
    AMQPValue, ByteArray, DecimalValue, FieldArray as TheirArray, FieldTable as TheirTable,
    LongString, ShortString,
};
use amqp_codec::{BasicProperties, FieldTable, FieldValue, Method, ShortStr};

use crate::{CHANNEL, MAX_BODY_PER_FRAME, READ_CHUNK, app_reads, app_reads_body};

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
// Measured loops, theirs.

/// Reads one frame of amq-protocol's the way the application reads a delivery: the routing key
/// of the method, content type and delivery mode of the header, the body. amq-protocol has no
/// content assembler, so each frame is read as it comes.
#[inline(always)]
fn read_frame(frame: AMQPFrame) {
    match &frame {
        AMQPFrame::Method(_, AMQPClass::Basic(basic::AMQPMethod::Deliver(deliver))) => {
            // The properties come in the next frame; the application would read them together.
            app_reads(deliver.routing_key.as_str().as_bytes(), None, None);
        }
        AMQPFrame::Header(_, header) => {
            let properties = &header.properties;
            app_reads(
                &[],
                properties
                    .content_type()
                    .as_ref()
                    .map(|s| s.as_str().as_bytes()),
                *properties.delivery_mode(),
            );
        }
        AMQPFrame::Body(_, body) => app_reads_body(body),
        other => panic!("fixtures are deliveries, not {other:?}"),
    }
    black_box(frame);
}

/// Whole buffer, theirs: parses every frame in `input` with amq-protocol and reads each as the
/// application does; returns the number of frames.
#[inline(never)]
pub fn decode_theirs(mut input: &[u8]) -> usize {
    let mut frames = 0;
    while !input.is_empty() {
        let (rest, frame) = parse_frame(input).expect("fixture frames are valid");
        read_frame(frame);
        input = rest;
        frames += 1;
    }
    frames
}

/// Stream path, theirs: the same reads as `stream_ours` into amq-protocol's buffer `buf`
/// (reused from one call to the next), parsed as far as it goes after each read (amq-protocol's
/// parsers are streaming: a partial frame is `Incomplete`), the unparsed tail then moved to the
/// front, as lapin's reader does; returns the number of frames.
#[inline(never)]
pub fn stream_theirs(wire: &[u8], buf: &mut Vec<u8>) -> usize {
    let mut frames = 0;
    for read in wire.chunks(READ_CHUNK) {
        buf.extend_from_slice(read);
        let mut input = &buf[..];
        loop {
            match parse_frame(input) {
                Ok((rest, frame)) => {
                    read_frame(frame);
                    input = rest;
                    frames += 1;
                }
                Err(e) if e.is_incomplete() => break,
                Err(e) => panic!("fixture frames are valid: {e}"),
            }
        }
        let consumed = buf.len() - input.len();
        buf.drain(..consumed);
    }
    frames
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

/// `table_decode_20`, theirs: parse the table (with its length prefix) into a `BTreeMap`, then
/// read every value.
#[inline(never)]
pub fn table_theirs(wire: &[u8]) -> usize {
    let (_, table) = parse_field_table(black_box(wire)).expect("valid table");
    walk_their_table(&table)
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
