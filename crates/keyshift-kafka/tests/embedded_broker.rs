//! The embedded broker and the admin/offset helpers, driven with real rdkafka clients.
//!
//! Every test starts its own tansu broker (own port, own sqlite file) so tests run in
//! parallel without sharing state. Waits are bounded and fail with a message that says what
//! was being waited for; nothing asserts on durations.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use keyshift_kafka::{
    serve_standalone, AdminError, BrokerError, BrokerOptions, EmbeddedBroker, StandaloneOptions,
    TopicStatus,
};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

/// Upper bound for any wait on the broker; generous because the CPU is shared.
const PATIENCE: Duration = Duration::from_secs(90);

/// A produced record as the test expects to read it back.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Sent {
    partition: i32,
    offset: i64,
    key: Vec<u8>,
    value: Vec<u8>,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

/// Uneven on purpose (29/29/57/85 for 200 records), so a per-partition mix-up in end or
/// committed offsets cannot go unnoticed.
fn partition_of(i: usize) -> i32 {
    [0, 1, 2, 3, 3, 2, 3][i % 7]
}

/// Produces `count` records with keys, values and headers to explicit partitions below
/// `partitions` and returns them with the offsets from their delivery reports.
fn produce(broker: &EmbeddedBroker, topic: &str, partitions: i32, count: usize) -> Vec<Sent> {
    let producer: FutureProducer = broker
        .client_settings()
        .client_id("test-producer")
        .producer_config()
        .create()
        .expect("producer");
    let started = Instant::now();
    let mut pending = Vec::with_capacity(count);
    for i in 0..count {
        let sent = Sent {
            partition: partition_of(i) % partitions,
            offset: -1,
            key: format!("key-{}", i % 17).into_bytes(),
            value: format!("value-{i}").into_bytes(),
            headers: vec![
                ("seq".to_owned(), Some(i.to_be_bytes().to_vec())),
                ("origin".to_owned(), Some(b"keyshift-test".to_vec())),
                ("empty".to_owned(), Some(Vec::new())),
            ],
        };
        let mut headers = OwnedHeaders::new();
        for (key, value) in &sent.headers {
            headers = headers.insert(Header {
                key,
                value: value.as_deref(),
            });
        }
        let record = FutureRecord::to(topic)
            .partition(sent.partition)
            .key(&sent.key)
            .payload(&sent.value)
            .headers(headers);
        let delivery = producer
            .send_result(record)
            .unwrap_or_else(|(err, _)| panic!("enqueueing record {i} failed: {err}"));
        pending.push((sent, delivery));
    }
    let sent: Vec<Sent> = pending
        .into_iter()
        .enumerate()
        .map(|(i, (mut sent, delivery))| {
            let delivered = futures_executor::block_on(delivery)
                .expect("the producer was dropped before delivery")
                .unwrap_or_else(|(err, _)| panic!("record {i} was not delivered: {err}"));
            assert_eq!(delivered.partition, sent.partition, "record {i} partition");
            sent.offset = delivered.offset;
            sent
        })
        .collect();
    let elapsed = started.elapsed();
    eprintln!(
        "produced {count} records in {elapsed:?} ({:.0} records/s)",
        count as f64 / elapsed.as_secs_f64()
    );
    sent
}

fn counts_per_partition(sent: &[Sent], partitions: usize) -> Vec<i64> {
    let mut counts = vec![0i64; partitions];
    for record in sent {
        counts[record.partition as usize] += 1;
    }
    counts
}

fn member(broker: &EmbeddedBroker, group: &str, name: &str, topic: &str) -> BaseConsumer {
    let consumer: BaseConsumer = broker
        .client_settings()
        .client_id(name)
        .consumer_config(group)
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    consumer
}

#[test]
fn records_round_trip_through_a_two_member_group_and_offsets_are_exact() {
    let broker = EmbeddedBroker::start().expect("embedded broker");
    let topic = "round-trip";
    let group = "round-trip-group";
    assert_eq!(broker.create_topic(topic, 4).unwrap(), TopicStatus::Created);
    assert_eq!(broker.admin().partitions(topic).unwrap(), 4);

    let sent = produce(&broker, topic, 4, 200);
    let counts = counts_per_partition(&sent, 4);
    assert_eq!(counts, vec![29, 29, 57, 85]);
    // Offsets are dense per partition, starting at 0.
    for p in 0..4 {
        let offsets: Vec<i64> = sent
            .iter()
            .filter(|s| s.partition == p)
            .map(|s| s.offset)
            .collect();
        assert_eq!(
            offsets,
            (0..counts[p as usize]).collect::<Vec<_>>(),
            "partition {p}"
        );
    }

    // End offsets equal the counts produced: this is what tansu's memory:// engine gets wrong.
    assert_eq!(broker.admin().end_offsets(topic).unwrap(), counts);
    // The batched watermarks (one ListOffsets per broker for all partitions) say the same, and
    // a partition the topic does not have is a per-partition error, not a failed call.
    let probe: BaseConsumer = broker
        .client_settings()
        .consumer_config("watermarks-probe")
        .create()
        .unwrap();
    let mut asked: Vec<(String, i32)> = (0..4).map(|p| (topic.to_owned(), p)).collect();
    asked.push((topic.to_owned(), 9));
    let marks = keyshift_kafka::watermarks::watermarks(&probe, &asked, Duration::from_secs(10))
        .expect("the broker answers");
    for p in 0..4 {
        let w = marks[&(topic.to_owned(), p)].as_ref().unwrap();
        assert_eq!(*w, (0, counts[p as usize]), "partition {p}");
    }
    assert!(marks[&(topic.to_owned(), 9)].is_err(), "{marks:?}");

    // Two members; every record is committed synchronously once seen, so a rebalance while
    // consuming hands partitions over at exactly the next unseen record.
    let members = [
        member(&broker, group, "member-a", topic),
        member(&broker, group, "member-b", topic),
    ];
    let started = Instant::now();
    let deadline = started + PATIENCE;
    let mut received: BTreeMap<(i32, i64), (usize, Sent)> = BTreeMap::new();
    let mut duplicates = Vec::new();
    let mut both_assigned = false;
    while received.len() < sent.len() || !both_assigned {
        assert!(
            Instant::now() < deadline,
            "after {PATIENCE:?}: received {} of {} records; both members assigned: {both_assigned}",
            received.len(),
            sent.len()
        );
        for (index, consumer) in members.iter().enumerate() {
            let Some(result) = consumer.poll(Duration::from_millis(50)) else {
                continue;
            };
            let message = result.expect("consumer error");
            let headers = message
                .headers()
                .map(|headers| {
                    headers
                        .iter()
                        .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                        .collect()
                })
                .unwrap_or_default();
            let got = Sent {
                partition: message.partition(),
                offset: message.offset(),
                key: message.key().expect("key").to_vec(),
                value: message.payload().expect("value").to_vec(),
                headers,
            };
            consumer
                .commit_message(&message, CommitMode::Sync)
                .expect("commit");
            if let Some(previous) = received.insert((got.partition, got.offset), (index, got)) {
                duplicates.push(previous);
            }
        }
        if !both_assigned {
            both_assigned = members
                .iter()
                .all(|m| m.assignment().map(|a| a.count() > 0).unwrap_or(false));
            if both_assigned {
                eprintln!(
                    "both members assigned after {:?}, {} records received by then",
                    started.elapsed(),
                    received.len()
                );
            }
        }
    }
    let elapsed = started.elapsed();
    eprintln!(
        "consumed {} records with 2 members in {elapsed:?} ({:.0} records/s, one sync commit each)",
        received.len(),
        received.len() as f64 / elapsed.as_secs_f64()
    );
    assert!(duplicates.is_empty(), "duplicates: {duplicates:?}");
    for expected in &sent {
        let (_, got) = received
            .get(&(expected.partition, expected.offset))
            .unwrap_or_else(|| panic!("missing {expected:?}"));
        assert_eq!(got, expected);
    }
    let assigned: Vec<usize> = members
        .iter()
        .map(|m| m.assignment().unwrap().count())
        .collect();
    assert_eq!(assigned.iter().sum::<usize>(), 4, "assignment {assigned:?}");

    // The barrier check: a client that is not a member reads the group's committed offsets
    // for partitions the members own right now.
    assert_eq!(
        broker.admin().committed_offsets(group, topic, 4).unwrap(),
        counts.iter().map(|&c| Some(c)).collect::<Vec<_>>()
    );
    assert_eq!(
        broker.admin().committed_offset(group, topic, 3).unwrap(),
        Some(85)
    );
    // A group that never committed has no offsets, rather than an error or zero.
    assert_eq!(
        broker
            .admin()
            .committed_offsets("never-committed", topic, 4)
            .unwrap(),
        vec![None; 4]
    );
    drop(members);
    broker.shutdown();
}

#[test]
fn create_topic_is_idempotent_and_names_the_topic_in_errors() {
    let broker = EmbeddedBroker::start().expect("embedded broker");
    assert_eq!(broker.create_topic("t3", 3).unwrap(), TopicStatus::Created);
    assert_eq!(
        broker.create_topic("t3", 3).unwrap(),
        TopicStatus::AlreadyExists
    );

    let err = broker.create_topic("t3", 5).unwrap_err();
    assert!(
        matches!(
            err,
            BrokerError::Admin(AdminError::PartitionMismatch {
                ref topic,
                existing: 3,
                requested: 5
            }) if topic == "t3"
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("'t3'"), "{err}");

    let err = broker.admin().create_topic("t0", 0).unwrap_err();
    assert!(
        matches!(err, AdminError::InvalidPartitions { partitions: 0, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("'t0'"), "{err}");

    let err = broker.admin().partitions("missing").unwrap_err();
    assert!(
        matches!(err, AdminError::UnknownTopic { ref topic } if topic == "missing"),
        "{err:?}"
    );
    // Asking about a missing topic must not create it.
    assert!(matches!(
        broker.admin().end_offsets("missing"),
        Err(AdminError::UnknownTopic { .. })
    ));

    assert_eq!(broker.admin().end_offsets("t3").unwrap(), vec![0, 0, 0]);
}

#[test]
fn shutdown_frees_the_port_and_removes_the_data() {
    let broker = EmbeddedBroker::start().expect("embedded broker");
    let addr = broker.addr();
    let data_dir = broker.data_dir().to_path_buf();
    assert!(addr.ip().is_loopback(), "{addr}");
    assert!(
        data_dir.join("tansu.db").is_file(),
        "sqlite file in {data_dir:?}"
    );
    broker.create_topic("before", 2).unwrap();
    // Leave a live client connection open across the shutdown.
    let sent = produce(&broker, "before", 2, 5);
    assert_eq!(sent.len(), 5);
    broker.shutdown();
    assert!(!data_dir.exists(), "{data_dir:?} was not removed");

    // Same address again: the listener and its connections are gone.
    let again = EmbeddedBroker::start_with(BrokerOptions {
        listen: Some(addr),
        ..BrokerOptions::default()
    })
    .expect("second broker on the same port");
    assert_eq!(again.bootstrap_servers(), addr.to_string());
    // Fresh storage: the old topic is gone.
    assert!(matches!(
        again.admin().partitions("before"),
        Err(AdminError::UnknownTopic { .. })
    ));
    drop(again);
    TcpListener::bind(addr).expect("port free after drop");
}

#[test]
fn a_data_dir_keeps_topics_and_records_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let options = BrokerOptions {
        data_dir: Some(dir.path().to_path_buf()),
        ..BrokerOptions::default()
    };
    let broker = EmbeddedBroker::start_with(options.clone()).expect("embedded broker");
    broker.create_topic("kept", 4).unwrap();
    let sent = produce(&broker, "kept", 4, 20);
    broker.shutdown();
    assert!(dir.path().join("tansu.db").is_file());

    let broker = EmbeddedBroker::start_with(options).expect("restarted broker");
    assert_eq!(
        broker.create_topic("kept", 4).unwrap(),
        TopicStatus::AlreadyExists
    );
    assert_eq!(
        broker.admin().end_offsets("kept").unwrap(),
        counts_per_partition(&sent, 4)
    );
}

#[test]
fn starting_on_a_taken_port_fails_with_the_address() {
    let taken = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let addr = taken.local_addr().unwrap();
    let err = EmbeddedBroker::start_with(BrokerOptions {
        listen: Some(addr),
        ..BrokerOptions::default()
    })
    .unwrap_err();
    assert!(
        matches!(err, BrokerError::Failed { addr: a, .. } if a == addr),
        "{err:?}"
    );
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
}

#[tokio::test]
async fn standalone_runner_creates_the_topic_reports_ready_and_stops() {
    let addr: SocketAddr = {
        let probe = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        probe.local_addr().unwrap()
    };
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let runner = tokio::spawn(serve_standalone(
        StandaloneOptions {
            listen: addr,
            topic: Some(("standalone".to_owned(), 6)),
            ..StandaloneOptions::default()
        },
        async move {
            let _ = stop_rx.await;
        },
        move |broker| {
            let _ = ready_tx.send(broker.client_settings());
        },
    ));
    let settings = tokio::time::timeout(PATIENCE, ready_rx)
        .await
        .expect("standalone broker not ready in time")
        .expect("runner ended before reporting ready");
    assert_eq!(settings.bootstrap_servers(), addr.to_string());
    let partitions = tokio::task::spawn_blocking(move || {
        keyshift_kafka::Admin::new(&settings).and_then(|admin| admin.partitions("standalone"))
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(partitions, 6);

    stop_tx.send(()).unwrap();
    tokio::time::timeout(PATIENCE, runner)
        .await
        .expect("standalone broker did not stop in time")
        .unwrap()
        .expect("standalone broker failed");
    TcpListener::bind(addr).expect("port free after the runner returned");
}

/// The control log of coordinated producers on a real broker: a member that opens the topic
/// later replays the same state; a tail sees records in log order with their effects, ignores
/// a replaced decider's late commit and skips a value it cannot decode; a control topic with
/// two partitions is refused by name.
#[test]
fn the_control_log_replays_and_tails_in_one_order_for_every_member() {
    use keyshift_core::protocol::control::{Control, Effect, MoveId, Rejected};
    use keyshift_core::protocol::{RouteEntry, RouteHeader};
    use keyshift_kafka::control::ControlTopic;

    let broker = EmbeddedBroker::start().expect("broker");
    let settings = broker.client_settings();
    let name = "orders.keyshift-control";
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (a, replayed) = ControlTopic::open(&settings, name, PATIENCE).expect("open");
    assert_eq!((replayed.log.term(), replayed.next_offset), (0, 0));
    let id = MoveId { term: 1, seq: 1 };
    let entry = RouteEntry {
        partition: 2,
        route: RouteHeader {
            set_index: 1,
            from_partition: 0,
            fence_offset: 17,
        },
    };
    let key: Box<[u8]> = b"k".as_slice().into();
    let history = [
        Control::Claim { term: 1, member: 1 },
        Control::Propose {
            id,
            member: 1,
            key: key.clone(),
            to: 2,
        },
        Control::Ready {
            id,
            member: 2,
            fence_offset: 17,
        },
        Control::Commit {
            id,
            member: 1,
            key: key.clone(),
            entry: Some(entry),
        },
    ];
    for (i, r) in history.iter().enumerate() {
        assert_eq!(rt.block_on(a.write(r)).expect("write"), i as i64);
    }

    let (b, replayed) = ControlTopic::open(&settings, name, PATIENCE).expect("second open");
    assert_eq!(replayed.next_offset, 4);
    assert_eq!((replayed.log.term(), replayed.log.decider()), (1, Some(1)));
    assert_eq!(replayed.log.route(&key), Some(&entry));
    let (tx, rx) = std::sync::mpsc::channel();
    let tail = b
        .tail(replayed, move |offset, _, effect| {
            let _ = tx.send((offset, effect.clone()));
        })
        .expect("tail");
    // Member 2 takes over; member 1, not knowing, commits a second move afterwards.
    rt.block_on(b.write(&Control::Claim { term: 2, member: 2 }))
        .unwrap();
    let garbage: FutureProducer = settings.producer_config().create().unwrap();
    rt.block_on(
        garbage.send(
            FutureRecord::to(name)
                .partition(0)
                .key("junk")
                .payload("not a record"),
            Duration::from_secs(10),
        ),
    )
    .expect("garbage written");
    rt.block_on(a.write(&Control::Commit {
        id: MoveId { term: 1, seq: 2 },
        member: 1,
        key: key.clone(),
        entry: None,
    }))
    .unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        seen.push(rx.recv_timeout(PATIENCE).expect("tail reports"));
    }
    drop(tail);
    assert_eq!(
        seen,
        [
            (
                4,
                Effect::Decider {
                    term: 2,
                    member: 2,
                    aborted: vec![],
                    growth_aborted: false,
                }
            ),
            (6, Effect::Ignored(Rejected::StaleTerm)),
        ]
    );
    assert_eq!(b.skipped(), 1, "the undecodable value at offset 5");

    broker.create_topic("wide.keyshift-control", 2).unwrap();
    let err = ControlTopic::open(&settings, "wide.keyshift-control", PATIENCE).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("wide.keyshift-control") && text.contains("exactly 1"),
        "{text}"
    );
}

/// Records librdkafka's error callbacks (where an authentication failure is explained).
#[derive(Default)]
struct Errors(std::sync::Mutex<Vec<String>>);

impl rdkafka::ClientContext for Errors {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.0.lock().unwrap().push(format!("{error}: {reason}"));
    }
}

impl rdkafka::consumer::ConsumerContext for Errors {}

/// SASL on the embedded broker: with users, the broker's own clients and a client of the
/// first user (SCRAM-SHA-512) create a topic and produce, another user reads it back with
/// SCRAM-SHA-256; a wrong password is refused with librdkafka's error naming SCRAM and the
/// broker's "invalid-proof" (and never the password), and a client without SASL gets no
/// metadata.
#[test]
fn sasl_users_authenticate_with_scram_and_wrong_passwords_are_refused() {
    use keyshift_kafka::{ClientSettings, SaslUser};
    let broker = EmbeddedBroker::start_with(BrokerOptions {
        sasl_users: vec![
            SaslUser::new("alice", "alice-pw"),
            SaslUser::new("bob", "bob-pw"),
        ],
        ..BrokerOptions::default()
    })
    .expect("broker with SASL users");
    broker.create_topic("secured", 2).unwrap();
    let sent = produce(&broker, "secured", 2, 20);

    let as_user = |mechanism: &str, user: &str, password: &str| {
        ClientSettings::new(broker.bootstrap_servers())
            .parse_properties([
                "security.protocol=SASL_PLAINTEXT".to_owned(),
                format!("sasl.mechanism={mechanism}"),
                format!("sasl.username={user}"),
                format!("sasl.password={password}"),
            ])
            .unwrap()
    };
    let bob: BaseConsumer = as_user("SCRAM-SHA-256", "bob", "bob-pw")
        .consumer_config("readers")
        .create()
        .unwrap();
    let mut assignment = rdkafka::TopicPartitionList::new();
    for p in 0..2 {
        assignment
            .add_partition_offset("secured", p, rdkafka::Offset::Beginning)
            .unwrap();
    }
    bob.assign(&assignment).unwrap();
    let deadline = Instant::now() + PATIENCE;
    let mut read = 0;
    while read < sent.len() {
        assert!(
            Instant::now() < deadline,
            "bob read {read} of {}",
            sent.len()
        );
        if let Some(Ok(_)) = bob.poll(Duration::from_millis(200)) {
            read += 1;
        }
    }

    let wrong: BaseConsumer<Errors> = as_user("SCRAM-SHA-256", "bob", "not-bobs")
        .consumer_config("intruders")
        .create_with_context(Errors::default())
        .unwrap();
    assert!(wrong
        .fetch_metadata(Some("secured"), Duration::from_secs(5))
        .is_err());
    // Error callbacks are served by poll.
    let deadline = Instant::now() + PATIENCE;
    while wrong.context().0.lock().unwrap().is_empty() && Instant::now() < deadline {
        let _ = wrong.poll(Duration::from_millis(100));
    }
    let said = wrong.context().0.lock().unwrap().join("\n");
    eprintln!("wrong password: {said}");
    assert!(
        said.contains("SASL SCRAM authentication failed") && said.contains("invalid-proof"),
        "{said}"
    );
    assert!(!said.contains("not-bobs"), "{said}");

    let plain: BaseConsumer = ClientSettings::new(broker.bootstrap_servers())
        .consumer_config("anonymous")
        .create()
        .unwrap();
    assert!(plain
        .fetch_metadata(Some("secured"), Duration::from_secs(5))
        .is_err());
}
