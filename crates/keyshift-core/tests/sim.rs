//! Behaviour of the simulator through its public API: determinism, order, balance, latency.
//!
//! Runs are kept at a few tens of thousands of records so the suite stays fast in debug
//! builds; every figure compared is compared within one test, never against wall time.

use keyshift_core::sim::{self, Assignor, ServiceDist, SimConfig, WorkloadKind};

/// The seed workload, shortened.
fn seed(records: u64) -> SimConfig {
    SimConfig {
        records,
        ..SimConfig::default()
    }
}

#[test]
fn same_seed_same_report_other_seed_other_report() {
    let c = seed(10_000);
    for s in ["hash", "keyshift", "pkg"] {
        let a = sim::run(&c, s).unwrap();
        let b = sim::run(&c, s).unwrap();
        assert_eq!(a, b, "{s} is not deterministic");
        let other = sim::run(
            &SimConfig {
                seed: 2,
                ..c.clone()
            },
            s,
        )
        .unwrap();
        assert_ne!(a.p99_ms, other.p99_ms, "{s}: seed has no effect");
        assert_ne!(a.partition_load, other.partition_load);
    }
}

#[test]
fn every_record_is_processed_and_accounted() {
    let c = seed(10_000);
    for s in ["hash", "slops", "keyshift", "pkg", "unordered"] {
        let r = sim::run(&c, s).unwrap();
        assert_eq!(r.produced, 10_000, "{s}");
        assert_eq!(r.processed, 10_000, "{s}");
        // 20 % warm-up leaves the last 8000 records in the measured window.
        assert_eq!(r.measured, 8_000, "{s}");
        assert_eq!(r.partition_load.iter().sum::<u64>(), 8_000, "{s}");
        assert_eq!(r.partition_load.len(), 10);
        assert!(r.p50_ms <= r.p99_ms && r.p99_ms <= r.p999_ms && r.p999_ms <= r.max_ms);
        // Every record takes at least its 32.5 ms of service.
        assert!(r.p50_ms >= 32.5, "{s}: p50 {}", r.p50_ms);
        // Open loop below saturation: the group keeps up with the offered 200 records/s.
        assert!(
            (r.throughput_rps - 200.0).abs() < 10.0,
            "{s}: {}",
            r.throughput_rps
        );
    }
}

#[test]
fn hash_on_uniform_keys_never_moves_and_keeps_order() {
    let c = SimConfig {
        workload: WorkloadKind::Uniform,
        ..seed(20_000)
    };
    let r = sim::run(&c, "hash").unwrap();
    assert_eq!(r.migrations, 0);
    assert_eq!(r.fences, 0);
    assert_eq!(r.order_violations, 0);
    assert_eq!(r.parked_records, 0);
    assert_eq!(r.producer_held, 0);
    // 2800 equally likely keys hash to 10 partitions fairly evenly.
    assert!(
        r.imbalance_max_over_mean < 1.15,
        "{}",
        r.imbalance_max_over_mean
    );
}

#[test]
fn baselines_that_split_keys_break_order() {
    let c = seed(20_000);
    for s in ["pkg", "unordered"] {
        let r = sim::run(&c, s).unwrap();
        assert!(!r.preserves_order);
        assert!(r.order_violations > 0, "{s} showed no violation");
        assert_eq!(r.fences, 0, "{s} does not fence");
    }
}

#[test]
fn ordered_strategies_keep_order_across_migrations() {
    let base = seed(20_000);
    let variants = [
        base.clone(),
        SimConfig {
            service: ServiceDist::Exponential,
            ..base.clone()
        },
        SimConfig {
            consumers: 4,
            assignor: Assignor::RoundRobin,
            ..base.clone()
        },
        SimConfig {
            consumers: 3,
            assignor: Assignor::Range,
            utilization: 0.9,
            ..base.clone()
        },
        SimConfig {
            workload: WorkloadKind::Targeted,
            keys: 40,
            ..base.clone()
        },
    ];
    for (i, c) in variants.iter().enumerate() {
        for s in ["hash", "slops", "keyshift"] {
            let r = sim::run(c, s).unwrap();
            assert!(r.preserves_order);
            assert_eq!(r.order_violations, 0, "{s} violated order in variant {i}");
            assert_eq!(r.processed, r.produced, "{s} lost records in variant {i}");
        }
    }
}

#[test]
fn without_fencing_the_same_moves_break_order() {
    // The ablation: same strategy, same workload, moves applied at once. Records of a moved
    // key overtake its backlog on the old partition, which is what the protocol prevents. At
    // 90 % utilisation old partitions have a backlog when their keys move.
    let c = SimConfig {
        fencing: false,
        utilization: 0.9,
        ..seed(20_000)
    };
    for s in ["slops", "keyshift"] {
        let r = sim::run(&c, s).unwrap();
        assert!(r.migrations > 0, "{s} moved nothing");
        assert_eq!(r.fences, 0);
        assert_eq!(r.parked_records, 0);
        assert!(r.order_violations > 0, "{s} kept order without fences");
    }
}

#[test]
fn keyshift_migrates_through_fences_and_parks() {
    let r = sim::run(&seed(20_000), "keyshift").unwrap();
    assert!(r.migrations > 0);
    assert!(r.fences > 0);
    // Each fence pauses its key in the producer for the fence round trip.
    assert!(r.producer_held >= r.fences);
    // The first record after a move waits for the old partition to commit past the fence.
    assert!(r.parked_records > 0);
    assert!(r.parked_ms > 0.0 && r.parked_p99_ms <= r.parked_max_ms);
}

#[test]
fn keyshift_beats_hash_on_the_seed_workload() {
    let c = seed(40_000);
    let hash = sim::run(&c, "hash").unwrap();
    let keyshift = sim::run(&c, "keyshift").unwrap();
    assert!(
        keyshift.p99_ms < hash.p99_ms,
        "keyshift p99 {} ≥ hash p99 {}",
        keyshift.p99_ms,
        hash.p99_ms
    );
    assert!(keyshift.imbalance_max_over_bound < hash.imbalance_max_over_bound);
    assert!(keyshift.imbalance_max_over_bound >= 1.0);
}

#[test]
fn slower_fence_round_trips_hold_records_longer() {
    let c = seed(20_000);
    let fast = sim::run(&c, "keyshift").unwrap();
    let slow = sim::run(
        &SimConfig {
            fence_rtt_ms: 20.0,
            ..c
        },
        "keyshift",
    )
    .unwrap();
    let per_fence = |r: &sim::SimReport| r.producer_held_ms / r.fences as f64;
    assert!(per_fence(&slow) > per_fence(&fast));
}

#[test]
fn bad_parameters_are_named() {
    let err = |c: SimConfig, s: &str| sim::run(&c, s).unwrap_err().name;
    assert_eq!(
        err(
            SimConfig {
                partitions: 0,
                ..SimConfig::default()
            },
            "hash"
        ),
        "partitions"
    );
    assert_eq!(
        err(
            SimConfig {
                rate: -1.0,
                ..SimConfig::default()
            },
            "hash"
        ),
        "rate"
    );
    assert_eq!(err(SimConfig::default(), "roundest"), "strategy");
}

#[test]
fn hash_never_recovers_from_a_targeted_rotation_judged_rotation_by_rotation() {
    // 60 000 records of the seed's targeted workload: the hot spot rotates every 3000, and
    // by default each rotation is judged by a window of its own (3000 records).
    let c = SimConfig {
        workload: WorkloadKind::Targeted,
        records: 60_000,
        ..SimConfig::default()
    };
    let rotation = sim::run(&c, "hash").unwrap().recovery;
    assert_eq!(rotation.window_records, 3000);
    // Rotations at 12 000 (the end of the 20 % warm-up), 15 000, …, 57 000, each the start of
    // a complete window, and hash loads only a third of the partitions in every window.
    assert_eq!(
        (rotation.disturbances, rotation.unrecovered),
        (16, 16),
        "{rotation:?}"
    );
    assert_eq!(rotation.recover_s_max, None);
    // Negative control: windows of 10 000 records span more than three rotations, over which
    // hash reads as balanced (here in every window, so no rotation even counts as a
    // disturbance) without a single move. That is why windows are capped at one rotation.
    let long = SimConfig {
        recovery_window: Some(1000),
        ..c
    };
    let r = sim::run(&long, "hash").unwrap().recovery;
    assert_eq!(r.window_records, 10_000);
    assert!(r.unrecovered < rotation.unrecovered, "{r:?}");
}

#[test]
fn service_draws_have_the_mean_asked_for_and_io_has_a_heavy_tail() {
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    for dist in [
        ServiceDist::Fixed,
        ServiceDist::Exponential,
        ServiceDist::Io,
    ] {
        let mut draws: Vec<f64> = (0..200_000).map(|_| dist.sample(0.032, &mut rng)).collect();
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        assert!((mean / 0.032 - 1.0).abs() < 0.01, "{dist:?}: mean {mean}");
        assert!(draws.iter().all(|d| d.is_finite() && *d >= 0.0), "{dist:?}");
        draws.sort_by(f64::total_cmp);
        let p99 = draws[draws.len() * 99 / 100] / 0.032;
        let median = draws[draws.len() / 2] / 0.032;
        if dist == ServiceDist::Io {
            // Log-normal with σ 0.5: median e^(-σ²/2) ≈ 0.88, p99 e^(-σ²/2 + 2.326 σ) ≈ 2.82.
            assert!((median - 0.8825).abs() < 0.01, "median {median}");
            assert!((p99 - 2.82).abs() < 0.06, "p99 {p99}");
        }
    }
}
