//! `keyshift loadgen`: the seed's open-loop client (`--rate 200 --iter 1000 --keys 2800`,
//! Zipf s and v, or the targeted hot spot), sending to the gateway over HTTP (`--url`) or
//! straight to Kafka through the keyshift producer (`--bootstrap-servers`).
//!
//! [`LoadgenArgs`] resolve into a [`LoadConfig`] and a [`Sink`]; the engine,
//! [`keyshift_experiment::loadgen::run_load`], does the work and returns a [`LoadReport`],
//! printed as text or JSON.
//!
//! The HTTP client is `reqwest` (pooled keep-alive connections, per-request timeouts, rustls
//! for https gateways): it is the well-kept, widely used client on top of hyper, and hyper-util's
//! bare client would make us reimplement timeouts and body handling for no gain here.

use std::io::{self, Write};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use keyshift_core::workload::{KeyDist, Schedule, Targeted, Workload, Zipf};
use keyshift_kafka::{ClientSettings, Property};

use super::strategy_flags::{RouteFlags, StrategyFlags};
use super::workload_flags::{
    at_least_one, at_least_one_u64, at_least_one_usize, finite_f64, parse_strategy, positive_f64,
    WorkloadArg,
};
use crate::exit::FlagError;
use keyshift_experiment::loadgen::{
    self as engine, HttpSink, LoadConfig, LoadReport, ProducerSink, Sink,
};

/// Flags of `keyshift loadgen`. Defaults are the seed client's.
#[derive(Debug, Args)]
#[command(
    about = "Open-loop load generator (the seed's client) to the gateway or straight to Kafka",
    long_about = "Open-loop load generator, like the seed's client: keys location_<n> drawn from \
                  Zipf(s, v) (or the targeted hot spot, or uniform), sent at --rate on a fixed \
                  schedule that never waits for answers.\n\nWith --url, POSTs {\"key\",\"body\"} \
                  to a gateway (--url repeated: each request to one of them at random); with --bootstrap-servers, sends through the keyshift producer \
                  with --strategy. Each record's value is a probe {\"seq\",\"sent_us\",\"body\"}: \
                  a per-key sequence number from 0 and the scheduled send time, for measuring \
                  latency and order downstream. Prints sent, ok, errors, achieved rate and \
                  response latency."
)]
pub struct LoadgenArgs {
    /// Gateway endpoint to POST records to (e.g. http://127.0.0.1:8080/new). Repeat it to
    /// spread the load over several gateways: each request goes to one of them at random
    /// (drawn from --seed, so a run is reproducible).
    #[arg(
        long,
        conflicts_with = "bootstrap_servers",
        required_unless_present = "bootstrap_servers"
    )]
    url: Vec<reqwest::Url>,

    /// Send straight to Kafka through the keyshift producer on these bootstrap servers.
    #[arg(long)]
    bootstrap_servers: Option<String>,

    /// Topic (with --bootstrap-servers).
    #[arg(long, default_value = "keyshift")]
    topic: String,

    /// Strategy of the producer (with --bootstrap-servers).
    #[arg(long, value_parser = parse_strategy, default_value = "keyshift")]
    strategy: String,

    /// librdkafka property for the producer (with --bootstrap-servers; repeatable).
    #[arg(short = 'X', value_name = "KEY=VALUE")]
    properties: Vec<Property>,

    #[command(flatten)]
    client_config: crate::cmd::client_config::ClientConfigFlag,

    /// Partitions: with --bootstrap-servers, create the topic with this many if missing; for
    /// --workload targeted, the partition count the hot spot rotates over [default: the
    /// topic's, or 10 over HTTP].
    #[arg(long, value_parser = at_least_one)]
    partitions: Option<u32>,

    /// Records per second.
    #[arg(long, value_parser = positive_f64, default_value_t = 200.0)]
    rate: f64,

    /// Records to send.
    #[arg(long, value_parser = at_least_one_u64, default_value_t = 1000)]
    iter: u64,

    /// Distinct keys location_<n> (Zipf draws n in 0..=keys, as Go's imax).
    #[arg(long, value_parser = at_least_one_u64, default_value_t = 2800)]
    keys: u64,

    /// Key distribution.
    #[arg(long, value_enum, default_value_t = WorkloadArg::Zipf)]
    workload: WorkloadArg,

    /// Zipf exponent s.
    #[arg(long, allow_negative_numbers = true, value_parser = finite_f64, default_value_t = 1.1)]
    zipf_s: f64,

    /// Zipf offset v.
    #[arg(long, allow_negative_numbers = true, value_parser = finite_f64, default_value_t = 2.72)]
    zipf_v: f64,

    /// Send times: the seed's token bucket (burst records at once, then one per 1/rate),
    /// evenly spaced, or Poisson.
    #[arg(long, value_enum, default_value_t = ArrivalsArg::TokenBucket)]
    arrivals: ArrivalsArg,

    /// Token-bucket size [default: the rate, as the seed].
    #[arg(long, value_parser = at_least_one_u64)]
    burst: Option<u64>,

    /// Seed of keys and Poisson gaps.
    #[arg(long, default_value_t = 1)]
    seed: u64,

    /// Most requests in flight; more count as falling behind.
    #[arg(long, value_parser = at_least_one_usize, default_value_t = 1000)]
    max_in_flight: usize,

    /// Seconds one HTTP request may take (and the final flush with --bootstrap-servers).
    #[arg(long, value_parser = positive_f64, default_value_t = 30.0)]
    timeout: f64,

    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    strategy_flags: StrategyFlags,

    #[command(flatten)]
    route_flags: RouteFlags,
}

/// `--arrivals`.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum ArrivalsArg {
    /// The seed's rate limiter: a full bucket of --burst at once, then one per 1/rate.
    TokenBucket,
    /// One record every 1/rate seconds.
    Uniform,
    /// Exponential gaps with mean 1/rate.
    Poisson,
}

impl LoadgenArgs {
    fn schedule(&self) -> Result<Schedule, FlagError> {
        Ok(match self.arrivals {
            ArrivalsArg::Uniform => Schedule::uniform(self.rate)?,
            ArrivalsArg::Poisson => Schedule::poisson(self.rate)?,
            ArrivalsArg::TokenBucket => {
                let burst = self
                    .burst
                    .unwrap_or_else(|| self.rate.ceil().max(1.0) as u64);
                Schedule::token_bucket(self.rate, burst)?
            }
        })
    }

    fn keys(
        &self,
        partitions: u32,
        strategy: &keyshift_core::strategy::StrategyConfig,
    ) -> Result<KeyDist, FlagError> {
        Ok(match self.workload {
            WorkloadArg::Zipf => KeyDist::Zipf(Zipf::new(self.zipf_s, self.zipf_v, self.keys)?),
            WorkloadArg::Targeted => {
                KeyDist::Targeted(Targeted::new(strategy.hasher, partitions, self.keys)?)
            }
            WorkloadArg::Uniform => KeyDist::uniform(self.keys)?,
        })
    }
}

/// Runs `keyshift loadgen`.
pub fn run(args: LoadgenArgs) -> anyhow::Result<()> {
    crate::http::init_logging();
    let schedule = args.schedule()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let timeout = Duration::from_secs_f64(args.timeout);
    let (sink, partitions, strategy): (Arc<dyn Sink>, u32, _) = match &args.bootstrap_servers {
        Some(bootstrap) => {
            let settings = ClientSettings::new(bootstrap)
                .client_id("keyshift-loadgen")
                .properties(args.client_config.merged(&args.properties)?);
            let (producer, partitions, config) = args.strategy_flags.open_producer(
                &runtime,
                settings,
                &args.topic,
                args.partitions,
                &args.strategy,
                &args.route_flags,
            )?;
            (
                Arc::new(ProducerSink::new(producer, timeout)),
                partitions,
                config,
            )
        }
        None => {
            if !args.properties.is_empty() {
                return Err(FlagError::new("-X", "only applies with --bootstrap-servers").into());
            }
            if args.client_config.is_set() {
                return Err(FlagError::new(
                    "--client-config",
                    "only applies with --bootstrap-servers",
                )
                .into());
            }
            // clap requires at least one --url without --bootstrap-servers.
            let partitions = args.partitions.unwrap_or(10);
            let config = args
                .strategy_flags
                .resolve(std::slice::from_ref(&args.strategy), partitions)?;
            let sink = HttpSink::new(args.url.clone(), args.seed, timeout)
                .context("cannot create the HTTP client")?;
            (Arc::new(sink), partitions, config)
        }
    };
    let config = LoadConfig {
        workload: Workload::new(args.keys(partitions, &strategy)?, schedule, args.seed),
        records: args.iter,
        max_in_flight: args.max_in_flight,
        rate: args.rate,
    };
    let report = runtime.block_on(engine::run_load(config, sink));
    let mut out = io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        print_text(&mut out, &report)?;
    }
    out.flush()?;
    if report.ok == 0 {
        anyhow::bail!(
            "no record was acknowledged ({} errors){}",
            report.errors,
            report
                .error_samples
                .first()
                .map_or(String::new(), |e| format!("; first: {e}"))
        );
    }
    Ok(())
}

fn print_text(out: &mut impl Write, r: &LoadReport) -> io::Result<()> {
    writeln!(out, "sent            {}", r.sent)?;
    writeln!(out, "ok              {}", r.ok)?;
    writeln!(out, "errors          {}", r.errors)?;
    writeln!(out, "keys            {}", r.keys)?;
    writeln!(out, "offered rate    {:.1}/s", r.offered_rate)?;
    writeln!(
        out,
        "achieved rate   {:.1}/s over {:.3} s",
        r.achieved_rate, r.dispatch_secs
    )?;
    writeln!(
        out,
        "falling behind  {} (max lag {:.1} ms)",
        r.falling_behind, r.max_lag_ms
    )?;
    writeln!(
        out,
        "latency ms      p50 {:.2}  p99 {:.2}  max {:.2}  mean {:.2}",
        r.latency_ms.p50, r.latency_ms.p99, r.latency_ms.max, r.latency_ms.mean
    )?;
    if !r.per_partition.is_empty() {
        let parts: Vec<String> = r.per_partition.iter().map(u64::to_string).collect();
        writeln!(out, "per partition   {}", parts.join(" "))?;
    }
    for e in &r.error_samples {
        writeln!(out, "error           {e}")?;
    }
    Ok(())
}
