//! Counts of what the driver did with the socket, for anyone asking how many system calls a
//! message costs.

use std::sync::atomic::{AtomicU64, Ordering};

/// What a connection's socket has done since [`Connection::connect`](crate::Connection::connect),
/// across recoveries. Each read and each write is one system call.
///
/// ```no_run
/// # async fn demo(conn: amqp_client::Connection) {
/// let stats = conn.io_stats();
/// println!("{} reads, {} writes", stats.reads, stats.writes);
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoStats {
    /// Reads that returned bytes or the end of the stream.
    pub reads: u64,
    /// Bytes read.
    pub bytes_read: u64,
    /// Writes (each one vectored write of everything queued).
    pub writes: u64,
    /// Bytes written.
    pub bytes_written: u64,
    /// Times read batching engaged (see [`ReadBatching`](crate::ReadBatching)).
    pub batching_engaged: u64,
}

/// The live counters, bumped by the driver only (relaxed: each is a tally, not a sync point).
#[derive(Debug, Default)]
pub(crate) struct IoCounters {
    /// See [`IoStats::reads`].
    reads: AtomicU64,
    /// See [`IoStats::bytes_read`].
    bytes_read: AtomicU64,
    /// See [`IoStats::writes`].
    writes: AtomicU64,
    /// See [`IoStats::bytes_written`].
    bytes_written: AtomicU64,
    /// See [`IoStats::batching_engaged`].
    batching_engaged: AtomicU64,
}

impl IoCounters {
    /// One read of `bytes` (0 for the end of stream).
    pub(crate) fn read(&self, bytes: usize) {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.bytes_read.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// One write of `bytes`.
    pub(crate) fn wrote(&self, bytes: usize) {
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.bytes_written
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Read batching engaged.
    pub(crate) fn batching_engaged(&self) {
        self.batching_engaged.fetch_add(1, Ordering::Relaxed);
    }

    /// The counts now.
    pub(crate) fn snapshot(&self) -> IoStats {
        IoStats {
            reads: self.reads.load(Ordering::Relaxed),
            bytes_read: self.bytes_read.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
            bytes_written: self.bytes_written.load(Ordering::Relaxed),
            batching_engaged: self.batching_engaged.load(Ordering::Relaxed),
        }
    }
}
