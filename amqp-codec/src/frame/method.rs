//! Method frames: type 1, payload = class id (u16), method id (u16), arguments.
//!
//! Spec: "Method frames carry the high-level protocol commands"; a method's arguments are
//! packed in table order, consecutive bits sharing an octet.

use bytes::Bytes;

use super::Frame;
use crate::error::DecodeError;
use crate::methods::Method;

/// Decodes a method frame's payload, which the method may keep as one of its strings (see
/// [`Method::decode_owned`]), built straight into the returned frame.
#[inline(always)]
pub(super) fn decode(channel: u16, payload: Bytes) -> Result<Option<Frame>, DecodeError> {
    let method = Method::decode_owned(payload)?;
    Ok(Some(Frame::Method { channel, method }))
}
