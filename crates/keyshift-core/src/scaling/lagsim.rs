//! A closed-loop model of a consumer group's lag, to test scaling policies against.
//!
//! [`LagSim`] is a deterministic fluid model stepped on a fixed tick: records arrive at the
//! rate of a [`LoadSchedule`] times a seeded noise factor (held for `noise_period`, so noise is
//! bursty rather than averaged away within a tick); `min(replicas, partitions)` replicas each
//! consume up to `replica_rate` records/s of the backlog; committed offsets trail consumption
//! by half the `commit_interval` (the average over many partitions committing on their own
//! schedules), so even a group that keeps up shows a lag of about `rate × commit_interval / 2`,
//! as a real group on auto-commit does. A replica change asked with [`LagSim::set_replicas`]
//! takes effect after `rebalance_delay` (pods start, join the group), and then consumption
//! stops for `rebalance_pause` (the stop-the-world rebalance).
//!
//! [`LagSim::observation`] is what a lag collector would report: lag in records and in
//! seconds (age of the first uncommitted record, exact from the arrival history), and
//! production and consumption rates over `rate_window` from the log-end and committed offsets.
//! [`run_closed_loop`] evaluates a [`Policy`] every `eval_interval` and applies its decisions.

use std::collections::VecDeque;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::{Decision, Observation, Policy};
use crate::ParamError;

/// Arrival rate over time: piecewise constant steps.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoadSchedule {
    /// `(from_secs, records_per_sec)`, sorted by time, the first at 0.
    steps: Vec<(f64, f64)>,
}

impl LoadSchedule {
    /// A constant rate (records/s, ≥ 0).
    pub fn constant(rate: f64) -> Result<Self, ParamError> {
        Self::steps(vec![(0.0, rate)])
    }

    /// Rate `steps[i].1` from time `steps[i].0` on; times strictly increasing from 0, rates ≥ 0.
    pub fn steps(steps: Vec<(f64, f64)>) -> Result<Self, ParamError> {
        if steps.first().is_none_or(|s| s.0 != 0.0) {
            return Err(ParamError::new("load", "the first step must start at 0 s"));
        }
        if steps
            .windows(2)
            .any(|w| w[1].0 <= w[0].0 || w[1].0.is_nan())
        {
            return Err(ParamError::new(
                "load",
                "step times must be strictly increasing",
            ));
        }
        if let Some(&(_, r)) = steps.iter().find(|s| !(s.1.is_finite() && s.1 >= 0.0)) {
            return Err(ParamError::new(
                "load",
                format!("rate {r} is not a number ≥ 0"),
            ));
        }
        Ok(Self { steps })
    }

    /// The rate at `t_secs`.
    pub fn rate_at(&self, t_secs: f64) -> f64 {
        let i = self.steps.partition_point(|s| s.0 <= t_secs);
        self.steps[i.saturating_sub(1)].1
    }
}

/// Parameters of a [`LagSim`]; [`LagSimConfig::new`] gives realistic timings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LagSimConfig {
    /// Partitions of the consumed topic (≥ 1).
    pub partitions: u32,
    /// Records/s one replica consumes when it has a backlog (> 0).
    pub replica_rate: f64,
    /// Replicas running at time 0.
    pub initial_replicas: u32,
    /// Seconds from asking for a replica count to the group rebalancing onto it (≥ 0). Default 30.
    pub rebalance_delay_secs: f64,
    /// Seconds the group stops consuming during the rebalance (≥ 0). Default 5.
    pub rebalance_pause_secs: f64,
    /// Seconds between offset commits of each consumer (> 0). Default 5, Kafka's
    /// `auto.commit.interval.ms`.
    pub commit_interval_secs: f64,
    /// Window of the measured production and consumption rates (> 0). Default 60.
    pub rate_window_secs: f64,
    /// Seconds between policy evaluations in [`run_closed_loop`] (> 0). Default 15, the HPA's
    /// sync period.
    pub eval_interval_secs: f64,
    /// Simulation tick (> 0). Default 1.
    pub tick_secs: f64,
    /// Relative noise on the arrival rate: a factor uniform in `1 ± noise` (in [0, 1)). Default 0.
    pub noise: f64,
    /// Seconds each noise factor holds (> 0). Default 10.
    pub noise_period_secs: f64,
    /// Seed of the noise.
    pub seed: u64,
}

impl LagSimConfig {
    /// A group of `initial_replicas` over `partitions`, each replica consuming `replica_rate`.
    pub fn new(partitions: u32, replica_rate: f64, initial_replicas: u32) -> Self {
        Self {
            partitions,
            replica_rate,
            initial_replicas,
            rebalance_delay_secs: 30.0,
            rebalance_pause_secs: 5.0,
            commit_interval_secs: 5.0,
            rate_window_secs: 60.0,
            eval_interval_secs: 15.0,
            tick_secs: 1.0,
            noise: 0.0,
            noise_period_secs: 10.0,
            seed: 0,
        }
    }

    /// Checks every parameter; the error names it.
    pub fn validate(&self) -> Result<(), ParamError> {
        let positive = |name: &'static str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(ParamError::new(name, format!("{v} is not a number > 0")))
            }
        };
        let non_negative = |name: &'static str, v: f64| {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(ParamError::new(name, format!("{v} is not a number ≥ 0")))
            }
        };
        if self.partitions == 0 {
            return Err(ParamError::new("partitions", "must be at least 1"));
        }
        positive("replica-rate", self.replica_rate)?;
        non_negative("rebalance-delay", self.rebalance_delay_secs)?;
        non_negative("rebalance-pause", self.rebalance_pause_secs)?;
        positive("commit-interval", self.commit_interval_secs)?;
        positive("rate-window", self.rate_window_secs)?;
        positive("eval-interval", self.eval_interval_secs)?;
        positive("tick", self.tick_secs)?;
        if !(self.noise.is_finite() && (0.0..1.0).contains(&self.noise)) {
            return Err(ParamError::new(
                "noise",
                format!("{} is not in [0, 1)", self.noise),
            ));
        }
        positive("noise-period", self.noise_period_secs)
    }
}

/// One point of a closed-loop run, taken at each evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SimSample {
    /// Simulated time, seconds.
    pub t_secs: f64,
    /// Arrival rate at that time (noise included), records/s.
    pub arrival_rate: f64,
    /// Replicas asked for.
    pub replicas: u32,
    /// Replicas the group has rebalanced onto.
    pub effective_replicas: u32,
    /// Lag in records (log end − committed).
    pub lag_records: u64,
    /// Lag in seconds (age of the first uncommitted record).
    pub lag_seconds: f64,
}

/// The model; see the module doc.
#[derive(Debug, Clone)]
pub struct LagSim {
    config: LagSimConfig,
    schedule: LoadSchedule,
    rng: ChaCha8Rng,
    t: f64,
    produced: f64,
    consumed: f64,
    committed: f64,
    replicas: u32,
    effective: u32,
    /// `(effective_at, count)` of the changes in flight, oldest first.
    pending: VecDeque<(f64, u32)>,
    paused_until: f64,
    noise_factor: f64,
    next_noise_at: f64,
    /// `(t, produced, committed, consumed)` after every tick, from zeros.
    history: Vec<(f64, f64, f64, f64)>,
}

impl LagSim {
    /// A group at time 0 with no lag.
    pub fn new(config: LagSimConfig, schedule: LoadSchedule) -> Result<Self, ParamError> {
        config.validate()?;
        let rng = ChaCha8Rng::seed_from_u64(config.seed);
        Ok(Self {
            replicas: config.initial_replicas,
            effective: config.initial_replicas,
            config,
            schedule,
            rng,
            t: 0.0,
            produced: 0.0,
            consumed: 0.0,
            committed: 0.0,
            pending: VecDeque::new(),
            paused_until: 0.0,
            noise_factor: 1.0,
            next_noise_at: 0.0,
            history: vec![(0.0, 0.0, 0.0, 0.0)],
        })
    }

    /// The configuration.
    pub fn config(&self) -> &LagSimConfig {
        &self.config
    }

    /// Simulated time, seconds.
    pub fn now(&self) -> f64 {
        self.t
    }

    /// Replicas asked for.
    pub fn replicas(&self) -> u32 {
        self.replicas
    }

    /// Replicas the group has rebalanced onto.
    pub fn effective_replicas(&self) -> u32 {
        self.effective
    }

    /// Asks for `n` replicas; the group rebalances onto them after the rebalance delay. Each
    /// request runs its own delay, as pods started earlier join without waiting for later ones.
    pub fn set_replicas(&mut self, n: u32) {
        if n == self.replicas {
            return;
        }
        self.replicas = n;
        self.pending
            .push_back((self.t + self.config.rebalance_delay_secs, n));
    }

    /// Advances one tick.
    pub fn step(&mut self) {
        let dt = self.config.tick_secs;
        let mut arrived = None;
        while self.pending.front().is_some_and(|&(at, _)| self.t >= at) {
            arrived = self.pending.pop_front().map(|(_, n)| n);
        }
        if let Some(n) = arrived.filter(|&n| n != self.effective) {
            self.effective = n;
            self.paused_until = self.t + self.config.rebalance_pause_secs;
        }
        if self.config.noise > 0.0 && self.t >= self.next_noise_at {
            self.noise_factor = 1.0 + self.rng.gen_range(-self.config.noise..=self.config.noise);
            self.next_noise_at = self.t + self.config.noise_period_secs;
        }
        self.produced += self.arrival_rate() * dt;
        let consumers = self.effective.min(self.config.partitions);
        let capacity = if self.t < self.paused_until {
            0.0
        } else {
            f64::from(consumers) * self.config.replica_rate * dt
        };
        self.consumed += (self.produced - self.consumed).min(capacity);
        self.t += dt;
        self.committed = self.consumed_at(self.t - self.config.commit_interval_secs / 2.0);
        self.history
            .push((self.t, self.produced, self.committed, self.consumed));
    }

    /// The arrival rate now, noise included.
    pub fn arrival_rate(&self) -> f64 {
        self.schedule.rate_at(self.t) * self.noise_factor
    }

    /// What a lag collector reports now (see the module doc).
    pub fn observation(&self) -> Observation {
        let lag = (self.produced.floor() - self.committed.floor()).max(0.0);
        let window = self.config.rate_window_secs;
        let rates = (self.t >= window - 1e-9).then(|| {
            let i = self
                .history
                .partition_point(|h| h.0 < self.t - window - 1e-9);
            let (t0, p0, c0, _) = self.history[i];
            let span = self.t - t0;
            ((self.produced - p0) / span, (self.committed - c0) / span)
        });
        Observation {
            current_replicas: self.replicas,
            partitions: self.config.partitions,
            lag_records: lag as u64,
            lag_seconds: if lag > 0.0 {
                self.age_of(self.committed)
            } else {
                0.0
            },
            production_rate: rates.map(|r| r.0),
            consumption_rate: rates.map(|r| r.1),
        }
    }

    /// Seconds since the record after offset `offset` (cumulative count) was produced,
    /// interpolated within the tick it arrived in.
    fn age_of(&self, offset: f64) -> f64 {
        let i = self.history.partition_point(|h| h.1 <= offset);
        if i == 0 || i >= self.history.len() {
            return 0.0;
        }
        let (t0, p0, _, _) = self.history[i - 1];
        let (t1, p1, _, _) = self.history[i];
        let produced_at = t0 + (t1 - t0) * ((offset - p0) / (p1 - p0)).clamp(0.0, 1.0);
        self.t - produced_at
    }

    /// Records consumed by time `t` (interpolated within a tick; the current count for now).
    fn consumed_at(&self, t: f64) -> f64 {
        let i = self.history.partition_point(|h| h.0 <= t);
        if i >= self.history.len() {
            return self.consumed;
        }
        if i == 0 {
            return 0.0;
        }
        let (t0, _, _, c0) = self.history[i - 1];
        let (t1, _, _, c1) = self.history[i];
        c0 + (c1 - c0) * ((t - t0) / (t1 - t0))
    }

    fn sample(&self) -> SimSample {
        let obs = self.observation();
        SimSample {
            t_secs: self.t,
            arrival_rate: self.arrival_rate(),
            replicas: self.replicas,
            effective_replicas: self.effective,
            lag_records: obs.lag_records,
            lag_seconds: obs.lag_seconds,
        }
    }
}

/// What a [`run_closed_loop`] did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClosedLoopReport {
    /// Every decision, in order.
    pub decisions: Vec<Decision>,
    /// The state at every evaluation (before its decision applied).
    pub samples: Vec<SimSample>,
}

impl ClosedLoopReport {
    /// Decisions that changed the replica count.
    pub fn changes(&self) -> impl Iterator<Item = &Decision> {
        self.decisions.iter().filter(|d| d.changed())
    }

    /// Number of replica changes in `[from_secs, to_secs)`.
    pub fn changes_between(&self, from_secs: f64, to_secs: f64) -> usize {
        self.changes()
            .filter(|d| d.at_secs >= from_secs && d.at_secs < to_secs)
            .count()
    }

    /// Time of the last change, if any.
    pub fn last_change_at(&self) -> Option<f64> {
        self.changes().last().map(|d| d.at_secs)
    }

    /// Most replicas ever asked for.
    pub fn max_replicas(&self) -> u32 {
        self.decisions
            .iter()
            .map(|d| d.desired)
            .chain(self.samples.iter().map(|s| s.replicas))
            .max()
            .unwrap_or(0)
    }

    /// Replicas asked for by the last decision at or before `t_secs`.
    pub fn replicas_at(&self, t_secs: f64) -> Option<u32> {
        self.decisions
            .iter()
            .take_while(|d| d.at_secs <= t_secs)
            .last()
            .map(|d| d.desired)
    }
}

/// Runs `policy` against `sim` until `until_secs`: every `eval_interval` the policy decides on
/// the sim's observation and the sim is asked for the decided count.
pub fn run_closed_loop(sim: &mut LagSim, policy: &mut Policy, until_secs: f64) -> ClosedLoopReport {
    let mut report = ClosedLoopReport {
        decisions: Vec::new(),
        samples: Vec::new(),
    };
    let mut next_eval = sim.now();
    while sim.now() < until_secs - 1e-9 {
        if sim.now() >= next_eval - 1e-9 {
            report.samples.push(sim.sample());
            let decision = policy.decide(sim.now(), &sim.observation());
            sim.set_replicas(decision.desired);
            report.decisions.push(decision);
            next_eval += sim.config.eval_interval_secs;
        }
        sim.step();
    }
    report
}
