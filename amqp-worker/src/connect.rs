//! The outer session loop: connect, declare, consume; when the connection is lost, reconnect
//! with exponential backoff and jitter until `give_up_after` passes without a working
//! connection, then fail (so a supervisor such as systemd restarts the process).
//!
//! Deliveries of a lost connection are requeued by the broker and come again on the next
//! session. Handlers still running for them finish, but their ack is refused by the client
//! ([`amqp_client::Error::StaleDelivery`]) because the channel they came on is gone: the task
//! ran twice. That is the at-least-once contract; use the message id to make handlers
//! idempotent.

use std::sync::Arc;
use std::time::{Duration, Instant};

use amqp_client::{Connection, ConnectionConfig, RecoveryPolicy};

use crate::consume;
use crate::error::WorkerError;
use crate::handler::Handler;
use crate::worker::Ctx;

/// How one session ended, when it was not a graceful shutdown.
pub(crate) enum SessionError {
    /// Nothing a reconnect can fix.
    Fatal(WorkerError),
    /// The connection (or a channel the session needs) is gone; reconnect.
    Lost(String),
}

impl From<amqp_client::Error> for SessionError {
    fn from(err: amqp_client::Error) -> Self {
        Self::Lost(err.to_string())
    }
}

/// Exponential backoff with jitter between reconnections: the client's own schedule
/// ([`RecoveryPolicy::delay`]), counted from the start of each outage.
#[derive(Debug)]
pub(crate) struct Backoff {
    /// Delays (`min_delay`, `max_delay`); the other fields are unused here.
    policy: RecoveryPolicy,
    /// Attempts in the current outage.
    attempt: u32,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        let policy = RecoveryPolicy {
            min_delay: min.max(Duration::from_millis(1)),
            max_delay: max.max(min),
            ..RecoveryPolicy::default()
        };
        Self { policy, attempt: 0 }
    }

    /// The next delay, doubling up to the maximum, with up to a quarter taken off at random.
    pub(crate) fn next_delay(&mut self) -> Duration {
        self.attempt = self.attempt.saturating_add(1);
        self.policy.delay(self.attempt, fastrand::f64())
    }

    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// Runs sessions until shutdown or a fatal error.
pub(crate) async fn run<H: Handler>(ctx: Arc<Ctx<H>>) -> Result<(), WorkerError> {
    let config = &ctx.config;
    let base = ConnectionConfig::from_uri(&config.url).map_err(|e| WorkerError::Connect {
        address: amqp_client::redact_uri(&config.url),
        source: e.into(),
    })?;
    let name = config
        .connection_name
        .clone()
        .unwrap_or_else(|| format!("amqp-worker {} pid {}", config.queue, std::process::id()));
    let mut backoff = Backoff::new(config.reconnect_min_delay, config.reconnect_max_delay);
    // When the current outage began; None while a session is consuming.
    let mut outage: Option<Instant> = None;
    let mut sessions = 0u64;
    loop {
        if ctx.shutdown.is_triggered() {
            return Ok(());
        }
        let since = *outage.get_or_insert_with(Instant::now);
        let remaining = config.give_up_after.saturating_sub(since.elapsed());
        let mut cc = base.clone();
        cc.connection_name = Some(name.clone());
        // This loop is the recovery: it re-declares, restarts the consumer and counts the
        // outage against the give-up deadline. The client's own transparent recovery stays off
        // so that a lost connection reaches it.
        cc.recovery = None;
        cc.connection_timeout = remaining.clamp(Duration::from_secs(1), Duration::from_secs(10));
        let address = cc.address();
        let connected = tokio::select! {
            r = Connection::connect_with(cc) => r,
            () = ctx.shutdown.triggered() => return Ok(()),
        };
        let error = match connected {
            // One classification, the client's: what a new connection may cure is retried.
            Err(e) if e.is_recoverable() => e.to_string(),
            Err(source) => return Err(WorkerError::Connect { address, source }),
            Ok(conn) => {
                let mut consumed = false;
                match consume::session(&ctx, conn, sessions > 0, &mut consumed).await {
                    Ok(()) => return Ok(()),
                    Err(SessionError::Fatal(e)) => return Err(e),
                    Err(SessionError::Lost(e)) => {
                        if consumed {
                            sessions += 1;
                            outage = Some(Instant::now());
                            backoff.reset();
                        }
                        e
                    }
                }
            }
        };
        ctx.metrics.set_connected(false);
        let since = outage.unwrap_or_else(Instant::now);
        let waited = since.elapsed();
        if waited >= config.give_up_after {
            return Err(WorkerError::GaveUp {
                waited,
                last_error: error,
            });
        }
        let delay = backoff.next_delay().min(config.give_up_after - waited);
        tracing::warn!(error = %error, retry_in = ?delay, "no broker connection; retrying");
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = ctx.shutdown.triggered() => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(800));
        let steps = [100u64, 200, 400, 800, 800];
        for step in steps {
            let d = b.next_delay().as_millis() as u64;
            assert!(d >= step * 3 / 4 && d <= step, "{d} for step {step}");
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
