//! `keyshift simulate` through the real binary: the script-facing JSON and CSV, the sweep, the
//! text table, and bad input rejected with exit status 2 and the flag's name.

use std::process::{Command, Output};

use serde_json::Value;

fn keyshift(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keyshift"))
        .args(args)
        .output()
        .expect("the keyshift binary runs")
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}, stderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).expect("UTF-8 output")
}

/// The interface scripts depend on (issue 2), with fewer records to stay quick.
const SEED_ARGS: &[&str] = &[
    "simulate",
    "--strategies",
    "hash,slops,keyshift",
    "--partitions",
    "10",
    "--consumers",
    "10",
    "--keys",
    "2800",
    "--zipf-s",
    "1.1",
    "--zipf-v",
    "2.72",
    "--utilization",
    "0.65",
    "--records",
    "20000",
    "--seed",
    "1",
];

#[test]
fn json_is_one_array_with_one_object_per_strategy() {
    let mut args = SEED_ARGS.to_vec();
    args.push("--json");
    let out = stdout(&keyshift(&args));
    let v: Value = serde_json::from_str(&out).expect("one JSON value");
    let runs = v.as_array().expect("an array");
    let names: Vec<&str> = runs
        .iter()
        .map(|r| r["strategy"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["hash", "slops", "keyshift"]);
    for r in runs {
        for field in [
            "throughput_rps",
            "p50_ms",
            "p99_ms",
            "p999_ms",
            "imbalance_max_over_mean",
            "imbalance_max_over_bound",
            "migrations",
            "order_violations",
        ] {
            assert!(r[field].is_number(), "{field} missing in {r}");
        }
        assert_eq!(r["order_violations"], 0);
        assert_eq!(r["processed"], 20000);
        assert_eq!(r["partition_load"].as_array().unwrap().len(), 10);
    }
    assert_eq!(runs[0]["migrations"], 0, "hash never moves a key");
    assert!(runs[2]["migrations"].as_u64().unwrap() > 0);
}

#[test]
fn json_output_is_deterministic_whatever_the_parallelism() {
    let mut one: Vec<&str> = SEED_ARGS
        .iter()
        .map(|a| if *a == "20000" { "5000" } else { a })
        .collect();
    one.extend(["--json", "--jobs", "1"]);
    let mut three = one.clone();
    three.pop();
    three.push("3");
    assert_eq!(stdout(&keyshift(&one)), stdout(&keyshift(&three)));
}

#[test]
fn csv_has_a_header_and_a_row_per_strategy_matching_the_json() {
    let common = ["simulate", "--strategies", "hash,pkg", "--records", "5000"];
    let csv = stdout(&keyshift(&[&common[..], &["--csv"]].concat()));
    let json: Value =
        serde_json::from_str(&stdout(&keyshift(&[&common[..], &["--json"]].concat()))).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 3);
    let header: Vec<&str> = lines[0].split(',').collect();
    for (row, report) in lines[1..].iter().zip(json.as_array().unwrap()) {
        let cells: Vec<&str> = row.split(',').collect();
        assert_eq!(cells.len(), header.len());
        for (name, cell) in header.iter().zip(&cells) {
            // A dotted column is a field of a nested object (recovery.unrecovered).
            let v = report
                .pointer(&format!("/{}", name.replace('.', "/")))
                .unwrap_or_else(|| panic!("CSV column {name} is not a report field"));
            match v {
                // No disturbance recovered: no time to report.
                Value::Null => assert_eq!(*cell, "", "column {name}"),
                // Parsing JSON back may lose the last bit of a float; compare as numbers.
                Value::Number(n) => {
                    let x = n.as_f64().unwrap();
                    let c: f64 = cell.parse().unwrap();
                    assert!((x - c).abs() <= 1e-9 * x.abs().max(1.0), "column {name}");
                }
                Value::String(s) => assert_eq!(cell, s, "column {name}"),
                Value::Array(a) => {
                    let joined = a.iter().map(Value::to_string).collect::<Vec<_>>().join(";");
                    assert_eq!(*cell, joined, "column {name}");
                }
                other => assert_eq!(*cell, other.to_string(), "column {name}"),
            }
        }
    }
}

#[test]
fn text_table_puts_strategies_side_by_side() {
    let out = stdout(&keyshift(&[
        "simulate",
        "--records",
        "5000",
        "--strategies",
        "hash,keyshift",
    ]));
    let header = out
        .lines()
        .find(|l| l.trim_start().starts_with("hash"))
        .expect("a header row naming the strategies");
    assert!(header.contains("keyshift"));
    for row in [
        "latency p99 (ms)",
        "imbalance max/bound",
        "order violations",
        "per-partition load",
    ] {
        assert!(out.contains(row), "no '{row}' in\n{out}");
    }
}

#[test]
fn sweep_reports_each_level_and_what_each_strategy_sustains() {
    let out = stdout(&keyshift(&[
        "simulate",
        "--records",
        "4000",
        "--sweep",
        "0.5:0.7:0.1",
        "--p99-bound-ms",
        "100",
        "--json",
    ]));
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["p99_bound_ms"], 100.0);
    let points = v["points"].as_array().unwrap();
    assert_eq!(points.len(), 9, "3 levels × 3 strategies");
    for p in points {
        let within = p["report"]["p99_ms"].as_f64().unwrap() <= 100.0;
        assert_eq!(p["within_bound"], within);
    }
    let summary = v["summary"].as_array().unwrap();
    let names: Vec<&str> = summary
        .iter()
        .map(|s| s["strategy"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["hash", "slops", "keyshift"]);
    let text = stdout(&keyshift(&[
        "simulate",
        "--records",
        "4000",
        "--sweep",
        "0.5:0.7:0.1",
    ]));
    assert!(text.contains("highest utilisation sustained"), "{text}");
}

/// Runs with bad input: exit status 2, and the flag named on stderr.
fn rejects(args: &[&str], flag: &str) {
    let o = keyshift(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
    assert!(
        err.contains(flag),
        "{args:?}: stderr does not name {flag}: {err}"
    );
    assert!(o.stdout.is_empty());
}

#[test]
fn bad_input_names_the_flag_and_exits_2() {
    rejects(&["simulate", "--partitions", "0"], "--partitions");
    rejects(&["simulate", "--consumers", "12"], "--consumers");
    rejects(&["simulate", "--rate", "-5"], "--rate");
    rejects(&["simulate", "--utilization", "65"], "--utilization");
    rejects(&["simulate", "--zipf-s", "0"], "--zipf-s");
    rejects(&["simulate", "--zipf-v", "0.5"], "--zipf-v");
    rejects(&["simulate", "--keys", "0"], "--keys");
    rejects(&["simulate", "--warmup", "1"], "--warmup");
    rejects(
        &["simulate", "--strategies", "hash,fastest"],
        "--strategies",
    );
    rejects(&["simulate", "--sweep", "0.9:0.5:0.1"], "--sweep");
    rejects(&["simulate", "--slops-epsilon", "2"], "--slops-epsilon");
    rejects(
        &["simulate", "--keyshift-max-moves", "0"],
        "--keyshift-max-moves",
    );
    rejects(&["simulate", "--json", "--csv"], "--csv");
    rejects(&["simulate", "--hot-key-at", "1.5"], "--hot-key-at");
    // In the warm-up (the first 20 %), and too late for a measuring window after it.
    rejects(&["simulate", "--hot-key-at", "0.1"], "--hot-key-at");
    rejects(&["simulate", "--hot-key-at", "0.99"], "--hot-key-at");
    rejects(
        &["simulate", "--hot-key-at", "0.5", "--hot-key-share", "0"],
        "--hot-key-share",
    );
    rejects(&["simulate", "--hot-key-share", "0.2"], "--hot-key-at");
    rejects(&["simulate", "--recovery-window", "0"], "--recovery-window");
}

#[test]
fn a_sudden_hot_key_is_reported_with_the_recovery_of_each_strategy() {
    // 60 000 records: measuring windows of 10 000 records, aligned on record 0, from 20 000
    // (the first boundary after the 20 % warm-up); the key appears at record 30 000 and the
    // window it starts judges it.
    let args = [
        "simulate",
        "--strategies",
        "hash,keyshift",
        "--records",
        "60000",
        "--hot-key-at",
        "0.5",
        "--hot-key-share",
        "0.2",
    ];
    let text = stdout(&keyshift(&args));
    assert!(
        text.contains("a new hot key with 20 % of arrivals from record 30000"),
        "{text}"
    );
    for row in [
        "disturbances",
        "never recovered",
        "time to recover p50 (s)",
        "moves to recover max",
    ] {
        assert!(text.contains(row), "no '{row}' in\n{text}");
    }
    let mut json_args = args.to_vec();
    json_args.push("--json");
    let v: Value = serde_json::from_str(&stdout(&keyshift(&json_args))).unwrap();
    let runs = v.as_array().unwrap();
    // Hash cannot move the key: one disturbance, never recovered, no time to report.
    let hash = &runs[0]["recovery"];
    assert_eq!(hash["window_records"], 10000);
    assert_eq!(hash["disturbances"], 1, "{hash}");
    assert_eq!(hash["unrecovered"], 1, "{hash}");
    assert!(hash["recover_s_p50"].is_null(), "{hash}");
    assert!(hash["moves_max"].is_null(), "{hash}");
    let moving = &runs[1]["recovery"];
    for field in [
        "disturbances",
        "unrecovered",
        "recover_s_p50",
        "recover_s_max",
        "moves_p50",
        "moves_max",
    ] {
        assert!(moving.get(field).is_some(), "no {field} in {moving}");
    }
    // The seed workload has no change of shape: nothing to recover from.
    let calm: Value =
        serde_json::from_str(&stdout(&keyshift(&[SEED_ARGS, &["--json"]].concat()))).unwrap();
    for r in calm.as_array().unwrap() {
        assert_eq!(r["recovery"]["disturbances"], 0, "{r}");
    }
}

#[test]
fn an_infeasible_key_is_flagged_in_text_and_json() {
    // On 32 consumers at 65 % the seed's hottest key needs about 1.5 of them.
    let args = [
        "simulate",
        "--strategies",
        "hash,keyshift,keyshift-classic",
        "--partitions",
        "32",
        "--consumers",
        "32",
        "--records",
        "20000",
    ];
    let text = stdout(&keyshift(&args));
    let warnings: Vec<&str> = text.lines().filter(|l| l.starts_with("WARNING")).collect();
    assert!(
        warnings[0].starts_with("WARNING: key location_0 needs 1.")
            && warnings[0].ends_with("consumers; per-key order makes this load unsustainable"),
        "{text}"
    );
    assert!(text.contains("migrations after warm-up"), "{text}");
    let mut json_args = args.to_vec();
    json_args.push("--json");
    let v: Value = serde_json::from_str(&stdout(&keyshift(&json_args))).unwrap();
    for r in v.as_array().unwrap() {
        assert_eq!(r["infeasible_keys"][0]["key"], "location_0");
        assert!(
            r["infeasible_keys"][0]["consumers_needed"]
                .as_f64()
                .unwrap()
                > 1.3
        );
        assert!(r["warnings"][0].as_str().unwrap().contains("unsustainable"));
        assert!(r["migrations_after_warmup"].is_u64());
    }
    // The seed workload (10 consumers) is feasible: no warning.
    let calm = stdout(&keyshift(SEED_ARGS));
    assert!(!calm.contains("WARNING"), "{calm}");
}
