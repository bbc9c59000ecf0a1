//! A zero-copy, sans-IO codec for AMQP 0-9-1 with RabbitMQ's extensions.
//!
//! Bytes in, frames out, and back: no sockets, no runtime, no clock. A client, a server or a
//! proxy drives it from its own IO. Decoded strings, tables and bodies are [`bytes::Bytes`]
//! slices of the read buffer (a body of several frames is a [`Body`] chain of them), so decoding
//! a delivery copies nothing and allocates nothing.
//!
//! Frames come off a read buffer one at a time ([`FrameDecoder::decode`], owned [`Frame`]s for
//! a [`ContentAssembler`]), or all at once ([`FrameDecoder::decode_batch`]): then a delivery is
//! read whole and in place ([`DeliveryRef`]), its fields slices of the batch, which takes no
//! reference count at all until one is kept ([`Delivery`], one for the whole message).
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
//! | `read` | the reading layer: every byte read from a peer is read there, by nom parsers |
//! | [`FrameDecoder`] | splits frames off a read buffer, one by one or all at once; enforces frame-max |
//! | [`FrameBatch`] | whole frames split off at once; deliveries read in place ([`DeliveryRef`]) |
//! | [`ContentAssembler`] | method + header + body frames into one message |
//! | [`Body`] | a message body: its frames' slices of the read buffer, chained, never joined |
//! | [`Outbound`] | encodes frames for one vectored write, chaining bodies |
//! | `tokio_codec` | a tokio-util `Decoder`/`Encoder` (feature `tokio-codec`) |
//!
//! # Examples
//!
//! Frames one at a time:
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
//!
//! A read loop in batches, deliveries read in place:
//!
//! ```
//! use amqp_codec::{Assembled, ContentAssembler, FrameDecoder, Inbound};
//! use bytes::BytesMut;
//!
//! fn on_read(
//!     decoder: &mut FrameDecoder,
//!     buf: &mut BytesMut, // the bytes read so far, appended to as the socket delivers them
//!     channel: &mut ContentAssembler,
//! ) -> Result<(), amqp_codec::DecodeError> {
//!     while let Some(batch) = decoder.decode_batch(buf)? {
//!         for item in batch.iter().max_body_size(1 << 20) {
//!             match item? {
//!                 Inbound::Delivery(delivery) => {
//!                     channel.expect_idle(delivery.channel())?;
//!                     let content_type = delivery.properties().content_type();
//!                     println!("{:?} {content_type:?} {} bytes", delivery.routing_key(), delivery.body().len());
//!                 }
//!                 Inbound::Frame(frame) => {
//!                     if let Some(Assembled::Content(message)) = channel.push(frame)? {
//!                         println!("{} bytes", message.body.len());
//!                     }
//!                 }
//!             }
//!         }
//!     }
//!     Ok(())
//! }
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

// The README's example runs as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

mod assembly;
mod batch;
mod body;
mod constants;
mod decoder;
mod delivery;
mod error;
pub mod frame;
pub mod methods;
mod outbound;
mod properties;
mod read;
mod strings;
pub mod table;
#[cfg(feature = "tokio-codec")]
pub mod tokio_codec;
mod wire;

pub use assembly::{Assembled, Content, ContentAssembler, DiscardReason, Discarded};
pub use batch::{BatchIter, FrameBatch, Inbound};
pub use body::Body;
pub use constants::{
    ClassId, FRAME_END, FRAME_HEADER_SIZE, FRAME_MIN_SIZE, FRAME_OVERHEAD, FrameType, ReplyCode,
};
pub use decoder::FrameDecoder;
pub use delivery::{Delivery, DeliveryRef};
pub use error::{DecodeError, EncodeError, FieldError};
pub use frame::{Frame, FrameHeader, ProtocolHeader};
pub use methods::{Method, MethodInfo};
pub use outbound::{Outbound, PublishArgs};
pub use properties::{
    BasicProperties, ContentHeader, PropertiesBuilder, PropertiesRef, PropertyError,
};
pub use strings::{IntoShortStr, LongStr, ShortStr};
pub use table::{Decimal, FieldArray, FieldTable, FieldValue, ValueError};
