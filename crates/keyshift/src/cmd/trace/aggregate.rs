//! `keyshift trace aggregate`: the Kafka side of [`keyshift_trace::aggregate`].
//!
//! One thread reads `_tracing` (and optionally data topics, for their `correlationId`
//! headers), feeds the pure [`Aggregator`], and writes its outputs to `_aggregatedTrace`;
//! the main thread serves `/metrics` and `/healthz`.
//!
//! Restart safety without transactions: every output carries a `keyshift-trace-source`
//! header naming the input record it enriches, and each input yields at most one output.
//! At every checkpoint the loop flushes the producer, then writes a checkpoint record (key:
//! the group) to a compacted checkpoint topic: per input partition the lowest offset its
//! state still depends on (the aggregator's low water), and output offsets from *before* any
//! input at or after those offsets was processed; then it commits the same input offsets to
//! the group, for lag tools. A restarted aggregator re-reads the output topic from the
//! checkpoint's output offsets to learn which inputs were already emitted, replays the input
//! from the checkpoint's offsets to rebuild its state, and suppresses outputs it finds
//! already written. So a crash at any point — even between a produce and a checkpoint —
//! neither loses nor duplicates an output. (A record rather than offset-commit metadata,
//! because not every Kafka-compatible broker returns commit metadata.)
//!
//! It assigns all input partitions to itself (no group membership): run one instance per
//! `--group`.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use keyshift_kafka::{Admin, AdminError, ClientSettings, Property};
use keyshift_trace::aggregate::{Aggregator, AggregatorConfig, AggregatorStats, Output, Position};
use keyshift_trace::events::{
    EventKind, TraceEvent, AGGREGATED_TRACE_TOPIC, CORRELATION_ID_HEADER, TRACE_TOPIC,
};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::exit::FlagError;
use crate::http::{self, Health, HttpServer};

/// The header on each output naming its input record, `topic/partition/offset`.
pub const SOURCE_HEADER: &str = "keyshift-trace-source";
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

/// The resolved configuration.
#[derive(Debug)]
struct Settings {
    client: ClientSettings,
    bootstrap: String,
    group: String,
    input: String,
    output: String,
    checkpoint: String,
    data_topics: Vec<String>,
    aggregator: AggregatorConfig,
    commit_interval: Duration,
}

fn resolve(args: &AggregateArgs, env: &[(String, String)]) -> anyhow::Result<Settings> {
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
    Ok(Settings {
        client,
        bootstrap,
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
    stats: Arc<Mutex<LoopStats>>,
}

/// Counters the loop publishes at each checkpoint.
#[derive(Debug, Default, Clone)]
struct LoopStats {
    aggregator: AggregatorStats,
    held: u64,
    undecodable: u64,
    replay_suppressed: u64,
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
            stats: Arc::default(),
        }
    }

    fn register(&self, registry: &mut Registry) {
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
        registry.register_collector(Box::new(StatsCollector(Arc::clone(&self.stats))));
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
struct StatsCollector(Arc<Mutex<LoopStats>>);

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
    let settings = resolve(&args, &env)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let server = runtime.block_on(HttpServer::bind(args.metrics_listen))?;
    let metrics = Metrics::new();
    let mut registry = Registry::default();
    metrics.register(&mut registry);

    let stop = Arc::new(AtomicBool::new(false));
    let finished = Arc::new(AtomicBool::new(false));
    let mut pipeline = Pipeline::open(&settings, metrics)?;
    println!(
        "keyshift trace aggregate: {} → {} at {} (group {}); metrics on http://{}/metrics",
        settings.input,
        settings.output,
        settings.bootstrap,
        settings.group,
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

/// Delivery reports of the output producer: output end offsets and the first failure.
#[derive(Debug, Default)]
struct Deliveries {
    ends: Mutex<HashMap<i32, i64>>,
    failure: Mutex<Option<String>>,
}

struct DeliveryContext {
    deliveries: Arc<Deliveries>,
    output: String,
}

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(m) if m.topic() != self.output => {}
            Ok(m) => {
                if let Ok(mut ends) = self.deliveries.ends.lock() {
                    let end = ends.entry(m.partition()).or_insert(0);
                    *end = (*end).max(m.offset() + 1);
                }
            }
            Err((e, _)) => {
                if let Ok(mut failure) = self.deliveries.failure.lock() {
                    failure.get_or_insert_with(|| e.to_string());
                }
            }
        }
    }
}

/// Input offsets reached and output offsets written at one moment.
#[derive(Debug, Clone)]
struct Snapshot {
    next: HashMap<(String, i32), i64>,
    output: BTreeMap<i32, i64>,
}

/// The Kafka clients and the aggregator; runs on its own thread.
struct Pipeline {
    settings_group: String,
    input: String,
    output: String,
    checkpoint_topic: String,
    /// The last checkpoint written, to skip writing an identical one.
    last_checkpoint: Option<Checkpoint>,
    consumer: BaseConsumer,
    producer: ThreadedProducer<DeliveryContext>,
    deliveries: Arc<Deliveries>,
    aggregator: Aggregator,
    /// Inputs whose output a previous run already wrote; removed as they are met again.
    emitted: HashSet<Position>,
    /// Next input offset to read, per input partition.
    next: HashMap<(String, i32), i64>,
    snapshots: VecDeque<Snapshot>,
    output_ends: BTreeMap<i32, i64>,
    commit_interval: Duration,
    metrics: Metrics,
    stats: LoopStats,
}

const KAFKA_TIMEOUT: Duration = Duration::from_secs(30);
/// Checkpoint candidates kept in memory; see [`Pipeline::checkpoint`].
const MAX_SNAPSHOTS: usize = 256;

impl Pipeline {
    fn open(settings: &Settings, metrics: Metrics) -> anyhow::Result<Self> {
        let admin = Admin::new(&settings.client)?;
        let mut partitions = Vec::new();
        let input_partitions = admin.partitions(&settings.input).with_context(|| {
            format!(
                "reading the input topic '{}' (--input-topic)",
                settings.input
            )
        })?;
        partitions.extend((0..input_partitions as i32).map(|p| (settings.input.clone(), p)));
        for topic in &settings.data_topics {
            let n = admin
                .partitions(topic)
                .with_context(|| format!("reading the data topic '{topic}' (--data-topic)"))?;
            partitions.extend((0..n as i32).map(|p| (topic.clone(), p)));
        }
        match admin.partitions(&settings.output) {
            Ok(_) => {}
            Err(AdminError::UnknownTopic { .. }) => {
                admin
                    .create_topic(&settings.output, input_partitions)
                    .with_context(|| format!("creating the output topic '{}'", settings.output))?;
            }
            Err(e) => return Err(e).context("reading the output topic"),
        }
        let output_partitions = admin.partitions(&settings.output)?;

        let consumer: BaseConsumer = settings
            .client
            .consumer_config(&settings.group)
            .create()
            .context("creating the trace consumer")?;
        let deliveries = Arc::new(Deliveries::default());
        let producer: ThreadedProducer<DeliveryContext> = settings
            .client
            .producer_config()
            .create_with_context(DeliveryContext {
                deliveries: Arc::clone(&deliveries),
                output: settings.output.clone(),
            })
            .context("creating the output producer")?;

        ensure_checkpoint_topic(&settings.client, &admin, &settings.checkpoint)?;
        let saved = read_checkpoint(settings)?;
        // Where to resume: the checkpoint, else committed offsets, else the beginning.
        let mut wanted = TopicPartitionList::new();
        for (topic, p) in &partitions {
            wanted.add_partition(topic, *p);
        }
        let committed = consumer
            .committed_offsets(wanted, KAFKA_TIMEOUT)
            .context("reading the group's committed offsets")?;
        let mut next = HashMap::new();
        for elem in committed.elements() {
            let tp = (elem.topic().to_owned(), elem.partition());
            let from_checkpoint = saved.as_ref().and_then(|c| {
                c.input
                    .iter()
                    .find(|(t, p, _)| (t, *p) == (&tp.0, tp.1))
                    .map(|x| x.2)
            });
            let start = match (from_checkpoint, elem.offset()) {
                (Some(n), _) | (None, Offset::Offset(n)) => n,
                _ => {
                    consumer
                        .fetch_watermarks(elem.topic(), elem.partition(), KAFKA_TIMEOUT)
                        .context("reading the input's start offsets")?
                        .0
                }
            };
            next.insert(tp, start);
        }
        let checkpoint = saved.map(|c| c.output);
        let output: Vec<_> = (0..output_partitions as i32)
            .map(|p| (settings.output.clone(), p))
            .collect();
        let mut output_ends = BTreeMap::new();
        for ((_, p), high) in
            keyshift_kafka::watermarks::end_offsets(&consumer, &output, KAFKA_TIMEOUT)
                .context("reading the output's end offsets")?
        {
            output_ends.insert(p, high.context("reading the output's end offsets")?);
        }
        let mut pipeline = Pipeline {
            settings_group: settings.group.clone(),
            input: settings.input.clone(),
            output: settings.output.clone(),
            checkpoint_topic: settings.checkpoint.clone(),
            last_checkpoint: None,
            consumer,
            producer,
            deliveries,
            aggregator: Aggregator::new(settings.aggregator)?,
            emitted: HashSet::new(),
            next,
            snapshots: VecDeque::new(),
            output_ends: output_ends.clone(),
            commit_interval: settings.commit_interval,
            metrics,
            stats: LoopStats::default(),
        };
        let scan_from = match checkpoint {
            Some(saved) => {
                pipeline.emitted = scan_sources(settings, &saved, &output_ends)?;
                saved
            }
            None => output_ends,
        };
        pipeline.snapshots.push_back(Snapshot {
            next: pipeline.next.clone(),
            output: scan_from.clone(),
        });
        // Record the starting point at once: a crash before the first checkpoint then still
        // finds where to look for this run's outputs.
        pipeline.save(&pipeline.next.clone(), &scan_from)?;
        let mut assignment = TopicPartitionList::new();
        for ((topic, p), offset) in &pipeline.next {
            assignment.add_partition_offset(topic, *p, Offset::Offset(*offset))?;
        }
        pipeline
            .consumer
            .assign(&assignment)
            .context("assigning the input partitions")?;
        tracing::info!(
            group = %pipeline.settings_group,
            replaying_emitted = pipeline.emitted.len(),
            "aggregator started"
        );
        Ok(pipeline)
    }

    fn run(&mut self, stop: &AtomicBool) -> anyhow::Result<()> {
        let mut last_checkpoint = Instant::now();
        let mut outputs = Vec::new();
        while !stop.load(Ordering::Acquire) {
            match self.consumer.poll(Duration::from_millis(100)) {
                None => {}
                Some(Err(e)) => tracing::warn!("reading the trace topics: {e}"),
                Some(Ok(message)) => {
                    let message = message.detach();
                    self.handle(&message, &mut outputs);
                    for output in outputs.drain(..) {
                        self.write(output)?;
                    }
                }
            }
            if last_checkpoint.elapsed() >= self.commit_interval {
                self.checkpoint()?;
                last_checkpoint = Instant::now();
            }
        }
        self.checkpoint()
    }

    fn handle(&mut self, message: &OwnedMessage, outputs: &mut Vec<Output>) {
        let topic = message.topic();
        let source = Position::new(topic, message.partition(), message.offset());
        self.next.insert(
            (topic.to_owned(), message.partition()),
            message.offset() + 1,
        );
        if topic == self.input {
            let event = match TraceEvent::decode(message.key(), message.payload().unwrap_or(b"")) {
                Ok(event) => event,
                Err(e) => {
                    self.stats.undecodable += 1;
                    tracing::warn!(%topic, partition = message.partition(), offset = message.offset(), "skipping: {e}");
                    return;
                }
            };
            if let Err(e) = self.aggregator.process(source, event, outputs) {
                tracing::warn!(%topic, partition = message.partition(), offset = message.offset(), "skipping: {e}");
            }
        } else {
            let Some(headers) = message.headers() else {
                return;
            };
            let Some(corr) = headers
                .iter()
                .filter(|h| h.key == CORRELATION_ID_HEADER)
                .last()
                .and_then(|h| h.value)
                .and_then(|v| std::str::from_utf8(v).ok())
            else {
                return;
            };
            let nanos = message
                .timestamp()
                .to_millis()
                .map(|ms| ms.saturating_mul(1_000_000))
                .or(self.aggregator.watermark())
                .unwrap_or(0);
            let tpo = (topic, message.partition(), message.offset());
            self.aggregator.locate(source, corr, tpo, nanos, outputs);
        }
    }

    fn write(&mut self, output: Output) -> anyhow::Result<()> {
        if self.emitted.remove(&output.source) {
            self.stats.replay_suppressed += 1;
            return Ok(());
        }
        let (key, value) = output.event.encode();
        let source = format!(
            "{}/{}/{}",
            output.source.topic, output.source.partition, output.source.offset
        );
        let headers = OwnedHeaders::new().insert(Header {
            key: SOURCE_HEADER,
            value: Some(source.as_bytes()),
        });
        let mut record = BaseRecord::to(&self.output)
            .key(&key)
            .payload(&value)
            .headers(headers);
        loop {
            match self.producer.send(record) {
                Ok(()) => break,
                Err((e, returned)) => {
                    if e.rdkafka_error_code() != Some(rdkafka::types::RDKafkaErrorCode::QueueFull) {
                        bail!("writing to '{}': {e}", self.output);
                    }
                    record = returned;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
        self.metrics.observe(&output.event);
        Ok(())
    }

    /// Flushes the output, then commits what the state no longer needs; see the module docs.
    fn checkpoint(&mut self) -> anyhow::Result<()> {
        self.producer
            .flush(KAFKA_TIMEOUT)
            .with_context(|| format!("flushing output to '{}'", self.output))?;
        if let Some(failure) = self.deliveries.failure.lock().ok().and_then(|f| f.clone()) {
            bail!("writing to '{}': {failure}", self.output);
        }
        if let Ok(ends) = self.deliveries.ends.lock() {
            for (p, end) in ends.iter() {
                let e = self.output_ends.entry(*p).or_insert(*end);
                *e = (*e).max(*end);
            }
        }
        self.snapshots.push_back(Snapshot {
            next: self.next.clone(),
            output: self.output_ends.clone(),
        });
        let low: HashMap<(String, i32), i64> = self
            .next
            .iter()
            .map(|((topic, p), next)| {
                let held = self.aggregator.low_water(topic, *p).unwrap_or(*next);
                ((topic.clone(), *p), held.min(*next))
            })
            .collect();
        // The newest snapshot taken before any input at or after the commit point was read.
        let usable = self
            .snapshots
            .iter()
            .rposition(|s| {
                s.next
                    .iter()
                    .all(|(tp, x)| low.get(tp).is_none_or(|l| x <= l))
            })
            .unwrap_or(0);
        self.snapshots.drain(..usable);
        // While the commit point stays put (a day-old SEND still awaited), snapshots pile up;
        // dropping every other one only makes a restart scan a little more output, never
        // less than it must.
        if self.snapshots.len() > MAX_SNAPSHOTS {
            let last = self.snapshots.len() - 1;
            let mut index = 0;
            self.snapshots.retain(|_| {
                let keep = index % 2 == 0 || index == last;
                index += 1;
                keep
            });
        }
        let output = self.snapshots[0].output.clone();
        self.save(&low, &output)?;
        let mut stats = self.stats.clone();
        stats.aggregator = self.aggregator.stats().clone();
        stats.held = self.aggregator.held() as u64;
        if let Ok(mut shared) = self.metrics.stats.lock() {
            *shared = stats;
        }
        Ok(())
    }

    /// Writes a checkpoint record (if it changed) and commits the input offsets.
    fn save(
        &mut self,
        offsets: &HashMap<(String, i32), i64>,
        output: &BTreeMap<i32, i64>,
    ) -> anyhow::Result<()> {
        let mut input: Vec<(String, i32, i64)> = offsets
            .iter()
            .map(|((t, p), o)| (t.clone(), *p, *o))
            .collect();
        input.sort();
        let checkpoint = Checkpoint {
            group: self.settings_group.clone(),
            output_topic: self.output.clone(),
            input,
            output: output.clone(),
        };
        if self.last_checkpoint.as_ref() == Some(&checkpoint) {
            return Ok(());
        }
        let value = serde_json::to_vec(&checkpoint)?;
        self.producer
            .send(
                BaseRecord::to(&self.checkpoint_topic)
                    .key(checkpoint.group.as_bytes())
                    .payload(&value),
            )
            .map_err(|(e, _)| e)
            .with_context(|| format!("writing a checkpoint to '{}'", self.checkpoint_topic))?;
        self.producer
            .flush(KAFKA_TIMEOUT)
            .with_context(|| format!("writing a checkpoint to '{}'", self.checkpoint_topic))?;
        if let Some(failure) = self.deliveries.failure.lock().ok().and_then(|f| f.clone()) {
            bail!(
                "writing a checkpoint to '{}': {failure}",
                self.checkpoint_topic
            );
        }
        let mut tpl = TopicPartitionList::new();
        for (topic, p, offset) in &checkpoint.input {
            tpl.add_partition_offset(topic, *p, Offset::Offset(*offset))?;
        }
        self.consumer
            .commit(&tpl, CommitMode::Sync)
            .context("committing the aggregator's input offsets")?;
        self.last_checkpoint = Some(checkpoint);
        Ok(())
    }
}

/// Where a run stood: the input offsets its state depends on, and output offsets before
/// which nothing from those inputs was written.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Checkpoint {
    group: String,
    output_topic: String,
    input: Vec<(String, i32, i64)>,
    output: BTreeMap<i32, i64>,
}

/// Creates the one-partition checkpoint topic, compacted so it keeps only the latest
/// checkpoint per group (brokers that refuse the setting get a plain topic).
fn ensure_checkpoint_topic(
    client: &ClientSettings,
    admin: &Admin,
    topic: &str,
) -> anyhow::Result<()> {
    match admin.partitions(topic) {
        Ok(_) => return Ok(()),
        Err(AdminError::UnknownTopic { .. }) => {}
        Err(e) => return Err(e).context("reading the checkpoint topic"),
    }
    let compacted: anyhow::Result<()> = (|| {
        let raw: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
            client.admin_config().create()?;
        let new =
            rdkafka::admin::NewTopic::new(topic, 1, rdkafka::admin::TopicReplication::Fixed(-1))
                .set("cleanup.policy", "compact");
        let options = rdkafka::admin::AdminOptions::new().operation_timeout(Some(KAFKA_TIMEOUT));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let results = runtime.block_on(raw.create_topics([&new], &options))?;
        for result in results {
            if let Err((_, code)) = result {
                if code != rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists {
                    bail!("{code}");
                }
            }
        }
        Ok(())
    })();
    if let Err(e) = compacted {
        tracing::warn!("cannot create '{topic}' compacted ({e:#}); creating a plain topic");
    }
    admin
        .create_topic(topic, 1)
        .with_context(|| format!("creating the checkpoint topic '{topic}'"))?;
    Ok(())
}

/// The latest checkpoint of the group for this output topic, if any.
fn read_checkpoint(settings: &Settings) -> anyhow::Result<Option<Checkpoint>> {
    let reader: BaseConsumer = settings
        .client
        .consumer_config(&format!("{}-checkpoint-reader", settings.group))
        .create()
        .context("creating the checkpoint reader")?;
    let (_, end) = reader
        .fetch_watermarks(&settings.checkpoint, 0, KAFKA_TIMEOUT)
        .context("reading the checkpoint topic's end")?;
    if end == 0 {
        return Ok(None);
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&settings.checkpoint, 0, Offset::Beginning)?;
    reader.assign(&tpl)?;
    let mut latest = None;
    let deadline = Instant::now() + KAFKA_TIMEOUT * 4;
    loop {
        if Instant::now() > deadline {
            bail!(
                "reading the checkpoint topic '{}' timed out",
                settings.checkpoint
            );
        }
        let Some(message) = reader.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message.context("reading the checkpoint topic")?;
        if message.key() == Some(settings.group.as_bytes()) {
            match message.payload().map(serde_json::from_slice::<Checkpoint>) {
                Some(Ok(c)) if c.output_topic == settings.output => latest = Some(c),
                Some(Err(e)) => {
                    tracing::warn!(offset = message.offset(), "ignoring a bad checkpoint: {e}")
                }
                _ => {}
            }
        }
        if message.offset() + 1 >= end {
            return Ok(latest);
        }
    }
}

fn parse_source(text: &str) -> Option<Position> {
    let mut parts = text.rsplitn(3, '/');
    let offset = parts.next()?.parse().ok()?;
    let partition = parts.next()?.parse().ok()?;
    let topic = parts.next()?;
    Some(Position::new(topic, partition, offset))
}

/// Reads the output topic from `from` to `to` and returns the inputs its records came from.
fn scan_sources(
    settings: &Settings,
    from: &BTreeMap<i32, i64>,
    to: &BTreeMap<i32, i64>,
) -> anyhow::Result<HashSet<Position>> {
    let mut sources = HashSet::new();
    let mut remaining: HashMap<i32, i64> = HashMap::new();
    let mut tpl = TopicPartitionList::new();
    for (p, end) in to {
        let start = from.get(p).copied().unwrap_or(0);
        if start < *end {
            tpl.add_partition_offset(&settings.output, *p, Offset::Offset(start))?;
            remaining.insert(*p, *end);
        }
    }
    if remaining.is_empty() {
        return Ok(sources);
    }
    let scanner: BaseConsumer = settings
        .client
        .consumer_config(&format!("{}-scan", settings.group))
        .create()
        .context("creating the output scanner")?;
    scanner.assign(&tpl)?;
    let deadline = Instant::now() + KAFKA_TIMEOUT * 4;
    while !remaining.is_empty() {
        if Instant::now() > deadline {
            bail!(
                "re-reading '{}' to find already written outputs timed out",
                settings.output
            );
        }
        let Some(message) = scanner.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message.context("re-reading the output topic")?;
        if let Some(source) = message.headers().and_then(|h| {
            h.iter()
                .find(|h| h.key == SOURCE_HEADER)
                .and_then(|h| h.value)
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(parse_source)
        }) {
            sources.insert(source);
        }
        if remaining
            .get(&message.partition())
            .is_some_and(|end| message.offset() + 1 >= *end)
        {
            remaining.remove(&message.partition());
        }
    }
    Ok(sources)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse() {
        assert_eq!(
            parse_source("my.topic/3/17"),
            Some(Position::new("my.topic", 3, 17))
        );
        assert_eq!(parse_source("17"), None);
    }

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
        assert_eq!(s.bootstrap, "k:9092");
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
        assert_eq!((s.bootstrap.as_str(), s.group.as_str()), ("b:1", "g"));
        let err = resolve(&cli.args, &[]).map(|_| ()).err();
        assert!(err.is_none());
        let cli = Cli::try_parse_from(["x"]).unwrap();
        let err = resolve(&cli.args, &[]).unwrap_err();
        assert!(err.downcast_ref::<FlagError>().is_some(), "{err}");
    }
}
