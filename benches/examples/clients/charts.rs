//! The SVG charts of a run (`--svg DIR`): per body size and runtime, msg/s and CPU per
//! message per client and workload; with several sizes, MB/s against body size.

use std::path::Path;

use crate::report::{Layout, Spread, Summary, pick, size_name};
use crate::svg;

/// Draws the charts into `dir`: per body size and runtime, msg/s and CPU µs per message per
/// client and workload; with several sizes, MB/s against body size per workload.
pub(crate) fn draw(dir: &Path, summaries: &[Summary], layout: &Layout<'_>) -> std::io::Result<()> {
    let workloads: Vec<&str> = layout
        .workloads
        .iter()
        .copied()
        .filter(|w| *w != "latency")
        .collect();
    let categories: Vec<String> = workloads.iter().map(|w| (*w).to_owned()).collect();
    for &size in layout.sizes {
        for &rt in layout.runtimes {
            let series = |field: fn(&Summary) -> Option<Spread>| -> Vec<svg::Series> {
                layout
                    .clients
                    .iter()
                    .map(|&c| {
                        svg::Series::bars(
                            c,
                            workloads
                                .iter()
                                .map(|w| pick(summaries, size, rt, w, c, field))
                                .collect(),
                        )
                    })
                    .collect()
            };
            let tag = format!("{size}B-{rt}");
            let title = format!(
                "{} bodies, {rt} runtime, {}",
                size_name(size),
                layout.broker
            );
            svg::write(
                dir,
                &format!("clients-msgs-{tag}.svg"),
                &svg::bar_chart(
                    &format!("msg/s: {title}"),
                    "messages per second",
                    &categories,
                    &series(|s| s.msgs_per_s),
                ),
            )?;
            svg::write(
                dir,
                &format!("clients-cpu-{tag}.svg"),
                &svg::bar_chart(
                    &format!("CPU per message: {title}"),
                    "client CPU µs per message",
                    &categories,
                    &series(|s| s.cpu_us_per_msg),
                ),
            )?;
        }
    }
    if layout.sizes.len() > 1 {
        for &rt in layout.runtimes {
            for &w in &workloads {
                let series: Vec<svg::Series> = layout
                    .clients
                    .iter()
                    .map(|&c| {
                        svg::Series::line(
                            c,
                            layout
                                .sizes
                                .iter()
                                .filter_map(|&size| {
                                    Some((
                                        size as f64,
                                        pick(summaries, size, rt, w, c, |s| s.mb_per_s)?,
                                    ))
                                })
                                .collect(),
                        )
                    })
                    .collect();
                svg::write(
                    dir,
                    &format!("clients-mbps-{w}-{rt}.svg"),
                    &svg::line_chart(
                        &format!("{w}: body MB/s by body size, {rt} runtime"),
                        "body size",
                        "MB/s",
                        true,
                        |x| size_name(x as usize),
                        &series,
                    ),
                )?;
            }
        }
    }
    Ok(())
}
