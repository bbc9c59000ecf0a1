//! [`Channel`]: every AMQP operation of one channel, as async methods.

use std::sync::Arc;

use amqp_codec::Method;
use amqp_codec::methods::{
    BasicCancel, BasicConsume, BasicQos, BasicRecover, ConfirmSelect, ExchangeDeclare,
    ExchangeDelete, QueueDeclare, QueueDelete, QueuePurge, TxCommit, TxRollback, TxSelect,
};
use tracing::Instrument;

mod basic;
mod bind;
mod span;

use crate::connection::ConnectionInner;
use crate::consumer::Consumer;
use crate::error::Error;
pub use crate::names::IntoShortStr;
use crate::names::short;
use crate::options::{
    ConsumeOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, ExchangeKind, QosOptions,
    QueueDeclareOptions, QueueDeleteOptions, RecoverOptions,
};
use crate::proto::Reply;
use crate::proto::ReturnedMessage;
use crate::recovery::{self, Topology};
use crate::shared::{Guard, ReplyRx, Shared};

/// A channel: a lightweight session multiplexed on the connection.
///
/// `Clone + Send + Sync`; clones share the channel. Calls that wait for the broker are sent one
/// at a time (the protocol allows one synchronous request in flight per channel); others queue
/// behind. If the broker closes the channel (a soft error such as 404 or 406), the pending call
/// and every later one fail with [`Error::ChannelClosed`] carrying the code and text; the
/// connection and its other channels carry on. The channel closes when its last clone (and
/// its last consumer) is dropped.
///
/// ```no_run
/// use amqp_client::prelude::*;
///
/// # async fn demo() -> Result<(), amqp_client::Error> {
/// let conn = Connection::connect("amqp://guest:guest@127.0.0.1:5672/%2f").await?;
/// let ch = conn.open_channel().await?;
/// ch.exchange_declare("logs", ExchangeKind::Topic, ExchangeDeclareOptions::default())
///     .await?;
/// // A server-named queue that goes away with this connection, bound to `app.*` keys.
/// let queue = ch.queue_declare("", QueueDeclareOptions::exclusive()).await?;
/// ch.queue_bind(&queue.name, "logs", "app.*", BindOptions::default()).await?;
/// let props = BasicProperties::default();
/// ch.basic_publish("logs", "app.started", PublishOptions::default(), &props, "up").await?;
/// ch.close().await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Channel {
    inner: Arc<ChannelInner>,
}

#[derive(Debug)]
pub(crate) struct ChannelInner {
    /// Keeps the connection open while the channel is in use.
    conn: Arc<ConnectionInner>,
    /// The channel number.
    id: u16,
    /// Which opening of that number this handle belongs to.
    epoch: u64,
    /// A channel of recovery's own, handed to recovery hooks: its calls pass the gate that
    /// holds the application's while the connection is being recovered, and are not recorded.
    for_recovery: bool,
}

impl Drop for ChannelInner {
    fn drop(&mut self) {
        let mut guard = self.conn.shared.lock();
        // Already closed (by either side) is fine: nothing to do.
        let _ = if self.for_recovery {
            guard.close_replay_channel(self.id, self.epoch)
        } else {
            guard.close_channel(self.id, self.epoch)
        };
        if !self.for_recovery
            && let Some(r) = guard.recovery()
        {
            r.topology.forget_channel(self.id);
        }
        drop(guard);
        self.conn.shared.wake_driver();
    }
}

/// What queue.declare answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueInfo {
    /// The queue's name (the generated one for a server-named queue).
    pub name: String,
    /// Messages ready in the queue.
    pub message_count: u32,
    /// Consumers on the queue.
    pub consumer_count: u32,
}

impl Channel {
    pub(crate) fn new(conn: Arc<ConnectionInner>, id: u16, epoch: u64) -> Self {
        Self {
            inner: Arc::new(ChannelInner {
                conn,
                id,
                epoch,
                for_recovery: false,
            }),
        }
    }

    /// A channel of recovery's own on the new connection (see `ChannelInner::for_recovery`).
    pub(crate) fn for_recovery(conn: Arc<ConnectionInner>, id: u16, epoch: u64) -> Self {
        Self {
            inner: Arc::new(ChannelInner {
                conn,
                id,
                epoch,
                for_recovery: true,
            }),
        }
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.inner.conn.shared
    }

    /// The channel number.
    pub fn id(&self) -> u16 {
        self.inner.id
    }

    /// The channel number and which opening of it this handle belongs to.
    pub(crate) fn ids(&self) -> (u16, u64) {
        (self.inner.id, self.inner.epoch)
    }

    /// True until the channel or its connection closed.
    pub fn is_open(&self) -> bool {
        self.shared()
            .lock()
            .channel_usable(self.inner.id, self.inner.epoch)
    }

    /// Sends a request and waits for its reply. With recovery on, a request that changes the
    /// topology is recorded once the broker accepted it, and a call made while the connection
    /// is being recovered waits for it (bounded by the policy).
    async fn call(&self, method: Method) -> Result<Reply, Error> {
        let span = span::op_span(self.inner.id, &method);
        self.call_in_span(method).instrument(span).await
    }

    /// [`call`](Self::call), inside the operation's span.
    async fn call_in_span(&self, method: Method) -> Result<Reply, Error> {
        let shared = self.shared();
        let mut method = Some(method);
        let (rx, kept) =
            recovery::when_usable(shared, |guard| self.queue(guard, &mut method)).await??;
        shared.wake_driver();
        let reply = rx.await.unwrap_or(Err(Error::ConnectionLost))?;
        if let Some(request) = kept
            && let Some(r) = shared.lock().recovery()
        {
            r.topology
                .record(self.inner.id, &request, Some(reply.method()));
        }
        Ok(reply)
    }

    /// Queues `method` (taken from its slot) with a reply expected; `None` while the
    /// connection is being recovered (recovery's own channel goes through its gate). Also
    /// hands back a copy of a topology change, to record once the broker accepts it.
    fn queue(
        &self,
        guard: &mut Guard<'_>,
        method: &mut Option<Method>,
    ) -> Option<Result<(ReplyRx, Option<Method>), Error>> {
        let (id, epoch) = self.ids();
        if guard.is_recovering() && !self.inner.for_recovery {
            return None;
        }
        let method = method.take()?;
        let kept = self.recorded(guard, &method).then(|| method.clone());
        let queued = if self.inner.for_recovery {
            guard.replay_request(id, epoch, method)
        } else {
            guard.request(id, epoch, method)
        };
        Some(queued.map(|request| (guard.waiters().expect_reply(request), kept)))
    }

    /// True if `method`, once accepted, is recorded for recovery to re-create.
    fn recorded(&self, guard: &mut Guard<'_>, method: &Method) -> bool {
        !self.inner.for_recovery && guard.recovery().is_some() && Topology::records(method)
    }

    /// Sends a request with the no-wait bit (no reply comes), in order with the others.
    fn send_nowait(&self, method: Method) -> Result<(), Error> {
        let (id, epoch) = self.ids();
        let _span = span::op_span(id, &method).entered();
        let mut guard = self.shared().lock();
        let kept = self.recorded(&mut guard, &method).then(|| method.clone());
        guard.request_nowait(id, epoch, method)?;
        if let Some(request) = kept
            && let Some(r) = guard.recovery()
        {
            r.topology.record(id, &request, None);
        }
        drop(guard);
        self.shared().wake_driver();
        Ok(())
    }

    async fn call_or_send(&self, method: Method, nowait: bool) -> Result<(), Error> {
        if nowait {
            self.send_nowait(method)
        } else {
            self.call(method).await.map(drop)
        }
    }

    /// Declares an exchange.
    pub async fn exchange_declare(
        &self,
        name: impl IntoShortStr,
        kind: ExchangeKind,
        options: ExchangeDeclareOptions,
    ) -> Result<(), Error> {
        let method = Method::ExchangeDeclare(ExchangeDeclare {
            ticket: 0,
            exchange: name.into_short_str()?,
            kind: short(kind.as_str())?,
            passive: options.passive,
            durable: options.durable,
            auto_delete: options.auto_delete,
            internal: options.internal,
            nowait: options.nowait,
            arguments: options.arguments,
        });
        self.call_or_send(method, options.nowait).await
    }

    /// Deletes an exchange.
    pub async fn exchange_delete(
        &self,
        name: impl IntoShortStr,
        options: ExchangeDeleteOptions,
    ) -> Result<(), Error> {
        let method = Method::ExchangeDelete(ExchangeDelete {
            ticket: 0,
            exchange: name.into_short_str()?,
            if_unused: options.if_unused,
            nowait: options.nowait,
        });
        self.call_or_send(method, options.nowait).await
    }

    /// Declares a queue; an empty name asks the broker to generate one (returned in
    /// [`QueueInfo::name`]). The options' arguments carry `x-queue-type`, `x-message-ttl`,
    /// `x-dead-letter-exchange`, `x-max-length` and the like. With `nowait` the returned
    /// counts are 0.
    ///
    /// ```no_run
    /// # async fn demo(channel: amqp_client::Channel) -> Result<(), amqp_client::Error> {
    /// use amqp_client::QueueDeclareOptions;
    /// let options = QueueDeclareOptions::durable().with_argument("x-queue-type", "quorum");
    /// let queue = channel.queue_declare("tasks", options).await?;
    /// println!("{} messages ready", queue.message_count);
    /// # Ok(()) }
    /// ```
    pub async fn queue_declare(
        &self,
        name: impl IntoShortStr,
        options: QueueDeclareOptions,
    ) -> Result<QueueInfo, Error> {
        let queue = name.into_short_str()?;
        let method = Method::QueueDeclare(QueueDeclare {
            ticket: 0,
            queue: queue.clone(),
            passive: options.passive,
            durable: options.durable,
            exclusive: options.exclusive,
            auto_delete: options.auto_delete,
            nowait: options.nowait,
            arguments: options.arguments,
        });
        if options.nowait {
            self.send_nowait(method)?;
            return Ok(QueueInfo {
                name: String::from_utf8_lossy(&queue).into_owned(),
                message_count: 0,
                consumer_count: 0,
            });
        }
        match self.call(method).await? {
            Reply::Method(Method::QueueDeclareOk(ok)) => Ok(QueueInfo {
                name: String::from_utf8_lossy(&ok.queue).into_owned(),
                message_count: ok.message_count,
                consumer_count: ok.consumer_count,
            }),
            _ => Err(Error::InvalidUse("unexpected reply to queue.declare")),
        }
    }

    /// Drops every ready message of a queue; returns how many.
    pub async fn queue_purge(&self, queue: impl IntoShortStr) -> Result<u32, Error> {
        let method = Method::QueuePurge(QueuePurge {
            ticket: 0,
            queue: queue.into_short_str()?,
            nowait: false,
        });
        match self.call(method).await? {
            Reply::Method(Method::QueuePurgeOk(ok)) => Ok(ok.message_count),
            _ => Err(Error::InvalidUse("unexpected reply to queue.purge")),
        }
    }

    /// [`queue_purge`](Self::queue_purge) without waiting for purge-ok (so without the count).
    pub fn queue_purge_nowait(&self, queue: impl IntoShortStr) -> Result<(), Error> {
        self.send_nowait(Method::QueuePurge(QueuePurge {
            ticket: 0,
            queue: queue.into_short_str()?,
            nowait: true,
        }))
    }

    /// Deletes a queue; returns how many messages it held (0 with `nowait`).
    pub async fn queue_delete(
        &self,
        queue: impl IntoShortStr,
        options: QueueDeleteOptions,
    ) -> Result<u32, Error> {
        let method = Method::QueueDelete(QueueDelete {
            ticket: 0,
            queue: queue.into_short_str()?,
            if_unused: options.if_unused,
            if_empty: options.if_empty,
            nowait: options.nowait,
        });
        if options.nowait {
            return self.send_nowait(method).map(|()| 0);
        }
        match self.call(method).await? {
            Reply::Method(Method::QueueDeleteOk(ok)) => Ok(ok.message_count),
            _ => Err(Error::InvalidUse("unexpected reply to queue.delete")),
        }
    }

    /// Limits unacknowledged deliveries (prefetch): the broker sends at most `prefetch_count`
    /// messages this channel has not settled (0: no limit).
    pub async fn basic_qos(&self, prefetch_count: u16, options: QosOptions) -> Result<(), Error> {
        let method = Method::BasicQos(BasicQos {
            prefetch_size: options.prefetch_size,
            prefetch_count,
            global: options.global,
        });
        self.call(method).await.map(drop)
    }

    /// Starts a consumer; its deliveries come out of the returned [`Consumer`] stream, whose
    /// buffer is bounded. The options' arguments carry e.g. `x-priority`.
    ///
    /// ```no_run
    /// # async fn demo(channel: amqp_client::Channel) -> Result<(), amqp_client::Error> {
    /// use amqp_client::ConsumeOptions;
    /// let mut consumer = channel.basic_consume("tasks", ConsumeOptions::default()).await?;
    /// while let Some(delivery) = consumer.recv().await {
    ///     let delivery = delivery?;
    ///     // work on delivery.body, then:
    ///     delivery.ack()?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn basic_consume(
        &self,
        queue: impl IntoShortStr,
        options: ConsumeOptions,
    ) -> Result<Consumer, Error> {
        if options.nowait && options.consumer_tag.is_empty() {
            return Err(Error::InvalidUse("a no-wait consumer needs a consumer tag"));
        }
        let method = Method::BasicConsume(BasicConsume {
            ticket: 0,
            queue: queue.into_short_str()?,
            consumer_tag: short(&options.consumer_tag)?,
            no_local: options.no_local,
            no_ack: options.no_ack,
            exclusive: options.exclusive,
            nowait: options.nowait,
            arguments: options.arguments,
        });
        let tag = if options.nowait {
            self.send_nowait(method)?;
            short(&options.consumer_tag)?
        } else {
            match self.call(method).await? {
                Reply::Method(Method::BasicConsumeOk(ok)) => ok.consumer_tag,
                _ => return Err(Error::InvalidUse("unexpected reply to basic.consume")),
            }
        };
        Ok(Consumer::new(self.clone(), tag))
    }

    /// Cancels a consumer; its stream ends after what it already buffered.
    pub async fn basic_cancel(&self, consumer_tag: impl IntoShortStr) -> Result<(), Error> {
        let method = Method::BasicCancel(BasicCancel {
            consumer_tag: consumer_tag.into_short_str()?,
            nowait: false,
        });
        self.call(method).await.map(drop)
    }

    /// Asks the broker to redeliver every unacknowledged message of this channel (with
    /// [`RecoverOptions::requeue`], the default, they go back to their queues).
    pub async fn basic_recover(&self, options: RecoverOptions) -> Result<(), Error> {
        let method = Method::BasicRecover(BasicRecover {
            requeue: options.requeue,
        });
        self.call(method).await.map(drop)
    }

    /// Puts the channel in confirm mode: from now on every publish's future resolves with
    /// the broker's ack or nack.
    pub async fn confirm_select(&self) -> Result<(), Error> {
        self.call(Method::ConfirmSelect(ConfirmSelect { nowait: false }))
            .await
            .map(drop)
    }

    /// Waits until every publish so far is confirmed. `Ok(true)` if all were acked since the
    /// last call, `Ok(false)` if any was nacked; an error if the channel closed meanwhile.
    pub async fn wait_for_confirms(&self) -> Result<bool, Error> {
        let (id, epoch) = (self.inner.id, self.inner.epoch);
        let mut waiter = crate::shared::WaiterSlot::new(self.shared());
        std::future::poll_fn(|cx| {
            let mut guard = self.shared().lock();
            let (core, waiters) = guard.parts();
            let w = waiters.prepare(waiter.slot(), cx.waker());
            core.poll_all_confirmed(id, epoch, w)
        })
        .await
    }

    /// Publishes not yet confirmed.
    pub fn pending_confirms(&self) -> usize {
        self.shared()
            .lock()
            .pending_confirms(self.inner.id, self.inner.epoch)
    }

    /// Messages the broker returned as unroutable, outside confirm mode (in confirm mode
    /// they come with their publish's [`Confirmation`](crate::Confirmation)).
    pub fn take_returned(&self) -> Vec<ReturnedMessage> {
        self.shared()
            .lock()
            .take_returns(self.inner.id, self.inner.epoch)
    }

    /// Starts a transaction mode on the channel.
    pub async fn tx_select(&self) -> Result<(), Error> {
        self.call(Method::TxSelect(TxSelect {})).await.map(drop)
    }

    /// Commits the current transaction.
    pub async fn tx_commit(&self) -> Result<(), Error> {
        self.call(Method::TxCommit(TxCommit {})).await.map(drop)
    }

    /// Rolls back the current transaction.
    pub async fn tx_rollback(&self) -> Result<(), Error> {
        self.call(Method::TxRollback(TxRollback {})).await.map(drop)
    }

    /// Closes the channel (channel.close 200, waits for close-ok). Pending calls fail with
    /// [`Error::ChannelClosedByApp`].
    pub async fn close(&self) -> Result<(), Error> {
        let span = span::close_span(self.inner.id);
        self.close_in_span().instrument(span).await
    }

    /// [`close`](Self::close), inside its span.
    async fn close_in_span(&self) -> Result<(), Error> {
        let closing = {
            let mut guard = self.shared().lock();
            if !self.inner.for_recovery
                && let Some(r) = guard.recovery()
            {
                r.topology.forget_channel(self.inner.id);
            }
            let (id, epoch) = self.ids();
            let request = if self.inner.for_recovery {
                guard.close_replay_channel(id, epoch)
            } else {
                guard.close_channel(id, epoch)
            };
            request.map(|request| guard.waiters().expect_reply(request))
        };
        let rx = match closing {
            Ok(rx) => rx,
            // Closed already, by either side: closing again is a no-op.
            Err(err) if err.is_channel_error() => return Ok(()),
            Err(err) => return Err(err),
        };
        self.shared().wake_driver();
        match rx.await {
            Ok(Ok(_)) | Err(_) => Ok(()),
            Ok(Err(Error::ChannelClosedByApp)) => Ok(()),
            Ok(Err(err)) => Err(err),
        }
    }
}
