//! Measures shared by the simulator and the real-broker experiment: latency quantiles and
//! load imbalance against the lower bound of any order-preserving strategy.
//!
//! [`LatencyHistogram`] records durations in microseconds in an HDR histogram (3 significant
//! digits, so quantiles are within 0.1 % of the true value) and answers in milliseconds, the
//! unit reports use. [`imbalance`] compares the most loaded partition with the mean and with
//! `max(mean, hottest key)`: no strategy that keeps a key on one partition can do better than
//! that bound, so `max_over_bound` says how much room a strategy left on the table.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latency distribution: record seconds, read milliseconds.
#[derive(Debug, Clone)]
pub struct LatencyHistogram {
    hist: Histogram<u64>,
    /// Exact maximum in microseconds (the histogram's own is rounded up to its bucket).
    max_us: u64,
    /// Exact sum in seconds, for the mean.
    sum_secs: f64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyHistogram {
    /// An empty histogram with 3 significant digits and no upper bound.
    pub fn new() -> Self {
        Self {
            // 3 significant digits is always a valid precision, so this cannot fail.
            hist: Histogram::new(3).expect("3 significant digits is a valid HDR precision"),
            max_us: 0,
            sum_secs: 0.0,
        }
    }

    /// Records one duration in seconds (negative values count as 0).
    pub fn record_secs(&mut self, secs: f64) {
        let secs = secs.max(0.0);
        let us = (secs * 1e6).round() as u64;
        // The histogram auto-resizes, so recording never fails for a u64.
        self.hist
            .record(us)
            .expect("auto-resizing histogram accepts any value");
        self.max_us = self.max_us.max(us);
        self.sum_secs += secs;
    }

    /// Number of recorded durations.
    pub fn len(&self) -> u64 {
        self.hist.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.hist.is_empty()
    }

    /// The `q`-quantile (`0.0..=1.0`) in milliseconds; 0 when empty.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.is_empty() {
            return 0.0;
        }
        // The HDR quantile is the bucket's highest equivalent value; it can exceed the true
        // maximum by up to one bucket, which would print p999 > max.
        let us = self
            .hist
            .value_at_quantile(q.clamp(0.0, 1.0))
            .min(self.max_us);
        us as f64 / 1e3
    }

    /// The largest recorded duration in milliseconds (exact to the microsecond); 0 when empty.
    pub fn max_ms(&self) -> f64 {
        self.max_us as f64 / 1e3
    }

    /// The mean in milliseconds; 0 when empty.
    pub fn mean_ms(&self) -> f64 {
        if self.is_empty() {
            0.0
        } else {
            self.sum_secs * 1e3 / self.len() as f64
        }
    }

    /// Sum of all recorded durations in milliseconds.
    pub fn total_ms(&self) -> f64 {
        self.sum_secs * 1e3
    }

    /// Adds every duration recorded in `other`.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        self.hist
            .add(&other.hist)
            .expect("auto-resizing histograms can always be added");
        self.max_us = self.max_us.max(other.max_us);
        self.sum_secs += other.sum_secs;
    }
}

/// How uneven a set of partition loads is.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Imbalance {
    /// Most loaded partition ÷ mean load (1.0 = perfectly even).
    pub max_over_mean: f64,
    /// Most loaded partition ÷ `max(mean, hottest key)`: 1.0 means no order-preserving
    /// strategy could have done better.
    pub max_over_bound: f64,
}

/// Imbalance of `loads` (records per partition) when the hottest single key accounts for
/// `hottest_key` records of the same window. All-zero or empty loads count as balanced (1.0).
pub fn imbalance(loads: &[u64], hottest_key: u64) -> Imbalance {
    let total: u64 = loads.iter().sum();
    let max = loads.iter().copied().max().unwrap_or(0);
    if total == 0 {
        return Imbalance {
            max_over_mean: 1.0,
            max_over_bound: 1.0,
        };
    }
    let mean = total as f64 / loads.len() as f64;
    let bound = mean.max(hottest_key as f64);
    Imbalance {
        max_over_mean: max as f64 / mean,
        max_over_bound: max as f64 / bound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imbalance_even_loads_is_one() {
        let i = imbalance(&[5, 5, 5, 5], 2);
        assert_eq!(i.max_over_mean, 1.0);
        assert_eq!(i.max_over_bound, 1.0);
    }

    #[test]
    fn imbalance_hand_computed() {
        // total 40, mean 10, max 16; hottest key 4 < mean so the bound is the mean.
        let i = imbalance(&[16, 8, 10, 6], 4);
        assert!((i.max_over_mean - 1.6).abs() < 1e-12);
        assert!((i.max_over_bound - 1.6).abs() < 1e-12);
        // A key of 12 records is hotter than the mean: the bound becomes 12.
        let i = imbalance(&[16, 8, 10, 6], 12);
        assert!((i.max_over_mean - 1.6).abs() < 1e-12);
        assert!((i.max_over_bound - 16.0 / 12.0).abs() < 1e-12);
    }

    #[test]
    fn imbalance_of_nothing_is_balanced() {
        assert_eq!(imbalance(&[], 0).max_over_mean, 1.0);
        assert_eq!(imbalance(&[0, 0, 0], 0).max_over_bound, 1.0);
    }

    #[test]
    fn quantiles_of_one_to_thousand_ms() {
        let mut h = LatencyHistogram::new();
        for ms in 1..=1000u32 {
            h.record_secs(f64::from(ms) / 1e3);
        }
        assert_eq!(h.len(), 1000);
        // 3 significant digits: within 0.1 % of the exact order statistic.
        assert!(
            (h.quantile_ms(0.5) - 500.0).abs() <= 0.5,
            "{}",
            h.quantile_ms(0.5)
        );
        assert!(
            (h.quantile_ms(0.99) - 990.0).abs() <= 1.0,
            "{}",
            h.quantile_ms(0.99)
        );
        assert!((h.quantile_ms(0.999) - 999.0).abs() <= 1.0);
        assert_eq!(h.max_ms(), 1000.0);
        assert!((h.mean_ms() - 500.5).abs() < 1e-9);
        assert!(h.quantile_ms(1.0) <= h.max_ms());
    }

    #[test]
    fn empty_histogram_reads_zero() {
        let h = LatencyHistogram::new();
        assert!(h.is_empty());
        assert_eq!(h.quantile_ms(0.99), 0.0);
        assert_eq!(h.max_ms(), 0.0);
        assert_eq!(h.mean_ms(), 0.0);
    }

    #[test]
    fn merge_adds_counts_and_keeps_max() {
        let mut a = LatencyHistogram::new();
        let mut b = LatencyHistogram::new();
        a.record_secs(0.001);
        b.record_secs(0.003);
        b.record_secs(-1.0);
        a.merge(&b);
        assert_eq!(a.len(), 3);
        assert_eq!(a.max_ms(), 3.0);
        assert!((a.total_ms() - 4.0).abs() < 1e-9);
    }
}
