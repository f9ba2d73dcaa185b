//! `LagCollector` against the embedded broker with real rdkafka clients: exact lag in records,
//! exact and interpolated lag in seconds, rates, and the Burrow-style statuses when a consumer
//! stops, stalls or rewinds.
//!
//! Sample times are passed in (`now`), so the expected seconds are computed exactly from the
//! record timestamps the test wrote; nothing depends on how fast the machine is.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use keyshift_core::lag::{LagSecondsSource, Status};
use keyshift_kafka::lag::{GroupLag, LagCollector, LagCollectorConfig, LagError, PartitionLag};
use keyshift_kafka::EmbeddedBroker;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

/// Produces `count` records to `partition`, the i-th with timestamp `base_ms + i * 1000`.
fn produce(broker: &EmbeddedBroker, topic: &str, partition: i32, count: usize, base_ms: i64) {
    let producer: FutureProducer = broker.client_settings().producer_config().create().unwrap();
    let pending: Vec<_> = (0..count)
        .map(|i| {
            let key = format!("k{i}");
            producer
                .send_result(
                    FutureRecord::to(topic)
                        .partition(partition)
                        .key(&key)
                        .payload("v")
                        .timestamp(base_ms + i as i64 * 1000),
                )
                .map_err(|(e, _)| e)
                .unwrap()
        })
        .collect();
    for p in pending {
        futures_executor::block_on(p).unwrap().unwrap();
    }
}

/// Commits `offsets` (partition → offset) of `topic` for `group` without joining it.
fn commit(broker: &EmbeddedBroker, group: &str, topic: &str, offsets: &[(i32, i64)]) {
    let consumer: BaseConsumer = broker
        .client_settings()
        .consumer_config(group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for &(p, o) in offsets {
        tpl.add_partition_offset(topic, p, Offset::Offset(o))
            .unwrap();
    }
    consumer.commit(&tpl, CommitMode::Sync).expect("commit");
}

fn secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

fn by_partition(group: &GroupLag) -> BTreeMap<i32, &PartitionLag> {
    group.partitions.iter().map(|p| (p.partition, p)).collect()
}

fn collector(broker: &EmbeddedBroker, exact: bool) -> LagCollector {
    LagCollector::with_config(
        &broker.client_settings(),
        LagCollectorConfig {
            window: 3,
            exact_lag_seconds: exact,
            ..LagCollectorConfig::default()
        },
    )
    .unwrap()
}

#[test]
fn records_exact_seconds_stall_and_rewind() {
    let broker = EmbeddedBroker::start().expect("broker");
    let topic = "orders";
    broker.create_topic(topic, 3).unwrap();
    let base_ms = 1_700_000_000_000;
    let produced = [7usize, 4, 5];
    for (p, &n) in produced.iter().enumerate() {
        produce(&broker, topic, p as i32, n, base_ms + p as i64 * 100_000);
    }
    let consumed = [3i64, 4, 0];
    commit(&broker, "billing", topic, &[(0, 3), (1, 4), (2, 0)]);

    let mut c = collector(&broker, true);
    let t0 = UNIX_EPOCH + Duration::from_millis(base_ms as u64 + 500_000);
    let groups = c.collect(&["billing".to_owned()], t0).unwrap();
    assert_eq!(groups.len(), 1);
    let g = &groups[0];
    assert_eq!(g.group, "billing");
    // tansu 0.6 resets the connection on DescribeGroups (librdkafka's v0 and kafka-python's
    // alike), so membership is unknown on the embedded broker; Apache Kafka describes groups.
    assert_eq!(g.members, None);
    assert_eq!(g.state, "Unknown");
    assert_eq!(g.partition_count, 3);
    assert_eq!(g.topics, BTreeMap::from([(topic.to_owned(), 3)]));
    let parts = by_partition(g);
    for p in 0..3 {
        let x = parts[&p];
        assert_eq!(x.committed_offset, Some(consumed[p as usize]), "p{p}");
        assert_eq!(x.end_offset, produced[p as usize] as i64, "p{p}");
        assert_eq!(
            x.lag,
            produced[p as usize] as i64 - consumed[p as usize],
            "p{p}"
        );
        // One sample: nothing to judge yet.
        assert_eq!(x.status, Status::Ok, "p{p}");
    }
    assert_eq!(g.lag, 4 + 5);
    // Exact: the first unconsumed record of p0 is #3, written at base + 3 s.
    let expect0 = secs(t0) - (base_ms + 3_000) as f64 / 1e3;
    assert!((parts[&0].lag_seconds.unwrap() - expect0).abs() < 1e-6);
    assert_eq!(parts[&0].lag_seconds_source, Some(LagSecondsSource::Exact));
    assert_eq!(parts[&1].lag_seconds, Some(0.0));
    let expect2 = secs(t0) - (base_ms + 200_000) as f64 / 1e3;
    assert!((parts[&2].lag_seconds.unwrap() - expect2).abs() < 1e-6);
    assert_eq!(
        g.max_lag_seconds,
        Some(
            parts[&0]
                .lag_seconds
                .unwrap()
                .max(parts[&2].lag_seconds.unwrap())
        )
    );

    // Nobody consumes and the commits do not move. With membership unknown the rules cannot
    // tell a gone consumer (STOP) from a stuck one, and say STALL.
    let t1 = t0 + Duration::from_secs(10);
    let g = c.collect(&["billing".to_owned()], t1).unwrap().remove(0);
    let parts = by_partition(&g);
    assert_eq!(parts[&0].status, Status::Stall);
    assert_eq!(parts[&1].status, Status::Ok, "no lag is never a problem");
    assert_eq!(parts[&2].status, Status::Stall);
    assert_eq!(parts[&0].production_rate, Some(0.0));
    assert_eq!(parts[&0].consumption_rate, Some(0.0));
    assert_eq!(parts[&0].time_to_drain_secs, None);
    assert_eq!(g.status, Status::Err, "STALL rolls up to ERR");

    // The group moves p0 backwards: REWIND; p2 progresses while lag falls: OK.
    commit(&broker, "billing", topic, &[(0, 1), (2, 2)]);
    let t2 = t1 + Duration::from_secs(10);
    let g = c.collect(&["billing".to_owned()], t2).unwrap().remove(0);
    let parts = by_partition(&g);
    assert_eq!(parts[&0].status, Status::Rewind);
    assert_eq!(parts[&0].lag, 6);
    assert_eq!(parts[&2].status, Status::Ok);
    // p2 went 0 → 2 over the 20 s window with nothing produced: 0.1 records/s, 3 left.
    assert_eq!(parts[&2].consumption_rate, Some(0.1));
    assert!((parts[&2].time_to_drain_secs.unwrap() - 30.0).abs() < 1e-9);
    assert_eq!(g.status, Status::Err);
}

#[test]
fn interpolated_seconds_rates_and_unknown_groups() {
    let broker = EmbeddedBroker::start().expect("broker");
    let topic = "events";
    broker.create_topic(topic, 1).unwrap();
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    produce(&broker, topic, 0, 10, now_ms);
    commit(&broker, "reports", topic, &[(0, 4)]);

    let mut c = collector(&broker, false);
    let group = ["reports".to_owned()];
    let t0 = UNIX_EPOCH + Duration::from_secs(2_000_000_000);
    let g = c.collect(&group, t0).unwrap().remove(0);
    let p = &g.partitions[0];
    assert_eq!((p.lag, p.end_offset), (6, 10));
    // Offset 4 was already written at the first sighting of end 10: only a lower bound.
    assert_eq!(p.lag_seconds, Some(0.0));
    assert_eq!(p.lag_seconds_source, Some(LagSecondsSource::LowerBound));

    produce(&broker, topic, 0, 20, now_ms);
    let t1 = t0 + Duration::from_secs(20);
    let g = c.collect(&group, t1).unwrap().remove(0);
    let p = &g.partitions[0];
    assert_eq!((p.lag, p.end_offset), (26, 30));
    assert_eq!(p.production_rate, Some(1.0));
    assert_eq!(p.status, Status::Stall);

    // The group reaches offset 15, one of the 20 records that appeared during (t0, t1].
    commit(&broker, "reports", topic, &[(0, 15)]);
    let t2 = t1 + Duration::from_secs(10);
    let g = c.collect(&group, t2).unwrap().remove(0);
    let p = &g.partitions[0];
    assert_eq!(p.lag, 15);
    assert_eq!(p.lag_seconds_source, Some(LagSecondsSource::Interpolated));
    // Record 15 is the 6th of 20 (offsets 10..30): produced at t0 + 6/20 × 20 s = t0 + 6 s.
    let expect = secs(t2) - (secs(t0) + 6.0);
    assert!((p.lag_seconds.unwrap() - expect).abs() < 1e-6, "{p:?}");
    assert_eq!(p.consumption_rate, Some(11.0 / 30.0));
    assert_eq!(p.status, Status::Ok);

    // Unknown groups are an error naming the group; all groups lists the real one.
    let err = c
        .collect(&["no-such-group".to_owned()], t2 + Duration::from_secs(1))
        .unwrap_err();
    assert!(matches!(err, LagError::UnknownGroup { ref group } if group == "no-such-group"));
    assert!(err.to_string().contains("'no-such-group'"), "{err}");
    // All groups needs the group listing, which the embedded broker cannot give.
    let err = c.collect(&[], t2 + Duration::from_secs(2)).unwrap_err();
    assert!(matches!(err, LagError::GroupListing { .. }), "{err:?}");
    assert!(err.to_string().contains("name the groups"), "{err}");
}
