//! Our client side by side with lapin and amqprs, against the broker at `AMQP_URL`.
//!
//! ```sh
//! cargo run --release -p amqp-benches --example clients -- --messages 100000 --rounds 3
//! cargo run --release -p amqp-benches --example clients -- --flat-memory 1000000
//! # one measured run by hand, e.g. under a profiler (`consume` needs the queue filled first):
//! target/release/examples/clients --fill q1 --messages 20000
//! target/release/examples/clients --child ours consume --queue q1 --messages 20000
//! ```
//!
//! Workloads (the same definitions for every client, so they compare):
//! * `publish`: N persistent messages to a fresh durable queue, at most `--window` unconfirmed,
//!   measured until all are confirmed;
//! * `consume`: the queue pre-filled with N (by this process with our client, not measured),
//!   consumed with `--prefetch`, each delivery acked singly (or `--ack-batch`);
//! * `both`: publish and consume at once on one connection (two channels), until N consumed;
//! * `latency`: publish at `--rate` msg/s for `--latency-ms`, consume at once; the body
//!   carries the publish time, the consumer reports p50 and p99 of publish-to-consume.
//!
//! Every measured run is a fresh child process (this binary with `--child CLIENT WORKLOAD`), so
//! its peak RSS, CPU (getrusage, all threads, measured phase only) and heap allocations (a
//! process-wide counting allocator) belong to that client and workload alone. The parent
//! alternates the clients within each round (rotating who goes first), then prints the median
//! and min–max spread per client and workload as a markdown table with the ratios against the
//! best peer, and writes everything as JSON (`--json`).
//!
//! `--flat-memory N` instead runs our client's `both` workload over N messages in this process
//! and prints RSS every `--sample-every` messages: memory must stay flat.

// Printing the table is this tool's job.
#![allow(clippy::print_stdout)]

mod amqprs;
mod lapin;
mod measure;
mod ours;
mod report;

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Duration;

use amqp_test_support::alloc_counter::{self, CountingAllocator};
use clap::{Parser, ValueEnum};

use crate::measure::{BoxError, Params, RunResult};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// The clients compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Client {
    /// amqp-client, this workspace's.
    Ours,
    /// lapin 4.
    Lapin,
    /// amqprs 2.
    Amqprs,
}

impl Client {
    /// The name on the command line and in the table.
    fn name(self) -> &'static str {
        match self {
            Self::Ours => "ours",
            Self::Lapin => "lapin",
            Self::Amqprs => "amqprs",
        }
    }
}

/// The workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Workload {
    /// Publish with confirms.
    Publish,
    /// Consume a pre-filled queue with manual acks.
    Consume,
    /// Publish and consume at once on one connection.
    Both,
    /// Publish-to-consume latency at a fixed rate.
    Latency,
}

impl Workload {
    /// The name on the command line and in the table.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Publish => "publish",
            Self::Consume => "consume",
            Self::Both => "both",
            Self::Latency => "latency",
        }
    }
}

/// Which tokio runtime the child runs its client on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum RuntimeKind {
    /// One thread (lapin still adds its own I/O thread).
    Current,
    /// Tokio's multi-threaded runtime, one worker per core.
    Multi,
}

/// Command line.
#[derive(Debug, Parser)]
#[command(about = "Our AMQP client side by side with lapin and amqprs")]
struct Args {
    /// Messages per run.
    #[arg(long, default_value_t = 100_000)]
    messages: u64,
    /// Body size in bytes.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Most unconfirmed publishes in flight.
    #[arg(long, default_value_t = 1000)]
    window: usize,
    /// Consumer prefetch (basic.qos).
    #[arg(long, default_value_t = 1000)]
    prefetch: u16,
    /// 1: ack every delivery singly; k: ack-multiple every k deliveries.
    #[arg(long, default_value_t = 1)]
    ack_batch: u64,
    /// Rounds; every client runs every workload once per round.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Clients to compare, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "ours,lapin,amqprs"
    )]
    clients: Vec<Client>,
    /// Workloads, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "publish,consume,both,latency"
    )]
    workloads: Vec<Workload>,
    /// Where to write the JSON report.
    #[arg(long, default_value = "target/clients-bench.json")]
    json: PathBuf,
    /// Publish rate of the latency workload, msg/s.
    #[arg(long, default_value_t = 5000)]
    rate: u64,
    /// How long the latency workload publishes, ms.
    #[arg(long, default_value_t = 3000)]
    latency_ms: u64,
    /// Tokio runtime of the measured process.
    #[arg(long, value_enum, default_value_t = RuntimeKind::Current)]
    runtime: RuntimeKind,
    /// Pause between runs, ms, so that the broker settles (queue deletion, fsync).
    #[arg(long, default_value_t = 500)]
    pause_ms: u64,
    /// Our client with read batching off (`ConnectionConfig::read_batching(None)`).
    #[arg(long)]
    eager_reads: bool,
    /// Do not count allocations (the count costs one atomic add per allocation).
    #[arg(long)]
    no_alloc_count: bool,
    /// Flat-memory mode: run our client's publish-and-consume workload over this many
    /// messages and print RSS along the way.
    #[arg(long, value_name = "MESSAGES")]
    flat_memory: Option<u64>,
    /// Flat-memory mode: sample RSS every this many consumed messages.
    #[arg(long, default_value_t = 100_000)]
    sample_every: u64,
    /// Internal: run one client and workload in this process and print its result as JSON.
    #[arg(long, num_args = 2, value_names = ["CLIENT", "WORKLOAD"], hide = true)]
    child: Option<Vec<String>>,
    /// Internal: the queue of a child run.
    #[arg(long, hide = true)]
    queue: Option<String>,
    /// Pre-fills this durable queue with `--messages` confirmed messages and exits: the input
    /// of a `--child CLIENT consume --queue QUEUE` run started by hand, e.g. under a profiler.
    #[arg(long, value_name = "QUEUE")]
    fill: Option<String>,
    /// Internal: the round of a child run.
    #[arg(long, hide = true, default_value_t = 0)]
    round: u32,
}

impl Args {
    /// The workload parameters, clamped to sensible minimums.
    fn params(&self) -> Params {
        Params {
            messages: self.messages,
            size: self.size,
            window: self.window.max(1),
            prefetch: self.prefetch,
            ack_batch: self.ack_batch.max(1),
            rate: self.rate.max(1),
            latency_ms: self.latency_ms,
            eager_reads: self.eager_reads,
        }
    }
}

/// A tokio runtime of the requested kind.
fn runtime(kind: RuntimeKind) -> std::io::Result<tokio::runtime::Runtime> {
    match kind {
        RuntimeKind::Current => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        RuntimeKind::Multi => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
    }
}

/// Child mode: runs `client` on `workload` and prints its result as one JSON line.
fn child(args: &Args, names: &[String]) -> Result<(), BoxError> {
    let [client, workload] = names else {
        return Err("--child takes CLIENT WORKLOAD".into());
    };
    let client = Client::from_str(client, true)?;
    let workload = Workload::from_str(workload, true)?;
    let queue = args.queue.clone().ok_or("--child needs --queue")?;
    alloc_counter::enable_process_counting(!args.no_alloc_count);
    let params = args.params();
    let url = amqp_test_support::broker_url();
    let rt = runtime(args.runtime)?;
    let mut result = rt.block_on(async {
        match client {
            Client::Ours => ours::run(workload, &params, &url, &queue).await,
            Client::Lapin => lapin::run(workload, &params, &url, &queue).await,
            Client::Amqprs => amqprs::run(workload, &params, &url, &queue).await,
        }
    })?;
    // Drop the runtime (and lapin's I/O thread with the connection) before reporting.
    rt.shutdown_timeout(Duration::from_secs(1));
    result.round = args.round;
    println!("{}", serde_json::to_string(&result)?);
    Ok(())
}

/// Runs one child process and parses its result.
fn spawn_child(
    args: &Args,
    client: Client,
    workload: Workload,
    round: u32,
    queue: &str,
) -> Result<RunResult, BoxError> {
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.arg("--child")
        .args([client.name(), workload.name()])
        .args(["--queue", queue, "--round", &round.to_string()])
        .args(["--messages", &args.messages.to_string()])
        .args(["--size", &args.size.to_string()])
        .args(["--window", &args.window.to_string()])
        .args(["--prefetch", &args.prefetch.to_string()])
        .args(["--ack-batch", &args.ack_batch.to_string()])
        .args(["--rate", &args.rate.to_string()])
        .args(["--latency-ms", &args.latency_ms.to_string()])
        .args(["--runtime", runtime_name(args.runtime)]);
    if args.no_alloc_count {
        cmd.arg("--no-alloc-count");
    }
    if args.eager_reads {
        cmd.arg("--eager-reads");
    }
    let output = cmd.stderr(std::process::Stdio::inherit()).output()?;
    if !output.status.success() {
        return Err(format!("child exited with {}", output.status).into());
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .ok_or("child printed no result")?;
    Ok(serde_json::from_str(line)?)
}

/// The command-line name of a runtime kind.
fn runtime_name(kind: RuntimeKind) -> &'static str {
    match kind {
        RuntimeKind::Current => "current",
        RuntimeKind::Multi => "multi",
    }
}

/// Parent mode: every round, every workload, every client (rotating who goes first); then the
/// table and the JSON.
fn parent(args: &Args) -> Result<(), BoxError> {
    let params = args.params();
    let url = amqp_test_support::broker_url();
    let rt = runtime(RuntimeKind::Current)?;
    let mut runs = Vec::new();
    let mut failures = 0;
    for round in 0..args.rounds {
        for &workload in &args.workloads {
            let n = args.clients.len();
            for i in 0..n {
                let client = args.clients[(i + round as usize) % n];
                let queue = amqp_test_support::unique_name(&format!(
                    "clients-bench-{}-{}",
                    client.name(),
                    workload.name()
                ));
                if workload == Workload::Consume {
                    rt.block_on(ours::fill(&url, &queue, &params))?;
                }
                match spawn_child(args, client, workload, round, &queue) {
                    Ok(run) => {
                        eprintln!(
                            "round {}/{} {:<8} {:<7} {:>9.0} msg/s {:>7.2} µs CPU/msg {:>6.3} wake-ups/msg {:>6.1} allocs/msg {:>6.1} MiB{}",
                            round + 1,
                            args.rounds,
                            workload.name(),
                            client.name(),
                            run.msgs_per_s,
                            run.cpu_us_per_msg,
                            run.wakeups_per_msg,
                            run.allocs_per_msg,
                            run.peak_rss_mib,
                            run.latency_p99_us.map_or(String::new(), |p99| format!(
                                " p50 {:.0} µs p99 {p99:.0} µs",
                                run.latency_p50_us.unwrap_or(0.0)
                            )),
                        );
                        runs.push(run);
                    }
                    Err(err) => {
                        failures += 1;
                        eprintln!("{} {}: run failed: {err}", client.name(), workload.name());
                        if let Err(err) = rt.block_on(ours::delete_queue(&url, &queue)) {
                            eprintln!("cleanup of {queue} failed: {err}");
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(args.pause_ms));
            }
        }
    }
    let workloads: Vec<&str> = args.workloads.iter().map(|w| w.name()).collect();
    let clients: Vec<&str> = args.clients.iter().map(|c| c.name()).collect();
    let summaries = report::summarise(&runs, &workloads, &clients);
    println!("{}", report::render(&summaries, &params, args.rounds));
    let settings = serde_json::json!({
        "runtime": runtime_name(args.runtime),
        "alloc_count": !args.no_alloc_count,
        "pause_ms": args.pause_ms,
        "clients": clients,
        "workloads": workloads,
    });
    report::write_json(
        &args.json,
        &params,
        &settings,
        args.rounds,
        &runs,
        &summaries,
    )
    .map_err(|err| format!("writing {}: {err}", args.json.display()))?;
    eprintln!("JSON written to {}", args.json.display());
    if failures > 0 {
        return Err(format!("{failures} run(s) failed").into());
    }
    Ok(())
}

/// Flat-memory mode: our client's `both` workload over `total` messages, RSS sampled along.
fn flat_memory(args: &Args, total: u64) -> Result<(), BoxError> {
    let params = args.params();
    let url = amqp_test_support::broker_url();
    let queue = amqp_test_support::unique_name("clients-bench-flat-memory");
    let every = args.sample_every.max(1);
    let rt = runtime(args.runtime)?;
    let (run, samples) = rt.block_on(ours::flat_memory(&url, &queue, &params, total, every))?;
    println!(
        "our client, publish and consume at once, {total} messages of {} B:",
        params.size
    );
    println!("| consumed | RSS KiB | since first sample KiB |");
    println!("|---:|---:|---:|");
    let first = samples.first().map_or(0, |&(_, kib)| kib);
    for &(consumed, kib) in &samples {
        println!("| {consumed} | {kib} | {:+} |", kib as i64 - first as i64);
    }
    if let (Some(&(m0, k0)), Some(&(m1, k1))) = (samples.first(), samples.last())
        && m1 > m0
    {
        let growth = k1 as f64 - k0 as f64;
        println!(
            "growth from {m0} to {m1} messages: {growth:+.0} KiB ({:+.4} bytes per message); \
             peak RSS {:.1} MiB; {:.0} msg/s, {:.2} µs CPU/msg",
            growth * 1024.0 / (m1 - m0) as f64,
            run.peak_rss_mib,
            run.msgs_per_s,
            run.cpu_us_per_msg,
        );
    } else {
        println!("fewer than two samples: raise the message count or lower --sample-every");
    }
    Ok(())
}

/// `--fill QUEUE`: fills the queue for a consume run started by hand.
fn fill_only(args: &Args, queue: &str) -> Result<(), BoxError> {
    let url = amqp_test_support::broker_url();
    runtime(RuntimeKind::Current)?.block_on(ours::fill(&url, queue, &args.params()))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let outcome = if let Some(names) = &args.child {
        child(&args, names)
    } else if let Some(queue) = &args.fill {
        fill_only(&args, queue)
    } else if let Some(total) = args.flat_memory {
        flat_memory(&args, total)
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
