//! The recovery supervisor: one task per connection with recovery on. It waits for the
//! driver to end; if the core suspended its channels (a recoverable loss), it reconnects with
//! backoff, address after address, restarts the core on the new transport, replays the
//! topology, and lets the application's calls through again, or gives up.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::{RecoveryEvent, RecoveryPolicy, replay};
use crate::config::format_address;
use crate::driver;
use crate::error::Error;
use crate::shared::Shared;

/// Watches the connection driven by `driver` and recovers it each time it is lost.
pub(crate) async fn supervise(shared: Arc<Shared>, driver: JoinHandle<()>) {
    let mut driver = Some(driver);
    let (policy, addresses) = {
        let core = shared.lock();
        match core.config.recovery.clone() {
            Some(policy) => (policy, core.config.addresses()),
            None => return,
        }
    };
    let mut jitter = Jitter::seeded();
    let mut next_address = 0;
    let mut recoveries = 0;
    loop {
        if let Some(handle) = driver.take() {
            let _ = handle.await;
        }
        let lost = {
            let core = shared.lock();
            if !core.is_recovering() {
                return; // closed by the application, or an error recovery does not cover
            }
            core.lost_error()
        };
        tracing::warn!(error = %lost, "connection lost; recovering");
        shared.emit(RecoveryEvent::Lost(lost.clone()));
        let down_since = Instant::now();
        let mut round = Round {
            shared: &shared,
            policy: &policy,
            attempts: 0,
            last_error: lost,
        };
        loop {
            if round.policy.exhausted(round.attempts, down_since.elapsed()) {
                return round.give_up();
            }
            round.attempts += 1;
            shared.lock().set_attempt(round.attempts);
            let delay = policy.delay(round.attempts, jitter.next());
            if !round.sleep(delay).await {
                return; // the application closed the connection meanwhile
            }
            // Each attempt tries the next address: after a node fails, its peers first.
            next_address = (next_address + usize::from(addresses.len() > 1)) % addresses.len();
            let (host, port) = &addresses[next_address];
            let address = format_address(host, *port);
            tracing::info!(attempt = round.attempts, %address, "reconnecting");
            let result = match connect(&shared, host, *port).await {
                Ok(handle) => {
                    driver = Some(handle);
                    replay::replay(&shared).await
                }
                Err(err) => Err(err),
            };
            match result {
                Ok(()) => {
                    recoveries += 1;
                    shared.lock().finish_recovery(recoveries);
                    let downtime = down_since.elapsed();
                    tracing::info!(%address, attempts = round.attempts, ?downtime, "connection recovered");
                    shared.emit(RecoveryEvent::Recovered {
                        address,
                        attempts: round.attempts,
                        downtime,
                    });
                    break;
                }
                Err(err) => {
                    tracing::warn!(attempt = round.attempts, %address, error = %err, "recovery attempt failed");
                    // A half-recovered connection is dropped; the next attempt starts over.
                    shared.lock().fail(err.clone());
                    shared.wake_driver();
                    if let Some(handle) = driver.take() {
                        let _ = handle.await;
                    }
                    shared.emit(RecoveryEvent::AttemptFailed {
                        attempt: round.attempts,
                        address,
                        error: err.clone(),
                    });
                    round.last_error = err.clone();
                    if !shared.lock().is_recovering() {
                        // Credentials refused, or closed by the application: not retried.
                        if !matches!(err, Error::ConnectionClosedByApp) {
                            round.give_up();
                        }
                        return;
                    }
                }
            }
        }
    }
}

/// One recovery, from the loss to success or giving up.
struct Round<'a> {
    /// The connection.
    shared: &'a Arc<Shared>,
    /// When to give up.
    policy: &'a RecoveryPolicy,
    /// Attempts made so far.
    attempts: u32,
    /// What the last attempt (or the loss) failed with.
    last_error: Error,
}

impl Round<'_> {
    /// Sleeps `delay`, waking early if the application closes the connection. False if it
    /// did (recovery is over).
    async fn sleep(&self, delay: Duration) -> bool {
        let until = tokio::time::Instant::now() + delay;
        loop {
            let notified = self.shared.publish_gate.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if !self.shared.lock().is_recovering() {
                return false;
            }
            tokio::select! {
                () = tokio::time::sleep_until(until) => return true,
                () = notified => {}
            }
        }
    }

    /// Ends recovery: every handle fails with [`Error::RecoveryFailed`].
    fn give_up(&self) {
        let err = Error::RecoveryFailed {
            attempts: self.attempts,
            last_error: Box::new(self.last_error.clone()),
        };
        tracing::error!(error = %err, "connection recovery gave up");
        self.shared.lock().give_up(err.clone());
        self.shared.emit(RecoveryEvent::Failed(err));
    }
}

/// Connects to `host:port`, restarts the core on the new transport and waits for open-ok.
async fn connect(shared: &Arc<Shared>, host: &str, port: u16) -> Result<JoinHandle<()>, Error> {
    let config = shared.lock().config.clone();
    let deadline = tokio::time::Instant::now() + config.connection_timeout;
    let tcp = driver::connect_tcp(&config, host, port, deadline).await?;
    let (opened_tx, opened) = oneshot::channel();
    if !shared
        .lock()
        .restart(host, port, std::time::Instant::now(), opened_tx)
    {
        return Err(Error::ConnectionClosedByApp);
    }
    let handle = match driver::spawn(shared.clone(), tcp, config.tls.as_ref(), host, deadline).await
    {
        Ok(handle) => handle,
        Err(err) => {
            // No driver runs: put the core back between connections.
            shared.lock().fail(err.clone());
            return Err(err);
        }
    };
    // The core's own handshake deadline bounds this wait.
    match opened.await {
        Ok(Ok(())) => Ok(handle),
        Ok(Err(err)) => Err(err),
        Err(_) => Err(Error::ConnectionLost),
    }
}

/// A small xorshift generator for backoff jitter (no dependency; not for secrets).
struct Jitter(u64);

impl Jitter {
    fn seeded() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        // Truncating to the low bits keeps the fast-changing part of the clock.
        Self((nanos as u64) | 1)
    }

    /// A number in `0..1`.
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}
