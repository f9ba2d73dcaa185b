//! The producer's per-record tracing: the `send` span and the SEND/ACK trace events.
//!
//! [`RecordTrace::start`] runs before the routing decision (so the span covers the wait
//! behind a fence too) and writes the trace headers into the record; the record's
//! [`super::PendingDelivery`] ends it when the broker answers. With tracing and events both
//! off it returns `None` after two branches, and nothing else happens.

use std::time::SystemTime;

use keyshift_trace::events::{TraceEvent, CORRELATION_ID_HEADER};
use keyshift_trace::SendSpan;

use super::engine::Inner;
use super::{Delivery, ProduceError};
use crate::trace_events::{unix_nanos, TraceEventSink};

/// What one record carries until its acknowledgement.
pub(super) struct RecordTrace {
    span: Option<SendSpan>,
    /// The sink, the correlation id, the topic and client id for the ACK event.
    event: Option<(TraceEventSink, String, String, String)>,
    /// When the send started (wall clock, ns), the SEND event's date.
    started: i64,
}

impl RecordTrace {
    /// Starts tracing one record about to be sent; `None` when tracing and events are off.
    pub fn start(
        inner: &Inner,
        key: &[u8],
        headers: &mut Vec<(String, Vec<u8>)>,
    ) -> Option<Box<RecordTrace>> {
        if inner.tracing.is_none() && inner.events.is_none() {
            return None;
        }
        let span = inner
            .tracing
            .as_ref()
            .map(|t| t.start_send(&inner.topic, key, &inner.client_id, headers));
        let event = inner.events.as_ref().map(|sink| {
            // Keep a correlation id the caller set (a record forwarded from another traced
            // client), else mint one.
            let existing = headers
                .iter()
                .find(|(k, _)| k == CORRELATION_ID_HEADER)
                .and_then(|(_, v)| String::from_utf8(v.clone()).ok());
            let id = existing.unwrap_or_else(|| {
                let id = uuid::Uuid::new_v4().to_string();
                headers.push((CORRELATION_ID_HEADER.to_owned(), id.clone().into_bytes()));
                id
            });
            (
                sink.clone(),
                id,
                inner.topic.clone(),
                inner.client_id.clone(),
            )
        });
        Some(Box::new(RecordTrace {
            span,
            event,
            started: unix_nanos(SystemTime::now()),
        }))
    }

    /// The producer accepted the record: its SEND event goes out now (dated when the send
    /// started), so a record refused with `QueueFull` and retried is not reported twice.
    pub fn accepted(&self) {
        if let Some((sink, id, topic, client_id)) = &self.event {
            sink.emit(&TraceEvent::send(topic, id, client_id, self.started));
        }
    }

    /// The broker acknowledged the record.
    pub fn acked(self, delivery: &Delivery) {
        if let Some(span) = self.span {
            span.acked(delivery.partition, delivery.offset, delivery.fenced_wait);
        }
        if let Some((sink, id, topic, client_id)) = self.event {
            sink.emit(&TraceEvent::ack(
                &topic,
                i32::try_from(delivery.partition).unwrap_or(i32::MAX),
                delivery.offset,
                Some(&id),
                &client_id,
                unix_nanos(SystemTime::now()),
            ));
        }
    }

    /// The record was not written (no ACK event, like the interceptor on an error).
    pub fn failed(self, err: &ProduceError) {
        if let Some(span) = self.span {
            span.failed(err);
        }
    }
}
