//! A deterministic discrete-event simulator of producer → partitions → consumers.
//!
//! One run ([`run`]) takes a [`SimConfig`] and a strategy name and returns a [`SimReport`].
//! Everything that happens is an event on one clock, ordered by time and then by the order it
//! was scheduled, so a seed fully determines the outcome:
//!
//! - **Producer.** Open-loop arrivals (`workload`) are routed by the strategy. For an ordered
//!   strategy every record then goes through the real [`crate::protocol::Migrator`] (unless
//!   [`SimConfig::fencing`] is off, an ablation): a move
//!   writes a fence record on the old partition at once, and the key's records wait in the
//!   producer until the fence's delivery report arrives `fence_rtt_ms` later (the producer
//!   pause; other keys keep flowing).
//! - **Broker.** One log per partition; appending gives the record its offset and hands it to
//!   the partition's consumer immediately.
//! - **Consumers.** Partitions are spread like Kafka's range or round-robin assignor. Each
//!   consumer is one server that processes one record at a time, taking among the records its
//!   [`crate::protocol::OrderGate`] released the one that arrived first. It commits what the
//!   gate allows every `commit_interval_ms` (and at once after a fence), and every
//!   `barrier_poll_ms` reads the group's committed offsets for the partitions its parked
//!   records wait on (or sees them locally when it owns them).
//!
//! Measured: end-to-end latency (arrival → processed), per-partition load and imbalance
//! against `max(mean, hottest key)`, moves and fences, time records spent held in the producer
//! and parked in consumers, and per-key order violations (a record processed after a later
//! record of its key), which must be 0 for ordered strategies and are not for `pkg` and
//! `unordered`. After every change of the load's shape (the targeted hot spot moving, a sudden
//! hot key, [`SimConfig::hot_key_at`]) windows of arrivals show whether the placement became
//! unbalanced and how long and how many moves it took to recover ([`recovery`]). A sweep
//! ([`SweepSpec`], [`summarize`]) repeats runs over utilisation levels.

mod config;
mod engine;
pub mod recovery;
mod report;
mod sweep;

pub use config::MAX_UTILIZATION;
pub use config::{assign, ArrivalProcess, Assignor, ServiceDist, SimConfig, WorkloadKind};
pub use engine::run;
pub use recovery::Recovery;
pub use report::{
    infeasible_keys, InfeasibleKey, SimReport, MAX_LISTED_KEYS, MIN_RECORDS_FOR_RATE,
};
pub use sweep::{summarize, SweepPoint, SweepReport, SweepSpec, SweepSummary};
