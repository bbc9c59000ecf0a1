//! [`Metrics`]: lock-free counters, gauges and a handler-duration histogram, rendered in the
//! Prometheus text format by [`Metrics::render_prometheus`].
//!
//! Every series carries a `queue` label (the work queue). Retries are counted per failed
//! attempt (`attempt` label), parked tasks per reason (`reason`: `attempts-exhausted` or
//! `rejected`). Two gauges are refreshed from the broker every `queue_depth_interval` by a
//! passive declare: the parking queue's depth and the depth of the queue that catches delayed
//! messages whose target vanished ([`crate::publisher::UNROUTABLE_QUEUE`]); they are absent
//! until first read.

use std::collections::BTreeMap;
use std::fmt::{Display, Write as _};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use amqp_client::{MessageStats, StatsHandle};

use crate::handler::ParkReason;

/// Upper bounds (seconds) of the handler-duration histogram buckets.
pub const DURATION_BUCKETS: [f64; 13] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// A gauge not read yet.
const UNKNOWN: i64 = -1;

/// The worker's counters. Shared (`Arc`) between the worker, the HTTP endpoint and the
/// application; one per worker (its `queue` label is the first worker's queue).
#[derive(Debug)]
pub struct Metrics {
    queue: OnceLock<String>,
    /// Handler runs started. Those running now are this less `succeeded` and `failed`: one
    /// atomic add per task instead of a gauge's two, on a line both runtime threads write.
    consumed: AtomicU64,
    /// Handler runs that succeeded.
    succeeded: AtomicU64,
    /// Handler runs that failed. With `succeeded`, the histogram's count.
    failed: AtomicU64,
    retried: AtomicU64,
    /// Retries by the attempt that failed.
    retried_by_attempt: Mutex<BTreeMap<u32, u64>>,
    dead_lettered: AtomicU64,
    rejected: AtomicU64,
    /// The client's counts of the worker's connections (reconnects are the client's
    /// recoveries): read from each connection, never counted twice here.
    client: Mutex<ClientCounts>,
    stale_settles: AtomicU64,
    unreadable: AtomicU64,
    connected: AtomicBool,
    parked_depth: AtomicI64,
    unroutable_depth: AtomicI64,
    /// Handler runs per duration bucket, each counted in the first bucket whose bound it is
    /// within (one atomic add per run); made cumulative when rendered. Runs past the last
    /// bound are only in the count (`succeeded` and `failed`).
    buckets: [AtomicU64; DURATION_BUCKETS.len()],
    duration_sum_micros: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            queue: OnceLock::new(),
            consumed: AtomicU64::new(0),
            succeeded: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            retried: AtomicU64::new(0),
            retried_by_attempt: Mutex::new(BTreeMap::new()),
            dead_lettered: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            client: Mutex::new(ClientCounts::default()),
            stale_settles: AtomicU64::new(0),
            unreadable: AtomicU64::new(0),
            connected: AtomicBool::new(false),
            parked_depth: AtomicI64::new(UNKNOWN),
            unroutable_depth: AtomicI64::new(UNKNOWN),
            buckets: Default::default(),
            duration_sum_micros: AtomicU64::new(0),
        }
    }
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MetricsSnapshot {
    /// Deliveries handed to a handler.
    pub consumed: u64,
    /// Handler runs that succeeded.
    pub succeeded: u64,
    /// Handler runs that failed (error, panic or timeout).
    pub failed: u64,
    /// Failed tasks sent to a delay queue (confirmed).
    pub retried: u64,
    /// Failed tasks parked (confirmed), for either reason.
    pub dead_lettered: u64,
    /// Of those, tasks parked because the handler said not to retry.
    pub rejected: u64,
    /// Handlers running now.
    pub in_flight: i64,
    /// Connections re-established after a loss: the client's recoveries
    /// ([`MessageStats::recoveries`] of the worker's connection).
    pub reconnects: u64,
    /// Settlements refused because the delivery's channel was gone (the broker redelivers).
    pub stale_settles: u64,
    /// Deliveries the client could not read (over its `max_message_size`, or properties that
    /// do not parse), rejected so that the broker dead-letters them into the parking queue.
    pub unreadable: u64,
    /// True while the worker has a consuming connection.
    pub connected: bool,
    /// Messages in the parking queue at the last refresh (`None` before the first).
    pub parked_depth: Option<u64>,
    /// Messages in the unroutable queue of delayed sends at the last refresh (`None` before
    /// the first).
    pub unroutable_depth: Option<u64>,
}

/// The client's counts of every connection a worker reporting here has had.
#[derive(Debug, Default)]
struct ClientCounts {
    /// Each connection's handle, with its counts when last read: a connection that is gone
    /// (the worker stopped) keeps its last counts, so totals never go down.
    connections: Vec<(StatsHandle, MessageStats)>,
}

impl ClientCounts {
    /// The totals now, over every connection (each read again while it lives).
    fn refresh(&mut self) -> MessageStats {
        let mut total = MessageStats::default();
        for (handle, last) in &mut self.connections {
            if let Some(now) = handle.message_stats() {
                *last = now;
            }
            total += *last;
        }
        total
    }
}

fn gauge(v: &AtomicI64) -> Option<u64> {
    u64::try_from(v.load(Ordering::Relaxed)).ok()
}

/// A label value with `\`, `"` and newlines escaped, as the text format requires.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    /// Fresh counters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Fresh counters labelled with `queue`.
    pub fn for_queue(queue: &str) -> Self {
        let m = Self::default();
        m.bind_queue(queue);
        m
    }

    /// Sets the `queue` label if it is not set yet.
    pub(crate) fn bind_queue(&self, queue: &str) {
        let _ = self.queue.set(queue.to_owned());
    }

    /// The `queue` label (empty if no worker was given these metrics).
    pub fn queue(&self) -> &str {
        self.queue.get().map_or("", String::as_str)
    }

    /// The worker's connection, whose client counts (see [`client_stats`](Self::client_stats))
    /// these metrics report from now on.
    pub(crate) fn bind_client(&self, handle: StatsHandle) {
        let last = handle.message_stats().unwrap_or_default();
        self.client_counts().connections.push((handle, last));
    }

    fn client_counts(&self) -> std::sync::MutexGuard<'_, ClientCounts> {
        self.client.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What the client counted on the worker's connection (summed over the connections of
    /// every worker reporting here): published (retry and parked copies), confirmed,
    /// delivered, acked, rejected, recoveries. A connection that ended keeps its last counts.
    pub fn client_stats(&self) -> MessageStats {
        self.client_counts().refresh()
    }

    /// The counters now.
    pub fn snapshot(&self) -> MetricsSnapshot {
        self.snapshot_with(&self.client_stats())
    }

    /// The counters now, the client's being `client`.
    fn snapshot_with(&self, client: &MessageStats) -> MetricsSnapshot {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let (succeeded, failed) = (r(&self.succeeded), r(&self.failed));
        // Read after the runs that finished, so that it counts them all.
        let consumed = r(&self.consumed);
        let finished = succeeded.saturating_add(failed);
        MetricsSnapshot {
            consumed,
            succeeded,
            failed,
            retried: r(&self.retried),
            dead_lettered: r(&self.dead_lettered),
            rejected: r(&self.rejected),
            in_flight: i64::try_from(consumed.saturating_sub(finished)).unwrap_or(i64::MAX),
            reconnects: client.recoveries,
            stale_settles: r(&self.stale_settles),
            unreadable: r(&self.unreadable),
            connected: self.connected.load(Ordering::Relaxed),
            parked_depth: gauge(&self.parked_depth),
            unroutable_depth: gauge(&self.unroutable_depth),
        }
    }

    /// Retries so far by the attempt that failed (1 for the first).
    pub fn retried_by_attempt(&self) -> BTreeMap<u32, u64> {
        self.retried_by_attempt
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// True while connected and consuming.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    pub(crate) fn set_connected(&self, up: bool) {
        self.connected.store(up, Ordering::Relaxed);
    }

    /// A handler run starts.
    pub(crate) fn started(&self) {
        self.consumed.fetch_add(1, Ordering::Relaxed);
    }

    /// A handler run ended, after `took`: three atomic adds, four per run with
    /// [`started`](Self::started)'s (callgrind on the worker bench: seven before, when the
    /// running count and the histogram's count had their own).
    pub(crate) fn finished(&self, ok: bool, took: Duration) {
        let counter = if ok { &self.succeeded } else { &self.failed };
        counter.fetch_add(1, Ordering::Relaxed);
        let secs = took.as_secs_f64();
        if let Some(i) = DURATION_BUCKETS.iter().position(|bound| secs <= *bound) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.duration_sum_micros
            .fetch_add(micros, Ordering::Relaxed);
    }

    /// A retry was stored after attempt `attempt` failed.
    pub(crate) fn retried(&self, attempt: u32) {
        self.retried.fetch_add(1, Ordering::Relaxed);
        *self
            .retried_by_attempt
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(attempt)
            .or_default() += 1;
    }

    pub(crate) fn dead_lettered(&self, reason: ParkReason) {
        self.dead_lettered.fetch_add(1, Ordering::Relaxed);
        if reason == ParkReason::Rejected {
            self.rejected.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn stale_settle(&self) {
        self.stale_settles.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn unreadable(&self) {
        self.unreadable.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn set_parked_depth(&self, n: u32) {
        self.parked_depth.store(i64::from(n), Ordering::Relaxed);
    }

    pub(crate) fn set_unroutable_depth(&self, n: u32) {
        self.unroutable_depth.store(i64::from(n), Ordering::Relaxed);
    }

    /// The Prometheus text exposition of every metric (`amqp_worker_` prefix, `queue` label).
    pub fn render_prometheus(&self) -> String {
        let client = self.client_stats();
        let s = self.snapshot_with(&client);
        let mut out = Exposition::new(self.queue());
        out.counter("consumed", "Deliveries handed to a handler.", s.consumed);
        out.counter("succeeded", "Handler runs that succeeded.", s.succeeded);
        out.counter(
            "failed",
            "Handler runs that failed (error, panic or timeout).",
            s.failed,
        );
        out.counter(
            "stale_settles",
            "Settlements refused on a closed channel.",
            s.stale_settles,
        );
        out.counter(
            "unreadable",
            "Deliveries the client could not read, dead-lettered into the parking queue.",
            s.unreadable,
        );
        out.labelled_counter(
            "retried",
            "Failed tasks sent to a delay queue, by the attempt that failed.",
            "attempt",
            self.retried_by_attempt(),
        );
        out.labelled_counter(
            "dead_lettered",
            "Tasks parked, by reason (attempts-exhausted, rejected by the handler).",
            "reason",
            parked_by_reason(&s),
        );
        out.gauge("in_flight", "Handlers running now.", Some(s.in_flight));
        out.gauge(
            "connected",
            "1 while connected to the broker.",
            Some(u8::from(s.connected)),
        );
        out.gauge(
            "parked_messages",
            "Messages in the parking queue (refreshed periodically).",
            s.parked_depth,
        );
        out.gauge(
            "delayed_unroutable_messages",
            "Delayed messages whose target was gone when their delay ended (refreshed periodically).",
            s.unroutable_depth,
        );
        self.duration_histogram(&mut out);
        client_counters(&mut out, &client);
        out.text
    }

    /// The handler-duration histogram: cumulative buckets, the `+Inf` one (every run), then
    /// the sum in seconds and the count.
    fn duration_histogram(&self, out: &mut Exposition) {
        let name = "handler_duration_seconds";
        out.head(name, "histogram", "Handler run time.");
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0;
        for (bound, n) in DURATION_BUCKETS.iter().zip(&self.buckets) {
            cumulative += n.load(Ordering::Relaxed);
            out.sample(&bucket, Some(("le", bound)), cumulative);
        }
        // Read after the buckets, and never below them (a run counted meanwhile).
        let finished = self.succeeded.load(Ordering::Relaxed) + self.failed.load(Ordering::Relaxed);
        let count = finished.max(cumulative);
        let sum = self.duration_sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        out.sample(&bucket, Some(("le", &"+Inf")), count);
        out.sample(&format!("{name}_sum"), None, sum);
        out.sample(&format!("{name}_count"), None, count);
    }
}

/// The client's counts of the worker's connection, `amqp_worker_client_<name>_total`.
fn client_counters(out: &mut Exposition, c: &MessageStats) {
    let counters = [
        (
            "published",
            "Messages the worker's connection published (retry and parked copies).",
            c.published,
        ),
        (
            "confirmed",
            "Publishes the broker confirmed (acked).",
            c.confirmed,
        ),
        ("nacked", "Publishes the broker nacked.", c.nacked),
        (
            "returned",
            "Publishes the broker returned as unroutable.",
            c.returned,
        ),
        (
            "delivered",
            "Messages delivered to the worker's connection.",
            c.delivered,
        ),
        ("acked", "Deliveries the worker acked.", c.acked),
        (
            "rejected",
            "Deliveries the worker nacked or rejected.",
            c.rejected,
        ),
        (
            "recoveries",
            "Broker connections re-established (automatic recovery).",
            c.recoveries,
        ),
    ];
    for (name, help, value) in counters {
        out.counter(&format!("client_{name}"), help, value);
    }
}

/// Parked tasks by reason label: those parked for exhausting their attempts are the parked
/// ones not rejected.
fn parked_by_reason(s: &MetricsSnapshot) -> [(&'static str, u64); 2] {
    let exhausted = s.dead_lettered.saturating_sub(s.rejected);
    [
        (ParkReason::AttemptsExhausted.as_str(), exhausted),
        (ParkReason::Rejected.as_str(), s.rejected),
    ]
}

/// The text being rendered: each metric is a `# HELP` and `# TYPE` head, then its samples,
/// each labelled with the queue.
struct Exposition {
    /// The text so far.
    text: String,
    /// The `queue="..."` label, escaped.
    queue: String,
}

impl Exposition {
    /// An empty exposition whose samples carry `queue`.
    fn new(queue: &str) -> Self {
        Exposition {
            text: String::with_capacity(4096),
            queue: format!("queue=\"{}\"", escape(queue)),
        }
    }

    /// The `# HELP` and `# TYPE` lines of `amqp_worker_<name>`.
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP amqp_worker_{name} {help}");
        let _ = writeln!(self.text, "# TYPE amqp_worker_{name} {kind}");
    }

    /// One sample of `amqp_worker_<name>`, with the queue label and optionally one more.
    fn sample(&mut self, name: &str, label: Option<(&str, &dyn Display)>, value: impl Display) {
        let q = &self.queue;
        let _ = match label {
            Some((key, v)) => {
                writeln!(self.text, "amqp_worker_{name}{{{q},{key}=\"{v}\"}} {value}")
            }
            None => writeln!(self.text, "amqp_worker_{name}{{{q}}} {value}"),
        };
    }

    /// A counter (`amqp_worker_<name>_total`) with one sample.
    fn counter(&mut self, name: &str, help: &str, value: u64) {
        let name = format!("{name}_total");
        self.head(&name, "counter", help);
        self.sample(&name, None, value);
    }

    /// A counter (`amqp_worker_<name>_total`) with one sample per value of `label`; none if
    /// there are no values yet.
    fn labelled_counter<K: Display, V: Display>(
        &mut self,
        name: &str,
        help: &str,
        label: &str,
        values: impl IntoIterator<Item = (K, V)>,
    ) {
        let name = format!("{name}_total");
        self.head(&name, "counter", help);
        for (key, value) in values {
            self.sample(&name, Some((label, &key)), value);
        }
    }

    /// A gauge with its sample, or only its head while the value is unknown.
    fn gauge(&mut self, name: &str, help: &str, value: Option<impl Display>) {
        self.head(name, "gauge", help);
        if let Some(value) = value {
            self.sample(name, None, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_in_flight_are_the_started_less_the_finished() {
        let m = Metrics::new();
        for _ in 0..3 {
            m.started();
        }
        m.finished(true, Duration::from_millis(1));
        m.finished(false, Duration::from_secs(100));
        let s = m.snapshot();
        assert_eq!(
            (s.consumed, s.succeeded, s.failed, s.in_flight),
            (3, 1, 1, 1)
        );
        let text = m.render_prometheus();
        assert!(
            text.contains("amqp_worker_in_flight{queue=\"\"} 1"),
            "{text}"
        );
        // The run past the last bucket is in the count only.
        assert!(
            text.contains("amqp_worker_handler_duration_seconds_count{queue=\"\"} 2"),
            "{text}"
        );
    }

    #[test]
    fn histogram_is_cumulative_and_every_series_has_the_queue_label() {
        let m = Metrics::for_queue("jobs");
        m.started();
        m.finished(true, Duration::from_millis(30));
        m.started();
        m.finished(false, Duration::from_secs(3));
        m.retried(1);
        m.retried(1);
        m.retried(2);
        m.dead_lettered(ParkReason::Rejected);
        m.set_parked_depth(7);
        let text = m.render_prometheus();
        let b = "amqp_worker_handler_duration_seconds";
        assert!(text.contains(&format!("{b}_bucket{{queue=\"jobs\",le=\"0.05\"}} 1")));
        assert!(text.contains(&format!("{b}_bucket{{queue=\"jobs\",le=\"5\"}} 2")));
        assert!(text.contains(&format!("{b}_count{{queue=\"jobs\"}} 2")));
        assert!(text.contains("amqp_worker_failed_total{queue=\"jobs\"} 1"));
        assert!(text.contains("amqp_worker_retried_total{queue=\"jobs\",attempt=\"1\"} 2"));
        assert!(text.contains("amqp_worker_retried_total{queue=\"jobs\",attempt=\"2\"} 1"));
        assert!(
            text.contains("amqp_worker_dead_lettered_total{queue=\"jobs\",reason=\"rejected\"} 1")
        );
        assert!(text.contains("amqp_worker_parked_messages{queue=\"jobs\"} 7"));
        assert!(!text.contains("amqp_worker_delayed_unroutable_messages{"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.contains("{queue=\"jobs\""), "{line}");
        }
        assert_eq!(m.snapshot().in_flight, 0);
    }

    #[test]
    fn the_client_counts_of_the_connection_are_exposed_and_reconnects_are_its_recoveries() {
        let m = Metrics::for_queue("jobs");
        let text = m.render_prometheus();
        assert!(text.contains("# TYPE amqp_worker_client_published_total counter"));
        assert!(text.contains("amqp_worker_client_acked_total{queue=\"jobs\"} 0"));
        assert!(
            !text.contains("amqp_worker_reconnects_total"),
            "counted once, by the client"
        );
        let mut c = MessageStats::default();
        c.published = 3;
        c.confirmed = 2;
        c.nacked = 1;
        c.delivered = 9;
        c.acked = 8;
        c.rejected = 1;
        c.recoveries = 2;
        let text = render_with(&m, &c);
        for (name, value) in [
            ("published", 3),
            ("confirmed", 2),
            ("nacked", 1),
            ("returned", 0),
            ("delivered", 9),
            ("acked", 8),
            ("rejected", 1),
            ("recoveries", 2),
        ] {
            let line = format!("amqp_worker_client_{name}_total{{queue=\"jobs\"}} {value}");
            assert!(text.contains(&line), "{line} in\n{text}");
        }
        assert_eq!(m.snapshot_with(&c).reconnects, 2);
    }

    /// The exposition with the client's counts being `client`.
    fn render_with(m: &Metrics, client: &MessageStats) -> String {
        let mut out = Exposition::new(m.queue());
        client_counters(&mut out, client);
        out.text
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
