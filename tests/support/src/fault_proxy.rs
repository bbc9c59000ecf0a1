//! A fault-injecting TCP proxy on 127.0.0.1, between a client under test and a real broker.
//!
//! Every accepted connection is forwarded to the upstream address, byte for byte, until the
//! test injects a fault: [`FaultProxy::cut`] closes every link (the client sees EOF),
//! [`FaultProxy::reset`] aborts them (the client sees a connection reset),
//! [`FaultProxy::stall`] black-holes them (bytes are neither forwarded nor refused, so only
//! heartbeats can tell), and [`FaultProxy::refuse`] closes new connections at once.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

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
}

/// A running proxy; stops accepting when dropped (links already open end with their sockets).
#[derive(Debug)]
pub struct FaultProxy {
    /// Where clients connect.
    addr: SocketAddr,
    /// The current mode, watched by every link.
    mode: watch::Sender<Mode>,
    /// Connections accepted so far.
    accepted: Arc<AtomicUsize>,
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
        });
        let accepted = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(accept_loop(
            listener,
            upstream,
            mode.clone(),
            accepted.clone(),
        ));
        Ok(Self {
            addr,
            mode,
            accepted,
            task,
        })
    }

    /// The proxy's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
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
    accepted: Arc<AtomicUsize>,
) {
    while let Ok((client, _)) = listener.accept().await {
        accepted.fetch_add(1, Ordering::SeqCst);
        if mode.borrow().refusing {
            drop(client);
            continue;
        }
        let rx = mode.subscribe();
        let upstream = upstream.clone();
        tokio::spawn(async move {
            if let Ok(server) = TcpStream::connect(&upstream).await {
                link(client, server, rx).await;
            }
        });
    }
}

/// Forwards both ways until either side closes or a cut comes.
async fn link(client: TcpStream, server: TcpStream, mut mode: watch::Receiver<Mode>) {
    let start = mode.borrow().cuts;
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let mut up = vec![0u8; 64 * 1024];
    let mut down = vec![0u8; 64 * 1024];
    let abort = loop {
        let now = *mode.borrow_and_update();
        if now.cuts != start {
            break now.abort;
        }
        if now.stalled {
            if mode.changed().await.is_err() {
                break false;
            }
            continue;
        }
        tokio::select! {
            n = cr.read(&mut up) => match n {
                Ok(n) if n > 0 => if sw.write_all(&up[..n]).await.is_err() { break false },
                _ => break false,
            },
            n = sr.read(&mut down) => match n {
                Ok(n) if n > 0 => if cw.write_all(&down[..n]).await.is_err() { break false },
                _ => break false,
            },
            changed = mode.changed() => if changed.is_err() { break false },
        }
    };
    if let Ok(client) = cr.reunite(cw) {
        if abort {
            // Linger 0 turns the close into a reset.
            let _ = client.set_zero_linger();
        }
        drop(client);
    }
}
