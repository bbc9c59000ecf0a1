//! The proxy's data path: accepting clients, and the two pumps of each link with the toxics
//! of their direction applied.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;

use super::{Counters, Direction, Mode};

pub(super) async fn accept_loop(
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
