//! A validated experiment, as the command's flags resolve it: what to run (strategies, the
//! simulator's workload and cluster shape), against which cluster, with how many producers,
//! and where the command writes its results. Validation is the command's job (it names the
//! flag); [`crate::run`] trusts what it gets.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use keyshift_core::sim::SimConfig;
use keyshift_kafka::{ClientSettings, Property, Routes};

/// A validated experiment: what to run, where, and where to write the results.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Strategies in run order.
    pub strategies: Vec<String>,
    /// Workload, cluster shape, service times and strategy options (the simulator's form).
    pub config: SimConfig,
    /// Records each worker processes at once (≥ 1), never two of one key; the mean service
    /// time is multiplied by it, so the group's capacity stays what `utilization` asks for.
    /// `hash` then runs each partition serially (a classic consumer's thread per partition),
    /// [`PC`] and the others run key-ordered slots.
    pub concurrency: usize,
    /// Producer instances the load is spread over (≥ 1); each key's records go through one
    /// producer while any of them is unacknowledged.
    pub producers: u32,
    /// Where the producers keep routes of moved keys (fresh topics get the default route or
    /// control topic names). Several producers need [`Routes::Coordinated`] to keep per-key
    /// order; with the others each moves keys on its own.
    pub routes: Routes,
    /// Client settings without bootstrap servers decided yet: the bootstrap servers given, or
    /// `None` to start the embedded broker.
    pub bootstrap_servers: Option<String>,
    /// `-X` properties for every client.
    pub properties: Vec<Property>,
    /// Topic and group name prefix.
    pub topic_prefix: String,
    /// Bound on waiting for the group to own every partition.
    pub settle_timeout: Duration,
    /// Bound on waiting for the last records after the load.
    pub drain_timeout: Duration,
    /// Lag sampling interval.
    pub lag_interval: Duration,
    /// Where to write JSON, if anywhere.
    pub json: Option<PathBuf>,
    /// Where to write HTML, if anywhere.
    pub html: Option<PathBuf>,
    /// Whether to break latency down per record (`--trace`).
    pub trace: bool,
    /// Where to serve the live dashboard, if anywhere (`--dashboard`).
    pub dashboard: Option<SocketAddr>,
    /// A growth of the partitions keys are homed on during the load (`--grow-at`,
    /// `--grow-to`), if any.
    pub grow: Option<Grow>,
}

/// One growth step: the topic is created with `to` partitions, keys are homed on the
/// configured count until `at` of the records are sent, then on `to`. `hash` (and [`PC`])
/// grow as a plain Kafka producer does, with no fence; the other ordered strategies through
/// keyshift's epoch fences.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Grow {
    /// Share of the records sent before the growth (0 < at < 1).
    pub at: f64,
    /// Partitions keys are homed on after it (more than the configured count).
    pub to: u32,
}

/// Whether strategy `name` grows as a plain Kafka producer (no epoch fences): the baselines
/// that stand for Kafka's own partitioner, and the strategies that keep no order (nothing to
/// fence).
pub fn grows_unfenced(name: &str) -> bool {
    matches!(name, "hash" | PC | "pkg" | "unordered")
}

/// The Parallel Consumer baseline: Kafka's hash partitioning, each worker processing up to
/// `concurrency` records at once in per-key order (key-ordered concurrency inside a
/// partition, as Confluent's Parallel Consumer does) — the comparison for keyshift at equal
/// worker capacity.
pub const PC: &str = "pc";

/// The strategy the producers of experiment strategy `name` route with.
pub fn producer_strategy(name: &str) -> &str {
    if name == PC {
        "hash"
    } else {
        name
    }
}

/// Whether the workers of strategy `name` process each partition serially: `hash` with
/// several slots per worker is the classic consumer (one thread per partition), which the
/// `pc` baseline improves on.
pub fn partition_serial(name: &str, concurrency: usize) -> bool {
    name == "hash" && concurrency > 1
}

impl Plan {
    /// Partitions of each run's topic: the growth's count, or the configured one.
    pub fn topic_partitions(&self) -> u32 {
        self.grow.map_or(self.config.partitions, |g| g.to)
    }

    /// Mean time a worker's slot spends on one record: the simulator's mean service time
    /// times the slots per worker, so that the group runs at the utilisation asked for.
    pub fn mean_service_secs(&self) -> f64 {
        self.config.mean_service_secs() * self.concurrency as f64
    }

    /// Client settings for `bootstrap`: `defaults` first, then the `-X` properties, which
    /// override them.
    pub fn client_settings(&self, bootstrap: &str, defaults: &[(&str, &str)]) -> ClientSettings {
        let defaults = defaults.iter().map(|(k, v)| {
            Property::new(*k, *v).expect("keyshift's own client defaults are valid properties")
        });
        ClientSettings::new(bootstrap)
            .client_id("keyshift-experiment")
            .properties(defaults)
            .properties(self.properties.iter().cloned())
    }
}
