//! The workloads with our client (`amqp-client`): publish futures ([`PublishConfirm`]) kept in a
//! window, a [`amqp_client::Consumer`] read with `recv`, each delivery settled with `ack` (or
//! `ack_multiple` every `--ack-batch`). The body is a `Bytes` cloned per publish (a reference
//! count, no copy), as `amqp-client/examples/throughput.rs` does.

use std::collections::VecDeque;

use amqp_client::amqp_codec::{BasicProperties, ShortStr};
use amqp_client::{
    Channel, Connection, ConnectionConfig, ConsumeOptions, Consumer, IoStats, PublishConfirm,
    PublishOptions, QosOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use bytes::Bytes;

use crate::Workload;
use crate::measure::{
    BoxError, IoPerMsg, Meter, Pacer, Params, Phase, RunOutcome, RunResult, latency_of, rss_kib,
    stamp,
};

/// The client's name in the table.
const NAME: &str = "ours";

/// Persistent (delivery mode 2) properties, the same for every client.
fn persistent() -> BasicProperties {
    BasicProperties::persistent()
}

/// Opens a connection (read batching off with `eager_reads`, ack coalescing off without
/// `coalesce_acks`) and a channel and declares the durable queue `queue`.
async fn open(url: &str, queue: &str, params: &Params) -> Result<(Connection, Channel), BoxError> {
    let mut config = ConnectionConfig::from_uri(url)?;
    config.coalesce_acks = params.coalesce_acks;
    if params.eager_reads {
        config.read_batching = None;
    }
    if let Some(bytes) = params.outbound_high_water {
        config.limits.outbound_high_water = bytes;
    }
    let conn = Connection::connect_with(config).await?;
    let ch = conn.open_channel().await?;
    let options = QueueDeclareOptions::default().with_durable();
    ch.queue_declare(queue, options).await?;
    Ok((conn, ch))
}

/// Fails unless the broker acked the publish.
async fn confirmed(confirm: PublishConfirm) -> Result<(), BoxError> {
    if confirm.await?.is_acked() {
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
    let props = persistent();
    let body = Bytes::from(vec![b'x'; params.size]);
    // The routing key as a `ShortStr` once: passing `&str` would copy it on every publish.
    let routing_key = ShortStr::try_from(queue)?;
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
            let body = if pacer.is_some() {
                let mut stamped = vec![b'x'; params.size.max(8)];
                stamp(&mut stamped);
                Bytes::from(stamped)
            } else {
                body.clone()
            };
            let confirm = ch
                .basic_publish("", &routing_key, PublishOptions::default(), &props, body)
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

/// What the consuming side gathers besides the deliveries themselves.
#[derive(Default)]
pub(crate) struct Gathered {
    /// Publish-to-consume latency of each delivery, ns (latency workload only).
    pub(crate) latencies: Vec<u64>,
    /// (messages consumed, RSS KiB), every `rss_every` messages (flat-memory mode only).
    pub(crate) rss: Vec<(u64, u64)>,
}

/// Receives `n` deliveries and settles them as `params.ack_batch` says.
pub(crate) async fn consume(
    consumer: &mut Consumer,
    params: &Params,
    n: u64,
    record_latency: bool,
    rss_every: Option<u64>,
) -> Result<Gathered, BoxError> {
    let mut out = Gathered::default();
    if record_latency {
        out.latencies.reserve(usize::try_from(n).unwrap_or(0));
    }
    for i in 1..=n {
        let delivery = consumer.recv().await.ok_or("consumer ended early")??;
        if record_latency {
            out.latencies.push(latency_of(&delivery.body));
        }
        match params.ack_now(i, n) {
            Some(false) => delivery.ack()?,
            Some(true) => delivery.ack_multiple()?,
            None => {}
        }
        if let Some(every) = rss_every
            && i.is_multiple_of(every)
        {
            out.rss.push((i, rss_kib()));
        }
    }
    Ok(out)
}

/// Starts a consumer on `queue` with the configured prefetch.
pub(crate) async fn start_consumer(
    ch: &Channel,
    queue: &str,
    params: &Params,
) -> Result<Consumer, BoxError> {
    ch.basic_qos(params.prefetch, QosOptions::default()).await?;
    Ok(ch.basic_consume(queue, ConsumeOptions::default()).await?)
}

/// Runs one workload on `queue` (pre-filled by the parent for `consume`) and deletes it.
pub(crate) async fn run(workload: Workload, params: &Params, url: &str, queue: &str) -> RunOutcome {
    let (conn, ch) = open(url, queue, params).await?;
    let io_before = conn.io_stats();
    let result = match workload {
        Workload::Publish => {
            ch.confirm_select().await?;
            let meter = Meter::start();
            publish(&ch, queue, params, params.messages, None).await?;
            RunResult::new(NAME, "publish", params.messages, meter.stop())
        }
        Workload::Consume => {
            let meter = Meter::start();
            let mut consumer = start_consumer(&ch, queue, params).await?;
            consume(&mut consumer, params, params.messages, false, None).await?;
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
            let (phase, gathered) = both(&conn, &ch, queue, params, n, latency, None).await?;
            let result = RunResult::new(NAME, workload.name(), n, phase);
            if latency {
                result.with_latencies(gathered.latencies)
            } else {
                result
            }
        }
    };
    let messages = result.messages;
    let result = result.with_io(io_per_msg(io_before, conn.io_stats(), messages));
    ch.queue_delete(queue, QueueDeleteOptions::default())
        .await?;
    conn.close().await?;
    Ok(result)
}

/// The socket calls between two snapshots, per message.
fn io_per_msg(before: IoStats, after: IoStats, messages: u64) -> IoPerMsg {
    let n = messages.max(1) as f64;
    let reads = after.reads - before.reads;
    let writes = after.writes - before.writes;
    let per = |bytes: u64, calls: u64| bytes as f64 / calls.max(1) as f64;
    IoPerMsg {
        reads: reads as f64 / n,
        writes: writes as f64 / n,
        bytes_per_read: per(after.bytes_read - before.bytes_read, reads),
        bytes_per_write: per(after.bytes_written - before.bytes_written, writes),
        batching_engaged: after.batching_engaged - before.batching_engaged,
    }
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
    rss_every: Option<u64>,
) -> Result<(Phase, Gathered), BoxError> {
    ch.confirm_select().await?;
    let consumer_ch = conn.open_channel().await?;
    let mut consumer = start_consumer(&consumer_ch, queue, params).await?;
    let meter = Meter::start();
    let pacer = latency.then(|| Pacer::new(params.rate));
    let (published, gathered) = tokio::join!(
        publish(ch, queue, params, n, pacer),
        consume(&mut consumer, params, n, latency, rss_every),
    );
    let phase = meter.stop();
    published?;
    let gathered = gathered?;
    drop(consumer);
    consumer_ch.close().await?;
    Ok((phase, gathered))
}

/// Pre-fills `queue` (declared durable) with `params.messages` persistent messages, every one
/// confirmed: the input of the consume workload, not measured.
pub(crate) async fn fill(url: &str, queue: &str, params: &Params) -> Result<(), BoxError> {
    let (conn, ch) = open(url, queue, params).await?;
    ch.confirm_select().await?;
    publish(&ch, queue, params, params.messages, None).await?;
    conn.close().await?;
    Ok(())
}

/// Deletes `queue` if it exists (cleanup after a failed run).
pub(crate) async fn delete_queue(url: &str, queue: &str) -> Result<(), BoxError> {
    let conn = Connection::connect(url).await?;
    let ch = conn.open_channel().await?;
    ch.queue_delete(queue, QueueDeleteOptions::default())
        .await?;
    conn.close().await?;
    Ok(())
}

/// Flat-memory mode: the publish-and-consume workload over `total` messages, sampling RSS every
/// `every` consumed messages. Returns the measured phase and the samples.
pub(crate) async fn flat_memory(
    url: &str,
    queue: &str,
    params: &Params,
    total: u64,
    every: u64,
) -> Result<(RunResult, Vec<(u64, u64)>), BoxError> {
    let (conn, ch) = open(url, queue, params).await?;
    let (phase, gathered) = both(&conn, &ch, queue, params, total, false, Some(every)).await?;
    ch.queue_delete(queue, QueueDeleteOptions::default())
        .await?;
    conn.close().await?;
    Ok((RunResult::new(NAME, "both", total, phase), gathered.rss))
}
