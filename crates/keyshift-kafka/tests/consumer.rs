//! The ordered consumer against the embedded broker with real rdkafka clients: hostile
//! keyshift headers, commits that never pass a parked record, a clean stop, a migration
//! barrier between two members of one group read through OffsetFetch (with the serial check
//! that sees the moved key in one member at a time, and its negative control), and the guards of
//! issue 10: refused passthrough properties, a partition whose log lost its committed offset,
//! committed offsets that cannot be read, keys parked too long, null keys, and fences whose
//! headers were stripped.
//!
//! Every test starts its own broker. Waits are bounded and name what they wait for; nothing
//! asserts on durations.

mod consumer_util;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use consumer_util::{start_consumer, wait_until, FencedProducer, Hold, SeenLog};
use keyshift_core::probe::Probe;
use keyshift_core::protocol::{FenceHeader, RouteHeader, FENCE_HEADER, FENCE_VALUE, ROUTE_HEADER};
use keyshift_core::serial::SerialCheck;
use keyshift_kafka::{
    ClientSettings, ConsumerError, DeliveredRecord, EmbeddedBroker, OrderedConsumerBuilder,
    ParkPolicy,
};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

fn plain_producer(broker: &EmbeddedBroker) -> FutureProducer {
    broker
        .client_settings()
        .client_id("plain-test-producer")
        .producer_config()
        .create()
        .expect("producer")
}

/// Produces one record and returns its offset.
fn produce(
    producer: &FutureProducer,
    topic: &str,
    partition: i32,
    key: &str,
    value: &[u8],
    headers: &[(&str, &[u8])],
) -> i64 {
    produce_opt(producer, topic, partition, Some(key), value, headers)
}

/// Produces one record, with no key at all when `key` is None, and returns its offset.
fn produce_opt(
    producer: &FutureProducer,
    topic: &str,
    partition: i32,
    key: Option<&str>,
    value: &[u8],
    headers: &[(&str, &[u8])],
) -> i64 {
    let mut hs = OwnedHeaders::new();
    for (k, v) in headers {
        hs = hs.insert(Header {
            key: k,
            value: Some(*v),
        });
    }
    let mut record = FutureRecord::<str, [u8]>::to(topic)
        .partition(partition)
        .payload(value)
        .headers(hs);
    if let Some(key) = key {
        record = record.key(key);
    }
    let f = producer
        .send_result(record)
        .unwrap_or_else(|(e, _)| panic!("enqueue failed: {e}"));
    futures_executor::block_on(f)
        .unwrap()
        .unwrap_or_else(|(e, _)| panic!("not delivered: {e}"))
        .offset
}

fn probe(seq: u64) -> Vec<u8> {
    Probe {
        seq,
        sent_us: consumer_util::now_us(),
        body: String::new(),
    }
    .encode()
}

#[test]
fn malformed_and_unknown_version_headers_are_reported_and_delivered_unordered() {
    let broker = EmbeddedBroker::start().expect("broker");
    let topic = "hostile";
    broker.create_topic(topic, 1).unwrap();
    let producer = plain_producer(&broker);
    let unknown_version = {
        let mut v = RouteHeader::new(1, 0, 3).unwrap().encode();
        v[0] = 2;
        v
    };
    let fence_v9 = {
        let mut v = FenceHeader {
            set_index: 1,
            to_partition: 0,
        }
        .encode();
        v[0] = 9;
        v
    };
    // (key, headers, expected unordered flag)
    type Case = (&'static str, Vec<(&'static str, Vec<u8>)>, bool);
    let cases: Vec<Case> = vec![
        (
            "garbage-route",
            vec![(ROUTE_HEADER, b"\xff\xff\xff".to_vec())],
            true,
        ),
        ("empty-route", vec![(ROUTE_HEADER, Vec::new())], true),
        (
            "unknown-version-route",
            vec![(ROUTE_HEADER, unknown_version)],
            true,
        ),
        ("truncated-route", vec![(ROUTE_HEADER, vec![1, 3])], true),
        (
            "unknown-version-fence",
            vec![(FENCE_HEADER, fence_v9)],
            true,
        ),
        ("plain", vec![("other", b"x".to_vec())], false),
    ];
    for (i, (key, headers, _)) in cases.iter().enumerate() {
        let hs: Vec<(&str, &[u8])> = headers.iter().map(|(k, v)| (*k, v.as_slice())).collect();
        produce(&producer, topic, 0, key, &probe(i as u64), &hs);
    }

    let log = SeenLog::default();
    let consumer = start_consumer(
        &broker,
        "hostile-group",
        topic,
        "c1",
        &log,
        Duration::ZERO,
        |b| b,
    );
    wait_until("all hostile records delivered", || log.len() == cases.len());
    // The worker keeps running: a later well-formed record still comes through.
    produce(&producer, topic, 0, "after", &probe(0), &[]);
    wait_until("the record after the hostile ones", || {
        log.len() == cases.len() + 1
    });

    let seen = log.snapshot();
    for (i, (key, headers, unordered)) in cases.iter().enumerate() {
        let s = &seen[i];
        assert_eq!(&s.key, key, "records keep partition order");
        assert_eq!(s.unordered, *unordered, "unordered flag of {key}");
        assert_eq!(s.seq, Some(i as u64));
        // The application gets the headers as they were, the bad ones included.
        let got: Vec<(String, Vec<u8>)> = s
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().unwrap_or_default()))
            .collect();
        let want: Vec<(String, Vec<u8>)> = headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        assert_eq!(got, want, "headers of {key}");
    }
    assert!(!seen[cases.len()].unordered);
    let stats = consumer.stats().snapshot();
    assert_eq!(stats.malformed_headers, 5);
    assert_eq!(stats.unordered, 5);
    assert_eq!(stats.processed, cases.len() as u64 + 1);
    assert!(consumer.is_running());
    consumer.stop().expect("clean stop");

    // The clean stop committed everything processed.
    let committed = broker
        .admin()
        .committed_offsets("hostile-group", topic, 1)
        .unwrap();
    assert_eq!(committed, vec![Some(cases.len() as i64 + 1)]);
}

#[test]
fn commits_never_pass_a_parked_record() {
    let broker = EmbeddedBroker::start().expect("broker");
    let topic = "parked";
    let group = "parked-group";
    broker.create_topic(topic, 2).unwrap();
    let producer = plain_producer(&broker);
    // Partition 0: three records of other keys; K's old record and fence come later (the
    // fence at offset 5).
    for i in 0..3 {
        produce(&producer, topic, 0, "a", &probe(i), &[]);
    }
    // Partition 1: two other records, then K's first routed record waiting for fence 0@5,
    // then two more records of other keys, which must flow past the parked one.
    let route = RouteHeader::new(1, 0, 5).unwrap().encode();
    produce(&producer, topic, 1, "b", &probe(0), &[]);
    produce(&producer, topic, 1, "b", &probe(1), &[]);
    let parked_offset = produce(
        &producer,
        topic,
        1,
        "K",
        &probe(1),
        &[(ROUTE_HEADER, &route)],
    );
    produce(&producer, topic, 1, "c", &probe(0), &[]);
    produce(
        &producer,
        topic,
        1,
        "K",
        &probe(2),
        &[(ROUTE_HEADER, &route)],
    );
    produce(&producer, topic, 1, "c", &probe(1), &[]);
    assert_eq!(parked_offset, 2);

    let log = SeenLog::default();
    let consumer = start_consumer(&broker, group, topic, "c1", &log, Duration::ZERO, |b| {
        b.commit_interval(Duration::from_millis(20))
    });
    wait_until("other keys to flow past the parked key", || {
        log.len() == 3 + 4
    });
    assert_eq!(consumer.stats().snapshot().processed, 7);
    wait_until("K's two records parked", || {
        consumer.stats().parked_now() == 2
    });
    wait_until("commits of the processed prefixes", || {
        broker.admin().committed_offsets(group, topic, 2).unwrap() == vec![Some(3), Some(2)]
    });
    // One more record on partition 0: its commit comes from a commit round after every
    // record of partition 1 but K's was processed, and partition 1 still stays at K.
    produce(&producer, topic, 0, "a", &probe(3), &[]);
    wait_until("partition 0 committed past the new record", || {
        broker.admin().committed_offsets(group, topic, 2).unwrap()[0] == Some(4)
    });
    assert_eq!(
        broker.admin().committed_offsets(group, topic, 2).unwrap(),
        vec![Some(4), Some(2)],
        "the commit of partition 1 must stay at the parked record"
    );
    assert!(log.snapshot().iter().all(|s| s.key != "K"));

    // K's old records on partition 0, then the fence at offset 5: K is released.
    produce(&producer, topic, 0, "K", &probe(0), &[]);
    let fence = FenceHeader {
        set_index: 1,
        to_partition: 1,
    }
    .encode();
    let fence_offset = produce(&producer, topic, 0, "K", b"", &[(FENCE_HEADER, &fence)]);
    assert_eq!(fence_offset, 5);
    wait_until("K released after its fence", || log.len() == 8 + 3);
    wait_until("everything committed", || {
        broker.admin().committed_offsets(group, topic, 2).unwrap() == vec![Some(6), Some(6)]
    });
    let seen = log.snapshot();
    let k: Vec<(u64, bool)> = seen
        .iter()
        .filter(|s| s.key == "K")
        .map(|s| (s.seq.unwrap(), s.parked))
        .collect();
    assert_eq!(k, vec![(0, false), (1, true), (2, true)]);
    assert!(seen
        .iter()
        .filter(|s| s.parked)
        .all(|s| !s.park_time.is_zero()));
    let stats = consumer.stats().snapshot();
    assert_eq!(stats.fences, 1);
    assert_eq!(stats.parked_total, 2);
    assert_eq!(stats.park_time.len(), 2);
    assert_eq!(stats.order_violations, 0);
    assert_eq!(stats.duplicates, 0);
    assert_eq!(stats.e2e_latency.len(), 11);
    consumer.stop().unwrap();
}

#[test]
fn two_members_wait_for_each_others_commits_through_offset_fetch() {
    let broker = EmbeddedBroker::start().expect("broker");
    let topic = "two-members";
    let group = "two-members-group";
    broker.create_topic(topic, 2).unwrap();
    let log = SeenLog::default();
    // Witnesses that K is never inside both members' handlers at once (issue 11 item 5).
    let serial = Arc::new(Mutex::new(SerialCheck::new()));
    // The member that owns the key's old partition holds the key's records until the test
    // has seen the other member park the key's new records.
    let hold = Hold::held();
    let start = |name: &str| {
        let log = log.clone();
        let hold = hold.clone();
        let id = name.to_owned();
        OrderedConsumerBuilder::new(&broker.client_settings().client_id(name), group, topic)
            .session_timeout(Duration::from_secs(10))
            .shared_serial_check(Arc::clone(&serial))
            .spawn(move |r: &DeliveredRecord| {
                if r.key.as_deref() == Some(b"K") && r.route.is_none() {
                    hold.wait();
                }
                log.push(&id, r);
                Ok::<(), std::convert::Infallible>(())
            })
            .unwrap()
    };
    // One after the other: the group settles faster than when both join at once.
    let first = start("m1");
    wait_until("the first member to own both partitions", || {
        first.stats().snapshot().owned_partitions == 2
    });
    let members = [first, start("m2")];
    wait_until("each member to own one partition", || {
        members
            .iter()
            .all(|m| m.stats().snapshot().owned_partitions == 1)
    });

    // Releases the held handler even when an assertion fails, so the test cannot hang.
    let _release = hold.release_on_drop();

    let mut producer = FencedProducer::new(&broker, topic, 2);
    let home = producer.migrator.home(b"K");
    let away = 1 - home;
    // A key that lives on the away partition, so it needs no fence of its own.
    let other = (0..)
        .map(|i| format!("other-{i}"))
        .find(|k| producer.migrator.home(k.as_bytes()) == away)
        .unwrap();
    for _ in 0..5 {
        producer.send_to("K", home);
        producer.send_to(&other, away);
    }
    for _ in 0..5 {
        producer.send_to("K", away);
        producer.send_to(&other, away);
    }
    producer.flush();
    assert_eq!(producer.fences.len(), 1);

    // The new owner's records of K park; other keys there flow (10 "other" records).
    wait_until("K parked on its new partition", || {
        members.iter().any(|m| m.stats().parked_now() == 5)
    });
    wait_until("other keys processed past it", || {
        log.snapshot().iter().filter(|s| s.key == other).count() == 10
    });
    let waiting = members
        .iter()
        .find(|m| m.stats().parked_now() == 5)
        .unwrap();
    let checks = waiting.stats().snapshot().barrier_checks;
    wait_until("OffsetFetch barrier reads while parked", || {
        waiting.stats().snapshot().barrier_checks > checks + 2
    });
    assert!(log.snapshot().iter().all(|s| s.key != "K"));

    hold.release();
    wait_until("all 20 records processed", || log.len() == 20);
    let seen = log.snapshot();
    if std::env::var_os("KEYSHIFT_TEST_TRACE").is_some() {
        for s in &seen {
            eprintln!(
                "{} p{} o{} {} {:?} parked={}",
                s.consumer, s.partition, s.offset, s.key, s.seq, s.parked
            );
        }
    }
    let k: Vec<(u64, u32, String)> = seen
        .iter()
        .filter(|s| s.key == "K")
        .map(|s| (s.seq.unwrap(), s.partition, s.consumer.clone()))
        .collect();
    assert_eq!(
        k.iter().map(|x| x.0).collect::<Vec<_>>(),
        (0..10).collect::<Vec<_>>(),
        "K in order across the members: {k:?}"
    );
    assert!(k[..5].iter().all(|x| x.1 == home) && k[5..].iter().all(|x| x.1 == away));
    assert_ne!(k[0].2, k[5].2, "the key moved between members");
    let check = log.check();
    assert_eq!(
        (check.violations(), check.duplicates(), check.missing()),
        (0, 0, 0)
    );
    let stats = waiting.stats().snapshot();
    assert_eq!(stats.parked_total, 5);
    assert_eq!(
        serial.lock().unwrap().overlaps(),
        0,
        "K processed by one member at a time"
    );
    assert!(members
        .iter()
        .all(|m| m.stats().snapshot().concurrent_key_processing == 0));
    for m in members {
        m.stop().unwrap();
    }
}

/// The negative control of the serial check above: two consumers in *different* groups both
/// process every record, so with a handler that waits (bounded) until the other one is inside
/// the same key too, the shared check must count the overlap — the check can fail.
#[test]
fn the_serial_check_sees_one_key_in_two_consumers_at_once() {
    let broker = EmbeddedBroker::start().expect("broker");
    let topic = "serial-control";
    broker.create_topic(topic, 1).unwrap();
    let serial = Arc::new(Mutex::new(SerialCheck::new()));
    let inside = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = |name: &str| {
        let (inside, done) = (Arc::clone(&inside), Arc::clone(&done));
        OrderedConsumerBuilder::new(
            &broker.client_settings().client_id(name),
            format!("serial-{name}"),
            topic,
        )
        .session_timeout(Duration::from_secs(10))
        .shared_serial_check(Arc::clone(&serial))
        .spawn(move |r: &DeliveredRecord| {
            if r.probe.as_ref().map(|p| p.seq) == Some(0) {
                inside.fetch_add(1, Ordering::SeqCst);
                let since = std::time::Instant::now();
                while inside.load(Ordering::SeqCst) < 2 && since.elapsed() < consumer_util::PATIENCE
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            done.fetch_add(1, Ordering::SeqCst);
            Ok::<(), std::convert::Infallible>(())
        })
        .unwrap()
    };
    let consumers = [start("a"), start("b")];
    let mut producer = FencedProducer::new(&broker, topic, 1);
    for _ in 0..3 {
        producer.send_to("K", 0);
    }
    producer.flush();
    wait_until("both consumers processed the 3 records", || {
        done.load(Ordering::SeqCst) == 6
    });
    let overlaps = serial.lock().unwrap().overlaps();
    assert!(overlaps >= 1, "the check saw no overlap: {overlaps}");
    let reported: u64 = consumers
        .iter()
        .map(|c| c.stats().snapshot().concurrent_key_processing)
        .sum();
    assert_eq!(
        reported, overlaps,
        "each overlap is reported by the consumer that saw it"
    );
    for c in consumers {
        c.stop().unwrap();
    }
}

/// Commits `offset` for `partition` in `group` as a plain client would (no group membership).
fn commit_offset(broker: &EmbeddedBroker, group: &str, topic: &str, partition: i32, offset: i64) {
    let consumer: BaseConsumer = broker
        .client_settings()
        .client_id("offset-setter")
        .consumer_config(group)
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(offset))
        .unwrap();
    consumer.commit(&tpl, CommitMode::Sync).expect("commit");
}

fn committed(
    broker: &EmbeddedBroker,
    group: &str,
    topic: &str,
    partitions: u32,
) -> Vec<Option<i64>> {
    broker
        .admin()
        .committed_offsets(group, topic, partitions)
        .unwrap()
}

/// Issue 10, item 7: a passthrough property that would let librdkafka commit, store or reset
/// offsets behind the gate's back is refused, naming it.
#[test]
fn passthrough_properties_the_consumer_manages_are_refused_by_name() {
    for pair in [
        "enable.auto.commit=true",
        "auto.commit.enable=true",
        "enable.auto.offset.store=true",
        "auto.offset.reset=latest",
    ] {
        let key = pair.split('=').next().unwrap();
        // Nothing listens there: the refusal comes before any connection.
        let settings = ClientSettings::new("127.0.0.1:9")
            .parse_properties([pair])
            .unwrap();
        let result = OrderedConsumerBuilder::new(&settings, "g", "t")
            .spawn(|_: &DeliveredRecord| Ok::<(), std::convert::Infallible>(()));
        match result {
            Err(err @ ConsumerError::ManagedProperty { .. }) => {
                let text = err.to_string();
                assert!(text.contains(key), "{text}");
            }
            Err(other) => panic!("{pair}: unexpected error {other}"),
            Ok(c) => {
                c.crash();
                panic!("{pair} was accepted");
            }
        }
    }
    // Other properties still pass through.
    let settings = ClientSettings::new("127.0.0.1:9")
        .parse_properties(["auto.commit.interval.ms=1000"])
        .unwrap();
    let c = OrderedConsumerBuilder::new(&settings, "g", "t")
        .spawn(|_: &DeliveredRecord| Ok::<(), std::convert::Infallible>(()))
        .expect("an unmanaged property is accepted");
    c.crash();
}

/// Issue 10, item 3: the group's committed offset of a partition is past the end of its log
/// (what a truncation after an unclean leader election leaves), so librdkafka restarts the
/// partition at its earliest offset. Those records are below the committed offset: the
/// consumer stops that partition and reports it instead of dropping them as duplicates, and
/// the other partition keeps flowing.
#[test]
#[ignore = "on the embedded broker librdkafka did not deliver the records below a committed offset past the log end within 120 s; the rule is tested on the gate (protocol_gate.rs)"]
fn records_below_the_committed_offset_stop_their_partition_loudly() {
    let broker = EmbeddedBroker::start().expect("broker");
    let topic = "truncated";
    let group = "truncated-group";
    broker.create_topic(topic, 2).unwrap();
    let producer = plain_producer(&broker);
    for i in 0..3 {
        produce(&producer, topic, 0, "a", &probe(i), &[]);
    }
    commit_offset(&broker, group, topic, 0, 100);
    let log = SeenLog::default();
    let consumer = start_consumer(&broker, group, topic, "c1", &log, Duration::ZERO, |b| b);
    wait_until("the partition below its committed offset reported", || {
        let s = consumer.stats().snapshot();
        s.below_start > 0 && s.stalled_partitions == 1
    });
    // The other partition is unaffected.
    produce(&producer, topic, 1, "b", &probe(0), &[]);
    wait_until("the healthy partition processed", || log.len() == 1);
    let seen = log.snapshot();
    assert_eq!((seen[0].partition, seen[0].key.as_str()), (1, "b"));
    let stats = consumer.stats().snapshot();
    assert_eq!(
        stats.redelivered_skipped, 0,
        "not silently taken for duplicates"
    );
    assert_eq!(
        stats.paused_partitions, 1,
        "the stalled partition is paused"
    );
    consumer.stop().unwrap();
    assert_eq!(
        committed(&broker, group, topic, 2),
        vec![Some(100), Some(1)],
        "the stalled partition's committed offset is left for the operator"
    );
}

/// Issue 10, item 4: when the committed offsets cannot be read at assignment (here: a request
/// timeout no broker can meet), the consumer must not start from a guess and commit it. Before
/// the fix it started at the low watermark (or 0) and committed that, rewinding the group.
#[test]
fn an_unreadable_committed_offset_never_rewinds_the_group() {
    let broker = EmbeddedBroker::start().expect("broker");
    let topic = "unreadable";
    let group = "unreadable-group";
    broker.create_topic(topic, 2).unwrap();
    let producer = plain_producer(&broker);
    for i in 0..5 {
        produce(&producer, topic, 0, "a", &probe(i), &[]);
    }
    commit_offset(&broker, group, topic, 0, 5);
    let log = SeenLog::default();
    let consumer = start_consumer(&broker, group, topic, "c1", &log, Duration::ZERO, |b| {
        // Shorter than a millisecond: librdkafka gets no time to answer at all.
        b.request_timeout(Duration::from_micros(1))
            .commit_interval(Duration::from_millis(20))
    });
    wait_until("both partitions assigned", || {
        consumer.stats().snapshot().owned_partitions == 2
    });
    // A record on partition 1: its commit goes out with every other owned partition's.
    produce(&producer, topic, 1, "b", &probe(0), &[]);
    wait_until("partition 1 processed and committed", || {
        committed(&broker, group, topic, 2)[1] == Some(1)
    });
    assert_eq!(
        committed(&broker, group, topic, 2)[0],
        Some(5),
        "partition 0's committed offset moved backwards"
    );
    // Partition 0 still works from where the group was.
    produce(&producer, topic, 0, "a", &probe(5), &[]);
    wait_until("partition 0 committed past its new record", || {
        committed(&broker, group, topic, 2)[0] == Some(6)
    });
    assert_eq!(
        log.len(),
        2,
        "nothing below the committed offset was processed"
    );
    consumer.stop().unwrap();
}

/// Issue 10, item 5: a key whose barrier never passes is reported by partition, key, barrier and
/// age, and its parked records — more than the backpressure bound — never pause the other keys
/// of its partition. Before the fix the partition paused once `max_pending_per_partition`
/// records were pending, parked ones included, and the other keys stopped.
#[test]
fn a_key_parked_for_good_is_reported_and_never_stops_other_keys() {
    let broker = EmbeddedBroker::start().expect("broker");
    let topic = "blocked";
    let group = "blocked-group";
    broker.create_topic(topic, 2).unwrap();
    let producer = plain_producer(&broker);
    // A barrier that never passes: partition 1 will never be committed past offset 1000.
    let route = RouteHeader::new(1, 1, 1000).unwrap().encode();
    let log = SeenLog::default();
    let consumer = start_consumer(&broker, group, topic, "c1", &log, Duration::ZERO, |b| {
        b.max_pending_per_partition(5)
            .park_timeout(Duration::from_millis(100))
    });
    for i in 0..20 {
        produce(
            &producer,
            topic,
            0,
            "K",
            &probe(i),
            &[(ROUTE_HEADER, &route)],
        );
    }
    wait_until("K's 20 records parked", || {
        consumer.stats().parked_now() == 20
    });
    for i in 0..10 {
        produce(&producer, topic, 0, "x", &probe(i), &[]);
    }
    wait_until("the other key processed past the parked one", || {
        log.len() == 10
    });
    wait_until("K reported blocked", || {
        !consumer.stats().snapshot().blocked_keys.is_empty()
    });
    let stats = consumer.stats().snapshot();
    let b = &stats.blocked_keys[0];
    assert_eq!(
        (
            b.partition,
            &b.key[..],
            b.barrier_partition,
            b.fence_offset,
            b.records
        ),
        (0, &b"K"[..], 1, 1000, 20)
    );
    assert!(
        b.age >= Duration::from_millis(100),
        "reported after the park timeout"
    );
    assert_eq!(stats.paused_partitions, 0);
    assert_eq!(stats.order_exceptions, 0);
    assert!(log.snapshot().iter().all(|s| s.key == "x"));
    consumer.stop().unwrap();
    assert_eq!(
        committed(&broker, group, topic, 2)[0],
        Some(0),
        "the commit stays at K's first parked record"
    );
}

/// Issue 10, item 5: with the release policy, a key parked past the timeout is released
/// without its barrier, in its own order, and every record counts as an order exception.
#[test]
fn the_release_policy_releases_a_blocked_key_as_order_exceptions() {
    let broker = EmbeddedBroker::start().expect("broker");
    let topic = "released";
    let group = "released-group";
    broker.create_topic(topic, 2).unwrap();
    let producer = plain_producer(&broker);
    let route = RouteHeader::new(1, 1, 1000).unwrap().encode();
    for i in 0..3 {
        produce(
            &producer,
            topic,
            0,
            "K",
            &probe(i),
            &[(ROUTE_HEADER, &route)],
        );
    }
    produce(&producer, topic, 0, "x", &probe(0), &[]);
    let log = SeenLog::default();
    let consumer = start_consumer(&broker, group, topic, "c1", &log, Duration::ZERO, |b| {
        b.park_timeout(Duration::from_millis(100))
            .park_policy(ParkPolicy::Release)
    });
    wait_until("all four records processed", || log.len() == 4);
    let seen = log.snapshot();
    let k: Vec<(u64, bool, bool)> = seen
        .iter()
        .filter(|s| s.key == "K")
        .map(|s| (s.seq.unwrap(), s.parked, s.order_exception))
        .collect();
    assert_eq!(k, vec![(0, true, true), (1, true, true), (2, true, true)]);
    assert!(seen.iter().any(|s| s.key == "x" && !s.order_exception));
    let stats = consumer.stats().snapshot();
    assert_eq!(stats.order_exceptions, 3);
    assert_eq!(stats.order_violations, 0);
    wait_until("everything committed", || {
        committed(&broker, group, topic, 2)[0] == Some(4)
    });
    consumer.stop().unwrap();
}

/// Issue 10, item 8: records without a key are not the empty key. The empty key moved here and
/// parks; null-key records behind it flow (before the fix they shared the empty key's queue and
/// parked with it), and the application sees them as keyless.
#[test]
fn null_key_records_are_not_the_empty_key_and_never_park() {
    let broker = EmbeddedBroker::start().expect("broker");
    let topic = "null-keys";
    let group = "null-keys-group";
    broker.create_topic(topic, 2).unwrap();
    let producer = plain_producer(&broker);
    let route = RouteHeader::new(1, 1, 1000).unwrap().encode();
    produce(
        &producer,
        topic,
        0,
        "",
        &probe(0),
        &[(ROUTE_HEADER, &route)],
    );
    produce_opt(&producer, topic, 0, None, &probe(0), &[]);
    produce_opt(&producer, topic, 0, None, &probe(1), &[]);
    produce(&producer, topic, 0, "", &probe(1), &[]);
    let log = SeenLog::default();
    let consumer = start_consumer(&broker, group, topic, "c1", &log, Duration::ZERO, |b| b);
    wait_until("the null-key records processed", || log.len() == 2);
    let seen = log.snapshot();
    assert!(seen
        .iter()
        .all(|s| s.null_key && s.offset >= 1 && s.offset <= 2));
    assert_eq!(
        consumer.stats().parked_now(),
        2,
        "the empty key still parks"
    );
    let stats = consumer.stats().snapshot();
    assert_eq!((stats.order_violations, stats.duplicates), (0, 0));
    consumer.stop().unwrap();
}

/// Issue 10 item 11: a tool that drops headers (a mirror, say) leaves a fence recognisable by its
/// reserved value alone. The ordered consumer counts such a record as a fence and never hands
/// it to the application; an application's empty value, the marker under a broken fence header
/// (the header decides, not the value) and keyless records are still delivered, and the
/// partition's commit passes them all.
#[test]
fn a_headerless_record_with_the_fence_value_is_a_fence_not_data() {
    let broker = EmbeddedBroker::start().expect("broker");
    let topic = "stripped-fence";
    let group = "stripped-fence-group";
    broker.create_topic(topic, 1).unwrap();
    let producer = plain_producer(&broker);
    let fence = FenceHeader {
        set_index: 1,
        to_partition: 0,
    }
    .encode();
    let broken = {
        let mut v = fence.clone();
        v[0] = 9;
        v
    };
    produce(&producer, topic, 0, "a", &probe(0), &[]);
    // The fence the producer writes, with its headers stripped.
    produce(&producer, topic, 0, "K", FENCE_VALUE, &[]);
    produce(&producer, topic, 0, "empty", b"", &[]);
    produce(
        &producer,
        topic,
        0,
        "broken",
        FENCE_VALUE,
        &[(FENCE_HEADER, &broken)],
    );
    produce_opt(&producer, topic, 0, None, FENCE_VALUE, &[]);
    produce_opt(&producer, topic, 0, None, b"", &[(FENCE_HEADER, &fence)]);
    let last = produce(&producer, topic, 0, "a", &probe(1), &[]);

    let log = SeenLog::default();
    let consumer = start_consumer(&broker, group, topic, "c1", &log, Duration::ZERO, |b| b);
    wait_until("the last record delivered", || {
        log.snapshot().iter().any(|s| s.offset == last)
    });
    let seen: Vec<(i64, String, bool)> = log
        .snapshot()
        .into_iter()
        .map(|s| (s.offset, s.key, s.null_key))
        .collect();
    let want: Vec<(i64, String, bool)> = [
        (0, "a", false),
        (2, "empty", false),
        (3, "broken", false),
        (4, "", true),
        (5, "", true),
        (6, "a", false),
    ]
    .into_iter()
    .map(|(o, k, n)| (o, k.to_owned(), n))
    .collect();
    assert_eq!(seen, want, "the stripped fence (offset 1) is not data");
    wait_until("the stripped fence counted", || {
        consumer.stats().snapshot().fences == 1
    });
    let stats = consumer.stats().snapshot();
    assert_eq!(
        (stats.processed, stats.malformed_headers),
        (6, 1),
        "{stats:?}"
    );
    consumer.stop().expect("clean stop");
    assert_eq!(
        broker.admin().committed_offsets(group, topic, 1).unwrap(),
        vec![Some(last + 1)],
        "the commit passes the fence and every delivered record"
    );
}
