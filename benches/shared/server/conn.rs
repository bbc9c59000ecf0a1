//! A connection's life: the handshake, reading and writing, the frames of the connection
//! and its closes. What the channels' methods do is in `methods.rs`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use amqp_codec::methods::{
    ChannelCloseOk, ChannelOpenOk, ConnectionClose, ConnectionCloseOk, ConnectionOpenOk,
    ConnectionStart, ConnectionTune, ConnectionUpdateSecretOk,
};
use amqp_codec::table::FieldTable;
use amqp_codec::{
    Assembled, Frame, FrameDecoder, LongStr, Method, Outbound, ProtocolHeader, ReplyCode, ShortStr,
};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use super::{
    Broker, CHANNEL_MAX, Chan, Conn, ConnError, Consumer, FRAME_MAX, Phase, READ_CHUNK, bump,
};

impl Conn {
    /// A connection on `sock`.
    pub(super) fn new(broker: Broker, sock: TcpStream) -> Self {
        let id = broker.next_conn.fetch_add(1, Ordering::Relaxed);
        Self {
            broker,
            id,
            sock: Some(sock),
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            out: Outbound::new(),
            decoder: FrameDecoder::new(),
            frame_max: FRAME_MAX,
            heartbeat: 0,
            channels: HashMap::new(),
            notify: Arc::new(Notify::new()),
            phase: Phase::Header,
        }
    }

    /// Serves the connection until it closes.
    pub(super) async fn run(mut self) -> Result<(), ConnError> {
        let sock = self.sock.take().ok_or("no socket")?;
        let (mut rd, mut wr) = sock.into_split();
        let notify = self.notify.clone();
        let mut beat: Option<tokio::time::Interval> = None;
        let outcome = loop {
            if beat.is_none() && self.heartbeat > 0 {
                let period = Duration::from_millis(u64::from(self.heartbeat) * 500);
                beat = Some(tokio::time::interval_at(
                    tokio::time::Instant::now() + period,
                    period,
                ));
            }
            if self.phase == Phase::Closing && self.out.is_empty() {
                break Ok(());
            }
            let writing = !self.out.is_empty();
            tokio::select! {
                read = rd.read_buf(&mut self.rbuf) => {
                    match read {
                        Ok(0) => break Ok(()),
                        Ok(_) => {
                            if let Err(err) = self.on_input() {
                                break Err(err);
                            }
                        }
                        Err(err) => break Err(err.into()),
                    }
                    if self.rbuf.capacity() - self.rbuf.len() < READ_CHUNK / 4 {
                        self.rbuf.reserve(READ_CHUNK);
                    }
                }
                wrote = wr.write_buf(&mut self.out), if writing => {
                    if let Err(err) = wrote {
                        break Err(err.into());
                    }
                }
                () = notify.notified() => {}
                _ = async { beat.as_mut().expect("guarded").tick().await }, if beat.is_some() => {
                    self.out.push_heartbeat();
                }
            }
            if self.phase == Phase::Open {
                self.pump();
            }
        };
        // Unsettled deliveries go back to their queues.
        let mut requeue = Vec::new();
        for chan in self.channels.values_mut() {
            requeue.extend(chan.take_unacked());
        }
        self.forget_consumers();
        {
            let mut state = self.broker.lock();
            for (queue, mut message) in requeue.into_iter().rev() {
                message.redelivered = true;
                state.enqueue(&queue, message, true);
            }
        }
        if outcome.is_ok() {
            let _ = wr.write_all_buf(&mut self.out).await;
            let _ = wr.shutdown().await;
        }
        outcome
    }

    /// Removes every consumer of this connection from its queue.
    pub(super) fn forget_consumers(&mut self) {
        let mut state = self.broker.lock();
        for chan in self.channels.values_mut() {
            for consumer in chan.consumers.drain(..) {
                if let Some(q) = state.queues.get_mut(&consumer.queue) {
                    q.consumers = q.consumers.saturating_sub(1);
                    if let Some(i) = q.listeners.iter().position(|(id, _)| *id == self.id) {
                        q.listeners.swap_remove(i);
                    }
                }
            }
        }
    }

    /// Decodes and handles every complete frame read, then sends the confirms they earned.
    pub(super) fn on_input(&mut self) -> Result<(), ConnError> {
        let mut frames = 0;
        while let Some(frame) = self.decoder.decode(&mut self.rbuf)? {
            frames += 1;
            self.on_frame(frame)?;
            if self.phase == Phase::Closing {
                break;
            }
        }
        bump(&self.broker.stats.frames_in, frames);
        let mut confirms = 0;
        for (&id, chan) in &mut self.channels {
            if chan.confirm && chan.published > chan.confirmed {
                let multiple = chan.published - chan.confirmed > 1;
                self.out.push_ack(id, chan.published, multiple);
                chan.confirmed = chan.published;
                confirms += 1;
            }
        }
        bump(&self.broker.stats.confirm_frames, confirms);
        Ok(())
    }

    /// Queues a method frame.
    pub(super) fn send(&mut self, channel: u16, method: &Method) -> Result<(), ConnError> {
        self.out.push_method(channel, method, self.frame_max)?;
        Ok(())
    }

    /// Closes the connection with `code`.
    pub(super) fn close_connection(&mut self, code: ReplyCode, text: &str, cause: Option<&Method>) {
        let close = Method::ConnectionClose(ConnectionClose {
            reply_code: code.0,
            reply_text: ShortStr::try_from(text).unwrap_or_default(),
            class_id: cause.map_or(0, |m| m.class_id().0),
            method_id: cause.map_or(0, Method::method_id),
        });
        let _ = self.out.push_method(0, &close, 0);
        self.phase = Phase::Closing;
    }

    /// Closes channel `id` with `code`: its deliveries are requeued, its frames ignored until
    /// close-ok.
    pub(super) fn close_channel(&mut self, id: u16, code: ReplyCode, text: &str, cause: &Method) {
        self.drop_channel_state(id);
        if let Some(chan) = self.channels.get_mut(&id) {
            chan.closing = true;
        }
        let close = Method::ChannelClose(amqp_codec::methods::ChannelClose {
            reply_code: code.0,
            reply_text: ShortStr::try_from(text).unwrap_or_default(),
            class_id: cause.class_id().0,
            method_id: cause.method_id(),
        });
        let _ = self.out.push_method(id, &close, self.frame_max);
    }

    /// Requeues channel `id`'s unsettled deliveries and removes its consumers.
    pub(super) fn drop_channel_state(&mut self, id: u16) {
        let Some(chan) = self.channels.get_mut(&id) else {
            return;
        };
        let requeue = chan.take_unacked();
        let consumers: Vec<Consumer> = chan.consumers.drain(..).collect();
        let mut state = self.broker.lock();
        for (queue, mut message) in requeue.into_iter().rev() {
            message.redelivered = true;
            state.enqueue(&queue, message, true);
        }
        for consumer in consumers {
            if let Some(q) = state.queues.get_mut(&consumer.queue) {
                q.consumers = q.consumers.saturating_sub(1);
                if let Some(i) = q.listeners.iter().position(|(c, _)| *c == self.id) {
                    q.listeners.swap_remove(i);
                }
            }
        }
    }

    /// Handles one frame.
    pub(super) fn on_frame(&mut self, frame: Frame) -> Result<(), ConnError> {
        match frame {
            Frame::ProtocolHeader(header) => {
                if self.phase != Phase::Header || header != ProtocolHeader::AMQP_0_9_1 {
                    self.out.push_protocol_header();
                    self.phase = Phase::Closing;
                    return Ok(());
                }
                let capabilities = [
                    "publisher_confirms",
                    "exchange_exchange_bindings",
                    "basic.nack",
                    "consumer_cancel_notify",
                    "connection.blocked",
                    "authentication_failure_close",
                    "per_consumer_qos",
                ]
                .into_iter()
                .fold(FieldTable::builder(), |b, name| b.insert(name, true))
                .build()?;
                let properties = FieldTable::builder()
                    .insert("product", "amqp-benches ceiling server")
                    .insert("version", "0.1.0")
                    .insert("platform", "Rust")
                    .insert("capabilities", capabilities)
                    .build()?;
                let start = Method::ConnectionStart(ConnectionStart {
                    version_major: 0,
                    version_minor: 9,
                    server_properties: properties,
                    mechanisms: LongStr::from("PLAIN AMQPLAIN"),
                    locales: LongStr::from("en_US"),
                });
                self.send(0, &start)?;
                self.phase = Phase::StartSent;
                Ok(())
            }
            Frame::Heartbeat => Ok(()),
            Frame::Method { channel: 0, method } => self.on_connection_method(method),
            Frame::Method { channel, .. }
            | Frame::Header { channel, .. }
            | Frame::Body { channel, .. }
                if self.phase != Phase::Open =>
            {
                let _ = channel;
                self.close_connection(ReplyCode::CHANNEL_ERROR, "not open", None);
                Ok(())
            }
            Frame::Method {
                channel,
                method: Method::ChannelOpen(_),
            } => {
                if self.channels.contains_key(&channel) || channel > CHANNEL_MAX {
                    self.close_connection(ReplyCode::CHANNEL_ERROR, "channel in use", None);
                    return Ok(());
                }
                self.channels.insert(channel, Chan::new());
                self.send(channel, &Method::ChannelOpenOk(ChannelOpenOk::default()))
            }
            other => {
                let channel = other.channel();
                let Some(chan) = self.channels.get_mut(&channel) else {
                    self.close_connection(ReplyCode::CHANNEL_ERROR, "channel not open", None);
                    return Ok(());
                };
                if chan.closing {
                    if let Frame::Method {
                        method: Method::ChannelCloseOk(_) | Method::ChannelClose(_),
                        ..
                    } = &other
                    {
                        let reply = matches!(
                            &other,
                            Frame::Method {
                                method: Method::ChannelClose(_),
                                ..
                            }
                        );
                        self.channels.remove(&channel);
                        if reply {
                            self.send(channel, &Method::ChannelCloseOk(ChannelCloseOk {}))?;
                        }
                    }
                    return Ok(());
                }
                match chan.assembler.push(other) {
                    Ok(None) => Ok(()),
                    Ok(Some(Assembled::Method(method))) => self.on_channel_method(channel, method),
                    Ok(Some(Assembled::Content(content))) => {
                        let body = content.body.into_bytes();
                        self.on_publish(channel, content.method, content.header.properties, body)
                    }
                    Ok(Some(Assembled::Discarded(_))) => {
                        let cause = Method::BasicPublish(Default::default());
                        self.close_channel(
                            channel,
                            ReplyCode::PRECONDITION_FAILED,
                            "message refused",
                            &cause,
                        );
                        Ok(())
                    }
                    Err(err) => {
                        self.close_connection(err.reply_code(), "bad content frames", None);
                        Ok(())
                    }
                }
            }
        }
    }

    /// Handles a method on channel 0.
    pub(super) fn on_connection_method(&mut self, method: Method) -> Result<(), ConnError> {
        match (self.phase, &method) {
            (Phase::StartSent, Method::ConnectionStartOk(_)) => {
                let tune = Method::ConnectionTune(ConnectionTune {
                    channel_max: CHANNEL_MAX,
                    frame_max: FRAME_MAX,
                    heartbeat: 0,
                });
                self.send(0, &tune)?;
                self.phase = Phase::TuneSent;
            }
            (Phase::TuneSent, Method::ConnectionTuneOk(tune)) => {
                self.frame_max = match tune.frame_max {
                    0 => FRAME_MAX,
                    n => n.min(FRAME_MAX),
                };
                self.decoder.set_frame_max(self.frame_max);
                self.heartbeat = tune.heartbeat;
                self.phase = Phase::Opening;
            }
            (Phase::Opening, Method::ConnectionOpen(_)) => {
                self.send(0, &Method::ConnectionOpenOk(ConnectionOpenOk::default()))?;
                self.phase = Phase::Open;
            }
            (_, Method::ConnectionClose(_)) => {
                self.send(0, &Method::ConnectionCloseOk(ConnectionCloseOk {}))?;
                self.phase = Phase::Closing;
            }
            (_, Method::ConnectionCloseOk(_)) => self.phase = Phase::Closing,
            (Phase::Open, Method::ConnectionUpdateSecret(_)) => {
                self.send(
                    0,
                    &Method::ConnectionUpdateSecretOk(ConnectionUpdateSecretOk {}),
                )?;
            }
            (Phase::Open, Method::ConnectionBlocked(_) | Method::ConnectionUnblocked(_)) => {}
            _ => self.close_connection(
                ReplyCode::COMMAND_INVALID,
                "unexpected method",
                Some(&method),
            ),
        }
        Ok(())
    }

    /// A new server-made name with `prefix`.
    pub(super) fn fresh_name(&self, prefix: &str) -> ShortStr {
        let mut state = self.broker.lock();
        state.names += 1;
        ShortStr::try_from(format!("{prefix}{}-{}", self.id, state.names)).unwrap_or_default()
    }
}
