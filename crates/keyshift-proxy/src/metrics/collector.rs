//! Renders a [`Stats`] snapshot as the `keyshift_proxy_*` Prometheus metrics.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

use super::ProxyMetrics;
use crate::stats::{Distribution, Stats};

/// Encodes [`ProxyMetrics::snapshot`] at scrape time.
#[derive(Debug)]
pub(super) struct StatsCollector(pub(super) ProxyMetrics);

type Labels = Vec<(&'static str, String)>;

/// One metric family: its descriptor, then one sample per label set.
// Each call below reads as one row of the metrics table; a struct would only rename them.
#[allow(clippy::too_many_arguments)]
fn family<T>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    metric_type: MetricType,
    rows: &[T],
    mut sample: impl FnMut(&T, &mut MetricEncoder) -> std::fmt::Result,
    labels: impl Fn(&T) -> Labels,
) -> std::fmt::Result {
    let mut m = e.encode_descriptor(name, help, unit, metric_type)?;
    for row in rows {
        let l = labels(row);
        let mut fam = m.encode_family(&l)?;
        sample(row, &mut fam)?;
    }
    Ok(())
}

fn ctr(v: u64, e: &mut MetricEncoder) -> std::fmt::Result {
    e.encode_counter::<NoLabelSet, _, u64>(&v, None)
}

fn histogram(d: &Distribution, e: &mut MetricEncoder) -> std::fmt::Result {
    let buckets: Vec<(f64, u64)> = d
        .buckets
        .iter()
        .map(|&(le, c)| (le.unwrap_or(f64::MAX), c))
        .collect();
    e.encode_histogram::<Labels>(d.sum_secs, d.count, &buckets, None)
}

fn gauge_i64(v: i64, e: &mut MetricEncoder) -> std::fmt::Result {
    e.encode_gauge(&v)
}

impl Collector for StatsCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let s: Stats = self.0.snapshot();
        let c = &s.connections;

        e.encode_descriptor(
            "keyshift_proxy_connections",
            "Client connections accepted",
            None,
            MetricType::Counter,
        )?
        .encode_counter::<NoLabelSet, _, u64>(&c.accepted, None)?;
        e.encode_descriptor(
            "keyshift_proxy_passthrough_connections",
            "Client connections that were not Kafka and were relayed untouched",
            None,
            MetricType::Counter,
        )?
        .encode_counter::<NoLabelSet, _, u64>(&c.passthrough, None)?;
        e.encode_descriptor(
            "keyshift_proxy_open_connections",
            "Client connections open now",
            None,
            MetricType::Gauge,
        )?
        .encode_gauge(&i64::try_from(c.open).unwrap_or(i64::MAX))?;
        family(
            &mut e,
            "keyshift_proxy_closed_connections",
            "Client connections closed, by reason",
            None,
            MetricType::Counter,
            &c.closed,
            |r, e| ctr(r.count, e),
            |r| vec![("reason", r.name.clone())],
        )?;
        family(
            &mut e,
            "keyshift_proxy_tls_handshakes",
            "TLS handshakes by side (client: terminated by the proxy; upstream: originated to a \
             broker) and outcome",
            None,
            MetricType::Counter,
            &s.tls_handshakes,
            |r, e| ctr(r.count, e),
            |r| vec![("side", r.side.clone()), ("outcome", r.outcome.clone())],
        )?;
        family(
            &mut e,
            "keyshift_proxy_sasl",
            "SASL answers by step (handshake, authenticate), mechanism and outcome",
            None,
            MetricType::Counter,
            &s.sasl,
            |r, e| ctr(r.count, e),
            |r| {
                vec![
                    ("step", r.step.clone()),
                    ("mechanism", r.mechanism.clone()),
                    ("outcome", r.outcome.clone()),
                ]
            },
        )?;
        let passthrough = [
            ("in", c.passthrough_bytes_in),
            ("out", c.passthrough_bytes_out),
        ];
        family(
            &mut e,
            "keyshift_proxy_passthrough",
            "Bytes relayed untouched on non-Kafka connections (in: client to upstream)",
            Some(&Unit::Bytes),
            MetricType::Counter,
            &passthrough,
            |r, e| ctr(r.1, e),
            |r| vec![("direction", r.0.to_owned())],
        )?;
        family(
            &mut e,
            "keyshift_proxy_requests",
            "Kafka requests by API, version and client id",
            None,
            MetricType::Counter,
            &s.requests,
            |r, e| ctr(r.count, e),
            |r| {
                vec![
                    ("api", r.api.clone()),
                    ("version", r.version.to_string()),
                    ("client_id", r.client_id.clone()),
                ]
            },
        )?;
        family(
            &mut e,
            "keyshift_proxy_response_errors",
            "Non-zero error codes in responses (each occurrence), by API, version, client id and code",
            None,
            MetricType::Counter,
            &s.errors,
            |r, e| ctr(r.count, e),
            |r| {
                vec![
                    ("api", r.api.clone()),
                    ("version", r.version.to_string()),
                    ("client_id", r.client_id.clone()),
                    ("error_code", r.error_code.to_string()),
                    ("error", r.error.clone()),
                ]
            },
        )?;
        family(
            &mut e,
            "keyshift_proxy_request_duration",
            "Request to response latency through the broker, by API",
            Some(&Unit::Seconds),
            MetricType::Histogram,
            &s.latency,
            |r, e| histogram(&r.latency, e),
            |r| vec![("api", r.api.clone())],
        )?;
        let bytes: Vec<(String, &str, u64)> = s
            .bytes
            .iter()
            .flat_map(|b| {
                [
                    (b.api.clone(), "in", b.bytes_in),
                    (b.api.clone(), "out", b.bytes_out),
                ]
            })
            .collect();
        family(
            &mut e,
            "keyshift_proxy_kafka",
            "Kafka frame bytes by API (in: requests, client to broker; out: responses)",
            Some(&Unit::Bytes),
            MetricType::Counter,
            &bytes,
            |r, e| ctr(r.2, e),
            |r| vec![("api", r.0.clone()), ("direction", r.1.to_owned())],
        )?;
        let tp = |r: &crate::stats::PartitionStats| {
            vec![
                ("topic", r.topic.clone()),
                ("partition", r.partition.to_string()),
            ]
        };
        family(
            &mut e,
            "keyshift_proxy_produced_records",
            "Records acknowledged by the broker in produce responses",
            None,
            MetricType::Counter,
            &s.partitions,
            |r, e| ctr(r.produced_records, e),
            tp,
        )?;
        family(
            &mut e,
            "keyshift_proxy_produced",
            "Record-batch bytes acknowledged in produce responses",
            Some(&Unit::Bytes),
            MetricType::Counter,
            &s.partitions,
            |r, e| ctr(r.produced_bytes, e),
            tp,
        )?;
        family(
            &mut e,
            "keyshift_proxy_fetched_records",
            "Records returned in fetch responses at or after the requested offset",
            None,
            MetricType::Counter,
            &s.partitions,
            |r, e| ctr(r.fetched_records, e),
            tp,
        )?;
        family(
            &mut e,
            "keyshift_proxy_fetched",
            "Record-batch bytes returned in fetch responses",
            Some(&Unit::Bytes),
            MetricType::Counter,
            &s.partitions,
            |r, e| ctr(r.fetched_bytes, e),
            tp,
        )?;
        let hw: Vec<_> = s
            .partitions
            .iter()
            .filter_map(|p| p.high_watermark.map(|h| (p, h)))
            .collect();
        family(
            &mut e,
            "keyshift_proxy_high_watermark",
            "Highest end offset seen per partition (produce acknowledgements, fetch high watermarks)",
            None,
            MetricType::Gauge,
            &hw,
            |r, e| gauge_i64(r.1, e),
            |r| tp(r.0),
        )?;
        let hot: Vec<_> = s
            .hot_keys
            .iter()
            .flat_map(|t| t.keys.iter().map(move |k| (t.topic.as_str(), k)))
            .collect();
        let hot_labels = |r: &(&str, &crate::stats::HotKeyStats)| {
            vec![("topic", r.0.to_owned()), ("key", r.1.key.clone())]
        };
        family(
            &mut e,
            "keyshift_proxy_hot_key_rate",
            "Decayed produce rate of each topic's top keys (Space-Saving), records per second",
            None,
            MetricType::Gauge,
            &hot,
            |r, e| e.encode_gauge(&r.1.rate),
            hot_labels,
        )?;
        family(
            &mut e,
            "keyshift_proxy_hot_key_records",
            "Estimated records of each topic's top keys since tracked (overestimate bounded by the sketch)",
            None,
            MetricType::Gauge,
            &hot,
            |r, e| gauge_i64(i64::try_from(r.1.count).unwrap_or(i64::MAX), e),
            hot_labels,
        )?;
        family(
            &mut e,
            "keyshift_proxy_group_commits",
            "Partition offsets committed successfully, by group and topic",
            None,
            MetricType::Counter,
            &s.commits,
            |r, e| ctr(r.commits, e),
            |r| vec![("group", r.group.clone()), ("topic", r.topic.clone())],
        )?;
        let gp = |r: &crate::stats::GroupPartition| {
            vec![
                ("group", r.group.clone()),
                ("topic", r.topic.clone()),
                ("partition", r.partition.to_string()),
            ]
        };
        family(
            &mut e,
            "keyshift_proxy_group_committed_offset",
            "Last offset a group committed successfully",
            None,
            MetricType::Gauge,
            &s.groups,
            |r, e| gauge_i64(r.committed_offset, e),
            gp,
        )?;
        let lag: Vec<_> = s
            .groups
            .iter()
            .filter_map(|g| g.lag.map(|l| (g, l)))
            .collect();
        family(
            &mut e,
            "keyshift_proxy_group_lag_records",
            "High watermark seen minus the group's committed offset",
            None,
            MetricType::Gauge,
            &lag,
            |r, e| gauge_i64(r.1, e),
            |r| gp(r.0),
        )?;
        family(
            &mut e,
            "keyshift_proxy_produce_to_fetch",
            "Fetch response time minus the produce request time of the batch's first record",
            Some(&Unit::Seconds),
            MetricType::Histogram,
            &s.produce_to_fetch,
            |r, e| histogram(&r.latency, e),
            |r| vec![("topic", r.topic.clone())],
        )?;
        family(
            &mut e,
            "keyshift_proxy_decode_failures",
            "Parts of relayed frames that did not decode (relayed regardless), by direction, API and reason",
            None,
            MetricType::Counter,
            &s.decode_failures,
            |r, e| ctr(r.count, e),
            |r| {
                vec![
                    ("direction", r.direction.clone()),
                    ("api", r.api.clone()),
                    ("reason", r.reason.clone()),
                ]
            },
        )?;
        family(
            &mut e,
            "keyshift_proxy_opaque_requests",
            "Requests the codec could not decode, relayed as sent (their responses too), by API key and reason",
            None,
            MetricType::Counter,
            &s.opaque_requests,
            |r, e| ctr(r.count, e),
            |r| {
                vec![
                    ("api_key", r.api_key.clone()),
                    ("api", r.api.clone()),
                    ("reason", r.reason.clone()),
                ]
            },
        )?;
        family(
            &mut e,
            "keyshift_proxy_label_overflow",
            "Events whose label value was folded into __overflow__ by a cardinality cap",
            None,
            MetricType::Counter,
            &s.label_overflow,
            |r, e| ctr(r.count, e),
            |r| vec![("label", r.label.clone())],
        )?;
        Ok(())
    }
}
