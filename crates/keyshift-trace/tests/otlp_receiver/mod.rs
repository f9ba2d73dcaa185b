//! A minimal OTLP/HTTP trace receiver for tests: a real TCP listener speaking HTTP/1.1 that
//! decodes each `POST /v1/traces` body as the real `ExportTraceServiceRequest` protobuf
//! (the `opentelemetry-proto` types) and keeps the spans with their `service.name`.
//! Also helpers to read spans and attributes back.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

/// A received span and the `service.name` of its resource.
#[derive(Debug, Clone)]
pub struct Received {
    pub service: String,
    pub span: Span,
}

/// Everything received so far, shared with the server threads.
#[derive(Clone, Default)]
pub struct Spans(Arc<Mutex<Vec<Received>>>);

impl Spans {
    /// Adds every span of one decoded export request.
    pub fn add(&self, request: ExportTraceServiceRequest) {
        let mut all = self.0.lock().unwrap();
        for rs in request.resource_spans {
            let service = rs
                .resource
                .as_ref()
                .and_then(|r| string_attr(&r.attributes, "service.name"))
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for span in ss.spans {
                    all.push(Received {
                        service: service.clone(),
                        span,
                    });
                }
            }
        }
    }

    pub fn snapshot(&self) -> Vec<Received> {
        self.0.lock().unwrap().clone()
    }

    /// Waits (bounded) until `done` holds over the spans received; returns them.
    pub fn wait_for(&self, what: &str, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let spans = self.snapshot();
            if done(&spans) {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; received: {:#?}",
                spans
                    .iter()
                    .map(|r| (&r.service, &r.span.name))
                    .collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Serves OTLP/HTTP on a free loopback port; returns the traces URL and the span store.
pub fn start_http() -> (String, Spans) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the OTLP/HTTP receiver");
    let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
    let spans = Spans::default();
    let store = spans.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let store = store.clone();
            std::thread::spawn(move || serve(conn, &store));
        }
    });
    (url, spans)
}

/// One keep-alive connection: request after request until the client closes it.
fn serve(conn: TcpStream, store: &Spans) {
    let mut writer = conn.try_clone().expect("clone stream");
    let mut reader = BufReader::new(conn);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0usize;
        let mut content_type = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                match name.trim().to_ascii_lowercase().as_str() {
                    "content-length" => length = value.trim().parse().expect("content-length"),
                    "content-type" => content_type = value.trim().to_owned(),
                    _ => {}
                }
            }
        }
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body).expect("request body");
        let ok = request_line.starts_with("POST /v1/traces ")
            && content_type == "application/x-protobuf";
        let status = if ok {
            let request =
                ExportTraceServiceRequest::decode(body.as_slice()).expect("a valid OTLP protobuf");
            store.add(request);
            "200 OK"
        } else {
            "400 Bad Request"
        };
        let answer = ExportTraceServiceResponse::default().encode_to_vec();
        let _ = write!(
            writer,
            "HTTP/1.1 {status}\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\n\r\n",
            answer.len()
        );
        let _ = writer.write_all(&answer);
        let _ = writer.flush();
    }
}

/// The value of attribute `key` as text (strings as is, ints in decimal, bools as true/false).
pub fn attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    let value = attrs
        .iter()
        .find(|kv| kv.key == key)?
        .value
        .as_ref()?
        .value
        .as_ref()?;
    Some(match value {
        Value::StringValue(s) => s.clone(),
        Value::IntValue(i) => i.to_string(),
        Value::BoolValue(b) => b.to_string(),
        Value::DoubleValue(d) => d.to_string(),
        other => format!("{other:?}"),
    })
}

/// The value of a string attribute.
pub fn string_attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    match attrs
        .iter()
        .find(|kv| kv.key == key)?
        .value
        .as_ref()?
        .value
        .as_ref()?
    {
        Value::StringValue(s) => Some(s.clone()),
        _ => None,
    }
}

/// The value of an integer attribute.
pub fn int_attr(attrs: &[KeyValue], key: &str) -> Option<i64> {
    match attrs
        .iter()
        .find(|kv| kv.key == key)?
        .value
        .as_ref()?
        .value
        .as_ref()?
    {
        Value::IntValue(i) => Some(*i),
        _ => None,
    }
}

/// Lowercase hex of an id.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
