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
//! one.

use std::sync::Mutex;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::ClientContext;

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
