//! Frames in: the connection's own methods, each channel's frames through its content
//! assembler, and the clock (handshake and close deadlines, heartbeats).

use std::time::Instant;

use amqp_codec::methods::ConnectionCloseOk;
use amqp_codec::{
    Assembled, Content, DecodeError, DeliveryRef, FieldError, Frame, Inbound, Method, ReplyCode,
};
use bytes::{Bytes, BytesMut};

use super::channel::{Effect, Io, Violation};
use super::ops::receiving;
use super::{ChannelState, Core, Event, Phase, RawDelivery, Reply, Status};
use crate::error::{CloseReason, ConnectStep, Error};

impl Core {
    /// Decodes and handles every complete frame in `buf`, leaving a partial one in place.
    /// Stops early while a consumer's buffer is full: the frames already split off then wait
    /// in `input_left` (frames of this read, sharing its bytes) and are handled first next
    /// time.
    ///
    /// The frames are split off the buffer at once ([`amqp_codec::FrameBatch`]: one reference
    /// count per read, not one per frame), and a delivery whose three frames came in the same
    /// read is read whole and in place: into its consumer's buffer as one
    /// [`amqp_codec::Delivery`], without the content assembler and without building each
    /// frame (callgrind on the consume bench: the frames' and messages' moves were 16% of the
    /// instructions).
    pub(crate) fn handle_input(&mut self, buf: &mut BytesMut, now: Instant) {
        while !self.read_paused() && !matches!(self.phase, Phase::Closed(_)) {
            let batch = match self.input_left.take() {
                Some(batch) => batch,
                None => match self.decoder.decode_batch(buf) {
                    Ok(Some(batch)) => batch,
                    Ok(None) => return,
                    Err(err) => return self.decode_error(&err, now),
                },
            };
            let limit = self.config.limits.max_message_size;
            let mut items = batch.iter().max_body_size(limit);
            while let Some(item) = items.next() {
                match item {
                    Ok(Inbound::Delivery(delivery)) => self.handle_delivery(delivery, now),
                    Ok(Inbound::Frame(frame)) => {
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
                    Err(DecodeError::BadContentHeader {
                        channel,
                        body_size,
                        source,
                    }) if channel != 0 => self.handle_bad_header(channel, body_size, source, now),
                    Err(err) => {
                        self.input_left = items.rest();
                        return self.decode_error(&err, now);
                    }
                }
                if self.read_paused() || matches!(self.phase, Phase::Closed(_)) {
                    self.input_left = items.rest();
                    break;
                }
            }
        }
    }

    /// True while frames split off an earlier read wait to be handled (reading was paused).
    pub(crate) fn has_input_left(&self) -> bool {
        self.input_left.is_some()
    }

    /// The peer closed the socket.
    pub(crate) fn handle_eof(&mut self) {
        let err = match &self.phase {
            Phase::AwaitStart | Phase::AwaitTune | Phase::AwaitOpenOk => self.handshake_eof_error(),
            _ => Error::ConnectionLost,
        };
        self.lose(err);
    }

    /// A read or write failed.
    pub(crate) fn handle_io_error(&mut self, err: std::io::Error) {
        self.lose(Error::from(err));
    }

    /// Time passed: handshake deadline, close-ok deadline, heartbeats.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if let Some(deadline) = self.deadline
            && now >= deadline
        {
            let step = match &self.phase {
                Phase::Closing(_) => return self.finish_closing(),
                Phase::AwaitStart => ConnectStep::Start,
                Phase::AwaitTune => ConnectStep::Tune,
                _ => ConnectStep::OpenOk,
            };
            let err = Error::ConnectTimeout {
                address: self.config.address(),
                timeout: self.config.connection_timeout,
                step,
            };
            return self.lose(err);
        }
        if let (Some(hb), Phase::Open) = (self.heartbeat, &self.phase) {
            // While a full consumer buffer pauses reading, the broker's frames (heartbeats
            // included) wait in the socket: the silence is ours, not the broker's.
            if self.read_paused() {
                self.last_recv = now;
            }
            if now.saturating_duration_since(self.last_recv) >= hb * 2 {
                tracing::warn!(address = %self.config.address(), "heartbeat timeout");
                return self.lose(Error::HeartbeatTimeout(hb * 2));
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

    #[inline(always)]
    fn handle_frame(&mut self, frame: Frame, now: Instant) {
        let channel = frame.channel();
        match frame {
            Frame::Heartbeat => {}
            Frame::Method { channel: 0, method } => self.handle_connection_method(method, now),
            Frame::ProtocolHeader(header) => {
                let msg = format!("the server answered with protocol header {header:?}");
                if matches!(self.phase, Phase::AwaitStart) {
                    self.lose(Error::NotAmqp(msg));
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
        // Replies, cancels and closes may change a channel's status, consumers or prefetch;
        // deliveries and confirms (the stream) do not.
        if let Frame::Method { method, .. } = &frame
            && !matches!(
                method,
                Method::BasicDeliver(_) | Method::BasicAck(_) | Method::BasicNack(_)
            )
        {
            self.channels_changed();
        }
        let mut io = Io {
            out: &mut self.out,
            frame_max: self.frame_max,
            events: &mut self.events,
        };
        let Some(chan) = receiving(&mut self.channels, id) else {
            if matches!(self.phase, Phase::Closing(_)) {
                return;
            }
            let msg = format!("frame on channel {id}, which is not open");
            return self.violation(ReplyCode::CHANNEL_ERROR, msg, None, now);
        };
        let effect = if let Status::Closing(_) = chan.status {
            // Spec: after sending channel.close, discard everything but close and close-ok.
            match frame {
                Frame::Method { method, .. } => chan.handle(Reply::Method(method), &mut io),
                _ => return,
            }
        } else {
            let assembled = chan.assembler.push(frame);
            hand_over(chan, assembled, &mut io)
        };
        self.apply(effect, now);
    }

    /// A delivery read whole: straight into its consumer's buffer. Anything unusual (channel
    /// 0, a connection not open, a channel not open) goes frame by frame instead, the way that
    /// decides it; a message already in progress on the channel is the assembler's error, as
    /// the method frame would have been.
    #[inline(always)]
    fn handle_delivery(&mut self, delivery: DeliveryRef<'_>, now: Instant) {
        self.last_recv = now;
        self.deliveries_received += 1;
        if !matches!(self.phase, Phase::Open | Phase::Closing(_)) {
            return self.delivery_frame_by_frame(delivery, now);
        }
        let id = delivery.channel();
        // Channel 0 has no entry in the table (its deliveries go frame by frame).
        let Some(chan) = receiving(&mut self.channels, id) else {
            return self.delivery_frame_by_frame(delivery, now);
        };
        if let Status::Closing(_) = chan.status {
            return; // Spec: after sending channel.close, discard all but close and close-ok.
        }
        let mut io = Io {
            out: &mut self.out,
            frame_max: self.frame_max,
            events: &mut self.events,
        };
        let effect = match chan.assembler.expect_idle(id) {
            Ok(()) => {
                let raw = RawDelivery::whole(delivery.to_delivery(), chan.generation);
                Ok(chan.deliver(raw, &mut io))
            }
            Err(err) => hand_over(chan, Err(err), &mut io),
        };
        self.apply(effect, now);
    }

    /// A delivery read whole that the usual path does not take: its frames, one by one, as
    /// they would have come from the decoder.
    #[cold]
    fn delivery_frame_by_frame(&mut self, delivery: DeliveryRef<'_>, now: Instant) {
        let channel = delivery.channel();
        let Content {
            method,
            header,
            body,
        } = delivery.to_content();
        let body = Bytes::from(body);
        let header = Frame::Header { channel, header };
        let body = (!body.is_empty()).then_some(Frame::Body { channel, body });
        self.handle_frame(Frame::Method { channel, method }, now);
        for frame in std::iter::once(header).chain(body) {
            if matches!(self.phase, Phase::Closed(_)) {
                return;
            }
            self.handle_frame(frame, now);
        }
    }

    /// A content header whose properties do not parse, on channel `id`: the message's body is
    /// dropped as it comes, and the message handed over as unreadable (a delivery's tag goes
    /// to its consumer, to reject it by), so that one malformed message neither takes the
    /// connection down nor stays at the head of its queue.
    #[cold]
    fn handle_bad_header(&mut self, id: u16, body_size: u64, source: FieldError, now: Instant) {
        let mut io = Io {
            out: &mut self.out,
            frame_max: self.frame_max,
            events: &mut self.events,
        };
        let chan = self
            .channels
            .get_mut(usize::from(id))
            .and_then(Option::as_mut)
            .filter(|c| matches!(c.status, Status::Open | Status::Opening));
        let effect = match (&self.phase, chan) {
            (Phase::Open, Some(chan)) => {
                let assembled = chan.assembler.push_bad_header(id, body_size, source);
                hand_over(chan, assembled, &mut io)
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
                self.wake_publishers();
            }
            Ok(Effect::WakePublishers) => self.wake_publishers(),
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
                self.lose(Error::ConnectionClosed(reason));
            }
            (Phase::Closing(_), Method::ConnectionClose(_)) => {
                // Both sides closed at once.
                self.send_connection_method(&Method::ConnectionCloseOk(ConnectionCloseOk {}));
                self.finish_closing();
            }
            (Phase::Closing(_), Method::ConnectionCloseOk(_)) => self.finish_closing(),
            (Phase::Closing(_), _) => {}
            (Phase::Open, Method::ConnectionBlocked(b)) => {
                let reason = String::from_utf8_lossy(&b.reason).into_owned();
                tracing::warn!(%reason, "connection blocked by the broker");
                self.blocked = Some(reason.clone());
                self.events.push(Event::Blocked(Some(reason)));
            }
            (Phase::Open, Method::ConnectionUnblocked(_)) => {
                tracing::info!("connection unblocked");
                self.blocked = None;
                self.events.push(Event::Blocked(None));
                self.wake_publishers();
            }
            (Phase::Open, Method::ConnectionUpdateSecretOk(_)) if self.secret_pending => {
                self.secret_pending = false;
                self.events.push(Event::SecretUpdated(Ok(())));
            }
            (_, other) => {
                let msg = format!("unexpected {} on channel 0", other.name());
                let offending = Some((other.class_id(), other.method_id()));
                self.violation(ReplyCode::COMMAND_INVALID, msg, offending, now);
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
    io: &mut Io<'_>,
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
    chan.handle(reply, io)
}
