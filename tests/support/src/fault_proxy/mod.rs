//! A fault-injecting TCP proxy on 127.0.0.1, between a client under test and a real broker.
//!
//! Every accepted connection is forwarded to the upstream address until the test injects a
//! fault. Faults of the whole link:
//! [`FaultProxy::cut`] closes every link (the client sees EOF),
//! [`FaultProxy::reset`] aborts them (the client sees a connection reset),
//! [`FaultProxy::stall`] black-holes them (bytes are neither forwarded nor refused, so only
//! heartbeats can tell), and [`FaultProxy::refuse`] closes new connections at once.
//!
//! And Toxiproxy's "toxics", each on one [`Direction`] of every link (open and future), set
//! with [`FaultProxy::set_toxics`] (or the shorthands) and removed with
//! [`FaultProxy::clear_toxics`]:
//!
//! | toxic | what the bytes of that direction suffer |
//! | --- | --- |
//! | [`Toxics::latency`] | each chunk held `base ± jitter` (order kept, as TCP would) |
//! | [`Toxics::bandwidth`] | at most this many bytes per second |
//! | [`Toxics::slicer`] | cut into tiny segments written one by one with a pause between |
//! | [`Toxics::stalled`] | a one-way black hole: nothing forwarded that way, the other way flows (half-open) |
//! | [`Toxics::reset_after`] | once this many bytes went through a link that way, the link is reset (RST) |
//! | [`Toxics::timeout`] | data is swallowed (read and dropped) and the link closed after the duration; `Duration::ZERO` swallows forever |
//!
//! `tc netem` is not available on these machines, so latency and loss live here, in the
//! proxy; a real partition (a link taken down) is `scripts/netns-cluster`.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

/// One direction of a proxied link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client to broker (publishes, acks, the client's heartbeats).
    Upstream,
    /// Broker to client (deliveries, confirms, the broker's heartbeats).
    Downstream,
}

/// Cuts a direction's bytes into small segments (Toxiproxy's `slicer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slicer {
    /// Average segment size in bytes (at least 1).
    pub average_size: usize,
    /// Segments are `average_size ± size_variation` bytes, at random.
    pub size_variation: usize,
    /// Pause after each segment.
    pub delay: Duration,
}

/// The toxics on one direction; `Default` is none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Toxics {
    /// `(base, jitter)`: each chunk is delivered `base ± jitter` (uniform) after it was read,
    /// never before an earlier chunk.
    pub latency: Option<(Duration, Duration)>,
    /// Bytes per second.
    pub bandwidth: Option<u64>,
    /// Tiny segments.
    pub slicer: Option<Slicer>,
    /// Nothing is forwarded in this direction while set (nor read: the sender's TCP window
    /// fills up), the other direction flows: a half-open link.
    pub stalled: bool,
    /// After this many bytes in this direction (counted per link), the link is reset.
    pub reset_after: Option<u64>,
    /// Bytes in this direction are read and dropped; the link is closed this long after the
    /// toxic was set (or the link opened, if later). `Duration::ZERO`: never closed.
    pub timeout: Option<Duration>,
}

impl Toxics {
    /// No toxic.
    pub fn none() -> Self {
        Self::default()
    }

    /// True when no toxic is set.
    pub fn is_none(&self) -> bool {
        *self == Self::default()
    }
}

/// What the proxy does with traffic now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mode {
    /// Bumped by each cut or reset: links of an older cut end.
    cuts: u64,
    /// A reset aborts (RST) instead of closing.
    abort: bool,
    /// Links stop forwarding (but stay open) while set.
    stalled: bool,
    /// New connections are closed at once while set.
    refusing: bool,
    /// Toxics client to broker.
    up: Toxics,
    /// Toxics broker to client.
    down: Toxics,
    /// Bumped whenever toxics are set: a timeout's clock starts again.
    toxic_epoch: u64,
}

impl Mode {
    fn toxics(&self, dir: Direction) -> &Toxics {
        match dir {
            Direction::Upstream => &self.up,
            Direction::Downstream => &self.down,
        }
    }
}

/// Counters of a proxy, over every link.
#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicUsize,
    up_bytes: AtomicU64,
    down_bytes: AtomicU64,
    dropped_bytes: AtomicU64,
    resets_by_toxic: AtomicUsize,
    timeouts_closed: AtomicUsize,
}

/// A running proxy; stops accepting when dropped (links already open end with their sockets).
#[derive(Debug)]
pub struct FaultProxy {
    /// Where clients connect.
    addr: SocketAddr,
    /// The current mode, watched by every link.
    mode: watch::Sender<Mode>,
    /// Counters.
    counters: Arc<Counters>,
    /// The accept loop.
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy on an ephemeral port of 127.0.0.1 forwarding to `upstream` (`host:port`).
    pub async fn start(upstream: String) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (mode, _) = watch::channel(Mode {
            cuts: 0,
            abort: false,
            stalled: false,
            refusing: false,
            up: Toxics::none(),
            down: Toxics::none(),
            toxic_epoch: 0,
        });
        let counters = Arc::new(Counters::default());
        let task = tokio::spawn(link::accept_loop(
            listener,
            upstream,
            mode.clone(),
            counters.clone(),
        ));
        Ok(Self {
            addr,
            mode,
            counters,
            task,
        })
    }

    /// The proxy's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.counters.accepted.load(Ordering::SeqCst)
    }

    /// Bytes forwarded so far in `dir`, over every link.
    pub fn forwarded(&self, dir: Direction) -> u64 {
        match dir {
            Direction::Upstream => self.counters.up_bytes.load(Ordering::SeqCst),
            Direction::Downstream => self.counters.down_bytes.load(Ordering::SeqCst),
        }
    }

    /// Bytes swallowed by a [`Toxics::timeout`] so far.
    pub fn dropped(&self) -> u64 {
        self.counters.dropped_bytes.load(Ordering::SeqCst)
    }

    /// Links reset by [`Toxics::reset_after`] so far.
    pub fn toxic_resets(&self) -> usize {
        self.counters.resets_by_toxic.load(Ordering::SeqCst)
    }

    /// Links closed by [`Toxics::timeout`] so far.
    pub fn toxic_timeouts(&self) -> usize {
        self.counters.timeouts_closed.load(Ordering::SeqCst)
    }

    /// Closes every open link (FIN both ways).
    pub fn cut(&self) {
        self.mode.send_modify(|m| {
            m.cuts += 1;
            m.abort = false;
        });
    }

    /// Aborts every open link (RST to the client).
    pub fn reset(&self) {
        self.mode.send_modify(|m| {
            m.cuts += 1;
            m.abort = true;
        });
    }

    /// Black-holes open links while `on`: nothing is forwarded, nothing is closed.
    pub fn stall(&self, on: bool) {
        self.mode.send_modify(|m| m.stalled = on);
    }

    /// Closes new connections at once while `on` (a broker that is down).
    pub fn refuse(&self, on: bool) {
        self.mode.send_modify(|m| m.refusing = on);
    }

    /// Replaces the toxics of `dir`, on open links and new ones.
    pub fn set_toxics(&self, dir: Direction, toxics: Toxics) {
        self.mode.send_modify(|m| {
            match dir {
                Direction::Upstream => m.up = toxics,
                Direction::Downstream => m.down = toxics,
            }
            m.toxic_epoch += 1;
        });
    }

    /// The toxics of `dir` now.
    pub fn toxics(&self, dir: Direction) -> Toxics {
        *self.mode.borrow().toxics(dir)
    }

    /// Removes every toxic, both ways.
    pub fn clear_toxics(&self) {
        self.set_toxics(Direction::Upstream, Toxics::none());
        self.set_toxics(Direction::Downstream, Toxics::none());
    }

    /// Latency with jitter on `dir` (see [`Toxics::latency`]); other toxics of `dir` stay.
    pub fn latency(&self, dir: Direction, base: Duration, jitter: Duration) {
        let mut t = self.toxics(dir);
        t.latency = Some((base, jitter));
        self.set_toxics(dir, t);
    }

    /// A bandwidth limit on `dir` in bytes per second; other toxics of `dir` stay.
    pub fn bandwidth(&self, dir: Direction, bytes_per_second: u64) {
        let mut t = self.toxics(dir);
        t.bandwidth = Some(bytes_per_second);
        self.set_toxics(dir, t);
    }

    /// The slicer on `dir`; other toxics of `dir` stay.
    pub fn slicer(&self, dir: Direction, slicer: Slicer) {
        let mut t = self.toxics(dir);
        t.slicer = Some(slicer);
        self.set_toxics(dir, t);
    }

    /// A one-way stall of `dir` while `on` (a half-open link); other toxics of `dir` stay.
    pub fn stall_one_way(&self, dir: Direction, on: bool) {
        let mut t = self.toxics(dir);
        t.stalled = on;
        self.set_toxics(dir, t);
    }

    /// Resets each link once `bytes` more went through it in `dir` (counted from the link's
    /// start); other toxics of `dir` stay.
    pub fn reset_after(&self, dir: Direction, bytes: u64) {
        let mut t = self.toxics(dir);
        t.reset_after = Some(bytes);
        self.set_toxics(dir, t);
    }

    /// Swallows `dir`'s bytes and closes each link after `after` (never for zero).
    pub fn timeout(&self, dir: Direction, after: Duration) {
        let mut t = self.toxics(dir);
        t.timeout = Some(after);
        self.set_toxics(dir, t);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
        self.cut();
    }
}

mod link;
#[cfg(test)]
mod tests;
