//! Automatic recovery: the policy layer that brings a lost connection back.
//!
//! Opt in with one line, [`ConnectionConfig::with_recovery`](crate::ConnectionConfig::with_recovery).
//! When the connection is lost (an IO error, a heartbeat timeout, or the broker closing it
//! with 320 CONNECTION_FORCED or 541 INTERNAL_ERROR), the client
//! 1. keeps every [`Channel`](crate::Channel) and [`Consumer`](crate::Consumer) handle
//!    alive; calls made meanwhile wait up to [`RecoveryPolicy::wait_while_recovering`] (or fail
//!    at once with [`Error::Recovering`](crate::Error::Recovering));
//! 2. fails what cannot survive: pending replies and unconfirmed publishes (never replayed:
//!    the application decides whether to publish again), and refuses acks of deliveries
//!    from the lost connection ([`Error::StaleDelivery`](crate::Error::StaleDelivery): the
//!    broker requeued them);
//! 3. reconnects with exponential backoff and jitter, trying each address in turn;
//! 4. re-declares, in order, exchanges, queues (a server-named one under its new name,
//!    announced as [`RecoveryEvent::QueueRenamed`]), exchange and queue bindings, then reopens
//!    each channel with its qos, confirm mode and consumers (same tags);
//! 5. or gives up after [`RecoveryPolicy::max_attempts`] or [`RecoveryPolicy::give_up_after`]
//!    with [`Error::RecoveryFailed`](crate::Error::RecoveryFailed) on every handle.
//!
//! Not recovered: a connection the application closed, an authentication failure, or a
//! protocol violation. The state is observable with
//! [`Connection::state`](crate::Connection::state) and
//! [`Connection::recovery_events`](crate::Connection::recovery_events), and logged with
//! `tracing`.

//!
//! | file | what it does |
//! |---|---|
//! | `policy.rs` | [`RecoveryPolicy`] (when to retry, when to give up), the one rule of what is recovered, [`RecoveryHook`] |
//! | `topology.rs` | what the application declared, recorded from accepted requests |
//! | `supervisor.rs` | the task that reconnects with backoff, address after address |
//! | `replay.rs` | re-creating the topology, then the hooks, on a new connection |
//! | `initial.rs` | retrying the first connection by the same policy, when asked |
//! | `gate.rs` | the application's calls made during recovery: wait (bounded), then go |
//!
//! The core (`proto/suspend.rs`) provides the mechanism (suspending channels, a new
//! transport, a gate for recovery's own requests); this layer decides and drives it. When the
//! core reports a lost transport, [`on_lost`] applies the policy: suspend the application's
//! channels, or fail everything.

mod gate;
mod initial;
mod policy;
mod replay;
mod supervisor;
mod topology;

use std::time::Duration;

use crate::error::Error;
use crate::proto::Core;

pub(crate) use gate::{wait_out, when_usable};
pub(crate) use initial::connect_retrying;
pub use policy::{RecoveryHook, RecoveryHooks, RecoveryPolicy};
pub(crate) use supervisor::supervise;
pub(crate) use topology::Topology;

/// The recovery layer's state beside one connection's core, under the same lock: the policy,
/// and what to re-create.
#[derive(Debug)]
pub(crate) struct Recovery {
    /// When to retry and when to give up.
    pub(crate) policy: RecoveryPolicy,
    /// What the application declared.
    pub(crate) topology: Topology,
}

impl Recovery {
    pub(crate) fn new(policy: RecoveryPolicy) -> Self {
        Self {
            policy,
            topology: Topology::default(),
        }
    }
}

/// The core lost its transport with `err`: by the policy, its channels are suspended for the
/// supervisor to reconnect (those the application opened, with what they record), or every
/// handle fails. The one place the decision is made.
pub(crate) fn on_lost(core: &mut Core, recovery: Option<&mut Recovery>, err: &Error) {
    match recovery {
        Some(r)
            if r.policy
                .recovers(err, core.is_recovering(), core.app_closed()) =>
        {
            let topology = &mut r.topology;
            core.suspend(err, |id| topology.channels.contains_key(&id));
            topology.keep_only(&core.suspended_channels());
        }
        _ => core.fail_all(err),
    }
}

/// Something recovery did, as [`Connection::recovery_events`](crate::Connection::recovery_events)
/// broadcasts it.
#[derive(Debug, Clone)]
pub enum RecoveryEvent {
    /// The connection was lost with this error; recovery starts.
    Lost(Error),
    /// An attempt failed.
    AttemptFailed {
        /// Which attempt (1-based).
        attempt: u32,
        /// `host:port` it tried.
        address: String,
        /// Why it failed.
        error: Error,
    },
    /// A server-named queue was declared again and got a new name; bindings and consumers
    /// moved to it.
    QueueRenamed {
        /// The name before the connection was lost.
        old: String,
        /// The name now.
        new: String,
    },
    /// Part of the topology could not be re-created (e.g. a queue redeclared with other
    /// arguments elsewhere); recovery went on without it.
    TopologyFailed {
        /// What failed, e.g. `queue.declare orders`.
        what: String,
        /// The broker's answer.
        error: Error,
    },
    /// The connection is open again, topology re-created.
    Recovered {
        /// `host:port` it is now connected to.
        address: String,
        /// Attempts it took.
        attempts: u32,
        /// How long the connection was down.
        downtime: Duration,
    },
    /// Recovery gave up.
    Failed(Error),
}
