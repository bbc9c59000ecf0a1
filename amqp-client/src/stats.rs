//! Counts for anyone watching a connection: what the driver did with the socket (how many
//! system calls a message costs), deliveries that could not simply be handed over, and what
//! happened to messages (published, confirmed, delivered, acked, ...).

use std::sync::Weak;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::shared::Shared;

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
    /// Times read batching engaged (see [`ReadBatching`](crate::ReadBatching)); a raised
    /// mark doubling or halving while batching does not count.
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

/// Deliveries a connection could not simply hand to a consumer, since it was made (across
/// recoveries). Each is accounted for: none is silently dropped.
///
/// ```no_run
/// # async fn demo(conn: amqp_client::Connection) {
/// let stats = conn.delivery_stats();
/// if stats.unreadable > 0 {
///     eprintln!("{} deliveries could not be read", stats.unreadable);
/// }
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeliveryStats {
    /// Deliveries (and basic.get replies) whose content was dropped, over
    /// `Limits::max_message_size` or with properties that do not parse, and handed to the
    /// application as [`Error::UnreadableDelivery`](crate::Error::UnreadableDelivery).
    pub unreadable: u64,
    /// Deliveries no consumer took (its consumer had ended or been dropped, or the broker
    /// named one never started), rejected with requeue so that they go to another consumer
    /// rather than wait unacknowledged until the channel closes.
    pub orphans_requeued: u64,
    /// Deliveries for a consumer tag the channel never knew, on a channel that has had a
    /// no-ack consumer: they may be no-ack deliveries, which the broker considers settled and
    /// does not let a client reject, so they were logged and left.
    pub orphans_ignored: u64,
}

/// What a connection did with messages since [`Connection::connect`](crate::Connection::connect),
/// over every channel it had and across recoveries: the counts a dashboard plots.
///
/// The counts are kept by the connection's core as it does the work (no atomics: it holds its
/// lock then anyway) and read under that lock, so a snapshot is consistent with itself.
///
/// ```no_run
/// # async fn demo(conn: amqp_client::Connection) {
/// let stats = conn.message_stats();
/// println!(
///     "{} published, {} confirmed, {} delivered, {} acked",
///     stats.published, stats.confirmed, stats.delivered, stats.acked
/// );
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MessageStats {
    /// Messages handed to the connection to publish (queued for the socket; a publish held
    /// back by flow control or recovery is counted when it is finally queued).
    pub published: u64,
    /// Publishes the broker acked (publisher confirms): it took responsibility for them.
    pub confirmed: u64,
    /// Publishes the broker nacked (publisher confirms): it could not take them.
    pub nacked: u64,
    /// Mandatory publishes the broker returned as unroutable (basic.return).
    pub returned: u64,
    /// Messages handed to the application: consumer deliveries and basic.get replies
    /// (unreadable ones included, which the application gets as
    /// [`Error::UnreadableDelivery`](crate::Error::UnreadableDelivery)).
    pub delivered: u64,
    /// Acks the application sent (one per call: an ack with `multiple` counts once).
    pub acked: u64,
    /// Nacks and rejects the application sent, with or without requeue (one per call).
    pub rejected: u64,
    /// Times automatic recovery brought the connection back after losing its transport.
    pub recoveries: u64,
}

impl MessageStats {
    /// Adds `other`'s counts to these (a retired channel's counts into the connection's).
    pub(crate) fn add(&mut self, other: &Self) {
        self.published += other.published;
        self.confirmed += other.confirmed;
        self.nacked += other.nacked;
        self.returned += other.returned;
        self.delivered += other.delivered;
        self.acked += other.acked;
        self.rejected += other.rejected;
        self.recoveries += other.recoveries;
    }

    /// How much each count grew since `earlier` (for reporting deltas to a metrics facade).
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            published: self.published.saturating_sub(earlier.published),
            confirmed: self.confirmed.saturating_sub(earlier.confirmed),
            nacked: self.nacked.saturating_sub(earlier.nacked),
            returned: self.returned.saturating_sub(earlier.returned),
            delivered: self.delivered.saturating_sub(earlier.delivered),
            acked: self.acked.saturating_sub(earlier.acked),
            rejected: self.rejected.saturating_sub(earlier.rejected),
            recoveries: self.recoveries.saturating_sub(earlier.recoveries),
        }
    }
}

impl std::ops::AddAssign for MessageStats {
    /// Adds `other`'s counts: the totals of several connections.
    fn add_assign(&mut self, other: Self) {
        self.add(&other);
    }
}

/// Reads a connection's counts without keeping the connection open: what a metrics endpoint
/// holds, which must not keep a connection alive after its last [`Connection`](crate::Connection)
/// handle is gone. Made by [`Connection::stats_handle`](crate::Connection::stats_handle).
///
/// ```no_run
/// # async fn demo(conn: amqp_client::Connection) {
/// let stats = conn.stats_handle();
/// if let Some(counts) = stats.message_stats() {
///     println!("{} delivered", counts.delivered);
/// }
/// drop(conn); // the connection closes: the handle does not hold it open
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct StatsHandle {
    /// The connection's shared state, while anything else keeps it (a handle or its driver).
    shared: Weak<Shared>,
}

impl StatsHandle {
    /// A handle on `shared`'s counts.
    pub(crate) fn new(shared: &std::sync::Arc<Shared>) -> Self {
        Self {
            shared: std::sync::Arc::downgrade(shared),
        }
    }

    /// The connection's message counts now, or `None` once the connection is gone (its last
    /// handle dropped and its driver finished).
    pub fn message_stats(&self) -> Option<MessageStats> {
        self.shared.upgrade().map(|s| s.lock().message_stats())
    }

    /// The connection's socket counts now, or `None` once the connection is gone.
    pub fn io_stats(&self) -> Option<IoStats> {
        self.shared.upgrade().map(|s| s.io.snapshot())
    }

    /// True while the connection is open (not while it is being recovered, nor once gone).
    pub fn is_connected(&self) -> bool {
        self.shared
            .upgrade()
            .is_some_and(|s| s.lock().closed_error().is_none())
    }
}
