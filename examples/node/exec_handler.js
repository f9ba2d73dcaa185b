#!/usr/bin/env node
// An application behind `keyshift worker --exec`, in Node.js's standard library only.
//
//     keyshift worker --bootstrap-servers localhost:9092 --topic orders --concurrency 32 \
//         --exec "node examples/node/exec_handler.js --service-ms 5"
//
// (Node.js 20 or later, no npm packages.) The worker writes one JSON line per record to this
// process's standard input: the `--forward` body plus `"id"`,
//
//     {"id": 17, "topic": "orders", "partition": 3, "offset": 1042, "timestamp_ms": ...,
//      "key": "customer-7", "value": "...", "headers": {...}}
//
// and reads one line per record from its standard output: `{"id": 17}` when record 17 is done,
// `{"id": 17, "error": "why"}` when it failed. Answers may come in any order, so records run
// concurrently here (each waits on a timer, as it would on a database), up to the worker's
// `--concurrency` at once (never two of one key). Logs go to standard error: standard output
// carries only answers. End of input means the worker is stopping: answer what is running, then
// exit.
//
// With a state topic (`keyshift worker --state ...`) each line also carries the key's state:
// `"state": "<UTF-8 text>"`, `"state": null` when the key has none, or `"state_base64"` in place
// of `"state"` for bytes that are not UTF-8. A done answer then says what to do with it:
// `{"id": 17, "state": "<text>"}` (or `"state_base64"`) sets the key's state, `"state": null`
// deletes it, leaving `"state"` out keeps it unchanged. `--count-state` answers
// `{"id": 17, "state": "<int(state or "0") + 1>"}`, a count of the key's records (a state that is
// not an integer fails the attempt); a failed attempt never changes the state.
//
// Like `forward_handler.js` it waits `--service-ms` per record and checks keyshift's promises;
// `--report-dir DIR` writes what it saw to `DIR/<pid>.json` (every 200 ms and at exit; the
// fields of `GET /report` there, see keyshift_check.js), `--fail-key K` fails every attempt of
// K's records, `--fail-first K` the first attempt of each, and `--exit-after N` exits (status 3)
// after answering N records, to show that the worker starts it again. It is
// examples/python/exec_handler.py in Node.js: same flags, answers and report. (Ids are read as
// JavaScript numbers: exact up to 2^53, far beyond the worker's, which count from 1.)
"use strict";

const fs = require("node:fs");
const process = require("node:process");
const readline = require("node:readline");
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

const DESCRIPTION = "An application behind `keyshift worker --exec`, in Node.js's standard library only.";

function main() {
  const args = parseArgs("exec_handler.js", DESCRIPTION, {
    "--service-ms": { type: "float", default: 5.0 },
    "--fail-key": { type: "str", help: "fail every attempt of this key" },
    "--fail-first": { type: "str", help: "fail the first attempt of each record of this key" },
    "--report-dir": { type: "str" },
    "--exit-after": { type: "int", default: 0 },
    "--count-state": { type: "flag", default: false, help: 'answer the state int(state or "0") + 1' },
  });
  const seen = new Seen();
  let answered = 0;
  let running = 0; // records waiting on their timer
  let ended = false; // end of input
  let broken = false; // a line was not JSON: stop reading, finish, exit 1 (as Python's exception)
  let exiting = false; // nothing more is read or answered
  const dir = args.reportDir;
  const report = dir ? (dir.endsWith("/") ? dir : dir + "/") + `${process.pid}.json` : null;

  function writeReport() {
    if (report) {
      const tmp = report + ".tmp";
      fs.writeFileSync(tmp, dumps(seen.report()));
      fs.renameSync(tmp, report);
    }
  }

  function exit(status) {
    exiting = true;
    process.stdout.write("", () => process.exit(status));
  }

  function answer(line) {
    if (exiting) return;
    process.stdout.write(dumps(line) + "\n");
    answered += 1;
    if (args.exitAfter && answered >= args.exitAfter) {
      try {
        writeReport();
      } catch (e) {
        console.error("exec_handler.js: cannot write the report:", e.message);
        return; // as in Python, where the error ends this record's thread before os._exit
      }
      exit(3);
    }
  }

  // An error where Python's record thread would die of an exception: logged, no answer.
  function died(error) {
    console.error("exec_handler.js: a record's work failed:", error);
  }

  function work(record) {
    let key, seq, attempt;
    try {
      [key, seq] = keyAndSeq(record);
      attempt = seen.enter(key, seq, hasState(record));
      checkSleep(args.serviceMs);
    } catch (e) {
      died(e);
      return;
    }
    running += 1;
    setTimeout(() => {
      try {
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
        if (!Object.prototype.hasOwnProperty.call(record, "id")) {
          throw new PyError("KeyError", "the record has no \"id\"");
        }
        if (failed) answer({ id: record.id, error });
        else if (args.countState) answer({ id: record.id, state });
        else answer({ id: record.id });
      } catch (e) {
        died(e);
      } finally {
        running -= 1;
        finishIfDone();
      }
    }, args.serviceMs);
  }

  // After end of input (or a line that is not JSON), once the records running are answered.
  function finishIfDone() {
    if (exiting || running > 0) return;
    if (broken) {
      exit(1);
    } else if (ended) {
      try {
        writeReport();
      } catch (e) {
        console.error("exec_handler.js: cannot write the report:", e.message);
        exit(1);
        return;
      }
      console.error("end of input: exiting");
      exit(0);
    }
  }

  const reporter = setInterval(() => {
    try {
      writeReport();
    } catch (e) {
      console.error("exec_handler.js: cannot write the report:", e.message);
      clearInterval(reporter); // as Python's reporting thread, which dies of it
    }
  }, 200);
  reporter.unref();

  process.stdout.on("error", (e) => console.error("exec_handler.js: standard output:", e.message));
  const lines = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
  lines.on("line", (line) => {
    if (exiting || broken) return;
    let record;
    try {
      record = JSON.parse(line);
      if (!wellFormed(record)) seen.malformed += 1;
    } catch (e) {
      console.error("exec_handler.js: input line is not a record, stopping:", e.message);
      broken = true;
      lines.close();
      process.stdin.destroy();
      finishIfDone();
      return;
    }
    work(record);
  });
  lines.on("close", () => {
    ended = true;
    finishIfDone();
  });
}

main();
