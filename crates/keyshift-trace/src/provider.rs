//! The process's tracer: one OpenTelemetry SDK provider with a batching OTLP exporter.
//!
//! A [`Tracing`] is built once per process from a [`TraceConfig`] and cloned into every
//! producer and consumer (clones share the provider, its batch queue and its export thread).
//! The seed built a tracer per message; here spans of every record go through one batch
//! processor, which exports on its own thread so the record path only queues a finished span.
//!
//! Tracing off is `Option<Tracing>::None` in the producer and consumer: no provider, no
//! headers, no spans — one branch per record.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider,
};
use opentelemetry_sdk::Resource;

use crate::config::{Protocol, TraceConfig};

/// A tracer provider that could not be set up; names the endpoint or setting.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The OTLP exporter could not be built (bad endpoint, TLS, headers).
    #[error("cannot build the OTLP {protocol} span exporter for {endpoint}: {source}")]
    Exporter {
        /// `grpc` or `http/protobuf`.
        protocol: &'static str,
        /// The endpoint, or where it would be read from.
        endpoint: String,
        /// The exporter's error.
        source: opentelemetry_otlp::ExporterBuildError,
    },
    /// The runtime for the gRPC client could not be started.
    #[error("cannot start the runtime of the OTLP gRPC exporter: {0}")]
    Runtime(#[source] std::io::Error),
}

pub(crate) struct Inner {
    pub(crate) tracer: SdkTracer,
    pub(crate) write_b3: bool,
    /// The head sampling ratio for new roots (the SDK's sampler applies the same rule).
    pub(crate) sample_ratio: f64,
    provider: SdkTracerProvider,
    /// The gRPC (tonic) client's runtime; `None` for HTTP, whose blocking client runs on the
    /// batch thread.
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Export what is queued while the gRPC runtime still runs, then stop the runtime; the
        // last clone may be dropped inside async code, where only shutdown_background is legal.
        let _ = self.provider.shutdown();
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// The process's tracer; see the [module docs](self). Cheap to clone, `Send + Sync`.
#[derive(Clone)]
pub struct Tracing {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Tracing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracing")
            .field("write_b3", &self.inner.write_b3)
            .finish_non_exhaustive()
    }
}

impl Tracing {
    /// Builds the provider: OTLP exporter over `config.protocol`, parent-based ratio sampler,
    /// batch span processor (its limits from `OTEL_BSP_*`), resource with `service.name`.
    /// Call once per process and clone the result.
    pub fn new(config: &TraceConfig) -> Result<Tracing, ProviderError> {
        let endpoint_text = config
            .endpoint
            .clone()
            .unwrap_or_else(|| "the OTEL_EXPORTER_OTLP_*ENDPOINT default".to_owned());
        let exporter_error = |source| ProviderError::Exporter {
            protocol: config.protocol.as_str(),
            endpoint: endpoint_text.clone(),
            source,
        };
        let (exporter, runtime) = match config.protocol {
            Protocol::Grpc => {
                // tonic spawns its connection tasks on the runtime current at build time.
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("keyshift-otlp")
                    .enable_all()
                    .build()
                    .map_err(ProviderError::Runtime)?;
                let exporter = {
                    let _entered = rt.enter();
                    let mut b = opentelemetry_otlp::SpanExporter::builder().with_tonic();
                    if let Some(e) = &config.endpoint {
                        b = b.with_endpoint(e.clone());
                    }
                    b.build().map_err(exporter_error)?
                };
                (exporter, Some(rt))
            }
            Protocol::HttpProtobuf => {
                let mut b = opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_protocol(opentelemetry_otlp::Protocol::HttpBinary);
                if let Some(e) = &config.endpoint {
                    b = b.with_endpoint(e.clone());
                }
                (b.build().map_err(exporter_error)?, None)
            }
        };
        let mut batch = BatchConfigBuilder::default();
        if let Some(delay) = config.schedule_delay {
            batch = batch.with_scheduled_delay(delay.max(Duration::from_millis(1)));
        }
        let processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(batch.build())
            .build();
        let sampler =
            Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(config.sample_ratio)));
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(sampler)
            .with_resource(
                Resource::builder()
                    .with_service_name(config.service_name.clone())
                    .build(),
            )
            .build();
        let tracer = provider.tracer("keyshift");
        Ok(Tracing {
            inner: Arc::new(Inner {
                tracer,
                write_b3: config.write_b3,
                sample_ratio: config.sample_ratio,
                provider,
                runtime,
            }),
        })
    }

    /// Whether records also get Zipkin's `b3` header.
    pub fn writes_b3(&self) -> bool {
        self.inner.write_b3
    }

    /// Exports every finished span now (blocks until the exporter answered or timed out).
    pub fn flush(&self) {
        if let Err(err) = self.inner.provider.force_flush() {
            tracing::warn!(%err, "flushing spans failed");
        }
    }
}
