//! Space-Saving (Metwally, Agrawal, El Abbadi 2005) with the O(1) stream-summary, plus an
//! exponentially decayed rate per counter so that strategies can follow a shifting workload.
//!
//! The stream-summary keeps the `capacity` counters in *buckets* of equal count, the buckets in
//! a doubly linked list ordered by count. Counting one occurrence moves a counter from its bucket
//! to the next one (creating it when the next count is missing), so `offer` costs one hash lookup
//! plus a constant number of link updates, and the minimum counter — the one Space-Saving evicts —
//! is always the head of the first bucket. Both lists live in index-based arenas (`Vec` plus
//! indices): no `Rc`, no per-offer allocation once the sketch is full (see [`SpaceSaving`]).
use rustc_hash::FxHashMap;

use super::{HeavyHitters, HotKey};
use crate::ParamError;

/// Marks the absence of a link in the arenas.
const NIL: usize = usize::MAX;

/// Boxed map keys kept for reuse when an evicted key and its replacement differ in length:
/// enough for every length of realistic key sets, few enough to scan on each such eviction.
const SPARE_KEYS: usize = 16;

/// One monitored key.
#[derive(Debug, Clone)]
struct Counter {
    /// The key; a `Vec` so that an evicted counter's buffer is reused for the key replacing it.
    key: Vec<u8>,
    count: u64,
    /// Space-Saving's ε_i: the count the key inherited when it replaced the minimum counter.
    error: u64,
    /// The bucket holding this counter.
    bucket: usize,
    /// Neighbours inside the bucket's list of counters.
    prev: usize,
    next: usize,
    /// Decayed occurrence mass as of `rate_at`: Σ 2^(−age/half_life) over the key's occurrences.
    decayed: f64,
    rate_at: f64,
}

/// All counters sharing one count.
#[derive(Debug, Clone)]
struct Bucket {
    count: u64,
    /// First counter of the bucket; new and moved counters are pushed here.
    head: usize,
    /// Neighbouring buckets, `prev` with a lower count, `next` with a higher one.
    prev: usize,
    next: usize,
}

/// Space-Saving sketch over `capacity` counters with a decayed rate view.
///
/// **Counts** keep the classic guarantees for a stream of `N` offers: for every tracked key
/// `count − error ≤ true ≤ count`; every key whose true count exceeds `N / capacity` is
/// tracked; the counts add up to `N`. A new key arriving when all counters are taken replaces a
/// counter of minimum count `m` and starts at `m + 1` with `error = m`.
///
/// **Rates** follow the *current* workload: each counter also keeps an exponentially decayed
/// mass, updated lazily on offer as `mass·2^(−Δt/half_life) + 1`, reported in records/s as
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
/// Memory is `capacity` counters, at most `capacity` buckets and a map of `capacity` keys,
/// whatever the number of distinct keys. Once full, offers do not allocate: an evicted key's
/// buffers are reused for its replacement, through a pool of at most 16 spare boxed keys when
/// the two differ in length (an allocation remains only for a key length not seen recently).
///
/// Time `now` is in seconds from any origin and should not decrease; a decreasing `now` is
/// treated as no time having passed.
#[derive(Debug, Clone)]
pub struct SpaceSaving {
    counters: Vec<Counter>,
    buckets: Vec<Bucket>,
    /// Buckets that were emptied and can be reused.
    free_buckets: Vec<usize>,
    /// Bucket with the lowest count (the eviction candidates), or `NIL` while empty.
    min_bucket: usize,
    index: FxHashMap<Box<[u8]>, usize>,
    /// Evicted map keys waiting for a new key of their length (at most `SPARE_KEYS`).
    spare_keys: Vec<Box<[u8]>>,
    capacity: usize,
    half_life: f64,
    total: u64,
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
        // One arena slot per counter, so every index fits next to NIL.
        if capacity >= NIL / 2 {
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
            buckets: Vec::new(),
            free_buckets: Vec::new(),
            min_bucket: NIL,
            index: FxHashMap::default(),
            spare_keys: Vec::new(),
            capacity,
            half_life: half_life_secs,
            total: 0,
        })
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
            self.buckets[self.min_bucket].count
        }
    }

    /// Upper bound of the overestimate in `count(key)`, or `None` if `key` is not tracked.
    pub fn error(&self, key: &[u8]) -> Option<u64> {
        self.index.get(key).map(|&c| self.counters[c].error)
    }

    /// Counts one occurrence of `key` at `now` and returns the key's rate (records/s) right
    /// after; what strategies call once per record (one hash lookup).
    pub fn offer_and_rate(&mut self, key: &[u8], now: f64) -> f64 {
        self.total += 1;
        let c = match self.index.get(key) {
            Some(&c) => {
                self.bump_rate(c, now);
                self.increment(c);
                c
            }
            None if self.counters.len() < self.capacity => self.admit(key, now),
            None => self.replace_min(key, now),
        };
        self.counters[c].decayed * self.rate_scale()
    }

    /// Records/s per unit of decayed mass.
    fn rate_scale(&self) -> f64 {
        std::f64::consts::LN_2 / self.half_life
    }

    /// The decay factor over `dt` seconds (no time passes backwards).
    fn decay(&self, dt: f64) -> f64 {
        if dt > 0.0 {
            (-dt / self.half_life).exp2()
        } else {
            1.0
        }
    }

    fn rate_of(&self, c: usize, now: f64) -> f64 {
        let counter = &self.counters[c];
        counter.decayed * self.decay(now - counter.rate_at) * self.rate_scale()
    }

    fn bump_rate(&mut self, c: usize, now: f64) {
        let factor = self.decay(now - self.counters[c].rate_at);
        let counter = &mut self.counters[c];
        counter.decayed = counter.decayed * factor + 1.0;
        if now > counter.rate_at {
            counter.rate_at = now;
        }
    }

    /// Takes a fresh counter for a key never seen while the sketch has room.
    fn admit(&mut self, key: &[u8], now: f64) -> usize {
        let c = self.counters.len();
        self.counters.push(Counter {
            key: key.to_vec(),
            count: 1,
            error: 0,
            bucket: NIL,
            prev: NIL,
            next: NIL,
            decayed: 1.0,
            rate_at: now,
        });
        self.index.insert(key.into(), c);
        let b = if self.min_bucket != NIL && self.buckets[self.min_bucket].count == 1 {
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
    fn replace_min(&mut self, key: &[u8], now: f64) -> usize {
        let min_bucket = self.min_bucket;
        let c = self.buckets[min_bucket].head;
        let old_key = std::mem::take(&mut self.counters[c].key);
        let mut boxed = match self.index.remove_entry(old_key.as_slice()) {
            Some((old, _)) if old.len() == key.len() => old,
            Some((old, _)) => {
                let spare = self.spare_keys.iter().position(|k| k.len() == key.len());
                let boxed = match spare {
                    Some(i) => self.spare_keys.swap_remove(i),
                    None => key.into(),
                };
                if self.spare_keys.len() < SPARE_KEYS {
                    self.spare_keys.push(old);
                }
                boxed
            }
            None => key.into(),
        };
        boxed.copy_from_slice(key);
        self.index.insert(boxed, c);

        let mut buffer = old_key;
        buffer.clear();
        buffer.extend_from_slice(key);
        let counter = &mut self.counters[c];
        counter.key = buffer;
        counter.error = counter.count;
        counter.decayed = 1.0;
        counter.rate_at = now;
        self.increment(c);
        c
    }

    /// Moves counter `c` from its bucket (count v) to the bucket of count v + 1.
    fn increment(&mut self, c: usize) {
        let b = self.counters[c].bucket;
        let count = self.buckets[b].count + 1;
        self.counters[c].count = count;
        let next = self.buckets[b].next;
        if next != NIL && self.buckets[next].count == count {
            self.unlink_counter(c);
            self.push_counter(next, c);
            self.release_if_empty(b);
        } else if self.buckets[b].head == c && self.counters[c].next == NIL {
            // Alone in its bucket and no bucket at count + 1: the bucket itself moves up.
            self.buckets[b].count = count;
        } else {
            let nb = self.new_bucket(count, b, next);
            self.unlink_counter(c);
            self.push_counter(nb, c);
        }
    }

    /// A bucket of `count` linked between `prev` and `next`, reusing an emptied slot if any.
    fn new_bucket(&mut self, count: u64, prev: usize, next: usize) -> usize {
        let bucket = Bucket {
            count,
            head: NIL,
            prev,
            next,
        };
        let b = match self.free_buckets.pop() {
            Some(b) => {
                self.buckets[b] = bucket;
                b
            }
            None => {
                self.buckets.push(bucket);
                self.buckets.len() - 1
            }
        };
        if prev != NIL {
            self.buckets[prev].next = b;
        }
        if next != NIL {
            self.buckets[next].prev = b;
        }
        b
    }

    fn release_if_empty(&mut self, b: usize) {
        if self.buckets[b].head != NIL {
            return;
        }
        let (prev, next) = (self.buckets[b].prev, self.buckets[b].next);
        if prev != NIL {
            self.buckets[prev].next = next;
        } else {
            self.min_bucket = next;
        }
        if next != NIL {
            self.buckets[next].prev = prev;
        }
        self.free_buckets.push(b);
    }

    fn push_counter(&mut self, b: usize, c: usize) {
        let head = self.buckets[b].head;
        {
            let counter = &mut self.counters[c];
            counter.bucket = b;
            counter.prev = NIL;
            counter.next = head;
        }
        if head != NIL {
            self.counters[head].prev = c;
        }
        self.buckets[b].head = c;
    }

    fn unlink_counter(&mut self, c: usize) {
        let Counter {
            bucket, prev, next, ..
        } = self.counters[c];
        if prev != NIL {
            self.counters[prev].next = next;
        } else {
            self.buckets[bucket].head = next;
        }
        if next != NIL {
            self.counters[next].prev = prev;
        }
    }

    fn hot_key(&self, c: usize, now: f64) -> HotKey {
        let counter = &self.counters[c];
        HotKey {
            key: counter.key.as_slice().into(),
            count: counter.count,
            error: counter.error,
            rate: self.rate_of(c, now),
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
            let bucket = &self.buckets[b];
            assert!(bucket.count > last, "buckets strictly ascending");
            assert_eq!(bucket.prev, prev);
            assert_ne!(bucket.head, NIL, "no empty bucket stays linked");
            last = bucket.count;
            let mut c = bucket.head;
            let mut cprev = NIL;
            while c != NIL {
                let counter = &self.counters[c];
                assert_eq!(counter.bucket, b);
                assert_eq!(counter.prev, cprev);
                assert_eq!(counter.count, bucket.count);
                assert_eq!(self.index[counter.key.as_slice()], c);
                seen += 1;
                cprev = c;
                c = counter.next;
            }
            prev = b;
            b = bucket.next;
        }
        assert_eq!(seen, self.counters.len());
        assert_eq!(self.index.len(), self.counters.len());
        assert!(self.spare_keys.len() <= SPARE_KEYS);
    }
}

impl HeavyHitters for SpaceSaving {
    fn offer(&mut self, key: &[u8], now: f64) {
        self.offer_and_rate(key, now);
    }

    fn count(&self, key: &[u8]) -> Option<u64> {
        self.index.get(key).map(|&c| self.counters[c].count)
    }

    fn rate(&self, key: &[u8], now: f64) -> Option<f64> {
        self.index.get(key).map(|&c| self.rate_of(c, now))
    }

    /// Highest rate first; ties by higher count, then by key bytes, so the order is total.
    fn top(&self, k: usize, now: f64) -> Vec<HotKey> {
        let mut all: Vec<HotKey> = (0..self.counters.len())
            .map(|c| self.hot_key(c, now))
            .collect();
        let order = |a: &HotKey, b: &HotKey| {
            b.rate
                .total_cmp(&a.rate)
                .then(b.count.cmp(&a.count))
                .then_with(|| a.key.cmp(&b.key))
        };
        if k < all.len() {
            if k == 0 {
                return Vec::new();
            }
            all.select_nth_unstable_by(k - 1, order);
            all.truncate(k);
        }
        all.sort_unstable_by(order);
        all
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
    fn keys_of_many_lengths_reuse_bounded_spares() {
        let mut s = SpaceSaving::new(5, 1.0).unwrap();
        for i in 0..5_000usize {
            let key = vec![b'k'; 1 + (i * 7919) % 40];
            s.offer(&key, i as f64);
        }
        s.check();
        assert_eq!(s.spare_keys.len(), SPARE_KEYS);
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
}
