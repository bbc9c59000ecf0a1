//! The sans-IO connection core: bytes in, frames out, time passed as an argument.
//!
//! [`Core`] owns the decoder, the outbound queue, the channel table and every waiter. It never
//! touches a socket or a clock: the driver feeds it what it read ([`Core::handle_input`]), the
//! current time ([`Core::handle_timeout`]), and takes what it must write
//! ([`Core::take_output`]). Handles (`Channel`, `Consumer`, confirms) call into it under the
//! connection's mutex. Tests drive it with byte strings and made-up instants.

mod channel;
mod confirms;
mod consumers;
mod handshake;
mod ops;
mod recovery;
mod topology;
mod unsettled;
mod window;

use std::sync::Arc;
use std::time::{Duration, Instant};

use amqp_codec::methods::{ConnectionClose, ConnectionCloseOk};
use amqp_codec::table::FieldTable;
use amqp_codec::{
    Assembled, ClassId, DecodeError, FieldError, Frame, FrameDecoder, Method, Outbound, ReplyCode,
    ShortStr,
};
use bytes::BytesMut;
use tokio::sync::{Notify, oneshot, watch};

pub(crate) use channel::{ChannelState, DeliveryTally, Reply, ReplyTx, Rpc, Status};
pub(crate) use consumers::{Dropped, RawDelivery};
pub(crate) use ops::Publish;
pub(crate) use topology::Topology;

use crate::config::ConnectionConfig;
use crate::error::{CloseReason, ConnectStep, Error};
use crate::recovery::ConnectionState;
use channel::{Effect, Violation};

/// Where the connection stands.
#[derive(Debug)]
pub(crate) enum Phase {
    /// Protocol header sent; waiting for connection.start.
    AwaitStart,
    /// start-ok sent; waiting for secure or tune.
    AwaitTune,
    /// tune-ok and open sent; waiting for open-ok.
    AwaitOpenOk,
    /// Open for business.
    Open,
    /// We sent connection.close; waiting for close-ok (frames other than close and close-ok
    /// are discarded). The error is what the connection ends with.
    Closing(Error),
    /// Finished; every call fails with this error.
    Closed(Error),
}

/// The connection's state.
#[derive(Debug)]
pub(crate) struct Core {
    /// Settings: credentials, requested tune values, limits.
    pub(crate) config: ConnectionConfig,
    /// Lifecycle.
    pub(crate) phase: Phase,
    /// Splits the inbound byte stream into frames.
    decoder: FrameDecoder,
    /// Frames waiting for the driver to write.
    pub(crate) out: Outbound,
    /// Negotiated frame-max for what we send (0: no limit).
    pub(crate) frame_max: u32,
    /// Negotiated highest channel id.
    channel_max: u16,
    /// Negotiated heartbeat interval, if any.
    heartbeat: Option<Duration>,
    /// When a frame last arrived (liveness).
    last_recv: Instant,
    /// When the driver last took output (idleness, for sending heartbeats).
    last_send: Instant,
    /// End of the handshake, or of the wait for close-ok.
    deadline: Option<Instant>,
    /// Channels by id (index 0 unused); kept after close until the id is reused so that late
    /// handles still find their error.
    channels: Vec<Option<ChannelState>>,
    /// Counter distinguishing openings of the same channel id.
    next_epoch: u64,
    /// Where the search for a free id starts (ids are handed out round-robin, so a closed
    /// channel's id is not reused at once).
    next_id: u16,
    /// connection.secure rounds answered in this handshake (bounded: see `handshake.rs`).
    secure_rounds: u8,
    /// Consumers whose buffer is full; reading pauses while non-zero.
    full_consumers: usize,
    /// basic.deliver frames received since the connection was made (read batching's bytes
    /// per delivery).
    deliveries_received: u64,
    /// What channels no longer in the table did with deliveries they could not hand over
    /// (see [`Core::delivery_stats`]).
    retired_tally: DeliveryTally,
    /// connection.blocked reason, while blocked.
    blocked: Option<String>,
    /// Publishes the blocked state to the application.
    pub(crate) blocked_tx: watch::Sender<Option<String>>,
    /// What the broker said about itself in connection.start.
    pub(crate) server_properties: FieldTable,
    /// The `connect` call, waiting for open-ok.
    pub(crate) open_waiter: Option<oneshot::Sender<Result<(), Error>>>,
    /// `close` calls waiting for close-ok.
    close_waiters: Vec<oneshot::Sender<Result<(), Error>>>,
    /// An update-secret call waiting for its ok.
    secret_waiter: Option<oneshot::Sender<Result<(), Error>>>,
    /// Publishers waiting for back-pressure to lift.
    pub(crate) publish_gate: Arc<Notify>,
    /// What recovery re-creates; `Some` only when recovery is enabled.
    pub(crate) topology: Option<Topology>,
    /// True from the loss of the connection until recovery finished or gave up: calls fail
    /// with (or wait on) `Error::Recovering`, channels are suspended.
    pub(crate) recovering: bool,
    /// The application closed the connection (or dropped its last handle): never recover.
    app_closed: bool,
    /// Where the connection stands, for the application.
    pub(crate) state_tx: watch::Sender<ConnectionState>,
}

impl Core {
    /// A connection about to start: the protocol header is queued.
    pub(crate) fn new(config: ConnectionConfig, now: Instant, publish_gate: Arc<Notify>) -> Self {
        let mut core = Self {
            decoder: FrameDecoder::with_frame_max(0),
            out: Outbound::new(),
            frame_max: 0,
            channel_max: 0,
            heartbeat: None,
            last_recv: now,
            last_send: now,
            deadline: None,
            channels: Vec::new(),
            next_epoch: 1,
            next_id: 1,
            full_consumers: 0,
            secure_rounds: 0,
            deliveries_received: 0,
            retired_tally: DeliveryTally::default(),
            blocked: None,
            blocked_tx: watch::channel(None).0,
            server_properties: FieldTable::default(),
            open_waiter: None,
            close_waiters: Vec::new(),
            secret_waiter: None,
            publish_gate,
            phase: Phase::AwaitStart,
            topology: config.recovery.as_ref().map(|_| Topology::default()),
            recovering: false,
            app_closed: false,
            state_tx: watch::channel(ConnectionState::Connected).0,
            config,
        };
        core.start_transport(now);
        core
    }

    /// A new transport begins (the first, or one recovery made): a fresh decoder and
    /// outbound queue with the protocol header, pre-tune limits, the handshake deadline.
    fn start_transport(&mut self, now: Instant) {
        let initial_max = match self.config.frame_max {
            0 => 131_072,
            n => n,
        };
        self.decoder = FrameDecoder::with_frame_max(initial_max);
        self.out = Outbound::new();
        self.out.push_protocol_header();
        self.frame_max = initial_max;
        self.channel_max = 0;
        self.heartbeat = None;
        self.last_recv = now;
        self.last_send = now;
        self.deadline = Some(now + self.config.connection_timeout);
        self.full_consumers = 0;
        self.secure_rounds = 0;
        self.phase = Phase::AwaitStart;
    }

    /// Decodes and handles every complete frame in `buf`, leaving a partial one in place.
    /// Stops early while a consumer's buffer is full.
    pub(crate) fn handle_input(&mut self, buf: &mut BytesMut, now: Instant) {
        while !self.read_paused() && !matches!(self.phase, Phase::Closed(_)) {
            match self.decoder.decode(buf) {
                Ok(Some(frame)) => {
                    self.last_recv = now;
                    if let Frame::Method {
                        method: Method::BasicDeliver(_),
                        ..
                    } = &frame
                    {
                        self.deliveries_received += 1;
                    }
                    self.handle_frame(frame, now);
                }
                Ok(None) => return,
                Err(DecodeError::BadContentHeader {
                    channel,
                    body_size,
                    source,
                }) if channel != 0 => self.handle_bad_header(channel, body_size, source, now),
                Err(err) => return self.decode_error(&err, now),
            }
        }
    }

    /// The peer closed the socket.
    pub(crate) fn handle_eof(&mut self) {
        let err = match &self.phase {
            Phase::AwaitStart | Phase::AwaitTune | Phase::AwaitOpenOk => self.handshake_eof_error(),
            Phase::Closing(err) => err.clone(),
            _ => Error::ConnectionLost,
        };
        self.fail(err);
    }

    /// A read or write failed.
    pub(crate) fn handle_io_error(&mut self, err: std::io::Error) {
        let err = match &self.phase {
            Phase::Closing(e) => e.clone(),
            _ => Error::from(err),
        };
        self.fail(err);
    }

    /// Time passed: handshake deadline, close-ok deadline, heartbeats.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if let Some(deadline) = self.deadline
            && now >= deadline
        {
            let step = match &self.phase {
                Phase::Closing(err) => return self.fail(err.clone()),
                Phase::AwaitStart => ConnectStep::Start,
                Phase::AwaitTune => ConnectStep::Tune,
                _ => ConnectStep::OpenOk,
            };
            let err = Error::ConnectTimeout {
                address: self.config.address(),
                timeout: self.config.connection_timeout,
                step,
            };
            return self.fail(err);
        }
        if let (Some(hb), Phase::Open) = (self.heartbeat, &self.phase) {
            // While a full consumer buffer pauses reading, the broker's frames (heartbeats
            // included) wait in the socket: the silence is ours, not the broker's.
            if self.read_paused() {
                self.last_recv = now;
            }
            if now.saturating_duration_since(self.last_recv) >= hb * 2 {
                tracing::warn!(address = %self.config.address(), "heartbeat timeout");
                return self.fail(Error::HeartbeatTimeout(hb * 2));
            }
            if now.saturating_duration_since(self.last_send) >= hb / 2 && self.out.is_empty() {
                self.out.push_heartbeat();
            }
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) must run next.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let hb = match (self.heartbeat, &self.phase) {
            (Some(hb), Phase::Open) => Some((self.last_send + hb / 2).min(self.last_recv + hb * 2)),
            _ => None,
        };
        match (self.deadline, hb) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// True when frames are queued that the driver has not taken yet (see `Shared::queue`).
    pub(crate) fn has_queued_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// Moves queued output into `into` (the driver's write buffer) if that one is drained.
    /// Returns true if there is anything to write.
    pub(crate) fn take_output(&mut self, into: &mut Outbound, now: Instant) -> bool {
        if into.is_empty() && !self.out.is_empty() {
            std::mem::swap(into, &mut self.out);
            self.last_send = now;
            // Room in the queue again: publishers held by the high-water mark may go on.
            self.publish_gate.notify_waiters();
        }
        !into.is_empty()
    }

    /// Deliveries not simply handed over, over every channel this connection had.
    pub(crate) fn delivery_stats(&self) -> crate::DeliveryStats {
        let mut tally = self.retired_tally;
        for chan in self.channels.iter().flatten() {
            tally.add(&chan.tally);
        }
        crate::DeliveryStats {
            unreadable: tally.unreadable,
            orphans_requeued: tally.orphans_requeued,
            orphans_ignored: tally.orphans_ignored,
        }
    }

    /// True while a full consumer buffer holds up reading.
    pub(crate) fn read_paused(&self) -> bool {
        self.full_consumers > 0
    }

    /// True once the connection is over and the driver may drop the socket (after writing
    /// what is queued, such as a close-ok).
    pub(crate) fn is_finished(&self) -> bool {
        matches!(self.phase, Phase::Closed(_))
    }

    /// The error every call gets once the connection is no longer open (or while it is being
    /// recovered).
    pub(crate) fn closed_error(&self) -> Option<Error> {
        if self.recovering {
            return Some(Error::Recovering);
        }
        self.phase_error()
    }

    /// The error of the connection's own lifecycle, recovery aside.
    fn phase_error(&self) -> Option<Error> {
        match &self.phase {
            Phase::Open => None,
            Phase::Closing(err) | Phase::Closed(err) => Some(err.clone()),
            _ => Some(Error::InvalidUse("the connection is not open yet")),
        }
    }

    #[inline(always)]
    fn handle_frame(&mut self, frame: Frame, now: Instant) {
        let channel = frame.channel();
        match frame {
            Frame::Heartbeat => {}
            Frame::Method { channel: 0, method } => self.handle_connection_method(method, now),
            Frame::ProtocolHeader(header) => {
                let msg = format!("the server answered with protocol header {header:?}");
                if matches!(self.phase, Phase::AwaitStart) {
                    self.fail(Error::NotAmqp(msg));
                } else {
                    self.violation(ReplyCode::FRAME_ERROR, msg, None, now);
                }
            }
            _ if channel == 0 => {
                self.violation(
                    ReplyCode::UNEXPECTED_FRAME,
                    "content frame on channel 0".into(),
                    None,
                    now,
                );
            }
            frame => self.handle_channel_frame(channel, frame, now),
        }
    }

    #[inline(always)]
    fn handle_channel_frame(&mut self, id: u16, frame: Frame, now: Instant) {
        if !matches!(self.phase, Phase::Open | Phase::Closing(_)) {
            let msg = format!("frame on channel {id} before the connection is open");
            return self.violation(ReplyCode::UNEXPECTED_FRAME, msg, None, now);
        }
        if let Frame::Method { method, .. } = &frame
            && !method.info().direction.client_receives()
        {
            let msg = format!("{} is only sent by clients", method.name());
            let offending = Some((method.class_id(), method.method_id()));
            return self.violation(ReplyCode::COMMAND_INVALID, msg, offending, now);
        }
        let (out, frame_max) = (&mut self.out, self.frame_max);
        let Some(chan) = self
            .channels
            .get_mut(usize::from(id))
            .and_then(Option::as_mut)
            .filter(|c| !c.is_closed())
        else {
            if matches!(self.phase, Phase::Closing(_)) {
                return;
            }
            let msg = format!("frame on channel {id}, which is not open");
            return self.violation(ReplyCode::CHANNEL_ERROR, msg, None, now);
        };
        let effect = if let Status::Closing(_) = chan.status {
            // Spec: after sending channel.close, discard everything but close and close-ok.
            match frame {
                Frame::Method { method, .. } => chan.handle(Reply::Method(method), out, frame_max),
                _ => return,
            }
        } else {
            let assembled = chan.assembler.push(frame);
            hand_over(chan, assembled, out, frame_max)
        };
        self.apply(effect, now);
    }

    /// A content header whose properties do not parse, on channel `id`: the message's body is
    /// dropped as it comes, and the message handed over as unreadable (a delivery's tag goes
    /// to its consumer, to reject it by), so that one malformed message neither takes the
    /// connection down nor stays at the head of its queue.
    #[cold]
    fn handle_bad_header(&mut self, id: u16, body_size: u64, source: FieldError, now: Instant) {
        let (out, frame_max) = (&mut self.out, self.frame_max);
        let chan = self
            .channels
            .get_mut(usize::from(id))
            .and_then(Option::as_mut)
            .filter(|c| matches!(c.status, Status::Open | Status::Opening));
        let effect = match (&self.phase, chan) {
            (Phase::Open, Some(chan)) => {
                let assembled = chan.assembler.push_bad_header(id, body_size, source);
                hand_over(chan, assembled, out, frame_max)
            }
            // A closing channel or connection discards it; anything else is as wrong as any
            // frame there.
            (Phase::Closing(_), _) => return,
            (_, Some(chan)) if matches!(chan.status, Status::Closing(_)) => return,
            _ => {
                let msg = format!("content header on channel {id}, which is not open");
                return self.violation(ReplyCode::CHANNEL_ERROR, msg, None, now);
            }
        };
        self.apply(effect, now);
    }

    /// What the connection does once a channel handled a frame.
    #[inline(always)]
    fn apply(&mut self, effect: Result<Effect, Violation>, now: Instant) {
        match effect {
            Ok(Effect::None) => {}
            Ok(Effect::ConsumerFull) => self.full_consumers += 1,
            Ok(Effect::Closed) => {
                self.recount_full();
                self.publish_gate.notify_waiters();
            }
            Ok(Effect::WakePublishers) => self.publish_gate.notify_waiters(),
            Err(v) => self.violation(v.code, v.message, v.method, now),
        }
    }

    fn handle_connection_method(&mut self, method: Method, now: Instant) {
        match (&self.phase, method) {
            (Phase::AwaitStart | Phase::AwaitTune | Phase::AwaitOpenOk, m) => {
                self.handle_handshake(m, now)
            }
            (Phase::Open, Method::ConnectionClose(close)) => {
                self.send_connection_method(&Method::ConnectionCloseOk(ConnectionCloseOk {}));
                let reason = CloseReason::from_wire(
                    close.reply_code,
                    &close.reply_text,
                    close.class_id,
                    close.method_id,
                );
                tracing::warn!(address = %self.config.address(), %reason, "connection closed by the broker");
                self.fail(Error::ConnectionClosed(reason));
            }
            (Phase::Closing(err), Method::ConnectionClose(_)) => {
                // Both sides closed at once.
                let err = err.clone();
                self.send_connection_method(&Method::ConnectionCloseOk(ConnectionCloseOk {}));
                self.fail(err);
            }
            (Phase::Closing(err), Method::ConnectionCloseOk(_)) => {
                let err = err.clone();
                self.fail(err);
            }
            (Phase::Closing(_), _) => {}
            (Phase::Open, Method::ConnectionBlocked(b)) => {
                let reason = String::from_utf8_lossy(&b.reason).into_owned();
                tracing::warn!(%reason, "connection blocked by the broker");
                self.blocked = Some(reason.clone());
                self.blocked_tx.send_replace(Some(reason));
            }
            (Phase::Open, Method::ConnectionUnblocked(_)) => {
                tracing::info!("connection unblocked");
                self.blocked = None;
                self.blocked_tx.send_replace(None);
                self.publish_gate.notify_waiters();
            }
            (Phase::Open, Method::ConnectionUpdateSecretOk(_)) if self.secret_waiter.is_some() => {
                if let Some(tx) = self.secret_waiter.take() {
                    let _ = tx.send(Ok(()));
                }
            }
            (_, other) => {
                let msg = format!("unexpected {} on channel 0", other.name());
                let offending = Some((other.class_id(), other.method_id()));
                self.violation(ReplyCode::COMMAND_INVALID, msg, offending, now);
            }
        }
    }

    fn decode_error(&mut self, err: &DecodeError, now: Instant) {
        if matches!(self.phase, Phase::AwaitStart) {
            return self.fail(Error::NotAmqp(err.to_string()));
        }
        let (class, method) = err.offending_method();
        let offending = (class.0 != 0).then_some((class, method));
        self.violation(err.reply_code(), err.to_string(), offending, now);
    }

    /// The peer broke the protocol: tell it (connection.close with the reply code and the
    /// offending method, as the spec asks), fail everything, and wait briefly for close-ok.
    pub(crate) fn violation(
        &mut self,
        code: ReplyCode,
        message: String,
        offending: Option<(ClassId, u16)>,
        now: Instant,
    ) {
        tracing::warn!(code = code.0, %message, "protocol violation by the peer; closing the connection");
        let (class_id, method_id) = offending.map_or((0, 0), |(c, m)| (c.0, m));
        let text = truncate_short(&message);
        let close = Method::ConnectionClose(ConnectionClose {
            reply_code: code.0,
            reply_text: text,
            class_id,
            method_id,
        });
        self.send_connection_method(&close);
        let err = Error::Protocol { code, message };
        self.begin_closing(err, now);
    }

    /// Enters `Closing`: every waiter fails now with `err`; the connection itself lingers
    /// until close-ok or the deadline.
    pub(crate) fn begin_closing(&mut self, err: Error, now: Instant) {
        self.fail_waiters(&err);
        self.phase = Phase::Closing(err);
        self.deadline = Some(now + self.config.connection_timeout.min(Duration::from_secs(10)));
        self.full_consumers = 0;
    }

    /// Ends the connection with `err`; with recovery on and a recoverable `err`, suspends
    /// the channels for the supervisor to reconnect instead.
    pub(crate) fn fail(&mut self, err: Error) {
        if matches!(self.phase, Phase::Closed(_)) {
            return;
        }
        if !matches!(self.phase, Phase::Closing(_)) {
            if self.should_recover(&err) {
                self.suspend(&err);
            } else {
                self.fail_waiters(&err);
            }
        }
        for tx in self.close_waiters.drain(..) {
            let _ = tx.send(Ok(()));
        }
        self.deadline = None;
        self.full_consumers = 0;
        self.phase = Phase::Closed(err);
        self.publish_gate.notify_waiters();
    }

    fn fail_waiters(&mut self, err: &Error) {
        for chan in self.channels.iter_mut().flatten() {
            if !chan.is_closed() {
                chan.close_with(err.clone());
            }
        }
        self.recovering = false;
        self.state_tx.send_replace(match err {
            Error::ConnectionClosedByApp => ConnectionState::Closed,
            other => ConnectionState::Failed(other.clone()),
        });
        self.fail_connection_waiters(err);
    }

    /// The connection under the channels ended: the `connect` and update-secret calls fail,
    /// the blocked state is over, waiting publishers re-check.
    fn fail_connection_waiters(&mut self, err: &Error) {
        if let Some(tx) = self.open_waiter.take() {
            let _ = tx.send(Err(err.clone()));
        }
        if let Some(tx) = self.secret_waiter.take() {
            let _ = tx.send(Err(err.clone()));
        }
        self.blocked = None;
        self.publish_gate.notify_waiters();
    }

    fn recount_full(&mut self) {
        self.full_consumers = self
            .channels
            .iter()
            .flatten()
            .filter(|c| !c.is_closed())
            .flat_map(|c| c.consumers.values())
            .filter(|s| s.is_full() && !s.is_ended())
            .count();
    }

    /// Queues a connection method; one that cannot be encoded (it does not fit the frame-max)
    /// ends the connection with the reason, rather than leave the peer waiting for it. True if
    /// it was queued.
    pub(crate) fn send_connection_method(&mut self, method: &Method) -> bool {
        match self.out.push_method(0, method, self.frame_max) {
            Ok(()) => true,
            Err(err) => {
                tracing::error!(error = %err, method = method.name(), "cannot encode a connection method");
                self.fail(Error::Encode(err));
                false
            }
        }
    }
}

/// Gives a channel what its assembler made of a frame: a method, a message, or a message whose
/// content was dropped. An assembly error (frames out of order, a body longer than declared)
/// is the peer's violation.
#[inline(always)]
fn hand_over(
    chan: &mut ChannelState,
    assembled: Result<Option<Assembled>, DecodeError>,
    out: &mut Outbound,
    frame_max: u32,
) -> Result<Effect, Violation> {
    let reply = match assembled {
        Ok(None) => return Ok(Effect::None),
        Ok(Some(Assembled::Method(m))) => Reply::Method(m),
        Ok(Some(Assembled::Content(c))) => Reply::Content(c, chan.generation),
        Ok(Some(Assembled::Discarded(d))) => Reply::Discarded(d, chan.generation),
        Err(err) => {
            let (class, method) = err.offending_method();
            return Err(Violation {
                code: err.reply_code(),
                message: err.to_string(),
                method: (class.0 != 0).then_some((class, method)),
            });
        }
    };
    chan.handle(reply, out, frame_max)
}

/// A reply text cut to a short string's 255 bytes (on a char boundary).
pub(crate) fn truncate_short(text: &str) -> ShortStr {
    let mut end = text.len().min(255);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    ShortStr::try_from(&text[..end]).unwrap_or_default()
}

#[cfg(test)]
mod ack_tests;
#[cfg(test)]
mod poison_tests;
#[cfg(test)]
mod recovery_tests;
#[cfg(test)]
mod tests;
