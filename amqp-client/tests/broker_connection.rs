//! Connection-level behaviour against the real broker at `AMQP_URL`: refused credentials and
//! vhosts, peers that are not AMQP brokers, heartbeats (kept alive, and timing out through a
//! proxy that goes silent), a lost socket, and a connection force-closed with
//! `rabbitmqctl close_connection` while a consumer and confirms are pending.

mod common;

use std::time::{Duration, Instant};

use amqp_client::GetOptions;
use amqp_client::amqp_codec::{BasicProperties, FieldValue, ReplyCode};
use amqp_client::{
    AuthMechanism, Confirmation, Connection, ConnectionConfig, Error, PublishOptions,
    QueueDeclareOptions,
};
use amqp_test_support::{broker_addr, unique_name};
use common::{
    Cleanup, LIMIT, assert_connection_closed, config, connection_pid, plain, rabbitmqctl, url_with,
    within,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[tokio::test]
async fn wrong_password_is_authentication_failed() {
    within(LIMIT, async {
        for mechanism in [AuthMechanism::Plain, AuthMechanism::Amqplain] {
            let mut cfg = config();
            cfg.password = amqp_client::Secret::new("definitely-not-the-password");
            cfg.auth_mechanism = mechanism;
            let err = Connection::connect_with(cfg).await.unwrap_err();
            match &err {
                Error::AuthenticationFailed { mechanism: m, .. } => {
                    assert_eq!(*m, mechanism.name());
                }
                other => panic!("expected AuthenticationFailed, got {other:?}"),
            }
            assert_eq!(err.reply_code(), Some(ReplyCode::ACCESS_REFUSED));
            assert!(!format!("{err} {err:?}").contains("definitely-not-the-password"));
        }
        // The right password with AMQPLAIN works.
        let mut cfg = config();
        cfg.auth_mechanism = AuthMechanism::Amqplain;
        let conn = Connection::connect_with(cfg).await.unwrap();
        conn.close().await.unwrap();
        // EXTERNAL is not enabled on a default broker.
        let mut cfg = config();
        cfg.auth_mechanism = AuthMechanism::External;
        let err = Connection::connect_with(cfg).await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::MechanismNotOffered {
                    wanted: "EXTERNAL",
                    ..
                }
            ),
            "{err:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn unknown_vhost_is_connection_closed_530() {
    within(LIMIT, async {
        let mut cfg = config();
        cfg.vhost = unique_name("no-such-vhost");
        let err = Connection::connect_with(cfg).await.unwrap_err();
        assert_connection_closed(&err, ReplyCode::NOT_ALLOWED);
    })
    .await;
}

/// A one-connection TCP server on 127.0.0.1 that reads the client's protocol header, answers
/// with `reply` and keeps the socket open for `hold`.
async fn fake_server(reply: &'static [u8], hold: Duration) -> (u16, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("fake_server");
    let port = listener.local_addr().expect("fake_server").port();
    let task = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.expect("fake_server");
        let mut header = [0u8; 8];
        let _ = sock.read_exact(&mut header).await;
        let _ = sock.write_all(reply).await;
        tokio::time::sleep(hold).await;
    });
    (port, task)
}

fn local(port: u16, timeout: Duration) -> ConnectionConfig {
    ConnectionConfig::builder()
        .host("127.0.0.1")
        .port(port)
        .connection_timeout(timeout)
        .build()
}

#[tokio::test]
async fn a_non_amqp_peer_is_not_amqp_within_the_timeout() {
    within(LIMIT, async {
        let timeout = Duration::from_secs(5);
        // An HTTP server that keeps the socket open: detected from the bytes, not by EOF or
        // the timeout.
        let (port, server) =
            fake_server(b"HTTP/1.1 400 Bad Request\r\n\r\n", Duration::from_secs(20)).await;
        let start = Instant::now();
        let err = Connection::connect_with(local(port, timeout))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::NotAmqp(_)), "{err:?}");
        assert!(start.elapsed() < timeout, "took {:?}", start.elapsed());
        server.abort();
        // A broker that only speaks AMQP 1.0 answers with its own protocol header.
        let (port, server) = fake_server(b"AMQP\x00\x01\x00\x00", Duration::from_secs(20)).await;
        let err = Connection::connect_with(local(port, timeout))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::NotAmqp(_)), "{err:?}");
        server.abort();
        // A peer that hangs up at once said nothing to judge: closed before start, which a
        // retry may cure (a proxy with no broker behind it).
        let (port, server) = fake_server(b"", Duration::ZERO).await;
        let err = Connection::connect_with(local(port, timeout))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::ClosedBeforeStart { .. }), "{err:?}");
        assert!(err.is_recoverable(), "{err:?}");
        server.abort();
        // A peer that says nothing: the connection timeout.
        let (port, server) = fake_server(b"", Duration::from_secs(20)).await;
        let short = Duration::from_millis(700);
        let start = Instant::now();
        let err = Connection::connect_with(local(port, short))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::ConnectTimeout { .. }), "{err:?}");
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "took {:?}",
            start.elapsed()
        );
        server.abort();
    })
    .await;
}

#[tokio::test]
async fn heartbeats_keep_an_idle_connection_open() {
    let mut names = Cleanup::new();
    within(LIMIT, async {
        let conn = Connection::connect(&url_with("heartbeat=1")).await.unwrap();
        assert_eq!(conn.heartbeat(), 1);
        let ch = conn.open_channel().await.unwrap();
        let q = names.queue("q-heartbeat");
        ch.queue_declare(&q, plain()).await.unwrap();
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert!(conn.is_open(), "closed: {:?}", conn.close_reason());
        ch.confirm_select().await.unwrap();
        let outcome = ch
            .basic_publish(
                "",
                &q,
                PublishOptions::default(),
                &BasicProperties::default(),
                "alive",
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert_eq!(outcome, Confirmation::Acked);
        let m = ch
            .basic_get(&q, GetOptions::no_ack())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(m.delivery.body, "alive");
        ch.queue_delete(&q, Default::default()).await.unwrap();
        conn.close().await.unwrap();
        // heartbeat=0 only disables them if the broker agrees (RabbitMQ's rule: 0 on both
        // sides); against the broker's non-zero default its value wins.
        let conn = Connection::connect(&url_with("heartbeat=0")).await.unwrap();
        assert!(conn.heartbeat() > 0);
        conn.close().await.unwrap();
    })
    .await;
}

/// What the test proxy does with the bytes it relays.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Relay {
    /// Pass everything.
    Forward,
    /// Keep both sockets open and drop everything (a silent network).
    Blackhole,
    /// Close both sockets (a lost connection).
    Cut,
}

/// A TCP proxy to the broker for one connection, steered by the returned sender.
async fn proxy() -> (u16, watch::Sender<Relay>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy");
    let port = listener.local_addr().expect("proxy").port();
    let (tx, rx) = watch::channel(Relay::Forward);
    tokio::spawn(async move {
        let (client, _) = listener.accept().await.expect("proxy");
        let broker = TcpStream::connect(broker_addr()).await.expect("proxy");
        let (cr, cw) = client.into_split();
        let (br, bw) = broker.into_split();
        tokio::spawn(pipe(cr, bw, rx.clone()));
        tokio::spawn(pipe(br, cw, rx));
    });
    (port, tx)
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<Relay>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        tokio::select! {
            n = from.read(&mut buf) => {
                let Ok(n) = n else { return };
                if n == 0 {
                    return;
                }
                let relay = *mode.borrow();
                match relay {
                    Relay::Forward => {
                        if to.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                    Relay::Blackhole => {}
                    Relay::Cut => return,
                }
            }
            changed = mode.changed() => {
                if changed.is_err() || *mode.borrow() == Relay::Cut {
                    return;
                }
            }
        }
    }
}

#[tokio::test]
async fn a_silent_broker_is_a_heartbeat_timeout_and_fails_what_is_pending() {
    let mut names = Cleanup::new();
    within(LIMIT, async {
        let (port, relay) = proxy().await;
        let mut cfg = config();
        cfg.host = "127.0.0.1".into();
        cfg.port = port;
        cfg.heartbeat = 1;
        let conn = Connection::connect_with(cfg).await.unwrap();
        let ch = conn.open_channel().await.unwrap();
        let q = names.queue("q-silent");
        ch.queue_declare(&q, plain()).await.unwrap();
        let mut consumer = ch.basic_consume(&q, Default::default()).await.unwrap();
        let silenced = Instant::now();
        relay.send_replace(Relay::Blackhole);
        let got = consumer.recv().await;
        let waited = silenced.elapsed();
        assert!(
            matches!(got, Some(Err(Error::HeartbeatTimeout(_)))),
            "expected HeartbeatTimeout, got {got:?}"
        );
        assert!(waited < Duration::from_secs(5), "detected after {waited:?}");
        assert!(consumer.recv().await.is_none());
        assert!(matches!(conn.closed().await, Error::HeartbeatTimeout(_)));
        let err = ch.basic_qos(1, Default::default()).await.unwrap_err();
        assert!(err.is_connection_error(), "{err:?}");
        relay.send_replace(Relay::Cut);
    })
    .await;
}

#[tokio::test]
async fn a_lost_socket_fails_what_is_pending() {
    let mut names = Cleanup::new();
    within(LIMIT, async {
        let (port, relay) = proxy().await;
        let mut cfg = config();
        cfg.host = "127.0.0.1".into();
        cfg.port = port;
        let conn = Connection::connect_with(cfg).await.unwrap();
        let ch = conn.open_channel().await.unwrap();
        let q = names.queue("q-lost");
        ch.queue_declare(&q, plain()).await.unwrap();
        let mut consumer = ch.basic_consume(&q, Default::default()).await.unwrap();
        relay.send_replace(Relay::Cut);
        let got = consumer.recv().await;
        match &got {
            Some(Err(err)) => {
                assert!(err.is_connection_error(), "{err:?}");
                assert!(
                    matches!(err, Error::ConnectionLost | Error::Io(_)),
                    "{err:?}"
                );
            }
            other => panic!("expected a connection error, got {other:?}"),
        }
        assert!(consumer.recv().await.is_none());
        assert!(!conn.is_open());
        let err = conn.open_channel().await.unwrap_err();
        assert!(err.is_connection_error(), "{err:?}");
    })
    .await;
}

#[tokio::test]
async fn rabbitmqctl_close_connection_fails_everything_pending_with_320() {
    let mut names = Cleanup::new();
    within(Duration::from_secs(60), async {
        let conn_name = unique_name("amqp-client-close-me");
        let cfg = ConnectionConfig {
            connection_name: Some(conn_name.clone()),
            ..config()
        };
        let conn = Connection::connect_with(cfg).await.unwrap();
        let props = conn.server_properties();
        assert_eq!(
            props
                .get("product")
                .and_then(|v| v.as_str().map(str::to_owned))
                .as_deref(),
            Some("RabbitMQ")
        );
        // A consumer waiting on an empty queue.
        let idle = names.queue("q-close-idle");
        let ch1 = conn.open_channel().await.unwrap();
        ch1.queue_declare(&idle, plain()).await.unwrap();
        let mut consumer = ch1.basic_consume(&idle, Default::default()).await.unwrap();
        let waiting = tokio::spawn(async move {
            let first = consumer.recv().await;
            let second = consumer.recv().await;
            (first, second)
        });
        // A publisher of persistent messages to a durable queue, in confirm mode: the
        // broker confirms them only after writing to disk, so confirms are outstanding.
        let sink = names.queue("q-close-sink");
        let ch2 = conn.open_channel().await.unwrap();
        ch2.queue_declare(&sink, QueueDeclareOptions::default().with_durable())
            .await
            .unwrap();
        ch2.confirm_select().await.unwrap();
        let publisher_ch = ch2.clone();
        let publishing = tokio::spawn(async move {
            let props = BasicProperties::persistent();
            let mut confirms = Vec::new();
            loop {
                for _ in 0..50 {
                    match publisher_ch
                        .basic_publish("", &sink, PublishOptions::default(), &props, "payload")
                        .await
                    {
                        Ok(c) => confirms.push(c),
                        Err(err) => return (confirms, err),
                    }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });

        let pid = connection_pid(&conn_name).await;
        rabbitmqctl(&["close_connection", &pid, "closed by the amqp-client test"]).await;

        let (first, second) = waiting.await.unwrap();
        match first {
            Some(Err(err)) => assert_connection_closed(&err, ReplyCode::CONNECTION_FORCED),
            other => panic!("expected the consumer to fail with 320, got {other:?}"),
        }
        assert!(second.is_none(), "the consumer ends after the error");

        let (confirms, publish_err) = publishing.await.unwrap();
        assert_connection_closed(&publish_err, ReplyCode::CONNECTION_FORCED);
        let total = confirms.len();
        let mut failed = 0;
        for c in confirms {
            match c.await {
                Ok(Confirmation::Acked) => {}
                Err(err) => {
                    assert_connection_closed(&err, ReplyCode::CONNECTION_FORCED);
                    failed += 1;
                }
                Ok(other) => panic!("unexpected confirm {other:?}"),
            }
        }
        println!("{total} publishes, {failed} confirms failed with 320");
        match ch2.wait_for_confirms().await {
            Ok(all_acked) => assert!(all_acked && failed == 0),
            Err(err) => assert_connection_closed(&err, ReplyCode::CONNECTION_FORCED),
        }
        assert_eq!(ch2.pending_confirms(), 0);

        // Everything else fails the same way, at once.
        let closed = conn.closed().await;
        assert_connection_closed(&closed, ReplyCode::CONNECTION_FORCED);
        let Error::ConnectionClosed(reason) = &closed else {
            unreachable!()
        };
        assert!(
            reason.text.contains("closed by the amqp-client test"),
            "{}",
            reason.text
        );
        assert!(!conn.is_open());
        let err = ch1.basic_qos(1, Default::default()).await.unwrap_err();
        assert_connection_closed(&err, ReplyCode::CONNECTION_FORCED);
        let err = conn.open_channel().await.unwrap_err();
        assert_connection_closed(&err, ReplyCode::CONNECTION_FORCED);
        conn.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn connection_name_and_client_properties_reach_the_broker() {
    within(LIMIT, async {
        let conn_name = unique_name("amqp-client-named");
        let conn = Connection::connect(&url_with(&format!("connection_name={conn_name}")))
            .await
            .unwrap();
        let _pid = connection_pid(&conn_name).await;
        let caps = conn.server_properties().get("capabilities");
        let Some(FieldValue::Table(caps)) = caps else {
            panic!("no capabilities: {caps:?}");
        };
        assert_eq!(caps.get("publisher_confirms"), Some(FieldValue::Bool(true)));
        assert!(conn.channel_max() > 0);
        assert_eq!(conn.frame_max(), 131_072);
        conn.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn dropping_every_handle_closes_the_connection() {
    within(LIMIT, async {
        let conn_name = unique_name("amqp-client-dropped");
        let conn = Connection::connect(&url_with(&format!("connection_name={conn_name}")))
            .await
            .unwrap();
        let _pid = connection_pid(&conn_name).await;
        let ch = conn.open_channel().await.unwrap();
        drop(conn);
        // The channel keeps the connection alive.
        ch.basic_qos(1, Default::default()).await.unwrap();
        drop(ch);
        let needle = format!("\"{conn_name}\"");
        let mut gone = false;
        for _ in 0..20 {
            let listing = rabbitmqctl(&[
                "list_connections",
                "--quiet",
                "--no-table-headers",
                "client_properties",
            ])
            .await;
            if !listing.contains(&needle) {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        assert!(gone, "the broker still lists the dropped connection");
    })
    .await;
}
