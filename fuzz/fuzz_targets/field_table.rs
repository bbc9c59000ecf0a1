//! `FieldTable::from_raw` and `FieldArray::from_raw` on arbitrary bytes.
//!
//! A table or array that validates must iterate completely (recursively into nested tables and
//! arrays), and collecting its own iterator must rebuild the original raw bytes exactly, except
//! that a bool octet other than 0 and 1 (true, by the spec) is rebuilt as the canonical 1: then
//! the rebuilt entries must equal the original ones value by value.

#![no_main]

use amqp_codec::{FieldArray, FieldTable, FieldValue};
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

/// Visits one value, descending into containers.
fn walk_value(value: &FieldValue) {
    let _ = (value.type_letter(), value.as_i64(), value.as_str());
    match value {
        FieldValue::Table(table) => walk_table(table),
        FieldValue::Array(array) => walk_array(array),
        _ => {}
    }
}

/// Same value: bools by truth, everything else by its encoding (so NaN floats compare too).
fn same(a: &FieldValue, b: &FieldValue) -> bool {
    match (a, b) {
        (FieldValue::Bool(x), FieldValue::Bool(y)) => x == y,
        _ => {
            let one = |v: &FieldValue| std::iter::once(v.clone()).collect::<FieldArray>();
            one(a) == one(b)
        }
    }
}

/// Visits every entry and checks that the entries re-encode to the table's own bytes.
fn walk_table(table: &FieldTable) {
    let mut first_key = None;
    for (key, value) in table.iter() {
        first_key.get_or_insert(key);
        walk_value(&value);
    }
    assert_eq!(first_key.is_none(), table.is_empty());
    // Lookups go through the same reader; the first entry is found by its own key (when the key
    // is UTF-8, as `get` takes a `&str`).
    if let Some(key) = first_key.as_ref().and_then(|k| k.as_str()) {
        assert!(table.get(key).is_some(), "first key {key:?} not found");
    }
    let rebuilt = table.iter().collect::<FieldTable>();
    if rebuilt != *table {
        assert!(
            rebuilt.iter().zip(table.iter()).all(|((ka, a), (kb, b))| ka == kb && same(&a, &b)),
            "did not re-encode"
        );
        assert_eq!(rebuilt.encoded_len(), table.encoded_len(), "only bool octets may differ");
    }
    let _ = format!("{table:?}");
}

/// Visits every value and checks that the values re-encode to the array's own bytes.
fn walk_array(array: &FieldArray) {
    for value in array.iter() {
        walk_value(&value);
    }
    let rebuilt = array.iter().collect::<FieldArray>();
    if rebuilt != *array {
        assert!(rebuilt.iter().zip(array.iter()).all(|(a, b)| same(&a, &b)), "did not re-encode");
        assert_eq!(rebuilt.iter().count(), array.iter().count());
    }
}

fuzz_target!(|data: &[u8]| {
    let raw = Bytes::copy_from_slice(data);
    if let Ok(table) = FieldTable::from_raw(raw.clone()) {
        assert_eq!(table.encoded_len(), data.len());
        walk_table(&table);
    }
    if let Ok(array) = FieldArray::from_raw(raw) {
        walk_array(&array);
    }
});
