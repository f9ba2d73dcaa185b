//! The runtime: a round every interval (scrape all targets concurrently, take the latest Kafka
//! reading and the new fences, update the [`Board`]) and the HTTP side that serves it.
//!
//! Routes:
//! - `GET /` — the page: one HTML document with its CSS, JavaScript and the current state
//!   inlined, so the first render needs one request and nothing from the network;
//! - `GET /events` — server-sent events, one `update` event per round ([`Update`] as JSON);
//! - `GET /api/state` — the snapshot, the history window and its events as JSON;
//! - `GET /healthz` — `200` with a JSON body naming every source and whether it answers
//!   (`"status": "degraded"` when one does not: the dashboard still serves the rest);
//! - `GET /metrics` — the dashboard's own figures (rounds, sources up, open pages, update size).
//!
//! Each round's update is serialised once and fanned out to every open page through a
//! broadcast channel; a page that falls behind skips updates rather than buffering them.
//!
//! [`Dashboard::serve_following`] serves a workload that moves from topic to topic (the runs
//! of `keyshift experiment`): whenever the [`Source`] it watches changes, the next round
//! starts a Kafka side for the new topic and groups, drops the old one and
//! [retargets](Board::retarget) the board, so the page always shows the run that is live.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};

use crate::board::{Board, BoardConfig, Event, Point, Snapshot};
use crate::kafka::{KafkaOptions, KafkaReading, KafkaSide};
use crate::scrape::Scraper;

/// The content type of the OpenMetrics text `/metrics` serves.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

const INDEX_HTML: &str = include_str!("page/index.html");
const APP_CSS: &str = include_str!("page/app.css");
const APP_JS: &str = include_str!("page/app.js");

/// Why the dashboard could not run.
#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address as requested.
        addr: SocketAddr,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// A client could not be created (bad `-X` property, TLS setup).
    #[error("{0}")]
    Setup(String),
    /// The HTTP server failed.
    #[error("HTTP server on {addr} failed: {source}")]
    Serve {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
}

/// Everything the dashboard is told.
#[derive(Debug, Clone)]
pub struct DashboardConfig {
    /// The Kafka side.
    pub kafka: KafkaOptions,
    /// `/metrics` URLs to scrape.
    pub scrape: Vec<String>,
    /// Time between rounds (and page updates).
    pub interval: Duration,
    /// History kept.
    pub history: Duration,
    /// Hot keys shown.
    pub hot_keys: usize,
    /// Upper bound of one scrape.
    pub scrape_timeout: Duration,
}

/// What a following dashboard shows now ([`Dashboard::serve_following`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// What the topic is, shown next to it on the page (e.g. "run 1/2: hash").
    pub label: String,
    /// The topic.
    pub topic: String,
    /// Consumer groups whose lag is shown.
    pub groups: Vec<String>,
}

/// The state every request handler and the round loop share.
struct Shared {
    board: Mutex<Board>,
    updates: broadcast::Sender<Arc<str>>,
    stopping: watch::Receiver<bool>,
    interval: Duration,
    history: Duration,
    pages: AtomicU64,
    last_update_bytes: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A bound listener: the address is known before serving (port 0 picks one).
#[derive(Debug)]
pub struct Dashboard {
    listener: TcpListener,
    addr: SocketAddr,
}

impl Dashboard {
    /// Binds `addr`.
    pub async fn bind(addr: SocketAddr) -> Result<Self, DashboardError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| DashboardError::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| DashboardError::Bind { addr, source })?;
        Ok(Dashboard { listener, addr })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Runs rounds and serves the page until `shutdown` resolves; open event streams are
    /// closed then, so the server stops promptly.
    pub async fn serve<F>(self, config: DashboardConfig, shutdown: F) -> Result<(), DashboardError>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let kafka = start_kafka(config.kafka.clone())
            .await
            .map_err(DashboardError::Setup)?;
        self.serve_with(config, Some(kafka), None, shutdown).await
    }

    /// Like [`serve`](Self::serve), but shows the topic and groups `source` names, following
    /// it when it changes (`config.kafka`'s own topic and groups are not used). Until the
    /// first source is set the page shows no Kafka reading yet. A Kafka side that cannot be
    /// started for a source (bad client configuration) shows as Kafka down, with the reason.
    pub async fn serve_following<F>(
        self,
        config: DashboardConfig,
        source: watch::Receiver<Option<Source>>,
        shutdown: F,
    ) -> Result<(), DashboardError>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.serve_with(config, None, Some(source), shutdown).await
    }

    async fn serve_with<F>(
        self,
        config: DashboardConfig,
        kafka: Option<KafkaSide>,
        source: Option<watch::Receiver<Option<Source>>>,
        shutdown: F,
    ) -> Result<(), DashboardError>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let scraper = Scraper::new(config.scrape_timeout).map_err(DashboardError::Setup)?;
        let (updates, _) = broadcast::channel(16);
        let (stop_tx, stopping) = watch::channel(false);
        let shared = Arc::new(Shared {
            board: Mutex::new(Board::new(BoardConfig {
                topic: config.kafka.topic.clone(),
                history_secs: config.history.as_secs_f64(),
                hot_keys: config.hot_keys,
            })),
            updates,
            stopping,
            interval: config.interval,
            history: config.history,
            pages: AtomicU64::new(0),
            last_update_bytes: AtomicU64::new(0),
        });
        let rounds = tokio::spawn(round_loop(
            Arc::clone(&shared),
            Following {
                kafka: kafka.map(Ok),
                options: config.kafka.clone(),
                source,
            },
            scraper,
            config.scrape.clone(),
            config.interval,
        ));
        let mut registry = Registry::default();
        registry.register_collector(Box::new(OwnMetrics(Arc::clone(&shared))));
        let registry = Arc::new(registry);
        let router = Router::new()
            .route("/", get(page))
            .route("/events", get(events))
            .route("/api/state", get(state))
            .route("/healthz", get(healthz))
            .route(
                "/metrics",
                get(move || {
                    let registry = Arc::clone(&registry);
                    async move { metrics(&registry) }
                }),
            )
            .with_state(Arc::clone(&shared));
        let addr = self.addr;
        tracing::info!(%addr, "dashboard listening");
        let served = axum::serve(self.listener, router)
            .with_graceful_shutdown(async move {
                shutdown.await;
                let _ = stop_tx.send(true);
            })
            .await;
        rounds.abort();
        // The Kafka side's threads stop when the aborted task drops it.
        let _ = rounds.await;
        served.map_err(|source| DashboardError::Serve { addr, source })
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// Creates the Kafka side's clients and threads, off the async threads (both block).
async fn start_kafka(options: KafkaOptions) -> Result<KafkaSide, String> {
    tokio::task::spawn_blocking(move || KafkaSide::start(options))
        .await
        .map_err(|e| e.to_string())?
}

/// The Kafka side of the round loop and, when following, the source it follows.
struct Following {
    /// The side reading the current topic, or why there is none; `None` until a followed
    /// source is first set.
    kafka: Option<Result<KafkaSide, String>>,
    /// Client settings and timings; topic and groups come from the source when following.
    options: KafkaOptions,
    source: Option<watch::Receiver<Option<Source>>>,
}

impl Following {
    /// Moves to the source's new topic, if it changed since the last round.
    async fn follow(&mut self, shared: &Shared) {
        let Some(rx) = &mut self.source else { return };
        if !rx.has_changed().unwrap_or(false) {
            return;
        }
        let Some(next) = rx.borrow_and_update().clone() else {
            return;
        };
        // Dropping the old side joins its threads (up to one request timeout): off the
        // async threads too.
        if let Some(Ok(old)) = self.kafka.take() {
            let _ = tokio::task::spawn_blocking(move || drop(old)).await;
        }
        let options = KafkaOptions {
            topic: next.topic.clone(),
            groups: next.groups.clone(),
            ..self.options.clone()
        };
        let started = start_kafka(options).await;
        if let Err(e) = &started {
            tracing::error!(topic = %next.topic, error = %e, "cannot read the followed topic");
        }
        self.kafka = Some(started);
        lock(&shared.board).retarget(unix_now(), next.label, next.topic);
    }
}

async fn round_loop(
    shared: Arc<Shared>,
    mut following: Following,
    scraper: Scraper,
    urls: Vec<String>,
    interval: Duration,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        following.follow(&shared).await;
        let scrapes = scraper.scrape_all(&urls).await;
        let (reading, fences, fence_error) = match &following.kafka {
            None => (None, Vec::new(), None),
            Some(Ok(kafka)) => (kafka.latest(), kafka.take_fences(), kafka.fence_error()),
            Some(Err(e)) => (
                Some(KafkaReading {
                    at: unix_now(),
                    end_offsets: Err(e.clone()),
                    groups: Ok(Vec::new()),
                }),
                Vec::new(),
                Some(e.clone()),
            ),
        };
        let update =
            lock(&shared.board).update(unix_now(), reading.as_ref(), fence_error, &scrapes, fences);
        match serde_json::to_string(&update) {
            Ok(json) => {
                shared
                    .last_update_bytes
                    .store(json.len() as u64, Ordering::Relaxed);
                // No open page is not an error.
                let _ = shared.updates.send(Arc::from(json));
            }
            Err(e) => tracing::error!(error = %e, "cannot serialise an update"),
        }
    }
}

/// The state a page starts from.
#[derive(Serialize)]
struct Initial<'a> {
    snapshot: &'a Snapshot,
    history: Vec<&'a Point>,
    events: Vec<&'a Event>,
    interval: f64,
    history_secs: f64,
}

fn initial_json(shared: &Shared) -> String {
    let board = lock(&shared.board);
    let initial = Initial {
        snapshot: board.snapshot(),
        history: board.history().iter().collect(),
        events: board.events().iter().collect(),
        interval: shared.interval.as_secs_f64(),
        history_secs: shared.history.as_secs_f64(),
    };
    serde_json::to_string(&initial).unwrap_or_else(|_| "{}".into())
}

async fn page(State(shared): State<Arc<Shared>>) -> Html<String> {
    // `</` inside a script element would end it; JSON allows the escaped form.
    let state = initial_json(&shared).replace("</", "<\\/");
    Html(
        INDEX_HTML
            .replacen("/*CSS*/", APP_CSS, 1)
            .replacen("/*STATE*/", &state, 1)
            .replacen("/*JS*/", APP_JS, 1),
    )
}

async fn state(State(shared): State<Arc<Shared>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        initial_json(&shared),
    )
        .into_response()
}

/// Counts an open event stream while it lives.
struct PageGuard(Arc<Shared>);

impl Drop for PageGuard {
    fn drop(&mut self) {
        self.0.pages.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn events(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    shared.pages.fetch_add(1, Ordering::Relaxed);
    let rx = shared.updates.subscribe();
    let stopping = shared.stopping.clone();
    let guard = PageGuard(Arc::clone(&shared));
    let stream = futures_util::stream::unfold(
        (rx, stopping, guard),
        |(mut rx, mut stopping, guard)| async move {
            loop {
                if *stopping.borrow() {
                    return None;
                }
                tokio::select! {
                    _ = stopping.changed() => return None,
                    msg = rx.recv() => match msg {
                        Ok(json) => {
                            let event = SseEvent::default().event("update").data(&*json);
                            return Some((Ok::<_, std::convert::Infallible>(event), (rx, stopping, guard)));
                        }
                        // A slow page skips what it missed; the next update is whole.
                        Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) => return None,
                    },
                }
            }
        },
    );
    (
        // Proxies (nginx) must not buffer the stream.
        [(header::HeaderName::from_static("x-accel-buffering"), "no")],
        Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))),
    )
}

#[derive(Serialize)]
struct HealthSource {
    source: String,
    up: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Serialize)]
struct HealthBody {
    status: &'static str,
    sources: Vec<HealthSource>,
}

async fn healthz(State(shared): State<Arc<Shared>>) -> Response {
    let body = {
        let board = lock(&shared.board);
        let s = board.snapshot();
        let mut sources = vec![
            HealthSource {
                source: "kafka".into(),
                up: s.kafka.up,
                error: s.kafka.error.clone(),
            },
            HealthSource {
                source: "fences".into(),
                up: s.fences.up,
                error: s.fences.error.clone(),
            },
        ];
        sources.extend(s.targets.iter().map(|t| HealthSource {
            source: t.url.clone(),
            up: t.health.up,
            error: t.health.error.clone(),
        }));
        let status = if s.seq == 0 {
            "starting"
        } else if sources.iter().all(|s| s.up) {
            "ok"
        } else {
            "degraded"
        };
        HealthBody { status, sources }
    };
    // The dashboard itself serves either way: a supervisor must not restart it because a
    // broker it watches is down. The body says what is.
    (StatusCode::OK, axum::Json(body)).into_response()
}

fn metrics(registry: &Registry) -> Response {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, registry) {
        Ok(()) => ([(header::CONTENT_TYPE, OPENMETRICS)], body).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode metrics: {e}\n"),
        )
            .into_response(),
    }
}

/// The dashboard's own metrics, read from the shared state at scrape time.
struct OwnMetrics(Arc<Shared>);

impl std::fmt::Debug for OwnMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OwnMetrics")
    }
}

impl Collector for OwnMetrics {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let (seq, kafka_up, targets) = {
            let board = lock(&self.0.board);
            let s = board.snapshot();
            let targets: Vec<(String, bool)> = s
                .targets
                .iter()
                .map(|t| (t.url.clone(), t.health.up))
                .collect();
            (s.seq, s.kafka.up, targets)
        };
        let c = ConstCounter::new(seq);
        c.encode(e.encode_descriptor(
            "keyshift_dashboard_rounds",
            "Update rounds run (scrape, read, send)",
            None,
            MetricType::Counter,
        )?)?;
        let g = ConstGauge::new(i64::from(kafka_up));
        g.encode(e.encode_descriptor(
            "keyshift_dashboard_kafka_up",
            "1 if the last Kafka reading succeeded",
            None,
            MetricType::Gauge,
        )?)?;
        let mut d = e.encode_descriptor(
            "keyshift_dashboard_target_up",
            "1 if the last scrape of the target succeeded",
            None,
            MetricType::Gauge,
        )?;
        for (url, up) in targets {
            ConstGauge::new(i64::from(up)).encode(d.encode_family(&[("target", url)])?)?;
        }
        let g = ConstGauge::new(self.0.pages.load(Ordering::Relaxed) as i64);
        g.encode(e.encode_descriptor(
            "keyshift_dashboard_open_pages",
            "Pages receiving updates now",
            None,
            MetricType::Gauge,
        )?)?;
        let g = ConstGauge::new(self.0.last_update_bytes.load(Ordering::Relaxed) as i64);
        g.encode(e.encode_descriptor(
            "keyshift_dashboard_update_bytes",
            "Size of the last update sent to pages (JSON)",
            None,
            MetricType::Gauge,
        )?)
    }
}
