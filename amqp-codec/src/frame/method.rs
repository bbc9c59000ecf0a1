//! Method frames: type 1, payload = class id (u16), method id (u16), arguments.
//!
//! Spec: "Method frames carry the high-level protocol commands"; a method's arguments are
//! packed in table order, consecutive bits sharing an octet.

use bytes::Bytes;

use super::Frame;
use crate::error::DecodeError;
use crate::methods::{Method, fast};

/// Decodes a method frame's payload, which the method may keep as one of its strings.
///
/// Deliveries and confirms take the hand-written path, built straight into the returned frame;
/// anything else, or anything it does not accept, the generated decoders.
#[inline(always)]
pub(super) fn decode(channel: u16, payload: Bytes) -> Result<Option<Frame>, DecodeError> {
    let method = match fast::decode(payload) {
        Ok(method) => method,
        Err(payload) => Method::decode_generated(&payload)?,
    };
    Ok(Some(Frame::Method { channel, method }))
}
