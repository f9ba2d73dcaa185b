//! Scaling policy for a consumer group, and the closed-loop lag simulator that tests it (issue 6).
//!
//! A [`Policy`] turns an [`Observation`] of a consumer group (replicas, partitions, lag in records
//! and seconds, production and consumption rates) into a [`Decision`]: the replica count to run,
//! with the chain of [`Reason`]s that produced it. Two [`Mode`]s compute the raw recommendation:
//!
//! - [`Mode::Hpa`]: the Kubernetes HPA rule `desired = ceil(current × metric / target)`, skipped
//!   while `|metric / target − 1|` is within the tolerance.
//! - [`Mode::Predictive`]: `desired = ceil((production rate + lag / drain target) / capacity per
//!   replica)`, the capacity learnt from consumption measured while the group had a backlog.
//!
//! Both then go through the same damping, in the HPA's order: stabilization windows (the lowest
//! recommendation of the up window, the highest of the down window), rate limits per period,
//! bounds (`max` capped at the partition count, since a replica without a partition is idle),
//! and KEDA-like activation: with `min_replicas = 0` an idle group (lag and production at or
//! under the activation thresholds) scales to zero after a cooldown, and any activity brings it
//! back to at least one replica.
//!
//! [`LagSim`] is a deterministic fluid model of the group being scaled: records arrive on a
//! [`LoadSchedule`], replicas consume at a fixed rate over at most `partitions` of them, offsets
//! are committed on an interval, and a replica change takes effect after a rebalance delay (with
//! a stop-the-world pause). [`run_closed_loop`] drives a policy against it, as the acceptance
//! tests do.
//!
//! ```
//! use keyshift_core::scaling::{HpaMetric, Observation, Policy, PolicyConfig};
//!
//! let mut policy = Policy::new(PolicyConfig::hpa(HpaMetric::LagRecords, 1000.0))?;
//! let observation = Observation {
//!     current_replicas: 4,
//!     partitions: 24,
//!     lag_records: 12_500,
//!     lag_seconds: 20.0,
//!     production_rate: Some(900.0),
//!     consumption_rate: Some(400.0),
//! };
//! let decision = policy.decide(0.0, &observation);
//! assert_eq!(decision.desired, 8);
//! assert_eq!(
//!     decision.to_string(),
//!     "scale 4 -> 8: 3125.0 records lag per replica vs target 1000 (ratio 3.12); rate limit allows 8"
//! );
//! # Ok::<(), keyshift_core::ParamError>(())
//! ```

mod lagsim;
mod policy;

pub use lagsim::{
    run_closed_loop, ClosedLoopReport, LagSim, LagSimConfig, LoadSchedule, SimSample,
};
pub use policy::{
    Decision, HpaMetric, Mode, Observation, Policy, PolicyConfig, RateLimit, RateLimitKind,
    RateLimits, Reason, SelectPolicy,
};
