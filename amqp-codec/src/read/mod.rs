//! The reading layer: every byte the codec reads from a peer is read here, by nom parsers over
//! byte slices. Nothing here allocates, copies or takes a reference count: parsers return
//! borrowed slices, and the callers that hand out owned values ([`bytes::Bytes`] slices of the
//! read buffer) make them from those.
//!
//! | module | reads |
//! |---|---|
//! | this file | the primitives: octet, short, long, longlong, short and long strings |
//! | [`envelope`] | frame envelopes (type, channel, size, frame-end) and the protocol header |
//! | [`args`] | method arguments, for the generated decoders (consecutive bits share an octet) |
//! | [`deliver`] | the arguments of `basic.deliver`, `basic.ack`, `basic.nack` (once per message) |
//! | [`properties`] | a content header's property flags and properties |
//! | [`table`] | field tables and arrays: validation at any depth without recursion, and values |
//!
//! Every reader is a nom parser, `fn(&[u8]) -> IResult<&[u8], T, Fail>`, composed with nom's
//! combinators (tuples, `map`, `parse_complete`) and with one another. The leaves they are built
//! from, in this file (octet, short, long, longlong, `take`, short and long strings), are our
//! own, with nom's signature: nom 8.0's (`be_u8`..`be_u64`, `length_data`, `take`) each call
//! `<&[u8] as nom::Input>::take_from`, which nom does not mark `#[inline]`, so every field read
//! was a call into nom. Measured with `benches/callgrind` (per-frame decoder and assembler,
//! instructions per frame, or per table), nom's leaves against these, everything else equal:
//!
//! | workload | nom's leaves | these |
//! |---|---:|---:|
//! | minimal-64B-whole | 917 | 645 |
//! | rich-64B-whole | 1140 | 708 |
//! | table (validate and read 20 entries) | 13802 | 7728 |
//!
//! One loop is hand-written besides (the table scan's step over fixed-size values, see
//! [`table`]), with its numbers beside it.
//!
//! Failures are a two-byte [`Fail`] (what ran out, or which letter or flag is unknown), turned
//! into the public [`FieldError`] only at the edge, on the error path.

pub(crate) mod args;
pub(crate) mod deliver;
pub(crate) mod envelope;
pub(crate) mod properties;
pub(crate) mod table;

use nom::error::{ErrorKind, ParseError};

use crate::error::FieldError;

/// A parser's result: what is left of the input and the value, or why it failed.
pub(crate) type PResult<'a, T> = nom::IResult<&'a [u8], T, Fail>;

/// Why a read failed: a [`FieldError`] in two bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fail {
    /// The payload ended inside a field of this kind.
    Truncated(What),
    /// An unknown type letter in a table or array.
    UnknownType(u8),
    /// Content-header property flags that basic does not define.
    UnknownProperties(u16),
}

/// The kinds of field a read may find truncated, as [`FieldError::Truncated`] names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum What {
    Octet,
    Short,
    Long,
    LongLong,
    Bit,
    ShortString,
    LongString,
    ByteArray,
    FieldArray,
    FieldTable,
}

impl What {
    /// The fixed-size field of `len` octets.
    pub(crate) const fn of_len(len: u8) -> Self {
        match len {
            1 => Self::Octet,
            2 => Self::Short,
            4 => Self::Long,
            _ => Self::LongLong,
        }
    }

    const fn name(self) -> &'static str {
        match self {
            Self::Octet => "octet",
            Self::Short => "short",
            Self::Long => "long",
            Self::LongLong => "longlong",
            Self::Bit => "bit",
            Self::ShortString => "short string",
            Self::LongString => "long string",
            Self::ByteArray => "byte array",
            Self::FieldArray => "field array",
            Self::FieldTable => "field table",
        }
    }
}

impl From<Fail> for FieldError {
    #[cold]
    fn from(fail: Fail) -> Self {
        match fail {
            Fail::Truncated(what) => FieldError::Truncated { what: what.name() },
            Fail::UnknownType(letter) => FieldError::UnknownFieldType { letter },
            Fail::UnknownProperties(flags) => FieldError::UnknownProperties { flags },
        }
    }
}

/// nom's own failures (a number or a `take` past the end) are truncations; each primitive
/// names the field it was reading.
impl<I> ParseError<I> for Fail {
    fn from_error_kind(_: I, _: ErrorKind) -> Self {
        Fail::Truncated(What::Octet)
    }

    fn append(_: I, _: ErrorKind, other: Self) -> Self {
        other
    }
}

/// The [`Fail`] in a parser's error. The parsers are complete (never `Incomplete`: a frame's
/// payload is all there), so `Incomplete` cannot happen; it reads as a truncation.
#[cold]
pub(crate) fn failure(err: nom::Err<Fail>) -> Fail {
    match err {
        nom::Err::Error(fail) | nom::Err::Failure(fail) => fail,
        nom::Err::Incomplete(_) => Fail::Truncated(What::Octet),
    }
}

/// A truncated `what`, as a parser's error.
#[inline(always)]
fn truncated<T>(what: What) -> PResult<'static, T> {
    Err(nom::Err::Error(Fail::Truncated(what)))
}

/// An octet.
#[inline(always)]
pub(crate) fn octet(input: &[u8]) -> PResult<'_, u8> {
    match input.split_first() {
        Some((&value, rest)) => Ok((rest, value)),
        None => truncated(What::Octet),
    }
}

/// A short (16 bits, big-endian).
#[inline(always)]
pub(crate) fn short(input: &[u8]) -> PResult<'_, u16> {
    match input.split_first_chunk() {
        Some((bytes, rest)) => Ok((rest, u16::from_be_bytes(*bytes))),
        None => truncated(What::Short),
    }
}

/// A long (32 bits, big-endian).
#[inline(always)]
pub(crate) fn long(input: &[u8]) -> PResult<'_, u32> {
    match input.split_first_chunk() {
        Some((bytes, rest)) => Ok((rest, u32::from_be_bytes(*bytes))),
        None => truncated(What::Long),
    }
}

/// A longlong (64 bits, big-endian).
#[inline(always)]
pub(crate) fn longlong(input: &[u8]) -> PResult<'_, u64> {
    match input.split_first_chunk() {
        Some((bytes, rest)) => Ok((rest, u64::from_be_bytes(*bytes))),
        None => truncated(What::LongLong),
    }
}

/// `len` octets, a field that is `what`.
#[inline(always)]
pub(crate) fn take(len: usize, what: What, input: &[u8]) -> PResult<'_, &[u8]> {
    match input.split_at_checked(len) {
        Some((bytes, rest)) => Ok((rest, bytes)),
        None => truncated(what),
    }
}

/// A short string's bytes (after its one-octet length).
#[inline(always)]
pub(crate) fn short_str(input: &[u8]) -> PResult<'_, &[u8]> {
    match input.split_first() {
        Some((&len, rest)) => take(usize::from(len), What::ShortString, rest),
        None => truncated(What::ShortString),
    }
}

/// The bytes of a value with a 32-bit length (a long string, byte array, table or array).
#[inline(always)]
pub(crate) fn long_bytes(what: What) -> impl Fn(&[u8]) -> PResult<'_, &[u8]> {
    move |input| match input.split_first_chunk() {
        Some((len, rest)) => take(u32::from_be_bytes(*len) as usize, what, rest),
        None => truncated(what),
    }
}
