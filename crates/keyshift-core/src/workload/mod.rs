//! Workloads like the seed's client: keys `location_<n>` drawn from a Zipf distribution
//! (exactly Go's `rand.NewZipf`) or the targeted generator, sent on an open-loop schedule.
//! Everything is seeded and reproducible.
//!
//! A [`KeyDist`] says which key comes next ([`Zipf`], [`Targeted`] or uniform), a [`Schedule`]
//! says when, and a [`Workload`] zips the two into a seeded stream of [`Arrival`]s.

mod schedule;
mod targeted;
mod zipf;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub use schedule::{Arrivals, Schedule, ScheduleKind};
pub use targeted::{Targeted, SEED_PERIOD, SEED_SETS};
pub use zipf::Zipf;

use crate::ParamError;

/// The seed's key naming: `location_<n>`.
pub fn key_name(n: u64) -> String {
    format!("location_{n}")
}

/// Which key index comes next; [`key_name`] turns an index into the key.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyDist {
    /// Zipf popularity, P(k) ∝ (v + k)^(−s) over 0..=imax.
    Zipf(Zipf),
    /// The seed's rotating hot spot.
    Targeted(Targeted),
    /// Every index in 0..keys equally likely (`keys` ≥ 1; build with [`KeyDist::uniform`]).
    Uniform {
        /// How many keys.
        keys: u64,
    },
}

impl KeyDist {
    /// Uniform over `keys` keys (≥ 1).
    pub fn uniform(keys: u64) -> Result<KeyDist, ParamError> {
        if keys == 0 {
            return Err(ParamError::new("keys", "got 0, expected at least 1 key"));
        }
        Ok(KeyDist::Uniform { keys })
    }

    /// The next key index (`&mut` because [`Targeted`] counts messages).
    ///
    /// # Panics
    /// For `Uniform { keys: 0 }` built by hand.
    pub fn sample<R: Rng + ?Sized>(&mut self, rng: &mut R) -> u64 {
        match self {
            KeyDist::Zipf(z) => z.sample(rng),
            KeyDist::Targeted(t) => t.sample(rng),
            KeyDist::Uniform { keys } => rng.gen_range(0..*keys),
        }
    }

    /// An upper bound on distinct key indices (every sample is below it), saturating at
    /// `u64::MAX` for an unbounded Zipf.
    pub fn key_space(&self) -> u64 {
        match self {
            KeyDist::Zipf(z) => z.imax().saturating_add(1),
            KeyDist::Targeted(t) => t.sets().iter().flatten().max().map_or(0, |&k| k + 1),
            KeyDist::Uniform { keys } => *keys,
        }
    }
}

/// One record of a workload: when to send it and which key it carries.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Arrival {
    /// Send time in seconds from the start of the run.
    pub at: f64,
    /// Key index; the key is [`key_name`]`(key)`.
    pub key: u64,
}

/// A seeded, endless stream of [`Arrival`]s: keys from a [`KeyDist`], times from a
/// [`Schedule`]. The same seed gives the same stream.
#[derive(Debug, Clone)]
pub struct Workload {
    keys: KeyDist,
    arrivals: Arrivals,
    rng: ChaCha8Rng,
}

impl Workload {
    /// A workload drawing keys from `keys` at the times of `schedule`. Keys use ChaCha8
    /// stream 0 of `seed` and arrival gaps stream 1, so changing the schedule's shape does not
    /// change which keys are drawn.
    pub fn new(keys: KeyDist, schedule: Schedule, seed: u64) -> Workload {
        Workload {
            keys,
            arrivals: schedule.arrivals(seed),
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// The key distribution (for its parameters or the targeted generator's state).
    pub fn keys(&self) -> &KeyDist {
        &self.keys
    }
}

impl Iterator for Workload {
    type Item = Arrival;

    fn next(&mut self) -> Option<Arrival> {
        let at = self.arrivals.next()?;
        let key = self.keys.sample(&mut self.rng);
        Some(Arrival { at, key })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (usize::MAX, None)
    }
}
