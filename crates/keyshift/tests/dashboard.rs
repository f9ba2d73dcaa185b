//! `keyshift dashboard` end to end, in a real browser: the embedded broker, a gateway with the
//! keyshift strategy, two workers and the dashboard run as real processes; skewed load goes
//! through the gateway; headless Chromium (driven over the DevTools protocol by
//! `dashboard_support/cdp.py`) opens the page. The DOM is compared with what the processes'
//! own `/metrics` say, bracketing each read between two scrapes so that no timing threshold is
//! needed: counters only grow, so `before ≤ page ≤ after`; once the load has stopped they are
//! equal. Screenshots are saved as artifacts (paths printed).
//!
//! Chromium is required (Debian's `chromium`; `scripts/test.sh` installs it); set
//! `KEYSHIFT_CHROMIUM` to use another binary. Set `KEYSHIFT_DOCS_SCREENSHOTS=1` to also write
//! the screenshots into `docs/img/`.

mod gateway_support;
mod process_support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;

use gateway_support::*;
use process_support::{http_get, spawn_listening, Proc};
use serde_json::{json, Value};

/// Starts `keyshift <args>` and returns it with the http address of its first stdout line.
fn spawn(args: &[&str]) -> (Proc, String) {
    spawn_listening(keyshift().args(args))
}

fn metrics(addr: &str) -> String {
    let (status, body) = http_get(addr, "/metrics");
    assert!(status.contains("200"), "{addr}/metrics: {status}");
    body
}

/// `name{label="v"} x` → v → x, for one label.
fn by_label(text: &str, name: &str, label: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for (series, value) in parse_metrics(text) {
        if let Some(rest) = series.strip_prefix(&format!("{name}{{{label}=\"")) {
            if let Some(v) = rest.strip_suffix("\"}") {
                out.insert(v.to_owned(), value);
            }
        }
    }
    out
}

fn value(text: &str, series: &str) -> f64 {
    *parse_metrics(text)
        .get(series)
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

/// Headless Chromium behind the DevTools driver.
struct Browser {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Browser {
    fn open(url: &str, width: u32, height: u32) -> Self {
        let chromium = std::env::var("KEYSHIFT_CHROMIUM").unwrap_or_else(|_| "chromium".into());
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {chromium}")])
            .output()
            .expect("sh");
        assert!(
            found.status.success(),
            "{chromium} not found: install Debian's chromium (scripts/test.sh does) or set \
             KEYSHIFT_CHROMIUM"
        );
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dashboard_support/cdp.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args([&chromium, url, &width.to_string(), &height.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs the DevTools driver");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut b = Browser {
            child,
            stdin,
            stdout,
        };
        let first = b.read();
        assert!(
            first.get("loaded_ms").is_some(),
            "page did not load: {first}"
        );
        println!("page loaded in {} ms (load event)", first["loaded_ms"]);
        b
    }

    fn read(&mut self) -> Value {
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("driver answers");
        serde_json::from_str(&line).unwrap_or_else(|_| panic!("driver said {line:?}"))
    }

    fn cmd(&mut self, c: Value) -> Value {
        writeln!(self.stdin, "{c}").unwrap();
        self.stdin.flush().unwrap();
        let v = self.read();
        assert!(v.get("error").is_none(), "{c}: {v}");
        v
    }

    fn eval(&mut self, expr: &str) -> Value {
        self.cmd(json!({"cmd": "eval", "expr": expr}))["value"].clone()
    }

    fn seq(&mut self) -> u64 {
        self.eval("Number(document.documentElement.dataset.seq || 0)")
            .as_u64()
            .unwrap()
    }

    /// Waits (bounded) until the page has applied two more updates than now: whatever the
    /// page shows afterwards was read by the dashboard after this call.
    fn two_updates(&mut self) {
        let target = self.seq() + 2;
        let deadline = Instant::now() + PATIENCE;
        while self.seq() < target {
            assert!(Instant::now() < deadline, "the page stopped updating");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    fn errors(&mut self) -> Vec<Value> {
        self.cmd(json!({"cmd": "errors"}))["errors"]
            .as_array()
            .unwrap()
            .clone()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "{}", json!({"cmd": "quit"}));
        let _ = self.child.wait();
    }
}

/// Partition → produced records as the page shows them.
fn page_produced(b: &mut Browser) -> BTreeMap<String, f64> {
    let v = b.eval(
        "Object.fromEntries([...document.querySelectorAll('tr.partition')]\
         .map(r => [r.dataset.partition, Number(r.dataset.produced)]))",
    );
    serde_json::from_value(v).unwrap()
}

fn screenshot(b: &mut Browser, name: &str, width: u32, height: u32) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    let r = b.cmd(json!({"cmd": "screenshot", "path": path, "width": width, "height": height}));
    assert!(r["bytes"].as_u64().unwrap() > 1000, "{r}");
    println!("screenshot: {}", path.display());
    if std::env::var_os("KEYSHIFT_DOCS_SCREENSHOTS").is_some() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/img");
        std::fs::create_dir_all(&docs).unwrap();
        std::fs::copy(&path, docs.join(name)).unwrap();
    }
    path
}

#[test]
fn page_shows_what_the_processes_report_and_the_moves() {
    let topic = "dash";
    let iter = 6000u64;
    let broker = broker_with_topic(topic, 6);
    let bootstrap = broker.bootstrap_servers().to_owned();
    let gateway = GatewayProcess::start(
        &bootstrap,
        topic,
        &["--strategy", "keyshift", "--hot-keys", "8"],
    );
    let gw = gateway.base.trim_start_matches("http://").to_owned();
    let worker = || {
        spawn(&[
            "worker",
            "--bootstrap-servers",
            &bootstrap,
            "--topic",
            topic,
            "--group",
            "dash-workers",
            "--metrics-listen",
            "127.0.0.1:0",
        ])
    };
    let (_w1, w1) = worker();
    let (_w2, w2) = worker();
    // A target that refuses connections: the page must show it down and keep the rest.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let scrape = |a: &str| format!("http://{a}/metrics");
    let (_dash, dash) = spawn(&[
        "dashboard",
        "--bootstrap-servers",
        &bootstrap,
        "--topic",
        topic,
        "--group",
        "dash-workers",
        "--scrape",
        &scrape(&gw),
        "--scrape",
        &scrape(&w1),
        "--scrape",
        &scrape(&w2),
        "--scrape",
        &scrape(&dead),
        "--listen",
        "127.0.0.1:0",
    ]);

    // /healthz names the dead target and says the rest is up.
    let deadline = Instant::now() + PATIENCE;
    let health = loop {
        let (_, body) = http_get(&dash, "/healthz");
        let v: Value = serde_json::from_str(&body).expect("healthz is JSON");
        let up = |src: &str| {
            v["sources"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["source"] == src)
                .map(|s| s["up"] == true)
        };
        if up("kafka") == Some(true) && up(&scrape(&w2)) == Some(true) {
            break v;
        }
        assert!(Instant::now() < deadline, "dashboard never saw Kafka: {v}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(health["status"], "degraded", "{health}");
    let dead_source = health["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["source"] == scrape(&dead).as_str())
        .unwrap();
    assert_eq!(dead_source["up"], false);
    assert!(
        dead_source["error"]
            .as_str()
            .unwrap()
            .contains("unreachable"),
        "{dead_source}"
    );

    // Skewed load: few keys, steep Zipf, so the keyshift strategy moves hot keys.
    let mut loadgen = Proc(
        keyshift()
            .args(["loadgen", "--url", &format!("{}/new", gateway.base)])
            .args(["--rate", "600", "--iter", &iter.to_string(), "--keys", "60"])
            .args(["--zipf-s", "1.6", "--seed", "7"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("loadgen starts"),
    );

    let mut b = Browser::open(&format!("http://{dash}/"), 1280, 800);

    // During the load: every partition's produced count on the page lies between the
    // gateway's count before and after the page's update.
    let before = by_label(
        &metrics(&gw),
        "keyshift_producer_partition_records_total",
        "partition",
    );
    b.two_updates();
    let shown = page_produced(&mut b);
    let after = by_label(
        &metrics(&gw),
        "keyshift_producer_partition_records_total",
        "partition",
    );
    assert_eq!(shown.len(), 6, "{shown:?}");
    for (p, v) in &shown {
        assert!(
            before[p] <= *v && *v <= after[p],
            "partition {p}: page {v}, /metrics {} then {}",
            before[p],
            after[p]
        );
    }

    // A move appears on the timeline (bounded wait, no threshold).
    let deadline = Instant::now() + PATIENCE;
    while b
        .eval("document.querySelectorAll('tr.move').length")
        .as_u64()
        .unwrap()
        == 0
    {
        assert!(Instant::now() < deadline, "no move on the timeline");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    screenshot(&mut b, "dashboard-1280x800.png", 1280, 800);
    screenshot(&mut b, "dashboard-390x844.png", 390, 844);

    // After the load: equal, exactly.
    let status = loadgen.0.wait().expect("loadgen exits");
    assert!(status.success(), "loadgen failed: {status}");
    let deadline = Instant::now() + PATIENCE;
    while value(&metrics(&gw), "keyshift_gateway_records_total") < iter as f64 {
        assert!(Instant::now() < deadline, "gateway did not ack everything");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let a = metrics(&gw);
    b.two_updates();
    // The timeline comes from fence records the dashboard tails from Kafka, asynchronously:
    // wait (bounded) until it has read as many as the gateway wrote.
    let wrote = value(&a, "keyshift_producer_migrations_total");
    let deadline = Instant::now() + PATIENCE;
    while (b
        .eval("document.querySelectorAll('tr.move').length")
        .as_u64()
        .unwrap() as f64)
        < wrote
    {
        assert!(
            Instant::now() < deadline,
            "the timeline never showed the gateway's {wrote} moves"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let produced = page_produced(&mut b);
    let hot: Vec<(String, f64, f64)> = serde_json::from_value(b.eval(
        "[...document.querySelectorAll('tr.hotkey')]\
         .map(r => [r.dataset.key, Number(r.dataset.rate), Number(r.dataset.records)])",
    ))
    .unwrap();
    let moves: Vec<(String, String, String)> = serde_json::from_value(b.eval(
        "[...document.querySelectorAll('tr.move')]\
         .map(r => [r.dataset.key, r.dataset.from, r.dataset.to])",
    ))
    .unwrap();
    let z = metrics(&gw);
    let partitions = by_label(&a, "keyshift_producer_partition_records_total", "partition");
    assert_eq!(
        produced, partitions,
        "page vs /metrics per partition after the load"
    );
    assert_eq!(produced.values().sum::<f64>(), iter as f64);
    // Hot keys: the same keys and record counts; decaying rates between the two scrapes
    // (0.005: the page shows rates rounded to two decimals).
    let rates_a = by_label(&a, "keyshift_gateway_hot_key_rate", "key");
    let rates_z = by_label(&z, "keyshift_gateway_hot_key_rate", "key");
    let records = by_label(&a, "keyshift_gateway_hot_key_records", "key");
    assert_eq!(hot.len(), rates_a.len(), "{hot:?} vs {rates_a:?}");
    assert!(!hot.is_empty());
    for (key, rate, recs) in &hot {
        assert_eq!(records[key], *recs, "records of {key}");
        assert!(
            rates_z[key] - 0.005 <= *rate && *rate <= rates_a[key] + 0.005,
            "rate of {key}: page {rate}, /metrics {} then {}",
            rates_a[key],
            rates_z[key]
        );
    }
    // The timeline has one row per completed migration, each to another partition.
    assert_eq!(value(&z, "keyshift_producer_fence_failures_total"), 0.0);
    let migrations = value(&z, "keyshift_producer_migrations_total");
    assert!(migrations > 0.0, "the skewed load moved no key");
    assert_eq!(moves.len() as f64, migrations, "{moves:?}");
    for (key, from, to) in &moves {
        assert_ne!(from, to, "move of {key}");
        assert!(to.parse::<u32>().unwrap() < 6, "move of {key} to {to}");
    }
    // The dead target is shown down, the live ones up.
    let pills: BTreeMap<String, String> = serde_json::from_value(b.eval(
        "Object.fromEntries([...document.querySelectorAll('.pill')]\
         .map(p => [p.dataset.source, p.dataset.up]))",
    ))
    .unwrap();
    assert_eq!(
        pills
            .get(&format!("unknown {}", scrape(&dead)))
            .map(String::as_str),
        Some("0"),
        "{pills:?}"
    );
    assert_eq!(
        pills
            .get(&format!("worker {}", scrape(&w1)))
            .map(String::as_str),
        Some("1"),
        "{pills:?}"
    );
    assert_eq!(
        pills.get("kafka").map(String::as_str),
        Some("1"),
        "{pills:?}"
    );

    screenshot(&mut b, "dashboard-1280x800-after.png", 1280, 800);
    assert_eq!(b.errors(), Vec::<Value>::new(), "console errors");
    assert_eq!(b.eval("window.__errors.length"), json!(0));

    // Negative control: the error collection does see an error thrown on the page.
    b.eval("setTimeout(() => { throw new Error('negative control') }, 0); 1");
    b.two_updates();
    let errors = b.errors();
    assert!(
        errors
            .iter()
            .any(|e| e.as_str().unwrap().contains("negative control")),
        "{errors:?}"
    );
    // The update stream's size, as the dashboard measured it.
    let own = metrics(&dash);
    println!(
        "one update: {} bytes",
        value(&own, "keyshift_dashboard_update_bytes")
    );
}
