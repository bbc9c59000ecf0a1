//! Our client side by side with lapin and amqprs, against the broker at `AMQP_URL` or against
//! the built-in in-memory server (`--broker builtin`: the ceiling without RabbitMQ).
//!
//! ```sh
//! # the issue's workloads, both runtimes, three rounds:
//! cargo run --release -p amqp-benches --example clients -- --messages 100000 --rounds 3
//! # body sizes from 64 B to 16 MiB, one table per size, MB/s and body copies per message:
//! cargo run --release -p amqp-benches --example clients -- --body-sizes 64,4096,65536,1048576,16777216 \
//!     --workloads publish,consume,both --messages 20000 --rounds 1 --json target/sizes.json --svg target/charts
//! # the ceiling: the same clients against the in-memory server of benches/shared/server/:
//! cargo run --release -p amqp-benches --example clients -- --broker builtin --workloads publish,consume,both
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
//! process-wide counting allocator) belong to that client and workload alone; with
//! `--broker builtin` the server runs in this (the parent) process, so its CPU is never the
//! client's. The parent alternates the clients within each round (rotating who goes first),
//! runs every workload on each `--runtime` (`mt`: tokio's multi-threaded runtime, what
//! `#[tokio::main]` gives; `ct`: current thread) and each `--body-sizes` size, then prints the
//! median and min–max spread per size, runtime, workload and client as markdown tables with
//! the ratios against the best peer, writes everything as JSON (`--json`) and draws the SVG
//! charts (`--svg DIR`).
//!
//! Rows: `ours`, `lapin`, `amqprs`, and `ours-nocoalesce`: our client with acks of
//! consecutive deliveries sent one frame each (`ConnectionConfigBuilder::coalesce_acks(false)`)
//! instead of coalesced into multiple acks, so the broker receives as many ack frames from it
//! as from the peers.
//!
//! `--flat-memory N` instead runs our client's `both` workload over N messages in this process
//! and prints RSS every `--sample-every` messages: memory must stay flat.

// Printing the table is this tool's job.
#![allow(clippy::print_stdout)]

mod amqprs;
mod charts;
mod lapin;
mod measure;
mod ours;
mod report;
#[path = "../../shared/server/mod.rs"]
mod server;
#[path = "../../shared/svg.rs"]
mod svg;
mod workload;

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Duration;

use amqp_test_support::alloc_counter::{self, CountingAllocator};
use clap::{Parser, ValueEnum};

use crate::measure::{BoxError, Params, RunResult, RuntimeKind};
pub(crate) use crate::workload::Workload;

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// The clients compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Client {
    /// amqp-client, this workspace's.
    Ours,
    /// amqp-client with ack coalescing off (`coalesce_acks(false)`).
    #[value(name = "ours-nocoalesce")]
    OursNoCoalesce,
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
            Self::OursNoCoalesce => "ours-nocoalesce",
            Self::Lapin => "lapin",
            Self::Amqprs => "amqprs",
        }
    }
}

/// Which broker the clients talk to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BrokerKind {
    /// The broker at `AMQP_URL` (RabbitMQ).
    Rabbitmq,
    /// The in-memory server of `benches/shared/server/`, run in the parent process.
    Builtin,
}

/// Command line.
#[derive(Debug, Parser)]
#[command(about = "Our AMQP client side by side with lapin and amqprs")]
struct Args {
    /// Messages per run.
    #[arg(long, default_value_t = 100_000)]
    messages: u64,
    /// Body sizes in bytes, comma-separated: every workload runs at each.
    #[arg(long, value_delimiter = ',', default_value = "64")]
    body_sizes: Vec<usize>,
    /// Cap on body bytes per run: at a body size where `--messages` would move more, the run
    /// has `max(--min-messages, this ÷ size)` messages instead (same for every client).
    #[arg(long, default_value_t = 1 << 30)]
    max_bytes: u64,
    /// Fewest messages of a run capped by `--max-bytes`.
    #[arg(long, default_value_t = 16)]
    min_messages: u64,
    /// Internal: the body size of a child run.
    #[arg(long, hide = true, default_value_t = 64)]
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
        default_value = "ours,ours-nocoalesce,lapin,amqprs"
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
    /// Where to draw the SVG charts (none if absent).
    #[arg(long)]
    svg: Option<PathBuf>,
    /// The broker: RabbitMQ at `AMQP_URL`, or the built-in in-memory server.
    #[arg(long, value_enum, default_value_t = BrokerKind::Rabbitmq)]
    broker: BrokerKind,
    /// Worker threads of the built-in server's runtime (in the parent process).
    #[arg(long, default_value_t = 1)]
    server_threads: usize,
    /// Publish rate of the latency workload, msg/s.
    #[arg(long, default_value_t = 5000)]
    rate: u64,
    /// How long the latency workload publishes, ms.
    #[arg(long, default_value_t = 3000)]
    latency_ms: u64,
    /// Tokio runtimes of the measured process, comma-separated: `mt` (multi-threaded, the
    /// `#[tokio::main]` default), `ct` (current thread).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "mt,ct")]
    runtime: Vec<RuntimeKind>,
    /// Pause between runs, ms, so that the broker settles (queue deletion, fsync).
    #[arg(long, default_value_t = 500)]
    pause_ms: u64,
    /// Our client with read batching off (`ConnectionConfig::read_batching(None)`).
    #[arg(long)]
    eager_reads: bool,
    /// Our client with this `Limits::outbound_high_water` (bytes queued for the socket before
    /// publishers wait; the client's default is 4 MiB).
    #[arg(long)]
    outbound_high_water: Option<usize>,
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
            coalesce_acks: true,
            outbound_high_water: self.outbound_high_water,
        }
    }

    /// The runtime of a child run (the first one asked for), or of flat-memory mode.
    fn single_runtime(&self) -> RuntimeKind {
        self.runtime.first().copied().unwrap_or(RuntimeKind::Multi)
    }

    /// Messages of a run with bodies of `size` bytes: `--messages`, capped by `--max-bytes`.
    fn messages_for(&self, size: usize) -> u64 {
        let cap = (self.max_bytes / size.max(1) as u64).max(self.min_messages);
        self.messages.min(cap).max(1)
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
    let mut params = args.params();
    params.coalesce_acks = client != Client::OursNoCoalesce;
    let url = amqp_test_support::broker_url();
    let kind = args.single_runtime();
    let rt = kind.build(None)?;
    let result = rt.block_on(async {
        match client {
            Client::Ours | Client::OursNoCoalesce => {
                ours::run(workload, &params, &url, &queue).await
            }
            Client::Lapin => lapin::run(workload, &params, &url, &queue).await,
            Client::Amqprs => amqprs::run(workload, &params, &url, &queue).await,
        }
    })?;
    // Drop the runtime (and lapin's I/O thread with the connection) before reporting.
    rt.shutdown_timeout(Duration::from_secs(1));
    let mut result = result.with_size(params.size);
    result.client = client.name().to_owned();
    result.runtime = kind.name().to_owned();
    result.round = args.round;
    println!("{}", serde_json::to_string(&result)?);
    Ok(())
}

/// One measured run: which client, workload, runtime, body size and round.
#[derive(Debug, Clone, Copy)]
struct RunSpec {
    /// The client.
    client: Client,
    /// The workload.
    workload: Workload,
    /// The runtime.
    runtime: RuntimeKind,
    /// Body size, bytes.
    size: usize,
    /// Messages.
    messages: u64,
    /// Round (0-based).
    round: u32,
}

/// Runs one child process against `url` and parses its result.
fn spawn_child(args: &Args, spec: RunSpec, queue: &str, url: &str) -> Result<RunResult, BoxError> {
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.env("AMQP_URL", url)
        .arg("--child")
        .args([spec.client.name(), spec.workload.name()])
        .args(["--queue", queue, "--round", &spec.round.to_string()])
        .args(["--messages", &spec.messages.to_string()])
        .args(["--size", &spec.size.to_string()])
        .args(["--window", &args.window.to_string()])
        .args(["--prefetch", &args.prefetch.to_string()])
        .args(["--ack-batch", &args.ack_batch.to_string()])
        .args(["--rate", &args.rate.to_string()])
        .args(["--latency-ms", &args.latency_ms.to_string()])
        .args(["--runtime", spec.runtime.name()]);
    if args.no_alloc_count {
        cmd.arg("--no-alloc-count");
    }
    if args.eager_reads {
        cmd.arg("--eager-reads");
    }
    if let Some(bytes) = args.outbound_high_water {
        cmd.args(["--outbound-high-water", &bytes.to_string()]);
    }
    measure::run_child(&mut cmd)
}

/// Parent mode: every body size, round, workload, runtime and client (rotating who goes
/// first); then the tables, the JSON and the charts.
fn parent(args: &Args) -> Result<(), BoxError> {
    let clients = args.clients.clone();
    // The built-in server runs here, on its own threads: its CPU is this process's, never a
    // measured child's.
    let builtin = match args.broker {
        BrokerKind::Builtin => Some(server::spawn_on_own_runtime(args.server_threads, 0)?),
        BrokerKind::Rabbitmq => None,
    };
    let url = match &builtin {
        Some((_, port, _)) => format!("amqp://guest:guest@127.0.0.1:{port}/%2f"),
        None => amqp_test_support::broker_url(),
    };
    let rt = RuntimeKind::Current.build(None)?;
    // RabbitMQ on this machine: its CPU per run says whether it set the pace.
    let beam = if builtin.is_none() {
        measure::broker_pid()
    } else {
        None
    };
    let mut runs = Vec::new();
    let mut failures = 0;
    for &size in &args.body_sizes {
        let messages = args.messages_for(size);
        let mut params = args.params();
        params.size = size;
        params.messages = messages;
        for round in 0..args.rounds {
            for &workload in &args.workloads {
                for &kind in &args.runtime {
                    let n = clients.len();
                    for i in 0..n {
                        let client = clients[(i + round as usize) % n];
                        let spec = RunSpec {
                            client,
                            workload,
                            runtime: kind,
                            size,
                            messages,
                            round,
                        };
                        let queue = amqp_test_support::unique_name(&format!(
                            "clients-bench-{}-{}",
                            client.name(),
                            workload.name()
                        ));
                        if workload == Workload::Consume {
                            rt.block_on(ours::fill(&url, &queue, &params))?;
                        }
                        let before = builtin.as_ref().map(|(broker, _, _)| broker.stats());
                        let beam_before = beam.and_then(measure::process_cpu);
                        match spawn_child(args, spec, &queue, &url) {
                            Ok(mut run) => {
                                if let (Some(t0), Some(t1)) =
                                    (beam_before, beam.and_then(measure::process_cpu))
                                {
                                    let cpu = t1.saturating_sub(t0).as_secs_f64();
                                    run.broker_cpu_us_per_msg =
                                        Some(cpu * 1e6 / run.messages.max(1) as f64);
                                    run.broker_cores = Some(cpu / run.wall_s.max(1e-9));
                                }
                                if let (Some((broker, _, _)), Some(before)) = (&builtin, before) {
                                    let d = broker.stats().since(before);
                                    let per = |x: u64| x as f64 / run.messages.max(1) as f64;
                                    run.server = Some(measure::ServerPerMsg {
                                        ack_frames: per(d.ack_frames),
                                        confirm_frames: per(d.confirm_frames),
                                        frames_in: per(d.frames_in),
                                    });
                                }
                                eprintln!("{}", progress_line(args, &run));
                                runs.push(run);
                            }
                            Err(err) => {
                                failures += 1;
                                eprintln!(
                                    "{} {} {} B {}: run failed: {err}",
                                    client.name(),
                                    workload.name(),
                                    size,
                                    kind.name()
                                );
                                if let Err(err) = rt.block_on(ours::delete_queue(&url, &queue)) {
                                    eprintln!("cleanup of {queue} failed: {err}");
                                }
                            }
                        }
                        std::thread::sleep(Duration::from_millis(args.pause_ms));
                    }
                }
            }
        }
    }
    let workloads: Vec<&str> = args.workloads.iter().map(|w| w.name()).collect();
    let client_names: Vec<&str> = clients.iter().map(|c| c.name()).collect();
    let runtimes: Vec<&str> = args.runtime.iter().map(|&k| k.name()).collect();
    let summaries = report::summarise(&runs, &workloads, &client_names);
    let broker_name = match args.broker {
        BrokerKind::Rabbitmq => "RabbitMQ at AMQP_URL",
        BrokerKind::Builtin => "the built-in in-memory server (benches/shared/server/)",
    };
    let layout = report::Layout {
        sizes: &args.body_sizes,
        runtimes: &runtimes,
        workloads: &workloads,
        clients: &client_names,
        broker: broker_name,
    };
    println!(
        "{}",
        report::render(&summaries, &params_for_header(args), args.rounds, &layout)
    );
    let settings = serde_json::json!({
        "runtimes": runtimes,
        "broker": broker_name,
        "body_sizes": args.body_sizes,
        "messages_per_size": args.body_sizes.iter().map(|&s| args.messages_for(s)).collect::<Vec<_>>(),
        "alloc_count": !args.no_alloc_count,
        "pause_ms": args.pause_ms,
        "clients": client_names,
        "workloads": workloads,
    });
    report::write_json(
        &args.json,
        &args.params(),
        &settings,
        args.rounds,
        &runs,
        &summaries,
    )
    .map_err(|err| format!("writing {}: {err}", args.json.display()))?;
    eprintln!("JSON written to {}", args.json.display());
    if let Some(dir) = &args.svg {
        charts::draw(dir, &summaries, &layout)
            .map_err(|err| format!("writing charts to {}: {err}", dir.display()))?;
    }
    if let Some((_, _, server_rt)) = builtin {
        server_rt.shutdown_background();
    }
    if failures > 0 {
        return Err(format!("{failures} run(s) failed").into());
    }
    Ok(())
}

/// The parameters the table header states (the body size and message count vary per table).
fn params_for_header(args: &Args) -> Params {
    args.params()
}

/// One run's line on stderr, as it finishes.
fn progress_line(args: &Args, run: &RunResult) -> String {
    format!(
        "round {}/{} {:>8} B {} {:<8} {:<15} {:>9.0} msg/s {:>8.1} MB/s {:>7.2} µs CPU/msg {:>6.3} wake-ups/msg {:>6.1} allocs/msg {}{:>6.1} MiB{}{}{}",
        run.round + 1,
        args.rounds,
        run.size,
        run.runtime,
        run.workload,
        run.client,
        run.msgs_per_s,
        run.mb_per_s,
        run.cpu_us_per_msg,
        run.wakeups_per_msg,
        run.allocs_per_msg,
        run.body_copies
            .map_or(String::new(), |c| format!("{c:>5.2} copies ")),
        run.peak_rss_mib,
        run.latency_p99_us.map_or(String::new(), |p99| format!(
            " p50 {:.0} µs p99 {p99:.0} µs",
            run.latency_p50_us.unwrap_or(0.0)
        )),
        run.server.map_or(String::new(), |s| format!(
            " | server: {:.3} ack frames/msg, {:.3} confirm frames/msg",
            s.ack_frames, s.confirm_frames
        )),
        run.broker_cpu_us_per_msg.map_or(String::new(), |b| format!(
            " | broker {b:.1} µs CPU/msg, {:.2} cores",
            run.broker_cores.unwrap_or(0.0)
        )),
    )
}

/// Flat-memory mode: our client's `both` workload over `total` messages, RSS sampled along.
fn flat_memory(args: &Args, total: u64) -> Result<(), BoxError> {
    let params = args.params();
    let url = amqp_test_support::broker_url();
    let queue = amqp_test_support::unique_name("clients-bench-flat-memory");
    let every = args.sample_every.max(1);
    let rt = args.single_runtime().build(None)?;
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
    RuntimeKind::Current
        .build(None)?
        .block_on(ours::fill(&url, queue, &args.params()))
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
