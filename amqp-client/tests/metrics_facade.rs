//! Feature `metrics`: a connection's message counts reach the `metrics` facade as counters
//! named `amqp_client_*_total`, labelled with the connection's name, equal to
//! `Connection::message_stats` once the connection has ended; a connection without a name
//! reports unlabelled counters. Against the real broker at `AMQP_URL`, with a recorder of the
//! test's own installed for the whole process (this file holds the one test that needs it).

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use amqp_client::{BasicProperties, Connection, ConnectionConfig, MessageStats, PublishOptions};
use amqp_test_support::{broker_url, unique_name};
use common::{Cleanup, LIMIT, consume_with_prefetch, next, plain, within};
use metrics::{Counter, CounterFn, Gauge, Histogram, Key, KeyName, Metadata, Recorder};
use metrics::{SharedString, Unit};

/// Counter values by (name, `connection` label).
type Values = Arc<Mutex<HashMap<(String, Option<String>), u64>>>;

/// A recorder that keeps counters in a map and ignores everything else.
#[derive(Default)]
struct MapRecorder {
    /// The counters, shared with the test that reads them.
    values: Values,
}

/// One counter of [`MapRecorder`].
struct Cell {
    /// Which counter: name and `connection` label.
    key: (String, Option<String>),
    /// Where its value is kept.
    values: Values,
}

impl CounterFn for Cell {
    fn increment(&self, value: u64) {
        let mut map = self.values.lock().unwrap_or_else(PoisonError::into_inner);
        *map.entry(self.key.clone()).or_default() += value;
    }

    fn absolute(&self, value: u64) {
        let mut map = self.values.lock().unwrap_or_else(PoisonError::into_inner);
        let v = map.entry(self.key.clone()).or_default();
        *v = (*v).max(value);
    }
}

impl Recorder for MapRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let label = key
            .labels()
            .find(|l| l.key() == "connection")
            .map(|l| l.value().to_owned());
        Counter::from_arc(Arc::new(Cell {
            key: (key.name().to_owned(), label),
            values: self.values.clone(),
        }))
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

/// The value of counter `name` for `label`, 0 if never reported.
fn value(values: &Values, name: &str, label: Option<&str>) -> u64 {
    let map = values.lock().unwrap_or_else(PoisonError::into_inner);
    map.get(&(name.to_owned(), label.map(str::to_owned)))
        .copied()
        .unwrap_or(0)
}

/// The counters of `label` as a `MessageStats`-like list, in the facade's order.
fn reported(values: &Values, label: Option<&str>) -> [u64; 8] {
    [
        "published",
        "confirmed",
        "nacked",
        "returned",
        "delivered",
        "acked",
        "rejected",
        "recoveries",
    ]
    .map(|c| value(values, &format!("amqp_client_{c}_total"), label))
}

fn as_list(s: &MessageStats) -> [u64; 8] {
    [
        s.published,
        s.confirmed,
        s.nacked,
        s.returned,
        s.delivered,
        s.acked,
        s.rejected,
        s.recoveries,
    ]
}

/// Publishes `n` messages with confirms to a fresh queue, consumes and acks them; the
/// connection's own counts at the end.
async fn traffic(conn: &Connection, names: &mut Cleanup, n: usize) -> MessageStats {
    let q = names.queue("q-metrics");
    let ch = conn.open_channel().await.expect("channel");
    ch.queue_declare(&q, plain()).await.expect("declare");
    ch.confirm_select().await.expect("confirm mode");
    for i in 0..n {
        let props = BasicProperties::default();
        let body = format!("m{i}");
        let confirm = ch
            .basic_publish("", &q, PublishOptions::default(), &props, body)
            .await
            .expect("publish");
        assert!(confirm.await.expect("confirm").is_acked());
    }
    let (cch, mut consumer) = consume_with_prefetch(conn, &q, 10).await;
    for _ in 0..n {
        next(&mut consumer).await.ack().expect("ack");
    }
    consumer.cancel().await.expect("cancel");
    cch.close().await.expect("close");
    conn.message_stats()
}

/// Waits (bounded: three reporting periods) until the counters of `label` equal `expected`.
async fn until_reported(values: &Values, label: Option<&str>, expected: [u64; 8]) {
    for _ in 0..60 {
        if reported(values, label) == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "counters of {label:?}: {:?}, the connection counted {expected:?}",
        reported(values, label)
    );
}

#[tokio::test]
async fn message_counts_reach_the_metrics_facade_labelled_with_the_connection_name() {
    let recorder = MapRecorder::default();
    let values = recorder.values.clone();
    metrics::set_global_recorder(recorder).expect("the only recorder of this test process");
    let mut names = Cleanup::new();
    within(LIMIT, async {
        let name = unique_name("metrics-conn");
        let mut config = ConnectionConfig::from_uri(&broker_url()).unwrap();
        config.connection_name = Some(name.clone());
        let conn = Connection::connect_with(config).await.unwrap();
        let stats = traffic(&conn, &mut names, 20).await;
        assert_eq!(
            (
                stats.published,
                stats.confirmed,
                stats.delivered,
                stats.acked
            ),
            (20, 20, 20, 20)
        );
        // Reported while the connection lives (by the periodic task), and unchanged by its
        // close (the driver's last report adds nothing new).
        until_reported(&values, Some(&name), as_list(&stats)).await;
        conn.close().await.unwrap();
        assert_eq!(as_list(&conn.message_stats()), as_list(&stats));
        until_reported(&values, Some(&name), as_list(&stats)).await;

        // No name, no label; the named connection's counters do not move.
        let conn = Connection::connect(&broker_url()).await.unwrap();
        let unnamed = traffic(&conn, &mut names, 5).await;
        // Closed before the next tick, most likely: the driver's last report has them.
        conn.close().await.unwrap();
        until_reported(&values, None, as_list(&unnamed)).await;
        assert_eq!(reported(&values, Some(&name)), as_list(&stats));
    })
    .await;
}
