//! Field writers, with AMQP's bit packing, and the [`Field`] trait that ties each method
//! argument type to its reader (in [`crate::read::args`]) and its writer.

use bytes::BytesMut;

use crate::error::FieldError;
use crate::read::args::Reader;
use crate::strings::{LongStr, ShortStr};
use crate::table::FieldTable;

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
