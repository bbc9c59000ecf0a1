//! One consuming session on the worker's connection: declare the topology, open the
//! confirm-mode publisher and the consumer, move each delivery into the queue of the
//! worker's [`Pool`], and on shutdown stop gracefully. A lost connection does not end it: the
//! client recovers the connection and its channels underneath (the consumer keeps its
//! stream); only recovery giving up, or a channel the broker closed, does.

use std::future::Future;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use amqp_client::{Channel, Connection, ConsumeOptions, Consumer, QosOptions};
use amqp_client::{NackOptions, PublisherConfig};
use futures_core::Stream;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::connect::Outages;
use crate::error::WorkerError;
use crate::gate::WakeGated;
use crate::handler::Handler;
use crate::pool::{Link, Pool};
use crate::publisher::Publisher;
use crate::topology;
use crate::worker::Ctx;

/// Bound on each broker call of the graceful stop (cancel, closes).
const STOP_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Deliveries the dispatch loop moves into the pool's queue in one poll: past it, the loop
/// yields to the runners sharing its thread (the consumer's buffer holds up to the prefetch,
/// which can be thousands).
const DRAIN_MAX: usize = 256;

/// How a session ended, when it did not fail.
pub(crate) enum SessionEnd {
    /// A graceful shutdown: the worker stops.
    Shutdown,
    /// A channel the session needs was closed by the broker (the consumer cancelled because
    /// its queue was deleted, the publishing channel closed): a new session on the same
    /// connection re-declares the topology and starts over.
    Restart(String),
}

/// Runs one session on `conn`: declare, open the publisher and the consumer, hand out
/// deliveries until shutdown (then stop gracefully), a broken channel, or the connection's
/// end (recovery gave up, or an error it does not recover).
pub(crate) async fn run<H: Handler>(
    ctx: &Arc<Ctx<H>>,
    conn: &Connection,
    outages: &Outages,
    pool: &Pool,
) -> Result<SessionEnd, WorkerError> {
    let session = Session {
        ctx,
        conn,
        outages,
        broken: CancellationToken::new(),
    };
    let mut channels = session.open().await?;
    session.consuming();
    let _stop_depths = session.refresh_depths();
    let end = session.dispatch(&mut channels, pool).await?;
    session.end(channels, pool, end).await
}

/// What one session runs on, and what ends it besides its consumer.
struct Session<'a, H: Handler> {
    /// The worker.
    ctx: &'a Arc<Ctx<H>>,
    /// The worker's connection, which outlives the session.
    conn: &'a Connection,
    /// Turns a client error into the worker's (and marks the worker disconnected).
    outages: &'a Outages,
    /// Runners cancel this when the publishing channel fails: the session must restart.
    broken: CancellationToken,
}

/// The channels a session opened. Fields drop in this order, consumer first.
struct Channels {
    /// The consumer of the work queue, on `channel`.
    consumer: Consumer,
    /// The consuming channel (with the prefetch as qos).
    channel: Channel,
    /// The confirm-mode publisher (retries, parking), shared with the runners.
    publisher: Arc<Publisher>,
}

impl<H: Handler> Session<'_, H> {
    /// The error that ends the worker for a client error on this connection.
    fn fatal(&self, err: amqp_client::Error) -> WorkerError {
        self.outages
            .worker_error(self.conn.address().to_owned(), err)
    }

    /// Declares the topology, then opens the publisher and the consumer. Any failure ends the
    /// worker: with the client's recovery underneath, a failure here is not transient.
    async fn open(&self) -> Result<Channels, WorkerError> {
        self.declare_topology().await?;
        let publisher = open_publisher(self.conn).await.map_err(|e| self.fatal(e))?;
        let (channel, consumer) = self.open_consumer().await.map_err(|e| self.fatal(e))?;
        Ok(Channels {
            consumer,
            channel,
            publisher: Arc::new(publisher),
        })
    }

    /// Declares the worker's queues, exchanges and bindings on a channel of their own, closed
    /// afterwards (a refused declaration closes only that channel).
    async fn declare_topology(&self) -> Result<(), WorkerError> {
        let declare_channel = self.conn.open_channel().await.map_err(|e| self.fatal(e))?;
        topology::declare(&declare_channel, &self.ctx.config)
            .await
            .map_err(|e| match e {
                WorkerError::Client(c) => self.fatal(c),
                other => other,
            })?;
        let _ = declare_channel.close().await;
        Ok(())
    }

    /// Opens the consuming channel, sets its prefetch and starts consuming the work queue.
    async fn open_consumer(&self) -> Result<(Channel, Consumer), amqp_client::Error> {
        let config = &self.ctx.config;
        let channel = self.conn.open_channel().await?;
        channel
            .basic_qos(config.prefetch, QosOptions::default())
            .await?;
        let consumer = channel
            .basic_consume(&config.queue, ConsumeOptions::default())
            .await?;
        Ok((channel, consumer))
    }

    /// Marks the worker connected, and says so in the log.
    fn consuming(&self) {
        let config = &self.ctx.config;
        self.ctx.metrics.set_connected(true);
        tracing::info!(
            queue = %config.queue,
            concurrency = config.concurrency,
            prefetch = config.prefetch,
            "consuming"
        );
    }

    /// Starts refreshing the parking and unroutable queue gauges, for as long as the session
    /// lasts: the refresh stops when the returned guard drops.
    fn refresh_depths(&self) -> DropGuard {
        let config = &self.ctx.config;
        let depths = CancellationToken::new();
        let stop = depths.clone().drop_guard();
        tokio::spawn(crate::depth::refresh(
            self.conn.clone(),
            self.ctx.metrics.clone(),
            config.parking_queue(),
            config.queue_depth_interval,
            depths,
        ));
        stop
    }

    /// Moves each delivery into the pool's queue, until the session must end; `Err` if the
    /// connection ended.
    ///
    /// One poll takes every delivery the consumer has ready (up to [`DRAIN_MAX`]), with no
    /// `select!` and no new future per delivery (callgrind: a `select!` per delivery, with
    /// the delivery moved through its output and a `ControlFlow`, cost ~250 instructions
    /// per task). One [`interrupted`](Self::interrupted) future serves the whole session: it
    /// registers with the shutdown switch, the connection and the broken token once, and
    /// behind a [`WakeGated`] it is polled only when one of them fired (re-created per wait,
    /// it cost ~2 500 instructions per task). It is checked first on every poll.
    async fn dispatch(
        &self,
        channels: &mut Channels,
        pool: &Pool,
    ) -> Result<SessionEnd, WorkerError> {
        let mut interrupted = WakeGated::new(self.interrupted());
        // Nothing is queued from an earlier session: each takes its own back at its end.
        drop(pool.start_session(Arc::new(Link {
            publisher: channels.publisher.clone(),
            broken: self.broken.clone(),
        })));
        let consumer = &mut channels.consumer;
        std::future::poll_fn(|cx| {
            if let Poll::Ready(end) = Pin::new(&mut interrupted).poll(cx) {
                return Poll::Ready(end);
            }
            for _ in 0..DRAIN_MAX {
                match Pin::new(&mut *consumer).poll_next(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Some(Ok(delivery))) => {
                        if !pool.push(delivery) {
                            // Closed only by the graceful stop, which this loop sees first.
                            return Poll::Ready(Ok(SessionEnd::Shutdown));
                        }
                    }
                    Poll::Ready(Some(Err(e))) => {
                        if let ControlFlow::Break(end) = self.consumer_error(e) {
                            return Poll::Ready(end);
                        }
                    }
                    Poll::Ready(None) => {
                        return Poll::Ready(Ok(restart("the broker ended the consumer")));
                    }
                }
            }
            // A long burst: the runners on this thread take their share before more is read.
            cx.waker().wake_by_ref();
            Poll::Pending
        })
        .await
    }

    /// What an error from the consumer means: an unreadable delivery is parked and the
    /// session goes on; a channel error restarts the session; any other ends the worker.
    fn consumer_error(
        &self,
        err: amqp_client::Error,
    ) -> ControlFlow<Result<SessionEnd, WorkerError>> {
        match err {
            amqp_client::Error::UnreadableDelivery(unreadable) => {
                park_unreadable(self.ctx, &unreadable);
                ControlFlow::Continue(())
            }
            e if e.is_channel_error() => ControlFlow::Break(Ok(restart(e.to_string()))),
            e => ControlFlow::Break(Err(self.fatal(e))),
        }
    }

    /// Resolves when the session must end whatever it waits for, checked in this order: a
    /// shutdown, the connection's end (`Err`: recovery gave up, or an error it does not
    /// recover), a runner that found the publishing channel closed.
    async fn interrupted(&self) -> Result<SessionEnd, WorkerError> {
        tokio::select! {
            biased;
            () = self.ctx.shutdown.triggered() => Ok(SessionEnd::Shutdown),
            err = self.conn.closed() => Err(self.fatal(err)),
            () = self.broken.cancelled() => {
                Ok(SessionEnd::Restart("the publishing channel closed".to_owned()))
            }
        }
    }

    /// Ends the session as `end` says: for a restart, closes this session's channels (the
    /// connection stays), so the broker requeues what they hold unacknowledged now; for a
    /// shutdown, stops gracefully.
    async fn end(
        &self,
        channels: Channels,
        pool: &Pool,
        end: SessionEnd,
    ) -> Result<SessionEnd, WorkerError> {
        let Channels {
            consumer,
            channel,
            publisher,
        } = channels;
        match end {
            SessionEnd::Restart(_) => {
                // What no runner started is settled by the channel's close: the broker
                // requeues it.
                drop(pool.take_queued());
                drop(consumer);
                let _ = tokio::time::timeout(STOP_CALL_TIMEOUT, channel.close()).await;
                let _ = tokio::time::timeout(STOP_CALL_TIMEOUT, publisher.close()).await;
            }
            SessionEnd::Shutdown => stop(self.ctx, self.conn, consumer, &publisher, pool).await,
        }
        Ok(end)
    }
}

/// Dispatching stops: the session restarts for `reason`.
fn restart(reason: impl Into<String>) -> SessionEnd {
    SessionEnd::Restart(reason.into())
}

/// The session's confirm-mode publisher (retries, parking). It does not send again what a
/// lost connection left unconfirmed: each of its messages stands for a delivery that is not
/// acked until the publish is confirmed, and the broker requeues that delivery anyway.
async fn open_publisher(conn: &Connection) -> Result<Publisher, amqp_client::Error> {
    let config = PublisherConfig::default().with_republish_after_loss(false);
    Publisher::open_on(conn, config).await
}

/// A delivery the client could not read (over its `max_message_size`, or properties that do
/// not parse) cannot be handed to a handler, and must not come back forever: rejected without
/// requeue, the broker dead-letters it, byte for byte, into the parking queue.
fn park_unreadable<H: Handler>(ctx: &Ctx<H>, unreadable: &amqp_client::UnreadableDelivery) {
    tracing::warn!(delivery = %unreadable, "unreadable delivery: dead-lettered into the parking queue");
    ctx.metrics.unreadable();
    if unreadable.reject().is_err() {
        ctx.metrics.stale_settle();
    }
}

/// The graceful stop: close the pool and cancel the consumer, requeue what neither started,
/// wait for in-flight handlers (bounded), close.
async fn stop<H: Handler>(
    ctx: &Arc<Ctx<H>>,
    conn: &Connection,
    mut consumer: Consumer,
    publisher: &Publisher,
    pool: &Pool,
) {
    let mut handed_back = 0u32;
    for delivery in pool.close() {
        if delivery.nack(NackOptions::requeue()).is_ok() {
            handed_back += 1;
        }
    }
    let _ = tokio::time::timeout(STOP_CALL_TIMEOUT, consumer.cancel()).await;
    while let Ok(Some(Ok(delivery))) =
        tokio::time::timeout(Duration::from_secs(1), consumer.recv()).await
    {
        if delivery.nack(NackOptions::requeue()).is_ok() {
            handed_back += 1;
        }
    }
    let in_flight = ctx.metrics.snapshot().in_flight;
    tracing::info!(
        in_flight,
        handed_back,
        "consumer cancelled; waiting for in-flight tasks"
    );
    ctx.tracker.close();
    let waited = tokio::time::timeout(ctx.config.shutdown_timeout, ctx.tracker.wait()).await;
    if waited.is_err() {
        tracing::warn!(
            unfinished = ctx.tracker.len(),
            timeout = ?ctx.config.shutdown_timeout,
            "shutdown timeout: unfinished tasks stay unacknowledged and are redelivered"
        );
    }
    drop(consumer);
    let _ = tokio::time::timeout(STOP_CALL_TIMEOUT, publisher.close()).await;
    let _ = tokio::time::timeout(STOP_CALL_TIMEOUT, conn.close()).await;
    ctx.metrics.set_connected(false);
    tracing::info!("stopped");
}
