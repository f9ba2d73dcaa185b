//! Workload and cluster-shape flags shared by `keyshift simulate` and `keyshift experiment`,
//! so the simulator and the real-broker experiment are described by the same words and
//! resolve into the same [`SimConfig`] (the experiment reuses its validation, key
//! distribution and service-time rule).
//!
//! [`WorkloadFlags`] is flattened into each command's flags: topic shape (partitions,
//! consumers, assignor) and key distribution (workload, keys, Zipf s and v), whose defaults are
//! the seed's everywhere. The flags whose defaults differ per command (rate, utilisation,
//! records) are declared by each command with the value parsers and enums defined here.

use clap::{Args, ValueEnum};
use keyshift_core::sim::{self, SimConfig};
use keyshift_core::strategy;

/// Topic shape and key distribution (defaults: the seed's workload).
#[derive(Debug, Clone, Args)]
pub struct WorkloadFlags {
    /// Partitions of the topic.
    #[arg(long, value_parser = at_least_one, default_value_t = SimConfig::default().partitions)]
    pub partitions: u32,

    /// Consumers in the group, each processing one record at a time (at most --partitions).
    #[arg(long, value_parser = at_least_one, default_value_t = SimConfig::default().consumers)]
    pub consumers: u32,

    /// How partitions are spread over consumers, like Kafka's assignors.
    #[arg(long, value_enum, default_value_t = AssignorArg::Range)]
    pub assignor: AssignorArg,

    /// Key distribution: Zipf like Go's rand.NewZipf, the seed's rotating targeted hot spot,
    /// or uniform.
    #[arg(long, value_enum, default_value_t = WorkloadArg::Zipf)]
    pub workload: WorkloadArg,

    /// Distinct keys `location_<n>` (Zipf draws n in 0..=keys, as Go's imax).
    #[arg(long, value_parser = at_least_one_u64, default_value_t = SimConfig::default().keys)]
    pub keys: u64,

    /// Zipf exponent s (> 0: Go's rand.NewZipf needs > 1, smaller works as keys are bounded).
    #[arg(long, allow_negative_numbers = true, value_parser = finite_f64, default_value_t = SimConfig::default().zipf_s)]
    pub zipf_s: f64,

    /// Zipf offset v (≥ 1).
    #[arg(long, allow_negative_numbers = true, value_parser = finite_f64, default_value_t = SimConfig::default().zipf_v)]
    pub zipf_v: f64,
}

impl WorkloadFlags {
    /// Writes these flags into `config` (not validated; [`SimConfig::validate`] does that).
    pub fn apply(&self, config: &mut SimConfig) {
        config.partitions = self.partitions;
        config.consumers = self.consumers;
        config.assignor = self.assignor.into();
        config.workload = self.workload.into();
        config.keys = self.keys;
        config.zipf_s = self.zipf_s;
        config.zipf_v = self.zipf_v;
    }
}

/// `--assignor`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum AssignorArg {
    /// Consecutive blocks of partitions (Kafka's RangeAssignor).
    Range,
    /// Partitions dealt in turn (Kafka's RoundRobinAssignor).
    #[value(name = "roundrobin", alias = "round-robin")]
    RoundRobin,
}

impl From<AssignorArg> for sim::Assignor {
    fn from(a: AssignorArg) -> Self {
        match a {
            AssignorArg::Range => sim::Assignor::Range,
            AssignorArg::RoundRobin => sim::Assignor::RoundRobin,
        }
    }
}

/// `--workload`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum WorkloadArg {
    /// Zipf(s, v) over 0..=keys.
    Zipf,
    /// The seed's hot spot rotating over three partition sets every 3000 records.
    Targeted,
    /// Every key equally likely.
    Uniform,
}

impl From<WorkloadArg> for sim::WorkloadKind {
    fn from(w: WorkloadArg) -> Self {
        match w {
            WorkloadArg::Zipf => sim::WorkloadKind::Zipf,
            WorkloadArg::Targeted => sim::WorkloadKind::Targeted,
            WorkloadArg::Uniform => sim::WorkloadKind::Uniform,
        }
    }
}

/// `--arrivals`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ArrivalsArg {
    /// One record every 1/rate seconds.
    Uniform,
    /// Exponential gaps with mean 1/rate.
    Poisson,
}

impl From<ArrivalsArg> for sim::ArrivalProcess {
    fn from(a: ArrivalsArg) -> Self {
        match a {
            ArrivalsArg::Uniform => sim::ArrivalProcess::Uniform,
            ArrivalsArg::Poisson => sim::ArrivalProcess::Poisson,
        }
    }
}

/// `--service`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ServiceArg {
    /// Every record takes the mean service time.
    Fixed,
    /// Exponentially distributed service times.
    Exponential,
    /// A wait on I/O: log-normal around the mean (σ 0.5, p99 ≈ 2.8 × mean); with
    /// `experiment --concurrency` each worker waits on many at once.
    Io,
}

impl From<ServiceArg> for sim::ServiceDist {
    fn from(s: ServiceArg) -> Self {
        match s {
            ServiceArg::Fixed => sim::ServiceDist::Fixed,
            ServiceArg::Exponential => sim::ServiceDist::Exponential,
            ServiceArg::Io => sim::ServiceDist::Io,
        }
    }
}

/// A strategy name from [`strategy::NAMES`].
pub fn parse_strategy(s: &str) -> Result<String, String> {
    let s = s.trim();
    if strategy::NAMES.contains(&s) {
        Ok(s.to_string())
    } else {
        Err(format!(
            "unknown strategy '{s}', expected one of {}",
            strategy::NAMES.join(", ")
        ))
    }
}

/// A whole number ≥ 1 (u32).
pub fn at_least_one(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("'{s}' is not a whole number ≥ 1")),
    }
}

/// A whole number ≥ 1 (u64).
pub fn at_least_one_u64(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("'{s}' is not a whole number ≥ 1")),
    }
}

/// A whole number ≥ 1 (usize).
pub fn at_least_one_usize(s: &str) -> Result<usize, String> {
    at_least_one_u64(s).map(|n| n as usize)
}

/// Any finite number.
pub fn finite_f64(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x.is_finite() => Ok(x),
        _ => Err(format!("'{s}' is not a finite number")),
    }
}

/// A finite number > 0.
pub fn positive_f64(s: &str) -> Result<f64, String> {
    match finite_f64(s) {
        Ok(x) if x > 0.0 => Ok(x),
        _ => Err(format!("'{s}' is not a positive number")),
    }
}

/// A finite number ≥ 0.
pub fn non_negative_f64(s: &str) -> Result<f64, String> {
    match finite_f64(s) {
        Ok(x) if x >= 0.0 => Ok(x),
        _ => Err(format!("'{s}' is not a number ≥ 0")),
    }
}

/// An aggregate utilisation: a fraction in (0, [`sim::MAX_UTILIZATION`]].
pub fn utilization(s: &str) -> Result<f64, String> {
    match positive_f64(s) {
        Ok(x) if x <= sim::MAX_UTILIZATION => Ok(x),
        Ok(x) => Err(format!(
            "{x} is above {}: utilisation is a fraction (0.65 means 65 %)",
            sim::MAX_UTILIZATION
        )),
        Err(e) => Err(e),
    }
}
