//! One consuming session on the worker's connection: declare the topology, open the
//! confirm-mode publisher and the consumer, hand each delivery to a runner once a concurrency
//! permit is free, and on shutdown stop gracefully. A lost connection does not end it: the
//! client recovers the connection and its channels underneath (the consumer keeps its
//! stream); only recovery giving up, or a channel the broker closed, does.

use std::sync::Arc;
use std::time::Duration;

use amqp_client::amqp_codec::FieldTable;
use amqp_client::{Connection, ConsumeOptions, Consumer, QosOptions};
use tokio_util::sync::CancellationToken;

use crate::connect::Outages;
use crate::error::WorkerError;
use crate::handler::Handler;
use crate::publisher::Publisher;
use crate::settle;
use crate::topology;
use crate::worker::Ctx;

/// Bound on each broker call of the graceful stop (cancel, closes).
const STOP_CALL_TIMEOUT: Duration = Duration::from_secs(5);

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
) -> Result<SessionEnd, WorkerError> {
    let config = &ctx.config;
    let fatal = |err: amqp_client::Error| outages.worker_error(conn.address().to_owned(), err);
    let declare_channel = conn.open_channel().await.map_err(fatal)?;
    topology::declare(&declare_channel, config)
        .await
        .map_err(|e| match e {
            WorkerError::Client(c) => fatal(c),
            other => other,
        })?;
    let _ = declare_channel.close().await;
    let publisher = Arc::new(open_publisher(conn).await.map_err(fatal)?);
    let channel = conn.open_channel().await.map_err(fatal)?;
    channel
        .basic_qos(config.prefetch, QosOptions::default())
        .await
        .map_err(fatal)?;
    let mut consumer = channel
        .basic_consume(
            &config.queue,
            ConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(fatal)?;
    ctx.metrics.set_connected(true);
    tracing::info!(
        queue = %config.queue,
        concurrency = config.concurrency,
        prefetch = config.prefetch,
        "consuming"
    );
    // The parking and unroutable queue gauges, for as long as this session lasts.
    let depths = CancellationToken::new();
    let _stop_depths = depths.clone().drop_guard();
    tokio::spawn(crate::depth::refresh(
        conn.clone(),
        ctx.metrics.clone(),
        config.parking_queue(),
        config.queue_depth_interval,
        depths,
    ));
    // Runners cancel this when the publishing channel fails: the session must restart.
    let broken = CancellationToken::new();
    let restart = loop {
        let permit = tokio::select! {
            biased;
            () = ctx.shutdown.triggered() => break None,
            err = conn.closed() => return Err(fatal(err)),
            () = broken.cancelled() => break Some("the publishing channel closed".to_owned()),
            p = ctx.permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break Some("the worker's semaphore closed".to_owned()),
            },
        };
        let delivery = tokio::select! {
            biased;
            () = ctx.shutdown.triggered() => break None,
            err = conn.closed() => return Err(fatal(err)),
            () = broken.cancelled() => break Some("the publishing channel closed".to_owned()),
            next = consumer.recv() => match next {
                Some(Ok(d)) => d,
                Some(Err(amqp_client::Error::UnreadableDelivery(unreadable))) => {
                    park_unreadable(ctx, &unreadable);
                    continue;
                }
                Some(Err(e)) if e.is_channel_error() => break Some(e.to_string()),
                Some(Err(e)) => return Err(fatal(e)),
                None => break Some("the broker ended the consumer".to_owned()),
            },
        };
        ctx.tracker.spawn(settle::process(
            ctx.clone(),
            delivery,
            publisher.clone(),
            broken.clone(),
            permit,
        ));
    };
    match restart {
        Some(reason) => {
            // Close this session's channels (the connection stays), so the broker requeues
            // what they hold unacknowledged now.
            drop(consumer);
            let _ = tokio::time::timeout(STOP_CALL_TIMEOUT, channel.close()).await;
            let _ = tokio::time::timeout(STOP_CALL_TIMEOUT, publisher.close()).await;
            Ok(SessionEnd::Restart(reason))
        }
        None => {
            stop(ctx, conn, consumer, &publisher).await;
            Ok(SessionEnd::Shutdown)
        }
    }
}

/// The session's confirm-mode publisher (retries, parking).
async fn open_publisher(conn: &Connection) -> Result<Publisher, amqp_client::Error> {
    let channel = conn.open_channel().await?;
    channel.confirm_select().await?;
    Ok(Publisher::from_channel(conn, channel))
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

/// The graceful stop: cancel the consumer, requeue what it buffered, wait for in-flight
/// handlers (bounded), close.
async fn stop<H: Handler>(
    ctx: &Arc<Ctx<H>>,
    conn: &Connection,
    mut consumer: Consumer,
    publisher: &Publisher,
) {
    let _ = tokio::time::timeout(STOP_CALL_TIMEOUT, consumer.cancel()).await;
    let mut handed_back = 0u32;
    while let Ok(Some(Ok(delivery))) =
        tokio::time::timeout(Duration::from_secs(1), consumer.recv()).await
    {
        if delivery.nack(true).is_ok() {
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
