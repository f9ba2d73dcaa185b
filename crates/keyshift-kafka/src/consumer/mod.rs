//! The ordered consumer: a Kafka consumer-group member that delivers records to the
//! application in per-key order across fenced migrations.
//!
//! An [`OrderedConsumer`] runs one rdkafka `BaseConsumer` on a thread of its own and puts the
//! core's [`OrderGate`](keyshift_core::protocol::OrderGate) between Kafka and the application
//! ([`RecordHandler`]):
//!
//! - each consumed record is offered to the gate with its decoded `keyshift-route` header and
//!   fence flag (a `keyshift-fence` header, or — without any keyshift header, e.g. stripped by a
//!   mirror tool — the reserved value [`FENCE_VALUE`](keyshift_core::protocol::FENCE_VALUE);
//!   see [`is_fence`](keyshift_core::protocol::is_fence)); the gate releases it once every
//!   earlier record of its key is processed, including, for a migrated key, everything on its
//!   old partition up to the fence. Only the waiting key parks; other keys keep flowing;
//! - while records are parked on a partition this member does not own, the group's committed
//!   offset of that partition is read (OffsetFetch) every
//!   [`barrier_poll_interval`](OrderedConsumerBuilder::barrier_poll_interval);
//! - commits are manual and never pass an unprocessed record: every
//!   [`commit_interval`](OrderedConsumerBuilder::commit_interval) the gate's processed prefix
//!   of each owned partition is committed (if it moved), at once after a fence is passed (the
//!   new partition's parked records wait for exactly that commit), synchronously before
//!   partitions are revoked, and on a clean stop;
//! - a parked key is released only once its old partition's *committed* offset passes the
//!   fence: the member owning that partition commits it promptly after the fence and reports
//!   each successful commit to the gate, so a lost commit can never let a key's old records be
//!   replayed after its new ones;
//! - up to [`concurrency`](OrderedConsumerBuilder::concurrency) released records are
//!   processed at once (one by default), never two of one key: the gate releases a key's next
//!   record only when the previous one is processed, so records of one key run one after
//!   another in per-key order across partitions and migrations, while other keys fill the other
//!   slots. Synchronous handlers get a thread each ([`OrderedConsumerBuilder::spawn_each`]),
//!   asynchronous ones a future per record ([`OrderedConsumerBuilder::spawn_async`]). A record
//!   without a key (null key, not the empty key) has no order to keep and never waits for
//!   another record;
//! - a record whose handler fails is retried after a backoff as the
//!   [`RetryPolicy`](OrderedConsumerBuilder::retry) says (only its key waits; its slot serves
//!   other keys meanwhile), then written to the
//!   [dead-letter topic](OrderedConsumerBuilder::dead_letter_topic) if there is one; by
//!   default one attempt, after which it counts as processed with its error. Failing keys are
//!   listed with their attempts and age ([`StatsSnapshot::retrying_keys`]);
//! - a partition holding more than
//!   [`max_pending_per_partition`](OrderedConsumerBuilder::max_pending_per_partition)
//!   unprocessed records that are not parked is paused (fetching stops) until half of them are
//!   processed. Parked records are left out of that count, so one parked key never stops the
//!   other keys of its partition; they are bounded by the park policy instead. Pausing per
//!   partition, never all, cannot deadlock: the record with the earliest append time among the
//!   unprocessed ones is always releasable, because what it waits for was appended even
//!   earlier and is fetched or already processed;
//! - a key parked longer than [`park_timeout`](OrderedConsumerBuilder::park_timeout) is
//!   reported (an error log and [`StatsSnapshot::blocked_keys`] name the key, its partition,
//!   the barrier and the age) and then handled by the [`ParkPolicy`]: keep waiting (the
//!   default) or release its records unordered, each counted as an order exception.
//!
//! Offsets: at assignment the group's committed offsets are read (retried); if they cannot be
//! read, the gate takes the first record librdkafka delivers as the start, so a guess never
//! gets committed and the group's offset never moves backwards. A record below the committed
//! offset at assignment means the log lost the committed offset (truncation after an unclean
//! leader election, a recreated topic) and librdkafka's `auto.offset.reset` restarted lower:
//! those records were never processed, but processing them would replay keys the group already
//! committed past. The partition is stopped (paused, nothing more offered), an error names it,
//! and [`StatsSnapshot::below_start`] / [`StatsSnapshot::stalled_partitions`] count it, until an
//! operator resets the group's offset and restarts; other partitions keep flowing.
//!
//! The properties that would take commits away from the gate — `enable.auto.commit` (and its
//! old name `auto.commit.enable`), `enable.auto.offset.store`, `auto.offset.reset` — cannot be
//! set through the `-X` passthrough: [`OrderedConsumerBuilder::spawn`] refuses them with
//! [`ConsumerError::ManagedProperty`].
//!
//! Hostile input never stops the consumer: a `keyshift-route` or `keyshift-fence` header that
//! does not decode (garbage, truncated, or a version this build does not know) is counted
//! ([`StatsSnapshot::malformed_headers`]), logged with its partition and offset, and the record
//! is delivered to the application marked [`DeliveredRecord::unordered`] — ordered only inside
//! its partition, never dropped.
//!
//! Tracing: with [`OrderedConsumerBuilder::tracing`] each processed record gets a
//! `process <topic>` CONSUMER span continuing the trace in its `traceparent` or `b3` header
//! (and a `park <topic>` span when it waited for a migration barrier); with
//! [`OrderedConsumerBuilder::trace_events`] CONSUME and COMMIT events go to `_tracing`.
//!
//! Stopping: [`OrderedConsumer::stop`] lets the records in flight finish, commits what is
//! processed and leaves the group, so its partitions move to other members at once. A
//! revocation also waits for the records in flight on the partitions it takes away, then
//! commits them, so a rebalance redelivers no record this member processed and the next owner
//! never starts on a key this member is still processing. With
//! [`Rebalancing::Cooperative`] a member joining or leaving revokes only the partitions that
//! change owner, so the others keep their parked and in-flight records and keep flowing; the
//! default, [`Rebalancing::Eager`], revokes everything at every rebalance. [`OrderedConsumer::crash`] (for tests and fault
//! experiments) abandons the member the way a killed process would: no final commit, no
//! LeaveGroup; the group notices only when its session times out, and the partitions'
//! unprocessed records are redelivered to the survivors and gated again.

mod retry;
mod run;
mod slots;
mod stats;

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use keyshift_core::probe::{Probe, SeqVerdict, SequenceCheck};
use keyshift_core::protocol::RouteHeader;
use keyshift_core::serial::SerialCheck;
use rdkafka::error::KafkaError;

use crate::config::ClientSettings;
use crate::trace_events::TraceEventSink;
use keyshift_trace::Tracing;

pub use retry::{
    RetryPolicy, RetryingKey, DLQ_ATTEMPTS_HEADER, DLQ_ERROR_HEADER, DLQ_GROUP_HEADER,
    DLQ_OFFSET_HEADER, DLQ_PARTITION_HEADER, DLQ_TOPIC_HEADER,
};
pub use stats::{BlockedKey, ConsumerStats, StatsSnapshot, MAX_LISTED_RETRYING_KEYS};

/// Default interval between committed-offset reads while records are parked.
pub const DEFAULT_BARRIER_POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Default interval between periodic commits of processed prefixes.
pub const DEFAULT_COMMIT_INTERVAL: Duration = Duration::from_millis(100);
/// Default bound on unprocessed records per partition before fetching pauses.
pub const DEFAULT_MAX_PENDING_PER_PARTITION: usize = 2_000;
/// Default timeout of blocking broker calls made by the consumer loop (the OffsetFetch reads of
/// committed offsets at assignment and for migration barriers).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time a key may stay parked before it is reported and its [`ParkPolicy`] applies.
pub const DEFAULT_PARK_TIMEOUT: Duration = Duration::from_secs(60);

/// librdkafka properties the ordered consumer sets itself and the passthrough may not change:
/// with any of them changed librdkafka would commit or skip records the gate has not processed.
pub const MANAGED_PROPERTIES: [&str; 4] = [
    "enable.auto.commit",
    "auto.commit.enable",
    "enable.auto.offset.store",
    "auto.offset.reset",
];

/// What to do with a key parked longer than the park timeout (its barrier has not passed:
/// the old partition is not consumed, or the route header is bogus).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ParkPolicy {
    /// Keep waiting, and alert: an error log and [`StatsSnapshot::blocked_keys`]. Order is
    /// kept; the partition's commit stays at the parked record.
    #[default]
    Wait,
    /// Release the key's parked records without their barrier, each counted as an order
    /// exception ([`StatsSnapshot::order_exceptions`], [`DeliveredRecord::order_exception`]).
    Release,
}

/// How the group moves partitions between its members when one joins or leaves
/// (librdkafka's `partition.assignment.strategy`; a `-X` passthrough still wins).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Rebalancing {
    /// Eager rebalancing (`range,roundrobin`, librdkafka's default): every member gives up
    /// every partition at each rebalance, then gets its new share. The default, because it is
    /// correct on every broker: on the embedded broker (tansu 0.6) cooperative rebalancing was
    /// seen to give one partition to two members and none to another, and never to hand a
    /// dead member's partitions over.
    #[default]
    Eager,
    /// Incremental cooperative rebalancing (`cooperative-sticky`, KIP-429): only the
    /// partitions that change owner are revoked; every member keeps processing the others,
    /// with their parked and in-flight records, through the rebalance. For Apache Kafka and
    /// brokers that implement the protocol fully. All members of a group must use the same
    /// kind: switching a group from one to the other needs its members stopped first
    /// (librdkafka refuses a group whose members mix them).
    Cooperative,
}

impl Rebalancing {
    /// The `partition.assignment.strategy` value.
    pub fn assignment_strategy(self) -> &'static str {
        match self {
            Rebalancing::Cooperative => "cooperative-sticky",
            Rebalancing::Eager => "range,roundrobin",
        }
    }
}

/// A record the application may process now, in per-key order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveredRecord {
    /// Partition it was consumed from.
    pub partition: u32,
    /// Its offset.
    pub offset: i64,
    /// Its key; `None` for a record without one (null key), which is delivered unordered —
    /// distinct from the empty key, which is ordered like any other.
    pub key: Option<Vec<u8>>,
    /// Its value (empty when the record had none).
    pub value: Vec<u8>,
    /// All its headers, keyshift's included, in record order.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    /// Its timestamp in milliseconds since the Unix epoch, if it has one.
    pub timestamp_ms: Option<i64>,
    /// Its decoded `keyshift-route` header: the message set it belongs to.
    pub route: Option<RouteHeader>,
    /// Whether it waited for a migration barrier.
    pub parked: bool,
    /// Whether it was released before its migration barrier passed ([`ParkPolicy::Release`]
    /// after the park timeout): its key's order may be broken here.
    pub order_exception: bool,
    /// How long it waited, from consumption to release (zero unless `parked`).
    pub park_time: Duration,
    /// When this consumer received it from Kafka (before the order gate), so latency can be
    /// split into broker / queueing / parked / service.
    pub fetched_at: Instant,
    /// Which assignment of its partition to this consumer it was fetched under: a number that
    /// changes whenever the partition is (re)assigned to this member, so two records with the
    /// same partition and assignment had no other owner of that partition between them (what
    /// [`StateStore`](crate::state::StateStore) needs to trust its cache).
    pub assignment: u64,
    /// True when a keyshift header on it could not be decoded (malformed or unknown version):
    /// it was ordered only within its partition, not across a migration.
    pub unordered: bool,
    /// Its value parsed as an experiment [`Probe`], if it is one.
    pub probe: Option<Probe>,
    /// The order check's verdict on the probe's sequence number (the shared check's, when one
    /// is configured), if it is a probe.
    pub verdict: Option<SeqVerdict>,
}

/// Error type handlers return; any error converts into it.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

/// The application: processes one released record at a time.
///
/// An error is logged and counted ([`StatsSnapshot::handler_errors`]); what follows is the
/// builder's [`RetryPolicy`] and dead-letter topic (by default the record counts as processed).
/// Implemented for closures
/// `FnMut(&DeliveredRecord) -> Result<(), E>`.
pub trait RecordHandler: Send + 'static {
    /// Processes `record`; returns when done.
    fn handle(&mut self, record: &DeliveredRecord) -> Result<(), HandlerError>;
}

impl<F, E> RecordHandler for F
where
    F: FnMut(&DeliveredRecord) -> Result<(), E> + Send + 'static,
    E: Into<HandlerError>,
{
    fn handle(&mut self, record: &DeliveredRecord) -> Result<(), HandlerError> {
        self(record).map_err(Into::into)
    }
}

/// The application, asynchronously: one future per released record, up to the builder's
/// [`concurrency`](OrderedConsumerBuilder::concurrency) of them at once on a tokio runtime the
/// consumer owns ([`OrderedConsumerBuilder::spawn_async`]). Never two records of one key at
/// once, in per-key order; errors are retried and counted as for [`RecordHandler`]. The future
/// owns what it needs (clone shared clients into it), like a `tower::Service` call. Implemented for
/// closures `Fn(DeliveredRecord) -> impl Future<Output = Result<(), E>>`.
pub trait AsyncRecordHandler: Send + Sync + 'static {
    /// Processes `record`; the future completes when it is done.
    fn handle(
        &self,
        record: DeliveredRecord,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send + 'static;
}

impl<F, Fut, E> AsyncRecordHandler for F
where
    F: Fn(DeliveredRecord) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Into<HandlerError>,
{
    fn handle(
        &self,
        record: DeliveredRecord,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send + 'static {
        let fut = self(record);
        async move { fut.await.map_err(Into::into) }
    }
}

/// Handlers as the consumer thread gets them.
pub(crate) enum Slots {
    /// One thread per handler.
    Sync(Vec<Box<dyn RecordHandler>>),
    /// One future per record.
    Async(slots::AsyncFn),
}

/// A failure to start or run an ordered consumer; each names the group and topic.
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    /// The rdkafka consumer could not be created (usually a bad passthrough property).
    #[error("cannot create a consumer in group '{group}' for '{bootstrap}': {source}")]
    Client {
        /// The consumer group.
        group: String,
        /// The bootstrap servers.
        bootstrap: String,
        /// rdkafka's error (boxed: it is large and errors are rare).
        source: Box<KafkaError>,
    },
    /// Subscribing to the topic failed.
    #[error("group '{group}' cannot subscribe to topic '{topic}': {source}")]
    Subscribe {
        /// The consumer group.
        group: String,
        /// The topic.
        topic: String,
        /// rdkafka's error (boxed: it is large and errors are rare).
        source: Box<KafkaError>,
    },
    /// The consumer thread could not be started.
    #[error("cannot start the consumer thread of group '{group}': {source}")]
    Thread {
        /// The consumer group.
        group: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// librdkafka reported a fatal error; the consumer stopped.
    #[error("consumer of group '{group}' on topic '{topic}' failed fatally: {source}")]
    Fatal {
        /// The consumer group.
        group: String,
        /// The topic.
        topic: String,
        /// rdkafka's error (boxed: it is large and errors are rare).
        source: Box<KafkaError>,
    },
    /// The consumer thread panicked (a panicking handler does this).
    #[error("consumer thread of group '{group}' on topic '{topic}' panicked: {message}")]
    Panicked {
        /// The consumer group.
        group: String,
        /// The topic.
        topic: String,
        /// The panic message.
        message: String,
    },
    /// A `-X` passthrough property the ordered consumer manages itself.
    #[error("-X {key} cannot be set for an ordered consumer: it manages {key} itself, because commits must never pass a record the order gate has not processed")]
    ManagedProperty {
        /// The property.
        key: String,
    },
    /// An option makes no sense.
    #[error("invalid ordered-consumer option {option}: {reason}")]
    InvalidOption {
        /// The option's builder method name.
        option: &'static str,
        /// What was expected.
        reason: String,
    },
}

/// Configures and starts an [`OrderedConsumer`].
#[derive(Clone)]
pub struct OrderedConsumerBuilder {
    pub(crate) settings: ClientSettings,
    pub(crate) group: String,
    pub(crate) topic: String,
    pub(crate) barrier_poll_interval: Duration,
    pub(crate) commit_interval: Duration,
    pub(crate) session_timeout: Option<Duration>,
    pub(crate) max_pending_per_partition: usize,
    pub(crate) request_timeout: Duration,
    pub(crate) park_timeout: Duration,
    pub(crate) park_policy: ParkPolicy,
    pub(crate) concurrency: usize,
    pub(crate) rebalancing: Rebalancing,
    pub(crate) retry: RetryPolicy,
    pub(crate) dead_letter_topic: Option<String>,
    pub(crate) shared_check: Option<(Arc<Mutex<SequenceCheck>>, bool)>,
    pub(crate) serial_check: Option<Arc<Mutex<SerialCheck>>>,
    pub(crate) thread_name: Option<String>,
    pub(crate) tracing: Option<Tracing>,
    pub(crate) events: Option<TraceEventSink>,
}

impl fmt::Debug for OrderedConsumerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OrderedConsumerBuilder")
            .field("bootstrap", &self.settings.bootstrap_servers())
            .field("group", &self.group)
            .field("topic", &self.topic)
            .field("barrier_poll_interval", &self.barrier_poll_interval)
            .field("commit_interval", &self.commit_interval)
            .field("session_timeout", &self.session_timeout)
            .field("max_pending_per_partition", &self.max_pending_per_partition)
            .field("park_timeout", &self.park_timeout)
            .field("park_policy", &self.park_policy)
            .field("concurrency", &self.concurrency)
            .field("rebalancing", &self.rebalancing)
            .field("retry", &self.retry)
            .field("dead_letter_topic", &self.dead_letter_topic)
            .field("shared_check", &self.shared_check.is_some())
            .field("serial_check", &self.serial_check.is_some())
            .field("tracing", &self.tracing.is_some())
            .field("trace_events", &self.events.is_some())
            .finish_non_exhaustive()
    }
}

impl OrderedConsumerBuilder {
    /// A member of consumer group `group` reading `topic`, with the clients' shared settings
    /// (bootstrap servers, client id, `-X` passthrough — which wins over everything set here).
    pub fn new(
        settings: &ClientSettings,
        group: impl Into<String>,
        topic: impl Into<String>,
    ) -> Self {
        Self {
            settings: settings.clone(),
            group: group.into(),
            topic: topic.into(),
            barrier_poll_interval: DEFAULT_BARRIER_POLL_INTERVAL,
            commit_interval: DEFAULT_COMMIT_INTERVAL,
            session_timeout: None,
            max_pending_per_partition: DEFAULT_MAX_PENDING_PER_PARTITION,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            park_timeout: DEFAULT_PARK_TIMEOUT,
            park_policy: ParkPolicy::Wait,
            concurrency: 1,
            rebalancing: Rebalancing::default(),
            retry: RetryPolicy::default(),
            dead_letter_topic: None,
            shared_check: None,
            serial_check: None,
            thread_name: None,
            tracing: None,
            events: None,
        }
    }

    /// Traces every processed record with a `process <topic>` span (and a `park` span when
    /// it was parked), continuing the trace of its headers. Pass the process's one
    /// [`Tracing`].
    pub fn tracing(mut self, tracing: Tracing) -> Self {
        self.tracing = Some(tracing);
        self
    }

    /// Emits CONSUME (per processed record) and COMMIT (per committed partition) events to
    /// `sink` in kafka-tracing-interceptor's format.
    pub fn trace_events(mut self, sink: TraceEventSink) -> Self {
        self.events = Some(sink);
        self
    }

    /// How often to read the group's committed offsets of partitions that parked records wait
    /// on (default 50 ms). Shorter means less park time and more OffsetFetch requests.
    pub fn barrier_poll_interval(mut self, interval: Duration) -> Self {
        self.barrier_poll_interval = interval;
        self
    }

    /// How often to commit processed prefixes (default 100 ms); fences commit at once anyway.
    pub fn commit_interval(mut self, interval: Duration) -> Self {
        self.commit_interval = interval;
        self
    }

    /// The group session timeout (`session.timeout.ms`; librdkafka's default 45 s when unset):
    /// how long a crashed member keeps its partitions. The heartbeat interval is set to a
    /// sixth of it. A `-X` passthrough still wins.
    pub fn session_timeout(mut self, timeout: Duration) -> Self {
        self.session_timeout = Some(timeout);
        self
    }

    /// Unprocessed records per partition, parked ones not counted, above which fetching that
    /// partition pauses (default 2000); it resumes at half.
    pub fn max_pending_per_partition(mut self, max: usize) -> Self {
        self.max_pending_per_partition = max;
        self
    }

    /// Timeout of the loop's blocking broker calls (default 10 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How long a key may stay parked before it is reported (error log,
    /// [`StatsSnapshot::blocked_keys`]) and the [`park_policy`](Self::park_policy) applies
    /// (default 60 s). A healthy migration parks a key until its old partition's backlog up to
    /// the fence is processed and committed, so set it above the lag that partition may have.
    pub fn park_timeout(mut self, timeout: Duration) -> Self {
        self.park_timeout = timeout;
        self
    }

    /// What to do with a key parked longer than the park timeout (default
    /// [`ParkPolicy::Wait`]: keep order, keep alerting).
    pub fn park_policy(mut self, policy: ParkPolicy) -> Self {
        self.park_policy = policy;
        self
    }

    /// Also checks probe sequence numbers against `check`, shared with other consumers, so
    /// that several members of a group check one global per-key order (an in-process
    /// experiment). `expect_from_zero`: every key's first record is sequence 0 (the shared
    /// check sees the whole stream). The shared check's verdict is the one counted; without
    /// it each consumer checks locally, starting each key at the first record it sees.
    pub fn shared_sequence_check(
        mut self,
        check: Arc<Mutex<SequenceCheck>>,
        expect_from_zero: bool,
    ) -> Self {
        self.shared_check = Some((check, expect_from_zero));
        self
    }

    /// Reports every record of a key it processes (from the handler's start to its end) to
    /// `check`, shared with the other consumers of the group, which counts a key processed by
    /// two consumers at the same time ([`StatsSnapshot::concurrent_key_processing`]): per-key
    /// serial processing, checked across the group (an in-process experiment). Null-key
    /// records are not reported (they have no order to keep).
    pub fn shared_serial_check(mut self, check: Arc<Mutex<SerialCheck>>) -> Self {
        self.serial_check = Some(check);
        self
    }

    /// Names the consumer thread (default `keyshift-consumer-<group>`).
    pub fn thread_name(mut self, name: impl Into<String>) -> Self {
        self.thread_name = Some(name.into());
        self
    }

    /// Most records processed at once (default 1), never two of one key. With
    /// [`spawn_each`](Self::spawn_each) that many handlers run on threads of their own; with
    /// [`spawn_async`](Self::spawn_async) that many futures run at once. Each record in flight
    /// is one more record a crash may leave unprocessed (it is redelivered); a clean stop or a
    /// revocation waits for them.
    pub fn concurrency(mut self, slots: usize) -> Self {
        self.concurrency = slots;
        self
    }

    /// How partitions move between members at a rebalance (default [`Rebalancing::Eager`];
    /// [`Rebalancing::Cooperative`] stops only the partitions that change owner).
    pub fn rebalancing(mut self, rebalancing: Rebalancing) -> Self {
        self.rebalancing = rebalancing;
        self
    }

    /// What a record whose handler fails gets: more attempts after a backoff, its key waiting
    /// meanwhile (default: one attempt). See [`RetryPolicy`].
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Where a record goes when its last attempt failed: this topic (which must exist or be
    /// auto-created), with the original key, value, timestamp and headers and the
    /// `keyshift-dlq-*` headers ([`DLQ_ERROR_HEADER`] and the others); it then counts as
    /// processed and its key continues. Without one it counts as processed with its error.
    pub fn dead_letter_topic(mut self, topic: impl Into<String>) -> Self {
        self.dead_letter_topic = Some(topic.into());
        self
    }

    /// Creates the consumer, subscribes, and starts it with one `handler`, which processes the
    /// released records one at a time (so [`concurrency`](Self::concurrency) must be 1; use
    /// [`spawn_each`](Self::spawn_each) or [`spawn_async`](Self::spawn_async) for more).
    /// Returns once the thread runs; joining the group happens in the background.
    pub fn spawn<H: RecordHandler>(self, handler: H) -> Result<OrderedConsumer, ConsumerError> {
        if self.concurrency != 1 {
            return Err(ConsumerError::InvalidOption {
                option: "concurrency",
                reason: format!(
                    "one handler processes one record at a time, so spawn() needs concurrency 1, got {}; use spawn_each (a handler per slot) or spawn_async",
                    self.concurrency
                ),
            });
        }
        self.start(Slots::Sync(vec![Box::new(handler)]))
    }

    /// Like [`spawn`](Self::spawn) with [`concurrency`](Self::concurrency) handlers, made by
    /// `make(slot)` for slots `0..concurrency`, each on a thread of its own.
    pub fn spawn_each<H: RecordHandler>(
        self,
        mut make: impl FnMut(usize) -> H,
    ) -> Result<OrderedConsumer, ConsumerError> {
        self.check_concurrency()?;
        let handlers = (0..self.concurrency)
            .map(|slot| Box::new(make(slot)) as Box<dyn RecordHandler>)
            .collect();
        self.start(Slots::Sync(handlers))
    }

    /// Like [`spawn`](Self::spawn) with an asynchronous handler: up to
    /// [`concurrency`](Self::concurrency) records in flight, each its own future on a
    /// multi-threaded tokio runtime the consumer owns (so it may be called from anywhere,
    /// inside a runtime or not).
    pub fn spawn_async<H: AsyncRecordHandler>(
        self,
        handler: H,
    ) -> Result<OrderedConsumer, ConsumerError> {
        self.check_concurrency()?;
        let handler = Arc::new(handler);
        let erased: slots::AsyncFn = Arc::new(move |record| Box::pin(handler.handle(record)));
        self.start(Slots::Async(erased))
    }

    fn check_concurrency(&self) -> Result<(), ConsumerError> {
        if self.concurrency == 0 {
            return Err(ConsumerError::InvalidOption {
                option: "concurrency",
                reason: "expected at least 1".into(),
            });
        }
        Ok(())
    }

    fn start(self, slots: Slots) -> Result<OrderedConsumer, ConsumerError> {
        if self.retry.max_attempts == Some(0) {
            return Err(ConsumerError::InvalidOption {
                option: "retry",
                reason: "max_attempts counts the first attempt: expected at least 1, or None to retry forever".into(),
            });
        }
        if self.retry.backoff.is_zero() || self.retry.max_backoff < self.retry.backoff {
            return Err(ConsumerError::InvalidOption {
                option: "retry",
                reason: format!(
                    "expected 0 < backoff <= max_backoff, got {:?} and {:?}",
                    self.retry.backoff, self.retry.max_backoff
                ),
            });
        }
        if self.dead_letter_topic.as_deref() == Some(self.topic.as_str()) {
            return Err(ConsumerError::InvalidOption {
                option: "dead_letter_topic",
                reason: "must differ from the consumed topic".into(),
            });
        }
        for (option, value) in [
            ("barrier_poll_interval", self.barrier_poll_interval),
            ("commit_interval", self.commit_interval),
            ("request_timeout", self.request_timeout),
            ("park_timeout", self.park_timeout),
        ] {
            if value.is_zero() {
                return Err(ConsumerError::InvalidOption {
                    option,
                    reason: "expected a duration greater than zero".into(),
                });
            }
        }
        if let Some(p) = self
            .settings
            .passthrough()
            .iter()
            .find(|p| MANAGED_PROPERTIES.contains(&p.key()))
        {
            return Err(ConsumerError::ManagedProperty {
                key: p.key().to_owned(),
            });
        }
        if self.max_pending_per_partition == 0 {
            return Err(ConsumerError::InvalidOption {
                option: "max_pending_per_partition",
                reason: "expected at least 1".into(),
            });
        }
        if let Some(t) = self.session_timeout {
            if t < Duration::from_millis(6) || t.as_millis() > i32::MAX as u128 {
                return Err(ConsumerError::InvalidOption {
                    option: "session_timeout",
                    reason: format!("expected 6 ms ..= {} ms, got {t:?}", i32::MAX),
                });
            }
        }
        run::spawn(self, slots)
    }
}

/// How the consumer thread should end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Mode {
    Run = 0,
    Stop = 1,
    Crash = 2,
}

/// Asks a running [`OrderedConsumer`] to stop cleanly, from anywhere (a signal handler, an
/// HTTP endpoint); cheap to clone.
#[derive(Debug, Clone)]
pub struct StopHandle(Arc<AtomicU8>);

impl StopHandle {
    /// Requests a clean stop (commit processed offsets, leave the group). Returns at once.
    pub fn stop(&self) {
        let _ = self.0.compare_exchange(
            Mode::Run as u8,
            Mode::Stop as u8,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
    }
}

/// A running ordered consumer; see the [module docs](self). Dropping it stops it cleanly.
pub struct OrderedConsumer {
    group: String,
    topic: String,
    mode: Arc<AtomicU8>,
    stats: Arc<ConsumerStats>,
    thread: Option<JoinHandle<Result<(), ConsumerError>>>,
}

impl fmt::Debug for OrderedConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OrderedConsumer")
            .field("group", &self.group)
            .field("topic", &self.topic)
            .field("running", &self.is_running())
            .finish_non_exhaustive()
    }
}

impl OrderedConsumer {
    /// Its live statistics (shared: keep the `Arc` to read them after the consumer stops).
    pub fn stats(&self) -> &Arc<ConsumerStats> {
        &self.stats
    }

    /// The consumer group.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// A handle that requests a clean stop from elsewhere; then call [`OrderedConsumer::join`].
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle(Arc::clone(&self.mode))
    }

    /// Whether the consumer thread is still running (false after a fatal error or a stop).
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Stops cleanly: finishes the records in the handlers, commits every processed prefix,
    /// leaves the group (its partitions move to other members at once), and waits for the
    /// thread. Returns the error that ended the consumer early, if any.
    pub fn stop(mut self) -> Result<(), ConsumerError> {
        self.stop_handle().stop();
        self.join_thread()
    }

    /// Waits for the thread to end (after a [`StopHandle::stop`] or a fatal error).
    pub fn join(mut self) -> Result<(), ConsumerError> {
        self.join_thread()
    }

    /// Abandons the member as a killed process would, for fault tests: the thread stops at
    /// once, commits nothing more and does not leave the group
    /// (librdkafka is destroyed with `RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE`). The group keeps
    /// the member, and its partitions, until the session timeout expires; then the survivors
    /// get the partitions back from the last committed offsets. A few small client objects
    /// (the rdkafka wrapper around the destroyed handle) are leaked on purpose. Records in
    /// flight finish in their handlers, unreported, and are redelivered to the next owner.
    pub fn crash(mut self) {
        self.mode.store(Mode::Crash as u8, Ordering::SeqCst);
        if let Err(err) = self.join_thread() {
            tracing::warn!(group = %self.group, %err, "crashed consumer had already failed");
        }
    }

    fn join_thread(&mut self) -> Result<(), ConsumerError> {
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        thread.join().unwrap_or_else(|panic| {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_owned());
            Err(ConsumerError::Panicked {
                group: self.group.clone(),
                topic: self.topic.clone(),
                message,
            })
        })
    }
}

impl Drop for OrderedConsumer {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.stop_handle().stop();
            if let Err(err) = self.join_thread() {
                tracing::error!(group = %self.group, topic = %self.topic, %err, "ordered consumer ended with an error");
            }
        }
    }
}
