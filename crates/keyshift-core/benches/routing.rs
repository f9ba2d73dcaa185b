//! Per-record routing decision: one `Strategy::route` call, which for the ordered strategies
//! that detect hot keys is the route-table lookup plus the sketch update (and, amortised, their
//! periodic rebalance), for `hash`, `slops` and `keyshift` with the default options
//! `keyshift simulate` uses. Keys follow Zipf(0.99) over 10 k and 1 M distinct keys, on 10
//! partitions (the seed's) and 100.
//!
//! Keys are generated up front so only the decision is timed. Time advances 1 µs per record
//! (1 M records/s), so keyshift's rebalance rounds and slops' bucket turnovers are included,
//! amortised, as in production; moves are drained every 1024 records as a producer would.
//! Read `keyshift/…` against `hash/…` of the same key space and partition count: the ratio is
//! what routing through keyshift costs over Kafka's plain partitioner. At this record rate
//! keyshift's default update budget (`sketch-updates`, 50 000/s) samples one record in 20 for
//! the sketch; `keyshift-every-record` counts every record (infinite budget), the cost per
//! record below the budget rate.
//!
//! Run: `cargo bench -p keyshift-core --bench routing -- --warm-up-time 2 --measurement-time 5`

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use keyshift_core::strategy::{build_with, StrategyConfig};
use keyshift_core::workload::{key_name, Zipf};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Records pre-generated per key space (a power of two, cycled).
const RECORDS: usize = 1 << 20;

fn keys(distinct: u64) -> Vec<Box<[u8]>> {
    let zipf = Zipf::new(0.99, 1.0, distinct - 1).expect("valid zipf");
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    (0..RECORDS)
        .map(|_| {
            key_name(zipf.sample(&mut rng))
                .into_bytes()
                .into_boxed_slice()
        })
        .collect()
}

fn routing(c: &mut Criterion) {
    // The defaults `keyshift simulate` resolves when no strategy flag is given.
    let config = StrategyConfig::default();
    let mut every_record = config;
    every_record.keyshift.sketch_updates_per_sec = f64::INFINITY;
    for partitions in [10u32, 100] {
        let mut group = c.benchmark_group(format!("route_p{partitions}"));
        for distinct in [10_000u64, 1_000_000] {
            let keys = keys(distinct);
            for (label, name, config) in [
                ("hash", "hash", &config),
                ("slops", "slops", &config),
                ("keyshift", "keyshift", &config),
                ("keyshift-every-record", "keyshift", &every_record),
            ] {
                let mut strategy = build_with(name, partitions, config).expect("known strategy");
                let mut i = 0usize;
                let mut now = 0.0f64;
                group.bench_function(BenchmarkId::new(label, distinct), |b| {
                    b.iter(|| {
                        let key = &keys[i & (RECORDS - 1)];
                        i = i.wrapping_add(1);
                        now += 1e-6;
                        let p = strategy.route(black_box(key), now);
                        if i & 1023 == 0 {
                            black_box(strategy.drain_moves());
                        }
                        p
                    })
                });
            }
        }
        group.finish();
    }
}

criterion_group!(benches, routing);
criterion_main!(benches);
