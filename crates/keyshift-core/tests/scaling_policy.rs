//! The scaling policy's rules through its public API, one rule per test: the HPA formula and
//! tolerance, the predictive formula and how it learns capacity, bounds (max capped at the
//! partitions), stabilization windows, rate limits, activation and scale to zero, rejected
//! configurations and observations; and a property test of the bounds over random sequences.

use keyshift_core::scaling::{
    HpaMetric, Mode, Observation, Policy, PolicyConfig, RateLimit, RateLimitKind, RateLimits,
    Reason, SelectPolicy,
};
use proptest::prelude::*;

/// A group of `current` replicas over 24 partitions with `lag` records of lag, no rates.
fn obs(current: u32, lag: u64) -> Observation {
    Observation {
        current_replicas: current,
        partitions: 24,
        lag_records: lag,
        lag_seconds: 0.0,
        production_rate: None,
        consumption_rate: None,
    }
}

fn with_rates(mut o: Observation, production: f64, consumption: f64) -> Observation {
    o.production_rate = Some(production);
    o.consumption_rate = Some(consumption);
    o
}

fn hpa(target: f64) -> Policy {
    Policy::new(PolicyConfig::hpa(HpaMetric::LagRecords, target)).unwrap()
}

#[test]
fn bad_configurations_are_rejected_naming_the_parameter() {
    let name = |c: PolicyConfig| Policy::new(c).unwrap_err().name;
    assert_eq!(
        name(PolicyConfig::hpa(HpaMetric::LagRecords, 0.0)),
        "target"
    );
    assert_eq!(
        name(PolicyConfig::hpa(HpaMetric::LagSeconds, -5.0)),
        "target"
    );
    assert_eq!(
        name(PolicyConfig::hpa(HpaMetric::LagRecords, f64::NAN)),
        "target"
    );
    assert_eq!(name(PolicyConfig::predictive(0.0)), "drain-target");
    let c = PolicyConfig {
        min_replicas: 5,
        max_replicas: 4,
        ..PolicyConfig::default()
    };
    let err = Policy::new(c).unwrap_err();
    assert_eq!(err.name, "min-replicas");
    assert!(
        err.to_string().contains("5 is more than max-replicas 4"),
        "{err}"
    );
    let c = PolicyConfig {
        max_replicas: 0,
        ..PolicyConfig::default()
    };
    assert_eq!(name(c), "max-replicas");
    let c = PolicyConfig {
        tolerance: 1.0,
        ..PolicyConfig::default()
    };
    assert_eq!(name(c), "tolerance");
    let c = PolicyConfig {
        scale_down_window_secs: -1.0,
        ..PolicyConfig::default()
    };
    assert_eq!(name(c), "scale-down-window");
    let mut c = PolicyConfig::default();
    c.scale_up_limits.limits[0].period_secs = 0.0;
    assert_eq!(name(c), "scale-up-limit");
    let c = PolicyConfig {
        replica_rate: Some(0.0),
        ..PolicyConfig::default()
    };
    assert_eq!(name(c), "replica-rate");
}

#[test]
fn hpa_rule_is_ceil_current_times_metric_over_target() {
    // 4 replicas, 12_500 records: 3125 per replica against 1000 → ceil(4 × 3.125) = 13.
    // (The rate limit then allows 8 of them; see the rate limit test.)
    let d = hpa(1000.0).decide(0.0, &obs(4, 12_500));
    assert_eq!(d.recommended, 13);
    assert_eq!(
        d.reasons[0],
        Reason::Metric {
            metric: HpaMetric::LagRecords,
            value: 3125.0,
            target: 1000.0,
            ratio: 3.125
        }
    );
    // Lag seconds is a plain value: 3 replicas at 25 s against 10 s → ceil(3 × 2.5) = 8.
    let mut p = Policy::new(PolicyConfig::hpa(HpaMetric::LagSeconds, 10.0)).unwrap();
    let mut o = obs(3, 100);
    o.lag_seconds = 25.0;
    assert_eq!(p.decide(0.0, &o).recommended, 8);
}

#[test]
fn hpa_holds_within_tolerance_and_moves_outside_it() {
    // Ratio 1.09: held. Ratio 1.11: ceil(4 × 1.11) = 5.
    let d = hpa(1000.0).decide(0.0, &obs(4, 4_360));
    assert_eq!(d.desired, 4);
    assert!(matches!(d.reasons[1], Reason::WithinTolerance { tolerance, .. } if tolerance == 0.1));
    assert!(!d.changed());
    assert_eq!(hpa(1000.0).decide(0.0, &obs(4, 4_440)).desired, 5);
}

#[test]
fn predictive_rule_keeps_up_and_drains_within_the_target() {
    let mut c = PolicyConfig::predictive(60.0);
    c.replica_rate = Some(100.0);
    let mut p = Policy::new(c).unwrap();
    // (950/s + 6000 records / 60 s) / 100/s = 10.5 → 11 replicas.
    let d = p.decide(0.0, &with_rates(obs(8, 6_000), 950.0, 400.0));
    assert_eq!(d.desired, 11);
    match d.reasons[0] {
        Reason::Predicted {
            needed,
            replica_rate,
            ..
        } => {
            assert!((needed - 10.5).abs() < 1e-9, "{needed}");
            assert_eq!(replica_rate, 100.0);
        }
        ref r => panic!("unexpected reason {r:?}"),
    }
}

#[test]
fn predictive_holds_without_rates_and_learns_capacity_from_a_backlog() {
    let mut p = Policy::new(PolicyConfig::predictive(60.0)).unwrap();
    let d = p.decide(0.0, &obs(4, 50_000));
    assert_eq!(
        (d.desired, d.reasons.clone()),
        (4, vec![Reason::RatesUnknown])
    );
    // A backlog 40 s old: the 6 replicas' 720/s consumption is their capacity, 120/s each.
    let mut o = with_rates(obs(6, 24_000), 840.0, 720.0);
    o.lag_seconds = 40.0;
    let d = p.decide(15.0, &o);
    assert_eq!(p.measured_replica_rate(), Some(120.0));
    // (840 + 24000 / 60) / 120 = 10.33 → 11.
    assert_eq!(d.desired, 11, "{d}");
}

#[test]
fn predictive_without_measured_capacity_uses_throughput_as_a_lower_bound() {
    let mut p = Policy::new(PolicyConfig::predictive(60.0)).unwrap();
    // No backlog: 5 replicas doing 400/s show at least 80/s each, so they cannot scale down,
    // but a lag that appears makes them scale up.
    let d = p.decide(0.0, &with_rates(obs(5, 100), 400.0, 400.0));
    assert_eq!(d.desired, 5);
    assert_eq!(
        d.reasons[0],
        Reason::CapacityLowerBound { replica_rate: 80.0 }
    );
    let d = p.decide(15.0, &with_rates(obs(5, 12_000), 400.0, 400.0));
    // (400 + 200) / 80 = 7.5 → 8.
    assert_eq!(d.desired, 8, "{d}");
}

#[test]
fn max_is_capped_at_the_partition_count_and_min_is_a_floor() {
    let d = hpa(100.0).decide(0.0, &obs(4, 1_000_000));
    assert_eq!(d.desired, 8, "rate limit first allows 4 → 8: {d}");
    let mut p = hpa(100.0);
    let mut last = 4;
    for i in 0..10 {
        let d = p.decide(f64::from(i) * 15.0, &obs(last, 1_000_000));
        last = d.desired;
    }
    assert_eq!(last, 24);
    let d = p.decide(150.0, &obs(24, 1_000_000));
    assert!(
        d.reasons
            .contains(&Reason::CappedAtPartitions { partitions: 24 }),
        "{d}"
    );
    // The lag asks for about 10 000 replicas: growing the topic would let the group scale —
    // proposed, never done by the policy itself.
    assert!(d.expand_to.is_some_and(|m| m >= 9_999), "{d}");
    assert!(d.to_string().contains("expand the topic to"), "{d}");

    let mut c = PolicyConfig::hpa(HpaMetric::LagRecords, 100.0);
    c.max_replicas = 6;
    let d = Policy::new(c).unwrap().decide(0.0, &obs(5, 1_000_000));
    assert_eq!(d.desired, 6);
    assert!(d.reasons.contains(&Reason::CappedAtMax { max: 6 }), "{d}");
    assert_eq!(
        d.expand_to, None,
        "max_replicas caps it, not the partitions: {d}"
    );

    let mut c = PolicyConfig::hpa(HpaMetric::LagRecords, 100.0);
    c.min_replicas = 3;
    c.scale_down_window_secs = 0.0;
    let d = Policy::new(c).unwrap().decide(0.0, &obs(5, 0));
    assert_eq!(d.desired, 3);
    assert!(d.reasons.contains(&Reason::RaisedToMin { min: 3 }), "{d}");

    // A count above the partitions (set by hand) comes down at once, whatever the windows.
    let mut o = obs(30, 3_000);
    o.partitions = 12;
    let d = hpa(100.0).decide(0.0, &o);
    assert_eq!(d.desired, 12, "{d}");
}

#[test]
fn scale_down_waits_for_the_down_window() {
    let mut p = hpa(1000.0);
    assert_eq!(p.decide(0.0, &obs(10, 10_000)).desired, 10);
    // Load gone at once: held at 10 for the whole 300 s window, then straight down.
    for t in (15..300).step_by(15) {
        let d = p.decide(f64::from(t), &obs(10, 2_000));
        assert_eq!(d.desired, 10, "at {t} s: {d}");
        assert_eq!(d.recommended, 2);
        assert!(
            d.reasons.contains(&Reason::StabilizedDown {
                window_secs: 300.0,
                allowed: 10
            }),
            "{d}"
        );
    }
    let d = p.decide(300.0, &obs(10, 2_000));
    assert_eq!(d.desired, 2, "{d}");
}

#[test]
fn up_window_ignores_a_single_spike() {
    let mut c = PolicyConfig::hpa(HpaMetric::LagRecords, 1000.0);
    c.scale_up_window_secs = 45.0;
    let mut p = Policy::new(c).unwrap();
    assert_eq!(p.decide(0.0, &obs(4, 4_000)).desired, 4);
    let d = p.decide(15.0, &obs(4, 6_000));
    assert_eq!(d.desired, 4, "one high sample is not enough: {d}");
    assert!(d.reasons.contains(&Reason::StabilizedUp {
        window_secs: 45.0,
        allowed: 4
    }));
    // Once every recommendation of the last 45 s is high, scale up to the lowest of them.
    assert_eq!(p.decide(30.0, &obs(4, 6_000)).desired, 4);
    assert_eq!(p.decide(45.0, &obs(4, 6_000)).desired, 6);
}

#[test]
fn rate_limits_count_from_the_start_of_their_period() {
    // HPA default up: max(4 pods, 100 %) per 15 s.
    let mut p = hpa(100.0);
    let d = p.decide(0.0, &obs(2, 4_000));
    assert_eq!(d.desired, 6, "2 + 4 pods beats 2 × 2: {d}");
    assert!(d.reasons.contains(&Reason::RateLimited { allowed: 6 }));
    let d = p.decide(15.0, &obs(6, 4_000));
    assert_eq!(d.desired, 12, "6 × 2 beats 6 + 4: {d}");
    let d = p.decide(30.0, &obs(12, 4_000));
    assert_eq!(d.desired, 24, "{d}");

    // 1 pod per 60 s, and Min of pods / percent; a second step within the period waits.
    let mut c = PolicyConfig::hpa(HpaMetric::LagRecords, 100.0);
    c.scale_up_limits = RateLimits {
        limits: vec![
            RateLimit {
                kind: RateLimitKind::Pods,
                value: 1.0,
                period_secs: 60.0,
            },
            RateLimit {
                kind: RateLimitKind::Percent,
                value: 100.0,
                period_secs: 60.0,
            },
        ],
        select: SelectPolicy::Min,
    };
    let mut p = Policy::new(c).unwrap();
    assert_eq!(p.decide(0.0, &obs(3, 2_000)).desired, 4);
    assert_eq!(p.decide(15.0, &obs(4, 2_000)).desired, 4);
    assert_eq!(p.decide(45.0, &obs(4, 2_000)).desired, 4);
    assert_eq!(p.decide(60.0, &obs(4, 2_000)).desired, 5);

    // Down by at most 50 % per 30 s.
    let mut c = PolicyConfig::hpa(HpaMetric::LagRecords, 100.0);
    c.scale_down_window_secs = 0.0;
    c.scale_down_limits = RateLimits {
        limits: vec![RateLimit {
            kind: RateLimitKind::Percent,
            value: 50.0,
            period_secs: 30.0,
        }],
        select: SelectPolicy::Max,
    };
    let mut p = Policy::new(c).unwrap();
    assert_eq!(p.decide(0.0, &obs(20, 100)).desired, 10);
    assert_eq!(p.decide(15.0, &obs(10, 100)).desired, 10);
    assert_eq!(p.decide(30.0, &obs(10, 100)).desired, 5);

    // Disabled: never in that direction.
    let mut c = PolicyConfig::hpa(HpaMetric::LagRecords, 100.0);
    c.scale_up_limits.select = SelectPolicy::Disabled;
    let d = Policy::new(c).unwrap().decide(0.0, &obs(3, 100_000));
    assert_eq!(d.desired, 3, "{d}");
}

#[test]
fn idle_group_scales_to_zero_after_cooldown_and_activates_on_lag() {
    let mut c = PolicyConfig::hpa(HpaMetric::LagRecords, 1000.0);
    c.min_replicas = 0;
    c.activation_lag = 50.0;
    let mut p = Policy::new(c).unwrap();
    let idle = |n| with_rates(obs(n, 10), 0.0, 0.0);
    // A fresh policy counts as just active: a full cooldown before scaling to zero.
    let mut current = 2;
    for t in (0..300).step_by(15) {
        let d = p.decide(f64::from(t), &idle(current));
        assert_ne!(d.desired, 0, "at {t} s: {d}");
        current = d.desired;
    }
    let d = p.decide(300.0, &idle(current));
    assert_eq!(d.desired, 0);
    assert_eq!(d.reasons, vec![Reason::ScaleToZero { idle_secs: 300.0 }]);
    // At zero, lag under the activation threshold keeps it there.
    let d = p.decide(315.0, &idle(0));
    assert_eq!((d.desired, d.reasons), (0, vec![Reason::Idle]));
    // Lag over it: back to at least one, sized by the rule (4500 / 1000 → 5).
    let d = p.decide(330.0, &with_rates(obs(0, 4_500), 30.0, 0.0));
    assert_eq!(d.desired, 5, "{d}");
    assert!(
        matches!(
            d.reasons[0],
            Reason::Activated {
                lag_records: 4_500,
                ..
            }
        ),
        "{d}"
    );
    // Production alone is activity too.
    let mut p2 = Policy::new({
        let mut c = PolicyConfig::hpa(HpaMetric::LagRecords, 1000.0);
        c.min_replicas = 0;
        c
    })
    .unwrap();
    assert_eq!(p2.decide(0.0, &with_rates(obs(0, 0), 5.0, 0.0)).desired, 1);
}

#[test]
fn nonsense_observations_hold_the_count_and_say_why() {
    let mut o = obs(3, 100);
    o.partitions = 0;
    let d = hpa(10.0).decide(0.0, &o);
    assert_eq!(
        (d.desired, d.reasons),
        (
            3,
            vec![Reason::InvalidObservation {
                field: "partitions"
            }]
        )
    );
    let mut o = obs(3, 100);
    o.lag_seconds = f64::NAN;
    let d = hpa(10.0).decide(0.0, &o);
    assert_eq!(
        d.reasons,
        vec![Reason::InvalidObservation {
            field: "lag_seconds"
        }]
    );
    let d = hpa(10.0).decide(0.0, &with_rates(obs(3, 100), -1.0, 5.0));
    assert_eq!(
        d.reasons,
        vec![Reason::InvalidObservation {
            field: "production_rate"
        }]
    );
}

#[test]
fn decisions_print_their_reasons_and_serialize() {
    let d = hpa(1000.0).decide(0.0, &obs(4, 12_500));
    assert_eq!(
        d.to_string(),
        "scale 4 -> 8: 3125.0 records lag per replica vs target 1000 (ratio 3.12); rate limit allows 8"
    );
    let json = serde_json::to_value(&d).unwrap();
    assert_eq!(json["desired"], 8);
    assert_eq!(json["reasons"][0]["reason"], "metric");
    assert_eq!(json["reasons"][0]["metric"], "lag-records");
    assert_eq!(json["reasons"][1]["reason"], "rate_limited");
    let mode = serde_json::to_value(Mode::Predictive {
        drain_target_secs: 60.0,
    })
    .unwrap();
    assert_eq!(mode["mode"], "predictive");
}

fn arb_config() -> impl Strategy<Value = PolicyConfig> {
    (
        prop_oneof![
            (1.0f64..5_000.0).prop_map(|t| PolicyConfig::hpa(HpaMetric::LagRecords, t)),
            (1.0f64..120.0).prop_map(|t| PolicyConfig::hpa(HpaMetric::LagSeconds, t)),
            (1.0f64..600.0).prop_map(PolicyConfig::predictive),
        ],
        0u32..4,
        1u32..40,
        0.0f64..0.5,
        0.0f64..120.0,
        0.0f64..400.0,
    )
        .prop_map(|(mut c, min, extra, tol, up, down)| {
            c.min_replicas = min;
            c.max_replicas = min.max(1) + extra;
            c.tolerance = tol;
            c.scale_up_window_secs = up;
            c.scale_down_window_secs = down;
            c
        })
}

proptest! {
    /// Whatever it observes, the policy never asks for more replicas than partitions or
    /// max-replicas, never less than min-replicas (or 1 while active) unless it scales to zero,
    /// and a scale-up never exceeds the HPA default limit from the count it decided last.
    #[test]
    fn decisions_stay_within_bounds(
        config in arb_config(),
        steps in proptest::collection::vec(
            (1u32..64, 0u64..2_000_000, 0.0f64..600.0, proptest::option::of(0.0f64..5_000.0), proptest::option::of(0.0f64..5_000.0)),
            1..60,
        ),
    ) {
        let min = config.min_replicas;
        let max = config.max_replicas;
        let mut p = Policy::new(config).unwrap();
        let mut current = min.max(1);
        for (i, (partitions, lag, lag_s, prod, cons)) in steps.into_iter().enumerate() {
            let o = Observation {
                current_replicas: current,
                partitions,
                lag_records: lag,
                lag_seconds: lag_s,
                production_rate: prod,
                consumption_rate: cons,
            };
            let d = p.decide(i as f64 * 15.0, &o);
            let cap = max.min(partitions);
            prop_assert!(d.desired <= cap, "{d} over cap {cap}");
            if d.desired > 0 {
                prop_assert!(d.desired >= min.max(1).min(cap), "{d} under min {min}");
            } else {
                prop_assert_eq!(min, 0);
            }
            if current > 0 && d.desired > current {
                prop_assert!(d.desired <= (current + 4).max(2 * current), "{d} breaks the rate limit");
            }
            prop_assert!(!d.reasons.is_empty());
            current = d.desired;
        }
    }
}
