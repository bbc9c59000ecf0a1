//! The input path: frames split off a read at once, deliveries read whole and in place, a
//! read stopped by a full consumer, and whole deliveries the usual path does not take.

use std::task::Poll;

use amqp_codec::methods::*;
use amqp_codec::{Method, ReplyCode};

use super::poison_tests::{consuming, next, plain_props, raw_delivery};
use super::tests::close_code;
use crate::config::ConnectionConfig;

/// Deliveries `tags` to consumer `c1` on channel `id`, back to back, as one read.
fn one_read(id: u16, tags: impl IntoIterator<Item = u64>) -> Vec<u8> {
    tags.into_iter()
        .flat_map(|tag| raw_delivery(id, tag, &plain_props(), b"body", 1).to_vec())
        .collect()
}

/// The tags of what consumer `c1` has buffered, taken.
fn take_all(h: &mut super::harness::Harness, ids: (u16, u64)) -> Vec<u64> {
    let mut tags = Vec::new();
    while let Poll::Ready(Some(Ok(parts))) = next(h, ids) {
        assert_eq!(&parts.body[..], b"body");
        assert_eq!(
            parts.properties.content_type().as_deref(),
            Some(&b"text"[..])
        );
        assert_eq!(
            (parts.exchange.as_bytes(), parts.routing_key.as_bytes()),
            (&b"ex"[..], &b"rk"[..])
        );
        tags.push(parts.delivery_tag);
    }
    tags
}

/// The reply code of the connection.close the client sent, if it sent one.
fn close_sent(h: &mut super::harness::Harness) -> Option<u16> {
    h.methods().iter().find_map(close_code)
}

#[test]
fn a_full_consumer_stops_the_read_midway_and_the_rest_follows_in_order() {
    let mut config = ConnectionConfig::default();
    config.limits.consumer_buffer = 2;
    let (mut h, ids) = consuming(config);
    h.feed_bytes(&one_read(ids.0, 1..=5));
    assert!(h.core.read_paused(), "the buffer is full");
    assert!(
        h.core.has_input_left(),
        "the read's other frames wait in the core"
    );
    let mut tags = take_all(&mut h, ids);
    assert_eq!(tags, [1, 2], "no more than the buffer holds");
    // The driver's next turn, with nothing new read.
    for _ in 0..3 {
        h.feed_bytes(&[]);
        tags.extend(take_all(&mut h, ids));
    }
    assert_eq!(
        tags,
        [1, 2, 3, 4, 5],
        "every delivery, in order, none twice"
    );
    assert!(!h.core.has_input_left() && !h.core.read_paused());
    assert!(h.methods().is_empty(), "nothing was wrong");
}

#[test]
fn a_delivery_on_channel_0_is_refused_as_its_method_frame_would_be() {
    let (mut h, _) = consuming(ConnectionConfig::default());
    h.feed_bytes(&one_read(0, [1]));
    assert_eq!(close_sent(&mut h), Some(ReplyCode::COMMAND_INVALID.0));
}

#[test]
fn a_delivery_on_a_channel_never_opened_is_a_channel_error() {
    let (mut h, _) = consuming(ConnectionConfig::default());
    h.feed_bytes(&one_read(9, [1]));
    assert_eq!(close_sent(&mut h), Some(ReplyCode::CHANNEL_ERROR.0));
}

#[test]
fn a_delivery_on_a_closing_channel_is_discarded() {
    let (mut h, ids) = consuming(ConnectionConfig::default());
    h.core.close_channel(ids.0, ids.1).expect("open");
    assert!(matches!(h.methods()[..], [Method::ChannelClose(_)]));
    h.feed_bytes(&one_read(ids.0, [1, 2]));
    assert!(
        h.methods().is_empty(),
        "no reject, no close: discarded until close-ok"
    );
    assert!(h.core.closed_error().is_none(), "the connection is up");
    assert!(
        matches!(
            next(&mut h, ids),
            Poll::Ready(None) | Poll::Pending | Poll::Ready(Some(Err(_)))
        ),
        "nothing reaches the consumer"
    );
}

#[test]
fn a_whole_delivery_in_the_middle_of_a_message_is_out_of_order() {
    let (mut h, ids) = consuming(ConnectionConfig::default());
    // A delivery whose body comes in two frames: its method and header, and one body frame.
    let split = raw_delivery(ids.0, 1, &plain_props(), b"half", 2);
    let last_frame = 8 + 4;
    h.feed_bytes(&split[..split.len() - last_frame]);
    assert!(h.methods().is_empty(), "a message in progress");
    // A whole delivery before the rest of that body.
    h.feed_bytes(&one_read(ids.0, [2]));
    assert_eq!(close_sent(&mut h), Some(ReplyCode::UNEXPECTED_FRAME.0));
}

#[test]
fn a_body_in_several_frames_is_assembled_and_reads_the_same() {
    let (mut h, ids) = consuming(ConnectionConfig::default());
    let mut read = raw_delivery(ids.0, 1, &plain_props(), b"bo", 2).to_vec();
    read.extend(one_read(ids.0, [2]));
    h.feed_bytes(&read);
    let Poll::Ready(Some(Ok(first))) = next(&mut h, ids) else {
        panic!("the assembled delivery");
    };
    assert_eq!((first.delivery_tag, &first.body[..]), (1, &b"bobo"[..]));
    assert_eq!(take_all(&mut h, ids), [2], "the whole one after it");
    // Both acknowledged as one: the tags are unsettled alike whichever way they came.
    let ack = Method::BasicAck(BasicAck {
        delivery_tag: 2,
        multiple: true,
    });
    h.core.settle(ids.0, ids.1, 0, 2, &ack).expect("settles");
    assert_eq!(h.methods(), [ack]);
}
