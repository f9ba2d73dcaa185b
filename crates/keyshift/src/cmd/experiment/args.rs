//! Flags of `keyshift experiment` and their resolution into one validated [`Plan`].
//!
//! The workload and strategy flags are `keyshift simulate`'s own ([`WorkloadFlags`],
//! [`StrategyFlags`]) and resolve into the same [`SimConfig`], so the service time is computed
//! exactly as the simulator does (`utilization × consumers ÷ rate`) and the same command line
//! describes a simulation and a real run. Defaults differ where a real run must differ: fewer
//! records (it runs in real time) and a utilisation at which hash's hottest partition is
//! saturated and keyshift's are not.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use keyshift_core::sim::SimConfig;
use keyshift_experiment::Plan;
use keyshift_kafka::{Property, Routes};

use crate::cmd::strategy_flags::{RoutesArg, StrategyFlags};
use crate::cmd::workload_flags::{
    at_least_one_u64, finite_f64, parse_strategy, positive_f64, utilization, ArrivalsArg,
    ServiceArg, WorkloadFlags,
};
use crate::exit::FlagError;

/// A strategy of `--strategies`: one of the core's, or the experiment's `pc` baseline.
fn parse_experiment_strategy(s: &str) -> Result<String, String> {
    if s.trim() == keyshift_experiment::plan::PC {
        return Ok(keyshift_experiment::plan::PC.into());
    }
    parse_strategy(s).map_err(|e| format!("{e}, pc"))
}

/// Offered load of the default run (the seed's rate).
pub const DEFAULT_RATE: f64 = 200.0;
/// Aggregate utilisation of the default run: with the seed's Zipf keys and Kafka's murmur2
/// placement, hash's busiest partition gets about twice the mean load, so its consumer is
/// offered ~1.5× its capacity, while the bound for any order-preserving strategy
/// (max(mean, hottest key) = the mean here) leaves keyshift's consumers at ~75 %.
pub const DEFAULT_UTILIZATION: f64 = 0.75;
/// Where `--dashboard` without an address serves (`keyshift dashboard`'s default).
pub const DEFAULT_DASHBOARD_LISTEN: &str = "127.0.0.1:8088";
/// Records per strategy of the default run: about a minute at 200 rec/s, so two strategies
/// finish within ~3 minutes including group joins and hash's backlog drain.
pub const DEFAULT_RECORDS: u64 = 10_000;

/// Flags of `keyshift experiment`. Defaults: the seed's workload (10 partitions, 10 workers,
/// Zipf s = 1.1, v = 2.72 over 2800 keys, 200 rec/s) for hash and keyshift.
#[derive(Debug, Args)]
#[command(
    about = "Run loadgen → producer → broker → workers for each strategy and compare them",
    long_about = "Run loadgen → producer → broker → workers for each strategy in turn and \
                  print one side-by-side report.\n\nFor each strategy: a fresh topic, \
                  --consumers ordered workers in one consumer group (each processing one record \
                  at a time for utilization × consumers ÷ rate on average), an open-loop load \
                  of --records probe records at --rate through the keyshift producer, then a \
                  drain until every record is processed. Reports throughput, end-to-end latency \
                  (scheduled send → processed) quantiles, per-partition load and imbalance, \
                  migrations, park time, per-key order violations, duplicates and lost records, \
                  and writes an HTML page with plots.\n\nWith --producers N the load is \
                  spread over N producers (each its own clients and strategy state, as \
                  application instances or gateway replicas are); they coordinate through the \
                  topic's control log (one decides moves, every one fences its own records of a \
                  moving key) and the report adds coordination figures: moves proposed, \
                  committed and aborted, decider claims, how long a moved key was held, the \
                  produce round trip.\n\nWithout --bootstrap-servers it starts \
                  an embedded broker (tansu, sqlite storage) in the process; with it, each \
                  strategy gets a fresh topic <prefix>-<strategy>-<run id> on that cluster, \
                  left in place afterwards.\n\nExits 1 after printing the report if a record \
                  was lost or an order-preserving strategy broke per-key order."
)]
pub struct ExperimentArgs {
    /// Strategies to compare, comma-separated, run and printed in this order
    /// (hash, slops, keyshift, pkg, unordered, and pc: hash partitioning whose workers process
    /// --concurrency records at once in per-key order, the model of Confluent's Parallel
    /// Consumer).
    #[arg(long, value_delimiter = ',', value_parser = parse_experiment_strategy,
          default_value = "hash,keyshift")]
    strategies: Vec<String>,

    /// Records each worker processes at once, never two of one key (slots sleeping the
    /// service time, as handlers waiting on I/O do). The mean service time is multiplied by
    /// it, so every strategy gets the same capacity: hash then runs each partition serially
    /// (a classic consumer), pc and keyshift fill the slots with other keys. Compare
    /// `--strategies hash,pc,keyshift --concurrency 8 --service io`.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024), default_value_t = 1)]
    concurrency: u16,

    #[command(flatten)]
    workload: WorkloadFlags,

    /// Offered load in records per second (open loop: sends follow the schedule).
    #[arg(long, allow_negative_numbers = true, value_parser = positive_f64, default_value_t = DEFAULT_RATE)]
    rate: f64,

    /// Spacing of sends: evenly spaced, or a Poisson process at --rate.
    #[arg(long, value_enum, default_value_t = ArrivalsArg::Poisson)]
    arrivals: ArrivalsArg,

    /// Aggregate utilisation of the workers, a fraction: sets the mean service time to
    /// utilization × consumers ÷ rate (as `keyshift simulate` does).
    #[arg(long, allow_negative_numbers = true, value_parser = utilization, default_value_t = DEFAULT_UTILIZATION)]
    utilization: f64,

    /// Per-record service time: always the mean, or exponential around it (workers sleep).
    #[arg(long, value_enum, default_value_t = ServiceArg::Fixed)]
    service: ServiceArg,

    /// Records to produce per strategy.
    #[arg(long, value_parser = at_least_one_u64, default_value_t = DEFAULT_RECORDS)]
    records: u64,

    /// Seed of the workload (keys and send times) and the service times; every strategy gets
    /// the same records at the same times.
    #[arg(long, default_value_t = SimConfig::default().seed)]
    seed: u64,

    /// Fraction of records (by send order) left out of latency and load figures as warm-up.
    #[arg(long, allow_negative_numbers = true, value_parser = finite_f64, default_value_t = SimConfig::default().warmup)]
    warmup: f64,

    /// How often workers commit processed offsets, in ms (a fence triggers a commit at once).
    #[arg(long, allow_negative_numbers = true, value_parser = positive_f64,
          default_value_t = SimConfig::default().commit_interval_ms)]
    commit_interval_ms: f64,

    /// How often a worker with parked records reads the group's committed offsets, in ms.
    #[arg(long, allow_negative_numbers = true, value_parser = positive_f64,
          default_value_t = SimConfig::default().barrier_poll_ms)]
    barrier_poll_ms: f64,

    /// Producer instances the load is spread over, each a keyshift producer of its own (own
    /// connections, own strategy state), as application instances or gateway replicas are.
    /// Each record goes to a randomly chosen one, except that a key's records stay with one
    /// producer while any of them is unacknowledged (as an application orders a key's
    /// requests). The producers of an order-preserving strategy coordinate (one decider moves
    /// keys, every producer holds a moved key and fences it), and the report adds coordination
    /// figures.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=64), default_value_t = 1)]
    producers: u32,

    /// Where the producers keep the routes of moved keys (`keyshift gateway --routes`).
    /// `durable` is the single-producer path (compare its cost with the default); several
    /// producers with durable or ephemeral routes move keys each on their own: per-key order
    /// breaks, and the run shows it (a negative control). With --grow-at and several
    /// producers, only coordinated routes grow them together. [default: coordinated]
    #[arg(long, value_enum)]
    routes: Option<RoutesArg>,

    /// Grow the topic during the load: once this share of the records is sent (e.g. `50%`
    /// or `0.5`), keys are homed on --grow-to partitions instead of --partitions. Each run's
    /// topic is created with --grow-to partitions and the workers own them all from the
    /// start (the path a broker without CreatePartitions takes). `hash` and `pc` grow as
    /// Kafka's partitioner does, with no fence (a key's new records may overtake its old
    /// ones); the other ordered strategies write one epoch fence per old partition and the
    /// workers park a remapped key until its old partition is processed past it. The report
    /// adds the park time the growth caused. Several coordinated producers (--producers) grow
    /// together: one asks, the decider proposes, every producer writes its own epoch fences.
    /// The workers then use the round-robin assignor:
    /// with range, the partitions not in use yet would all go to half of the workers, idling
    /// them until the growth.
    #[arg(long, value_name = "SHARE", value_parser = share, requires = "grow_to")]
    grow_at: Option<f64>,

    /// Partitions keys are homed on after the growth step (more than --partitions; with
    /// --grow-at).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(2..=100_000),
          requires = "grow_at")]
    grow_to: Option<u32>,

    /// Kafka bootstrap servers; without it an embedded broker is started in the process.
    #[arg(long, value_name = "HOST:PORT,...")]
    bootstrap_servers: Option<String>,

    /// A librdkafka property for every client, key=value (repeatable), e.g. -X
    /// security.protocol=SSL.
    #[arg(short = 'X', long = "property", value_name = "KEY=VALUE")]
    properties: Vec<Property>,

    #[command(flatten)]
    client_config: crate::cmd::client_config::ClientConfigFlag,

    /// Prefix of the fresh topic (and consumer group) each strategy runs on; the strategy and
    /// a run id are appended.
    #[arg(long, default_value = "keyshift-experiment")]
    topic_prefix: String,

    /// Seconds to wait for the workers to join the group and own every partition.
    #[arg(long, allow_negative_numbers = true, value_parser = positive_f64, default_value_t = 60.0)]
    settle_timeout_secs: f64,

    /// Seconds to wait after the last send for every record to be processed; what is still
    /// missing then is reported as lost.
    #[arg(long, allow_negative_numbers = true, value_parser = positive_f64, default_value_t = 120.0)]
    drain_timeout_secs: f64,

    /// How often to sample the group's lag for the lag plot, in ms.
    #[arg(long, allow_negative_numbers = true, value_parser = positive_f64, default_value_t = 250.0)]
    lag_interval_ms: f64,

    /// Also write the report as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,

    /// Write the HTML page with plots to FILE [default: next to --json with the extension
    /// .html, else experiment.html in the current directory].
    #[arg(long, value_name = "FILE", conflicts_with = "no_html")]
    html: Option<PathBuf>,

    /// Do not write the HTML page.
    #[arg(long)]
    no_html: bool,

    /// Serve the live dashboard (the page of `keyshift dashboard`) on ADDR while the
    /// experiment runs [ADDR default: 127.0.0.1:8088]. It follows the run that is live — its
    /// topic and its workers' group, named with the strategy and run number on the page — so
    /// the strategies can be watched one after the other on the same charts. The URL is
    /// printed first; the static HTML report is written as usual.
    #[arg(long, value_name = "ADDR", num_args = 0..=1,
          default_missing_value = DEFAULT_DASHBOARD_LISTEN)]
    dashboard: Option<SocketAddr>,

    /// Also show where latency went per strategy: producer wait (fence), broker, queueing,
    /// parked and service, from per-record timestamps of the producer and the workers.
    #[arg(long)]
    trace: bool,

    #[command(flatten)]
    strategy: StrategyFlags,
}

impl ExperimentArgs {
    /// Resolves and validates the flags; errors name the flag.
    pub fn resolve(self) -> Result<Plan, FlagError> {
        // The pc baseline routes as hash does: its options are hash's.
        let routed: Vec<String> = self
            .strategies
            .iter()
            .map(|s| keyshift_experiment::plan::producer_strategy(s).to_owned())
            .collect();
        let strategy = self.strategy.resolve(&routed, self.workload.partitions)?;
        let mut config = SimConfig {
            rate: self.rate,
            arrivals: self.arrivals.into(),
            utilization: self.utilization,
            records: self.records,
            seed: self.seed,
            service: self.service.into(),
            commit_interval_ms: self.commit_interval_ms,
            barrier_poll_ms: self.barrier_poll_ms,
            warmup: self.warmup,
            strategy,
            ..SimConfig::default()
        };
        self.workload.apply(&mut config);
        config.validate()?;
        if let Some(b) = &self.bootstrap_servers {
            if b.trim().is_empty() {
                return Err(FlagError::new(
                    "--bootstrap-servers",
                    "must not be empty (leave it out to use the embedded broker)",
                ));
            }
        }
        if self.topic_prefix.is_empty()
            || !self
                .topic_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err(FlagError::new(
                "--topic-prefix",
                format!(
                    "'{}' is not a valid Kafka topic name prefix (letters, digits, '.', '_', '-')",
                    self.topic_prefix
                ),
            ));
        }
        let mut strategies = self.strategies;
        if strategies.is_empty() {
            return Err(FlagError::new("--strategies", "name at least one strategy"));
        }
        // Running a strategy twice in one experiment is allowed but pointless to print twice.
        let mut seen = Vec::new();
        strategies.retain(|s| {
            let new = !seen.contains(s);
            seen.push(s.clone());
            new
        });
        let grow = match (self.grow_at, self.grow_to) {
            (Some(at), Some(to)) => {
                if to <= config.partitions {
                    return Err(FlagError::new(
                        "--grow-to",
                        format!(
                            "{to} is not more than --partitions {}: a growth adds partitions",
                            config.partitions
                        ),
                    ));
                }
                if let Some(r) = self.routes.filter(|&r| r != RoutesArg::Coordinated) {
                    if self.producers > 1 {
                        return Err(FlagError::new(
                            "--routes",
                            format!(
                                "{} routes are for one producer; several producers grow a \
                                 topic together with coordinated routes (the default)",
                                format!("{r:?}").to_lowercase()
                            ),
                        ));
                    }
                }
                // Round-robin spreads the partitions in use over every worker (range would give
                // the unused upper half to half of the workers).
                config.assignor = keyshift_core::sim::Assignor::RoundRobin;
                Some(keyshift_experiment::plan::Grow { at, to })
            }
            _ => None,
        };
        let routes = self.routes.unwrap_or(RoutesArg::Coordinated);
        let html = if self.no_html {
            None
        } else {
            Some(
                self.html
                    .unwrap_or_else(|| default_html_path(self.json.as_deref())),
            )
        };
        Ok(Plan {
            strategies,
            config,
            producers: self.producers,
            concurrency: usize::from(self.concurrency),
            routes: match routes {
                RoutesArg::Coordinated => Routes::Coordinated(None),
                RoutesArg::Durable => Routes::Durable(None),
                RoutesArg::Ephemeral => Routes::Ephemeral,
            },
            bootstrap_servers: self.bootstrap_servers.map(|b| b.trim().to_string()),
            properties: self.client_config.merged_except(
                &self.properties,
                &keyshift_kafka::consumer::MANAGED_PROPERTIES,
            )?,
            topic_prefix: self.topic_prefix,
            settle_timeout: Duration::from_secs_f64(self.settle_timeout_secs),
            drain_timeout: Duration::from_secs_f64(self.drain_timeout_secs),
            lag_interval: Duration::from_secs_f64(self.lag_interval_ms / 1e3),
            json: self.json,
            html,
            trace: self.trace,
            dashboard: self.dashboard,
            grow,
        })
    }
}

/// `report.json` → `report.html`; without `--json`, `experiment.html` here.
/// A share of the records: `50%` or `0.5`, strictly between 0 and 1.
fn share(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let v = match t.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|v| v / 100.0),
        None => t.parse::<f64>(),
    }
    .map_err(|_| format!("'{s}' is not a share (expected e.g. 50% or 0.5)"))?;
    if v.is_finite() && v > 0.0 && v < 1.0 {
        Ok(v)
    } else {
        Err(format!("'{s}' must be strictly between 0% and 100%"))
    }
}

fn default_html_path(json: Option<&Path>) -> PathBuf {
    match json {
        Some(j) => {
            let h = j.with_extension("html");
            if h == j {
                let mut s = j.as_os_str().to_owned();
                s.push(".html");
                PathBuf::from(s)
            } else {
                h
            }
        }
        None => PathBuf::from("experiment.html"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ExperimentArgs,
    }

    fn plan(argv: &[&str]) -> Plan {
        let mut all = vec!["experiment"];
        all.extend_from_slice(argv);
        Cli::try_parse_from(all).unwrap().args.resolve().unwrap()
    }

    #[test]
    fn dashboard_address_is_optional() {
        assert_eq!(plan(&[]).dashboard, None);
        let default: SocketAddr = DEFAULT_DASHBOARD_LISTEN.parse().unwrap();
        assert_eq!(plan(&["--dashboard"]).dashboard, Some(default));
        // A flag after it is not taken for the address.
        let p = plan(&["--dashboard", "--records", "5"]);
        assert_eq!((p.dashboard, p.config.records), (Some(default), 5));
        assert_eq!(
            plan(&["--dashboard", "127.0.0.1:0"]).dashboard,
            Some("127.0.0.1:0".parse().unwrap())
        );
        let err = Cli::try_parse_from(["experiment", "--dashboard", "nope"])
            .err()
            .expect("an unparsable address is refused");
        assert!(err.to_string().contains("--dashboard"), "{err}");
    }

    #[test]
    fn html_lands_next_to_the_json() {
        assert_eq!(
            default_html_path(Some(Path::new("out/r.json"))),
            Path::new("out/r.html")
        );
        assert_eq!(
            default_html_path(Some(Path::new("r.html"))),
            Path::new("r.html.html")
        );
        assert_eq!(default_html_path(None), Path::new("experiment.html"));
    }
}
