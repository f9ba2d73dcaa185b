//! The trace aggregator: joins SEND, ACK, CONSUME and COMMIT events into enriched records.
//!
//! This is kafka-tracing-aggregator's Kafka Streams topology as a pure state machine (no I/O,
//! no clock: time is the events' own `date`). `keyshift trace aggregate` feeds it records
//! read from `_tracing` (and, optionally, the correlation-id headers of the data topics) and
//! writes what it returns to `_aggregatedTrace`.
//!
//! The joins, as in the seed:
//! - a SEND (keyed by correlation id) is *located* — given its topic/partition/offset — by
//!   any event that carries both the correlation id and a position: a data record's
//!   `correlationId` header ([`Aggregator::locate`]), a CONSUME, or an ACK written by
//!   keyshift's producer (which adds the correlation id the Java interceptor leaves out).
//!   A located SEND is emitted once.
//! - ACK ⋈ SEND on topic/partition/offset: `durationMs` = send → ack, correlation id copied.
//! - CONSUME ⋈ SEND on topic/partition/offset: `durationMs` = send → consume.
//! - COMMIT ⋈ CONSUME on group/topic/partition/offset: `durationMs` = consume → commit,
//!   correlation id copied; a COMMIT with no such CONSUME is passed on as it is (a repeated
//!   commit, offset −1, a seek), as the seed's `AckMerger` does.
//!
//! Every input event yields at most one output, tagged with the input's [`Position`]: that
//! is what lets the CLI commit only what it has emitted and suppress duplicates on replay.
//!
//! Over-consumption: a CONSUME of an offset its group has consumed before (`duplicate`) or
//! had committed past before the CONSUME's date (`afterCommit`) is marked in the output's
//! `overConsumption` field and counted in [`AggregatorStats::over_consumed`]. Judging by the
//! events' dates, not by arrival order, keeps the verdict the same however the `_tracing`
//! partitions interleave (and so on a replay).
//!
//! Memory is bounded by time: unmatched events are held at most `unmatched_ttl`, located
//! SENDs, consumed offsets and committed offsets at most `retention` (the seed's one-day
//! consume window), measured against the newest event date seen (the watermark). Unmatched
//! events that expire are counted per kind in [`AggregatorStats::dropped`].

use std::collections::{BTreeMap, HashMap};

use crate::events::{EventKind, TraceEvent, TraceKey, TraceValue};

/// Where an input record was read from: a `_tracing` partition or a data-topic partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Position {
    /// Topic of the input record.
    pub topic: String,
    /// Partition of the input record.
    pub partition: i32,
    /// Offset of the input record.
    pub offset: i64,
}

impl Position {
    /// A position.
    pub fn new(topic: impl Into<String>, partition: i32, offset: i64) -> Self {
        Position {
            topic: topic.into(),
            partition,
            offset,
        }
    }
}

/// An enriched event ready for `_aggregatedTrace`, and the input event it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// Position of the input event this output enriches.
    pub source: Position,
    /// The enriched event, keyed `{topic,partition,offset}`.
    pub event: TraceEvent,
}

/// Aggregator settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AggregatorConfig {
    /// How long an event waiting for its partner is kept (nanoseconds of event time).
    pub unmatched_ttl_nanos: i64,
    /// How long located SENDs, consumed offsets and committed offsets are kept for later
    /// joins and over-consumption checks (nanoseconds of event time).
    pub retention_nanos: i64,
}

impl Default for AggregatorConfig {
    /// The seed's join windows: five minutes to pair events, one day for late consumers.
    fn default() -> Self {
        AggregatorConfig {
            unmatched_ttl_nanos: 5 * 60 * 1_000_000_000,
            retention_nanos: 24 * 3600 * 1_000_000_000,
        }
    }
}

/// Invalid [`AggregatorConfig`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A window is zero or negative.
    #[error("{name} must be positive (got {nanos} ns)")]
    NotPositive {
        /// Which setting.
        name: &'static str,
        /// Its value.
        nanos: i64,
    },
}

/// An input event the aggregator cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RejectReason {
    /// The `date` field does not parse.
    #[error("unparseable date '{0}'")]
    Date(String),
    /// A field the event kind needs is absent.
    #[error("{kind} event without {field}")]
    Missing {
        /// The event kind.
        kind: EventKind,
        /// The missing field.
        field: &'static str,
    },
}

/// Counters of what the aggregator has seen and done since it started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AggregatorStats {
    /// Input events accepted, per kind.
    pub received: BTreeMap<EventKind, u64>,
    /// Input events rejected (bad date, missing field).
    pub rejected: u64,
    /// Outputs produced, per kind.
    pub emitted: BTreeMap<EventKind, u64>,
    /// Unmatched events dropped when their TTL expired, per kind.
    pub dropped: BTreeMap<EventKind, u64>,
    /// Over-consuming CONSUMEs, per (topic, group).
    pub over_consumed: BTreeMap<(String, String), u64>,
}

type Tpo = (String, i32, i64);

/// An input event held in state.
#[derive(Debug, Clone)]
struct Held {
    value: TraceValue,
    nanos: i64,
    source: Position,
}

/// A located SEND kept for ACK and CONSUME joins (already emitted).
#[derive(Debug, Clone)]
struct Sent {
    correlation_id: Option<String>,
    nanos: i64,
    source: Position,
}

/// A correlation id's position learnt before its SEND arrived.
#[derive(Debug, Clone)]
struct Location {
    tpo: Tpo,
    nanos: i64,
    source: Position,
}

/// A consumed offset, kept for the COMMIT join and over-consumption checks.
#[derive(Debug, Clone)]
struct Consumed {
    correlation_id: Option<String>,
    nanos: i64,
    source: Position,
    commit_joined: bool,
}

/// One COMMIT of a group on a partition.
#[derive(Debug, Clone)]
struct CommitStep {
    offset: i64,
    nanos: i64,
    source: Position,
}

/// The commits of a group on a partition: recent ones as they came, older ones folded into
/// one step (highest offset, newest date, earliest source) so memory stays bounded.
#[derive(Debug, Clone, Default)]
struct Committed {
    folded: Option<CommitStep>,
    recent: Vec<CommitStep>,
}

impl Committed {
    /// Whether an offset ≥ `offset` was committed before `nanos`.
    fn covers(&self, offset: i64, nanos: i64) -> bool {
        self.folded
            .iter()
            .chain(&self.recent)
            .any(|c| c.nanos < nanos && c.offset >= offset)
    }

    fn steps(&self) -> impl Iterator<Item = &CommitStep> {
        self.folded.iter().chain(&self.recent)
    }

    fn len(&self) -> usize {
        self.recent.len() + usize::from(self.folded.is_some())
    }

    /// Folds commits older than `fold_before` and forgets them after `forget_before`.
    fn age(&mut self, fold_before: i64, forget_before: i64) {
        let (old, recent): (Vec<_>, Vec<_>) = std::mem::take(&mut self.recent)
            .into_iter()
            .partition(|c| c.nanos < fold_before);
        self.recent = recent;
        for c in old {
            self.folded = Some(match self.folded.take() {
                None => c,
                Some(f) => CommitStep {
                    offset: f.offset.max(c.offset),
                    nanos: f.nanos.max(c.nanos),
                    source: f.source.min(c.source),
                },
            });
        }
        if self
            .folded
            .as_ref()
            .is_some_and(|f| f.nanos < forget_before)
        {
            self.folded = None;
        }
    }
}

/// The join state machine; see the [module docs](self).
#[derive(Debug)]
pub struct Aggregator {
    config: AggregatorConfig,
    unlocated_sends: HashMap<String, Held>,
    locations: HashMap<String, Location>,
    sends: HashMap<Tpo, Sent>,
    pending_acks: HashMap<Tpo, Held>,
    pending_consumes: HashMap<Tpo, Vec<Held>>,
    consumed: HashMap<(String, Tpo), Consumed>,
    committed: HashMap<(String, String, i32), Committed>,
    watermark: Option<i64>,
    last_sweep: i64,
    stats: AggregatorStats,
}

impl Aggregator {
    /// An empty aggregator.
    pub fn new(config: AggregatorConfig) -> Result<Self, ConfigError> {
        for (name, nanos) in [
            ("unmatched TTL", config.unmatched_ttl_nanos),
            ("retention", config.retention_nanos),
        ] {
            if nanos <= 0 {
                return Err(ConfigError::NotPositive { name, nanos });
            }
        }
        Ok(Aggregator {
            config,
            unlocated_sends: HashMap::new(),
            locations: HashMap::new(),
            sends: HashMap::new(),
            pending_acks: HashMap::new(),
            pending_consumes: HashMap::new(),
            consumed: HashMap::new(),
            committed: HashMap::new(),
            watermark: None,
            last_sweep: i64::MIN,
            stats: AggregatorStats::default(),
        })
    }

    /// Counters since creation.
    pub fn stats(&self) -> &AggregatorStats {
        &self.stats
    }

    /// The newest event date seen (nanoseconds since the Unix epoch), which drives expiry.
    pub fn watermark(&self) -> Option<i64> {
        self.watermark
    }

    /// Number of entries held (events awaiting partners plus join context).
    pub fn held(&self) -> usize {
        self.unlocated_sends.len()
            + self.locations.len()
            + self.sends.len()
            + self.pending_acks.len()
            + self.pending_consumes.values().map(Vec::len).sum::<usize>()
            + self.consumed.len()
            + self.committed.values().map(Committed::len).sum::<usize>()
    }

    /// The lowest input offset on `topic/partition` that the state still depends on: the
    /// offset from which a replay rebuilds everything held. `None` when nothing from that
    /// input partition is held.
    pub fn low_water(&self, topic: &str, partition: i32) -> Option<i64> {
        let mut sources: Vec<&Position> = Vec::new();
        sources.extend(self.unlocated_sends.values().map(|h| &h.source));
        sources.extend(self.locations.values().map(|l| &l.source));
        sources.extend(self.sends.values().map(|s| &s.source));
        sources.extend(self.pending_acks.values().map(|h| &h.source));
        sources.extend(self.pending_consumes.values().flatten().map(|h| &h.source));
        sources.extend(self.consumed.values().map(|c| &c.source));
        sources.extend(
            self.committed
                .values()
                .flat_map(|c| c.steps().map(|s| &s.source)),
        );
        sources
            .into_iter()
            .filter(|p| p.partition == partition && p.topic == topic)
            .map(|p| p.offset)
            .min()
    }

    /// Learns from a data record's `correlationId` header where the record was stored (the
    /// seed's `CorrelationIdExtractor`). Emits the SEND if it was waiting for this.
    pub fn locate(
        &mut self,
        source: Position,
        correlation_id: &str,
        tpo: (&str, i32, i64),
        nanos: i64,
        out: &mut Vec<Output>,
    ) {
        let tpo = (tpo.0.to_owned(), tpo.1, tpo.2);
        self.learn_location(correlation_id, tpo, nanos, source, out);
        self.sweep();
    }

    /// Processes one input event; any outputs it completes are appended to `out`.
    pub fn process(
        &mut self,
        source: Position,
        event: TraceEvent,
        out: &mut Vec<Output>,
    ) -> Result<(), RejectReason> {
        let result = self.process_inner(source, event, out);
        if result.is_err() {
            self.stats.rejected += 1;
        }
        self.sweep();
        result
    }

    fn process_inner(
        &mut self,
        source: Position,
        event: TraceEvent,
        out: &mut Vec<Output>,
    ) -> Result<(), RejectReason> {
        let TraceEvent { key, mut value } = event;
        let kind = value.kind;
        let nanos = value
            .unix_nanos()
            .map_err(|_| RejectReason::Date(value.date.clone()))?;
        // The key is a fallback for fields the value leaves out.
        merge_key(&mut value, &key);
        // Recomputed here; an input that already carries one (an aggregated record fed
        // back) must not keep a stale value.
        value.duration_ms = None;
        value.over_consumption = None;
        let missing = |field| RejectReason::Missing { kind, field };
        let topic = value.topic.clone().ok_or_else(|| missing("topic"))?;
        let position = match (value.partition, value.offset) {
            (Some(p), Some(o)) => Some((topic.clone(), p, o)),
            _ => None,
        };
        *self.stats.received.entry(kind).or_default() += 1;
        self.advance(nanos);
        let held = |value: TraceValue| Held {
            value,
            nanos,
            source: source.clone(),
        };
        match kind {
            EventKind::Send => {
                let corr = value.correlation_id.clone();
                match position {
                    // Already located (our own aggregated output, or a producer that knows).
                    Some(tpo) => self.emit_send(held(value), tpo, out),
                    None => {
                        let corr = corr.ok_or_else(|| missing("correlationId or offset"))?;
                        if let Some(loc) = self.locations.remove(&corr) {
                            self.emit_send(held(value), loc.tpo, out);
                        } else {
                            self.unlocated_sends.insert(corr, held(value));
                        }
                    }
                }
            }
            EventKind::Ack => {
                let tpo = position.ok_or_else(|| missing("partition/offset"))?;
                let corr = value.correlation_id.clone();
                match self.sends.get(&tpo) {
                    Some(sent) => {
                        let sent = sent.clone();
                        self.emit_joined(held(value), &tpo, &sent, out);
                    }
                    None => {
                        self.pending_acks.insert(tpo.clone(), held(value));
                    }
                }
                if let Some(corr) = corr {
                    self.learn_location(&corr, tpo, nanos, source.clone(), out);
                }
            }
            EventKind::Consume => {
                let tpo = position.ok_or_else(|| missing("partition/offset"))?;
                let group = value.group_id.clone().ok_or_else(|| missing("groupId"))?;
                value.over_consumption = self.check_over_consumption(&group, &tpo, nanos);
                if value.over_consumption.is_some() {
                    *self
                        .stats
                        .over_consumed
                        .entry((tpo.0.clone(), group.clone()))
                        .or_default() += 1;
                }
                let corr = value.correlation_id.clone();
                self.consumed.insert(
                    (group, tpo.clone()),
                    Consumed {
                        correlation_id: corr.clone(),
                        nanos,
                        source: source.clone(),
                        commit_joined: false,
                    },
                );
                match self.sends.get(&tpo) {
                    Some(sent) => {
                        let sent = sent.clone();
                        self.emit_joined(held(value), &tpo, &sent, out);
                    }
                    None => self
                        .pending_consumes
                        .entry(tpo.clone())
                        .or_default()
                        .push(held(value)),
                }
                if let Some(corr) = corr {
                    self.learn_location(&corr, tpo, nanos, source.clone(), out);
                }
            }
            EventKind::Commit => {
                let tpo = position.ok_or_else(|| missing("partition/offset"))?;
                let group = value.group_id.clone().ok_or_else(|| missing("groupId"))?;
                self.committed
                    .entry((group.clone(), tpo.0.clone(), tpo.1))
                    .or_default()
                    .recent
                    .push(CommitStep {
                        offset: tpo.2,
                        nanos,
                        source: source.clone(),
                    });
                if let Some(consumed) = self.consumed.get_mut(&(group, tpo.clone())) {
                    if !consumed.commit_joined {
                        consumed.commit_joined = true;
                        value.correlation_id = consumed.correlation_id.clone();
                        value.duration_ms = Some(duration_ms(consumed.nanos, nanos));
                    }
                }
                self.emit(source, tpo, value, out);
            }
        }
        Ok(())
    }

    fn check_over_consumption(&self, group: &str, tpo: &Tpo, nanos: i64) -> Option<String> {
        let committed = self
            .committed
            .get(&(group.to_owned(), tpo.0.clone(), tpo.1))
            .is_some_and(|c| c.covers(tpo.2, nanos));
        if committed {
            return Some("afterCommit".to_owned());
        }
        self.consumed
            .contains_key(&(group.to_owned(), tpo.clone()))
            .then(|| "duplicate".to_owned())
    }

    fn learn_location(
        &mut self,
        corr: &str,
        tpo: Tpo,
        nanos: i64,
        source: Position,
        out: &mut Vec<Output>,
    ) {
        if let Some(send) = self.unlocated_sends.remove(corr) {
            self.emit_send(send, tpo, out);
        } else if !self.sends.contains_key(&tpo) {
            self.locations
                .entry(corr.to_owned())
                .or_insert(Location { tpo, nanos, source });
        }
    }

    /// Emits a located SEND, then every ACK and CONSUME that was waiting for it.
    fn emit_send(&mut self, send: Held, tpo: Tpo, out: &mut Vec<Output>) {
        let sent = Sent {
            correlation_id: send.value.correlation_id.clone(),
            nanos: send.nanos,
            source: send.source.clone(),
        };
        self.emit(send.source, tpo.clone(), send.value, out);
        if let Some(ack) = self.pending_acks.remove(&tpo) {
            self.emit_joined(ack, &tpo, &sent, out);
        }
        for consume in self.pending_consumes.remove(&tpo).unwrap_or_default() {
            self.emit_joined(consume, &tpo, &sent, out);
        }
        self.sends.insert(tpo, sent);
    }

    /// Emits an ACK or CONSUME joined with its SEND.
    fn emit_joined(&mut self, held: Held, tpo: &Tpo, sent: &Sent, out: &mut Vec<Output>) {
        let mut value = held.value;
        if value.correlation_id.is_none() {
            value.correlation_id = sent.correlation_id.clone();
        }
        value.duration_ms = Some(duration_ms(sent.nanos, held.nanos));
        self.emit(held.source, tpo.clone(), value, out);
    }

    fn emit(&mut self, source: Position, tpo: Tpo, mut value: TraceValue, out: &mut Vec<Output>) {
        let (topic, partition, offset) = tpo;
        value.topic = Some(topic.clone());
        value.partition = Some(partition);
        value.offset = Some(offset);
        *self.stats.emitted.entry(value.kind).or_default() += 1;
        out.push(Output {
            source,
            event: TraceEvent {
                key: TraceKey::at(&topic, partition, offset),
                value,
            },
        });
    }

    fn advance(&mut self, nanos: i64) {
        if self.watermark.is_none_or(|w| nanos > w) {
            self.watermark = Some(nanos);
        }
    }

    /// Expires state older than its window. Runs at most every quarter TTL of event time,
    /// so its cost is amortized over the events in between.
    fn sweep(&mut self) {
        let Some(now) = self.watermark else { return };
        let step = (self.config.unmatched_ttl_nanos / 4).max(1);
        if now.saturating_sub(self.last_sweep) < step {
            return;
        }
        self.last_sweep = now;
        let unmatched = now.saturating_sub(self.config.unmatched_ttl_nanos);
        let retained = now.saturating_sub(self.config.retention_nanos);
        let dropped = &mut self.stats.dropped;
        let mut drop_held = |held: &Held| {
            let keep = held.nanos >= unmatched;
            if !keep {
                *dropped.entry(held.value.kind).or_default() += 1;
            }
            keep
        };
        self.unlocated_sends.retain(|_, h| drop_held(h));
        self.pending_acks.retain(|_, h| drop_held(h));
        self.pending_consumes.retain(|_, list| {
            list.retain(&mut drop_held);
            !list.is_empty()
        });
        self.locations.retain(|_, l| l.nanos >= unmatched);
        self.sends.retain(|_, s| s.nanos >= retained);
        self.consumed.retain(|_, c| c.nanos >= retained);
        self.committed.retain(|_, c| {
            c.age(unmatched, retained);
            c.len() > 0
        });
    }
}

/// `Duration.between(a, b).toMillis()`: whole milliseconds, rounded toward −∞.
fn duration_ms(from_nanos: i64, to_nanos: i64) -> i64 {
    (to_nanos - from_nanos).div_euclid(1_000_000)
}

fn merge_key(value: &mut TraceValue, key: &TraceKey) {
    if value.topic.is_none() {
        value.topic.clone_from(&key.topic);
    }
    if value.partition.is_none() {
        value.partition = key.partition;
    }
    if value.offset.is_none() {
        value.offset = key.offset;
    }
    if value.correlation_id.is_none() {
        value.correlation_id.clone_from(&key.correlation_id);
    }
}
