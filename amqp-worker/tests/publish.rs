//! Publishing against the real broker: a mandatory publish of an unroutable message is an
//! error, a routed one is confirmed persistent, and a delayed send arrives no earlier than
//! its delay (a short delay is not held back by a longer one sent first).

// Tests unwrap (a failure is the test failing) and print their figures.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod support;

use std::time::{Duration, Instant};

use amqp_client::{BindOptions, GetOptions, NackOptions};
use amqp_client::{ExchangeKind, QueueDeclareOptions};
use amqp_test_support::unique_name;
use amqp_worker::publisher::{DELAY_TARGET_HEADER, UNROUTABLE_QUEUE, delay_queue_name};
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
        ch.exchange_declare(&exchange, ExchangeKind::Direct, Default::default())
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
        ch.queue_declare(&q, QueueDeclareOptions::default().with_durable())
            .await
            .unwrap();
        publisher
            .publish("", &q, &Default::default(), "kept")
            .await
            .unwrap();
        let got = ch
            .basic_get(&q, GetOptions::default())
            .await
            .unwrap()
            .unwrap();
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
        ch.queue_declare(&q, QueueDeclareOptions::default().with_durable())
            .await
            .unwrap();
        let mut consumer = ch.basic_consume(&q, Default::default()).await.unwrap();
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

/// Takes the message with id `id` from the shared catch-all queue, putting back the others
/// (requeued in place) untouched.
async fn take_unroutable(
    conn: &amqp_client::Connection,
    id: &str,
) -> Option<amqp_client::Delivery> {
    let ch = conn.open_channel().await.unwrap();
    let mut others = Vec::new();
    let mut found = None;
    while let Some(got) = ch
        .basic_get(UNROUTABLE_QUEUE, GetOptions::default())
        .await
        .unwrap()
    {
        let d = got.delivery;
        if d.properties
            .message_id()
            .and_then(|m| m.as_str().map(str::to_owned))
            .as_deref()
            == Some(id)
        {
            found = Some(d);
            break;
        }
        others.push(d);
    }
    for d in others {
        d.nack(NackOptions::requeue()).unwrap();
    }
    if let Some(d) = &found {
        d.ack().unwrap();
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_send_checks_its_target_and_catches_what_vanished_during_the_delay() {
    let mut cleanup = Cleanup::new();
    within(LIMIT, async {
        let conn = connect().await;
        let publisher = Publisher::open(&conn).await.unwrap();
        let delay = Duration::from_millis(700);
        // A target missing at send time: an error, nothing sent.
        let missing = unique_name("amqp-worker-test-no-target");
        let err = publisher
            .publish_delayed("", &missing, delay, &task_properties("m-1"), "x")
            .await
            .unwrap_err();
        assert!(matches!(err, PublishError::NoTarget { .. }), "{err:?}");
        let err = publisher
            .publish_delayed(&missing, "k", delay, &task_properties("m-2"), "x")
            .await
            .unwrap_err();
        assert!(matches!(err, PublishError::NoTarget { .. }), "{err:?}");
        assert!(
            err.to_string().contains(&format!("exchange '{missing}'")),
            "{err}"
        );
        // The publishing channel is still usable afterwards.
        assert!(publisher.is_open());

        // A queue and an exchange that exist at send time and are deleted during the delay.
        let q = unique_name("amqp-worker-test-vanishing");
        let x = format!("{q}-x");
        let xq = format!("{q}-xq");
        for name in [&q, &xq] {
            cleanup.queue(name);
        }
        cleanup.exchange(&x);
        cleanup.queue(&delay_queue_name("", &q, delay));
        cleanup.queue(&delay_queue_name(&x, "k", delay));
        let ch = conn.open_channel().await.unwrap();
        for name in [&q, &xq] {
            ch.queue_declare(name, QueueDeclareOptions::default())
                .await
                .unwrap();
        }
        ch.exchange_declare(&x, ExchangeKind::Direct, Default::default())
            .await
            .unwrap();
        ch.queue_bind(&xq, &x, "k", BindOptions::default())
            .await
            .unwrap();
        let (qid, xid) = (
            unique_name("vanished-queue"),
            unique_name("vanished-exchange"),
        );
        publisher
            .publish_delayed("", &q, delay, &task_properties(&qid), "to a queue")
            .await
            .unwrap();
        publisher
            .publish_delayed(&x, "k", delay, &task_properties(&xid), "to an exchange")
            .await
            .unwrap();
        ch.queue_delete(&q, Default::default()).await.unwrap();
        ch.exchange_delete(&x, Default::default()).await.unwrap();
        tokio::time::sleep(delay + Duration::from_millis(500)).await;
        // A worker's metrics show the catch-all queue's depth (shared: at least these two).
        let mut config = support::test_config("unroutable-gauge");
        config.queue_depth_interval = Duration::from_millis(100);
        cleanup.config(&config);
        let worker =
            amqp_worker::Worker::new(config, amqp_worker::handler_fn(|_| async { Ok(()) }))
                .unwrap();
        let (metrics, shutdown) = (worker.metrics(), worker.shutdown());
        let running = tokio::spawn(worker.run());
        support::wait_until(Duration::from_secs(10), "the unroutable gauge", || {
            metrics.snapshot().unroutable_depth.is_some_and(|n| n >= 2)
        })
        .await;
        let text = metrics.render_prometheus();
        shutdown.trigger();
        running.await.unwrap().unwrap();
        assert!(
            text.contains("amqp_worker_delayed_unroutable_messages{queue="),
            "{text}"
        );
        let mut caught = Vec::new();
        for id in [&qid, &xid] {
            let started = Instant::now();
            loop {
                if let Some(d) = take_unroutable(&conn, id).await {
                    let h = d.properties.headers().unwrap();
                    caught.push((
                        id.clone(),
                        h.get(DELAY_TARGET_HEADER)
                            .and_then(|v| v.as_str().map(str::to_owned)),
                    ));
                    break;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(5),
                    "{id} was dropped, not caught"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        println!("delayed send, target vanished: caught in {UNROUTABLE_QUEUE}: {caught:?}");
        assert_eq!(caught[0].1, Some(format!("queue:{q}")));
        assert_eq!(caught[1].1, Some(format!("exchange:{x}")));
        conn.close().await.unwrap();
    })
    .await;
}
