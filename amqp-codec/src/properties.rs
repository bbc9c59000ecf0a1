//! The content header frame's payload: class, body size and basic's 14 message properties.
//!
//! ```text
//! class-id (u16) | weight (u16, 0) | body-size (u64) | flags (u16)... | present properties
//! ```
//! Flag bit 15 marks the first property, bit 2 the fourteenth; bit 0 set means another flags
//! word follows (the continuation bit). Only present properties are on the wire, in order.

use bytes::{BufMut, Bytes, BytesMut};

use crate::constants::ClassId;
use crate::error::{DecodeError, FieldError};
use crate::strings::ShortStr;
use crate::table::FieldTable;
use crate::wire::{BufSink, LenCounter, Reader, Sink};

/// The properties of a message (basic class content header).
///
/// Decoded strings and the headers table share the frame's buffer.
///
/// ```
/// use amqp_codec::{BasicProperties, ShortStr};
/// let props = BasicProperties {
///     content_type: Some(ShortStr::from_static("application/json")),
///     delivery_mode: Some(BasicProperties::PERSISTENT),
///     ..Default::default()
/// };
/// assert!(props.is_persistent());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BasicProperties {
    /// MIME content type, e.g. `application/json`.
    pub content_type: Option<ShortStr>,
    /// MIME content encoding, e.g. `gzip`.
    pub content_encoding: Option<ShortStr>,
    /// Application headers; also where RabbitMQ puts `x-death`.
    pub headers: Option<FieldTable>,
    /// 1 transient, 2 persistent.
    pub delivery_mode: Option<u8>,
    /// Priority 0-9 (for priority queues).
    pub priority: Option<u8>,
    /// Correlates an RPC reply with its request.
    pub correlation_id: Option<ShortStr>,
    /// Queue to send an RPC reply to.
    pub reply_to: Option<ShortStr>,
    /// Per-message TTL in milliseconds, as a decimal string.
    pub expiration: Option<ShortStr>,
    /// Application message id (for idempotent consumers).
    pub message_id: Option<ShortStr>,
    /// Seconds since the Unix epoch.
    pub timestamp: Option<u64>,
    /// Application message type name (the spec's `type`).
    pub kind: Option<ShortStr>,
    /// Publishing user; RabbitMQ checks it against the connection's user.
    pub user_id: Option<ShortStr>,
    /// Publishing application.
    pub app_id: Option<ShortStr>,
    /// Reserved (deprecated in 0-9-1).
    pub cluster_id: Option<ShortStr>,
}

// Property flag bits, in wire order.
const CONTENT_TYPE: u16 = 1 << 15;
const CONTENT_ENCODING: u16 = 1 << 14;
const HEADERS: u16 = 1 << 13;
const DELIVERY_MODE: u16 = 1 << 12;
const PRIORITY: u16 = 1 << 11;
const CORRELATION_ID: u16 = 1 << 10;
const REPLY_TO: u16 = 1 << 9;
const EXPIRATION: u16 = 1 << 8;
const MESSAGE_ID: u16 = 1 << 7;
const TIMESTAMP: u16 = 1 << 6;
const TYPE: u16 = 1 << 5;
const USER_ID: u16 = 1 << 4;
const APP_ID: u16 = 1 << 3;
const CLUSTER_ID: u16 = 1 << 2;
/// Bit 0: another flags word follows.
const CONTINUATION: u16 = 1;
/// Bit 1 names no basic property.
const UNUSED: u16 = 1 << 1;

impl BasicProperties {
    /// `delivery_mode` of a transient message.
    pub const TRANSIENT: u8 = 1;
    /// `delivery_mode` of a persistent message (written to disk by durable queues).
    pub const PERSISTENT: u8 = 2;

    /// True if `delivery_mode` is persistent.
    pub fn is_persistent(&self) -> bool {
        self.delivery_mode == Some(Self::PERSISTENT)
    }

    /// The property flags word (without continuation).
    pub fn flags(&self) -> u16 {
        let mut f = 0;
        let mut set = |present: bool, bit: u16| {
            if present {
                f |= bit;
            }
        };
        set(self.content_type.is_some(), CONTENT_TYPE);
        set(self.content_encoding.is_some(), CONTENT_ENCODING);
        set(self.headers.is_some(), HEADERS);
        set(self.delivery_mode.is_some(), DELIVERY_MODE);
        set(self.priority.is_some(), PRIORITY);
        set(self.correlation_id.is_some(), CORRELATION_ID);
        set(self.reply_to.is_some(), REPLY_TO);
        set(self.expiration.is_some(), EXPIRATION);
        set(self.message_id.is_some(), MESSAGE_ID);
        set(self.timestamp.is_some(), TIMESTAMP);
        set(self.kind.is_some(), TYPE);
        set(self.user_id.is_some(), USER_ID);
        set(self.app_id.is_some(), APP_ID);
        set(self.cluster_id.is_some(), CLUSTER_ID);
        f
    }

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
        let has = |bit: u16| flags & bit != 0;
        let short = |r: &mut Reader<'_>, bit| -> Result<Option<ShortStr>, FieldError> {
            if has(bit) {
                r.short_str().map(Some)
            } else {
                Ok(None)
            }
        };
        Ok(Self {
            content_type: short(r, CONTENT_TYPE)?,
            content_encoding: short(r, CONTENT_ENCODING)?,
            headers: if has(HEADERS) { Some(r.table()?) } else { None },
            delivery_mode: if has(DELIVERY_MODE) {
                Some(r.octet()?)
            } else {
                None
            },
            priority: if has(PRIORITY) {
                Some(r.octet()?)
            } else {
                None
            },
            correlation_id: short(r, CORRELATION_ID)?,
            reply_to: short(r, REPLY_TO)?,
            expiration: short(r, EXPIRATION)?,
            message_id: short(r, MESSAGE_ID)?,
            timestamp: if has(TIMESTAMP) {
                Some(r.longlong()?)
            } else {
                None
            },
            kind: short(r, TYPE)?,
            user_id: short(r, USER_ID)?,
            app_id: short(r, APP_ID)?,
            cluster_id: short(r, CLUSTER_ID)?,
        })
    }

    fn write<S: Sink>(&self, s: &mut S) {
        s.short(self.flags());
        let short = |s: &mut S, v: &Option<ShortStr>| {
            if let Some(v) = v {
                s.short_str(v);
            }
        };
        short(s, &self.content_type);
        short(s, &self.content_encoding);
        if let Some(h) = &self.headers {
            s.long_str(h.as_raw());
        }
        if let Some(v) = self.delivery_mode {
            s.octet(v);
        }
        if let Some(v) = self.priority {
            s.octet(v);
        }
        short(s, &self.correlation_id);
        short(s, &self.reply_to);
        short(s, &self.expiration);
        short(s, &self.message_id);
        if let Some(v) = self.timestamp {
            s.longlong(v);
        }
        short(s, &self.kind);
        short(s, &self.user_id);
        short(s, &self.app_id);
        short(s, &self.cluster_id);
    }

    /// Appends the flags word and the present properties to `buf`.
    pub(crate) fn encode_into(&self, buf: &mut BytesMut) {
        self.write(&mut BufSink::new(buf));
    }

    /// Octets of the flags word and the present properties.
    pub fn encoded_len(&self) -> usize {
        let mut c = LenCounter::default();
        self.write(&mut c);
        c.len
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

    /// Decodes a content header frame's payload; strings and headers share `payload`.
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
        assert_eq!(h.properties.delivery_mode, Some(2));

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
}
