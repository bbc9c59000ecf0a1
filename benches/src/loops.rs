//! The measured loops on our side, and the envelope-only lower bound. Each is `#[inline(never)]`
//! so that callgrind can count it alone (`--toggle-collect`), and returns the frames it decoded.

use std::hint::black_box;

use amqp_codec::{Assembled, Body, ContentAssembler, FieldTable, FieldValue, FrameDecoder, Method};
use amqp_codec::{BasicProperties, Outbound};
use bytes::{Buf, Bytes, BytesMut};

use crate::{CHANNEL, FRAME_MAX, READ_CHUNK};

// ---------------------------------------------------------------------------------------------
// What the application reads of a delivery: the same for both codecs.

/// The application's use of a delivery's routing key, content type and delivery mode.
#[inline(always)]
pub fn app_reads(routing_key: &[u8], content_type: Option<&[u8]>, delivery_mode: Option<u8>) {
    black_box((routing_key, content_type, delivery_mode));
}

/// The application's use of (a chunk of) a delivery's body.
#[inline(always)]
pub fn app_reads_body(body: &[u8]) {
    black_box(body);
}

/// Reads a whole message of ours the way the application does.
#[inline(always)]
fn read_message(done: Option<Assembled>) {
    let Some(Assembled::Content(content)) = done else {
        return;
    };
    let Method::BasicDeliver(deliver) = &content.method else {
        panic!("fixtures are deliveries");
    };
    let properties = &content.header.properties;
    let content_type = properties.content_type();
    app_reads(
        deliver.routing_key.as_bytes(),
        content_type.as_deref(),
        properties.delivery_mode(),
    );
    read_body(&content.body);
}

#[inline(always)]
fn read_body(body: &Body) {
    for chunk in body.chunks() {
        app_reads_body(chunk);
    }
}

// ---------------------------------------------------------------------------------------------
// Deliveries, ours.

/// Whole buffer, ours: decodes every frame in `buf`, assembles the messages and reads each as
/// the application does; returns the number of frames.
#[inline(never)]
pub fn decode_ours(
    buf: &mut BytesMut,
    decoder: &mut FrameDecoder,
    asm: &mut ContentAssembler,
) -> usize {
    let mut frames = 0;
    while let Some(frame) = decoder.decode(buf).expect("fixture frames are valid") {
        frames += 1;
        read_message(asm.push(frame).expect("fixture frames are in order"));
    }
    frames
}

/// Stream path, ours: `wire` arrives [`READ_CHUNK`] bytes at a time in the decoder's own
/// buffer `buf` (reused from one call to the next, as a connection's is), which is decoded as
/// far as it goes after each read; returns the number of frames.
#[inline(never)]
pub fn stream_ours(
    wire: &[u8],
    buf: &mut BytesMut,
    decoder: &mut FrameDecoder,
    asm: &mut ContentAssembler,
) -> usize {
    let mut frames = 0;
    for read in wire.chunks(READ_CHUNK) {
        buf.extend_from_slice(read);
        while let Some(frame) = decoder.decode(buf).expect("fixture frames are valid") {
            frames += 1;
            read_message(asm.push(frame).expect("fixture frames are in order"));
        }
    }
    frames
}

// ---------------------------------------------------------------------------------------------
// The lower bound: frame envelopes only.

/// The end of the frame at the front of `input` after checking its envelope (type, size,
/// frame-end), or `None` if it is not all there.
#[inline(always)]
fn envelope(input: &[u8]) -> Option<usize> {
    let &[frame_type, _, _, s0, s1, s2, s3] = input.first_chunk::<7>()?;
    let end = 8 + u32::from_be_bytes([s0, s1, s2, s3]) as usize;
    let &frame_end = input.get(end - 1)?;
    assert!(
        matches!(frame_type, 1..=3 | 8) && frame_end == 0xCE,
        "fixture frames are valid"
    );
    Some(end)
}

/// Whole buffer, the lower bound: steps over every frame of `input` reading only its envelope
/// (type, size, frame-end): what any decoder must do at least; returns the number of frames.
#[inline(never)]
pub fn envelopes(mut input: &[u8]) -> usize {
    let mut frames = 0;
    while let Some(end) = envelope(input) {
        input = &input[end..];
        frames += 1;
    }
    frames
}

/// Stream path, the lower bound: the same reads into `buf` as [`stream_ours`], each followed
/// by an envelope walk over what it completed; returns the number of frames.
#[inline(never)]
pub fn stream_envelopes(wire: &[u8], buf: &mut BytesMut) -> usize {
    let mut frames = 0;
    for read in wire.chunks(READ_CHUNK) {
        buf.extend_from_slice(read);
        let mut at = 0;
        while let Some(end) = envelope(&buf[at..]) {
            at += end;
            frames += 1;
        }
        buf.advance(at);
    }
    frames
}

// ---------------------------------------------------------------------------------------------
// Tables and publishes, ours.

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

/// `table_decode_20`, ours: validate the entries (without the length prefix), then read every
/// value.
#[inline(never)]
pub fn table_ours(raw: &Bytes) -> usize {
    let table = FieldTable::from_raw(black_box(raw).clone()).expect("valid table");
    walk_table(&table)
}
