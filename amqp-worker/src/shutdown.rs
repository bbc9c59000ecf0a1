//! [`Shutdown`]: asks a running worker to stop gracefully, from code or from SIGINT/SIGTERM.

use tokio_util::sync::CancellationToken;

/// A cloneable stop switch. Triggering it makes the worker cancel its consumer, hand back
/// the deliveries it had not started, let in-flight handlers finish (bounded by
/// `shutdown_timeout`), settle them, close the connection and return `Ok`.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
}

impl Shutdown {
    /// A switch not yet triggered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks for a graceful stop.
    pub fn trigger(&self) {
        self.token.cancel();
    }

    /// True once triggered.
    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Waits until triggered.
    pub async fn triggered(&self) {
        self.token.cancelled().await;
    }

    /// Triggers this switch on the first SIGINT or SIGTERM (from a task on the current
    /// runtime). Returns the name of the signal once it came.
    pub fn on_signals(&self) -> std::io::Result<tokio::task::JoinHandle<&'static str>> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut int = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        let this = self.clone();
        Ok(tokio::spawn(async move {
            let name = tokio::select! {
                _ = int.recv() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            };
            tracing::info!(signal = name, "shutting down: finishing in-flight tasks");
            this.trigger();
            name
        }))
    }
}
