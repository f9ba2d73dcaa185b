//! What the proxy's integration tests share: the embedded broker behind a proxy that reports
//! to [`ProxyMetrics`], on a runtime of its own so tests can drive blocking clients.

#![allow(dead_code)] // Each test file uses its own subset.

use std::sync::Arc;
use std::time::{Duration, Instant};

use keyshift_kafka::{BrokerOptions, EmbeddedBroker};
use keyshift_proxy::metrics::{MetricsConfig, ProxyMetrics};
use keyshift_proxy::{Proxy, ProxyConfig, RunningProxy};

/// Generous bound for anything that waits on the broker (CI has two busy cores).
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Broker + proxy + metrics; dropping it stops the proxy, then the broker.
pub struct Setup {
    pub metrics: ProxyMetrics,
    proxy: Option<RunningProxy>,
    runtime: tokio::runtime::Runtime,
    pub broker: EmbeddedBroker,
}

impl Setup {
    /// A broker and a proxy in front of it on a free loopback port, with `tune` applied to
    /// the proxy's config and `metrics` limits.
    pub fn start(tune: impl FnOnce(&mut ProxyConfig), metrics: MetricsConfig) -> Setup {
        Setup::start_with(BrokerOptions::default(), tune, metrics)
    }

    /// [`Setup::start`] with a broker started with `options` (e.g. SASL users).
    pub fn start_with(
        options: BrokerOptions,
        tune: impl FnOnce(&mut ProxyConfig),
        metrics: MetricsConfig,
    ) -> Setup {
        let broker = EmbeddedBroker::start_with(options).expect("embedded broker");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("proxy-under-test")
            .enable_all()
            .build()
            .expect("runtime");
        let metrics = ProxyMetrics::new(metrics).expect("metrics config");
        let mut config = ProxyConfig::new(
            broker.bootstrap_servers().to_owned(),
            "127.0.0.1:0".parse().unwrap(),
        );
        tune(&mut config);
        let proxy = runtime
            .block_on(Proxy::start(config, Arc::new(metrics.clone())))
            .expect("proxy starts");
        Setup {
            metrics,
            proxy: Some(proxy),
            runtime,
            broker,
        }
    }

    /// Another proxy with `config`, reporting to `metrics`, on this setup's runtime (stopped
    /// when dropped).
    pub fn another_proxy(&self, config: ProxyConfig, metrics: &ProxyMetrics) -> RunningProxy {
        self.runtime
            .block_on(Proxy::start(config, Arc::new(metrics.clone())))
            .expect("proxy starts")
    }

    /// The proxy's bootstrap address for clients.
    pub fn bootstrap(&self) -> String {
        self.proxy
            .as_ref()
            .expect("running")
            .bootstrap_addr()
            .to_string()
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        if let Some(proxy) = self.proxy.take() {
            self.runtime.block_on(proxy.shutdown());
        }
    }
}

/// Polls `check` until it returns `Some`, panicking with `what` after [`PATIENCE`].
pub fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
