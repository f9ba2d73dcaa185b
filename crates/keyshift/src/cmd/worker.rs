//! `keyshift worker`: one ordered consumer, with a simulated service time or forwarding each
//! record to the application over HTTP, exporting what it sees on `/metrics`.
//!
//! The worker is a member of a consumer group that processes records through keyshift's
//! [`OrderedConsumer`](keyshift_kafka::OrderedConsumer), so per-key order holds across fenced
//! migrations, up to `--concurrency` records at once and never two of one key. Processing is
//! simulated by default (the consumer end of an experiment or a demo): a fixed or
//! exponentially distributed service time, spent sleeping (an I/O-bound service) or spinning
//! (a CPU-bound one). With `--forward URL` each record is POSTed to the application instead
//! ([`HttpForward`], body [`keyshift_kafka::record_json`]); a 2xx answer means done. With
//! `--exec COMMAND` a long-lived subprocess gets one JSON line per record and answers one
//! line each ([`ExecHandler`]). `/metrics` exports processed, parked and
//! duplicate records, order violations judged from the probes' per-key sequence numbers,
//! park time and end-to-end latency histograms, and every key parked longer than
//! `--park-timeout-ms` (by partition, key and barrier); `/healthz` answers 503 while draining.
//! `--park-policy` chooses what happens to such a key: keep waiting (order kept) or release
//! it, counting order exceptions.
//! With `--otlp-endpoint` (or `OTEL_EXPORTER_OTLP_ENDPOINT`) each record gets a
//! `process <topic>` span continuing the trace of its `traceparent`/`b3` header;
//! `--trace-events` writes CONSUME/COMMIT events to `_tracing`.
//! SIGINT/SIGTERM stop it cleanly: the processed prefix is committed and the member leaves
//! the group, so its partitions move to the other workers at once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, ValueEnum};
use keyshift_kafka::{
    ClientSettings, ConsumerStats, DeliveredRecord, ExecHandler, HttpForward,
    OrderedConsumerBuilder, ParkPolicy, Property, Rebalancing, RetryPolicy, RetryingKey,
    StateStore, WithState, STATE_TOPIC_SUFFIX,
};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use rand::{Rng, SeedableRng};

use super::trace_flags::TraceFlags;
use crate::exit::FlagError;
use crate::http::{self, Health, HttpServer};

/// How service times are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ServiceDist {
    /// Every record takes exactly --service-time-ms.
    Fixed,
    /// Exponentially distributed with mean --service-time-ms (an M/M/1-like server).
    Exponential,
}

/// What to do with a key parked longer than --park-timeout-ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ParkPolicyArg {
    /// Keep waiting for the barrier (order kept) and alert: an error log and the
    /// keyshift_worker_blocked_key_age_seconds metric name the key, partition and barrier.
    Wait,
    /// Release the key's parked records without their barrier; each counts in
    /// keyshift_worker_order_exceptions.
    Release,
}

/// `--rebalance`: how the group moves partitions when a worker joins or leaves.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum RebalanceArg {
    /// Eager (range,roundrobin): every worker gives up every partition at each rebalance.
    /// Correct on every broker, the embedded one included.
    Eager,
    /// Incremental (cooperative-sticky): only the partitions that change owner stop; the
    /// others keep processing, parked and in-flight records included. For Apache Kafka: the
    /// embedded broker (tansu 0.6) misassigns partitions with it.
    Cooperative,
}

/// Flags of `keyshift worker`.
#[derive(Debug, Args)]
#[command(
    about = "Consume a topic in per-key order: a simulated service time, or each record handed to your application (--forward over HTTP, --exec over a subprocess's stdin/stdout)",
    long_about = "Consume a topic as a member of a consumer group, in per-key order across \
                  keyshift's fenced migrations, with a simulated service time: one record at a \
                  time, or up to --concurrency records at once, never two of one key (a \
                  sleeping service time then models a handler waiting on I/O). With --forward URL \
                  each record is POSTed as JSON to the application, in any language, instead \
                  (examples/python/forward_handler.py is one); with --exec COMMAND a long-lived \
                  subprocess gets one JSON line per record on its standard input and answers \
                  each on its standard output (examples/python/exec_handler.py); with --state \
                  each record also carries its key's state, which the answer may change and \
                  which follows the key across migrations, rebalances and crashes.\n\nGET \
                  /metrics exports processed, parked and duplicate records, order violations \
                  (from the experiment probes' per-key sequence numbers), malformed keyshift \
                  headers, handler errors, park time and end-to-end latency; GET /healthz is a health \
                  probe. SIGINT/SIGTERM stop it cleanly: the records in flight finish, processed \
                  offsets are committed and the member leaves the group."
)]
pub struct WorkerArgs {
    /// Kafka bootstrap servers, host:port[,host:port...].
    #[arg(long, env = "KEYSHIFT_BOOTSTRAP_SERVERS")]
    bootstrap_servers: String,

    /// Topic to consume.
    #[arg(long, default_value = "keyshift")]
    topic: String,

    /// Consumer group the worker joins.
    #[arg(long, default_value = "keyshift-workers")]
    group: String,

    /// Mean service time per record in milliseconds (0: no simulated work).
    #[arg(long, value_parser = non_negative_f64, default_value_t = 0.0)]
    service_time_ms: f64,

    /// Distribution of service times.
    #[arg(long, value_enum, default_value_t = ServiceDist::Fixed)]
    service: ServiceDist,

    /// Spin the CPU for the service time instead of sleeping.
    #[arg(long)]
    busy: bool,

    /// Records processed at once, never two of one key [default: 1, or 16 with --forward or
    /// --exec].
    /// With a simulated service each slot is a thread with its own server, so 1 models one
    /// single-server consumer, the capacity the experiment and the autoscaler assume per
    /// worker; with --forward / --exec it is the most records in flight to the application.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=4096))]
    concurrency: Option<u32>,

    /// POST each record to this URL instead of simulating a service (HTTP/1.1, keep-alive
    /// connections; body: one JSON object {"topic", "partition", "offset", "timestamp_ms",
    /// "key", "value", "headers"}, with key_base64/value_base64 in place of key/value for bytes
    /// that are not UTF-8 and headers_base64 for such header values). A 2xx answer means the
    /// record is done; any other answer, a refused connection or --handler-timeout is a failed
    /// attempt (see --max-attempts).
    #[arg(long, value_name = "URL", conflicts_with = "exec")]
    forward: Option<String>,

    /// Run this command (through sh -c) once and hand it each record instead of simulating a
    /// service: one JSON line per record on its standard input (the --forward body plus
    /// "id"), answered on its standard output by one line per record, {"id": N} when done or
    /// {"id": N, "error": "why"}, in any order (up to --concurrency records at once, never two
    /// of one key). Its standard error is the worker's; if it exits, its unanswered records
    /// fail (see --max-attempts) and the next record starts it again.
    #[arg(long, value_name = "COMMAND")]
    exec: Option<String>,

    /// Attempts per record with --forward / --exec, the first included; 0 retries forever
    /// (the key blocks until its record succeeds). A failed record is retried after
    /// --retry-backoff, doubling up to --max-retry-backoff; only its key waits, other keys
    /// flow. After the last attempt it goes to --dead-letter-topic and its key continues.
    #[arg(long, default_value_t = 5)]
    max_attempts: u32,

    /// Wait before a failed record's second attempt (doubles for each further one), e.g.
    /// 100ms, 2s.
    #[arg(long, value_parser = duration_flag, default_value = "100ms", value_name = "DURATION")]
    retry_backoff: Duration,

    /// Longest wait between two attempts of a failed record.
    #[arg(long, value_parser = duration_flag, default_value = "10s", value_name = "DURATION")]
    max_retry_backoff: Duration,

    /// Topic a record goes to when every attempt failed, with its key, value, timestamp and
    /// headers and keyshift-dlq-error, -topic, -partition, -offset, -group and -attempts
    /// headers; created (1 partition) if missing [default: <topic>.keyshift-dlq].
    #[arg(long, value_name = "TOPIC")]
    dead_letter_topic: Option<String>,

    /// Longest one record may take in the application with --forward (the request, connecting
    /// included) or --exec (until its answer), as a number with a unit: 500ms, 30s, 2m.
    #[arg(long, value_parser = duration_flag, default_value = "30s", value_name = "DURATION")]
    handler_timeout: Duration,

    /// Give the application per-key state (with --forward / --exec): each record's JSON also
    /// carries its key's state, "state": text or null when the key has none ("state_base64" in
    /// its place for bytes that are not UTF-8), and the answer may set it: {"state": "..."} in
    /// the --forward answer's body or in the --exec answer line ("state": null deletes it,
    /// leaving it out keeps it). The state is written to a compacted changelog topic
    /// (--state-topic) before the record counts as processed, and follows its key to whichever
    /// worker processes the key's next record, after a migration, a rebalance or a crash; a
    /// redelivered record that was already applied is not handed to the application again.
    #[arg(long)]
    state: bool,

    /// Changelog topic of --state (implies --state); created compacted with 1 partition if
    /// missing. Every worker of the group reads all of it [default: <topic>.keyshift-state].
    #[arg(long, value_name = "TOPIC")]
    state_topic: Option<String>,

    /// Address to serve /metrics and /healthz on.
    #[arg(long, default_value = "127.0.0.1:9100")]
    metrics_listen: SocketAddr,

    /// How the group moves partitions when a worker joins or leaves (a deploy, an autoscaler
    /// step). Every worker of a group must use the same: switch an existing group by stopping
    /// all its workers first.
    #[arg(long, value_enum, default_value_t = RebalanceArg::Eager)]
    rebalance: RebalanceArg,

    /// Group session timeout in milliseconds [default: librdkafka's].
    #[arg(long, value_parser = clap::value_parser!(u64).range(6..=2_147_483_647))]
    session_timeout_ms: Option<u64>,

    /// How often to read committed offsets of partitions parked records wait on (ms).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..), default_value_t = 50)]
    barrier_poll_ms: u64,

    /// How often to commit processed offsets (ms).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..), default_value_t = 100)]
    commit_interval_ms: u64,

    /// How long a key may wait for its migration barrier (its old partition committed past
    /// the fence) before it is reported and --park-policy applies (ms). Set it above the lag
    /// a key's old partition may have.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..), default_value_t = 60_000)]
    park_timeout_ms: u64,

    /// What to do with a key parked longer than --park-timeout-ms.
    #[arg(long, value_enum, default_value_t = ParkPolicyArg::Wait)]
    park_policy: ParkPolicyArg,

    /// Client id the broker sees.
    #[arg(long, default_value = "keyshift-worker")]
    client_id: String,

    /// librdkafka property passed through to the consumer, like kcat (repeatable). The
    /// properties the ordered consumer manages are refused: enable.auto.commit,
    /// auto.commit.enable, enable.auto.offset.store, auto.offset.reset.
    #[arg(short = 'X', value_name = "KEY=VALUE")]
    properties: Vec<Property>,

    #[command(flatten)]
    client_config: crate::cmd::client_config::ClientConfigFlag,

    #[command(flatten)]
    trace_flags: TraceFlags,
}

/// A duration flag: a positive number followed by ms, s or m.
fn duration_flag(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let v: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("expected a duration such as 500ms, 30s or 2m, got '{s}'"))?;
    let secs = match unit {
        "ms" => v / 1e3,
        "s" => v,
        "m" => v * 60.0,
        _ => {
            return Err(format!(
                "expected a unit of ms, s or m after the number (500ms, 30s, 2m), got '{s}'"
            ))
        }
    };
    if !secs.is_finite() || secs <= 0.0 || secs > 86_400.0 {
        return Err(format!(
            "expected a duration above 0 and at most a day, got '{s}'"
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn non_negative_f64(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("expected a number of milliseconds, got '{s}'"))?;
    if !v.is_finite() || v < 0.0 {
        return Err(format!("expected a finite number >= 0, got '{s}'"));
    }
    Ok(v)
}

/// The simulated server: draws a service time and spends it.
#[derive(Debug)]
struct Service {
    mean: Duration,
    dist: ServiceDist,
    busy: bool,
    rng: rand::rngs::StdRng,
}

impl Service {
    fn draw(&mut self) -> Duration {
        match self.dist {
            ServiceDist::Fixed => self.mean,
            ServiceDist::Exponential => {
                // Inverse transform; 1 - U is in (0, 1], so ln is finite.
                let u: f64 = self.rng.gen();
                self.mean.mul_f64(-(1.0 - u).ln())
            }
        }
    }

    fn serve(&mut self) {
        let d = self.draw();
        if d.is_zero() {
            return;
        }
        if self.busy {
            let until = Instant::now() + d;
            while Instant::now() < until {
                std::hint::spin_loop();
            }
        } else {
            std::thread::sleep(d);
        }
    }
}

/// Histograms the handler observes per record.
#[derive(Debug, Clone)]
struct WorkerMetrics {
    park_time: Histogram,
    e2e_latency: Histogram,
    service_time: Histogram,
}

impl WorkerMetrics {
    fn new() -> Self {
        // 0.1 ms .. ~7 min in ×2 steps.
        let buckets = || exponential_buckets(0.000_1, 2.0, 22);
        WorkerMetrics {
            park_time: Histogram::new(buckets()),
            e2e_latency: Histogram::new(buckets()),
            service_time: Histogram::new(buckets()),
        }
    }

    /// Registers the histograms and collectors of the consumer's `stats` and of the state
    /// store, if there is one.
    fn register(
        &self,
        registry: &mut Registry,
        stats: Arc<ConsumerStats>,
        state: Option<StateStore>,
    ) {
        let m = self;
        registry.register_with_unit(
            "keyshift_worker_park_time",
            "Time parked records waited for their migration barrier",
            Unit::Seconds,
            m.park_time.clone(),
        );
        registry.register_with_unit(
            "keyshift_worker_e2e_latency",
            "Probe records: processing start minus the probe's send time",
            Unit::Seconds,
            m.e2e_latency.clone(),
        );
        registry.register_with_unit(
            "keyshift_worker_service_time",
            "Simulated service time per record",
            Unit::Seconds,
            m.service_time.clone(),
        );
        registry.register_collector(Box::new(StatsCollector(stats)));
        if let Some(store) = state {
            registry.register_collector(Box::new(StateCollector(store)));
        }
    }
}

/// Exports the state store's counters at scrape time.
#[derive(Debug)]
struct StateCollector(StateStore);

impl Collector for StateCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let s = self.0.stats();
        gauge(
            &mut e,
            "keyshift_worker_state_keys",
            "Keys with a state in the changelog (--state), as this worker's cache holds them",
            s.keys,
        )?;
        counter(
            &mut e,
            "keyshift_worker_state_refreshes",
            "Records whose key's state was read from the changelog first: a key new to this worker or handed over by a migration, a rebalance or a crash",
            s.refreshes,
        )?;
        counter(
            &mut e,
            "keyshift_worker_state_already_applied",
            "Redelivered records whose key's state shows them applied: not handed to the application again",
            s.already_applied,
        )?;
        counter(
            &mut e,
            "keyshift_worker_state_writes",
            "Key states written to the changelog and acknowledged",
            s.writes,
        )?;
        counter(
            &mut e,
            "keyshift_worker_state_write_failures",
            "State writes that failed (the record failed and is retried)",
            s.write_failures,
        )?;
        counter(
            &mut e,
            "keyshift_worker_state_malformed",
            "Changelog records that did not decode as a keyshift state entry (skipped)",
            s.malformed,
        )
    }
}

/// Exports the consumer's counters and gauges at scrape time.
#[derive(Debug)]
struct StatsCollector(Arc<ConsumerStats>);

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    let c = ConstCounter::new(v);
    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    let g = ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX));
    g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)
}

impl Collector for StatsCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let s = self.0.snapshot();
        counter(
            &mut e,
            "keyshift_worker_processed_records",
            "Records processed",
            s.processed,
        )?;
        counter(
            &mut e,
            "keyshift_worker_parked_records",
            "Records that waited for a migration barrier before processing",
            s.parked_total,
        )?;
        gauge(
            &mut e,
            "keyshift_worker_parked_now_records",
            "Records parked right now",
            s.parked_now,
        )?;
        gauge(
            &mut e,
            "keyshift_worker_pending_records",
            "Records consumed and not yet processed",
            s.pending_now,
        )?;
        counter(
            &mut e,
            "keyshift_worker_duplicate_records",
            "Probe records processed again (over-consumption after a crash or rebalance)",
            s.duplicates,
        )?;
        counter(
            &mut e,
            "keyshift_worker_order_violations",
            "Probe records processed after a later record of their key",
            s.order_violations,
        )?;
        counter(
            &mut e,
            "keyshift_worker_malformed_headers",
            "Records with an undecodable keyshift-route/keyshift-fence header (delivered unordered)",
            s.malformed_headers,
        )?;
        counter(
            &mut e,
            "keyshift_worker_handler_errors",
            "Records whose processing failed",
            s.handler_errors,
        )?;
        counter(
            &mut e,
            "keyshift_worker_fences",
            "Fence records passed",
            s.fences,
        )?;
        counter(
            &mut e,
            "keyshift_worker_commits",
            "Offset commits sent",
            s.commits,
        )?;
        counter(
            &mut e,
            "keyshift_worker_commit_failures",
            "Offset commits that failed",
            s.commit_failures,
        )?;
        counter(
            &mut e,
            "keyshift_worker_barrier_checks",
            "Committed-offset reads (OffsetFetch) for migration barriers",
            s.barrier_checks,
        )?;
        counter(
            &mut e,
            "keyshift_worker_rebalances",
            "Partition assignments and revocations",
            s.rebalances,
        )?;
        gauge(
            &mut e,
            "keyshift_worker_owned_partitions",
            "Partitions assigned to this worker",
            s.owned_partitions,
        )?;
        gauge(
            &mut e,
            "keyshift_worker_paused_partitions",
            "Partitions paused for backpressure",
            s.paused_partitions,
        )?;
        counter(
            &mut e,
            "keyshift_worker_order_exceptions",
            "Records released before their migration barrier passed (--park-policy release)",
            s.order_exceptions,
        )?;
        counter(
            &mut e,
            "keyshift_worker_below_start_records",
            "Records below their partition's committed offset at assignment (the log lost it)",
            s.below_start,
        )?;
        gauge(
            &mut e,
            "keyshift_worker_stalled_partitions",
            "Partitions stopped because the log lost their committed offset",
            s.stalled_partitions,
        )?;
        counter(
            &mut e,
            "keyshift_worker_offset_read_failures",
            "Assignments whose committed offsets could not be read after retries",
            s.offset_read_failures,
        )?;
        gauge(
            &mut e,
            "keyshift_worker_infeasible_keys",
            "Keys that needed more than one consumer in the last 10 s window (busy time / producer-time span of their records): per-key order makes their load unsustainable",
            s.infeasible_key_count,
        )?;
        let mut family = e.encode_descriptor(
            "keyshift_worker_key_consumers_needed",
            "Consumers each infeasible key needs (its rate x its handler time), neediest ten, last 10 s window",
            None,
            MetricType::Gauge,
        )?;
        for k in &s.infeasible_keys {
            let labels = [("key", k.key.clone())];
            ConstGauge::new(k.consumers_needed).encode(family.encode_family(&labels)?)?;
        }
        counter(
            &mut e,
            "keyshift_worker_retries",
            "Failed attempts that were retried (--forward / --exec)",
            s.retries,
        )?;
        counter(
            &mut e,
            "keyshift_worker_dead_lettered",
            "Records written to the dead-letter topic after their last attempt failed",
            s.dead_lettered,
        )?;
        counter(
            &mut e,
            "keyshift_worker_dead_letter_failures",
            "Dead-letter writes that failed (retried; the record's key waits)",
            s.dead_letter_failures,
        )?;
        gauge(
            &mut e,
            "keyshift_worker_retrying_keys",
            "Keys whose record failed and waits for another attempt: each blocks its later records",
            s.retrying_key_count,
        )?;
        let mut family = e.encode_descriptor(
            "keyshift_worker_retrying_key_age",
            "How long each failing key (oldest 50) has been failing",
            Some(&Unit::Seconds),
            MetricType::Gauge,
        )?;
        let retrying_labels = |k: &RetryingKey| {
            [
                ("partition", k.partition.to_string()),
                ("key", String::from_utf8_lossy(&k.key).into_owned()),
            ]
        };
        for k in &s.retrying_keys {
            ConstGauge::new(k.age.as_secs_f64())
                .encode(family.encode_family(&retrying_labels(k))?)?;
        }
        let mut family = e.encode_descriptor(
            "keyshift_worker_retrying_key_attempts",
            "Failed attempts of each failing key's record (oldest 50)",
            None,
            MetricType::Gauge,
        )?;
        for k in &s.retrying_keys {
            ConstGauge::new(u64::from(k.attempts))
                .encode(family.encode_family(&retrying_labels(k))?)?;
        }
        let mut family = e.encode_descriptor(
            "keyshift_worker_blocked_key_age",
            "Keys parked longer than --park-timeout-ms: how long each has waited",
            Some(&Unit::Seconds),
            MetricType::Gauge,
        )?;
        for b in &s.blocked_keys {
            let labels = [
                ("partition", b.partition.to_string()),
                ("key", String::from_utf8_lossy(&b.key).into_owned()),
                ("barrier_partition", b.barrier_partition.to_string()),
                ("fence_offset", b.fence_offset.to_string()),
            ];
            ConstGauge::new(b.age.as_secs_f64()).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// Runs `keyshift worker` until SIGINT/SIGTERM or a fatal consumer error.
pub fn run(args: WorkerArgs) -> anyhow::Result<()> {
    http::init_logging();
    if args.topic.trim().is_empty() {
        return Err(FlagError::new("--topic", "must not be empty").into());
    }
    if args.group.trim().is_empty() {
        return Err(FlagError::new("--group", "must not be empty").into());
    }
    let settings = ClientSettings::new(&args.bootstrap_servers)
        .client_id(&args.client_id)
        .properties(args.client_config.merged_except(
            &args.properties,
            &keyshift_kafka::consumer::MANAGED_PROPERTIES,
        )?);
    let mut builder = OrderedConsumerBuilder::new(&settings, &args.group, &args.topic)
        .barrier_poll_interval(Duration::from_millis(args.barrier_poll_ms))
        .commit_interval(Duration::from_millis(args.commit_interval_ms))
        .park_timeout(Duration::from_millis(args.park_timeout_ms))
        .park_policy(match args.park_policy {
            ParkPolicyArg::Wait => ParkPolicy::Wait,
            ParkPolicyArg::Release => ParkPolicy::Release,
        })
        .rebalancing(match args.rebalance {
            RebalanceArg::Cooperative => Rebalancing::Cooperative,
            RebalanceArg::Eager => Rebalancing::Eager,
        })
        .thread_name("keyshift-worker");
    if let Some(ms) = args.session_timeout_ms {
        builder = builder.session_timeout(Duration::from_millis(ms));
    }
    let trace = args.trace_flags.open("keyshift-worker", &settings)?;
    if let Some(t) = &trace.tracing {
        builder = builder.tracing(t.clone());
    }
    if let Some(e) = &trace.events {
        builder = builder.trace_events(e.clone());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let server = runtime.block_on(HttpServer::bind(args.metrics_listen))?;

    let metrics = WorkerMetrics::new();
    let external = if args.forward.is_some() {
        Some("--forward")
    } else {
        args.exec.as_ref().map(|_| "--exec")
    };
    // Checked before anything talks to the cluster, so a wrong flag never waits on it.
    let state_topic = if args.state || args.state_topic.is_some() {
        let flag = if args.state {
            "--state"
        } else {
            "--state-topic"
        };
        if external.is_none() {
            return Err(FlagError::new(
                flag,
                "the state belongs to your application: use it with --forward or --exec",
            )
            .into());
        }
        let topic = args
            .state_topic
            .clone()
            .unwrap_or_else(|| format!("{}{STATE_TOPIC_SUFFIX}", args.topic));
        if topic.trim().is_empty() || topic == args.topic {
            return Err(
                FlagError::new("--state-topic", "must be a topic other than --topic").into(),
            );
        }
        Some(topic)
    } else {
        None
    };
    if let Some(flag) = external {
        if args.service_time_ms > 0.0 || args.busy {
            return Err(FlagError::new(
                flag,
                "the application does the work: leave out --service-time-ms and --busy",
            )
            .into());
        }
        if args.max_retry_backoff < args.retry_backoff {
            return Err(
                FlagError::new("--max-retry-backoff", "must be at least --retry-backoff").into(),
            );
        }
        let dead_letters = args
            .dead_letter_topic
            .clone()
            .unwrap_or_else(|| format!("{}.keyshift-dlq", args.topic));
        if dead_letters.trim().is_empty() || dead_letters == args.topic {
            return Err(FlagError::new(
                "--dead-letter-topic",
                "must be a topic other than --topic",
            )
            .into());
        }
        keyshift_kafka::Admin::new(&settings)
            .and_then(|admin| admin.create_topic(&dead_letters, 1))
            .with_context(|| format!("cannot create the dead-letter topic '{dead_letters}'"))?;
        builder = builder
            .retry(RetryPolicy {
                max_attempts: (args.max_attempts > 0).then_some(args.max_attempts),
                backoff: args.retry_backoff,
                max_backoff: args.max_retry_backoff,
            })
            .dead_letter_topic(dead_letters);
    } else if args.dead_letter_topic.is_some() {
        return Err(FlagError::new(
            "--dead-letter-topic",
            "the simulated service never fails: use it with --forward or --exec",
        )
        .into());
    }
    let state = match &state_topic {
        Some(topic) => Some(StateStore::open(&settings, topic, args.handler_timeout)?),
        None => None,
    };
    let consumer = if let Some(url) = &args.forward {
        let forward = HttpForward::new(url, &args.topic, args.handler_timeout)
            .map_err(|e| FlagError::new("--forward", e.to_string()))?;
        let builder = builder.concurrency(args.concurrency.unwrap_or(16) as usize);
        match &state {
            Some(store) => builder.spawn_async(WithState::new(store.clone(), forward))?,
            None => builder.spawn_async(forward)?,
        }
    } else if let Some(command) = &args.exec {
        if command.trim().is_empty() {
            return Err(FlagError::new("--exec", "must not be empty").into());
        }
        let exec = ExecHandler::new(command, &args.topic, args.handler_timeout);
        let builder = builder.concurrency(args.concurrency.unwrap_or(16) as usize);
        match &state {
            Some(store) => builder.spawn_async(WithState::new(store.clone(), exec))?,
            None => builder.spawn_async(exec)?,
        }
    } else {
        builder
            .concurrency(args.concurrency.unwrap_or(1) as usize)
            .spawn_each(|_slot| {
                let mut service = Service {
                    mean: Duration::from_secs_f64(args.service_time_ms / 1e3),
                    dist: args.service,
                    busy: args.busy,
                    rng: rand::rngs::StdRng::from_entropy(),
                };
                let m = metrics.clone();
                move |r: &DeliveredRecord| {
                    if r.parked {
                        m.park_time.observe(r.park_time.as_secs_f64());
                    }
                    if let Some(p) = &r.probe {
                        m.e2e_latency
                            .observe(now_us().saturating_sub(p.sent_us) as f64 / 1e6);
                    }
                    let started = Instant::now();
                    service.serve();
                    m.service_time.observe(started.elapsed().as_secs_f64());
                    Ok::<(), std::convert::Infallible>(())
                }
            })?
    };
    let mut registry = Registry::default();
    metrics.register(&mut registry, Arc::clone(consumer.stats()), state.clone());

    println!(
        "keyshift worker: group {} on topic {} at {}; metrics on http://{}/metrics",
        args.group,
        args.topic,
        args.bootstrap_servers,
        server.local_addr()
    );
    std::io::Write::flush(&mut std::io::stdout())?;

    let health = Health::new();
    let router = http::routes(Arc::new(registry), health.clone());
    let consumer = Arc::new(consumer);
    let watched = Arc::clone(&consumer);
    let draining = health.clone();
    runtime.block_on(server.serve(router, async move {
        let died = async {
            while watched.is_running() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        };
        tokio::select! {
            () = http::shutdown_signal() => {}
            () = died => tracing::error!("the consumer stopped; shutting down"),
        }
        draining.set_draining();
    }))?;
    let consumer = Arc::try_unwrap(consumer)
        .map_err(|_| anyhow::anyhow!("the consumer is still shared at shutdown"))?;
    let stats = consumer.stats().snapshot();
    consumer.stop().context("stopping the consumer")?;
    trace.flush();
    tracing::info!(
        processed = stats.processed,
        parked = stats.parked_total,
        duplicates = stats.duplicates,
        order_violations = stats.order_violations,
        "worker stopped"
    );
    Ok(())
}

/// Microseconds since the Unix epoch, the probes' clock.
fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}
