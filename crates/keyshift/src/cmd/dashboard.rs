//! `keyshift dashboard`: the flags of the live web dashboard and its banner; the runtime is
//! the `keyshift-dashboard` crate.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use keyshift_dashboard::{Dashboard, DashboardConfig, KafkaOptions};
use keyshift_kafka::{ClientSettings, Property};

use crate::exit::FlagError;
use crate::http;

/// Flags of `keyshift dashboard`.
#[derive(Debug, Args)]
#[command(
    about = "Live web dashboard: partitions, hot keys, moves, lag, consumers, autoscaler, proxy",
    long_about = "Serves one page (assets embedded, nothing fetched from the network) that \
                  updates about every --interval over server-sent events. It reads Kafka \
                  directly — end offsets (per-partition produce rates), the --group's committed \
                  offsets (lag in records and seconds, time to drain, with `keyshift lag`'s \
                  rules) and the topic's fence records (key moves) — and scrapes the /metrics \
                  of the gateways, workers, proxies and autoscalers given with --scrape for the \
                  rest. Unreachable brokers or targets show as such on the page and in \
                  /healthz; everything else keeps updating.\n\n\
                  Routes: / (the page), /events (server-sent events), /api/state (JSON), \
                  /healthz, /metrics (the dashboard's own)."
)]
pub struct DashboardArgs {
    /// Kafka bootstrap servers, host:port[,host:port...].
    #[arg(long, env = "KEYSHIFT_BOOTSTRAP_SERVERS")]
    bootstrap_servers: String,

    /// Topic shown.
    #[arg(long, default_value = "keyshift")]
    topic: String,

    /// Consumer group whose lag is shown (repeatable).
    #[arg(long = "group", value_name = "GROUP")]
    groups: Vec<String>,

    /// /metrics URL of a gateway, worker, proxy or autoscaler to scrape (repeatable); the
    /// kind is recognised from the metric names.
    #[arg(long = "scrape", value_name = "URL")]
    scrape: Vec<String>,

    /// Address to serve the page on.
    #[arg(long, default_value = "127.0.0.1:8088")]
    listen: SocketAddr,

    /// Seconds between updates (reads, scrapes, page refresh).
    #[arg(long, default_value_t = 1.0)]
    interval: f64,

    /// Seconds of history kept in memory for the charts and the timeline.
    #[arg(long, default_value_t = 900.0)]
    history_secs: f64,

    /// Hot keys shown (top k over all gateways and proxies).
    #[arg(long, default_value_t = 20)]
    hot_keys: usize,

    /// Do not tail the topic for fence records (saves reading every record; the timeline
    /// then only shows the scraped move counters).
    #[arg(long)]
    no_fences: bool,

    /// Upper bound for each Kafka request and each scrape, in milliseconds.
    #[arg(long, default_value_t = 2_000)]
    timeout_ms: u64,

    /// Client id the broker sees.
    #[arg(long, default_value = "keyshift-dashboard")]
    client_id: String,

    /// librdkafka property passed through to every client, like kcat (repeatable).
    #[arg(short = 'X', value_name = "KEY=VALUE")]
    properties: Vec<Property>,

    #[command(flatten)]
    client_config: crate::cmd::client_config::ClientConfigFlag,
}

fn seconds(flag: &str, v: f64, max: f64) -> Result<Duration, FlagError> {
    if !v.is_finite() || v <= 0.0 || v > max {
        return Err(FlagError::new(
            flag,
            format!("expected seconds in (0, {max}], got {v}"),
        ));
    }
    Ok(Duration::from_secs_f64(v))
}

fn resolve(args: &DashboardArgs) -> Result<DashboardConfig, FlagError> {
    let interval = seconds("--interval", args.interval, 3600.0)?;
    let history = seconds("--history-secs", args.history_secs, 7.0 * 86_400.0)?;
    if history < interval {
        return Err(FlagError::new(
            "--history-secs",
            "must be at least one --interval",
        ));
    }
    if args.topic.trim().is_empty() {
        return Err(FlagError::new("--topic", "must not be empty"));
    }
    if let Some(bad) = args.groups.iter().find(|g| g.trim().is_empty()) {
        return Err(FlagError::new(
            "--group",
            format!("expected a group id, got '{bad}'"),
        ));
    }
    for url in &args.scrape {
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| FlagError::new("--scrape", format!("'{url}' is not a URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(FlagError::new(
                "--scrape",
                format!("'{url}': expected an http:// or https:// URL"),
            ));
        }
    }
    if args.hot_keys == 0 {
        return Err(FlagError::new("--hot-keys", "expected at least 1"));
    }
    if args.timeout_ms == 0 {
        return Err(FlagError::new("--timeout-ms", "expected at least 1"));
    }
    let timeout = Duration::from_millis(args.timeout_ms);
    Ok(DashboardConfig {
        kafka: KafkaOptions {
            settings: ClientSettings::new(&args.bootstrap_servers)
                .client_id(&args.client_id)
                .properties(args.client_config.merged(&args.properties)?),
            topic: args.topic.clone(),
            groups: args.groups.clone(),
            interval,
            timeout,
            tail_fences: !args.no_fences,
            fence_lookback: history,
        },
        scrape: args.scrape.clone(),
        interval,
        history,
        hot_keys: args.hot_keys,
        scrape_timeout: timeout,
    })
}

/// Runs `keyshift dashboard` until SIGINT/SIGTERM.
pub fn run(args: DashboardArgs) -> anyhow::Result<()> {
    let config = resolve(&args)?;
    http::init_logging();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let dashboard = Dashboard::bind(args.listen).await?;
        println!(
            "keyshift dashboard: http://{}/ (topic {}, {} group(s), {} scrape target(s))",
            dashboard.local_addr(),
            args.topic,
            args.groups.len(),
            args.scrape.len()
        );
        std::io::Write::flush(&mut std::io::stdout())?;
        dashboard.serve(config, http::shutdown_signal()).await?;
        anyhow::Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: DashboardArgs,
    }

    fn parse(extra: &[&str]) -> DashboardArgs {
        let mut argv = vec!["dashboard", "--bootstrap-servers", "b:9092"];
        argv.extend_from_slice(extra);
        Cli::parse_from(argv).args
    }

    #[test]
    fn flags_are_validated_by_name() {
        for (flags, name) in [
            (&["--interval", "0"][..], "--interval"),
            (&["--interval", "nan"][..], "--interval"),
            (&["--history-secs", "0.5"][..], "--history-secs"),
            (&["--topic", " "][..], "--topic"),
            (&["--group", ""][..], "--group"),
            (&["--scrape", "localhost:9000/metrics"][..], "--scrape"),
            (&["--scrape", "not a url"][..], "--scrape"),
            (&["--hot-keys", "0"][..], "--hot-keys"),
            (&["--timeout-ms", "0"][..], "--timeout-ms"),
        ] {
            let err = resolve(&parse(flags)).expect_err("rejected");
            assert_eq!(err.flag, name, "{flags:?}");
        }
        let ok = resolve(&parse(&[
            "--scrape",
            "http://127.0.0.1:9000/metrics",
            "--history-secs",
            "60",
            "--no-fences",
        ]))
        .unwrap();
        assert_eq!(ok.history, Duration::from_secs(60));
        assert!(!ok.kafka.tail_fences);
        assert_eq!(ok.scrape.len(), 1);
    }
}
