//! Strategies: the partition of each record, and the key moves they decide.
//!
//! Every strategy implements [`Strategy`]. Ordered strategies (`hash`, `slops`, `keyshift`)
//! send every record of a key to one partition at a time; a change of that partition is a
//! [`Move`], which the [`crate::protocol::Migrator`] turns into a fenced migration. The
//! baselines `pkg` and `unordered` split keys across partitions and so break per-key order.
//!
//! Keys that no strategy routes ("cold" keys) go where [`crate::hash::Hasher`] puts them
//! (Kafka's murmur2 by default), so they land where any other Kafka producer would put them.
//! Time is always the caller's (`now`, seconds): strategies hold no clock, which keeps them
//! deterministic under the simulator and usable by the real producer alike.
//!
//! [`build`] selects a strategy by name with default options; [`build_with`] takes a
//! [`StrategyConfig`] holding every strategy's options, as the CLI resolves them.

mod hash;
mod keyshift;
mod pkg;
mod route_table;
mod slops;
mod unordered;

pub use self::hash::HashStrategy;
pub use keyshift::{KeyshiftConfig, KeyshiftStrategy, KeyshiftVariant};
pub use pkg::{PkgConfig, PkgStrategy};
pub use route_table::{key_hash, Route, RouteTable, RouteTableFull};
pub use slops::{SlopsConfig, SlopsStrategy};
pub use unordered::{UnorderedConfig, UnorderedStrategy};

use crate::hash::Hasher;
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
    /// The name it is selected by (one of [`NAMES`]).
    fn name(&self) -> &'static str;
    /// Whether all records of a key go to one partition at a time (moves are fenced).
    fn preserves_order(&self) -> bool;
    /// The partition for one record of `key` arriving at `now` (seconds, non-decreasing).
    fn route(&mut self, key: &[u8], now: f64) -> u32;
    /// Moves decided since the last call, in decision order (always empty for unordered ones).
    fn drain_moves(&mut self) -> Vec<Move>;
    /// Measured per-partition consumer state; strategies that do not use it ignore it.
    fn observe(&mut self, _feedback: &[PartitionFeedback], _now: f64) {}
    /// `key`'s partition was decided elsewhere (the decider of coordinated producers, or a
    /// move it proposed was called off): route it to `partition` from now on, without
    /// reporting a move. Strategies that keep no routes ignore it.
    fn adopt(&mut self, _key: &[u8], _partition: u32, _now: f64) {}
    /// Records another producer sent since its previous summary (coordinated producers: the
    /// decider adds the other members' load to its own): per partition, and its busiest keys.
    /// Strategies without a load model of their own ignore it.
    fn absorb(&mut self, _partitions: &[u64], _keys: &[(Box<[u8]>, u64)], _now: f64) {}
}

/// Names accepted by [`build`], in the order `--help` lists them.
pub const NAMES: &[&str] = &[
    "hash",
    "slops",
    "keyshift",
    "keyshift-classic",
    "pkg",
    "unordered",
];

/// Options of every strategy, resolved once (by the CLI) and handed to [`build_with`].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct StrategyConfig {
    /// Placement of keys no route overrides (default: Kafka's murmur2).
    pub hasher: Hasher,
    /// Seed of every random choice a strategy makes.
    pub seed: u64,
    /// Options of `slops`.
    pub slops: SlopsConfig,
    /// Options of `keyshift`.
    pub keyshift: KeyshiftConfig,
    /// Options of `pkg`.
    pub pkg: PkgConfig,
    /// Options of `unordered`.
    pub unordered: UnorderedConfig,
}

/// Builds the strategy named `name` for `partitions` partitions with default options.
pub fn build(name: &str, partitions: u32, seed: u64) -> Result<Box<dyn Strategy>, ParamError> {
    build_with(
        name,
        partitions,
        &StrategyConfig {
            seed,
            ..StrategyConfig::default()
        },
    )
}

/// Builds the strategy named `name` (one of [`NAMES`]) for `partitions` partitions with the
/// options in `config`; only the named strategy's options are validated.
pub fn build_with(
    name: &str,
    partitions: u32,
    config: &StrategyConfig,
) -> Result<Box<dyn Strategy>, ParamError> {
    if !NAMES.contains(&name) {
        return Err(ParamError::new(
            "strategy",
            format!(
                "unknown strategy `{name}`; expected one of {}",
                NAMES.join(", ")
            ),
        ));
    }
    if partitions == 0 {
        return Err(ParamError::new(
            "partitions",
            "must be at least 1 (the topic's partition count)",
        ));
    }
    Ok(match name {
        "hash" => Box::new(HashStrategy::new(partitions, config.hasher)),
        "slops" => Box::new(SlopsStrategy::new(
            partitions,
            config.hasher,
            &config.slops,
            config.seed,
        )?),
        "keyshift" => Box::new(KeyshiftStrategy::with_seed(
            partitions,
            config.hasher,
            &config.keyshift,
            config.seed,
        )?),
        // The first keyshift algorithm, kept for comparison: the same options, with its own
        // defaults for the two whose defaults changed.
        "keyshift-classic" => Box::new(KeyshiftStrategy::with_seed(
            partitions,
            config.hasher,
            &config.keyshift.as_classic(),
            config.seed,
        )?),
        "pkg" => Box::new(PkgStrategy::new(partitions, &config.pkg, config.seed)?),
        _ => Box::new(UnorderedStrategy::new(partitions, &config.unordered)),
    })
}
