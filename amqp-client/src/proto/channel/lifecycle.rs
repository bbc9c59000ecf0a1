//! How a channel ends or pauses: a consumer dropped by the application, a close from either
//! side, and suspension while the connection is recovered.

use amqp_codec::methods::{BasicReject, ChannelClose};
use amqp_codec::{Method, ReplyCode, ShortStr};

use super::{ChannelState, Io, Rpc, Status};
use crate::error::Error;
use crate::proto::events::{Events, RequestId};
use crate::proto::truncate_short;
use crate::proto::{RawDelivery, ReturnedMessage};

impl ChannelState {
    /// The application dropped a consumer: cancel it and hand back what it had not handed
    /// out, `taken` (what its stream had taken from the buffer ahead) first, then the buffer.
    pub(crate) fn detach_consumer(
        &mut self,
        tag: &ShortStr,
        taken: impl IntoIterator<Item = RawDelivery>,
        io: &mut Io<'_>,
    ) {
        let key = tag.as_bytes();
        let Some(mut slot) = self.consumers.remove(key) else {
            return;
        };
        let no_ack = slot.no_ack();
        if slot.is_ended() || !matches!(self.status, Status::Open) {
            return;
        }
        if !no_ack {
            // Taken in an earlier generation (before a recovery), a tag names nothing now.
            let generation = self.generation;
            let taken = taken.into_iter().filter(|d| d.generation == generation);
            for d in taken.chain(slot.take_buffered()) {
                self.unsettled.settle(d.delivery_tag(), false);
                let reject = Method::BasicReject(BasicReject {
                    delivery_tag: d.delivery_tag(),
                    requeue: true,
                });
                io.send(self.id, &reject);
            }
        }
        self.detached.insert(tag.clone().into_bytes(), no_ack);
        let cancel = Method::BasicCancel(amqp_codec::methods::BasicCancel {
            consumer_tag: tag.clone(),
            nowait: false,
        });
        let rpc = Rpc {
            method: cancel,
            reply: None,
        };
        self.enqueue(rpc, io);
    }

    /// Returned messages held for the application (outside confirm mode).
    pub(crate) fn take_returns(&mut self) -> Vec<ReturnedMessage> {
        self.returns.drain(..).collect()
    }

    /// Starts a client-side close with `reply_code` (200 for a normal close).
    pub(crate) fn begin_close(
        &mut self,
        code: ReplyCode,
        text: &str,
        reply: Option<RequestId>,
        io: &mut Io<'_>,
    ) {
        let close = Method::ChannelClose(ChannelClose {
            reply_code: code.0,
            reply_text: truncate_short(text),
            class_id: 0,
            method_id: 0,
        });
        // A close jumps the queue: requests not yet sent fail now.
        let keep = usize::from(self.in_flight);
        for rpc in self.rpcs.drain(keep..) {
            if let Some(request) = rpc.reply {
                io.events.reply(request, Err(Error::ChannelClosedByApp));
            }
        }
        let rpc = Rpc {
            method: close,
            reply,
        };
        self.enqueue(rpc, io);
    }

    /// The connection was lost and will be recovered: what waits for a reply and every
    /// pending confirm fail with `err`; deliveries not yet taken are dropped (their tags die
    /// with the connection; the broker requeues them); consumers' streams stay open for the
    /// next connection. The generation moves on, so older acks and confirms are refused.
    pub(crate) fn suspend(&mut self, err: &Error, events: &mut Events) {
        self.fail_requests(err, events);
        if let Some(mut confirms) = self.confirms.take() {
            confirms.fail_all(err, events);
        }
        self.detached.clear();
        self.assembler.reset();
        self.flow_active = true;
        self.consumers.retain(|_, slot| {
            slot.clear();
            !slot.is_ended()
        });
        self.generation += 1;
        self.lost = Some(err.clone());
        self.unsettled.reset();
        self.status = Status::Recovering;
    }

    /// Opens a suspended channel again, on the recovered connection; the open-ok answers
    /// `reply`.
    pub(crate) fn reopen(&mut self, reply: RequestId, io: &mut Io<'_>) {
        self.status = Status::Opening;
        let open = Method::ChannelOpen(amqp_codec::methods::ChannelOpen::default());
        let rpc = Rpc {
            method: open,
            reply: Some(reply),
        };
        self.enqueue(rpc, io);
    }

    /// Marks the channel closed and fails everything waiting on it.
    pub(crate) fn close_with(&mut self, err: Error, events: &mut Events) {
        self.fail_requests(&err, events);
        self.fail_streams(&err, events);
        self.status = Status::Closed(err);
    }

    /// Fails every queued request, the one on the wire included.
    pub(super) fn fail_requests(&mut self, err: &Error, events: &mut Events) {
        for rpc in self.rpcs.drain(..) {
            if let Some(request) = rpc.reply {
                events.reply(request, Err(err.clone()));
            }
        }
        self.in_flight = false;
    }

    /// Fails outstanding confirms and ends every consumer with `err`.
    pub(super) fn fail_streams(&mut self, err: &Error, events: &mut Events) {
        if let Some(confirms) = &mut self.confirms {
            confirms.fail_all(err, events);
        }
        for slot in self.consumers.values_mut() {
            slot.end(Some(err.clone()), events);
        }
        self.detached.clear();
    }
}
