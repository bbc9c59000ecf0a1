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

/// One client's figures for one workload, over every round.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Summary {
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
}

/// Summarises `runs` per workload and client, in the order given.
pub(crate) fn summarise(runs: &[RunResult], workloads: &[&str], clients: &[&str]) -> Vec<Summary> {
    let mut out = Vec::new();
    for &workload in workloads {
        for &client in clients {
            let mine: Vec<&RunResult> = runs
                .iter()
                .filter(|r| r.workload == workload && r.client == client)
                .collect();
            if mine.is_empty() {
                continue;
            }
            let spread = |f: &dyn Fn(&RunResult) -> Option<f64>| {
                Spread::of(mine.iter().filter_map(|r| f(r)).collect())
            };
            out.push(Summary {
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
            });
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

/// The markdown tables (throughput, then latency) and the ratio lines.
pub(crate) fn render(summaries: &[Summary], params: &Params, rounds: u32) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} messages of {} B (persistent, durable queue), confirm window {}, prefetch {}, ack {}, \
         {rounds} round(s); median (min–max)\n",
        params.messages,
        params.size,
        params.window,
        params.prefetch,
        if params.ack_batch <= 1 {
            "each message singly".to_owned()
        } else {
            format!("multiple every {}", params.ack_batch)
        },
    );
    let throughput: Vec<&Summary> = summaries
        .iter()
        .filter(|s| s.workload != "latency")
        .collect();
    if !throughput.is_empty() {
        out.push_str(
            "| workload | client | msg/s | client CPU s | CPU µs/msg | wake-ups/msg | allocs/msg | peak RSS MiB |\n\
             |---|---|---:|---:|---:|---:|---:|---:|\n",
        );
        for s in &throughput {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                s.workload,
                s.client,
                cell(s.msgs_per_s, 0),
                cell(s.cpu_s, 3),
                cell(s.cpu_us_per_msg, 2),
                cell(s.wakeups_per_msg, 3),
                cell(s.allocs_per_msg, 1),
                cell(s.peak_rss_mib, 1),
            );
        }
        out.push('\n');
    }
    let latency: Vec<&Summary> = summaries
        .iter()
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
    out.push_str(&ratios(summaries));
    out
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
            .filter(|s| s.workload == workload && s.client != "ours")
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
