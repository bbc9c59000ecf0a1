//! Read batching on a plain TCP socket: the pacer's decisions applied to the socket's
//! low-water mark, and the reads by the clock that go with them.

use std::io;
use std::time::Instant;

use bytes::BytesMut;
use tokio::net::TcpStream;

use super::read_pacer::{Flow, ReadCause, ReadPacer};
use crate::config::ReadBatching;
use crate::shared::Shared;

#[cfg(target_os = "linux")]
use super::low_water::LowWater;

/// Elsewhere than Linux the socket side does not exist, so a [`Batcher`] cannot be made.
#[cfg(not(target_os = "linux"))]
#[derive(Debug)]
enum LowWater {}

#[cfg(not(target_os = "linux"))]
impl LowWater {
    fn new(_: &TcpStream) -> io::Result<Self> {
        Err(io::ErrorKind::Unsupported.into())
    }
    fn set(&self, _: u32) -> io::Result<()> {
        match *self {}
    }
    fn read_now(&self, _: &mut BytesMut) -> io::Result<usize> {
        match *self {}
    }
}

/// One connection's read batching.
#[derive(Debug)]
pub(crate) struct Batcher {
    /// Decides the low-water mark and when to read by the clock.
    pacer: ReadPacer,
    /// Sets the mark, and reads whatever the kernel holds.
    socket: LowWater,
    /// When the mark was lowered back to 1: bytes that arrived under the old mark may wait
    /// without a readiness event, so one read is due at once.
    sweep_at: Option<Instant>,
    /// Raising the mark failed: this connection reads eagerly from now on.
    disabled: bool,
}

impl Batcher {
    /// Batching for `tcp`, eager until the input is a stream.
    pub(crate) fn new(tcp: &TcpStream, config: ReadBatching, now: Instant) -> io::Result<Self> {
        Ok(Self {
            pacer: ReadPacer::new(config, now),
            socket: LowWater::new(tcp)?,
            sweep_at: None,
            disabled: false,
        })
    }

    /// When the driver must read without waiting for readiness.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        let pacer = || self.pacer.deadline().filter(|_| !self.disabled);
        self.sweep_at.or_else(pacer)
    }

    /// The read by the clock: whatever the kernel holds. `WouldBlock` means it held nothing.
    pub(crate) fn read_due(&mut self, rbuf: &mut BytesMut, shared: &Shared) -> io::Result<usize> {
        let sweep = self.sweep_at.take().is_some();
        let read = self.socket.read_now(rbuf);
        let n = match &read {
            Ok(n) => *n,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => 0,
            Err(_) => return read,
        };
        // An empty sweep is no news; anything else is a timed read the pacer judges.
        if !sweep || n > 0 {
            self.after_read(n, ReadCause::Timer, shared)?;
        }
        read
    }

    /// Records a read of `n` bytes and applies the mark the pacer asks for. An error means
    /// the mark could not be lowered: bytes could then wait unseen, so the connection fails.
    pub(crate) fn after_read(
        &mut self,
        n: usize,
        cause: ReadCause,
        shared: &Shared,
    ) -> io::Result<()> {
        if self.disabled {
            return Ok(());
        }
        let was_batching = self.pacer.is_batching();
        let Some(mark) = self
            .pacer
            .on_read(Instant::now(), n, cause, || flow(shared))
        else {
            return Ok(());
        };
        if mark > 1 {
            match self.socket.set(mark) {
                // Counted when batching starts, not when a raised mark doubles or halves.
                Ok(()) if !was_batching => shared.io.batching_engaged(),
                Ok(()) => {}
                Err(err) => {
                    tracing::warn!(error = %err, "cannot set SO_RCVLOWAT; reading eagerly");
                    self.disabled = true;
                    // A mark raised before stays in the kernel, with no timed read to sweep
                    // under it any more: back to 1, or the connection fails.
                    if was_batching {
                        self.socket.set(1)?;
                        self.sweep_at = Some(Instant::now());
                    }
                }
            }
            return Ok(());
        }
        self.socket.set(1)?;
        self.sweep_at = Some(Instant::now());
        Ok(())
    }
}

/// The deliveries' size so far and the bytes the broker may send before it waits for our
/// acks: the tightest prefetch of a consumer that acks, times the bytes read per delivery.
/// Before the first delivery the size is unknown, and a limited consumer counts as a window
/// of 0.
fn flow(shared: &Shared) -> Flow {
    let (prefetch, deliveries) = {
        let mut core = shared.lock();
        (core.ack_window(), core.deliveries_received())
    };
    let per_delivery = shared
        .io
        .snapshot()
        .bytes_read
        .checked_div(deliveries)
        .unwrap_or(0);
    Flow {
        per_delivery,
        unacked_window: prefetch.map(|p| u64::from(p) * per_delivery),
    }
}
