#!/usr/bin/env node
// An application behind `keyshift worker --forward`, in Node.js's standard library only.
//
//     node examples/node/forward_handler.js --port 9000 --service-ms 5
//     keyshift worker --bootstrap-servers localhost:9092 --topic orders \
//         --forward http://127.0.0.1:9000/records --concurrency 32
//
// (Node.js 20 or later, no npm packages.) The worker POSTs each record as one JSON object:
//
//     {"topic": "orders", "partition": 3, "offset": 1042, "timestamp_ms": 1764806400000,
//      "key": "customer-7", "value": "...", "headers": {"traceparent": "00-..."}}
//
// (`key_base64` / `value_base64` replace `key` / `value` for bytes that are not UTF-8, and
// `headers_base64` holds header values that are not). Answer 2xx when the record is done; any
// other answer counts as the record's error in the worker.
//
// With a state topic (`keyshift worker --state ...`) the body also carries the key's state:
// `"state": "<UTF-8 text>"`, `"state": null` when the key has none, or `"state_base64"` in place
// of `"state"` for bytes that are not UTF-8. A 2xx answer's JSON body then says what to do with
// it: `{"state": "<text>"}` (or `{"state_base64": "..."}`) sets the key's state, `{"state": null}`
// deletes it, leaving `"state"` out (or answering no body) keeps it unchanged. `--count-state`
// answers `{"state": "<int(state or "0") + 1>"}`, a count of the key's records (a state that is
// not an integer fails the attempt); a failed attempt never changes the state.
//
// This handler waits `--service-ms` per record (a timer: requests run concurrently, as if each
// waited on a database), and checks what keyshift promises: never two records of one key at
// once, and each key's records in order (a value that is an integer is read as the key's
// sequence number). `GET /report` answers what it saw as JSON (`received`, `distinct`, `keys`,
// `overlaps`, `out_of_order`, `repeats`, `malformed`, `failed`, `max_in_flight`, `with_state`:
// see keyshift_check.js); `--fail-key K` answers 500 for every attempt of K's records,
// `--fail-first K` for the first attempt of each of them (the worker retries). The first line on
// stdout is `listening on http://127.0.0.1:<port>/records` (use `--port 0` for any free port).
// It is examples/python/forward_handler.py in Node.js: same flags, answers and report.
"use strict";

const http = require("node:http");
const process = require("node:process");
const {
  Seen,
  PyError,
  checkSleep,
  dumps,
  hasState,
  keyAndSeq,
  nextCount,
  parseArgs,
  pyStr,
  shouldFail,
  wellFormed,
} = require("./keyshift_check.js");

const DESCRIPTION = "An application behind `keyshift worker --forward`, in Node.js's standard library only.";

function main() {
  const args = parseArgs("forward_handler.js", DESCRIPTION, {
    "--port": { type: "int", default: 9000 },
    "--service-ms": { type: "float", default: 5.0 },
    "--fail-key": { type: "str", help: "fail every attempt of this key" },
    "--fail-first": { type: "str", help: "fail the first attempt of each record of this key" },
    "--count-state": { type: "flag", default: false, help: 'answer the state int(state or "0") + 1' },
  });
  const seen = new Seen();

  function answer(res, status, body) {
    const data = Buffer.from(dumps(body));
    res.writeHead(status, { "Content-Type": "application/json", "Content-Length": data.length });
    res.end(data);
  }

  // What Python's http.server does when a request handler raises: log it, drop the connection
  // without an answer.
  function crashed(req, error) {
    console.error(`error while processing a request from ${req.socket.remoteAddress}:${req.socket.remotePort}:`, error);
    req.socket.destroy();
  }

  function post(req, res, body) {
    let record;
    try {
      record = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(body));
    } catch {
      seen.malformed += 1;
      answer(res, 400, { error: "body is not JSON" });
      return;
    }
    let key, seq, attempt;
    try {
      if (!wellFormed(record)) seen.malformed += 1;
      [key, seq] = keyAndSeq(record);
      attempt = seen.enter(key, seq, hasState(record));
      checkSleep(args.serviceMs);
    } catch (e) {
      crashed(req, e);
      return;
    }
    setTimeout(() => {
      let failed = shouldFail(key, attempt, args.failKey, args.failFirst);
      let error = failed ? `records of ${pyStr(key)} fail on purpose` : null;
      let state;
      if (!failed && args.countState) {
        try {
          state = nextCount(record);
        } catch (e) {
          if (!(e instanceof PyError)) throw e;
          failed = true;
          error = `record of ${pyStr(key)}: ${e.message}`;
        }
      }
      seen.leave(key, seq, failed);
      if (failed) answer(res, 500, { error });
      else if (args.countState) answer(res, 200, { state });
      else answer(res, 200, { ok: true });
    }, args.serviceMs);
  }

  // Any method but GET and POST: 501, as Python's http.server answers it.
  function unsupported(req, res) {
    const body = Buffer.from(
      '<!DOCTYPE HTML>\n<html lang="en">\n    <head>\n        <meta charset="utf-8">\n' +
        "        <title>Error response</title>\n    </head>\n    <body>\n" +
        "        <h1>Error response</h1>\n        <p>Error code: 501</p>\n" +
        `        <p>Message: Unsupported method ('${req.method.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")}').</p>\n` +
        "        <p>Error code explanation: 501 - Server does not support this operation.</p>\n" +
        "    </body>\n</html>\n",
    );
    res.writeHead(501, {
      Connection: "close",
      "Content-Type": "text/html;charset=utf-8",
      "Content-Length": body.length,
    });
    res.end(body);
  }

  const server = http.createServer((req, res) => {
    if (req.method === "GET") {
      req.resume();
      if (req.url === "/report") answer(res, 200, seen.report());
      else answer(res, 404, { error: "not found" });
    } else if (req.method === "POST") {
      const chunks = [];
      req.on("data", (chunk) => chunks.push(chunk));
      req.on("end", () => post(req, res, Buffer.concat(chunks)));
    } else {
      req.resume();
      unsupported(req, res);
    }
  });
  // Keep-alive: the worker reuses connections, so never close an idle one (Node's default
  // closes them after 5 s, which a pooled client may race with).
  server.keepAliveTimeout = 0;
  server.on("error", (e) => {
    console.error(`forward_handler.js: ${e.message}`);
    process.exit(1);
  });
  server.listen(args.port, "127.0.0.1", () => {
    process.stdout.write(`listening on http://127.0.0.1:${server.address().port}/records\n`);
  });
  process.on("SIGINT", () => process.exit(0));
}

main();
