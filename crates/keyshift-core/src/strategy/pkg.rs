//! `pkg`: partial key grouping (Nasir et al., ICDE 2015): two hash choices per key, each
//! record to the less loaded of the two.
//!
//! A key's records are split over (at most) two partitions, which balances load far better
//! than hashing but breaks per-key order: the baseline that shows what order costs.
//!
//! The first choice is the key's Kafka partition (murmur2), the second a differently seeded
//! remix of the same 32-bit murmur2 value, forced onto another partition when there are at
//! least two. Load is the producer's own count of records per partition, either cumulative
//! (as in the paper) or exponentially decayed so that it follows a changing workload.

use super::{Move, Strategy};
use crate::hash::murmur2;
use crate::ParamError;

/// Options of the `pkg` strategy.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PkgConfig {
    /// Half-life (seconds) of the per-partition load; `None` counts records cumulatively.
    pub half_life_secs: Option<f64>,
}

impl PkgConfig {
    /// Checks the options.
    pub fn validate(&self) -> Result<(), ParamError> {
        if let Some(h) = self.half_life_secs {
            if !(h.is_finite() && h > 0.0) {
                return Err(ParamError::new(
                    "pkg-half-life",
                    format!("must be a positive number of seconds, got {h}"),
                ));
            }
        }
        Ok(())
    }
}

/// Exponent beyond which the decay weights are rescaled, long before `f64` overflows.
const RESCALE_EXPONENT: f64 = 60.0;

/// Partial key grouping over `partitions` partitions.
#[derive(Debug, Clone)]
pub struct PkgStrategy {
    partitions: u32,
    /// Load per partition, in units of the weight a record had at `base`.
    load: Vec<f64>,
    /// 1 / τ of the decay, or 0 for cumulative counts.
    inv_tau: f64,
    base: f64,
    last_now: f64,
    weight: f64,
    salt: u32,
}

impl PkgStrategy {
    /// Validates `config` and builds the strategy; `seed` picks the second hash function.
    pub fn new(partitions: u32, config: &PkgConfig, seed: u64) -> Result<Self, ParamError> {
        config.validate()?;
        let inv_tau = config
            .half_life_secs
            .map_or(0.0, |h| std::f64::consts::LN_2 / h);
        Ok(Self {
            partitions,
            load: vec![0.0; partitions as usize],
            inv_tau,
            base: f64::NAN,
            last_now: f64::NAN,
            weight: 1.0,
            // An odd salt keeps the remix a bijection of the 32-bit hash.
            salt: (seed as u32 ^ (seed >> 32) as u32 ^ 0x9e37_79b9) | 1,
        })
    }

    /// The two candidate partitions of `key`.
    #[inline]
    pub fn choices(&self, key: &[u8]) -> (u32, u32) {
        let h = murmur2(key) as u32;
        let first = (h & 0x7fff_ffff) % self.partitions;
        if self.partitions == 1 {
            return (0, 0);
        }
        let mut x = h.wrapping_mul(self.salt) ^ self.salt.rotate_left(16);
        // murmur3's finaliser: every input bit affects every output bit.
        x ^= x >> 16;
        x = x.wrapping_mul(0x85eb_ca6b);
        x ^= x >> 13;
        x = x.wrapping_mul(0xc2b2_ae35);
        x ^= x >> 16;
        let second = (first + 1 + x % (self.partitions - 1)) % self.partitions;
        (first, second)
    }

    /// The weight of a record arriving at `now`: 1 for cumulative counts, e^{(now−base)/τ}
    /// otherwise, so that old records weigh relatively less without touching every partition.
    #[inline]
    fn weight_at(&mut self, now: f64) -> f64 {
        if self.inv_tau == 0.0 {
            return 1.0;
        }
        if now != self.last_now {
            if self.base.is_nan() {
                self.base = now;
            }
            let mut exponent = (now - self.base) * self.inv_tau;
            if exponent > RESCALE_EXPONENT {
                let scale = (-exponent).exp();
                self.load.iter_mut().for_each(|l| *l *= scale);
                self.base = now;
                exponent = 0.0;
            }
            self.weight = exponent.max(0.0).exp();
            self.last_now = now;
        }
        self.weight
    }
}

impl Strategy for PkgStrategy {
    fn name(&self) -> &'static str {
        "pkg"
    }

    fn preserves_order(&self) -> bool {
        false
    }

    fn route(&mut self, key: &[u8], now: f64) -> u32 {
        let (a, b) = self.choices(key);
        let w = self.weight_at(now);
        let p = if self.load[b as usize] < self.load[a as usize] {
            b
        } else {
            a
        };
        self.load[p as usize] += w;
        p
    }

    fn drain_moves(&mut self) -> Vec<Move> {
        Vec::new()
    }
}
