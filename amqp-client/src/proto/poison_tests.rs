//! Messages that must never block a queue or take the connection down, and handshakes that
//! must end with a reason: the core driven without sockets.
//!
//! * A delivery the client will not keep (over the size limit) or cannot read (properties
//!   that do not parse) reaches its consumer as unreadable, with its tag; the channel and the
//!   connection go on, and rejecting it sends basic.reject without requeue.
//! * A delivery no consumer takes is rejected with requeue (or left, when it may be a no-ack
//!   delivery), and counted.
//! * A frame-max below 4096 is raised to it; endless connection.secure rounds end; a handshake
//!   timeout names its step; a confirm failed by a broker's close carries its code.

use std::task::Poll;
use std::time::Duration;

use amqp_codec::methods::*;
use amqp_codec::{
    BasicProperties, DiscardReason, FieldError, Frame, Method, Outbound, ReplyCode, ShortStr,
};
use bytes::{Buf, Bytes};

use super::ack_tests::start_consumer;
use super::tests::{Harness, close_code, start};
use super::{DeliveryParts, Publish, RawDelivery, Reply, WaiterId};
use crate::config::ConnectionConfig;
use crate::error::{ConnectStep, Error};
use crate::recovery::RecoveryPolicy;

/// The broker's bytes for a delivery of `tag` to consumer `c1` on channel `id`, with a header
/// whose properties are `props` (raw: flags and values) and a body of `body_frames` frames of
/// `chunk` bytes each.
pub(super) fn raw_delivery(
    id: u16,
    tag: u64,
    props: &[u8],
    chunk: &[u8],
    body_frames: usize,
) -> Bytes {
    let mut out = Outbound::new();
    let deliver = Method::BasicDeliver(BasicDeliver {
        consumer_tag: ShortStr::from_static("c1"),
        delivery_tag: tag,
        exchange: ShortStr::from_static("ex"),
        routing_key: ShortStr::from_static("rk"),
        ..Default::default()
    });
    out.push_method(id, &deliver, 0).expect("encodes");
    let mut wire = out.copy_to_bytes(out.remaining()).to_vec();
    let body_size = (chunk.len() * body_frames) as u64;
    let mut payload = vec![0, 60, 0, 0];
    payload.extend_from_slice(&body_size.to_be_bytes());
    payload.extend_from_slice(props);
    wire.push(2);
    wire.extend_from_slice(&id.to_be_bytes());
    wire.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    wire.extend_from_slice(&payload);
    wire.push(0xCE);
    for _ in 0..body_frames {
        let mut out = Outbound::new();
        let body = Frame::Body {
            channel: id,
            body: Bytes::copy_from_slice(chunk),
        };
        out.push_frame(&body, 0).expect("encodes");
        wire.extend_from_slice(&out.copy_to_bytes(out.remaining()));
    }
    Bytes::from(wire)
}

/// Properties with only a headers table holding one entry of the unknown type letter `?`.
fn unreadable_props() -> Vec<u8> {
    let table = [1, b'k', b'?', 0];
    let mut props = vec![0x20, 0x00]; // the headers flag
    props.extend_from_slice(&(table.len() as u32).to_be_bytes());
    props.extend_from_slice(&table);
    props
}

/// Properties with content-type only.
pub(super) fn plain_props() -> Vec<u8> {
    let mut props = vec![0x80, 0x00, 4];
    props.extend_from_slice(b"text");
    props
}

/// The next item of consumer `c1`'s stream, as the fields the application's `Delivery` is
/// made of.
pub(super) fn next(
    h: &mut Harness,
    (id, epoch): (u16, u64),
) -> Poll<Option<Result<DeliveryParts, Error>>> {
    let tag = ShortStr::from_static("c1");
    let (poll, _) = h.core.poll_delivery(id, epoch, &tag, WaiterId(0));
    poll.map(|item| item.map(|raw| raw.map(RawDelivery::into_parts)))
}

pub(super) fn consuming(config: ConnectionConfig) -> (Harness, (u16, u64)) {
    let mut h = Harness::new(config);
    h.open(0);
    let ids = h.channel();
    start_consumer(&mut h, ids, "c1", false);
    (h, ids)
}

#[test]
fn an_oversized_delivery_reaches_its_consumer_as_unreadable_and_the_channel_goes_on() {
    let mut config = ConnectionConfig::default();
    config.limits.max_message_size = 10;
    let (mut h, (id, epoch)) = consuming(config);
    // 100 bytes in 4 frames, over the limit of 10; then a message that fits.
    h.feed_bytes(&raw_delivery(id, 1, &plain_props(), &[7; 25], 4));
    h.feed_bytes(&raw_delivery(id, 2, &plain_props(), b"ok", 1));
    assert!(h.methods().is_empty(), "no close, no reject on its own");
    assert!(h.core.closed_error().is_none(), "the connection is up");

    let Poll::Ready(Some(Ok(first))) = next(&mut h, (id, epoch)) else {
        panic!("the unreadable delivery comes first");
    };
    assert_eq!(first.delivery_tag, 1);
    assert_eq!(
        (first.exchange.as_str(), first.routing_key.as_str()),
        (Some("ex"), Some("rk"))
    );
    let dropped = first.dropped.expect("marked unreadable");
    assert_eq!(dropped.body_size, 100);
    assert_eq!(
        dropped.reason,
        DiscardReason::TooLarge {
            declared: 100,
            limit: 10
        }
    );
    assert!(first.body.is_empty(), "nothing of it was kept");
    let Poll::Ready(Some(Ok(second))) = next(&mut h, (id, epoch)) else {
        panic!("the next delivery follows on the same channel");
    };
    assert_eq!((second.delivery_tag, &second.body[..]), (2, &b"ok"[..]));
    assert!(second.dropped.is_none());

    // Rejecting it by its tag dead-letters it; the channel still takes requests.
    let reject = Method::BasicReject(BasicReject {
        delivery_tag: 1,
        requeue: false,
    });
    h.core.settle(id, epoch, 0, 1, &reject).expect("settles");
    assert_eq!(h.methods(), [reject]);
    let qos = Method::BasicQos(BasicQos::default());
    h.core.request(id, epoch, qos).expect("open");
    assert_eq!(h.core.delivery_stats().unreadable, 1);
}

#[test]
fn a_delivery_whose_properties_do_not_parse_is_unreadable_not_a_connection_error() {
    let (mut h, ids) = consuming(ConnectionConfig::default());
    let (id, _) = ids;
    h.feed_bytes(&raw_delivery(id, 1, &unreadable_props(), b"body", 3));
    h.feed_bytes(&raw_delivery(id, 2, &plain_props(), b"next", 1));
    assert!(h.methods().is_empty(), "no connection.close 502");
    assert!(h.core.closed_error().is_none());
    let Poll::Ready(Some(Ok(first))) = next(&mut h, ids) else {
        panic!("expected the unreadable delivery");
    };
    let dropped = first.dropped.expect("marked unreadable");
    assert_eq!(dropped.body_size, 12);
    assert_eq!(
        dropped.reason,
        DiscardReason::BadProperties(FieldError::UnknownFieldType { letter: b'?' })
    );
    let Poll::Ready(Some(Ok(second))) = next(&mut h, ids) else {
        panic!("expected the next delivery");
    };
    assert_eq!(
        second.properties.content_type().map(|c| c.to_vec()),
        Some(b"text".to_vec())
    );
    // An empty body completes at the header.
    h.feed_bytes(&raw_delivery(id, 3, &unreadable_props(), b"", 0));
    let Poll::Ready(Some(Ok(third))) = next(&mut h, ids) else {
        panic!("expected the empty unreadable delivery");
    };
    assert_eq!(
        (third.delivery_tag, third.dropped.map(|d| d.body_size)),
        (3, Some(0))
    );
}

#[test]
fn a_bad_header_where_none_is_expected_still_closes_the_connection() {
    // Without a deliver before it, it is a misplaced frame (505), as any header would be.
    let (mut h, (id, _)) = consuming(ConnectionConfig::default());
    let wire = raw_delivery(id, 1, &unreadable_props(), b"", 0);
    let mut decoder = amqp_codec::FrameDecoder::with_frame_max(0);
    let mut buf = bytes::BytesMut::from(&wire[..]);
    let _ = decoder.decode(&mut buf); // skip the deliver: only the header is fed
    h.feed_bytes(&buf);
    assert_eq!(h.methods().iter().find_map(close_code), Some(505));
}

#[test]
fn an_unreadable_get_ok_and_return_keep_their_tag_and_route() {
    let mut h = Harness::new(ConnectionConfig::default());
    h.open(0);
    let (id, epoch) = h.channel();
    // basic.get: the reply is the dropped message, with its tag.
    let get = Method::BasicGet(BasicGet::default());
    let get = h.request((id, epoch), get);
    let mut out = Outbound::new();
    let get_ok = Method::BasicGetOk(BasicGetOk {
        delivery_tag: 5,
        ..Default::default()
    });
    out.push_method(id, &get_ok, 0).expect("encodes");
    let mut wire = out.copy_to_bytes(out.remaining()).to_vec();
    let delivery = raw_delivery(id, 0, &unreadable_props(), b"x", 1);
    // Drop the deliver frame of `raw_delivery` (7 + 4 + its arguments + 1): keep the header.
    let mut decoder = amqp_codec::FrameDecoder::with_frame_max(0);
    let mut rest = bytes::BytesMut::from(&delivery[..]);
    let _ = decoder.decode(&mut rest);
    wire.extend_from_slice(&rest);
    h.feed_bytes(&wire);
    let Some(Ok(Reply::Discarded(d, _))) = h.reply(get) else {
        panic!("expected the dropped get-ok");
    };
    assert!(matches!(d.method, Method::BasicGetOk(ok) if ok.delivery_tag == 5));
    assert_eq!(h.core.delivery_stats().unreadable, 1);

    // basic.return in confirm mode: the confirm still says "returned".
    let select = Method::ConfirmSelect(ConfirmSelect::default());
    h.request((id, epoch), select);
    h.feed(id, Method::ConfirmSelectOk(ConfirmSelectOk {}));
    let publish = Method::BasicPublish(BasicPublish {
        exchange: ShortStr::from_static("ex"),
        routing_key: ShortStr::from_static("rk"),
        mandatory: true,
        ..Default::default()
    });
    let props = BasicProperties::default();
    let Ok(Publish::Queued { seq: Some(seq), .. }) = h.core.publish(
        id,
        epoch,
        &crate::proto::harness::args_of(&publish),
        &props,
        "x".into(),
    ) else {
        panic!("expected a confirm sequence");
    };
    let ret = Method::BasicReturn(BasicReturn {
        reply_code: 312,
        reply_text: ShortStr::from_static("NO_ROUTE"),
        exchange: ShortStr::from_static("ex"),
        routing_key: ShortStr::from_static("rk"),
    });
    let mut out = Outbound::new();
    out.push_method(id, &ret, 0).expect("encodes");
    let mut wire = out.copy_to_bytes(out.remaining()).to_vec();
    let mut rest = bytes::BytesMut::from(&delivery[..]);
    let _ = decoder.decode(&mut rest);
    wire.extend_from_slice(&rest);
    h.feed_bytes(&wire);
    h.feed(
        id,
        Method::BasicAck(BasicAck {
            delivery_tag: seq,
            multiple: false,
        }),
    );
    let Poll::Ready(Ok(confirmation)) = h.core.poll_confirm(id, epoch, 0, seq, WaiterId(0)) else {
        panic!("expected the confirm");
    };
    let returned = confirmation.returned().expect("the return is attached");
    assert_eq!(returned.reply_code, ReplyCode(312));
    assert!(matches!(
        returned.content_dropped,
        Some(DiscardReason::BadProperties(_))
    ));
    assert!(h.core.closed_error().is_none());
}

#[test]
fn a_delivery_for_an_unknown_consumer_is_requeued_and_counted() {
    let (mut h, (id, epoch)) = consuming(ConnectionConfig::default());
    h.deliver(id, "stranger", 1);
    assert_eq!(
        h.methods(),
        [Method::BasicReject(BasicReject {
            delivery_tag: 1,
            requeue: true
        })]
    );
    assert_eq!(h.core.delivery_stats().orphans_requeued, 1);
    // A consumer the broker cancelled: its late delivery is handed back too.
    h.feed(
        id,
        Method::BasicCancel(BasicCancel {
            consumer_tag: ShortStr::from_static("c1"),
            nowait: true,
        }),
    );
    h.deliver(id, "c1", 2);
    assert_eq!(
        h.methods(),
        [Method::BasicReject(BasicReject {
            delivery_tag: 2,
            requeue: true
        })]
    );
    assert_eq!(h.core.delivery_stats().orphans_requeued, 2);
    // The channel's counts outlive it.
    h.core.close_channel(id, epoch).expect("closes");
    h.feed(id, Method::ChannelCloseOk(ChannelCloseOk {}));
    h.channel();
    assert_eq!(h.core.delivery_stats().orphans_requeued, 2);
}

#[test]
fn an_unknown_consumer_on_a_channel_with_no_ack_consumers_is_left_and_counted() {
    let (mut h, ids) = consuming(ConnectionConfig::default());
    start_consumer(&mut h, ids, "auto", true);
    // It may be a no-ack delivery: rejecting it would close the channel (unknown tag).
    h.deliver(ids.0, "stranger", 1);
    assert!(h.methods().is_empty());
    let stats = h.core.delivery_stats();
    assert_eq!((stats.orphans_ignored, stats.orphans_requeued), (1, 0));
}

#[test]
fn a_frame_max_below_4096_is_raised_to_it() {
    let mut h = Harness::new(ConnectionConfig::default());
    h.feed(0, start());
    h.methods();
    h.feed(
        0,
        Method::ConnectionTune(ConnectionTune {
            channel_max: 0,
            frame_max: 1024,
            heartbeat: 0,
        }),
    );
    let sent = h.methods();
    let [Method::ConnectionTuneOk(tune), Method::ConnectionOpen(_)] = sent.as_slice() else {
        panic!("tune-ok and open must both go out: {sent:?}");
    };
    assert_eq!(tune.frame_max, 4096);
    h.feed(0, Method::ConnectionOpenOk(ConnectionOpenOk::default()));
    assert!(matches!(h.opened, Some(Ok(()))));
}

#[test]
fn a_second_connection_secure_ends_the_handshake_with_a_reason() {
    let mut h = Harness::new(ConnectionConfig::default());
    h.feed(0, start());
    h.methods();
    let secure = Method::ConnectionSecure(ConnectionSecure {
        challenge: Default::default(),
    });
    h.feed(0, secure.clone());
    assert!(matches!(
        h.methods().as_slice(),
        [Method::ConnectionSecureOk(_)]
    ));
    h.feed(0, secure);
    assert!(h.methods().is_empty(), "no second answer");
    let Some(Error::AuthenticationFailed { reason, .. }) = h.core.closed_error() else {
        panic!("{:?}", h.core.closed_error());
    };
    assert!(reason.contains("connection.secure 2 times"), "{reason}");
}

#[test]
fn a_handshake_timeout_names_the_step_it_waited_for() {
    let timeout = Duration::from_secs(5);
    let config = || {
        ConnectionConfig::builder()
            .connection_timeout(timeout)
            .build()
    };
    let tune = Method::ConnectionTune(ConnectionTune::default());
    for (replies, step) in [
        (vec![], ConnectStep::Start),
        (vec![start()], ConnectStep::Tune),
        (vec![start(), tune], ConnectStep::OpenOk),
    ] {
        let mut h = Harness::new(config());
        for reply in replies {
            h.feed(0, reply);
        }
        h.advance(timeout);
        let err = h.core.closed_error();
        assert!(
            matches!(err, Some(Error::ConnectTimeout { step: s, .. }) if s == step),
            "{err:?}"
        );
        let text = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(text.contains(&step.to_string()), "{text}");
    }
}

#[test]
fn a_confirm_failed_by_a_broker_close_carries_its_code_and_text() {
    let config = ConnectionConfig::default().with_recovery(RecoveryPolicy::default());
    let mut h = Harness::new(config);
    h.open(0);
    let (id, epoch) = h.channel();
    let select = Method::ConfirmSelect(ConfirmSelect::default());
    h.request((id, epoch), select);
    h.feed(id, Method::ConfirmSelectOk(ConfirmSelectOk {}));
    let publish = Method::BasicPublish(BasicPublish::default());
    let props = BasicProperties::default();
    let Ok(Publish::Queued {
        seq: Some(seq),
        generation,
    }) = h.core.publish(
        id,
        epoch,
        &crate::proto::harness::args_of(&publish),
        &props,
        "x".into(),
    )
    else {
        panic!("expected a confirm sequence");
    };
    h.feed(
        0,
        Method::ConnectionClose(ConnectionClose {
            reply_code: 320,
            reply_text: ShortStr::from_static("CONNECTION_FORCED - closed via management plugin"),
            class_id: 0,
            method_id: 0,
        }),
    );
    assert!(h.core.is_recovering());
    // Polled after the channel moved to the next generation.
    let Poll::Ready(Err(err)) = h.core.poll_confirm(id, epoch, generation, seq, WaiterId(0)) else {
        panic!("the confirm must fail");
    };
    assert_eq!(
        err.reply_code(),
        Some(ReplyCode::CONNECTION_FORCED),
        "{err:?}"
    );
    assert!(err.to_string().contains("management plugin"), "{err}");
}
