//! `deploy/grafana/keyshift.json` queries only metrics the binaries really export.
//!
//! The exported names come from the real `/metrics` of running processes — a proxy in front
//! of the embedded broker, a gateway and a worker going through it, `keyshift lag --serve` and
//! `keyshift autoscale --serve` — after some skewed load, so labelled families have series.
//! Every PromQL expression of the dashboard is tokenised and each metric name in it must be
//! among them. The scrape is repeated (bounded) until every name has shown up, so a metric that
//! only appears after traffic is waited for, and a name no binary exports fails with the panel
//! that uses it.

mod gateway_support;
mod process_support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use gateway_support::*;
use process_support::{http_addr, http_get, spawn_listening, Proc};
use serde_json::Value;

/// Every (panel title, expression) of a Grafana dashboard, rows' nested panels included.
fn expressions(dashboard: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack: Vec<&Value> = dashboard["panels"].as_array().unwrap().iter().collect();
    while let Some(p) = stack.pop() {
        if let Some(inner) = p["panels"].as_array() {
            stack.extend(inner);
        }
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().expect("every target has an expr");
            out.push((
                p["title"].as_str().unwrap_or("?").to_owned(),
                expr.to_owned(),
            ));
        }
    }
    out
}

/// The metric names a PromQL expression reads: identifiers that are not functions or
/// aggregations (followed by `(`), not keywords, not label names inside `{…}` or a
/// `by/without/on/ignoring (…)` list, not durations inside `[…]`, not strings or numbers.
fn metric_names(expr: &str) -> Vec<String> {
    const KEYWORDS: [&str; 6] = ["bool", "and", "or", "unless", "offset", "inf"];
    const LISTS: [&str; 6] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let mut names = Vec::new();
    let mut i = 0;
    let skip_to = |i: usize, close: char| {
        let mut j = i;
        let mut in_string = false;
        while j < chars.len() {
            match chars[j] {
                '"' => in_string = !in_string,
                c if c == close && !in_string => return j + 1,
                _ => {}
            }
            j += 1;
        }
        j
    };
    while i < chars.len() {
        let c = chars[i];
        if c == '{' {
            i = skip_to(i, '}');
        } else if c == '[' {
            i = skip_to(i, ']');
        } else if c == '"' {
            i = skip_to(i + 1, '"');
        } else if c.is_ascii_digit() || c == '.' {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut j = i;
            while j < chars.len() && chars[j].is_whitespace() {
                j += 1;
            }
            // `sum by (x) (…)`: an aggregation whose grouping comes first.
            let rest: String = chars[j..].iter().take(8).collect();
            let grouped = ["by", "without"].iter().any(|k| {
                rest.strip_prefix(k)
                    .is_some_and(|r| r.starts_with([' ', '(']))
            });
            let called = j < chars.len() && (chars[j] == '(' || grouped);
            if LISTS.contains(&word.as_str()) {
                if called {
                    i = skip_to(j, ')');
                }
            } else if !called && !KEYWORDS.contains(&word.to_lowercase().as_str()) {
                names.push(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

/// Names a text exposition exports: every sample's name and every `# TYPE` name.
fn exported_names(text: &str, into: &mut BTreeSet<String>) {
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some(name) = rest.split_whitespace().next() {
                into.insert(name.to_owned());
            }
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            into.insert(line[..end].to_owned());
        }
    }
}

/// (panel, name) pairs of `exprs` whose name is not in `exported`.
fn unknown(exprs: &[(String, String)], exported: &BTreeSet<String>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (panel, expr) in exprs {
        for name in metric_names(expr) {
            if !exported.contains(&name) {
                out.push((panel.clone(), name));
            }
        }
    }
    out
}

#[test]
fn the_tokeniser_finds_metric_names_only() {
    assert_eq!(
        metric_names(
            "histogram_quantile(0.99, sum by (le, api) (rate(a_bucket{x=\"y}\"}[5m]))) \
             / on (job) group_left (foo) b offset 5m > bool 1e3 and c:recorded"
        ),
        vec!["a_bucket", "b", "c:recorded"]
    );
    // The checker's negative control: a name nobody exports is reported with its panel.
    let exported: BTreeSet<String> = ["a_total".to_owned()].into();
    let exprs = vec![
        ("ok".to_owned(), "sum(rate(a_total[1m]))".to_owned()),
        (
            "bad".to_owned(),
            "sum by (x) (rate(a_typo_total[1m]))".to_owned(),
        ),
    ];
    assert_eq!(
        unknown(&exprs, &exported),
        vec![("bad".to_owned(), "a_typo_total".to_owned())]
    );
}

/// Starts `keyshift <args>` and returns it with the http address of its first stdout line.
fn spawn(args: &[&str]) -> (Proc, String) {
    spawn_listening(keyshift().args(args))
}

#[test]
fn every_grafana_query_names_an_exported_metric() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/grafana/keyshift.json");
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("the dashboard exists"))
            .expect("the dashboard is JSON");
    let exprs = expressions(&dashboard);
    assert!(exprs.len() >= 10, "{exprs:?}");

    let topic = "graf";
    let group = "graf-workers";
    let broker = broker_with_topic(topic, 4);
    let upstream = broker.bootstrap_servers().to_owned();
    // The proxy prints its Kafka address first, then the metrics address after "http://".
    let mut proxy = keyshift()
        .args(["proxy", "--upstream", &upstream])
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("proxy starts");
    let mut line = String::new();
    let mut out = BufReader::new(proxy.stdout.take().unwrap());
    out.read_line(&mut line).unwrap();
    assert!(!line.is_empty(), "proxy exited: {:?}", proxy.wait());
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    let proxy_metrics = http_addr(&line);
    let proxy_kafka = line
        .split_whitespace()
        .nth(2)
        .expect("proxy address")
        .to_owned();
    let _proxy = Proc(proxy);
    let gateway = GatewayProcess::start(&proxy_kafka, topic, &["--strategy", "keyshift"]);
    let (_worker, worker) = spawn(&[
        "worker",
        "--bootstrap-servers",
        &proxy_kafka,
        "--topic",
        topic,
        "--group",
        group,
        "--metrics-listen",
        "127.0.0.1:0",
    ]);
    // The autoscaler refuses a group the cluster does not know yet: wait until the worker
    // has joined it (it owns partitions).
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (_, body) = http_get(&worker, "/metrics");
        if parse_metrics(&body)
            .get("keyshift_worker_owned_partitions")
            .is_some_and(|&n| n > 0.0)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the worker joined no group within {PATIENCE:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Owning partitions is not enough: a broker that does not answer DescribeGroups (the
    // embedded one) shows a group only once it has committed an offset. A first small batch
    // makes the worker commit, so the autoscaler's existence check cannot race it.
    let status = keyshift()
        .args(["loadgen", "--url", &format!("{}/new", gateway.base)])
        .args(["--rate", "200", "--iter", "40", "--keys", "20"])
        .stdout(Stdio::null())
        .status()
        .expect("loadgen runs");
    assert!(status.success());
    let deadline = Instant::now() + PATIENCE;
    while broker
        .admin()
        .committed_offsets(group, topic, 4)
        .expect("committed offsets")
        .iter()
        .all(Option::is_none)
    {
        assert!(
            Instant::now() < deadline,
            "the worker committed nothing within {PATIENCE:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_lag, lag) = spawn(&[
        "lag",
        "--bootstrap-servers",
        &upstream,
        "--group",
        group,
        "--serve",
        "127.0.0.1:0",
    ]);
    let (_scaler, scaler) = spawn(&[
        "autoscale",
        "--bootstrap-servers",
        &upstream,
        "--group",
        group,
        "--replicas",
        "1",
        "--interval",
        "0.5",
        "--serve",
        "127.0.0.1:0",
    ]);
    let status = keyshift()
        .args(["loadgen", "--url", &format!("{}/new", gateway.base)])
        .args([
            "--rate", "500", "--iter", "1500", "--keys", "20", "--zipf-s", "1.5",
        ])
        .stdout(Stdio::null())
        .status()
        .expect("loadgen runs");
    assert!(status.success());

    let gw = gateway.base.trim_start_matches("http://").to_owned();
    let targets = [&gw, &worker, &proxy_metrics, &lag, &scaler];
    let deadline = Instant::now() + PATIENCE;
    let (exported, missing) = loop {
        let mut exported = BTreeSet::new();
        for t in targets {
            let (status, body) = http_get(t, "/metrics");
            assert!(status.contains("200"), "{t}: {status}");
            exported_names(&body, &mut exported);
        }
        let missing = unknown(&exprs, &exported);
        if missing.is_empty() || Instant::now() > deadline {
            break (exported, missing);
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        missing.is_empty(),
        "queries name metrics no binary exports (panel, metric): {missing:?}\nexported: {exported:?}"
    );
    // And the check bites on the real set: a misspelt name is caught.
    let mut typo = exprs.clone();
    typo[0].1 = typo[0].1.replace("keyshift_", "keyshift_typo_");
    assert!(!unknown(&typo, &exported).is_empty(), "{}", typo[0].1);
}
