//! Keeping channels across a lost transport, the mechanism the recovery layer drives: suspend
//! the channels the application holds, start over on a new transport, let recovery's own
//! requests past the gate that holds the application's, and finish (or give up).
//!
//! The application's handles keep their channel id and opening (`epoch`) across a loss; what
//! changes is each channel's `generation`, so acks and confirms from before are refused. The
//! core decides nothing here: which losses are recovered, and what is re-declared, is the
//! recovery layer's (`crate::recovery`).

use std::time::Instant;

use amqp_codec::Method;

use super::channel::{Io, Status};
use super::ops::channel_at;
use super::{ConnectionState, Core, Event, Phase, RequestId};
use crate::error::Error;

impl Core {
    /// The transport is lost and the connection will be recovered: the channels `keep` names
    /// (the application's) are suspended: their pending replies and confirms fail with `err`,
    /// their consumers' streams stay open; every other channel closes with `err`.
    pub(crate) fn suspend(&mut self, err: &Error, keep: impl Fn(u16) -> bool) {
        self.channels_changed();
        for chan in self.channels.iter_mut().flatten() {
            match chan.status {
                Status::Open | Status::Opening if keep(chan.id()) => {
                    chan.suspend(err, &mut self.events);
                }
                Status::Recovering | Status::Closed(_) => {}
                _ => chan.close_with(err.clone(), &mut self.events),
            }
        }
        if !self.recovering {
            self.recovering = true;
            let state = ConnectionState::Recovering { attempt: 0 };
            self.events.push(Event::State(state));
        }
        self.fail_connection_waiters(err);
    }

    /// The suspended channels, as (id, epoch), in id order, each with the tags of the
    /// consumers it keeps.
    pub(crate) fn suspended_channels(&self) -> Vec<(u16, u64, Vec<&[u8]>)> {
        self.channels
            .iter()
            .flatten()
            .filter(|c| matches!(c.status, Status::Recovering))
            .map(|c| {
                let tags = c.consumers.keys().map(|t| &t[..]).collect();
                (c.id(), c.epoch, tags)
            })
            .collect()
    }

    /// What ended the last transport.
    pub(crate) fn lost_error(&self) -> Error {
        self.phase_error().unwrap_or(Error::ConnectionLost)
    }

    /// True while recovery is under way (not given up, not called off).
    pub(crate) fn is_recovering(&self) -> bool {
        self.recovering
    }

    /// Reports the attempt under way.
    pub(crate) fn set_attempt(&mut self, attempt: u32) {
        if self.recovering {
            let state = ConnectionState::Recovering { attempt };
            self.events.push(Event::State(state));
        }
    }

    /// A new transport to `host:port` is up: start the handshake over on it (the protocol
    /// header is queued); its end comes as [`Event::Opened`]. False if recovery was called
    /// off.
    pub(crate) fn restart(&mut self, host: &str, port: u16, now: Instant) -> bool {
        if !self.recovering || !matches!(self.phase, Phase::Closed(_)) {
            return false;
        }
        self.config.host = host.to_owned();
        self.config.port = port;
        self.start_transport(now);
        true
    }

    /// Recovery gave up with `err`: every suspended channel, consumer and call fails with it.
    pub(crate) fn give_up(&mut self, err: Error) {
        self.fail_all(&err);
        self.phase = Phase::Closed(err);
        self.wake_publishers();
    }

    /// The topology is re-created: calls go through again.
    pub(crate) fn finish_recovery(&mut self, count: u32) {
        if self.recovering && matches!(self.phase, Phase::Open) {
            self.recovering = false;
            self.retired_messages.recoveries += 1;
            let state = ConnectionState::Recovered { count };
            self.events.push(Event::State(state));
            self.wake_publishers();
        }
    }

    /// Sends channel.open for suspended channel `id` (same epoch, so its handles stay valid);
    /// open-ok answers the request returned.
    pub(crate) fn reopen_channel(&mut self, id: u16, epoch: u64) -> Result<RequestId, Error> {
        self.replay_gate()?;
        let request = self.next_request();
        self.channels_changed();
        let mut io = Io {
            out: &mut self.out,
            frame_max: self.frame_max,
            events: &mut self.events,
        };
        match channel_at(&mut self.channels, id, epoch)
            .filter(|c| matches!(c.status, Status::Recovering))
        {
            Some(chan) => {
                chan.reopen(request, &mut io);
                Ok(request)
            }
            None => Err(Error::ChannelClosedByApp),
        }
    }

    /// Opens a channel of recovery's own (for re-declaring exchanges, queues and bindings,
    /// so that a failing declaration closes no channel of the application's).
    pub(crate) fn open_replay_channel(&mut self) -> Result<(u16, u64, RequestId), Error> {
        self.replay_gate()?;
        self.allocate_channel()
    }

    /// Queues a request of recovery's on channel `id`, past the gate that holds the
    /// application's calls; its reply answers the request returned.
    pub(crate) fn replay_request(
        &mut self,
        id: u16,
        epoch: u64,
        method: Method,
    ) -> Result<RequestId, Error> {
        self.replay_gate()?;
        let request = self.next_request();
        self.queue_rpc(id, epoch, method, Some(request), |_| Ok(()))?;
        Ok(request)
    }

    /// Closes a channel of recovery's own (channel.close 200), past the gate; close-ok answers
    /// the request returned.
    pub(crate) fn close_replay_channel(&mut self, id: u16, epoch: u64) -> Result<RequestId, Error> {
        let close = Method::ChannelClose(amqp_codec::methods::ChannelClose {
            reply_code: amqp_codec::ReplyCode::REPLY_SUCCESS.0,
            reply_text: amqp_codec::ShortStr::from_static("recovery done"),
            class_id: 0,
            method_id: 0,
        });
        self.replay_request(id, epoch, close)
    }

    /// Recovery's requests need the new connection open.
    fn replay_gate(&self) -> Result<(), Error> {
        match (&self.phase, self.recovering) {
            (Phase::Open, true) => Ok(()),
            (_, false) => Err(self.closed_error().unwrap_or(Error::ConnectionClosedByApp)),
            _ => Err(self.phase_error().unwrap_or(Error::ConnectionLost)),
        }
    }

    /// The generation of channel `id` at opening `epoch`, if it exists.
    pub(crate) fn generation(&self, id: u16, epoch: u64) -> Option<u64> {
        self.channels
            .get(usize::from(id))
            .and_then(Option::as_ref)
            .filter(|c| c.epoch == epoch)
            .map(|c| c.generation)
    }
}
