//! The Kafka side of [`keyshift_trace::aggregate`]: the runtime of `keyshift trace aggregate`.
//!
//! A [`Pipeline`] reads `_tracing` (and optionally data topics, for their `correlationId`
//! headers), feeds the pure [`Aggregator`], and writes its outputs to `_aggregatedTrace`. The
//! command runs it on a thread and serves `/metrics` from [`Pipeline::stats`] and the events it
//! is handed ([`Observer`]).
//!
//! Restart safety without transactions: every output carries a [`SOURCE_HEADER`] naming the
//! input record it enriches, and each input yields at most one output. At every checkpoint the
//! loop flushes the producer, then writes a checkpoint record (key: the group) to a compacted
//! checkpoint topic: per input partition the lowest offset its state still depends on (the
//! aggregator's low water), and output offsets from *before* any input at or after those
//! offsets was processed; then it commits the same input offsets to the group, for lag tools. A
//! restarted pipeline re-reads the output topic from the checkpoint's output offsets to learn
//! which inputs were already emitted, replays the input from the checkpoint's offsets to
//! rebuild its state, and suppresses outputs it finds already written. So a crash at any point
//! — even between a produce and a checkpoint — neither loses nor duplicates an output. (A
//! record rather than offset-commit metadata, because not every Kafka-compatible broker returns
//! commit metadata.)
//!
//! It assigns all input partitions to itself (no group membership): run one per group.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use keyshift_trace::aggregate::{Aggregator, AggregatorConfig, AggregatorStats, Output, Position};
use keyshift_trace::events::{TraceEvent, CORRELATION_ID_HEADER};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::reader::state_reader;
use crate::{Admin, AdminError, ClientSettings};

/// The header on each output naming its input record, `topic/partition/offset`.
pub const SOURCE_HEADER: &str = "keyshift-trace-source";

/// What a pipeline reads and writes, resolved.
#[derive(Debug, Clone)]
pub struct AggregateSettings {
    /// The cluster and client properties.
    pub client: ClientSettings,
    /// Group id: committed input offsets, and the checkpoint record's key.
    pub group: String,
    /// The trace topic (`_tracing`).
    pub input: String,
    /// The aggregated topic (`_aggregatedTrace`), created like the input if missing.
    pub output: String,
    /// The compacted checkpoint topic (created if missing).
    pub checkpoint: String,
    /// Data topics whose `correlationId` headers locate records the events do not name.
    pub data_topics: Vec<String>,
    /// Join TTL and retention.
    pub aggregator: AggregatorConfig,
    /// How often to checkpoint (flush, record, commit).
    pub commit_interval: Duration,
}

/// Counters a pipeline publishes at each checkpoint.
#[derive(Debug, Default, Clone)]
pub struct PipelineStats {
    /// The join's own counters (events per type, dropped, over-consumed, rejected).
    pub aggregator: AggregatorStats,
    /// Events and join context held in memory.
    pub held: u64,
    /// Input records that did not decode as trace events.
    pub undecodable: u64,
    /// Outputs recomputed after a restart and not written again.
    pub replay_suppressed: u64,
}

/// Called with every output event the pipeline writes.
pub type Observer = Box<dyn FnMut(&TraceEvent) + Send>;

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

/// The Kafka clients and the aggregator; [`Pipeline::run`] on a thread of its own.
pub struct Pipeline {
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
    /// Called with every output written (the command's latency histograms).
    observe: Observer,
    /// What [`Pipeline::stats`] hands out, refreshed at each checkpoint.
    shared: Arc<Mutex<PipelineStats>>,
    stats: PipelineStats,
}

const KAFKA_TIMEOUT: Duration = Duration::from_secs(30);
/// Checkpoint candidates kept in memory; see [`Pipeline::checkpoint`].
const MAX_SNAPSHOTS: usize = 256;

impl Pipeline {
    pub fn open(settings: &AggregateSettings, observe: Observer) -> anyhow::Result<Self> {
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
        for ((_, p), high) in crate::watermarks::end_offsets(&consumer, &output, KAFKA_TIMEOUT)
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
            observe,
            shared: Arc::default(),
            stats: PipelineStats::default(),
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

    /// The counters, refreshed at each checkpoint (read them from any thread).
    pub fn stats(&self) -> Arc<Mutex<PipelineStats>> {
        Arc::clone(&self.shared)
    }

    /// Reads, joins and writes until `stop` is set, then checkpoints once more. An error is
    /// fatal (the output or the checkpoint could not be written): restart from the checkpoint.
    pub fn run(&mut self, stop: &AtomicBool) -> anyhow::Result<()> {
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
        (self.observe)(&output.event);
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
        if let Ok(mut shared) = self.shared.lock() {
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
fn read_checkpoint(settings: &AggregateSettings) -> anyhow::Result<Option<Checkpoint>> {
    let reader = state_reader(
        &settings.client,
        &format!("{}-checkpoint-reader", settings.group),
        &settings.checkpoint,
        [(0, Offset::Beginning)],
        false,
    )
    .map_err(|e| anyhow::anyhow!("checkpoint topic '{}': {e}", settings.checkpoint))?;
    let (_, end) = reader
        .fetch_watermarks(&settings.checkpoint, 0, KAFKA_TIMEOUT)
        .context("reading the checkpoint topic's end")?;
    if end == 0 {
        return Ok(None);
    }
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

/// The input record a [`SOURCE_HEADER`] value (`topic/partition/offset`) names.
pub fn parse_source(text: &str) -> Option<Position> {
    let mut parts = text.rsplitn(3, '/');
    let offset = parts.next()?.parse().ok()?;
    let partition = parts.next()?.parse().ok()?;
    let topic = parts.next()?;
    Some(Position::new(topic, partition, offset))
}

/// Reads the output topic from `from` to `to` and returns the inputs its records came from.
fn scan_sources(
    settings: &AggregateSettings,
    from: &BTreeMap<i32, i64>,
    to: &BTreeMap<i32, i64>,
) -> anyhow::Result<HashSet<Position>> {
    let mut sources = HashSet::new();
    let mut starts = Vec::new();
    let mut remaining: HashMap<i32, i64> = HashMap::new();
    for (p, end) in to {
        let start = from.get(p).copied().unwrap_or(0);
        if start < *end {
            starts.push((*p, Offset::Offset(start)));
            remaining.insert(*p, *end);
        }
    }
    if remaining.is_empty() {
        return Ok(sources);
    }
    let scanner = state_reader(
        &settings.client,
        &format!("{}-scan", settings.group),
        &settings.output,
        starts,
        false,
    )
    .map_err(|e| anyhow::anyhow!("output scanner of '{}': {e}", settings.output))?;
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
}
