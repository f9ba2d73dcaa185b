//! Errors of starting the proxy. Errors on a connection never escape it: they close that
//! connection and are reported through [`crate::observe::CloseReason`].

/// Why [`crate::Proxy::start`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// A configuration field is invalid.
    #[error("invalid proxy config `{field}`: {msg}")]
    Config {
        /// The field (as named in [`crate::ProxyConfig`]).
        field: &'static str,
        /// What is wrong and what was expected.
        msg: String,
    },
    /// A listener could not be bound.
    #[error("cannot listen on {addr} (for broker {upstream}): {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The broker it was for.
        upstream: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A TLS file could not be used (missing, not PEM, a key that does not fit its
    /// certificate, ...).
    #[error("TLS: {what}: {reason}")]
    Tls {
        /// What was being loaded, with its file.
        what: String,
        /// Why it failed.
        reason: String,
    },
}
