//! Decode, encode, decode: every frame the decoder accepts must encode (with `Frame::encode`
//! and through `Outbound`, byte for byte the same) and decode back to an equal frame.
//!
//! Channel 1's method, header and body frames also go through a `ContentAssembler`, which may
//! refuse them but must not panic.

#![no_main]

use amqp_codec::{ContentAssembler, Frame, FrameDecoder, Outbound};
use bytes::{Buf, BytesMut};
use libfuzzer_sys::fuzz_target;

/// Checks one decoded frame's round trip.
fn roundtrip(frame: &Frame) {
    let mut encoded = BytesMut::new();
    frame
        .encode(&mut encoded)
        .expect("a decoded frame must encode");
    assert_eq!(encoded.len(), frame.encoded_len(), "encoded_len is wrong");

    // Outbound chains body bytes instead of copying them; the bytes on the wire must not differ.
    let mut out = Outbound::new();
    out.push_frame(frame, 0)
        .expect("Outbound refused a decoded frame");
    let queued = out.copy_to_bytes(out.remaining());
    assert_eq!(queued, encoded, "Outbound and Frame::encode differ");
    assert!(out.is_empty());
    // A frame exactly frame-max long fits.
    if let Ok(exact) = u32::try_from(frame.encoded_len()) {
        Outbound::new()
            .push_frame(frame, exact)
            .expect("a frame of exactly frame-max was refused");
    }

    let again = FrameDecoder::with_frame_max(0)
        .decode(&mut encoded)
        .expect("a re-encoded frame must decode")
        .expect("a re-encoded frame must be complete");
    assert_eq!(&again, frame);
    assert!(encoded.is_empty(), "re-encoded frame left bytes behind");
}

fuzz_target!(|data: &[u8]| {
    let mut decoder = FrameDecoder::with_frame_max(0);
    let mut buf = BytesMut::from(data);
    let mut assembler = ContentAssembler::new(1 << 16);
    loop {
        let before = buf.len();
        match decoder.decode(&mut buf) {
            Ok(Some(frame)) => {
                roundtrip(&frame);
                let content_frame = matches!(
                    frame,
                    Frame::Method { .. } | Frame::Header { .. } | Frame::Body { .. }
                );
                if content_frame && frame.channel() == 1 {
                    // Errors are expected for out-of-order frames; only a panic is a failure.
                    let _ = assembler.push(frame);
                }
            }
            Ok(None) => break,
            // A malformed payload consumes its frame and decoding may go on; a broken frame
            // boundary consumes nothing and ends the stream.
            Err(_) if buf.len() < before => continue,
            Err(_) => break,
        }
    }
});
