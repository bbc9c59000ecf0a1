//! Which deliveries of a channel the application has not settled yet: what lets single acks of
//! consecutive deliveries go out as one multiple ack.
//!
//! `basic.ack(tag, multiple)` settles every unacknowledged delivery up to `tag` on the channel.
//! Sent in place of single acks, it says the same thing only when no delivery at or below `tag`
//! is still unsettled: one the application holds, or one it never saw. So the channel keeps one
//! bit per delivery tag, set while a manually acknowledged delivery waits for its ack, nack or
//! reject, and asks [`Unsettled::settle`] whether everything up to a tag is settled.
//!
//! Delivery tags are the broker's: per channel, from 1, one per deliver or get-ok, rising.
//! Everything errs on the side of not coalescing: a delivery the client drops unseen, a tag out
//! of order, or more than [`MAX_SPAN`] tags between the oldest unsettled delivery and the newest
//! turn tracking off until the channel's next generation, and acks then go out one by one.

use std::collections::VecDeque;

/// Most delivery tags tracked between the oldest unsettled delivery and the newest one (8 KiB
/// of bits). basic.qos cannot allow more unacknowledged deliveries (its count is 16 bits); only a
/// consumer without prefetch that holds one delivery while acking 65 536 later ones goes past.
pub(crate) const MAX_SPAN: u64 = 1 << 16;

/// Bits per word.
const WORD: u64 = 64;

/// Tags above this turn tracking off: no broker gets near (one delivery per nanosecond would
/// take 584 years), and below it the window's arithmetic cannot overflow.
const TAG_CEILING: u64 = u64::MAX - 4 * MAX_SPAN;

/// What settling a tag found (see [`Unsettled::settle`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settled {
    /// The tag was not an unsettled delivery (or tracking is off): its frame must reach the
    /// broker exactly as the application asked, to be refused there if it is wrong.
    Unknown,
    /// Settled, but an earlier delivery is still unsettled: no multiple ack may cover it yet.
    Gap,
    /// Settled, and so is every delivery up to it: an ack of it may be a multiple ack.
    Through,
}

/// Unsettled deliveries of one channel (of one generation).
#[derive(Debug)]
pub(crate) struct Unsettled {
    /// Tag of bit 0 of `words[0]`, a multiple of 64.
    base: u64,
    /// A bit per tag from `base`, set while that delivery is unsettled. Words wholly below
    /// `next` with no bit set are dropped from the front, so the first set bit is found in
    /// the first word or two.
    words: VecDeque<u64>,
    /// One past the highest tag received: tags must arrive above it.
    next: u64,
    /// False once tracking gave up for this generation.
    tracking: bool,
}

impl Default for Unsettled {
    fn default() -> Self {
        Self {
            base: 0,
            words: VecDeque::new(),
            next: 0,
            tracking: true,
        }
    }
}

impl Unsettled {
    /// Starts over: a new generation of the channel numbers its deliveries from 1 again.
    pub(crate) fn reset(&mut self) {
        self.base = 0;
        self.words.clear();
        self.next = 0;
        self.tracking = true;
    }

    /// Stops tracking for this generation (a delivery went unseen, or tags misbehaved): from
    /// now on nothing coalesces.
    pub(crate) fn give_up(&mut self) {
        self.tracking = false;
        self.words.clear();
    }

    /// A delivery (basic.deliver or basic.get-ok) arrived; `manual` if it waits for the
    /// application to settle it (not no-ack).
    pub(crate) fn delivered(&mut self, tag: u64, manual: bool) {
        if !self.tracking {
            return;
        }
        if tag < self.next || tag > TAG_CEILING {
            self.give_up();
            return;
        }
        self.next = tag + 1;
        if !manual {
            return;
        }
        self.trim();
        if self.words.is_empty() {
            self.base = tag - tag % WORD;
        }
        let Some(index) = self.word_index(tag) else {
            self.give_up();
            return;
        };
        while self.words.len() <= index {
            self.words.push_back(0);
        }
        self.words[index] |= 1 << (tag % WORD);
    }

    /// The application settled `tag` (and, if `multiple`, every delivery below it); a tag that
    /// is not an unsettled delivery changes nothing.
    pub(crate) fn settle(&mut self, tag: u64, multiple: bool) -> Settled {
        if !self.tracking || tag < self.base {
            return Settled::Unknown;
        }
        let Some(index) = self.word_index(tag).filter(|&i| i < self.words.len()) else {
            return Settled::Unknown;
        };
        let bit = 1u64 << (tag % WORD);
        let known = self.words[index] & bit != 0;
        if !known {
            // Not a delivery waiting to be settled: the broker will refuse the frame and close
            // the channel, so it settles nothing here either.
            return Settled::Unknown;
        }
        if multiple {
            for word in self.words.range_mut(..index) {
                *word = 0;
            }
            // The bit of `tag` and every bit below it.
            self.words[index] &= !(bit | (bit - 1));
        } else {
            self.words[index] &= !bit;
        }
        self.trim();
        if self.lowest().is_none_or(|lowest| lowest > tag) {
            Settled::Through
        } else {
            Settled::Gap
        }
    }

    /// Index of the word holding `tag`, if within [`MAX_SPAN`] of `base`.
    fn word_index(&self, tag: u64) -> Option<usize> {
        let offset = tag.checked_sub(self.base)?;
        if offset >= MAX_SPAN {
            return None;
        }
        usize::try_from(offset / WORD).ok()
    }

    /// Drops empty words wholly below `next` from the front.
    fn trim(&mut self) {
        while self.words.front() == Some(&0) && self.base + WORD <= self.next {
            self.words.pop_front();
            self.base += WORD;
        }
    }

    /// The lowest unsettled tag.
    fn lowest(&self) -> Option<u64> {
        self.words
            .iter()
            .zip((self.base..).step_by(WORD as usize))
            .find(|&(&word, _)| word != 0)
            .map(|(&word, base)| base + u64::from(word.trailing_zeros()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivered(tags: impl IntoIterator<Item = u64>) -> Unsettled {
        let mut u = Unsettled::default();
        for tag in tags {
            u.delivered(tag, true);
        }
        u
    }

    #[test]
    fn acks_in_order_each_settle_everything_up_to_their_tag() {
        let mut u = delivered(1..=200);
        for tag in 1..=200 {
            assert!(u.settle(tag, false) == Settled::Through, "tag {tag}");
        }
        assert_eq!(u.lowest(), None);
        assert!(u.words.len() <= 1, "settled words are dropped");
    }

    #[test]
    fn an_earlier_unsettled_delivery_blocks_until_it_is_settled() {
        let mut u = delivered(1..=4);
        assert_eq!(u.settle(2, false), Settled::Gap, "1 is still unsettled");
        assert!(u.settle(3, false) != Settled::Through);
        assert!(
            u.settle(1, false) == Settled::Through,
            "1, 2, 3 settled: all up to 1"
        );
        assert!(u.settle(4, false) == Settled::Through);
    }

    #[test]
    fn an_unknown_or_repeated_tag_never_coalesces() {
        let mut u = delivered(1..=3);
        assert!(u.settle(1, false) == Settled::Through);
        assert_eq!(u.settle(1, false), Settled::Unknown, "a second ack of 1");
        assert_eq!(u.settle(7, false), Settled::Unknown, "never delivered");
        assert_eq!(u.settle(7, true), Settled::Unknown);
        assert_eq!(u.lowest(), Some(2), "an unknown tag settles nothing");
        assert!(
            u.settle(3, true) == Settled::Through,
            "multiple: 2 and 3 settled"
        );
        assert_eq!(u.settle(3, true), Settled::Unknown, "already settled");
    }

    #[test]
    fn no_ack_deliveries_take_a_tag_but_wait_for_nothing() {
        let mut u = Unsettled::default();
        u.delivered(1, true);
        u.delivered(2, false);
        u.delivered(3, true);
        assert!(u.settle(1, false) == Settled::Through);
        assert!(
            u.settle(2, false) != Settled::Through,
            "not unsettled: acking it is the application's error"
        );
        assert!(u.settle(3, false) == Settled::Through);
    }

    #[test]
    fn multiple_settles_everything_below() {
        let mut u = delivered(1..=300);
        assert!(u.settle(250, true) == Settled::Through);
        assert_eq!(u.lowest(), Some(251));
        assert!(u.settle(251, false) == Settled::Through);
    }

    #[test]
    fn tags_out_of_order_or_too_far_apart_turn_tracking_off() {
        let mut u = delivered([1, 2]);
        u.delivered(2, true);
        assert!(
            u.settle(1, false) != Settled::Through,
            "a repeated tag gave up tracking"
        );

        let mut u = delivered([1]);
        u.delivered(1 + MAX_SPAN, true);
        assert!(!u.tracking);
        assert!(u.settle(1, false) != Settled::Through);

        // Far apart but with nothing unsettled in between is fine.
        let mut u = delivered([1]);
        assert!(u.settle(1, false) == Settled::Through);
        u.delivered(10 * MAX_SPAN, true);
        assert!(u.settle(10 * MAX_SPAN, false) == Settled::Through);
    }

    #[test]
    fn a_held_delivery_keeps_later_ones_single_and_bounded() {
        let mut u = delivered([1]);
        for tag in 2..MAX_SPAN {
            u.delivered(tag, true);
            assert!(u.settle(tag, false) != Settled::Through);
        }
        assert!(u.words.len() as u64 <= MAX_SPAN / WORD);
        u.delivered(MAX_SPAN + 5, true);
        assert!(!u.tracking, "past the span: given up");
        assert!(u.words.is_empty(), "and its memory released");
    }

    /// Found by the `client_core` fuzz target: a hostile broker's delivery tag of `u64::MAX`
    /// overflowed `next`.
    #[test]
    fn tags_at_the_top_of_the_range_turn_tracking_off_without_overflow() {
        for tag in [u64::MAX, u64::MAX - 1, u64::MAX - WORD, TAG_CEILING + 1] {
            let mut u = delivered([1]);
            u.delivered(tag, true);
            assert!(!u.tracking, "tag {tag}");
            assert_eq!(u.settle(tag, false), Settled::Unknown);
            assert_eq!(u.settle(tag, true), Settled::Unknown);
        }
        let mut u = delivered([TAG_CEILING]);
        assert!(u.settle(TAG_CEILING, false) == Settled::Through);
    }

    #[test]
    fn reset_starts_a_new_generation_from_tag_1() {
        let mut u = delivered(1..=10);
        u.give_up();
        u.reset();
        u.delivered(1, true);
        assert!(u.settle(1, false) == Settled::Through);
    }
}
