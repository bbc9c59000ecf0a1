//! Helpers for the recovery tests: a fast policy, killing a connection by name, waiting for
//! recoveries, and a publisher that republishes what was not confirmed.

use std::time::Duration;

use amqp_client::amqp_codec::BasicProperties;
use amqp_client::{Channel, ConnectionConfig, PublishOptions, RecoveryEvent, RecoveryPolicy};
use tokio::sync::broadcast;

use super::{config, connection_pids};

/// Recovery that retries fast, so tests spend their time on traffic, not on sleeping.
pub(crate) fn quick_policy() -> RecoveryPolicy {
    RecoveryPolicy {
        min_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(500),
        give_up_after: Some(Duration::from_secs(30)),
        ..RecoveryPolicy::default()
    }
}

pub(crate) fn recovering_config(name: &str) -> ConnectionConfig {
    let mut cfg = config().with_recovery(quick_policy());
    cfg.connection_name = Some(name.to_owned());
    cfg
}

/// Force-closes every broker connection named `name` (320 CONNECTION_FORCED).
pub(crate) async fn kill_connection(name: &str) -> usize {
    let pids = connection_pids(name).await;
    for pid in &pids {
        // The connection may be gone already (closing): that is fine.
        let _ = std::process::Command::new("rabbitmqctl")
            .args(["close_connection", pid, "recovery test"])
            .output();
    }
    pids.len()
}

/// Waits for the next `Recovered` event, returning how long the connection was down.
pub(crate) async fn next_recovery(events: &mut broadcast::Receiver<RecoveryEvent>) -> Duration {
    loop {
        match events.recv().await {
            Ok(RecoveryEvent::Recovered { downtime, .. }) => return downtime,
            Ok(RecoveryEvent::Failed(err)) => panic!("recovery failed: {err}"),
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
            Err(err) => panic!("event stream ended: {err}"),
        }
    }
}

pub(crate) fn props() -> BasicProperties {
    BasicProperties::persistent()
}

/// Publishes ids until each one is confirmed, republishing those whose confirm failed.
pub(crate) async fn publish_all(ch: Channel, queue: String, ids: Vec<u32>) -> (usize, usize) {
    let (mut published, mut confirmed) = (0, 0);
    let mut todo = ids;
    while !todo.is_empty() {
        let mut retry = Vec::new();
        for chunk in todo.chunks(20) {
            // Paced, so that the connection is killed several times mid-stream.
            tokio::time::sleep(Duration::from_millis(25)).await;
            let mut pending = Vec::new();
            for &id in chunk {
                match ch
                    .basic_publish(
                        "",
                        queue.as_str(),
                        PublishOptions::default(),
                        &props(),
                        id.to_string(),
                    )
                    .await
                {
                    Ok(confirm) => {
                        published += 1;
                        pending.push((id, confirm));
                    }
                    Err(_) => retry.push(id),
                }
            }
            for (id, confirm) in pending {
                match confirm.await {
                    Ok(c) if c.is_acked() => confirmed += 1,
                    _ => retry.push(id),
                }
            }
        }
        todo = retry;
    }
    (published, confirmed)
}
