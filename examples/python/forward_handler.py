#!/usr/bin/env python3
"""An application behind `keyshift worker --forward`, in Python's standard library only.

    python3 examples/python/forward_handler.py --port 9000 --service-ms 5
    keyshift worker --bootstrap-servers localhost:9092 --topic orders \
        --forward http://127.0.0.1:9000/records --concurrency 32

The worker POSTs each record as one JSON object:

    {"topic": "orders", "partition": 3, "offset": 1042, "timestamp_ms": 1764806400000,
     "key": "customer-7", "value": "...", "headers": {"traceparent": "00-..."}}

(`key_base64` / `value_base64` replace `key` / `value` for bytes that are not UTF-8, and
`headers_base64` holds header values that are not). Answer 2xx when the record is done; any
other answer counts as the record's error in the worker.

With a state topic (`keyshift worker --state ...`) the body also carries the key's state:
`"state": "<UTF-8 text>"`, `"state": null` when the key has none, or `"state_base64"` in place
of `"state"` for bytes that are not UTF-8. A 2xx answer's JSON body then says what to do with
it: `{"state": "<text>"}` (or `{"state_base64": "..."}`) sets the key's state, `{"state": null}`
deletes it, leaving `"state"` out (or answering no body) keeps it unchanged. `--count-state`
answers `{"state": "<int(state or "0") + 1>"}`, a count of the key's records (a state that is
not an integer fails the attempt); a failed attempt never changes the state.

This handler sleeps `--service-ms` per record, as if it waited on a database, and checks what
keyshift promises: never two records of one key at once, and each key's records in order (a
value that is an integer is read as the key's sequence number). `GET /report` answers what it
saw as JSON (`received`, `distinct`, `keys`, `overlaps`, `out_of_order`, `repeats`,
`malformed`, `failed`, `max_in_flight`, `with_state`: see keyshift_check.py); `--fail-key K`
answers 500 for every attempt of K's records, `--fail-first K` for the first attempt of each of
them (the worker retries). The first line on stdout is
`listening on http://127.0.0.1:<port>/records` (use `--port 0` for any free port).
`examples/node/forward_handler.js` is the same handler in Node.js.
"""

import argparse
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from keyshift_check import Seen, has_state, key_and_seq, next_count, should_fail, well_formed

def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--service-ms", type=float, default=5.0)
    parser.add_argument("--fail-key", default=None, help="fail every attempt of this key")
    parser.add_argument("--fail-first", default=None, help="fail the first attempt of each record of this key")
    parser.add_argument("--count-state", action="store_true", help='answer the state int(state or "0") + 1')
    args = parser.parse_args()
    seen = Seen()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: the worker reuses connections

        def log_message(self, *_):
            pass

        def answer(self, status, body):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path == "/report":
                self.answer(200, seen.report())
            else:
                self.answer(404, {"error": "not found"})

        def do_POST(self):
            length = int(self.headers.get("Content-Length", 0))
            try:
                record = json.loads(self.rfile.read(length))
            except ValueError:
                with seen.lock:
                    seen.malformed += 1
                self.answer(400, {"error": "body is not JSON"})
                return
            if not well_formed(record):
                with seen.lock:
                    seen.malformed += 1
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
                self.answer(500, {"error": error})
            elif args.count_state:
                self.answer(200, {"state": state})
            else:
                self.answer(200, {"ok": True})

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    print(f"listening on http://127.0.0.1:{server.server_address[1]}/records", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    sys.exit(0)


if __name__ == "__main__":
    main()
