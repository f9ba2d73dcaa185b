#!/usr/bin/env bash
# CPU and RSS of `keyshift dashboard` over a 100-partition topic with a group, alternating two
# builds (e.g. before and after a change) in one run, so both see the same machine:
#   scripts/dashboard-cpu.sh path/to/keyshift-a path/to/keyshift-b [seconds]
# Prints one line per build and round: % of one core (utime+stime) and VmRSS.
set -euo pipefail
a=$1 b=$2 secs=${3:-60}
out=$(mktemp -d)
"$a" broker --listen 127.0.0.1:0 --topic t100 --partitions 100 >"$out/broker" 2>/dev/null &
broker=$!
trap 'kill $broker 2>/dev/null' EXIT
for _ in $(seq 100); do grep -q 127.0.0.1 "$out/broker" && break; sleep 0.2; done
bs=$(grep -o '127.0.0.1:[0-9]*' "$out/broker" | head -1)
tck=$(getconf CLK_TCK)
for round in 1 2; do
  for bin in "$a" "$b"; do
    "$bin" dashboard --bootstrap-servers "$bs" --topic t100 --group g1 --listen 127.0.0.1:0 \
      >/dev/null 2>&1 &
    p=$!
    sleep 10 # start-up and first rounds left out
    t0=$(awk '{print $14+$15}' /proc/$p/stat)
    sleep "$secs"
    t1=$(awk '{print $14+$15}' /proc/$p/stat)
    rss=$(awk '/VmRSS/ {print $2}' /proc/$p/status)
    kill $p
    wait $p 2>/dev/null || true
    echo "$bin round $round: $(echo "scale=2; ($t1-$t0)*100/$tck/$secs" | bc) % of a core, RSS $rss kB"
  done
done
