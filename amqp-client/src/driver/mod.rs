//! The driver: one task per connection that owns the socket and moves bytes between it and
//! the sans-IO core.
//!
//! Each turn it lets the core handle due timers, takes everything queued since the last turn
//! as one batch, and waits for whichever comes first: bytes to read, room to write (one
//! vectored write per wake-up), a wake-up from a handle, or the next timer. It ends when the
//! core is finished and its last frames (a close or close-ok) are written.
//!
//! On a plain TCP socket (Linux) it also batches reads while the broker streams: see
//! [`ReadBatching`], `read_pacer.rs` for when and `low_water.rs` for how.

mod batcher;
#[cfg(target_os = "linux")]
mod low_water;
mod read_pacer;

use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use amqp_codec::Outbound;
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::config::{ConnectionConfig, ReadBatching, TlsOptions};
use crate::error::{ConnectStep, Error};
use crate::shared::Shared;
use crate::tls;
use batcher::Batcher;
use read_pacer::ReadCause;

/// Bytes reserved for each read once the connection streams. Large enough for many small
/// frames per syscall.
const READ_CHUNK: usize = 64 * 1024;
/// Bytes reserved for each read until a read fills its room: the handshake, heartbeats and
/// replies of an idle or quiet connection fit, and an idle connection does not hold 64 KiB.
const QUIET_READ_CHUNK: usize = 4 * 1024;
/// Most bytes reserved for each read, once frames are large: room for four frames of up to
/// 128 KiB (RabbitMQ's default frame-max) per read.
const LARGE_READ_CHUNK: usize = 512 * 1024;
/// Most slices handed to one vectored write.
const MAX_IOVECS: usize = 64;
/// Bound on the final flush and shutdown after the core finished.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Opens the TCP connection to `host:port` by `deadline`; a timeout names the step.
pub(crate) async fn connect_tcp(
    config: &ConnectionConfig,
    host: &str,
    port: u16,
    deadline: tokio::time::Instant,
) -> Result<TcpStream, Error> {
    match tokio::time::timeout_at(deadline, TcpStream::connect((host, port))).await {
        Ok(tcp) => Ok(tcp?),
        Err(_) => Err(Error::ConnectTimeout {
            address: crate::config::format_address(host, port),
            timeout: config.connection_timeout,
            step: ConnectStep::Tcp,
        }),
    }
}

/// Starts a driver task on `tcp` (after a TLS handshake if `tls` is set, bounded by
/// `deadline`); its handle ends when the connection does.
pub(crate) async fn spawn(
    shared: Arc<Shared>,
    tcp: TcpStream,
    tls: Option<&TlsOptions>,
    host: &str,
    deadline: tokio::time::Instant,
) -> Result<JoinHandle<()>, Error> {
    // Frames are batched already; Nagle would only add latency.
    tcp.set_nodelay(true)?;
    #[cfg(feature = "metrics")]
    crate::metrics_facade::Reporter::start(&shared);
    let (batching, span) = {
        let core = shared.lock();
        // The driver's span lives as long as the transport: a root of its own (the connect
        // span that may be current here ends long before), which follows from the current one.
        let span = tracing::debug_span!(
            parent: None,
            "driver",
            address = %core.config.address(),
            connection = core.config.connection_name.as_deref().unwrap_or(""),
        );
        span.follows_from(tracing::Span::current());
        (core.config.read_batching, span)
    };
    Ok(match tls {
        Some(opts) => {
            // TLS records sit between the socket and the frames: reads stay eager.
            let handshake = tls::handshake(tcp, opts, host);
            let stream = match tokio::time::timeout_at(deadline, handshake).await {
                Ok(stream) => stream?,
                Err(_) => {
                    let core = shared.lock();
                    return Err(Error::ConnectTimeout {
                        address: core.config.address(),
                        timeout: core.config.connection_timeout,
                        step: ConnectStep::Tls,
                    });
                }
            };
            tokio::spawn(run(shared, stream, None).instrument(span))
        }
        None => {
            let batcher = batching.and_then(|config| start_batching(&tcp, config));
            tokio::spawn(run(shared, tcp, batcher).instrument(span))
        }
    })
}

/// Read batching for `tcp`, or `None` (with a warning) where the socket cannot do it.
fn start_batching(tcp: &TcpStream, config: ReadBatching) -> Option<Batcher> {
    match Batcher::new(tcp, config, Instant::now()) {
        Ok(batcher) => Some(batcher),
        Err(err) => {
            tracing::warn!(error = %err, "read batching unavailable; reading eagerly");
            None
        }
    }
}

/// Runs the connection until it ends: each turn does the core's work under the lock, then
/// waits for the socket, a handle or the clock.
pub(crate) async fn run<T>(shared: Arc<Shared>, io: T, batcher: Option<Batcher>)
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (reader, writer) = tokio::io::split(io);
    let mut driver = Driver {
        shared,
        reader,
        writer,
        rbuf: BytesMut::with_capacity(QUIET_READ_CHUNK),
        read_chunk: QUIET_READ_CHUNK,
        writing: Outbound::new(),
        read_open: true,
        batcher,
        timer: Box::pin(tokio::time::sleep_until(tokio::time::Instant::now())),
        armed: false,
    };
    loop {
        let turn = driver.turn();
        if turn.finished {
            break;
        }
        driver.make_read_room(turn.next_frame);
        if !driver.timed_read(&turn) {
            driver.wait(&turn).await;
        }
    }
    driver.finish().await;
    // The last counts of this transport reach the `metrics` facade now, not a tick later.
    #[cfg(feature = "metrics")]
    driver.shared.report_metrics();
    tracing::debug!("connection driver finished");
}

/// What one turn found under the lock.
struct Turn {
    /// Frames wait to be written.
    has_output: bool,
    /// A full consumer buffer holds up reading.
    read_paused: bool,
    /// When the core's next timer is due.
    deadline: Option<Instant>,
    /// The connection is over.
    finished: bool,
    /// The octets from the front of the read buffer to the end of the frame begun in it, once
    /// its header is there (`Core::next_frame_len`: past a delivery's frames awaiting its body).
    next_frame: Option<usize>,
}

/// The driver's own state: the socket halves and its buffers.
struct Driver<T> {
    /// The connection's shared state.
    shared: Arc<Shared>,
    /// Where bytes come from.
    reader: ReadHalf<T>,
    /// Where frames go.
    writer: WriteHalf<T>,
    /// Bytes read and not yet decoded.
    rbuf: BytesMut,
    /// Room kept for each read: `QUIET_READ_CHUNK` until a read fills its room (the peer
    /// streams), then `READ_CHUNK`, or more for large frames (see `make_read_room`), for the
    /// connection's life.
    read_chunk: usize,
    /// Frames taken from the core, being written (one vectored write per wake-up).
    writing: Outbound,
    /// False once the peer closed its side.
    read_open: bool,
    /// Read batching on a plain TCP socket, when on.
    batcher: Option<Batcher>,
    /// The clock the driver waits on, kept across turns: a sleep made per turn registered in
    /// tokio's timer wheel and left it each time, two locks of the wheel per turn that
    /// contended with the other worker thread processing timers (strace -k on a consumer at
    /// prefetch 16: a futex pair per refill).
    timer: Pin<Box<tokio::time::Sleep>>,
    /// True while `timer` waits for its deadline. It is moved only to an earlier deadline: a
    /// later one lets it fire early, and the turn that finds nothing due arms it again.
    armed: bool,
}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Driver<T> {
    /// The core's work for this turn, under the lock: the bytes read since the last turn (and
    /// the frames the core kept while a full consumer paused reading), due timers, and everything
    /// queued to write. One lock per read: the read itself only counts the bytes (perf on a
    /// consumer at prefetch 16: decoding under a second lock right after the read made the
    /// woken consumer contend for it, two futex calls and a sleep per refill).
    fn turn(&mut self) -> Turn {
        let mut core = self.shared.lock();
        let now = Instant::now();
        // Input first: bytes that arrived at a heartbeat deadline prove the peer alive.
        if (!self.rbuf.is_empty() || core.has_input_left()) && !core.read_paused() {
            core.handle_input(&mut self.rbuf, now);
        }
        if core.poll_timeout().is_some_and(|t| t <= now) {
            core.handle_timeout(now);
        }
        Turn {
            has_output: core.take_output(&mut self.writing, now),
            read_paused: core.read_paused(),
            deadline: core.poll_timeout(),
            finished: core.is_finished(),
            next_frame: core.next_frame_len(&self.rbuf),
        }
    }

    /// Keeps room for a whole read in the buffer, and for the rest of the frame begun in it
    /// (`next_frame` bytes long, checked against the frame-max by the decoder): reserved in
    /// one step, the frame's first bytes are copied once when the buffer is renewed, not again
    /// each time they outgrow a chunk. Frames larger than a quarter of the chunk raise it (up
    /// to `LARGE_READ_CHUNK`), so that fewer of them straddle two buffers (each straddle copies
    /// the frame's first bytes) and a read brings several: with 64 KiB bodies and 64 KiB
    /// chunks, every body frame was copied in part (0.54 body copies per message).
    fn make_read_room(&mut self, next_frame: Option<usize>) {
        if let Some(len) = next_frame {
            let four_frames = len.saturating_mul(4).min(LARGE_READ_CHUNK);
            self.read_chunk = self.read_chunk.max(four_frames);
        }
        let rest = next_frame.map_or(0, |len| len.saturating_sub(self.rbuf.len()));
        if self.read_room() < rest.max(self.read_chunk / 4) {
            self.rbuf.reserve(rest + self.read_chunk);
        }
    }

    /// Room left in the read buffer.
    fn read_room(&self) -> usize {
        self.rbuf.capacity() - self.rbuf.len()
    }

    /// A read of `n` bytes filled the `room` there was: the peer streams, so reads get at
    /// least `READ_CHUNK` from now on.
    fn after_read(&mut self, n: usize, room: usize) {
        if n >= room {
            self.read_chunk = self.read_chunk.max(READ_CHUNK);
        }
    }

    /// True if reading is allowed now.
    fn can_read(&self, turn: &Turn) -> bool {
        self.read_open && !turn.read_paused
    }

    /// While batching, the bytes under the low-water mark are read by the clock: if that read
    /// is due, does it and returns true (the turn is over).
    fn timed_read(&mut self, turn: &Turn) -> bool {
        let due = self
            .read_deadline(turn)
            .is_some_and(|t| t <= Instant::now());
        let room = self.read_room();
        if due && let Some(b) = self.batcher.as_mut() {
            let read = b.read_due(&mut self.rbuf, &self.shared);
            if let Ok(n) = read {
                self.after_read(n, room);
            }
            read_done(&self.shared, read, &mut self.read_open);
        }
        due
    }

    /// When the batcher's timed read is due, if it reads by the clock now.
    fn read_deadline(&self, turn: &Turn) -> Option<Instant> {
        self.batcher
            .as_ref()
            .filter(|_| self.can_read(turn))
            .and_then(Batcher::deadline)
    }

    /// Waits for whichever comes first: bytes to read, room to write, a handle's wake-up, or
    /// the next timer; and hands what happened to the core.
    async fn wait(&mut self, turn: &Turn) {
        let deadline = match (turn.deadline, self.read_deadline(turn)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(t) = deadline.map(tokio::time::Instant::from_std)
            && (!self.armed || t < self.timer.deadline())
        {
            self.timer.as_mut().reset(t);
            self.armed = true;
        }
        let can_read = self.can_read(turn);
        let room = self.read_room();
        tokio::select! {
            read = self.reader.read_buf(&mut self.rbuf), if can_read => {
                if let Ok(n) = read {
                    self.after_read(n, room);
                }
                let read = match (self.batcher.as_mut(), read) {
                    (Some(b), Ok(n @ 1..)) => {
                        b.after_read(n, ReadCause::Ready, &self.shared).map(|()| n)
                    }
                    (_, read) => read,
                };
                read_done(&self.shared, read, &mut self.read_open);
            }
            written = write_some(&mut self.writer, &self.writing), if turn.has_output => {
                match written {
                    Ok(n) => {
                        self.shared.io.wrote(n);
                        self.writing.advance(n);
                    }
                    Err(err) => {
                        self.shared.lock().handle_io_error(err);
                        self.writing = Outbound::new();
                    }
                }
            }
            () = self.shared.driver_woken() => {}
            () = self.timer.as_mut(), if self.armed => self.armed = false,
        }
    }

    /// Writes what the core queued last (a close or close-ok), then closes the socket;
    /// bounded, since the peer may be gone.
    async fn finish(&mut self) {
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
            loop {
                self.shared
                    .lock()
                    .take_output(&mut self.writing, Instant::now());
                if self.writing.is_empty() {
                    break;
                }
                match write_some(&mut self.writer, &self.writing).await {
                    Ok(n) => self.writing.advance(n),
                    Err(_) => break,
                }
            }
            let _ = self.writer.shutdown().await;
        })
        .await;
    }
}

/// Counts a read's bytes, or hands the end of the stream or an error to the core; the bytes
/// themselves are decoded by the next [`Driver::turn`], under its lock. A `WouldBlock` (a
/// timed read that found nothing) is no news.
fn read_done(shared: &Shared, read: std::io::Result<usize>, read_open: &mut bool) {
    match read {
        Ok(0) => {
            shared.io.read(0);
            *read_open = false;
            shared.lock().handle_eof();
        }
        Ok(n) => shared.io.read(n),
        Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
        Err(err) => shared.lock().handle_io_error(err),
    }
}

/// One vectored write of the queued frames.
async fn write_some<T: AsyncWrite>(
    writer: &mut WriteHalf<T>,
    out: &Outbound,
) -> std::io::Result<usize> {
    let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
    let n = out.chunks_vectored(&mut slices);
    let written = writer.write_vectored(&slices[..n]).await?;
    if written == 0 {
        return Err(std::io::ErrorKind::WriteZero.into());
    }
    Ok(written)
}
