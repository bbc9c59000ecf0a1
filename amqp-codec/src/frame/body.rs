//! Body frames: type 3, payload = a piece of the content body, opaque bytes.
//!
//! The payload is handed out as a slice of the read buffer: never copied.

use bytes::Bytes;

use super::Frame;

/// Wraps a body frame's payload.
pub(super) fn decode(channel: u16, payload: Bytes) -> Frame {
    Frame::Body {
        channel,
        body: payload,
    }
}
