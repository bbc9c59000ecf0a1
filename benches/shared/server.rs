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

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use amqp_codec::methods::{
    BasicCancelOk, BasicConsumeOk, BasicDeliver, BasicGetEmpty, BasicGetOk, BasicQosOk,
    BasicRecoverOk, BasicReturn, ChannelCloseOk, ChannelFlowOk, ChannelOpenOk, ConfirmSelectOk,
    ConnectionClose, ConnectionCloseOk, ConnectionOpenOk, ConnectionStart, ConnectionTune,
    ConnectionUpdateSecretOk, ExchangeBindOk, ExchangeDeclareOk, ExchangeDeleteOk,
    ExchangeUnbindOk, QueueBindOk, QueueDeclareOk, QueueDeleteOk, QueuePurgeOk, QueueUnbindOk,
};
use amqp_codec::table::FieldTable;
use amqp_codec::{
    Assembled, BasicProperties, ContentAssembler, Frame, FrameDecoder, LongStr, Method, Outbound,
    ProtocolHeader, ReplyCode, ShortStr,
};
use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

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

impl Conn {
    /// A connection on `sock`.
    fn new(broker: Broker, sock: TcpStream) -> Self {
        let id = broker.next_conn.fetch_add(1, Ordering::Relaxed);
        Self {
            broker,
            id,
            sock: Some(sock),
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            out: Outbound::new(),
            decoder: FrameDecoder::new(),
            frame_max: FRAME_MAX,
            heartbeat: 0,
            channels: HashMap::new(),
            notify: Arc::new(Notify::new()),
            phase: Phase::Header,
        }
    }

    /// Serves the connection until it closes.
    async fn run(mut self) -> Result<(), ConnError> {
        let sock = self.sock.take().ok_or("no socket")?;
        let (mut rd, mut wr) = sock.into_split();
        let notify = self.notify.clone();
        let mut beat: Option<tokio::time::Interval> = None;
        let outcome = loop {
            if beat.is_none() && self.heartbeat > 0 {
                let period = Duration::from_millis(u64::from(self.heartbeat) * 500);
                beat = Some(tokio::time::interval_at(
                    tokio::time::Instant::now() + period,
                    period,
                ));
            }
            if self.phase == Phase::Closing && self.out.is_empty() {
                break Ok(());
            }
            let writing = !self.out.is_empty();
            tokio::select! {
                read = rd.read_buf(&mut self.rbuf) => {
                    match read {
                        Ok(0) => break Ok(()),
                        Ok(_) => {
                            if let Err(err) = self.on_input() {
                                break Err(err);
                            }
                        }
                        Err(err) => break Err(err.into()),
                    }
                    if self.rbuf.capacity() - self.rbuf.len() < READ_CHUNK / 4 {
                        self.rbuf.reserve(READ_CHUNK);
                    }
                }
                wrote = wr.write_buf(&mut self.out), if writing => {
                    if let Err(err) = wrote {
                        break Err(err.into());
                    }
                }
                () = notify.notified() => {}
                _ = async { beat.as_mut().expect("guarded").tick().await }, if beat.is_some() => {
                    self.out.push_heartbeat();
                }
            }
            if self.phase == Phase::Open {
                self.pump();
            }
        };
        // Unsettled deliveries go back to their queues.
        let mut requeue = Vec::new();
        for chan in self.channels.values_mut() {
            requeue.extend(chan.take_unacked());
        }
        self.forget_consumers();
        {
            let mut state = self.broker.lock();
            for (queue, mut message) in requeue.into_iter().rev() {
                message.redelivered = true;
                state.enqueue(&queue, message, true);
            }
        }
        if outcome.is_ok() {
            let _ = wr.write_all_buf(&mut self.out).await;
            let _ = wr.shutdown().await;
        }
        outcome
    }

    /// Removes every consumer of this connection from its queue.
    fn forget_consumers(&mut self) {
        let mut state = self.broker.lock();
        for chan in self.channels.values_mut() {
            for consumer in chan.consumers.drain(..) {
                if let Some(q) = state.queues.get_mut(&consumer.queue) {
                    q.consumers = q.consumers.saturating_sub(1);
                    if let Some(i) = q.listeners.iter().position(|(id, _)| *id == self.id) {
                        q.listeners.swap_remove(i);
                    }
                }
            }
        }
    }

    /// Decodes and handles every complete frame read, then sends the confirms they earned.
    fn on_input(&mut self) -> Result<(), ConnError> {
        let mut frames = 0;
        while let Some(frame) = self.decoder.decode(&mut self.rbuf)? {
            frames += 1;
            self.on_frame(frame)?;
            if self.phase == Phase::Closing {
                break;
            }
        }
        bump(&self.broker.stats.frames_in, frames);
        let mut confirms = 0;
        for (&id, chan) in &mut self.channels {
            if chan.confirm && chan.published > chan.confirmed {
                let multiple = chan.published - chan.confirmed > 1;
                self.out.push_ack(id, chan.published, multiple);
                chan.confirmed = chan.published;
                confirms += 1;
            }
        }
        bump(&self.broker.stats.confirm_frames, confirms);
        Ok(())
    }

    /// Queues a method frame.
    fn send(&mut self, channel: u16, method: &Method) -> Result<(), ConnError> {
        self.out.push_method(channel, method, self.frame_max)?;
        Ok(())
    }

    /// Closes the connection with `code`.
    fn close_connection(&mut self, code: ReplyCode, text: &str, cause: Option<&Method>) {
        let close = Method::ConnectionClose(ConnectionClose {
            reply_code: code.0,
            reply_text: ShortStr::try_from(text).unwrap_or_default(),
            class_id: cause.map_or(0, |m| m.class_id().0),
            method_id: cause.map_or(0, Method::method_id),
        });
        let _ = self.out.push_method(0, &close, 0);
        self.phase = Phase::Closing;
    }

    /// Closes channel `id` with `code`: its deliveries are requeued, its frames ignored until
    /// close-ok.
    fn close_channel(&mut self, id: u16, code: ReplyCode, text: &str, cause: &Method) {
        self.drop_channel_state(id);
        if let Some(chan) = self.channels.get_mut(&id) {
            chan.closing = true;
        }
        let close = Method::ChannelClose(amqp_codec::methods::ChannelClose {
            reply_code: code.0,
            reply_text: ShortStr::try_from(text).unwrap_or_default(),
            class_id: cause.class_id().0,
            method_id: cause.method_id(),
        });
        let _ = self.out.push_method(id, &close, self.frame_max);
    }

    /// Requeues channel `id`'s unsettled deliveries and removes its consumers.
    fn drop_channel_state(&mut self, id: u16) {
        let Some(chan) = self.channels.get_mut(&id) else {
            return;
        };
        let requeue = chan.take_unacked();
        let consumers: Vec<Consumer> = chan.consumers.drain(..).collect();
        let mut state = self.broker.lock();
        for (queue, mut message) in requeue.into_iter().rev() {
            message.redelivered = true;
            state.enqueue(&queue, message, true);
        }
        for consumer in consumers {
            if let Some(q) = state.queues.get_mut(&consumer.queue) {
                q.consumers = q.consumers.saturating_sub(1);
                if let Some(i) = q.listeners.iter().position(|(c, _)| *c == self.id) {
                    q.listeners.swap_remove(i);
                }
            }
        }
    }

    /// Handles one frame.
    fn on_frame(&mut self, frame: Frame) -> Result<(), ConnError> {
        match frame {
            Frame::ProtocolHeader(header) => {
                if self.phase != Phase::Header || header != ProtocolHeader::AMQP_0_9_1 {
                    self.out.push_protocol_header();
                    self.phase = Phase::Closing;
                    return Ok(());
                }
                let capabilities = [
                    "publisher_confirms",
                    "exchange_exchange_bindings",
                    "basic.nack",
                    "consumer_cancel_notify",
                    "connection.blocked",
                    "authentication_failure_close",
                    "per_consumer_qos",
                ]
                .into_iter()
                .fold(FieldTable::builder(), |b, name| b.insert(name, true))
                .build()?;
                let properties = FieldTable::builder()
                    .insert("product", "amqp-benches ceiling server")
                    .insert("version", "0.1.0")
                    .insert("platform", "Rust")
                    .insert("capabilities", capabilities)
                    .build()?;
                let start = Method::ConnectionStart(ConnectionStart {
                    version_major: 0,
                    version_minor: 9,
                    server_properties: properties,
                    mechanisms: LongStr::from("PLAIN AMQPLAIN"),
                    locales: LongStr::from("en_US"),
                });
                self.send(0, &start)?;
                self.phase = Phase::StartSent;
                Ok(())
            }
            Frame::Heartbeat => Ok(()),
            Frame::Method { channel: 0, method } => self.on_connection_method(method),
            Frame::Method { channel, .. }
            | Frame::Header { channel, .. }
            | Frame::Body { channel, .. }
                if self.phase != Phase::Open =>
            {
                let _ = channel;
                self.close_connection(ReplyCode::CHANNEL_ERROR, "not open", None);
                Ok(())
            }
            Frame::Method {
                channel,
                method: Method::ChannelOpen(_),
            } => {
                if self.channels.contains_key(&channel) || channel > CHANNEL_MAX {
                    self.close_connection(ReplyCode::CHANNEL_ERROR, "channel in use", None);
                    return Ok(());
                }
                self.channels.insert(channel, Chan::new());
                self.send(channel, &Method::ChannelOpenOk(ChannelOpenOk::default()))
            }
            other => {
                let channel = other.channel();
                let Some(chan) = self.channels.get_mut(&channel) else {
                    self.close_connection(ReplyCode::CHANNEL_ERROR, "channel not open", None);
                    return Ok(());
                };
                if chan.closing {
                    if let Frame::Method {
                        method: Method::ChannelCloseOk(_) | Method::ChannelClose(_),
                        ..
                    } = &other
                    {
                        let reply = matches!(
                            &other,
                            Frame::Method {
                                method: Method::ChannelClose(_),
                                ..
                            }
                        );
                        self.channels.remove(&channel);
                        if reply {
                            self.send(channel, &Method::ChannelCloseOk(ChannelCloseOk {}))?;
                        }
                    }
                    return Ok(());
                }
                match chan.assembler.push(other) {
                    Ok(None) => Ok(()),
                    Ok(Some(Assembled::Method(method))) => self.on_channel_method(channel, method),
                    Ok(Some(Assembled::Content(content))) => {
                        let body = content.body.into_bytes();
                        self.on_publish(channel, content.method, content.header.properties, body)
                    }
                    Ok(Some(Assembled::Discarded(_))) => {
                        let cause = Method::BasicPublish(Default::default());
                        self.close_channel(
                            channel,
                            ReplyCode::PRECONDITION_FAILED,
                            "message refused",
                            &cause,
                        );
                        Ok(())
                    }
                    Err(err) => {
                        self.close_connection(err.reply_code(), "bad content frames", None);
                        Ok(())
                    }
                }
            }
        }
    }

    /// Handles a method on channel 0.
    fn on_connection_method(&mut self, method: Method) -> Result<(), ConnError> {
        match (self.phase, &method) {
            (Phase::StartSent, Method::ConnectionStartOk(_)) => {
                let tune = Method::ConnectionTune(ConnectionTune {
                    channel_max: CHANNEL_MAX,
                    frame_max: FRAME_MAX,
                    heartbeat: 0,
                });
                self.send(0, &tune)?;
                self.phase = Phase::TuneSent;
            }
            (Phase::TuneSent, Method::ConnectionTuneOk(tune)) => {
                self.frame_max = match tune.frame_max {
                    0 => FRAME_MAX,
                    n => n.min(FRAME_MAX),
                };
                self.decoder.set_frame_max(self.frame_max);
                self.heartbeat = tune.heartbeat;
                self.phase = Phase::Opening;
            }
            (Phase::Opening, Method::ConnectionOpen(_)) => {
                self.send(0, &Method::ConnectionOpenOk(ConnectionOpenOk::default()))?;
                self.phase = Phase::Open;
            }
            (_, Method::ConnectionClose(_)) => {
                self.send(0, &Method::ConnectionCloseOk(ConnectionCloseOk {}))?;
                self.phase = Phase::Closing;
            }
            (_, Method::ConnectionCloseOk(_)) => self.phase = Phase::Closing,
            (Phase::Open, Method::ConnectionUpdateSecret(_)) => {
                self.send(
                    0,
                    &Method::ConnectionUpdateSecretOk(ConnectionUpdateSecretOk {}),
                )?;
            }
            (Phase::Open, Method::ConnectionBlocked(_) | Method::ConnectionUnblocked(_)) => {}
            _ => self.close_connection(
                ReplyCode::COMMAND_INVALID,
                "unexpected method",
                Some(&method),
            ),
        }
        Ok(())
    }

    /// A new server-made name with `prefix`.
    fn fresh_name(&self, prefix: &str) -> ShortStr {
        let mut state = self.broker.lock();
        state.names += 1;
        ShortStr::try_from(format!("{prefix}{}-{}", self.id, state.names)).unwrap_or_default()
    }

    /// Handles a method (without content) on an open channel.
    fn on_channel_method(&mut self, id: u16, method: Method) -> Result<(), ConnError> {
        let reply = match &method {
            Method::ChannelClose(_) => {
                self.drop_channel_state(id);
                self.channels.remove(&id);
                Some(Method::ChannelCloseOk(ChannelCloseOk {}))
            }
            Method::ChannelCloseOk(_) => None,
            Method::ChannelFlow(flow) => Some(Method::ChannelFlowOk(ChannelFlowOk {
                active: flow.active,
            })),
            Method::ChannelFlowOk(_) => None,
            Method::ExchangeDeclare(d) => {
                (!d.nowait).then_some(Method::ExchangeDeclareOk(ExchangeDeclareOk {}))
            }
            Method::ExchangeDelete(d) => {
                let mut state = self.broker.lock();
                state.bindings.retain(|(ex, _), _| *ex != d.exchange);
                (!d.nowait).then_some(Method::ExchangeDeleteOk(ExchangeDeleteOk {}))
            }
            Method::ExchangeBind(d) => {
                (!d.nowait).then_some(Method::ExchangeBindOk(ExchangeBindOk {}))
            }
            Method::ExchangeUnbind(d) => {
                (!d.nowait).then_some(Method::ExchangeUnbindOk(ExchangeUnbindOk {}))
            }
            Method::QueueDeclare(d) => {
                let name = if d.queue.is_empty() {
                    self.fresh_name("amq.gen-")
                } else {
                    d.queue.clone()
                };
                let mut state = self.broker.lock();
                let found = state.queues.contains_key(&name);
                if d.passive && !found {
                    drop(state);
                    self.close_channel(id, ReplyCode::NOT_FOUND, "no queue", &method);
                    return Ok(());
                }
                let q = state.queues.entry(name.clone()).or_default();
                let ok = QueueDeclareOk {
                    queue: name,
                    message_count: u32::try_from(q.messages.len()).unwrap_or(u32::MAX),
                    consumer_count: q.consumers,
                };
                (!d.nowait).then_some(Method::QueueDeclareOk(ok))
            }
            Method::QueueBind(d) => {
                let mut state = self.broker.lock();
                if !state.queues.contains_key(&d.queue) {
                    drop(state);
                    self.close_channel(id, ReplyCode::NOT_FOUND, "no queue", &method);
                    return Ok(());
                }
                let key = (d.exchange.clone(), d.routing_key.clone());
                let queues = state.bindings.entry(key).or_default();
                if !queues.contains(&d.queue) {
                    queues.push(d.queue.clone());
                }
                (!d.nowait).then_some(Method::QueueBindOk(QueueBindOk {}))
            }
            Method::QueueUnbind(d) => {
                let mut state = self.broker.lock();
                let key = (d.exchange.clone(), d.routing_key.clone());
                if let Some(queues) = state.bindings.get_mut(&key) {
                    queues.retain(|q| *q != d.queue);
                }
                Some(Method::QueueUnbindOk(QueueUnbindOk {}))
            }
            Method::QueuePurge(d) => {
                let mut state = self.broker.lock();
                let count = state
                    .queues
                    .get_mut(&d.queue)
                    .map_or(0, |q| std::mem::take(&mut q.messages).len());
                (!d.nowait).then_some(Method::QueuePurgeOk(QueuePurgeOk {
                    message_count: u32::try_from(count).unwrap_or(u32::MAX),
                }))
            }
            Method::QueueDelete(d) => {
                let mut state = self.broker.lock();
                let count = state
                    .queues
                    .remove(&d.queue)
                    .map_or(0, |q| q.messages.len());
                for queues in state.bindings.values_mut() {
                    queues.retain(|q| *q != d.queue);
                }
                drop(state);
                for chan in self.channels.values_mut() {
                    chan.consumers.retain(|c| c.queue != d.queue);
                }
                (!d.nowait).then_some(Method::QueueDeleteOk(QueueDeleteOk {
                    message_count: u32::try_from(count).unwrap_or(u32::MAX),
                }))
            }
            Method::BasicQos(q) => {
                if let Some(chan) = self.channels.get_mut(&id) {
                    chan.prefetch = q.prefetch_count;
                }
                Some(Method::BasicQosOk(BasicQosOk {}))
            }
            Method::BasicConsume(c) => {
                let tag = if c.consumer_tag.is_empty() {
                    self.fresh_name("amq.ctag-")
                } else {
                    c.consumer_tag.clone()
                };
                let mut state = self.broker.lock();
                let Some(q) = state.queues.get_mut(&c.queue) else {
                    drop(state);
                    self.close_channel(id, ReplyCode::NOT_FOUND, "no queue", &method);
                    return Ok(());
                };
                q.consumers += 1;
                q.listeners.push((self.id, self.notify.clone()));
                drop(state);
                if let Some(chan) = self.channels.get_mut(&id) {
                    chan.consumers.push(Consumer {
                        tag: tag.clone(),
                        queue: c.queue.clone(),
                        no_ack: c.no_ack,
                    });
                }
                (!c.nowait).then_some(Method::BasicConsumeOk(BasicConsumeOk { consumer_tag: tag }))
            }
            Method::BasicCancel(c) => {
                let removed = self.channels.get_mut(&id).and_then(|chan| {
                    let i = chan
                        .consumers
                        .iter()
                        .position(|x| x.consumer_tag_is(&c.consumer_tag))?;
                    Some(chan.consumers.remove(i))
                });
                if let Some(consumer) = removed {
                    let mut state = self.broker.lock();
                    if let Some(q) = state.queues.get_mut(&consumer.queue) {
                        q.consumers = q.consumers.saturating_sub(1);
                        if let Some(i) = q.listeners.iter().position(|(c, _)| *c == self.id) {
                            q.listeners.swap_remove(i);
                        }
                    }
                }
                (!c.nowait).then_some(Method::BasicCancelOk(BasicCancelOk {
                    consumer_tag: c.consumer_tag.clone(),
                }))
            }
            Method::BasicCancelOk(_) => None,
            Method::BasicGet(g) => {
                let mut state = self.broker.lock();
                let Some(q) = state.queues.get_mut(&g.queue) else {
                    drop(state);
                    self.close_channel(id, ReplyCode::NOT_FOUND, "no queue", &method);
                    return Ok(());
                };
                let Some(message) = q.messages.pop_front() else {
                    drop(state);
                    self.send(id, &Method::BasicGetEmpty(BasicGetEmpty::default()))?;
                    return Ok(());
                };
                let remaining = u32::try_from(q.messages.len()).unwrap_or(u32::MAX);
                drop(state);
                let chan = self.channels.get_mut(&id).ok_or("channel vanished")?;
                chan.last_tag += 1;
                let tag = chan.last_tag;
                let get_ok = Method::BasicGetOk(BasicGetOk {
                    delivery_tag: tag,
                    redelivered: message.redelivered,
                    exchange: message.exchange.clone(),
                    routing_key: message.routing_key.clone(),
                    message_count: remaining,
                });
                self.out.push_content(
                    id,
                    &get_ok,
                    &message.properties,
                    message.body.clone(),
                    self.frame_max,
                )?;
                if !g.no_ack {
                    chan.unacked.push_back(Unacked {
                        tag,
                        queue: g.queue.clone(),
                        message,
                        settled: false,
                    });
                }
                bump(&self.broker.stats.deliveries, 1);
                None
            }
            Method::BasicAck(a) => {
                let chan = self.channels.get_mut(&id).ok_or("channel vanished")?;
                let (settled, known) = chan.settle(a.delivery_tag, a.multiple);
                bump(&self.broker.stats.ack_frames, 1);
                bump(&self.broker.stats.acked, settled.len() as u64);
                if !known {
                    self.close_channel(
                        id,
                        ReplyCode::PRECONDITION_FAILED,
                        "unknown delivery tag",
                        &method,
                    );
                }
                None
            }
            Method::BasicNack(n) => {
                self.on_reject(id, n.delivery_tag, n.multiple, n.requeue, &method);
                None
            }
            Method::BasicReject(r) => {
                self.on_reject(id, r.delivery_tag, false, r.requeue, &method);
                None
            }
            Method::BasicRecover(_) | Method::BasicRecoverAsync(_) => {
                let chan = self.channels.get_mut(&id).ok_or("channel vanished")?;
                let requeue = chan.take_unacked();
                let mut state = self.broker.lock();
                for (queue, mut message) in requeue.into_iter().rev() {
                    message.redelivered = true;
                    state.enqueue(&queue, message, true);
                }
                matches!(method, Method::BasicRecover(_))
                    .then_some(Method::BasicRecoverOk(BasicRecoverOk {}))
            }
            Method::ConfirmSelect(c) => {
                if let Some(chan) = self.channels.get_mut(&id) {
                    chan.confirm = true;
                }
                (!c.nowait).then_some(Method::ConfirmSelectOk(ConfirmSelectOk {}))
            }
            _ => {
                self.close_connection(ReplyCode::NOT_IMPLEMENTED, "not implemented", Some(&method));
                None
            }
        };
        if let Some(reply) = reply {
            self.send(id, &reply)?;
        }
        Ok(())
    }

    /// basic.nack or basic.reject.
    fn on_reject(&mut self, id: u16, tag: u64, multiple: bool, requeue: bool, method: &Method) {
        let Some(chan) = self.channels.get_mut(&id) else {
            return;
        };
        let (settled, known) = chan.settle(tag, multiple);
        bump(&self.broker.stats.nack_frames, 1);
        if requeue {
            let mut state = self.broker.lock();
            for (queue, mut message) in settled.into_iter().rev() {
                message.redelivered = true;
                state.enqueue(&queue, message, true);
            }
        }
        if !known {
            self.close_channel(
                id,
                ReplyCode::PRECONDITION_FAILED,
                "unknown delivery tag",
                method,
            );
        }
    }

    /// A published message: route it, return it if mandatory and unroutable, count it for the
    /// channel's next confirm.
    fn on_publish(
        &mut self,
        id: u16,
        method: Method,
        properties: BasicProperties,
        body: Bytes,
    ) -> Result<(), ConnError> {
        let Method::BasicPublish(publish) = method else {
            self.close_connection(
                ReplyCode::COMMAND_INVALID,
                "content from a client must be a publish",
                None,
            );
            return Ok(());
        };
        bump(&self.broker.stats.publishes, 1);
        let mut state = self.broker.lock();
        let queues = state.route(&publish.exchange, &publish.routing_key);
        let routed = !queues.is_empty();
        let message = Message {
            exchange: publish.exchange.clone(),
            routing_key: publish.routing_key.clone(),
            properties,
            body,
            redelivered: false,
        };
        if let [only] = queues.as_slice() {
            state.enqueue(only, message.clone(), false);
        } else {
            for queue in &queues {
                state.enqueue(queue, message.clone(), false);
            }
        }
        drop(state);
        if !routed && publish.mandatory {
            let ret = Method::BasicReturn(BasicReturn {
                reply_code: ReplyCode::NO_ROUTE.0,
                reply_text: ShortStr::from_static("NO_ROUTE"),
                exchange: message.exchange,
                routing_key: message.routing_key,
            });
            self.out
                .push_content(id, &ret, &message.properties, message.body, self.frame_max)?;
        }
        if let Some(chan) = self.channels.get_mut(&id)
            && chan.confirm
        {
            chan.published += 1;
        }
        Ok(())
    }

    /// Streams ready messages to this connection's consumers, as far as their channels'
    /// prefetch and the output high-water mark allow.
    fn pump(&mut self) {
        if self.out.remaining() >= OUT_HIGH_WATER {
            return;
        }
        let broker = self.broker.clone();
        let mut state = broker.lock();
        let mut delivered = 0;
        for (&id, chan) in &mut self.channels {
            if chan.consumers.is_empty() || chan.closing {
                continue;
            }
            let n = chan.consumers.len();
            let mut idle = 0;
            // Round robin over the channel's consumers, one message each per turn.
            while idle < n && chan.credit() > 0 && self.out.remaining() < OUT_HIGH_WATER {
                let i = chan.turn % n;
                chan.turn = chan.turn.wrapping_add(1);
                let consumer = &chan.consumers[i];
                let Some(message) = state
                    .queues
                    .get_mut(&consumer.queue)
                    .and_then(|q| q.messages.pop_front())
                else {
                    idle += 1;
                    continue;
                };
                idle = 0;
                chan.last_tag += 1;
                let deliver = Method::BasicDeliver(BasicDeliver {
                    consumer_tag: consumer.tag.clone(),
                    delivery_tag: chan.last_tag,
                    redelivered: message.redelivered,
                    exchange: message.exchange.clone(),
                    routing_key: message.routing_key.clone(),
                });
                if self
                    .out
                    .push_content(
                        id,
                        &deliver,
                        &message.properties,
                        message.body.clone(),
                        self.frame_max,
                    )
                    .is_err()
                {
                    continue;
                }
                delivered += 1;
                if !consumer.no_ack {
                    let queue = consumer.queue.clone();
                    chan.unacked.push_back(Unacked {
                        tag: chan.last_tag,
                        queue,
                        message,
                        settled: false,
                    });
                }
            }
        }
        drop(state);
        bump(&self.broker.stats.deliveries, delivered);
    }
}

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
