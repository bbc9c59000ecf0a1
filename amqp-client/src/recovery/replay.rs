//! Re-creating the topology on a recovered connection, in the order the issue of record
//! asks: exchanges, queues (renaming server-named ones), exchange bindings, queue bindings,
//! then each channel of the application's with its qos, confirm mode and consumers.
//!
//! Declarations go through a channel of recovery's own, so one that the broker refuses (a
//! queue redeclared elsewhere with other arguments) closes none of the application's; the
//! refusal is reported as [`RecoveryEvent::TopologyFailed`] and recovery goes on.

use std::sync::{Arc, Weak};
use std::time::Duration;

use amqp_codec::{Method, ShortStr};

use super::topology::ChannelRecord;
use super::{RecoveryEvent, RecoveryPolicy, Topology};
use crate::channel::Channel;
use crate::connection::ConnectionInner;
use crate::error::{ConnectStep, Error};
use crate::proto::{Core, Reply, RequestId};
use crate::shared::Shared;

/// What recovery will re-create, as recorded so far.
fn topology(shared: &Shared) -> Topology {
    shared
        .lock()
        .recovery()
        .map(|r| r.topology.clone())
        .unwrap_or_default()
}

/// Re-creates the recorded topology. An error means the new connection failed too.
pub(crate) async fn replay(shared: &Arc<Shared>) -> Result<(), Error> {
    let recorded = topology(shared);
    let mut aux = Declarer::new(shared);
    aux.declare_exchanges(&recorded).await?;
    aux.declare_queues(&recorded).await?;
    // Bindings and consumers with the queues' new names.
    let recorded = topology(shared);
    aux.bind(&recorded).await?;
    aux.close().await?;
    aux.reopen_channels(&recorded).await
}

/// The steps of [`replay`], in its order.
impl Declarer<'_> {
    /// Declares the recorded exchanges; one the broker refuses is reported and skipped.
    async fn declare_exchanges(&mut self, topology: &Topology) -> Result<(), Error> {
        for exchange in &topology.exchanges {
            let what = format!("exchange.declare {}", exchange.exchange);
            self.declare(Method::ExchangeDeclare(exchange.clone()), what)
                .await?;
        }
        Ok(())
    }

    /// Declares the recorded queues; a server-named one gets a new name from the broker,
    /// which [`Declarer::renamed`] records. One the broker refuses is reported and skipped.
    async fn declare_queues(&mut self, topology: &Topology) -> Result<(), Error> {
        for queue in &topology.queues {
            let what = format!("queue.declare {}", queue.name);
            let reply = self
                .declare(Method::QueueDeclare(queue.declare.clone()), what)
                .await?;
            if let Some(Reply::Method(Method::QueueDeclareOk(ok))) = reply
                && queue.server_named()
                && ok.queue != queue.name
            {
                self.renamed(&queue.name, &ok.queue);
            }
        }
        Ok(())
    }

    /// A server-named queue came back as `new`: the recorded topology follows (so bindings
    /// and consumers are replayed onto it) and the application is told.
    fn renamed(&self, old: &ShortStr, new: &ShortStr) {
        tracing::info!(old = %old, new = %new, "server-named queue renamed by recovery");
        if let Some(r) = self.shared.lock().recovery() {
            r.topology.rename_queue(old, new);
        }
        self.shared.emit(RecoveryEvent::QueueRenamed {
            old: old.to_string(),
            new: new.to_string(),
        });
    }

    /// Re-creates the exchange-to-exchange bindings, then the queue bindings; one the broker
    /// refuses is reported and skipped.
    async fn bind(&mut self, topology: &Topology) -> Result<(), Error> {
        for binding in &topology.exchange_bindings {
            let what = format!(
                "exchange.bind {} -> {}",
                binding.source, binding.destination
            );
            self.declare(Method::ExchangeBind(binding.clone()), what)
                .await?;
        }
        for binding in &topology.queue_bindings {
            let what = format!("queue.bind {} -> {}", binding.exchange, binding.queue);
            self.declare(Method::QueueBind(binding.clone()), what)
                .await?;
        }
        Ok(())
    }

    /// Reopens each of the application's suspended channels, under its own id, and replays
    /// its settings. A channel the broker refuses to open is reported and skipped.
    async fn reopen_channels(&self, topology: &Topology) -> Result<(), Error> {
        let channels: Vec<(u16, u64)> = self
            .shared
            .lock()
            .suspended_channels()
            .into_iter()
            .map(|(id, epoch, _)| (id, epoch))
            .collect();
        for (id, epoch) in channels {
            let ((), reply) = self
                .ask(|core| core.reopen_channel(id, epoch).map(|r| ((), r)))
                .await?;
            if !self.settled(reply, format!("channel.open {id}"))? {
                continue;
            }
            if let Some(record) = topology.channels.get(&id) {
                self.replay_settings(id, epoch, record).await?;
            }
        }
        Ok(())
    }

    /// Replays one reopened channel's settings in the order they matter: qos, confirm mode,
    /// then its consumers. A refused step closes the channel: its handles see the error, and
    /// the steps after it are not sent.
    async fn replay_settings(
        &self,
        id: u16,
        epoch: u64,
        record: &ChannelRecord,
    ) -> Result<(), Error> {
        for method in settings(record) {
            let what = format!("{} on channel {id}", method.name());
            let ((), reply) = self
                .ask(|core| core.replay_request(id, epoch, method).map(|r| ((), r)))
                .await?;
            if !self.settled(reply, what)? {
                break;
            }
        }
        Ok(())
    }
}

/// A channel's recorded settings as the requests that re-create them: basic.qos (per
/// consumer, then per channel), confirm.select, then each basic.consume.
fn settings(record: &ChannelRecord) -> Vec<Method> {
    let mut steps: Vec<Method> = record
        .qos
        .iter()
        .flatten()
        .cloned()
        .map(Method::BasicQos)
        .collect();
    if record.confirm {
        steps.push(Method::ConfirmSelect(Default::default()));
    }
    steps.extend(record.consumers.iter().cloned().map(Method::BasicConsume));
    steps
}

/// Sends recovery's requests; declarations go on a channel of its own, reopened after a
/// refusal.
struct Declarer<'a> {
    /// The connection.
    shared: &'a Arc<Shared>,
    /// Bound on each reply.
    timeout: Duration,
    /// Recovery's channel (id, epoch), once open.
    channel: Option<(u16, u64)>,
}

impl<'a> Declarer<'a> {
    /// A declarer for `shared`, each reply bounded by the connection timeout; its channel is
    /// opened by the first declaration.
    fn new(shared: &'a Arc<Shared>) -> Self {
        let timeout = shared.lock().config.connection_timeout;
        Declarer {
            shared,
            timeout,
            channel: None,
        }
    }
}

impl Declarer<'_> {
    /// Sends `method` and waits for the reply; `None` if the broker refused it (reported).
    async fn declare(&mut self, method: Method, what: String) -> Result<Option<Reply>, Error> {
        let (id, epoch) = match self.channel {
            Some(ids) => ids,
            None => {
                let (ids, reply) = self
                    .ask(|core| {
                        core.open_replay_channel()
                            .map(|(id, epoch, request)| ((id, epoch), request))
                    })
                    .await?;
                reply?;
                self.channel = Some(ids);
                ids
            }
        };
        let ((), reply) = self
            .ask(|core| core.replay_request(id, epoch, method).map(|r| ((), r)))
            .await?;
        match reply {
            Ok(reply) => Ok(Some(reply)),
            Err(err) => {
                self.settled(Err(err), what)?;
                self.channel = None; // the broker closed it
                Ok(None)
            }
        }
    }

    /// Ok(true) for a reply, Ok(false) for a refusal (reported), Err for a connection error.
    fn settled(&self, result: Result<Reply, Error>, what: String) -> Result<bool, Error> {
        match result {
            Ok(_) => Ok(true),
            Err(err) if err.is_channel_error() => {
                tracing::warn!(%what, error = %err, "recovery could not re-create part of the topology");
                self.shared
                    .emit(RecoveryEvent::TopologyFailed { what, error: err });
                Ok(false)
            }
            Err(err) => Err(err),
        }
    }

    /// Closes recovery's channel, if open.
    async fn close(&mut self) -> Result<(), Error> {
        let Some((id, epoch)) = self.channel.take() else {
            return Ok(());
        };
        let ((), reply) = self
            .ask(|core| core.close_replay_channel(id, epoch).map(|r| ((), r)))
            .await?;
        match reply {
            Ok(_) | Err(Error::ChannelClosedByApp) => Ok(()),
            Err(err) if err.is_channel_error() => Ok(()),
            Err(err) => Err(err),
        }
    }
}

impl Declarer<'_> {
    /// Queues one request of recovery's with `send` (under the lock, past the application's
    /// gate), wakes the driver and waits for the reply. The outer error: it could not be
    /// queued. The reply is bounded: a broker that does not answer within the connection
    /// timeout fails the attempt (recovery is part of connecting).
    async fn ask<T>(
        &self,
        send: impl FnOnce(&mut Core) -> Result<(T, RequestId), Error>,
    ) -> Result<(T, Result<Reply, Error>), Error> {
        let (queued, rx) = {
            let mut guard = self.shared.lock();
            let (queued, request) = send(&mut guard)?;
            (queued, guard.waiters().expect_reply(request))
        };
        self.shared.wake_driver();
        let reply = match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => Err(Error::ConnectionLost),
            Err(_) => Err(Error::ConnectTimeout {
                address: self.shared.lock().config.address(),
                timeout: self.timeout,
                step: ConnectStep::TopologyReplay,
            }),
        };
        Ok((queued, reply))
    }
}

/// Runs each hook's re-declarations on a channel of recovery's own (its calls pass the gate
/// and are not recorded), closed afterwards. Skipped if the application dropped the
/// connection meanwhile.
pub(crate) async fn run_hooks(
    shared: &Arc<Shared>,
    conn: &Weak<ConnectionInner>,
    policy: &RecoveryPolicy,
) -> Result<(), Error> {
    if policy.hooks.each().next().is_none() {
        return Ok(());
    }
    let Some(conn) = conn.upgrade() else {
        return Ok(());
    };
    let (id, epoch, opened) = {
        let mut guard = shared.lock();
        let (id, epoch, request) = guard.open_replay_channel()?;
        (id, epoch, guard.waiters().expect_reply(request))
    };
    shared.wake_driver();
    opened.await.unwrap_or(Err(Error::ConnectionLost))?;
    let channel = Channel::for_recovery(conn, id, epoch);
    for hook in policy.hooks.each() {
        hook.redeclare(&channel).await?;
    }
    channel.close().await
}
