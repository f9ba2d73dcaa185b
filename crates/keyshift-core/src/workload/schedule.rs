//! Open-loop send times: when each record is sent, decided in advance, never by responses.
//!
//! A closed-loop generator (send, wait for the ack, send again) slows down exactly when the
//! system under test struggles and so hides queueing delay; an open-loop [`Schedule`] keeps
//! offering load at its rate. Three shapes:
//! - [`Schedule::uniform`]: evenly spaced, one record every 1/rate seconds from t = 0.
//! - [`Schedule::token_bucket`]: the seed client's `golang.org/x/time/rate` limiter driven as
//!   fast as it allows (`rate.NewLimiter(rate, burst)` starts with a full bucket, so the first
//!   `burst` records go at t = 0, then one per 1/rate). The seed used burst = rate.
//! - [`Schedule::poisson`]: exponential gaps with mean 1/rate, the usual model of many
//!   independent clients.
//!
//! [`Arrivals`] iterates the send times in seconds; it is endless, callers `take` what they need.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::ParamError;

/// The ChaCha stream used for arrival gaps, so that a [`super::Workload`] seeded with the same
/// number draws its keys from an independent stream (stream 0).
const ARRIVALS_STREAM: u64 = 1;

/// When records are sent: a rate and a spacing rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    rate: f64,
    kind: ScheduleKind,
}

/// The spacing rule of a [`Schedule`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ScheduleKind {
    /// Evenly spaced from t = 0.
    Uniform,
    /// A token bucket that starts full: `burst` records at t = 0, then evenly spaced.
    TokenBucket {
        /// The bucket size (≥ 1).
        burst: u64,
    },
    /// Exponential gaps (a Poisson process); the first record comes after one gap.
    Poisson,
}

impl Schedule {
    /// Evenly spaced sends at `rate` records per second: times 0, 1/rate, 2/rate, ...
    pub fn uniform(rate: f64) -> Result<Schedule, ParamError> {
        Ok(Schedule {
            rate: check_rate(rate)?,
            kind: ScheduleKind::Uniform,
        })
    }

    /// The seed's rate limiter (`rate.NewLimiter(rate, burst)` + `Wait` before each send):
    /// record i goes at t = 0 for i < burst, else at (i − burst + 1)/rate.
    pub fn token_bucket(rate: f64, burst: u64) -> Result<Schedule, ParamError> {
        if burst == 0 {
            return Err(ParamError::new(
                "burst",
                "got 0, expected a bucket of at least 1 record",
            ));
        }
        Ok(Schedule {
            rate: check_rate(rate)?,
            kind: ScheduleKind::TokenBucket { burst },
        })
    }

    /// Poisson sends at `rate` records per second on average (exponential gaps).
    pub fn poisson(rate: f64) -> Result<Schedule, ParamError> {
        Ok(Schedule {
            rate: check_rate(rate)?,
            kind: ScheduleKind::Poisson,
        })
    }

    /// The long-run rate in records per second.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// The spacing rule.
    pub fn kind(&self) -> ScheduleKind {
        self.kind
    }

    /// The send times in seconds from 0, non-decreasing, endless; `seed` drives the random
    /// gaps of a Poisson schedule (the other shapes ignore it).
    pub fn arrivals(&self, seed: u64) -> Arrivals {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(ARRIVALS_STREAM);
        Arrivals {
            rate: self.rate,
            kind: self.kind,
            index: 0,
            last: 0.0,
            rng,
        }
    }
}

fn check_rate(rate: f64) -> Result<f64, ParamError> {
    if rate.is_finite() && rate > 0.0 {
        Ok(rate)
    } else {
        Err(ParamError::new(
            "rate",
            format!("got {rate}, expected a finite number of records per second > 0"),
        ))
    }
}

/// The send times of a [`Schedule`], in seconds from 0, non-decreasing and endless.
#[derive(Debug, Clone)]
pub struct Arrivals {
    rate: f64,
    kind: ScheduleKind,
    index: u64,
    last: f64,
    rng: ChaCha8Rng,
}

impl Iterator for Arrivals {
    type Item = f64;

    fn next(&mut self) -> Option<f64> {
        let i = self.index;
        self.index += 1;
        // Deterministic shapes compute time i directly rather than summing gaps, so rounding
        // does not drift over millions of records.
        let t = match self.kind {
            ScheduleKind::Uniform => i as f64 / self.rate,
            ScheduleKind::TokenBucket { burst } => {
                if i < burst {
                    0.0
                } else {
                    (i - burst + 1) as f64 / self.rate
                }
            }
            ScheduleKind::Poisson => {
                // 1 − u is in (0, 1], so the logarithm is finite.
                let u: f64 = self.rng.gen();
                self.last - (1.0 - u).ln() / self.rate
            }
        };
        self.last = t;
        Some(t)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (usize::MAX, None)
    }
}
