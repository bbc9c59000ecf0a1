//! Field tables and arrays with RabbitMQ's type letters.
//!
//! A decoded [`FieldTable`] is the validated wire encoding of its entries, a [`Bytes`] slice of
//! the read buffer: decoding checks every entry once (known type letters, no overrun, nesting
//! at any depth, walked in a loop rather than by recursion) and allocates nothing below eight
//! levels of nesting; [`FieldTable::iter`] and [`FieldTable::get`] then read entries on demand. Entry order and duplicate keys are kept, so a table round-trips byte for byte.
//!
//! A bool's octet reads as the spec says: 0 is false, anything else true. The table itself keeps
//! the octet (it is the wire bytes), so it re-encodes byte for byte; only a table rebuilt from
//! its values (`iter().collect()`) writes a non-canonical true as 1. RabbitMQ and the common
//! clients only ever write 0 and 1.
//!
//! RabbitMQ's type letters, which differ from the 0-9-1 spec's own list:
//!
//! | letter | value | letter | value |
//! |---|---|---|---|
//! | `t` | bool | `d` | f64 |
//! | `b` | i8 | `D` | decimal (scale octet, u32) |
//! | `B` | u8 | `S` | long string (bytes) |
//! | `s` | i16 | `A` | array |
//! | `u` | u16 | `T` | timestamp (u64) |
//! | `I` | i32 | `F` | nested table |
//! | `i` | u32 | `V` | void |
//! | `l` | i64 | `x` | byte array |
//! | `f` | f32 | | |
//!
//! ```
//! use amqp_codec::{FieldTable, FieldValue};
//! let args = FieldTable::builder()
//!     .insert("x-message-ttl", 60_000i32)
//!     .insert("x-dead-letter-exchange", "retry")
//!     .build()
//!     .expect("keys fit in short strings");
//! assert_eq!(args.get("x-message-ttl"), Some(FieldValue::I32(60_000)));
//! assert_eq!(args.iter().count(), 2);
//! ```

mod cursor;
mod debug;
mod edit;

pub use edit::ValueError;

use bytes::{BufMut, Bytes, BytesMut};

use cursor::Cursor;

use crate::error::{DecodeError, EncodeError, FieldError};
use crate::read::table::{check_array, check_table};
use crate::strings::{LongStr, ShortStr};

/// An AMQP decimal: `value / 10^scale`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Decimal {
    /// Number of decimal digits after the point.
    pub scale: u8,
    /// The unscaled value.
    pub value: u32,
}

/// One value in a field table or array.
///
/// Its `Debug` output walks nested tables and arrays in a loop, not by recursion, so a value
/// nested 100 000 levels deep prints without exhausting the stack (see `debug.rs`).
#[derive(Clone, PartialEq)]
pub enum FieldValue {
    /// `t`
    Bool(bool),
    /// `b`
    I8(i8),
    /// `B`
    U8(u8),
    /// `s`
    I16(i16),
    /// `u`
    U16(u16),
    /// `I`
    I32(i32),
    /// `i`
    U32(u32),
    /// `l`
    I64(i64),
    /// `f`
    F32(f32),
    /// `d`
    F64(f64),
    /// `D`
    Decimal(Decimal),
    /// `S`: bytes, not necessarily UTF-8.
    LongStr(LongStr),
    /// `A`
    Array(FieldArray),
    /// `T`: seconds since the Unix epoch.
    Timestamp(u64),
    /// `F`
    Table(FieldTable),
    /// `V`
    Void,
    /// `x`
    ByteArray(Bytes),
}

impl FieldValue {
    /// The type letter this value is encoded with.
    pub fn type_letter(&self) -> u8 {
        match self {
            Self::Bool(_) => b't',
            Self::I8(_) => b'b',
            Self::U8(_) => b'B',
            Self::I16(_) => b's',
            Self::U16(_) => b'u',
            Self::I32(_) => b'I',
            Self::U32(_) => b'i',
            Self::I64(_) => b'l',
            Self::F32(_) => b'f',
            Self::F64(_) => b'd',
            Self::Decimal(_) => b'D',
            Self::LongStr(_) => b'S',
            Self::Array(_) => b'A',
            Self::Timestamp(_) => b'T',
            Self::Table(_) => b'F',
            Self::Void => b'V',
            Self::ByteArray(_) => b'x',
        }
    }

    /// The value as a string, when it is a UTF-8 long string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::LongStr(s) => s.as_str(),
            _ => None,
        }
    }

    /// The value as an i64, when it is any integer type that fits.
    pub fn as_i64(&self) -> Option<i64> {
        Some(match *self {
            Self::I8(v) => v.into(),
            Self::U8(v) => v.into(),
            Self::I16(v) => v.into(),
            Self::U16(v) => v.into(),
            Self::I32(v) => v.into(),
            Self::U32(v) => v.into(),
            Self::I64(v) => v,
            Self::Timestamp(v) => i64::try_from(v).ok()?,
            _ => return None,
        })
    }

    /// Octets this value takes on the wire, type letter included.
    fn encoded_len(&self) -> usize {
        1 + match self {
            Self::Bool(_) | Self::I8(_) | Self::U8(_) => 1,
            Self::I16(_) | Self::U16(_) => 2,
            Self::I32(_) | Self::U32(_) | Self::F32(_) => 4,
            Self::I64(_) | Self::F64(_) | Self::Timestamp(_) => 8,
            Self::Decimal(_) => 5,
            Self::LongStr(s) => 4 + s.len(),
            Self::Array(a) => 4 + a.raw.len(),
            Self::Table(t) => 4 + t.raw.len(),
            Self::Void => 0,
            Self::ByteArray(b) => 4 + b.len(),
        }
    }

    /// Writes the type letter and the value. Lengths were checked at construction, except for
    /// `ByteArray`, which [`TableBuilder`] checks.
    fn encode(&self, buf: &mut BytesMut) {
        buf.put_u8(self.type_letter());
        match self {
            Self::Bool(v) => buf.put_u8(u8::from(*v)),
            Self::I8(v) => buf.put_i8(*v),
            Self::U8(v) => buf.put_u8(*v),
            Self::I16(v) => buf.put_i16(*v),
            Self::U16(v) => buf.put_u16(*v),
            Self::I32(v) => buf.put_i32(*v),
            Self::U32(v) => buf.put_u32(*v),
            Self::I64(v) => buf.put_i64(*v),
            Self::F32(v) => buf.put_f32(*v),
            Self::F64(v) => buf.put_f64(*v),
            Self::Decimal(d) => {
                buf.put_u8(d.scale);
                buf.put_u32(d.value);
            }
            Self::LongStr(s) => put_long_bytes(buf, s),
            Self::Array(a) => put_long_bytes(buf, &a.raw),
            Self::Timestamp(v) => buf.put_u64(*v),
            Self::Table(t) => put_long_bytes(buf, &t.raw),
            Self::Void => {}
            Self::ByteArray(b) => put_long_bytes(buf, b),
        }
    }

    /// Length of a value that must fit a 32-bit prefix, for builders to check.
    fn long_len(&self) -> usize {
        match self {
            Self::LongStr(s) => s.len(),
            Self::Array(a) => a.raw.len(),
            Self::Table(t) => t.raw.len(),
            Self::ByteArray(b) => b.len(),
            _ => 0,
        }
    }
}

fn put_long_bytes(buf: &mut BytesMut, v: &[u8]) {
    buf.put_u32(v.len() as u32);
    buf.put_slice(v);
}

macro_rules! value_from {
    ($($ty:ty => $variant:ident),* $(,)?) => {$(
        impl From<$ty> for FieldValue {
            fn from(v: $ty) -> Self {
                Self::$variant(v)
            }
        }
    )*};
}

value_from! {
    bool => Bool, i8 => I8, u8 => U8, i16 => I16, u16 => U16, i32 => I32, u32 => U32,
    i64 => I64, f32 => F32, f64 => F64, Decimal => Decimal, LongStr => LongStr,
    FieldArray => Array, FieldTable => Table,
}

impl From<&str> for FieldValue {
    fn from(v: &str) -> Self {
        Self::LongStr(LongStr::from(v))
    }
}

impl From<String> for FieldValue {
    fn from(v: String) -> Self {
        Self::LongStr(LongStr::from(v))
    }
}

/// A field table: ordered `(key, value)` entries, kept in their wire encoding.
///
/// Equality compares the encodings, so two tables are equal when they have the same entries in
/// the same order.
///
/// ```
/// use amqp_codec::{FieldTable, FieldValue, ShortStr};
///
/// // Queue arguments, as queue.declare sends them.
/// let args = FieldTable::builder()
///     .insert("x-queue-type", "quorum")
///     .insert("x-max-length", 10_000i64)
///     .insert("x-single-active-consumer", true)
///     .build()?;
/// assert_eq!(args.get("x-max-length").and_then(|v| v.as_i64()), Some(10_000));
/// assert_eq!(args.get("x-single-active-consumer"), Some(FieldValue::Bool(true)));
/// let keys: Vec<String> = args.iter().map(|(key, _)| key.to_string()).collect();
/// assert_eq!(keys, ["x-queue-type", "x-max-length", "x-single-active-consumer"]);
/// // The same entries from an iterator, and the wire form back.
/// let entry = (ShortStr::from_static("x-queue-type"), FieldValue::from("quorum"));
/// let same: FieldTable = [entry].into_iter().collect();
/// assert_eq!(FieldTable::from_raw(same.as_raw().clone())?, same);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct FieldTable {
    /// The concatenated entries (without the 32-bit length prefix), already validated.
    raw: Bytes,
}

impl FieldTable {
    /// An empty table.
    pub const fn new() -> Self {
        Self { raw: Bytes::new() }
    }

    /// A builder for a new table.
    pub fn builder() -> TableBuilder {
        TableBuilder::default()
    }

    /// Validates `raw` (a table's entries, without the length prefix) and wraps it.
    pub fn from_raw(raw: Bytes) -> Result<Self, DecodeError> {
        Self::from_validated_slice(raw).map_err(|source| DecodeError::BadFieldTable { source })
    }

    /// Wraps entries already checked by [`check_table`].
    pub(crate) fn from_validated(raw: Bytes) -> Self {
        Self { raw }
    }

    fn from_validated_slice(raw: Bytes) -> Result<Self, FieldError> {
        check_table(&raw)?;
        Ok(Self { raw })
    }

    /// The entries' wire encoding, without the length prefix.
    pub fn as_raw(&self) -> &Bytes {
        &self.raw
    }

    /// True when the table has no entries.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// Octets of the entries on the wire (the 4-byte length prefix not included).
    pub fn encoded_len(&self) -> usize {
        self.raw.len()
    }

    /// The entries in wire order.
    pub fn iter(&self) -> TableIter<'_> {
        TableIter {
            cursor: Cursor {
                raw: &self.raw,
                pos: 0,
            },
        }
    }

    /// The value of the first entry named `key`. The entries before it are stepped over by
    /// their lengths: only the value found is made (a string or container in it shares the
    /// encoding).
    ///
    /// (callgrind, the worker reading a retried task's headers: through [`iter`](Self::iter),
    /// every key and value passed made a shared `Bytes` and dropped it, two atomic operations
    /// each.)
    pub fn get(&self, key: &str) -> Option<FieldValue> {
        Cursor {
            raw: &self.raw,
            pos: 0,
        }
        .find(key.as_bytes())
    }
}

/// Collects entries into a table; an entry whose value exceeds 4 GiB is left out.
impl<K: Into<ShortStr>, V: Into<FieldValue>> FromIterator<(K, V)> for FieldTable {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut builder = TableBuilder::default();
        for (k, v) in iter {
            builder.push_bytes(&k.into(), &v.into());
        }
        // Keys are short strings already; an entry whose value exceeds 4 GiB was left out.
        FieldTable {
            raw: builder.buf.freeze(),
        }
    }
}

impl<'a> IntoIterator for &'a FieldTable {
    type Item = (ShortStr, FieldValue);
    type IntoIter = TableIter<'a>;
    fn into_iter(self) -> TableIter<'a> {
        self.iter()
    }
}

/// Iterator over a table's entries; reads them from the validated encoding, allocating nothing.
pub struct TableIter<'a> {
    cursor: Cursor<'a>,
}

impl Iterator for TableIter<'_> {
    type Item = (ShortStr, FieldValue);
    fn next(&mut self) -> Option<Self::Item> {
        if self.cursor.is_empty() {
            return None;
        }
        // The encoding was validated when the table was made, so this read cannot fail; if it
        // somehow did, iteration ends rather than panics.
        self.cursor.entry()
    }
}

/// Builds a [`FieldTable`], encoding entries as they are inserted.
#[derive(Default)]
pub struct TableBuilder {
    /// The entries encoded so far.
    buf: BytesMut,
    /// The first error met, reported by `build` so that inserts can be chained.
    error: Option<EncodeError>,
}

impl TableBuilder {
    /// Appends an entry. A key longer than 255 bytes is reported by [`TableBuilder::build`].
    pub fn insert(mut self, key: impl AsRef<str>, value: impl Into<FieldValue>) -> Self {
        let key = key.as_ref();
        if key.len() > ShortStr::MAX_LEN {
            self.error
                .get_or_insert(EncodeError::ShortStrTooLong { len: key.len() });
            return self;
        }
        self.push_bytes(key.as_bytes(), &value.into());
        self
    }

    fn push_bytes(&mut self, key: &[u8], value: &FieldValue) {
        if u32::try_from(value.long_len()).is_err() {
            self.error.get_or_insert(EncodeError::TooLong {
                len: value.long_len(),
            });
            return;
        }
        self.buf.reserve(1 + key.len() + value.encoded_len());
        self.buf.put_u8(key.len() as u8);
        self.buf.put_slice(key);
        value.encode(&mut self.buf);
    }

    /// The table, or the first error an insert met.
    pub fn build(self) -> Result<FieldTable, EncodeError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        if u32::try_from(self.buf.len()).is_err() {
            return Err(EncodeError::TooLong {
                len: self.buf.len(),
            });
        }
        Ok(FieldTable {
            raw: self.buf.freeze(),
        })
    }
}

/// A field array: values without keys, kept in their wire encoding like [`FieldTable`].
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct FieldArray {
    /// The concatenated values (without the 32-bit length prefix), already validated.
    raw: Bytes,
}

impl FieldArray {
    /// An empty array.
    pub const fn new() -> Self {
        Self { raw: Bytes::new() }
    }

    /// Validates `raw` (an array's values, without the length prefix) and wraps it.
    pub fn from_raw(raw: Bytes) -> Result<Self, DecodeError> {
        check_array(&raw).map_err(|source| DecodeError::BadFieldTable { source })?;
        Ok(Self { raw })
    }

    /// The values' wire encoding, without the length prefix.
    pub fn as_raw(&self) -> &Bytes {
        &self.raw
    }

    /// True when the array has no values.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// The values in order.
    pub fn iter(&self) -> ArrayIter<'_> {
        ArrayIter {
            cursor: Cursor {
                raw: &self.raw,
                pos: 0,
            },
        }
    }
}

impl<V: Into<FieldValue>> FromIterator<V> for FieldArray {
    /// Values longer than 4 GiB cannot be encoded and are left out.
    fn from_iter<I: IntoIterator<Item = V>>(iter: I) -> Self {
        let mut buf = BytesMut::new();
        for v in iter {
            let v = v.into();
            if u32::try_from(v.long_len()).is_ok() {
                v.encode(&mut buf);
            }
        }
        Self { raw: buf.freeze() }
    }
}

/// Iterator over an array's values.
pub struct ArrayIter<'a> {
    cursor: Cursor<'a>,
}

impl Iterator for ArrayIter<'_> {
    type Item = FieldValue;
    fn next(&mut self) -> Option<FieldValue> {
        if self.cursor.is_empty() {
            return None;
        }
        self.cursor.item()
    }
}
