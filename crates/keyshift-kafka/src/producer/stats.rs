//! A snapshot of what a [`super::KeyshiftProducer`] has done, for metrics, reports and tests.

use keyshift_core::stats::LatencyHistogram;

/// Counters and gauges of one producer, read with [`super::KeyshiftProducer::stats`].
///
/// Counters cover the producer's whole life. Data records are counted when librdkafka
/// accepts them (so `records` excludes fences and records still held or backlogged);
/// `delivery_errors` counts every record whose error was reported to its caller.
#[derive(Debug, Clone)]
pub struct ProducerStats {
    /// The strategy's name.
    pub strategy: &'static str,
    /// Data records handed to librdkafka.
    pub records: u64,
    /// Key + value bytes of those records.
    pub bytes: u64,
    /// Data records per partition (index = partition).
    pub per_partition: Vec<u64>,
    /// Key moves the strategy decided (its `drain_moves`); forced moves are not included.
    pub moves: u64,
    /// Keys pinned by [`super::KeyshiftProducer::move_key`].
    pub pinned_keys: usize,
    /// Fence records written (every attempt).
    pub fences: u64,
    /// Fences acknowledged, i.e. completed migrations.
    pub migrations: u64,
    /// Fence attempts that failed (each is retried until the attempt limit).
    pub fence_failures: u64,
    /// Fence round trips (enqueue to delivery report) of completed migrations.
    pub fence_rtt: LatencyHistogram,
    /// Records whose error (enqueue refused, not delivered, fence failed) was reported.
    pub delivery_errors: u64,
    /// Records held behind a fence right now.
    pub held_records: usize,
    /// Keys with records held right now.
    pub held_keys: usize,
    /// Records ever held behind a fence.
    pub held_total: u64,
    /// Keys whose current message set carries a route header (away from home or mid-move).
    pub routed_keys: usize,
    /// Whether route changes are recorded in a route topic (durable routes).
    pub durable_routes: bool,
    /// Route changes written to the route topic (acknowledged).
    pub route_writes: u64,
    /// Failed route-topic writes (each retried).
    pub route_write_failures: u64,
    /// Decided records waiting for room in librdkafka's queue.
    pub backlog: usize,
    /// Messages and requests in librdkafka's queues (not yet acknowledged).
    pub in_flight: usize,
    /// Partitions keys are homed on (the topic's count, `--active-partitions`, or the last
    /// growth's).
    pub homed_partitions: u32,
    /// The number of the epoch in force (0 before any fenced growth).
    pub epoch: u32,
    /// Whether a growth holds remapped keys in this producer right now (its epoch fences are
    /// being written, or, coordinated, the others' are awaited).
    pub growth_running: bool,
    /// Coordinated producers ([`super::Routes::Coordinated`]), else `None`.
    pub coordination: Option<CoordinationStats>,
}

/// What one member of coordinated producers sees and did.
#[derive(Debug, Clone)]
pub struct CoordinationStats {
    /// This member's id in the control log.
    pub member: u64,
    /// Whether this member decides moves now.
    pub decider: bool,
    /// The term in force.
    pub term: u64,
    /// Members heard from within the member timeout (this one included).
    pub live_members: usize,
    /// Members silent for the member timeout but not yet forgotten: while there is one, no
    /// key moves (see `docs/routing.md`, "A producer that stops").
    pub unaccounted_members: usize,
    /// Moves this member proposed (as decider).
    pub proposed: u64,
    /// Moves committed, read from the log.
    pub committed: u64,
    /// Moves aborted, read from the log (new terms abort open moves too).
    pub aborted: u64,
    /// Terms this member claimed.
    pub claims: u64,
    /// Control-topic writes that failed (each handled; see `docs/routing.md`).
    pub control_write_failures: u64,
    /// Keys with a move pending now (their records are held).
    pub pending_moves: usize,
    /// From reading a propose to reading its commit or abort: how long a moved key is held.
    pub hold_time: LatencyHistogram,
    /// The highest partition count a producer asked the group to grow to (0: none asked);
    /// above `homed_partitions`, a growth is wanted and the decider moves no key meanwhile.
    pub wanted_partitions: u32,
    /// Growths committed, read from the log.
    pub growths: u64,
    /// Growths called off (a producer it waited for was silent or left, the move timeout, a
    /// new term), read from the log; each is tried again.
    pub growths_aborted: u64,
}
