//! The keyshift producer against the embedded broker, read back with a plain rdkafka consumer.
//!
//! Every test starts its own broker and reads the topic back partition by partition, so the
//! assertions are about what is durably in the log: where each key's records landed, the
//! fence records and route headers of every move, per-key order, and errors surfaced to the
//! caller. Waits are bounded and fail with a message naming what was awaited; nothing asserts
//! on durations.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use keyshift_core::hash::kafka_partition;
use keyshift_core::protocol::{
    is_fence, FenceHeader, RouteEntry, RouteHeader, FENCE_HEADER, FENCE_VALUE, ROUTE_HEADER,
};
use keyshift_core::strategy::{KeyshiftConfig, StrategyConfig};
use keyshift_core::workload::{key_name, Zipf};
use keyshift_kafka::control::CONTROL_TOPIC_SUFFIX;
use keyshift_kafka::{
    ClientSettings, Delivery, EmbeddedBroker, KeyshiftProducer, PendingDelivery, ProduceError,
    ProducerBuildError, Routes, ROUTE_TOPIC_SUFFIX,
};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

/// Upper bound for any wait on the broker; generous because the CPU is shared.
const PATIENCE: Duration = Duration::from_secs(120);

/// One record as read back from the log.
#[derive(Debug, Clone)]
struct Rec {
    partition: u32,
    offset: i64,
    key: Vec<u8>,
    value: Vec<u8>,
    fence: Option<FenceHeader>,
    route: Option<RouteHeader>,
    other_headers: Vec<(String, Vec<u8>)>,
}

impl Rec {
    /// The sequence number a data record carries as its value.
    fn seq(&self) -> u64 {
        std::str::from_utf8(&self.value)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("record value is not a sequence number: {self:?}"))
    }
}

fn broker_with_topic(topic: &str, partitions: u32) -> EmbeddedBroker {
    let broker = EmbeddedBroker::start().expect("embedded broker starts");
    broker
        .create_topic(topic, partitions)
        .expect("topic is created");
    broker
}

/// Reads every partition of `topic` from the beginning up to its current end offset.
fn read_all(broker: &EmbeddedBroker, topic: &str, partitions: u32) -> Vec<Vec<Rec>> {
    let ends = broker.admin().end_offsets(topic).expect("end offsets");
    assert_eq!(ends.len(), partitions as usize);
    let consumer: BaseConsumer = broker
        .client_settings()
        .consumer_config(&format!("readback-{}", uuid::Uuid::new_v4()))
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions as i32 {
        assignment
            .add_partition_offset(topic, p, Offset::Beginning)
            .expect("assignment");
    }
    consumer.assign(&assignment).expect("assign");
    let mut logs: Vec<Vec<Rec>> = vec![Vec::new(); partitions as usize];
    let deadline = Instant::now() + PATIENCE;
    let done = |logs: &Vec<Vec<Rec>>| {
        logs.iter()
            .zip(&ends)
            .all(|(log, &end)| log.last().map_or(-1, |r| r.offset) + 1 >= end)
    };
    while !done(&logs) {
        assert!(
            Instant::now() < deadline,
            "reading back {topic}: got {:?} records per partition, end offsets {ends:?}",
            logs.iter().map(Vec::len).collect::<Vec<_>>()
        );
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = message.expect("consume");
        let mut rec = Rec {
            partition: message.partition() as u32,
            offset: message.offset(),
            key: message.key().unwrap_or_default().to_vec(),
            value: message.payload().unwrap_or_default().to_vec(),
            fence: None,
            route: None,
            other_headers: Vec::new(),
        };
        if let Some(headers) = message.headers() {
            for header in headers.iter() {
                let value = header.value.unwrap_or_default();
                match header.key {
                    FENCE_HEADER => rec.fence = Some(FenceHeader::decode(value).expect("fence")),
                    ROUTE_HEADER => rec.route = Some(RouteHeader::decode(value).expect("route")),
                    name => rec.other_headers.push((name.to_owned(), value.to_vec())),
                }
            }
        }
        logs[rec.partition as usize].push(rec);
    }
    logs
}

async fn await_all(pending: Vec<(Vec<u8>, PendingDelivery)>) -> Vec<(Vec<u8>, Delivery)> {
    let mut out = Vec::with_capacity(pending.len());
    for (key, p) in pending {
        let delivery = tokio::time::timeout(PATIENCE, p)
            .await
            .unwrap_or_else(|_| panic!("no delivery report for key {key:?} within {PATIENCE:?}"))
            .unwrap_or_else(|err| panic!("record of key {key:?} failed: {err}"));
        out.push((key, delivery));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_strategy_places_every_key_on_its_murmur2_partition() {
    let (topic, partitions) = ("hash-placement", 6);
    let broker = broker_with_topic(topic, partitions);
    // No partition count given: it is read from the topic's metadata.
    let producer = KeyshiftProducer::builder(broker.client_settings(), topic)
        .strategy("hash")
        .build()
        .expect("producer");
    assert_eq!(producer.partitions(), partitions);

    let mut pending = Vec::new();
    for i in 0..600u64 {
        let key = key_name(i % 97).into_bytes();
        let headers = vec![("app".to_owned(), b"x".to_vec())];
        let p = producer
            .try_send(&key, i.to_string().as_bytes(), headers)
            .expect("enqueued");
        pending.push((key, p));
    }
    for (key, delivery) in await_all(pending).await {
        assert_eq!(
            delivery.partition,
            kafka_partition(&key, partitions),
            "{key:?}"
        );
        assert_eq!(delivery.fenced_wait, None);
    }

    let logs = read_all(&broker, topic, partitions);
    let total: usize = logs.iter().map(Vec::len).sum();
    assert_eq!(total, 600, "every record is in the log exactly once");
    for rec in logs.iter().flatten() {
        assert_eq!(rec.partition, kafka_partition(&rec.key, partitions));
        assert!(rec.fence.is_none() && rec.route.is_none(), "{rec:?}");
        assert_eq!(rec.other_headers, vec![("app".to_owned(), b"x".to_vec())]);
    }
    let stats = producer.stats();
    assert_eq!(stats.records, 600);
    assert_eq!(stats.fences, 0);
    assert_eq!(stats.delivery_errors, 0);
    let per_partition: Vec<u64> = logs.iter().map(|l| l.len() as u64).collect();
    assert_eq!(stats.per_partition, per_partition);
}

/// The records of `key` in the log, by partition, data and fences alike, in offset order.
fn of_key<'a>(logs: &'a [Vec<Rec>], key: &[u8], partition: u32) -> Vec<&'a Rec> {
    logs[partition as usize]
        .iter()
        .filter(|r| r.key == key)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_moves_a_to_b_to_c_are_fenced_and_lose_nothing() {
    let (topic, partitions) = ("forced-moves", 4);
    let broker = broker_with_topic(topic, partitions);
    let producer = KeyshiftProducer::builder(broker.client_settings(), topic)
        .routes(Routes::Durable(None))
        .strategy("hash")
        .partitions(partitions)
        .build()
        .expect("producer");

    let moved = b"location_7".to_vec();
    let a = kafka_partition(&moved, partitions);
    let (b, c) = ((a + 1) % partitions, (a + 2) % partitions);
    let others: Vec<Vec<u8>> = (100..120).map(|i| key_name(i).into_bytes()).collect();

    // Records of the moved key and of 20 others interleave; nothing is awaited until the
    // end, so the move to C is decided while records of the key still wait for A's fence.
    let mut pending = Vec::new();
    let mut seq = 0u64;
    let mut send_round = |producer: &KeyshiftProducer, pending: &mut Vec<_>| {
        for _ in 0..30 {
            for key in std::iter::once(&moved).chain(others.iter().take(3)) {
                let p = producer
                    .try_send(key, seq.to_string().as_bytes(), Vec::new())
                    .expect("enqueued");
                pending.push((key.clone(), p));
                seq += 1;
            }
        }
    };
    send_round(&producer, &mut pending);
    producer.move_key(&moved, b).expect("valid partition");
    send_round(&producer, &mut pending);
    producer.move_key(&moved, c).expect("valid partition");
    send_round(&producer, &mut pending);
    for key in &others[3..] {
        let p = producer.try_send(key, b"0", Vec::new()).expect("enqueued");
        pending.push((key.clone(), p));
    }
    let deliveries = await_all(pending).await;

    // Other keys were never held: their records were sent at once, to their hash partition.
    let mut moved_deliveries = Vec::new();
    for (key, delivery) in &deliveries {
        if *key == moved {
            moved_deliveries.push(*delivery);
        } else {
            assert_eq!(delivery.fenced_wait, None, "key {key:?} waited for a fence");
            assert_eq!(delivery.partition, kafka_partition(key, partitions));
        }
    }
    assert!(
        moved_deliveries.iter().any(|d| d.fenced_wait.is_some()),
        "the moved key's first records after a move wait for its fence"
    );
    let stats = producer.stats();
    assert_eq!((stats.fences, stats.migrations), (2, 2), "{stats:?}");
    assert_eq!(stats.held_records, 0);
    assert_eq!(stats.held_keys, 0);
    assert_eq!(stats.delivery_errors, 0);
    assert!(stats.held_total > 0);
    assert!(
        stats.held_total <= 90,
        "only the moved key's records are ever held"
    );
    assert_eq!(stats.fence_rtt.len(), 2);

    let logs = read_all(&broker, topic, partitions);
    // A: data records of set 0 (no header), then the fence into set 1 on B, then nothing.
    let on_a = of_key(&logs, &moved, a);
    let (fence_a, data_a) = on_a.split_last().expect("records on A");
    assert_eq!(
        fence_a.fence,
        Some(FenceHeader {
            set_index: 1,
            to_partition: b
        })
    );
    // Its value is the reserved marker, so a reader without headers recognises it too.
    assert!(
        fence_a.value == FENCE_VALUE && fence_a.route.is_none(),
        "{fence_a:?}"
    );
    assert!(is_fence(false, Some(&fence_a.value)));
    assert!(data_a
        .iter()
        .all(|r| r.fence.is_none() && r.route.is_none()));
    // B: data records routed from A's fence, then the fence into set 2 on C, which carries
    // set 1's route header too.
    let on_b = of_key(&logs, &moved, b);
    let (fence_b, data_b) = on_b.split_last().expect("records on B");
    let route_1 = RouteHeader {
        set_index: 1,
        from_partition: a,
        fence_offset: fence_a.offset,
    };
    assert!(
        !data_b.is_empty(),
        "records were sent to B before the move to C"
    );
    for r in data_b {
        assert_eq!((r.route, r.fence), (Some(route_1), None), "{r:?}");
    }
    assert_eq!(
        fence_b.fence,
        Some(FenceHeader {
            set_index: 2,
            to_partition: c
        })
    );
    assert_eq!(fence_b.route, Some(route_1));
    assert_eq!(fence_b.value, FENCE_VALUE, "{fence_b:?}");
    // C: data records routed from B's fence.
    let on_c = of_key(&logs, &moved, c);
    let route_2 = RouteHeader {
        set_index: 2,
        from_partition: b,
        fence_offset: fence_b.offset,
    };
    assert!(on_c
        .iter()
        .all(|r| r.route == Some(route_2) && r.fence.is_none()));
    // Nothing lost, nothing duplicated, and in send order: A's, then B's, then C's records.
    let seqs: Vec<u64> = data_a
        .iter()
        .chain(data_b)
        .chain(&on_c)
        .map(|r| r.seq())
        .collect();
    let mut sent: Vec<u64> = Vec::new();
    let mut s = 0;
    for _round in 0..3 {
        for _ in 0..30 {
            sent.push(s);
            s += 4;
        }
    }
    assert_eq!(seqs, sent, "the moved key's records, in log order A, B, C");
    // The key never appears on the fourth partition.
    assert!(of_key(&logs, &moved, (a + 3) % partitions).is_empty());
    // Every other key stayed on its hash partition, without protocol headers.
    for rec in logs.iter().flatten().filter(|r| r.key != moved) {
        assert_eq!(rec.partition, kafka_partition(&rec.key, partitions));
        assert!(rec.fence.is_none() && rec.route.is_none());
    }
}

/// Checks that every change of partition between consecutive records of a key (in send
/// order) is covered by a fence chain: the first record on the new partition carries a route
/// header whose chain of fences leads back to the old partition, past its last record there.
/// Returns how many changes were checked.
fn assert_every_move_is_fenced(logs: &[Vec<Rec>]) -> usize {
    let at: HashMap<(u32, i64), &Rec> = logs
        .iter()
        .flatten()
        .map(|r| ((r.partition, r.offset), r))
        .collect();
    let mut by_key: BTreeMap<&[u8], Vec<&Rec>> = BTreeMap::new();
    for rec in logs.iter().flatten().filter(|r| r.fence.is_none()) {
        by_key.entry(&rec.key).or_default().push(rec);
    }
    let mut changes = 0;
    for (key, mut recs) in by_key {
        recs.sort_by_key(|r| r.seq());
        for pair in recs.windows(2) {
            let (prev, next) = (pair[0], pair[1]);
            assert!(
                prev.partition != next.partition || prev.offset < next.offset,
                "key {key:?}: records out of order within partition {}",
                prev.partition
            );
            if prev.partition == next.partition {
                continue;
            }
            changes += 1;
            let mut route = next.route.unwrap_or_else(|| {
                panic!(
                    "key {key:?} moved {} -> {} without a route header: {next:?}",
                    prev.partition, next.partition
                )
            });
            // Follow the fences back (A -> B -> C with no record on B chains through B).
            for _hop in 0..64 {
                let fence = at
                    .get(&(route.from_partition, route.fence_offset))
                    .unwrap_or_else(|| panic!("key {key:?}: route {route:?} names no record"));
                assert_eq!(fence.key, key, "route {route:?} names another key's record");
                assert!(
                    fence.fence.is_some(),
                    "route {route:?} names a non-fence {fence:?}"
                );
                if route.from_partition == prev.partition {
                    assert!(
                        route.fence_offset > prev.offset,
                        "key {key:?}: fence {route:?} precedes its last record on {}",
                        prev.partition
                    );
                    break;
                }
                route = fence.route.unwrap_or_else(|| {
                    panic!(
                        "key {key:?}: chain from {} broken at {fence:?}",
                        next.partition
                    )
                });
            }
        }
    }
    changes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyshift_strategy_on_a_zipf_stream_fences_every_move() {
    let (topic, partitions) = ("keyshift-zipf", 4);
    let broker = broker_with_topic(topic, partitions);
    // Short warm-up, rounds and cooldown so that moves happen within a few seconds.
    let config = StrategyConfig {
        seed: 7,
        keyshift: KeyshiftConfig {
            warmup_secs: 0.3,
            rebalance_interval_secs: 0.2,
            half_life_secs: 1.0,
            cooldown_secs: 0.5,
            use_feedback: false,
            ..KeyshiftConfig::default()
        },
        ..StrategyConfig::default()
    };
    let producer = KeyshiftProducer::builder(broker.client_settings(), topic)
        .strategy("keyshift")
        .strategy_config(config)
        .build()
        .expect("producer");
    assert!(producer.preserves_order());

    let zipf = Zipf::new(1.1, 2.72, 300).expect("zipf");
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut uniform = move || {
        // xorshift64*: a fixed, dependency-free stream of uniforms in [0, 1).
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut pending = Vec::new();
    // About 3 s of traffic at ~2500 records/s, in batches of 50.
    for seq in 0..7500u64 {
        let key = key_name(zipf.sample_with(&mut uniform)).into_bytes();
        let p = producer
            .try_send(&key, seq.to_string().as_bytes(), Vec::new())
            .expect("enqueued");
        pending.push((key, p));
        if seq % 50 == 49 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let deliveries = await_all(pending).await;
    assert_eq!(deliveries.len(), 7500);
    let stats = producer.stats();
    assert!(
        stats.moves > 0,
        "the keyshift strategy moved no key: {stats:?}"
    );
    assert!(stats.fences > 0 && stats.migrations > 0, "{stats:?}");
    assert_eq!(stats.delivery_errors, 0);
    assert_eq!(stats.held_records, 0);

    let logs = read_all(&broker, topic, partitions);
    let data: usize = logs.iter().flatten().filter(|r| r.fence.is_none()).count();
    let fences = logs.iter().flatten().filter(|r| r.fence.is_some()).count();
    assert_eq!(data, 7500, "every record is in the log exactly once");
    assert_eq!(fences as u64, stats.fences);
    let changes = assert_every_move_is_fenced(&logs);
    assert!(changes > 0, "the log shows no key changing partition");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_records_and_failed_deliveries_are_reported() {
    let (topic, partitions) = ("errors", 2);
    let broker = broker_with_topic(topic, partitions);

    // A record above message.max.bytes (given as a producer property) is refused at once.
    let producer = KeyshiftProducer::builder(broker.client_settings(), topic)
        .property("message.max.bytes", "1000")
        .build()
        .expect("producer");
    let err = producer
        .send(b"k", &[b'x'; 5000], Vec::new())
        .await
        .expect_err("a 5000-byte record exceeds message.max.bytes=1000");
    assert!(
        matches!(
            &err,
            ProduceError::Enqueue { source, .. }
                if matches!(**source, KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge))
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("'errors'"), "{err}");
    assert_eq!(producer.stats().delivery_errors, 1);
    // The producer keeps working after a refused record.
    producer
        .send(b"k", b"small", Vec::new())
        .await
        .expect("small record");

    // Routing to a partition the topic does not have (the caller claimed 8 partitions):
    // the record fails with an error naming the partition, it is not lost silently.
    let producer = KeyshiftProducer::builder(broker.client_settings(), topic)
        .partitions(8)
        .property("message.timeout.ms", "3000")
        .build()
        .expect("producer");
    let key = (0..)
        .map(|i| key_name(i).into_bytes())
        .find(|k| kafka_partition(k, 8) >= 2)
        .expect("some key hashes beyond partition 1");
    let err = tokio::time::timeout(PATIENCE, producer.send(&key, b"v", Vec::new()))
        .await
        .expect("an answer within the patience")
        .expect_err("partition does not exist");
    let partition = kafka_partition(&key, 8);
    match &err {
        ProduceError::Enqueue { partition: p, .. }
        | ProduceError::Delivery { partition: p, .. } => {
            assert_eq!(*p, partition)
        }
        other => panic!("unexpected error {other:?}"),
    }
    assert!(
        err.to_string().contains(&format!("partition {partition}")),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fence_that_cannot_be_written_fails_the_held_records() {
    let (topic, partitions) = ("fence-fails", 2);
    let broker = broker_with_topic(topic, partitions);
    // The producer believes in 8 partitions, so a key whose home is beyond 1 has its fence
    // written to a partition that does not exist.
    let producer = KeyshiftProducer::builder(broker.client_settings(), topic)
        .routes(Routes::Durable(None))
        .partitions(8)
        .fence_attempts(2)
        .fence_backoff(Duration::from_millis(10))
        .property("message.timeout.ms", "2000")
        .build()
        .expect("producer");
    let key = (0..)
        .map(|i| key_name(i).into_bytes())
        .find(|k| kafka_partition(k, 8) >= 2)
        .expect("some key hashes beyond partition 1");
    let home = kafka_partition(&key, 8);
    producer.move_key(&key, 0).expect("valid partition");
    let pending: Vec<PendingDelivery> = (0..3)
        .map(|i| {
            producer
                .try_send(&key, format!("{i}").as_bytes(), Vec::new())
                .expect("enqueued")
        })
        .collect();
    // Another key is not affected by the failing fence.
    producer
        .send(b"location_other", b"v", Vec::new())
        .await
        .map(|d| assert_eq!(d.fenced_wait, None))
        .ok();
    for p in pending {
        let err = tokio::time::timeout(PATIENCE, p)
            .await
            .expect("an answer within the patience")
            .expect_err("the fence cannot be written");
        let ProduceError::Fence {
            fence_partition,
            attempts,
            ..
        } = &err
        else {
            panic!("expected a fence error, got {err:?}");
        };
        assert_eq!((*fence_partition, *attempts), (home, 2));
        assert!(err.to_string().contains("location_"), "{err}");
    }
    let stats = producer.stats();
    assert_eq!(stats.held_records, 0);
    assert_eq!(stats.fence_failures, 2);
    assert_eq!(stats.migrations, 0);
    assert!(stats.delivery_errors >= 3, "{stats:?}");
    assert!(
        producer.move_key(&key, 8).is_err(),
        "a partition outside the topic is refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_properties_reach_librdkafka_and_builder_properties_win() {
    let (topic, partitions) = ("passthrough", 2);
    let broker = broker_with_topic(topic, partitions);
    // -X on the shared settings changes librdkafka's behaviour: large records are refused.
    let settings: ClientSettings = broker
        .client_settings()
        .parse_properties(["message.max.bytes=1000", "linger.ms=1"])
        .expect("valid properties");
    let producer = KeyshiftProducer::builder(settings.clone(), topic)
        .build()
        .expect("producer");
    assert!(producer.send(b"k", &[0; 3000], Vec::new()).await.is_err());
    // A producer property applies after the shared -X: this producer accepts the record.
    let producer = KeyshiftProducer::builder(settings, topic)
        .property("message.max.bytes", "100000")
        .build()
        .expect("producer");
    let delivery = producer
        .send(b"k", &[0; 3000], Vec::new())
        .await
        .expect("accepted with the larger limit");
    assert_eq!(delivery.partition, kafka_partition(b"k", partitions));
    producer
        .flush(PATIENCE)
        .await
        .expect("flush completes with nothing pending");

    // An unknown property is a build error naming it.
    let err = KeyshiftProducer::builder(broker.client_settings(), topic)
        .property("no.such.property", "1")
        .build()
        .expect_err("unknown property");
    assert!(matches!(err, ProducerBuildError::Property(_)), "{err:?}");
    assert!(err.to_string().contains("no.such.property=1"), "{err}");
    // So is an inconsistent combination librdkafka only checks when creating the client.
    let err = KeyshiftProducer::builder(broker.client_settings(), topic)
        .property("acks", "0")
        .build()
        .expect_err("idempotence requires acks=all");
    assert!(matches!(err, ProducerBuildError::Client { .. }), "{err:?}");
    assert!(err.to_string().contains("acks"), "{err}");
    // A missing topic, an unknown strategy and zero fence attempts are refused too.
    let err = KeyshiftProducer::builder(broker.client_settings(), "no-such-topic")
        .build()
        .expect_err("missing topic");
    assert!(err.to_string().contains("no-such-topic"), "{err}");
    let err = KeyshiftProducer::builder(broker.client_settings(), topic)
        .strategy("roundrobin")
        .build()
        .expect_err("unknown strategy");
    assert!(err.to_string().contains("roundrobin"), "{err}");
    let err = KeyshiftProducer::builder(broker.client_settings(), topic)
        .fence_attempts(0)
        .build()
        .expect_err("zero attempts");
    assert!(err.to_string().contains("fence-attempts"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_librdkafka_queue_keeps_order_and_loses_nothing() {
    let (topic, partitions) = ("queue-full", 3);
    let broker = broker_with_topic(topic, partitions);
    // A tiny local queue: most sends find it full, so decided records go through the backlog.
    let producer = KeyshiftProducer::builder(broker.client_settings(), topic)
        .routes(Routes::Durable(None))
        .property("queue.buffering.max.messages", "5")
        .build()
        .expect("producer");
    let moved = b"location_3".to_vec();
    let home = kafka_partition(&moved, partitions);
    let mut pending = Vec::new();
    let mut refused = 0u64;
    for seq in 0..400u64 {
        if seq == 150 {
            producer
                .move_key(&moved, (home + 1) % partitions)
                .expect("valid");
        }
        let key = if seq % 2 == 0 {
            moved.clone()
        } else {
            key_name(seq % 11).into_bytes()
        };
        let p = loop {
            match producer.try_send(&key, seq.to_string().as_bytes(), Vec::new()) {
                Ok(p) => break p,
                Err(ProduceError::QueueFull { .. }) => {
                    refused += 1;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err(err) => panic!("unexpected error {err}"),
            }
        };
        pending.push((key, p));
    }
    await_all(pending).await;
    assert!(
        refused > 0,
        "the queue never filled up; the test did not exercise the backlog"
    );
    let stats = producer.stats();
    assert_eq!((stats.backlog, stats.held_records), (0, 0));
    assert_eq!((stats.fences, stats.migrations), (1, 1));

    let logs = read_all(&broker, topic, partitions);
    let data: usize = logs.iter().flatten().filter(|r| r.fence.is_none()).count();
    assert_eq!(data, 400, "every record is in the log exactly once");
    assert_eq!(assert_every_move_is_fenced(&logs), 1);
    // `send` retries on its own while the queue is full.
    for seq in 0..50u64 {
        producer
            .send(&moved, seq.to_string().as_bytes(), Vec::new())
            .await
            .expect("delivered");
    }
}

/// The route topic's content: the last value per key (a tombstone removes the key).
fn read_routes(broker: &EmbeddedBroker, topic: &str) -> HashMap<Vec<u8>, RouteEntry> {
    let routes = format!("{topic}{ROUTE_TOPIC_SUFFIX}");
    let partitions = broker
        .admin()
        .partitions(&routes)
        .expect("route topic exists");
    let mut out = HashMap::new();
    for rec in read_all(broker, &routes, partitions).into_iter().flatten() {
        if rec.value.is_empty() {
            out.remove(&rec.key);
        } else {
            out.insert(
                rec.key,
                RouteEntry::decode(&rec.value).expect("valid value"),
            );
        }
    }
    out
}

/// Issue 10 item 1 on a real broker: after a move back home, the first record of the home set
/// is refused (too large); the next record must still carry the route header, and only after a
/// headed record is acknowledged do records go home bare. The old migrator dropped the header
/// when the refused record was decided.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_record_back_home_keeps_the_header_for_the_next() {
    let (topic, partitions) = ("refused-home", 3);
    let broker = broker_with_topic(topic, partitions);
    let producer = KeyshiftProducer::builder(broker.client_settings(), topic)
        .routes(Routes::Durable(None))
        .partitions(partitions)
        .property("message.max.bytes", "1000")
        .build()
        .expect("producer");
    let key = b"location_3".to_vec();
    let home = kafka_partition(&key, partitions);
    let away = (home + 1) % partitions;
    producer.move_key(&key, away).expect("valid partition");
    let d = producer
        .send(&key, b"0", Vec::new())
        .await
        .expect("sent away");
    assert_eq!(d.partition, away);
    assert!(producer.unpin_key(&key));
    let err = producer
        .send(&key, &[b'x'; 5000], Vec::new())
        .await
        .expect_err("refused: larger than message.max.bytes");
    assert!(matches!(err, ProduceError::Enqueue { .. }), "{err:?}");
    let d1 = producer.send(&key, b"1", Vec::new()).await.expect("sent");
    let d2 = producer.send(&key, b"2", Vec::new()).await.expect("sent");
    assert_eq!((d1.partition, d2.partition), (home, home));

    let logs = read_all(&broker, topic, partitions);
    let fence = of_key(&logs, &key, away)
        .into_iter()
        .find(|r| r.fence.is_some())
        .expect("a fence on the away partition")
        .offset;
    let at_home = of_key(&logs, &key, home);
    let data: Vec<(u64, Option<RouteHeader>)> = at_home
        .iter()
        .filter(|r| r.fence.is_none())
        .map(|r| (r.seq(), r.route))
        .collect();
    let route = RouteHeader {
        set_index: 2,
        from_partition: away,
        fence_offset: fence,
    };
    assert_eq!(
        data,
        [(1, Some(route)), (2, None)],
        "the record after the refused one carries the header; once it is acknowledged the \
         next one needs none"
    );
    // Durable routes: the set away, then the set back home, then the tombstone once a headed
    // record at home was acknowledged.
    assert!(read_routes(&broker, topic).is_empty());
    assert_eq!(producer.stats().route_writes, 3);
}

/// Issue 10 item 6: moving keys needs an idempotent producer with acks=all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_keys_without_idempotence_or_acks_all_is_refused() {
    let (topic, partitions) = ("unsafe-moves", 2);
    let broker = broker_with_topic(topic, partitions);
    for (strategy, key, value) in [
        ("keyshift", "acks", "1"),
        ("slops", "acks", "0"),
        ("keyshift", "enable.idempotence", "false"),
    ] {
        let settings = broker
            .client_settings()
            .parse_properties([format!("{key}={value}")])
            .expect("valid property");
        let err = KeyshiftProducer::builder(settings, topic)
            .strategy(strategy)
            .build()
            .expect_err("unsafe for moves");
        assert!(
            matches!(&err, ProducerBuildError::UnsafeMoves { setting, .. } if *setting == key),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(text.contains(&format!("{key}={value}")), "{text}");
        assert!(text.contains(strategy), "{text}");
    }
    // `hash` never moves a key by itself: it builds (warning), but refuses a forced move.
    let producer = KeyshiftProducer::builder(broker.client_settings(), topic)
        .property("enable.idempotence", "false")
        .property("acks", "1")
        .build()
        .expect("hash builds");
    let err = producer.move_key(b"k", 1).expect_err("unsafe move");
    assert!(matches!(err, ProduceError::UnsafeMove { .. }), "{err:?}");
    assert!(
        err.to_string().contains("enable.idempotence=false"),
        "{err}"
    );
    producer.send(b"k", b"v", Vec::new()).await.expect("sent");
}

/// Part of issue 11: a moved key's route is in the route topic, and a new producer continues
/// it — fencing the key before sending it home — where an ephemeral one forgets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_routes_survive_a_new_producer_and_ephemeral_ones_do_not() {
    let (topic, partitions) = ("durable-routes", 3);
    let broker = broker_with_topic(topic, partitions);
    let key = b"location_5".to_vec();
    let home = kafka_partition(&key, partitions);
    let away = (home + 2) % partitions;
    {
        let producer = KeyshiftProducer::builder(broker.client_settings(), topic)
            .routes(Routes::Durable(None))
            .partitions(partitions)
            .build()
            .expect("producer");
        assert!(producer.stats().durable_routes);
        producer.move_key(&key, away).expect("valid partition");
        for i in 0..3 {
            let d = producer
                .send(&key, i.to_string().as_bytes(), Vec::new())
                .await
                .expect("sent");
            assert_eq!(d.partition, away);
        }
    }
    let routes = read_routes(&broker, topic);
    let logs = read_all(&broker, topic, partitions);
    let fence = of_key(&logs, &key, home)
        .into_iter()
        .find(|r| r.fence.is_some())
        .expect("fence at home")
        .offset;
    let set_1 = RouteHeader {
        set_index: 1,
        from_partition: home,
        fence_offset: fence,
    };
    assert_eq!(
        routes.get(&key),
        Some(&RouteEntry {
            partition: away,
            route: set_1
        })
    );

    // Routes kept in memory only: a new producer believes the key is at home.
    let ephemeral = KeyshiftProducer::builder(broker.client_settings(), topic)
        .partitions(partitions)
        .routes(Routes::Ephemeral)
        .build()
        .expect("producer");
    assert_eq!(ephemeral.current_partition(&key), home);
    assert!(!ephemeral.stats().durable_routes);
    drop(ephemeral);

    // A new producer with durable routes continues the recorded set, then fences it home.
    let producer = KeyshiftProducer::builder(broker.client_settings(), topic)
        .routes(Routes::Durable(None))
        .partitions(partitions)
        .build()
        .expect("producer");
    assert_eq!(producer.current_partition(&key), away);
    let d = producer.send(&key, b"3", Vec::new()).await.expect("sent");
    assert_eq!(d.partition, home);
    let logs = read_all(&broker, topic, partitions);
    let fence_away = of_key(&logs, &key, away)
        .into_iter()
        .find(|r| r.fence.is_some())
        .expect("a fence closes the restored set");
    assert_eq!(fence_away.route, Some(set_1));
    let back = of_key(&logs, &key, home)
        .into_iter()
        .find(|r| r.fence.is_none() && r.seq() == 3)
        .expect("record 3 at home");
    assert_eq!(
        back.route,
        Some(RouteHeader {
            set_index: 2,
            from_partition: away,
            fence_offset: fence_away.offset
        })
    );
}

/// Upgrading from durable routes: coordinated producers (the default) continue the set a
/// durable producer left in `<topic>.keyshift-routes`, and once they have moved a key through
/// their control log a durable producer of the topic is refused (it would not see the move).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinated_producers_continue_durable_routes_and_refuse_durable_ones_after() {
    let (topic, partitions) = ("upgrade-routes", 3);
    let broker = broker_with_topic(topic, partitions);
    let key = b"location_5".to_vec();
    let home = kafka_partition(&key, partitions);
    let away = (home + 2) % partitions;
    let durable = || {
        KeyshiftProducer::builder(broker.client_settings(), topic)
            .routes(Routes::Durable(None))
            .partitions(partitions)
            .build()
    };
    {
        let producer = durable().expect("durable producer");
        producer.move_key(&key, away).expect("valid partition");
        let d = producer.send(&key, b"0", Vec::new()).await.expect("sent");
        assert_eq!(d.partition, away);
    }
    let set_1 = read_routes(&broker, topic)[&key].route;

    let producer = KeyshiftProducer::builder(broker.client_settings(), topic)
        .partitions(partitions)
        .build()
        .expect("coordinated producer");
    assert!(
        producer.stats().coordination.is_some(),
        "coordinated by default"
    );
    assert_eq!(
        producer.current_partition(&key),
        away,
        "the durable route goes on"
    );
    let deadline = Instant::now() + PATIENCE;
    while !producer.stats().coordination.is_some_and(|c| c.decider) {
        assert!(Instant::now() < deadline, "the lone producer never decided");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let d = producer.send(&key, b"1", Vec::new()).await.expect("sent");
    assert_eq!(d.partition, away);
    // The decider moves it home: a commit in the control log, from the continued set.
    producer
        .move_key(&key, home)
        .expect("the decider moves keys");
    let mut seq = 2;
    while producer.current_partition(&key) != home {
        assert!(Instant::now() < deadline, "the move home never committed");
        producer
            .send(&key, seq.to_string().as_bytes(), Vec::new())
            .await
            .expect("sent");
        seq += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let d = producer
        .send(&key, seq.to_string().as_bytes(), Vec::new())
        .await
        .expect("sent");
    assert_eq!(d.partition, home);
    drop(producer);

    let logs = read_all(&broker, topic, partitions);
    assert!(
        of_key(&logs, &key, away)
            .iter()
            .filter(|r| r.fence.is_none())
            .all(|r| r.route == Some(set_1)),
        "the coordinated producer sent the key in the durable set"
    );
    let fence_away = of_key(&logs, &key, away)
        .into_iter()
        .find(|r| r.fence.is_some())
        .expect("a fence closes the continued set");
    // The first record back home waits for that fence (later ones follow it in the partition).
    let back = of_key(&logs, &key, home)
        .into_iter()
        .find(|r| r.fence.is_none())
        .expect("records back at home");
    assert_eq!(
        back.route,
        Some(RouteHeader {
            set_index: 2,
            from_partition: away,
            fence_offset: fence_away.offset
        })
    );

    let err = durable().expect_err("durable routes would ignore the coordinated move");
    let text = err.to_string();
    for part in [CONTROL_TOPIC_SUFFIX, "moved 1 key", "--routes coordinated"] {
        assert!(text.contains(part), "{part:?} missing from: {text}");
    }
}

/// A route topic that cannot be read is a build error naming it, not a fallback to hashing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_route_topic_fails_the_build() {
    let (topic, partitions) = ("bad-routes", 2);
    let broker = broker_with_topic(topic, partitions);
    let routes = format!("{topic}{ROUTE_TOPIC_SUFFIX}");
    broker.create_topic(&routes, 1).expect("route topic");
    let plain: rdkafka::producer::FutureProducer = broker
        .client_settings()
        .producer_config()
        .create()
        .expect("plain producer");
    plain
        .send(
            rdkafka::producer::FutureRecord::to(&routes)
                .key("location_1")
                .payload(&[0x07u8, 0x01][..]),
            PATIENCE,
        )
        .await
        .expect("written");
    let err = KeyshiftProducer::builder(broker.client_settings(), topic)
        .strategy("keyshift")
        .build()
        .expect_err("unknown version in the route topic");
    assert!(
        matches!(err, ProducerBuildError::RouteState { .. }),
        "{err:?}"
    );
    let text = err.to_string();
    for part in [
        routes.as_str(),
        "location_1",
        "unknown version 7",
        "ephemeral",
    ] {
        assert!(text.contains(part), "{part:?} missing from: {text}");
    }
    // The user can opt out explicitly; unordered strategies need no routes at all.
    KeyshiftProducer::builder(broker.client_settings(), topic)
        .strategy("keyshift")
        .routes(Routes::Ephemeral)
        .build()
        .expect("ephemeral routes");
    KeyshiftProducer::builder(broker.client_settings(), topic)
        .strategy("pkg")
        .build()
        .expect("pkg keeps no routes");
}

/// Issue 11, in one process: two coordinated producers of one topic. The first to start
/// decides; the follower cannot move keys; a key the decider moves is fenced by both (one
/// fence each on its old partition, each behind that producer's own records there), and the
/// route both then send it along waits for the higher fence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_coordinated_producers_move_a_key_as_one() {
    let (topic, partitions) = ("coordinated-pair", 3);
    let broker = broker_with_topic(topic, partitions);
    let build = || {
        KeyshiftProducer::builder(broker.client_settings(), topic)
            .partitions(partitions)
            .routes(Routes::Coordinated(None))
            .build()
            .expect("coordinated producer")
    };
    let first = build();
    let decides = |p: &KeyshiftProducer| p.stats().coordination.is_some_and(|c| c.decider);
    let deadline = Instant::now() + PATIENCE;
    while !decides(&first) {
        assert!(
            Instant::now() < deadline,
            "the first producer never decided"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let second = build();
    assert!(!decides(&second), "one decider at a time");
    let key = b"location_7".to_vec();
    let home = kafka_partition(&key, partitions);
    let away = (home + 1) % partitions;
    match second.move_key(&key, away) {
        Err(ProduceError::NotDecider { decider, .. }) => {
            let c = first.stats().coordination.unwrap();
            assert_eq!(decider, Some(c.member));
        }
        other => panic!("a follower must not move keys, got {other:?}"),
    }
    // Both send the key home first, then the decider moves it.
    for (i, p) in [&first, &second].into_iter().enumerate() {
        let d = p.send(&key, i.to_string().as_bytes(), Vec::new()).await;
        assert_eq!(d.expect("sent").partition, home);
    }
    // The pin becomes a proposal at the decider's next record of the key; that record still
    // goes home (the move is not in the log yet; it is ordered before the fences).
    first.move_key(&key, away).expect("the decider moves keys");
    let d = first.send(&key, b"2", Vec::new()).await.expect("sent");
    assert_eq!(d.partition, home);
    for p in [&first, &second] {
        while p.current_partition(&key) != away {
            assert!(
                Instant::now() < deadline,
                "a producer never installed the route"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    for (i, p) in [&first, &second].into_iter().enumerate() {
        let d = p
            .send(&key, (3 + i).to_string().as_bytes(), Vec::new())
            .await;
        assert_eq!(d.expect("sent").partition, away);
    }

    let logs = read_all(&broker, topic, partitions);
    let fences: Vec<i64> = of_key(&logs, &key, home)
        .into_iter()
        .filter(|r| r.fence.is_some())
        .map(|r| r.offset)
        .collect();
    assert_eq!(fences.len(), 2, "one fence per producer: {fences:?}");
    let records_home: Vec<i64> = of_key(&logs, &key, home)
        .into_iter()
        .filter(|r| r.fence.is_none())
        .map(|r| r.offset)
        .collect();
    let highest = *fences.iter().max().unwrap();
    assert!(records_home.iter().all(|&o| o < highest));
    for r in of_key(&logs, &key, away) {
        assert_eq!(
            r.route,
            Some(RouteHeader {
                set_index: 1,
                from_partition: home,
                fence_offset: highest
            }),
            "every record of the new set waits for the higher fence"
        );
    }
    let (a, b) = (first.stats(), second.stats());
    let (a, b) = (a.coordination.unwrap(), b.coordination.unwrap());
    assert_eq!((a.proposed, a.committed, b.committed), (1, 1, 1));
    assert_eq!(a.live_members, 2);
}
