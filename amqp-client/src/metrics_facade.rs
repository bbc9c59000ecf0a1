//! The connection's message counts through the [`metrics`] facade (feature `metrics`): the same
//! counts as [`Connection::message_stats`](crate::Connection::message_stats), reported as
//! counters to whatever recorder the application installed (a Prometheus exporter, StatsD, ...).
//!
//! Nothing is counted twice and nothing is added to the path of a message: the core keeps its
//! plain counts as it always does, and a small task reads them once a [`REPORT_EVERY`] (under
//! the lock, as `message_stats` does) and hands the growth since its last report to the facade.
//! The driver reports once more when the connection ends, so a closed connection's counters are
//! complete. Counters are looked up by name at each report (a handful per second), so a recorder
//! installed after the connection was made still gets them.
//!
//! | counter | what |
//! |---|---|
//! | `amqp_client_published_total` | [`MessageStats::published`] |
//! | `amqp_client_confirmed_total` | [`MessageStats::confirmed`] |
//! | `amqp_client_nacked_total` | [`MessageStats::nacked`] |
//! | `amqp_client_returned_total` | [`MessageStats::returned`] |
//! | `amqp_client_delivered_total` | [`MessageStats::delivered`] |
//! | `amqp_client_acked_total` | [`MessageStats::acked`] |
//! | `amqp_client_rejected_total` | [`MessageStats::rejected`] |
//! | `amqp_client_recoveries_total` | [`MessageStats::recoveries`] |
//!
//! Each carries the label `connection` with the connection's name
//! ([`ConnectionConfig::connection_name`](crate::ConnectionConfig)) when it has one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::shared::Shared;
use crate::stats::MessageStats;

/// How often the counts are reported while the connection lives.
pub(crate) const REPORT_EVERY: Duration = Duration::from_secs(1);

/// The counters' names, with what each counts (for `describe_counter!`).
const COUNTERS: [(&str, &str); 8] = [
    ("amqp_client_published_total", "messages published"),
    ("amqp_client_confirmed_total", "publishes the broker acked"),
    ("amqp_client_nacked_total", "publishes the broker nacked"),
    (
        "amqp_client_returned_total",
        "mandatory publishes returned unroutable",
    ),
    (
        "amqp_client_delivered_total",
        "messages delivered to the application",
    ),
    ("amqp_client_acked_total", "acks the application sent"),
    (
        "amqp_client_rejected_total",
        "nacks and rejects the application sent",
    ),
    (
        "amqp_client_recoveries_total",
        "automatic recoveries of the connection",
    ),
];

/// One connection's reporting state, kept in `Shared` (so it outlives each transport).
#[derive(Debug)]
pub(crate) struct Reporter {
    /// The `connection` label's value: the connection's name, if it has one.
    label: Option<String>,
    /// The counts reported so far: each report sends the growth since (under a lock, so the
    /// periodic task and the driver's last report never send the same growth twice).
    reported: Mutex<MessageStats>,
    /// True once the periodic task was started: once per connection, not per transport.
    started: AtomicBool,
}

impl Reporter {
    /// A reporter for a connection named `name` (if any); nothing reported yet.
    pub(crate) fn new(name: Option<&str>) -> Self {
        Self {
            label: name.map(str::to_owned),
            reported: Mutex::new(MessageStats::default()),
            started: AtomicBool::new(false),
        }
    }

    /// Starts the periodic report for `shared`'s connection, unless it runs already. It ends
    /// with the connection (its last report is the driver's, see [`report`](Self::report)).
    pub(crate) fn start(shared: &Arc<Shared>) {
        if shared.metrics.started.swap(true, Ordering::Relaxed) {
            return;
        }
        for (name, what) in COUNTERS {
            metrics::describe_counter!(name, metrics::Unit::Count, what);
        }
        let weak = Arc::downgrade(shared);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(REPORT_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The first tick is immediate: nothing to report yet.
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(shared) = weak.upgrade() else { break };
                let over = shared.report_metrics();
                if over {
                    break;
                }
            }
        });
    }

    /// Reports the growth of `now` over what was reported so far.
    pub(crate) fn report(&self, now: MessageStats) {
        let delta = {
            let mut reported = self.reported.lock().unwrap_or_else(PoisonError::into_inner);
            let delta = now.since(&reported);
            *reported = now;
            delta
        };
        let counts = [
            delta.published,
            delta.confirmed,
            delta.nacked,
            delta.returned,
            delta.delivered,
            delta.acked,
            delta.rejected,
            delta.recoveries,
        ];
        for ((name, _), n) in COUNTERS.into_iter().zip(counts) {
            if n == 0 {
                continue;
            }
            match &self.label {
                Some(label) => metrics::counter!(name, "connection" => label.clone()).increment(n),
                None => metrics::counter!(name).increment(n),
            }
        }
    }
}
