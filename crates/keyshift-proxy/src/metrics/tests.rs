use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use prometheus_client::registry::Registry;

use super::*;

/// Parses OpenMetrics text into `name{sorted labels}` → value, checking every line's shape.
fn parse(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    assert!(text.ends_with("# EOF\n"), "{text}");
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').expect("sample has a value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let key = match series.split_once('{') {
            None => series.to_owned(),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect("labels close");
                let mut labels: Vec<&str> = split_labels(body);
                labels.sort_unstable();
                format!("{name}{{{}}}", labels.join(","))
            }
        };
        assert!(out.insert(key, value).is_none(), "duplicate series {line}");
    }
    out
}

/// Splits `a="x",b="y,z"` at the commas between labels (values may hold commas).
fn split_labels(body: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, ch) in body.char_indices() {
        match ch {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(&body[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < body.len() {
        parts.push(&body[start..]);
    }
    parts
}

fn scrape(m: &ProxyMetrics) -> BTreeMap<String, f64> {
    let mut registry = Registry::default();
    m.register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    parse(&text)
}

fn metrics(config: MetricsConfig) -> ProxyMetrics {
    ProxyMetrics::new(config).unwrap()
}

#[test]
fn requests_errors_latency_and_bytes_in_both_views() {
    let m = metrics(MetricsConfig::default());
    m.connection_opened(1);
    m.request(0, 9, "app", 100);
    m.request(0, 9, "app", 50);
    m.request(3, 12, "", 40);
    m.response(0, 9, "app", 60, Duration::from_micros(80), &[]);
    m.response(0, 9, "app", 60, Duration::from_micros(300), &[3, 3, 0]);
    m.response(3, 12, "", 500, Duration::from_millis(2), &[]);
    m.connection_closed(1, "client_closed");

    let s = m.snapshot();
    assert_eq!(s.connections.accepted, 1);
    assert_eq!(s.connections.open, 0);
    assert_eq!(s.connections.closed[0].name, "client_closed");
    assert_eq!(s.requests.len(), 2);
    assert_eq!(
        (s.requests[1].api.as_str(), s.requests[1].count),
        ("Produce", 2)
    );
    assert_eq!(s.errors.len(), 1);
    assert_eq!(s.errors[0].error, "UnknownTopicOrPartition");
    assert_eq!(s.errors[0].count, 2);

    let p = scrape(&m);
    assert_eq!(
        p["keyshift_proxy_requests_total{api=\"Produce\",client_id=\"app\",version=\"9\"}"],
        2.0
    );
    assert_eq!(
        p["keyshift_proxy_requests_total{api=\"Metadata\",client_id=\"\",version=\"12\"}"],
        1.0
    );
    assert_eq!(
        p["keyshift_proxy_response_errors_total{api=\"Produce\",client_id=\"app\",error=\"UnknownTopicOrPartition\",error_code=\"3\",version=\"9\"}"],
        2.0
    );
    assert_eq!(
        p["keyshift_proxy_request_duration_seconds_count{api=\"Produce\"}"],
        2.0
    );
    // 80 µs lands in the ≤ 100 µs bucket, 300 µs in ≤ 400 µs.
    assert_eq!(
        p["keyshift_proxy_request_duration_seconds_bucket{api=\"Produce\",le=\"0.0001\"}"],
        1.0
    );
    assert_eq!(
        p["keyshift_proxy_request_duration_seconds_bucket{api=\"Produce\",le=\"0.0004\"}"],
        2.0
    );
    assert_eq!(
        p["keyshift_proxy_kafka_bytes_total{api=\"Produce\",direction=\"in\"}"],
        150.0
    );
    assert_eq!(
        p["keyshift_proxy_kafka_bytes_total{api=\"Produce\",direction=\"out\"}"],
        120.0
    );
    assert_eq!(
        p["keyshift_proxy_closed_connections_total{reason=\"client_closed\"}"],
        1.0
    );
    assert_eq!(p["keyshift_proxy_open_connections"], 0.0);
}

#[test]
fn client_ids_past_the_cap_fold_into_overflow() {
    let m = metrics(MetricsConfig {
        max_client_ids: 2,
        ..MetricsConfig::default()
    });
    for i in 0..10 {
        m.request(18, 3, &format!("client-{i}"), 10);
    }
    m.request(18, 3, "client-1", 10);
    let s = m.snapshot();
    let clients: Vec<(&str, u64)> = s
        .requests
        .iter()
        .map(|r| (r.client_id.as_str(), r.count))
        .collect();
    assert_eq!(
        clients,
        [("__overflow__", 8), ("client-0", 1), ("client-1", 2)]
    );
    let p = scrape(&m);
    assert_eq!(
        p["keyshift_proxy_label_overflow_total{label=\"client_id\"}"],
        8.0
    );
}

#[test]
fn partitions_past_the_cap_fold_into_one_series() {
    let m = metrics(MetricsConfig {
        max_partitions: 3,
        ..MetricsConfig::default()
    });
    let t = Instant::now();
    for p in 0..5 {
        m.produce_acked("t", p, Some(0), 10, 100, t);
    }
    let s = m.snapshot();
    assert_eq!(s.partitions.len(), 4);
    let over = s.partitions.iter().find(|p| p.partition == -1).unwrap();
    assert_eq!(
        (over.topic.as_str(), over.produced_records),
        ("__overflow__", 20)
    );
    let total: u64 = s.partitions.iter().map(|p| p.produced_records).sum();
    assert_eq!(total, 50);
}

const NO_ID: uuid::Uuid = uuid::Uuid::nil();

#[test]
fn fetched_records_count_once_from_the_fetch_offset() {
    let m = metrics(MetricsConfig::default());
    m.connection_opened(7);
    let t = Instant::now();
    // Batch 0..=4 fetched from offset 2 (a mid-batch committed position): 3 records count.
    m.fetch_requested(7, [("t", NO_ID, 0, 2)]);
    m.fetched(7, "t", 0, 0..5, 4, 500, t);
    // The same batch again (a retried fetch) counts nothing.
    m.fetched(7, "t", 0, 0..5, 4, 500, t);
    // The next batch, offsets 5..=9 with a compaction gap at 7.
    m.fetch_requested(7, [("t", NO_ID, 0, 5)]);
    m.fetched(7, "t", 0, [5, 6, 8, 9], 9, 400, t);
    // A batch overlapping what was counted counts only the new records.
    m.fetched(7, "t", 0, 5..12, 11, 300, t);
    // Another connection fetching the same records is another consumer: counted again.
    m.connection_opened(8);
    m.fetch_requested(8, [("t", NO_ID, 0, 0)]);
    m.fetched(8, "t", 0, 0..5, 4, 500, t);
    // Fetch v13+ names the topic by id: resolved through a Metadata response seen earlier.
    let id = uuid::Uuid::from_u128(42);
    m.topic_id("t", id);
    m.connection_opened(9);
    m.fetch_requested(9, [("", id, 0, 3)]);
    m.fetched(9, "t", 0, 0..5, 4, 500, t);
    let s = m.snapshot();
    let p = &s.partitions[0];
    assert_eq!(p.fetched_records, 3 + 4 + 2 + 5 + 2);
    assert_eq!(p.fetched_bytes, 500 + 400 + 300 + 500 + 500);
}

#[test]
fn produce_to_fetch_latency_matches_offsets_to_produce_times() {
    let m = metrics(MetricsConfig {
        produce_times: 2,
        ..MetricsConfig::default()
    });
    m.connection_opened(1);
    let t0 = Instant::now();
    m.produce_acked("t", 0, Some(0), 10, 1000, t0);
    m.produce_acked("t", 0, Some(10), 10, 1000, t0 + Duration::from_millis(100));
    // Offset 15 was produced at t0 + 100 ms, fetched at t0 + 103 ms: 3 ms.
    m.fetch_requested(1, [("t", NO_ID, 0, 15)]);
    m.fetched(1, "t", 0, 15..20, 19, 500, t0 + Duration::from_millis(103));
    let s = m.snapshot();
    let d = &s.produce_to_fetch[0].latency;
    assert_eq!(d.count, 1);
    assert!((d.sum_secs - 0.003).abs() < 1e-6, "{}", d.sum_secs);
    // Only `produce_times` batches are remembered: a third evicts offsets 0..10.
    m.produce_acked("t", 0, Some(20), 10, 1000, t0);
    m.connection_opened(2);
    m.fetched(2, "t", 0, 0..10, 9, 500, t0);
    assert_eq!(m.snapshot().produce_to_fetch[0].latency.count, 1);
    assert_eq!(m.snapshot().partitions[0].high_watermark, Some(30));
}

#[test]
fn group_lag_is_high_watermark_minus_committed() {
    let m = metrics(MetricsConfig::default());
    m.committed("g", "t", 0, 5);
    let s = m.snapshot();
    assert_eq!(s.groups[0].lag, None, "no high watermark seen yet");
    m.high_watermark("t", 0, 12);
    m.high_watermark("t", 0, 9); // an older response does not lower it
    m.committed("g", "t", 0, 7);
    let s = m.snapshot();
    assert_eq!(s.groups[0].committed_offset, 7);
    assert_eq!(s.groups[0].lag, Some(5));
    assert_eq!(s.commits[0].commits, 2);
    let p = scrape(&m);
    assert_eq!(
        p["keyshift_proxy_group_lag_records{group=\"g\",partition=\"0\",topic=\"t\"}"],
        5.0
    );
    assert_eq!(
        p["keyshift_proxy_group_commits_total{group=\"g\",topic=\"t\"}"],
        2.0
    );
    assert_eq!(
        p["keyshift_proxy_high_watermark{partition=\"0\",topic=\"t\"}"],
        12.0
    );
}

#[test]
fn hot_keys_are_the_top_k_per_topic_and_bounded() {
    let m = metrics(MetricsConfig {
        hot_keys: 2,
        hot_key_capacity: 8,
        hot_key_topics: 1,
        ..MetricsConfig::default()
    });
    let t = Instant::now();
    let mut keys: Vec<Option<&[u8]>> = Vec::new();
    for _ in 0..50 {
        keys.push(Some(b"a"));
    }
    for _ in 0..30 {
        keys.push(Some(b"b"));
    }
    for i in 0..40u8 {
        keys.push(Some(std::slice::from_ref(
            &[b'c', b'd', b'e', b'f'][usize::from(i % 4)],
        )));
        keys.push(None);
    }
    m.produced_keys("t", keys, t);
    m.produced_keys("u", [Some(&b"x"[..])], t);
    let s = m.snapshot();
    assert_eq!(s.hot_keys.len(), 1, "only one topic is tracked");
    let top: Vec<(&str, u64)> = s.hot_keys[0]
        .keys
        .iter()
        .map(|k| (k.key.as_str(), k.count))
        .collect();
    assert_eq!(top, [("a", 50), ("b", 30)]);
    assert_eq!(s.hot_keys[0].keyed_records, 120);
    let p = scrape(&m);
    assert_eq!(
        p["keyshift_proxy_hot_key_records{key=\"a\",topic=\"t\"}"],
        50.0
    );
    assert_eq!(
        p["keyshift_proxy_label_overflow_total{label=\"hot_key_topic\"}"],
        1.0
    );
    assert_eq!(
        p.keys()
            .filter(|k| k.starts_with("keyshift_proxy_hot_key_rate{"))
            .count(),
        2
    );
}

#[test]
fn keys_render_as_text_or_hex_and_are_cut() {
    assert_eq!(render_key(b"location_7"), "location_7");
    assert_eq!(render_key(&[0, 1, 0xff]), "0x0001ff");
    assert_eq!(render_key(b"tab\there"), "0x7461620968657265");
    let long = vec![b'k'; 100];
    assert_eq!(render_key(&long), format!("{}…", "k".repeat(64)));
}

#[test]
fn passthrough_connections_and_bytes() {
    let m = metrics(MetricsConfig::default());
    m.connection_opened(1);
    m.passthrough_bytes(1, true, 10);
    m.passthrough_bytes(1, false, 20);
    m.passthrough_bytes(1, true, 5);
    let s = m.snapshot();
    assert_eq!(s.connections.passthrough, 1);
    assert_eq!(s.connections.open, 1);
    assert_eq!(
        (
            s.connections.passthrough_bytes_in,
            s.connections.passthrough_bytes_out
        ),
        (15, 20)
    );
    let p = scrape(&m);
    assert_eq!(
        p["keyshift_proxy_passthrough_bytes_total{direction=\"in\"}"],
        15.0
    );
}

#[test]
fn config_errors_name_the_parameter() {
    let e = ProxyMetrics::new(MetricsConfig {
        hot_keys: 0,
        ..MetricsConfig::default()
    })
    .unwrap_err();
    assert_eq!(e.name, "hot-keys");
    let e = ProxyMetrics::new(MetricsConfig {
        hot_keys: 20,
        hot_key_capacity: 10,
        ..MetricsConfig::default()
    })
    .unwrap_err();
    assert_eq!(e.name, "hot-keys");
    let e = ProxyMetrics::new(MetricsConfig {
        hot_key_half_life_secs: -1.0,
        ..MetricsConfig::default()
    })
    .unwrap_err();
    assert_eq!(e.name, "hot-key-half-life");
}
