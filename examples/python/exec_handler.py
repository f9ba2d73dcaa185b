#!/usr/bin/env python3
"""An application behind `keyshift worker --exec`, in Python's standard library only.

    keyshift worker --bootstrap-servers localhost:9092 --topic orders --concurrency 32 \
        --exec "python3 examples/python/exec_handler.py --service-ms 5"

The worker writes one JSON line per record to this process's standard input: the
`--forward` body plus `"id"`,

    {"id": 17, "topic": "orders", "partition": 3, "offset": 1042, "timestamp_ms": ...,
     "key": "customer-7", "value": "...", "headers": {...}}

and reads one line per record from its standard output: `{"id": 17}` when record 17 is done,
`{"id": 17, "error": "why"}` when it failed. Answers may come in any order, so records run in
threads here, up to the worker's `--concurrency` at once (never two of one key). Logs go to
standard error: standard output carries only answers. End of input means the worker is
stopping: answer what is running, then exit.

Like `forward_handler.py` it sleeps `--service-ms` per record and checks keyshift's promises;
`--report-dir DIR` writes what it saw to `DIR/<pid>.json` (every 200 ms and at exit),
`--fail-key K` fails every attempt of K's records, `--fail-first K` the first attempt of each,
and `--exit-after N` exits (status 3) after answering N records, to show that the worker starts
it again.
"""

import argparse
import json
import os
import sys
import threading
import time

from keyshift_check import Seen, key_and_seq, should_fail, well_formed


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--service-ms", type=float, default=5.0)
    parser.add_argument("--fail-key", default=None, help="fail every attempt of this key")
    parser.add_argument("--fail-first", default=None, help="fail the first attempt of each record of this key")
    parser.add_argument("--report-dir", default=None)
    parser.add_argument("--exit-after", type=int, default=0)
    args = parser.parse_args()
    seen = Seen()
    out = threading.Lock()
    answered = [0]
    report = (
        os.path.join(args.report_dir, f"{os.getpid()}.json") if args.report_dir else None
    )

    def write_report():
        if report:
            tmp = report + ".tmp"
            with open(tmp, "w") as f:
                json.dump(seen.report(), f)
            os.replace(tmp, report)

    def answer(line):
        with out:
            sys.stdout.write(json.dumps(line) + "\n")
            sys.stdout.flush()
            answered[0] += 1
            if args.exit_after and answered[0] >= args.exit_after:
                write_report()
                os._exit(3)

    def work(record):
        key, seq = key_and_seq(record)
        attempt = seen.enter(key, seq)
        time.sleep(args.service_ms / 1000.0)
        failed = should_fail(key, attempt, args.fail_key, args.fail_first)
        seen.leave(key, seq, failed)
        if failed:
            answer({"id": record["id"], "error": f"records of {key} fail on purpose"})
        else:
            answer({"id": record["id"]})

    def report_often():
        while True:
            time.sleep(0.2)
            write_report()

    threading.Thread(target=report_often, daemon=True).start()
    running = []
    for line in sys.stdin:
        record = json.loads(line)
        if not well_formed(record):
            with seen.lock:
                seen.malformed += 1
        t = threading.Thread(target=work, args=(record,))
        t.start()
        running.append(t)
        running = [t for t in running if t.is_alive()]
    for t in running:
        t.join()
    write_report()
    print("end of input: exiting", file=sys.stderr)


if __name__ == "__main__":
    main()
