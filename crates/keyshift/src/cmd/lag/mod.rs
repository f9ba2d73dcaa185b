//! `keyshift lag`: consumer-group lag in records and seconds, with Burrow-style status.
//!
//! The flags resolve into a [`LagCollectorConfig`]; a [`LagCollector`] (keyshift-kafka) reads
//! the offsets and the core judges them. Three ways to run:
//! - once (default): `--samples` collections `--interval` apart (statuses and rates need at
//!   least two), then one table or, with `--json`, one JSON object per group per line;
//! - `--watch`: the same output after every collection, until interrupted or `--rounds`;
//! - `--serve ADDR`: collect every `--interval` and export Prometheus metrics on
//!   `GET /metrics` ([`metrics`]), with kafka_exporter's metric names so existing dashboards
//!   keep working. A failed collection (broker down) is reported in the metrics
//!   (`keyshift_lag_up 0`) and the next successful one restores everything, without restart.

mod metrics;
mod output;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use clap::{Args, ValueEnum};
use keyshift_kafka::lag::{GroupLag, LagCollector, LagCollectorConfig, LagError};
use keyshift_kafka::{ClientSettings, Property};

use crate::exit::FlagError;
use crate::http::{self, Health, HttpServer};

/// How lag in seconds is obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LagSecondsMode {
    /// Read the timestamp of the first unconsumed record of each lagging partition; fall back
    /// to interpolation when it cannot be read in time.
    Exact,
    /// Only interpolate from sampled (end offset, time) points: no record fetches.
    Interpolated,
}

/// Flags of `keyshift lag`.
#[derive(Debug, Args)]
#[command(
    about = "Consumer-group lag in records and seconds, with Burrow-style status",
    long_about = "Consumer-group lag per partition: committed and end offsets, lag in records \
                  and in seconds (exact from the first unconsumed record's timestamp, or \
                  interpolated from sampled end offsets), production and consumption rates, \
                  time to drain, and a Burrow-style status (OK, WARN, STALL, STOP, REWIND; \
                  ERR for a group with any of the last three or unreadable offsets).\n\n\
                  Statuses and rates are judged over a window of samples, so a one-shot run \
                  takes --samples collections --interval apart. --watch repeats; --serve \
                  exports Prometheus metrics, including kafka_exporter's names."
)]
pub struct LagArgs {
    /// Kafka bootstrap servers, host:port[,host:port...].
    #[arg(long, env = "KEYSHIFT_BOOTSTRAP_SERVERS")]
    bootstrap_servers: String,

    /// Consumer group to report (repeatable); all consumer groups of the cluster if omitted.
    #[arg(long = "group", value_name = "GROUP")]
    groups: Vec<String>,

    /// One JSON object per group per line instead of a table.
    #[arg(long)]
    json: bool,

    /// Keep collecting and print after every collection.
    #[arg(long, conflicts_with = "serve")]
    watch: bool,

    /// Serve Prometheus metrics on this address (GET /metrics, /healthz) instead of printing.
    #[arg(long, value_name = "ADDR")]
    serve: Option<SocketAddr>,

    /// Seconds between collections.
    #[arg(long, default_value_t = 1.0)]
    interval: f64,

    /// Collections of a one-shot run (statuses and rates need at least 2).
    #[arg(long, default_value_t = 3)]
    samples: usize,

    /// With --watch: stop after this many collections (0: until interrupted).
    #[arg(long, default_value_t = 0, requires = "watch")]
    rounds: u64,

    /// Samples per partition that statuses and rates are judged on (Burrow's intervals).
    #[arg(long, default_value_t = keyshift_core::lag::DEFAULT_WINDOW)]
    window: usize,

    /// How lag in seconds is obtained.
    #[arg(long, value_enum, default_value_t = LagSecondsMode::Exact)]
    lag_seconds: LagSecondsMode,

    /// Upper bound for each request to the cluster, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,

    /// Client id the broker sees.
    #[arg(long, default_value = "keyshift-lag")]
    client_id: String,

    /// librdkafka property passed through to every client, like kcat (repeatable).
    #[arg(short = 'X', value_name = "KEY=VALUE")]
    properties: Vec<Property>,

    #[command(flatten)]
    client_config: crate::cmd::client_config::ClientConfigFlag,
}

/// The validated form of the flags.
struct Resolved {
    settings: ClientSettings,
    config: LagCollectorConfig,
    groups: Vec<String>,
    interval: Duration,
}

fn resolve(args: &LagArgs) -> Result<Resolved, FlagError> {
    if !args.interval.is_finite() || args.interval <= 0.0 || args.interval > 86_400.0 {
        return Err(FlagError::new(
            "--interval",
            format!("expected seconds in (0, 86400], got {}", args.interval),
        ));
    }
    if args.samples == 0 {
        return Err(FlagError::new("--samples", "expected at least 1"));
    }
    if args.window < 2 {
        return Err(FlagError::new(
            "--window",
            format!("expected at least 2 samples, got {}", args.window),
        ));
    }
    if args.timeout_ms == 0 {
        return Err(FlagError::new("--timeout-ms", "expected at least 1"));
    }
    if let Some(bad) = args.groups.iter().find(|g| g.trim().is_empty()) {
        return Err(FlagError::new(
            "--group",
            format!("expected a group id, got '{bad}'"),
        ));
    }
    let timeout = Duration::from_millis(args.timeout_ms);
    let interval = Duration::from_secs_f64(args.interval);
    Ok(Resolved {
        settings: ClientSettings::new(&args.bootstrap_servers)
            .client_id(&args.client_id)
            .properties(args.client_config.merged(&args.properties)?),
        config: LagCollectorConfig {
            timeout,
            window: args.window,
            exact_lag_seconds: args.lag_seconds == LagSecondsMode::Exact,
            // Record fetches must not stretch a round much beyond the interval.
            probe_timeout: timeout.min(interval.max(Duration::from_millis(500))),
            ..LagCollectorConfig::default()
        },
        groups: args.groups.clone(),
        interval,
    })
}

/// An unknown group is bad input (exit 2); anything else is a failure.
fn collect_error(err: LagError) -> anyhow::Error {
    match err {
        LagError::UnknownGroup { .. } => FlagError::new("--group", err.to_string()).into(),
        other => anyhow::Error::new(other),
    }
}

/// Runs `keyshift lag`.
pub fn run(args: LagArgs) -> anyhow::Result<()> {
    let resolved = resolve(&args)?;
    let mut collector = LagCollector::with_config(&resolved.settings, resolved.config.clone())
        .context("cannot create the lag collector")?;
    if let Some(listen) = args.serve {
        return serve(collector, resolved, listen);
    }
    let stdout = std::io::stdout();
    if args.watch {
        let mut round = 0u64;
        loop {
            let started = Instant::now();
            let groups = collector
                .collect(&resolved.groups, SystemTime::now())
                .map_err(collect_error)?;
            round += 1;
            let mut out = stdout.lock();
            print(&mut out, &groups, args.json, Some(round))?;
            out.flush()?;
            drop(out);
            if args.rounds != 0 && round >= args.rounds {
                return Ok(());
            }
            std::thread::sleep(resolved.interval.saturating_sub(started.elapsed()));
        }
    }
    let mut groups = Vec::new();
    for i in 0..args.samples {
        if i > 0 {
            std::thread::sleep(resolved.interval);
        }
        groups = collector
            .collect(&resolved.groups, SystemTime::now())
            .map_err(collect_error)?;
    }
    let mut out = stdout.lock();
    print(&mut out, &groups, args.json, None)?;
    out.flush()?;
    Ok(())
}

fn print(
    out: &mut impl Write,
    groups: &[GroupLag],
    json: bool,
    round: Option<u64>,
) -> anyhow::Result<()> {
    if json {
        for g in groups {
            serde_json::to_writer(&mut *out, g)?;
            writeln!(out)?;
        }
    } else {
        if let Some(round) = round {
            writeln!(out, "--- collection {round} ---")?;
        }
        output::table(out, groups)?;
    }
    Ok(())
}

/// `--serve`: a collection thread on the interval, the HTTP server on a small runtime.
fn serve(collector: LagCollector, resolved: Resolved, listen: SocketAddr) -> anyhow::Result<()> {
    http::init_logging();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let server = runtime.block_on(HttpServer::bind(listen))?;
    let state = Arc::new(Mutex::new(metrics::Snapshot::default()));
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(metrics::LagMetrics::new(Arc::clone(&state))));

    let stop = Arc::new(AtomicBool::new(false));
    let worker = {
        let stop = Arc::clone(&stop);
        let state = Arc::clone(&state);
        std::thread::Builder::new()
            .name("keyshift-lag".to_owned())
            .spawn(move || collect_loop(collector, resolved, state, stop))
            .context("cannot start the collection thread")?
    };
    println!(
        "keyshift lag: metrics on http://{}/metrics",
        server.local_addr()
    );
    std::io::stdout().flush()?;
    let health = Health::new();
    let router = http::routes(Arc::new(registry), health.clone());
    let served = runtime.block_on(server.serve(router, async move {
        http::shutdown_signal().await;
        health.set_draining();
    }));
    stop.store(true, Ordering::Release);
    worker
        .join()
        .map_err(|_| anyhow::anyhow!("the collection thread panicked"))?;
    served?;
    Ok(())
}

fn collect_loop(
    mut collector: LagCollector,
    resolved: Resolved,
    state: Arc<Mutex<metrics::Snapshot>>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::Acquire) {
        let started = Instant::now();
        let result = collector.collect(&resolved.groups, SystemTime::now());
        if let Err(e) = &result {
            tracing::warn!(error = %e, "lag collection failed; retrying next interval");
        }
        state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .record(result, SystemTime::now());
        // Sleep in short steps so that shutdown is prompt even with long intervals.
        let until = started + resolved.interval;
        while !stop.load(Ordering::Acquire) {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            std::thread::sleep(left.min(Duration::from_millis(100)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: LagArgs,
    }

    fn parse(extra: &[&str]) -> LagArgs {
        let mut argv = vec!["lag", "--bootstrap-servers", "b:9092"];
        argv.extend_from_slice(extra);
        Cli::parse_from(argv).args
    }

    #[test]
    fn flags_are_validated_by_name() {
        for (flags, name) in [
            (&["--interval", "0"][..], "--interval"),
            (&["--interval", "nan"][..], "--interval"),
            (&["--samples", "0"][..], "--samples"),
            (&["--window", "1"][..], "--window"),
            (&["--group", " "][..], "--group"),
            (&["--timeout-ms", "0"][..], "--timeout-ms"),
        ] {
            let err = resolve(&parse(flags)).err().expect("rejected");
            assert_eq!(err.flag, name, "{flags:?}");
        }
        let ok = resolve(&parse(&["--lag-seconds", "interpolated", "--window", "4"])).unwrap();
        assert!(!ok.config.exact_lag_seconds);
        assert_eq!(ok.config.window, 4);
    }

    #[test]
    fn unknown_group_is_a_usage_error() {
        let err = collect_error(LagError::UnknownGroup { group: "g".into() });
        let flag = err.downcast_ref::<FlagError>().expect("a FlagError");
        assert_eq!(flag.flag, "--group");
        assert!(flag.reason.contains("'g'"));
    }
}
