//! The consumer thread of an [`OrderedConsumer`]: the rdkafka `BaseConsumer`, its rebalance
//! context, and the poll → gate → handler → commit loop described in the
//! [parent module](super).
//!
//! The loop runs on one thread; handlers run in the slots of [`super::slots`]. librdkafka calls
//! the rebalance callbacks from inside `poll`, on the polling thread. The gate and the side
//! table of record bodies live in a mutex shared by the loop, the context and the slots (which
//! take it briefly to report a record processed); nobody holds it across `poll` or a handler
//! call.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use keyshift_core::key_demand::KeyDemand;
use keyshift_core::probe::{Probe, SeqVerdict, SequenceCheck};
use keyshift_core::protocol::{
    is_fence, FenceHeader, GateRecord, Offered, OrderGate, RouteHeader, FENCE_HEADER, ROUTE_HEADER,
};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};

use crate::lock;
use crate::trace_events::{unix_nanos, TraceEventSink};
use keyshift_trace::events::{TraceEvent, CORRELATION_ID_HEADER};
use keyshift_trace::{ProcessRecord, Tracing};

use super::retry::{DeadLetters, Failing, RetryingKey};
use super::slots::{Finisher, Job, Runner};
use super::{
    BlockedKey, ConsumerError, ConsumerStats, DeliveredRecord, Mode, OrderedConsumer,
    OrderedConsumerBuilder, ParkPolicy, Slots,
};

/// Longest a blocking poll waits when there is nothing to process, so that the commit and
/// barrier timers and a stop request are served promptly.
const IDLE_POLL: Duration = Duration::from_millis(20);
/// Longest the loop waits for a slot to finish while records are in flight, before it polls
/// Kafka again (a finished record may release its key's next one, so it waits on the slots,
/// not on the broker).
const SLOT_WAIT: Duration = Duration::from_millis(5);
/// Most records taken from librdkafka's queue in one turn of the loop.
const FETCH_BATCH: usize = 256;
/// How often a revocation waiting for running records says so.
const REVOKE_WAIT_REPORT: Duration = Duration::from_secs(5);

/// Reads of the committed offsets at assignment before giving up on them, and the pause
/// before the first retry (doubled each time).
const COMMITTED_READ_ATTEMPTS: u32 = 3;
const COMMITTED_READ_BACKOFF: Duration = Duration::from_millis(100);

/// Window over which a key's demand (consumers it needs) is judged: long enough for a hot key
/// to have many records in it, short enough that the metric follows a shifting load.
const DEMAND_WINDOW: Duration = Duration::from_secs(10);
/// Keys followed per demand window (see [`KeyDemand`]): bounds the memory whatever the key count.
const DEMAND_MAX_KEYS: usize = 4096;

/// One parked key on one barrier: (partition, key, barrier partition, fence offset).
type ParkId = (u32, Arc<[u8]>, u32, i64);

/// A consumed record waiting in the gate, with what the handler will need.
struct Stored {
    value: Vec<u8>,
    headers: Vec<(String, Option<Vec<u8>>)>,
    timestamp_ms: Option<i64>,
    route: Option<RouteHeader>,
    unordered: bool,
    consumed_at: Instant,
}

/// State shared by the loop, the rebalance callbacks and the slots.
pub(super) struct State {
    pub(super) gate: OrderGate,
    /// Bodies of offered, not yet delivered records (fences are never stored).
    bodies: HashMap<(u32, i64), Stored>,
    /// Unprocessed records per owned partition, for backpressure.
    pub(super) pending: HashMap<u32, usize>,
    /// Owned partitions and the last offset this member committed there (None: not yet).
    owned: HashMap<u32, Option<i64>>,
    paused: BTreeSet<u32>,
    /// Partitions stopped because a record below their start offset arrived: paused for good
    /// and nothing more offered, until they are reassigned.
    stalled: BTreeSet<u32>,
    /// The group's committed offset each owned partition was assigned at, when it was read.
    start: HashMap<u32, i64>,
    /// When this member first saw each key parked on its current barrier, and whether it was
    /// reported blocked already.
    parks: HashMap<ParkId, (Instant, bool)>,
    /// With trace events on: per partition, the highest offset this member processed and the
    /// last committed offset it reported, so a COMMIT event names only records it consumed.
    pub(super) commit_events: HashMap<u32, (i64, i64)>,
    /// Records handed to a slot and not finished, per partition and in all.
    in_flight: HashMap<u32, usize>,
    in_flight_total: usize,
    /// Records finished so far (lets a waiter tell a wake-up from a missed one).
    finished: u64,
    /// Failed records waiting for their next attempt, with their due time (not in flight).
    pub(super) retries: Vec<(Instant, Job)>,
    /// Records that failed at least once and are not done, by (partition, offset).
    pub(super) failing: HashMap<(u32, i64), Failing>,
    /// Which assignment each owned partition came with ([`DeliveredRecord::assignment`]).
    assignments: HashMap<u32, u64>,
    /// Assignments so far (the next one's number).
    assignment_count: u64,
}

impl State {
    fn enter_slot(&mut self, partition: u32) {
        *self.in_flight.entry(partition).or_default() += 1;
        self.in_flight_total += 1;
    }

    pub(super) fn leave_slot(&mut self, partition: u32) {
        if let Some(n) = self.in_flight.get_mut(&partition) {
            *n -= 1;
            if *n == 0 {
                self.in_flight.remove(&partition);
            }
        }
        self.in_flight_total = self.in_flight_total.saturating_sub(1);
        self.finished += 1;
    }

    fn running_on(&self, partitions: &[u32]) -> usize {
        partitions
            .iter()
            .map(|p| self.in_flight.get(p).copied().unwrap_or(0))
            .sum()
    }

    fn forget(&mut self, partition: u32) {
        self.commit_events.remove(&partition);
        self.gate.revoke(partition);
        self.bodies.retain(|(p, _), _| *p != partition);
        self.pending.remove(&partition);
        self.owned.remove(&partition);
        self.paused.remove(&partition);
        self.stalled.remove(&partition);
        self.start.remove(&partition);
        self.assignments.remove(&partition);
        self.parks.retain(|(p, ..), _| *p != partition);
        // Not processed, so not committed: the next owner gets them again, attempts afresh.
        self.retries
            .retain(|(_, job)| job.record.partition != partition);
        self.failing.retain(|(p, _), _| *p != partition);
    }

    /// The failed record due for its next attempt soonest, if it is due by `now`.
    fn due_retry(&mut self, now: Instant) -> Option<Job> {
        let (i, _) = self
            .retries
            .iter()
            .enumerate()
            .filter(|(_, (due, _))| *due <= now)
            .min_by_key(|(_, (due, _))| *due)?;
        Some(self.retries.swap_remove(i).1)
    }
}

/// The rdkafka context: rebalance callbacks keep the gate's assignment in step with the
/// group's.
struct GateContext {
    group: String,
    topic: String,
    timeout: Duration,
    state: Arc<Mutex<State>>,
    /// Notified when a slot finishes a record (see [`super::slots`]).
    done: Arc<Condvar>,
    stats: Arc<ConsumerStats>,
}

/// Names consumers in a shared serial check (unique within the process).
pub(super) static NEXT_WORKER_ID: AtomicU64 = AtomicU64::new(0);

impl ClientContext for GateContext {}

impl ConsumerContext for GateContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        ConsumerStats::add(&self.stats.rebalances, 1);
        let lost = consumer.assignment_lost();
        let revoked: Vec<u32> = tpl
            .elements_for_topic(&self.topic)
            .iter()
            .map(|e| e.partition() as u32)
            .collect();
        let since = Instant::now();
        let mut state = self.wait_for_slots(lock(&self.state), &revoked);
        let drained = since.elapsed();
        let mut commit = TopicPartitionList::new();
        for &p in &revoked {
            if let Some(offset) = state.gate.commit_offset(p) {
                if state.owned.get(&p).copied().flatten() != Some(offset) {
                    let _ =
                        commit.add_partition_offset(&self.topic, p as i32, Offset::Offset(offset));
                }
            }
        }
        // A lost assignment (session expired) may already belong to another member: committing
        // would overwrite its progress, so only a clean revocation commits.
        if lost {
            tracing::warn!(group = %self.group, partitions = ?revoked, "assignment lost; not committing");
        } else if commit.count() > 0 {
            ConsumerStats::add(&self.stats.commits, 1);
            match consumer.commit(&commit, CommitMode::Sync) {
                Ok(()) => {
                    tracing::debug!(group = %self.group, ?commit, "committed before revoke");
                    observe_commit(&mut state.gate, &self.topic, &commit);
                }
                Err(err) => {
                    ConsumerStats::add(&self.stats.commit_failures, 1);
                    tracing::warn!(group = %self.group, %err, "commit before revoke failed");
                }
            }
        }
        for p in &revoked {
            state.forget(*p);
        }
        self.publish(&state);
        tracing::info!(group = %self.group, topic = %self.topic, partitions = ?revoked, ?drained, took = ?since.elapsed(),
            "partitions revoked (drained: waiting for their records in flight; took: with the commit)");
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Assign(tpl) = rebalance else {
            return;
        };
        ConsumerStats::add(&self.stats.rebalances, 1);
        let mut ask = TopicPartitionList::new();
        for elem in tpl.elements_for_topic(&self.topic) {
            ask.add_partition(&self.topic, elem.partition());
        }
        if ask.count() == 0 {
            return;
        }
        // Where fetching starts: the committed offset, as librdkafka also reads it. A partition
        // the group never committed, or all of them when the read keeps failing, start at the
        // first record librdkafka delivers (it reads the committed offset itself and retries):
        // a guessed start (the low watermark, 0) would be committed and could move the group's
        // offset backwards.
        let committed = self.read_committed(consumer, &ask);
        let mut state = lock(&self.state);
        let mut assigned = Vec::new();
        for elem in ask.elements() {
            let p = elem.partition();
            let start = committed
                .as_ref()
                .and_then(|c| c.find_partition(&self.topic, p))
                .and_then(|e| match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                });
            // Never committed (the read succeeded): the low watermark is a safe start, since
            // committing it cannot move anything backwards.
            let read = start;
            let never_committed = committed.is_some() && read.is_none();
            let start = read.or_else(|| {
                never_committed
                    .then(|| consumer.fetch_watermarks(&self.topic, p, self.timeout).ok())
                    .flatten()
                    .map(|(low, _)| low)
            });
            match start {
                Some(start) => {
                    state.gate.assign(p as u32, start);
                    state.start.insert(p as u32, start);
                }
                None => state.gate.assign_unknown_start(p as u32),
            }
            state.owned.insert(p as u32, read);
            state.pending.insert(p as u32, 0);
            state.assignment_count += 1;
            let n = state.assignment_count;
            state.assignments.insert(p as u32, n);
            assigned.push((p, start));
        }
        self.publish(&state);
        tracing::info!(group = %self.group, topic = %self.topic, partitions = ?assigned, "partitions assigned (partition, committed start offset)");
    }

    /// librdkafka calls this for automatic commits and only when an `offset_commit_cb` is set
    /// for explicit asynchronous ones, which rust-rdkafka does not set: the interval commits are
    /// not reported here in practice, and nothing waits for them (see `commit_barriers`). A
    /// report that does arrive is still used.
    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        if result.is_ok() {
            // A commit that succeeded is a barrier other keys may wait on, here too.
            let mut state = lock(&self.state);
            observe_commit(&mut state.gate, &self.topic, offsets);
            self.publish(&state);
        }
        if let Err(err) = result {
            ConsumerStats::add(&self.stats.commit_failures, 1);
            tracing::warn!(group = %self.group, %err, ?offsets, "commit failed; retrying on the next interval");
            // Forget what we believed committed so the next interval commits again.
            let mut state = lock(&self.state);
            for elem in offsets.elements_for_topic(&self.topic) {
                if let Some(last) = state.owned.get_mut(&(elem.partition() as u32)) {
                    *last = None;
                }
            }
        }
    }
}

impl GateContext {
    fn publish(&self, state: &State) {
        publish(&self.stats, state);
    }

    /// Waits until no slot runs a record of `partitions`, so that what is committed before
    /// they go includes every record this member processes there, and their next owner never
    /// starts on a key this member is still processing. Unbounded, as a handler call always
    /// was: a handler that never returns keeps the partitions here (and says so).
    fn wait_for_slots<'a>(
        &self,
        mut state: MutexGuard<'a, State>,
        partitions: &[u32],
    ) -> MutexGuard<'a, State> {
        let since = Instant::now();
        while state.running_on(partitions) > 0 {
            let (next, timeout) = self
                .done
                .wait_timeout(state, REVOKE_WAIT_REPORT)
                .unwrap_or_else(|p| p.into_inner());
            state = next;
            if timeout.timed_out() && state.running_on(partitions) > 0 {
                tracing::warn!(group = %self.group, topic = %self.topic, ?partitions, running = state.running_on(partitions),
                    waited = ?since.elapsed(), "revocation waits for records still in their handlers");
            }
        }
        state
    }

    /// The group's committed offsets of `ask`, retried with backoff; None if every read failed.
    fn read_committed(
        &self,
        consumer: &BaseConsumer<Self>,
        ask: &TopicPartitionList,
    ) -> Option<TopicPartitionList> {
        let mut backoff = COMMITTED_READ_BACKOFF;
        for attempt in 1..=COMMITTED_READ_ATTEMPTS {
            match consumer.committed_offsets(ask.clone(), self.timeout) {
                Ok(c) => return Some(c),
                Err(err) if attempt < COMMITTED_READ_ATTEMPTS => {
                    tracing::warn!(group = %self.group, %err, attempt, "reading committed offsets on assignment failed; retrying");
                    std::thread::sleep(backoff);
                    backoff *= 2;
                }
                Err(err) => {
                    ConsumerStats::add(&self.stats.offset_read_failures, 1);
                    tracing::error!(group = %self.group, %err, attempts = attempt,
                        "reading committed offsets on assignment failed; starting each partition at the first record delivered and committing nothing before it");
                }
            }
        }
        None
    }
}

/// Tells the gate about the offsets of a commit that succeeded (partitions without an error).
fn observe_commit(gate: &mut OrderGate, topic: &str, offsets: &TopicPartitionList) {
    for elem in offsets.elements_for_topic(topic) {
        if let (Offset::Offset(o), Ok(())) = (elem.offset(), elem.error()) {
            gate.observe_committed(elem.partition() as u32, o);
        }
    }
}

pub(super) fn publish(stats: &ConsumerStats, state: &State) {
    ConsumerStats::set(&stats.owned_partitions, state.owned.len() as u64);
    ConsumerStats::set(&stats.paused_partitions, state.paused.len() as u64);
    ConsumerStats::set(&stats.stalled_partitions, state.stalled.len() as u64);
    ConsumerStats::set(&stats.parked_now, state.gate.parked() as u64);
    ConsumerStats::set(&stats.pending_now, state.gate.pending() as u64);
}

/// Creates the client, subscribes and starts the thread and its slots.
pub(super) fn spawn(
    builder: OrderedConsumerBuilder,
    slots: Slots,
) -> Result<OrderedConsumer, ConsumerError> {
    let stats = Arc::new(ConsumerStats::new());
    let done = Arc::new(Condvar::new());
    let state = Arc::new(Mutex::new(State {
        gate: OrderGate::new(),
        bodies: HashMap::new(),
        pending: HashMap::new(),
        owned: HashMap::new(),
        paused: BTreeSet::new(),
        stalled: BTreeSet::new(),
        start: HashMap::new(),
        parks: HashMap::new(),
        commit_events: HashMap::new(),
        in_flight: HashMap::new(),
        in_flight_total: 0,
        finished: 0,
        retries: Vec::new(),
        failing: HashMap::new(),
        assignments: HashMap::new(),
        assignment_count: 0,
    }));
    let context = GateContext {
        group: builder.group.clone(),
        topic: builder.topic.clone(),
        timeout: builder.request_timeout,
        state: Arc::clone(&state),
        done: Arc::clone(&done),
        stats: Arc::clone(&stats),
    };
    let mut config = builder.settings.consumer_config(&builder.group);
    if let Some(session) = builder.session_timeout {
        let ms = session.as_millis().max(6);
        let heartbeat = (ms / 6).max(1);
        config.set("session.timeout.ms", ms.to_string());
        config.set("heartbeat.interval.ms", heartbeat.to_string());
    }
    if builder.rebalancing == super::Rebalancing::Cooperative {
        config.set(
            "partition.assignment.strategy",
            builder.rebalancing.assignment_strategy(),
        );
    }
    // The gate decides what is committed; librdkafka must neither commit nor store offsets.
    config.set("enable.auto.commit", "false");
    config.set("enable.auto.offset.store", "false");
    // Passthrough wins over everything, as for every keyshift client.
    for property in builder.settings.passthrough() {
        config.set(property.key(), property.value());
    }
    let consumer: BaseConsumer<GateContext> =
        config
            .create_with_context(context)
            .map_err(|source| ConsumerError::Client {
                group: builder.group.clone(),
                bootstrap: builder.settings.bootstrap_servers().to_owned(),
                source: Box::new(source),
            })?;
    consumer
        .subscribe(&[&builder.topic])
        .map_err(|source| ConsumerError::Subscribe {
            group: builder.group.clone(),
            topic: builder.topic.clone(),
            source: Box::new(source),
        })?;
    let mode = Arc::new(AtomicU8::new(Mode::Run as u8));
    let name = builder
        .thread_name
        .clone()
        .unwrap_or_else(|| format!("keyshift-consumer-{}", builder.group));
    let dead_letters = match &builder.dead_letter_topic {
        None => None,
        Some(topic) => Some(
            DeadLetters::new(&builder.settings, topic, &builder.topic, &builder.group).map_err(
                |source| ConsumerError::Client {
                    group: builder.group.clone(),
                    bootstrap: builder.settings.bootstrap_servers().to_owned(),
                    source: Box::new(source),
                },
            )?,
        ),
    };
    let finisher = Arc::new(Finisher {
        state: Arc::clone(&state),
        done: Arc::clone(&done),
        stats: Arc::clone(&stats),
        serial_check: builder.serial_check.clone(),
        group: builder.group.clone(),
        commit_events: builder.events.is_some(),
        demand: Mutex::new(KeyDemand::new(DEMAND_WINDOW.as_secs_f64(), DEMAND_MAX_KEYS)),
        started: Instant::now(),
        panic: Mutex::new(None),
        retry: builder.retry,
        dead_letters,
    });
    let (runner, concurrency) = match slots {
        Slots::Sync(handlers) => {
            let n = handlers.len();
            (Runner::threads(handlers, &finisher, &name), n)
        }
        Slots::Async(handler) => (
            Runner::tasks(handler, &finisher, &name),
            builder.concurrency,
        ),
    };
    let runner = runner.map_err(|source| ConsumerError::Thread {
        group: builder.group.clone(),
        source,
    })?;
    let run = Loop {
        local_check: SequenceCheck::default(),
        shared_check: builder.shared_check.clone(),
        group: builder.group.clone(),
        topic: builder.topic.clone(),
        barrier_poll_interval: builder.barrier_poll_interval,
        commit_interval: builder.commit_interval,
        max_pending: builder.max_pending_per_partition,
        timeout: builder.request_timeout,
        park_timeout: builder.park_timeout,
        park_policy: builder.park_policy,
        state,
        done,
        stats: Arc::clone(&stats),
        mode: Arc::clone(&mode),
        finisher,
        runner: Some(runner),
        concurrency,
        tracing: builder.tracing.clone(),
        events: builder.events.clone(),
        client_id: builder.settings.get_client_id().to_owned(),
    };
    let thread = std::thread::Builder::new()
        .name(name)
        .spawn(move || run.run(consumer))
        .map_err(|source| ConsumerError::Thread {
            group: builder.group.clone(),
            source,
        })?;
    Ok(OrderedConsumer {
        group: builder.group,
        topic: builder.topic,
        mode,
        stats,
        thread: Some(thread),
    })
}

/// The loop's own state (the part the rebalance callbacks never touch).
struct Loop {
    local_check: SequenceCheck,
    shared_check: Option<(Arc<Mutex<SequenceCheck>>, bool)>,
    group: String,
    topic: String,
    barrier_poll_interval: Duration,
    commit_interval: Duration,
    max_pending: usize,
    timeout: Duration,
    park_timeout: Duration,
    park_policy: ParkPolicy,
    state: Arc<Mutex<State>>,
    /// Notified when a slot finishes a record.
    done: Arc<Condvar>,
    stats: Arc<ConsumerStats>,
    mode: Arc<AtomicU8>,
    /// Completes records for the slots; holds the key demand and a handler's panic.
    finisher: Arc<Finisher>,
    /// The slots; taken when the loop ends.
    runner: Option<Runner>,
    /// Most records in the slots at once.
    concurrency: usize,
    tracing: Option<Tracing>,
    events: Option<TraceEventSink>,
    client_id: String,
}

impl Loop {
    fn run(mut self, consumer: BaseConsumer<GateContext>) -> Result<(), ConsumerError> {
        tracing::info!(group = %self.group, topic = %self.topic, concurrency = self.concurrency, "ordered consumer started");
        let mut next_commit = Instant::now() + self.commit_interval;
        let mut next_barrier = Instant::now();
        let outcome = loop {
            let mode = self.mode.load(Ordering::SeqCst);
            if mode != Mode::Run as u8 {
                break mode;
            }
            if let Some(message) = lock(&self.finisher.panic).clone() {
                // The handler's panic ends the consumer as it did when handlers ran inline
                // (`OrderedConsumer::join` reports it); closing the consumer on the way out
                // commits what was processed, never the record that panicked.
                std::panic::resume_unwind(Box::new(message));
            }
            let finished = lock(&self.state).finished;
            let wait = if self.dispatch() {
                Duration::ZERO
            } else if self.wait_for_a_slot(finished) {
                // Records are in flight: a finished one may release its key's next record,
                // so the loop waited on the slots and only looks at the broker's queue.
                Duration::ZERO
            } else {
                IDLE_POLL
            };
            self.fetch(&consumer, wait)?;
            self.commit_barriers(&consumer);
            let now = Instant::now();
            if now >= next_commit {
                self.commit_all(&consumer, CommitMode::Async);
                next_commit = now + self.commit_interval;
            }
            if now >= next_barrier {
                self.check_barriers(&consumer);
                self.check_parked(now);
                self.publish_demand(now);
                next_barrier = now + self.barrier_poll_interval;
            }
            self.backpressure(&consumer);
        };
        let runner = self.runner.take();
        if outcome == Mode::Crash as u8 {
            tracing::warn!(group = %self.group, topic = %self.topic, "ordered consumer crashing on request: no commit, no leave");
            crash(consumer);
            // Records still in their handlers finish there, unreported, as in a killed process.
            if let Some(runner) = runner {
                runner.close(false);
            }
            return Ok(());
        }
        // Clean stop: let the records in flight finish, commit the processed prefixes, then
        // closing the consumer (its drop) revokes the partitions through the context and sends
        // LeaveGroup.
        self.wait_for_all_slots();
        self.commit_all(&consumer, CommitMode::Sync);
        drop(consumer);
        if let Some(runner) = runner {
            runner.close(true);
        }
        tracing::info!(group = %self.group, topic = %self.topic, "ordered consumer stopped");
        Ok(())
    }

    /// Takes up to [`FETCH_BATCH`] records from librdkafka's queue, waiting at most `wait` for
    /// the first, and offers them to the gate.
    fn fetch(
        &mut self,
        consumer: &BaseConsumer<GateContext>,
        mut wait: Duration,
    ) -> Result<(), ConsumerError> {
        for _ in 0..FETCH_BATCH {
            match consumer.poll(wait) {
                Some(Ok(message)) => self.offer(&message),
                Some(Err(KafkaError::PartitionEOF(_))) => {}
                Some(Err(err @ KafkaError::MessageConsumptionFatal(_))) => {
                    tracing::error!(group = %self.group, topic = %self.topic, %err, "fatal consumer error");
                    self.wait_for_all_slots();
                    self.commit_all(consumer, CommitMode::Sync);
                    return Err(ConsumerError::Fatal {
                        group: self.group.clone(),
                        topic: self.topic.clone(),
                        source: Box::new(err),
                    });
                }
                Some(Err(err)) => {
                    tracing::warn!(group = %self.group, topic = %self.topic, %err, "consumer error");
                }
                None => return Ok(()),
            }
            wait = Duration::ZERO;
        }
        Ok(())
    }

    /// If records are in flight, waits until one more finishes than `finished` (or
    /// [`SLOT_WAIT`]) and returns true; returns false at once when none are.
    fn wait_for_a_slot(&self, finished: u64) -> bool {
        let state = lock(&self.state);
        if state.in_flight_total == 0 {
            return false;
        }
        drop(
            self.done
                .wait_timeout_while(state, SLOT_WAIT, |s| s.finished == finished)
                .unwrap_or_else(|p| p.into_inner()),
        );
        true
    }

    /// Waits until no record is in flight (a stop or a fatal error commits after it).
    fn wait_for_all_slots(&self) {
        let state = lock(&self.state);
        drop(
            self.done
                .wait_while(state, |s| s.in_flight_total > 0)
                .unwrap_or_else(|p| p.into_inner()),
        );
    }

    /// Closes the key-demand window if it is due and publishes its infeasible keys.
    fn publish_demand(&mut self, now: Instant) {
        let mut demand = lock(&self.finisher.demand);
        demand.tick(
            now.saturating_duration_since(self.finisher.started)
                .as_secs_f64(),
        );
        self.stats
            .set_infeasible_keys(demand.infeasible(), demand.infeasible_count());
    }

    /// Reads one consumed record's headers and offers it to the gate.
    fn offer(&mut self, message: &BorrowedMessage<'_>) {
        if message.topic() != self.topic {
            return;
        }
        let partition = message.partition() as u32;
        let offset = message.offset();
        if lock(&self.state).stalled.contains(&partition) {
            return;
        }
        let mut route = None;
        let mut fence_header = false;
        let mut keyshift_header = false;
        let mut unordered = false;
        let mut headers = Vec::new();
        if let Some(hs) = message.headers() {
            for h in hs.iter() {
                keyshift_header |= h.key == ROUTE_HEADER || h.key == FENCE_HEADER;
                if h.key == ROUTE_HEADER {
                    match RouteHeader::decode(h.value.unwrap_or_default()) {
                        Ok(r) => route = Some(r),
                        Err(err) => {
                            unordered = true;
                            ConsumerStats::add(&self.stats.malformed_headers, 1);
                            tracing::warn!(group = %self.group, topic = %self.topic, partition, offset, %err,
                                "undecodable keyshift-route header; delivering the record unordered");
                        }
                    }
                } else if h.key == FENCE_HEADER {
                    match FenceHeader::decode(h.value.unwrap_or_default()) {
                        Ok(_) => fence_header = true,
                        Err(err) => {
                            unordered = true;
                            ConsumerStats::add(&self.stats.malformed_headers, 1);
                            tracing::warn!(group = %self.group, topic = %self.topic, partition, offset, %err,
                                "undecodable keyshift-fence header; delivering the record to the application unordered instead of as a fence");
                        }
                    }
                }
                headers.push((h.key.to_owned(), h.value.map(<[u8]>::to_vec)));
            }
        }
        // A record whose route could not be read must not be gated on a barrier it does not
        // name; a broken fence is not trusted as a fence (the application sees it instead).
        // Without any keyshift header (stripped by a mirror tool, say) the reserved fence value
        // alone marks a fence; with one, the headers decide, so a broken header is not
        // overruled by the value.
        let value = if keyshift_header {
            None
        } else {
            message.payload()
        };
        let mut fence = is_fence(fence_header, value);
        if unordered {
            route = None;
            fence = false;
        }
        // Fences always have a key; the gate releases a keyless record as data whatever it is
        // flagged, so it must be stored (and delivered) as data too.
        if message.key().is_none() {
            fence = false;
        }
        let mut state = lock(&self.state);
        let offered = state.gate.offer(GateRecord {
            partition,
            offset,
            key: message.key().map(Into::into),
            route,
            fence,
        });
        match offered {
            Offered::Accepted => {
                if !fence {
                    state.bodies.insert(
                        (partition, offset),
                        Stored {
                            value: message.payload().unwrap_or_default().to_vec(),
                            headers,
                            timestamp_ms: message.timestamp().to_millis(),
                            route,
                            unordered,
                            consumed_at: Instant::now(),
                        },
                    );
                    *state.pending.entry(partition).or_default() += 1;
                }
            }
            Offered::Duplicate => ConsumerStats::add(&self.stats.redelivered_skipped, 1),
            Offered::BelowStart => {
                ConsumerStats::add(&self.stats.below_start, 1);
                if state.stalled.insert(partition) {
                    let start = state.start.get(&partition).copied();
                    tracing::error!(group = %self.group, topic = %self.topic, partition, offset, committed = ?start,
                        "record below the group's committed offset: the log lost the committed offset (truncation, recreated topic) and the client restarted lower; stopping this partition instead of skipping or replaying records — reset the group's offset for it deliberately and restart");
                }
            }
            Offered::Unassigned => {
                tracing::debug!(
                    partition,
                    offset,
                    "record of an unassigned partition ignored"
                );
            }
        }
        self.publish(&state);
    }

    /// Hands released records to free slots. Returns whether it handed any (then more may be
    /// ready, so the next poll does not wait).
    fn dispatch(&mut self) -> bool {
        let mut any = false;
        loop {
            let (released, stored, assignment) = {
                let mut state = lock(&self.state);
                if state.in_flight_total >= self.concurrency {
                    return any;
                }
                // A failed record due again goes first: its key has waited longest.
                if let Some(job) = state.due_retry(Instant::now()) {
                    state.enter_slot(job.record.partition);
                    drop(state);
                    if let Some(runner) = &self.runner {
                        runner.submit(job);
                    }
                    any = true;
                    continue;
                }
                let Some(released) = state.gate.poll() else {
                    return any;
                };
                let stored = state.bodies.remove(&(released.partition, released.offset));
                if stored.is_some() {
                    state.enter_slot(released.partition);
                }
                let assignment = state
                    .assignments
                    .get(&released.partition)
                    .copied()
                    .unwrap_or_default();
                (released, stored, assignment)
            };
            any = true;
            let Some(stored) = stored else {
                // Cannot happen: every released non-fence record was stored when offered and
                // bodies are dropped only with their partition, which also drops its releases.
                tracing::error!(
                    partition = released.partition,
                    offset = released.offset,
                    "released record without a body; skipping it"
                );
                continue;
            };
            let now = Instant::now();
            let park_time = if released.parked {
                now.saturating_duration_since(stored.consumed_at)
            } else {
                Duration::ZERO
            };
            let probe = Probe::decode(&stored.value).ok();
            if probe.is_none() {
                ConsumerStats::add(&self.stats.not_probes, 1);
            }
            // A null key has no order to check. Checked here, in release order, which is the
            // order the gate guarantees whatever the slots' finishing order.
            let verdict = match (&released.key, &probe) {
                (Some(key), Some(p)) => Some(self.check(key, p)),
                _ => None,
            };
            let record = DeliveredRecord {
                partition: released.partition,
                offset: released.offset,
                key: released.key.as_deref().map(<[u8]>::to_vec),
                value: stored.value,
                headers: stored.headers,
                timestamp_ms: stored.timestamp_ms,
                route: stored.route,
                parked: released.parked,
                order_exception: released.forced,
                park_time,
                fetched_at: stored.consumed_at,
                assignment,
                unordered: stored.unordered,
                probe,
                verdict,
            };
            if let Some(p) = &record.probe {
                let now_us = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_micros() as u64);
                self.stats
                    .record_e2e(now_us.saturating_sub(p.sent_us) as f64 / 1e6);
            }
            if let Some(events) = &self.events {
                emit_consume(events, &self.topic, &self.group, &self.client_id, &record);
            }
            let span = self.tracing.as_ref().map(|t| {
                t.start_process(&ProcessRecord {
                    topic: &self.topic,
                    group: &self.group,
                    client_id: &self.client_id,
                    partition: record.partition,
                    offset: record.offset,
                    key: record.key.as_deref().unwrap_or_default(),
                    headers: &record.headers,
                    fetched_at: record.fetched_at,
                    parked: record.parked.then_some(record.park_time),
                    migrated_from: record.route.map(|r| r.from_partition),
                })
            });
            if let Some(runner) = &self.runner {
                runner.submit(Job::first(record, span));
            }
        }
    }

    /// Classifies a probe's sequence number (shared check if configured, else local).
    fn check(&mut self, key: &[u8], probe: &Probe) -> SeqVerdict {
        let local = self.local_check.observe(key, probe.seq, false);
        let verdict = match &self.shared_check {
            Some((shared, from_zero)) => shared
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .observe(key, probe.seq, *from_zero),
            None => local,
        };
        ConsumerStats::add(&self.stats.probes, 1);
        match verdict {
            SeqVerdict::Duplicate => ConsumerStats::add(&self.stats.duplicates, 1),
            SeqVerdict::Violation => {
                ConsumerStats::add(&self.stats.order_violations, 1);
                tracing::error!(group = %self.group, key = %String::from_utf8_lossy(key), seq = probe.seq, "per-key order violation");
            }
            SeqVerdict::InOrder | SeqVerdict::Gap => {}
        }
        verdict
    }

    /// Commits synchronously, in one request, the partitions someone waits on:
    /// - of fences just passed: the key's parked records on its new partition wait for exactly
    ///   this commit;
    /// - owned partitions whose progress would release a parked key but is not known committed
    ///   ([`OrderGate::unconfirmed_barriers`]). Needed because the interval commits are
    ///   asynchronous and librdkafka reports the outcome of an explicit asynchronous commit only
    ///   to an `offset_commit_cb`, which rust-rdkafka's event API does not install: the gate
    ///   never hears of them, and a key waiting for progress that only an interval commit
    ///   carried (a fence passed while an earlier record of another key still held the commit
    ///   offset) would wait forever.
    ///
    /// Synchronously, because a synchronous success is reported to the gate at once.
    fn commit_barriers(&mut self, consumer: &BaseConsumer<GateContext>) {
        let mut state = lock(&self.state);
        let mut partitions = BTreeSet::new();
        while let Some(f) = state.gate.poll_fence() {
            ConsumerStats::add(&self.stats.fences, 1);
            partitions.insert(f.partition);
        }
        for p in state.gate.unconfirmed_barriers() {
            // The same offset may have gone out asynchronously already: send it again.
            if let Some(last) = state.owned.get_mut(&p) {
                *last = None;
            }
            partitions.insert(p);
        }
        if !partitions.is_empty() {
            self.commit(consumer, &mut state, Some(&partitions), CommitMode::Sync);
        }
    }

    /// Commits every owned partition whose processed prefix moved.
    fn commit_all(&mut self, consumer: &BaseConsumer<GateContext>, mode: CommitMode) {
        let mut state = lock(&self.state);
        self.commit(consumer, &mut state, None, mode);
    }

    fn commit(
        &self,
        consumer: &BaseConsumer<GateContext>,
        state: &mut State,
        only: Option<&BTreeSet<u32>>,
        mode: CommitMode,
    ) {
        let mut tpl = TopicPartitionList::new();
        let mut moved = Vec::new();
        for (&p, last) in &state.owned {
            if only.is_some_and(|o| !o.contains(&p)) {
                continue;
            }
            let Some(offset) = state.gate.commit_offset(p) else {
                continue;
            };
            if *last != Some(offset) {
                let _ = tpl.add_partition_offset(&self.topic, p as i32, Offset::Offset(offset));
                moved.push((p, offset));
            }
        }
        if moved.is_empty() {
            return;
        }
        ConsumerStats::add(&self.stats.commits, 1);
        match consumer.commit(&tpl, mode) {
            Ok(()) => {
                // An async commit is only sent here; its outcome is not reported (see
                // `commit_callback`), so only a synchronous success tells the gate.
                if matches!(mode, CommitMode::Sync) {
                    observe_commit(&mut state.gate, &self.topic, &tpl);
                }
                let now = unix_nanos(SystemTime::now());
                for (p, offset) in moved {
                    state.owned.insert(p, Some(offset));
                    // Report a commit only when it covers a record this member processed
                    // and moved past the last one reported (like the interceptor, which
                    // sees only its own consumer's commits).
                    let covers = state
                        .commit_events
                        .get_mut(&p)
                        .filter(|(processed, reported)| {
                            offset - 1 <= *processed && offset > *reported
                        });
                    if let (Some(events), Some((_, reported))) = (&self.events, covers) {
                        *reported = offset;
                        events.emit(&TraceEvent::commit(
                            &self.topic,
                            p as i32,
                            offset,
                            &self.client_id,
                            &self.group,
                            now,
                        ));
                    }
                }
            }
            Err(err) => {
                ConsumerStats::add(&self.stats.commit_failures, 1);
                tracing::warn!(group = %self.group, topic = %self.topic, %err, "commit failed; retrying on the next interval");
            }
        }
    }

    /// Reads the group's committed offsets of the partitions parked records wait on.
    fn check_barriers(&mut self, consumer: &BaseConsumer<GateContext>) {
        let barriers = lock(&self.state).gate.barriers();
        if barriers.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for (p, _) in &barriers {
            tpl.add_partition(&self.topic, *p as i32);
        }
        ConsumerStats::add(&self.stats.barrier_checks, 1);
        match consumer.committed_offsets(tpl, self.timeout) {
            Ok(committed) => {
                let mut state = lock(&self.state);
                for elem in committed.elements_for_topic(&self.topic) {
                    if let Offset::Offset(o) = elem.offset() {
                        state.gate.observe_committed(elem.partition() as u32, o);
                    }
                }
                self.publish(&state);
            }
            Err(err) => {
                ConsumerStats::add(&self.stats.barrier_check_failures, 1);
                tracing::warn!(group = %self.group, topic = %self.topic, %err, ?barriers, "reading committed offsets for migration barriers failed; retrying");
            }
        }
    }

    /// Reports keys parked longer than the park timeout and applies the park policy to them.
    fn check_parked(&mut self, now: Instant) {
        let mut state = lock(&self.state);
        let parked = state.gate.parked_keys();
        let current: HashSet<ParkId> = parked
            .iter()
            .map(|k| {
                (
                    k.partition,
                    Arc::clone(&k.key),
                    k.barrier_partition,
                    k.fence_offset,
                )
            })
            .collect();
        state.parks.retain(|id, _| current.contains(id));
        let mut blocked = Vec::new();
        for k in parked {
            let id = (
                k.partition,
                Arc::clone(&k.key),
                k.barrier_partition,
                k.fence_offset,
            );
            let (since, reported) = state.parks.entry(id).or_insert((now, false));
            let age = now.saturating_duration_since(*since);
            if age < self.park_timeout {
                continue;
            }
            let first_report = !std::mem::replace(reported, true);
            let key = String::from_utf8_lossy(&k.key);
            match self.park_policy {
                ParkPolicy::Wait => {
                    if first_report {
                        tracing::error!(group = %self.group, topic = %self.topic, partition = k.partition, key = %key,
                            barrier_partition = k.barrier_partition, fence_offset = k.fence_offset, records = k.records, ?age,
                            "key parked longer than the park timeout: its old partition is not committed past the fence; still waiting");
                    }
                    blocked.push(BlockedKey {
                        partition: k.partition,
                        key: k.key.to_vec(),
                        barrier_partition: k.barrier_partition,
                        fence_offset: k.fence_offset,
                        records: k.records,
                        age,
                    });
                }
                ParkPolicy::Release => {
                    tracing::error!(group = %self.group, topic = %self.topic, partition = k.partition, key = %key,
                        barrier_partition = k.barrier_partition, fence_offset = k.fence_offset, records = k.records, ?age,
                        "key parked longer than the park timeout: releasing its records without their barrier (order exceptions)");
                    state.gate.release_parked(k.partition, &k.key);
                }
            }
        }
        blocked.sort_by_key(|b| std::cmp::Reverse(b.age));
        self.stats.set_blocked_keys(blocked);
        let mut retrying: Vec<RetryingKey> = state
            .failing
            .iter()
            .map(|(&(partition, offset), f)| RetryingKey {
                partition,
                offset,
                key: f.key.clone(),
                attempts: f.attempts,
                age: now.saturating_duration_since(f.since),
                last_error: f.last_error.clone(),
            })
            .collect();
        retrying.sort_by_key(|k| std::cmp::Reverse(k.age));
        self.stats.set_retrying_keys(retrying);
        self.publish(&state);
    }

    /// Pauses partitions with too many unprocessed records that are not parked; resumes them
    /// at half. Stalled partitions stay paused.
    fn backpressure(&mut self, consumer: &BaseConsumer<GateContext>) {
        let mut state = lock(&self.state);
        let (mut pause, mut resume) = (TopicPartitionList::new(), TopicPartitionList::new());
        let mut changes = Vec::new();
        for (&p, &n) in &state.pending {
            let paused = state.paused.contains(&p);
            let stalled = state.stalled.contains(&p);
            let flowing = n.saturating_sub(state.gate.parked_on(p));
            if !paused && (stalled || flowing >= self.max_pending) {
                pause.add_partition(&self.topic, p as i32);
                changes.push((p, true));
            } else if paused && !stalled && flowing <= self.max_pending / 2 {
                resume.add_partition(&self.topic, p as i32);
                changes.push((p, false));
            }
        }
        if changes.is_empty() {
            return;
        }
        if pause.count() > 0 {
            if let Err(err) = consumer.pause(&pause) {
                tracing::warn!(%err, "pausing partitions failed");
            }
        }
        if resume.count() > 0 {
            if let Err(err) = consumer.resume(&resume) {
                tracing::warn!(%err, "resuming partitions failed");
            }
        }
        for (p, paused) in changes {
            tracing::debug!(partition = p, paused, "backpressure");
            if paused {
                state.paused.insert(p);
            } else {
                state.paused.remove(&p);
            }
        }
        self.publish(&state);
    }

    fn publish(&self, state: &State) {
        publish(&self.stats, state);
    }
}

/// The CONSUME event of a record, dated when the consumer fetched it (as the interceptor's
/// `onConsume` would be).
fn emit_consume(
    events: &TraceEventSink,
    topic: &str,
    group: &str,
    client_id: &str,
    record: &DeliveredRecord,
) {
    let correlation = record
        .headers
        .iter()
        .rev()
        .find(|(k, _)| k == CORRELATION_ID_HEADER)
        .and_then(|(_, v)| v.as_deref())
        .and_then(|v| std::str::from_utf8(v).ok());
    let fetched = SystemTime::now()
        .checked_sub(record.fetched_at.elapsed())
        .unwrap_or_else(SystemTime::now);
    events.emit(&TraceEvent::consume(
        topic,
        record.partition as i32,
        record.offset,
        correlation,
        client_id,
        group,
        unix_nanos(fetched),
    ));
}

/// Destroys the client without closing the consumer: no final commit, no LeaveGroup — what a
/// killed process looks like to the group.
fn crash(consumer: BaseConsumer<GateContext>) {
    let ptr = consumer.client().native_ptr();
    // SAFETY: `ptr` is the live handle owned by `consumer`. rd_kafka_destroy_flags is called
    // once, from this application thread (never from a librdkafka thread), and `consumer` is
    // then forgotten so that its Drop neither closes the consumer queue nor destroys the
    // handle a second time. The consumer queue and context it owned are leaked on purpose.
    unsafe {
        rdkafka::bindings::rd_kafka_destroy_flags(
            ptr,
            rdkafka::bindings::RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE,
        );
    }
    std::mem::forget(consumer);
}
