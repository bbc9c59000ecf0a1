//! Reads, every `queue_depth_interval`, the depth of the parking queue and of the queue that
//! catches delayed messages whose target was gone ([`UNROUTABLE_QUEUE`]) into the metrics'
//! gauges, by passive declares on a short-lived channel (a passive declare of a missing queue
//! closes its channel).

use std::sync::Arc;
use std::time::Duration;

use amqp_client::amqp_codec::ReplyCode;
use amqp_client::{Connection, QueueDeclareOptions};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::publisher::UNROUTABLE_QUEUE;

/// Messages in `queue` now, or `None` if it does not exist.
pub(crate) async fn depth(
    conn: &Connection,
    queue: &str,
) -> Result<Option<u32>, amqp_client::Error> {
    let channel = conn.open_channel().await?;
    let passive = QueueDeclareOptions::default().with_passive();
    match channel.queue_declare(queue, passive).await {
        Ok(ok) => {
            let _ = channel.close().await;
            Ok(Some(ok.message_count))
        }
        Err(e) if e.reply_code() == Some(ReplyCode::NOT_FOUND) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Refreshes the gauges until `stop` is cancelled or the connection ends for good (while the
/// client recovers it, a round fails or waits, and the next one tries again).
pub(crate) async fn refresh(
    conn: Connection,
    metrics: Arc<Metrics>,
    parking: String,
    every: Duration,
    stop: CancellationToken,
) {
    loop {
        let round = async {
            if let Some(n) = depth(&conn, &parking).await? {
                metrics.set_parked_depth(n);
            }
            // Absent until the first delayed send declares it: nothing caught yet.
            let n = depth(&conn, UNROUTABLE_QUEUE).await?.unwrap_or(0);
            metrics.set_unroutable_depth(n);
            Ok::<(), amqp_client::Error>(())
        };
        let result = tokio::select! {
            r = round => r,
            () = stop.cancelled() => return,
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, "reading queue depths failed");
            if e.is_connection_error() && !e.is_recoverable() {
                return;
            }
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = stop.cancelled() => return,
        }
    }
}
