//! `keyshift proxy` as a user runs it: the real binary in front of the embedded broker, an
//! rdkafka producer and consumer through it, `/metrics` parsed back and compared with the
//! records sent and with `/api/stats`, `/healthz`, SIGTERM for a clean stop; bad flags exit 2
//! naming the flag.

mod process_support;
use process_support::{http_addr, http_get, signal_and_wait};

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use keyshift_kafka::{ClientSettings, EmbeddedBroker};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

const PATIENCE: Duration = Duration::from_secs(60);

/// Kills the proxy if the test fails before stopping it.
struct Guard(Option<Child>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Samples of metric `name` in an OpenMetrics exposition: labels (as written) → value.
fn samples(body: &str, name: &str) -> BTreeMap<String, f64> {
    body.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let (labels, value) = rest.rsplit_once(' ')?;
            if !(labels.is_empty() || labels.starts_with('{')) {
                return None; // another metric sharing the prefix
            }
            Some((labels.to_owned(), value.parse().ok()?))
        })
        .collect()
}

#[test]
fn proxies_real_clients_and_serves_metrics_and_stats() {
    let broker = EmbeddedBroker::start().expect("broker");
    let topic = "through-proxy";
    broker.create_topic(topic, 2).unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_keyshift"))
        .args([
            "proxy",
            "--upstream",
            broker.bootstrap_servers(),
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("keyshift proxy starts");
    let stdout = child.stdout.take().unwrap();
    let mut guard = Guard(Some(child));
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    // "keyshift proxy: 127.0.0.1:P -> upstream; metrics on http://A/metrics, stats on ..."
    let proxy = line
        .strip_prefix("keyshift proxy: ")
        .and_then(|r| r.split(' ').next())
        .unwrap_or_else(|| panic!("no proxy address in {line:?}"))
        .to_owned();
    let metrics = http_addr(&line);

    let count = 50;
    let producer: ThreadedProducer<DefaultProducerContext> = ClientSettings::new(&proxy)
        .client_id("cli-producer")
        .producer_config()
        .create()
        .unwrap();
    for i in 0..count {
        producer
            .send(
                BaseRecord::to(topic)
                    .partition(i % 2)
                    .key("hot")
                    .payload(&format!("v{i}")),
            )
            .map_err(|(e, _)| e)
            .unwrap();
    }
    producer
        .flush(PATIENCE)
        .expect("delivered through the proxy");
    drop(producer);

    let consumer: BaseConsumer = ClientSettings::new(&proxy)
        .client_id("cli-consumer")
        .consumer_config("unused")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..2 {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + PATIENCE;
    let mut consumed = 0;
    while consumed < count {
        assert!(Instant::now() < deadline, "consumed {consumed} of {count}");
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            assert_eq!(m.expect("consume").key(), Some(&b"hot"[..]));
            consumed += 1;
        }
    }
    drop(consumer);

    let (status, body) = http_get(&metrics, "/metrics");
    assert!(status.contains("200"), "{status}");
    assert!(body.trim_end().ends_with("# EOF"), "{body}");
    let produced = samples(&body, "keyshift_proxy_produced_records_total");
    assert_eq!(produced.len(), 2, "{produced:?}");
    assert_eq!(produced.values().sum::<f64>(), f64::from(count));
    assert_eq!(
        produced[&format!("{{topic=\"{topic}\",partition=\"0\"}}")],
        f64::from(count / 2)
    );
    let fetched = samples(&body, "keyshift_proxy_fetched_records_total");
    assert_eq!(fetched.values().sum::<f64>(), f64::from(count));
    let hot = samples(&body, "keyshift_proxy_hot_key_records");
    assert_eq!(
        hot[&format!("{{topic=\"{topic}\",key=\"hot\"}}")],
        f64::from(count)
    );
    let produce_requests = samples(&body, "keyshift_proxy_requests_total");
    assert!(
        produce_requests
            .keys()
            .any(|l| l.contains("api=\"Produce\"") && l.contains("client_id=\"cli-producer\"")),
        "{produce_requests:?}"
    );

    // /api/stats is the same snapshot as JSON.
    let (status, json) = http_get(&metrics, "/api/stats");
    assert!(status.contains("200"), "{status}");
    let stats: serde_json::Value = serde_json::from_str(&json).expect("stats are JSON");
    let from_json: u64 = stats["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["topic"] == topic)
        .map(|p| p["produced_records"].as_u64().unwrap())
        .sum();
    assert_eq!(from_json, count as u64);
    let hot_json = &stats["hot_keys"].as_array().unwrap()[0];
    assert_eq!(hot_json["topic"], topic);
    assert_eq!(hot_json["keys"][0]["key"], "hot");
    assert_eq!(hot_json["keys"][0]["count"], count);

    let (status, _) = http_get(&metrics, "/healthz");
    assert!(status.contains("200"), "{status}");

    let mut child = guard.0.take().unwrap();
    let status = signal_and_wait(&mut child, "-TERM", "proxy");
    assert!(status.success(), "proxy exited with {status}");
}

#[test]
fn bad_flags_exit_2_naming_the_flag() {
    for (args, flag) in [
        (&["proxy"][..], "--upstream"),
        (&["proxy", "--upstream", "no-port"][..], "--upstream"),
        (
            &["proxy", "--upstream", "k:9092", "--max-frame-bytes", "10"][..],
            "--max-frame-bytes",
        ),
        (
            &["proxy", "--upstream", "k:9092", "--broker", "k2:9092"][..],
            "--broker",
        ),
        (
            &[
                "proxy",
                "--upstream",
                "k:9092",
                "--hot-keys",
                "20",
                "--hot-key-capacity",
                "10",
            ][..],
            "--hot-keys",
        ),
        (
            &["proxy", "--upstream", "k:9092", "--hot-key-half-life", "0"][..],
            "--hot-key-half-life",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_keyshift"))
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(flag),
            "{args:?} should name {flag}: {stderr}"
        );
    }
}
