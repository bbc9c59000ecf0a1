//! Ack coalescing in the core, without sockets: acks of consecutive deliveries go out as one
//! multiple ack, and never as one that could settle a delivery the application has not settled
//! (held, out of order, nacked, no-ack, or dropped unseen).

use std::task::Poll;

use amqp_codec::methods::*;
use amqp_codec::{BasicProperties, Method, Outbound, ShortStr};
use bytes::Buf;

use super::WaiterId;
use super::tests::Harness;
use crate::config::ConnectionConfig;

const CONSUMER: &str = "c1";

/// Starts consumer `tag` on the channel (`no_ack` as given).
pub(super) fn start_consumer(
    h: &mut Harness,
    (id, epoch): (u16, u64),
    tag: &'static str,
    no_ack: bool,
) {
    let consume = Method::BasicConsume(BasicConsume {
        queue: ShortStr::from_static("q"),
        consumer_tag: ShortStr::from_static(tag),
        no_ack,
        ..Default::default()
    });
    h.request((id, epoch), consume);
    h.feed(
        id,
        Method::BasicConsumeOk(BasicConsumeOk {
            consumer_tag: ShortStr::from_static(tag),
        }),
    );
    h.sent();
}

/// A harness with an open channel and a consumer `c1` (`no_ack` as given).
fn consuming(no_ack: bool) -> (Harness, u16, u64) {
    let mut h = Harness::new(ConnectionConfig::default());
    h.open(0);
    let (id, epoch) = h.channel();
    start_consumer(&mut h, (id, epoch), CONSUMER, no_ack);
    (h, id, epoch)
}

fn deliver(h: &mut Harness, id: u16, tags: impl IntoIterator<Item = u64>) {
    for tag in tags {
        h.deliver(id, CONSUMER, tag);
    }
}

fn ack(delivery_tag: u64, multiple: bool) -> Method {
    Method::BasicAck(BasicAck {
        delivery_tag,
        multiple,
    })
}

fn nack(delivery_tag: u64) -> Method {
    Method::BasicNack(BasicNack {
        delivery_tag,
        multiple: false,
        requeue: true,
    })
}

/// Settles each tag with its method, as `Delivery::ack` and friends do.
fn settle(h: &mut Harness, id: u16, epoch: u64, methods: &[Method]) {
    for m in methods {
        let tag = match m {
            Method::BasicAck(a) => a.delivery_tag,
            Method::BasicNack(n) => n.delivery_tag,
            Method::BasicReject(r) => r.delivery_tag,
            other => panic!("not a settlement: {other:?}"),
        };
        h.core.settle(id, epoch, 0, tag, m).unwrap();
    }
}

#[test]
fn with_coalescing_off_every_ack_goes_out_as_sent() {
    let config = ConnectionConfig::builder().coalesce_acks(false).build();
    let mut h = Harness::new(config);
    h.open(0);
    let (id, epoch) = h.channel();
    start_consumer(&mut h, (id, epoch), CONSUMER, false);
    deliver(&mut h, id, 1..=10);
    let acks: Vec<_> = (1..=10).map(|t| ack(t, false)).collect();
    settle(&mut h, id, epoch, &acks);
    assert_eq!(h.methods(), acks);
}

#[test]
fn acks_in_delivery_order_go_out_as_one_multiple_ack() {
    let (mut h, id, epoch) = consuming(false);
    deliver(&mut h, id, 1..=100);
    let acks: Vec<_> = (1..=100).map(|t| ack(t, false)).collect();
    settle(&mut h, id, epoch, &acks);
    assert_eq!(h.methods(), [ack(100, true)]);

    // The next turn starts a new frame: the one above may be on the wire already.
    deliver(&mut h, id, 101..=102);
    settle(&mut h, id, epoch, &[ack(101, false), ack(102, false)]);
    assert_eq!(h.methods(), [ack(102, true)]);
}

#[test]
fn a_first_ack_alone_stays_single() {
    let (mut h, id, epoch) = consuming(false);
    deliver(&mut h, id, 1..=3);
    settle(&mut h, id, epoch, &[ack(1, false)]);
    assert_eq!(h.methods(), [ack(1, false)]);
}

#[test]
fn a_held_delivery_is_never_covered() {
    let (mut h, id, epoch) = consuming(false);
    deliver(&mut h, id, 1..=5);
    // 2 is held by the application: 3, 4, 5 go out singly, then 2 closes the gap.
    settle(
        &mut h,
        id,
        epoch,
        &[ack(1, false), ack(3, false), ack(4, false), ack(5, false)],
    );
    assert_eq!(
        h.methods(),
        [ack(1, false), ack(3, false), ack(4, false), ack(5, false)]
    );
    settle(&mut h, id, epoch, &[ack(2, false)]);
    assert_eq!(h.methods(), [ack(2, false)]);
}

#[test]
fn out_of_order_acks_merge_once_the_gap_closes() {
    let (mut h, id, epoch) = consuming(false);
    deliver(&mut h, id, 1..=3);
    settle(
        &mut h,
        id,
        epoch,
        &[ack(2, false), ack(1, false), ack(3, false)],
    );
    // ack(2) acks 2; ack(1) cannot take a lower tag than the frame before it; then 3 finds
    // every delivery up to it settled and turns ack(1) into ack(3, multiple), which the broker
    // reads after ack(2): it settles 1 and 3.
    assert_eq!(h.methods(), [ack(2, false), ack(3, true)]);
}

#[test]
fn a_nack_or_reject_in_between_ends_the_run() {
    let (mut h, id, epoch) = consuming(false);
    deliver(&mut h, id, 1..=6);
    let reject = Method::BasicReject(BasicReject {
        delivery_tag: 4,
        requeue: false,
    });
    settle(
        &mut h,
        id,
        epoch,
        &[
            ack(1, false),
            ack(2, false),
            nack(3),
            reject.clone(),
            ack(5, false),
            ack(6, false),
        ],
    );
    // A multiple ack of 6 may not move ahead of the nack and reject of 3 and 4.
    assert_eq!(h.methods(), [ack(2, true), nack(3), reject, ack(6, true)]);
}

#[test]
fn an_application_multiple_ack_merges_too() {
    let (mut h, id, epoch) = consuming(false);
    deliver(&mut h, id, 1..=10);
    settle(
        &mut h,
        id,
        epoch,
        &[ack(1, false), ack(5, true), ack(6, false)],
    );
    assert_eq!(h.methods(), [ack(6, true)]);
}

#[test]
fn a_repeated_or_unknown_tag_reaches_the_broker_as_sent() {
    let (mut h, id, epoch) = consuming(false);
    deliver(&mut h, id, 1..=2);
    settle(
        &mut h,
        id,
        epoch,
        &[ack(1, false), ack(1, false), ack(2, false), ack(9, false)],
    );
    // The broker must see the second ack of 1 (and close the channel for it), and 9 as it is.
    assert_eq!(
        h.methods(),
        [ack(1, false), ack(1, false), ack(2, false), ack(9, false)]
    );
}

#[test]
fn frames_on_other_channels_do_not_split_a_run_but_frames_on_its_own_do() {
    let (mut h, id, epoch) = consuming(false);
    deliver(&mut h, id, 1..=3);
    settle(&mut h, id, epoch, &[ack(1, false)]);
    // A publish on the same channel after ack(1): ack(2) may not jump ahead of it.
    let publish = Method::BasicPublish(BasicPublish::default());
    let props = BasicProperties::default();
    h.core
        .publish(
            id,
            epoch,
            &crate::proto::harness::args_of(&publish),
            &props,
            "p".into(),
        )
        .unwrap();
    settle(&mut h, id, epoch, &[ack(2, false), ack(3, false)]);
    assert_eq!(h.methods(), [ack(1, false), publish, ack(3, true)]);
}

#[test]
fn a_delivery_for_an_unknown_consumer_on_a_channel_with_no_ack_consumers_stops_coalescing() {
    let (mut h, id, epoch) = consuming(false);
    start_consumer(&mut h, (id, epoch), "auto", true);
    deliver(&mut h, id, 1..=2);
    // Tag 3 goes to a consumer the client does not know, on a channel with a no-ack consumer:
    // perhaps unacked at the broker, and the application never sees it, so no multiple ack may
    // ever cover it (and it is not rejected: a no-ack delivery's tag would close the channel).
    h.deliver(id, "stranger", 3);
    deliver(&mut h, id, 4..=5);
    let acks = [1, 2, 4, 5].map(|t| ack(t, false));
    settle(&mut h, id, epoch, &acks);
    assert_eq!(h.methods(), acks);
}

#[test]
fn a_delivery_for_an_unknown_consumer_is_requeued_and_the_run_goes_on_around_it() {
    let (mut h, id, epoch) = consuming(false);
    deliver(&mut h, id, 1..=2);
    h.deliver(id, "stranger", 3);
    deliver(&mut h, id, 4..=5);
    let acks = [1, 2, 4, 5].map(|t| ack(t, false));
    settle(&mut h, id, epoch, &acks);
    let requeue = Method::BasicReject(BasicReject {
        delivery_tag: 3,
        requeue: true,
    });
    // 3 is settled by its reject, before the acks: one multiple ack covers the rest.
    assert_eq!(h.methods(), [requeue, ack(5, true)]);
}

#[test]
fn no_ack_deliveries_do_not_hold_up_a_run() {
    let (mut h, id, epoch) = consuming(false);
    // A second, no-ack consumer on the same channel takes tags 2 and 3.
    start_consumer(&mut h, (id, epoch), "auto", true);
    deliver(&mut h, id, [1]);
    h.deliver(id, "auto", 2);
    h.deliver(id, "auto", 3);
    deliver(&mut h, id, [4]);
    settle(&mut h, id, epoch, &[ack(1, false), ack(4, false)]);
    assert_eq!(h.methods(), [ack(4, true)]);
}

#[test]
fn a_manual_get_waits_for_its_ack_and_a_no_ack_get_does_not() {
    let (mut h, id, epoch) = consuming(false);
    deliver(&mut h, id, [1]);
    for (tag, no_ack) in [(2, false), (3, true)] {
        let get = Method::BasicGet(BasicGet {
            queue: ShortStr::from_static("q"),
            no_ack,
            ..Default::default()
        });
        h.request((id, epoch), get);
        let mut out = Outbound::new();
        let ok = Method::BasicGetOk(BasicGetOk {
            delivery_tag: tag,
            ..Default::default()
        });
        out.push_content(id, &ok, &BasicProperties::default(), "g".into(), 0)
            .unwrap();
        let bytes = out.copy_to_bytes(out.remaining());
        h.feed_bytes(&bytes);
    }
    deliver(&mut h, id, [4]);
    h.sent();
    settle(&mut h, id, epoch, &[ack(1, false), ack(4, false)]);
    assert_eq!(h.methods(), [ack(1, false), ack(4, false)], "2 is held");
    settle(&mut h, id, epoch, &[ack(2, false)]);
    assert_eq!(h.methods(), [ack(2, false)]);
}

#[test]
fn a_dropped_consumer_hands_back_its_buffer_and_the_run_goes_on_after_it() {
    let (mut h, id, epoch) = consuming(false);
    deliver(&mut h, id, 1..=4);
    // The application took 1 and 2; 3 and 4 are still buffered when it drops the consumer.
    for _ in 0..2 {
        let tag = ShortStr::from_static(CONSUMER);
        let (poll, _) = h.core.poll_delivery(id, epoch, &tag, WaiterId(0));
        assert!(matches!(poll, Poll::Ready(Some(Ok(_)))));
    }
    h.core
        .drop_consumer(id, epoch, &ShortStr::from_static(CONSUMER), []);
    settle(&mut h, id, epoch, &[ack(1, false), ack(2, false)]);
    let reject = |t| {
        Method::BasicReject(BasicReject {
            delivery_tag: t,
            requeue: true,
        })
    };
    let cancel = Method::BasicCancel(BasicCancel {
        consumer_tag: ShortStr::from_static(CONSUMER),
        nowait: false,
    });
    // 3 and 4 were handed back first, so the ack of 2 may cover 1 as well.
    assert_eq!(h.methods(), [reject(3), reject(4), cancel, ack(2, true)]);
}

#[test]
fn deliveries_a_dropped_stream_took_ahead_are_handed_back_before_its_buffer() {
    let (mut h, id, epoch) = consuming(false);
    deliver(&mut h, id, 1..=6);
    let tag = ShortStr::from_static(CONSUMER);
    let mut ahead = std::collections::VecDeque::new();
    let (poll, _) = h
        .core
        .poll_deliveries(id, epoch, &tag, WaiterId(0), &mut ahead, 2);
    assert!(matches!(poll, Poll::Ready(Some(Ok(_)))));
    let taken: Vec<u64> = ahead.iter().map(|d| d.delivery_tag()).collect();
    assert_eq!(taken, [2, 3], "the next two, oldest first");
    // The stream handed out 1 (acked) and holds 2 and 3 when the application drops it.
    settle(&mut h, id, epoch, &[ack(1, false)]);
    h.core.drop_consumer(id, epoch, &tag, ahead);
    let reject = |t| {
        Method::BasicReject(BasicReject {
            delivery_tag: t,
            requeue: true,
        })
    };
    let cancel = Method::BasicCancel(BasicCancel {
        consumer_tag: tag.clone(),
        nowait: false,
    });
    let want = [
        ack(1, false),
        reject(2),
        reject(3),
        reject(4),
        reject(5),
        reject(6),
        cancel,
    ];
    assert_eq!(h.methods(), want);
}
