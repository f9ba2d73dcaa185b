//! Direct vs through the proxy, same broker, same run, alternating.
//!
//! Run with `cargo bench -p keyshift-proxy --bench proxy` (options through env vars:
//! `KEYSHIFT_BENCH_RECORDS` per round, default 10000; `KEYSHIFT_BENCH_ROUNDS`, default 5;
//! `KEYSHIFT_BENCH_PROBES` sequential requests per latency probe, default 1000).
//!
//! The embedded broker (tansu, sqlite) and the proxy (record decoding on, reporting to
//! [`ProxyMetrics`], as `keyshift proxy` runs it) each run in a *child process* of this
//! binary, so the proxy's CPU time is read from its own `/proc/<pid>/stat`, apart from the
//! clients and the broker. Each round runs both variants, `direct` (clients → broker) and
//! `proxy` (clients → proxy → broker), in alternating order:
//! - **produce throughput**: an rdkafka idempotent producer sends `records` Zipf-keyed
//!   ~100-byte records to a fresh 4-partition topic and awaits every acknowledgement;
//! - **fetch throughput**: an rdkafka consumer assigned to the topic reads them all back;
//! - **produce latency**: one raw connection sends `probes` ProduceRequests (v7, one record,
//!   acks=1) one after the other, timing each request → response;
//! - **fetch latency**: the same connection sends `probes` FetchRequests (v11, max wait 0)
//!   for the last ten of those records, one after the other.
//!
//! The latency probes use a fresh one-partition topic per variant and round.
//!
//! With `KEYSHIFT_BENCH_TLS=1` every client connection is TLS (certificates made at start with
//! `rcgen`). The embedded broker serves no TLS, so `direct` then means clients → a TLS
//! terminator → broker, the terminator being a second proxy child (TLS towards clients,
//! plaintext to the broker) standing in for a TLS broker; `proxy` means clients → the measured
//! proxy (TLS towards clients *and* towards the terminator, checking its certificate) →
//! terminator → broker. The ratio is what one TLS proxy hop costs over a TLS path.
//!
//! Raw requests (built with the `kafka-protocol` codecs) make the latency probes measure the
//! network path itself, not a client library's batching timers. Reported: medians over the
//! rounds of records/s, proxy/direct ratios, latency p50/p99 and the proxy's added latency,
//! and the proxy process's CPU time per MB of record data (key + value) relayed, from the
//! per-thread `schedstat` of the proxy child (in `direct` rounds it shows the idle proxy: ~0).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use keyshift_core::workload::key_name;
use keyshift_kafka::bench::{env_or, median, zipf_keys};
use keyshift_kafka::{Admin, ClientSettings, EmbeddedBroker};
use keyshift_proxy::kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use keyshift_proxy::kafka_protocol::messages::produce_request::{
    PartitionProduceData, TopicProduceData,
};
use keyshift_proxy::kafka_protocol::messages::{
    ApiKey, FetchRequest, FetchResponse, ProduceRequest, ProduceResponse, RequestHeader,
    ResponseHeader, TopicName,
};
use keyshift_proxy::kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use keyshift_proxy::kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use keyshift_proxy::metrics::{MetricsConfig, ProxyMetrics};
use keyshift_proxy::{CertKeyFiles, ClientTls, Proxy, ProxyConfig, UpstreamTls};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

const PARTITIONS: u32 = 4;
const VALUE_BYTES: usize = 100;
const CHILD_ENV: &str = "KEYSHIFT_PROXY_BENCH_CHILD";
const PRODUCE_VERSION: i16 = 7;
const FETCH_VERSION: i16 = 11;

/// Where the TLS files are, for the children (set by the parent in TLS mode).
const TLS_DIR_ENV: &str = "KEYSHIFT_PROXY_BENCH_TLS_DIR";
/// `terminator` or `proxy`: which TLS proxy child this is.
const TLS_ROLE_ENV: &str = "KEYSHIFT_PROXY_BENCH_TLS_ROLE";

fn main() {
    match std::env::var(CHILD_ENV).as_deref() {
        Ok("broker") => return run_broker_child(),
        Ok(upstream) if !upstream.is_empty() => return run_proxy_child(upstream),
        _ => {}
    }
    let tls = std::env::var("KEYSHIFT_BENCH_TLS").as_deref() == Ok("1");
    // `cargo test --all-targets` runs benches without `--bench`: a smoke run keeps them from
    // rotting without spending the test suite's time on measurement.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let (records, rounds, probes) = if smoke {
        (300, 1, 20)
    } else {
        (
            env_or("KEYSHIFT_BENCH_RECORDS", 10_000),
            env_or("KEYSHIFT_BENCH_ROUNDS", 5),
            env_or("KEYSHIFT_BENCH_PROBES", 1_000),
        )
    };
    let (broker_addr, mut broker) = spawn_child("broker", &[]);
    let pki = tls.then(Pki::new);
    let (bootstrap, mut terminator, proxy_addr, mut proxy) = match &pki {
        None => {
            let (proxy_addr, proxy) = spawn_child(&broker_addr, &[]);
            (broker_addr.clone(), None, proxy_addr, proxy)
        }
        Some(pki) => {
            let dir = pki.dir.to_str().unwrap();
            let (term_addr, term) = spawn_child(
                &broker_addr,
                &[(TLS_DIR_ENV, dir), (TLS_ROLE_ENV, "terminator")],
            );
            let (proxy_addr, proxy) =
                spawn_child(&term_addr, &[(TLS_DIR_ENV, dir), (TLS_ROLE_ENV, "proxy")]);
            (term_addr, Some(term), proxy_addr, proxy)
        }
    };
    let client = Client {
        ca: pki.as_ref().map(|p| p.dir.join("ca.pem")),
    };
    let admin = Admin::new(&ClientSettings::new(broker_addr.clone())).expect("admin client");
    let keys = zipf_keys(records);
    let data_mb = records as f64 * (VALUE_BYTES as f64 + 12.0) / 1e6;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");

    println!(
        "direct vs proxy{}: {records} records of {VALUE_BYTES} B per round, {rounds} rounds \
         (+1 warm-up), {PARTITIONS} partitions, {probes} sequential requests per latency probe",
        if tls { " over TLS" } else { "" }
    );
    let variants = ["direct", "proxy"];
    let mut results: Vec<Vec<Sample>> = vec![Vec::new(); variants.len()];
    let stamp = std::process::id();
    for round in 0..=rounds {
        for i in 0..variants.len() {
            let v = (i + round) % variants.len();
            let addr = if v == 0 { &bootstrap } else { &proxy_addr };
            let topic = format!("bench-{stamp}-{round}-{v}");
            admin.create_topic(&topic, PARTITIONS).expect("topic");
            let cpu0 = process_cpu(proxy.id());
            let t = Instant::now();
            runtime.block_on(produce_all(&client, addr, &topic, &keys));
            let produce_rate = records as f64 / t.elapsed().as_secs_f64();
            let cpu1 = process_cpu(proxy.id());
            let t = Instant::now();
            fetch_all(&client, addr, &topic, records);
            let fetch_rate = records as f64 / t.elapsed().as_secs_f64();
            let cpu2 = process_cpu(proxy.id());
            let probe_topic = format!("{topic}-probe");
            admin.create_topic(&probe_topic, 1).expect("probe topic");
            let (produce_lat, fetch_lat) = probe_latency(&client, addr, &probe_topic, probes);
            eprintln!(
                "round {round} {}: produce {produce_rate:.0}/s, fetch {fetch_rate:.0}/s, \
                 produce p99 {:.0} µs, fetch p99 {:.0} µs",
                variants[v],
                quantile(&produce_lat, 0.99) * 1e6,
                quantile(&fetch_lat, 0.99) * 1e6
            );
            if round > 0 {
                results[v].push(Sample {
                    produce_rate,
                    fetch_rate,
                    produce_p50: quantile(&produce_lat, 0.5),
                    produce_p99: quantile(&produce_lat, 0.99),
                    fetch_p50: quantile(&fetch_lat, 0.5),
                    fetch_p99: quantile(&fetch_lat, 0.99),
                    produce_cpu_ms_per_mb: (cpu1 - cpu0).as_secs_f64() * 1e3 / data_mb,
                    fetch_cpu_ms_per_mb: (cpu2 - cpu1).as_secs_f64() * 1e3 / data_mb,
                });
            }
        }
    }
    report(&variants, &results);
    let children = [Some(&mut proxy), terminator.as_mut(), Some(&mut broker)];
    for child in children.into_iter().flatten() {
        // Closing its stdin tells a child to stop.
        drop(child.stdin.take());
        let _ = child.wait();
    }
}

/// The TLS files of a run, in a fresh directory: a CA and a certificate for `127.0.0.1` (the
/// terminator's and the proxy's) signed by it.
struct Pki {
    dir: std::path::PathBuf,
}

impl Pki {
    fn new() -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let dir = std::env::temp_dir().join(format!("keyshift-bench-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("TLS dir");
        let mut ca = CertificateParams::new(Vec::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // Distinct subjects: OpenSSL (librdkafka) takes a leaf whose subject equals its
        // issuer's for self-signed, and rcgen gives both the same default name.
        ca.distinguished_name
            .push(DnType::CommonName, "keyshift bench CA");
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().unwrap();
        let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
        leaf.distinguished_name
            .push(DnType::CommonName, "keyshift bench proxy");
        let cert = leaf.signed_by(&key, &issuer).unwrap();
        for (name, text) in [
            ("ca.pem", ca_cert.pem()),
            ("server.pem", cert.pem()),
            ("server.key", key.serialize_pem()),
        ] {
            std::fs::write(dir.join(name), text).expect("TLS file");
        }
        Pki { dir }
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// How the clients connect: plaintext, or TLS trusting `ca`.
struct Client {
    ca: Option<std::path::PathBuf>,
}

impl Client {
    fn settings(&self, addr: &str, client_id: &str) -> ClientSettings {
        let settings = ClientSettings::new(addr).client_id(client_id);
        match &self.ca {
            None => settings,
            Some(ca) => settings
                .parse_properties([
                    "security.protocol=SSL".to_owned(),
                    format!("ssl.ca.location={}", ca.display()),
                ])
                .expect("TLS properties"),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    produce_rate: f64,
    fetch_rate: f64,
    produce_p50: f64,
    produce_p99: f64,
    fetch_p50: f64,
    fetch_p99: f64,
    produce_cpu_ms_per_mb: f64,
    fetch_cpu_ms_per_mb: f64,
}

fn report(variants: &[&str], results: &[Vec<Sample>]) {
    let m = |v: usize, f: fn(&Sample) -> f64| median(results[v].iter().map(f));
    println!(
        "{:<8} {:>11} {:>6} {:>11} {:>6} {:>9} {:>9} {:>9} {:>9} {:>10} {:>10}",
        "variant",
        "produce/s",
        "ratio",
        "fetch/s",
        "ratio",
        "prod p50",
        "prod p99",
        "fetch p50",
        "fetch p99",
        "cpu ms/MB",
        "cpu ms/MB"
    );
    println!(
        "{:<8} {:>11} {:>6} {:>11} {:>6} {:>9} {:>9} {:>9} {:>9} {:>10} {:>10}",
        "", "", "", "", "", "µs", "µs", "µs", "µs", "produce", "fetch"
    );
    for (v, name) in variants.iter().enumerate() {
        println!(
            "{name:<8} {:>11.0} {:>6.3} {:>11.0} {:>6.3} {:>9.0} {:>9.0} {:>9.0} {:>9.0} {:>10.1} {:>10.1}",
            m(v, |s| s.produce_rate),
            m(v, |s| s.produce_rate) / m(0, |s| s.produce_rate),
            m(v, |s| s.fetch_rate),
            m(v, |s| s.fetch_rate) / m(0, |s| s.fetch_rate),
            m(v, |s| s.produce_p50) * 1e6,
            m(v, |s| s.produce_p99) * 1e6,
            m(v, |s| s.fetch_p50) * 1e6,
            m(v, |s| s.fetch_p99) * 1e6,
            m(v, |s| s.produce_cpu_ms_per_mb),
            m(v, |s| s.fetch_cpu_ms_per_mb),
        );
    }
    println!(
        "added by the proxy (medians): produce p50 {:+.0} µs, p99 {:+.0} µs; fetch p50 {:+.0} µs, p99 {:+.0} µs",
        (m(1, |s| s.produce_p50) - m(0, |s| s.produce_p50)) * 1e6,
        (m(1, |s| s.produce_p99) - m(0, |s| s.produce_p99)) * 1e6,
        (m(1, |s| s.fetch_p50) - m(0, |s| s.fetch_p50)) * 1e6,
        (m(1, |s| s.fetch_p99) - m(0, |s| s.fetch_p99)) * 1e6,
    );
    for (v, name) in variants.iter().enumerate() {
        let list = |f: fn(&Sample) -> f64, scale: f64| -> Vec<String> {
            results[v]
                .iter()
                .map(|s| format!("{:.0}", f(s) * scale))
                .collect()
        };
        println!(
            "  {name}: produce/s {:?}, fetch/s {:?}, produce p99 µs {:?}, fetch p99 µs {:?}",
            list(|s| s.produce_rate, 1.0),
            list(|s| s.fetch_rate, 1.0),
            list(|s| s.produce_p99, 1e6),
            list(|s| s.fetch_p99, 1e6),
        );
    }
}

/// Sends every key with an idempotent rdkafka producer and awaits every acknowledgement.
async fn produce_all(client: &Client, addr: &str, topic: &str, keys: &[Vec<u8>]) {
    let producer: FutureProducer = client
        .settings(addr, "bench-producer")
        .producer_config()
        .create()
        .expect("producer");
    let value = vec![b'v'; VALUE_BYTES];
    let mut pending = Vec::with_capacity(keys.len());
    for key in keys {
        let mut record = FutureRecord::to(topic).key(key.as_slice()).payload(&value);
        loop {
            match producer.send_result(record) {
                Ok(f) => break pending.push(f),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err((e, _)) => panic!("send failed: {e}"),
            }
        }
    }
    for f in pending {
        f.await
            .expect("delivery report")
            .map_err(|(e, _)| e)
            .expect("delivered");
    }
}

/// Reads `records` records of `topic` from the beginning with an assigned rdkafka consumer.
fn fetch_all(client: &Client, addr: &str, topic: &str, records: usize) {
    let consumer: BaseConsumer = client
        .settings(addr, "bench-consumer")
        .consumer_config("bench-unused")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS as i32 {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).expect("assign");
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut n = 0;
    while n < records {
        assert!(Instant::now() < deadline, "fetched {n} of {records}");
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            m.expect("consume");
            n += 1;
        }
    }
}

/// A raw Kafka connection: one request in flight at a time.
struct Raw {
    stream: Box<dyn ReadWrite>,
    correlation_id: i32,
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

impl Raw {
    fn connect(client: &Client, addr: &str) -> Raw {
        let tcp = TcpStream::connect(addr).expect("connect");
        tcp.set_nodelay(true).unwrap();
        let stream: Box<dyn ReadWrite> = match &client.ca {
            None => Box::new(tcp),
            Some(ca) => {
                use rustls::pki_types::pem::PemObject;
                let mut roots = rustls::RootCertStore::empty();
                for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca).expect("CA") {
                    roots.add(cert.expect("CA certificate")).expect("CA root");
                }
                let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
                let config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .expect("TLS versions")
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                let host = addr.rsplit_once(':').expect("HOST:PORT").0.to_owned();
                let name = rustls::pki_types::ServerName::try_from(host).expect("server name");
                let conn = rustls::ClientConnection::new(Arc::new(config), name).expect("TLS");
                Box::new(rustls::StreamOwned::new(conn, tcp))
            }
        };
        Raw {
            stream,
            correlation_id: 0,
        }
    }

    /// Sends one request and returns its response body (after the header) and round trip.
    fn call<Req: Encodable>(&mut self, key: ApiKey, version: i16, req: &Req) -> (Bytes, Duration) {
        self.correlation_id += 1;
        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("bench-raw")));
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[0; 4]);
        header
            .encode(&mut buf, key.request_header_version(version))
            .expect("encode header");
        req.encode(&mut buf, version).expect("encode body");
        let len = (buf.len() - 4) as i32;
        buf[..4].copy_from_slice(&len.to_be_bytes());
        let start = Instant::now();
        self.stream.write_all(&buf).expect("send");
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len).expect("response length");
        let mut frame = vec![0u8; i32::from_be_bytes(len) as usize];
        self.stream.read_exact(&mut frame).expect("response");
        let took = start.elapsed();
        let mut frame = Bytes::from(frame);
        let h = ResponseHeader::decode(&mut frame, key.response_header_version(version))
            .expect("response header");
        assert_eq!(h.correlation_id, self.correlation_id, "correlation id");
        (frame, took)
    }
}

/// Sequential produce and fetch round trips on one raw connection, in seconds.
fn probe_latency(client: &Client, addr: &str, topic: &str, probes: usize) -> (Vec<f64>, Vec<f64>) {
    let mut raw = Raw::connect(client, addr);
    let name = TopicName(StrBytes::from_string(topic.to_owned()));
    let mut produce = Vec::with_capacity(probes);
    for i in 0..probes {
        let record = Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: 0,
            sequence: -1,
            timestamp: 0,
            key: Some(Bytes::from(key_name(i as u64))),
            value: Some(Bytes::from(vec![b'p'; VALUE_BYTES])),
            headers: Default::default(),
        };
        let mut batch = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut batch,
            [&record],
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )
        .expect("encode batch");
        let req = ProduceRequest::default()
            .with_acks(1)
            .with_timeout_ms(10_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(name.clone())
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(batch.freeze()))])]);
        let (mut body, took) = raw.call(ApiKey::Produce, PRODUCE_VERSION, &req);
        let resp = ProduceResponse::decode(&mut body, PRODUCE_VERSION).expect("produce response");
        let code = resp.responses[0].partition_responses[0].error_code;
        assert_eq!(code, 0, "produce error code");
        produce.push(took.as_secs_f64());
    }
    let mut fetch = Vec::with_capacity(probes);
    for i in 0..probes {
        let req = FetchRequest::default()
            .with_max_wait_ms(0)
            .with_min_bytes(1)
            .with_max_bytes(1 << 20)
            .with_topics(vec![FetchTopic::default()
                .with_topic(name.clone())
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(0)
                    .with_fetch_offset(fetch_offset(probes, i))
                    .with_partition_max_bytes(16 * 1024)])]);
        let (mut body, took) = raw.call(ApiKey::Fetch, FETCH_VERSION, &req);
        let resp = FetchResponse::decode(&mut body, FETCH_VERSION).expect("fetch response");
        let part = &resp.responses[0].partitions[0];
        assert_eq!(part.error_code, 0, "fetch error code");
        assert!(
            part.records.as_ref().is_some_and(|r| !r.is_empty()),
            "fetched records"
        );
        fetch.push(took.as_secs_f64());
    }
    (produce, fetch)
}

/// The offset fetch probe `i` of `probes` asks for: one of the last ten records of the probe
/// topic, so every response carries at most ten small records (a broker may answer with more
/// than `partition_max_bytes` asks, up to the log end).
fn fetch_offset(probes: usize, i: usize) -> i64 {
    let last = probes.saturating_sub(1) as i64;
    (last - (i % 10) as i64).max(0)
}

/// CPU time of process `pid`: the sum over its threads of `/proc/<pid>/task/<tid>/schedstat`
/// (nanoseconds on a CPU; `stat`'s 10 ms ticks are too coarse for a few MB).
fn process_cpu(pid: u32) -> Duration {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("/proc task list");
    let ns: u64 = tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(ns)
}

fn quantile(values: &[f64], q: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}

/// Starts this binary again as a child (`broker`, or a proxy to the given upstream, with `env`)
/// and reads the address it prints.
fn spawn_child(role: &str, env: &[(&str, &str)]) -> (String, Child) {
    let mut child = Command::new(std::env::current_exe().expect("own path"))
        .env(CHILD_ENV, role)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("child starts");
    let stdout = child.stdout.take().expect("child stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("address line from the child");
    let addr = line.trim().to_owned();
    assert!(!addr.is_empty(), "the {role} child did not start");
    (addr, child)
}

/// Prints `addr`, then waits until the parent closes stdin.
fn announce_and_wait(addr: &str) {
    let mut out = std::io::stdout();
    writeln!(out, "{addr}").expect("stdout");
    out.flush().expect("stdout");
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
}

fn run_broker_child() {
    let broker = EmbeddedBroker::start().expect("embedded broker");
    announce_and_wait(broker.bootstrap_servers());
    broker.shutdown();
}

/// The proxy as `keyshift proxy` runs it: decoding on, metrics on, default runtime.
fn run_proxy_child(upstream: &str) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let metrics = ProxyMetrics::new(MetricsConfig::default()).expect("metrics");
    let mut config = ProxyConfig::new(upstream, "127.0.0.1:0".parse().unwrap());
    if let Ok(dir) = std::env::var(TLS_DIR_ENV) {
        let dir = std::path::Path::new(&dir);
        config.client_tls = Some(ClientTls {
            certs: vec![CertKeyFiles {
                cert: dir.join("server.pem"),
                key: dir.join("server.key"),
            }],
            client_ca: None,
        });
        if std::env::var(TLS_ROLE_ENV).as_deref() == Ok("proxy") {
            config.upstream_tls = Some(UpstreamTls {
                ca: Some(dir.join("ca.pem")),
                ..UpstreamTls::default()
            });
        }
    }
    let proxy = runtime
        .block_on(Proxy::start(config, Arc::new(metrics.clone())))
        .expect("proxy");
    announce_and_wait(&proxy.bootstrap_addr().to_string());
    // Reading the snapshot keeps the metrics honest: they were updated all along.
    let stats = metrics.snapshot();
    let produced: u64 = stats.partitions.iter().map(|p| p.produced_records).sum();
    eprintln!("proxy child: {produced} records produced through it");
    runtime.block_on(proxy.shutdown());
}
