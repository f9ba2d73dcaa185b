//! The proxy on secured paths, with real clients against the embedded broker.
//!
//! - TLS on both sides: certificates made here with `rcgen` (a CA, the proxies' certificate
//!   for `localhost` and `127.0.0.1`, a client certificate, and an unrelated CA). The embedded
//!   broker serves no TLS, so the path is client → *outer* proxy (terminates TLS, originates
//!   TLS with a client certificate) → *inner* proxy (terminates TLS, requires a client
//!   certificate) → broker: the outer proxy's origination is checked against a real TLS
//!   server, and both proxies count every record exactly. rdkafka and kafka-python connect
//!   over TLS; a client that does not trust the CA, a plaintext client on a TLS listener and
//!   a client without a certificate where one is required are refused, each closing only its
//!   own connection, while the others keep working.
//! - SASL relayed: SCRAM-SHA-512 and PLAIN logins to a broker with users, through the proxy,
//!   counted per mechanism and outcome (a wrong password as a failed authentication), with no
//!   password anywhere in the proxy's metrics or statistics.

mod support;

#[path = "../../keyshift-kafka/tests/python/mod.rs"]
mod python;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use keyshift_kafka::{BrokerOptions, ClientSettings, Property, SaslUser};
use keyshift_proxy::metrics::{MetricsConfig, ProxyMetrics};
use keyshift_proxy::stats::Stats;
use keyshift_proxy::{CertKeyFiles, ClientTls, ProxyConfig, UpstreamTls};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, FutureProducer, FutureRecord, Producer};
use support::{wait_for, Setup, PATIENCE};

/// PEM files of a test PKI in a fresh directory.
struct Pki {
    dir: PathBuf,
    ca: PathBuf,
    server: CertKeyFiles,
    client: CertKeyFiles,
    /// A CA that signed nothing here: clients trusting only it refuse the proxies.
    other_ca: PathBuf,
}

fn ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let mut params = CertificateParams::new(Vec::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), Issuer::new(params, key))
}

fn leaf(issuer: &Issuer<'static, KeyPair>, names: &[&str], cn: &str) -> (String, String) {
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

impl Pki {
    fn new(tag: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!("keyshift-pki-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, text: &str| -> PathBuf {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let (ca_pem, issuer) = ca("keyshift test CA");
        let (other_pem, _) = ca("some other CA");
        let (server_cert, server_key) = leaf(&issuer, &["localhost", "127.0.0.1"], "proxy");
        let (client_cert, client_key) = leaf(&issuer, &["client.keyshift.test"], "client");
        Pki {
            ca: write("ca.pem", &ca_pem),
            other_ca: write("other-ca.pem", &other_pem),
            server: CertKeyFiles {
                cert: write("server.pem", &server_cert),
                key: write("server.key", &server_key),
            },
            client: CertKeyFiles {
                cert: write("client.pem", &client_cert),
                key: write("client.key", &client_key),
            },
            dir,
        }
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn prop(key: &str, value: impl AsRef<str>) -> Property {
    Property::new(key, value.as_ref()).unwrap()
}

/// rdkafka over TLS to `bootstrap`, trusting `ca`.
fn tls_settings(bootstrap: &str, ca: &Path, client_id: &str) -> ClientSettings {
    ClientSettings::new(bootstrap)
        .client_id(client_id)
        .property(prop("security.protocol", "SSL"))
        .property(prop("ssl.ca.location", ca.to_str().unwrap()))
}

/// Produces `count` records keyed `k0..k6` to `topic`; answers the records per partition.
fn produce(settings: &ClientSettings, topic: &str, count: u64) -> BTreeMap<i32, u64> {
    let producer: FutureProducer = settings.producer_config().create().expect("producer");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut delivered = BTreeMap::new();
    rt.block_on(async {
        let mut pending = Vec::new();
        for i in 0..count {
            let key = format!("k{}", i % 7);
            let value = format!("value-{i}");
            let record = FutureRecord::to(topic).key(&key).payload(&value);
            pending.push(
                producer
                    .send_result(record)
                    .map_err(|(e, _)| e)
                    .expect("enqueue"),
            );
        }
        for p in pending {
            let d = p
                .await
                .expect("delivery report")
                .map_err(|(e, _)| e)
                .expect("delivered");
            *delivered.entry(d.partition).or_default() += 1;
        }
    });
    delivered
}

/// Reads `count` records of `topic` in `group`.
fn consume(settings: &ClientSettings, topic: &str, group: &str, count: u64) {
    let consumer: BaseConsumer = settings.consumer_config(group).create().expect("consumer");
    consumer.subscribe(&[topic]).unwrap();
    let mut seen = 0u64;
    wait_for("the consumer to read every record", || {
        while let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m.expect("consume");
            assert!(m.payload().is_some());
            seen += 1;
        }
        (seen >= count).then_some(())
    });
    assert_eq!(seen, count, "every record once");
}

/// Records of `topic` per partition: (produced, fetched).
fn counted(stats: &Stats, topic: &str) -> BTreeMap<i32, (u64, u64)> {
    stats
        .partitions
        .iter()
        .filter(|p| p.topic == topic)
        .map(|p| (p.partition, (p.produced_records, p.fetched_records)))
        .collect()
}

fn closed(stats: &Stats, reason: &str) -> u64 {
    let c = &stats.connections.closed;
    c.iter().find(|n| n.name == reason).map_or(0, |n| n.count)
}

fn handshakes(stats: &Stats, side: &str, outcome: &str) -> u64 {
    let h = stats.tls_handshakes.iter();
    h.filter(|h| h.side == side && h.outcome == outcome)
        .map(|h| h.count)
        .sum()
}

/// Whether a client with `settings` can read the cluster's metadata (a refused TLS or SASL
/// handshake makes it time out with an error).
fn reaches_cluster(settings: &ClientSettings) -> Result<(), String> {
    let client: BaseProducer = settings
        .producer_config()
        .set("reconnect.backoff.max.ms", "200")
        .create()
        .expect("client");
    client
        .client()
        .fetch_metadata(None, Duration::from_secs(4))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

const KAFKA_PYTHON_TLS: &str = r#"
import sys
from kafka import KafkaProducer, KafkaConsumer

bootstrap, topic, count, cafile = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
tls = dict(security_protocol="SSL", ssl_cafile=cafile)
p = KafkaProducer(bootstrap_servers=bootstrap, client_id="py-tls-producer", **tls)
for i in range(count):
    p.send(topic, key=("py-%d" % (i % 5)).encode(), value=("v%d" % i).encode())
p.flush(timeout=60)
p.close()
c = KafkaConsumer(topic, bootstrap_servers=bootstrap, client_id="py-tls-consumer",
                  group_id="py-tls-group", auto_offset_reset="earliest",
                  enable_auto_commit=False, consumer_timeout_ms=30000, **tls)
seen = set()
for m in c:
    seen.add(int(m.value.decode()[1:]))
    if len(seen) == count:
        break
c.close()
print("consumed", len(seen))
"#;

#[test]
fn tls_on_both_sides_is_decoded_and_counted_exactly_and_refusals_stay_isolated() {
    let pki = Pki::new("tls");
    // Inner proxy: TLS to its clients, which must present a certificate from the CA.
    let setup = Setup::start(
        |c| {
            c.client_tls = Some(ClientTls {
                certs: vec![pki.server.clone()],
                client_ca: Some(pki.ca.clone()),
            })
        },
        MetricsConfig::default(),
    );
    // Outer proxy: TLS to its clients, TLS with the client certificate to the inner one.
    let outer_metrics = ProxyMetrics::new(MetricsConfig::default()).unwrap();
    let mut config = ProxyConfig::new(setup.bootstrap(), "127.0.0.1:0".parse().unwrap());
    config.client_tls = Some(ClientTls {
        certs: vec![pki.server.clone()],
        client_ca: None,
    });
    config.upstream_tls = Some(UpstreamTls {
        ca: Some(pki.ca.clone()),
        client_cert: Some(pki.client.clone()),
        server_name: None,
    });
    let outer = setup.another_proxy(config, &outer_metrics);
    let bootstrap = outer.bootstrap_addr().to_string();
    let topic = "secured";
    setup.broker.create_topic(topic, 3).unwrap();

    let good = tls_settings(&bootstrap, &pki.ca, "tls-client");
    let mut delivered = produce(&good, topic, 200);
    consume(&good, topic, "tls-group", 200);

    // Refused, each on its own connection: a client that does not trust the CA ...
    let untrusting = tls_settings(&bootstrap, &pki.other_ca, "untrusting");
    let e = reaches_cluster(&untrusting).expect_err("a client not trusting the CA is refused");
    eprintln!("untrusting client: {e}");
    // ... a plaintext client on the TLS listener ...
    let mut plain = std::net::TcpStream::connect(&bootstrap).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // An ApiVersions v0 request: length, api key 18, version 0, correlation id 1, no client id.
    plain
        .write_all(&[0, 0, 0, 10, 0, 18, 0, 0, 0, 0, 0, 1, 0xff, 0xff])
        .unwrap();
    let mut buf = [0u8; 64];
    let answer = plain.read(&mut buf);
    assert!(
        !matches!(answer, Ok(n) if n >= 4 && buf[..4] == [0, 0, 0, 10]),
        "a plaintext client got a Kafka answer from a TLS listener: {answer:?}"
    );
    // ... and a client without a certificate where one is required (the inner proxy).
    let anonymous = tls_settings(&setup.bootstrap(), &pki.ca, "anonymous");
    let e = reaches_cluster(&anonymous).expect_err("no client certificate, no connection");
    eprintln!("client without a certificate: {e}");

    // The others keep working.
    for (p, n) in produce(&good, topic, 70) {
        *delivered.entry(p).or_default() += n;
    }

    // Both proxies counted every record, inside TLS.
    let outer_stats = wait_for("the outer proxy's counts", || {
        let s = outer_metrics.snapshot();
        let produced: u64 = counted(&s, topic).values().map(|c| c.0).sum();
        (produced == 270).then_some(s)
    });
    let inner_stats = setup.metrics.snapshot();
    for (name, stats) in [("outer", &outer_stats), ("inner", &inner_stats)] {
        let parts = counted(stats, topic);
        for (&p, &n) in &delivered {
            let (produced, fetched) = parts[&p];
            assert_eq!(
                produced, n,
                "{name} proxy: produced records of partition {p}"
            );
            assert!(
                fetched >= 1,
                "{name} proxy: fetched records of partition {p}"
            );
        }
        let fetched: u64 = parts.values().map(|c| c.1).sum();
        assert_eq!(fetched, 200, "{name} proxy: fetched records");
    }
    // The refusals, named: the untrusting client and the plaintext one at the outer proxy, the
    // anonymous one at the inner proxy; the outer proxy's own connections to the inner one
    // all completed their handshakes.
    assert!(
        closed(&outer_stats, "client_tls") >= 2,
        "{:?}",
        outer_stats.connections
    );
    assert!(handshakes(&outer_stats, "client", "failed") >= 2);
    assert!(handshakes(&outer_stats, "client", "ok") >= 2);
    assert!(handshakes(&outer_stats, "upstream", "ok") >= 2);
    assert_eq!(handshakes(&outer_stats, "upstream", "failed"), 0);
    assert!(
        closed(&inner_stats, "client_tls") >= 1,
        "{:?}",
        inner_stats.connections
    );
    assert_eq!(
        handshakes(&inner_stats, "client", "ok"),
        handshakes(&outer_stats, "upstream", "ok"),
        "every TLS session the inner proxy accepted is one the outer proxy opened"
    );

    // kafka-python over TLS, through both proxies.
    if !python::require_kafka_python("tls_on_both_sides (kafka-python)") {
        return;
    }
    let py_topic = "secured-py";
    setup.broker.create_topic(py_topic, 2).unwrap();
    let out = Command::new("timeout")
        .args([
            &PATIENCE.as_secs().to_string(),
            "python3",
            "-c",
            KAFKA_PYTHON_TLS,
            &bootstrap,
            py_topic,
            "60",
            pki.ca.to_str().unwrap(),
        ])
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("consumed 60"),
        "kafka-python over TLS through the proxies failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = outer_metrics.snapshot();
    let parts = counted(&s, py_topic);
    assert_eq!(parts.values().map(|c| c.0).sum::<u64>(), 60, "{parts:?}");
    assert_eq!(parts.values().map(|c| c.1).sum::<u64>(), 60, "{parts:?}");
}

/// Settings for a SASL login over plaintext.
fn sasl_settings(bootstrap: &str, mechanism: &str, user: &str, password: &str) -> ClientSettings {
    ClientSettings::new(bootstrap)
        .client_id(format!("sasl-{}", mechanism.to_lowercase()))
        .property(prop("security.protocol", "SASL_PLAINTEXT"))
        .property(prop("sasl.mechanism", mechanism))
        .property(prop("sasl.username", user))
        .property(prop("sasl.password", password))
}

#[test]
fn sasl_is_relayed_and_counted_per_mechanism_without_credentials() {
    let password = "alice-secret-4711";
    let wrong = "not-alices-password-0815";
    let options = BrokerOptions {
        sasl_users: vec![SaslUser::new("alice", password)],
        ..BrokerOptions::default()
    };
    let setup = Setup::start_with(options, |_| {}, MetricsConfig::default());
    let topic = "sasl";
    setup.broker.create_topic(topic, 2).unwrap();
    let bootstrap = setup.bootstrap();

    let scram = sasl_settings(&bootstrap, "SCRAM-SHA-512", "alice", password);
    let delivered = produce(&scram, topic, 100);
    consume(&scram, topic, "sasl-group", 100);
    let plain = sasl_settings(&bootstrap, "PLAIN", "alice", password);
    let more = produce(&plain, topic, 10);
    let bad = sasl_settings(&bootstrap, "SCRAM-SHA-512", "alice", wrong);
    let e = reaches_cluster(&bad).expect_err("a wrong password is refused");
    eprintln!("wrong password: {e}");

    let failed = |s: &Stats| {
        s.sasl
            .iter()
            .any(|c| c.step == "authenticate" && c.outcome == "failed")
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut stats = setup.metrics.snapshot();
    while !failed(&stats) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        stats = setup.metrics.snapshot();
    }
    assert!(
        failed(&stats),
        "no failed login counted: {:#?} {:?}",
        stats.sasl,
        stats
            .requests
            .iter()
            .map(|r| (&r.api, r.count))
            .collect::<Vec<_>>()
    );
    let count = |step: &str, mechanism: &str, outcome: &str| -> u64 {
        let c = stats.sasl.iter();
        c.filter(|c| c.step == step && c.mechanism == mechanism && c.outcome == outcome)
            .map(|c| c.count)
            .sum()
    };
    assert!(
        count("handshake", "SCRAM-SHA-512", "ok") >= 2,
        "{:?}",
        stats.sasl
    );
    // SCRAM logs in with two rounds; the wrong password fails on the first.
    assert!(
        count("authenticate", "SCRAM-SHA-512", "ok") >= 4,
        "{:?}",
        stats.sasl
    );
    assert!(
        count("authenticate", "SCRAM-SHA-512", "failed") >= 1,
        "{:?}",
        stats.sasl
    );
    assert!(count("handshake", "PLAIN", "ok") >= 1, "{:?}", stats.sasl);
    assert!(
        count("authenticate", "PLAIN", "ok") >= 1,
        "{:?}",
        stats.sasl
    );
    assert!(
        stats.sasl.iter().all(|c| c.mechanism != "other"),
        "{:?}",
        stats.sasl
    );

    let parts = counted(&stats, topic);
    for (&p, &n) in &delivered {
        assert_eq!(parts[&p].0, n + more.get(&p).copied().unwrap_or(0));
    }
    assert_eq!(parts.values().map(|c| c.1).sum::<u64>(), 100);

    // No credential anywhere the proxy reports.
    let mut registry = prometheus_client::registry::Registry::default();
    setup.metrics.register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(text.contains("keyshift_proxy_sasl_total{"), "{text}");
    let everything = format!("{text}\n{stats:?}");
    for secret in [password, wrong] {
        assert!(
            !everything.contains(secret),
            "a password in the proxy's output"
        );
    }
}

/// Completes a TLS handshake with `addr` asking for `name` (SNI), trusting `ca`.
fn handshake(addr: std::net::SocketAddr, ca: &Path, name: &str) -> Result<(), String> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(name.to_owned()).unwrap();
    let mut conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[test]
fn sni_picks_the_certificate_and_bad_files_stop_the_start_with_their_name() {
    let pki = Pki::new("sni");
    let (ca_pem, issuer) = ca("sni CA");
    let ca_path = pki.dir.join("sni-ca.pem");
    std::fs::write(&ca_path, ca_pem).unwrap();
    let mut files = Vec::new();
    for name in ["a.keyshift.test", "b.keyshift.test"] {
        let (cert, key) = leaf(&issuer, &[name], name);
        let cert_path = pki.dir.join(format!("{name}.pem"));
        let key_path = pki.dir.join(format!("{name}.key"));
        std::fs::write(&cert_path, cert).unwrap();
        std::fs::write(&key_path, key).unwrap();
        files.push(CertKeyFiles {
            cert: cert_path,
            key: key_path,
        });
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let metrics = ProxyMetrics::new(MetricsConfig::default()).unwrap();
    let start = |certs: Vec<CertKeyFiles>| {
        let mut config = ProxyConfig::new("127.0.0.1:9", "127.0.0.1:0".parse().unwrap());
        config.client_tls = Some(ClientTls {
            certs,
            client_ca: None,
        });
        rt.block_on(keyshift_proxy::Proxy::start(
            config,
            std::sync::Arc::new(metrics.clone()),
        ))
    };
    let proxy = start(files.clone()).expect("proxy with two certificates");
    let addr = proxy.bootstrap_addr();
    // Each name verifies only against its own certificate: both succeeding shows SNI chose.
    handshake(addr, &ca_path, "a.keyshift.test").expect("SNI a");
    handshake(addr, &ca_path, "b.keyshift.test").expect("SNI b");
    let e = handshake(addr, &ca_path, "c.keyshift.test").expect_err("no certificate for c");
    assert!(e.contains("NotValidForName") || e.contains("name"), "{e}");
    drop(proxy);

    // A key that does not fit its certificate, and a certificate file without a certificate.
    let swapped = vec![CertKeyFiles {
        cert: files[0].cert.clone(),
        key: files[1].key.clone(),
    }];
    let e = start(swapped).expect_err("mismatched key").to_string();
    assert!(
        e.contains("b.keyshift.test.key") && e.contains("does not fit"),
        "{e}"
    );
    let not_pem = vec![CertKeyFiles {
        cert: files[0].key.clone(),
        key: files[0].key.clone(),
    }];
    let e = start(not_pem).expect_err("no certificate").to_string();
    assert!(e.contains("no PEM certificate"), "{e}");
}
