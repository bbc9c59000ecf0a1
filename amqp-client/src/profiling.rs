//! Deterministic loops over the sans-IO connection core, for counting instructions per message
//! with callgrind (`benches/examples/core_loop.rs`, `benches/callgrind-core`). Not part of the
//! public API: hidden from the docs and free to change.
//!
//! The live benchmark (`benches/examples/clients`) measures the whole client against a broker,
//! where the kernel and the broker's timing move the numbers from run to run. These loops take
//! the socket, the runtime and the broker out: the broker's bytes are encoded up front, and what
//! is counted is the core's own work per message, the same from one run to the next. Locking,
//! task wake-ups and system calls are not in them.

use std::task::Poll;

use amqp_codec::methods::{
    BasicAck, BasicConsume, BasicConsumeOk, BasicDeliver, BasicPublish, BasicQos, BasicQosOk,
    ConfirmSelect, ConfirmSelectOk,
};
use amqp_codec::{BasicProperties, Method, Outbound, ShortStr};
use bytes::{Buf, Bytes, BytesMut};

use crate::config::ConnectionConfig;
use crate::proto::harness::Harness;
use crate::proto::{Publish, WaiterId};

/// The one task the loops poll under.
const APP: WaiterId = WaiterId(0);

/// A core after the handshake, with channel 1 open.
struct OpenCore {
    /// The core, driven without a runtime.
    h: Harness,
    id: u16,
    epoch: u64,
    /// Where the core's output goes, drained as a driver would.
    sink: Outbound,
}

impl OpenCore {
    fn new() -> Self {
        let mut h = Harness::new(ConnectionConfig::default());
        h.open(0);
        let (id, epoch) = h
            .try_channel()
            .unwrap_or_else(|| panic!("a fresh core refused to open a channel"));
        let mut this = Self {
            h,
            id,
            epoch,
            sink: Outbound::new(),
        };
        this.drain();
        this
    }

    /// Sends `request` and feeds the broker's `reply`.
    fn call(&mut self, request: Method, reply: Method) {
        self.h.call((self.id, self.epoch), request, reply);
        self.drain();
    }

    /// Starts a manual-ack consumer `tag` on the current channel (queue `profiling`).
    fn consume(&mut self, tag: &ShortStr) {
        self.call(
            Method::BasicConsume(BasicConsume {
                queue: ShortStr::from_static("profiling"),
                consumer_tag: tag.clone(),
                ..Default::default()
            }),
            Method::BasicConsumeOk(BasicConsumeOk {
                consumer_tag: tag.clone(),
            }),
        );
    }

    /// Takes and discards what the core queued, as the driver would write it, and acts on its
    /// events.
    fn drain(&mut self) {
        while self.h.core.take_output(&mut self.sink, self.h.now) {
            self.sink.advance(self.sink.remaining());
        }
        self.h.drain();
        self.h.woken.clear();
    }
}

/// A consumer with manual acks: batches of deliveries in, each one taken as the `Consumer`
/// stream takes it and acked singly, the acks written out.
pub struct ConsumeLoop {
    open: OpenCore,
    tag: ShortStr,
    /// The next delivery tag the "broker" gives.
    next_tag: u64,
    /// The body every delivery carries.
    body: Bytes,
    /// Deliveries taken ahead, as `Consumer` takes them: a run per lookup.
    ahead: std::collections::VecDeque<crate::proto::RawDelivery>,
}

impl ConsumeLoop {
    /// A core with a manual-ack consumer whose deliveries carry `body_len`-byte bodies.
    pub fn new(body_len: usize) -> Self {
        let mut open = OpenCore::new();
        let tag = ShortStr::from_static("amq.ctag-profiling-consumer-000001");
        open.consume(&tag);
        Self {
            open,
            tag,
            next_tag: 1,
            body: Bytes::from(vec![b'x'; body_len]),
            ahead: std::collections::VecDeque::new(),
        }
    }

    /// The broker's bytes for the next `n` deliveries (persistent, routed by the default
    /// exchange), tags following the previous batch's.
    pub fn batch(&mut self, n: usize) -> BytesMut {
        let props = BasicProperties::persistent();
        let mut out = Outbound::new();
        for _ in 0..n {
            let deliver = Method::BasicDeliver(BasicDeliver {
                consumer_tag: self.tag.clone(),
                delivery_tag: self.next_tag,
                redelivered: false,
                exchange: ShortStr::default(),
                routing_key: ShortStr::from_static("profiling-queue"),
            });
            self.next_tag += 1;
            let pushed = out.push_content(self.open.id, &deliver, &props, self.body.clone(), 0);
            debug_assert!(pushed.is_ok());
        }
        out.copy_to_bytes(out.remaining()).into()
    }

    /// Feeds `batch`, takes every delivery as `Consumer` does (a run of them per lookup) and
    /// acks each singly, then writes the acks out. Returns the deliveries handled.
    pub fn run(&mut self, batch: &mut BytesMut) -> usize {
        let open = &mut self.open;
        let ahead = &mut self.ahead;
        open.h.core.handle_input(batch, open.h.now);
        open.h.drain();
        let mut handled = 0;
        loop {
            let delivery = match ahead.pop_front() {
                Some(delivery) => delivery,
                None => match open.h.core.poll_deliveries(
                    open.id,
                    open.epoch,
                    &self.tag,
                    APP,
                    ahead,
                    crate::consumer::TAKE_AHEAD,
                ) {
                    (Poll::Ready(Some(Ok(delivery))), _) => delivery,
                    _ => break,
                },
            };
            let tag = delivery.delivery_tag();
            let ack = Method::BasicAck(BasicAck {
                delivery_tag: tag,
                multiple: false,
            });
            let settled = open
                .h
                .core
                .settle(open.id, open.epoch, delivery.generation, tag, &ack);
            debug_assert!(settled.is_ok());
            handled += 1;
        }
        open.drain();
        handled
    }
}

/// A publisher in confirm mode: a batch of persistent publishes, then the broker's multiple
/// ack for all of them, and every confirm collected.
pub struct PublishLoop {
    open: OpenCore,
    /// Sequence number of the next publish.
    next_seq: u64,
    body: Bytes,
    routing_key: ShortStr,
    props: BasicProperties,
}

impl PublishLoop {
    /// A core with a channel in confirm mode publishing `body_len`-byte bodies.
    pub fn new(body_len: usize) -> Self {
        let mut open = OpenCore::new();
        open.call(
            Method::ConfirmSelect(ConfirmSelect { nowait: false }),
            Method::ConfirmSelectOk(ConfirmSelectOk {}),
        );
        Self {
            open,
            next_seq: 1,
            body: Bytes::from(vec![b'x'; body_len]),
            routing_key: ShortStr::from_static("profiling-queue"),
            props: BasicProperties::persistent(),
        }
    }

    /// The broker's bytes confirming the next `n` publishes with one multiple ack, as RabbitMQ
    /// does for a burst.
    pub fn confirms(&self, n: usize) -> BytesMut {
        let mut out = Outbound::new();
        out.push_ack(self.open.id, self.next_seq + n as u64 - 1, true);
        out.copy_to_bytes(out.remaining()).into()
    }

    /// Publishes `n` messages, writes them out, feeds `confirms` (from
    /// [`confirms`](Self::confirms)`(n)`) and collects every confirm. Returns the publishes
    /// confirmed.
    pub fn run(&mut self, n: usize, confirms: &mut BytesMut) -> usize {
        let open = &mut self.open;
        let method = Method::BasicPublish(BasicPublish {
            ticket: 0,
            exchange: ShortStr::default(),
            routing_key: self.routing_key.clone(),
            mandatory: false,
            immediate: false,
        });
        let first = self.next_seq;
        for _ in 0..n {
            let body = self.body.clone();
            let queued = open.h.core.publish(
                open.id,
                open.epoch,
                &crate::proto::harness::args_of(&method),
                &self.props,
                body,
            );
            debug_assert!(matches!(queued, Ok(Publish::Queued { .. })));
            self.next_seq += 1;
        }
        open.drain();
        open.h.core.handle_input(confirms, open.h.now);
        open.h.drain();
        let mut confirmed = 0;
        for seq in first..self.next_seq {
            if let Poll::Ready(Ok(c)) = open.h.core.poll_confirm(open.id, open.epoch, 0, seq, APP) {
                confirmed += usize::from(c.is_acked());
            }
        }
        confirmed
    }
}

/// One of [`ManyLoop`]'s channels: its id and epoch, the next delivery tag the "broker"
/// gives on it, and its publishes' sequence numbers.
struct ManyChannel {
    id: u16,
    epoch: u64,
    next_tag: u64,
    /// Sequence number of the next publish.
    next_seq: u64,
    /// Sequence number of the oldest publish not confirmed yet.
    unconfirmed: u64,
}

impl ManyChannel {
    fn new((id, epoch): (u16, u64)) -> Self {
        Self {
            id,
            epoch,
            next_tag: 1,
            next_seq: 1,
            unconfirmed: 1,
        }
    }
}

/// Many channels on one connection, each consuming (manual acks, prefetch 100) and publishing
/// in confirm mode at once, as the scale benchmark (`benches/examples/scale/`) does. Each
/// batch of `n` deliveries goes round-robin over the channels from where the previous one
/// ended, so with many channels a read carries one message per channel; what the core spends
/// per message that grows with the channel count shows up here.
///
/// A batch is one read from the "broker": on each channel it reaches, the single acks
/// confirming that channel's publishes so far, then a delivery. The driver's read batching
/// asks the core's ack window after a read (`driver/batcher.rs`), which the loop does once
/// per batch too. Then, on each channel the batch reached, the confirms are collected and
/// each delivery is taken, acked singly and answered by one publish; the output is written.
pub struct ManyLoop {
    open: OpenCore,
    channels: Vec<ManyChannel>,
    /// The channel the next batch starts at.
    cursor: usize,
    tag: ShortStr,
    body: Bytes,
    routing_key: ShortStr,
    props: BasicProperties,
}

impl ManyLoop {
    /// `channels` channels, each with a manual-ack consumer under prefetch 100 and confirms
    /// on, carrying `body_len`-byte bodies.
    pub fn new(channels: usize, body_len: usize) -> Self {
        let mut open = OpenCore::new();
        let tag = ShortStr::from_static("amq.ctag-profiling-consumer-000001");
        let mut chans = vec![ManyChannel::new((open.id, open.epoch))];
        while chans.len() < channels {
            let opened = open.h.try_channel();
            let opened =
                opened.unwrap_or_else(|| panic!("the core refused channel {}", chans.len() + 1));
            chans.push(ManyChannel::new(opened));
        }
        open.drain();
        for c in &chans {
            (open.id, open.epoch) = (c.id, c.epoch);
            open.call(
                Method::BasicQos(BasicQos {
                    prefetch_count: 100,
                    ..Default::default()
                }),
                Method::BasicQosOk(BasicQosOk {}),
            );
            open.call(
                Method::ConfirmSelect(ConfirmSelect { nowait: false }),
                Method::ConfirmSelectOk(ConfirmSelectOk {}),
            );
            open.consume(&tag);
        }
        Self {
            open,
            channels: chans,
            cursor: 0,
            tag,
            body: Bytes::from(vec![b'x'; body_len]),
            routing_key: ShortStr::from_static("profiling-queue"),
            props: BasicProperties::persistent(),
        }
    }

    /// The channels (indexes into `channels`) a batch of `n` from the cursor reaches, each
    /// once.
    fn reached(&self, n: usize) -> impl Iterator<Item = usize> + use<> {
        let (start, len) = (self.cursor, self.channels.len());
        (0..n.min(len)).map(move |k| (start + k) % len)
    }

    /// The broker's bytes for the next batch of `n` deliveries (see the type's docs).
    pub fn batch(&mut self, n: usize) -> BytesMut {
        let mut out = Outbound::new();
        let len = self.channels.len();
        for k in 0..n {
            let c = &mut self.channels[(self.cursor + k) % len];
            if k < len {
                for seq in c.unconfirmed..c.next_seq {
                    out.push_ack(c.id, seq, false);
                }
            }
            let deliver = Method::BasicDeliver(BasicDeliver {
                consumer_tag: self.tag.clone(),
                delivery_tag: c.next_tag,
                redelivered: false,
                exchange: ShortStr::default(),
                routing_key: ShortStr::from_static("profiling-queue"),
            });
            c.next_tag += 1;
            let pushed = out.push_content(c.id, &deliver, &self.props, self.body.clone(), 0);
            debug_assert!(pushed.is_ok());
        }
        out.copy_to_bytes(out.remaining()).into()
    }

    /// Feeds `batch` (from [`batch`](Self::batch)`(n)`), asks the ack window as the driver
    /// does after a read, then on each channel reached collects the confirms and takes, acks
    /// and answers with a publish every delivery, and writes the output. Returns the
    /// deliveries handled (the publishes confirmed are checked in debug builds).
    pub fn run(&mut self, n: usize, batch: &mut BytesMut) -> usize {
        let reached = self.reached(n);
        let open = &mut self.open;
        open.h.core.handle_input(batch, open.h.now);
        std::hint::black_box(open.h.core.ack_window());
        open.h.drain();
        let method = Method::BasicPublish(BasicPublish {
            ticket: 0,
            exchange: ShortStr::default(),
            routing_key: self.routing_key.clone(),
            mandatory: false,
            immediate: false,
        });
        let args = crate::proto::harness::args_of(&method);
        let mut handled = 0;
        for i in reached {
            let c = &mut self.channels[i];
            for seq in c.unconfirmed..c.next_seq {
                let confirmed = open.h.core.poll_confirm(c.id, c.epoch, 0, seq, APP);
                debug_assert!(matches!(confirmed, Poll::Ready(Ok(conf)) if conf.is_acked()));
            }
            c.unconfirmed = c.next_seq;
            while let (Poll::Ready(Some(Ok(delivery))), _) =
                open.h.core.poll_delivery(c.id, c.epoch, &self.tag, APP)
            {
                let tag = delivery.delivery_tag();
                let ack = Method::BasicAck(BasicAck {
                    delivery_tag: tag,
                    multiple: false,
                });
                let settled = open
                    .h
                    .core
                    .settle(c.id, c.epoch, delivery.generation, tag, &ack);
                debug_assert!(settled.is_ok());
                let body = self.body.clone();
                let queued = open.h.core.publish(c.id, c.epoch, &args, &self.props, body);
                debug_assert!(matches!(queued, Ok(Publish::Queued { .. })));
                c.next_seq += 1;
                handled += 1;
            }
        }
        self.cursor = (self.cursor + n) % self.channels.len();
        open.drain();
        handled
    }
}
