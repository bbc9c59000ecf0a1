//! Queue operations against the real broker at `AMQP_URL`: bind, unbind, purge and delete
//! with their counts (and if-empty / if-unused), basic.get, transactions and basic.recover.
//!
//! Every test uses unique names, is bounded in time, and deletes what it declared (through
//! `common::Cleanup`, also when it fails).

mod common;

use amqp_client::amqp_codec::ReplyCode;
use amqp_client::{BindOptions, GetOptions, RecoverOptions};
use amqp_client::{ExchangeKind, QueueDeleteOptions};
use common::{
    Cleanup, LIMIT, assert_channel_closed, connect, drain, plain, publish, publish_confirmed,
    within,
};

#[tokio::test]
async fn queue_bind_unbind_purge_delete_counts() {
    let mut names = Cleanup::new();
    within(LIMIT, async {
        let conn = connect().await;
        let ch = conn.open_channel().await.unwrap();
        let ex = names.exchange("ex-bind");
        let q = names.queue("q-bind");
        ch.exchange_declare(&ex, ExchangeKind::Direct, Default::default())
            .await
            .unwrap();
        ch.queue_declare(&q, plain()).await.unwrap();
        ch.queue_bind(&q, &ex, "a", BindOptions::default())
            .await
            .unwrap();
        ch.queue_bind(&q, &ex, "b", BindOptions::default())
            .await
            .unwrap();
        ch.confirm_select().await.unwrap();
        for key in ["a", "b", "c", "a"] {
            publish_confirmed(&ch, &ex, key, key).await;
        }
        assert_eq!(ch.queue_purge(&q).await.unwrap(), 3);
        assert_eq!(ch.queue_purge(&q).await.unwrap(), 0);
        ch.queue_unbind(&q, &ex, "a", BindOptions::default())
            .await
            .unwrap();
        for key in ["a", "b", "b"] {
            publish_confirmed(&ch, &ex, key, key).await;
        }
        // if-empty refuses a queue holding messages.
        let err = ch
            .queue_delete(&q, QueueDeleteOptions::default().with_if_empty())
            .await
            .unwrap_err();
        assert_channel_closed(&err, ReplyCode::PRECONDITION_FAILED);
        let ch = conn.open_channel().await.unwrap();
        // if-unused refuses a queue with a consumer.
        let consumer_ch = conn.open_channel().await.unwrap();
        let consumer = consumer_ch
            .basic_consume(&q, amqp_client::ConsumeOptions::default())
            .await
            .unwrap();
        let err = ch
            .queue_delete(&q, QueueDeleteOptions::default().with_if_unused())
            .await
            .unwrap_err();
        assert_channel_closed(&err, ReplyCode::PRECONDITION_FAILED);
        consumer.cancel().await.unwrap();
        drop(consumer);
        // The cancelled consumer's unacked deliveries went back to the queue.
        consumer_ch.close().await.unwrap();
        let ch = conn.open_channel().await.unwrap();
        assert_eq!(ch.queue_delete(&q, Default::default()).await.unwrap(), 2);
        ch.exchange_delete(&ex, Default::default()).await.unwrap();
        conn.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn basic_get_empty_and_non_empty() {
    let mut names = Cleanup::new();
    within(LIMIT, async {
        let conn = connect().await;
        let ch = conn.open_channel().await.unwrap();
        let q = names.queue("q-get");
        ch.queue_declare(&q, plain()).await.unwrap();
        assert!(
            ch.basic_get(&q, GetOptions::default())
                .await
                .unwrap()
                .is_none()
        );
        ch.confirm_select().await.unwrap();
        for i in 0..3 {
            publish_confirmed(&ch, "", &q, &format!("g{i}")).await;
        }
        for (i, left) in [2u32, 1, 0].into_iter().enumerate() {
            let m = ch
                .basic_get(&q, GetOptions::default())
                .await
                .unwrap()
                .expect("a message");
            assert_eq!(m.message_count, left);
            assert_eq!(m.delivery.body, format!("g{i}").as_bytes());
            assert!(!m.delivery.redelivered);
            assert_eq!(m.delivery.exchange, "");
            assert_eq!(m.delivery.routing_key, q.as_str());
            assert_eq!(m.delivery.consumer_tag, "");
            assert_eq!(m.delivery.channel_id(), ch.id());
            m.delivery.ack().unwrap();
        }
        assert!(
            ch.basic_get(&q, GetOptions::default())
                .await
                .unwrap()
                .is_none()
        );
        // no-ack get: nothing to settle, the message is gone.
        publish_confirmed(&ch, "", &q, "auto").await;
        let m = ch
            .basic_get(&q, GetOptions::no_ack())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(m.delivery.body, "auto");
        assert!(
            ch.basic_get(&q, GetOptions::no_ack())
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(ch.queue_delete(&q, Default::default()).await.unwrap(), 0);
        conn.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn tx_commit_delivers_and_rollback_discards() {
    let mut names = Cleanup::new();
    within(LIMIT, async {
        let conn = connect().await;
        let ch = conn.open_channel().await.unwrap();
        let q = names.queue("q-tx");
        ch.queue_declare(&q, plain()).await.unwrap();
        ch.tx_select().await.unwrap();
        publish(&ch, &q, "rolled back").await;
        ch.tx_rollback().await.unwrap();
        publish(&ch, &q, "committed").await;
        ch.tx_commit().await.unwrap();
        // The get goes through a second channel so the transaction does not cover it.
        let reader = conn.open_channel().await.unwrap();
        assert_eq!(drain(&reader, &q).await, ["committed"]);
        // Acks are transactional too: a rolled-back ack leaves the message unacked.
        publish(&ch, &q, "ack me").await;
        ch.tx_commit().await.unwrap();
        let m = ch
            .basic_get(&q, GetOptions::default())
            .await
            .unwrap()
            .unwrap();
        m.delivery.ack().unwrap();
        ch.tx_rollback().await.unwrap();
        ch.close().await.unwrap();
        // Closing the channel requeued the un-acked message.
        let m = common::get_requeued(&reader, &q).await;
        assert_eq!(m.delivery.body, "ack me");
        assert!(m.delivery.redelivered);
        m.delivery.ack().unwrap();
        reader.queue_delete(&q, Default::default()).await.unwrap();
        conn.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn basic_recover_requeues_unacked() {
    let mut names = Cleanup::new();
    within(LIMIT, async {
        let conn = connect().await;
        let ch = conn.open_channel().await.unwrap();
        let q = names.queue("q-recover");
        ch.queue_declare(&q, plain()).await.unwrap();
        ch.confirm_select().await.unwrap();
        publish_confirmed(&ch, "", &q, "again").await;
        let m = ch
            .basic_get(&q, GetOptions::default())
            .await
            .unwrap()
            .unwrap();
        assert!(!m.delivery.redelivered);
        assert!(
            ch.basic_get(&q, GetOptions::default())
                .await
                .unwrap()
                .is_none()
        );
        ch.basic_recover(RecoverOptions::default()).await.unwrap();
        let m = ch
            .basic_get(&q, GetOptions::default())
            .await
            .unwrap()
            .expect("recovered");
        assert_eq!(m.delivery.body, "again");
        assert!(m.delivery.redelivered);
        m.delivery.ack().unwrap();
        ch.queue_delete(&q, Default::default()).await.unwrap();
        conn.close().await.unwrap();
    })
    .await;
}
