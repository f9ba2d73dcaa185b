//! `keyshift trace export`: the seed's analysis step, natively.
//!
//! SLOPS pulled traces from Jaeger's query API (`GET /api/traces?service=…&lookback=…&limit=…`)
//! and looked at latency per key and per partition. This command does the same: for each
//! trace it pairs the producer span (`send <topic>`, or any span with a producer key tag) with
//! its consumer spans, and measures *wait* (consumer start − producer start: producer queue,
//! broker and partition backlog) and *end-to-end* (consumer end − producer start). Keys and
//! partitions come from the OpenTelemetry messaging attributes or the seed's tags
//! (`producer.key`/`consumer.key`, `messaging.kafka.partition`/`message_bus.destination`),
//! so traces from the seed's Go services and from keyshift read alike.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::exit::FlagError;

/// Flags of `keyshift trace export`.
#[derive(Debug, Args)]
#[command(
    about = "Fetch traces from a Jaeger query API and print per-key and per-partition latency",
    long_about = "Fetch traces from a Jaeger query API (GET /api/traces with service, lookback \
                  and limit, as the seed's analysis script did) and print, per record key and \
                  per partition, how long records waited between the producer span and the \
                  consumer span (wait) and until the consumer span ended (end-to-end): count, \
                  p50, p99 and max in milliseconds. --json prints the same data and every \
                  record as JSON."
)]
pub struct ExportArgs {
    /// Base URL of the Jaeger query service.
    #[arg(
        long,
        env = "KEYSHIFT_JAEGER_URL",
        default_value = "http://localhost:16686"
    )]
    jaeger_url: String,

    /// Service whose traces to fetch (the seed used `consumer` and `producer`).
    #[arg(long, env = "KEYSHIFT_JAEGER_SERVICE")]
    service: String,

    /// How far back to look, in Jaeger's units: 30m, 2h, 1d.
    #[arg(long, default_value = "1h", value_parser = lookback)]
    lookback: String,

    /// Maximum number of traces to fetch.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..), default_value_t = 100)]
    limit: u32,

    /// Rows in the per-key table (the keys with the most records).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..), default_value_t = 20)]
    top: u32,

    /// HTTP timeout in seconds.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..), default_value_t = 30)]
    timeout_secs: u64,

    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
}

fn lookback(s: &str) -> Result<String, String> {
    let unit_at = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("expected a number and a unit (30m, 2h, 1d), got '{s}'"))?;
    let (n, unit) = s.split_at(unit_at);
    if n.is_empty() || n.parse::<u64>().map_or(true, |n| n == 0) {
        return Err(format!(
            "expected a positive number before the unit, got '{s}'"
        ));
    }
    if !matches!(unit, "s" | "m" | "h" | "d") {
        return Err(format!("unit must be s, m, h or d, got '{s}'"));
    }
    Ok(s.to_owned())
}

/// Jaeger's `/api/traces` answer (the fields used here).
#[derive(Debug, Deserialize)]
struct TracesResponse {
    #[serde(default)]
    data: Vec<JaegerTrace>,
    #[serde(default)]
    errors: Option<Vec<Value>>,
}

#[derive(Debug, Deserialize)]
struct JaegerTrace {
    #[serde(rename = "traceID")]
    trace_id: String,
    #[serde(default)]
    spans: Vec<JaegerSpan>,
    #[serde(default)]
    processes: BTreeMap<String, JaegerProcess>,
}

#[derive(Debug, Deserialize)]
struct JaegerSpan {
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

#[derive(Debug, Deserialize)]
struct JaegerTag {
    key: String,
    value: Value,
}

#[derive(Debug, Deserialize)]
struct JaegerProcess {
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
struct RecordLatency {
    trace_id: String,
    key: Option<String>,
    partition: Option<String>,
    producer_service: String,
    consumer_service: String,
    /// Consumer span start − producer span start.
    wait_ms: f64,
    /// Consumer span end − producer span start.
    e2e_ms: f64,
}

/// Latency summary of one group of records.
#[derive(Debug, Clone, Serialize, PartialEq)]
struct Summary {
    count: usize,
    wait_p50_ms: f64,
    wait_p99_ms: f64,
    e2e_p50_ms: f64,
    e2e_p99_ms: f64,
    e2e_max_ms: f64,
}

/// What `--json` prints.
#[derive(Debug, Serialize)]
struct Export {
    service: String,
    traces: usize,
    /// Traces without both a producer and a consumer span.
    unpaired_traces: usize,
    overall: Option<Summary>,
    by_key: BTreeMap<String, Summary>,
    by_partition: BTreeMap<String, Summary>,
    records: Vec<RecordLatency>,
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

fn analyze(service: &str, traces: &[JaegerTrace]) -> Export {
    let mut records = Vec::new();
    let mut unpaired = 0;
    for trace in traces {
        let found = records_of(trace);
        if found.is_empty() {
            unpaired += 1;
        }
        records.extend(found);
    }
    Export {
        service: service.to_owned(),
        traces: traces.len(),
        unpaired_traces: unpaired,
        overall: summarize(records.iter()),
        by_key: group_by(&records, |r| r.key.as_ref()),
        by_partition: group_by(&records, |r| r.partition.as_ref()),
        records,
    }
}

fn fetch(args: &ExportArgs) -> anyhow::Result<Vec<JaegerTrace>> {
    let base = args.jaeger_url.trim_end_matches('/');
    let url = reqwest::Url::parse_with_params(
        &format!("{base}/api/traces"),
        [
            ("service", args.service.as_str()),
            ("lookback", args.lookback.as_str()),
            ("limit", &args.limit.to_string()),
        ],
    )
    .map_err(|e| FlagError::new("--jaeger-url", format!("'{}': {e}", args.jaeger_url)))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let body = runtime.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(args.timeout_secs))
            .build()?;
        let response = client
            .get(url.clone())
            .send()
            .await
            .with_context(|| format!("querying Jaeger at {url}"))?;
        let status = response.status();
        let body = response.text().await.context("reading Jaeger's answer")?;
        if !status.is_success() {
            let excerpt: String = body.chars().take(300).collect();
            bail!("Jaeger answered {status} for {url}: {excerpt}");
        }
        anyhow::Ok(body)
    })?;
    let parsed: TracesResponse = serde_json::from_str(&body)
        .with_context(|| format!("Jaeger's answer from {url} is not /api/traces JSON"))?;
    if let Some(errors) = parsed.errors.filter(|e| !e.is_empty()) {
        bail!("Jaeger reported errors: {}", Value::Array(errors));
    }
    Ok(parsed.data)
}

/// Runs `keyshift trace export`.
pub fn run(args: ExportArgs) -> anyhow::Result<()> {
    if args.service.trim().is_empty() {
        return Err(FlagError::new("--service", "must not be empty").into());
    }
    let traces = fetch(&args)?;
    let export = analyze(&args.service, &traces);
    let mut out = std::io::stdout().lock();
    if args.json {
        // As an io::Error, so a closed pipe (`| head`) ends quietly like elsewhere.
        serde_json::to_writer_pretty(&mut out, &export).map_err(std::io::Error::from)?;
        std::io::Write::write_all(&mut out, b"\n")?;
        return Ok(());
    }
    print_tables(&mut out, &export, args.top as usize)?;
    Ok(())
}

fn print_tables(out: &mut impl std::io::Write, e: &Export, top: usize) -> std::io::Result<()> {
    writeln!(
        out,
        "service {}: {} traces, {} producer→consumer records, {} traces without both spans",
        e.service,
        e.traces,
        e.records.len(),
        e.unpaired_traces
    )?;
    let Some(overall) = &e.overall else {
        return Ok(());
    };
    let header = |out: &mut dyn std::io::Write, what: &str| {
        writeln!(
            out,
            "\n{what:<24} {:>7} {:>10} {:>10} {:>10} {:>10} {:>10}",
            "records", "wait p50", "wait p99", "e2e p50", "e2e p99", "e2e max"
        )
    };
    let row = |out: &mut dyn std::io::Write, name: &str, s: &Summary| {
        writeln!(
            out,
            "{name:<24} {:>7} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>10.1}",
            s.count, s.wait_p50_ms, s.wait_p99_ms, s.e2e_p50_ms, s.e2e_p99_ms, s.e2e_max_ms
        )
    };
    header(out, "all (ms)")?;
    row(out, "all", overall)?;
    header(out, "partition (ms)")?;
    let mut partitions: Vec<_> = e.by_partition.iter().collect();
    // Numeric partitions in numeric order, "(none)" last.
    partitions.sort_by_key(|(p, _)| (p.parse::<i64>().unwrap_or(i64::MAX), (*p).clone()));
    for (p, s) in partitions {
        row(out, p, s)?;
    }
    let mut keys: Vec<_> = e.by_key.iter().collect();
    keys.sort_by(|a, b| b.1.count.cmp(&a.1.count).then(a.0.cmp(b.0)));
    header(out, &format!("key (top {top}, ms)"))?;
    for (k, s) in keys.into_iter().take(top) {
        row(out, k, s)?;
    }
    Ok(())
}
