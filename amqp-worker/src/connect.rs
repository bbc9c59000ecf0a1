//! The worker's broker connection: the client's own automatic recovery, configured from the
//! worker's settings, with a hook that keeps the worker's metrics and measures each outage.
//! There is no reconnect loop here: the client reconnects with backoff and jitter, re-declares
//! what the worker declared (queues, delay and parking queues, bindings, the consumer with its
//! qos), and gives up when `give_up_after` passes without a connection; the first connection
//! is retried the same way.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use amqp_client::{Connection, ConnectionConfig, Error, RecoveryHook, RecoveryPolicy};

use crate::config::WorkerConfig;
use crate::error::WorkerError;
use crate::metrics::Metrics;

/// Connects (retrying by the recovery policy) unless `shutdown` comes first (`Ok(None)`).
pub(crate) async fn connect(
    config: &WorkerConfig,
    metrics: &Arc<Metrics>,
    shutdown: &crate::Shutdown,
) -> Result<Option<(Connection, Arc<Outages>)>, WorkerError> {
    let outages = Arc::new(Outages::new(metrics.clone()));
    let cc = connection_config(config, outages.clone())?;
    let address = cc.address();
    tokio::select! {
        connected = Connection::connect_with(cc) => match connected {
            Ok(conn) => Ok(Some((conn, outages))),
            Err(err) => Err(outages.worker_error(address, err)),
        },
        () = shutdown.triggered() => Ok(None),
    }
}

/// The client configuration: the worker's URL and connection name, and recovery by the
/// worker's reconnect delays and give-up deadline (calls wait while it runs).
fn connection_config(
    config: &WorkerConfig,
    outages: Arc<Outages>,
) -> Result<ConnectionConfig, WorkerError> {
    let mut cc = ConnectionConfig::from_uri(&config.url).map_err(|e| WorkerError::Connect {
        address: amqp_client::redact_uri(&config.url),
        source: e.into(),
    })?;
    cc.connection_name = Some(
        config
            .connection_name
            .clone()
            .unwrap_or_else(|| format!("amqp-worker {} pid {}", config.queue, std::process::id())),
    );
    // One attempt never takes longer than the whole deadline, nor than 10 s.
    cc.connection_timeout = config
        .give_up_after
        .clamp(Duration::from_secs(1), Duration::from_secs(10));
    let policy = RecoveryPolicy {
        min_delay: config.reconnect_min_delay.max(Duration::from_millis(1)),
        max_delay: config.reconnect_max_delay.max(config.reconnect_min_delay),
        max_attempts: None,
        give_up_after: Some(config.give_up_after),
        wait_while_recovering: config.give_up_after,
        retry_initial_connect: true,
        ..RecoveryPolicy::default()
    };
    Ok(cc.with_recovery(policy.with_hook(OutageHook(outages))))
}

/// What the worker knows of its connection's outages: when the current one began (for the
/// give-up message), kept in the metrics' `connected` gauge (reconnects are the client's
/// recoveries, counted by the client).
#[derive(Debug)]
pub(crate) struct Outages {
    /// The worker's metrics.
    metrics: Arc<Metrics>,
    /// When the current outage (or the first connection's attempts) began.
    since: Mutex<Instant>,
}

impl Outages {
    fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            metrics,
            since: Mutex::new(Instant::now()),
        }
    }

    /// How long the connection has been down (or was, when recovery gave up).
    fn down_for(&self) -> Duration {
        self.since
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .elapsed()
    }

    /// The worker's error for a connection that ended with `err`: giving up after the
    /// deadline, or an error no reconnect can fix.
    pub(crate) fn worker_error(&self, address: String, err: Error) -> WorkerError {
        self.metrics.set_connected(false);
        match err {
            Error::RecoveryFailed { last_error, .. } => WorkerError::GaveUp {
                waited: self.down_for(),
                last_error: last_error.to_string(),
            },
            source => WorkerError::Connect { address, source },
        }
    }
}

/// The hook recovery runs: the metrics follow the connection.
struct OutageHook(Arc<Outages>);

impl RecoveryHook for OutageHook {
    fn lost(&self, error: &Error) {
        tracing::warn!(%error, "broker connection lost; the client is recovering it");
        *self.0.since.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
        self.0.metrics.set_connected(false);
    }

    fn attempt_failed(&self, attempt: u32, error: &Error) {
        tracing::warn!(attempt, %error, "no broker connection yet; retrying");
    }

    fn recovered(&self, attempts: u32, downtime: Duration) {
        tracing::info!(attempts, ?downtime, "broker connection recovered");
        self.0.metrics.set_connected(true);
    }

    fn gave_up(&self, error: &Error) {
        tracing::error!(%error, "broker connection recovery gave up");
    }
}
