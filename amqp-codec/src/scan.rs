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

/// Why a scan failed: a [`FieldError`] in two bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fail {
    /// The payload ended inside a field of this kind.
    Truncated(What),
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
/// letters, no overrun, at any depth of nesting.
pub(crate) fn check_table(entries: &[u8]) -> Result<(), FieldError> {
    scan_table(entries).map_err(FieldError::from)
}

/// Checks an array's values (the bytes after its length prefix), like [`check_table`].
pub(crate) fn check_array(values: &[u8]) -> Result<(), FieldError> {
    scan_container(values, Kind::Array).map_err(FieldError::from)
}

/// Steps over a table's entries; see [`scan_container`].
#[inline]
pub(crate) fn scan_table(entries: &[u8]) -> Result<(), Fail> {
    scan_container(entries, Kind::Table)
}

/// A container's kind: a table's entries are a key and a value, an array's only a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Table,
    Array,
}

/// A container set aside while one nested in it is scanned: its kind, and its bytes after the
/// nested one, where its scan resumes.
#[derive(Debug, Clone, Copy)]
struct Outer<'a> {
    kind: Kind,
    after: &'a [u8],
}

/// Levels of nesting kept on the scan's own stack; deeper ones go to the heap.
const INLINE_LEVELS: usize = 8;

/// Steps over a container's contents and everything nested in it.
///
/// The spec sets no limit on nesting, RabbitMQ and other clients carry hundreds of levels, and a
/// message this codec refused would stay at the head of its queue and stop every consumer of
/// it; so any depth that fits in the bytes is accepted, and without recursion, which would let
/// the peer choose how deep our stack goes. A container with nothing nested in it (the common
/// case: a message's headers) is stepped over by [`scan_flat`] alone; at its first nested
/// table or array, [`scan_nested`] takes over.
#[inline]
pub(crate) fn scan_container(bytes: &[u8], kind: Kind) -> Result<(), Fail> {
    match scan_flat(bytes, kind)? {
        None => Ok(()),
        Some(nested) => scan_nested(kind, nested),
    }
}

/// A table or array met inside a container: its kind, its contents, and the bytes of the
/// container after it.
struct Nested<'a> {
    kind: Kind,
    inner: &'a [u8],
    after: &'a [u8],
}

/// Steps over a container's values until its end (`None`) or its next nested table or array.
#[inline(always)]
fn scan_flat(mut rest: &[u8], kind: Kind) -> Result<Option<Nested<'_>>, Fail> {
    while !rest.is_empty() {
        let value = match kind {
            Kind::Table => short_slice(rest)?.1,
            Kind::Array => rest,
        };
        let Some((&letter, value)) = value.split_first() else {
            return Err(Fail::Truncated(What::Octet));
        };
        let (kind, what) = match letter {
            b'F' => (Kind::Table, What::FieldTable),
            b'A' => (Kind::Array, What::FieldArray),
            _ => {
                rest = scan_value(value, letter)?;
                continue;
            }
        };
        let (inner, after) = long_slice(value, what)?;
        return Ok(Some(Nested { kind, inner, after }));
    }
    Ok(None)
}

/// Steps over the rest of a container of kind `outer` once `nested` was met in it, and
/// everything below, in one loop: the containers set aside while a nested one is scanned are
/// kept in a list, the first [`INLINE_LEVELS`] in place and deeper ones in a `Vec`. Each level
/// costs its sender at least five bytes (a type letter and a length), so the list is bounded by
/// the bytes received, never by a length the peer claims.
#[cold]
fn scan_nested(outer: Kind, first: Nested<'_>) -> Result<(), Fail> {
    // What is being scanned; only its kind matters until `first` is stepped into.
    let mut current = Outer {
        kind: outer,
        after: &[],
    };
    let mut inline = [current; INLINE_LEVELS];
    let mut spilled: Vec<Outer<'_>> = Vec::new();
    // Containers set aside: `inline[..depth]`, then `spilled`.
    let mut depth = 0usize;
    let mut next = Some(first);
    loop {
        match next {
            // Step into the nested container met, setting aside the rest of this one.
            Some(Nested { kind, inner, after }) => {
                let outer = Outer {
                    kind: current.kind,
                    after,
                };
                match inline.get_mut(depth) {
                    Some(slot) => *slot = outer,
                    None => spilled.push(outer),
                }
                depth += 1;
                current = Outer { kind, after: inner };
            }
            // This container ended: resume the one around it, or finish.
            None if depth == 0 => return Ok(()),
            None => {
                depth -= 1;
                // Levels below INLINE_LEVELS were set aside in place, deeper ones spilled.
                current = match inline.get(depth) {
                    Some(outer) => *outer,
                    None => spilled.pop().ok_or(Fail::Truncated(What::FieldTable))?,
                };
            }
        }
        next = scan_flat(current.after, current.kind)?;
    }
}

/// Steps over one value of type `letter`, other than a table or an array; returns what follows
/// it. The common kinds (fixed sizes, long strings) inline, the rest in [`check_value`].
#[inline(always)]
fn scan_value(rest: &[u8], letter: u8) -> Result<&[u8], Fail> {
    match FIXED_LEN[usize::from(letter)] {
        0 if letter == b'S' => long_slice(rest, What::LongString).map(|(_, rest)| rest),
        0 => check_value(rest, letter),
        len => skip(rest, len),
    }
}

/// Steps over one value of the less common kinds (RabbitMQ's letters, see [`crate::table`]);
/// returns what follows it. Tables and arrays are [`scan_container`]'s.
fn check_value(rest: &[u8], letter: u8) -> Result<&[u8], Fail> {
    match letter {
        // Any octet: the spec reads non-zero as true. Refusing others would let one sloppy
        // publisher's header close every consumer's connection, again on each redelivery.
        b't' => skip(rest, 1),
        // Scale octet, then a long: the reader reported whichever ran out.
        b'D' => skip(skip(rest, 1)?, 4),
        b'V' => Ok(rest),
        b'x' => long_slice(rest, What::ByteArray).map(|(_, rest)| rest),
        // Fixed sizes and `S` never get here (see `scan_value`), nor `F` and `A` (see
        // `scan_container`); anything else is unknown.
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
                check_table(raw),
                Err(FieldError::Truncated { what }),
                "{raw:?}"
            );
        }
    }

    /// `levels` arrays nested in one another, the innermost holding `innermost`; built front
    /// to back (5 bytes a level), so 100 000 levels cost 100 000 steps.
    fn nested_arrays(levels: usize, innermost: &[u8]) -> Vec<u8> {
        let mut raw = Vec::with_capacity(5 * levels + innermost.len());
        for level in 1..=levels {
            raw.push(b'A');
            let inner_len = 5 * (levels - level) + innermost.len();
            raw.extend_from_slice(&(inner_len as u32).to_be_bytes());
        }
        raw.extend_from_slice(innermost);
        raw
    }

    #[test]
    fn any_depth_is_scanned_without_recursion() {
        // Deeper than the inline levels, and far deeper than any stack would take recursively
        // in a test thread.
        for levels in [0, 1, INLINE_LEVELS, INLINE_LEVELS + 1, 200, 100_000] {
            let raw = nested_arrays(levels, &[b'B', 7]);
            assert_eq!(check_array(&raw), Ok(()), "{levels} levels");
        }
        // An error at the bottom is found, whatever the depth.
        let raw = nested_arrays(100_000, b"?");
        assert_eq!(
            check_array(&raw),
            Err(FieldError::UnknownFieldType { letter: b'?' })
        );
    }

    #[test]
    fn a_container_resumes_after_a_nested_one() {
        // {a: [1, {b: 2}, 3], c: 4}: after each nested container ends, the one around it goes
        // on from the right place, for tables and arrays alike.
        let inner_table = [1, b'b', b'B', 2];
        let mut array = vec![b'B', 1, b'F', 0, 0, 0, inner_table.len() as u8];
        array.extend_from_slice(&inner_table);
        array.extend_from_slice(&[b'B', 3]);
        let mut table = vec![1, b'a', b'A', 0, 0, 0, array.len() as u8];
        table.extend_from_slice(&array);
        table.extend_from_slice(&[1, b'c', b'B', 4]);
        assert_eq!(check_table(&table), Ok(()));
        // A byte missing from the last entry of the outer table is still found.
        assert_eq!(
            check_table(&table[..table.len() - 1]),
            Err(FieldError::Truncated { what: "octet" })
        );
        // A nested length running past its container's end is refused.
        let mut bad = table.clone();
        bad[6] += 1;
        assert!(check_table(&bad).is_err());
    }

    #[test]
    fn a_scan_result_fits_in_two_registers() {
        assert_eq!(std::mem::size_of::<Result<&[u8], Fail>>(), 16);
    }
}
