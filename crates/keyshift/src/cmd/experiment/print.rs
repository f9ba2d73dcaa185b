//! The text rendering of `keyshift experiment`'s report: the side-by-side table (rows =
//! metrics, columns = strategies, [`ROWS`]), per-partition loads, the `--trace` breakdown and
//! the verdict, lined up like `keyshift simulate`'s.

use std::io::{self, Write};

use keyshift_experiment::report::{verdict, ExperimentReport, StrategyReport, ROWS};
use keyshift_experiment::trace::LatencyBreakdown;

use crate::cmd::table::Columns;

/// Prints the side-by-side table, then per-partition loads and a one-line verdict.
pub fn text(out: &mut impl Write, report: &ExperimentReport) -> io::Result<()> {
    let rs = &report.strategies;
    writeln!(out, "{}", report.setup.describe())?;
    writeln!(out)?;
    let cols = Columns::new(
        ROWS.iter().map(|(l, _)| *l),
        rs.iter().map(|r| r.strategy.as_str()),
    );
    cols.line(out, "", rs.iter().map(|r| &r.strategy))?;
    cols.rows(out, ROWS, rs)?;
    writeln!(out)?;
    writeln!(out, "per-partition load (records after warm-up)")?;
    let loads: Vec<(&[u64], u64)> = rs
        .iter()
        .map(|r| (r.partition_load.as_slice(), r.hottest_key_records))
        .collect();
    cols.partition_loads(out, &loads, |p| format!("partition {p}"))?;
    writeln!(out)?;
    if rs.iter().any(|r| r.latency_breakdown.is_some()) {
        breakdown_text(out, rs)?;
        writeln!(out)?;
    }
    for line in verdict(report) {
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// The `--trace` section: per part, the mean per record with its share of end-to-end, and
/// the p99.
fn breakdown_text(out: &mut impl Write, rs: &[StrategyReport]) -> io::Result<()> {
    writeln!(out, "where latency went (--trace), ms per record")?;
    let labels: Vec<String> = ["producer wait", "broker", "queueing", "parked", "service"]
        .iter()
        .flat_map(|p| [format!("{p} mean (share)"), format!("{p} p99")])
        .chain(["end-to-end mean".to_owned(), "records".to_owned()])
        .collect();
    // Columns are sized by name; the widest cell here (`10000.0 (100%)`) sizes them too.
    let cols = Columns::new(
        labels.iter().map(String::as_str),
        rs.iter()
            .map(|r| r.strategy.as_str())
            .chain(["10000.0 (100%)"]),
    );
    cols.line(out, "", rs.iter().map(|r| &r.strategy))?;
    let cell = |r: &StrategyReport, f: &dyn Fn(&LatencyBreakdown) -> String| {
        r.latency_breakdown.as_ref().map_or("-".to_owned(), f)
    };
    for i in 0..5 {
        cols.line(
            out,
            &labels[2 * i],
            rs.iter().map(|r| {
                cell(r, &|b| {
                    let p = b.parts()[i].1;
                    format!("{:.1} ({:.0}%)", p.mean_ms, p.share * 100.0)
                })
            }),
        )?;
        cols.line(
            out,
            &labels[2 * i + 1],
            rs.iter()
                .map(|r| cell(r, &|b| format!("{:.1}", b.parts()[i].1.p99_ms))),
        )?;
    }
    cols.line(
        out,
        "end-to-end mean",
        rs.iter()
            .map(|r| cell(r, &|b| format!("{:.1}", b.e2e_mean_ms))),
    )?;
    cols.line(
        out,
        "records",
        rs.iter().map(|r| cell(r, &|b| b.records.to_string())),
    )
}
