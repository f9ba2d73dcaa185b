//! The seed's trace analysis: per-key and per-partition latency from Jaeger's query API.
//!
//! SLOPS pulled traces from Jaeger (`GET /api/traces?service=…&lookback=…&limit=…`) and looked
//! at latency per key and per partition. [`parse_traces`] reads that answer and [`analyze`]
//! pairs each trace's producer span (`send <topic>`, or any span with a producer key tag) with
//! its consumer spans, measuring *wait* (consumer start − producer start: producer queue,
//! broker and partition backlog) and *end-to-end* (consumer end − producer start). Keys and
//! partitions come from the OpenTelemetry messaging attributes or the seed's tags
//! (`producer.key`/`consumer.key`, `messaging.kafka.partition`/`message_bus.destination`), so
//! traces from the seed's Go services and from keyshift read alike. Pure data and functions:
//! `keyshift trace export` fetches the answer and prints the [`LatencyReport`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Why an answer of Jaeger's query API could not be used.
#[derive(Debug, thiserror::Error)]
pub enum JaegerError {
    /// Not the JSON shape of `/api/traces`.
    #[error("not /api/traces JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// Jaeger answered with its `errors` field set.
    #[error("Jaeger reported errors: {0}")]
    Reported(Value),
}

/// Reads the body of a `/api/traces` answer into its traces; Jaeger's own `errors` are an
/// error.
pub fn parse_traces(body: &str) -> Result<Vec<JaegerTrace>, JaegerError> {
    let parsed: TracesResponse = serde_json::from_str(body)?;
    if let Some(errors) = parsed.errors.filter(|e| !e.is_empty()) {
        return Err(JaegerError::Reported(Value::Array(errors)));
    }
    Ok(parsed.data.unwrap_or_default())
}

/// Jaeger's `/api/traces` answer (the fields used here). Jaeger sends `"data": null` beside
/// its `errors`, so both may be null.
#[derive(Debug, Deserialize)]
struct TracesResponse {
    #[serde(default)]
    data: Option<Vec<JaegerTrace>>,
    #[serde(default)]
    errors: Option<Vec<Value>>,
}

/// One trace of the answer (the fields used here).
#[derive(Debug, Deserialize)]
pub struct JaegerTrace {
    #[serde(rename = "traceID")]
    trace_id: String,
    #[serde(default)]
    spans: Vec<JaegerSpan>,
    #[serde(default)]
    processes: BTreeMap<String, JaegerProcess>,
}

/// One span of a trace.
#[derive(Debug, Deserialize)]
pub struct JaegerSpan {
    #[serde(rename = "operationName", default)]
    operation_name: String,
    /// Microseconds since the Unix epoch.
    #[serde(rename = "startTime")]
    start_time: i64,
    /// Microseconds.
    #[serde(default)]
    duration: i64,
    #[serde(default)]
    tags: Vec<JaegerTag>,
    #[serde(rename = "processID", default)]
    process_id: String,
}

/// A span tag: any JSON value.
#[derive(Debug, Deserialize)]
pub struct JaegerTag {
    key: String,
    value: Value,
}

/// The process (service) a span ran in.
#[derive(Debug, Deserialize)]
pub struct JaegerProcess {
    #[serde(rename = "serviceName", default)]
    service_name: String,
}

impl JaegerSpan {
    fn tag(&self, keys: &[&str]) -> Option<String> {
        keys.iter().find_map(|k| {
            self.tags
                .iter()
                .find(|t| t.key == *k)
                .map(|t| match &t.value {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
        })
    }

    fn kind(&self) -> Option<String> {
        self.tag(&["span.kind"])
    }

    fn is_producer(&self) -> bool {
        self.kind().as_deref() == Some("producer")
            || self.operation_name.starts_with("send ")
            || self.tag(&["producer.key"]).is_some()
    }

    fn is_consumer(&self) -> bool {
        self.kind().as_deref() == Some("consumer")
            || self.operation_name.starts_with("process ")
            || self.tag(&["consumer.key"]).is_some()
    }
}

const KEY_TAGS: &[&str] = &[
    "messaging.kafka.message.key",
    "producer.key",
    "consumer.key",
];
const PARTITION_TAGS: &[&str] = &[
    "messaging.destination.partition.id",
    "messaging.kafka.partition",
    "messaging.kafka.destination.partition",
    "message_bus.destination",
];

/// One traced record: producer span paired with a consumer span.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RecordLatency {
    pub trace_id: String,
    pub key: Option<String>,
    pub partition: Option<String>,
    pub producer_service: String,
    pub consumer_service: String,
    /// Consumer span start − producer span start.
    pub wait_ms: f64,
    /// Consumer span end − producer span start.
    pub e2e_ms: f64,
}

/// Latency summary of one group of records.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    pub count: usize,
    pub wait_p50_ms: f64,
    pub wait_p99_ms: f64,
    pub e2e_p50_ms: f64,
    pub e2e_p99_ms: f64,
    pub e2e_max_ms: f64,
}

/// The analysis of a set of traces: what `keyshift trace export --json` prints.
#[derive(Debug, Serialize)]
pub struct LatencyReport {
    pub service: String,
    pub traces: usize,
    /// Traces without both a producer and a consumer span.
    pub unpaired_traces: usize,
    pub overall: Option<Summary>,
    pub by_key: BTreeMap<String, Summary>,
    pub by_partition: BTreeMap<String, Summary>,
    pub records: Vec<RecordLatency>,
}

fn records_of(trace: &JaegerTrace) -> Vec<RecordLatency> {
    let service = |span: &JaegerSpan| {
        trace
            .processes
            .get(&span.process_id)
            .map(|p| p.service_name.clone())
            .unwrap_or_default()
    };
    let Some(producer) = trace
        .spans
        .iter()
        .filter(|s| s.is_producer())
        .min_by_key(|s| s.start_time)
    else {
        return Vec::new();
    };
    trace
        .spans
        .iter()
        .filter(|s| s.is_consumer() && !std::ptr::eq(*s, producer))
        .map(|consumer| RecordLatency {
            trace_id: trace.trace_id.clone(),
            key: producer.tag(KEY_TAGS).or_else(|| consumer.tag(KEY_TAGS)),
            partition: consumer
                .tag(PARTITION_TAGS)
                .or_else(|| producer.tag(PARTITION_TAGS)),
            producer_service: service(producer),
            consumer_service: service(consumer),
            wait_ms: (consumer.start_time - producer.start_time) as f64 / 1e3,
            e2e_ms: (consumer.start_time + consumer.duration - producer.start_time) as f64 / 1e3,
        })
        .collect()
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn summarize<'a>(records: impl Iterator<Item = &'a RecordLatency>) -> Option<Summary> {
    let (mut wait, mut e2e): (Vec<f64>, Vec<f64>) = records.map(|r| (r.wait_ms, r.e2e_ms)).unzip();
    if wait.is_empty() {
        return None;
    }
    wait.sort_by(f64::total_cmp);
    e2e.sort_by(f64::total_cmp);
    Some(Summary {
        count: wait.len(),
        wait_p50_ms: percentile(&wait, 0.5),
        wait_p99_ms: percentile(&wait, 0.99),
        e2e_p50_ms: percentile(&e2e, 0.5),
        e2e_p99_ms: percentile(&e2e, 0.99),
        e2e_max_ms: e2e[e2e.len() - 1],
    })
}

fn group_by(
    records: &[RecordLatency],
    field: impl Fn(&RecordLatency) -> Option<&String>,
) -> BTreeMap<String, Summary> {
    let mut groups: BTreeMap<String, Vec<&RecordLatency>> = BTreeMap::new();
    for r in records {
        let name = field(r).cloned().unwrap_or_else(|| "(none)".to_owned());
        groups.entry(name).or_default().push(r);
    }
    groups
        .into_iter()
        .filter_map(|(k, rs)| summarize(rs.into_iter()).map(|s| (k, s)))
        .collect()
}

/// Pairs each trace's producer span with its consumer spans and summarises wait and
/// end-to-end latency overall, per key and per partition.
pub fn analyze(service: &str, traces: &[JaegerTrace]) -> LatencyReport {
    let mut records = Vec::new();
    let mut unpaired = 0;
    for trace in traces {
        let found = records_of(trace);
        if found.is_empty() {
            unpaired += 1;
        }
        records.extend(found);
    }
    LatencyReport {
        service: service.to_owned(),
        traces: traces.len(),
        unpaired_traces: unpaired,
        overall: summarize(records.iter()),
        by_key: group_by(&records, |r| r.key.as_ref()),
        by_partition: group_by(&records, |r| r.partition.as_ref()),
        records,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_producer_and_consumer_spans_and_takes_nearest_rank_percentiles() {
        let body = r#"{"data": [
            {"traceID": "a", "processes": {"p": {"serviceName": "prod"}, "c": {"serviceName": "cons"}},
             "spans": [
                {"operationName": "send t", "startTime": 1000, "duration": 10, "processID": "p",
                 "tags": [{"key": "producer.key", "value": "k1"}]},
                {"operationName": "process t", "startTime": 5000, "duration": 2000, "processID": "c",
                 "tags": [{"key": "messaging.kafka.partition", "value": 3}]}]},
            {"traceID": "b", "spans": [{"operationName": "send t", "startTime": 1, "processID": "p"}]}
        ]}"#;
        let traces = parse_traces(body).unwrap();
        let report = analyze("prod", &traces);
        assert_eq!((report.traces, report.unpaired_traces), (2, 1));
        let r = &report.records[0];
        assert_eq!(
            (r.key.as_deref(), r.partition.as_deref()),
            (Some("k1"), Some("3"))
        );
        assert_eq!((r.wait_ms, r.e2e_ms), (4.0, 6.0));
        assert_eq!(
            (r.producer_service.as_str(), r.consumer_service.as_str()),
            ("prod", "cons")
        );
        assert_eq!(report.by_partition["3"].count, 1);
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 0.5), 2.0);
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 0.99), 4.0);
    }

    #[test]
    fn jaeger_errors_and_other_json_are_refused() {
        let reported = parse_traces(r#"{"data": null, "errors": [{"code": 500, "msg": "boom"}]}"#);
        assert!(
            matches!(reported, Err(JaegerError::Reported(_))),
            "{reported:?}"
        );
        assert!(matches!(parse_traces("[1, 2]"), Err(JaegerError::Json(_))));
    }
}
