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
    pub(crate) fn ack_window(&self) -> Option<u32> {
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
    use amqp_codec::Method;
    use amqp_codec::methods::{BasicQos, BasicQosOk};

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
}
