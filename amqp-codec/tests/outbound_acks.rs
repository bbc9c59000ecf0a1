//! `Outbound::push_ack` writes the same bytes as `push_method(BasicAck)`, and
//! `Outbound::extend_ack` rewrites the last frame only: an ack on the same channel, not yet taken,
//! for a lower tag. Anything queued or taken after the ack makes it final.

use amqp_codec::methods::{BasicAck, BasicNack};
use amqp_codec::{Frame, FrameDecoder, Method, Outbound};
use bytes::{Buf, BytesMut};

fn ack(delivery_tag: u64, multiple: bool) -> Method {
    Method::BasicAck(BasicAck {
        delivery_tag,
        multiple,
    })
}

/// Every frame queued, decoded back.
fn frames(mut out: Outbound) -> Vec<Frame> {
    let mut buf = BytesMut::new();
    while out.has_remaining() {
        let chunk = out.chunk();
        buf.extend_from_slice(chunk);
        let n = chunk.len();
        out.advance(n);
    }
    let mut decoder = FrameDecoder::new();
    let mut frames = Vec::new();
    while let Some(frame) = decoder.decode(&mut buf).expect("valid frames") {
        frames.push(frame);
    }
    assert!(buf.is_empty(), "trailing bytes");
    frames
}

fn method(channel: u16, method: Method) -> Frame {
    Frame::Method { channel, method }
}

#[test]
fn push_ack_writes_the_bytes_push_method_writes() {
    for (tag, multiple) in [(1, false), (u64::MAX, true), (0x0102_0304_0506_0708, false)] {
        let mut fast = Outbound::new();
        fast.push_ack(7, tag, multiple);
        let mut general = Outbound::new();
        general
            .push_method(7, &ack(tag, multiple), 0)
            .expect("fits");
        assert_eq!(
            fast.copy_to_bytes(fast.remaining()),
            general.copy_to_bytes(general.remaining())
        );
    }
}

#[test]
fn consecutive_acks_on_one_channel_become_one_multiple_ack() {
    let mut out = Outbound::new();
    out.push_ack(1, 5, false);
    assert!(out.extend_ack(1, 6));
    assert!(out.extend_ack(1, 9));
    assert_eq!(frames(out), vec![method(1, ack(9, true))]);
}

#[test]
fn only_a_higher_tag_on_the_same_channel_extends() {
    let mut out = Outbound::new();
    out.push_ack(1, 5, false);
    assert!(!out.extend_ack(2, 6), "another channel");
    assert!(!out.extend_ack(1, 5), "same tag");
    assert!(!out.extend_ack(1, 4), "lower tag");
    assert_eq!(frames(out), vec![method(1, ack(5, false))]);
}

#[test]
fn any_frame_queued_after_the_ack_makes_it_final() {
    let nack = Method::BasicNack(BasicNack {
        delivery_tag: 6,
        multiple: false,
        requeue: true,
    });
    let mut out = Outbound::new();
    out.push_ack(1, 5, false);
    out.push_method(1, &nack, 0).expect("fits");
    assert!(
        !out.extend_ack(1, 7),
        "would move the ack of 6 past its nack"
    );
    out.push_heartbeat();
    assert!(!out.extend_ack(1, 7));
    assert_eq!(
        frames(out),
        vec![method(1, ack(5, false)), method(1, nack), Frame::Heartbeat]
    );
}

#[test]
fn an_ack_already_taken_is_never_rewritten() {
    let mut out = Outbound::new();
    out.push_ack(1, 5, false);
    out.advance(3); // part of it is on its way to the socket
    assert!(!out.extend_ack(1, 6));

    // Taken whole (swapped out by a driver): the queue left behind starts afresh.
    let mut queued = Outbound::new();
    queued.push_ack(1, 5, false);
    let mut writing = Outbound::new();
    std::mem::swap(&mut queued, &mut writing);
    assert!(!queued.extend_ack(1, 6));
    queued.push_ack(1, 6, false);
    assert_eq!(frames(writing), vec![method(1, ack(5, false))]);
    assert_eq!(frames(queued), vec![method(1, ack(6, false))]);
}

#[test]
fn an_ack_behind_a_chained_body_still_extends() {
    // A publish freezes `buf` into a chunk; an ack queued after it lives in the new `buf`.
    let publish = Method::BasicPublish(amqp_codec::methods::BasicPublish::default());
    let mut out = Outbound::new();
    out.push_content(
        1,
        &publish,
        &amqp_codec::BasicProperties::default(),
        bytes::Bytes::from_static(b"body"),
        0,
    )
    .expect("fits");
    out.push_ack(2, 1, false);
    assert!(out.extend_ack(2, 2));
    let got = frames(out);
    assert_eq!(got.len(), 4, "method, header, body, ack: {got:?}");
    assert_eq!(got[3], method(2, ack(2, true)));
}
