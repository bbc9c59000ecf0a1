//! Sizes and counts against the real broker at `AMQP_URL`: 200 channels in use at once on one
//! connection, a 16 MiB message split over frames, bodies at frame boundaries, every message
//! property and every field-value type RabbitMQ accepts. (The client's own message size limit
//! is in `broker_poison.rs`.)

mod common;

use std::time::Duration;

use amqp_client::GetOptions;
use amqp_client::amqp_codec::table::FieldTable;
use amqp_client::amqp_codec::{
    BasicProperties, Decimal, FieldArray, FieldValue, LongStr, PropertiesBuilder, ReplyCode,
};
use amqp_client::{Channel, Connection, PublishOptions, QueueDeclareOptions};
use bytes::Bytes;
use common::{Cleanup, LIMIT, config, connect, plain, within};

/// Publishes in confirm mode (the channel must be in it) and asserts the ack.
async fn publish_acked(ch: &Channel, queue: &str, props: &BasicProperties, body: Bytes) {
    let outcome = ch
        .basic_publish("", queue, PublishOptions::default(), props, body)
        .await
        .expect("publish")
        .await
        .expect("confirm");
    assert!(outcome.is_acked(), "{outcome:?}");
}

/// A body whose every byte depends on its position, so a misplaced frame shows.
fn patterned(len: usize) -> Bytes {
    (0..len)
        .map(|i| (i.wrapping_mul(31) ^ (i >> 13)) as u8)
        .collect::<Vec<u8>>()
        .into()
}

/// Where two bodies first differ, for a readable failure.
fn assert_same_body(got: &[u8], want: &[u8]) {
    assert_eq!(got.len(), want.len(), "body length");
    if let Some(pos) = got.iter().zip(want).position(|(a, b)| a != b) {
        panic!("bodies differ first at byte {pos} of {}", want.len());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_channels_at_once_on_one_connection() {
    within(Duration::from_secs(60), async {
        let conn = connect().await;
        let mut set = tokio::task::JoinSet::new();
        for i in 0..200u32 {
            let conn = conn.clone();
            set.spawn(async move {
                let ch = conn.open_channel().await.unwrap();
                let q = ch
                    .queue_declare(
                        "",
                        QueueDeclareOptions::default()
                            .with_exclusive()
                            .with_auto_delete(),
                    )
                    .await
                    .unwrap();
                ch.confirm_select().await.unwrap();
                for j in 0..5u32 {
                    let body = Bytes::from(format!("channel {i} message {j}"));
                    publish_acked(&ch, &q.name, &BasicProperties::default(), body).await;
                }
                for j in 0..5u32 {
                    let m = ch
                        .basic_get(&q.name, GetOptions::default())
                        .await
                        .unwrap()
                        .expect("own message");
                    assert_eq!(
                        m.delivery.body,
                        format!("channel {i} message {j}").as_bytes()
                    );
                    assert_eq!(m.message_count, 4 - j);
                    m.delivery.ack().unwrap();
                }
                assert_eq!(
                    ch.queue_delete(&q.name, Default::default()).await.unwrap(),
                    0
                );
                let id = ch.id();
                ch.close().await.unwrap();
                id
            });
        }
        let ids = set.join_all().await;
        assert_eq!(ids.len(), 200);
        assert!(ids.iter().all(|&id| id >= 1 && id <= conn.channel_max()));
        assert!(conn.is_open());
        conn.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_16_mib_message_round_trips_byte_for_byte() {
    let mut names = Cleanup::new();
    within(Duration::from_secs(120), async {
        let conn = connect().await;
        let frame_max = conn.frame_max() as usize;
        assert!(
            frame_max > 0 && frame_max < 16 << 20,
            "the body must span frames"
        );
        let ch = conn.open_channel().await.unwrap();
        let q = names.queue("q-16mib");
        ch.queue_declare(&q, plain()).await.unwrap();
        ch.confirm_select().await.unwrap();
        let body = patterned(16 << 20);
        let props = BasicProperties::builder()
            .with_message_id("big")
            .build()
            .unwrap();
        // Publish + basic.get.
        publish_acked(&ch, &q, &props, body.clone()).await;
        let m = ch
            .basic_get(&q, GetOptions::default())
            .await
            .unwrap()
            .expect("the big message");
        assert_same_body(&m.delivery.body, &body);
        assert_eq!(m.delivery.properties, props);
        m.delivery.ack().unwrap();
        // Publish + consume, twice in a row (the read buffer is reused between messages).
        publish_acked(&ch, &q, &props, body.clone()).await;
        publish_acked(&ch, &q, &props, body.clone()).await;
        let mut consumer = ch.basic_consume(&q, Default::default()).await.unwrap();
        for _ in 0..2 {
            let d = consumer.recv().await.unwrap().unwrap();
            assert_same_body(&d.body, &body);
            d.ack().unwrap();
        }
        consumer.cancel().await.unwrap();
        assert_eq!(ch.queue_delete(&q, Default::default()).await.unwrap(), 0);
        conn.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn bodies_at_frame_boundaries_round_trip() {
    let mut names = Cleanup::new();
    within(LIMIT, async {
        let conn = connect().await;
        // A body frame carries at most frame-max minus 8 bytes of overhead.
        let chunk = conn.frame_max() as usize - 8;
        let ch = conn.open_channel().await.unwrap();
        let q = names.queue("q-boundaries");
        ch.queue_declare(&q, plain()).await.unwrap();
        ch.confirm_select().await.unwrap();
        let sizes = [
            0,
            1,
            chunk - 1,
            chunk,
            chunk + 1,
            2 * chunk,
            2 * chunk + 1,
            3 * chunk - 1,
        ];
        for &len in &sizes {
            publish_acked(&ch, &q, &BasicProperties::default(), patterned(len)).await;
        }
        for &len in &sizes {
            let m = ch
                .basic_get(&q, GetOptions::default())
                .await
                .unwrap()
                .expect("message");
            assert_same_body(&m.delivery.body, &patterned(len));
            m.delivery.ack().unwrap();
        }
        for &len in &sizes {
            publish_acked(&ch, &q, &BasicProperties::default(), patterned(len)).await;
        }
        let mut consumer = ch.basic_consume(&q, Default::default()).await.unwrap();
        for &len in &sizes {
            let d = consumer.recv().await.unwrap().unwrap();
            assert_same_body(&d.body, &patterned(len));
            d.ack().unwrap();
        }
        consumer.cancel().await.unwrap();
        ch.queue_delete(&q, Default::default()).await.unwrap();
        conn.close().await.unwrap();
    })
    .await;
}

/// A headers table with every field-value type RabbitMQ parses (its letters: t b B s u I i l
/// f d D S A T F V x), nested tables and arrays included.
fn every_field_type() -> FieldTable {
    let nested = FieldTable::builder()
        .insert("inner", "value")
        .insert(
            "deeper",
            FieldTable::builder()
                .insert("n", 7i32)
                .build()
                .expect("every_field_type"),
        )
        .build()
        .expect("every_field_type");
    let array: FieldArray = [
        FieldValue::I32(1),
        FieldValue::LongStr(LongStr::from("two")),
        FieldValue::Bool(false),
        FieldValue::Table(nested.clone()),
        FieldValue::Array([FieldValue::I64(-3)].into_iter().collect()),
        FieldValue::Void,
        FieldValue::Timestamp(1_234_567_890),
    ]
    .into_iter()
    .collect();
    FieldTable::builder()
        .insert("bool", true)
        .insert("i8", -8i8)
        .insert("u8", 200u8)
        .insert("i16", -16_000i16)
        .insert("u16", 60_000u16)
        .insert("i32", -2_000_000_000i32)
        .insert("u32", 4_000_000_000u32)
        .insert("i64", -9_000_000_000_000i64)
        .insert("f32", 1.5f32)
        .insert("f64", -2.25f64)
        .insert(
            "decimal",
            Decimal {
                scale: 2,
                value: 12_345,
            },
        )
        .insert("longstr", "hello, world")
        .insert(
            "longstr-binary",
            LongStr::from(vec![0xff, 0x00, 0xfe, 0x80]),
        )
        .insert("longstr-empty", "")
        .insert("array", array)
        .insert("array-empty", FieldArray::new())
        .insert("timestamp", FieldValue::Timestamp(1_700_000_000))
        .insert("table", nested)
        .insert("table-empty", FieldTable::new())
        .insert("void", FieldValue::Void)
        .insert(
            "bytes",
            FieldValue::ByteArray(Bytes::from_static(b"\x00\x01\x02\xff")),
        )
        .build()
        .expect("every_field_type")
}

fn all_fourteen(user: &str) -> PropertiesBuilder {
    BasicProperties::builder()
        .with_content_type("application/octet-stream")
        .with_content_encoding("identity")
        .with_headers(every_field_type())
        .persistent()
        .with_priority(7)
        .with_correlation_id("corr-42")
        .with_reply_to("amq.rabbitmq.reply-to-ish")
        .with_expiration("600000")
        .with_message_id("msg-0001")
        .with_timestamp(1_700_000_123)
        .with_kind("test.kind")
        // RabbitMQ refuses a user-id other than the connection's user.
        .with_user_id(user)
        .with_app_id("amqp-client-tests")
        .with_cluster_id("cluster-x")
}

fn assert_same_properties(got: &BasicProperties, want: &PropertiesBuilder) {
    let got_fields = got.to_builder();
    let got_headers = got_fields.headers.clone().expect("headers");
    let want_headers = want.headers.clone().expect("assert_same_properties");
    let got_entries: Vec<_> = got_headers.iter().collect();
    let want_entries: Vec<_> = want_headers.iter().collect();
    assert_eq!(got_entries.len(), want_entries.len(), "{got_headers:?}");
    for (g, w) in got_entries.iter().zip(&want_entries) {
        assert_eq!(g, w, "header entry");
    }
    assert_eq!(&got_fields, want, "every property");
    assert_eq!(
        got,
        &want.build().expect("valid properties"),
        "the same encoding"
    );
}

#[tokio::test]
async fn all_properties_and_every_field_type_round_trip() {
    let mut names = Cleanup::new();
    within(LIMIT, async {
        let conn = connect().await;
        let user = config().username;
        let ch = conn.open_channel().await.unwrap();
        let q = names.queue("q-properties");
        ch.queue_declare(&q, plain()).await.unwrap();
        ch.confirm_select().await.unwrap();
        let want = all_fourteen(&user);
        let props = want.build().unwrap();
        publish_acked(&ch, &q, &props, Bytes::from_static(b"props")).await;
        let m = ch
            .basic_get(&q, GetOptions::default())
            .await
            .unwrap()
            .expect("message");
        assert_same_properties(&m.delivery.properties, &want);
        m.delivery.ack().unwrap();
        publish_acked(&ch, &q, &props, Bytes::from_static(b"props")).await;
        let mut consumer = ch.basic_consume(&q, Default::default()).await.unwrap();
        let d = consumer.recv().await.unwrap().unwrap();
        assert_same_properties(&d.properties, &want);
        d.ack().unwrap();
        consumer.cancel().await.unwrap();
        // No properties at all round-trips too.
        publish_acked(&ch, &q, &BasicProperties::default(), Bytes::new()).await;
        let m = ch
            .basic_get(&q, GetOptions::default())
            .await
            .unwrap()
            .expect("message");
        assert!(m.delivery.properties.is_empty());
        assert!(m.delivery.body.is_empty());
        m.delivery.ack().unwrap();
        ch.queue_delete(&q, Default::default()).await.unwrap();
        conn.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_user_id_other_than_the_connections_is_refused_with_406() {
    let mut names = Cleanup::new();
    within(LIMIT, async {
        let conn = connect().await;
        let ch = conn.open_channel().await.unwrap();
        let q = names.queue("q-user-id");
        ch.queue_declare(&q, plain()).await.unwrap();
        ch.confirm_select().await.unwrap();
        let props = BasicProperties::builder()
            .with_user_id("someone-else")
            .build()
            .unwrap();
        let err = ch
            .basic_publish("", &q, PublishOptions::default(), &props, "x")
            .await
            .unwrap()
            .await
            .unwrap_err();
        common::assert_channel_closed(&err, ReplyCode::PRECONDITION_FAILED);
        let ch = conn.open_channel().await.unwrap();
        ch.queue_delete(&q, Default::default()).await.unwrap();
        conn.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn channel_max_is_enforced_and_ids_are_reused() {
    within(LIMIT, async {
        let mut cfg = config();
        cfg.channel_max = 3;
        let conn = Connection::connect_with(cfg).await.unwrap();
        assert_eq!(conn.channel_max(), 3);
        let mut open = Vec::new();
        for _ in 0..3 {
            open.push(conn.open_channel().await.unwrap());
        }
        let mut ids: Vec<u16> = open.iter().map(Channel::id).collect();
        ids.sort_unstable();
        assert_eq!(ids, [1, 2, 3]);
        let err = conn.open_channel().await.unwrap_err();
        assert!(
            matches!(err, amqp_client::Error::ChannelsExhausted(3)),
            "{err:?}"
        );
        let freed = open.remove(1);
        let freed_id = freed.id();
        freed.close().await.unwrap();
        let again = conn.open_channel().await.unwrap();
        assert_eq!(again.id(), freed_id);
        again.basic_qos(1, Default::default()).await.unwrap();
        // The closed handle does not act on the new opening of its id.
        let err = freed.basic_qos(1, Default::default()).await.unwrap_err();
        assert!(
            matches!(err, amqp_client::Error::ChannelClosedByApp),
            "{err:?}"
        );
        assert!(again.is_open());
        conn.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn properties_too_large_for_a_frame_are_refused_locally() {
    let mut names = Cleanup::new();
    within(LIMIT, async {
        let conn = connect().await;
        let ch = conn.open_channel().await.unwrap();
        let q = names.queue("q-big-headers");
        ch.queue_declare(&q, plain()).await.unwrap();
        let huge = FieldTable::builder()
            .insert("blob", "x".repeat(conn.frame_max() as usize))
            .build()
            .unwrap();
        let props = BasicProperties::builder()
            .with_headers(huge)
            .build()
            .unwrap();
        let err = ch
            .basic_publish("", &q, PublishOptions::default(), &props, "body")
            .await
            .unwrap_err();
        assert!(matches!(err, amqp_client::Error::Encode(_)), "{err:?}");
        // Nothing half-written: the channel and connection carry on.
        ch.confirm_select().await.unwrap();
        publish_acked(
            &ch,
            &q,
            &BasicProperties::default(),
            Bytes::from_static(b"ok"),
        )
        .await;
        assert_eq!(ch.queue_delete(&q, Default::default()).await.unwrap(), 1);
        conn.close().await.unwrap();
    })
    .await;
}
