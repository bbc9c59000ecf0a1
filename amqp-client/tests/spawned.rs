//! The client used from spawned tasks on a multi-threaded runtime, the way services use it:
//! every future the public API returns must be `Send`.
//!
//! `Send` is checked at run time (autoref specialisation on the future's type), so a future
//! that is not `Send` fails one test with its name instead of stopping the whole test build.

mod common;

use std::marker::PhantomData;
use std::time::Duration;

use amqp_client::GetOptions;
use amqp_client::amqp_codec::BasicProperties;
use amqp_client::{Connection, PublishOptions};
use amqp_test_support::broker_url;
use common::{
    Cleanup, LIMIT, config, consume_with_prefetch, exclusive, plain, ready_count, within,
};

/// Carries a type to the `is_send` probe.
struct Probe<T>(PhantomData<T>);

impl<T> Probe<T> {
    fn of(_: &T) -> Self {
        Self(PhantomData)
    }
}

/// Chosen by method resolution when `T: Send`: `(&probe).is_send()` matches its `&self`
/// without an extra reference.
trait SendYes {
    fn is_send(&self) -> bool {
        true
    }
}
impl<T: Send> SendYes for Probe<T> {}

/// The fallback, found after one more auto-reference.
trait SendNo {
    fn is_send(&self) -> bool {
        false
    }
}
impl<T> SendNo for &Probe<T> {}

/// True if the (concrete) type of `$value` is `Send`. The value is not polled.
macro_rules! is_send {
    ($value:expr) => {{
        let value = $value;
        (&Probe::of(&value)).is_send()
    }};
}

/// A future holding an `Rc` across an await: not `Send`.
async fn not_send_future() -> usize {
    let rc = std::rc::Rc::new(1);
    tokio::task::yield_now().await;
    *rc
}

#[test]
fn the_probe_tells_send_from_not_send() {
    assert!(is_send!(1u8));
    assert!(is_send!(std::future::ready(1)));
    assert!(!is_send!(std::rc::Rc::new(1)));
    assert!(!is_send!(not_send_future()));
}

#[tokio::test]
async fn every_public_future_is_send() {
    within(LIMIT, async {
        let url = broker_url();
        let conn = Connection::connect(&url).await.unwrap();
        let ch = conn.open_channel().await.unwrap();
        let q = ch.queue_declare("", exclusive()).await.unwrap();
        let props = BasicProperties::default();
        let mut consumer = ch.basic_consume(&q.name, Default::default()).await.unwrap();
        let confirm = ch
            .basic_publish("", &q.name, PublishOptions::default(), &props, "x")
            .await
            .unwrap();
        let checks = [
            ("Connection::connect", is_send!(Connection::connect(&url))),
            (
                "Connection::connect_with",
                is_send!(Connection::connect_with(config())),
            ),
            ("Connection::open_channel", is_send!(conn.open_channel())),
            ("Connection::close", is_send!(conn.close())),
            ("Connection::closed", is_send!(conn.closed())),
            (
                "Channel::queue_declare",
                is_send!(ch.queue_declare("", Default::default())),
            ),
            (
                "Channel::basic_publish",
                is_send!(ch.basic_publish("", &q.name, PublishOptions::default(), &props, "x")),
            ),
            (
                "Channel::basic_consume",
                is_send!(ch.basic_consume(&q.name, Default::default())),
            ),
            (
                "Channel::basic_get",
                is_send!(ch.basic_get(&q.name, GetOptions::default())),
            ),
            ("Channel::confirm_select", is_send!(ch.confirm_select())),
            (
                "Channel::wait_for_confirms",
                is_send!(ch.wait_for_confirms()),
            ),
            ("Channel::close", is_send!(ch.close())),
            ("Consumer::recv", is_send!(consumer.recv())),
            ("Consumer::cancel", is_send!(consumer.cancel())),
            ("PublishConfirm", is_send!(confirm)),
        ];
        let not_send: Vec<&str> = checks
            .iter()
            .filter(|(_, send)| !send)
            .map(|(name, _)| *name)
            .collect();
        assert!(
            not_send.is_empty(),
            "futures that are not Send (cannot be used in tokio::spawn): {not_send:?}"
        );
        consumer.cancel().await.unwrap();
        conn.close().await.unwrap();
    })
    .await;
}

/// One connection, its channels used from twenty spawned tasks at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_work_from_spawned_tasks() {
    within(LIMIT, async {
        let conn = Connection::connect(&broker_url()).await.unwrap();
        let mut set = tokio::task::JoinSet::new();
        for i in 0..20 {
            let conn = conn.clone();
            set.spawn(async move {
                let ch = conn.open_channel().await.unwrap();
                let q = ch.queue_declare("", exclusive()).await.unwrap();
                ch.confirm_select().await.unwrap();
                let confirm = ch
                    .basic_publish(
                        "",
                        &q.name,
                        PublishOptions::default(),
                        &BasicProperties::default(),
                        format!("task {i}"),
                    )
                    .await
                    .unwrap();
                assert!(confirm.await.unwrap().is_acked());
                let mut consumer = ch.basic_consume(&q.name, Default::default()).await.unwrap();
                let d = tokio::time::timeout(Duration::from_secs(10), consumer.recv())
                    .await
                    .unwrap()
                    .unwrap()
                    .unwrap();
                assert_eq!(d.body, format!("task {i}").as_bytes());
                d.ack().unwrap();
                consumer.cancel().await.unwrap();
                ch.queue_delete(&q.name, Default::default()).await.unwrap();
                ch.close().await.unwrap();
            });
        }
        set.join_all().await;
        conn.close().await.unwrap();
    })
    .await;
}

/// Publishers and a consumer on different worker threads, flat out: the driver is woken only
/// when a frame goes into an empty queue (see `Shared::queue`), so a lost wake-up
/// would leave a publish or an ack unsent and this test hanging. Every publish must be
/// confirmed and every message consumed and acked (the queue left empty).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishers_and_acks_lose_no_wake_up() {
    const TASKS: usize = 4;
    const EACH: usize = 2000;
    within(LIMIT, async {
        let conn = Connection::connect(&broker_url()).await.unwrap();
        let setup = conn.open_channel().await.unwrap();
        let q = setup.queue_declare("", exclusive()).await.unwrap().name;
        let (consumer_ch, mut consumer) = consume_with_prefetch(&conn, &q, 100).await;
        let consuming = tokio::spawn(async move {
            for _ in 0..TASKS * EACH {
                let d = tokio::time::timeout(Duration::from_secs(10), consumer.recv())
                    .await
                    .expect("a delivery within 10 s")
                    .expect("consumer open")
                    .expect("no error");
                d.ack().unwrap();
            }
            consumer
        });
        let mut publishers = tokio::task::JoinSet::new();
        for task in 0..TASKS {
            let (conn, q) = (conn.clone(), q.clone());
            publishers.spawn(async move {
                let ch = conn.open_channel().await.unwrap();
                ch.confirm_select().await.unwrap();
                let mut confirms = Vec::with_capacity(EACH);
                for i in 0..EACH {
                    let confirm = ch
                        .basic_publish(
                            "",
                            q.as_str(),
                            PublishOptions::default(),
                            &BasicProperties::default(),
                            format!("{task}-{i}"),
                        )
                        .await
                        .unwrap();
                    confirms.push(confirm);
                }
                for confirm in confirms {
                    assert!(confirm.await.unwrap().is_acked());
                }
                ch.close().await.unwrap();
            });
        }
        publishers.join_all().await;
        let consumer = consuming.await.unwrap();
        consumer.cancel().await.unwrap();
        // A round trip after the acks on their channel: the broker holds none unacked, and
        // none are ready (a lost ack would have left one unacked, to be requeued on close).
        assert_eq!(common::unacked_settled(&q).await, "0", "acks lost");
        assert_eq!(ready_count(&setup, &q).await, 0);
        consumer_ch.close().await.unwrap();
        conn.close().await.unwrap();
    })
    .await;
}

/// The same with nothing to read, where a lost wake-up cannot hide. Above, every confirm and
/// delivery the broker sends wakes the driver too, and it then writes whatever was left
/// queued; any RPC wakes it as well. Here connection A has no confirms, no heartbeats and
/// makes no RPC while it is checked: four tasks publish, then, once every delivery has
/// arrived, four tasks ack, and each time the broker is watched from elsewhere (connection B,
/// `rabbitmqctl`) until it has every publish, then every ack. A frame left queued with the
/// driver asleep stays there, and so does every frame queued after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_nothing_to_read_no_wake_up_is_lost() {
    const TASKS: usize = 4;
    const EACH: usize = 2000;
    const TOTAL: u32 = (TASKS * EACH) as u32;
    let mut names = Cleanup::new();
    within(LIMIT, async {
        let q = names.queue("q-no-wake-up-lost");
        let watcher = Connection::connect(&broker_url()).await.unwrap();
        let watch = watcher.open_channel().await.unwrap();
        watch.queue_declare(&q, plain()).await.unwrap();
        let mut cfg = config();
        cfg.heartbeat = 0;
        let conn = Connection::connect_with(cfg).await.unwrap();
        let mut publishers = tokio::task::JoinSet::new();
        for task in 0..TASKS {
            let (conn, q) = (conn.clone(), q.clone());
            publishers.spawn(async move {
                let ch = conn.open_channel().await.unwrap();
                for i in 0..EACH {
                    drop(
                        ch.basic_publish(
                            "",
                            q.as_str(),
                            PublishOptions::default(),
                            &BasicProperties::default(),
                            format!("{task}-{i}"),
                        )
                        .await
                        .unwrap(),
                    );
                }
                ch
            });
        }
        let _channels = publishers.join_all().await;
        let mut ready = 0;
        for _ in 0..60 {
            ready = ready_count(&watch, &q).await;
            if ready == TOTAL {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(ready, TOTAL, "publishes left unwritten after 3 s");

        let (consumer_ch, mut consumer) = consume_with_prefetch(&conn, &q, 0).await;
        let mut deliveries = Vec::with_capacity(TOTAL as usize);
        for _ in 0..TOTAL {
            let d = tokio::time::timeout(Duration::from_secs(10), consumer.recv())
                .await
                .expect("a delivery within 10 s")
                .expect("consumer open")
                .expect("no error");
            deliveries.push(d);
        }
        // Dealt round-robin, so the four tasks' acks interleave.
        let mut hands: Vec<Vec<_>> = (0..TASKS).map(|_| Vec::new()).collect();
        for (i, d) in deliveries.into_iter().enumerate() {
            hands[i % TASKS].push(d);
        }
        let mut ackers = tokio::task::JoinSet::new();
        for mine in hands {
            ackers.spawn(async move {
                for d in mine {
                    d.ack().unwrap();
                }
            });
        }
        ackers.join_all().await;
        let unacked = common::unacked_settled(&q).await;
        assert_eq!(unacked, "0", "acks left unwritten");
        consumer.cancel().await.unwrap();
        consumer_ch.close().await.unwrap();
        assert_eq!(ready_count(&watch, &q).await, 0);
        conn.close().await.unwrap();
        watcher.close().await.unwrap();
    })
    .await;
}
