//! The sweep tables: medians over rounds per client and sweep point.

use std::fmt::Write as _;

use crate::RunResult;

/// Median of `values`.
pub(super) fn median(mut values: Vec<f64>) -> Option<f64> {
    values.retain(|v| v.is_finite());
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

/// The median of `field` over the runs of one client and sweep point.
pub(super) fn pick(
    runs: &[RunResult],
    client: &str,
    sweep: &str,
    x: usize,
    field: fn(&RunResult) -> Option<f64>,
) -> Option<f64> {
    median(
        runs.iter()
            .filter(|r| r.client == client && r.sweep == sweep && sweep_x(r) == x)
            .filter_map(field)
            .collect(),
    )
}

/// The x of a run in its sweep: channels or connections.
pub(super) fn sweep_x(r: &RunResult) -> usize {
    if r.sweep.ends_with("connections") {
        r.connections
    } else {
        r.channels
    }
}

/// The table of one sweep.
pub(super) fn sweep_table(
    out: &mut String,
    runs: &[RunResult],
    clients: &[&str],
    sweep: &str,
    xs: &[usize],
) {
    let _ = writeln!(
        out,
        "| {sweep} | client | msg/s | CPU µs/msg | CPU ÷ {} {sweep_one} | wake-ups/msg | socket calls/msg | allocs/msg | RSS after setup MiB | peak RSS MiB |\n|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        xs.first().copied().unwrap_or(1),
        sweep_one = sweep.trim_end_matches('s'),
    );
    for &x in xs {
        for &c in clients {
            let f = |field: fn(&RunResult) -> Option<f64>, d: usize| {
                pick(runs, c, sweep, x, field).map_or("–".to_owned(), |v| format!("{v:.d$}"))
            };
            let base = xs
                .first()
                .and_then(|&x0| pick(runs, c, sweep, x0, |r| Some(r.cpu_us_per_msg)));
            let ratio = match (pick(runs, c, sweep, x, |r| Some(r.cpu_us_per_msg)), base) {
                (Some(v), Some(b)) if b > 0.0 => format!("{:.2}x", v / b),
                _ => "–".to_owned(),
            };
            let _ = writeln!(
                out,
                "| {x} | {c} | {} | {} | {ratio} | {} | {} | {} | {} | {} |",
                f(|r| Some(r.msgs_per_s), 0),
                f(|r| Some(r.cpu_us_per_msg), 2),
                f(|r| Some(r.wakeups_per_msg), 3),
                f(|r| r.syscalls_per_msg, 3),
                f(|r| Some(r.allocs_per_msg), 1),
                f(|r| Some(r.setup_rss_kib as f64 / 1024.0), 1),
                f(|r| Some(r.peak_rss_kib as f64 / 1024.0), 1),
            );
        }
    }
    out.push('\n');
}
