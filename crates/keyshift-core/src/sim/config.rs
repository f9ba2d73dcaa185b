//! What one simulation run is: workload, cluster shape, service times and protocol timings.
//!
//! [`SimConfig`] is plain data; [`SimConfig::default`] is the seed's workload (200 records/s,
//! `location_<n>` keys from Zipf(s = 1.1, v = 2.72) over 2800 keys, 10 partitions consumed by
//! 10 consumers) at 65 % aggregate utilisation. [`SimConfig::validate`] rejects nonsense with
//! an error that names the parameter as the command line spells it.

use serde::Serialize;

use super::recovery::{Windowing, DEFAULT_WINDOW_PER_PARTITION};
use crate::strategy::StrategyConfig;
use crate::workload::{HotKey, KeyDist, Targeted, Zipf};
use crate::ParamError;

/// How records arrive (open loop: arrivals never wait for the system).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ArrivalProcess {
    /// Evenly spaced, `1/rate` apart, like a client on a ticker.
    Uniform,
    /// Exponential gaps with mean `1/rate` (a Poisson process), the usual open-loop model.
    #[default]
    Poisson,
}

/// Which keys records carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum WorkloadKind {
    /// Zipf over `0..=keys` exactly like Go's `rand.NewZipf(r, s, v, keys)`.
    #[default]
    Zipf,
    /// The seed's targeted generator: a hot spot that rotates across partition sets.
    Targeted,
    /// Every key in `0..keys` equally likely.
    Uniform,
}

/// Distribution of the time a consumer spends on one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ServiceDist {
    /// Every record takes exactly the mean service time.
    #[default]
    Fixed,
    /// Exponentially distributed with that mean (seeded).
    Exponential,
    /// A wait on I/O — a database or service call: log-normal with that mean and σ = 0.5
    /// (median ≈ 0.88 × mean, p99 ≈ 2.8 × mean), seeded. The experiment's workers sleep it, so
    /// with `--concurrency` one worker waits on many at once.
    Io,
}

/// σ of the log-normal [`ServiceDist::Io`].
const IO_SIGMA: f64 = 0.5;

impl ServiceDist {
    /// One service time, in seconds, of mean `mean` (the simulator and the experiment's
    /// workers draw alike).
    pub fn sample(self, mean: f64, rng: &mut impl rand::Rng) -> f64 {
        // 1 - U is in (0, 1], so its logarithm is finite.
        let mut unit = || 1.0 - rng.gen::<f64>();
        match self {
            ServiceDist::Fixed => mean,
            ServiceDist::Exponential => -unit().ln() * mean,
            ServiceDist::Io => {
                // Box-Muller; μ is chosen so that the mean is `mean`.
                let z = (-2.0 * unit().ln()).sqrt() * (std::f64::consts::TAU * unit()).cos();
                (mean.ln() - IO_SIGMA * IO_SIGMA / 2.0 + IO_SIGMA * z).exp()
            }
        }
    }
}

/// How partitions are spread over the consumers of the group (Kafka's assignors).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Assignor {
    /// Kafka's `RangeAssignor`: consecutive blocks, the first `P mod C` consumers get one more.
    #[default]
    Range,
    /// Kafka's `RoundRobinAssignor`: partition `p` goes to consumer `p mod C`.
    RoundRobin,
}

/// One simulation run's parameters (see the module doc for the defaults).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimConfig {
    /// Offered load in records per second.
    pub rate: f64,
    /// Spacing of arrivals.
    pub arrivals: ArrivalProcess,
    /// Number of partitions of the topic.
    pub partitions: u32,
    /// Number of consumers in the group (each a single server, one record at a time).
    pub consumers: u32,
    /// Key distribution.
    pub workload: WorkloadKind,
    /// Number of distinct keys (Zipf draws `0..=keys`, as Go's `imax`).
    pub keys: u64,
    /// Zipf exponent `s` (> 0; at most 1 is fine too, as keys are bounded).
    pub zipf_s: f64,
    /// Zipf offset `v` (≥ 1).
    pub zipf_v: f64,
    /// Aggregate utilisation: `rate × mean service time ÷ consumers`.
    pub utilization: f64,
    /// Number of records produced.
    pub records: u64,
    /// Seed of every random choice (arrivals, keys, service times, strategies).
    pub seed: u64,
    /// Service-time distribution.
    pub service: ServiceDist,
    /// Partition assignment.
    pub assignor: Assignor,
    /// Round trip of a fence's delivery report: how long a moving key's records wait in the
    /// producer (milliseconds).
    pub fence_rtt_ms: f64,
    /// How often consumers commit their processed offsets (milliseconds).
    pub commit_interval_ms: f64,
    /// How often a consumer with parked records fetches the group's committed offsets
    /// (milliseconds).
    pub barrier_poll_ms: f64,
    /// How often strategies receive per-partition throughput and lag (milliseconds).
    pub feedback_interval_ms: f64,
    /// Fraction of records (by arrival) treated as warm-up and left out of latency and load
    /// figures, so strategies that learn are measured in steady state.
    pub warmup: f64,
    /// A sudden hot key: when this fraction of the records has been generated, a key never
    /// seen before appears and carries [`SimConfig::hot_key_share`] of the arrivals from then
    /// on (`None`: no such event). It must fall after the warm-up and leave at least two
    /// measuring windows ([`super::recovery`]) behind it.
    pub hot_key_at: Option<f64>,
    /// Share of all arrivals the sudden hot key carries, in (0, 1].
    pub hot_key_share: f64,
    /// Records per partition (on average) in one window of the recovery measurement
    /// ([`super::recovery`]; ≥ 1). `None`: [`DEFAULT_WINDOW_PER_PARTITION`], but never more
    /// than one period of a workload that changes shape periodically (the targeted hot spot's
    /// rotation), so that each change is judged by a window of its own.
    pub recovery_window: Option<u64>,
    /// Run the fenced-migration protocol for ordered strategies. Off is an ablation: moves
    /// take effect at once, unfenced, which shows what the protocol protects against.
    pub fencing: bool,
    /// Options of the strategies (its hasher also places the migrator's home partitions and
    /// the targeted workload's key sets; its seed is replaced by [`SimConfig::seed`]).
    #[serde(skip)]
    pub strategy: StrategyConfig,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            rate: 200.0,
            arrivals: ArrivalProcess::default(),
            partitions: 10,
            consumers: 10,
            workload: WorkloadKind::default(),
            keys: 2800,
            zipf_s: 1.1,
            zipf_v: 2.72,
            utilization: 0.65,
            records: 200_000,
            seed: 1,
            service: ServiceDist::default(),
            assignor: Assignor::default(),
            fence_rtt_ms: 2.0,
            commit_interval_ms: 100.0,
            barrier_poll_ms: 50.0,
            feedback_interval_ms: 1000.0,
            warmup: 0.2,
            hot_key_at: None,
            hot_key_share: 0.1,
            recovery_window: None,
            fencing: true,
            strategy: StrategyConfig::default(),
        }
    }
}

/// Largest accepted utilisation: above 1 is overload (queues grow without bound), which is
/// worth simulating; far above it is almost surely a percentage typed as a fraction.
pub const MAX_UTILIZATION: f64 = 2.0;

impl SimConfig {
    /// Mean time one record takes to process, in seconds, so that the group runs at
    /// `utilization`: `utilization × consumers ÷ rate`.
    pub fn mean_service_secs(&self) -> f64 {
        self.utilization * f64::from(self.consumers) / self.rate
    }

    /// The key distribution of the workload (checks its parameters).
    pub fn key_dist(&self) -> Result<KeyDist, ParamError> {
        match self.workload {
            WorkloadKind::Zipf => Ok(KeyDist::Zipf(Zipf::new(
                self.zipf_s,
                self.zipf_v,
                self.keys,
            )?)),
            WorkloadKind::Targeted => Ok(KeyDist::Targeted(Targeted::new(
                self.strategy.hasher,
                self.partitions,
                self.keys,
            )?)),
            WorkloadKind::Uniform => KeyDist::uniform(self.keys),
        }
    }

    /// Records (by arrival) left out as warm-up: the first `⌊warmup × records⌋`.
    pub fn warmup_records(&self) -> u64 {
        (self.warmup * self.records as f64).floor() as u64
    }

    /// How the recovery measurement cuts arrivals into windows (see
    /// [`SimConfig::recovery_window`]).
    pub fn windowing(&self) -> Windowing {
        let partitions = u64::from(self.partitions);
        let size = match self.recovery_window {
            Some(per_partition) => per_partition.saturating_mul(partitions),
            None => {
                let default = DEFAULT_WINDOW_PER_PARTITION.saturating_mul(partitions);
                let period = self.key_dist().ok().and_then(|k| k.shift_period());
                period.map_or(default, |p| default.min(p))
            }
        };
        Windowing::new(size, self.warmup_records())
    }

    /// The index of the arrival at which the sudden hot key appears, if any:
    /// `⌊hot_key_at × records⌋`.
    pub fn hot_key_record(&self) -> Option<u64> {
        self.hot_key_at
            .map(|at| (at * self.records as f64).floor() as u64)
    }

    /// The sudden hot key, if configured (checks its parameters).
    pub fn hot_key(&self) -> Result<Option<HotKey>, ParamError> {
        match self.hot_key_record() {
            Some(from) => Ok(Some(HotKey::new(
                from,
                self.hot_key_share,
                &self.key_dist()?,
            )?)),
            None => Ok(None),
        }
    }

    /// Checks every parameter; the error names the first bad one.
    pub fn validate(&self) -> Result<(), ParamError> {
        positive("rate", self.rate)?;
        if self.partitions == 0 {
            return Err(ParamError::new("partitions", "must be at least 1"));
        }
        if self.consumers == 0 {
            return Err(ParamError::new("consumers", "must be at least 1"));
        }
        if self.consumers > self.partitions {
            return Err(ParamError::new(
                "consumers",
                format!(
                    "{} consumers for {} partitions: each partition has one consumer in a \
                     group, so at most {} would ever work",
                    self.consumers, self.partitions, self.partitions
                ),
            ));
        }
        if self.keys == 0 {
            return Err(ParamError::new("keys", "must be at least 1"));
        }
        // Building the key distribution checks its own parameters (zipf-s, zipf-v, keys).
        self.key_dist()?;
        positive("utilization", self.utilization)?;
        if self.utilization > MAX_UTILIZATION {
            return Err(ParamError::new(
                "utilization",
                format!(
                    "{} is above {MAX_UTILIZATION}; it is a fraction of the group's capacity \
                     (0.65 means 65 %)",
                    self.utilization
                ),
            ));
        }
        if self.records == 0 {
            return Err(ParamError::new("records", "must be at least 1"));
        }
        // Records are numbered with u32 (half the memory per record), u32::MAX marks fences.
        if self.records >= u64::from(u32::MAX) {
            return Err(ParamError::new(
                "records",
                format!(
                    "{} is too many for one run (at most {})",
                    self.records,
                    u32::MAX - 1
                ),
            ));
        }
        non_negative("fence-rtt-ms", self.fence_rtt_ms)?;
        positive("commit-interval-ms", self.commit_interval_ms)?;
        positive("barrier-poll-ms", self.barrier_poll_ms)?;
        positive("feedback-interval-ms", self.feedback_interval_ms)?;
        if !(self.warmup.is_finite() && (0.0..1.0).contains(&self.warmup)) {
            return Err(ParamError::new(
                "warmup",
                format!(
                    "{} is not a fraction in [0, 1) of the records to leave out",
                    self.warmup
                ),
            ));
        }
        self.validate_recovery()
    }

    /// The recovery windows hold at least a record each, and the sudden hot key must be
    /// measurable: in a measured window, with two complete windows from it on.
    fn validate_recovery(&self) -> Result<(), ParamError> {
        if self.recovery_window == Some(0) {
            return Err(ParamError::new(
                "recovery-window",
                "must be at least 1 record per partition",
            ));
        }
        // Checked even without the event, so a script's typo is not silently ignored.
        HotKey::check_share(self.hot_key_share)?;
        let Some(at) = self.hot_key_at else {
            return Ok(());
        };
        if !(at.is_finite() && (0.0..1.0).contains(&at)) {
            return Err(ParamError::new(
                "hot-key-at",
                format!("{at} is not a fraction in [0, 1) of the records"),
            ));
        }
        self.hot_key()?;
        let from = self.hot_key_record().unwrap_or(0);
        let windows = self.windowing();
        if windows.of(from).is_none() {
            return Err(ParamError::new(
                "hot-key-at",
                format!(
                    "{at} (record {from}) falls before the first measuring window, which starts \
                     at record {} after the warm-up ({} % of the records); choose a later \
                     point or a smaller --warmup",
                    windows.first_start,
                    self.warmup * 100.0
                ),
            ));
        }
        // One window to judge the disturbance and one to recover in: with fewer, every
        // strategy would read as never recovered.
        if windows.first_from(from) + 2 > windows.complete(self.records) {
            return Err(ParamError::new(
                "hot-key-at",
                format!(
                    "{at} leaves fewer than two complete measuring windows of {} records ({} \
                     per partition) after the hot key appears at record {from} of {} (one to \
                     judge the disturbance, one to recover in); choose an earlier point, more \
                     --records or a shorter --recovery-window",
                    windows.size,
                    windows.size / u64::from(self.partitions),
                    self.records
                ),
            ));
        }
        Ok(())
    }
}

fn positive(name: &'static str, x: f64) -> Result<(), ParamError> {
    if x.is_finite() && x > 0.0 {
        Ok(())
    } else {
        Err(ParamError::new(
            name,
            format!("{x} is not a positive finite number"),
        ))
    }
}

fn non_negative(name: &'static str, x: f64) -> Result<(), ParamError> {
    if x.is_finite() && x >= 0.0 {
        Ok(())
    } else {
        Err(ParamError::new(
            name,
            format!("{x} is not a finite number ≥ 0"),
        ))
    }
}

/// Partitions owned by each consumer under `assignor` (index = consumer), like Kafka's
/// assignors for one topic with members sorted by id.
pub fn assign(assignor: Assignor, partitions: u32, consumers: u32) -> Vec<Vec<u32>> {
    let c = consumers.max(1);
    let mut owned = vec![Vec::new(); c as usize];
    match assignor {
        Assignor::Range => {
            let per = partitions / c;
            let extra = partitions % c;
            let mut next = 0;
            for (i, parts) in owned.iter_mut().enumerate() {
                let n = per + u32::from((i as u32) < extra);
                parts.extend(next..next + n);
                next += n;
            }
        }
        Assignor::RoundRobin => {
            for p in 0..partitions {
                owned[(p % c) as usize].push(p);
            }
        }
    }
    owned
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_matches_the_seed() {
        let c = SimConfig::default();
        c.validate().unwrap();
        assert_eq!(c.rate, 200.0);
        assert_eq!(c.keys, 2800);
        // 0.65 × 10 consumers ÷ 200 records/s = 32.5 ms per record.
        assert!((c.mean_service_secs() - 0.0325).abs() < 1e-12);
    }

    #[test]
    fn errors_name_the_parameter() {
        let bad = |f: fn(&mut SimConfig)| {
            let mut c = SimConfig::default();
            f(&mut c);
            c.validate().unwrap_err().name
        };
        assert_eq!(bad(|c| c.partitions = 0), "partitions");
        assert_eq!(bad(|c| c.consumers = 0), "consumers");
        assert_eq!(bad(|c| c.consumers = 11), "consumers");
        assert_eq!(bad(|c| c.rate = -5.0), "rate");
        assert_eq!(bad(|c| c.rate = f64::NAN), "rate");
        assert_eq!(bad(|c| c.zipf_s = 0.0), "zipf-s");
        assert_eq!(bad(|c| c.zipf_s = f64::INFINITY), "zipf-s");
        assert_eq!(bad(|c| c.zipf_v = 0.5), "zipf-v");
        assert_eq!(bad(|c| c.keys = 0), "keys");
        assert_eq!(bad(|c| c.utilization = 65.0), "utilization");
        assert_eq!(bad(|c| c.utilization = 0.0), "utilization");
        assert_eq!(bad(|c| c.records = 0), "records");
        assert_eq!(bad(|c| c.records = u64::from(u32::MAX)), "records");
        assert_eq!(bad(|c| c.fence_rtt_ms = -1.0), "fence-rtt-ms");
        assert_eq!(bad(|c| c.warmup = 1.0), "warmup");
        assert_eq!(bad(|c| c.hot_key_at = Some(1.0)), "hot-key-at");
        assert_eq!(bad(|c| c.hot_key_at = Some(-0.5)), "hot-key-at");
        assert_eq!(bad(|c| c.hot_key_at = Some(f64::NAN)), "hot-key-at");
        assert_eq!(bad(|c| c.hot_key_share = 0.0), "hot-key-share");
        assert_eq!(bad(|c| c.recovery_window = Some(0)), "recovery-window");
        assert_eq!(
            bad(|c| {
                c.hot_key_at = Some(0.5);
                c.hot_key_share = 1.5;
            }),
            "hot-key-share"
        );
        assert_eq!(bad(|c| c.hot_key_share = f64::INFINITY), "hot-key-share");
    }

    #[test]
    fn recovery_windows_hold_one_targeted_rotation_at_most() {
        let c = SimConfig::default();
        assert_eq!(c.windowing().size, 10_000, "1000 per partition");
        let targeted = SimConfig {
            workload: WorkloadKind::Targeted,
            ..c.clone()
        };
        assert_eq!(targeted.windowing().size, 3000, "one rotation");
        let three = SimConfig {
            partitions: 3,
            consumers: 3,
            ..targeted.clone()
        };
        assert_eq!(three.windowing().size, 3000);
        let set = SimConfig {
            recovery_window: Some(500),
            ..targeted
        };
        assert_eq!(set.windowing().size, 5000, "an explicit window wins");
    }

    #[test]
    fn the_hot_key_must_fall_after_warm_up_and_before_the_last_window() {
        let at = |x: f64| SimConfig {
            hot_key_at: Some(x),
            ..SimConfig::default()
        };
        at(0.5).validate().unwrap();
        // Warm-up is the first 20 %.
        at(0.2).validate().unwrap();
        let e = at(0.1).validate().unwrap_err();
        assert_eq!(e.name, "hot-key-at");
        assert!(e.reason.contains("warm-up"), "{}", e.reason);
        // 200 000 records, windows of 10 000 from record 40 000: the last two complete ones
        // start at 180 000 and 190 000, so an event up to 180 000 can be judged and recover.
        at(0.9).validate().unwrap();
        let e = at(0.901).validate().unwrap_err();
        assert_eq!(e.name, "hot-key-at");
        assert!(e.reason.contains("fewer than two complete"), "{}", e.reason);
    }

    #[test]
    fn zipf_parameters_do_not_matter_for_other_workloads() {
        let c = SimConfig {
            workload: WorkloadKind::Uniform,
            zipf_s: -1.0,
            ..SimConfig::default()
        };
        c.validate().unwrap();
    }

    #[test]
    fn range_assignor_gives_blocks_with_extras_first() {
        assert_eq!(
            assign(Assignor::Range, 7, 3),
            vec![vec![0, 1, 2], vec![3, 4], vec![5, 6]]
        );
    }

    #[test]
    fn round_robin_assignor_deals_partitions_in_turn() {
        assert_eq!(
            assign(Assignor::RoundRobin, 7, 3),
            vec![vec![0, 3, 6], vec![1, 4], vec![2, 5]]
        );
    }
}
