//! Workloads like the seed's client: keys `location_<n>` drawn from a Zipf distribution
//! (exactly Go's `rand.NewZipf`) or the targeted generator, sent on an open-loop schedule.
//! Everything is seeded and reproducible.

mod schedule;
mod targeted;
mod zipf;

pub use schedule::{Arrivals, Schedule};
pub use targeted::Targeted;
pub use zipf::Zipf;

/// The seed's key naming: `location_<n>`.
pub fn key_name(n: u64) -> String {
    format!("location_{n}")
}
