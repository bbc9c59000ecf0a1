//! [`Worker`]: consumes the work queue and runs a [`Handler`] per task, with the reliability
//! rules of the crate docs.

use std::sync::Arc;

use tokio_util::task::TaskTracker;

use crate::config::{ConfigError, WorkerConfig};
use crate::connect;
use crate::error::WorkerError;
use crate::handler::Handler;
use crate::metrics::Metrics;
use crate::pool::Pool;
use crate::session::{self, SessionEnd};
use crate::shutdown::Shutdown;

/// What every part of a running worker shares.
pub(crate) struct Ctx<H> {
    pub(crate) config: WorkerConfig,
    pub(crate) handler: Arc<H>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) shutdown: Shutdown,
    /// Every task runner, across sessions: shutdown waits for them.
    pub(crate) tracker: TaskTracker,
    /// `<queue>.retry.`, for reading `x-death`.
    pub(crate) delay_prefix: String,
}

/// A task worker. Build it with [`Worker::new`], keep its [`metrics`](Self::metrics) and
/// [`shutdown`](Self::shutdown) handles, then [`run`](Self::run) it.
///
/// `run` connects, declares the topology and consumes. A lost connection is the client's to
/// recover (backoff and jitter, the topology and the consumer re-declared), until
/// `give_up_after` passes without one; the first connection is retried the same way. It
/// returns `Ok` after a graceful shutdown.
///
/// ```no_run
/// use amqp_worker::{HandlerError, Worker, WorkerConfig, handler_fn};
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let mut config = WorkerConfig::new("thumbnails");
/// config.concurrency = 4;
/// let worker = Worker::new(
///     config,
///     handler_fn(|task| async move {
///         if task.body.is_empty() {
///             return Err(HandlerError::new("empty task")); // retried, then parked
///         }
///         Ok(()) // acked
///     }),
/// )?;
/// let metrics = worker.metrics();
/// let shutdown = worker.shutdown();
/// let running = tokio::spawn(worker.run());
/// // ... until it is time to stop:
/// shutdown.trigger();
/// running.await??;
/// println!("{} tasks done", metrics.snapshot().succeeded);
/// # Ok(()) }
/// ```
pub struct Worker<H> {
    ctx: Ctx<H>,
}

impl<H: Handler> Worker<H> {
    /// A worker for `config` running `handler`; fails if the configuration is invalid.
    pub fn new(config: WorkerConfig, handler: H) -> Result<Self, ConfigError> {
        config.validate()?;
        let metrics = Arc::new(Metrics::for_queue(&config.queue));
        Ok(Self {
            ctx: Ctx {
                delay_prefix: config.delay_queue_prefix(),
                config,
                handler: Arc::new(handler),
                metrics,
                shutdown: Shutdown::new(),
                tracker: TaskTracker::new(),
            },
        })
    }

    /// Uses `shutdown` as the stop switch (e.g. one shared by several workers).
    pub fn with_shutdown(mut self, shutdown: Shutdown) -> Self {
        self.ctx.shutdown = shutdown;
        self
    }

    /// Reports into `metrics` (e.g. shared with an HTTP endpoint created earlier).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        metrics.bind_queue(&self.ctx.config.queue);
        self.ctx.metrics = metrics;
        self
    }

    /// The worker's counters.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.ctx.metrics.clone()
    }

    /// The worker's stop switch.
    pub fn shutdown(&self) -> Shutdown {
        self.ctx.shutdown.clone()
    }

    /// The configuration.
    pub fn config(&self) -> &WorkerConfig {
        &self.ctx.config
    }

    /// Runs until a graceful shutdown (`Ok`) or an error no reconnect can fix.
    pub async fn run(self) -> Result<(), WorkerError> {
        let ctx = Arc::new(self.ctx);
        let connected = connect::connect(&ctx.config, &ctx.metrics, &ctx.shutdown).await?;
        let Some((conn, outages)) = connected else {
            return Ok(()); // shut down before the first connection
        };
        ctx.metrics.bind_client(conn.stats_handle());
        // The runners, across sessions: `concurrency` bounds them all.
        let pool = Pool::start(&ctx);
        let ended = loop {
            match session::run(&ctx, &conn, &outages, &pool).await {
                Ok(SessionEnd::Shutdown) => break Ok(()),
                Ok(SessionEnd::Restart(reason)) => {
                    tracing::warn!(%reason, "restarting the session on the same connection");
                    ctx.metrics.set_connected(false);
                    tokio::select! {
                        () = tokio::time::sleep(ctx.config.reconnect_min_delay) => {}
                        () = ctx.shutdown.triggered() => break Ok(()),
                    }
                }
                Err(err) => break Err(err),
            }
        };
        ctx.metrics.set_connected(false);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), conn.close()).await;
        // The connection's last counts, read while it is still there.
        ctx.metrics.client_stats();
        ended
    }
}
