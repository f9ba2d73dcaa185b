//! `keyshift gateway` as a user runs it: the real binary against an embedded broker, driven
//! over real HTTP, with every acknowledged record read back from Kafka.
//!
//! What is proved: POST /new and POST /batch write exactly the posted key and body to the
//! partition the answer names; every kind of bad request gets its status and a JSON error
//! naming the field, and the gateway keeps serving; /metrics counts exactly what was sent;
//! /healthz answers; SIGTERM stops it gracefully — requests in flight get their answer and
//! records accepted with --no-wait are flushed to Kafka before it exits.

mod gateway_support;
mod process_support;

use std::collections::HashMap;

use gateway_support::*;
use process_support::spawn_listening;
use serde_json::{json, Value};

/// A bad request: URL, content type, body, expected status, error text and field.
type BadCase<'a> = (&'a str, &'a str, Vec<u8>, u16, &'a str, Option<&'a str>);

async fn post(client: &reqwest::Client, url: &str, ct: &str, body: Vec<u8>) -> (u16, Value) {
    let r = client
        .post(url)
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    let text = r.text().await.expect("body");
    let v = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text:?}"));
    (status, v)
}

async fn post_json(client: &reqwest::Client, url: &str, v: Value) -> (u16, Value) {
    post(client, url, "application/json", v.to_string().into_bytes()).await
}

async fn get(client: &reqwest::Client, url: &str) -> (u16, String, String) {
    let r = client.get(url).send().await.expect("request");
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, ct, r.text().await.expect("body"))
}

#[test]
fn round_trip_batch_errors_metrics_and_health() {
    let topic = "gw";
    let broker = broker_with_topic(topic, 4);
    let gw = GatewayProcess::start(
        broker.bootstrap_servers(),
        topic,
        &[
            "--strategy",
            "hash",
            "--max-batch",
            "5",
            "--max-key-bytes",
            "32",
            "--max-request-bytes",
            "4096",
        ],
    );
    let base = gw.base.clone();
    let client = reqwest::Client::new();
    let rt = runtime();
    // key, body → (partition, offset) as answered.
    let mut answered: HashMap<(String, String), (u32, i64)> = HashMap::new();

    rt.block_on(async {
        // Single records: the seed's shape.
        for i in 0..12 {
            let key = format!("location_{}", i % 3);
            let body = format!("{key} message body {i}");
            let (status, v) = post_json(
                &client,
                &format!("{base}/new"),
                json!({"key": key, "body": body}),
            )
            .await;
            assert_eq!(status, 200, "{v}");
            let p = v["partition"].as_u64().expect("partition") as u32;
            let o = v["offset"].as_i64().expect("offset");
            assert!(p < 4, "{v}");
            answered.insert((key, body), (p, o));
        }

        // A batch: per-item results in order.
        let items: Vec<Value> = (0..5)
            .map(|i| json!({"key": format!("batch_{}", i % 2), "body": format!("b{i}")}))
            .collect();
        let (status, v) = post_json(
            &client,
            &format!("{base}/batch"),
            Value::Array(items.clone()),
        )
        .await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(
            (v["ok"].as_u64(), v["failed"].as_u64()),
            (Some(5), Some(0)),
            "{v}"
        );
        let results = v["results"].as_array().expect("results");
        assert_eq!(results.len(), 5);
        for (item, r) in items.iter().zip(results) {
            let key = item["key"].as_str().unwrap().to_owned();
            let body = item["body"].as_str().unwrap().to_owned();
            let p = r["partition"].as_u64().expect("partition") as u32;
            answered.insert((key, body), (p, r["offset"].as_i64().expect("offset")));
        }

        // Bad requests: status, error text naming the problem, and the server keeps serving.
        let new = format!("{base}/new");
        let batch = format!("{base}/batch");
        let cases: Vec<BadCase> = vec![
            (
                &new,
                "application/json",
                b"{\"key\": ".to_vec(),
                400,
                "not valid JSON",
                None,
            ),
            (
                &new,
                "application/json",
                b"".to_vec(),
                400,
                "must not be empty",
                None,
            ),
            (
                &new,
                "text/plain",
                br#"{"key":"k","body":"b"}"#.to_vec(),
                415,
                "application/json",
                None,
            ),
            (
                &new,
                "application/json",
                br#"{"body":"b"}"#.to_vec(),
                422,
                "missing",
                Some("key"),
            ),
            (
                &new,
                "application/json",
                br#"{"key":"k"}"#.to_vec(),
                422,
                "missing",
                Some("body"),
            ),
            (
                &new,
                "application/json",
                br#"{"key":7,"body":"b"}"#.to_vec(),
                422,
                "expected a string, got a number",
                Some("key"),
            ),
            (
                &new,
                "application/json",
                br#"{"key":"","body":"b"}"#.to_vec(),
                422,
                "must not be empty",
                Some("key"),
            ),
            (
                &new,
                "application/json",
                br#"{"key":"k","body":"b","extra":1}"#.to_vec(),
                422,
                "unknown field",
                Some("extra"),
            ),
            (
                &new,
                "application/json",
                br#"["k","b"]"#.to_vec(),
                422,
                "expected an object",
                Some("body"),
            ),
            (
                &new,
                "application/json",
                format!(r#"{{"key":"{}","body":"b"}}"#, "k".repeat(33)).into_bytes(),
                413,
                "at most 32",
                Some("key"),
            ),
            (
                &new,
                "application/json",
                format!(r#"{{"key":"k","body":"{}"}}"#, "x".repeat(5000)).into_bytes(),
                413,
                "larger than the limit",
                None,
            ),
            (
                &batch,
                "application/json",
                br#"{"key":"k","body":"b"}"#.to_vec(),
                422,
                "expected a JSON array",
                Some("body"),
            ),
            (
                &batch,
                "application/json",
                br#"[{"key":"k","body":"b"},{"key":1,"body":"b"}]"#.to_vec(),
                422,
                "expected a string",
                Some("[1].key"),
            ),
            (
                &batch,
                "application/json",
                json!(vec![json!({"key":"k","body":"b"}); 6])
                    .to_string()
                    .into_bytes(),
                413,
                "at most 5",
                None,
            ),
        ];
        for (url, ct, body, want_status, want_text, want_field) in cases {
            let shown = String::from_utf8_lossy(&body[..body.len().min(60)]).into_owned();
            let (status, v) = post(&client, url, ct, body).await;
            assert_eq!(status, want_status, "{url} {shown}: {v}");
            let error = v["error"]
                .as_str()
                .unwrap_or_else(|| panic!("no error text: {v}"));
            assert!(error.contains(want_text), "{url} {shown}: {error}");
            assert_eq!(v["field"].as_str(), want_field, "{url} {shown}: {v}");
        }
        // Wrong method and unknown path: JSON errors too.
        let r = client.get(format!("{base}/new")).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 405);
        let r = client.post(format!("{base}/nope")).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 404);

        // Still serving after all that.
        let (status, v) = post_json(&client, &new, json!({"key": "after", "body": "errors"})).await;
        assert_eq!(status, 200, "{v}");
        answered.insert(
            ("after".into(), "errors".into()),
            (
                v["partition"].as_u64().unwrap() as u32,
                v["offset"].as_i64().unwrap(),
            ),
        );

        let (status, _, text) = get(&client, &format!("{base}/healthz")).await;
        assert_eq!((status, text.trim()), (200, "ok"));
    });

    // Everything answered is in Kafka where the answer said, with the same key and body.
    let records = read_all(&broker, topic);
    assert_eq!(records.len(), answered.len(), "{records:?}");
    let mut per_partition = [0u64; 4];
    for r in &records {
        let body = String::from_utf8(r.value.clone()).unwrap();
        let at = answered
            .get(&(r.key.clone(), body.clone()))
            .unwrap_or_else(|| panic!("unexpected record {r:?}"));
        assert_eq!(*at, (r.partition, r.offset), "{r:?}");
        per_partition[r.partition as usize] += 1;
    }
    // hash strategy: Kafka's default partitioner.
    for r in &records {
        assert_eq!(
            r.partition,
            keyshift_core::hash::kafka_partition(r.key.as_bytes(), 4),
            "{r:?}"
        );
    }

    // /metrics counts exactly what was sent.
    let (status, ct, text) = rt.block_on(get(&client, &format!("{base}/metrics")));
    assert_eq!(status, 200);
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    let m = parse_metrics(&text);
    let n = answered.len() as f64;
    assert_eq!(m.get("keyshift_gateway_records_total"), Some(&n), "{text}");
    assert_eq!(m.get("keyshift_producer_records_total"), Some(&n), "{text}");
    let bytes: usize = answered.keys().map(|(k, b)| k.len() + b.len()).sum();
    assert_eq!(
        m.get("keyshift_gateway_bytes_total"),
        Some(&(bytes as f64)),
        "{text}"
    );
    for (p, count) in per_partition.iter().enumerate() {
        let series = format!("keyshift_producer_partition_records_total{{partition=\"{p}\"}}");
        assert_eq!(m.get(&series), Some(&(*count as f64)), "{series}\n{text}");
    }
    let code = |endpoint: &str, code: u16| {
        m.get(&format!(
            "keyshift_gateway_requests_total{{endpoint=\"{endpoint}\",code=\"{code}\"}}"
        ))
        .copied()
    };
    assert_eq!(code("/new", 200), Some(13.0), "{text}");
    assert_eq!(code("/batch", 200), Some(1.0), "{text}");
    assert_eq!(code("/new", 422), Some(6.0), "{text}");
    assert_eq!(code("/new", 400), Some(2.0), "{text}");
    assert_eq!(code("/new", 415), Some(1.0), "{text}");
    assert_eq!(code("/new", 413), Some(2.0), "{text}");
    assert_eq!(code("/batch", 413), Some(1.0), "{text}");
    assert_eq!(
        m.get("keyshift_gateway_delivery_errors_total"),
        Some(&0.0),
        "{text}"
    );
    assert_eq!(
        m.get("keyshift_producer_delivery_errors_total"),
        Some(&0.0),
        "{text}"
    );
    assert_eq!(
        m.get("keyshift_gateway_in_flight_requests"),
        Some(&0.0),
        "{text}"
    );
    assert!(
        m.contains_key("keyshift_producer_info{strategy=\"hash\",topic=\"gw\"}"),
        "{text}"
    );
    // Each of location_0..2 got 4 records; batch_0 3, batch_1 2: all tracked exactly.
    for (key, count) in [("location_0", 4.0), ("batch_0", 3.0), ("batch_1", 2.0)] {
        let series = format!("keyshift_gateway_hot_key_records{{key=\"{key}\"}}");
        assert_eq!(m.get(&series), Some(&count), "{series}\n{text}");
    }
    assert!(text.trim_end().ends_with("# EOF"));
}

#[test]
fn sigterm_answers_in_flight_requests_and_flushes_accepted_records() {
    let topic = "gw-shutdown";
    let broker = broker_with_topic(topic, 3);
    let client = reqwest::Client::new();
    let rt = runtime();

    // 1. Waiting mode: requests in flight when SIGTERM arrives still get their 200. A long
    //    linger keeps them in the producer until the signal has certainly arrived.
    let mut gw = GatewayProcess::start(
        broker.bootstrap_servers(),
        topic,
        &["--strategy", "keyshift", "-X", "linger.ms=3000"],
    );
    let base = gw.base.clone();
    let in_flight = 8;
    let answers = rt.block_on(async {
        let mut tasks = Vec::new();
        for i in 0..in_flight {
            let client = client.clone();
            let url = format!("{base}/new");
            tasks.push(tokio::spawn(async move {
                post_json(
                    &client,
                    &url,
                    json!({"key": format!("k{i}"), "body": "waiting"}),
                )
                .await
            }));
        }
        // Structural wait: until the gateway reports all of them in flight.
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            let (_, _, text) = get(&client, &format!("{base}/metrics")).await;
            let m = parse_metrics(&text);
            if m.get("keyshift_gateway_in_flight_requests") == Some(&(in_flight as f64)) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "requests never all in flight:\n{text}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let status = tokio::task::spawn_blocking(move || {
            let s = gw.terminate();
            (s, gw)
        });
        let mut answers = Vec::new();
        for t in tasks {
            answers.push(t.await.unwrap());
        }
        let (status, _gw) = status.await.unwrap();
        assert!(status.success(), "gateway exit status {status:?}");
        answers
    });
    for (status, v) in &answers {
        assert_eq!(*status, 200, "{v}");
    }
    let records = read_all(&broker, topic);
    assert_eq!(records.len(), in_flight, "{records:?}");

    // 2. --no-wait: 202 once queued; SIGTERM must flush them all before exiting.
    let mut gw = GatewayProcess::start(
        broker.bootstrap_servers(),
        topic,
        &["--strategy", "hash", "--no-wait", "-X", "linger.ms=3000"],
    );
    let base = gw.base.clone();
    let accepted = 40;
    rt.block_on(async {
        for i in 0..accepted {
            let (status, v) = post_json(
                &client,
                &format!("{base}/new"),
                json!({"key": format!("nw{}", i % 5), "body": format!("{i}")}),
            )
            .await;
            assert_eq!((status, &v), (202, &json!({"accepted": true})));
        }
    });
    let status = gw.terminate();
    assert!(status.success(), "gateway exit status {status:?}");
    let records = read_all(&broker, topic);
    let no_wait: Vec<_> = records.iter().filter(|r| r.key.starts_with("nw")).collect();
    assert_eq!(no_wait.len(), accepted, "accepted records lost at shutdown");
    // Per-key order survived: bodies of each key increase with the offset.
    let mut last: HashMap<&str, i64> = HashMap::new();
    for r in no_wait {
        let i: i64 = std::str::from_utf8(&r.value).unwrap().parse().unwrap();
        let prev = last.insert(&r.key, i).unwrap_or(-1);
        assert!(i > prev, "key {} out of order: {prev} then {i}", r.key);
    }
}

/// With `--consumer-group`, the gateway reads the group's pace and backlog per partition (what
/// its strategy is fed) and shows them on `/metrics`: a key produced faster than the worker
/// serves it leaves a growing backlog on its partition while the worker's pace is measured.
#[test]
fn consumer_feedback_reaches_the_gateway() {
    let topic = "gw-feedback";
    let broker = broker_with_topic(topic, 2);
    // Killed on drop, after the last scrape.
    let _worker = spawn_listening(
        keyshift()
            .args(["worker", "--bootstrap-servers", broker.bootstrap_servers()])
            .args(["--topic", topic, "--group", "feedback-workers"])
            .args(["--service-time-ms", "30", "--metrics-listen", "127.0.0.1:0"]),
    );
    let gw = GatewayProcess::start(
        broker.bootstrap_servers(),
        topic,
        &["--strategy", "hash", "--consumer-group", "feedback-workers"],
    );
    let giant = keyshift_core::hash::kafka_partition(b"giant", 2);
    let pace = format!("keyshift_gateway_consumer_pace{{partition=\"{giant}\"}}");
    let backlog = format!("keyshift_gateway_consumer_backlog{{partition=\"{giant}\"}}");
    let client = reqwest::Client::new();
    let base = gw.base.clone();
    // "giant" at 50 records/s; the worker serves 1 / 30 ms = 33/s.
    let text = runtime().block_on(async {
        let start = tokio::time::Instant::now();
        let deadline = std::time::Instant::now() + PATIENCE;
        for i in 0u32.. {
            let batch = vec![json!({"key": "giant", "body": "x"}); 5];
            let (status, v) = post_json(&client, &format!("{base}/batch"), json!(batch)).await;
            assert_eq!(status, 200, "{v}");
            if i % 5 == 4 {
                let (_, _, text) = get(&client, &format!("{base}/metrics")).await;
                let m = parse_metrics(&text);
                if m.get(&pace).is_some_and(|p| *p > 0.0)
                    && m.get(&backlog).is_some_and(|b| *b > 0.0)
                {
                    return text;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "no feedback shown:\n{text}"
                );
            }
            tokio::time::sleep_until(start + std::time::Duration::from_millis(100) * (i + 1)).await;
        }
        unreachable!()
    });
    // Both partitions are reported, the idle one with nothing waiting.
    let m = parse_metrics(&text);
    let other = 1 - giant;
    assert_eq!(
        m.get(&format!(
            "keyshift_gateway_consumer_backlog{{partition=\"{other}\"}}"
        )),
        Some(&0.0),
        "{text}"
    );
}

#[test]
fn bad_flags_and_missing_topic_are_reported() {
    let out = keyshift()
        .args([
            "gateway",
            "--bootstrap-servers",
            "127.0.0.1:1",
            "-X",
            "linger.ms=soon",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("linger.ms=soon"), "{err}");

    let broker = broker_with_topic("exists", 1);
    let out = keyshift()
        .args(["gateway", "--bootstrap-servers", broker.bootstrap_servers()])
        .args(["--topic", "does-not-exist", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does-not-exist"), "{err}");

    // A taken port is named.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = keyshift()
        .args(["gateway", "--bootstrap-servers", broker.bootstrap_servers()])
        .args(["--topic", "exists", "--listen", &addr])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&addr), "{err}");

    // A delivery timeout longer than coordinated producers allow (eight member timeouts) is
    // refused, naming the setting and the limit; "0" (no timeout) too.
    for value in ["message.timeout.ms=300000", "delivery.timeout.ms=0"] {
        let out = keyshift()
            .args(["gateway", "--bootstrap-servers", broker.bootstrap_servers()])
            .args(["--topic", "exists", "--listen", "127.0.0.1:0", "-X", value])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{value}");
        let err = String::from_utf8_lossy(&out.stderr);
        let setting = value.split('=').next().unwrap();
        assert!(
            err.contains(setting) && err.contains("24000 ms"),
            "{value}: {err}"
        );
    }
}

/// Issue 15's secured path end to end: the embedded broker requires SASL, and the gateway
/// (keyshift strategy) and an ordered worker reach it with the same Java `client.properties`
/// (SCRAM-SHA-512, password read from a file): every posted record is acknowledged, written
/// and processed.
#[test]
fn gateway_and_worker_reach_a_sasl_broker_with_a_client_config_file() {
    gateway_and_worker_over_sasl("SCRAM-SHA-512");
}

/// The same with PLAIN (which the embedded broker accepts with any password, so only the
/// SCRAM test shows that the password is checked).
#[test]
fn gateway_and_worker_reach_a_sasl_broker_with_plain() {
    gateway_and_worker_over_sasl("PLAIN");
}

fn gateway_and_worker_over_sasl(mechanism: &str) {
    use keyshift_kafka::{BrokerOptions, EmbeddedBroker, SaslUser};
    let broker = EmbeddedBroker::start_with(BrokerOptions {
        sasl_users: vec![SaslUser::new("orders", "orders-pw-19")],
        ..BrokerOptions::default()
    })
    .expect("broker with SASL");
    let topic = "secured-orders";
    broker.create_topic(topic, 4).unwrap();
    let dir = std::env::temp_dir().join(format!(
        "keyshift-gw-sasl-{mechanism}-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let password = dir.join("password");
    let file = process_support::sasl_client_config(
        &dir,
        mechanism,
        "orders",
        &format!("${{file:{}}}", password.display()),
    );
    std::fs::write(&password, "orders-pw-19\n").unwrap();
    let config = file.to_str().unwrap();
    let (_worker, worker_addr) = spawn_listening(
        keyshift()
            .args(["worker", "--bootstrap-servers", broker.bootstrap_servers()])
            .args(["--topic", topic, "--group", "secured-workers"])
            .args(["--metrics-listen", "127.0.0.1:0", "--client-config", config]),
    );
    let mut gw = GatewayProcess::start(
        broker.bootstrap_servers(),
        topic,
        &["--strategy", "keyshift", "--client-config", config],
    );
    let base = gw.base.clone();
    let total = 60;
    runtime().block_on(async {
        let client = reqwest::Client::new();
        for i in 0..total {
            let (status, v) = post_json(
                &client,
                &format!("{base}/new"),
                json!({"key": format!("k{}", i % 6), "body": format!("{i}")}),
            )
            .await;
            assert_eq!(status, 200, "{v}");
        }
    });
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let (_, body) = process_support::http_get(&worker_addr, "/metrics");
        let processed = parse_metrics(&body)
            .get("keyshift_worker_processed_records_total")
            .copied()
            .unwrap_or(0.0);
        if processed == f64::from(total) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the worker processed {processed} of {total}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let mut bodies: Vec<i64> = read_all(&broker, topic)
        .iter()
        .map(|r| std::str::from_utf8(&r.value).unwrap().parse().unwrap())
        .collect();
    bodies.sort_unstable();
    assert_eq!(bodies, (0..i64::from(total)).collect::<Vec<_>>());
    assert!(gw.terminate().success());
    std::fs::remove_dir_all(&dir).unwrap();
}
