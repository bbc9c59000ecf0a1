//! Field tables and arrays: checking an encoding (at any depth of nesting, without recursion)
//! and reading its values.
//!
//! A table's entries are a short-string key, a type letter and a value; an array's only a
//! letter and a value (RabbitMQ's letters: see [`crate::table`]). [`value`] reads one value;
//! [`scan_container`] steps over a whole encoding, checking every entry, and is what decoding a
//! table, an array or a message's headers runs.

use nom::Parser;

use super::{
    Fail, PResult, What, failure, long, long_bytes, longlong, octet, short, short_str, take,
};
use crate::error::FieldError;
use crate::table::Decimal;

/// One value of a table or array, its strings and containers borrowed from the encoding.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum ValueRef<'a> {
    Bool(bool),
    I8(i8),
    U8(u8),
    I16(i16),
    U16(u16),
    I32(i32),
    U32(u32),
    I64(i64),
    F32(f32),
    F64(f64),
    Decimal(Decimal),
    LongStr(&'a [u8]),
    /// An array's values, unchecked by this read (a validated encoding's are checked).
    Array(&'a [u8]),
    Timestamp(u64),
    /// A table's entries, unchecked by this read (a validated encoding's are checked).
    Table(&'a [u8]),
    Void,
    ByteArray(&'a [u8]),
}

/// One value of type `letter`. Nested tables and arrays are returned as their bytes, not
/// stepped into: [`scan_container`] checks those, without recursion.
#[inline(always)]
pub(crate) fn value(letter: u8) -> impl Fn(&[u8]) -> PResult<'_, ValueRef<'_>> {
    move |input| match letter {
        // Any octet: the spec reads non-zero as true. Refusing others would let one sloppy
        // publisher's header close every consumer's connection, again on each redelivery.
        b't' => octet.map(|v| ValueRef::Bool(v != 0)).parse_complete(input),
        b'b' => octet.map(|v| ValueRef::I8(v as i8)).parse_complete(input),
        b'B' => octet.map(ValueRef::U8).parse_complete(input),
        b's' => short.map(|v| ValueRef::I16(v as i16)).parse_complete(input),
        b'u' => short.map(ValueRef::U16).parse_complete(input),
        b'I' => long.map(|v| ValueRef::I32(v as i32)).parse_complete(input),
        b'i' => long.map(ValueRef::U32).parse_complete(input),
        b'l' => longlong
            .map(|v| ValueRef::I64(v as i64))
            .parse_complete(input),
        b'f' => long
            .map(|v| ValueRef::F32(f32::from_bits(v)))
            .parse_complete(input),
        b'd' => longlong
            .map(|v| ValueRef::F64(f64::from_bits(v)))
            .parse_complete(input),
        b'D' => (octet, long)
            .map(|(scale, value)| ValueRef::Decimal(Decimal { scale, value }))
            .parse_complete(input),
        b'S' => long_bytes(What::LongString)
            .map(ValueRef::LongStr)
            .parse_complete(input),
        b'A' => long_bytes(What::FieldArray)
            .map(ValueRef::Array)
            .parse_complete(input),
        b'T' => longlong.map(ValueRef::Timestamp).parse_complete(input),
        b'F' => long_bytes(What::FieldTable)
            .map(ValueRef::Table)
            .parse_complete(input),
        b'V' => Ok((input, ValueRef::Void)),
        b'x' => long_bytes(What::ByteArray)
            .map(ValueRef::ByteArray)
            .parse_complete(input),
        other => Err(nom::Err::Error(Fail::UnknownType(other))),
    }
}

/// A table's entry: key, then type letter and value.
#[inline(always)]
pub(crate) fn entry(input: &[u8]) -> PResult<'_, (&[u8], ValueRef<'_>)> {
    let (input, key) = short_str(input)?;
    let (input, letter) = octet(input)?;
    let (input, value) = value(letter)(input)?;
    Ok((input, (key, value)))
}

/// The first entry of a table's `entries` named `key`: its value, and what follows it. The
/// entries before it are stepped over, not read (nested tables and arrays by their length:
/// on a validated encoding they were checked).
#[inline]
pub(crate) fn find_entry<'a>(
    mut entries: &'a [u8],
    key: &[u8],
) -> Result<Option<(&'a [u8], ValueRef<'a>)>, Fail> {
    while !entries.is_empty() {
        let (after_key, name) = short_str(entries).map_err(failure)?;
        let (rest, letter) = octet(after_key).map_err(failure)?;
        if name == key {
            let (after, found) = value(letter)(rest).map_err(failure)?;
            return Ok(Some((after, found)));
        }
        entries = skip_value(rest, letter)?;
    }
    Ok(None)
}

/// An array's item: type letter and value.
#[inline(always)]
pub(crate) fn item(input: &[u8]) -> PResult<'_, ValueRef<'_>> {
    let (input, letter) = octet(input)?;
    value(letter)(input)
}

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
            Kind::Table => short_str(rest).map_err(failure)?.0,
            Kind::Array => rest,
        };
        let (value, letter) = octet(value).map_err(failure)?;
        let (kind, what) = match letter {
            b'F' => (Kind::Table, What::FieldTable),
            b'A' => (Kind::Array, What::FieldArray),
            _ => {
                rest = skip_value(value, letter)?;
                continue;
            }
        };
        let (after, inner) = long_bytes(what)(value).map_err(failure)?;
        return Ok(Some(Nested { kind, inner, after }));
    }
    Ok(None)
}

/// Octets of a value of each fixed-size type letter (`b B s u I i f l d T`); 0 for the others,
/// which [`value`] reads. The same sizes as `value`'s (a test checks every letter).
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

/// Steps over one value of type `letter`; returns what follows. A table or an array is stepped
/// over whole, by its length (not checked: [`scan_flat`] steps into those itself).
// Hand-written for the common kinds (fixed sizes by table, long strings): stepping over every
// value with `value` (nom's `map` and tuples over the leaves) cost 1599 instructions per
// validation of the 20-entry table, this 1148 (`benches/callgrind table`, `FieldTable::from_raw`
// alone), on the path every delivery's headers take. The others (`t D V x F A`, unknown letters)
// are read by `value` itself.
#[inline(always)]
fn skip_value(rest: &[u8], letter: u8) -> Result<&[u8], Fail> {
    let read = match (letter, FIXED_LEN[usize::from(letter)]) {
        (b'S', _) => long_bytes(What::LongString)(rest).map(|(rest, _)| rest),
        (_, 0) => value(letter)(rest).map(|(rest, _)| rest),
        (_, len) => take(usize::from(len), What::of_len(len), rest).map(|(rest, _)| rest),
    };
    read.map_err(failure)
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
    fn the_scan_steps_over_every_letter_as_value_reads_it() {
        // Every letter, on a value of 9 bytes and on every truncation of it: the scan and
        // `value` take the same bytes or fail alike (tables and arrays are the scan's own).
        let bytes = [0, 0, 0, 1, 7, 7, 7, 7, 7];
        for letter in (0..=255u8).filter(|l| !matches!(l, b'F' | b'A')) {
            for len in 0..=bytes.len() {
                let input = &bytes[..len];
                let by_value = value(letter)(input).map(|(rest, _)| rest).map_err(failure);
                assert_eq!(skip_value(input, letter), by_value, "{letter} on {input:?}");
            }
        }
    }

    #[test]
    fn values_read_as_written() {
        let raw = [
            b'D', 2, 0, 0, 0x30, 0x39, b'f', 0x3F, 0x40, 0, 0, b'b', 0xFF, b'S', 0, 0, 0, 2, b'h',
            b'i', b'V',
        ];
        let mut rest = &raw[..];
        let mut read = Vec::new();
        while !rest.is_empty() {
            let (after, value) = item(rest).expect("valid");
            read.push(value);
            rest = after;
        }
        assert_eq!(
            read,
            [
                ValueRef::Decimal(Decimal {
                    scale: 2,
                    value: 12345
                }),
                ValueRef::F32(0.75),
                ValueRef::I8(-1),
                ValueRef::LongStr(b"hi"),
                ValueRef::Void,
            ]
        );
        assert_eq!(item(b"?"), Err(nom::Err::Error(Fail::UnknownType(b'?'))));
    }
}
