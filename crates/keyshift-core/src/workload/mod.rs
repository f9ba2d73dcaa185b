//! Workloads like the seed's client: keys `location_<n>` drawn from a Zipf distribution
//! (exactly Go's `rand.NewZipf`) or the targeted generator, sent on an open-loop schedule.
//! Everything is seeded and reproducible.
//!
//! A [`KeyDist`] says which key comes next ([`Zipf`], [`Targeted`] or uniform), a [`Schedule`]
//! says when, and a [`Workload`] zips the two into a seeded stream of [`Arrival`]s, optionally
//! with a sudden [`HotKey`]. Each arrival says whether the workload changed shape with it (the
//! targeted hot spot moved, the hot key appeared), so a measurement can time the recovery.

mod hot_key;
mod schedule;
mod targeted;
mod zipf;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub use hot_key::{HotKey, HOT_KEY_STREAM};
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

    /// Whether the next [`KeyDist::sample`] starts a new shape of the load (the targeted hot
    /// spot moves to its next set; the very first sample counts too, it starts the first).
    pub fn shifts_next(&self) -> bool {
        match self {
            KeyDist::Targeted(t) => t.rotates_next(),
            KeyDist::Zipf(_) | KeyDist::Uniform { .. } => false,
        }
    }

    /// Records between two changes of the load's shape, for a distribution that changes
    /// shape on a fixed count (the targeted generator's period); `None` for a stationary one.
    pub fn shift_period(&self) -> Option<u64> {
        match self {
            KeyDist::Targeted(t) => Some(t.period()),
            KeyDist::Zipf(_) | KeyDist::Uniform { .. } => None,
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
    /// The workload changed shape with this arrival: the targeted hot spot moved, or the
    /// [`HotKey`] appeared (never for the first arrival, which starts the load).
    pub shift: bool,
}

/// A seeded, endless stream of [`Arrival`]s: keys from a [`KeyDist`], times from a
/// [`Schedule`]. The same seed gives the same stream.
#[derive(Debug, Clone)]
pub struct Workload {
    keys: KeyDist,
    arrivals: Arrivals,
    rng: ChaCha8Rng,
    /// Arrivals produced so far.
    sent: u64,
    /// Keys drawn from `keys` so far (arrivals not carrying the hot key).
    drawn: u64,
    /// The sudden hot key and the generator deciding which arrivals carry it.
    hot: Option<(HotKey, ChaCha8Rng)>,
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
            sent: 0,
            drawn: 0,
            hot: None,
        }
    }

    /// The same workload with `hot` added; which arrivals carry it follows from `seed` (the
    /// one given to [`Workload::new`]).
    pub fn with_hot_key(self, hot: HotKey, seed: u64) -> Workload {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(HOT_KEY_STREAM);
        Workload {
            hot: Some((hot, rng)),
            ..self
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
        let index = self.sent;
        self.sent += 1;
        let (hot_key, appears) = match &mut self.hot {
            Some((hot, rng)) if index >= hot.from() => (
                (rng.gen::<f64>() < hot.share()).then_some(hot.key()),
                index == hot.from() && index > 0,
            ),
            _ => (None, false),
        };
        let (key, rotates) = match hot_key {
            Some(key) => (key, false),
            None => {
                let rotates = self.drawn > 0 && self.keys.shifts_next();
                self.drawn += 1;
                (self.keys.sample(&mut self.rng), rotates)
            }
        };
        let shift = appears || rotates;
        Some(Arrival { at, key, shift })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (usize::MAX, None)
    }
}
