//! Per-record costs of the cold path: Kafka's partitioner and the seed's FNV-1a on seed-style
//! keys, and drawing a key from the seed's Zipf.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use keyshift_core::hash::{kafka_partition, Hasher};
use keyshift_core::workload::{key_name, Zipf};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn partition(c: &mut Criterion) {
    let keys: Vec<String> = (0..1024).map(key_name).collect();
    let mut group = c.benchmark_group("partition");
    group.throughput(Throughput::Elements(keys.len() as u64));
    group.bench_function("murmur2", |b| {
        b.iter(|| {
            keys.iter()
                .map(|k| kafka_partition(black_box(k.as_bytes()), 10))
                .sum::<u32>()
        })
    });
    group.bench_function("fnv1a", |b| {
        b.iter(|| {
            keys.iter()
                .map(|k| Hasher::Fnv1a.partition(black_box(k.as_bytes()), 10))
                .sum::<u32>()
        })
    });
    group.finish();
}

fn zipf(c: &mut Criterion) {
    let mut group = c.benchmark_group("zipf_sample");
    for (name, s, v, imax) in [
        ("seed_s1.1", 1.1, 2.72, 2800),
        ("s0.99_100k", 0.99, 1.0, 100_000),
    ] {
        let z = Zipf::new(s, v, imax).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        group.bench_function(name, |b| b.iter(|| z.sample(&mut rng)));
    }
    group.finish();
}

criterion_group!(benches, partition, zipf);
criterion_main!(benches);
