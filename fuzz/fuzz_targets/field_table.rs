//! `FieldTable::from_raw` and `FieldArray::from_raw` on arbitrary bytes.
//!
//! A table or array that validates must iterate completely (recursively into nested tables and
//! arrays), and collecting its own iterator must rebuild the original raw bytes exactly. (Bool
//! octets other than 0 and 1, which used to rebuild as 1, are refused since the first campaign.)

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
    assert_eq!(rebuilt, *table, "did not re-encode");
    let _ = format!("{table:?}");
}

/// Visits every value and checks that the values re-encode to the array's own bytes.
fn walk_array(array: &FieldArray) {
    for value in array.iter() {
        walk_value(&value);
    }
    let rebuilt = array.iter().collect::<FieldArray>();
    assert_eq!(rebuilt, *array, "did not re-encode");
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
