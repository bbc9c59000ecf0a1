//! The worker's cost per task against the broker at `AMQP_URL`, side by side with the raw
//! client consuming the same queue at the same prefetch, in one run.
//!
//! Both rows start from the same input: the worker's topology declared
//! (`amqp_worker::topology::declare`: work queue, delay queues, parking queue), the work queue
//! pre-filled with `--tasks` persistent tasks, unmeasured, of one `--shape` (`shape.rs`):
//! `minimal` (`task_properties`, a 7-byte body) or `rich` (1 KiB, on its second attempt, with
//! application, retry and `x-death` headers for the worker to read).
//! Then, each in a fresh child process (so that CPU from getrusage, allocations from the
//! counting allocator and peak RSS are that row's alone):
//!
//! * `worker`: an `amqp_worker::Worker` with a handler that does nothing but count, retries
//!   and confirms as configured by default (its confirm-mode publisher open, retry tiers
//!   declared), `--concurrency` handlers at once, `--prefetch`; measured from `run()` until
//!   every task succeeded (handled and acked);
//! * `raw`: the client alone: basic.qos `--prefetch`, basic.consume, every delivery acked
//!   singly as it arrives: the ceiling the worker is held to (target: at least 80% of its
//!   tasks/s, at most 2 µs CPU per task).
//!
//! ```sh
//! cargo run --release -p amqp-benches --example worker -- --tasks 50000 --rounds 3 --json target/worker-bench.json --svg target/charts
//! # one child by hand, e.g. under perf (fill first):
//! target/release/examples/worker --fill q1 --tasks 50000
//! perf record -g target/release/examples/worker --child worker --queue q1 --tasks 50000
//! target/release/examples/worker --teardown q1
//! ```

// Printing the table is this tool's job.
#![allow(clippy::print_stdout)]

// The measurement helpers of the clients bench (getrusage, the counting allocator); this
// tool uses only some of them.
#[allow(dead_code)]
#[path = "../clients/measure.rs"]
mod measure;
mod shape;
#[allow(dead_code)]
#[path = "../../shared/svg.rs"]
mod svg;

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use amqp_client::{Connection, ConsumeOptions, PublishOptions, QosOptions};
use amqp_test_support::alloc_counter::{self, CountingAllocator};
use amqp_worker::{Handler, HandlerError, Metrics, Task, Worker, WorkerConfig};
use clap::{Parser, ValueEnum};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::measure::{BoxError, Meter, Phase, RuntimeKind};
use crate::shape::Shape;

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// The two rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Row {
    /// The worker library, no-op handler.
    Worker,
    /// The raw client, consume and ack.
    Raw,
}

impl Row {
    /// The name in the table.
    fn name(self) -> &'static str {
        match self {
            Self::Worker => "worker",
            Self::Raw => "raw client",
        }
    }

    /// The name on the command line.
    fn arg(self) -> &'static str {
        match self {
            Self::Worker => "worker",
            Self::Raw => "raw",
        }
    }
}

/// Command line.
#[derive(Debug, Parser)]
#[command(about = "The worker's cost per task, side by side with the raw client")]
struct Args {
    /// Tasks per run.
    #[arg(long, default_value_t = 50_000)]
    tasks: u64,
    /// Handlers at once (`WorkerConfig::concurrency`).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// basic.qos prefetch, the same for both rows (`WorkerConfig::prefetch`).
    #[arg(long, default_value_t = 64)]
    prefetch: u16,
    /// What each task looks like (`--fill` and the parent's runs).
    #[arg(long, value_enum, default_value_t = Shape::Minimal)]
    shape: Shape,
    /// Rounds; both rows run once per round, alternating which goes first.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Runtime of the measured process.
    #[arg(long, value_enum, default_value_t = RuntimeKind::Multi)]
    runtime: RuntimeKind,
    /// Worker threads of the multi-threaded runtime.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Where to write the JSON report.
    #[arg(long, default_value = "target/worker-bench.json")]
    json: PathBuf,
    /// Where to draw the SVG charts (none if absent).
    #[arg(long)]
    svg: Option<PathBuf>,
    /// Pause between runs, ms.
    #[arg(long, default_value_t = 500)]
    pause_ms: u64,
    /// Internal (or by hand, under a profiler): run one row on `--queue` and print JSON.
    #[arg(long, value_enum)]
    child: Option<Row>,
    /// The (pre-filled) work queue of a child run.
    #[arg(long)]
    queue: Option<String>,
    /// Declares the worker topology for this queue, fills it with `--tasks` tasks and exits.
    #[arg(long, value_name = "QUEUE")]
    fill: Option<String>,
    /// Deletes the worker topology of this queue (after runs by hand) and exits.
    #[arg(long, value_name = "QUEUE")]
    teardown: Option<String>,
}

/// One measured run.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RunResult {
    /// `worker` or `raw client`.
    row: String,
    /// Round, 0-based.
    round: u32,
    /// Tasks.
    tasks: u64,
    /// Tasks per second.
    tasks_per_s: f64,
    /// CPU µs per task (user + system, all threads).
    cpu_us_per_task: f64,
    /// Voluntary context switches per task.
    wakeups_per_task: f64,
    /// Heap allocations per task.
    allocs_per_task: f64,
    /// Heap bytes per task.
    alloc_bytes_per_task: f64,
    /// Peak RSS, MiB.
    peak_rss_mib: f64,
}

impl RunResult {
    /// From a measured phase.
    fn new(row: Row, tasks: u64, phase: Phase) -> Self {
        let n = tasks.max(1) as f64;
        Self {
            row: row.name().to_owned(),
            round: 0,
            tasks,
            tasks_per_s: n / phase.wall.as_secs_f64().max(1e-9),
            cpu_us_per_task: phase.cpu.as_secs_f64() * 1e6 / n,
            wakeups_per_task: phase.wakeups as f64 / n,
            allocs_per_task: phase.allocations as f64 / n,
            alloc_bytes_per_task: phase.alloc_bytes as f64 / n,
            peak_rss_mib: measure::peak_rss_kib() as f64 / 1024.0,
        }
    }
}

/// A handler that does nothing but count, and says when the last task arrived.
struct Nothing {
    /// Tasks handled.
    count: AtomicU64,
    /// Tasks expected.
    total: u64,
    /// Woken at the last.
    done: Arc<Notify>,
}

impl Handler for Nothing {
    async fn handle(&self, _task: &Task) -> Result<(), HandlerError> {
        if self.count.fetch_add(1, Ordering::Relaxed) + 1 == self.total {
            self.done.notify_one();
        }
        Ok(())
    }
}

/// The worker's settings for `queue`, the same for every row.
fn config(args: &Args, url: &str, queue: &str) -> WorkerConfig {
    let mut config = WorkerConfig::new(queue);
    config.url = url.to_owned();
    config.concurrency = args.concurrency;
    config.prefetch = args.prefetch;
    config
}

/// Declares the worker's topology for `queue` and publishes `n` persistent tasks of
/// `--shape` to it with confirms, at most 1 000 unconfirmed.
async fn fill(args: &Args, url: &str, queue: &str, n: u64) -> Result<(), BoxError> {
    let conn = Connection::connect(url).await?;
    let ch = conn.open_channel().await?;
    let config = config(args, url, queue);
    amqp_worker::topology::declare(&ch, &config).await?;
    ch.confirm_select().await?;
    let body = args.shape.body();
    let mut pending = std::collections::VecDeque::new();
    for i in 0..n {
        let props = args.shape.properties(&config, i)?;
        pending.push_back(
            ch.basic_publish("", queue, PublishOptions::default(), &props, body.clone())
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
    conn.close().await?;
    Ok(())
}

/// Deletes the worker's topology for `queue`.
async fn teardown(args: &Args, url: &str, queue: &str) -> Result<(), BoxError> {
    let conn = Connection::connect(url).await?;
    amqp_worker::topology::delete(&conn, &config(args, url, queue)).await?;
    conn.close().await?;
    Ok(())
}

/// The worker row: from `run()` until every task was handled and acked.
async fn run_worker(args: &Args, url: &str, queue: &str) -> Result<Phase, BoxError> {
    let done = Arc::new(Notify::new());
    let handler = Nothing {
        count: AtomicU64::new(0),
        total: args.tasks,
        done: done.clone(),
    };
    let metrics = Arc::new(Metrics::new());
    let worker = Worker::new(config(args, url, queue), handler)?.with_metrics(metrics.clone());
    let shutdown = worker.shutdown();
    let meter = Meter::start();
    let running = tokio::spawn(worker.run());
    tokio::time::timeout(Duration::from_secs(300), done.notified())
        .await
        .map_err(|_| format!("stalled at {:?}", metrics.snapshot()))?;
    // The last task reached its handler; the others may still be settling. Until every ack
    // was handed to the client, look every millisecond: a `yield_now` loop here spun a core
    // and its lock on the client's counts into the measured phase (under callgrind, with
    // 1 KiB tasks, 70% of the instructions).
    let limit = tokio::time::Instant::now() + Duration::from_secs(10);
    while metrics.client_stats().acked < args.tasks {
        if tokio::time::Instant::now() > limit {
            return Err(format!("not all acked: {:?}", metrics.snapshot()).into());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let phase = meter.stop();
    shutdown.trigger();
    running.await??;
    Ok(phase)
}

/// The raw row: consume with the same prefetch, ack each delivery singly.
async fn run_raw(args: &Args, url: &str, queue: &str) -> Result<Phase, BoxError> {
    let conn = Connection::connect(url).await?;
    let ch = conn.open_channel().await?;
    let meter = Meter::start();
    ch.basic_qos(args.prefetch, QosOptions::default()).await?;
    let mut consumer = ch.basic_consume(queue, ConsumeOptions::default()).await?;
    for _ in 0..args.tasks {
        let delivery = consumer.recv().await.ok_or("consumer ended early")??;
        delivery.ack()?;
    }
    let phase = meter.stop();
    drop(consumer);
    conn.close().await?;
    Ok(phase)
}

/// Child mode: one row on a pre-filled queue, the result as one JSON line.
fn child(args: &Args, row: Row) -> Result<(), BoxError> {
    let queue = args.queue.clone().ok_or("--child needs --queue")?;
    let url = amqp_test_support::broker_url();
    alloc_counter::enable_process_counting(true);
    let rt = args.runtime.build(Some(args.threads))?;
    let phase = rt.block_on(async {
        match row {
            Row::Worker => run_worker(args, &url, &queue).await,
            Row::Raw => run_raw(args, &url, &queue).await,
        }
    })?;
    rt.shutdown_timeout(Duration::from_secs(1));
    println!(
        "{}",
        serde_json::to_string(&RunResult::new(row, args.tasks, phase))?
    );
    Ok(())
}

/// Runs one child and parses its line.
fn spawn_child(args: &Args, row: Row, queue: &str) -> Result<RunResult, BoxError> {
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.args(["--child", row.arg(), "--queue", queue])
        .args(["--tasks", &args.tasks.to_string()])
        .args(["--concurrency", &args.concurrency.to_string()])
        .args(["--prefetch", &args.prefetch.to_string()])
        .args(["--threads", &args.threads.to_string()])
        .args(["--runtime", args.runtime.name()]);
    measure::run_child(&mut cmd)
}

/// One figure of a run.
type Field = fn(&RunResult) -> f64;

/// Median, min and max.
fn spread(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return (0.0, 0.0, 0.0);
    }
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    (median, v[0], v[n - 1])
}

/// The median of `field` over a row's runs.
fn median_of(runs: &[RunResult], row: Row, field: Field) -> f64 {
    spread(
        runs.iter()
            .filter(|r| r.row == row.name())
            .map(field)
            .collect(),
    )
    .0
}

/// Parent mode: every round, both rows (alternating first), each on a freshly filled queue.
fn parent(args: &Args) -> Result<(), BoxError> {
    let url = amqp_test_support::broker_url();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut runs = Vec::new();
    for round in 0..args.rounds {
        let rows = if round % 2 == 0 {
            [Row::Worker, Row::Raw]
        } else {
            [Row::Raw, Row::Worker]
        };
        for row in rows {
            let queue = amqp_test_support::unique_name(&format!("worker-bench-{}", row.arg()));
            rt.block_on(fill(args, &url, &queue, args.tasks))?;
            let outcome = spawn_child(args, row, &queue);
            if let Err(err) = rt.block_on(teardown(args, &url, &queue)) {
                eprintln!("cleanup of {queue} failed: {err}");
            }
            let mut run = outcome?;
            run.round = round;
            eprintln!(
                "round {}/{} {:<10} {:>8.0} tasks/s {:>6.2} µs CPU/task {:>6.3} wake-ups/task {:>5.1} allocs/task {:>6.0} B/task {:>5.1} MiB",
                round + 1,
                args.rounds,
                run.row,
                run.tasks_per_s,
                run.cpu_us_per_task,
                run.wakeups_per_task,
                run.allocs_per_task,
                run.alloc_bytes_per_task,
                run.peak_rss_mib
            );
            runs.push(run);
            std::thread::sleep(Duration::from_millis(args.pause_ms));
        }
    }
    println!(
        "{} persistent tasks of {}, prefetch {} for both rows, worker concurrency {}, {} runtime{}; \
         median (min–max) of {} round(s)\n",
        args.tasks,
        args.shape.describe(),
        args.prefetch,
        args.concurrency,
        args.runtime.describe(),
        if args.runtime == RuntimeKind::Multi {
            format!(" ({} threads)", args.threads)
        } else {
            String::new()
        },
        args.rounds
    );
    println!(
        "| row | tasks/s | CPU µs/task | wake-ups/task | allocs/task | heap B/task | peak RSS MiB |\n\
         |---|---:|---:|---:|---:|---:|---:|"
    );
    let fields: [(Field, usize); 6] = [
        (|r| r.tasks_per_s, 0),
        (|r| r.cpu_us_per_task, 2),
        (|r| r.wakeups_per_task, 3),
        (|r| r.allocs_per_task, 1),
        (|r| r.alloc_bytes_per_task, 0),
        (|r| r.peak_rss_mib, 1),
    ];
    for row in [Row::Worker, Row::Raw] {
        let mut line = format!("| {} |", row.name());
        for (field, d) in fields {
            let (m, lo, hi) = spread(
                runs.iter()
                    .filter(|r| r.row == row.name())
                    .map(field)
                    .collect(),
            );
            line.push_str(&format!(" {m:.d$} ({lo:.d$}–{hi:.d$}) |"));
        }
        println!("{line}");
    }
    let w_rate = median_of(&runs, Row::Worker, |r| r.tasks_per_s);
    let r_rate = median_of(&runs, Row::Raw, |r| r.tasks_per_s);
    let w_cpu = median_of(&runs, Row::Worker, |r| r.cpu_us_per_task);
    let r_cpu = median_of(&runs, Row::Raw, |r| r.cpu_us_per_task);
    let throughput_ratio = w_rate / r_rate.max(1e-9);
    // Negative when the worker spends less than the raw loop (its acks coalesce more).
    let own = w_cpu - r_cpu;
    let own = if own >= 0.0 {
        format!("{own:.2} µs/task above the client's")
    } else {
        format!("{:.2} µs/task below the client's", -own)
    };
    println!(
        "\n- worker ÷ raw client: {:.2}× the tasks/s (target ≥ 0.80: {}), {:.2}× the CPU per task; \
         worker CPU {:.2} µs/task (target ≤ 2: {}); the worker's own cost {own}",
        throughput_ratio,
        if throughput_ratio >= 0.8 {
            "met"
        } else {
            "not met"
        },
        w_cpu / r_cpu.max(1e-9),
        w_cpu,
        if w_cpu <= 2.0 { "met" } else { "not met" },
    );
    if let Some(dir) = &args.json.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let report = serde_json::json!({
        "tasks": args.tasks,
        "shape": args.shape.name(),
        "prefetch": args.prefetch,
        "concurrency": args.concurrency,
        "runtime": args.runtime.name(),
        "threads": args.threads,
        "rounds": args.rounds,
        "runs": runs,
        "ratio_tasks_per_s": throughput_ratio,
        "ratio_cpu_per_task": w_cpu / r_cpu.max(1e-9),
    });
    std::fs::write(&args.json, serde_json::to_string_pretty(&report)?)?;
    eprintln!("JSON written to {}", args.json.display());
    if let Some(dir) = &args.svg {
        let cats = vec!["worker".to_owned(), "raw client".to_owned()];
        svg::write(
            dir,
            "worker-tasks.svg",
            &svg::bar_chart(
                "Tasks per second: worker (no-op handler) and raw client, same prefetch",
                "tasks per second",
                &cats,
                &[svg::Series::bars(
                    "tasks/s",
                    vec![Some(w_rate), Some(r_rate)],
                )],
            ),
        )?;
        svg::write(
            dir,
            "worker-cpu.svg",
            &svg::bar_chart(
                "CPU per task: worker (no-op handler) and raw client",
                "CPU µs per task",
                &cats,
                &[svg::Series::bars(
                    "CPU µs/task",
                    vec![Some(w_cpu), Some(r_cpu)],
                )],
            ),
        )?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let outcome = if let Some(row) = args.child {
        child(&args, row)
    } else if let Some(queue) = &args.fill {
        let url = amqp_test_support::broker_url();
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(BoxError::from)
            .and_then(|rt| rt.block_on(fill(&args, &url, queue, args.tasks)))
    } else if let Some(queue) = &args.teardown {
        let url = amqp_test_support::broker_url();
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(BoxError::from)
            .and_then(|rt| rt.block_on(teardown(&args, &url, queue)))
    } else {
        parent(&args)
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}
