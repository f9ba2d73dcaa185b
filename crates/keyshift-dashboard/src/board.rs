//! The dashboard's state: readings in, a [`Snapshot`] and history out. No I/O here — the
//! runtime ([`crate::server`]) feeds [`Board::update`] with the latest Kafka reading, the
//! scrapes of this round and the fences read since the last one, and sends what comes back.
//!
//! What the board derives:
//! - per-partition produce rates from end offsets over a short window (a few readings), the
//!   lower bound of the hottest partition `max(mean, hottest key)` — no placement can put
//!   less than the mean on its busiest partition, nor split a key — and per-group lag, time to
//!   drain and owner straight from `keyshift lag`'s collector;
//! - rates of scraped counters (delta over the time between two scrapes; a reset counts 0);
//! - hot keys from the gateways' and proxies' top-k, with home partition (Kafka's hash), the
//!   partition the last fence sent them to, and how many fences were seen for them;
//! - events: key moves (fences), autoscaler decisions (desired replicas changed), targets
//!   going down or up; kept for the history window, newest last, capped in number;
//! - a [`Point`] of aggregates per round for the charts over time, kept for the history
//!   window.
//!
//! A board can be [`retarget`](Board::retarget)ed to another topic (`keyshift experiment
//! --dashboard` moves it to each run's fresh topic): what belongs to the old topic (the rate
//! window, keys' moves) is dropped, while the history and the timeline run on, so the runs
//! can be compared on the same charts; a `run` event marks where each began.

use std::collections::{BTreeMap, HashMap, VecDeque};

use keyshift_core::hash::Hasher;
use serde::Serialize;

use crate::kafka::{FenceEvent, KafkaReading};
use crate::prom::Samples;
use crate::scrape::{Kind, Scrape};

/// Readings the partition rates are computed over (at the default 1 s interval: 4 s).
const RATE_WINDOW: usize = 5;
/// Events kept at most, whatever the history window.
const MAX_EVENTS: usize = 1000;
/// Keys whose moves are remembered at most (the oldest entry is dropped beyond).
const MAX_KEYS: usize = 10_000;

/// Options of a [`Board`].
#[derive(Debug, Clone)]
pub struct BoardConfig {
    /// The topic shown.
    pub topic: String,
    /// Seconds of history kept.
    pub history_secs: f64,
    /// Hot keys shown.
    pub hot_keys: usize,
}

/// Whether a source answers, and why not.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Health {
    /// True if the last attempt succeeded.
    pub up: bool,
    /// The last error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One scraped target.
#[derive(Debug, Clone, Serialize)]
pub struct TargetView {
    /// The URL as given.
    pub url: String,
    /// What it was recognised as.
    pub kind: Kind,
    /// Whether the last scrape worked.
    #[serde(flatten)]
    pub health: Health,
}

/// One group's view of one partition.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionLagView {
    /// The group.
    pub group: String,
    /// Lag in records.
    pub lag: i64,
    /// Lag in seconds, if known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lag_s: Option<f64>,
    /// Time to drain at current rates; `None` if not draining.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drain_s: Option<f64>,
    /// Burrow-style status.
    pub status: &'static str,
    /// Member (client id) owning the partition, if the cluster says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// One partition.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionView {
    /// Partition number.
    pub p: u32,
    /// Records per second appended, over the last few readings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// End offset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end: Option<i64>,
    /// Records the scraped producers (gateways) sent to it, summed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub produced: Option<u64>,
    /// Lag per group.
    pub lag: Vec<PartitionLagView>,
}

/// The lower bound on the busiest partition's rate.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Bound {
    /// Total rate / partitions.
    pub mean: f64,
    /// The hottest key's rate, if a gateway or proxy reports hot keys.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hottest_key: Option<f64>,
    /// max(mean, hottest key).
    pub bound: f64,
    /// The busiest partition's rate.
    pub hottest_partition: f64,
}

/// One hot key.
#[derive(Debug, Clone, Serialize)]
pub struct HotKey {
    /// The key (as the exporter labels it).
    pub key: String,
    /// Decayed rate, records per second.
    pub rate: f64,
    /// Estimated records since the exporter started.
    pub records: f64,
    /// Home partition (Kafka's default hash); `None` for a key cut by the exporter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub home: Option<u32>,
    /// The partition the last fence seen sent it to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current: Option<u32>,
    /// Fences seen for it.
    pub moves: u64,
    /// The exporter (gateway or proxy URL).
    pub source: String,
}

/// One worker.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ConsumerView {
    /// Its /metrics URL.
    pub url: String,
    /// Whether it answers.
    pub up: bool,
    /// Partitions assigned.
    pub owned: f64,
    /// Records processed per second.
    pub rate: f64,
    /// Records parked behind a migration barrier now.
    pub parked: f64,
    /// Records consumed, not yet processed.
    pub pending: f64,
    /// Fences passed per second.
    pub fences_rate: f64,
    /// Rebalances since start.
    pub rebalances: f64,
    /// Median park time, seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub park_p50: Option<f64>,
    /// 99th percentile park time, seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub park_p99: Option<f64>,
    /// Order violations seen (must stay 0).
    pub violations: f64,
}

/// One gateway's producer.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProducerView {
    /// Its /metrics URL.
    pub url: String,
    /// Whether it answers.
    pub up: bool,
    /// Partitioning strategy.
    pub strategy: String,
    /// Records per second.
    pub rate: f64,
    /// Moves decided since start.
    pub moves: f64,
    /// Fences written.
    pub fences: f64,
    /// Completed migrations.
    pub migrations: f64,
    /// Failed fence attempts.
    pub fence_failures: f64,
    /// Records held behind fences now.
    pub held: f64,
    /// Keys away from home or moving.
    pub routed_keys: f64,
    /// Median fence round trip, seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fence_rtt_p50: Option<f64>,
}

/// One autoscaler.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AutoscalerView {
    /// Its /metrics URL.
    pub url: String,
    /// Whether it answers.
    pub up: bool,
    /// The group it scales.
    pub group: String,
    /// Whether its last lag collection worked.
    pub kafka_up: bool,
    /// Replicas wanted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub desired: Option<f64>,
    /// Replicas it started from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current: Option<f64>,
    /// Lag (records) it decided on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lag: Option<f64>,
    /// Lag (seconds) it decided on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lag_s: Option<f64>,
    /// Scale-ups since start.
    pub ups: f64,
    /// Scale-downs since start.
    pub downs: f64,
}

/// A rate by label value.
#[derive(Debug, Clone, Serialize)]
pub struct Labeled {
    /// The label value.
    pub name: String,
    /// Per second.
    pub rate: f64,
}

/// One proxy.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProxyView {
    /// Its /metrics URL.
    pub url: String,
    /// Whether it answers.
    pub up: bool,
    /// Requests per second by API, busiest first.
    pub apis: Vec<Labeled>,
    /// Requests per second by client id, busiest first.
    pub clients: Vec<Labeled>,
    /// Error codes in responses per second.
    pub errors_rate: f64,
}

/// One consumer group.
#[derive(Debug, Clone, Serialize)]
pub struct GroupView {
    /// Group id.
    pub group: String,
    /// Coordinator's state.
    pub state: String,
    /// Members, if described.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub members: Option<usize>,
    /// Rolled-up status.
    pub status: &'static str,
    /// Total lag, records.
    pub lag: i64,
    /// Largest lag, seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lag_s: Option<f64>,
    /// Time to drain, seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drain_s: Option<f64>,
    /// Consumption rate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
}

/// Everything the page shows now.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Snapshot {
    /// Update number (1 for the first).
    pub seq: u64,
    /// When (Unix seconds).
    pub t: f64,
    /// The topic.
    pub topic: String,
    /// What the topic is, when the dashboard follows a workload through several topics
    /// (`keyshift experiment --dashboard`: the strategy and the run number).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    /// The cluster.
    pub kafka: Health,
    /// The fence tail.
    pub fences: Health,
    /// Scrape targets.
    pub targets: Vec<TargetView>,
    /// Partitions.
    pub partitions: Vec<PartitionView>,
    /// The busiest partition's lower bound.
    pub bound: Bound,
    /// Groups.
    pub groups: Vec<GroupView>,
    /// Hot keys, hottest first.
    pub hot_keys: Vec<HotKey>,
    /// Workers.
    pub consumers: Vec<ConsumerView>,
    /// Gateways.
    pub producers: Vec<ProducerView>,
    /// Autoscalers.
    pub autoscalers: Vec<AutoscalerView>,
    /// Proxies.
    pub proxies: Vec<ProxyView>,
}

/// Aggregates of one round, for the charts over time.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Point {
    /// When (Unix seconds).
    pub t: f64,
    /// Total produce rate.
    pub rate: f64,
    /// Busiest partition's rate.
    pub hottest: f64,
    /// Its lower bound.
    pub bound: f64,
    /// Total lag of the groups, records.
    pub lag: i64,
    /// Largest lag, seconds.
    pub lag_s: f64,
    /// Moves (fences) seen since the dashboard started.
    pub moves: u64,
    /// Records parked in workers now.
    pub parked: f64,
    /// Records processed per second by workers.
    pub processed: f64,
    /// Replicas the autoscalers want (summed), if any reports.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub desired: Option<f64>,
}

/// Something that happened.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Event {
    /// A key moved (a fence record was read).
    Move {
        /// Fence timestamp.
        t: f64,
        /// The key.
        key: String,
        /// Old partition (where the fence is).
        from: u32,
        /// New partition, if the header decoded.
        #[serde(skip_serializing_if = "Option::is_none")]
        to: Option<u32>,
        /// Set index (moves of this key so far).
        #[serde(skip_serializing_if = "Option::is_none")]
        set: Option<u32>,
        /// Offset of the fence.
        offset: i64,
        /// The old partition's rate over its bound when the fence was read (why a strategy
        /// moves a key off it).
        #[serde(skip_serializing_if = "Option::is_none")]
        from_load: Option<f64>,
        /// The key's rate at the time, if it is a reported hot key.
        #[serde(skip_serializing_if = "Option::is_none")]
        key_rate: Option<f64>,
    },
    /// An autoscaler changed its desired replica count.
    Scale {
        /// When it was seen.
        t: f64,
        /// The autoscaler.
        url: String,
        /// Its group.
        group: String,
        /// Previous desired replicas.
        from: f64,
        /// New desired replicas.
        to: f64,
        /// Lag it decided on, records.
        #[serde(skip_serializing_if = "Option::is_none")]
        lag: Option<f64>,
        /// Lag it decided on, seconds.
        #[serde(skip_serializing_if = "Option::is_none")]
        lag_s: Option<f64>,
    },
    /// The board moved to another topic ([`Board::retarget`]).
    Run {
        /// When.
        t: f64,
        /// What the new topic is (e.g. "run 2/2: keyshift").
        label: String,
        /// The new topic.
        topic: String,
    },
    /// A source went down or came back.
    Health {
        /// When.
        t: f64,
        /// "kafka" or the target URL.
        source: String,
        /// Up now?
        up: bool,
        /// Why not.
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
}

/// What one round produced: sent to every open page.
#[derive(Debug, Clone, Serialize)]
pub struct Update {
    /// The state now.
    pub snapshot: Snapshot,
    /// This round's aggregates.
    pub point: Point,
    /// Events new this round.
    pub events: Vec<Event>,
}

/// Rates of counters between consecutive scrapes.
#[derive(Debug, Default)]
struct CounterRates {
    last: HashMap<String, (f64, f64)>,
}

impl CounterRates {
    /// The rate of counter `id` given its value `v` at time `t`; `None` on its first sight.
    fn rate(&mut self, id: String, t: f64, v: f64) -> Option<f64> {
        let prev = self.last.insert(id, (t, v));
        let (t0, v0) = prev?;
        if t <= t0 {
            return None;
        }
        // A lower value is a restarted process: nothing is known about this interval.
        Some(if v >= v0 { (v - v0) / (t - t0) } else { 0.0 })
    }
}

/// The dashboard's state; see the [module docs](self).
#[derive(Debug)]
pub struct Board {
    config: BoardConfig,
    seq: u64,
    /// End offsets of the last few readings, oldest first.
    ends: VecDeque<(f64, Vec<i64>)>,
    counters: CounterRates,
    /// Key → (fences seen, partition the last one sent it to).
    keys: HashMap<String, (u64, Option<u32>)>,
    key_order: VecDeque<String>,
    moves: u64,
    desired: HashMap<String, f64>,
    health: BTreeMap<String, bool>,
    history: VecDeque<Point>,
    events: VecDeque<Event>,
    /// Events that happened between rounds (a retarget), sent with the next update.
    pending: Vec<Event>,
    /// The label of the current topic, if the board was retargeted.
    run: Option<String>,
    last: Snapshot,
}

impl Board {
    /// An empty board.
    pub fn new(config: BoardConfig) -> Self {
        let last = Snapshot {
            topic: config.topic.clone(),
            ..Snapshot::default()
        };
        Board {
            config,
            seq: 0,
            ends: VecDeque::new(),
            counters: CounterRates::default(),
            keys: HashMap::new(),
            key_order: VecDeque::new(),
            moves: 0,
            desired: HashMap::new(),
            health: BTreeMap::new(),
            history: VecDeque::new(),
            events: VecDeque::new(),
            pending: Vec::new(),
            run: None,
            last,
        }
    }

    /// Shows `topic` from now on, labelled `label`. The rate window and the keys' moves
    /// belong to the old topic and are dropped (end offsets of two topics do not subtract);
    /// history, events and the scraped counters carry on. The current snapshot says the new
    /// topic at once, with no partitions until the next reading.
    pub fn retarget(&mut self, now: f64, label: String, topic: String) {
        self.config.topic = topic.clone();
        self.ends.clear();
        self.keys.clear();
        self.key_order.clear();
        self.last.topic = topic.clone();
        self.last.run = Some(label.clone());
        self.last.partitions.clear();
        self.last.groups.clear();
        self.last.bound = Bound::default();
        self.run = Some(label.clone());
        let event = Event::Run {
            t: now,
            label,
            topic,
        };
        self.events.push_back(event.clone());
        self.pending.push(event);
    }

    /// The latest snapshot.
    pub fn snapshot(&self) -> &Snapshot {
        &self.last
    }

    /// The points of the history window, oldest first.
    pub fn history(&self) -> &VecDeque<Point> {
        &self.history
    }

    /// The events of the history window, oldest first.
    pub fn events(&self) -> &VecDeque<Event> {
        &self.events
    }

    /// One round: `now` (Unix seconds), the latest Kafka reading (`None` before the first),
    /// the fence tail's error, this round's scrapes and the fences read since the last round.
    pub fn update(
        &mut self,
        now: f64,
        kafka: Option<&KafkaReading>,
        fence_error: Option<String>,
        scrapes: &[Scrape],
        fences: Vec<FenceEvent>,
    ) -> Update {
        self.seq += 1;
        // Already in `self.events`; sent to the pages with this update.
        let pending = std::mem::take(&mut self.pending);
        let mut new_events = Vec::new();
        let mut snap = Snapshot {
            seq: self.seq,
            t: now,
            topic: self.config.topic.clone(),
            run: self.run.clone(),
            fences: Health {
                up: fence_error.is_none(),
                error: fence_error,
            },
            ..Snapshot::default()
        };

        // Kafka: partitions, rates, lag.
        snap.kafka = match kafka {
            None => Health {
                up: false,
                error: Some("no reading yet".into()),
            },
            Some(r) => match (&r.end_offsets, &r.groups) {
                (Err(e), _) | (_, Err(e)) => Health {
                    up: false,
                    error: Some(e.clone()),
                },
                _ => Health {
                    up: true,
                    error: None,
                },
            },
        };
        // No reading yet (start-up, or just retargeted) is not a change of health.
        if kafka.is_some() {
            self.track_health(now, "kafka", &snap.kafka, &mut new_events);
        }
        let rates = match kafka {
            Some(KafkaReading {
                at,
                end_offsets: Ok(ends),
                ..
            }) => self.partition_rates(*at, ends),
            _ => None,
        };
        let ends = self.ends.back().map(|(_, e)| e.clone()).unwrap_or_default();
        snap.partitions = ends
            .iter()
            .enumerate()
            .map(|(p, end)| PartitionView {
                p: p as u32,
                rate: rates.as_ref().and_then(|r| r.get(p).copied()).map(round2),
                end: Some(*end),
                produced: None,
                lag: Vec::new(),
            })
            .collect();
        if let Some(KafkaReading {
            groups: Ok(groups), ..
        }) = kafka
        {
            for g in groups {
                snap.groups.push(GroupView {
                    group: g.group.clone(),
                    state: g.state.clone(),
                    members: g.members,
                    status: g.status.as_str(),
                    lag: g.lag,
                    lag_s: g.max_lag_seconds.map(round2),
                    drain_s: g.time_to_drain_secs.map(round2),
                    rate: g.consumption_rate.map(round2),
                });
                for pl in g.topic_partitions(&self.config.topic) {
                    if let Some(view) = snap.partitions.get_mut(pl.partition.max(0) as usize) {
                        view.lag.push(PartitionLagView {
                            group: g.group.clone(),
                            lag: pl.lag,
                            lag_s: pl.lag_seconds.map(round2),
                            drain_s: pl.time_to_drain_secs.map(round2),
                            status: pl.status.as_str(),
                            owner: pl.member.clone(),
                        });
                    }
                }
            }
        }

        // Scrapes.
        let mut hot: Vec<HotKey> = Vec::new();
        let partitions = snap.partitions.len() as u32;
        for s in scrapes {
            let health = Health {
                up: s.result.is_ok(),
                error: s.result.as_ref().err().cloned(),
            };
            self.track_health(now, &s.url, &health, &mut new_events);
            let samples = s.result.as_ref().ok();
            let kind = samples.map_or(Kind::Unknown, Kind::of);
            snap.targets.push(TargetView {
                url: s.url.clone(),
                kind,
                health,
            });
            let Some(m) = samples else { continue };
            match kind {
                Kind::Gateway => {
                    snap.producers.push(self.producer(now, &s.url, m));
                    for sample in m.series("keyshift_producer_partition_records_total") {
                        let p = sample
                            .label("partition")
                            .and_then(|p| p.parse::<usize>().ok());
                        if let Some(view) = p.and_then(|p| snap.partitions.get_mut(p)) {
                            *view.produced.get_or_insert(0) += sample.value as u64;
                        }
                    }
                    self.hot_keys(m, "keyshift_gateway", None, &s.url, partitions, &mut hot);
                }
                Kind::Proxy => {
                    snap.proxies.push(self.proxy(now, &s.url, m));
                    let topic = self.config.topic.clone();
                    self.hot_keys(
                        m,
                        "keyshift_proxy",
                        Some(&topic),
                        &s.url,
                        partitions,
                        &mut hot,
                    );
                }
                Kind::Worker => snap.consumers.push(self.consumer(now, &s.url, m)),
                Kind::Autoscaler => {
                    let a = autoscaler(&s.url, m);
                    if let Some(to) = a.desired {
                        if let Some(from) = self.desired.insert(s.url.clone(), to) {
                            if from != to {
                                new_events.push(Event::Scale {
                                    t: now,
                                    url: s.url.clone(),
                                    group: a.group.clone(),
                                    from,
                                    to,
                                    lag: a.lag,
                                    lag_s: a.lag_s,
                                });
                            }
                        }
                    }
                    snap.autoscalers.push(a);
                }
                Kind::Lag | Kind::Unknown => {}
            }
        }
        // Targets that are down still get a row in their view if they were seen before.
        hot.sort_by(|a, b| b.rate.total_cmp(&a.rate));
        hot.truncate(self.config.hot_keys);

        // Bound.
        let total: f64 = snap.partitions.iter().filter_map(|p| p.rate).sum();
        let hottest_partition = snap
            .partitions
            .iter()
            .filter_map(|p| p.rate)
            .fold(0.0, f64::max);
        let mean = if snap.partitions.is_empty() {
            0.0
        } else {
            total / snap.partitions.len() as f64
        };
        let hottest_key = hot.iter().map(|h| h.rate).reduce(f64::max);
        snap.bound = Bound {
            mean: round2(mean),
            hottest_key: hottest_key.map(round2),
            bound: round2(mean.max(hottest_key.unwrap_or(0.0))),
            hottest_partition: round2(hottest_partition),
        };

        // Fences → moves.
        for f in fences {
            self.moves += 1;
            let entry = self.remember(&f.key);
            entry.0 += 1;
            if f.to.is_some() {
                entry.1 = f.to;
            }
            let from_rate = snap.partitions.get(f.from as usize).and_then(|p| p.rate);
            new_events.push(Event::Move {
                t: f.at,
                key: f.key.clone(),
                from: f.from,
                to: f.to,
                set: f.set_index,
                offset: f.offset,
                from_load: from_rate
                    .filter(|_| snap.bound.bound > 0.0)
                    .map(|r| round2(r / snap.bound.bound)),
                key_rate: hot.iter().find(|h| h.key == f.key).map(|h| h.rate),
            });
        }
        for h in &mut hot {
            if let Some((moves, current)) = self.keys.get(&h.key) {
                h.moves = *moves;
                h.current = *current;
            }
        }
        snap.hot_keys = hot;

        let point = Point {
            t: now,
            rate: round2(total),
            hottest: round2(hottest_partition),
            bound: snap.bound.bound,
            lag: snap.groups.iter().map(|g| g.lag).sum(),
            lag_s: snap
                .groups
                .iter()
                .filter_map(|g| g.lag_s)
                .fold(0.0, f64::max),
            moves: self.moves,
            parked: snap.consumers.iter().map(|c| c.parked).sum(),
            processed: round2(snap.consumers.iter().map(|c| c.rate).sum()),
            desired: snap
                .autoscalers
                .iter()
                .filter_map(|a| a.desired)
                .reduce(|a, b| a + b),
        };
        self.history.push_back(point.clone());
        self.events.extend(new_events.iter().cloned());
        let oldest = now - self.config.history_secs;
        while self.history.front().is_some_and(|p| p.t < oldest) {
            self.history.pop_front();
        }
        while self.events.len() > MAX_EVENTS
            || self.events.front().is_some_and(|e| event_time(e) < oldest)
        {
            self.events.pop_front();
        }
        self.last = snap.clone();
        let mut events = pending;
        events.extend(new_events);
        Update {
            snapshot: snap,
            point,
            events,
        }
    }

    /// Adds a reading of end offsets and returns each partition's rate over the window.
    fn partition_rates(&mut self, at: f64, ends: &[i64]) -> Option<Vec<f64>> {
        if self.ends.back().is_some_and(|(_, e)| e.len() != ends.len()) {
            // The topic grew: earlier readings do not line up.
            self.ends.clear();
        }
        if self.ends.back().is_none_or(|(t, _)| *t < at) {
            self.ends.push_back((at, ends.to_vec()));
        }
        while self.ends.len() > RATE_WINDOW {
            self.ends.pop_front();
        }
        let (t0, first) = self.ends.front()?;
        let (t1, last) = self.ends.back()?;
        if t1 <= t0 {
            return None;
        }
        Some(
            first
                .iter()
                .zip(last)
                .map(|(a, b)| (b - a).max(0) as f64 / (t1 - t0))
                .collect(),
        )
    }

    fn remember(&mut self, key: &str) -> &mut (u64, Option<u32>) {
        if !self.keys.contains_key(key) {
            if self.keys.len() >= MAX_KEYS {
                if let Some(old) = self.key_order.pop_front() {
                    self.keys.remove(&old);
                }
            }
            self.key_order.push_back(key.to_owned());
        }
        self.keys.entry(key.to_owned()).or_insert((0, None))
    }

    fn track_health(&mut self, now: f64, source: &str, h: &Health, events: &mut Vec<Event>) {
        let before = self.health.insert(source.to_owned(), h.up);
        // The first sight of a healthy source is not news; every change, and a source that
        // starts out down, is.
        if before != Some(h.up) && !(before.is_none() && h.up) {
            events.push(Event::Health {
                t: now,
                source: source.to_owned(),
                up: h.up,
                error: h.error.clone(),
            });
        }
    }

    fn rate(&mut self, now: f64, url: &str, series: &str, v: Option<f64>) -> f64 {
        v.and_then(|v| self.counters.rate(format!("{url} {series}"), now, v))
            .map_or(0.0, round2)
    }

    fn producer(&mut self, now: f64, url: &str, m: &Samples) -> ProducerView {
        let records = m.value("keyshift_producer_records_total");
        ProducerView {
            url: url.to_owned(),
            up: true,
            strategy: m
                .series("keyshift_producer_info")
                .next()
                .and_then(|s| s.label("strategy"))
                .unwrap_or("?")
                .to_owned(),
            rate: self.rate(now, url, "records", records),
            moves: m.value("keyshift_producer_moves_total").unwrap_or(0.0),
            fences: m.value("keyshift_producer_fences_total").unwrap_or(0.0),
            migrations: m.value("keyshift_producer_migrations_total").unwrap_or(0.0),
            fence_failures: m
                .value("keyshift_producer_fence_failures_total")
                .unwrap_or(0.0),
            held: m.value("keyshift_producer_held_now_records").unwrap_or(0.0),
            routed_keys: m.value("keyshift_producer_routed_keys").unwrap_or(0.0),
            fence_rtt_p50: m
                .series("keyshift_producer_fence_rtt_seconds")
                .find(|s| s.label("quantile") == Some("0.5"))
                .map(|s| s.value),
        }
    }

    fn consumer(&mut self, now: f64, url: &str, m: &Samples) -> ConsumerView {
        let processed = m.value("keyshift_worker_processed_records_total");
        let fences = m.value("keyshift_worker_fences_total");
        ConsumerView {
            url: url.to_owned(),
            up: true,
            owned: m.value("keyshift_worker_owned_partitions").unwrap_or(0.0),
            rate: self.rate(now, url, "processed", processed),
            parked: m.value("keyshift_worker_parked_now_records").unwrap_or(0.0),
            pending: m.value("keyshift_worker_pending_records").unwrap_or(0.0),
            fences_rate: self.rate(now, url, "fences", fences),
            rebalances: m.value("keyshift_worker_rebalances_total").unwrap_or(0.0),
            park_p50: m.histogram_quantile("keyshift_worker_park_time_seconds", 0.5),
            park_p99: m.histogram_quantile("keyshift_worker_park_time_seconds", 0.99),
            violations: m
                .value("keyshift_worker_order_violations_total")
                .unwrap_or(0.0),
        }
    }

    fn proxy(&mut self, now: f64, url: &str, m: &Samples) -> ProxyView {
        let mut apis: BTreeMap<String, f64> = BTreeMap::new();
        let mut clients: BTreeMap<String, f64> = BTreeMap::new();
        let series: Vec<_> = m.series("keyshift_proxy_requests_total").cloned().collect();
        for s in series {
            let api = s.label("api").unwrap_or("?").to_owned();
            let client = s.label("client_id").unwrap_or("?").to_owned();
            let id = format!("requests {:?}", s.labels);
            let r = self.rate(now, url, &id, Some(s.value));
            *apis.entry(api).or_default() += r;
            *clients.entry(client).or_default() += r;
        }
        let errors = m.sum("keyshift_proxy_response_errors_total");
        let sorted = |map: BTreeMap<String, f64>| {
            let mut v: Vec<Labeled> = map
                .into_iter()
                .map(|(name, rate)| Labeled {
                    name,
                    rate: round2(rate),
                })
                .collect();
            v.sort_by(|a, b| b.rate.total_cmp(&a.rate));
            v.truncate(20);
            v
        };
        ProxyView {
            url: url.to_owned(),
            up: true,
            apis: sorted(apis),
            clients: sorted(clients),
            errors_rate: self.rate(now, url, "errors", errors),
        }
    }

    fn hot_keys(
        &self,
        m: &Samples,
        prefix: &str,
        topic: Option<&str>,
        url: &str,
        partitions: u32,
        out: &mut Vec<HotKey>,
    ) {
        let rate_name = format!("{prefix}_hot_key_rate");
        let records_name = format!("{prefix}_hot_key_records");
        let in_topic = |s: &&crate::prom::Sample| topic.is_none_or(|t| s.label("topic") == Some(t));
        for s in m.series(&rate_name).filter(in_topic) {
            let Some(key) = s.label("key") else { continue };
            let records = m
                .series(&records_name)
                .filter(in_topic)
                .find(|r| r.label("key") == Some(key))
                .map_or(0.0, |r| r.value);
            // The exporters cut long keys and mark them with '…': their hash is unknown.
            let home = (partitions > 0 && !key.ends_with('…'))
                .then(|| Hasher::Murmur2.partition(key.as_bytes(), partitions));
            out.push(HotKey {
                key: key.to_owned(),
                rate: round2(s.value),
                records,
                home,
                current: None,
                moves: 0,
                source: url.to_owned(),
            });
        }
    }
}

fn autoscaler(url: &str, m: &Samples) -> AutoscalerView {
    let group = m
        .series("keyshift_autoscale_evaluations_total")
        .next()
        .and_then(|s| s.label("group"))
        .unwrap_or("?")
        .to_owned();
    AutoscalerView {
        url: url.to_owned(),
        up: true,
        group,
        kafka_up: m.value("keyshift_autoscale_kafka_up") == Some(1.0),
        desired: m.value("keyshift_autoscale_desired_replicas"),
        current: m.value("keyshift_autoscale_current_replicas"),
        lag: m.value("keyshift_autoscale_lag_records"),
        lag_s: m.value("keyshift_autoscale_lag_seconds").map(round2),
        ups: m.value("keyshift_autoscale_scale_ups_total").unwrap_or(0.0),
        downs: m
            .value("keyshift_autoscale_scale_downs_total")
            .unwrap_or(0.0),
    }
}

fn event_time(e: &Event) -> f64 {
    match e {
        Event::Move { t, .. }
        | Event::Scale { t, .. }
        | Event::Health { t, .. }
        | Event::Run { t, .. } => *t,
    }
}

/// Two decimals: keeps an update small without losing anything a chart shows.
fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prom;

    fn board() -> Board {
        Board::new(BoardConfig {
            topic: "t".into(),
            history_secs: 10.0,
            hot_keys: 2,
        })
    }

    fn reading(at: f64, ends: Vec<i64>) -> KafkaReading {
        KafkaReading {
            at,
            end_offsets: Ok(ends),
            groups: Ok(Vec::new()),
        }
    }

    fn scrape(url: &str, body: &str) -> Scrape {
        Scrape {
            url: url.into(),
            result: Ok(Samples::from(prom::parse(body).unwrap())),
        }
    }

    #[test]
    fn partition_rates_bound_and_hot_keys() {
        let mut b = board();
        let gw = "keyshift_gateway_records_total 1\n\
                  keyshift_producer_partition_records_total{partition=\"0\"} 7\n\
                  keyshift_producer_partition_records_total{partition=\"1\"} 5\n\
                  keyshift_gateway_hot_key_rate{key=\"a\"} 90\n\
                  keyshift_gateway_hot_key_records{key=\"a\"} 900\n\
                  keyshift_gateway_hot_key_rate{key=\"b\"} 30\n\
                  keyshift_gateway_hot_key_rate{key=\"c\"} 10\n";
        let scrapes = [scrape("http://g/metrics", gw)];
        b.update(
            100.0,
            Some(&reading(100.0, vec![0, 0])),
            None,
            &scrapes,
            vec![],
        );
        let u = b.update(
            101.0,
            Some(&reading(102.0, vec![100, 20])),
            None,
            &scrapes,
            vec![FenceEvent {
                at: 101.5,
                key: "a".into(),
                from: 0,
                to: Some(1),
                set_index: Some(1),
                offset: 99,
            }],
        );
        let s = &u.snapshot;
        assert_eq!(s.partitions[0].rate, Some(50.0));
        assert_eq!(s.partitions[1].rate, Some(10.0));
        assert_eq!(s.partitions[0].produced, Some(7));
        // mean 30, hottest key 90: the bound is the key.
        assert_eq!(s.bound.mean, 30.0);
        assert_eq!(s.bound.bound, 90.0);
        assert_eq!(s.hot_keys.len(), 2, "top 2 only");
        let a = &s.hot_keys[0];
        assert_eq!(
            (a.key.as_str(), a.records, a.moves, a.current),
            ("a", 900.0, 1, Some(1))
        );
        assert_eq!(a.home, Some(Hasher::Murmur2.partition(b"a", 2)));
        match &u.events[0] {
            Event::Move {
                key,
                from,
                to,
                from_load,
                key_rate,
                ..
            } => {
                assert_eq!((key.as_str(), *from, *to), ("a", 0, Some(1)));
                assert_eq!(*from_load, Some(round2(50.0 / 90.0)));
                assert_eq!(*key_rate, Some(90.0));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(u.point.moves, 1);
    }

    #[test]
    fn unreachable_sources_are_events_and_the_rest_still_works() {
        let mut b = board();
        let down = Scrape {
            url: "http://w/metrics".into(),
            result: Err("unreachable: connection refused".into()),
        };
        let worker = scrape(
            "http://w2/metrics",
            "keyshift_worker_processed_records_total 10\nkeyshift_worker_owned_partitions 2\n",
        );
        let bad = KafkaReading {
            at: 1.0,
            end_offsets: Err("reading end offsets failed".into()),
            groups: Ok(Vec::new()),
        };
        let u = b.update(1.0, Some(&bad), None, &[down, worker.clone()], vec![]);
        assert!(!u.snapshot.kafka.up);
        assert!(!u.snapshot.targets[0].health.up);
        assert_eq!(u.snapshot.targets[1].kind, Kind::Worker);
        assert_eq!(u.snapshot.consumers[0].owned, 2.0);
        let downs: Vec<_> = u
            .events
            .iter()
            .filter(|e| matches!(e, Event::Health { up: false, .. }))
            .collect();
        assert_eq!(downs.len(), 2, "{:?}", u.events);
        // Next round the worker counted 20 more records in 2 s.
        let worker = scrape(
            "http://w2/metrics",
            "keyshift_worker_processed_records_total 30\n",
        );
        let u = b.update(3.0, Some(&reading(3.0, vec![1])), None, &[worker], vec![]);
        assert_eq!(u.snapshot.consumers[0].rate, 10.0);
        assert!(u.snapshot.kafka.up);
        assert!(
            matches!(&u.events[0], Event::Health { up: true, source, .. } if source == "kafka")
        );
    }

    #[test]
    fn history_and_events_are_bounded_by_the_window() {
        let mut b = board();
        for i in 0..30 {
            let t = f64::from(i);
            b.update(
                t,
                Some(&reading(t, vec![i64::from(i)])),
                None,
                &[],
                vec![FenceEvent {
                    at: t,
                    key: format!("k{i}"),
                    from: 0,
                    to: Some(0),
                    set_index: None,
                    offset: 0,
                }],
            );
        }
        assert_eq!(b.history().len(), 11, "10 s window at 1 s");
        assert_eq!(b.events().len(), 11);
        assert_eq!(b.history().back().unwrap().moves, 30);
    }

    #[test]
    fn retarget_starts_the_rates_afresh_and_keeps_the_history() {
        let mut b = board();
        b.update(1.0, Some(&reading(1.0, vec![0, 0])), None, &[], vec![]);
        let u = b.update(2.0, Some(&reading(2.0, vec![100, 50])), None, &[], vec![]);
        assert_eq!(u.snapshot.partitions[0].rate, Some(100.0));
        assert_eq!(u.snapshot.run, None);

        b.retarget(2.5, "run 2/2: keyshift".into(), "t2".into());
        assert_eq!(
            b.snapshot().topic,
            "t2",
            "the snapshot names the new topic at once"
        );
        assert_eq!(b.snapshot().run.as_deref(), Some("run 2/2: keyshift"));
        // The new topic's offsets are lower than the old one's: no rate from subtracting them.
        let u = b.update(3.0, Some(&reading(3.0, vec![10, 0])), None, &[], vec![]);
        assert_eq!(u.snapshot.topic, "t2");
        assert_eq!(u.snapshot.run.as_deref(), Some("run 2/2: keyshift"));
        assert_eq!(
            u.snapshot.partitions[0].rate, None,
            "one reading of t2 only"
        );
        assert!(
            matches!(&u.events[0], Event::Run { label, topic, .. }
                if label == "run 2/2: keyshift" && topic == "t2"),
            "{:?}",
            u.events
        );
        let u = b.update(4.0, Some(&reading(4.0, vec![30, 5])), None, &[], vec![]);
        assert_eq!(u.snapshot.partitions[0].rate, Some(20.0));
        assert!(u.events.is_empty(), "the run event is sent once");
        assert_eq!(b.history().len(), 4, "history runs on across topics");
        assert!(b.events().iter().any(|e| matches!(e, Event::Run { .. })));
    }

    #[test]
    fn autoscaler_decisions_are_events() {
        let mut b = board();
        let a = |d: u32| {
            scrape(
                "http://a/metrics",
                &format!(
                    "keyshift_autoscale_desired_replicas{{group=\"g\"}} {d}\n\
                     keyshift_autoscale_lag_records{{group=\"g\"}} 500\n\
                     keyshift_autoscale_evaluations_total{{group=\"g\"}} 3\n"
                ),
            )
        };
        b.update(1.0, None, None, &[a(1)], vec![]);
        let u = b.update(2.0, None, None, &[a(3)], vec![]);
        let scale: Vec<_> = u
            .events
            .iter()
            .filter(|e| matches!(e, Event::Scale { .. }))
            .collect();
        assert_eq!(
            scale,
            vec![&Event::Scale {
                t: 2.0,
                url: "http://a/metrics".into(),
                group: "g".into(),
                from: 1.0,
                to: 3.0,
                lag: Some(500.0),
                lag_s: None
            }]
        );
        assert_eq!(u.point.desired, Some(3.0));
    }
}
