//! Strategies: the partition of each record, and the key moves they decide.
//!
//! Every strategy implements [`Strategy`]. Ordered strategies (`hash`, `slops`, `keyshift`)
//! send every record of a key to one partition at a time; a change of that partition is a
//! [`Move`], which the [`crate::protocol::Migrator`] turns into a fenced migration. The
//! baselines `pkg` and `unordered` split keys across partitions and so break per-key order.

mod route_table;

pub use route_table::RouteTable;

use crate::ParamError;

/// A key's change of partition decided by an ordered strategy.
#[derive(Debug, Clone, PartialEq)]
pub struct Move {
    /// The key that moves.
    pub key: Box<[u8]>,
    /// Partition the key's records went to until now.
    pub from: u32,
    /// Partition its records go to from now on.
    pub to: u32,
    /// When the strategy decided it (seconds).
    pub at: f64,
}

/// Measured state of one partition's consumer, fed back to strategies that use it.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PartitionFeedback {
    /// Partition index.
    pub partition: u32,
    /// Records per second the consumer of this partition completed recently.
    pub throughput_rps: f64,
    /// Records waiting in this partition (end offset − committed offset).
    pub lag: u64,
}

/// Chooses a partition for each record.
pub trait Strategy: Send {
    /// The name it is selected by (`hash`, `slops`, `keyshift`, `pkg`, `unordered`).
    fn name(&self) -> &'static str;
    /// Whether all records of a key go to one partition at a time (moves are fenced).
    fn preserves_order(&self) -> bool;
    /// The partition for one record of `key` arriving at `now` (seconds, non-decreasing).
    fn route(&mut self, key: &[u8], now: f64) -> u32;
    /// Moves decided since the last call, in decision order (always empty for unordered ones).
    fn drain_moves(&mut self) -> Vec<Move>;
    /// Measured per-partition consumer state; strategies that do not use it ignore it.
    fn observe(&mut self, _feedback: &[PartitionFeedback], _now: f64) {}
}

/// Names accepted by [`build`], in the order `--help` lists them.
pub const NAMES: &[&str] = &["hash", "slops", "keyshift", "pkg", "unordered"];

/// Builds the strategy named `name` for `partitions` partitions with default options.
pub fn build(name: &str, partitions: u32, seed: u64) -> Result<Box<dyn Strategy>, ParamError> {
    todo!("helper D")
}
