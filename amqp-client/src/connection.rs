//! [`Connection`]: connect, open channels, observe and close.

use std::sync::Arc;
use std::time::Instant;

use amqp_codec::ReplyCode;
use amqp_codec::table::FieldTable;
use tokio::sync::{broadcast, watch};
use tracing::Instrument;

use crate::channel::Channel;
use crate::config::ConnectionConfig;
use crate::driver;
use crate::error::Error;
use crate::proto::ConnectionState;
use crate::proto::Core;
use crate::recovery::{self, RecoveryEvent};
use crate::shared::Shared;

/// A connection to a RabbitMQ broker: one socket, one driver task, many channels.
///
/// Cheap to clone; the connection closes (cleanly, with connection.close) when the last
/// `Connection` and the last [`Channel`] are dropped, or when [`close`](Self::close) is called.
///
/// ```no_run
/// # async fn demo() -> Result<(), amqp_client::Error> {
/// use amqp_client::Connection;
/// let conn = Connection::connect("amqp://guest:guest@127.0.0.1:5672/%2f").await?;
/// let channel = conn.open_channel().await?;
/// // ... declare, publish, consume ...
/// conn.close().await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Connection {
    inner: Arc<ConnectionInner>,
}

/// Closes the connection when the last handle goes.
#[derive(Debug)]
pub(crate) struct ConnectionInner {
    pub(crate) shared: Arc<Shared>,
    /// For logs: where we are connected (never credentials).
    address: String,
    /// The broker's blocked state, as it changes.
    blocked: watch::Receiver<Option<String>>,
}

impl Drop for ConnectionInner {
    fn drop(&mut self) {
        self.shared.lock().close(
            ReplyCode::REPLY_SUCCESS,
            "connection dropped",
            Instant::now(),
        );
        self.shared.wake_driver();
    }
}

impl Connection {
    /// Connects with a URI such as `amqp://user:pass@host:5672/vhost?heartbeat=30`.
    pub async fn connect(uri: &str) -> Result<Self, Error> {
        Self::connect_with(ConnectionConfig::from_uri(uri)?).await
    }

    /// Connects with explicit settings. TCP connect, TLS and the AMQP handshake together are
    /// bounded by `connection_timeout`; a timeout names the step it was waiting for. With a
    /// recovery policy that asks for it ([`RecoveryPolicy::retry_initial_connect`](crate::RecoveryPolicy)),
    /// a first connection that fails the way recovery retries is retried by the same schedule.
    pub async fn connect_with(config: ConnectionConfig) -> Result<Self, Error> {
        let span = tracing::debug_span!("connect", address = %config.address());
        match config.recovery.clone() {
            Some(policy) if policy.retry_initial_connect => {
                recovery::connect_retrying(config, &policy, Self::establish)
                    .instrument(span)
                    .await
            }
            _ => Self::establish_any(config).instrument(span).await,
        }
    }

    /// One attempt per address, in order (the URL's hosts, then the fallbacks): a cluster
    /// whose first node is down is still reached. An error no other node would change (bad
    /// credentials, a vhost refused, the application's own timeout) ends it at once; otherwise
    /// the last address's error is returned.
    async fn establish_any(config: ConnectionConfig) -> Result<Self, Error> {
        let mut attempt = config.clone();
        for (host, port) in &config.fallback_addresses {
            match Self::establish(attempt.clone()).await {
                Err(err) if err.is_recoverable() => {
                    tracing::debug!(error = %err, "address failed; trying the next");
                    (attempt.host, attempt.port) = (host.clone(), *port);
                }
                result => return result,
            }
        }
        Self::establish(attempt).await
    }

    async fn establish(config: ConnectionConfig) -> Result<Self, Error> {
        // One deadline for every step: TCP and TLS here, the handshake in the core (which
        // starts its clock now), so whichever step runs out names itself.
        let started = Instant::now();
        let deadline = tokio::time::Instant::from_std(started + config.connection_timeout);
        let address = config.address();
        let tcp = driver::connect_tcp(&config, &config.host, config.port, deadline).await?;
        let shared = Arc::new(Shared::new(Core::new(config.clone(), started)));
        let open_rx = shared.lock().waiters().expect_open();
        let blocked = shared.blocked();
        let tls = config.tls.as_ref();
        let driver = driver::spawn(shared.clone(), tcp, tls, &config.host, deadline).await?;
        let inner = Arc::new(ConnectionInner {
            shared: shared.clone(),
            address,
            blocked,
        });
        if config.recovery.is_some() {
            let conn = Arc::downgrade(&inner);
            tokio::spawn(recovery::supervise(shared, conn, driver));
        }
        match open_rx.await {
            Ok(Ok(())) => Ok(Self { inner }),
            Ok(Err(err)) => Err(err),
            Err(_) => Err(Error::ConnectionLost),
        }
    }

    /// Opens a new channel. With recovery on, the channel is recovered with the connection,
    /// and opening one while the connection is being recovered waits for it (bounded).
    pub async fn open_channel(&self) -> Result<Channel, Error> {
        let shared = &self.inner.shared;
        let (id, epoch, rx) = recovery::when_usable(shared, |guard| {
            if guard.is_recovering() {
                return None;
            }
            Some(
                guard
                    .open_channel()
                    .map(|(id, epoch, request)| (id, epoch, guard.waiters().expect_reply(request))),
            )
        })
        .await??;
        shared.wake_driver();
        let channel = Channel::new(self.inner.clone(), id, epoch);
        rx.await.unwrap_or(Err(Error::ConnectionLost))?;
        if let Some(r) = shared.lock().recovery() {
            r.topology.record_channel(id);
        }
        Ok(channel)
    }

    /// Closes the connection cleanly (connection.close 200, then waits for close-ok). Every
    /// channel's pending calls fail with [`Error::ConnectionClosedByApp`].
    pub async fn close(&self) -> Result<(), Error> {
        let rx = {
            let mut guard = self.inner.shared.lock();
            let rx = guard.waiters().expect_close();
            let text = "closed by the application";
            guard.close(ReplyCode::REPLY_SUCCESS, text, Instant::now());
            rx
        };
        self.inner.shared.wake_driver();
        rx.await.unwrap_or(Ok(()))
    }

    /// Replaces the credential of the live connection (connection.update-secret), e.g. a
    /// refreshed OAuth 2 token.
    pub async fn update_secret(&self, new_secret: &str, reason: &str) -> Result<(), Error> {
        let rx = {
            let mut guard = self.inner.shared.lock();
            guard.update_secret(new_secret, reason)?;
            guard.waiters().expect_secret()
        };
        self.inner.shared.wake_driver();
        rx.await.unwrap_or(Err(Error::ConnectionLost))
    }

    /// True while the connection is open (not while it is being recovered).
    pub fn is_open(&self) -> bool {
        self.inner.shared.lock().closed_error().is_none()
    }

    /// True when automatic recovery is configured: a lost connection is brought back (until
    /// the policy gives up) rather than ending every handle.
    pub fn recovers(&self) -> bool {
        self.inner.shared.lock().config.recovery.is_some()
    }

    /// Why the connection ended, once it has.
    pub fn close_reason(&self) -> Option<Error> {
        self.inner.shared.lock().closed_error()
    }

    /// Waits until the connection ends for good (recovery, if on, gave up) and returns why.
    pub async fn closed(&self) -> Error {
        let mut state = self.inner.shared.state();
        let _ = state
            .wait_for(|s| matches!(s, ConnectionState::Closed | ConnectionState::Failed(_)))
            .await;
        self.close_reason().unwrap_or(Error::ConnectionLost)
    }

    /// Where the connection stands (connected, recovering, recovered, failed, closed), as a
    /// receiver that sees every change.
    pub fn state(&self) -> watch::Receiver<ConnectionState> {
        self.inner.shared.state()
    }

    /// A receiver of what automatic recovery does: the loss, failed attempts, renamed queues,
    /// topology it could not re-create, the recovery, or giving up.
    pub fn recovery_events(&self) -> broadcast::Receiver<RecoveryEvent> {
        self.inner.shared.subscribe_events()
    }

    /// The broker's `connection.blocked` reason while it blocks publishers (resource alarm),
    /// `None` otherwise.
    pub fn blocked(&self) -> Option<String> {
        self.inner.blocked.borrow().clone()
    }

    /// A receiver that sees every change of the blocked state.
    pub fn blocked_changes(&self) -> watch::Receiver<Option<String>> {
        self.inner.blocked.clone()
    }

    /// What the broker said about itself: product, version, `capabilities`, cluster name.
    pub fn server_properties(&self) -> FieldTable {
        self.inner.shared.lock().server_properties.clone()
    }

    /// Negotiated channel-max.
    pub fn channel_max(&self) -> u16 {
        self.inner.shared.lock().tuning().0
    }

    /// Negotiated frame-max (0: no limit).
    pub fn frame_max(&self) -> u32 {
        self.inner.shared.lock().tuning().1
    }

    /// Negotiated heartbeat interval in seconds (0: none).
    pub fn heartbeat(&self) -> u16 {
        self.inner.shared.lock().tuning().2
    }

    /// `host:port` of the broker.
    pub fn address(&self) -> &str {
        &self.inner.address
    }

    /// How many reads and writes (system calls) the connection has made, and with how many
    /// bytes: divided by a message count, the cost of I/O per message.
    pub fn io_stats(&self) -> crate::IoStats {
        self.inner.shared.io.snapshot()
    }

    /// Deliveries that could not simply be handed to a consumer: unreadable ones (handed over
    /// as [`Error::UnreadableDelivery`]) and ones for a consumer no channel knew.
    pub fn delivery_stats(&self) -> crate::DeliveryStats {
        self.inner.shared.lock().delivery_stats()
    }

    /// What the connection did with messages since it was made, over every channel and
    /// across recoveries: published, confirmed, nacked, returned, delivered, acked, rejected,
    /// and the recoveries made.
    pub fn message_stats(&self) -> crate::MessageStats {
        self.inner.shared.lock().message_stats()
    }

    /// A handle that reads this connection's counts without keeping it open (for a metrics
    /// endpoint that outlives the connection's users).
    pub fn stats_handle(&self) -> crate::StatsHandle {
        crate::StatsHandle::new(&self.inner.shared)
    }
}
