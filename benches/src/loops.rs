//! The measured loops on our side, and the envelope-only lower bound. Each is `#[inline(never)]`
//! so that callgrind can count it alone (`--toggle-collect`), and returns the frames it decoded.

use std::hint::black_box;

use amqp_codec::{
    Assembled, BasicProperties, Body, ContentAssembler, Delivery, FieldTable, FieldValue,
    FrameBatch, FrameDecoder, Inbound, Method, Outbound,
};
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

/// Reads a whole message of ours, assembled from frames, the way the application does.
#[inline(always)]
fn read_message(done: Option<Assembled>) {
    let Some(Assembled::Content(content)) = done else {
        return;
    };
    let Method::BasicDeliver(deliver) = &content.method else {
        panic!("fixtures are deliveries");
    };
    let properties = content.header.properties.view();
    app_reads(
        deliver.routing_key.as_bytes(),
        properties.content_type(),
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
// Deliveries, ours: frames split off in batches, deliveries read in place.

/// Reads every frame of `batch` as the application does: deliveries in place, any other frame
/// through the assembler.
#[inline(always)]
fn read_batch(batch: &FrameBatch, asm: &mut ContentAssembler) {
    for item in batch {
        match item.expect("fixture frames are valid") {
            Inbound::Delivery(delivery) => {
                asm.expect_idle(delivery.channel())
                    .expect("fixture frames are in order");
                let properties = delivery.properties();
                app_reads(
                    delivery.routing_key(),
                    properties.content_type(),
                    properties.delivery_mode(),
                );
                app_reads_body(delivery.body());
            }
            Inbound::Frame(frame) => {
                read_message(asm.push(frame).expect("fixture frames are in order"));
            }
        }
    }
}

/// Whole buffer, ours: splits every whole frame off `buf` in one batch, reads each delivery in
/// place as the application does; returns the number of frames.
#[inline(never)]
pub fn decode_ours(
    buf: &mut BytesMut,
    decoder: &mut FrameDecoder,
    asm: &mut ContentAssembler,
) -> usize {
    let mut frames = 0;
    while let Some(batch) = decoder.decode_batch(buf).expect("fixture frames are valid") {
        frames += batch.frames();
        read_batch(&batch, asm);
    }
    frames
}

/// Stream path, ours: `wire` arrives [`READ_CHUNK`] bytes at a time in the decoder's own
/// buffer `buf` (reused from one call to the next, as a connection's is); after each read, the
/// whole frames in it are split off in one batch and read; returns the number of frames.
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
        while let Some(batch) = decoder.decode_batch(buf).expect("fixture frames are valid") {
            frames += batch.frames();
            read_batch(&batch, asm);
        }
    }
    frames
}

/// Whole buffer, ours, each delivery kept as an owned [`Delivery`] (one reference count for the
/// message), as a client handing it to another task does, then read; returns the frames.
#[inline(never)]
pub fn decode_owned(buf: &mut BytesMut, decoder: &mut FrameDecoder) -> usize {
    let mut frames = 0;
    while let Some(batch) = decoder.decode_batch(buf).expect("fixture frames are valid") {
        frames += batch.frames();
        for item in &batch {
            let Ok(Inbound::Delivery(delivery)) = item else {
                panic!("fixtures are deliveries in one body frame");
            };
            let delivery: Delivery = black_box(delivery.to_delivery());
            let properties = delivery.properties();
            app_reads(
                delivery.routing_key(),
                properties.content_type(),
                properties.delivery_mode(),
            );
            app_reads_body(delivery.body());
        }
    }
    frames
}

// ---------------------------------------------------------------------------------------------
// Deliveries, ours, frame by frame (`FrameDecoder::decode` and `ContentAssembler`), the path
// that hands out `Frame`s and `Content`s.

/// Whole buffer, frame by frame: decodes every frame in `buf`, assembles the messages and reads
/// each as the application does; returns the number of frames.
#[inline(never)]
pub fn decode_frames(
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

/// Stream path, frame by frame: the same reads as [`stream_ours`], each followed by decoding
/// frame by frame as far as it goes; returns the number of frames.
#[inline(never)]
pub fn stream_frames(
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
