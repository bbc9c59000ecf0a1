//! Primitive field readers (nom parsers over the payload) and writers, with AMQP's bit packing.
//!
//! Every decoded string, table or body is a [`Bytes`] slice of the frame's payload, so reading
//! never copies and never allocates.

use bytes::{Bytes, BytesMut};
use nom::Parser;
use nom::multi::length_data;
use nom::number::complete::{be_u8, be_u16, be_u32, be_u64};

use crate::error::FieldError;
use crate::strings::{LongStr, ShortStr};
use crate::table::FieldTable;

type NomResult<'a, T> = nom::IResult<&'a [u8], T, nom::error::Error<&'a [u8]>>;

/// Reads fields in order from one payload. Consecutive `bit` fields share an octet, LSB first.
pub(crate) struct Reader<'a> {
    /// The whole payload, so that sub-slices can be handed out as shared `Bytes`.
    payload: &'a Bytes,
    /// What is left to read.
    rest: &'a [u8],
    /// The octet holding the current run of bits.
    bit_octet: u8,
    /// Bits of `bit_octet` already used; 0 or 8 means the next bit starts a new octet.
    bits_used: u8,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(payload: &'a Bytes) -> Self {
        Self {
            payload,
            rest: payload,
            bit_octet: 0,
            bits_used: 0,
        }
    }

    /// Runs one nom parser on what is left; any field read ends a run of bits.
    fn parse<T>(
        &mut self,
        what: &'static str,
        mut parser: impl FnMut(&'a [u8]) -> NomResult<'a, T>,
    ) -> Result<T, FieldError> {
        self.bits_used = 0;
        let (rest, value) = parser(self.rest).map_err(|_| FieldError::Truncated { what })?;
        self.rest = rest;
        Ok(value)
    }

    pub(crate) fn octet(&mut self) -> Result<u8, FieldError> {
        self.parse("octet", be_u8)
    }

    pub(crate) fn short(&mut self) -> Result<u16, FieldError> {
        self.parse("short", be_u16)
    }

    pub(crate) fn long(&mut self) -> Result<u32, FieldError> {
        self.parse("long", be_u32)
    }

    pub(crate) fn longlong(&mut self) -> Result<u64, FieldError> {
        self.parse("longlong", be_u64)
    }

    pub(crate) fn bit(&mut self) -> Result<bool, FieldError> {
        if self.bits_used == 0 || self.bits_used == 8 {
            let (rest, octet) =
                be_u8(self.rest).map_err(|_: nom::Err<nom::error::Error<&[u8]>>| {
                    FieldError::Truncated { what: "bit" }
                })?;
            self.rest = rest;
            self.bit_octet = octet;
            self.bits_used = 0;
        }
        let bit = self.bit_octet & (1 << self.bits_used) != 0;
        self.bits_used += 1;
        Ok(bit)
    }

    /// A reader over `slice`, a part of this reader's payload (for nested tables).
    pub(crate) fn sub(&self, slice: &'a [u8]) -> Reader<'a> {
        Reader {
            payload: self.payload,
            rest: slice,
            bit_octet: 0,
            bits_used: 0,
        }
    }

    /// `slice` (a part of the payload) as shared bytes.
    pub(crate) fn share(&self, slice: &[u8]) -> Bytes {
        self.payload.slice_ref(slice)
    }

    /// The contents of a short string, as a borrowed slice.
    fn short_slice(&mut self) -> Result<&'a [u8], FieldError> {
        self.parse("short string", |i| length_data(be_u8).parse(i))
    }

    /// The contents of a 32-bit-length-prefixed value, as a borrowed slice.
    pub(crate) fn long_slice(&mut self, what: &'static str) -> Result<&'a [u8], FieldError> {
        self.parse(what, |i| length_data(be_u32).parse(i))
    }

    /// The bytes of a short string, as a slice of the payload.
    pub(crate) fn short_bytes(&mut self) -> Result<Bytes, FieldError> {
        let raw = self.short_slice()?;
        Ok(self.share(raw))
    }

    pub(crate) fn short_str(&mut self) -> Result<ShortStr, FieldError> {
        self.short_bytes().map(ShortStr::from_wire)
    }

    /// The bytes of a long string (or table, array, byte array), as a slice of the payload.
    pub(crate) fn long_bytes(&mut self, what: &'static str) -> Result<Bytes, FieldError> {
        let raw = self.long_slice(what)?;
        Ok(self.share(raw))
    }

    pub(crate) fn long_str(&mut self) -> Result<LongStr, FieldError> {
        self.long_bytes("long string").map(LongStr::from_wire)
    }

    pub(crate) fn table(&mut self) -> Result<FieldTable, FieldError> {
        let raw = self.long_slice("field table")?;
        crate::scan::check_table(raw)?;
        Ok(FieldTable::from_validated(self.share(raw)))
    }

    /// Fails if anything is left: a payload must hold exactly its fields.
    pub(crate) fn finish(self) -> Result<(), FieldError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(FieldError::TrailingBytes {
                count: self.rest.len(),
            })
        }
    }
}

/// Where encoded fields go: either a buffer, or a counter that sizes a frame before it is written
/// (so length prefixes are known up front and nothing is back-patched).
pub(crate) trait Sink {
    fn octet(&mut self, v: u8);
    fn short(&mut self, v: u16);
    fn long(&mut self, v: u32);
    fn longlong(&mut self, v: u64);
    fn bytes(&mut self, v: &[u8]);
    fn bit(&mut self, v: bool);

    fn short_str(&mut self, v: &ShortStr) {
        // ShortStr guarantees len <= 255.
        self.octet(v.len() as u8);
        self.bytes(v);
    }

    fn long_str(&mut self, v: &[u8]) {
        // Every long value type guarantees len < 2^32 at construction.
        self.long(v.len() as u32);
        self.bytes(v);
    }
}

/// Counts the octets a sequence of fields takes, bit packing included.
#[derive(Default)]
pub(crate) struct LenCounter {
    pub(crate) len: usize,
    bits_used: u8,
}

impl Sink for LenCounter {
    fn octet(&mut self, _: u8) {
        self.bits_used = 0;
        self.len += 1;
    }
    fn short(&mut self, _: u16) {
        self.bits_used = 0;
        self.len += 2;
    }
    fn long(&mut self, _: u32) {
        self.bits_used = 0;
        self.len += 4;
    }
    fn longlong(&mut self, _: u64) {
        self.bits_used = 0;
        self.len += 8;
    }
    fn bytes(&mut self, v: &[u8]) {
        self.bits_used = 0;
        self.len += v.len();
    }
    fn bit(&mut self, _: bool) {
        if self.bits_used == 0 || self.bits_used == 8 {
            self.len += 1;
            self.bits_used = 0;
        }
        self.bits_used += 1;
    }
}

/// Writes fields into a buffer, packing consecutive bits into one octet, LSB first.
pub(crate) struct BufSink<'a> {
    buf: &'a mut BytesMut,
    /// Index in `buf` of the octet holding the current run of bits.
    bit_index: usize,
    /// Bits of that octet already used; 0 or 8 means the next bit starts a new octet.
    bits_used: u8,
}

impl<'a> BufSink<'a> {
    pub(crate) fn new(buf: &'a mut BytesMut) -> Self {
        Self {
            buf,
            bit_index: 0,
            bits_used: 0,
        }
    }
}

// Every write goes through `BytesMut::extend_from_slice`, which is `#[inline]` (the `BufMut`
// methods of `BytesMut` are not: each `put_u16` was a call and a `memcpy` call for two bytes).
impl Sink for BufSink<'_> {
    fn octet(&mut self, v: u8) {
        self.bits_used = 0;
        self.buf.extend_from_slice(&[v]);
    }
    fn short(&mut self, v: u16) {
        self.bits_used = 0;
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    fn long(&mut self, v: u32) {
        self.bits_used = 0;
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    fn longlong(&mut self, v: u64) {
        self.bits_used = 0;
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    fn bytes(&mut self, v: &[u8]) {
        self.bits_used = 0;
        self.buf.extend_from_slice(v);
    }
    fn bit(&mut self, v: bool) {
        if self.bits_used == 0 || self.bits_used == 8 {
            self.bit_index = self.buf.len();
            self.buf.extend_from_slice(&[0]);
            self.bits_used = 0;
        }
        if v {
            self.buf[self.bit_index] |= 1 << self.bits_used;
        }
        self.bits_used += 1;
    }
}

/// A method argument type: how it is read, written, and named in the spec.
pub(crate) trait Field: Sized {
    /// The spec's type name (`octet`, `short`, `long`, `longlong`, `bit`, `shortstr`,
    /// `longstr`, `table`), used by the method table's metadata.
    const SPEC_TYPE: &'static str;
    fn read(r: &mut Reader<'_>) -> Result<Self, FieldError>;
    fn write<S: Sink>(&self, s: &mut S);
}

macro_rules! numeric_field {
    ($ty:ty, $spec:literal, $read:ident, $write:ident) => {
        impl Field for $ty {
            const SPEC_TYPE: &'static str = $spec;
            fn read(r: &mut Reader<'_>) -> Result<Self, FieldError> {
                r.$read()
            }
            fn write<S: Sink>(&self, s: &mut S) {
                s.$write(*self)
            }
        }
    };
}

numeric_field!(u8, "octet", octet, octet);
numeric_field!(u16, "short", short, short);
numeric_field!(u32, "long", long, long);
numeric_field!(u64, "longlong", longlong, longlong);
numeric_field!(bool, "bit", bit, bit);

impl Field for ShortStr {
    const SPEC_TYPE: &'static str = "shortstr";
    fn read(r: &mut Reader<'_>) -> Result<Self, FieldError> {
        r.short_str()
    }
    fn write<S: Sink>(&self, s: &mut S) {
        s.short_str(self)
    }
}

impl Field for LongStr {
    const SPEC_TYPE: &'static str = "longstr";
    fn read(r: &mut Reader<'_>) -> Result<Self, FieldError> {
        r.long_str()
    }
    fn write<S: Sink>(&self, s: &mut S) {
        s.long_str(self)
    }
}

impl Field for FieldTable {
    const SPEC_TYPE: &'static str = "table";
    fn read(r: &mut Reader<'_>) -> Result<Self, FieldError> {
        r.table()
    }
    fn write<S: Sink>(&self, s: &mut S) {
        s.long_str(self.as_raw())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_pack_lsb_first_and_spill_after_eight() {
        let bits = [
            true, false, true, true, false, false, false, false, true, true,
        ];
        let mut buf = BytesMut::new();
        let mut sink = BufSink::new(&mut buf);
        for b in bits {
            sink.bit(b);
        }
        sink.short(7);
        sink.bit(true);
        assert_eq!(&buf[..], &[0b0000_1101, 0b0000_0011, 0, 7, 1]);

        let mut counter = LenCounter::default();
        for b in bits {
            counter.bit(b);
        }
        counter.short(7);
        counter.bit(true);
        assert_eq!(counter.len, buf.len());

        let payload = buf.freeze();
        let mut r = Reader::new(&payload);
        for b in bits {
            assert_eq!(r.bit(), Ok(b));
        }
        assert_eq!(r.short(), Ok(7));
        assert_eq!(r.bit(), Ok(true));
        assert_eq!(r.finish(), Ok(()));
    }

    #[test]
    fn truncated_fields_are_errors_not_panics() {
        let payload = Bytes::from_static(&[5, b'a', b'b']);
        let mut r = Reader::new(&payload);
        assert_eq!(
            r.short_str(),
            Err(FieldError::Truncated {
                what: "short string"
            })
        );
        let payload = Bytes::from_static(&[0, 0, 0]);
        assert!(Reader::new(&payload).long().is_err());
        assert!(Reader::new(&payload).longlong().is_err());
        let empty = Bytes::new();
        assert!(Reader::new(&empty).bit().is_err());
    }

    #[test]
    fn decoded_strings_share_the_payload() {
        let payload = Bytes::from_static(&[3, b'a', b'b', b'c']);
        let s = Reader::new(&payload).short_str().expect("valid");
        assert_eq!(s, "abc");
        assert_eq!(s.as_bytes().as_ptr(), payload[1..].as_ptr());
    }
}
