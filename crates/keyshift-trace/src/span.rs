//! Spans of one record, following the OpenTelemetry messaging conventions.
//!
//! - [`Tracing::start_send`]: a `send <topic>` PRODUCER span, started when the producer is
//!   handed the record and ended by [`SendSpan::acked`] (or [`SendSpan::failed`]) when the
//!   broker answers, so its duration is producer wait + broker round trip. Its context is
//!   written into the record's headers. If the caller's headers already carry a context
//!   (e.g. the gateway forwarding an HTTP request's `traceparent`), the span is its child.
//! - [`Tracing::start_process`]: a `process <topic>` CONSUMER span around the application's
//!   handling of the record, a child of the context in the record's headers and linked to it
//!   (the conventions' "creation context" link), so it shares the producer's trace id.
//!   A record that was parked behind a fenced migration also gets a `park <topic>` span, from
//!   when the consumer fetched it to its release, plus a `keyshift.parked` event on the
//!   process span: the park shows up on its own in Jaeger.
//!
//! Attributes (set only on sampled spans, so unsampled records pay for ids and the header):
//! `messaging.system=kafka`, `messaging.operation.name`/`.type`, `messaging.destination.name`,
//! `messaging.destination.partition.id`, `messaging.kafka.message.key`,
//! `messaging.kafka.offset`, `messaging.consumer.group.name`, `messaging.client.id`, and the
//! seed's tags so existing Jaeger queries keep working: `producer.key` (send), `consumer.key`
//! (process), `messaging.kafka.partition` (int) and `message_bus.destination` (the partition,
//! as the seed's Go code wrote it).

use std::borrow::Cow;
use std::time::{Duration, Instant, SystemTime};

use opentelemetry::trace::{
    Link, SamplingDecision, SamplingResult, Span as _, SpanContext, SpanKind, Status,
    TraceContextExt as _, TraceFlags, TraceId, TraceState, Tracer as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{IdGenerator as _, RandomIdGenerator, Span};

use crate::propagation;
use crate::provider::Tracing;

/// `messaging.system` for every span here.
pub const MESSAGING_SYSTEM: &str = "kafka";

fn key_text(key: &[u8]) -> String {
    String::from_utf8_lossy(key).into_owned()
}

/// The SDK's `TraceIdRatioBased` rule (opentelemetry_sdk 0.31 `sample_based_on_probability`):
/// sampled iff the trace id's low 63 bits fall below `ratio · 2^63`.
fn ratio_samples(ratio: f64, trace_id: TraceId) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    let bound = (ratio.max(0.0) * (1u64 << 63) as f64) as u64;
    let low = u64::from_be_bytes(trace_id.to_bytes()[8..].try_into().expect("8 bytes"));
    (low >> 1) < bound
}

/// The wall-clock time of an `Instant` in the past (spans carry wall-clock timestamps).
fn wall_clock(at: Instant) -> SystemTime {
    SystemTime::now()
        .checked_sub(at.elapsed())
        .unwrap_or_else(SystemTime::now)
}

fn parent_context(parent: Option<&SpanContext>) -> Context {
    match parent {
        // A fresh Context, never the thread's current one: a record's trace is its headers'.
        Some(sc) => Context::new().with_remote_span_context(sc.clone()),
        None => Context::new(),
    }
}

fn partition_attributes(partition: u32) -> [KeyValue; 3] {
    [
        KeyValue::new("messaging.destination.partition.id", partition.to_string()),
        KeyValue::new("messaging.kafka.partition", i64::from(partition)),
        KeyValue::new("message_bus.destination", partition.to_string()),
    ]
}

/// The PRODUCER span of one record; end it with [`SendSpan::acked`] or [`SendSpan::failed`]
/// (dropping it ends it without partition and offset).
#[must_use = "end the span with acked() or failed()"]
pub struct SendSpan {
    /// `None` when the trace is not sampled: nothing more to record.
    span: Option<Span>,
}

impl std::fmt::Debug for SendSpan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendSpan")
            .field("recording", &self.span.is_some())
            .finish()
    }
}

impl SendSpan {
    /// Whether this span is sampled (will be exported).
    pub fn is_recording(&self) -> bool {
        self.span.is_some()
    }

    /// The broker stored the record at `partition`/`offset`; `fenced_wait` is how long it
    /// waited behind a fence of its key in the producer, if it did.
    pub fn acked(self, partition: u32, offset: i64, fenced_wait: Option<Duration>) {
        let Some(mut span) = self.span else { return };
        span.set_attributes(partition_attributes(partition));
        span.set_attribute(KeyValue::new("messaging.kafka.offset", offset));
        if let Some(wait) = fenced_wait {
            span.set_attribute(KeyValue::new(
                "keyshift.fenced_wait_ms",
                wait.as_secs_f64() * 1e3,
            ));
        }
        span.end();
    }

    /// The record was not written; `error` says why.
    pub fn failed(self, error: &dyn std::fmt::Display) {
        let Some(mut span) = self.span else { return };
        span.set_attribute(KeyValue::new("error.type", "produce_error"));
        span.set_status(Status::error(error.to_string()));
        span.end();
    }
}

/// A consumed record about to be processed, as [`Tracing::start_process`] needs it.
#[derive(Debug, Clone, Copy)]
pub struct ProcessRecord<'a> {
    /// Topic it was consumed from.
    pub topic: &'a str,
    /// The consumer group.
    pub group: &'a str,
    /// The consumer's `client.id`.
    pub client_id: &'a str,
    /// Partition.
    pub partition: u32,
    /// Offset.
    pub offset: i64,
    /// Key (may be empty).
    pub key: &'a [u8],
    /// All its headers.
    pub headers: &'a [(String, Option<Vec<u8>>)],
    /// When the consumer received it from Kafka.
    pub fetched_at: Instant,
    /// How long it was parked behind a migration barrier (`None`: not parked).
    pub parked: Option<Duration>,
    /// For a migrated key's record, the partition it moved from (its barrier).
    pub migrated_from: Option<u32>,
}

/// The CONSUMER span of one record's processing; end it with [`ProcessSpan::end`].
#[must_use = "end the span with end()"]
pub struct ProcessSpan {
    span: Option<Span>,
}

impl std::fmt::Debug for ProcessSpan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessSpan")
            .field("recording", &self.span.is_some())
            .finish()
    }
}

impl ProcessSpan {
    /// Whether this span is sampled (will be exported).
    pub fn is_recording(&self) -> bool {
        self.span.is_some()
    }

    /// Processing finished; `error` is the handler's failure, if any.
    pub fn end(self, error: Option<&dyn std::fmt::Display>) {
        let Some(mut span) = self.span else { return };
        if let Some(err) = error {
            span.set_attribute(KeyValue::new("error.type", "handler_error"));
            span.set_status(Status::error(err.to_string()));
        }
        span.end();
    }
}

impl Tracing {
    /// Starts the PRODUCER span of a record about to be sent to `topic` and writes its
    /// context into `headers` (replacing trace headers the caller put there, which become
    /// the span's parent).
    pub fn start_send(
        &self,
        topic: &str,
        key: &[u8],
        client_id: &str,
        headers: &mut Vec<(String, Vec<u8>)>,
    ) -> SendSpan {
        let tracer = &self.inner.tracer;
        let parent = if headers.is_empty() {
            None
        } else {
            propagation::extract_owned(headers)
        };
        let name = || Cow::Owned(format!("send {topic}"));
        let builder = if parent.is_none() {
            // A new root: decide here, with the SDK's own ratio rule on the same trace id, so
            // the common unsampled record costs two random ids and a header — no span name,
            // builder or span object. A sampled one goes to the SDK with the decision made.
            let ids = RandomIdGenerator::default();
            let (trace_id, span_id) = (ids.new_trace_id(), ids.new_span_id());
            if !ratio_samples(self.inner.sample_ratio, trace_id) {
                let unsampled = SpanContext::new(
                    trace_id,
                    span_id,
                    TraceFlags::default(),
                    false,
                    TraceState::default(),
                );
                propagation::inject(&unsampled, self.inner.write_b3, headers);
                return SendSpan { span: None };
            }
            tracer
                .span_builder(name())
                .with_kind(SpanKind::Producer)
                .with_trace_id(trace_id)
                .with_span_id(span_id)
                .with_sampling_result(SamplingResult {
                    decision: SamplingDecision::RecordAndSample,
                    attributes: Vec::new(),
                    trace_state: TraceState::default(),
                })
        } else {
            tracer.span_builder(name()).with_kind(SpanKind::Producer)
        };
        let span = builder.start_with_context(tracer, &parent_context(parent.as_ref()));
        propagation::inject(span.span_context(), self.inner.write_b3, headers);
        if !span.is_recording() {
            return SendSpan { span: None };
        }
        let mut span = span;
        let key = key_text(key);
        span.set_attributes([
            KeyValue::new("messaging.system", MESSAGING_SYSTEM),
            KeyValue::new("messaging.operation.name", "send"),
            KeyValue::new("messaging.operation.type", "send"),
            KeyValue::new("messaging.destination.name", topic.to_owned()),
            KeyValue::new("messaging.client.id", client_id.to_owned()),
            KeyValue::new("messaging.kafka.message.key", key.clone()),
            KeyValue::new("producer.key", key),
        ]);
        SendSpan { span: Some(span) }
    }

    /// Starts the CONSUMER span of a record the application is about to process (and, for a
    /// parked record, records its `park` span, which ended now).
    pub fn start_process(&self, record: &ProcessRecord<'_>) -> ProcessSpan {
        let tracer = &self.inner.tracer;
        let parent = propagation::extract_consumed(record.headers);
        let cx = parent_context(parent.as_ref());
        let links = parent
            .iter()
            .map(|sc| Link::with_context(sc.clone()))
            .collect();
        let span = tracer
            .span_builder(Cow::Owned(format!("process {}", record.topic)))
            .with_kind(SpanKind::Consumer)
            .with_links(links)
            .start_with_context(tracer, &cx);
        if !span.is_recording() {
            return ProcessSpan { span: None };
        }
        let mut span = span;
        let key = key_text(record.key);
        let fetched = wall_clock(record.fetched_at);
        span.set_attributes([
            KeyValue::new("messaging.system", MESSAGING_SYSTEM),
            KeyValue::new("messaging.operation.name", "process"),
            KeyValue::new("messaging.operation.type", "process"),
            KeyValue::new("messaging.destination.name", record.topic.to_owned()),
            KeyValue::new("messaging.consumer.group.name", record.group.to_owned()),
            KeyValue::new("messaging.client.id", record.client_id.to_owned()),
            KeyValue::new("messaging.kafka.message.key", key.clone()),
            KeyValue::new("messaging.kafka.offset", record.offset),
            KeyValue::new("consumer.key", key.clone()),
            KeyValue::new(
                "keyshift.queue_ms",
                record.fetched_at.elapsed().as_secs_f64() * 1e3,
            ),
        ]);
        span.set_attributes(partition_attributes(record.partition));
        if let Some(park) = record.parked {
            let park_ms = park.as_secs_f64() * 1e3;
            span.set_attribute(KeyValue::new("keyshift.parked", true));
            span.set_attribute(KeyValue::new("keyshift.park_ms", park_ms));
            let mut event = vec![KeyValue::new("keyshift.park_ms", park_ms)];
            if let Some(from) = record.migrated_from {
                event.push(KeyValue::new("keyshift.migrated_from", i64::from(from)));
            }
            span.add_event_with_timestamp("keyshift.parked", fetched, event.clone());
            // The park as its own span, a sibling of the process span under the producer's
            // context: fetched → released, the time the migration barrier cost this record.
            let mut park_span = tracer
                .span_builder(Cow::Owned(format!("park {}", record.topic)))
                .with_kind(SpanKind::Internal)
                .with_start_time(fetched)
                .with_links(
                    parent
                        .iter()
                        .map(|sc| Link::with_context(sc.clone()))
                        .collect(),
                )
                .start_with_context(tracer, &cx);
            park_span.set_attributes(event);
            park_span.set_attributes([
                KeyValue::new("messaging.system", MESSAGING_SYSTEM),
                KeyValue::new("messaging.destination.name", record.topic.to_owned()),
                KeyValue::new("messaging.consumer.group.name", record.group.to_owned()),
                KeyValue::new("messaging.kafka.message.key", key.clone()),
                KeyValue::new("messaging.kafka.offset", record.offset),
                KeyValue::new("consumer.key", key),
            ]);
            park_span.set_attributes(partition_attributes(record.partition));
            park_span.end();
        }
        ProcessSpan { span: Some(span) }
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{SamplingDecision, SpanKind, TraceId};
    use opentelemetry_sdk::trace::{Sampler, ShouldSample};

    use super::ratio_samples;

    #[test]
    fn the_fast_path_decides_exactly_like_the_sdk_sampler() {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for ratio in [0.0, 0.01, 0.25, 0.5, 0.99, 1.0] {
            let sdk = Sampler::TraceIdRatioBased(ratio);
            let mut sampled = 0;
            for _ in 0..20_000 {
                let id = TraceId::from((u128::from(next()) << 64) | u128::from(next()));
                let theirs = sdk
                    .should_sample(None, id, "send t", &SpanKind::Producer, &[], &[])
                    .decision
                    == SamplingDecision::RecordAndSample;
                assert_eq!(ratio_samples(ratio, id), theirs, "ratio {ratio}, id {id}");
                sampled += usize::from(theirs);
            }
            let expected = ratio * 20_000.0;
            assert!(
                (sampled as f64 - expected).abs() <= 400.0,
                "ratio {ratio}: {sampled}"
            );
        }
    }
}
