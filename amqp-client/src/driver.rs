//! The driver: one task per connection that owns the socket and moves bytes between it and
//! the sans-IO core.
//!
//! Each turn it lets the core handle due timers, takes everything queued since the last turn
//! as one batch, and waits for whichever comes first: bytes to read, room to write (one
//! vectored write per wake-up), a wake-up from a handle, or the next timer. It ends when the
//! core is finished and its last frames (a close or close-ok) are written.

use std::io::IoSlice;
use std::sync::Arc;
use std::time::{Duration, Instant};

use amqp_codec::Outbound;
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, WriteHalf};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::config::TlsOptions;
use crate::error::Error;
use crate::shared::Shared;
use crate::tls;

/// Bytes reserved for each read. Large enough for many small frames per syscall.
const READ_CHUNK: usize = 64 * 1024;
/// Most slices handed to one vectored write.
const MAX_IOVECS: usize = 64;
/// Bound on the final flush and shutdown after the core finished.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Starts a driver task on `tcp` (after a TLS handshake if `tls` is set); its handle ends
/// when the connection does.
pub(crate) async fn spawn(
    shared: Arc<Shared>,
    tcp: TcpStream,
    tls: Option<&TlsOptions>,
    host: &str,
) -> Result<JoinHandle<()>, Error> {
    // Frames are batched already; Nagle would only add latency.
    tcp.set_nodelay(true)?;
    Ok(match tls {
        Some(opts) => {
            let stream = tls::handshake(tcp, opts, host).await?;
            tokio::spawn(run(shared, stream))
        }
        None => tokio::spawn(run(shared, tcp)),
    })
}

/// Runs the connection until it ends.
pub(crate) async fn run<T>(shared: Arc<Shared>, io: T)
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
        let timer = async {
            match deadline {
                Some(t) => tokio::time::sleep_until(t.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            read = reader.read_buf(&mut rbuf), if read_open && !read_paused => {
                let now = Instant::now();
                let mut core = shared.lock();
                match read {
                    Ok(0) => {
                        read_open = false;
                        core.handle_eof();
                    }
                    Ok(_) => core.handle_input(&mut rbuf, now),
                    Err(err) => core.handle_io_error(err),
                }
            }
            written = write_some(&mut writer, &writing), if has_output => match written {
                Ok(n) => writing.advance(n),
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
