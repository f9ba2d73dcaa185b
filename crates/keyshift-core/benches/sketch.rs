//! Offer throughput of the heavy-hitter sketches on the seed's Zipf workload (s = 1.1,
//! v = 2.72) over 10 000 and 1 000 000 distinct keys, next to a faithful port of the seed's
//! list-scanning Lossy Counting (`checkKeyList`) as the baseline our hash map replaces: its
//! cost per record grows with the number of keys it tracks, ours does not.
//!
//! Space-Saving runs at 1024 counters and at 16 384 (keyshift's default `sketch-capacity`).
//! The Zipf stream is drawn before timing and each record owns its key bytes, laid out in
//! stream order as a producer would hand them over; each iteration offers the next record of
//! the cyclic stream, so the figure is time per offer with the sketch in its steady state.
//!
//! Run: `cargo bench -p keyshift-core --bench sketch -- --warm-up-time 2 --measurement-time 5`
use std::hash::BuildHasher;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use keyshift_core::sketch::{HeavyHitters, LossyConfig, LossyCounter, SpaceSaving};
use keyshift_core::workload::Zipf;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rustc_hash::FxBuildHasher;

/// Records in the pre-drawn stream (a power of two, replayed cyclically).
const STREAM: usize = 1 << 20;

/// The seed's `LossyCount` loop (count.go), list scan and all; the hot/drop decisions are
/// collected where the seed updates its partition map.
struct SeedLossy {
    items: Vec<(String, u64, i64)>,
    current_bucket: i64,
    n: i64,
    width: i64,
    support: f64,
    epsilon: f64,
    hot: Vec<(String, u64)>,
    dropped: Vec<String>,
}

impl SeedLossy {
    fn new(epsilon: f64, support: f64) -> Self {
        Self {
            items: Vec::new(),
            current_bucket: 1,
            n: 0,
            width: (1.0 / epsilon).floor() as i64,
            support,
            epsilon,
            hot: Vec::new(),
            dropped: Vec::new(),
        }
    }

    fn check_key_list(&self, key: &str) -> Option<usize> {
        self.items.iter().position(|(k, _, _)| k == key)
    }

    fn push(&mut self, key: &str) {
        self.n += 1;
        match self.check_key_list(key) {
            Some(i) => self.items[i].1 += 1,
            None => self
                .items
                .push((key.to_owned(), 1, self.current_bucket - 1)),
        }
        if self.n >= self.width {
            let mut new_items = Vec::new();
            self.hot.clear();
            self.dropped.clear();
            for (k, mut count, bucket) in self.items.drain(..) {
                count -= 1;
                if count as i64 + bucket >= self.current_bucket {
                    if count as f64 >= (self.support - self.epsilon) * self.n as f64 {
                        self.hot.push((k.clone(), count));
                    }
                    new_items.push((k, count, bucket));
                } else {
                    self.dropped.push(k);
                }
            }
            self.current_bucket += 1;
            self.n = 0;
            self.items = new_items;
        }
    }
}

/// A Zipf stream of records, each with its own key.
fn workload(keys: usize) -> Vec<Box<str>> {
    let zipf = Zipf::new(1.1, 2.72, keys as u64 - 1).expect("valid Zipf parameters");
    let mut rng = ChaCha8Rng::seed_from_u64(2024);
    (0..STREAM)
        .map(|_| format!("location_{}", zipf.sample(&mut rng)).into_boxed_str())
        .collect()
}

fn offers(c: &mut Criterion) {
    let mut group = c.benchmark_group("sketch_offer");
    group.throughput(Throughput::Elements(1));
    let lossy = LossyConfig {
        sample_threshold: 0.0,
        ..LossyConfig::default()
    };
    for keys in [10_000usize, 1_000_000] {
        let stream = workload(keys);
        let record = |i: usize| &*stream[i & (STREAM - 1)];

        // Fetching and hashing the next key, the floor of any hashed sketch, to read the
        // sketches' figures against.
        group.bench_function(BenchmarkId::new("key_fetch_and_hash", keys), |b| {
            let hasher = FxBuildHasher;
            let mut i = 0usize;
            b.iter(|| {
                let hash = hasher.hash_one(record(i).as_bytes());
                i += 1;
                black_box(hash)
            });
        });

        for capacity in [1024, 16384] {
            let name = format!("space_saving_{capacity}");
            group.bench_function(BenchmarkId::new(name, keys), |b| {
                let mut sketch = SpaceSaving::new(capacity, 10.0).unwrap();
                let mut i = 0usize;
                b.iter(|| {
                    let rate = sketch.offer_and_rate(record(i).as_bytes(), i as f64 * 1e-4);
                    i += 1;
                    black_box(rate)
                });
            });
        }

        group.bench_function(BenchmarkId::new("lossy", keys), |b| {
            let mut sketch = LossyCounter::new(lossy).unwrap();
            let mut i = 0usize;
            b.iter(|| {
                sketch.offer(record(i).as_bytes(), i as f64 * 1e-4);
                i += 1;
                black_box(sketch.take_report())
            });
        });

        group.bench_function(BenchmarkId::new("seed_lossy_list_scan", keys), |b| {
            let mut seed = SeedLossy::new(lossy.epsilon, lossy.support);
            let mut i = 0usize;
            b.iter(|| {
                seed.push(record(i));
                i += 1;
                black_box(seed.items.len())
            });
        });
    }
    group.finish();
}

criterion_group!(benches, offers);
criterion_main!(benches);
