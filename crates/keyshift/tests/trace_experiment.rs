//! `keyshift experiment --trace` through the real binary on the embedded broker: every
//! measured record's latency is split into producer wait, broker, queueing, parked and
//! service, and the parts add up to the end-to-end latency the experiment measures itself.

use std::process::Command;

use serde_json::Value;

#[test]
fn trace_splits_latency_into_parts_that_add_up() {
    let dir = std::env::temp_dir().join(format!("keyshift-trace-exp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("report.json");
    let out = Command::new(env!("CARGO_BIN_EXE_keyshift"))
        .args([
            "experiment",
            "--strategies",
            "keyshift",
            "--partitions",
            "4",
            "--consumers",
            "4",
            "--records",
            "800",
            "--rate",
            "300",
            "--utilization",
            "0.5",
            "--keyshift-warmup",
            "1",
            "--keyshift-rebalance-interval",
            "0.5",
            "--no-html",
            "--trace",
            "--json",
        ])
        .arg(&json)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}:\n{stderr}", out.status);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("where latency went (--trace)"), "{stdout}");
    for part in ["producer wait", "broker", "queueing", "parked", "service"] {
        assert!(
            stdout.contains(&format!("{part} mean (share)")),
            "{part}:\n{stdout}"
        );
    }

    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let r = &v["strategies"][0];
    let b = &r["latency_breakdown"];
    assert_eq!(
        b["records"], r["measured"],
        "every measured record is broken down: {b}"
    );
    let mean = |part: &str| b[part]["mean_ms"].as_f64().unwrap();
    let parts = ["producer_wait", "broker", "queueing", "parked", "service"];
    let sum: f64 = parts.iter().map(|p| mean(p)).sum();
    let e2e = b["e2e_mean_ms"].as_f64().unwrap();
    assert!(
        (sum - e2e).abs() < 0.01,
        "parts {sum} ms vs end-to-end {e2e} ms: {b}"
    );
    // The same records, measured by the experiment's own clock (scheduled send → done).
    let own = r["mean_ms"].as_f64().unwrap();
    assert!((e2e - own).abs() <= own * 0.01, "{e2e} vs {own}");
    // Workers sleep the service time: 0.5 × 4 consumers ÷ 300 rec/s = 6.67 ms per record.
    assert!(mean("service") >= 6.6, "{b}");
    for p in parts {
        assert!(mean(p) >= 0.0, "{p}: {b}");
    }
    if r["parked_records"].as_u64().unwrap() > 0 {
        assert!(
            mean("parked") > 0.0,
            "parked records show up as parked time: {b}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
