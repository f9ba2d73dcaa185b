//! What `keyshift experiment` measured, as plain serialisable data, and its text rendering.
//!
//! [`run`](crate::run) collects one [`Measured`] per strategy (raw counts, a latency
//! histogram, lag samples); [`StrategyReport::new`] turns it into the figures people and
//! scripts read. [`ExperimentReport`] is what `--json` writes; its field names are a
//! script-facing interface (the issue requires `strategies[]` objects with at least
//! `strategy, produced, consumed, lost, duplicates, order_violations, migrations,
//! throughput_rps, p50_ms, p99_ms, imbalance_max_over_mean`): add fields freely, rename none.
//! [`ROWS`] are the side-by-side table's rows (metrics; one column per strategy), which the
//! command prints like `keyshift simulate` and [`crate::html`] renders; [`verdict`] is the
//! plain-language conclusion under it.

use std::io::{self, Write};

use keyshift_core::sim::{infeasible_keys, InfeasibleKey, SimConfig, WorkloadKind};

use crate::trace::LatencyBreakdown;
use keyshift_core::stats::{imbalance, LatencyHistogram};
use serde::Serialize;

/// Quantiles at which the latency CDF is sampled for the JSON and the plot: dense in the body,
/// denser in the tail where strategies differ.
const CDF_QUANTILES: &[f64] = &[
    0.0, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7,
    0.75, 0.8, 0.85, 0.9, 0.92, 0.94, 0.95, 0.96, 0.97, 0.98, 0.985, 0.99, 0.9925, 0.995, 0.9975,
    0.999, 0.9995, 0.9999, 1.0,
];

/// Raw measurements of one strategy's run, gathered by the orchestration.
#[derive(Debug, Clone, Default)]
pub struct Measured {
    /// Strategy name.
    pub strategy: String,
    /// Whether the strategy keeps each key on one partition at a time.
    pub preserves_order: bool,
    /// The fresh topic the run used.
    pub topic: String,
    /// The consumer group of the workers.
    pub group: String,
    /// Records whose delivery the broker acknowledged (fences not counted).
    pub produced: u64,
    /// Records the producer could not deliver.
    pub send_errors: u64,
    /// Records acknowledged per partition after the warm-up (index = partition).
    pub partition_load: Vec<u64>,
    /// Records of the most frequent key after the warm-up.
    pub hottest_key_records: u64,
    /// The keys with the highest rates after the warm-up: (key, records, seconds from its
    /// first such record to the last planned send), fastest first.
    pub key_records: Vec<(String, u64, f64)>,
    /// Distinct records the workers processed.
    pub consumed: u64,
    /// Records processed more than once (redeliveries).
    pub duplicates: u64,
    /// Records processed after a later record of their key.
    pub order_violations: u64,
    /// Records a worker started while another worker was processing their key.
    pub concurrent_key_processing: u64,
    /// Records of the experiment that were never processed, as the order checker sees it
    /// (sequence numbers skipped and not filled in).
    pub missing: u64,
    /// End-to-end latency (scheduled send → processing done) of records after the warm-up.
    pub latency: LatencyHistogram,
    /// Scheduled send → broker acknowledgement of records after the warm-up.
    pub ack_latency: LatencyHistogram,
    /// Key moves completed: fences acknowledged, or moves committed in the control log with
    /// coordinated producers.
    pub migrations: u64,
    /// Fence records the producers wrote (with several, each writes its own per move).
    pub fences: u64,
    /// How the producers coordinated (several producers only).
    pub coordination: Option<CoordinationReport>,
    /// Records a worker parked behind a migration barrier.
    pub parked_records: u64,
    /// Total time records spent parked (milliseconds, summed).
    pub parked_ms: f64,
    /// Seconds from the first scheduled send to the last record processed (or to the end of
    /// the drain wait).
    pub duration_s: f64,
    /// Seconds the load generator took to send everything (the offered-load window).
    pub send_s: f64,
    /// Whether every produced record was processed before the drain timeout.
    pub drained: bool,
    /// Consumer-group lag over time.
    pub lag: Vec<LagSample>,
    /// Where latency went (`--trace` only).
    pub latency_breakdown: Option<LatencyBreakdown>,
    /// What the growth step did (`--grow-at`), if there was one.
    pub growth: Option<GrowthFigures>,
}

/// What a growth step (`--grow-at`, `--grow-to`) did and what it cost.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct GrowthFigures {
    /// Partitions keys were homed on before.
    pub from: u32,
    /// Partitions keys were homed on after.
    pub to: u32,
    /// Seconds after the first scheduled send when it started.
    pub at_s: f64,
    /// Whether it went through epoch fences (false: as a plain Kafka producer).
    pub fenced: bool,
    /// Epoch fences written.
    pub epoch_fences: usize,
    /// Keys whose records the producer held until the fences were acknowledged.
    pub held_keys: usize,
    /// Records it held.
    pub held_records: u64,
    /// From the first epoch fence to the switch, milliseconds.
    pub switch_ms: f64,
    /// Records a worker parked behind an epoch barrier (keys whose home changed).
    pub parked_records: u64,
    /// Their park time: median, 90th and 99th percentile and maximum, milliseconds — the delay
    /// the growth added to remapped keys.
    pub park_p50_ms: f64,
    /// 90th percentile.
    pub park_p90_ms: f64,
    /// 99th percentile.
    pub park_p99_ms: f64,
    /// Maximum.
    pub park_max_ms: f64,
    /// Records parked of keys whose home did not change and that no move routed (the goal is
    /// 0: the growth never delays them).
    pub unchanged_keys_parked: u64,
}

/// How coordinated producers (`--routes coordinated`) made their moves, summed or merged over
/// the producers of one run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CoordinationReport {
    /// Producers that took part.
    pub producers: u32,
    /// Moves proposed by deciders.
    pub moves_proposed: u64,
    /// Moves committed (read from the control log; every producer reads the same ones).
    pub moves_committed: u64,
    /// Moves aborted (a member never answered within the move timeout, or a new term).
    pub moves_aborted: u64,
    /// Terms claimed (the first decider's claim included): more than 1 means the decider
    /// changed during the run.
    pub decider_claims: u64,
    /// Control-topic writes that failed (each handled).
    pub control_write_failures: u64,
    /// Moved keys held: from reading a propose to reading its commit or abort, merged over
    /// the producers.
    pub hold_count: u64,
    /// Median hold, milliseconds.
    pub hold_p50_ms: f64,
    /// 99th percentile hold, milliseconds.
    pub hold_p99_ms: f64,
    /// Median produce round trip (a fence's enqueue to its acknowledgement), milliseconds:
    /// the unit the hold is measured against.
    pub produce_rtt_p50_ms: f64,
}

/// One sample of the consumer group's lag.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LagSample {
    /// Seconds since the first scheduled send.
    pub t_s: f64,
    /// Records not yet committed, summed over partitions (end offset − committed offset).
    pub total: u64,
    /// The largest single partition's lag.
    pub max_partition: u64,
}

/// One strategy's figures (one object of the JSON's `strategies` array).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StrategyReport {
    /// Strategy name (`hash`, `slops`, `keyshift`, `pkg`, `unordered`).
    pub strategy: String,
    /// Whether the strategy keeps each key on one partition at a time (moves are fenced);
    /// `order_violations` must be 0 when true.
    pub preserves_order: bool,
    /// The fresh topic this strategy ran on.
    pub topic: String,
    /// The workers' consumer group.
    pub group: String,
    /// Records whose delivery the broker acknowledged (fences not counted).
    pub produced: u64,
    /// Distinct records processed by the workers.
    pub consumed: u64,
    /// `produced − consumed`: must be 0.
    pub lost: u64,
    /// Records processed more than once (harmless for order; over-consumption).
    pub duplicates: u64,
    /// Records processed after a later record of their key.
    pub order_violations: u64,
    /// Records a worker started while another worker was inside a record of the same key (a
    /// shared check sees every worker): per-key serial processing. Must be 0 when
    /// `preserves_order`.
    pub concurrent_key_processing: u64,
    /// Records the producer failed to deliver.
    pub send_errors: u64,
    /// Sequence numbers skipped and never processed, as the order checker saw them: where
    /// records went missing (lost records whose key had later records processed).
    pub missing: u64,
    /// Whether everything produced was processed before the drain timeout.
    pub drained: bool,
    /// Seconds from the first send to the last record processed.
    pub duration_s: f64,
    /// `consumed ÷ duration_s`.
    pub throughput_rps: f64,
    /// Records counted in the latency figures (those scheduled after the warm-up).
    pub measured: u64,
    /// End-to-end latency median (scheduled send → processed), milliseconds.
    pub p50_ms: f64,
    /// 99th percentile end-to-end latency, milliseconds.
    pub p99_ms: f64,
    /// 99.9th percentile end-to-end latency, milliseconds.
    pub p999_ms: f64,
    /// Largest end-to-end latency, milliseconds.
    pub max_ms: f64,
    /// Mean end-to-end latency, milliseconds.
    pub mean_ms: f64,
    /// Median of scheduled send → broker acknowledgement (producer + broker), milliseconds.
    pub produce_ack_p50_ms: f64,
    /// 99th percentile of scheduled send → broker acknowledgement, milliseconds.
    pub produce_ack_p99_ms: f64,
    /// hash's p99 ÷ this strategy's p99 (present when hash ran too): how many times lower.
    pub p99_ratio_vs_hash: Option<f64>,
    /// Records per partition after the warm-up (index = partition).
    pub partition_load: Vec<u64>,
    /// Records of the most frequent key after the warm-up.
    pub hottest_key_records: u64,
    /// Busiest partition's load ÷ mean partition load.
    pub imbalance_max_over_mean: f64,
    /// Busiest partition's load ÷ `max(mean, hottest key)`, the best any order-preserving
    /// strategy can do.
    pub imbalance_max_over_bound: f64,
    /// Offered utilisation of the busiest partition's consumer: its arrival rate × the mean
    /// service time. Above 1 its queue grows for as long as the load lasts (saturated).
    pub busiest_partition_utilization: f64,
    /// Key moves completed: fences acknowledged, or moves committed in the control log with
    /// coordinated producers (`--routes coordinated`, the default with `--producers` above 1).
    pub migrations: u64,
    /// Fence records written (coordinated producers each write their own fence per move, so
    /// this is about `producers × migrations` then).
    pub fences: u64,
    /// How the producers coordinated their moves (coordinated routes and an order-preserving
    /// strategy; absent otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coordination: Option<CoordinationReport>,
    /// Records parked behind a migration barrier.
    pub parked_records: u64,
    /// Total parked time, milliseconds summed over parked records.
    pub parked_ms: f64,
    /// Keys whose rate after the warm-up needs more than one worker (rate × mean service
    /// time above 1), hottest first: per-key order makes such a load unsustainable.
    pub infeasible_keys: Vec<InfeasibleKey>,
    /// One warning per infeasible key.
    pub warnings: Vec<String>,
    /// Latency CDF: `[latency_ms, fraction of records at or below it]` pairs.
    pub latency_cdf: Vec<[f64; 2]>,
    /// Consumer-group lag over time.
    pub lag: Vec<LagSample>,
    /// Where latency went (`--trace` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_breakdown: Option<LatencyBreakdown>,
    /// What the growth step did (`--grow-at`; absent without one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub growth: Option<GrowthFigures>,
}

impl StrategyReport {
    /// The figures of one run of single-slot workers; `config` gives the service time for the
    /// utilisation estimate.
    pub fn new(m: Measured, config: &SimConfig) -> Self {
        Self::with_slots(m, config, 1)
    }

    /// The figures of one run whose workers had `slots` slots each (`--concurrency`): a slot
    /// spends `slots` times the single-slot service time on a record, so a key is judged
    /// infeasible when its records need more than one slot's time — per-key order keeps a key
    /// in one slot at a time however many a worker has.
    pub fn with_slots(m: Measured, config: &SimConfig, slots: usize) -> Self {
        let imb = imbalance(&m.partition_load, m.hottest_key_records);
        let loaded: u64 = m.partition_load.iter().sum();
        let busiest = m.partition_load.iter().copied().max().unwrap_or(0);
        // The partition loads cover the post-warm-up share of the send window.
        let window = m.send_s * (1.0 - config.warmup);
        let busiest_partition_utilization = if window > 0.0 && loaded > 0 {
            busiest as f64 / window * config.mean_service_secs()
        } else {
            0.0
        };
        let infeasible_keys = infeasible_keys(
            m.key_records
                .iter()
                .map(|(k, n, span)| (k.as_bytes(), *n, *span)),
            config.mean_service_secs() * slots as f64,
        );
        let latency_cdf = if m.latency.is_empty() {
            Vec::new()
        } else {
            CDF_QUANTILES
                .iter()
                .map(|&q| [m.latency.quantile_ms(q), q])
                .collect()
        };
        StrategyReport {
            lost: m.produced.saturating_sub(m.consumed),
            throughput_rps: if m.duration_s > 0.0 {
                m.consumed as f64 / m.duration_s
            } else {
                0.0
            },
            measured: m.latency.len(),
            p50_ms: m.latency.quantile_ms(0.5),
            p99_ms: m.latency.quantile_ms(0.99),
            p999_ms: m.latency.quantile_ms(0.999),
            max_ms: m.latency.max_ms(),
            mean_ms: m.latency.mean_ms(),
            produce_ack_p50_ms: m.ack_latency.quantile_ms(0.5),
            produce_ack_p99_ms: m.ack_latency.quantile_ms(0.99),
            p99_ratio_vs_hash: None,
            imbalance_max_over_mean: imb.max_over_mean,
            imbalance_max_over_bound: imb.max_over_bound,
            busiest_partition_utilization,
            latency_cdf,
            strategy: m.strategy,
            preserves_order: m.preserves_order,
            topic: m.topic,
            group: m.group,
            missing: m.missing,
            produced: m.produced,
            consumed: m.consumed,
            duplicates: m.duplicates,
            order_violations: m.order_violations,
            concurrent_key_processing: m.concurrent_key_processing,
            send_errors: m.send_errors,
            drained: m.drained,
            duration_s: m.duration_s,
            partition_load: m.partition_load,
            hottest_key_records: m.hottest_key_records,
            migrations: m.migrations,
            fences: m.fences,
            coordination: m.coordination,
            parked_records: m.parked_records,
            parked_ms: m.parked_ms,
            warnings: infeasible_keys.iter().map(InfeasibleKey::warning).collect(),
            infeasible_keys,
            lag: m.lag,
            latency_breakdown: m.latency_breakdown,
            growth: m.growth,
        }
    }
}

/// The setup every strategy ran with.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Setup {
    /// Where the records went: `embedded` (an in-process tansu broker) or the bootstrap
    /// servers given.
    pub broker: String,
    /// Offered load, records per second.
    pub rate: f64,
    /// `uniform` or `poisson` arrivals.
    pub arrivals: String,
    /// Records produced per strategy.
    pub records: u64,
    /// Partitions of each fresh topic.
    pub partitions: u32,
    /// Workers (consumer-group members).
    pub consumers: u32,
    /// Records each worker processes at once (`--concurrency`), never two of one key.
    pub concurrency: usize,
    /// Producer instances the load was spread over (`--producers`).
    pub producers: u32,
    /// Where they kept routes of moved keys: `durable`, `ephemeral` or `coordinated`
    /// (`--routes`).
    pub routes: String,
    /// Key distribution, e.g. `zipf(s=1.1, v=2.72) over 2800 keys`.
    pub workload: String,
    /// Aggregate utilisation the service time is set for.
    pub utilization: f64,
    /// Mean service time per record, milliseconds (`utilization × consumers ÷ rate`).
    pub service_ms: f64,
    /// `fixed` or `exponential` service times.
    pub service: String,
    /// Seed of the workload.
    pub seed: u64,
    /// Fraction of records (by send order) left out of latency and load figures.
    pub warmup: f64,
}

impl Setup {
    /// The setup of `config` against `broker`, with one producer.
    pub fn new(config: &SimConfig, broker: String) -> Self {
        Setup {
            producers: 1,
            routes: "coordinated".into(),
            broker,
            rate: config.rate,
            arrivals: format!("{:?}", config.arrivals).to_lowercase(),
            records: config.records,
            partitions: config.partitions,
            consumers: config.consumers,
            concurrency: 1,
            workload: describe_keys(config),
            utilization: config.utilization,
            service_ms: config.mean_service_secs() * 1e3,
            service: format!("{:?}", config.service).to_lowercase(),
            seed: config.seed,
            warmup: config.warmup,
        }
    }

    /// One line describing the setup, for the text and HTML outputs.
    pub fn describe(&self) -> String {
        format!(
            "{} records at {} rec/s ({} arrivals), {}, {}{} partitions → {} workers{}, {} \
             service of {:.1} ms (utilisation {}), seed {}, warm-up {:.0} %, broker: {}",
            self.records,
            self.rate,
            self.arrivals,
            self.workload,
            match (self.producers, self.routes.as_str()) {
                (1, "coordinated") => String::new(),
                (1, routes) => format!("1 {routes} producer → "),
                (n, routes) => format!("{n} {routes} producers → "),
            },
            self.partitions,
            self.consumers,
            if self.concurrency > 1 {
                format!(" × {} slots", self.concurrency)
            } else {
                String::new()
            },
            self.service,
            self.service_ms,
            self.utilization,
            self.seed,
            self.warmup * 100.0,
            self.broker
        )
    }
}

fn describe_keys(config: &SimConfig) -> String {
    match config.workload {
        WorkloadKind::Zipf => format!(
            "zipf(s={}, v={}) over {} keys",
            config.zipf_s, config.zipf_v, config.keys
        ),
        WorkloadKind::Targeted => format!("targeted hot spot over {} keys", config.keys),
        WorkloadKind::Uniform => format!("uniform over {} keys", config.keys),
    }
}

/// Everything `keyshift experiment` reports (what `--json` writes).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExperimentReport {
    /// The shared setup.
    pub setup: Setup,
    /// One entry per strategy, in the order they ran.
    pub strategies: Vec<StrategyReport>,
}

impl ExperimentReport {
    /// A report of `strategies`, filling in each one's p99 ratio against hash.
    pub fn new(setup: Setup, mut strategies: Vec<StrategyReport>) -> Self {
        let hash_p99 = strategies
            .iter()
            .find(|s| s.strategy == "hash")
            .map(|s| s.p99_ms);
        if let Some(h) = hash_p99 {
            for s in &mut strategies {
                if s.p99_ms > 0.0 && h > 0.0 {
                    s.p99_ratio_vs_hash = Some(h / s.p99_ms);
                }
            }
        }
        ExperimentReport { setup, strategies }
    }

    /// Whether every ordered strategy kept order and nothing was lost: the correctness part
    /// of the experiment, which makes the command fail when it does not hold.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for s in &self.strategies {
            if s.lost > 0 {
                problems.push(format!(
                    "{}: {} of {} produced records were never processed",
                    s.strategy, s.lost, s.produced
                ));
            }
            if s.send_errors > 0 {
                problems.push(format!(
                    "{}: {} records could not be produced",
                    s.strategy, s.send_errors
                ));
            }
            if s.preserves_order && s.order_violations > 0 {
                problems.push(format!(
                    "{}: {} per-key order violations in an order-preserving strategy",
                    s.strategy, s.order_violations
                ));
            }
            if s.preserves_order && s.concurrent_key_processing > 0 {
                problems.push(format!(
                    "{}: {} records started while another worker was processing their key, in \
                     an order-preserving strategy",
                    s.strategy, s.concurrent_key_processing
                ));
            }
        }
        problems
    }
}

/// How a row of the side-by-side table renders one strategy's cell.
pub type Cell = fn(&StrategyReport) -> String;

/// Rows of the side-by-side table: label and how to render one strategy's cell.
pub const ROWS: &[(&str, Cell)] = &[
    ("throughput (rec/s)", |r| format!("{:.1}", r.throughput_rps)),
    ("latency p50 (ms)", |r| format!("{:.1}", r.p50_ms)),
    ("latency p99 (ms)", |r| format!("{:.1}", r.p99_ms)),
    ("latency p99.9 (ms)", |r| format!("{:.1}", r.p999_ms)),
    ("latency max (ms)", |r| format!("{:.1}", r.max_ms)),
    ("produce ack p99 (ms)", |r| {
        format!("{:.1}", r.produce_ack_p99_ms)
    }),
    ("p99 vs hash (× lower)", |r| {
        r.p99_ratio_vs_hash
            .map_or("-".to_string(), |x| format!("{x:.2}"))
    }),
    ("imbalance max/mean", |r| {
        format!("{:.3}", r.imbalance_max_over_mean)
    }),
    ("imbalance max/bound", |r| {
        format!("{:.3}", r.imbalance_max_over_bound)
    }),
    ("busiest partition util.", |r| {
        format!("{:.2}", r.busiest_partition_utilization)
    }),
    ("migrations", |r| r.migrations.to_string()),
    ("fences", |r| r.fences.to_string()),
    ("moves aborted (coordinated)", |r| {
        r.coordination
            .as_ref()
            .map_or("-".to_string(), |c| c.moves_aborted.to_string())
    }),
    ("key hold p50 / p99 (ms)", |r| {
        r.coordination.as_ref().map_or("-".to_string(), |c| {
            format!("{:.0} / {:.0}", c.hold_p50_ms, c.hold_p99_ms)
        })
    }),
    ("decider claims", |r| {
        r.coordination
            .as_ref()
            .map_or("-".to_string(), |c| c.decider_claims.to_string())
    }),
    ("parked (records)", |r| r.parked_records.to_string()),
    ("parked (ms total)", |r| format!("{:.1}", r.parked_ms)),
    ("growth (partitions)", |r| {
        growth(r, |g| format!("{} → {}", g.from, g.to))
    }),
    ("growth: at (s)", |r| {
        growth(r, |g| format!("{:.1}", g.at_s))
    }),
    ("growth: epoch fences", |r| {
        growth(r, |g| {
            if g.fenced {
                g.epoch_fences.to_string()
            } else {
                "unfenced".to_string()
            }
        })
    }),
    ("growth: held keys / records", |r| {
        growth(r, |g| format!("{} / {}", g.held_keys, g.held_records))
    }),
    ("growth: parked records", |r| {
        growth(r, |g| g.parked_records.to_string())
    }),
    ("growth: park p50 (ms)", |r| {
        growth(r, |g| format!("{:.0}", g.park_p50_ms))
    }),
    ("growth: park p99 (ms)", |r| {
        growth(r, |g| format!("{:.0}", g.park_p99_ms))
    }),
    ("growth: park max (ms)", |r| {
        growth(r, |g| format!("{:.0}", g.park_max_ms))
    }),
    ("growth: unchanged keys parked", |r| {
        growth(r, |g| g.unchanged_keys_parked.to_string())
    }),
    ("order violations", |r| r.order_violations.to_string()),
    ("concurrent key processing", |r| {
        r.concurrent_key_processing.to_string()
    }),
    ("duplicates", |r| r.duplicates.to_string()),
    ("produced", |r| r.produced.to_string()),
    ("consumed", |r| r.consumed.to_string()),
    ("lost (produced − consumed)", |r| r.lost.to_string()),
    ("duration (s)", |r| format!("{:.1}", r.duration_s)),
];

/// A growth row's cell: `cell` of the run's growth figures, or `-` for a run without growth.
fn growth(r: &StrategyReport, cell: impl FnOnce(&GrowthFigures) -> String) -> String {
    r.growth.as_ref().map_or_else(|| "-".to_string(), cell)
}

/// Plain-language conclusions: the p99 ratio against hash and the correctness checks.
pub fn verdict(report: &ExperimentReport) -> Vec<String> {
    let mut lines = Vec::new();
    // The workload is the same for every strategy: warn once, from the first that saw it.
    if let Some(s) = report.strategies.iter().find(|s| !s.warnings.is_empty()) {
        lines.extend(s.warnings.iter().map(|w| format!("WARNING: {w}")));
    }
    let hash = report.strategies.iter().find(|s| s.strategy == "hash");
    for s in &report.strategies {
        if let (Some(h), Some(ratio)) = (hash, s.p99_ratio_vs_hash) {
            if s.strategy != "hash" {
                lines.push(format!(
                    "{}: p99 {:.1} ms vs hash {:.1} ms → {ratio:.2}× lower; busiest partition \
                     utilisation {:.2} vs hash {:.2}",
                    s.strategy,
                    s.p99_ms,
                    h.p99_ms,
                    s.busiest_partition_utilization,
                    h.busiest_partition_utilization
                ));
            }
        }
    }
    let problems = report.problems();
    if problems.is_empty() {
        let ordered: Vec<&str> = report
            .strategies
            .iter()
            .filter(|s| s.preserves_order)
            .map(|s| s.strategy.as_str())
            .collect();
        lines.push(format!(
            "checks: 0 lost records{}",
            if ordered.is_empty() {
                String::new()
            } else {
                format!(
                    ", 0 order violations and 0 concurrent key processing for {}",
                    ordered.join(", ")
                )
            }
        ));
    } else {
        lines.extend(problems.into_iter().map(|p| format!("PROBLEM: {p}")));
    }
    lines
}

/// Writes `value` as pretty JSON followed by a newline.
pub fn json<T: Serialize>(out: &mut impl Write, value: &T) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value)?;
    writeln!(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(name: &str, latencies_ms: &[f64]) -> Measured {
        let mut latency = LatencyHistogram::new();
        for ms in latencies_ms {
            latency.record_secs(ms / 1e3);
        }
        Measured {
            strategy: name.into(),
            preserves_order: true,
            produced: 100,
            consumed: 100,
            partition_load: vec![60, 20, 20],
            hottest_key_records: 10,
            latency,
            duration_s: 10.0,
            send_s: 10.0,
            drained: true,
            ..Measured::default()
        }
    }

    #[test]
    fn a_key_that_needs_more_than_one_worker_is_flagged() {
        // 8 s after warm-up at 32.5 ms a record: a worker does 246 records; location_0 has
        // 420 (1.71 workers), location_1 200 (0.81).
        let config = SimConfig::default();
        let mut m = measured("keyshift", &[1.0]);
        m.key_records = vec![
            ("location_0".into(), 420, 8.0),
            ("location_1".into(), 200, 8.0),
        ];
        let r = StrategyReport::new(m, &config);
        assert_eq!(r.infeasible_keys.len(), 1);
        assert_eq!(r.infeasible_keys[0].key, "location_0");
        assert!((r.infeasible_keys[0].consumers_needed - 420.0 / 8.0 * 0.0325).abs() < 1e-9);
        assert_eq!(
            r.warnings,
            vec![
                "key location_0 needs 1.71 consumers; per-key order makes this load unsustainable"
            ]
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["infeasible_keys"][0]["key"], "location_0");
        let report = ExperimentReport::new(Setup::new(&config, "embedded".into()), vec![r]);
        assert!(verdict(&report)[0].starts_with("WARNING: key location_0 needs 1.71"));
        // Without a hot key: nothing to warn about.
        let calm = StrategyReport::new(measured("hash", &[1.0]), &config);
        assert!(calm.infeasible_keys.is_empty() && calm.warnings.is_empty());
    }

    #[test]
    fn figures_and_ratio_against_hash() {
        let config = SimConfig::default();
        let hash = StrategyReport::new(measured("hash", &[10.0; 100]), &config);
        let ks = StrategyReport::new(measured("keyshift", &[2.0; 100]), &config);
        assert_eq!(hash.lost, 0);
        assert!((hash.imbalance_max_over_mean - 1.8).abs() < 1e-9);
        assert!((hash.throughput_rps - 10.0).abs() < 1e-9);
        // 60 records over the post-warm-up 8 s at 32.5 ms each.
        assert!((hash.busiest_partition_utilization - 60.0 / 8.0 * 0.0325).abs() < 1e-9);
        let report = ExperimentReport::new(Setup::new(&config, "embedded".into()), vec![hash, ks]);
        let ratio = report.strategies[1].p99_ratio_vs_hash.unwrap();
        assert!((ratio - 5.0).abs() < 0.05, "{ratio}");
        assert!(report.problems().is_empty());
        let out = verdict(&report).join("\n");
        assert!(
            out.contains("keyshift: p99 2.0 ms vs hash 10.0 ms"),
            "{out}"
        );
        assert!(out.contains("checks: 0 lost records"), "{out}");
    }

    #[test]
    fn lost_records_and_violations_are_problems() {
        let config = SimConfig::default();
        let mut m = measured("keyshift", &[1.0]);
        m.consumed = 97;
        m.order_violations = 2;
        m.concurrent_key_processing = 1;
        let r = StrategyReport::new(m, &config);
        assert_eq!(r.lost, 3);
        let report = ExperimentReport::new(Setup::new(&config, "embedded".into()), vec![r]);
        let problems = report.problems();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(
            problems[2].contains("another worker was processing"),
            "{problems:?}"
        );
        // An unordered strategy's violations are expected, not a problem.
        let mut m = measured("unordered", &[1.0]);
        m.preserves_order = false;
        m.order_violations = 5;
        let report = ExperimentReport::new(
            Setup::new(&config, "embedded".into()),
            vec![StrategyReport::new(m, &config)],
        );
        assert!(report.problems().is_empty());
    }

    #[test]
    fn json_has_the_required_fields() {
        let config = SimConfig::default();
        let r = StrategyReport::new(measured("hash", &[1.0, 2.0]), &config);
        let report = ExperimentReport::new(Setup::new(&config, "embedded".into()), vec![r]);
        let v = serde_json::to_value(&report).unwrap();
        for field in [
            "strategy",
            "produced",
            "consumed",
            "lost",
            "duplicates",
            "order_violations",
            "concurrent_key_processing",
            "migrations",
            "throughput_rps",
            "p50_ms",
            "p99_ms",
            "imbalance_max_over_mean",
        ] {
            assert!(!v["strategies"][0][field].is_null(), "missing {field}");
        }
        let cdf = v["strategies"][0]["latency_cdf"].as_array().unwrap();
        assert_eq!(cdf.len(), CDF_QUANTILES.len());
    }
}
