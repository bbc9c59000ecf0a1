//! Reading entries and values out of a table's or array's validated encoding.

use bytes::Bytes;

use super::{Decimal, FieldArray, FieldTable, FieldValue};
use crate::strings::{LongStr, ShortStr};

/// Reads entries and values from a validated encoding, sharing it for strings and nested
/// containers.
///
/// Hand-written over the slice, like the validator (`scan.rs`): iterating a table read every
/// field through a nom parser before, which was most of the 20-entry table benchmark. A read that
/// fails (it cannot, on validated bytes) ends the iteration instead of panicking.
pub(super) struct Cursor<'a> {
    /// The whole encoding, so that pieces can be handed out as shared `Bytes`.
    pub(super) raw: &'a Bytes,
    /// Where the next read starts.
    pub(super) pos: usize,
}

impl Cursor<'_> {
    #[inline]
    pub(super) fn is_empty(&self) -> bool {
        self.pos >= self.raw.len()
    }

    /// The next `N` bytes.
    #[inline]
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let bytes = *self.raw.get(self.pos..)?.first_chunk::<N>()?;
        self.pos += N;
        Some(bytes)
    }

    #[inline]
    pub(super) fn octet(&mut self) -> Option<u8> {
        self.array::<1>().map(|[b]| b)
    }

    /// The next `len` bytes, shared.
    #[inline]
    fn share(&mut self, len: usize) -> Option<Bytes> {
        let end = self
            .pos
            .checked_add(len)
            .filter(|&end| end <= self.raw.len())?;
        let bytes = self.raw.slice(self.pos..end);
        self.pos = end;
        Some(bytes)
    }

    #[inline]
    pub(super) fn short_str(&mut self) -> Option<ShortStr> {
        let len = self.octet()?;
        self.share(usize::from(len)).map(ShortStr::from_wire)
    }

    #[inline]
    fn long_bytes(&mut self) -> Option<Bytes> {
        let len = u32::from_be_bytes(self.array()?);
        self.share(len as usize)
    }

    /// One value of type `letter`. Only for bytes already checked by [`check_table`]: nested
    /// tables and arrays are wrapped as they are, not checked again.
    #[inline]
    pub(super) fn value(&mut self, letter: u8) -> Option<FieldValue> {
        Some(match letter {
            b't' => FieldValue::Bool(self.octet()? != 0),
            b'b' => FieldValue::I8(i8::from_be_bytes(self.array()?)),
            b'B' => FieldValue::U8(self.octet()?),
            b's' => FieldValue::I16(i16::from_be_bytes(self.array()?)),
            b'u' => FieldValue::U16(u16::from_be_bytes(self.array()?)),
            b'I' => FieldValue::I32(i32::from_be_bytes(self.array()?)),
            b'i' => FieldValue::U32(u32::from_be_bytes(self.array()?)),
            b'l' => FieldValue::I64(i64::from_be_bytes(self.array()?)),
            b'f' => FieldValue::F32(f32::from_be_bytes(self.array()?)),
            b'd' => FieldValue::F64(f64::from_be_bytes(self.array()?)),
            b'D' => FieldValue::Decimal(Decimal {
                scale: self.octet()?,
                value: u32::from_be_bytes(self.array()?),
            }),
            b'S' => FieldValue::LongStr(LongStr::from_wire(self.long_bytes()?)),
            b'A' => FieldValue::Array(FieldArray {
                raw: self.long_bytes()?,
            }),
            b'T' => FieldValue::Timestamp(u64::from_be_bytes(self.array()?)),
            b'F' => FieldValue::Table(FieldTable {
                raw: self.long_bytes()?,
            }),
            b'V' => FieldValue::Void,
            b'x' => FieldValue::ByteArray(self.long_bytes()?),
            _ => return None,
        })
    }
}
