//! Space-Saving against an exact counter: the classic count guarantees on random skewed
//! streams, the decayed rate against a brute-force sum, and the rate view following a shift.
use std::collections::HashMap;

use keyshift_core::sketch::{HeavyHitters, SpaceSaving};
use proptest::prelude::*;

fn key(id: u16) -> Vec<u8> {
    format!("location_{id}").into_bytes()
}

/// Skewed ids (the minimum of two uniform draws favours small ids) with non-decreasing times.
fn stream() -> impl Strategy<Value = Vec<(u16, f64)>> {
    (1u16..80).prop_flat_map(|alphabet| {
        prop::collection::vec(((0..alphabet), (0..alphabet), 0.0f64..0.5), 0..500).prop_map(
            |draws| {
                let mut now = 0.0;
                draws
                    .into_iter()
                    .map(|(a, b, dt)| {
                        now += dt;
                        (a.min(b), now)
                    })
                    .collect()
            },
        )
    })
}

/// Exact rate of one key's occurrences, as the sketch defines it.
fn exact_rate(times: &[f64], now: f64, half_life: f64) -> f64 {
    times
        .iter()
        .map(|t| (-(now - t) / half_life).exp2())
        .sum::<f64>()
        * std::f64::consts::LN_2
        / half_life
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn classic_guarantees_hold(stream in stream(), capacity in 1usize..24, half_life in 0.1f64..10.0) {
        let mut sketch = SpaceSaving::new(capacity, half_life).unwrap();
        let mut truth: HashMap<Vec<u8>, u64> = HashMap::new();
        let mut times: HashMap<Vec<u8>, Vec<f64>> = HashMap::new();
        let mut now = 0.0;
        for (i, &(id, t)) in stream.iter().enumerate() {
            now = t;
            let k = key(id);
            let rate = sketch.offer_and_rate(&k, t);
            *truth.entry(k.clone()).or_default() += 1;
            times.entry(k.clone()).or_default().push(t);
            prop_assert_eq!(sketch.rate(&k, t), Some(rate));
            prop_assert!(sketch.len() <= capacity);
            prop_assert_eq!(sketch.total(), i as u64 + 1);
        }
        let n = stream.len() as u64;
        let all = sketch.top(capacity, now);
        prop_assert_eq!(all.len(), sketch.len());
        prop_assert_eq!(all.iter().map(|h| h.count).sum::<u64>(), n);
        if sketch.len() == capacity {
            prop_assert_eq!(sketch.min_count(), all.iter().map(|h| h.count).min().unwrap());
        } else {
            prop_assert_eq!(sketch.min_count(), 0);
            // Never full: every key is tracked exactly.
            prop_assert_eq!(sketch.len(), truth.len());
        }
        for h in &all {
            let t = truth[&h.key[..]];
            prop_assert!(h.count >= t, "count {} below true {}", h.count, t);
            prop_assert!(h.count - h.error <= t, "count − error {} above true {}", h.count - h.error, t);
            prop_assert_eq!(sketch.count(&h.key), Some(h.count));
            prop_assert_eq!(sketch.error(&h.key), Some(h.error));
            let exact = exact_rate(&times[&h.key[..]], now, half_life);
            if h.error == 0 {
                // Tracked since its first occurrence: the rate is exact.
                prop_assert!((h.rate - exact).abs() <= 1e-9 * exact.max(1.0), "rate {} vs {}", h.rate, exact);
            } else {
                prop_assert!(h.rate <= exact * (1.0 + 1e-9), "rate {} above {}", h.rate, exact);
            }
        }
        for (k, &t) in &truth {
            if t * capacity as u64 > n {
                prop_assert!(sketch.count(k).is_some(), "frequent key {:?} ({} of {}) untracked", k, t, n);
            }
            if sketch.count(k).is_none() {
                prop_assert!(t <= sketch.min_count());
                prop_assert_eq!(sketch.rate(k, now), None);
            }
        }
        for pair in all.windows(2) {
            prop_assert!(pair[0].rate >= pair[1].rate);
        }
        let k = capacity / 2;
        let top = sketch.top(k, now);
        prop_assert_eq!(top.len(), k.min(sketch.len()));
        prop_assert_eq!(&top[..], &all[..top.len()]);
    }
}

#[test]
fn rate_view_follows_a_shift_while_counts_lag() {
    let half_life = 1.0;
    let mut sketch = SpaceSaving::new(16, half_life).unwrap();
    let (a, b) = (key(1), key(2));
    let mut now = 0.0;
    // Ten seconds with A at 100/s and B at 1/s, then the other way round.
    for (hot, cold, until) in [(&a, &b, 10.0), (&b, &a, 15.0)] {
        while now < until {
            for i in 0..100 {
                sketch.offer(hot, now + i as f64 / 100.0);
            }
            sketch.offer(cold, now + 0.5);
            now += 1.0;
        }
    }
    let rate_a = sketch.rate(&a, now).unwrap();
    let rate_b = sketch.rate(&b, now).unwrap();
    assert!(rate_b > 10.0 * rate_a, "B {rate_b} vs A {rate_a}");
    assert!(
        (rate_b - 100.0).abs() < 10.0,
        "B's rate {rate_b} should be about 100/s"
    );
    // Counts still rank A first: it had ten seconds at 100/s, B only five.
    assert!(sketch.count(&a).unwrap() > sketch.count(&b).unwrap());
    let top = sketch.top(1, now);
    assert_eq!(&top[0].key[..], &b[..]);
}

#[test]
fn rate_of_a_steady_key_converges_and_decays() {
    let mut sketch = SpaceSaving::new(4, 2.0).unwrap();
    let k = key(7);
    let mut rate = 0.0;
    for i in 0..5_000 {
        rate = sketch.offer_and_rate(&k, i as f64 / 250.0);
    }
    assert!((rate - 250.0).abs() < 5.0, "steady 250/s read as {rate}");
    let last = 4_999.0 / 250.0;
    let later = sketch.rate(&k, last + 4.0).unwrap();
    assert!(
        (later / rate - 0.25).abs() < 1e-9,
        "two half-lives divide by 4"
    );
    // Time going backwards counts as no time passing.
    assert_eq!(sketch.rate(&k, 0.0), Some(rate));
}

#[test]
fn eviction_takes_the_minimum_and_inherits_its_count() {
    let mut s = SpaceSaving::new(2, 1.0).unwrap();
    s.offer(b"a", 0.0);
    s.offer(b"a", 0.0);
    s.offer(b"b", 0.0);
    assert_eq!(s.min_count(), 1);
    s.offer(b"longer-key", 0.0);
    assert_eq!(s.count(b"b"), None);
    assert_eq!(s.count(b"longer-key"), Some(2));
    assert_eq!(s.error(b"longer-key"), Some(1));
    assert_eq!(s.rate(b"longer-key", 0.0), Some(std::f64::consts::LN_2));
    s.offer(b"c", 0.0);
    // Both counters had count 2; the one evicted is gone, the other kept its count.
    assert_eq!(s.len(), 2);
    assert_eq!(s.count(b"c"), Some(3));
    assert_eq!(s.error(b"c"), Some(2));
    assert_eq!(s.total(), 5);
}

#[test]
fn bad_parameters_name_their_flag() {
    assert_eq!(
        SpaceSaving::new(0, 1.0).unwrap_err().name,
        "sketch-capacity"
    );
    for h in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        assert_eq!(SpaceSaving::new(8, h).unwrap_err().name, "half-life");
    }
    let s = SpaceSaving::new(8, 3.0).unwrap();
    assert_eq!((s.capacity(), s.half_life(), s.len()), (8, 3.0, 0));
    assert!(s.is_empty());
    assert!(s.top(3, 0.0).is_empty());
}
