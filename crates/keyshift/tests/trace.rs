//! `keyshift trace aggregate` as a user runs it: the real binary against the embedded broker,
//! events written to `_tracing` by a plain rdkafka producer, enriched records read back from
//! `_aggregatedTrace`, `/metrics` over real HTTP, SIGTERM and SIGKILL.

mod process_support;
use process_support::{http_addr, http_get, signal_and_wait};

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use keyshift_kafka::EmbeddedBroker;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};

const PATIENCE: Duration = Duration::from_secs(120);
const CORR: &str = "af8074bc-a042-46ef-8064-203fa26cd9b3";
const TPO_KEY: &str = r#"{"topic":"test","partition":0,"offset":0}"#;

fn get(addr: &str, path: &str) -> String {
    let (status, body) = http_get(addr, path);
    assert!(status.starts_with("HTTP/1.1 200"), "{status} {body}");
    body
}

/// The value of sample `series` (name plus labels, exactly as exposed).
fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

fn produce(broker: &EmbeddedBroker, topic: &str, events: &[(String, Value)]) {
    let producer: BaseProducer = broker.client_settings().producer_config().create().unwrap();
    for (key, value) in events {
        let payload = value.to_string();
        producer
            .send(BaseRecord::to(topic).key(key).payload(&payload))
            .map_err(|(e, _)| e)
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

/// Starts `keyshift trace aggregate` and returns it with its metrics address.
fn start_aggregator(broker: &EmbeddedBroker, extra: &[&str]) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_keyshift"))
        .args([
            "trace",
            "aggregate",
            "--bootstrap-servers",
            broker.bootstrap_servers(),
            "--metrics-listen",
            "127.0.0.1:0",
            "--commit-interval-ms",
            "50",
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("keyshift trace aggregate starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (child, http_addr(&line))
}

/// One record of `_aggregatedTrace`: key, value and the source header.
#[derive(Debug, Clone)]
struct Aggregated {
    key: Value,
    value: Value,
    source: String,
}

/// Everything in `topic` right now (to its high watermarks).
fn read_all(broker: &EmbeddedBroker, topic: &str) -> Vec<Aggregated> {
    let consumer: BaseConsumer = broker
        .client_settings()
        .consumer_config("test-reader")
        .create()
        .unwrap();
    let partitions = broker.admin().partitions(topic).unwrap_or(0) as i32;
    let mut tpl = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for p in 0..partitions {
        let (_, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(30))
            .unwrap();
        if high > 0 {
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .unwrap();
            ends.insert(p, high);
        }
    }
    let mut records = Vec::new();
    if ends.is_empty() {
        return records;
    }
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + PATIENCE;
    while !ends.is_empty() {
        assert!(Instant::now() < deadline, "could not read {topic}");
        let Some(m) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let m = m.unwrap();
        let source = m
            .headers()
            .and_then(|h| h.iter().find(|h| h.key == "keyshift-trace-source"))
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default();
        records.push(Aggregated {
            key: serde_json::from_slice(m.key().unwrap()).unwrap(),
            value: serde_json::from_slice(m.payload().unwrap()).unwrap(),
            source,
        });
        if ends
            .get(&m.partition())
            .is_some_and(|e| m.offset() + 1 >= *e)
        {
            ends.remove(&m.partition());
        }
    }
    records
}

fn wait_for_records(
    broker: &EmbeddedBroker,
    topic: &str,
    done: impl Fn(&[Aggregated]) -> bool,
) -> Vec<Aggregated> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let records = read_all(broker, topic);
        if done(&records) {
            return records;
        }
        assert!(
            Instant::now() < deadline,
            "{topic} never had the expected records; it has {}: {records:#?}",
            records.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The seed README's example, as the Java interceptors write it to `_tracing`.
fn seed_raw_events() -> Vec<(String, Value)> {
    vec![
        (
            format!(r#"{{"correlationId":"{CORR}"}}"#),
            json!({"topic": "test", "correlationId": CORR,
                   "date": "2020-03-25T15:41:01.365287Z", "type": "SEND", "clientId": "myProducer"}),
        ),
        (
            TPO_KEY.to_owned(),
            json!({"topic": "test", "partition": 0, "offset": 0,
                   "date": "2020-03-25T15:41:01.966082Z", "type": "ACK", "clientId": "myProducer"}),
        ),
        (
            TPO_KEY.to_owned(),
            json!({"topic": "test", "partition": 0, "offset": 0, "correlationId": CORR,
                   "date": "2020-03-25T15:41:37.844039Z", "type": "CONSUME",
                   "clientId": "myConsumer", "groupId": "myGroup"}),
        ),
        (
            TPO_KEY.to_owned(),
            json!({"topic": "test", "partition": 0, "offset": 0,
                   "date": "2020-03-25T15:41:37.851339Z", "type": "COMMIT",
                   "clientId": "myConsumer", "groupId": "myGroup"}),
        ),
    ]
}

#[test]
fn seed_events_become_the_documented_records_and_replays_are_over_consumption() {
    let broker = EmbeddedBroker::start().expect("broker");
    broker.create_topic("_tracing", 1).unwrap();
    produce(&broker, "_tracing", &seed_raw_events());
    let (mut child, addr) = start_aggregator(&broker, &[]);

    let records = wait_for_records(&broker, "_aggregatedTrace", |r| r.len() >= 4);
    let documented = [
        json!({"date": "2020-03-25T15:41:01.365287Z", "type": "SEND", "topic": "test",
               "partition": 0, "offset": 0, "correlationId": CORR, "clientId": "myProducer"}),
        json!({"date": "2020-03-25T15:41:01.966082Z", "type": "ACK", "topic": "test",
               "partition": 0, "offset": 0, "correlationId": CORR, "clientId": "myProducer",
               "durationMs": 600}),
        json!({"date": "2020-03-25T15:41:37.844039Z", "type": "CONSUME", "topic": "test",
               "partition": 0, "offset": 0, "correlationId": CORR, "clientId": "myConsumer",
               "groupId": "myGroup", "durationMs": 36478}),
        json!({"date": "2020-03-25T15:41:37.851339Z", "type": "COMMIT", "topic": "test",
               "partition": 0, "offset": 0, "correlationId": CORR, "clientId": "myConsumer",
               "groupId": "myGroup", "durationMs": 7}),
    ];
    let values: Vec<Value> = records.iter().map(|r| r.value.clone()).collect();
    assert_eq!(values, documented);
    for r in &records {
        assert_eq!(r.key, json!({"topic": "test", "partition": 0, "offset": 0}));
    }

    // The group is rewound and test/0/0 is consumed again after its commit.
    let mut replay = seed_raw_events()[2].clone();
    replay.1["date"] = json!("2020-03-25T15:42:00Z");
    produce(&broker, "_tracing", &[replay]);
    let records = wait_for_records(&broker, "_aggregatedTrace", |r| r.len() >= 5);
    assert_eq!(records.len(), 5);
    assert_eq!(records[4].value["type"], "CONSUME");
    assert_eq!(records[4].value["overConsumption"], "afterCommit");

    let deadline = Instant::now() + PATIENCE;
    let body = loop {
        let body = get(&addr, "/metrics");
        let over = sample(
            &body,
            r#"keyshift_trace_overconsumption_total{topic="test",group="myGroup"}"#,
        );
        if over == Some(1.0) {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "no over-consumption metric:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let series = |s: &str| sample(&body, s).unwrap_or_else(|| panic!("no {s} in\n{body}"));
    assert_eq!(
        series(r#"keyshift_trace_consume_latency_seconds_count{topic="test",group="myGroup"}"#),
        2.0
    );
    assert_eq!(
        series(r#"keyshift_trace_commit_latency_seconds_count{topic="test",group="myGroup"}"#),
        1.0
    );
    assert_eq!(
        series(r#"keyshift_trace_ack_latency_seconds_sum{topic="test"}"#),
        0.6
    );
    assert_eq!(
        series(r#"keyshift_trace_events_total{type="CONSUME"}"#),
        2.0
    );
    assert_eq!(
        series("keyshift_trace_dropped_events_total{type=\"ACK\"}"),
        0.0
    );

    let status = signal_and_wait(&mut child, "-TERM", "aggregator");
    assert!(status.success(), "exit status {status}");
}

/// SEND, ACK (with correlation id, as keyshift's producer writes it), CONSUME and COMMIT
/// for records `range` of `test` (two partitions).
fn keyshift_events(range: std::ops::Range<i64>) -> Vec<(String, Value)> {
    let date = |i: i64, ms: i64| {
        let t = i * 10 + ms;
        format!(
            "2026-11-25T10:{:02}:{:02}.{:03}Z",
            t / 60_000,
            (t / 1000) % 60,
            t % 1000
        )
    };
    let mut events = Vec::new();
    for i in range {
        let (partition, offset) = (i % 2, i / 2);
        let corr = format!("c{i}");
        let key = json!({"topic": "test", "partition": partition, "offset": offset}).to_string();
        events.push((
            json!({"correlationId": corr}).to_string(),
            json!({"topic": "test", "correlationId": corr, "date": date(i, 0), "type": "SEND", "clientId": "p"}),
        ));
        events.push((
            key.clone(),
            json!({"topic": "test", "partition": partition, "offset": offset, "correlationId": corr,
                   "date": date(i, 2), "type": "ACK", "clientId": "p"}),
        ));
        events.push((
            key.clone(),
            json!({"topic": "test", "partition": partition, "offset": offset, "correlationId": corr,
                   "date": date(i, 5), "type": "CONSUME", "clientId": "c", "groupId": "g"}),
        ));
        events.push((
            key,
            json!({"topic": "test", "partition": partition, "offset": offset,
                   "date": date(i, 6), "type": "COMMIT", "clientId": "c", "groupId": "g"}),
        ));
    }
    events
}

/// What identifies an aggregated record: type, position, and correlation id.
fn identity(r: &Aggregated) -> (String, i64, i64, String) {
    let v = &r.value;
    (
        v["type"].as_str().unwrap().to_owned(),
        v["partition"].as_i64().unwrap(),
        v["offset"].as_i64().unwrap(),
        v["correlationId"].as_str().unwrap_or_default().to_owned(),
    )
}

#[test]
fn killed_and_restarted_aggregator_loses_and_duplicates_nothing() {
    let broker = EmbeddedBroker::start().expect("broker");
    broker.create_topic("_tracing", 2).unwrap();
    let records = 150;
    let expected = 4 * records as usize;
    produce(&broker, "_tracing", &keyshift_events(0..records / 2));

    // First run: killed with SIGKILL once part of the output is written — no clean flush,
    // no final commit.
    let (mut child, _) = start_aggregator(&broker, &[]);
    wait_for_records(&broker, "_aggregatedTrace", |r| r.len() >= expected / 4);
    signal_and_wait(&mut child, "-KILL", "aggregator");
    let after_kill = read_all(&broker, "_aggregatedTrace").len();
    assert!(after_kill < expected, "the kill came before the end");

    produce(&broker, "_tracing", &keyshift_events(records / 2..records));
    let (mut child, addr) = start_aggregator(&broker, &[]);
    let all_present =
        |r: &[Aggregated]| r.iter().map(identity).collect::<HashSet<_>>().len() == expected;
    wait_for_records(&broker, "_aggregatedTrace", all_present);
    let body = get(&addr, "/metrics");
    let status = signal_and_wait(&mut child, "-TERM", "aggregator");
    assert!(status.success(), "exit status {status}");

    let out = read_all(&broker, "_aggregatedTrace");
    let distinct: HashSet<_> = out.iter().map(identity).collect();
    assert_eq!(distinct.len(), expected, "nothing lost");
    assert_eq!(out.len(), expected, "nothing written twice");
    let sources: HashSet<&str> = out.iter().map(|r| r.source.as_str()).collect();
    assert_eq!(sources.len(), expected, "one output per input event");
    // The restart did replay already-written inputs (the retained SENDs pin the replay point
    // at the start), so the test exercised the suppression, not just a resume.
    let suppressed = sample(&body, "keyshift_trace_replay_suppressed_total").unwrap();
    assert!(suppressed > 0.0, "{body}");
    for r in &out {
        let v = &r.value;
        let duration = v["durationMs"].as_i64();
        match v["type"].as_str().unwrap() {
            "SEND" => assert_eq!(duration, None),
            "ACK" => assert_eq!(duration, Some(2)),
            "CONSUME" => assert_eq!(duration, Some(5)),
            "COMMIT" => assert_eq!(duration, Some(1)),
            other => panic!("unexpected type {other}"),
        }
        assert!(v.get("overConsumption").is_none(), "{v}");
    }
}

#[test]
fn aggregate_rejects_bad_flags_naming_them() {
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_keyshift"))
            .args(["trace", "aggregate"])
            .args(args)
            .env_remove("KEYSHIFT_BOOTSTRAP_SERVERS")
            .env_remove("KAFKATRACE_BOOTSTRAP_SERVERS")
            .output()
            .unwrap()
    };
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--bootstrap-servers"));
    let out = run(&[
        "--bootstrap-servers",
        "127.0.0.1:1",
        "--output-topic",
        "_tracing",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--output-topic"));
    let out = run(&[
        "--bootstrap-servers",
        "127.0.0.1:1",
        "--unmatched-ttl-secs",
        "0",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--unmatched-ttl-secs"));
}

/// keyshift's own emitters end to end: a [`KeyshiftProducer`] and an [`OrderedConsumer`]
/// with trace events on write `_tracing`; the aggregator joins every record's SEND, ACK and
/// CONSUME and the COMMITs of the last offsets.
#[test]
fn keyshift_producer_and_worker_events_are_joined() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use keyshift_kafka::{KeyshiftProducer, OrderedConsumerBuilder, TraceEventSink};

    let broker = EmbeddedBroker::start().expect("broker");
    broker.create_topic("orders", 2).unwrap();
    let settings = broker.client_settings();
    let sink = TraceEventSink::new(&settings, "_tracing").unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let producer = {
        let _guard = runtime.enter();
        KeyshiftProducer::builder(settings.clone(), "orders")
            .partitions(2)
            .runtime(runtime.handle().clone())
            .trace_events(sink.clone())
            .build()
            .unwrap()
    };
    let records = 20u64;
    for i in 0..records {
        let key = format!("location_{}", i % 5);
        runtime
            .block_on(producer.send(key.as_bytes(), b"body", Vec::new()))
            .unwrap();
    }
    let processed = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&processed);
    let consumer = OrderedConsumerBuilder::new(&settings, "order-workers", "orders")
        .commit_interval(Duration::from_millis(100))
        .trace_events(sink.clone())
        .spawn(move |_: &keyshift_kafka::DeliveredRecord| {
            counter.fetch_add(1, Ordering::Relaxed);
            Ok::<(), std::convert::Infallible>(())
        })
        .unwrap();
    let deadline = Instant::now() + PATIENCE;
    while processed.load(Ordering::Relaxed) < records {
        assert!(
            Instant::now() < deadline,
            "the worker did not process everything"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    consumer.stop().unwrap();
    sink.flush(Duration::from_secs(30));
    drop(producer);

    let (mut child, _) = start_aggregator(&broker, &[]);
    let ends = broker.admin().end_offsets("orders").unwrap();
    let count = |r: &[Aggregated], kind: &str| r.iter().filter(|r| r.value["type"] == kind).count();
    let last_commits = |r: &[Aggregated]| {
        r.iter()
            .filter(|r| r.value["type"] == "COMMIT" && r.value["durationMs"].is_i64())
            .filter(|r| {
                let p = r.value["partition"].as_i64().unwrap() as usize;
                r.value["offset"].as_i64() == Some(ends[p] - 1)
            })
            .count()
    };
    let out = wait_for_records(&broker, "_aggregatedTrace", |r| {
        ["SEND", "ACK", "CONSUME"]
            .iter()
            .all(|k| count(r, k) == records as usize)
            && last_commits(r) == ends.iter().filter(|e| **e > 0).count()
    });
    let status = signal_and_wait(&mut child, "-TERM", "aggregator");
    assert!(status.success(), "exit status {status}");
    for r in &out {
        let v = &r.value;
        assert_eq!(v["topic"], "orders", "{v}");
        assert!(
            v["correlationId"].is_string(),
            "every output carries the correlation id: {v}"
        );
        if v["type"] != "SEND" && v["type"] != "COMMIT" {
            assert!(v["durationMs"].as_i64().unwrap() >= 0, "{v}");
        }
        if v["type"] == "CONSUME" {
            assert_eq!(v["groupId"], "order-workers");
            assert!(v.get("overConsumption").is_none(), "{v}");
        }
    }
}

/// The Java interceptor's ACK has no correlation id; with `--data-topic` the aggregator reads
/// the data record's `correlationId` header, as the seed's topology does, and joins SEND and
/// ACK of a record nobody consumed.
#[test]
fn data_topic_headers_locate_sends_of_unconsumed_records() {
    use rdkafka::message::{Header, OwnedHeaders};

    let broker = EmbeddedBroker::start().expect("broker");
    broker.create_topic("_tracing", 1).unwrap();
    broker.create_topic("test", 1).unwrap();
    let producer: BaseProducer = broker.client_settings().producer_config().create().unwrap();
    producer
        .send(
            BaseRecord::to("test")
                .key("k")
                .payload("v")
                .headers(OwnedHeaders::new().insert(Header {
                    key: "correlationId",
                    value: Some(CORR),
                })),
        )
        .map_err(|(e, _)| e)
        .unwrap();
    producer.flush(Duration::from_secs(30)).unwrap();
    produce(&broker, "_tracing", &seed_raw_events()[..2]);

    let (mut child, _) = start_aggregator(&broker, &["--data-topic", "test"]);
    let out = wait_for_records(&broker, "_aggregatedTrace", |r| r.len() >= 2);
    let status = signal_and_wait(&mut child, "-TERM", "aggregator");
    assert!(status.success(), "exit status {status}");
    let values: Vec<&Value> = out.iter().map(|r| &r.value).collect();
    assert_eq!(values[0]["type"], "SEND");
    assert_eq!(values[0]["offset"], 0);
    assert_eq!(values[0]["correlationId"], CORR);
    assert_eq!(values[1]["type"], "ACK");
    assert_eq!(values[1]["correlationId"], CORR);
    assert_eq!(values[1]["durationMs"], 600);
    assert_eq!(out.len(), 2);
}
