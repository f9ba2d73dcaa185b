//! Scraping the `/metrics` endpoints of the other keyshift processes.
//!
//! Each `--scrape URL` is a [`Target`]. What it is (gateway, worker, proxy, autoscaler, lag
//! exporter) is recognised from the metric names it exports, so the user lists URLs and
//! nothing else. A scrape that fails (refused, timeout, non-200, not a text exposition) is a
//! [`Scrape`] with an error that names the URL and the reason; the board keeps the target's
//! last good figures out of the rates and shows it as down.

use std::time::Duration;

use serde::Serialize;

use crate::prom::{self, Samples};

/// What a scraped process is, judged by its metric names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// `keyshift gateway`: `keyshift_gateway_*` and `keyshift_producer_*`.
    Gateway,
    /// `keyshift worker`: `keyshift_worker_*`.
    Worker,
    /// `keyshift proxy`: `keyshift_proxy_*`.
    Proxy,
    /// `keyshift autoscale`: `keyshift_autoscale_*`.
    Autoscaler,
    /// `keyshift lag --serve`: `keyshift_lag_*`.
    Lag,
    /// Anything else (or not scraped successfully yet).
    Unknown,
}

impl Kind {
    /// Recognises a target from its exposition.
    pub fn of(samples: &Samples) -> Kind {
        [
            ("keyshift_gateway_", Kind::Gateway),
            ("keyshift_worker_", Kind::Worker),
            ("keyshift_proxy_", Kind::Proxy),
            ("keyshift_autoscale_", Kind::Autoscaler),
            ("keyshift_lag_", Kind::Lag),
        ]
        .into_iter()
        .find(|(prefix, _)| samples.has_prefix(prefix))
        .map_or(Kind::Unknown, |(_, k)| k)
    }
}

/// The outcome of one scrape of one target.
#[derive(Debug, Clone)]
pub struct Scrape {
    /// The URL as given.
    pub url: String,
    /// The samples, or why there are none.
    pub result: Result<Samples, String>,
}

/// A pooled HTTP client for all targets.
#[derive(Debug, Clone)]
pub struct Scraper {
    client: reqwest::Client,
}

impl Scraper {
    /// A scraper whose requests give up after `timeout`.
    pub fn new(timeout: Duration) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| format!("cannot create the HTTP client: {e}"))?;
        Ok(Scraper { client })
    }

    /// Scrapes every URL concurrently.
    pub async fn scrape_all(&self, urls: &[String]) -> Vec<Scrape> {
        let futures = urls.iter().map(|url| self.scrape(url));
        futures_util::future::join_all(futures).await
    }

    /// Scrapes one URL.
    pub async fn scrape(&self, url: &str) -> Scrape {
        let result = async {
            let response = self
                .client
                .get(url)
                .send()
                .await
                .map_err(|e| format!("unreachable: {}", error_chain(&e)))?;
            let status = response.status();
            if !status.is_success() {
                return Err(format!("answered HTTP {status}"));
            }
            let body = response
                .text()
                .await
                .map_err(|e| format!("reading the body: {}", error_chain(&e)))?;
            let samples = prom::parse(&body).map_err(|e| format!("not Prometheus text: {e}"))?;
            Ok(Samples::from(samples))
        }
        .await;
        Scrape {
            url: url.to_owned(),
            result,
        }
    }
}

/// The error and its causes on one line ("error sending request: ... : Connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
