//! The workloads with amqprs 2, in its documented idiom: publisher confirms arrive through a
//! [`ChannelCallback`] (`publish_ack`), which here publishes the confirmed count on a watch
//! channel that the publisher waits on as its window fills; deliveries go to an
//! [`AsyncConsumer`] that acks each one with `channel.basic_ack(..).await`.

use std::collections::BTreeSet;

use amqp_client::ConnectionConfig;
use amqprs::callbacks::ChannelCallback;
use amqprs::channel::{
    BasicAckArguments, BasicCancelArguments, BasicConsumeArguments, BasicPublishArguments,
    BasicQosArguments, Channel, ConfirmSelectArguments, QueueDeclareArguments,
    QueueDeleteArguments,
};
use amqprs::connection::{Connection, OpenConnectionArguments};
use amqprs::consumer::AsyncConsumer;
use amqprs::error::Error as AmqprsError;
use amqprs::{Ack, BasicProperties, Cancel, CloseChannel, Deliver, Nack, Return};
use async_trait::async_trait;
use tokio::sync::{oneshot, watch};

use crate::Workload;
use crate::measure::{
    BoxError, Meter, Pacer, Params, Phase, RunOutcome, RunResult, latency_of, stamp,
};

/// The client's name in the table.
const NAME: &str = "amqprs";

/// Opens a connection and a channel and declares the durable queue `queue`. The URL is parsed
/// with our client's parser (amqprs's own needs its `urispec` feature and does not
/// percent-decode the vhost).
async fn open(url: &str, queue: &str) -> Result<(Connection, Channel), BoxError> {
    let conn = connect(url).await?;
    let ch = conn.open_channel(None).await?;
    ch.queue_declare(QueueDeclareArguments::durable_client_named(queue))
        .await?;
    Ok((conn, ch))
}

/// Connects to `url` (parsed with our client's parser).
pub(crate) async fn connect(url: &str) -> Result<Connection, BoxError> {
    let config = ConnectionConfig::from_uri(url)?;
    let args = OpenConnectionArguments::new(
        &config.host,
        config.port,
        &config.username,
        config.password.expose(),
    )
    .virtual_host(&config.vhost)
    .finish();
    Ok(Connection::open(&args).await?)
}

/// Publisher confirms settled so far, as the callback publishes them.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Settled {
    /// Publishes acked or nacked.
    count: u64,
    /// Of those, nacked.
    nacked: u64,
}

/// Turns the broker's confirms (single or `multiple`) into a count of settled publishes.
struct ConfirmCallback {
    /// Every tag up to here is settled.
    floor: u64,
    /// Tags above `floor` settled singly, out of order.
    singles: BTreeSet<u64>,
    /// The running totals.
    settled: Settled,
    /// Where the publisher reads them.
    tx: watch::Sender<Settled>,
}

impl ConfirmCallback {
    /// Records the broker's ack or nack of `tag` (and of every earlier tag if `multiple`),
    /// counting each publish once, and publishes the new totals.
    fn settle(&mut self, tag: u64, multiple: bool, nack: bool) {
        let newly = if multiple {
            if tag <= self.floor {
                return;
            }
            let above = self.singles.split_off(&(tag + 1));
            let covered = std::mem::replace(&mut self.singles, above).len() as u64;
            let newly = tag - self.floor - covered;
            self.floor = tag;
            newly
        } else if tag > self.floor && self.singles.insert(tag) {
            1
        } else {
            0
        };
        while self.singles.remove(&(self.floor + 1)) {
            self.floor += 1;
        }
        self.settled.count += newly;
        if nack {
            self.settled.nacked += newly;
        }
        self.tx.send_replace(self.settled);
    }
}

#[async_trait]
impl ChannelCallback for ConfirmCallback {
    async fn close(&mut self, _: &Channel, close: CloseChannel) -> Result<(), AmqprsError> {
        eprintln!("amqprs: channel closed by the broker: {close}");
        Ok(())
    }
    async fn cancel(&mut self, _: &Channel, _: Cancel) -> Result<(), AmqprsError> {
        Ok(())
    }
    async fn flow(&mut self, _: &Channel, active: bool) -> Result<bool, AmqprsError> {
        Ok(active)
    }
    async fn publish_ack(&mut self, _: &Channel, ack: Ack) {
        self.settle(ack.delivery_tag(), ack.mutiple(), false);
    }
    async fn publish_nack(&mut self, _: &Channel, nack: Nack) {
        self.settle(nack.delivery_tag(), nack.multiple(), true);
    }
    async fn publish_return(&mut self, _: &Channel, _: Return, _: BasicProperties, _: Vec<u8>) {}
}

/// Puts `ch` in confirm mode; returns the receiving end of its confirm count.
pub(crate) async fn confirm_mode(ch: &Channel) -> Result<watch::Receiver<Settled>, BoxError> {
    let (tx, rx) = watch::channel(Settled::default());
    let callback = ConfirmCallback {
        floor: 0,
        singles: BTreeSet::new(),
        settled: Settled::default(),
        tx,
    };
    ch.register_callback(callback).await?;
    ch.confirm_select(ConfirmSelectArguments::default()).await?;
    Ok(rx)
}

/// Publishes `n` messages with at most `params.window` unconfirmed, and waits for every confirm.
/// With a `pacer`, publishes at its rate and stamps each body with the publish time.
pub(crate) async fn publish(
    ch: &Channel,
    confirms: &mut watch::Receiver<Settled>,
    queue: &str,
    params: &Params,
    n: u64,
    mut pacer: Option<Pacer>,
) -> Result<(), BoxError> {
    let props = BasicProperties::default().with_delivery_mode(2).finish();
    let args = BasicPublishArguments::new("", queue);
    let mut body = vec![b'x'; params.size.max(if pacer.is_some() { 8 } else { 0 })];
    let window = params.window as u64;
    let mut sent = 0;
    while sent < n {
        let until = match pacer.as_mut() {
            Some(pacer) => pacer.due(n).await,
            None => n,
        };
        while sent < until {
            if sent - confirms.borrow().count >= window {
                confirms.wait_for(|s| sent - s.count < window).await?;
            }
            if pacer.is_some() {
                stamp(&mut body);
            }
            ch.basic_publish(props.clone(), body.clone(), args.clone())
                .await?;
            sent += 1;
        }
    }
    let settled = *confirms.wait_for(|s| s.count >= n).await?;
    if settled.nacked > 0 {
        return Err(format!("{} publishes nacked by the broker", settled.nacked).into());
    }
    Ok(())
}

/// Counts deliveries, acks them as `params.ack_batch` says, and reports on `done` once `total`
/// arrived (with their latencies if `record_latency`).
struct BenchConsumer {
    /// Ack batching.
    params: Params,
    /// Deliveries to wait for.
    total: u64,
    /// Deliveries so far.
    count: u64,
    /// Whether to read the publish time out of each body.
    record_latency: bool,
    /// Publish-to-consume latency of each delivery, ns.
    latencies: Vec<u64>,
    /// Where to report completion (or the first failed ack); taken when used.
    done: Option<oneshot::Sender<Result<Vec<u64>, String>>>,
}

#[async_trait]
impl AsyncConsumer for BenchConsumer {
    async fn consume(
        &mut self,
        channel: &Channel,
        deliver: Deliver,
        _properties: BasicProperties,
        content: Vec<u8>,
    ) {
        self.count += 1;
        if self.record_latency {
            self.latencies.push(latency_of(&content));
        }
        if let Some(multiple) = self.params.ack_now(self.count, self.total) {
            let args = BasicAckArguments::new(deliver.delivery_tag(), multiple);
            if let Err(err) = channel.basic_ack(args).await
                && let Some(done) = self.done.take()
            {
                let _ = done.send(Err(format!("basic.ack failed: {err}")));
            }
        }
        if self.count == self.total
            && let Some(done) = self.done.take()
        {
            let _ = done.send(Ok(std::mem::take(&mut self.latencies)));
        }
    }
}

/// Starts a consumer of `n` messages on `queue` with the configured prefetch; returns its tag
/// and where it reports completion.
pub(crate) async fn start_consumer(
    ch: &Channel,
    queue: &str,
    params: &Params,
    n: u64,
    record_latency: bool,
) -> Result<(String, oneshot::Receiver<Result<Vec<u64>, String>>), BoxError> {
    ch.basic_qos(BasicQosArguments::new(0, params.prefetch, false))
        .await?;
    let (tx, rx) = oneshot::channel();
    let consumer = BenchConsumer {
        params: params.clone(),
        total: n,
        count: 0,
        record_latency,
        latencies: Vec::with_capacity(if record_latency {
            usize::try_from(n).unwrap_or(0)
        } else {
            0
        }),
        done: Some(tx),
    };
    let args = BasicConsumeArguments::new(queue, "bench-consumer")
        .manual_ack(true)
        .finish();
    let tag = ch.basic_consume(consumer, args).await?;
    Ok((tag, rx))
}

/// Waits for the consumer's report.
pub(crate) async fn consumed(
    rx: oneshot::Receiver<Result<Vec<u64>, String>>,
) -> Result<Vec<u64>, BoxError> {
    Ok(rx.await.map_err(|_| "consumer ended early")??)
}

/// Runs one workload on `queue` (pre-filled by the parent for `consume`) and deletes it.
pub(crate) async fn run(workload: Workload, params: &Params, url: &str, queue: &str) -> RunOutcome {
    let (conn, ch) = open(url, queue).await?;
    let result = match workload {
        Workload::Publish => {
            let mut confirms = confirm_mode(&ch).await?;
            let meter = Meter::start();
            publish(&ch, &mut confirms, queue, params, params.messages, None).await?;
            RunResult::new(NAME, "publish", params.messages, meter.stop())
        }
        Workload::Consume => {
            let meter = Meter::start();
            let (tag, done) = start_consumer(&ch, queue, params, params.messages, false).await?;
            consumed(done).await?;
            let phase = meter.stop();
            ch.basic_cancel(BasicCancelArguments::new(&tag)).await?;
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
    ch.queue_delete(QueueDeleteArguments::new(queue)).await?;
    ch.close().await?;
    conn.close().await?;
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
    let mut confirms = confirm_mode(ch).await?;
    let consumer_ch = conn.open_channel(None).await?;
    let (tag, done) = start_consumer(&consumer_ch, queue, params, n, latency).await?;
    let meter = Meter::start();
    let pacer = latency.then(|| Pacer::new(params.rate));
    // The consumer runs in amqprs's own task; this one publishes, then waits for it.
    let (published, latencies) = tokio::join!(
        publish(ch, &mut confirms, queue, params, n, pacer),
        consumed(done),
    );
    let phase = meter.stop();
    published?;
    let latencies = latencies?;
    consumer_ch
        .basic_cancel(BasicCancelArguments::new(&tag))
        .await?;
    consumer_ch.close().await?;
    Ok((phase, latencies))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn callback() -> (ConfirmCallback, watch::Receiver<Settled>) {
        let (tx, rx) = watch::channel(Settled::default());
        let callback = ConfirmCallback {
            floor: 0,
            singles: BTreeSet::new(),
            settled: Settled::default(),
            tx,
        };
        (callback, rx)
    }

    #[test]
    fn counts_single_and_multiple_confirms_once() {
        let (mut cb, rx) = callback();
        cb.settle(1, false, false);
        cb.settle(3, false, false); // out of order
        cb.settle(5, true, false); // covers 2, 4, 5
        assert_eq!(rx.borrow().count, 5);
        cb.settle(4, false, false); // already covered
        cb.settle(5, true, false);
        assert_eq!(rx.borrow().count, 5);
        cb.settle(7, true, true);
        assert_eq!((rx.borrow().count, rx.borrow().nacked), (7, 2));
        assert!(cb.singles.is_empty());
    }
}
