//! `Connection::message_stats` against the real broker at `AMQP_URL`: publishes with confirms,
//! a mandatory publish returned as unroutable, deliveries consumed and acked or rejected, and
//! a basic.get, each counted once on the connection that did it.

mod common;

use amqp_client::{BasicProperties, Confirmation, MessageStats, PublishOptions};
use amqp_test_support::unique_name;
use common::{Cleanup, LIMIT, connect, consume_with_prefetch, next, plain, within};

/// Messages published and consumed.
const N: u64 = 50;

#[tokio::test]
async fn publishes_confirms_returns_deliveries_and_settlements_are_counted() {
    let mut names = Cleanup::new();
    within(LIMIT, async {
        let conn = connect().await;
        assert_eq!(conn.message_stats(), MessageStats::default());
        let q = names.queue("q-stats");
        let ch = conn.open_channel().await.unwrap();
        ch.queue_declare(&q, plain()).await.unwrap();
        ch.confirm_select().await.unwrap();
        let props = BasicProperties::default();
        let mut confirms = Vec::new();
        for i in 0..N {
            let body = format!("m{i}");
            let confirm = ch
                .basic_publish("", &q, PublishOptions::default(), &props, body)
                .await
                .unwrap();
            confirms.push(confirm);
        }
        for confirm in confirms {
            assert!(confirm.await.unwrap().is_acked());
        }
        // Mandatory to a queue that does not exist: returned, then acked by the broker.
        let nowhere = unique_name("no-such-queue");
        let outcome = ch
            .basic_publish("", &nowhere, PublishOptions::mandatory(), &props, "lost")
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(matches!(outcome, Confirmation::Returned(_)), "{outcome:?}");

        let (cch, mut consumer) = consume_with_prefetch(&conn, &q, 20).await;
        let mut last = None;
        for i in 0..N {
            let d = next(&mut consumer).await;
            if i == N - 1 {
                last = Some(d);
            } else {
                d.ack().unwrap();
            }
        }
        // The last one goes back into the queue once the consumer is gone (so that it is not
        // delivered again), to be fetched with basic.get; the channel's close puts the
        // settlements on the broker's side first.
        consumer.cancel().await.unwrap();
        last.expect("the last delivery").requeue().unwrap();
        cch.close().await.unwrap();
        let got = ch
            .basic_get(&q, amqp_client::GetOptions::default())
            .await
            .unwrap()
            .expect("the requeued message");
        got.delivery.ack().unwrap();
        ch.close().await.unwrap();

        let stats = conn.message_stats();
        assert_eq!(stats.published, N + 1, "{stats:?}");
        assert_eq!(stats.confirmed, N + 1, "{stats:?}");
        assert_eq!(stats.nacked, 0, "{stats:?}");
        assert_eq!(stats.returned, 1, "{stats:?}");
        assert_eq!(stats.delivered, N + 1, "{stats:?}");
        assert_eq!(stats.acked, N, "{stats:?}");
        assert_eq!(stats.rejected, 1, "{stats:?}");
        assert_eq!(stats.recoveries, 0, "{stats:?}");
        // Another connection's counts are its own.
        let other = connect().await;
        assert_eq!(other.message_stats(), MessageStats::default());
        other.close().await.unwrap();
        // A stats handle reads the same counts, and does not keep the connection.
        let handle = conn.stats_handle();
        assert_eq!(handle.message_stats(), Some(stats));
        assert!(handle.is_connected());
        conn.close().await.unwrap();
        assert!(!handle.is_connected());
        // Every handle on it goes (channels, the consumer, deliveries hold it too).
        drop((conn, ch, cch, consumer, got));
        let mut gone = false;
        for _ in 0..100 {
            if handle.message_stats().is_none() {
                gone = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(gone, "the handle kept the connection's state alive");
    })
    .await;
}
