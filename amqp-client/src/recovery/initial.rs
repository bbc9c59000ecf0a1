//! The first connection, retried by the recovery policy when it asks for it
//! ([`RecoveryPolicy::retry_initial_connect`]): a service started before its broker, or
//! behind a load balancer whose backend is down, waits with the same backoff, address after
//! address, and the same give-up bound, instead of failing at once.

use std::future::Future;
use std::time::Instant;

use super::RecoveryPolicy;
use super::supervisor::Jitter;
use crate::config::ConnectionConfig;
use crate::error::Error;

/// Runs `connect` on `config` (then on each fallback address in turn) until it succeeds, its
/// error is not one recovery retries, or the policy is exhausted (then
/// [`Error::RecoveryFailed`]).
pub(crate) async fn connect_retrying<T, F>(
    config: ConnectionConfig,
    policy: &RecoveryPolicy,
    mut connect: impl FnMut(ConnectionConfig) -> F,
) -> Result<T, Error>
where
    F: Future<Output = Result<T, Error>>,
{
    let addresses = config.addresses();
    let started = Instant::now();
    let mut jitter = Jitter::seeded();
    let mut attempts = 0;
    loop {
        let mut attempt = config.clone();
        let (host, port) = addresses
            .get(attempts as usize % addresses.len().max(1))
            .cloned()
            .unwrap_or((config.host.clone(), config.port));
        (attempt.host, attempt.port) = (host, port);
        let err = match connect(attempt).await {
            Ok(connected) => return Ok(connected),
            Err(err) if policy.recovers(&err, false, false) => err,
            Err(err) => return Err(err),
        };
        attempts += 1;
        tracing::warn!(attempt = attempts, error = %err, "first connection failed; retrying");
        policy
            .hooks
            .each()
            .for_each(|h| h.attempt_failed(attempts, &err));
        if policy.exhausted(attempts, started.elapsed()) {
            return Err(Error::RecoveryFailed {
                attempts,
                last_error: Box::new(err),
            });
        }
        let delay = policy.delay(attempts, jitter.next());
        let left = policy
            .give_up_after
            .map_or(delay, |limit| limit.saturating_sub(started.elapsed()));
        tokio::time::sleep(delay.min(left)).await;
    }
}
