//! One channel's state machine: its RPC queue (one synchronous method on the wire at a time,
//! replies matched in order), its consumers, confirms, returns and flow state.
//!
//! Everything here is synchronous and driven by the connection core: methods in, frames out
//! (into the connection's [`Outbound`]), waiters woken.

use std::collections::VecDeque;

use amqp_codec::methods::{BasicCancelOk, ChannelClose, ChannelCloseOk, ChannelFlowOk};
use amqp_codec::{Content, ContentAssembler, Discarded, Method, Outbound, ReplyCode};
use bytes::Bytes;
use rustc_hash::FxHashMap;

mod content;
mod lifecycle;

pub(crate) use content::DeliveryTally;

use super::confirms::Confirms;
use super::consumers::ConsumerSlot;
use super::events::{Events, RequestId};
use super::unsettled::Unsettled;
use crate::config::Limits;
use crate::error::{CloseReason, Error};
use crate::proto::ReturnedMessage;
use crate::stats::MessageStats;

/// A synchronous method's answer.
#[derive(Debug)]
pub(crate) enum Reply {
    /// A reply without content.
    Method(Method),
    /// basic.get-ok with its message, and the channel's generation it arrived in (what its
    /// acker must match).
    Content(Content, u64),
    /// basic.get-ok whose content the client dropped (over the size limit, or properties
    /// that do not parse), and the generation it arrived in.
    Discarded(Discarded, u64),
}

impl Reply {
    /// The method, whether or not content came with it.
    pub(crate) fn method(&self) -> &Method {
        match self {
            Self::Method(m) => m,
            Self::Content(c, _) => &c.method,
            Self::Discarded(d, _) => &d.method,
        }
    }
}

/// A queued request.
#[derive(Debug)]
pub(crate) struct Rpc {
    /// The method to send.
    pub(crate) method: Method,
    /// The request its reply answers (as [`Event::Reply`](super::Event::Reply)); `None` for
    /// no-wait methods queued only to keep their order.
    pub(crate) reply: Option<RequestId>,
}

/// Where a channel's output goes as it handles a frame or a request: the connection's
/// outbound queue (with the negotiated frame-max) and its events.
#[derive(Debug)]
pub(crate) struct Io<'a> {
    /// Frames for the driver to write.
    pub(crate) out: &'a mut Outbound,
    /// The negotiated frame-max for what we send (0: no limit).
    pub(crate) frame_max: u32,
    /// What the layer above must act on.
    pub(crate) events: &'a mut Events,
}

impl Io<'_> {
    /// Queues a method the channel sends on its own (an answer such as close-ok, or a
    /// settlement); these always fit a frame.
    pub(crate) fn send(&mut self, channel: u16, method: &Method) {
        let _ = self.out.push_method(channel, method, self.frame_max);
    }
}

/// Lifecycle of a channel.
#[derive(Debug)]
pub(crate) enum Status {
    /// channel.open sent, open-ok not yet received.
    Opening,
    /// Usable.
    Open,
    /// We sent channel.close; everything but close/close-ok is discarded (spec). The error is
    /// what pending and later calls get.
    Closing(Error),
    /// Closed; calls fail with this error. The id may be reused by a new opening.
    Closed(Error),
    /// The connection was lost and is being recovered: the channel keeps its id, its handles
    /// and its consumers' streams, and is opened again on the next connection.
    Recovering,
}

/// What the connection must do after a channel handled a frame.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Effect {
    /// Nothing more.
    None,
    /// A consumer's buffer became full: stop reading the socket until it drains.
    ConsumerFull,
    /// The channel closed (by either side); release its id and wake publishers.
    Closed,
    /// Flow or confirm state changed: wake waiting publishers.
    WakePublishers,
}

/// A peer's protocol violation that closes the whole connection.
#[derive(Debug)]
pub(crate) struct Violation {
    pub(crate) code: ReplyCode,
    pub(crate) message: String,
    pub(crate) method: Option<(amqp_codec::ClassId, u16)>,
}

/// One channel.
#[derive(Debug)]
pub(crate) struct ChannelState {
    /// The channel number.
    id: u16,
    /// Which opening of this number (connection-wide counter): handles of an older opening
    /// are refused.
    pub(crate) epoch: u64,
    /// Bumped each time the connection under the channel is lost: delivery tags and confirm
    /// numbers of an earlier generation mean nothing to the broker now, so acks and confirm
    /// futures carry the generation they belong to and are refused if it is not this one.
    pub(crate) generation: u64,
    /// Lifecycle.
    pub(crate) status: Status,
    /// Joins this channel's content frames into messages, enforcing the size limit.
    pub(crate) assembler: ContentAssembler,
    /// Requests in order; the front one is on the wire when `in_flight`.
    rpcs: VecDeque<Rpc>,
    /// True while the front request waits for its reply.
    in_flight: bool,
    /// Consumers by tag. Looked up twice per delivery (on arrival and when the stream takes
    /// it), so with Fx hashing: SipHash cost more than the rest of the lookup. The tags are
    /// the application's or the broker's, not a stranger's, so hash flooding is no concern.
    pub(crate) consumers: FxHashMap<Bytes, ConsumerSlot>,
    /// Deliveries waiting for the application's ack, nack or reject: what lets consecutive
    /// acks go out as one multiple ack.
    pub(crate) unsettled: Unsettled,
    /// Consumers the application dropped: their deliveries are handed back (rejected with
    /// requeue) until the cancel completes. Maps tag to `no_ack`.
    detached: FxHashMap<Bytes, bool>,
    /// True once a no-ack consumer was started on this opening: a delivery for a consumer tag
    /// the channel does not know may then be one the broker considers settled, which must not
    /// be rejected (the broker would close the channel for an unknown tag).
    any_no_ack: bool,
    /// Deliveries this channel could not hand to a consumer as they came, for
    /// `Connection::delivery_stats`.
    pub(crate) tally: DeliveryTally,
    /// What this channel did with messages (published, confirmed, delivered, settled), for
    /// `Connection::message_stats`: plain counts, bumped under the connection's lock.
    pub(crate) messages: MessageStats,
    /// Publisher confirms, once confirm.select was sent.
    pub(crate) confirms: Option<Confirms>,
    /// Returned messages waiting for their confirm (confirm mode) or for the application.
    returns: VecDeque<ReturnedMessage>,
    /// Bound on `returns`.
    max_returns: usize,
    /// channel.flow from the broker: false pauses publishing.
    pub(crate) flow_active: bool,
    /// Capacity of each consumer's buffer.
    consumer_capacity: usize,
    /// The prefetch counts asked for with basic.qos, per consumer and per channel (0: no
    /// limit): how many deliveries the broker sends before it waits for acks, which read
    /// batching must never wait beyond.
    pub(crate) prefetch: [u16; 2],
    /// What ended the channel's last generation (the connection loss recovery followed): a
    /// confirm or call from that generation, met later, fails with it.
    pub(crate) lost: Option<Error>,
}

impl ChannelState {
    pub(crate) fn new(id: u16, epoch: u64, limits: &Limits) -> Self {
        Self {
            id,
            epoch,
            generation: 0,
            status: Status::Opening,
            assembler: ContentAssembler::new(limits.max_message_size),
            rpcs: VecDeque::new(),
            in_flight: false,
            consumers: FxHashMap::default(),
            unsettled: Unsettled::default(),
            detached: FxHashMap::default(),
            any_no_ack: false,
            tally: DeliveryTally::default(),
            messages: MessageStats::default(),
            confirms: None,
            returns: VecDeque::new(),
            max_returns: limits.max_pending_returns,
            flow_active: true,
            consumer_capacity: limits.consumer_buffer,
            prefetch: [0; 2],
            lost: None,
        }
    }

    /// The channel number.
    pub(crate) fn id(&self) -> u16 {
        self.id
    }

    /// The error a call on this channel gets now, if it cannot proceed.
    pub(crate) fn unusable(&self) -> Option<Error> {
        match &self.status {
            Status::Opening | Status::Open => None,
            Status::Closing(err) | Status::Closed(err) => Some(err.clone()),
            Status::Recovering => Some(Error::Recovering),
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        matches!(self.status, Status::Closed(_))
    }

    /// Queues a request and sends it if the wire is free.
    pub(crate) fn enqueue(&mut self, rpc: Rpc, io: &mut Io<'_>) {
        self.rpcs.push_back(rpc);
        self.pump(io);
    }

    /// Sends queued requests until one waits for a reply.
    fn pump(&mut self, io: &mut Io<'_>) {
        while !self.in_flight {
            let Some(rpc) = self.rpcs.front() else { return };
            if let Err(err) = io.out.push_method(self.id, &rpc.method, io.frame_max) {
                if let Some(rpc) = self.rpcs.pop_front()
                    && let Some(tx) = rpc.reply
                {
                    io.events.reply(tx, Err(err.into()));
                }
                continue;
            }
            self.on_sent(io.events);
        }
    }

    /// Bookkeeping once the front request is on the wire.
    fn on_sent(&mut self, events: &mut Events) {
        let Some(front) = self.rpcs.front() else {
            return;
        };
        let in_flight = front.method.is_synchronous() && !is_nowait(&front.method);
        let mut closing = None;
        match &front.method {
            Method::ConfirmSelect(_) if self.confirms.is_none() => {
                // The broker numbers publishes from the first one after confirm.select.
                self.confirms = Some(Confirms::new());
            }
            Method::ChannelClose(m) => {
                closing = Some(if m.reply_code == ReplyCode::REPLY_SUCCESS.0 {
                    Error::ChannelClosedByApp
                } else {
                    Error::ChannelAborted(close_reason(m))
                });
            }
            Method::BasicConsume(m) => {
                self.any_no_ack |= m.no_ack;
                if m.nowait {
                    let tag = m.consumer_tag.clone().into_bytes();
                    let (capacity, no_ack) = (self.consumer_capacity, m.no_ack);
                    self.consumers
                        .entry(tag)
                        .or_insert_with(|| ConsumerSlot::new(capacity, no_ack));
                }
            }
            _ => {}
        }
        if in_flight {
            self.in_flight = true;
        } else {
            self.rpcs.pop_front();
        }
        if let Some(err) = closing {
            // The close stays on the wire; whatever was queued behind it fails.
            self.status = Status::Closing(err.clone());
            for rpc in self.rpcs.drain(1..) {
                if let Some(request) = rpc.reply {
                    events.reply(request, Err(err.clone()));
                }
            }
            self.fail_streams(&err, events);
        }
    }

    /// Handles a method (or a complete message) for this channel.
    pub(crate) fn handle(&mut self, reply: Reply, io: &mut Io<'_>) -> Result<Effect, Violation> {
        let method = reply.method();
        if let Status::Closing(_) = self.status
            && !matches!(method, Method::ChannelClose(_) | Method::ChannelCloseOk(_))
        {
            return Ok(Effect::None); // spec: discard everything until close-ok
        }
        match reply {
            Reply::Content(content, _) => self.handle_content(content, io),
            Reply::Discarded(discarded, _) => self.handle_discarded(discarded, io),
            Reply::Method(method) => self.handle_method(method, io),
        }
    }

    fn handle_method(&mut self, method: Method, io: &mut Io<'_>) -> Result<Effect, Violation> {
        match method {
            Method::ChannelClose(m) => {
                io.send(self.id, &Method::ChannelCloseOk(ChannelCloseOk {}));
                if let Status::Closing(_) = self.status {
                    // Both sides closed at once: answered; ours still awaits its close-ok.
                    return Ok(Effect::None);
                }
                self.close_with(Error::ChannelClosed(close_reason(&m)), io.events);
                Ok(Effect::Closed)
            }
            Method::ChannelCloseOk(_) => {
                let Status::Closing(err) = &self.status else {
                    return Err(unexpected(&method, "a close-ok without a close"));
                };
                let err = err.clone();
                if let Some(rpc) = self.rpcs.pop_front()
                    && let Some(tx) = rpc.reply
                {
                    io.events.reply(tx, Ok(Reply::Method(method)));
                }
                self.close_with(err, io.events);
                Ok(Effect::Closed)
            }
            Method::ChannelFlow(m) => {
                self.flow_active = m.active;
                let ok = Method::ChannelFlowOk(ChannelFlowOk { active: m.active });
                io.send(self.id, &ok);
                Ok(Effect::WakePublishers)
            }
            Method::BasicAck(m) => self.confirm(m.delivery_tag, m.multiple, true, io.events),
            Method::BasicNack(m) => self.confirm(m.delivery_tag, m.multiple, false, io.events),
            Method::BasicCancel(m) => {
                // The broker cancelled a consumer (queue deleted, node down).
                let tag = m.consumer_tag.as_bytes();
                // The slot stays so the stream can drain what it buffered.
                if let Some(slot) = self.consumers.get_mut(tag) {
                    let err = Error::ConsumerCancelled {
                        consumer_tag: String::from_utf8_lossy(tag).into_owned(),
                    };
                    slot.end(Some(err), io.events);
                }
                self.detached.remove(tag);
                if !m.nowait {
                    let ok = Method::BasicCancelOk(BasicCancelOk {
                        consumer_tag: m.consumer_tag,
                    });
                    io.send(self.id, &ok);
                }
                Ok(Effect::None)
            }
            other => self.complete(Reply::Method(other), io),
        }
    }

    /// A broker ack or nack for our publishes.
    fn confirm(
        &mut self,
        tag: u64,
        multiple: bool,
        ack: bool,
        events: &mut Events,
    ) -> Result<Effect, Violation> {
        let Some(confirms) = &mut self.confirms else {
            return Err(Violation {
                code: ReplyCode::COMMAND_INVALID,
                message: format!(
                    "basic.ack/nack {tag} on channel {} without confirm mode",
                    self.id
                ),
                method: None,
            });
        };
        let pending = confirms.pending();
        if !confirms.resolve(tag, multiple, ack, events) {
            return Err(Violation {
                code: ReplyCode::COMMAND_INVALID,
                message: format!(
                    "broker confirmed delivery tag {tag} on channel {}, which was never published or already confirmed",
                    self.id
                ),
                method: None,
            });
        }
        let resolved = (pending - confirms.pending()) as u64;
        if ack {
            self.messages.confirmed += resolved;
        } else {
            self.messages.nacked += resolved;
        }
        Ok(Effect::WakePublishers)
    }

    /// Matches a reply with the request on the wire.
    fn complete(&mut self, reply: Reply, io: &mut Io<'_>) -> Result<Effect, Violation> {
        let method = reply.method();
        let expected = match self.rpcs.front() {
            Some(rpc) if self.in_flight && rpc.method.is_answered_by(method) => rpc,
            Some(rpc) if self.in_flight => {
                return Err(unexpected(method, rpc.method.name()));
            }
            _ => return Err(unexpected(method, "no request")),
        };
        match (&expected.method, method) {
            (Method::ChannelOpen(_), _) => self.status = Status::Open,
            (Method::BasicConsume(m), Method::BasicConsumeOk(ok)) => {
                // A recovered consumer keeps its slot (and the stream's waiter).
                let tag = ok.consumer_tag.clone().into_bytes();
                let (capacity, no_ack) = (self.consumer_capacity, m.no_ack);
                self.consumers
                    .entry(tag)
                    .or_insert_with(|| ConsumerSlot::new(capacity, no_ack));
            }
            (Method::BasicGet(get), Method::BasicGetOk(ok)) => {
                self.unsettled.delivered(ok.delivery_tag, !get.no_ack);
                self.messages.delivered += 1;
            }
            (Method::BasicCancel(_), Method::BasicCancelOk(ok)) => {
                let tag = ok.consumer_tag.as_bytes();
                if let Some(slot) = self.consumers.get_mut(tag) {
                    slot.end(None, io.events);
                }
                self.detached.remove(tag);
            }
            _ => {}
        }
        self.in_flight = false;
        if let Some(rpc) = self.rpcs.pop_front()
            && let Some(tx) = rpc.reply
        {
            io.events.reply(tx, Ok(reply));
        }
        self.pump(io);
        Ok(Effect::None)
    }
}

/// The reason a channel.close carries.
fn close_reason(m: &ChannelClose) -> CloseReason {
    CloseReason::from_wire(m.reply_code, &m.reply_text, m.class_id, m.method_id)
}

/// True for methods sent with the no-wait bit: no reply comes.
fn is_nowait(method: &Method) -> bool {
    match method {
        Method::ExchangeDeclare(m) => m.nowait,
        Method::ExchangeDelete(m) => m.nowait,
        Method::ExchangeBind(m) => m.nowait,
        Method::ExchangeUnbind(m) => m.nowait,
        Method::QueueDeclare(m) => m.nowait,
        Method::QueueBind(m) => m.nowait,
        Method::QueuePurge(m) => m.nowait,
        Method::QueueDelete(m) => m.nowait,
        Method::BasicConsume(m) => m.nowait,
        Method::BasicCancel(m) => m.nowait,
        Method::ConfirmSelect(m) => m.nowait,
        _ => false,
    }
}

fn unexpected(got: &Method, waiting_for: &str) -> Violation {
    Violation {
        code: ReplyCode::COMMAND_INVALID,
        message: format!("unexpected {} while waiting for {waiting_for}", got.name()),
        method: Some((got.class_id(), got.method_id())),
    }
}
