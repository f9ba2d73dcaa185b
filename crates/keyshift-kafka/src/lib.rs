//! keyshift's Kafka adapters: everything that talks to a Kafka cluster through rdkafka.
//!
//! The decisions (routing, migration, order gate) live in `keyshift-core`; this crate moves
//! bytes and answers questions about the cluster:
//! - [`config`]: [`ClientSettings`], shared by every client of a run (bootstrap servers,
//!   client id, kcat-style `-X key=value` passthrough, idempotent producer defaults), and
//!   [`client_file`]: [`ClientFile`], the Java client's `client.properties` translated to
//!   librdkafka's (`--client-config`);
//! - [`admin`]: [`Admin`], idempotent topic creation, partition counts, end offsets and a
//!   group's committed offsets — the barrier of fenced migration;
//! - [`producer`]: [`KeyshiftProducer`], any strategy of the core in front of an idempotent
//!   producer, with fenced migration when a key moves;
//! - [`consumer`]: [`OrderedConsumer`], a consumer-group member that delivers records in
//!   per-key order across fenced migrations (the core's order gate on a real consumer),
//!   up to a configurable number of records at once, never two of one key;
//! - [`forward`]: [`HttpForward`], an ordered consumer's handler that posts each record to an
//!   HTTP endpoint, for applications in any language (`keyshift worker --forward`), and
//!   [`exec`]: [`ExecHandler`], one that exchanges JSON lines with a long-lived subprocess
//!   (`keyshift worker --exec`);
//! - [`state`]: [`StateStore`], per-key state in a compacted changelog that follows its key
//!   across migrations and rebalances, applied exactly once per record ([`WithState`]);
//! - [`trace_events`]: [`TraceEventSink`], kafka-tracing-interceptor events to `_tracing`
//!   (the producer and consumer also take a `keyshift_trace::Tracing` for OTLP spans);
//! - [`expand`]: growing a topic's partitions without breaking per-key order (`keyshift
//!   expand`: CreatePartitions, the producer's epoch fences, the group's drain past them);
//! - [`broker`]: [`EmbeddedBroker`], an in-process tansu broker so that everything runs with
//!   no setup, and [`run_standalone`] for `keyshift broker`.
//!
//! Nothing here depends on the broker being tansu: with real bootstrap servers the same
//! code runs against any Kafka cluster.
//!
//! # Example
//!
//! Produce one customer's orders with keyshift's partitioner and process them in order with an
//! ordered consumer (here on the embedded broker; with a cluster, build the
//! [`ClientSettings`] from its bootstrap servers instead). `examples/order_totals.rs` is a
//! fuller application: several consumers, an asynchronous handler, a moved key and per-key
//! state.
//!
//! ```
//! use std::time::Duration;
//! use keyshift_kafka::{DeliveredRecord, EmbeddedBroker, KeyshiftProducer, OrderedConsumerBuilder};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let broker = EmbeddedBroker::start()?;
//! broker.create_topic("orders", 4)?;
//! let producer = KeyshiftProducer::builder(broker.client_settings(), "orders")
//!     .strategy("keyshift")
//!     .build()?;
//! tokio::runtime::Runtime::new()?.block_on(async {
//!     for i in 0..10 {
//!         producer.send(b"customer-7", i.to_string().as_bytes(), Vec::new()).await?;
//!     }
//!     Ok::<_, keyshift_kafka::ProduceError>(())
//! })?;
//!
//! let (seen, received) = std::sync::mpsc::channel();
//! let consumer = OrderedConsumerBuilder::new(&broker.client_settings(), "billing", "orders")
//!     .spawn(move |record: &DeliveredRecord| {
//!         seen.send(String::from_utf8_lossy(&record.value).into_owned())
//!     })?;
//! let values = (0..10)
//!     .map(|_| received.recv_timeout(Duration::from_secs(60)))
//!     .collect::<Result<Vec<_>, _>>()?;
//! assert_eq!(values, ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]);
//! consumer.stop()?;
//! # Ok(())
//! # }
//! ```

pub mod admin;
pub mod bench;
pub mod broker;
pub mod client_errors;
pub mod client_file;
pub mod config;
pub mod consumer;
pub mod control;
pub mod exec;
pub mod expand;
pub mod feedback;
pub mod forward;
pub mod lag;
pub mod producer;
mod reader;
pub mod sasl_users;
pub mod state;
pub mod trace_aggregate;
pub mod trace_events;
pub mod watermarks;

pub use admin::{Admin, AdminConfig, AdminError, TopicStatus};
pub use broker::{
    run_standalone, serve_standalone, BrokerError, BrokerOptions, EmbeddedBroker, StandaloneOptions,
};
pub use client_file::{ClientFile, ClientFileError};
pub use config::{ClientSettings, ConfigError, Property};
pub use consumer::{
    AsyncRecordHandler, BlockedKey, ConsumerError, ConsumerStats, DeliveredRecord, HandlerError,
    OrderedConsumer, OrderedConsumerBuilder, ParkPolicy, Rebalancing, RecordHandler, RetryPolicy,
    RetryingKey, StatsSnapshot, StopHandle,
};
pub use exec::ExecHandler;
pub use feedback::{FeedbackError, FeedbackLoop};
pub use forward::{record_json, ForwardError, HttpForward};
pub use producer::{
    CoordinationConfig, CoordinationStats, Delivery, GrowthReport, KeyshiftProducer,
    PendingDelivery, ProduceError, ProducerBuildError, ProducerBuilder, ProducerStats, Routes,
    ROUTE_TOPIC_SUFFIX,
};
pub use sasl_users::SaslUser;
pub use state::{
    StateChange, StateError, StateStats, StateStore, StateView, StatefulHandler, WithState,
    STATE_TOPIC_SUFFIX,
};
pub use trace_events::{TraceEventError, TraceEventSink};

/// Locks `m`, taking the value of a poisoned lock: the thread that panicked while holding it
/// (a handler's, say) ends anyway, and what the locks here guard — a consumer's gate and
/// bookkeeping, statistics, a handler process's waiting records — is never left half-written
/// in a way that matters to the readers that come after.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
