//! When to batch reads: the sans-IO policy behind [`ReadBatching`], driven by the size and time
//! of each read and tested without a socket.
//!
//! Eager (low-water mark 1): every arrival wakes the driver. Once a window of `max_wait` has
//! brought `min_bytes / 8`, input is a stream: the pacer asks for the low-water mark
//! `min_bytes` and a read at the latest `max_wait` after the last one. That timed read is
//! the way out: when it finds less than `min_bytes / 16`, the stream has slowed and the pacer
//! asks for the mark 1 again. The gap between the two thresholds keeps a stream near the
//! boundary from switching on every read.

use std::time::Instant;

use crate::config::ReadBatching;

/// Share of `min_bytes` per `max_wait` that makes input a stream.
const ENTER_DIVISOR: u32 = 8;
/// Share of `min_bytes` below which a timed read ends batching.
const EXIT_DIVISOR: u32 = 16;

/// Decides the socket's receive low-water mark from the reads the driver makes.
#[derive(Debug)]
pub(crate) struct ReadPacer {
    /// The thresholds and the longest wait.
    config: ReadBatching,
    /// Whether the low-water mark is raised to `min_bytes`.
    batching: bool,
    /// Start of the window whose bytes decide whether input is a stream (eager only).
    window_start: Instant,
    /// Bytes read since `window_start` (eager only).
    window_bytes: u64,
    /// When the last read happened: the timed read is due `max_wait` after it (batching only).
    last_read: Instant,
}

/// How a read came about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadCause {
    /// The socket reported bytes (at least the low-water mark while batching).
    Ready,
    /// [`ReadPacer::deadline`] passed: whatever the kernel holds was read.
    Timer,
}

impl ReadPacer {
    /// Eager, with the window starting at `now`.
    pub(crate) fn new(config: ReadBatching, now: Instant) -> Self {
        Self {
            config,
            batching: false,
            window_start: now,
            window_bytes: 0,
            last_read: now,
        }
    }

    /// Records a read of `bytes` at `now`; returns the low-water mark to set when it changes.
    pub(crate) fn on_read(&mut self, now: Instant, bytes: usize, cause: ReadCause) -> Option<u32> {
        let bytes = bytes as u64;
        self.last_read = now;
        if self.batching {
            let floor = u64::from(self.config.min_bytes / EXIT_DIVISOR);
            if cause == ReadCause::Timer && bytes < floor {
                self.batching = false;
                self.window_start = now;
                self.window_bytes = 0;
                return Some(1);
            }
            return None;
        }
        if now.saturating_duration_since(self.window_start) >= self.config.max_wait {
            self.window_start = now;
            self.window_bytes = 0;
        }
        self.window_bytes += bytes;
        if self.window_bytes >= u64::from(self.config.min_bytes / ENTER_DIVISOR) {
            self.batching = true;
            return Some(self.config.min_bytes.max(1));
        }
        None
    }

    /// When the driver must read whatever the kernel holds (batching only).
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.batching.then(|| self.last_read + self.config.max_wait)
    }

    /// Whether the low-water mark is raised.
    #[cfg(test)]
    pub(crate) fn is_batching(&self) -> bool {
        self.batching
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn pacer(now: Instant) -> ReadPacer {
        ReadPacer::new(
            ReadBatching {
                min_bytes: 32 * 1024,
                max_wait: MS,
            },
            now,
        )
    }

    #[test]
    fn slow_input_stays_eager_and_has_no_deadline() {
        let t0 = Instant::now();
        let mut p = pacer(t0);
        // 3 KiB per millisecond, under the 4 KiB that make a stream.
        for i in 0..100u32 {
            let now = t0 + MS * i;
            assert_eq!(p.on_read(now, 1024, ReadCause::Ready), None);
            assert_eq!(p.on_read(now + MS / 2, 2048, ReadCause::Ready), None);
        }
        assert!(!p.is_batching());
        assert_eq!(p.deadline(), None);
    }

    #[test]
    fn a_stream_raises_the_mark_and_sets_a_deadline() {
        let t0 = Instant::now();
        let mut p = pacer(t0);
        let step = Duration::from_micros(100);
        // 1422-byte reads every 100 µs: 14 KiB per millisecond.
        assert_eq!(p.on_read(t0, 1422, ReadCause::Ready), None);
        assert_eq!(p.on_read(t0 + step, 1422, ReadCause::Ready), None);
        assert_eq!(
            p.on_read(t0 + step * 2, 1422, ReadCause::Ready),
            Some(32 * 1024)
        );
        assert!(p.is_batching());
        assert_eq!(p.deadline(), Some(t0 + step * 2 + MS));
        // Reads at the mark move the deadline and change nothing else.
        assert_eq!(p.on_read(t0 + step * 20, 40_000, ReadCause::Ready), None);
        assert_eq!(p.deadline(), Some(t0 + step * 20 + MS));
    }

    #[test]
    fn a_window_that_ends_forgets_its_bytes() {
        let t0 = Instant::now();
        let mut p = pacer(t0);
        assert_eq!(p.on_read(t0, 3000, ReadCause::Ready), None);
        // 3000 + 3000 would make a stream, but the first 3000 belong to the last window.
        assert_eq!(p.on_read(t0 + MS, 3000, ReadCause::Ready), None);
        assert!(!p.is_batching());
        assert_eq!(
            p.on_read(t0 + MS + MS / 2, 1200, ReadCause::Ready),
            Some(32 * 1024)
        );
    }

    #[test]
    fn a_thin_timed_read_lowers_the_mark_and_a_full_one_does_not() {
        let t0 = Instant::now();
        let mut p = pacer(t0);
        assert_eq!(p.on_read(t0, 8192, ReadCause::Ready), Some(32 * 1024));
        // A timed read at the exit floor (2 KiB) keeps batching...
        assert_eq!(p.on_read(t0 + MS, 2048, ReadCause::Timer), None);
        // ... a ready read is never thin (the kernel held min_bytes), whatever it says ...
        assert_eq!(p.on_read(t0 + MS * 2, 10, ReadCause::Ready), None);
        assert!(p.is_batching());
        // ... and a timed read under the floor, or of nothing, ends it.
        assert_eq!(p.on_read(t0 + MS * 3, 2047, ReadCause::Timer), Some(1));
        assert!(!p.is_batching());
        assert_eq!(p.deadline(), None);
        // Starting over needs a whole new stream's worth.
        assert_eq!(p.on_read(t0 + MS * 3, 4095, ReadCause::Ready), None);
        assert_eq!(p.on_read(t0 + MS * 3, 1, ReadCause::Ready), Some(32 * 1024));
    }

    #[test]
    fn any_sequence_of_reads_alternates_raise_and_lower_and_keeps_its_deadline() {
        let t0 = Instant::now();
        let mut p = pacer(t0);
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let (mut now, mut raised, mut changes) = (t0, false, 0);
        for _ in 0..100_000 {
            now += Duration::from_micros(next() % 3000);
            let bytes = (next() % 40_000) as usize;
            let cause = if next() % 2 == 0 {
                ReadCause::Ready
            } else {
                ReadCause::Timer
            };
            match p.on_read(now, bytes, cause) {
                Some(1) => {
                    assert!(raised, "lowered twice");
                    assert_eq!(cause, ReadCause::Timer, "only a timed read lowers the mark");
                    raised = false;
                    changes += 1;
                }
                Some(mark) => {
                    assert!(!raised, "raised twice");
                    assert_eq!(mark, 32 * 1024);
                    raised = true;
                    changes += 1;
                }
                None => {}
            }
            assert_eq!(p.is_batching(), raised);
            assert_eq!(p.deadline(), raised.then_some(now + MS));
        }
        assert!(changes > 100, "the sequence exercised both ways: {changes}");
    }
}
