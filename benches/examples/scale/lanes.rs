//! One run's lanes for each client: every lane set up (channel, exclusive queue, confirms,
//! consumer), then all publish and consume at once; and the idle connections and channels
//! whose memory is measured.

use std::time::Duration;

use amqp_test_support::alloc_counter;
use futures_util::future::try_join_all;

use crate::measure::{self, BoxError, Meter, Params};
use crate::{Args, Client, Mode, amqprs, lapin, ours};

/// Parameters of every lane.
pub(super) fn lane_params(args: &Args, per_lane: u64) -> Params {
    Params {
        messages: per_lane,
        size: args.size,
        window: args.window.max(1).min(per_lane as usize).max(1),
        prefetch: args.prefetch,
        ack_batch: 1,
        rate: 1,
        latency_ms: 0,
        eager_reads: false,
        coalesce_acks: true,
        outbound_high_water: None,
    }
}

/// A unique exclusive-queue name for lane `i` of connection `c`.
pub(super) fn lane_queue(c: usize, i: usize) -> String {
    amqp_test_support::unique_name(&format!("scale-{c}-{i}"))
}

/// Our client: every lane set up (channel, exclusive queue, confirms, consumer), then all
/// publish and consume at once. Returns the RSS after setup and the measured phase.
pub(super) async fn ours_traffic(
    url: &str,
    conns: usize,
    lanes: usize,
    p: &Params,
) -> Result<(u64, measure::Phase, Option<u64>), BoxError> {
    use amqp_client::{Connection, QueueDeclareOptions};
    let mut connections = Vec::new();
    let mut set = Vec::new();
    for c in 0..conns {
        let conn = Connection::connect(url).await?;
        for i in 0..lanes {
            let ch = conn.open_channel().await?;
            let queue = lane_queue(c, i);
            let options = QueueDeclareOptions::default().with_exclusive();
            ch.queue_declare(&queue, options).await?;
            ch.confirm_select().await?;
            let consumer = ours::start_consumer(&ch, &queue, p).await?;
            set.push((ch, queue, consumer));
        }
        connections.push(conn);
    }
    let rss = measure::rss_kib();
    let calls = |cs: &[Connection]| -> u64 {
        cs.iter()
            .map(|c| {
                let io = c.io_stats();
                io.reads + io.writes
            })
            .sum()
    };
    let calls_before = calls(&connections);
    let meter = Meter::start();
    try_join_all(set.iter_mut().map(|(ch, queue, consumer)| async move {
        let (published, consumed) = tokio::join!(
            ours::publish(ch, queue, p, p.messages, None),
            ours::consume(consumer, p, p.messages, false, None),
        );
        published?;
        consumed?;
        Ok::<(), BoxError>(())
    }))
    .await?;
    let phase = meter.stop();
    let io_calls = calls(&connections) - calls_before;
    drop(set);
    for conn in connections {
        conn.close().await?;
    }
    Ok((rss, phase, Some(io_calls)))
}

/// lapin: as [`ours_traffic`].
pub(super) async fn lapin_traffic(
    url: &str,
    conns: usize,
    lanes: usize,
    p: &Params,
) -> Result<(u64, measure::Phase), BoxError> {
    use ::lapin::options::{ConfirmSelectOptions, QueueDeclareOptions};
    use ::lapin::types::FieldTable;
    let mut connections = Vec::new();
    let mut set = Vec::new();
    for c in 0..conns {
        let conn = lapin::connect(url).await?;
        for i in 0..lanes {
            let ch = conn.create_channel().await?;
            let queue = lane_queue(c, i);
            let options = QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            };
            ch.queue_declare(queue.as_str().into(), options, FieldTable::default())
                .await?;
            ch.confirm_select(ConfirmSelectOptions::default()).await?;
            let consumer = lapin::start_consumer(&ch, &queue, p).await?;
            set.push((ch, queue, consumer));
        }
        connections.push(conn);
    }
    let rss = measure::rss_kib();
    let meter = Meter::start();
    try_join_all(set.iter_mut().map(|(ch, queue, consumer)| async move {
        let (published, consumed) = tokio::join!(
            lapin::publish(ch, queue, p, p.messages, None),
            lapin::consume(consumer, p, p.messages, false),
        );
        published?;
        consumed?;
        Ok::<(), BoxError>(())
    }))
    .await?;
    let phase = meter.stop();
    drop(set);
    for conn in connections {
        conn.close(200, "OK".into()).await?;
    }
    Ok((rss, phase))
}

/// amqprs: as [`ours_traffic`] (its consumers run in amqprs's own tasks).
pub(super) async fn amqprs_traffic(
    url: &str,
    conns: usize,
    lanes: usize,
    p: &Params,
) -> Result<(u64, measure::Phase), BoxError> {
    use ::amqprs::channel::QueueDeclareArguments;
    let mut connections = Vec::new();
    let mut set = Vec::new();
    for c in 0..conns {
        let conn = amqprs::connect(url).await?;
        for i in 0..lanes {
            let ch = conn.open_channel(None).await?;
            let queue = lane_queue(c, i);
            let declare = QueueDeclareArguments::new(&queue).exclusive(true).finish();
            ch.queue_declare(declare).await?;
            let confirms = amqprs::confirm_mode(&ch).await?;
            let (_tag, done) = amqprs::start_consumer(&ch, &queue, p, p.messages, false).await?;
            set.push((ch, queue, confirms, Some(done)));
        }
        connections.push(conn);
    }
    let rss = measure::rss_kib();
    let meter = Meter::start();
    try_join_all(
        set.iter_mut()
            .map(|(ch, queue, confirms, done)| async move {
                let done = done.take().ok_or("lane used twice")?;
                let (published, consumed) = tokio::join!(
                    amqprs::publish(ch, confirms, queue, p, p.messages, None),
                    amqprs::consumed(done),
                );
                published?;
                consumed?;
                Ok::<(), BoxError>(())
            }),
    )
    .await?;
    let phase = meter.stop();
    for (ch, ..) in set {
        ch.close().await?;
    }
    for conn in connections {
        conn.close().await?;
    }
    Ok((rss, phase))
}

/// Connections and channels held open, idle, until measured.
enum Held {
    /// Ours.
    Ours(Vec<amqp_client::Connection>, Vec<amqp_client::Channel>),
    /// lapin.
    Lapin(Vec<::lapin::Connection>, Vec<::lapin::Channel>),
    /// amqprs.
    Amqprs(
        Vec<::amqprs::connection::Connection>,
        Vec<::amqprs::channel::Channel>,
    ),
}

impl Held {
    /// Nothing held yet, for `client`.
    fn new(client: Client) -> Self {
        match client {
            Client::Ours => Self::Ours(Vec::new(), Vec::new()),
            Client::Lapin => Self::Lapin(Vec::new(), Vec::new()),
            Client::Amqprs => Self::Amqprs(Vec::new(), Vec::new()),
        }
    }

    /// Opens `conns` more connections, then `chans` more channels on the last connection.
    async fn open(&mut self, url: &str, conns: usize, chans: usize) -> Result<(), BoxError> {
        match self {
            Self::Ours(cs, chs) => {
                for _ in 0..conns {
                    cs.push(amqp_client::Connection::connect(url).await?);
                }
                let conn = cs.last().ok_or("no connection")?;
                for _ in 0..chans {
                    chs.push(conn.open_channel().await?);
                }
            }
            Self::Lapin(cs, chs) => {
                for _ in 0..conns {
                    cs.push(lapin::connect(url).await?);
                }
                let conn = cs.last().ok_or("no connection")?;
                for _ in 0..chans {
                    chs.push(conn.create_channel().await?);
                }
            }
            Self::Amqprs(cs, chs) => {
                for _ in 0..conns {
                    cs.push(amqprs::connect(url).await?);
                }
                let conn = cs.last().ok_or("no connection")?;
                for _ in 0..chans {
                    chs.push(conn.open_channel(None).await?);
                }
            }
        }
        Ok(())
    }

    /// Closes everything.
    async fn close(self) -> Result<(), BoxError> {
        match self {
            Self::Ours(cs, chs) => {
                drop(chs);
                for c in cs {
                    c.close().await?;
                }
            }
            Self::Lapin(cs, chs) => {
                // A dropped lapin channel starts closing on its own, and a connection closed
                // meanwhile fails: close them first.
                for ch in chs {
                    ch.close(200, "OK".into()).await?;
                }
                for c in cs {
                    c.close(200, "OK".into()).await?;
                }
            }
            Self::Amqprs(cs, chs) => {
                for ch in chs {
                    ch.close().await?;
                }
                for c in cs {
                    c.close().await?;
                }
            }
        }
        Ok(())
    }
}

/// Opens `n` idle connections (or channels on one connection) after a first one (and its
/// first channels), and returns the RSS KiB and heap bytes each added.
pub(super) async fn idle(
    client: Client,
    url: &str,
    mode: Mode,
    n: usize,
) -> Result<(f64, f64), BoxError> {
    /// Channels opened before the baseline.
    const WARM: usize = 10;
    let channels = mode == Mode::IdleChannels;
    let mut held = Held::new(client);
    held.open(url, 1, if channels { WARM } else { 0 }).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (rss0, heap0) = (measure::rss_kib(), alloc_counter::process_snapshot());
    if channels {
        held.open(url, 0, n).await?;
    } else {
        held.open(url, n, 0).await?;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (rss1, heap1) = (measure::rss_kib(), alloc_counter::process_snapshot());
    let each = n.max(1) as f64;
    let rss = (rss1 as f64 - rss0 as f64) / each;
    let heap = heap1.since(heap0).bytes as f64 / each;
    held.close().await?;
    Ok((rss, heap))
}
