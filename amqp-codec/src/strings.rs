//! Short and long strings: byte strings sliced out of the read buffer, never copied.
//!
//! AMQP strings are octets, not necessarily UTF-8 (RabbitMQ treats them as binaries), so both
//! types keep the exact bytes and offer `as_str` for the common UTF-8 case.

use std::fmt;
use std::ops::Deref;

use bytes::Bytes;

use crate::error::EncodeError;

/// A short string: at most 255 bytes, length-prefixed by one octet on the wire.
///
/// Decoded short strings share the read buffer ([`Bytes`]); building one from a `&'static str`
/// allocates nothing.
///
/// ```
/// use amqp_codec::ShortStr;
/// let queue = ShortStr::from_static("tasks");
/// assert_eq!(queue.as_str(), Some("tasks"));
/// assert!(ShortStr::try_from("x".repeat(256)).is_err());
/// ```
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShortStr(Bytes);

impl ShortStr {
    /// The largest length a short string can have.
    pub const MAX_LEN: usize = 255;

    /// An empty short string.
    pub const fn new() -> Self {
        Self(Bytes::new())
    }

    /// A short string from a literal.
    ///
    /// # Panics
    /// If `s` is longer than 255 bytes; in a `const` context this is a compile error.
    pub const fn from_static(s: &'static str) -> Self {
        assert!(
            s.len() <= Self::MAX_LEN,
            "short string longer than 255 bytes"
        );
        Self(Bytes::from_static(s.as_bytes()))
    }

    /// A short string sharing `bytes`, if it is at most 255 bytes long.
    pub fn from_bytes(bytes: Bytes) -> Result<Self, EncodeError> {
        if bytes.len() > Self::MAX_LEN {
            return Err(EncodeError::ShortStrTooLong { len: bytes.len() });
        }
        Ok(Self(bytes))
    }

    /// Wraps bytes the decoder has already bounded to 255 (its length prefix is one octet).
    pub(crate) fn from_wire(bytes: Bytes) -> Self {
        debug_assert!(bytes.len() <= Self::MAX_LEN);
        Self(bytes)
    }

    /// The string as UTF-8, or `None` if its bytes are not UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The underlying shared buffer.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }
}

impl Deref for ShortStr {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for ShortStr {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl PartialEq<str> for ShortStr {
    fn eq(&self, other: &str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl PartialEq<&str> for ShortStr {
    fn eq(&self, other: &&str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl PartialEq<String> for ShortStr {
    fn eq(&self, other: &String) -> bool {
        self.0 == other.as_bytes()
    }
}

impl TryFrom<&str> for ShortStr {
    type Error = EncodeError;
    fn try_from(s: &str) -> Result<Self, EncodeError> {
        Self::from_bytes(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl TryFrom<String> for ShortStr {
    type Error = EncodeError;
    fn try_from(s: String) -> Result<Self, EncodeError> {
        Self::from_bytes(Bytes::from(s))
    }
}

impl TryFrom<&String> for ShortStr {
    type Error = EncodeError;
    fn try_from(s: &String) -> Result<Self, EncodeError> {
        Self::try_from(s.as_str())
    }
}

impl TryFrom<Bytes> for ShortStr {
    type Error = EncodeError;
    fn try_from(b: Bytes) -> Result<Self, EncodeError> {
        Self::from_bytes(b)
    }
}

/// Anything that can become a [`ShortStr`]: `&str`, `String`, `&String` (copied) and
/// `ShortStr` itself (shared). Fails, never truncates, when longer than 255 bytes.
///
/// This is what names, short-string properties and the client's calls accept, so `&str` is the
/// obvious way everywhere and a prebuilt `ShortStr` the way to copy nothing.
///
/// ```
/// use amqp_codec::IntoShortStr;
/// assert_eq!("tasks".into_short_str().unwrap(), "tasks");
/// assert!("x".repeat(256).into_short_str().is_err());
/// ```
pub trait IntoShortStr {
    /// The value as a short string, or [`EncodeError::ShortStrTooLong`].
    fn into_short_str(self) -> Result<ShortStr, EncodeError>;
}

impl IntoShortStr for &str {
    fn into_short_str(self) -> Result<ShortStr, EncodeError> {
        ShortStr::try_from(self)
    }
}

impl IntoShortStr for &&str {
    fn into_short_str(self) -> Result<ShortStr, EncodeError> {
        ShortStr::try_from(*self)
    }
}

impl IntoShortStr for String {
    fn into_short_str(self) -> Result<ShortStr, EncodeError> {
        ShortStr::try_from(self)
    }
}

impl IntoShortStr for &String {
    fn into_short_str(self) -> Result<ShortStr, EncodeError> {
        ShortStr::try_from(self.as_str())
    }
}

impl IntoShortStr for ShortStr {
    fn into_short_str(self) -> Result<ShortStr, EncodeError> {
        Ok(self)
    }
}

impl IntoShortStr for &ShortStr {
    fn into_short_str(self) -> Result<ShortStr, EncodeError> {
        Ok(self.clone())
    }
}

impl fmt::Debug for ShortStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&String::from_utf8_lossy(&self.0), f)
    }
}

impl fmt::Display for ShortStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}

/// A long string: arbitrary bytes, length-prefixed by four octets on the wire.
///
/// Used for SASL responses, `connection.start`'s mechanisms and locales, and `S` table values.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LongStr(Bytes);

impl LongStr {
    /// An empty long string.
    pub const fn new() -> Self {
        Self(Bytes::new())
    }

    /// A long string from a literal.
    pub const fn from_static(s: &'static [u8]) -> Self {
        Self(Bytes::from_static(s))
    }

    /// A long string sharing `bytes`, if it fits the 32-bit length prefix.
    pub fn from_bytes(bytes: Bytes) -> Result<Self, EncodeError> {
        if u32::try_from(bytes.len()).is_err() {
            return Err(EncodeError::TooLong { len: bytes.len() });
        }
        Ok(Self(bytes))
    }

    /// Wraps bytes the decoder has already bounded by a 32-bit length prefix.
    pub(crate) fn from_wire(bytes: Bytes) -> Self {
        Self(bytes)
    }

    /// The string as UTF-8, or `None` if its bytes are not UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The underlying shared buffer.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }
}

impl Deref for LongStr {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for LongStr {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl From<&str> for LongStr {
    fn from(s: &str) -> Self {
        Self(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl From<String> for LongStr {
    fn from(s: String) -> Self {
        Self(Bytes::from(s))
    }
}

impl From<Vec<u8>> for LongStr {
    fn from(v: Vec<u8>) -> Self {
        Self(Bytes::from(v))
    }
}

impl PartialEq<str> for LongStr {
    fn eq(&self, other: &str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl PartialEq<&str> for LongStr {
    fn eq(&self, other: &&str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl PartialEq<String> for LongStr {
    fn eq(&self, other: &String) -> bool {
        self.0 == other.as_bytes()
    }
}

impl fmt::Debug for LongStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match std::str::from_utf8(&self.0) {
            Ok(s) => fmt::Debug::fmt(s, f),
            Err(_) => fmt::Debug::fmt(&self.0, f),
        }
    }
}
