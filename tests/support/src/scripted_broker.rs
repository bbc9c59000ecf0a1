//! A scripted fake broker on 127.0.0.1: a test accepts the real client's connection, runs (or
//! skips) the handshake, then sends exactly the bytes it wants, well-formed or hostile, and
//! reads what the client answers. For what RabbitMQ never does: going silent, dying mid-frame,
//! garbage, oversized frames, methods in the wrong direction.
//!
//! Every step panics with a message when the script is not followed: a failed step is a
//! failed test.

use std::io;
use std::time::Duration;

use amqp_codec::methods::{
    ChannelOpenOk, ConnectionClose, ConnectionCloseOk, ConnectionOpenOk, ConnectionStart,
    ConnectionTune,
};
use amqp_codec::{BasicProperties, Frame, FrameDecoder, LongStr, Method, Outbound};
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The AMQP 0-9-1 protocol header every client sends first.
pub const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";

/// Bound on each read of the script: a client that says nothing fails the test, not hangs it.
const STEP: Duration = Duration::from_secs(10);

/// A listening fake broker.
#[derive(Debug)]
pub struct ScriptedBroker {
    /// Where the client connects.
    listener: TcpListener,
}

impl ScriptedBroker {
    /// Listens on an ephemeral port of 127.0.0.1.
    pub async fn bind() -> io::Result<Self> {
        Ok(Self {
            listener: TcpListener::bind("127.0.0.1:0").await?,
        })
    }

    /// The port to give the client.
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map_or(0, |a| a.port())
    }

    /// Accepts the client's connection without reading anything.
    pub async fn accept_raw(&self) -> Peer {
        let (sock, _) = tokio::time::timeout(STEP, self.listener.accept())
            .await
            .expect("the client connects")
            .expect("accept");
        let _ = sock.set_nodelay(true);
        Peer {
            sock,
            buf: BytesMut::new(),
            decoder: FrameDecoder::with_frame_max(1 << 20),
        }
    }

    /// Accepts the client's connection and runs the handshake up to open-ok, proposing
    /// `heartbeat` seconds, channel-max 16 and frame-max 131 072.
    pub async fn accept(&self, heartbeat: u16) -> Peer {
        let mut peer = self.accept_raw().await;
        let header = peer.read_exact(8).await;
        assert_eq!(&header[..], PROTOCOL_HEADER, "the client's protocol header");
        peer.send(
            0,
            Method::ConnectionStart(ConnectionStart {
                version_major: 0,
                version_minor: 9,
                server_properties: Default::default(),
                mechanisms: LongStr::from("PLAIN"),
                locales: LongStr::from("en_US"),
            }),
        )
        .await;
        assert!(matches!(peer.recv().await, Method::ConnectionStartOk(_)));
        peer.send(
            0,
            Method::ConnectionTune(ConnectionTune {
                channel_max: 16,
                frame_max: 131_072,
                heartbeat,
            }),
        )
        .await;
        assert!(matches!(peer.recv().await, Method::ConnectionTuneOk(_)));
        assert!(matches!(peer.recv().await, Method::ConnectionOpen(_)));
        peer.send(0, Method::ConnectionOpenOk(ConnectionOpenOk::default()))
            .await;
        peer
    }
}

/// The broker's side of one connection.
#[derive(Debug)]
pub struct Peer {
    /// The socket to the client.
    sock: TcpStream,
    /// Bytes read and not yet decoded.
    buf: BytesMut,
    /// Splits them into frames.
    decoder: FrameDecoder,
}

impl Peer {
    /// Sends raw bytes, whatever they are.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.sock
            .write_all(bytes)
            .await
            .expect("write to the client");
    }

    /// Sends raw bytes; false if the client is gone (for scripts that keep sending).
    pub async fn try_send_raw(&mut self, bytes: &[u8]) -> bool {
        self.sock.write_all(bytes).await.is_ok()
    }

    /// Sends one method frame.
    pub async fn send(&mut self, channel: u16, method: Method) {
        let mut out = Outbound::new();
        out.push_method(channel, &method, 0).expect("encode");
        let bytes = out.copy_to_bytes(out.remaining());
        self.send_raw(&bytes).await;
    }

    /// Sends a method with content (deliver, return, get-ok): method, header and body frames.
    pub async fn send_content(&mut self, channel: u16, method: Method, body: &[u8]) {
        let mut out = Outbound::new();
        out.push_content(
            channel,
            &method,
            &BasicProperties::default(),
            bytes::Bytes::copy_from_slice(body),
            131_072,
        )
        .expect("encode");
        let bytes = out.copy_to_bytes(out.remaining());
        self.send_raw(&bytes).await;
    }

    /// Reads exactly `n` bytes.
    pub async fn read_exact(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            self.fill()
                .await
                .then_some(())
                .expect("the client closed the socket");
        }
        self.buf.split_to(n).to_vec()
    }

    /// Reads more bytes; false at end of stream.
    async fn fill(&mut self) -> bool {
        let read = tokio::time::timeout(STEP, self.sock.read_buf(&mut self.buf))
            .await
            .expect("the client says something within the step bound");
        matches!(read, Ok(n) if n > 0)
    }

    /// The client's next frame, or `None` once it closed the socket.
    pub async fn recv_frame(&mut self) -> Option<Frame> {
        loop {
            if let Some(frame) = self
                .decoder
                .decode(&mut self.buf)
                .expect("the client's frames decode")
            {
                return Some(frame);
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    /// The client's next frame if one comes within `limit`: `Err` when none did, `Ok(None)`
    /// once the client closed the socket.
    pub async fn recv_frame_within(
        &mut self,
        limit: Duration,
    ) -> Result<Option<Frame>, tokio::time::error::Elapsed> {
        tokio::time::timeout(limit, self.recv_frame()).await
    }

    /// The client's next method (content and heartbeat frames skipped).
    pub async fn recv(&mut self) -> Method {
        loop {
            match self
                .recv_frame()
                .await
                .expect("the client closed the socket")
            {
                Frame::Method { method, .. } => return method,
                _ => continue,
            }
        }
    }

    /// Answers the client's channel.open on `channel`.
    pub async fn open_channel(&mut self, channel: u16) {
        assert!(matches!(self.recv().await, Method::ChannelOpen(_)));
        self.send(channel, Method::ChannelOpenOk(ChannelOpenOk::default()))
            .await;
    }

    /// Reads until the client's connection.close (the spec's answer to a protocol violation),
    /// answers close-ok, and returns it.
    pub async fn expect_connection_close(&mut self) -> ConnectionClose {
        loop {
            match self.recv_frame().await {
                Some(Frame::Method {
                    method: Method::ConnectionClose(close),
                    ..
                }) => {
                    self.send(0, Method::ConnectionCloseOk(ConnectionCloseOk {}))
                        .await;
                    return close;
                }
                Some(_) => continue,
                None => panic!("the client closed the socket without connection.close"),
            }
        }
    }

    /// Closes the socket (mid-frame, if that is where the script is).
    pub fn hang_up(self) {
        drop(self);
    }
}
