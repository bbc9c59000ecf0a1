//! Hand-written validators for the hot path: field tables and arrays (and the slices the
//! content-header properties are checked with), over plain byte slices.
//!
//! The general [`crate::wire::Reader`] runs one nom parser per field and hands out shared
//! `Bytes`; validating a delivery's properties and headers table through it cost about 30
//! instructions per field (nom's `IResult` plumbing, `take_from`, error mapping). These loops
//! only step over the bytes with `split_first`/`split_first_chunk`, build nothing, and report the
//! same [`FieldError`]s the reader would (the `what` of a truncated field included), so a
//! malformed payload is refused with the same error as before.
//!
//! Internally a failure is a two-byte [`Fail`], so that a `Result<&[u8], Fail>` is returned in
//! two registers (a `Result` with a [`FieldError`], 24 bytes, goes through memory), and it is
//! turned into a [`FieldError`] only at the edge, on the error path.

use crate::error::FieldError;
use crate::table::MAX_TABLE_DEPTH;

/// Why a scan failed: a [`FieldError`] in two bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fail {
    /// The payload ended inside a field of this kind.
    Truncated(What),
    /// Nesting deeper than [`MAX_TABLE_DEPTH`].
    TooDeep,
    /// An unknown type letter.
    UnknownType(u8),
    /// Content-header property flags that basic does not define.
    UnknownProperties(u16),
}

/// The kinds of field a scan may find truncated, named as the reader names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum What {
    Octet,
    Short,
    Long,
    LongLong,
    ShortString,
    LongString,
    ByteArray,
    FieldArray,
    FieldTable,
}

impl What {
    const fn name(self) -> &'static str {
        match self {
            Self::Octet => "octet",
            Self::Short => "short",
            Self::Long => "long",
            Self::LongLong => "longlong",
            Self::ShortString => "short string",
            Self::LongString => "long string",
            Self::ByteArray => "byte array",
            Self::FieldArray => "field array",
            Self::FieldTable => "field table",
        }
    }

    /// The fixed-size field of `len` bytes.
    const fn of_len(len: u8) -> Self {
        match len {
            1 => Self::Octet,
            2 => Self::Short,
            4 => Self::Long,
            _ => Self::LongLong,
        }
    }
}

impl From<Fail> for FieldError {
    #[cold]
    fn from(fail: Fail) -> Self {
        match fail {
            Fail::Truncated(what) => FieldError::Truncated { what: what.name() },
            Fail::TooDeep => FieldError::TableTooDeep {
                max: MAX_TABLE_DEPTH,
            },
            Fail::UnknownType(letter) => FieldError::UnknownFieldType { letter },
            Fail::UnknownProperties(flags) => FieldError::UnknownProperties { flags },
        }
    }
}

/// The bytes of a value with a 32-bit length prefix, and what follows it.
#[inline(always)]
pub(crate) fn long_slice(rest: &[u8], what: What) -> Result<(&[u8], &[u8]), Fail> {
    rest.split_first_chunk::<4>()
        .and_then(|(len, rest)| rest.split_at_checked(u32::from_be_bytes(*len) as usize))
        .ok_or(Fail::Truncated(what))
}

/// The bytes of a short string (8-bit length prefix), and what follows it.
#[inline(always)]
pub(crate) fn short_slice(rest: &[u8]) -> Result<(&[u8], &[u8]), Fail> {
    rest.split_first()
        .and_then(|(&len, rest)| rest.split_at_checked(usize::from(len)))
        .ok_or(Fail::Truncated(What::ShortString))
}

/// What follows the first `len` bytes, or the error for a truncated field of that size.
#[inline(always)]
pub(crate) fn skip(rest: &[u8], len: u8) -> Result<&[u8], Fail> {
    rest.get(usize::from(len)..)
        .ok_or(Fail::Truncated(What::of_len(len)))
}

/// Length of each fixed-size value by type letter; 0 for the others (`t`, `D`, long values,
/// containers, `V` and unknown letters), which [`check_value`] handles.
static FIXED_LEN: [u8; 256] = {
    let mut t = [0; 256];
    t[b'b' as usize] = 1;
    t[b'B' as usize] = 1;
    t[b's' as usize] = 2;
    t[b'u' as usize] = 2;
    t[b'I' as usize] = 4;
    t[b'i' as usize] = 4;
    t[b'f' as usize] = 4;
    t[b'l' as usize] = 8;
    t[b'd' as usize] = 8;
    t[b'T' as usize] = 8;
    t
};

/// Checks a table's entries (the bytes after its length prefix): keys within bounds, known type
/// letters, no overrun, nesting at most [`MAX_TABLE_DEPTH`].
pub(crate) fn check_table(entries: &[u8], depth: usize) -> Result<(), FieldError> {
    scan_table(entries, depth).map_err(FieldError::from)
}

/// Checks an array's values (the bytes after its length prefix), like [`check_table`].
pub(crate) fn check_array(values: &[u8], depth: usize) -> Result<(), FieldError> {
    scan_array(values, depth).map_err(FieldError::from)
}

pub(crate) fn scan_table(mut rest: &[u8], depth: usize) -> Result<(), Fail> {
    if depth > MAX_TABLE_DEPTH {
        return Err(Fail::TooDeep);
    }
    while !rest.is_empty() {
        let (_key, after_key) = short_slice(rest)?;
        let Some((&letter, value)) = after_key.split_first() else {
            return Err(Fail::Truncated(What::Octet));
        };
        rest = scan_value(value, letter, depth)?;
    }
    Ok(())
}

fn scan_array(mut rest: &[u8], depth: usize) -> Result<(), Fail> {
    if depth > MAX_TABLE_DEPTH {
        return Err(Fail::TooDeep);
    }
    while let Some((&letter, value)) = rest.split_first() {
        rest = scan_value(value, letter, depth)?;
    }
    Ok(())
}

/// Steps over one value of type `letter`; returns what follows it. The common kinds (fixed
/// sizes, long strings) inline, the rest in [`check_value`].
#[inline(always)]
fn scan_value(rest: &[u8], letter: u8, depth: usize) -> Result<&[u8], Fail> {
    match FIXED_LEN[usize::from(letter)] {
        0 if letter == b'S' => long_slice(rest, What::LongString).map(|(_, rest)| rest),
        0 => check_value(rest, letter, depth),
        len => skip(rest, len),
    }
}

/// Steps over one value of the less common kinds (RabbitMQ's letters, see [`crate::table`]),
/// validating nested tables and arrays; returns what follows it.
fn check_value(rest: &[u8], letter: u8, depth: usize) -> Result<&[u8], Fail> {
    match letter {
        // Any octet: the spec reads non-zero as true. Refusing others would let one sloppy
        // publisher's header close every consumer's connection, again on each redelivery.
        b't' => skip(rest, 1),
        // Scale octet, then a long: the reader reported whichever ran out.
        b'D' => skip(skip(rest, 1)?, 4),
        b'V' => Ok(rest),
        b'x' => long_slice(rest, What::ByteArray).map(|(_, rest)| rest),
        b'A' => {
            let (inner, rest) = long_slice(rest, What::FieldArray)?;
            scan_array(inner, depth + 1)?;
            Ok(rest)
        }
        b'F' => {
            let (inner, rest) = long_slice(rest, What::FieldTable)?;
            scan_table(inner, depth + 1)?;
            Ok(rest)
        }
        // Fixed sizes and `S` never get here (see `scan_value`); anything else is unknown.
        other => Err(Fail::UnknownType(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_names_the_field_like_the_reader() {
        let cases: [(&[u8], &str); 10] = [
            (&[3, b'a'], "short string"),
            (&[1, b'k'], "octet"),
            (&[1, b'k', b't'], "octet"),
            (&[1, b'k', b's', 0], "short"),
            (&[1, b'k', b'I', 0, 0], "long"),
            (&[1, b'k', b'T', 0], "longlong"),
            (&[1, b'k', b'D'], "octet"),
            (&[1, b'k', b'D', 2, 0], "long"),
            (&[1, b'k', b'S', 0, 0, 0, 9, b'x'], "long string"),
            (&[1, b'k', b'x', 0, 0], "byte array"),
        ];
        for (raw, what) in cases {
            assert_eq!(
                check_table(raw, 0),
                Err(FieldError::Truncated { what }),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn nesting_is_bounded() {
        // 40 nested arrays, each holding the next.
        let mut raw: Vec<u8> = Vec::new();
        for _ in 0..40 {
            let mut outer = vec![b'A'];
            outer.extend_from_slice(&(raw.len() as u32).to_be_bytes());
            outer.extend_from_slice(&raw);
            raw = outer;
        }
        assert_eq!(
            check_array(&raw, 0),
            Err(FieldError::TableTooDeep {
                max: MAX_TABLE_DEPTH
            })
        );
    }

    #[test]
    fn a_scan_result_fits_in_two_registers() {
        assert_eq!(std::mem::size_of::<Result<&[u8], Fail>>(), 16);
    }
}
