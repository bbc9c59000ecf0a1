//! What a measured run records, and how: wall time, the process's CPU time (getrusage),
//! process-wide heap allocations (the counting allocator), peak and current RSS
//! (`/proc/self/status`), and publish-to-consume latencies.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use amqp_test_support::alloc_counter;
use nix::sys::resource::{UsageWho, getrusage};
use serde::{Deserialize, Serialize};

/// The parameters every client runs a workload with, so that the clients compare.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Params {
    /// Messages per run (throughput workloads).
    pub(crate) messages: u64,
    /// Body size in bytes.
    pub(crate) size: usize,
    /// Most unconfirmed publishes in flight.
    pub(crate) window: usize,
    /// basic.qos prefetch count of the consumer.
    pub(crate) prefetch: u16,
    /// 1: ack each delivery singly; k > 1: ack-multiple every k deliveries (and the last).
    pub(crate) ack_batch: u64,
    /// Publish rate of the latency workload, messages per second.
    pub(crate) rate: u64,
    /// How long the latency workload publishes, in milliseconds.
    pub(crate) latency_ms: u64,
    /// Ours only: read batching off (every byte read as soon as it arrives).
    pub(crate) eager_reads: bool,
    /// Ours only: whether acks of consecutive deliveries coalesce into one multiple ack
    /// (the client's default); `false` for the `ours-nocoalesce` row.
    #[serde(default = "yes")]
    pub(crate) coalesce_acks: bool,
    /// Ours only: `Limits::outbound_high_water` if set (bytes queued for the socket before
    /// publishers wait), to try other values than the client's default.
    #[serde(default)]
    pub(crate) outbound_high_water: Option<usize>,
}

/// `true`, the serde default of flags that default to on.
fn yes() -> bool {
    true
}

impl Params {
    /// Messages the latency workload publishes: rate × duration.
    pub(crate) fn latency_messages(&self) -> u64 {
        (self.rate * self.latency_ms / 1000).max(1)
    }

    /// Whether delivery number `n` (1-based) of `total` is acked, and whether with `multiple`.
    pub(crate) fn ack_now(&self, n: u64, total: u64) -> Option<bool> {
        if self.ack_batch <= 1 {
            Some(false)
        } else if n.is_multiple_of(self.ack_batch) || n == total {
            Some(true)
        } else {
            None
        }
    }
}

/// User plus system CPU time of the whole process (every thread), and its voluntary context
/// switches (each one a thread going to sleep to wait: the wake-ups a client costs), from
/// getrusage.
pub(crate) fn cpu_time() -> (Duration, u64) {
    match getrusage(UsageWho::RUSAGE_SELF) {
        Ok(usage) => {
            let (user, system) = (usage.user_time(), usage.system_time());
            let micros = |t: nix::sys::time::TimeVal| {
                u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000
                    + u64::try_from(t.tv_usec()).unwrap_or(0)
            };
            let switches = u64::try_from(usage.voluntary_context_switches()).unwrap_or(0);
            (
                Duration::from_micros(micros(user) + micros(system)),
                switches,
            )
        }
        Err(err) => {
            eprintln!("getrusage failed: {err}");
            (Duration::ZERO, 0)
        }
    }
}

/// A `kB` field of `/proc/self/status` (`VmHWM`, `VmRSS`), in KiB; 0 if unreadable.
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The broker's process on this machine, if one runs here: the oldest `beam.smp` (RabbitMQ's
/// Erlang VM; a `rabbitmqctl` started meanwhile is a younger one) in `/proc`.
pub(crate) fn broker_pid() -> Option<u32> {
    let started = |pid: u32| -> Option<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(19)?
            .parse()
            .ok()
    };
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let comm = std::fs::read_to_string(entry.path().join("comm")).ok()?;
            (comm.trim() == "beam.smp").then_some((started(pid)?, pid))
        })
        .min()
        .map(|(_, pid)| pid)
}

/// User plus system CPU time of process `pid` so far (`/proc/PID/stat`, clock ticks of
/// 10 ms), or `None` if unreadable.
pub(crate) fn process_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    Some(Duration::from_millis((ticks(11)? + ticks(12)?) * 10))
}

/// Peak resident set size of this process so far (VmHWM), KiB.
pub(crate) fn peak_rss_kib() -> u64 {
    status_kib("VmHWM")
}

/// Current resident set size of this process (VmRSS), KiB.
pub(crate) fn rss_kib() -> u64 {
    status_kib("VmRSS")
}

/// Nanoseconds since a monotonic base shared by the whole process: the publisher writes it
/// into the body, the consumer subtracts it from its own reading.
pub(crate) fn mono_nanos() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    let base = *BASE.get_or_init(Instant::now);
    u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Writes the current [`mono_nanos`] into the first 8 bytes of a body (little-endian).
pub(crate) fn stamp(body: &mut [u8]) {
    if let Some(head) = body.get_mut(..8) {
        head.copy_from_slice(&mono_nanos().to_le_bytes());
    }
}

/// Publish-to-consume latency of a stamped body, in nanoseconds (0 if the body is too short).
pub(crate) fn latency_of(body: &[u8]) -> u64 {
    body.get(..8)
        .and_then(|head| <[u8; 8]>::try_from(head).ok())
        .map_or(0, |head| {
            mono_nanos().saturating_sub(u64::from_le_bytes(head))
        })
}

/// Paces a publisher at a fixed rate. Tokio's timer has millisecond resolution, so the
/// publisher wakes every millisecond and publishes what is due by then (5 messages per wake-up
/// at 5 000 msg/s): the schedule holds on average, in small bursts.
pub(crate) struct Pacer {
    /// When publishing started.
    start: Instant,
    /// Messages per second.
    rate: u64,
    /// The millisecond wake-up.
    tick: tokio::time::Interval,
}

impl Pacer {
    /// A pacer at `rate` messages per second, starting now.
    pub(crate) fn new(rate: u64) -> Self {
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        Self {
            start: Instant::now(),
            rate,
            tick,
        }
    }

    /// Waits for the next wake-up and returns how many messages (of `total`) are due by now.
    pub(crate) async fn due(&mut self, total: u64) -> u64 {
        self.tick.tick().await;
        let nanos = self.start.elapsed().as_nanos();
        let due = nanos * u128::from(self.rate) / 1_000_000_000 + 1;
        u64::try_from(due).unwrap_or(u64::MAX).min(total)
    }
}

/// Start of a measured phase: wall clock, CPU and allocation counts at that moment.
pub(crate) struct Meter {
    /// Wall clock at the start.
    wall: Instant,
    /// Process CPU time at the start.
    cpu: Duration,
    /// Voluntary context switches at the start.
    switches: u64,
    /// Process-wide allocation counts at the start.
    allocs: alloc_counter::Counts,
}

/// What a measured phase cost.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Phase {
    /// Wall-clock time.
    pub(crate) wall: Duration,
    /// CPU time of the whole process (all threads).
    pub(crate) cpu: Duration,
    /// Voluntary context switches of the whole process: times a thread slept to wait.
    pub(crate) wakeups: u64,
    /// Heap allocations of the whole process.
    pub(crate) allocations: u64,
    /// Bytes those allocations requested.
    pub(crate) alloc_bytes: u64,
}

impl Meter {
    /// Starts measuring now.
    pub(crate) fn start() -> Self {
        let (cpu, switches) = cpu_time();
        Self {
            allocs: alloc_counter::process_snapshot(),
            cpu,
            switches,
            wall: Instant::now(),
        }
    }

    /// Ends the phase.
    pub(crate) fn stop(self) -> Phase {
        let wall = self.wall.elapsed();
        let (cpu, switches) = cpu_time();
        let allocs = alloc_counter::process_snapshot().since(self.allocs);
        Phase {
            wall,
            cpu: cpu.saturating_sub(self.cpu),
            wakeups: switches.saturating_sub(self.switches),
            allocations: allocs.allocations,
            alloc_bytes: allocs.bytes,
        }
    }
}

/// What one client run of one workload measured: the child process's one line of output.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RunResult {
    /// `ours`, `lapin` or `amqprs`.
    pub(crate) client: String,
    /// `publish`, `consume`, `both` or `latency`.
    pub(crate) workload: String,
    /// Which round of the parent's alternation this was (0-based).
    pub(crate) round: u32,
    /// Messages in the measured phase.
    pub(crate) messages: u64,
    /// Wall-clock seconds of the measured phase.
    pub(crate) wall_s: f64,
    /// Messages per second.
    pub(crate) msgs_per_s: f64,
    /// Client CPU seconds (user + system, all threads) during the measured phase.
    pub(crate) cpu_s: f64,
    /// Client CPU microseconds per message.
    pub(crate) cpu_us_per_msg: f64,
    /// Voluntary context switches (a thread sleeping to wait) per message: wake-ups.
    #[serde(default)]
    pub(crate) wakeups_per_msg: f64,
    /// Heap allocations per message during the measured phase.
    pub(crate) allocs_per_msg: f64,
    /// Heap bytes requested per message during the measured phase.
    pub(crate) alloc_bytes_per_msg: f64,
    /// Peak RSS of the whole child process, MiB.
    pub(crate) peak_rss_mib: f64,
    /// Latency workload: median publish-to-consume latency, µs.
    pub(crate) latency_p50_us: Option<f64>,
    /// Latency workload: 99th percentile, µs.
    pub(crate) latency_p99_us: Option<f64>,
    /// Latency workload: the largest latency seen, µs.
    pub(crate) latency_max_us: Option<f64>,
    /// Body size in bytes.
    #[serde(default)]
    pub(crate) size: usize,
    /// `mt` (tokio's multi-threaded runtime, what `#[tokio::main]` gives) or `ct` (current
    /// thread).
    #[serde(default)]
    pub(crate) runtime: String,
    /// Body megabytes (10^6 bytes) per second: msg/s × body size.
    #[serde(default)]
    pub(crate) mb_per_s: f64,
    /// Heap bytes allocated per message ÷ body size: how many freshly allocated buffers each
    /// body passes through (see `benches/README.md`); `None` under 4 KiB, where per-message
    /// bookkeeping allocations dwarf the body.
    #[serde(default)]
    pub(crate) body_copies: Option<f64>,
    /// Ours only: what the connection's socket did per message (`Connection::io_stats`).
    #[serde(default)]
    pub(crate) io: Option<IoPerMsg>,
    /// Against the built-in server only: what the server received and sent per message.
    #[serde(default)]
    pub(crate) server: Option<ServerPerMsg>,
    /// Against a local RabbitMQ: the broker's CPU (its `beam.smp`, from `/proc`) per message
    /// over the whole child run (setup included), µs: what the broker spent on this client.
    #[serde(default)]
    pub(crate) broker_cpu_us_per_msg: Option<f64>,
    /// The broker's CPU over the child run ÷ the measured phase's wall time: near 1.0 (one
    /// core) the broker, not the client, sets the pace.
    #[serde(default)]
    pub(crate) broker_cores: Option<f64>,
}

/// Socket calls per message, from our client's `Connection::io_stats()`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub(crate) struct IoPerMsg {
    /// Reads per message.
    pub(crate) reads: f64,
    /// Writes (vectored) per message.
    pub(crate) writes: f64,
    /// Average bytes per read.
    pub(crate) bytes_per_read: f64,
    /// Average bytes per write.
    pub(crate) bytes_per_write: f64,
    /// Times read batching engaged during the run.
    pub(crate) batching_engaged: u64,
}

/// What the built-in server counted per message of a run.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub(crate) struct ServerPerMsg {
    /// basic.ack frames received from the consumer, per message.
    pub(crate) ack_frames: f64,
    /// Publisher-confirm frames sent, per message.
    pub(crate) confirm_frames: f64,
    /// Frames received, all kinds, per message.
    pub(crate) frames_in: f64,
}

impl RunResult {
    /// Builds the result of a measured phase of `messages` messages.
    pub(crate) fn new(client: &str, workload: &str, messages: u64, phase: Phase) -> Self {
        let n = messages.max(1) as f64;
        let wall = phase.wall.as_secs_f64();
        let cpu = phase.cpu.as_secs_f64();
        Self {
            client: client.to_owned(),
            workload: workload.to_owned(),
            round: 0,
            messages,
            wall_s: wall,
            msgs_per_s: if wall > 0.0 { n / wall } else { 0.0 },
            cpu_s: cpu,
            cpu_us_per_msg: cpu * 1e6 / n,
            wakeups_per_msg: phase.wakeups as f64 / n,
            allocs_per_msg: phase.allocations as f64 / n,
            alloc_bytes_per_msg: phase.alloc_bytes as f64 / n,
            peak_rss_mib: peak_rss_kib() as f64 / 1024.0,
            latency_p50_us: None,
            latency_p99_us: None,
            latency_max_us: None,
            size: 0,
            runtime: String::new(),
            mb_per_s: 0.0,
            body_copies: None,
            io: None,
            server: None,
            broker_cpu_us_per_msg: None,
            broker_cores: None,
        }
    }

    /// Adds our client's socket counts.
    pub(crate) fn with_io(mut self, io: IoPerMsg) -> Self {
        self.io = Some(io);
        self
    }

    /// Fills in the figures that depend on the body size.
    pub(crate) fn with_size(mut self, size: usize) -> Self {
        self.size = size;
        self.mb_per_s = self.msgs_per_s * size as f64 / 1e6;
        self.body_copies = (size >= 4096).then(|| self.alloc_bytes_per_msg / size as f64);
        self
    }

    /// Adds the latency percentiles of `nanos` (one per consumed message, in consume order).
    /// The first tenth is left out: it carries connection and queue warm-up, not steady state.
    pub(crate) fn with_latencies(mut self, mut nanos: Vec<u64>) -> Self {
        let skip = nanos.len() / 10;
        nanos.drain(..skip);
        nanos.sort_unstable();
        let pick = |q: f64| -> Option<f64> {
            let last = nanos.len().checked_sub(1)?;
            let i = ((last as f64) * q).round() as usize;
            nanos.get(i.min(last)).map(|&ns| ns as f64 / 1000.0)
        };
        self.latency_p50_us = pick(0.50);
        self.latency_p99_us = pick(0.99);
        self.latency_max_us = pick(1.0);
        self
    }
}

/// The error type of a run: any error, with its message.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Which tokio runtime a measured child runs on, the same switch in every bench.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum RuntimeKind {
    /// One thread (lapin still adds its own I/O thread).
    #[value(name = "ct", alias = "current")]
    Current,
    /// Tokio's multi-threaded runtime: what `#[tokio::main]` gives (one worker per core unless
    /// a bench says how many).
    #[value(name = "mt", alias = "multi")]
    Multi,
}

impl RuntimeKind {
    /// Its name on a command line and in the JSON: `ct` or `mt`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            RuntimeKind::Current => "ct",
            RuntimeKind::Multi => "mt",
        }
    }

    /// Its name in a table's caption (the scale and worker benches'; the clients bench words
    /// its own).
    #[allow(dead_code)]
    pub(crate) fn describe(self) -> &'static str {
        match self {
            RuntimeKind::Current => "current-thread",
            RuntimeKind::Multi => "multi-thread",
        }
    }

    /// A runtime of this kind; a multi-threaded one with `threads` workers if given.
    pub(crate) fn build(self, threads: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
        match self {
            RuntimeKind::Current => tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build(),
            RuntimeKind::Multi => {
                let mut builder = tokio::runtime::Builder::new_multi_thread();
                if let Some(threads) = threads {
                    builder.worker_threads(threads.max(1));
                }
                builder.enable_all().build()
            }
        }
    }
}

/// Runs a measured child (`cmd`, its stderr shown as it goes) and reads its result: the last
/// line of its stdout that is a JSON object. Every bench runs each measured run in a child of
/// its own, so that CPU, allocations and peak RSS belong to that run alone.
pub(crate) fn run_child<T: serde::de::DeserializeOwned>(
    cmd: &mut std::process::Command,
) -> Result<T, BoxError> {
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

/// Result of a run.
pub(crate) type RunOutcome = Result<RunResult, BoxError>;

#[cfg(test)]
mod tests {
    use super::*;

    fn params(ack_batch: u64) -> Params {
        Params {
            messages: 10,
            size: 64,
            window: 10,
            prefetch: 10,
            ack_batch,
            rate: 1000,
            latency_ms: 1000,
            eager_reads: false,
            coalesce_acks: true,
            outbound_high_water: None,
        }
    }

    #[test]
    fn acks_singly_or_in_batches_ending_with_the_last() {
        assert!((1..=10).all(|n| params(1).ack_now(n, 10) == Some(false)));
        let batched: Vec<u64> = (1..=10)
            .filter(|&n| params(4).ack_now(n, 10) == Some(true))
            .collect();
        assert_eq!(batched, [4, 8, 10]);
    }

    #[test]
    fn latency_percentiles_leave_out_the_first_tenth() {
        // The first tenth (10 000 µs each) is warm-up; the rest 1..=90 µs.
        let mut nanos = vec![10_000_000; 10];
        nanos.extend((1..=90).map(|us| us * 1000));
        let phase = Phase {
            wall: Duration::from_secs(1),
            cpu: Duration::ZERO,
            wakeups: 0,
            allocations: 0,
            alloc_bytes: 0,
        };
        let run = RunResult::new("ours", "latency", 100, phase).with_latencies(nanos);
        assert_eq!(run.latency_p50_us, Some(46.0));
        assert_eq!(run.latency_p99_us, Some(89.0));
        assert_eq!(run.latency_max_us, Some(90.0));
    }

    #[test]
    fn stamps_round_trip() {
        let mut body = [0u8; 64];
        stamp(&mut body);
        assert!(latency_of(&body) < 1_000_000_000);
        assert_eq!(latency_of(&[0u8; 4]), 0);
    }
}
