//! Publishing against the real broker at `AMQP_URL`: channel errors caused by a publish,
//! publisher confirms, mandatory returns (in and outside confirm mode), and what closing a
//! channel does to everything pending on it.

mod common;

use std::time::Duration;

use amqp_client::amqp_codec::{BasicProperties, ReplyCode};
use amqp_client::{
    Confirmation, Error, ExchangeKind, PublishConfirm, PublishOptions, QueueDeclareOptions,
};
use common::{Cleanup, LIMIT, assert_channel_closed, connect, plain, within};

const MANDATORY: PublishOptions = PublishOptions::mandatory();

fn props() -> BasicProperties {
    BasicProperties::default()
}

#[tokio::test]
async fn publish_to_a_missing_exchange_closes_the_channel_with_404() {
    let mut names = Cleanup::new();
    within(LIMIT, async {
        let conn = connect().await;
        let missing = names.exchange("ex-no-such");
        // Outside confirm mode the publish "succeeds"; the close shows on the next call.
        let ch = conn.open_channel().await.unwrap();
        let outcome = ch
            .basic_publish(&missing, "k", PublishOptions::default(), &props(), "lost")
            .await
            .unwrap()
            .await
            .unwrap();
        assert_eq!(outcome, Confirmation::NotRequested);
        let err = ch.basic_qos(1, Default::default()).await.unwrap_err();
        assert_channel_closed(&err, ReplyCode::NOT_FOUND);
        // Publishing on the closed channel fails at once with the same reason.
        let err = ch
            .basic_publish("", "x", PublishOptions::default(), &props(), "late")
            .await
            .unwrap_err();
        assert_channel_closed(&err, ReplyCode::NOT_FOUND);

        // In confirm mode the publish's confirm carries the error, and so does
        // wait_for_confirms.
        let ch = conn.open_channel().await.unwrap();
        ch.confirm_select().await.unwrap();
        let confirm = ch
            .basic_publish(&missing, "k", PublishOptions::default(), &props(), "lost")
            .await
            .unwrap();
        let err = confirm.await.unwrap_err();
        assert_channel_closed(&err, ReplyCode::NOT_FOUND);
        let err = ch.wait_for_confirms().await.unwrap_err();
        assert_channel_closed(&err, ReplyCode::NOT_FOUND);
        assert_eq!(ch.pending_confirms(), 0);

        // The connection survives.
        assert!(conn.is_open());
        let ch = conn.open_channel().await.unwrap();
        let q = ch
            .queue_declare("", QueueDeclareOptions::default().with_exclusive())
            .await
            .unwrap();
        names.track_queue(&q.name);
        ch.queue_delete(&q.name, Default::default()).await.unwrap();
        conn.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn confirms_resolve_and_wait_for_confirms() {
    let mut names = Cleanup::new();
    within(LIMIT, async {
        let conn = connect().await;
        let ch = conn.open_channel().await.unwrap();
        let q = names.queue("q-confirms");
        ch.queue_declare(&q, plain()).await.unwrap();
        // Not in confirm mode: nothing to wait for, and saying so.
        let err = ch.wait_for_confirms().await.unwrap_err();
        assert!(matches!(err, Error::InvalidUse(_)), "{err:?}");
        let c = ch
            .basic_publish("", &q, PublishOptions::default(), &props(), "plain")
            .await
            .unwrap();
        assert_eq!(c.sequence(), None);
        assert_eq!(c.await.unwrap(), Confirmation::NotRequested);

        ch.confirm_select().await.unwrap();
        ch.confirm_select().await.unwrap(); // idempotent
        let mut confirms = Vec::new();
        for i in 0..500u32 {
            let c = ch
                .basic_publish("", &q, PublishOptions::default(), &props(), i.to_string())
                .await
                .unwrap();
            assert_eq!(c.sequence(), Some(u64::from(i) + 1), "numbered from 1");
            confirms.push(c);
        }
        assert!(ch.pending_confirms() <= 500);
        assert!(ch.wait_for_confirms().await.unwrap());
        assert_eq!(ch.pending_confirms(), 0);
        // Futures resolved before they were polled still give their outcome.
        for c in confirms {
            assert_eq!(c.await.unwrap(), Confirmation::Acked);
        }
        // Dropped confirms: wait_for_confirms still covers them.
        for i in 0..500u32 {
            drop(
                ch.basic_publish("", &q, PublishOptions::default(), &props(), i.to_string())
                    .await
                    .unwrap(),
            );
        }
        assert!(ch.wait_for_confirms().await.unwrap());
        assert_eq!(ch.pending_confirms(), 0);
        assert_eq!(ch.queue_delete(&q, Default::default()).await.unwrap(), 1001);
        conn.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn mandatory_unroutable_in_confirm_mode_acks_with_the_returned_message() {
    let mut names = Cleanup::new();
    within(LIMIT, async {
        let conn = connect().await;
        let ch = conn.open_channel().await.unwrap();
        ch.confirm_select().await.unwrap();
        let nowhere = names.queue("q-nowhere");
        let p = BasicProperties::builder()
            .with_message_id("m-1")
            .build()
            .unwrap();
        let outcome = ch
            .basic_publish("", &nowhere, MANDATORY, &p, "unroutable")
            .await
            .unwrap()
            .await
            .unwrap();
        let Confirmation::Returned(returned) = &outcome else {
            panic!("expected Ack(Some(returned)), got {outcome:?}");
        };
        assert_eq!(returned.reply_code, ReplyCode::NO_ROUTE);
        assert_eq!(returned.reply_text, "NO_ROUTE");
        assert_eq!(returned.exchange, "");
        assert_eq!(returned.routing_key, nowhere.as_str());
        assert_eq!(returned.body, "unroutable");
        assert_eq!(returned.properties, p);
        assert!(!outcome.is_acked(), "is_ack is only for routed messages");
        assert_eq!(outcome.returned(), Some(&**returned));
        // Not mandatory: dropped silently, plain ack.
        let outcome = ch
            .basic_publish("", &nowhere, PublishOptions::default(), &p, "dropped")
            .await
            .unwrap()
            .await
            .unwrap();
        assert_eq!(outcome, Confirmation::Acked);
        // An exchange without bindings: the same.
        let ex = names.exchange("ex-unbound");
        ch.exchange_declare(&ex, ExchangeKind::Direct, Default::default())
            .await
            .unwrap();
        let outcome = ch
            .basic_publish(&ex, "k", MANDATORY, &p, "unroutable 2")
            .await
            .unwrap()
            .await
            .unwrap();
        let returned = outcome.returned().expect("returned");
        assert_eq!(returned.exchange, ex.as_str());
        assert_eq!(returned.routing_key, "k");
        assert_eq!(returned.body, "unroutable 2");
        assert!(
            ch.take_returned().is_empty(),
            "confirm mode hands returns to confirms"
        );
        ch.exchange_delete(&ex, Default::default()).await.unwrap();
        conn.close().await.unwrap();
    })
    .await;
}

/// Interleaves routable and unroutable mandatory publishes: the broker coalesces its acks
/// (`multiple`), and each returned message must still come back with its own publish.
#[tokio::test]
async fn mandatory_returns_stay_with_their_own_publish() {
    let mut names = Cleanup::new();
    within(LIMIT, async {
        let conn = connect().await;
        let ch = conn.open_channel().await.unwrap();
        let q = names.queue("q-some-routable");
        let nowhere = names.queue("q-nowhere");
        ch.queue_declare(&q, plain()).await.unwrap();
        ch.confirm_select().await.unwrap();
        let mut pending: Vec<(u32, bool, PublishConfirm)> = Vec::new();
        for i in 0..300u32 {
            let routable = i % 3 != 0;
            let key = if routable { &q } else { &nowhere };
            let c = ch
                .basic_publish("", key, MANDATORY, &props(), i.to_string())
                .await
                .unwrap();
            pending.push((i, routable, c));
        }
        let mut wrong = Vec::new();
        for (i, routable, c) in pending {
            let outcome = c.await.unwrap();
            let ok = match (&outcome, routable) {
                (Confirmation::Acked, true) => true,
                (Confirmation::Returned(r), false) => r.body == i.to_string().as_bytes(),
                _ => false,
            };
            if !ok {
                wrong.push(format!(
                    "publish {i} (routable: {routable}) got {:?}",
                    outcome
                        .returned()
                        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
                ));
            }
        }
        assert!(
            wrong.is_empty(),
            "{} of 300 confirms carry the wrong returned message, e.g. {:?}",
            wrong.len(),
            &wrong[..wrong.len().min(5)]
        );
        assert_eq!(ch.queue_delete(&q, Default::default()).await.unwrap(), 200);
        conn.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn mandatory_unroutable_outside_confirm_mode_is_taken_with_take_returned() {
    let mut names = Cleanup::new();
    within(LIMIT, async {
        let conn = connect().await;
        let ch = conn.open_channel().await.unwrap();
        let nowhere = names.queue("q-nowhere");
        for i in 0..3 {
            let outcome = ch
                .basic_publish("", &nowhere, MANDATORY, &props(), format!("r{i}"))
                .await
                .unwrap()
                .await
                .unwrap();
            assert_eq!(outcome, Confirmation::NotRequested);
        }
        // Returns are sent before the reply to any later request of the channel.
        ch.basic_qos(0, Default::default()).await.unwrap();
        let returned = ch.take_returned();
        assert_eq!(returned.len(), 3);
        for (i, r) in returned.iter().enumerate() {
            assert_eq!(r.reply_code, ReplyCode::NO_ROUTE);
            assert_eq!(r.routing_key, nowhere.as_str());
            assert_eq!(r.body, format!("r{i}").as_bytes());
        }
        assert!(ch.take_returned().is_empty());
        conn.close().await.unwrap();
    })
    .await;
}

/// A return received (and never taken) before confirm mode belongs to `take_returned`, not to
/// the first confirm after confirm.select.
#[tokio::test]
async fn returns_from_before_confirm_mode_do_not_attach_to_later_confirms() {
    let mut names = Cleanup::new();
    within(LIMIT, async {
        let conn = connect().await;
        let ch = conn.open_channel().await.unwrap();
        let q = names.queue("q-routable");
        let nowhere = names.queue("q-nowhere");
        ch.queue_declare(&q, plain()).await.unwrap();
        drop(
            ch.basic_publish("", &nowhere, MANDATORY, &props(), "old return")
                .await
                .unwrap(),
        );
        ch.confirm_select().await.unwrap();
        let outcome = ch
            .basic_publish("", &q, MANDATORY, &props(), "routed")
            .await
            .unwrap()
            .await
            .unwrap();
        assert_eq!(
            outcome,
            Confirmation::Acked,
            "a routed publish was confirmed with another message's return"
        );
        assert_eq!(ch.take_returned().len(), 1);
        ch.queue_delete(&q, Default::default()).await.unwrap();
        conn.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn closing_a_channel_fails_what_is_pending_on_it() {
    let mut names = Cleanup::new();
    within(LIMIT, async {
        let conn = connect().await;
        let ch = conn.open_channel().await.unwrap();
        let q = names.queue("q-chan-close");
        ch.queue_declare(&q, plain()).await.unwrap();
        let mut consumer = ch.basic_consume(&q, Default::default()).await.unwrap();
        let clone = ch.clone();
        ch.close().await.unwrap();
        assert!(!clone.is_open());
        match consumer.recv().await {
            Some(Err(Error::ChannelClosedByApp)) | None => {}
            other => panic!("expected the consumer to end, got {other:?}"),
        }
        assert!(consumer.recv().await.is_none());
        let err = clone.basic_qos(1, Default::default()).await.unwrap_err();
        assert!(matches!(err, Error::ChannelClosedByApp), "{err:?}");
        let ch = conn.open_channel().await.unwrap();
        ch.queue_delete(&q, Default::default()).await.unwrap();
        conn.close().await.unwrap();
        // After the connection closed, everything fails with that reason.
        let err = ch.basic_qos(1, Default::default()).await.unwrap_err();
        assert!(matches!(err, Error::ConnectionClosedByApp), "{err:?}");
        let err = conn.open_channel().await.unwrap_err();
        assert!(matches!(err, Error::ConnectionClosedByApp), "{err:?}");
        assert!(matches!(conn.closed().await, Error::ConnectionClosedByApp));
        conn.close().await.unwrap(); // closing twice is fine
    })
    .await;
}

#[tokio::test]
async fn app_close_fails_pending_consumers_and_confirms() {
    let mut names = Cleanup::new();
    within(LIMIT, async {
        let conn = connect().await;
        let ch = conn.open_channel().await.unwrap();
        let q = names.queue("q-app-close");
        ch.queue_declare(&q, plain()).await.unwrap();
        let mut consumer = ch.basic_consume(&q, Default::default()).await.unwrap();
        let waiter = tokio::spawn(async move { consumer.recv().await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        conn.close().await.unwrap();
        let got = waiter.await.unwrap();
        assert!(
            matches!(got, Some(Err(Error::ConnectionClosedByApp)) | None),
            "{got:?}"
        );
        drop(ch);
    })
    .await;
}

/// `Channel::close` maps "already closed by the application" to `Ok` for a close that was
/// pending; a second `close` after the first completed should be just as harmless (as a
/// second `Connection::close` is).
#[tokio::test]
async fn closing_a_channel_twice_is_fine() {
    within(LIMIT, async {
        let conn = connect().await;
        let ch = conn.open_channel().await.unwrap();
        ch.close().await.unwrap();
        let again = ch.close().await;
        assert!(again.is_ok(), "second close: {again:?}");
        conn.close().await.unwrap();
    })
    .await;
}

/// Resident set size of this process, in bytes (Linux).
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// Publishing in confirm mode and dropping each `PublishConfirm` (then collecting outcomes
/// with `wait_for_confirms`) is the batch pattern the docs allow ("drop it to ignore the
/// outcome"); the per-publish bookkeeping must not outlive the confirm. The messages go to an
/// exchange without bindings, so the broker acks at once and stores nothing.
#[tokio::test]
async fn dropped_confirms_do_not_accumulate() {
    let mut names = Cleanup::new();
    within(Duration::from_secs(120), async {
        let conn = connect().await;
        let ch = conn.open_channel().await.unwrap();
        let ex = names.exchange("ex-void");
        ch.exchange_declare(&ex, ExchangeKind::Fanout, Default::default())
            .await
            .unwrap();
        ch.confirm_select().await.unwrap();
        let body = bytes::Bytes::from_static(b"x");
        let round = async |n: usize| {
            for _ in 0..n {
                drop(
                    ch.basic_publish(&ex, "", PublishOptions::default(), &props(), body.clone())
                        .await
                        .unwrap(),
                );
            }
            assert!(ch.wait_for_confirms().await.unwrap());
        };
        // Warm up (buffers reach their working size), then measure.
        for _ in 0..5 {
            round(10_000).await;
        }
        let before = rss_bytes();
        for _ in 0..30 {
            round(10_000).await;
        }
        let grown = rss_bytes().saturating_sub(before);
        assert!(
            grown < 8 << 20,
            "RSS grew by {} KiB over 300 000 confirmed publishes whose confirms were dropped",
            grown >> 10
        );
        ch.exchange_delete(&ex, Default::default()).await.unwrap();
        conn.close().await.unwrap();
    })
    .await;
}

/// RabbitMQ does not implement `immediate`: it closes the connection with 540, and every
/// handle learns it.
#[tokio::test]
async fn immediate_publish_closes_the_connection_with_540() {
    let mut names = Cleanup::new();
    within(LIMIT, async {
        let conn = connect().await;
        let ch = conn.open_channel().await.unwrap();
        let q = names.queue("q-immediate");
        ch.queue_declare(&q, plain()).await.unwrap();
        let options = PublishOptions::default().with_immediate();
        ch.basic_publish("", &q, options, &props(), "now")
            .await
            .unwrap()
            .await
            .unwrap();
        let closed = conn.closed().await;
        common::assert_connection_closed(&closed, ReplyCode::NOT_IMPLEMENTED);
        let err = ch.basic_qos(1, Default::default()).await.unwrap_err();
        common::assert_connection_closed(&err, ReplyCode::NOT_IMPLEMENTED);
    })
    .await;
}

/// Requests queued behind an in-flight one when the application closes the channel fail with
/// the channel's reason, not as if the connection were lost.
#[tokio::test]
async fn requests_queued_at_channel_close_fail_with_channel_closed_by_app() {
    within(LIMIT, async {
        let conn = connect().await;
        let ch = conn.open_channel().await.unwrap();
        let mut calls = tokio::task::JoinSet::new();
        for _ in 0..20 {
            let c = ch.clone();
            calls.spawn(async move {
                c.queue_declare(
                    "",
                    amqp_client::QueueDeclareOptions::default().with_exclusive(),
                )
                .await
            });
        }
        // Let every task queue its request (this runtime has one thread).
        for _ in 0..5 {
            tokio::task::yield_now().await;
        }
        ch.close().await.unwrap();
        let mut refused = Vec::new();
        for result in calls.join_all().await {
            if let Err(err) = result {
                refused.push(err);
            }
        }
        assert!(!refused.is_empty(), "some requests were still queued");
        for err in &refused {
            assert!(matches!(err, Error::ChannelClosedByApp), "{err:?}");
        }
        assert!(conn.is_open());
        conn.close().await.unwrap();
    })
    .await;
}

/// The application closes a channel just as the broker closes it for an error: both sides
/// send channel.close, both answer close-ok. The connection must survive the crossing.
#[tokio::test]
async fn a_close_crossing_the_brokers_close_keeps_the_connection() {
    let mut names = Cleanup::new();
    within(LIMIT, async {
        let conn = connect().await;
        let missing = names.exchange("ex-crossing");
        for _ in 0..5 {
            let ch = conn.open_channel().await.unwrap();
            drop(
                ch.basic_publish(&missing, "k", PublishOptions::default(), &props(), "x")
                    .await
                    .unwrap(),
            );
            // Sent right behind the publish, before the broker's 404 close arrives.
            let _ = ch.close().await;
            let probe = conn.open_channel().await;
            assert!(
                conn.is_open(),
                "the connection died: {:?}",
                conn.close_reason()
            );
            probe
                .unwrap()
                .basic_qos(1, Default::default())
                .await
                .unwrap();
        }
        conn.close().await.unwrap();
    })
    .await;
}
