//! Declaring (and removing) what a worker needs, and moving parked tasks back.
//!
//! For a work queue `tasks` with retry delays 1s and 10s:
//!
//! ```text
//!  producer ──► [exchanges, bindings from config] ──► tasks ──► worker
//!                                                      ▲  │ fails (attempt < max)
//!          x-dead-letter-exchange "" ──────────────────┤  ├──► tasks.retry.1s  (x-message-ttl 1000)
//!          x-dead-letter-routing-key tasks             └──┼──► tasks.retry.10s (x-message-ttl 10000)
//!                                                         │ fails (last attempt)
//!                                                         └──► tasks.parked
//! ```
//!
//! Retries dead-letter through the default exchange straight to the work queue, so a task
//! that came through a fanout or topic exchange is retried for this worker only. The work
//! queue itself dead-letters to the parking queue, so a task rejected by the broker (e.g. over
//! a quorum queue's `x-delivery-limit`) is parked, not dropped. Delay queues are classic
//! queues whatever the work queue's type.

use amqp_client::amqp_codec::{FieldTable, FieldValue, ShortStr};
use amqp_client::{BindOptions, GetOptions};
use amqp_client::{
    Channel, Connection, ExchangeDeclareOptions, ExchangeDeleteOptions, ExchangeKind,
    QueueDeclareOptions, QueueDeleteOptions,
};

use crate::config::{DestinationType, QueueType, WorkerConfig, arguments_table};
use crate::error::WorkerError;
use crate::publisher::Publisher;
use crate::retry::requeued_properties;

fn table(entries: Vec<(&'static str, FieldValue)>) -> FieldTable {
    entries
        .into_iter()
        .map(|(k, v)| (ShortStr::from_static(k), v))
        .collect()
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions::durable()
}

/// Maps a declaration failure: connection losses stay client errors (the caller reconnects),
/// refusals become [`WorkerError::Declare`].
fn declare_error(what: String) -> impl FnOnce(amqp_client::Error) -> WorkerError {
    move |source| {
        if source.is_connection_error() {
            WorkerError::Client(source)
        } else {
            WorkerError::Declare { what, source }
        }
    }
}

/// The work queue's arguments: its type, delivery limit and dead-letter route to parking.
pub fn work_queue_arguments(config: &WorkerConfig) -> FieldTable {
    let mut entries = vec![
        ("x-dead-letter-exchange", FieldValue::from("")),
        (
            "x-dead-letter-routing-key",
            FieldValue::from(config.parking_queue()),
        ),
    ];
    if config.queue_type == QueueType::Quorum {
        entries.push(("x-queue-type", "quorum".into()));
        if let Some(limit) = config.delivery_limit {
            entries.push(("x-delivery-limit", FieldValue::I64(i64::from(limit))));
        }
    }
    table(entries)
}

/// Checks, before anything is declared, that every exchange or queue a binding names and the
/// configuration does not declare exists (passive declares). A missing one is
/// [`WorkerError::Missing`], and the channel is closed by the broker's 404.
async fn preflight(channel: &Channel, config: &WorkerConfig) -> Result<(), WorkerError> {
    let declared_exchanges: Vec<&str> = config.exchanges.iter().map(|x| x.name.as_str()).collect();
    let mut declared_queues = vec![config.queue.clone(), config.parking_queue()];
    declared_queues.extend(
        config
            .distinct_delays()
            .into_iter()
            .map(|d| config.delay_queue(d)),
    );
    let missing = |what: String| {
        move |source: amqp_client::Error| {
            if source.is_connection_error() {
                WorkerError::Client(source)
            } else {
                WorkerError::Missing { what, source }
            }
        }
    };
    for b in &config.bindings {
        let binding = format!("binding from '{}' with key '{}'", b.source, b.routing_key);
        let mut exchanges = vec![b.source.as_str()];
        if b.destination_type == DestinationType::Exchange {
            exchanges.extend(b.destination.as_deref());
        }
        for x in exchanges {
            if declared_exchanges.contains(&x) {
                continue;
            }
            let passive = ExchangeDeclareOptions::default().with_passive();
            channel
                .exchange_declare(x, ExchangeKind::Direct, passive)
                .await
                .map_err(missing(format!("exchange '{x}' (in the {binding})")))?;
        }
        if let (DestinationType::Queue, Some(q)) = (b.destination_type, &b.destination)
            && !declared_queues.contains(q)
        {
            let passive = QueueDeclareOptions::default().with_passive();
            channel
                .queue_declare(q, passive)
                .await
                .map_err(missing(format!("queue '{q}' (in the {binding})")))?;
        }
    }
    Ok(())
}

/// Declares the exchanges, the work, delay and parking queues, and the bindings. Idempotent:
/// run on every (re)connect. The whole configuration is checked first, locally
/// ([`WorkerConfig::validate`]) and for what the bindings name but the configuration does not
/// declare (it must exist), so that a bad binding leaves nothing half-declared behind. A
/// broker refusal of the declarations themselves (406 for a queue that exists with other
/// arguments) can still come after some were made.
pub async fn declare(channel: &Channel, config: &WorkerConfig) -> Result<(), WorkerError> {
    config.validate()?;
    preflight(channel, config).await?;
    for x in &config.exchanges {
        let mut options = ExchangeDeclareOptions::default();
        options.durable = x.durable;
        options.auto_delete = x.auto_delete;
        options.internal = x.internal;
        channel
            .exchange_declare(
                &x.name,
                x.exchange_kind()?,
                options.with_arguments(arguments_table(&x.arguments)),
            )
            .await
            .map_err(declare_error(format!("exchange '{}'", x.name)))?;
    }
    let parking = config.parking_queue();
    let parking_args = match config.queue_type {
        QueueType::Classic => FieldTable::default(),
        QueueType::Quorum => table(vec![("x-queue-type", "quorum".into())]),
    };
    channel
        .queue_declare(&parking, durable().with_arguments(parking_args))
        .await
        .map_err(declare_error(format!("queue '{parking}'")))?;
    channel
        .queue_declare(
            &config.queue,
            durable().with_arguments(work_queue_arguments(config)),
        )
        .await
        .map_err(declare_error(format!("queue '{}'", config.queue)))?;
    for delay in config.distinct_delays() {
        let name = config.delay_queue(delay);
        let ttl = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
        let args = table(vec![
            ("x-message-ttl", FieldValue::I64(ttl)),
            ("x-dead-letter-exchange", "".into()),
            ("x-dead-letter-routing-key", config.queue.as_str().into()),
        ]);
        channel
            .queue_declare(&name, durable().with_arguments(args))
            .await
            .map_err(declare_error(format!("queue '{name}'")))?;
    }
    for b in &config.bindings {
        let destination = b.destination.as_deref().unwrap_or(&config.queue);
        let args = arguments_table(&b.arguments);
        let what = format!(
            "binding from '{}' to '{destination}' with key '{}'",
            b.source, b.routing_key
        );
        let result = match b.destination_type {
            DestinationType::Queue => {
                channel
                    .queue_bind(
                        destination,
                        &b.source,
                        &b.routing_key,
                        BindOptions::default().with_arguments(args),
                    )
                    .await
            }
            DestinationType::Exchange => {
                channel
                    .exchange_bind(
                        destination,
                        &b.source,
                        &b.routing_key,
                        BindOptions::default().with_arguments(args),
                    )
                    .await
            }
        };
        result.map_err(declare_error(what))?;
    }
    Ok(())
}

/// Deletes everything [`declare`] declared: the work, delay and parking queues (with their
/// messages) and the configured exchanges (except the broker's own `amq.*`). Each deletion
/// runs on its own channel, so one refusal does not stop the others; the first error is
/// returned.
pub async fn delete(conn: &Connection, config: &WorkerConfig) -> Result<(), WorkerError> {
    let mut queues = vec![config.queue.clone(), config.parking_queue()];
    queues.extend(
        config
            .distinct_delays()
            .into_iter()
            .map(|d| config.delay_queue(d)),
    );
    let mut first_error = None;
    for q in &queues {
        let result = async {
            let ch = conn.open_channel().await?;
            ch.queue_delete(q, QueueDeleteOptions::default()).await?;
            ch.close().await
        }
        .await;
        if let Err(e) = result {
            first_error.get_or_insert(e);
        }
    }
    for x in config
        .exchanges
        .iter()
        .filter(|x| !x.name.starts_with("amq."))
    {
        let result = async {
            let ch = conn.open_channel().await?;
            ch.exchange_delete(&x.name, ExchangeDeleteOptions::default())
                .await?;
            ch.close().await
        }
        .await;
        if let Err(e) = result {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), |e| Err(WorkerError::Client(e)))
}

/// Moves up to `limit` parked tasks (all that are parked when it starts, if `None`) back to the
/// work queue as fresh first attempts; returns how many moved. Each is acknowledged in the
/// parking queue only after its copy in the work queue was confirmed.
pub async fn requeue_parked(
    conn: &Connection,
    config: &WorkerConfig,
    limit: Option<u64>,
) -> Result<u64, WorkerError> {
    let parking = config.parking_queue();
    let fail = |source| WorkerError::Requeue {
        queue: parking.clone(),
        source,
    };
    let channel = conn.open_channel().await?;
    let passive = QueueDeclareOptions::default().with_passive();
    let waiting = channel
        .queue_declare(&parking, passive)
        .await
        .map_err(declare_error(format!("queue '{parking}'")))?
        .message_count;
    let limit = limit.unwrap_or(u64::from(waiting));
    let publisher = Publisher::open(conn).await.map_err(fail)?;
    let mut moved = 0;
    while moved < limit {
        let Some(msg) = channel.basic_get(&parking, GetOptions::default()).await? else {
            break;
        };
        let delivery = msg.delivery;
        let properties = requeued_properties(&delivery.properties);
        publisher
            .publish("", &config.queue, &properties, delivery.body.clone())
            .await
            .map_err(fail)?;
        delivery.ack()?;
        moved += 1;
    }
    publisher.close().await.map_err(fail)?;
    channel.close().await?;
    Ok(moved)
}
