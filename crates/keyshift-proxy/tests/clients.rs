//! Real clients through the proxy against the embedded broker: an idempotent rdkafka producer
//! and an rdkafka consumer group, then kafka-python (PyPI) producing and consuming in a group.
//! Records arrive intact (keys, values, headers), and the proxy's metrics account for exactly
//! the records sent: produced and fetched per partition, high watermarks, the group's commits
//! and zero lag, requests per API and client id, hot keys.

mod support;

#[path = "../../keyshift-kafka/tests/python/mod.rs"]
mod python;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

use keyshift_kafka::ClientSettings;
use keyshift_proxy::metrics::MetricsConfig;
use keyshift_proxy::stats::Stats;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use support::{wait_for, Setup, PATIENCE};

/// Records of `topic` per partition: (produced, fetched, high watermark).
fn per_partition(stats: &Stats, topic: &str) -> BTreeMap<i32, (u64, u64, Option<i64>)> {
    stats
        .partitions
        .iter()
        .filter(|p| p.topic == topic)
        .map(|p| {
            (
                p.partition,
                (p.produced_records, p.fetched_records, p.high_watermark),
            )
        })
        .collect()
}

/// (api, client id) pairs that made at least one request.
fn apis_by_client(stats: &Stats) -> BTreeSet<(String, String)> {
    stats
        .requests
        .iter()
        .map(|r| (r.api.clone(), r.client_id.clone()))
        .collect()
}

#[test]
fn rdkafka_producer_and_consumer_group_are_counted_exactly() {
    let setup = Setup::start(|_| {}, MetricsConfig::default());
    let topic = "orders";
    setup.broker.create_topic(topic, 3).unwrap();
    let count = 300u64;

    let producer: FutureProducer = ClientSettings::new(setup.bootstrap())
        .client_id("rd-producer")
        .producer_config()
        .set("linger.ms", "5")
        .create()
        .expect("producer through the proxy");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut delivered: BTreeMap<i32, u64> = BTreeMap::new();
    rt.block_on(async {
        let mut pending = Vec::new();
        for i in 0..count {
            let key = format!("k{}", i % 7);
            let value = format!("value-{i}");
            let headers = OwnedHeaders::new().insert(Header {
                key: "seq",
                value: Some(i.to_string().as_bytes()),
            });
            pending.push(
                producer
                    .send_result(
                        FutureRecord::to(topic)
                            .key(&key)
                            .payload(&value)
                            .headers(headers),
                    )
                    .map_err(|(e, _)| e)
                    .expect("enqueue"),
            );
        }
        for p in pending {
            let d = p
                .await
                .expect("delivery report")
                .map_err(|(e, _)| e)
                .expect("delivered");
            *delivered.entry(d.partition).or_default() += 1;
        }
    });
    drop(producer);

    let consumer: BaseConsumer = ClientSettings::new(setup.bootstrap())
        .client_id("rd-consumer")
        .consumer_config("rd-group")
        .create()
        .expect("consumer through the proxy");
    consumer.subscribe(&[topic]).unwrap();
    let mut seen = BTreeSet::new();
    wait_for("the consumer group to read every record", || {
        while let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m.expect("consume");
            let key = String::from_utf8(m.key().unwrap().to_vec()).unwrap();
            let value = String::from_utf8(m.payload().unwrap().to_vec()).unwrap();
            let seq: u64 = value.strip_prefix("value-").unwrap().parse().unwrap();
            assert_eq!(key, format!("k{}", seq % 7), "key of record {seq}");
            let h = m.headers().expect("headers survive the proxy").get(0);
            assert_eq!((h.key, h.value), ("seq", Some(seq.to_string().as_bytes())));
            assert!(seen.insert(seq), "record {seq} delivered twice");
        }
        (seen.len() as u64 == count).then_some(())
    });
    consumer
        .commit_consumer_state(CommitMode::Sync)
        .expect("commit through the proxy");

    // The commit response may still be on its way into the metrics when commit returns.
    let stats = wait_for("the commits to be counted", || {
        let s = setup.metrics.snapshot();
        (s.groups.iter().filter(|g| g.group == "rd-group").count() == delivered.len()).then_some(s)
    });
    let parts = per_partition(&stats, topic);
    for (&partition, &n) in &delivered {
        let (produced, fetched, hw) = parts[&partition];
        assert_eq!(produced, n, "produced records of partition {partition}");
        assert_eq!(fetched, n, "fetched records of partition {partition}");
        assert_eq!(
            hw,
            Some(n as i64),
            "high watermark of partition {partition}"
        );
    }
    let total: u64 = parts.values().map(|p| p.0).sum();
    assert_eq!(total, count);
    for g in stats.groups.iter().filter(|g| g.group == "rd-group") {
        assert_eq!(
            g.committed_offset, delivered[&g.partition] as i64,
            "committed offset of partition {}",
            g.partition
        );
        assert_eq!(g.lag, Some(0), "lag of partition {}", g.partition);
    }
    let apis = apis_by_client(&stats);
    for (api, client) in [
        ("ApiVersions", "rd-producer"),
        ("Metadata", "rd-producer"),
        ("InitProducerId", "rd-producer"),
        ("Produce", "rd-producer"),
        ("FindCoordinator", "rd-consumer"),
        ("JoinGroup", "rd-consumer"),
        ("SyncGroup", "rd-consumer"),
        ("Fetch", "rd-consumer"),
        ("OffsetCommit", "rd-consumer"),
    ] {
        assert!(
            apis.contains(&(api.to_owned(), client.to_owned())),
            "no {api} request from {client} counted: {apis:?}"
        );
    }
    let produce_latency = stats.latency.iter().find(|l| l.api == "Produce").unwrap();
    let produce_requests: u64 = stats
        .requests
        .iter()
        .filter(|r| r.api == "Produce")
        .map(|r| r.count)
        .sum();
    assert_eq!(produce_latency.latency.count, produce_requests);
    let p2f = stats
        .produce_to_fetch
        .iter()
        .find(|t| t.topic == topic)
        .expect("produce → fetch latency measured");
    assert!(p2f.latency.count > 0);

    // Seven keys, far fewer than the sketch's counters: counts are exact.
    let hot = stats.hot_keys.iter().find(|h| h.topic == topic).unwrap();
    assert_eq!(hot.keyed_records, count);
    let mut got: Vec<(String, u64, u64)> = hot
        .keys
        .iter()
        .map(|k| (k.key.clone(), k.count, k.error))
        .collect();
    got.sort();
    let want: Vec<(String, u64, u64)> = (0..7)
        .map(|k| {
            (
                format!("k{k}"),
                (0..count).filter(|i| i % 7 == k).count() as u64,
                0,
            )
        })
        .collect();
    assert_eq!(got, want);
    drop(consumer);
}

const KAFKA_PYTHON: &str = r#"
import sys
from kafka import KafkaProducer, KafkaConsumer

bootstrap, topic, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
p = KafkaProducer(bootstrap_servers=bootstrap, client_id="py-producer")
for i in range(count):
    p.send(topic, key=("py-%d" % (i % 5)).encode(), value=("v%d" % i).encode(),
           headers=[("origin", b"kafka-python"), ("seq", str(i).encode())])
p.flush(timeout=60)
p.close()

c = KafkaConsumer(topic, bootstrap_servers=bootstrap, client_id="py-consumer",
                  group_id="py-group", auto_offset_reset="earliest",
                  enable_auto_commit=False, consumer_timeout_ms=30000)
seen = set()
for m in c:
    i = int(m.value.decode()[1:])
    assert m.key == ("py-%d" % (i % 5)).encode(), m
    assert dict(m.headers) == {"origin": b"kafka-python", "seq": str(i).encode()}, m.headers
    seen.add(i)
    if len(seen) == count:
        break
c.commit()
c.close()
print("consumed", len(seen))
"#;

#[test]
fn kafka_python_producer_and_consumer_group_are_counted_exactly() {
    if !python::require_kafka_python("kafka_python_producer_and_consumer_group_are_counted_exactly")
    {
        return;
    }
    let setup = Setup::start(|_| {}, MetricsConfig::default());
    let topic = "from-python";
    setup.broker.create_topic(topic, 2).unwrap();
    let count = 120u64;
    let out = Command::new("timeout")
        .args([
            &PATIENCE.as_secs().to_string(),
            "python3",
            "-c",
            KAFKA_PYTHON,
            &setup.bootstrap(),
            topic,
            &count.to_string(),
        ])
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(&format!("consumed {count}")),
        "kafka-python through the proxy failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let stats = setup.metrics.snapshot();
    let parts = per_partition(&stats, topic);
    let produced: u64 = parts.values().map(|p| p.0).sum();
    let fetched: u64 = parts.values().map(|p| p.1).sum();
    assert_eq!(produced, count, "{parts:?}");
    assert_eq!(fetched, count, "{parts:?} {:?}", stats.decode_failures);
    let groups: Vec<_> = stats
        .groups
        .iter()
        .filter(|g| g.group == "py-group")
        .collect();
    assert_eq!(groups.len(), parts.len(), "{:?}", stats.groups);
    for g in groups {
        let (produced, _, hw) = parts[&g.partition];
        assert_eq!(g.committed_offset, produced as i64);
        assert_eq!(hw, Some(produced as i64));
        assert_eq!(g.lag, Some(0));
    }
    let apis = apis_by_client(&stats);
    for (api, client) in [
        ("Produce", "py-producer"),
        ("Fetch", "py-consumer"),
        ("JoinGroup", "py-consumer"),
        ("OffsetCommit", "py-consumer"),
    ] {
        assert!(
            apis.contains(&(api.to_owned(), client.to_owned())),
            "no {api} request from {client} counted: {apis:?}"
        );
    }
    let hot = stats.hot_keys.iter().find(|h| h.topic == topic).unwrap();
    let keys: BTreeSet<&str> = hot.keys.iter().map(|k| k.key.as_str()).collect();
    assert_eq!(
        keys,
        BTreeSet::from(["py-0", "py-1", "py-2", "py-3", "py-4"])
    );
    assert!(hot
        .keys
        .iter()
        .all(|k| k.count == count / 5 && k.error == 0));
}
