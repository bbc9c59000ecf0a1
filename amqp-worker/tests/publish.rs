//! Publishing against the real broker: a mandatory publish of an unroutable message is an
//! error, a routed one is confirmed persistent, and a delayed send arrives no earlier than
//! its delay (a short delay is not held back by a longer one sent first).

// Tests unwrap (a failure is the test failing) and print their figures.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod support;

use std::time::{Duration, Instant};

use amqp_client::amqp_codec::FieldTable;
use amqp_client::{ExchangeKind, QueueDeclareOptions};
use amqp_test_support::unique_name;
use amqp_worker::publisher::delay_queue_name;
use amqp_worker::{PublishError, Publisher, task_properties};
use support::{Cleanup, connect, within};

const LIMIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn an_unroutable_mandatory_publish_is_an_error() {
    let mut cleanup = Cleanup::new();
    within(LIMIT, async {
        let conn = connect().await;
        let exchange = unique_name("amqp-worker-test-unroutable");
        cleanup.exchange(&exchange);
        let ch = conn.open_channel().await.unwrap();
        ch.exchange_declare(
            &exchange,
            ExchangeKind::Direct,
            Default::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        let publisher = Publisher::open(&conn).await.unwrap();
        let err = publisher
            .publish(
                &exchange,
                "nobody-listens",
                &task_properties("u-1"),
                "lost?",
            )
            .await
            .unwrap_err();
        println!("unroutable: {err}");
        match &err {
            PublishError::Unroutable {
                reply_code,
                routing_key,
                ..
            } => {
                assert_eq!(*reply_code, 312);
                assert_eq!(routing_key, "nobody-listens");
            }
            other => panic!("expected Unroutable, got {other:?}"),
        }
        // The default exchange with a queue name that does not exist: returned as well.
        let missing = unique_name("amqp-worker-test-no-such-queue");
        let err = publisher
            .publish("", &missing, &task_properties("u-2"), "x")
            .await
            .unwrap_err();
        assert!(matches!(err, PublishError::Unroutable { .. }), "{err:?}");
        // The channel is still usable, and a routed publish is confirmed and persistent.
        let q = unique_name("amqp-worker-test-routed");
        cleanup.queue(&q);
        ch.queue_declare(
            &q,
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
        publisher
            .publish("", &q, &Default::default(), "kept")
            .await
            .unwrap();
        let got = ch.basic_get(&q, false).await.unwrap().unwrap();
        assert!(
            got.delivery.properties.is_persistent(),
            "persistent by default"
        );
        got.delivery.ack().unwrap();
        conn.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_delayed_send_arrives_no_earlier_than_its_delay() {
    let mut cleanup = Cleanup::new();
    within(LIMIT, async {
        let conn = connect().await;
        let q = unique_name("amqp-worker-test-delayed");
        cleanup.queue(&q);
        let (long, short) = (Duration::from_millis(2500), Duration::from_millis(800));
        cleanup.queue(&delay_queue_name("", &q, long));
        cleanup.queue(&delay_queue_name("", &q, short));
        let ch = conn.open_channel().await.unwrap();
        ch.queue_declare(
            &q,
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
        let mut consumer = ch
            .basic_consume(&q, Default::default(), FieldTable::default())
            .await
            .unwrap();
        let publisher = Publisher::open(&conn).await.unwrap();
        let sent = Instant::now();
        // The long delay first: per-delay queues mean it cannot hold back the short one.
        publisher
            .publish_delayed("", &q, long, &task_properties("late"), "late")
            .await
            .unwrap();
        publisher
            .publish_delayed("", &q, short, &task_properties("early"), "early")
            .await
            .unwrap();
        let mut arrivals = Vec::new();
        for _ in 0..2 {
            let d = consumer.recv().await.unwrap().unwrap();
            arrivals.push((
                String::from_utf8_lossy(&d.body).into_owned(),
                sent.elapsed(),
            ));
            d.ack().unwrap();
        }
        println!("delayed send: {arrivals:?} (delays {short:?} and {long:?}), lost 0");
        assert_eq!(arrivals[0].0, "early");
        assert_eq!(arrivals[1].0, "late");
        assert!(arrivals[0].1 >= short, "{:?} < {short:?}", arrivals[0].1);
        assert!(arrivals[1].1 >= long, "{:?} < {long:?}", arrivals[1].1);
        assert!(arrivals[1].1 < long + Duration::from_secs(3));
        conn.close().await.unwrap();
    })
    .await;
}
