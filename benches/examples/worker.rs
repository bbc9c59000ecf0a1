//! The worker's hot path against the broker at `AMQP_URL`: a queue pre-filled with persistent
//! tasks, then an `amqp_worker::Worker` whose handler does nothing, measured from its start
//! until every task succeeded (consumed, handled, acked). What it costs per task beyond the
//! client: the concurrency permit, a task per delivery, the `Task` handed to the handler, the
//! handler timeout, metrics, the ack.
//!
//! ```sh
//! cargo run --release -p amqp-benches --example worker -- --tasks 50000 --rounds 3
//! ```

// Printing the table is this tool's job.
#![allow(clippy::print_stdout)]

// The measurement helpers of the clients bench (getrusage, the counting allocator); this
// tool uses only some of them.
#[allow(dead_code)]
#[path = "clients/measure.rs"]
mod measure;

use std::sync::Arc;
use std::time::Duration;

use amqp_client::{Connection, PublishOptions};
use amqp_test_support::alloc_counter::{self, CountingAllocator};
use amqp_worker::{Handler, HandlerError, Metrics, Task, Worker, WorkerConfig, task_properties};
use clap::Parser;

use crate::measure::{BoxError, Meter, Phase};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Command line.
#[derive(Debug, Parser)]
#[command(about = "The worker's cost per task against a live broker")]
struct Args {
    /// Tasks per round.
    #[arg(long, default_value_t = 50_000)]
    tasks: u64,
    /// Handlers at once (`WorkerConfig::concurrency`).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// basic.qos prefetch (`WorkerConfig::prefetch`).
    #[arg(long, default_value_t = 64)]
    prefetch: u16,
    /// Rounds.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Worker threads of the multi-threaded runtime (the binary's own runtime kind).
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

/// A handler that does nothing: what is measured is the worker around it.
struct Nothing;

impl Handler for Nothing {
    async fn handle(&self, _task: &Task) -> Result<(), HandlerError> {
        Ok(())
    }
}

/// Publishes `n` persistent tasks to `queue` with confirms, at most 1 000 unconfirmed.
async fn fill(conn: &Connection, queue: &str, n: u64) -> Result<(), BoxError> {
    let ch = conn.open_channel().await?;
    ch.confirm_select().await?;
    let mut pending = std::collections::VecDeque::new();
    for i in 0..n {
        let props = task_properties(&format!("task-{i}"));
        pending.push_back(
            ch.basic_publish("", queue, PublishOptions::default(), &props, "payload")
                .await?,
        );
        if pending.len() >= 1000
            && let Some(confirm) = pending.pop_front()
        {
            confirm.await?;
        }
    }
    for confirm in pending {
        confirm.await?;
    }
    ch.close().await?;
    Ok(())
}

/// One round: declare, fill, run the worker until every task succeeded, tear down.
async fn round(args: &Args, url: &str, n: u32) -> Result<Phase, BoxError> {
    let queue = format!("bench-worker-{}-{n}", std::process::id());
    let mut config = WorkerConfig::new(&queue);
    config.url = url.to_owned();
    config.concurrency = args.concurrency;
    config.prefetch = args.prefetch;
    let conn = Connection::connect(url).await?;
    let ch = conn.open_channel().await?;
    amqp_worker::topology::declare(&ch, &config).await?;
    fill(&conn, &queue, args.tasks).await?;
    let metrics = Arc::new(Metrics::new());
    let worker = Worker::new(config.clone(), Nothing)?.with_metrics(metrics.clone());
    let shutdown = worker.shutdown();
    let meter = Meter::start();
    let running = tokio::spawn(worker.run());
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    let limit = tokio::time::Instant::now() + Duration::from_secs(120);
    while metrics.snapshot().succeeded < args.tasks {
        if tokio::time::Instant::now() > limit || running.is_finished() {
            return Err(format!("stalled at {:?}", metrics.snapshot()).into());
        }
        tick.tick().await;
    }
    let phase = meter.stop();
    shutdown.trigger();
    running.await??;
    amqp_worker::topology::delete(&conn, &config).await?;
    conn.close().await?;
    Ok(phase)
}

fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    let url = std::env::var("AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    alloc_counter::enable_process_counting(true);
    let n = args.tasks.max(1) as f64;
    let mut rows = Vec::new();
    for r in 0..args.rounds {
        let phase = rt.block_on(round(&args, &url, r))?;
        let row = [
            n / phase.wall.as_secs_f64(),
            phase.cpu.as_secs_f64() * 1e6 / n,
            phase.wakeups as f64 / n,
            phase.allocations as f64 / n,
        ];
        eprintln!(
            "round {}/{}: {:.0} tasks/s, {:.2} µs CPU/task, {:.3} wake-ups/task, {:.1} allocs/task",
            r + 1,
            args.rounds,
            row[0],
            row[1],
            row[2],
            row[3]
        );
        rows.push(row);
    }
    let median = |i: usize| {
        let mut v: Vec<f64> = rows.iter().map(|row| row[i]).collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    println!(
        "{} tasks, concurrency {}, prefetch {}, {} worker threads; median of {} rounds\n",
        args.tasks, args.concurrency, args.prefetch, args.threads, args.rounds
    );
    println!("| tasks/s | CPU µs/task | wake-ups/task | allocs/task |\n|---:|---:|---:|---:|");
    println!(
        "| {:.0} | {:.2} | {:.3} | {:.1} |",
        median(0),
        median(1),
        median(2),
        median(3)
    );
    Ok(())
}
