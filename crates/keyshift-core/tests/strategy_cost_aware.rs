//! The cost-aware `keyshift` against the classic one, in the simulator and by driving the
//! strategy directly: it settles on a stationary load, pins and isolates giant keys and says
//! when a key needs more than one consumer, stays ahead of hash on a shifting load, backs off
//! from a migration storm, and recovers from a sudden hot key that hash cannot move. Each test
//! runs `keyshift-classic`, `hash` or the same run without the trigger as its negative
//! control: the figure the test checks must differ there.

use keyshift_core::hash::Hasher;
use keyshift_core::sim::{self, SimConfig, SimReport, WorkloadKind};
use keyshift_core::strategy::{KeyshiftConfig, KeyshiftStrategy, PartitionFeedback, Strategy};
use keyshift_core::workload::{key_name, Zipf};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn run(config: &SimConfig, strategy: &str) -> SimReport {
    let r = sim::run(config, strategy).unwrap();
    println!(
        "{strategy:16} p99 {:9.1} ms  thr {:6.1}  max/bound {:.3}  moves {:5} ({} after warm-up, \
         {:.2}/min)  parked {}",
        r.p99_ms,
        r.throughput_rps,
        r.imbalance_max_over_bound,
        r.migrations,
        r.migrations_after_warmup,
        r.migrations_per_minute_after_warmup,
        r.parked_records
    );
    assert_eq!(r.order_violations, 0, "{strategy}");
    r
}

#[test]
fn settles_on_the_stationary_seed_workload() {
    // 500 s of the seed workload; the last 300 s are measured, after the slow load estimate
    // (half-life 160 s) has filled.
    let c = SimConfig {
        records: 100_000,
        warmup: 0.4,
        ..SimConfig::default()
    };
    let hash = run(&c, "hash");
    let new = run(&c, "keyshift");
    let classic = run(&c, "keyshift-classic");
    assert!(new.migrations_per_minute_after_warmup <= 1.0, "{new:?}");
    assert!(new.imbalance_max_over_bound <= 1.05, "{new:?}");
    assert!(new.imbalance_max_over_bound < hash.imbalance_max_over_bound);
    assert!(new.p99_ms < hash.p99_ms);
    // The classic variant keeps moving keys on estimation noise.
    assert!(
        classic.migrations_per_minute_after_warmup > 5.0,
        "{classic:?}"
    );
}

/// The seed's Zipf keys on 32 partitions and consumers: the hottest key (7 % of the records)
/// needs about 1.5 consumers, more than any one can give.
fn giant() -> SimConfig {
    SimConfig {
        partitions: 32,
        consumers: 32,
        records: 30_000,
        ..SimConfig::default()
    }
}

#[test]
fn an_infeasible_key_is_reported_and_moves_stay_bounded() {
    let c = giant();
    let new = run(&c, "keyshift");
    let classic = run(&c, "keyshift-classic");
    for r in [&new, &classic] {
        let top = &r.infeasible_keys[0];
        assert_eq!(top.key, "location_0");
        assert!(top.consumers_needed > 1.3, "{top:?}");
        assert_eq!(
            r.warnings[0],
            format!(
                "key location_0 needs {:.2} consumers; per-key order makes this load \
                 unsustainable",
                top.consumers_needed
            )
        );
    }
    // Pinned giants (four keys above a 32nd of the load), their partitions evacuated once: a
    // bounded number of moves, a handful at most once warmed up; the classic variant chases
    // the giant from partition to partition.
    assert!(new.migrations <= 60, "{new:?}");
    assert!(new.migrations_after_warmup <= 4, "{new:?}");
    assert!(classic.migrations > 10 * new.migrations, "{classic:?}");
    // The seed workload itself is feasible.
    let seed = run(
        &SimConfig {
            records: 10_000,
            ..SimConfig::default()
        },
        "keyshift",
    );
    assert!(seed.infeasible_keys.is_empty() && seed.warnings.is_empty());
}

#[test]
fn a_giant_key_is_pinned_and_never_moves() {
    // Driving the strategy directly: Zipf(1.1, 2.72) over 2800 keys on 32 partitions, where
    // the hottest key carries 2.2 fair shares of a partition and the next one 1.1.
    let zipf = Zipf::new(1.1, 2.72, 2799).unwrap();
    let names: Vec<Vec<u8>> = (0..2800).map(|k| key_name(k).into_bytes()).collect();
    for config in [KeyshiftConfig::default(), KeyshiftConfig::classic()] {
        let mut k = KeyshiftStrategy::new(32, Hasher::Murmur2, &config).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let mut giant_moves = 0;
        let mut moves = 0;
        for i in 0..400_000u64 {
            let key = zipf.sample(&mut rng);
            k.route(&names[key as usize], i as f64 / 1000.0);
            for m in k.drain_moves() {
                moves += 1;
                giant_moves += usize::from(&*m.key == b"location_0");
            }
        }
        let giants: Vec<(Vec<u8>, u32)> = k.giants().map(|(g, p)| (g.to_vec(), p)).collect();
        println!(
            "{:?}: {moves} moves, {giant_moves} of location_0, {} giants",
            config.variant,
            giants.len()
        );
        if config.variant == KeyshiftConfig::default().variant {
            assert_eq!(giant_moves, 0);
            assert!(giants.iter().any(|(g, _)| g == b"location_0"), "{giants:?}");
            // Two giants never share a partition.
            assert!(giants.len() < 2 || giants[0].1 != giants[1].1, "{giants:?}");
        } else {
            // The classic variant has no notion of giants (the simulator test above shows
            // what that costs).
            assert!(giants.is_empty());
        }
    }
}

#[test]
fn stays_ahead_of_hash_on_the_shifting_targeted_workload() {
    // The seed's targeted generator: the hot spot jumps to another third of the partitions
    // every 3000 records. At 70 % utilisation the classic variant fell behind hash.
    let c = SimConfig {
        workload: WorkloadKind::Targeted,
        utilization: 0.7,
        records: 60_000,
        ..SimConfig::default()
    };
    let hash = run(&c, "hash");
    let new = run(&c, "keyshift");
    let classic = run(&c, "keyshift-classic");
    assert!(new.p99_ms < hash.p99_ms, "{new:?}");
    assert!(new.throughput_rps >= hash.throughput_rps, "{new:?}");
    assert!(classic.p99_ms > new.p99_ms, "{classic:?}");
}

#[test]
fn backs_off_from_a_migration_storm() {
    // A ranking that rotates every 30 s keeps keys moving. Partition 0's consumer is stuck
    // behind the parked records of the keys moved off it: its backlog grows by 100 records
    // every second while it completes 10 — moves that do not cut what they were meant to.
    let zipf = Zipf::new(1.0, 1.0, 1999).unwrap();
    let names: Vec<Vec<u8>> = (0..2000).map(|k| key_name(k).into_bytes()).collect();
    let mut outcome = Vec::new();
    for storm in [true, false] {
        let mut k = KeyshiftStrategy::new(8, Hasher::Murmur2, &KeyshiftConfig::default()).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let rate = 2000.0;
        let mut late_moves = 0;
        for i in 0..1_200_000u64 {
            let now = i as f64 / rate;
            if i % 2000 == 0 {
                let feedback: Vec<PartitionFeedback> = (0..8)
                    .map(|p| PartitionFeedback {
                        partition: p,
                        throughput_rps: if p == 0 && storm { 10.0 } else { 250.0 },
                        lag: if p == 0 && storm { 100 * (i / 2000) } else { 0 },
                    })
                    .collect();
                k.observe(&feedback, now);
            }
            let phase = (now / 30.0) as u64;
            let key = (zipf.sample(&mut rng) + phase * 37) % 2000;
            k.route(&names[key as usize], now);
            let moved = k.drain_moves().len();
            if now >= 300.0 {
                late_moves += moved;
            }
        }
        println!(
            "storm {storm}: {} storms, back-off {}, {late_moves} moves in the last 300 s",
            k.storms(),
            k.backoff()
        );
        outcome.push((k.storms(), k.backoff(), late_moves));
    }
    let (storms, backoff, late) = outcome[0];
    let (calm_storms, calm_backoff, calm_late) = outcome[1];
    assert!(storms >= 1 && backoff > 1.0, "{outcome:?}");
    assert_eq!((calm_storms, calm_backoff), (0, 1.0), "{outcome:?}");
    assert!(2 * late < calm_late, "{outcome:?}");
}

#[test]
fn recovers_from_a_sudden_hot_key_that_hash_cannot_move() {
    // Half-way through 500 s of the seed workload a new key appears with 10 % of the
    // arrivals. Windows are 10 000 records (50 s); the event falls on a window boundary.
    let quiet = SimConfig {
        records: 100_000,
        ..SimConfig::default()
    };
    let c = SimConfig {
        hot_key_at: Some(0.5),
        hot_key_share: 0.1,
        ..quiet.clone()
    };
    let hash = run(&c, "hash");
    let new = run(&c, "keyshift");
    println!("hash {:?}\nkeyshift {:?}", hash.recovery, new.recovery);
    // The key is new: it shows up among the measured records, as the hottest one.
    assert_eq!(new.hottest_key_records, hash.hottest_key_records);
    assert!(hash.hottest_key_records > 4_000, "{hash:?}");
    // Hash leaves the key (and every other) where it hashes: it never recovers.
    assert_eq!(hash.recovery.disturbances, 1, "{:?}", hash.recovery);
    assert_eq!(hash.recovery.unrecovered, 1, "{:?}", hash.recovery);
    assert_eq!(hash.recovery.recover_s_max, None);
    // keyshift moves keys until a window is within 1.1 of the bound again, within the run.
    let r = &new.recovery;
    assert_eq!((r.disturbances, r.unrecovered), (1, 0), "{r:?}");
    let time = r.recover_s_max.unwrap();
    assert!(time > 0.0 && time <= 200.0, "{r:?}");
    let moves = r.moves_max.unwrap();
    assert!(moves >= 1 && moves <= new.migrations_after_warmup, "{r:?}");
    // Without the event there is nothing to recover from.
    for s in ["hash", "keyshift"] {
        let r = run(&quiet, s).recovery;
        assert_eq!((r.disturbances, r.unrecovered), (0, 0), "{s}: {r:?}");
    }
}

/// A key that turns hot late is judged on the time it was hot: with a fifth of the arrivals
/// from half-way on, the new key needs more than one consumer while it exists, which the
/// report flags — averaged over the whole measured span, as the report did before, it would
/// read as feasible (the second assertion shows that reading stays below 1).
#[test]
fn a_key_that_turns_hot_late_is_flagged_on_its_own_span() {
    let c = SimConfig {
        records: 60_000,
        hot_key_at: Some(0.5),
        hot_key_share: 0.2,
        ..SimConfig::default()
    };
    let r = run(&c, "hash");
    let hot = r
        .infeasible_keys
        .first()
        .unwrap_or_else(|| panic!("nothing flagged: {:?}", r.warnings));
    assert!(hot.consumers_needed > 1.0, "{hot:?}");
    // The same records over the whole measured span (from the warm-up on).
    let whole_span = (c.records as f64 * (1.0 - c.warmup)) / c.rate;
    let diluted = r.hottest_key_records as f64 / whole_span * c.mean_service_secs();
    assert!(
        diluted < 1.0,
        "the test needs a key that dilution hides: {diluted}"
    );
}
