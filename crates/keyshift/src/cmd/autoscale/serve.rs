//! `--serve`: the autoscaler's state over HTTP, for whoever acts on it.
//!
//! - `GET /api/v1/scale`: one JSON object (a [`ScaleStatus`]) with the desired replica count,
//!   the lag it was computed from and the decision's reason. KEDA's `metrics-api` scaler reads
//!   `desiredReplicas` from it (`valueLocation: desiredReplicas`, `targetValue: "1"`, metric
//!   type `AverageValue`, so the HPA KEDA creates computes exactly ceil(desired / 1)). While
//!   the lag cannot be read (broker outage) it answers `503` with the error, so that KEDA falls
//!   back (its `fallback` setting) instead of acting on a stale number.
//! - `GET /metrics`: the same as Prometheus gauges (`keyshift_autoscale_desired_replicas` and
//!   friends, labelled with the group), for an HPA `External` metric through
//!   prometheus-adapter, plus counters of evaluations, scale changes and errors, and
//!   `keyshift_autoscale_kafka_up` (0 during a broker outage, back to 1 without a restart).
//! - `GET /healthz`: liveness.

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use serde::Serialize;

/// The path KEDA's metrics-api scaler polls.
pub const SCALE_PATH: &str = "/api/v1/scale";

/// The last evaluation, as `GET /api/v1/scale` serves it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScaleStatus {
    /// The consumer group.
    pub group: String,
    /// `hpa` or `predictive`.
    pub mode: &'static str,
    /// The replica count the policy wants now.
    pub desired_replicas: u32,
    /// The replica count it started from.
    pub current_replicas: u32,
    /// Whether this evaluation changed the count.
    pub changed: bool,
    /// Why (the policy's reason, human-readable).
    pub reason: String,
    /// Total lag of the group over the scaled topics, in records.
    pub lag_records: u64,
    /// The largest per-partition lag in seconds.
    pub lag_seconds: f64,
    /// Records produced per second to the scaled topics.
    pub production_rate: f64,
    /// Records consumed (committed) per second by the group.
    pub consumption_rate: f64,
    /// Partitions of the scaled topics: the ceiling on useful replicas.
    pub partitions: u32,
    /// When it was evaluated, seconds since the Unix epoch.
    pub evaluated_at: f64,
}

/// Counters since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Policy evaluations.
    pub evaluations: u64,
    /// Evaluations that raised the count.
    pub scale_ups: u64,
    /// Evaluations that lowered it.
    pub scale_downs: u64,
    /// Lag collections that failed (broker unreachable, group gone).
    pub collect_errors: u64,
    /// Actuator calls that failed (Kubernetes API errors).
    pub actuator_errors: u64,
}

#[derive(Debug, Default)]
struct Inner {
    last: Option<ScaleStatus>,
    /// The last collection's error, cleared by the next success.
    kafka_error: Option<String>,
    counts: Counts,
}

/// State shared between the evaluation loop and the HTTP handlers. Clones share it.
#[derive(Debug, Clone)]
pub struct Shared {
    group: String,
    inner: Arc<Mutex<Inner>>,
}

impl Shared {
    /// Empty state for `group`.
    pub fn new(group: &str) -> Self {
        Shared {
            group: group.to_owned(),
            inner: Arc::new(Mutex::new(Inner::default())),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic elsewhere cannot leave these plain values half-updated in a harmful way.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records an evaluation.
    pub fn evaluated(&self, status: ScaleStatus) {
        let mut g = self.lock();
        g.counts.evaluations += 1;
        if status.desired_replicas > status.current_replicas {
            g.counts.scale_ups += 1;
        } else if status.desired_replicas < status.current_replicas {
            g.counts.scale_downs += 1;
        }
        g.kafka_error = None;
        g.last = Some(status);
    }

    /// Records a failed lag collection.
    pub fn collect_failed(&self, error: String) {
        let mut g = self.lock();
        g.counts.collect_errors += 1;
        g.kafka_error = Some(error);
    }

    /// Records a failed actuator call.
    pub fn actuator_failed(&self) {
        self.lock().counts.actuator_errors += 1;
    }
}

/// `GET /api/v1/scale`; merge with [`crate::http::routes`].
pub fn routes(shared: Shared) -> Router {
    Router::new()
        .route(SCALE_PATH, get(scale))
        .with_state(shared)
}

#[derive(Serialize)]
struct ErrorBody {
    error: String,
}

async fn scale(State(shared): State<Shared>) -> Response {
    let g = shared.lock();
    match (&g.kafka_error, &g.last) {
        (Some(e), _) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(ErrorBody {
                error: format!("lag of group '{}' unavailable: {e}", shared.group),
            }),
        )
            .into_response(),
        (None, Some(s)) => Json(s.clone()).into_response(),
        (None, None) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(ErrorBody {
                error: "no evaluation yet".to_owned(),
            }),
        )
            .into_response(),
    }
}

/// Exports [`Shared`] at scrape time.
#[derive(Debug)]
pub struct AutoscaleCollector(pub Shared);

type Labels = [(&'static str, String); 1];

fn gauge_f(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    labels: &Labels,
    v: f64,
) -> std::fmt::Result {
    let g = ConstGauge::new(v);
    let mut d = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
    g.encode(d.encode_family(labels)?)
}

fn counter(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    labels: &Labels,
    v: u64,
) -> std::fmt::Result {
    let c = ConstCounter::new(v);
    let mut d = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    c.encode(d.encode_family(labels)?)
}

impl Collector for AutoscaleCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let g = self.0.lock();
        let labels: Labels = [("group", self.0.group.clone())];
        let e = &mut e;
        gauge_f(
            e,
            "keyshift_autoscale_kafka_up",
            "1 if the last lag collection succeeded, 0 during a broker outage",
            &labels,
            if g.kafka_error.is_none() && g.last.is_some() {
                1.0
            } else {
                0.0
            },
        )?;
        if let Some(s) = &g.last {
            gauge_f(
                e,
                "keyshift_autoscale_desired_replicas",
                "Replica count the policy wants (target 1 per replica for an HPA External metric)",
                &labels,
                f64::from(s.desired_replicas),
            )?;
            gauge_f(
                e,
                "keyshift_autoscale_current_replicas",
                "Replica count the last evaluation started from",
                &labels,
                f64::from(s.current_replicas),
            )?;
            gauge_f(
                e,
                "keyshift_autoscale_lag_records",
                "Total lag of the group over the scaled topics",
                &labels,
                s.lag_records as f64,
            )?;
            gauge_f(
                e,
                "keyshift_autoscale_lag_seconds",
                "Largest per-partition lag in seconds",
                &labels,
                s.lag_seconds,
            )?;
            gauge_f(
                e,
                "keyshift_autoscale_partitions",
                "Partitions of the scaled topics (the replica ceiling)",
                &labels,
                f64::from(s.partitions),
            )?;
            gauge_f(
                e,
                "keyshift_autoscale_last_evaluation_timestamp_seconds",
                "When the last evaluation ran (Unix time)",
                &labels,
                s.evaluated_at,
            )?;
        }
        let c = g.counts;
        counter(
            e,
            "keyshift_autoscale_evaluations",
            "Policy evaluations",
            &labels,
            c.evaluations,
        )?;
        counter(
            e,
            "keyshift_autoscale_scale_ups",
            "Evaluations that raised the replica count",
            &labels,
            c.scale_ups,
        )?;
        counter(
            e,
            "keyshift_autoscale_scale_downs",
            "Evaluations that lowered the replica count",
            &labels,
            c.scale_downs,
        )?;
        counter(
            e,
            "keyshift_autoscale_collect_errors",
            "Lag collections that failed (broker unreachable)",
            &labels,
            c.collect_errors,
        )?;
        counter(
            e,
            "keyshift_autoscale_actuator_errors",
            "Kubernetes API calls that failed",
            &labels,
            c.actuator_errors,
        )
    }
}
