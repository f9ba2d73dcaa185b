//! What `keyshift lag --serve` exports: the latest collection, rendered at scrape time.
//!
//! kafka_exporter's names, with its labels, so existing dashboards and alerts keep working:
//! `kafka_consumergroup_current_offset`, `kafka_consumergroup_current_offset_sum`,
//! `kafka_consumergroup_lag`, `kafka_consumergroup_lag_sum`, `kafka_consumergroup_members`,
//! `kafka_topic_partitions`, `kafka_topic_partition_current_offset`,
//! `kafka_topic_partition_oldest_offset` (topics: those some reported group consumes).
//! Their values follow kafka_exporter's conventions too (its `kafka_exporter.go`, consumer
//! group loop), not keyshift's: a partition without a commit has current offset −1 and lag −1
//! and is left out of `lag_sum` (but its −1 is added to `current_offset_sum`, as there); a
//! group's topic with no commit in any partition gets no `kafka_consumergroup_*` series; a
//! partition whose end offset could not be read gets a current offset but no lag; lag is
//! end − committed, unclamped.
//!
//! keyshift's own, `keyshift_lag_*`: lag in records and seconds (with how the seconds were
//! obtained), rates, time to drain and Burrow status codes per partition and group, and the
//! health of the collection itself: `keyshift_lag_up` is 0 while the cluster cannot be read
//! (the per-group series are then absent rather than stale), with failures counted and the
//! time of the last success, so an outage is visible and its end needs no restart.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use keyshift_kafka::lag::{GroupLag, LagError};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

/// The latest collection and the collection's own health.
#[derive(Debug, Default)]
pub struct Snapshot {
    groups: Vec<GroupLag>,
    up: bool,
    collections: u64,
    failures: u64,
    last_success_secs: Option<f64>,
}

impl Snapshot {
    /// Records one collection's outcome at `at`.
    pub fn record(&mut self, result: Result<Vec<GroupLag>, LagError>, at: SystemTime) {
        self.collections += 1;
        match result {
            Ok(groups) => {
                self.groups = groups;
                self.up = true;
                self.last_success_secs =
                    at.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs_f64());
            }
            Err(_) => {
                self.groups.clear();
                self.up = false;
                self.failures += 1;
            }
        }
    }
}

/// The scrape-time collector over a shared [`Snapshot`].
#[derive(Debug)]
pub struct LagMetrics(Arc<Mutex<Snapshot>>);

impl LagMetrics {
    /// Exports `snapshot` on every scrape.
    pub fn new(snapshot: Arc<Mutex<Snapshot>>) -> Self {
        LagMetrics(snapshot)
    }
}

type Labels = Vec<(&'static str, String)>;

fn gauges(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: &[(Labels, f64)],
) -> std::fmt::Result {
    let mut family = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in samples {
        ConstGauge::new(*value).encode(family.encode_family(labels)?)?;
    }
    Ok(())
}

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> std::fmt::Result {
    let c = ConstCounter::new(value);
    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
}

fn single(e: &mut DescriptorEncoder, name: &str, help: &str, value: f64) -> std::fmt::Result {
    let g = ConstGauge::new(value);
    g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)
}

impl Collector for LagMetrics {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        single(
            &mut e,
            "keyshift_lag_up",
            "1 if the latest collection read the cluster, 0 if it failed",
            if s.up { 1.0 } else { 0.0 },
        )?;
        counter(
            &mut e,
            "keyshift_lag_collections",
            "Collections attempted",
            s.collections,
        )?;
        counter(
            &mut e,
            "keyshift_lag_collection_failures",
            "Collections that failed (cluster unreachable, request timed out, ...)",
            s.failures,
        )?;
        if let Some(t) = s.last_success_secs {
            single(
                &mut e,
                "keyshift_lag_last_success_timestamp_seconds",
                "Unix time of the latest successful collection",
                t,
            )?;
        }
        encode_groups(&mut e, &s.groups)
    }
}

fn part(group: &str, topic: &str, partition: i32) -> Labels {
    vec![
        ("consumergroup", group.to_owned()),
        ("topic", topic.to_owned()),
        ("partition", partition.to_string()),
    ]
}

fn ours(group: &str, topic: &str, partition: i32) -> Labels {
    vec![
        ("group", group.to_owned()),
        ("topic", topic.to_owned()),
        ("partition", partition.to_string()),
    ]
}

fn encode_groups(e: &mut DescriptorEncoder, groups: &[GroupLag]) -> std::fmt::Result {
    // kafka_exporter-compatible families.
    let mut current = Vec::new();
    let mut lag = Vec::new();
    let mut sums: BTreeMap<(String, String), (f64, f64)> = BTreeMap::new();
    let mut members = Vec::new();
    let mut topic_offsets: BTreeMap<(String, i32), (f64, f64)> = BTreeMap::new();
    let mut topic_partitions: BTreeMap<String, u32> = BTreeMap::new();
    for g in groups {
        if let Some(n) = g.members {
            members.push((vec![("consumergroup", g.group.clone())], n as f64));
        }
        topic_partitions.extend(g.topics.iter().map(|(t, n)| (t.clone(), *n)));
        // kafka_exporter skips a topic in which the group committed nothing.
        let consumed: BTreeSet<&str> = g
            .partitions
            .iter()
            .filter(|p| p.committed_offset.is_some())
            .map(|p| p.topic.as_str())
            .collect();
        for p in &g.partitions {
            if p.error.is_none() {
                topic_offsets.insert(
                    (p.topic.clone(), p.partition),
                    (p.end_offset as f64, p.start_offset as f64),
                );
            }
            if !consumed.contains(p.topic.as_str()) {
                continue;
            }
            // OffsetFetch's −1 for "no commit", exported and summed as it comes.
            let committed = p.committed_offset.unwrap_or(-1);
            current.push((part(&g.group, &p.topic, p.partition), committed as f64));
            let sum = sums.entry((g.group.clone(), p.topic.clone())).or_default();
            sum.0 += committed as f64;
            if p.error.is_some() {
                // The end offset is unknown: kafka_exporter logs it and exports no lag.
                continue;
            }
            let partition_lag = match p.committed_offset {
                None => -1,
                Some(c) => {
                    sum.1 += (p.end_offset - c) as f64;
                    p.end_offset - c
                }
            };
            lag.push((part(&g.group, &p.topic, p.partition), partition_lag as f64));
        }
    }
    let group_topic = |(g, t): &(String, String)| -> Labels {
        vec![("consumergroup", g.clone()), ("topic", t.clone())]
    };
    gauges(
        e,
        "kafka_consumergroup_current_offset",
        "Current Offset of a ConsumerGroup at Topic/Partition",
        &current,
    )?;
    gauges(
        e,
        "kafka_consumergroup_current_offset_sum",
        "Current Offset of a ConsumerGroup at Topic for all partitions",
        &sums
            .iter()
            .map(|(k, v)| (group_topic(k), v.0))
            .collect::<Vec<_>>(),
    )?;
    gauges(
        e,
        "kafka_consumergroup_lag",
        "Current Approximate Lag of a ConsumerGroup at Topic/Partition",
        &lag,
    )?;
    gauges(
        e,
        "kafka_consumergroup_lag_sum",
        "Current Approximate Lag of a ConsumerGroup at Topic for all partitions",
        &sums
            .iter()
            .map(|(k, v)| (group_topic(k), v.1))
            .collect::<Vec<_>>(),
    )?;
    gauges(
        e,
        "kafka_consumergroup_members",
        "Amount of members in a consumer group",
        &members,
    )?;
    gauges(
        e,
        "kafka_topic_partitions",
        "Number of partitions for this Topic",
        &topic_partitions
            .iter()
            .map(|(t, n)| (vec![("topic", t.clone())], *n as f64))
            .collect::<Vec<_>>(),
    )?;
    let tp = |(t, p): &(String, i32)| -> Labels {
        vec![("topic", t.clone()), ("partition", p.to_string())]
    };
    gauges(
        e,
        "kafka_topic_partition_current_offset",
        "Current Offset of a Broker at Topic/Partition",
        &topic_offsets
            .iter()
            .map(|(k, v)| (tp(k), v.0))
            .collect::<Vec<_>>(),
    )?;
    gauges(
        e,
        "kafka_topic_partition_oldest_offset",
        "Oldest Offset of a Broker at Topic/Partition",
        &topic_offsets
            .iter()
            .map(|(k, v)| (tp(k), v.1))
            .collect::<Vec<_>>(),
    )?;

    // keyshift's own, per partition.
    let per_partition = |f: &dyn Fn(&keyshift_kafka::lag::PartitionLag) -> Option<f64>| {
        groups
            .iter()
            .flat_map(|g| {
                g.partitions
                    .iter()
                    .filter_map(|p| f(p).map(|v| (ours(&g.group, &p.topic, p.partition), v)))
            })
            .collect::<Vec<_>>()
    };
    gauges(
        e,
        "keyshift_lag_partition_records",
        "Records the group has not consumed yet",
        &per_partition(&|p| Some(p.lag as f64)),
    )?;
    let seconds: Vec<(Labels, f64)> = groups
        .iter()
        .flat_map(|g| {
            g.partitions.iter().filter_map(|p| {
                let mut labels = ours(&g.group, &p.topic, p.partition);
                labels.push(("source", p.lag_seconds_source?.as_str().to_owned()));
                Some((labels, p.lag_seconds?))
            })
        })
        .collect();
    gauges(
        e,
        "keyshift_lag_partition_seconds",
        "Age of the first unconsumed record (source: exact, interpolated or lower_bound)",
        &seconds,
    )?;
    gauges(
        e,
        "keyshift_lag_partition_status",
        "Burrow status code: 1 OK, 2 WARN, 3 ERR, 4 STOP, 5 STALL, 6 REWIND",
        &per_partition(&|p| Some(f64::from(p.status.code()))),
    )?;
    gauges(
        e,
        "keyshift_lag_partition_production_records_per_second",
        "Records produced per second over the window",
        &per_partition(&|p| p.production_rate),
    )?;
    gauges(
        e,
        "keyshift_lag_partition_consumption_records_per_second",
        "Records consumed per second over the window",
        &per_partition(&|p| p.consumption_rate),
    )?;
    gauges(
        e,
        "keyshift_lag_partition_drain_seconds",
        "Seconds to consume the lag at current rates (absent when not draining)",
        &per_partition(&|p| p.time_to_drain_secs),
    )?;

    // keyshift's own, per group.
    let per_group = |f: &dyn Fn(&GroupLag) -> Option<f64>| {
        groups
            .iter()
            .filter_map(|g| f(g).map(|v| (vec![("group", g.group.clone())], v)))
            .collect::<Vec<_>>()
    };
    gauges(
        e,
        "keyshift_lag_group_records",
        "Records the group has not consumed yet, all partitions",
        &per_group(&|g| Some(g.lag as f64)),
    )?;
    gauges(
        e,
        "keyshift_lag_group_max_seconds",
        "Largest lag in seconds over the group's partitions",
        &per_group(&|g| g.max_lag_seconds),
    )?;
    gauges(
        e,
        "keyshift_lag_group_status",
        "Burrow status code of the group: 1 OK, 2 WARN, 3 ERR",
        &per_group(&|g| Some(f64::from(g.status.code()))),
    )?;
    gauges(
        e,
        "keyshift_lag_group_partitions",
        "Partitions of the group's topics (the most consumers that can work)",
        &per_group(&|g| Some(f64::from(g.partition_count))),
    )?;
    gauges(
        e,
        "keyshift_lag_group_production_records_per_second",
        "Records produced per second into the group's partitions",
        &per_group(&|g| g.production_rate),
    )?;
    gauges(
        e,
        "keyshift_lag_group_consumption_records_per_second",
        "Records consumed per second by the group",
        &per_group(&|g| g.consumption_rate),
    )?;
    gauges(
        e,
        "keyshift_lag_group_drain_seconds",
        "Seconds until the slowest partition drains (absent when some partition is not draining)",
        &per_group(&|g| g.time_to_drain_secs),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyshift_core::lag::Status;
    use keyshift_kafka::lag::PartitionLag;
    use prometheus_client::registry::Registry;

    fn partition(topic: &str, index: i32, committed: Option<i64>, end: i64) -> PartitionLag {
        PartitionLag {
            topic: topic.to_owned(),
            partition: index,
            committed_offset: committed,
            start_offset: 0,
            end_offset: end,
            lag: end - committed.unwrap_or(0),
            lag_seconds: None,
            lag_seconds_source: None,
            production_rate: None,
            consumption_rate: None,
            time_to_drain_secs: None,
            status: Status::Ok,
            samples: 1,
            member: None,
            error: None,
        }
    }

    /// The exposition's samples, parsed back: `name{labels}` → value.
    fn parse(text: &str) -> BTreeMap<String, f64> {
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| {
                let (name, value) = l.rsplit_once(' ').expect("name value");
                (name.to_owned(), value.parse().expect("a number"))
            })
            .collect()
    }

    /// The series kafka_exporter would not export, or exports differently: a topic the group
    /// has no commit in (assigned to a member only), and a partition whose end offset could
    /// not be read.
    #[test]
    fn kafka_exporter_skips_uncommitted_topics_and_unreadable_ends() {
        let mut unreadable = partition("orders", 1, Some(5), 0);
        unreadable.error = Some("ListOffsets timed out".to_owned());
        unreadable.status = Status::Err;
        let group = GroupLag {
            group: "g".to_owned(),
            state: "Stable".to_owned(),
            members: Some(1),
            status: Status::Err,
            lag: 19,
            max_lag_seconds: None,
            production_rate: None,
            consumption_rate: None,
            time_to_drain_secs: None,
            partition_count: 3,
            topics: BTreeMap::from([("orders".to_owned(), 2), ("assigned".to_owned(), 1)]),
            partitions: vec![
                partition("assigned", 0, None, 9),
                partition("orders", 0, Some(2), 12),
                unreadable,
            ],
        };
        let state = Arc::new(Mutex::new(Snapshot::default()));
        state
            .lock()
            .unwrap()
            .record(Ok(vec![group]), SystemTime::now());
        let mut registry = Registry::default();
        registry.register_collector(Box::new(LagMetrics::new(state)));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let s = parse(&text);

        let exporter: Vec<&String> = s
            .keys()
            .filter(|k| k.starts_with("kafka_consumergroup_") && k.contains("assigned"))
            .collect();
        assert!(exporter.is_empty(), "{exporter:?}");
        let cur = |p: i32| {
            s.get(&format!(
                r#"kafka_consumergroup_current_offset{{consumergroup="g",topic="orders",partition="{p}"}}"#
            ))
            .copied()
        };
        let lag = |p: i32| {
            s.get(&format!(
                r#"kafka_consumergroup_lag{{consumergroup="g",topic="orders",partition="{p}"}}"#
            ))
            .copied()
        };
        assert_eq!((cur(0), lag(0)), (Some(2.0), Some(10.0)));
        assert_eq!((cur(1), lag(1)), (Some(5.0), None), "{text}");
        assert_eq!(
            s[r#"kafka_consumergroup_lag_sum{consumergroup="g",topic="orders"}"#],
            10.0
        );
        assert_eq!(
            s[r#"kafka_consumergroup_current_offset_sum{consumergroup="g",topic="orders"}"#],
            7.0
        );
        // keyshift's own series keep every partition the group is responsible for.
        assert_eq!(
            s[r#"keyshift_lag_partition_records{group="g",topic="assigned",partition="0"}"#],
            9.0
        );
    }

    #[test]
    fn outage_clears_series_and_reports_down() {
        let state = Arc::new(Mutex::new(Snapshot::default()));
        let mut registry = Registry::default();
        registry.register_collector(Box::new(LagMetrics::new(Arc::clone(&state))));
        let render = || {
            let mut s = String::new();
            prometheus_client::encoding::text::encode(&mut s, &registry).unwrap();
            s
        };
        state.lock().unwrap().record(
            Err(LagError::UnknownGroup { group: "g".into() }),
            SystemTime::now(),
        );
        let text = render();
        assert!(text.contains("keyshift_lag_up 0"), "{text}");
        assert!(
            text.contains("keyshift_lag_collection_failures_total 1"),
            "{text}"
        );
        assert!(!text.contains("keyshift_lag_last_success"), "{text}");
        state
            .lock()
            .unwrap()
            .record(Ok(Vec::new()), SystemTime::now());
        let text = render();
        assert!(text.contains("keyshift_lag_up 1"), "{text}");
        assert!(text.contains("keyshift_lag_collections_total 2"), "{text}");
    }
}
