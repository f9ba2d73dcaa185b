//! Strategy options as flags, shared by every subcommand that places records (`simulate`,
//! `experiment`, `gateway`, `loadgen`), and [`StrategyFlags::open_producer`], which turns them
//! into a keyshift producer for the subcommands that write to Kafka.
//!
//! Each strategy's options are prefixed with its name (`--slops-epsilon`,
//! `--keyshift-max-moves`) so that options of the same name (`cooldown`, `route-capacity`) do
//! not collide. Unset flags keep the core's defaults, so `--help` and the core cannot disagree
//! about them. [`StrategyFlags::resolve`] builds each selected strategy once to validate its
//! options, and reports a bad one under the flag the user typed.
//!
//! [`RouteFlags`] (`--routes`, `--routes-topic`, the `--coordination-*` timeouts) choose where
//! the producer of `gateway` and `loadgen --bootstrap-servers` keeps the routes of moved keys,
//! and how coordinated producers time each other out (see `docs/routing.md`).

use std::time::Duration;

use clap::{Args, ValueEnum};
use keyshift_core::hash::Hasher;
use keyshift_core::strategy::{self, KeyshiftConfig, PkgConfig, SlopsConfig, StrategyConfig};

use keyshift_kafka::{
    Admin, ClientSettings, CoordinationConfig, KeyshiftProducer, ProducerBuilder, Routes,
    TopicStatus,
};

use crate::cmd::workload_flags::positive_f64;
use crate::exit::FlagError;

/// The seed's SLOPS branches, as presets of the `slops` options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SlopsVariant {
    /// Rebalance every swap interval (the seed's main branch).
    Main,
    /// Main, skipping rebalances while imbalance is within 10 %.
    MainTolerance,
    /// Rebalance continuously, ignoring recently moved keys.
    StateTracking,
    /// State tracking with the 10 % tolerance.
    StateTrackingTol,
}

/// Which hash places keys that no route overrides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HasherArg {
    /// Kafka's default partitioner (murmur2), where any Kafka client puts a key.
    Murmur2,
    /// The SLOPS seed's FNV-1a.
    Fnv1a,
}

/// Where routes of moved keys live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoutesArg {
    /// In a compacted route topic, written before a moved key's new records and read at start:
    /// a restarted producer continues every moved key's route. One producer process per topic
    /// only; refused once coordinated producers have moved keys of the topic.
    Durable,
    /// In memory only (no route topic). UNSAFE across restarts: a restarted producer sends
    /// moved keys home without a fence while their older records may be unprocessed, so
    /// per-key order can break.
    Ephemeral,
    /// Shared by every producer of the topic (gateway replicas, loadgen processes) through a
    /// compacted single-partition control topic: one producer decides moves, all follow them,
    /// each moved key waits for every producer's records on its old partition. Survives
    /// restarts; continues routes left by `durable` producers. The default.
    Coordinated,
}

/// Route-state options of the subcommands that produce to Kafka.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Route state")]
pub struct RouteFlags {
    /// Where the routes of moved keys are kept (order-preserving strategies). `coordinated`
    /// (the default) lets every producer of a topic — this one and any replica started beside
    /// it — move keys as one, through the control topic, which also keeps the routes across
    /// restarts. `durable` records every route change in a route topic of this producer alone
    /// (one producer process per topic). `ephemeral` keeps them in memory: unsafe across
    /// restarts. A route or control topic that cannot be created or read stops the start
    /// (see docs/routing.md).
    #[arg(long, value_enum, default_value_t = RoutesArg::Coordinated)]
    routes: RoutesArg,

    /// Route topic for --routes durable [default: <topic>.keyshift-routes], control topic for
    /// --routes coordinated [default: <topic>.keyshift-control].
    #[arg(long, value_name = "TOPIC")]
    routes_topic: Option<String>,

    /// --routes coordinated: bootstrap servers of the cluster that holds the control topic,
    /// when it is not the data topic's (a cluster that lets applications create topics, or
    /// the control topic reached through a proxy); the same client properties (-X) apply.
    /// Every producer of the topic must use the same [default: --bootstrap-servers].
    #[arg(long, value_name = "HOST:PORT,...")]
    control_bootstrap_servers: Option<String>,

    /// --routes coordinated: seconds of silence after which another producer takes over the
    /// decision of moves from the deciding one [default: 3].
    #[arg(long, value_name = "SECS", value_parser = positive_f64)]
    coordination_lease: Option<f64>,

    /// --routes coordinated: seconds of silence after which a move stops waiting for a
    /// producer; a producer whose latest heartbeat read back from the control log was written
    /// more than two thirds of this ago holds off new records until it has caught up with the
    /// log [default: 3].
    #[arg(long, value_name = "SECS", value_parser = positive_f64)]
    coordination_member_timeout: Option<f64>,

    /// --routes coordinated: seconds after which a move not yet ready is aborted (its key's
    /// held records go where they went before) [default: 10].
    #[arg(long, value_name = "SECS", value_parser = positive_f64)]
    coordination_move_timeout: Option<f64>,
}

impl RouteFlags {
    /// The coordination timeouts; refused unless the routes are coordinated.
    pub fn coordination(&self) -> Result<CoordinationConfig, FlagError> {
        if self.routes != RoutesArg::Coordinated && self.control_bootstrap_servers.is_some() {
            return Err(FlagError::new(
                "--control-bootstrap-servers",
                "only applies with --routes coordinated",
            ));
        }
        let given = [
            ("--coordination-lease", self.coordination_lease),
            (
                "--coordination-member-timeout",
                self.coordination_member_timeout,
            ),
            (
                "--coordination-move-timeout",
                self.coordination_move_timeout,
            ),
        ];
        if self.routes != RoutesArg::Coordinated {
            if let Some((flag, _)) = given.iter().find(|(_, v)| v.is_some()) {
                return Err(FlagError::new(
                    *flag,
                    "only applies with --routes coordinated",
                ));
            }
        }
        let d = CoordinationConfig::default();
        let secs = |v: Option<f64>, default: Duration| v.map_or(default, Duration::from_secs_f64);
        Ok(CoordinationConfig {
            lease: secs(self.coordination_lease, d.lease),
            member_timeout: secs(self.coordination_member_timeout, d.member_timeout),
            move_timeout: secs(self.coordination_move_timeout, d.move_timeout),
        })
    }

    /// The client settings of the control topic: `settings` on the other bootstrap servers
    /// of --control-bootstrap-servers, if given.
    pub fn control_settings(
        &self,
        settings: &ClientSettings,
    ) -> Result<Option<ClientSettings>, FlagError> {
        match self.control_bootstrap_servers.as_deref().map(str::trim) {
            None => Ok(None),
            Some("") => Err(FlagError::new(
                "--control-bootstrap-servers",
                "expected host:port[,host:port...]",
            )),
            Some(servers) => Ok(Some(settings.with_bootstrap_servers(servers))),
        }
    }

    /// The producer's route setting.
    pub fn routes(&self) -> Result<Routes, FlagError> {
        match (self.routes, &self.routes_topic) {
            (RoutesArg::Ephemeral, Some(_)) => Err(FlagError::new(
                "--routes-topic",
                "only applies with --routes durable or coordinated",
            )),
            (RoutesArg::Ephemeral, None) => Ok(Routes::Ephemeral),
            (_, Some(t)) if t.is_empty() => Err(FlagError::new(
                "--routes-topic",
                "expected a non-empty topic name",
            )),
            (RoutesArg::Durable, topic) => Ok(Routes::Durable(topic.clone())),
            (RoutesArg::Coordinated, topic) => Ok(Routes::Coordinated(topic.clone())),
        }
    }
}

/// Options of the strategies.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Strategy options")]
pub struct StrategyFlags {
    /// Hash for keys no route overrides (also their home partition when fencing).
    #[arg(long, value_enum, default_value_t = HasherArg::Murmur2)]
    hasher: HasherArg,

    /// slops: which of the seed's branches to start from; the other --slops-* flags override it.
    #[arg(long, value_enum, default_value_t = SlopsVariant::Main)]
    slops_variant: SlopsVariant,

    /// slops: lossy counting ε (bucket width ⌊1/ε⌋) [default: the seed's].
    #[arg(long, allow_negative_numbers = true)]
    slops_epsilon: Option<f64>,

    /// slops: lossy counting support, the share of traffic that makes a key hot
    /// [default: the seed's].
    #[arg(long, allow_negative_numbers = true)]
    slops_support: Option<f64>,

    /// slops: share of records not counted by the sketch [default: the seed's].
    #[arg(long, allow_negative_numbers = true)]
    slops_sample_threshold: Option<f64>,

    /// slops: seconds between rebalances [default: 10].
    #[arg(long, allow_negative_numbers = true)]
    slops_swap_interval: Option<f64>,

    /// slops: skip a rebalance while max/mean − 1 is within this (0.1 = 10 %)
    /// [default: none, or 0.1 for the -tolerance variants].
    #[arg(long, allow_negative_numbers = true)]
    slops_tolerance: Option<f64>,

    /// slops: seconds during which a moved key is not moved again [default: 0, or 10 for the
    /// state-tracking variants].
    #[arg(long, allow_negative_numbers = true)]
    slops_cooldown: Option<f64>,

    /// keyshift: half-life in seconds of key rates and partition loads.
    #[arg(long, allow_negative_numbers = true, default_value_t = KeyshiftConfig::default().half_life_secs)]
    keyshift_half_life: f64,

    /// keyshift: seconds between rebalance rounds.
    #[arg(long, allow_negative_numbers = true, default_value_t = KeyshiftConfig::default().rebalance_interval_secs)]
    keyshift_rebalance_interval: f64,

    /// keyshift: tolerated excess over the lower bound before moving a key (0.02 = 2 %).
    #[arg(long, allow_negative_numbers = true, default_value_t = KeyshiftConfig::default().hysteresis)]
    keyshift_hysteresis: f64,

    /// keyshift: migration budget, most key moves per round.
    #[arg(long, default_value_t = KeyshiftConfig::default().max_moves_per_round)]
    keyshift_max_moves: usize,

    /// keyshift: seconds during which a moved key is not moved again.
    #[arg(long, allow_negative_numbers = true, default_value_t = KeyshiftConfig::default().cooldown_secs)]
    keyshift_cooldown: f64,

    /// keyshift: seconds of traffic observed before the first round.
    #[arg(long, allow_negative_numbers = true, default_value_t = KeyshiftConfig::default().warmup_secs)]
    keyshift_warmup: f64,

    /// keyshift: use measured per-partition consumer throughput and lag as capacity.
    #[arg(long, default_value_t = KeyshiftConfig::default().use_feedback,
          action = clap::ArgAction::Set, value_name = "BOOL")]
    keyshift_feedback: bool,

    /// keyshift: how sure a round must be that a partition is over the target before it moves
    /// a key off it, in standard errors of the partition's load estimate (0 = act on point
    /// estimates; higher = fewer moves on noise, slower to react).
    #[arg(long, allow_negative_numbers = true, default_value_t = KeyshiftConfig::default().confidence)]
    keyshift_confidence: f64,

    /// pkg: half-life in seconds of the per-partition load [default: cumulative counts].
    #[arg(long, allow_negative_numbers = true)]
    pkg_half_life: Option<f64>,

    /// unordered: rotate over partitions instead of picking the least loaded.
    #[arg(long)]
    unordered_round_robin: bool,
}

impl StrategyFlags {
    /// Opens `topic` — created with `partitions` when given (an existing topic must have that
    /// many), otherwise read from the cluster — and builds a producer routed by `strategy` with
    /// these options. The producer is built inside `runtime` so that its background tasks (fence
    /// acknowledgements, backlog) run there. Returns it with the partition count and the
    /// resolved strategy options.
    pub fn open_producer(
        &self,
        runtime: &tokio::runtime::Runtime,
        settings: ClientSettings,
        topic: &str,
        partitions: Option<u32>,
        strategy: &str,
        routes: &RouteFlags,
    ) -> anyhow::Result<(KeyshiftProducer, u32, StrategyConfig)> {
        self.open_producer_with(
            runtime,
            settings,
            topic,
            partitions,
            strategy,
            routes,
            |b| b,
        )
    }

    /// [`StrategyFlags::open_producer`], with `configure` applied to the builder last (e.g.
    /// to add tracing).
    #[allow(clippy::too_many_arguments)]
    pub fn open_producer_with(
        &self,
        runtime: &tokio::runtime::Runtime,
        settings: ClientSettings,
        topic: &str,
        partitions: Option<u32>,
        strategy: &str,
        routes: &RouteFlags,
        configure: impl FnOnce(ProducerBuilder) -> ProducerBuilder,
    ) -> anyhow::Result<(KeyshiftProducer, u32, StrategyConfig)> {
        let coordination = routes.coordination()?;
        let control_settings = routes.control_settings(&settings)?;
        let routes = routes.routes()?;
        let admin = Admin::new(&settings)?;
        let partitions = match partitions {
            Some(n) => {
                if admin.create_topic(topic, n)? == TopicStatus::Created {
                    tracing::info!(topic, partitions = n, "created topic");
                }
                n
            }
            None => admin.partitions(topic)?,
        };
        drop(admin);
        let config = self.resolve(&[strategy.to_owned()], partitions)?;
        let producer = runtime.block_on(async {
            let mut builder = KeyshiftProducer::builder(settings, topic)
                .strategy(strategy)
                .strategy_config(config)
                .partitions(partitions)
                .routes(routes)
                .coordination(coordination);
            if let Some(control) = control_settings {
                builder = builder.control_settings(control);
            }
            configure(builder).build()
        })?;
        Ok((producer, partitions, config))
    }

    /// The strategy configuration, checked by building each of `names` over `partitions`.
    pub fn resolve(&self, names: &[String], partitions: u32) -> Result<StrategyConfig, FlagError> {
        let mut slops = match self.slops_variant {
            SlopsVariant::Main => SlopsConfig::main(),
            SlopsVariant::MainTolerance => SlopsConfig::main_tolerance(),
            SlopsVariant::StateTracking => SlopsConfig::state_tracking(),
            SlopsVariant::StateTrackingTol => SlopsConfig::state_tracking_tol(),
        };
        if let Some(x) = self.slops_epsilon {
            slops.epsilon = x;
        }
        if let Some(x) = self.slops_support {
            slops.support = x;
        }
        if let Some(x) = self.slops_sample_threshold {
            slops.sample_threshold = x;
        }
        if let Some(x) = self.slops_swap_interval {
            slops.swap_interval_secs = x;
        }
        if self.slops_tolerance.is_some() {
            slops.tolerance = self.slops_tolerance;
        }
        if let Some(x) = self.slops_cooldown {
            slops.cooldown_secs = x;
        }
        let keyshift = KeyshiftConfig {
            half_life_secs: self.keyshift_half_life,
            rebalance_interval_secs: self.keyshift_rebalance_interval,
            hysteresis: self.keyshift_hysteresis,
            max_moves_per_round: self.keyshift_max_moves,
            cooldown_secs: self.keyshift_cooldown,
            warmup_secs: self.keyshift_warmup,
            use_feedback: self.keyshift_feedback,
            confidence: self.keyshift_confidence,
            ..KeyshiftConfig::default()
        };
        let config = StrategyConfig {
            hasher: match self.hasher {
                HasherArg::Murmur2 => Hasher::Murmur2,
                HasherArg::Fnv1a => Hasher::Fnv1a,
            },
            seed: 0,
            slops,
            keyshift,
            pkg: PkgConfig {
                half_life_secs: self.pkg_half_life,
            },
            unordered: strategy::UnorderedConfig {
                round_robin: self.unordered_round_robin,
            },
        };
        for name in names {
            if let Err(e) = strategy::build_with(name, partitions, &config) {
                // Core errors name the option as the strategy knows it (`cooldown`); the
                // flag carries the strategy's prefix unless the core already added it.
                let flag = if e.name == "partitions" || e.name.starts_with(&format!("{name}-")) {
                    format!("--{}", e.name)
                } else {
                    format!("--{name}-{}", e.name)
                };
                return Err(FlagError::new(flag, e.reason));
            }
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        routes: RouteFlags,
    }

    fn parse(args: &[&str]) -> RouteFlags {
        Cli::try_parse_from(std::iter::once("test").chain(args.iter().copied()))
            .expect("parses")
            .routes
    }

    #[test]
    fn coordination_timeouts_apply_to_coordinated_routes_only() {
        let f = parse(&[
            "--routes",
            "coordinated",
            "--coordination-move-timeout",
            "4.5",
        ]);
        assert_eq!(f.routes().unwrap(), Routes::Coordinated(None));
        let c = f.coordination().unwrap();
        assert_eq!(c.move_timeout, Duration::from_millis(4500));
        assert_eq!(c.lease, CoordinationConfig::default().lease);
        // Coordinated is the default: the timeouts apply without --routes.
        assert_eq!(parse(&[]).routes().unwrap(), Routes::Coordinated(None));
        assert_eq!(
            parse(&["--coordination-lease", "2"])
                .coordination()
                .unwrap()
                .lease,
            Duration::from_secs(2)
        );
        let err = parse(&["--routes", "durable", "--coordination-lease", "2"])
            .coordination()
            .unwrap_err();
        assert!(err.to_string().contains("--coordination-lease"), "{err}");
        assert!(err.to_string().contains("--routes coordinated"), "{err}");
        assert!(Cli::try_parse_from(["test", "--coordination-member-timeout", "0"]).is_err());
        let err = parse(&["--routes", "ephemeral", "--routes-topic", "t"])
            .routes()
            .unwrap_err();
        assert!(err.to_string().contains("--routes-topic"), "{err}");
    }

    #[test]
    fn the_control_topic_may_be_reached_elsewhere() {
        let data = ClientSettings::new("data:9092").client_id("app");
        assert!(parse(&[]).control_settings(&data).unwrap().is_none());
        let control = parse(&["--control-bootstrap-servers", " proxy:9192 "])
            .control_settings(&data)
            .unwrap()
            .expect("other settings");
        assert_eq!(control.bootstrap_servers(), "proxy:9192");
        assert_eq!(control.get_client_id(), "app");
        let err = parse(&["--control-bootstrap-servers", " "])
            .control_settings(&data)
            .unwrap_err();
        assert!(err.to_string().contains("host:port"), "{err}");
        let err = parse(&[
            "--routes",
            "durable",
            "--control-bootstrap-servers",
            "proxy:9192",
        ])
        .coordination()
        .unwrap_err();
        assert!(
            err.to_string().contains("--control-bootstrap-servers"),
            "{err}"
        );
    }
}
