//! A tokio-util [`Decoder`]/[`Encoder`] around the sans-IO codec (feature `tokio-codec`).
//!
//! `FramedRead` / `Framed` users get [`Frame`]s; the decoder makes room in the read buffer for
//! exactly the frame being read (bounded by frame-max, never by an unchecked claim). Encoding
//! through tokio-util copies bodies into its write buffer, as its `Encoder` API requires; a
//! driver that wants bodies chained writes an [`crate::Outbound`] with vectored writes instead.

use bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder};

use crate::decoder::FrameDecoder;
use crate::error::{DecodeError, EncodeError};
use crate::frame::Frame;

/// An error from the tokio-util adapter.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The bytes did not decode.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A frame could not be encoded.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The transport failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Frames over a byte stream, for `tokio_util::codec::Framed`.
///
/// ```
/// use amqp_codec::tokio_codec::AmqpCodec;
/// use amqp_codec::Frame;
/// use bytes::BytesMut;
/// use tokio_util::codec::{Decoder, Encoder};
///
/// let mut codec = AmqpCodec::new(131_072);
/// let mut buf = BytesMut::new();
/// codec.encode(Frame::Heartbeat, &mut buf)?;
/// assert_eq!(codec.decode(&mut buf)?, Some(Frame::Heartbeat));
/// # Ok::<(), amqp_codec::tokio_codec::CodecError>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct AmqpCodec {
    /// The sans-IO decoder, which holds the frame-max in force.
    decoder: FrameDecoder,
}

impl AmqpCodec {
    /// A codec accepting frames up to `frame_max` bytes.
    pub fn new(frame_max: u32) -> Self {
        Self {
            decoder: FrameDecoder::with_frame_max(frame_max),
        }
    }

    /// Applies a newly negotiated frame-max.
    pub fn set_frame_max(&mut self, frame_max: u32) {
        self.decoder.set_frame_max(frame_max);
    }
}

impl Decoder for AmqpCodec {
    type Item = Frame;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        match self.decoder.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None => {
                // The header was checked against frame-max, so this room is bounded.
                if let Some(len) = self.decoder.next_frame_len(src)? {
                    src.reserve(len.saturating_sub(src.len()));
                }
                Ok(None)
            }
        }
    }
}

impl Encoder<Frame> for AmqpCodec {
    type Error = CodecError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
        frame.encode(dst)?;
        Ok(())
    }
}

impl Encoder<&Frame> for AmqpCodec {
    type Error = CodecError;

    fn encode(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
        frame.encode(dst)?;
        Ok(())
    }
}
