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
//! While the stream fills the mark in under a quarter of `max_wait`, each such read doubles
//! it, up to [`DELIVERIES_PER_WAKE`] deliveries' worth (at most [`MAX_MARK`]); each timed
//! read that still brings a stream's worth halves it back toward `min_bytes`. So large
//! deliveries arriving fast wake the connection (and the consumer, and the ack write) once
//! per several of them (64 KiB bodies: 0.30–0.35 reads per delivery), not once per one or
//! two (0.51–0.68 under a fixed 32 KiB mark), and a slower stream waits for the clock at
//! most once per halving.
//!
//! The mark never exceeds half of what the broker may send before it waits for our acks (its
//! consumers' prefetch, in bytes): above that, the kernel would hold bytes back that no more
//! bytes will follow until we ack, and every batch would wait for the clock. When half the
//! window is under `min_bytes / 8`, reads stay eager.

use std::time::{Duration, Instant};

use crate::config::ReadBatching;

/// Share of `min_bytes` per `max_wait` that makes input a stream.
const ENTER_DIVISOR: u32 = 8;
/// Share of `min_bytes` below which a timed read ends batching.
const EXIT_DIVISOR: u32 = 16;
/// Deliveries each wake-up should bring while batching, when they are large enough that
/// `min_bytes` holds fewer.
pub(crate) const DELIVERIES_PER_WAKE: u64 = 4;
/// Highest mark asked for: what one read takes at most once frames are large, so the bytes of
/// one wake-up are one read.
pub(crate) const MAX_MARK: u64 = super::LARGE_READ_CHUNK as u64;
/// How long a worked-out ceiling holds before the deliveries' size and the prefetch are
/// asked again.
const CEILING_REFRESH: Duration = Duration::from_millis(100);

/// What the input's deliveries look like, asked for only when the mark may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Flow {
    /// Bytes read per delivery so far (0 before the first delivery).
    pub(crate) per_delivery: u64,
    /// Bytes the broker may send before it waits for our acks: the tightest prefetch of a
    /// consumer that acks, times `per_delivery` (`None`: no limit).
    pub(crate) unacked_window: Option<u64>,
}

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
    /// The mark batching started with (`min_bytes`, or less under a small prefetch): halving
    /// stops there.
    base: u32,
    /// The highest mark for the deliveries seen: four of them within the limits, or `base`
    /// before the first delivery. Doubling stops there.
    ceiling: u32,
    /// When `ceiling` was worked out: the deliveries' size and the prefetch are asked again
    /// [`CEILING_REFRESH`] later, not on every read (each asking takes the core's lock).
    ceiling_at: Instant,
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
            base: 1,
            ceiling: 1,
            ceiling_at: now,
            last_read: now,
        }
    }

    /// Records a read of `bytes` at `now`; returns the low-water mark to set when it changes.
    /// `flow` tells the size of deliveries and how many bytes the broker may send before it
    /// waits for acks; it is asked only when the mark may change.
    pub(crate) fn on_read(
        &mut self,
        now: Instant,
        bytes: usize,
        cause: ReadCause,
        flow: impl FnOnce() -> Flow,
    ) -> Option<u32> {
        let bytes = bytes as u64;
        let since_last = now.saturating_duration_since(self.last_read);
        self.last_read = now;
        if self.is_batching() {
            return match cause {
                ReadCause::Ready => self.on_mark_filled(now, since_last, flow),
                ReadCause::Timer => self.on_timed_read(now, bytes, flow),
            };
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
        let flow = flow();
        let mark = u64::from(self.config.min_bytes).min(half_window(flow));
        if mark < stream.max(2) {
            return None;
        }
        self.mark = to_mark(mark);
        self.base = self.mark;
        self.ceiling = self.ceiling_for(flow);
        self.ceiling_at = now;
        Some(self.mark)
    }

    /// A read the kernel woke us for while batching: the stream filled the mark. Filled in
    /// under a quarter of `max_wait`, the mark doubles toward the ceiling; it then still
    /// fills in under half.
    fn on_mark_filled(
        &mut self,
        now: Instant,
        since_last: Duration,
        flow: impl FnOnce() -> Flow,
    ) -> Option<u32> {
        if since_last > self.config.max_wait / 4 {
            return None;
        }
        if now.saturating_duration_since(self.ceiling_at) >= CEILING_REFRESH {
            self.ceiling = self.ceiling_for(flow());
            self.ceiling_at = now;
        }
        let doubled = self.mark.saturating_mul(2).min(self.ceiling);
        (doubled > self.mark).then(|| {
            self.mark = doubled;
            doubled
        })
    }

    /// A read by the clock while batching: the stream did not fill the mark within
    /// `max_wait`. Under the exit floor, or with the mark above half of what the broker may
    /// now send unacked, batching ends; otherwise a mark above the base halves.
    fn on_timed_read(
        &mut self,
        now: Instant,
        bytes: u64,
        flow: impl FnOnce() -> Flow,
    ) -> Option<u32> {
        let floor = u64::from(self.config.min_bytes / EXIT_DIVISOR);
        let too_high = || half_window(flow()) < u64::from(self.mark);
        if bytes < floor || too_high() {
            self.mark = 1;
            self.restart_window(now);
            return Some(1);
        }
        (self.mark > self.base).then(|| {
            self.mark = (self.mark / 2).max(self.base);
            self.mark
        })
    }

    /// The highest mark for `flow`'s deliveries: [`DELIVERIES_PER_WAKE`] of them, at most
    /// [`MAX_MARK`] and half the unacked window, never under the base (which it is before a
    /// delivery was read).
    fn ceiling_for(&self, flow: Flow) -> u32 {
        let wanted = flow
            .per_delivery
            .saturating_mul(DELIVERIES_PER_WAKE)
            .min(MAX_MARK)
            .min(half_window(flow));
        to_mark(wanted).max(self.base)
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

/// Half of what the broker may send before it waits for our acks (no limit: `u64::MAX`).
fn half_window(flow: Flow) -> u64 {
    flow.unacked_window.map_or(u64::MAX, |w| w / 2)
}

/// A mark in the socket option's type.
fn to_mark(bytes: u64) -> u32 {
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Small deliveries, and no consumer's prefetch limits what the broker sends.
    fn no_limit() -> Flow {
        Flow {
            per_delivery: 150,
            unacked_window: None,
        }
    }

    /// 150-byte deliveries that the broker may send `window` bytes of before our acks.
    fn limited(window: Option<u64>) -> Flow {
        Flow {
            per_delivery: 150,
            unacked_window: window,
        }
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
    fn any_sequence_of_reads_moves_the_mark_only_within_its_bounds_and_keeps_its_deadline() {
        let t0 = Instant::now();
        let mut p = pacer(t0);
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let (mut now, mut mark, mut base) = (t0, 1u32, 1u32);
        let (mut entered, mut doubled, mut halved) = (0, 0, 0);
        let mut flow = no_limit();
        let mut flow_since = t0;
        for i in 0..200_000 {
            // Mostly reads close together (a stream), some far apart.
            now += Duration::from_micros(if next() % 3 == 0 {
                next() % 3000
            } else {
                next() % 300
            });
            let bytes = (next() % 40_000) as usize;
            let cause = if next() % 2 == 0 {
                ReadCause::Ready
            } else {
                ReadCause::Timer
            };
            // Every 2 000 reads other deliveries (up to 300 KB) and prefetch window (none, or
            // up to 2 MB).
            if i % 2000 == 0 {
                flow = Flow {
                    per_delivery: next() % 300_000,
                    unacked_window: (next() % 4 != 0).then(|| next() % 2_000_000),
                };
                flow_since = now;
            }
            let half = flow.unacked_window.map_or(u64::MAX, |w| w / 2);
            let asked = p.on_read(now, bytes, cause, || flow);
            match (asked, mark) {
                (None, _) => {}
                (Some(1), 1) => panic!("lowered twice"),
                (Some(1), _) => {
                    assert_eq!(cause, ReadCause::Timer, "only a timed read lowers the mark");
                }
                (Some(new), 1) => {
                    assert!(new <= 32 * 1024, "entered at {new}");
                    assert!(new >= 4 * 1024, "never a mark too small to be worth it");
                    assert!(u64::from(new) <= half, "mark {new} over half the window");
                    base = new;
                    entered += 1;
                }
                (Some(new), old) if new > old => {
                    assert_eq!(cause, ReadCause::Ready, "only a filled mark raises it");
                    assert!(new <= old * 2 && u64::from(new) <= MAX_MARK);
                    // Once the ceiling was worked out for this flow, it bounds the mark.
                    if now.duration_since(flow_since) >= CEILING_REFRESH * 2 {
                        let four = (flow.per_delivery * DELIVERIES_PER_WAKE).min(half);
                        assert!(new <= to_mark(four).max(base), "{new} over {four}");
                    }
                    doubled += 1;
                }
                (Some(new), old) => {
                    assert_eq!(cause, ReadCause::Timer, "only the clock halves the mark");
                    assert_eq!(new, (old / 2).max(base));
                    halved += 1;
                }
            }
            mark = asked.unwrap_or(mark);
            assert_eq!(p.is_batching(), mark > 1);
            assert_eq!(p.deadline(), (mark > 1).then_some(now + MS));
        }
        assert!(
            entered > 100 && doubled > 100 && halved > 100,
            "the sequence exercised every way: entered {entered}, doubled {doubled}, halved {halved}"
        );
    }

    #[test]
    fn the_mark_stays_under_half_the_unacked_window() {
        let t0 = Instant::now();
        // Prefetch 64 of 150-byte deliveries: 9 600 bytes, a mark of 4 800.
        let mut p = pacer(t0);
        assert_eq!(
            p.on_read(t0, 5000, ReadCause::Ready, || limited(Some(9600))),
            Some(4800)
        );
        // Prefetch 16: 2 400 bytes, half of it under the 4 KiB worth batching: eager.
        let mut p = pacer(t0);
        assert_eq!(
            p.on_read(t0, 5000, ReadCause::Ready, || limited(Some(2400))),
            None
        );
        assert_eq!(p.deadline(), None);
        // ... and the window starts over: it is asked again only after a new stream's worth.
        assert_eq!(
            p.on_read(t0, 4000, ReadCause::Ready, || panic!("asked again")),
            None
        );
        // A big window leaves min_bytes as it is.
        let mut p = pacer(t0);
        assert_eq!(
            p.on_read(t0, 5000, ReadCause::Ready, || limited(Some(1 << 20))),
            Some(32 * 1024)
        );
        // A qos lowered while batching ends batching at the next timed read.
        assert_eq!(
            p.on_read(t0 + MS, 20_000, ReadCause::Timer, || limited(Some(1 << 20))),
            None
        );
        assert_eq!(
            p.on_read(t0 + MS * 2, 20_000, ReadCause::Timer, || limited(Some(
                20_000
            ))),
            Some(1)
        );
    }

    /// 64 KiB deliveries, no prefetch limit.
    fn large() -> Flow {
        Flow {
            per_delivery: 65_600,
            unacked_window: None,
        }
    }

    #[test]
    fn a_fast_stream_of_large_deliveries_doubles_the_mark_to_four_of_them() {
        let t0 = Instant::now();
        let mut p = pacer(t0);
        let fast = Duration::from_micros(200);
        assert_eq!(
            p.on_read(t0, 70_000, ReadCause::Ready, large),
            Some(32 * 1024)
        );
        let mut now = t0;
        for want in [64 * 1024, 128 * 1024, 256 * 1024, 4 * 65_600] {
            now += fast;
            assert_eq!(p.on_read(now, 40_000, ReadCause::Ready, large), Some(want));
        }
        // At the ceiling: nothing more to ask, and the flow is not asked again.
        now += fast;
        assert_eq!(
            p.on_read(now, 300_000, ReadCause::Ready, || panic!("asked")),
            None
        );
        // A read that took longer than a quarter of max_wait leaves the mark.
        let mut p = pacer(t0);
        assert_eq!(
            p.on_read(t0, 70_000, ReadCause::Ready, large),
            Some(32 * 1024)
        );
        let slow = MS / 4 + Duration::from_micros(1);
        assert_eq!(p.on_read(t0 + slow, 40_000, ReadCause::Ready, large), None);
    }

    #[test]
    fn the_clock_halves_a_raised_mark_back_to_where_batching_started() {
        let t0 = Instant::now();
        let mut p = pacer(t0);
        let fast = Duration::from_micros(100);
        p.on_read(t0, 70_000, ReadCause::Ready, large);
        for i in 1..=4 {
            assert!(
                p.on_read(t0 + fast * i, 40_000, ReadCause::Ready, large)
                    .is_some()
            );
        }
        // Slower now: each timed read still brings a stream's worth, and halves the mark.
        let mut now = t0 + fast * 4;
        for want in [131_200, 65_600, 32_800, 32 * 1024] {
            now += MS;
            assert_eq!(p.on_read(now, 30_000, ReadCause::Timer, large), Some(want));
        }
        now += MS;
        assert_eq!(p.on_read(now, 30_000, ReadCause::Timer, large), None);
        // A thin one ends batching.
        now += MS;
        assert_eq!(p.on_read(now, 100, ReadCause::Timer, large), Some(1));
    }

    #[test]
    fn the_ceiling_keeps_within_max_mark_and_half_the_window_and_waits_for_a_delivery() {
        let t0 = Instant::now();
        let fast = Duration::from_micros(100);
        let ceiling = |flow: Flow| {
            let mut p = pacer(t0);
            p.on_read(t0, 70_000, ReadCause::Ready, || flow);
            let mut mark = 32 * 1024;
            for i in 1..20 {
                mark = p
                    .on_read(t0 + fast * i, 1, ReadCause::Ready, || flow)
                    .unwrap_or(mark);
            }
            mark
        };
        let flow = |per_delivery, unacked_window| Flow {
            per_delivery,
            unacked_window,
        };
        assert_eq!(ceiling(flow(1 << 20, None)), 512 * 1024);
        // Prefetch 5 of 64 KiB.
        assert_eq!(ceiling(flow(65_600, Some(5 * 65_600))), 5 * 65_600 / 2);
        // Small deliveries leave min_bytes as it is.
        assert_eq!(ceiling(flow(2_000, None)), 32 * 1024);
        // Before the first delivery the size is unknown: min_bytes, until asked again.
        let mut p = pacer(t0);
        p.on_read(t0, 70_000, ReadCause::Ready, || flow(0, None));
        assert_eq!(
            p.on_read(t0 + fast, 1, ReadCause::Ready, || flow(0, None)),
            None
        );
        let later = t0 + CEILING_REFRESH;
        assert_eq!(
            p.on_read(later, 1, ReadCause::Ready, large),
            None,
            "a slow read"
        );
        assert_eq!(
            p.on_read(later + fast, 1, ReadCause::Ready, large),
            Some(64 * 1024)
        );
    }
}
