//! `keyshift loadgen` as a user runs it, straight to Kafka and through the gateway, with every
//! record read back from the embedded broker.
//!
//! What is proved: exactly `--iter` records arrive; each key's probes carry seq 0..n−1 with
//! no gap or duplicate and in log order within the partition; the send times follow the
//! schedule exactly (uniform: record i at i/rate; token bucket: a burst at 0, then 1/rate
//! apart) — they are planned, not taken from responses, which is what open loop means; and
//! the printed report agrees with what is in Kafka. A repeated `--url` spreads requests over
//! several gateways.

mod gateway_support;
mod process_support;

use std::collections::HashMap;

use gateway_support::*;
use keyshift_core::probe::Probe;
use process_support::http_get;
use serde_json::Value;

/// Decodes every record as a probe and checks per-key sequences; returns the probes.
fn check_probes(records: &[Rec]) -> Vec<Probe> {
    let mut next: HashMap<&str, u64> = HashMap::new();
    let mut probes = Vec::new();
    // `records` is in partition then offset order; with a key on one partition (hash), a
    // key's records are in log order.
    for r in records {
        let p = Probe::decode(&r.value).unwrap_or_else(|e| panic!("{e}: {r:?}"));
        assert_eq!(p.body, format!("{} message body", r.key), "{r:?}");
        let n = next.entry(&r.key).or_insert(0);
        assert_eq!(p.seq, *n, "key {} out of order or with a gap: {r:?}", r.key);
        *n += 1;
        probes.push(p);
    }
    probes
}

/// Checks that the sorted send times, relative to the first, are exactly `expected(i)` µs
/// (±1 µs of rounding).
fn check_schedule(probes: &[Probe], expected: impl Fn(u64) -> u64) {
    let mut sent: Vec<u64> = probes.iter().map(|p| p.sent_us).collect();
    sent.sort_unstable();
    let t0 = sent[0];
    for (i, t) in sent.iter().enumerate() {
        let want = expected(i as u64);
        let got = t - t0;
        assert!(
            got.abs_diff(want) <= 1,
            "record {i} was sent at +{got} µs, the schedule says +{want} µs"
        );
    }
}

fn run_loadgen(args: &[&str]) -> Value {
    let out = keyshift()
        .arg("loadgen")
        .args(args)
        .arg("--json")
        .output()
        .expect("run loadgen");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "loadgen failed: {stderr}");
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn direct_to_kafka_sends_exactly_iter_records_on_schedule() {
    let topic = "lg";
    let broker = broker_with_topic(topic, 4);
    let report = run_loadgen(&[
        "--bootstrap-servers",
        broker.bootstrap_servers(),
        "--topic",
        topic,
        "--strategy",
        "hash",
        "--rate",
        "500",
        "--iter",
        "300",
        "--keys",
        "50",
        "--arrivals",
        "uniform",
    ]);
    assert_eq!(report["sent"], 300, "{report}");
    assert_eq!(report["ok"], 300, "{report}");
    assert_eq!(report["errors"], 0, "{report}");

    let records = read_all(&broker, topic);
    assert_eq!(records.len(), 300);
    let probes = check_probes(&records);
    // Uniform at 500/s: record i is due at i × 2000 µs.
    check_schedule(&probes, |i| i * 2000);
    assert_eq!(
        report["keys"],
        records
            .iter()
            .map(|r| &r.key)
            .collect::<std::collections::HashSet<_>>()
            .len()
    );
    let mut per_partition = [0u64; 4];
    for r in &records {
        per_partition[r.partition as usize] += 1;
    }
    let reported: Vec<u64> = report["per_partition"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(reported, per_partition[..reported.len()]);
    assert_eq!(reported.iter().sum::<u64>(), 300);
}

#[test]
fn through_the_gateway_keeps_per_key_order_and_the_token_bucket() {
    let topic = "lg-http";
    let broker = broker_with_topic(topic, 3);
    let gw = GatewayProcess::start(broker.bootstrap_servers(), topic, &["--strategy", "hash"]);
    let url = format!("{}/new", gw.base);
    let report = run_loadgen(&[
        "--url", &url, "--rate", "400", "--burst", "50", "--iter", "200", "--keys", "10", "--seed",
        "3",
    ]);
    assert_eq!(
        (report["sent"].as_u64(), report["ok"].as_u64()),
        (Some(200), Some(200)),
        "{report}"
    );

    let records = read_all(&broker, topic);
    assert_eq!(records.len(), 200);
    let probes = check_probes(&records);
    // The seed's limiter: 50 at once, then one per 2500 µs.
    check_schedule(&probes, |i| if i < 50 { 0 } else { (i - 49) * 2500 });
}

/// `--url` repeated: requests are spread over both gateways at random, none is lost, and with
/// hash routing every key stays on its one partition.
#[test]
fn repeated_urls_spread_requests_over_the_gateways() {
    let topic = "lg-two-gateways";
    let broker = broker_with_topic(topic, 3);
    let gateways = [
        GatewayProcess::start(broker.bootstrap_servers(), topic, &["--strategy", "hash"]),
        GatewayProcess::start(broker.bootstrap_servers(), topic, &["--strategy", "hash"]),
    ];
    let urls: Vec<String> = gateways.iter().map(|g| format!("{}/new", g.base)).collect();
    let report = run_loadgen(&[
        "--url", &urls[0], "--url", &urls[1], "--rate", "1000", "--iter", "200", "--keys", "10",
        "--seed", "5",
    ]);
    assert_eq!(
        (report["sent"].as_u64(), report["ok"].as_u64()),
        (Some(200), Some(200)),
        "{report}"
    );
    let per_gateway: Vec<f64> = gateways
        .iter()
        .map(|g| {
            let (_, body) = http_get(g.base.trim_start_matches("http://"), "/metrics");
            parse_metrics(&body)
                .get("keyshift_gateway_records_total")
                .copied()
                .unwrap_or(0.0)
        })
        .collect();
    assert_eq!(per_gateway.iter().sum::<f64>(), 200.0, "{per_gateway:?}");
    assert!(
        per_gateway.iter().all(|&n| n > 0.0),
        "both gateways got requests: {per_gateway:?}"
    );
    let records = read_all(&broker, topic);
    assert_eq!(records.len(), 200);
    let mut home = HashMap::new();
    for r in &records {
        assert_eq!(
            *home.entry(r.key.clone()).or_insert(r.partition),
            r.partition,
            "key {} on two partitions",
            r.key
        );
    }
}

#[test]
fn bad_flags_are_named() {
    let out = keyshift()
        .args(["loadgen", "--iter", "5"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--url") || err.contains("--bootstrap-servers"),
        "{err}"
    );

    let out = keyshift()
        .args([
            "loadgen",
            "--url",
            "http://127.0.0.1:1/new",
            "--zipf-v",
            "0.5",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--zipf-v"), "{err}");

    // Nothing listening: every request fails, the report says so, the exit status is 1.
    let out = keyshift()
        .args([
            "loadgen",
            "--url",
            "http://127.0.0.1:1/new",
            "--iter",
            "3",
            "--rate",
            "1000",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("errors          3"), "{stdout}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no record was acknowledged"), "{err}");
}
