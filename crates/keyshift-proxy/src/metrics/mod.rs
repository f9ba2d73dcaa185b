//! What the proxy measures, with bounded memory and bounded label cardinality.
//!
//! [`ProxyMetrics`] is the proxy's [`crate::observe::Observer`]: the wire layer reports
//! connections, requests, responses, produce and fetch batches, offset commits and decode
//! failures to it, and it keeps the counts in one state behind a mutex (one short lock per
//! event or record batch, never per byte). Reading is by snapshot: [`ProxyMetrics::snapshot`] returns a [`Stats`] — the
//! `/api/stats` JSON — and [`ProxyMetrics::register`] adds a collector that renders that same
//! snapshot as Prometheus text at scrape time, so the two views always agree.
//!
//! Cardinality is bounded by [`MetricsConfig`]: the first `max_client_ids` client ids, the
//! first `max_partitions` topic partitions, the first `max_group_partitions` group partitions
//! and the first `hot_key_topics` topics get their own label values; later ones are folded
//! into [`OVERFLOW_LABEL`] and counted in `keyshift_proxy_label_overflow_total`. Hot keys are
//! a per-topic [`SpaceSaving`] sketch (the core's), of which only the top `hot_keys` are
//! exported. Produce → fetch latency keeps, per partition, the offsets and times of the last
//! `produce_times` acknowledged produce batches.

mod collector;
mod histogram;
mod observer;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use keyshift_core::sketch::{HeavyHitters, SpaceSaving};
use keyshift_core::ParamError;

use crate::stats::{
    ApiBytes, ApiLatency, ConnectionStats, DecodeFailureCount, ErrorCount, GroupCommits,
    GroupPartition, HotKeyStats, LabelOverflow, NamedCount, OpaqueRequestCount, PartitionStats,
    RequestCount, SaslCount, Stats, TlsHandshakeCount, TopicHotKeys, TopicLatency,
};
use histogram::Histogram;

/// The label value that stands for every value past a cardinality cap.
pub const OVERFLOW_LABEL: &str = "__overflow__";

/// Longest key rendering in labels and JSON, in bytes (before hex-encoding doubles it).
const MAX_KEY_LABEL_BYTES: usize = 64;

/// Limits that bound memory and label cardinality; see the [module docs](self).
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsConfig {
    /// Distinct client ids with their own label value.
    pub max_client_ids: usize,
    /// Topic partitions with their own series.
    pub max_partitions: usize,
    /// (group, topic, partition) triples with their own committed-offset and lag series.
    pub max_group_partitions: usize,
    /// Topics whose keys are tracked by a hot-key sketch.
    pub hot_key_topics: usize,
    /// Hot keys exported per topic (top-k by rate).
    pub hot_keys: usize,
    /// Counters per topic sketch; keys whose share of a topic's records exceeds
    /// 1/`hot_key_capacity` are guaranteed to be tracked.
    pub hot_key_capacity: usize,
    /// Half-life of the hot-key rates, in seconds.
    pub hot_key_half_life_secs: f64,
    /// Acknowledged produce batches remembered per partition for produce → fetch latency.
    pub produce_times: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            max_client_ids: 100,
            max_partitions: 10_000,
            max_group_partitions: 10_000,
            hot_key_topics: 100,
            hot_keys: 10,
            hot_key_capacity: 1_000,
            hot_key_half_life_secs: 60.0,
            produce_times: 4_096,
        }
    }
}

impl MetricsConfig {
    /// Checks every limit; errors name the parameter like its `keyshift proxy` flag.
    pub fn validate(&self) -> Result<(), ParamError> {
        let positive = [
            ("max-client-ids", self.max_client_ids),
            ("max-partitions", self.max_partitions),
            ("max-group-partitions", self.max_group_partitions),
            ("hot-key-topics", self.hot_key_topics),
            ("hot-keys", self.hot_keys),
            ("hot-key-capacity", self.hot_key_capacity),
            ("produce-times", self.produce_times),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(ParamError::new(name, "must be at least 1"));
            }
        }
        if self.hot_keys > self.hot_key_capacity {
            return Err(ParamError::new(
                "hot-keys",
                format!(
                    "{} exported keys exceed the sketch's {} counters (--hot-key-capacity)",
                    self.hot_keys, self.hot_key_capacity
                ),
            ));
        }
        if !(self.hot_key_half_life_secs.is_finite() && self.hot_key_half_life_secs > 0.0) {
            return Err(ParamError::new(
                "hot-key-half-life",
                format!(
                    "got {}, expected a finite number of seconds above 0",
                    self.hot_key_half_life_secs
                ),
            ));
        }
        // The sketch knows its own largest capacity; report it under our flag's name.
        SpaceSaving::new(self.hot_key_capacity, self.hot_key_half_life_secs)
            .map(|_| ())
            .map_err(|e| ParamError::new("hot-key-capacity", e.reason))
    }
}

/// Counts of one topic partition.
#[derive(Debug, Default)]
struct Partition {
    produced_records: u64,
    produced_bytes: u64,
    fetched_records: u64,
    fetched_bytes: u64,
    high_watermark: Option<i64>,
    /// Acknowledged produce batches (base offset, end offset, when the request was seen),
    /// ordered by base offset, at most `produce_times` of them.
    produce_times: VecDeque<(i64, i64, Instant)>,
}

impl Partition {
    fn raise_high_watermark(&mut self, end: i64) {
        self.high_watermark = Some(self.high_watermark.map_or(end, |h| h.max(end)));
    }

    /// Remembers that offsets `[base, end)` were produced by a request seen at `at`.
    fn remember(&mut self, base: i64, end: i64, at: Instant, limit: usize) {
        let i = self.produce_times.partition_point(|&(b, _, _)| b < base);
        if self
            .produce_times
            .get(i)
            .is_some_and(|&(b, _, _)| b == base)
        {
            return;
        }
        self.produce_times.insert(i, (base, end, at));
        while self.produce_times.len() > limit {
            self.produce_times.pop_front();
        }
    }

    /// When the produce request that wrote `offset` was seen, if it is remembered.
    fn produced_at(&self, offset: i64) -> Option<Instant> {
        let i = self.produce_times.partition_point(|&(b, _, _)| b <= offset);
        let &(_, end, at) = self.produce_times.get(i.checked_sub(1)?)?;
        (offset < end).then_some(at)
    }
}

/// What is kept per open connection.
#[derive(Debug, Default)]
struct Conn {
    /// Whether the connection was relayed as non-Kafka traffic.
    passthrough: bool,
    /// (topic, partition) → the offset after the last fetched record counted on this
    /// connection: a batch fetched again (a partial batch retried, a batch that starts before
    /// the fetch offset) is counted only from there.
    next_fetch: HashMap<(String, i32), i64>,
    /// (topic, partition) → the fetch offset of the latest Fetch request on this connection
    /// (clients keep one fetch in flight per broker connection).
    fetch_from: HashMap<(String, i32), i64>,
}

/// A topic's hot-key sketch.
#[derive(Debug)]
struct HotKeys {
    sketch: SpaceSaving,
}

/// Per-API counters.
#[derive(Debug, Default)]
struct Api {
    latency: Histogram,
    bytes_in: u64,
    bytes_out: u64,
}

/// Which capped label a fold happened on.
#[derive(Debug, Clone, Copy)]
enum Capped {
    ClientId,
    TopicPartition,
    GroupPartition,
    HotKeyTopic,
}

impl Capped {
    const ALL: [Capped; 4] = [
        Capped::ClientId,
        Capped::TopicPartition,
        Capped::GroupPartition,
        Capped::HotKeyTopic,
    ];

    fn name(self) -> &'static str {
        match self {
            Capped::ClientId => "client_id",
            Capped::TopicPartition => "topic_partition",
            Capped::GroupPartition => "group_partition",
            Capped::HotKeyTopic => "hot_key_topic",
        }
    }
}

/// Everything counted; see the [module docs](self).
#[derive(Debug)]
struct State {
    config: MetricsConfig,
    /// client id → (api, version) → requests.
    requests: HashMap<String, HashMap<(i16, i16), u64>>,
    /// client id → (api, version, error code) → occurrences.
    errors: HashMap<String, HashMap<(i16, i16, i16), u64>>,
    apis: HashMap<i16, Api>,
    accepted: u64,
    passthrough_connections: u64,
    /// Open connections.
    conns: HashMap<u64, Conn>,
    /// Topic names by id, from Metadata responses (Fetch v13+ names topics by id only).
    topic_ids: HashMap<uuid::Uuid, String>,
    closed: BTreeMap<&'static str, u64>,
    passthrough_in: u64,
    passthrough_out: u64,
    /// topic → partition → counts.
    topics: HashMap<String, HashMap<i32, Partition>>,
    partition_count: usize,
    overflow_partition: Partition,
    hot: HashMap<String, HotKeys>,
    /// group → (topic, partition) → committed offset.
    committed: HashMap<String, HashMap<(String, i32), i64>>,
    group_partition_count: usize,
    /// group → topic → successful partition commits.
    commits: HashMap<String, HashMap<String, u64>>,
    produce_to_fetch: HashMap<String, Histogram>,
    /// (direction, api, label) → frames or batches that did not decode (relayed anyway).
    decode_failures: BTreeMap<(&'static str, &'static str, &'static str), u64>,
    /// (API key, reason) → requests relayed undecoded; keys outside
    /// [`OPAQUE_API_KEYS`] are counted under `None`.
    opaque_requests: BTreeMap<(Option<i16>, &'static str), u64>,
    /// (side, ok) → TLS handshakes.
    tls_handshakes: BTreeMap<(&'static str, bool), u64>,
    /// (step, mechanism, ok) → SASL answers; mechanisms are folded by [`sasl_mechanism`].
    sasl: BTreeMap<(&'static str, &'static str, bool), u64>,
    overflow: [u64; Capped::ALL.len()],
}

/// SASL mechanisms with their own label value; any other name a client sends is `other`, so a
/// client cannot grow the label set.
const SASL_MECHANISMS: [&str; 7] = [
    "PLAIN",
    "SCRAM-SHA-256",
    "SCRAM-SHA-512",
    "OAUTHBEARER",
    "GSSAPI",
    "AWS_MSK_IAM",
    "unknown",
];

/// The label value of a SASL mechanism name.
fn sasl_mechanism(name: &str) -> &'static str {
    SASL_MECHANISMS
        .iter()
        .find(|m| m.eq_ignore_ascii_case(name))
        .copied()
        .unwrap_or("other")
}

/// API keys counted under their own label value in `keyshift_proxy_opaque_requests_total`
/// (Kafka defines fewer than 100; the bound keeps a client spraying keys from growing the
/// label set). Others are counted as [`OVERFLOW_LABEL`].
const OPAQUE_API_KEYS: std::ops::Range<i16> = 0..1024;

impl State {
    fn fold(&mut self, what: Capped) {
        self.overflow[what as usize] += 1;
    }

    /// The map key for `client_id`: itself while under the cap or already known.
    fn client_label<'a>(&mut self, client_id: &'a str) -> &'a str {
        if self.requests.contains_key(client_id) || self.requests.len() < self.config.max_client_ids
        {
            client_id
        } else {
            self.fold(Capped::ClientId);
            OVERFLOW_LABEL
        }
    }

    /// The counts of `topic`/`partition`, or of the overflow series past the cap.
    fn partition(&mut self, topic: &str, partition: i32) -> &mut Partition {
        let known = self
            .topics
            .get(topic)
            .is_some_and(|t| t.contains_key(&partition));
        if !known {
            if self.partition_count >= self.config.max_partitions {
                self.fold(Capped::TopicPartition);
                return &mut self.overflow_partition;
            }
            self.partition_count += 1;
        }
        entry(&mut self.topics, topic).entry(partition).or_default()
    }
}

/// The value of `key` in `map`, inserted as the default first if missing; the key is copied
/// only then, so the common case of a known label allocates nothing.
fn entry<'m, V: Default>(map: &'m mut HashMap<String, V>, key: &str) -> &'m mut V {
    if !map.contains_key(key) {
        map.insert(key.to_owned(), V::default());
    }
    map.get_mut(key).expect("inserted above")
}

/// The proxy's metrics; cheap to clone (clones share the counts). See the [module docs](self).
#[derive(Debug, Clone)]
pub struct ProxyMetrics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    started: Instant,
    state: Mutex<State>,
}

impl ProxyMetrics {
    /// Metrics with the given limits (validated, see [`MetricsConfig::validate`]).
    pub fn new(config: MetricsConfig) -> Result<Self, ParamError> {
        config.validate()?;
        Ok(ProxyMetrics {
            inner: Arc::new(Inner {
                started: Instant::now(),
                state: Mutex::new(State {
                    config,
                    requests: HashMap::new(),
                    errors: HashMap::new(),
                    apis: HashMap::new(),
                    accepted: 0,
                    passthrough_connections: 0,
                    conns: HashMap::new(),
                    topic_ids: HashMap::new(),
                    closed: BTreeMap::new(),
                    passthrough_in: 0,
                    passthrough_out: 0,
                    topics: HashMap::new(),
                    partition_count: 0,
                    overflow_partition: Partition::default(),
                    hot: HashMap::new(),
                    committed: HashMap::new(),
                    group_partition_count: 0,
                    commits: HashMap::new(),
                    produce_to_fetch: HashMap::new(),
                    decode_failures: BTreeMap::new(),
                    opaque_requests: BTreeMap::new(),
                    tls_handshakes: BTreeMap::new(),
                    sasl: BTreeMap::new(),
                    overflow: [0; Capped::ALL.len()],
                }),
            }),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves counts, not invariants, half-updated: keep
        // serving them rather than poisoning every later event.
        self.inner
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Seconds since creation: the hot-key sketches' clock.
    fn now_secs(&self, at: Instant) -> f64 {
        at.saturating_duration_since(self.inner.started)
            .as_secs_f64()
    }

    /// Client connection `conn` was accepted.
    fn connection_opened(&self, conn: u64) {
        let mut s = self.state();
        s.accepted += 1;
        s.conns.insert(conn, Conn::default());
    }

    /// Connection `conn` closed for `reason` (a short fixed label such as `client_closed`,
    /// `frame_too_large`, `upstream_connect`).
    fn connection_closed(&self, conn: u64, reason: &'static str) {
        let mut s = self.state();
        s.conns.remove(&conn);
        *s.closed.entry(reason).or_default() += 1;
    }

    /// `bytes` relayed untouched on non-Kafka connection `conn`; `to_upstream` gives the way.
    fn passthrough_bytes(&self, conn: u64, to_upstream: bool, bytes: u64) {
        let mut s = self.state();
        if let Some(c) = s.conns.get_mut(&conn) {
            if !c.passthrough {
                c.passthrough = true;
                s.passthrough_connections += 1;
            }
        }
        if to_upstream {
            s.passthrough_in += bytes;
        } else {
            s.passthrough_out += bytes;
        }
    }

    /// A request of `api`/`version` from `client_id`, `bytes` long (frame with its length).
    fn request(&self, api: i16, version: i16, client_id: &str, bytes: u64) {
        let mut s = self.state();
        let label = s.client_label(client_id);
        let per_client = entry(&mut s.requests, label);
        *per_client.entry((api, version)).or_default() += 1;
        s.apis.entry(api).or_default().bytes_in += bytes;
    }

    /// The response to a request of `api`/`version` from `client_id`: `bytes` long, after
    /// `latency`, carrying the non-zero `error_codes` found anywhere in it (one per
    /// occurrence).
    fn response(
        &self,
        api: i16,
        version: i16,
        client_id: &str,
        bytes: u64,
        latency: Duration,
        error_codes: &[i16],
    ) {
        let mut s = self.state();
        let a = s.apis.entry(api).or_default();
        a.bytes_out += bytes;
        a.latency.observe(latency);
        let errors: Vec<i16> = error_codes.iter().copied().filter(|&c| c != 0).collect();
        if errors.is_empty() {
            return;
        }
        // Errors share the request's client label (already admitted or folded there).
        let label = if s.requests.contains_key(client_id) {
            client_id
        } else {
            OVERFLOW_LABEL
        };
        let per_client = entry(&mut s.errors, label);
        for code in errors {
            *per_client.entry((api, version, code)).or_default() += 1;
        }
    }

    /// The broker accepted `records` records (`bytes` record-batch bytes) for
    /// `topic`/`partition` at offsets from `base_offset` (when known), sent in a request the
    /// proxy read at `sent_at`.
    fn produce_acked(
        &self,
        topic: &str,
        partition: i32,
        base_offset: Option<i64>,
        records: u64,
        bytes: u64,
        sent_at: Instant,
    ) {
        let mut s = self.state();
        let limit = s.config.produce_times;
        let p = s.partition(topic, partition);
        p.produced_records += records;
        p.produced_bytes += bytes;
        if let Some(base) = base_offset.filter(|&b| b >= 0) {
            let end = base.saturating_add(i64::try_from(records).unwrap_or(i64::MAX));
            p.raise_high_watermark(end);
            p.remember(base, end, sent_at, limit);
        }
    }

    /// Keys of records produced to `topic` (`None`, a null key, is not a hot key), offered to
    /// the topic's hot-key sketch at `at`.
    fn produced_keys<'k>(
        &self,
        topic: &str,
        keys: impl IntoIterator<Item = Option<&'k [u8]>>,
        at: Instant,
    ) {
        let now = self.now_secs(at);
        let mut keys = keys.into_iter().flatten().peekable();
        if keys.peek().is_none() {
            return;
        }
        let mut s = self.state();
        if !s.hot.contains_key(topic) {
            if s.hot.len() >= s.config.hot_key_topics {
                s.fold(Capped::HotKeyTopic);
                return;
            }
            let sketch =
                SpaceSaving::new(s.config.hot_key_capacity, s.config.hot_key_half_life_secs)
                    .expect("validated in ProxyMetrics::new");
            s.hot.insert(topic.to_owned(), HotKeys { sketch });
        }
        let hot = s.hot.get_mut(topic).expect("inserted above");
        for key in keys {
            hot.sketch.offer(key, now);
        }
    }

    /// A Fetch request on connection `conn` asks for `(topic name, topic id, partition,
    /// fetch offset)` (the name is empty from v13 on, where the id is used).
    fn fetch_requested<'t>(
        &self,
        conn: u64,
        partitions: impl IntoIterator<Item = (&'t str, uuid::Uuid, i32, i64)>,
    ) {
        let mut s = self.state();
        let State {
            conns, topic_ids, ..
        } = &mut *s;
        let Some(c) = conns.get_mut(&conn) else {
            return;
        };
        for (name, id, partition, offset) in partitions {
            let topic = if name.is_empty() {
                match topic_ids.get(&id) {
                    Some(t) => t.as_str(),
                    None => continue,
                }
            } else {
                name
            };
            match c.fetch_from.get_mut(&(topic.to_owned(), partition)) {
                Some(o) => *o = offset,
                None => {
                    c.fetch_from.insert((topic.to_owned(), partition), offset);
                }
            }
        }
    }

    /// A Metadata response named topic `name` with id `id`.
    fn topic_id(&self, name: &str, id: uuid::Uuid) {
        if id.is_nil() || name.is_empty() {
            return;
        }
        let mut s = self.state();
        // Bounded like the partition series: a cluster with more topics than that resolves
        // the rest through the wire layer's own names only.
        if s.topic_ids.len() < s.config.max_partitions || s.topic_ids.contains_key(&id) {
            s.topic_ids.insert(id, name.to_owned());
        }
    }

    /// A data record batch of a fetch response on connection `conn`: records at `offsets`,
    /// the batch's last offset `last_offset`, `bytes` batch bytes, read at `at`. Records below
    /// the offset the connection's Fetch request asked for, or already counted on this
    /// connection, are not counted; a batch with nothing new counts no bytes either.
    #[allow(clippy::too_many_arguments)]
    fn fetched(
        &self,
        conn: u64,
        topic: &str,
        partition: i32,
        offsets: impl IntoIterator<Item = i64>,
        last_offset: i64,
        bytes: u64,
        at: Instant,
    ) {
        let mut s = self.state();
        let mut from = i64::MIN;
        if let Some(c) = s.conns.get_mut(&conn) {
            let key = (topic.to_owned(), partition);
            if let Some(&requested) = c.fetch_from.get(&key) {
                from = from.max(requested);
            }
            let next = c.next_fetch.entry(key).or_insert(i64::MIN);
            from = from.max(*next);
            *next = (*next).max(last_offset.saturating_add(1));
        }
        let mut first = None;
        let mut records = 0u64;
        for o in offsets.into_iter().filter(|&o| o >= from) {
            first = Some(first.map_or(o, |f: i64| f.min(o)));
            records += 1;
        }
        let Some(first) = first else {
            return;
        };
        let p = s.partition(topic, partition);
        p.fetched_records += records;
        p.fetched_bytes += bytes;
        let Some(produced) = p.produced_at(first) else {
            return;
        };
        let latency = at.saturating_duration_since(produced);
        let topic_label = if s.topics.contains_key(topic) {
            topic
        } else {
            OVERFLOW_LABEL
        };
        entry(&mut s.produce_to_fetch, topic_label).observe(latency);
    }

    /// A partition's high watermark as a fetch or list-offsets response reported it.
    fn high_watermark(&self, topic: &str, partition: i32, high_watermark: i64) {
        if high_watermark < 0 {
            return;
        }
        let mut s = self.state();
        s.partition(topic, partition)
            .raise_high_watermark(high_watermark);
    }

    /// `group` committed `offset` for `topic`/`partition` and the broker accepted it.
    fn committed(&self, group: &str, topic: &str, partition: i32, offset: i64) {
        let mut s = self.state();
        let known = s
            .committed
            .get(group)
            .is_some_and(|g| g.contains_key(&(topic.to_owned(), partition)));
        if !known {
            if s.group_partition_count >= s.config.max_group_partitions {
                s.fold(Capped::GroupPartition);
                return;
            }
            s.group_partition_count += 1;
        }
        entry(&mut s.committed, group).insert((topic.to_owned(), partition), offset);
        *entry(entry(&mut s.commits, group), topic) += 1;
    }

    /// Something in a relayed frame of `api` did not decode, for `label` (a short fixed set);
    /// `to_broker` gives the frame's direction.
    fn decode_failed(&self, to_broker: bool, api: &'static str, label: &'static str) {
        let direction = if to_broker { "request" } else { "response" };
        *self
            .state()
            .decode_failures
            .entry((direction, api, label))
            .or_default() += 1;
    }

    /// A request of `api_key` relayed undecoded, for `reason` (a short fixed set).
    fn opaque_request(&self, api_key: i16, reason: &'static str) {
        let key = OPAQUE_API_KEYS.contains(&api_key).then_some(api_key);
        *self
            .state()
            .opaque_requests
            .entry((key, reason))
            .or_default() += 1;
    }

    /// A TLS handshake on `side` (`client` or `upstream`) succeeded or failed.
    fn tls_handshake(&self, side: &'static str, ok: bool) {
        *self.state().tls_handshakes.entry((side, ok)).or_default() += 1;
    }

    /// A SASL `step` of `mechanism` (as the client named it) was answered with `error_code`.
    fn sasl(&self, step: &'static str, mechanism: &str, error_code: i16) {
        let key = (step, sasl_mechanism(mechanism), error_code == 0);
        *self.state().sasl.entry(key).or_default() += 1;
    }

    /// Everything measured so far; see [`Stats`].
    pub fn snapshot(&self) -> Stats {
        let now = Instant::now();
        let now_secs = self.now_secs(now);
        let s = self.state();
        let api = |k: i16| crate::wire::codec::api_name(k).to_owned();

        let mut requests: Vec<RequestCount> = s
            .requests
            .iter()
            .flat_map(|(client, per)| {
                per.iter().map(move |(&(a, v), &count)| RequestCount {
                    api: api(a),
                    version: v,
                    client_id: client.clone(),
                    count,
                })
            })
            .collect();
        requests.sort_by(|x, y| {
            (&x.api, x.version, &x.client_id).cmp(&(&y.api, y.version, &y.client_id))
        });

        let mut errors: Vec<ErrorCount> = s
            .errors
            .iter()
            .flat_map(|(client, per)| {
                per.iter().map(move |(&(a, v, code), &count)| ErrorCount {
                    api: api(a),
                    version: v,
                    client_id: client.clone(),
                    error_code: code,
                    error: error_name(code),
                    count,
                })
            })
            .collect();
        errors.sort_by(|x, y| {
            (&x.api, x.version, &x.client_id, x.error_code).cmp(&(
                &y.api,
                y.version,
                &y.client_id,
                y.error_code,
            ))
        });

        let mut latency: Vec<ApiLatency> = s
            .apis
            .iter()
            .filter(|(_, a)| a.latency.distribution().count > 0)
            .map(|(&k, a)| ApiLatency {
                api: api(k),
                latency: a.latency.distribution(),
            })
            .collect();
        latency.sort_by(|x, y| x.api.cmp(&y.api));
        let mut bytes: Vec<ApiBytes> = s
            .apis
            .iter()
            .map(|(&k, a)| ApiBytes {
                api: api(k),
                bytes_in: a.bytes_in,
                bytes_out: a.bytes_out,
            })
            .collect();
        bytes.sort_by(|x, y| x.api.cmp(&y.api));

        let partition_stats = |topic: &str, partition: i32, p: &Partition| PartitionStats {
            topic: topic.to_owned(),
            partition,
            produced_records: p.produced_records,
            produced_bytes: p.produced_bytes,
            fetched_records: p.fetched_records,
            fetched_bytes: p.fetched_bytes,
            high_watermark: p.high_watermark,
        };
        let mut partitions: Vec<PartitionStats> = s
            .topics
            .iter()
            .flat_map(|(t, ps)| ps.iter().map(|(&i, p)| partition_stats(t, i, p)))
            .collect();
        if s.overflow[Capped::TopicPartition as usize] > 0 {
            partitions.push(partition_stats(OVERFLOW_LABEL, -1, &s.overflow_partition));
        }
        partitions.sort_by(|x, y| (&x.topic, x.partition).cmp(&(&y.topic, y.partition)));

        let mut hot_keys: Vec<TopicHotKeys> = s
            .hot
            .iter()
            .map(|(topic, h)| TopicHotKeys {
                topic: topic.clone(),
                keyed_records: h.sketch.total(),
                keys: h
                    .sketch
                    .top(s.config.hot_keys, now_secs)
                    .into_iter()
                    .map(|k| HotKeyStats {
                        key: render_key(&k.key),
                        count: k.count,
                        error: k.error,
                        rate: k.rate,
                    })
                    .collect(),
            })
            .collect();
        hot_keys.sort_by(|x, y| x.topic.cmp(&y.topic));

        let mut groups: Vec<GroupPartition> = s
            .committed
            .iter()
            .flat_map(|(g, per)| {
                let s = &s;
                per.iter()
                    .map(move |((topic, partition), &committed_offset)| {
                        let hw = s
                            .topics
                            .get(topic)
                            .and_then(|t| t.get(partition))
                            .and_then(|p| p.high_watermark);
                        GroupPartition {
                            group: g.clone(),
                            topic: topic.clone(),
                            partition: *partition,
                            committed_offset,
                            lag: hw.map(|h| (h - committed_offset).max(0)),
                        }
                    })
            })
            .collect();
        groups.sort_by(|x, y| {
            (&x.group, &x.topic, x.partition).cmp(&(&y.group, &y.topic, y.partition))
        });
        let mut commits: Vec<GroupCommits> = s
            .commits
            .iter()
            .flat_map(|(g, per)| {
                per.iter().map(move |(t, &commits)| GroupCommits {
                    group: g.clone(),
                    topic: t.clone(),
                    commits,
                })
            })
            .collect();
        commits.sort_by(|x, y| (&x.group, &x.topic).cmp(&(&y.group, &y.topic)));

        let mut produce_to_fetch: Vec<TopicLatency> = s
            .produce_to_fetch
            .iter()
            .map(|(t, h)| TopicLatency {
                topic: t.clone(),
                latency: h.distribution(),
            })
            .collect();
        produce_to_fetch.sort_by(|x, y| x.topic.cmp(&y.topic));

        let decode_failures = s
            .decode_failures
            .iter()
            .map(|(&(direction, a, label), &count)| DecodeFailureCount {
                direction: direction.to_owned(),
                api: a.to_owned(),
                reason: label.to_owned(),
                count,
            })
            .collect();

        let opaque_requests = s
            .opaque_requests
            .iter()
            .map(|(&(key, reason), &count)| OpaqueRequestCount {
                api_key: key.map_or_else(|| OVERFLOW_LABEL.to_owned(), |k| k.to_string()),
                api: key
                    .map_or("Unknown", crate::wire::codec::api_name)
                    .to_owned(),
                reason: reason.to_owned(),
                count,
            })
            .collect();

        let outcome = |ok: bool| if ok { "ok" } else { "failed" }.to_owned();
        let tls_handshakes = s
            .tls_handshakes
            .iter()
            .map(|(&(side, ok), &count)| TlsHandshakeCount {
                side: side.to_owned(),
                outcome: outcome(ok),
                count,
            })
            .collect();
        let sasl = s
            .sasl
            .iter()
            .map(|(&(step, mechanism, ok), &count)| SaslCount {
                step: step.to_owned(),
                mechanism: mechanism.to_owned(),
                outcome: outcome(ok),
                count,
            })
            .collect();
        Stats {
            uptime_secs: now_secs,
            decode_failures,
            opaque_requests,
            tls_handshakes,
            sasl,
            connections: ConnectionStats {
                accepted: s.accepted,
                open: s.conns.len() as u64,
                passthrough: s.passthrough_connections,
                closed: s
                    .closed
                    .iter()
                    .map(|(&name, &count)| NamedCount {
                        name: name.into(),
                        count,
                    })
                    .collect(),
                passthrough_bytes_in: s.passthrough_in,
                passthrough_bytes_out: s.passthrough_out,
            },
            requests,
            errors,
            latency,
            bytes,
            partitions,
            hot_keys,
            groups,
            commits,
            produce_to_fetch,
            label_overflow: Capped::ALL
                .iter()
                .map(|&c| LabelOverflow {
                    label: c.name().into(),
                    count: s.overflow[c as usize],
                })
                .collect(),
        }
    }

    /// Registers a collector that renders [`ProxyMetrics::snapshot`] as the
    /// `keyshift_proxy_*` metrics at every scrape.
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register_collector(Box::new(collector::StatsCollector(self.clone())));
    }
}

/// The error code's name in Kafka's protocol (`UnknownTopicOrPartition`), or `Unknown<code>`.
pub fn error_name(code: i16) -> String {
    match kafka_protocol::error::ResponseError::try_from_code(code) {
        None => "None".into(),
        Some(kafka_protocol::error::ResponseError::Unknown(c)) => format!("Unknown{c}"),
        Some(e) => e.to_string(),
    }
}

/// A key as a label value: printable UTF-8 as is, anything else as `0x` + hex; cut to
/// [`MAX_KEY_LABEL_BYTES`] bytes of the key (a cut key ends with `…`).
pub fn render_key(key: &[u8]) -> String {
    let cut = &key[..key.len().min(MAX_KEY_LABEL_BYTES)];
    let ellipsis = if cut.len() < key.len() { "…" } else { "" };
    match std::str::from_utf8(cut) {
        Ok(s) if !s.chars().any(char::is_control) => format!("{s}{ellipsis}"),
        _ => {
            let mut out = String::with_capacity(2 + cut.len() * 2);
            out.push_str("0x");
            for b in cut {
                out.push_str(&format!("{b:02x}"));
            }
            out.push_str(ellipsis);
            out
        }
    }
}

#[cfg(test)]
mod tests;
