//! [`PropertiesRef`]: a message's properties read in place, borrowed from the frame.

use std::fmt;

use bytes::Bytes;

use super::{BasicProperties, Property};
use crate::read::properties::{CONTINUATION, seek};
use crate::table::FieldTable;

/// A message's properties, borrowed from the frame they arrived in: every getter reads its
/// property in place and returns a slice of the frame, so reading them takes no reference
/// count and copies nothing (only [`PropertiesRef::headers`], which returns an owned table,
/// takes one).
///
/// Get one from a delivery read in place ([`crate::DeliveryRef::properties`]) or from owned
/// properties ([`BasicProperties::view`]). Short strings are returned as their bytes (AMQP
/// strings are octets; `std::str::from_utf8` for text).
///
/// ```
/// use amqp_codec::BasicProperties;
/// let props = BasicProperties::builder()
///     .with_content_type("application/json")
///     .persistent()
///     .build()?;
/// let view = props.view();
/// assert_eq!(view.content_type(), Some(&b"application/json"[..]));
/// assert_eq!(view.delivery_mode(), Some(2));
/// assert_eq!(view.message_id(), None);
/// # Ok::<(), amqp_codec::PropertyError>(())
/// ```
#[derive(Clone, Copy)]
pub struct PropertiesRef<'a> {
    /// The first flags word as received (continuation bit included).
    flags: u16,
    /// What follows it, validated: continuation words, then the present properties.
    raw: &'a [u8],
    /// The bytes `raw` is a slice of, to share for an owned value.
    owner: &'a Bytes,
}

impl<'a> PropertiesRef<'a> {
    /// Properties whose first flags word is `flags` and whose following bytes `raw` (a slice of
    /// `owner`) were validated.
    pub(crate) fn new(flags: u16, raw: &'a [u8], owner: &'a Bytes) -> Self {
        Self { flags, raw, owner }
    }

    /// The property flags word: bit 15 content-type ... bit 2 cluster-id (the continuation bit,
    /// bit 0, cleared).
    pub fn flags(&self) -> u16 {
        self.flags & !CONTINUATION
    }

    /// True if no property is set.
    pub fn is_empty(&self) -> bool {
        self.flags() == 0
    }

    /// The bytes of property `p`, if present.
    #[inline]
    pub(crate) fn get(&self, p: Property) -> Option<&'a [u8]> {
        seek(self.flags, self.raw, p)
    }

    /// An octet property.
    #[inline]
    fn octet(&self, p: Property) -> Option<u8> {
        self.get(p)?.first().copied()
    }

    /// MIME content type.
    #[inline]
    pub fn content_type(&self) -> Option<&'a [u8]> {
        self.get(Property::ContentType)
    }
    /// MIME content encoding.
    pub fn content_encoding(&self) -> Option<&'a [u8]> {
        self.get(Property::ContentEncoding)
    }
    /// Application headers, as an owned table sharing the frame (one reference count).
    pub fn headers(&self) -> Option<FieldTable> {
        let raw = self.get(Property::Headers)?;
        Some(FieldTable::from_validated(self.owner.slice_ref(raw)))
    }
    /// 1 transient, 2 persistent.
    #[inline]
    pub fn delivery_mode(&self) -> Option<u8> {
        self.octet(Property::DeliveryMode)
    }
    /// Priority.
    pub fn priority(&self) -> Option<u8> {
        self.octet(Property::Priority)
    }
    /// RPC correlation id.
    pub fn correlation_id(&self) -> Option<&'a [u8]> {
        self.get(Property::CorrelationId)
    }
    /// RPC reply queue.
    pub fn reply_to(&self) -> Option<&'a [u8]> {
        self.get(Property::ReplyTo)
    }
    /// Per-message TTL in milliseconds, as text.
    pub fn expiration(&self) -> Option<&'a [u8]> {
        self.get(Property::Expiration)
    }
    /// Application message id.
    pub fn message_id(&self) -> Option<&'a [u8]> {
        self.get(Property::MessageId)
    }
    /// Seconds since the Unix epoch.
    pub fn timestamp(&self) -> Option<u64> {
        let &bytes = self.get(Property::Timestamp)?.first_chunk::<8>()?;
        Some(u64::from_be_bytes(bytes))
    }
    /// Application message type (the spec's `type`).
    pub fn kind(&self) -> Option<&'a [u8]> {
        self.get(Property::Type)
    }
    /// Publishing user.
    pub fn user_id(&self) -> Option<&'a [u8]> {
        self.get(Property::UserId)
    }
    /// Publishing application.
    pub fn app_id(&self) -> Option<&'a [u8]> {
        self.get(Property::AppId)
    }
    /// Reserved.
    pub fn cluster_id(&self) -> Option<&'a [u8]> {
        self.get(Property::ClusterId)
    }

    /// The properties as an owned value sharing the frame (one reference count).
    pub fn to_properties(&self) -> BasicProperties {
        BasicProperties {
            flags: self.flags,
            raw: self.owner.slice_ref(self.raw),
        }
    }

    /// The first flags word as received (continuation bit included).
    pub(crate) fn wire_flags(&self) -> u16 {
        self.flags
    }

    /// What follows the first flags word: continuation words, then the properties.
    pub(crate) fn wire_raw(&self) -> &'a [u8] {
        self.raw
    }

    /// `slice` (a property read from these) as shared bytes.
    pub(crate) fn share(&self, slice: &[u8]) -> Bytes {
        self.owner.slice_ref(slice)
    }
}

impl PartialEq for PropertiesRef<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.flags == other.flags && self.raw == other.raw
    }
}

impl Eq for PropertiesRef<'_> {}

impl fmt::Debug for PropertiesRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.to_properties(), f)
    }
}
