//! Acknowledgements against the real broker at `AMQP_URL`: ack, nack and reject (with and
//! without requeue, single and multiple), no-ack consumers, basic.recover to a consumer, and
//! what an unknown delivery tag does to a channel and its consumers; acks coalesced, and acks
//! of a stream read in batches.

mod common;

use std::time::Duration;

use amqp_client::amqp_codec::ReplyCode;
use amqp_client::{ConsumeOptions, Error};
use amqp_client::{GetOptions, NackOptions, RecoverOptions};
use common::{
    Cleanup, LIMIT, assert_channel_closed, bodies, connect, consume_with_prefetch, drain, fill,
    next, plain, quiet, ready_count, within,
};

#[tokio::test]
async fn ack_nack_reject() {
    let mut names = Cleanup::new();
    within(LIMIT, async {
        let conn = connect().await;
        let q = names.queue("q-settle");
        let ch = conn.open_channel().await.unwrap();
        ch.queue_declare(&q, plain()).await.unwrap();
        fill(&conn, &q, &bodies("s", 3)).await;
        let mut consumer = ch.basic_consume(&q, Default::default()).await.unwrap();
        let s0 = next(&mut consumer).await;
        let s1 = next(&mut consumer).await;
        let s2 = next(&mut consumer).await;
        assert!(!s0.redelivered && !s1.redelivered && !s2.redelivered);
        s0.ack().unwrap();
        s1.nack(NackOptions::requeue()).unwrap(); // requeued: comes back, flagged redelivered
        s2.reject().unwrap(); // dropped (no dead-letter exchange)
        let again = next(&mut consumer).await;
        assert_eq!(again.body, "s1");
        assert!(again.redelivered);
        again.requeue().unwrap(); // requeued once more
        let third = next(&mut consumer).await;
        assert_eq!(third.body, "s1");
        assert!(third.redelivered);
        third.nack(NackOptions::dead_letter()).unwrap(); // dropped
        assert!(quiet(&mut consumer, Duration::from_millis(300)).await);
        consumer.cancel().await.unwrap();
        assert_eq!(ready_count(&ch, &q).await, 0);
        // Channel-level settle by tag, with multiple.
        fill(&conn, &q, &bodies("m", 3)).await;
        let mut tags = Vec::new();
        for _ in 0..3 {
            tags.push(
                ch.basic_get(&q, GetOptions::default())
                    .await
                    .unwrap()
                    .unwrap()
                    .delivery
                    .delivery_tag,
            );
        }
        ch.basic_nack(tags[2], NackOptions::requeue().with_multiple())
            .unwrap();
        let mut again = Vec::new();
        while let Some(m) = ch.basic_get(&q, GetOptions::default()).await.unwrap() {
            assert!(m.delivery.redelivered);
            again.push(m.delivery.delivery_tag);
        }
        assert_eq!(again.len(), 3, "nack multiple requeued all three");
        ch.basic_ack_multiple(*again.last().unwrap()).unwrap();
        assert_eq!(ch.queue_delete(&q, Default::default()).await.unwrap(), 0);
        conn.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn no_ack_consumer_needs_no_settling() {
    let mut names = Cleanup::new();
    within(LIMIT, async {
        let conn = connect().await;
        let q = names.queue("q-noack");
        let ch = conn.open_channel().await.unwrap();
        ch.queue_declare(&q, plain()).await.unwrap();
        fill(&conn, &q, &bodies("a", 20)).await;
        let mut consumer = ch
            .basic_consume(&q, ConsumeOptions::default().with_no_ack())
            .await
            .unwrap();
        for i in 0..20 {
            assert_eq!(next(&mut consumer).await.body, format!("a{i}").as_bytes());
        }
        consumer.cancel().await.unwrap();
        assert_eq!(ready_count(&ch, &q).await, 0);
        ch.queue_delete(&q, Default::default()).await.unwrap();
        conn.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn recover_redelivers_to_the_consumer() {
    let mut names = Cleanup::new();
    within(LIMIT, async {
        let conn = connect().await;
        let q = names.queue("q-recover-consumer");
        let ch = conn.open_channel().await.unwrap();
        ch.queue_declare(&q, plain()).await.unwrap();
        fill(&conn, &q, &bodies("r", 1)).await;
        let mut consumer = ch.basic_consume(&q, Default::default()).await.unwrap();
        let d = next(&mut consumer).await;
        assert!(!d.redelivered);
        ch.basic_recover(RecoverOptions::default()).await.unwrap();
        let d2 = next(&mut consumer).await;
        assert_eq!(d2.body, "r0");
        assert!(d2.redelivered);
        d2.ack().unwrap();
        drop(d);
        consumer.cancel().await.unwrap();
        assert_eq!(ready_count(&ch, &q).await, 0);
        ch.queue_delete(&q, Default::default()).await.unwrap();
        conn.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn acking_an_unknown_tag_closes_the_channel_with_406() {
    let mut names = Cleanup::new();
    within(LIMIT, async {
        let conn = connect().await;
        let q = names.queue("q-unknown-tag");
        let ch = conn.open_channel().await.unwrap();
        ch.queue_declare(&q, plain()).await.unwrap();
        fill(&conn, &q, &bodies("u", 1)).await;
        let held = ch
            .basic_get(&q, GetOptions::default())
            .await
            .unwrap()
            .unwrap();
        // The ack itself is asynchronous: it succeeds locally.
        ch.basic_ack(held.delivery.delivery_tag + 1000).unwrap();
        // The broker's answer shows on the next call.
        let err = ch.basic_qos(1, Default::default()).await.unwrap_err();
        assert_channel_closed(&err, ReplyCode::PRECONDITION_FAILED);
        assert!(!ch.is_open());
        // Settling a delivery of the closed channel is refused: the broker requeued it.
        match held.delivery.ack() {
            Err(Error::StaleDelivery { delivery_tag }) => {
                assert_eq!(delivery_tag, held.delivery.delivery_tag);
            }
            other => panic!("expected StaleDelivery, got {other:?}"),
        }
        let ch = conn.open_channel().await.unwrap();
        let m = common::get_requeued(&ch, &q).await;
        assert!(m.delivery.redelivered);
        m.delivery.ack().unwrap();
        // Acking the same tag twice is the same error.
        fill(&conn, &q, &bodies("u", 1)).await;
        let m = ch
            .basic_get(&q, GetOptions::default())
            .await
            .unwrap()
            .unwrap();
        m.delivery.ack().unwrap();
        m.delivery.ack().unwrap();
        let err = ch.queue_declare(&q, plain()).await.unwrap_err();
        assert_channel_closed(&err, ReplyCode::PRECONDITION_FAILED);
        let ch = conn.open_channel().await.unwrap();
        assert_eq!(ch.queue_delete(&q, Default::default()).await.unwrap(), 0);
        conn.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_consumer_sees_its_channel_closed_by_the_broker() {
    let mut names = Cleanup::new();
    within(LIMIT, async {
        let conn = connect().await;
        let q = names.queue("q-consumer-chan-406");
        let ch = conn.open_channel().await.unwrap();
        ch.queue_declare(&q, plain()).await.unwrap();
        let mut consumer = ch.basic_consume(&q, Default::default()).await.unwrap();
        ch.basic_ack(424_242).unwrap();
        match consumer.recv().await {
            Some(Err(err)) => assert_channel_closed(&err, ReplyCode::PRECONDITION_FAILED),
            other => panic!("expected the channel error, got {other:?}"),
        }
        assert!(consumer.recv().await.is_none());
        let ch = conn.open_channel().await.unwrap();
        ch.queue_delete(&q, Default::default()).await.unwrap();
        conn.close().await.unwrap();
    })
    .await;
}

/// Acks of consecutive deliveries go out as multiple acks (see `Unsettled` in the core); this
/// checks with the broker that they never settle more than the application did. 500 messages:
/// two held unsettled, one nacked back to the queue, the last hundred acked in reverse order,
/// everything else acked in order. Closing the channel then requeues exactly the two held.
#[tokio::test]
async fn coalesced_acks_settle_exactly_what_the_application_settled() {
    let mut names = Cleanup::new();
    within(LIMIT, async {
        let conn = connect().await;
        let q = names.queue("q-coalesce");
        let ch = conn.open_channel().await.unwrap();
        ch.queue_declare(&q, plain()).await.unwrap();
        fill(&conn, &q, &bodies("c", 500)).await;
        let consume_ch = conn.open_channel().await.unwrap();
        let mut consumer = consume_ch
            .basic_consume(&q, ConsumeOptions::default())
            .await
            .unwrap();
        let mut held = Vec::new();
        let mut tail = Vec::new();
        for i in 0..500 {
            let d = next(&mut consumer).await;
            assert_eq!(d.body, format!("c{i}"));
            match i {
                100 | 300 => held.push(d),
                200 => d.nack(NackOptions::dead_letter()).unwrap(),
                400.. => tail.push(d),
                _ => d.ack().unwrap(),
            }
        }
        for d in tail.iter().rev() {
            d.ack().unwrap();
        }
        // A round trip on the channel after the acks: the broker took them all without
        // closing it (an ack of a tag it no longer knows would have).
        consume_ch.basic_qos(0, Default::default()).await.unwrap();
        assert_eq!(ready_count(&ch, &q).await, 0, "the nacked one was dropped");
        consume_ch.close().await.unwrap();
        drop(held);
        drop(consumer);
        // The broker requeues them once the queue learns the channel is gone.
        common::await_ready(&ch, &q, 2).await;
        let back = drain(&ch, &q).await;
        assert_eq!(
            back,
            ["c100", "c300"],
            "exactly the held deliveries came back"
        );
        conn.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_batched_stream_from_the_broker_is_acked_exactly_once() {
    let mut names = Cleanup::new();
    within(LIMIT, async {
        // Read batching is on by default; 1 KiB bodies make even a slow broker's stream
        // (four deliveries a millisecond) engage it.
        let conn = connect().await;
        let q = names.queue("q-batched");
        let ch = conn.open_channel().await.unwrap();
        ch.queue_declare(&q, plain()).await.unwrap();
        let pad = "x".repeat(1024);
        let sent: Vec<String> = (0..5000).map(|i| format!("{i:05}{pad}")).collect();
        fill(&conn, &q, &sent).await;
        let before = conn.io_stats();
        let (consume_ch, mut consumer) = consume_with_prefetch(&conn, &q, 1000).await;
        for body in &sent {
            let d = next(&mut consumer).await;
            assert_eq!(&d.body[..], body.as_bytes());
            d.ack().unwrap();
        }
        // A round trip after the acks: the broker took every one without closing the channel
        // (a second ack of a tag would have), and nothing is left or comes again.
        consume_ch.basic_qos(0, Default::default()).await.unwrap();
        assert_eq!(ready_count(&ch, &q).await, 0);
        assert!(quiet(&mut consumer, Duration::from_millis(200)).await);
        let after = conn.io_stats();
        assert!(
            after.batching_engaged > before.batching_engaged,
            "{before:?} then {after:?}"
        );
        assert!(after.bytes_read - before.bytes_read > 5000 * 1024);
        conn.close().await.unwrap();
    })
    .await;
}
