//! The table `keyshift lag` prints: one row per partition, then one summary line per group.
//!
//! Lag in seconds carries how it was obtained: a plain number is exact (the first unconsumed
//! record's timestamp), `~` marks an interpolated value and `>=` a lower bound; `-` is unknown.

use std::io::{self, Write};

use keyshift_core::lag::LagSecondsSource;
use keyshift_kafka::lag::{GroupLag, PartitionLag};

const HEADER: [&str; 12] = [
    "GROUP",
    "TOPIC",
    "PARTITION",
    "COMMITTED",
    "END",
    "LAG",
    "LAG_SECONDS",
    "PRODUCED/S",
    "CONSUMED/S",
    "DRAIN_S",
    "STATUS",
    "MEMBER",
];

fn opt(value: Option<f64>, precision: usize) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.precision$}"))
}

fn lag_seconds(p: &PartitionLag) -> String {
    match (p.lag_seconds, p.lag_seconds_source) {
        (Some(v), Some(LagSecondsSource::Interpolated)) => format!("~{v:.1}"),
        (Some(v), Some(LagSecondsSource::LowerBound)) => format!(">={v:.1}"),
        (Some(v), _) => format!("{v:.1}"),
        (None, _) => "-".to_owned(),
    }
}

fn row(g: &GroupLag, p: &PartitionLag) -> [String; 12] {
    [
        g.group.clone(),
        p.topic.clone(),
        p.partition.to_string(),
        p.committed_offset
            .map_or_else(|| "-".to_owned(), |c| c.to_string()),
        p.end_offset.to_string(),
        p.lag.to_string(),
        lag_seconds(p),
        opt(p.production_rate, 1),
        opt(p.consumption_rate, 1),
        opt(p.time_to_drain_secs, 1),
        p.status.to_string(),
        p.member.clone().unwrap_or_else(|| "-".to_owned()),
    ]
}

/// Prints the partition rows with aligned columns, then a line per group.
pub fn table(out: &mut impl Write, groups: &[GroupLag]) -> io::Result<()> {
    if groups.is_empty() {
        return writeln!(out, "no consumer groups");
    }
    let rows: Vec<[String; 12]> = groups
        .iter()
        .flat_map(|g| g.partitions.iter().map(move |p| row(g, p)))
        .collect();
    let mut widths = HEADER.map(str::len);
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |out: &mut dyn Write, cells: &[String]| -> io::Result<()> {
        let mut text = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            // Names left-aligned, numbers right-aligned, the last column unpadded.
            let numeric = (2..=9).contains(&i);
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else if numeric {
                text.push_str(&format!("{cell:>w$}  "));
            } else {
                text.push_str(&format!("{cell:<w$}  "));
            }
        }
        writeln!(out, "{}", text.trim_end())
    };
    line(out, &HEADER.map(str::to_owned))?;
    for r in &rows {
        line(out, r)?;
    }
    writeln!(out)?;
    for g in groups {
        writeln!(
            out,
            "group {}: {} ({}, {}), lag {} records, max {} s, drain {} s, {} partition{}",
            g.group,
            g.status,
            g.state,
            match g.members {
                Some(1) => "1 member".to_owned(),
                Some(n) => format!("{n} members"),
                None => "members unknown".to_owned(),
            },
            g.lag,
            opt(g.max_lag_seconds, 1),
            opt(g.time_to_drain_secs, 1),
            g.partition_count,
            if g.partition_count == 1 { "" } else { "s" },
        )?;
    }
    Ok(())
}
