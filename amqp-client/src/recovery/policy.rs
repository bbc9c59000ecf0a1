//! [`RecoveryPolicy`]: when and how often recovery retries, and the one rule for which
//! losses it recovers; [`RecoveryHook`]: code run around it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::error::Error;

/// How recovery retries. `Default` suits a service: 100 ms doubling to 10 s between attempts,
/// giving up after five minutes.
///
/// ```
/// use std::time::Duration;
/// use amqp_client::{ConnectionConfig, RecoveryPolicy};
/// let cfg = ConnectionConfig::from_uri("amqp://127.0.0.1:5672,127.0.0.1:5673/%2f")?
///     .with_recovery(RecoveryPolicy {
///         give_up_after: Some(Duration::from_secs(60)),
///         ..RecoveryPolicy::default()
///     });
/// assert_eq!(cfg.addresses().len(), 2);
/// # Ok::<(), amqp_client::UriError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryPolicy {
    /// Delay before the first attempt; doubles with each failed one.
    pub min_delay: Duration,
    /// Longest delay between attempts.
    pub max_delay: Duration,
    /// Give up after this many failed attempts (`None`: no limit by count).
    pub max_attempts: Option<u32>,
    /// Give up when the connection has been down this long (`None`: no limit by time).
    pub give_up_after: Option<Duration>,
    /// How long a call made during recovery waits for it to finish before failing with
    /// [`Error::Recovering`]; `Duration::ZERO` fails at once.
    pub wait_while_recovering: Duration,
    /// Also retry the first connection, by the same schedule, while its errors are ones
    /// recovery would retry ([`Error::is_recoverable`]): a service started before its broker,
    /// or behind a load balancer whose backend is down, waits instead of failing. Off by
    /// default: a misconfigured URI should fail at once.
    pub retry_initial_connect: bool,
    /// Code run around recovery: extra re-declarations on each new connection, and
    /// observation of outages and giving up. See [`RecoveryHook`].
    pub hooks: RecoveryHooks,
}

impl Default for RecoveryPolicy {
    fn default() -> Self {
        Self {
            min_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
            max_attempts: None,
            give_up_after: Some(Duration::from_secs(300)),
            wait_while_recovering: Duration::from_secs(30),
            retry_initial_connect: false,
            hooks: RecoveryHooks::default(),
        }
    }
}

impl RecoveryPolicy {
    /// The delay before attempt `attempt` (1-based): `min_delay * 2^(attempt-1)` capped at
    /// `max_delay`, then a random part of up to a quarter taken off (`jitter` in `0..1`),
    /// so that many clients cut off together do not reconnect in lockstep.
    pub fn delay(&self, attempt: u32, jitter: f64) -> Duration {
        let doublings = attempt.saturating_sub(1).min(31);
        let base = self
            .min_delay
            .saturating_mul(1 << doublings)
            .min(self.max_delay);
        base.mul_f64(1.0 - 0.25 * jitter.clamp(0.0, 1.0))
    }

    /// True once `attempts` failed attempts over `down_for` exhaust the policy.
    pub fn exhausted(&self, attempts: u32, down_for: Duration) -> bool {
        self.max_attempts.is_some_and(|max| attempts >= max)
            || self.give_up_after.is_some_and(|limit| down_for >= limit)
    }

    /// The same policy with `hook` run around each recovery too.
    pub fn with_hook(mut self, hook: impl RecoveryHook) -> Self {
        self.hooks.0.push(Arc::new(hook));
        self
    }

    /// Whether a connection that ended with `err` is recovered, the one rule of the client
    /// (and of the worker, which runs on it): the errors [`Error::is_recoverable`] names,
    /// never after the application closed the connection; and once recovery runs, an attempt
    /// that meets a peer not (yet) speaking AMQP (a node still starting, a load balancer with
    /// no backend) or failing TLS is retried too. Refused credentials are never retried.
    pub(crate) fn recovers(&self, err: &Error, recovering: bool, app_closed: bool) -> bool {
        let retried = recovering
            && matches!(
                err,
                Error::NotAmqp(_) | Error::Protocol { .. } | Error::Tls(_)
            );
        !app_closed && (err.is_recoverable() || retried)
    }
}

/// Code run around automatic recovery, added with [`RecoveryPolicy::with_hook`]. Every method
/// has a default that does nothing. The worker uses one to re-declare its own queues and to
/// count reconnections.
///
/// ```
/// use std::future::Future;
/// use std::pin::Pin;
/// use amqp_client::{Channel, Error, RecoveryHook, RecoveryPolicy};
///
/// struct Audit;
///
/// impl RecoveryHook for Audit {
///     fn redeclare<'a>(
///         &'a self,
///         channel: &'a Channel,
///     ) -> Pin<Box<dyn Future<Output = Result<(), Error>> + Send + 'a>> {
///         Box::pin(async move {
///             channel.queue_declare("audit", Default::default()).await?;
///             Ok(())
///         })
///     }
///     fn lost(&self, error: &Error) {
///         eprintln!("broker connection lost: {error}");
///     }
/// }
///
/// let policy = RecoveryPolicy::default().with_hook(Audit);
/// ```
pub trait RecoveryHook: Send + Sync + 'static {
    /// Runs on each new connection, after the recorded topology was re-created and before the
    /// application's calls go through, with a channel of recovery's own (its calls pass the
    /// gate that holds the application's, and are not recorded). An error fails the attempt,
    /// which is retried.
    fn redeclare<'a>(
        &'a self,
        channel: &'a crate::Channel,
    ) -> Pin<Box<dyn Future<Output = Result<(), Error>> + Send + 'a>> {
        let _ = channel;
        Box::pin(std::future::ready(Ok(())))
    }

    /// The connection was lost with `error`; recovery starts.
    fn lost(&self, error: &Error) {
        let _ = error;
    }

    /// Attempt `attempt` (1-based) failed with `error` (the first connection's attempts too,
    /// with [`RecoveryPolicy::retry_initial_connect`]).
    fn attempt_failed(&self, attempt: u32, error: &Error) {
        let _ = (attempt, error);
    }

    /// The connection is back, after `attempts` attempts and `downtime`.
    fn recovered(&self, attempts: u32, downtime: Duration) {
        let _ = (attempts, downtime);
    }

    /// Recovery gave up with `error`; every handle fails with it.
    fn gave_up(&self, error: &Error) {
        let _ = error;
    }
}

/// The hooks of a [`RecoveryPolicy`], in the order they were added. Two policies are equal
/// when they hold the same hooks (the same instances).
#[derive(Clone, Default)]
pub struct RecoveryHooks(Vec<Arc<dyn RecoveryHook>>);

impl RecoveryHooks {
    /// Each hook in turn.
    pub(crate) fn each(&self) -> impl Iterator<Item = &dyn RecoveryHook> {
        self.0.iter().map(|h| &**h)
    }
}

impl PartialEq for RecoveryHooks {
    fn eq(&self, other: &Self) -> bool {
        self.0.len() == other.0.len() && self.0.iter().zip(&other.0).all(|(a, b)| Arc::ptr_eq(a, b))
    }
}

impl Eq for RecoveryHooks {}

impl std::fmt::Debug for RecoveryHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RecoveryHooks({})", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_doubles_to_the_cap_and_jitter_only_shortens_it() {
        let p = RecoveryPolicy {
            min_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            ..RecoveryPolicy::default()
        };
        assert_eq!(p.delay(1, 0.0), Duration::from_millis(100));
        assert_eq!(p.delay(2, 0.0), Duration::from_millis(200));
        assert_eq!(p.delay(4, 0.0), Duration::from_millis(800));
        assert_eq!(p.delay(5, 0.0), Duration::from_secs(1));
        assert_eq!(p.delay(u32::MAX, 0.0), Duration::from_secs(1));
        assert_eq!(p.delay(1, 1.0), Duration::from_millis(75));
        assert_eq!(
            p.delay(1, 7.0),
            Duration::from_millis(75),
            "jitter is clamped"
        );
    }

    #[test]
    fn exhausted_by_count_or_by_time() {
        let p = RecoveryPolicy {
            max_attempts: Some(3),
            give_up_after: Some(Duration::from_secs(10)),
            ..RecoveryPolicy::default()
        };
        assert!(!p.exhausted(2, Duration::from_secs(9)));
        assert!(p.exhausted(3, Duration::ZERO));
        assert!(p.exhausted(0, Duration::from_secs(10)));
        let forever = RecoveryPolicy {
            max_attempts: None,
            give_up_after: None,
            ..RecoveryPolicy::default()
        };
        assert!(!forever.exhausted(u32::MAX, Duration::MAX));
    }
}
