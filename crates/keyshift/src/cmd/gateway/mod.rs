//! `keyshift gateway`: the seed's HTTP gateway — `POST /new` with `{"key","body"}` — in
//! front of the keyshift producer, plus a batch endpoint, Prometheus metrics and a health
//! probe.
//!
//! [`GatewayArgs`] resolve into a [`KeyshiftProducer`] (strategy and its options from the
//! shared strategy flags, client settings from `--bootstrap-servers` and `-X`) and request
//! [`api::Limits`]; [`api`] validates and sends; [`metrics`] exports the gateway's and the
//! producer's figures. On SIGINT/SIGTERM the gateway stops accepting, finishes the requests
//! it accepted (each waits for its broker acknowledgement), then flushes the producer — so
//! every record it acknowledged, or accepted with `--no-wait`, is in Kafka when it exits.

pub mod admin;
pub mod api;
pub mod metrics;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use keyshift_kafka::{ClientSettings, FeedbackLoop, KeyshiftProducer, Property};
use prometheus_client::registry::Registry;

use self::api::{Gateway, Limits};
use self::metrics::{
    FeedbackCollector, GatewayMetrics, HotKeys, HotKeysCollector, ProducerCollector,
};
use super::strategy_flags::{RouteFlags, StrategyFlags};
use super::trace_flags::TraceFlags;
use super::workload_flags::{at_least_one, at_least_one_usize, parse_strategy, positive_f64};
use crate::exit::FlagError;
use crate::http::{self, Health, HttpServer};

/// How often `--consumer-group`'s offsets are read.
const FEEDBACK_INTERVAL: Duration = Duration::from_secs(2);

/// Flags of `keyshift gateway`.
#[derive(Debug, Args)]
#[command(
    about = "HTTP gateway: POST /new {\"key\",\"body\"} → keyshift producer → Kafka",
    long_about = "HTTP gateway: POST /new {\"key\",\"body\"} → keyshift producer → Kafka.\n\n\
                  POST /new sends one record and answers {\"partition\",\"offset\"} once the \
                  broker acknowledged it; POST /batch takes a JSON array of such objects and \
                  answers per record. Bad requests get a JSON error naming the field (400, 413, \
                  415, 422), producer failures 503 with the reason. GET /metrics serves \
                  Prometheus metrics (records, bytes, per-partition records, hot keys, \
                  migrations, fence round trip, delivery errors), GET /healthz a health probe. \
                  SIGINT/SIGTERM stop it gracefully: in-flight requests finish and the producer \
                  is flushed.\n\nReplicas of one topic coordinate by default (--routes \
                  coordinated): they move keys as one through <topic>.keyshift-control (one \
                  decides, all fence their own records of a moving key, a moved key waits for \
                  all of them), which also keeps the routes across restarts, so a restarted \
                  (even kill -9'd) gateway keeps per-key order; /metrics shows each one's role. \
                  --routes durable keeps routes in <topic>.keyshift-routes for one gateway \
                  alone; --routes ephemeral keeps them in memory, which is unsafe across \
                  restarts."
)]
pub struct GatewayArgs {
    /// Kafka bootstrap servers, host:port[,host:port...].
    #[arg(long, env = "KEYSHIFT_BOOTSTRAP_SERVERS")]
    bootstrap_servers: String,

    /// Topic records are written to.
    #[arg(long, default_value = "keyshift")]
    topic: String,

    /// Create the topic with this many partitions if it does not exist [default: the topic
    /// must exist].
    #[arg(long, value_parser = at_least_one)]
    partitions: Option<u32>,

    /// Home keys on the first N partitions of the topic only [default: all of them]. The
    /// others wait until a growth (`POST /admin/grow`, which `keyshift expand` sends) moves
    /// keys onto them with one epoch fence per partition in use: the path for a broker
    /// without CreatePartitions, or for capacity added ahead of need. A growth recorded in
    /// the route topic (durable routes) or the control log (coordinated) decides instead.
    #[arg(long, value_name = "N", value_parser = at_least_one)]
    active_partitions: Option<u32>,

    /// Partitioning strategy (hash, slops, keyshift, pkg, unordered).
    #[arg(long, value_parser = parse_strategy, default_value = "keyshift")]
    strategy: String,

    /// Address to serve HTTP on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,

    /// librdkafka property passed through to the producer, like kcat (repeatable).
    #[arg(short = 'X', value_name = "KEY=VALUE")]
    properties: Vec<Property>,

    #[command(flatten)]
    client_config: crate::cmd::client_config::ClientConfigFlag,

    /// Client id the broker sees.
    #[arg(long, default_value = "keyshift-gateway")]
    client_id: String,

    /// Answer 202 as soon as a record is routed and queued instead of 200 after the broker's
    /// acknowledgement (higher throughput; delivery errors are then only counted).
    #[arg(long)]
    no_wait: bool,

    /// Largest key in bytes.
    #[arg(long, value_parser = at_least_one_usize, default_value_t = Limits::default().max_key_bytes)]
    max_key_bytes: usize,

    /// Largest body in bytes.
    #[arg(long, value_parser = at_least_one_usize, default_value_t = Limits::default().max_body_bytes)]
    max_body_bytes: usize,

    /// Largest request in bytes (JSON included).
    #[arg(long, value_parser = at_least_one_usize, default_value_t = Limits::default().max_request_bytes)]
    max_request_bytes: usize,

    /// Most records in one POST /batch.
    #[arg(long, value_parser = at_least_one_usize, default_value_t = Limits::default().max_batch)]
    max_batch: usize,

    /// Hot keys exported in /metrics (top k of a Space-Saving sketch).
    #[arg(long, default_value_t = 10)]
    hot_keys: usize,

    /// Half-life in seconds of the hot-key rates.
    #[arg(long, value_parser = positive_f64, default_value_t = 10.0)]
    hot_key_half_life: f64,

    /// Seconds to wait for outstanding records at shutdown.
    #[arg(long, value_parser = positive_f64, default_value_t = 30.0)]
    flush_timeout: f64,

    /// Consumer group that processes the topic. Its pace and backlog per partition, read
    /// from the committed and end offsets every 2 s, feed the strategy's cost model (moves
    /// weigh the backlog a key would wait behind; partitions count by their consumer's
    /// measured capacity) and are shown on /metrics (keyshift_gateway_consumer_pace,
    /// keyshift_gateway_consumer_backlog). Without it the strategy balances records only.
    #[arg(long, value_name = "GROUP")]
    consumer_group: Option<String>,

    #[command(flatten)]
    strategy_flags: StrategyFlags,

    #[command(flatten)]
    route_flags: RouteFlags,

    #[command(flatten)]
    trace_flags: TraceFlags,
}

/// Runs `keyshift gateway` until SIGINT/SIGTERM.
pub fn run(args: GatewayArgs) -> anyhow::Result<()> {
    http::init_logging();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let settings = ClientSettings::new(&args.bootstrap_servers)
        .client_id(&args.client_id)
        .properties(args.client_config.merged(&args.properties)?);
    let trace = args.trace_flags.open("keyshift-gateway", &settings)?;
    if args
        .consumer_group
        .as_deref()
        .is_some_and(|g| g.trim().is_empty())
    {
        return Err(FlagError::new("--consumer-group", "must not be empty").into());
    }
    let (producer, partitions, _) = args.strategy_flags.open_producer_with(
        &runtime,
        settings.clone(),
        &args.topic,
        args.partitions,
        &args.strategy,
        &args.route_flags,
        |mut builder| {
            if let Some(n) = args.active_partitions {
                builder = builder.partitions(n);
            }
            if let Some(t) = &trace.tracing {
                builder = builder.tracing(t.clone());
            }
            if let Some(e) = &trace.events {
                builder = builder.trace_events(e.clone());
            }
            builder
        },
    )?;
    if let Some(n) = args.active_partitions.filter(|&n| n > partitions) {
        return Err(FlagError::new(
            "--active-partitions",
            format!(
                "{n} is more than the {partitions} partitions of topic '{}'",
                args.topic
            ),
        )
        .into());
    }
    let homed = producer.partitions();
    let limits = Limits {
        max_key_bytes: args.max_key_bytes,
        max_body_bytes: args.max_body_bytes,
        max_request_bytes: args.max_request_bytes,
        max_batch: args.max_batch,
    };
    let feedback = match &args.consumer_group {
        Some(group) => Some(Arc::new(
            FeedbackLoop::spawn(&settings, group, producer.clone(), FEEDBACK_INTERVAL)
                .with_context(|| format!("--consumer-group {group}"))?,
        )),
        None => None,
    };
    let options = GatewayOptions {
        feedback,
        limits,
        wait_for_ack: !args.no_wait,
        hot_keys: args.hot_keys,
        hot_key_half_life: args.hot_key_half_life,
        flush_timeout: Duration::from_secs_f64(args.flush_timeout),
    };
    runtime.block_on(async {
        let server = HttpServer::bind(args.listen).await?;
        // One line on stdout with the real address (useful with --listen 127.0.0.1:0).
        println!(
            "keyshift gateway listening on http://{} (topic {}, {} partitions{}, strategy {})",
            server.local_addr(),
            args.topic,
            partitions,
            if homed < partitions {
                format!(", keys homed on {homed}")
            } else {
                String::new()
            },
            args.strategy
        );
        std::io::Write::flush(&mut std::io::stdout())?;
        tracing::info!(
            addr = %server.local_addr(),
            topic = %args.topic,
            partitions,
            strategy = %args.strategy,
            "gateway ready"
        );
        serve(producer, options, server, http::shutdown_signal()).await
    })?;
    // Spans and events of the last records, after the producer's flush acknowledged them.
    trace.flush();
    Ok(())
}

/// What [`serve`] needs besides the producer.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// Consumer feedback, if a consumer group was named.
    pub feedback: Option<Arc<FeedbackLoop>>,
    /// Request limits.
    pub limits: Limits,
    /// Answer after the broker's acknowledgement (otherwise 202 once queued).
    pub wait_for_ack: bool,
    /// Hot keys exported in /metrics.
    pub hot_keys: usize,
    /// Half-life in seconds of the hot-key rates.
    pub hot_key_half_life: f64,
    /// How long the final flush may take.
    pub flush_timeout: Duration,
}

/// Serves the gateway on `server` until `shutdown` resolves, then finishes in-flight requests
/// and flushes `producer`. Usable in-process (tests, experiments) as well as by [`run`].
pub async fn serve<F>(
    producer: KeyshiftProducer,
    options: GatewayOptions,
    server: HttpServer,
    shutdown: F,
) -> anyhow::Result<()>
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let mut registry = Registry::default();
    let gateway_metrics = GatewayMetrics::register(&mut registry);
    // The sketch tracks more keys than it exports so that the exported top k are accurate.
    let hot_keys = Arc::new(HotKeys::new(
        (options.hot_keys * 8).max(64),
        options.hot_key_half_life,
        options.hot_keys,
    )?);
    registry.register_collector(Box::new(HotKeysCollector(Arc::clone(&hot_keys))));
    if let Some(feedback) = &options.feedback {
        registry.register_collector(Box::new(FeedbackCollector(Arc::clone(feedback))));
    }
    registry.register_collector(Box::new(ProducerCollector::new(producer.clone())));
    let gateway = Arc::new(Gateway {
        producer: producer.clone(),
        limits: options.limits,
        wait_for_ack: options.wait_for_ack,
        metrics: gateway_metrics,
        hot_keys,
    });
    let health = Health::new();
    let router = http::routes(Arc::new(registry), health.clone())
        .merge(api::routes(gateway))
        .merge(admin::routes(producer.clone()));
    let draining = health.clone();
    server
        .serve(router, async move {
            shutdown.await;
            draining.set_draining();
        })
        .await?;
    tracing::info!("HTTP stopped; flushing the producer");
    producer
        .close(options.flush_timeout)
        .await
        .context("flushing outstanding records at shutdown")?;
    let stats = producer.stats();
    tracing::info!(
        records = stats.records,
        delivery_errors = stats.delivery_errors,
        migrations = stats.migrations,
        "gateway stopped"
    );
    Ok(())
}
