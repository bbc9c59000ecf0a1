//! Turns the runs of every round into the summary: median and min–max spread per client and
//! workload, a markdown table, the ratios against the best peer, and the JSON file.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::measure::{Params, RunResult};

/// Median, minimum and maximum of one figure over the rounds.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Spread {
    /// The median (the mean of the middle two for an even count).
    pub(crate) median: f64,
    /// The smallest value.
    pub(crate) min: f64,
    /// The largest value.
    pub(crate) max: f64,
}

impl Spread {
    /// The spread of `values`; `None` if there are none.
    fn of(mut values: Vec<f64>) -> Option<Self> {
        values.retain(|v| v.is_finite());
        values.sort_by(f64::total_cmp);
        let (first, last) = (*values.first()?, *values.last()?);
        let mid = values.len() / 2;
        let median = if values.len() % 2 == 1 {
            values[mid]
        } else {
            (values[mid - 1] + values[mid]) / 2.0
        };
        Some(Self {
            median,
            min: first,
            max: last,
        })
    }

    /// `median (min–max)` with `decimals` decimals.
    fn show(self, decimals: usize) -> String {
        format!(
            "{:.d$} ({:.d$}–{:.d$})",
            self.median,
            self.min,
            self.max,
            d = decimals
        )
    }
}

/// One client's figures for one workload, body size and runtime, over every round.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Summary {
    /// Body size, bytes.
    pub(crate) size: usize,
    /// `mt` or `ct`.
    pub(crate) runtime: String,
    /// The workload.
    pub(crate) workload: String,
    /// The client.
    pub(crate) client: String,
    /// How many runs the figures come from.
    pub(crate) runs: usize,
    /// Messages per second.
    pub(crate) msgs_per_s: Option<Spread>,
    /// Client CPU seconds of the measured phase.
    pub(crate) cpu_s: Option<Spread>,
    /// Client CPU µs per message.
    pub(crate) cpu_us_per_msg: Option<Spread>,
    /// Heap allocations per message.
    pub(crate) allocs_per_msg: Option<Spread>,
    /// Voluntary context switches per message (wake-ups).
    pub(crate) wakeups_per_msg: Option<Spread>,
    /// Peak RSS, MiB.
    pub(crate) peak_rss_mib: Option<Spread>,
    /// Latency workload: p50, µs.
    pub(crate) latency_p50_us: Option<Spread>,
    /// Latency workload: p99, µs.
    pub(crate) latency_p99_us: Option<Spread>,
    /// Body MB/s.
    pub(crate) mb_per_s: Option<Spread>,
    /// Body copies per message (allocated bytes ÷ body size), 4 KiB and up.
    pub(crate) body_copies: Option<Spread>,
    /// Ours: socket reads per message.
    pub(crate) reads_per_msg: Option<Spread>,
    /// Ours: socket writes per message.
    pub(crate) writes_per_msg: Option<Spread>,
    /// Ours: bytes per read.
    pub(crate) bytes_per_read: Option<Spread>,
    /// Ours: bytes per write.
    pub(crate) bytes_per_write: Option<Spread>,
    /// Built-in server: ack frames received per message.
    pub(crate) ack_frames_per_msg: Option<Spread>,
    /// Built-in server: confirm frames sent per message.
    pub(crate) confirm_frames_per_msg: Option<Spread>,
    /// Built-in server: frames received per message.
    pub(crate) frames_in_per_msg: Option<Spread>,
    /// Local RabbitMQ: broker CPU µs per message.
    pub(crate) broker_cpu_us_per_msg: Option<Spread>,
    /// Local RabbitMQ: broker CPU ÷ wall time (cores busy).
    pub(crate) broker_cores: Option<Spread>,
}

/// What the tables and charts are laid out by.
pub(crate) struct Layout<'a> {
    /// Body sizes, in the order run.
    pub(crate) sizes: &'a [usize],
    /// Runtimes (`mt`, `ct`).
    pub(crate) runtimes: &'a [&'a str],
    /// Workloads.
    pub(crate) workloads: &'a [&'a str],
    /// Clients.
    pub(crate) clients: &'a [&'a str],
    /// Which broker, in words.
    pub(crate) broker: &'a str,
}

/// A body size for a heading: 64 B, 4 KiB, 1 MiB.
pub(crate) fn size_name(size: usize) -> String {
    if size >= 1 << 20 && size.is_multiple_of(1 << 20) {
        format!("{} MiB", size >> 20)
    } else if size >= 1 << 10 && size.is_multiple_of(1 << 10) {
        format!("{} KiB", size >> 10)
    } else {
        format!("{size} B")
    }
}

/// Summarises `runs` per body size, runtime, workload and client.
pub(crate) fn summarise(runs: &[RunResult], workloads: &[&str], clients: &[&str]) -> Vec<Summary> {
    let mut keys: Vec<(usize, String)> = Vec::new();
    for r in runs {
        if !keys.iter().any(|(s, rt)| *s == r.size && *rt == r.runtime) {
            keys.push((r.size, r.runtime.clone()));
        }
    }
    let mut out = Vec::new();
    for (size, runtime) in keys {
        for &workload in workloads {
            for &client in clients {
                let mine: Vec<&RunResult> = runs
                    .iter()
                    .filter(|r| {
                        r.size == size
                            && r.runtime == runtime
                            && r.workload == workload
                            && r.client == client
                    })
                    .collect();
                if mine.is_empty() {
                    continue;
                }
                let spread = |f: &dyn Fn(&RunResult) -> Option<f64>| {
                    Spread::of(mine.iter().filter_map(|r| f(r)).collect())
                };
                out.push(Summary {
                    size,
                    runtime: runtime.clone(),
                    workload: workload.to_owned(),
                    client: client.to_owned(),
                    runs: mine.len(),
                    msgs_per_s: spread(&|r| Some(r.msgs_per_s)),
                    cpu_s: spread(&|r| Some(r.cpu_s)),
                    cpu_us_per_msg: spread(&|r| Some(r.cpu_us_per_msg)),
                    allocs_per_msg: spread(&|r| Some(r.allocs_per_msg)),
                    wakeups_per_msg: spread(&|r| Some(r.wakeups_per_msg)),
                    peak_rss_mib: spread(&|r| Some(r.peak_rss_mib)),
                    latency_p50_us: spread(&|r| r.latency_p50_us),
                    latency_p99_us: spread(&|r| r.latency_p99_us),
                    mb_per_s: spread(&|r| Some(r.mb_per_s)),
                    body_copies: spread(&|r| r.body_copies),
                    reads_per_msg: spread(&|r| r.io.map(|io| io.reads)),
                    writes_per_msg: spread(&|r| r.io.map(|io| io.writes)),
                    bytes_per_read: spread(&|r| r.io.map(|io| io.bytes_per_read)),
                    bytes_per_write: spread(&|r| r.io.map(|io| io.bytes_per_write)),
                    ack_frames_per_msg: spread(&|r| r.server.map(|s| s.ack_frames)),
                    confirm_frames_per_msg: spread(&|r| r.server.map(|s| s.confirm_frames)),
                    frames_in_per_msg: spread(&|r| r.server.map(|s| s.frames_in)),
                    broker_cpu_us_per_msg: spread(&|r| r.broker_cpu_us_per_msg),
                    broker_cores: spread(&|r| r.broker_cores),
                });
            }
        }
    }
    out
}

/// A spread as table text, or `–` if absent.
fn cell(spread: Option<Spread>, decimals: usize) -> String {
    spread.map_or_else(|| "–".to_owned(), |s| s.show(decimals))
}

/// The median of a spread, if any.
fn median(spread: Option<Spread>) -> Option<f64> {
    spread.map(|s| s.median)
}

/// The markdown tables: per body size and runtime, throughput (with MB/s and body copies),
/// the wire (socket calls, frames), latency and the ratio lines; then, across sizes and
/// runtimes, MB/s by body size, ours ÷ best peer by body size, and CPU per message by runtime.
pub(crate) fn render(
    summaries: &[Summary],
    params: &Params,
    rounds: u32,
    layout: &Layout<'_>,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Broker: {}. Persistent messages, durable queue, confirm window {}, prefetch {}, ack {}, \
         {rounds} round(s); median (min–max)\n",
        layout.broker,
        params.window,
        params.prefetch,
        if params.ack_batch <= 1 {
            "each message singly".to_owned()
        } else {
            format!("multiple every {}", params.ack_batch)
        },
    );
    for &size in layout.sizes {
        for &runtime in layout.runtimes {
            let block: Vec<&Summary> = summaries
                .iter()
                .filter(|s| s.size == size && s.runtime == runtime)
                .collect();
            if block.is_empty() {
                continue;
            }
            let messages = block.first().map_or(0, |s| s.runs);
            let _ = messages;
            render_block(&mut out, &block, size, runtime, params);
        }
    }
    if layout.sizes.len() > 1 {
        render_by_size(&mut out, summaries, layout);
    }
    if layout.runtimes.len() > 1 {
        render_by_runtime(&mut out, summaries, layout);
    }
    out
}

/// The tables of one body size and runtime.
fn render_block(out: &mut String, block: &[&Summary], size: usize, runtime: &str, params: &Params) {
    let _ = writeln!(
        out,
        "#### {} bodies, {} runtime\n",
        size_name(size),
        if runtime == "mt" {
            "multi-thread (`#[tokio::main]` default)"
        } else {
            "current-thread"
        }
    );
    let throughput: Vec<&Summary> = block
        .iter()
        .copied()
        .filter(|s| s.workload != "latency")
        .collect();
    if !throughput.is_empty() {
        out.push_str(
            "| workload | client | msg/s | MB/s | CPU µs/msg | wake-ups/msg | allocs/msg | body copies/msg | peak RSS MiB |\n\
             |---|---|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for s in &throughput {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                s.workload,
                s.client,
                cell(s.msgs_per_s, 0),
                cell(s.mb_per_s, 1),
                cell(s.cpu_us_per_msg, 2),
                cell(s.wakeups_per_msg, 3),
                cell(s.allocs_per_msg, 1),
                cell(s.body_copies, 2),
                cell(s.peak_rss_mib, 1),
            );
        }
        out.push('\n');
        let wire: Vec<&&Summary> = throughput
            .iter()
            .filter(|s| {
                s.reads_per_msg.is_some()
                    || s.ack_frames_per_msg.is_some()
                    || s.broker_cores.is_some()
            })
            .collect();
        if !wire.is_empty() {
            out.push_str(
                "Wire and broker: socket calls (our client's `io_stats`), frames (counted by the built-in \
                 server), the local RabbitMQ's CPU (its `beam.smp`, whole child run)\n\n\
                 | workload | client | reads/msg | writes/msg | bytes/read | bytes/write | ack frames/msg | confirm frames/msg | frames in/msg | broker CPU µs/msg | broker cores |\n\
                 |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
            );
            for s in wire {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    s.workload,
                    s.client,
                    cell(s.reads_per_msg, 3),
                    cell(s.writes_per_msg, 3),
                    cell(s.bytes_per_read, 0),
                    cell(s.bytes_per_write, 0),
                    cell(s.ack_frames_per_msg, 3),
                    cell(s.confirm_frames_per_msg, 3),
                    cell(s.frames_in_per_msg, 2),
                    cell(s.broker_cpu_us_per_msg, 1),
                    cell(s.broker_cores, 2),
                );
            }
            out.push('\n');
        }
    }
    let latency: Vec<&Summary> = block
        .iter()
        .copied()
        .filter(|s| s.workload == "latency")
        .collect();
    if !latency.is_empty() {
        let _ = writeln!(
            out,
            "Latency: publish-to-consume at {} msg/s for {} ms ({} messages, first tenth left \
             out), publisher and consumer on two channels of one connection\n",
            params.rate,
            params.latency_ms,
            params.latency_messages()
        );
        out.push_str(
            "| client | p50 µs | p99 µs | msg/s | CPU µs/msg | allocs/msg | peak RSS MiB |\n\
             |---|---:|---:|---:|---:|---:|---:|\n",
        );
        for s in &latency {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} |",
                s.client,
                cell(s.latency_p50_us, 0),
                cell(s.latency_p99_us, 0),
                cell(s.msgs_per_s, 0),
                cell(s.cpu_us_per_msg, 2),
                cell(s.allocs_per_msg, 1),
                cell(s.peak_rss_mib, 1),
            );
        }
        out.push('\n');
    }
    let owned: Vec<Summary> = block.iter().map(|s| (*s).clone()).collect();
    out.push_str(&ratios(&owned));
    out.push('\n');
}

/// The median of `field` for one size, runtime, workload and client.
pub(crate) fn pick(
    summaries: &[Summary],
    size: usize,
    runtime: &str,
    workload: &str,
    client: &str,
    field: fn(&Summary) -> Option<Spread>,
) -> Option<f64> {
    summaries
        .iter()
        .find(|s| {
            s.size == size && s.runtime == runtime && s.workload == workload && s.client == client
        })
        .and_then(|s| median(field(s)))
}

/// Across body sizes: MB/s per client and workload, and ours ÷ the best peer in msg/s.
fn render_by_size(out: &mut String, summaries: &[Summary], layout: &Layout<'_>) {
    for &runtime in layout.runtimes {
        let _ = writeln!(out, "#### MB/s by body size, {runtime} runtime\n");
        let _ = write!(out, "| workload | client |");
        for &size in layout.sizes {
            let _ = write!(out, " {} |", size_name(size));
        }
        let _ = writeln!(out, "\n|---|---|{}", "---:|".repeat(layout.sizes.len()));
        for &workload in layout.workloads.iter().filter(|w| **w != "latency") {
            for &client in layout.clients {
                let _ = write!(out, "| {workload} | {client} |");
                for &size in layout.sizes {
                    let v = pick(summaries, size, runtime, workload, client, |s| s.mb_per_s);
                    let _ = write!(
                        out,
                        " {} |",
                        v.map_or("–".to_owned(), |v| format!("{v:.1}"))
                    );
                }
                out.push('\n');
            }
        }
        let _ = writeln!(
            out,
            "\nmsg/s ours ÷ best peer (above 1: ours leads), {runtime} runtime\n"
        );
        let _ = write!(out, "| workload |");
        for &size in layout.sizes {
            let _ = write!(out, " {} |", size_name(size));
        }
        let _ = writeln!(out, "\n|---|{}", "---:|".repeat(layout.sizes.len()));
        for &workload in layout.workloads.iter().filter(|w| **w != "latency") {
            let _ = write!(out, "| {workload} |");
            for &size in layout.sizes {
                let ours = pick(summaries, size, runtime, workload, "ours", |s| s.msgs_per_s);
                let best = layout
                    .clients
                    .iter()
                    .filter(|c| !c.starts_with("ours"))
                    .filter_map(|c| pick(summaries, size, runtime, workload, c, |s| s.msgs_per_s))
                    .fold(None, |a: Option<f64>, v| Some(a.map_or(v, |a| a.max(v))));
                let cell = match (ours, best) {
                    (Some(o), Some(b)) if b > 0.0 => format!("{:.2}x", o / b),
                    _ => "–".to_owned(),
                };
                let _ = write!(out, " {cell} |");
            }
            out.push('\n');
        }
        out.push('\n');
    }
}

/// Across runtimes: CPU µs per message on each, and multi-thread ÷ current-thread.
fn render_by_runtime(out: &mut String, summaries: &[Summary], layout: &Layout<'_>) {
    for &size in layout.sizes {
        let _ = writeln!(
            out,
            "#### CPU µs/msg by runtime, {} bodies\n",
            size_name(size)
        );
        let _ = write!(out, "| workload | client |");
        for rt in layout.runtimes {
            let _ = write!(out, " {rt} µs/msg | {rt} msg/s |");
        }
        let _ = writeln!(
            out,
            " mt ÷ ct CPU |\n|---|---|{}---:|",
            "---:|---:|".repeat(layout.runtimes.len())
        );
        for &workload in layout.workloads.iter().filter(|w| **w != "latency") {
            for &client in layout.clients {
                let _ = write!(out, "| {workload} | {client} |");
                for rt in layout.runtimes {
                    let cpu = pick(summaries, size, rt, workload, client, |s| s.cpu_us_per_msg);
                    let rate = pick(summaries, size, rt, workload, client, |s| s.msgs_per_s);
                    let _ = write!(
                        out,
                        " {} | {} |",
                        cpu.map_or("–".to_owned(), |v| format!("{v:.2}")),
                        rate.map_or("–".to_owned(), |v| format!("{v:.0}"))
                    );
                }
                let mt = pick(summaries, size, "mt", workload, client, |s| {
                    s.cpu_us_per_msg
                });
                let ct = pick(summaries, size, "ct", workload, client, |s| {
                    s.cpu_us_per_msg
                });
                let ratio = match (mt, ct) {
                    (Some(m), Some(c)) if c > 0.0 => format!("{:.2}x", m / c),
                    _ => "–".to_owned(),
                };
                let _ = writeln!(out, " {ratio} |");
            }
        }
        out.push('\n');
    }
}

/// Per workload: ours ÷ the best peer in msg/s, and each peer ÷ ours in CPU per message (and
/// in p99 latency): above 1 means ours is ahead.
fn ratios(summaries: &[Summary]) -> String {
    let mut out = String::new();
    let mut workloads: Vec<&str> = summaries.iter().map(|s| s.workload.as_str()).collect();
    workloads.dedup();
    for workload in workloads {
        let of = |client: &str| {
            summaries
                .iter()
                .find(|s| s.workload == workload && s.client == client)
        };
        let Some(ours) = of("ours") else { continue };
        let peers: Vec<&Summary> = summaries
            .iter()
            .filter(|s| s.workload == workload && !s.client.starts_with("ours"))
            .collect();
        if peers.is_empty() {
            continue;
        }
        let mut parts = Vec::new();
        if workload == "latency" {
            for peer in &peers {
                if let (Some(theirs), Some(mine)) =
                    (median(peer.latency_p99_us), median(ours.latency_p99_us))
                {
                    parts.push(format!("p99 {} ÷ ours {:.2}×", peer.client, theirs / mine));
                }
            }
        } else {
            let best = peers
                .iter()
                .filter_map(|p| Some((p, median(p.msgs_per_s)?)))
                .max_by(|a, b| a.1.total_cmp(&b.1));
            if let (Some((best, theirs)), Some(mine)) = (best, median(ours.msgs_per_s)) {
                parts.push(format!(
                    "msg/s ours ÷ best peer ({}) {:.2}×",
                    best.client,
                    mine / theirs
                ));
                // How much of the lead is left with one ack frame per delivery.
                if let Some(plain) = of("ours-nocoalesce").and_then(|s| median(s.msgs_per_s)) {
                    parts.push(format!(
                        "msg/s ours-nocoalesce ÷ best peer {:.2}×",
                        plain / theirs
                    ));
                }
            }
        }
        for peer in &peers {
            if let (Some(theirs), Some(mine)) =
                (median(peer.cpu_us_per_msg), median(ours.cpu_us_per_msg))
            {
                parts.push(format!(
                    "CPU/msg {} ÷ ours {:.2}×",
                    peer.client,
                    theirs / mine
                ));
            }
        }
        if let (Some(plain), Some(mine)) = (
            of("ours-nocoalesce").and_then(|s| median(s.cpu_us_per_msg)),
            median(ours.cpu_us_per_msg),
        ) && workload != "publish"
        {
            parts.push(format!(
                "CPU/msg ours-nocoalesce ÷ ours {:.2}×",
                plain / mine
            ));
        }
        let _ = writeln!(out, "- {workload}: {}", parts.join("; "));
    }
    out
}

/// Writes the parameters, every run and the summaries to `path` as JSON (creating its folder).
pub(crate) fn write_json(
    path: &Path,
    params: &Params,
    settings: &serde_json::Value,
    rounds: u32,
    runs: &[RunResult],
    summaries: &[Summary],
) -> Result<(), Box<dyn std::error::Error>> {
    /// The file's layout.
    #[derive(Serialize)]
    struct Report<'a> {
        /// The workload parameters.
        params: &'a Params,
        /// Extra settings of the run (runtime, whether allocations were counted).
        settings: &'a serde_json::Value,
        /// Rounds run.
        rounds: u32,
        /// Every run, in the order run.
        runs: &'a [RunResult],
        /// Median and spread per workload and client.
        summary: &'a [Summary],
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let report = Report {
        params,
        settings,
        rounds,
        runs,
        summary: summaries,
    };
    std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_spread() {
        let odd = Spread::of(vec![3.0, 1.0, 2.0]).expect("three values");
        assert_eq!((odd.median, odd.min, odd.max), (2.0, 1.0, 3.0));
        let even = Spread::of(vec![4.0, 1.0, 2.0, 3.0]).expect("four values");
        assert_eq!(even.median, 2.5);
        assert!(Spread::of(Vec::new()).is_none());
    }
}
