//! The built-in server (`benches/shared/server/`) speaks AMQP 0-9-1 well enough for the three
//! clients, unchanged, to do what the benches make them do: each one publishes with confirms,
//! consumes with acks, and both at once, with the bench's own client code
//! (`examples/clients/{ours,lapin,amqprs}.rs`), and the server counts every message published,
//! delivered and acked. No RabbitMQ needed.

// The bench modules are shared with the example; this test uses some of their helpers only.
#![allow(dead_code, unreachable_pub, missing_docs)]

#[path = "../examples/clients/amqprs.rs"]
mod amqprs;
#[path = "../examples/clients/lapin.rs"]
mod lapin;
#[path = "../examples/clients/measure.rs"]
mod measure;
#[path = "../examples/clients/ours.rs"]
mod ours;
#[path = "../shared/server/mod.rs"]
mod server;

use crate::measure::{BoxError, Params, RunOutcome};

/// The workloads, as the clients bench names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Workload {
    Publish,
    Consume,
    Both,
    Latency,
}

impl Workload {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Publish => "publish",
            Self::Consume => "consume",
            Self::Both => "both",
            Self::Latency => "latency",
        }
    }
}

fn params(size: usize, messages: u64) -> Params {
    Params {
        messages,
        size,
        window: 100,
        prefetch: 50,
        ack_batch: 1,
        rate: 1000,
        latency_ms: 100,
        eager_reads: false,
        coalesce_acks: true,
        outbound_high_water: None,
    }
}

async fn run(client: &str, workload: Workload, p: &Params, url: &str, q: &str) -> RunOutcome {
    match client {
        "ours" => ours::run(workload, p, url, q).await,
        "lapin" => lapin::run(workload, p, url, q).await,
        _ => amqprs::run(workload, p, url, q).await,
    }
}

/// Each client publishes with confirms, consumes with acks and does both at once against the
/// server; the server's counts agree with what the clients say they did.
async fn every_client_publishes_and_consumes(size: usize, messages: u64) -> Result<(), BoxError> {
    let broker = server::Broker::new();
    let port = server::start(broker.clone(), 0).await?;
    let url = format!("amqp://guest:guest@127.0.0.1:{port}/%2f");
    let p = params(size, messages);
    for client in ["ours", "lapin", "amqprs"] {
        for workload in [Workload::Publish, Workload::Consume, Workload::Both] {
            let queue = format!("ceiling-test-{client}-{}", workload.name());
            if workload == Workload::Consume {
                ours::fill(&url, &queue, &p).await?;
                assert_eq!(broker.queue_len(&queue), Some(messages as usize));
            }
            let before = broker.stats();
            let result = tokio::time::timeout(
                std::time::Duration::from_secs(60),
                run(client, workload, &p, &url, &queue),
            )
            .await
            .map_err(|_| format!("{client} {} timed out", workload.name()))??;
            let d = broker.stats().since(before);
            let what = format!("{client} {} {size} B: {d:?}", workload.name());
            assert_eq!(result.messages, messages, "{what}");
            if workload != Workload::Consume {
                assert_eq!(d.publishes, messages, "{what}");
                assert!(d.confirm_frames >= 1, "{what}");
            }
            if workload != Workload::Publish {
                assert_eq!(d.deliveries, messages, "{what}");
                assert_eq!(d.acked, messages, "every delivery acked: {what}");
                assert!(d.ack_frames >= 1, "{what}");
            }
            assert_eq!(
                broker.queue_len(&queue),
                None,
                "the run deleted its queue: {what}"
            );
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_bodies() -> Result<(), BoxError> {
    every_client_publishes_and_consumes(64, 2_000).await
}

/// Bodies of several frames (frame-max 131 072).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_of_several_frames() -> Result<(), BoxError> {
    every_client_publishes_and_consumes(300_000, 40).await
}
