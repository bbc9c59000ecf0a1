//! The protocol header: `A M Q P 0 0 9 1`, the first 8 bytes a client sends.
//!
//! Spec: a server that does not accept the version "MUST respond with a valid protocol header
//! and then close the socket", so a client may receive one too, naming the version the server
//! speaks.

use bytes::{BufMut, BytesMut};

use crate::error::DecodeError;

/// `AMQP` followed by four version octets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProtocolHeader {
    /// The four octets after `AMQP`: protocol id, major, minor, revision.
    pub version: [u8; 4],
}

impl ProtocolHeader {
    /// The header's length on the wire.
    pub const LEN: usize = 8;
    /// AMQP 0-9-1, the version this crate speaks.
    pub const AMQP_0_9_1: Self = Self {
        version: [0, 0, 9, 1],
    };

    /// True for AMQP 0-9-1.
    pub fn is_0_9_1(&self) -> bool {
        *self == Self::AMQP_0_9_1
    }

    /// Parses a protocol header from exactly 8 bytes starting with `AMQP`.
    pub fn decode(bytes: [u8; 8]) -> Result<Self, DecodeError> {
        match bytes {
            [b'A', b'M', b'Q', b'P', a, b, c, d] => Ok(Self {
                version: [a, b, c, d],
            }),
            header => Err(DecodeError::BadProtocolHeader { header }),
        }
    }

    /// Appends the 8 bytes to `dst`.
    pub fn encode(&self, dst: &mut BytesMut) {
        dst.put_slice(b"AMQP");
        dst.put_slice(&self.version);
    }
}
