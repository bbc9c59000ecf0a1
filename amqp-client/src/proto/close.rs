//! How a connection ends: the transport lost, the peer breaking the protocol, our own close
//! finishing, and everything waiting on the connection failing.
//!
//! Losing the transport does not fail anything by itself: the core reports
//! [`Event::Lost`] and the layer above decides, by its recovery policy, whether the channels
//! are suspended for a new transport ([`Core::suspend`]) or fail ([`Core::fail_all`]). Only
//! the application's own close fails everything at once.

use std::time::{Duration, Instant};

use amqp_codec::methods::ConnectionClose;
use amqp_codec::{ClassId, DecodeError, Method, ReplyCode, ShortStr};

use super::{ConnectionState, Core, Event, Phase};
use crate::error::Error;

impl Core {
    /// The transport ended with `err` (end of stream, an IO error, a heartbeat or handshake
    /// timeout, a failed handshake, the broker's connection.close). If we were closing, the
    /// close is simply over.
    pub(crate) fn lose(&mut self, err: Error) {
        match self.phase {
            Phase::Closed(_) => return,
            Phase::Closing(_) => return self.finish_closing(),
            _ => {}
        }
        self.phase = Phase::Closed(err.clone());
        self.deadline = None;
        self.full_consumers = 0;
        self.events.push(Event::Lost(err));
        self.wake_publishers();
    }

    /// Our close is over: the peer's close-ok (or its own close), the deadline, or the
    /// socket gone.
    pub(crate) fn finish_closing(&mut self) {
        let Phase::Closing(err) = &self.phase else {
            return;
        };
        self.phase = Phase::Closed(err.clone());
        self.deadline = None;
        self.full_consumers = 0;
        if std::mem::take(&mut self.close_requested) {
            self.events.push(Event::Closed);
        }
        self.wake_publishers();
    }

    /// A frame that does not decode: before connection.start the peer is not an AMQP broker;
    /// after, it broke the protocol.
    pub(super) fn decode_error(&mut self, err: &DecodeError, now: Instant) {
        if matches!(self.phase, Phase::AwaitStart) {
            return self.lose(Error::NotAmqp(err.to_string()));
        }
        let (class, method) = err.offending_method();
        let offending = (class.0 != 0).then_some((class, method));
        self.violation(err.reply_code(), err.to_string(), offending, now);
    }

    /// The peer broke the protocol: tell it (connection.close with the reply code and the
    /// offending method, as the spec asks) and wait briefly for close-ok. The connection is
    /// lost for the application ([`Event::Lost`]) at once.
    pub(crate) fn violation(
        &mut self,
        code: ReplyCode,
        message: String,
        offending: Option<(ClassId, u16)>,
        now: Instant,
    ) {
        tracing::warn!(code = code.0, %message, "protocol violation by the peer; closing the connection");
        let (class_id, method_id) = offending.map_or((0, 0), |(c, m)| (c.0, m));
        let close = Method::ConnectionClose(ConnectionClose {
            reply_code: code.0,
            reply_text: truncate_short(&message),
            class_id,
            method_id,
        });
        if !self.send_connection_method(&close) {
            return;
        }
        let err = Error::Protocol { code, message };
        self.begin_closing(err.clone(), now);
        self.events.push(Event::Lost(err));
        self.wake_publishers();
    }

    /// Enters `Closing`: the connection lingers until close-ok or the deadline.
    pub(super) fn begin_closing(&mut self, err: Error, now: Instant) {
        self.phase = Phase::Closing(err);
        self.deadline = Some(now + self.config.connection_timeout.min(Duration::from_secs(10)));
        self.full_consumers = 0;
    }

    /// Every channel, consumer, confirm and call fails with `err`; recovery, if it ran, is
    /// over. What the layer above does when it will not (or no longer) recover.
    pub(crate) fn fail_all(&mut self, err: &Error) {
        self.channels_changed();
        for chan in self.channels.iter_mut().flatten() {
            if !chan.is_closed() {
                chan.close_with(err.clone(), &mut self.events);
            }
        }
        self.recovering = false;
        self.events.push(Event::State(match err {
            Error::ConnectionClosedByApp => ConnectionState::Closed,
            other => ConnectionState::Failed(other.clone()),
        }));
        self.fail_connection_waiters(err);
    }

    /// The connection under the channels ended: the handshake and update-secret waits fail,
    /// the blocked state is over, waiting publishers re-check.
    pub(super) fn fail_connection_waiters(&mut self, err: &Error) {
        if std::mem::take(&mut self.awaiting_open) {
            self.events.push(Event::Opened(Err(err.clone())));
        }
        if std::mem::take(&mut self.secret_pending) {
            self.events.push(Event::SecretUpdated(Err(err.clone())));
        }
        if self.blocked.take().is_some() {
            self.events.push(Event::Blocked(None));
        }
        self.wake_publishers();
    }

    /// Queues a connection method; one that cannot be encoded (it does not fit the frame-max)
    /// ends the connection with the reason, rather than leave the peer waiting for it. True if
    /// it was queued.
    pub(crate) fn send_connection_method(&mut self, method: &Method) -> bool {
        match self.out.push_method(0, method, self.frame_max) {
            Ok(()) => true,
            Err(err) => {
                tracing::error!(error = %err, method = method.name(), "cannot encode a connection method");
                self.lose(Error::Encode(err));
                false
            }
        }
    }
}

/// A reply text cut to a short string's 255 bytes (on a char boundary).
pub(crate) fn truncate_short(text: &str) -> ShortStr {
    let mut end = text.len().min(255);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    ShortStr::try_from(&text[..end]).unwrap_or_default()
}
