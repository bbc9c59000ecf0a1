//! How much the broker may send before it waits for our acks: the bound read batching must
//! never wait beyond (a consumer with prefetch 16 sends 16 deliveries, then nothing until
//! they are acked, so a low-water mark above those bytes would only ever be met by the
//! clock).

use super::Core;
use super::channel::Status;

impl Core {
    /// basic.deliver frames received since the connection was made.
    pub(crate) fn deliveries_received(&self) -> u64 {
        self.deliveries_received
    }

    /// The smallest prefetch count among open channels with a consumer that acks (no-ack
    /// consumers are not held back by prefetch); `None` when no such consumer is limited.
    ///
    /// The driver asks after reads (`driver/batcher.rs`), while what it depends on changes
    /// only with a channel's qos, consumers or status, seldom: the answer is cached until
    /// [`channels_changed`](Self::channels_changed) marks it stale, rather than scanned over
    /// every channel each time (a scan per read made a connection with many channels pay for
    /// all of them on every message).
    pub(crate) fn ack_window(&mut self) -> Option<u32> {
        if let Some(window) = self.window_cache {
            return window;
        }
        let window = self.scan_ack_window();
        self.window_cache = Some(window);
        window
    }

    /// Marks the cached [`ack_window`](Self::ack_window) stale. Called by every operation that
    /// may change a channel's status, its consumers or its prefetch: a method frame from the
    /// broker other than a delivery or a confirm, a request queued (basic.qos and no-wait
    /// basic.consume take effect as they are sent), a channel opened, closed, suspended or
    /// reopened, a consumer dropped or ended. The tests check after every step that the cache
    /// agrees with a scan (`Harness::drain`).
    #[inline]
    pub(crate) fn channels_changed(&mut self) {
        self.window_cache = None;
    }

    /// The cached window, if any: the tests compare it with a scan.
    #[cfg(test)]
    pub(crate) fn cached_ack_window(&self) -> Option<Option<u32>> {
        self.window_cache
    }

    /// [`ack_window`](Self::ack_window) computed afresh: a scan over every channel.
    pub(crate) fn scan_ack_window(&self) -> Option<u32> {
        self.channels
            .iter()
            .flatten()
            .filter(|chan| matches!(chan.status, Status::Open))
            .filter(|chan| chan.consumers.values().any(|slot| !slot.no_ack()))
            .filter_map(|chan| {
                chan.prefetch
                    .iter()
                    .filter(|&&count| count > 0)
                    .min()
                    .map(|&count| u32::from(count))
            })
            .min()
    }
}

#[cfg(test)]
mod tests {
    use amqp_codec::methods::{BasicQos, BasicQosOk, ChannelClose};
    use amqp_codec::{Method, ShortStr};

    use crate::config::ConnectionConfig;
    use crate::proto::ack_tests::start_consumer;
    use crate::proto::tests::Harness;

    fn harness() -> Harness {
        let mut h = Harness::new(ConnectionConfig::default());
        h.open(0);
        h
    }

    /// basic.qos on the channel, answered by the broker.
    fn qos(h: &mut Harness, (id, epoch): (u16, u64), count: u16, global: bool) {
        let qos = Method::BasicQos(BasicQos {
            prefetch_count: count,
            global,
            ..BasicQos::default()
        });
        h.request((id, epoch), qos);
        h.feed(id, Method::BasicQosOk(BasicQosOk {}));
        h.sent();
    }

    #[test]
    fn the_window_is_the_smallest_prefetch_of_a_channel_with_an_acking_consumer() {
        let mut h = harness();
        let (a, ea) = h.channel();
        let (b, eb) = h.channel();
        assert_eq!(h.core.ack_window(), None, "no consumer yet");
        qos(&mut h, (a, ea), 500, false);
        qos(&mut h, (b, eb), 40, true);
        qos(&mut h, (b, eb), 300, false);
        assert_eq!(
            h.core.ack_window(),
            None,
            "prefetch without consumers holds nothing back"
        );
        start_consumer(&mut h, (a, ea), "on-a", false);
        assert_eq!(h.core.ack_window(), Some(500));
        start_consumer(&mut h, (b, eb), "on-b", false);
        assert_eq!(
            h.core.ack_window(),
            Some(40),
            "the channel-wide limit is tighter"
        );
        // 0 lifts a limit.
        qos(&mut h, (b, eb), 0, true);
        assert_eq!(h.core.ack_window(), Some(300));
    }

    #[test]
    fn no_ack_consumers_are_never_held_back() {
        let mut h = harness();
        let (a, ea) = h.channel();
        qos(&mut h, (a, ea), 10, false);
        start_consumer(&mut h, (a, ea), "auto", true);
        assert_eq!(h.core.ack_window(), None);
    }

    /// The cached window follows the changes that move it: a closed channel, a consumer
    /// dropped, a new channel with a tighter limit; deliveries leave it as it is.
    #[test]
    fn the_cached_window_follows_closes_and_dropped_consumers() {
        let mut h = harness();
        let (a, ea) = h.channel();
        let (b, eb) = h.channel();
        qos(&mut h, (a, ea), 10, false);
        qos(&mut h, (b, eb), 50, false);
        start_consumer(&mut h, (a, ea), "on-a", false);
        start_consumer(&mut h, (b, eb), "on-b", false);
        assert_eq!(h.core.ack_window(), Some(10));
        h.deliver(a, "on-a", 1);
        h.deliver(b, "on-b", 1);
        assert_eq!(
            h.core.cached_ack_window(),
            Some(Some(10)),
            "deliveries keep the cache"
        );
        // The broker closes channel a: its consumer no longer counts.
        h.feed(
            a,
            Method::ChannelClose(ChannelClose {
                reply_code: 404,
                reply_text: ShortStr::from_static("NOT_FOUND"),
                class_id: 0,
                method_id: 0,
            }),
        );
        h.sent();
        assert_eq!(h.core.ack_window(), Some(50));
        // The application drops b's consumer.
        h.core
            .drop_consumer(b, eb, &ShortStr::from_static("on-b"), []);
        h.drain();
        assert_eq!(h.core.ack_window(), h.core.scan_ack_window());
        assert_eq!(h.core.ack_window(), None);
        // A new channel with a tighter limit.
        let (c, ec) = h.channel();
        qos(&mut h, (c, ec), 5, true);
        start_consumer(&mut h, (c, ec), "on-c", false);
        assert_eq!(h.core.ack_window(), Some(5));
    }
}
