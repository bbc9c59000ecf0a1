//! When to batch reads: the sans-IO policy behind [`ReadBatching`], driven by the size and time
//! of each read and tested without a socket.
//!
//! Eager (low-water mark 1): every arrival wakes the driver. Once a window of `max_wait` has
//! brought `min_bytes / 8`, input is a stream: the pacer asks for the low-water mark
//! `min_bytes` and a read at the latest `max_wait` after the last one. That timed read is
//! the way out: when it finds less than `min_bytes / 16`, the stream has slowed and the pacer
//! asks for the mark 1 again. The gap between the two thresholds keeps a stream near the
//! boundary from switching on every read.
//!
//! The mark never exceeds half of what the broker may send before it waits for our acks (its
//! consumers' prefetch, in bytes): above that, the kernel would hold bytes back that no more
//! bytes will follow until we ack, and every batch would wait for the clock. When half the
//! window is under `min_bytes / 8`, reads stay eager.

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
    /// Start of the window whose bytes decide whether input is a stream (eager only).
    window_start: Instant,
    /// Bytes read since `window_start` (eager only).
    window_bytes: u64,
    /// The low-water mark asked for: 1 while eager, above 1 while batching.
    mark: u32,
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
            window_start: now,
            window_bytes: 0,
            mark: 1,
            last_read: now,
        }
    }

    /// Records a read of `bytes` at `now`; returns the low-water mark to set when it changes.
    /// `unacked_window` tells how many bytes the broker may send before it waits for acks
    /// (`None`: no limit); it is asked only when the mark may change.
    pub(crate) fn on_read(
        &mut self,
        now: Instant,
        bytes: usize,
        cause: ReadCause,
        unacked_window: impl FnOnce() -> Option<u64>,
    ) -> Option<u32> {
        let bytes = bytes as u64;
        self.last_read = now;
        if self.is_batching() {
            if cause != ReadCause::Timer {
                return None;
            }
            let floor = u64::from(self.config.min_bytes / EXIT_DIVISOR);
            let too_high = || unacked_window().is_some_and(|w| w / 2 < u64::from(self.mark));
            if bytes < floor || too_high() {
                self.mark = 1;
                self.restart_window(now);
                return Some(1);
            }
            return None;
        }
        if now.saturating_duration_since(self.window_start) >= self.config.max_wait {
            self.restart_window(now);
        }
        self.window_bytes += bytes;
        let stream = u64::from(self.config.min_bytes / ENTER_DIVISOR);
        if self.window_bytes < stream {
            return None;
        }
        // A new window either way: a refused stream is judged again a window later.
        self.restart_window(now);
        let cap = unacked_window().map_or(u64::MAX, |w| w / 2);
        let mark = u64::from(self.config.min_bytes).min(cap);
        if mark < stream.max(2) {
            return None;
        }
        self.mark = u32::try_from(mark).unwrap_or(u32::MAX);
        Some(self.mark)
    }

    /// Starts the window that decides whether input is a stream afresh at `now`.
    fn restart_window(&mut self, now: Instant) {
        self.window_start = now;
        self.window_bytes = 0;
    }

    /// When the driver must read whatever the kernel holds (batching only).
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.is_batching()
            .then(|| self.last_read + self.config.max_wait)
    }

    /// Whether the low-water mark is raised.
    pub(crate) fn is_batching(&self) -> bool {
        self.mark > 1
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// No consumer's prefetch limits what the broker sends.
    fn no_limit() -> Option<u64> {
        None
    }

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
            assert_eq!(p.on_read(now, 1024, ReadCause::Ready, no_limit), None);
            assert_eq!(
                p.on_read(now + MS / 2, 2048, ReadCause::Ready, no_limit),
                None
            );
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
        assert_eq!(p.on_read(t0, 1422, ReadCause::Ready, no_limit), None);
        assert_eq!(p.on_read(t0 + step, 1422, ReadCause::Ready, no_limit), None);
        assert_eq!(
            p.on_read(t0 + step * 2, 1422, ReadCause::Ready, no_limit),
            Some(32 * 1024)
        );
        assert!(p.is_batching());
        assert_eq!(p.deadline(), Some(t0 + step * 2 + MS));
        // Reads at the mark move the deadline and change nothing else.
        assert_eq!(
            p.on_read(t0 + step * 20, 40_000, ReadCause::Ready, no_limit),
            None
        );
        assert_eq!(p.deadline(), Some(t0 + step * 20 + MS));
    }

    #[test]
    fn a_window_that_ends_forgets_its_bytes() {
        let t0 = Instant::now();
        let mut p = pacer(t0);
        assert_eq!(p.on_read(t0, 3000, ReadCause::Ready, no_limit), None);
        // 3000 + 3000 would make a stream, but the first 3000 belong to the last window.
        assert_eq!(p.on_read(t0 + MS, 3000, ReadCause::Ready, no_limit), None);
        assert!(!p.is_batching());
        assert_eq!(
            p.on_read(t0 + MS + MS / 2, 1200, ReadCause::Ready, no_limit),
            Some(32 * 1024)
        );
    }

    #[test]
    fn a_thin_timed_read_lowers_the_mark_and_a_full_one_does_not() {
        let t0 = Instant::now();
        let mut p = pacer(t0);
        assert_eq!(
            p.on_read(t0, 8192, ReadCause::Ready, no_limit),
            Some(32 * 1024)
        );
        // A timed read at the exit floor (2 KiB) keeps batching...
        assert_eq!(p.on_read(t0 + MS, 2048, ReadCause::Timer, no_limit), None);
        // ... a ready read is never thin (the kernel held min_bytes), whatever it says ...
        assert_eq!(p.on_read(t0 + MS * 2, 10, ReadCause::Ready, no_limit), None);
        assert!(p.is_batching());
        // ... and a timed read under the floor, or of nothing, ends it.
        assert_eq!(
            p.on_read(t0 + MS * 3, 2047, ReadCause::Timer, no_limit),
            Some(1)
        );
        assert!(!p.is_batching());
        assert_eq!(p.deadline(), None);
        // Starting over needs a whole new stream's worth.
        assert_eq!(
            p.on_read(t0 + MS * 3, 4095, ReadCause::Ready, no_limit),
            None
        );
        assert_eq!(
            p.on_read(t0 + MS * 3, 1, ReadCause::Ready, no_limit),
            Some(32 * 1024)
        );
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
            // Unlimited, or a prefetch window from 0 to 200 KB.
            let window = (next() % 4 != 0).then(|| next() % 200_000);
            match p.on_read(now, bytes, cause, || window) {
                Some(1) => {
                    assert!(raised, "lowered twice");
                    assert_eq!(cause, ReadCause::Timer, "only a timed read lowers the mark");
                    raised = false;
                    changes += 1;
                }
                Some(mark) => {
                    assert!(!raised, "raised twice");
                    assert!(mark <= 32 * 1024);
                    assert!(mark >= 4 * 1024, "never a mark too small to be worth it");
                    if let Some(w) = window {
                        assert!(u64::from(mark) <= w / 2, "mark {mark} over half of {w}");
                    }
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

    #[test]
    fn the_mark_stays_under_half_the_unacked_window() {
        let t0 = Instant::now();
        // Prefetch 64 of 150-byte deliveries: 9 600 bytes, a mark of 4 800.
        let mut p = pacer(t0);
        assert_eq!(
            p.on_read(t0, 5000, ReadCause::Ready, || Some(9600)),
            Some(4800)
        );
        // Prefetch 16: 2 400 bytes, half of it under the 4 KiB worth batching: eager.
        let mut p = pacer(t0);
        assert_eq!(p.on_read(t0, 5000, ReadCause::Ready, || Some(2400)), None);
        assert_eq!(p.deadline(), None);
        // ... and the window starts over: it is asked again only after a new stream's worth.
        assert_eq!(
            p.on_read(t0, 4000, ReadCause::Ready, || panic!("asked again")),
            None
        );
        // A big window leaves min_bytes as it is.
        let mut p = pacer(t0);
        assert_eq!(
            p.on_read(t0, 5000, ReadCause::Ready, || Some(1 << 20)),
            Some(32 * 1024)
        );
        // A qos lowered while batching ends batching at the next timed read.
        assert_eq!(
            p.on_read(t0 + MS, 20_000, ReadCause::Timer, || Some(1 << 20)),
            None
        );
        assert_eq!(
            p.on_read(t0 + MS * 2, 20_000, ReadCause::Timer, || Some(20_000)),
            Some(1)
        );
    }
}
