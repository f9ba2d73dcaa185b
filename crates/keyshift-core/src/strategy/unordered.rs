//! `unordered`: each record to the least loaded partition (or round robin), whatever its key.
//!
//! A baseline that ignores keys altogether: it shows the best balance any partitioner can
//! reach, and so what keeping per-key order costs. It splits every key over many partitions,
//! so it never preserves order and has no moves to report.

use super::{Move, Strategy};

/// Options of the `unordered` strategy.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct UnorderedConfig {
    /// Rotate over the partitions instead of picking the one with the fewest records so far.
    pub round_robin: bool,
}

/// Least-loaded (by records sent so far) or round-robin placement of single records.
#[derive(Debug, Clone)]
pub struct UnorderedStrategy {
    counts: Vec<u64>,
    round_robin: bool,
    next: u32,
}

impl UnorderedStrategy {
    /// Places records over `partitions` (> 0, validated by [`super::build_with`]).
    pub fn new(partitions: u32, config: &UnorderedConfig) -> Self {
        Self {
            counts: vec![0; partitions as usize],
            round_robin: config.round_robin,
            next: 0,
        }
    }
}

impl Strategy for UnorderedStrategy {
    fn name(&self) -> &'static str {
        "unordered"
    }

    fn preserves_order(&self) -> bool {
        false
    }

    fn route(&mut self, _key: &[u8], _now: f64) -> u32 {
        let p = if self.round_robin {
            let p = self.next;
            self.next = (self.next + 1) % self.counts.len() as u32;
            p
        } else {
            // First minimum, so ties go to the lowest index and the result is deterministic.
            let mut best = 0;
            for (i, &c) in self.counts.iter().enumerate() {
                if c < self.counts[best] {
                    best = i;
                }
            }
            best as u32
        };
        self.counts[p as usize] += 1;
        p
    }

    fn drain_moves(&mut self) -> Vec<Move> {
        Vec::new()
    }
}
