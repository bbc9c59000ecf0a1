//! One delivery, start to finish: run the handler (a panic is caught: a failed attempt, not
//! a dead worker) under the handler timeout, then settle: ack on success; on failure publish
//! the retry or parked copy, wait for its confirm, and only then ack.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::Poll;

use amqp_client::Delivery;
use amqp_client::NackOptions;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::format_duration;
use crate::handler::{DeadLetter, Handler, ParkReason, Task};
use crate::publisher::{PublishError, Publisher};
use crate::retry::{self, Decision, FailureRecord};
use crate::worker::Ctx;

/// Processes one delivery, in a runner of the [`Pool`](crate::pool::Pool): the runner takes
/// no other until this one is settled.
pub(crate) async fn process<H: Handler>(
    ctx: &Arc<Ctx<H>>,
    mut delivery: Delivery,
    publisher: &Publisher,
    broken: &CancellationToken,
) {
    let headers = delivery.properties.headers();
    let (attempt, disagreed) = retry::attempt_of(headers.as_ref(), &ctx.delay_prefix);
    // Moved, not cloned: what settles the delivery (its tag and channel) stays behind.
    // (callgrind: copying the exchange and routing key into `String`s cost ~260
    // instructions and an allocation per task.)
    let task = Task {
        body: std::mem::take(&mut delivery.body),
        properties: std::mem::take(&mut delivery.properties),
        exchange: std::mem::take(&mut delivery.exchange),
        routing_key: std::mem::take(&mut delivery.routing_key),
        attempt,
        redelivered: delivery.redelivered,
    };
    let span = tracing::info_span!(
        "task",
        id = tracing::field::Empty,
        attempt,
        trace_id = tracing::field::Empty
    );
    // The message id, read only for a span that is recorded (callgrind: reading it cost
    // ~240 instructions per task, with no subscriber to see it).
    if !span.is_disabled() {
        let id = task.properties.message_id();
        span.record("id", id.as_ref().and_then(|s| s.as_str()).unwrap_or(""));
    }
    // The trace the publisher started (its `traceparent` header), read only for a span that
    // is recorded.
    #[cfg(feature = "trace-context")]
    if !span.is_disabled()
        && let Some(ctx) = headers
            .as_ref()
            .and_then(amqp_client::TraceContext::extract)
    {
        span.record("trace_id", ctx.trace_id_hex());
    }
    async move {
        if disagreed {
            tracing::warn!(
                header = ?retry::attempt_header(headers.as_ref()),
                x_death_retries = retry::x_death_retries(headers.as_ref(), &ctx.delay_prefix),
                "attempt header and x-death disagree; using the larger"
            );
        }
        ctx.metrics.started();
        let started = std::time::Instant::now();
        let outcome = run_handler(ctx, &task).await;
        ctx.metrics.finished(outcome.is_ok(), started.elapsed());
        match outcome {
            Ok(()) => {
                tracing::debug!("succeeded");
                settled(ctx, delivery.ack());
            }
            Err(failure) => {
                tracing::info!(error = %failure.message, park_now = failure.park_now, "attempt failed");
                // Boxed: the failure path (publish, confirm, hook) is large and rare, and
                // every delivery's spawned task would otherwise carry (and copy) its room.
                Box::pin(fail(ctx, &delivery, &task, &failure, publisher, broken)).await;
            }
        }
    }
    .instrument(span)
    .await;
}

/// A failed attempt: what went wrong, and whether the handler asked not to retry.
struct Failure {
    message: String,
    park_now: bool,
}

impl Failure {
    fn retryable(message: String) -> Self {
        Self {
            message,
            park_now: false,
        }
    }
}

/// Runs the handler, bounded by the handler timeout; a panic or the timeout fails the attempt.
async fn run_handler<H: Handler>(ctx: &Ctx<H>, task: &Task) -> Result<(), Failure> {
    let limit = ctx.config.handler_timeout;
    match bounded(limit, ctx.handler.handle(task)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Failure {
            park_now: e.is_park_now(),
            message: e.to_string(),
        }),
        Err(Stopped::Panicked(message)) => {
            Err(Failure::retryable(format!("handler panicked: {message}")))
        }
        Err(Stopped::TimedOut) => Err(Failure::retryable(format!(
            "handler timed out after {}",
            format_duration(limit)
        ))),
    }
}

/// How a [`bounded`] run of the application's code ended without finishing.
enum Stopped {
    /// It panicked, with this message.
    Panicked(String),
    /// It ran past its limit and was dropped.
    TimedOut,
}

/// Runs the application's `work` (handler or hook) bounded by `limit`, with a panic caught.
/// It is polled in place, inside this delivery's task: no second task, no copy of the task,
/// no hop between worker threads per delivery (measured by `benches/examples/worker.rs`).
/// A timeout drops the future, which cancels it at its current await.
async fn bounded<F: Future>(limit: std::time::Duration, work: F) -> Result<F::Output, Stopped> {
    let mut work = std::pin::pin!(work);
    // After a panic the future is never polled again: the run is over.
    let caught = std::future::poll_fn(|cx| {
        match std::panic::catch_unwind(AssertUnwindSafe(|| work.as_mut().poll(cx))) {
            Ok(poll) => poll.map(Ok),
            Err(payload) => Poll::Ready(Err(payload)),
        }
    });
    match tokio::time::timeout(limit, caught).await {
        Ok(Ok(output)) => Ok(output),
        Ok(Err(payload)) => Err(Stopped::Panicked(panic_message(payload))),
        Err(_) => Err(Stopped::TimedOut),
    }
}

fn panic_message(payload: Box<dyn Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".into()
    }
}

/// Logs a refused settlement. A stale delivery (its channel closed) was requeued by the
/// broker already and is redelivered; nothing else to do.
fn settled<H>(ctx: &Ctx<H>, result: Result<(), amqp_client::Error>) {
    match result {
        Ok(()) => {}
        Err(amqp_client::Error::StaleDelivery { .. }) => {
            ctx.metrics.stale_settle();
            tracing::info!("connection was lost meanwhile: the broker redelivers this task");
        }
        Err(e) => tracing::warn!(error = %e, "settling failed; the broker redelivers this task"),
    }
}

/// Sends a failed task to its delay queue or to parking, acks it once that copy is
/// confirmed, and runs the dead-letter hook after parking.
async fn fail<H: Handler>(
    ctx: &Arc<Ctx<H>>,
    delivery: &Delivery,
    task: &Task,
    failure: &Failure,
    publisher: &Publisher,
    broken: &CancellationToken,
) {
    let headers = task.properties.headers();
    let record = FailureRecord::new(
        headers.as_ref(),
        task.attempt,
        &failure.message,
        &String::from_utf8_lossy(&task.exchange),
        &String::from_utf8_lossy(&task.routing_key),
    );
    let (decision, reason) = if failure.park_now {
        (Decision::Park, ParkReason::Rejected)
    } else {
        (
            retry::decide_jittered(&ctx.config, task.attempt, fastrand::f64()),
            ParkReason::AttemptsExhausted,
        )
    };
    match decision {
        Decision::Retry {
            delay,
            queue,
            next_attempt,
        } => {
            let props = retry::retry_properties(&task.properties, &record, next_attempt);
            match publisher
                .publish("", &queue, &props, task.body.clone())
                .await
            {
                Ok(()) => {
                    ctx.metrics.retried(task.attempt);
                    tracing::info!(retry_in = %format_duration(delay), next_attempt, "scheduled a retry");
                    settled(ctx, delivery.ack());
                }
                Err(e) => hand_back(delivery, &e, broken).await,
            }
        }
        Decision::Park => {
            let parking = ctx.config.parking_queue();
            let props = retry::parked_properties(&task.properties, &record, reason);
            match publisher
                .publish("", &parking, &props, task.body.clone())
                .await
            {
                Ok(()) => {
                    ctx.metrics.dead_lettered(reason);
                    tracing::warn!(
                        attempts = record.attempts,
                        error = %record.last_error,
                        queue = %parking,
                        reason = reason.as_str(),
                        "task parked"
                    );
                    settled(ctx, delivery.ack());
                    let dead = DeadLetter {
                        reason,
                        last_error: record.last_error,
                        attempts: record.attempts,
                        first_failure_at: record.first_failure_at,
                        last_failure_at: record.last_failure_at,
                        original_exchange: record.original_exchange,
                        original_routing_key: record.original_routing_key,
                        parking_queue: parking,
                    };
                    run_hook(ctx, task, dead).await;
                }
                Err(e) => hand_back(delivery, &e, broken).await,
            }
        }
    }
}

/// The retry or parked copy was not confirmed: leave the task with the broker. On a lost
/// connection it is redelivered by itself; on a closed publishing channel the session
/// restarts; if the copy was unroutable or nacked (a delay or parking queue was deleted) the
/// task is requeued after a pause, and the next session re-declares the queues.
async fn hand_back(delivery: &Delivery, error: &PublishError, broken: &CancellationToken) {
    tracing::error!(%error, "could not store the failed task's copy; it stays in the work queue");
    if error.is_connection_error() {
        return;
    }
    if error.is_channel_error() {
        broken.cancel();
        return;
    }
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let _ = delivery.nack(NackOptions::requeue());
    broken.cancel();
}

async fn run_hook<H: Handler>(ctx: &Arc<Ctx<H>>, task: &Task, dead: DeadLetter) {
    let limit = ctx.config.handler_timeout;
    match bounded(limit, ctx.handler.on_dead_letter(task, &dead)).await {
        Ok(()) => {}
        Err(Stopped::Panicked(message)) => {
            tracing::error!(error = %message, "dead-letter hook failed");
        }
        Err(Stopped::TimedOut) => tracing::error!("dead-letter hook timed out"),
    }
}
