//! The orchestration of `keyshift experiment`: for each strategy in turn, on a fresh topic,
//! workers → group settle → open-loop load through the keyshift producer → drain → stop.
//!
//! One strategy's run, step by step:
//! 1. a fresh topic `<prefix>-<strategy>-<run id>` with P partitions, and a fresh group;
//! 2. C [`OrderedConsumer`] workers in that group, in this process. Each processes one record
//!    at a time by sleeping for a service time drawn like the simulator's (mean
//!    `utilization × consumers ÷ rate`, fixed or exponential, seeded per worker). All share
//!    one [`SequenceCheck`] that sees the whole stream, so per-key order is checked globally;
//! 3. wait until the group has settled: every worker owns a partition and all P are owned
//!    (records sent before that would measure the group join, not the strategy);
//! 4. the load: the same precomputed open-loop schedule for every strategy (keys and send
//!    times from the core's [`Workload`]), each record a [`Probe`] carrying its per-key
//!    sequence number and its *scheduled* send time, sent through one [`KeyshiftProducer`]
//!    without waiting for earlier sends (open loop: a slow system does not slow the offered
//!    load, so queueing delay is measured instead of hidden);
//! 5. wait until every acknowledged record was processed once, bounded by the drain timeout
//!    (what is missing then is reported as lost);
//! 6. meanwhile a sampler thread reads the group's lag (end offsets − committed offsets)
//!    every `lag_interval` for the plot, and feeds per-partition throughput and lag to the
//!    producer's strategy every `feedback_interval_ms` (keyshift's capacity feedback);
//! 7. stop the workers (final commits, leave the group) and gather the figures.
//!
//! With `--dashboard` the live page ([`Background`]) is bound before the broker starts and
//! shown each run's topic and group as soon as the topic exists; it stops before the broker.
//!
//! End-to-end latency is measured by the workers' handler: processing done minus the
//! record's scheduled send time, for records scheduled after the warm-up.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};
use keyshift_core::probe::{Probe, SeqVerdict, SequenceCheck};
use keyshift_core::protocol::epoch::{remaps, EPOCH_SET_INDEX};
use keyshift_core::serial::SerialCheck;
use keyshift_core::sim::{ArrivalProcess, Assignor, ServiceDist, SimConfig};
use keyshift_core::stats::LatencyHistogram;
use keyshift_core::strategy::{self, PartitionFeedback};
use keyshift_core::workload::{key_name, Schedule, Workload};
use keyshift_dashboard::{Background, Dashboard, DashboardConfig, KafkaOptions, Source};
use keyshift_kafka::{
    Admin, AdminConfig, ClientSettings, CoordinationStats, DeliveredRecord, EmbeddedBroker,
    GrowthReport, KeyshiftProducer, OrderedConsumer, OrderedConsumerBuilder, ProducerStats, Routes,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::plan::{grows_unfenced, partition_serial, producer_strategy, Grow, Plan};
use crate::report::{
    CoordinationReport, ExperimentReport, GrowthFigures, LagSample, Measured, Setup, StrategyReport,
};
use crate::trace::{Processed, TraceLog};

/// How long the group must look settled before the load starts: a member that joins late
/// triggers one more rebalance, which this outlasts.
const SETTLE_STABLE: Duration = Duration::from_millis(1500);
/// How long the first metadata request to a given cluster (`--bootstrap-servers`) may take.
const REACHABLE_TIMEOUT: Duration = Duration::from_secs(15);
/// Lead time between planning the first send and making it, so the schedule starts on time.
const START_LEAD: Duration = Duration::from_millis(100);
/// `fetch.wait.max.ms` of the workers (a `-X` property still wins). A Kafka broker answers a
/// fetch as soon as data is there, so this only bounds idle polls; tansu 0.6 (the embedded
/// broker) always waits out the fetch's max wait (half of it when ≥ 250 ms) before answering,
/// so librdkafka's default 500 ms would add ~250–500 ms to every record's latency.
const WORKER_FETCH_WAIT_MS: &str = "20";
/// Session timeout of the workers: short, because a worker that dies mid-run should give
/// its partitions back within the run, not after librdkafka's default 45 s.
const WORKER_SESSION_TIMEOUT: Duration = Duration::from_secs(10);

/// One record of the precomputed load.
#[derive(Debug, Clone)]
struct Planned {
    /// Seconds after the start of the load.
    at: f64,
    /// Key index (key = `location_<n>`).
    key: u64,
    /// The key's sequence number (0, 1, 2, ... per key in send order).
    seq: u64,
}

/// The same records for every strategy: keys and times from the core's workload.
fn plan_load(config: &SimConfig) -> anyhow::Result<Vec<Planned>> {
    let schedule = match config.arrivals {
        ArrivalProcess::Uniform => Schedule::uniform(config.rate)?,
        ArrivalProcess::Poisson => Schedule::poisson(config.rate)?,
    };
    let workload = Workload::new(config.key_dist()?, schedule, config.seed);
    let mut next_seq: std::collections::HashMap<u64, u64> = Default::default();
    Ok(workload
        .take(config.records as usize)
        .map(|a| {
            let seq = next_seq.entry(a.key).or_insert(0);
            let planned = Planned {
                at: a.at,
                key: a.key,
                seq: *seq,
            };
            *seq += 1;
            planned
        })
        .collect())
}

/// Index of the first record counted in latency and load figures.
fn warmup_index(config: &SimConfig) -> usize {
    (config.records as f64 * config.warmup).floor() as usize
}

fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The live dashboard's address could not be bound (in use, not local, ...): the command
/// reports it as a bad `--dashboard` value.
#[derive(Debug, thiserror::Error)]
#[error("cannot serve the dashboard on {addr}: {reason}")]
pub struct DashboardUnavailable {
    /// The address asked for.
    pub addr: std::net::SocketAddr,
    /// Why binding it failed.
    pub reason: String,
}

/// Runs every strategy of `plan` and returns the report.
pub fn run(plan: &Plan) -> anyhow::Result<ExperimentReport> {
    let load = plan_load(&plan.config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("keyshift-experiment")
        .enable_all()
        .build()?;
    // Bound before anything starts: an address in use fails at once, naming the flag.
    let dashboard = match plan.dashboard {
        None => None,
        Some(addr) => {
            let bound =
                runtime
                    .block_on(Dashboard::bind(addr))
                    .map_err(|e| DashboardUnavailable {
                        addr,
                        reason: e.to_string(),
                    })?;
            eprintln!(
                "live dashboard: http://{}/ (follows each run's topic and group)",
                bound.local_addr()
            );
            Some(bound)
        }
    };
    let (broker, bootstrap) = match &plan.bootstrap_servers {
        Some(b) => (None, b.clone()),
        None => {
            eprintln!("starting the embedded broker (tansu, sqlite) ...");
            let broker = EmbeddedBroker::start().context("starting the embedded broker")?;
            let bootstrap = broker.bootstrap_servers().to_string();
            (Some(broker), bootstrap)
        }
    };
    let settings = plan.client_settings(&bootstrap, &[]);
    // Kafka assigns partitions client-side, so --assignor maps onto the workers' own setting.
    let assignor = match plan.config.assignor {
        Assignor::Range => "range",
        Assignor::RoundRobin => "roundrobin",
    };
    let worker_settings = plan.client_settings(
        &bootstrap,
        &[
            ("fetch.wait.max.ms", WORKER_FETCH_WAIT_MS),
            ("partition.assignment.strategy", assignor),
        ],
    );
    let admin = match &broker {
        Some(b) => b.admin().clone(),
        None => {
            // At once and with the broker's reason (a refused login names its mechanism),
            // rather than as a timeout when the first topic is created.
            keyshift_kafka::client_errors::check_reachable(&settings, REACHABLE_TIMEOUT)
                .map_err(anyhow::Error::msg)?;
            Admin::with_config(&settings, AdminConfig::default())
                .with_context(|| format!("connecting to {bootstrap}"))?
        }
    };
    let setup = Setup {
        producers: plan.producers,
        concurrency: plan.concurrency,
        service_ms: plan.mean_service_secs() * 1e3,
        routes: match &plan.routes {
            Routes::Durable(_) => "durable",
            Routes::Ephemeral => "ephemeral",
            Routes::Coordinated(_) => "coordinated",
        }
        .into(),
        ..Setup::new(
            &plan.config,
            match &broker {
                Some(_) => format!("embedded tansu at {bootstrap}"),
                None => bootstrap.clone(),
            },
        )
    };
    let dashboard = dashboard
        .map(|d| Background::spawn(d, dashboard_config(settings.clone()), runtime.handle()));
    if plan.producers > 1 && !matches!(plan.routes, Routes::Coordinated(_)) {
        eprintln!(
            "WARNING: {} producers with {} routes move keys each on their own: per-key order \
             is expected to break (coordinated routes keep it)",
            plan.producers, setup.routes
        );
    }
    // Base 36 of the start time: short, sortable, unique per run on one cluster.
    let run_id = radix36(SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as u64);
    let mut reports = Vec::new();
    for (i, name) in plan.strategies.iter().enumerate() {
        let growth = plan.grow.map_or(String::new(), |g| {
            format!(
                ", growing to {} at {:.0} % ({})",
                g.to,
                g.at * 100.0,
                if grows_unfenced(name) {
                    "unfenced, as Kafka's partitioner"
                } else {
                    "epoch fences"
                }
            )
        });
        eprintln!(
            "[{}/{}] {name}: {} records at {} rec/s over {} partitions{growth}, {} workers",
            i + 1,
            plan.strategies.len(),
            plan.config.records,
            plan.config.rate,
            plan.config.partitions,
            plan.config.consumers
        );
        let topic = format!("{}-{name}-{run_id}", plan.topic_prefix);
        admin
            .create_topic(&topic, plan.topic_partitions())
            .with_context(|| format!("strategy {name}: creating topic {topic}"))?;
        if let Some(d) = &dashboard {
            d.show(Source {
                label: format!("run {}/{}: {name}", i + 1, plan.strategies.len()),
                topic: topic.clone(),
                groups: vec![group_of(&topic)],
            });
        }
        let measured = run_strategy(
            plan,
            &runtime,
            (&settings, &worker_settings),
            &admin,
            &load,
            name,
            &topic,
        )
        .with_context(|| format!("strategy {name} on topic {topic}"))?;
        let report = StrategyReport::with_slots(measured, &plan.config, plan.concurrency);
        eprintln!(
            "      {name}: produced {}, consumed {}, p99 {:.1} ms, {} migrations, {} order \
             violations, {} concurrent key processing, {:.1} s",
            report.produced,
            report.consumed,
            report.p99_ms,
            report.migrations,
            report.order_violations,
            report.concurrent_key_processing,
            report.duration_s
        );
        reports.push(report);
    }
    if let Some(d) = dashboard {
        if let Err(err) = runtime.block_on(d.stop()) {
            tracing::warn!(%err, "the live dashboard ended with an error");
        }
    }
    drop(admin);
    if let Some(b) = broker {
        b.shutdown();
    }
    Ok(ExperimentReport::new(setup, reports))
}

/// The workers' consumer group of a run's topic.
fn group_of(topic: &str) -> String {
    format!("{topic}-workers")
}

/// The live dashboard of `--dashboard`: `keyshift dashboard`'s defaults (1 s updates, 15
/// minutes of history, fences tailed), reading the experiment's cluster. The experiment's
/// producer and workers run in this process and export no `/metrics`, so there is nothing
/// to scrape: the page shows what Kafka says (partition rates against their bound, the
/// group's lag and owners, moves from the fence records).
fn dashboard_config(settings: ClientSettings) -> DashboardConfig {
    let interval = Duration::from_secs(1);
    let history = Duration::from_secs(900);
    let timeout = Duration::from_secs(2);
    DashboardConfig {
        kafka: KafkaOptions {
            settings,
            // Set per run by `Background::show`.
            topic: String::new(),
            groups: Vec::new(),
            interval,
            timeout,
            tail_fences: true,
            fence_lookback: history,
        },
        scrape: Vec::new(),
        interval,
        history,
        hot_keys: 20,
        scrape_timeout: timeout,
    }
}

fn radix36(mut n: u64) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).expect("ASCII digits")
}

/// What the workers' handlers gather.
#[derive(Debug, Default)]
struct Collector {
    /// Distinct probe records processed.
    consumed: u64,
    /// Latency of records scheduled after the warm-up.
    latency: LatencyHistogram,
    /// When the last distinct record was processed.
    last_done: Option<Instant>,
    /// Park time of records parked behind an epoch barrier (a growth step only).
    growth_park: LatencyHistogram,
    /// Parked records of keys whose home the growth did not change, outside any move's set.
    unchanged_parked: u64,
}

/// Draws service times like the simulator: the mean, or exponential around it.
struct ServiceTimes {
    mean: f64,
    dist: ServiceDist,
    rng: ChaCha8Rng,
}

impl ServiceTimes {
    fn next(&mut self) -> Duration {
        Duration::from_secs_f64(self.dist.sample(self.mean, &mut self.rng).max(0.0))
    }
}

/// Shared state of one strategy's run that the sampler and the progress bar read.
struct Live {
    sent: AtomicU64,
    acked: AtomicU64,
    consumed: AtomicU64,
    lag: AtomicU64,
    /// Records processed per partition (index = partition), fences not included: the
    /// throughput fed back to the strategy, counted like the simulator's completions.
    completed: Vec<AtomicU64>,
}

#[allow(clippy::too_many_arguments)]
fn run_strategy(
    plan: &Plan,
    runtime: &tokio::runtime::Runtime,
    (settings, worker_settings): (&ClientSettings, &ClientSettings),
    admin: &Admin,
    load: &[Planned],
    name: &str,
    topic: &str,
) -> anyhow::Result<Measured> {
    let config = &plan.config;
    // Every partition of the topic, those a growth step starts using included.
    let partitions = plan.topic_partitions();
    let group = group_of(topic);
    let grow = plan.grow;
    let homes = grow.map(|g| (config.partitions, g.to));
    let hasher = config.strategy.hasher;

    // Warm-up cut-off by scheduled time: records scheduled before it are left out.
    let warm = warmup_index(config);
    let warm_at = load.get(warm).map_or(f64::INFINITY, |p| p.at);

    let check = Arc::new(Mutex::new(SequenceCheck::default()));
    // Sees every worker: a key inside two workers' handlers at once is counted.
    let serial = Arc::new(Mutex::new(SerialCheck::new()));
    let collector = Arc::new(Mutex::new(Collector::default()));
    let live = Arc::new(Live {
        sent: AtomicU64::new(0),
        acked: AtomicU64::new(0),
        consumed: AtomicU64::new(0),
        lag: AtomicU64::new(0),
        completed: (0..partitions).map(|_| AtomicU64::new(0)).collect(),
    });
    // Set just before the load starts; handlers read it to apply the warm-up cut-off.
    let start_us = Arc::new(AtomicU64::new(u64::MAX));
    let trace_log = plan.trace.then(|| Arc::new(TraceLog::default()));

    let mut workers = Vec::new();
    let serial_partitions = partition_serial(name, plan.concurrency);
    for w in 0..config.consumers {
        // One lock per partition, taken around the service when partitions run serially.
        let partition_locks: Arc<Vec<Mutex<()>>> =
            Arc::new((0..partitions).map(|_| Mutex::new(())).collect());
        let make_handler = |slot: usize| {
            let mut service = ServiceTimes {
                mean: plan.mean_service_secs(),
                dist: config.service,
                rng: ChaCha8Rng::seed_from_u64(
                    config.seed ^ (u64::from(w) << 32) ^ ((slot as u64) << 48) ^ 0x5e41,
                ),
            };
            let partition_locks = Arc::clone(&partition_locks);
            let collector = Arc::clone(&collector);
            let live = Arc::clone(&live);
            let start_us = Arc::clone(&start_us);
            let trace_log = trace_log.clone();
            move |record: &DeliveredRecord| -> Result<(), std::convert::Infallible> {
                let service_start_us = unix_us();
                let _partition = serial_partitions.then(|| {
                    partition_locks[record.partition as usize]
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                });
                std::thread::sleep(service.next());
                if let Some(n) = live.completed.get(record.partition as usize) {
                    n.fetch_add(1, Ordering::Relaxed);
                }
                let Some(probe) = &record.probe else {
                    return Ok(());
                };
                let done_us = unix_us();
                let mut c = collector.lock().unwrap_or_else(|p| p.into_inner());
                if let (Some((from, to)), true) = (homes, record.parked) {
                    let epoch = record.route.is_some_and(|r| r.set_index == EPOCH_SET_INDEX);
                    if epoch {
                        c.growth_park.record_secs(record.park_time.as_secs_f64());
                    }
                    let key = record.key.as_deref().unwrap_or_default();
                    if !remaps(hasher, key, from, to) && (epoch || record.route.is_none()) {
                        c.unchanged_parked += 1;
                    }
                }
                if record.verdict != Some(SeqVerdict::Duplicate) {
                    c.consumed += 1;
                    c.last_done = Some(Instant::now());
                    live.consumed.fetch_add(1, Ordering::Relaxed);
                }
                let start = start_us.load(Ordering::Relaxed);
                let warm_us = start.saturating_add((warm_at * 1e6) as u64);
                if probe.sent_us >= warm_us {
                    c.latency
                        .record_secs(done_us.saturating_sub(probe.sent_us) as f64 / 1e6);
                    if let Some(log) = &trace_log {
                        let since_fetch = record.fetched_at.elapsed().as_micros() as u64;
                        log.processed(Processed {
                            partition: record.partition,
                            offset: record.offset,
                            scheduled_us: probe.sent_us,
                            fetched_us: unix_us().saturating_sub(since_fetch),
                            parked_us: record.park_time.as_micros() as u64,
                            start_us: service_start_us,
                            end_us: done_us,
                        });
                    }
                }
                Ok(())
            }
        };
        let worker = OrderedConsumerBuilder::new(worker_settings, group.clone(), topic.to_string())
            .commit_interval(Duration::from_secs_f64(config.commit_interval_ms / 1e3))
            .barrier_poll_interval(Duration::from_secs_f64(config.barrier_poll_ms / 1e3))
            .session_timeout(WORKER_SESSION_TIMEOUT)
            .shared_sequence_check(Arc::clone(&check), true)
            .shared_serial_check(Arc::clone(&serial))
            .thread_name(format!("worker-{name}-{w}"))
            .concurrency(plan.concurrency)
            .spawn_each(make_handler)
            .with_context(|| format!("starting worker {w}"))?;
        workers.push(worker);
    }
    let stop_workers = |workers: Vec<OrderedConsumer>| {
        for w in workers {
            if let Err(err) = w.stop() {
                tracing::warn!(%err, "worker ended with an error");
            }
        }
    };
    if let Err(err) = wait_settled(&workers, partitions, plan.settle_timeout) {
        stop_workers(workers);
        return Err(err);
    }

    let (origin, origin_unix_us, producers) =
        match build_producers(plan, runtime, settings, name, topic) {
            Ok(built) => built,
            Err(err) => {
                stop_workers(workers);
                return Err(err);
            }
        };
    let preserves_order = producers[0].preserves_order();

    let bar = progress_bar(name, load.len() as u64);
    let sampler = Sampler::start(
        admin.clone(),
        topic.to_string(),
        group.clone(),
        partitions,
        plan.lag_interval,
        Duration::from_secs_f64(config.feedback_interval_ms / 1e3),
        producers.clone(),
        Arc::clone(&live),
        bar.clone(),
        origin,
    );

    start_us.store(origin_unix_us, Ordering::Relaxed);
    let start_unix_us = origin_unix_us;
    let grow_step = grow.map(|g| GrowStep {
        index: ((load.len() as f64) * g.at) as usize,
        grow: g,
        fenced: !grows_unfenced(name),
    });
    let sent = runtime.block_on(send_all(
        grow_step,
        &producers,
        ChaCha8Rng::seed_from_u64(config.seed ^ 0x9d0d_c0de),
        load,
        origin,
        start_unix_us,
        warm,
        partitions,
        &live,
        trace_log.as_ref(),
    ));
    let send_s = origin.elapsed().as_secs_f64();

    // Drain: every acknowledged record processed once, or the timeout.
    let deadline = Instant::now() + plan.drain_timeout;
    let drained = loop {
        let consumed = live.consumed.load(Ordering::Relaxed);
        if consumed >= sent.produced {
            break true;
        }
        if Instant::now() >= deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // A last lag sample after the drain shows the lag back at (or near) zero.
    std::thread::sleep(plan.lag_interval.min(Duration::from_millis(500)));
    let lag = sampler.stop();
    bar.finish_and_clear();

    let snapshots: Vec<_> = workers.iter().map(|w| w.stats().snapshot()).collect();
    stop_workers(workers);
    let pstats: Vec<_> = producers.iter().map(KeyshiftProducer::stats).collect();
    drop(producers);
    let coordination = coordination_report(&pstats);

    let collector = Arc::try_unwrap(collector)
        .map(|m| m.into_inner().unwrap_or_else(|p| p.into_inner()))
        .unwrap_or_else(|shared| {
            let c = shared.lock().unwrap_or_else(|p| p.into_inner());
            Collector {
                consumed: c.consumed,
                latency: c.latency.clone(),
                last_done: c.last_done,
                growth_park: c.growth_park.clone(),
                unchanged_parked: c.unchanged_parked,
            }
        });
    let check = check.lock().unwrap_or_else(|p| p.into_inner());
    let overlaps = serial.lock().unwrap_or_else(|p| p.into_inner()).overlaps();
    let mut park = LatencyHistogram::new();
    for s in &snapshots {
        park.merge(&s.park_time);
    }
    let end = if drained {
        collector.last_done.unwrap_or_else(Instant::now)
    } else {
        Instant::now()
    };
    let duration_s = end.saturating_duration_since(origin).as_secs_f64();

    // The hottest key after the warm-up: the bound any order-preserving strategy faces.
    // (Per key also the first planned send, so the fastest keys can be judged on their own
    // active span: whether one of them needs more than a consumer.)
    let mut per_key: std::collections::HashMap<u64, (u64, f64)> = Default::default();
    for p in &load[warm.min(load.len())..] {
        per_key.entry(p.key).or_insert((0, p.at)).0 += 1;
    }
    let last_send = load.last().map_or(0.0, |p| p.at);
    Ok(Measured {
        strategy: name.to_string(),
        preserves_order,
        topic: topic.to_string(),
        group,
        produced: sent.produced,
        send_errors: sent.errors,
        partition_load: sent.partition_load,
        hottest_key_records: per_key.values().map(|&(n, _)| n).max().unwrap_or(0),
        key_records: fastest_keys(&per_key, last_send),
        consumed: collector.consumed,
        duplicates: check.duplicates(),
        order_violations: check.violations(),
        concurrent_key_processing: overlaps,
        missing: check.missing(),
        latency: collector.latency,
        ack_latency: sent.ack_latency,
        // With several producers each acknowledges its own fence of a move; the moves are the
        // commits every one of them read.
        migrations: coordination.as_ref().map_or_else(
            || pstats.iter().map(|s| s.migrations).sum(),
            |c| c.moves_committed,
        ),
        fences: pstats.iter().map(|s| s.fences).sum(),
        coordination,
        parked_records: park.len(),
        parked_ms: park.total_ms(),
        duration_s,
        send_s,
        drained,
        lag,
        latency_breakdown: trace_log.map(|log| log.breakdown()),
        growth: sent.growth.map(|(at_s, g)| GrowthFigures {
            from: g.from,
            to: g.to,
            at_s,
            fenced: g.epoch.is_some(),
            epoch_fences: g.fences,
            held_keys: g.held_keys,
            held_records: g.held_records,
            switch_ms: g.took_ms,
            parked_records: collector.growth_park.len(),
            park_p50_ms: collector.growth_park.quantile_ms(0.5),
            park_p90_ms: collector.growth_park.quantile_ms(0.9),
            park_p99_ms: collector.growth_park.quantile_ms(0.99),
            park_max_ms: collector.growth_park.max_ms(),
            unchanged_keys_parked: collector.unchanged_parked,
        }),
    })
}

/// The run's producers and the schedule's origin on both clocks (read together: sends are
/// timed by the monotonic one, probes carry the wall-clock one).
///
/// Uncoordinated producers are built with the origin as their strategy clock's, START_LEAD
/// ahead. Coordinated ones are built first, then the load waits until they have joined —
/// every one sees all as live and one decides — so the first records measure routing, not the
/// join; the origin is taken after that.
fn build_producers(
    plan: &Plan,
    runtime: &tokio::runtime::Runtime,
    settings: &ClientSettings,
    name: &str,
    topic: &str,
) -> anyhow::Result<(Instant, u64, Vec<KeyshiftProducer>)> {
    let config = &plan.config;
    let build_all = |origin: Instant| {
        let _guard = runtime.enter();
        (0..plan.producers)
            .map(|_| {
                KeyshiftProducer::builder(settings.clone(), topic)
                    .strategy(producer_strategy(name))
                    .strategy_config(strategy::StrategyConfig {
                        seed: config.seed,
                        ..config.strategy
                    })
                    .partitions(config.partitions)
                    .routes(plan.routes.clone())
                    .origin(origin)
                    .runtime(runtime.handle().clone())
                    .build()
                    .context("building the producer")
            })
            .collect::<anyhow::Result<Vec<_>>>()
    };
    let origin_now = || {
        (
            Instant::now() + START_LEAD,
            unix_us() + START_LEAD.as_micros() as u64,
        )
    };
    if !matches!(plan.routes, Routes::Coordinated(_)) {
        // Taking the wall-clock origin after the build (which reads the route topic) put
        // every scheduled time that much after the real send, shortening every latency.
        let (origin, origin_unix_us) = origin_now();
        return Ok((origin, origin_unix_us, build_all(origin)?));
    }
    let producers = build_all(Instant::now())?;
    if producers[0].preserves_order() {
        wait_joined(&producers, plan.settle_timeout)?;
    }
    let (origin, origin_unix_us) = origin_now();
    Ok((origin, origin_unix_us, producers))
}

/// Waits until every coordinated producer counts all of them live and exactly one decides.
fn wait_joined(producers: &[KeyshiftProducer], timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let seen: Vec<(usize, bool)> = producers
            .iter()
            .filter_map(|p| p.stats().coordination)
            .map(|c| (c.live_members, c.decider))
            .collect();
        let joined = seen.len() == producers.len()
            && seen.iter().all(|&(live, _)| live == producers.len())
            && seen.iter().filter(|&&(_, decider)| decider).count() == 1;
        if joined {
            return Ok(());
        }
        if Instant::now() >= deadline {
            anyhow::bail!(
                "the {} coordinated producers did not join within {timeout:?}: (live members, \
                 decider) per producer {seen:?} (raise --settle-timeout-secs on a slow cluster)",
                producers.len()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The coordination figures of a run's producers (coordinated ones only).
fn coordination_report(stats: &[ProducerStats]) -> Option<CoordinationReport> {
    let members: Vec<&CoordinationStats> = stats
        .iter()
        .filter_map(|s| s.coordination.as_ref())
        .collect();
    if members.is_empty() {
        return None;
    }
    let mut hold = LatencyHistogram::new();
    let mut rtt = LatencyHistogram::new();
    for s in stats {
        rtt.merge(&s.fence_rtt);
    }
    for c in &members {
        hold.merge(&c.hold_time);
    }
    Some(CoordinationReport {
        producers: stats.len() as u32,
        moves_proposed: members.iter().map(|c| c.proposed).sum(),
        // Every member reads every commit and abort; one that joined late read fewer.
        moves_committed: members.iter().map(|c| c.committed).max().unwrap_or(0),
        moves_aborted: members.iter().map(|c| c.aborted).max().unwrap_or(0),
        decider_claims: members.iter().map(|c| c.claims).sum(),
        control_write_failures: members.iter().map(|c| c.control_write_failures).sum(),
        hold_count: hold.len(),
        hold_p50_ms: hold.quantile_ms(0.5),
        hold_p99_ms: hold.quantile_ms(0.99),
        produce_rtt_p50_ms: rtt.quantile_ms(0.5),
    })
}

/// Waits until every worker owns a partition and all partitions are owned, and stays so for
/// [`SETTLE_STABLE`].
fn wait_settled(
    workers: &[OrderedConsumer],
    partitions: u32,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut settled_since: Option<Instant> = None;
    loop {
        let owned: Vec<u64> = workers
            .iter()
            .map(|w| w.stats().snapshot().owned_partitions)
            .collect();
        let settled =
            owned.iter().all(|&n| n > 0) && owned.iter().sum::<u64>() == u64::from(partitions);
        if let Some(dead) = workers.iter().position(|w| !w.is_running()) {
            anyhow::bail!("worker {dead} stopped while joining the group");
        }
        match (settled, settled_since) {
            (true, Some(t)) if t.elapsed() >= SETTLE_STABLE => return Ok(()),
            (true, None) => settled_since = Some(Instant::now()),
            (false, _) => settled_since = None,
            _ => {}
        }
        if Instant::now() >= deadline {
            anyhow::bail!(
                "the workers' group did not settle within {timeout:?}: partitions owned per \
                 worker {owned:?}, expected every worker to own at least one and {partitions} \
                 in total (raise --settle-timeout-secs on a slow cluster)"
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What the load phase produced.
struct Sent {
    produced: u64,
    errors: u64,
    partition_load: Vec<u64>,
    /// Scheduled send → broker acknowledgement, for records after the warm-up.
    ack_latency: LatencyHistogram,
    /// The growth step: seconds after the origin it started, and what it did.
    growth: Option<(f64, GrowthReport)>,
}

/// When the growth step happens during the load, and how.
#[derive(Debug, Clone, Copy)]
struct GrowStep {
    /// Index of the first record sent after it started.
    index: usize,
    grow: Grow,
    /// Through epoch fences (else as a plain Kafka producer).
    fenced: bool,
}

/// Sends every planned record at its scheduled time without waiting for earlier ones.
///
/// With several producers each record goes through a random one (`rng`), except that a key
/// stays with the producer of its unacknowledged records: two producers' records of one key
/// in flight at once could land in either order, as two application instances handling one
/// key's requests concurrently would. Routing cannot order what the application did not.
#[allow(clippy::too_many_arguments)]
async fn send_all(
    grow: Option<GrowStep>,
    producers: &[KeyshiftProducer],
    mut rng: ChaCha8Rng,
    load: &[Planned],
    origin: Instant,
    start_unix_us: u64,
    warm: usize,
    partitions: u32,
    live: &Live,
    trace_log: Option<&Arc<TraceLog>>,
) -> Sent {
    let origin = tokio::time::Instant::from_std(origin);
    let mut sent = Sent {
        produced: 0,
        errors: 0,
        partition_load: vec![0; partitions as usize],
        ack_latency: LatencyHistogram::new(),
        growth: None,
    };
    let mut acks = tokio::task::JoinSet::new();
    let mut sticky = InFlight::default();
    let mut growing = None;
    for (i, p) in load.iter().enumerate() {
        tokio::time::sleep_until(origin + Duration::from_secs_f64(p.at)).await;
        if let Some(g) = grow.filter(|g| g.index == i) {
            // Started, not awaited: the load goes on while the epoch fences are written (the
            // producers hold only the records whose home changes meanwhile). Fenced, one
            // producer asks and coordinated producers grow together through their control log;
            // unfenced, every producer switches on its own, as plain Kafka producers do.
            let producer = producers[0].clone();
            let others: Vec<KeyshiftProducer> = producers[1..].to_vec();
            let at_s = origin.elapsed().as_secs_f64();
            growing = Some(tokio::spawn(async move {
                let done = if g.fenced {
                    producer.grow(g.grow.to).await
                } else {
                    for p in &others {
                        if let Err(err) = p.grow_unfenced(g.grow.to) {
                            tracing::error!(%err, "a producer did not grow");
                        }
                    }
                    producer.grow_unfenced(g.grow.to)
                };
                (at_s, done)
            }));
        }
        let producer = &producers[sticky.take(p.key, || rng.gen_range(0..producers.len()))];
        let key = key_name(p.key);
        let scheduled = origin + Duration::from_secs_f64(p.at);
        let probe = Probe {
            seq: p.seq,
            sent_us: start_unix_us + (p.at * 1e6) as u64,
            body: format!("{key} message body"),
        };
        // `try_send` routes and enqueues during the call, so each key's records are decided
        // in schedule order; only the acknowledgements are awaited concurrently.
        match producer.try_send(key.as_bytes(), &probe.encode(), Vec::new()) {
            Ok(pending) => {
                let log = trace_log.cloned();
                acks.spawn(async move {
                    let r = pending.await;
                    if let (Some(log), Ok(d)) = (&log, &r) {
                        log.acked(d.partition, d.offset, unix_us(), d.fenced_wait);
                    }
                    (i, r.map(|d| d.partition), scheduled.elapsed())
                });
            }
            Err(err) => {
                // Nothing was decided for this record (queue full or refused): the retrying
                // `send` is awaited in place so this key's later records cannot overtake it.
                tracing::debug!(%err, "try_send refused a record; retrying with send");
                let r = producer
                    .send(key.as_bytes(), &probe.encode(), Vec::new())
                    .await;
                if let (Some(log), Ok(d)) = (trace_log, &r) {
                    log.acked(d.partition, d.offset, unix_us(), d.fenced_wait);
                }
                sent.tally(i, r.map(|d| d.partition), scheduled.elapsed(), warm, live);
                sticky.done(p.key);
            }
        }
        live.sent.fetch_add(1, Ordering::Relaxed);
        // Collect finished acknowledgements as we go so the set stays small.
        while let Some(done) = acks.try_join_next() {
            if let Some(key) = sent.tally_joined(done, warm, live).map(|i| load[i].key) {
                sticky.done(key);
            }
        }
    }
    while let Some(done) = acks.join_next().await {
        sent.tally_joined(done, warm, live);
    }
    if let Some(task) = growing {
        match task.await {
            Ok((at_s, Ok(report))) => sent.growth = Some((at_s, report)),
            Ok((_, Err(err))) => tracing::error!(%err, "the growth step failed"),
            Err(err) => tracing::error!(%err, "the growth step's task ended abnormally"),
        }
    }
    for producer in producers {
        if let Err(err) = producer.flush(Duration::from_secs(30)).await {
            tracing::warn!(%err, "producer flush after the load");
        }
    }
    sent
}

/// Which producer each key's unacknowledged records went through, and how many there are.
#[derive(Debug, Default)]
struct InFlight(std::collections::HashMap<u64, (usize, u32)>);

impl InFlight {
    /// The producer for the key's next record: the one of its records in flight, or `pick()`.
    fn take(&mut self, key: u64, pick: impl FnOnce() -> usize) -> usize {
        let entry = self.0.entry(key).or_insert_with(|| (pick(), 0));
        entry.1 += 1;
        entry.0
    }

    /// One of the key's records was acknowledged (or failed).
    fn done(&mut self, key: u64) {
        if let std::collections::hash_map::Entry::Occupied(mut e) = self.0.entry(key) {
            e.get_mut().1 -= 1;
            if e.get().1 == 0 {
                e.remove();
            }
        }
    }
}

/// A finished send: record index, partition or error, time since its scheduled send.
type Acked = (usize, Result<u32, keyshift_kafka::ProduceError>, Duration);

impl Sent {
    fn tally(
        &mut self,
        index: usize,
        result: Result<u32, keyshift_kafka::ProduceError>,
        waited: Duration,
        warm: usize,
        live: &Live,
    ) {
        match result {
            Ok(partition) => {
                self.produced += 1;
                live.acked.fetch_add(1, Ordering::Relaxed);
                if index >= warm {
                    self.ack_latency.record_secs(waited.as_secs_f64());
                    if let Some(slot) = self.partition_load.get_mut(partition as usize) {
                        *slot += 1;
                    }
                }
            }
            Err(err) => {
                self.errors += 1;
                tracing::warn!(%err, "record not produced");
            }
        }
    }

    /// Tallies a joined acknowledgement task; the record's index unless the task failed.
    fn tally_joined(
        &mut self,
        joined: Result<Acked, tokio::task::JoinError>,
        warm: usize,
        live: &Live,
    ) -> Option<usize> {
        match joined {
            Ok((index, result, waited)) => {
                self.tally(index, result, waited, warm, live);
                Some(index)
            }
            Err(err) => {
                self.errors += 1;
                tracing::warn!(%err, "acknowledgement task failed");
                None
            }
        }
    }
}

/// A progress bar on stderr (hidden when stderr is not a terminal).
fn progress_bar(name: &str, records: u64) -> ProgressBar {
    let bar = ProgressBar::new(records);
    bar.set_style(
        ProgressStyle::with_template(
            "      {prefix:>10} [{elapsed_precise}] [{bar:32.cyan/blue}] {pos}/{len} processed · {msg}",
        )
        .expect("the progress template is valid")
        .progress_chars("=> "),
    );
    bar.set_prefix(name.to_string());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// The lag sampler: a thread reading end and committed offsets on an interval, updating the
/// progress bar and feeding the producers' strategies.
struct Sampler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<LagSample>>,
}

impl Sampler {
    #[allow(clippy::too_many_arguments)]
    fn start(
        admin: Admin,
        topic: String,
        group: String,
        partitions: u32,
        interval: Duration,
        feedback_interval: Duration,
        producers: Vec<KeyshiftProducer>,
        live: Arc<Live>,
        bar: ProgressBar,
        origin: Instant,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("experiment-lag".into())
            .spawn(move || {
                let mut samples = Vec::new();
                // Records completed per partition at the last feedback, for throughput. Not
                // committed offsets: a partition whose commit waits behind a parked record
                // keeps processing other keys, and must not look slow for it.
                let mut last_feedback: Option<(Instant, Vec<u64>)> = None;
                loop {
                    let tick = Instant::now();
                    let stopping = stop_flag.load(Ordering::Relaxed);
                    let ends = admin.end_offsets(&topic);
                    let committed = admin.committed_offsets(&group, &topic, partitions);
                    match (ends, committed) {
                        (Ok(ends), Ok(committed)) => {
                            let committed: Vec<i64> =
                                committed.iter().map(|c| c.unwrap_or(0).max(0)).collect();
                            let lags: Vec<u64> = ends
                                .iter()
                                .zip(&committed)
                                .map(|(&e, &c)| (e - c).max(0) as u64)
                                .collect();
                            let total: u64 = lags.iter().sum();
                            live.lag.store(total, Ordering::Relaxed);
                            if tick >= origin {
                                samples.push(LagSample {
                                    t_s: tick.duration_since(origin).as_secs_f64(),
                                    total,
                                    max_partition: lags.iter().copied().max().unwrap_or(0),
                                });
                            }
                            let due = last_feedback
                                .as_ref()
                                .is_none_or(|(t, _)| t.elapsed() >= feedback_interval);
                            if due {
                                let now_completed: Vec<u64> = live
                                    .completed
                                    .iter()
                                    .map(|n| n.load(Ordering::Relaxed))
                                    .collect();
                                if let Some((t, before)) = &last_feedback {
                                    let secs = t.elapsed().as_secs_f64().max(1e-3);
                                    let feedback: Vec<PartitionFeedback> = (0..partitions)
                                        .map(|p| {
                                            let i = p as usize;
                                            PartitionFeedback {
                                                partition: p,
                                                throughput_rps: now_completed[i]
                                                    .saturating_sub(before[i])
                                                    as f64
                                                    / secs,
                                                lag: lags[i],
                                            }
                                        })
                                        .collect();
                                    // Every producer: whichever decides has the feedback.
                                    for producer in &producers {
                                        producer.observe(&feedback);
                                    }
                                }
                                last_feedback = Some((Instant::now(), now_completed));
                            }
                        }
                        (Err(err), _) | (_, Err(err)) => {
                            tracing::debug!(%err, "lag sample failed");
                        }
                    }
                    let consumed = live.consumed.load(Ordering::Relaxed);
                    bar.set_position(consumed);
                    bar.set_message(format!(
                        "sent {} · acked {} · lag {}",
                        live.sent.load(Ordering::Relaxed),
                        live.acked.load(Ordering::Relaxed),
                        live.lag.load(Ordering::Relaxed)
                    ));
                    if stopping {
                        return samples;
                    }
                    let rest = interval.saturating_sub(tick.elapsed());
                    // Sleep in short slices so a stop is noticed quickly.
                    let until = Instant::now() + rest;
                    while Instant::now() < until && !stop_flag.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(20).min(rest));
                    }
                }
            })
            .expect("spawning the lag sampler thread");
        Sampler { stop, thread }
    }

    /// Takes one last sample and returns all of them.
    fn stop(self) -> Vec<LagSample> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

/// The keys with the highest rates after the warm-up, each over its own active span (its first
/// send after the warm-up to `last_send`), fastest first, at most
/// [`keyshift_core::sim::MAX_LISTED_KEYS`]; keys with too few records to judge are left out.
fn fastest_keys(
    per_key: &std::collections::HashMap<u64, (u64, f64)>,
    last_send: f64,
) -> Vec<(String, u64, f64)> {
    let rate = |n: u64, span: f64| if span > 0.0 { n as f64 / span } else { 0.0 };
    let mut top: Vec<(u64, u64, f64)> = per_key
        .iter()
        .filter(|(_, &(n, _))| n >= keyshift_core::sim::MIN_RECORDS_FOR_RATE)
        .map(|(&k, &(n, first))| (k, n, last_send - first))
        .collect();
    top.sort_by(|a, b| {
        rate(b.1, b.2)
            .total_cmp(&rate(a.1, a.2))
            .then(a.0.cmp(&b.0))
    });
    top.truncate(keyshift_core::sim::MAX_LISTED_KEYS);
    top.into_iter()
        .map(|(k, n, span)| (keyshift_core::workload::key_name(k), n, span))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planned_sequence_numbers_count_per_key_from_zero() {
        let config = SimConfig {
            records: 2000,
            ..SimConfig::default()
        };
        let load = plan_load(&config).unwrap();
        assert_eq!(load.len(), 2000);
        let mut next: std::collections::HashMap<u64, u64> = Default::default();
        for p in &load {
            let n = next.entry(p.key).or_insert(0);
            assert_eq!(p.seq, *n);
            *n += 1;
        }
        assert!(load.windows(2).all(|w| w[0].at <= w[1].at));
        // Same seed, same records: every strategy gets the same load.
        let again = plan_load(&config).unwrap();
        assert!(load
            .iter()
            .zip(&again)
            .all(|(a, b)| a.key == b.key && a.at == b.at));
    }

    #[test]
    fn radix36_is_compact() {
        assert_eq!(radix36(0), "0");
        assert_eq!(radix36(35), "z");
        assert_eq!(radix36(36), "10");
    }
}
