//! A tiny SVG chart writer for the bench binaries: grouped bar charts (a value per category and
//! series, e.g. msg/s per workload and client) and line charts (y against x, e.g. CPU per
//! message against channel count, optionally on a log-10 x axis). No dependencies; the output
//! is a standalone SVG file a browser or the README shows as is.

use std::fmt::Write as _;

/// Colours of the series, in order (colour-blind friendly, Okabe–Ito).
const PALETTE: [&str; 8] = [
    "#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000",
];

/// Canvas width and height, px.
const W: f64 = 760.0;
/// Canvas height, px.
const H: f64 = 420.0;
/// Plot area margins: left, right, top, bottom.
const MARGIN: (f64, f64, f64, f64) = (78.0, 150.0, 44.0, 64.0);

/// One named series of a chart.
#[derive(Debug, Clone)]
pub(crate) struct Series {
    /// The legend's name.
    pub(crate) name: String,
    /// Bar charts: one value per category (`None`: no bar). Line charts: unused.
    pub(crate) values: Vec<Option<f64>>,
    /// Line charts: the points (x, y). Bar charts: unused.
    pub(crate) points: Vec<(f64, f64)>,
}

impl Series {
    /// A bar series.
    pub(crate) fn bars(name: impl Into<String>, values: Vec<Option<f64>>) -> Self {
        Self {
            name: name.into(),
            values,
            points: Vec::new(),
        }
    }

    /// A line series.
    pub(crate) fn line(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Self {
            name: name.into(),
            values: Vec::new(),
            points,
        }
    }
}

/// Escapes text for SVG.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A round step for about `n` ticks over `0..=max`.
fn nice_step(max: f64, n: f64) -> f64 {
    let raw = (max / n).max(f64::MIN_POSITIVE);
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let nice = if norm <= 1.0 {
        1.0
    } else if norm <= 2.0 {
        2.0
    } else if norm <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

/// A number for an axis label: 12k, 1.5M, 0.25.
fn short(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{}M", trim(v / 1e6))
    } else if a >= 1e3 {
        format!("{}k", trim(v / 1e3))
    } else {
        trim(v)
    }
}

/// An axis number as the charts print it: 950, 1.5k, 12k, 2.5M.
#[allow(dead_code)]
pub(crate) fn axis_number(v: f64) -> String {
    short(v)
}

/// `v` with at most 2 decimals and no trailing zeros.
fn trim(v: f64) -> String {
    let s = format!("{v:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() || s == "-" {
        "0".to_owned()
    } else {
        s.to_owned()
    }
}

/// The frame every chart shares: title, y axis with grid, y label, legend. Returns the SVG so
/// far and the y scale (value to px).
fn frame(title: &str, y_label: &str, y_max: f64, series: &[Series]) -> (String, f64, f64) {
    let (l, r, t, b) = MARGIN;
    let plot_h = H - t - b;
    let step = nice_step(y_max, 5.0);
    let top = (y_max / step).ceil().max(1.0) * step;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = write!(
        s,
        r#"<rect width="100%" height="100%" fill="white"/><text x="{}" y="24" text-anchor="middle" font-size="15" font-weight="bold">{}</text>"#,
        W / 2.0,
        esc(title)
    );
    let mut v = 0.0;
    while v <= top * 1.0001 {
        let y = H - b - v / top * plot_h;
        let _ = write!(
            s,
            r##"<line x1="{l}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            W - r,
            l - 6.0,
            y + 4.0,
            short(v)
        );
        v += step;
    }
    let _ = write!(
        s,
        r#"<text transform="translate(16,{:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
        t + plot_h / 2.0,
        esc(y_label)
    );
    for (i, se) in series.iter().enumerate() {
        let y = t + 10.0 + i as f64 * 20.0;
        let _ = write!(
            s,
            r#"<rect x="{:.1}" y="{:.1}" width="12" height="12" fill="{}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            W - r + 14.0,
            y - 10.0,
            PALETTE[i % PALETTE.len()],
            W - r + 32.0,
            y,
            esc(&se.name)
        );
    }
    (s, top, plot_h)
}

/// A grouped bar chart: for each category a group of bars, one per series, value on the bar.
pub(crate) fn bar_chart(
    title: &str,
    y_label: &str,
    categories: &[String],
    series: &[Series],
) -> String {
    let y_max = series
        .iter()
        .flat_map(|s| s.values.iter().flatten().copied())
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    let (mut s, top, plot_h) = frame(title, y_label, y_max, series);
    let (l, r, _, b) = MARGIN;
    let group_w = (W - l - r) / categories.len().max(1) as f64;
    let bar_w = group_w * 0.8 / series.len().max(1) as f64;
    for (c, cat) in categories.iter().enumerate() {
        let x0 = l + c as f64 * group_w + group_w * 0.1;
        for (i, se) in series.iter().enumerate() {
            let Some(v) = se
                .values
                .get(c)
                .copied()
                .flatten()
                .filter(|v| v.is_finite())
            else {
                continue;
            };
            let h = v / top * plot_h;
            let x = x0 + i as f64 * bar_w;
            let _ = write!(
                s,
                r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="{}"><title>{}: {}</title></rect>"#,
                H - b - h,
                bar_w * 0.92,
                PALETTE[i % PALETTE.len()],
                esc(&se.name),
                trim(v)
            );
            if bar_w >= 18.0 {
                let _ = write!(
                    s,
                    r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="9">{}</text>"#,
                    x + bar_w * 0.46,
                    H - b - h - 3.0,
                    short(v)
                );
            }
        }
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            x0 + group_w * 0.4,
            H - b + 18.0,
            esc(cat)
        );
    }
    let _ = write!(
        s,
        r#"<line x1="{l}" y1="{0}" x2="{1}" y2="{0}" stroke="black"/></svg>"#,
        H - b,
        W - r
    );
    s
}

/// A line chart of y against x (log-10 x axis if `log_x`), one polyline with dots per series;
/// the x ticks are the data's x values, labelled by `x_format` (e.g. [`axis_number`]).
pub(crate) fn line_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    log_x: bool,
    x_format: fn(f64) -> String,
    series: &[Series],
) -> String {
    let pts = || series.iter().flat_map(|s| s.points.iter().copied());
    let y_max = pts()
        .map(|p| p.1)
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    let fx = |x: f64| if log_x { x.max(1e-9).log10() } else { x };
    let (x_min, x_max) = pts().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, z), p| {
        (a.min(fx(p.0)), z.max(fx(p.0)))
    });
    let (x_min, x_max) = if x_min.is_finite() && x_max > x_min {
        (x_min, x_max)
    } else {
        (x_min.min(0.0), x_min.max(0.0) + 1.0)
    };
    let (mut s, top, plot_h) = frame(title, y_label, y_max, series);
    let (l, r, _, b) = MARGIN;
    let plot_w = W - l - r;
    let px = |x: f64| l + (fx(x) - x_min) / (x_max - x_min) * plot_w;
    let py = |y: f64| H - b - y / top * plot_h;
    // x ticks: every distinct x of the data.
    let mut xs: Vec<f64> = pts().map(|p| p.0).collect();
    xs.sort_by(f64::total_cmp);
    xs.dedup();
    for x in xs {
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            px(x),
            H - b + 18.0,
            esc(&x_format(x))
        );
    }
    for (i, se) in series.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        let path: Vec<String> = se
            .points
            .iter()
            .filter(|p| p.1.is_finite())
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let _ = write!(
            s,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
            path.join(" ")
        );
        for &(x, y) in se.points.iter().filter(|p| p.1.is_finite()) {
            let _ = write!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{colour}"><title>{}: {} at {}</title></circle>"#,
                px(x),
                py(y),
                esc(&se.name),
                trim(y),
                trim(x)
            );
        }
    }
    let _ = write!(
        s,
        r#"<line x1="{l}" y1="{0}" x2="{1}" y2="{0}" stroke="black"/><text x="{2:.1}" y="{3:.1}" text-anchor="middle">{4}</text></svg>"#,
        H - b,
        W - r,
        l + plot_w / 2.0,
        H - 16.0,
        esc(&format!(
            "{x_label}{}",
            if log_x { " (log scale)" } else { "" }
        ))
    );
    s
}

/// Writes `svg` to `dir/name` (creating `dir`), and says so on stderr.
pub(crate) fn write(dir: &std::path::Path, name: &str, svg: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(name);
    std::fs::write(&path, svg)?;
    eprintln!("chart written to {}", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_and_labels_are_round() {
        assert_eq!(nice_step(100.0, 5.0), 20.0);
        assert_eq!(nice_step(7.0, 5.0), 2.0);
        assert_eq!(short(125_000.0), "125k");
        assert_eq!(short(6414.52), "6.41k");
        assert_eq!(short(2_500_000.0), "2.5M");
        assert_eq!(short(0.25), "0.25");
        assert_eq!(short(3.0), "3");
    }

    #[test]
    fn charts_are_well_formed_svg() {
        let bars = bar_chart(
            "msg/s <&>",
            "msg/s",
            &["publish".into(), "consume".into()],
            &[
                Series::bars("ours", vec![Some(10.0), Some(20.0)]),
                Series::bars("amqprs", vec![None, Some(5.0)]),
            ],
        );
        assert!(bars.starts_with("<svg") && bars.ends_with("</svg>"));
        assert!(bars.contains("&lt;&amp;&gt;"));
        assert_eq!(
            bars.matches("<rect x=").count(),
            3 + 2,
            "3 bars and 2 legend keys"
        );
        let line = line_chart(
            "cpu",
            "channels",
            "µs",
            true,
            axis_number,
            &[Series::line(
                "ours",
                vec![(1.0, 1.0), (10.0, 1.1), (100.0, 1.3)],
            )],
        );
        assert!(line.contains("<polyline") && line.ends_with("</svg>"));
        assert_eq!(line.matches("<circle").count(), 3);
    }
}
