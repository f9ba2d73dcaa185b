//! `keyshift simulate`: run the discrete-event simulator for several strategies side by side,
//! or sweep aggregate utilisation to find the load each strategy sustains within a p99 bound.
//!
//! Flags ([`SimulateArgs`]) resolve into one [`SimConfig`]; every (strategy, utilisation) run
//! is independent and deterministic, so runs are spread over threads and the output does not
//! depend on how many there are. [`print`] renders the reports as a text table, JSON or CSV.

mod print;

use std::io::{self, Write};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use clap::Args;
use keyshift_core::sim::{self, SimConfig, SimReport, SweepSpec};
use keyshift_core::strategy::StrategyConfig;

use super::strategy_flags::StrategyFlags;
use super::workload_flags::{
    at_least_one_u64, at_least_one_usize, finite_f64, non_negative_f64, parse_strategy,
    positive_f64, utilization, ArrivalsArg, ServiceArg, WorkloadFlags,
};
use crate::exit::FlagError;

/// Flags of `keyshift simulate`. Defaults reproduce the seed workload at 65 % utilisation.
#[derive(Debug, Args)]
#[command(
    about = "Simulate producer → partitions → consumers for several strategies, side by side",
    long_about = "Simulate producer → partitions → consumers for several strategies, side by \
                  side.\n\nA deterministic discrete-event simulation: open-loop arrivals, the \
                  strategy's routing, the real fenced-migration protocol (producer pause for the \
                  fence round trip, consumers parking records until the old partition's commit \
                  passes the fence) and single-server consumers. Prints throughput, latency \
                  quantiles, per-partition load and imbalance, migrations, parked time and \
                  per-key order violations for each strategy, and how long the placement took \
                  to recover from each change of the load's shape (the targeted hot spot \
                  moving, a sudden hot key from --hot-key-at): windows of 1000 arrivals per \
                  partition, a disturbance when the first window after the change has \
                  max/bound above 1.1, recovered at the first later window at or below \
                  it.\n\nWith --sweep, repeats the runs \
                  over a range of utilisations and reports the highest one each strategy \
                  sustains with p99 latency within --p99-bound-ms, and its ratio to hash's."
)]
pub struct SimulateArgs {
    /// Strategies to compare, comma-separated, printed side by side in this order
    /// (hash, slops, keyshift, pkg, unordered).
    #[arg(long, value_delimiter = ',', value_parser = parse_strategy,
          default_value = "hash,slops,keyshift")]
    strategies: Vec<String>,

    #[command(flatten)]
    workload: WorkloadFlags,

    /// Offered load in records per second.
    #[arg(long, allow_negative_numbers = true, value_parser = positive_f64, default_value_t = SimConfig::default().rate)]
    rate: f64,

    /// Spacing of arrivals: evenly spaced, or a Poisson process at --rate.
    #[arg(long, value_enum, default_value_t = ArrivalsArg::Poisson)]
    arrivals: ArrivalsArg,

    /// Aggregate utilisation of the consumer group, a fraction (0.65 = 65 %): sets the mean
    /// service time to utilization × consumers ÷ rate.
    #[arg(long, allow_negative_numbers = true, value_parser = utilization, default_value_t = SimConfig::default().utilization)]
    utilization: f64,

    /// Per-record service time: always the mean, or exponential around it.
    #[arg(long, value_enum, default_value_t = ServiceArg::Fixed)]
    service: ServiceArg,

    /// Records to produce per run.
    #[arg(long, value_parser = at_least_one_u64, default_value_t = SimConfig::default().records)]
    records: u64,

    /// Seed of every random choice; the same seed gives the same output.
    #[arg(long, default_value_t = SimConfig::default().seed)]
    seed: u64,

    /// Round trip of a fence's delivery report in ms: how long a moving key's records wait in
    /// the producer.
    #[arg(long, allow_negative_numbers = true, value_parser = non_negative_f64,
          default_value_t = SimConfig::default().fence_rtt_ms)]
    fence_rtt_ms: f64,

    /// How often consumers commit processed offsets, in ms (a fence triggers a commit at once).
    #[arg(long, allow_negative_numbers = true, value_parser = positive_f64,
          default_value_t = SimConfig::default().commit_interval_ms)]
    commit_interval_ms: f64,

    /// How often a consumer with parked records fetches the group's committed offsets, in ms.
    #[arg(long, allow_negative_numbers = true, value_parser = positive_f64,
          default_value_t = SimConfig::default().barrier_poll_ms)]
    barrier_poll_ms: f64,

    /// How often strategies get per-partition throughput and lag, in ms.
    #[arg(long, allow_negative_numbers = true, value_parser = positive_f64,
          default_value_t = SimConfig::default().feedback_interval_ms)]
    feedback_interval_ms: f64,

    /// Fraction of records (by arrival) left out of latency and load figures as warm-up.
    #[arg(long, allow_negative_numbers = true, value_parser = finite_f64, default_value_t = SimConfig::default().warmup)]
    warmup: f64,

    /// Sudden hot key: when this fraction of the records has been generated (0.5 = half-way)
    /// a key never seen before appears and carries --hot-key-share of all arrivals from then
    /// on; the rest follow --workload. Must fall after --warmup and leave two measuring windows
    /// (see --recovery-window) before the end. The report says whether each strategy
    /// recovered (max/bound ≤ 1.1 again), how fast and with how many moves.
    #[arg(long, value_name = "FRACTION", allow_negative_numbers = true, value_parser = finite_f64)]
    hot_key_at: Option<f64>,

    /// Share of all arrivals the sudden hot key carries, a fraction in (0, 1].
    #[arg(long, value_name = "SHARE", requires = "hot_key_at", allow_negative_numbers = true,
          value_parser = finite_f64, default_value_t = SimConfig::default().hot_key_share)]
    hot_key_share: f64,

    /// Records per partition in one window of the recovery measurement (max/bound per
    /// window) [default: 1000, which keeps a balanced placement's sampling noise below the 1.1
    /// limit, or one rotation of --workload targeted (3000 records in all) if that is shorter,
    /// so each rotation is judged on its own window].
    #[arg(long, value_name = "RECORDS", value_parser = at_least_one_u64)]
    recovery_window: Option<u64>,

    /// Ablation: move keys without the fenced-migration protocol (no fence, no barrier), to
    /// show the order violations it prevents.
    #[arg(long)]
    no_fencing: bool,

    /// Sweep utilisation FROM:TO:STEP (e.g. 0.50:0.95:0.05) instead of one --utilization.
    #[arg(long, value_name = "FROM:TO:STEP", value_parser = parse_sweep)]
    sweep: Option<SweepSpec>,

    /// p99 latency bound in ms (simulated time) a sweep level must meet to count as sustained.
    #[arg(long, allow_negative_numbers = true, value_parser = positive_f64, default_value_t = 100.0)]
    p99_bound_ms: f64,

    /// Print one JSON value (an array of reports; an object for --sweep).
    #[arg(long, conflicts_with = "csv")]
    json: bool,

    /// Print CSV with a header line (one row per strategy; per level and strategy for --sweep).
    #[arg(long)]
    csv: bool,

    /// Runs to simulate in parallel [default: the number of CPUs].
    #[arg(long, value_parser = at_least_one_usize)]
    jobs: Option<usize>,

    #[command(flatten)]
    strategy: StrategyFlags,
}

/// How reports are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Text,
    Json,
    Csv,
}

impl SimulateArgs {
    /// The simulator configuration these flags describe (not yet validated).
    fn config(&self, strategy: StrategyConfig) -> SimConfig {
        let mut config = SimConfig {
            rate: self.rate,
            arrivals: self.arrivals.into(),
            utilization: self.utilization,
            records: self.records,
            seed: self.seed,
            service: self.service.into(),
            fence_rtt_ms: self.fence_rtt_ms,
            commit_interval_ms: self.commit_interval_ms,
            barrier_poll_ms: self.barrier_poll_ms,
            feedback_interval_ms: self.feedback_interval_ms,
            warmup: self.warmup,
            hot_key_at: self.hot_key_at,
            hot_key_share: self.hot_key_share,
            recovery_window: self.recovery_window,
            fencing: !self.no_fencing,
            strategy,
            ..SimConfig::default()
        };
        self.workload.apply(&mut config);
        config
    }

    fn format(&self) -> Format {
        if self.json {
            Format::Json
        } else if self.csv {
            Format::Csv
        } else {
            Format::Text
        }
    }
}

/// Runs `keyshift simulate`.
pub fn run(args: SimulateArgs) -> anyhow::Result<()> {
    let strategy = args
        .strategy
        .resolve(&args.strategies, args.workload.partitions)?;
    let config = args.config(strategy);
    config.validate().map_err(FlagError::from)?;
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, NonZeroUsize::get));
    let format = args.format();
    let mut out = io::stdout().lock();
    match args.sweep {
        None => {
            let runs: Vec<(SimConfig, String)> = args
                .strategies
                .iter()
                .map(|s| (config.clone(), s.clone()))
                .collect();
            let reports = run_all(&runs, jobs)?;
            match format {
                Format::Text => print::text_runs(&mut out, &config, &reports)?,
                Format::Json => print::json(&mut out, &reports)?,
                Format::Csv => print::csv_runs(&mut out, &reports)?,
            }
        }
        Some(spec) => {
            let mut runs = Vec::new();
            for u in spec.levels() {
                for s in &args.strategies {
                    let c = SimConfig {
                        utilization: u,
                        ..config.clone()
                    };
                    runs.push((c, s.clone()));
                }
            }
            let reports = run_all(&runs, jobs)?;
            let sweep = sim::summarize(&args.strategies, reports, args.p99_bound_ms);
            match format {
                Format::Text => print::text_sweep(&mut out, &config, &sweep)?,
                Format::Json => print::json(&mut out, &sweep)?,
                Format::Csv => print::csv_sweep(&mut out, &sweep)?,
            }
        }
    }
    out.flush()?;
    Ok(())
}

/// Runs every (config, strategy) pair on up to `jobs` threads; results keep the input order.
fn run_all(
    runs: &[(SimConfig, String)],
    jobs: usize,
) -> Result<Vec<SimReport>, keyshift_core::ParamError> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<SimReport, keyshift_core::ParamError>>>> =
        Mutex::new(vec![None; runs.len()]);
    std::thread::scope(|scope| {
        for _ in 0..jobs.min(runs.len()) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((config, name)) = runs.get(i) else {
                    break;
                };
                let r = sim::run(config, name);
                results.lock().expect("a simulation thread panicked")[i] = Some(r);
            });
        }
    });
    results
        .into_inner()
        .expect("a simulation thread panicked")
        .into_iter()
        .map(|r| r.expect("every run was executed"))
        .collect()
}

fn parse_sweep(s: &str) -> Result<SweepSpec, String> {
    s.parse::<SweepSpec>().map_err(|e| e.reason)
}
