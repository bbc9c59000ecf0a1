//! Decode, encode, decode: every frame the decoder accepts must encode (with `Frame::encode`
//! and through `Outbound`, byte for byte the same) and decode back to an equal frame.
//!
//! Header and body frames must re-encode to exactly the bytes they were decoded from (a content
//! header keeps its weight and any property-flags continuation words); a method frame may only
//! lose bits of a packed octet that name no field.
//!
//! Channel 1's method, header and body frames also go through a `ContentAssembler`, which may
//! refuse them but must not panic; a message it completes must have the declared body size, and
//! its `Body` must read the same through `Buf`, `chunks` and `into_bytes`.

#![no_main]

use amqp_codec::{Assembled, Content, ContentAssembler, Frame, FrameDecoder, Outbound};
use bytes::{Buf, Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;

/// Checks a message the assembler completed.
fn check_content(content: &Content) {
    let body = &content.body;
    assert_eq!(body.len() as u64, content.header.body_size, "body size");
    assert_eq!(body.is_empty(), body.len() == 0);
    let joined = body.clone().into_bytes();
    assert_eq!(joined.len(), body.len());
    let mut chunks = Vec::new();
    for chunk in body.chunks() {
        chunks.extend_from_slice(chunk);
    }
    assert_eq!(&chunks[..], &joined[..], "chunks and into_bytes differ");
    let mut reader = body.clone();
    let read = reader.copy_to_bytes(reader.remaining());
    assert_eq!(read, joined, "Buf and into_bytes differ");
    assert!(*body == joined, "a body equals its own bytes");
    assert!(body.clone() == Bytes::from(body.clone()));
}

/// Checks one decoded frame's round trip; `wire` is the bytes it was decoded from.
fn roundtrip(frame: &Frame, wire: &[u8]) {
    let mut encoded = BytesMut::new();
    frame
        .encode(&mut encoded)
        .expect("a decoded frame must encode");
    assert_eq!(encoded.len(), frame.encoded_len(), "encoded_len is wrong");

    // Outbound chains body bytes (copies small ones) instead of encoding them in line; the bytes
    // on the wire must not differ.
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

    if matches!(frame, Frame::Header { .. } | Frame::Body { .. }) {
        assert_eq!(&encoded[..], wire, "not re-encoded byte for byte");
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
                let start = data.len() - before;
                roundtrip(&frame, &data[start..data.len() - buf.len()]);
                let content_frame = matches!(
                    frame,
                    Frame::Method { .. } | Frame::Header { .. } | Frame::Body { .. }
                );
                if content_frame && frame.channel() == 1 {
                    // Errors are expected for out-of-order frames; only a panic is a failure.
                    if let Ok(Some(Assembled::Content(content))) = assembler.push(frame) {
                        check_content(&content);
                    }
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
