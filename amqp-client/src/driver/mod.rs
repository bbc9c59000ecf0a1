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
use std::sync::Arc;
use std::time::{Duration, Instant};

use amqp_codec::Outbound;
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, WriteHalf};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::config::{ConnectionConfig, ReadBatching, TlsOptions};
use crate::error::{ConnectStep, Error};
use crate::shared::Shared;
use crate::tls;
use batcher::Batcher;
use read_pacer::ReadCause;

/// Bytes reserved for each read. Large enough for many small frames per syscall.
const READ_CHUNK: usize = 64 * 1024;
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
    let batching = shared.lock().config.read_batching;
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
            tokio::spawn(run(shared, stream, None))
        }
        None => {
            let batcher = batching.and_then(|config| start_batching(&tcp, config));
            tokio::spawn(run(shared, tcp, batcher))
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

/// Runs the connection until it ends.
pub(crate) async fn run<T>(shared: Arc<Shared>, io: T, mut batcher: Option<Batcher>)
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut reader, mut writer) = tokio::io::split(io);
    let mut rbuf = BytesMut::with_capacity(READ_CHUNK);
    let mut writing = Outbound::new();
    let mut read_open = true;
    loop {
        let (has_output, read_paused, deadline, finished) = {
            let mut core = shared.lock();
            let now = Instant::now();
            if core.poll_timeout().is_some_and(|t| t <= now) {
                core.handle_timeout(now);
            }
            // Frames left in the buffer while a full consumer paused reading.
            if !rbuf.is_empty() && !core.read_paused() {
                core.handle_input(&mut rbuf, now);
            }
            let has_output = core.take_output(&mut writing, now);
            (
                has_output,
                core.read_paused(),
                core.poll_timeout(),
                core.is_finished(),
            )
        };
        if finished {
            break;
        }
        if rbuf.capacity() - rbuf.len() < READ_CHUNK / 4 {
            rbuf.reserve(READ_CHUNK);
        }
        let can_read = read_open && !read_paused;
        // While batching, the bytes under the low-water mark are read by the clock.
        let read_deadline = batcher
            .as_ref()
            .filter(|_| can_read)
            .and_then(Batcher::deadline);
        if read_deadline.is_some_and(|t| t <= Instant::now()) {
            if let Some(b) = batcher.as_mut() {
                let read = b.read_due(&mut rbuf, &shared);
                read_done(&shared, &mut rbuf, read, &mut read_open);
            }
            continue;
        }
        let deadline = match (deadline, read_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let timer = async {
            match deadline {
                Some(t) => tokio::time::sleep_until(t.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            read = reader.read_buf(&mut rbuf), if can_read => {
                let read = match (batcher.as_mut(), read) {
                    (Some(b), Ok(n @ 1..)) => b.after_read(n, ReadCause::Ready, &shared).map(|()| n),
                    (_, read) => read,
                };
                read_done(&shared, &mut rbuf, read, &mut read_open);
            }
            written = write_some(&mut writer, &writing), if has_output => match written {
                Ok(n) => {
                    shared.io.wrote(n);
                    writing.advance(n);
                }
                Err(err) => {
                    shared.lock().handle_io_error(err);
                    writing = Outbound::new();
                }
            },
            () = shared.driver_woken() => {}
            () = timer => {}
        }
    }
    // Write what the core queued last (close or close-ok), then close the socket; bounded,
    // since the peer may be gone.
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
        loop {
            shared.lock().take_output(&mut writing, Instant::now());
            if writing.is_empty() {
                break;
            }
            match write_some(&mut writer, &writing).await {
                Ok(n) => writing.advance(n),
                Err(_) => break,
            }
        }
        let _ = writer.shutdown().await;
    })
    .await;
    tracing::debug!("connection driver finished");
}

/// Hands the outcome of a read to the core: bytes, the end of the stream or an error. A
/// `WouldBlock` (a timed read that found nothing) is no news.
fn read_done(
    shared: &Shared,
    rbuf: &mut BytesMut,
    read: std::io::Result<usize>,
    read_open: &mut bool,
) {
    if matches!(&read, Err(err) if err.kind() == std::io::ErrorKind::WouldBlock) {
        return;
    }
    let now = Instant::now();
    let mut core = shared.lock();
    match read {
        Ok(0) => {
            shared.io.read(0);
            *read_open = false;
            core.handle_eof();
        }
        Ok(n) => {
            shared.io.read(n);
            core.handle_input(rbuf, now);
        }
        Err(err) => core.handle_io_error(err),
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
