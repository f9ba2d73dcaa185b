//! keyshift's mechanisms one at a time, through the public API: consumer feedback as partition
//! capacity, the cooldown of keys that went home, and sampling of sketch updates at high record
//! rates (balance must not suffer, order must hold).

use keyshift_core::hash::{kafka_partition, Hasher};
use keyshift_core::strategy::{
    build_with, KeyshiftConfig, KeyshiftStrategy, PartitionFeedback, Strategy, StrategyConfig,
};
use keyshift_core::workload::{key_name, Zipf};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Per-partition records over the second half of a run, and every move with its record number.
struct Outcome {
    per_partition: Vec<u64>,
    hottest: u64,
    moves: Vec<(u64, u32, u32, f64)>,
}

impl Outcome {
    fn max_bound(&self) -> f64 {
        let total: u64 = self.per_partition.iter().sum();
        let mean = total as f64 / self.per_partition.len() as f64;
        *self.per_partition.iter().max().unwrap() as f64 / mean.max(self.hottest as f64)
    }
}

/// Routes `records` records at `rate`/s whose key ids come from `next_key`, calling `each_second`
/// once per second of the records' clock; checks that every key stays where its moves put it.
fn drive(
    strategy: &mut dyn Strategy,
    partitions: u32,
    keys: u64,
    records: usize,
    rate: f64,
    mut next_key: impl FnMut(usize) -> u64,
    mut each_second: impl FnMut(&mut dyn Strategy, f64),
) -> Outcome {
    let names: Vec<Vec<u8>> = (0..keys).map(|k| key_name(k).into_bytes()).collect();
    let id_of = |key: &[u8]| -> u64 {
        std::str::from_utf8(&key[b"location_".len()..])
            .unwrap()
            .parse()
            .unwrap()
    };
    let mut current: Vec<Option<u32>> = vec![None; keys as usize];
    let mut per_partition = vec![0u64; partitions as usize];
    let mut per_key = vec![0u64; keys as usize];
    let mut moves = Vec::new();
    let mut next_second = 0.0;
    for i in 0..records {
        let now = i as f64 / rate;
        if now >= next_second {
            each_second(strategy, now);
            next_second += 1.0;
        }
        let k = next_key(i);
        let p = strategy.route(&names[k as usize], now);
        for m in strategy.drain_moves() {
            let id = id_of(&m.key);
            let was = current[id as usize].unwrap_or_else(|| kafka_partition(&m.key, partitions));
            assert_eq!(m.from, was, "move of key {id} from the wrong partition");
            current[id as usize] = Some(m.to);
            moves.push((id, m.from, m.to, m.at));
        }
        let expected = *current[k as usize].get_or_insert(p);
        assert_eq!(p, expected, "key {k} changed partition without a move");
        if i >= records / 2 {
            per_partition[p as usize] += 1;
            per_key[k as usize] += 1;
        }
    }
    Outcome {
        per_partition,
        hottest: per_key.into_iter().max().unwrap(),
        moves,
    }
}

fn zipf_keys(s: f64, v: f64, keys: u64, seed: u64) -> impl FnMut(usize) -> u64 {
    let zipf = Zipf::new(s, v, keys - 1).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    move |_| zipf.sample(&mut rng)
}

#[test]
fn feedback_moves_load_off_a_slow_consumer() {
    // Every consumer is saturated (its lag exceeds a second of its throughput); partition 0's
    // completes 50 records/s, the others 100. With feedback keyshift should give partition 0
    // about half the load of the others; without, about the same.
    let feedback: Vec<PartitionFeedback> = (0..10)
        .map(|p| PartitionFeedback {
            partition: p,
            throughput_rps: if p == 0 { 50.0 } else { 100.0 },
            lag: 1_000,
        })
        .collect();
    let mut shares = Vec::new();
    for use_feedback in [true, false] {
        let config = KeyshiftConfig {
            use_feedback,
            ..KeyshiftConfig::default()
        };
        let mut k = KeyshiftStrategy::new(10, Hasher::Murmur2, &config).unwrap();
        let run = drive(
            &mut k,
            10,
            2800,
            300_000,
            1000.0,
            zipf_keys(1.1, 2.72, 2800, 7),
            |s, now| s.observe(&feedback, now),
        );
        let others = run.per_partition[1..].iter().sum::<u64>() as f64 / 9.0;
        let share = run.per_partition[0] as f64 / others;
        println!(
            "feedback {use_feedback}: partition 0 / others = {share:.3}, {:?}",
            run.per_partition
        );
        if use_feedback {
            let cap = k.capacities();
            assert!((cap[0] / cap[1] - 0.5).abs() < 1e-9, "{cap:?}");
        } else {
            assert!(k.capacities().iter().all(|&c| c == 1.0));
        }
        shares.push(share);
    }
    assert!(
        (0.4..0.6).contains(&shares[0]),
        "with feedback partition 0 should carry about half: {shares:?}"
    );
    assert!(
        shares[1] > 0.9,
        "without feedback partition 0 is balanced like the others: {shares:?}"
    );
}

/// Feeds `feedback` to a strategy that has routed 40 records/s to each of its 4 partitions for
/// 30 s (so it knows what each partition receives), and returns the capacities it derives.
fn capacities_after(config: &KeyshiftConfig, rounds: &[Vec<PartitionFeedback>]) -> Vec<f64> {
    let mut k = KeyshiftStrategy::new(4, Hasher::Murmur2, config).unwrap();
    let keys: Vec<Vec<u8>> = (0..400).map(|i| key_name(i).into_bytes()).collect();
    for i in 0..4800 {
        k.route(&keys[i % 400], i as f64 / 160.0);
    }
    for (i, f) in rounds.iter().enumerate() {
        k.observe(f, 30.0 + i as f64);
    }
    k.capacities().to_vec()
}

#[test]
fn unsaturated_feedback_leaves_capacities_equal() {
    // Consumers keeping up (small lag) reveal no capacity: their throughput is their load.
    let keeping_up: Vec<PartitionFeedback> = (0..4)
        .map(|p| PartitionFeedback {
            partition: p,
            throughput_rps: 10.0 * f64::from(p + 1),
            lag: 1,
        })
        .collect();
    for config in [KeyshiftConfig::default(), KeyshiftConfig::classic()] {
        let cap = capacities_after(&config, std::slice::from_ref(&keeping_up));
        assert_eq!(cap, vec![1.0; 4], "{:?}", config.variant);
    }
    // Partition 3 falls behind at 30 records/s while 40/s are routed to it.
    let mut behind = keeping_up.clone();
    behind[3] = PartitionFeedback {
        partition: 3,
        throughput_rps: 30.0,
        lag: 1_000,
    };
    // The classic variant takes the others' throughput (their load) for their capacity, so
    // partitions that merely receive less look slow.
    let classic = capacities_after(
        &KeyshiftConfig::classic(),
        &[keeping_up.clone(), behind.clone()],
    );
    assert!(classic[0] < classic[3], "{classic:?}");
    // The cost-aware one knows partition 3's capacity and assumes the unknown ones are alike.
    let cost_aware = capacities_after(
        &KeyshiftConfig::default(),
        &[keeping_up.clone(), behind.clone()],
    );
    assert_eq!(cost_aware, vec![1.0; 4], "{cost_aware:?}");
    // A consumer that falls behind at a pace below its best is not slow but held up: parked
    // records keep its commit back, so its lag grows while it idles. Capacities stay equal.
    let mut held_up = behind.clone();
    held_up[3].throughput_rps = 5.0;
    let cost_aware = capacities_after(
        &KeyshiftConfig::default(),
        &[keeping_up, behind.clone(), held_up],
    );
    assert_eq!(cost_aware, vec![1.0; 4], "{cost_aware:?}");
    // Saturated at 20 records/s from the start: slower than partition 2, which did 30 while
    // keeping up; partitions that did less are assumed as fast as the saturated one.
    let mut slow = behind;
    slow[3].throughput_rps = 20.0;
    let cost_aware = capacities_after(&KeyshiftConfig::default(), &[slow]);
    assert!(cost_aware[3] < 0.7 * cost_aware[2], "{cost_aware:?}");
    assert_eq!(cost_aware[0], cost_aware[3], "{cost_aware:?}");
}

#[test]
fn a_key_that_went_home_keeps_its_cooldown() {
    // A small sketch and route table under a ranking that rotates every 30 s force keys home
    // (the table crowds, keys leave the hot set) while new hot keys need routes: every key's
    // consecutive moves, including a move home and the next move away, are a cooldown apart.
    let config = KeyshiftConfig {
        sketch_capacity: 256,
        candidates: 128,
        route_capacity: 48,
        cooldown_secs: 20.0,
        max_moves_per_round: 32,
        ..KeyshiftConfig::default()
    };
    let mut k = KeyshiftStrategy::new(8, Hasher::Murmur2, &config).unwrap();
    let zipf = Zipf::new(1.0, 1.0, 1999).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let rate = 2000.0;
    let run = drive(
        &mut k,
        8,
        2000,
        600_000,
        rate,
        |i| {
            let phase = (i as f64 / rate / 30.0) as u64;
            (zipf.sample(&mut rng) + phase * 37) % 2000
        },
        |_, _| {},
    );
    let mut last: std::collections::HashMap<u64, f64> = Default::default();
    let mut home_then_away = 0;
    let mut went_home: std::collections::HashSet<u64> = Default::default();
    for &(id, _, to, at) in &run.moves {
        if let Some(&prev) = last.get(&id) {
            assert!(
                at - prev >= config.cooldown_secs,
                "key {id} moved at {prev} and again at {at}"
            );
            if went_home.contains(&id) {
                home_then_away += 1;
            }
        }
        last.insert(id, at);
        if to == kafka_partition(key_name(id).as_bytes(), 8) {
            went_home.insert(id);
        } else {
            went_home.remove(&id);
        }
    }
    println!(
        "{} moves, {home_then_away} moves away from home after a move home",
        run.moves.len()
    );
    assert!(
        home_then_away > 0,
        "the workload must send keys home and away again for this test to mean anything"
    );
}

#[test]
fn sampled_sketch_keeps_balance_at_high_rates() {
    // The hard balance case (Zipf 0.99 over 100 000 keys, 10 partitions) at 20 000 records/s
    // with a budget of 5 000 sketch updates/s: the sketch counts a quarter of the records and
    // sees as many per second as an unsampled run at 5 000/s, which balances within 1.05.
    let config = StrategyConfig {
        keyshift: KeyshiftConfig {
            sketch_updates_per_sec: 5_000.0,
            ..KeyshiftConfig::default()
        },
        seed: 1,
        ..StrategyConfig::default()
    };
    let mut k = build_with("keyshift", 10, &config).unwrap();
    let run = drive(
        &mut *k,
        10,
        100_000,
        2_400_000,
        20_000.0,
        zipf_keys(0.99, 1.0, 100_000, 7),
        |_, _| {},
    );
    // Hash placement does not depend on the rate; fewer records show its imbalance.
    let mut h = build_with("hash", 10, &config).unwrap();
    let hash = drive(
        &mut *h,
        10,
        100_000,
        600_000,
        20_000.0,
        zipf_keys(0.99, 1.0, 100_000, 7),
        |_, _| {},
    );
    println!(
        "sampled keyshift {:.4} (hash {:.4}), {} moves",
        run.max_bound(),
        hash.max_bound(),
        run.moves.len()
    );
    assert!(run.max_bound() <= 1.05, "{:?}", run.per_partition);
    assert!(hash.max_bound() > 1.3, "the workload must need balancing");

    let mut direct = KeyshiftStrategy::with_seed(10, Hasher::Murmur2, &config.keyshift, 1).unwrap();
    drive(
        &mut direct,
        10,
        100_000,
        200_000,
        20_000.0,
        zipf_keys(0.99, 1.0, 100_000, 7),
        |_, _| {},
    );
    assert!(
        (direct.sample_share() - 0.25).abs() < 0.01,
        "share {}",
        direct.sample_share()
    );
    let total = direct.sketch().total() as f64;
    // 1 s of warm-up unsampled (20 000), then about a quarter of the other 9 s (45 000).
    assert!(
        (total / 65_000.0 - 1.0).abs() < 0.05,
        "{total} sketch updates"
    );
}

#[test]
fn bad_update_budget_is_named() {
    for bad in [0.0, -1.0, f64::NAN] {
        let config = KeyshiftConfig {
            sketch_updates_per_sec: bad,
            ..KeyshiftConfig::default()
        };
        assert_eq!(config.validate().unwrap_err().name, "sketch-updates");
    }
    let unsampled = KeyshiftConfig {
        sketch_updates_per_sec: f64::INFINITY,
        ..KeyshiftConfig::default()
    };
    assert!(unsampled.validate().is_ok());
}
