//! One session on one connection: declare the topology, open the confirm-mode publisher and
//! the consumer, hand each delivery to a runner once a concurrency permit is free, and on
//! shutdown stop gracefully.

use std::sync::Arc;
use std::time::Duration;

use amqp_client::amqp_codec::FieldTable;
use amqp_client::{Connection, ConsumeOptions, Consumer, QosOptions};
use tokio_util::sync::CancellationToken;

use crate::error::WorkerError;
use crate::handler::Handler;
use crate::publisher::Publisher;
use crate::session::SessionError;
use crate::settle;
use crate::topology;
use crate::worker::Ctx;

/// Bound on each broker call of the graceful stop (cancel, closes).
const STOP_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs one session. `consumed` is set once the consumer is running (the session counts as
/// established). Returns `Ok` after a graceful shutdown.
pub(crate) async fn session<H: Handler>(
    ctx: &Arc<Ctx<H>>,
    conn: Connection,
    is_reconnect: bool,
    consumed: &mut bool,
) -> Result<(), SessionError> {
    let config = &ctx.config;
    let declare_channel = conn.open_channel().await?;
    topology::declare(&declare_channel, config)
        .await
        .map_err(|e| match e {
            WorkerError::Client(c) => SessionError::from(c),
            other => SessionError::Fatal(other),
        })?;
    let _ = declare_channel.close().await;
    let publisher = Arc::new(
        Publisher::open(&conn)
            .await
            .map_err(|e| SessionError::Lost(e.to_string()))?,
    );
    let channel = conn.open_channel().await?;
    channel
        .basic_qos(config.prefetch, QosOptions::default())
        .await?;
    let mut consumer = channel
        .basic_consume(
            &config.queue,
            ConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    *consumed = true;
    ctx.metrics.set_connected(true);
    if is_reconnect {
        ctx.metrics.reconnected();
    }
    tracing::info!(
        queue = %config.queue,
        concurrency = config.concurrency,
        prefetch = config.prefetch,
        reconnect = is_reconnect,
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
    let lost = loop {
        let permit = tokio::select! {
            biased;
            () = ctx.shutdown.triggered() => break None,
            err = conn.closed() => break Some(err.to_string()),
            () = broken.cancelled() => break Some("the publishing channel closed".to_owned()),
            p = ctx.permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break Some("the worker's semaphore closed".to_owned()),
            },
        };
        let delivery = tokio::select! {
            biased;
            () = ctx.shutdown.triggered() => break None,
            err = conn.closed() => break Some(err.to_string()),
            () = broken.cancelled() => break Some("the publishing channel closed".to_owned()),
            next = consumer.recv() => match next {
                Some(Ok(d)) => d,
                Some(Err(amqp_client::Error::UnreadableDelivery(unreadable))) => {
                    park_unreadable(ctx, &unreadable);
                    continue;
                }
                Some(Err(e)) => break Some(e.to_string()),
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
    if let Some(error) = lost {
        // Close what may still be open (a channel failure leaves the connection up), so the
        // broker requeues this session's unacknowledged deliveries now.
        drop(consumer);
        let _ = tokio::time::timeout(STOP_CALL_TIMEOUT, conn.close()).await;
        return Err(SessionError::Lost(error));
    }
    stop(ctx, conn, consumer, &publisher).await;
    Ok(())
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
    conn: Connection,
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
