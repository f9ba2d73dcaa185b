//! The seed's Lossy Counting: a hand-computed example, step-for-step agreement with a literal
//! port of the seed's list-scanning loop, its guarantees (no false negatives, count bounds,
//! bounded entries), sampling and the rate view.
use std::collections::HashMap;

use keyshift_core::sketch::{BucketReport, HeavyHitters, LossyConfig, LossyCounter};
use proptest::prelude::*;

fn config(epsilon: f64, support: f64) -> LossyConfig {
    LossyConfig {
        epsilon,
        support,
        sample_threshold: 0.0,
        seed: 1,
    }
}

fn boxed(k: &str) -> Box<[u8]> {
    k.as_bytes().into()
}

/// The seed's `LossyCount` loop transcribed literally (list of records, `checkKeyList` scan),
/// reporting like `take_report`.
struct SeedPort {
    items: Vec<(Vec<u8>, u64, u64)>,
    current_bucket: u64,
    n: u64,
    width: u64,
    support: f64,
    epsilon: f64,
}

impl SeedPort {
    fn new(c: &LossyConfig) -> Self {
        Self {
            items: Vec::new(),
            current_bucket: 1,
            n: 0,
            width: (1.0 / c.epsilon).floor() as u64,
            support: c.support,
            epsilon: c.epsilon,
        }
    }

    fn push(&mut self, key: &[u8]) -> Option<BucketReport> {
        self.n += 1;
        match self.items.iter().position(|(k, _, _)| k == key) {
            Some(i) => self.items[i].1 += 1,
            None => self.items.push((key.to_vec(), 1, self.current_bucket - 1)),
        }
        if self.n < self.width {
            return None;
        }
        let mut report = BucketReport::default();
        let mut new_items = Vec::new();
        for (k, mut count, bucket) in self.items.drain(..) {
            count -= 1;
            if count + bucket >= self.current_bucket {
                if count as f64 >= (self.support - self.epsilon) * self.n as f64 {
                    report.hot.push((k.as_slice().into(), count));
                }
                new_items.push((k, count, bucket));
            } else {
                report.dropped.push(k.into());
            }
        }
        self.current_bucket += 1;
        self.n = 0;
        self.items = new_items;
        Some(report)
    }
}

#[test]
fn hand_computed_example_with_width_four() {
    // ε = 0.25 → width 4; support 0.5 → hot when count ≥ (0.5 − 0.25)·4 = 1.
    let mut lc = LossyCounter::new(config(0.25, 0.5)).unwrap();
    assert_eq!(lc.bucket_width(), 4);
    assert_eq!(lc.config().hot_threshold(), 1.0);
    let feed = |lc: &mut LossyCounter, keys: &str| {
        for (i, k) in keys.split(' ').enumerate() {
            lc.offer(k.as_bytes(), 0.0);
            if i < 3 {
                assert_eq!(lc.take_report(), None, "no turnover inside a bucket");
            }
        }
        lc.take_report()
            .expect("the fourth record turns the bucket over")
    };

    // Bucket 1: a enters (bucket 0), b enters (bucket 0); a ends at 3, b at 1.
    let r = feed(&mut lc, "a a b a");
    // Turnover at current 1: a 3→2, 2+0 ≥ 1 stays, hot; b 1→0, 0+0 < 1 dropped.
    assert_eq!(r.hot, vec![(boxed("a"), 2)]);
    assert_eq!(r.dropped, vec![boxed("b")]);
    assert_eq!((lc.current_bucket(), lc.len()), (2, 1));
    assert_eq!(lc.count(b"a"), Some(2));
    assert_eq!(lc.count(b"b"), None);

    // Bucket 2: c and b enter with bucket 1; order a, c, b.
    let r = feed(&mut lc, "c a b b");
    // a 3→2, 2+0 ≥ 2 stays; c 1→0, 0+1 < 2 dropped; b 2→1, 1+1 ≥ 2 stays; both hot.
    assert_eq!(r.hot, vec![(boxed("a"), 2), (boxed("b"), 1)]);
    assert_eq!(r.dropped, vec![boxed("c")]);
    assert_eq!(lc.bucket_of(b"b"), Some(1));
    assert_eq!(lc.bucket_of(b"a"), Some(0));

    // Bucket 3: d enters with bucket 2.
    let r = feed(&mut lc, "d d d a");
    // a 3→2, 2+0 < 3 dropped (the seed's decrement catches up with a key seen 5 times);
    // b 1→0, 0+1 < 3 dropped; d 3→2, 2+2 ≥ 3 stays, hot.
    assert_eq!(r.hot, vec![(boxed("d"), 2)]);
    assert_eq!(r.dropped, vec![boxed("a"), boxed("b")]);
    assert_eq!(
        (lc.current_bucket(), lc.completed_buckets(), lc.len()),
        (4, 3, 1)
    );
    assert_eq!(lc.count(b"d"), Some(2));
    assert_eq!((lc.offered(), lc.counted()), (12, 12));
}

/// Skewed ids over a small alphabet.
fn ids() -> impl Strategy<Value = Vec<u8>> {
    (1u8..40).prop_flat_map(|alphabet| {
        prop::collection::vec((0..alphabet, 0..alphabet), 0..700)
            .prop_map(|v| v.into_iter().map(|(a, b)| a.min(b)).collect())
    })
}

/// Exactly representable ε = 2^−e (width 4..32) and support k/width with k ≥ 2, so the hot
/// threshold is the integer k − 1 and no float rounding blurs the property.
fn exact_config() -> impl Strategy<Value = (LossyConfig, u64)> {
    (2u32..6).prop_flat_map(|e| {
        let width = 1u64 << e;
        (2..=width).prop_map(move |k| {
            let c = config(1.0 / width as f64, k as f64 / width as f64);
            (c, k)
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn agrees_with_the_seed_loop_step_by_step(ids in ids(), (c, _) in exact_config()) {
        let mut ours = LossyCounter::new(c).unwrap();
        let mut seed = SeedPort::new(&c);
        for id in ids {
            let k = format!("location_{id}");
            ours.offer(k.as_bytes(), 0.0);
            prop_assert_eq!(ours.take_report(), seed.push(k.as_bytes()));
            prop_assert_eq!(ours.len(), seed.items.len());
        }
        for (k, count, bucket) in &seed.items {
            prop_assert_eq!(ours.count(k), Some(*count));
            prop_assert_eq!(ours.bucket_of(k), Some(*bucket));
        }
    }

    #[test]
    fn guarantees_hold(ids in ids(), (c, k) in exact_config()) {
        let mut lc = LossyCounter::new(c).unwrap();
        let width = lc.bucket_width();
        let mut truth: HashMap<Vec<u8>, u64> = HashMap::new();
        let mut in_bucket: HashMap<Vec<u8>, u64> = HashMap::new();
        // Keys reported hot at some turnover, and true counts up to the last turnover.
        let mut ever_hot: std::collections::HashSet<Vec<u8>> = Default::default();
        let mut truth_at_turnover: HashMap<Vec<u8>, u64> = HashMap::new();
        for id in ids {
            let key = format!("location_{id}").into_bytes();
            lc.offer(&key, 0.0);
            *truth.entry(key.clone()).or_default() += 1;
            *in_bucket.entry(key.clone()).or_default() += 1;
            if let Some(report) = lc.take_report() {
                for (hot, count) in &report.hot {
                    prop_assert_eq!(lc.count(hot), Some(*count));
                    prop_assert!(*count as f64 >= c.hot_threshold());
                    ever_hot.insert(hot.to_vec());
                }
                for dropped in &report.dropped {
                    prop_assert_eq!(lc.count(dropped), None);
                }
                // Any key with ≥ k = support·width occurrences in this bucket is hot now.
                for (key, &n) in &in_bucket {
                    if n >= k {
                        prop_assert!(report.hot.iter().any(|(h, _)| h[..] == key[..]),
                            "{:?} seen {} times in the bucket, not hot", key, n);
                    }
                }
                in_bucket.clear();
                truth_at_turnover = truth.clone();
            }
            let t = lc.completed_buckets();
            let bound = width as f64 * (1.0 + (1.0 + (t.max(1) as f64).ln()) / 2.0);
            prop_assert!(lc.len() as f64 <= bound, "{} entries above {}", lc.len(), bound);
            for h in lc.top(usize::MAX, 0.0) {
                let true_count = truth[&h.key[..]];
                prop_assert!(h.count <= true_count);
                prop_assert!(true_count - h.count <= lc.bucket_of(&h.key).unwrap() + t);
                prop_assert_eq!(h.error, 0);
            }
        }
        // No false negatives: every key holding ≥ support of the completed buckets' records.
        let completed = lc.completed_buckets() * width;
        for (key, &n) in &truth_at_turnover {
            if n as f64 >= c.support * completed as f64 {
                prop_assert!(ever_hot.contains(key), "{:?}: {} of {} never hot", key, n, completed);
            }
        }
    }
}

#[test]
fn sampling_is_seeded_and_counts_about_the_expected_share() {
    let c = LossyConfig {
        seed: 42,
        ..LossyConfig::default()
    };
    let run = |c: LossyConfig| {
        let mut lc = LossyCounter::new(c).unwrap();
        for i in 0..20_000u32 {
            lc.offer(format!("location_{}", i % 97).as_bytes(), i as f64);
        }
        (lc.offered(), lc.counted(), lc.top(5, 20_000.0))
    };
    let (offered, counted, top) = run(c);
    assert_eq!(offered, 20_000);
    // Binomial(20 000, 0.5): σ ≈ 71.
    assert!((9_600..=10_400).contains(&counted), "counted {counted}");
    assert_eq!(run(c), (offered, counted, top));
    assert_ne!(run(LossyConfig { seed: 43, ..c }).1, counted);
    let all = run(LossyConfig {
        sample_threshold: 0.0,
        ..c
    });
    assert_eq!(all.1, 20_000);
}

#[test]
fn rate_view_follows_a_shift_and_undoes_sampling() {
    // Width 100 counted records; half the records are sampled out.
    let c = LossyConfig {
        epsilon: 0.01,
        support: 0.1,
        sample_threshold: 0.5,
        seed: 7,
    };
    let mut lc = LossyCounter::new(c).unwrap();
    let (a, b) = (b"location_1", b"location_2");
    let mut now = 0.0;
    // 100 records/s: 10 s of A at 90/s with B at 10/s, then the other way round.
    for (hot, cold) in [(a, b), (b, a)] {
        for i in 0..1_000 {
            lc.offer(if i % 10 == 0 { cold } else { hot }, now);
            now += 0.01;
        }
    }
    let rate_a = lc.rate(a, now).unwrap();
    let rate_b = lc.rate(b, now).unwrap();
    assert!((rate_b - 90.0).abs() < 15.0, "B at 90/s read as {rate_b}");
    assert!((rate_a - 10.0).abs() < 5.0, "A at 10/s read as {rate_a}");
    assert_eq!(&lc.top(1, now)[0].key[..], &b[..]);
    assert_eq!(lc.rate(b"absent", now), None);
}

#[test]
fn bad_parameters_name_their_flag() {
    let ok = LossyConfig::default();
    assert!(LossyCounter::new(ok).is_ok());
    let err = |c: LossyConfig| LossyCounter::new(c).unwrap_err();
    for e in [0.0, 1.0, -0.1, f64::NAN] {
        assert_eq!(err(LossyConfig { epsilon: e, ..ok }).name, "epsilon");
    }
    for s in [0.0, 1.5, f64::NAN] {
        assert_eq!(err(LossyConfig { support: s, ..ok }).name, "support");
    }
    let below = err(LossyConfig {
        support: 0.001,
        ..ok
    });
    assert_eq!(below.name, "support");
    assert!(below.reason.contains("ε must be below support"));
    for t in [1.0, -0.01, f64::NAN] {
        assert_eq!(
            err(LossyConfig {
                sample_threshold: t,
                ..ok
            })
            .name,
            "sample-threshold"
        );
    }
    assert_eq!(ok.bucket_width(), 1000);
    assert!((ok.hot_threshold() - 9.0).abs() < 1e-9);
}
