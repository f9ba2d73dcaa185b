//! [`ProxyConfig`]: where the proxy listens, which brokers it relays to, and its limits.

use std::net::SocketAddr;
use std::time::Duration;

use crate::error::ProxyError;
use crate::tls::{ClientTls, UpstreamTls};

/// Kafka's own default for `socket.request.max.bytes`: a broker refuses larger requests.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 100 * 1024 * 1024;

/// An explicit upstream broker → local listener pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerMapping {
    /// The broker as it advertises itself (`host:port` from Metadata responses).
    pub upstream: String,
    /// Where the proxy listens for it.
    pub listen: SocketAddr,
}

/// Configuration of a [`crate::Proxy`]. Build with [`ProxyConfig::new`], then set fields.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// The bootstrap broker (`host:port`) clients reach through [`ProxyConfig::listen`].
    pub upstream: String,
    /// Listener for the bootstrap broker. Port 0 picks a free port; brokers discovered later
    /// then get free ports too, otherwise they get the following ports (`listen.port() + 1`,
    /// `+ 2`, ...) unless [`ProxyConfig::brokers`] names them.
    pub listen: SocketAddr,
    /// Explicit listeners for brokers, matched by the `host:port` they advertise.
    pub brokers: Vec<BrokerMapping>,
    /// Host written into rewritten Metadata/FindCoordinator/DescribeCluster responses; defaults
    /// to the listen IP (set it when clients reach the proxy under another name).
    pub advertised_host: Option<String>,
    /// Largest frame (either direction, without the 4-byte length) the proxy accepts; a larger
    /// one closes that connection.
    pub max_frame_bytes: usize,
    /// Largest number of requests awaiting a response on one connection.
    pub max_in_flight: usize,
    /// Largest decompressed size of one record batch that is decoded for observation; larger
    /// batches are still relayed, but reported as undecodable instead of inspected.
    pub max_decompressed_bytes: usize,
    /// Decode record batches (keys, headers, counts). Off leaves only frame-level events.
    pub decode_records: bool,
    /// Relay connections whose first bytes do not look like Kafka untouched (counted) instead of
    /// closing them.
    pub pass_through_non_kafka: bool,
    /// How long to wait for a new client's first 8 bytes before deciding it is not Kafka.
    pub detect_timeout: Duration,
    /// Timeout for connecting to a broker (with the TLS handshake, when there is one).
    pub connect_timeout: Duration,
    /// TLS towards clients; `None`: the listeners speak plaintext.
    pub client_tls: Option<ClientTls>,
    /// TLS towards the brokers; `None`: plaintext connections to them.
    pub upstream_tls: Option<UpstreamTls>,
}

impl ProxyConfig {
    /// A config relaying `listen` to `upstream`, with Kafka's default limits.
    pub fn new(upstream: impl Into<String>, listen: SocketAddr) -> ProxyConfig {
        ProxyConfig {
            upstream: upstream.into(),
            listen,
            brokers: Vec::new(),
            advertised_host: None,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            max_in_flight: 1024,
            max_decompressed_bytes: 64 * 1024 * 1024,
            decode_records: true,
            pass_through_non_kafka: true,
            detect_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            client_tls: None,
            upstream_tls: None,
        }
    }

    /// Checks every field; the error names the field and what was expected.
    pub fn validate(&self) -> Result<(), ProxyError> {
        let bad = |field: &'static str, msg: String| Err(ProxyError::Config { field, msg });
        if split_host_port(&self.upstream).is_none() {
            return bad("upstream", format!("{:?} is not HOST:PORT", self.upstream));
        }
        for b in &self.brokers {
            if split_host_port(&b.upstream).is_none() {
                return bad("brokers", format!("{:?} is not HOST:PORT", b.upstream));
            }
        }
        if self.max_frame_bytes < 64 {
            return bad(
                "max_frame_bytes",
                format!("{} is below the 64-byte minimum", self.max_frame_bytes),
            );
        }
        if self.max_frame_bytes > i32::MAX as usize {
            return bad(
                "max_frame_bytes",
                format!(
                    "{} exceeds Kafka's 2^31-1 frame limit",
                    self.max_frame_bytes
                ),
            );
        }
        if self.max_in_flight == 0 {
            return bad("max_in_flight", "must be at least 1".to_string());
        }
        if self.detect_timeout.is_zero() {
            return bad("detect_timeout", "must be positive".to_string());
        }
        if self.connect_timeout.is_zero() {
            return bad("connect_timeout", "must be positive".to_string());
        }
        if let Some(h) = &self.advertised_host {
            if h.is_empty() {
                return bad("advertised_host", "must not be empty".to_string());
            }
        }
        Ok(())
    }
}

/// Splits `host:port` (IPv6 as `[::1]:9092`); `None` if it is not that shape.
pub fn split_host_port(s: &str) -> Option<(&str, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() || port == 0 {
        return None;
    }
    Some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_shapes() {
        assert_eq!(split_host_port("localhost:9092"), Some(("localhost", 9092)));
        assert_eq!(split_host_port("[::1]:9092"), Some(("::1", 9092)));
        assert_eq!(split_host_port("localhost"), None);
        assert_eq!(split_host_port(":9092"), None);
        assert_eq!(split_host_port("h:0"), None);
        assert_eq!(split_host_port("h:99999"), None);
    }

    #[test]
    fn validation_names_the_field() {
        let mut c = ProxyConfig::new("localhost:9092", "127.0.0.1:0".parse().unwrap());
        assert!(c.validate().is_ok());
        c.max_frame_bytes = 10;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("max_frame_bytes"), "{e}");
        let c = ProxyConfig::new("nope", "127.0.0.1:0".parse().unwrap());
        assert!(c.validate().unwrap_err().to_string().contains("upstream"));
    }
}
