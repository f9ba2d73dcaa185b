//! `keyshift lag` as a user runs it: the real binary against the embedded broker, records
//! with known timestamps from a plain rdkafka producer, offsets committed by a plain rdkafka
//! consumer; JSON and table output, `--watch` seeing a rewind, and `--serve` scraped over
//! real HTTP through a broker outage and back, with the exposition parsed line by line.

mod process_support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use keyshift_kafka::{BrokerOptions, EmbeddedBroker};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;

const PATIENCE: Duration = Duration::from_secs(90);

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Produces `counts[p]` records to each partition `p`; record i of partition p has timestamp
/// `base_ms + p * 100_000 + i * 1000`.
fn produce(broker: &EmbeddedBroker, topic: &str, counts: &[usize], base_ms: i64) {
    let producer: FutureProducer = broker.client_settings().producer_config().create().unwrap();
    let mut pending = Vec::new();
    for (p, &n) in counts.iter().enumerate() {
        for i in 0..n {
            pending.push(
                producer
                    .send_result(
                        FutureRecord::to(topic)
                            .partition(p as i32)
                            .key("k")
                            .payload("v")
                            .timestamp(base_ms + p as i64 * 100_000 + i as i64 * 1000),
                    )
                    .map_err(|(e, _)| e)
                    .unwrap(),
            );
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    for f in pending {
        rt.block_on(f).unwrap().unwrap();
    }
}

fn commit(broker: &EmbeddedBroker, group: &str, topic: &str, offsets: &[(i32, i64)]) {
    let consumer: BaseConsumer = broker
        .client_settings()
        .consumer_config(group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for &(p, o) in offsets {
        tpl.add_partition_offset(topic, p, Offset::Offset(o))
            .unwrap();
    }
    consumer.commit(&tpl, CommitMode::Sync).expect("commit");
}

fn lag(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keyshift"))
        .arg("lag")
        .args(args)
        .output()
        .expect("run keyshift lag")
}

fn partitions(group: &Value) -> BTreeMap<i64, &Value> {
    group["partitions"]
        .as_array()
        .expect("a partitions array")
        .iter()
        .map(|p| (p["partition"].as_i64().unwrap(), p))
        .collect()
}

#[test]
fn json_and_table_report_exact_lag_and_status() {
    let broker = EmbeddedBroker::start().expect("broker");
    let topic = "payments";
    broker.create_topic(topic, 3).unwrap();
    let counts = [9usize, 5, 6];
    let base_ms = now_ms() - 3_600_000;
    produce(&broker, topic, &counts, base_ms);
    let consumed = [2i64, 5, 1];
    commit(&broker, "ledger", topic, &[(0, 2), (1, 5), (2, 1)]);

    let before = now_ms();
    let out = lag(&[
        "--bootstrap-servers",
        broker.bootstrap_servers(),
        "--group",
        "ledger",
        "--json",
        "--samples",
        "2",
        "--interval",
        "0.2",
    ]);
    let after = now_ms();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one object per group: {stdout}");
    let group: Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(group["group"], "ledger");
    assert_eq!(group["lag"], 12, "7 + 0 + 5");
    assert_eq!(group["status"], "ERR");
    let parts = partitions(&group);
    assert_eq!(parts.len(), 3);
    for (p, x) in &parts {
        let i = *p as usize;
        assert_eq!(x["topic"], topic);
        assert_eq!(x["committed_offset"], consumed[i]);
        assert_eq!(x["end_offset"], counts[i] as i64);
        assert_eq!(x["lag"], counts[i] as i64 - consumed[i], "partition {p}");
        if x["lag"] == 0 {
            assert_eq!(x["status"], "OK");
            assert_eq!(x["lag_seconds"], 0.0);
        } else {
            // Two samples, commits frozen, membership not described by this broker: STALL.
            assert_eq!(x["status"], "STALL", "partition {p}");
            assert_eq!(x["lag_seconds_source"], "exact");
            // The first unconsumed record is #committed of its partition.
            let ts = base_ms + *p * 100_000 + consumed[i] * 1000;
            let secs = x["lag_seconds"].as_f64().unwrap();
            let (lo, hi) = ((before - ts) as f64 / 1e3, (after - ts) as f64 / 1e3);
            assert!(lo <= secs && secs <= hi, "p{p}: {secs} not in [{lo}, {hi}]");
        }
    }

    let out = lag(&[
        "--bootstrap-servers",
        broker.bootstrap_servers(),
        "--group",
        "ledger",
        "--samples",
        "1",
        "--lag-seconds",
        "interpolated",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8(out.stdout).unwrap();
    let header = table.lines().next().unwrap();
    for column in [
        "GROUP",
        "TOPIC",
        "PARTITION",
        "COMMITTED",
        "END",
        "LAG",
        "LAG_SECONDS",
        "STATUS",
    ] {
        assert!(header.contains(column), "{table}");
    }
    let row0: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(&row0[..6], ["ledger", topic, "0", "2", "9", "7"], "{table}");
    // Interpolation from a single sighting of the end offset: a lower bound.
    assert!(row0[6].starts_with(">="), "{table}");
    assert!(
        table.contains("group ledger: OK (Unknown, members unknown), lag 12 records"),
        "{table}"
    );
}

/// Topic `audited` (2 partitions, 4 and 3 records) and group `auditors` committed at 1 and 3
/// (lag 3), for the `--client-config` tests; returns a fresh directory for their files.
fn audited_group(broker: &EmbeddedBroker, name: &str) -> PathBuf {
    broker.create_topic("audited", 2).unwrap();
    produce(broker, "audited", &[4, 3], now_ms() - 60_000);
    commit(broker, "auditors", "audited", &[(0, 1), (1, 3)]);
    let dir = std::env::temp_dir().join(format!("keyshift-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `--client-config`: the Java client's `client.properties` (comments, Java-only keys, a JAAS
/// login, a `${env:...}` secret) works as it is; a property librdkafka refuses is an error
/// naming the file's line and the key; no secret from the file ever appears in the output.
#[test]
fn client_config_files_apply_and_never_show_their_secrets() {
    let broker = EmbeddedBroker::start().expect("broker");
    let dir = audited_group(&broker, "client-config");
    let good = dir.join("client.properties");
    let java = "# written for the Java tools\n\
        bootstrap.servers=elsewhere:9092\n\
        security.protocol=PLAINTEXT\n\
        client.dns.lookup=use_all_dns_ips\n\
        socket.keepalive.enable=${env:KS_TEST_KEEPALIVE}\n\
        sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required \\\n\
        \x20   username=\"auditor\" password=\"hunter2-secret\";\n";
    std::fs::write(&good, java).unwrap();
    let run = |file: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_keyshift"))
            .args(["lag", "--bootstrap-servers", broker.bootstrap_servers()])
            .args(["--group", "auditors", "--json", "--samples", "1"])
            .arg("--client-config")
            .arg(file)
            .env("KS_TEST_KEEPALIVE", "true")
            .output()
            .unwrap()
    };
    let out = run(&good);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    let group: Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert_eq!(group["lag"], 3, "{stdout}");
    assert!(
        !stdout.contains("hunter2") && !stderr.contains("hunter2"),
        "{stdout}{stderr}"
    );

    let bad = dir.join("bad.properties");
    std::fs::write(&bad, format!("{java}linger.ms=hunter2-secret\n")).unwrap();
    let out = run(&bad);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--client-config")
            && stderr.contains("line 8")
            && stderr.contains("linger.ms"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");

    let out = run(&dir.join("missing.properties"));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.properties"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The secured path end to end: the embedded broker requires SASL (`--sasl-users` as a
/// library option here), `keyshift lag` reads a Java `client.properties` with a SCRAM-SHA-512
/// JAAS login whose password comes from the environment, and reports the lag; with a wrong
/// password it fails, saying SCRAM authentication failed, and never prints the password.
#[test]
fn lag_reaches_a_sasl_scram_broker_through_a_client_config_file() {
    use keyshift_kafka::SaslUser;
    let broker = EmbeddedBroker::start_with(BrokerOptions {
        sasl_users: vec![SaslUser::new("auditor", "right-pw-77")],
        ..BrokerOptions::default()
    })
    .expect("broker with SASL");
    let dir = audited_group(&broker, "sasl-config");
    let file = process_support::scram_client_config(&dir, "auditor", "${env:KS_TEST_PW}");
    let run = |password: &str| {
        Command::new(env!("CARGO_BIN_EXE_keyshift"))
            .args(["lag", "--bootstrap-servers", broker.bootstrap_servers()])
            .args(["--group", "auditors", "--json", "--samples", "1"])
            .args(["--timeout-ms", "5000"])
            .arg("--client-config")
            .arg(&file)
            .env("KS_TEST_PW", password)
            .output()
            .unwrap()
    };
    let out = run("right-pw-77");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    let group: Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert_eq!(group["lag"], 3, "{stdout}");

    let out = run("wrong-pw-66");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    eprintln!("wrong password: {stderr}");
    assert!(!out.status.success());
    assert!(stderr.contains("SCRAM"), "{stderr}");
    for secret in ["wrong-pw-66", "right-pw-77"] {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "{stderr}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_input_exits_2_naming_it() {
    let broker = EmbeddedBroker::start().expect("broker");
    broker.create_topic("t", 1).unwrap();
    let out = lag(&[
        "--bootstrap-servers",
        broker.bootstrap_servers(),
        "--group",
        "ghost",
        "--samples",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--group") && stderr.contains("'ghost'"),
        "{stderr}"
    );

    let out = lag(&[
        "--bootstrap-servers",
        broker.bootstrap_servers(),
        "--window",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--window"));
}

#[test]
fn watch_sees_a_rewind() {
    let broker = EmbeddedBroker::start().expect("broker");
    let topic = "audit";
    broker.create_topic(topic, 1).unwrap();
    produce(&broker, topic, &[10], now_ms());
    commit(&broker, "auditors", topic, &[(0, 8)]);

    let mut child = Command::new(env!("CARGO_BIN_EXE_keyshift"))
        .args([
            "lag",
            "--bootstrap-servers",
            broker.bootstrap_servers(),
            "--group",
            "auditors",
            "--watch",
            "--json",
            "--interval",
            "0.2",
            "--window",
            "3",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(partitions(&first)[&0]["lag"], 2);

    commit(&broker, "auditors", topic, &[(0, 3)]);
    let deadline = Instant::now() + PATIENCE;
    let rewound = loop {
        let line = lines.next().expect("output until REWIND").unwrap();
        let g: Value = serde_json::from_str(&line).unwrap();
        let p = partitions(&g)[&0].clone();
        if p["status"] == "REWIND" {
            break p;
        }
        assert!(Instant::now() < deadline, "no REWIND: {line}");
    };
    assert_eq!(rewound["committed_offset"], 3);
    assert_eq!(rewound["lag"], 7);
    child.kill().unwrap();
    child.wait().unwrap();
}

/// A plain HTTP/1.1 GET of /metrics; the body.
fn scrape(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).expect("connect to /metrics");
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    text.split_once("\r\n\r\n")
        .map(|x| x.1.to_owned())
        .unwrap_or_default()
}

/// Samples of an OpenMetrics exposition: `name{labels}` → value.
fn samples(body: &str) -> BTreeMap<String, f64> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

fn scrape_until(
    addr: SocketAddr,
    what: &str,
    ok: impl Fn(&BTreeMap<String, f64>) -> bool,
) -> BTreeMap<String, f64> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let s = samples(&scrape(addr));
        if ok(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "never saw {what}: {s:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

struct Stop(Child);

impl Drop for Stop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn serve_exports_kafka_exporter_names_and_survives_an_outage() {
    let dir = std::env::temp_dir().join(format!("keyshift-lag-serve-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let options = |listen: Option<SocketAddr>, dir: &PathBuf| BrokerOptions {
        listen,
        data_dir: Some(dir.clone()),
        ..BrokerOptions::default()
    };
    let broker = EmbeddedBroker::start_with(options(None, &dir)).expect("broker");
    let broker_addr = broker.addr();
    let topic = "clicks";
    broker.create_topic(topic, 2).unwrap();
    produce(&broker, topic, &[6, 3], now_ms());
    commit(&broker, "analytics", topic, &[(0, 2), (1, 3)]);

    let mut child = Command::new(env!("CARGO_BIN_EXE_keyshift"))
        .args([
            "lag",
            "--bootstrap-servers",
            broker.bootstrap_servers(),
            "--group",
            "analytics",
            "--serve",
            "127.0.0.1:0",
            "--interval",
            "0.2",
            "--timeout-ms",
            "1000",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let _stop = Stop(child);
    let addr: SocketAddr = first
        .split("http://")
        .nth(1)
        .and_then(|s| s.strip_suffix("/metrics\n"))
        .unwrap_or_else(|| panic!("no metrics address in {first:?}"))
        .parse()
        .unwrap();

    let lag0 = r#"kafka_consumergroup_lag{consumergroup="analytics",topic="clicks",partition="0"}"#;
    let s = scrape_until(addr, "the group's lag", |s| s.contains_key(lag0));
    assert_eq!(s[lag0], 4.0);
    assert_eq!(
        s[r#"kafka_consumergroup_lag{consumergroup="analytics",topic="clicks",partition="1"}"#],
        0.0
    );
    assert_eq!(
        s[r#"kafka_consumergroup_lag_sum{consumergroup="analytics",topic="clicks"}"#],
        4.0
    );
    assert_eq!(
        s[r#"kafka_consumergroup_current_offset{consumergroup="analytics",topic="clicks",partition="0"}"#],
        2.0
    );
    assert_eq!(
        s[r#"kafka_topic_partition_current_offset{topic="clicks",partition="0"}"#],
        6.0
    );
    assert_eq!(s[r#"kafka_topic_partitions{topic="clicks"}"#], 2.0);
    assert_eq!(s[r#"keyshift_lag_group_records{group="analytics"}"#], 4.0);
    assert_eq!(
        s[r#"keyshift_lag_group_partitions{group="analytics"}"#],
        2.0
    );
    assert!(s.contains_key(
        r#"keyshift_lag_partition_seconds{group="analytics",topic="clicks",partition="0",source="exact"}"#
    ));
    assert_eq!(s["keyshift_lag_up"], 1.0);

    // Outage: the broker goes away; the exporter says so instead of serving stale lag.
    broker.shutdown();
    let s = scrape_until(addr, "keyshift_lag_up 0", |s| {
        s.get("keyshift_lag_up") == Some(&0.0)
    });
    assert!(s["keyshift_lag_collection_failures_total"] >= 1.0, "{s:?}");
    assert!(!s.contains_key(lag0), "{s:?}");

    // The broker comes back on the same address with the same data: no restart needed.
    let broker = EmbeddedBroker::start_with(options(Some(broker_addr), &dir)).expect("restart");
    let s = scrape_until(addr, "recovery", |s| {
        s.get("keyshift_lag_up") == Some(&1.0) && s.contains_key(lag0)
    });
    assert_eq!(s[lag0], 4.0);
    broker.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}

/// kafka_exporter's conventions for a partition the group never committed (its
/// `kafka_exporter.go`): `kafka_consumergroup_lag` is −1 and left out of `_lag_sum`, the
/// current offset is OffsetFetch's −1 (added to `_current_offset_sum` as it is), while
/// keyshift's own series count such a partition's lag from the log start.
#[test]
fn serve_follows_kafka_exporter_for_partitions_without_a_commit() {
    let broker = EmbeddedBroker::start().expect("broker");
    let topic = "views";
    broker.create_topic(topic, 3).unwrap();
    // Partition 0: 5 records, committed at 2. Partition 1: 4 records, no commit.
    // Partition 2: empty, no commit.
    produce(&broker, topic, &[5, 4, 0], now_ms());
    commit(&broker, "reports", topic, &[(0, 2)]);

    let child = Command::new(env!("CARGO_BIN_EXE_keyshift"))
        .args([
            "lag",
            "--bootstrap-servers",
            broker.bootstrap_servers(),
            "--group",
            "reports",
            "--serve",
            "127.0.0.1:0",
            "--interval",
            "0.2",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stop = Stop(child);
    let mut first = String::new();
    BufReader::new(stop.0.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let addr: SocketAddr = first
        .split("http://")
        .nth(1)
        .and_then(|s| s.strip_suffix("/metrics\n"))
        .unwrap_or_else(|| panic!("no metrics address in {first:?}"))
        .parse()
        .unwrap();

    let series = |name: &str, p: i32| {
        format!(r#"{name}{{consumergroup="reports",topic="views",partition="{p}"}}"#)
    };
    let ours = |p: i32| {
        format!(
            r#"keyshift_lag_partition_records{{group="reports",topic="views",partition="{p}"}}"#
        )
    };
    let s = scrape_until(addr, "all three partitions", |s| {
        (0..3).all(|p| s.contains_key(&series("kafka_consumergroup_lag", p)))
    });
    let lag: Vec<f64> = (0..3)
        .map(|p| s[&series("kafka_consumergroup_lag", p)])
        .collect();
    assert_eq!(lag, [3.0, -1.0, -1.0]);
    let current: Vec<f64> = (0..3)
        .map(|p| s[&series("kafka_consumergroup_current_offset", p)])
        .collect();
    assert_eq!(current, [2.0, -1.0, -1.0]);
    assert_eq!(
        s[r#"kafka_consumergroup_lag_sum{consumergroup="reports",topic="views"}"#],
        3.0
    );
    assert_eq!(
        s[r#"kafka_consumergroup_current_offset_sum{consumergroup="reports",topic="views"}"#],
        0.0
    );
    // keyshift's own: a partition without a commit lags from the log start.
    let own: Vec<f64> = (0..3).map(|p| s[&ours(p)]).collect();
    assert_eq!(own, [3.0, 4.0, 0.0]);
    assert_eq!(s[r#"keyshift_lag_group_records{group="reports"}"#], 7.0);
    drop(stop);
    broker.shutdown();
}
