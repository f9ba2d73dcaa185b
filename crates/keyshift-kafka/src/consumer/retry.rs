//! Records whose handler failed: retried per key with backoff, then dead-lettered.
//!
//! Why per key: a failed record keeps its key's place. The gate releases a key's next record
//! only once this one is processed, so while it waits for its next attempt only its key waits;
//! other keys keep flowing, and the slot it ran in is free for them meanwhile (a waiting retry
//! is not in flight). A partition's commit stays below it, so a crash or a revocation
//! redelivers it to the next owner, which starts its attempts afresh: nothing is lost.
//!
//! How: a slot that sees a failure asks [`RetryPolicy`] what comes next. Before the last attempt
//! the record goes back to the consumer's retry queue with its due time (`backoff`, doubling up
//! to `max_backoff`); the loop hands due retries to free slots before new records. After the
//! last attempt it goes to the dead-letter topic, if there is one ([`DeadLetters`]: the
//! original key, value, timestamp and headers, plus `keyshift-dlq-*` headers naming the error
//! and the original coordinates; keyshift's own route and fence headers are left out, since
//! they name the source topic's partitions) and only once that write is acknowledged does it
//! count as processed — a failed write is retried like an attempt. Without a dead-letter topic
//! it counts as processed with its error (the library's default: one attempt, no retries).
//! `max_attempts: None` retries forever: the key blocks until its record succeeds. Keys with a
//! failing record are listed with their attempts and how long they have been failing
//! ([`RetryingKey`], [`super::StatsSnapshot::retrying_keys`]).

use std::time::{Duration, Instant};

use keyshift_core::protocol::{FENCE_HEADER, ROUTE_HEADER};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::DeliveredRecord;
use crate::config::ClientSettings;

/// Header of a dead-lettered record: the handler's last error.
pub const DLQ_ERROR_HEADER: &str = "keyshift-dlq-error";
/// Header of a dead-lettered record: the topic it was consumed from.
pub const DLQ_TOPIC_HEADER: &str = "keyshift-dlq-topic";
/// Header of a dead-lettered record: its partition there.
pub const DLQ_PARTITION_HEADER: &str = "keyshift-dlq-partition";
/// Header of a dead-lettered record: its offset there.
pub const DLQ_OFFSET_HEADER: &str = "keyshift-dlq-offset";
/// Header of a dead-lettered record: the consumer group that gave up on it.
pub const DLQ_GROUP_HEADER: &str = "keyshift-dlq-group";
/// Header of a dead-lettered record: how many attempts failed.
pub const DLQ_ATTEMPTS_HEADER: &str = "keyshift-dlq-attempts";

/// How a failed record is retried (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (≥ 1); `None` retries forever, blocking the key
    /// until its record succeeds.
    pub max_attempts: Option<u32>,
    /// Wait before the second attempt; each further wait doubles.
    pub backoff: Duration,
    /// Longest wait between two attempts.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    /// One attempt: a failure is logged and counted and the record counts as processed.
    fn default() -> Self {
        Self {
            max_attempts: Some(1),
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// Whether `attempts` failed attempts are all there may be.
    pub(super) fn exhausted(&self, attempts: u32) -> bool {
        self.max_attempts.is_some_and(|m| attempts >= m)
    }

    /// Wait after the `attempts`-th failure (1 → `backoff`, then doubling, capped).
    pub(super) fn wait_after(&self, attempts: u32) -> Duration {
        let doublings = attempts.saturating_sub(1).min(31);
        self.backoff
            .saturating_mul(1u32 << doublings)
            .min(self.max_backoff)
    }
}

/// A key whose record is failing right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryingKey {
    /// Partition of the failing record.
    pub partition: u32,
    /// Its offset.
    pub offset: i64,
    /// The key (every later record of it waits).
    pub key: Vec<u8>,
    /// Attempts that failed so far.
    pub attempts: u32,
    /// Since the first failure.
    pub age: Duration,
    /// The last attempt's error.
    pub last_error: String,
}

/// What the consumer remembers of a failing record.
#[derive(Debug, Clone)]
pub(super) struct Failing {
    pub key: Vec<u8>,
    pub attempts: u32,
    pub since: Instant,
    pub last_error: String,
}

/// The dead-letter topic and the producer that writes to it.
pub(super) struct DeadLetters {
    producer: FutureProducer,
    topic: String,
    source_topic: String,
    group: String,
}

impl DeadLetters {
    /// A producer of dead letters with the consumer's client settings.
    pub fn new(
        settings: &ClientSettings,
        topic: &str,
        source_topic: &str,
        group: &str,
    ) -> Result<Self, rdkafka::error::KafkaError> {
        let mut config = settings.producer_config();
        // A write that cannot be delivered fails within this (and is retried like an
        // attempt) instead of holding its slot for librdkafka's five-minute default.
        if config.get("message.timeout.ms").is_none() {
            config.set("message.timeout.ms", "30000");
        }
        Ok(Self {
            producer: config.create()?,
            topic: topic.to_owned(),
            source_topic: source_topic.to_owned(),
            group: group.to_owned(),
        })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Writes `record` to the dead-letter topic and waits for its acknowledgement.
    pub fn send(&self, record: &DeliveredRecord, error: &str, attempts: u32) -> Result<(), String> {
        let mut headers = OwnedHeaders::new();
        for (name, value) in &record.headers {
            if name == ROUTE_HEADER || name == FENCE_HEADER {
                continue;
            }
            headers = headers.insert(Header {
                key: name,
                value: value.as_deref(),
            });
        }
        let (partition, offset, attempts) = (
            record.partition.to_string(),
            record.offset.to_string(),
            attempts.to_string(),
        );
        for (key, value) in [
            (DLQ_ERROR_HEADER, error),
            (DLQ_TOPIC_HEADER, self.source_topic.as_str()),
            (DLQ_PARTITION_HEADER, partition.as_str()),
            (DLQ_OFFSET_HEADER, offset.as_str()),
            (DLQ_GROUP_HEADER, self.group.as_str()),
            (DLQ_ATTEMPTS_HEADER, attempts.as_str()),
        ] {
            headers = headers.insert(Header {
                key,
                value: Some(value),
            });
        }
        let mut out = FutureRecord::<[u8], [u8]>::to(&self.topic)
            .payload(&record.value)
            .headers(headers);
        if let Some(key) = &record.key {
            out = out.key(key.as_slice());
        }
        if let Some(ts) = record.timestamp_ms {
            out = out.timestamp(ts);
        }
        let delivery = self
            .producer
            .send_result(out)
            .map_err(|(e, _)| format!("dead-letter topic {}: {e}", self.topic))?;
        match futures_executor::block_on(delivery) {
            Ok(Ok(_)) => Ok(()),
            Ok(Err((e, _))) => Err(format!("dead-letter topic {}: {e}", self.topic)),
            Err(_) => Err(format!(
                "dead-letter topic {}: the producer closed",
                self.topic
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_from_the_backoff_up_to_the_cap() {
        let p = RetryPolicy {
            max_attempts: Some(5),
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(500),
        };
        let waits: Vec<u128> = (1..=5).map(|a| p.wait_after(a).as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 500, 500]);
        assert!(!p.exhausted(4) && p.exhausted(5));
        assert_eq!(p.wait_after(u32::MAX), Duration::from_millis(500));
        let forever = RetryPolicy {
            max_attempts: None,
            ..p
        };
        assert!(!forever.exhausted(u32::MAX));
        assert!(RetryPolicy::default().exhausted(1));
    }
}
