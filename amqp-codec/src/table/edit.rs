//! Tables as an application builds and reads them: from literals and iterators, insert, get
//! and remove by key, and a clear conversion from every Rust value an application has.
//!
//! A table stays its wire encoding; an edit re-encodes the entries (tables are small: the
//! arguments of a declaration, a message's headers), so reading and sending one still copies
//! nothing.
//!
//! Conversions to [`FieldValue`], each to the type RabbitMQ reads it as:
//!
//! | Rust | field value |
//! |---|---|
//! | `bool`, `i8`..`i64`, `u8`, `u16`, `u32`, `f32`, `f64` | the same-sized type (`t b s I l B u i f d`) |
//! | `u64`, `usize` (`TryFrom`) | `l` (i64), an error above `i64::MAX`: AMQP has no unsigned 64-bit type |
//! | `&str`, `String` | `S`, a long string |
//! | `Vec<u8>`, `&[u8]`, `Bytes` | `x`, a byte array (never a string) |
//! | `SystemTime` (`TryFrom`) | `T`, seconds since the Unix epoch (an error before it) |
//! | `FieldTable`, `BTreeMap<String, V>`, `HashMap<String, V>` (`TryFrom`) | `F`, a nested table |
//! | `FieldArray`, `Vec<FieldValue>` | `A`, an array |
//! | `Option<V>` | `V` itself, or `V` void when `None` |
//!
//! ```
//! use amqp_codec::{FieldTable, FieldValue};
//! let mut args = FieldTable::from([
//!     ("x-max-length", FieldValue::from(10_000)),
//!     ("x-queue-type", FieldValue::from("quorum")),
//! ]);
//! args.insert("x-message-ttl", 60_000);
//! assert_eq!(args.get("x-max-length"), Some(FieldValue::I32(10_000)));
//! assert_eq!(args.remove("x-queue-type"), Some(FieldValue::from("quorum")));
//! assert_eq!(args.len(), 2);
//! ```

use std::collections::{BTreeMap, HashMap};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::{FieldArray, FieldTable, FieldValue, TableBuilder};
use crate::error::EncodeError;
use crate::strings::ShortStr;

impl FieldTable {
    /// Number of entries (duplicate keys counted each time).
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// True if an entry is named `key`.
    pub fn contains_key(&self, key: &str) -> bool {
        self.iter().any(|(k, _)| k.as_bytes() == key.as_bytes())
    }

    /// Sets `key` to `value`: the first entry of that name is replaced in place (later ones
    /// are dropped), or the entry is appended. Returns the value it replaced.
    ///
    /// # Panics
    ///
    /// If `key` is longer than 255 bytes, which no AMQP table key can be. Keys are usually
    /// literals; for keys from elsewhere, use [`try_insert`](Self::try_insert).
    pub fn insert(&mut self, key: &str, value: impl Into<FieldValue>) -> Option<FieldValue> {
        match self.try_insert(key, value) {
            Ok(previous) => previous,
            Err(err) => panic!("table key {key:?}: {err}"),
        }
    }

    /// [`insert`](Self::insert), with an error for a key longer than 255 bytes or a value
    /// longer than 4 GiB (the table is then unchanged).
    pub fn try_insert(
        &mut self,
        key: &str,
        value: impl Into<FieldValue>,
    ) -> Result<Option<FieldValue>, EncodeError> {
        if key.len() > ShortStr::MAX_LEN {
            return Err(EncodeError::ShortStrTooLong { len: key.len() });
        }
        let value = value.into();
        let mut builder = TableBuilder::default();
        let mut previous = None;
        for (k, v) in self.iter() {
            if k.as_bytes() != key.as_bytes() {
                builder.push_bytes(k.as_bytes(), &v);
            } else if previous.is_none() {
                builder.push_bytes(key.as_bytes(), &value);
                previous = Some(v);
            }
        }
        if previous.is_none() {
            builder.push_bytes(key.as_bytes(), &value);
        }
        *self = builder.build()?;
        Ok(previous)
    }

    /// Removes every entry named `key`; returns the value of the first.
    pub fn remove(&mut self, key: &str) -> Option<FieldValue> {
        let mut builder = TableBuilder::default();
        let mut removed = None;
        for (k, v) in self.iter() {
            if k.as_bytes() == key.as_bytes() {
                removed.get_or_insert(v);
            } else {
                builder.push_bytes(k.as_bytes(), &v);
            }
        }
        if removed.is_some() {
            // Fewer entries than before: no limit can be newly exceeded.
            *self = builder.build().unwrap_or_default();
        }
        removed
    }
}

/// A table from literal entries: `FieldTable::from([("x-max-length", 10.into())])`. Later
/// entries with the same key replace earlier ones.
///
/// # Panics
///
/// If a key is longer than 255 bytes (keys written as literals never are).
/// A [`FieldTable`] from `key => value` pairs, each value converted by `Into<FieldValue>`, so
/// kinds mix freely (see the conversions above); entries keep their order.
///
/// ```
/// use amqp_codec::{field_table, FieldValue};
/// let args = field_table! {
///     "x-max-length" => 10_000,
///     "x-queue-type" => "quorum",
///     "x-dead-letter-exchange" => "",
/// };
/// assert_eq!(args.get("x-max-length"), Some(FieldValue::I32(10_000)));
/// assert_eq!(args.len(), 3);
/// assert!(field_table! {}.is_empty());
/// ```
///
/// # Panics
///
/// If a key is longer than 255 bytes, which no AMQP table key can be (keys here are written in
/// the program; build tables from other keys with [`FieldTable::try_insert`]).
#[macro_export]
macro_rules! field_table {
    ($($key:expr => $value:expr),* $(,)?) => {
        $crate::FieldTable::builder()
            $(.insert($key, $value))*
            .build()
            .expect("field_table!: a key longer than 255 bytes")
    };
}

impl<K: AsRef<str>, V: Into<FieldValue>, const N: usize> From<[(K, V); N]> for FieldTable {
    fn from(entries: [(K, V); N]) -> Self {
        let mut table = FieldTable::new();
        for (k, v) in entries {
            table.insert(k.as_ref(), v);
        }
        table
    }
}

/// A table from a map; an error if a key is longer than 255 bytes.
impl<K: AsRef<str>, V: Into<FieldValue>> TryFrom<BTreeMap<K, V>> for FieldTable {
    type Error = EncodeError;
    fn try_from(map: BTreeMap<K, V>) -> Result<Self, EncodeError> {
        table_of(map)
    }
}

/// A table from a map (in the map's order); an error if a key is longer than 255 bytes.
impl<K: AsRef<str>, V: Into<FieldValue>, S> TryFrom<HashMap<K, V, S>> for FieldTable {
    type Error = EncodeError;
    fn try_from(map: HashMap<K, V, S>) -> Result<Self, EncodeError> {
        table_of(map)
    }
}

fn table_of<K: AsRef<str>, V: Into<FieldValue>>(
    entries: impl IntoIterator<Item = (K, V)>,
) -> Result<FieldTable, EncodeError> {
    entries
        .into_iter()
        .fold(FieldTable::builder(), |b, (k, v)| b.insert(k.as_ref(), v))
        .build()
}

impl FieldValue {
    /// The value as a bool, when it is one.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Self::Bool(v) => Some(v),
            _ => None,
        }
    }

    /// The value as an f64, when it is any number (integers and floats alike).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Self::F32(v) => Some(f64::from(v)),
            Self::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    /// The bytes of a long string or a byte array.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Self::LongStr(s) => Some(s.as_bytes()),
            Self::ByteArray(b) => Some(b),
            _ => None,
        }
    }

    /// The nested table, when it is one.
    pub fn as_table(&self) -> Option<&FieldTable> {
        match self {
            Self::Table(t) => Some(t),
            _ => None,
        }
    }

    /// The array, when it is one.
    pub fn as_array(&self) -> Option<&FieldArray> {
        match self {
            Self::Array(a) => Some(a),
            _ => None,
        }
    }

    /// The timestamp as a time, when it is one.
    pub fn as_timestamp(&self) -> Option<SystemTime> {
        match *self {
            Self::Timestamp(secs) => UNIX_EPOCH.checked_add(std::time::Duration::from_secs(secs)),
            _ => None,
        }
    }
}

/// Why a Rust value has no field value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValueError {
    /// An unsigned integer above `i64::MAX`: AMQP's 64-bit integer is signed.
    #[error("{0} does not fit AMQP's signed 64-bit integer")]
    TooLarge(u64),
    /// A time before the Unix epoch: AMQP timestamps count seconds from it.
    #[error("a time before 1970 has no AMQP timestamp")]
    BeforeEpoch,
}

impl TryFrom<u64> for FieldValue {
    type Error = ValueError;
    fn try_from(v: u64) -> Result<Self, ValueError> {
        i64::try_from(v)
            .map(Self::I64)
            .map_err(|_| ValueError::TooLarge(v))
    }
}

impl TryFrom<usize> for FieldValue {
    type Error = ValueError;
    fn try_from(v: usize) -> Result<Self, ValueError> {
        Self::try_from(v as u64)
    }
}

impl TryFrom<SystemTime> for FieldValue {
    type Error = ValueError;
    fn try_from(t: SystemTime) -> Result<Self, ValueError> {
        t.duration_since(UNIX_EPOCH)
            .map(|d| Self::Timestamp(d.as_secs()))
            .map_err(|_| ValueError::BeforeEpoch)
    }
}

/// Bytes are a byte array (`x`), never a string.
impl From<Vec<u8>> for FieldValue {
    fn from(v: Vec<u8>) -> Self {
        Self::ByteArray(Bytes::from(v))
    }
}

/// Bytes are a byte array (`x`), never a string.
impl From<&[u8]> for FieldValue {
    fn from(v: &[u8]) -> Self {
        Self::ByteArray(Bytes::copy_from_slice(v))
    }
}

/// Bytes are a byte array (`x`), never a string.
impl From<Bytes> for FieldValue {
    fn from(v: Bytes) -> Self {
        Self::ByteArray(v)
    }
}

/// A list of values is an array (`A`).
impl From<Vec<FieldValue>> for FieldValue {
    fn from(v: Vec<FieldValue>) -> Self {
        Self::Array(v.into_iter().collect())
    }
}

/// `None` is void (`V`).
impl<V: Into<FieldValue>> From<Option<V>> for FieldValue {
    fn from(v: Option<V>) -> Self {
        v.map_or(Self::Void, Into::into)
    }
}

/// A map is a nested table (`F`); an error if a key is longer than 255 bytes.
impl<K: AsRef<str>, V: Into<FieldValue>> TryFrom<BTreeMap<K, V>> for FieldValue {
    type Error = EncodeError;
    fn try_from(map: BTreeMap<K, V>) -> Result<Self, EncodeError> {
        FieldTable::try_from(map).map(Self::Table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_replaces_in_place_and_remove_drops_every_copy() {
        let mut t = FieldTable::from([("a", 1i32), ("b", 2), ("c", 3)]);
        assert_eq!(t.insert("b", 20i32), Some(FieldValue::I32(2)));
        let keys: Vec<String> = t.iter().map(|(k, _)| k.to_string()).collect();
        assert_eq!(keys, ["a", "b", "c"], "order kept");
        assert_eq!(t.insert("d", "x"), None);
        assert_eq!(t.len(), 4);
        assert_eq!(t.remove("a"), Some(FieldValue::I32(1)));
        assert_eq!(t.remove("a"), None);
        assert!(!t.contains_key("a") && t.contains_key("d"));
        let long = "k".repeat(256);
        assert_eq!(
            t.try_insert(&long, 1i32),
            Err(EncodeError::ShortStrTooLong { len: 256 })
        );
        assert_eq!(t.len(), 3, "unchanged by the failed insert");
    }

    #[test]
    fn every_rust_value_has_a_clear_conversion() {
        assert_eq!(
            FieldValue::from(vec![1u8, 2]),
            FieldValue::ByteArray(Bytes::from_static(&[1, 2]))
        );
        assert_eq!(FieldValue::try_from(7u64), Ok(FieldValue::I64(7)));
        assert_eq!(
            FieldValue::try_from(u64::MAX),
            Err(ValueError::TooLarge(u64::MAX))
        );
        let t = UNIX_EPOCH + std::time::Duration::from_secs(42);
        let v = FieldValue::try_from(t).expect("after the epoch");
        assert_eq!(
            (v.clone(), v.as_timestamp()),
            (FieldValue::Timestamp(42), Some(t))
        );
        assert_eq!(FieldValue::from(None::<i32>), FieldValue::Void);
        let nested = FieldValue::try_from(BTreeMap::from([("n", 1i32)])).expect("short keys");
        assert_eq!(
            nested.as_table().and_then(|t| t.get("n")),
            Some(FieldValue::I32(1))
        );
        let list = FieldValue::from(vec![FieldValue::from(1i32), FieldValue::from("two")]);
        assert_eq!(list.as_array().map(|a| a.iter().count()), Some(2));
        assert_eq!(FieldValue::from(2.5f32).as_f64(), Some(2.5));
        assert_eq!(FieldValue::from(true).as_bool(), Some(true));
    }
}
