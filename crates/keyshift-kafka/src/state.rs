//! Per-key state that follows its key: a changelog topic and the cache in front of it.
//!
//! Why: handlers keep state per key (a counter, a balance, a session), and with keyshift a
//! key's records may be processed by another worker after a migration or a rebalance. The new
//! owner must start from the state the key's previous record left, and a record redelivered
//! after a crash must not be applied twice — "exactly", not "at least".
//!
//! How: a [`StateStore`] keeps every key's latest [`StateEntry`] (its state and the record that
//! wrote it) in a compacted changelog topic keyed by the user key, and a cache of the whole
//! topic fed by a reader thread that follows it. [`StateStore::read`] returns the key's state
//! for a released record, or [`StateView::Applied`] when the entry shows the record was already
//! applied (a redelivery); [`StateStore::write`] records the new state and returns only when
//! the broker acknowledged it — before the record counts as processed, so before its offset can
//! be committed and before the order gate lets the key's next record run anywhere. That is the
//! hand-off at the fence: when the key's first record on its new partition is released, the
//! old owner's last write is in the changelog. A read trusts the cache only when this worker
//! wrote the key's entry for the key's previous record ([`Provenance::vouches_for`]: same
//! partition, same assignment, same message set); otherwise it first reads the changelog up to
//! its current end (one ListOffsets and the tail; concurrent reads share one round).
//! [`WithState`] wraps a [`StatefulHandler`] into the consumer's [`AsyncRecordHandler`]:
//! read, call, write; `worker --forward/--exec --state` use it.
//!
//! Limits, also in docs/consumers.md: every worker reads the whole changelog (one partition),
//! so memory and start time grow with the number of keys; a record that leaves its key's state
//! unchanged writes nothing, so after a crash it may be handed to the handler again (its state
//! effect is nil either way); records without a key have no state.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use keyshift_core::keystate::{Provenance, StateEntry};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Offset;
use tokio::sync::oneshot;

use crate::admin::{Admin, AdminError};
use crate::config::ClientSettings;
use crate::consumer::{AsyncRecordHandler, DeliveredRecord, HandlerError};
use crate::lock;
use crate::reader::state_reader;

/// Suffix of the default changelog topic name: `<topic>.keyshift-state`.
pub const STATE_TOPIC_SUFFIX: &str = ".keyshift-state";

/// Why the store cannot start or a read or write failed; each names the changelog topic.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The changelog topic cannot be created, or a client for it cannot be made.
    #[error("state changelog '{topic}': {reason}")]
    Open {
        /// The changelog topic.
        topic: String,
        /// What failed.
        reason: String,
    },
    /// Catching up with the changelog failed (its end offset could not be read in time).
    #[error("state changelog '{topic}': cannot read up to its end: {reason}")]
    Refresh {
        /// The changelog topic.
        topic: String,
        /// What failed.
        reason: String,
    },
    /// The broker did not acknowledge a state write.
    #[error("state changelog '{topic}': writing the state of a key failed: {reason}")]
    Write {
        /// The changelog topic.
        topic: String,
        /// What failed.
        reason: String,
    },
    /// The store was closed.
    #[error("state changelog '{topic}': the store is closed")]
    Closed {
        /// The changelog topic.
        topic: String,
    },
}

/// A key's state as a record finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateView {
    /// The record was applied already (a redelivery): do not apply it again.
    Applied,
    /// The key's current state (`None`: it has none).
    Current(Option<Vec<u8>>),
}

/// What a handler did to its key's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateChange {
    /// Left it as it was (nothing is written).
    Keep,
    /// Replaced it.
    Set(Vec<u8>),
    /// Removed it (a marker is kept, so a redelivered record is still recognised).
    Delete,
}

/// Counters of a store, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateStats {
    /// Keys with an entry in the cache.
    pub keys: u64,
    /// Reads that caught up with the changelog first (a key seen for the first time here, or
    /// handed over by a migration or a rebalance).
    pub refreshes: u64,
    /// Records found already applied and not applied again.
    pub already_applied: u64,
    /// State writes acknowledged.
    pub writes: u64,
    /// State writes that failed (the record then fails and is retried).
    pub write_failures: u64,
    /// Changelog records that did not decode (skipped, logged).
    pub malformed: u64,
}

/// The state store of one worker; see the [module docs](self). Cheap to clone.
#[derive(Clone)]
pub struct StateStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for StateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateStore")
            .field("topic", &self.inner.shared.topic)
            .finish_non_exhaustive()
    }
}

struct Inner {
    shared: Arc<Shared>,
    producer: FutureProducer,
    /// Requests to catch up, to the reader thread.
    refresh: Mutex<mpsc::Sender<Waiter>>,
    reader: Mutex<Option<JoinHandle<()>>>,
}

/// What the store and its reader thread share (the thread does not keep the store alive: when
/// the last [`StateStore`] clone is dropped, the thread sees `closed` and ends).
struct Shared {
    topic: String,
    timeout: Duration,
    cache: Mutex<HashMap<Vec<u8>, Cached>>,
    closed: AtomicBool,
    refreshes: AtomicU64,
    already_applied: AtomicU64,
    writes: AtomicU64,
    write_failures: AtomicU64,
    malformed: AtomicU64,
}

/// A catch-up request: answered when the cache caught up, or with why it could not.
type Waiter = oneshot::Sender<Result<(), String>>;

/// A cached entry: the entry, its changelog offset, and — when this worker wrote it — for which
/// record.
struct Cached {
    entry: StateEntry,
    at: i64,
    mine: Option<Provenance>,
}

impl StateStore {
    /// Opens the changelog `topic` (created compacted with one partition if missing; an
    /// existing one is used as it is, read from its partition 0) and starts following it.
    /// `timeout` bounds each write and each catch-up.
    pub fn open(
        settings: &ClientSettings,
        topic: &str,
        timeout: Duration,
    ) -> Result<Self, StateError> {
        let open_err = |reason: String| StateError::Open {
            topic: topic.to_owned(),
            reason,
        };
        let admin = Admin::new(settings).map_err(|e| open_err(e.to_string()))?;
        match admin.create_topic_with(topic, 1, &[("cleanup.policy", "compact")]) {
            Ok(_) | Err(AdminError::PartitionMismatch { .. }) => {}
            Err(e) => return Err(open_err(format!("cannot create it: {e}"))),
        }
        let mut config = settings.producer_config();
        config.set("message.timeout.ms", timeout.as_millis().max(1).to_string());
        let producer: FutureProducer = config
            .create()
            .map_err(|e| open_err(format!("cannot create its producer: {e}")))?;
        let reader = state_reader(
            settings,
            "keyshift-state-reader",
            topic,
            [(0, Offset::Beginning)],
            false,
        )
        .map_err(open_err)?;
        let (tx, rx) = mpsc::channel();
        let shared = Arc::new(Shared {
            topic: topic.to_owned(),
            timeout,
            cache: Mutex::default(),
            closed: AtomicBool::new(false),
            refreshes: AtomicU64::new(0),
            already_applied: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            write_failures: AtomicU64::new(0),
            malformed: AtomicU64::new(0),
        });
        let follower = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("keyshift-state".into())
            .spawn(move || follower.follow(reader, rx))
            .map_err(|e| open_err(format!("cannot start its reader thread: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                shared,
                producer,
                refresh: Mutex::new(tx),
                reader: Mutex::new(Some(thread)),
            }),
        })
    }

    /// The changelog topic.
    pub fn topic(&self) -> &str {
        &self.inner.shared.topic
    }

    /// Its counters.
    pub fn stats(&self) -> StateStats {
        let i = &self.inner.shared;
        StateStats {
            keys: lock(&i.cache).len() as u64,
            refreshes: i.refreshes.load(Ordering::Relaxed),
            already_applied: i.already_applied.load(Ordering::Relaxed),
            writes: i.writes.load(Ordering::Relaxed),
            write_failures: i.write_failures.load(Ordering::Relaxed),
            malformed: i.malformed.load(Ordering::Relaxed),
        }
    }

    /// The state of `record`'s key as the record must see it, or [`StateView::Applied`] if it
    /// was applied already. Call it for a record the ordered consumer released, from its
    /// handler. A record without a key has no state (`Current(None)`).
    pub async fn read(&self, record: &DeliveredRecord) -> Result<StateView, StateError> {
        let Some(key) = record.key.as_deref() else {
            return Ok(StateView::Current(None));
        };
        let shared = &self.inner.shared;
        let trusted = lock(&shared.cache)
            .get(key)
            .and_then(|c| c.mine)
            .is_some_and(|m| m.vouches_for(record.partition, record.assignment, record.route));
        if !trusted {
            self.catch_up().await?;
        }
        let cache = lock(&shared.cache);
        let Some(cached) = cache.get(key) else {
            return Ok(StateView::Current(None));
        };
        if cached.entry.covers(record.partition, record.offset) {
            shared.already_applied.fetch_add(1, Ordering::Relaxed);
            return Ok(StateView::Applied);
        }
        Ok(StateView::Current(cached.entry.value.clone()))
    }

    /// Records what processing `record` did to its key's state, returning once the broker
    /// acknowledged it ([`StateChange::Keep`] writes nothing). Call it after a
    /// [`read`](Self::read) of the same record and before the handler returns.
    pub async fn write(
        &self,
        record: &DeliveredRecord,
        change: StateChange,
    ) -> Result<(), StateError> {
        match &record.key {
            Some(key) => self.write_at(key, Written::of(record), change).await,
            None => Ok(()),
        }
    }

    async fn write_at(
        &self,
        key: &[u8],
        written: Written,
        change: StateChange,
    ) -> Result<(), StateError> {
        let shared = &self.inner.shared;
        let value = match change {
            StateChange::Keep => {
                // The cache was current for this record (read checked), and nobody else
                // processes the key before its next record here: it stays trusted.
                if let Some(c) = lock(&shared.cache).get_mut(key) {
                    c.mine = Some(written.provenance);
                }
                return Ok(());
            }
            StateChange::Set(v) => Some(v),
            StateChange::Delete => None,
        };
        let entry = StateEntry {
            partition: written.provenance.partition,
            offset: written.offset,
            value,
        };
        let bytes = entry.encode();
        let sent = self
            .inner
            .producer
            .send(
                FutureRecord::to(&shared.topic).key(key).payload(&bytes),
                shared.timeout,
            )
            .await;
        match sent {
            Ok(delivery) => {
                shared.writes.fetch_add(1, Ordering::Relaxed);
                let mut cache = lock(&shared.cache);
                if cache.get(key).is_none_or(|c| c.at < delivery.offset) {
                    cache.insert(
                        key.to_vec(),
                        Cached {
                            entry,
                            at: delivery.offset,
                            mine: Some(written.provenance),
                        },
                    );
                }
                Ok(())
            }
            Err((err, _)) => {
                shared.write_failures.fetch_add(1, Ordering::Relaxed);
                // The write may still have landed: the next read must catch up, not trust us.
                if let Some(c) = lock(&shared.cache).get_mut(key) {
                    c.mine = None;
                }
                Err(StateError::Write {
                    topic: shared.topic.clone(),
                    reason: err.to_string(),
                })
            }
        }
    }

    /// The state of `key` as the changelog holds it now (after catching up): for reading state
    /// outside a handler — a query, a report. A handler uses [`read`](Self::read).
    pub async fn current(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        self.catch_up().await?;
        Ok(lock(&self.inner.shared.cache)
            .get(key)
            .and_then(|c| c.entry.value.clone()))
    }

    /// [`read`](Self::read) for synchronous handlers (blocks the calling thread).
    pub fn read_blocking(&self, record: &DeliveredRecord) -> Result<StateView, StateError> {
        futures_executor::block_on(self.read(record))
    }

    /// [`write`](Self::write) for synchronous handlers (blocks the calling thread).
    pub fn write_blocking(
        &self,
        record: &DeliveredRecord,
        change: StateChange,
    ) -> Result<(), StateError> {
        futures_executor::block_on(self.write(record, change))
    }

    /// Waits until the cache holds everything the changelog held when this was called.
    async fn catch_up(&self) -> Result<(), StateError> {
        let shared = &self.inner.shared;
        shared.refreshes.fetch_add(1, Ordering::Relaxed);
        let closed = || StateError::Closed {
            topic: shared.topic.clone(),
        };
        let (tx, rx) = oneshot::channel();
        lock(&self.inner.refresh).send(tx).map_err(|_| closed())?;
        rx.await
            .map_err(|_| closed())?
            .map_err(|reason| StateError::Refresh {
                topic: shared.topic.clone(),
                reason,
            })
    }

    /// Stops following the changelog (writes already acknowledged stay). Also on drop of the
    /// last clone.
    pub fn close(&self) {
        self.inner.shared.closed.store(true, Ordering::SeqCst);
        if let Some(t) = lock(&self.inner.reader).take() {
            let _ = t.join();
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The reader thread sees it within one poll and ends; nothing waits for it here.
        self.shared.closed.store(true, Ordering::SeqCst);
    }
}

/// The record a state write is for: its offset and where it was processed.
#[derive(Debug, Clone, Copy)]
struct Written {
    offset: i64,
    provenance: Provenance,
}

impl Written {
    fn of(record: &DeliveredRecord) -> Self {
        Self {
            offset: record.offset,
            provenance: Provenance {
                partition: record.partition,
                assignment: record.assignment,
                route: record.route,
            },
        }
    }
}

impl Shared {
    /// The reader thread: applies every changelog record to the cache and answers catch-up
    /// requests. A request is answered once the reader passed the end offset read *after* the
    /// request arrived, so it sees every write acknowledged before it was made.
    fn follow(self: Arc<Self>, reader: BaseConsumer, requests: mpsc::Receiver<Waiter>) {
        let mut next = 0i64;
        let mut queued: Vec<Waiter> = Vec::new();
        // The round in progress: its target end offset and the requests it answers.
        let mut round: Option<(i64, Vec<Waiter>)> = None;
        while !self.closed.load(Ordering::SeqCst) {
            while let Ok(tx) = requests.try_recv() {
                queued.push(tx);
            }
            if round.is_none() && !queued.is_empty() {
                let waiting = std::mem::take(&mut queued);
                match reader.fetch_watermarks(&self.topic, 0, self.timeout) {
                    Ok((_, high)) => round = Some((high, waiting)),
                    Err(e) => {
                        for tx in waiting {
                            let _ = tx.send(Err(e.to_string()));
                        }
                    }
                }
            }
            if let Some((target, _)) = &round {
                if next >= *target {
                    let (_, waiting) = round.take().expect("checked");
                    for tx in waiting {
                        let _ = tx.send(Ok(()));
                    }
                    continue;
                }
            }
            let Some(polled) = reader.poll(Duration::from_millis(20)) else {
                next = next.max(position(&reader, &self.topic));
                continue;
            };
            let message = match polled {
                Ok(m) => m,
                Err(err) => {
                    tracing::warn!(topic = %self.topic, %err, "reading the state changelog failed; retrying");
                    continue;
                }
            };
            next = next.max(message.offset() + 1);
            let Some(key) = message.key() else {
                continue;
            };
            match message.payload().map(StateEntry::decode) {
                Some(Ok(entry)) => {
                    let mut cache = lock(&self.cache);
                    let at = message.offset();
                    match cache.get_mut(key) {
                        Some(c) if c.at >= at => {}
                        Some(c) => {
                            // Someone else wrote the key since: this worker no longer vouches.
                            *c = Cached {
                                entry,
                                at,
                                mine: None,
                            };
                        }
                        None => {
                            cache.insert(
                                key.to_vec(),
                                Cached {
                                    entry,
                                    at,
                                    mine: None,
                                },
                            );
                        }
                    }
                }
                Some(Err(err)) => {
                    self.malformed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(topic = %self.topic, offset = message.offset(), %err, "skipping a state changelog record that does not decode");
                }
                // A tombstone (written by a tool, not by keyshift): the key has no state.
                None => {
                    lock(&self.cache).remove(key);
                }
            }
        }
    }
}

/// The reader's next offset on partition 0, as librdkafka tracks it (past compacted gaps).
fn position(reader: &BaseConsumer, topic: &str) -> i64 {
    let Ok(tpl) = reader.position() else {
        return 0;
    };
    match tpl.find_partition(topic, 0).map(|e| e.offset()) {
        Some(Offset::Offset(o)) => o,
        _ => 0,
    }
}

/// A handler of records with per-key state: gets the key's state, answers what to do with it.
/// Implemented by [`HttpForward`](crate::HttpForward), [`ExecHandler`](crate::ExecHandler) and
/// closures `Fn(DeliveredRecord, Option<Vec<u8>>) -> impl Future<Output = Result<StateChange, E>>`.
pub trait StatefulHandler: Send + Sync + 'static {
    /// Processes `record` given its key's current `state`.
    fn handle(
        &self,
        record: DeliveredRecord,
        state: Option<Vec<u8>>,
    ) -> impl Future<Output = Result<StateChange, HandlerError>> + Send + 'static;
}

impl<F, Fut, E> StatefulHandler for F
where
    F: Fn(DeliveredRecord, Option<Vec<u8>>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<StateChange, E>> + Send + 'static,
    E: Into<HandlerError>,
{
    fn handle(
        &self,
        record: DeliveredRecord,
        state: Option<Vec<u8>>,
    ) -> impl Future<Output = Result<StateChange, HandlerError>> + Send + 'static {
        let fut = self(record, state);
        async move { fut.await.map_err(Into::into) }
    }
}

/// A [`StatefulHandler`] with its [`StateStore`], as the ordered consumer's
/// [`AsyncRecordHandler`]: each record reads its key's state, runs the handler unless the record
/// was applied already, and writes the new state before it counts as processed. A failed
/// handler or write fails the record (retried by the consumer's policy; nothing was written).
pub struct WithState<H> {
    store: StateStore,
    handler: Arc<H>,
}

impl<H> WithState<H> {
    /// `handler` with its state in `store`.
    pub fn new(store: StateStore, handler: H) -> Self {
        Self {
            store,
            handler: Arc::new(handler),
        }
    }
}

impl<H: StatefulHandler> AsyncRecordHandler for WithState<H> {
    fn handle(
        &self,
        record: DeliveredRecord,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send + 'static {
        let store = self.store.clone();
        let handler = Arc::clone(&self.handler);
        async move {
            let state = match store.read(&record).await? {
                StateView::Applied => return Ok(()),
                StateView::Current(s) => s,
            };
            let written = Written::of(&record);
            let key = record.key.clone();
            let change = handler.handle(record, state).await?;
            if let Some(key) = key {
                store.write_at(&key, written, change).await?;
            }
            Ok(())
        }
    }
}
