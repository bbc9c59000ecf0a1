//! `ReliablePublisher` against the real broker at `AMQP_URL`: connections killed during a
//! publish run (every message whose receipt said confirmed is in the queue), an unroutable
//! message, a missing exchange and a full `reject-publish` queue (definitive failures, after
//! the retries they deserve), and back-pressure while the broker does not confirm.

#![allow(clippy::unwrap_used, clippy::print_stdout)] // tests: panics and printed figures are the point

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use amqp_client::prelude::*;
use amqp_test_support::broker_addr;
use amqp_test_support::fault_proxy::FaultProxy;
use common::recovery::{kill_connection, quick_policy, recovering_config};
use common::{Cleanup, config, drain, within};

const LIMIT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_killed_mid_run_lose_no_confirmed_message() {
    within(LIMIT, async {
        const MESSAGES: u32 = 5000;
        const KILLS: usize = 3;
        let name = amqp_test_support::unique_name("reliable-publisher");
        let conn = Connection::connect_with(recovering_config(&name))
            .await
            .unwrap();
        let mut cleanup = Cleanup::new();
        let queue = cleanup.queue("reliable-publisher");
        let ch = conn.open_channel().await.unwrap();
        ch.queue_declare(&queue, QueueDeclareOptions::durable())
            .await
            .unwrap();
        let publisher = conn
            .reliable_publisher(PublisherConfig::default().with_max_in_flight(256))
            .await
            .unwrap();
        let killer = tokio::spawn({
            let name = name.clone();
            async move {
                let mut killed = 0;
                for _ in 0..KILLS {
                    tokio::time::sleep(Duration::from_millis(150)).await;
                    killed += usize::from(kill_connection(&name).await > 0);
                }
                killed
            }
        });
        let started = Instant::now();
        let props = BasicProperties::persistent();
        let mut receipts = Vec::new();
        for i in 0..MESSAGES {
            let receipt = publisher
                .publish("", &queue, &props, i.to_string())
                .await
                .unwrap();
            assert!(publisher.in_flight() <= 256, "the bound holds");
            receipts.push((i, receipt));
        }
        let mut confirmed = Vec::new();
        let mut failed = Vec::new();
        for (i, receipt) in receipts {
            match receipt.await {
                Ok(()) => confirmed.push(i),
                Err(failure) => failed.push(format!("{i}: {failure}")),
            }
        }
        let killed = killer.await.unwrap();
        let took = started.elapsed();
        publisher.close().await.unwrap();
        assert_eq!(publisher.in_flight(), 0);

        let mut seen: BTreeMap<u32, u32> = BTreeMap::new();
        for body in drain(&ch, &queue).await {
            *seen.entry(body.parse().unwrap()).or_default() += 1;
        }
        let lost: Vec<_> = confirmed.iter().filter(|i| !seen.contains_key(i)).collect();
        let duplicates: u32 = seen.values().map(|n| n - 1).sum();
        println!(
            "reliable publisher: {MESSAGES} messages, {killed} connections killed, confirmed {}, \
             failed {}, lost {}, duplicates {duplicates}, took {took:?}",
            confirmed.len(),
            failed.len(),
            lost.len()
        );
        assert!(killed >= 1, "the run outlived the kills");
        assert!(
            failed.is_empty(),
            "with recovery on, nothing fails: {failed:?}"
        );
        assert!(lost.is_empty(), "confirmed but not in the queue: {lost:?}");
        conn.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn unroutable_missing_exchange_and_refused_messages_fail_definitively() {
    within(LIMIT, async {
        let conn = Connection::connect(&amqp_test_support::broker_url())
            .await
            .unwrap();
        let mut cleanup = Cleanup::new();
        let full = cleanup.queue("reliable-full");
        let ch = conn.open_channel().await.unwrap();
        let args = field_table! { "x-max-length" => 1i64, "x-overflow" => "reject-publish" };
        ch.queue_declare(&full, QueueDeclareOptions::default().with_arguments(args))
            .await
            .unwrap();
        let config = PublisherConfig::default().with_max_refusals(2);
        let publisher = conn.reliable_publisher(config).await.unwrap();
        let props = BasicProperties::default();

        let nowhere = amqp_test_support::unique_name("no-such-queue");
        let failure = publisher
            .publish("", &nowhere, &props, "x")
            .await
            .unwrap()
            .await
            .unwrap_err();
        assert!(
            matches!(
                failure,
                PublishFailure::Unroutable {
                    reply_code: 312,
                    ..
                }
            ),
            "{failure}"
        );

        let missing = amqp_test_support::unique_name("no-such-exchange");
        let failure = publisher
            .publish(&missing, "k", &props, "x")
            .await
            .unwrap()
            .await
            .unwrap_err();
        let PublishFailure::RetriesExhausted {
            refusals: 3,
            last_error: Some(err),
        } = &failure
        else {
            panic!("{failure}")
        };
        assert_eq!(err.reply_code().map(|c| c.0), Some(404), "{failure}");

        // The queue takes one; the broker nacks the next (reject-publish) every time.
        publisher
            .publish("", &full, &props, "first")
            .await
            .unwrap()
            .await
            .unwrap();
        let failure = publisher
            .publish("", &full, &props, "second")
            .await
            .unwrap()
            .await
            .unwrap_err();
        assert!(
            matches!(
                failure,
                PublishFailure::RetriesExhausted {
                    refusals: 3,
                    last_error: None
                }
            ),
            "{failure}"
        );
        assert_eq!(drain(&ch, &full).await, vec!["first".to_owned()]);
        assert!(publisher.is_open(), "refusals leave the publisher usable");
        publisher.close().await.unwrap();
        assert!(publisher.publish("", &full, &props, "late").await.is_err());
        conn.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_full_publisher_waits_until_confirms_make_room() {
    within(LIMIT, async {
        let proxy = FaultProxy::start(broker_addr()).await.unwrap();
        let mut cfg = config().with_recovery(quick_policy());
        cfg.host = "127.0.0.1".into();
        cfg.port = proxy.addr().port();
        cfg.heartbeat = 0;
        let conn = Connection::connect_with(cfg).await.unwrap();
        let mut cleanup = Cleanup::new();
        let queue = cleanup.queue("reliable-bound");
        let ch = conn.open_channel().await.unwrap();
        ch.queue_declare(&queue, QueueDeclareOptions::default())
            .await
            .unwrap();
        let publisher = conn
            .reliable_publisher(PublisherConfig::default().with_max_in_flight(8))
            .await
            .unwrap();
        let props = BasicProperties::default();
        // Nothing comes back while stalled: no confirm makes room.
        proxy.stall(true);
        let mut receipts = Vec::new();
        for i in 0..8 {
            receipts.push(
                publisher
                    .publish("", &queue, &props, format!("{i}"))
                    .await
                    .unwrap(),
            );
        }
        assert_eq!(publisher.in_flight(), 8);
        let ninth = publisher.publish("", &queue, &props, "8");
        tokio::pin!(ninth);
        assert!(
            tokio::time::timeout(Duration::from_millis(300), ninth.as_mut())
                .await
                .is_err(),
            "the ninth publish waits while eight are unconfirmed"
        );
        proxy.stall(false);
        receipts.push(ninth.await.unwrap());
        for receipt in receipts {
            receipt.await.unwrap();
        }
        publisher.flush().await;
        assert_eq!(publisher.in_flight(), 0);
        assert_eq!(drain(&ch, &queue).await.len(), 9);
        conn.close().await.unwrap();
    })
    .await;
}
