//! The transparent Kafka protocol proxy (issue 5).
//!
//! A client connects to a proxy listener as if it were a broker; the proxy relays every byte
//! to the broker behind that listener and back, and on the way decodes each frame with the
//! `kafka-protocol` codecs (generated from Apache Kafka's JSON message specs, every API key and
//! version) and reports what it saw to an [`observe::Observer`].
//!
//! - [`config::ProxyConfig`] says where to listen and which broker to relay to.
//! - [`Proxy::start`] binds one listener per broker and returns a [`RunningProxy`]; listeners
//!   for brokers the cluster advertises later are added as Metadata, FindCoordinator and
//!   DescribeCluster responses name them, and those responses are rewritten to point at the
//!   proxy, so clients reach every broker through it.
//! - [`wire`] is the socket-free layer: framing and protocol detection ([`wire::frame`]),
//!   request/response decoding and correlation ([`wire::codec`]), address rewriting
//!   ([`wire::rewrite`]) and record batches ([`wire::records`]).
//! - [`observe`] defines the events: requests and responses (with latency and error codes),
//!   produced and fetched record batches (keys, headers, offsets, timestamps), produce acks,
//!   log-end watermarks and group offset commits.
//!
//! - [`tls`] terminates TLS towards clients and originates it towards the brokers, so the
//!   proxy decodes and measures inside TLS; SASL handshakes are relayed and counted per
//!   mechanism (their credentials are never decoded into an event).
//!
//! Bad input closes only its own connection, with a reason ([`observe::CloseReason`]); nothing
//! a peer sends makes the proxy panic or allocate beyond its configured limits.

pub mod config;
pub mod error;
pub mod metrics;
pub mod observe;
mod server;
pub mod stats;
mod stream;
pub mod tls;
pub mod wire;

pub use config::{BrokerMapping, ProxyConfig};
pub use error::ProxyError;
pub use server::{Listener, Proxy, RunningProxy};
pub use tls::{CertKeyFiles, ClientTls, UpstreamTls};

/// The codec crate, re-exported so observers can match on decoded bodies without depending on
/// it (and on its exact version) themselves.
pub use kafka_protocol;
