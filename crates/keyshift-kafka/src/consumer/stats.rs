//! What an [`super::OrderedConsumer`] counts while it runs, readable from any thread.
//!
//! [`ConsumerStats`] is shared (`Arc`) between the consumer's thread, which updates it, and
//! readers such as the worker's `/metrics` endpoint or the experiment runner, which take a
//! [`StatsSnapshot`]. Counters and gauges are atomics (updating them never blocks the consumer
//! loop on a reader); the two latency distributions are HDR histograms behind a mutex that is
//! held for one `record` call or one clone, so contention stays negligible.
//!
//! Order is judged from the records' own per-key sequence numbers ([`keyshift_core::probe`]):
//! a *duplicate* is a record processed again (over-consumption after a crash or rebalance,
//! harmless for order), an *order violation* is a record processed after a later record of
//! its key. An *order exception* is different: a record the consumer released on purpose
//! before its migration barrier passed ([`super::ParkPolicy::Release`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use keyshift_core::sim::InfeasibleKey;

use super::retry::RetryingKey;
use crate::lock;

/// Most failing keys [`StatsSnapshot::retrying_keys`] lists.
pub const MAX_LISTED_RETRYING_KEYS: usize = 50;
use keyshift_core::stats::LatencyHistogram;

/// Live counters of one ordered consumer (see the `consumer::stats` module docs).
#[derive(Debug, Default)]
pub struct ConsumerStats {
    pub(crate) processed: AtomicU64,
    pub(crate) parked_now: AtomicU64,
    pub(crate) parked_total: AtomicU64,
    pub(crate) pending_now: AtomicU64,
    pub(crate) duplicates: AtomicU64,
    pub(crate) order_violations: AtomicU64,
    pub(crate) concurrent_key_processing: AtomicU64,
    pub(crate) probes: AtomicU64,
    pub(crate) not_probes: AtomicU64,
    pub(crate) malformed_headers: AtomicU64,
    pub(crate) unordered: AtomicU64,
    pub(crate) handler_errors: AtomicU64,
    pub(crate) fences: AtomicU64,
    pub(crate) redelivered_skipped: AtomicU64,
    pub(crate) commits: AtomicU64,
    pub(crate) commit_failures: AtomicU64,
    pub(crate) barrier_checks: AtomicU64,
    pub(crate) barrier_check_failures: AtomicU64,
    pub(crate) rebalances: AtomicU64,
    pub(crate) owned_partitions: AtomicU64,
    pub(crate) paused_partitions: AtomicU64,
    pub(crate) order_exceptions: AtomicU64,
    pub(crate) below_start: AtomicU64,
    pub(crate) stalled_partitions: AtomicU64,
    pub(crate) offset_read_failures: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
    pub(crate) dead_letter_failures: AtomicU64,
    pub(crate) blocked_keys: Mutex<Vec<BlockedKey>>,
    pub(crate) retrying_keys: Mutex<(Vec<RetryingKey>, usize)>,
    pub(crate) infeasible_keys: Mutex<(Vec<InfeasibleKey>, usize)>,
    pub(crate) park_time: Mutex<LatencyHistogram>,
    pub(crate) e2e_latency: Mutex<LatencyHistogram>,
}

/// A key parked longer than the park timeout (its migration barrier has not passed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockedKey {
    /// Partition its records are parked on.
    pub partition: u32,
    /// The key.
    pub key: Vec<u8>,
    /// The partition whose committed offset it waits for (the key's old partition).
    pub barrier_partition: u32,
    /// The fence offset there: it waits until that partition's committed offset is greater.
    pub fence_offset: i64,
    /// Its records parked now.
    pub records: usize,
    /// How long it has been parked on this barrier.
    pub age: Duration,
}

/// A point-in-time copy of [`ConsumerStats`].
#[derive(Debug, Clone, Default)]
pub struct StatsSnapshot {
    /// Records handed to the application and finished (handler errors included).
    pub processed: u64,
    /// Records held right now because their key waits for a migration barrier.
    pub parked_now: u64,
    /// Records that were parked before being processed, in total.
    pub parked_total: u64,
    /// Records consumed and not yet processed right now (parked, queued or in the handler).
    pub pending_now: u64,
    /// Probe records processed again (per-key sequence number already seen): over-consumption.
    pub duplicates: u64,
    /// Probe records processed after a later record of their key.
    pub order_violations: u64,
    /// Records whose key another consumer was processing when this one started it (only with
    /// a shared serial check, see `OrderedConsumerBuilder::shared_serial_check`).
    pub concurrent_key_processing: u64,
    /// Processed records whose value was a probe (sequence-checked, latency measured).
    pub probes: u64,
    /// Processed records whose value was not a probe (not sequence-checked).
    pub not_probes: u64,
    /// Records whose `keyshift-route` or `keyshift-fence` header could not be decoded
    /// (malformed or an unknown version).
    pub malformed_headers: u64,
    /// Records delivered marked unordered (because of such a header).
    pub unordered: u64,
    /// Handler calls that returned an error (the record still counts as processed).
    pub handler_errors: u64,
    /// Fence records passed (consumed, never delivered).
    pub fences: u64,
    /// Consumed records ignored because the gate had already seen their offset.
    pub redelivered_skipped: u64,
    /// Offset commits sent (periodic, prompt after a fence, on revoke and on stop).
    pub commits: u64,
    /// Commits that failed.
    pub commit_failures: u64,
    /// Committed-offset reads (OffsetFetch) for migration barriers.
    pub barrier_checks: u64,
    /// Barrier reads that failed (retried on the next interval).
    pub barrier_check_failures: u64,
    /// Rebalance events seen (assignments and revocations).
    pub rebalances: u64,
    /// Partitions assigned right now.
    pub owned_partitions: u64,
    /// Partitions paused right now for backpressure.
    pub paused_partitions: u64,
    /// Records released before their migration barrier passed (park timeout with
    /// [`super::ParkPolicy::Release`]), processed so far.
    pub order_exceptions: u64,
    /// Consumed records below their partition's committed offset at assignment: the log lost
    /// that offset and the client restarted lower (see the module docs of the consumer).
    pub below_start: u64,
    /// Partitions stopped right now because of such records (until an operator resets the
    /// group's offset).
    pub stalled_partitions: u64,
    /// Assignments whose committed offsets could not be read even after retries (the gate
    /// then starts at the first delivered record and commits nothing before it).
    pub offset_read_failures: u64,
    /// Handler attempts that failed and were retried (each retry counts once).
    pub retries: u64,
    /// Records written to the dead-letter topic after their last attempt failed.
    pub dead_lettered: u64,
    /// Dead-letter writes that failed (retried; the record's key waits meanwhile).
    pub dead_letter_failures: u64,
    /// Keys parked longer than the park timeout right now, oldest first.
    pub blocked_keys: Vec<BlockedKey>,
    /// Keys whose record failed and is waiting for another attempt (or its dead-letter
    /// write) right now, longest failing first, at most [`MAX_LISTED_RETRYING_KEYS`]: each
    /// blocks its key's later records.
    pub retrying_keys: Vec<RetryingKey>,
    /// How many keys are failing right now (may exceed the listed ones).
    pub retrying_key_count: u64,
    /// Keys that needed more than one consumer in the last demand window (10 s), neediest
    /// first, at most ten ([`keyshift_core::key_demand`]): per-key order makes their load
    /// unsustainable wherever they are placed.
    pub infeasible_keys: Vec<InfeasibleKey>,
    /// How many keys needed more than one consumer in that window (may exceed the listed ones).
    pub infeasible_key_count: u64,
    /// Time parked records waited, from consumption to release.
    pub park_time: LatencyHistogram,
    /// Probe records' end-to-end latency: processing start minus the probe's `sent_us`.
    pub e2e_latency: LatencyHistogram,
}

impl ConsumerStats {
    /// Fresh, all-zero stats.
    pub fn new() -> Self {
        Self::default()
    }

    /// Copies every value.
    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        // One lock, released before the literal below takes the others.
        let (infeasible_keys, infeasible_count) = lock(&self.infeasible_keys).clone();
        let (retrying_keys, retrying_count) = lock(&self.retrying_keys).clone();
        StatsSnapshot {
            processed: get(&self.processed),
            parked_now: get(&self.parked_now),
            parked_total: get(&self.parked_total),
            pending_now: get(&self.pending_now),
            duplicates: get(&self.duplicates),
            order_violations: get(&self.order_violations),
            concurrent_key_processing: get(&self.concurrent_key_processing),
            probes: get(&self.probes),
            not_probes: get(&self.not_probes),
            malformed_headers: get(&self.malformed_headers),
            unordered: get(&self.unordered),
            handler_errors: get(&self.handler_errors),
            fences: get(&self.fences),
            redelivered_skipped: get(&self.redelivered_skipped),
            commits: get(&self.commits),
            commit_failures: get(&self.commit_failures),
            barrier_checks: get(&self.barrier_checks),
            barrier_check_failures: get(&self.barrier_check_failures),
            rebalances: get(&self.rebalances),
            owned_partitions: get(&self.owned_partitions),
            paused_partitions: get(&self.paused_partitions),
            order_exceptions: get(&self.order_exceptions),
            below_start: get(&self.below_start),
            stalled_partitions: get(&self.stalled_partitions),
            offset_read_failures: get(&self.offset_read_failures),
            retries: get(&self.retries),
            dead_lettered: get(&self.dead_lettered),
            dead_letter_failures: get(&self.dead_letter_failures),
            blocked_keys: lock(&self.blocked_keys).clone(),
            retrying_keys,
            retrying_key_count: retrying_count as u64,
            infeasible_keys,
            infeasible_key_count: infeasible_count as u64,
            park_time: lock(&self.park_time).clone(),
            e2e_latency: lock(&self.e2e_latency).clone(),
        }
    }

    /// Records processed so far.
    pub fn processed(&self) -> u64 {
        self.processed.load(Ordering::Relaxed)
    }

    /// Records parked right now.
    pub fn parked_now(&self) -> u64 {
        self.parked_now.load(Ordering::Relaxed)
    }

    /// Duplicates (over-consumption) seen so far.
    pub fn duplicates(&self) -> u64 {
        self.duplicates.load(Ordering::Relaxed)
    }

    /// Order violations seen so far.
    pub fn order_violations(&self) -> u64 {
        self.order_violations.load(Ordering::Relaxed)
    }

    /// Records started while another consumer was processing their key, so far (shared serial
    /// check only).
    pub fn concurrent_key_processing(&self) -> u64 {
        self.concurrent_key_processing.load(Ordering::Relaxed)
    }

    /// Records with an undecodable keyshift header seen so far.
    pub fn malformed_headers(&self) -> u64 {
        self.malformed_headers.load(Ordering::Relaxed)
    }

    /// Commits sent so far.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn set(gauge: &AtomicU64, v: u64) {
        gauge.store(v, Ordering::Relaxed);
    }

    pub(crate) fn set_blocked_keys(&self, keys: Vec<BlockedKey>) {
        *lock(&self.blocked_keys) = keys;
    }

    pub(crate) fn set_retrying_keys(&self, mut keys: Vec<RetryingKey>) {
        let count = keys.len();
        keys.truncate(MAX_LISTED_RETRYING_KEYS);
        *lock(&self.retrying_keys) = (keys, count);
    }

    pub(crate) fn set_infeasible_keys(&self, keys: &[InfeasibleKey], count: usize) {
        let mut slot = lock(&self.infeasible_keys);
        if slot.0 != keys || slot.1 != count {
            *slot = (keys.to_vec(), count);
        }
    }

    pub(crate) fn record_park(&self, waited: Duration) {
        lock(&self.park_time).record_secs(waited.as_secs_f64());
    }

    pub(crate) fn record_e2e(&self, secs: f64) {
        lock(&self.e2e_latency).record_secs(secs);
    }
}
