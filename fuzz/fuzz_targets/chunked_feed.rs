//! Streaming consistency: however the input is split across reads, the decoder must produce the
//! same frames (and the same first error) as when it is given everything at once.
//!
//! Input layout: `n` (first byte, mod 16), then `n` chunk sizes (1..=255 each, 0 counts as 1,
//! used in turn and repeated), then the byte stream itself. With no sizes the stream is fed one
//! byte at a time.

#![no_main]

use amqp_codec::{DecodeError, Frame, FrameDecoder};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

/// RabbitMQ's default frame-max, so oversized-frame errors happen on both sides alike.
const FRAME_MAX: u32 = 131_072;

/// Decodes everything buffered into `out`. Returns false once an error has been recorded.
fn drain(
    decoder: &mut FrameDecoder,
    buf: &mut BytesMut,
    out: &mut Vec<Result<Frame, DecodeError>>,
) -> bool {
    loop {
        match decoder.decode(buf) {
            Ok(Some(frame)) => out.push(Ok(frame)),
            Ok(None) => return true,
            Err(err) => {
                out.push(Err(err));
                return false;
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(n % 16).min(rest.len());
    let (sizes, stream) = rest.split_at(n);

    // Everything at once.
    let mut whole_buf = BytesMut::from(stream);
    let mut whole = Vec::new();
    let whole_ok = drain(
        &mut FrameDecoder::with_frame_max(FRAME_MAX),
        &mut whole_buf,
        &mut whole,
    );

    // The same bytes in chunks, decoding after each one.
    let mut decoder = FrameDecoder::with_frame_max(FRAME_MAX);
    let mut buf = BytesMut::new();
    let mut chunked = Vec::new();
    let mut chunked_ok = true;
    let mut sizes = sizes.iter().map(|&s| usize::from(s).max(1)).cycle();
    let mut pos = 0;
    while pos < stream.len() {
        let len = sizes.next().unwrap_or(1).min(stream.len() - pos);
        buf.extend_from_slice(&stream[pos..pos + len]);
        pos += len;
        chunked_ok = drain(&mut decoder, &mut buf, &mut chunked);
        if !chunked_ok {
            break;
        }
    }

    assert_eq!(
        whole.len(),
        chunked.len(),
        "chunked decoding differs: {whole:?} {chunked:?}"
    );
    for (a, b) in whole.iter().zip(&chunked) {
        match (a, b) {
            // A wrong protocol header is refused as soon as its first bad byte is buffered, and
            // the error carries only the bytes seen so far ("AMS" vs "AMSP"): same error, but
            // its bytes depend on where the reads were split.
            (
                Err(DecodeError::BadProtocolHeader { .. }),
                Err(DecodeError::BadProtocolHeader { .. }),
            ) => {}
            _ => assert_eq!(a, b, "chunked decoding differs"),
        }
    }
    assert_eq!(whole_ok, chunked_ok);
    if whole_ok {
        // Both stopped for want of bytes: the same incomplete tail must be left over.
        assert_eq!(whole_buf, buf, "different leftover bytes");
    }
});
