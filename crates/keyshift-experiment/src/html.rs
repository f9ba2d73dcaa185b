//! The HTML page of `keyshift experiment`: one self-contained file (no scripts, no external
//! assets) with the verdict, the side-by-side table and three plots rendered by `plotters` to
//! inline SVG:
//!
//! - the end-to-end latency CDF per strategy on a log-x axis, where a saturated partition
//!   shows as a long tail to the right;
//! - per-partition load bars per strategy with the lower bound any order-preserving strategy
//!   faces (`max(mean, hottest key)`), where hash's hot partition stands out;
//! - total consumer-group lag over time per strategy, where a backlog that grows for as long
//!   as the load lasts is a saturated consumer.
//!
//! Everything drawn comes from the [`ExperimentReport`], so the page and `--json` agree.

use std::fmt::Write as _;

use plotters::prelude::*;

use crate::report::{verdict, ExperimentReport, StrategyReport, ROWS};

const WIDTH: u32 = 960;
const HEIGHT: u32 = 420;

/// A failure to draw a plot (plotters reports its backend's errors this way).
#[derive(Debug, thiserror::Error)]
#[error("drawing the {plot} plot failed: {message}")]
pub struct PlotError {
    plot: &'static str,
    message: String,
}

fn plot_err<E: std::fmt::Debug>(plot: &'static str) -> impl Fn(E) -> PlotError {
    move |e| PlotError {
        plot,
        message: format!("{e:?}"),
    }
}

/// A stable colour per strategy, so the same strategy looks the same in every plot.
fn colour(strategy: &str, index: usize) -> RGBColor {
    match strategy {
        "hash" => RGBColor(214, 39, 40),
        "keyshift" => RGBColor(31, 119, 180),
        "slops" => RGBColor(255, 127, 14),
        "pkg" => RGBColor(44, 160, 44),
        "unordered" => RGBColor(148, 103, 189),
        _ => {
            let (r, g, b) = Palette99::pick(index).to_rgba().rgb();
            RGBColor(r, g, b)
        }
    }
}

/// The whole page.
pub fn page(report: &ExperimentReport) -> Result<String, PlotError> {
    let cdf = latency_cdf(&report.strategies)?;
    let load = partition_load(&report.strategies)?;
    let lag = lag_over_time(&report.strategies)?;
    let mut html = String::new();
    let names: Vec<&str> = report
        .strategies
        .iter()
        .map(|s| s.strategy.as_str())
        .collect();
    // Writing into a String cannot fail.
    let _ = write!(
        html,
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>keyshift experiment: {title}</title>
<style>
body {{ font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1000px; color: #222; }}
h1 {{ font-size: 1.5em; margin-bottom: 0.2em; }}
p.setup {{ color: #555; margin-top: 0; }}
ul.verdict {{ font-size: 1.1em; background: #f4f7fb; border-left: 4px solid #1f77b4; padding: 0.6em 1.2em 0.6em 2em; }}
ul.verdict li.problem {{ color: #b00020; font-weight: bold; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ padding: 0.25em 0.9em; border-bottom: 1px solid #ddd; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
thead th {{ border-bottom: 2px solid #444; }}
figure {{ margin: 1.5em 0; }}
figcaption {{ color: #444; margin-top: 0.3em; }}
</style></head><body>
<h1>keyshift experiment: {title}</h1>
<p class="setup">{setup}</p>
<ul class="verdict">
"#,
        title = escape(&names.join(" vs ")),
        setup = escape(&report.setup.describe()),
    );
    for line in verdict(report) {
        let class = if line.starts_with("PROBLEM") {
            " class=\"problem\""
        } else {
            ""
        };
        let _ = writeln!(html, "<li{class}>{}</li>", escape(&line));
    }
    html.push_str("</ul>\n");
    let _ = writeln!(
        html,
        "<figure>{cdf}<figcaption>End-to-end latency (scheduled send → processing done) of \
         records after the warm-up, as a cumulative distribution on a log scale. A curve \
         further left is faster; a long flat tail to the right is records queued behind a \
         saturated partition.</figcaption></figure>"
    );
    html.push_str(&table(report));
    let _ = writeln!(
        html,
        "<figure>{load}<figcaption>Records per partition after the warm-up. The grey line is \
         the lower bound of any order-preserving strategy, max(mean, hottest key): a bar far \
         above it is a partition whose consumer gets more than its share.</figcaption></figure>\n\
         <figure>{lag}<figcaption>Consumer-group lag (records produced but not yet committed, \
         all partitions) over time. A lag that keeps growing while load is offered means a \
         consumer cannot keep up; it drains after the load stops.</figcaption></figure>"
    );
    html.push_str(&partition_table(report));
    html.push_str("</body></html>\n");
    Ok(html)
}

fn table(report: &ExperimentReport) -> String {
    let mut t = String::from("<table><thead><tr><th></th>");
    for s in &report.strategies {
        let _ = write!(t, "<th>{}</th>", escape(&s.strategy));
    }
    t.push_str("</tr></thead><tbody>\n");
    for (label, cell) in ROWS {
        let _ = write!(t, "<tr><td>{}</td>", escape(label));
        for s in &report.strategies {
            let _ = write!(t, "<td>{}</td>", escape(&cell(s)));
        }
        t.push_str("</tr>\n");
    }
    t.push_str("</tbody></table>\n");
    t
}

fn partition_table(report: &ExperimentReport) -> String {
    let mut t = String::from(
        "<h2 style=\"font-size:1.1em\">Per-partition load</h2><table><thead><tr>\
         <th>partition</th>",
    );
    for s in &report.strategies {
        let _ = write!(t, "<th>{}</th>", escape(&s.strategy));
    }
    t.push_str("</tr></thead><tbody>\n");
    let partitions = report
        .strategies
        .iter()
        .map(|s| s.partition_load.len())
        .max()
        .unwrap_or(0);
    for p in 0..partitions {
        let _ = write!(t, "<tr><td>{p}</td>");
        for s in &report.strategies {
            let v = s
                .partition_load
                .get(p)
                .map_or(String::new(), u64::to_string);
            let _ = write!(t, "<td>{v}</td>");
        }
        t.push_str("</tr>\n");
    }
    t.push_str("<tr><td>hottest key</td>");
    for s in &report.strategies {
        let _ = write!(t, "<td>{}</td>", s.hottest_key_records);
    }
    t.push_str("</tr></tbody></table>\n");
    t
}

/// Minimal HTML escaping for text and attribute values.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Latency CDF per strategy, log-x.
fn latency_cdf(reports: &[StrategyReport]) -> Result<String, PlotError> {
    const PLOT: &str = "latency CDF";
    let e = plot_err(PLOT);
    let points = reports.iter().flat_map(|r| r.latency_cdf.iter());
    let (mut lo, mut hi) = (f64::INFINITY, 0.0f64);
    for p in points {
        if p[0] > 0.0 {
            lo = lo.min(p[0]);
        }
        hi = hi.max(p[0]);
    }
    if !lo.is_finite() || hi <= 0.0 {
        (lo, hi) = (0.1, 10.0);
    }
    // Whole decades around the data make the log axis read naturally.
    let lo = 10f64.powf(lo.max(0.01).log10().floor());
    let hi = 10f64.powf(hi.max(lo * 10.0).log10().ceil());
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(&e)?;
        let mut chart = ChartBuilder::on(&root)
            .caption("End-to-end latency CDF", ("sans-serif", 22))
            .margin(12)
            // Room for the last decade's label, which is centred on the axis end.
            .margin_right(36)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d((lo..hi).log_scale(), 0.0f64..1.0)
            .map_err(&e)?;
        chart
            .configure_mesh()
            .x_desc("latency (ms, log scale)")
            .y_desc("fraction of records ≤ latency")
            .x_label_formatter(&|x| format_ms(*x))
            .y_labels(11)
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 15))
            .draw()
            .map_err(&e)?;
        let grey = RGBColor(150, 150, 150);
        chart
            .draw_series(LineSeries::new(
                [(lo, 0.99), (hi, 0.99)],
                grey.stroke_width(1),
            ))
            .map_err(&e)?
            .label("p99")
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], grey.stroke_width(1))
            });
        for (i, r) in reports.iter().enumerate() {
            let c = colour(&r.strategy, i);
            chart
                .draw_series(LineSeries::new(
                    r.latency_cdf.iter().map(|p| (p[0].max(lo), p[1])),
                    c.stroke_width(3),
                ))
                .map_err(&e)?
                .label(format!("{} (p99 {:.0} ms)", r.strategy, r.p99_ms))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(3))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .label_font(("sans-serif", 15))
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()
            .map_err(&e)?;
        root.present().map_err(&e)?;
    }
    Ok(svg)
}

fn format_ms(x: f64) -> String {
    if x >= 1.0 {
        format!("{x:.0}")
    } else {
        format!("{x}")
    }
}

/// Per-partition load bars, one colour per strategy, with the lower bound as a line.
fn partition_load(reports: &[StrategyReport]) -> Result<String, PlotError> {
    const PLOT: &str = "partition load";
    let e = plot_err(PLOT);
    let partitions = reports
        .iter()
        .map(|r| r.partition_load.len())
        .max()
        .unwrap_or(0)
        .max(1);
    let top = reports
        .iter()
        .flat_map(|r| r.partition_load.iter().copied())
        .max()
        .unwrap_or(0)
        .max(1) as f64
        * 1.1;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(&e)?;
        let mut chart = ChartBuilder::on(&root)
            .caption("Records per partition", ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d(-0.5f64..partitions as f64 - 0.5, 0.0f64..top)
            .map_err(&e)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_desc("partition")
            .y_desc("records (after warm-up)")
            .x_labels(partitions + 1)
            .x_label_formatter(&|x| {
                // Labels only at the bar groups' centres.
                if (x - x.round()).abs() < 1e-6 && *x >= 0.0 {
                    format!("{}", x.round() as i64)
                } else {
                    String::new()
                }
            })
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 15))
            .draw()
            .map_err(&e)?;
        let n = reports.len().max(1) as f64;
        let group = 0.8;
        let bar = group / n;
        for (i, r) in reports.iter().enumerate() {
            let c = colour(&r.strategy, i);
            let left = -group / 2.0 + i as f64 * bar;
            chart
                .draw_series(r.partition_load.iter().enumerate().map(|(p, &load)| {
                    let x0 = p as f64 + left;
                    Rectangle::new([(x0, 0.0), (x0 + bar * 0.92, load as f64)], c.filled())
                }))
                .map_err(&e)?
                .label(r.strategy.clone())
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], c.filled()));
        }
        // The bound is the same for every strategy up to warm-up noise; draw the largest.
        let bound = reports
            .iter()
            .map(|r| {
                let total: u64 = r.partition_load.iter().sum();
                let mean = total as f64 / r.partition_load.len().max(1) as f64;
                mean.max(r.hottest_key_records as f64)
            })
            .fold(0.0f64, f64::max);
        if bound > 0.0 {
            let grey = RGBColor(110, 110, 110);
            chart
                .draw_series(LineSeries::new(
                    [(-0.5, bound), (partitions as f64 - 0.5, bound)],
                    grey.stroke_width(2),
                ))
                .map_err(&e)?
                .label("max(mean, hottest key)")
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], grey.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font(("sans-serif", 15))
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()
            .map_err(&e)?;
        root.present().map_err(&e)?;
    }
    Ok(svg)
}

/// Total consumer-group lag over time, one line per strategy.
fn lag_over_time(reports: &[StrategyReport]) -> Result<String, PlotError> {
    const PLOT: &str = "lag";
    let e = plot_err(PLOT);
    let t_max = reports
        .iter()
        .flat_map(|r| r.lag.iter().map(|s| s.t_s))
        .fold(1.0f64, f64::max);
    let lag_max = reports
        .iter()
        .flat_map(|r| r.lag.iter().map(|s| s.total))
        .max()
        .unwrap_or(0)
        .max(10) as f64
        * 1.1;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(&e)?;
        let mut chart = ChartBuilder::on(&root)
            .caption("Consumer-group lag over time", ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0f64..t_max, 0.0f64..lag_max)
            .map_err(&e)?;
        chart
            .configure_mesh()
            .x_desc("seconds since the first send")
            .y_desc("records not yet committed")
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 15))
            .draw()
            .map_err(&e)?;
        for (i, r) in reports.iter().enumerate() {
            let c = colour(&r.strategy, i);
            chart
                .draw_series(LineSeries::new(
                    r.lag.iter().map(|s| (s.t_s, s.total as f64)),
                    c.stroke_width(2),
                ))
                .map_err(&e)?
                .label(r.strategy.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font(("sans-serif", 15))
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()
            .map_err(&e)?;
        root.present().map_err(&e)?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use keyshift_core::sim::SimConfig;
    use keyshift_core::stats::LatencyHistogram;

    use super::*;
    use crate::report::{LagSample, Measured, Setup};

    fn report() -> ExperimentReport {
        let config = SimConfig::default();
        let mk = |name: &str, ms: f64, loads: Vec<u64>| {
            let mut latency = LatencyHistogram::new();
            for i in 1..=200 {
                latency.record_secs(ms * f64::from(i) / 100.0 / 1e3);
            }
            StrategyReport::new(
                Measured {
                    strategy: name.into(),
                    preserves_order: true,
                    produced: 200,
                    consumed: 200,
                    partition_load: loads,
                    hottest_key_records: 20,
                    latency,
                    duration_s: 5.0,
                    send_s: 5.0,
                    drained: true,
                    lag: (0u32..20)
                        .map(|i| LagSample {
                            t_s: f64::from(i) * 0.25,
                            total: i as u64 * 3,
                            max_partition: i as u64,
                        })
                        .collect(),
                    ..Measured::default()
                },
                &config,
            )
        };
        ExperimentReport::new(
            Setup::new(&config, "embedded <tansu>".into()),
            vec![
                mk("hash", 500.0, vec![90, 30, 40, 40]),
                mk("keyshift", 40.0, vec![50, 50, 50, 50]),
            ],
        )
    }

    #[test]
    fn page_is_self_contained_with_three_plots_and_the_table() {
        let html = page(&report()).unwrap();
        assert_eq!(html.matches("<svg").count(), 3, "three inline SVG plots");
        assert!(html.contains("<table>"));
        assert!(html.contains("keyshift experiment: hash vs keyshift"));
        // Setup text is escaped, and nothing is loaded from elsewhere.
        assert!(html.contains("embedded &lt;tansu&gt;"));
        assert!(!html.contains("<script"));
        assert!(!html.contains("src=\"http"));
    }

    #[test]
    fn empty_runs_still_draw() {
        let mut r = report();
        for s in &mut r.strategies {
            s.latency_cdf.clear();
            s.lag.clear();
            s.partition_load = vec![0; 4];
        }
        let html = page(&r).unwrap();
        assert_eq!(html.matches("<svg").count(), 3);
    }
}
