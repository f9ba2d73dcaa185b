//! A fixed-bucket latency histogram that can be both exported to Prometheus and summarised
//! (p50/p99) for `/api/stats`; prometheus-client's own histogram cannot be read back.

use std::time::Duration;

use crate::stats::Distribution;

/// Bucket upper bounds in seconds: 50 µs × 2^i, i = 0..20 (50 µs .. ~26 s), then +Inf. Fine
/// enough at the low end for the ≤ 0.2 ms added-latency goal, long enough for a fetch
/// long-poll.
const BOUNDS: [f64; 20] = {
    let mut b = [0.0; 20];
    let mut i = 0;
    let mut v = 0.000_05;
    while i < 20 {
        b[i] = v;
        v *= 2.0;
        i += 1;
    }
    b
};

/// Counts per bucket (the last one is +Inf), their sum and count.
#[derive(Debug, Clone, Default)]
pub(crate) struct Histogram {
    counts: [u64; BOUNDS.len() + 1],
    sum: f64,
    count: u64,
}

impl Histogram {
    pub(crate) fn observe(&mut self, d: Duration) {
        let v = d.as_secs_f64();
        let i = BOUNDS.partition_point(|&b| b < v);
        self.counts[i] += 1;
        self.sum += v;
        self.count += 1;
    }

    /// Upper bound of the bucket holding quantile `q`, `None` without observations; `+Inf`
    /// bucket reports the largest finite bound.
    fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        // Rank of the q-quantile among the observations, 1-based.
        let rank = ((q * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(BOUNDS[i.min(BOUNDS.len() - 1)]);
            }
        }
        Some(BOUNDS[BOUNDS.len() - 1])
    }

    pub(crate) fn distribution(&self) -> Distribution {
        let buckets = self
            .counts
            .iter()
            .enumerate()
            .map(|(i, &c)| (BOUNDS.get(i).copied(), c))
            .collect();
        Distribution {
            count: self.count,
            sum_secs: self.sum,
            p50_secs: self.quantile(0.5),
            p99_secs: self.quantile(0.99),
            buckets,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_quantiles_and_inf() {
        let mut h = Histogram::default();
        assert_eq!(h.distribution().p50_secs, None);
        for _ in 0..98 {
            h.observe(Duration::from_micros(40)); // first bucket (≤ 50 µs)
        }
        h.observe(Duration::from_micros(120)); // ≤ 200 µs
        h.observe(Duration::from_secs(100)); // +Inf
        let d = h.distribution();
        assert_eq!(d.count, 100);
        assert_eq!(d.p50_secs, Some(0.000_05));
        assert_eq!(d.p99_secs, Some(0.000_2));
        assert_eq!(d.buckets[0], (Some(0.000_05), 98));
        assert_eq!(d.buckets[2], (Some(0.000_2), 1));
        assert_eq!(*d.buckets.last().unwrap(), (None, 1));
        assert!((d.sum_secs - (98.0 * 0.000_04 + 0.000_12 + 100.0)).abs() < 1e-9);
    }
}
