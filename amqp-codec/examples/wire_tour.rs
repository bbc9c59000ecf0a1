//! A tour of the sans-IO codec over a plain blocking socket: handshake with the broker at
//! `AMQP_URL`, declare a server-named queue, publish messages with publisher confirms, consume
//! them back, and print what went over the wire.
//!
//! ```text
//! cargo run -p amqp091-codec --example wire_tour -- [MESSAGES]
//! ```
//!
//! Everything protocol-shaped is the codec's: the example only moves bytes between the socket
//! and the codec.

// An example talks to its user on stdout.
#![allow(clippy::print_stdout)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use amqp_codec::methods::*;
use amqp_codec::{
    Assembled, BasicProperties, ContentAssembler, FieldValue, Frame, FrameDecoder, LongStr, Method,
    Outbound, ShortStr,
};
use bytes::{Buf, Bytes, BytesMut};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The socket plus the codec's two halves.
struct Wire {
    sock: TcpStream,
    decoder: FrameDecoder,
    read_buf: BytesMut,
    out: Outbound,
    frame_max: u32,
    frames_in: u64,
    frames_out: u64,
}

impl Wire {
    fn send(&mut self, method: impl Into<Method>) -> Result<()> {
        let channel = 1;
        let method = method.into();
        let channel = if method.class_id() == amqp_codec::ClassId::CONNECTION {
            0
        } else {
            channel
        };
        self.out.push_method(channel, &method, self.frame_max)?;
        self.frames_out += 1;
        self.flush()
    }

    fn flush(&mut self) -> Result<()> {
        while self.out.has_remaining() {
            let mut slices = [std::io::IoSlice::new(&[]); 64];
            let n = self.out.chunks_vectored(&mut slices);
            let written = self.sock.write_vectored(&slices[..n])?;
            self.out.advance(written);
        }
        Ok(())
    }

    fn recv(&mut self) -> Result<Frame> {
        loop {
            if let Some(frame) = self.decoder.decode(&mut self.read_buf)? {
                self.frames_in += 1;
                return Ok(frame);
            }
            self.read_buf.reserve(64 * 1024);
            let mut chunk = [0u8; 64 * 1024];
            let n = self.sock.read(&mut chunk)?;
            if n == 0 {
                return Err("the broker closed the connection".into());
            }
            self.read_buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn recv_method(&mut self) -> Result<Method> {
        match self.recv()? {
            Frame::Method {
                method: Method::ConnectionClose(c),
                ..
            } => Err(format!(
                "broker closed the connection: {} {}",
                c.reply_code, c.reply_text
            )
            .into()),
            Frame::Method { method, .. } => Ok(method),
            other => Err(format!("expected a method, got {other:?}").into()),
        }
    }
}

/// host:port, user, password and vhost from an `amqp://` URL (enough for the tour).
fn parse_url(url: &str) -> (String, String, String, String) {
    let rest = url.strip_prefix("amqp://").unwrap_or(url);
    let (authority, vhost) = rest.split_once('/').unwrap_or((rest, ""));
    let (userinfo, hostport) = authority
        .rsplit_once('@')
        .unwrap_or(("guest:guest", authority));
    let (user, pass) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    let hostport = if hostport.contains(':') {
        hostport.to_owned()
    } else {
        format!("{hostport}:5672")
    };
    let vhost = match vhost {
        "" => "/".to_owned(),
        v => v.replace("%2f", "/").replace("%2F", "/"),
    };
    (hostport, user.to_owned(), pass.to_owned(), vhost)
}

fn main() -> Result<()> {
    let count: u64 = std::env::args()
        .nth(1)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(10_000);
    let url = std::env::var("AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let (addr, user, pass, vhost) = parse_url(&url);

    let sock = TcpStream::connect(&addr)?;
    sock.set_read_timeout(Some(Duration::from_secs(10)))?;
    sock.set_write_timeout(Some(Duration::from_secs(10)))?;
    sock.set_nodelay(true)?;
    let mut wire = Wire {
        sock,
        decoder: FrameDecoder::new(),
        read_buf: BytesMut::with_capacity(64 * 1024),
        out: Outbound::with_capacity(64 * 1024),
        frame_max: amqp_codec::FRAME_MIN_SIZE,
        frames_in: 0,
        frames_out: 0,
    };
    wire.out.push_protocol_header();
    wire.flush()?;

    let Method::ConnectionStart(start) = wire.recv_method()? else {
        return Err("no connection.start".into());
    };
    let product = start
        .server_properties
        .get("product")
        .and_then(|v| v.as_str().map(str::to_owned));
    let version = start
        .server_properties
        .get("version")
        .and_then(|v| v.as_str().map(str::to_owned));
    println!(
        "connected to {} {} at {addr}",
        product.unwrap_or_default(),
        version.unwrap_or_default()
    );
    println!("  mechanisms: {}", start.mechanisms.as_str().unwrap_or("?"));

    wire.send(ConnectionStartOk {
        client_properties: [("product", FieldValue::from("amqp-codec wire tour"))]
            .into_iter()
            .map(|(k, v)| (ShortStr::from_static(k), v))
            .collect(),
        mechanism: ShortStr::from_static("PLAIN"),
        response: LongStr::from(format!("\0{user}\0{pass}")),
        locale: ShortStr::from_static("en_US"),
    })?;
    let Method::ConnectionTune(tune) = wire.recv_method()? else {
        return Err("no connection.tune".into());
    };
    wire.frame_max = if tune.frame_max == 0 {
        131_072
    } else {
        tune.frame_max.min(131_072)
    };
    wire.decoder.set_frame_max(wire.frame_max);
    println!(
        "  tuned: frame-max {} channel-max {}",
        wire.frame_max, tune.channel_max
    );
    wire.send(ConnectionTuneOk {
        channel_max: tune.channel_max,
        frame_max: wire.frame_max,
        heartbeat: 0,
    })?;
    wire.send(ConnectionOpen {
        virtual_host: ShortStr::try_from(vhost)?,
        ..Default::default()
    })?;
    wire.recv_method()?;
    wire.send(ChannelOpen::default())?;
    wire.recv_method()?;

    wire.send(QueueDeclare {
        exclusive: true,
        auto_delete: true,
        ..Default::default()
    })?;
    let Method::QueueDeclareOk(declared) = wire.recv_method()? else {
        return Err("no declare-ok".into());
    };
    println!("  declared server-named queue {}", declared.queue);
    wire.send(ConfirmSelect::default())?;
    wire.recv_method()?;

    // Publish with up to WINDOW unconfirmed messages in flight, reading confirms as they come.
    const WINDOW: u64 = 1000;
    let started = Instant::now();
    let publish = Method::BasicPublish(BasicPublish {
        routing_key: declared.queue.clone(),
        ..Default::default()
    });
    let props = BasicProperties::builder()
        .with_delivery_mode(BasicProperties::TRANSIENT)
        .build()
        .expect("valid properties");
    let body =
        Bytes::from_static(b"hello from the sans-IO codec, 64 bytes of payload in each msg!!");
    let (mut published, mut confirmed) = (0, 0);
    while confirmed < count {
        while published < count && published - confirmed < WINDOW {
            wire.out
                .push_content(1, &publish, &props, body.clone(), wire.frame_max)?;
            wire.frames_out += 3;
            published += 1;
        }
        wire.flush()?;
        match wire.recv_method()? {
            Method::BasicAck(ack) if ack.multiple => confirmed = ack.delivery_tag,
            Method::BasicAck(_) => confirmed += 1,
            other => return Err(format!("unexpected {}", other.name()).into()),
        }
    }
    let publish_time = started.elapsed();
    println!("published {count} messages, all confirmed, in {publish_time:.2?}");

    // Consume them back with auto-ack, assembling each message from its three frames.
    let started = Instant::now();
    wire.send(BasicConsume {
        queue: declared.queue.clone(),
        no_ack: true,
        ..Default::default()
    })?;
    let mut assembler = ContentAssembler::new(1 << 20);
    let mut received = 0;
    while received < count {
        match assembler.push(wire.recv()?)? {
            Some(Assembled::Content(msg)) if msg.body == body => received += 1,
            Some(Assembled::Content(_)) => return Err("a body came back different".into()),
            Some(Assembled::Discarded(d)) => return Err(format!("dropped: {}", d.reason).into()),
            Some(Assembled::Method(_)) | None => {}
        }
    }
    let consume_time = started.elapsed();
    println!("consumed {received} messages in {consume_time:.2?}");

    wire.send(ConnectionClose {
        reply_code: 200,
        reply_text: ShortStr::from_static("bye"),
        ..Default::default()
    })?;
    while !matches!(wire.recv_method()?, Method::ConnectionCloseOk(_)) {}
    println!(
        "frames: {} out, {} in; {:.0} msg/s published with confirms, {:.0} msg/s consumed",
        wire.frames_out,
        wire.frames_in,
        count as f64 / publish_time.as_secs_f64(),
        count as f64 / consume_time.as_secs_f64(),
    );
    Ok(())
}
