//! Arbitrary bytes into `FrameDecoder`: every call must return a frame, "read more" or an error,
//! and never panic, whatever frame-max is in force.
//!
//! Also checks the decoder's documented buffer discipline: a decoded frame (or a frame whose
//! payload is malformed) consumes exactly the length `next_frame_len` announced; an error that
//! leaves the frame boundary unknown consumes nothing.

#![no_main]

use amqp_codec::{FRAME_MIN_SIZE, FrameDecoder};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(&first) = data.first() else {
        return;
    };
    // No limit, the spec's minimum, RabbitMQ's default, and a small limit (0..4080) taken from
    // the first byte, so that "frame too large" paths are reached with small inputs.
    for frame_max in [0, FRAME_MIN_SIZE, 131_072, u32::from(first) * 16] {
        let mut decoder = FrameDecoder::with_frame_max(frame_max);
        let mut buf = BytesMut::from(data);
        loop {
            let before = buf.len();
            let announced = decoder.next_frame_len(&buf);
            let result = decoder.decode(&mut buf);
            let consumed = before - buf.len();
            if consumed > 0 {
                assert_eq!(announced, Ok(Some(consumed)), "next_frame_len disagrees");
            }
            match result {
                Ok(Some(frame)) => {
                    assert!(consumed > 0, "a frame was decoded from no bytes");
                    // Cheap accessors must not panic on anything the decoder produced.
                    let _ = (frame.channel(), frame.frame_type(), frame.encoded_len());
                }
                Ok(None) => {
                    assert_eq!(consumed, 0, "\"read more\" consumed bytes");
                    break;
                }
                Err(err) => {
                    // Formatting and the reply-code mapping must not panic either.
                    let _ = (err.reply_code(), err.to_string());
                    break;
                }
            }
        }
    }
});
