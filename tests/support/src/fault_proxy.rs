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

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;

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
        let task = tokio::spawn(accept_loop(
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

async fn accept_loop(
    listener: TcpListener,
    upstream: String,
    mode: watch::Sender<Mode>,
    counters: Arc<Counters>,
) {
    while let Ok((client, _)) = listener.accept().await {
        counters.accepted.fetch_add(1, Ordering::SeqCst);
        if mode.borrow().refusing {
            drop(client);
            continue;
        }
        let up = mode.subscribe();
        let down = mode.subscribe();
        let upstream = upstream.clone();
        let counters = counters.clone();
        tokio::spawn(async move {
            if let Ok(server) = TcpStream::connect(&upstream).await {
                link(client, server, up, down, counters).await;
            }
        });
    }
}

/// How a link ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// FIN.
    Close,
    /// RST to the client.
    Abort,
}

/// Forwards both ways until either side closes, a cut comes, or a toxic ends the link.
async fn link(
    client: TcpStream,
    server: TcpStream,
    up: watch::Receiver<Mode>,
    down: watch::Receiver<Mode>,
    counters: Arc<Counters>,
) {
    let start = up.borrow().cuts;
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let end = tokio::select! {
        e = pump(&mut cr, &mut sw, Direction::Upstream, up, start, &counters) => e,
        e = pump(&mut sr, &mut cw, Direction::Downstream, down, start, &counters) => e,
    };
    if let Ok(client) = cr.reunite(cw) {
        if end == End::Abort {
            // Linger 0 turns the close into a reset.
            let _ = client.set_zero_linger();
        }
        drop(client);
    }
    if let Ok(server) = sr.reunite(sw)
        && end == End::Abort
    {
        let _ = server.set_zero_linger();
    }
}

/// One direction of a link, with its toxics; returns how the link must end.
async fn pump(
    from: &mut OwnedReadHalf,
    to: &mut OwnedWriteHalf,
    dir: Direction,
    mut mode: watch::Receiver<Mode>,
    start: u64,
    counters: &Counters,
) -> End {
    let mut buf = vec![0u8; 64 * 1024];
    // Bytes forwarded on this link in this direction (for reset_after).
    let mut sent: u64 = 0;
    // Latency: when the previous chunk was delivered, so that order is kept.
    let mut last_delivery = Instant::now();
    // Timeout: the toxic epoch it was armed for and its deadline.
    let mut timeout: Option<(u64, Option<Instant>)> = None;
    let total = match dir {
        Direction::Upstream => &counters.up_bytes,
        Direction::Downstream => &counters.down_bytes,
    };
    loop {
        let now = *mode.borrow_and_update();
        if now.cuts != start {
            return if now.abort { End::Abort } else { End::Close };
        }
        let toxics = *now.toxics(dir);
        if now.stalled || toxics.stalled {
            if mode.changed().await.is_err() {
                return End::Close;
            }
            continue;
        }
        if let Some(after) = toxics.timeout {
            let deadline = match timeout {
                Some((epoch, deadline)) if epoch == now.toxic_epoch => deadline,
                _ => {
                    let d = (!after.is_zero()).then(|| Instant::now() + after);
                    timeout = Some((now.toxic_epoch, d));
                    d
                }
            };
            let never = std::future::pending::<()>();
            tokio::select! {
                n = from.read(&mut buf) => match n {
                    Ok(n) if n > 0 => {
                        counters.dropped_bytes.fetch_add(n as u64, Ordering::SeqCst);
                    }
                    _ => return End::Close,
                },
                () = async {
                    match deadline {
                        Some(d) => tokio::time::sleep_until(d).await,
                        None => never.await,
                    }
                } => {
                    counters.timeouts_closed.fetch_add(1, Ordering::SeqCst);
                    return End::Close;
                }
                changed = mode.changed() => if changed.is_err() { return End::Close },
            }
            continue;
        }
        timeout = None;
        let n = tokio::select! {
            n = from.read(&mut buf) => match n {
                Ok(n) if n > 0 => n,
                _ => return End::Close,
            },
            changed = mode.changed() => {
                if changed.is_err() { return End::Close }
                continue;
            }
        };
        // What goes through before a reset_after fires.
        let (n, reset) = match toxics.reset_after {
            Some(limit) if sent + n as u64 >= limit => (
                usize::try_from(limit.saturating_sub(sent)).unwrap_or(n),
                true,
            ),
            _ => (n, false),
        };
        if let Some((base, jitter)) = toxics.latency {
            let j = if jitter.is_zero() {
                Duration::ZERO
            } else {
                jitter.mul_f64(fastrand::f64() * 2.0)
            };
            let hold = (base + j).saturating_sub(jitter);
            let due = (Instant::now() + hold).max(last_delivery);
            tokio::time::sleep_until(due).await;
        }
        let mut rest = &buf[..n];
        while !rest.is_empty() {
            let size = match toxics.slicer {
                Some(s) => {
                    let lo = s.average_size.saturating_sub(s.size_variation).max(1);
                    let hi = (s.average_size + s.size_variation).max(lo);
                    fastrand::usize(lo..=hi).min(rest.len())
                }
                None => rest.len(),
            };
            // Under a bandwidth limit, pieces of at most 50 ms worth, each waiting its time
            // before it goes.
            let size = match toxics.bandwidth {
                Some(rate) => size.min(usize::try_from(rate / 20).unwrap_or(usize::MAX).max(1)),
                None => size,
            };
            let (piece, tail) = rest.split_at(size);
            if let Some(rate) = toxics.bandwidth {
                let due = Duration::from_secs_f64(piece.len() as f64 / rate.max(1) as f64);
                tokio::time::sleep(due).await;
            }
            if to.write_all(piece).await.is_err() {
                return End::Close;
            }
            total.fetch_add(piece.len() as u64, Ordering::SeqCst);
            sent += piece.len() as u64;
            rest = tail;
            let pause = toxics.slicer.map_or(Duration::ZERO, |s| s.delay);
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
        }
        last_delivery = Instant::now();
        if reset {
            counters.resets_by_toxic.fetch_add(1, Ordering::SeqCst);
            return End::Abort;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// An echo server on 127.0.0.1 (each connection echoes until EOF).
    async fn echo() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn proxied() -> (FaultProxy, TcpStream) {
        let proxy = FaultProxy::start(echo().await.to_string()).await.unwrap();
        let s = TcpStream::connect(proxy.addr()).await.unwrap();
        s.set_nodelay(true).unwrap();
        (proxy, s)
    }

    async fn read_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
        let mut out = vec![0; n];
        tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut out))
            .await
            .unwrap()
            .unwrap();
        out
    }

    #[tokio::test]
    async fn latency_holds_each_chunk_and_keeps_order() {
        let (proxy, mut s) = proxied().await;
        proxy.latency(
            Direction::Downstream,
            Duration::from_millis(100),
            Duration::from_millis(20),
        );
        let t = Instant::now();
        for i in 0..5u8 {
            s.write_all(&[i]).await.unwrap();
        }
        assert_eq!(read_n(&mut s, 5).await, vec![0, 1, 2, 3, 4]);
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(80), "{took:?}");
        proxy.clear_toxics();
        let t = Instant::now();
        s.write_all(b"x").await.unwrap();
        read_n(&mut s, 1).await;
        assert!(t.elapsed() < Duration::from_millis(50));
    }

    #[tokio::test]
    async fn bandwidth_limits_bytes_per_second() {
        let (proxy, mut s) = proxied().await;
        proxy.bandwidth(Direction::Upstream, 100_000);
        let t = Instant::now();
        s.write_all(&[7u8; 50_000]).await.unwrap();
        read_n(&mut s, 50_000).await;
        let took = t.elapsed();
        assert!(
            took >= Duration::from_millis(400) && took < Duration::from_secs(3),
            "{took:?}"
        );
    }

    #[tokio::test]
    async fn slicer_delivers_everything_in_tiny_pieces() {
        let (proxy, mut s) = proxied().await;
        proxy.slicer(
            Direction::Downstream,
            Slicer {
                average_size: 3,
                size_variation: 2,
                delay: Duration::from_millis(1),
            },
        );
        let data: Vec<u8> = (0..=255u8).cycle().take(600).collect();
        s.write_all(&data).await.unwrap();
        let t = Instant::now();
        // Small reads show the pieces: many reads for 600 bytes.
        let mut got = Vec::new();
        let mut reads = 0;
        let mut buf = [0u8; 4096];
        while got.len() < data.len() {
            let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0);
            got.extend_from_slice(&buf[..n]);
            reads += 1;
        }
        assert_eq!(got, data);
        assert!(reads > 20, "{reads} reads");
        assert!(t.elapsed() >= Duration::from_millis(100));
    }

    #[tokio::test]
    async fn a_one_way_stall_holds_one_direction_only() {
        let (proxy, mut s) = proxied().await;
        proxy.stall_one_way(Direction::Downstream, true);
        s.write_all(b"ping").await.unwrap();
        let mut b = [0u8; 4];
        let quiet = tokio::time::timeout(Duration::from_millis(300), s.read(&mut b)).await;
        assert!(quiet.is_err(), "nothing comes back while stalled");
        // Upstream flowed: the echo already has it.
        assert_eq!(proxy.forwarded(Direction::Upstream), 4);
        assert_eq!(proxy.forwarded(Direction::Downstream), 0);
        proxy.stall_one_way(Direction::Downstream, false);
        assert_eq!(read_n(&mut s, 4).await, b"ping");
    }

    #[tokio::test]
    async fn reset_after_n_bytes_forwards_exactly_n_then_resets() {
        let (proxy, mut s) = proxied().await;
        proxy.reset_after(Direction::Upstream, 10);
        s.write_all(b"0123456789abcdef").await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        let err = loop {
            match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
                .await
                .unwrap()
            {
                Ok(0) => break None,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => break Some(e.kind()),
            }
        };
        assert!(got.len() <= 10, "{got:?}");
        assert!(b"0123456789".starts_with(&got));
        assert_eq!(err, Some(io::ErrorKind::ConnectionReset));
        assert_eq!(proxy.toxic_resets(), 1);
        assert_eq!(proxy.forwarded(Direction::Upstream), 10);
    }

    #[tokio::test]
    async fn timeout_swallows_data_then_closes() {
        let (proxy, mut s) = proxied().await;
        proxy.timeout(Direction::Upstream, Duration::from_millis(300));
        let t = Instant::now();
        s.write_all(b"gone").await.unwrap();
        let mut b = [0u8; 8];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut b))
            .await
            .unwrap()
            .unwrap_or(0);
        assert_eq!(n, 0, "closed, nothing echoed");
        assert!(t.elapsed() >= Duration::from_millis(250));
        assert_eq!(proxy.dropped(), 4);
        assert_eq!(proxy.toxic_timeouts(), 1);
    }

    #[tokio::test]
    async fn cut_and_reset_still_end_every_link() {
        let (proxy, mut s) = proxied().await;
        s.write_all(b"a").await.unwrap();
        read_n(&mut s, 1).await;
        proxy.reset();
        let mut b = [0u8; 1];
        let r = tokio::time::timeout(Duration::from_secs(5), s.read(&mut b))
            .await
            .unwrap();
        assert!(
            matches!(r, Err(ref e) if e.kind() == io::ErrorKind::ConnectionReset)
                || matches!(r, Ok(0))
        );
        let mut s2 = TcpStream::connect(proxy.addr()).await.unwrap();
        s2.write_all(b"b").await.unwrap();
        read_n(&mut s2, 1).await;
        proxy.cut();
        let r = tokio::time::timeout(Duration::from_secs(5), s2.read(&mut b))
            .await
            .unwrap();
        assert!(matches!(r, Ok(0)), "{r:?}");
        assert_eq!(proxy.accepted(), 2);
    }
}
