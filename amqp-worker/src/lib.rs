//! A RabbitMQ task worker built on [`amqp_client`], implementing the reliability patterns:
//!
//! * **Manual acks, after the work.** A task is acknowledged only once its handler succeeded
//!   (never auto-ack). A worker killed mid-task loses nothing: the broker redelivers the
//!   unacknowledged message to another worker.
//! * **Durable and persistent.** Queues are durable, exchanges durable by default, and every
//!   message the crate publishes is persistent (delivery mode 2) unless told otherwise.
//! * **Publisher confirms everywhere.** Producing ([`Publisher`]), retrying and parking all
//!   wait for the broker's confirm; a failed task is acked only after its retry or parked copy
//!   was confirmed.
//! * **Mandatory publishing.** An unroutable message is [`PublishError::Unroutable`], never a
//!   silent loss.
//! * **Fair dispatch.** `basic.qos` prefetch plus at most `concurrency` handlers in flight.
//! * **Retry through delay queues.** A failed attempt goes to `<queue>.retry.<delay>`, a queue
//!   with a per-queue TTL whose dead-letter route leads back to the work queue (no plugin).
//!   Delays are tiers (1s, 10s, 60s by default, the last repeating). The attempt number
//!   travels in the `x-attempt` header, cross-checked with RabbitMQ's `x-death` count. After
//!   the last attempt the task is parked in `<queue>.parked` with its last error, attempt
//!   count, first and last failure times and original route in headers, and
//!   [`Handler::on_dead_letter`] runs. A handler that knows retrying cannot help returns
//!   [`HandlerError::park_now`]: the task is parked at once, its reason recorded.
//!   [`topology::requeue_parked`] moves parked tasks back.
//! * **Failures never take the worker down.** A handler that returns an error, panics or runs
//!   past `handler_timeout` fails that attempt only.
//! * **Reconnection.** The client's own automatic recovery, configured from the worker's
//!   settings: a lost connection is re-established with exponential backoff and jitter, the
//!   topology the worker declared (work, delay and parking queues, bindings) and its consumer
//!   re-declared, until `give_up_after` passes without one; then [`Worker::run`] fails so a
//!   supervisor restarts the process. The first connection is retried the same way. The
//!   worker has no reconnect loop of its own; a recovery hook keeps its metrics.
//! * **At-least-once.** A handler that finishes after its connection was lost cannot ack (the
//!   client refuses stale delivery tags); the broker has redelivered the task, which therefore
//!   runs twice. Make handlers idempotent with [`Task::message_id`].
//! * **Graceful shutdown.** [`Shutdown::trigger`] (or SIGINT/SIGTERM via
//!   [`Shutdown::on_signals`]) cancels the consumer, hands back tasks not yet started, lets
//!   running handlers finish within `shutdown_timeout`, settles them and closes.
//! * **Delayed send** ([`Publisher::send_delayed`]): the target is checked before sending, and
//!   a delayed message whose target vanished during the delay is caught in
//!   `amqp-worker.unroutable`, not dropped ([`delayed`]). Exchange types and exchange-to-exchange
//!   bindings from configuration ([`WorkerConfig`]), quorum queues as an option.
//!
//! ```no_run
//! use amqp_worker::{Handler, HandlerError, Publisher, Task, Worker, WorkerConfig, task_properties};
//!
//! struct Print;
//!
//! impl Handler for Print {
//!     async fn handle(&self, task: &Task) -> Result<(), HandlerError> {
//!         let text = task.body_str().ok_or_else(|| HandlerError::new("not UTF-8"))?;
//!         println!("attempt {}: {text}", task.attempt);
//!         Ok(())
//!     }
//! }
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let config = WorkerConfig::new("greetings");
//! let worker = Worker::new(config.clone(), Print)?;
//! let shutdown = worker.shutdown();
//! shutdown.on_signals()?;
//! let running = tokio::spawn(worker.run());
//!
//! let conn = amqp_client::Connection::connect(&config.url).await?;
//! let publisher = Publisher::open(&conn).await?;
//! publisher.publish("", "greetings", &task_properties("hello-1"), "hello").await?;
//!
//! running.await??; // returns after SIGINT or SIGTERM
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

// The README's example compiles as a doctest (`no_run`: it needs a broker).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

// Where things are: `worker.rs` runs sessions on one connection (`connect.rs` makes it, with
// the client's recovery and the worker's hook); `session.rs` is one consuming session;
// `pool.rs` runs `concurrency` runners that take deliveries from a `feed.rs` queue;
// `settle.rs` takes one delivery from handler to ack; `retry.rs` decides retry or park;
// `publisher.rs` publishes with confirms (and `delayed.rs` delayed sends); `topology.rs`
// declares; `parked.rs` inspects the parking queue; `metrics.rs`, `http.rs`, `depth.rs`
// observe; `config/` and `shutdown.rs` configure and stop.

pub mod config;
mod connect;
pub mod delayed;
mod depth;
mod error;
mod feed;
mod gate;
pub mod handler;
pub mod http;
pub mod metrics;
pub mod parked;
mod pool;
pub mod publisher;
pub mod retry;
mod session;
mod settle;
pub mod shutdown;
pub mod topology;
mod worker;

pub use config::{ConfigError, QueueType, WorkerConfig};
pub use error::WorkerError;
pub use handler::{DeadLetter, Handler, HandlerError, ParkReason, Task, handler_fn};
pub use metrics::{Metrics, MetricsSnapshot};
pub use publisher::{PendingConfirm, PublishError, Publisher, task_properties};
pub use shutdown::Shutdown;
pub use worker::Worker;
