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
//! property on demand, and encoding is a single copy of the slice.

mod builder;

pub use builder::PropertiesBuilder;

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use crate::constants::ClassId;
use crate::error::{DecodeError, FieldError};
use crate::strings::ShortStr;
use crate::table::{FieldTable, validate_entries};
use crate::wire::Reader;

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

/// How each property is encoded.
#[derive(Clone, Copy)]
enum Encoding {
    Short,
    Table,
    Octet,
    LongLong,
}

impl Property {
    const ALL: [Property; 14] = [
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

    const fn encoding(self) -> Encoding {
        match self {
            Self::Headers => Encoding::Table,
            Self::DeliveryMode | Self::Priority => Encoding::Octet,
            Self::Timestamp => Encoding::LongLong,
            _ => Encoding::Short,
        }
    }
}

/// Bit 0: another flags word follows.
const CONTINUATION: u16 = 1;
/// Bit 1 names no basic property.
const UNUSED: u16 = 1 << 1;

/// The properties of a message, kept in their wire encoding.
///
/// Build them with [`PropertiesBuilder`] (or [`BasicProperties::builder`]); read them with the
/// getters, which return slices of the frame they were decoded from. Equality compares the
/// encodings. `Default` is "no properties".
///
/// ```
/// use amqp_codec::{BasicProperties, ShortStr};
/// let props = BasicProperties::builder()
///     .with_message_id(ShortStr::from_static("m-1"))
///     .with_delivery_mode(BasicProperties::PERSISTENT)
///     .build();
/// assert_eq!(props.message_id(), Some(ShortStr::from_static("m-1")));
/// assert_eq!(props.priority(), None);
/// ```
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct BasicProperties {
    /// Which properties are present (the first flags word, continuation bit cleared).
    flags: u16,
    /// The present properties' encoding, in wire order, already validated.
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
        }
    }

    /// The property flags word: bit 15 content-type ... bit 2 cluster-id.
    pub fn flags(&self) -> u16 {
        self.flags
    }

    /// True if no property is set.
    pub fn is_empty(&self) -> bool {
        self.flags == 0
    }

    /// True if `delivery_mode` is persistent.
    pub fn is_persistent(&self) -> bool {
        self.delivery_mode() == Some(Self::PERSISTENT)
    }

    /// A reader positioned at property `want`, if it is present.
    fn seek(&self, want: Property) -> Option<Reader<'_>> {
        if self.flags & want.bit() == 0 {
            return None;
        }
        let mut r = Reader::new(&self.raw);
        for p in Property::ALL {
            if p == want {
                return Some(r);
            }
            if self.flags & p.bit() != 0 {
                // Validated at construction, so skipping cannot fail; if it did, report absent.
                skip(&mut r, p.encoding()).ok()?;
            }
        }
        None
    }

    fn short(&self, p: Property) -> Option<ShortStr> {
        self.seek(p)?.short_str().ok()
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
        let mut r = self.seek(Property::Headers)?;
        let raw = r.long_slice("field table").ok()?;
        Some(FieldTable::from_validated(r.share(raw)))
    }
    /// 1 transient, 2 persistent.
    pub fn delivery_mode(&self) -> Option<u8> {
        self.seek(Property::DeliveryMode)?.octet().ok()
    }
    /// Priority.
    pub fn priority(&self) -> Option<u8> {
        self.seek(Property::Priority)?.octet().ok()
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
        self.seek(Property::Timestamp)?.longlong().ok()
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

    /// Reads the flags word(s) and checks the present properties, keeping them as one slice.
    fn read(r: &mut Reader<'_>) -> Result<Self, FieldError> {
        let flags = r.short()?;
        if flags & UNUSED != 0 {
            return Err(FieldError::UnknownProperties { flags: UNUSED });
        }
        // Continuation words may follow; basic defines no property beyond the first word, so
        // any bit other than the continuation bit in them is a property we cannot parse.
        let mut more = flags & CONTINUATION != 0;
        while more {
            let word = r.short()?;
            if word & !CONTINUATION != 0 {
                return Err(FieldError::UnknownProperties {
                    flags: word & !CONTINUATION,
                });
            }
            more = word & CONTINUATION != 0;
        }
        let flags = flags & !CONTINUATION;
        let start = r.rest();
        for p in Property::ALL {
            if flags & p.bit() != 0 {
                skip(r, p.encoding())?;
            }
        }
        let raw = &start[..start.len() - r.rest().len()];
        Ok(Self {
            flags,
            raw: r.share(raw),
        })
    }

    /// Octets of the flags word and the present properties.
    pub fn encoded_len(&self) -> usize {
        2 + self.raw.len()
    }

    /// Appends the flags word and the present properties to `buf`.
    pub(crate) fn encode_into(&self, buf: &mut BytesMut) {
        buf.put_u16(self.flags);
        buf.put_slice(&self.raw);
    }
}

/// Steps over one property, validating it.
fn skip(r: &mut Reader<'_>, encoding: Encoding) -> Result<(), FieldError> {
    match encoding {
        Encoding::Short => r.skip_short_str(),
        Encoding::Octet => r.octet().map(drop),
        Encoding::LongLong => r.longlong().map(drop),
        Encoding::Table => {
            let raw = r.long_slice("field table")?;
            validate_entries(&mut r.sub(raw), 0)
        }
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
        let mut r = Reader::new(payload);
        let (Ok(class_id), Ok(weight), Ok(body_size)) = (r.short(), r.short(), r.longlong()) else {
            return Err(DecodeError::FrameTooShort {
                frame_type: crate::FrameType::HEADER,
                size: payload.len() as u32,
            });
        };
        // Only basic carries content in 0-9-1; another class's property list is unknowable.
        if ClassId(class_id) != ClassId::BASIC {
            return Err(DecodeError::UnknownContentClass {
                class_id: ClassId(class_id),
            });
        }
        let bad = |source| DecodeError::BadContentHeader { source };
        let properties = BasicProperties::read(&mut r).map_err(bad)?;
        r.finish().map_err(bad)?;
        Ok(Self {
            class_id: ClassId(class_id),
            weight,
            body_size,
            properties,
        })
    }

    /// Octets of the payload.
    pub fn encoded_len(&self) -> usize {
        12 + self.properties.encoded_len()
    }

    /// Appends the payload to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) {
        buf.put_u16(self.class_id.0);
        buf.put_u16(self.weight);
        buf.put_u64(self.body_size);
        self.properties.encode_into(buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
                source: FieldError::UnknownProperties { flags: 0x8000 }
            })
        ));
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
        let b = PropertiesBuilder {
            content_type: Some(ShortStr::from_static("a")),
            content_encoding: Some(ShortStr::from_static("b")),
            headers: Some(
                FieldTable::builder()
                    .insert("k", 1i8)
                    .build()
                    .expect("table"),
            ),
            delivery_mode: Some(2),
            priority: Some(9),
            correlation_id: Some(ShortStr::from_static("c")),
            reply_to: Some(ShortStr::from_static("d")),
            expiration: Some(ShortStr::from_static("e")),
            message_id: Some(ShortStr::from_static("f")),
            timestamp: Some(7),
            kind: Some(ShortStr::from_static("g")),
            user_id: Some(ShortStr::from_static("h")),
            app_id: Some(ShortStr::from_static("i")),
            cluster_id: Some(ShortStr::from_static("j")),
        };
        let props = b.build();
        assert_eq!(props.flags(), 0xFFFC);
        assert_eq!(props.to_builder(), b);
        let sparse = PropertiesBuilder {
            timestamp: Some(1),
            app_id: Some(ShortStr::from_static("x")),
            ..Default::default()
        };
        assert_eq!(sparse.build().to_builder(), sparse);
        assert_eq!(sparse.build().flags(), (1 << 6) | (1 << 3));
    }
}
