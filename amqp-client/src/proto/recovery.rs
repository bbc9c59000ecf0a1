//! The core's side of automatic recovery: suspend the channels when the connection is lost,
//! start over on a new transport, let the supervisor replay the topology past the
//! application's gate, and finish (or give up).
//!
//! The application's handles keep their channel id and opening (`epoch`) across recovery;
//! what changes is each channel's `generation`, so acks and confirms from before are refused.

use std::time::Instant;

use amqp_codec::{Method, ShortStr};
use tokio::sync::oneshot;

use super::channel::Status;
use super::ops::{channel_at, usable};
use super::{ChannelState, Core, Phase, ReplyTx, Rpc, Topology};
use crate::error::Error;
use crate::recovery::ConnectionState;

impl Core {
    /// Whether the loss of the connection with `err` is recovered. Once recovery runs, an
    /// attempt that meets a peer not (yet) speaking AMQP, such as a node still starting or a
    /// load balancer without a backend, is retried too; refused credentials are not.
    pub(super) fn should_recover(&self, err: &Error) -> bool {
        let retried = self.recovering
            && matches!(
                err,
                Error::NotAmqp(_) | Error::Protocol { .. } | Error::Tls(_)
            );
        self.topology.is_some() && !self.app_closed && (err.is_recoverable() || retried)
    }

    /// The connection is lost and will be recovered: channels the application holds are
    /// suspended (their consumers' streams stay open), everything else fails with `err`.
    pub(super) fn suspend(&mut self, err: &Error) {
        let topology = self.topology.get_or_insert_with(Topology::default);
        for chan in self.channels.iter_mut().flatten() {
            let id = chan.id();
            match chan.status {
                Status::Open | Status::Opening if topology.channels.contains_key(&id) => {
                    chan.suspend(err);
                }
                Status::Recovering | Status::Closed(_) => {}
                _ => chan.close_with(err.clone()),
            }
        }
        // Forget what will not come back: closed channels, ended consumers.
        let channels = &self.channels;
        let suspended = |id: u16| -> Option<&ChannelState> {
            channels
                .get(usize::from(id))
                .and_then(Option::as_ref)
                .filter(|c| matches!(c.status, Status::Recovering))
        };
        topology.channels.retain(|&id, record| match suspended(id) {
            Some(chan) => {
                record
                    .consumers
                    .retain(|c| chan.consumers.contains_key(c.consumer_tag.as_bytes()));
                true
            }
            None => false,
        });
        if !self.recovering {
            self.recovering = true;
            self.state_tx
                .send_replace(ConnectionState::Recovering { attempt: 0 });
        }
        self.blocked_tx.send_replace(None);
        self.fail_connection_waiters(err);
    }

    /// What ended the last connection.
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
            self.state_tx
                .send_replace(ConnectionState::Recovering { attempt });
        }
    }

    /// A new transport to `host:port` is up: start the handshake over on it (the protocol
    /// header is queued). `opened` resolves at open-ok. False if recovery was called off.
    pub(crate) fn restart(
        &mut self,
        host: &str,
        port: u16,
        now: Instant,
        opened: oneshot::Sender<Result<(), Error>>,
    ) -> bool {
        if !self.recovering || !matches!(self.phase, Phase::Closed(_)) {
            return false;
        }
        self.config.host = host.to_owned();
        self.config.port = port;
        self.start_transport(now);
        self.open_waiter = Some(opened);
        true
    }

    /// Recovery gave up with `err`: every suspended channel, consumer and call fails with it.
    pub(crate) fn give_up(&mut self, err: Error) {
        self.fail_waiters(&err);
        self.phase = Phase::Closed(err);
        self.publish_gate.notify_waiters();
    }

    /// The topology is re-created: calls go through again.
    pub(crate) fn finish_recovery(&mut self, count: u32) {
        if self.recovering && matches!(self.phase, Phase::Open) {
            self.recovering = false;
            self.state_tx
                .send_replace(ConnectionState::Recovered { count });
            self.publish_gate.notify_waiters();
        }
    }

    /// The suspended channels, as (id, epoch), in id order.
    pub(crate) fn suspended_channels(&self) -> Vec<(u16, u64)> {
        self.channels
            .iter()
            .flatten()
            .filter(|c| matches!(c.status, Status::Recovering))
            .map(|c| (c.id(), c.epoch))
            .collect()
    }

    /// A copy of what is to be re-created.
    pub(crate) fn topology_snapshot(&self) -> Topology {
        self.topology.clone().unwrap_or_default()
    }

    /// A server-named queue came back as `new`.
    pub(crate) fn rename_queue(&mut self, old: &ShortStr, new: &ShortStr) {
        if let Some(t) = self.topology.as_mut() {
            t.rename_queue(old, new);
        }
    }

    /// Sends channel.open for suspended channel `id` (same epoch, so its handles stay valid).
    pub(crate) fn reopen_channel(
        &mut self,
        id: u16,
        epoch: u64,
        reply: ReplyTx,
    ) -> Result<(), Error> {
        self.replay_gate()?;
        let (out, frame_max) = (&mut self.out, self.frame_max);
        match channel_at(&mut self.channels, id, epoch)
            .filter(|c| matches!(c.status, Status::Recovering))
        {
            Some(chan) => {
                chan.reopen(reply, out, frame_max);
                Ok(())
            }
            None => Err(Error::ChannelClosedByApp),
        }
    }

    /// Opens a channel of recovery's own (for re-declaring exchanges, queues and bindings,
    /// so that a failing declaration closes no channel of the application's).
    pub(crate) fn open_replay_channel(&mut self, reply: ReplyTx) -> Result<(u16, u64), Error> {
        self.replay_gate()?;
        self.allocate_channel(reply)
    }

    /// Queues a request of recovery's on channel `id`, past the gate that holds the
    /// application's calls.
    pub(crate) fn replay_request(
        &mut self,
        id: u16,
        epoch: u64,
        method: Method,
        reply: ReplyTx,
    ) -> Result<(), Error> {
        self.replay_gate()?;
        let (out, frame_max) = (&mut self.out, self.frame_max);
        let chan = usable(&mut self.channels, id, epoch)?;
        chan.enqueue(
            Rpc {
                method,
                reply: Some(reply),
            },
            out,
            frame_max,
        );
        Ok(())
    }

    /// Recovery's requests need the new connection open.
    fn replay_gate(&self) -> Result<(), Error> {
        match (&self.phase, self.recovering) {
            (Phase::Open, true) => Ok(()),
            (_, false) => Err(self.closed_error().unwrap_or(Error::ConnectionClosedByApp)),
            _ => Err(self.phase_error().unwrap_or(Error::ConnectionLost)),
        }
    }

    /// The application opened channel `id`: it is recovered from now on (if recovery is on).
    pub(crate) fn record_channel(&mut self, id: u16) {
        if let Some(t) = self.topology.as_mut() {
            t.forget_channel(id);
            t.channels.entry(id).or_default();
        }
    }

    /// The broker accepted `request` (answering `reply`) on channel `id`.
    pub(crate) fn record(&mut self, id: u16, request: &Method, reply: Option<&Method>) {
        if let Some(t) = self.topology.as_mut() {
            t.record(id, request, reply);
        }
    }

    /// True if a request like `method` must be kept until its reply, for recovery.
    pub(crate) fn wants_record(&self, method: &Method) -> bool {
        self.topology.is_some() && Topology::records(method)
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
