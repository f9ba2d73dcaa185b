//! Renders simulation reports: a text table with strategies side by side (rows = metrics,
//! columns = strategies), one JSON value, or CSV with a header line.
//!
//! JSON is the reports' own serialisation, so its field names are the core's
//! [`SimReport`] fields. CSV uses the same names for its columns ([`CSV_COLUMNS`]), taken from
//! that serialisation so the two cannot drift apart.

use std::io::{self, Write};

use keyshift_core::sim::{SimConfig, SimReport, SweepReport, WorkloadKind};
use serde::Serialize;
use serde_json::Value;

use crate::cmd::table::{self, Columns};

/// Scalar report fields printed as CSV columns, in order (`partition_load` follows as one
/// `;`-separated column). A dotted name is a field of a nested object (`recovery.unrecovered`);
/// a `null` (no recovered disturbance) prints as an empty cell.
pub const CSV_COLUMNS: &[&str] = &[
    "strategy",
    "preserves_order",
    "utilization",
    "service_ms",
    "produced",
    "processed",
    "duration_s",
    "throughput_rps",
    "measured",
    "p50_ms",
    "p99_ms",
    "p999_ms",
    "max_ms",
    "mean_ms",
    "hottest_key_records",
    "imbalance_max_over_mean",
    "imbalance_max_over_bound",
    "migrations",
    "fences",
    "order_violations",
    "producer_held",
    "producer_held_ms",
    "parked_records",
    "parked_ms",
    "parked_p99_ms",
    "parked_max_ms",
    "migrations_after_warmup",
    "migrations_per_minute_after_warmup",
    "warnings",
    "recovery.window_records",
    "recovery.disturbances",
    "recovery.unrecovered",
    "recovery.recover_s_p50",
    "recovery.recover_s_max",
    "recovery.moves_p50",
    "recovery.moves_max",
];

/// Prints `value` as one JSON document followed by a newline.
pub fn json<T: Serialize>(out: &mut impl Write, value: &T) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value)?;
    writeln!(out)
}

/// One line describing the simulated setup, shared by the text outputs; a sweep varies the
/// service time with the utilisation, so it states the rule instead of one value.
fn describe(config: &SimConfig, sweep: bool) -> String {
    let keys = match config.workload {
        WorkloadKind::Zipf => format!(
            "zipf(s={}, v={}) over {} keys",
            config.zipf_s, config.zipf_v, config.keys
        ),
        WorkloadKind::Targeted => format!("targeted hot spot over {} keys", config.keys),
        WorkloadKind::Uniform => format!("uniform over {} keys", config.keys),
    };
    let service = if sweep {
        "utilization × consumers ÷ rate".to_string()
    } else {
        format!("{:.2} ms", config.mean_service_secs() * 1e3)
    };
    let fencing = if config.fencing {
        ""
    } else {
        ", NO FENCING (ablation)"
    };
    let hot = config.hot_key_record().map_or(String::new(), |from| {
        format!(
            ", a new hot key with {} % of arrivals from record {from}",
            config.hot_key_share * 100.0
        )
    });
    // A sweep prints no recovery figures.
    let window = if sweep {
        String::new()
    } else {
        format!(", recovery windows of {} records", config.windowing().size)
    };
    format!(
        "{} records at {} rec/s ({} arrivals), {keys}, {} partitions → {} consumers ({} \
         assignor), {} service with mean {service}, seed {}, warm-up {:.0} \
         %{hot}{fencing}{window}",
        config.records,
        config.rate,
        format!("{:?}", config.arrivals).to_lowercase(),
        config.partitions,
        config.consumers,
        format!("{:?}", config.assignor).to_lowercase(),
        format!("{:?}", config.service).to_lowercase(),
        config.seed,
        config.warmup * 100.0,
    )
}

type Cell = table::Cell<SimReport>;

/// Rows of the side-by-side table: label and how to render one report's cell.
const ROWS: &[(&str, Cell)] = &[
    ("throughput (rec/s)", |r| format!("{:.1}", r.throughput_rps)),
    ("latency p50 (ms)", |r| format!("{:.1}", r.p50_ms)),
    ("latency p99 (ms)", |r| format!("{:.1}", r.p99_ms)),
    ("latency p99.9 (ms)", |r| format!("{:.1}", r.p999_ms)),
    ("latency max (ms)", |r| format!("{:.1}", r.max_ms)),
    ("latency mean (ms)", |r| format!("{:.1}", r.mean_ms)),
    ("imbalance max/mean", |r| {
        format!("{:.3}", r.imbalance_max_over_mean)
    }),
    ("imbalance max/bound", |r| {
        format!("{:.3}", r.imbalance_max_over_bound)
    }),
    ("migrations", |r| r.migrations.to_string()),
    ("migrations after warm-up", |r| {
        r.migrations_after_warmup.to_string()
    }),
    ("  per minute", |r| {
        format!("{:.2}", r.migrations_per_minute_after_warmup)
    }),
    ("fences", |r| r.fences.to_string()),
    ("order violations", |r| r.order_violations.to_string()),
    ("held in producer (records)", |r| {
        r.producer_held.to_string()
    }),
    ("held in producer (ms total)", |r| {
        format!("{:.1}", r.producer_held_ms)
    }),
    ("parked (records)", |r| r.parked_records.to_string()),
    ("parked (ms total)", |r| format!("{:.1}", r.parked_ms)),
    ("parked p99 (ms)", |r| format!("{:.1}", r.parked_p99_ms)),
    ("parked max (ms)", |r| format!("{:.1}", r.parked_max_ms)),
    ("disturbances", |r| r.recovery.disturbances.to_string()),
    ("  never recovered", |r| r.recovery.unrecovered.to_string()),
    ("  time to recover p50 (s)", |r| {
        seconds(r.recovery.recover_s_p50)
    }),
    ("  time to recover max (s)", |r| {
        seconds(r.recovery.recover_s_max)
    }),
    ("  moves to recover p50", |r| count(r.recovery.moves_p50)),
    ("  moves to recover max", |r| count(r.recovery.moves_max)),
    ("processed", |r| r.processed.to_string()),
    ("duration (s)", |r| format!("{:.1}", r.duration_s)),
];

/// Seconds with one decimal, or `-` when no disturbance recovered.
fn seconds(s: Option<f64>) -> String {
    s.map_or("-".to_string(), |s| format!("{s:.1}"))
}

/// A count, or `-` when no disturbance recovered.
fn count(n: Option<u64>) -> String {
    n.map_or("-".to_string(), |n| n.to_string())
}

/// The side-by-side text table of one run per strategy, then per-partition loads.
pub fn text_runs(
    out: &mut impl Write,
    config: &SimConfig,
    reports: &[SimReport],
) -> io::Result<()> {
    writeln!(out, "{}", describe(config, false))?;
    writeln!(out)?;
    let cols = Columns::new(
        ROWS.iter().map(|(l, _)| *l),
        reports.iter().map(|r| r.strategy.as_str()),
    );
    cols.line(out, "", reports.iter().map(|r| &r.strategy))?;
    cols.rows(out, ROWS, reports)?;
    writeln!(out)?;
    writeln!(out, "per-partition load (records appended after warm-up)")?;
    cols.line(out, "partition", reports.iter().map(|r| &r.strategy))?;
    let loads: Vec<(&[u64], u64)> = reports
        .iter()
        .map(|r| (r.partition_load.as_slice(), r.hottest_key_records))
        .collect();
    cols.partition_loads(out, &loads, |p| p)?;
    // The workload is the same for every strategy: warn once.
    if let Some(r) = reports.iter().find(|r| !r.warnings.is_empty()) {
        writeln!(out)?;
        for w in &r.warnings {
            writeln!(out, "WARNING: {w}")?;
        }
    }
    Ok(())
}

/// A JSON value as one CSV field (strings quoted only when they need it).
fn csv_field(v: &Value) -> String {
    match v {
        Value::String(s) if s.contains([',', '"', '\n']) => {
            format!("\"{}\"", s.replace('"', "\"\""))
        }
        Value::String(s) => s.clone(),
        Value::Array(items) => csv_field(&Value::String(
            items
                .iter()
                .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_string))
                .collect::<Vec<_>>()
                .join(";"),
        )),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The JSON pointer of a (possibly dotted) CSV column name: `recovery.unrecovered` →
/// `/recovery/unrecovered`.
fn json_pointer(column: &str) -> String {
    format!("/{}", column.replace('.', "/"))
}

fn csv_row(report: &SimReport) -> io::Result<Vec<String>> {
    let value = serde_json::to_value(report)?;
    let mut row: Vec<String> = CSV_COLUMNS
        .iter()
        .map(|c| csv_field(value.pointer(&json_pointer(c)).unwrap_or(&Value::Null)))
        .collect();
    row.push(csv_field(&value["partition_load"]));
    Ok(row)
}

/// One CSV row per strategy.
pub fn csv_runs(out: &mut impl Write, reports: &[SimReport]) -> io::Result<()> {
    writeln!(out, "{},partition_load", CSV_COLUMNS.join(","))?;
    for r in reports {
        writeln!(out, "{}", csv_row(r)?.join(","))?;
    }
    Ok(())
}

/// One CSV row per (utilisation, strategy), with whether p99 met the bound.
pub fn csv_sweep(out: &mut impl Write, sweep: &SweepReport) -> io::Result<()> {
    writeln!(
        out,
        "within_bound,p99_bound_ms,{},partition_load",
        CSV_COLUMNS.join(",")
    )?;
    for p in &sweep.points {
        writeln!(
            out,
            "{},{},{}",
            p.within_bound,
            sweep.p99_bound_ms,
            csv_row(&p.report)?.join(",")
        )?;
    }
    Ok(())
}

/// p99 per strategy per utilisation, then the highest sustained utilisation per strategy.
pub fn text_sweep(out: &mut impl Write, config: &SimConfig, sweep: &SweepReport) -> io::Result<()> {
    writeln!(out, "{}", describe(config, true))?;
    writeln!(out)?;
    let names: Vec<&str> = sweep.summary.iter().map(|s| s.strategy.as_str()).collect();
    let w = table::column_width(names.iter().copied());
    writeln!(
        out,
        "p99 latency (ms) by utilisation; * = above the {} ms bound",
        sweep.p99_bound_ms
    )?;
    write!(out, "{:12}", "utilization")?;
    for n in &names {
        write!(out, "{n:>w$}")?;
    }
    writeln!(out)?;
    let mut levels: Vec<f64> = sweep.points.iter().map(|p| p.utilization).collect();
    levels.dedup();
    for u in levels {
        write!(out, "{u:<12.2}")?;
        for n in &names {
            let cell = sweep
                .points
                .iter()
                .find(|p| p.utilization == u && p.strategy == *n)
                .map_or(String::new(), |p| {
                    format!(
                        "{:.1}{}",
                        p.report.p99_ms,
                        if p.within_bound { " " } else { "*" }
                    )
                });
            write!(out, "{cell:>w$}")?;
        }
        writeln!(out)?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "highest utilisation sustained with p99 ≤ {} ms (every lower level too):",
        sweep.p99_bound_ms
    )?;
    for s in &sweep.summary {
        let max = s
            .max_sustained_utilization
            .map_or("none in range".to_string(), |u| format!("{u:.2}"));
        let ratio = s
            .ratio_vs_hash
            .map_or(String::new(), |r| format!("  ({r:.2}× hash)"));
        writeln!(out, "  {:w$}{max:>14}{ratio}", s.strategy)?;
    }
    // Infeasibility depends on the service time, so on the level: warn for the first level
    // where it shows (higher ones have it too).
    if let Some(p) = sweep.points.iter().find(|p| !p.report.warnings.is_empty()) {
        writeln!(out)?;
        for w in &p.report.warnings {
            writeln!(out, "WARNING from utilisation {:.2} on: {w}", p.utilization)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_quote_only_when_needed() {
        assert_eq!(csv_field(&Value::from("hash")), "hash");
        assert_eq!(csv_field(&Value::from("a,b")), "\"a,b\"");
        assert_eq!(csv_field(&serde_json::json!([1, 2, 3])), "1;2;3");
        assert_eq!(
            csv_field(&serde_json::json!(["key a needs 1.5 consumers, so", "b"])),
            "\"key a needs 1.5 consumers, so;b\""
        );
        assert_eq!(csv_field(&Value::Null), "");
    }
}
