//! The gateway's HTTP API: `POST /new` (one record, the seed's `{"key","body"}`) and
//! `POST /batch` (a JSON array of them), validated strictly and answered in JSON.
//!
//! Validation happens before anything is sent, and every refusal says what was wrong and
//! where (`field`), in the seed gateway's `{"error": ...}` envelope:
//! - 415: the request is not `Content-Type: application/json`;
//! - 413: the request, a `key` or a `body` is larger than its limit, or a batch has too many
//!   records;
//! - 400: the bytes are not JSON (with line and column);
//! - 422: JSON, but not the expected shape: not an object (or array for a batch), a missing
//!   or unknown field, a field of the wrong type, an empty key.
//!
//! A valid record is sent through the [`KeyshiftProducer`] and answered `200
//! {"partition","offset"}` once the broker acknowledged it, or `503 {"error"}` with the
//! producer's reason. With `--no-wait` the answer is `202 {"accepted":true}` as soon as the
//! record is routed and queued; delivery errors are then only counted (the graceful shutdown
//! still flushes every accepted record).
//!
//! A batch is validated whole (one bad item refuses the batch, naming it as `[i].key`), then
//! routed in array order — so records of a key keep the batch's order — and answered `200`
//! with one result per item (`{"partition","offset"}` or `{"error"}`) plus `ok`/`failed`
//! counts; `503` when every item failed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use keyshift_kafka::{KeyshiftProducer, PendingDelivery, ProduceError};
use serde_json::{json, Map, Value};

use super::metrics::{GatewayMetrics, HotKeys};

/// Request limits (all in bytes, except `max_batch`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest key (UTF-8 bytes).
    pub max_key_bytes: usize,
    /// Largest body (UTF-8 bytes).
    pub max_body_bytes: usize,
    /// Largest request body, JSON included.
    pub max_request_bytes: usize,
    /// Most records in one batch.
    pub max_batch: usize,
}

impl Default for Limits {
    fn default() -> Self {
        // The seed gateway limited requests to 1 MB; Kafka's default message.max.bytes is
        // about the same, so a larger body would be refused by the producer anyway.
        Limits {
            max_key_bytes: 1024,
            max_body_bytes: 1_000_000,
            max_request_bytes: 1_048_576,
            max_batch: 1000,
        }
    }
}

/// Everything a request handler needs.
#[derive(Debug)]
pub struct Gateway {
    /// Where records go.
    pub producer: KeyshiftProducer,
    /// Request limits.
    pub limits: Limits,
    /// Answer after the broker's acknowledgement (`true`) or once queued (`false`).
    pub wait_for_ack: bool,
    /// Live instruments.
    pub metrics: GatewayMetrics,
    /// The hottest keys seen.
    pub hot_keys: Arc<HotKeys>,
}

/// The routes `POST /new` and `POST /batch`, plus JSON 404/405 answers for anything else.
pub fn routes(gateway: Arc<Gateway>) -> Router {
    let limit = gateway.limits.max_request_bytes;
    Router::new()
        .route("/new", post(new_record))
        .route("/batch", post(batch))
        .layer(DefaultBodyLimit::max(limit))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "the requested resource could not be found (POST /new, POST /batch, POST \
                 /admin/grow, GET /metrics, GET /healthz)",
            )
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed for this resource (records are sent with POST)",
            )
        })
        .with_state(gateway)
}

/// A refusal: status, message and the field it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    field: Option<String>,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            field: None,
        }
    }

    pub(super) fn field(
        status: StatusCode,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        let field = field.into();
        ApiError {
            status,
            message: format!("field '{field}': {}", message.into()),
            field: Some(field),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.message });
        if let Some(f) = self.field {
            body["field"] = Value::String(f);
        }
        (self.status, Json(body)).into_response()
    }
}

/// One validated record.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    key: String,
    body: String,
}

/// Checks the content type and turns the bytes into JSON.
pub(super) fn parse_json(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Value, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("(not text)"));
    let is_json = content_type.is_some_and(|ct| {
        ct.split(';')
            .next()
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
    });
    if !is_json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "expected Content-Type: application/json, got {}",
                content_type.map_or("none".to_owned(), |c| format!("'{c}'"))
            ),
        ));
    }
    let bytes = body.map_err(|r| {
        let status = r.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                status,
                "request body is larger than the limit (--max-request-bytes)",
            )
        } else {
            ApiError::new(
                status,
                format!("cannot read the request body: {}", r.body_text()),
            )
        }
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "body must not be empty",
        ));
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("body is not valid JSON: {e}"),
        )
    })
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Validates one `{"key","body"}` object; `path` prefixes field names (`[3].`).
fn record(v: Value, path: &str, limits: &Limits) -> Result<Record, ApiError> {
    let Value::Object(mut obj) = v else {
        let what = if path.is_empty() {
            "body"
        } else {
            path.trim_end_matches('.')
        };
        return Err(ApiError::field(
            StatusCode::UNPROCESSABLE_ENTITY,
            what,
            format!(
                "expected an object with string fields \"key\" and \"body\", got {}",
                type_name(&v)
            ),
        ));
    };
    if let Some(unknown) = obj.keys().find(|k| *k != "key" && *k != "body") {
        return Err(ApiError::field(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("{path}{unknown}"),
            "unknown field; expected only \"key\" and \"body\"",
        ));
    }
    let key = string_field(&mut obj, "key", path, limits.max_key_bytes)?;
    if key.is_empty() {
        return Err(ApiError::field(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("{path}key"),
            "must not be empty",
        ));
    }
    let body = string_field(&mut obj, "body", path, limits.max_body_bytes)?;
    Ok(Record { key, body })
}

fn string_field(
    obj: &mut Map<String, Value>,
    name: &str,
    path: &str,
    max_bytes: usize,
) -> Result<String, ApiError> {
    let field = format!("{path}{name}");
    match obj.remove(name) {
        None => Err(ApiError::field(
            StatusCode::UNPROCESSABLE_ENTITY,
            field,
            "missing; expected a string",
        )),
        Some(Value::String(s)) if s.len() > max_bytes => Err(ApiError::field(
            StatusCode::PAYLOAD_TOO_LARGE,
            field,
            format!("{} bytes, at most {max_bytes} allowed", s.len()),
        )),
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(ApiError::field(
            StatusCode::UNPROCESSABLE_ENTITY,
            field,
            format!("expected a string, got {}", type_name(&other)),
        )),
    }
}

/// How long a queue-full producer is given before the record is retried.
const QUEUE_FULL_BACKOFF: Duration = Duration::from_millis(5);

/// Routes and enqueues one record, waiting for room while librdkafka's queue is full, so that
/// records are routed in call order (unlike retrying later, which could overtake).
async fn enqueue(
    producer: &KeyshiftProducer,
    r: &Record,
    trace: &[(String, Vec<u8>)],
) -> Result<PendingDelivery, ProduceError> {
    loop {
        match producer.try_send(r.key.as_bytes(), r.body.as_bytes(), trace.to_vec()) {
            Err(e) if e.is_retryable() => tokio::time::sleep(QUEUE_FULL_BACKOFF).await,
            other => return other,
        }
    }
}

/// The request's trace context headers (`traceparent`, `tracestate`, `b3`) when the producer
/// traces records, so a traced HTTP client's trace continues through Kafka; nothing otherwise.
fn trace_headers(g: &Gateway, headers: &HeaderMap) -> Vec<(String, Vec<u8>)> {
    if !g.producer.is_traced() {
        return Vec::new();
    }
    [
        keyshift_trace::propagation::TRACEPARENT,
        keyshift_trace::propagation::TRACESTATE,
        keyshift_trace::propagation::B3,
    ]
    .into_iter()
    .filter_map(|name| {
        headers
            .get(name)
            .map(|v| (name.to_owned(), v.as_bytes().to_vec()))
    })
    .collect()
}

/// Records one produce outcome in the metrics.
fn account(g: &Gateway, r: &Record, outcome: &Result<keyshift_kafka::Delivery, ProduceError>) {
    match outcome {
        Ok(_) => {
            g.metrics.records.inc();
            g.metrics.bytes.inc_by((r.key.len() + r.body.len()) as u64);
        }
        Err(e) => {
            g.metrics.delivery_errors.inc();
            tracing::warn!(key = %r.key, error = %e, "record not written");
        }
    }
}

/// Queues a record whose answer does not wait: its delivery is followed in a task.
fn follow(g: &Arc<Gateway>, r: Record, pending: PendingDelivery) {
    let g = Arc::clone(g);
    tokio::spawn(async move {
        let outcome = pending.await;
        account(&g, &r, &outcome);
    });
}

/// In-flight gauge guard.
struct InFlight<'a>(&'a GatewayMetrics);

impl<'a> InFlight<'a> {
    fn start(m: &'a GatewayMetrics) -> Self {
        m.in_flight.inc();
        InFlight(m)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.dec();
    }
}

async fn new_record(
    State(g): State<Arc<Gateway>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    answer(&g, "/new", handle_new(&g, &headers, body)).await
}

/// Runs one request's handler, counting it in flight meanwhile, and records its answer (status
/// and duration) under `endpoint`: the bookkeeping every endpoint shares.
async fn answer(
    g: &Gateway,
    endpoint: &'static str,
    handler: impl std::future::Future<Output = Result<Response, ApiError>>,
) -> Response {
    let started = Instant::now();
    let _guard = InFlight::start(&g.metrics);
    let response = handler.await.unwrap_or_else(IntoResponse::into_response);
    g.metrics
        .answered(endpoint, response.status().as_u16(), started);
    response
}

async fn handle_new(
    g: &Arc<Gateway>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let r = record(parse_json(headers, body)?, "", &g.limits)?;
    g.hot_keys.offer(r.key.as_bytes());
    let trace = trace_headers(g, headers);
    let pending = enqueue(&g.producer, &r, &trace).await.map_err(|e| {
        g.metrics.delivery_errors.inc();
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
    })?;
    if !g.wait_for_ack {
        follow(g, r, pending);
        return Ok((StatusCode::ACCEPTED, Json(json!({ "accepted": true }))).into_response());
    }
    let outcome = pending.await;
    account(g, &r, &outcome);
    match outcome {
        Ok(d) => Ok(Json(json!({ "partition": d.partition, "offset": d.offset })).into_response()),
        Err(e) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            e.to_string(),
        )),
    }
}

async fn batch(
    State(g): State<Arc<Gateway>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    answer(&g, "/batch", handle_batch(&g, &headers, body)).await
}

async fn handle_batch(
    g: &Arc<Gateway>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let Value::Array(items) = parse_json(headers, body)? else {
        return Err(ApiError::field(
            StatusCode::UNPROCESSABLE_ENTITY,
            "body",
            "expected a JSON array of {\"key\",\"body\"} objects",
        ));
    };
    if items.len() > g.limits.max_batch {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "batch has {} records, at most {} allowed (--max-batch)",
                items.len(),
                g.limits.max_batch
            ),
        ));
    }
    let records = items
        .into_iter()
        .enumerate()
        .map(|(i, v)| record(v, &format!("[{i}]."), &g.limits))
        .collect::<Result<Vec<_>, _>>()?;
    // Route everything first, in array order, then wait: the batch costs one round trip.
    let mut pending = Vec::with_capacity(records.len());
    let trace = trace_headers(g, headers);
    for r in records {
        g.hot_keys.offer(r.key.as_bytes());
        let p = enqueue(&g.producer, &r, &trace).await;
        if p.is_err() {
            g.metrics.delivery_errors.inc();
        }
        pending.push((r, p));
    }
    if !g.wait_for_ack {
        let mut results = Vec::with_capacity(pending.len());
        let mut ok = 0;
        for (r, p) in pending {
            match p {
                Ok(p) => {
                    follow(g, r, p);
                    ok += 1;
                    results.push(json!({ "accepted": true }));
                }
                Err(e) => results.push(json!({ "error": e.to_string() })),
            }
        }
        let failed = results.len() - ok;
        let status = if ok == 0 && failed > 0 {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::ACCEPTED
        };
        let body = json!({ "results": results, "ok": ok, "failed": failed });
        return Ok((status, Json(body)).into_response());
    }
    let mut results = Vec::with_capacity(pending.len());
    let mut ok = 0;
    for (r, p) in pending {
        let outcome = match p {
            Ok(p) => {
                let o = p.await;
                account(g, &r, &o);
                o
            }
            Err(e) => Err(e),
        };
        results.push(match outcome {
            Ok(d) => {
                ok += 1;
                json!({ "partition": d.partition, "offset": d.offset })
            }
            Err(e) => json!({ "error": e.to_string() }),
        });
    }
    let failed = results.len() - ok;
    let status = if ok == 0 && failed > 0 {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(json!({ "results": results, "ok": ok, "failed": failed })),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(v: Value) -> Result<Record, ApiError> {
        record(
            v,
            "",
            &Limits {
                max_key_bytes: 4,
                max_body_bytes: 8,
                ..Limits::default()
            },
        )
    }

    #[test]
    fn validation_names_the_field_and_picks_the_status() {
        let ok = check(json!({"key": "k", "body": "b"})).unwrap();
        assert_eq!((ok.key.as_str(), ok.body.as_str()), ("k", "b"));
        let cases = [
            (json!([1]), 422, "body"),
            (json!({"body": "b"}), 422, "key"),
            (json!({"key": "k"}), 422, "body"),
            (json!({"key": 5, "body": "b"}), 422, "key"),
            (json!({"key": "k", "body": null}), 422, "body"),
            (json!({"key": "", "body": "b"}), 422, "key"),
            (json!({"key": "k", "body": "b", "x": 1}), 422, "x"),
            (json!({"key": "kkkkk", "body": "b"}), 413, "key"),
            (json!({"key": "k", "body": "bbbbbbbbb"}), 413, "body"),
        ];
        for (v, status, field) in cases {
            let e = check(v.clone()).unwrap_err();
            assert_eq!(e.status.as_u16(), status, "{v}: {e:?}");
            assert_eq!(e.field.as_deref(), Some(field), "{v}: {e:?}");
            assert!(e.message.contains(field), "{v}: {e:?}");
        }
        let e = record(json!({"key": 1}), "[3].", &Limits::default()).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("[3].key"));
    }
}
