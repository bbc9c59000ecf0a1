//! The 7-byte header of every frame: type (u8), channel (u16), payload size (u32).

use bytes::BytesMut;

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
    #[inline]
    pub fn parse(src: &[u8]) -> Option<Self> {
        crate::read::envelope::frame_header(src)
            .ok()
            .map(|(_, header)| header)
    }

    /// Appends the 7 header bytes to `dst`.
    pub fn encode(&self, dst: &mut BytesMut) {
        dst.extend_from_slice(&self.to_bytes());
    }

    /// The 7 header bytes.
    #[inline]
    pub fn to_bytes(&self) -> [u8; 7] {
        let [c0, c1] = self.channel.to_be_bytes();
        let [s0, s1, s2, s3] = self.size.to_be_bytes();
        [self.frame_type.0, c0, c1, s0, s1, s2, s3]
    }
}
