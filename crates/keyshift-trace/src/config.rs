//! Tracing configuration: the standard OpenTelemetry environment variables, resolved once.
//!
//! [`TraceConfig::from_env`] reads what the OpenTelemetry SDKs of other languages read, so a
//! keyshift process is configured like any other instrumented service:
//!
//! | variable | meaning here |
//! |---|---|
//! | `OTEL_SDK_DISABLED=true` | tracing off |
//! | `OTEL_TRACES_EXPORTER` | `otlp` (on) or `none` (off); unset: on iff an endpoint is set |
//! | `OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` | where spans go (read by the exporter) |
//! | `OTEL_EXPORTER_OTLP_PROTOCOL`, `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` | `grpc` or `http/protobuf` (default) |
//! | `OTEL_EXPORTER_OTLP_HEADERS`, `…_TIMEOUT`, `…_COMPRESSION` | read by the exporter |
//! | `OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG` | head sampling ratio (see below) |
//! | `OTEL_BSP_SCHEDULE_DELAY`, `OTEL_BSP_MAX_QUEUE_SIZE`, `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`, `OTEL_BSP_EXPORT_TIMEOUT` | batching (read by the SDK) |
//! | `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES` | the resource |
//! | `OTEL_PROPAGATORS` | `tracecontext` (always written), `b3` (also write the single `b3` header), `baggage` and `none` accepted |
//!
//! Sampling is always parent-based: a record whose headers carry a sampled (or unsampled)
//! context keeps that decision, so a trace is never cut in half between producer and
//! consumer; the ratio decides only for traces that start here. `always_on`/`always_off`
//! and their `parentbased_` forms map to ratios 1 and 0.
//!
//! Values that make no sense are errors naming the variable, never silently ignored.

use std::time::Duration;

/// How spans are shipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP over gRPC (default port 4317).
    Grpc,
    /// OTLP over HTTP with protobuf bodies (default port 4318, path `/v1/traces`).
    HttpProtobuf,
}

impl Protocol {
    /// The `OTEL_EXPORTER_OTLP_PROTOCOL` spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::HttpProtobuf => "http/protobuf",
        }
    }

    /// Parses the `OTEL_EXPORTER_OTLP_PROTOCOL` spelling.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.trim() {
            "grpc" => Ok(Protocol::Grpc),
            "http/protobuf" => Ok(Protocol::HttpProtobuf),
            "http/json" => Err("http/json is not supported; use grpc or http/protobuf".into()),
            other => Err(format!("expected grpc or http/protobuf, got '{other}'")),
        }
    }
}

/// A configuration value that makes no sense; names the variable or option.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {name}: {reason}")]
pub struct ConfigError {
    /// The environment variable or option.
    pub name: String,
    /// What was expected.
    pub reason: String,
}

impl ConfigError {
    fn new(name: &str, reason: impl Into<String>) -> Self {
        ConfigError {
            name: name.to_owned(),
            reason: reason.into(),
        }
    }
}

/// Resolved tracing settings for one process.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceConfig {
    /// `service.name` of the spans.
    pub service_name: String,
    /// Transport.
    pub protocol: Protocol,
    /// The collector endpoint; `None` leaves it to the exporter (`OTEL_EXPORTER_OTLP_*ENDPOINT`
    /// or the protocol's localhost default). For HTTP this is the full URL incl. `/v1/traces`.
    pub endpoint: Option<String>,
    /// Head sampling ratio for traces that start here, in [0, 1].
    pub sample_ratio: f64,
    /// Also write Zipkin's `b3` header (it is always read).
    pub write_b3: bool,
    /// Longest wait between batch exports; `None`: `OTEL_BSP_SCHEDULE_DELAY` or 5 s.
    pub schedule_delay: Option<Duration>,
}

impl TraceConfig {
    /// Defaults: HTTP/protobuf to the exporter's endpoint, every trace sampled, no `b3`.
    pub fn new(service_name: impl Into<String>) -> Self {
        TraceConfig {
            service_name: service_name.into(),
            protocol: Protocol::HttpProtobuf,
            endpoint: None,
            sample_ratio: 1.0,
            write_b3: false,
            schedule_delay: None,
        }
    }

    /// Sets the sampling ratio, checked to be in [0, 1].
    pub fn sample_ratio(mut self, ratio: f64) -> Result<Self, ConfigError> {
        if !(0.0..=1.0).contains(&ratio) {
            return Err(ConfigError::new(
                "sample ratio",
                format!("expected a number in [0, 1], got {ratio}"),
            ));
        }
        self.sample_ratio = ratio;
        Ok(self)
    }

    /// The configuration from the process environment; `Ok(None)` when tracing is off.
    pub fn from_env(default_service: &str) -> Result<Option<Self>, ConfigError> {
        Self::from_vars(default_service, |name| std::env::var(name).ok())
    }

    /// The configuration from the process environment for a process told explicitly to trace
    /// (e.g. by a `--otlp-endpoint` flag): the on/off variables are not consulted, everything
    /// else (service name, protocol, sampler, propagators) is.
    pub fn from_env_forced(default_service: &str) -> Result<Self, ConfigError> {
        resolve(default_service, |name| std::env::var(name).ok(), true)
            .map(|c| c.expect("forced configuration is on"))
    }

    /// [`TraceConfig::from_env`] over any variable lookup (for tests and embedding).
    pub fn from_vars(
        default_service: &str,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, ConfigError> {
        resolve(default_service, var, false)
    }
}

fn resolve(
    default_service: &str,
    var: impl Fn(&str) -> Option<String>,
    force: bool,
) -> Result<Option<TraceConfig>, ConfigError> {
    let get = |name: &str| var(name).filter(|v| !v.trim().is_empty());
    if force {
        // Told to trace: only the settings below matter.
    } else if let Some(disabled) = get("OTEL_SDK_DISABLED") {
        match disabled.trim().to_ascii_lowercase().as_str() {
            "true" => return Ok(None),
            "false" => {}
            other => {
                return Err(ConfigError::new(
                    "OTEL_SDK_DISABLED",
                    format!("expected true or false, got '{other}'"),
                ))
            }
        }
    }
    let endpoint_set = get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()
        || get("OTEL_EXPORTER_OTLP_ENDPOINT").is_some();
    match get("OTEL_TRACES_EXPORTER").as_deref().map(str::trim) {
        _ if force => {}
        None if !endpoint_set => return Ok(None),
        None | Some("otlp") => {}
        Some("none") => return Ok(None),
        Some(other) => {
            return Err(ConfigError::new(
                "OTEL_TRACES_EXPORTER",
                format!("expected otlp or none, got '{other}'"),
            ))
        }
    }
    let mut config =
        TraceConfig::new(get("OTEL_SERVICE_NAME").unwrap_or_else(|| default_service.to_owned()));
    for name in [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ] {
        if let Some(p) = get(name) {
            config.protocol = Protocol::parse(&p).map_err(|r| ConfigError::new(name, r))?;
            break;
        }
    }
    config.sample_ratio =
        sampler_ratio(get("OTEL_TRACES_SAMPLER"), get("OTEL_TRACES_SAMPLER_ARG"))?;
    if let Some(list) = get("OTEL_PROPAGATORS") {
        for p in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match p {
                "tracecontext" | "baggage" | "none" => {}
                "b3" => config.write_b3 = true,
                other => {
                    return Err(ConfigError::new(
                        "OTEL_PROPAGATORS",
                        format!(
                            "'{other}' is not supported; expected tracecontext, b3 (single \
                                 header), baggage or none"
                        ),
                    ))
                }
            }
        }
    }
    Ok(Some(config))
}

fn sampler_ratio(sampler: Option<String>, arg: Option<String>) -> Result<f64, ConfigError> {
    let ratio_arg = || -> Result<f64, ConfigError> {
        match arg.as_deref() {
            None => Ok(1.0),
            Some(a) => a
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|r| (0.0..=1.0).contains(r))
                .ok_or_else(|| {
                    ConfigError::new(
                        "OTEL_TRACES_SAMPLER_ARG",
                        format!("expected a ratio in [0, 1], got '{a}'"),
                    )
                }),
        }
    };
    match sampler.as_deref().map(str::trim) {
        None => Ok(1.0),
        Some("always_on" | "parentbased_always_on") => Ok(1.0),
        Some("always_off" | "parentbased_always_off") => Ok(0.0),
        Some("traceidratio" | "parentbased_traceidratio") => ratio_arg(),
        Some(other) => Err(ConfigError::new(
            "OTEL_TRACES_SAMPLER",
            format!(
                "expected always_on, always_off, traceidratio or their parentbased_ forms, got \
                 '{other}'"
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(vars: &[(&str, &str)]) -> Result<Option<TraceConfig>, ConfigError> {
        TraceConfig::from_vars("svc", |n| {
            vars.iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn off_unless_an_exporter_or_endpoint_is_configured() {
        assert_eq!(resolve(&[]).unwrap(), None);
        let on = resolve(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")])
            .unwrap()
            .unwrap();
        assert_eq!(on.protocol, Protocol::HttpProtobuf);
        assert_eq!(on.service_name, "svc");
        assert_eq!(
            resolve(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "x"),
                ("OTEL_SDK_DISABLED", "true")
            ])
            .unwrap(),
            None
        );
        assert_eq!(
            resolve(&[
                ("OTEL_TRACES_EXPORTER", "none"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "x")
            ])
            .unwrap(),
            None
        );
        assert!(resolve(&[("OTEL_TRACES_EXPORTER", "otlp")])
            .unwrap()
            .is_some());
    }

    #[test]
    fn forced_configuration_still_reads_the_settings() {
        let vars = [
            ("OTEL_SERVICE_NAME", "orders"),
            ("OTEL_SDK_DISABLED", "true"),
        ];
        let c = super::resolve(
            "svc",
            |n| {
                vars.iter()
                    .find(|(k, _)| *k == n)
                    .map(|(_, v)| (*v).to_owned())
            },
            true,
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.service_name, "orders");
    }

    #[test]
    fn reads_protocol_sampler_propagators_and_names_bad_values() {
        let c = resolve(&[
            ("OTEL_TRACES_EXPORTER", "otlp"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.01"),
            ("OTEL_PROPAGATORS", "tracecontext,b3"),
            ("OTEL_SERVICE_NAME", "orders"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(c.protocol, Protocol::Grpc);
        assert_eq!(c.sample_ratio, 0.01);
        assert!(c.write_b3);
        assert_eq!(c.service_name, "orders");
        for (var, value) in [
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_TRACES_SAMPLER", "jaeger_remote"),
            ("OTEL_PROPAGATORS", "b3multi"),
            ("OTEL_TRACES_EXPORTER", "zipkin"),
            ("OTEL_SDK_DISABLED", "yes"),
        ] {
            let err = resolve(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "x"), (var, value)]).unwrap_err();
            assert_eq!(err.name, var, "{err}");
        }
        let err = resolve(&[
            ("OTEL_TRACES_EXPORTER", "otlp"),
            ("OTEL_TRACES_SAMPLER", "traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "1.5"),
        ])
        .unwrap_err();
        assert_eq!(err.name, "OTEL_TRACES_SAMPLER_ARG");
    }
}
