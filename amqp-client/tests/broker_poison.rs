//! No message may block its queue, against the real broker at `AMQP_URL`: a message over the
//! client's `Limits::max_message_size` reaches its consumer (or `basic_get`) as
//! `Error::UnreadableDelivery` with its tag, is dead-lettered byte for byte by rejecting it,
//! and the next message flows; headers nested far deeper than any fixed limit decode. Before,
//! the first closed the channel (and came back on every reconnect) and the second closed the
//! connection with 502, again on every redelivery.

mod common;

use std::time::Duration;

use amqp_client::GetOptions;
use amqp_client::amqp_codec::table::FieldTable;
use amqp_client::amqp_codec::{BasicProperties, FieldValue};
use amqp_client::{
    Channel, ConsumeOptions, DiscardReason, Error, Limits, PublishOptions, QueueDeclareOptions,
};
use bytes::Bytes;
use common::{Cleanup, LIMIT, config, connect, within};

/// A body whose every byte depends on its position, so a misplaced frame shows.
fn patterned(len: usize) -> Bytes {
    (0..len)
        .map(|i| (i.wrapping_mul(31) ^ (i >> 13)) as u8)
        .collect::<Vec<u8>>()
        .into()
}

/// Publishes in confirm mode and asserts the ack.
async fn publish_acked(ch: &Channel, queue: &str, props: &BasicProperties, body: Bytes) {
    let outcome = ch
        .basic_publish("", queue, PublishOptions::default(), props, body)
        .await
        .expect("publish")
        .await
        .expect("confirm");
    assert!(outcome.is_acked(), "{outcome:?}");
}

/// A queue `q` dead-lettering into `dlq` through the default exchange.
async fn declare_with_dead_letters(ch: &Channel, q: &str, dlq: &str) {
    let durable = QueueDeclareOptions::default();
    ch.queue_declare(dlq, durable.clone())
        .await
        .expect("declare the dead-letter queue");
    let args = FieldTable::builder()
        .insert("x-dead-letter-exchange", "")
        .insert("x-dead-letter-routing-key", dlq)
        .build()
        .expect("short keys");
    ch.queue_declare(q, durable.with_arguments(args))
        .await
        .expect("declare the queue");
}

/// The dead-lettered message, fetched by a connection without the limit.
async fn dead_lettered(ch: &Channel, dlq: &str) -> Bytes {
    for _ in 0..100 {
        if let Some(got) = ch
            .basic_get(dlq, GetOptions::no_ack())
            .await
            .expect("basic.get")
        {
            return got.delivery.body;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("nothing was dead-lettered into {dlq}");
}

#[tokio::test]
async fn an_oversized_delivery_is_handed_over_dead_lettered_and_the_queue_flows_on() {
    let mut names = Cleanup::new();
    within(LIMIT, async {
        let (q, dlq) = (names.queue("poison-big"), names.queue("poison-big-dlq"));
        let publisher = connect().await;
        let pch = publisher.open_channel().await.unwrap();
        declare_with_dead_letters(&pch, &q, &dlq).await;
        pch.confirm_select().await.unwrap();
        let big = patterned(2 << 20);
        publish_acked(&pch, &q, &BasicProperties::default(), big.clone()).await;
        publish_acked(&pch, &q, &BasicProperties::default(), "after".into()).await;

        let mut cfg = config();
        cfg.limits = Limits {
            max_message_size: 1 << 20,
            ..Limits::default()
        };
        let limited = amqp_client::Connection::connect_with(cfg).await.unwrap();
        let ch = limited.open_channel().await.unwrap();
        let other = limited.open_channel().await.unwrap();
        let mut consumer = ch
            .basic_consume(&q, ConsumeOptions::default())
            .await
            .unwrap();
        let Some(Err(Error::UnreadableDelivery(unreadable))) = consumer.recv().await else {
            panic!("expected the oversized delivery, as unreadable");
        };
        assert_eq!(unreadable.body_size, 2 << 20);
        assert_eq!(
            unreadable.reason,
            DiscardReason::TooLarge {
                declared: 2 << 20,
                limit: 1 << 20
            }
        );
        assert_eq!(unreadable.routing_key.as_str(), Some(q.as_str()));
        assert!(!unreadable.to_string().is_empty());
        unreadable.reject().unwrap();
        // The queue flows on, on the same consumer, channel and connection.
        let next = consumer.recv().await.unwrap().unwrap();
        assert_eq!(&next.body[..], b"after");
        next.ack().unwrap();
        other.basic_qos(1, Default::default()).await.unwrap();
        assert!(limited.is_open());
        assert_eq!(limited.delivery_stats().unreadable, 1);
        // The broker dead-lettered the original, byte for byte.
        assert_eq!(dead_lettered(&pch, &dlq).await, big);
        drop(consumer);
        limited.close().await.unwrap();
        publisher.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn an_oversized_get_is_an_error_carrying_its_tag_and_can_be_dead_lettered() {
    let mut names = Cleanup::new();
    within(LIMIT, async {
        let (q, dlq) = (names.queue("poison-get"), names.queue("poison-get-dlq"));
        let publisher = connect().await;
        let pch = publisher.open_channel().await.unwrap();
        declare_with_dead_letters(&pch, &q, &dlq).await;
        pch.confirm_select().await.unwrap();
        let big = patterned(3 << 19);
        publish_acked(&pch, &q, &BasicProperties::default(), big.clone()).await;

        let mut cfg = config();
        cfg.limits = Limits {
            max_message_size: 1 << 20,
            ..Limits::default()
        };
        let limited = amqp_client::Connection::connect_with(cfg).await.unwrap();
        let ch = limited.open_channel().await.unwrap();
        let Err(Error::UnreadableDelivery(unreadable)) =
            ch.basic_get(&q, GetOptions::default()).await
        else {
            panic!("expected the oversized message, as unreadable");
        };
        assert!(!unreadable.redelivered);
        unreadable.reject().unwrap();
        assert_eq!(dead_lettered(&pch, &dlq).await, big);
        // The channel still answers.
        assert!(
            ch.basic_get(&q, GetOptions::default())
                .await
                .unwrap()
                .is_none()
        );
        limited.close().await.unwrap();
        publisher.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn headers_nested_two_hundred_deep_are_consumed() {
    let mut names = Cleanup::new();
    within(LIMIT, async {
        let q = names.queue("poison-deep");
        let conn = connect().await;
        let ch = conn.open_channel().await.unwrap();
        ch.queue_declare(&q, QueueDeclareOptions::default())
            .await
            .unwrap();
        ch.confirm_select().await.unwrap();
        // 200 tables, each the only entry of the one around it (RabbitMQ and amqp091-go carry
        // this deep; a 32-level limit refused it).
        let mut table = FieldTable::builder().insert("leaf", 7i32).build().unwrap();
        for _ in 0..200 {
            table = FieldTable::builder().insert("k", table).build().unwrap();
        }
        let props = BasicProperties::builder()
            .with_headers(table)
            .build()
            .unwrap();
        publish_acked(&ch, &q, &props, "deep".into()).await;
        publish_acked(&ch, &q, &BasicProperties::default(), "next".into()).await;

        let mut consumer = ch
            .basic_consume(&q, ConsumeOptions::default())
            .await
            .unwrap();
        let d = consumer.recv().await.unwrap().unwrap();
        let mut depth = 0;
        let mut level = d.properties.headers().expect("headers");
        while let Some(FieldValue::Table(inner)) = level.get("k") {
            depth += 1;
            level = inner;
        }
        assert_eq!(depth, 200);
        assert_eq!(level.get("leaf"), Some(FieldValue::I32(7)));
        assert!(format!("{:?}", d.properties).contains("leaf"));
        d.ack().unwrap();
        let next = consumer.recv().await.unwrap().unwrap();
        assert_eq!(&next.body[..], b"next");
        next.ack().unwrap();
        assert!(conn.is_open());
        drop(consumer);
        conn.close().await.unwrap();
    })
    .await;
}
