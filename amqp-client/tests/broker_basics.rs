//! The client against the real broker at `AMQP_URL`: connect, declare, publish with confirms,
//! consume with manual ack, get, purge, delete, close.

use std::time::Duration;

use amqp_client::BindOptions;
use amqp_client::GetOptions;
use amqp_client::amqp_codec::BasicProperties;
use amqp_client::{
    Confirmation, ConsumeOptions, PublishOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use amqp_test_support::unique_name;

const LIMIT: Duration = Duration::from_secs(20);

mod common;
use common::connect;

#[tokio::test]
async fn publish_confirm_consume_ack_roundtrip() {
    tokio::time::timeout(LIMIT, async {
        let conn = connect().await;
        assert!(conn.frame_max() > 0);
        let ch = conn.open_channel().await.unwrap();
        let queue = unique_name("basics");
        let info = ch
            .queue_declare(&queue, QueueDeclareOptions::default().with_durable())
            .await
            .unwrap();
        assert_eq!(info.name, queue);
        assert_eq!(info.message_count, 0);
        ch.confirm_select().await.unwrap();
        let props = BasicProperties::persistent();
        let mut confirms = Vec::new();
        for i in 0..100u32 {
            let body = format!("message {i}");
            confirms.push(
                ch.basic_publish("", &queue, PublishOptions::default(), &props, body)
                    .await
                    .unwrap(),
            );
        }
        for c in confirms {
            assert_eq!(c.await.unwrap(), Confirmation::Acked);
        }
        assert!(ch.wait_for_confirms().await.unwrap());
        ch.basic_qos(10, Default::default()).await.unwrap();
        let mut consumer = ch
            .basic_consume(&queue, ConsumeOptions::default())
            .await
            .unwrap();
        for i in 0..100u32 {
            let d = consumer.recv().await.unwrap().unwrap();
            assert_eq!(d.body, format!("message {i}").as_bytes());
            assert_eq!(d.properties.delivery_mode(), Some(2));
            assert!(!d.redelivered);
            d.ack().unwrap();
        }
        consumer.cancel().await.unwrap();
        assert!(consumer.recv().await.is_none(), "stream ends after cancel");
        assert_eq!(
            ch.queue_delete(&queue, QueueDeleteOptions::default())
                .await
                .unwrap(),
            0
        );
        conn.close().await.unwrap();
        assert!(!conn.is_open());
    })
    .await
    .expect("test finished in time");
}

#[tokio::test]
async fn settling_after_the_channel_closed_is_stale_and_the_broker_requeues() {
    tokio::time::timeout(LIMIT, async {
        let conn = connect().await;
        let ch = conn.open_channel().await.unwrap();
        let queue = unique_name("stale");
        ch.queue_declare(&queue, QueueDeclareOptions::default())
            .await
            .unwrap();
        ch.confirm_select().await.unwrap();
        let props = BasicProperties::default();
        let confirm = ch
            .basic_publish("", &queue, PublishOptions::default(), &props, "once")
            .await
            .unwrap();
        assert!(confirm.await.unwrap().is_acked());
        let got = ch
            .basic_get(&queue, GetOptions::default())
            .await
            .unwrap()
            .expect("a message");
        ch.close().await.unwrap();
        // The same channel number may come back for a new channel: the old tag must not ack on it.
        let ch2 = conn.open_channel().await.unwrap();
        let err = got.delivery.ack().unwrap_err();
        assert!(
            matches!(err, amqp_client::Error::StaleDelivery { delivery_tag: 1 }),
            "{err:?}"
        );
        // The broker requeued it when the channel closed.
        let again = common::get_requeued(&ch2, &queue).await;
        assert!(again.delivery.redelivered);
        again.delivery.ack().unwrap();
        ch2.queue_delete(&queue, QueueDeleteOptions::default())
            .await
            .unwrap();
        conn.close().await.unwrap();
    })
    .await
    .expect("test finished in time");
}

#[tokio::test]
async fn nowait_bind_unbind_and_purge_take_effect_in_order() {
    use amqp_client::{ExchangeDeclareOptions, ExchangeDeleteOptions, ExchangeKind};
    tokio::time::timeout(LIMIT, async {
        let conn = connect().await;
        let ch = conn.open_channel().await.unwrap();
        let (src, dst, queue) = (
            unique_name("nw-src"),
            unique_name("nw-dst"),
            unique_name("nw-q"),
        );
        let opts = ExchangeDeclareOptions::default();
        for x in [&src, &dst] {
            ch.exchange_declare(x, ExchangeKind::Direct, opts.clone())
                .await
                .unwrap();
        }
        let q = QueueDeclareOptions::default().with_exclusive();
        ch.queue_declare(&queue, q).await.unwrap();
        ch.queue_bind(&queue, &dst, "k", BindOptions::default().with_nowait())
            .await
            .unwrap();
        ch.exchange_bind(&dst, &src, "k", BindOptions::default().with_nowait())
            .await
            .unwrap();
        ch.confirm_select().await.unwrap();
        let props = BasicProperties::default();
        let mandatory = PublishOptions::default().with_mandatory();
        // Routed through both no-wait bindings.
        let c = ch
            .basic_publish(src.as_str(), "k", mandatory, &props, "via e2e")
            .await
            .unwrap();
        assert_eq!(c.await.unwrap(), Confirmation::Acked);
        ch.queue_purge_nowait(&queue).unwrap();
        let passive = QueueDeclareOptions::default().with_passive();
        assert_eq!(
            ch.queue_declare(&queue, passive.clone())
                .await
                .unwrap()
                .message_count,
            0
        );
        ch.exchange_unbind(&dst, &src, "k", BindOptions::default().with_nowait())
            .await
            .unwrap();
        let c = ch
            .basic_publish(src.as_str(), "k", mandatory, &props, "nowhere")
            .await
            .unwrap();
        let returned = c.await.unwrap();
        assert_eq!(
            returned.returned().map(|r| r.reply_code.0),
            Some(312),
            "unbound: {returned:?}"
        );
        // A no-wait bind that fails closes the channel; the next call says why.
        ch.queue_bind(
            &queue,
            "no-such-exchange-for-nowait",
            "k",
            BindOptions::default().with_nowait(),
        )
        .await
        .unwrap();
        let err = ch.queue_declare(&queue, passive).await.unwrap_err();
        assert_eq!(err.reply_code().map(|c| c.0), Some(404), "{err:?}");
        let ch = conn.open_channel().await.unwrap();
        for x in [&src, &dst] {
            ch.exchange_delete(x, ExchangeDeleteOptions::default())
                .await
                .unwrap();
        }
        conn.close().await.unwrap();
    })
    .await
    .expect("test finished in time");
}
