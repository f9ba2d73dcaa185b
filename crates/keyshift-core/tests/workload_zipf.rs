//! `Zipf` against Go's `math/rand` Zipf, and against the distribution it claims to sample.
//!
//! The Go vectors come from `go run tests/data/workload/go_vectors.go` (Go 1.19.8,
//! linux/amd64): `rand.NewZipf` fed by a `rand.Source` whose `Int63()` is
//! `splitmix64() >> 1`, reproduced here; Go's `Float64()` is `Int63() / 2^63`, drawn again
//! when that rounds to 1.0. CI has no Go, so the outputs are hard-coded.

use keyshift_core::workload::Zipf;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// The `rand.Source` of go_vectors.go.
struct SplitMix(u64);

impl SplitMix {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn int63(&mut self) -> i64 {
        (self.next_u64() >> 1) as i64
    }
}

/// Go's `Rand.Float64` over a stream of `Int63` values.
fn go_float64(mut int63: impl FnMut() -> i64) -> f64 {
    loop {
        let f = int63() as f64 / (1u64 << 63) as f64;
        if f != 1.0 {
            return f;
        }
    }
}

fn go_draws(z: &Zipf, seed: u64, n: usize) -> Vec<u64> {
    let mut src = SplitMix(seed);
    (0..n)
        .map(|_| z.sample_with(|| go_float64(|| src.int63())))
        .collect()
}

#[test]
// 3.14 is one of the seed client's exponents, not an approximation of π.
#[allow(clippy::approx_constant)]
fn first_draws_match_go() {
    // go_vectors.go, section "zipf first 40 from splitmix(seed=42)".
    let cases: &[(f64, f64, u64, [u64; 40])] = &[
        (
            1.1,
            2.72,
            2800,
            [
                6, 598, 217, 128, 1898, 2, 358, 4, 133, 17, 403, 42, 36, 34, 12, 408, 1004, 41,
                1105, 10, 0, 1344, 19, 17, 1330, 219, 6, 4, 0, 9, 4, 2, 14, 5, 15, 97, 1482, 240,
                5, 1120,
            ],
        ),
        (
            3.14,
            2.72,
            2800,
            [
                0, 3, 1, 1, 8, 0, 2, 0, 1, 0, 2, 0, 0, 0, 0, 2, 4, 0, 4, 0, 0, 5, 0, 0, 5, 1, 0, 0,
                0, 0, 0, 0, 0, 0, 0, 1, 6, 1, 0, 4,
            ],
        ),
        (
            5.0,
            2.72,
            2800,
            [
                0, 1, 0, 0, 2, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 1, 1, 0, 1, 0, 0, 2, 0, 0, 2, 0, 0, 0,
                0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 1,
            ],
        ),
        (
            1.0001,
            1.0,
            1000,
            [
                3, 301, 123, 75, 752, 0, 193, 1, 77, 9, 214, 24, 20, 19, 6, 217, 459, 23, 496, 5,
                0, 578, 10, 9, 573, 124, 3, 2, 0, 4, 2, 1, 7, 2, 7, 57, 623, 135, 2, 501,
            ],
        ),
        (
            2.0,
            1.0,
            u64::MAX,
            [
                0, 3, 1, 1, 15, 0, 2, 0, 1, 0, 2, 0, 0, 0, 0, 2, 5, 0, 5, 0, 0, 7, 0, 0, 7, 1, 0,
                0, 0, 0, 0, 0, 0, 0, 0, 1, 9, 1, 0, 6,
            ],
        ),
        (1.5, 10.0, 0, [0; 40]),
        (
            1.1,
            2.72,
            100_000,
            [
                12, 6883, 1379, 625, 49448, 3, 3018, 6, 657, 37, 3630, 126, 103, 96, 24, 3704,
                16324, 123, 19228, 19, 0, 26936, 45, 37, 26440, 1397, 12, 7, 1, 18, 7, 4, 29, 8,
                31, 416, 31934, 1616, 10, 19691,
            ],
        ),
    ];
    for (s, v, imax, want) in cases {
        let z = Zipf::new(*s, *v, *imax).unwrap();
        assert_eq!(go_draws(&z, 42, 40), want, "s={s} v={v} imax={imax}");
    }
}

#[test]
// 3.14 is one of the seed client's exponents, not an approximation of π.
#[allow(clippy::approx_constant)]
fn a_million_draws_match_go() {
    // go_vectors.go, section "zipf 1e6 draws from splitmix(seed=7)": the sum of the draws and
    // an FNV-1a-64-style fold over them, so any single differing draw shows.
    let cases: &[(f64, f64, u64, u64, u64)] = &[
        (1.1, 2.72, 2800, 296_215_534, 0x559d_33ec_f0fe_71f7),
        (3.14, 2.72, 2800, 1_590_147, 0x0022_356f_a52a_b690),
        (5.0, 2.72, 2800, 413_497, 0x04a4_ee66_9c1e_c48e),
        (1.0001, 1.0, 1000, 132_690_739, 0xecea_a6b3_8714_79ee),
        (2.0, 1.0, u64::MAX, 12_439_432, 0xa23b_cbbf_5be4_ce2d),
        (1.5, 10.0, 0, 0, 0x8f6d_d72f_ba19_3025),
        (1.1, 2.72, 100_000, 5_796_091_474, 0x7263_fec0_52b1_c271),
    ];
    for &(s, v, imax, want_sum, want_ck) in cases {
        let z = Zipf::new(s, v, imax).unwrap();
        let mut sum = 0u64;
        let mut ck = 0xcbf2_9ce4_8422_2325u64;
        for k in go_draws(&z, 7, 1_000_000) {
            sum = sum.wrapping_add(k);
            ck = (ck ^ k).wrapping_mul(0x0000_0100_0000_01b3);
        }
        assert_eq!((sum, ck), (want_sum, want_ck), "s={s} v={v} imax={imax}");
    }
}

#[test]
fn edge_uniforms_match_go() {
    // go_vectors.go, section "zipf from fixed Int63 values": each case is one Int63 followed
    // by 1<<62 (Float64 0.5) for any retry. (1<<63)-1 rounds to 1.0 in Float64, which Go
    // redraws, so it yields what 0.5 yields.
    let z = Zipf::new(1.1, 2.72, 2800).unwrap();
    let cases: &[(i64, u64)] = &[
        (0, 2800),
        (1, 2800),
        (1 << 62, 40),
        (i64::MAX, 40),
        (12_345_678_901_234_567, 2762),
        (1 << 40, 2800),
        (7 << 59, 63),
    ];
    for &(first, want) in cases {
        let mut vals = std::iter::once(first).chain(std::iter::repeat(1 << 62));
        let got = z.sample_with(|| go_float64(|| vals.next().unwrap()));
        assert_eq!(got, want, "Int63 {first}");
    }
}

#[test]
fn sample_uses_the_rng_as_sample_with() {
    use rand::Rng;
    let z = Zipf::new(1.1, 2.72, 2800).unwrap();
    let mut a = ChaCha8Rng::seed_from_u64(3);
    let mut b = ChaCha8Rng::seed_from_u64(3);
    for _ in 0..1000 {
        assert_eq!(z.sample(&mut a), z.sample_with(|| b.gen::<f64>()));
    }
}

#[test]
fn bad_parameters_are_named() {
    for s in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        assert_eq!(Zipf::new(s, 1.0, 100).unwrap_err().name, "zipf-s", "s={s}");
    }
    for v in [0.999, 0.0, -2.0, f64::NAN, f64::INFINITY] {
        assert_eq!(Zipf::new(1.1, v, 100).unwrap_err().name, "zipf-v", "v={v}");
    }
    for s in [1.0, 0.99, 0.5] {
        let e = Zipf::new(s, 1.0, u64::MAX).unwrap_err();
        assert_eq!(e.name, "zipf-s");
        assert!(e.reason.contains("finite key count"), "{}", e.reason);
    }
    // Allowed: s ≤ 1 with a bound, s > 1 without one, v exactly 1.
    assert!(Zipf::new(0.99, 1.0, 100_000).is_ok());
    assert!(Zipf::new(1.0, 1.0, 10).is_ok());
    assert!(Zipf::new(1.1, 1.0, u64::MAX).is_ok());
}

#[test]
fn samples_stay_in_range() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for (s, v, imax) in [
        (0.2, 1.0, 5),
        (1.0, 1.0, 1),
        (0.99, 3.0, 0),
        (4.0, 1.0, 3),
        (1.1, 2.72, 2800),
    ] {
        let z = Zipf::new(s, v, imax).unwrap();
        for _ in 0..20_000 {
            assert!(z.sample(&mut rng) <= imax, "s={s} v={v} imax={imax}");
        }
    }
}

/// Pearson's statistic of `counts` against P(k) ∝ (v + k)^(−s) over 0..=imax, with adjacent
/// bins merged (in key order) until each expects ≥ 5; returns (statistic, degrees of freedom).
fn chi_square(counts: &[u64], s: f64, v: f64) -> (f64, usize) {
    let weights: Vec<f64> = (0..counts.len()).map(|k| (v + k as f64).powf(-s)).collect();
    let total_weight: f64 = weights.iter().sum();
    let n: u64 = counts.iter().sum();
    let mut bins: Vec<(f64, f64)> = Vec::new(); // (expected, observed)
    let (mut exp, mut obs) = (0.0, 0.0);
    for (w, &c) in weights.iter().zip(counts) {
        exp += n as f64 * w / total_weight;
        obs += c as f64;
        if exp >= 5.0 {
            bins.push((exp, obs));
            (exp, obs) = (0.0, 0.0);
        }
    }
    if exp > 0.0 || obs > 0.0 {
        let last = bins.last_mut().expect("at least one bin");
        last.0 += exp;
        last.1 += obs;
    }
    let stat = bins.iter().map(|(e, o)| (o - e) * (o - e) / e).sum();
    (stat, bins.len() - 1)
}

/// The 0.999 quantile of χ² with `df` degrees of freedom (Wilson–Hilferty).
fn chi_square_critical_999(df: usize) -> f64 {
    const Z_999: f64 = 3.090_232_306_167_813;
    let k = df as f64;
    let a = 2.0 / (9.0 * k);
    k * (1.0 - a + Z_999 * a.sqrt()).powi(3)
}

fn histogram(z: &Zipf, seed: u64, draws: usize) -> Vec<u64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut counts = vec![0u64; z.imax() as usize + 1];
    for _ in 0..draws {
        counts[z.sample(&mut rng) as usize] += 1;
    }
    counts
}

/// Whether `draws` samples of `sampled` pass the χ² test against `claimed`'s law.
fn fits(sampled: &Zipf, claimed: &Zipf, seed: u64) -> (bool, f64, f64) {
    let counts = histogram(sampled, seed, 200_000);
    let (stat, df) = chi_square(&counts, claimed.s(), claimed.v());
    let crit = chi_square_critical_999(df);
    (stat < crit, stat, crit)
}

#[test]
fn wilson_hilferty_is_close_to_tabulated_quantiles() {
    // Tabulated χ² 0.999 quantiles: df 10 → 29.588, df 100 → 149.449.
    assert!((chi_square_critical_999(10) - 29.588).abs() < 0.3);
    assert!((chi_square_critical_999(100) - 149.449).abs() < 0.3);
}

#[test]
fn draws_follow_the_zipf_law() {
    // The seed's parameters (Go-exact path), the s < 1 workload shape (generalised
    // path), s exactly 1 (the log form) and a flat s.
    for (s, v, imax) in [
        (1.1, 2.72, 2800),
        (0.99, 1.0, 1000),
        (1.0, 1.0, 500),
        (0.5, 2.0, 300),
        (2.5, 1.0, 200),
    ] {
        let z = Zipf::new(s, v, imax).unwrap();
        let (ok, stat, crit) = fits(&z, &z, 2024);
        assert!(ok, "s={s} v={v} imax={imax}: χ²={stat:.1} ≥ {crit:.1}");
    }
}

#[test]
fn the_fit_test_rejects_a_wrong_law() {
    // The same check must fail when the draws come from a different exponent or offset.
    // ((s, v, imax) sampled, (s, v) claimed)
    type Case = ((f64, f64, u64), (f64, f64));
    let wrong: &[Case] = &[
        ((1.3, 2.72, 2800), (1.1, 2.72)),
        ((0.9, 1.0, 1000), (0.99, 1.0)),
        ((1.0, 1.0, 500), (0.97, 1.0)),
        ((1.1, 1.0, 2800), (1.1, 2.72)),
    ];
    for &((s, v, imax), (cs, cv)) in wrong {
        let sampled = Zipf::new(s, v, imax).unwrap();
        let claimed = Zipf::new(cs, cv, imax).unwrap();
        let (ok, stat, crit) = fits(&sampled, &claimed, 2024);
        assert!(
            !ok,
            "s={s} v={v} passed as s={cs} v={cv}: χ²={stat:.1} < {crit:.1}"
        );
    }
}

#[test]
fn exponent_one_is_continuous() {
    // s = 1 uses the log limit of the hat integral, with a Taylor branch next to it and
    // expm1/ln_1p beyond. Draws at s = 1 and a hair below must agree for the same uniforms,
    // up to the few that the (real) change of exponent moves across a bin edge.
    let at_one = Zipf::new(1.0, 1.0, 10_000).unwrap();
    // (exponent, branch it exercises, minimum agreeing draws of 10 000)
    for (s, branch, min_same) in [(1.0 - 1e-12, "Taylor", 9_999), (1.0 - 1e-7, "expm1", 9_980)] {
        let near = Zipf::new(s, 1.0, 10_000).unwrap();
        // Each draw gets its own uniform stream, so one rejection cannot desynchronise the rest.
        let same = (0..10_000u64)
            .filter(|&i| {
                let (mut a, mut b) = (SplitMix(i), SplitMix(i));
                at_one.sample_with(|| go_float64(|| a.int63()))
                    == near.sample_with(|| go_float64(|| b.int63()))
            })
            .count();
        assert!(
            same >= min_same,
            "s={s} ({branch}): only {same} of 10000 draws agree with s=1"
        );
    }
}
