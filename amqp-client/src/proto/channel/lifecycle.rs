//! How a channel ends or pauses: a consumer dropped by the application, a close from either
//! side, and suspension while the connection is recovered.

use amqp_codec::methods::{BasicReject, ChannelClose};
use amqp_codec::{Method, Outbound, ReplyCode, ShortStr};

use super::{ChannelState, ReplyTx, Rpc, Status};
use crate::error::Error;
use crate::message::ReturnedMessage;
use crate::proto::truncate_short;

impl ChannelState {
    /// The application dropped a consumer: cancel it and hand back what it had buffered.
    pub(crate) fn detach_consumer(&mut self, tag: &ShortStr, out: &mut Outbound, frame_max: u32) {
        let key = tag.as_bytes();
        let Some(mut slot) = self.consumers.remove(key) else {
            return;
        };
        let no_ack = slot.no_ack();
        if slot.is_ended() || !matches!(self.status, Status::Open) {
            return;
        }
        if !no_ack {
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            while let (std::task::Poll::Ready(Some(Ok(d))), _) = slot.poll_next(&mut cx) {
                self.unsettled.settle(d.delivery_tag, false);
                let reject = Method::BasicReject(BasicReject {
                    delivery_tag: d.delivery_tag,
                    requeue: true,
                });
                let _ = out.push_method(self.id, &reject, frame_max);
            }
        }
        self.detached.insert(tag.clone().into_bytes(), no_ack);
        let cancel = Method::BasicCancel(amqp_codec::methods::BasicCancel {
            consumer_tag: tag.clone(),
            nowait: false,
        });
        self.enqueue(
            Rpc {
                method: cancel,
                reply: None,
            },
            out,
            frame_max,
        );
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
        reply: Option<ReplyTx>,
        out: &mut Outbound,
        frame_max: u32,
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
            if let Some(tx) = rpc.reply {
                let _ = tx.send(Err(Error::ChannelClosedByApp));
            }
        }
        self.enqueue(
            Rpc {
                method: close,
                reply,
            },
            out,
            frame_max,
        );
    }

    /// The connection was lost and will be recovered: what waits for a reply and every
    /// pending confirm fail with `err`; deliveries not yet taken are dropped (their tags die
    /// with the connection; the broker requeues them); consumers' streams stay open for the
    /// next connection. The generation moves on, so older acks and confirms are refused.
    pub(crate) fn suspend(&mut self, err: &Error) {
        self.fail_requests(err);
        if let Some(mut confirms) = self.confirms.take() {
            confirms.fail_all(err);
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

    /// Opens a suspended channel again, on the recovered connection.
    pub(crate) fn reopen(&mut self, reply: ReplyTx, out: &mut Outbound, frame_max: u32) {
        self.status = Status::Opening;
        let open = Method::ChannelOpen(amqp_codec::methods::ChannelOpen::default());
        self.enqueue(
            Rpc {
                method: open,
                reply: Some(reply),
            },
            out,
            frame_max,
        );
    }

    /// Marks the channel closed and fails everything waiting on it.
    pub(crate) fn close_with(&mut self, err: Error) {
        self.fail_requests(&err);
        self.fail_streams(&err);
        self.status = Status::Closed(err);
    }

    /// Fails every queued request, the one on the wire included.
    pub(super) fn fail_requests(&mut self, err: &Error) {
        for rpc in self.rpcs.drain(..) {
            if let Some(tx) = rpc.reply {
                let _ = tx.send(Err(err.clone()));
            }
        }
        self.in_flight = false;
    }

    /// Fails outstanding confirms and ends every consumer with `err`.
    pub(super) fn fail_streams(&mut self, err: &Error) {
        if let Some(confirms) = &mut self.confirms {
            confirms.fail_all(err);
        }
        for slot in self.consumers.values_mut() {
            slot.end(Some(err.clone()));
        }
        self.detached.clear();
    }
}
