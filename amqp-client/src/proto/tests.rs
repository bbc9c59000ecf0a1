//! The core driven without sockets: a scripted broker's frames in, the client's frames out,
//! time made up. Covers what a real broker never does (violations, silence) and the
//! handshake, heartbeat and confirm logic precisely.

use std::time::Duration;

use amqp_codec::methods::*;
use amqp_codec::{BasicProperties, Frame, Method, Outbound, ReplyCode, ShortStr};
use bytes::Buf;

pub(super) use super::harness::{Harness, start};
use super::{Reply, WaiterId};
use crate::config::ConnectionConfig;
use crate::error::Error;

pub(super) fn close_code(m: &Method) -> Option<u16> {
    match m {
        Method::ConnectionClose(c) => Some(c.reply_code),
        _ => None,
    }
}

#[test]
fn handshake_sends_start_ok_tune_ok_and_open() {
    let mut h = Harness::new(
        ConnectionConfig::builder()
            .vhost("v1")
            .heartbeat(30)
            .build(),
    );
    h.feed(0, start());
    let sent = h.methods();
    let [Method::ConnectionStartOk(ok)] = sent.as_slice() else {
        panic!("{sent:?}")
    };
    assert_eq!(ok.mechanism, "PLAIN");
    assert_eq!(ok.response.as_bytes(), b"\0guest\0guest");
    h.feed(
        0,
        Method::ConnectionTune(ConnectionTune {
            channel_max: 0,
            frame_max: 1_048_576,
            heartbeat: 60,
        }),
    );
    let sent = h.methods();
    let [Method::ConnectionTuneOk(tune), Method::ConnectionOpen(open)] = sent.as_slice() else {
        panic!("{sent:?}")
    };
    assert_eq!(
        (tune.channel_max, tune.frame_max, tune.heartbeat),
        (2047, 131_072, 30)
    );
    assert_eq!(open.virtual_host, "v1");
    assert!(h.opened.is_none(), "not open before open-ok");
    h.feed(0, Method::ConnectionOpenOk(ConnectionOpenOk::default()));
    assert!(matches!(h.opened, Some(Ok(()))));
}

#[test]
fn access_refused_during_handshake_is_an_authentication_error() {
    let mut h = Harness::new(ConnectionConfig::default());
    h.feed(0, start());
    h.feed(
        0,
        Method::ConnectionClose(ConnectionClose {
            reply_code: 403,
            reply_text: ShortStr::from_static("ACCESS_REFUSED - Login was refused"),
            class_id: 0,
            method_id: 0,
        }),
    );
    assert!(matches!(
        h.opened,
        Some(Err(Error::AuthenticationFailed { .. }))
    ));
    assert!(h.core.is_finished());
    assert!(matches!(
        h.methods().last(),
        Some(Method::ConnectionCloseOk(_))
    ));
}

#[test]
fn non_amqp_greeting_is_not_amqp_error() {
    let mut h = Harness::new(ConnectionConfig::default());
    h.feed_bytes(b"HTTP/1.1 400 Bad Request\r\n\r\n");
    assert!(matches!(h.opened, Some(Err(Error::NotAmqp(_)))));
    let mut h = Harness::new(ConnectionConfig::default());
    h.feed_bytes(b"AMQP\x00\x00\x09\x01");
    assert!(
        matches!(h.core.closed_error(), Some(Error::NotAmqp(_))),
        "{:?}",
        h.core.phase
    );
}

#[test]
fn handshake_deadline_fails_with_connect_timeout() {
    let mut h = Harness::new(
        ConnectionConfig::builder()
            .connection_timeout(Duration::from_secs(2))
            .build(),
    );
    h.advance(Duration::from_secs(1));
    assert!(!h.core.is_finished());
    h.advance(Duration::from_secs(1));
    assert!(matches!(
        h.core.closed_error(),
        Some(Error::ConnectTimeout {
            step: crate::ConnectStep::Start,
            ..
        })
    ));
}

#[test]
fn heartbeats_sent_when_idle_and_silence_fails_after_two_intervals() {
    let mut h = Harness::new(ConnectionConfig::builder().heartbeat(10).build());
    h.open(10);
    h.advance(Duration::from_secs(4));
    assert!(h.sent().is_empty(), "not idle long enough");
    h.advance(Duration::from_secs(1));
    assert_eq!(
        h.sent(),
        vec![Frame::Heartbeat],
        "idle for half the interval"
    );
    // Any inbound frame is liveness.
    h.feed_bytes(&[8, 0, 0, 0, 0, 0, 0, 0xCE]);
    h.advance(Duration::from_secs(19));
    assert!(!h.core.is_finished());
    h.advance(Duration::from_secs(1));
    assert!(
        matches!(h.core.closed_error(), Some(Error::HeartbeatTimeout(d)) if d == Duration::from_secs(20))
    );
}

#[test]
fn bad_frame_end_closes_with_501() {
    let mut h = Harness::new(ConnectionConfig::default());
    h.open(0);
    h.feed_bytes(&[8, 0, 0, 0, 0, 0, 0, 0xAB]);
    let sent = h.methods();
    assert_eq!(sent.iter().find_map(close_code), Some(501));
    assert!(matches!(
        h.core.closed_error(),
        Some(Error::Protocol {
            code: ReplyCode::FRAME_ERROR,
            ..
        })
    ));
    // close-ok finishes it.
    h.feed(0, Method::ConnectionCloseOk(ConnectionCloseOk {}));
    assert!(h.core.is_finished());
}

#[test]
fn frame_on_unopened_channel_closes_with_504() {
    let mut h = Harness::new(ConnectionConfig::default());
    h.open(0);
    h.feed(
        7,
        Method::BasicAck(BasicAck {
            delivery_tag: 1,
            multiple: false,
        }),
    );
    assert_eq!(h.methods().iter().find_map(close_code), Some(504));
}

#[test]
fn client_only_method_from_server_closes_with_503_and_ids() {
    let mut h = Harness::new(ConnectionConfig::default());
    h.open(0);
    let (id, _) = h.channel();
    h.feed(
        id,
        Method::QueuePurge(QueuePurge {
            ticket: 0,
            queue: ShortStr::from_static("q"),
            nowait: false,
        }),
    );
    let sent = h.methods();
    let Some(Method::ConnectionClose(c)) = sent.last() else {
        panic!("{sent:?}")
    };
    assert_eq!((c.reply_code, c.class_id, c.method_id), (503, 50, 30));
}

#[test]
fn server_channel_close_fails_pending_call_and_later_calls() {
    let mut h = Harness::new(ConnectionConfig::default());
    h.open(0);
    let (id, epoch) = h.channel();
    let declare = Method::QueueDeclare(QueueDeclare {
        queue: ShortStr::from_static("q"),
        passive: true,
        ..Default::default()
    });
    let first = h.request((id, epoch), declare.clone());
    // A second request waits for the first.
    let second = h.request((id, epoch), declare);
    assert_eq!(h.methods().len(), 1, "one synchronous request on the wire");
    h.feed(
        id,
        Method::ChannelClose(ChannelClose {
            reply_code: 404,
            reply_text: ShortStr::from_static("NOT_FOUND - no queue 'q'"),
            class_id: 50,
            method_id: 10,
        }),
    );
    assert!(matches!(
        h.methods().as_slice(),
        [Method::ChannelCloseOk(_)]
    ));
    let Some(Err(Error::ChannelClosed(reason))) = h.reply(first) else {
        panic!("first call not failed")
    };
    assert_eq!(reason.code, ReplyCode::NOT_FOUND);
    assert!(reason.to_string().contains("queue.declare"), "{reason}");
    assert!(matches!(
        h.reply(second),
        Some(Err(Error::ChannelClosed(_)))
    ));
    assert!(matches!(
        h.core.request(id, epoch, Method::TxSelect(TxSelect {})),
        Err(Error::ChannelClosed(_))
    ));
    // The connection lives on.
    assert!(h.core.closed_error().is_none());
}

#[test]
fn confirms_multiple_and_return_attached_to_next_ack() {
    let mut h = Harness::new(ConnectionConfig::default());
    h.open(0);
    let (id, epoch) = h.channel();
    h.request(
        (id, epoch),
        Method::ConfirmSelect(ConfirmSelect { nowait: false }),
    );
    h.feed(id, Method::ConfirmSelectOk(ConfirmSelectOk {}));
    let publish = Method::BasicPublish(BasicPublish {
        mandatory: true,
        ..Default::default()
    });
    let props = BasicProperties::default();
    let seqs: Vec<_> = (0..3)
        .map(|_| {
            match h
                .core
                .publish(
                    id,
                    epoch,
                    &crate::proto::harness::args_of(&publish),
                    &props,
                    "x".into(),
                )
                .unwrap()
            {
                super::Publish::Queued { seq, .. } => seq,
                super::Publish::MustWait(_) | super::Publish::Recovering(_) => {
                    panic!("nothing holds publishes back here")
                }
            }
        })
        .collect();
    assert_eq!(seqs, [Some(1), Some(2), Some(3)]);
    assert_eq!(h.core.pending_confirms(id, epoch), 3);
    h.feed(
        id,
        Method::BasicAck(BasicAck {
            delivery_tag: 2,
            multiple: true,
        }),
    );
    assert_eq!(h.core.pending_confirms(id, epoch), 1);
    // A return (method, header, body), then the ack for the returned publish.
    let mut out = Outbound::new();
    let ret = Method::BasicReturn(BasicReturn {
        reply_code: 312,
        reply_text: ShortStr::from_static("NO_ROUTE"),
        ..Default::default()
    });
    out.push_content(id, &ret, &props, "x".into(), 0).unwrap();
    let bytes = out.copy_to_bytes(out.remaining());
    h.feed_bytes(&bytes);
    h.feed(
        id,
        Method::BasicAck(BasicAck {
            delivery_tag: 3,
            multiple: false,
        }),
    );
    let std::task::Poll::Ready(Ok(crate::Confirmation::Returned(returned))) =
        h.core.poll_confirm(id, epoch, 0, 3, WaiterId(0))
    else {
        panic!("return not attached")
    };
    assert_eq!(returned.reply_code, ReplyCode::NO_ROUTE);
    // An ack for a tag never published is a protocol violation.
    h.feed(
        id,
        Method::BasicAck(BasicAck {
            delivery_tag: 99,
            multiple: false,
        }),
    );
    assert!(matches!(
        h.core.closed_error(),
        Some(Error::Protocol { .. })
    ));
    let _ = Reply::Method(Method::TxSelectOk(TxSelectOk {}));
}

#[test]
fn connection_close_from_server_fails_everything() {
    let mut h = Harness::new(ConnectionConfig::default());
    h.open(0);
    let (id, epoch) = h.channel();
    let tx_select = h.request((id, epoch), Method::TxSelect(TxSelect {}));
    h.feed(
        0,
        Method::ConnectionClose(ConnectionClose {
            reply_code: 320,
            reply_text: ShortStr::from_static("CONNECTION_FORCED"),
            class_id: 0,
            method_id: 0,
        }),
    );
    assert!(matches!(
        h.methods().last(),
        Some(Method::ConnectionCloseOk(_))
    ));
    let Some(Err(err)) = h.reply(tx_select) else {
        panic!("pending call not failed")
    };
    assert_eq!(err.reply_code(), Some(ReplyCode::CONNECTION_FORCED));
    assert!(err.is_connection_error());
    assert!(h.core.is_finished());
}

#[test]
fn a_4_gib_frame_is_refused_from_its_header_with_501() {
    let mut h = Harness::new(ConnectionConfig::default());
    h.open(0);
    // Method frame on channel 0 claiming 0xFFFFFFFF payload bytes: only the header arrives.
    h.feed_bytes(&[1, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF]);
    assert_eq!(h.methods().iter().find_map(close_code), Some(501));
    assert!(matches!(
        h.core.closed_error(),
        Some(Error::Protocol {
            code: ReplyCode::FRAME_ERROR,
            ..
        })
    ));
}

/// Channel 1 open, then the broker's bytes for one delivery with `body` declared as
/// `declared` bytes.
fn deliver_bytes(declared: u64, body: &[u8]) -> Vec<u8> {
    let mut out = Outbound::new();
    let deliver = Method::BasicDeliver(BasicDeliver {
        delivery_tag: 1,
        ..Default::default()
    });
    out.push_method(1, &deliver, 0).unwrap();
    let header = Frame::Header {
        channel: 1,
        header: amqp_codec::ContentHeader::basic(declared, BasicProperties::default()),
    };
    out.push_frame(&header, 0).unwrap();
    out.push_frame(
        &Frame::Body {
            channel: 1,
            body: bytes::Bytes::copy_from_slice(body),
        },
        0,
    )
    .unwrap();
    out.copy_to_bytes(out.remaining()).to_vec()
}

#[test]
fn a_body_longer_than_declared_closes_with_501() {
    let mut h = Harness::new(ConnectionConfig::default());
    h.open(0);
    h.channel();
    h.feed_bytes(&deliver_bytes(3, b"too long"));
    assert_eq!(h.methods().iter().find_map(close_code), Some(501));
}

#[test]
fn a_content_header_of_an_unknown_class_closes_with_an_error_code() {
    let mut h = Harness::new(ConnectionConfig::default());
    h.open(0);
    h.channel();
    let mut bytes = deliver_bytes(4, b"body");
    // The header frame follows the method frame; its payload starts with the class id.
    let method_len = 7 + u32::from_be_bytes([bytes[3], bytes[4], bytes[5], bytes[6]]) as usize + 1;
    bytes[method_len + 7] = 0;
    bytes[method_len + 8] = 99;
    h.feed_bytes(&bytes);
    let code = h.methods().iter().find_map(close_code);
    assert!(matches!(code, Some(503 | 505)), "{code:?}");
}

#[test]
fn an_unknown_method_closes_with_503_and_its_ids() {
    let mut h = Harness::new(ConnectionConfig::default());
    h.open(0);
    h.channel();
    // Method frame: class 60, method 999, no arguments.
    h.feed_bytes(&[1, 0, 1, 0, 0, 0, 4, 0, 60, 0x03, 0xE7, 0xCE]);
    let sent = h.methods();
    let Some(Method::ConnectionClose(c)) = sent.last() else {
        panic!("{sent:?}")
    };
    assert_eq!((c.reply_code, c.class_id, c.method_id), (503, 60, 999));
}

#[test]
fn a_second_connection_start_closes_with_503() {
    let mut h = Harness::new(ConnectionConfig::default());
    h.open(0);
    h.feed(0, start());
    assert_eq!(h.methods().iter().find_map(close_code), Some(503));
    assert!(matches!(
        h.core.closed_error(),
        Some(Error::Protocol { .. })
    ));
}

#[test]
fn garbage_after_the_handshake_closes_with_a_frame_error() {
    let mut h = Harness::new(ConnectionConfig::default());
    h.open(0);
    h.feed_bytes(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let code = h.methods().iter().find_map(close_code);
    assert!(matches!(code, Some(501..=505)), "{code:?}");
    // Nothing further is accepted, and close-ok never arriving ends it at the deadline.
    h.advance(Duration::from_secs(11));
    assert!(h.core.is_finished());
}
