//! Side-by-side text tables, one column per strategy, shared by `simulate` and `experiment` so
//! that both reports line up the same way.

use std::fmt::Display;
use std::io::{self, Write};

/// How a row renders one report's cell.
pub type Cell<R> = fn(&R) -> String;

/// Widths of the label column and of each strategy column.
#[derive(Debug, Clone, Copy)]
pub struct Columns {
    label: usize,
    width: usize,
}

impl Columns {
    /// Room for every label in `labels` (at least 28 characters) and every name in `names`
    /// (at least 10, plus 2 of separation). Widths count characters, not bytes, so labels
    /// with `−` or `→` line up with ASCII ones.
    pub fn new<'a>(
        labels: impl IntoIterator<Item = &'a str>,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        let label = labels
            .into_iter()
            .map(|l| l.chars().count())
            .max()
            .unwrap_or(0)
            .max(28);
        Self {
            label,
            width: column_width(names),
        }
    }

    /// One line: the label left-aligned, then the cells right-aligned in their columns.
    pub fn line<C: Display>(
        &self,
        out: &mut impl Write,
        label: impl Display,
        cells: impl IntoIterator<Item = C>,
    ) -> io::Result<()> {
        let (l, w) = (self.label, self.width);
        write!(out, "{label:<l$}")?;
        for cell in cells {
            write!(out, "{cell:>w$}")?;
        }
        writeln!(out)
    }

    /// Every row of `rows`, one cell per report.
    pub fn rows<R>(
        &self,
        out: &mut impl Write,
        rows: &[(&str, Cell<R>)],
        reports: &[R],
    ) -> io::Result<()> {
        for (label, cell) in rows {
            self.line(out, label, reports.iter().map(cell))?;
        }
        Ok(())
    }

    /// Records per partition, one line per partition labelled by `label(p)`, then the hottest
    /// key's records (the lower bound's other term).
    pub fn partition_loads<L: Display>(
        &self,
        out: &mut impl Write,
        loads: &[(&[u64], u64)],
        label: impl Fn(usize) -> L,
    ) -> io::Result<()> {
        let partitions = loads.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
        for p in 0..partitions {
            let cells = loads
                .iter()
                .map(|(l, _)| l.get(p).map_or(String::new(), u64::to_string));
            self.line(out, label(p), cells)?;
        }
        self.line(out, "hottest key", loads.iter().map(|(_, hot)| hot))
    }
}

/// Width of a strategy column: the longest name (at least 10 characters) plus 2.
pub fn column_width<'a>(names: impl IntoIterator<Item = &'a str>) -> usize {
    names
        .into_iter()
        .map(|n| n.chars().count())
        .max()
        .unwrap_or(0)
        .max(10)
        + 2
}
