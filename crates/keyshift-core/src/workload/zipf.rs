//! Zipf-distributed key indices, reproducing Go's `math/rand` `NewZipf` / `Uint64`.
//!
//! The seed's client draws keys with `rand.NewZipf(r, s, v, imax)`, which samples
//! P(k) ∝ (v + k)^(−s) for k in 0..=imax by Hörmann and Derflinger's rejection-inversion
//! ("Rejection-Inversion to Generate Variates from Monotone Discrete Distributions", 1996).
//! [`Zipf`] ports `src/math/rand/zipf.go` operation for operation, so that for s > 1, given the
//! same stream of uniform floats, it returns the same keys as Go (checked against Go 1.19 on
//! amd64 in `tests/workload_zipf.rs`).
//!
//! Go refuses s ≤ 1, but realistic key popularity (and the goal workloads, e.g.
//! s = 0.99 over 100 000 keys) sits there. Rejection-inversion only needs a decreasing convex
//! hat, which (v + x)^(−s) is for every s > 0; what breaks is the infinite tail (the mass
//! diverges for s ≤ 1) and Go's form of the hat integral H(x) = (v + x)^(1−s) / (1 − s), which
//! divides by zero at s = 1 and loses precision near it. So for s ≤ 1 we require a finite
//! `imax` and use H shifted by the constant −1/(1−s): H(x) = expm1((1−s)·ln(v+x)) / (1−s),
//! which tends to ln(v + x) as s → 1 and is evaluated with `expm1`/`ln_1p` (as Apache Commons
//! RNG does). Same method, generalised; no Go to be exact with.

use rand::Rng;

use crate::ParamError;

/// A Zipf variate generator over key indices 0..=imax with P(k) ∝ (v + k)^(−s).
///
/// Immutable once built: the random state lives in the caller's RNG, so one `Zipf` can feed
/// any number of seeded streams.
#[derive(Debug, Clone, PartialEq)]
pub struct Zipf {
    s: f64,
    v: f64,
    imax: u64,
    // The fields below mirror Go's struct (Go calls the exponent `q` and the squeeze bound
    // `s`); kept under Go's names so the port can be read side by side with zipf.go.
    imax_f: f64,
    one_minus_q: f64,
    one_minus_q_inv: f64,
    hxm: f64,
    hx0_minus_hxm: f64,
    squeeze: f64,
    form: Form,
}

/// Which antiderivative of the hat function is evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    /// Go's `exp((1−q)·ln(v+x)) / (1−q)`, kept verbatim for bit-exactness (q > 1).
    Go,
    /// The shifted, cancellation-free form for q ≤ 1 (finite `imax` only).
    Shifted,
}

impl Zipf {
    /// A generator of k in 0..=`imax` with P(k) ∝ (`v` + k)^(−`s`).
    ///
    /// Needs `s` > 0 and `v` ≥ 1 (both finite). For `s` > 1 this is exactly Go's
    /// `rand.NewZipf(r, s, v, imax)`; for `s` ≤ 1 `imax` must be finite (not `u64::MAX`,
    /// which stands for "no upper key bound"), since the distribution has no infinite tail.
    pub fn new(s: f64, v: f64, imax: u64) -> Result<Zipf, ParamError> {
        if !(s.is_finite() && s > 0.0) {
            return Err(ParamError::new(
                "zipf-s",
                format!("got {s}, expected a finite exponent > 0"),
            ));
        }
        if !(v.is_finite() && v >= 1.0) {
            return Err(ParamError::new(
                "zipf-v",
                format!("got {v}, expected a finite offset >= 1"),
            ));
        }
        if s <= 1.0 && imax == u64::MAX {
            return Err(ParamError::new(
                "zipf-s",
                format!(
                    "got {s} with no upper key bound: s ≤ 1 needs a finite key count \
                     (the distribution's mass diverges), or use s > 1"
                ),
            ));
        }
        let q = s;
        let mut z = Zipf {
            s,
            v,
            imax,
            imax_f: imax as f64,
            one_minus_q: 1.0 - q,
            one_minus_q_inv: 1.0 / (1.0 - q),
            hxm: 0.0,
            hx0_minus_hxm: 0.0,
            squeeze: 0.0,
            form: if q > 1.0 { Form::Go } else { Form::Shifted },
        };
        // Same expressions, same evaluation order as Go's NewZipf.
        z.hxm = z.h(z.imax_f + 0.5);
        z.hx0_minus_hxm = z.h(0.5) - (v.ln() * (-q)).exp() - z.hxm;
        z.squeeze = 1.0 - z.hinv(z.h(1.5) - (-q * (v + 1.0).ln()).exp());
        Ok(z)
    }

    /// The exponent `s`.
    pub fn s(&self) -> f64 {
        self.s
    }

    /// The offset `v`.
    pub fn v(&self) -> f64 {
        self.v
    }

    /// The largest key index this generator returns.
    pub fn imax(&self) -> u64 {
        self.imax
    }

    /// One key index, drawing uniforms in [0, 1) from `rng`.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> u64 {
        self.sample_with(|| rng.gen::<f64>())
    }

    /// One key index from a caller-supplied stream of uniforms in [0, 1).
    ///
    /// Given the floats Go's `r.Float64()` returns, this returns what Go's `Zipf.Uint64()`
    /// returns (for s > 1), consuming the same number of floats. One deliberate difference:
    /// when a uniform is within rounding of 0, Go's inversion can land on `imax + 1`, outside
    /// its own documented range; we return `imax` instead.
    pub fn sample_with(&self, mut uniform: impl FnMut() -> f64) -> u64 {
        loop {
            let r = uniform();
            let ur = self.hxm + r * self.hx0_minus_hxm;
            let x = self.hinv(ur);
            let k = (x + 0.5).floor();
            // Squeeze: accept without evaluating the hat (most draws end here).
            if k - x <= self.squeeze || ur >= self.h(k + 0.5) - (-(k + self.v).ln() * self.s).exp()
            {
                // k ≥ 0 (x ≥ −0.5 by convexity of the hat); `as` saturates above u64::MAX.
                return (k as u64).min(self.imax);
            }
        }
    }

    /// H, the antiderivative of the hat (v + x)^(−q).
    #[inline]
    fn h(&self, x: f64) -> f64 {
        match self.form {
            Form::Go => (self.one_minus_q * (self.v + x).ln()).exp() * self.one_minus_q_inv,
            Form::Shifted => {
                let log_vx = (self.v + x).ln();
                expm1_over_x(self.one_minus_q * log_vx) * log_vx
            }
        }
    }

    /// H⁻¹.
    #[inline]
    fn hinv(&self, x: f64) -> f64 {
        match self.form {
            Form::Go => (self.one_minus_q_inv * (self.one_minus_q * x).ln()).exp() - self.v,
            Form::Shifted => (ln_1p_over_x(self.one_minus_q * x) * x).exp() - self.v,
        }
    }
}

/// expm1(t) / t, continuous at t = 0 (where q = 1 and H becomes ln(v + x)).
#[inline]
fn expm1_over_x(t: f64) -> f64 {
    if t.abs() > 1e-8 {
        t.exp_m1() / t
    } else {
        // Taylor series; the next term is below f64 precision for |t| ≤ 1e-8.
        1.0 + t * 0.5 * (1.0 + t / 3.0 * (1.0 + t * 0.25))
    }
}

/// ln(1 + t) / t, continuous at t = 0.
#[inline]
fn ln_1p_over_x(t: f64) -> f64 {
    if t.abs() > 1e-8 {
        t.ln_1p() / t
    } else {
        1.0 - t * (0.5 - t * (1.0 / 3.0 - t * 0.25))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// The shifted hat integral used for s ≤ 1 is the same method as Go's: forced onto s > 1,
    /// it must give Go's draws except where rounding puts x within an ulp of a bin edge.
    #[test]
    fn shifted_form_agrees_with_go_form_above_one() {
        for (s, v, imax) in [(1.1, 2.72, 2800), (1.5, 1.0, 100_000), (3.0, 2.0, 50)] {
            let go = Zipf::new(s, v, imax).unwrap();
            assert_eq!(go.form, Form::Go);
            let mut shifted = go.clone();
            shifted.form = Form::Shifted;
            shifted.hxm = shifted.h(shifted.imax_f + 0.5);
            shifted.hx0_minus_hxm = shifted.h(0.5) - (v.ln() * (-s)).exp() - shifted.hxm;
            shifted.squeeze = 1.0 - shifted.hinv(shifted.h(1.5) - (-s * (v + 1.0).ln()).exp());
            assert!((shifted.squeeze - go.squeeze).abs() < 1e-9);
            let draws = 50_000u64;
            let mut rng = ChaCha8Rng::seed_from_u64(1);
            // Both forms read the same uniforms for each draw, so a rejection in one cannot
            // desynchronise the rest (acceptance is > 90% per uniform, 16 are plenty).
            let same = (0..draws)
                .filter(|_| {
                    let u: [f64; 16] = rng.gen();
                    let (mut i, mut j) = (0, 0);
                    let a = go.sample_with(|| {
                        i += 1;
                        u[i - 1]
                    });
                    let b = shifted.sample_with(|| {
                        j += 1;
                        u[j - 1]
                    });
                    a == b
                })
                .count() as u64;
            assert!(
                draws - same <= 10,
                "s={s}: {} of {draws} draws differ",
                draws - same
            );
        }
    }
}
