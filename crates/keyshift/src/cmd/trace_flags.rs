//! Tracing flags shared by the commands that produce or consume (`gateway`, `worker`).
//!
//! Tracing is configured the OpenTelemetry way, by `OTEL_*` environment variables (see
//! [`keyshift_trace::config`]); the flags override the few things people change per run.
//! Without `--otlp-endpoint` and without an OTLP endpoint in the environment, no tracer is
//! built and the producer and consumer do no tracing work at all.

use clap::Args;
use keyshift_kafka::{ClientSettings, TraceEventSink};
use keyshift_trace::events::TRACE_TOPIC;
use keyshift_trace::{Protocol, TraceConfig, Tracing};

use crate::exit::FlagError;

/// `--otlp-endpoint`, `--trace-sample-ratio`, `--trace-b3`, `--trace-events`.
#[derive(Debug, Clone, Args)]
pub struct TraceFlags {
    /// Export spans over OTLP to this collector base URL (e.g. http://localhost:4318, or
    /// :4317 with OTEL_EXPORTER_OTLP_PROTOCOL=grpc); like OTEL_EXPORTER_OTLP_ENDPOINT, which
    /// also turns tracing on.
    #[arg(long, value_name = "URL")]
    otlp_endpoint: Option<String>,

    /// Head sampling ratio for traces that start here, 0..=1 (records carrying a sampled
    /// context are always traced) [default: OTEL_TRACES_SAMPLER(_ARG), else 1].
    #[arg(long, value_name = "RATIO")]
    trace_sample_ratio: Option<f64>,

    /// Also write Zipkin's single b3 header (it is always read), like OTEL_PROPAGATORS=b3.
    #[arg(long)]
    trace_b3: bool,

    /// Emit kafka-tracing-interceptor events (SEND/ACK or CONSUME/COMMIT) to the _tracing
    /// topic, for `keyshift trace aggregate`.
    #[arg(long, env = "KEYSHIFT_TRACE_EVENTS")]
    trace_events: bool,

    /// Topic for --trace-events.
    #[arg(long, value_name = "TOPIC", default_value = TRACE_TOPIC)]
    trace_events_topic: String,
}

/// The tracer and event sink a command hands to its producer or consumer.
#[derive(Debug, Default)]
pub struct TraceSetup {
    /// OTLP spans (`None`: off).
    pub tracing: Option<Tracing>,
    /// `_tracing` events (`None`: off).
    pub events: Option<TraceEventSink>,
}

impl TraceSetup {
    /// Exports what is buffered (call before exiting).
    pub fn flush(&self) {
        if let Some(t) = &self.tracing {
            t.flush();
        }
        if let Some(e) = &self.events {
            e.flush(std::time::Duration::from_secs(5));
        }
    }
}

impl TraceFlags {
    /// Resolves the environment and flags into the process's one tracer (service name
    /// `service` unless OTEL_SERVICE_NAME says otherwise) and event sink.
    pub fn open(&self, service: &str, settings: &ClientSettings) -> anyhow::Result<TraceSetup> {
        let env_error = |e: keyshift_trace::ConfigError| {
            FlagError::new(e.name, format!("{} (environment)", e.reason))
        };
        let mut config = match &self.otlp_endpoint {
            Some(_) => Some(TraceConfig::from_env_forced(service).map_err(env_error)?),
            None => TraceConfig::from_env(service).map_err(env_error)?,
        };
        if let Some(url) = &self.otlp_endpoint {
            let url = url.trim_end_matches('/');
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(FlagError::new(
                    "--otlp-endpoint",
                    format!("expected an http:// or https:// URL, got '{url}'"),
                )
                .into());
            }
            let mut c = config.unwrap_or_else(|| TraceConfig::new(service));
            c.endpoint = Some(match c.protocol {
                Protocol::Grpc => url.to_owned(),
                // As for OTEL_EXPORTER_OTLP_ENDPOINT, the signal's path is appended.
                Protocol::HttpProtobuf => format!("{url}/v1/traces"),
            });
            config = Some(c);
        }
        let needs_tracing = |flag: &str| {
            FlagError::new(
                flag,
                "tracing is off: also pass --otlp-endpoint or set OTEL_EXPORTER_OTLP_ENDPOINT",
            )
        };
        if let Some(ratio) = self.trace_sample_ratio {
            let c = config
                .take()
                .ok_or_else(|| needs_tracing("--trace-sample-ratio"))?;
            config = Some(
                c.sample_ratio(ratio)
                    .map_err(|e| FlagError::new("--trace-sample-ratio", e.reason))?,
            );
        }
        if self.trace_b3 {
            config
                .as_mut()
                .ok_or_else(|| needs_tracing("--trace-b3"))?
                .write_b3 = true;
        }
        if self.trace_events_topic.trim().is_empty() {
            return Err(FlagError::new("--trace-events-topic", "must not be empty").into());
        }
        let tracing = match config {
            Some(c) => {
                let t = Tracing::new(&c)?;
                tracing::info!(
                    service = %c.service_name,
                    protocol = c.protocol.as_str(),
                    endpoint = c.endpoint.as_deref().unwrap_or("(from OTEL_EXPORTER_OTLP_*ENDPOINT)"),
                    sample_ratio = c.sample_ratio,
                    b3 = c.write_b3,
                    "tracing on"
                );
                Some(t)
            }
            None => None,
        };
        let events = if self.trace_events {
            Some(TraceEventSink::new(settings, &self.trace_events_topic)?)
        } else {
            None
        };
        Ok(TraceSetup { tracing, events })
    }
}
