//! What the channels' methods do (declare, bind, consume, publish, get, ack, confirm) and the
//! delivery pump that streams queued messages to consumers within their prefetch.

use amqp_codec::methods::{
    BasicCancelOk, BasicConsumeOk, BasicDeliver, BasicGetEmpty, BasicGetOk, BasicQosOk,
    BasicRecoverOk, BasicReturn, ChannelCloseOk, ChannelFlowOk, ConfirmSelectOk, ExchangeBindOk,
    ExchangeDeclareOk, ExchangeDeleteOk, ExchangeUnbindOk, QueueBindOk, QueueDeclareOk,
    QueueDeleteOk, QueuePurgeOk, QueueUnbindOk,
};
use amqp_codec::{BasicProperties, Method, ReplyCode, ShortStr};
use bytes::{Buf, Bytes};

use super::{Conn, ConnError, Consumer, Message, OUT_HIGH_WATER, Unacked, bump};

impl Conn {
    /// Handles a method (without content) on an open channel.
    pub(super) fn on_channel_method(&mut self, id: u16, method: Method) -> Result<(), ConnError> {
        let reply = match &method {
            Method::ChannelClose(_) => {
                self.drop_channel_state(id);
                self.channels.remove(&id);
                Some(Method::ChannelCloseOk(ChannelCloseOk {}))
            }
            Method::ChannelCloseOk(_) => None,
            Method::ChannelFlow(flow) => Some(Method::ChannelFlowOk(ChannelFlowOk {
                active: flow.active,
            })),
            Method::ChannelFlowOk(_) => None,
            Method::ExchangeDeclare(d) => {
                (!d.nowait).then_some(Method::ExchangeDeclareOk(ExchangeDeclareOk {}))
            }
            Method::ExchangeDelete(d) => {
                let mut state = self.broker.lock();
                state.bindings.retain(|(ex, _), _| *ex != d.exchange);
                (!d.nowait).then_some(Method::ExchangeDeleteOk(ExchangeDeleteOk {}))
            }
            Method::ExchangeBind(d) => {
                (!d.nowait).then_some(Method::ExchangeBindOk(ExchangeBindOk {}))
            }
            Method::ExchangeUnbind(d) => {
                (!d.nowait).then_some(Method::ExchangeUnbindOk(ExchangeUnbindOk {}))
            }
            Method::QueueDeclare(d) => {
                let name = if d.queue.is_empty() {
                    self.fresh_name("amq.gen-")
                } else {
                    d.queue.clone()
                };
                let mut state = self.broker.lock();
                let found = state.queues.contains_key(&name);
                if d.passive && !found {
                    drop(state);
                    self.close_channel(id, ReplyCode::NOT_FOUND, "no queue", &method);
                    return Ok(());
                }
                let q = state.queues.entry(name.clone()).or_default();
                let ok = QueueDeclareOk {
                    queue: name,
                    message_count: u32::try_from(q.messages.len()).unwrap_or(u32::MAX),
                    consumer_count: q.consumers,
                };
                (!d.nowait).then_some(Method::QueueDeclareOk(ok))
            }
            Method::QueueBind(d) => {
                let mut state = self.broker.lock();
                if !state.queues.contains_key(&d.queue) {
                    drop(state);
                    self.close_channel(id, ReplyCode::NOT_FOUND, "no queue", &method);
                    return Ok(());
                }
                let key = (d.exchange.clone(), d.routing_key.clone());
                let queues = state.bindings.entry(key).or_default();
                if !queues.contains(&d.queue) {
                    queues.push(d.queue.clone());
                }
                (!d.nowait).then_some(Method::QueueBindOk(QueueBindOk {}))
            }
            Method::QueueUnbind(d) => {
                let mut state = self.broker.lock();
                let key = (d.exchange.clone(), d.routing_key.clone());
                if let Some(queues) = state.bindings.get_mut(&key) {
                    queues.retain(|q| *q != d.queue);
                }
                Some(Method::QueueUnbindOk(QueueUnbindOk {}))
            }
            Method::QueuePurge(d) => {
                let mut state = self.broker.lock();
                let count = state
                    .queues
                    .get_mut(&d.queue)
                    .map_or(0, |q| std::mem::take(&mut q.messages).len());
                (!d.nowait).then_some(Method::QueuePurgeOk(QueuePurgeOk {
                    message_count: u32::try_from(count).unwrap_or(u32::MAX),
                }))
            }
            Method::QueueDelete(d) => {
                let mut state = self.broker.lock();
                let count = state
                    .queues
                    .remove(&d.queue)
                    .map_or(0, |q| q.messages.len());
                for queues in state.bindings.values_mut() {
                    queues.retain(|q| *q != d.queue);
                }
                drop(state);
                for chan in self.channels.values_mut() {
                    chan.consumers.retain(|c| c.queue != d.queue);
                }
                (!d.nowait).then_some(Method::QueueDeleteOk(QueueDeleteOk {
                    message_count: u32::try_from(count).unwrap_or(u32::MAX),
                }))
            }
            Method::BasicQos(q) => {
                if let Some(chan) = self.channels.get_mut(&id) {
                    chan.prefetch = q.prefetch_count;
                }
                Some(Method::BasicQosOk(BasicQosOk {}))
            }
            Method::BasicConsume(c) => {
                let tag = if c.consumer_tag.is_empty() {
                    self.fresh_name("amq.ctag-")
                } else {
                    c.consumer_tag.clone()
                };
                let mut state = self.broker.lock();
                let Some(q) = state.queues.get_mut(&c.queue) else {
                    drop(state);
                    self.close_channel(id, ReplyCode::NOT_FOUND, "no queue", &method);
                    return Ok(());
                };
                q.consumers += 1;
                q.listeners.push((self.id, self.notify.clone()));
                drop(state);
                if let Some(chan) = self.channels.get_mut(&id) {
                    chan.consumers.push(Consumer {
                        tag: tag.clone(),
                        queue: c.queue.clone(),
                        no_ack: c.no_ack,
                    });
                }
                (!c.nowait).then_some(Method::BasicConsumeOk(BasicConsumeOk { consumer_tag: tag }))
            }
            Method::BasicCancel(c) => {
                let removed = self.channels.get_mut(&id).and_then(|chan| {
                    let i = chan
                        .consumers
                        .iter()
                        .position(|x| x.consumer_tag_is(&c.consumer_tag))?;
                    Some(chan.consumers.remove(i))
                });
                if let Some(consumer) = removed {
                    let mut state = self.broker.lock();
                    if let Some(q) = state.queues.get_mut(&consumer.queue) {
                        q.consumers = q.consumers.saturating_sub(1);
                        if let Some(i) = q.listeners.iter().position(|(c, _)| *c == self.id) {
                            q.listeners.swap_remove(i);
                        }
                    }
                }
                (!c.nowait).then_some(Method::BasicCancelOk(BasicCancelOk {
                    consumer_tag: c.consumer_tag.clone(),
                }))
            }
            Method::BasicCancelOk(_) => None,
            Method::BasicGet(g) => {
                let mut state = self.broker.lock();
                let Some(q) = state.queues.get_mut(&g.queue) else {
                    drop(state);
                    self.close_channel(id, ReplyCode::NOT_FOUND, "no queue", &method);
                    return Ok(());
                };
                let Some(message) = q.messages.pop_front() else {
                    drop(state);
                    self.send(id, &Method::BasicGetEmpty(BasicGetEmpty::default()))?;
                    return Ok(());
                };
                let remaining = u32::try_from(q.messages.len()).unwrap_or(u32::MAX);
                drop(state);
                let chan = self.channels.get_mut(&id).ok_or("channel vanished")?;
                chan.last_tag += 1;
                let tag = chan.last_tag;
                let get_ok = Method::BasicGetOk(BasicGetOk {
                    delivery_tag: tag,
                    redelivered: message.redelivered,
                    exchange: message.exchange.clone(),
                    routing_key: message.routing_key.clone(),
                    message_count: remaining,
                });
                self.out.push_content(
                    id,
                    &get_ok,
                    &message.properties,
                    message.body.clone(),
                    self.frame_max,
                )?;
                if !g.no_ack {
                    chan.unacked.push_back(Unacked {
                        tag,
                        queue: g.queue.clone(),
                        message,
                        settled: false,
                    });
                }
                bump(&self.broker.stats.deliveries, 1);
                None
            }
            Method::BasicAck(a) => {
                let chan = self.channels.get_mut(&id).ok_or("channel vanished")?;
                let (settled, known) = chan.settle(a.delivery_tag, a.multiple);
                bump(&self.broker.stats.ack_frames, 1);
                bump(&self.broker.stats.acked, settled.len() as u64);
                if !known {
                    self.close_channel(
                        id,
                        ReplyCode::PRECONDITION_FAILED,
                        "unknown delivery tag",
                        &method,
                    );
                }
                None
            }
            Method::BasicNack(n) => {
                self.on_reject(id, n.delivery_tag, n.multiple, n.requeue, &method);
                None
            }
            Method::BasicReject(r) => {
                self.on_reject(id, r.delivery_tag, false, r.requeue, &method);
                None
            }
            Method::BasicRecover(_) | Method::BasicRecoverAsync(_) => {
                let chan = self.channels.get_mut(&id).ok_or("channel vanished")?;
                let requeue = chan.take_unacked();
                let mut state = self.broker.lock();
                for (queue, mut message) in requeue.into_iter().rev() {
                    message.redelivered = true;
                    state.enqueue(&queue, message, true);
                }
                matches!(method, Method::BasicRecover(_))
                    .then_some(Method::BasicRecoverOk(BasicRecoverOk {}))
            }
            Method::ConfirmSelect(c) => {
                if let Some(chan) = self.channels.get_mut(&id) {
                    chan.confirm = true;
                }
                (!c.nowait).then_some(Method::ConfirmSelectOk(ConfirmSelectOk {}))
            }
            _ => {
                self.close_connection(ReplyCode::NOT_IMPLEMENTED, "not implemented", Some(&method));
                None
            }
        };
        if let Some(reply) = reply {
            self.send(id, &reply)?;
        }
        Ok(())
    }

    /// basic.nack or basic.reject.
    pub(super) fn on_reject(
        &mut self,
        id: u16,
        tag: u64,
        multiple: bool,
        requeue: bool,
        method: &Method,
    ) {
        let Some(chan) = self.channels.get_mut(&id) else {
            return;
        };
        let (settled, known) = chan.settle(tag, multiple);
        bump(&self.broker.stats.nack_frames, 1);
        if requeue {
            let mut state = self.broker.lock();
            for (queue, mut message) in settled.into_iter().rev() {
                message.redelivered = true;
                state.enqueue(&queue, message, true);
            }
        }
        if !known {
            self.close_channel(
                id,
                ReplyCode::PRECONDITION_FAILED,
                "unknown delivery tag",
                method,
            );
        }
    }

    /// A published message: route it, return it if mandatory and unroutable, count it for the
    /// channel's next confirm.
    pub(super) fn on_publish(
        &mut self,
        id: u16,
        method: Method,
        properties: BasicProperties,
        body: Bytes,
    ) -> Result<(), ConnError> {
        let Method::BasicPublish(publish) = method else {
            self.close_connection(
                ReplyCode::COMMAND_INVALID,
                "content from a client must be a publish",
                None,
            );
            return Ok(());
        };
        bump(&self.broker.stats.publishes, 1);
        let mut state = self.broker.lock();
        let queues = state.route(&publish.exchange, &publish.routing_key);
        let routed = !queues.is_empty();
        let message = Message {
            exchange: publish.exchange.clone(),
            routing_key: publish.routing_key.clone(),
            properties,
            body,
            redelivered: false,
        };
        if let [only] = queues.as_slice() {
            state.enqueue(only, message.clone(), false);
        } else {
            for queue in &queues {
                state.enqueue(queue, message.clone(), false);
            }
        }
        drop(state);
        if !routed && publish.mandatory {
            let ret = Method::BasicReturn(BasicReturn {
                reply_code: ReplyCode::NO_ROUTE.0,
                reply_text: ShortStr::from_static("NO_ROUTE"),
                exchange: message.exchange,
                routing_key: message.routing_key,
            });
            self.out
                .push_content(id, &ret, &message.properties, message.body, self.frame_max)?;
        }
        if let Some(chan) = self.channels.get_mut(&id)
            && chan.confirm
        {
            chan.published += 1;
        }
        Ok(())
    }

    /// Streams ready messages to this connection's consumers, as far as their channels'
    /// prefetch and the output high-water mark allow.
    pub(super) fn pump(&mut self) {
        if self.out.remaining() >= OUT_HIGH_WATER {
            return;
        }
        let broker = self.broker.clone();
        let mut state = broker.lock();
        let mut delivered = 0;
        for (&id, chan) in &mut self.channels {
            if chan.consumers.is_empty() || chan.closing {
                continue;
            }
            let n = chan.consumers.len();
            let mut idle = 0;
            // Round robin over the channel's consumers, one message each per turn.
            while idle < n && chan.credit() > 0 && self.out.remaining() < OUT_HIGH_WATER {
                let i = chan.turn % n;
                chan.turn = chan.turn.wrapping_add(1);
                let consumer = &chan.consumers[i];
                let Some(message) = state
                    .queues
                    .get_mut(&consumer.queue)
                    .and_then(|q| q.messages.pop_front())
                else {
                    idle += 1;
                    continue;
                };
                idle = 0;
                chan.last_tag += 1;
                let deliver = Method::BasicDeliver(BasicDeliver {
                    consumer_tag: consumer.tag.clone(),
                    delivery_tag: chan.last_tag,
                    redelivered: message.redelivered,
                    exchange: message.exchange.clone(),
                    routing_key: message.routing_key.clone(),
                });
                if self
                    .out
                    .push_content(
                        id,
                        &deliver,
                        &message.properties,
                        message.body.clone(),
                        self.frame_max,
                    )
                    .is_err()
                {
                    continue;
                }
                delivered += 1;
                if !consumer.no_ack {
                    let queue = consumer.queue.clone();
                    chan.unacked.push_back(Unacked {
                        tag: chan.last_tag,
                        queue,
                        message,
                        settled: false,
                    });
                }
            }
        }
        drop(state);
        bump(&self.broker.stats.deliveries, delivered);
    }
}
