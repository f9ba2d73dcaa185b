//! Writes kafka-tracing-interceptor events (SEND, ACK, CONSUME, COMMIT) to the `_tracing`
//! topic, so `keyshift trace aggregate` — or the seed's Java aggregator — can join them.
//!
//! A [`TraceEventSink`] is one small fire-and-forget producer shared by every client of a
//! process. Events are best effort, like the interceptor's: a full local queue or a broker
//! error drops the event (counted in [`TraceEventSink::dropped`], logged once per thousand)
//! and never slows or fails the traced record. The event encoding is
//! [`keyshift_trace::events::TraceEvent`]'s.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use keyshift_trace::events::TraceEvent;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

use crate::admin::{Admin, AdminError};
use crate::config::ClientSettings;

/// A failure to set up the event sink; names the topic.
#[derive(Debug, thiserror::Error)]
pub enum TraceEventError {
    /// The producer could not be created.
    #[error("cannot create the trace event producer for topic '{topic}': {source}")]
    Client {
        /// The events topic.
        topic: String,
        /// rdkafka's error.
        source: Box<rdkafka::error::KafkaError>,
    },
    /// The events topic is missing and could not be created.
    #[error("trace event topic '{topic}' is missing and could not be created: {source}")]
    Topic {
        /// The events topic.
        topic: String,
        /// The admin error.
        source: Box<AdminError>,
    },
}

struct Inner {
    producer: ThreadedProducer<DefaultProducerContext>,
    topic: String,
    emitted: AtomicU64,
    dropped: AtomicU64,
}

/// Emits trace events to one topic; cheap to clone.
#[derive(Clone)]
pub struct TraceEventSink {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for TraceEventSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TraceEventSink")
            .field("topic", &self.inner.topic)
            .finish_non_exhaustive()
    }
}

/// Nanoseconds since the Unix epoch of `at` (events carry wall-clock dates).
pub fn unix_nanos(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

impl TraceEventSink {
    /// A sink writing to `topic` on the cluster of `settings` (creating the topic with one
    /// partition if it does not exist).
    pub fn new(settings: &ClientSettings, topic: &str) -> Result<Self, TraceEventError> {
        let admin = Admin::new(settings).map_err(|source| TraceEventError::Topic {
            topic: topic.to_owned(),
            source: Box::new(source),
        })?;
        if admin.partitions(topic).is_err() {
            admin
                .create_topic(topic, 1)
                .map_err(|source| TraceEventError::Topic {
                    topic: topic.to_owned(),
                    source: Box::new(source),
                })?;
        }
        let mut config = settings.producer_config();
        // Events are best effort and unordered across records: no idempotence, leader ack,
        // and a short linger so they batch well without delaying the aggregator.
        config
            .set("enable.idempotence", "false")
            .set("acks", "1")
            .set("linger.ms", "20");
        for property in settings.passthrough() {
            config.set(property.key(), property.value());
        }
        let producer: ThreadedProducer<DefaultProducerContext> =
            config.create().map_err(|source| TraceEventError::Client {
                topic: topic.to_owned(),
                source: Box::new(source),
            })?;
        Ok(TraceEventSink {
            inner: Arc::new(Inner {
                producer,
                topic: topic.to_owned(),
                emitted: AtomicU64::new(0),
                dropped: AtomicU64::new(0),
            }),
        })
    }

    /// Queues one event; never blocks.
    pub fn emit(&self, event: &TraceEvent) {
        let (key, value) = event.encode();
        let record = BaseRecord::<[u8], [u8]>::to(&self.inner.topic)
            .key(&key)
            .payload(&value);
        match self.inner.producer.send(record) {
            Ok(()) => {
                self.inner.emitted.fetch_add(1, Ordering::Relaxed);
            }
            Err((err, _)) => {
                let n = self.inner.dropped.fetch_add(1, Ordering::Relaxed);
                if n.is_multiple_of(1000) {
                    tracing::warn!(topic = %self.inner.topic, %err, dropped = n + 1, "trace event dropped");
                }
            }
        }
    }

    /// Events handed to librdkafka so far.
    pub fn emitted(&self) -> u64 {
        self.inner.emitted.load(Ordering::Relaxed)
    }

    /// Events dropped because librdkafka refused them.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// The events topic.
    pub fn topic(&self) -> &str {
        &self.inner.topic
    }

    /// Waits up to `timeout` for queued events to reach the broker (call before exiting).
    pub fn flush(&self, timeout: Duration) {
        if let Err(err) = self.inner.producer.flush(timeout) {
            tracing::warn!(topic = %self.inner.topic, %err, "flushing trace events failed");
        }
    }
}
