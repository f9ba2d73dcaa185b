//! `keyshift`: our strategy. Hot keys found by a decayed Space-Saving sketch are moved between
//! partitions so that the most loaded partition stays close to the lower bound
//! `max(total / partitions, rate of the hottest key)`, with few moves.
//!
//! Per record ([`Strategy::route`]): one murmur2 of the key, which serves both the route-table
//! lookup ([`RouteTable::partition_hashed`], exact key match) and, for a key not routed, its
//! Kafka partition (the `fnv1a` hasher adds its own hash there); one partition counter
//! increment; and, for a sampled record only, one sketch update. The sketch counts every
//! record while records arrive below `sketch_updates_per_sec`; above it, a random share
//! (geometric gaps from the seed, one countdown per record), each sample weighted by the
//! inverse share. Its CPU time per second is then bounded whatever the record rate, while it
//! still sees as many records per half-life as an unsampled run at the budget rate, which is
//! what the accuracy of key rates depends on. Partition loads always count every record.
//! Everything else happens in a *round*, at most once per `rebalance_interval` of the caller's
//! clock, with bounded work:
//!
//! 1. **Load model.** Each partition's record count since the last round is folded into an
//!    exponentially decayed rate with the sketch's half-life, so the model includes cold traffic
//!    exactly (the strategy sees every record and the partition it chose). Rates are
//!    bias-corrected during the first half-lives, for partitions and keys alike, so they stay
//!    commensurate. With consumer feedback ([`Strategy::observe`]) a partition's load is
//!    divided by its consumer's relative capacity (heterogeneous consumers).
//! 2. **Relieve the maximum.** While the most loaded partition exceeds the target
//!    `bound · (1 + hysteresis)` and the round's migration budget lasts, move one of its tracked
//!    keys to the least loaded partition. Only moves that strictly lower the pair's maximum
//!    qualify; among them the key whose rate comes closest to the partition's excess over the
//!    bound without overshooting, else the one that leaves the lower pair maximum. Keys moved
//!    within `cooldown` stay put, including keys that went home (remembered for the cooldown,
//!    at most `max_moves` per round), so a key never ping-pongs on noise. When no single move
//!    helps (the partition's hottest key plus its immovable traffic is over the target), the
//!    hottest key is *relocated* to the partition with the least immovable load, whose
//!    movable keys are evacuated in the same round, if that lowers the maximum by a margin.
//! 3. **Go home.** Routed keys that dropped out of the hot set return to their hash partition
//!    (freeing the route table) when that keeps the home partition under the target.
//!
//! That is the *classic* variant (strategy `keyshift-classic`, kept for comparison). It moves
//! whenever a point estimate exceeds the target, so on a stationary load it keeps moving keys
//! on estimation noise (every move parks the key's records behind the old partition's
//! backlog), and it read a consumer held up by parked records as a slow one, which moved more
//! keys off it: a migration storm under a shifting load. The default *cost-aware* variant
//! (`keyshift`) changes the round:
//!
//! - **Settling.** Each partition also has a slow load estimate (`SLOW`× the half-life). A
//!   round uses it while the fast one agrees with it within `confidence` standard errors (the
//!   load has not changed), else the fast one; and a partition counts as over the target only
//!   when it exceeds it by `confidence` standard errors of the estimate used (one for the fast
//!   one; the confidence asked for grows from one while the slow estimate fills, so the hash
//!   placement's imbalance is fixed at once). The error of a decayed Poisson rate is known (`rate_std_error`), so low-rate noise
//!   moves nothing and moves stop once the load is balanced within what can be measured. No
//!   move happens before `WARMUP_RECORDS` records.
//! - **Cost of a move.** A move parks the key's records for the old partition's backlog
//!   (consumer feedback: lag ÷ throughput) plus the fence round trip, a commit and a poll; it
//!   is made only when the records it keeps off the most loaded partition outnumber the
//!   records it parks (`Plan::worth_it`).
//! - **Giant keys.** A key above a partition's fair share is pinned where it is and never
//!   moves while it stays a giant (of two giants on one partition the smaller leaves once).
//!   Its partition's other keys are moved off, then the partition is isolated: no further
//!   moves off it. [`KeyshiftStrategy::giants`] lists them.
//! - **Feedback that parking cannot fool.** A consumer counts as saturated (its pace is its
//!   capacity) only when it lags, processes less than is routed to it and works at its best
//!   pace so far; one held up by parked records idles below it. Consumers of unknown capacity
//!   are assumed as fast as the typical saturated one, never as slow as their load.
//! - **Storm back-off.** When a round's budget of moves in two half-lives comes with a
//!   growing backlog, rounds are spaced out and the budget cut, ×2 per storm up to ×64
//!   ([`KeyshiftStrategy::backoff`]); a calm window halves the back-off.
//!
//! Hysteresis and cooldown add to this; the decay makes the model follow a shifting workload
//! within a few half-lives. The per-record path is the same for both variants.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rustc_hash::FxHashMap;

use super::{key_hash, Move, PartitionFeedback, RouteTable, Strategy};
use crate::hash::Hasher;
use crate::sketch::{HeavyHitters, SpaceSaving};
use crate::ParamError;

/// Options of the `keyshift` strategy; [`Default`] gives the recommended values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KeyshiftConfig {
    /// Space-Saving counters (`sketch-capacity`): keys whose rate can be estimated.
    pub sketch_capacity: usize,
    /// Most sketch updates per second (`sketch-updates`, > 0; infinite counts every record).
    /// While records arrive faster than this, the sketch counts a random share of them
    /// (drawn from the strategy's seed) with each sample weighted by the inverse share, so key
    /// rates stay in records/s; partition loads always count every record. The accuracy of
    /// key rates depends on how many records per half-life the sketch sees, not on the share,
    /// so a budget well above the rates the balance tests run unsampled costs nothing in
    /// balance while it bounds the sketch's CPU time at any record rate.
    pub sketch_updates_per_sec: f64,
    /// Hottest keys considered for a move in each round (`candidates`, ≤ `sketch_capacity`).
    pub candidates: usize,
    /// Most keys routed away from their hash partition at once (`route-capacity`).
    pub route_capacity: usize,
    /// Half-life (seconds) of key rates and partition loads (`half-life`).
    pub half_life_secs: f64,
    /// Seconds between rebalance rounds (`rebalance-interval`).
    pub rebalance_interval_secs: f64,
    /// Tolerated excess over the lower bound before moving anything (`hysteresis`, ≥ 0).
    pub hysteresis: f64,
    /// Migration budget: most key moves per round (`max-moves`, ≥ 1).
    pub max_moves_per_round: usize,
    /// Seconds during which a key that moved is not moved again (`cooldown`, ≥ 0).
    pub cooldown_secs: f64,
    /// Seconds of traffic seen before the first round (`warmup`, ≥ 0).
    pub warmup_secs: f64,
    /// Use measured consumer throughput from [`Strategy::observe`] as partition capacity.
    pub use_feedback: bool,
    /// A partition counts as saturated (its throughput is its capacity) when its lag exceeds
    /// this many seconds of its throughput (`saturation-lag`, > 0).
    pub saturation_lag_secs: f64,
    /// Which algorithm decides the moves (`variant`): the migration-cost-aware one, or the
    /// classic one it replaced, kept for comparison (selected as the strategy `keyshift-classic`).
    pub variant: KeyshiftVariant,
    /// How sure a round must be that a partition is over the target before it moves a key
    /// off it, in standard errors of the partition's load estimate (`confidence`, ≥ 0;
    /// cost-aware variant only). The estimate of a partition that receives λ records/s has a
    /// standard error of about √(λ·ln 2 / (2·half-life)), so low-rate noise does not move keys.
    pub confidence: f64,
}

/// The two `keyshift` algorithms; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyshiftVariant {
    /// Moves only what the load estimates show with confidence, weighs each move's parking
    /// against its benefit, pins giant keys, and backs off from migration storms.
    #[default]
    CostAware,
    /// The first keyshift: moves whenever the point estimates exceed the target.
    Classic,
}

impl Default for KeyshiftConfig {
    fn default() -> Self {
        Self {
            sketch_capacity: 16384,
            sketch_updates_per_sec: 50_000.0,
            candidates: 4096,
            route_capacity: 4096,
            half_life_secs: 20.0,
            rebalance_interval_secs: 1.0,
            hysteresis: 0.01,
            max_moves_per_round: 16,
            cooldown_secs: 30.0,
            warmup_secs: 1.0,
            use_feedback: true,
            saturation_lag_secs: 1.0,
            variant: KeyshiftVariant::CostAware,
            confidence: 2.5,
        }
    }
}

fn positive(name: &'static str, v: f64) -> Result<(), ParamError> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(ParamError::new(
            name,
            format!("must be a finite number above 0, got {v}"),
        ))
    }
}

fn non_negative(name: &'static str, v: f64) -> Result<(), ParamError> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err(ParamError::new(
            name,
            format!("must be a finite number ≥ 0, got {v}"),
        ))
    }
}

impl KeyshiftConfig {
    /// The options `keyshift-classic` shipped with: the classic variant, which relies on a
    /// wider hysteresis (3 %) and a longer warm-up (5 s) to keep noise from moving keys.
    pub fn classic() -> Self {
        Self {
            variant: KeyshiftVariant::Classic,
            hysteresis: 0.03,
            warmup_secs: 5.0,
            ..Self::default()
        }
    }

    /// `self` for the classic variant: options left at their [`Default`] take the classic
    /// defaults ([`KeyshiftConfig::classic`]); options set to anything else are kept.
    pub fn as_classic(&self) -> Self {
        let (default, classic) = (Self::default(), Self::classic());
        Self {
            variant: KeyshiftVariant::Classic,
            hysteresis: if self.hysteresis == default.hysteresis {
                classic.hysteresis
            } else {
                self.hysteresis
            },
            warmup_secs: if self.warmup_secs == default.warmup_secs {
                classic.warmup_secs
            } else {
                self.warmup_secs
            },
            ..*self
        }
    }

    /// Checks every option; the error names the offending one.
    pub fn validate(&self) -> Result<(), ParamError> {
        if self.sketch_capacity == 0 {
            return Err(ParamError::new("sketch-capacity", "must be at least 1"));
        }
        if self.sketch_updates_per_sec.is_nan() || self.sketch_updates_per_sec <= 0.0 {
            return Err(ParamError::new(
                "sketch-updates",
                format!(
                    "must be above 0 updates per second (inf counts every record), got {}",
                    self.sketch_updates_per_sec
                ),
            ));
        }
        if self.candidates == 0 || self.candidates > self.sketch_capacity {
            return Err(ParamError::new(
                "candidates",
                format!(
                    "must be between 1 and sketch-capacity ({}), got {}",
                    self.sketch_capacity, self.candidates
                ),
            ));
        }
        if self.route_capacity == 0 {
            return Err(ParamError::new("route-capacity", "must be at least 1"));
        }
        positive("half-life", self.half_life_secs)?;
        positive("rebalance-interval", self.rebalance_interval_secs)?;
        non_negative("hysteresis", self.hysteresis)?;
        if self.max_moves_per_round == 0 {
            return Err(ParamError::new(
                "max-moves",
                "must be at least 1 move per round",
            ));
        }
        non_negative("cooldown", self.cooldown_secs)?;
        non_negative("warmup", self.warmup_secs)?;
        positive("saturation-lag", self.saturation_lag_secs)?;
        non_negative("confidence", self.confidence)?;
        Ok(())
    }
}

/// A tracked key during one round.
struct Candidate {
    key: Box<[u8]>,
    rate: f64,
    at: u32,
    home: u32,
    movable: bool,
}

/// The `keyshift` strategy; see the module documentation.
#[derive(Debug, Clone)]
pub struct KeyshiftStrategy {
    partitions: u32,
    hasher: Hasher,
    config: KeyshiftConfig,
    sketch: SpaceSaving,
    routes: RouteTable,
    /// Records routed to each partition since the last fold.
    counts: Vec<u64>,
    /// Decayed record mass per partition (same decay as the sketch's key rates).
    mass: Vec<f64>,
    /// Relative capacity per partition (mean 1); all 1 without feedback.
    capacity: Vec<f64>,
    /// Last measured throughput per partition and whether it was saturated.
    measured: Vec<Option<(f64, bool)>>,
    /// Keys sent home, and when: they have no route left to remember their cooldown by.
    went_home: FxHashMap<Box<[u8]>, f64>,
    /// Records left until the next one the sketch counts (1: the next record).
    until_sample: u32,
    /// Probability that a record is counted by the sketch, and the rate weight of a sample.
    sample_share: f64,
    sample_weight: f64,
    /// Draws the gaps between sketch samples.
    rng: ChaCha8Rng,
    start: Option<f64>,
    last_fold: f64,
    next_round: f64,
    moves: Vec<Move>,
    rounds: u64,
    /// Cost-aware variant: decayed record mass per partition with a [`SLOW`]× longer
    /// half-life, the precise estimate of a load that has not changed.
    slow_mass: Vec<f64>,
    /// Giant keys (rate above a partition's fair share): their pinned partition, and whether
    /// the other keys were already moved off it (done once, in the round that pinned it).
    giants: FxHashMap<Box<[u8]>, (u32, bool)>,
    /// Until when each partition may hold parked records of a key moved into it: the old
    /// partition's backlog at the move, plus the move's own latency, twice over.
    parking_until: Vec<f64>,
    /// Expected wait behind each partition's backlog (seconds), from consumer feedback.
    backlog_secs: Vec<f64>,
    /// Storm detection: per round (time, moves, longest backlog in seconds).
    recent: std::collections::VecDeque<(f64, usize, f64)>,
    /// Current back-off factor (1: none): rounds are this much further apart and the
    /// migration budget this much smaller.
    backoff: f64,
    /// Migration storms detected so far.
    storms: u64,
    /// Records routed until the last fold.
    seen: u64,
}

/// Records the cost-aware variant sees before its first move: below that, even a 1.4× hash
/// imbalance is not told apart from noise on ten partitions.
const WARMUP_RECORDS: u64 = 1000;

/// The slow load estimate's half-life, in half-lives of the fast one.
const SLOW: f64 = 8.0;
/// A giant stays a giant until its rate falls below this share of a partition's fair share,
/// so a key hovering at the threshold is not pinned and unpinned on noise.
const GIANT_EXIT: f64 = 0.8;
/// A move must relieve at least this many times the records it parks.
const COST_MARGIN: f64 = 1.0;
/// Seconds of delay every move adds to a parked record beyond the old partition's backlog:
/// the fence round trip plus a commit interval and a barrier poll (typical client settings).
const MOVE_LATENCY_SECS: f64 = 0.2;
/// Longest backlog a partition is credited with (a day): a stopped consumer's lag over a
/// throughput of 0 would otherwise be infinite.
const MAX_BACKLOG_SECS: f64 = 86_400.0;
/// Largest back-off factor.
const MAX_BACKOFF: f64 = 64.0;

impl KeyshiftStrategy {
    /// Validates `config` and builds the strategy for `partitions` (> 0) partitions; cold keys
    /// go where `hasher` puts them. Sketch samples are drawn from seed 0.
    pub fn new(
        partitions: u32,
        hasher: Hasher,
        config: &KeyshiftConfig,
    ) -> Result<Self, ParamError> {
        Self::with_seed(partitions, hasher, config, 0)
    }

    /// [`KeyshiftStrategy::new`] with the sketch's samples drawn from `seed`.
    pub fn with_seed(
        partitions: u32,
        hasher: Hasher,
        config: &KeyshiftConfig,
        seed: u64,
    ) -> Result<Self, ParamError> {
        config.validate()?;
        if partitions == 0 {
            return Err(ParamError::new("partitions", "must be at least 1"));
        }
        let n = partitions as usize;
        Ok(Self {
            partitions,
            hasher,
            config: *config,
            sketch: SpaceSaving::new(config.sketch_capacity, config.half_life_secs)?,
            routes: RouteTable::new(config.route_capacity)?,
            counts: vec![0; n],
            mass: vec![0.0; n],
            capacity: vec![1.0; n],
            measured: vec![None; n],
            went_home: FxHashMap::default(),
            until_sample: 1,
            sample_share: 1.0,
            sample_weight: 1.0,
            rng: ChaCha8Rng::seed_from_u64(seed),
            start: None,
            last_fold: 0.0,
            // The first record takes the slow path, which starts the clock.
            next_round: f64::NEG_INFINITY,
            moves: Vec::new(),
            rounds: 0,
            slow_mass: vec![0.0; n],
            giants: FxHashMap::default(),
            parking_until: vec![f64::NEG_INFINITY; n],
            backlog_secs: vec![0.0; n],
            recent: std::collections::VecDeque::new(),
            backoff: 1.0,
            storms: 0,
            seen: 0,
        })
    }

    /// Records until the next sketch sample: geometric with mean `1 / sample_share`, so every
    /// record is counted with probability `sample_share`, independently of its key and of
    /// any period in the workload (a fixed stride could alias with one).
    fn sample_gap(&mut self) -> u32 {
        if self.sample_share >= 1.0 {
            return 1;
        }
        let u: f64 = 1.0 - self.rng.gen::<f64>(); // in (0, 1]
        let gap = 1.0 + (u.ln() / (-self.sample_share).ln_1p()).floor();
        gap.min(f64::from(u32::MAX)) as u32
    }

    /// Counts the current record in the sketch and draws the next gap.
    #[inline(never)]
    fn sample(&mut self, key: &[u8], now: f64) {
        self.sketch.offer_weighted(key, now, self.sample_weight);
        self.until_sample = self.sample_gap();
    }

    /// Sets the sampling share for the next interval from the record rate of the last one
    /// (`records` over `dt` seconds), so the sketch sees at most its update budget.
    fn resample(&mut self, records: u64, dt: f64) {
        if dt <= 0.0 {
            return;
        }
        let rate = records as f64 / dt;
        let share = (self.config.sketch_updates_per_sec / rate).min(1.0);
        if share.is_finite() && share > 0.0 && share != self.sample_share {
            self.sample_share = share;
            self.sample_weight = 1.0 / share;
            self.until_sample = self.sample_gap();
        }
    }

    /// The share of records the sketch currently counts (1 below the update budget).
    pub fn sample_share(&self) -> f64 {
        self.sample_share
    }

    /// The slow path of [`Strategy::route`], taken once per round: starts the clock on the
    /// first record, otherwise runs the round that is due.
    #[cold]
    #[inline(never)]
    fn tick(&mut self, now: f64) {
        if self.start.is_none() {
            self.start = Some(now);
            self.last_fold = now;
            self.next_round = now
                + self
                    .config
                    .warmup_secs
                    .max(self.config.rebalance_interval_secs);
        } else {
            let records = self.counts.iter().sum();
            let dt = now - self.last_fold;
            self.round(now);
            self.resample(records, dt);
            self.next_round = now + self.config.rebalance_interval_secs * self.backoff;
        }
    }

    /// The hash partition of `key`, whose [`key_hash`] is `hash`: Kafka's partitioner reuses
    /// the hash the route lookup took.
    #[inline]
    fn home(&self, key: &[u8], hash: u32) -> u32 {
        match self.hasher {
            Hasher::Murmur2 => (hash & 0x7fff_ffff) % self.partitions,
            other => other.partition(key, self.partitions),
        }
    }

    /// The route table (routed hot keys).
    pub fn routes(&self) -> &RouteTable {
        &self.routes
    }

    /// The heavy-hitter sketch.
    pub fn sketch(&self) -> &SpaceSaving {
        &self.sketch
    }

    /// Rebalance rounds run so far.
    pub fn rounds(&self) -> u64 {
        self.rounds
    }

    /// The modelled load of each partition in records/s, as of the last round.
    pub fn partition_rates(&self, now: f64) -> Vec<f64> {
        let scale = self.rate_scale(now);
        self.mass.iter().map(|m| m * scale).collect()
    }

    /// Relative capacity per partition (mean 1) derived from consumer feedback.
    pub fn capacities(&self) -> &[f64] {
        &self.capacity
    }

    /// Records/s per unit of decayed mass at `now`, with the warm-up bias corrected: until a
    /// few half-lives have passed, the decayed mass of a steady stream is below its steady
    /// value by the factor `1 − 2^(−elapsed/half_life)`.
    fn rate_scale(&self, now: f64) -> f64 {
        self.rate_scale_for(now, self.config.half_life_secs)
    }

    /// [`Self::rate_scale`] for a mass decaying with half-life `h`.
    fn rate_scale_for(&self, now: f64, h: f64) -> f64 {
        let elapsed = self.start.map_or(0.0, |s| now - s);
        let filled = 1.0 - (-elapsed / h).exp2();
        if filled <= 1e-9 {
            return 0.0;
        }
        std::f64::consts::LN_2 / h / filled
    }

    fn fold(&mut self, now: f64) {
        let dt = now - self.last_fold;
        if dt <= 0.0 {
            return;
        }
        let h = self.config.half_life_secs;
        let decay = (-dt / h).exp2();
        let slow_decay = (-dt / (h * SLOW)).exp2();
        for ((m, s), c) in self
            .mass
            .iter_mut()
            .zip(self.slow_mass.iter_mut())
            .zip(self.counts.iter_mut())
        {
            // The window's records are treated as arriving at its midpoint.
            self.seen += *c;
            let n = *c as f64;
            *m = *m * decay + n * (-0.5 * dt / h).exp2();
            *s = *s * slow_decay + n * (-0.5 * dt / (h * SLOW)).exp2();
            *c = 0;
        }
        self.last_fold = now;
    }

    fn round(&mut self, now: f64) {
        self.rounds += 1;
        self.fold(now);
        match self.config.variant {
            KeyshiftVariant::Classic => self.round_classic(now),
            KeyshiftVariant::CostAware => self.round_cost_aware(now),
        }
    }

    /// The classic round: the point estimates against the target, no cost model.
    fn round_classic(&mut self, now: f64) {
        let scale = self.rate_scale(now);
        if scale == 0.0 {
            return;
        }
        let n = self.partitions as usize;
        let total_rate: f64 = self.mass.iter().map(|m| m * scale).sum();
        if total_rate <= 0.0 {
            return;
        }
        let cap = self.capacity.clone();
        let util: Vec<f64> = (0..n).map(|p| self.mass[p] * scale / cap[p]).collect();
        let cap_sum: f64 = cap.iter().sum();
        let cap_max = cap.iter().cloned().fold(0.0, f64::max);

        // Key rates get the same warm-up correction as partition loads.
        let key_scale = scale / (std::f64::consts::LN_2 / self.config.half_life_secs);
        let mut plan = self.plan(util, &cap, now, key_scale);
        let hottest = plan.cands.first().map_or(0.0, |c| c.rate);
        plan.bound = (total_rate / cap_sum).max(hottest / cap_max);
        plan.target = plan.bound * (1.0 + self.config.hysteresis);

        let budget = self.config.max_moves_per_round;
        while plan.moves.len() < budget {
            let (pmax, pmin) = extremes(&plan.util);
            if plan.util[pmax] <= plan.target || pmax == pmin {
                break;
            }
            if let Some(i) = plan.pick(pmax, pmin) {
                plan.shift(i, pmin);
            } else if !plan.relocate(pmax, budget) {
                break;
            }
        }
        let util = plan.util;
        let target = plan.target;
        let cands = plan.cands;
        for (i, from, to) in route_order(plan.moves, &cands) {
            let c = &cands[i];
            self.apply_move(&c.key, c.home, from, to, now);
            self.shift_mass(from as usize, to as usize, c.rate, now);
        }
        let remaining = budget.saturating_sub(self.moves_this_round(now));
        if remaining > 0 {
            self.send_home(&cands, util, &cap, target, remaining, key_scale, now);
        }
    }

    /// The cost-aware round (see the module documentation).
    fn round_cost_aware(&mut self, now: f64) {
        let h = self.config.half_life_secs;
        let scale = self.rate_scale(now);
        let slow_scale = self.rate_scale_for(now, h * SLOW);
        if scale == 0.0 || slow_scale == 0.0 || self.seen < WARMUP_RECORDS {
            return;
        }
        let n = self.partitions as usize;
        let total_rate: f64 = self.mass.iter().map(|m| m * scale).sum();
        if total_rate <= 0.0 {
            return;
        }
        let elapsed = self.start.map_or(0.0, |s| now - s);
        // While the slow estimate fills, the confidence asked for grows from one standard error
        // to `confidence`: the first imbalance (hash placement) is large and worth fixing on
        // young estimates, the fine balance of a settled load is not worth noise-driven moves.
        let ramp = (elapsed / (SLOW * h)).min(1.0);
        let z = 1.0 + (self.config.confidence - 1.0).max(0.0) * ramp;
        let z = z.min(self.config.confidence.max(1.0));
        let cap = self.capacity.clone();
        // Each partition's load: the slow estimate while the fast one agrees with it (the load
        // has not changed: more records, less noise), else the fast one; with the margin of
        // `confidence` standard errors of the estimate used.
        let mut util = Vec::with_capacity(n);
        let mut noise = Vec::with_capacity(n);
        for ((&m, &sm), &c) in self.mass.iter().zip(&self.slow_mass).zip(&cap) {
            let fast = m * scale;
            let slow = sm * slow_scale;
            let sd_fast = rate_std_error(fast, h, elapsed);
            let (rate, margin) = if (fast - slow).abs() <= z * sd_fast {
                (slow, z * rate_std_error(slow, h * SLOW, elapsed))
            } else {
                // The load changed: react on the fast estimate, one standard error sure.
                (fast, sd_fast)
            };
            util.push(rate / c);
            noise.push(margin / c);
        }
        let cap_sum: f64 = cap.iter().sum();
        let cap_max = cap.iter().cloned().fold(0.0, f64::max);
        let fair = total_rate / cap_sum;

        let key_scale = scale / (std::f64::consts::LN_2 / h);
        let mut plan = self.plan(util, &cap, now, key_scale);
        plan.noise = noise;
        plan.backlog = self.backlog_secs.clone();
        plan.lifetime = h / std::f64::consts::LN_2;
        plan.costed = true;

        // Giants: pinned where they are, except the smaller of two giants sharing a partition,
        // which may leave it once (to a partition without a giant: the least loaded).
        self.giants.retain(|key, _| {
            plan.cands
                .iter()
                .any(|c| &c.key == key && c.rate > GIANT_EXIT * fair)
        });
        let mut giant_on: Vec<Option<usize>> = vec![None; n];
        // A giant's partition whose other keys already left is never a source again: keys
        // that turn up there later are the cold traffic any placement has to put somewhere.
        let mut stuck = vec![false; n];
        for i in 0..plan.cands.len() {
            let c = &mut plan.cands[i];
            if c.rate <= fair && !self.giants.contains_key(&c.key) {
                continue;
            }
            let at = c.at as usize;
            // Candidates come hottest first, so a partition's first giant is its biggest.
            if giant_on[at].is_none() {
                giant_on[at] = Some(i);
                c.movable = false;
                let g = self.giants.entry(c.key.clone()).or_insert((c.at, false));
                if g.0 != c.at {
                    *g = (c.at, false);
                }
                stuck[at] = g.1;
                if !g.1 {
                    // Everything else on it queues behind a key that fills a partition:
                    // evacuate it without waiting for confidence.
                    plan.noise[at] = 0.0;
                }
            } else {
                self.giants.remove(&c.key);
            }
        }
        let hottest = plan.cands.first().map_or(0.0, |c| c.rate);
        plan.bound = fair.max(hottest / cap_max);
        plan.target = plan.bound * (1.0 + self.config.hysteresis);

        let budget =
            ((self.config.max_moves_per_round as f64 / self.backoff).floor() as usize).max(1);
        while plan.moves.len() < budget {
            let Some(src) = (0..n)
                .filter(|&p| !stuck[p])
                .max_by(|&a, &b| plan.util[a].total_cmp(&plan.util[b]))
            else {
                break;
            };
            if plan.util[src] - plan.noise[src] <= plan.target {
                break;
            }
            let (_, dst) = extremes(&plan.util);
            if dst == src {
                break;
            }
            if let Some(i) = plan.pick(src, dst) {
                plan.shift(i, dst);
            } else if !plan.relocate(src, budget) {
                stuck[src] = true;
            }
        }
        let util = plan.util;
        let target = plan.target;
        let cands = plan.cands;
        let planned = plan.moves.len();
        for (i, from, to) in route_order(plan.moves, &cands) {
            let c = &cands[i];
            self.apply_move(&c.key, c.home, from, to, now);
            self.shift_mass(from as usize, to as usize, c.rate, now);
            if let Some(g) = self.giants.get_mut(&c.key) {
                *g = (to, false);
            }
        }
        // A pinned giant's partition is isolated once a round with settled rate estimates
        // (a half-life in) moves nothing more off it.
        if elapsed >= h {
            for g in self.giants.values_mut() {
                if !self.moves.iter().any(|m| m.at == now && m.from == g.0) {
                    g.1 = true;
                }
            }
        }
        let remaining = budget.saturating_sub(planned);
        if remaining > 0 {
            self.send_home(&cands, util, &cap, target, remaining, key_scale, now);
        }
        self.watch_for_storms(now);
    }

    /// Migration-storm back-off. A storm is moves that do not cut what they were meant to:
    /// over the last two half-lives at least a round's budget of keys moved, yet the longest
    /// consumer backlog (from feedback) grew by over a second and 10 % — moves
    /// park records behind backlogs, the parked records and the backlogs they wait on grow,
    /// the imbalance seen grows, and more moves follow. Then rounds are spaced out and the
    /// budget cut (×2 each time, up to ×64); a window whose backlog did not grow halves the
    /// back-off again. Without feedback there are no backlogs to watch and no back-off.
    fn watch_for_storms(&mut self, now: f64) {
        let window = 2.0 * self.config.half_life_secs;
        let moves = self.moves_this_round(now);
        let backlog = self.backlog_secs.iter().cloned().fold(0.0, f64::max);
        self.recent.push_back((now, moves, backlog));
        while self
            .recent
            .front()
            .is_some_and(|&(at, _, _)| now - at > window)
        {
            self.recent.pop_front();
        }
        let Some(&(start, _, backlog_then)) = self.recent.front() else {
            return;
        };
        if now - start < 0.9 * window {
            return;
        }
        let moved: usize = self.recent.iter().map(|r| r.1).sum();
        let grew = backlog > 1.1 * backlog_then + 1.0;
        if grew && moved >= self.config.max_moves_per_round {
            self.backoff = (self.backoff * 2.0).min(MAX_BACKOFF);
            self.storms += 1;
            self.recent.clear();
        } else if !grew && backlog <= backlog_then && self.backoff > 1.0 {
            self.backoff = (self.backoff / 2.0).max(1.0);
            self.recent.clear();
        }
    }

    /// The candidates of a round (the sketch's hottest keys, rates in records/s) and the plan
    /// that starts from `util`.
    fn plan<'a>(&mut self, util: Vec<f64>, cap: &'a [f64], now: f64, key_scale: f64) -> Plan<'a> {
        let n = self.partitions as usize;
        let cooldown = self.config.cooldown_secs;
        self.went_home.retain(|_, &mut at| now - at < cooldown);
        let top = self.sketch.top(self.config.candidates, now);
        let mut plan = Plan {
            util,
            cap,
            on: vec![Vec::new(); n],
            cands: Vec::with_capacity(top.len()),
            free_routes: self.routes.capacity() - self.routes.len(),
            bound: 0.0,
            target: 0.0,
            moves: Vec::new(),
            noise: vec![0.0; n],
            backlog: vec![0.0; n],
            lifetime: 0.0,
            costed: false,
        };
        for hk in top {
            let home = self.hasher.partition(&hk.key, self.partitions);
            let route = self.routes.get(&hk.key);
            let at = route.map_or(home, |r| r.partition);
            let cooled = match route {
                Some(r) => now - r.since >= cooldown,
                None => self
                    .went_home
                    .get(&hk.key)
                    .is_none_or(|&at| now - at >= cooldown),
            };
            plan.on[at as usize].push(plan.cands.len());
            plan.cands.push(Candidate {
                rate: hk.rate * key_scale,
                key: hk.key,
                at,
                home,
                movable: cooled,
            });
        }
        plan
    }

    /// Giant keys (rate above a partition's fair share) as of the last round, with the
    /// partition each is pinned to; always empty for the classic variant.
    pub fn giants(&self) -> impl Iterator<Item = (&[u8], u32)> {
        self.giants.iter().map(|(k, &(p, _))| (&k[..], p))
    }

    /// Migration storms detected so far (cost-aware variant).
    pub fn storms(&self) -> u64 {
        self.storms
    }

    /// The current back-off factor: 1 normally, up to 64 after repeated migration storms.
    pub fn backoff(&self) -> f64 {
        self.backoff
    }

    /// The classic variant's capacities: a saturated consumer processes exactly its capacity;
    /// an unsaturated one at least what it processes now, which is taken as its capacity.
    fn observe_classic(&mut self, feedback: &[PartitionFeedback]) {
        if !self.config.use_feedback {
            return;
        }
        for f in feedback {
            let Some(slot) = self.measured.get_mut(f.partition as usize) else {
                continue;
            };
            if !(f.throughput_rps.is_finite() && f.throughput_rps > 0.0) {
                continue;
            }
            let saturated = f.lag as f64 > f.throughput_rps * self.config.saturation_lag_secs;
            *slot = Some(match *slot {
                // Unsaturated: capacity is at least the best throughput seen.
                Some((prev, false)) if !saturated => (prev.max(f.throughput_rps), false),
                _ => (f.throughput_rps, saturated),
            });
        }
        if !self.measured.iter().any(|m| matches!(m, Some((_, true)))) {
            // Nobody is saturated, so nobody's capacity is known: treat them as equal.
            self.capacity.iter_mut().for_each(|c| *c = 1.0);
            return;
        }
        let known: Vec<f64> = self.measured.iter().flatten().map(|m| m.0).collect();
        let mean = known.iter().sum::<f64>() / known.len() as f64;
        for (c, m) in self.capacity.iter_mut().zip(&self.measured) {
            *c = m.map_or(1.0, |(t, _)| (t / mean).max(1e-3));
        }
    }

    /// Moves decided at `now` (this round) so far.
    fn moves_this_round(&self, now: f64) -> usize {
        self.moves.iter().rev().take_while(|m| m.at == now).count()
    }

    /// Routed keys that left the hot set go home while that keeps home under the target;
    /// their rate is at most the coldest candidate's.
    #[allow(clippy::too_many_arguments)]
    fn send_home(
        &mut self,
        cands: &[Candidate],
        mut util: Vec<f64>,
        cap: &[f64],
        target: f64,
        budget: usize,
        key_scale: f64,
        now: f64,
    ) {
        let mut hot: FxHashMap<&[u8], ()> = FxHashMap::default();
        hot.reserve(cands.len());
        for c in cands {
            hot.insert(&c.key, ());
        }
        let floor = cands.last().map_or(0.0, |c| c.rate);
        // Keys at the edge of the candidate set drift in and out of it; sending them home each
        // time would churn. So a key still tracked by the sketch keeps its route until the
        // table runs short of room.
        let crowded = self.routes.len() * 4 > self.routes.capacity() * 3;
        let mut going_home: Vec<(Box<[u8]>, u32, u32, f64)> = Vec::new();
        for (key, route) in self.routes.iter() {
            if going_home.len() >= budget {
                break;
            }
            if hot.contains_key(key) || now - route.since < self.config.cooldown_secs {
                continue;
            }
            let home = self.hasher.partition(key, self.partitions) as usize;
            let tracked = self.sketch.rate(key, now);
            if tracked.is_some() && !crowded {
                continue;
            }
            let rate = tracked.map_or(floor, |r| (r * key_scale).min(floor));
            if util[home] + rate / cap[home] > target {
                continue;
            }
            let from = route.partition as usize;
            util[from] -= rate / cap[from];
            util[home] += rate / cap[home];
            going_home.push((key.into(), route.partition, home as u32, rate));
        }
        for (key, from, home, rate) in going_home {
            self.apply_move(&key, home, from, home, now);
            self.shift_mass(from as usize, home as usize, rate, now);
        }
    }

    /// Records a move of `key` from `from` to `to` in the route table and the move list.
    /// The plan counted free route slots, so a new route always fits.
    fn apply_move(&mut self, key: &[u8], home: u32, from: u32, to: u32, now: f64) {
        if to == home {
            self.routes.remove(key);
            self.went_home.insert(key.into(), now);
        } else {
            let inserted = self.routes.insert(key, to, now);
            debug_assert!(inserted.is_ok(), "the plan overfilled the route table");
        }
        let park = 2.0 * (self.backlog_secs[from as usize] + MOVE_LATENCY_SECS);
        let until = &mut self.parking_until[to as usize];
        *until = until.max(now + park.max(self.config.rebalance_interval_secs));
        self.moves.push(Move {
            key: key.into(),
            from,
            to,
            at: now,
        });
    }

    /// Moves `rate` records/s of modelled load from partition `from` to `to`, so that the model
    /// reflects a move at once instead of after the decay catches up.
    fn shift_mass(&mut self, from: usize, to: usize, rate: f64, now: f64) {
        let h = self.config.half_life_secs;
        let (fast, slow) = (
            self.rate_scale_for(now, h),
            self.rate_scale_for(now, h * SLOW),
        );
        for (mass, scale) in [(&mut self.mass, fast), (&mut self.slow_mass, slow)] {
            if scale > 0.0 {
                let m = (rate / scale).min(mass[from]);
                mass[from] -= m;
                mass[to] += m;
            }
        }
    }
}

/// One round's model: loads, candidate keys per partition, and the moves decided so far.
struct Plan<'a> {
    /// Load per partition divided by its relative capacity.
    util: Vec<f64>,
    cap: &'a [f64],
    /// Candidate indices per partition they are on.
    on: Vec<Vec<usize>>,
    cands: Vec<Candidate>,
    free_routes: usize,
    bound: f64,
    target: f64,
    /// (candidate, from, to) in decision order.
    moves: Vec<(usize, u32, u32)>,
    /// Margin of error of each partition's load (cost-aware variant; 0 for the classic one).
    noise: Vec<f64>,
    /// Expected wait behind each partition's backlog, seconds (cost-aware variant).
    backlog: Vec<f64>,
    /// Expected lifetime of a key's rate, seconds (cost-aware variant).
    lifetime: f64,
    /// Whether moves must pay for their parking (cost-aware variant).
    costed: bool,
}

impl Plan<'_> {
    fn can_move(&self, i: usize) -> bool {
        let c = &self.cands[i];
        // A key at home needs a free route slot to leave it.
        c.movable && c.rate > 0.0 && (c.at != c.home || self.free_routes > 0)
    }

    /// The key of `src` to move to `dst`: only keys whose move strictly lowers the pair's
    /// maximum qualify; among them the largest one not exceeding `src`'s excess over the
    /// bound (the best fit), else the one leaving the lowest pair maximum.
    fn pick(&self, src: usize, dst: usize) -> Option<usize> {
        let (u, cap) = (&self.util, self.cap);
        let excess = (u[src] - self.bound) * cap[src];
        let mut fit: Option<(usize, f64)> = None;
        let mut fallback: Option<(usize, f64)> = None;
        for &i in &self.on[src] {
            if !self.can_move(i) {
                continue;
            }
            let r = self.cands[i].rate;
            let dst_after = u[dst] + r / cap[dst];
            if dst_after >= u[src] {
                continue;
            }
            if self.costed && !self.worth_it(r, src, dst_after.max(u[src] - r / cap[src])) {
                continue;
            }
            if r <= excess && fit.is_none_or(|(_, best)| r > best) {
                fit = Some((i, r));
            }
            let pair_max = dst_after.max(u[src] - r / cap[src]);
            if fallback.is_none_or(|(_, best)| pair_max < best) {
                fallback = Some((i, pair_max));
            }
        }
        fit.or(fallback).map(|(i, _)| i)
    }

    /// The cost model of a move of a key with rate `r` off `src` that leaves the pair's maximum
    /// at `pair_max`. The move parks the key's records that arrive while `src` works off its
    /// backlog ahead of the fence, plus the fence round trip, a commit and a barrier poll
    /// (`r · (backlog + latency)` records). It keeps `u[src] − pair_max` records/s off the
    /// most loaded partition for as long as the key's rate lasts (the rate estimate's mean
    /// lifetime) and, on a backlogged partition, at least until that backlog is worked off.
    /// Worth it when the records relieved outnumber the records parked by [`COST_MARGIN`]:
    /// so a big key is not moved to shave a small excess off a partition with a backlog.
    fn worth_it(&self, r: f64, src: usize, pair_max: f64) -> bool {
        let backlog = self.backlog[src];
        let relieved = (self.util[src] - pair_max) * self.cap[src] * (self.lifetime + backlog);
        let parked = r * (backlog + MOVE_LATENCY_SECS);
        relieved >= COST_MARGIN * parked
    }

    /// Moves candidate `i` to `dst` in the model.
    fn shift(&mut self, i: usize, dst: usize) {
        let c = &mut self.cands[i];
        let src = c.at as usize;
        let r = c.rate;
        if c.at == c.home {
            self.free_routes -= 1;
        } else if dst as u32 == c.home {
            self.free_routes += 1;
        }
        c.at = dst as u32;
        c.movable = false;
        self.util[src] -= r / self.cap[src];
        self.util[dst] += r / self.cap[dst];
        self.on[src].retain(|&j| j != i);
        self.on[dst].push(i);
        self.moves.push((i, src as u32, dst as u32));
    }

    /// When no single move relieves `src`, typically because its hottest key plus the traffic
    /// that cannot move (cold keys, keys in cooldown) exceeds the target: move that key to the
    /// partition with the least immovable load and, in the same round, evacuate that
    /// partition's movable keys. Accepted only if the whole sequence fits the budget and
    /// lowers the maximum by a margin (half the hysteresis), so noise does not shuffle the
    /// hottest key around. Returns whether anything was planned.
    fn relocate(&mut self, src: usize, budget: usize) -> bool {
        let Some(&big) = self.on[src]
            .iter()
            .filter(|&&i| self.can_move(i))
            .max_by(|&&a, &&b| self.cands[a].rate.total_cmp(&self.cands[b].rate))
        else {
            return false;
        };
        let old_max = self.util[src];
        let margin = (0.5 * (self.target - self.bound)).max(self.noise[src]);
        let n = self.util.len();
        // Immovable load of every other partition, lowest first.
        let mut hosts: Vec<(usize, f64)> = (0..n)
            .filter(|&q| q != src)
            .map(|q| {
                let movable: f64 = self.on[q]
                    .iter()
                    .filter(|&&i| self.can_move(i))
                    .map(|&i| self.cands[i].rate / self.cap[q])
                    .sum();
                (q, self.util[q] - movable)
            })
            .collect();
        hosts.sort_by(|a, b| a.1.total_cmp(&b.1));
        let r = self.cands[big].rate;
        for &(q, fixed) in hosts.iter().take(4) {
            if fixed + r / self.cap[q] >= old_max - margin {
                break; // sorted: no later host does better
            }
            let saved = (
                self.util.clone(),
                self.on.clone(),
                self.free_routes,
                self.moves.len(),
                self.cands
                    .iter()
                    .map(|c| (c.at, c.movable))
                    .collect::<Vec<_>>(),
            );
            // Pin the big key so the evacuation never picks it back.
            self.shift(big, q);
            while self.util[q] > self.target && self.moves.len() < budget {
                let (_, pmin) = extremes(&self.util);
                match self.pick(q, pmin) {
                    Some(i) if pmin != q => self.shift(i, pmin),
                    _ => break,
                }
            }
            let new_max = self.util.iter().cloned().fold(f64::MIN, f64::max);
            if new_max < old_max - margin && self.moves.len() <= budget {
                // Evacuations first, then the big key, so the host is never overloaded.
                let first = saved.3;
                self.moves[first..].rotate_left(1);
                return true;
            }
            let (util, on, free, len, state) = saved;
            self.util = util;
            self.on = on;
            self.free_routes = free;
            self.moves.truncate(len);
            for (c, (at, movable)) in self.cands.iter_mut().zip(state) {
                c.at = at;
                c.movable = movable;
            }
        }
        false
    }
}

/// A round's planned moves in the order they are applied: moves home first, since they free
/// the route-table slots that the plan counted on for the others (a relocation puts its
/// evacuations before the move that may free a slot), otherwise in decision order. All moves
/// of a round happen at the same instant and concern distinct keys.
fn route_order(mut moves: Vec<(usize, u32, u32)>, cands: &[Candidate]) -> Vec<(usize, u32, u32)> {
    moves.sort_by_key(|&(i, _, to)| to != cands[i].home);
    moves
}

/// Standard error (records/s) of a decayed rate estimate of `rate` records/s with half-life
/// `h`, `elapsed` seconds after counting began (bias-corrected as [`KeyshiftStrategy`] does).
/// Poisson arrivals: the decayed mass has variance `λ(1 − e^(−2kT)) / 2k` with `k = ln 2 / h`,
/// and the estimate is the mass times `k / (1 − e^(−kT))`.
fn rate_std_error(rate: f64, h: f64, elapsed: f64) -> f64 {
    let k = std::f64::consts::LN_2 / h;
    let filled = 1.0 - (-k * elapsed).exp();
    if filled <= 1e-9 {
        return f64::INFINITY;
    }
    let spread = 1.0 - (-2.0 * k * elapsed).exp();
    (rate.max(0.0) * k * spread / 2.0).sqrt() / filled
}

/// Indices of the highest and lowest value (first of equals, so ties are deterministic).
fn extremes(values: &[f64]) -> (usize, usize) {
    let (mut hi, mut lo) = (0, 0);
    for (i, &v) in values.iter().enumerate() {
        if v > values[hi] {
            hi = i;
        }
        if v < values[lo] {
            lo = i;
        }
    }
    (hi, lo)
}

impl Strategy for KeyshiftStrategy {
    fn name(&self) -> &'static str {
        match self.config.variant {
            KeyshiftVariant::CostAware => "keyshift",
            KeyshiftVariant::Classic => "keyshift-classic",
        }
    }

    fn preserves_order(&self) -> bool {
        true
    }

    #[inline]
    fn route(&mut self, key: &[u8], now: f64) -> u32 {
        if now >= self.next_round {
            self.tick(now);
        }
        self.until_sample -= 1;
        if self.until_sample == 0 {
            self.sample(key, now);
        }
        let hash = key_hash(key);
        let p = match self.routes.partition_hashed(key, hash) {
            Some(p) => p,
            None => self.home(key, hash),
        };
        self.counts[p as usize] += 1;
        p
    }

    fn drain_moves(&mut self) -> Vec<Move> {
        std::mem::take(&mut self.moves)
    }

    /// Another producer's records join this model as if routed here: its per-partition counts
    /// join the window's counts, its busiest keys the sketch with their record counts as
    /// weights (the sketch's own samples are weighted the same way).
    fn absorb(&mut self, partitions: &[u64], keys: &[(Box<[u8]>, u64)], now: f64) {
        if now >= self.next_round {
            self.tick(now);
        }
        for (c, n) in self.counts.iter_mut().zip(partitions) {
            *c += n;
        }
        for (key, n) in keys {
            if *n > 0 {
                self.sketch.offer_weighted(key, now, *n as f64);
            }
        }
    }

    /// Follows a placement decided elsewhere in the route table; the load model catches up
    /// through its decay, as after any move it did not plan (a full table keeps the key home).
    fn adopt(&mut self, key: &[u8], partition: u32, now: f64) {
        if partition >= self.partitions {
            return;
        }
        let home = self.home(key, key_hash(key));
        if partition == home {
            self.routes.remove(key);
        } else {
            let _ = self.routes.insert(key, partition, now);
        }
    }

    /// Derives each partition's relative capacity from its consumer's throughput: a saturated
    /// consumer (lag above `saturation_lag` seconds of work) processes exactly its capacity; an
    /// unsaturated one at least what it processes now. The cost-aware variant also keeps each
    /// partition's backlog in seconds (the wait a moved key's records park for), assumes an
    /// unsaturated consumer is as fast as the typical saturated one (its throughput is only
    /// its load), and does not read a partition that just received a moved key as slow: its
    /// lag is parked records, which it reports as evidence of a migration storm instead.
    fn observe(&mut self, feedback: &[PartitionFeedback], now: f64) {
        if self.config.variant == KeyshiftVariant::Classic {
            self.observe_classic(feedback);
            return;
        }
        for f in feedback {
            let p = f.partition as usize;
            if p >= self.measured.len() {
                continue;
            }
            let t = f.throughput_rps;
            if !(t.is_finite() && t >= 0.0) {
                continue;
            }
            self.backlog_secs[p] = if f.lag == 0 {
                0.0
            } else {
                (f.lag as f64 / t.max(1e-3)).min(MAX_BACKLOG_SECS)
            };
            if !self.config.use_feedback || t == 0.0 {
                continue;
            }
            // Saturated: a backlog of over `saturation_lag` seconds of work, processing slower
            // than records are routed here, and at the consumer's best pace so far. Lag alone
            // misleads: a parked record holds the partition's commit back, so every record
            // processed after it counts as lag while the consumer idles; and a consumer
            // that keeps up with its partition only shows its load.
            let routed = self.mass[p] * self.rate_scale(self.last_fold);
            let best = self.measured[p].map_or(0.0, |m| m.0);
            let saturated = f.lag as f64 > t * self.config.saturation_lag_secs
                && t < 0.95 * routed
                && t >= 0.9 * best;
            if saturated && now < self.parking_until[p] {
                continue;
            }
            // A saturated consumer's pace is its capacity; the best pace seen is a lower
            // bound of it in any case.
            let slot = &mut self.measured[p];
            *slot = Some(match *slot {
                Some((c, known)) => (c.max(t), known || saturated),
                None => (t, saturated),
            });
        }
        if !self.config.use_feedback {
            return;
        }
        let mut saturated: Vec<f64> = self
            .measured
            .iter()
            .flatten()
            .filter(|m| m.1)
            .map(|m| m.0)
            .collect();
        if saturated.is_empty() {
            self.capacity.iter_mut().for_each(|c| *c = 1.0);
            return;
        }
        saturated.sort_by(f64::total_cmp);
        let typical = saturated[saturated.len() / 2];
        let known: Vec<f64> = self
            .measured
            .iter()
            .map(|m| match *m {
                Some((t, true)) => t,
                Some((t, false)) => t.max(typical),
                None => typical,
            })
            .collect();
        let mean = known.iter().sum::<f64>() / known.len() as f64;
        for (c, k) in self.capacity.iter_mut().zip(known) {
            *c = (k / mean).max(1e-3);
        }
    }
}
