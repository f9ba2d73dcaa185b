//! `keyshift proxy`: the transparent Kafka protocol proxy with its metrics endpoint.
//!
//! [`ProxyArgs`] resolve into a [`ProxyConfig`] (listeners, broker map, frame limits) and a
//! [`MetricsConfig`] (cardinality caps, hot-key sketch); [`keyshift_proxy::Proxy`] relays and
//! decodes, reporting to [`ProxyMetrics`], which this module serves as Prometheus text on
//! `GET /metrics` and as JSON on `GET /api/stats` (the same snapshot), with `GET /healthz`.
//! SIGINT/SIGTERM stop the listeners and close every connection.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use axum::routing::get;
use axum::{Json, Router};
use clap::Args;
use keyshift_proxy::metrics::{MetricsConfig, ProxyMetrics};
use keyshift_proxy::{BrokerMapping, CertKeyFiles, ClientTls, Proxy, ProxyConfig, UpstreamTls};
use prometheus_client::registry::Registry;

use super::workload_flags::{at_least_one_usize, positive_f64};
use crate::exit::FlagError;
use crate::http::{self, Health, HttpServer};

/// Flags of `keyshift proxy`.
#[derive(Debug, Args)]
#[command(
    about = "Transparent Kafka protocol proxy that decodes every request and exports metrics",
    long_about = "Transparent Kafka protocol proxy: clients connect to --listen instead of the \
                  broker; every request and response is decoded (all API keys and versions) \
                  and relayed. Metadata, FindCoordinator and DescribeCluster responses are \
                  rewritten so clients reach every broker through the proxy: the broker behind \
                  --upstream gets --listen, every other broker the following ports (or the \
                  address given with --broker).\n\nGET /metrics on --metrics-listen serves \
                  Prometheus metrics (requests, errors and latency per API, client and version; \
                  bytes; produced/fetched records per topic and partition; hot keys per topic; \
                  consumer-group commits and lag; produce→fetch latency; TLS handshakes; SASL \
                  handshakes and authentications per mechanism), GET /api/stats the same as \
                  JSON, GET /healthz a health probe. A malformed or oversized frame, or a failed \
                  TLS handshake, closes only its own connection.\n\nTLS: --tls-cert/--tls-key \
                  terminate TLS from clients (the proxy decodes inside it); --upstream-tls \
                  (or --upstream-ca) connects to TLS brokers. SASL is relayed: clients \
                  authenticate to the brokers through the proxy, which counts each mechanism's \
                  outcomes and never sees a credential in an event or a log."
)]
pub struct ProxyArgs {
    /// The bootstrap broker to relay to, HOST:PORT.
    #[arg(long, env = "KEYSHIFT_PROXY_UPSTREAM")]
    upstream: String,

    /// Where clients connect for the --upstream broker; other brokers get the following ports.
    #[arg(long, default_value = "127.0.0.1:19092")]
    listen: SocketAddr,

    /// Explicit listener for a broker as it advertises itself, UPSTREAM=LISTEN, e.g.
    /// kafka-2:9092=127.0.0.1:29092 (repeatable).
    #[arg(long = "broker", value_name = "HOST:PORT=ADDR", value_parser = parse_mapping)]
    brokers: Vec<BrokerMapping>,

    /// Host written into rewritten broker addresses [default: the --listen IP].
    #[arg(long)]
    advertised_host: Option<String>,

    /// Address to serve /metrics, /api/stats and /healthz on.
    #[arg(long, default_value = "127.0.0.1:9190")]
    metrics_listen: SocketAddr,

    /// Largest frame in bytes; a larger one closes its connection [Kafka's default 100 MiB].
    #[arg(long, value_parser = at_least_one_usize, default_value_t = keyshift_proxy::config::DEFAULT_MAX_FRAME_BYTES)]
    max_frame_bytes: usize,

    /// Largest number of requests awaiting a response on one connection.
    #[arg(long, value_parser = at_least_one_usize, default_value_t = 1024)]
    max_in_flight: usize,

    /// Read only record-batch headers (counts, offsets): no decompression, no keys, no hot keys.
    #[arg(long)]
    no_record_decoding: bool,

    /// Close connections that do not look like Kafka instead of relaying them untouched.
    #[arg(long)]
    reject_non_kafka: bool,

    /// Hot keys exported per topic.
    #[arg(long, value_parser = at_least_one_usize, default_value_t = MetricsConfig::default().hot_keys)]
    hot_keys: usize,

    /// Counters of each topic's hot-key sketch (Space-Saving).
    #[arg(long, value_parser = at_least_one_usize, default_value_t = MetricsConfig::default().hot_key_capacity)]
    hot_key_capacity: usize,

    /// Half-life of the hot-key rates in seconds.
    #[arg(long, value_parser = positive_f64, default_value_t = MetricsConfig::default().hot_key_half_life_secs)]
    hot_key_half_life: f64,

    /// Topics with a hot-key sketch (later topics are counted as overflow).
    #[arg(long, value_parser = at_least_one_usize, default_value_t = MetricsConfig::default().hot_key_topics)]
    hot_key_topics: usize,

    /// Client ids with their own label value (later ones become __overflow__).
    #[arg(long, value_parser = at_least_one_usize, default_value_t = MetricsConfig::default().max_client_ids)]
    max_client_ids: usize,

    /// Topic partitions with their own series (later ones become __overflow__).
    #[arg(long, value_parser = at_least_one_usize, default_value_t = MetricsConfig::default().max_partitions)]
    max_partitions: usize,

    /// Consumer-group partitions with their own offset and lag series.
    #[arg(long, value_parser = at_least_one_usize, default_value_t = MetricsConfig::default().max_group_partitions)]
    max_group_partitions: usize,

    /// Serve TLS to clients with this certificate chain (PEM, leaf first), decoding inside it.
    /// Repeat --tls-cert/--tls-key pairs to serve several names: each client gets the first
    /// certificate valid for the server name it asks for (SNI), else the first.
    #[arg(long = "tls-cert", value_name = "FILE", requires = "tls_keys")]
    tls_certs: Vec<PathBuf>,

    /// Private key (PEM: PKCS#8, PKCS#1 or SEC1) of the --tls-cert in the same position.
    #[arg(long = "tls-key", value_name = "FILE", requires = "tls_certs")]
    tls_keys: Vec<PathBuf>,

    /// Require client certificates signed by a CA in this PEM bundle (mutual TLS).
    #[arg(long, value_name = "FILE", requires = "tls_certs")]
    tls_client_ca: Option<PathBuf>,

    /// Connect to the brokers over TLS, trusting the Mozilla root CAs (those of managed
    /// clusters) unless --upstream-ca names others.
    #[arg(long)]
    upstream_tls: bool,

    /// CA bundle (PEM) the brokers' certificates must chain to; implies --upstream-tls.
    #[arg(long, value_name = "FILE")]
    upstream_ca: Option<PathBuf>,

    /// Client certificate chain (PEM) the proxy presents to the brokers, for clusters that
    /// require mutual TLS; implies --upstream-tls.
    #[arg(long, value_name = "FILE", requires = "upstream_key")]
    upstream_cert: Option<PathBuf>,

    /// Private key (PEM) of --upstream-cert.
    #[arg(long, value_name = "FILE", requires = "upstream_cert")]
    upstream_key: Option<PathBuf>,

    /// Check every broker's certificate against this name instead of the host the broker
    /// advertises (brokers reached by an address their certificates do not name); implies
    /// --upstream-tls.
    #[arg(long, value_name = "NAME")]
    upstream_server_name: Option<String>,
}

/// `HOST:PORT=ADDR` → a broker mapping.
fn parse_mapping(s: &str) -> Result<BrokerMapping, String> {
    let (upstream, listen) = s
        .split_once('=')
        .ok_or_else(|| format!("'{s}' is not HOST:PORT=ADDR"))?;
    if keyshift_proxy::config::split_host_port(upstream).is_none() {
        return Err(format!("'{upstream}' is not HOST:PORT"));
    }
    let listen: SocketAddr = listen
        .parse()
        .map_err(|_| format!("'{listen}' is not an IP:PORT listen address"))?;
    Ok(BrokerMapping {
        upstream: upstream.to_owned(),
        listen,
    })
}

impl ProxyArgs {
    /// Resolves the flags into the proxy's and the metrics' configuration, naming the flag
    /// of anything invalid.
    fn resolve(&self) -> Result<(ProxyConfig, MetricsConfig), FlagError> {
        if keyshift_proxy::config::split_host_port(&self.upstream).is_none() {
            return Err(FlagError::new(
                "--upstream",
                format!("'{}' is not HOST:PORT", self.upstream),
            ));
        }
        let mut config = ProxyConfig::new(self.upstream.clone(), self.listen);
        config.brokers = self.brokers.clone();
        config.advertised_host = self.advertised_host.clone();
        config.max_frame_bytes = self.max_frame_bytes;
        config.max_in_flight = self.max_in_flight;
        config.decode_records = !self.no_record_decoding;
        config.pass_through_non_kafka = !self.reject_non_kafka;
        config.client_tls = self.client_tls()?;
        config.upstream_tls = self.upstream_tls();
        config.validate().map_err(|e| match e {
            keyshift_proxy::ProxyError::Config { field, msg } => {
                FlagError::new(format!("--{}", field.replace('_', "-")), msg)
            }
            other => FlagError::new("--listen", other.to_string()),
        })?;
        let metrics = MetricsConfig {
            max_client_ids: self.max_client_ids,
            max_partitions: self.max_partitions,
            max_group_partitions: self.max_group_partitions,
            hot_key_topics: self.hot_key_topics,
            hot_keys: self.hot_keys,
            hot_key_capacity: self.hot_key_capacity,
            hot_key_half_life_secs: self.hot_key_half_life,
            ..MetricsConfig::default()
        };
        metrics.validate()?;
        Ok((config, metrics))
    }
}

impl ProxyArgs {
    /// --tls-cert/--tls-key pairs and --tls-client-ca (the files are read at start).
    fn client_tls(&self) -> Result<Option<ClientTls>, FlagError> {
        if self.tls_certs.len() != self.tls_keys.len() {
            return Err(FlagError::new(
                "--tls-key",
                format!(
                    "{} --tls-cert but {} --tls-key: give one key per certificate, in the same \
                     order",
                    self.tls_certs.len(),
                    self.tls_keys.len()
                ),
            ));
        }
        if self.tls_certs.is_empty() {
            return Ok(None);
        }
        let certs = self
            .tls_certs
            .iter()
            .zip(&self.tls_keys)
            .map(|(cert, key)| CertKeyFiles {
                cert: cert.clone(),
                key: key.clone(),
            })
            .collect();
        Ok(Some(ClientTls {
            certs,
            client_ca: self.tls_client_ca.clone(),
        }))
    }

    /// --upstream-tls and the flags that imply it.
    fn upstream_tls(&self) -> Option<UpstreamTls> {
        let wanted = self.upstream_tls
            || self.upstream_ca.is_some()
            || self.upstream_cert.is_some()
            || self.upstream_server_name.is_some();
        wanted.then(|| UpstreamTls {
            ca: self.upstream_ca.clone(),
            client_cert: self
                .upstream_cert
                .clone()
                .zip(self.upstream_key.clone())
                .map(|(cert, key)| CertKeyFiles { cert, key }),
            server_name: self.upstream_server_name.clone(),
        })
    }
}

/// `/metrics`, `/healthz` and `/api/stats` over `metrics`.
fn router(metrics: &ProxyMetrics, health: Health) -> Router {
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let stats = metrics.clone();
    http::routes(Arc::new(registry), health).merge(Router::new().route(
        "/api/stats",
        get(move || {
            let stats = stats.clone();
            async move { Json(stats.snapshot()) }
        }),
    ))
}

/// Runs `keyshift proxy` until SIGINT or SIGTERM.
pub fn run(args: ProxyArgs) -> anyhow::Result<()> {
    http::init_logging();
    let (config, metrics_config) = args.resolve()?;
    let metrics = ProxyMetrics::new(metrics_config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let server = HttpServer::bind(args.metrics_listen).await?;
        let upstream = config.upstream.clone();
        let tls = match (&config.client_tls, &config.upstream_tls) {
            (None, None) => "",
            (Some(_), None) => " (TLS to clients)",
            (None, Some(_)) => " (TLS to brokers)",
            (Some(_), Some(_)) => " (TLS to clients and brokers)",
        };
        let proxy = Proxy::start(config, Arc::new(metrics.clone()))
            .await
            .context("cannot start the proxy")?;
        println!(
            "keyshift proxy: {} -> {upstream}{tls}; metrics on http://{addr}/metrics, stats on http://{addr}/api/stats",
            proxy.bootstrap_addr(),
            addr = server.local_addr()
        );
        std::io::Write::flush(&mut std::io::stdout())?;
        let health = Health::new();
        let draining = health.clone();
        server
            .serve(router(&metrics, health), async move {
                http::shutdown_signal().await;
                draining.set_draining();
            })
            .await?;
        proxy.shutdown().await;
        anyhow::Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: ProxyArgs,
    }

    fn parse(flags: &[&str]) -> Result<ProxyArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("proxy").chain(flags.iter().copied())).map(|c| c.args)
    }

    #[test]
    fn flags_resolve_into_both_configs() {
        let args = parse(&[
            "--upstream",
            "kafka-1:9092",
            "--listen",
            "127.0.0.1:30000",
            "--broker",
            "kafka-2:9092=127.0.0.1:30005",
            "--max-frame-bytes",
            "1048576",
            "--hot-keys",
            "5",
            "--no-record-decoding",
        ])
        .unwrap();
        let (p, m) = args.resolve().unwrap();
        assert_eq!(p.upstream, "kafka-1:9092");
        assert_eq!(p.brokers[0].upstream, "kafka-2:9092");
        assert_eq!(p.brokers[0].listen.port(), 30005);
        assert_eq!(p.max_frame_bytes, 1 << 20);
        assert!(!p.decode_records);
        assert_eq!(m.hot_keys, 5);
    }

    #[test]
    fn tls_flags_pair_certificates_with_keys() {
        let args = parse(&[
            "--upstream",
            "k:9093",
            "--tls-cert",
            "a.pem",
            "--tls-key",
            "a.key",
            "--tls-cert",
            "b.pem",
            "--tls-key",
            "b.key",
            "--tls-client-ca",
            "ca.pem",
            "--upstream-ca",
            "broker-ca.pem",
        ])
        .unwrap();
        let (p, _) = args.resolve().unwrap();
        let tls = p.client_tls.unwrap();
        assert_eq!(tls.certs.len(), 2);
        assert_eq!(tls.certs[1].key, PathBuf::from("b.key"));
        assert_eq!(tls.client_ca, Some(PathBuf::from("ca.pem")));
        let up = p
            .upstream_tls
            .expect("--upstream-ca implies --upstream-tls");
        assert_eq!(up.ca, Some(PathBuf::from("broker-ca.pem")));
        assert!(up.client_cert.is_none());

        let e = parse(&[
            "--upstream",
            "k:9093",
            "--tls-cert",
            "a.pem",
            "--tls-cert",
            "b.pem",
            "--tls-key",
            "a.key",
        ])
        .unwrap()
        .resolve()
        .unwrap_err();
        assert_eq!(e.flag, "--tls-key");
        assert!(parse(&["--upstream", "k:1", "--tls-cert", "a.pem"]).is_err());
        assert!(parse(&["--upstream", "k:1", "--upstream-cert", "c.pem"]).is_err());
        let (p, _) = parse(&["--upstream", "k:1"]).unwrap().resolve().unwrap();
        assert!(p.client_tls.is_none() && p.upstream_tls.is_none());
    }

    #[test]
    fn bad_values_name_their_flag() {
        let e = parse(&["--upstream", "nope"])
            .unwrap()
            .resolve()
            .unwrap_err();
        assert_eq!(e.flag, "--upstream");
        let e = parse(&["--upstream", "k:1", "--max-frame-bytes", "10"])
            .unwrap()
            .resolve()
            .unwrap_err();
        assert_eq!(e.flag, "--max-frame-bytes");
        let e = parse(&[
            "--upstream",
            "k:1",
            "--hot-keys",
            "50",
            "--hot-key-capacity",
            "10",
        ])
        .unwrap()
        .resolve()
        .unwrap_err();
        assert_eq!(e.flag, "--hot-keys");
        assert!(parse(&["--upstream", "k:1", "--broker", "k:2"]).is_err());
        assert!(parse(&["--upstream", "k:1", "--hot-key-half-life", "0"]).is_err());
    }
}
