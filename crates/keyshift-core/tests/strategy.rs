//! Behaviour of the partitioning strategies through their public API: placement of cold keys,
//! order (every change of a key's partition is a reported move), bounded route tables, key
//! splitting by the unordered baselines, and keyshift's balance and move economy on Zipf
//! workloads, stationary and shifting.

use std::collections::HashMap;

use keyshift_core::hash::{kafka_partition, Hasher};
use keyshift_core::strategy::{
    build, build_with, KeyshiftConfig, KeyshiftStrategy, SlopsConfig, SlopsStrategy, Strategy,
    StrategyConfig, NAMES,
};
use keyshift_core::workload::{key_name, Zipf};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Balance and moves measured over one run.
#[derive(Debug)]
struct Run {
    /// max partition load / (total / partitions), over the measured window.
    max_mean: f64,
    /// max partition load / max(total / partitions, hottest key's records), same window.
    max_bound: f64,
    /// Moves in the first and the second half of the run.
    moves_first: usize,
    moves_second: usize,
    /// Moves per tenth of the run.
    moves_by_tenth: [usize; 10],
    /// Keys that reached more than one partition.
    split_keys: usize,
}

/// Drives `strategy` with `records` records at `rate`/s whose key index comes from `next_key`
/// (given the record number), checking order on the way, and measures balance over
/// `window` (a range of record numbers).
fn drive(
    strategy: &mut dyn Strategy,
    partitions: u32,
    records: usize,
    rate: f64,
    window: std::ops::Range<usize>,
    mut next_key: impl FnMut(usize) -> u64,
) -> Run {
    let mut names: HashMap<u64, Vec<u8>> = HashMap::new();
    // Where the key's records go now, as the moves say; None until its first record.
    let mut current: HashMap<u64, u32> = HashMap::new();
    let mut seen_partitions: HashMap<u64, u32> = HashMap::new();
    let mut split = std::collections::HashSet::new();
    let mut per_partition = vec![0u64; partitions as usize];
    let mut per_key: HashMap<u64, u64> = HashMap::new();
    let mut moves_by_tenth = [0usize; 10];
    let mut by_name: HashMap<Vec<u8>, u64> = HashMap::new();
    for i in 0..records {
        let k = next_key(i);
        let key = names
            .entry(k)
            .or_insert_with(|| key_name(k).into_bytes())
            .clone();
        by_name.entry(key.clone()).or_insert(k);
        let now = i as f64 / rate;
        let p = strategy.route(&key, now);
        assert!(p < partitions, "partition {p} out of range");
        for m in strategy.drain_moves() {
            assert!(
                strategy.preserves_order(),
                "an unordered strategy reported a move"
            );
            assert_ne!(m.from, m.to, "a move must change the partition");
            assert_eq!(m.at, now, "moves are reported when decided");
            let mk = *by_name
                .get(&*m.key)
                .expect("a move for a key that never had a record");
            let was = *current
                .get(&mk)
                .unwrap_or(&kafka_partition(&m.key, partitions));
            assert_eq!(
                m.from, was,
                "move of {mk} from {} but it was on {was}",
                m.from
            );
            current.insert(mk, m.to);
            moves_by_tenth[i * 10 / records] += 1;
        }
        if strategy.preserves_order() {
            let expected = *current.entry(k).or_insert(p);
            assert_eq!(
                p, expected,
                "key {k} went to {p} at record {i} without a move from {expected}"
            );
        }
        let first = *seen_partitions.entry(k).or_insert(p);
        if first != p {
            split.insert(k);
        }
        if window.contains(&i) {
            per_partition[p as usize] += 1;
            *per_key.entry(k).or_insert(0) += 1;
        }
    }
    let total: u64 = per_partition.iter().sum();
    let max = *per_partition.iter().max().unwrap() as f64;
    let mean = total as f64 / partitions as f64;
    let hottest = *per_key.values().max().unwrap() as f64;
    let moves_first: usize = moves_by_tenth[..5].iter().sum();
    Run {
        max_mean: max / mean,
        max_bound: max / mean.max(hottest),
        moves_first,
        moves_second: moves_by_tenth[5..].iter().sum(),
        moves_by_tenth,
        split_keys: split.len(),
    }
}

fn zipf_run(
    strategy: &mut dyn Strategy,
    partitions: u32,
    s: f64,
    v: f64,
    keys: u64,
    records: usize,
    rate: f64,
) -> Run {
    let zipf = Zipf::new(s, v, keys - 1).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    drive(
        strategy,
        partitions,
        records,
        rate,
        records / 2..records,
        |_| zipf.sample(&mut rng),
    )
}

#[test]
fn hash_strategy_is_kafkas_partitioner() {
    let mut s = build("hash", 12, 0).unwrap();
    assert!(s.preserves_order());
    for n in 0..5000u64 {
        let key = key_name(n);
        assert_eq!(
            s.route(key.as_bytes(), n as f64),
            kafka_partition(key.as_bytes(), 12)
        );
    }
    for key in [&b""[..], b"a", b"ab", b"abc", b"abcd", &[0xff; 37]] {
        assert_eq!(s.route(key, 0.0), kafka_partition(key, 12));
    }
    assert!(s.drain_moves().is_empty());

    let fnv = StrategyConfig {
        hasher: Hasher::Fnv1a,
        ..StrategyConfig::default()
    };
    let mut s = build_with("hash", 10, &fnv).unwrap();
    for n in 0..1000u64 {
        let key = key_name(n);
        assert_eq!(
            s.route(key.as_bytes(), 0.0),
            Hasher::Fnv1a.partition(key.as_bytes(), 10)
        );
    }
}

#[test]
fn build_names_every_strategy_and_rejects_bad_input() {
    for &name in NAMES {
        let s = build(name, 4, 1).unwrap();
        assert_eq!(s.name(), name);
        assert_eq!(
            s.preserves_order(),
            matches!(name, "hash" | "slops" | "keyshift" | "keyshift-classic")
        );
    }
    let err = build("round-robin", 4, 0).err().unwrap();
    assert_eq!(err.name, "strategy");
    assert!(err.reason.contains("round-robin"), "{}", err.reason);
    assert!(err
        .reason
        .contains("hash, slops, keyshift, keyshift-classic, pkg, unordered"));
    assert_eq!(build("hash", 0, 0).err().unwrap().name, "partitions");

    let mut bad = StrategyConfig::default();
    bad.keyshift.hysteresis = -0.1;
    assert_eq!(
        build_with("keyshift", 4, &bad).err().unwrap().name,
        "hysteresis"
    );
    // Only the selected strategy's options are checked.
    assert!(build_with("slops", 4, &bad).is_ok());
    let mut bad = StrategyConfig::default();
    bad.keyshift.rebalance_interval_secs = 0.0;
    assert_eq!(
        build_with("keyshift", 4, &bad).err().unwrap().name,
        "rebalance-interval"
    );
    bad.keyshift = KeyshiftConfig {
        candidates: KeyshiftConfig::default().sketch_capacity + 1,
        ..KeyshiftConfig::default()
    };
    assert_eq!(
        build_with("keyshift", 4, &bad).err().unwrap().name,
        "candidates"
    );
    bad.keyshift = KeyshiftConfig::default();
    bad.slops.tolerance = Some(f64::NAN);
    assert_eq!(
        build_with("slops", 4, &bad).err().unwrap().name,
        "tolerance"
    );
    bad.slops = SlopsConfig {
        epsilon: 2.0,
        ..SlopsConfig::default()
    };
    assert_eq!(build_with("slops", 4, &bad).err().unwrap().name, "epsilon");
    bad.slops = SlopsConfig::default();
    bad.pkg.half_life_secs = Some(0.0);
    assert_eq!(
        build_with("pkg", 4, &bad).err().unwrap().name,
        "pkg-half-life"
    );
}

#[test]
fn ordered_strategies_announce_every_partition_change() {
    // `drive` asserts, per record, that a key is only ever routed where its moves put it.
    for name in ["hash", "slops", "keyshift"] {
        let mut s = build(name, 8, 3).unwrap();
        let run = zipf_run(&mut *s, 8, 1.1, 2.72, 2800, 120_000, 1000.0);
        assert_eq!(run.split_keys > 0, name != "hash", "{name}: {run:?}");
    }
    for preset in [
        SlopsConfig::main_tolerance(),
        SlopsConfig::state_tracking(),
        SlopsConfig::state_tracking_tol(),
    ] {
        let mut s = SlopsStrategy::new(8, Hasher::Murmur2, &preset, 5).unwrap();
        let run = zipf_run(&mut s, 8, 1.1, 2.72, 2800, 60_000, 1000.0);
        assert!(
            run.moves_first + run.moves_second > 0,
            "{preset:?}: {run:?}"
        );
    }
}

#[test]
fn route_tables_never_exceed_their_capacity() {
    let config = KeyshiftConfig {
        route_capacity: 5,
        max_moves_per_round: 50,
        cooldown_secs: 0.0,
        ..KeyshiftConfig::default()
    };
    let mut k = KeyshiftStrategy::new(10, Hasher::Murmur2, &config).unwrap();
    let slops_config = SlopsConfig {
        route_capacity: 7,
        ..SlopsConfig::state_tracking()
    };
    let mut s = SlopsStrategy::new(10, Hasher::Murmur2, &slops_config, 1).unwrap();
    let zipf = Zipf::new(0.9, 1.0, 9_999).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let (mut k_max, mut s_max) = (0, 0);
    for i in 0..100_000u64 {
        let key = key_name(zipf.sample(&mut rng));
        let now = i as f64 / 2000.0;
        k.route(key.as_bytes(), now);
        s.route(key.as_bytes(), now);
        k_max = k_max.max(k.routes().len());
        s_max = s_max.max(s.routes().len());
    }
    assert_eq!(k_max, 5, "keyshift should fill but never exceed its table");
    assert_eq!(s_max, 7, "slops should fill but never exceed its table");
}

#[test]
fn unordered_baselines_split_keys() {
    for name in ["pkg", "unordered"] {
        let mut s = build(name, 10, 2).unwrap();
        assert!(!s.preserves_order());
        let run = zipf_run(&mut *s, 10, 1.1, 2.72, 2800, 50_000, 1000.0);
        assert!(run.split_keys > 10, "{name}: {run:?}");
        assert!(run.max_mean < 1.02, "{name} should balance: {run:?}");
    }
    // pkg splits a key over exactly its two choices.
    let mut s = build("pkg", 10, 2).unwrap();
    let seen: std::collections::BTreeSet<u32> = (0..1000)
        .map(|i| s.route(b"location_0", i as f64))
        .collect();
    assert_eq!(seen.len(), 2, "{seen:?}");
    // unordered least-loaded cycles through all partitions even with a single key.
    let mut s = build("unordered", 10, 0).unwrap();
    let seen: std::collections::BTreeSet<u32> = (0..10).map(|i| s.route(b"k", i as f64)).collect();
    assert_eq!(seen.len(), 10);
}

/// The figures the report quotes: `cargo test -p keyshift-core --test strategy figures -- --nocapture`.
#[test]
fn keyshift_balances_the_seed_workload() {
    let mut figures = Vec::new();
    for name in ["hash", "slops", "keyshift"] {
        let mut s = build(name, 10, 1).unwrap();
        let run = zipf_run(&mut *s, 10, 1.1, 2.72, 2800, 300_000, 1000.0);
        println!("seed zipf(1.1, 2.72, 2800) P=10 {name}: {run:?}");
        figures.push(run);
    }
    let keyshift = &figures[2];
    assert!(keyshift.max_bound <= 1.05, "{keyshift:?}");
    assert!(
        keyshift.max_bound < figures[0].max_bound,
        "keyshift must beat hash"
    );
}

#[test]
fn keyshift_balances_many_keys() {
    for partitions in [10, 100] {
        let mut figures = Vec::new();
        for name in ["hash", "slops", "keyshift"] {
            let mut s = build(name, partitions, 1).unwrap();
            let run = zipf_run(&mut *s, partitions, 0.99, 1.0, 100_000, 600_000, 5000.0);
            println!("zipf(0.99, 1, 100000) P={partitions} {name}: {run:?}");
            figures.push(run);
        }
        let keyshift = &figures[2];
        assert!(keyshift.max_bound <= 1.05, "P={partitions}: {keyshift:?}");
    }
}

#[test]
fn keyshift_moves_settle_on_a_stationary_workload() {
    let mut s = build("keyshift", 10, 1).unwrap();
    let run = zipf_run(&mut *s, 10, 1.1, 2.72, 2800, 400_000, 1000.0);
    println!("settling: {run:?}");
    let warmup = run.moves_by_tenth[0];
    let late: usize = run.moves_by_tenth[5..].iter().sum();
    assert!(warmup > 0, "{run:?}");
    assert!(
        late * 4 <= warmup,
        "moves must settle after warm-up: {run:?}"
    );
}

#[test]
fn keyshift_follows_a_swapped_ranking() {
    // The Zipf ranking reverses over the 2800 keys halfway: the hot keys become cold and keys
    // from the cold tail become the hottest, so balance needs new moves.
    let mut s = build("keyshift", 10, 1).unwrap();
    let zipf = Zipf::new(1.1, 2.72, 2799).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let records = 400_000;
    let run = drive(&mut *s, 10, records, 1000.0, 300_000..records, |i| {
        let k = zipf.sample(&mut rng);
        if i < records / 2 {
            k
        } else {
            2799 - k
        }
    });
    println!("swapped ranking: {run:?}");
    let just_after: usize = run.moves_by_tenth[5];
    let before: usize = run.moves_by_tenth[3..5].iter().sum();
    assert!(just_after > before, "the shift must trigger moves: {run:?}");
    assert!(run.max_bound <= 1.05, "balance after the shift: {run:?}");
}
