//! The content header frame's payload: class, body size and basic's 14 message properties.
//!
//! ```text
//! class-id (u16) | weight (u16, 0) | body-size (u64) | flags (u16)... | present properties
//! ```
//! Flag bit 15 marks the first property, bit 2 the fourteenth; bit 0 set means another flags
//! word follows (the continuation bit). Only present properties are on the wire, in order.
//!
//! Decoded properties stay in their wire encoding ([`BasicProperties`] is a flags word and one
//! shared slice, 40 bytes): decoding checks them once and copies nothing, a getter reads one
//! property on demand (through [`PropertiesRef`], which reads them in place without taking a
//! reference count), and encoding is a single copy of the slice. Reading is
//! [`crate::read::properties`]'s.
//!
//! Basic defines no property beyond the first flags word, but a peer may still send
//! continuation words with no flag set (any set flag in them is refused). They are kept, at the
//! start of the slice, so that a decoded header re-encodes byte for byte, as its weight does.

mod builder;
mod view;

pub use builder::{PropertiesBuilder, PropertyError};
pub use view::PropertiesRef;

use std::fmt;

use bytes::{Buf, Bytes, BytesMut};

use crate::constants::ClassId;
use crate::error::DecodeError;
use crate::read::properties::header;
use crate::strings::ShortStr;
use crate::table::FieldTable;

/// The 14 properties in wire order, each with its flag bit (15 down to 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Property {
    ContentType,
    ContentEncoding,
    Headers,
    DeliveryMode,
    Priority,
    CorrelationId,
    ReplyTo,
    Expiration,
    MessageId,
    Timestamp,
    Type,
    UserId,
    AppId,
    ClusterId,
}

impl Property {
    pub(crate) const ALL: [Property; 14] = [
        Self::ContentType,
        Self::ContentEncoding,
        Self::Headers,
        Self::DeliveryMode,
        Self::Priority,
        Self::CorrelationId,
        Self::ReplyTo,
        Self::Expiration,
        Self::MessageId,
        Self::Timestamp,
        Self::Type,
        Self::UserId,
        Self::AppId,
        Self::ClusterId,
    ];

    pub(crate) const fn bit(self) -> u16 {
        1 << (15 - self as u16)
    }
}

/// The properties of a message, kept in their wire encoding.
///
/// Build them with [`PropertiesBuilder`] (or [`BasicProperties::builder`]); read them with the
/// getters, which return slices of the frame they were decoded from. Equality compares the
/// encodings. `Default` is "no properties".
///
/// ```
/// use amqp_codec::{BasicProperties, ShortStr};
/// let props = BasicProperties::builder()
///     .with_message_id("m-1")
///     .persistent()
///     .build()?;
/// assert_eq!(props.message_id(), Some(ShortStr::from_static("m-1")));
/// assert_eq!(props.priority(), None);
/// # Ok::<(), amqp_codec::PropertyError>(())
/// ```
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct BasicProperties {
    /// The first flags word as received: which properties are present, and bit 0 set when
    /// continuation words follow.
    flags: u16,
    /// The continuation words, if any (all flags clear, validated), then the present properties'
    /// encoding in wire order, already validated.
    raw: Bytes,
}

impl BasicProperties {
    /// `delivery_mode` of a transient message.
    pub const TRANSIENT: u8 = 1;
    /// `delivery_mode` of a persistent message (written to disk by durable queues).
    pub const PERSISTENT: u8 = 2;

    /// A builder with no property set.
    pub fn builder() -> PropertiesBuilder {
        PropertiesBuilder::default()
    }

    /// Every property as a field, e.g. to change one and build again.
    pub fn to_builder(&self) -> PropertiesBuilder {
        PropertiesBuilder {
            content_type: self.content_type(),
            content_encoding: self.content_encoding(),
            headers: self.headers(),
            delivery_mode: self.delivery_mode(),
            priority: self.priority(),
            correlation_id: self.correlation_id(),
            reply_to: self.reply_to(),
            expiration: self.expiration(),
            message_id: self.message_id(),
            timestamp: self.timestamp(),
            kind: self.kind(),
            user_id: self.user_id(),
            app_id: self.app_id(),
            cluster_id: self.cluster_id(),
            ..PropertiesBuilder::default()
        }
    }

    /// The property flags word: bit 15 content-type ... bit 2 cluster-id (the continuation bit,
    /// bit 0, cleared).
    pub fn flags(&self) -> u16 {
        self.view().flags()
    }

    /// True if no property is set.
    pub fn is_empty(&self) -> bool {
        self.flags() == 0
    }

    /// True if `delivery_mode` is persistent.
    pub fn is_persistent(&self) -> bool {
        self.delivery_mode() == Some(Self::PERSISTENT)
    }

    /// The properties read in place: getters that return slices of these, without a reference
    /// count.
    #[inline]
    pub fn view(&self) -> PropertiesRef<'_> {
        PropertiesRef::new(self.flags, &self.raw, &self.raw)
    }

    /// A short-string property, sharing these properties' bytes.
    fn short(&self, p: Property) -> Option<ShortStr> {
        let view = self.view();
        view.get(p).map(|s| ShortStr::from_wire(view.share(s)))
    }

    /// MIME content type.
    pub fn content_type(&self) -> Option<ShortStr> {
        self.short(Property::ContentType)
    }
    /// MIME content encoding.
    pub fn content_encoding(&self) -> Option<ShortStr> {
        self.short(Property::ContentEncoding)
    }
    /// Application headers.
    pub fn headers(&self) -> Option<FieldTable> {
        self.view().headers()
    }
    /// 1 transient, 2 persistent.
    pub fn delivery_mode(&self) -> Option<u8> {
        self.view().delivery_mode()
    }
    /// Priority.
    pub fn priority(&self) -> Option<u8> {
        self.view().priority()
    }
    /// RPC correlation id.
    pub fn correlation_id(&self) -> Option<ShortStr> {
        self.short(Property::CorrelationId)
    }
    /// RPC reply queue.
    pub fn reply_to(&self) -> Option<ShortStr> {
        self.short(Property::ReplyTo)
    }
    /// Per-message TTL in milliseconds.
    pub fn expiration(&self) -> Option<ShortStr> {
        self.short(Property::Expiration)
    }
    /// Application message id.
    pub fn message_id(&self) -> Option<ShortStr> {
        self.short(Property::MessageId)
    }
    /// Seconds since the Unix epoch.
    pub fn timestamp(&self) -> Option<u64> {
        self.view().timestamp()
    }
    /// Application message type (the spec's `type`).
    pub fn kind(&self) -> Option<ShortStr> {
        self.short(Property::Type)
    }
    /// Publishing user.
    pub fn user_id(&self) -> Option<ShortStr> {
        self.short(Property::UserId)
    }
    /// Publishing application.
    pub fn app_id(&self) -> Option<ShortStr> {
        self.short(Property::AppId)
    }
    /// Reserved.
    pub fn cluster_id(&self) -> Option<ShortStr> {
        self.short(Property::ClusterId)
    }

    /// The first flags word as it goes on the wire (continuation bit included).
    pub(crate) fn wire_flags(&self) -> u16 {
        self.flags
    }

    /// What follows the first flags word on the wire: continuation words, then the properties.
    pub(crate) fn wire_raw(&self) -> &[u8] {
        &self.raw
    }

    /// Octets of the flags word and the present properties.
    pub fn encoded_len(&self) -> usize {
        2 + self.raw.len()
    }

    /// Appends the flags word and the present properties to `buf`.
    pub(crate) fn encode_into(&self, buf: &mut BytesMut) {
        buf.extend_from_slice(&self.flags.to_be_bytes());
        buf.extend_from_slice(&self.raw);
    }
}

impl fmt::Debug for BasicProperties {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.to_builder();
        let mut d = f.debug_struct("BasicProperties");
        macro_rules! present {
            ($($field:ident),*) => {$(
                if let Some(v) = &b.$field {
                    d.field(stringify!($field), v);
                }
            )*};
        }
        present!(
            content_type,
            content_encoding,
            headers,
            delivery_mode,
            priority,
            correlation_id,
            reply_to,
            expiration,
            message_id,
            timestamp,
            kind,
            user_id,
            app_id,
            cluster_id
        );
        d.finish()
    }
}

/// A content header frame's payload: which class, how large the body is, and the properties.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContentHeader {
    /// The class of the method the content belongs to (basic, 60).
    pub class_id: ClassId,
    /// Reserved, 0.
    pub weight: u16,
    /// Total size of the body that follows in body frames.
    pub body_size: u64,
    /// The message properties.
    pub properties: BasicProperties,
}

impl ContentHeader {
    /// A basic-class header for a body of `body_size` bytes.
    pub fn basic(body_size: u64, properties: BasicProperties) -> Self {
        Self {
            class_id: ClassId::BASIC,
            weight: 0,
            body_size,
            properties,
        }
    }

    /// Decodes a content header frame's payload; the properties share `payload`.
    pub fn decode(payload: &Bytes) -> Result<Self, DecodeError> {
        Self::decode_owned(payload.clone())
    }

    /// Decodes a content header frame's payload, keeping `payload` itself (advanced past the
    /// fixed fields) as the properties' slice: no reference count taken for it.
    // Inlinable into the frame decoder: see `frame/content_header.rs`.
    #[inline]
    pub(crate) fn decode_owned(mut payload: Bytes) -> Result<Self, DecodeError> {
        let read = header(&payload)?;
        let (class_id, weight, body_size, flags) =
            (read.class_id, read.weight, read.body_size, read.flags);
        let at = payload.len() - read.raw.len();
        payload.advance(at);
        Ok(Self {
            class_id,
            weight,
            body_size,
            properties: BasicProperties {
                flags,
                raw: payload,
            },
        })
    }

    /// Octets of the payload.
    pub fn encoded_len(&self) -> usize {
        12 + self.properties.encoded_len()
    }

    /// Appends the payload to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) {
        let mut fixed = [0; 12];
        fixed[..2].copy_from_slice(&self.class_id.0.to_be_bytes());
        fixed[2..4].copy_from_slice(&self.weight.to_be_bytes());
        fixed[4..].copy_from_slice(&self.body_size.to_be_bytes());
        buf.extend_from_slice(&fixed);
        self.properties.encode_into(buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::FieldError;

    #[test]
    fn continuation_words_are_read_and_unknown_bits_refused() {
        // flags: delivery-mode + continuation, then an empty continuation word.
        let payload =
            Bytes::from_static(&[0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0x10, 0x01, 0, 0, 2]);
        let h = ContentHeader::decode(&payload).expect("valid header");
        assert_eq!(h.body_size, 5);
        assert_eq!(h.properties.delivery_mode(), Some(2));

        let payload =
            Bytes::from_static(&[0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0x00, 0x01, 0x80, 0]);
        assert!(matches!(
            ContentHeader::decode(&payload),
            Err(DecodeError::BadContentHeader {
                source: FieldError::UnknownProperties { flags: 0x8000 },
                ..
            })
        ));
    }

    /// Fuzz finding (b): continuation words were read and dropped, so a header with one
    /// re-encoded to fewer bytes. They are kept and written back.
    #[test]
    fn continuation_words_are_kept_on_re_encode() {
        // delivery-mode + continuation, a continuation word + continuation, an empty word.
        let payload = Bytes::from_static(&[
            0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0x10, 0x01, 0x00, 0x01, 0x00, 0x00, 2,
        ]);
        let h = ContentHeader::decode(&payload).expect("valid header");
        assert_eq!(
            h.properties.flags(),
            0x1000,
            "continuation bit not a property"
        );
        assert!(!h.properties.is_empty());
        assert_eq!(h.properties.delivery_mode(), Some(2));
        assert_eq!(h.encoded_len(), payload.len());
        let mut buf = BytesMut::new();
        h.encode(&mut buf);
        assert_eq!(&buf[..], &payload[..], "byte for byte");

        // Rebuilt from its values, the properties are canonical: one flags word.
        let canonical = h.properties.to_builder().build().unwrap();
        assert_eq!(canonical.encoded_len(), 3);
        assert_eq!(canonical.delivery_mode(), Some(2));

        // Only continuation words: no property, still kept.
        let payload = Bytes::from_static(&[0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0]);
        let h = ContentHeader::decode(&payload).expect("valid header");
        assert!(h.properties.is_empty());
        assert_eq!(h.properties.content_type(), None);
        assert_eq!(h.encoded_len(), payload.len());
    }

    #[test]
    fn other_classes_carry_no_content() {
        let payload = Bytes::from_static(&[0, 50, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            ContentHeader::decode(&payload).unwrap_err().reply_code(),
            crate::ReplyCode::COMMAND_INVALID
        );
    }

    #[test]
    fn builder_and_getters_agree_on_every_property() {
        let b = PropertiesBuilder::default()
            .with_content_type("a")
            .with_content_encoding("b")
            .with_headers(
                FieldTable::builder()
                    .insert("k", 1i8)
                    .build()
                    .expect("table"),
            )
            .persistent()
            .with_priority(9)
            .with_correlation_id("c")
            .with_reply_to("d")
            .with_expiration("e")
            .with_message_id("f")
            .with_timestamp(7)
            .with_kind("g")
            .with_user_id("h")
            .with_app_id("i")
            .with_cluster_id("j");
        let props = b.build().unwrap();
        assert_eq!(props.flags(), 0xFFFC);
        assert_eq!(props.to_builder(), b);
        let sparse = PropertiesBuilder::default()
            .with_timestamp(1)
            .with_app_id("x");
        assert_eq!(sparse.build().unwrap().to_builder(), sparse);
        assert_eq!(sparse.build().unwrap().flags(), (1 << 6) | (1 << 3));
    }
}
