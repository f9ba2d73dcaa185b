//! Record tracing: where a Kafka record spent its time, end to end.
//!
//! - [`propagation`] carries trace context in record headers: W3C `traceparent`/`tracestate`
//!   written and read, Zipkin's single `b3` header read (and written on request), so
//!   Brave-instrumented services join the same traces.
//! - [`config`] resolves the standard `OTEL_*` environment into a [`TraceConfig`];
//!   [`provider`] turns it into the process's one [`Tracing`] (OTLP over gRPC or HTTP,
//!   parent-based ratio sampling, batching); [`span`] opens the `send`/`process`/`park` spans
//!   of one record following the OpenTelemetry messaging conventions. The keyshift producer
//!   and ordered consumer (crate `keyshift-kafka`) take an optional [`Tracing`]: without one
//!   they do no tracing work at all.
//! - [`events`] are kafka-tracing-interceptor's SEND/ACK/CONSUME/COMMIT records for the
//!   `_tracing` topic; [`aggregate`] joins them like kafka-tracing-aggregator.
//! - [`jaeger`] is the seed's analysis step: per-key and per-partition latency from the traces
//!   Jaeger's query API returns.

pub mod aggregate;
pub mod config;
pub mod events;
pub mod jaeger;
pub mod propagation;
pub mod provider;
pub mod span;

pub use config::{ConfigError, Protocol, TraceConfig};
pub use provider::{ProviderError, Tracing};
pub use span::{ProcessRecord, ProcessSpan, SendSpan};
