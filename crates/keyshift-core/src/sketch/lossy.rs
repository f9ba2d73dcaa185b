//! Lossy Counting exactly as the SLOPS seed runs it (`SLOPSProducer/cmd/count.go` and the
//! sampling in `cmd/message.go`), with a hash map instead of the seed's list scan so that
//! counting a record costs O(1) amortised.
//!
//! The seed's loop, per sampled record: `N++`; a tracked key's count grows by one, an untracked
//! key enters with count 1 and bucket `current − 1`; when `N` reaches the bucket width
//! ⌊1/ε⌋ the bucket turns over: every count is decremented, entries with
//! `count + bucket < current` are deleted (the seed drops their route), the survivors with
//! `count ≥ (support − ε)·N` are hot (the seed routes the new ones), `N` resets to 0 and
//! `current` grows by one. [`LossyCounter::take_report`] hands each turnover's outcome to the
//! `slops` strategy.
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rustc_hash::FxHashMap;

use super::{HeavyHitters, HotKey};
use crate::ParamError;

/// Lossy counting parameters (seed defaults: epsilon 0.001, support 0.01, sample_threshold 0.5).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossyConfig {
    /// ε: the error tolerated; bucket width is ⌊1/ε⌋.
    pub epsilon: f64,
    /// s: a key is hot when its count ≥ (s − ε)·N.
    pub support: f64,
    /// A record is counted when a uniform draw is ≥ this (the seed's `sample_threshold`).
    pub sample_threshold: f64,
    /// Seed of the sampling draws.
    pub seed: u64,
}

impl Default for LossyConfig {
    /// The seed's `k8s/producer/configmap.yaml` values, sampling seed 0.
    fn default() -> Self {
        Self {
            epsilon: 0.001,
            support: 0.01,
            sample_threshold: 0.5,
            seed: 0,
        }
    }
}

impl LossyConfig {
    /// Checks every field; errors name the flag (`epsilon`, `support`, `sample-threshold`).
    pub fn validate(&self) -> Result<(), ParamError> {
        if !(self.epsilon > 0.0 && self.epsilon < 1.0) {
            return Err(ParamError::new(
                "epsilon",
                format!("got {}, expected a number in (0, 1)", self.epsilon),
            ));
        }
        if !(self.support > 0.0 && self.support <= 1.0) {
            return Err(ParamError::new(
                "support",
                format!("got {}, expected a number in (0, 1]", self.support),
            ));
        }
        if self.support <= self.epsilon {
            return Err(ParamError::new(
                "support",
                format!(
                    "ε must be below support (got support {} with epsilon {})",
                    self.support, self.epsilon
                ),
            ));
        }
        if !(self.sample_threshold >= 0.0 && self.sample_threshold < 1.0) {
            return Err(ParamError::new(
                "sample-threshold",
                format!("got {}, expected a number in [0, 1)", self.sample_threshold),
            ));
        }
        Ok(())
    }

    /// Bucket width ⌊1/ε⌋, computed like the seed (`int(math.Floor(1 / epsilon))`).
    pub fn bucket_width(&self) -> u64 {
        (1.0 / self.epsilon).floor() as u64
    }

    /// Count from which a surviving key is hot at a turnover: `(support − ε)·N` with the seed's
    /// `N`, which is the bucket width at every turnover (see [`LossyCounter`]).
    pub fn hot_threshold(&self) -> f64 {
        (self.support - self.epsilon) * self.bucket_width() as f64
    }
}

/// What one bucket turnover decided, in the seed's entry order (first tracked first).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BucketReport {
    /// Surviving keys with count ≥ [`LossyConfig::hot_threshold`], with their count after the
    /// turnover's decrement (the seed routes those it does not route yet, with this count).
    pub hot: Vec<(Box<[u8]>, u64)>,
    /// Keys deleted at this turnover (the seed deletes their route, if any).
    pub dropped: Vec<Box<[u8]>>,
}

/// One tracked key, the seed's `Record` plus the two bucket tallies of the rate view.
#[derive(Debug, Clone)]
struct Entry {
    key: Box<[u8]>,
    count: u64,
    /// The seed's `Bucket`: `current − 1` when the key (last) entered.
    bucket: u64,
    /// Occurrences in the current bucket and in the last completed one.
    in_current: u64,
    in_previous: u64,
}

/// Lossy counter with the seed's semantics, O(1) amortised per record.
///
/// **Sampling.** [`HeavyHitters::offer`] counts a record only when a uniform draw from a
/// `ChaCha8Rng` seeded with [`LossyConfig::seed`] is ≥ `sample_threshold` (threshold 0 counts
/// everything without drawing). Every count, `N`, bucket and report below is in counted
/// records.
///
/// **Seed behaviour kept on purpose** (each changes which keys go hot, so reproducing the
/// seed's results needs it):
/// - At every turnover *all* counts are decremented by one before the deletion test (classic
///   Lossy Counting never decrements). Counts therefore never overestimate and may
///   underestimate: for a tracked key, `true − count ≤ bucket + completed_buckets`, at most
///   twice the number of completed buckets (≈ 2εN; classic: εN).
/// - The hot test `count ≥ (support − ε)·N` uses the seed's `N`, which counts records of the
///   current bucket only and equals the width at every turnover, so the threshold is the
///   constant [`LossyConfig::hot_threshold`] (9 with the defaults) rather than a share of the
///   whole stream. Every key with ≥ `support·w` occurrences inside one bucket — in particular
///   every key whose true count over the completed buckets is ≥ `support·N_completed` — is
///   reported hot at some turnover, provided `support·w ≥ 2` (10 with the defaults).
///
/// **Deviations from the seed:** a hash map replaces `checkKeyList`'s linear scan (the order of
/// entries, which decides the order of reports, is the seed's insertion order all the same);
/// the seed's time-seeded `math/rand` sampling becomes a seeded ChaCha8 stream.
///
/// **Memory.** After a turnover at bucket `c`, a survivor that entered `i` buckets ago has
/// count ≥ `i` after `i` decrements, hence ≥ 2i occurrences in the last `i` buckets; the
/// Manku–Motwani argument then bounds the survivors by `(w/2)·H_T ≤ (w/2)·(1 + ln T)` for `T`
/// completed buckets, and a bucket adds at most `w` entries: at most
/// `w·(1 + (1 + ln T)/2)` entries, logarithmic in the stream length (classic Lossy Counting:
/// `(1/ε)·log(εN)`), independent of the number of distinct keys. Turnover is O(entries), once
/// per `w` records.
///
/// **Rate view.** A key's rate is its occurrences in the last completed bucket plus the current
/// one, divided by the time since the last completed bucket began (before the first turnover:
/// since the first offer), and scaled by `1 / (1 − sample_threshold)` to estimate offered
/// records/s. It thus forgets everything older than one bucket and follows a shift within two
/// buckets. With no elapsed time the rate is 0. [`HotKey::error`] is 0: counts never
/// overestimate.
#[derive(Debug, Clone)]
pub struct LossyCounter {
    config: LossyConfig,
    width: u64,
    hot_threshold: f64,
    rng: ChaCha8Rng,
    /// Entries in the seed's order: insertion order, survivors keep theirs.
    entries: Vec<Entry>,
    index: FxHashMap<Box<[u8]>, usize>,
    /// The seed's `currentBucket` (starts at 1) and `N` (records in the current bucket).
    current_bucket: u64,
    in_bucket: u64,
    offered: u64,
    counted: u64,
    /// When the current and the last completed bucket began, `None` before the first offer /
    /// turnover.
    current_start: Option<f64>,
    previous_start: Option<f64>,
    report: Option<BucketReport>,
}

impl LossyCounter {
    /// Validates `config` and builds an empty counter.
    pub fn new(config: LossyConfig) -> Result<Self, ParamError> {
        config.validate()?;
        Ok(Self {
            config,
            width: config.bucket_width(),
            hot_threshold: config.hot_threshold(),
            rng: ChaCha8Rng::seed_from_u64(config.seed),
            entries: Vec::new(),
            index: FxHashMap::default(),
            current_bucket: 1,
            in_bucket: 0,
            offered: 0,
            counted: 0,
            current_start: None,
            previous_start: None,
            report: None,
        })
    }

    /// The configuration this counter was built with.
    pub fn config(&self) -> &LossyConfig {
        &self.config
    }

    /// Bucket width ⌊1/ε⌋ in counted records.
    pub fn bucket_width(&self) -> u64 {
        self.width
    }

    /// The seed's `currentBucket`: 1 before the first turnover, then one more per turnover.
    pub fn current_bucket(&self) -> u64 {
        self.current_bucket
    }

    /// Turnovers so far (`current_bucket − 1`).
    pub fn completed_buckets(&self) -> u64 {
        self.current_bucket - 1
    }

    /// The seed's `Bucket` field of `key` (`current − 1` when it entered; classic Δ), or `None`
    /// if it is not tracked.
    pub fn bucket_of(&self, key: &[u8]) -> Option<u64> {
        self.index.get(key).map(|&e| self.entries[e].bucket)
    }

    /// Records offered, sampled out or not.
    pub fn offered(&self) -> u64 {
        self.offered
    }

    /// Records that passed sampling and were counted.
    pub fn counted(&self) -> u64 {
        self.counted
    }

    /// The outcome of the latest bucket turnover, once; `None` if none happened since the last
    /// call. Call it after every offer, as the seed acts at every turnover: to keep memory
    /// bounded, a report nobody took is replaced by the next turnover's.
    pub fn take_report(&mut self) -> Option<BucketReport> {
        self.report.take()
    }

    /// Counts `key` without sampling: the seed's loop body for one record from its channel.
    /// Returns whether this record turned the bucket over.
    pub fn count_sampled(&mut self, key: &[u8], now: f64) -> bool {
        self.current_start.get_or_insert(now);
        self.counted += 1;
        self.in_bucket += 1;
        match self.index.get(key) {
            Some(&e) => {
                let entry = &mut self.entries[e];
                entry.count += 1;
                entry.in_current += 1;
            }
            None => {
                self.index.insert(key.into(), self.entries.len());
                self.entries.push(Entry {
                    key: key.into(),
                    count: 1,
                    bucket: self.current_bucket - 1,
                    in_current: 1,
                    in_previous: 0,
                });
            }
        }
        if self.in_bucket >= self.width {
            self.turn_over(now);
            true
        } else {
            false
        }
    }

    /// The seed's turnover, compacting `entries` in place so that survivors keep their order.
    fn turn_over(&mut self, now: f64) {
        let mut report = BucketReport::default();
        let mut kept = 0;
        for i in 0..self.entries.len() {
            let entry = &mut self.entries[i];
            // Survivors always have count ≥ 1 here (see the memory bound), so no underflow.
            entry.count -= 1;
            if entry.count + entry.bucket >= self.current_bucket {
                entry.in_previous = entry.in_current;
                entry.in_current = 0;
                if entry.count as f64 >= self.hot_threshold {
                    report.hot.push((entry.key.clone(), entry.count));
                }
                if kept != i {
                    self.entries.swap(kept, i);
                    if let Some(slot) = self.index.get_mut(&self.entries[kept].key) {
                        *slot = kept;
                    }
                }
                kept += 1;
            } else {
                self.index.remove(&entry.key);
                report.dropped.push(std::mem::take(&mut entry.key));
            }
        }
        self.entries.truncate(kept);
        self.current_bucket += 1;
        self.in_bucket = 0;
        self.previous_start = self.current_start;
        self.current_start = Some(now);
        self.report = Some(report);
    }

    fn rate_of(&self, e: usize, now: f64) -> f64 {
        let Some(start) = self.previous_start.or(self.current_start) else {
            return 0.0;
        };
        let elapsed = now - start;
        if elapsed <= 0.0 {
            return 0.0;
        }
        let entry = &self.entries[e];
        (entry.in_previous + entry.in_current) as f64
            / elapsed
            / (1.0 - self.config.sample_threshold)
    }
}

impl HeavyHitters for LossyCounter {
    /// Samples, then counts (see [`LossyCounter::count_sampled`]).
    fn offer(&mut self, key: &[u8], now: f64) {
        self.offered += 1;
        self.current_start.get_or_insert(now);
        let threshold = self.config.sample_threshold;
        if threshold > 0.0 && self.rng.gen::<f64>() < threshold {
            return;
        }
        self.count_sampled(key, now);
    }

    fn count(&self, key: &[u8]) -> Option<u64> {
        self.index.get(key).map(|&e| self.entries[e].count)
    }

    fn rate(&self, key: &[u8], now: f64) -> Option<f64> {
        self.index.get(key).map(|&e| self.rate_of(e, now))
    }

    /// Highest rate first; ties by higher count, then by the seed's entry order.
    fn top(&self, k: usize, now: f64) -> Vec<HotKey> {
        let mut order: Vec<(f64, usize)> = (0..self.entries.len())
            .map(|e| (self.rate_of(e, now), e))
            .collect();
        order.sort_by(|a, b| {
            b.0.total_cmp(&a.0)
                .then(self.entries[b.1].count.cmp(&self.entries[a.1].count))
                .then(a.1.cmp(&b.1))
        });
        order
            .into_iter()
            .take(k)
            .map(|(rate, e)| HotKey {
                key: self.entries[e].key.clone(),
                count: self.entries[e].count,
                error: 0,
                rate,
            })
            .collect()
    }

    fn len(&self) -> usize {
        self.entries.len()
    }
}
