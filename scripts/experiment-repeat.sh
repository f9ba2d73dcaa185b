#!/usr/bin/env bash
# Runs `keyshift experiment` N times (default 3) with the same flags and prints, per run and as
# median with the spread (min–max, and max deviation from the median in %), each strategy's p99,
# p99 ratio to hash, migrations, parked records, order violations and lost records.
#
#   bash scripts/experiment-repeat.sh [N] [-- experiment flags...]
#
# Uses the release binary (builds it if needed). The JSON of every run stays in
# $OUT (default: a new temporary directory), so the figures can be checked afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
n=3
if [[ $# -gt 0 && $1 != -- ]]; then n=$1; shift; fi
[[ $# -gt 0 && $1 == -- ]] && shift
[[ $n =~ ^[1-9][0-9]*$ ]] || { echo "N must be a positive integer, got '$n'" >&2; exit 2; }
out=${OUT:-$(mktemp -d -t keyshift-repeat.XXXXXX)}
mkdir -p "$out"
cargo build --release --locked -p keyshift >&2
bin=${CARGO_TARGET_DIR:-target}/release/keyshift
for i in $(seq 1 "$n"); do
  echo "run $i of $n → $out/run$i.json" >&2
  "$bin" experiment --no-html --json "$out/run$i.json" "$@" > "$out/run$i.txt"
done
python3 - "$out" "$n" <<'EOF'
import json, statistics, sys
out, n = sys.argv[1], int(sys.argv[2])
runs = [json.load(open(f"{out}/run{i}.json")) for i in range(1, n + 1)]
names = [s["strategy"] for s in runs[0]["strategies"]]
fields = [("p99_ms", "p99 (ms)"), ("p99_ratio_vs_hash", "p99 vs hash (x lower)"),
          ("migrations", "migrations"), ("parked_records", "parked (records)"),
          ("order_violations", "order violations"), ("lost", "lost")]
for name in names:
    print(f"== {name}")
    for key, label in fields:
        vals = [next(s for s in r["strategies"] if s["strategy"] == name).get(key) for r in runs]
        vals = [v for v in vals if v is not None]
        if not vals:
            continue
        med = statistics.median(vals)
        dev = max(abs(v - med) for v in vals) / med * 100 if med else 0.0
        per = "  ".join(f"{v:.1f}" if isinstance(v, float) else str(v) for v in vals)
        print(f"  {label:24} runs: {per:40} median {med:.1f}  min–max {min(vals):.1f}–{max(vals):.1f}  ±{dev:.0f} %")
EOF
