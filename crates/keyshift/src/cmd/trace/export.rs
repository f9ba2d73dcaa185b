//! `keyshift trace export`: the seed's analysis step, natively.
//!
//! Fetches traces from Jaeger's query API (`GET /api/traces?service=…&lookback=…&limit=…`),
//! as SLOPS's analysis script did, and prints the per-key and per-partition latency that
//! [`keyshift_trace::jaeger`] computes from them (pairing, wait and end-to-end, summaries).

use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use keyshift_trace::jaeger::{self, JaegerTrace, LatencyReport, Summary};

use crate::exit::FlagError;

/// Flags of `keyshift trace export`.
#[derive(Debug, Args)]
#[command(
    about = "Fetch traces from a Jaeger query API and print per-key and per-partition latency",
    long_about = "Fetch traces from a Jaeger query API (GET /api/traces with service, lookback \
                  and limit, as the seed's analysis script did) and print, per record key and \
                  per partition, how long records waited between the producer span and the \
                  consumer span (wait) and until the consumer span ended (end-to-end): count, \
                  p50, p99 and max in milliseconds. --json prints the same data and every \
                  record as JSON."
)]
pub struct ExportArgs {
    /// Base URL of the Jaeger query service.
    #[arg(
        long,
        env = "KEYSHIFT_JAEGER_URL",
        default_value = "http://localhost:16686"
    )]
    jaeger_url: String,

    /// Service whose traces to fetch (the seed used `consumer` and `producer`).
    #[arg(long, env = "KEYSHIFT_JAEGER_SERVICE")]
    service: String,

    /// How far back to look, in Jaeger's units: 30m, 2h, 1d.
    #[arg(long, default_value = "1h", value_parser = lookback)]
    lookback: String,

    /// Maximum number of traces to fetch.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..), default_value_t = 100)]
    limit: u32,

    /// Rows in the per-key table (the keys with the most records).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..), default_value_t = 20)]
    top: u32,

    /// HTTP timeout in seconds.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..), default_value_t = 30)]
    timeout_secs: u64,

    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
}

fn lookback(s: &str) -> Result<String, String> {
    let unit_at = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("expected a number and a unit (30m, 2h, 1d), got '{s}'"))?;
    let (n, unit) = s.split_at(unit_at);
    if n.is_empty() || n.parse::<u64>().map_or(true, |n| n == 0) {
        return Err(format!(
            "expected a positive number before the unit, got '{s}'"
        ));
    }
    if !matches!(unit, "s" | "m" | "h" | "d") {
        return Err(format!("unit must be s, m, h or d, got '{s}'"));
    }
    Ok(s.to_owned())
}

fn fetch(args: &ExportArgs) -> anyhow::Result<Vec<JaegerTrace>> {
    let base = args.jaeger_url.trim_end_matches('/');
    let url = reqwest::Url::parse_with_params(
        &format!("{base}/api/traces"),
        [
            ("service", args.service.as_str()),
            ("lookback", args.lookback.as_str()),
            ("limit", &args.limit.to_string()),
        ],
    )
    .map_err(|e| FlagError::new("--jaeger-url", format!("'{}': {e}", args.jaeger_url)))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let body = runtime.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(args.timeout_secs))
            .build()?;
        let response = client
            .get(url.clone())
            .send()
            .await
            .with_context(|| format!("querying Jaeger at {url}"))?;
        let status = response.status();
        let body = response.text().await.context("reading Jaeger's answer")?;
        if !status.is_success() {
            let excerpt: String = body.chars().take(300).collect();
            bail!("Jaeger answered {status} for {url}: {excerpt}");
        }
        anyhow::Ok(body)
    })?;
    jaeger::parse_traces(&body).with_context(|| format!("Jaeger's answer from {url}"))
}

/// Runs `keyshift trace export`.
pub fn run(args: ExportArgs) -> anyhow::Result<()> {
    if args.service.trim().is_empty() {
        return Err(FlagError::new("--service", "must not be empty").into());
    }
    let traces = fetch(&args)?;
    let export = jaeger::analyze(&args.service, &traces);
    let mut out = std::io::stdout().lock();
    if args.json {
        // As an io::Error, so a closed pipe (`| head`) ends quietly like elsewhere.
        serde_json::to_writer_pretty(&mut out, &export).map_err(std::io::Error::from)?;
        std::io::Write::write_all(&mut out, b"\n")?;
        return Ok(());
    }
    print_tables(&mut out, &export, args.top as usize)?;
    Ok(())
}

fn print_tables(
    out: &mut impl std::io::Write,
    e: &LatencyReport,
    top: usize,
) -> std::io::Result<()> {
    writeln!(
        out,
        "service {}: {} traces, {} producer→consumer records, {} traces without both spans",
        e.service,
        e.traces,
        e.records.len(),
        e.unpaired_traces
    )?;
    let Some(overall) = &e.overall else {
        return Ok(());
    };
    let header = |out: &mut dyn std::io::Write, what: &str| {
        writeln!(
            out,
            "\n{what:<24} {:>7} {:>10} {:>10} {:>10} {:>10} {:>10}",
            "records", "wait p50", "wait p99", "e2e p50", "e2e p99", "e2e max"
        )
    };
    let row = |out: &mut dyn std::io::Write, name: &str, s: &Summary| {
        writeln!(
            out,
            "{name:<24} {:>7} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>10.1}",
            s.count, s.wait_p50_ms, s.wait_p99_ms, s.e2e_p50_ms, s.e2e_p99_ms, s.e2e_max_ms
        )
    };
    header(out, "all (ms)")?;
    row(out, "all", overall)?;
    header(out, "partition (ms)")?;
    let mut partitions: Vec<_> = e.by_partition.iter().collect();
    // Numeric partitions in numeric order, "(none)" last.
    partitions.sort_by_key(|(p, _)| (p.parse::<i64>().unwrap_or(i64::MAX), (*p).clone()));
    for (p, s) in partitions {
        row(out, p, s)?;
    }
    let mut keys: Vec<_> = e.by_key.iter().collect();
    keys.sort_by(|a, b| b.1.count.cmp(&a.1.count).then(a.0.cmp(b.0)));
    header(out, &format!("key (top {top}, ms)"))?;
    for (k, s) in keys.into_iter().take(top) {
        row(out, k, s)?;
    }
    Ok(())
}
