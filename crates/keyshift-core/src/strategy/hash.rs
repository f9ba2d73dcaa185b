//! `hash`: vanilla Kafka. Every key goes to its hash partition, forever; it never moves.
//!
//! This is the baseline every other strategy is measured against, and the placement that all
//! of them fall back to for cold keys.

use super::{Move, Strategy};
use crate::hash::Hasher;

/// Kafka's default partitioner as a [`Strategy`] (or the seed's FNV-1a, by [`Hasher`]).
#[derive(Debug, Clone)]
pub struct HashStrategy {
    partitions: u32,
    hasher: Hasher,
}

impl HashStrategy {
    /// Hashes keys over `partitions` (> 0, validated by [`super::build_with`]) with `hasher`.
    pub fn new(partitions: u32, hasher: Hasher) -> Self {
        Self { partitions, hasher }
    }
}

impl Strategy for HashStrategy {
    fn name(&self) -> &'static str {
        "hash"
    }

    fn preserves_order(&self) -> bool {
        true
    }

    #[inline]
    fn route(&mut self, key: &[u8], _now: f64) -> u32 {
        self.hasher.partition(key, self.partitions)
    }

    fn drain_moves(&mut self) -> Vec<Move> {
        Vec::new()
    }
}
