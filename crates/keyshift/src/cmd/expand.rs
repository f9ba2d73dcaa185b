//! `keyshift expand`: grow a keyed topic's partitions without breaking per-key order. The
//! runtime is `keyshift_kafka::expand`; this module parses flags and prints its progress and
//! summary (`docs/expansion.md` has the protocol and its cost).

use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use keyshift_core::protocol::epoch::remapped_share;
use keyshift_kafka::expand::{ask_gateway, ensure_partitions, wait_barriers};
use keyshift_kafka::{Admin, ClientSettings, Property};
use serde_json::json;

use crate::cmd::workload_flags::{at_least_one, positive_f64};
use crate::exit::FlagError;

/// Flags of `keyshift expand`.
#[derive(Debug, Args)]
#[command(
    about = "Grow a keyed topic's partitions without breaking per-key order",
    long_about = "Grow a keyed topic's partitions without breaking per-key order.\n\n\
        1. The topic gets --partitions partitions (CreatePartitions) unless it has them \
        already: on a broker without CreatePartitions (the embedded one) create the topic \
        with the final count and run the gateway with --active-partitions.\n\
        2. The gateway producing to it (POST /admin/grow) writes one epoch fence per \
        partition in use and homes keys on the new count; records of a key whose home \
        changed carry the barrier of its old home, and ordered consumers (keyshift worker, \
        OrderedConsumer) park such a key until its old partition is processed past the \
        fence. Keys whose home did not change never wait.\n\
        3. With --consumer-group, waits until that group has processed every old partition \
        past its fence and reports how long: no record waits for the growth after that.\n\n\
        Only keyshift producers keep order across the growth: a plain Kafka producer writing \
        the same keys starts using the new partitions on its own, without fences."
)]
pub struct ExpandArgs {
    /// Kafka bootstrap servers.
    #[arg(long, env = "KEYSHIFT_BOOTSTRAP_SERVERS")]
    bootstrap_servers: String,

    /// The topic to grow.
    #[arg(long)]
    topic: String,

    /// Partitions keys are homed on afterwards (more than now).
    #[arg(long, value_name = "M", value_parser = at_least_one)]
    partitions: u32,

    /// The keyshift gateway producing to the topic (base URL, e.g. http://127.0.0.1:8080):
    /// it writes the epoch fences behind its own records.
    #[arg(long, value_name = "URL")]
    gateway: String,

    /// Wait until this consumer group has processed every old partition past its epoch
    /// fence, and report how long records could be parked by the growth.
    #[arg(long, value_name = "GROUP")]
    consumer_group: Option<String>,

    /// Seconds to wait for the gateway's growth and for the group. Coordinated gateways grow
    /// together once every replica is accounted for: a stopped replica delays the growth
    /// until it is heard again or forgotten (ten member timeouts); after a timeout here the
    /// growth still happens, and running expand again waits for it.
    #[arg(long, value_parser = positive_f64, default_value_t = 120.0)]
    timeout: f64,

    /// A librdkafka property for the admin client, key=value (repeatable).
    #[arg(short = 'X', long = "property", value_name = "KEY=VALUE")]
    properties: Vec<Property>,

    #[command(flatten)]
    client_config: crate::cmd::client_config::ClientConfigFlag,

    /// Print the summary as one JSON object on stdout (progress stays on stderr).
    #[arg(long)]
    json: bool,
}

/// Runs `keyshift expand`.
pub fn run(args: ExpandArgs) -> anyhow::Result<()> {
    if args.topic.trim().is_empty() {
        return Err(FlagError::new("--topic", "must not be empty").into());
    }
    if !(args.gateway.starts_with("http://") || args.gateway.starts_with("https://")) {
        return Err(FlagError::new(
            "--gateway",
            format!("'{}' is not an http(s):// URL", args.gateway),
        )
        .into());
    }
    let timeout = Duration::from_secs_f64(args.timeout);
    let settings = ClientSettings::new(&args.bootstrap_servers)
        .client_id("keyshift-expand")
        .properties(args.client_config.merged(&args.properties)?);
    let admin = Admin::new(&settings).context("connecting to the cluster")?;
    let m = args.partitions;
    let step = ensure_partitions(&admin, &args.topic, m)?;
    if step.added {
        eprintln!(
            "topic {}: {} → {m} partitions (CreatePartitions)",
            args.topic, step.had
        );
    } else {
        eprintln!(
            "topic {}: has {} partitions already; growing into them",
            args.topic, step.had
        );
    }
    eprintln!("gateway {}: writing epoch fences ...", args.gateway);
    let g = ask_gateway(&args.gateway, m, timeout)?;
    let share = remapped_share(g.from, g.to);
    eprintln!(
        "epoch {}: keys homed on {} → {} partitions; {:.0} % of keys changed home; {} epoch \
         fences; {} keys ({} records) held {:.0} ms in the producer",
        g.epoch.map_or("-".to_owned(), |e| e.to_string()),
        g.from,
        g.to,
        share * 100.0,
        g.fences,
        g.held_keys,
        g.held_records,
        g.took_ms
    );
    let drained = match &args.consumer_group {
        Some(group) if !g.barriers.is_empty() => {
            eprintln!("group {group}: waiting until every old partition is past its fence ...");
            let mut last = usize::MAX;
            let per_partition =
                wait_barriers(&admin, group, &args.topic, &g.barriers, timeout, |behind| {
                    if behind.len() != last {
                        last = behind.len();
                        eprintln!("  {} old partition(s) still behind: {behind:?}", last);
                    }
                })?;
            let worst = per_partition.iter().max().copied().unwrap_or_default();
            eprintln!(
                "group {group}: every old partition processed past its fence after {:.2} s: \
                 no record of the group was parked by the growth for longer",
                worst.as_secs_f64()
            );
            Some(per_partition)
        }
        _ => None,
    };
    if args.json {
        let summary = json!({
            "topic": args.topic,
            "partitions_before": step.had,
            "partitions_added": step.added,
            "from": g.from,
            "to": g.to,
            "epoch": g.epoch,
            "remapped_share": share,
            "epoch_fences": g.fences,
            "barriers": g.barriers,
            "held_keys": g.held_keys,
            "held_records": g.held_records,
            "switch_ms": g.took_ms,
            "group": args.consumer_group,
            "drained_s": drained.as_ref().map(|d| d.iter().map(Duration::as_secs_f64).collect::<Vec<_>>()),
            "drained_max_s": drained.as_ref().and_then(|d| d.iter().max()).map(Duration::as_secs_f64),
        });
        println!("{summary}");
    }
    Ok(())
}
