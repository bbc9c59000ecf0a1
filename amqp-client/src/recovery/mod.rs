//! Automatic recovery: the policy layer that brings a lost connection back.
//!
//! Opt in with one line, [`ConnectionConfig::with_recovery`](crate::ConnectionConfig::with_recovery).
//! When the connection is lost (an IO error, a heartbeat timeout, or the broker closing it
//! with 320 CONNECTION_FORCED or 541 INTERNAL_ERROR), the client
//! 1. keeps every [`Channel`](crate::Channel) and [`Consumer`](crate::Consumer) handle
//!    alive; calls made meanwhile wait up to [`RecoveryPolicy::wait_while_recovering`] (or fail
//!    at once with [`Error::Recovering`](crate::Error::Recovering));
//! 2. fails what cannot survive: pending replies and unconfirmed publishes (never replayed:
//!    the application decides whether to publish again), and refuses acks of deliveries
//!    from the lost connection ([`Error::StaleDelivery`](crate::Error::StaleDelivery): the
//!    broker requeued them);
//! 3. reconnects with exponential backoff and jitter, trying each address in turn;
//! 4. re-declares, in order, exchanges, queues (a server-named one under its new name,
//!    announced as [`RecoveryEvent::QueueRenamed`]), exchange and queue bindings, then reopens
//!    each channel with its qos, confirm mode and consumers (same tags);
//! 5. or gives up after [`RecoveryPolicy::max_attempts`] or [`RecoveryPolicy::give_up_after`]
//!    with [`Error::RecoveryFailed`](crate::Error::RecoveryFailed) on every handle.
//!
//! Not recovered: a connection the application closed, an authentication failure, or a
//! protocol violation. The state is observable with
//! [`Connection::state`](crate::Connection::state) and
//! [`Connection::recovery_events`](crate::Connection::recovery_events), and logged with
//! `tracing`.

mod replay;
mod supervisor;

use std::time::Duration;

use crate::error::Error;

pub(crate) use supervisor::supervise;

/// How recovery retries. `Default` suits a service: 100 ms doubling to 10 s between attempts,
/// giving up after five minutes.
///
/// ```
/// use std::time::Duration;
/// use amqp_client::{ConnectionConfig, RecoveryPolicy};
/// let cfg = ConnectionConfig::from_uri("amqp://127.0.0.1:5672,127.0.0.1:5673/%2f")?
///     .with_recovery(RecoveryPolicy {
///         give_up_after: Some(Duration::from_secs(60)),
///         ..RecoveryPolicy::default()
///     });
/// assert_eq!(cfg.addresses().len(), 2);
/// # Ok::<(), amqp_client::UriError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryPolicy {
    /// Delay before the first attempt; doubles with each failed one.
    pub min_delay: Duration,
    /// Longest delay between attempts.
    pub max_delay: Duration,
    /// Give up after this many failed attempts (`None`: no limit by count).
    pub max_attempts: Option<u32>,
    /// Give up when the connection has been down this long (`None`: no limit by time).
    pub give_up_after: Option<Duration>,
    /// How long a call made during recovery waits for it to finish before failing with
    /// [`Error::Recovering`]; `Duration::ZERO` fails at once.
    pub wait_while_recovering: Duration,
}

impl Default for RecoveryPolicy {
    fn default() -> Self {
        Self {
            min_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
            max_attempts: None,
            give_up_after: Some(Duration::from_secs(300)),
            wait_while_recovering: Duration::from_secs(30),
        }
    }
}

impl RecoveryPolicy {
    /// The delay before attempt `attempt` (1-based): `min_delay * 2^(attempt-1)` capped at
    /// `max_delay`, then a random part of up to a quarter taken off (`jitter` in `0..1`),
    /// so that many clients cut off together do not reconnect in lockstep.
    pub fn delay(&self, attempt: u32, jitter: f64) -> Duration {
        let doublings = attempt.saturating_sub(1).min(31);
        let base = self
            .min_delay
            .saturating_mul(1 << doublings)
            .min(self.max_delay);
        base.mul_f64(1.0 - 0.25 * jitter.clamp(0.0, 1.0))
    }

    /// True once `attempts` failed attempts over `down_for` exhaust the policy.
    pub fn exhausted(&self, attempts: u32, down_for: Duration) -> bool {
        self.max_attempts.is_some_and(|max| attempts >= max)
            || self.give_up_after.is_some_and(|limit| down_for >= limit)
    }
}

/// Where a connection stands, as [`Connection::state`](crate::Connection::state) reports it.
#[derive(Debug, Clone)]
pub enum ConnectionState {
    /// Open, never lost.
    Connected,
    /// Lost; `attempt` reconnections tried so far (0 before the first).
    Recovering {
        /// Attempts made so far.
        attempt: u32,
    },
    /// Open again after `count` recoveries in all.
    Recovered {
        /// How many times the connection was recovered since it was opened.
        count: u32,
    },
    /// Recovery gave up, or the connection ended without recovery; every call fails with
    /// this error.
    Failed(Error),
    /// Closed by the application.
    Closed,
}

/// Something recovery did, as [`Connection::recovery_events`](crate::Connection::recovery_events)
/// broadcasts it.
#[derive(Debug, Clone)]
pub enum RecoveryEvent {
    /// The connection was lost with this error; recovery starts.
    Lost(Error),
    /// An attempt failed.
    AttemptFailed {
        /// Which attempt (1-based).
        attempt: u32,
        /// `host:port` it tried.
        address: String,
        /// Why it failed.
        error: Error,
    },
    /// A server-named queue was declared again and got a new name; bindings and consumers
    /// moved to it.
    QueueRenamed {
        /// The name before the connection was lost.
        old: String,
        /// The name now.
        new: String,
    },
    /// Part of the topology could not be re-created (e.g. a queue redeclared with other
    /// arguments elsewhere); recovery went on without it.
    TopologyFailed {
        /// What failed, e.g. `queue.declare orders`.
        what: String,
        /// The broker's answer.
        error: Error,
    },
    /// The connection is open again, topology re-created.
    Recovered {
        /// `host:port` it is now connected to.
        address: String,
        /// Attempts it took.
        attempts: u32,
        /// How long the connection was down.
        downtime: Duration,
    },
    /// Recovery gave up.
    Failed(Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_doubles_to_the_cap_and_jitter_only_shortens_it() {
        let p = RecoveryPolicy {
            min_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            ..RecoveryPolicy::default()
        };
        assert_eq!(p.delay(1, 0.0), Duration::from_millis(100));
        assert_eq!(p.delay(2, 0.0), Duration::from_millis(200));
        assert_eq!(p.delay(4, 0.0), Duration::from_millis(800));
        assert_eq!(p.delay(5, 0.0), Duration::from_secs(1));
        assert_eq!(p.delay(u32::MAX, 0.0), Duration::from_secs(1));
        assert_eq!(p.delay(1, 1.0), Duration::from_millis(75));
        assert_eq!(
            p.delay(1, 7.0),
            Duration::from_millis(75),
            "jitter is clamped"
        );
    }

    #[test]
    fn exhausted_by_count_or_by_time() {
        let p = RecoveryPolicy {
            max_attempts: Some(3),
            give_up_after: Some(Duration::from_secs(10)),
            ..RecoveryPolicy::default()
        };
        assert!(!p.exhausted(2, Duration::from_secs(9)));
        assert!(p.exhausted(3, Duration::ZERO));
        assert!(p.exhausted(0, Duration::from_secs(10)));
        let forever = RecoveryPolicy {
            max_attempts: None,
            give_up_after: None,
            ..RecoveryPolicy::default()
        };
        assert!(!forever.exhausted(u32::MAX, Duration::MAX));
    }
}
