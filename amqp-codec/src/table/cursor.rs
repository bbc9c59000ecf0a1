//! Reading entries and values out of a table's or array's validated encoding, as owned values
//! that share it.

use bytes::Bytes;

use super::{FieldArray, FieldTable, FieldValue};
use crate::read::table::{ValueRef, entry, find_entry, item};
use crate::strings::{LongStr, ShortStr};

/// Reads entries and values from a validated encoding with the reading layer's parsers
/// ([`crate::read::table`]), sharing the encoding for strings and nested containers. A read that
/// fails (it cannot, on validated bytes) ends the iteration instead of panicking.
pub(super) struct Cursor<'a> {
    /// The whole encoding, so that pieces can be handed out as shared `Bytes`.
    pub(super) raw: &'a Bytes,
    /// Where the next read starts.
    pub(super) pos: usize,
}

impl<'a> Cursor<'a> {
    #[inline]
    pub(super) fn is_empty(&self) -> bool {
        self.pos >= self.raw.len()
    }

    /// What is left to read.
    #[inline]
    fn rest(&self) -> &'a [u8] {
        self.raw.get(self.pos..).unwrap_or_default()
    }

    /// Moves past what was read, `rest` being what is left.
    #[inline]
    fn read_up_to(&mut self, rest: &[u8]) {
        self.pos = self.raw.len() - rest.len();
    }

    /// A table's next entry.
    #[inline]
    pub(super) fn entry(&mut self) -> Option<(ShortStr, FieldValue)> {
        let (rest, (key, value)) = entry(self.rest()).ok()?;
        self.read_up_to(rest);
        Some((ShortStr::from_wire(self.share(key)), self.owned(value)))
    }

    /// The value of the first entry from here named `key`; the entries before it are
    /// stepped over, not read.
    #[inline]
    pub(super) fn find(&mut self, key: &[u8]) -> Option<FieldValue> {
        let (rest, value) = find_entry(self.rest(), key).ok()??;
        self.read_up_to(rest);
        Some(self.owned(value))
    }

    /// An array's next value.
    #[inline]
    pub(super) fn item(&mut self) -> Option<FieldValue> {
        let (rest, value) = item(self.rest()).ok()?;
        self.read_up_to(rest);
        Some(self.owned(value))
    }

    /// `slice`, read from the encoding, as a shared slice of it.
    // By offset, not `Bytes::slice_ref`, whose checks that `slice` is inside the encoding (it
    // is: it was read from it) cost 10 instructions per string.
    #[inline]
    fn share(&self, slice: &[u8]) -> Bytes {
        let start = (slice.as_ptr() as usize).wrapping_sub(self.raw.as_ptr() as usize);
        self.raw.slice(start..start + slice.len())
    }

    /// `value` as an owned value sharing the encoding. Nested tables and arrays are wrapped as
    /// they are, not checked again: the whole encoding was.
    #[inline]
    fn owned(&self, value: ValueRef<'_>) -> FieldValue {
        let share = |slice| self.share(slice);
        match value {
            ValueRef::Bool(v) => FieldValue::Bool(v),
            ValueRef::I8(v) => FieldValue::I8(v),
            ValueRef::U8(v) => FieldValue::U8(v),
            ValueRef::I16(v) => FieldValue::I16(v),
            ValueRef::U16(v) => FieldValue::U16(v),
            ValueRef::I32(v) => FieldValue::I32(v),
            ValueRef::U32(v) => FieldValue::U32(v),
            ValueRef::I64(v) => FieldValue::I64(v),
            ValueRef::F32(v) => FieldValue::F32(v),
            ValueRef::F64(v) => FieldValue::F64(v),
            ValueRef::Decimal(v) => FieldValue::Decimal(v),
            ValueRef::LongStr(s) => FieldValue::LongStr(LongStr::from_wire(share(s))),
            ValueRef::Array(a) => FieldValue::Array(FieldArray { raw: share(a) }),
            ValueRef::Timestamp(v) => FieldValue::Timestamp(v),
            ValueRef::Table(t) => FieldValue::Table(FieldTable { raw: share(t) }),
            ValueRef::Void => FieldValue::Void,
            ValueRef::ByteArray(b) => FieldValue::ByteArray(share(b)),
        }
    }
}
