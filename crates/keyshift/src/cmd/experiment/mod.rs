//! `keyshift experiment`: the real-broker counterpart of `keyshift simulate`. For each chosen
//! strategy in turn it runs load generator → keyshift producer → Kafka → N ordered workers on
//! a fresh topic, then prints one side-by-side report and writes it as JSON and as an HTML
//! page with plots.
//!
//! - [`args`]: flags (shared with `simulate` where they mean the same) → a validated
//!   [`Plan`](keyshift_experiment::Plan);
//! - the `keyshift-experiment` crate runs it (broker, topic, workers, producers, open-loop
//!   load, drain, lag sampling; with `--dashboard`, `keyshift dashboard`'s page following the
//!   live run's topic) and renders the JSON and the HTML page;
//! - [`print`]: the text report on stdout.
//!
//! The command fails (exit 1) after printing the report when a record was lost or an
//! order-preserving strategy broke per-key order: those are correctness failures, not
//! performance figures.

mod args;
mod print;

use std::fs;
use std::io::{self, Write};

use anyhow::Context as _;
use keyshift_experiment::{html, report, DashboardUnavailable};

use crate::exit::FlagError;

pub use args::ExperimentArgs;

/// Runs `keyshift experiment`.
pub fn run(args: ExperimentArgs) -> anyhow::Result<()> {
    let plan = args.resolve()?;
    // Check the output paths before spending minutes on the runs.
    for path in plan.json.iter().chain(plan.html.iter()) {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            anyhow::ensure!(
                dir.is_dir(),
                "cannot write {}: directory {} does not exist",
                path.display(),
                dir.display()
            );
        }
    }
    let report = keyshift_experiment::run(&plan).map_err(|e| {
        match e.downcast::<DashboardUnavailable>() {
            Ok(d) => anyhow::Error::from(FlagError::new("--dashboard", d.to_string())),
            Err(e) => e,
        }
    })?;
    let mut out = io::stdout().lock();
    print::text(&mut out, &report)?;
    out.flush()?;
    if let Some(path) = &plan.json {
        let mut bytes = Vec::new();
        report::json(&mut bytes, &report)?;
        fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("JSON report: {}", path.display());
    }
    if let Some(path) = &plan.html {
        let page = html::page(&report)?;
        fs::write(path, page).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("HTML report: {}", path.display());
    }
    let problems = report.problems();
    anyhow::ensure!(
        problems.is_empty(),
        "the experiment found correctness problems: {}",
        problems.join("; ")
    );
    Ok(())
}
