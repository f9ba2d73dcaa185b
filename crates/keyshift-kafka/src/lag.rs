//! Consumer-group lag collection: the Kafka side of `keyshift lag` and `keyshift autoscale`.
//!
//! A [`LagCollector`] reads, once per [`LagCollector::collect`] call, the cluster's consumer
//! groups (ListGroups + DescribeGroups: state, members, their assignments), each group's
//! committed offsets (OffsetFetch from the group's coordinator) and every relevant
//! partition's log-start and log-end offsets (ListOffsets). It keeps, per group and partition,
//! a window of those samples and, per partition, an offset→time table, and hands them to
//! `keyshift_core::lag`, which judges status, rates and time to drain — so a collector is
//! meant to be called on an interval and gets more informative with each call.
//!
//! Lag in seconds is exact where possible: the collector fetches the first unconsumed record
//! of each lagging partition (a consumer that assigns partitions and never joins or commits)
//! and uses its timestamp. If that record cannot be read in time (or exact lookups are off),
//! it falls back to the core's interpolation table; [`PartitionLag::lag_seconds_source`]
//! says which.
//!
//! Nothing here is tansu-specific: the same requests work against any Kafka cluster.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use keyshift_core::lag::{
    group_status, LagSecondsSource, Membership, OffsetTimeTable, PartitionWindow, Sample, Status,
    DEFAULT_TABLE_POINTS, DEFAULT_WINDOW,
};
use keyshift_core::ParamError;
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::client_errors::{drain, ErrorReporting};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use crate::config::ClientSettings;

/// How long to wait before describing groups again after the cluster failed to.
const DESCRIBE_RETRY: Duration = Duration::from_secs(60);

/// Options of a [`LagCollector`].
#[derive(Debug, Clone, PartialEq)]
pub struct LagCollectorConfig {
    /// Upper bound for each request to the cluster (metadata, groups, offsets).
    pub timeout: Duration,
    /// Samples per partition window that statuses and rates are judged on (at least 2).
    pub window: usize,
    /// Distinct end offsets kept per partition for lag-seconds interpolation (at least 2).
    pub table_points: usize,
    /// Whether to read the first unconsumed record of each lagging partition for an exact lag
    /// in seconds; without it lag seconds are interpolated.
    pub exact_lag_seconds: bool,
    /// Upper bound for fetching those records, per collection.
    pub probe_timeout: Duration,
}

impl Default for LagCollectorConfig {
    fn default() -> Self {
        LagCollectorConfig {
            timeout: Duration::from_secs(10),
            window: DEFAULT_WINDOW,
            table_points: DEFAULT_TABLE_POINTS,
            exact_lag_seconds: true,
            probe_timeout: Duration::from_secs(5),
        }
    }
}

/// A failed collection; every variant says what was being read.
#[derive(Debug, thiserror::Error)]
pub enum LagError {
    /// A window or table size makes no sense.
    #[error(transparent)]
    Config(#[from] ParamError),
    /// An rdkafka client could not be created (usually a bad passthrough property).
    #[error("cannot create a Kafka client for '{bootstrap}': {cause}")]
    Client {
        /// The bootstrap servers.
        bootstrap: String,
        /// rdkafka's error.
        cause: Box<KafkaError>,
    },
    /// A request to the cluster failed or timed out (broker down, unreachable, ...).
    #[error("{operation} failed: {cause}")]
    Request {
        /// What was being read, e.g. "listing consumer groups".
        operation: String,
        /// rdkafka's error.
        cause: Box<KafkaError>,
    },
    /// A group asked for by name has no members and no committed offsets.
    #[error("consumer group '{group}' does not exist (no members and no committed offsets)")]
    UnknownGroup {
        /// The group as given.
        group: String,
    },
    /// All groups were asked for, but the cluster answers metadata and not the group listing.
    #[error(
        "cannot list consumer groups (ListGroups + DescribeGroups): {cause}; name the groups \
         to report instead"
    )]
    GroupListing {
        /// rdkafka's error.
        cause: Box<KafkaError>,
    },
}

/// Lag of one partition for one group, as of the latest collection.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PartitionLag {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The group's committed offset (next record to process); `None` if it committed none.
    pub committed_offset: Option<i64>,
    /// Log-start offset (low watermark).
    pub start_offset: i64,
    /// Log-end offset (high watermark).
    pub end_offset: i64,
    /// Records not yet consumed: end − committed (end − start without a commit).
    pub lag: i64,
    /// Age of the first unconsumed record in seconds (0 with no lag); `None` if unknown yet.
    pub lag_seconds: Option<f64>,
    /// How [`PartitionLag::lag_seconds`] was obtained.
    pub lag_seconds_source: Option<LagSecondsSource>,
    /// Records produced per second over the window.
    pub production_rate: Option<f64>,
    /// Records consumed (committed) per second over the window.
    pub consumption_rate: Option<f64>,
    /// Seconds until the lag is 0 at current rates; `None` if it is not going down.
    pub time_to_drain_secs: Option<f64>,
    /// Burrow-style status (see `keyshift_core::lag`).
    pub status: Status,
    /// Samples the status and rates were judged on.
    pub samples: usize,
    /// Client id of the member assigned this partition, if any.
    pub member: Option<String>,
    /// Why the offsets could not be read (status ERR).
    pub error: Option<String>,
}

/// Lag of one consumer group, as of the latest collection.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupLag {
    /// Group id.
    pub group: String,
    /// Group state as the coordinator reports it (`Stable`, `Empty`, `PreparingRebalance`,
    /// ...), `Unknown` if it was not listed.
    pub state: String,
    /// Number of members; `None` if the cluster did not describe its groups (then STOP
    /// cannot be told from STALL and stopped consumers show as STALL).
    pub members: Option<usize>,
    /// Burrow-style rollup of the partitions' statuses.
    pub status: Status,
    /// Total lag in records.
    pub lag: i64,
    /// The largest partition lag in seconds, if any is known.
    pub max_lag_seconds: Option<f64>,
    /// Records produced per second into the group's partitions.
    pub production_rate: Option<f64>,
    /// Records consumed per second by the group.
    pub consumption_rate: Option<f64>,
    /// When the slowest partition drains at current rates; `None` if some partition with lag
    /// is not draining.
    pub time_to_drain_secs: Option<f64>,
    /// Partitions of all the group's topics: the most consumers that can do work.
    pub partition_count: u32,
    /// Partitions per topic the group consumes.
    pub topics: BTreeMap<String, u32>,
    /// Per-partition detail, ordered by topic then partition.
    pub partitions: Vec<PartitionLag>,
}

impl GroupLag {
    /// The partitions of `topic`.
    pub fn topic_partitions<'a>(
        &'a self,
        topic: &'a str,
    ) -> impl Iterator<Item = &'a PartitionLag> {
        self.partitions.iter().filter(move |p| p.topic == topic)
    }
}

/// A group's committed offset per (topic, partition); `None` where it committed nothing.
type Committed = BTreeMap<(String, i32), Option<i64>>;

/// A described group: state and who holds which partition.
struct GroupView {
    state: String,
    members: Option<usize>,
    /// `None` if some member's assignment could not be decoded (not the consumer protocol).
    assigned: Option<HashMap<(String, i32), String>>,
    listed: bool,
}

/// Collects consumer-group lag on demand; see the [module docs](self).
pub struct LagCollector {
    settings: ClientSettings,
    config: LagCollectorConfig,
    /// Metadata, watermarks and first-unconsumed-record fetches. Never joins a group.
    probe: BaseConsumer<ErrorReporting>,
    /// ListGroups + DescribeGroups only: a broker that resets the connection on a request it
    /// cannot serve (tansu 0.6 on DescribeGroups) then disturbs nothing else.
    describer: BaseConsumer,
    /// After a failed description with the cluster otherwise reachable: when to try again,
    /// and what went wrong.
    describe_failure: Option<(Instant, KafkaError)>,
    /// One non-joining consumer per group: OffsetFetch goes to the group's coordinator, which
    /// librdkafka only asks from a client configured with that `group.id`.
    group_clients: HashMap<String, Arc<BaseConsumer>>,
    windows: HashMap<(String, String, i32), PartitionWindow>,
    tables: HashMap<(String, i32), OffsetTimeTable>,
}

impl std::fmt::Debug for LagCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LagCollector")
            .field("bootstrap_servers", &self.settings.bootstrap_servers())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl LagCollector {
    /// A collector with [`LagCollectorConfig::default`].
    pub fn new(settings: &ClientSettings) -> Result<Self, LagError> {
        Self::with_config(settings, LagCollectorConfig::default())
    }

    /// A collector with explicit options; sizes are validated here.
    pub fn with_config(
        settings: &ClientSettings,
        config: LagCollectorConfig,
    ) -> Result<Self, LagError> {
        PartitionWindow::new(config.window)?;
        OffsetTimeTable::new(config.table_points)?;
        let mut probe_config = settings.consumer_config("keyshift-lag-probe");
        probe_config
            .set("allow.auto.create.topics", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            // The records fetched are below the end offset, so they exist: a long broker-side
            // wait only adds latency (100 ms made a collection ~4x slower in benches/lag.rs).
            .set("fetch.wait.max.ms", "10");
        // Passthrough wins, as everywhere else.
        for property in settings.passthrough() {
            probe_config.set(property.key(), property.value());
        }
        let create = |config: &rdkafka::ClientConfig| {
            config.create().map_err(|source| LagError::Client {
                bootstrap: settings.bootstrap_servers().to_owned(),
                cause: Box::new(source),
            })
        };
        let probe: BaseConsumer<ErrorReporting> = probe_config
            .create_with_context(ErrorReporting::default())
            .map_err(|source| LagError::Client {
                bootstrap: settings.bootstrap_servers().to_owned(),
                cause: Box::new(source),
            })?;
        let describer: BaseConsumer = create(&probe_config)?;
        Ok(LagCollector {
            settings: settings.clone(),
            config,
            probe,
            describer,
            describe_failure: None,
            group_clients: HashMap::new(),
            windows: HashMap::new(),
            tables: HashMap::new(),
        })
    }

    /// The options in use.
    pub fn config(&self) -> &LagCollectorConfig {
        &self.config
    }

    /// Reads the lag of `groups` (all consumer groups of the cluster if empty) as of `now`,
    /// adding one sample to each partition's window. Groups come back sorted by name.
    ///
    /// A group named in `groups` that has neither members nor committed offsets is an
    /// [`LagError::UnknownGroup`]. A cluster that cannot be reached is a
    /// [`LagError::Request`]; the collector keeps its windows and the next call after the
    /// cluster is back continues where it left off.
    pub fn collect(
        &mut self,
        groups: &[String],
        now: SystemTime,
    ) -> Result<Vec<GroupLag>, LagError> {
        let now_secs = now
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let timeout = self.config.timeout;
        let topics = self.topics(timeout)?;
        // Some brokers (tansu 0.6) answer metadata and offsets but not DescribeGroups: then
        // named groups are still reported, without membership.
        // Retrying a broker that cannot describe groups on every call would only cost a
        // connection reset each time; once a minute is enough to notice an upgrade.
        let described = match &self.describe_failure {
            Some((at, error)) if Instant::now() < *at => Err(error.clone()),
            _ => self.describe_groups(timeout),
        };
        let (views, listing_error) = match described {
            Ok(views) => {
                self.describe_failure = None;
                (views, None)
            }
            Err(source) => {
                if self
                    .describe_failure
                    .as_ref()
                    .is_none_or(|(at, _)| Instant::now() >= *at)
                {
                    tracing::warn!(
                        error = %source,
                        "the cluster does not describe consumer groups: membership unknown \
                         (stopped consumers show as STALL); retrying in {DESCRIBE_RETRY:?}"
                    );
                    self.describe_failure = Some((Instant::now() + DESCRIBE_RETRY, source.clone()));
                }
                (BTreeMap::new(), Some(source))
            }
        };

        let names: Vec<String> = if groups.is_empty() {
            if let Some(source) = listing_error {
                return Err(LagError::GroupListing {
                    cause: Box::new(source),
                });
            }
            views.keys().cloned().collect()
        } else {
            let mut unique: Vec<String> = groups.to_vec();
            unique.sort();
            unique.dedup();
            unique
        };

        // Committed offsets of each group over every partition of every topic: OffsetFetch
        // answers -1 where the group has no commit, and topics with a commit or an assigned
        // partition are the group's topics (what kafka_exporter does, too).
        let mut per_group: Vec<(String, GroupView, Committed)> = Vec::new();
        for name in names {
            let described = listing_error.is_none();
            let view = views.get(&name).map_or(
                GroupView {
                    state: "Unknown".to_owned(),
                    members: described.then_some(0),
                    assigned: described.then(HashMap::new),
                    listed: false,
                },
                |v| GroupView {
                    state: v.state.clone(),
                    members: v.members,
                    assigned: v.assigned.clone(),
                    listed: v.listed,
                },
            );
            let committed = self.committed(&name, &topics, timeout)?;
            let group_topics: BTreeSet<&String> = committed
                .iter()
                .filter(|(_, c)| c.is_some())
                .map(|((t, _), _)| t)
                .chain(
                    view.assigned
                        .iter()
                        .flat_map(|a| a.keys().map(|(t, _)| t))
                        .filter(|t| topics.contains_key(*t)),
                )
                .collect();
            let unknown = group_topics.is_empty()
                && view.members.unwrap_or(0) == 0
                && (!view.listed || view.state == "Dead");
            if unknown {
                if groups.is_empty() {
                    continue;
                }
                return Err(LagError::UnknownGroup { group: name });
            }
            let group_topics: HashSet<String> = group_topics.into_iter().cloned().collect();
            let committed = committed
                .into_iter()
                .filter(|((t, _), _)| group_topics.contains(t))
                .collect();
            per_group.push((name, view, committed));
        }

        // Watermarks once per partition, whatever number of groups read it, in two
        // ListOffsets requests per broker for all partitions (see `crate::watermarks`).
        let keys: Vec<(String, i32)> = per_group
            .iter()
            .flat_map(|(_, _, committed)| committed.keys().cloned())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let outage = |cause: KafkaError| LagError::Request {
            operation: "reading log end offsets (ListOffsets)".to_owned(),
            cause: Box::new(cause),
        };
        let raw = crate::watermarks::watermarks(&self.probe, &keys, timeout).map_err(outage)?;
        // A cluster that answers nothing is an outage, not a partition-level problem.
        if !raw.is_empty() && raw.values().all(Result::is_err) {
            let cause = raw
                .into_values()
                .find_map(Result::err)
                .unwrap_or(KafkaError::NoMessageReceived);
            return Err(outage(cause));
        }
        let watermarks: BTreeMap<(String, i32), Result<(i64, i64), String>> = raw
            .into_iter()
            .map(|(k, w)| (k, w.map_err(|e| e.to_string())))
            .collect();
        for (key, result) in &watermarks {
            if let Ok((_, high)) = result {
                let table = self.tables.entry(key.clone()).or_insert_with(|| {
                    OffsetTimeTable::new(self.config.table_points).expect("validated at creation")
                });
                table.observe(*high, now_secs);
            }
        }

        // First unconsumed record of every lagging partition, for exact lag seconds.
        let mut wanted: BTreeSet<(String, i32, i64)> = BTreeSet::new();
        if self.config.exact_lag_seconds {
            for (_, _, committed) in &per_group {
                for (key, c) in committed {
                    if let Some(Ok((low, high))) = watermarks.get(key) {
                        let position = c.unwrap_or(*low).max(*low);
                        if position < *high {
                            wanted.insert((key.0.clone(), key.1, position));
                        }
                    }
                }
            }
        }
        let timestamps = self.first_unconsumed_timestamps(&wanted);

        let mut seen_windows = HashSet::new();
        let mut out = Vec::with_capacity(per_group.len());
        for (name, view, committed) in per_group {
            let mut partitions = Vec::with_capacity(committed.len());
            for ((topic, partition), c) in committed {
                let key = (name.clone(), topic.clone(), partition);
                seen_windows.insert(key.clone());
                let (membership, member) = membership(view.assigned.as_ref(), &topic, partition);
                let (low, high) = match watermarks.get(&(topic.clone(), partition)) {
                    Some(Ok(w)) => *w,
                    Some(Err(e)) => {
                        partitions.push(self.errored(&key, c, member, e.clone()));
                        continue;
                    }
                    None => continue,
                };
                let sample = Sample {
                    time_secs: now_secs,
                    committed: c,
                    start: low.max(0),
                    end: high.max(low.max(0)),
                };
                let window = self.windows.entry(key.clone()).or_insert_with(|| {
                    PartitionWindow::new(self.config.window).expect("validated at creation")
                });
                if window.push(sample).is_err() {
                    // The clock went backwards or the partition was recreated: start over.
                    *window = PartitionWindow::new(self.config.window).expect("validated");
                    window.push(sample).ok();
                }
                let a = window.assess(membership).expect("a sample was just pushed");
                let position = c.unwrap_or(low).max(low);
                let (lag_seconds, source) = if a.lag == 0 {
                    (Some(0.0), Some(LagSecondsSource::Exact))
                } else if let Some(ts) = timestamps.get(&(topic.clone(), partition, position)) {
                    (
                        Some((now_secs - *ts as f64 / 1e3).max(0.0)),
                        Some(LagSecondsSource::Exact),
                    )
                } else {
                    match self
                        .tables
                        .get(&(topic.clone(), partition))
                        .and_then(|t| t.lag_seconds(position, now_secs))
                    {
                        Some((secs, source)) => (Some(secs), Some(source)),
                        None => (None, None),
                    }
                };
                partitions.push(PartitionLag {
                    topic,
                    partition,
                    committed_offset: c,
                    start_offset: sample.start,
                    end_offset: sample.end,
                    lag: a.lag,
                    lag_seconds,
                    lag_seconds_source: source,
                    production_rate: a.production_rate,
                    consumption_rate: a.consumption_rate,
                    time_to_drain_secs: a.time_to_drain_secs,
                    status: a.status,
                    samples: a.samples,
                    member,
                    error: None,
                });
            }
            let topic_counts: BTreeMap<String, u32> = partitions
                .iter()
                .map(|p| p.topic.clone())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .map(|t| {
                    let n = topics.get(&t).copied().unwrap_or(0);
                    (t, n)
                })
                .collect();
            out.push(summarize(name, view, topic_counts, partitions));
        }
        // Forget partitions and groups that are gone, so a long-running exporter stays bounded.
        if groups.is_empty() {
            self.windows.retain(|k, _| seen_windows.contains(k));
            let live: HashSet<&String> = out.iter().map(|g| &g.group).collect();
            self.group_clients.retain(|g, _| live.contains(g));
        }
        self.tables
            .retain(|k, _| watermarks.contains_key(k) || topics.contains_key(&k.0));
        out.sort_by(|a, b| a.group.cmp(&b.group));
        Ok(out)
    }

    fn errored(
        &self,
        key: &(String, String, i32),
        committed: Option<i64>,
        member: Option<String>,
        error: String,
    ) -> PartitionLag {
        let last = self.windows.get(key).and_then(|w| w.latest().copied());
        PartitionLag {
            topic: key.1.clone(),
            partition: key.2,
            committed_offset: committed,
            start_offset: last.map_or(0, |s| s.start),
            end_offset: last.map_or(0, |s| s.end),
            lag: last.map_or(0, |s| s.lag()),
            lag_seconds: None,
            lag_seconds_source: None,
            production_rate: None,
            consumption_rate: None,
            time_to_drain_secs: None,
            status: Status::Err,
            samples: last.map_or(0, |_| 1),
            member,
            error: Some(error),
        }
    }

    /// Every non-internal topic with its partition count.
    fn topics(&self, timeout: Duration) -> Result<BTreeMap<String, u32>, LagError> {
        let metadata = self.probe.fetch_metadata(None, timeout).map_err(|source| {
            // The broker's reason (a failed SASL login, a TLS handshake) comes apart from the
            // request's generic failure: wait briefly for it and name it.
            drain(&self.probe, Duration::from_secs(1));
            let said = self
                .probe
                .context()
                .take_last()
                .map(|reason| format!(" ({reason})"))
                .unwrap_or_default();
            LagError::Request {
                operation: format!(
                    "reading cluster metadata from '{}'{said}",
                    self.settings.bootstrap_servers()
                ),
                cause: Box::new(source),
            }
        })?;
        Ok(metadata
            .topics()
            .iter()
            .filter(|t| !t.name().starts_with("__") && t.error().is_none())
            .map(|t| (t.name().to_owned(), t.partitions().len() as u32))
            .filter(|(_, n)| *n > 0)
            .collect())
    }

    /// Consumer groups of the cluster (ListGroups + DescribeGroups).
    fn describe_groups(
        &self,
        timeout: Duration,
    ) -> Result<BTreeMap<String, GroupView>, KafkaError> {
        let list = self.describer.fetch_group_list(None, timeout)?;
        let mut views = BTreeMap::new();
        for group in list.groups() {
            // Connect workers, schema registries etc. use other protocols; their "groups" have
            // no offsets to lag behind. An empty protocol type is a group with commits only.
            if !matches!(group.protocol_type(), "consumer" | "") {
                continue;
            }
            let mut assigned = Some(HashMap::new());
            for member in group.members() {
                let decoded = member.assignment().map(decode_assignment);
                match (decoded, assigned.as_mut()) {
                    (Some(Some(partitions)), Some(map)) => {
                        for tp in partitions {
                            map.insert(tp, member.client_id().to_owned());
                        }
                    }
                    // No assignment yet (rebalancing): the member holds nothing.
                    (None, _) => {}
                    _ => assigned = None,
                }
            }
            views.insert(
                group.name().to_owned(),
                GroupView {
                    state: group.state().to_owned(),
                    members: Some(group.members().len()),
                    assigned,
                    listed: true,
                },
            );
        }
        Ok(views)
    }

    /// The group's committed offsets for every partition of `topics`.
    fn committed(
        &mut self,
        group: &str,
        topics: &BTreeMap<String, u32>,
        timeout: Duration,
    ) -> Result<Committed, LagError> {
        let failed = |source: KafkaError| LagError::Request {
            operation: format!("reading committed offsets of group '{group}' (OffsetFetch)"),
            cause: Box::new(source),
        };
        let client = match self.group_clients.get(group) {
            Some(c) => Arc::clone(c),
            None => {
                let mut config = self.settings.consumer_config(group);
                config.set("allow.auto.create.topics", "false");
                for property in self.settings.passthrough() {
                    config.set(property.key(), property.value());
                }
                let c: BaseConsumer = config.create().map_err(|source| LagError::Client {
                    bootstrap: self.settings.bootstrap_servers().to_owned(),
                    cause: Box::new(source),
                })?;
                let c = Arc::new(c);
                self.group_clients.insert(group.to_owned(), Arc::clone(&c));
                c
            }
        };
        let mut request = TopicPartitionList::new();
        for (topic, &n) in topics {
            for partition in 0..n as i32 {
                request.add_partition(topic, partition);
            }
        }
        if request.count() == 0 {
            return Ok(BTreeMap::new());
        }
        let response = client.committed_offsets(request, timeout).map_err(failed)?;
        Ok(response
            .elements()
            .iter()
            .map(|e| {
                let offset = match e.offset() {
                    Offset::Offset(o) if o >= 0 && e.error().is_ok() => Some(o),
                    _ => None,
                };
                ((e.topic().to_owned(), e.partition()), offset)
            })
            .collect())
    }

    /// Timestamps (ms since the epoch) of the first record at or after each wanted offset,
    /// fetched with a bounded wait; missing entries fall back to interpolation.
    fn first_unconsumed_timestamps(
        &self,
        wanted: &BTreeSet<(String, i32, i64)>,
    ) -> HashMap<(String, i32, i64), i64> {
        let mut found = HashMap::new();
        if wanted.is_empty() {
            return found;
        }
        // A partition can be assigned once per round; several groups at different positions
        // of one partition take several rounds, sharing one deadline.
        let mut rounds: Vec<BTreeMap<(String, i32), i64>> = Vec::new();
        for (topic, partition, offset) in wanted {
            let key = (topic.clone(), *partition);
            match rounds.iter_mut().find(|r| !r.contains_key(&key)) {
                Some(round) => {
                    round.insert(key, *offset);
                }
                None => rounds.push(BTreeMap::from([(key, *offset)])),
            }
        }
        let deadline = Instant::now() + self.config.probe_timeout;
        for round in rounds {
            let mut assignment = TopicPartitionList::new();
            for ((topic, partition), offset) in &round {
                if assignment
                    .add_partition_offset(topic, *partition, Offset::Offset(*offset))
                    .is_err()
                {
                    continue;
                }
            }
            if let Err(e) = self.probe.assign(&assignment) {
                tracing::debug!(error = %e, "cannot assign partitions to read record timestamps");
                break;
            }
            let mut missing: HashSet<(String, i32)> = round.keys().cloned().collect();
            while !missing.is_empty() {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                match self.probe.poll(left.min(Duration::from_millis(200))) {
                    Some(Ok(message)) => {
                        let key = (message.topic().to_owned(), message.partition());
                        let Some(&offset) = round.get(&key) else {
                            continue;
                        };
                        if message.offset() >= offset && missing.remove(&key) {
                            if let Some(ts) = message.timestamp().to_millis() {
                                found.insert((key.0, key.1, offset), ts);
                            }
                        }
                    }
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "fetching first unconsumed records");
                    }
                    None => {}
                }
            }
            let _ = self.probe.unassign();
        }
        found
    }
}

/// Who holds `topic`/`partition` according to a group's decoded assignments (`None`: the
/// group was not described), which is what tells STOP from STALL.
fn membership(
    assigned: Option<&HashMap<(String, i32), String>>,
    topic: &str,
    partition: i32,
) -> (Membership, Option<String>) {
    match assigned {
        None => (Membership::Unknown, None),
        Some(map) => match map.get(&(topic.to_owned(), partition)) {
            Some(client) => (Membership::Assigned, Some(client.clone())),
            None => (Membership::Unassigned, None),
        },
    }
}

/// Rolls the partitions up into the group's figures.
fn summarize(
    group: String,
    view: GroupView,
    topics: BTreeMap<String, u32>,
    partitions: Vec<PartitionLag>,
) -> GroupLag {
    let sum = |f: fn(&PartitionLag) -> Option<f64>| {
        let values: Vec<f64> = partitions.iter().filter_map(f).collect();
        (!values.is_empty()).then(|| values.iter().sum())
    };
    let lagging: Vec<&PartitionLag> = partitions.iter().filter(|p| p.lag > 0).collect();
    let time_to_drain_secs = if lagging.is_empty() {
        Some(0.0)
    } else {
        lagging
            .iter()
            .map(|p| p.time_to_drain_secs)
            .collect::<Option<Vec<f64>>>()
            .map(|v| v.into_iter().fold(0.0, f64::max))
    };
    GroupLag {
        status: group_status(partitions.iter().map(|p| p.status)),
        lag: partitions.iter().map(|p| p.lag).sum(),
        max_lag_seconds: partitions
            .iter()
            .filter_map(|p| p.lag_seconds)
            .reduce(f64::max),
        production_rate: sum(|p| p.production_rate),
        consumption_rate: sum(|p| p.consumption_rate),
        time_to_drain_secs,
        partition_count: topics.values().sum(),
        topics,
        group,
        state: view.state,
        members: view.members,
        partitions,
    }
}

/// Decodes a member's assignment in Kafka's consumer protocol (`ConsumerProtocolAssignment`,
/// versions 0–3 share this prefix): version i16, then topics as
/// [i32 count]{i16-length name, [i32 count]{i32 partition}}, then user data we ignore.
/// `None` if the bytes are not that shape.
pub fn decode_assignment(bytes: &[u8]) -> Option<Vec<(String, i32)>> {
    let mut r = Reader { bytes, at: 0 };
    let version = r.i16()?;
    if version < 0 {
        return None;
    }
    let topics = r.i32()?;
    let mut out = Vec::new();
    for _ in 0..topics.max(0) {
        let len = usize::try_from(r.i16()?).ok()?;
        let name = std::str::from_utf8(r.take(len)?).ok()?.to_owned();
        let count = r.i32()?;
        for _ in 0..count.max(0) {
            out.push((name.clone(), r.i32()?));
        }
    }
    Some(out)
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let slice = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(slice)
    }
    fn i16(&mut self) -> Option<i16> {
        Some(i16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }
    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The autoscaler and `--serve` run the collector on their own threads.
    #[test]
    fn collector_moves_between_threads() {
        fn send<T: Send>() {}
        send::<LagCollector>();
        send::<GroupLag>();
    }

    #[test]
    fn membership_tells_stop_from_stall() {
        let map = HashMap::from([(("t".to_owned(), 0), "worker-1".to_owned())]);
        assert_eq!(
            membership(Some(&map), "t", 0),
            (Membership::Assigned, Some("worker-1".to_owned()))
        );
        assert_eq!(
            membership(Some(&map), "t", 1),
            (Membership::Unassigned, None)
        );
        assert_eq!(membership(None, "t", 0), (Membership::Unknown, None));
        // Unassigned and frozen with lag is STOP; the same window with a holder is STALL.
        let mut window = PartitionWindow::new(3).unwrap();
        for t in [0.0, 1.0] {
            window
                .push(Sample {
                    time_secs: t,
                    committed: Some(1),
                    start: 0,
                    end: 5,
                })
                .unwrap();
        }
        let judge = |p| {
            window
                .assess(membership(Some(&map), "t", p).0)
                .unwrap()
                .status
        };
        assert_eq!((judge(0), judge(1)), (Status::Stall, Status::Stop));
    }

    #[test]
    fn decodes_consumer_protocol_assignment() {
        let mut b = vec![0, 1, 0, 0, 0, 2];
        for (name, parts) in [("ab", &[0i32, 3][..]), ("c", &[7][..])] {
            b.extend((name.len() as i16).to_be_bytes());
            b.extend(name.as_bytes());
            b.extend((parts.len() as i32).to_be_bytes());
            for p in parts {
                b.extend(p.to_be_bytes());
            }
        }
        b.extend((-1i32).to_be_bytes()); // null user data
        assert_eq!(
            decode_assignment(&b).unwrap(),
            vec![("ab".into(), 0), ("ab".into(), 3), ("c".into(), 7)]
        );
        assert_eq!(decode_assignment(&b[..9]), None);
        assert_eq!(decode_assignment(&[]), None);
    }
}
