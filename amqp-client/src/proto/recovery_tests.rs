//! Recovery in the core, without sockets: a lost connection suspends channels (consumer
//! streams stay open, pending confirms fail, acks of old deliveries are refused), a restart on
//! a new transport reopens them through the replay gate, and only then do calls go through.

use std::task::Poll;

use amqp_codec::methods::*;
use amqp_codec::{BasicProperties, Method, ShortStr};

use super::tests::Harness;
use super::{Publish, WaiterId};
use crate::config::ConnectionConfig;
use crate::error::Error;
use crate::proto::ConnectionState;
use crate::recovery::RecoveryPolicy;

fn tag() -> ShortStr {
    ShortStr::from_static("c1")
}

fn ack(delivery_tag: u64) -> Method {
    Method::BasicAck(BasicAck {
        delivery_tag,
        multiple: false,
    })
}

#[test]
fn a_lost_connection_suspends_channels_and_a_restart_brings_them_back_in_a_new_generation() {
    let mut h = Harness::new(ConnectionConfig::default().with_recovery(RecoveryPolicy::default()));
    h.open(0);
    let (id, epoch) = h.channel();
    for (request, reply) in [
        (
            Method::ConfirmSelect(ConfirmSelect::default()),
            Method::ConfirmSelectOk(ConfirmSelectOk {}),
        ),
        (
            Method::BasicConsume(BasicConsume {
                queue: ShortStr::from_static("q"),
                consumer_tag: tag(),
                ..Default::default()
            }),
            Method::BasicConsumeOk(BasicConsumeOk {
                consumer_tag: tag(),
            }),
        ),
    ] {
        h.call((id, epoch), request, reply);
    }
    h.deliver(id, "c1", 1);
    let publish = Method::BasicPublish(BasicPublish::default());
    let props = BasicProperties::default();
    let Ok(Publish::Queued {
        seq: Some(1),
        generation: 0,
    }) = h.core.publish(
        id,
        epoch,
        &crate::proto::harness::args_of(&publish),
        &props,
        "p".into(),
    )
    else {
        panic!("publish queued as #1 of generation 0");
    };
    h.sent();

    h.core.handle_eof();
    h.drain();
    assert!(h.core.is_recovering());
    assert!(matches!(h.core.closed_error(), Some(Error::Recovering)));
    assert!(matches!(
        h.states.last(),
        Some(ConnectionState::Recovering { attempt: 0 })
    ));
    // The confirm of the lost connection failed; its delivery cannot be acked any more.
    assert!(matches!(
        h.core.poll_confirm(id, epoch, 0, 1, WaiterId(0)),
        Poll::Ready(Err(_))
    ));
    let stale = h.core.settle(id, epoch, 0, 1, &ack(1));
    assert!(matches!(
        stale,
        Err(Error::StaleDelivery { delivery_tag: 1 })
    ));
    // The consumer's stream stays open (its buffered delivery is dropped: the broker requeues it).
    let (poll, _) = h.core.poll_delivery(id, epoch, &tag(), WaiterId(0));
    assert!(poll.is_pending());
    assert!(matches!(
        h.core.publish(
            id,
            epoch,
            &crate::proto::harness::args_of(&publish),
            &props,
            "p".into()
        ),
        Ok(Publish::Recovering(_))
    ));

    assert!(h.core.restart("127.0.0.1", 5672, h.now));
    h.open(0);
    // Still gated for the application until the replay is done.
    assert!(matches!(h.core.closed_error(), Some(Error::Recovering)));
    let suspended = h.core.suspended_channels();
    assert_eq!(suspended.len(), 1);
    assert_eq!((suspended[0].0, suspended[0].1), (id, epoch));
    assert_eq!(suspended[0].2, vec![&b"c1"[..]], "the consumer it keeps");
    h.core.reopen_channel(id, epoch).unwrap();
    assert!(matches!(h.methods().as_slice(), [Method::ChannelOpen(_)]));
    h.feed(id, Method::ChannelOpenOk(ChannelOpenOk::default()));
    let topology = h.recovery.as_ref().unwrap().topology.clone();
    let record = &topology.channels[&id];
    assert!(record.confirm);
    let consume = Method::BasicConsume(record.consumers[0].clone());
    for (request, reply) in [
        (
            Method::ConfirmSelect(ConfirmSelect::default()),
            Method::ConfirmSelectOk(ConfirmSelectOk {}),
        ),
        (
            consume,
            Method::BasicConsumeOk(BasicConsumeOk {
                consumer_tag: tag(),
            }),
        ),
    ] {
        h.core.replay_request(id, epoch, request).unwrap();
        h.feed(id, reply);
    }
    h.core.finish_recovery(1);
    h.drain();
    assert!(h.core.closed_error().is_none());
    assert!(matches!(
        h.states.last(),
        Some(ConnectionState::Recovered { count: 1 })
    ));

    // New deliveries reach the same stream, in generation 1, and settle; confirms restart at 1.
    h.deliver(id, "c1", 1);
    let (poll, _) = h.core.poll_delivery(id, epoch, &tag(), WaiterId(0));
    let Poll::Ready(Some(Ok(raw))) = poll else {
        panic!("a delivery")
    };
    assert_eq!((raw.delivery_tag(), raw.generation), (1, 1));
    h.core
        .settle(id, epoch, raw.generation, 1, &ack(1))
        .unwrap();
    assert!(matches!(
        h.core.publish(
            id,
            epoch,
            &crate::proto::harness::args_of(&publish),
            &props,
            "p".into()
        ),
        Ok(Publish::Queued {
            seq: Some(1),
            generation: 1
        })
    ));
}

/// Found under a sick network: while a recovery still restores other channels, the broker
/// already delivers on a channel whose consumer is back. Those deliveries belong to the
/// connection on the wire, so their acks must go out, not be refused as stale (they would hold
/// their prefetch slots until the connection closed, and starve the consumer).
#[test]
fn a_delivery_on_a_restored_channel_can_be_acked_before_the_whole_recovery_finishes() {
    let mut h = Harness::new(ConnectionConfig::default().with_recovery(RecoveryPolicy::default()));
    h.open(0);
    let (id, epoch) = h.channel();
    let consume = Method::BasicConsume(BasicConsume {
        queue: ShortStr::from_static("q"),
        consumer_tag: tag(),
        ..Default::default()
    });
    let consume_ok = Method::BasicConsumeOk(BasicConsumeOk {
        consumer_tag: tag(),
    });
    h.call((id, epoch), consume.clone(), consume_ok.clone());
    h.core.handle_eof();
    h.drain();
    assert!(h.core.restart("127.0.0.1", 5672, h.now));
    h.open(0);
    h.core.reopen_channel(id, epoch).unwrap();
    h.feed(id, Method::ChannelOpenOk(ChannelOpenOk::default()));
    h.core.replay_request(id, epoch, consume).unwrap();
    h.feed(id, consume_ok);
    h.sent();
    // Other channels may still be replaying: the application stays gated...
    assert!(matches!(h.core.closed_error(), Some(Error::Recovering)));
    // ...but this consumer is back, and the broker delivers to it.
    h.deliver(id, "c1", 1);
    let (poll, _) = h.core.poll_delivery(id, epoch, &tag(), WaiterId(0));
    let Poll::Ready(Some(Ok(raw))) = poll else {
        panic!("a delivery")
    };
    assert_eq!((raw.delivery_tag(), raw.generation), (1, 1));
    h.core
        .settle(id, epoch, raw.generation, 1, &ack(1))
        .expect("an ack of the connection on the wire goes out");
    assert!(
        matches!(h.methods().as_slice(), [Method::BasicAck(a)] if a.delivery_tag == 1),
        "the ack is written"
    );
    // A delivery of the generation before the loss stays refused.
    assert!(matches!(
        h.core.settle(id, epoch, 0, 1, &ack(1)),
        Err(Error::StaleDelivery { delivery_tag: 1 })
    ));
}

#[test]
fn an_application_close_or_refused_credentials_are_not_recovered() {
    let mut h = Harness::new(ConnectionConfig::default().with_recovery(RecoveryPolicy::default()));
    h.open(0);
    h.channel();
    h.core
        .close(amqp_codec::ReplyCode::REPLY_SUCCESS, "bye", h.now);
    h.core.handle_eof();
    h.drain();
    assert!(!h.core.is_recovering());
    assert!(h.closed, "the close is reported done");
    assert!(matches!(h.states.last(), Some(ConnectionState::Closed)));

    let mut h = Harness::new(ConnectionConfig::default().with_recovery(RecoveryPolicy::default()));
    h.core.lose(Error::AuthenticationFailed {
        mechanism: "PLAIN",
        reason: "no".into(),
    });
    h.drain();
    assert!(!h.core.is_recovering());
    assert!(matches!(h.states.last(), Some(ConnectionState::Failed(_))));
}
