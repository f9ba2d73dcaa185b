//! What one simulation run measured, as plain serialisable data.
//!
//! Field names are a script-facing interface (`keyshift simulate --json` prints them as is):
//! add fields freely, rename none.

use serde::Serialize;

use super::recovery::Recovery;

/// The outcome of one run of one strategy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimReport {
    /// Strategy name (`hash`, `slops`, `keyshift`, `pkg`, `unordered`).
    pub strategy: String,
    /// Whether the strategy keeps each key on one partition at a time (moves are fenced).
    pub preserves_order: bool,
    /// Aggregate utilisation the run was configured for.
    pub utilization: f64,
    /// Mean service time per record (milliseconds).
    pub service_ms: f64,
    /// Records produced (not counting fences).
    pub produced: u64,
    /// Records processed by consumers (not counting fences); equals `produced`, since a run
    /// drains every queue before it stops.
    pub processed: u64,
    /// Simulated seconds from the first arrival to the last completion.
    pub duration_s: f64,
    /// `processed ÷ duration_s`.
    pub throughput_rps: f64,
    /// Records whose latency figures below count (those arriving after warm-up).
    pub measured: u64,
    /// End-to-end latency (arrival → processing done) median, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile latency, milliseconds.
    pub p99_ms: f64,
    /// 99.9th percentile latency, milliseconds.
    pub p999_ms: f64,
    /// Largest latency, milliseconds.
    pub max_ms: f64,
    /// Mean latency, milliseconds.
    pub mean_ms: f64,
    /// Records appended to each partition after warm-up (index = partition).
    pub partition_load: Vec<u64>,
    /// Records of the most frequent key after warm-up: no order-preserving strategy can put
    /// fewer on its partition.
    pub hottest_key_records: u64,
    /// Busiest partition's load ÷ mean partition load.
    pub imbalance_max_over_mean: f64,
    /// Busiest partition's load ÷ `max(mean, hottest key)`.
    pub imbalance_max_over_bound: f64,
    /// Key moves the strategy decided.
    pub migrations: u64,
    /// Key moves decided after warm-up (while routing the measured records).
    pub migrations_after_warmup: u64,
    /// `migrations_after_warmup` per minute of the measured records' arrivals.
    pub migrations_per_minute_after_warmup: f64,
    /// Fence records written (one per move the producer carried out).
    pub fences: u64,
    /// Records of a key processed after a record of the same key that arrived later.
    pub order_violations: u64,
    /// Records that waited in the producer for a fence's delivery report.
    pub producer_held: u64,
    /// Total time records waited in the producer for fences (milliseconds, summed).
    pub producer_held_ms: f64,
    /// Records a consumer parked until their barrier (the old partition's commit) passed.
    pub parked_records: u64,
    /// Total parked time (milliseconds, summed over parked records).
    pub parked_ms: f64,
    /// 99th percentile of the parked time of parked records (milliseconds).
    pub parked_p99_ms: f64,
    /// Longest parked time of a record (milliseconds).
    pub parked_max_ms: f64,
    /// Keys whose rate after warm-up exceeds what one consumer can process, hottest first
    /// (at most [`MAX_LISTED_KEYS`]). Per-key order lets only one consumer at a time work on a
    /// key, so no ordered strategy can keep up with such a key: the load is unsustainable.
    pub infeasible_keys: Vec<InfeasibleKey>,
    /// Human-readable warnings about the workload, e.g. one per infeasible key.
    pub warnings: Vec<String>,
    /// Disturbances (changes of the load's shape after which the placement was unbalanced,
    /// max/bound above 1.1 over a window of arrivals), how long they took to recover and the
    /// moves in between ([`super::recovery`]).
    pub recovery: Recovery,
}

/// Most infeasible keys a report lists.
pub const MAX_LISTED_KEYS: usize = 10;

/// A key that needs more than one consumer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InfeasibleKey {
    /// The key (lossy UTF-8).
    pub key: String,
    /// Its records per second after warm-up.
    pub rate_rps: f64,
    /// Consumers it would keep busy: `rate × mean service time` (above 1: infeasible).
    pub consumers_needed: f64,
}

/// Fewest records after the warm-up for a key's rate to be judged: a handful of records in a
/// short span says nothing about a rate.
pub const MIN_RECORDS_FOR_RATE: u64 = 20;

/// The keys among `keys` — (key, its records after the warm-up, seconds from its first such
/// record to the end of the measured span) — that need more than one consumer at
/// `service_secs` per record, hottest first, at most [`MAX_LISTED_KEYS`].
///
/// A key's rate is taken over its own active span, not the whole run's: a key that turns hot
/// late (a sudden hot key) is judged on the time it was hot instead of being diluted by the
/// time before it existed. A key present from the start spans the whole run, as before. Keys
/// with fewer than [`MIN_RECORDS_FOR_RATE`] records are not judged.
pub fn infeasible_keys<'a>(
    keys: impl IntoIterator<Item = (&'a [u8], u64, f64)>,
    service_secs: f64,
) -> Vec<InfeasibleKey> {
    let mut keys: Vec<InfeasibleKey> = keys
        .into_iter()
        .filter(|&(_, n, span)| n >= MIN_RECORDS_FOR_RATE && span > 0.0)
        .filter_map(|(key, n, span)| {
            let rate = n as f64 / span;
            let needed = rate * service_secs;
            (needed > 1.0).then(|| InfeasibleKey {
                key: String::from_utf8_lossy(key).into_owned(),
                rate_rps: rate,
                consumers_needed: needed,
            })
        })
        .collect();
    keys.sort_by(|a, b| b.rate_rps.total_cmp(&a.rate_rps));
    keys.truncate(MAX_LISTED_KEYS);
    keys
}

impl InfeasibleKey {
    /// The warning a report prints for this key.
    pub fn warning(&self) -> String {
        format!(
            "key {} needs {:.2} consumers; per-key order makes this load unsustainable",
            self.key, self.consumers_needed
        )
    }
}
