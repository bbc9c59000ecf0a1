//! Method arguments, read in order by the generated decoders (see `methods/mod.rs`), each field
//! with one of the primitives. Consecutive `bit` fields share an octet, LSB first.
//!
//! The reader hands out strings and tables as [`Bytes`] slices of the payload: a method is an
//! owned value, kept after its frame.

use bytes::Bytes;

use super::{Fail, PResult, What, failure, long, long_bytes, longlong, octet, short, short_str};
use crate::error::FieldError;
use crate::strings::{LongStr, ShortStr};
use crate::table::FieldTable;

/// Reads fields in order from one payload.
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

    /// Runs one parser on what is left; any field read ends a run of bits.
    #[inline]
    fn parse<T>(
        &mut self,
        parser: impl FnOnce(&'a [u8]) -> PResult<'a, T>,
    ) -> Result<T, FieldError> {
        self.bits_used = 0;
        let (rest, value) = parser(self.rest).map_err(|err| FieldError::from(failure(err)))?;
        self.rest = rest;
        Ok(value)
    }

    pub(crate) fn octet(&mut self) -> Result<u8, FieldError> {
        self.parse(octet)
    }

    pub(crate) fn short(&mut self) -> Result<u16, FieldError> {
        self.parse(short)
    }

    pub(crate) fn long(&mut self) -> Result<u32, FieldError> {
        self.parse(long)
    }

    pub(crate) fn longlong(&mut self) -> Result<u64, FieldError> {
        self.parse(longlong)
    }

    pub(crate) fn bit(&mut self) -> Result<bool, FieldError> {
        if self.bits_used == 0 || self.bits_used == 8 {
            let (rest, octet) =
                octet(self.rest).map_err(|_| FieldError::from(Fail::Truncated(What::Bit)))?;
            self.rest = rest;
            self.bit_octet = octet;
            self.bits_used = 0;
        }
        let bit = self.bit_octet & (1 << self.bits_used) != 0;
        self.bits_used += 1;
        Ok(bit)
    }

    /// `slice` (a part of the payload) as shared bytes.
    fn share(&self, slice: &[u8]) -> Bytes {
        self.payload.slice_ref(slice)
    }

    pub(crate) fn short_str(&mut self) -> Result<ShortStr, FieldError> {
        let raw = self.parse(short_str)?;
        Ok(ShortStr::from_wire(self.share(raw)))
    }

    pub(crate) fn long_str(&mut self) -> Result<LongStr, FieldError> {
        let raw = self.parse(long_bytes(What::LongString))?;
        Ok(LongStr::from_wire(self.share(raw)))
    }

    pub(crate) fn table(&mut self) -> Result<FieldTable, FieldError> {
        let raw = self.parse(long_bytes(What::FieldTable))?;
        super::table::check_table(raw)?;
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

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;
    use crate::wire::{BufSink, LenCounter, Sink};

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
        assert_eq!(
            Reader::new(&empty).bit(),
            Err(FieldError::Truncated { what: "bit" })
        );
    }

    #[test]
    fn decoded_strings_share_the_payload() {
        let payload = Bytes::from_static(&[3, b'a', b'b', b'c']);
        let s = Reader::new(&payload).short_str().expect("valid");
        assert_eq!(s, "abc");
        assert_eq!(s.as_bytes().as_ptr(), payload[1..].as_ptr());
    }
}
