//! The real client (driver and all) against a scripted broker on 127.0.0.1: what RabbitMQ
//! never does — going silent, dying mid-frame, closing in the middle of an RPC.

// Test scaffolding: a failed step of the script is a failed test.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use amqp_client::amqp_codec::methods::ConnectionClose;
use amqp_client::amqp_codec::{Frame, Method, ShortStr};
use amqp_client::{Connection, ConnectionConfig, Error};
use amqp_test_support::scripted_broker::{Peer, ScriptedBroker};

async fn listen() -> (ScriptedBroker, ConnectionConfig) {
    let listener = ScriptedBroker::bind().await.unwrap();
    let port = listener.port();
    let config = ConnectionConfig::builder()
        .host("127.0.0.1")
        .port(port)
        .heartbeat(1)
        .connection_timeout(Duration::from_secs(5))
        .build();
    (listener, config)
}

#[tokio::test]
async fn silent_peer_is_detected_by_heartbeat_within_two_intervals() {
    let (listener, config) = listen().await;
    let server = tokio::spawn(async move {
        let peer = listener.accept(1).await;
        // Stay connected and say nothing.
        tokio::time::sleep(Duration::from_secs(10)).await;
        drop(peer);
    });
    let conn = Connection::connect_with(config).await.unwrap();
    assert_eq!(conn.heartbeat(), 1);
    let started = Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(5), conn.closed())
        .await
        .expect("detected in time");
    assert!(matches!(err, Error::HeartbeatTimeout(_)), "{err:?}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(4),
        "took {took:?}"
    );
    // Later calls fail at once with the same error.
    assert!(matches!(
        conn.open_channel().await,
        Err(Error::HeartbeatTimeout(_))
    ));
    server.abort();
}

#[tokio::test]
async fn client_sends_heartbeats_when_idle() {
    let (listener, config) = listen().await;
    let server = tokio::spawn(async move {
        let mut peer = listener.accept(1).await;
        let mut heartbeats = 0;
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            match peer.recv_frame_within(Duration::from_millis(200)).await {
                Ok(None) => break,
                Ok(Some(frame)) => {
                    if frame == Frame::Heartbeat {
                        heartbeats += 1;
                    }
                    // Keep the client alive.
                    peer.send_raw(&[8, 0, 0, 0, 0, 0, 0, 0xCE]).await;
                }
                Err(_) => {}
            }
        }
        heartbeats
    });
    let conn = Connection::connect_with(config).await.unwrap();
    let heartbeats = server.await.unwrap();
    assert!(
        (3..=8).contains(&heartbeats),
        "{heartbeats} heartbeats in 3 s at a 1 s interval"
    );
    assert!(conn.is_open());
}

#[tokio::test]
async fn peer_dying_mid_frame_fails_pending_calls() {
    let (listener, config) = listen().await;
    let server = tokio::spawn(async move {
        let mut peer = listener.accept(0).await;
        // Two calls pending: two channel.open.
        assert!(matches!(peer.recv().await, Method::ChannelOpen(_)));
        assert!(matches!(peer.recv().await, Method::ChannelOpen(_)));
        // Half a frame, then gone.
        peer.send_raw(&[1, 0, 1, 0, 0, 0, 40, 0, 20]).await;
        peer.hang_up();
    });
    let conn = Connection::connect_with(config).await.unwrap();
    let (first, second) = tokio::time::timeout(Duration::from_secs(5), async {
        tokio::join!(conn.open_channel(), conn.open_channel())
    })
    .await
    .expect("no hang");
    assert!(matches!(first, Err(Error::ConnectionLost)), "{first:?}");
    assert!(matches!(second, Err(Error::ConnectionLost)), "{second:?}");
    // And every later call, at once.
    assert!(matches!(
        conn.open_channel().await,
        Err(Error::ConnectionLost)
    ));
    server.await.unwrap();
}

#[tokio::test]
async fn connection_close_in_the_middle_of_an_rpc() {
    let (listener, config) = listen().await;
    let server = tokio::spawn(async move {
        let mut peer = listener.accept(0).await;
        assert!(matches!(peer.recv().await, Method::ChannelOpen(_)));
        peer.send(
            0,
            Method::ConnectionClose(ConnectionClose {
                reply_code: 320,
                reply_text: ShortStr::from_static("CONNECTION_FORCED - broker shutdown"),
                class_id: 0,
                method_id: 0,
            }),
        )
        .await;
        assert!(matches!(peer.recv().await, Method::ConnectionCloseOk(_)));
    });
    let conn = Connection::connect_with(config).await.unwrap();
    let err = tokio::time::timeout(Duration::from_secs(5), conn.open_channel())
        .await
        .expect("no hang")
        .unwrap_err();
    assert_eq!(err.reply_code().map(|c| c.0), Some(320), "{err}");
    assert!(err.to_string().contains("broker shutdown"), "{err}");
    server.await.unwrap();
}

#[tokio::test]
async fn non_amqp_peer_is_a_clear_error() {
    let (listener, config) = listen().await;
    let server = tokio::spawn(async move {
        let mut peer = listener.accept_raw().await;
        peer.read_exact(8).await;
        peer.send_raw(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
        tokio::time::sleep(Duration::from_secs(3)).await;
    });
    let started = Instant::now();
    let err = Connection::connect_with(config).await.unwrap_err();
    assert!(matches!(err, Error::NotAmqp(_)), "{err:?}");
    // From the bytes themselves: neither the peer's hang-up (3 s) nor the connection timeout
    // (5 s) is waited for.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    server.await.unwrap();
}

#[tokio::test]
async fn a_peer_that_accepts_and_closes_at_once_is_recoverable_but_a_greeting_is_not() {
    // What a load balancer or port forward with no broker behind it does.
    let (listener, config) = listen().await;
    let server = tokio::spawn(async move {
        let mut peer = listener.accept_raw().await;
        // Read the protocol header first, so the close is a clean EOF and not a reset.
        peer.read_exact(8).await;
        peer.hang_up();
    });
    let err = tokio::time::timeout(Duration::from_secs(5), Connection::connect_with(config))
        .await
        .expect("no hang")
        .unwrap_err();
    assert!(matches!(err, Error::ClosedBeforeStart { .. }), "{err:?}");
    assert!(err.is_recoverable(), "{err:?}");
    assert!(err.is_connection_error(), "{err:?}");
    assert!(err.to_string().contains("before connection.start"), "{err}");
    server.await.unwrap();
    // A real greeting that is not AMQP, then the hang-up: still NotAmqp, not retried.
    let (listener, config) = listen().await;
    let server = tokio::spawn(async move {
        let mut peer = listener.accept_raw().await;
        peer.read_exact(8).await;
        peer.send_raw(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
        peer.hang_up();
    });
    let err = tokio::time::timeout(Duration::from_secs(5), Connection::connect_with(config))
        .await
        .expect("no hang")
        .unwrap_err();
    assert!(matches!(err, Error::NotAmqp(_)), "{err:?}");
    assert!(!err.is_recoverable(), "{err:?}");
    server.await.unwrap();
}

/// Opens channel 1 on the scripted side: answers channel.open.
async fn open_channel(peer: &mut Peer) {
    use amqp_client::amqp_codec::methods::ChannelOpenOk;
    assert!(matches!(peer.recv().await, Method::ChannelOpen(_)));
    peer.send(1, Method::ChannelOpenOk(ChannelOpenOk::default()))
        .await;
}

/// Reads until the client's next basic.publish (skipping its header and body frames).
async fn next_publish(peer: &mut Peer) {
    loop {
        if let Method::BasicPublish(_) = peer.recv().await {
            return;
        }
    }
}

#[tokio::test]
async fn blocked_connection_holds_publishes_until_unblocked() {
    use amqp_client::PublishOptions;
    use amqp_client::amqp_codec::BasicProperties;
    use amqp_client::amqp_codec::methods::{ConnectionBlocked, ConnectionUnblocked};
    let (listener, config) = listen().await;
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let mut peer = listener.accept(0).await;
        open_channel(&mut peer).await;
        peer.send(
            0,
            Method::ConnectionBlocked(ConnectionBlocked {
                reason: ShortStr::from_static("low on memory"),
            }),
        )
        .await;
        go_rx.await.unwrap();
        peer.send(0, Method::ConnectionUnblocked(ConnectionUnblocked {}))
            .await;
        next_publish(&mut peer).await;
    });
    let conn = Connection::connect_with(config).await.unwrap();
    let ch = conn.open_channel().await.unwrap();
    let mut changes = conn.blocked_changes();
    tokio::time::timeout(Duration::from_secs(5), changes.wait_for(Option::is_some))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(conn.blocked().as_deref(), Some("low on memory"));
    let props = BasicProperties::default();
    let publish = ch.basic_publish("", "q", PublishOptions::default(), &props, "held");
    tokio::pin!(publish);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), publish.as_mut())
            .await
            .is_err(),
        "publish must wait while blocked"
    );
    go_tx.send(()).unwrap();
    // Not in confirm mode: the confirm resolves at once, nothing to wait for.
    let _confirm = tokio::time::timeout(Duration::from_secs(5), publish)
        .await
        .expect("released by unblocked")
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(conn.blocked(), None);
}

#[tokio::test]
async fn channel_flow_pauses_publishing_and_is_acknowledged() {
    use amqp_client::PublishOptions;
    use amqp_client::amqp_codec::BasicProperties;
    use amqp_client::amqp_codec::methods::ChannelFlow;
    let (listener, config) = listen().await;
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let mut peer = listener.accept(0).await;
        open_channel(&mut peer).await;
        peer.send(1, Method::ChannelFlow(ChannelFlow { active: false }))
            .await;
        assert!(matches!(peer.recv().await, Method::ChannelFlowOk(ok) if !ok.active));
        go_rx.await.unwrap();
        peer.send(1, Method::ChannelFlow(ChannelFlow { active: true }))
            .await;
        assert!(matches!(peer.recv().await, Method::ChannelFlowOk(ok) if ok.active));
        next_publish(&mut peer).await;
    });
    let conn = Connection::connect_with(config).await.unwrap();
    let ch = conn.open_channel().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let props = BasicProperties::default();
    let publish = ch.basic_publish("", "q", PublishOptions::default(), &props, "held");
    tokio::pin!(publish);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), publish.as_mut())
            .await
            .is_err(),
        "publish must wait while flow is off"
    );
    go_tx.send(()).unwrap();
    let _confirm = tokio::time::timeout(Duration::from_secs(5), publish)
        .await
        .expect("released by flow on")
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn update_secret_resolves_on_its_ok() {
    use amqp_client::amqp_codec::methods::ConnectionUpdateSecretOk;
    let (listener, config) = listen().await;
    let server = tokio::spawn(async move {
        let mut peer = listener.accept(0).await;
        let Method::ConnectionUpdateSecret(m) = peer.recv().await else {
            panic!("expected update-secret")
        };
        assert_eq!(m.new_secret.as_bytes(), b"new-token");
        assert_eq!(m.reason, "refresh");
        peer.send(
            0,
            Method::ConnectionUpdateSecretOk(ConnectionUpdateSecretOk {}),
        )
        .await;
        peer
    });
    let conn = Connection::connect_with(config).await.unwrap();
    tokio::time::timeout(
        Duration::from_secs(5),
        conn.update_secret("new-token", "refresh"),
    )
    .await
    .unwrap()
    .unwrap();
    drop(server.await.unwrap());
}

#[tokio::test]
async fn a_dribbling_peer_is_a_heartbeat_timeout() {
    let (listener, config) = listen().await;
    let server = tokio::spawn(async move {
        let mut peer = listener.accept(1).await;
        // A frame header promising 1000 bytes, then one byte every 300 ms: bytes keep coming,
        // a frame never completes.
        peer.send_raw(&[1, 0, 0, 0, 0, 3, 0xE8]).await;
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if !peer.try_send_raw(&[0]).await {
                break;
            }
        }
    });
    let conn = Connection::connect_with(config).await.unwrap();
    let started = Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(6), conn.closed())
        .await
        .expect("detected in time");
    assert!(matches!(err, Error::HeartbeatTimeout(_)), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "took {:?}",
        started.elapsed()
    );
    server.abort();
}

#[tokio::test]
async fn a_dribbling_handshake_is_bounded_by_the_connection_timeout() {
    let (listener, mut config) = listen().await;
    config.connection_timeout = Duration::from_secs(2);
    let server = tokio::spawn(async move {
        let mut peer = listener.accept_raw().await;
        peer.read_exact(8).await;
        for byte in [1u8, 0, 0, 0, 0, 1, 0] {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if !peer.try_send_raw(&[byte]).await {
                break;
            }
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    });
    let started = Instant::now();
    let err = Connection::connect_with(config).await.unwrap_err();
    assert!(matches!(err, Error::ConnectTimeout { .. }), "{err:?}");
    // At the connection timeout (2 s): not before, and not much after.
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(3),
        "took {took:?}"
    );
    server.abort();
}
