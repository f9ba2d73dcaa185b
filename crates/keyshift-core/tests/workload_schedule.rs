//! Open-loop schedules and seeded workloads, with and without a sudden hot key.

use keyshift_core::hash::Hasher;
use keyshift_core::workload::{
    key_name, Arrival, HotKey, KeyDist, Schedule, ScheduleKind, Targeted, Workload, Zipf,
};

#[test]
fn uniform_is_evenly_spaced_from_zero() {
    let times: Vec<f64> = Schedule::uniform(200.0)
        .unwrap()
        .arrivals(0)
        .take(1001)
        .collect();
    assert_eq!(times[0], 0.0);
    for (i, t) in times.iter().enumerate() {
        assert!((t - i as f64 / 200.0).abs() < 1e-12, "arrival {i} at {t}");
    }
    // No drift after many records: computed per index, not by summing gaps.
    let t = Schedule::uniform(3.0)
        .unwrap()
        .arrivals(0)
        .nth(3_000_000)
        .unwrap();
    assert_eq!(t, 1_000_000.0);
}

#[test]
fn token_bucket_starts_full_like_the_seed_limiter() {
    // rate.NewLimiter(200, 200): 200 sends at once, then one every 5 ms.
    let times: Vec<f64> = Schedule::token_bucket(200.0, 200)
        .unwrap()
        .arrivals(0)
        .take(1000)
        .collect();
    assert!(times[..200].iter().all(|&t| t == 0.0));
    assert!((times[200] - 0.005).abs() < 1e-12);
    assert!((times[999] - 800.0 / 200.0).abs() < 1e-12);
    // A bucket of one is the uniform schedule.
    let a: Vec<f64> = Schedule::token_bucket(7.5, 1)
        .unwrap()
        .arrivals(0)
        .take(100)
        .collect();
    let b: Vec<f64> = Schedule::uniform(7.5)
        .unwrap()
        .arrivals(0)
        .take(100)
        .collect();
    assert_eq!(a, b);
}

#[test]
fn poisson_gaps_are_exponential_with_the_rate() {
    let rate = 250.0;
    let n = 200_000usize;
    let times: Vec<f64> = Schedule::poisson(rate)
        .unwrap()
        .arrivals(17)
        .take(n)
        .collect();
    assert!(times[0] > 0.0);
    let gaps: Vec<f64> = std::iter::once(times[0])
        .chain(times.windows(2).map(|w| w[1] - w[0]))
        .collect();
    assert!(gaps.iter().all(|&g| g >= 0.0));
    let mean = gaps.iter().sum::<f64>() / n as f64;
    let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / n as f64;
    // Mean 1/rate within 5 standard errors; exponential ⇒ sd = mean (a uniform or constant
    // spacing would have a far smaller one).
    let se = (1.0 / rate) / (n as f64).sqrt();
    assert!((mean - 1.0 / rate).abs() < 5.0 * se, "mean gap {mean}");
    let cv = var.sqrt() / mean;
    assert!((cv - 1.0).abs() < 0.02, "coefficient of variation {cv}");
    // Memoryless: P(gap > 2/rate) = e^-2.
    let tail = gaps.iter().filter(|&&g| g > 2.0 / rate).count() as f64 / n as f64;
    assert!((tail - (-2.0f64).exp()).abs() < 0.005, "tail {tail}");
}

#[test]
fn arrivals_never_go_back() {
    for s in [
        Schedule::uniform(1e6).unwrap(),
        Schedule::poisson(1e6).unwrap(),
        Schedule::token_bucket(10.0, 5).unwrap(),
    ] {
        let times: Vec<f64> = s.arrivals(3).take(50_000).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "{:?}", s.kind());
    }
}

#[test]
fn bad_rates_are_named() {
    for rate in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        assert_eq!(Schedule::uniform(rate).unwrap_err().name, "rate");
        assert_eq!(Schedule::poisson(rate).unwrap_err().name, "rate");
        assert_eq!(Schedule::token_bucket(rate, 1).unwrap_err().name, "rate");
    }
    assert_eq!(Schedule::token_bucket(10.0, 0).unwrap_err().name, "burst");
    assert_eq!(KeyDist::uniform(0).unwrap_err().name, "keys");
    assert_eq!(
        Schedule::poisson(2.0).unwrap().kind(),
        ScheduleKind::Poisson
    );
    assert_eq!(Schedule::poisson(2.0).unwrap().rate(), 2.0);
}

fn seed_workload(seed: u64) -> Workload {
    // The seed's defaults: Zipf(1.1, 2.72, 2800) at 200/s.
    let keys = KeyDist::Zipf(Zipf::new(1.1, 2.72, 2800).unwrap());
    Workload::new(keys, Schedule::poisson(200.0).unwrap(), seed)
}

#[test]
fn same_seed_same_workload_different_seed_different_workload() {
    let a: Vec<Arrival> = seed_workload(42).take(5000).collect();
    let b: Vec<Arrival> = seed_workload(42).take(5000).collect();
    let c: Vec<Arrival> = seed_workload(43).take(5000).collect();
    assert_eq!(a, b);
    assert_ne!(
        a.iter().map(|x| x.key).collect::<Vec<_>>(),
        c.iter().map(|x| x.key).collect::<Vec<_>>()
    );
    assert_ne!(
        a.iter().map(|x| x.at).collect::<Vec<_>>(),
        c.iter().map(|x| x.at).collect::<Vec<_>>()
    );
    assert!(a.iter().all(|x| x.key <= 2800));
    assert!(a.windows(2).all(|w| w[0].at <= w[1].at));
}

#[test]
fn keys_do_not_depend_on_the_schedule_shape() {
    // Keys and gaps draw from separate streams: switching uniform ↔ Poisson keeps the keys,
    // so a comparison of schedules is not also a comparison of key sequences.
    let keys = || KeyDist::Zipf(Zipf::new(0.99, 1.0, 100_000).unwrap());
    let a: Vec<u64> = Workload::new(keys(), Schedule::uniform(100.0).unwrap(), 8)
        .take(2000)
        .map(|x| x.key)
        .collect();
    let b: Vec<u64> = Workload::new(keys(), Schedule::poisson(100.0).unwrap(), 8)
        .take(2000)
        .map(|x| x.key)
        .collect();
    assert_eq!(a, b);
}

#[test]
fn uniform_keys_cover_the_key_space() {
    let mut seen = [0u32; 10];
    for x in Workload::new(
        KeyDist::uniform(10).unwrap(),
        Schedule::uniform(1.0).unwrap(),
        5,
    )
    .take(10_000)
    {
        seen[x.key as usize] += 1;
    }
    // Each of 10 keys expects 1000 (sd 30).
    assert!(seen.iter().all(|&c| (850..=1150).contains(&c)), "{seen:?}");
}

#[test]
fn key_names_are_the_seeds() {
    assert_eq!(key_name(0), "location_0");
    assert_eq!(key_name(2799), "location_2799");
}

#[test]
fn a_sudden_hot_key_takes_its_share_and_leaves_the_other_keys_alone() {
    let keys = || KeyDist::Zipf(Zipf::new(1.1, 2.72, 2800).unwrap());
    let hot = HotKey::new(5000, 0.25, &keys()).unwrap();
    assert_eq!(
        hot.key(),
        2801,
        "one past every index Zipf(imax 2800) draws"
    );
    let plain: Vec<Arrival> = Workload::new(keys(), Schedule::poisson(200.0).unwrap(), 7)
        .take(20_000)
        .collect();
    let with: Vec<Arrival> = Workload::new(keys(), Schedule::poisson(200.0).unwrap(), 7)
        .with_hot_key(hot, 7)
        .take(20_000)
        .collect();
    // Arrival times do not change; the key is absent before arrival 5000.
    assert!(plain.iter().zip(&with).all(|(a, b)| a.at == b.at));
    assert_eq!(&plain[..5000], &with[..5000]);
    let share = with[5000..].iter().filter(|a| a.key == 2801).count() as f64 / 15_000.0;
    assert!((share - 0.25).abs() < 0.02, "{share}");
    // The other arrivals carry exactly the keys the plain workload draws, in order.
    let others: Vec<u64> = with.iter().map(|a| a.key).filter(|&k| k != 2801).collect();
    let expected: Vec<u64> = plain.iter().map(|a| a.key).take(others.len()).collect();
    assert_eq!(others, expected);
    // One shift, at the arrival where the key appears (whichever key that arrival carries).
    let shifts: Vec<usize> = (0..with.len()).filter(|&i| with[i].shift).collect();
    assert_eq!(shifts, [5000]);
    assert!(plain.iter().all(|a| !a.shift));
}

#[test]
fn the_targeted_hot_spot_shifts_every_period_but_not_at_the_start() {
    let keys = KeyDist::Targeted(Targeted::with_shape(Hasher::Fnv1a, 10, 40, 3, 100).unwrap());
    let shifts: Vec<usize> = Workload::new(keys, Schedule::uniform(10.0).unwrap(), 1)
        .take(450)
        .enumerate()
        .filter_map(|(i, a)| a.shift.then_some(i))
        .collect();
    assert_eq!(shifts, [100, 200, 300, 400]);
}

#[test]
fn a_hot_key_in_a_targeted_workload_does_not_advance_its_rotation() {
    // The generator counts its own records: with half the arrivals taken by the hot key from
    // arrival 50 on, its next rotations come every 200 arrivals instead of 100.
    let keys = || KeyDist::Targeted(Targeted::with_shape(Hasher::Fnv1a, 10, 40, 3, 100).unwrap());
    let hot = HotKey::new(50, 0.5, &keys()).unwrap();
    let arrivals: Vec<Arrival> = Workload::new(keys(), Schedule::uniform(10.0).unwrap(), 1)
        .with_hot_key(hot, 1)
        .take(1000)
        .collect();
    let non_hot_before: Vec<usize> = arrivals
        .iter()
        .enumerate()
        .filter(|(_, a)| a.shift)
        .map(|(i, _)| arrivals[..i].iter().filter(|a| a.key != hot.key()).count())
        .collect();
    // The hot key's own appearance at arrival 50 (50 generator records before it), then one
    // rotation per 100 generator records.
    assert_eq!(non_hot_before[0], 50);
    assert_eq!(&non_hot_before[1..4], [100, 200, 300]);
}
