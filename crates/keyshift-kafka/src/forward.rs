//! Records handed to an application in any language over HTTP: `keyshift worker --forward URL`.
//!
//! Why: consumers are written in Java, Python, Go or Node and wait on databases; the ordered
//! consumer keeps per-key order across migrations and commits only processed prefixes, so the
//! application only has to answer one HTTP request per record.
//!
//! How: [`HttpForward`] is an [`AsyncRecordHandler`], so it runs on the consumer's slots — up to
//! `concurrency` requests in flight, never two for one key. Each record is one HTTP/1.1
//! `POST` whose body is the JSON object of [`record_json`]; a 2xx answer means the record is
//! done; any other status, a connection failure or the timeout is the record's error (logged
//! and counted by the consumer, with the status and the start of the answer's body). reqwest's
//! pool keeps connections alive between requests, so a record costs no TCP handshake.
//!
//! With per-key state ([`WithState`](crate::state::WithState), `worker --state`) the body also
//! carries the key's state (see [`put_state`]) and a 2xx answer's JSON body may set it
//! (see [`state_change`]).

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde_json::{Map, Value};

use crate::consumer::{AsyncRecordHandler, DeliveredRecord, HandlerError};
use crate::state::{StateChange, StatefulHandler};

/// Longest piece of a failed answer's body quoted in the record's error.
const QUOTED_BODY: usize = 200;

/// Why a forwarder cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The URL does not parse or is not http(s).
    #[error("--forward {url}: {reason}")]
    Url {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The HTTP client could not be built (TLS backend initialisation).
    #[error("cannot build the HTTP client for --forward: {0}")]
    Client(#[source] reqwest::Error),
}

/// Posts each record to one URL; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct HttpForward {
    client: reqwest::Client,
    url: reqwest::Url,
    topic: String,
}

impl HttpForward {
    /// A forwarder of `topic`'s records to `url` (http or https), each request bounded by
    /// `timeout` (connecting included).
    pub fn new(url: &str, topic: &str, timeout: Duration) -> Result<Self, ForwardError> {
        let parsed = reqwest::Url::parse(url).map_err(|e| ForwardError::Url {
            url: url.to_owned(),
            reason: e.to_string(),
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(ForwardError::Url {
                url: url.to_owned(),
                reason: format!(
                    "expected an http:// or https:// URL, got {}://",
                    parsed.scheme()
                ),
            });
        }
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            // Idle connections are kept for the next records; the pool grows to the number
            // of requests in flight (the consumer's concurrency).
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .map_err(ForwardError::Client)?;
        Ok(Self {
            client,
            url: parsed,
            topic: topic.to_owned(),
        })
    }
}

impl HttpForward {
    /// Posts `record` (with its key's `state` when state is on) and reads what the answer does
    /// to the state (always [`StateChange::Keep`] without state).
    fn post(
        &self,
        record: DeliveredRecord,
        state: Option<Option<Vec<u8>>>,
    ) -> impl std::future::Future<Output = Result<StateChange, HandlerError>> + Send + 'static {
        let stateful = state.is_some();
        let mut body = record_json(&self.topic, &record);
        if let Some(state) = state {
            put_state(&mut body, state.as_deref());
        }
        let request = self.client.post(self.url.clone()).json(&body);
        let url = self.url.clone();
        async move {
            let answer = request
                .send()
                .await
                .map_err(|e| format!("POST {url}: {}", error_chain(&e)))?;
            let status = answer.status();
            let text = answer.bytes().await;
            if status.is_success() {
                if !stateful {
                    return Ok(StateChange::Keep);
                }
                let text = text.map_err(|e| format!("POST {url}: reading the answer: {e}"))?;
                if text.iter().all(u8::is_ascii_whitespace) {
                    return Ok(StateChange::Keep);
                }
                let answer: Value = serde_json::from_slice(&text).map_err(|e| {
                    format!("POST {url} answered {status} with a body that is not JSON ({e}); with state on, answer nothing or {{\"state\": ...}}")
                })?;
                return state_change(&answer)
                    .map_err(|e| format!("POST {url} answered {status}: {e}").into());
            }
            let text = text.unwrap_or_default();
            let quoted: String = String::from_utf8_lossy(&text)
                .chars()
                .take(QUOTED_BODY)
                .collect();
            Err(format!("POST {url} answered {status}: {quoted}").into())
        }
    }
}

impl AsyncRecordHandler for HttpForward {
    fn handle(
        &self,
        record: DeliveredRecord,
    ) -> impl std::future::Future<Output = Result<(), HandlerError>> + Send + 'static {
        let post = self.post(record, None);
        async move { post.await.map(|_| ()) }
    }
}

impl StatefulHandler for HttpForward {
    fn handle(
        &self,
        record: DeliveredRecord,
        state: Option<Vec<u8>>,
    ) -> impl std::future::Future<Output = Result<StateChange, HandlerError>> + Send + 'static {
        self.post(record, Some(state))
    }
}

/// Adds a key's state to a record's JSON object — an interface scripts depend on:
/// `"state": "<UTF-8 text>"`, `"state": null` when the key has none, or
/// `"state_base64": "<standard base64>"` in place of `"state"` for bytes that are not UTF-8.
pub fn put_state(body: &mut Value, state: Option<&[u8]>) {
    if let Value::Object(out) = body {
        match state {
            None => {
                out.insert("state".into(), Value::Null);
            }
            Some(bytes) => put_bytes(out, "state", bytes),
        }
    }
}

/// What an answer object does to its key's state — an interface scripts depend on: no
/// `"state"` (nor `"state_base64"`) keeps it, `"state": null` deletes it, `"state": "text"` or
/// `"state_base64": "..."` replaces it. Anything else is an error naming the field.
pub fn state_change(answer: &Value) -> Result<StateChange, String> {
    match (answer.get("state"), answer.get("state_base64")) {
        (None, None) => Ok(StateChange::Keep),
        (Some(_), Some(_)) => Err("the answer has both \"state\" and \"state_base64\"".into()),
        (Some(Value::Null), None) => Ok(StateChange::Delete),
        (Some(Value::String(text)), None) => Ok(StateChange::Set(text.as_bytes().to_vec())),
        (Some(other), None) => Err(format!("\"state\" must be a string or null, got {other}")),
        (None, Some(Value::String(b64))) => BASE64
            .decode(b64)
            .map(StateChange::Set)
            .map_err(|e| format!("\"state_base64\" is not standard base64: {e}")),
        (None, Some(other)) => Err(format!("\"state_base64\" must be a string, got {other}")),
    }
}

/// reqwest's error with its causes ("error sending request: connection refused").
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The JSON body of a forwarded record — an interface scripts depend on:
///
/// ```json
/// {"topic": "orders", "partition": 3, "offset": 1042, "timestamp_ms": 1764806400000,
///  "key": "customer-7", "value": "{\"total\": 12}", "headers": {"traceparent": "00-…"}}
/// ```
///
/// `key` and `value` are UTF-8 strings; bytes that are not UTF-8 come as `key_base64` /
/// `value_base64` (standard alphabet, padded) in their place. A record without a key has
/// `"key": null`, one without a timestamp `"timestamp_ms": null`. `headers` maps each name to
/// its value (`null` for a header without one; the last wins when a name repeats); values that
/// are not UTF-8 — keyshift's own binary `keyshift-route` header, say — are in
/// `headers_base64` instead, so `headers` always holds strings.
pub fn record_json(topic: &str, record: &DeliveredRecord) -> Value {
    let mut out = Map::new();
    out.insert("topic".into(), topic.into());
    out.insert("partition".into(), record.partition.into());
    out.insert("offset".into(), record.offset.into());
    out.insert(
        "timestamp_ms".into(),
        record.timestamp_ms.map_or(Value::Null, Value::from),
    );
    match &record.key {
        None => {
            out.insert("key".into(), Value::Null);
        }
        Some(key) => put_bytes(&mut out, "key", key),
    }
    put_bytes(&mut out, "value", &record.value);
    let mut headers = Map::new();
    let mut binary = Map::new();
    for (name, value) in &record.headers {
        match value {
            None => {
                binary.remove(name);
                headers.insert(name.clone(), Value::Null);
            }
            Some(v) => match std::str::from_utf8(v) {
                Ok(text) => {
                    binary.remove(name);
                    headers.insert(name.clone(), text.into());
                }
                Err(_) => {
                    headers.remove(name);
                    binary.insert(name.clone(), BASE64.encode(v).into());
                }
            },
        }
    }
    out.insert("headers".into(), Value::Object(headers));
    if !binary.is_empty() {
        out.insert("headers_base64".into(), Value::Object(binary));
    }
    Value::Object(out)
}

/// `name` as a string when the bytes are UTF-8, else `name_base64`.
fn put_bytes(out: &mut Map<String, Value>, name: &str, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(text) => out.insert(name.into(), text.into()),
        Err(_) => out.insert(format!("{name}_base64"), BASE64.encode(bytes).into()),
    };
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn record(
        key: Option<&[u8]>,
        value: &[u8],
        headers: Vec<(&str, Option<&[u8]>)>,
    ) -> DeliveredRecord {
        DeliveredRecord {
            partition: 3,
            offset: 1042,
            key: key.map(<[u8]>::to_vec),
            value: value.to_vec(),
            headers: headers
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.map(<[u8]>::to_vec)))
                .collect(),
            timestamp_ms: Some(1_764_806_400_000),
            route: None,
            parked: false,
            order_exception: false,
            park_time: Duration::ZERO,
            fetched_at: Instant::now(),
            assignment: 1,
            unordered: false,
            probe: None,
            verdict: None,
        }
    }

    #[test]
    fn a_text_record_is_plain_json() {
        let r = record(
            Some(b"customer-7"),
            br#"{"total": 12}"#,
            vec![("traceparent", Some(b"00-abc")), ("empty", None)],
        );
        assert_eq!(
            record_json("orders", &r),
            serde_json::json!({
                "topic": "orders", "partition": 3, "offset": 1042,
                "timestamp_ms": 1_764_806_400_000_i64,
                "key": "customer-7", "value": "{\"total\": 12}",
                "headers": {"traceparent": "00-abc", "empty": null}
            })
        );
    }

    #[test]
    fn bytes_that_are_not_utf8_come_as_base64_in_their_place() {
        let r = record(
            Some(&[0xff, 0x00]),
            &[0xc3],
            vec![
                ("keyshift-route", Some(&[1, 3, 7, 0xac, 2])),
                ("a", Some(&[0x80])),
            ],
        );
        let json = record_json("t", &r);
        assert_eq!(json["key_base64"], "/wA=");
        assert_eq!(json["value_base64"], "ww==");
        assert!(json.get("key").is_none() && json.get("value").is_none());
        assert_eq!(json["headers"], serde_json::json!({}));
        assert_eq!(json["headers_base64"]["keyshift-route"], "AQMHrAI=");
        assert_eq!(json["headers_base64"]["a"], "gA==");
    }

    #[test]
    fn no_key_and_no_timestamp_are_null_and_the_last_header_wins() {
        let mut r = record(None, b"", vec![("h", Some(&[0xff])), ("h", Some(b"text"))]);
        r.timestamp_ms = None;
        let json = record_json("t", &r);
        assert_eq!(json["key"], Value::Null);
        assert_eq!(json["timestamp_ms"], Value::Null);
        assert_eq!(json["value"], "");
        assert_eq!(json["headers"], serde_json::json!({"h": "text"}));
        assert!(json.get("headers_base64").is_none());
    }

    #[test]
    fn state_goes_in_as_text_null_or_base64_and_answers_say_keep_set_or_delete() {
        let mut body = serde_json::json!({"id": 1});
        put_state(&mut body, Some(b"41"));
        assert_eq!(body["state"], "41");
        put_state(&mut body, None);
        assert_eq!(body["state"], Value::Null);
        let mut binary = serde_json::json!({});
        put_state(&mut binary, Some(&[0xff]));
        assert_eq!(binary["state_base64"], "/w==");
        assert!(binary.get("state").is_none());

        let change = |v: Value| state_change(&v);
        assert_eq!(change(serde_json::json!({"id": 1})), Ok(StateChange::Keep));
        assert_eq!(
            change(serde_json::json!({"state": null})),
            Ok(StateChange::Delete)
        );
        assert_eq!(
            change(serde_json::json!({"state": "42"})),
            Ok(StateChange::Set(b"42".to_vec()))
        );
        assert_eq!(
            change(serde_json::json!({"state_base64": "/w=="})),
            Ok(StateChange::Set(vec![0xff]))
        );
        for bad in [
            serde_json::json!({"state": 42}),
            serde_json::json!({"state_base64": "!!"}),
            serde_json::json!({"state": "a", "state_base64": "YQ=="}),
        ] {
            assert!(change(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_url_that_is_not_http_is_refused() {
        let err = HttpForward::new("ftp://x/records", "t", Duration::from_secs(1)).unwrap_err();
        assert!(
            err.to_string()
                .contains("expected an http:// or https:// URL"),
            "{err}"
        );
        let err = HttpForward::new("not a url", "t", Duration::from_secs(1)).unwrap_err();
        assert!(err.to_string().starts_with("--forward not a url:"), "{err}");
    }
}
