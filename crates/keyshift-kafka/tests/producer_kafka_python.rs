//! Interoperability the other way round: records written by keyshift's producer — with user
//! headers, and across a fenced migration, so with `keyshift-fence`/`keyshift-route` headers —
//! are read back by kafka-python (PyPI) with the same key, value and headers.

mod python;

use std::collections::HashMap;
use std::process::Command;

use keyshift_core::protocol::{FenceHeader, RouteHeader, FENCE_HEADER, FENCE_VALUE, ROUTE_HEADER};
use keyshift_kafka::{EmbeddedBroker, KeyshiftProducer, Routes};

/// Reads every partition from the beginning and prints one JSON line per record, bytes as hex.
const CONSUMER: &str = r#"
import json, sys
from kafka import KafkaConsumer, TopicPartition

bootstrap, topic, expected = sys.argv[1], sys.argv[2], int(sys.argv[3])
c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                  consumer_timeout_ms=20000)
parts = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic))]
c.assign(parts)
c.seek_to_beginning(*parts)
seen = 0
for m in c:
    print(json.dumps({
        "partition": m.partition, "offset": m.offset,
        "key": m.key.hex(), "value": (m.value or b"").hex(),
        "headers": [[k, (v or b"").hex()] for k, v in (m.headers or [])],
    }), flush=True)
    seen += 1
    if seen == expected:
        break
c.close()
"#;

#[derive(Debug)]
struct PyRecord {
    partition: u32,
    offset: i64,
    key: Vec<u8>,
    value: Vec<u8>,
    headers: Vec<(String, Vec<u8>)>,
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex from python"))
        .collect()
}

fn parse(line: &str) -> PyRecord {
    let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line from python");
    PyRecord {
        partition: v["partition"].as_u64().unwrap() as u32,
        offset: v["offset"].as_i64().unwrap(),
        key: unhex(v["key"].as_str().unwrap()),
        value: unhex(v["value"].as_str().unwrap()),
        headers: v["headers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| {
                (
                    h[0].as_str().unwrap().to_owned(),
                    unhex(h[1].as_str().unwrap()),
                )
            })
            .collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyshift_records_are_read_back_by_kafka_python() {
    if !python::require_kafka_python("keyshift_records_are_read_back_by_kafka_python") {
        return;
    }
    let broker = EmbeddedBroker::start().expect("broker");
    let topic = "to-python";
    broker.create_topic(topic, 3).unwrap();
    let producer = KeyshiftProducer::builder(broker.client_settings(), topic)
        .strategy("hash")
        .routes(Routes::Durable(None))
        .build()
        .expect("producer");

    // 30 records over 3 keys, each with two user headers (one empty); the hot key moves once
    // halfway, so its later records carry a route header and a fence precedes them.
    let hot = b"py-hot".as_slice();
    let away = (producer.current_partition(hot) + 1) % 3;
    let mut sent = Vec::new();
    for i in 0..30u32 {
        if i == 15 {
            producer.move_key(hot, away).unwrap();
        }
        let key = format!("py-{}", ["hot", "a", "b"][(i % 3) as usize]).into_bytes();
        let value = format!("value {i} \u{2603}").into_bytes();
        let headers = vec![
            ("origin".to_owned(), b"keyshift".to_vec()),
            ("empty".to_owned(), Vec::new()),
        ];
        let delivery = producer
            .send(&key, &value, headers.clone())
            .await
            .expect("delivered");
        sent.push((delivery.partition, delivery.offset, key, value, headers));
    }
    producer
        .flush(std::time::Duration::from_secs(30))
        .await
        .unwrap();
    let fences = producer.stats().fences;
    assert_eq!(fences, 1, "one fenced migration");
    let expected = sent.len() + fences as usize;

    let out = Command::new("python3")
        .args([
            "-c",
            CONSUMER,
            broker.bootstrap_servers(),
            topic,
            &expected.to_string(),
        ])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "kafka-python consumer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read: Vec<PyRecord> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(parse)
        .collect();
    assert_eq!(read.len(), expected, "kafka-python read every record");
    let by_position: HashMap<(u32, i64), &PyRecord> =
        read.iter().map(|r| ((r.partition, r.offset), r)).collect();

    let mut routed = 0;
    for (partition, offset, key, value, headers) in &sent {
        let r = by_position
            .get(&(*partition, *offset))
            .unwrap_or_else(|| panic!("record at {partition}/{offset} not read by kafka-python"));
        assert_eq!(&r.key, key);
        assert_eq!(&r.value, value);
        // User headers come first, byte for byte; keyshift adds only its route header.
        assert_eq!(&r.headers[..2], &headers[..]);
        match &r.headers[2..] {
            [] => {}
            [(name, bytes)] if name == ROUTE_HEADER => {
                let route = RouteHeader::decode(bytes).expect("route header decodes");
                assert_ne!(route.from_partition, *partition);
                routed += 1;
            }
            other => panic!("unexpected headers {other:?}"),
        }
    }
    assert_eq!(
        routed, 5,
        "the hot key's five records after the move carry a route header"
    );

    let fence = read
        .iter()
        .find(|r| r.headers.iter().any(|(n, _)| n == FENCE_HEADER))
        .expect("kafka-python sees the fence record");
    assert_eq!(fence.key, hot);
    // What a plain consumer sees as the fence's value: the reserved marker.
    assert_eq!(fence.value, FENCE_VALUE, "{fence:?}");
    let (_, bytes) = fence
        .headers
        .iter()
        .find(|(n, _)| n == FENCE_HEADER)
        .unwrap();
    let header = FenceHeader::decode(bytes).expect("fence header decodes");
    assert_eq!(header.to_partition, away);
}
