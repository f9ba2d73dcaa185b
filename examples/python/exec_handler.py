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

With a state topic (`keyshift worker --state ...`) each line also carries the key's state:
`"state": "<UTF-8 text>"`, `"state": null` when the key has none, or `"state_base64"` in place
of `"state"` for bytes that are not UTF-8. A done answer then says what to do with it:
`{"id": 17, "state": "<text>"}` (or `"state_base64"`) sets the key's state, `"state": null`
deletes it, leaving `"state"` out keeps it unchanged. `--count-state` answers
`{"id": 17, "state": "<int(state or "0") + 1>"}`, a count of the key's records (a state that is
not an integer fails the attempt); a failed attempt never changes the state.

Like `forward_handler.py` it sleeps `--service-ms` per record and checks keyshift's promises;
`--report-dir DIR` writes what it saw to `DIR/<pid>.json` (every 200 ms and at exit),
`--fail-key K` fails every attempt of K's records, `--fail-first K` the first attempt of each,
and `--exit-after N` exits (status 3) after answering N records, to show that the worker starts
it again. The report's fields are those of `GET /report` there (see keyshift_check.py).
`examples/node/exec_handler.js` is the same handler in Node.js.
"""

import argparse
import json
import os
import sys
import threading
import time

from keyshift_check import Seen, has_state, key_and_seq, next_count, should_fail, well_formed


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--service-ms", type=float, default=5.0)
    parser.add_argument("--fail-key", default=None, help="fail every attempt of this key")
    parser.add_argument("--fail-first", default=None, help="fail the first attempt of each record of this key")
    parser.add_argument("--report-dir", default=None)
    parser.add_argument("--exit-after", type=int, default=0)
    parser.add_argument("--count-state", action="store_true", help='answer the state int(state or "0") + 1')
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
        attempt = seen.enter(key, seq, has_state(record))
        time.sleep(args.service_ms / 1000.0)
        failed = should_fail(key, attempt, args.fail_key, args.fail_first)
        error = f"records of {key} fail on purpose" if failed else None
        if not failed and args.count_state:
            try:
                state = next_count(record)
            except ValueError as e:
                failed, error = True, f"record of {key}: {e}"
        seen.leave(key, seq, failed)
        if failed:
            answer({"id": record["id"], "error": error})
        elif args.count_state:
            answer({"id": record["id"], "state": state})
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
