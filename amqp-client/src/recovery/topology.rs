//! What automatic recovery re-creates: the exchanges, queues and bindings the application
//! declared, and each channel's qos, confirm mode and consumers.
//!
//! Recorded from requests the broker accepted (the request with its reply, so a server-named
//! queue is known by the name the broker gave it), forgotten when the application deletes,
//! unbinds or cancels; at a loss, only what the core still has (suspended channels, live
//! consumers) is kept. Pure data: no IO, tested without a broker.

use std::collections::BTreeMap;

use amqp_codec::methods::{
    BasicConsume, BasicQos, ExchangeBind, ExchangeDeclare, QueueBind, QueueDeclare,
};
use amqp_codec::{Method, ShortStr};

/// A queue the application declared.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RecordedQueue {
    /// The name it has now (the broker's choice for a server-named queue).
    pub(crate) name: ShortStr,
    /// The declaration as sent; its name is empty for a server-named queue, which is then
    /// declared again with an empty name and renamed.
    pub(crate) declare: QueueDeclare,
}

impl RecordedQueue {
    /// True if the broker chose the name.
    pub(crate) fn server_named(&self) -> bool {
        self.declare.queue.is_empty()
    }
}

/// One channel's settings.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ChannelRecord {
    /// basic.qos with `global` false (per consumer) and true (per channel), the last of each.
    pub(crate) qos: [Option<BasicQos>; 2],
    /// confirm.select was accepted.
    pub(crate) confirm: bool,
    /// Consumers by the order they started, each with the tag the broker confirmed.
    pub(crate) consumers: Vec<BasicConsume>,
}

/// Everything recovery re-declares, in the order it does so.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Topology {
    /// Exchanges, by name (a re-declaration replaces the earlier one).
    pub(crate) exchanges: Vec<ExchangeDeclare>,
    /// Queues, by current name.
    pub(crate) queues: Vec<RecordedQueue>,
    /// Exchange-to-exchange bindings.
    pub(crate) exchange_bindings: Vec<ExchangeBind>,
    /// Queue bindings.
    pub(crate) queue_bindings: Vec<QueueBind>,
    /// Channel settings by channel id.
    pub(crate) channels: BTreeMap<u16, ChannelRecord>,
}

impl Topology {
    /// True for the requests whose success changes the topology (so the caller keeps a copy
    /// of the request until the reply comes).
    pub(crate) fn records(method: &Method) -> bool {
        match method {
            Method::ExchangeDeclare(m) => !m.passive,
            Method::QueueDeclare(m) => !m.passive,
            Method::ExchangeDelete(_)
            | Method::ExchangeBind(_)
            | Method::ExchangeUnbind(_)
            | Method::QueueBind(_)
            | Method::QueueUnbind(_)
            | Method::QueueDelete(_)
            | Method::BasicQos(_)
            | Method::BasicConsume(_)
            | Method::BasicCancel(_)
            | Method::ConfirmSelect(_) => true,
            _ => false,
        }
    }

    /// The broker accepted `request` on `channel`; `reply` is its answer (`None` for a no-wait
    /// request).
    pub(crate) fn record(&mut self, channel: u16, request: &Method, reply: Option<&Method>) {
        match request {
            Method::ExchangeDeclare(m) if !m.passive => {
                let mut m = m.clone();
                m.nowait = false;
                match self.exchanges.iter_mut().find(|e| e.exchange == m.exchange) {
                    Some(existing) => *existing = m,
                    None => self.exchanges.push(m),
                }
            }
            Method::ExchangeDelete(m) => self.forget_exchange(&m.exchange),
            Method::ExchangeBind(m) => {
                let mut m = m.clone();
                m.nowait = false;
                if !self.exchange_bindings.contains(&m) {
                    self.exchange_bindings.push(m);
                }
            }
            Method::ExchangeUnbind(m) => self.exchange_bindings.retain(|b| {
                (&b.destination, &b.source, &b.routing_key, &b.arguments)
                    != (&m.destination, &m.source, &m.routing_key, &m.arguments)
            }),
            Method::QueueDeclare(m) if !m.passive => {
                let name = match reply {
                    Some(Method::QueueDeclareOk(ok)) => ok.queue.clone(),
                    _ => m.queue.clone(),
                };
                let mut declare = m.clone();
                declare.nowait = false;
                let queue = RecordedQueue { name, declare };
                match self.queues.iter_mut().find(|q| q.name == queue.name) {
                    Some(existing) => *existing = queue,
                    None => self.queues.push(queue),
                }
            }
            Method::QueueDelete(m) => self.forget_queue(&m.queue),
            Method::QueueBind(m) => {
                let mut m = m.clone();
                m.nowait = false;
                if !self.queue_bindings.contains(&m) {
                    self.queue_bindings.push(m);
                }
            }
            Method::QueueUnbind(m) => self.queue_bindings.retain(|b| {
                (&b.queue, &b.exchange, &b.routing_key, &b.arguments)
                    != (&m.queue, &m.exchange, &m.routing_key, &m.arguments)
            }),
            Method::BasicQos(m) => {
                self.channels.entry(channel).or_default().qos[usize::from(m.global)] =
                    Some(m.clone());
            }
            Method::ConfirmSelect(_) => self.channels.entry(channel).or_default().confirm = true,
            Method::BasicConsume(m) => {
                let mut m = m.clone();
                if let Some(Method::BasicConsumeOk(ok)) = reply {
                    m.consumer_tag = ok.consumer_tag.clone();
                }
                m.nowait = false;
                let record = self.channels.entry(channel).or_default();
                record
                    .consumers
                    .retain(|c| c.consumer_tag != m.consumer_tag);
                record.consumers.push(m);
            }
            Method::BasicCancel(m) => self.forget_consumer(channel, &m.consumer_tag),
            _ => {}
        }
    }

    /// A consumer ended (cancelled by the application).
    fn forget_consumer(&mut self, channel: u16, tag: &ShortStr) {
        if let Some(record) = self.channels.get_mut(&channel) {
            record.consumers.retain(|c| &c.consumer_tag != tag);
        }
    }

    /// A channel closed, or a new opening of its id started: nothing of it is recovered.
    pub(crate) fn forget_channel(&mut self, channel: u16) {
        self.channels.remove(&channel);
    }

    /// The application opened channel `id`: it is recovered from now on, with nothing of an
    /// earlier opening of the same id.
    pub(crate) fn record_channel(&mut self, id: u16) {
        self.channels.insert(id, ChannelRecord::default());
    }

    /// The connection was lost: only the channels the core suspended come back, each with
    /// the consumers it still has (closed channels, ended consumers and channels that were
    /// not the application's are forgotten).
    pub(crate) fn keep_only(&mut self, suspended: &[(u16, u64, Vec<&[u8]>)]) {
        self.channels.retain(
            |id, record| match suspended.iter().find(|(s, _, _)| s == id) {
                Some((_, _, tags)) => {
                    record
                        .consumers
                        .retain(|c| tags.contains(&c.consumer_tag.as_bytes()));
                    true
                }
                None => false,
            },
        );
    }

    /// The exchange was deleted, and with it the bindings it was part of.
    fn forget_exchange(&mut self, name: &ShortStr) {
        self.exchanges.retain(|e| &e.exchange != name);
        self.exchange_bindings
            .retain(|b| &b.source != name && &b.destination != name);
        self.queue_bindings.retain(|b| &b.exchange != name);
    }

    /// The queue was deleted, and with it its bindings and consumers.
    fn forget_queue(&mut self, name: &ShortStr) {
        self.queues.retain(|q| &q.name != name);
        self.queue_bindings.retain(|b| &b.queue != name);
        for record in self.channels.values_mut() {
            record.consumers.retain(|c| &c.queue != name);
        }
    }

    /// A server-named queue came back under a new name: bindings and consumers follow it.
    pub(crate) fn rename_queue(&mut self, old: &ShortStr, new: &ShortStr) {
        for q in self.queues.iter_mut().filter(|q| &q.name == old) {
            q.name = new.clone();
        }
        for b in self.queue_bindings.iter_mut().filter(|b| &b.queue == old) {
            b.queue = new.clone();
        }
        for record in self.channels.values_mut() {
            for c in record.consumers.iter_mut().filter(|c| &c.queue == old) {
                c.queue = new.clone();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test data is built from literals that fit

    use amqp_codec::methods::{
        BasicCancel, BasicConsumeOk, ExchangeDelete, QueueDeclareOk, QueueDelete,
    };

    use super::*;

    fn s(text: &str) -> ShortStr {
        ShortStr::try_from(text).unwrap()
    }

    fn declare(name: &str) -> Method {
        Method::QueueDeclare(QueueDeclare {
            queue: s(name),
            ..QueueDeclare::default()
        })
    }

    fn bind(queue: &str, exchange: &str) -> Method {
        Method::QueueBind(QueueBind {
            queue: s(queue),
            exchange: s(exchange),
            routing_key: s("rk"),
            ..QueueBind::default()
        })
    }

    fn consume(queue: &str, tag: &str) -> Method {
        Method::BasicConsume(BasicConsume {
            queue: s(queue),
            consumer_tag: s(tag),
            ..BasicConsume::default()
        })
    }

    #[test]
    fn server_named_queue_is_recorded_under_the_broker_name_and_renamed_with_followers() {
        let mut t = Topology::default();
        let ok = Method::QueueDeclareOk(QueueDeclareOk {
            queue: s("amq.gen-1"),
            ..QueueDeclareOk::default()
        });
        t.record(1, &declare(""), Some(&ok));
        t.record(1, &bind("amq.gen-1", "logs"), None);
        let tag_ok = Method::BasicConsumeOk(BasicConsumeOk {
            consumer_tag: s("amq.ctag-9"),
        });
        t.record(1, &consume("amq.gen-1", ""), Some(&tag_ok));
        assert!(t.queues[0].server_named());
        assert_eq!(t.queues[0].name, s("amq.gen-1"));
        assert_eq!(t.channels[&1].consumers[0].consumer_tag, s("amq.ctag-9"));

        t.rename_queue(&s("amq.gen-1"), &s("amq.gen-2"));
        assert_eq!(t.queues[0].name, s("amq.gen-2"));
        assert_eq!(t.queue_bindings[0].queue, s("amq.gen-2"));
        assert_eq!(t.channels[&1].consumers[0].queue, s("amq.gen-2"));
    }

    #[test]
    fn deletes_unbinds_and_cancels_are_not_recovered() {
        let mut t = Topology::default();
        t.record(1, &declare("q"), None);
        t.record(1, &bind("q", "x"), None);
        t.record(1, &bind("q", "x"), None);
        assert_eq!(
            t.queue_bindings.len(),
            1,
            "a repeated bind is recorded once"
        );
        t.record(2, &consume("q", "c1"), None);
        t.record(2, &consume("q", "c2"), None);
        t.record(
            2,
            &Method::BasicCancel(BasicCancel {
                consumer_tag: s("c1"),
                nowait: false,
            }),
            None,
        );
        assert_eq!(t.channels[&2].consumers.len(), 1);
        t.record(
            1,
            &Method::QueueDelete(QueueDelete {
                queue: s("q"),
                ..QueueDelete::default()
            }),
            None,
        );
        assert!(t.queues.is_empty());
        assert!(t.queue_bindings.is_empty());
        assert!(t.channels[&2].consumers.is_empty());
    }

    #[test]
    fn deleting_an_exchange_drops_its_bindings_and_passive_declares_are_ignored() {
        let mut t = Topology::default();
        let x = Method::ExchangeDeclare(ExchangeDeclare {
            exchange: s("x"),
            ..ExchangeDeclare::default()
        });
        t.record(1, &x, None);
        t.record(1, &x, None);
        assert_eq!(t.exchanges.len(), 1);
        t.record(1, &bind("q", "x"), None);
        let passive = Method::QueueDeclare(QueueDeclare {
            queue: s("p"),
            passive: true,
            ..QueueDeclare::default()
        });
        assert!(!Topology::records(&passive));
        t.record(1, &passive, None);
        assert!(t.queues.is_empty());
        t.record(
            1,
            &Method::ExchangeDelete(ExchangeDelete {
                exchange: s("x"),
                ..ExchangeDelete::default()
            }),
            None,
        );
        assert!(t.exchanges.is_empty() && t.queue_bindings.is_empty());
    }

    #[test]
    fn qos_keeps_the_last_of_each_scope_and_closing_a_channel_forgets_it() {
        let mut t = Topology::default();
        for (count, global) in [(10, false), (20, false), (5, true)] {
            let qos = Method::BasicQos(BasicQos {
                prefetch_count: count,
                global,
                ..BasicQos::default()
            });
            t.record(3, &qos, None);
        }
        let record = &t.channels[&3];
        assert_eq!(record.qos[0].as_ref().map(|q| q.prefetch_count), Some(20));
        assert_eq!(record.qos[1].as_ref().map(|q| q.prefetch_count), Some(5));
        t.forget_channel(3);
        assert!(t.channels.is_empty());
    }
}
