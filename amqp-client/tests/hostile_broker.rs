//! The real client against a hostile scripted broker (`amqp_test_support::scripted_broker`):
//! each case sends what RabbitMQ never would while a call is pending, and checks that the
//! client answers as the spec says (connection.close with the reply code, and the offending
//! class and method where there is one) and that the pending call fails with a typed error,
//! within a bound, without a panic.

#![allow(clippy::unwrap_used)] // test scaffolding: a failed step of the script is a failed test

use std::time::Duration;

use amqp_client::amqp_codec::methods::{
    BasicAck, BasicConsumeOk, BasicDeliver, BasicReject, ChannelFlow, ConfirmSelectOk,
    ConnectionClose, ConnectionStart, QueueDeclareOk, QueuePurge,
};
use amqp_client::amqp_codec::{BasicProperties, LongStr, Method, Outbound, ReplyCode};
use amqp_client::{Connection, ConnectionConfig, Error, PublishOptions, QueueDeclareOptions};
use amqp_test_support::scripted_broker::{PROTOCOL_HEADER, ScriptedBroker};
use bytes::Buf;

/// Bound on each case.
const LIMIT: Duration = Duration::from_secs(10);

fn config(port: u16) -> ConnectionConfig {
    ConnectionConfig::builder()
        .host("127.0.0.1")
        .port(port)
        .heartbeat(0)
        .connection_timeout(Duration::from_secs(5))
        .build()
}

/// The bytes of one method frame.
fn method_frame(channel: u16, method: &Method) -> Vec<u8> {
    let mut out = Outbound::new();
    out.push_method(channel, method, 0).unwrap();
    out.copy_to_bytes(out.remaining()).to_vec()
}

/// A raw frame: type, channel, payload, frame-end.
fn raw_frame(kind: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![kind];
    f.extend_from_slice(&channel.to_be_bytes());
    f.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
    f.extend_from_slice(payload);
    f.push(0xCE);
    f
}

/// A client with channel 1 open (in confirm mode if `confirm`) waits on a queue.declare; the
/// broker then sends `hostile`. Returns the connection.close the client sent and the error
/// the pending declare got.
async fn violation(hostile: Vec<u8>, confirm: bool) -> (ConnectionClose, Error) {
    let broker = ScriptedBroker::bind().await.unwrap();
    let cfg = config(broker.port());
    let server = tokio::spawn(async move {
        let mut peer = broker.accept(0).await;
        peer.open_channel(1).await;
        if confirm {
            assert!(matches!(peer.recv().await, Method::ConfirmSelect(_)));
            peer.send(1, Method::ConfirmSelectOk(ConfirmSelectOk {}))
                .await;
        }
        assert!(matches!(peer.recv().await, Method::QueueDeclare(_)));
        peer.send_raw(&hostile).await;
        peer.expect_connection_close().await
    });
    let client = async {
        let conn = Connection::connect_with(cfg).await.unwrap();
        let ch = conn.open_channel().await.unwrap();
        if confirm {
            ch.confirm_select().await.unwrap();
        }
        let pending = ch.queue_declare("q", QueueDeclareOptions::default()).await;
        let err = pending.unwrap_err();
        // Every later call fails too, at once.
        assert!(ch.queue_purge("q").await.is_err());
        err
    };
    let err = tokio::time::timeout(LIMIT, client).await.expect("no hang");
    let close = tokio::time::timeout(LIMIT, server)
        .await
        .expect("the client closes")
        .unwrap();
    (close, err)
}

#[track_caller]
fn assert_protocol_error(err: &Error, code: ReplyCode) {
    match err {
        Error::Protocol { code: c, .. } => assert_eq!(*c, code, "{err}"),
        other => panic!("expected a protocol error {code:?}, got {other:?}"),
    }
}

#[tokio::test]
async fn garbage_after_the_handshake_is_a_frame_error() {
    let (close, err) = violation(b"GET / HTTP/1.1\r\n\r\n".to_vec(), false).await;
    assert_eq!(close.reply_code, 501);
    assert_protocol_error(&err, ReplyCode::FRAME_ERROR);
}

#[tokio::test]
async fn a_frame_declaring_4_gib_is_refused_from_its_header() {
    let (close, err) = violation(vec![1, 0, 1, 0xFF, 0xFF, 0xFF, 0xFF], false).await;
    assert_eq!(close.reply_code, 501);
    assert_protocol_error(&err, ReplyCode::FRAME_ERROR);
}

#[tokio::test]
async fn a_wrong_frame_end_octet_is_a_frame_error() {
    let mut frame = method_frame(1, &Method::ChannelFlow(ChannelFlow { active: true }));
    *frame.last_mut().unwrap() = 0x00;
    let (close, err) = violation(frame, false).await;
    assert_eq!(close.reply_code, 501);
    assert_protocol_error(&err, ReplyCode::FRAME_ERROR);
}

#[tokio::test]
async fn a_frame_on_a_channel_never_opened_is_a_channel_error() {
    let frame = method_frame(7, &Method::ChannelFlow(ChannelFlow { active: false }));
    let (close, err) = violation(frame, false).await;
    assert_eq!(close.reply_code, 504);
    assert_protocol_error(&err, ReplyCode::CHANNEL_ERROR);
}

#[tokio::test]
async fn a_body_longer_than_its_header_declared_is_a_frame_error() {
    let mut bytes = method_frame(1, &Method::BasicDeliver(BasicDeliver::default()));
    // Content header: class 60, weight 0, body size 3, no properties.
    let mut header = vec![0, 60, 0, 0];
    header.extend_from_slice(&3u64.to_be_bytes());
    header.extend_from_slice(&[0, 0]);
    bytes.extend(raw_frame(2, 1, &header));
    bytes.extend(raw_frame(3, 1, b"too long"));
    let (close, err) = violation(bytes, false).await;
    assert_eq!(close.reply_code, 501);
    assert_protocol_error(&err, ReplyCode::FRAME_ERROR);
}

#[tokio::test]
async fn a_content_header_of_an_unknown_class_is_refused() {
    let mut bytes = method_frame(1, &Method::BasicDeliver(BasicDeliver::default()));
    let mut header = vec![0x03, 0xE7, 0, 0]; // class 999
    header.extend_from_slice(&1u64.to_be_bytes());
    header.extend_from_slice(&[0, 0]);
    bytes.extend(raw_frame(2, 1, &header));
    let (close, err) = violation(bytes, false).await;
    assert!(matches!(close.reply_code, 503 | 505), "{close:?}");
    // A content header has no method id: the class is named in the reply text.
    assert!(
        close.reply_text.as_str().is_some_and(|t| t.contains("999")),
        "{close:?}"
    );
    assert!(matches!(err, Error::Protocol { .. }), "{err:?}");
}

#[tokio::test]
async fn an_unknown_method_is_command_invalid_with_its_ids() {
    // Class 999, method 7, no arguments.
    let (close, err) = violation(raw_frame(1, 1, &[0x03, 0xE7, 0, 7]), false).await;
    assert_eq!(close.reply_code, 503);
    assert_eq!((close.class_id, close.method_id), (999, 7));
    assert_protocol_error(&err, ReplyCode::COMMAND_INVALID);
}

#[tokio::test]
async fn a_method_only_clients_send_is_command_invalid_with_its_ids() {
    let purge = Method::QueuePurge(QueuePurge::default());
    let (close, err) = violation(method_frame(1, &purge), false).await;
    assert_eq!(close.reply_code, 503);
    assert_eq!((close.class_id, close.method_id), (50, 30));
    assert_protocol_error(&err, ReplyCode::COMMAND_INVALID);
}

#[tokio::test]
async fn an_ack_for_a_tag_never_published_is_command_invalid() {
    let ack = Method::BasicAck(BasicAck {
        delivery_tag: 5,
        multiple: false,
    });
    let (close, err) = violation(method_frame(1, &ack), true).await;
    assert_eq!(close.reply_code, 503);
    assert_protocol_error(&err, ReplyCode::COMMAND_INVALID);
}

/// The same while a publish awaits its confirm: the confirm fails with the protocol error
/// (neither left waiting nor taken as acked).
#[tokio::test]
async fn an_ack_for_a_tag_never_published_fails_the_pending_confirm() {
    let broker = ScriptedBroker::bind().await.unwrap();
    let cfg = config(broker.port());
    let server = tokio::spawn(async move {
        let mut peer = broker.accept(0).await;
        peer.open_channel(1).await;
        assert!(matches!(peer.recv().await, Method::ConfirmSelect(_)));
        peer.send(1, Method::ConfirmSelectOk(ConfirmSelectOk {}))
            .await;
        assert!(matches!(peer.recv().await, Method::BasicPublish(_)));
        let ack = Method::BasicAck(BasicAck {
            delivery_tag: 5,
            multiple: false,
        });
        peer.send(1, ack).await;
        peer.expect_connection_close().await
    });
    let client = async {
        let conn = Connection::connect_with(cfg).await.unwrap();
        let ch = conn.open_channel().await.unwrap();
        ch.confirm_select().await.unwrap();
        let confirm = ch
            .basic_publish(
                "",
                "q",
                PublishOptions::default(),
                &BasicProperties::default(),
                "m",
            )
            .await
            .unwrap();
        let outcome = confirm.await;
        assert_eq!(ch.pending_confirms(), 0);
        outcome
    };
    let outcome = tokio::time::timeout(LIMIT, client).await.expect("no hang");
    let err = outcome.expect_err("the pending confirm fails");
    assert_protocol_error(&err, ReplyCode::COMMAND_INVALID);
    let close = tokio::time::timeout(LIMIT, server)
        .await
        .expect("the client closes")
        .unwrap();
    assert_eq!(close.reply_code, 503);
}

/// A delivery whose content header announces more than `Limits::max_message_size` (here
/// 4 MiB against 1 MiB) is dropped frame by frame as it arrives and handed to its consumer as
/// `Error::UnreadableDelivery`, with its tag: no channel.close (which would put it back at the
/// head of the queue, for the next consumer to choke on), the call pending on the channel is
/// answered, and the connection lives on.
#[tokio::test]
async fn a_message_over_the_size_limit_is_dropped_as_it_comes_and_handed_over() {
    let broker = ScriptedBroker::bind().await.unwrap();
    let mut cfg = config(broker.port());
    cfg.limits.max_message_size = 1 << 20;
    let server = tokio::spawn(async move {
        let mut peer = broker.accept(0).await;
        peer.open_channel(1).await;
        let Method::BasicConsume(consume) = peer.recv().await else {
            panic!("basic.consume");
        };
        let ok = BasicConsumeOk {
            consumer_tag: consume.consumer_tag.clone(),
        };
        peer.send(1, Method::BasicConsumeOk(ok)).await;
        assert!(matches!(peer.recv().await, Method::QueueDeclare(_)));
        let deliver = Method::BasicDeliver(BasicDeliver {
            delivery_tag: 1,
            consumer_tag: consume.consumer_tag,
            ..Default::default()
        });
        let mut bytes = method_frame(1, &deliver);
        // Content header: class 60, weight 0, body size 4 MiB, no properties.
        let mut header = vec![0, 60, 0, 0];
        header.extend_from_slice(&(4u64 << 20).to_be_bytes());
        header.extend_from_slice(&[0, 0]);
        bytes.extend(raw_frame(2, 1, &header));
        peer.send_raw(&bytes).await;
        let chunk = vec![7u8; 128 * 1024 - 8];
        let mut left = 4usize << 20;
        while left > 0 {
            let n = left.min(chunk.len());
            peer.send_raw(&raw_frame(3, 1, &chunk[..n])).await;
            left -= n;
        }
        let declare_ok = QueueDeclareOk {
            queue: amqp_client::amqp_codec::ShortStr::from_static("q"),
            ..Default::default()
        };
        peer.send(1, Method::QueueDeclareOk(declare_ok)).await;
        let settled = peer.recv().await;
        (settled, peer)
    });
    let client = async {
        let conn = Connection::connect_with(cfg).await.unwrap();
        let ch = conn.open_channel().await.unwrap();
        let mut consumer = ch.basic_consume("q", Default::default()).await.unwrap();
        ch.queue_declare("q", QueueDeclareOptions::default())
            .await
            .expect("the pending call is answered");
        let Some(Err(Error::UnreadableDelivery(unreadable))) = consumer.recv().await else {
            panic!("expected the oversized delivery, as unreadable");
        };
        assert_eq!(
            (unreadable.delivery_tag, unreadable.body_size),
            (1, 4 << 20)
        );
        unreadable.reject().unwrap();
        assert!(conn.is_open());
        conn
    };
    let _conn = tokio::time::timeout(LIMIT, client).await.expect("no hang");
    let (settled, _peer) = tokio::time::timeout(LIMIT, server)
        .await
        .expect("the client answers")
        .unwrap();
    assert_eq!(
        settled,
        Method::BasicReject(BasicReject {
            delivery_tag: 1,
            requeue: false
        })
    );
}

#[tokio::test]
async fn a_second_connection_start_is_command_invalid() {
    let start = Method::ConnectionStart(ConnectionStart {
        version_major: 0,
        version_minor: 9,
        server_properties: Default::default(),
        mechanisms: LongStr::from("PLAIN"),
        locales: LongStr::from("en_US"),
    });
    let (close, err) = violation(method_frame(0, &start), false).await;
    assert_eq!(close.reply_code, 503);
    assert_eq!((close.class_id, close.method_id), (10, 10));
    assert_protocol_error(&err, ReplyCode::COMMAND_INVALID);
}

#[tokio::test]
async fn a_protocol_header_rejection_is_not_amqp() {
    let broker = ScriptedBroker::bind().await.unwrap();
    let cfg = config(broker.port());
    let server = tokio::spawn(async move {
        let mut peer = broker.accept_raw().await;
        assert_eq!(&peer.read_exact(8).await[..], PROTOCOL_HEADER);
        // "I speak AMQP 1.0, not what you asked for", then the spec says close the socket.
        peer.send_raw(b"AMQP\x00\x01\x00\x00").await;
        peer.hang_up();
    });
    let err = tokio::time::timeout(LIMIT, Connection::connect_with(cfg))
        .await
        .expect("no hang")
        .unwrap_err();
    assert!(matches!(err, Error::NotAmqp(_)), "{err:?}");
    assert!(err.to_string().contains("protocol header"), "{err}");
    server.await.unwrap();
}
