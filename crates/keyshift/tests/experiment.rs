//! `keyshift experiment` through the real binary on the embedded broker: a small run of hash
//! and keyshift writes the required JSON and an HTML page with plots, loses nothing and keeps
//! per-key order across keyshift's fenced migrations; bad flags exit 2 naming the flag.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

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

#[test]
fn small_run_of_hash_and_keyshift_loses_nothing_and_keeps_order() {
    let dir = temp_dir("experiment");
    let json = dir.join("report.json");
    let out = keyshift(&[
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
        // keyshift decides early and often, so a short run migrates keys through fences.
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
    let _ = std::fs::remove_dir_all(&dir);
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
