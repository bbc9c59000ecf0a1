//! The real client, driver and all, against a scripted broker on 127.0.0.1 that does what
//! RabbitMQ never would: a handshake that cannot end (a frame-max under the spec's minimum, a
//! connection.secure for every answer, a broker that goes quiet at each step) and a delivery
//! whose properties do not parse. Each ends with a typed error that says what happened, or
//! goes on: never a bare timeout, never a stall, never a connection lost over one message.

#![allow(clippy::unwrap_used)] // test scaffolding: a failed step of the script is a failed test

use std::time::{Duration, Instant};

use amqp_client::amqp_codec::methods::{
    BasicConsumeOk, BasicDeliver, ConnectionOpenOk, ConnectionSecure, ConnectionStart,
    ConnectionTune,
};
use amqp_client::amqp_codec::{LongStr, Method, Outbound, ShortStr};
use amqp_client::{ConnectStep, Connection, ConnectionConfig, DiscardReason, Error};
use amqp_test_support::scripted_broker::{PROTOCOL_HEADER, Peer, ScriptedBroker};
use bytes::Buf;

fn config(port: u16) -> ConnectionConfig {
    ConnectionConfig::builder()
        .host("127.0.0.1")
        .port(port)
        .heartbeat(0)
        .connection_timeout(Duration::from_secs(3))
        .build()
}

fn start() -> Method {
    Method::ConnectionStart(ConnectionStart {
        version_major: 0,
        version_minor: 9,
        server_properties: Default::default(),
        mechanisms: LongStr::from("PLAIN"),
        locales: LongStr::from("en_US"),
    })
}

/// Accepts the client, reads its protocol header and answers with connection.start.
async fn started(broker: &ScriptedBroker) -> Peer {
    let mut peer = broker.accept_raw().await;
    assert_eq!(&peer.read_exact(8).await[..], PROTOCOL_HEADER);
    peer.send(0, start()).await;
    assert!(matches!(peer.recv().await, Method::ConnectionStartOk(_)));
    peer
}

#[tokio::test]
async fn a_frame_max_under_4096_is_raised_to_it_and_the_connection_opens() {
    let broker = ScriptedBroker::bind().await.unwrap();
    let cfg = config(broker.port());
    let server = tokio::spawn(async move {
        let mut peer = started(&broker).await;
        let tune = ConnectionTune {
            channel_max: 16,
            frame_max: 512,
            heartbeat: 0,
        };
        peer.send(0, Method::ConnectionTune(tune)).await;
        let Method::ConnectionTuneOk(ok) = peer.recv().await else {
            panic!("tune-ok")
        };
        assert!(matches!(peer.recv().await, Method::ConnectionOpen(_)));
        peer.send(0, Method::ConnectionOpenOk(ConnectionOpenOk::default()))
            .await;
        (ok.frame_max, peer)
    });
    let conn = Connection::connect_with(cfg).await.unwrap();
    let (frame_max, _peer) = server.await.unwrap();
    assert_eq!(frame_max, 4096);
    assert!(conn.is_open());
}

#[tokio::test]
async fn a_broker_asking_for_secure_forever_is_an_authentication_error_at_once() {
    let broker = ScriptedBroker::bind().await.unwrap();
    let cfg = config(broker.port());
    let server = tokio::spawn(async move {
        let mut peer = started(&broker).await;
        let mut answers = 0;
        // Challenge every answer, as long as answers come.
        loop {
            let secure = Method::ConnectionSecure(ConnectionSecure {
                challenge: LongStr::from("again"),
            });
            peer.send(0, secure).await;
            match peer.recv_frame_within(Duration::from_secs(2)).await {
                Ok(Some(amqp_client::amqp_codec::Frame::Method {
                    method: Method::ConnectionSecureOk(_),
                    ..
                })) => answers += 1,
                _ => return answers,
            }
        }
    });
    let started = Instant::now();
    let err = Connection::connect_with(cfg).await.unwrap_err();
    let Error::AuthenticationFailed { reason, .. } = &err else {
        panic!("{err:?}");
    };
    assert!(reason.contains("connection.secure"), "{reason}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(server.await.unwrap(), 1, "one courtesy answer, then none");
}

#[tokio::test]
async fn a_handshake_timeout_names_the_step_that_never_came() {
    for step in [ConnectStep::Start, ConnectStep::Tune, ConnectStep::OpenOk] {
        let broker = ScriptedBroker::bind().await.unwrap();
        let mut cfg = config(broker.port());
        cfg.connection_timeout = Duration::from_millis(800);
        let server = tokio::spawn(async move {
            let mut peer = broker.accept_raw().await;
            peer.read_exact(8).await;
            if step != ConnectStep::Start {
                peer.send(0, start()).await;
                peer.recv().await;
            }
            if step == ConnectStep::OpenOk {
                peer.send(0, Method::ConnectionTune(ConnectionTune::default()))
                    .await;
                peer.recv().await;
            }
            // Then silence.
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        let err = Connection::connect_with(cfg).await.unwrap_err();
        assert!(
            matches!(err, Error::ConnectTimeout { step: s, .. } if s == step),
            "{step:?}: {err:?}"
        );
        assert!(err.to_string().contains(&step.to_string()), "{err}");
        server.abort();
    }
}

/// The bytes of a delivery on channel 1 whose headers table holds an unknown type letter.
fn unreadable_delivery(tag: u64) -> Vec<u8> {
    let mut out = Outbound::new();
    let deliver = Method::BasicDeliver(BasicDeliver {
        consumer_tag: ShortStr::from_static("c1"),
        delivery_tag: tag,
        ..Default::default()
    });
    out.push_method(1, &deliver, 0).unwrap();
    let mut wire = out.copy_to_bytes(out.remaining()).to_vec();
    let table = [1, b'k', b'?', 0];
    let mut payload = vec![0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0x20, 0x00];
    payload.extend_from_slice(&(table.len() as u32).to_be_bytes());
    payload.extend_from_slice(&table);
    wire.extend_from_slice(&[2, 0, 1]);
    wire.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    wire.extend_from_slice(&payload);
    wire.push(0xCE);
    wire.extend_from_slice(&[3, 0, 1, 0, 0, 0, 4]);
    wire.extend_from_slice(b"body");
    wire.push(0xCE);
    wire
}

#[tokio::test]
async fn a_delivery_whose_properties_do_not_parse_is_handed_over_and_rejected_by_its_tag() {
    let broker = ScriptedBroker::bind().await.unwrap();
    let cfg = config(broker.port());
    let server = tokio::spawn(async move {
        let mut peer = broker.accept(0).await;
        peer.open_channel(1).await;
        assert!(matches!(peer.recv().await, Method::BasicConsume(_)));
        let ok = BasicConsumeOk {
            consumer_tag: ShortStr::from_static("c1"),
        };
        peer.send(1, Method::BasicConsumeOk(ok)).await;
        peer.send_raw(&unreadable_delivery(1)).await;
        let next = Method::BasicDeliver(BasicDeliver {
            consumer_tag: ShortStr::from_static("c1"),
            delivery_tag: 2,
            ..Default::default()
        });
        peer.send_content(1, next, b"fine").await;
        // The client settles both: the unreadable one rejected without requeue.
        let mut settled = Vec::new();
        while settled.len() < 2 {
            match peer.recv().await {
                Method::BasicReject(r) => settled.push((r.delivery_tag, "reject", r.requeue)),
                Method::BasicAck(a) => settled.push((a.delivery_tag, "ack", a.multiple)),
                other => panic!("unexpected {other:?}"),
            }
        }
        (settled, peer)
    });
    let conn = Connection::connect_with(cfg).await.unwrap();
    let ch = conn.open_channel().await.unwrap();
    let mut consumer = ch.basic_consume("q", Default::default()).await.unwrap();
    let Some(Err(Error::UnreadableDelivery(unreadable))) = consumer.recv().await else {
        panic!("expected the unreadable delivery");
    };
    assert!(matches!(unreadable.reason, DiscardReason::BadProperties(_)));
    assert_eq!((unreadable.delivery_tag, unreadable.body_size), (1, 4));
    unreadable.reject().unwrap();
    let fine = consumer.recv().await.unwrap().unwrap();
    assert_eq!(&fine.body[..], b"fine");
    fine.ack().unwrap();
    let (settled, _peer) = tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(settled, [(1, "reject", false), (2, "ack", false)]);
    assert!(conn.is_open());
    assert_eq!(conn.delivery_stats().unreadable, 1);
}
