//! A content header's properties: the flags words, then the present properties in flag order.
//!
//! ```text
//! flags (u16)... | present properties
//! ```
//! Flag bit 15 marks the first property, bit 2 the fourteenth; bit 0 set means another flags
//! word follows (the continuation bit). Basic defines no property beyond the first word, so a
//! continuation word with any other bit set is refused.

use nom::Parser;

use super::{Fail, PResult, What, failure, long_bytes, longlong, short, short_str, table, take};
use crate::constants::{ClassId, FrameType};
use crate::error::{DecodeError, FieldError};
use crate::properties::Property;

/// Bit 0: another flags word follows.
pub(crate) const CONTINUATION: u16 = 1;
/// Bit 1 names no basic property.
pub(crate) const UNUSED: u16 = 1 << 1;

/// How a property is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    Short,
    Table,
    Octet,
    LongLong,
}

impl Property {
    /// How this property is encoded.
    pub(crate) const fn encoding(self) -> Encoding {
        match self {
            Self::Headers => Encoding::Table,
            Self::DeliveryMode | Self::Priority => Encoding::Octet,
            Self::Timestamp => Encoding::LongLong,
            _ => Encoding::Short,
        }
    }
}

/// How each property is encoded, by flag position (0: bit 15, content-type).
const ENCODINGS: [Encoding; 14] = {
    let mut e = [Encoding::Short; 14];
    let mut i = 0;
    while i < 14 {
        e[i] = Property::ALL[i].encoding();
        i += 1;
    }
    e
};

/// One property of `encoding`: its bytes (a short string's or a table's without the length
/// prefix, an octet, or 8 octets).
#[inline(always)]
pub(crate) fn property(encoding: Encoding) -> impl Fn(&[u8]) -> PResult<'_, &[u8]> {
    move |input| match encoding {
        Encoding::Short => short_str(input),
        Encoding::Table => long_bytes(What::FieldTable)(input),
        Encoding::Octet => take(1, What::Octet, input),
        Encoding::LongLong => take(8, What::LongLong, input),
    }
}

/// The first flags word, as received, and what follows the last: the continuation words are
/// read (and refused if they set a flag).
#[inline(always)]
pub(crate) fn flags(input: &[u8]) -> Result<(u16, &[u8]), Fail> {
    let (mut rest, flags) = short(input).map_err(failure)?;
    if flags & UNUSED != 0 {
        return Err(Fail::UnknownProperties(UNUSED));
    }
    let mut more = flags & CONTINUATION != 0;
    while more {
        let (after, word) = short(rest).map_err(failure)?;
        if word & !CONTINUATION != 0 {
            return Err(Fail::UnknownProperties(word & !CONTINUATION));
        }
        more = word & CONTINUATION != 0;
        rest = after;
    }
    Ok((flags, rest))
}

/// Checks the flags words and the properties they name, in wire order (a headers table at any
/// depth); returns the first flags word and what follows the properties.
#[inline(always)]
pub(crate) fn check(input: &[u8]) -> Result<(u16, &[u8]), Fail> {
    let (flags, mut rest) = flags(input)?;
    // Visit only the set bits, highest first: a typical message sets 2 to 5 of the 14.
    let mut bits = flags & !(CONTINUATION | UNUSED);
    while bits != 0 {
        let position = bits.leading_zeros() as usize;
        bits &= !(0x8000 >> position);
        let encoding = ENCODINGS[position];
        let (after, value) = property(encoding)(rest).map_err(failure)?;
        if encoding == Encoding::Table {
            table::scan_table(value)?;
        }
        rest = after;
    }
    Ok((flags, rest))
}

/// The properties' bytes after the continuation words, given the first flags word and what
/// follows it (validated).
#[inline(always)]
pub(crate) fn after_continuations(flags: u16, mut raw: &[u8]) -> &[u8] {
    if flags & CONTINUATION != 0 {
        // Validated: words up to the first without the continuation bit.
        while let Ok((rest, word)) = short(raw) {
            raw = rest;
            if word & CONTINUATION == 0 {
                break;
            }
        }
    }
    raw
}

/// The bytes of property `want` if present (see [`property`]), given the first flags word and
/// the validated bytes that follow it.
#[inline(always)]
pub(crate) fn seek(flags: u16, raw: &[u8], want: Property) -> Option<&[u8]> {
    if flags & want.bit() == 0 {
        return None;
    }
    let mut rest = after_continuations(flags, raw);
    // The properties before `want` (the flags above its own), highest bit first.
    let mut before = flags & !(want.bit() - 1) & !want.bit();
    while before != 0 {
        let position = before.leading_zeros() as usize;
        before &= !(0x8000 >> position);
        // Validated at construction, so this cannot fail; if it did, report absent.
        rest = property(ENCODINGS[position])(rest).ok()?.0;
    }
    property(want.encoding())(rest).ok().map(|(_, value)| value)
}

/// A content header's payload, read and checked: the fixed fields, and the properties.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header<'a> {
    pub(crate) class_id: ClassId,
    pub(crate) weight: u16,
    pub(crate) body_size: u64,
    /// The first flags word, as received.
    pub(crate) flags: u16,
    /// What follows it: continuation words, then the present properties, validated.
    pub(crate) raw: &'a [u8],
}

/// A content header's payload: class id (basic only: no other class carries content in 0-9-1),
/// weight, body size, then the properties, which must take exactly the rest. Errors name no
/// channel (0): the frame decoder sets it.
#[inline(always)]
pub(crate) fn header(payload: &[u8]) -> Result<Header<'_>, DecodeError> {
    let Ok((properties, (class_id, weight, body_size))) = fixed(payload) else {
        return Err(DecodeError::FrameTooShort {
            frame_type: FrameType::HEADER,
            size: payload.len() as u32,
        });
    };
    if class_id != ClassId::BASIC {
        return Err(DecodeError::UnknownContentClass { class_id });
    }
    let bad = |source| DecodeError::BadContentHeader {
        channel: 0,
        body_size,
        source,
    };
    let (flags, after) = check(properties).map_err(|fail| bad(fail.into()))?;
    if !after.is_empty() {
        return Err(bad(FieldError::TrailingBytes { count: after.len() }));
    }
    Ok(Header {
        class_id,
        weight,
        body_size,
        flags,
        raw: properties.get(2..).unwrap_or_default(),
    })
}

/// A content header's fixed fields: class id, weight, body size.
#[inline(always)]
pub(crate) fn fixed(payload: &[u8]) -> PResult<'_, (ClassId, u16, u64)> {
    (short.map(ClassId), short, longlong).parse_complete(payload)
}
