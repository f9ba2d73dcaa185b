//! The proxy's statistics as one serializable snapshot: what `/api/stats` returns as JSON and
//! what `/metrics` renders as Prometheus text, so the two can never disagree.
//!
//! [`crate::metrics::ProxyMetrics::snapshot`] builds a [`Stats`]; every list in it is sorted
//! (by its labels) so that two snapshots of the same state serialize identically. Label
//! values that were folded because of a cardinality cap appear as
//! [`crate::metrics::OVERFLOW_LABEL`].

use serde::{Deserialize, Serialize};

/// Everything the proxy has measured since it started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Seconds since the metrics were created (the proxy's uptime).
    pub uptime_secs: f64,
    /// Connections accepted, open and closed, and bytes of non-Kafka traffic.
    pub connections: ConnectionStats,
    /// Requests per API, version and client id.
    pub requests: Vec<RequestCount>,
    /// Non-zero error codes found in responses, per API, version, client id and code.
    pub errors: Vec<ErrorCount>,
    /// Request → response latency per API.
    pub latency: Vec<ApiLatency>,
    /// Kafka bytes per API in both directions.
    pub bytes: Vec<ApiBytes>,
    /// Produced/fetched records and bytes, high watermark, per topic and partition.
    pub partitions: Vec<PartitionStats>,
    /// The hottest keys per topic, from the produce batches (Space-Saving estimates).
    pub hot_keys: Vec<TopicHotKeys>,
    /// Consumer-group commits, committed offsets and lag.
    pub groups: Vec<GroupPartition>,
    /// Commits per group and topic.
    pub commits: Vec<GroupCommits>,
    /// Produce → fetch latency per topic.
    pub produce_to_fetch: Vec<TopicLatency>,
    /// Events whose label was folded into the overflow value, per label name.
    pub label_overflow: Vec<LabelOverflow>,
    /// Parts of relayed frames that did not decode (the frames were relayed regardless).
    pub decode_failures: Vec<DecodeFailureCount>,
    /// Requests the codec could not decode, relayed as they were (and their responses too).
    #[serde(default)]
    pub opaque_requests: Vec<OpaqueRequestCount>,
    /// TLS handshakes per side and outcome.
    #[serde(default)]
    pub tls_handshakes: Vec<TlsHandshakeCount>,
    /// SASL handshakes and authentication rounds per mechanism and outcome.
    #[serde(default)]
    pub sasl: Vec<SaslCount>,
}

/// TLS handshakes on one side of the proxy with one outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsHandshakeCount {
    /// `client` (the proxy terminates TLS) or `upstream` (it originates TLS to a broker).
    pub side: String,
    /// `ok` or `failed`.
    pub outcome: String,
    /// Handshakes.
    pub count: u64,
}

/// Answers to SASL requests of one step and mechanism with one outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaslCount {
    /// `handshake` (the mechanism accepted or refused) or `authenticate` (one round of the
    /// exchange; SCRAM takes two per login).
    pub step: String,
    /// `PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512`, `OAUTHBEARER`, `GSSAPI`, `AWS_MSK_IAM`,
    /// `other` for any other name, `unknown` for rounds without a handshake seen.
    pub mechanism: String,
    /// `ok` (error code 0) or `failed`.
    pub outcome: String,
    /// Answers.
    pub count: u64,
}

/// Requests of one API key relayed undecoded for one reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpaqueRequestCount {
    /// The API key as sent (a number, since the codec may have no name for it), or
    /// `__overflow__` for keys outside 0–1023.
    pub api_key: String,
    /// The API's name, `Unknown` when the codec does not know the key.
    pub api: String,
    /// `unknown_api_key`, `unsupported_version`, `malformed_header` or `malformed_body`.
    pub reason: String,
    /// Requests.
    pub count: u64,
}

/// Frames or record batches of one API that did not decode, for one reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecodeFailureCount {
    /// `request` or `response`.
    pub direction: String,
    /// API name.
    pub api: String,
    /// A short fixed label: `unsupported_version`, `malformed_response`, `unmatched_response`,
    /// `reencode`, or a record-batch error (`corrupt`, `decompress`, `decompressed_too_large`,
    /// `unsupported_magic`, `unknown_codec`).
    pub reason: String,
    /// Occurrences.
    pub count: u64,
}

/// Connection counters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConnectionStats {
    /// Client connections accepted.
    pub accepted: u64,
    /// Connections open right now.
    pub open: u64,
    /// Accepted connections that were not Kafka and were relayed untouched.
    pub passthrough: u64,
    /// Closed connections by reason (a small fixed set, see the README).
    pub closed: Vec<NamedCount>,
    /// Bytes relayed on connections that were not Kafka: client → upstream.
    pub passthrough_bytes_in: u64,
    /// Bytes relayed on connections that were not Kafka: upstream → client.
    pub passthrough_bytes_out: u64,
}

/// A count under a name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedCount {
    /// What was counted.
    pub name: String,
    /// How many.
    pub count: u64,
}

/// Requests of one API version from one client id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestCount {
    /// API name as in Kafka's protocol spec (`Produce`, `Fetch`, ...).
    pub api: String,
    /// API version.
    pub version: i16,
    /// The request header's client id (empty when absent).
    pub client_id: String,
    /// Requests seen.
    pub count: u64,
}

/// Occurrences of one error code in responses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorCount {
    /// API name.
    pub api: String,
    /// API version.
    pub version: i16,
    /// Client id of the request.
    pub client_id: String,
    /// Kafka error code (never 0).
    pub error_code: i16,
    /// The code's name in Kafka's protocol (`UNKNOWN_TOPIC_OR_PARTITION` is `UnknownTopicOrPartition`).
    pub error: String,
    /// Occurrences (a response with three failed partitions counts three).
    pub count: u64,
}

/// A latency distribution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Distribution {
    /// Observations.
    pub count: u64,
    /// Sum of the observations in seconds.
    pub sum_secs: f64,
    /// Median, estimated from the buckets (upper bound of the bucket holding it), or `None`
    /// without observations.
    pub p50_secs: Option<f64>,
    /// 99th percentile, estimated the same way.
    pub p99_secs: Option<f64>,
    /// Bucket upper bounds in seconds and the (non-cumulative) count in each; the last bound
    /// is `null` for +Inf.
    pub buckets: Vec<(Option<f64>, u64)>,
}

/// Request latency of one API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiLatency {
    /// API name.
    pub api: String,
    /// Time from the request's last byte read from the client to the response's first byte
    /// read from the broker.
    pub latency: Distribution,
}

/// Kafka bytes of one API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiBytes {
    /// API name.
    pub api: String,
    /// Request bytes, client → broker, frames including their length prefix.
    pub bytes_in: u64,
    /// Response bytes, broker → client.
    pub bytes_out: u64,
}

/// Traffic of one topic partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionStats {
    /// Topic name (topic ids of Fetch v13+ are resolved through Metadata responses seen).
    pub topic: String,
    /// Partition index (-1 for the overflow series).
    pub partition: i32,
    /// Records the broker acknowledged in produce responses.
    pub produced_records: u64,
    /// Record-batch bytes of those acknowledged produce batches.
    pub produced_bytes: u64,
    /// Records returned by fetch responses at or after the requested fetch offset.
    pub fetched_records: u64,
    /// Record-batch bytes of the fetched batches.
    pub fetched_bytes: u64,
    /// Highest end offset seen (produce acknowledgement or fetch high watermark), if any.
    pub high_watermark: Option<i64>,
}

/// One hot key of a topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HotKeyStats {
    /// The key, as text when it is printable UTF-8, otherwise `0x` + hex (both cut to 64 bytes).
    pub key: String,
    /// Estimated records with this key since it has been tracked (overestimates by ≤ `error`).
    pub count: u64,
    /// Upper bound of the overestimate in `count`.
    pub error: u64,
    /// Decayed rate in records per second.
    pub rate: f64,
}

/// The hot keys of one topic, highest rate first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopicHotKeys {
    /// Topic name.
    pub topic: String,
    /// Keyed records offered to the topic's sketch.
    pub keyed_records: u64,
    /// The top keys.
    pub keys: Vec<HotKeyStats>,
}

/// A group's position on one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupPartition {
    /// Consumer group id.
    pub group: String,
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: i32,
    /// Last successfully committed offset.
    pub committed_offset: i64,
    /// High watermark minus committed offset (≥ 0), when a high watermark was seen.
    pub lag: Option<i64>,
}

/// Commits of a group to one topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupCommits {
    /// Consumer group id.
    pub group: String,
    /// Topic name.
    pub topic: String,
    /// Partition offsets committed successfully.
    pub commits: u64,
}

/// Produce → fetch latency of one topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopicLatency {
    /// Topic name.
    pub topic: String,
    /// One observation per fetched batch: fetch response time minus the time the proxy saw
    /// the produce request that wrote the batch's first record.
    pub latency: Distribution,
}

/// Events whose label value was folded into the overflow value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelOverflow {
    /// The capped label (`client_id`, `topic_partition`, `group`, `hot_key_topic`).
    pub label: String,
    /// Events folded.
    pub count: u64,
}
