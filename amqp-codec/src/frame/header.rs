//! The 7-byte header of every frame: type (u8), channel (u16), payload size (u32).

use bytes::{BufMut, BytesMut};
use nom::Parser;
use nom::number::complete::{be_u8, be_u16, be_u32};

use crate::constants::FrameType;

/// The fixed header in front of every frame's payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Method, header, body or heartbeat.
    pub frame_type: FrameType,
    /// The channel (0 for the connection).
    pub channel: u16,
    /// Payload octets that follow (the frame-end octet not counted).
    pub size: u32,
}

impl FrameHeader {
    /// Parses the header from the first 7 bytes, or `None` if fewer are available.
    pub fn parse(src: &[u8]) -> Option<Self> {
        let parsed: nom::IResult<&[u8], (u8, u16, u32)> = (be_u8, be_u16, be_u32).parse(src);
        let (_, (frame_type, channel, size)) = parsed.ok()?;
        Some(Self {
            frame_type: FrameType(frame_type),
            channel,
            size,
        })
    }

    /// Appends the 7 header bytes to `dst`.
    pub fn encode(&self, dst: &mut BytesMut) {
        dst.put_u8(self.frame_type.0);
        dst.put_u16(self.channel);
        dst.put_u32(self.size);
    }
}
