//! Scale: CPU per message and memory of our client, lapin and amqprs as channels and
//! connections multiply, against the broker at `AMQP_URL`.
//!
//! * `channels` sweep: one connection with C channels (`--channels 1,10,100,1000`), each
//!   channel publishing with confirms to its own queue and consuming it at once (acks each
//!   delivery singly), all channels together; the same number of messages per run whatever
//!   C is (`--messages`, at least `--min-per-lane` per channel).
//! * `connections` sweep: K connections (`--connections 1,10,100`), each with one such channel.
//! * `idle`: RSS growth (VmRSS) per idle connection (`--idle-connections`, each opened and
//!   left idle) and per idle channel (`--idle-channels` on one connection), and the heap bytes
//!   allocated per each; measured after the first connection (and its first channels) so that
//!   one-time costs (runtime, TLS roots, lapin's thread pools) are left out.
//!
//! Queues are exclusive and not durable (deleted with their connection whatever happens), so the
//! broker does not write messages to disk and the client's cost shows. Every run is a fresh
//! child process (this binary with `--child`), CPU from getrusage (all threads) for the
//! measured phase, peak RSS from VmHWM. RabbitMQ's default `channel_max` is 2047 (so 1 000
//! channels fit on one connection) and it has no connection limit by default (file
//! descriptors and memory bound it).
//!
//! ```sh
//! cargo run --release -p amqp-benches --example scale -- --rounds 3 --json target/scale-bench.json --svg target/charts
//! ```

// Printing the tables is this tool's job.
#![allow(clippy::print_stdout)]

// The clients bench's client code (each client's documented idiom), measurement helpers and
// chart writer; this tool uses only some of them.
#[allow(dead_code)]
#[path = "../clients/amqprs.rs"]
mod amqprs;
// Each client's lanes and idle handles, run in a child.
mod lanes;
#[allow(dead_code)]
#[path = "../clients/lapin.rs"]
mod lapin;
#[allow(dead_code)]
#[path = "../clients/measure.rs"]
mod measure;
#[allow(dead_code)]
#[path = "../clients/ours.rs"]
mod ours;
// The sweep tables.
mod report;
#[allow(dead_code)]
#[path = "../../shared/svg.rs"]
mod svg;
#[allow(dead_code)]
#[path = "../clients/workload.rs"]
mod workload;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Duration;

use amqp_test_support::alloc_counter::{self, CountingAllocator};
use clap::{Parser, ValueEnum};
use serde::{Deserialize, Serialize};

use crate::lanes::{amqprs_traffic, idle, lane_params, lapin_traffic, ours_traffic};
use crate::measure::{BoxError, RuntimeKind};
use crate::report::{pick, sweep_table};
pub(crate) use crate::workload::Workload;

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// The clients compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Client {
    /// amqp-client.
    Ours,
    /// lapin 4.
    Lapin,
    /// amqprs 2.
    Amqprs,
}

impl Client {
    /// The name.
    fn name(self) -> &'static str {
        match self {
            Self::Ours => "ours",
            Self::Lapin => "lapin",
            Self::Amqprs => "amqprs",
        }
    }
}

/// What a child measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Lanes (a channel publishing and consuming its own queue) over connections.
    Traffic,
    /// Idle connections.
    IdleConnections,
    /// Idle channels on one connection.
    IdleChannels,
}

/// Command line.
#[derive(Debug, Parser)]
#[command(about = "CPU and memory as channels and connections multiply")]
struct Args {
    /// Channel counts of the channels sweep (one connection), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,10,100,1000")]
    channels: Vec<usize>,
    /// Connection counts of the connections sweep (one channel each), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,10,100")]
    connections: Vec<usize>,
    /// Messages per run (published and consumed), split evenly over the lanes.
    #[arg(long, default_value_t = 40_000)]
    messages: u64,
    /// Fewest messages per lane (raises a run's total when lanes are many).
    #[arg(long, default_value_t = 40)]
    min_per_lane: u64,
    /// Body size, bytes.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Most unconfirmed publishes per lane.
    #[arg(long, default_value_t = 100)]
    window: usize,
    /// basic.qos prefetch per lane.
    #[arg(long, default_value_t = 100)]
    prefetch: u16,
    /// Idle connections opened for the per-connection memory figure.
    #[arg(long, default_value_t = 100)]
    idle_connections: usize,
    /// Idle channels opened (on one connection) for the per-channel memory figure.
    #[arg(long, default_value_t = 1000)]
    idle_channels: usize,
    /// Rounds.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Clients, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "ours,lapin,amqprs"
    )]
    clients: Vec<Client>,
    /// Runtime of the measured process.
    #[arg(long, value_enum, default_value_t = RuntimeKind::Multi)]
    runtime: RuntimeKind,
    /// Leave out the idle-memory measurement.
    #[arg(long)]
    no_idle: bool,
    /// Where to write the JSON report.
    #[arg(long, default_value = "target/scale-bench.json")]
    json: PathBuf,
    /// Where to draw the SVG charts (none if absent).
    #[arg(long)]
    svg: Option<PathBuf>,
    /// Pause between runs, ms.
    #[arg(long, default_value_t = 300)]
    pause_ms: u64,
    /// Internal: run one measurement in this process and print it as JSON.
    #[arg(long, num_args = 2, value_names = ["CLIENT", "MODE"], hide = true)]
    child: Option<Vec<String>>,
    /// Internal: connections of a traffic child.
    #[arg(long, hide = true, default_value_t = 1)]
    conns: usize,
    /// Internal: channels per connection of a traffic child.
    #[arg(long, hide = true, default_value_t = 1)]
    lanes: usize,
}

/// One measured run.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RunResult {
    /// Client.
    client: String,
    /// `channels`, `connections`, `idle`.
    sweep: String,
    /// Connections.
    connections: usize,
    /// Channels per connection.
    channels: usize,
    /// Messages.
    messages: u64,
    /// Messages per second.
    msgs_per_s: f64,
    /// CPU µs per message.
    cpu_us_per_msg: f64,
    /// Heap allocations per message.
    allocs_per_msg: f64,
    /// Voluntary context switches (a thread sleeping to wait) per message.
    #[serde(default)]
    wakeups_per_msg: f64,
    /// Ours: socket reads and writes per message, over all connections.
    #[serde(default)]
    syscalls_per_msg: Option<f64>,
    /// RSS once every lane was set up, before traffic, KiB.
    setup_rss_kib: u64,
    /// Peak RSS, KiB.
    peak_rss_kib: u64,
    /// Idle: RSS KiB per idle connection or channel.
    idle_rss_kib_each: Option<f64>,
    /// Idle: heap bytes allocated per idle connection or channel.
    idle_heap_bytes_each: Option<f64>,
    /// Round.
    round: u32,
}

/// Messages per lane of a run with `lanes` lanes in all.
fn per_lane(args: &Args, lanes: usize) -> u64 {
    (args.messages / lanes.max(1) as u64).max(args.min_per_lane)
}

/// Child mode.
fn child(args: &Args, names: &[String]) -> Result<(), BoxError> {
    let [client, mode] = names else {
        return Err("--child takes CLIENT MODE".into());
    };
    let client = Client::from_str(client, true)?;
    let mode = Mode::from_str(mode, true)?;
    alloc_counter::enable_process_counting(true);
    let url = amqp_test_support::broker_url();
    let rt = args.runtime.build(None)?;
    let result = match mode {
        Mode::Traffic => {
            let lanes = args.conns * args.lanes;
            let p = lane_params(args, per_lane(args, lanes));
            let (rss, phase, io_calls) = rt.block_on(async {
                match client {
                    Client::Ours => ours_traffic(&url, args.conns, args.lanes, &p).await,
                    Client::Lapin => lapin_traffic(&url, args.conns, args.lanes, &p)
                        .await
                        .map(|(rss, phase)| (rss, phase, None)),
                    Client::Amqprs => amqprs_traffic(&url, args.conns, args.lanes, &p)
                        .await
                        .map(|(rss, phase)| (rss, phase, None)),
                }
            })?;
            let messages = p.messages * lanes as u64;
            let n = messages as f64;
            RunResult {
                client: client.name().to_owned(),
                sweep: String::new(),
                connections: args.conns,
                channels: args.lanes,
                messages,
                msgs_per_s: n / phase.wall.as_secs_f64().max(1e-9),
                cpu_us_per_msg: phase.cpu.as_secs_f64() * 1e6 / n,
                allocs_per_msg: phase.allocations as f64 / n,
                wakeups_per_msg: phase.wakeups as f64 / n,
                syscalls_per_msg: io_calls.map(|calls| calls as f64 / n),
                setup_rss_kib: rss,
                peak_rss_kib: measure::peak_rss_kib(),
                idle_rss_kib_each: None,
                idle_heap_bytes_each: None,
                round: 0,
            }
        }
        Mode::IdleConnections | Mode::IdleChannels => {
            let n = if mode == Mode::IdleConnections {
                args.idle_connections
            } else {
                args.idle_channels
            };
            let (rss, heap) = rt.block_on(idle(client, &url, mode, n))?;
            RunResult {
                client: client.name().to_owned(),
                sweep: String::new(),
                connections: if mode == Mode::IdleConnections { n } else { 1 },
                channels: if mode == Mode::IdleChannels { n } else { 0 },
                messages: 0,
                msgs_per_s: 0.0,
                cpu_us_per_msg: 0.0,
                allocs_per_msg: 0.0,
                wakeups_per_msg: 0.0,
                syscalls_per_msg: None,
                setup_rss_kib: 0,
                peak_rss_kib: measure::peak_rss_kib(),
                idle_rss_kib_each: Some(rss),
                idle_heap_bytes_each: Some(heap),
                round: 0,
            }
        }
    };
    rt.shutdown_timeout(Duration::from_secs(1));
    println!("{}", serde_json::to_string(&result)?);
    Ok(())
}

/// Runs one child.
fn spawn_child(
    args: &Args,
    client: Client,
    mode: Mode,
    conns: usize,
    lanes: usize,
) -> Result<RunResult, BoxError> {
    let exe = std::env::current_exe()?;
    let mode_name = match mode {
        Mode::Traffic => "traffic",
        Mode::IdleConnections => "idle-connections",
        Mode::IdleChannels => "idle-channels",
    };
    let mut cmd = Command::new(exe);
    cmd.args(["--child", client.name(), mode_name])
        .args(["--conns", &conns.to_string(), "--lanes", &lanes.to_string()])
        .args(["--messages", &args.messages.to_string()])
        .args(["--min-per-lane", &args.min_per_lane.to_string()])
        .args(["--size", &args.size.to_string()])
        .args(["--window", &args.window.to_string()])
        .args(["--prefetch", &args.prefetch.to_string()])
        .args(["--idle-connections", &args.idle_connections.to_string()])
        .args(["--idle-channels", &args.idle_channels.to_string()])
        .args(["--runtime", args.runtime.name()]);
    measure::run_child(&mut cmd)
}

/// Parent mode.
fn parent(args: &Args) -> Result<(), BoxError> {
    let mut runs = Vec::new();
    let mut failures = 0;
    let mut record = |result: Result<RunResult, BoxError>,
                      sweep: &str,
                      round: u32,
                      what: String| {
        match result {
            Ok(mut run) => {
                run.sweep = sweep.to_owned();
                run.round = round;
                eprintln!(
                    "round {} {sweep:<11} {what:<24} {:>8.0} msg/s {:>7.2} µs CPU/msg {:>7.1} MiB peak{}",
                    round + 1,
                    run.msgs_per_s,
                    run.cpu_us_per_msg,
                    run.peak_rss_kib as f64 / 1024.0,
                    run.idle_rss_kib_each.map_or(String::new(), |k| format!(
                        " {k:.1} KiB RSS and {:.0} heap bytes each",
                        run.idle_heap_bytes_each.unwrap_or(0.0)
                    )),
                );
                runs.push(run);
            }
            Err(err) => {
                failures += 1;
                eprintln!("{what}: failed: {err}");
            }
        }
        std::thread::sleep(Duration::from_millis(args.pause_ms));
    };
    for round in 0..args.rounds {
        let n = args.clients.len();
        for i in 0..n {
            let client = args.clients[(i + round as usize) % n];
            for &c in &args.channels {
                let what = format!("{} {c} channels", client.name());
                record(
                    spawn_child(args, client, Mode::Traffic, 1, c),
                    "channels",
                    round,
                    what,
                );
            }
            for &k in &args.connections {
                let what = format!("{} {k} connections", client.name());
                record(
                    spawn_child(args, client, Mode::Traffic, k, 1),
                    "connections",
                    round,
                    what,
                );
            }
            if !args.no_idle {
                let what = format!("{} idle connections", client.name());
                let r = spawn_child(args, client, Mode::IdleConnections, 0, 0);
                record(r, "idle-connections", round, what);
                let what = format!("{} idle channels", client.name());
                let r = spawn_child(args, client, Mode::IdleChannels, 0, 0);
                record(r, "idle-channels", round, what);
            }
        }
    }
    let clients: Vec<&str> = args.clients.iter().map(|c| c.name()).collect();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Scale against RabbitMQ: each channel publishes {} B messages with confirms (window {}) to its own \
         exclusive queue and consumes them at once (prefetch {}, each acked); {} messages per run \
         (at least {} per channel); {} runtime; median of {} round(s)\n",
        args.size,
        args.window,
        args.prefetch,
        args.messages,
        args.min_per_lane,
        args.runtime.describe(),
        args.rounds
    );
    let _ = writeln!(out, "#### Channels on one connection\n");
    sweep_table(&mut out, &runs, &clients, "channels", &args.channels);
    let _ = writeln!(out, "#### Connections, one channel each\n");
    sweep_table(&mut out, &runs, &clients, "connections", &args.connections);
    if !args.no_idle {
        let _ = writeln!(
            out,
            "#### Idle memory ({} idle connections; {} idle channels on one connection)\n\n\
             | client | RSS KiB per idle connection | heap bytes allocated per connection | RSS KiB per idle channel | heap bytes allocated per channel |\n\
             |---|---:|---:|---:|---:|",
            args.idle_connections, args.idle_channels
        );
        for &c in &clients {
            let f = |sweep: &str, x: usize, field: fn(&RunResult) -> Option<f64>, d: usize| {
                pick(&runs, c, sweep, x, field).map_or("–".to_owned(), |v| format!("{v:.d$}"))
            };
            let _ = writeln!(
                out,
                "| {c} | {} | {} | {} | {} |",
                f(
                    "idle-connections",
                    args.idle_connections,
                    |r| r.idle_rss_kib_each,
                    1
                ),
                f(
                    "idle-connections",
                    args.idle_connections,
                    |r| r.idle_heap_bytes_each,
                    0
                ),
                f(
                    "idle-channels",
                    args.idle_channels,
                    |r| r.idle_rss_kib_each,
                    2
                ),
                f(
                    "idle-channels",
                    args.idle_channels,
                    |r| r.idle_heap_bytes_each,
                    0
                ),
            );
        }
        out.push('\n');
    }
    // Targets: CPU per message within 20% of one channel up to the most channels.
    if let (Some(&first), Some(&last)) = (args.channels.first(), args.channels.last()) {
        let base = pick(&runs, "ours", "channels", first, |r| Some(r.cpu_us_per_msg));
        let top = pick(&runs, "ours", "channels", last, |r| Some(r.cpu_us_per_msg));
        if let (Some(b), Some(t)) = (base, top) {
            let _ = writeln!(
                out,
                "- ours: CPU/msg at {last} channels ÷ at {first}: {:.2}x (target ≤ 1.20: {})",
                t / b,
                if t / b <= 1.2 { "met" } else { "not met" }
            );
        }
    }
    println!("{out}");
    if let Some(dir) = args.json.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(
        &args.json,
        serde_json::to_string_pretty(&serde_json::json!({
            "settings": {
                "messages": args.messages, "min_per_lane": args.min_per_lane, "size": args.size,
                "window": args.window, "prefetch": args.prefetch, "rounds": args.rounds,
                "runtime": args.runtime.name(),
                "idle_connections": args.idle_connections, "idle_channels": args.idle_channels,
            },
            "runs": runs,
        }))?,
    )?;
    eprintln!("JSON written to {}", args.json.display());
    if let Some(dir) = &args.svg {
        for (sweep, xs) in [
            ("channels", &args.channels),
            ("connections", &args.connections),
        ] {
            let line = |field: fn(&RunResult) -> Option<f64>| -> Vec<svg::Series> {
                clients
                    .iter()
                    .map(|&c| {
                        svg::Series::line(
                            c,
                            xs.iter()
                                .filter_map(|&x| Some((x as f64, pick(&runs, c, sweep, x, field)?)))
                                .collect(),
                        )
                    })
                    .collect()
            };
            svg::write(
                dir,
                &format!("scale-cpu-{sweep}.svg"),
                &svg::line_chart(
                    &format!("Client CPU per message against {sweep}"),
                    sweep,
                    "CPU µs per message",
                    true,
                    svg::axis_number,
                    &line(|r| Some(r.cpu_us_per_msg)),
                ),
            )?;
            svg::write(
                dir,
                &format!("scale-msgs-{sweep}.svg"),
                &svg::line_chart(
                    &format!("Messages per second against {sweep}"),
                    sweep,
                    "msg/s",
                    true,
                    svg::axis_number,
                    &line(|r| Some(r.msgs_per_s)),
                ),
            )?;
        }
        if !args.no_idle {
            let cats = vec![
                "KiB per idle connection".to_owned(),
                "KiB per idle channel".to_owned(),
            ];
            let series: Vec<svg::Series> = clients
                .iter()
                .map(|&c| {
                    svg::Series::bars(
                        c,
                        vec![
                            pick(&runs, c, "idle-connections", args.idle_connections, |r| {
                                r.idle_rss_kib_each
                            }),
                            pick(&runs, c, "idle-channels", args.idle_channels, |r| {
                                r.idle_rss_kib_each
                            }),
                        ],
                    )
                })
                .collect();
            svg::write(
                dir,
                "scale-idle-memory.svg",
                &svg::bar_chart("Idle memory (RSS growth)", "KiB each", &cats, &series),
            )?;
        }
    }
    if failures > 0 {
        return Err(format!("{failures} run(s) failed").into());
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let outcome = match &args.child {
        Some(names) => child(&args, names),
        None => parent(&args),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}
