//! Heartbeat frames: type 8, no payload.
//!
//! Spec: "Heartbeat frames MUST have a channel number of zero"; a peer that receives one on
//! another channel "MUST signal a connection exception with reply code 501 (frame error)".

use super::{Frame, FrameHeader};
use crate::error::DecodeError;

/// Checks a heartbeat frame's header: channel 0 and no payload.
pub(super) fn decode(header: FrameHeader) -> Result<Frame, DecodeError> {
    if header.channel != 0 || header.size != 0 {
        return Err(DecodeError::BadHeartbeat {
            channel: header.channel,
            size: header.size,
        });
    }
    Ok(Frame::Heartbeat)
}
