//! Interoperability: records written by kafka-python (PyPI; a client keyshift did not write)
//! reach the ordered consumer intact — keys, probe values, headers — and a bad
//! `keyshift-route` header written by it is reported and delivered unordered; the same over
//! SASL SCRAM-SHA-512 against the embedded broker with users, where a wrong password fails
//! without the password appearing anywhere, and over SASL PLAIN.
//!
//! The test installs kafka-python with pip if it is missing; only when pip cannot reach the
//! package registry does it skip, loudly.

mod consumer_util;
mod python;

use std::process::Command;
use std::time::Duration;

use consumer_util::{start_consumer, wait_until, SeenLog};
use keyshift_kafka::EmbeddedBroker;

const PRODUCER: &str = r#"
import json, sys, time
from kafka import KafkaProducer

bootstrap, topic, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
# Optional SASL: mechanism and user; the password comes from the environment.
sasl = {}
if len(sys.argv) > 4:
    import os
    sasl = dict(security_protocol="SASL_PLAINTEXT", sasl_mechanism=sys.argv[4],
                sasl_plain_username=sys.argv[5], sasl_plain_password=os.environ["KS_PW"])
p = KafkaProducer(bootstrap_servers=bootstrap, **sasl)
for i in range(count):
    key = "py-%d" % (i % 3)
    value = json.dumps({"seq": i // 3, "sent_us": int(time.time() * 1e6), "body": "from python"})
    p.send(topic, key=key.encode(), value=value.encode(), partition=(i % 3) % 2,
           headers=[("origin", b"kafka-python")])
p.send(topic, key=b"py-bad", value=b"not a probe", partition=0,
       headers=[("keyshift-route", b"\x09garbage")])
p.flush(timeout=60)
p.close()
print("sent", count + 1)
"#;

#[test]
fn records_from_kafka_python_are_consumed_in_order() {
    if !python::require_kafka_python("records_from_kafka_python_are_consumed_in_order") {
        return;
    }
    let broker = EmbeddedBroker::start().expect("broker");
    let topic = "from-python";
    broker.create_topic(topic, 2).unwrap();
    let count = 30;
    let out = Command::new("python3")
        .args([
            "-c",
            PRODUCER,
            broker.bootstrap_servers(),
            topic,
            &count.to_string(),
        ])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "kafka-python producer failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let log = SeenLog::default();
    let consumer = start_consumer(
        &broker,
        "py-group",
        topic,
        "c1",
        &log,
        Duration::ZERO,
        |b| b,
    );
    wait_until("every kafka-python record", || log.len() == count + 1);
    let seen = log.snapshot();
    let check = log.check();
    assert_eq!(
        (check.violations(), check.duplicates(), check.missing()),
        (0, 0, 0)
    );
    let probes: Vec<_> = seen.iter().filter(|s| s.seq.is_some()).collect();
    assert_eq!(probes.len(), count);
    for s in &probes {
        assert!(s.key.starts_with("py-"), "{s:?}");
        assert!(!s.unordered);
        assert_eq!(
            s.headers,
            vec![("origin".to_owned(), Some(b"kafka-python".to_vec()))]
        );
    }
    let bad = seen
        .iter()
        .find(|s| s.key == "py-bad")
        .expect("bad record delivered");
    assert!(bad.unordered);
    assert_eq!(bad.value, b"not a probe");
    let stats = consumer.stats().snapshot();
    assert_eq!(stats.malformed_headers, 1);
    assert_eq!((stats.probes, stats.not_probes), (count as u64, 1));
    consumer.stop().unwrap();
}

/// kafka-python as a SASL client: SCRAM-SHA-512 against the embedded broker with users, its
/// records consumed by an ordered consumer that authenticates as another user; a wrong
/// password makes kafka-python fail, and neither password shows in its output.
#[test]
fn kafka_python_produces_over_sasl_scram_and_a_wrong_password_fails() {
    if !python::require_kafka_python("kafka_python_produces_over_sasl_scram") {
        return;
    }
    use keyshift_kafka::{BrokerOptions, SaslUser};
    let broker = EmbeddedBroker::start_with(BrokerOptions {
        sasl_users: vec![
            SaslUser::new("keyshift", "keyshift-pw-31"),
            SaslUser::new("python", "python-pw-42"),
        ],
        ..BrokerOptions::default()
    })
    .expect("broker with SASL users");
    let topic = "from-python-sasl";
    broker.create_topic(topic, 2).unwrap();
    let count = 12;
    let produce_to = |topic: &str, mechanism: &str, password: &str| {
        Command::new("python3")
            .args(["-c", PRODUCER, broker.bootstrap_servers(), topic])
            .arg(count.to_string())
            .args([mechanism, "python"])
            .env("KS_PW", password)
            .output()
            .expect("python3 runs")
    };
    let produce = |password: &str| produce_to(topic, "SCRAM-SHA-512", password);
    let out = produce("python-pw-42");
    assert!(
        out.status.success(),
        "kafka-python over SASL failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = SeenLog::default();
    let consumer = start_consumer(&broker, "py-sasl", topic, "c1", &log, Duration::ZERO, |b| b);
    wait_until("every kafka-python record", || log.len() == count + 1);
    let check = log.check();
    assert_eq!(
        (check.violations(), check.duplicates(), check.missing()),
        (0, 0, 0)
    );
    consumer.stop().unwrap();

    let out = produce("not-the-pw-53");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success(),
        "a wrong password was accepted: {said}"
    );
    for secret in ["not-the-pw-53", "python-pw-42", "keyshift-pw-31"] {
        assert!(!said.contains(secret), "{said}");
    }

    // PLAIN too (the embedded broker accepts any PLAIN password, so only the mechanism is
    // tested here): every record read back in order.
    let plain_topic = "from-python-plain";
    broker.create_topic(plain_topic, 2).unwrap();
    let out = produce_to(plain_topic, "PLAIN", "python-pw-42");
    assert!(
        out.status.success(),
        "kafka-python over SASL PLAIN failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = SeenLog::default();
    let consumer = start_consumer(
        &broker,
        "py-plain",
        plain_topic,
        "c2",
        &log,
        Duration::ZERO,
        |b| b,
    );
    wait_until("every kafka-python PLAIN record", || log.len() == count + 1);
    let check = log.check();
    assert_eq!(
        (check.violations(), check.duplicates(), check.missing()),
        (0, 0, 0)
    );
    consumer.stop().unwrap();
}
