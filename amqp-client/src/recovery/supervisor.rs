//! The recovery supervisor: one task per connection with recovery on. It waits for the
//! driver to end; if the core suspended its channels (a recoverable loss), it reconnects with
//! backoff, address after address, restarts the core on the new transport, replays the
//! topology and the hooks, and lets the application's calls through again, or gives up.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use super::{RecoveryEvent, RecoveryPolicy, replay};
use crate::config::format_address;
use crate::connection::ConnectionInner;
use crate::driver;
use crate::error::Error;
use crate::proto::ConnectionState;
use crate::shared::Shared;

/// Watches the connection driven by `driver` and recovers it each time it is lost. `conn`
/// lets the hooks get a channel without keeping the connection alive.
pub(crate) async fn supervise(
    shared: Arc<Shared>,
    conn: Weak<ConnectionInner>,
    driver: JoinHandle<()>,
) {
    let Some(policy) = shared.lock().config.recovery.clone() else {
        return;
    };
    let addresses = shared.lock().config.addresses();
    let mut supervisor = Supervisor {
        addresses,
        shared,
        conn,
        policy,
        jitter: Jitter::seeded(),
        next_address: 0,
        recoveries: 0,
    };
    let mut driver = Some(driver);
    while let Some(handle) = driver.take() {
        let _ = handle.await;
        let Some(lost) = supervisor.lost() else {
            return; // closed by the application, or an error recovery does not cover
        };
        driver = supervisor.recover(lost).await;
    }
}

/// What the supervisor keeps between outages.
struct Supervisor {
    /// The connection.
    shared: Arc<Shared>,
    /// The application's connection handle, for the hooks' channel.
    conn: Weak<ConnectionInner>,
    /// When to retry and when to give up.
    policy: RecoveryPolicy,
    /// Every address to try: the first, then the fallbacks.
    addresses: Vec<(String, u16)>,
    /// Randomness for the backoff.
    jitter: Jitter,
    /// The address the last attempt used.
    next_address: usize,
    /// Recoveries so far.
    recoveries: u32,
}

impl Supervisor {
    /// After the driver ended: the error the connection was lost with, if it is being
    /// recovered.
    fn lost(&self) -> Option<Error> {
        let core = self.shared.lock();
        core.is_recovering().then(|| core.lost_error())
    }

    /// One outage: attempts until one succeeds (the new driver's handle) or recovery ends.
    async fn recover(&mut self, lost: Error) -> Option<JoinHandle<()>> {
        tracing::warn!(error = %lost, "connection lost; recovering");
        self.policy.hooks.each().for_each(|h| h.lost(&lost));
        self.shared.emit(RecoveryEvent::Lost(lost.clone()));
        let down_since = Instant::now();
        let (mut attempts, mut last_error) = (0, lost);
        loop {
            if self.policy.exhausted(attempts, down_since.elapsed()) {
                self.give_up(attempts, last_error);
                return None;
            }
            attempts += 1;
            self.shared.lock().set_attempt(attempts);
            let delay = self.policy.delay(attempts, self.jitter.next());
            if !self.sleep(delay).await {
                return None; // the application closed the connection meanwhile
            }
            let (host, port) = self.next_address();
            let address = format_address(&host, port);
            tracing::info!(attempt = attempts, %address, "reconnecting");
            match self.attempt(&host, port).await {
                Ok(handle) => {
                    self.recovered(address, attempts, down_since.elapsed());
                    return Some(handle);
                }
                Err(err) => {
                    if !self.attempt_failed(attempts, address, &err).await {
                        return None;
                    }
                    last_error = err;
                }
            }
        }
    }

    /// Each attempt tries the next address: after a node fails, its peers first.
    fn next_address(&mut self) -> (String, u16) {
        let n = self.addresses.len();
        self.next_address = (self.next_address + usize::from(n > 1)) % n.max(1);
        self.addresses
            .get(self.next_address)
            .cloned()
            .unwrap_or_default()
    }

    /// Connects, replays the topology and runs the hooks' re-declarations.
    async fn attempt(&self, host: &str, port: u16) -> Result<JoinHandle<()>, Error> {
        let handle = connect(&self.shared, host, port).await?;
        let replayed = async {
            replay::replay(&self.shared).await?;
            replay::run_hooks(&self.shared, &self.conn, &self.policy).await
        };
        match replayed.await {
            Ok(()) => Ok(handle),
            Err(err) => {
                // A half-recovered connection is dropped; the next attempt starts over.
                self.shared.lock().lose(err.clone());
                self.shared.wake_driver();
                let _ = handle.await;
                Err(err)
            }
        }
    }

    /// The connection is back: calls go through again.
    fn recovered(&mut self, address: String, attempts: u32, downtime: Duration) {
        self.recoveries += 1;
        self.shared.lock().finish_recovery(self.recoveries);
        tracing::info!(%address, attempts, ?downtime, "connection recovered");
        self.policy
            .hooks
            .each()
            .for_each(|h| h.recovered(attempts, downtime));
        self.shared.emit(RecoveryEvent::Recovered {
            address,
            attempts,
            downtime,
        });
    }

    /// An attempt failed: reported; false if recovery is over (the error is not one it
    /// retries, or the application closed the connection).
    async fn attempt_failed(&self, attempt: u32, address: String, err: &Error) -> bool {
        tracing::warn!(attempt, %address, error = %err, "recovery attempt failed");
        self.policy
            .hooks
            .each()
            .for_each(|h| h.attempt_failed(attempt, err));
        self.shared.emit(RecoveryEvent::AttemptFailed {
            attempt,
            address,
            error: err.clone(),
        });
        if self.shared.lock().is_recovering() {
            return true;
        }
        // Credentials refused, or closed by the application: not retried.
        if !matches!(err, Error::ConnectionClosedByApp) {
            self.give_up(attempt, err.clone());
        }
        false
    }

    /// Sleeps `delay`, waking early if the application closes the connection. False if it
    /// did (recovery is over).
    async fn sleep(&self, delay: Duration) -> bool {
        let mut state = self.shared.state();
        let closed =
            state.wait_for(|s| matches!(s, ConnectionState::Closed | ConnectionState::Failed(_)));
        tokio::select! {
            () = tokio::time::sleep(delay) => self.shared.lock().is_recovering(),
            _ = closed => false,
        }
    }

    /// Ends recovery: every handle fails with [`Error::RecoveryFailed`].
    fn give_up(&self, attempts: u32, last_error: Error) {
        let err = Error::RecoveryFailed {
            attempts,
            last_error: Box::new(last_error),
        };
        tracing::error!(error = %err, "connection recovery gave up");
        self.shared.lock().give_up(err.clone());
        self.policy.hooks.each().for_each(|h| h.gave_up(&err));
        self.shared.emit(RecoveryEvent::Failed(err));
    }
}

/// Connects to `host:port`, restarts the core on the new transport and waits for open-ok.
async fn connect(shared: &Arc<Shared>, host: &str, port: u16) -> Result<JoinHandle<()>, Error> {
    let config = shared.lock().config.clone();
    let deadline = tokio::time::Instant::now() + config.connection_timeout;
    let tcp = driver::connect_tcp(&config, host, port, deadline).await?;
    let opened = {
        let mut guard = shared.lock();
        if !guard.restart(host, port, std::time::Instant::now()) {
            return Err(Error::ConnectionClosedByApp);
        }
        guard.waiters().expect_open()
    };
    let handle = match driver::spawn(shared.clone(), tcp, config.tls.as_ref(), host, deadline).await
    {
        Ok(handle) => handle,
        Err(err) => {
            // No driver runs: put the core back between connections.
            shared.lock().lose(err.clone());
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
pub(super) struct Jitter(u64);

impl Jitter {
    pub(super) fn seeded() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        // Truncating to the low bits keeps the fast-changing part of the clock.
        Self((nanos as u64) | 1)
    }

    /// A number in `0..1`.
    pub(super) fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}
