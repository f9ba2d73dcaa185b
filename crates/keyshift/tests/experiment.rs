//! `keyshift experiment` through the real binary on the embedded broker: a small run of hash
//! and keyshift writes the required JSON and an HTML page with plots, loses nothing and keeps
//! per-key order across keyshift's fenced migrations, and serves the live dashboard while it
//! runs (`--dashboard`: the page and `/api/state` follow each run's topic over real HTTP);
//! bad flags exit 2 naming the flag.

mod process_support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::{mpsc, Mutex, MutexGuard};

use process_support::{http_addr, try_http_get, Proc};
use serde_json::Value;

/// Experiments of this file run one at a time. Each runs a broker, producers and workers; the
/// tests of one binary run in parallel, and two experiments at once on a 2-core CI machine
/// (debug build) slowed produce round trips past a second, so that coordinated moves timed out
/// and the coordinated run's checks failed for want of load headroom, not of correctness.
static ONE_EXPERIMENT: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> MutexGuard<'static, ()> {
    // A failed test poisons the lock; the next one still runs alone.
    ONE_EXPERIMENT.lock().unwrap_or_else(|p| p.into_inner())
}

fn keyshift(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keyshift"))
        .args(args)
        .output()
        .expect("the keyshift binary runs")
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("keyshift-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Fields the issue requires in every `strategies[]` object.
const REQUIRED: &[&str] = &[
    "strategy",
    "produced",
    "consumed",
    "lost",
    "duplicates",
    "order_violations",
    "migrations",
    "throughput_rps",
    "p50_ms",
    "p99_ms",
    "imbalance_max_over_mean",
];

fn read_json(path: &Path) -> Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).expect("the --json file is one JSON value")
}

/// What the live dashboard showed of one run, seen through `/api/state` and `/`.
#[derive(Debug, Default)]
struct Seen {
    /// The topic the snapshot named while the run's label was shown.
    topics: Vec<String>,
    /// The highest partition rate among those snapshots, records/s.
    max_rate: f64,
    /// Whether the page itself (`GET /`) named the run and its topic while a rate was shown.
    page: bool,
}

/// Runs `keyshift <args>` with `--dashboard` on a free port and, until it exits, reads the
/// dashboard's state and page over HTTP, keyed by the run label the page shows.
fn experiment_watched(args: &[&str]) -> (Output, BTreeMap<String, Seen>) {
    let mut child = Proc(
        Command::new(env!("CARGO_BIN_EXE_keyshift"))
            .args(args)
            .args(["--dashboard", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the keyshift binary runs"),
    );
    let mut stdout = child.0.stdout.take().unwrap();
    let out_thread = std::thread::spawn(move || {
        let mut text = Vec::new();
        stdout.read_to_end(&mut text).unwrap();
        text
    });
    let stderr = BufReader::new(child.0.stderr.take().unwrap());
    let (addr_tx, addr_rx) = mpsc::channel();
    let err_thread = std::thread::spawn(move || {
        let mut text = Vec::new();
        for line in stderr.lines() {
            let line = line.unwrap();
            if line.starts_with("live dashboard: http://") {
                let _ = addr_tx.send(http_addr(&line));
            }
            text.extend_from_slice(line.as_bytes());
            text.push(b'\n');
        }
        text
    });
    // Ends with an error if stderr closes without the banner (the process failed).
    let addr = addr_rx.recv().ok();
    let mut seen: BTreeMap<String, Seen> = BTreeMap::new();
    while let Some(addr) = &addr {
        if child.0.try_wait().unwrap().is_some() {
            break;
        }
        // The dashboard stops before the process exits (after the last run): a refused or
        // cut connection ends the watch.
        let Ok((status, body)) = try_http_get(addr, "/api/state") else {
            break;
        };
        if !status.contains("200") {
            break;
        }
        let v: Value = serde_json::from_str(&body).expect("/api/state is JSON");
        let snap = &v["snapshot"];
        let (Some(run), Some(topic)) = (snap["run"].as_str(), snap["topic"].as_str()) else {
            std::thread::sleep(std::time::Duration::from_millis(200));
            continue;
        };
        let rate = snap["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["rate"].as_f64())
            .fold(0.0, f64::max);
        let entry = seen.entry(run.to_owned()).or_default();
        if !entry.topics.iter().any(|t| t == topic) {
            entry.topics.push(topic.to_owned());
        }
        entry.max_rate = entry.max_rate.max(rate);
        if rate > 0.0 && !entry.page {
            if let Ok((status, html)) = try_http_get(addr, "/") {
                entry.page = status.contains("200") && html.contains(run) && html.contains(topic);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let status = child.0.wait().unwrap();
    let output = Output {
        status,
        stdout: out_thread.join().unwrap(),
        stderr: err_thread.join().unwrap(),
    };
    assert!(
        addr.is_some(),
        "no 'live dashboard: http://...' line on stderr:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    (output, seen)
}

#[test]
fn small_run_of_hash_and_keyshift_loses_nothing_and_keeps_order() {
    let _alone = one_at_a_time();
    let dir = temp_dir("experiment");
    let json = dir.join("report.json");
    let (out, seen) = experiment_watched(&[
        "experiment",
        "--strategies",
        "hash,keyshift",
        "--partitions",
        "4",
        "--consumers",
        "4",
        "--records",
        "1500",
        "--rate",
        "300",
        "--utilization",
        "0.5",
        // 40 keys: skewed enough that hash overloads a partition (max/bound 1.30) and
        // keyshift moves keys through fences early in a short run (4 moves in each of 3 runs);
        // with the default 2 800 keys the cost-aware strategy finds little to gain and moved
        // one key or none.
        "--keys",
        "40",
        "--keyshift-warmup",
        "1",
        "--keyshift-rebalance-interval",
        "0.5",
        "--json",
        json.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}, stderr:\n{stderr}",
        out.status
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("latency p99 (ms)"),
        "table missing:\n{stdout}"
    );
    assert!(stdout.contains("checks: 0 lost records"), "{stdout}");

    let v = read_json(&json);
    let runs = v["strategies"].as_array().expect("a strategies array");
    let names: Vec<&str> = runs
        .iter()
        .map(|r| r["strategy"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["hash", "keyshift"]);
    for r in runs {
        for field in REQUIRED {
            assert!(!r[*field].is_null(), "{} lacks {field}: {r}", r["strategy"]);
        }
        let produced = r["produced"].as_u64().unwrap();
        assert_eq!(produced, 1500, "every record acknowledged: {r}");
        assert_eq!(r["consumed"].as_u64().unwrap(), produced, "{r}");
        assert_eq!(r["lost"].as_u64().unwrap(), 0, "{r}");
        assert_eq!(r["order_violations"].as_u64().unwrap(), 0, "{r}");
        if r["preserves_order"].as_bool().unwrap() {
            assert_eq!(r["concurrent_key_processing"].as_u64().unwrap(), 0, "{r}");
        }
        assert!(r["p99_ms"].as_f64().unwrap() > 0.0, "{r}");
        let load: u64 = r["partition_load"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap())
            .sum();
        // 20 % warm-up left out of the load figures.
        assert_eq!(load, 1200, "{r}");
    }
    assert_eq!(
        runs[0]["migrations"].as_u64().unwrap(),
        0,
        "hash never moves a key"
    );
    let ks = &runs[1];
    assert!(
        ks["migrations"].as_u64().unwrap() > 0,
        "keyshift should move hot keys off the busiest of 4 partitions, so that order is \
         checked across fenced migrations: {ks}"
    );

    let html = std::fs::read_to_string(dir.join("report.html")).expect("HTML next to the JSON");
    assert!(html.matches("<svg").count() >= 3, "three plots");
    assert!(html.contains("hash") && html.contains("keyshift"));

    // The live dashboard followed each run: while the run's label was shown, the snapshot
    // named that run's topic (and no other), its partitions were being appended to, and the
    // page itself showed the run and the topic.
    for (i, r) in runs.iter().enumerate() {
        let label = format!("run {}/2: {}", i + 1, r["strategy"].as_str().unwrap());
        let s = seen
            .get(&label)
            .unwrap_or_else(|| panic!("the dashboard never showed '{label}': {seen:?}"));
        assert_eq!(
            s.topics,
            [r["topic"].as_str().unwrap()],
            "{label}: {seen:?}"
        );
        assert!(
            s.max_rate > 0.0,
            "{label}: no partition rate above 0 while the load ran: {seen:?}"
        );
        assert!(
            s.page,
            "{label}: GET / did not name the run and its topic: {seen:?}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A short skewed run of keyshift alone (5 s of load) with `extra` flags, its JSON written to `dir`: exit
/// status, stdout and the report.
fn keyshift_run(dir: &Path, strategy: &str, extra: &[&str]) -> (Output, Value) {
    let json = dir.join("report.json");
    let mut args = vec![
        "experiment",
        "--strategies",
        strategy,
        "--partitions",
        "4",
        "--consumers",
        "4",
        // 450 rec/s: at 900 a debug-build broker took seconds to acknowledge, so coordinated
        // moves timed out (and a decider lost its lease), and keys never went idle long enough
        // to switch producers in the negative control. A lower confidence and cooldown let
        // each producer (or the decider) move keys at this load.
        "--records",
        "4500",
        "--rate",
        "450",
        "--utilization",
        "0.5",
        // As in the run above: few keys, so keys move early in a short run.
        "--keys",
        "40",
        "--keyshift-warmup",
        "1",
        "--keyshift-rebalance-interval",
        "0.5",
        "--keyshift-confidence",
        "0.5",
        "--keyshift-cooldown",
        "2",
        "--no-html",
        "--json",
        json.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let out = keyshift(&args);
    let v = read_json(&json);
    (out, v)
}

/// `--producers 3`: the load spread over three producers in the process, coordinated (one
/// decider; every producer holds a moved key and fences it on the old partition). The report
/// is the same table plus the coordination figures, and the checker that sees every worker
/// finds per-key order and serial processing intact across the moves. The negative control:
/// three producers with durable routes, each moving keys on its own, break per-key order and
/// the run exits 1 saying so.
#[test]
fn three_coordinated_producers_keep_order_and_report_coordination() {
    let _alone = one_at_a_time();
    let dir = temp_dir("experiment-producers");
    let (out, v) = keyshift_run(&dir, "keyshift", &["--producers", "3"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exit {:?}, stdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    assert!(stdout.contains("3 coordinated producers"), "{stdout}");
    assert!(stdout.contains("key hold p50 / p99 (ms)"), "{stdout}");
    assert_eq!(v["setup"]["producers"], 3, "{v}");
    assert_eq!(v["setup"]["routes"], "coordinated", "{v}");
    let r = &v["strategies"][0];
    for field in REQUIRED {
        assert!(!r[*field].is_null(), "lacks {field}: {r}");
    }
    assert_eq!(r["produced"], 4500, "{r}");
    assert_eq!(r["consumed"], 4500, "{r}");
    assert_eq!(r["order_violations"], 0, "{r}");
    assert_eq!(r["concurrent_key_processing"], 0, "{r}");
    let c = &r["coordination"];
    assert_eq!(c["producers"], 3, "{r}");
    assert_eq!(c["decider_claims"], 1, "one decider for the whole run: {r}");
    let committed = c["moves_committed"].as_u64().unwrap();
    assert!(
        committed > 0,
        "the decider should move hot keys off the busiest of 4 partitions, so that order is \
         checked across coordinated moves: {r}"
    );
    assert_eq!(r["migrations"].as_u64().unwrap(), committed, "{r}");
    // Every producer writes its own fence of every committed move.
    assert!(r["fences"].as_u64().unwrap() >= 3 * committed, "{r}");
    assert!(c["hold_count"].as_u64().unwrap() >= committed, "{r}");
    assert!(c["hold_p50_ms"].as_f64().unwrap() > 0.0, "{r}");

    // The negative control: three producers moving keys on their own. Today's `keyshift`
    // settles after a handful of moves, and in about one run of five none of the producers'
    // independent moves happened to split a key while its records interleaved; so up to three
    // runs, of which one must show the break (each breaking run also exits 1 saying so).
    let mut broken = None;
    for attempt in 1..=3 {
        let (out, v) = keyshift_run(
            &dir,
            "keyshift",
            &["--producers", "3", "--routes", "durable"],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("move keys each on their own"), "{stderr}");
        let r = &v["strategies"][0];
        assert!(r["coordination"].is_null(), "{r}");
        assert_eq!(r["consumed"], 4500, "nothing is lost, only order: {r}");
        let problems = r["order_violations"].as_u64().unwrap()
            + r["concurrent_key_processing"].as_u64().unwrap();
        eprintln!("negative control, run {attempt}: {problems} violations + concurrent");
        if problems > 0 {
            assert_eq!(out.status.code(), Some(1), "{stderr}");
            assert!(stderr.contains("correctness problems"), "{stderr}");
            broken = Some(problems);
            break;
        }
    }
    assert!(
        broken.is_some(),
        "three producers moving keys on their own should break per-key order"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 13's acceptance: skewed load with a backlog on the workers, spread over two
/// producers, the partitions keys are homed on grown 8 → 16 half-way through. Kafka's
/// partitioner (`hash`, unfenced, each producer on its own) lets a remapped key's new records
/// overtake its backlog on the old partition: order violations. keyshift's producers grow
/// together through their control log (one asks, each writes its own epoch fences): every key
/// stays in order, nothing is lost, only keys whose home changed are held and parked, and the
/// report carries the park time the growth caused. (One producer with durable routes is
/// `gateway_routes.rs`'s expand test.)
#[test]
fn growing_8_to_16_partitions_keeps_order_with_epoch_fences_and_breaks_it_without() {
    let _alone = one_at_a_time();
    let dir = temp_dir("experiment-grow");
    let json = dir.join("report.json");
    let out = keyshift(&[
        "experiment",
        "--strategies",
        "hash,keyshift",
        "--partitions",
        "8",
        "--consumers",
        "8",
        "--producers",
        "2",
        "--grow-at",
        "50%",
        "--grow-to",
        "16",
        // A hot partition with a backlog when the topic grows: 200 skewed keys at 0.9.
        "--records",
        "3000",
        "--rate",
        "300",
        "--utilization",
        "0.9",
        "--keys",
        "200",
        "--no-html",
        "--json",
        json.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stderr.contains("growing to 16 at 50 %"), "{stderr}");
    assert!(stdout.contains("growth: park p99 (ms)"), "{stdout}");
    let v = read_json(&json);
    assert_eq!(v["setup"]["routes"], "coordinated", "the default: {v}");
    let (hash, ks) = (&v["strategies"][0], &v["strategies"][1]);
    for r in [hash, ks] {
        assert_eq!(r["produced"], 3000, "{r}");
        assert_eq!(r["consumed"], 3000, "nothing lost: {r}");
        assert_eq!(r["partition_load"].as_array().unwrap().len(), 16, "{r}");
        let g = &r["growth"];
        assert_eq!(
            (g["from"].as_u64(), g["to"].as_u64()),
            (Some(8), Some(16)),
            "{r}"
        );
    }
    // keyshift: one epoch fence per old partition, 0 violations, remapped keys parked.
    let g = &ks["growth"];
    assert_eq!(g["fenced"], true, "{ks}");
    assert_eq!(
        g["epoch_fences"], 8,
        "the asking producer's, one per old partition: {ks}"
    );
    assert_eq!(ks["order_violations"], 0, "{ks}");
    assert_eq!(ks["concurrent_key_processing"], 0, "{ks}");
    assert!(
        g["parked_records"].as_u64().unwrap() > 0,
        "remapped keys waited: {ks}"
    );
    assert_eq!(g["unchanged_keys_parked"], 0, "{ks}");
    // hash: the same growth as Kafka's partitioner does it breaks order (the test can fail).
    assert_eq!(hash["growth"]["fenced"], false, "{hash}");
    assert_eq!(hash["growth"]["epoch_fences"], 0, "{hash}");
    let broken = hash["order_violations"].as_u64().unwrap();
    eprintln!(
        "hash: {broken} order violations; keyshift: growth parked {} records, p99 {} ms",
        g["parked_records"], g["park_p99_ms"]
    );
    assert!(
        broken > 0,
        "an unfenced growth under a backlog breaks order: {hash}"
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "hash's violations are reported: {stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn dashboard_address_in_use_exits_2_naming_the_flag_before_running() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    for (value, why) in [(addr.as_str(), "in use"), ("localhost:nope", "unparsable")] {
        let out = keyshift(&["experiment", "--no-html", "--dashboard", value]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{why}: {stderr}");
        assert!(stderr.contains("--dashboard"), "{why}: {stderr}");
        assert!(
            !stderr.contains("starting the embedded broker"),
            "{why}: the experiment must not start: {stderr}"
        );
    }
}

#[test]
fn bad_flags_exit_2_naming_the_flag() {
    for (args, flag) in [
        (&["--rate", "0"][..], "--rate"),
        (&["--consumers", "11"][..], "--consumers"),
        (&["--strategies", "hash,nope"][..], "--strategies"),
        (&["--utilization", "75"][..], "--utilization"),
        (&["--topic-prefix", "bad name"][..], "--topic-prefix"),
        (
            &["--keyshift-hysteresis", "-1"][..],
            "--keyshift-hysteresis",
        ),
        (&["-X", "no-equals-sign"][..], "--property"),
        (&["--warmup", "1.5"][..], "--warmup"),
        (&["--producers", "0"][..], "--producers"),
        (&["--routes", "everywhere"][..], "--routes"),
        (&["--concurrency", "0"][..], "--concurrency"),
        (&["--strategies", "pcx"][..], "--strategies"),
    ] {
        let mut all = vec!["experiment"];
        all.extend_from_slice(args);
        let out = keyshift(&all);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(flag),
            "{args:?} should name {flag}: {stderr}"
        );
    }
}

/// `--concurrency 4 --service io`: hash (each partition serial, the classic consumer), the
/// Parallel Consumer baseline `pc` (hash partitioning, key-ordered slots) and keyshift at equal
/// capacity. Nothing is lost, per-key order and serial processing hold for all three (the
/// checker sees every slot of every worker), and the report says what ran: four slots per
/// worker and a service time four times the single-slot one.
#[test]
fn hash_pc_and_keyshift_run_at_equal_capacity_with_slots() {
    let _alone = one_at_a_time();
    let dir = temp_dir("experiment-concurrency");
    let json = dir.join("report.json");
    let out = keyshift(&[
        "experiment",
        "--strategies",
        "hash,pc,keyshift",
        "--concurrency",
        "4",
        "--service",
        "io",
        "--partitions",
        "4",
        "--consumers",
        "4",
        "--records",
        "1200",
        "--rate",
        "300",
        "--utilization",
        "0.5",
        "--keys",
        "40",
        "--keyshift-warmup",
        "1",
        "--no-html",
        "--json",
        json.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("4 workers × 4 slots, io service"),
        "{stdout}"
    );
    let v = read_json(&json);
    assert_eq!(v["setup"]["concurrency"], 4, "{v}");
    assert_eq!(v["setup"]["service"], "io", "{v}");
    // utilisation × consumers × slots ÷ rate = 0.5 × 4 × 4 / 300 s.
    let service_ms = v["setup"]["service_ms"].as_f64().unwrap();
    assert!((service_ms - 0.5 * 16.0 / 300.0 * 1e3).abs() < 1e-6, "{v}");
    let names: Vec<&str> = v["strategies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["strategy"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["hash", "pc", "keyshift"]);
    for r in v["strategies"].as_array().unwrap() {
        assert_eq!(r["consumed"], 1200, "{r}");
        assert_eq!(r["order_violations"], 0, "{r}");
        assert_eq!(r["concurrent_key_processing"], 0, "{r}");
        assert_eq!(r["preserves_order"], true, "{r}");
    }
}

/// Issue 15: the experiment against a cluster that requires SASL, with the Java client's
/// `client.properties` (SCRAM-SHA-512, the password from the environment): both strategies
/// run to the end with nothing lost and per-key order kept. With a wrong password it stops
/// with an error that names the mechanism, and the password appears nowhere in its output.
#[test]
fn experiment_runs_against_a_sasl_broker_with_a_client_config() {
    use keyshift_kafka::{BrokerOptions, EmbeddedBroker, SaslUser};
    let _alone = one_at_a_time();
    let password = "exp-secret-2026";
    let broker = EmbeddedBroker::start_with(BrokerOptions {
        sasl_users: vec![SaslUser::new("researcher", password)],
        ..BrokerOptions::default()
    })
    .expect("broker with SASL");
    let dir = temp_dir("experiment-sasl");
    let config = process_support::scram_client_config(&dir, "researcher", "${env:KS_EXP_PW}");
    let json = dir.join("report.json");
    let run = |pw: &str, json: &Path| {
        Command::new(env!("CARGO_BIN_EXE_keyshift"))
            .args([
                "experiment",
                "--bootstrap-servers",
                broker.bootstrap_servers(),
            ])
            .args(["--client-config", config.to_str().unwrap()])
            .args(["--strategies", "hash,keyshift", "--partitions", "4"])
            .args(["--consumers", "2", "--records", "400", "--rate", "200"])
            .args(["--keys", "40", "--utilization", "0.5"])
            .args(["--json", json.to_str().unwrap()])
            .env("KS_EXP_PW", pw)
            .output()
            .expect("the keyshift binary runs")
    };
    let out = run(password, &json);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}:\n{stderr}", out.status);
    let v = read_json(&json);
    let runs = v["strategies"].as_array().expect("a strategies array");
    assert_eq!(runs.len(), 2);
    for r in runs {
        assert_eq!(r["produced"].as_u64().unwrap(), 400, "{r}");
        assert_eq!(r["consumed"].as_u64().unwrap(), 400, "{r}");
        assert_eq!(r["lost"].as_u64().unwrap(), 0, "{r}");
        assert_eq!(r["order_violations"].as_u64().unwrap(), 0, "{r}");
    }

    let wrong = "not-the-exp-secret";
    let out = run(wrong, &dir.join("wrong.json"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "a wrong password must fail:\n{text}");
    assert!(
        text.contains("SCRAM-SHA-512"),
        "the error names the mechanism:\n{text}"
    );
    for secret in [password, wrong] {
        assert!(!text.contains(secret), "a password in the output:\n{text}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
