//! Queue declarations against the real broker at `AMQP_URL`: server-named, passive, exclusive,
//! auto-delete, quorum, redeclared with other arguments (406), message TTL with dead-lettering,
//! and max-length (drop-head and reject-publish).
//!
//! Every test uses unique names, is bounded in time, and deletes what it declared (through
//! `common::Cleanup`, also when it fails).

mod common;

use std::time::Duration;

use amqp_client::amqp_codec::table::FieldTable;
use amqp_client::amqp_codec::{FieldValue, ReplyCode};
use amqp_client::{BindOptions, GetOptions};
use amqp_client::{Confirmation, ExchangeKind, QueueDeclareOptions};
use common::{
    Cleanup, LIMIT, assert_channel_closed, connect, drain, plain, publish_confirmed, within,
};

#[tokio::test]
async fn queue_declare_server_named_and_passive() {
    let mut names = Cleanup::new();
    within(LIMIT, async {
        let conn = connect().await;
        let ch = conn.open_channel().await.unwrap();
        let info = ch
            .queue_declare("", QueueDeclareOptions::default().with_exclusive())
            .await
            .unwrap();
        names.track_queue(&info.name);
        assert!(info.name.starts_with("amq.gen-"), "{}", info.name);
        assert_eq!((info.message_count, info.consumer_count), (0, 0));
        ch.confirm_select().await.unwrap();
        assert!(
            publish_confirmed(&ch, "", &info.name, "one")
                .await
                .is_acked()
        );
        assert!(
            publish_confirmed(&ch, "", &info.name, "two")
                .await
                .is_acked()
        );
        // Passive declare reports the counts.
        let passive = ch
            .queue_declare(&info.name, QueueDeclareOptions::default().with_passive())
            .await
            .unwrap();
        assert_eq!(passive.name, info.name);
        assert_eq!(passive.message_count, 2);
        assert_eq!(passive.consumer_count, 0);
        // Passive on a missing queue: 404, channel closed, connection fine.
        let missing = names.queue("q-missing");
        let err = ch
            .queue_declare(&missing, QueueDeclareOptions::default().with_passive())
            .await
            .unwrap_err();
        assert_channel_closed(&err, ReplyCode::NOT_FOUND);
        let ch = conn.open_channel().await.unwrap();
        assert_eq!(
            ch.queue_delete(&info.name, Default::default())
                .await
                .unwrap(),
            2
        );
        conn.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn exclusive_queue_is_locked_to_its_connection_and_dies_with_it() {
    let mut names = Cleanup::new();
    within(LIMIT, async {
        let owner = connect().await;
        let other = connect().await;
        let q = names.queue("q-exclusive");
        let ch = owner.open_channel().await.unwrap();
        ch.queue_declare(&q, QueueDeclareOptions::default().with_exclusive())
            .await
            .unwrap();
        let och = other.open_channel().await.unwrap();
        let err = och.basic_consume(&q, Default::default()).await.unwrap_err();
        assert_channel_closed(&err, ReplyCode::RESOURCE_LOCKED);
        owner.close().await.unwrap();
        // Gone with its connection.
        let och = other.open_channel().await.unwrap();
        let err = och
            .queue_declare(&q, QueueDeclareOptions::default().with_passive())
            .await
            .unwrap_err();
        assert_channel_closed(&err, ReplyCode::NOT_FOUND);
        other.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn auto_delete_queue_goes_with_its_last_consumer() {
    let mut names = Cleanup::new();
    within(LIMIT, async {
        let conn = connect().await;
        let ch = conn.open_channel().await.unwrap();
        let q = names.queue("q-autodel");
        ch.queue_declare(&q, QueueDeclareOptions::default().with_auto_delete())
            .await
            .unwrap();
        let consumer = ch.basic_consume(&q, Default::default()).await.unwrap();
        consumer.cancel().await.unwrap();
        // The queue deletes itself just after answering the cancel: poll for it.
        let passive = QueueDeclareOptions::default().with_passive();
        let mut gone = false;
        for _ in 0..50 {
            let probe = conn.open_channel().await.unwrap();
            match probe.queue_declare(&q, passive.clone()).await {
                Ok(_) => {
                    probe.close().await.unwrap();
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(err) => {
                    assert_channel_closed(&err, ReplyCode::NOT_FOUND);
                    gone = true;
                    break;
                }
            }
        }
        assert!(
            gone,
            "auto-delete queue still exists after its consumer was cancelled"
        );
        conn.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn quorum_queue_declare_publish_get() {
    let mut names = Cleanup::new();
    within(LIMIT, async {
        let conn = connect().await;
        let ch = conn.open_channel().await.unwrap();
        let q = names.queue("q-quorum");
        let args = FieldTable::builder()
            .insert("x-queue-type", "quorum")
            .build()
            .unwrap();
        ch.queue_declare(
            &q,
            QueueDeclareOptions::default()
                .with_durable()
                .with_arguments(args.clone()),
        )
        .await
        .unwrap();
        ch.confirm_select().await.unwrap();
        assert!(publish_confirmed(&ch, "", &q, "raft").await.is_acked());
        let msg = ch
            .basic_get(&q, GetOptions::default())
            .await
            .unwrap()
            .expect("a message");
        assert_eq!(msg.delivery.body, "raft");
        msg.delivery.ack().unwrap();
        // A classic redeclare of a quorum queue is refused.
        let err = ch
            .queue_declare(
                &q,
                QueueDeclareOptions::default()
                    .with_durable()
                    .with_arguments(
                        FieldTable::builder()
                            .insert("x-queue-type", "classic")
                            .build()
                            .unwrap(),
                    ),
            )
            .await
            .unwrap_err();
        assert_channel_closed(&err, ReplyCode::PRECONDITION_FAILED);
        let ch = conn.open_channel().await.unwrap();
        ch.queue_delete(&q, Default::default()).await.unwrap();
        conn.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn redeclare_with_other_arguments_is_406_precondition_failed() {
    let mut names = Cleanup::new();
    within(LIMIT, async {
        let conn = connect().await;
        let ch = conn.open_channel().await.unwrap();
        let q = names.queue("q-redeclare");
        let ttl = |ms: i32| {
            FieldTable::builder()
                .insert("x-message-ttl", ms)
                .build()
                .unwrap()
        };
        ch.queue_declare(&q, plain().with_arguments(ttl(1000)))
            .await
            .unwrap();
        ch.queue_declare(&q, plain().with_arguments(ttl(1000)))
            .await
            .unwrap();
        let err = ch
            .queue_declare(&q, plain().with_arguments(ttl(2000)))
            .await
            .unwrap_err();
        assert_eq!(err.reply_code(), Some(ReplyCode::PRECONDITION_FAILED));
        assert!(err.is_channel_error());
        assert!(!err.is_connection_error());
        assert_channel_closed(&err, ReplyCode::PRECONDITION_FAILED);
        assert!(conn.is_open());
        let ch = conn.open_channel().await.unwrap();
        // Durability differs: also 406.
        let err = ch
            .queue_declare(
                &q,
                QueueDeclareOptions::default()
                    .with_durable()
                    .with_arguments(ttl(1000)),
            )
            .await
            .unwrap_err();
        assert_channel_closed(&err, ReplyCode::PRECONDITION_FAILED);
        let ch = conn.open_channel().await.unwrap();
        ch.queue_delete(&q, Default::default()).await.unwrap();
        conn.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn message_ttl_expires_and_dead_letters() {
    let mut names = Cleanup::new();
    within(LIMIT, async {
        let conn = connect().await;
        let ch = conn.open_channel().await.unwrap();
        let dlx = names.exchange("dlx");
        let dlq = names.queue("dlq");
        let src = names.queue("q-ttl");
        ch.exchange_declare(&dlx, ExchangeKind::Fanout, Default::default())
            .await
            .unwrap();
        ch.queue_declare(&dlq, plain()).await.unwrap();
        ch.queue_bind(&dlq, &dlx, "", BindOptions::default())
            .await
            .unwrap();
        let args = FieldTable::builder()
            .insert("x-message-ttl", 100i32)
            .insert("x-dead-letter-exchange", dlx.as_str())
            .build()
            .unwrap();
        ch.queue_declare(&src, plain().with_arguments(args))
            .await
            .unwrap();
        ch.confirm_select().await.unwrap();
        assert!(
            publish_confirmed(&ch, "", &src, "short-lived")
                .await
                .is_acked()
        );

        let mut consumer = ch.basic_consume(&dlq, Default::default()).await.unwrap();
        let d = consumer
            .recv()
            .await
            .expect("dead-lettered message")
            .unwrap();
        assert_eq!(d.body, "short-lived");
        let headers = d.properties.headers().expect("x-death header");
        let Some(FieldValue::Array(deaths)) = headers.get("x-death") else {
            panic!("x-death missing: {headers:?}");
        };
        let Some(FieldValue::Table(death)) = deaths.iter().next() else {
            panic!("x-death is empty");
        };
        assert_eq!(
            death
                .get("reason")
                .and_then(|v| v.as_str().map(str::to_owned))
                .as_deref(),
            Some("expired")
        );
        assert_eq!(
            death
                .get("queue")
                .and_then(|v| v.as_str().map(str::to_owned))
                .as_deref(),
            Some(src.as_str())
        );
        d.ack().unwrap();
        consumer.cancel().await.unwrap();
        assert!(
            ch.basic_get(&src, GetOptions::no_ack())
                .await
                .unwrap()
                .is_none(),
            "expired in the source"
        );

        // A rejected message (requeue false) is dead-lettered too.
        let src2 = names.queue("q-dlx-reject");
        let args = FieldTable::builder()
            .insert("x-dead-letter-exchange", dlx.as_str())
            .build()
            .unwrap();
        ch.queue_declare(&src2, plain().with_arguments(args))
            .await
            .unwrap();
        assert!(
            publish_confirmed(&ch, "", &src2, "rejected")
                .await
                .is_acked()
        );
        let m = ch
            .basic_get(&src2, GetOptions::default())
            .await
            .unwrap()
            .unwrap();
        m.delivery.reject().unwrap();
        let mut got = None;
        for _ in 0..50 {
            if let Some(m) = ch.basic_get(&dlq, GetOptions::default()).await.unwrap() {
                got = Some(m);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let m = got.expect("rejected message dead-lettered");
        assert_eq!(m.delivery.body, "rejected");
        m.delivery.ack().unwrap();

        for q in [&src, &src2, &dlq] {
            ch.queue_delete(q, Default::default()).await.unwrap();
        }
        ch.exchange_delete(&dlx, Default::default()).await.unwrap();
        conn.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn max_length_drops_from_the_head() {
    let mut names = Cleanup::new();
    within(LIMIT, async {
        let conn = connect().await;
        let ch = conn.open_channel().await.unwrap();
        let q = names.queue("q-maxlen");
        let args = FieldTable::builder()
            .insert("x-max-length", 2i32)
            .build()
            .unwrap();
        ch.queue_declare(&q, plain().with_arguments(args))
            .await
            .unwrap();
        ch.confirm_select().await.unwrap();
        for i in 0..5 {
            assert!(
                publish_confirmed(&ch, "", &q, &format!("m{i}"))
                    .await
                    .is_acked()
            );
        }
        let info = ch
            .queue_declare(&q, QueueDeclareOptions::default().with_passive())
            .await
            .unwrap();
        assert_eq!(info.message_count, 2);
        assert_eq!(drain(&ch, &q).await, ["m3", "m4"]);
        ch.queue_delete(&q, Default::default()).await.unwrap();
        conn.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn max_length_reject_publish_nacks() {
    let mut names = Cleanup::new();
    within(LIMIT, async {
        let conn = connect().await;
        let ch = conn.open_channel().await.unwrap();
        let q = names.queue("q-reject-publish");
        let args = FieldTable::builder()
            .insert("x-max-length", 1i32)
            .insert("x-overflow", "reject-publish")
            .build()
            .unwrap();
        ch.queue_declare(&q, plain().with_arguments(args))
            .await
            .unwrap();
        ch.confirm_select().await.unwrap();
        assert_eq!(
            publish_confirmed(&ch, "", &q, "fits").await,
            Confirmation::Acked
        );
        assert!(ch.wait_for_confirms().await.unwrap());
        assert_eq!(
            publish_confirmed(&ch, "", &q, "overflow").await,
            Confirmation::Nacked(None)
        );
        assert!(
            !ch.wait_for_confirms().await.unwrap(),
            "a nack since the last call"
        );
        assert!(
            ch.wait_for_confirms().await.unwrap(),
            "the nack was reported once"
        );
        assert_eq!(drain(&ch, &q).await, ["fits"]);
        ch.queue_delete(&q, Default::default()).await.unwrap();
        conn.close().await.unwrap();
    })
    .await;
}
