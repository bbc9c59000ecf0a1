//! The gate the application's calls meet while the connection is being recovered: one place
//! for every call that must wait for recovery (or fail with [`Error::Recovering`] once the
//! policy's `wait_while_recovering` passed), instead of a loop in each.

use tokio::time::Instant;

use crate::error::Error;
use crate::proto::ConnectionState;
use crate::shared::{Guard, Shared};

/// Runs `op` under the lock; while it answers `None` (the connection is being recovered, so
/// it did nothing), waits for recovery to end and runs it again. Waits at most the policy's
/// `wait_while_recovering` in all; then, or if recovery gave up, fails with the error calls
/// get.
pub(crate) async fn when_usable<T>(
    shared: &Shared,
    mut op: impl FnMut(&mut Guard<'_>) -> Option<T>,
) -> Result<T, Error> {
    let mut deadline = None;
    loop {
        if let Some(done) = op(&mut shared.lock()) {
            return Ok(done);
        }
        wait_out(shared, &mut deadline).await?;
    }
}

/// Waits for recovery to end, at most `wait_while_recovering` from the first wait (kept in
/// `deadline`). `Ok` to retry; otherwise the error the call gets (`RecoveryFailed`, or
/// `Recovering` if the bound passed first).
pub(crate) async fn wait_out(shared: &Shared, deadline: &mut Option<Instant>) -> Result<(), Error> {
    let wait = shared
        .lock()
        .recovery()
        .map(|r| r.policy.wait_while_recovering)
        .unwrap_or_default();
    let until = *deadline.get_or_insert_with(|| Instant::now() + wait);
    let mut state = shared.state();
    let ended = tokio::time::timeout_at(
        until,
        state.wait_for(|s| !matches!(s, ConnectionState::Recovering { .. })),
    )
    .await;
    let open = matches!(
        ended.as_ref().map(|r| r.as_deref()),
        Ok(Ok(
            ConnectionState::Connected | ConnectionState::Recovered { .. }
        ))
    );
    if open {
        return Ok(());
    }
    Err(shared.lock().closed_error().unwrap_or(Error::Recovering))
}
