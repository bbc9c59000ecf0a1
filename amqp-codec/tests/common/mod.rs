//! Proptest strategies shared by the codec's integration tests: strings, a model of field values
//! (floats kept as bit patterns, so NaNs compare), field tables, basic properties and every
//! method of the method table.
//!
//! Each test file uses only part of this module.
#![allow(dead_code)]

use amqp_codec::methods::*;
use amqp_codec::{
    BasicProperties, Decimal, FieldArray, FieldTable, FieldValue, LongStr, Method,
    PropertiesBuilder, ShortStr,
};
use bytes::Bytes;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

/// Arbitrary bytes, lengths biased to the ends of `0..=max`.
pub(crate) fn bytes_up_to(max: usize) -> impl Strategy<Value = Vec<u8>> + Clone {
    prop_oneof![
        vec(any::<u8>(), 0..=max.min(8)),
        vec(any::<u8>(), 0..=max),
        vec(any::<u8>(), max..=max),
    ]
}

/// A short string: up to 255 arbitrary (mostly not UTF-8) bytes.
pub(crate) fn short_str() -> impl Strategy<Value = ShortStr> + Clone {
    bytes_up_to(ShortStr::MAX_LEN)
        .prop_map(|v| ShortStr::from_bytes(Bytes::from(v)).expect("at most 255 bytes"))
}

/// A long string: arbitrary bytes.
pub(crate) fn long_str() -> impl Strategy<Value = LongStr> + Clone {
    bytes_up_to(600).prop_map(LongStr::from)
}

/// A field value as the tests see it: what was meant, independent of the codec's types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    Bool(bool),
    I8(i8),
    U8(u8),
    I16(i16),
    U16(u16),
    I32(i32),
    U32(u32),
    I64(i64),
    /// Bit pattern of an f32 (any, NaNs included).
    F32(u32),
    /// Bit pattern of an f64.
    F64(u64),
    Decimal(u8, u32),
    LongStr(Vec<u8>),
    Array(Vec<Value>),
    Timestamp(u64),
    Table(Vec<(Vec<u8>, Value)>),
    Void,
    ByteArray(Vec<u8>),
}

impl Value {
    /// The codec's value for this model, built with the codec's `FromIterator`s.
    pub(crate) fn to_field(&self) -> FieldValue {
        match self {
            Value::Bool(v) => FieldValue::Bool(*v),
            Value::I8(v) => FieldValue::I8(*v),
            Value::U8(v) => FieldValue::U8(*v),
            Value::I16(v) => FieldValue::I16(*v),
            Value::U16(v) => FieldValue::U16(*v),
            Value::I32(v) => FieldValue::I32(*v),
            Value::U32(v) => FieldValue::U32(*v),
            Value::I64(v) => FieldValue::I64(*v),
            Value::F32(bits) => FieldValue::F32(f32::from_bits(*bits)),
            Value::F64(bits) => FieldValue::F64(f64::from_bits(*bits)),
            Value::Decimal(scale, value) => FieldValue::Decimal(Decimal {
                scale: *scale,
                value: *value,
            }),
            Value::LongStr(b) => FieldValue::LongStr(LongStr::from(b.clone())),
            Value::Array(items) => {
                FieldValue::Array(items.iter().map(Value::to_field).collect::<FieldArray>())
            }
            Value::Timestamp(v) => FieldValue::Timestamp(*v),
            Value::Table(entries) => FieldValue::Table(table_of(entries)),
            Value::Void => FieldValue::Void,
            Value::ByteArray(b) => FieldValue::ByteArray(Bytes::from(b.clone())),
        }
    }

    /// The model of a decoded value (nested tables and arrays read through their iterators).
    pub(crate) fn of(v: &FieldValue) -> Value {
        match v {
            FieldValue::Bool(v) => Value::Bool(*v),
            FieldValue::I8(v) => Value::I8(*v),
            FieldValue::U8(v) => Value::U8(*v),
            FieldValue::I16(v) => Value::I16(*v),
            FieldValue::U16(v) => Value::U16(*v),
            FieldValue::I32(v) => Value::I32(*v),
            FieldValue::U32(v) => Value::U32(*v),
            FieldValue::I64(v) => Value::I64(*v),
            FieldValue::F32(v) => Value::F32(v.to_bits()),
            FieldValue::F64(v) => Value::F64(v.to_bits()),
            FieldValue::Decimal(d) => Value::Decimal(d.scale, d.value),
            FieldValue::LongStr(s) => Value::LongStr(s.to_vec()),
            FieldValue::Array(a) => Value::Array(a.iter().map(|v| Value::of(&v)).collect()),
            FieldValue::Timestamp(v) => Value::Timestamp(*v),
            FieldValue::Table(t) => Value::Table(entries_of(t)),
            FieldValue::Void => Value::Void,
            FieldValue::ByteArray(b) => Value::ByteArray(b.to_vec()),
        }
    }
}

/// A table from model entries, through `FromIterator<(ShortStr, FieldValue)>`.
pub(crate) fn table_of(entries: &[(Vec<u8>, Value)]) -> FieldTable {
    entries
        .iter()
        .map(|(k, v)| {
            let key = ShortStr::from_bytes(Bytes::copy_from_slice(k)).expect("key <= 255");
            (key, v.to_field())
        })
        .collect()
}

/// The model entries of a table, read through its iterator.
pub(crate) fn entries_of(t: &FieldTable) -> Vec<(Vec<u8>, Value)> {
    t.iter().map(|(k, v)| (k.to_vec(), Value::of(&v))).collect()
}

/// Keys: mostly from a small set, so that duplicates are common, sometimes any bytes.
pub(crate) fn key() -> impl Strategy<Value = Vec<u8>> + Clone {
    prop_oneof![
        3 => prop::sample::select(vec!["a", "b", "x-death", "", "ключ"])
            .prop_map(|s| s.as_bytes().to_vec()),
        1 => bytes_up_to(255),
    ]
}

/// Any of the 17 kinds of value, tables and arrays nested up to 3 deep.
pub(crate) fn value() -> impl Strategy<Value = Value> + Clone {
    let leaf = prop_oneof![
        any::<bool>().prop_map(Value::Bool),
        any::<i8>().prop_map(Value::I8),
        any::<u8>().prop_map(Value::U8),
        any::<i16>().prop_map(Value::I16),
        any::<u16>().prop_map(Value::U16),
        any::<i32>().prop_map(Value::I32),
        any::<u32>().prop_map(Value::U32),
        any::<i64>().prop_map(Value::I64),
        prop_oneof![
            any::<u32>(),
            Just(f32::NAN.to_bits()),
            Just(0x7FA0_0001),
            Just(0x8000_0000)
        ]
        .prop_map(Value::F32),
        prop_oneof![
            any::<u64>(),
            Just(f64::NAN.to_bits()),
            Just(0xFFF0_0000_0000_0001)
        ]
        .prop_map(Value::F64),
        (any::<u8>(), any::<u32>()).prop_map(|(s, v)| Value::Decimal(s, v)),
        bytes_up_to(64).prop_map(Value::LongStr),
        any::<u64>().prop_map(Value::Timestamp),
        Just(Value::Void),
        bytes_up_to(64).prop_map(Value::ByteArray),
    ];
    leaf.prop_recursive(3, 48, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            vec((key(), inner), 0..6).prop_map(Value::Table),
        ]
    })
}

/// Table entries in model form.
pub(crate) fn entries() -> impl Strategy<Value = Vec<(Vec<u8>, Value)>> + Clone {
    vec((key(), value()), 0..8)
}

/// A field table with any entries.
pub(crate) fn field_table() -> impl Strategy<Value = FieldTable> + Clone {
    entries().prop_map(|e| table_of(&e))
}

/// The 14 basic properties as plain fields, each present or not.
pub(crate) fn property_fields() -> impl Strategy<Value = PropertiesBuilder> {
    let s = || option::of(short_str());
    (
        (s(), s(), option::of(field_table()), option::of(any::<u8>())),
        (option::of(any::<u8>()), s(), s(), s(), s()),
        (option::of(any::<u64>()), s(), s(), s(), s()),
    )
        .prop_map(|((a, b, c, d), (e, f, g, h, i), (j, k, l, m, n))| {
            let mut builder = PropertiesBuilder::default();
            builder.content_type = a;
            builder.content_encoding = b;
            builder.headers = c;
            builder.delivery_mode = d;
            builder.priority = e;
            builder.correlation_id = f;
            builder.reply_to = g;
            builder.expiration = h;
            builder.message_id = i;
            builder.timestamp = j;
            builder.kind = k;
            builder.user_id = l;
            builder.app_id = m;
            builder.cluster_id = n;
            builder
        })
}

/// Basic properties, each of the 14 present or not.
pub(crate) fn properties() -> impl Strategy<Value = BasicProperties> {
    property_fields().prop_map(|fields| fields.build().expect("generated strings are short"))
}

/// A method argument type the method strategies can generate.
pub(crate) trait Arb: Sized + std::fmt::Debug + 'static {
    fn arb() -> BoxedStrategy<Self>;
}

macro_rules! arb_any {
    ($($ty:ty),*) => {$(
        impl Arb for $ty {
            fn arb() -> BoxedStrategy<Self> {
                any::<$ty>().boxed()
            }
        }
    )*};
}
arb_any!(bool, u8, u16, u32, u64);

impl Arb for ShortStr {
    fn arb() -> BoxedStrategy<Self> {
        short_str().boxed()
    }
}

impl Arb for LongStr {
    fn arb() -> BoxedStrategy<Self> {
        long_str().boxed()
    }
}

impl Arb for FieldTable {
    fn arb() -> BoxedStrategy<Self> {
        field_table().boxed()
    }
}

fn arb<T: Arb>() -> BoxedStrategy<T> {
    T::arb()
}

/// Lists every method with its fields: one strategy per method (every field random), and a match
/// that stops compiling if the codec gains a method missing here. Struct literals without `..`
/// stop compiling if a method gains a field missing here.
macro_rules! methods {
    ($($Name:ident { $($field:ident),* })*) => {
        /// One strategy per method, in the method table's order.
        pub(crate) fn method_variants() -> Vec<BoxedStrategy<Method>> {
            vec![$(methods!(@one $Name { $($field),* })),*]
        }

        fn _every_variant_is_listed(m: &Method) {
            match m {
                $(Method::$Name(_) => {})*
            }
        }
    };
    (@one $Name:ident {}) => {
        Just(Method::$Name($Name {})).boxed()
    };
    (@one $Name:ident { $($field:ident),+ }) => {
        ($(methods!(@arb $field),)+)
            .prop_map(|($($field,)+)| Method::$Name($Name { $($field),+ }))
            .boxed()
    };
    (@arb $field:ident) => { arb() };
}

methods! {
    ConnectionStart { version_major, version_minor, server_properties, mechanisms, locales }
    ConnectionStartOk { client_properties, mechanism, response, locale }
    ConnectionSecure { challenge }
    ConnectionSecureOk { response }
    ConnectionTune { channel_max, frame_max, heartbeat }
    ConnectionTuneOk { channel_max, frame_max, heartbeat }
    ConnectionOpen { virtual_host, capabilities, insist }
    ConnectionOpenOk { known_hosts }
    ConnectionClose { reply_code, reply_text, class_id, method_id }
    ConnectionCloseOk {}
    ConnectionBlocked { reason }
    ConnectionUnblocked {}
    ConnectionUpdateSecret { new_secret, reason }
    ConnectionUpdateSecretOk {}
    ChannelOpen { out_of_band }
    ChannelOpenOk { channel_id }
    ChannelFlow { active }
    ChannelFlowOk { active }
    ChannelClose { reply_code, reply_text, class_id, method_id }
    ChannelCloseOk {}
    AccessRequest { realm, exclusive, passive, active, write, read }
    AccessRequestOk { ticket }
    ExchangeDeclare {
        ticket, exchange, kind, passive, durable, auto_delete, internal, nowait, arguments
    }
    ExchangeDeclareOk {}
    ExchangeDelete { ticket, exchange, if_unused, nowait }
    ExchangeDeleteOk {}
    ExchangeBind { ticket, destination, source, routing_key, nowait, arguments }
    ExchangeBindOk {}
    ExchangeUnbind { ticket, destination, source, routing_key, nowait, arguments }
    ExchangeUnbindOk {}
    QueueDeclare { ticket, queue, passive, durable, exclusive, auto_delete, nowait, arguments }
    QueueDeclareOk { queue, message_count, consumer_count }
    QueueBind { ticket, queue, exchange, routing_key, nowait, arguments }
    QueueBindOk {}
    QueuePurge { ticket, queue, nowait }
    QueuePurgeOk { message_count }
    QueueDelete { ticket, queue, if_unused, if_empty, nowait }
    QueueDeleteOk { message_count }
    QueueUnbind { ticket, queue, exchange, routing_key, arguments }
    QueueUnbindOk {}
    BasicQos { prefetch_size, prefetch_count, global }
    BasicQosOk {}
    BasicConsume { ticket, queue, consumer_tag, no_local, no_ack, exclusive, nowait, arguments }
    BasicConsumeOk { consumer_tag }
    BasicCancel { consumer_tag, nowait }
    BasicCancelOk { consumer_tag }
    BasicPublish { ticket, exchange, routing_key, mandatory, immediate }
    BasicReturn { reply_code, reply_text, exchange, routing_key }
    BasicDeliver { consumer_tag, delivery_tag, redelivered, exchange, routing_key }
    BasicGet { ticket, queue, no_ack }
    BasicGetOk { delivery_tag, redelivered, exchange, routing_key, message_count }
    BasicGetEmpty { cluster_id }
    BasicAck { delivery_tag, multiple }
    BasicReject { delivery_tag, requeue }
    BasicRecoverAsync { requeue }
    BasicRecover { requeue }
    BasicRecoverOk {}
    BasicNack { delivery_tag, multiple, requeue }
    ConfirmSelect { nowait }
    ConfirmSelectOk {}
    TxSelect {}
    TxSelectOk {}
    TxCommit {}
    TxCommitOk {}
    TxRollback {}
    TxRollbackOk {}
}

/// Any method, every field random.
pub(crate) fn any_method() -> impl Strategy<Value = Method> {
    prop::strategy::Union::new(method_variants())
}

/// Any content-bearing method (publish, return, deliver, get-ok). Relies on
/// `method_variants` being in `METHODS` order, which `method_roundtrip.rs` checks.
pub(crate) fn content_method() -> impl Strategy<Value = Method> {
    let content = method_variants()
        .into_iter()
        .zip(METHODS)
        .filter(|(_, info)| info.has_content)
        .map(|(strategy, _)| strategy);
    prop::strategy::Union::new(content)
}
