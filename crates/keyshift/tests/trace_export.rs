//! `keyshift trace export` against a local fake Jaeger query service that serves the real
//! `/api/traces` JSON shape (traceID/spans/references/tags/processes, microsecond times)
//! and checks the query the command sends.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::mpsc;

use serde_json::{json, Value};

/// One trace as Jaeger returns it: a producer span in service `producer` and a consumer
/// span (CHILD_OF / FOLLOWS_FROM the producer) in service `consumer`, with the seed's tags
/// and the OpenTelemetry messaging attributes.
fn trace(
    id: &str,
    key: &str,
    partition: i64,
    produced_us: i64,
    wait_us: i64,
    service_us: i64,
) -> Value {
    let tag = |k: &str, v: Value| {
        let t = if v.is_string() { "string" } else { "int64" };
        json!({"key": k, "type": t, "value": v})
    };
    json!({
        "traceID": id,
        "spans": [
            {
                "traceID": id, "spanID": format!("{id}01"), "flags": 1,
                "operationName": "send OrderGo", "references": [],
                "startTime": produced_us, "duration": 800,
                "tags": [tag("span.kind", json!("producer")), tag("producer.key", json!(key)),
                         tag("messaging.system", json!("kafka")),
                         tag("messaging.destination.name", json!("OrderGo"))],
                "logs": [], "processID": "p1", "warnings": null
            },
            {
                "traceID": id, "spanID": format!("{id}02"), "flags": 1,
                "operationName": "process OrderGo",
                "references": [{"refType": "FOLLOWS_FROM", "traceID": id, "spanID": format!("{id}01")}],
                "startTime": produced_us + wait_us, "duration": service_us,
                "tags": [tag("span.kind", json!("consumer")), tag("consumer.key", json!(key)),
                         tag("messaging.kafka.partition", json!(partition)),
                         tag("message_bus.destination", json!(partition.to_string()))],
                "logs": [], "processID": "p2", "warnings": null
            }
        ],
        "processes": {
            "p1": {"serviceName": "producer", "tags": []},
            "p2": {"serviceName": "consumer", "tags": [{"key": "hostname", "type": "string", "value": "c-0"}]}
        },
        "warnings": null
    })
}

/// Serves one HTTP request with `body` and reports the request line.
fn fake_jaeger(status: &str, body: String) -> (String, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (tx, rx) = mpsc::channel();
    let status = status.to_owned();
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut request_line = String::new();
        reader.read_line(&mut request_line).unwrap();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
        }
        tx.send(request_line.trim_end().to_owned()).unwrap();
        let mut stream = stream;
        write!(
            stream,
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
    });
    (format!("http://{addr}"), rx)
}

fn export(url: &str, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_keyshift"))
        .args([
            "trace",
            "export",
            "--jaeger-url",
            url,
            "--service",
            "consumer",
        ])
        .args(["--lookback", "2h", "--limit", "5"])
        .args(extra)
        .output()
        .unwrap()
}

fn answer() -> String {
    json!({
        "data": [
            trace("a1", "location_1", 0, 1_700_000_000_000_000, 2_000, 1_000),
            trace("a2", "location_1", 0, 1_700_000_000_100_000, 6_000, 1_000),
            trace("a3", "location_7", 1, 1_700_000_000_200_000, 40_000, 3_000),
            // A trace with only a consumer span (its producer was not sampled).
            {"traceID": "b1", "spans": [{"traceID": "b1", "spanID": "x", "operationName": "process OrderGo",
              "references": [], "startTime": 1, "duration": 1, "tags": [], "logs": [], "processID": "p1"}],
             "processes": {"p1": {"serviceName": "consumer", "tags": []}}, "warnings": null}
        ],
        "total": 0, "limit": 0, "offset": 0, "errors": null
    })
    .to_string()
}

#[test]
fn json_export_has_per_key_and_per_partition_latency() {
    let (url, request) = fake_jaeger("200 OK", answer());
    let out = export(&url, &["--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        request.recv().unwrap(),
        "GET /api/traces?service=consumer&lookback=2h&limit=5 HTTP/1.1"
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["traces"], 4);
    assert_eq!(v["unpaired_traces"], 1);
    assert_eq!(v["records"].as_array().unwrap().len(), 3);
    let k1 = &v["by_key"]["location_1"];
    assert_eq!(k1["count"], 2);
    assert_eq!(k1["wait_p50_ms"], 2.0);
    assert_eq!(k1["wait_p99_ms"], 6.0);
    assert_eq!(k1["e2e_max_ms"], 7.0);
    let p1 = &v["by_partition"]["1"];
    assert_eq!(p1["count"], 1);
    assert_eq!(p1["wait_p50_ms"], 40.0);
    assert_eq!(p1["e2e_p50_ms"], 43.0);
    assert_eq!(v["by_partition"]["0"]["count"], 2);
    let first = &v["records"][0];
    assert_eq!(first["producer_service"], "producer");
    assert_eq!(first["consumer_service"], "consumer");
}

#[test]
fn table_export_lists_partitions_and_keys() {
    let (url, _request) = fake_jaeger("200 OK", answer());
    let out = export(&url, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with(
            "service consumer: 4 traces, 3 producer→consumer records, 1 traces without both spans"
        ),
        "{text}"
    );
    let row = |name: &str| {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no row {name} in\n{text}"))
            .split_whitespace()
            .skip(1)
            .map(|x| x.parse::<f64>().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(row("location_7"), vec![1.0, 40.0, 40.0, 43.0, 43.0, 43.0]);
    assert_eq!(row("location_1"), vec![2.0, 2.0, 6.0, 3.0, 7.0, 7.0]);
    assert_eq!(row("1"), vec![1.0, 40.0, 40.0, 43.0, 43.0, 43.0]);
}

#[test]
fn jaeger_errors_and_bad_flags_are_reported() {
    let (url, _request) = fake_jaeger(
        "500 Internal Server Error",
        r#"{"errors":[{"code":500,"msg":"storage down"}]}"#.to_owned(),
    );
    let out = export(&url, &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("500") && err.contains("storage down"), "{err}");

    let out = export("http://127.0.0.1:1", &["--lookback", "2weeks"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--lookback"));
    let out = export("not a url", &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--jaeger-url"));
}
