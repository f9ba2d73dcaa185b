//! Space-Saving (Metwally, Agrawal, El Abbadi 2005) with the O(1) stream-summary, plus an
//! exponentially decayed rate per counter so that strategies can follow a shifting workload.
//!
//! The stream-summary keeps the `capacity` counters in *buckets* of equal count, the buckets in
//! a doubly linked list ordered by count. Counting one occurrence moves a counter from its bucket
//! to the next one (creating it when the next count is missing), so `offer` costs one hash lookup
//! plus a constant number of link updates, and the minimum counter — the one Space-Saving evicts —
//! is always the head of the first bucket. Both lists live in index-based arenas (`Vec` plus
//! `u32` indices): no `Rc`, no per-offer allocation once the sketch is full (see
//! [`SpaceSaving`]).
//!
//! Two choices keep an offer cheap when most records evict a counter (many distinct keys):
//! - **Keys are identified by a 64-bit hash** ([`SpaceSaving::key_hash`]). The index maps the
//!   hash to a counter index, so finding, evicting and replacing a key never compares or moves
//!   key bytes inside the map; the bytes live in a per-counter buffer, reused on eviction, only
//!   for reporting ([`HeavyHitters::top`]). Two keys with the same 64-bit hash would share one
//!   counter, which merges their *estimates* (about one pair among 4·10⁹ distinct keys) — a
//!   sketch only estimates, and routing never goes by this hash (the route table matches
//!   exact key bytes).
//! - **Forward decay** (Cormode et al. 2009): an occurrence at `t` adds the weight
//!   `2^((t − L)/half_life)` to its counter, for a landmark `L`, so a counter's mass never needs
//!   decaying on update; the rate at `now` is the mass times `2^(−(now − L)/half_life)`. The
//!   weight is computed once per distinct `now`, and the landmark moves forward (rescaling every
//!   counter, O(capacity)) once every `RENORMALISE_HALF_LIVES` (64) half-lives, before weights
//!   could overflow.
use std::hash::Hasher as _;

use hashbrown::HashTable;
use rustc_hash::FxHasher;

use super::{HeavyHitters, HotKey};
use crate::ParamError;

/// Marks the absence of a link in the arenas.
const NIL: u32 = u32::MAX;

/// Half-lives between two moves of the forward-decay landmark: weights stay below 2^64, far
/// from overflow, and the O(capacity) rescale is rare (every 21 minutes at a 20 s half-life).
const RENORMALISE_HALF_LIVES: f64 = 64.0;

/// One monitored key (its bytes are in `SpaceSaving::keys` at the same index).
#[derive(Debug, Clone)]
struct Counter {
    /// [`SpaceSaving::key_hash`] of the key.
    hash: u64,
    count: u64,
    /// Space-Saving's ε_i: the count the key inherited when it replaced the minimum counter.
    error: u64,
    /// Forward-decayed occurrence mass: Σ 2^((t − landmark)/half_life) over its occurrences.
    mass: f64,
    /// The bucket holding this counter.
    bucket: u32,
    /// Neighbours inside the bucket's list of counters.
    prev: u32,
    next: u32,
}

/// All counters sharing one count.
#[derive(Debug, Clone)]
struct Bucket {
    count: u64,
    /// First counter of the bucket; new and moved counters are pushed here.
    head: u32,
    /// Neighbouring buckets, `prev` with a lower count, `next` with a higher one.
    prev: u32,
    next: u32,
}

/// Space-Saving sketch over `capacity` counters with a decayed rate view.
///
/// **Counts** keep the classic guarantees for a stream of `N` offers: for every tracked key
/// `count − error ≤ true ≤ count`; every key whose true count exceeds `N / capacity` is
/// tracked; the counts add up to `N`. A new key arriving when all counters are taken replaces a
/// counter of minimum count `m` and starts at `m + 1` with `error = m`.
///
/// **Rates** follow the *current* workload: each counter also keeps an exponentially decayed
/// mass, `Σ 2^(−age/half_life)` over the key's occurrences, reported in records/s as
/// `mass·ln 2 / half_life` (so a key offered at a steady `r`/s reports ≈ `r` once a few
/// half-lives have passed). A key admitted by replacement starts its rate from its own first
/// occurrence: rates never inherit the evicted key's history, so they may underestimate a key
/// that was evicted and came back, never overestimate it.
///
/// Eviction uses only the classic minimum-count rule, so a key that *was* hot keeps its high
/// count (and its counter) for a long time after it cools down, while its rate decays towards
/// zero. That is deliberate: counts keep the guarantees above, and [`HeavyHitters::top`] ranks
/// by rate, so the lingering key falls out of the top as soon as its traffic does. The cost is
/// that a long-lived lingering key occupies one counter; size `capacity` for the hot set plus
/// the keys that were recently hot.
///
/// Memory is `capacity` counters, at most `capacity` buckets, an index of `capacity` hashes and
/// one key buffer per counter, whatever the number of distinct keys. Once full, offers do not
/// allocate (a key buffer grows only for a key longer than any it held before).
///
/// Time `now` is in seconds from any origin and should not decrease; a `now` below the latest
/// one offered is treated as that latest time (no time passes backwards).
#[derive(Debug, Clone)]
pub struct SpaceSaving {
    counters: Vec<Counter>,
    /// Key bytes per counter; a buffer is reused for the key replacing its owner.
    keys: Vec<Vec<u8>>,
    buckets: Vec<Bucket>,
    /// Buckets that were emptied and can be reused.
    free_buckets: Vec<u32>,
    /// Bucket with the lowest count (the eviction candidates), or `NIL` while empty.
    min_bucket: u32,
    /// Counter indices, found by their key's hash.
    index: HashTable<u32>,
    capacity: usize,
    half_life: f64,
    total: u64,
    /// Forward-decay landmark (seconds), or NaN before the first offer.
    landmark: f64,
    /// Latest `now` offered, and the weight `2^((latest − landmark)/half_life)` of an
    /// occurrence at that time.
    latest: f64,
    weight: f64,
    /// `1 / weight`: turns a mass into the decayed sum at `latest`.
    inv_weight: f64,
}

impl SpaceSaving {
    /// `capacity` counters (≥ 1, flag `sketch-capacity`); rates decay with a half-life of
    /// `half_life_secs` seconds (finite and > 0, flag `half-life`).
    pub fn new(capacity: usize, half_life_secs: f64) -> Result<Self, ParamError> {
        if capacity == 0 {
            return Err(ParamError::new(
                "sketch-capacity",
                "must be at least 1 counter",
            ));
        }
        // One arena slot per counter, so every index fits below NIL.
        if capacity >= NIL as usize / 2 {
            return Err(ParamError::new(
                "sketch-capacity",
                format!("{capacity} counters cannot be addressed"),
            ));
        }
        if !(half_life_secs.is_finite() && half_life_secs > 0.0) {
            return Err(ParamError::new(
                "half-life",
                format!("got {half_life_secs}, expected a finite number of seconds above 0"),
            ));
        }
        Ok(Self {
            counters: Vec::new(),
            keys: Vec::new(),
            buckets: Vec::new(),
            free_buckets: Vec::new(),
            min_bucket: NIL,
            index: HashTable::new(),
            capacity,
            half_life: half_life_secs,
            total: 0,
            landmark: f64::NAN,
            latest: f64::NEG_INFINITY,
            weight: 1.0,
            inv_weight: 1.0,
        })
    }

    /// The 64-bit hash that identifies `key` in the sketch (FxHash over the bytes).
    #[inline]
    pub fn key_hash(key: &[u8]) -> u64 {
        let mut hasher = FxHasher::default();
        hasher.write(key);
        hasher.finish()
    }

    /// Number of counters, the most keys ever tracked at once.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Records offered so far (the stream length `N`).
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Rate half-life in seconds.
    pub fn half_life(&self) -> f64 {
        self.half_life
    }

    /// Lowest count among the counters (0 while some counter is still unused): any untracked key
    /// occurred at most this many times, and a new key would enter with this count plus one.
    pub fn min_count(&self) -> u64 {
        if self.counters.len() < self.capacity || self.min_bucket == NIL {
            0
        } else {
            self.buckets[self.min_bucket as usize].count
        }
    }

    /// Upper bound of the overestimate in `count(key)`, or `None` if `key` is not tracked.
    pub fn error(&self, key: &[u8]) -> Option<u64> {
        self.find(key).map(|c| self.counters[c].error)
    }

    #[inline]
    fn find(&self, key: &[u8]) -> Option<usize> {
        let hash = Self::key_hash(key);
        let counters = &self.counters;
        self.index
            .find(hash, |&c| counters[c as usize].hash == hash)
            .map(|&c| c as usize)
    }

    /// Counts one occurrence of `key` at `now` and returns the key's rate (records/s) right
    /// after; what strategies call once per counted record (one hash, one index probe).
    pub fn offer_and_rate(&mut self, key: &[u8], now: f64) -> f64 {
        let c = self.count_one(key, now, 1.0);
        self.rate_of(c, now)
    }

    /// Counts one occurrence of `key` at `now` that stands for `weight` (> 0) records in the
    /// rate view: a caller that samples one record in `k` offers each sample with weight `k`,
    /// so rates stay in records/s. Counts (and so eviction) still grow by one per offer.
    pub fn offer_weighted(&mut self, key: &[u8], now: f64, weight: f64) {
        self.count_one(key, now, weight);
    }

    /// One offer; returns the counter now holding `key`.
    #[inline]
    fn count_one(&mut self, key: &[u8], now: f64, weight: f64) -> usize {
        self.total += 1;
        self.advance(now);
        let mass = self.weight * weight;
        let hash = Self::key_hash(key);
        let counters = &self.counters;
        let found = self
            .index
            .find(hash, |&c| counters[c as usize].hash == hash)
            .copied();
        match found {
            Some(c) => {
                let c = c as usize;
                self.counters[c].mass += mass;
                self.increment(c);
                c
            }
            None if self.counters.len() < self.capacity => self.admit(hash, key, mass),
            None => self.replace_min(hash, key, mass),
        }
    }

    /// Records/s per unit of decayed mass.
    fn rate_scale(&self) -> f64 {
        std::f64::consts::LN_2 / self.half_life
    }

    /// Moves the clock to `now` (never backwards): the weight of an occurrence at `now`, and
    /// the landmark once weights have grown by `RENORMALISE_HALF_LIVES` half-lives.
    #[inline]
    fn advance(&mut self, now: f64) {
        if now <= self.latest {
            return;
        }
        self.latest = now;
        if self.landmark.is_nan() {
            self.landmark = now;
        }
        let exponent = (now - self.landmark) / self.half_life;
        if exponent > RENORMALISE_HALF_LIVES {
            self.renormalise(now);
        } else {
            self.weight = exponent.exp2();
            self.inv_weight = 1.0 / self.weight;
        }
    }

    /// Moves the landmark to `now`, rescaling every mass to the new origin. A jump of many
    /// half-lives underflows old masses to 0, which is their decayed value.
    #[cold]
    fn renormalise(&mut self, now: f64) {
        let factor = (-(now - self.landmark) / self.half_life).exp2();
        for counter in &mut self.counters {
            counter.mass *= factor;
        }
        self.landmark = now;
        self.weight = 1.0;
        self.inv_weight = 1.0;
    }

    /// Rate of counter `c` at `now` (no earlier than the latest offer).
    fn rate_of(&self, c: usize, now: f64) -> f64 {
        self.counters[c].mass * self.decay_factor(now) * self.rate_scale()
    }

    /// `2^(−(t − landmark)/half_life)` for `t = max(now, latest)`: turns a mass into the
    /// decayed sum at `t`.
    fn decay_factor(&self, now: f64) -> f64 {
        if now <= self.latest {
            self.inv_weight
        } else {
            (-(now - self.landmark) / self.half_life).exp2()
        }
    }

    /// Takes a fresh counter for a key never seen while the sketch has room.
    fn admit(&mut self, hash: u64, key: &[u8], mass: f64) -> usize {
        let c = self.counters.len();
        self.counters.push(Counter {
            hash,
            count: 1,
            error: 0,
            mass,
            bucket: NIL,
            prev: NIL,
            next: NIL,
        });
        self.keys.push(key.to_vec());
        let counters = &self.counters;
        self.index
            .insert_unique(hash, c as u32, |&i| counters[i as usize].hash);
        let b = if self.min_bucket != NIL && self.buckets[self.min_bucket as usize].count == 1 {
            self.min_bucket
        } else {
            let b = self.new_bucket(1, NIL, self.min_bucket);
            self.min_bucket = b;
            b
        };
        self.push_counter(b, c);
        c
    }

    /// Space-Saving's eviction: `key` takes over a counter of minimum count `m`, with count
    /// `m + 1` and error `m`.
    fn replace_min(&mut self, hash: u64, key: &[u8], mass: f64) -> usize {
        let c = self.buckets[self.min_bucket as usize].head as usize;
        let old = self.counters[c].hash;
        let counters = &self.counters;
        if let Ok(entry) = self
            .index
            .find_entry(old, |&i| counters[i as usize].hash == old)
        {
            entry.remove();
        }
        let counter = &mut self.counters[c];
        counter.hash = hash;
        counter.error = counter.count;
        counter.mass = mass;
        let counters = &self.counters;
        self.index
            .insert_unique(hash, c as u32, |&i| counters[i as usize].hash);
        let buffer = &mut self.keys[c];
        buffer.clear();
        buffer.extend_from_slice(key);
        self.increment(c);
        c
    }

    /// Moves counter `c` from its bucket (count v) to the bucket of count v + 1.
    fn increment(&mut self, c: usize) {
        let b = self.counters[c].bucket as usize;
        let count = self.buckets[b].count + 1;
        self.counters[c].count = count;
        let next = self.buckets[b].next;
        if next != NIL && self.buckets[next as usize].count == count {
            self.unlink_counter(c);
            self.push_counter(next, c);
            self.release_if_empty(b);
        } else if self.buckets[b].head as usize == c && self.counters[c].next == NIL {
            // Alone in its bucket and no bucket at count + 1: the bucket itself moves up.
            self.buckets[b].count = count;
        } else {
            let nb = self.new_bucket(count, b as u32, next);
            self.unlink_counter(c);
            self.push_counter(nb, c);
        }
    }

    /// A bucket of `count` linked between `prev` and `next`, reusing an emptied slot if any.
    fn new_bucket(&mut self, count: u64, prev: u32, next: u32) -> u32 {
        let bucket = Bucket {
            count,
            head: NIL,
            prev,
            next,
        };
        let b = match self.free_buckets.pop() {
            Some(b) => {
                self.buckets[b as usize] = bucket;
                b
            }
            None => {
                self.buckets.push(bucket);
                (self.buckets.len() - 1) as u32
            }
        };
        if prev != NIL {
            self.buckets[prev as usize].next = b;
        }
        if next != NIL {
            self.buckets[next as usize].prev = b;
        }
        b
    }

    fn release_if_empty(&mut self, b: usize) {
        if self.buckets[b].head != NIL {
            return;
        }
        let (prev, next) = (self.buckets[b].prev, self.buckets[b].next);
        if prev != NIL {
            self.buckets[prev as usize].next = next;
        } else {
            self.min_bucket = next;
        }
        if next != NIL {
            self.buckets[next as usize].prev = prev;
        }
        self.free_buckets.push(b as u32);
    }

    fn push_counter(&mut self, b: u32, c: usize) {
        let head = self.buckets[b as usize].head;
        {
            let counter = &mut self.counters[c];
            counter.bucket = b;
            counter.prev = NIL;
            counter.next = head;
        }
        if head != NIL {
            self.counters[head as usize].prev = c as u32;
        }
        self.buckets[b as usize].head = c as u32;
    }

    fn unlink_counter(&mut self, c: usize) {
        let Counter {
            bucket, prev, next, ..
        } = self.counters[c];
        if prev != NIL {
            self.counters[prev as usize].next = next;
        } else {
            self.buckets[bucket as usize].head = next;
        }
        if next != NIL {
            self.counters[next as usize].prev = prev;
        }
    }

    /// Checks the stream-summary's structural invariants; for tests of this module.
    #[cfg(test)]
    fn check(&self) {
        let mut seen = 0;
        let mut b = self.min_bucket;
        let mut last = 0;
        let mut prev = NIL;
        while b != NIL {
            let bucket = &self.buckets[b as usize];
            assert!(bucket.count > last, "buckets strictly ascending");
            assert_eq!(bucket.prev, prev);
            assert_ne!(bucket.head, NIL, "no empty bucket stays linked");
            last = bucket.count;
            let mut c = bucket.head;
            let mut cprev = NIL;
            while c != NIL {
                let counter = &self.counters[c as usize];
                assert_eq!(counter.bucket, b);
                assert_eq!(counter.prev, cprev);
                assert_eq!(counter.count, bucket.count);
                assert_eq!(counter.hash, Self::key_hash(&self.keys[c as usize]));
                assert_eq!(self.find(&self.keys[c as usize]), Some(c as usize));
                seen += 1;
                cprev = c;
                c = counter.next;
            }
            prev = b;
            b = bucket.next;
        }
        assert_eq!(seen, self.counters.len());
        assert_eq!(self.index.len(), self.counters.len());
        assert_eq!(self.keys.len(), self.counters.len());
    }
}

impl HeavyHitters for SpaceSaving {
    fn offer(&mut self, key: &[u8], now: f64) {
        self.offer_weighted(key, now, 1.0);
    }

    fn count(&self, key: &[u8]) -> Option<u64> {
        self.find(key).map(|c| self.counters[c].count)
    }

    fn rate(&self, key: &[u8], now: f64) -> Option<f64> {
        self.find(key).map(|c| self.rate_of(c, now))
    }

    /// Highest rate first; ties by higher count, then by key bytes, so the order is total.
    /// Only the `k` reported keys are copied out.
    fn top(&self, k: usize, now: f64) -> Vec<HotKey> {
        let scale = self.decay_factor(now) * self.rate_scale();
        let mut all: Vec<(f64, usize)> = self
            .counters
            .iter()
            .enumerate()
            .map(|(c, counter)| (counter.mass * scale, c))
            .collect();
        let order = |a: &(f64, usize), b: &(f64, usize)| {
            b.0.total_cmp(&a.0)
                .then(self.counters[b.1].count.cmp(&self.counters[a.1].count))
                .then_with(|| self.keys[a.1].cmp(&self.keys[b.1]))
        };
        if k < all.len() {
            if k == 0 {
                return Vec::new();
            }
            all.select_nth_unstable_by(k - 1, order);
            all.truncate(k);
        }
        all.sort_unstable_by(order);
        all.into_iter()
            .map(|(rate, c)| HotKey {
                key: self.keys[c].as_slice().into(),
                count: self.counters[c].count,
                error: self.counters[c].error,
                rate,
            })
            .collect()
    }

    fn len(&self) -> usize {
        self.counters.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structure_stays_consistent_through_evictions() {
        let mut s = SpaceSaving::new(3, 1.0).unwrap();
        let keys: &[&[u8]] = &[b"a", b"b", b"a", b"c", b"dd", b"a", b"e", b"b", b"ff", b"c"];
        for (i, k) in keys.iter().enumerate() {
            s.offer(k, i as f64);
            s.check();
        }
        assert_eq!(s.len(), 3);
        assert_eq!(s.total(), keys.len() as u64);
    }

    #[test]
    fn keys_of_many_lengths_reuse_their_buffers() {
        let mut s = SpaceSaving::new(5, 1.0).unwrap();
        for i in 0..5_000usize {
            let key = vec![b'k'; 1 + (i * 7919) % 40];
            s.offer(&key, i as f64);
        }
        s.check();
        // Each buffer only ever grew to the longest key it held.
        assert!(s.keys.iter().all(|k| k.capacity() <= 40));
        assert_eq!(
            s.top(5, 5_000.0).iter().map(|h| h.count).sum::<u64>(),
            5_000
        );
    }

    #[test]
    fn buckets_are_recycled() {
        let mut s = SpaceSaving::new(4, 1.0).unwrap();
        for i in 0..10_000u32 {
            s.offer(&(i % 7).to_le_bytes(), 0.0);
        }
        s.check();
        assert!(s.buckets.len() <= s.capacity() + 1);
    }

    #[test]
    fn landmark_moves_without_changing_rates() {
        // A steady 10/s key over 1000 half-lives crosses the landmark many times; its rate
        // must stay the steady-state value and match the sum over its recent occurrences.
        let half_life = 0.5;
        let mut s = SpaceSaving::new(2, half_life).unwrap();
        let mut rate = 0.0;
        for i in 0..5_000 {
            rate = s.offer_and_rate(b"k", i as f64 / 10.0);
        }
        assert!(s.landmark > 400.0, "landmark {} never moved", s.landmark);
        let now = 4_999.0 / 10.0;
        let exact: f64 = (0..5_000)
            .map(|i| (-(now - i as f64 / 10.0) / half_life).exp2())
            .sum::<f64>()
            * std::f64::consts::LN_2
            / half_life;
        assert!((rate - exact).abs() < 1e-9 * exact, "{rate} vs {exact}");
        // A jump far beyond the weights' range decays everything away instead of overflowing.
        let later = s.offer_and_rate(b"k", 1e12);
        assert!(later.is_finite());
        assert_eq!(later, std::f64::consts::LN_2 / half_life);
    }
}
