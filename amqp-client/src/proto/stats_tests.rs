//! The message counts of `Connection::message_stats`, kept by the core: each counting point
//! driven without a runtime, a multiple confirm counted per publish, a closed channel's counts
//! kept after its id is reused, and the counts carried across a recovery.

use std::task::Poll;

use amqp_codec::methods::*;
use amqp_codec::{BasicProperties, Method, Outbound, ShortStr};
use bytes::Buf;

use super::tests::Harness;
use super::{Publish, WaiterId};
use crate::MessageStats;
use crate::config::ConnectionConfig;
use crate::recovery::RecoveryPolicy;

/// A channel in confirm mode with a manual-ack consumer "c1".
fn confirming_consumer(h: &mut Harness) -> (u16, u64) {
    let (id, epoch) = h.channel();
    h.call(
        (id, epoch),
        Method::ConfirmSelect(ConfirmSelect::default()),
        Method::ConfirmSelectOk(ConfirmSelectOk {}),
    );
    let tag = ShortStr::from_static("c1");
    h.call(
        (id, epoch),
        Method::BasicConsume(BasicConsume {
            queue: ShortStr::from_static("q"),
            consumer_tag: tag.clone(),
            ..Default::default()
        }),
        Method::BasicConsumeOk(BasicConsumeOk { consumer_tag: tag }),
    );
    (id, epoch)
}

/// Publishes one mandatory message on the channel; true if it was queued.
fn publish(h: &mut Harness, (id, epoch): (u16, u64)) -> bool {
    let publish = Method::BasicPublish(BasicPublish {
        mandatory: true,
        ..Default::default()
    });
    let args = crate::proto::harness::args_of(&publish);
    let queued = h
        .core
        .publish(id, epoch, &args, &BasicProperties::default(), "x".into());
    matches!(queued, Ok(Publish::Queued { .. }))
}

/// Takes the next delivery of "c1" and acks it, or rejects it when `ack` is false.
fn take_and_settle(h: &mut Harness, (id, epoch): (u16, u64), ack: bool) {
    let tag = ShortStr::from_static("c1");
    let (poll, _) = h.core.poll_delivery(id, epoch, &tag, WaiterId(0));
    let Poll::Ready(Some(Ok(raw))) = poll else {
        panic!("a delivery is buffered: {poll:?}")
    };
    let t = raw.delivery_tag();
    let method = if ack {
        Method::BasicAck(BasicAck {
            delivery_tag: t,
            multiple: false,
        })
    } else {
        Method::BasicReject(BasicReject {
            delivery_tag: t,
            requeue: false,
        })
    };
    let settled = h.core.settle(id, epoch, raw.generation, t, &method);
    assert!(settled.is_ok(), "{settled:?}");
}

fn expected(f: impl FnOnce(&mut MessageStats)) -> MessageStats {
    let mut s = MessageStats::default();
    f(&mut s);
    s
}

#[test]
fn every_counting_point_counts_once_and_a_multiple_confirm_counts_each_publish() {
    let mut h = Harness::new(ConnectionConfig::default());
    h.open(0);
    assert_eq!(h.core.message_stats(), MessageStats::default());
    let ch = confirming_consumer(&mut h);
    for _ in 0..4 {
        assert!(publish(&mut h, ch));
    }
    h.sent();
    // One multiple ack confirms three publishes; a nack the fourth.
    h.feed(
        ch.0,
        Method::BasicAck(BasicAck {
            delivery_tag: 3,
            multiple: true,
        }),
    );
    h.feed(
        ch.0,
        Method::BasicNack(BasicNack {
            delivery_tag: 4,
            multiple: false,
            requeue: false,
        }),
    );
    // A basic.return (not matched to a pending publish: all are confirmed) still counts.
    let mut out = Outbound::new();
    let ret = Method::BasicReturn(BasicReturn {
        reply_code: 312,
        reply_text: ShortStr::from_static("NO_ROUTE"),
        ..Default::default()
    });
    let pushed = out.push_content(ch.0, &ret, &BasicProperties::default(), "x".into(), 0);
    assert!(pushed.is_ok());
    let bytes = out.copy_to_bytes(out.remaining());
    h.feed_bytes(&bytes);
    // Three deliveries: two acked, one rejected.
    for tag in 1..=3 {
        h.deliver(ch.0, "c1", tag);
    }
    take_and_settle(&mut h, ch, true);
    take_and_settle(&mut h, ch, false);
    take_and_settle(&mut h, ch, true);
    assert_eq!(
        h.core.message_stats(),
        expected(|s| {
            s.published = 4;
            s.confirmed = 3;
            s.nacked = 1;
            s.returned = 1;
            s.delivered = 3;
            s.acked = 2;
            s.rejected = 1;
        })
    );
}

#[test]
fn a_publish_held_back_or_a_stale_ack_is_not_counted() {
    let mut h = Harness::new(ConnectionConfig::default());
    h.open(0);
    let ch = confirming_consumer(&mut h);
    // The broker blocks the connection: the publish must wait, nothing was sent.
    h.feed(
        0,
        Method::ConnectionBlocked(ConnectionBlocked {
            reason: ShortStr::from_static("low memory"),
        }),
    );
    assert!(!publish(&mut h, ch));
    // An ack of another generation is refused, and not counted.
    let ack = Method::BasicAck(BasicAck {
        delivery_tag: 1,
        multiple: false,
    });
    assert!(h.core.settle(ch.0, ch.1, 7, 1, &ack).is_err());
    assert_eq!(h.core.message_stats(), MessageStats::default());
}

#[test]
fn counts_outlive_their_channel_and_carry_across_a_recovery() {
    let mut h = Harness::new(ConnectionConfig::default().with_recovery(RecoveryPolicy::default()));
    h.open(0);
    let first = confirming_consumer(&mut h);
    assert!(publish(&mut h, first));
    h.deliver(first.0, "c1", 1);
    take_and_settle(&mut h, first, true);
    // The channel closes and its id is taken again by a new opening: its counts stay.
    let close = h.core.close_channel(first.0, first.1);
    assert!(close.is_ok());
    h.feed(first.0, Method::ChannelCloseOk(ChannelCloseOk {}));
    let mut ids = Vec::new();
    for _ in 0..2047 {
        ids.push(h.channel());
        if ids.last().map(|c| c.0) == Some(first.0) {
            break;
        }
    }
    assert_eq!(ids.last().map(|c| c.0), Some(first.0), "the id is reused");
    let once = expected(|s| {
        s.published = 1;
        s.delivered = 1;
        s.acked = 1;
    });
    assert_eq!(h.core.message_stats(), once);

    // The transport is lost and recovered: counts go on, and the recovery is counted.
    h.core.handle_eof();
    h.drain();
    assert!(h.core.is_recovering());
    assert!(h.core.restart("127.0.0.1", 5672, h.now));
    h.open(0);
    for (id, epoch, _) in h
        .core
        .suspended_channels()
        .into_iter()
        .map(|(i, e, t)| (i, e, t.len()))
        .collect::<Vec<_>>()
    {
        assert!(h.core.reopen_channel(id, epoch).is_ok());
        h.feed(id, Method::ChannelOpenOk(ChannelOpenOk::default()));
    }
    h.core.finish_recovery(1);
    h.drain();
    assert!(h.core.closed_error().is_none());
    let after = expected(|s| {
        s.published = 1;
        s.delivered = 1;
        s.acked = 1;
        s.recoveries = 1;
    });
    assert_eq!(h.core.message_stats(), after);
}
