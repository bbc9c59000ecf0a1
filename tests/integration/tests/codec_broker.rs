//! The codec against the real broker, over a blocking socket and nothing else: the broker's own
//! `connection.start` decodes (properties, capabilities, mechanisms), and a whole session
//! (handshake, declare, publish with properties and headers, get, delete, close) round-trips.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use amqp_codec::methods::*;
use amqp_codec::{
    Assembled, ContentAssembler, FieldTable, FieldValue, Frame, FrameDecoder, LongStr, Method,
    Outbound, PropertiesBuilder, ShortStr,
};
use amqp_test_support::{broker_addr, unique_name};
use bytes::{Buf, Bytes, BytesMut};

/// A blocking connection speaking raw frames through the codec.
struct RawConn {
    sock: TcpStream,
    decoder: FrameDecoder,
    buf: BytesMut,
    out: Outbound,
    frame_max: u32,
}

impl RawConn {
    fn open() -> Self {
        let sock = TcpStream::connect(broker_addr()).expect("the broker at AMQP_URL accepts TCP");
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut conn = Self {
            sock,
            decoder: FrameDecoder::new(),
            buf: BytesMut::with_capacity(8192),
            out: Outbound::new(),
            frame_max: 4096,
        };
        conn.out.push_protocol_header();
        conn.flush();
        conn
    }

    fn flush(&mut self) {
        let bytes = self.out.copy_to_bytes(self.out.remaining());
        self.sock.write_all(&bytes).expect("write");
    }

    fn send(&mut self, channel: u16, method: impl Into<Method>) {
        self.out
            .push_method(channel, &method.into(), self.frame_max)
            .expect("encodable");
        self.flush();
    }

    fn recv(&mut self) -> Frame {
        loop {
            if let Some(frame) = self.decoder.decode(&mut self.buf).expect("valid frames") {
                return frame;
            }
            let mut chunk = [0u8; 4096];
            let n = self.sock.read(&mut chunk).expect("read within 10 s");
            assert!(n > 0, "the broker closed the socket");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn recv_method(&mut self) -> Method {
        match self.recv() {
            Frame::Method { method, .. } => method,
            other => panic!("expected a method, got {other:?}"),
        }
    }

    fn handshake(&mut self) {
        let Method::ConnectionStart(_) = self.recv_method() else {
            panic!("start")
        };
        let mut response = b"\0guest\0guest".to_vec();
        if let Some((user, pass)) = credentials() {
            response = format!("\0{user}\0{pass}").into_bytes();
        }
        self.send(
            0,
            ConnectionStartOk {
                client_properties: [("product", "amqp-codec tests")]
                    .into_iter()
                    .map(|(k, v)| (ShortStr::from_static(k), FieldValue::from(v)))
                    .collect(),
                mechanism: ShortStr::from_static("PLAIN"),
                response: LongStr::from(response),
                locale: ShortStr::from_static("en_US"),
            },
        );
        let Method::ConnectionTune(tune) = self.recv_method() else {
            panic!("tune")
        };
        self.frame_max = tune.frame_max.min(131_072);
        self.decoder.set_frame_max(self.frame_max);
        self.send(
            0,
            ConnectionTuneOk {
                channel_max: tune.channel_max,
                frame_max: self.frame_max,
                heartbeat: 0,
            },
        );
        self.send(
            0,
            ConnectionOpen {
                virtual_host: ShortStr::from_static("/"),
                ..Default::default()
            },
        );
        assert!(matches!(self.recv_method(), Method::ConnectionOpenOk(_)));
    }
}

fn credentials() -> Option<(String, String)> {
    let url = amqp_test_support::broker_url();
    let rest = url.split_once("://")?.1;
    let userinfo = rest.split_once('@')?.0;
    let (u, p) = userinfo.split_once(':')?;
    Some((u.to_owned(), p.to_owned()))
}

#[test]
fn decodes_the_brokers_real_connection_start() {
    let mut conn = RawConn::open();
    let Method::ConnectionStart(start) = conn.recv_method() else {
        panic!("the first frame is connection.start");
    };
    assert_eq!((start.version_major, start.version_minor), (0, 9));
    let mechanisms = start.mechanisms.as_str().expect("mechanisms are ASCII");
    assert!(mechanisms.split(' ').any(|m| m == "PLAIN"), "{mechanisms}");
    assert!(start.locales.as_str().is_some_and(|l| l.contains("en_US")));

    let props = &start.server_properties;
    assert_eq!(
        props
            .get("product")
            .and_then(|v| v.as_str().map(str::to_owned))
            .as_deref(),
        Some("RabbitMQ")
    );
    assert!(props.get("version").is_some());
    let Some(FieldValue::Table(caps)) = props.get("capabilities") else {
        panic!("server properties carry a capabilities table: {props:?}");
    };
    for cap in [
        "publisher_confirms",
        "exchange_exchange_bindings",
        "basic.nack",
        "consumer_cancel_notify",
        "connection.blocked",
        "authentication_failure_close",
        "per_consumer_qos",
    ] {
        assert_eq!(
            caps.get(cap),
            Some(FieldValue::Bool(true)),
            "capability {cap}"
        );
    }
    // The decoded table re-encodes to the very bytes the broker sent.
    let rebuilt: FieldTable = props.iter().collect();
    assert_eq!(rebuilt.as_raw(), props.as_raw());
}

#[test]
fn publishes_and_gets_a_message_with_every_property() {
    let mut conn = RawConn::open();
    conn.handshake();
    conn.send(1, ChannelOpen::default());
    assert!(matches!(conn.recv_method(), Method::ChannelOpenOk(_)));

    let queue = ShortStr::try_from(unique_name("codec-raw")).expect("short");
    conn.send(
        1,
        QueueDeclare {
            queue: queue.clone(),
            exclusive: true,
            ..Default::default()
        },
    );
    let Method::QueueDeclareOk(ok) = conn.recv_method() else {
        panic!("declare-ok")
    };
    assert_eq!(ok.queue, queue);

    let headers = FieldTable::builder()
        .insert("int", -7i32)
        .insert(
            "bin",
            FieldValue::LongStr(LongStr::from(vec![0xFF, 0x00, 0xFE])),
        )
        .insert("flag", true)
        .insert(
            "nested",
            FieldTable::builder()
                .insert("k", 1.5f64)
                .build()
                .expect("table"),
        )
        .build()
        .expect("table");
    let props = {
        let mut b = PropertiesBuilder::default();
        b.content_type = Some(ShortStr::from_static("application/octet-stream"));
        b.content_encoding = Some(ShortStr::from_static("identity"));
        b.headers = Some(headers.clone());
        b.delivery_mode = Some(2);
        b.priority = Some(3);
        b.correlation_id = Some(ShortStr::from_static("corr"));
        b.reply_to = Some(ShortStr::from_static("replies"));
        b.expiration = Some(ShortStr::from_static("60000"));
        b.message_id = Some(ShortStr::from_static("m-1"));
        b.timestamp = Some(1_700_000_000);
        b.kind = Some(ShortStr::from_static("test"));
        b.user_id = Some(ShortStr::from_static("guest"));
        b.app_id = Some(ShortStr::from_static("codec-tests"));
        b.cluster_id = None;
        b
    }
    .build()
    .unwrap();
    // Three body frames at the broker's frame-max.
    let body: Bytes = (0..(conn.frame_max as usize * 2 + 100))
        .map(|i| (i % 251) as u8)
        .collect();
    let publish = Method::BasicPublish(BasicPublish {
        routing_key: queue.clone(),
        ..Default::default()
    });
    conn.out
        .push_content(1, &publish, &props, body.clone(), conn.frame_max)
        .expect("encodable");
    conn.flush();

    conn.send(
        1,
        BasicGet {
            queue: queue.clone(),
            no_ack: true,
            ..Default::default()
        },
    );
    let mut assembler = ContentAssembler::new(1 << 20);
    let content = loop {
        match assembler.push(conn.recv()).expect("well-formed content") {
            Some(Assembled::Content(c)) => break c,
            Some(Assembled::Method(Method::BasicGetEmpty(_))) => {
                // Not enqueued yet: ask again.
                conn.send(
                    1,
                    BasicGet {
                        queue: queue.clone(),
                        no_ack: true,
                        ..Default::default()
                    },
                );
            }
            Some(Assembled::Method(m)) => panic!("unexpected {m:?}"),
            Some(Assembled::Discarded(d)) => panic!("the message was dropped: {}", d.reason),
            None => {}
        }
    };
    assert!(matches!(content.method, Method::BasicGetOk(_)));
    assert_eq!(content.body, body);
    assert_eq!(content.header.properties, props);
    assert_eq!(content.header.properties.headers(), Some(headers));
    assert_eq!(
        content.header.properties.message_id(),
        Some(ShortStr::from_static("m-1"))
    );

    conn.send(
        1,
        QueueDelete {
            queue,
            ..Default::default()
        },
    );
    assert!(matches!(conn.recv_method(), Method::QueueDeleteOk(_)));
    conn.send(
        0,
        ConnectionClose {
            reply_code: 200,
            ..Default::default()
        },
    );
    assert!(matches!(conn.recv_method(), Method::ConnectionCloseOk(_)));
}
