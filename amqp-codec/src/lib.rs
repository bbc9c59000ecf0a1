//! A zero-copy, sans-IO codec for AMQP 0-9-1 with RabbitMQ's extensions.
//!
//! Bytes in, frames out, and back: no sockets, no runtime, no clock. A client, a server or a
//! proxy drives it from its own IO. Decoded strings, tables and bodies are [`bytes::Bytes`]
//! slices of the read buffer (a body of several frames is a [`Body`] chain of them), so decoding
//! a delivery copies nothing and allocates nothing.
//!
//! # Frame format
//!
//! ```text
//!  0      1         3             7                    7+size   8+size
//!  +------+---------+-------------+---------------------+--------+
//!  | type | channel |    size     |   payload (size)    |  0xCE  |
//!  +------+---------+-------------+---------------------+--------+
//!   u8     u16 BE    u32 BE                               frame-end
//!
//!  type 1  method:   class-id u16 | method-id u16 | arguments (bits packed)
//!  type 2  header:   class-id u16 | weight u16 | body-size u64 | flags u16... | properties
//!  type 3  body:     opaque bytes (a message spans ceil(body-size / (frame-max - 8)) frames)
//!  type 8  heartbeat: empty payload, channel 0
//!
//!  before any frame, the client sends the protocol header:  'A' 'M' 'Q' 'P' 0 0 9 1
//! ```
//!
//! A content-bearing method (`basic.publish`, `basic.deliver`, `basic.get-ok`, `basic.return`)
//! is followed on its channel by one header frame and as many body frames as the body needs.
//!
//! # Where things are
//!
//! | module | what it owns |
//! |---|---|
//! | [`methods`] | every class and method, expanded from one table; the [`Method`] enum |
//! | [`table`] | field tables and arrays with RabbitMQ's type letters |
//! | [`frame`] | the [`Frame`] enum and one file per frame kind |
//! | [`FrameDecoder`] | splits frames off a read buffer; enforces frame-max |
//! | [`ContentAssembler`] | method + header + body frames into one message |
//! | [`Body`] | a message body: its frames' slices of the read buffer, chained, never joined |
//! | [`Outbound`] | encodes frames for one vectored write, chaining bodies |
//! | `tokio_codec` | a tokio-util `Decoder`/`Encoder` (feature `tokio-codec`) |
//!
//! # Example
//!
//! ```
//! use amqp_codec::{Frame, FrameDecoder, Method, Outbound, methods::BasicAck};
//! use bytes::{Buf, BytesMut};
//!
//! let mut out = Outbound::new();
//! let ack = Method::BasicAck(BasicAck { delivery_tag: 42, multiple: false });
//! out.push_method(1, &ack, 131_072)?;
//!
//! let mut wire = BytesMut::new();
//! wire.extend_from_slice(&out.copy_to_bytes(out.remaining()));
//! let frame = FrameDecoder::with_frame_max(131_072).decode(&mut wire)?;
//! assert_eq!(frame, Some(Frame::Method { channel: 1, method: ack }));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

// The README's example runs as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

mod assembly;
mod body;
mod constants;
mod decoder;
mod error;
pub mod frame;
pub mod methods;
mod outbound;
mod properties;
mod scan;
mod strings;
pub mod table;
#[cfg(feature = "tokio-codec")]
pub mod tokio_codec;
mod wire;

pub use assembly::{Assembled, Content, ContentAssembler, DiscardReason, Discarded};
pub use body::Body;
pub use constants::{
    ClassId, FRAME_END, FRAME_HEADER_SIZE, FRAME_MIN_SIZE, FRAME_OVERHEAD, FrameType, ReplyCode,
};
pub use decoder::FrameDecoder;
pub use error::{DecodeError, EncodeError, FieldError};
pub use frame::{Frame, FrameHeader, ProtocolHeader};
pub use methods::{Method, MethodInfo};
pub use outbound::Outbound;
pub use properties::{BasicProperties, ContentHeader, PropertiesBuilder};
pub use strings::{LongStr, ShortStr};
pub use table::{Decimal, FieldArray, FieldTable, FieldValue};
