//! Per-record routing cost: one `Strategy::route` call (route-table lookup plus sketch update
//! for the ordered strategies that detect hot keys), for `hash`, `slops` and `keyshift`, over
//! Zipf(0.99) keys drawn from 10 k and 1 M distinct keys. Keys are generated up front so only
//! the routing decision is timed; time advances 1 µs per record (1 M records/s), so keyshift's
//! rebalance rounds and slops' bucket turnovers are included, amortised, as in production.
//!
//! Run: `cargo bench -p keyshift-core --bench routing -- --warm-up-time 1 --measurement-time 3`

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use keyshift_core::strategy::build;
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
    let mut group = c.benchmark_group("route");
    for distinct in [10_000u64, 1_000_000] {
        let keys = keys(distinct);
        for name in ["hash", "slops", "keyshift"] {
            let mut strategy = build(name, 32, 1).expect("known strategy");
            let mut i = 0usize;
            let mut now = 0.0f64;
            group.bench_function(BenchmarkId::new(name, distinct), |b| {
                b.iter(|| {
                    let key = &keys[i & (RECORDS - 1)];
                    i = i.wrapping_add(1);
                    now += 1e-6;
                    let p = strategy.route(black_box(key), now);
                    // Moves are drained by the producer as they come; keep that in the cost.
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

criterion_group!(benches, routing);
criterion_main!(benches);
