//! `Debug` for tables, arrays and values, walking nested containers in a loop.
//!
//! A table's nesting is as deep as its sender chose (any depth that fits in a frame decodes),
//! and `Debug` is what a log line runs on a message from a stranger, so it must not recurse:
//! the containers being printed are kept in a list on the heap, one entry per level, which is
//! bounded by the bytes of the table itself. The output reads like the derived one
//! (`{"k": Table({"n": I32(1)})}`); the alternate form (`{:#?}`) prints the same single line,
//! since indenting 100 000 levels would print quadratically many spaces.

use std::fmt::{self, Write as _};

use bytes::Bytes;

use super::cursor::Cursor;
use super::{FieldArray, FieldTable, FieldValue};

/// A table or array being printed: its encoding and where its next entry starts.
struct Open {
    /// The container's entries (shared with the table, not copied).
    raw: Bytes,
    /// Where the next entry starts.
    pos: usize,
    /// Tables have keys; arrays do not.
    is_table: bool,
}

/// Prints a container and everything nested in it. `raw` is a validated encoding.
fn write_container(f: &mut fmt::Formatter<'_>, raw: &Bytes, is_table: bool) -> fmt::Result {
    f.write_char(if is_table { '{' } else { '[' })?;
    let mut open = vec![Open {
        raw: raw.clone(),
        pos: 0,
        is_table,
    }];
    while let Some(top) = open.last_mut() {
        let mut cursor = Cursor {
            raw: &top.raw,
            pos: top.pos,
        };
        if cursor.is_empty() {
            let closed = open.pop().is_none_or(|c| c.is_table);
            f.write_str(if closed { "}" } else { "]" })?;
            if !open.is_empty() {
                // The `Table(` or `Array(` around the nested container.
                f.write_char(')')?;
            }
            continue;
        }
        if cursor.pos > 0 {
            f.write_str(", ")?;
        }
        let value = if top.is_table {
            let Some((key, value)) = cursor.entry() else {
                break; // cannot happen on validated bytes; end rather than panic
            };
            write!(f, "{key:?}: ")?;
            value
        } else {
            let Some(value) = cursor.item() else {
                break;
            };
            value
        };
        top.pos = cursor.pos;
        let nested = match value {
            FieldValue::Table(t) => Open {
                raw: t.raw,
                pos: 0,
                is_table: true,
            },
            FieldValue::Array(a) => Open {
                raw: a.raw,
                pos: 0,
                is_table: false,
            },
            scalar => {
                write_scalar(f, &scalar)?;
                continue;
            }
        };
        f.write_str(if nested.is_table {
            "Table({"
        } else {
            "Array(["
        })?;
        open.push(nested);
    }
    Ok(())
}

/// Prints a value that is not a container, as the derived `Debug` would.
fn write_scalar(f: &mut fmt::Formatter<'_>, value: &FieldValue) -> fmt::Result {
    match value {
        FieldValue::Bool(v) => write!(f, "Bool({v:?})"),
        FieldValue::I8(v) => write!(f, "I8({v:?})"),
        FieldValue::U8(v) => write!(f, "U8({v:?})"),
        FieldValue::I16(v) => write!(f, "I16({v:?})"),
        FieldValue::U16(v) => write!(f, "U16({v:?})"),
        FieldValue::I32(v) => write!(f, "I32({v:?})"),
        FieldValue::U32(v) => write!(f, "U32({v:?})"),
        FieldValue::I64(v) => write!(f, "I64({v:?})"),
        FieldValue::F32(v) => write!(f, "F32({v:?})"),
        FieldValue::F64(v) => write!(f, "F64({v:?})"),
        FieldValue::Decimal(v) => write!(f, "Decimal({v:?})"),
        FieldValue::LongStr(v) => write!(f, "LongStr({v:?})"),
        FieldValue::Timestamp(v) => write!(f, "Timestamp({v:?})"),
        FieldValue::Void => f.write_str("Void"),
        FieldValue::ByteArray(v) => write!(f, "ByteArray({v:?})"),
        FieldValue::Table(t) => {
            f.write_str("Table(")?;
            write_container(f, &t.raw, true)?;
            f.write_char(')')
        }
        FieldValue::Array(a) => {
            f.write_str("Array(")?;
            write_container(f, &a.raw, false)?;
            f.write_char(')')
        }
    }
}

impl fmt::Debug for FieldTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_container(f, &self.raw, true)
    }
}

impl fmt::Debug for FieldArray {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_container(f, &self.raw, false)
    }
}

impl fmt::Debug for FieldValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_scalar(f, self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_like_the_derived_output() {
        let inner = FieldTable::builder()
            .insert("n", 1i32)
            .insert("s", "x")
            .build()
            .expect("valid");
        let array: FieldArray = [FieldValue::Bool(true), FieldValue::Table(inner.clone())]
            .into_iter()
            .collect();
        let table = FieldTable::builder()
            .insert("t", inner)
            .insert("a", array)
            .insert("e", FieldArray::new())
            .insert("v", FieldValue::Void)
            .build()
            .expect("valid");
        assert_eq!(
            format!("{table:?}"),
            r#"{"t": Table({"n": I32(1), "s": LongStr("x")}), "a": Array([Bool(true), Table({"n": I32(1), "s": LongStr("x")})]), "e": Array([]), "v": Void}"#
        );
        assert_eq!(format!("{:?}", FieldTable::new()), "{}");
        assert_eq!(format!("{:?}", FieldValue::I8(-1)), "I8(-1)");
    }

    #[test]
    fn a_deep_table_prints_without_recursion() {
        // 100 000 tables, each the only entry ("k") of the one around it: far deeper than a
        // test thread's stack would allow recursively. Built front to back, 7 bytes a level.
        let levels = 100_000u32;
        let mut raw = Vec::with_capacity(7 * levels as usize);
        for level in 1..=levels {
            raw.extend_from_slice(&[1, b'k', b'F']);
            raw.extend_from_slice(&(7 * (levels - level)).to_be_bytes());
        }
        let table = FieldTable::from_raw(Bytes::from(raw)).expect("any depth decodes");
        let printed = format!("{table:?}");
        assert!(printed.starts_with(r#"{"k": Table({"k": Table("#));
        assert_eq!(printed.matches('{').count(), 100_001);
        assert_eq!(printed.matches('}').count(), 100_001);
    }
}
