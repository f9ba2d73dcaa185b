//! Heavy-hitter sketches: which keys are hot, and how hot, in memory bounded by configuration.
//!
//! Both sketches count occurrences (`count`, an overestimate bounded by `error`) and expose a
//! rate view (records per second) that follows a shifting workload; see each type for how.

mod lossy;
mod space_saving;

pub use lossy::{BucketReport, LossyConfig, LossyCounter};
pub use space_saving::SpaceSaving;

/// One tracked key as a sketch sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct HotKey {
    /// The key bytes.
    pub key: Box<[u8]>,
    /// Estimated occurrences since tracking began (may overestimate by at most `error`).
    pub count: u64,
    /// Upper bound of the overestimate in `count`.
    pub error: u64,
    /// Estimated current rate in records per second.
    pub rate: f64,
}

/// What every heavy-hitter sketch offers to strategies.
pub trait HeavyHitters {
    /// Counts one occurrence of `key` at `now` (seconds since an arbitrary origin, non-decreasing).
    fn offer(&mut self, key: &[u8], now: f64);
    /// Estimated count of `key`, or `None` if it is not tracked.
    fn count(&self, key: &[u8]) -> Option<u64>;
    /// Estimated current rate of `key` (records/s) at `now`, or `None` if it is not tracked.
    fn rate(&self, key: &[u8], now: f64) -> Option<f64>;
    /// Up to `k` tracked keys, highest rate first.
    fn top(&self, k: usize, now: f64) -> Vec<HotKey>;
    /// Number of keys currently tracked (never above the configured capacity).
    fn len(&self) -> usize;
    /// Whether nothing is tracked.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
