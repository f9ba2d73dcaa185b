//! `slops`: the SLOPS seed's partitioner (`SLOPSProducer`), cleaned of its bugs, with options
//! that reproduce its branches.
//!
//! - **Detection.** The seed's sampled Lossy Counting ([`LossyCounter`]). At each bucket
//!   turnover, keys it reports hot and does not route yet get a partition by *power of two
//!   choices*: the less loaded of two uniformly drawn partitions, load being the sum of the
//!   tracked counts of the hot keys on a partition (`count.go`, `MapToPartition`). Keys it
//!   drops leave the table and go back to their hash partition.
//! - **Rebalance** (`partitionmap.go` / `metadata.go`, `Rebalance`), every `swap_interval`
//!   seconds: partitions above the average load give, from the keys whose count is at most
//!   their excess, each key to the below-average partition that brings it closest to the
//!   average, skipping a move that would not reduce the difference between the two.
//!
//! Cleaned-up bugs of the seed (the behaviour the seed *meant*):
//! - Its skip test `src − dst < |src − dst + 2·count|` is always true for a positive count, so
//!   its Rebalance never moves a key; here the test is `src − dst ≤ |src − dst − 2·count|`
//!   (the move would not shrink the gap). [`SlopsConfig::seed_skip_rule`] restores the literal
//!   test for a bug-for-bug comparison.
//! - It measured the best fit as `|dst − avg − count|` and read loads from a store its own moves
//!   did not update (moves went to a backup store); here the fit is `|dst + count − avg|` and
//!   loads are updated after every move.
//! - Its partition map was unbounded; here it is a [`RouteTable`] of `route_capacity` keys
//!   (a new hot key finding it full stays on its hash partition).
//! - Its P2C drew from a time-seeded `math/rand`; here a `ChaCha8Rng` from the strategy seed.
//!
//! Which option set reproduces which seed branch (see the `SlopsConfig` presets):
//!
//! | branch                | `tolerance` | `continuous` | `cooldown_secs` |
//! |-----------------------|-------------|--------------|-----------------|
//! | `main`                | `None`      | `false`      | 0               |
//! | `main-tolerance`      | `Some(t)`   | `false`      | 0               |
//! | `state-tracking`      | `None`      | `true`       | > 0             |
//! | `state-tracking-tol`  | `Some(t)`   | `true`       | > 0             |
//!
//! Unlike `keyshift`, SLOPS only sees hot-key counts: cold traffic is invisible to its load
//! model, and counts are cumulative (a key's history weighs as much as its present).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{Move, RouteTable, Strategy};
use crate::hash::Hasher;
use crate::sketch::{BucketReport, HeavyHitters, LossyConfig, LossyCounter};
use crate::ParamError;

/// Options of the `slops` strategy; [`Default`] is the seed's `main` branch with the seed's
/// configuration (`k8s/producer/configmap.yaml`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SlopsConfig {
    /// Lossy counting ε (`epsilon`); bucket width ⌊1/ε⌋ counted records.
    pub epsilon: f64,
    /// Lossy counting support (`support`).
    pub support: f64,
    /// Share of records *not* counted (`sample-threshold`; the seed's draw-≥-threshold rule).
    pub sample_threshold: f64,
    /// Seconds between rebalances (`swap-interval`; the seed's `update_interval`, 10 s).
    pub swap_interval_secs: f64,
    /// Skip a rebalance while max/mean − 1 of the tracked load is within this (`tolerance`).
    pub tolerance: Option<f64>,
    /// State-tracking: check for a rebalance on every record, at most once per
    /// `check_interval_secs`, instead of every `swap_interval_secs`.
    pub continuous: bool,
    /// Minimum seconds between two continuous rebalances (`check-interval`).
    pub check_interval_secs: f64,
    /// Seconds during which a key that was placed or moved is not moved again (`cooldown`).
    pub cooldown_secs: f64,
    /// Most hot keys in the partition map (`route-capacity`).
    pub route_capacity: usize,
    /// Use the seed's literal skip test, under which Rebalance never moves a key.
    pub seed_skip_rule: bool,
}

impl Default for SlopsConfig {
    fn default() -> Self {
        Self::main()
    }
}

impl SlopsConfig {
    /// The seed's `main` branch: rebalance every 10 s, no tolerance, no cooldown.
    pub fn main() -> Self {
        let lossy = LossyConfig::default();
        Self {
            epsilon: lossy.epsilon,
            support: lossy.support,
            sample_threshold: lossy.sample_threshold,
            swap_interval_secs: 10.0,
            tolerance: None,
            continuous: false,
            check_interval_secs: 0.1,
            cooldown_secs: 0.0,
            route_capacity: 4096,
            seed_skip_rule: false,
        }
    }

    /// `main-tolerance`: `main`, skipping rebalances while imbalance is within 10 % (the seed's
    /// `chg_percent: 10`).
    pub fn main_tolerance() -> Self {
        Self {
            tolerance: Some(0.10),
            ..Self::main()
        }
    }

    /// `state-tracking`: rebalance continuously (every 0.1 s at most), ignoring keys moved in
    /// the last 10 s.
    pub fn state_tracking() -> Self {
        Self {
            continuous: true,
            cooldown_secs: 10.0,
            ..Self::main()
        }
    }

    /// `state-tracking-tol`: `state-tracking` with the 10 % tolerance.
    pub fn state_tracking_tol() -> Self {
        Self {
            tolerance: Some(0.10),
            ..Self::state_tracking()
        }
    }

    /// The lossy counter's configuration, its sampling seeded by `seed`.
    pub fn lossy(&self, seed: u64) -> LossyConfig {
        LossyConfig {
            epsilon: self.epsilon,
            support: self.support,
            sample_threshold: self.sample_threshold,
            seed,
        }
    }

    /// Checks every option; the error names the offending one.
    pub fn validate(&self) -> Result<(), ParamError> {
        self.lossy(0).validate()?;
        let positive = |name: &'static str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(ParamError::new(
                    name,
                    format!("must be a finite number of seconds above 0, got {v}"),
                ))
            }
        };
        positive("swap-interval", self.swap_interval_secs)?;
        positive("check-interval", self.check_interval_secs)?;
        if !(self.cooldown_secs.is_finite() && self.cooldown_secs >= 0.0) {
            return Err(ParamError::new(
                "cooldown",
                format!(
                    "must be a finite number of seconds ≥ 0, got {}",
                    self.cooldown_secs
                ),
            ));
        }
        if let Some(t) = self.tolerance {
            if !(t.is_finite() && t >= 0.0) {
                return Err(ParamError::new(
                    "tolerance",
                    format!("must be a finite imbalance ≥ 0 (0.1 = 10 %), got {t}"),
                ));
            }
        }
        if self.route_capacity == 0 {
            return Err(ParamError::new("route-capacity", "must be at least 1"));
        }
        Ok(())
    }
}

/// The `slops` strategy; see the module documentation.
#[derive(Debug, Clone)]
pub struct SlopsStrategy {
    partitions: u32,
    hasher: Hasher,
    config: SlopsConfig,
    lossy: LossyCounter,
    routes: RouteTable,
    rng: ChaCha8Rng,
    next_check: Option<f64>,
    moves: Vec<Move>,
    rebalances: u64,
}

/// A hot key as Rebalance sees it.
struct Tracked {
    key: Box<[u8]>,
    at: u32,
    count: f64,
    since: f64,
}

impl SlopsStrategy {
    /// Validates `config` and builds the strategy for `partitions` (> 0) partitions; `seed`
    /// drives the sampling and the two random choices.
    pub fn new(
        partitions: u32,
        hasher: Hasher,
        config: &SlopsConfig,
        seed: u64,
    ) -> Result<Self, ParamError> {
        config.validate()?;
        if partitions == 0 {
            return Err(ParamError::new("partitions", "must be at least 1"));
        }
        Ok(Self {
            partitions,
            hasher,
            config: *config,
            lossy: LossyCounter::new(config.lossy(seed))?,
            routes: RouteTable::new(config.route_capacity)?,
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0x5105_5105_5105_5105),
            next_check: None,
            moves: Vec::new(),
            rebalances: 0,
        })
    }

    /// The partition map of hot keys (including hot keys that sit on their hash partition).
    pub fn routes(&self) -> &RouteTable {
        &self.routes
    }

    /// Rebalances run so far (skipped ones, under `tolerance`, included).
    pub fn rebalances(&self) -> u64 {
        self.rebalances
    }

    /// Tracked hot-key load per partition: the sum of their lossy counts.
    pub fn partition_loads(&self) -> Vec<f64> {
        let mut loads = vec![0.0; self.partitions as usize];
        for (key, route) in self.routes.iter() {
            loads[route.partition as usize] += self.lossy.count(key).unwrap_or(0) as f64;
        }
        loads
    }

    fn apply_report(&mut self, report: BucketReport, now: f64) {
        for key in report.dropped {
            if let Some(route) = self.routes.remove(&key) {
                let home = self.hasher.partition(&key, self.partitions);
                if route.partition != home {
                    self.moves.push(Move {
                        key,
                        from: route.partition,
                        to: home,
                        at: now,
                    });
                }
            }
        }
        let mut loads: Option<Vec<f64>> = None;
        for (key, count) in report.hot {
            if self.routes.get(&key).is_some() || self.routes.is_full() {
                continue;
            }
            let loads = loads.get_or_insert_with(|| self.partition_loads());
            let p1 = self.rng.gen_range(0..self.partitions);
            let p2 = self.rng.gen_range(0..self.partitions);
            let p = if loads[p1 as usize] > loads[p2 as usize] {
                p2
            } else {
                p1
            };
            loads[p as usize] += count as f64;
            // Cannot fail: the table was checked for room above.
            let _ = self.routes.insert(&key, p, now);
            let home = self.hasher.partition(&key, self.partitions);
            if p != home {
                self.moves.push(Move {
                    key,
                    from: home,
                    to: p,
                    at: now,
                });
            }
        }
    }

    fn rebalance(&mut self, now: f64) {
        self.rebalances += 1;
        let n = self.partitions as usize;
        let mut tracked: Vec<Tracked> = self
            .routes
            .iter()
            .map(|(key, route)| Tracked {
                key: key.into(),
                at: route.partition,
                count: self.lossy.count(key).unwrap_or(0) as f64,
                since: route.since,
            })
            .collect();
        // The seed walked its entries in insertion order; key order is as arbitrary and
        // deterministic, unlike the hash map's.
        tracked.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        let mut loads = vec![0.0; n];
        for t in &tracked {
            loads[t.at as usize] += t.count;
        }
        let total: f64 = loads.iter().sum();
        if total <= 0.0 {
            return;
        }
        let avg = total / n as f64;
        if let Some(tol) = self.config.tolerance {
            let max = loads.iter().cloned().fold(0.0, f64::max);
            if max / avg - 1.0 <= tol {
                return;
            }
        }
        let below: Vec<usize> = (0..n).filter(|&p| loads[p] < avg).collect();
        let above: Vec<usize> = (0..n).filter(|&p| loads[p] > avg).collect();
        for src in above {
            let excess = loads[src] - avg;
            for t in tracked.iter_mut() {
                if t.at as usize != src
                    || t.count > excess
                    || t.count <= 0.0
                    || now - t.since < self.config.cooldown_secs
                {
                    continue;
                }
                let mut best: Option<(usize, f64)> = None;
                for &dst in &below {
                    let (s, d) = (loads[src], loads[dst]);
                    let skip = s < d
                        || if self.config.seed_skip_rule {
                            s - d < (s - d + 2.0 * t.count).abs()
                        } else {
                            s - d <= (s - d - 2.0 * t.count).abs()
                        };
                    if skip {
                        continue;
                    }
                    let delta = (d + t.count - avg).abs();
                    if best.is_none_or(|(_, b)| delta < b) {
                        best = Some((dst, delta));
                    }
                }
                let Some((dst, _)) = best else {
                    continue;
                };
                loads[src] -= t.count;
                loads[dst] += t.count;
                // The key is in the table already, so this only updates its route.
                let _ = self.routes.insert(&t.key, dst as u32, now);
                self.moves.push(Move {
                    key: t.key.clone(),
                    from: src as u32,
                    to: dst as u32,
                    at: now,
                });
                t.at = dst as u32;
                t.since = now;
            }
        }
    }
}

impl Strategy for SlopsStrategy {
    fn name(&self) -> &'static str {
        "slops"
    }

    fn preserves_order(&self) -> bool {
        true
    }

    fn route(&mut self, key: &[u8], now: f64) -> u32 {
        self.lossy.offer(key, now);
        if let Some(report) = self.lossy.take_report() {
            self.apply_report(report, now);
        }
        let interval = if self.config.continuous {
            self.config.check_interval_secs
        } else {
            self.config.swap_interval_secs
        };
        match self.next_check {
            None => self.next_check = Some(now + interval),
            Some(t) if now >= t => {
                self.rebalance(now);
                self.next_check = Some(now + interval);
            }
            Some(_) => {}
        }
        match self.routes.partition(key) {
            Some(p) => p,
            None => self.hasher.partition(key, self.partitions),
        }
    }

    fn drain_moves(&mut self) -> Vec<Move> {
        std::mem::take(&mut self.moves)
    }

    fn adopt(&mut self, key: &[u8], partition: u32, now: f64) {
        if partition >= self.partitions {
            return;
        }
        if partition == self.hasher.partition(key, self.partitions) {
            self.routes.remove(key);
        } else {
            let _ = self.routes.insert(key, partition, now);
        }
    }
}
