//! Automatic recovery against the real broker at `AMQP_URL`: the client's connection killed
//! with `rabbitmqctl close_connection` again and again while it publishes with confirms and
//! consumes with manual acks; server-named queues renamed with their bindings and consumers;
//! stale delivery tags refused; and, through a fault-injecting proxy, links cut, reset and
//! black-holed (detected by heartbeats), giving up, and failing over to another address.
//!
//! Each test prints its figures and asserts that no confirmed message was lost.

#![allow(clippy::unwrap_used, clippy::print_stdout)] // tests: panics and printed figures are the point

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use amqp_client::{BindOptions, GetOptions};
use amqp_client::{
    Channel, ConnectionState, ConsumeOptions, Error, ExchangeDeclareOptions, ExchangeKind,
    PublishOptions, QosOptions, QueueDeclareOptions, RecoveryEvent, RecoveryPolicy,
};
use amqp_test_support::fault_proxy::FaultProxy;
use amqp_test_support::{broker_addr, unique_name};
use common::recovery::{
    kill_connection, next_recovery, props, publish_all, quick_policy, recovering_config,
};
use common::{Cleanup, config, within};

/// Bound on each test here (several recoveries, each a `rabbitmqctl` call of ~1 s).
const LIMIT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_repeatedly_while_publishing_and_consuming_loses_nothing() {
    within(LIMIT, async {
        const MESSAGES: u32 = 4000;
        const KILLS: usize = 4;
        let name = unique_name("recovery-kill");
        let conn = amqp_client::Connection::connect_with(recovering_config(&name))
            .await
            .unwrap();
        let mut events = conn.recovery_events();
        let mut cleanup = Cleanup::new();
        let queue = cleanup.queue("recovery-kill");
        let publisher = conn.open_channel().await.unwrap();
        let durable = QueueDeclareOptions::default().with_durable();
        publisher.queue_declare(&queue, durable).await.unwrap();
        publisher.confirm_select().await.unwrap();
        let consumer_ch = conn.open_channel().await.unwrap();
        consumer_ch.basic_qos(200, QosOptions::default()).await.unwrap();
        let mut consumer = consumer_ch
            .basic_consume(&queue, ConsumeOptions::default())
            .await
            .unwrap();

        let started = Instant::now();
        let publishing = tokio::spawn(publish_all(
            publisher.clone(),
            queue.clone(),
            (0..MESSAGES).collect(),
        ));
        let killing = tokio::spawn({
            let name = name.clone();
            async move {
                let mut downtimes = Vec::new();
                for _ in 0..KILLS {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    assert!(kill_connection(&name).await > 0, "the connection is listed");
                    downtimes.push(next_recovery(&mut events).await);
                }
                downtimes
            }
        });
        let mut seen: BTreeMap<u32, u32> = BTreeMap::new();
        let (mut stale_acks, mut consumed) = (0, 0);
        while seen.len() < MESSAGES as usize {
            let delivery = consumer.recv().await.expect("the consumer survives").unwrap();
            consumed += 1;
            let id: u32 = std::str::from_utf8(&delivery.body).unwrap().parse().unwrap();
            *seen.entry(id).or_default() += 1;
            if let Err(err) = delivery.ack() {
                assert!(matches!(err, Error::StaleDelivery { .. }), "{err:?}");
                stale_acks += 1;
            }
        }
        let (published, confirmed) = publishing.await.unwrap();
        let downtimes = killing.await.unwrap();
        let lost = (0..MESSAGES).filter(|id| !seen.contains_key(id)).count();
        let duplicates: u32 = seen.values().map(|n| n - 1).sum();
        println!(
            "kills {KILLS}: published {published}, confirmed {confirmed}, consumed {consumed}, \
             distinct {}, lost {lost}, duplicated {duplicates}, stale acks refused {stale_acks}, \
             recovery downtimes {downtimes:?}, total {:?}",
            seen.len(),
            started.elapsed()
        );
        assert_eq!(lost, 0);
        assert_eq!(confirmed, MESSAGES as usize);
        assert!(matches!(*conn.state().borrow(), ConnectionState::Recovered { count } if count >= KILLS as u32));
        // The same handles still work after all of that.
        consumer_ch.queue_purge(&queue).await.unwrap();
        drop(consumer);
        drop(cleanup);
        conn.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn server_named_queue_is_renamed_and_its_binding_and_consumer_follow() {
    within(LIMIT, async {
        let name = unique_name("recovery-rename");
        let conn = amqp_client::Connection::connect_with(recovering_config(&name))
            .await
            .unwrap();
        let mut events = conn.recovery_events();
        let mut cleanup = Cleanup::new();
        let exchange = cleanup.exchange("recovery-rename");
        let ch = conn.open_channel().await.unwrap();
        ch.exchange_declare(
            &exchange,
            ExchangeKind::Fanout,
            ExchangeDeclareOptions::default(),
        )
        .await
        .unwrap();
        let exclusive = QueueDeclareOptions::default().with_exclusive();
        let old = ch.queue_declare("", exclusive).await.unwrap().name;
        ch.queue_bind(&old, &exchange, "", BindOptions::default())
            .await
            .unwrap();
        let mut consumer = ch
            .basic_consume(&old, ConsumeOptions::default().with_no_ack())
            .await
            .unwrap();

        assert_eq!(kill_connection(&name).await, 1);
        let mut renamed = None;
        loop {
            match events.recv().await.unwrap() {
                RecoveryEvent::QueueRenamed { old: o, new } => renamed = Some((o, new)),
                RecoveryEvent::Recovered { .. } => break,
                RecoveryEvent::Failed(err) => panic!("{err}"),
                _ => {}
            }
        }
        let (o, new) = renamed.expect("a QueueRenamed event");
        println!("server-named queue {o} came back as {new}");
        assert_eq!(o, old);
        assert_ne!(new, old);
        // The binding followed: a message to the exchange reaches the same consumer stream.
        drop(
            ch.basic_publish(
                exchange.as_str(),
                "",
                PublishOptions::default(),
                &props(),
                "after",
            )
            .await
            .unwrap(),
        );
        let delivery = tokio::time::timeout(Duration::from_secs(5), consumer.recv())
            .await
            .expect("delivery through the recovered binding")
            .unwrap()
            .unwrap();
        assert_eq!(&delivery.body[..], b"after");
        drop(consumer);
        drop(cleanup);
        conn.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_delivery_from_before_recovery_cannot_be_acked_and_comes_again() {
    within(LIMIT, async {
        let name = unique_name("recovery-stale");
        let conn = amqp_client::Connection::connect_with(recovering_config(&name))
            .await
            .unwrap();
        let mut events = conn.recovery_events();
        let mut cleanup = Cleanup::new();
        let queue = cleanup.queue("recovery-stale");
        let ch = conn.open_channel().await.unwrap();
        ch.queue_declare(&queue, QueueDeclareOptions::default().with_durable())
            .await
            .unwrap();
        ch.confirm_select().await.unwrap();
        let mut consumer = ch
            .basic_consume(&queue, ConsumeOptions::default())
            .await
            .unwrap();
        for body in ["one", "two"] {
            let c = ch
                .basic_publish(
                    "",
                    queue.as_str(),
                    PublishOptions::default(),
                    &props(),
                    body,
                )
                .await
                .unwrap();
            assert!(c.await.unwrap().is_acked());
        }
        let first = consumer.recv().await.unwrap().unwrap();
        assert_eq!((first.delivery_tag, &first.body[..]), (1, &b"one"[..]));

        kill_connection(&name).await;
        next_recovery(&mut events).await;
        // Tag 1 on the new connection would name whatever comes first now: refused.
        let err = first.ack().unwrap_err();
        assert!(
            matches!(err, Error::StaleDelivery { delivery_tag: 1 }),
            "{err:?}"
        );
        let mut bodies = BTreeSet::new();
        while bodies.len() < 2 {
            let d = consumer.recv().await.unwrap().unwrap();
            assert!(
                d.redelivered,
                "both messages were unacked when the connection died"
            );
            d.ack().unwrap();
            bodies.insert(String::from_utf8(d.body.to_vec()).unwrap());
        }
        assert_eq!(bodies, BTreeSet::from(["one".to_owned(), "two".to_owned()]));
        println!("stale ack refused; both messages redelivered once and acked");
        drop(consumer);
        drop(cleanup);
        conn.close().await.unwrap();
    })
    .await;
}

/// Waits for the next `Lost` event, which must come within 1 s (half the heartbeat timeout of
/// a 1 s interval) and not be a heartbeat timeout: the link's end was seen on the socket.
/// Returns how long it took.
async fn seen_lost(events: &mut tokio::sync::broadcast::Receiver<RecoveryEvent>) -> Duration {
    let began = Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(1), async {
        loop {
            if let RecoveryEvent::Lost(err) = events.recv().await.unwrap() {
                return err;
            }
        }
    })
    .await
    .expect("the link's end was seen within 1 s");
    assert!(!matches!(err, Error::HeartbeatTimeout(_)), "{err:?}");
    began.elapsed()
}

/// A recovering connection to the broker through `proxies` (first one first).
async fn through(
    proxies: &[&FaultProxy],
    heartbeat: u16,
    policy: RecoveryPolicy,
) -> amqp_client::Connection {
    let mut cfg = config().with_recovery(policy);
    cfg.host = "127.0.0.1".into();
    cfg.port = proxies[0].addr().port();
    cfg.fallback_addresses = proxies[1..]
        .iter()
        .map(|p| ("127.0.0.1".to_owned(), p.addr().port()))
        .collect();
    cfg.heartbeat = heartbeat;
    amqp_client::Connection::connect_with(cfg).await.unwrap()
}

/// Publishes one message to `queue` and gets it back with basic.get, skipping any message a
/// dead link delivered late (a publish whose confirm failed may still have reached the
/// broker: at-least-once). Returns how many such messages it skipped.
async fn round_trip(ch: &Channel, queue: &str, body: &str) -> usize {
    let c = ch
        .basic_publish(
            "",
            queue,
            PublishOptions::default(),
            &props(),
            body.to_owned(),
        )
        .await
        .unwrap();
    assert!(c.await.unwrap().is_acked());
    let mut skipped = 0;
    loop {
        let got = ch
            .basic_get(queue, GetOptions::no_ack())
            .await
            .unwrap()
            .expect("the message is there");
        if &got.delivery.body[..] == body.as_bytes() {
            return skipped;
        }
        skipped += 1;
    }
}

#[tokio::test]
async fn proxy_cut_reset_and_black_hole_are_each_recovered() {
    within(LIMIT, async {
        let proxy = FaultProxy::start(broker_addr()).await.unwrap();
        let conn = through(&[&proxy], 1, quick_policy()).await;
        let mut events = conn.recovery_events();
        let mut cleanup = Cleanup::new();
        let queue = cleanup.queue("recovery-proxy");
        let ch = conn.open_channel().await.unwrap();
        ch.queue_declare(&queue, QueueDeclareOptions::default())
            .await
            .unwrap();
        ch.confirm_select().await.unwrap();
        round_trip(&ch, &queue, "before").await;

        // A publish whose confirm is pending when the link dies fails; it is never replayed.
        proxy.stall(true);
        let pending = ch
            .basic_publish(
                "",
                queue.as_str(),
                PublishOptions::default(),
                &props(),
                "lost?",
            )
            .await
            .unwrap();
        let stalled_at = Instant::now();
        let lost = loop {
            if let RecoveryEvent::Lost(err) = events.recv().await.unwrap() {
                break err;
            }
        };
        let detection = stalled_at.elapsed();
        assert!(matches!(lost, Error::HeartbeatTimeout(_)), "{lost:?}");
        assert!(
            detection < Duration::from_millis(3500),
            "detected after {detection:?} (heartbeat 1 s)"
        );
        assert!(pending.await.is_err(), "the pending confirm failed");
        proxy.stall(false);
        let black_hole = next_recovery(&mut events).await;
        let late = round_trip(&ch, &queue, "after black hole").await;

        // A cut (FIN) and a reset (RST) are seen at once, not by the heartbeat's 2 s.
        proxy.cut();
        let cut_seen = seen_lost(&mut events).await;
        let cut = next_recovery(&mut events).await;
        round_trip(&ch, &queue, "after cut").await;

        proxy.reset();
        let reset_seen = seen_lost(&mut events).await;
        let reset = next_recovery(&mut events).await;
        round_trip(&ch, &queue, "after reset").await;
        println!(
            "black hole detected in {detection:?}, recovered after {black_hole:?} \
             ({late} unconfirmed publish delivered late by the dead link); \
             cut seen in {cut_seen:?}, recovered in {cut:?}; reset seen in {reset_seen:?}, \
             recovered in {reset:?}; {} links accepted",
            proxy.accepted()
        );
        assert_eq!(proxy.accepted(), 4);
        drop(cleanup);
        conn.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn gives_up_after_max_attempts_and_every_handle_gets_the_final_error() {
    within(LIMIT, async {
        let proxy = FaultProxy::start(broker_addr()).await.unwrap();
        let policy = RecoveryPolicy {
            max_attempts: Some(3),
            wait_while_recovering: Duration::from_secs(20),
            ..quick_policy()
        };
        let conn = through(&[&proxy], 0, policy).await;
        let ch = conn.open_channel().await.unwrap();
        let mut consumer = exclusive_consumer(&conn).await;
        let mut events = conn.recovery_events();
        proxy.refuse(true);
        proxy.cut();
        assert!(matches!(
            events.recv().await.unwrap(),
            RecoveryEvent::Lost(_)
        ));
        // A call made meanwhile waits for the outcome, then gets it.
        let err = ch
            .queue_declare("", QueueDeclareOptions::default())
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::RecoveryFailed { attempts: 3, .. }),
            "{err:?}"
        );
        assert_every_handle_failed(&conn, &ch, &mut consumer).await;
        println!("gave up: {err}; {} connections tried", proxy.accepted());
        assert_eq!(
            proxy.accepted(),
            4,
            "the first connection and three attempts"
        );

        // The same by time: no attempt limit, `give_up_after` 1 s.
        let proxy = FaultProxy::start(broker_addr()).await.unwrap();
        let policy = RecoveryPolicy {
            max_attempts: None,
            give_up_after: Some(Duration::from_secs(1)),
            wait_while_recovering: Duration::from_secs(20),
            ..quick_policy()
        };
        let conn = through(&[&proxy], 0, policy).await;
        let ch = conn.open_channel().await.unwrap();
        let mut consumer = exclusive_consumer(&conn).await;
        let mut events = conn.recovery_events();
        proxy.refuse(true);
        let lost_at = Instant::now();
        proxy.cut();
        assert!(matches!(
            events.recv().await.unwrap(),
            RecoveryEvent::Lost(_)
        ));
        let err = ch
            .queue_declare("", QueueDeclareOptions::default())
            .await
            .unwrap_err();
        let after = lost_at.elapsed();
        assert!(matches!(&err, Error::RecoveryFailed { .. }), "{err:?}");
        assert!(
            after >= Duration::from_millis(900) && after < Duration::from_secs(5),
            "gave up after {after:?} (give_up_after 1 s)"
        );
        assert_every_handle_failed(&conn, &ch, &mut consumer).await;
        println!("gave up after {after:?}: {err}");
    })
    .await;
}

/// A consumer of a new server-named exclusive queue on a channel of its own.
async fn exclusive_consumer(conn: &amqp_client::Connection) -> amqp_client::Consumer {
    let ch = conn.open_channel().await.unwrap();
    let exclusive = QueueDeclareOptions::default().with_exclusive();
    let q = ch.queue_declare("", exclusive).await.unwrap();
    ch.basic_consume(&q.name, ConsumeOptions::default())
        .await
        .unwrap()
}

/// After recovery gave up: the connection, a channel and a consumer all end with
/// `RecoveryFailed`, and new calls fail with it at once.
async fn assert_every_handle_failed(
    conn: &amqp_client::Connection,
    ch: &Channel,
    consumer: &mut amqp_client::Consumer,
) {
    assert!(matches!(conn.closed().await, Error::RecoveryFailed { .. }));
    assert!(matches!(*conn.state().borrow(), ConnectionState::Failed(_)));
    match consumer.recv().await {
        Some(Err(Error::RecoveryFailed { .. })) => {}
        other => panic!("the consumer ends with RecoveryFailed, got {other:?}"),
    }
    assert!(consumer.recv().await.is_none(), "then the stream ends");
    let err = ch.basic_qos(1, QosOptions::default()).await.unwrap_err();
    assert!(matches!(err, Error::RecoveryFailed { .. }), "{err:?}");
    let err = conn.open_channel().await.unwrap_err();
    assert!(matches!(err, Error::RecoveryFailed { .. }), "{err:?}");
}

#[tokio::test]
async fn fails_over_to_the_next_address() {
    within(LIMIT, async {
        let first = FaultProxy::start(broker_addr()).await.unwrap();
        let second = FaultProxy::start(broker_addr()).await.unwrap();
        let conn = through(&[&first, &second], 0, quick_policy()).await;
        let mut events = conn.recovery_events();
        let ch = conn.open_channel().await.unwrap();
        first.refuse(true);
        first.cut();
        let address = loop {
            if let RecoveryEvent::Recovered { address, .. } = events.recv().await.unwrap() {
                break address;
            }
        };
        assert_eq!(address, second.addr().to_string());
        ch.queue_declare("", QueueDeclareOptions::default().with_exclusive())
            .await
            .unwrap();
        println!("failed over to {address}");
        conn.close().await.unwrap();
    })
    .await;
}

/// Without recovery too, the first connect goes down the list: a cluster whose first node
/// is down is reached through the next one, and when every address fails, the error is the
/// last one's (not a hang).
#[tokio::test]
async fn the_first_connect_tries_every_address_in_turn() {
    within(LIMIT, async {
        let down = FaultProxy::start(broker_addr()).await.unwrap();
        down.refuse(true);
        let up = FaultProxy::start(broker_addr()).await.unwrap();
        let mut cfg = config();
        cfg.host = "127.0.0.1".into();
        cfg.port = down.addr().port();
        cfg.fallback_addresses = vec![("127.0.0.1".to_owned(), up.addr().port())];
        assert!(cfg.recovery.is_none());
        let conn = amqp_client::Connection::connect_with(cfg.clone())
            .await
            .expect("the second address answers");
        assert_eq!(conn.address(), up.addr().to_string());
        conn.close().await.unwrap();

        up.refuse(true);
        let err = amqp_client::Connection::connect_with(cfg)
            .await
            .unwrap_err();
        assert!(err.is_recoverable(), "{err:?}");
    })
    .await;
}

#[tokio::test]
async fn a_connection_closed_by_the_application_is_not_recovered() {
    within(LIMIT, async {
        let conn = amqp_client::Connection::connect_with(config().with_recovery(quick_policy()))
            .await
            .unwrap();
        let ch = conn.open_channel().await.unwrap();
        conn.close().await.unwrap();
        assert!(matches!(*conn.state().borrow(), ConnectionState::Closed));
        let err = ch
            .queue_declare("", QueueDeclareOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(err, Error::ConnectionClosedByApp), "{err:?}");
    })
    .await;
}
