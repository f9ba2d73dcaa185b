//! OTLP export end to end: the keyshift producer and ordered consumer on the embedded broker,
//! spans exported by the real OTLP exporters (gRPC and HTTP/protobuf) to receivers in this
//! test that decode the real protobuf on a real socket. One record's `send` and `process`
//! spans must share the trace id, the process span must be the send span's child and link to
//! it, and every messaging-convention and seed attribute must be there; with sampling ratio 0
//! nothing of a new trace is exported (while a record carrying a sampled upstream context
//! still is — the pipeline works, the sampler said no).

mod otlp_receiver;

use std::sync::mpsc;
use std::time::Duration;

use keyshift_kafka::{
    DeliveredRecord, EmbeddedBroker, KeyshiftProducer, OrderedConsumerBuilder, Routes,
};
use keyshift_trace::{Protocol, TraceConfig, Tracing};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use otlp_receiver::{attr, hex, int_attr, Received, Spans};

/// OTLP/gRPC receiver: a tonic server for the real TraceService.
struct GrpcReceiver(Spans);

#[tonic::async_trait]
impl TraceService for GrpcReceiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.add(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// Serves OTLP/gRPC on a free loopback port; returns the endpoint and the span store.
fn start_grpc() -> (String, Spans) {
    let spans = Spans::default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let service = TraceServiceServer::new(GrpcReceiver(spans.clone()));
    std::thread::spawn(move || {
        rt.block_on(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        )
        .expect("gRPC receiver");
    });
    (endpoint, spans)
}

/// Record headers as the producer takes them.
type Headers = Vec<(String, Vec<u8>)>;

fn config(protocol: Protocol, endpoint: String, ratio: f64) -> TraceConfig {
    let mut c = TraceConfig::new("keyshift-otlp-test")
        .sample_ratio(ratio)
        .unwrap();
    c.protocol = protocol;
    c.endpoint = Some(endpoint);
    c.schedule_delay = Some(Duration::from_millis(50));
    c
}

/// Sends `records` (key, caller headers) through a traced producer, consumes them with a
/// traced ordered consumer, and returns what the consumer delivered.
fn produce_and_consume(
    broker: &EmbeddedBroker,
    tracing: &Tracing,
    topic: &str,
    records: &[(&str, Headers)],
) -> Vec<DeliveredRecord> {
    broker.create_topic(topic, 2).unwrap();
    let settings = broker.client_settings().client_id("traced-client");
    let producer = KeyshiftProducer::builder(settings.clone(), topic)
        .partitions(2)
        .tracing(tracing.clone())
        .build()
        .unwrap();
    for (key, headers) in records {
        let pending = producer
            .try_send(key.as_bytes(), b"value", headers.clone())
            .unwrap();
        futures_block_on(pending).unwrap();
    }
    let (tx, rx) = mpsc::channel();
    let consumer = OrderedConsumerBuilder::new(&settings, "traced-group", topic)
        .tracing(tracing.clone())
        .spawn(move |r: &DeliveredRecord| tx.send(r.clone()).map_err(|_| "test receiver gone"))
        .unwrap();
    let delivered: Vec<DeliveredRecord> = (0..records.len())
        .map(|_| {
            rx.recv_timeout(Duration::from_secs(60))
                .expect("record consumed")
        })
        .collect();
    consumer.stop().unwrap();
    tracing.flush();
    delivered
}

fn futures_block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn span_named<'a>(spans: &'a [Received], name: &str) -> &'a Received {
    spans
        .iter()
        .find(|r| r.span.name == name)
        .unwrap_or_else(|| panic!("no span named {name}"))
}

fn check_one_record_trace(protocol: Protocol, endpoint: String, spans: Spans, topic: &str) {
    let broker = EmbeddedBroker::start().expect("broker");
    let tracing = Tracing::new(&config(protocol, endpoint, 1.0)).unwrap();
    let delivered = produce_and_consume(&broker, &tracing, topic, &[("location_7", vec![])]);
    let record = &delivered[0];
    let received = spans.wait_for("send and process spans", |s| s.len() >= 2);
    let send = span_named(&received, &format!("send {topic}"));
    let process = span_named(&received, &format!("process {topic}"));
    assert_eq!(send.service, "keyshift-otlp-test");

    // One trace: process is the child of send and links to it.
    assert_eq!(send.span.trace_id.len(), 16);
    assert_eq!(process.span.trace_id, send.span.trace_id, "same trace id");
    assert_eq!(process.span.parent_span_id, send.span.span_id, "parent");
    assert!(send.span.parent_span_id.is_empty(), "send starts the trace");
    assert_eq!(process.span.links.len(), 1);
    assert_eq!(process.span.links[0].trace_id, send.span.trace_id);
    assert_eq!(process.span.links[0].span_id, send.span.span_id);
    assert_eq!(send.span.kind, SpanKind::Producer as i32);
    assert_eq!(process.span.kind, SpanKind::Consumer as i32);

    // The record carried exactly that context.
    let traceparent = record
        .headers
        .iter()
        .find(|(k, _)| k == "traceparent")
        .and_then(|(_, v)| v.clone())
        .expect("traceparent header on the record");
    assert_eq!(
        String::from_utf8(traceparent).unwrap(),
        format!(
            "00-{}-{}-01",
            hex(&send.span.trace_id),
            hex(&send.span.span_id)
        )
    );

    let partition = record.partition.to_string();
    let offset = record.offset.to_string();
    for (span, own) in [
        (send, [("producer.key", "location_7")].as_slice()),
        (
            process,
            [
                ("consumer.key", "location_7"),
                ("messaging.consumer.group.name", "traced-group"),
            ]
            .as_slice(),
        ),
    ] {
        let a = &span.span.attributes;
        let expected = [
            ("messaging.system", "kafka"),
            ("messaging.destination.name", topic),
            ("messaging.destination.partition.id", partition.as_str()),
            ("messaging.kafka.message.key", "location_7"),
            ("messaging.kafka.offset", offset.as_str()),
            ("messaging.kafka.partition", partition.as_str()),
            ("message_bus.destination", partition.as_str()),
            ("messaging.client.id", "traced-client"),
        ];
        for (key, value) in expected.iter().chain(own) {
            assert_eq!(
                attr(a, key).as_deref(),
                Some(*value),
                "attribute {key} of span {}",
                span.span.name
            );
        }
        assert_eq!(int_attr(a, "messaging.kafka.offset"), Some(record.offset));
    }
    assert_eq!(
        attr(&send.span.attributes, "messaging.operation.type").as_deref(),
        Some("send")
    );
    assert_eq!(
        attr(&process.span.attributes, "messaging.operation.type").as_deref(),
        Some("process")
    );
    drop(tracing);
    broker.shutdown();
}

#[test]
fn grpc_receiver_gets_send_and_process_spans_of_one_trace() {
    let (endpoint, spans) = start_grpc();
    check_one_record_trace(Protocol::Grpc, endpoint, spans, "traced-grpc");
}

#[test]
fn http_receiver_gets_send_and_process_spans_of_one_trace() {
    let (endpoint, spans) = otlp_receiver::start_http();
    check_one_record_trace(Protocol::HttpProtobuf, endpoint, spans, "traced-http");
}

#[test]
fn ratio_zero_exports_nothing_of_new_traces() {
    let (endpoint, spans) = otlp_receiver::start_http();
    let broker = EmbeddedBroker::start().expect("broker");
    let tracing = Tracing::new(&config(Protocol::HttpProtobuf, endpoint, 0.0)).unwrap();
    // The second record continues a sampled upstream trace: parent-based sampling keeps it,
    // which proves spans would have arrived had the first one been sampled.
    let upstream = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let delivered = produce_and_consume(
        &broker,
        &tracing,
        "unsampled",
        &[
            ("location_1", vec![]),
            (
                "location_2",
                vec![("traceparent".to_owned(), upstream.as_bytes().to_vec())],
            ),
        ],
    );
    let received = spans.wait_for("the upstream-sampled record's spans", |s| s.len() >= 2);
    assert_eq!(
        received.len(),
        2,
        "only the upstream-sampled record's two spans"
    );
    for r in &received {
        assert_eq!(hex(&r.span.trace_id), "0af7651916cd43dd8448eb211c80319c");
    }
    // The unsampled record still carried its (unsampled) context, so consumers agree.
    let first = delivered
        .iter()
        .find(|r| r.key.as_deref() == Some(b"location_1".as_slice()))
        .expect("first record");
    let tp = first
        .headers
        .iter()
        .find(|(k, _)| k == "traceparent")
        .and_then(|(_, v)| v.clone())
        .expect("traceparent");
    assert!(tp.ends_with(b"-00"), "{}", String::from_utf8_lossy(&tp));
    drop(tracing);
    // Nothing more arrives after the provider shut down and flushed everything.
    assert_eq!(spans.snapshot().len(), 2);
    broker.shutdown();
}

/// The traceparent header of a consumed record, parsed to (trace id, span id) hex.
fn traceparent_ids(record: &DeliveredRecord) -> (String, String) {
    let value = record
        .headers
        .iter()
        .find(|(k, _)| k == "traceparent")
        .and_then(|(_, v)| v.clone())
        .expect("traceparent header");
    let text = String::from_utf8(value).unwrap();
    let parts: Vec<&str> = text.split('-').collect();
    (parts[1].to_owned(), parts[2].to_owned())
}

#[test]
fn a_parked_record_shows_its_park_as_a_span_and_an_event() {
    let (endpoint, spans) = otlp_receiver::start_http();
    let broker = EmbeddedBroker::start().expect("broker");
    let tracing = Tracing::new(&config(Protocol::HttpProtobuf, endpoint, 1.0)).unwrap();
    let topic = "traced-move";
    broker.create_topic(topic, 2).unwrap();
    let settings = broker.client_settings().client_id("traced-client");
    let producer = KeyshiftProducer::builder(settings.clone(), topic)
        .partitions(2)
        // move_key is this single producer's own (no decider to wait for).
        .routes(Routes::Durable(None))
        .tracing(tracing.clone())
        .build()
        .unwrap();
    let key = b"location_42";
    let from = producer.current_partition(key);
    let send = |n: usize| {
        for _ in 0..n {
            futures_block_on(producer.try_send(key, b"v", Vec::new()).unwrap()).unwrap();
        }
    };
    // Two members, one partition each: the member owning the moved key's new partition must
    // wait for the group's committed offset on the old one, which the other member reaches
    // only after processing the old partition's (slow) records and the fence.
    let (tx, rx) = mpsc::channel();
    let member = |name: &str| {
        let tx = tx.clone();
        OrderedConsumerBuilder::new(&settings, "traced-move-group", topic)
            .tracing(tracing.clone())
            .session_timeout(Duration::from_secs(6))
            .thread_name(name)
            .spawn(move |r: &DeliveredRecord| {
                if r.partition == from {
                    std::thread::sleep(Duration::from_millis(200));
                }
                tx.send(r.clone()).map_err(|_| "test receiver gone")
            })
            .unwrap()
    };
    let (a, b) = (member("member-a"), member("member-b"));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while a.stats().snapshot().owned_partitions != 1 || b.stats().snapshot().owned_partitions != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the two members did not split the partitions"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    send(4);
    // The key moves: a fence on `from`, the next records on the other partition carry the
    // route header and park until the group committed past the fence.
    producer.move_key(key, 1 - from).unwrap();
    send(3);
    let delivered: Vec<DeliveredRecord> = (0..7)
        .map(|_| {
            rx.recv_timeout(Duration::from_secs(60))
                .expect("record consumed")
        })
        .collect();
    a.stop().unwrap();
    b.stop().unwrap();
    tracing.flush();
    let parked: Vec<&DeliveredRecord> = delivered.iter().filter(|r| r.parked).collect();
    assert!(
        !parked.is_empty(),
        "the moved records waited for the barrier"
    );
    let received = spans.wait_for("park spans", |s| {
        s.iter()
            .filter(|r| r.span.name == format!("park {topic}"))
            .count()
            >= parked.len()
    });
    for record in parked {
        let (trace, send_span) = traceparent_ids(record);
        let offset = record.offset.to_string();
        let park = received
            .iter()
            .find(|r| {
                r.span.name == format!("park {topic}")
                    && hex(&r.span.trace_id) == trace
                    && attr(&r.span.attributes, "messaging.kafka.offset").as_deref()
                        == Some(offset.as_str())
            })
            .expect("a park span in the record's trace");
        assert_eq!(hex(&park.span.parent_span_id), send_span);
        assert_eq!(
            int_attr(&park.span.attributes, "keyshift.migrated_from"),
            Some(i64::from(from))
        );
        assert!(park.span.end_time_unix_nano > park.span.start_time_unix_nano);
        let process = received
            .iter()
            .find(|r| r.span.name == format!("process {topic}") && hex(&r.span.trace_id) == trace)
            .expect("the record's process span");
        assert_eq!(
            attr(&process.span.attributes, "keyshift.parked").as_deref(),
            Some("true")
        );
        assert!(process
            .span
            .events
            .iter()
            .any(|e| e.name == "keyshift.parked"));
        // The park ends where processing starts.
        assert!(park.span.end_time_unix_nano <= process.span.start_time_unix_nano + 1_000_000);
    }
    drop(tracing);
    broker.shutdown();
}

#[test]
fn producer_and_consumer_emit_interceptor_events() {
    use keyshift_kafka::TraceEventSink;
    use keyshift_trace::events::{EventKind, TraceEvent, CORRELATION_ID_HEADER};
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Message, Offset, TopicPartitionList};

    let broker = EmbeddedBroker::start().expect("broker");
    let topic = "evented";
    broker.create_topic(topic, 1).unwrap();
    let settings = broker.client_settings().client_id("evented-client");
    let sink = TraceEventSink::new(&settings, "_tracing").unwrap();
    let producer = KeyshiftProducer::builder(settings.clone(), topic)
        .partitions(1)
        .trace_events(sink.clone())
        .build()
        .unwrap();
    let delivery = futures_block_on(producer.try_send(b"k", b"v", Vec::new()).unwrap()).unwrap();
    let (tx, rx) = mpsc::channel();
    let consumer = OrderedConsumerBuilder::new(&settings, "evented-group", topic)
        .trace_events(sink.clone())
        .spawn(move |r: &DeliveredRecord| tx.send(r.clone()).map_err(|_| "test receiver gone"))
        .unwrap();
    let record = rx.recv_timeout(Duration::from_secs(60)).expect("consumed");
    consumer.stop().unwrap();
    sink.flush(Duration::from_secs(10));
    let correlation = record
        .headers
        .iter()
        .find(|(k, _)| k == CORRELATION_ID_HEADER)
        .and_then(|(_, v)| v.clone())
        .map(|v| String::from_utf8(v).unwrap())
        .expect("correlationId header on the record");

    let reader: BaseConsumer = settings.consumer_config("event-reader").create().unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("_tracing", 0, Offset::Beginning)
        .unwrap();
    reader.assign(&tpl).unwrap();
    let mut events = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while events.len() < 4 && std::time::Instant::now() < deadline {
        if let Some(m) = reader.poll(Duration::from_millis(200)) {
            let m = m.unwrap();
            events.push(TraceEvent::decode(m.key(), m.payload().unwrap()).unwrap());
        }
    }
    let kinds: Vec<EventKind> = events.iter().map(|e| e.value.kind).collect();
    for kind in [
        EventKind::Send,
        EventKind::Ack,
        EventKind::Consume,
        EventKind::Commit,
    ] {
        assert_eq!(kinds.iter().filter(|k| **k == kind).count(), 1, "{kinds:?}");
    }
    let of = |kind| events.iter().find(|e| e.value.kind == kind).unwrap();
    let send = of(EventKind::Send);
    assert_eq!(
        send.key.correlation_id.as_deref(),
        Some(correlation.as_str())
    );
    assert_eq!(send.value.client_id.as_deref(), Some("evented-client"));
    let ack = of(EventKind::Ack);
    assert_eq!(ack.key.offset, Some(delivery.offset));
    assert_eq!(
        ack.value.correlation_id.as_deref(),
        Some(correlation.as_str())
    );
    let consume = of(EventKind::Consume);
    assert_eq!(consume.key.offset, Some(delivery.offset));
    assert_eq!(
        consume.value.correlation_id.as_deref(),
        Some(correlation.as_str())
    );
    assert_eq!(consume.value.group_id.as_deref(), Some("evented-group"));
    let commit = of(EventKind::Commit);
    assert_eq!(commit.key.offset, Some(delivery.offset));
    broker.shutdown();
}
