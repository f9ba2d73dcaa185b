//! The broker's own explanation of a failure, kept for the error a command prints.
//!
//! Why: when a SASL login fails, a request fails with librdkafka's generic "Broker transport
//! failure"; the reason — "SASL authentication error: SASL SCRAM authentication failed: broker
//! responded with invalid-proof" — arrives separately, through the client's error callback.
//! [`ErrorReporting`] is a client context that logs it (as the default one does) and keeps the
//! last one, so a command can say why it could not reach the cluster. librdkafka never puts a
//! password in these reasons.
//!
//! How: use it as the context of a `BaseConsumer`; after a failed request, [`drain`] serves
//! the queued callbacks and [`ErrorReporting::take_last`] returns the latest reason and forgets
//! it, so a later failure (a long-lived client: `lag --watch`, `--serve`) never shows a stale
//! one. [`check_reachable`] does all of that once, for a command that should fail at start
//! with the broker's reason rather than later with a timeout.

use std::sync::Mutex;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::ClientContext;

use crate::config::ClientSettings;

/// A client context that remembers the last error librdkafka reported; see the module docs.
#[derive(Debug, Default)]
pub struct ErrorReporting {
    last: Mutex<Option<String>>,
}

impl ErrorReporting {
    /// The last error librdkafka reported for this client since the previous call, if any.
    pub fn take_last(&self) -> Option<String> {
        crate::lock(&self.last).take()
    }
}

impl ClientContext for ErrorReporting {
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(%error, reason, "librdkafka error");
        *crate::lock(&self.last) = Some(reason.to_owned());
    }
}

impl ConsumerContext for ErrorReporting {}

/// Serves `consumer`'s queued callbacks (errors among them) for up to `wait`.
pub fn drain(consumer: &BaseConsumer<ErrorReporting>, wait: Duration) {
    let until = std::time::Instant::now() + wait;
    while crate::lock(&consumer.context().last).is_none() && std::time::Instant::now() < until {
        let _ = consumer.poll(Duration::from_millis(20));
    }
}

/// Reads the cluster's metadata once with `settings`; on failure, the error names the broker's
/// reason when it gave one (a refused SASL login names its mechanism), else librdkafka's error.
pub fn check_reachable(settings: &ClientSettings, timeout: Duration) -> Result<(), String> {
    let probe: BaseConsumer<ErrorReporting> = settings
        .admin_config()
        .create_with_context(ErrorReporting::default())
        .map_err(|e| format!("cannot create a client: {e}"))?;
    match probe.fetch_metadata(None, timeout) {
        Ok(_) => Ok(()),
        Err(e) => {
            drain(&probe, Duration::from_millis(500));
            let reason = probe.context().take_last().unwrap_or_else(|| e.to_string());
            // librdkafka's reason says "SCRAM", not which one: name the configured mechanism.
            let mechanism = settings
                .passthrough()
                .iter()
                .rev()
                .find(|p| matches!(p.key(), "sasl.mechanism" | "sasl.mechanisms"))
                .map(|p| format!(" with SASL mechanism {}", p.value()))
                .unwrap_or_default();
            Err(format!(
                "cannot reach the cluster at {}{mechanism}: {reason}",
                settings.bootstrap_servers()
            ))
        }
    }
}
