//! `keyshift autoscale`: scale a consumer group's replicas on its lag, like Kubernetes' HPA
//! but in seconds of lag and with a predictive rule.
//!
//! Every `--interval` seconds a [`LagCollector`] reads the group's lag (records, seconds,
//! production and consumption rates, partition count), the core's [`Policy`] turns it into a
//! [`Decision`] with its reasons, and an actuator acts on it:
//! - dry-run (the default): the decision is printed, and the next evaluation assumes it was
//!   applied;
//! - `--kubernetes`: the replica count is read from and written to the `scale` subresource of
//!   a Deployment or StatefulSet ([`kubernetes`]);
//! - `--serve ADDR` (with either): the decision and the lag are served as JSON for KEDA's
//!   metrics-api scaler and as Prometheus gauges for an HPA External metric ([`serve`]).
//!
//! Flags are checked before anything connects; the group and topics are checked against the
//! cluster on the first collection, so that a typo is a usage error (exit 2) rather than an
//! autoscaler that silently holds. After start-up, failures (broker outage, API server
//! errors) are logged, counted in the metrics, and retried on the next interval.

pub mod kubernetes;
pub mod serve;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::{Args, ValueEnum};
use keyshift_core::scaling::{
    Decision, HpaMetric, Observation, Policy, PolicyConfig, RateLimit, RateLimitKind, RateLimits,
    SelectPolicy,
};
use keyshift_kafka::lag::{GroupLag, LagCollector, LagError};
use keyshift_kafka::{Admin, AdminError, ClientSettings, Property};
use prometheus_client::registry::Registry;

use crate::exit::FlagError;
use crate::http::{self, Health, HttpServer};
use kubernetes::{Connection, KubeActuator, WorkloadKind};
use serve::{AutoscaleCollector, ScaleStatus, Shared};

/// The rule that computes the raw recommendation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeFlag {
    /// Kubernetes' HPA rule: desired = ceil(current × metric / target).
    Hpa,
    /// desired = ceil((production rate + lag / drain target) / per-replica consumption rate).
    Predictive,
}

/// What the HPA rule scales on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MetricFlag {
    /// Lag in records per replica (like KEDA's lagThreshold).
    Lag,
    /// Lag in seconds of the oldest unconsumed record.
    LagSeconds,
}

/// How several rate limits of one direction combine (the HPA's selectPolicy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SelectFlag {
    /// The limit allowing the largest change.
    Max,
    /// The limit allowing the smallest change.
    Min,
    /// No change in this direction at all.
    Disabled,
}

/// One `--scale-up-limit` / `--scale-down-limit`: `N/SECS` pods or `N%/SECS` percent per
/// period, or `none`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LimitFlag(Option<RateLimit>);

fn parse_limit(s: &str) -> Result<LimitFlag, String> {
    if s == "none" {
        return Ok(LimitFlag(None));
    }
    let expected = || format!("expected PODS/SECONDS, PERCENT%/SECONDS or none, got '{s}'");
    let (value, period) = s.split_once('/').ok_or_else(expected)?;
    let (kind, value) = match value.strip_suffix('%') {
        Some(v) => (RateLimitKind::Percent, v),
        None => (RateLimitKind::Pods, value),
    };
    let value: f64 = value.trim().parse().map_err(|_| expected())?;
    let period_secs: f64 = period.trim().parse().map_err(|_| expected())?;
    if !(value.is_finite() && value > 0.0 && period_secs.is_finite() && period_secs > 0.0) {
        return Err(format!("both numbers must be > 0, got '{s}'"));
    }
    Ok(LimitFlag(Some(RateLimit {
        kind,
        value,
        period_secs,
    })))
}

/// Flags of `keyshift autoscale`.
#[derive(Debug, Args)]
#[command(
    about = "Scale consumers on lag, like Kubernetes' HPA (dry-run, Kubernetes, or metrics for KEDA)",
    long_about = "Scale a consumer group's replicas on its lag. Every --interval seconds the \
                  group's lag (records and seconds, production and consumption rates) is read, \
                  the policy decides a replica count with its reasons (HPA rule or predictive, \
                  tolerance, stabilization windows, rate limits, bounds capped at the partition \
                  count, activation and scale to zero), and the decision is acted on.\n\n\
                  Default: dry-run, printing each decision. --kubernetes patches the scale \
                  subresource of a Deployment or StatefulSet (in-cluster service account or \
                  kubeconfig; RBAC in deploy/rbac.yaml). --serve ADDR serves GET /api/v1/scale \
                  (JSON for KEDA's metrics-api scaler: valueLocation desiredReplicas), /metrics \
                  (keyshift_autoscale_desired_replicas for an HPA External metric) and /healthz."
)]
pub struct AutoscaleArgs {
    /// Kafka bootstrap servers, host:port[,host:port...].
    #[arg(long, env = "KEYSHIFT_BOOTSTRAP_SERVERS")]
    bootstrap_servers: String,

    /// Consumer group to scale.
    #[arg(long)]
    group: String,

    /// Only count these topics of the group (repeatable) [default: every topic the group consumes].
    #[arg(long = "topic", value_name = "TOPIC")]
    topics: Vec<String>,

    /// Rule computing the recommendation.
    #[arg(long, value_enum, default_value_t = ModeFlag::Hpa)]
    mode: ModeFlag,

    /// HPA rule: what to scale on.
    #[arg(long, value_enum, default_value_t = MetricFlag::Lag)]
    metric: MetricFlag,

    /// HPA rule: wanted metric value per replica (records of lag, or seconds with --metric lag-seconds).
    #[arg(long, allow_negative_numbers = true, default_value_t = 1000.0)]
    target: f64,

    /// Predictive rule: seconds within which the current lag should be drained.
    #[arg(long, allow_negative_numbers = true, default_value_t = 60.0)]
    drain_target: f64,

    /// Predictive rule: records/s one replica consumes, used until it is measured [default: measured only].
    #[arg(long, allow_negative_numbers = true)]
    replica_rate: Option<f64>,

    /// Predictive rule: lag in seconds at which replicas count as saturated (consumption = capacity).
    #[arg(long, allow_negative_numbers = true, default_value_t = 30.0)]
    saturation_lag: f64,

    /// Predictive rule: seconds after a change before consumption is trusted again.
    #[arg(long, allow_negative_numbers = true, default_value_t = 120.0)]
    settle: f64,

    /// Fewest replicas; 0 enables scale to zero of an idle group.
    #[arg(long, default_value_t = 1)]
    min_replicas: u32,

    /// Most replicas (always capped at the partition count) [default: the partition count].
    #[arg(long)]
    max_replicas: Option<u32>,

    /// No change while the metric is within target × (1 ± tolerance).
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.1)]
    tolerance: f64,

    /// Scale-up stabilization window in seconds.
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.0)]
    scale_up_window: f64,

    /// Scale-down stabilization window in seconds.
    #[arg(long, allow_negative_numbers = true, default_value_t = 300.0)]
    scale_down_window: f64,

    /// Scale-up rate limit, PODS/SECONDS or PERCENT%/SECONDS (repeatable), or none [default: 4/15 and 100%/15].
    #[arg(long, value_parser = parse_limit, value_name = "LIMIT")]
    scale_up_limit: Vec<LimitFlag>,

    /// Scale-down rate limit, like --scale-up-limit [default: 100%/15].
    #[arg(long, value_parser = parse_limit, value_name = "LIMIT")]
    scale_down_limit: Vec<LimitFlag>,

    /// How several scale-up limits combine.
    #[arg(long, value_enum, default_value_t = SelectFlag::Max)]
    scale_up_select: SelectFlag,

    /// How several scale-down limits combine.
    #[arg(long, value_enum, default_value_t = SelectFlag::Max)]
    scale_down_select: SelectFlag,

    /// Activation: the group is active while its lag exceeds this many records.
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.0)]
    activation_lag: f64,

    /// Activation: ... or while production exceeds this many records/s.
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.0)]
    activation_rate: f64,

    /// Seconds an inactive group waits before scaling to zero (with --min-replicas 0).
    #[arg(long, allow_negative_numbers = true, default_value_t = 300.0)]
    cooldown: f64,

    /// Seconds between evaluations.
    #[arg(long, allow_negative_numbers = true, default_value_t = 15.0)]
    interval: f64,

    /// Stop after this many evaluations [default: run until SIGINT/SIGTERM].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    iterations: Option<u64>,

    /// Dry-run and --serve: replicas running at start [default: the group's member count, or
    /// max(1, --min-replicas) if the cluster does not describe groups].
    #[arg(long, conflicts_with = "kubernetes")]
    replicas: Option<u32>,

    /// Print each decision as one JSON object per line instead of text.
    #[arg(long)]
    json: bool,

    /// Act on Kubernetes: patch the scale subresource of --kind/--name.
    #[arg(long, requires = "name")]
    kubernetes: bool,

    /// Kind of the workload to scale.
    #[arg(long, value_enum, default_value_t = WorkloadKind::Deployment, requires = "kubernetes")]
    kind: WorkloadKind,

    /// Name of the Deployment or StatefulSet to scale.
    #[arg(long, requires = "kubernetes")]
    name: Option<String>,

    /// Namespace of the workload [default: the kubeconfig context's, or the pod's own].
    #[arg(long, requires = "kubernetes")]
    namespace: Option<String>,

    /// Kubeconfig file [default: $KUBECONFIG, ~/.kube/config, else in-cluster].
    #[arg(long, requires = "kubernetes")]
    kubeconfig: Option<PathBuf>,

    /// Kubeconfig context [default: the current one].
    #[arg(long, requires = "kubernetes")]
    context: Option<String>,

    /// Grow the topic when the replicas the lag asks for exceed its partitions (the decision's
    /// `expand_to`, which every run reports): CreatePartitions, then the epoch fences of the
    /// keyshift gateway producing to it — what `keyshift expand` does. Never without this
    /// flag. Needs --gateway and exactly one --topic.
    #[arg(long, requires = "gateway")]
    allow_expand: bool,

    /// The keyshift gateway producing to the topic (base URL), for --allow-expand.
    #[arg(long, value_name = "URL", requires = "allow_expand")]
    gateway: Option<String>,

    /// Serve /api/v1/scale (JSON for KEDA), /metrics and /healthz on this address.
    #[arg(long, value_name = "ADDR")]
    serve: Option<SocketAddr>,

    /// Client id the broker sees.
    #[arg(long, default_value = "keyshift-autoscale")]
    client_id: String,

    /// librdkafka property passed through to the lag collector's clients, like kcat (repeatable).
    #[arg(short = 'X', value_name = "KEY=VALUE")]
    properties: Vec<Property>,

    #[command(flatten)]
    client_config: crate::cmd::client_config::ClientConfigFlag,
}

/// Resolves the limits flags: none given keeps the HPA default.
fn limits(given: &[LimitFlag], select: SelectFlag, default: RateLimits) -> RateLimits {
    let select = match select {
        SelectFlag::Max => SelectPolicy::Max,
        SelectFlag::Min => SelectPolicy::Min,
        SelectFlag::Disabled => SelectPolicy::Disabled,
    };
    if given.is_empty() {
        return RateLimits { select, ..default };
    }
    RateLimits {
        limits: given.iter().filter_map(|l| l.0).collect(),
        select,
    }
}

impl AutoscaleArgs {
    /// The policy configuration these flags describe (validated by [`Policy::new`]).
    fn policy_config(&self) -> PolicyConfig {
        let mut config = match self.mode {
            ModeFlag::Hpa => PolicyConfig::hpa(
                match self.metric {
                    MetricFlag::Lag => HpaMetric::LagRecords,
                    MetricFlag::LagSeconds => HpaMetric::LagSeconds,
                },
                self.target,
            ),
            ModeFlag::Predictive => PolicyConfig::predictive(self.drain_target),
        };
        config.min_replicas = self.min_replicas;
        if let Some(max) = self.max_replicas {
            config.max_replicas = max;
        }
        config.tolerance = self.tolerance;
        config.scale_up_window_secs = self.scale_up_window;
        config.scale_down_window_secs = self.scale_down_window;
        config.scale_up_limits = limits(
            &self.scale_up_limit,
            self.scale_up_select,
            RateLimits::hpa_default_up(),
        );
        config.scale_down_limits = limits(
            &self.scale_down_limit,
            self.scale_down_select,
            RateLimits::hpa_default_down(),
        );
        config.activation_lag = self.activation_lag;
        config.activation_rate = self.activation_rate;
        config.cooldown_secs = self.cooldown;
        config.replica_rate = self.replica_rate;
        config.saturation_lag_secs = self.saturation_lag;
        config.settle_secs = self.settle;
        config
    }

    /// Flags the policy does not check itself.
    fn check(&self) -> Result<(), FlagError> {
        if self.group.trim().is_empty() {
            return Err(FlagError::new("--group", "must not be empty"));
        }
        if let Some(t) = self.topics.iter().find(|t| t.trim().is_empty()) {
            return Err(FlagError::new(
                "--topic",
                format!("topic names must not be empty, got {t:?}"),
            ));
        }
        if !(self.interval.is_finite() && self.interval > 0.0) {
            return Err(FlagError::new(
                "--interval",
                format!("{} is not a number of seconds > 0", self.interval),
            ));
        }
        if self.mode != ModeFlag::Hpa && self.metric != MetricFlag::Lag {
            return Err(FlagError::new(
                "--metric",
                "only applies to --mode hpa (the predictive rule uses lag and rates)",
            ));
        }
        if let Some(name) = &self.name {
            if name.trim().is_empty() {
                return Err(FlagError::new("--name", "must not be empty"));
            }
        }
        if self.allow_expand && self.topics.len() != 1 {
            return Err(FlagError::new(
                "--allow-expand",
                "needs exactly one --topic: the topic to grow",
            ));
        }
        if let Some(g) = &self.gateway {
            if !(g.starts_with("http://") || g.starts_with("https://")) {
                return Err(FlagError::new(
                    "--gateway",
                    format!("'{g}' is not an http(s):// URL"),
                ));
            }
        }
        Ok(())
    }
}

/// The lag the policy sees: the group's, restricted to `--topic`s if any.
#[derive(Debug, Clone, PartialEq)]
struct Measured {
    lag_records: u64,
    lag_seconds: f64,
    production_rate: Option<f64>,
    consumption_rate: Option<f64>,
    partitions: u32,
}

/// Sums `group` over `topics` (all of the group's if empty).
fn measure(group: &GroupLag, topics: &[String]) -> Measured {
    if topics.is_empty() {
        return Measured {
            lag_records: u64::try_from(group.lag).unwrap_or(0),
            lag_seconds: group.max_lag_seconds.unwrap_or(0.0),
            production_rate: group.production_rate,
            consumption_rate: group.consumption_rate,
            partitions: group.partition_count,
        };
    }
    let mut m = Measured {
        lag_records: 0,
        lag_seconds: 0.0,
        production_rate: None,
        consumption_rate: None,
        partitions: topics
            .iter()
            .map(|t| group.topics.get(t).copied().unwrap_or(0))
            .sum(),
    };
    let add = |acc: &mut Option<f64>, v: Option<f64>| {
        if let Some(v) = v {
            *acc = Some(acc.unwrap_or(0.0) + v);
        }
    };
    for p in group
        .partitions
        .iter()
        .filter(|p| topics.contains(&p.topic))
    {
        m.lag_records += u64::try_from(p.lag).unwrap_or(0);
        m.lag_seconds = m.lag_seconds.max(p.lag_seconds.unwrap_or(0.0));
        add(&mut m.production_rate, p.production_rate);
        add(&mut m.consumption_rate, p.consumption_rate);
    }
    m
}

/// Where decisions go.
enum Actuator {
    /// Nothing is changed; the count is assumed to follow the decisions.
    Assumed(u32),
    /// The scale subresource of a workload.
    Kubernetes(Box<KubeActuator>),
}

/// Everything the loop needs, resolved from the flags.
struct Autoscaler {
    group: String,
    topics: Vec<String>,
    mode: &'static str,
    collector: Option<LagCollector>,
    policy: Policy,
    actuator: Actuator,
    shared: Shared,
    json: bool,
    started: Instant,
    /// With --allow-expand: the gateway, the topic and an admin client to grow it.
    expand: Option<(String, String, Admin)>,
}

/// Runs `keyshift autoscale` until SIGINT/SIGTERM or `--iterations`.
pub fn run(args: AutoscaleArgs) -> anyhow::Result<()> {
    http::init_logging();
    args.check()?;
    let config = args.policy_config();
    let policy = Policy::new(config)?;
    let settings = ClientSettings::new(&args.bootstrap_servers)
        .client_id(&args.client_id)
        .properties(args.client_config.merged(&args.properties)?);

    // Topics first: a topic that does not exist (no partitions) is a usage error.
    if !args.topics.is_empty() {
        let admin = Admin::new(&settings)?;
        for topic in &args.topics {
            match admin.partitions(topic) {
                Ok(0) => {
                    return Err(FlagError::new(
                        "--topic",
                        format!("topic '{topic}' has no partitions"),
                    )
                    .into())
                }
                Ok(_) => {}
                Err(AdminError::UnknownTopic { .. }) => {
                    return Err(FlagError::new(
                        "--topic",
                        format!(
                            "topic '{topic}' does not exist on {} (no partitions to scale over)",
                            args.bootstrap_servers
                        ),
                    )
                    .into())
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    let mut collector = LagCollector::new(&settings)?;
    let first = match collector.collect(std::slice::from_ref(&args.group), SystemTime::now()) {
        Ok(groups) => groups
            .into_iter()
            .find(|g| g.group == args.group)
            .ok_or_else(|| FlagError::new("--group", format!("no group '{}'", args.group)))?,
        Err(LagError::UnknownGroup { group }) => {
            return Err(FlagError::new(
                "--group",
                format!(
                    "consumer group '{group}' does not exist on {} (no members and no \
                     committed offsets)",
                    args.bootstrap_servers
                ),
            )
            .into())
        }
        Err(e) => return Err(anyhow::Error::new(e).context("reading the group's lag")),
    };
    for topic in &args.topics {
        if !first.topics.contains_key(topic) {
            let consumed: Vec<&str> = first.topics.keys().map(String::as_str).collect();
            return Err(FlagError::new(
                "--topic",
                format!(
                    "group '{}' neither commits nor is assigned partitions of topic '{topic}' \
                     (it consumes: {})",
                    args.group,
                    if consumed.is_empty() {
                        "nothing yet".to_owned()
                    } else {
                        consumed.join(", ")
                    }
                ),
            )
            .into());
        }
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;

    let actuator = if args.kubernetes {
        let name = args.name.clone().unwrap_or_default();
        let conn = Connection {
            kubeconfig: args.kubeconfig.clone(),
            context: args.context.clone(),
        };
        let actuator = runtime.block_on(KubeActuator::connect(
            &conn,
            args.kind,
            args.namespace.as_deref(),
            &name,
        ))?;
        // Reading the count once now turns a wrong name, namespace or RBAC into an error at
        // start rather than a loop of failures.
        let replicas = runtime.block_on(actuator.replicas())?;
        tracing::info!(target = %actuator.target(), replicas, "scaling on Kubernetes");
        Actuator::Kubernetes(Box::new(actuator))
    } else {
        // One consumer per replica; a cluster that does not describe groups leaves the floor.
        let members = first.members.map_or(args.min_replicas.max(1), |m| {
            u32::try_from(m).unwrap_or(u32::MAX)
        });
        Actuator::Assumed(args.replicas.unwrap_or(members))
    };

    let shared = Shared::new(&args.group);
    let health = Health::new();
    let server = match args.serve {
        Some(addr) => {
            let server = runtime.block_on(HttpServer::bind(addr))?;
            let mut registry = Registry::default();
            registry.register_collector(Box::new(AutoscaleCollector(shared.clone())));
            let router = http::routes(Arc::new(registry), health.clone())
                .merge(serve::routes(shared.clone()));
            Some((server, router))
        }
        None => None,
    };

    let mut autoscaler = Autoscaler {
        group: args.group.clone(),
        topics: args.topics.clone(),
        mode: match args.mode {
            ModeFlag::Hpa => "hpa",
            ModeFlag::Predictive => "predictive",
        },
        collector: Some(collector),
        policy,
        actuator,
        shared,
        json: args.json,
        started: Instant::now(),
        expand: match (&args.gateway, args.allow_expand) {
            (Some(g), true) => Some((g.clone(), args.topics[0].clone(), Admin::new(&settings)?)),
            _ => None,
        },
    };
    let target = match &autoscaler.actuator {
        Actuator::Kubernetes(k) => k.target().to_string(),
        Actuator::Assumed(_) => "dry-run".to_owned(),
    };
    let mut banner = format!(
        "keyshift autoscale: group {} ({} mode) every {} s -> {target}",
        args.group, autoscaler.mode, args.interval
    );
    if let Some((server, _)) = &server {
        banner += &format!(
            "; serving http://{}{}",
            server.local_addr(),
            serve::SCALE_PATH
        );
    }
    if !args.json {
        println!("{banner}");
    } else {
        eprintln!("{banner}");
    }
    std::io::stdout().flush()?;

    let interval = Duration::from_secs_f64(args.interval);
    let iterations = args.iterations;
    let outcome = runtime.block_on(async move {
        let (stop_tx, _) = tokio::sync::watch::channel(false);
        let served = server.map(|(server, router)| {
            let mut rx = stop_tx.subscribe();
            tokio::spawn(server.serve(router, async move {
                let _ = rx.wait_for(|s| *s).await;
            }))
        });
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let signal = http::shutdown_signal();
        tokio::pin!(signal);
        let mut done = 0u64;
        let result = loop {
            tokio::select! {
                () = &mut signal => break Ok(()),
                _ = ticker.tick() => {}
            }
            // A collection against an unreachable broker can take its full timeouts: a
            // signal ends it rather than waiting for them.
            tokio::select! {
                () = &mut signal => break Ok(()),
                r = autoscaler.evaluate() => {
                    if let Err(e) = r {
                        break Err(e);
                    }
                }
            }
            done += 1;
            if iterations.is_some_and(|n| done >= n) {
                break Ok(());
            }
        };
        health.set_draining();
        let _ = stop_tx.send(true);
        if let Some(task) = served {
            task.await.context("HTTP server task")??;
        }
        result
    });
    // A collection interrupted by a signal may still be blocked in librdkafka: do not wait
    // for its timeouts to exit.
    runtime.shutdown_timeout(Duration::from_millis(500));
    outcome
}

impl Autoscaler {
    /// One evaluation: collect, decide, act, report. Failures of Kafka or Kubernetes are
    /// logged and counted; only a broken stdout ends the loop.
    async fn evaluate(&mut self) -> anyhow::Result<()> {
        let mut collector = self
            .collector
            .take()
            // Put back after every collection; only a signal cancels one, and that ends the loop.
            .expect("the collector is returned after every collection");
        let group = self.group.clone();
        // librdkafka's offset and metadata calls block; keep them off the runtime's thread.
        let (collector, collected) = tokio::task::spawn_blocking(move || {
            let r = collector.collect(std::slice::from_ref(&group), SystemTime::now());
            (collector, r)
        })
        .await
        .context("lag collection task")?;
        self.collector = Some(collector);
        let lag = match collected {
            Ok(groups) => match groups.into_iter().find(|g| g.group == self.group) {
                Some(g) => g,
                None => {
                    self.collect_failed(format!("group '{}' not reported", self.group));
                    return Ok(());
                }
            },
            Err(e) => {
                self.collect_failed(e.to_string());
                return Ok(());
            }
        };
        let m = measure(&lag, &self.topics);

        let current = match &self.actuator {
            Actuator::Assumed(n) => *n,
            Actuator::Kubernetes(k) => match k.replicas().await {
                Ok(n) => n,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the replica count; skipping this evaluation");
                    self.shared.actuator_failed();
                    return Ok(());
                }
            },
        };
        let now = self.started.elapsed().as_secs_f64();
        let obs = Observation {
            current_replicas: current,
            partitions: m.partitions,
            lag_records: m.lag_records,
            lag_seconds: m.lag_seconds,
            production_rate: m.production_rate,
            consumption_rate: m.consumption_rate,
        };
        let decision = self.policy.decide(now, &obs);
        if decision.changed() {
            match &mut self.actuator {
                Actuator::Assumed(n) => *n = decision.desired,
                Actuator::Kubernetes(k) => {
                    if let Err(e) = k.set_replicas(decision.desired).await {
                        tracing::error!(error = %e, "cannot set the replica count");
                        self.shared.actuator_failed();
                    }
                }
            }
        }
        let expanded = match (decision.expand_to, &self.expand) {
            (Some(m), Some((gateway, topic, admin))) => {
                Some(self.grow(gateway, topic, admin, m).await)
            }
            _ => None,
        };
        self.report(&obs, &decision, expanded.as_ref())?;
        self.shared.evaluated(ScaleStatus {
            group: self.group.clone(),
            mode: self.mode,
            desired_replicas: decision.desired,
            current_replicas: decision.current,
            changed: decision.changed(),
            reason: reasons_text(&decision),
            lag_records: m.lag_records,
            lag_seconds: m.lag_seconds,
            production_rate: m.production_rate.unwrap_or(0.0),
            consumption_rate: m.consumption_rate.unwrap_or(0.0),
            partitions: m.partitions,
            evaluated_at: unix_now(),
        });
        Ok(())
    }

    fn collect_failed(&self, error: String) {
        tracing::warn!(group = %self.group, %error, "cannot read the group's lag; holding");
        self.shared.collect_failed(error);
    }

    /// --allow-expand: grows `topic` to `m` partitions (CreatePartitions, then the gateway's
    /// epoch fences); the outcome as one line for the report.
    async fn grow(&self, gateway: &str, topic: &str, admin: &Admin, m: u32) -> String {
        let (gateway, topic, admin) = (gateway.to_owned(), topic.to_owned(), admin.clone());
        let outcome = tokio::task::spawn_blocking(move || {
            keyshift_kafka::expand::ensure_partitions(&admin, &topic, m)?;
            keyshift_kafka::expand::ask_gateway(&gateway, m, Duration::from_secs(120))
        })
        .await;
        match outcome {
            Ok(Ok(g)) => {
                tracing::info!(from = g.from, to = g.to, epoch = ?g.epoch, "topic grown");
                format!(
                    "grew {} → {} partitions (epoch fences: {})",
                    g.from, g.to, g.fences
                )
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot grow the topic");
                format!("growth to {m} partitions failed: {e}")
            }
            Err(e) => format!("growth to {m} partitions failed: {e}"),
        }
    }

    /// Prints the decision: one text line, or one JSON object with `--json`.
    fn report(
        &self,
        obs: &Observation,
        d: &Decision,
        expanded: Option<&String>,
    ) -> std::io::Result<()> {
        let mut out = std::io::stdout().lock();
        if self.json {
            let line = serde_json::json!({
                "group": self.group,
                "mode": self.mode,
                "at_secs": d.at_secs,
                "observation": obs,
                "current": d.current,
                "recommended": d.recommended,
                "desired": d.desired,
                "changed": d.changed(),
                "reasons": d.reasons,
                "reason": reasons_text(d),
                "expand_to": d.expand_to,
                "expanded": expanded,
            });
            writeln!(out, "{line}")?;
        } else {
            let rate = |r: Option<f64>| r.map_or("-".to_owned(), |r| format!("{r:.1}/s"));
            writeln!(
                out,
                "[{:>7.1}s] {} lag {} records, {:.1} s; in {} out {}; {} partitions: {d}",
                d.at_secs,
                self.group,
                obs.lag_records,
                obs.lag_seconds,
                rate(obs.production_rate),
                rate(obs.consumption_rate),
                obs.partitions,
            )?;
            if let Some(e) = expanded {
                writeln!(out, "           {e}")?;
            }
        }
        out.flush()
    }
}

/// The decision's reasons joined as one sentence.
fn reasons_text(d: &Decision) -> String {
    d.reasons
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_parse_pods_percent_and_none() {
        assert_eq!(
            parse_limit("4/15").unwrap().0,
            Some(RateLimit {
                kind: RateLimitKind::Pods,
                value: 4.0,
                period_secs: 15.0
            })
        );
        assert_eq!(
            parse_limit("50%/60").unwrap().0,
            Some(RateLimit {
                kind: RateLimitKind::Percent,
                value: 50.0,
                period_secs: 60.0
            })
        );
        assert_eq!(parse_limit("none").unwrap().0, None);
        for bad in ["4", "x/15", "4/0", "-1/15", "4%/", "%/15"] {
            let e = parse_limit(bad).unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn none_clears_limits_and_absent_keeps_defaults() {
        let up = limits(
            &[LimitFlag(None)],
            SelectFlag::Max,
            RateLimits::hpa_default_up(),
        );
        assert!(up.limits.is_empty());
        let up = limits(&[], SelectFlag::Min, RateLimits::hpa_default_up());
        assert_eq!(up.limits, RateLimits::hpa_default_up().limits);
        assert_eq!(up.select, SelectPolicy::Min);
    }
}
