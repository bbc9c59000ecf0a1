//! The workloads with lapin 4, in its documented idiom: `basic_publish` returns a
//! [`PublisherConfirm`] future, kept in a window and awaited as it fills; the [`Consumer`] is a
//! stream whose deliveries are acked with `delivery.ack(..).await`. Connected with
//! `Connection::connect` on the default runtime (the current tokio one; lapin adds its own I/O
//! thread).

use std::collections::VecDeque;

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{
    BasicProperties, Channel, Connection, ConnectionProperties, Consumer, PublisherConfirm,
};

use crate::Workload;
use crate::measure::{
    BoxError, Meter, Pacer, Params, Phase, RunOutcome, RunResult, latency_of, stamp,
};

/// The client's name in the table.
const NAME: &str = "lapin";

/// Connects, with the default properties.
pub(crate) async fn connect(url: &str) -> Result<Connection, BoxError> {
    Ok(Connection::connect(url, ConnectionProperties::default()).await?)
}

/// Opens a connection and a channel and declares the durable queue `queue`.
async fn open(url: &str, queue: &str) -> Result<(Connection, Channel), BoxError> {
    let conn = connect(url).await?;
    let ch = conn.create_channel().await?;
    let options = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.queue_declare(queue.into(), options, FieldTable::default())
        .await?;
    Ok((conn, ch))
}

/// Fails unless the broker acked the publish.
async fn confirmed(confirm: PublisherConfirm) -> Result<(), BoxError> {
    if confirm.await?.is_ack() {
        Ok(())
    } else {
        Err("publish nacked by the broker".into())
    }
}

/// Publishes `n` messages with at most `params.window` unconfirmed, and waits for every confirm.
/// With a `pacer`, publishes at its rate and stamps each body with the publish time.
pub(crate) async fn publish(
    ch: &Channel,
    queue: &str,
    params: &Params,
    n: u64,
    mut pacer: Option<Pacer>,
) -> Result<(), BoxError> {
    let props = BasicProperties::default().with_delivery_mode(2);
    let mut body = vec![b'x'; params.size.max(if pacer.is_some() { 8 } else { 0 })];
    let mut in_flight = VecDeque::with_capacity(params.window);
    let mut sent = 0;
    while sent < n {
        let until = match pacer.as_mut() {
            Some(pacer) => pacer.due(n).await,
            None => n,
        };
        while sent < until {
            if in_flight.len() >= params.window
                && let Some(oldest) = in_flight.pop_front()
            {
                confirmed(oldest).await?;
            }
            if pacer.is_some() {
                stamp(&mut body);
            }
            let confirm = ch
                .basic_publish(
                    "".into(),
                    queue.into(),
                    BasicPublishOptions::default(),
                    &body,
                    props.clone(),
                )
                .await?;
            in_flight.push_back(confirm);
            sent += 1;
        }
    }
    for confirm in in_flight {
        confirmed(confirm).await?;
    }
    Ok(())
}

/// Receives `n` deliveries and settles them as `params.ack_batch` says; returns the latency of
/// each (empty unless `record_latency`).
pub(crate) async fn consume(
    consumer: &mut Consumer,
    params: &Params,
    n: u64,
    record_latency: bool,
) -> Result<Vec<u64>, BoxError> {
    let mut latencies = Vec::new();
    if record_latency {
        latencies.reserve(usize::try_from(n).unwrap_or(0));
    }
    for i in 1..=n {
        let delivery = consumer.next().await.ok_or("consumer ended early")??;
        if record_latency {
            latencies.push(latency_of(&delivery.data));
        }
        if let Some(multiple) = params.ack_now(i, n) {
            delivery.ack(BasicAckOptions { multiple }).await?;
        }
    }
    Ok(latencies)
}

/// Starts a consumer on `queue` with the configured prefetch.
pub(crate) async fn start_consumer(
    ch: &Channel,
    queue: &str,
    params: &Params,
) -> Result<Consumer, BoxError> {
    ch.basic_qos(params.prefetch, BasicQosOptions::default())
        .await?;
    let consumer = ch
        .basic_consume(
            queue.into(),
            "bench-consumer".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(consumer)
}

/// Runs one workload on `queue` (pre-filled by the parent for `consume`) and deletes it.
pub(crate) async fn run(workload: Workload, params: &Params, url: &str, queue: &str) -> RunOutcome {
    let (conn, ch) = open(url, queue).await?;
    let result = match workload {
        Workload::Publish => {
            ch.confirm_select(ConfirmSelectOptions::default()).await?;
            let meter = Meter::start();
            publish(&ch, queue, params, params.messages, None).await?;
            RunResult::new(NAME, "publish", params.messages, meter.stop())
        }
        Workload::Consume => {
            let meter = Meter::start();
            let mut consumer = start_consumer(&ch, queue, params).await?;
            consume(&mut consumer, params, params.messages, false).await?;
            let phase = meter.stop();
            drop(consumer);
            RunResult::new(NAME, "consume", params.messages, phase)
        }
        Workload::Both | Workload::Latency => {
            let latency = workload == Workload::Latency;
            let n = if latency {
                params.latency_messages()
            } else {
                params.messages
            };
            let (phase, latencies) = both(&conn, &ch, queue, params, n, latency).await?;
            let result = RunResult::new(NAME, workload.name(), n, phase);
            if latency {
                result.with_latencies(latencies)
            } else {
                result
            }
        }
    };
    ch.queue_delete(queue.into(), QueueDeleteOptions::default())
        .await?;
    conn.close(200, "OK".into()).await?;
    Ok(result)
}

/// Publishes on `ch` and consumes on a second channel of the same connection at once, until
/// `n` messages are consumed and every publish is confirmed.
async fn both(
    conn: &Connection,
    ch: &Channel,
    queue: &str,
    params: &Params,
    n: u64,
    latency: bool,
) -> Result<(Phase, Vec<u64>), BoxError> {
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let consumer_ch = conn.create_channel().await?;
    let mut consumer = start_consumer(&consumer_ch, queue, params).await?;
    let meter = Meter::start();
    let pacer = latency.then(|| Pacer::new(params.rate));
    let (published, consumed) = tokio::join!(
        publish(ch, queue, params, n, pacer),
        consume(&mut consumer, params, n, latency),
    );
    let phase = meter.stop();
    published?;
    let latencies = consumed?;
    drop(consumer);
    consumer_ch.close(200, "OK".into()).await?;
    Ok((phase, latencies))
}
