//! A sweep over aggregate utilisation: which load each strategy sustains within a p99 bound.
//!
//! [`SweepSpec`] is the `FROM:TO:STEP` range of utilisations; the caller runs
//! [`super::run`] for every (utilisation, strategy) pair — in parallel if it likes, each run is
//! independent and deterministic — and [`summarize`] turns the reports into the highest
//! utilisation each strategy sustains and its ratio to `hash`'s.

use std::str::FromStr;

use serde::Serialize;

use super::config::MAX_UTILIZATION;
use super::SimReport;
use crate::ParamError;

/// Utilisations `from, from + step, …, to` (inclusive, rounded to 1e-9 so `0.1` steps add up).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SweepSpec {
    /// First utilisation.
    pub from: f64,
    /// Last utilisation (included when the steps land on it).
    pub to: f64,
    /// Distance between two levels.
    pub step: f64,
}

impl SweepSpec {
    /// Checks the range; errors name `sweep`.
    pub fn new(from: f64, to: f64, step: f64) -> Result<Self, ParamError> {
        let ok = |x: f64| x.is_finite() && x > 0.0 && x <= MAX_UTILIZATION;
        if !ok(from) || !ok(to) {
            return Err(ParamError::new(
                "sweep",
                format!("utilisations must lie in (0, {MAX_UTILIZATION}], got {from}:{to}"),
            ));
        }
        if from > to {
            return Err(ParamError::new(
                "sweep",
                format!("FROM {from} is above TO {to}"),
            ));
        }
        if !(step.is_finite() && step > 0.0) {
            return Err(ParamError::new(
                "sweep",
                format!("STEP {step} is not a positive number"),
            ));
        }
        if (to - from) / step > 1000.0 {
            return Err(ParamError::new(
                "sweep",
                format!("{from}:{to}:{step} has more than 1000 levels"),
            ));
        }
        Ok(Self { from, to, step })
    }

    /// The utilisation levels, ascending.
    pub fn levels(&self) -> Vec<f64> {
        let n = ((self.to - self.from) / self.step + 1e-9).floor() as u64;
        (0..=n)
            .map(|i| ((self.from + i as f64 * self.step) * 1e9).round() / 1e9)
            .collect()
    }
}

impl FromStr for SweepSpec {
    type Err = ParamError;

    /// Parses `FROM:TO:STEP`, e.g. `0.50:0.95:0.05`.
    fn from_str(s: &str) -> Result<Self, ParamError> {
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() != 3 {
            return Err(ParamError::new(
                "sweep",
                format!("'{s}' is not FROM:TO:STEP, e.g. 0.50:0.95:0.05"),
            ));
        }
        let num = |p: &str| {
            p.trim()
                .parse::<f64>()
                .map_err(|_| ParamError::new("sweep", format!("'{p}' in '{s}' is not a number")))
        };
        Self::new(num(parts[0])?, num(parts[1])?, num(parts[2])?)
    }
}

/// One run of a sweep.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SweepPoint {
    /// Aggregate utilisation of the run.
    pub utilization: f64,
    /// Strategy name.
    pub strategy: String,
    /// Whether `p99_ms` is within the sweep's bound.
    pub within_bound: bool,
    /// The run's full report.
    pub report: SimReport,
}

/// What a strategy sustains over the sweep.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SweepSummary {
    /// Strategy name.
    pub strategy: String,
    /// Highest utilisation whose p99 is within the bound, with every lower level also within
    /// it; `None` when even the lowest level misses.
    pub max_sustained_utilization: Option<f64>,
    /// `max_sustained_utilization ÷ hash's`; `None` without a hash run or when either is `None`.
    pub ratio_vs_hash: Option<f64>,
}

/// A whole sweep: every run and the per-strategy summary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SweepReport {
    /// The p99 latency bound a level must meet to count as sustained (milliseconds).
    pub p99_bound_ms: f64,
    /// Every run, ordered by utilisation then by the order strategies were given.
    pub points: Vec<SweepPoint>,
    /// One entry per strategy, in the order they were given.
    pub summary: Vec<SweepSummary>,
}

/// Builds the sweep report from the runs' reports (any order) for `strategies` (in display
/// order), judging each against `p99_bound_ms`.
pub fn summarize(
    strategies: &[String],
    mut runs: Vec<SimReport>,
    p99_bound_ms: f64,
) -> SweepReport {
    let rank = |name: &str| {
        strategies
            .iter()
            .position(|s| s == name)
            .unwrap_or(usize::MAX)
    };
    runs.sort_by(|a, b| {
        a.utilization
            .total_cmp(&b.utilization)
            .then(rank(&a.strategy).cmp(&rank(&b.strategy)))
    });
    let points: Vec<SweepPoint> = runs
        .into_iter()
        .map(|r| SweepPoint {
            utilization: r.utilization,
            strategy: r.strategy.clone(),
            within_bound: r.p99_ms <= p99_bound_ms,
            report: r,
        })
        .collect();
    let sustained = |name: &str| {
        let mut best = None;
        for p in points.iter().filter(|p| p.strategy == name) {
            if !p.within_bound {
                break;
            }
            best = Some(p.utilization);
        }
        best
    };
    let hash = strategies
        .iter()
        .any(|s| s == "hash")
        .then(|| sustained("hash"))
        .flatten();
    let summary = strategies
        .iter()
        .map(|s| {
            let max = sustained(s);
            SweepSummary {
                strategy: s.clone(),
                max_sustained_utilization: max,
                ratio_vs_hash: match (max, hash) {
                    (Some(m), Some(h)) if h > 0.0 => Some(m / h),
                    _ => None,
                },
            }
        })
        .collect();
    SweepReport {
        p99_bound_ms,
        points,
        summary,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(strategy: &str, utilization: f64, p99_ms: f64) -> SimReport {
        SimReport {
            strategy: strategy.into(),
            preserves_order: true,
            utilization,
            service_ms: 0.0,
            produced: 0,
            processed: 0,
            duration_s: 0.0,
            throughput_rps: 0.0,
            measured: 0,
            p50_ms: 0.0,
            p99_ms,
            p999_ms: 0.0,
            max_ms: 0.0,
            mean_ms: 0.0,
            partition_load: vec![],
            hottest_key_records: 0,
            imbalance_max_over_mean: 1.0,
            imbalance_max_over_bound: 1.0,
            migrations: 0,
            migrations_after_warmup: 0,
            migrations_per_minute_after_warmup: 0.0,
            fences: 0,
            order_violations: 0,
            producer_held: 0,
            producer_held_ms: 0.0,
            parked_records: 0,
            parked_ms: 0.0,
            parked_p99_ms: 0.0,
            parked_max_ms: 0.0,
            infeasible_keys: vec![],
            warnings: vec![],
            recovery: crate::sim::recovery::recovery(&[], &[], 1000),
        }
    }

    #[test]
    fn levels_include_both_ends() {
        let s: SweepSpec = "0.50:0.95:0.05".parse().unwrap();
        let l = s.levels();
        assert_eq!(l.len(), 10);
        assert_eq!(l[0], 0.5);
        assert_eq!(l[9], 0.95);
        assert_eq!(l[3], 0.65);
    }

    #[test]
    fn bad_specs_name_sweep() {
        for bad in [
            "0.5:0.9",
            "a:0.9:0.1",
            "0.9:0.5:0.1",
            "0.5:0.9:0",
            "0:0.9:0.1",
            "0.5:50:0.1",
        ] {
            let e = bad.parse::<SweepSpec>().unwrap_err();
            assert_eq!(e.name, "sweep", "{bad}");
        }
    }

    #[test]
    fn sustained_stops_at_the_first_miss_and_ratios_use_hash() {
        let names: Vec<String> = ["hash", "keyshift"].map(String::from).into();
        let runs = vec![
            report("keyshift", 0.7, 80.0),
            report("hash", 0.5, 40.0),
            report("hash", 0.6, 120.0),
            // Within the bound again, but after a miss: not sustained.
            report("hash", 0.7, 90.0),
            report("keyshift", 0.5, 20.0),
            report("keyshift", 0.6, 30.0),
        ];
        let r = summarize(&names, runs, 100.0);
        assert_eq!(r.points[0].strategy, "hash");
        assert_eq!(r.points[1].strategy, "keyshift");
        assert_eq!(r.points[5].utilization, 0.7);
        assert_eq!(r.summary[0].max_sustained_utilization, Some(0.5));
        assert_eq!(r.summary[1].max_sustained_utilization, Some(0.7));
        assert!((r.summary[1].ratio_vs_hash.unwrap() - 1.4).abs() < 1e-12);
    }

    #[test]
    fn no_ratio_when_hash_sustains_nothing() {
        let names: Vec<String> = ["hash", "keyshift"].map(String::from).into();
        let runs = vec![report("hash", 0.5, 200.0), report("keyshift", 0.5, 20.0)];
        let r = summarize(&names, runs, 100.0);
        assert_eq!(r.summary[0].max_sustained_utilization, None);
        assert_eq!(r.summary[1].max_sustained_utilization, Some(0.5));
        assert_eq!(r.summary[1].ratio_vs_hash, None);
    }
}
