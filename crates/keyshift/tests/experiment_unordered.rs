//! The order checker of `keyshift experiment` is known to work: `unordered` spreads one key's
//! records over partitions that different workers process concurrently, so some records of a
//! hot key are processed after later ones — and the experiment reports it (without failing,
//! since unordered does not promise order). Lost records stay 0 either way.

use std::process::Command;

use serde_json::Value;

#[test]
fn unordered_shows_order_violations() {
    let dir = std::env::temp_dir().join(format!("keyshift-unordered-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("r.json");
    let out = Command::new(env!("CARGO_BIN_EXE_keyshift"))
        .args([
            "experiment",
            "--strategies",
            "unordered",
            "--partitions",
            "4",
            "--consumers",
            "4",
            // Few, very skewed keys: the hottest key has hundreds of records in flight.
            "--keys",
            "20",
            "--zipf-s",
            "1.5",
            "--records",
            "1500",
            "--rate",
            "300",
            "--utilization",
            "0.6",
            // Exponential service times make neighbouring records of a key finish out of
            // their send order on different workers.
            "--service",
            "exponential",
            "--no-html",
            "--json",
            json.to_str().unwrap(),
        ])
        .output()
        .expect("the keyshift binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}, stderr:\n{stderr}",
        out.status
    );
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let r = &v["strategies"][0];
    assert_eq!(r["strategy"], "unordered");
    assert_eq!(r["preserves_order"], false);
    assert_eq!(r["lost"].as_u64().unwrap(), 0, "{r}");
    assert!(
        r["order_violations"].as_u64().unwrap() > 0,
        "unordered splits hot keys across concurrently processed partitions; the checker \
         should see records processed after later ones: {r}"
    );
    assert!(!dir.join("experiment.html").exists() && !dir.join("r.html").exists());
    let _ = std::fs::remove_dir_all(&dir);
}
