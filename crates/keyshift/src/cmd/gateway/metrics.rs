//! Prometheus metrics of the gateway and of the producer behind it.
//!
//! Two kinds, because they are measured in two places:
//! - [`GatewayMetrics`] are live instruments the HTTP handlers update (requests by endpoint
//!   and status, records and bytes acknowledged, delivery errors, request duration, requests
//!   in flight);
//! - [`ProducerCollector`] and [`HotKeysCollector`] read state at scrape time: the producer's
//!   [`ProducerStats`] (per-partition records, moves, fences, migrations, fence round trip,
//!   held/backlogged records) and the top-k of a Space-Saving sketch the gateway feeds with
//!   every accepted key. Reading at scrape time keeps the request path free of metric
//!   bookkeeping for them and keeps label cardinality bounded: only the current top k keys are
//!   ever exported.
//!
//! Names follow `keyshift_<area>_<what>_<unit>`; counters get `_total` from the encoder.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use keyshift_core::sketch::{HeavyHitters, SpaceSaving};
use keyshift_kafka::{FeedbackLoop, KeyshiftProducer, ProducerStats};
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

/// Labels of a request counter: the endpoint and the HTTP status code.
pub type RequestLabels = Vec<(&'static str, String)>;

/// Instruments the HTTP handlers update.
#[derive(Debug, Clone)]
pub struct GatewayMetrics {
    /// Requests by `endpoint` and `code`.
    pub requests: Family<RequestLabels, Counter>,
    /// Records acknowledged by the broker through the gateway.
    pub records: Counter,
    /// Key + body bytes of those records.
    pub bytes: Counter,
    /// Records the producer failed to write (each answered with an error).
    pub delivery_errors: Counter,
    /// Time from request received to response, by `endpoint`.
    pub duration: Family<Vec<(&'static str, String)>, Histogram>,
    /// Requests being handled right now.
    pub in_flight: Gauge,
}

impl GatewayMetrics {
    /// Creates the instruments and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = GatewayMetrics {
            requests: Family::default(),
            records: Counter::default(),
            bytes: Counter::default(),
            delivery_errors: Counter::default(),
            // 0.5 ms .. ~16 s: a broker ack on loopback is sub-millisecond, a stuck one hits
            // message.timeout.ms.
            duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0005, 2.0, 16))
            }),
            in_flight: Gauge::default(),
        };
        registry.register(
            "keyshift_gateway_requests",
            "HTTP requests by endpoint and status code",
            m.requests.clone(),
        );
        registry.register(
            "keyshift_gateway_records",
            "Records acknowledged by the broker through the gateway",
            m.records.clone(),
        );
        registry.register_with_unit(
            "keyshift_gateway",
            "Key and body bytes of acknowledged records",
            Unit::Bytes,
            m.bytes.clone(),
        );
        registry.register(
            "keyshift_gateway_delivery_errors",
            "Records the producer could not write (answered with 503)",
            m.delivery_errors.clone(),
        );
        registry.register_with_unit(
            "keyshift_gateway_request_duration",
            "Time from request to response, by endpoint",
            Unit::Seconds,
            m.duration.clone(),
        );
        registry.register(
            "keyshift_gateway_in_flight_requests",
            "Requests being handled",
            m.in_flight.clone(),
        );
        m
    }

    /// Counts one answered request.
    pub fn answered(&self, endpoint: &'static str, code: u16, started: Instant) {
        self.requests
            .get_or_create(&vec![
                ("endpoint", endpoint.to_owned()),
                ("code", code.to_string()),
            ])
            .inc();
        self.duration
            .get_or_create(&vec![("endpoint", endpoint.to_owned())])
            .observe(started.elapsed().as_secs_f64());
    }
}

/// The hottest keys the gateway has seen: a decayed-rate Space-Saving sketch of bounded
/// capacity, fed with every accepted record.
#[derive(Debug)]
pub struct HotKeys {
    sketch: Mutex<SpaceSaving>,
    origin: Instant,
    top: usize,
}

impl HotKeys {
    /// Tracks up to `capacity` keys (rates halve every `half_life_secs` without traffic) and
    /// exports the `top` hottest.
    pub fn new(
        capacity: usize,
        half_life_secs: f64,
        top: usize,
    ) -> Result<Self, keyshift_core::ParamError> {
        Ok(HotKeys {
            sketch: Mutex::new(SpaceSaving::new(capacity, half_life_secs)?),
            origin: Instant::now(),
            top,
        })
    }

    /// Counts one record of `key`.
    pub fn offer(&self, key: &[u8]) {
        let now = self.origin.elapsed().as_secs_f64();
        // A poisoned lock only means a panic elsewhere mid-offer; the sketch is still usable.
        let mut s = self.sketch.lock().unwrap_or_else(|p| p.into_inner());
        s.offer(key, now);
    }

    /// The `top` hottest keys with their estimated rate (records/s) and count.
    pub fn top(&self) -> Vec<(String, f64, u64)> {
        let now = self.origin.elapsed().as_secs_f64();
        let s = self.sketch.lock().unwrap_or_else(|p| p.into_inner());
        s.top(self.top, now)
            .into_iter()
            .map(|h| (label_value(&h.key), h.rate, h.count))
            .collect()
    }
}

/// Maximum characters of a key used as a label value; longer keys are cut (with `…`).
const MAX_LABEL_CHARS: usize = 64;

/// A key as an OpenMetrics label value: lossy UTF-8, cut to [`MAX_LABEL_CHARS`], and escaped
/// (`\\`, `\"`, `\n`) because `prometheus-client`'s text encoder writes label values verbatim
/// and a key is user input.
pub fn label_value(key: &[u8]) -> String {
    let text = String::from_utf8_lossy(key);
    let mut out = String::with_capacity(text.len().min(MAX_LABEL_CHARS * 2));
    for (i, c) in text.chars().enumerate() {
        if i == MAX_LABEL_CHARS {
            out.push('…');
            break;
        }
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Exports [`HotKeys::top`] at scrape time as `keyshift_gateway_hot_key_rate{key}` and
/// `keyshift_gateway_hot_key_records{key}` (estimated since start, may overestimate).
#[derive(Debug)]
pub struct HotKeysCollector(pub Arc<HotKeys>);

impl prometheus_client::collector::Collector for HotKeysCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let top = self.0.top();
        let mut e = encoder.encode_descriptor(
            "keyshift_gateway_hot_key_rate",
            "Decayed rate in records per second of the hottest keys (top k, Space-Saving)",
            None,
            MetricType::Gauge,
        )?;
        for (key, rate, _) in &top {
            let labels = [("key", key.as_str())];
            ConstGauge::new(*rate).encode(e.encode_family(&labels)?)?;
        }
        let mut e = encoder.encode_descriptor(
            "keyshift_gateway_hot_key_records",
            "Estimated records of the hottest keys since start (an overestimate, Space-Saving)",
            None,
            MetricType::Gauge,
        )?;
        for (key, _, count) in &top {
            let labels = [("key", key.as_str())];
            ConstGauge::new(*count as i64).encode(e.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// Exports, with consumer feedback (`--consumer-group`), what the strategy was last told of
/// each partition's consumer: `keyshift_gateway_consumer_pace{partition}` (records committed
/// per second) and `keyshift_gateway_consumer_backlog{partition}` (records waiting).
#[derive(Debug)]
pub struct FeedbackCollector(pub Arc<FeedbackLoop>);

impl prometheus_client::collector::Collector for FeedbackCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let latest = self.0.latest();
        let mut e = encoder.encode_descriptor(
            "keyshift_gateway_consumer_pace",
            "Records per second the consumer group committed on each partition, as fed to the strategy",
            None,
            MetricType::Gauge,
        )?;
        for f in &latest {
            let labels = [("partition", f.partition.to_string())];
            ConstGauge::new(f.throughput_rps).encode(e.encode_family(&labels)?)?;
        }
        let mut e = encoder.encode_descriptor(
            "keyshift_gateway_consumer_backlog",
            "Records waiting on each partition (end offset minus committed), as fed to the strategy",
            None,
            MetricType::Gauge,
        )?;
        for f in &latest {
            let labels = [("partition", f.partition.to_string())];
            ConstGauge::new(i64::try_from(f.lag).unwrap_or(i64::MAX))
                .encode(e.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// Exports a [`KeyshiftProducer`]'s [`ProducerStats`] at scrape time as `keyshift_producer_*`.
/// Reusable by any subcommand that owns a producer: register it with
/// `registry.register_collector(Box::new(ProducerCollector::new(producer)))`.
#[derive(Debug)]
pub struct ProducerCollector {
    producer: KeyshiftProducer,
}

impl ProducerCollector {
    /// A collector reading `producer`'s stats on every scrape.
    pub fn new(producer: KeyshiftProducer) -> Self {
        ProducerCollector { producer }
    }
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(value);
    c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: i64,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(value);
    g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)
}

fn saturating(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl prometheus_client::collector::Collector for ProducerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s: ProducerStats = self.producer.stats();
        let mut e = encoder.encode_descriptor(
            // The encoder appends `_info`: keyshift_producer_info{strategy,topic} 1.
            "keyshift_producer",
            "The producer's strategy and topic",
            None,
            MetricType::Info,
        )?;
        e.encode_info(&[("strategy", s.strategy), ("topic", self.producer.topic())])?;
        counter(
            &mut encoder,
            "keyshift_producer_records",
            "Data records handed to the Kafka client",
            s.records,
        )?;
        counter(
            &mut encoder,
            "keyshift_producer_bytes",
            "Key and value bytes of those records",
            s.bytes,
        )?;
        let mut e = encoder.encode_descriptor(
            "keyshift_producer_partition_records",
            "Data records per partition (rate() gives per-partition rates)",
            None,
            MetricType::Counter,
        )?;
        for (p, n) in s.per_partition.iter().enumerate() {
            let labels = [("partition", p.to_string())];
            ConstCounter::new(*n).encode(e.encode_family(&labels)?)?;
        }
        counter(
            &mut encoder,
            "keyshift_producer_moves",
            "Key moves the strategy decided",
            s.moves,
        )?;
        counter(
            &mut encoder,
            "keyshift_producer_fences",
            "Fence records written (every attempt)",
            s.fences,
        )?;
        counter(
            &mut encoder,
            "keyshift_producer_migrations",
            "Completed fenced migrations (fences acknowledged)",
            s.migrations,
        )?;
        counter(
            &mut encoder,
            "keyshift_producer_fence_failures",
            "Fence attempts that failed",
            s.fence_failures,
        )?;
        counter(
            &mut encoder,
            "keyshift_producer_delivery_errors",
            "Records whose error was reported to the caller",
            s.delivery_errors,
        )?;
        counter(
            &mut encoder,
            "keyshift_producer_held_records",
            "Records ever held behind a fence",
            s.held_total,
        )?;
        quantiles(
            &mut encoder,
            "keyshift_producer_fence_rtt_seconds",
            "Fence round trip (enqueue to delivery report) of completed migrations, by quantile",
            &s.fence_rtt,
        )?;
        gauge(
            &mut encoder,
            "keyshift_producer_held_now_records",
            "Records held behind a fence right now",
            saturating(s.held_records),
        )?;
        gauge(
            &mut encoder,
            "keyshift_producer_held_keys",
            "Keys with records held behind a fence right now",
            saturating(s.held_keys),
        )?;
        gauge(
            &mut encoder,
            "keyshift_producer_routed_keys",
            "Keys whose records carry a route header (away from home or moving)",
            saturating(s.routed_keys),
        )?;
        counter(
            &mut encoder,
            "keyshift_producer_route_writes",
            "Route changes recorded in the route topic (durable routes)",
            s.route_writes,
        )?;
        counter(
            &mut encoder,
            "keyshift_producer_route_write_failures",
            "Route-topic writes that failed (each is retried; the moved key waits)",
            s.route_write_failures,
        )?;
        gauge(
            &mut encoder,
            "keyshift_producer_pinned_keys",
            "Keys pinned to a partition by an operator",
            saturating(s.pinned_keys),
        )?;
        gauge(
            &mut encoder,
            "keyshift_producer_backlog_records",
            "Decided records waiting for room in the client's queue",
            saturating(s.backlog),
        )?;
        gauge(
            &mut encoder,
            "keyshift_producer_in_flight_messages",
            "Messages and requests in the client's queues, not yet acknowledged",
            saturating(s.in_flight),
        )?;
        gauge(
            &mut encoder,
            "keyshift_producer_homed_partitions",
            "Partitions keys are homed on (the topic's, --active-partitions, or the last growth's)",
            i64::from(s.homed_partitions),
        )?;
        gauge(
            &mut encoder,
            "keyshift_producer_epoch",
            "Number of the partition epoch in force (0 before any fenced growth)",
            i64::from(s.epoch),
        )?;
        gauge(
            &mut encoder,
            "keyshift_producer_growth_running",
            "1 while a growth holds this producer's remapped keys (its epoch fences are in flight)",
            i64::from(s.growth_running),
        )?;
        if let Some(c) = &s.coordination {
            coordination(&mut encoder, c)?;
        }
        Ok(())
    }
}

/// Metrics of a coordinated producer (`--routes coordinated`).
fn coordination(
    encoder: &mut DescriptorEncoder<'_>,
    c: &keyshift_kafka::CoordinationStats,
) -> Result<(), std::fmt::Error> {
    let mut e = encoder.encode_descriptor(
        "keyshift_producer_coordination_role",
        "1 for this producer's role among coordinated producers (decider or follower)",
        None,
        MetricType::Gauge,
    )?;
    let role = if c.decider { "decider" } else { "follower" };
    let labels = [("role", role.to_owned()), ("member", c.member.to_string())];
    ConstGauge::new(1i64).encode(e.encode_family(&labels)?)?;
    gauge(
        encoder,
        "keyshift_producer_coordination_term",
        "Term in force in the control log (one decider per term)",
        i64::try_from(c.term).unwrap_or(i64::MAX),
    )?;
    gauge(
        encoder,
        "keyshift_producer_coordination_live_members",
        "Producers heard from within the member timeout, this one included",
        saturating(c.live_members),
    )?;
    gauge(
        encoder,
        "keyshift_producer_coordination_unaccounted_members",
        "Producers silent for the member timeout and not yet forgotten (or left): while above 0 no key moves",
        saturating(c.unaccounted_members),
    )?;
    let mut e = encoder.encode_descriptor(
        "keyshift_producer_coordination_moves",
        "Moves by outcome: proposed (by this producer as decider), committed and aborted (read from the control log)",
        None,
        MetricType::Counter,
    )?;
    for (outcome, n) in [
        ("proposed", c.proposed),
        ("committed", c.committed),
        ("aborted", c.aborted),
    ] {
        ConstCounter::new(n).encode(e.encode_family(&[("outcome", outcome)])?)?;
    }
    counter(
        encoder,
        "keyshift_producer_coordination_claims",
        "Terms this producer claimed",
        c.claims,
    )?;
    counter(
        encoder,
        "keyshift_producer_coordination_write_failures",
        "Control-topic writes that failed (each retried or undone)",
        c.control_write_failures,
    )?;
    gauge(
        encoder,
        "keyshift_producer_coordination_pending_moves",
        "Keys with a move pending now (their records are held)",
        saturating(c.pending_moves),
    )?;
    gauge(
        encoder,
        "keyshift_producer_coordination_wanted_partitions",
        "Highest partition count a producer asked the group to grow to (0: none); above keyshift_producer_homed_partitions a growth is due and no key moves meanwhile",
        i64::from(c.wanted_partitions),
    )?;
    let mut e = encoder.encode_descriptor(
        "keyshift_producer_coordination_growths",
        "Growths read from the control log by outcome: grown, or aborted (tried again)",
        None,
        MetricType::Counter,
    )?;
    for (outcome, n) in [("grown", c.growths), ("aborted", c.growths_aborted)] {
        ConstCounter::new(n).encode(e.encode_family(&[("outcome", outcome)])?)?;
    }
    quantiles(
        encoder,
        "keyshift_producer_coordination_hold_seconds",
        "Coordination round trip: from reading a propose to reading its commit or abort (how long a moved key is held), by quantile",
        &c.hold_time,
    )
}

/// A latency histogram as quantile gauges in seconds (0.5, 0.99 and the maximum as 1): the
/// producer keeps HDR histograms, which have no fixed buckets to export as a Prometheus
/// histogram. Nothing is written while it is empty.
fn quantiles(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    h: &keyshift_core::stats::LatencyHistogram,
) -> Result<(), std::fmt::Error> {
    let mut e = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    if !h.is_empty() {
        for (q, label) in [(0.5, "0.5"), (0.99, "0.99")] {
            let v = h.quantile_ms(q) / 1e3;
            ConstGauge::new(v).encode(e.encode_family(&[("quantile", label)])?)?;
        }
        let v = h.max_ms() / 1e3;
        ConstGauge::new(v).encode(e.encode_family(&[("quantile", "1")])?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped_and_bounded() {
        assert_eq!(label_value(b"location_1"), "location_1");
        assert_eq!(label_value(b"a\"b\\c\nd\te"), "a\\\"b\\\\c\\nd e");
        let long = vec![b'x'; 200];
        assert_eq!(label_value(&long).chars().count(), MAX_LABEL_CHARS + 1);
        assert_eq!(label_value(b"\xff"), "\u{fffd}");
    }

    #[test]
    fn hot_keys_export_only_the_top_k() {
        let hot = Arc::new(HotKeys::new(16, 10.0, 2).unwrap());
        for (key, n) in [("a", 50), ("b", 30), ("c", 10), ("d\"", 5)] {
            for _ in 0..n {
                hot.offer(key.as_bytes());
            }
        }
        let mut registry = Registry::default();
        registry.register_collector(Box::new(HotKeysCollector(hot)));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("keyshift_gateway_hot_key_records{key=\"a\"} 50"),
            "{text}"
        );
        assert!(
            text.contains("keyshift_gateway_hot_key_records{key=\"b\"} 30"),
            "{text}"
        );
        assert!(!text.contains("key=\"c\""), "{text}");
    }
}
