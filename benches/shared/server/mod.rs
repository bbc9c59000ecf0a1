//! A minimal AMQP 0-9-1 server on `amqp-codec` and tokio TCP: enough of RabbitMQ's behaviour
//! for the three clients to publish with confirms and consume with acks against it unchanged,
//! with everything in memory and nothing written to disk. It is the ceiling of the clients
//! bench (`--broker builtin`, `examples/ceiling.rs`): what each client does when the broker
//! costs next to nothing, and proof that the codec serves the server side too.
//!
//! What it does:
//! * handshake: protocol header, connection.start (PLAIN and AMQPLAIN, credentials not
//!   checked), tune (channel-max 2047, frame-max 131 072, heartbeat 0 proposed; if the client
//!   asks for heartbeats, one is sent every half interval and the client's are ignored), open;
//! * channels: open, close (unacked deliveries requeued at the head of their queue), flow;
//! * exchanges: declare, delete, bind, unbind (recorded; every exchange routes like `direct`);
//! * queues: declare (server-named if the name is empty; passive declare of a missing queue
//!   is channel error 404), bind, unbind, purge, delete;
//! * basic: qos (prefetch count per channel), consume (streams from memory, at most
//!   `prefetch` unacked per channel), cancel, publish (default exchange routes by queue
//!   name; `mandatory` and unroutable: basic.return 312), get, ack / nack / reject (single or
//!   multiple; requeue puts the message back at the head), recover;
//! * confirm.select: after each read of the socket, one basic.ack (multiple) per channel
//!   covers every publish read so far;
//! * anything else (tx, unknown methods) closes the connection with 540 NOT_IMPLEMENTED.
//!
//! It counts what it receives ([`Stats`]): publishes, confirm frames sent, deliveries, ack
//! frames and the messages they settle, so that a bench can show how many frames each client
//! sends per message.
//!
//! Here: the counts, the broker's queues and exchanges, channels and the accept loop. A
//! connection's life (handshake, reads and writes, connection methods, closes) is in
//! `conn.rs`; what the channels' methods do and the delivery pump, in `methods.rs`.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use amqp_codec::{BasicProperties, ContentAssembler, FrameDecoder, Outbound, ShortStr};
use bytes::{Buf, Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

mod conn;
mod methods;

/// The frame-max proposed in connection.tune.
const FRAME_MAX: u32 = 131_072;
/// The channel-max proposed in connection.tune (RabbitMQ's default).
const CHANNEL_MAX: u16 = 2047;
/// Largest message body accepted.
const MAX_BODY: u64 = 512 * 1024 * 1024;
/// Room made in the read buffer before each read.
const READ_CHUNK: usize = 64 * 1024;
/// Deliveries stop being encoded while this many bytes wait for the socket.
const OUT_HIGH_WATER: usize = 4 * 1024 * 1024;

/// What the server counted since it started (every connection).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct StatsSnapshot {
    /// Connections accepted.
    pub(crate) connections: u64,
    /// Messages published (basic.publish with its content).
    pub(crate) publishes: u64,
    /// basic.ack frames sent as publisher confirms.
    pub(crate) confirm_frames: u64,
    /// Messages delivered (basic.deliver and basic.get-ok).
    pub(crate) deliveries: u64,
    /// basic.ack frames received from consumers.
    pub(crate) ack_frames: u64,
    /// Deliveries those frames settled.
    pub(crate) acked: u64,
    /// basic.nack and basic.reject frames received.
    pub(crate) nack_frames: u64,
    /// Frames received, all kinds.
    pub(crate) frames_in: u64,
}

impl StatsSnapshot {
    /// What was counted between `earlier` and `self`.
    #[allow(dead_code)]
    pub(crate) fn since(self, earlier: Self) -> Self {
        Self {
            connections: self.connections - earlier.connections,
            publishes: self.publishes - earlier.publishes,
            confirm_frames: self.confirm_frames - earlier.confirm_frames,
            deliveries: self.deliveries - earlier.deliveries,
            ack_frames: self.ack_frames - earlier.ack_frames,
            acked: self.acked - earlier.acked,
            nack_frames: self.nack_frames - earlier.nack_frames,
            frames_in: self.frames_in - earlier.frames_in,
        }
    }
}

/// The live counters.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    /// See [`StatsSnapshot`].
    connections: AtomicU64,
    /// See [`StatsSnapshot`].
    publishes: AtomicU64,
    /// See [`StatsSnapshot`].
    confirm_frames: AtomicU64,
    /// See [`StatsSnapshot`].
    deliveries: AtomicU64,
    /// See [`StatsSnapshot`].
    ack_frames: AtomicU64,
    /// See [`StatsSnapshot`].
    acked: AtomicU64,
    /// See [`StatsSnapshot`].
    nack_frames: AtomicU64,
    /// See [`StatsSnapshot`].
    frames_in: AtomicU64,
}

/// Adds `n` to a counter.
fn bump(counter: &AtomicU64, n: u64) {
    if n > 0 {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

impl Stats {
    /// The counts now.
    pub(crate) fn snapshot(&self) -> StatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            connections: get(&self.connections),
            publishes: get(&self.publishes),
            confirm_frames: get(&self.confirm_frames),
            deliveries: get(&self.deliveries),
            ack_frames: get(&self.ack_frames),
            acked: get(&self.acked),
            nack_frames: get(&self.nack_frames),
            frames_in: get(&self.frames_in),
        }
    }
}

/// A message in a queue.
#[derive(Debug, Clone)]
struct Message {
    /// The exchange it was published to.
    exchange: ShortStr,
    /// Its routing key.
    routing_key: ShortStr,
    /// Its properties.
    properties: BasicProperties,
    /// Its body.
    body: Bytes,
    /// Whether it was delivered before.
    redelivered: bool,
}

/// A queue.
#[derive(Debug, Default)]
struct Queue {
    /// Ready messages, oldest first.
    messages: VecDeque<Message>,
    /// Consumers on it.
    consumers: u32,
    /// The connections consuming from it, woken when a message arrives (one entry per
    /// consumer).
    listeners: Vec<(u64, Arc<Notify>)>,
}

/// Everything connections share.
#[derive(Debug, Default)]
struct State {
    /// Queues by name.
    queues: HashMap<ShortStr, Queue>,
    /// Bindings: (exchange, routing key) to queues.
    bindings: HashMap<(ShortStr, ShortStr), Vec<ShortStr>>,
    /// Server-named queues and consumer tags made so far.
    names: u64,
}

impl State {
    /// The queues a publish to `exchange` with `key` goes to.
    fn route(&self, exchange: &ShortStr, key: &ShortStr) -> Vec<ShortStr> {
        if exchange.is_empty() {
            return if self.queues.contains_key(key) {
                vec![key.clone()]
            } else {
                Vec::new()
            };
        }
        self.bindings
            .get(&(exchange.clone(), key.clone()))
            .cloned()
            .unwrap_or_default()
    }

    /// Puts `message` at the tail (or, requeued, the head) of `queue` and wakes its consumers.
    fn enqueue(&mut self, queue: &ShortStr, message: Message, head: bool) {
        if let Some(q) = self.queues.get_mut(queue) {
            if head {
                q.messages.push_front(message);
            } else {
                q.messages.push_back(message);
            }
            for (_, notify) in &q.listeners {
                notify.notify_one();
            }
        }
    }
}

/// The server: shared state and counters. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub(crate) struct Broker {
    /// Queues and bindings.
    state: Arc<Mutex<State>>,
    /// Counters.
    stats: Arc<Stats>,
    /// Connection ids.
    next_conn: Arc<AtomicU64>,
}

impl Broker {
    /// A broker with no queues.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// The counters.
    pub(crate) fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// Messages ready in `queue`, if it exists.
    #[allow(dead_code)]
    pub(crate) fn queue_len(&self, queue: &str) -> Option<usize> {
        let name = ShortStr::try_from(queue).ok()?;
        self.lock().queues.get(&name).map(|q| q.messages.len())
    }

    /// The shared state, locked (a panicked connection task does not poison the others).
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Accepts connections on `listener` forever, one task each.
    pub(crate) async fn serve(self, listener: TcpListener) -> std::io::Result<()> {
        loop {
            let (sock, _) = listener.accept().await?;
            let _ = sock.set_nodelay(true);
            bump(&self.stats.connections, 1);
            let broker = self.clone();
            tokio::spawn(async move {
                if let Err(err) = Conn::new(broker, sock).run().await
                    && std::env::var_os("SERVER_DEBUG").is_some()
                {
                    eprintln!("server: connection ended: {err}");
                }
            });
        }
    }
}

/// A consumer on a channel.
#[derive(Debug)]
struct Consumer {
    /// Its tag.
    tag: ShortStr,
    /// Its queue.
    queue: ShortStr,
    /// Whether deliveries are settled on sending.
    no_ack: bool,
}

/// A delivery not yet settled.
#[derive(Debug)]
struct Unacked {
    /// Its delivery tag.
    tag: u64,
    /// The queue it came from, for a requeue.
    queue: ShortStr,
    /// The message, for a requeue.
    message: Message,
    /// Settled singly, out of order (still in the list until those before it are settled).
    settled: bool,
}

/// One open channel.
#[derive(Debug)]
struct Chan {
    /// Content frames into messages.
    assembler: ContentAssembler,
    /// Confirm mode.
    confirm: bool,
    /// Publishes received in confirm mode (the last confirm sequence number).
    published: u64,
    /// Publishes confirmed.
    confirmed: u64,
    /// basic.qos prefetch count (0: unlimited).
    prefetch: u16,
    /// Last delivery tag used.
    last_tag: u64,
    /// Deliveries not yet settled, in tag order.
    unacked: VecDeque<Unacked>,
    /// Of those, settled singly out of order.
    settled_early: usize,
    /// Consumers.
    consumers: Vec<Consumer>,
    /// Which consumer is served first at the next pump.
    turn: usize,
    /// We sent channel.close and wait for close-ok: everything else is dropped.
    closing: bool,
}

impl Chan {
    /// A fresh channel.
    fn new() -> Self {
        Self {
            assembler: ContentAssembler::new(MAX_BODY),
            confirm: false,
            published: 0,
            confirmed: 0,
            prefetch: 0,
            last_tag: 0,
            unacked: VecDeque::new(),
            settled_early: 0,
            consumers: Vec::new(),
            turn: 0,
            closing: false,
        }
    }

    /// Deliveries that may still be sent before the prefetch is reached.
    fn credit(&self) -> usize {
        if self.prefetch == 0 {
            usize::MAX
        } else {
            usize::from(self.prefetch).saturating_sub(self.unacked.len() - self.settled_early)
        }
    }

    /// Settles `tag` (and every earlier one if `multiple`); returns the messages settled and
    /// whether the tag was known.
    fn settle(&mut self, tag: u64, multiple: bool) -> (Vec<(ShortStr, Message)>, bool) {
        let mut out = Vec::new();
        if multiple {
            let known = tag == 0 || self.unacked.iter().any(|u| u.tag == tag);
            while let Some(front) = self.unacked.front() {
                if tag != 0 && front.tag > tag {
                    break;
                }
                let u = self.unacked.pop_front().expect("front exists");
                if u.settled {
                    self.settled_early -= 1;
                } else {
                    out.push((u.queue, u.message));
                }
            }
            return (out, known);
        }
        let Ok(i) = self.unacked.binary_search_by_key(&tag, |u| u.tag) else {
            return (out, false);
        };
        if self.unacked[i].settled {
            return (out, false);
        }
        if i == 0 {
            let u = self.unacked.pop_front().expect("front exists");
            out.push((u.queue, u.message));
            while self.unacked.front().is_some_and(|u| u.settled) {
                self.unacked.pop_front();
                self.settled_early -= 1;
            }
        } else {
            let u = &mut self.unacked[i];
            u.settled = true;
            out.push((u.queue.clone(), u.message.clone()));
            self.settled_early += 1;
        }
        (out, true)
    }

    /// Every unsettled delivery, taken out (for a requeue).
    fn take_unacked(&mut self) -> Vec<(ShortStr, Message)> {
        self.settled_early = 0;
        self.unacked
            .drain(..)
            .filter(|u| !u.settled)
            .map(|u| (u.queue, u.message))
            .collect()
    }
}

/// Where the handshake is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the protocol header.
    Header,
    /// Sent connection.start.
    StartSent,
    /// Sent connection.tune.
    TuneSent,
    /// Got tune-ok, waiting for connection.open.
    Opening,
    /// Open.
    Open,
    /// Sent or answered connection.close: the connection ends once the output is written.
    Closing,
}

/// Why a connection ends.
type ConnError = Box<dyn std::error::Error + Send + Sync>;

/// One client connection.
struct Conn {
    /// The shared broker.
    broker: Broker,
    /// This connection's id.
    id: u64,
    /// The socket (split when running).
    sock: Option<TcpStream>,
    /// Bytes read, not yet decoded.
    rbuf: BytesMut,
    /// Frames to write.
    out: Outbound,
    /// Splits frames.
    decoder: FrameDecoder,
    /// Negotiated frame-max.
    frame_max: u32,
    /// Heartbeat interval the client asked for (tune-ok), seconds.
    heartbeat: u16,
    /// Channels by number.
    channels: HashMap<u16, Chan>,
    /// Woken when a queue this connection consumes from gets a message.
    notify: Arc<Notify>,
    /// Handshake and close state.
    phase: Phase,
}

// `impl Conn`: `conn.rs` (the connection's life), `methods.rs` (the channels' methods).

impl Consumer {
    /// Whether this consumer has `tag`.
    fn consumer_tag_is(&self, tag: &ShortStr) -> bool {
        self.tag == *tag
    }
}

/// Binds 127.0.0.1:`port` (0: any free port) and serves there on the current runtime until
/// the process ends; returns the port.
#[allow(dead_code)]
pub(crate) async fn start(broker: Broker, port: u16) -> std::io::Result<u16> {
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        if let Err(err) = broker.serve(listener).await {
            eprintln!("server: accept failed: {err}");
        }
    });
    Ok(port)
}

/// Starts a broker on its own multi-threaded runtime (`threads` worker threads) in this
/// process, listening on 127.0.0.1:`port` (0: any free port). Returns the broker, its port,
/// and the runtime, which serves until dropped.
#[allow(dead_code)]
pub(crate) fn spawn_on_own_runtime(
    threads: usize,
    port: u16,
) -> std::io::Result<(Broker, u16, tokio::runtime::Runtime)> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .thread_name("ceiling-server")
        .enable_all()
        .build()?;
    let broker = Broker::new();
    let port = rt.block_on(start(broker.clone(), port))?;
    Ok((broker, port, rt))
}

/// Drains `out` to `sock`, for tests that drive the server by hand.
#[allow(dead_code)]
async fn flush(sock: &mut TcpStream, out: &mut Outbound) -> std::io::Result<()> {
    while out.has_remaining() {
        sock.write_buf(out).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> Message {
        Message {
            exchange: ShortStr::default(),
            routing_key: ShortStr::from_static("q"),
            properties: BasicProperties::default(),
            body: Bytes::from_static(b"x"),
            redelivered: false,
        }
    }

    fn chan_with(tags: u64) -> Chan {
        let mut chan = Chan::new();
        chan.prefetch = 10;
        for tag in 1..=tags {
            chan.unacked.push_back(Unacked {
                tag,
                queue: ShortStr::from_static("q"),
                message: message(),
                settled: false,
            });
        }
        chan.last_tag = tags;
        chan
    }

    #[test]
    fn single_and_multiple_acks_return_credit_once() {
        let mut chan = chan_with(5);
        assert_eq!(chan.credit(), 5);
        let (settled, known) = chan.settle(3, false);
        assert!(known && settled.len() == 1);
        assert_eq!(
            chan.credit(),
            6,
            "an out-of-order ack returns its credit at once"
        );
        assert!(!chan.settle(3, false).1, "a tag settled twice is unknown");
        let (settled, known) = chan.settle(4, true);
        assert!(known);
        assert_eq!(settled.len(), 3, "1, 2 and 4: 3 was settled already");
        assert_eq!(chan.credit(), 9);
        assert_eq!(chan.unacked.len(), 1);
        let (settled, _) = chan.settle(0, true);
        assert_eq!(settled.len(), 1, "multiple with tag 0 settles everything");
        assert_eq!(chan.credit(), 10);
        assert!(!chan.settle(42, false).1);
    }

    #[test]
    fn acks_in_order_drain_the_list() {
        let mut chan = chan_with(4);
        chan.settle(2, false);
        chan.settle(1, false);
        assert_eq!(chan.unacked.len(), 2, "1 and 2 left the list together");
        assert_eq!(chan.settled_early, 0);
        assert_eq!(chan.take_unacked().len(), 2);
    }
}
