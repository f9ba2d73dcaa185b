//! The producer's engine: routing decisions, fenced migration, held records and the backlog.
//!
//! All decision state (strategy, [`Migrator`], pinned routes, per-key hold queues, backlog)
//! lives in one [`State`] behind one `std::sync::Mutex`. The lock is held only for the O(1)
//! decision and librdkafka's non-blocking enqueue (`send_result`), never across an `.await`:
//! enqueueing under the lock is what makes the order in which a key's records reach
//! librdkafka's per-partition queue equal the order of the decisions, which is the order of
//! the calls.
//!
//! A fence's delivery report is awaited by a small task on the producer's runtime (see
//! [`RuntimeHandle`]); when it arrives, the task takes the lock, reports the offset to the
//! migrator and re-offers the key's held records in order. A failed fence is retried with
//! backoff a bounded number of times, then the held records fail with
//! [`ProduceError::Fence`] — they are never dropped silently.
//!
//! A headed record sent to its key's home partition is watched: a small task awaits its
//! delivery report and tells the migrator ([`Migrator::record_acked`]) before passing the report
//! on, because only an acknowledged headed record lets the key's home set drop its header.
//!
//! With durable routes ([`super::Routes::Durable`]) every [`keyshift_core::protocol::RouteChange`]
//! the migrator emits is written to the route topic through the same idempotent client; the
//! key's records stay held until the write is acknowledged ([`Migrator::route_saved`]). A
//! failed write is retried with backoff for as long as it takes (the key cannot be sent
//! anywhere safely meanwhile); after [`super::ProducerBuilder::fence_attempts`] failures the
//! records held at each further failure fail with [`ProduceError::RouteState`]. A failed
//! tombstone is retried only while no newer change of its key was written after it.
//!
//! Coordinated producers ([`super::Routes::Coordinated`]) take another path through the same
//! state: `member.rs` routes each record along the control log's committed route, holds a key
//! while a move of it is pending and writes this member's own fence of it
//! ([`Inner::emit_member_fence`]); held records, the backlog and delivery reports work as here.
//!
//! When librdkafka's queue is full after a decision was made, the decided record cannot be
//! re-decided (the migrator already moved on), so it goes to a FIFO backlog, which a drainer
//! task empties into librdkafka as room appears. While the backlog is non-empty every later
//! decided record joins it too, keeping decision order; new records are refused with
//! [`ProduceError::QueueFull`] before any decision (back-pressure) until it drains.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use keyshift_core::hash::Hasher;
use keyshift_core::protocol::{
    FenceHeader, Migrator, RouteChange, RouteHeader, Step, FENCE_HEADER, FENCE_VALUE, ROUTE_HEADER,
};
use keyshift_core::stats::LatencyHistogram;
use keyshift_core::strategy::{Strategy, StrategyConfig};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rustc_hash::FxHashMap;
use tokio::runtime::{Handle, Runtime};
use tokio::sync::oneshot;

use super::error::ProduceError;
use super::routes::RouteTopic;
use crate::control::{ControlTail, ControlTopic};
use keyshift_core::protocol::control::MoveId;
use keyshift_core::protocol::coordinator::Coordinator;

/// Pause before retrying when librdkafka's queue is full (backlog drainer, `send` retries).
pub(super) const QUEUE_FULL_BACKOFF: Duration = Duration::from_millis(2);

/// Where a held or backlogged record's enqueue result goes.
pub(super) type Reply = oneshot::Sender<Result<Enqueued, ProduceError>>;

/// What a [`DeliveryFuture`] resolves to.
type DeliveryReport = <DeliveryFuture as Future>::Output;

/// A record's delivery report: librdkafka's own future, or one passed on by the task that
/// watches a headed record at home (see the module docs).
pub(super) enum Report {
    Direct(DeliveryFuture),
    Watched(oneshot::Receiver<DeliveryReport>),
}

/// The producer went away before the report was passed on.
#[derive(Debug)]
pub(super) struct ReportLost;

impl Future for Report {
    type Output = Result<rdkafka::producer::future_producer::OwnedDeliveryResult, ReportLost>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Report::Direct(f) => Pin::new(f).poll(cx).map(|r| r.map_err(|_| ReportLost)),
            Report::Watched(rx) => Pin::new(rx).poll(cx).map(|r| match r {
                Ok(Ok(report)) => Ok(report),
                _ => Err(ReportLost),
            }),
        }
    }
}

/// A record handed to librdkafka, waiting for its delivery report.
pub(super) struct Enqueued {
    /// librdkafka's delivery report.
    pub future: Report,
    /// The partition it was sent to.
    pub partition: u32,
    /// How long it was held behind a fence of its key, if it was.
    pub fenced_wait: Option<Duration>,
}

/// The runtime that runs fence waiters and the backlog drainer: the caller's when the
/// producer was built inside one, otherwise a private one-worker runtime owned here.
pub(super) struct RuntimeHandle {
    pub handle: Handle,
    owned: Option<Runtime>,
}

impl RuntimeHandle {
    /// Uses `handle`, or the current runtime, or starts a private one.
    pub fn new(handle: Option<Handle>) -> std::io::Result<Self> {
        if let Some(handle) = handle.or_else(|| Handle::try_current().ok()) {
            return Ok(Self {
                handle,
                owned: None,
            });
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("keyshift-producer")
            .enable_all()
            .build()?;
        Ok(Self {
            handle: runtime.handle().clone(),
            owned: Some(runtime),
        })
    }
}

impl Drop for RuntimeHandle {
    fn drop(&mut self) {
        // The last reference to the producer may be dropped inside a task of this very
        // runtime; `shutdown_background` is the one way to drop a runtime from async code.
        if let Some(runtime) = self.owned.take() {
            runtime.shutdown_background();
        }
    }
}

/// Counters kept under the state lock (plain integers: the lock is held anyway).
#[derive(Debug, Clone, Default)]
pub(super) struct Counters {
    pub records: u64,
    pub bytes: u64,
    pub per_partition: Vec<u64>,
    pub moves: u64,
    pub fences: u64,
    pub fence_failures: u64,
    pub held_total: u64,
    pub held_now: usize,
    pub route_writes: u64,
    pub route_write_failures: u64,
}

/// One record held behind a fence of its key.
struct Held {
    /// The partition the strategy chose when the record arrived.
    partition: u32,
    value: Vec<u8>,
    headers: Vec<(String, Vec<u8>)>,
    arrived: Instant,
    reply: Reply,
}

/// The records of one key waiting for its fence, in arrival order.
pub(super) struct HoldQueue {
    records: VecDeque<Held>,
    /// Failed fence attempts in a row for this key.
    attempts: u32,
}

impl HoldQueue {
    fn empty() -> Self {
        Self {
            records: VecDeque::new(),
            attempts: 0,
        }
    }

    /// Sends every held record to `partition` when released (a growth re-homed the key).
    pub(super) fn retarget(&mut self, partition: u32) {
        for r in &mut self.records {
            r.partition = partition;
        }
    }
}

/// What to do once a held or backlogged record (or fence) is handed to librdkafka.
pub(super) enum After {
    /// A data record: pass the delivery future to the waiting caller.
    Reply {
        reply: Reply,
        fenced_wait: Option<Duration>,
    },
    /// A fence: await its delivery report, then release the key's held records.
    Fence { started: Instant },
    /// This member's fence for a coordinated move: await it, then write its ready.
    MemberFence { id: MoveId, started: Instant },
    /// Epoch fence `index` of growth attempt `attempt` (`growth.rs`): a report of an earlier,
    /// called-off attempt must not count for a later one.
    EpochFence { index: usize, attempt: u64 },
}

/// A decided record that found librdkafka's queue full (owned copy).
struct Backlogged {
    key: Box<[u8]>,
    partition: u32,
    value: Vec<u8>,
    headers: Vec<(String, Vec<u8>)>,
    route: Option<RouteHeader>,
    fence: Option<FenceHeader>,
    after: After,
}

/// A record ready for librdkafka, borrowing its data.
pub(super) struct Outgoing<'a> {
    pub key: &'a [u8],
    pub partition: u32,
    pub value: &'a [u8],
    pub headers: &'a [(String, Vec<u8>)],
    pub route: Option<RouteHeader>,
    pub fence: Option<FenceHeader>,
}

impl Outgoing<'_> {
    fn to_owned(&self, after: After) -> Backlogged {
        Backlogged {
            key: self.key.into(),
            partition: self.partition,
            value: self.value.to_vec(),
            headers: self.headers.to_vec(),
            route: self.route,
            fence: self.fence,
            after,
        }
    }
}

impl Backlogged {
    fn outgoing(&self) -> Outgoing<'_> {
        Outgoing {
            key: &self.key,
            partition: self.partition,
            value: &self.value,
            headers: &self.headers,
            route: self.route,
            fence: self.fence,
        }
    }
}

/// Everything decided under the lock.
pub(super) struct State {
    pub strategy: Box<dyn Strategy>,
    /// `None` for strategies that do not preserve order (`pkg`, `unordered`).
    pub migrator: Option<Migrator>,
    /// Routes forced by [`super::KeyshiftProducer::move_key`], consulted before the strategy.
    pub pins: FxHashMap<Box<[u8]>, u32>,
    pub(super) held: FxHashMap<Box<[u8]>, HoldQueue>,
    backlog: VecDeque<Backlogged>,
    drainer_running: bool,
    /// Reused buffer for encoding protocol headers (librdkafka copies header values).
    scratch: Vec<u8>,
    /// Generation of the newest route change written per key (while a write is unfinished):
    /// a failed write is retried only if nothing newer of its key was written after it.
    route_latest: FxHashMap<Box<[u8]>, u64>,
    route_gen: u64,
    pub counters: Counters,
    pub fence_rtt: LatencyHistogram,
    /// Coordinated producers ([`super::Routes::Coordinated`]), else `None`.
    pub coord: Option<Coordinator>,
    /// Members the coordinator last found silent but not forgotten (logged when it changes).
    pub unaccounted: Vec<keyshift_core::protocol::control::MemberId>,
    /// A growth of the partitions keys are homed on, while it runs (`growth.rs`).
    pub(super) growth: Option<super::growth::Running>,
    /// Coordinated callers of `grow` waiting for the control log's epoch.
    pub(super) growth_waiters: Vec<super::growth::Waiter>,
    /// Growth attempts started (each attempt's fences carry its number).
    pub(super) growth_attempts: u64,
}

impl State {
    pub fn new(strategy: Box<dyn Strategy>, migrator: Option<Migrator>, partitions: u32) -> Self {
        Self {
            strategy,
            migrator,
            pins: FxHashMap::default(),
            held: FxHashMap::default(),
            backlog: VecDeque::new(),
            drainer_running: false,
            scratch: Vec::with_capacity(32),
            route_latest: FxHashMap::default(),
            route_gen: 0,
            counters: Counters {
                per_partition: vec![0; partitions as usize],
                ..Counters::default()
            },
            fence_rtt: LatencyHistogram::new(),
            coord: None,
            unaccounted: Vec::new(),
            growth: None,
            growth_waiters: Vec::new(),
            growth_attempts: 0,
        }
    }

    /// Keys with records held behind a fence.
    pub fn held_keys(&self) -> usize {
        self.held.len()
    }

    /// Records (and fences) waiting in the backlog for room in librdkafka's queue.
    pub fn backlog_len(&self) -> usize {
        self.backlog.len()
    }
}

/// Outcome of [`Inner::submit`] for the caller's own record.
pub(super) enum Submitted {
    /// Handed to librdkafka.
    Sent { future: Report, partition: u32 },
    /// Held behind a fence or backlogged: the result comes through the channel.
    Waiting(oneshot::Receiver<Result<Enqueued, ProduceError>>),
}

/// Shared by every clone of a [`super::KeyshiftProducer`] and its background tasks.
pub(super) struct Inner {
    pub producer: FutureProducer,
    pub topic: String,
    /// Partitions keys are homed on (the topic may have more); grows with `growth.rs`.
    pub partitions: AtomicU32,
    /// The strategy's options, to rebuild it for a new partition count.
    pub strategy_config: StrategyConfig,
    pub origin: Instant,
    pub strategy_name: &'static str,
    pub fence_attempts: u32,
    pub fence_backoff: Duration,
    pub runtime: RuntimeHandle,
    pub state: Mutex<State>,
    pub delivery_errors: AtomicU64,
    /// OTLP spans per record (`None`: tracing off).
    pub tracing: Option<keyshift_trace::Tracing>,
    /// SEND/ACK events to `_tracing` (`None`: off).
    pub events: Option<crate::trace_events::TraceEventSink>,
    /// `client.id`, for spans and events.
    pub client_id: String,
    /// The route topic (durable routes of an order-preserving strategy), else `None`.
    pub routes: Option<RouteTopic>,
    /// The control topic of coordinated producers, else `None`.
    pub control: Option<ControlTopic>,
    /// The thread following the control log (set once, right after build).
    pub tail: Mutex<Option<ControlTail>>,
}

fn is_queue_full(err: &KafkaError) -> bool {
    matches!(
        err,
        KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)
    )
}

impl Inner {
    /// The hash that homes keys without a route.
    pub fn hasher(&self) -> Hasher {
        self.strategy_config.hasher
    }

    /// Locks the state; a panic elsewhere while holding it leaves consistent-enough state
    /// (every mutation is a few field writes), so poisoning is ignored rather than spread.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn count_error(&self) {
        self.delivery_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Decides and enqueues one record of the caller. `Err((QueueFull, headers))` means
    /// nothing was decided (the headers come back for a retry).
    #[allow(clippy::type_complexity)]
    pub fn submit(
        self: &Arc<Self>,
        key: &[u8],
        value: &[u8],
        headers: Vec<(String, Vec<u8>)>,
    ) -> Result<Submitted, (ProduceError, Vec<(String, Vec<u8>)>)> {
        let mut guard = self.lock();
        let st = &mut *guard;
        if !st.backlog.is_empty() {
            self.drain_backlog(st);
            if !st.backlog.is_empty() {
                return Err((
                    ProduceError::QueueFull {
                        topic: self.topic.clone(),
                    },
                    headers,
                ));
            }
        }
        // `now` is read under the lock so strategies see it non-decreasing.
        let now = self.origin.elapsed().as_secs_f64();
        if st.coord.is_some() {
            return self.submit_coordinated(st, key, value, headers, now);
        }
        let mut partition = st.strategy.route(key, now);
        // `mem::take` of an empty Vec allocates nothing; moves are rare.
        let moves = st.strategy.drain_moves();
        if !moves.is_empty() {
            st.counters.moves += moves.len() as u64;
            tracing::debug!(topic = %self.topic, moves = moves.len(), "strategy moved keys");
        }
        if !st.pins.is_empty() {
            if let Some(&pinned) = st.pins.get(key) {
                partition = pinned;
            }
        }
        if st.migrator.is_none() {
            return self.send_direct(st, key, partition, None, value, headers);
        }
        if st.held.contains_key(key) {
            // A fence of this key is in flight (or being retried): wait behind it.
            return Ok(self.hold(st, key, partition, value, headers));
        }
        if st.growth.is_some() && self.growth_holds(st, key, true) {
            // Its home changes in a growth whose epoch fences are being written.
            return Ok(self.hold(st, key, partition, value, headers));
        }
        let migrator = st.migrator.as_mut().expect("checked above");
        match migrator.on_record(key, partition) {
            Step::Send { partition, header } => {
                self.send_direct(st, key, partition, header, value, headers)
            }
            step => {
                // Fence (or, defensively, Hold): this record waits behind the key's fence.
                let (reply, rx) = oneshot::channel();
                let mut records = VecDeque::with_capacity(2);
                records.push_back(Held {
                    partition,
                    value: value.to_vec(),
                    headers,
                    arrived: Instant::now(),
                    reply,
                });
                st.held.insert(
                    key.into(),
                    HoldQueue {
                        records,
                        attempts: 0,
                    },
                );
                st.counters.held_now += 1;
                st.counters.held_total += 1;
                if let Step::Fence {
                    fence_partition,
                    header,
                    route,
                    ..
                } = step
                {
                    self.emit_fence(st, key, fence_partition, header, route);
                }
                Ok(Submitted::Waiting(rx))
            }
        }
    }

    /// Queues the caller's record behind its key's fence (or coordinated move).
    pub(super) fn hold(
        &self,
        st: &mut State,
        key: &[u8],
        partition: u32,
        value: &[u8],
        headers: Vec<(String, Vec<u8>)>,
    ) -> Submitted {
        let (reply, rx) = oneshot::channel();
        st.held
            .entry(key.into())
            .or_insert_with(HoldQueue::empty)
            .records
            .push_back(Held {
                partition,
                value: value.to_vec(),
                headers,
                arrived: Instant::now(),
                reply,
            });
        st.counters.held_now += 1;
        st.counters.held_total += 1;
        Submitted::Waiting(rx)
    }

    /// Enqueues the caller's record decided `Send`, backlogging it if the queue is full.
    #[allow(clippy::type_complexity)]
    pub(super) fn send_direct(
        self: &Arc<Self>,
        st: &mut State,
        key: &[u8],
        partition: u32,
        route: Option<RouteHeader>,
        value: &[u8],
        headers: Vec<(String, Vec<u8>)>,
    ) -> Result<Submitted, (ProduceError, Vec<(String, Vec<u8>)>)> {
        let rec = Outgoing {
            key,
            partition,
            value,
            headers: &headers,
            route,
            fence: None,
        };
        match self.enqueue(&mut st.counters, &mut st.scratch, &rec) {
            Ok(future) => Ok(Submitted::Sent {
                future: self.report(st, key, partition, route, future),
                partition,
            }),
            Err(err) if is_queue_full(&err) => {
                // Decided already (the migrator moved on), so it must go out in this order.
                let (reply, rx) = oneshot::channel();
                let mut owned = rec.to_owned(After::Reply {
                    reply,
                    fenced_wait: None,
                });
                owned.headers = headers;
                st.backlog.push_back(owned);
                self.ensure_drainer(st);
                Ok(Submitted::Waiting(rx))
            }
            Err(source) => {
                self.count_error();
                Err((
                    ProduceError::Enqueue {
                        topic: self.topic.clone(),
                        partition,
                        source: Box::new(source),
                    },
                    Vec::new(),
                ))
            }
        }
    }

    /// librdkafka's non-blocking enqueue; counts data records that were accepted.
    fn enqueue(
        &self,
        counters: &mut Counters,
        scratch: &mut Vec<u8>,
        rec: &Outgoing<'_>,
    ) -> Result<DeliveryFuture, KafkaError> {
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.topic)
            .partition(rec.partition as i32)
            .key(rec.key)
            .payload(rec.value);
        let protocol = usize::from(rec.route.is_some()) + usize::from(rec.fence.is_some());
        if protocol + rec.headers.len() > 0 {
            let mut headers = OwnedHeaders::new_with_capacity(protocol + rec.headers.len());
            for (name, value) in rec.headers {
                headers = headers.insert(Header {
                    key: name,
                    value: Some(value),
                });
            }
            // librdkafka copies header values, so one scratch buffer serves both headers.
            if let Some(fence) = rec.fence {
                scratch.clear();
                fence.encode_into(scratch);
                headers = headers.insert(Header {
                    key: FENCE_HEADER,
                    value: Some(scratch.as_slice()),
                });
            }
            if let Some(route) = rec.route {
                scratch.clear();
                route.encode_into(scratch);
                headers = headers.insert(Header {
                    key: ROUTE_HEADER,
                    value: Some(scratch.as_slice()),
                });
            }
            record = record.headers(headers);
        }
        let future = self.producer.send_result(record).map_err(|(err, _)| err)?;
        if rec.fence.is_none() {
            counters.records += 1;
            counters.bytes += (rec.key.len() + rec.value.len()) as u64;
            if let Some(n) = counters.per_partition.get_mut(rec.partition as usize) {
                *n += 1;
            }
        }
        Ok(future)
    }

    /// Sends a held/backlog-bound record or fence, behind the backlog if it is non-empty.
    fn emit(self: &Arc<Self>, st: &mut State, rec: Outgoing<'_>, after: After) {
        if !st.backlog.is_empty() {
            st.backlog.push_back(rec.to_owned(after));
            self.ensure_drainer(st);
            return;
        }
        let result = self.enqueue(&mut st.counters, &mut st.scratch, &rec);
        match result {
            Err(err) if is_queue_full(&err) => {
                st.backlog.push_back(rec.to_owned(after));
                self.ensure_drainer(st);
            }
            result => self.finish(st, rec.key, rec.partition, rec.route, after, result),
        }
    }

    fn emit_fence(
        self: &Arc<Self>,
        st: &mut State,
        key: &[u8],
        fence_partition: u32,
        header: FenceHeader,
        route: Option<RouteHeader>,
    ) {
        let after = After::Fence {
            started: Instant::now(),
        };
        self.emit_fence_then(st, key, fence_partition, header, route, after);
    }

    /// Writes this member's fence of a coordinated move; its ready follows the acknowledgement.
    pub(super) fn emit_member_fence(
        self: &Arc<Self>,
        st: &mut State,
        key: &[u8],
        id: MoveId,
        fence_partition: u32,
        header: FenceHeader,
        route: Option<RouteHeader>,
    ) {
        let after = After::MemberFence {
            id,
            started: Instant::now(),
        };
        self.emit_fence_then(st, key, fence_partition, header, route, after);
    }

    pub(super) fn emit_fence_then(
        self: &Arc<Self>,
        st: &mut State,
        key: &[u8],
        fence_partition: u32,
        header: FenceHeader,
        route: Option<RouteHeader>,
        after: After,
    ) {
        st.counters.fences += 1;
        tracing::debug!(
            topic = %self.topic,
            key = %String::from_utf8_lossy(key),
            from = fence_partition,
            to = header.to_partition,
            set = header.set_index,
            "writing fence"
        );
        // The reserved marker value makes the fence recognisable where its headers are not read
        // or were stripped (a plain consumer, a mirror tool); the header stays authoritative.
        let rec = Outgoing {
            key,
            partition: fence_partition,
            value: FENCE_VALUE.as_slice(),
            headers: &[],
            route,
            fence: Some(header),
        };
        self.emit(st, rec, after);
    }

    /// Completes a record or fence once librdkafka accepted (or refused) it.
    fn finish(
        self: &Arc<Self>,
        st: &mut State,
        key: &[u8],
        partition: u32,
        route: Option<RouteHeader>,
        after: After,
        result: Result<DeliveryFuture, KafkaError>,
    ) {
        match after {
            After::Reply { reply, fenced_wait } => {
                let outcome = result
                    .map(|future| Enqueued {
                        future: self.report(st, key, partition, route, future),
                        partition,
                        fenced_wait,
                    })
                    .map_err(|source| {
                        self.count_error();
                        ProduceError::Enqueue {
                            topic: self.topic.clone(),
                            partition,
                            source: Box::new(source),
                        }
                    });
                // A caller that dropped its future no longer wants the report; the record
                // is still delivered.
                let _ = reply.send(outcome);
            }
            After::Fence { started } => match result {
                Ok(future) => self.spawn_fence_wait(key.into(), partition, future, started),
                Err(err) => self.fence_error(st, key, partition, err),
            },
            After::MemberFence { id, started } => {
                self.member_fence_sent(st, key, id, started, result)
            }
            After::EpochFence { index, attempt } => {
                self.epoch_fence_sent(st, index, attempt, result)
            }
        }
    }

    /// Awaits a fence's delivery report on the runtime, then releases the key's records.
    fn spawn_fence_wait(
        self: &Arc<Self>,
        key: Box<[u8]>,
        partition: u32,
        future: DeliveryFuture,
        started: Instant,
    ) {
        let inner = Arc::clone(self);
        self.runtime.handle.spawn(async move {
            let report = future.await;
            let mut guard = inner.lock();
            let st = &mut *guard;
            match report {
                Ok(Ok(delivery)) => {
                    let acked = st
                        .migrator
                        .as_mut()
                        .is_some_and(|m| m.fence_acked(&key, delivery.offset));
                    if !acked {
                        let err = KafkaError::MessageProduction(RDKafkaErrorCode::InvalidMessage);
                        inner.fence_error(st, &key, partition, err);
                        return;
                    }
                    st.fence_rtt.record_secs(started.elapsed().as_secs_f64());
                    tracing::debug!(
                        topic = %inner.topic,
                        key = %String::from_utf8_lossy(&key),
                        partition,
                        offset = delivery.offset,
                        "fence acknowledged"
                    );
                    if let Some(queue) = st.held.get_mut(&key) {
                        queue.attempts = 0;
                    }
                    // Durable routes: the new set is recorded first; `release` then meets
                    // `Hold` until the write is acknowledged.
                    inner.save_routes(st);
                    inner.release(st, &key);
                }
                Ok(Err((err, _))) => inner.fence_error(st, &key, partition, err),
                Err(_canceled) => inner.fence_error(st, &key, partition, KafkaError::Canceled),
            }
        });
    }

    /// A fence could not be written: retry after a backoff, or give up and fail the key's
    /// held records with a clear error.
    fn fence_error(self: &Arc<Self>, st: &mut State, key: &[u8], partition: u32, err: KafkaError) {
        st.counters.fence_failures += 1;
        if let Some(migrator) = st.migrator.as_mut() {
            migrator.fence_failed(key);
        }
        let Some(queue) = st.held.get_mut(key) else {
            return;
        };
        queue.attempts += 1;
        let attempts = queue.attempts;
        if attempts < self.fence_attempts {
            let delay = self.fence_backoff * attempts;
            tracing::warn!(
                topic = %self.topic,
                key = %String::from_utf8_lossy(key),
                partition,
                attempts,
                error = %err,
                "fence failed; retrying in {delay:?}"
            );
            let inner = Arc::clone(self);
            let key: Box<[u8]> = key.into();
            self.runtime.handle.spawn(async move {
                tokio::time::sleep(delay).await;
                let mut guard = inner.lock();
                // The first held record meets no fence in flight, so the migrator fences again.
                inner.release(&mut guard, &key);
            });
            return;
        }
        tracing::error!(
            topic = %self.topic,
            key = %String::from_utf8_lossy(key),
            partition,
            attempts,
            error = %err,
            "fence failed on every attempt; failing the key's held records"
        );
        self.fail_held(st, key, || ProduceError::Fence {
            topic: self.topic.clone(),
            key: String::from_utf8_lossy(key).into_owned(),
            fence_partition: partition,
            attempts,
            source: Box::new(err.clone()),
        });
    }

    /// Fails every record held for `key` with `error()` and forgets its hold queue.
    pub(super) fn fail_held(&self, st: &mut State, key: &[u8], error: impl Fn() -> ProduceError) {
        let Some(queue) = st.held.remove(key) else {
            return;
        };
        st.counters.held_now -= queue.records.len();
        for held in queue.records {
            self.count_error();
            let _ = held.reply.send(Err(error()));
        }
    }

    /// The delivery report of a record just enqueued: watched when it is a headed record at
    /// its key's home (the migrator needs its acknowledgement), else librdkafka's future.
    fn report(
        self: &Arc<Self>,
        st: &State,
        key: &[u8],
        partition: u32,
        route: Option<RouteHeader>,
        future: DeliveryFuture,
    ) -> Report {
        let Some(header) = route else {
            return Report::Direct(future);
        };
        if !st
            .migrator
            .as_ref()
            .is_some_and(|m| m.wants_ack(key, partition, route))
        {
            return Report::Direct(future);
        }
        let (tx, rx) = oneshot::channel();
        let inner = Arc::clone(self);
        let key: Box<[u8]> = key.into();
        self.runtime.handle.spawn(async move {
            let report = future.await;
            if matches!(report, Ok(Ok(_))) {
                let mut guard = inner.lock();
                let st = &mut *guard;
                if st
                    .migrator
                    .as_mut()
                    .is_some_and(|m| m.record_acked(&key, header))
                {
                    inner.save_routes(st);
                }
            }
            // The caller may have dropped its future; the migrator heard the report anyway.
            let _ = tx.send(report);
        });
        Report::Watched(rx)
    }

    /// Writes the route changes the migrator has queued (durable routes), in order.
    fn save_routes(self: &Arc<Self>, st: &mut State) {
        let Some(migrator) = st.migrator.as_mut() else {
            return;
        };
        let mut changes = Vec::new();
        while let Some(change) = migrator.poll_change() {
            changes.push(change);
        }
        for change in changes {
            st.route_gen += 1;
            let generation = st.route_gen;
            st.route_latest.insert(change.key.clone(), generation);
            self.write_route(st, change, generation, 0);
        }
    }

    /// Enqueues one route change; its report is awaited on the runtime.
    fn write_route(
        self: &Arc<Self>,
        st: &mut State,
        change: RouteChange,
        generation: u64,
        failures: u32,
    ) {
        let Some(routes) = &self.routes else {
            // A durable migrator is only built with a route topic.
            debug_assert!(false, "route change without a route topic");
            return;
        };
        let value = change.entry.map(|e| e.encode());
        let sent = self
            .producer
            .send_result(routes.record(&change.key, value.as_deref()))
            .map_err(|(err, _)| err);
        match sent {
            Ok(future) => {
                let inner = Arc::clone(self);
                self.runtime.handle.spawn(async move {
                    let report = future.await;
                    let mut guard = inner.lock();
                    let st = &mut *guard;
                    match report {
                        Ok(Ok(_)) => inner.route_written(st, change, generation),
                        Ok(Err((err, _))) => {
                            inner.route_write_failed(st, change, generation, failures + 1, err)
                        }
                        Err(_canceled) => inner.route_write_failed(
                            st,
                            change,
                            generation,
                            failures + 1,
                            KafkaError::Canceled,
                        ),
                    }
                });
            }
            Err(err) => self.route_write_failed(st, change, generation, failures + 1, err),
        }
    }

    fn route_written(self: &Arc<Self>, st: &mut State, change: RouteChange, generation: u64) {
        st.counters.route_writes += 1;
        if st.route_latest.get(&change.key) == Some(&generation) {
            st.route_latest.remove(&change.key);
        }
        if let Some(entry) = change.entry {
            let saved = st
                .migrator
                .as_mut()
                .is_some_and(|m| m.route_saved(&change.key, entry.route.set_index));
            if saved {
                self.release(st, &change.key);
            }
        }
    }

    fn route_write_failed(
        self: &Arc<Self>,
        st: &mut State,
        change: RouteChange,
        generation: u64,
        failures: u32,
        err: KafkaError,
    ) {
        if st.route_latest.get(&change.key) != Some(&generation) {
            // A newer change of the key was written after this one: it supersedes it.
            return;
        }
        st.counters.route_write_failures += 1;
        let routes_topic = self.routes.as_ref().map_or("", |r| r.name.as_str());
        tracing::warn!(
            topic = %self.topic,
            routes_topic,
            key = %String::from_utf8_lossy(&change.key),
            failures,
            error = %err,
            "route change not recorded; retrying"
        );
        if change.entry.is_some() && failures >= self.fence_attempts {
            self.fail_held(st, &change.key, || ProduceError::RouteState {
                topic: self.topic.clone(),
                key: String::from_utf8_lossy(&change.key).into_owned(),
                routes_topic: routes_topic.to_owned(),
                attempts: failures,
                source: Box::new(err.clone()),
            });
        }
        let delay = self.fence_backoff * failures.min(self.fence_attempts);
        let inner = Arc::clone(self);
        self.runtime.handle.spawn(async move {
            tokio::time::sleep(delay).await;
            let mut guard = inner.lock();
            if guard.route_latest.get(&change.key) == Some(&generation) {
                inner.write_route(&mut guard, change, generation, failures);
            }
        });
    }

    /// Offers the key's held records to the migrator in order until one needs a fence (or
    /// waits for one) or none is left. Coordinated: nothing while a move of the key is
    /// pending; then every record goes along the key's current route.
    pub(super) fn release(self: &Arc<Self>, st: &mut State, key: &[u8]) {
        if st.coord.as_ref().is_some_and(|c| c.holds(key)) {
            return;
        }
        if st.growth.is_some() && st.held.contains_key(key) && self.growth_holds(st, key, false) {
            // It lost its route (a failed fence) while a growth changes its home: it waits
            // for the growth (which re-offers it) like the keys it held from the start.
            return;
        }
        loop {
            let Some(queue) = st.held.get_mut(key) else {
                return;
            };
            let Some(front) = queue.records.front() else {
                st.held.remove(key);
                return;
            };
            let Some(migrator) = st.migrator.as_mut() else {
                return;
            };
            let chosen = if st.coord.is_some() {
                migrator.current(key)
            } else {
                front.partition
            };
            match migrator.on_record(key, chosen) {
                Step::Send { partition, header } => {
                    let held = queue.records.pop_front().expect("front exists");
                    st.counters.held_now -= 1;
                    let rec = Outgoing {
                        key,
                        partition,
                        value: &held.value,
                        headers: &held.headers,
                        route: header,
                        fence: None,
                    };
                    let after = After::Reply {
                        reply: held.reply,
                        fenced_wait: Some(held.arrived.elapsed()),
                    };
                    self.emit(st, rec, after);
                }
                Step::Fence {
                    fence_partition,
                    header,
                    route,
                    ..
                } => {
                    self.emit_fence(st, key, fence_partition, header, route);
                    return;
                }
                Step::Hold => return,
            }
        }
    }

    /// Moves backlogged records into librdkafka, in order, until its queue is full again.
    fn drain_backlog(self: &Arc<Self>, st: &mut State) {
        while let Some(front) = st.backlog.front() {
            let result = self.enqueue(&mut st.counters, &mut st.scratch, &front.outgoing());
            if matches!(&result, Err(err) if is_queue_full(err)) {
                return;
            }
            let item = st.backlog.pop_front().expect("front exists");
            self.finish(
                st,
                &item.key,
                item.partition,
                item.route,
                item.after,
                result,
            );
        }
    }

    fn ensure_drainer(self: &Arc<Self>, st: &mut State) {
        if st.drainer_running {
            return;
        }
        st.drainer_running = true;
        tracing::debug!(topic = %self.topic, "librdkafka queue full; draining a backlog");
        let inner = Arc::clone(self);
        self.runtime.handle.spawn(async move {
            loop {
                tokio::time::sleep(QUEUE_FULL_BACKOFF).await;
                let mut guard = inner.lock();
                inner.drain_backlog(&mut guard);
                if guard.backlog.is_empty() {
                    guard.drainer_running = false;
                    return;
                }
            }
        });
    }
}
