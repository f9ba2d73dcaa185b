//! A fake Kubernetes API server for the autoscaler's actuator: it serves only the `scale`
//! subresource of Deployments and StatefulSets (`autoscaling/v1` `Scale`), and checks every
//! request against what the real API server requires — method, path, content type, `Accept`
//! (absent or allowing JSON),
//! bearer token, `fieldManager`, and a merge-patch (or server-side apply) body that sets
//! nothing but `spec.replicas`. Anything else is answered like the API server answers it (a
//! `Status` object with the HTTP code) and recorded as a violation the test asserts is empty.

#![allow(dead_code)] // each test uses a different subset

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::{Json, Router};
use serde_json::{json, Value};

/// The bearer token the fake kubeconfig carries and the server demands.
pub const TOKEN: &str = "keyshift-test-token";

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: String,
    pub content_type: String,
    pub body: Value,
}

#[derive(Debug, Default)]
struct Inner {
    /// (plural, namespace, name) → spec.replicas.
    workloads: HashMap<(String, String, String), i64>,
    seen: Vec<Seen>,
    violations: Vec<String>,
    /// Answer every request with this status (403 to test RBAC errors).
    forced: Option<u16>,
}

/// A running fake API server; dropped with its runtime.
#[derive(Clone)]
pub struct FakeApi {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
}

impl FakeApi {
    /// Starts on a free port inside `rt`.
    pub fn start(rt: &tokio::runtime::Runtime) -> FakeApi {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new()
            .route(
                "/apis/apps/v1/namespaces/{ns}/{plural}/{name}/scale",
                any(scale),
            )
            .fallback(any(unknown))
            .with_state(Arc::clone(&inner));
        rt.spawn(async move { axum::serve(listener, app).await.unwrap() });
        FakeApi { addr, inner }
    }

    /// Adds a workload with `replicas`.
    pub fn add(&self, plural: &str, ns: &str, name: &str, replicas: i64) {
        self.inner
            .lock()
            .unwrap()
            .workloads
            .insert((plural.into(), ns.into(), name.into()), replicas);
    }

    /// A workload's replica count as last set.
    pub fn replicas(&self, plural: &str, ns: &str, name: &str) -> Option<i64> {
        self.inner
            .lock()
            .unwrap()
            .workloads
            .get(&(plural.into(), ns.into(), name.into()))
            .copied()
    }

    /// Answer everything with `code` from now on.
    pub fn force_status(&self, code: u16) {
        self.inner.lock().unwrap().forced = Some(code);
    }

    /// Requests seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.inner.lock().unwrap().seen.clone()
    }

    /// Requests that did not have the shape the API server requires.
    pub fn violations(&self) -> Vec<String> {
        self.inner.lock().unwrap().violations.clone()
    }

    /// Writes a kubeconfig pointing at this server into `dir`.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\ncurrent-context: fake\n\
                 clusters:\n- name: fake\n  cluster:\n    server: http://{}\n\
                 contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: streaming\n\
                 users:\n- name: fake\n  user:\n    token: {TOKEN}\n",
                self.addr
            ),
        )
        .unwrap();
        path
    }
}

/// A `meta/v1` `Status`, as the API server sends with every error.
fn status(code: u16, reason: &str, message: &str) -> Response {
    (
        StatusCode::from_u16(code).unwrap(),
        Json(json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        })),
    )
        .into_response()
}

fn scale_object(ns: &str, name: &str, replicas: i64) -> Value {
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": name,
            "namespace": ns,
            "uid": "8c1f6f62-5b8e-4a57-9e0c-4f0a3c1d2e3f",
            "resourceVersion": "4242",
            "creationTimestamp": "2026-11-25T00:00:00Z",
        },
        "spec": { "replicas": replicas },
        "status": {
            "replicas": replicas,
            "selector": format!("app.kubernetes.io/name={name}"),
        },
    })
}

async fn unknown(
    State(inner): State<Arc<Mutex<Inner>>>,
    method: Method,
    uri: axum::http::Uri,
) -> Response {
    let msg = format!("{method} {uri}: not a scale subresource path");
    inner.lock().unwrap().violations.push(msg.clone());
    status(404, "NotFound", &msg)
}

async fn scale(
    State(inner): State<Arc<Mutex<Inner>>>,
    UrlPath((ns, plural, name)): UrlPath<(String, String, String)>,
    RawQuery(query): RawQuery,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |h: &str| {
        headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let content_type = header("content-type");
    let query = query.unwrap_or_default();
    let mut g = inner.lock().unwrap();
    let parsed = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into()))
    };
    g.seen.push(Seen {
        method: method.to_string(),
        path: format!("/apis/apps/v1/namespaces/{ns}/{plural}/{name}/scale"),
        query: query.clone(),
        content_type: content_type.clone(),
        body: parsed.clone(),
    });
    let mut bad = Vec::new();
    if header("authorization") != format!("Bearer {TOKEN}") {
        bad.push(format!(
            "{method} {plural}/{name}: missing or wrong bearer token"
        ));
    }
    // No Accept means JSON to the API server; one that is given must allow it.
    let accept = header("accept");
    if !(accept.is_empty() || accept.contains("application/json") || accept.contains("*/*")) {
        bad.push(format!(
            "{method} {plural}/{name}: Accept {accept:?} excludes application/json"
        ));
    }
    if plural != "deployments" && plural != "statefulsets" {
        bad.push(format!("{plural}: not a scalable apps/v1 resource"));
    }
    if let Some(code) = g.forced {
        g.violations.extend(bad);
        return status(code, if code == 403 { "Forbidden" } else { "InternalError" }, &format!(
            "{plural}.apps \"{name}\" is forbidden: User \"system:serviceaccount:{ns}:keyshift-autoscale\" cannot {} resource \"{plural}/scale\" in API group \"apps\" in the namespace \"{ns}\"",
            method.as_str().to_lowercase()
        ));
    }
    let key = (plural.clone(), ns.clone(), name.clone());
    let Some(&current) = g.workloads.get(&key) else {
        g.violations.extend(bad);
        return status(
            404,
            "NotFound",
            &format!("{plural}.apps \"{name}\" not found"),
        );
    };
    match method {
        Method::GET => {
            if !body.is_empty() {
                bad.push("GET with a body".to_owned());
            }
            g.violations.extend(bad);
            Json(scale_object(&ns, &name, current)).into_response()
        }
        Method::PATCH => {
            let replicas = match content_type.as_str() {
                "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
                    merge_patch_replicas(&parsed, &mut bad)
                }
                "application/apply-patch+yaml" => {
                    if !query.contains("fieldManager=") {
                        bad.push("server-side apply without fieldManager".to_owned());
                    }
                    apply_patch_replicas(&parsed, &mut bad)
                }
                other => {
                    bad.push(format!("PATCH with unsupported content type {other:?}"));
                    None
                }
            };
            if !query.contains("fieldManager=keyshift-autoscale") {
                bad.push(format!(
                    "PATCH without fieldManager=keyshift-autoscale (query {query:?})"
                ));
            }
            match replicas {
                Some(r) if bad.is_empty() => {
                    g.workloads.insert(key, r);
                    Json(scale_object(&ns, &name, r)).into_response()
                }
                _ => {
                    let msg = bad.join("; ");
                    g.violations.extend(bad);
                    status(415, "UnsupportedMediaType", &msg)
                }
            }
        }
        other => {
            bad.push(format!("method {other} is not used for scaling"));
            g.violations.extend(bad);
            status(405, "MethodNotAllowed", "method not allowed")
        }
    }
}

/// `{"spec":{"replicas":N}}` and nothing else.
fn merge_patch_replicas(body: &Value, bad: &mut Vec<String>) -> Option<i64> {
    let Some(obj) = body.as_object() else {
        bad.push(format!("merge patch is not a JSON object: {body}"));
        return None;
    };
    let extra: Vec<_> = obj.keys().filter(|k| *k != "spec").collect();
    if !extra.is_empty() {
        bad.push(format!("merge patch touches more than spec: {extra:?}"));
    }
    replicas_of(obj.get("spec"), bad)
}

/// A server-side apply of an `autoscaling/v1` `Scale` with `spec.replicas`.
fn apply_patch_replicas(body: &Value, bad: &mut Vec<String>) -> Option<i64> {
    if body["apiVersion"] != "autoscaling/v1" || body["kind"] != "Scale" {
        bad.push(format!(
            "apply patch is not an autoscaling/v1 Scale: {body}"
        ));
    }
    replicas_of(body.get("spec"), bad)
}

fn replicas_of(spec: Option<&Value>, bad: &mut Vec<String>) -> Option<i64> {
    let Some(spec) = spec.and_then(Value::as_object) else {
        bad.push("patch has no spec object".to_owned());
        return None;
    };
    if spec.len() != 1 {
        bad.push(format!("spec sets more than replicas: {spec:?}"));
    }
    match spec.get("replicas").and_then(Value::as_i64) {
        Some(r) if r >= 0 => Some(r),
        _ => {
            bad.push(format!(
                "spec.replicas is not a non-negative integer: {spec:?}"
            ));
            None
        }
    }
}
