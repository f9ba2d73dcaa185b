//! The HTTP side every long-running subcommand shares: Prometheus metrics at `GET /metrics`,
//! a liveness/readiness probe at `GET /healthz`, any extra routes a subcommand brings (the
//! gateway's `POST /new`), and a graceful shutdown.
//!
//! A subcommand builds a `prometheus_client` [`Registry`], binds an [`HttpServer`] (binding is
//! separate from serving so that a caller — or a test that bound port 0 — learns the actual
//! address before the first request), and serves [`routes`] merged with its own [`Router`]
//! until a shutdown future resolves, typically [`shutdown_signal`] (SIGINT or SIGTERM).
//! In-flight requests finish before [`HttpServer::serve`] returns; the caller then flushes
//! whatever it buffers (the gateway flushes its producer), so "graceful" means: stop
//! accepting, finish what was accepted, then flush.
//!
//! [`Health`] lets the subcommand report that it is draining: `/healthz` answers 503 from the
//! moment shutdown starts, so that a load balancer stops sending before the listener closes.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

/// The content type of the OpenMetrics text exposition format that `/metrics` serves.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Why the HTTP endpoint could not run.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The listen address could not be bound (in use, not local, no permission).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address as requested.
        addr: SocketAddr,
        /// The operating system's reason.
        source: io::Error,
    },
    /// The server stopped with an I/O error while accepting connections.
    #[error("HTTP server on {addr} failed: {source}")]
    Serve {
        /// The address it was serving on.
        addr: SocketAddr,
        /// The underlying error.
        source: io::Error,
    },
}

/// Whether the process is ready for traffic, as `/healthz` reports it. Clones share the state.
#[derive(Debug, Clone)]
pub struct Health {
    draining: Arc<AtomicBool>,
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

impl Health {
    /// A healthy, ready state.
    pub fn new() -> Self {
        Health {
            draining: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Marks the process as shutting down: `/healthz` answers 503 `draining` from now on.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Whether [`Health::set_draining`] was called.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }
}

#[derive(Clone)]
struct Observability {
    registry: Arc<Registry>,
    health: Health,
}

/// `GET /metrics` (OpenMetrics text of `registry`) and `GET /healthz` (`200 ok`, or
/// `503 draining` once `health` is draining). Merge a subcommand's own routes into it with
/// [`Router::merge`].
pub fn routes(registry: Arc<Registry>, health: Health) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(Observability { registry, health })
}

async fn metrics(State(state): State<Observability>) -> Response {
    let mut body = String::new();
    // Encoding into a String only fails if a metric's own encoder does (a collector bug);
    // answer 500 naming it rather than a truncated exposition a scraper would misread.
    match prometheus_client::encoding::text::encode(&mut body, &state.registry) {
        Ok(()) => ([(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)], body).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode metrics");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot encode metrics: {e}\n"),
            )
                .into_response()
        }
    }
}

async fn healthz(State(state): State<Observability>) -> (StatusCode, &'static str) {
    if state.health.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    } else {
        (StatusCode::OK, "ok\n")
    }
}

/// A bound listener, ready to serve.
#[derive(Debug)]
pub struct HttpServer {
    listener: TcpListener,
    addr: SocketAddr,
}

impl HttpServer {
    /// Binds `addr` (port 0 picks a free port; see [`HttpServer::local_addr`]). The error
    /// names the address.
    pub async fn bind(addr: SocketAddr) -> Result<Self, HttpError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| HttpError::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| HttpError::Bind { addr, source })?;
        Ok(HttpServer { listener, addr })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves `router` until `shutdown` resolves, then stops accepting and waits for
    /// in-flight requests to finish.
    pub async fn serve<F>(self, router: Router, shutdown: F) -> Result<(), HttpError>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let addr = self.addr;
        tracing::info!(%addr, "HTTP listening");
        axum::serve(self.listener, router)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(|source| HttpError::Serve { addr, source })
    }
}

/// Binds `listen` and serves `/metrics` and `/healthz` (plus `extra` routes, if any) until
/// `shutdown` resolves: the one-call form for subcommands that only export metrics.
// Not every build of the binary has a caller yet (the worker and experiment use it).
#[allow(dead_code)]
pub async fn serve_metrics<F>(
    listen: SocketAddr,
    registry: Arc<Registry>,
    health: Health,
    extra: Option<Router>,
    shutdown: F,
) -> Result<(), HttpError>
where
    F: Future<Output = ()> + Send + 'static,
{
    let server = HttpServer::bind(listen).await?;
    let mut router = routes(registry, health);
    if let Some(extra) = extra {
        router = router.merge(extra);
    }
    server.serve(router, shutdown).await
}

/// Resolves on the first SIGINT (Ctrl-C) or SIGTERM, the signals a terminal and a process
/// supervisor (systemd, Kubernetes) send to ask for a clean stop.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            // Without a handler the process still dies on SIGINT, just not gracefully.
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received, shutting down"),
        () = term => tracing::info!("SIGTERM received, shutting down"),
    }
}

/// Installs the `tracing` subscriber of the binary: human-readable logs on stderr, filtered
/// by `RUST_LOG` (default `info`). Calling it twice is harmless, so every subcommand can.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(io::IsTerminal::is_terminal(&io::stderr()))
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A raw HTTP/1.1 GET, so the test depends on nothing but TCP.
    async fn http_get(addr: SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn serves_metrics_health_and_extra_routes_then_shuts_down() {
        let mut registry = Registry::default();
        let c = Counter::<u64>::default();
        registry.register("keyshift_test_things", "Things counted", c.clone());
        c.inc_by(3);
        let health = Health::new();
        let server = HttpServer::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let addr = server.local_addr();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let router = routes(Arc::new(registry), health.clone())
            .merge(Router::new().route("/extra", get(|| async { "extra" })));
        let task = tokio::spawn(server.serve(router, async {
            let _ = rx.await;
        }));

        let m = http_get(addr, "/metrics").await;
        assert!(m.starts_with("HTTP/1.1 200"), "{m}");
        assert!(m.contains(OPENMETRICS_CONTENT_TYPE), "{m}");
        assert!(m.contains("keyshift_test_things_total 3"), "{m}");
        assert!(m.trim_end().ends_with("# EOF"), "{m}");
        let h = http_get(addr, "/healthz").await;
        assert!(h.starts_with("HTTP/1.1 200") && h.ends_with("ok\n"), "{h}");
        assert!(http_get(addr, "/extra").await.ends_with("extra"));
        assert!(http_get(addr, "/nope").await.starts_with("HTTP/1.1 404"));
        health.set_draining();
        let h = http_get(addr, "/healthz").await;
        assert!(
            h.starts_with("HTTP/1.1 503") && h.ends_with("draining\n"),
            "{h}"
        );

        tx.send(()).unwrap();
        task.await.unwrap().unwrap();
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }

    #[tokio::test]
    async fn bind_error_names_the_address() {
        let taken = HttpServer::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let addr = taken.local_addr();
        let err = HttpServer::bind(addr).await.unwrap_err().to_string();
        assert!(err.contains(&addr.to_string()), "{err}");
    }
}
