//! The gateway's operator endpoint `POST /admin/grow {"partitions": M}`: home keys on M
//! partitions of the topic from now on, keeping per-key order through one epoch fence per
//! partition in use (`KeyshiftProducer::grow`). `keyshift expand` calls it after adding the
//! partitions; it answers once the growth completed:
//! `200 {"from","to","epoch","fences","barriers","held_keys","held_records","took_ms"}`
//! (`keyshift_kafka::GrowthReport`).
//! Refusals name the reason: `422` for a body that is not `{"partitions": <integer>}`, `409`
//! when the producer cannot grow (not more partitions than in use, fewer in the topic, a
//! growth of its own already running). With coordinated routes any replica may be asked: it
//! writes the want to the control log and answers once the replicas grew together (the
//! report's held counts and fences are that replica's, its barriers the epoch's).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use keyshift_kafka::{GrowthReport, KeyshiftProducer};
use serde_json::Value;

use super::api::{parse_json, ApiError};

/// The route `POST /admin/grow`.
pub fn routes(producer: KeyshiftProducer) -> Router {
    Router::new()
        .route("/admin/grow", post(grow))
        .with_state(Arc::new(producer))
}

async fn grow(
    State(producer): State<Arc<KeyshiftProducer>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match handle(&producer, &headers, body).await {
        Ok(r) => Json(r).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn handle(
    producer: &KeyshiftProducer,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<GrowthReport, ApiError> {
    let value = parse_json(headers, body)?;
    let to = requested_partitions(&value)?;
    producer
        .grow(to)
        .await
        .map_err(|e| ApiError::new(StatusCode::CONFLICT, e.to_string()))
}

/// `{"partitions": M}` with M a positive 32-bit integer, and nothing else.
fn requested_partitions(value: &Value) -> Result<u32, ApiError> {
    let unprocessable = |field: &str, msg: &str| {
        ApiError::field(
            StatusCode::UNPROCESSABLE_ENTITY,
            field.to_owned(),
            msg.to_owned(),
        )
    };
    let Some(obj) = value.as_object() else {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "expected a JSON object {\"partitions\": <count>}",
        ));
    };
    if let Some(other) = obj.keys().find(|k| *k != "partitions") {
        return Err(unprocessable(
            other,
            "unknown field (expected only 'partitions')",
        ));
    }
    obj.get("partitions")
        .ok_or_else(|| unprocessable("partitions", "missing"))?
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .filter(|&n| n > 0)
        .ok_or_else(|| unprocessable("partitions", "must be a positive integer"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_a_positive_partition_count_is_accepted() {
        assert_eq!(
            requested_partitions(&json!({"partitions": 16})).ok(),
            Some(16)
        );
        for bad in [
            json!([16]),
            json!({}),
            json!({"partitions": 0}),
            json!({"partitions": -1}),
            json!({"partitions": "16"}),
            json!({"partitions": 16, "force": true}),
            json!({"partitions": 5_000_000_000u64}),
        ] {
            assert!(requested_partitions(&bad).is_err(), "{bad}");
        }
    }
}
