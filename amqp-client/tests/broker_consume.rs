//! Consumers against the real broker at `AMQP_URL`: prefetch (per consumer and global),
//! consumer tags, no-wait consumers, exclusive consumers, priorities, cancel by the client and
//! by the broker, dropping a consumer, and the bounded consumer buffer (pause and resume of
//! reading).

mod common;

use std::time::Duration;

use amqp_client::GetOptions;
use amqp_client::amqp_codec::ReplyCode;
use amqp_client::amqp_codec::table::FieldTable;
use amqp_client::{ConsumeOptions, Error, Limits, QosOptions};
use common::{
    Cleanup, LIMIT, assert_channel_closed, bodies, config, connect, fill, next, plain, quiet,
    ready_count, within,
};

#[tokio::test]
async fn qos_prefetch_limits_unacked_deliveries() {
    let mut names = Cleanup::new();
    within(LIMIT, async {
        let conn = connect().await;
        let q = names.queue("q-prefetch");
        let ch = conn.open_channel().await.unwrap();
        ch.queue_declare(&q, plain()).await.unwrap();
        fill(&conn, &q, &bodies("p", 10)).await;
        const N: usize = 3;
        ch.basic_qos(N as u16, QosOptions::default()).await.unwrap();
        let mut consumer = ch.basic_consume(&q, Default::default()).await.unwrap();
        let mut held = Vec::new();
        for i in 0..N {
            let d = next(&mut consumer).await;
            assert_eq!(d.body, format!("p{i}").as_bytes());
            held.push(d);
        }
        assert!(
            quiet(&mut consumer, Duration::from_millis(700)).await,
            "more than prefetch {N} unacked deliveries"
        );
        // One ack frees exactly one slot.
        held.remove(0).ack().unwrap();
        let d = next(&mut consumer).await;
        assert_eq!(d.body, format!("p{N}").as_bytes());
        held.push(d);
        assert!(quiet(&mut consumer, Duration::from_millis(500)).await);
        // ack-multiple of the newest settles all held; the rest flow.
        held.last().unwrap().ack_multiple().unwrap();
        for i in N + 1..10 {
            let d = next(&mut consumer).await;
            assert_eq!(d.body, format!("p{i}").as_bytes());
            d.ack().unwrap();
        }
        consumer.cancel().await.unwrap();
        assert!(consumer.recv().await.is_none());
        assert_eq!(ready_count(&ch, &q).await, 0);
        ch.queue_delete(&q, Default::default()).await.unwrap();
        conn.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn global_qos_is_shared_by_the_channel_consumers() {
    let mut names = Cleanup::new();
    within(LIMIT, async {
        let conn = connect().await;
        let q1 = names.queue("q-gqos-1");
        let q2 = names.queue("q-gqos-2");
        let ch = conn.open_channel().await.unwrap();
        for q in [&q1, &q2] {
            ch.queue_declare(q, plain()).await.unwrap();
            fill(&conn, q, &bodies("g", 5)).await;
        }
        ch.basic_qos(4, QosOptions::default().with_global())
            .await
            .unwrap();
        let mut c1 = ch.basic_consume(&q1, Default::default()).await.unwrap();
        let mut c2 = ch.basic_consume(&q2, Default::default()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut got = 0;
        for c in [&mut c1, &mut c2] {
            while let Ok(Some(d)) = tokio::time::timeout(Duration::from_millis(100), c.recv()).await
            {
                d.unwrap();
                got += 1;
            }
        }
        assert_eq!(got, 4, "a global prefetch of 4 spans both consumers");
        drop((c1, c2));
        ch.close().await.unwrap();
        let ch = conn.open_channel().await.unwrap();
        for q in [&q1, &q2] {
            assert_eq!(ch.queue_delete(q, Default::default()).await.unwrap(), 5);
        }
        conn.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn consume_with_a_client_chosen_tag() {
    let mut names = Cleanup::new();
    within(LIMIT, async {
        let conn = connect().await;
        let q = names.queue("q-tag");
        let ch = conn.open_channel().await.unwrap();
        ch.queue_declare(&q, plain()).await.unwrap();
        let tag = amqp_test_support::unique_name("my-consumer");
        let mut consumer = ch
            .basic_consume(&q, ConsumeOptions::tagged(tag.clone()))
            .await
            .unwrap();
        assert_eq!(consumer.tag(), tag);
        fill(&conn, &q, &bodies("t", 1)).await;
        let d = next(&mut consumer).await;
        assert_eq!(d.consumer_tag, tag.as_str());
        assert_eq!(d.routing_key, q.as_str());
        d.ack().unwrap();
        // The same tag twice on one channel is a connection error (530 NOT_ALLOWED) in
        // RabbitMQ, so it is not tried here. Cancel through the channel by tag.
        ch.basic_cancel(&tag).await.unwrap();
        assert!(
            consumer.recv().await.is_none(),
            "stream ends after basic.cancel"
        );
        // A server-chosen tag.
        let c2 = ch.basic_consume(&q, Default::default()).await.unwrap();
        assert!(c2.tag().starts_with("amq.ctag-"), "{}", c2.tag());
        c2.cancel().await.unwrap();
        ch.queue_delete(&q, Default::default()).await.unwrap();
        conn.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn nowait_consume_with_a_tag_receives() {
    let mut names = Cleanup::new();
    within(LIMIT, async {
        let conn = connect().await;
        let q = names.queue("q-nowait-consume");
        let ch = conn.open_channel().await.unwrap();
        ch.queue_declare(&q, plain()).await.unwrap();
        fill(&conn, &q, &bodies("n", 3)).await;
        let err = ch
            .basic_consume(&q, ConsumeOptions::default().with_nowait())
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidUse(_)), "{err:?}");
        let mut consumer = ch
            .basic_consume(&q, ConsumeOptions::tagged("nowait-tag").with_nowait())
            .await
            .unwrap();
        for i in 0..3 {
            let d = next(&mut consumer).await;
            assert_eq!(d.body, format!("n{i}").as_bytes());
            d.ack().unwrap();
        }
        consumer.cancel().await.unwrap();
        assert!(consumer.recv().await.is_none());
        ch.queue_delete(&q, Default::default()).await.unwrap();
        conn.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn exclusive_consumer_refuses_a_second_with_403() {
    let mut names = Cleanup::new();
    within(LIMIT, async {
        let conn = connect().await;
        let q = names.queue("q-excl-consumer");
        let ch = conn.open_channel().await.unwrap();
        ch.queue_declare(&q, plain()).await.unwrap();
        let first = ch
            .basic_consume(&q, ConsumeOptions::default().with_exclusive())
            .await
            .unwrap();
        let ch2 = conn.open_channel().await.unwrap();
        let err = ch2.basic_consume(&q, Default::default()).await.unwrap_err();
        assert_channel_closed(&err, ReplyCode::ACCESS_REFUSED);
        // The first consumer is unaffected.
        fill(&conn, &q, &bodies("x", 1)).await;
        let mut first = first;
        next(&mut first).await.ack().unwrap();
        first.cancel().await.unwrap();
        ch.queue_delete(&q, Default::default()).await.unwrap();
        conn.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn consumer_priority_argument_is_honoured() {
    let mut names = Cleanup::new();
    within(LIMIT, async {
        let conn = connect().await;
        let q = names.queue("q-consumer-priority");
        let ch = conn.open_channel().await.unwrap();
        ch.queue_declare(&q, plain()).await.unwrap();
        let prio = |p: i32| {
            FieldTable::builder()
                .insert("x-priority", p)
                .build()
                .unwrap()
        };
        let mut low = ch
            .basic_consume(&q, ConsumeOptions::default().with_arguments(prio(1)))
            .await
            .unwrap();
        let mut high = ch
            .basic_consume(&q, ConsumeOptions::default().with_arguments(prio(10)))
            .await
            .unwrap();
        fill(&conn, &q, &bodies("pr", 5)).await;
        for i in 0..5 {
            let d = next(&mut high).await;
            assert_eq!(d.body, format!("pr{i}").as_bytes());
            d.ack().unwrap();
        }
        assert!(
            quiet(&mut low, Duration::from_millis(300)).await,
            "low priority got a message"
        );
        high.cancel().await.unwrap();
        low.cancel().await.unwrap();
        ch.queue_delete(&q, Default::default()).await.unwrap();
        conn.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn client_cancel_yields_buffered_then_ends() {
    let mut names = Cleanup::new();
    within(LIMIT, async {
        let conn = connect().await;
        let q = names.queue("q-cancel");
        let ch = conn.open_channel().await.unwrap();
        ch.queue_declare(&q, plain()).await.unwrap();
        fill(&conn, &q, &bodies("c", 3)).await;
        let mut consumer = ch.basic_consume(&q, Default::default()).await.unwrap();
        let first = next(&mut consumer).await;
        consumer.cancel().await.unwrap();
        let mut rest = Vec::new();
        while let Some(d) = consumer.recv().await {
            rest.push(d.unwrap());
        }
        assert_eq!(
            rest.len(),
            2,
            "deliveries sent before cancel-ok are handed out"
        );
        assert!(consumer.recv().await.is_none(), "stays ended");
        // Buffered deliveries can still be settled after the cancel.
        first.ack().unwrap();
        for d in rest {
            d.ack().unwrap();
        }
        assert_eq!(ready_count(&ch, &q).await, 0);
        ch.queue_delete(&q, Default::default()).await.unwrap();
        conn.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn dropping_a_consumer_hands_back_its_messages() {
    let mut names = Cleanup::new();
    within(LIMIT, async {
        let conn = connect().await;
        let q = names.queue("q-drop-consumer");
        let ch = conn.open_channel().await.unwrap();
        ch.queue_declare(&q, plain()).await.unwrap();
        fill(&conn, &q, &bodies("d", 4)).await;
        let mut consumer = ch.basic_consume(&q, Default::default()).await.unwrap();
        let first = next(&mut consumer).await;
        tokio::time::sleep(Duration::from_millis(200)).await; // let the rest be buffered
        drop(consumer);
        first.ack().unwrap();
        // The three never handed out are requeued; wait until they are ready again.
        common::await_ready(&ch, &q, 3).await;
        let m = ch
            .basic_get(&q, GetOptions::default())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(m.delivery.body, "d1");
        assert!(m.delivery.redelivered);
        m.delivery.ack().unwrap();
        assert_eq!(ch.queue_delete(&q, Default::default()).await.unwrap(), 2);
        conn.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn broker_cancel_on_queue_delete_ends_the_stream_with_an_error() {
    let mut names = Cleanup::new();
    within(LIMIT, async {
        let conn = connect().await;
        let q = names.queue("q-server-cancel");
        let ch = conn.open_channel().await.unwrap();
        ch.queue_declare(&q, plain()).await.unwrap();
        let mut consumer = ch.basic_consume(&q, Default::default()).await.unwrap();
        let tag = consumer.tag().to_owned();
        let other = conn.open_channel().await.unwrap();
        other.queue_delete(&q, Default::default()).await.unwrap();
        match consumer.recv().await {
            Some(Err(Error::ConsumerCancelled { consumer_tag })) => assert_eq!(consumer_tag, tag),
            other => panic!("expected ConsumerCancelled, got {other:?}"),
        }
        assert!(
            consumer.recv().await.is_none(),
            "the stream ends after the cancel"
        );
        // The channel is still usable.
        assert!(ch.is_open());
        ch.basic_qos(5, Default::default()).await.unwrap();
        conn.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn two_consumers_on_one_channel_get_their_own_messages() {
    let mut names = Cleanup::new();
    within(LIMIT, async {
        let conn = connect().await;
        let qa = names.queue("q-two-a");
        let qb = names.queue("q-two-b");
        let ch = conn.open_channel().await.unwrap();
        for q in [&qa, &qb] {
            ch.queue_declare(q, plain()).await.unwrap();
        }
        let mut ca = ch.basic_consume(&qa, Default::default()).await.unwrap();
        let mut cb = ch.basic_consume(&qb, Default::default()).await.unwrap();
        fill(&conn, &qa, &bodies("a", 50)).await;
        fill(&conn, &qb, &bodies("b", 50)).await;
        for i in 0..50 {
            let a = next(&mut ca).await;
            assert_eq!(a.body, format!("a{i}").as_bytes());
            assert_eq!(a.consumer_tag, ca.tag());
            a.ack().unwrap();
            let b = next(&mut cb).await;
            assert_eq!(b.body, format!("b{i}").as_bytes());
            b.ack().unwrap();
        }
        ca.cancel().await.unwrap();
        cb.cancel().await.unwrap();
        for q in [&qa, &qb] {
            assert_eq!(ch.queue_delete(q, Default::default()).await.unwrap(), 0);
        }
        conn.close().await.unwrap();
    })
    .await;
}

/// With prefetch 0 a consumer's buffer is bounded by `Limits::consumer_buffer`; when it is
/// full the connection stops reading, and it must resume, frames already read included, as
/// soon as the application takes deliveries again.
///
/// The bound itself is what is checked: the broker pushes 2.4 MiB while the application takes
/// nothing, and the client may read only what fills the buffer of 4 plus one read's worth
/// (at most [`PAUSED_READ_BOUND`] bytes). With an unbounded buffer it reads all of it.
#[tokio::test]
async fn a_full_consumer_buffer_pauses_reading_and_resumes() {
    const MESSAGES: usize = 300;
    const PAD: usize = 8 * 1024;
    let mut names = Cleanup::new();
    within(LIMIT, async {
        let q = names.queue("q-small-buffer");
        let publisher = connect().await;
        let pch = publisher.open_channel().await.unwrap();
        pch.queue_declare(&q, plain()).await.unwrap();
        let padding = "x".repeat(PAD);
        let bodies: Vec<String> = (0..MESSAGES).map(|i| format!("b{i}/{padding}")).collect();
        fill(&publisher, &q, &bodies).await;

        let mut cfg = config();
        cfg.limits = Limits {
            consumer_buffer: 4,
            ..Limits::default()
        };
        let conn = amqp_client::Connection::connect_with(cfg).await.unwrap();
        let ch = conn.open_channel().await.unwrap();
        let before = conn.io_stats().bytes_read;
        let mut consumer = ch.basic_consume(&q, Default::default()).await.unwrap();
        // The broker pushes all 300 (prefetch 0) while nobody takes them: reading must stop
        // once the buffer holds 4.
        let paused = settled_bytes_read(&conn).await - before;
        assert!(
            paused <= PAUSED_READ_BOUND,
            "{paused} bytes read while the consumer's buffer of 4 was full (at most \
             {PAUSED_READ_BOUND}; {} were on offer): the buffer is not bounded",
            MESSAGES * PAD
        );
        for (i, body) in bodies.iter().enumerate() {
            let d = match tokio::time::timeout(Duration::from_secs(5), consumer.recv()).await {
                Ok(Some(Ok(d))) => d,
                Ok(other) => panic!("delivery {i}: {other:?}"),
                Err(_) => panic!("delivery {i} did not arrive within 5 s: reading did not resume"),
            };
            assert_eq!(d.body, body.as_bytes(), "delivery {i}");
            d.ack().unwrap();
        }
        let total = conn.io_stats().bytes_read - before;
        assert!(
            total >= (MESSAGES * PAD) as u64,
            "{total} bytes read in all"
        );
        consumer.cancel().await.unwrap();
        // Other channels work again too.
        let other = conn.open_channel().await.unwrap();
        other.basic_qos(1, Default::default()).await.unwrap();
        conn.close().await.unwrap();
        assert_eq!(pch.queue_delete(&q, Default::default()).await.unwrap(), 0);
        publisher.close().await.unwrap();
    })
    .await;
}

/// Bytes a connection may read while a consumer's buffer is full: the deliveries that filled
/// it (4 of 8 KiB, or 2 small ones) and the rest of the read that brought them (the driver
/// reads at most 64 KiB at a time), with room to spare.
const PAUSED_READ_BOUND: u64 = 256 * 1024;

/// `Connection::io_stats().bytes_read` once it has stopped moving for 500 ms (or after 5 s).
async fn settled_bytes_read(conn: &amqp_client::Connection) -> u64 {
    let mut last = conn.io_stats().bytes_read;
    let mut still = 0;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = conn.io_stats().bytes_read;
        still = if now == last { still + 1 } else { 0 };
        last = now;
        if still == 5 {
            break;
        }
    }
    last
}

/// Reading paused by a full consumer buffer is the client's own choice: the broker is alive
/// (its heartbeats wait in the socket), so the pause must not count as missed heartbeats.
#[tokio::test]
async fn a_paused_reader_is_not_a_heartbeat_timeout() {
    let mut names = Cleanup::new();
    within(LIMIT, async {
        let q = names.queue("q-paused-heartbeat");
        let publisher = connect().await;
        let pch = publisher.open_channel().await.unwrap();
        pch.queue_declare(&q, plain()).await.unwrap();
        fill(&publisher, &q, &bodies("h", 10)).await;

        let mut cfg = config();
        cfg.heartbeat = 1;
        cfg.limits = Limits {
            consumer_buffer: 2,
            ..Limits::default()
        };
        let conn = amqp_client::Connection::connect_with(cfg).await.unwrap();
        assert_eq!(conn.heartbeat(), 1);
        let ch = conn.open_channel().await.unwrap();
        let mut consumer = ch.basic_consume(&q, Default::default()).await.unwrap();
        // The application is busy elsewhere for four heartbeat intervals. Reading pauses
        // once the buffer holds 2: from then on nothing is read, not even the heartbeats the
        // broker sends (one a second at least), so the client hears nothing for more than the
        // two intervals after which a silent broker is declared dead.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let paused_at = conn.io_stats().bytes_read;
        tokio::time::sleep(Duration::from_millis(3500)).await;
        let read = conn.io_stats().bytes_read - paused_at;
        assert_eq!(
            read, 0,
            "{read} bytes read in 3.5 s while the consumer's buffer of 2 was full: reading \
             did not pause (the broker's heartbeats were read)"
        );
        assert!(
            conn.is_open(),
            "the connection ended while reading was paused: {:?}",
            conn.close_reason()
        );
        for i in 0..10 {
            let d = next(&mut consumer).await;
            assert_eq!(d.body, format!("h{i}").as_bytes());
            d.ack().unwrap();
        }
        assert!(conn.is_open(), "{:?}", conn.close_reason());
        consumer.cancel().await.unwrap();
        conn.close().await.unwrap();
        assert_eq!(pch.queue_delete(&q, Default::default()).await.unwrap(), 0);
        publisher.close().await.unwrap();
    })
    .await;
}
