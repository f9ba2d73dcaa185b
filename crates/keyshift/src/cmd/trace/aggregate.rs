//! `keyshift trace aggregate`: flags, `/metrics` and `/healthz` around the Kafka pipeline of
//! [`keyshift_kafka::trace_aggregate`] (the join itself is the pure
//! [`keyshift_trace::aggregate`]).
//!
//! The pipeline runs on a thread of its own; the main thread serves HTTP and stops it on
//! SIGINT/SIGTERM. Its restart safety (checkpoints, outputs named by their source, replayed
//! inputs) is described in the pipeline's module. Run one instance per `--group`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use keyshift_kafka::trace_aggregate::{AggregateSettings, Pipeline, PipelineStats};
use keyshift_kafka::{ClientSettings, Property};
use keyshift_trace::aggregate::AggregatorConfig;
use keyshift_trace::events::{EventKind, TraceEvent, AGGREGATED_TRACE_TOPIC, TRACE_TOPIC};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use crate::exit::FlagError;
use crate::http::{self, Health, HttpServer};

/// Suffix of the default checkpoint topic name (after the output topic's).
const CHECKPOINT_SUFFIX: &str = "-checkpoints";
/// The seed's Kafka Streams application id, used as the group id by default.
const DEFAULT_GROUP: &str = "_aggregator-trace-stream";
/// Environment prefix of kafka-tracing-aggregator's Docker image, accepted for compatibility.
const SEED_ENV_PREFIX: &str = "KAFKATRACE_";

/// Flags of `keyshift trace aggregate`.
#[derive(Debug, Args)]
#[command(
    about = "Join _tracing events into _aggregatedTrace records (kafka-tracing-aggregator)",
    long_about = "Read SEND/ACK/CONSUME/COMMIT events from the trace topic (written by keyshift's \
                  producer and worker, or by the Java kafka-tracing-interceptor), join them by \
                  topic/partition/offset and correlation id, and write enriched records to the \
                  aggregated topic in kafka-tracing-aggregator's format: ACK durationMs = \
                  send→ack, CONSUME = send→consume, COMMIT = consume→commit. A CONSUME of an \
                  offset its group consumed before, or had committed past, is marked \
                  \"overConsumption\". GET /metrics has latency histograms per topic and group.\
                  \n\nEvery flag also reads KEYSHIFT_<FLAG>; kafka-tracing-aggregator's \
                  KAFKATRACE_* variables are accepted too (KAFKATRACE_BOOTSTRAP_SERVERS, \
                  KAFKATRACE_APPLICATION_ID as the group, any other as a client property, \
                  e.g. KAFKATRACE_SECURITY_PROTOCOL=ssl). Restart-safe: a restarted aggregator \
                  neither loses nor duplicates output. Run one instance per group."
)]
pub struct AggregateArgs {
    /// Kafka bootstrap servers, host:port[,host:port...] [also KAFKATRACE_BOOTSTRAP_SERVERS].
    #[arg(long, env = "KEYSHIFT_BOOTSTRAP_SERVERS")]
    bootstrap_servers: Option<String>,

    /// Topic of raw trace events.
    #[arg(long, env = "KEYSHIFT_INPUT_TOPIC", default_value = TRACE_TOPIC)]
    input_topic: String,

    /// Topic the enriched records are written to (created like the input if missing).
    #[arg(long, env = "KEYSHIFT_OUTPUT_TOPIC", default_value = AGGREGATED_TRACE_TOPIC)]
    output_topic: String,

    /// Data topic whose records' correlationId headers locate SEND events, as the seed's
    /// topology reads its data topic (repeatable; not needed for keyshift's own events).
    #[arg(
        long = "data-topic",
        env = "KEYSHIFT_DATA_TOPICS",
        value_delimiter = ','
    )]
    data_topics: Vec<String>,

    /// Compacted topic holding the aggregator's checkpoints, keyed by group
    /// [default: <output-topic>-checkpoints].
    #[arg(long, env = "KEYSHIFT_CHECKPOINT_TOPIC")]
    checkpoint_topic: Option<String>,

    /// Consumer group the aggregator commits its input offsets as (and checkpoint key)
    /// [default: _aggregator-trace-stream; also KAFKATRACE_APPLICATION_ID].
    #[arg(long, env = "KEYSHIFT_GROUP")]
    group: Option<String>,

    /// Seconds an event waits for its partner before it is dropped (and counted).
    #[arg(long, env = "KEYSHIFT_UNMATCHED_TTL_SECS", value_parser = clap::value_parser!(u64).range(1..), default_value_t = 300)]
    unmatched_ttl_secs: u64,

    /// Seconds SENDs and consumed/committed offsets are kept for late consumers and
    /// over-consumption checks (the seed's one-day consume window).
    #[arg(long, env = "KEYSHIFT_RETENTION_SECS", value_parser = clap::value_parser!(u64).range(1..), default_value_t = 86_400)]
    retention_secs: u64,

    /// How often to flush output and commit the checkpoint (ms).
    #[arg(long, env = "KEYSHIFT_COMMIT_INTERVAL_MS", value_parser = clap::value_parser!(u64).range(1..), default_value_t = 1000)]
    commit_interval_ms: u64,

    /// Address to serve /metrics and /healthz on.
    #[arg(
        long,
        env = "KEYSHIFT_METRICS_LISTEN",
        default_value = "127.0.0.1:9103"
    )]
    metrics_listen: SocketAddr,

    /// Client id the broker sees.
    #[arg(
        long,
        env = "KEYSHIFT_CLIENT_ID",
        default_value = "keyshift-trace-aggregate"
    )]
    client_id: String,

    /// librdkafka property passed through to every client, like kcat (repeatable).
    #[arg(short = 'X', value_name = "KEY=VALUE")]
    properties: Vec<Property>,

    #[command(flatten)]
    client_config: crate::cmd::client_config::ClientConfigFlag,
}

fn resolve(args: &AggregateArgs, env: &[(String, String)]) -> anyhow::Result<AggregateSettings> {
    let seed = |name: &str| {
        env.iter()
            .find(|(k, _)| k == &format!("{SEED_ENV_PREFIX}{name}"))
            .map(|(_, v)| v.clone())
    };
    let bootstrap = args
        .bootstrap_servers
        .clone()
        .or_else(|| seed("BOOTSTRAP_SERVERS"))
        .ok_or_else(|| {
            FlagError::new(
                "--bootstrap-servers",
                "required (or KEYSHIFT_BOOTSTRAP_SERVERS / KAFKATRACE_BOOTSTRAP_SERVERS)",
            )
        })?;
    let group = args
        .group
        .clone()
        .or_else(|| seed("APPLICATION_ID"))
        .unwrap_or_else(|| DEFAULT_GROUP.to_owned());
    for (flag, value) in [
        ("--group", &group),
        ("--input-topic", &args.input_topic),
        ("--output-topic", &args.output_topic),
    ] {
        if value.trim().is_empty() {
            return Err(FlagError::new(flag, "must not be empty").into());
        }
    }
    if args.input_topic == args.output_topic {
        return Err(FlagError::new("--output-topic", "must differ from --input-topic").into());
    }
    let checkpoint = args
        .checkpoint_topic
        .clone()
        .unwrap_or_else(|| format!("{}{CHECKPOINT_SUFFIX}", args.output_topic));
    if checkpoint.trim().is_empty()
        || checkpoint == args.input_topic
        || checkpoint == args.output_topic
    {
        return Err(FlagError::new(
            "--checkpoint-topic",
            "must be a non-empty topic other than the input and output",
        )
        .into());
    }
    let mut data_topics = Vec::new();
    for topic in &args.data_topics {
        if topic.trim().is_empty()
            || topic == &args.input_topic
            || topic == &args.output_topic
            || topic == &checkpoint
        {
            return Err(FlagError::new(
                "--data-topic",
                format!("'{topic}' must be a non-empty topic other than the input and output"),
            )
            .into());
        }
        if !data_topics.contains(topic) {
            data_topics.push(topic.clone());
        }
    }
    // The seed's image turns every KAFKATRACE_FOO_BAR into the Kafka property foo.bar; the
    // ones librdkafka knows pass through, Kafka-Streams-only ones (state.dir) cannot apply.
    let mut properties = Vec::new();
    for (name, value) in env {
        let Some(rest) = name.strip_prefix(SEED_ENV_PREFIX) else {
            continue;
        };
        if matches!(rest, "BOOTSTRAP_SERVERS" | "APPLICATION_ID") {
            continue;
        }
        let key = rest.to_ascii_lowercase().replace('_', ".");
        match Property::new(&key, value) {
            Ok(p) => properties.push(p),
            Err(e) => tracing::warn!("ignoring {name}: {e}"),
        }
    }
    properties.extend(args.client_config.merged(&args.properties)?);
    let client = ClientSettings::new(&bootstrap)
        .client_id(&args.client_id)
        .properties(properties);
    let secs = |s: u64, flag: &str| -> Result<i64, FlagError> {
        i64::try_from(s)
            .ok()
            .and_then(|s| s.checked_mul(1_000_000_000))
            .ok_or_else(|| FlagError::new(flag, "too large"))
    };
    Ok(AggregateSettings {
        client,
        group,
        input: args.input_topic.clone(),
        output: args.output_topic.clone(),
        checkpoint,
        data_topics,
        aggregator: AggregatorConfig {
            unmatched_ttl_nanos: secs(args.unmatched_ttl_secs, "--unmatched-ttl-secs")?,
            retention_nanos: secs(args.retention_secs, "--retention-secs")?,
        },
        commit_interval: Duration::from_millis(args.commit_interval_ms),
    })
}

type Labels = Vec<(String, String)>;

/// What `/metrics` shows.
#[derive(Debug, Clone)]
struct Metrics {
    ack: Family<Labels, Histogram>,
    consume: Family<Labels, Histogram>,
    commit: Family<Labels, Histogram>,
    written: Family<Labels, prometheus_client::metrics::counter::Counter>,
}

impl Metrics {
    fn new() -> Self {
        // 1 ms .. ~2.3 h in ×2 steps: broker acks to consumers a day behind.
        let buckets = || Histogram::new(exponential_buckets(0.001, 2.0, 24));
        Metrics {
            ack: Family::new_with_constructor(buckets),
            consume: Family::new_with_constructor(buckets),
            commit: Family::new_with_constructor(buckets),
            written: Family::default(),
        }
    }

    fn register(&self, registry: &mut Registry, stats: Arc<Mutex<PipelineStats>>) {
        registry.register_with_unit(
            "keyshift_trace_ack_latency",
            "SEND to ACK per topic (aggregated ACK durationMs)",
            Unit::Seconds,
            self.ack.clone(),
        );
        registry.register_with_unit(
            "keyshift_trace_consume_latency",
            "SEND to CONSUME per topic and group (aggregated CONSUME durationMs)",
            Unit::Seconds,
            self.consume.clone(),
        );
        registry.register_with_unit(
            "keyshift_trace_commit_latency",
            "CONSUME to COMMIT per topic and group (aggregated COMMIT durationMs)",
            Unit::Seconds,
            self.commit.clone(),
        );
        registry.register(
            "keyshift_trace_aggregated_records",
            "Records written to the aggregated topic, per type",
            self.written.clone(),
        );
        registry.register_collector(Box::new(StatsCollector(stats)));
    }

    fn observe(&self, event: &TraceEvent) {
        let v = &event.value;
        let kind = v.kind.as_str().to_owned();
        self.written
            .get_or_create(&vec![("type".to_owned(), kind)])
            .inc();
        let Some(ms) = v.duration_ms else { return };
        let topic = ("topic".to_owned(), v.topic.clone().unwrap_or_default());
        let group = ("group".to_owned(), v.group_id.clone().unwrap_or_default());
        let secs = ms as f64 / 1e3;
        match v.kind {
            EventKind::Ack => self.ack.get_or_create(&vec![topic]).observe(secs),
            EventKind::Consume => self
                .consume
                .get_or_create(&vec![topic, group])
                .observe(secs),
            EventKind::Commit => self.commit.get_or_create(&vec![topic, group]).observe(secs),
            EventKind::Send => {}
        }
    }
}

#[derive(Debug)]
struct StatsCollector(Arc<Mutex<PipelineStats>>);

impl Collector for StatsCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let s = self.0.lock().map(|s| s.clone()).unwrap_or_default();
        let per_kind = |e: &mut DescriptorEncoder,
                        name: &str,
                        help: &str,
                        map: &BTreeMap<EventKind, u64>|
         -> std::fmt::Result {
            let mut family =
                e.encode_descriptor(name, help, None, ConstCounter::new(0u64).metric_type())?;
            for kind in [
                EventKind::Send,
                EventKind::Ack,
                EventKind::Consume,
                EventKind::Commit,
            ] {
                let labels = [("type", kind.as_str())];
                let c = ConstCounter::new(map.get(&kind).copied().unwrap_or(0));
                c.encode(family.encode_family(&labels)?)?;
            }
            Ok(())
        };
        per_kind(
            &mut e,
            "keyshift_trace_events",
            "Trace events read and accepted, per type",
            &s.aggregator.received,
        )?;
        per_kind(
            &mut e,
            "keyshift_trace_dropped_events",
            "Events dropped unmatched after the TTL, per type",
            &s.aggregator.dropped,
        )?;
        let mut family = e.encode_descriptor(
            "keyshift_trace_overconsumption",
            "CONSUMEs of an offset the group had consumed before or committed past",
            None,
            ConstCounter::new(0u64).metric_type(),
        )?;
        for ((topic, group), n) in &s.aggregator.over_consumed {
            let labels = [("topic", topic.as_str()), ("group", group.as_str())];
            ConstCounter::new(*n).encode(family.encode_family(&labels)?)?;
        }
        let c = ConstCounter::new(s.aggregator.rejected + s.undecodable);
        c.encode(e.encode_descriptor(
            "keyshift_trace_rejected_events",
            "Input records that are not usable trace events (bad JSON, date or fields)",
            None,
            c.metric_type(),
        )?)?;
        let c = ConstCounter::new(s.replay_suppressed);
        c.encode(e.encode_descriptor(
            "keyshift_trace_replay_suppressed",
            "Outputs recomputed after a restart and not written again (already in the output)",
            None,
            c.metric_type(),
        )?)?;
        let g = ConstGauge::new(i64::try_from(s.held).unwrap_or(i64::MAX));
        g.encode(e.encode_descriptor(
            "keyshift_trace_held_entries",
            "Events and join context held in memory",
            None,
            g.metric_type(),
        )?)
    }
}

/// Runs `keyshift trace aggregate` until SIGINT/SIGTERM or a fatal Kafka error.
pub fn run(args: AggregateArgs) -> anyhow::Result<()> {
    http::init_logging();
    let env: Vec<(String, String)> = std::env::vars().collect();
    let s = resolve(&args, &env)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let server = runtime.block_on(HttpServer::bind(args.metrics_listen))?;
    let metrics = Metrics::new();
    let observed = metrics.clone();
    let mut pipeline = Pipeline::open(&s, Box::new(move |event| observed.observe(event)))?;
    let mut registry = Registry::default();
    metrics.register(&mut registry, pipeline.stats());

    let stop = Arc::new(AtomicBool::new(false));
    let finished = Arc::new(AtomicBool::new(false));
    println!(
        "keyshift trace aggregate: {} → {} at {} (group {}); metrics on http://{}/metrics",
        s.input,
        s.output,
        s.client.bootstrap_servers(),
        s.group,
        server.local_addr()
    );
    std::io::Write::flush(&mut std::io::stdout())?;
    let (stopping, done) = (Arc::clone(&stop), Arc::clone(&finished));
    let worker = std::thread::Builder::new()
        .name("keyshift-trace-aggregate".to_owned())
        .spawn(move || {
            let result = pipeline.run(&stopping);
            done.store(true, Ordering::Release);
            result
        })
        .context("cannot start the aggregator thread")?;

    let health = Health::new();
    let router = http::routes(Arc::new(registry), health.clone());
    let stopping = Arc::clone(&stop);
    runtime.block_on(server.serve(router, async move {
        let died = async {
            while !finished.load(Ordering::Acquire) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        tokio::select! {
            () = http::shutdown_signal() => {}
            () = died => {}
        }
        health.set_draining();
        stopping.store(true, Ordering::Release);
    }))?;
    stop.store(true, Ordering::Release);
    worker
        .join()
        .map_err(|_| anyhow::anyhow!("the aggregator thread panicked"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_environment_is_accepted() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: AggregateArgs,
        }
        let env = vec![
            (
                "KAFKATRACE_BOOTSTRAP_SERVERS".to_owned(),
                "k:9092".to_owned(),
            ),
            ("KAFKATRACE_APPLICATION_ID".to_owned(), "app".to_owned()),
            ("KAFKATRACE_LINGER_MS".to_owned(), "7".to_owned()),
            ("KAFKATRACE_STATE_DIR".to_owned(), "/tmp".to_owned()),
        ];
        let cli = Cli::try_parse_from(["x"]).unwrap();
        let s = resolve(&cli.args, &env).unwrap();
        assert_eq!(s.client.bootstrap_servers(), "k:9092");
        assert_eq!(s.group, "app");
        let props: Vec<String> = s
            .client
            .passthrough()
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(
            props,
            vec!["linger.ms=7"],
            "state.dir is Kafka Streams-only"
        );
        let cli = Cli::try_parse_from(["x", "--bootstrap-servers", "b:1", "--group", "g"]).unwrap();
        let s = resolve(&cli.args, &env).unwrap();
        assert_eq!(
            (s.client.bootstrap_servers(), s.group.as_str()),
            ("b:1", "g")
        );
        let err = resolve(&cli.args, &[]).map(|_| ()).err();
        assert!(err.is_none());
        let cli = Cli::try_parse_from(["x"]).unwrap();
        let err = resolve(&cli.args, &[]).unwrap_err();
        assert!(err.downcast_ref::<FlagError>().is_some(), "{err}");
    }
}
