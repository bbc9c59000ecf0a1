//! What the application's handles ask of the core: open channels, send requests, publish,
//! settle deliveries, poll consumers and confirms, close.
//!
//! Every operation checks that the connection is open and that the handle's channel is the
//! same opening (`epoch`) it was given, so a handle never acts on a channel id's next life.

use std::collections::VecDeque;
use std::task::Poll;
use std::time::Instant;

use amqp_codec::methods::{ChannelOpen, ConnectionClose, ConnectionUpdateSecret};
use amqp_codec::{BasicProperties, LongStr, Method, PublishArgs, ReplyCode, ShortStr};
use bytes::Bytes;

use super::channel::{Io, Rpc};
use super::confirms::ReturnKey;
use super::unsettled::Settled;
use super::{ChannelState, Core, Event, Phase, RawDelivery, RequestId, WaiterId};
use crate::error::Error;
use crate::proto::{Confirmation, ReturnedMessage};

impl Core {
    /// The channel `id` at opening `epoch`, if the connection is open and that opening is.
    fn usable_channel(&mut self, id: u16, epoch: u64) -> Result<&mut ChannelState, Error> {
        if let Some(err) = self.closed_error() {
            return Err(err);
        }
        usable(&mut self.channels, id, epoch)
    }

    /// Runs `f` on the usable channel `id` at opening `epoch`, with where its output goes
    /// (borrowed beside the channel, not through `self`).
    fn with_channel<R>(
        &mut self,
        id: u16,
        epoch: u64,
        f: impl FnOnce(&mut ChannelState, &mut Io<'_>) -> R,
    ) -> Result<R, Error> {
        if let Some(err) = self.closed_error() {
            return Err(err);
        }
        let chan = usable(&mut self.channels, id, epoch)?;
        let mut io = Io {
            out: &mut self.out,
            frame_max: self.frame_max,
            events: &mut self.events,
        };
        Ok(f(chan, &mut io))
    }

    /// True while the channel `id` at opening `epoch` and its connection are usable.
    pub(crate) fn channel_usable(&mut self, id: u16, epoch: u64) -> bool {
        self.usable_channel(id, epoch).is_ok()
    }

    /// The channel `id` at opening `epoch`, whatever its state.
    fn channel_at(&mut self, id: u16, epoch: u64) -> Option<&mut ChannelState> {
        channel_at(&mut self.channels, id, epoch)
    }

    /// What a handle whose channel opening is gone gets.
    fn gone_error(&self) -> Error {
        self.closed_error().unwrap_or(Error::ChannelClosedByApp)
    }

    /// Allocates a channel id and sends channel.open; open-ok answers the request returned.
    pub(crate) fn open_channel(&mut self) -> Result<(u16, u64, RequestId), Error> {
        if let Some(err) = self.closed_error() {
            return Err(err);
        }
        self.allocate_channel()
    }

    /// [`open_channel`](Self::open_channel) without the check that the connection is open.
    pub(super) fn allocate_channel(&mut self) -> Result<(u16, u64, RequestId), Error> {
        let max = self.channel_max.max(1);
        let free = |slot: Option<&Option<ChannelState>>| match slot {
            None | Some(None) => true,
            Some(Some(c)) => c.is_closed(),
        };
        let start = self.next_id.clamp(1, max);
        let id = (start..=max)
            .chain(1..start)
            .find(|&id| free(self.channels.get(usize::from(id))))
            .ok_or(Error::ChannelsExhausted(max))?;
        self.next_id = if id == max { 1 } else { id + 1 };
        let epoch = self.next_epoch;
        self.next_epoch += 1;
        if self.channels.len() <= usize::from(id) {
            self.channels.resize_with(usize::from(id) + 1, || None);
        }
        if let Some(Some(old)) = self.channels.get(usize::from(id)) {
            // The id's last opening leaves the table: keep its counts.
            self.retired_tally.add(&old.tally);
            self.retired_messages.add(&old.messages);
        }
        let request = self.next_request();
        self.channels_changed();
        let mut chan = ChannelState::new(id, epoch, &self.config.limits);
        let open = Method::ChannelOpen(ChannelOpen::default());
        let mut io = Io {
            out: &mut self.out,
            frame_max: self.frame_max,
            events: &mut self.events,
        };
        let rpc = Rpc {
            method: open,
            reply: Some(request),
        };
        chan.enqueue(rpc, &mut io);
        self.channels[usize::from(id)] = Some(chan);
        Ok((id, epoch, request))
    }

    /// Queues a request on a channel; its reply comes as an event for the request returned.
    pub(crate) fn request(
        &mut self,
        id: u16,
        epoch: u64,
        method: Method,
    ) -> Result<RequestId, Error> {
        let request = self.next_request();
        self.enqueue(id, epoch, method, Some(request))?;
        Ok(request)
    }

    /// Queues a no-wait request (no reply comes), in order with the others.
    pub(crate) fn request_nowait(
        &mut self,
        id: u16,
        epoch: u64,
        method: Method,
    ) -> Result<(), Error> {
        self.enqueue(id, epoch, method, None)
    }

    /// Queues a request, checking first that it fits a frame (so the caller gets the error
    /// directly).
    fn enqueue(
        &mut self,
        id: u16,
        epoch: u64,
        method: Method,
        reply: Option<RequestId>,
    ) -> Result<(), Error> {
        self.queue_rpc(id, epoch, method, reply, |core| {
            core.closed_error().map_or(Ok(()), Err)
        })
    }

    /// Queues `method` on the usable channel `id` once it fits a frame and `gate` lets it
    /// through: the application's gate (`enqueue`) or recovery's (`replay_request`). Records a
    /// basic.qos's prefetch (read batching's bound).
    pub(super) fn queue_rpc(
        &mut self,
        id: u16,
        epoch: u64,
        method: Method,
        reply: Option<RequestId>,
        gate: impl FnOnce(&Self) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let frame_max = self.frame_max;
        let len = method.encoded_len() + amqp_codec::FRAME_OVERHEAD;
        if frame_max != 0 && len > frame_max as usize {
            return Err(amqp_codec::EncodeError::MethodTooLarge {
                name: method.name(),
                size: len,
                frame_max,
            }
            .into());
        }
        gate(self)?;
        self.channels_changed();
        let chan = usable(&mut self.channels, id, epoch)?;
        let mut io = Io {
            out: &mut self.out,
            frame_max: self.frame_max,
            events: &mut self.events,
        };
        if let Method::BasicQos(qos) = &method {
            chan.prefetch[usize::from(qos.global)] = qos.prefetch_count;
        }
        chan.enqueue(Rpc { method, reply }, &mut io);
        Ok(())
    }

    /// Closes a channel from the client side (reply code 200); close-ok answers the request
    /// returned.
    pub(crate) fn close_channel(&mut self, id: u16, epoch: u64) -> Result<RequestId, Error> {
        let request = self.next_request();
        self.channels_changed();
        let result = self.with_channel(id, epoch, |chan, io| {
            let text = "closed by the application";
            chan.begin_close(ReplyCode::REPLY_SUCCESS, text, Some(request), io);
        });
        self.wake_publishers();
        result.map(|()| request)
    }

    /// Queues a publish, unless it must wait: the broker blocked the connection, the
    /// channel's flow is off, or the outbound queue is above its high-water mark (then the
    /// body comes back in [`Publish::MustWait`]). In confirm mode the publish gets a sequence
    /// number; a mandatory one also keeps its names (copied: the one allocation a publish
    /// may make, only when mandatory in confirm mode) and a reference to its body, to
    /// recognise its basic.return. The names are written straight from `args`.
    pub(crate) fn publish(
        &mut self,
        id: u16,
        epoch: u64,
        args: &PublishArgs<'_>,
        properties: &BasicProperties,
        body: Bytes,
    ) -> Result<Publish, Error> {
        if self.recovering {
            return Ok(Publish::Recovering(body));
        }
        let must_wait = self.blocked.is_some()
            || bytes::Buf::remaining(&self.out) >= self.config.limits.outbound_high_water;
        let outcome = self.with_channel(id, epoch, |chan, io| {
            if must_wait || !chan.flow_active {
                return Ok::<_, Error>(Publish::MustWait(body));
            }
            let key = match &chan.confirms {
                Some(_) if args.mandatory => Some(ReturnKey {
                    exchange: ShortStr::from_bytes(Bytes::copy_from_slice(args.exchange))?,
                    routing_key: ShortStr::from_bytes(Bytes::copy_from_slice(args.routing_key))?,
                    body: body.clone(),
                }),
                _ => None,
            };
            io.out
                .push_publish(id, args, properties, body, io.frame_max)?;
            chan.messages.published += 1;
            Ok(Publish::Queued {
                seq: chan.confirms.as_mut().map(|c| c.register(key)),
                generation: chan.generation,
            })
        })??;
        if let Publish::MustWait(_) = outcome {
            // The publisher waits: the next change that may let it go is reported.
            self.publishers_waiting = true;
        }
        Ok(outcome)
    }

    /// Sends an ack, nack or reject for a delivery of opening `epoch` of channel `id`, received
    /// in the channel's `generation` (a delivery from before a recovery is refused: its tag
    /// could name another message now).
    ///
    /// An ack that leaves every delivery up to its tag settled is merged into the ack queued
    /// just before it, if there is one on this channel: a run of acks in delivery order goes
    /// out as one multiple ack (see `Unsettled`).
    pub(crate) fn settle(
        &mut self,
        id: u16,
        epoch: u64,
        generation: u64,
        delivery_tag: u64,
        method: &Method,
    ) -> Result<(), Error> {
        // Not `usable_channel`: while a recovery restores the other channels and consumers,
        // this channel may already be reopened and its consumer re-registered, and the broker
        // delivers on it. A delivery of the channel's current generation was received on this
        // very connection, so its tag is valid and its ack must go out (refusing it would
        // leave it unacknowledged, holding a prefetch slot, until the connection closes).
        if self.phase_error().is_some() {
            return Err(Error::StaleDelivery { delivery_tag });
        }
        let chan = match usable(&mut self.channels, id, epoch) {
            Ok(chan) if chan.generation == generation => chan,
            _ => return Err(Error::StaleDelivery { delivery_tag }),
        };
        if let Method::BasicAck(_) = method {
            chan.messages.acked += 1;
        } else {
            chan.messages.rejected += 1;
        }
        match method {
            Method::BasicAck(ack) => match chan.unsettled.settle(ack.delivery_tag, ack.multiple) {
                Settled::Through
                    if self.config.coalesce_acks && self.out.extend_ack(id, ack.delivery_tag) => {}
                Settled::Through | Settled::Gap => {
                    self.out.push_ack(id, ack.delivery_tag, ack.multiple);
                }
                // Not extendable: the broker must see it as sent.
                Settled::Unknown => self.out.push_method(id, method, self.frame_max)?,
            },
            Method::BasicNack(nack) => {
                chan.unsettled.settle(nack.delivery_tag, nack.multiple);
                self.out.push_method(id, method, self.frame_max)?;
            }
            _ => {
                chan.unsettled.settle(delivery_tag, false);
                self.out.push_method(id, method, self.frame_max)?;
            }
        }
        Ok(())
    }

    /// Next delivery for consumer `tag`; when pending, `waiter` is woken once that changes.
    /// The bool is true when reading should resume (a full buffer drained); the caller then
    /// wakes the driver. (The tests, the fuzzer and the profiling loops take deliveries one at
    /// a time; `Consumer` takes runs, with [`poll_deliveries`](Self::poll_deliveries).)
    #[cfg(any(test, feature = "internals"))]
    pub(crate) fn poll_delivery(
        &mut self,
        id: u16,
        epoch: u64,
        tag: &ShortStr,
        waiter: WaiterId,
    ) -> (Poll<Option<Result<RawDelivery, Error>>>, bool) {
        self.poll_deliveries(id, epoch, tag, waiter, &mut VecDeque::new(), 0)
    }

    /// [`poll_delivery`](Self::poll_delivery), and with a delivery up to `max` more of the
    /// buffer moved into `ahead` (the stream's own queue: a run of deliveries for one lock;
    /// see `Consumer`), found by the same lookup. The full-buffer accounting is the first
    /// delivery's: the buffer is below its bound once it is taken.
    pub(crate) fn poll_deliveries(
        &mut self,
        id: u16,
        epoch: u64,
        tag: &ShortStr,
        waiter: WaiterId,
        ahead: &mut VecDeque<RawDelivery>,
        max: usize,
    ) -> (Poll<Option<Result<RawDelivery, Error>>>, bool) {
        let Some(chan) = channel_at(&mut self.channels, id, epoch) else {
            return (Poll::Ready(None), false);
        };
        let Some(slot) = chan.consumers.get_mut(tag.as_bytes()) else {
            return (Poll::Ready(None), false);
        };
        let (poll, drained) = slot.poll_next(waiter);
        match poll {
            Poll::Ready(Some(Ok(_))) if max > 0 => slot.take_up_to(ahead, max),
            Poll::Ready(None) => {
                chan.consumers.remove(tag.as_bytes());
                // `channels_changed`, on the field: `chan` borrows the table.
                self.window_cache = None;
            }
            _ => {}
        }
        if drained && self.full_consumers > 0 {
            self.full_consumers -= 1;
            return (poll, self.full_consumers == 0);
        }
        (poll, false)
    }

    /// The application dropped a consumer stream, which had taken `taken` from its buffer
    /// and not handed them out: they are handed back with the buffer.
    pub(crate) fn drop_consumer(
        &mut self,
        id: u16,
        epoch: u64,
        tag: &ShortStr,
        taken: impl IntoIterator<Item = RawDelivery>,
    ) {
        let mut io = Io {
            out: &mut self.out,
            frame_max: self.frame_max,
            events: &mut self.events,
        };
        if let Some(chan) = channel_at(&mut self.channels, id, epoch) {
            chan.detach_consumer(tag, taken, &mut io);
        }
        self.channels_changed();
        self.recount_full();
    }

    /// Polls the confirm of publish `seq`, made in the channel's `generation`. One from before
    /// a recovery fails with what ended that connection (a broker's close with its code and
    /// text, a reset, ...): it is gone, unconfirmed.
    pub(crate) fn poll_confirm(
        &mut self,
        id: u16,
        epoch: u64,
        generation: u64,
        seq: u64,
        waiter: WaiterId,
    ) -> Poll<Result<Confirmation, Error>> {
        match self.channel_at(id, epoch) {
            Some(c) if c.generation != generation => {
                Poll::Ready(Err(c.lost.clone().unwrap_or(Error::ConnectionLost)))
            }
            Some(c) if c.confirms.is_some() => match c.confirms.as_mut() {
                Some(confirms) => confirms.poll(seq, waiter),
                None => Poll::Ready(Err(Error::ConnectionLost)),
            },
            _ => Poll::Ready(Err(self.gone_error())),
        }
    }

    /// The confirm future for `seq` (of `generation`) was dropped.
    pub(crate) fn forget_confirm(&mut self, id: u16, epoch: u64, generation: u64, seq: u64) {
        if let Some(confirms) = self
            .channel_at(id, epoch)
            .filter(|c| c.generation == generation)
            .and_then(|c| c.confirms.as_mut())
        {
            confirms.forget(seq);
        }
    }

    /// Ready when every publish so far is confirmed: `Ok(true)` if all were acked.
    pub(crate) fn poll_all_confirmed(
        &mut self,
        id: u16,
        epoch: u64,
        waiter: WaiterId,
    ) -> Poll<Result<bool, Error>> {
        let Some(chan) = channel_at(&mut self.channels, id, epoch) else {
            return Poll::Ready(Err(self.gone_error()));
        };
        let err = chan.unusable();
        match chan.confirms.as_mut() {
            None => Poll::Ready(Err(Error::InvalidUse("the channel is not in confirm mode"))),
            Some(c) => match c.poll_idle(waiter) {
                Poll::Ready(true) => Poll::Ready(Ok(true)),
                Poll::Ready(false) => Poll::Ready(err.map_or(Ok(false), Err)),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    /// Confirms still outstanding on a channel.
    pub(crate) fn pending_confirms(&mut self, id: u16, epoch: u64) -> usize {
        self.channel_at(id, epoch)
            .and_then(|c| c.confirms.as_ref())
            .map_or(0, super::confirms::Confirms::pending)
    }

    /// Returned messages held for the application.
    pub(crate) fn take_returns(&mut self, id: u16, epoch: u64) -> Vec<ReturnedMessage> {
        self.channel_at(id, epoch)
            .map(ChannelState::take_returns)
            .unwrap_or_default()
    }

    /// Starts a clean close of the connection; its end comes as [`Event::Closed`]. Every
    /// channel fails with `ConnectionClosedByApp` at once, and recovery is off from now on.
    pub(crate) fn close(&mut self, code: ReplyCode, text: &str, now: Instant) {
        self.app_closed = true;
        self.close_requested = true;
        let err = Error::ConnectionClosedByApp;
        match self.phase {
            Phase::Open => {
                let close = Method::ConnectionClose(ConnectionClose {
                    reply_code: code.0,
                    reply_text: super::truncate_short(text),
                    class_id: 0,
                    method_id: 0,
                });
                if self.send_connection_method(&close) {
                    self.begin_closing(err.clone(), now);
                }
                self.fail_all(&err);
            }
            Phase::Closing(_) => {}
            Phase::Closed(_) => {
                // Between two transports, or over: recovery is called off.
                self.close_requested = false;
                self.events.push(Event::Closed);
                if self.recovering {
                    self.fail_all(&err);
                }
            }
            Phase::AwaitStart | Phase::AwaitTune | Phase::AwaitOpenOk => {
                self.close_requested = false;
                self.phase = Phase::Closed(err.clone());
                self.deadline = None;
                self.fail_all(&err);
                self.events.push(Event::Closed);
            }
        }
    }

    /// Sends connection.update-secret; the answer comes as [`Event::SecretUpdated`].
    pub(crate) fn update_secret(&mut self, secret: &str, reason: &str) -> Result<(), Error> {
        if let Some(err) = self.closed_error() {
            return Err(err);
        }
        if self.secret_pending {
            return Err(Error::InvalidUse("an update-secret is already in progress"));
        }
        let method = Method::ConnectionUpdateSecret(ConnectionUpdateSecret {
            new_secret: LongStr::from(secret),
            reason: super::truncate_short(reason),
        });
        if self.send_connection_method(&method) {
            self.secret_pending = true;
        }
        Ok(())
    }

    /// Negotiated (channel-max, frame-max, heartbeat seconds).
    pub(crate) fn tuning(&self) -> (u16, u32, u16) {
        let hb = self
            .heartbeat
            .map_or(0, |d| u16::try_from(d.as_secs()).unwrap_or(u16::MAX));
        (self.channel_max, self.frame_max, hb)
    }
}

/// What [`Core::publish`] did.
#[derive(Debug)]
pub(crate) enum Publish {
    /// Queued.
    Queued {
        /// The confirm sequence number in confirm mode.
        seq: Option<u64>,
        /// The channel's generation, which the confirm belongs to.
        generation: u64,
    },
    /// Back-pressure: nothing was queued; here is the body back for the next try.
    MustWait(Bytes),
    /// The connection is being recovered: nothing was queued; the body is back.
    Recovering(Bytes),
}

/// The channel `id` at opening `epoch`, whatever its state.
pub(super) fn channel_at(
    channels: &mut [Option<ChannelState>],
    id: u16,
    epoch: u64,
) -> Option<&mut ChannelState> {
    channels
        .get_mut(usize::from(id))
        .and_then(Option::as_mut)
        .filter(|c| c.epoch == epoch)
}

/// The channel `id` in its current opening if a frame from the broker may reach it: in the
/// table and not closed (closing still counts: it takes close and close-ok). Channel 0 has
/// no entry.
#[inline(always)]
pub(super) fn receiving(
    channels: &mut [Option<ChannelState>],
    id: u16,
) -> Option<&mut ChannelState> {
    channels
        .get_mut(usize::from(id))
        .and_then(Option::as_mut)
        .filter(|c| !c.is_closed())
}

/// The channel `id` at opening `epoch` if it is usable, else the error a call on it gets.
pub(super) fn usable(
    channels: &mut [Option<ChannelState>],
    id: u16,
    epoch: u64,
) -> Result<&mut ChannelState, Error> {
    let chan = channel_at(channels, id, epoch).ok_or(Error::ChannelClosedByApp)?;
    match chan.unusable() {
        Some(err) => Err(err),
        None => Ok(chan),
    }
}
