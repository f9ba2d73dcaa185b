//! The scaling policy: an [`Observation`] in, a [`Decision`] with its [`Reason`]s out.
//!
//! [`Policy::decide`] runs the same pipeline for both [`Mode`]s, the Kubernetes HPA's order:
//!
//! 1. **Activation** (KEDA): with `min_replicas = 0`, a group idle for `cooldown` scales to
//!    zero, and a group at zero that shows activity comes back (skipping steps 3–4, as KEDA
//!    acts outside the HPA for 0 ↔ 1).
//! 2. **Recommendation** from the mode, held at the current count while the ratio to the
//!    target is within the tolerance; clamped to the bounds (`max` capped at the partitions).
//! 3. **Stabilization**: the lowest recommendation of the last `scale_up_window` and the
//!    highest of the last `scale_down_window` bound the change, so one noisy sample cannot
//!    move the count, and a scale-down waits until the load has stayed low for the window.
//! 4. **Rate limits**: per-period policies on pods or percent, relative to the count at the
//!    start of the period (the policy remembers its own changes).
//! 5. **Bounds** again, so a count above the partitions (set by hand, or partitions removed)
//!    is corrected at once.
//!
//! The policy holds only what the windows and the capacity estimate need; time is passed in
//! as seconds on any monotonic clock.

use std::collections::VecDeque;
use std::fmt;

use serde::Serialize;

use crate::ParamError;

/// Which measure the HPA rule scales on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum HpaMetric {
    /// Lag in records averaged over the current replicas (the HPA's `AverageValue`, KEDA's
    /// `lagThreshold`): `desired = ceil(current × (lag / current) / target) = ceil(lag / target)`.
    #[default]
    LagRecords,
    /// The group's lag in seconds (oldest unconsumed record) as a plain value (the HPA's
    /// `Value`): `desired = ceil(current × lag_seconds / target)`.
    LagSeconds,
}

/// How the raw recommendation is computed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "mode", rename_all = "kebab-case")]
pub enum Mode {
    /// The HPA rule `desired = ceil(current × metric / target)`, `target` being the metric
    /// value wanted per replica (records for [`HpaMetric::LagRecords`], seconds for
    /// [`HpaMetric::LagSeconds`]).
    Hpa {
        /// The measure scaled on.
        metric: HpaMetric,
        /// Wanted metric value per replica (> 0).
        target: f64,
    },
    /// `desired = ceil((production rate + lag / drain_target_secs) / capacity per replica)`:
    /// enough replicas to keep up with production and drain the current lag within the target.
    Predictive {
        /// Seconds within which the current lag should be drained (> 0).
        drain_target_secs: f64,
    },
}

/// Whether a rate limit counts pods or a percentage of the count at the period's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RateLimitKind {
    /// At most `value` replicas added (or removed) per period.
    Pods,
    /// At most `value` % of the replicas at the period's start added (or removed) per period.
    Percent,
}

/// One HPA scaling policy: at most `value` pods or percent per `period_secs`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RateLimit {
    /// What `value` counts.
    pub kind: RateLimitKind,
    /// Pods or percent per period (> 0).
    pub value: f64,
    /// Length of the period in seconds (> 0).
    pub period_secs: f64,
}

/// Which of several rate limits applies (the HPA's `selectPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SelectPolicy {
    /// The limit allowing the largest change.
    #[default]
    Max,
    /// The limit allowing the smallest change.
    Min,
    /// No change in this direction at all.
    Disabled,
}

/// The rate limits of one direction (up or down).
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct RateLimits {
    /// The policies; none means unlimited.
    pub limits: Vec<RateLimit>,
    /// How the policies combine.
    pub select: SelectPolicy,
}

impl RateLimits {
    /// The HPA's default for scaling up: 4 pods or 100 % per 15 s, whichever is more.
    pub fn hpa_default_up() -> Self {
        Self {
            limits: vec![
                RateLimit {
                    kind: RateLimitKind::Pods,
                    value: 4.0,
                    period_secs: 15.0,
                },
                RateLimit {
                    kind: RateLimitKind::Percent,
                    value: 100.0,
                    period_secs: 15.0,
                },
            ],
            select: SelectPolicy::Max,
        }
    }

    /// The HPA's default for scaling down: 100 % per 15 s.
    pub fn hpa_default_down() -> Self {
        Self {
            limits: vec![RateLimit {
                kind: RateLimitKind::Percent,
                value: 100.0,
                period_secs: 15.0,
            }],
            select: SelectPolicy::Max,
        }
    }

    /// No limit.
    pub fn unlimited() -> Self {
        Self::default()
    }
}

/// Everything a [`Policy`] is configured with. [`PolicyConfig::hpa`] and
/// [`PolicyConfig::predictive`] fill in the defaults of the Kubernetes HPA and KEDA.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyConfig {
    /// How the raw recommendation is computed.
    pub mode: Mode,
    /// Fewest replicas (`min-replicas`); 0 enables scale to zero. Default 1.
    pub min_replicas: u32,
    /// Most replicas (`max-replicas`, ≥ 1), further capped at the partition count of each
    /// observation. Default `u32::MAX`: the partition count alone.
    pub max_replicas: u32,
    /// No change while the metric's ratio to its target is within `1 ± tolerance`
    /// (`tolerance`, in [0, 1)). Default 0.1, the HPA's.
    pub tolerance: f64,
    /// Scale-up stabilization window in seconds (`scale-up-window`). Default 0, the HPA's.
    pub scale_up_window_secs: f64,
    /// Scale-down stabilization window in seconds (`scale-down-window`). Default 300, the HPA's.
    pub scale_down_window_secs: f64,
    /// Rate limits when scaling up. Default [`RateLimits::hpa_default_up`].
    pub scale_up_limits: RateLimits,
    /// Rate limits when scaling down. Default [`RateLimits::hpa_default_down`].
    pub scale_down_limits: RateLimits,
    /// The group is active while its lag exceeds this many records (`activation-lag`,
    /// KEDA's `activationLagThreshold`). Default 0.
    pub activation_lag: f64,
    /// ... or while production exceeds this many records/s (`activation-rate`). Default 0.
    pub activation_rate: f64,
    /// Seconds a group must stay inactive before it scales to zero (`cooldown`, KEDA's
    /// `cooldownPeriod`). Default 300.
    pub cooldown_secs: f64,
    /// Predictive mode: records/s one replica consumes, if known (`replica-rate`). Used until
    /// the policy has measured it; `None` (default) learns it from observations alone.
    pub replica_rate: Option<f64>,
    /// Predictive mode: a lag of at least this many seconds means the replicas are busy all
    /// the time, so their consumption rate is their capacity (`saturation-lag`, > 0). Default 30.
    pub saturation_lag_secs: f64,
    /// Predictive mode: seconds after a change during which the measured consumption rate
    /// does not reflect the new count (rebalance, rate window), so capacity is not learnt
    /// from it (`settle`, ≥ 0): the rebalance time plus the window of the measured rates.
    /// Default 120.
    pub settle_secs: f64,
}

impl PolicyConfig {
    /// The HPA rule on `metric` with `target` per replica, HPA/KEDA defaults for the rest.
    pub fn hpa(metric: HpaMetric, target: f64) -> Self {
        Self::with_mode(Mode::Hpa { metric, target })
    }

    /// The predictive rule draining lag within `drain_target_secs`, HPA/KEDA defaults for the rest.
    pub fn predictive(drain_target_secs: f64) -> Self {
        Self::with_mode(Mode::Predictive { drain_target_secs })
    }

    fn with_mode(mode: Mode) -> Self {
        Self {
            mode,
            min_replicas: 1,
            max_replicas: u32::MAX,
            tolerance: 0.1,
            scale_up_window_secs: 0.0,
            scale_down_window_secs: 300.0,
            scale_up_limits: RateLimits::hpa_default_up(),
            scale_down_limits: RateLimits::hpa_default_down(),
            activation_lag: 0.0,
            activation_rate: 0.0,
            cooldown_secs: 300.0,
            replica_rate: None,
            saturation_lag_secs: 30.0,
            settle_secs: 120.0,
        }
    }

    /// Checks every parameter; the error names the flag as the command line spells it.
    pub fn validate(&self) -> Result<(), ParamError> {
        match self.mode {
            Mode::Hpa { target, .. } => positive("target", target)?,
            Mode::Predictive { drain_target_secs } => positive("drain-target", drain_target_secs)?,
        }
        if self.max_replicas == 0 {
            return Err(ParamError::new("max-replicas", "must be at least 1"));
        }
        if self.min_replicas > self.max_replicas {
            return Err(ParamError::new(
                "min-replicas",
                format!(
                    "{} is more than max-replicas {}",
                    self.min_replicas, self.max_replicas
                ),
            ));
        }
        if !(self.tolerance.is_finite() && (0.0..1.0).contains(&self.tolerance)) {
            return Err(ParamError::new(
                "tolerance",
                format!("{} is not in [0, 1)", self.tolerance),
            ));
        }
        non_negative("scale-up-window", self.scale_up_window_secs)?;
        non_negative("scale-down-window", self.scale_down_window_secs)?;
        check_limits("scale-up-limit", &self.scale_up_limits)?;
        check_limits("scale-down-limit", &self.scale_down_limits)?;
        non_negative("activation-lag", self.activation_lag)?;
        non_negative("activation-rate", self.activation_rate)?;
        non_negative("cooldown", self.cooldown_secs)?;
        if let Some(rate) = self.replica_rate {
            positive("replica-rate", rate)?;
        }
        positive("saturation-lag", self.saturation_lag_secs)?;
        non_negative("settle", self.settle_secs)?;
        Ok(())
    }
}

impl Default for PolicyConfig {
    /// Predictive, draining lag within 60 s.
    fn default() -> Self {
        Self::predictive(60.0)
    }
}

fn positive(name: &'static str, v: f64) -> Result<(), ParamError> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(ParamError::new(name, format!("{v} is not a number > 0")))
    }
}

fn non_negative(name: &'static str, v: f64) -> Result<(), ParamError> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err(ParamError::new(name, format!("{v} is not a number ≥ 0")))
    }
}

fn check_limits(name: &'static str, limits: &RateLimits) -> Result<(), ParamError> {
    for l in &limits.limits {
        positive(name, l.value)?;
        positive(name, l.period_secs)
            .map_err(|_| ParamError::new(name, format!("period {} s is not > 0", l.period_secs)))?;
    }
    Ok(())
}

/// What the policy sees of the consumer group at one evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Observation {
    /// Replicas currently asked for (the `spec.replicas` of the scale subresource).
    pub current_replicas: u32,
    /// Partitions of the consumed topics: more replicas than this would sit idle.
    pub partitions: u32,
    /// Lag in records summed over the group's partitions.
    pub lag_records: u64,
    /// Lag in seconds: age of the oldest unconsumed record over the group's partitions.
    pub lag_seconds: f64,
    /// Records/s produced to the group's partitions, if measured yet.
    pub production_rate: Option<f64>,
    /// Records/s the group consumed (committed), if measured yet.
    pub consumption_rate: Option<f64>,
}

/// Why a decision came out as it did; a [`Decision`] carries the chain, first the
/// recommendation, then each adjustment.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Reason {
    /// The observation had a value that is not a finite non-negative number, or no
    /// partitions; the count is held.
    InvalidObservation {
        /// The field at fault.
        field: &'static str,
    },
    /// At zero replicas and still inactive: stay at zero.
    Idle,
    /// At zero replicas and active again: scale out of zero.
    Activated {
        /// Lag in records seen.
        lag_records: u64,
        /// Production rate seen, records/s.
        production_rate: Option<f64>,
    },
    /// Inactive for at least the cooldown: scale to zero.
    ScaleToZero {
        /// Seconds since the group was last active.
        idle_secs: f64,
    },
    /// HPA rule: the metric against its target.
    Metric {
        /// Which measure.
        metric: HpaMetric,
        /// Its value per replica.
        value: f64,
        /// The target per replica.
        target: f64,
        /// `value / target`.
        ratio: f64,
    },
    /// Predictive rule: replicas needed to keep up and drain the lag in time.
    Predicted {
        /// Production rate, records/s.
        production_rate: f64,
        /// Lag in records.
        lag_records: u64,
        /// Drain target, seconds.
        drain_target_secs: f64,
        /// Capacity of one replica used, records/s.
        replica_rate: f64,
        /// Replicas needed before rounding up.
        needed: f64,
    },
    /// Predictive rule: the replicas' capacity was never measured (no backlog seen yet), so
    /// their current throughput stood in for it; it can only scale up.
    CapacityLowerBound {
        /// The throughput per replica used, records/s.
        replica_rate: f64,
    },
    /// Predictive rule without measured rates (first evaluation) or capacity: the count is held.
    RatesUnknown,
    /// The ratio to the target is within the tolerance: the count is held.
    WithinTolerance {
        /// The ratio.
        ratio: f64,
        /// The tolerance.
        tolerance: f64,
    },
    /// The recommendation was above the partition count.
    CappedAtPartitions {
        /// The partition count.
        partitions: u32,
    },
    /// The recommendation was above `max_replicas`.
    CappedAtMax {
        /// `max_replicas`.
        max: u32,
    },
    /// The recommendation was below `min_replicas` (or 1 while active).
    RaisedToMin {
        /// The floor applied.
        min: u32,
    },
    /// A scale-up was held to the lowest recommendation of the up window.
    StabilizedUp {
        /// The window, seconds.
        window_secs: f64,
        /// The count it allowed.
        allowed: u32,
    },
    /// A scale-down was held to the highest recommendation of the down window.
    StabilizedDown {
        /// The window, seconds.
        window_secs: f64,
        /// The count it allowed.
        allowed: u32,
    },
    /// A change was cut to what the rate limits allow in their period.
    RateLimited {
        /// The count they allowed.
        allowed: u32,
    },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::InvalidObservation { field } => write!(f, "invalid observation: {field}; holding"),
            Reason::Idle => write!(f, "idle at zero replicas"),
            Reason::Activated { lag_records, production_rate } => {
                write!(f, "activated: lag {lag_records} records")?;
                if let Some(r) = production_rate {
                    write!(f, ", production {r:.1}/s")?;
                }
                Ok(())
            }
            Reason::ScaleToZero { idle_secs } => write!(f, "inactive for {idle_secs:.0} s: scale to zero"),
            Reason::Metric { metric, value, target, ratio } => {
                let unit = match metric {
                    HpaMetric::LagRecords => "records lag per replica",
                    HpaMetric::LagSeconds => "s lag",
                };
                write!(f, "{value:.1} {unit} vs target {target} (ratio {ratio:.2})")
            }
            Reason::Predicted {
                production_rate,
                lag_records,
                drain_target_secs,
                replica_rate,
                needed,
            } => write!(
                f,
                "({production_rate:.1}/s + {lag_records} records / {drain_target_secs} s) / {replica_rate:.1}/s per replica = {needed:.2} replicas"
            ),
            Reason::CapacityLowerBound { replica_rate } => write!(
                f,
                "capacity per replica not measured yet: current {replica_rate:.1}/s per replica used as a lower bound"
            ),
            Reason::RatesUnknown => write!(f, "rates not measured yet; holding"),
            Reason::WithinTolerance { ratio, tolerance } => {
                write!(f, "ratio {ratio:.2} within tolerance {tolerance}; holding")
            }
            Reason::CappedAtPartitions { partitions } => write!(f, "capped at {partitions} partitions"),
            Reason::CappedAtMax { max } => write!(f, "capped at max-replicas {max}"),
            Reason::RaisedToMin { min } => write!(f, "raised to min {min}"),
            Reason::StabilizedUp { window_secs, allowed } => {
                write!(f, "scale-up stabilization ({window_secs} s window) allows {allowed}")
            }
            Reason::StabilizedDown { window_secs, allowed } => {
                write!(f, "scale-down stabilization ({window_secs} s window) allows {allowed}")
            }
            Reason::RateLimited { allowed } => write!(f, "rate limit allows {allowed}"),
        }
    }
}

/// One evaluation's outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    /// The time passed to [`Policy::decide`], seconds.
    pub at_secs: f64,
    /// Replicas before the decision.
    pub current: u32,
    /// The mode's recommendation within bounds, before stabilization and rate limits.
    pub recommended: u32,
    /// Replicas to run.
    pub desired: u32,
    /// Why, in the order the steps applied.
    pub reasons: Vec<Reason>,
    /// Partitions the recommendation needs when the topic's partitions cap it (more
    /// replicas than partitions would idle): growing the topic to this count (`keyshift
    /// expand`) would let the group scale as far as the mode asks, within `max_replicas`.
    /// `None` when the partitions do not cap the recommendation.
    pub expand_to: Option<u32>,
}

impl Decision {
    /// Whether the decision changes the replica count.
    pub fn changed(&self) -> bool {
        self.desired != self.current
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.changed() {
            write!(f, "scale {} -> {}", self.current, self.desired)?;
        } else {
            write!(f, "keep {}", self.current)?;
        }
        for (i, r) in self.reasons.iter().enumerate() {
            f.write_str(if i == 0 { ": " } else { "; " })?;
            write!(f, "{r}")?;
        }
        if let Some(m) = self.expand_to {
            write!(f, "; expand the topic to {m} partitions to scale further")?;
        }
        Ok(())
    }
}

/// The scaling policy's state machine; see the module doc for the pipeline.
#[derive(Debug, Clone)]
pub struct Policy {
    config: PolicyConfig,
    /// Past recommendations `(time, count)` within the longer stabilization window.
    recommendations: VecDeque<(f64, u32)>,
    /// Past changes `(time, delta)` within the longest rate-limit period.
    changes: VecDeque<(f64, i64)>,
    /// When the last change was decided.
    last_change_at: Option<f64>,
    /// When the group was last seen active.
    last_active_at: Option<f64>,
    /// Capacity per replica measured while saturated (records/s).
    measured_rate: Option<f64>,
    /// Most throughput per replica seen at a settled evaluation (records/s).
    throughput_rate: Option<f64>,
}

impl Policy {
    /// A policy with `config`, checked with [`PolicyConfig::validate`].
    pub fn new(config: PolicyConfig) -> Result<Policy, ParamError> {
        config.validate()?;
        Ok(Self {
            config,
            recommendations: VecDeque::new(),
            changes: VecDeque::new(),
            last_change_at: None,
            last_active_at: None,
            measured_rate: None,
            throughput_rate: None,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &PolicyConfig {
        &self.config
    }

    /// Capacity of one replica (records/s) the predictive mode measured so far, if any.
    pub fn measured_replica_rate(&self) -> Option<f64> {
        self.measured_rate
    }

    /// Decides the replica count for `obs` seen at `now_secs` (any monotonic clock, seconds).
    /// The caller applies `desired` (or not: the next observation's `current_replicas` says
    /// what is running, and the policy only remembers what it decided).
    pub fn decide(&mut self, now_secs: f64, obs: &Observation) -> Decision {
        let current = obs.current_replicas;
        let mut reasons = Vec::new();
        let mut expand_to = None;
        let decision = |recommended: u32, desired: u32, reasons: Vec<Reason>, expand_to| Decision {
            at_secs: now_secs,
            current,
            recommended,
            desired,
            reasons,
            expand_to,
        };
        if let Some(field) = invalid_field(obs) {
            return decision(
                current,
                current,
                vec![Reason::InvalidObservation { field }],
                None,
            );
        }

        // 1. Activation and scale to zero.
        let active = obs.lag_records as f64 > self.config.activation_lag
            || obs.production_rate.unwrap_or(0.0) > self.config.activation_rate;
        if active || self.last_active_at.is_none() {
            // Never seen active counts as active now, so a fresh policy waits a full cooldown.
            self.last_active_at = Some(now_secs);
        }
        let idle_secs = now_secs - self.last_active_at.unwrap_or(now_secs);
        let (max, max_reason) = self.max_for(obs.partitions);
        let min = self.config.min_replicas.max(1).min(max);
        if current == 0 {
            if !active {
                return decision(0, 0, vec![Reason::Idle], None);
            }
            reasons.push(Reason::Activated {
                lag_records: obs.lag_records,
                production_rate: obs.production_rate,
            });
            // Treat the group as one replica so the mode's rule has something to scale.
            let (rec, mut why) = self.recommend(now_secs, obs, 1);
            reasons.append(&mut why);
            let desired = clamp(rec.max(1), min, max, &max_reason, &mut reasons);
            self.record_change(now_secs, 0, desired);
            let expand_to = self.expansion(rec, obs.partitions);
            return decision(desired, desired, reasons, expand_to);
        }
        if self.config.min_replicas == 0 && !active && idle_secs >= self.config.cooldown_secs {
            self.recommendations.clear();
            self.record_change(now_secs, current, 0);
            return decision(0, 0, vec![Reason::ScaleToZero { idle_secs }], None);
        }

        // 2. Recommendation within bounds.
        let (raw, mut why) = self.recommend(now_secs, obs, current);
        reasons.append(&mut why);
        let recommended = clamp(raw, min, max, &max_reason, &mut reasons);
        expand_to = expand_to.or(self.expansion(raw, obs.partitions));

        // 3. Stabilization.
        let stabilized = self.stabilize(now_secs, current, recommended, &mut reasons);

        // 4. Rate limits.
        let limited = self.rate_limit(now_secs, current, stabilized, &mut reasons);

        // 5. Bounds, for a current count already outside them.
        let desired = if limited > max || limited < min {
            clamp(limited, min, max, &max_reason, &mut reasons)
        } else {
            limited
        };
        self.record_change(now_secs, current, desired);
        decision(recommended, desired, reasons, expand_to)
    }

    /// The partitions a raw recommendation needs beyond the topic's, within `max_replicas`.
    fn expansion(&self, raw: u32, partitions: u32) -> Option<u32> {
        let wanted = raw.min(self.config.max_replicas);
        (wanted > partitions).then_some(wanted)
    }

    /// The upper bound for `partitions` and which reason applies when it caps.
    fn max_for(&self, partitions: u32) -> (u32, Reason) {
        if partitions < self.config.max_replicas {
            (partitions, Reason::CappedAtPartitions { partitions })
        } else {
            let max = self.config.max_replicas;
            (max, Reason::CappedAtMax { max })
        }
    }

    /// The mode's raw recommendation for `current` replicas (before bounds).
    fn recommend(&mut self, now_secs: f64, obs: &Observation, current: u32) -> (u32, Vec<Reason>) {
        let tolerance = self.config.tolerance;
        let mut reasons = Vec::new();
        let ratio = match self.config.mode {
            Mode::Hpa { metric, target } => {
                let value = match metric {
                    HpaMetric::LagRecords => obs.lag_records as f64 / f64::from(current),
                    HpaMetric::LagSeconds => obs.lag_seconds,
                };
                let ratio = value / target;
                reasons.push(Reason::Metric {
                    metric,
                    value,
                    target,
                    ratio,
                });
                ratio
            }
            Mode::Predictive { drain_target_secs } => {
                let (Some(production), Some(consumption)) =
                    (obs.production_rate, obs.consumption_rate)
                else {
                    reasons.push(Reason::RatesUnknown);
                    return (current, reasons);
                };
                let Some(replica_rate) =
                    self.replica_rate(now_secs, obs, consumption, &mut reasons)
                else {
                    reasons.push(Reason::RatesUnknown);
                    return (current, reasons);
                };
                let needed =
                    (production + obs.lag_records as f64 / drain_target_secs) / replica_rate;
                reasons.push(Reason::Predicted {
                    production_rate: production,
                    lag_records: obs.lag_records,
                    drain_target_secs,
                    replica_rate,
                    needed,
                });
                needed / f64::from(current)
            }
        };
        if (ratio - 1.0).abs() <= tolerance {
            reasons.push(Reason::WithinTolerance { ratio, tolerance });
            return (current, reasons);
        }
        let desired = (ratio * f64::from(current)).ceil();
        // Saturating float → u32: a huge ratio is capped by the bounds next.
        (desired as u32, reasons)
    }

    /// Capacity of one replica for the predictive rule, updating the measurement.
    fn replica_rate(
        &mut self,
        now_secs: f64,
        obs: &Observation,
        consumption: f64,
        reasons: &mut Vec<Reason>,
    ) -> Option<f64> {
        let settled = self
            .last_change_at
            .is_none_or(|t| now_secs - t >= self.config.settle_secs);
        let consuming = obs.current_replicas.min(obs.partitions);
        let per_replica = (settled && consuming > 0 && consumption > 0.0)
            .then(|| consumption / f64::from(consuming));
        if let Some(sample) = per_replica {
            if obs.lag_seconds >= self.config.saturation_lag_secs {
                // Busy all the time: consumption is capacity. Average out measurement noise.
                self.measured_rate = Some(match self.measured_rate {
                    Some(m) => 0.5 * m + 0.5 * sample,
                    None => sample,
                });
            } else if let Some(m) = self.measured_rate {
                // Throughput is a lower bound of capacity: never believe less than what is done.
                self.measured_rate = Some(m.max(sample));
            }
        }
        if let Some(sample) = per_replica {
            self.throughput_rate = Some(self.throughput_rate.map_or(sample, |t| t.max(sample)));
        }
        if let Some(rate) = self.measured_rate.or(self.config.replica_rate) {
            return Some(rate.max(per_replica.unwrap_or(0.0)));
        }
        // Until capacity is measured, the most throughput per replica seen settled is what a
        // replica can at least do (an over-provisioned group shows less, so keep the best).
        let rate = self.throughput_rate?;
        reasons.push(Reason::CapacityLowerBound { replica_rate: rate });
        Some(rate)
    }

    /// Applies the stabilization windows and remembers `recommended`.
    fn stabilize(
        &mut self,
        now_secs: f64,
        current: u32,
        recommended: u32,
        reasons: &mut Vec<Reason>,
    ) -> u32 {
        let up_window = self.config.scale_up_window_secs;
        let down_window = self.config.scale_down_window_secs;
        let horizon = up_window.max(down_window);
        while self
            .recommendations
            .front()
            .is_some_and(|&(t, _)| now_secs - t > horizon)
        {
            self.recommendations.pop_front();
        }
        let mut up = recommended;
        let mut down = recommended;
        for &(t, rec) in &self.recommendations {
            let age = now_secs - t;
            if age < up_window {
                up = up.min(rec);
            }
            if age < down_window {
                down = down.max(rec);
            }
        }
        self.recommendations.push_back((now_secs, recommended));
        let mut out = current;
        if out < up {
            out = up;
        }
        if out > down {
            out = down;
        }
        if recommended > current && out < recommended {
            reasons.push(Reason::StabilizedUp {
                window_secs: up_window,
                allowed: out,
            });
        } else if recommended < current && out > recommended {
            reasons.push(Reason::StabilizedDown {
                window_secs: down_window,
                allowed: out,
            });
        }
        out
    }

    /// Cuts the change from `current` to `desired` to what the rate limits allow.
    fn rate_limit(
        &mut self,
        now_secs: f64,
        current: u32,
        desired: u32,
        reasons: &mut Vec<Reason>,
    ) -> u32 {
        let longest = self
            .config
            .scale_up_limits
            .limits
            .iter()
            .chain(&self.config.scale_down_limits.limits)
            .map(|l| l.period_secs)
            .fold(0.0, f64::max);
        while self
            .changes
            .front()
            .is_some_and(|&(t, _)| now_secs - t >= longest)
        {
            self.changes.pop_front();
        }
        if desired == current {
            return desired;
        }
        let up = desired > current;
        let limits = if up {
            &self.config.scale_up_limits
        } else {
            &self.config.scale_down_limits
        };
        if limits.limits.is_empty() && limits.select != SelectPolicy::Disabled {
            return desired;
        }
        let mut best: Option<i64> = None;
        if limits.select != SelectPolicy::Disabled {
            for l in &limits.limits {
                // The count at the start of this period: undo the changes made within it.
                let moved: i64 = self
                    .changes
                    .iter()
                    .filter(|&&(t, _)| now_secs - t < l.period_secs)
                    .map(|&(_, d)| d)
                    .sum();
                let start = (i64::from(current) - moved).max(0) as f64;
                let bound = match (l.kind, up) {
                    (RateLimitKind::Pods, true) => start + l.value,
                    (RateLimitKind::Pods, false) => start - l.value,
                    (RateLimitKind::Percent, true) => (start * (1.0 + l.value / 100.0)).ceil(),
                    (RateLimitKind::Percent, false) => (start * (1.0 - l.value / 100.0)).floor(),
                };
                let bound = bound.max(0.0).min(f64::from(u32::MAX)) as i64;
                // Max allows the largest change: the highest bound up, the lowest bound down.
                let more_change = up == (limits.select == SelectPolicy::Max);
                best = Some(match best {
                    None => bound,
                    Some(b) if more_change => b.max(bound),
                    Some(b) => b.min(bound),
                });
            }
        }
        let allowed = match best {
            None => i64::from(current),
            // Earlier changes may have used up the period already: never move the other way.
            Some(b) if up => b.max(i64::from(current)),
            Some(b) => b.min(i64::from(current)),
        };
        let allowed = allowed.clamp(0, i64::from(u32::MAX)) as u32;
        let out = if up {
            desired.min(allowed)
        } else {
            desired.max(allowed)
        };
        if out != desired {
            reasons.push(Reason::RateLimited { allowed: out });
        }
        out
    }

    fn record_change(&mut self, now_secs: f64, from: u32, to: u32) {
        if from != to {
            self.changes
                .push_back((now_secs, i64::from(to) - i64::from(from)));
            self.last_change_at = Some(now_secs);
        }
    }
}

/// Clamps `n` into `[min, max]`, saying why when it moved.
fn clamp(n: u32, min: u32, max: u32, max_reason: &Reason, reasons: &mut Vec<Reason>) -> u32 {
    if n > max {
        reasons.push(max_reason.clone());
        max
    } else if n < min {
        reasons.push(Reason::RaisedToMin { min });
        min
    } else {
        n
    }
}

/// The first field of `obs` that no measurement can produce.
fn invalid_field(obs: &Observation) -> Option<&'static str> {
    let bad = |v: f64| !(v.is_finite() && v >= 0.0);
    if obs.partitions == 0 {
        Some("partitions")
    } else if bad(obs.lag_seconds) {
        Some("lag_seconds")
    } else if obs.production_rate.is_some_and(bad) {
        Some("production_rate")
    } else if obs.consumption_rate.is_some_and(bad) {
        Some("consumption_rate")
    } else {
        None
    }
}
