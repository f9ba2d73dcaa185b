//! The keyshift producer: any strategy of the core in front of an idempotent rdkafka
//! producer, with fenced migration when an ordered strategy moves a key.
//!
//! [`KeyshiftProducer`] is what the gateway and the experiment send through. For each record
//! it asks the strategy for a partition; for order-preserving strategies (`hash`, `slops`,
//! `keyshift`) the core's [`Migrator`] then decides:
//! - *send*: the record goes to that partition now, with the `keyshift-route` header when its
//!   key's current message set needs one;
//! - *fence*: the key moves from A to B. A fence record (the key, the reserved value
//!   [`FENCE_VALUE`](keyshift_core::protocol::FENCE_VALUE), header `keyshift-fence`, plus
//!   `keyshift-route` of the set it closes, if any) is written to A;
//!   this record and every later record of the key wait in a per-key FIFO until the fence's
//!   delivery report gives its offset, then are offered again in order (they go to B with
//!   the route header naming A and the fence offset). Only that key waits, about one produce
//!   round trip; other keys never do.
//!
//! `pkg` and `unordered` split keys across partitions by design, so they skip the migrator.
//!
//! # Guarantees and their conditions
//! - Per-key order equals call order: the decision and librdkafka's non-blocking enqueue
//!   happen under one lock, so the order in which [`KeyshiftProducer::try_send`] (or the first
//!   poll of [`KeyshiftProducer::send`]) is called for a key is the order its records are
//!   queued. Concurrent callers sending the same key get *an* order, the one they won the lock.
//! - Inside a partition librdkafka keeps that order because the producer is idempotent
//!   (`enable.idempotence=true`, `acks=all` from [`ClientSettings::producer_config`]).
//! - Delivery errors are surfaced: every record's future resolves to its broker
//!   acknowledgement or an error; a fence that fails is retried
//!   ([`ProducerBuilder::fence_attempts`], backoff [`ProducerBuilder::fence_backoff`] ×
//!   attempt) and then fails the records held behind it with [`ProduceError::Fence`].
//!
//! # Properties and precedence
//! Lowest first: keyshift's producer defaults (idempotence, `acks=all`), the shared
//! [`ClientSettings`] (bootstrap servers, client id, its `-X` passthrough), then the
//! producer-only properties of [`ProducerBuilder::property`]. Any librdkafka property passes
//! through, with one exception: a strategy that moves keys (`slops`, `keyshift`) refuses to
//! build unless the producer is idempotent with `acks=all`
//! ([`ProducerBuildError::UnsafeMoves`]) — with fewer acks a fence acknowledged by one broker
//! can vanish in a leader change, and without idempotence a retry can reorder a partition, so
//! the barrier would not hold. With `hash` such settings are allowed (logged as a warning) and
//! [`KeyshiftProducer::move_key`] is refused instead; `pkg` and `unordered` keep no order.
//!
//! # Route state
//! With an order-preserving strategy, producers are coordinated by default
//! ([`Routes::Coordinated`]): every producer of a topic — one process or many instances — joins
//! the topic's control log `<topic>.keyshift-control`, one of them decides moves and every one
//! fences its own records of a moving key (the protocol is
//! [`keyshift_core::protocol::coordinator`]; this crate's side, `member.rs`, moves its bytes).
//! The log holds the committed routes, so a restarted producer continues every moved key. A
//! lone producer decides once it has claimed the first term (at once on a new topic; after the
//! lease, 3 s, when a previous decider's claim is in the log). Routes a durable producer left
//! in `<topic>.keyshift-routes` are read at build and continued (an upgrade).
//! [`Routes::Durable`] is the single-producer path: [`ProducerBuilder::build`] creates (if
//! needed) and reads the route topic `<topic>.keyshift-routes` to its end and restores the
//! migrator from it; every route change is written there before the moved key's next records
//! are sent. It is refused while coordinated producers have moved keys of the topic. A route or
//! control topic that cannot be created or read fails the build
//! ([`ProducerBuildError::RouteState`]). [`Routes::Ephemeral`] keeps routes in memory, which is
//! unsafe across restarts: a restarted producer sends moved keys home without a fence. See
//! `docs/routing.md`.
//!
//! # Queue full
//! librdkafka's local queue is bounded (`queue.buffering.max.messages` / `.kbytes`). A record
//! already decided when the queue turns out full goes to a FIFO backlog that a background
//! task drains as room appears (order kept). While that backlog is non-empty, new records are
//! refused before any decision: [`KeyshiftProducer::try_send`] returns
//! [`ProduceError::QueueFull`], [`KeyshiftProducer::send`] backs off (outside the lock) and
//! retries.
//!
//! # Forced moves
//! [`KeyshiftProducer::move_key`] pins a key to a partition: the pin is consulted after the
//! strategy (which still sees every record, so its load model stays complete) and overrides
//! its choice, so the pinned key moves through exactly the same migrator path — fence and
//! all — on its next record. [`KeyshiftProducer::unpin_key`] hands it back to the strategy
//! (which fences again if that moves it). Meant for tests and operators.
//!
//! # Runtime
//! Fence reports and the backlog are handled by small tasks on a tokio runtime: the one given
//! to [`ProducerBuilder::runtime`], else the one current at [`ProducerBuilder::build`], else a
//! private one-thread runtime the producer owns. [`KeyshiftProducer::send`] works from any
//! executor.
//!
//! # Tracing
//! With [`ProducerBuilder::tracing`], each record gets a `send <topic>` PRODUCER span from the
//! call to the broker's acknowledgement, and its context is written into the record's
//! `traceparent` (and `b3`) header; trace headers the caller passed become the span's parent.
//! With [`ProducerBuilder::trace_events`], each record also gets a `correlationId` header and
//! SEND/ACK events go to the `_tracing` topic. Without either, no tracing work is done.
//!
//! [`Migrator`]: keyshift_core::protocol::Migrator

mod engine;
mod error;
mod growth;
mod member;
mod routes;
mod stats;
mod trace;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use keyshift_core::protocol::epoch::Epoch;
use keyshift_core::protocol::Migrator;
use keyshift_core::strategy::{build_with, PartitionFeedback, Strategy, StrategyConfig};
use keyshift_core::ParamError;
use rdkafka::producer::{FutureProducer, Producer};
use tokio::runtime::Handle;
use tokio::sync::oneshot;

use crate::admin::Admin;
use crate::config::{ClientSettings, Property};
use crate::control::{ControlTopic, CONTROL_TOPIC_SUFFIX};
use crate::trace_events::TraceEventSink;
use engine::{Enqueued, Inner, RuntimeHandle, State, Submitted, QUEUE_FULL_BACKOFF};
use keyshift_core::protocol::control::{Control, ControlLog};
use keyshift_core::protocol::coordinator::Coordinator;
use keyshift_trace::Tracing;
use routes::RouteTopic;
use trace::RecordTrace;

pub use error::{ProduceError, ProducerBuildError};
pub use growth::GrowthReport;
pub use keyshift_core::protocol::coordinator::CoordinationConfig;
pub use member::HEARTBEAT;
pub use routes::{Routes, ROUTE_TOPIC_SUFFIX};
pub use stats::{CoordinationStats, ProducerStats};

/// Default number of attempts to write one fence before its held records fail.
pub const DEFAULT_FENCE_ATTEMPTS: u32 = 5;
/// Default backoff after a failed fence (multiplied by the attempt number).
pub const DEFAULT_FENCE_BACKOFF: Duration = Duration::from_millis(100);
/// Default bound on reading the route topic at build.
pub const DEFAULT_ROUTES_TIMEOUT: Duration = Duration::from_secs(30);

/// A record acknowledged by the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// Partition it was written to.
    pub partition: u32,
    /// Its offset in that partition.
    pub offset: i64,
    /// How long it waited behind a fence of its key (`None` if it never waited).
    pub fenced_wait: Option<Duration>,
}

/// Configures and validates a [`KeyshiftProducer`]; see [`KeyshiftProducer::builder`].
#[derive(Debug, Clone)]
pub struct ProducerBuilder {
    settings: ClientSettings,
    topic: String,
    strategy: String,
    strategy_config: StrategyConfig,
    partitions: Option<u32>,
    origin: Option<Instant>,
    properties: Vec<(String, String)>,
    fence_attempts: u32,
    fence_backoff: Duration,
    runtime: Option<Handle>,
    tracing: Option<Tracing>,
    events: Option<TraceEventSink>,
    routes: Routes,
    routes_timeout: Duration,
    coordination: CoordinationConfig,
    control_settings: Option<ClientSettings>,
}

impl ProducerBuilder {
    /// A builder for `topic` on the cluster of `settings`, strategy `hash` by default.
    pub fn new(settings: ClientSettings, topic: impl Into<String>) -> Self {
        Self {
            settings,
            topic: topic.into(),
            strategy: "hash".to_owned(),
            strategy_config: StrategyConfig::default(),
            partitions: None,
            origin: None,
            properties: Vec::new(),
            fence_attempts: DEFAULT_FENCE_ATTEMPTS,
            fence_backoff: DEFAULT_FENCE_BACKOFF,
            runtime: None,
            tracing: None,
            events: None,
            routes: Routes::default(),
            routes_timeout: DEFAULT_ROUTES_TIMEOUT,
            coordination: CoordinationConfig::default(),
            control_settings: None,
        }
    }

    /// Where routes of moved keys are kept: [`Routes::Coordinated`] (default, control topic
    /// `<topic>.keyshift-control` unless named), [`Routes::Durable`] (one producer process,
    /// route topic `<topic>.keyshift-routes` unless named) or [`Routes::Ephemeral`] (in memory,
    /// unsafe across restarts). See "Route state" in the module docs.
    pub fn routes(mut self, routes: Routes) -> Self {
        self.routes = routes;
        self
    }

    /// Timeouts of coordinated producers ([`Routes::Coordinated`]): lease, member timeout,
    /// move timeout (each must be positive).
    pub fn coordination(mut self, config: CoordinationConfig) -> Self {
        self.coordination = config;
        self
    }

    /// Client settings for the control topic of [`Routes::Coordinated`] when it is reached
    /// another way than the data topic: on another cluster (one that lets applications create
    /// topics, or a small one kept for coordination), or through a proxy. Default: the
    /// producer's own settings. Every producer of the topic must name the same control topic.
    pub fn control_settings(mut self, settings: ClientSettings) -> Self {
        self.control_settings = Some(settings);
        self
    }

    /// Bound on reading the route topic at build (default [`DEFAULT_ROUTES_TIMEOUT`]).
    pub fn routes_timeout(mut self, timeout: Duration) -> Self {
        self.routes_timeout = timeout;
        self
    }

    /// Traces every record: a `send <topic>` span and its context in the record's headers
    /// (see "Tracing" in the module docs). Pass the process's one [`Tracing`].
    pub fn tracing(mut self, tracing: Tracing) -> Self {
        self.tracing = Some(tracing);
        self
    }

    /// Emits SEND and ACK events of every record to `sink` (kafka-tracing-interceptor format)
    /// and gives each record a `correlationId` header.
    pub fn trace_events(mut self, sink: TraceEventSink) -> Self {
        self.events = Some(sink);
        self
    }

    /// The strategy, one of [`keyshift_core::strategy::NAMES`] (checked at build).
    pub fn strategy(mut self, name: impl Into<String>) -> Self {
        self.strategy = name.into();
        self
    }

    /// Options of every strategy (hasher, seed, per-strategy settings).
    pub fn strategy_config(mut self, config: StrategyConfig) -> Self {
        self.strategy_config = config;
        self
    }

    /// The topic's partition count; without it, [`ProducerBuilder::build`] reads it from the
    /// cluster's metadata (and fails if the topic does not exist).
    pub fn partitions(mut self, partitions: u32) -> Self {
        self.partitions = Some(partitions);
        self
    }

    /// The instant strategies count time from (`now` = seconds since it); default: build time.
    pub fn origin(mut self, origin: Instant) -> Self {
        self.origin = Some(origin);
        self
    }

    /// A producer-only librdkafka property, applied after everything else (validated at
    /// build; the error names the pair).
    pub fn property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.push((key.into(), value.into()));
        self
    }

    /// Attempts to write one fence before the key's held records fail (≥ 1).
    pub fn fence_attempts(mut self, attempts: u32) -> Self {
        self.fence_attempts = attempts;
        self
    }

    /// Backoff after a failed fence, multiplied by the attempt number.
    pub fn fence_backoff(mut self, backoff: Duration) -> Self {
        self.fence_backoff = backoff;
        self
    }

    /// The tokio runtime for fence waiters and the backlog drainer (see the module docs).
    pub fn runtime(mut self, handle: Handle) -> Self {
        self.runtime = Some(handle);
        self
    }

    /// Validates everything and creates the producer. Blocks for one metadata request when
    /// no partition count was given.
    pub fn build(self) -> Result<KeyshiftProducer, ProducerBuildError> {
        if self.topic.is_empty() {
            return Err(ProducerBuildError::InvalidTopic(self.topic));
        }
        if self.fence_attempts == 0 {
            return Err(ParamError::new("fence-attempts", "must be at least 1").into());
        }
        let mut partitions = match self.partitions {
            Some(0) => return Err(ProducerBuildError::ZeroPartitions { topic: self.topic }),
            Some(n) => n,
            None => Admin::new(&self.settings)
                .and_then(|admin| admin.partitions(&self.topic))
                .map_err(|source| ProducerBuildError::Partitions {
                    topic: self.topic.clone(),
                    source,
                })?,
        };
        let mut strategy = build_with(&self.strategy, partitions, &self.strategy_config)?;
        let mut config = self.settings.producer_config();
        for (key, value) in self.properties {
            let property = Property::new(key, value)?;
            config.set(property.key(), property.value());
        }
        // `hash` never moves a key by itself (only `move_key` does, refused below when unsafe).
        let moves_keys = strategy.preserves_order() && strategy.name() != "hash";
        let unsafe_moves = unsafe_for_moves(&config);
        if let Some(u) = &unsafe_moves {
            if moves_keys {
                return Err(ProducerBuildError::UnsafeMoves {
                    strategy: strategy.name().to_owned(),
                    setting: u.setting,
                    found: u.found.clone(),
                    expected: u.expected,
                    why: u.why,
                });
            }
            tracing::warn!(
                topic = %self.topic,
                "{}={}: {}; keys cannot be moved with this producer",
                u.setting,
                u.found,
                u.why
            );
        }
        let mut control = None;
        if self.control_settings.is_some() && !matches!(self.routes, Routes::Coordinated(_)) {
            return Err(ParamError::new(
                "control_settings",
                "only applies to coordinated routes (Routes::Coordinated)",
            )
            .into());
        }
        let (migrator, routes) = match (strategy.preserves_order(), &self.routes) {
            (false, _) => (None, None),
            (true, Routes::Coordinated(name)) => {
                let name = name
                    .clone()
                    .unwrap_or_else(|| format!("{}{CONTROL_TOPIC_SUFFIX}", self.topic));
                for (what, d) in [
                    ("lease", self.coordination.lease),
                    ("member-timeout", self.coordination.member_timeout),
                    ("move-timeout", self.coordination.move_timeout),
                ] {
                    if d.is_zero() {
                        return Err(ParamError::new(what, "must be a positive duration").into());
                    }
                }
                cap_message_timeout(&mut config, self.coordination.max_message_timeout())?;
                // Routes a durable producer of this topic left (an upgrade to coordinated
                // routes): every member seeds its log with them, so moved keys keep their set.
                let (seed, seed_epoch) = RouteTopic::read_existing(
                    &self.settings,
                    format!("{}{ROUTE_TOPIC_SUFFIX}", self.topic),
                    self.routes_timeout,
                )?
                .unwrap_or_default();
                if !seed.is_empty() {
                    tracing::info!(
                        topic = %self.topic,
                        routed_keys = seed.len(),
                        "continuing the routes of durable producers from {}{ROUTE_TOPIC_SUFFIX}",
                        self.topic
                    );
                }
                let (topic, replayed) = ControlTopic::open_seeded(
                    self.control_settings.as_ref().unwrap_or(&self.settings),
                    &name,
                    self.routes_timeout,
                    ControlLog::with_routes(seed).with_epoch(seed_epoch),
                )
                .map_err(|e| ProducerBuildError::RouteState {
                    topic: name.clone(),
                    reason: e.to_string(),
                })?;
                // An epoch in the log decides the partitions keys are homed on, whatever this
                // producer was started with: every member homes keys on the same count.
                let epoch = replayed.log.epoch().cloned();
                if let Some(e) = &epoch {
                    strategy = home_on_epoch(
                        &self.topic,
                        &self.strategy,
                        &self.strategy_config,
                        e,
                        &mut partitions,
                        "the control log",
                    )?;
                }
                let mut migrator = Migrator::new(partitions, self.strategy_config.hasher)?;
                if let Some(e) = epoch {
                    migrator
                        .resume_epoch(e)
                        .map_err(|e| ProducerBuildError::RouteState {
                            topic: name.clone(),
                            reason: e.reason,
                        })?;
                }
                for (key, entry) in replayed.log.routes() {
                    migrator.install(key, Some(*entry)).map_err(|e| {
                        ProducerBuildError::RouteState {
                            topic: name.clone(),
                            reason: e.reason,
                        }
                    })?;
                }
                control = Some((topic, replayed));
                (Some(migrator), None)
            }
            (true, Routes::Ephemeral) => {
                tracing::warn!(
                    topic = %self.topic,
                    "routes are ephemeral: a restarted producer forgets moved keys and may \
                     break their order"
                );
                (
                    Some(Migrator::new(partitions, self.strategy_config.hasher)?),
                    None,
                )
            }
            (true, Routes::Durable(name)) => {
                let name = name
                    .clone()
                    .unwrap_or_else(|| format!("{}{ROUTE_TOPIC_SUFFIX}", self.topic));
                // Coordinated producers of this topic route keys through the control log, which
                // a durable producer does not read: sending their moved keys by its own routes
                // could put a key on two partitions at once.
                let control = format!("{}{CONTROL_TOPIC_SUFFIX}", self.topic);
                let coordinated =
                    ControlTopic::replay_existing(&self.settings, &control, self.routes_timeout)
                        .map_err(|e| ProducerBuildError::RouteState {
                            topic: control.clone(),
                            reason: e.to_string(),
                        })?;
                if let Some(log) = coordinated.filter(|log| {
                    log.routes().next().is_some() || log.epoch().is_some() || log.wanted() > 0
                }) {
                    return Err(ProducerBuildError::RouteState {
                        topic: control,
                        reason: format!(
                            "coordinated producers have moved {} key(s) of '{}' through it{}; \
                             use coordinated routes (`--routes coordinated`) for this topic",
                            log.routes().count(),
                            self.topic,
                            match log.epoch() {
                                Some(e) => format!(" and grew it to {} partitions", e.to),
                                None if log.wanted() > 0 => " and were asked to grow it".into(),
                                None => String::new(),
                            }
                        ),
                    });
                }
                let (routes, restored, epoch) =
                    RouteTopic::open(&self.settings, name, self.routes_timeout)?;
                // A recorded growth decides the partitions keys are homed on.
                if let Some(e) = &epoch {
                    strategy = home_on_epoch(
                        &self.topic,
                        &self.strategy,
                        &self.strategy_config,
                        e,
                        &mut partitions,
                        "the route topic",
                    )?;
                }
                let state_error = |e: keyshift_core::ParamError| ProducerBuildError::RouteState {
                    topic: routes.name.clone(),
                    reason: e.reason,
                };
                let mut migrator =
                    Migrator::restore(partitions, self.strategy_config.hasher, restored)
                        .map_err(state_error)?;
                if let Some(e) = epoch {
                    migrator.resume_epoch(e).map_err(state_error)?;
                }
                (Some(migrator), Some(routes))
            }
        };
        let producer: FutureProducer =
            config
                .create()
                .map_err(|source| ProducerBuildError::Client {
                    bootstrap: self.settings.bootstrap_servers().to_owned(),
                    source,
                })?;
        let runtime = RuntimeHandle::new(self.runtime).map_err(ProducerBuildError::Runtime)?;
        let strategy_name = strategy.name();
        let origin = self.origin.unwrap_or_else(Instant::now);
        let mut state = State::new(strategy, migrator, partitions);
        let (control, replayed) = match control {
            Some((topic, replayed)) => {
                state.coord = Some(Coordinator::from_log(
                    member::new_member_id(),
                    self.coordination,
                    self.strategy_config.hasher,
                    partitions,
                    &replayed.log,
                    &replayed.members,
                    origin.elapsed().as_secs_f64(),
                ));
                (Some(topic), Some(replayed))
            }
            None => (None, None),
        };
        tracing::info!(
            topic = %self.topic,
            partitions,
            strategy = strategy_name,
            "keyshift producer ready"
        );
        let producer = KeyshiftProducer {
            inner: Arc::new(Inner {
                producer,
                topic: self.topic,
                partitions: AtomicU32::new(partitions),
                strategy_config: self.strategy_config,
                origin,
                strategy_name,
                fence_attempts: self.fence_attempts,
                fence_backoff: self.fence_backoff,
                runtime,
                state: Mutex::new(state),
                delivery_errors: AtomicU64::new(0),
                tracing: self.tracing,
                events: self.events,
                client_id: self.settings.get_client_id().to_owned(),
                routes,
                control,
                tail: Mutex::new(None),
            }),
            unsafe_moves,
        };
        if let Some(replayed) = replayed {
            let inner = &producer.inner;
            inner.join_replayed_moves();
            inner
                .start_member(replayed, self.routes_timeout)
                .map_err(|reason| ProducerBuildError::RouteState {
                    topic: inner.control.as_ref().map_or("", |c| c.name()).to_owned(),
                    reason,
                })?;
        }
        Ok(producer)
    }
}

/// A producer setting that makes moving keys unsafe.
#[derive(Debug, Clone)]
struct UnsafeSetting {
    setting: &'static str,
    found: String,
    expected: &'static str,
    why: &'static str,
}

/// The first setting of `config` that can lose or reorder a fence, if any.
fn unsafe_for_moves(config: &rdkafka::ClientConfig) -> Option<UnsafeSetting> {
    let idempotence = config.get("enable.idempotence").unwrap_or("false");
    if !idempotence.eq_ignore_ascii_case("true") {
        return Some(UnsafeSetting {
            setting: "enable.idempotence",
            found: idempotence.to_owned(),
            expected: "true",
            why: "without idempotence a retried batch can land after a later one, so a \
                  partition's records (fences included) may be reordered or duplicated",
        });
    }
    let acks = config.get("acks").unwrap_or("all");
    if !matches!(acks, "all" | "-1") {
        return Some(UnsafeSetting {
            setting: "acks",
            found: acks.to_owned(),
            expected: "all",
            why: "a fence acknowledged by the leader alone can be lost in a leader change, \
                  and records waiting for it would be released out of order",
        });
    }
    None
}

/// The keyshift producer; see the [module docs](self). Cheap to clone (all clones share one
/// rdkafka producer and one routing state), `Send + Sync`.
#[derive(Clone)]
pub struct KeyshiftProducer {
    inner: Arc<Inner>,
    /// Why keys must not be moved with this producer's settings, if they must not.
    unsafe_moves: Option<UnsafeSetting>,
}

impl KeyshiftProducer {
    /// A [`ProducerBuilder`] for `topic` on the cluster of `settings`.
    pub fn builder(settings: ClientSettings, topic: impl Into<String>) -> ProducerBuilder {
        ProducerBuilder::new(settings, topic)
    }

    /// Routes and enqueues one record now and returns a future of its acknowledgement.
    ///
    /// The decision is made during this call, so records of one key keep the order of the
    /// calls. Fails at once with [`ProduceError::QueueFull`] (nothing decided; retry later)
    /// when librdkafka's queue is full and earlier records still wait for room, or with
    /// [`ProduceError::Enqueue`] when librdkafka refuses the record.
    pub fn try_send(
        &self,
        key: &[u8],
        value: &[u8],
        mut headers: Vec<(String, Vec<u8>)>,
    ) -> Result<PendingDelivery, ProduceError> {
        let trace = RecordTrace::start(&self.inner, key, &mut headers);
        match self.inner.submit(key, value, headers) {
            Ok(submitted) => {
                if let Some(trace) = &trace {
                    trace.accepted();
                }
                Ok(self.pending(submitted, trace))
            }
            Err((err, _)) => {
                if let Some(trace) = trace {
                    trace.failed(&err);
                }
                Err(err)
            }
        }
    }

    /// Sends one record and resolves on the broker's acknowledgement (or its error).
    ///
    /// Routing happens at the first poll. When librdkafka's queue is full it backs off and
    /// retries, outside the routing lock, until the record is accepted.
    pub async fn send(
        &self,
        key: &[u8],
        value: &[u8],
        mut headers: Vec<(String, Vec<u8>)>,
    ) -> Result<Delivery, ProduceError> {
        let mut trace = RecordTrace::start(&self.inner, key, &mut headers);
        loop {
            match self.inner.submit(key, value, headers) {
                Ok(submitted) => {
                    if let Some(trace) = &trace {
                        trace.accepted();
                    }
                    return self.pending(submitted, trace).await;
                }
                Err((err, back)) if err.is_retryable() => {
                    headers = back;
                    self.backoff().await;
                }
                Err((err, _)) => {
                    if let Some(trace) = trace.take() {
                        trace.failed(&err);
                    }
                    return Err(err);
                }
            }
        }
    }

    async fn backoff(&self) {
        if Handle::try_current().is_ok() {
            tokio::time::sleep(QUEUE_FULL_BACKOFF).await;
        } else {
            // Not on a tokio runtime: let the producer's runtime keep the time.
            let _ = self
                .inner
                .runtime
                .handle
                .spawn(tokio::time::sleep(QUEUE_FULL_BACKOFF))
                .await;
        }
    }

    fn pending(&self, submitted: Submitted, trace: Option<Box<RecordTrace>>) -> PendingDelivery {
        let state = match submitted {
            Submitted::Sent { future, partition } => Pending::Sent(Enqueued {
                future,
                partition,
                fenced_wait: None,
            }),
            Submitted::Waiting(rx) => Pending::Waiting(rx),
        };
        PendingDelivery {
            inner: Arc::clone(&self.inner),
            state,
            trace,
        }
    }

    /// Forces `key` onto `partition` (see "Forced moves" in the module docs). The move, with
    /// its fence, happens on the key's next record. Coordinated producers: only the decider
    /// moves keys (its pin becomes a proposal at the key's next record it sends); a follower
    /// answers [`ProduceError::NotDecider`].
    pub fn move_key(&self, key: &[u8], partition: u32) -> Result<(), ProduceError> {
        if let Some(u) = &self.unsafe_moves {
            return Err(ProduceError::UnsafeMove {
                topic: self.inner.topic.clone(),
                key: String::from_utf8_lossy(key).into_owned(),
                setting: u.setting,
                found: u.found.clone(),
            });
        }
        let partitions = self.inner.partitions.load(Ordering::Relaxed);
        if partition >= partitions {
            return Err(ProduceError::InvalidPartition {
                topic: self.inner.topic.clone(),
                partition,
                partitions,
            });
        }
        let mut st = self.inner.lock();
        if let Some(c) = st.coord.as_ref().filter(|c| !c.is_decider()) {
            return Err(ProduceError::NotDecider {
                topic: self.inner.topic.clone(),
                key: String::from_utf8_lossy(key).into_owned(),
                decider: c.decider,
            });
        }
        st.pins.insert(key.into(), partition);
        Ok(())
    }

    /// Hands a key pinned by [`KeyshiftProducer::move_key`] back to the strategy; returns
    /// whether it was pinned.
    pub fn unpin_key(&self, key: &[u8]) -> bool {
        self.inner.lock().pins.remove(key).is_some()
    }

    /// Feeds measured per-partition consumer state to the strategy (used by `keyshift` with
    /// feedback on; ignored by the others).
    pub fn observe(&self, feedback: &[PartitionFeedback]) {
        let mut st = self.inner.lock();
        let now = self.inner.origin.elapsed().as_secs_f64();
        st.strategy.observe(feedback, now);
    }

    /// The partition the key's records go to now (its current message set), as the migrator
    /// sees it; for unordered strategies, the key's hash partition.
    pub fn current_partition(&self, key: &[u8]) -> u32 {
        let st = self.inner.lock();
        match &st.migrator {
            Some(m) => m.current(key),
            None => self
                .inner
                .hasher()
                .partition(key, self.inner.partitions.load(Ordering::Relaxed)),
        }
    }

    /// A snapshot of the counters; see [`ProducerStats`].
    pub fn stats(&self) -> ProducerStats {
        let in_flight = self.inner.producer.in_flight_count().max(0) as usize;
        let st = self.inner.lock();
        ProducerStats {
            strategy: self.inner.strategy_name,
            records: st.counters.records,
            bytes: st.counters.bytes,
            per_partition: st.counters.per_partition.clone(),
            moves: st.counters.moves,
            pinned_keys: st.pins.len(),
            fences: st.counters.fences,
            migrations: match &st.coord {
                Some(c) => c.counters.committed,
                None => st.migrator.as_ref().map_or(0, Migrator::migrations),
            },
            fence_failures: st.counters.fence_failures,
            fence_rtt: st.fence_rtt.clone(),
            delivery_errors: self.inner.delivery_errors.load(Ordering::Relaxed),
            held_records: st.counters.held_now,
            held_keys: st.held_keys(),
            held_total: st.counters.held_total,
            routed_keys: st.migrator.as_ref().map_or(0, Migrator::len),
            durable_routes: self.inner.routes.is_some(),
            route_writes: st.counters.route_writes,
            route_write_failures: st.counters.route_write_failures,
            backlog: st.backlog_len(),
            in_flight,
            homed_partitions: self.inner.partitions.load(Ordering::Relaxed),
            epoch: st
                .migrator
                .as_ref()
                .and_then(Migrator::epoch)
                .map_or(0, |e| e.number),
            growth_running: st.growth.is_some(),
            coordination: st.coord.as_ref().map(|c| {
                let now = self.inner.origin.elapsed().as_secs_f64();
                CoordinationStats {
                    member: c.me,
                    decider: c.is_decider(),
                    term: c.term,
                    live_members: c.membership.live(now).len(),
                    unaccounted_members: c.membership.unaccounted(now).len(),
                    proposed: c.counters.proposed,
                    committed: c.counters.committed,
                    aborted: c.counters.aborted,
                    claims: c.counters.claims,
                    control_write_failures: c.counters.control_write_failures,
                    pending_moves: c.pending.len(),
                    hold_time: c.hold_time.clone(),
                    wanted_partitions: c.wanted,
                    growths: c.counters.growths,
                    growths_aborted: c.counters.growths_aborted,
                }
            }),
        }
    }

    /// Waits until every record sent so far — including records held behind fences and
    /// backlogged ones — is acknowledged or failed, or `timeout` passes.
    pub async fn flush(&self, timeout: Duration) -> Result<(), ProduceError> {
        let inner = Arc::clone(&self.inner);
        let deadline = Instant::now() + timeout;
        // librdkafka's flush blocks, so it runs on a blocking thread of the producer's runtime.
        let waited = self.inner.runtime.handle.spawn_blocking(move || loop {
            let (held, backlog) = {
                let st = inner.lock();
                (st.counters.held_now, st.backlog_len())
            };
            let in_flight = inner.producer.in_flight_count().max(0) as usize;
            if held == 0 && backlog == 0 && in_flight == 0 {
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(ProduceError::FlushTimeout {
                    topic: inner.topic.clone(),
                    timeout,
                    held,
                    queued: backlog + in_flight,
                });
            }
            // Short slices so records released by fences meanwhile are waited for too.
            let slice = (deadline - now).min(Duration::from_millis(20));
            let _ = inner.producer.flush(slice);
        });
        waited.await.unwrap_or_else(|_| {
            Err(ProduceError::Closed {
                topic: self.inner.topic.clone(),
            })
        })
    }

    /// Flushes like [`KeyshiftProducer::flush`], then, for a coordinated producer, leaves the
    /// producer group: it writes a leave record to the control log, so the others stop waiting
    /// for it at once instead of pausing moves until it is forgotten (ten member timeouts; see
    /// `docs/routing.md`). Records sent after `close` fail with [`ProduceError::Closed`]. When
    /// the flush fails, nothing is written: the others then treat this producer as silent,
    /// which is safe whatever happens to the records it still holds.
    pub async fn close(&self, timeout: Duration) -> Result<(), ProduceError> {
        let deadline = Instant::now() + timeout;
        // Stop taking records first, so the flush below covers every record this member sends.
        let me = self.inner.lock().coord.as_mut().map(|coord| {
            coord.leaving = true;
            coord.me
        });
        let Some(me) = me else {
            return self.flush(timeout).await;
        };
        self.flush(timeout).await?;
        let control = self.inner.control.as_ref().expect("coordinated");
        let leave = Control::Leave { member: me };
        let left = tokio::time::timeout(
            deadline.saturating_duration_since(Instant::now()),
            control.write(&leave),
        )
        .await;
        match left {
            Ok(Ok(_)) => {
                tracing::info!(topic = %self.inner.topic, member = me, "left the producer group")
            }
            Ok(Err(e)) => tracing::warn!(
                topic = %self.inner.topic,
                error = %e,
                "could not write the leave record; the others pause moves until they forget this producer"
            ),
            Err(_) => tracing::warn!(
                topic = %self.inner.topic,
                "the leave record was not acknowledged in time; the others pause moves until they forget this producer"
            ),
        }
        Ok(())
    }

    /// The topic records go to.
    pub fn topic(&self) -> &str {
        &self.inner.topic
    }

    /// The topic's partition count the strategy routes over.
    pub fn partitions(&self) -> u32 {
        self.inner.partitions.load(Ordering::Relaxed)
    }

    /// Homes keys on `to` partitions from now on, keeping per-key order: one epoch fence per
    /// partition in use, and the records of keys whose home changes carry the barrier of their
    /// old home (`keyshift_core::protocol::epoch`). The topic must already have `to`
    /// partitions (CreatePartitions, or a topic created larger than the count in use). Only
    /// the keys whose home changes and that have no route of their own wait, until every
    /// fence is acknowledged (and, with durable routes, the epoch recorded). Refused while
    /// another growth of this producer runs ([`ProduceError::Growth`]).
    ///
    /// Coordinated producers grow together: this writes a want to the control log and
    /// resolves once the log commits an epoch of at least `to` partitions, which every member
    /// applies (each writes its own epoch fences; the report's held counts and fences are this
    /// member's, its barriers the epoch's). A growth called off because a member is silent is
    /// retried by the decider, so this may wait until that member is heard again or forgotten:
    /// bound it with a timeout; the want stays in the log and the growth still happens.
    pub async fn grow(&self, to: u32) -> Result<GrowthReport, ProduceError> {
        self.check_topic_has(to).await?;
        let rx = self.inner.start_growth(to, true)?;
        rx.await.unwrap_or_else(|_| {
            Err(ProduceError::Closed {
                topic: self.inner.topic.clone(),
            })
        })
    }

    /// Refuses a growth beyond the partitions the topic has (records would fail), reading
    /// fresh metadata, which also tells librdkafka about partitions added since it looked.
    async fn check_topic_has(&self, to: u32) -> Result<(), ProduceError> {
        let producer = self.inner.producer.clone();
        let topic = self.inner.topic.clone();
        let count = tokio::task::spawn_blocking(move || {
            let metadata = producer
                .client()
                .fetch_metadata(Some(&topic), Duration::from_secs(10))
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(
                metadata
                    .topics()
                    .iter()
                    .find(|t| t.name() == topic)
                    .map_or(0, |t| t.partitions().len()),
            )
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r);
        let refuse = |reason: String| ProduceError::Growth {
            topic: self.inner.topic.clone(),
            reason,
        };
        match count {
            Err(e) => Err(refuse(format!(
                "cannot read the topic's partition count: {e}"
            ))),
            Ok(n) if (n as u64) < u64::from(to) => Err(refuse(format!(
                "the topic has {n} partitions, fewer than {to}: add partitions first \
                 (`keyshift expand` does, where the broker supports CreatePartitions)"
            ))),
            Ok(_) => Ok(()),
        }
    }

    /// Homes keys on `to` partitions at once with no fence, as a plain Kafka producer does
    /// when partitions are added: a key whose home changes may have its new records processed
    /// before its older ones. For comparisons (`keyshift experiment`'s `hash` baseline).
    pub fn grow_unfenced(&self, to: u32) -> Result<GrowthReport, ProduceError> {
        let mut rx = self.inner.start_growth(to, false)?;
        rx.try_recv().unwrap_or_else(|_| {
            Err(ProduceError::Closed {
                topic: self.inner.topic.clone(),
            })
        })
    }

    /// The strategy's name.
    pub fn strategy(&self) -> &'static str {
        self.inner.strategy_name
    }

    /// Whether the strategy keeps per-key order (moves are fenced).
    pub fn preserves_order(&self) -> bool {
        self.inner.lock().migrator.is_some()
    }

    /// Whether records get OTLP spans and trace headers ([`ProducerBuilder::tracing`]).
    pub fn is_traced(&self) -> bool {
        self.inner.tracing.is_some()
    }

    /// The underlying rdkafka producer (e.g. for librdkafka statistics or metadata).
    pub fn rdkafka(&self) -> &FutureProducer {
        &self.inner.producer
    }
}

/// Caps librdkafka's delivery timeout of a coordinated producer at `max` (sets it when the
/// user did not; refuses a larger value): the zombie argument of
/// `keyshift_core::protocol::coordinator` needs every record a silent member held to land or
/// fail before the decider forgets it. librdkafka checks a record's timeout before it puts the
/// record into a produce request, and times out a request by its first record's remaining time.
fn cap_message_timeout(
    config: &mut rdkafka::ClientConfig,
    max: Duration,
) -> Result<(), ProducerBuildError> {
    let max_ms = max.as_millis() as u64;
    for setting in ["message.timeout.ms", "delivery.timeout.ms"] {
        let Some(found) = config.get(setting) else {
            continue;
        };
        let found_ms: u64 = found.trim().parse().map_err(|_| {
            ParamError::new(setting, format!("expected milliseconds, got '{found}'"))
        })?;
        // 0 is librdkafka's "no timeout": the longest of all.
        if found_ms == 0 || found_ms > max_ms {
            return Err(ProducerBuildError::MessageTimeout {
                setting,
                found_ms,
                max_ms,
            });
        }
        return Ok(());
    }
    config.set("message.timeout.ms", max_ms.to_string());
    Ok(())
}

impl std::fmt::Debug for KeyshiftProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyshiftProducer")
            .field("topic", &self.inner.topic)
            .field("partitions", &self.partitions())
            .field("strategy", &self.inner.strategy_name)
            .finish_non_exhaustive()
    }
}

/// The acknowledgement of one record sent with [`KeyshiftProducer::try_send`]; resolves to
/// [`Delivery`] or the record's error. Dropping it does not cancel the record.
#[must_use = "a PendingDelivery resolves to the record's delivery or its error"]
pub struct PendingDelivery {
    inner: Arc<Inner>,
    state: Pending,
    /// The record's span and correlation id, when tracing is on.
    trace: Option<Box<RecordTrace>>,
}

enum Pending {
    /// Handed to librdkafka: waiting for the delivery report.
    Sent(Enqueued),
    /// Held behind a fence or backlogged: waiting to be handed to librdkafka.
    Waiting(oneshot::Receiver<Result<Enqueued, ProduceError>>),
    /// Resolved already.
    Done,
}

impl PendingDelivery {
    fn closed(&self) -> ProduceError {
        ProduceError::Closed {
            topic: self.inner.topic.clone(),
        }
    }
}

impl Future for PendingDelivery {
    type Output = Result<Delivery, ProduceError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let outcome = std::task::ready!(self.poll_delivery(cx));
        if let Some(trace) = self.trace.take() {
            match &outcome {
                Ok(delivery) => trace.acked(delivery),
                Err(err) => trace.failed(err),
            }
        }
        Poll::Ready(outcome)
    }
}

impl PendingDelivery {
    fn poll_delivery(&mut self, cx: &mut Context<'_>) -> Poll<Result<Delivery, ProduceError>> {
        loop {
            match &mut self.state {
                Pending::Sent(enqueued) => {
                    let report = match Pin::new(&mut enqueued.future).poll(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(report) => report,
                    };
                    let (partition, fenced_wait) = (enqueued.partition, enqueued.fenced_wait);
                    self.state = Pending::Done;
                    let outcome = match report {
                        Ok(Ok(delivery)) => Ok(Delivery {
                            partition: delivery.partition as u32,
                            offset: delivery.offset,
                            fenced_wait,
                        }),
                        Ok(Err((source, _))) => {
                            self.inner.count_error();
                            Err(ProduceError::Delivery {
                                topic: self.inner.topic.clone(),
                                partition,
                                source: Box::new(source),
                            })
                        }
                        Err(_canceled) => {
                            self.inner.count_error();
                            Err(self.closed())
                        }
                    };
                    return Poll::Ready(outcome);
                }
                Pending::Waiting(rx) => match Pin::new(rx).poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(Ok(enqueued))) => self.state = Pending::Sent(enqueued),
                    Poll::Ready(Ok(Err(err))) => {
                        // Counted where it was raised.
                        self.state = Pending::Done;
                        return Poll::Ready(Err(err));
                    }
                    Poll::Ready(Err(_)) => {
                        self.state = Pending::Done;
                        self.inner.count_error();
                        return Poll::Ready(Err(self.closed()));
                    }
                },
                Pending::Done => panic!("PendingDelivery polled after it resolved"),
            }
        }
    }
}

/// Homes keys on the count of `epoch`, recorded in `source`, whatever the producer of `topic`
/// was started with: returns `strategy` built for it.
fn home_on_epoch(
    topic: &str,
    strategy: &str,
    config: &StrategyConfig,
    epoch: &Epoch,
    partitions: &mut u32,
    source: &str,
) -> Result<Box<dyn Strategy>, ProducerBuildError> {
    if epoch.to != *partitions {
        tracing::info!(
            topic,
            epoch = epoch.number,
            partitions = epoch.to,
            asked = *partitions,
            "{source} records a growth: keys are homed on its count"
        );
    }
    *partitions = epoch.to;
    Ok(build_with(strategy, epoch.to, config)?)
}
