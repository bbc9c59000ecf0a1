//! Method frames: type 1, payload = class id (u16), method id (u16), arguments.
//!
//! Spec: "Method frames carry the high-level protocol commands"; a method's arguments are
//! packed in table order, consecutive bits sharing an octet.

use bytes::Bytes;

use super::Frame;
use crate::error::DecodeError;
use crate::methods::Method;

/// Decodes a method frame's payload.
pub(super) fn decode(channel: u16, payload: &Bytes) -> Result<Frame, DecodeError> {
    Ok(Frame::Method {
        channel,
        method: Method::decode(payload)?,
    })
}
