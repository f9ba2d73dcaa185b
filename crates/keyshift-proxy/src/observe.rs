//! What the proxy reports while it relays: the [`Observer`] trait and its events.
//!
//! The connection tasks call an [`Observer`] synchronously, on the I/O path, once per frame or
//! per record batch. Implementations must be cheap (atomics, a short mutex) and must not block;
//! the metrics in `keyshift-proxy`'s `metrics` module are one implementation, [`NoopObserver`]
//! is another. Every method has an empty default so an observer implements only what it needs.
//!
//! Events borrow from the frame being relayed; copy what you keep. Keys and header values are
//! [`Bytes`], so keeping one is a reference-count increment, not a copy.
//!
//! Order per connection: `connection_opened`, then for each request `request`, its
//! `produced` batches, and later its `response` (which follows the `produce_acked`,
//! `fetched`, `watermark` and `offset_committed` events derived from that response), then
//! `connection_closed` exactly once.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use kafka_protocol::messages::{RequestKind, ResponseKind};

use crate::wire::codec::OpaqueReason;
use crate::wire::records::RecordBatch;
use crate::wire::FrameError;

/// Observes everything the proxy relays. Called from the connection tasks: keep it cheap.
pub trait Observer: Send + Sync + 'static {
    /// A client connected and its upstream connection is being opened.
    fn connection_opened(&self, _conn: &ConnInfo) {}
    /// The connection ended; `reason` says why (exactly once per opened connection).
    fn connection_closed(&self, _conn: &ConnInfo, _reason: &CloseReason) {}
    /// A Kafka request frame from the client, before it is forwarded upstream.
    fn request(&self, _event: &RequestEvent<'_>) {}
    /// A Kafka response frame from upstream, after it was matched to its request and (for
    /// Metadata, FindCoordinator, DescribeCluster, Produce/Fetch leader hints) rewritten.
    fn response(&self, _event: &ResponseEvent<'_>) {}
    /// One record batch of a Produce request (sent before the broker has accepted it).
    fn produced(&self, _event: &ProducedBatch<'_>) {}
    /// One partition of a Produce response: the broker's verdict on what the request sent.
    fn produce_acked(&self, _event: &ProduceAck<'_>) {}
    /// One record batch of a Fetch response.
    fn fetched(&self, _event: &FetchedBatch<'_>) {}
    /// The end of a partition's log as a response showed it (Produce ack, Fetch high
    /// watermark, ListOffsets latest).
    fn watermark(&self, _event: &Watermark<'_>) {}
    /// One partition of an OffsetCommit / TxnOffsetCommit, reported with the broker's answer.
    fn offset_committed(&self, _event: &OffsetCommitEvent<'_>) {}
    /// Bytes relayed on a connection that did not look like Kafka (passed through untouched).
    fn passthrough(&self, _conn: &ConnInfo, _direction: Direction, _bytes: usize) {}
    /// Something in a relayed frame could not be decoded; the frame was relayed regardless.
    fn decode_failed(&self, _event: &DecodeFailure<'_>) {}
    /// A request the codec cannot decode, relayed as it is (its response is relayed without
    /// decoding too). Called after [`Observer::request`] for the same frame.
    fn relayed_opaque(&self, _event: &OpaqueRelay<'_>) {}
    /// A TLS handshake on one side of a connection finished (`Ok`) or failed (`Err`, then the
    /// connection closes with [`CloseReason::ClientTls`] or [`CloseReason::UpstreamTls`]).
    fn tls_handshake(&self, _conn: &ConnInfo, _side: TlsSide, _outcome: Result<(), &str>) {}
    /// The answer to a SaslHandshake or SaslAuthenticate request. The credentials themselves
    /// are never decoded into an event: the SaslAuthenticate request reaches
    /// [`Observer::request`] without a body.
    fn sasl(&self, _event: &SaslEvent<'_>) {}
}

/// Which side of the proxy a TLS session is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TlsSide {
    /// Between the client and the proxy (the proxy terminates it).
    Client,
    /// Between the proxy and the broker (the proxy originates it).
    Upstream,
}

impl TlsSide {
    /// A stable label: `client` or `upstream`.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsSide::Client => "client",
            TlsSide::Upstream => "upstream",
        }
    }
}

/// A step of SASL authentication, as the broker answered it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SaslStep {
    /// SaslHandshake: the client names a mechanism; the broker accepts or refuses it.
    Handshake,
    /// SaslAuthenticate: one round of the mechanism's exchange (SCRAM takes two).
    Authenticate,
}

impl SaslStep {
    /// A stable label: `handshake` or `authenticate`.
    pub fn as_str(self) -> &'static str {
        match self {
            SaslStep::Handshake => "handshake",
            SaslStep::Authenticate => "authenticate",
        }
    }
}

/// A SaslHandshake or SaslAuthenticate response.
#[derive(Debug)]
pub struct SaslEvent<'a> {
    /// The connection.
    pub conn: &'a ConnInfo,
    /// Which step.
    pub step: SaslStep,
    /// The mechanism the client asked for in its SaslHandshake (as the client spelled it;
    /// `unknown` for a SaslAuthenticate without a handshake seen on this connection).
    pub mechanism: &'a str,
    /// The broker's error code (0: accepted); −1 (UNKNOWN_SERVER_ERROR) when the connection
    /// closed before the broker answered (some brokers close instead of answering a failed
    /// login); 58 (SASL_AUTHENTICATION_FAILED) for a SCRAM round the broker answered with
    /// error code 0 but a server error (`e=...`) inside the exchange.
    pub error_code: i16,
}

/// An observer that ignores everything (for benchmarks and for running without metrics).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoopObserver;

impl Observer for NoopObserver {}

/// Which way bytes flowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Client → broker (requests).
    ToBroker,
    /// Broker → client (responses).
    ToClient,
}

impl Direction {
    /// A stable label: `to_broker` or `to_client`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::ToBroker => "to_broker",
            Direction::ToClient => "to_client",
        }
    }
}

/// One client connection through the proxy.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// Unique per proxy process, increasing.
    pub id: u64,
    /// The client's address.
    pub client: SocketAddr,
    /// The proxy listener the client connected to.
    pub listener: SocketAddr,
    /// The upstream broker (`host:port`) this listener relays to.
    pub upstream: String,
}

/// Why a connection ended. [`CloseReason::label`] is a bounded set, fit for a metric label.
#[derive(Debug, Clone)]
pub enum CloseReason {
    /// The client closed its side and every pending response was delivered.
    ClientClosed,
    /// The broker closed the connection.
    UpstreamClosed,
    /// The broker could not be reached; the client was disconnected at once.
    UpstreamConnect(String),
    /// A socket error on either side.
    Io(String),
    /// A frame the proxy refused (oversized, too short, too many in flight, ...).
    Frame(FrameError),
    /// The proxy is shutting down.
    Shutdown,
    /// The TLS handshake with the client failed (e.g. it does not trust the proxy's
    /// certificate, or presented none when one is required).
    ClientTls(String),
    /// The TLS handshake with the broker failed (e.g. its certificate is not signed by a
    /// trusted CA, or does not name the broker).
    UpstreamTls(String),
}

impl CloseReason {
    /// A short fixed label: `client_closed`, `upstream_closed`, `upstream_connect`, `io`,
    /// `shutdown`, `client_tls`, `upstream_tls`, or the frame error's label (see
    /// [`FrameError::label`]).
    pub fn label(&self) -> &'static str {
        match self {
            CloseReason::ClientClosed => "client_closed",
            CloseReason::UpstreamClosed => "upstream_closed",
            CloseReason::UpstreamConnect(_) => "upstream_connect",
            CloseReason::Io(_) => "io",
            CloseReason::Frame(e) => e.label(),
            CloseReason::Shutdown => "shutdown",
            CloseReason::ClientTls(_) => "client_tls",
            CloseReason::UpstreamTls(_) => "upstream_tls",
        }
    }

    /// Whether the connection was closed because of bad input (a counter-worthy event).
    pub fn is_protocol_error(&self) -> bool {
        matches!(self, CloseReason::Frame(_))
    }
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CloseReason::ClientClosed => f.write_str("client closed the connection"),
            CloseReason::UpstreamClosed => f.write_str("broker closed the connection"),
            CloseReason::UpstreamConnect(e) => write!(f, "cannot connect to the broker: {e}"),
            CloseReason::Io(e) => write!(f, "socket error: {e}"),
            CloseReason::Frame(e) => write!(f, "{e}"),
            CloseReason::Shutdown => f.write_str("proxy shutting down"),
            CloseReason::ClientTls(e) => write!(f, "TLS handshake with the client failed: {e}"),
            CloseReason::UpstreamTls(e) => {
                write!(f, "TLS handshake with the broker failed: {e}")
            }
        }
    }
}

/// A request frame from a client.
#[derive(Debug)]
pub struct RequestEvent<'a> {
    /// The connection it came on.
    pub conn: &'a ConnInfo,
    /// Kafka API key (e.g. 0 = Produce).
    pub api_key: i16,
    /// The API's name as Kafka spells it (`Produce`, `Fetch`, ...).
    pub api_name: &'static str,
    /// Request version.
    pub api_version: i16,
    /// Correlation id, unique per in-flight request on this connection.
    pub correlation_id: i32,
    /// The client id from the request header, if any.
    pub client_id: Option<&'a str>,
    /// Frame size on the wire, including the 4-byte length prefix.
    pub bytes: usize,
    /// The decoded body; `None` when the version is outside what the codec knows (the frame is
    /// still forwarded untouched).
    pub body: Option<&'a RequestKind>,
    /// When the proxy finished reading the frame.
    pub at: Instant,
}

/// A response frame from the broker, matched to its request.
#[derive(Debug)]
pub struct ResponseEvent<'a> {
    /// The connection it goes to.
    pub conn: &'a ConnInfo,
    /// API key of the request it answers.
    pub api_key: i16,
    /// The API's name (`Produce`, `Fetch`, ...).
    pub api_name: &'static str,
    /// Version of the request it answers.
    pub api_version: i16,
    /// Correlation id.
    pub correlation_id: i32,
    /// The client id of the request.
    pub client_id: Option<&'a str>,
    /// Frame size as sent to the client (after any rewrite), including the length prefix.
    pub bytes: usize,
    /// From the end of reading the request to the end of reading this response.
    pub latency: Duration,
    /// Every non-zero error code in the response (top level and per topic/partition/group),
    /// one entry per occurrence.
    pub error_codes: &'a [i16],
    /// The decoded body, `None` when the version is outside what the codec knows or the body
    /// did not decode (the frame is then forwarded untouched).
    pub body: Option<&'a ResponseKind>,
    /// Whether broker addresses in it were rewritten to proxy listeners.
    pub rewritten: bool,
    /// When the proxy finished reading the frame.
    pub at: Instant,
}

/// One record batch of a Produce request.
#[derive(Debug)]
pub struct ProducedBatch<'a> {
    /// The connection it came on.
    pub conn: &'a ConnInfo,
    /// The client id of the request.
    pub client_id: Option<&'a str>,
    /// Topic name (resolved from the topic id for Produce v13+, or the id as text when the
    /// proxy has not seen it in a Metadata response yet).
    pub topic: &'a str,
    /// Partition.
    pub partition: i32,
    /// The decoded batch: records with keys, headers, timestamps.
    pub batch: &'a RecordBatch,
    /// When the proxy read the request.
    pub at: Instant,
}

/// The broker's answer for one partition of a Produce request.
#[derive(Debug)]
pub struct ProduceAck<'a> {
    /// The connection.
    pub conn: &'a ConnInfo,
    /// The client id of the request.
    pub client_id: Option<&'a str>,
    /// Topic name.
    pub topic: &'a str,
    /// Partition.
    pub partition: i32,
    /// Kafka error code (0 = accepted).
    pub error_code: i16,
    /// Offset of the first record written (−1 on error).
    pub base_offset: i64,
    /// Records the request carried for this partition (from the batch headers).
    pub record_count: u64,
    /// Record-batch bytes the request carried for this partition.
    pub record_bytes: u64,
    /// Broker append time in ms since the epoch, −1 unless the topic uses LogAppendTime.
    pub log_append_time_ms: i64,
    /// When the proxy read the request.
    pub request_at: Instant,
    /// When the proxy read the response.
    pub acked_at: Instant,
}

/// One record batch of a Fetch response.
#[derive(Debug)]
pub struct FetchedBatch<'a> {
    /// The connection.
    pub conn: &'a ConnInfo,
    /// The client id of the request.
    pub client_id: Option<&'a str>,
    /// Topic name (resolved from the topic id for Fetch v13+).
    pub topic: &'a str,
    /// Partition.
    pub partition: i32,
    /// The decoded batch.
    pub batch: &'a RecordBatch,
    /// The partition's high watermark in this response.
    pub high_watermark: i64,
    /// The offset the Fetch request asked from for this partition; records of the batch below it
    /// were fetched again only because batches are returned whole. −1 when the request did not
    /// name the partition (an incremental fetch session carrying it over).
    pub fetch_offset: i64,
    /// When the proxy read the response.
    pub at: Instant,
}

/// Where a [`Watermark`] was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WatermarkSource {
    /// `base_offset + record_count` of an accepted Produce.
    Produce,
    /// The high watermark of a Fetch response partition.
    Fetch,
    /// ListOffsets for the latest offset (timestamp −1).
    ListOffsets,
}

/// The end of a partition's log as observed.
#[derive(Debug)]
pub struct Watermark<'a> {
    /// Topic name.
    pub topic: &'a str,
    /// Partition.
    pub partition: i32,
    /// Offset one past the last record known to be in the log.
    pub offset: i64,
    /// Where it was seen.
    pub source: WatermarkSource,
    /// When.
    pub at: Instant,
}

/// One partition of a consumer group's offset commit, with the broker's answer.
#[derive(Debug)]
pub struct OffsetCommitEvent<'a> {
    /// The connection.
    pub conn: &'a ConnInfo,
    /// The client id of the request.
    pub client_id: Option<&'a str>,
    /// Consumer group.
    pub group: &'a str,
    /// Topic name.
    pub topic: &'a str,
    /// Partition.
    pub partition: i32,
    /// The committed offset (the next record the group will read).
    pub offset: i64,
    /// The broker's error code for this partition (0 = committed).
    pub error_code: i16,
    /// Whether it came through TxnOffsetCommit (transactional producer).
    pub transactional: bool,
    /// When the proxy read the response.
    pub at: Instant,
}

/// A part of a relayed frame the proxy could not decode (the frame itself was relayed).
#[derive(Debug)]
pub struct DecodeFailure<'a> {
    /// The connection.
    pub conn: &'a ConnInfo,
    /// Request or response.
    pub direction: Direction,
    /// The API name of the frame.
    pub api_name: &'static str,
    /// The API version of the frame.
    pub api_version: i16,
    /// A short fixed label: `unsupported_version` (the codec does not know this version),
    /// `malformed_response`, `unmatched_response` (no request with that correlation id),
    /// `reencode`, or a record-batch error label (`corrupt`, `decompress`,
    /// `decompressed_too_large`, `unsupported_magic`, `unknown_codec`).
    pub label: &'static str,
    /// Details for logs.
    pub reason: &'a str,
}

/// A request relayed without decoding: an API key or version newer than the codec, or a header
/// or body it cannot read. The broker gets the bytes as sent and answers (or refuses) them.
#[derive(Debug)]
pub struct OpaqueRelay<'a> {
    /// The connection.
    pub conn: &'a ConnInfo,
    /// The API key as sent (possibly one the codec has no name for).
    pub api_key: i16,
    /// The API's name, `Unknown` for a key the codec does not know.
    pub api_name: &'static str,
    /// The API version as sent.
    pub api_version: i16,
    /// The correlation id its response will carry.
    pub correlation_id: i32,
    /// Why it was not decoded.
    pub reason: OpaqueReason,
    /// What the decoder said (for logs).
    pub detail: &'a str,
}
