//! [`Metrics`]: lock-free counters, gauges and a handler-duration histogram, rendered in the
//! Prometheus text format by [`Metrics::render_prometheus`].

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the handler-duration histogram buckets.
pub const DURATION_BUCKETS: [f64; 13] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// The worker's counters. Shared (`Arc`) between the worker, the HTTP endpoint and the
/// application.
#[derive(Debug, Default)]
pub struct Metrics {
    consumed: AtomicU64,
    succeeded: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
    dead_lettered: AtomicU64,
    in_flight: AtomicI64,
    reconnects: AtomicU64,
    stale_settles: AtomicU64,
    connected: AtomicBool,
    buckets: [AtomicU64; DURATION_BUCKETS.len()],
    duration_count: AtomicU64,
    duration_sum_micros: AtomicU64,
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
    /// Failed tasks parked after their last attempt (confirmed).
    pub dead_lettered: u64,
    /// Handlers running now.
    pub in_flight: i64,
    /// Connections re-established after a loss.
    pub reconnects: u64,
    /// Settlements refused because the delivery's channel was gone (the broker redelivers).
    pub stale_settles: u64,
    /// True while the worker has a consuming connection.
    pub connected: bool,
}

impl Metrics {
    /// Fresh counters.
    pub fn new() -> Self {
        Self::default()
    }

    /// The counters now.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        MetricsSnapshot {
            consumed: r(&self.consumed),
            succeeded: r(&self.succeeded),
            failed: r(&self.failed),
            retried: r(&self.retried),
            dead_lettered: r(&self.dead_lettered),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            reconnects: r(&self.reconnects),
            stale_settles: r(&self.stale_settles),
            connected: self.connected.load(Ordering::Relaxed),
        }
    }

    /// True while connected and consuming.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    pub(crate) fn set_connected(&self, up: bool) {
        self.connected.store(up, Ordering::Relaxed);
    }

    pub(crate) fn started(&self) {
        self.consumed.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn finished(&self, ok: bool, took: Duration) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        let counter = if ok { &self.succeeded } else { &self.failed };
        counter.fetch_add(1, Ordering::Relaxed);
        let secs = took.as_secs_f64();
        for (bound, bucket) in DURATION_BUCKETS.iter().zip(&self.buckets) {
            if secs <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.duration_count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.duration_sum_micros
            .fetch_add(micros, Ordering::Relaxed);
    }

    pub(crate) fn retried(&self) {
        self.retried.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn dead_lettered(&self) {
        self.dead_lettered.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn reconnected(&self) {
        self.reconnects.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn stale_settle(&self) {
        self.stale_settles.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition of every metric (`amqp_worker_` prefix).
    pub fn render_prometheus(&self) -> String {
        let s = self.snapshot();
        let mut out = String::with_capacity(2048);
        let counters = [
            ("consumed", "Deliveries handed to a handler.", s.consumed),
            ("succeeded", "Handler runs that succeeded.", s.succeeded),
            (
                "failed",
                "Handler runs that failed (error, panic or timeout).",
                s.failed,
            ),
            ("retried", "Failed tasks sent to a delay queue.", s.retried),
            (
                "dead_lettered",
                "Tasks parked after their last attempt.",
                s.dead_lettered,
            ),
            (
                "reconnects",
                "Broker connections re-established.",
                s.reconnects,
            ),
            (
                "stale_settles",
                "Settlements refused on a closed channel.",
                s.stale_settles,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(out, "# HELP amqp_worker_{name}_total {help}");
            let _ = writeln!(out, "# TYPE amqp_worker_{name}_total counter");
            let _ = writeln!(out, "amqp_worker_{name}_total {value}");
        }
        let _ = writeln!(out, "# HELP amqp_worker_in_flight Handlers running now.");
        let _ = writeln!(out, "# TYPE amqp_worker_in_flight gauge");
        let _ = writeln!(out, "amqp_worker_in_flight {}", s.in_flight);
        let _ = writeln!(
            out,
            "# HELP amqp_worker_connected 1 while connected to the broker."
        );
        let _ = writeln!(out, "# TYPE amqp_worker_connected gauge");
        let _ = writeln!(out, "amqp_worker_connected {}", u8::from(s.connected));
        let name = "amqp_worker_handler_duration_seconds";
        let _ = writeln!(out, "# HELP {name} Handler run time.");
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (bound, bucket) in DURATION_BUCKETS.iter().zip(&self.buckets) {
            let n = bucket.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {n}");
        }
        let count = self.duration_count.load(Ordering::Relaxed);
        let sum = self.duration_sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {count}");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative() {
        let m = Metrics::new();
        m.started();
        m.finished(true, Duration::from_millis(30));
        m.started();
        m.finished(false, Duration::from_secs(3));
        let text = m.render_prometheus();
        assert!(text.contains("amqp_worker_handler_duration_seconds_bucket{le=\"0.05\"} 1"));
        assert!(text.contains("amqp_worker_handler_duration_seconds_bucket{le=\"5\"} 2"));
        assert!(text.contains("amqp_worker_handler_duration_seconds_count 2"));
        assert!(text.contains("amqp_worker_failed_total 1"));
        assert_eq!(m.snapshot().in_flight, 0);
    }
}
