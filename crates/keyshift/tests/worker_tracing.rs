//! `keyshift worker` continues a Zipkin/Brave trace: a record produced by kafka-python (PyPI)
//! with a single `b3` header is processed by the real worker binary, whose `process` span —
//! exported over OTLP/HTTP to a receiver here that decodes the real protobuf — has the b3
//! trace id, the b3 span as parent and link, and the seed's tags. With `--trace-events` the
//! worker also writes the record's CONSUME and COMMIT events to `_tracing`. And the gateway
//! continues the trace of an HTTP request's `traceparent` into its `send` span.

#[path = "../../keyshift-trace/tests/otlp_receiver/mod.rs"]
mod otlp_receiver;
mod process_support;
#[path = "../../keyshift-kafka/tests/python/mod.rs"]
mod python;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use keyshift_kafka::EmbeddedBroker;
use keyshift_trace::events::{EventKind, TraceEvent};
use otlp_receiver::{attr, hex};
use process_support::{http_addr, signal_and_wait};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};

const TRACE_ID: &str = "80f198ee56343ba864fe8b2a57d3eff7";
const SPAN_ID: &str = "e457b5a2e4d86bd1";

const PRODUCER: &str = r#"
import sys
from kafka import KafkaProducer
bootstrap, topic, b3 = sys.argv[1], sys.argv[2], sys.argv[3]
p = KafkaProducer(bootstrap_servers=bootstrap)
p.send(topic, key=b"location_9", value=b"from kafka-python", partition=0,
       headers=[("b3", b3.encode()), ("correlationId", b"py-corr-1")]).get(timeout=30)
p.close()
"#;

/// Kills the child process if the test fails before stopping it.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Every event in the `_tracing` topic (read from the beginning).
fn trace_events(broker: &EmbeddedBroker) -> Vec<TraceEvent> {
    let consumer: BaseConsumer = broker
        .client_settings()
        .consumer_config("trace-reader")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("_tracing", 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut events = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => events.push(
                TraceEvent::decode(m.key(), m.payload().unwrap_or_default()).expect("event JSON"),
            ),
            Some(Err(e)) => panic!("reading _tracing: {e}"),
            None if events.len() >= 2 => break,
            None => {}
        }
    }
    events
}

#[test]
fn kafka_python_b3_record_continues_its_trace_in_the_worker() {
    if !python::require_kafka_python("kafka_python_b3_record_continues_its_trace_in_the_worker") {
        return;
    }
    let broker = EmbeddedBroker::start().expect("broker");
    let topic = "b3-in";
    broker.create_topic(topic, 1).unwrap();
    let b3 = format!("{TRACE_ID}-{SPAN_ID}-1");
    let out = Command::new("python3")
        .args(["-c", PRODUCER, broker.bootstrap_servers(), topic, &b3])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "kafka-python producer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let (url, spans) = otlp_receiver::start_http();
    let base = url.trim_end_matches("/v1/traces").to_owned();
    let child = Command::new(env!("CARGO_BIN_EXE_keyshift"))
        .args([
            "worker",
            "--bootstrap-servers",
            broker.bootstrap_servers(),
            "--topic",
            topic,
            "--group",
            "b3-workers",
            "--metrics-listen",
            "127.0.0.1:0",
            "--otlp-endpoint",
            &base,
            "--trace-events",
        ])
        .env("OTEL_BSP_SCHEDULE_DELAY", "50")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_SERVICE_NAME")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("keyshift worker starts");
    let mut child = KillOnDrop(child);
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("keyshift worker"), "{line:?}");

    let received = spans.wait_for("the worker's process span", |s| {
        s.iter().any(|r| r.span.name == "process b3-in")
    });
    let process = &received
        .iter()
        .find(|r| r.span.name == "process b3-in")
        .unwrap();
    assert_eq!(process.service, "keyshift-worker");
    assert_eq!(
        hex(&process.span.trace_id),
        TRACE_ID,
        "the b3 trace continues"
    );
    assert_eq!(
        hex(&process.span.parent_span_id),
        SPAN_ID,
        "child of the b3 span"
    );
    assert_eq!(process.span.links.len(), 1);
    assert_eq!(hex(&process.span.links[0].span_id), SPAN_ID);
    let a = &process.span.attributes;
    for (key, value) in [
        ("messaging.system", "kafka"),
        ("messaging.destination.name", topic),
        ("messaging.destination.partition.id", "0"),
        ("messaging.kafka.offset", "0"),
        ("messaging.consumer.group.name", "b3-workers"),
        ("messaging.kafka.message.key", "location_9"),
        ("consumer.key", "location_9"),
        ("messaging.kafka.partition", "0"),
        ("message_bus.destination", "0"),
    ] {
        assert_eq!(attr(a, key).as_deref(), Some(value), "attribute {key}");
    }

    terminate(&mut child.0, "worker");

    let events = trace_events(&broker);
    let consume = events
        .iter()
        .find(|e| e.value.kind == EventKind::Consume)
        .unwrap_or_else(|| panic!("no CONSUME event in {events:?}"));
    assert_eq!(consume.key.topic.as_deref(), Some(topic));
    assert_eq!(consume.key.partition, Some(0));
    assert_eq!(consume.key.offset, Some(0));
    assert_eq!(consume.value.correlation_id.as_deref(), Some("py-corr-1"));
    assert_eq!(consume.value.group_id.as_deref(), Some("b3-workers"));
    assert_eq!(consume.value.client_id.as_deref(), Some("keyshift-worker"));
    let commit = events
        .iter()
        .find(|e| e.value.kind == EventKind::Commit)
        .unwrap_or_else(|| panic!("no COMMIT event in {events:?}"));
    // The interceptor names the last consumed record: committed offset 1 → offset 0.
    assert_eq!(commit.key.offset, Some(0));
    assert_eq!(commit.value.group_id.as_deref(), Some("b3-workers"));
    broker.shutdown();
}

/// Stops a child process with SIGTERM; asserts a clean exit.
fn terminate(child: &mut std::process::Child, what: &str) {
    let status = signal_and_wait(child, "-TERM", what);
    assert!(status.success(), "{what} exit status {status}");
}

#[test]
fn gateway_continues_the_http_requests_trace_into_the_send_span() {
    let broker = EmbeddedBroker::start().expect("broker");
    let (url, spans) = otlp_receiver::start_http();
    let base = url.trim_end_matches("/v1/traces").to_owned();
    let child = Command::new(env!("CARGO_BIN_EXE_keyshift"))
        .args([
            "gateway",
            "--bootstrap-servers",
            broker.bootstrap_servers(),
            "--topic",
            "http-traced",
            "--partitions",
            "2",
            "--strategy",
            "hash",
            "--listen",
            "127.0.0.1:0",
            "--otlp-endpoint",
            &base,
            "--trace-b3",
        ])
        .env("OTEL_BSP_SCHEDULE_DELAY", "50")
        .env("OTEL_SERVICE_NAME", "orders-gateway")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("keyshift gateway starts");
    let mut child = KillOnDrop(child);
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = http_addr(&line);
    let body = r#"{"key":"location_3","body":"hello"}"#;
    let mut s = TcpStream::connect(&addr).unwrap();
    write!(
        s,
        "POST /new HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         traceparent: 00-{TRACE_ID}-{SPAN_ID}-01\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    let received = spans.wait_for("the gateway's send span", |s| {
        s.iter().any(|r| r.span.name == "send http-traced")
    });
    let send = received
        .iter()
        .find(|r| r.span.name == "send http-traced")
        .unwrap();
    assert_eq!(send.service, "orders-gateway");
    assert_eq!(
        hex(&send.span.trace_id),
        TRACE_ID,
        "the HTTP trace continues"
    );
    assert_eq!(hex(&send.span.parent_span_id), SPAN_ID);
    assert_eq!(
        attr(&send.span.attributes, "producer.key").as_deref(),
        Some("location_3")
    );
    assert!(attr(&send.span.attributes, "messaging.kafka.offset").is_some());
    terminate(&mut child.0, "gateway");

    // The record carries the send span's context in both formats.
    let consumer: BaseConsumer = broker
        .client_settings()
        .consumer_config("header-reader")
        .create()
        .unwrap();
    let partition = attr(&send.span.attributes, "messaging.kafka.partition")
        .unwrap()
        .parse::<i32>()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("http-traced", partition, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let headers = loop {
        assert!(Instant::now() < deadline, "record not read back");
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m.unwrap();
            use rdkafka::message::Headers;
            break m
                .headers()
                .map(|hs| {
                    hs.iter()
                        .map(|h| {
                            (
                                h.key.to_owned(),
                                String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                            )
                        })
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default();
        }
    };
    let span_id = hex(&send.span.span_id);
    assert!(
        headers.contains(&(
            "traceparent".to_owned(),
            format!("00-{TRACE_ID}-{span_id}-01")
        )),
        "{headers:?}"
    );
    assert!(
        headers.contains(&("b3".to_owned(), format!("{TRACE_ID}-{span_id}-1"))),
        "{headers:?}"
    );
    broker.shutdown();
}
