//! Errors of the keyshift producer: refused configurations at build time, and records that
//! could not be written at run time.
//!
//! Every message names what it was about (topic, partition, key, property) and what went
//! wrong, because these errors end up in a gateway's HTTP answer or an operator's log.

use std::time::Duration;

use rdkafka::error::KafkaError;

use crate::admin::AdminError;
use crate::config::ConfigError;

/// Why a [`super::ProducerBuilder`] refused to build a producer.
#[derive(Debug, thiserror::Error)]
pub enum ProducerBuildError {
    /// No topic, or an empty topic name.
    #[error("invalid producer topic '{0}': expected a non-empty topic name")]
    InvalidTopic(String),
    /// The strategy name, one of its options, or a producer option was refused (the
    /// message names the option and what was expected).
    #[error("{0}")]
    Param(#[from] keyshift_core::ParamError),
    /// An explicit partition count of zero.
    #[error("invalid partition count 0 for topic '{topic}': expected at least 1")]
    ZeroPartitions {
        /// The topic.
        topic: String,
    },
    /// The partition count could not be read from the cluster (e.g. the topic does not exist).
    #[error("cannot read the partition count of topic '{topic}': {source}")]
    Partitions {
        /// The topic.
        topic: String,
        /// The admin error (names the topic and the failed request).
        source: AdminError,
    },
    /// A producer property given to the builder was refused (syntax or by librdkafka).
    #[error("producer property refused: {0}")]
    Property(#[from] ConfigError),
    /// librdkafka refused to create the producer (an inconsistent combination of properties).
    #[error("cannot create a Kafka producer for '{bootstrap}': {source}")]
    Client {
        /// The bootstrap servers.
        bootstrap: String,
        /// librdkafka's explanation.
        source: KafkaError,
    },
    /// The route topic (durable routes) cannot be created or read: starting anyway would route
    /// moved keys by hash, home without a fence.
    #[error(
        "cannot use route topic '{topic}' for durable routes: {reason}; fix the topic (or its \
         ACLs), name another one, or keep routes in memory with --routes ephemeral (unsafe \
         across restarts)"
    )]
    RouteState {
        /// The route topic.
        topic: String,
        /// What failed.
        reason: String,
    },
    /// A coordinated producer whose client may keep trying to deliver a record for longer than
    /// the coordination allows (see `CoordinationConfig::max_message_timeout`).
    #[error(
        "{setting}={found_ms} is longer than coordinated producers allow ({max_ms} ms, eight \
         member timeouts): a record a stopped producer still held could then land behind a \
         move's fence after the other producers forgot it; lower {setting} or raise the \
         member timeout"
    )]
    MessageTimeout {
        /// The librdkafka property given (`message.timeout.ms` or `delivery.timeout.ms`).
        setting: &'static str,
        /// Its value, in milliseconds.
        found_ms: u64,
        /// The largest allowed.
        max_ms: u64,
    },
    /// A strategy that moves keys with a producer setting that can lose or reorder a fence.
    #[error(
        "strategy '{strategy}' moves keys between partitions, which needs {setting}={expected} \
         (found {setting}={found}): {why}"
    )]
    UnsafeMoves {
        /// The strategy.
        strategy: String,
        /// The librdkafka property.
        setting: &'static str,
        /// Its value.
        found: String,
        /// What the fenced migration needs.
        expected: &'static str,
        /// What goes wrong otherwise.
        why: &'static str,
    },
    /// No async runtime was current and a private one could not be started.
    #[error("cannot start the producer's background runtime: {0}")]
    Runtime(std::io::Error),
}

/// Why a record was not written.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProduceError {
    /// librdkafka's local queue is full and earlier decided records are still waiting for
    /// room; nothing was decided for this record. Returned only by
    /// [`super::KeyshiftProducer::try_send`]; [`super::KeyshiftProducer::send`] backs off and
    /// retries instead.
    #[error(
        "producer queue for topic '{topic}' is full (queue.buffering.max.messages/kbytes); \
         retry after earlier records are delivered"
    )]
    QueueFull {
        /// The topic.
        topic: String,
    },
    /// The latest heartbeat a coordinated producer has read back from the control log was
    /// written longer ago than it may route on what it knows (it was stopped, or the control
    /// topic is slow): the other producers may have moved keys meanwhile. Nothing was decided; retry
    /// shortly ([`super::KeyshiftProducer::send`] does).
    #[error(
        "producer for topic '{topic}' is out of touch with control topic '{control_topic}' \
         (the latest heartbeat it read back was written {silent:?} ago); retry shortly"
    )]
    OutOfTouch {
        /// The topic.
        topic: String,
        /// The control topic.
        control_topic: String,
        /// How long ago the latest heartbeat it read back was written.
        silent: Duration,
    },
    /// librdkafka refused to enqueue the record (e.g. larger than `message.max.bytes`, or a
    /// partition the topic does not have).
    #[error(
        "record for topic '{topic}' partition {partition} was refused by the producer: {source}"
    )]
    Enqueue {
        /// The topic.
        topic: String,
        /// The partition it was routed to.
        partition: u32,
        /// librdkafka's error (boxed: keeps the error small on the `Ok` path).
        source: Box<KafkaError>,
    },
    /// The broker did not acknowledge the record (after librdkafka's own retries, within
    /// `message.timeout.ms`).
    #[error("record for topic '{topic}' partition {partition} was not delivered: {source}")]
    Delivery {
        /// The topic.
        topic: String,
        /// The partition it was routed to.
        partition: u32,
        /// librdkafka's error.
        source: Box<KafkaError>,
    },
    /// The fence that moves the record's key could not be written after every attempt, so
    /// the record (held behind it) was not sent: sending it would break the key's order.
    #[error(
        "record of key '{key}' for topic '{topic}' not sent: the fence moving it off \
         partition {fence_partition} failed {attempts} time(s), last error: {source}"
    )]
    Fence {
        /// The topic.
        topic: String,
        /// The key, lossily decoded as UTF-8 for the message.
        key: String,
        /// Partition the fence was written to (the key's old partition).
        fence_partition: u32,
        /// Fence attempts made.
        attempts: u32,
        /// The last attempt's error.
        source: Box<KafkaError>,
    },
    /// The route change that moves the record's key could not be written to the route topic
    /// after every attempt, so the record (held behind it) was not sent; the write is retried
    /// in the background and the key's later records wait for it.
    #[error(
        "record of key '{key}' for topic '{topic}' not sent: its new route could not be \
         recorded in route topic '{routes_topic}' after {attempts} attempt(s), last error: \
         {source}"
    )]
    RouteState {
        /// The topic.
        topic: String,
        /// The key, lossily decoded as UTF-8 for the message.
        key: String,
        /// The route topic.
        routes_topic: String,
        /// Write attempts so far.
        attempts: u32,
        /// The last attempt's error.
        source: Box<KafkaError>,
    },
    /// [`super::KeyshiftProducer::grow`] was refused or called off; nothing was homed on the
    /// new partition count.
    #[error("cannot grow topic '{topic}': {reason}")]
    Growth {
        /// The topic.
        topic: String,
        /// Why.
        reason: String,
    },
    /// [`super::KeyshiftProducer::move_key`] on a producer whose settings can lose a fence.
    #[error(
        "cannot move key '{key}' of topic '{topic}': moving keys needs an idempotent producer \
         with acks=all (found {setting}={found})"
    )]
    UnsafeMove {
        /// The topic.
        topic: String,
        /// The key.
        key: String,
        /// The offending librdkafka property.
        setting: &'static str,
        /// Its value.
        found: String,
    },
    /// [`super::KeyshiftProducer::move_key`] on a coordinated producer that does not decide
    /// moves (only the control log's decider does).
    #[error(
        "cannot move key '{key}' of topic '{topic}' from this producer: coordinated producers' \
         moves are decided by one of them ({}), and this one follows",
        decider.map_or_else(|| "none yet".to_owned(), |d| format!("member {d}"))
    )]
    NotDecider {
        /// The topic.
        topic: String,
        /// The key.
        key: String,
        /// The deciding member, if there is one.
        decider: Option<u64>,
    },
    /// A partition outside the topic, given to [`super::KeyshiftProducer::move_key`].
    #[error("invalid partition {partition} for topic '{topic}': expected 0..{partitions}")]
    InvalidPartition {
        /// The topic.
        topic: String,
        /// The partition asked for.
        partition: u32,
        /// The topic's partition count.
        partitions: u32,
    },
    /// The producer shut down before the record was handed to librdkafka, or librdkafka
    /// dropped it without a delivery report.
    #[error("producer for topic '{topic}' closed before the record was delivered")]
    Closed {
        /// The topic.
        topic: String,
    },
    /// [`super::KeyshiftProducer::flush`] ran out of time.
    #[error(
        "flush of topic '{topic}' timed out after {timeout:?}: {held} held and {queued} \
         queued record(s) still undelivered"
    )]
    FlushTimeout {
        /// The topic.
        topic: String,
        /// The timeout given.
        timeout: Duration,
        /// Records still held behind fences.
        held: usize,
        /// Records (and fences) still waiting in keyshift's backlog or librdkafka's queue.
        queued: usize,
    },
}

impl ProduceError {
    /// Whether nothing was decided and the same record may simply be offered again shortly
    /// ([`ProduceError::QueueFull`], [`ProduceError::OutOfTouch`]); retrying in place keeps
    /// the call order of a key's records.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ProduceError::QueueFull { .. } | ProduceError::OutOfTouch { .. }
        )
    }
}
