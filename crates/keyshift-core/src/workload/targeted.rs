//! The seed's "targeted" generator: a hot spot that jumps between groups of partitions.
//!
//! What the seed does (`SLOPSClient/cmd/main.go`, `TargetedGenerator`, MSrvComm/SLOPS): it
//! hard-codes the keys `location_0`..`location_39` grouped by the partition the producer's
//! hash sends them to (FNV-1a over 10 partitions) into three sets — partitions {0,1,2},
//! {3,4,5} and {6,7,8,9} — each listed partition by partition, keys ascending. Before every
//! message it checks `count % 3000 == 0` and, if so, moves to the next set (starting from set
//! 0, so the first 3000 messages already go to set 1, then set 2, then set 0, ...), then picks
//! a key uniformly among the active set's keys. The effect is that only about a third of the
//! partitions receive load at any time, and which third changes every 3000 messages: a
//! shifting hot spot that a static hash cannot spread.
//!
//! [`Targeted`] derives the sets instead of hard-coding them, so it fits any partition count,
//! key count and hash: partitions 0..n are cut into `sets` contiguous groups (⌊j·n/sets⌋ ..
//! ⌊(j+1)·n/sets⌋), and each group gets the keys among 0..keys whose partition under the
//! given [`Hasher`] falls in it. [`Targeted::seed`] (FNV-1a, 10 partitions, 40 keys) yields
//! exactly the seed's table. Keys are drawn uniformly within the set, as the seed does; the
//! seed reseeded `math/rand` from the clock for every pick, we use the caller's seeded RNG.

use rand::Rng;

use super::key_name;
use crate::hash::Hasher;
use crate::ParamError;

/// How many messages the seed sends before moving the hot spot.
pub const SEED_PERIOD: u64 = 3000;
/// How many partition sets the seed rotates through.
pub const SEED_SETS: u32 = 3;

/// A stateful key generator that loads one set of partitions at a time, rotating sets every
/// `period` messages (the seed's targeted workload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Targeted {
    /// Key indices per set, in the seed's order (by partition, then by key).
    sets: Vec<Vec<u64>>,
    /// The partitions of each set (a half-open range).
    partition_ranges: Vec<(u32, u32)>,
    period: u64,
    /// Messages still to send before the hot spot moves; 0 means "move before the next one".
    left_in_block: u64,
    active: usize,
}

impl Targeted {
    /// The seed's shape (3 sets, rotate every 3000 messages) for `partitions` partitions,
    /// keys `location_0`..`location_<keys−1>`, placed by `hasher`.
    pub fn new(hasher: Hasher, partitions: u32, keys: u64) -> Result<Targeted, ParamError> {
        Targeted::with_shape(hasher, partitions, keys, SEED_SETS, SEED_PERIOD)
    }

    /// Exactly the seed's table: FNV-1a, 10 partitions, keys `location_0`..`location_39`,
    /// 3 sets, rotating every 3000 messages.
    pub fn seed() -> Targeted {
        Targeted::new(Hasher::Fnv1a, 10, 40).expect("the seed's shape is valid")
    }

    /// A targeted generator with `sets` partition sets, rotating every `period` messages.
    ///
    /// Builds the key lists once (O(`keys`) hashing and memory: `keys` is configuration, and
    /// the seed uses 40).
    pub fn with_shape(
        hasher: Hasher,
        partitions: u32,
        keys: u64,
        sets: u32,
        period: u64,
    ) -> Result<Targeted, ParamError> {
        if sets == 0 {
            return Err(ParamError::new(
                "targeted-sets",
                "got 0, expected at least 1 partition set",
            ));
        }
        if period == 0 {
            return Err(ParamError::new(
                "targeted-period",
                "got 0, expected a number of messages >= 1 between hot-spot moves",
            ));
        }
        if partitions < sets {
            return Err(ParamError::new(
                "partitions",
                format!(
                    "got {partitions}, the targeted workload needs at least {sets} (one per set)"
                ),
            ));
        }
        if keys == 0 {
            return Err(ParamError::new("keys", "got 0, expected at least 1 key"));
        }
        let n = u64::from(partitions);
        let ranges: Vec<(u32, u32)> = (0..u64::from(sets))
            .map(|j| {
                let lo = j * n / u64::from(sets);
                let hi = (j + 1) * n / u64::from(sets);
                (lo as u32, hi as u32)
            })
            .collect();
        // Bucket keys by partition first, so each set lists them partition by partition.
        let mut by_partition: Vec<Vec<u64>> = vec![Vec::new(); partitions as usize];
        for k in 0..keys {
            let p = hasher.partition(key_name(k).as_bytes(), partitions);
            by_partition[p as usize].push(k);
        }
        let mut key_sets = Vec::with_capacity(ranges.len());
        for &(lo, hi) in &ranges {
            let set: Vec<u64> = (lo..hi)
                .flat_map(|p| by_partition[p as usize].iter().copied())
                .collect();
            if set.is_empty() {
                return Err(ParamError::new(
                    "keys",
                    format!(
                        "got {keys}: no key hashes to partitions {lo}..{hi}, \
                         expected enough keys to cover every partition set"
                    ),
                ));
            }
            key_sets.push(set);
        }
        Ok(Targeted {
            sets: key_sets,
            partition_ranges: ranges,
            period,
            left_in_block: 0,
            active: 0,
        })
    }

    /// The key indices of each set, in the seed's order.
    pub fn sets(&self) -> &[Vec<u64>] {
        &self.sets
    }

    /// The partitions of each set, as half-open ranges `(first, end)`.
    pub fn partition_ranges(&self) -> &[(u32, u32)] {
        &self.partition_ranges
    }

    /// Messages between hot-spot moves.
    pub fn period(&self) -> u64 {
        self.period
    }

    /// The set the next key will come from.
    pub fn next_set(&self) -> usize {
        if self.left_in_block == 0 {
            (self.active + 1) % self.sets.len()
        } else {
            self.active
        }
    }

    /// Whether the next [`Targeted::sample`] moves the hot spot to the next set (also true
    /// before the first, which picks the first set).
    pub fn rotates_next(&self) -> bool {
        self.left_in_block == 0
    }

    /// The next key index: uniform among the active set's keys, moving to the next set first
    /// whenever `period` messages have been sent (including before the very first one, as in
    /// the seed).
    pub fn sample<R: Rng + ?Sized>(&mut self, rng: &mut R) -> u64 {
        // The seed's `count % 3000 == 0` test, as a countdown.
        if self.rotates_next() {
            self.active = self.next_set();
            self.left_in_block = self.period;
        }
        self.left_in_block -= 1;
        let set = &self.sets[self.active];
        set[rng.gen_range(0..set.len())]
    }
}
