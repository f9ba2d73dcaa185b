//! TLS on either side of the proxy, so that it can decode and measure what a secured cluster's
//! clients send: *termination* towards clients (the certificate whose names match the client's
//! SNI, else the first; optionally client certificates signed by a given CA) and *origination*
//! towards the brokers (a CA bundle, or the Mozilla roots that managed clusters' certificates
//! chain to; optionally a client certificate).
//!
//! rustls (through tokio-rustls) does the handshakes, with the aws-lc-rs provider (the fastest
//! AES-GCM of rustls' providers; it is linked into the workspace anyway). Files are PEM, read
//! once at start: a file that is missing, holds no certificate or key, or a key that does not
//! match its certificate stops the start with a [`ProxyError::Tls`] naming the file. A failed
//! handshake on a connection closes only that connection
//! ([`crate::observe::CloseReason::ClientTls`], [`crate::observe::CloseReason::UpstreamTls`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::error::ProxyError;

/// A certificate chain (leaf first) and its private key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertKeyFiles {
    /// The chain.
    pub cert: PathBuf,
    /// The key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// TLS towards clients: the proxy's listeners speak TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTls {
    /// Certificates offered to clients: the first whose names match the server name the client
    /// asked for (SNI), else the first of all. At least one.
    pub certs: Vec<CertKeyFiles>,
    /// When set, clients must present a certificate signed by one of these CAs (PEM bundle).
    pub client_ca: Option<PathBuf>,
}

/// TLS towards the brokers: the proxy connects to them over TLS.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UpstreamTls {
    /// CAs trusted for the brokers' certificates (PEM bundle); `None`: the Mozilla roots.
    pub ca: Option<PathBuf>,
    /// A client certificate presented to the brokers (clusters that require mutual TLS).
    pub client_cert: Option<CertKeyFiles>,
    /// The name every broker's certificate is checked against, instead of each broker's own
    /// host (for brokers reached by an address their certificates do not name).
    pub server_name: Option<String>,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn tls_error(what: &str, path: Option<&Path>, reason: impl std::fmt::Display) -> ProxyError {
    ProxyError::Tls {
        what: match path {
            Some(p) => format!("{what} {}", p.display()),
            None => what.to_string(),
        },
        reason: reason.to_string(),
    }
}

fn read_certs(what: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, ProxyError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| tls_error(what, Some(path), e))?;
    if certs.is_empty() {
        return Err(tls_error(
            what,
            Some(path),
            "holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
        ));
    }
    Ok(certs)
}

fn read_roots(what: &str, path: &Path) -> Result<RootCertStore, ProxyError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(what, path)? {
        roots
            .add(cert)
            .map_err(|e| tls_error(what, Some(path), e))?;
    }
    Ok(roots)
}

fn read_cert_key(
    files: &CertKeyFiles,
    provider: &CryptoProvider,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), ProxyError> {
    let chain = read_certs("certificate", &files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| tls_error("private key", Some(&files.key), e))?;
    // Checked here, where the file names are known, rather than at the first handshake.
    CertifiedKey::from_der(chain.clone(), key.clone_key(), provider).map_err(|e| {
        tls_error(
            "private key",
            Some(&files.key),
            format!("does not fit certificate {}: {e}", files.cert.display()),
        )
    })?;
    Ok((chain, key))
}

/// The acceptor for [`ClientTls`].
pub(crate) fn acceptor(tls: &ClientTls) -> Result<TlsAcceptor, ProxyError> {
    let provider = provider();
    if tls.certs.is_empty() {
        return Err(tls_error(
            "client TLS",
            None,
            "needs at least one certificate and key",
        ));
    }
    let mut keys = Vec::with_capacity(tls.certs.len());
    for files in &tls.certs {
        let (chain, key) = read_cert_key(files, &provider)?;
        let key = CertifiedKey::from_der(chain, key, &provider)
            .map_err(|e| tls_error("private key", Some(&files.key), e))?;
        keys.push(Arc::new(key));
    }
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error("client TLS", None, e))?;
    let builder = match &tls.client_ca {
        Some(path) => {
            let roots = read_roots("client CA", path)?;
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| tls_error("client CA", Some(path), e))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder.with_cert_resolver(Arc::new(SniResolver { keys }));
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The connector for [`UpstreamTls`], and the fixed server name if one is configured.
pub(crate) fn connector(
    tls: &UpstreamTls,
) -> Result<(TlsConnector, Option<ServerName<'static>>), ProxyError> {
    let provider = provider();
    let roots = match &tls.ca {
        Some(path) => read_roots("upstream CA", path)?,
        None => RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        },
    };
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error("upstream TLS", None, e))?
        .with_root_certificates(roots);
    let config = match &tls.client_cert {
        Some(files) => {
            let (chain, key) = read_cert_key(files, &provider)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| tls_error("upstream client certificate", Some(&files.cert), e))?
        }
        None => builder.with_no_client_auth(),
    };
    let name = match &tls.server_name {
        Some(n) => Some(
            ServerName::try_from(n.clone())
                .map_err(|e| tls_error("upstream server name", None, format!("{n:?}: {e}")))?,
        ),
        None => None,
    };
    Ok((TlsConnector::from(Arc::new(config)), name))
}

/// The name a broker's certificate is checked against: its host (a DNS name or an IP address).
pub(crate) fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(host.to_string())
        .map_err(|e| format!("{host:?} is not a DNS name or an IP address: {e}"))
}

/// Picks the certificate for a client's SNI: the first valid for that name, else the first.
#[derive(Debug)]
struct SniResolver {
    keys: Vec<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if self.keys.len() > 1 {
            if let Some(name) = hello.server_name().and_then(|n| server_name(n).ok()) {
                let fits = |k: &&Arc<CertifiedKey>| {
                    k.cert.first().is_some_and(|leaf| {
                        webpki::EndEntityCert::try_from(leaf)
                            .is_ok_and(|c| c.verify_is_valid_for_subject_name(&name).is_ok())
                    })
                };
                if let Some(k) = self.keys.iter().find(fits) {
                    return Some(k.clone());
                }
            }
        }
        self.keys.first().cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("keyshift-tls-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// The error's text (the acceptor and the connector have no `Debug` for `unwrap_err`).
    fn err<T>(r: Result<T, ProxyError>) -> String {
        match r {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn bad_files_are_named_in_the_error() {
        let dir = tmp("bad");
        let empty = write(&dir, "empty.pem", "not a certificate\n");
        let missing = dir.join("missing.pem");
        let e = err(acceptor(&ClientTls {
            certs: vec![CertKeyFiles {
                cert: empty.clone(),
                key: missing.clone(),
            }],
            client_ca: None,
        }));
        assert!(
            e.contains("empty.pem") && e.contains("no PEM certificate"),
            "{e}"
        );
        let e = err(connector(&UpstreamTls {
            ca: Some(missing.clone()),
            ..Default::default()
        }));
        assert!(
            e.contains("upstream CA") && e.contains("missing.pem"),
            "{e}"
        );
        let e = err(acceptor(&ClientTls {
            certs: Vec::new(),
            client_ca: None,
        }));
        assert!(e.contains("at least one certificate"), "{e}");
        let e = err(connector(&UpstreamTls {
            server_name: Some("not a name!".into()),
            ..Default::default()
        }));
        assert!(e.contains("upstream server name"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn broker_hosts_become_server_names() {
        assert!(matches!(
            server_name("127.0.0.1"),
            Ok(ServerName::IpAddress(_))
        ));
        assert!(matches!(
            server_name("kafka-0.example"),
            Ok(ServerName::DnsName(_))
        ));
        assert!(server_name("bad name").is_err());
    }
}
