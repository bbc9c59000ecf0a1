//! What the application plugs in: a [`Handler`] that processes one [`Task`], and the
//! [`DeadLetter`] record its hook sees when a task runs out of attempts.

use std::fmt;
use std::future::Future;

use amqp_client::amqp_codec::{BasicProperties, FieldTable, FieldValue, ShortStr};
use bytes::Bytes;

use crate::retry;

/// One delivery of a task, as the handler sees it. Its fields are the delivery's own, moved
/// out of the read buffer's slices: building a task allocates nothing and copies no byte.
#[derive(Debug, Clone)]
pub struct Task {
    /// The message body.
    pub body: Bytes,
    /// The message properties (headers, message id, content type, ...).
    pub properties: BasicProperties,
    /// The exchange this delivery came through (empty for the default exchange, which is how
    /// retries come back). Compares with `&str`; [`ShortStr::as_str`] reads it as UTF-8.
    pub exchange: ShortStr,
    /// The routing key of this delivery, e.g. `task.routing_key == "orders.created"`.
    pub routing_key: ShortStr,
    /// Which attempt this is, 1 for the first.
    pub attempt: u32,
    /// True if the broker delivered this message before without it being settled (a worker
    /// died or lost its connection mid-task): the work may have been done already.
    pub redelivered: bool,
}

impl Task {
    /// The trace context its publisher put in the `traceparent` and `tracestate` headers, if
    /// a valid one (feature `trace-context`): the trace this task's work belongs to. Retries
    /// keep the headers, so every attempt belongs to the same trace.
    #[cfg(feature = "trace-context")]
    pub fn trace_context(&self) -> Option<amqp_client::TraceContext> {
        amqp_client::TraceContext::from_properties(&self.properties)
    }

    /// The message id, the key for idempotent processing (delivery is at-least-once).
    pub fn message_id(&self) -> Option<String> {
        self.properties
            .message_id()
            .and_then(|s| s.as_str().map(str::to_owned))
    }

    /// The application headers (empty if none).
    pub fn headers(&self) -> FieldTable {
        self.properties.headers().unwrap_or_default()
    }

    /// A header as text: strings as they are, numbers, booleans and timestamps in decimal.
    pub fn header_text(&self, name: &str) -> Option<String> {
        field_text(&self.headers().get(name)?)
    }

    /// The body as UTF-8, if it is.
    pub fn body_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.body).ok()
    }

    /// The exchange the task was first published to (survives retries).
    pub fn original_exchange(&self) -> String {
        self.header_text(retry::ORIGINAL_EXCHANGE_HEADER)
            .unwrap_or_else(|| self.exchange.to_string())
    }

    /// The routing key the task was first published with (survives retries).
    pub fn original_routing_key(&self) -> String {
        self.header_text(retry::ORIGINAL_ROUTING_KEY_HEADER)
            .unwrap_or_else(|| self.routing_key.to_string())
    }
}

/// A field value as text, for scalars; `None` for arrays, tables and byte arrays.
pub fn field_text(v: &FieldValue) -> Option<String> {
    Some(match v {
        FieldValue::LongStr(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        FieldValue::Bool(b) => b.to_string(),
        FieldValue::F32(f) => f.to_string(),
        FieldValue::F64(f) => f.to_string(),
        FieldValue::Timestamp(t) => t.to_string(),
        FieldValue::Decimal(d) => {
            let scale = 10u64.pow(u32::from(d.scale.min(9)));
            let v = u64::from(d.value);
            format!(
                "{}.{:0width$}",
                v / scale,
                v % scale,
                width = usize::from(d.scale.min(9))
            )
        }
        other => other.as_i64()?.to_string(),
    })
}

/// Why a handler failed an attempt. The message is written into the task's headers.
///
/// [`HandlerError::new`] fails the attempt: the task is retried until its attempts run out.
/// [`HandlerError::park_now`] says that retrying cannot help (the input is bad): the task is
/// parked at once, whatever attempt it is, with [`ParkReason::Rejected`] recorded — what
/// Spring AMQP's `AmqpRejectAndDontRequeueException` or Celery's `Reject(requeue=False)` do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerError {
    message: String,
    park_now: bool,
}

impl HandlerError {
    /// A failure with this message; the task is retried while it has attempts left.
    pub fn new(message: impl fmt::Display) -> Self {
        Self {
            message: message.to_string(),
            park_now: false,
        }
    }

    /// A failure that must not be retried: the task is parked now, with this message as its
    /// last error and [`ParkReason::Rejected`] as the reason.
    pub fn park_now(message: impl fmt::Display) -> Self {
        Self {
            message: message.to_string(),
            park_now: true,
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// True if the handler asked for the task to be parked without further attempts.
    pub fn is_park_now(&self) -> bool {
        self.park_now
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl<E: std::error::Error> From<E> for HandlerError {
    fn from(err: E) -> Self {
        Self::new(err)
    }
}

/// Why a task was parked; recorded in its [`PARK_REASON_HEADER`](crate::retry::PARK_REASON_HEADER).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParkReason {
    /// Its last allowed attempt failed (`attempts-exhausted`).
    AttemptsExhausted,
    /// The handler said not to retry it ([`HandlerError::park_now`], or exit code 65 from
    /// the binary's command) (`rejected`).
    Rejected,
}

impl ParkReason {
    /// The header value: `attempts-exhausted` or `rejected`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AttemptsExhausted => "attempts-exhausted",
            Self::Rejected => "rejected",
        }
    }
}

/// The record of a task that was parked: out of attempts, or rejected by its handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Why it was parked.
    pub reason: ParkReason,
    /// The last attempt's error.
    pub last_error: String,
    /// Attempts made.
    pub attempts: u32,
    /// When the first attempt failed, Unix seconds.
    pub first_failure_at: u64,
    /// When the last attempt failed, Unix seconds.
    pub last_failure_at: u64,
    /// The exchange the task was first published to.
    pub original_exchange: String,
    /// The routing key it was first published with.
    pub original_routing_key: String,
    /// The queue it now waits in.
    pub parking_queue: String,
}

/// Processes tasks. `handle` returning `Ok` acknowledges the task; an error, a panic or
/// running past the handler timeout fails the attempt (the task is retried or parked); an
/// error made with [`HandlerError::park_now`] parks it without further attempts.
///
/// Delivery is at-least-once: a task can run again after a crash or a lost connection (see
/// [`Task::redelivered`] and [`Task::message_id`]), so make handlers idempotent.
///
/// ```
/// use amqp_worker::{Handler, HandlerError, Task, DeadLetter};
///
/// struct Resize;
///
/// impl Handler for Resize {
///     async fn handle(&self, task: &Task) -> Result<(), HandlerError> {
///         let path = task.body_str().ok_or_else(|| HandlerError::new("body is not UTF-8"))?;
///         if path.is_empty() {
///             return Err(HandlerError::new("empty path"));
///         }
///         Ok(())
///     }
///
///     async fn on_dead_letter(&self, task: &Task, dead: &DeadLetter) {
///         eprintln!("giving up on {:?}: {}", task.message_id(), dead.last_error);
///     }
/// }
/// ```
pub trait Handler: Send + Sync + 'static {
    /// Processes one task.
    fn handle(&self, task: &Task) -> impl Future<Output = Result<(), HandlerError>> + Send;

    /// Runs once a task was parked, after its last attempt or at the handler's request (after
    /// the parked copy was confirmed). Bounded by the handler timeout; a panic here is logged and ignored.
    fn on_dead_letter(
        &self,
        task: &Task,
        dead_letter: &DeadLetter,
    ) -> impl Future<Output = ()> + Send {
        let _ = (task, dead_letter);
        std::future::ready(())
    }
}

/// A [`Handler`] from a closure returning a future: `handler_fn(|task| async move { Ok(()) })`.
pub fn handler_fn<F, Fut>(f: F) -> FnHandler<F>
where
    F: Fn(Task) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    FnHandler(f)
}

/// See [`handler_fn`].
#[derive(Debug, Clone)]
pub struct FnHandler<F>(F);

impl<F, Fut> Handler for FnHandler<F>
where
    F: Fn(Task) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    fn handle(&self, task: &Task) -> impl Future<Output = Result<(), HandlerError>> + Send {
        (self.0)(task.clone())
    }
}
