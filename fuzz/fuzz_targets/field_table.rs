//! `FieldTable::from_raw` and `FieldArray::from_raw` on arbitrary bytes.
//!
//! A table or array that validates must iterate completely (into nested tables and arrays, at
//! any depth), and collecting its own iterator must rebuild the original raw bytes exactly, except
//! that a bool octet other than 0 and 1 (true, by the spec) is rebuilt as the canonical 1: then
//! the rebuilt entries must equal the original ones value by value.

#![no_main]

use amqp_codec::{FieldArray, FieldTable, FieldValue};
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

/// A container still to visit. Nesting has no limit, so the walk keeps its own list rather
/// than recursing (as every walk of a peer's table must).
enum Todo {
    Table(FieldTable),
    Array(FieldArray),
}

/// Visits one value; a container is put on the list.
fn walk_value(value: &FieldValue, todo: &mut Vec<Todo>) {
    let _ = (value.type_letter(), value.as_i64(), value.as_str());
    match value {
        FieldValue::Table(table) => todo.push(Todo::Table(table.clone())),
        FieldValue::Array(array) => todo.push(Todo::Array(array.clone())),
        _ => {}
    }
}

/// Visits a container and everything nested in it.
fn walk(first: Todo) {
    let mut todo = vec![first];
    while let Some(next) = todo.pop() {
        match next {
            Todo::Table(table) => walk_table(&table, &mut todo),
            Todo::Array(array) => walk_array(&array, &mut todo),
        }
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
fn walk_table(table: &FieldTable, todo: &mut Vec<Todo>) {
    let mut first_key = None;
    for (key, value) in table.iter() {
        first_key.get_or_insert(key);
        walk_value(&value, todo);
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
fn walk_array(array: &FieldArray, todo: &mut Vec<Todo>) {
    for value in array.iter() {
        walk_value(&value, todo);
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
        walk(Todo::Table(table));
    }
    if let Ok(array) = FieldArray::from_raw(raw) {
        walk(Todo::Array(array));
    }
});
