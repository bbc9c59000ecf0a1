//! One delivery, start to finish: run the handler (a panic is caught: a failed attempt, not
//! a dead worker) under the handler timeout, then settle: ack on success; on failure publish
//! the retry or parked copy, wait for its confirm, and only then ack.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use amqp_client::amqp_codec::FieldTable;
use amqp_client::{Delivery, NackOptions};
use tokio_util::sync::CancellationToken;
use tracing::Span;

use crate::config::format_duration;
use crate::handler::{DeadLetter, Handler, HandlerError, ParkReason, Task};
use crate::pool::Link;
use crate::publisher::{PublishError, Publisher};
use crate::retry::{self, Decision, FailureRecord};
use crate::worker::Ctx;

/// Processes one delivery, in a runner of the [`Pool`](crate::pool::Pool): the runner takes
/// no other until this one is settled.
///
/// The delivery stays with the runner and the handler's future stays where it was made:
/// every layer below takes a reference or a `Pin<&mut _>`. Moving a future copies all of
/// it, whatever state it is in (callgrind: passing the delivery in by value, then the
/// handler's future through a span wrapper, a timeout and a panic catcher, cost ~15 copies
/// of 150 to 400 bytes per task).
pub(crate) async fn process<H: Handler>(ctx: &Arc<Ctx<H>>, delivery: &mut Delivery, link: &Link) {
    let (task, span) = begin(ctx, delivery);
    ctx.metrics.started();
    let started = std::time::Instant::now();
    let limit = ctx.config.handler_timeout;
    let handling = std::pin::pin!(ctx.handler.handle(&task));
    let ran = bounded(started.checked_add(limit), &span, handling).await;
    let outcome = attempt_outcome(ran, limit);
    ctx.metrics.finished(outcome.is_ok(), started.elapsed());
    match outcome {
        Ok(()) => span.in_scope(|| {
            tracing::debug!("succeeded");
            settled(ctx, delivery.ack());
        }),
        Err(failure) => {
            span.in_scope(|| {
                tracing::info!(error = %failure.message, park_now = failure.park_now, "attempt failed");
            });
            // Boxed: the failure path (publish, confirm, hook) is large and rare, and every
            // runner's future would otherwise carry its room.
            let mut failing = Box::pin(fail(
                ctx,
                delivery,
                &task,
                &failure,
                &link.publisher,
                &link.broken,
            ));
            in_span(&span, failing.as_mut()).await;
        }
    }
}

/// The task for `delivery` (its fields moved out; what settles it stays), and its span.
fn begin<H: Handler>(ctx: &Ctx<H>, delivery: &mut Delivery) -> (Task, Span) {
    let headers = delivery.properties.headers();
    let (attempt, disagreed) = retry::attempt_of(headers.as_ref(), &ctx.delay_prefix);
    // Moved, not cloned (callgrind: copying the exchange and routing key into `String`s
    // cost ~260 instructions and an allocation per task).
    let task = Task {
        body: std::mem::take(&mut delivery.body),
        properties: std::mem::take(&mut delivery.properties),
        exchange: std::mem::take(&mut delivery.exchange),
        routing_key: std::mem::take(&mut delivery.routing_key),
        attempt,
        redelivered: delivery.redelivered,
    };
    let span = task_span(&task, headers.as_ref());
    if disagreed {
        span.in_scope(|| {
            tracing::warn!(
                header = ?retry::attempt_header(headers.as_ref()),
                x_death_retries = retry::x_death_retries(headers.as_ref(), &ctx.delay_prefix),
                "attempt header and x-death disagree; using the larger"
            );
        });
    }
    (task, span)
}

/// The span of one task: its attempt, and its message id and trace id when the span is
/// recorded.
fn task_span(task: &Task, headers: Option<&FieldTable>) -> Span {
    let span = tracing::info_span!(
        "task",
        id = tracing::field::Empty,
        attempt = task.attempt,
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
        && let Some(ctx) = headers.and_then(amqp_client::TraceContext::extract)
    {
        span.record("trace_id", ctx.trace_id_hex());
    }
    #[cfg(not(feature = "trace-context"))]
    let _ = headers;
    span
}

/// `work`, with `span` entered around each of its polls: what `Instrumented` does, without
/// owning the span or moving the future.
async fn in_span<F: Future>(span: &Span, mut work: Pin<&mut F>) -> F::Output {
    std::future::poll_fn(|cx| {
        let _entered = span.enter();
        work.as_mut().poll(cx)
    })
    .await
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

/// What the handler's run (see [`bounded`]) means for the attempt: a panic or the timeout
/// fails it.
fn attempt_outcome(
    ran: Result<Result<(), HandlerError>, Stopped>,
    limit: std::time::Duration,
) -> Result<(), Failure> {
    match ran {
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
    /// It ran past its limit and was dropped by its owner.
    TimedOut,
}

/// Runs the application's `work` (handler or hook) inside `span` until `deadline` (none: a
/// limit too far to reach), with a panic caught. It is polled in place, inside this
/// delivery's task: no second task, no hop between worker threads per delivery (measured by
/// `benches/examples/worker/`). After a timeout or a panic it is not polled again; its
/// owner drops it, which cancels it at its current await.
///
/// The timer starts only if the first poll did not finish the work: a handler of quick work
/// costs no timer (callgrind: the runtime's handle, a clock read and the timer's own state,
/// ~130 instructions and two atomic operations per task). Work that waits is polled once
/// more as the timer starts, which a future must allow.
async fn bounded<F: Future>(
    deadline: Option<std::time::Instant>,
    span: &Span,
    mut work: Pin<&mut F>,
) -> Result<F::Output, Stopped> {
    let mut poll_caught = |cx: &mut Context<'_>| {
        let _entered = span.enter();
        poll_catching(work.as_mut(), cx)
    };
    let first = std::future::poll_fn(|cx| Poll::Ready(poll_caught(cx))).await;
    let caught = match (first, deadline) {
        (Poll::Ready(caught), _) => caught,
        (Poll::Pending, None) => std::future::poll_fn(&mut poll_caught).await,
        (Poll::Pending, Some(deadline)) => {
            let deadline = tokio::time::Instant::from_std(deadline);
            match tokio::time::timeout_at(deadline, std::future::poll_fn(&mut poll_caught)).await {
                Ok(caught) => caught,
                Err(_) => return Err(Stopped::TimedOut),
            }
        }
    };
    caught.map_err(|payload| Stopped::Panicked(panic_message(payload)))
}

/// One poll of `work`, a panic in it caught: `Ready(Err(payload))` then, and `work` must not
/// be polled again.
pub(crate) fn poll_catching<F: Future>(
    work: Pin<&mut F>,
    cx: &mut Context<'_>,
) -> Poll<Result<F::Output, Box<dyn Any + Send>>> {
    match std::panic::catch_unwind(AssertUnwindSafe(|| work.poll(cx))) {
        Ok(poll) => poll.map(Ok),
        Err(payload) => Poll::Ready(Err(payload)),
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
    let deadline = std::time::Instant::now().checked_add(ctx.config.handler_timeout);
    let hook = std::pin::pin!(ctx.handler.on_dead_letter(task, &dead));
    // Polled inside the task's span already (the failure path runs in it).
    match bounded(deadline, &Span::none(), hook).await {
        Ok(()) => {}
        Err(Stopped::Panicked(message)) => {
            tracing::error!(error = %message, "dead-letter hook failed");
        }
        Err(Stopped::TimedOut) => tracing::error!("dead-letter hook timed out"),
    }
}

#[cfg(test)]
mod tests {
    // A test's failure is a panic.
    #![allow(clippy::unwrap_used)]

    use std::time::{Duration, Instant};

    use super::*;

    /// Pending on its first `pending` polls (waking itself at once), then `Ok(n)`; a panic
    /// instead at poll `panic_at`.
    async fn steps(pending: u32, panic_at: Option<u32>) -> u32 {
        let mut polls = 0;
        std::future::poll_fn(|cx| {
            polls += 1;
            assert_ne!(Some(polls), panic_at, "boom at poll {polls}");
            if polls > pending {
                return Poll::Ready(polls);
            }
            cx.waker().wake_by_ref();
            Poll::Pending
        })
        .await
    }

    async fn run<F: Future>(deadline: Option<Instant>, work: F) -> Result<F::Output, Stopped> {
        bounded(deadline, &Span::none(), std::pin::pin!(work)).await
    }

    fn soon() -> Option<Instant> {
        Some(Instant::now() + Duration::from_secs(10))
    }

    #[tokio::test]
    async fn work_done_in_its_first_poll_is_never_timed_out() {
        // Even past its deadline: like a timeout, the work is polled before the timer.
        let past = Instant::now().checked_sub(Duration::from_secs(1));
        assert!(matches!(run(past, steps(0, None)).await, Ok(1)));
    }

    #[tokio::test]
    async fn work_that_waits_finishes_under_the_timer_or_without_one() {
        // The timer's start polls it once more: 3 pending polls, then ready on the 4th or 5th.
        let polls = run(soon(), steps(3, None)).await.ok().unwrap();
        assert!((4..=5).contains(&polls), "{polls} polls");
        assert!(matches!(run(None, steps(3, None)).await, Ok(4..=5)));
    }

    #[tokio::test]
    async fn work_past_its_deadline_is_stopped() {
        let deadline = Some(Instant::now() + Duration::from_millis(50));
        let started = Instant::now();
        let stopped = run(deadline, std::future::pending::<()>());
        // Bounded here too: a lost deadline fails the test instead of hanging it.
        let stopped = tokio::time::timeout(Duration::from_secs(5), stopped).await;
        assert!(matches!(stopped.unwrap(), Err(Stopped::TimedOut)));
        assert!(started.elapsed() >= Duration::from_millis(45));
    }

    #[tokio::test]
    async fn a_panic_in_any_poll_is_caught_with_its_message() {
        for (deadline, panic_at) in [(soon(), 1), (soon(), 3), (None, 3)] {
            match run(deadline, steps(5, Some(panic_at))).await {
                Err(Stopped::Panicked(message)) => {
                    assert!(
                        message.contains(&format!("boom at poll {panic_at}")),
                        "{message}"
                    );
                }
                _ => panic!("a panic at poll {panic_at} was not caught"),
            }
        }
    }

    #[test]
    fn an_attempt_fails_with_what_stopped_the_handler() {
        let limit = Duration::from_millis(1500);
        assert!(attempt_outcome(Ok(Ok(())), limit).is_ok());
        let timed_out = attempt_outcome(Err(Stopped::TimedOut), limit)
            .err()
            .unwrap();
        assert_eq!(timed_out.message, "handler timed out after 1500ms");
        assert!(!timed_out.park_now);
        let panicked = attempt_outcome(Err(Stopped::Panicked("x".into())), limit);
        assert_eq!(panicked.err().unwrap().message, "handler panicked: x");
        let parked = attempt_outcome(Ok(Err(HandlerError::park_now("bad"))), limit);
        let parked = parked.err().unwrap();
        assert!(parked.park_now && parked.message == "bad");
    }
}
