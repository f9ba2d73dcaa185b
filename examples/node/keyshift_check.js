// What keyshift promises an application, checked from inside its handler: the Node.js twin of
// examples/python/keyshift_check.py. Node.js 20, standard library only.
//
// Shared by the example handlers (`forward_handler.js` behind `keyshift worker --forward`,
// `exec_handler.js` behind `keyshift worker --exec`): never two records of one key at once, and
// each key's records in order (a value that is an integer is read as the key's sequence number).
// Also the `--count-state` counter over the key's state (`nextCount`).
//
// The handlers here must say exactly what the Python ones say (tests read their reports), so
// this file also holds what Python gives those for free: its int() and float() over text
// (`pyInt`, `pyFloat`), its json.dumps() text (`dumps`) and an argparse-like command line
// (`parseArgs`). Not a module for other programs; `require` it from the handlers.
"use strict";

const FIELDS = ["topic", "partition", "offset", "timestamp_ms", "headers"];

// Python's `x in container`: a property of an object, an element of a list, a substring of a
// string; anything else is a TypeError, as in Python.
function contains(container, name) {
  if (typeof container === "string") return container.includes(name);
  if (Array.isArray(container)) return container.includes(name);
  if (container !== null && typeof container === "object") {
    return Object.prototype.hasOwnProperty.call(container, name);
  }
  throw new TypeError(`argument of type '${pyType(container)}' is not iterable`);
}

// Python's `record.get(name)` (undefined stands for a missing field); only objects have it.
function get(record, name) {
  if (record === null || typeof record !== "object" || Array.isArray(record)) {
    throw new TypeError(`'${pyType(record)}' object has no attribute 'get'`);
  }
  return Object.prototype.hasOwnProperty.call(record, name) ? record[name] : undefined;
}

function pyType(v) {
  if (v === null) return "NoneType";
  if (Array.isArray(v)) return "list";
  if (typeof v === "string") return "str";
  if (typeof v === "boolean") return "bool";
  if (typeof v === "number") return Number.isInteger(v) ? "int" : "float";
  if (typeof v === "object") return "dict";
  return typeof v;
}

// Python truthiness of a JSON value.
function truthy(v) {
  if (v === undefined || v === null || v === false || v === 0 || v === "") return false;
  if (Array.isArray(v)) return v.length > 0;
  if (typeof v === "object") return Object.keys(v).length > 0;
  return true;
}

// A key as Python's dicts and sets tell keys apart: 1, 1.0 and True are one key, "1" another.
// Lists and objects cannot be keys there (TypeError: unhashable type).
function keyId(key) {
  if (typeof key === "string") return "s" + key;
  if (typeof key === "number" || typeof key === "boolean") return "n" + String(Number(key));
  throw new TypeError(`unhashable type: '${pyType(key)}'`);
}

// Python's str() of a key, as in f"records of {key} ...".
function pyStr(v) {
  if (v === true) return "True";
  if (v === false) return "False";
  if (v === null || v === undefined) return "None";
  if (typeof v === "string") return v;
  return dumps(v);
}

class Seen {
  // What the handler saw. Node runs one callback at a time, so no lock is needed.
  constructor() {
    this.inside = new Set(); // keys being processed now
    this.inFlight = 0;
    this.maxInFlight = 0;
    this.received = 0;
    this.overlaps = 0; // a record arrived while its key was inside another request
    this.outOfOrder = 0; // a key's sequence number went backwards
    this.repeats = 0; // a (key, seq) seen before: a redelivery
    this.malformed = 0; // a body without the documented fields
    this.failed = 0; // answers that said the record failed
    this.withState = 0; // records that arrived with a state ("state" not null, or "state_base64")
    this.attempts = new Map(); // (key, seq) -> times received, for --fail-first
    this.last = new Map(); // key -> highest sequence number seen (a BigInt)
    this.done = new Set(); // (key, seq) done
  }

  // The handler starts a record; returns how many times it has received it.
  enter(key, seq = null, withState = false) {
    this.received += 1;
    if (withState) this.withState += 1;
    const id = pair(key, seq);
    const n = (this.attempts.get(id) || 0) + 1;
    this.attempts.set(id, n);
    const k = keyId(key);
    if (this.inside.has(k)) this.overlaps += 1;
    this.inside.add(k);
    this.inFlight += 1;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    return n;
  }

  // The handler finished a record; a failed one is not done (the worker retries it).
  leave(key, seq, failed) {
    const k = keyId(key);
    this.inside.delete(k);
    this.inFlight -= 1;
    if (failed) {
      this.failed += 1;
      return;
    }
    if (seq === null) return;
    const id = pair(key, seq);
    const last = this.last.has(k) ? this.last.get(k) : -1n;
    if (this.done.has(id)) this.repeats += 1;
    else if (seq < last) this.outOfOrder += 1;
    this.done.add(id);
    this.last.set(k, seq > last ? seq : last);
  }

  // The report, with the field names (and order) of the Python one.
  report() {
    return {
      received: this.received,
      distinct: this.done.size,
      keys: this.last.size,
      overlaps: this.overlaps,
      out_of_order: this.outOfOrder,
      repeats: this.repeats,
      malformed: this.malformed,
      failed: this.failed,
      max_in_flight: this.maxInFlight,
      with_state: this.withState,
    };
  }
}

function pair(key, seq) {
  // keyId first: it throws for keys Python cannot hash, as Python's (key, seq) would.
  return keyId(key) + "\u0000" + (seq === null ? "None" : seq.toString());
}

// Whether a record carries the documented fields of the worker's JSON body.
function wellFormed(record) {
  return (
    FIELDS.every((f) => contains(record, f)) &&
    (contains(record, "key") || contains(record, "key_base64")) &&
    (contains(record, "value") || contains(record, "value_base64"))
  );
}

// The record's key (text or base64) and its sequence number (a BigInt), if its value is one.
function keyAndSeq(record) {
  let key = get(record, "key");
  if (!truthy(key)) key = get(record, "key_base64");
  if (!truthy(key)) key = "";
  const value = get(record, "value");
  let seq = null;
  try {
    seq = pyInt(value === undefined ? "" : value);
  } catch (e) {
    if (!(e instanceof PyError) || e.kind === "OverflowError") throw e;
  }
  return [key, seq];
}

// --fail-key K fails every attempt of K's records; --fail-first K only the first one.
function shouldFail(key, attempt, failKey, failFirst) {
  return (
    (typeof key === "string" && key === failKey) ||
    (typeof key === "string" && key === failFirst && attempt === 1)
  );
}

// Whether a record arrived with its key's state (`"state": null` means the key has none).
function hasState(record) {
  const state = get(record, "state");
  return (state !== undefined && state !== null) || contains(record, "state_base64");
}

// --count-state: the key's new state, the decimal string of int(state or "0") + 1. Throws a
// PyError (ValueError) when the state is not an integer (or not UTF-8 text: "state_base64");
// the handler then fails the attempt.
function nextCount(record) {
  if (contains(record, "state_base64")) {
    throw new PyError("ValueError", "state is not UTF-8 text (state_base64), so not a count");
  }
  const state = get(record, "state");
  try {
    return pyDecimal(pyInt(truthy(state) ? state : "0") + 1n);
  } catch (e) {
    if (!(e instanceof PyError)) throw e;
    const shown = state === undefined ? "null" : dumps(state);
    throw new PyError("ValueError", `state is not a decimal integer: ${shown}`);
  }
}

// An exception as Python would raise it: kind is "ValueError", "TypeError", "OverflowError".
class PyError extends Error {
  constructor(kind, message) {
    super(message);
    this.kind = kind;
  }
}

// What Python's int() and float() strip around their text.
const SPACE = "[\\t\\n\\x0b\\x0c\\r \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]";
const STRIP = new RegExp(`^${SPACE}+|${SPACE}+$`, "gu");
const MAX_STR_DIGITS = 4300; // Python's limit on int <-> decimal text (sys.int_info)

// Python's int() of a JSON value, as a BigInt: text in base 10 (signs, surrounding
// whitespace, `_` between digits, any Unicode decimal digits), numbers truncated, booleans
// 1/0. Throws PyError(ValueError or TypeError) where Python raises.
function pyInt(v) {
  if (typeof v === "boolean") return v ? 1n : 0n;
  if (typeof v === "number") {
    if (!Number.isFinite(v)) throw new PyError("OverflowError", "cannot convert float infinity to integer");
    return BigInt(Math.trunc(v));
  }
  if (typeof v !== "string") {
    throw new PyError("TypeError", `int() argument must be a string, a bytes-like object or a real number, not '${pyType(v)}'`);
  }
  const text = asciiDigits(v.replace(STRIP, ""));
  if (text === null || !/^[+-]?[0-9](_?[0-9])*$/.test(text)) {
    throw new PyError("ValueError", `invalid literal for int() with base 10: ${pyRepr(v)}`);
  }
  const digits = text.replace(/[+_-]/g, "");
  if (digits.length > MAX_STR_DIGITS) {
    throw new PyError("ValueError", "Exceeds the limit (4300 digits) for integer string conversion");
  }
  const n = BigInt(digits);
  return text[0] === "-" ? -n : n;
}

// Python's str() of an int, which refuses more than MAX_STR_DIGITS digits.
function pyDecimal(n) {
  const text = n.toString();
  if (text.replace("-", "").length > MAX_STR_DIGITS) {
    throw new PyError("ValueError", "Exceeds the limit (4300 digits) for integer string conversion");
  }
  return text;
}

// Python's float() of command-line text.
function pyFloat(v) {
  const text = asciiDigits(v.replace(STRIP, ""));
  const bad = () => new PyError("ValueError", `could not convert string to float: ${pyRepr(v)}`);
  if (text === null) throw bad();
  const special = /^([+-]?)(inf|infinity|nan)$/i.exec(text);
  if (special) {
    const x = special[2].toLowerCase() === "nan" ? NaN : Infinity;
    return special[1] === "-" ? -x : x;
  }
  const d = "[0-9](_?[0-9])*";
  if (!new RegExp(`^[+-]?(${d}(\\.(${d})?)?|\\.${d})([eE][+-]?${d})?$`).test(text)) throw bad();
  return Number(text.replace(/_/g, ""));
}

// Unicode decimal digits (\p{Nd}) as ASCII ones, as Python's int() and float() read them; null
// when the text has other non-ASCII characters (which they refuse anyway).
function asciiDigits(text) {
  let out = "";
  for (const ch of text) {
    const cp = ch.codePointAt(0);
    if (cp < 0x80) out += ch;
    else if (/\p{Nd}/u.test(ch)) out += String(digitValue(cp));
    else return null;
  }
  return out;
}

// Unicode puts each script's decimal digits in runs of ten, 0 to 9.
function digitValue(cp) {
  let start = cp;
  while (/\p{Nd}/u.test(String.fromCodePoint(start - 1))) start -= 1;
  return (cp - start) % 10;
}

// Python's repr() of a string, for error messages.
function pyRepr(s) {
  const quote = s.includes("'") && !s.includes('"') ? '"' : "'";
  let out = quote;
  for (const ch of s) {
    const cp = ch.codePointAt(0);
    if (ch === quote || ch === "\\") out += "\\" + ch;
    else if (ch === "\n") out += "\\n";
    else if (ch === "\r") out += "\\r";
    else if (ch === "\t") out += "\\t";
    else if (cp < 0x100 && (cp < 0x20 || (cp >= 0x7f && cp <= 0xa0) || cp === 0xad)) {
      out += "\\x" + cp.toString(16).padStart(2, "0");
    } else if (cp !== 0x20 && /[\p{C}\p{Z}]/u.test(ch)) {
      out += cp < 0x10000 ? "\\u" + cp.toString(16).padStart(4, "0") : "\\U" + cp.toString(16).padStart(8, "0");
    } else out += ch;
  }
  return out + quote;
}

// Python's json.dumps(v): ", " and ": " between items, non-ASCII escaped as \uXXXX, so that
// answers, reports and error bodies are the same bytes in both languages.
function dumps(v) {
  if (v === null || v === undefined) return "null";
  if (v === true) return "true";
  if (v === false) return "false";
  if (typeof v === "bigint") return v.toString();
  if (typeof v === "number") {
    if (Number.isNaN(v)) return "NaN";
    if (!Number.isFinite(v)) return v > 0 ? "Infinity" : "-Infinity";
    return String(v);
  }
  if (typeof v === "string") {
    let out = '"';
    for (let i = 0; i < v.length; i++) {
      const c = v.charCodeAt(i);
      const ch = v[i];
      if (ch === '"') out += '\\"';
      else if (ch === "\\") out += "\\\\";
      else if (ch === "\n") out += "\\n";
      else if (ch === "\r") out += "\\r";
      else if (ch === "\t") out += "\\t";
      else if (ch === "\b") out += "\\b";
      else if (ch === "\f") out += "\\f";
      else if (c < 0x20 || c > 0x7e) out += "\\u" + c.toString(16).padStart(4, "0");
      else out += ch;
    }
    return out + '"';
  }
  if (Array.isArray(v)) return "[" + v.map(dumps).join(", ") + "]";
  return "{" + Object.keys(v).map((k) => dumps(k) + ": " + dumps(v[k])).join(", ") + "}";
}

// An argparse-like command line: `--name value`, `--name=value`, unique prefixes of names,
// `-h`/`--help`; errors print usage and exit with status 2, as argparse does. `options` maps
// each long option ("--port") to {type: "int" | "float" | "str" | "flag", default, help}.
// Returns the values under camelCase names ("--service-ms" -> serviceMs).
function parseArgs(prog, description, options, argv = process.argv.slice(2)) {
  const names = Object.keys(options);
  const metavar = (name) => name.slice(2).toUpperCase().replace(/-/g, "_");
  const usage =
    `usage: ${prog} [-h] ` +
    names.map((n) => (options[n].type === "flag" ? `[${n}]` : `[${n} ${metavar(n)}]`)).join(" ");
  const fail = (message) => {
    process.stderr.write(`${usage}\n${prog}: error: ${message}\n`);
    process.exit(2);
  };
  const camel = (name) => name.slice(2).replace(/-([a-z])/g, (_, c) => c.toUpperCase());
  const values = {};
  for (const n of names) values[camel(n)] = options[n].default === undefined ? null : options[n].default;
  const negativeNumber = /^-\d+$|^-\d*\.\d+$/;
  const unrecognized = [];
  let i = 0;
  while (i < argv.length) {
    const arg = argv[i++];
    if (arg === "--") {
      unrecognized.push(...argv.slice(i));
      break;
    }
    if (!arg.startsWith("-") || arg === "-" || negativeNumber.test(arg)) {
      unrecognized.push(arg);
      continue;
    }
    const eq = arg.startsWith("--") ? arg.indexOf("=") : -1;
    const given = eq >= 0 ? arg.slice(0, eq) : arg;
    let name = given === "-h" || given === "--help" || names.includes(given) ? given : null;
    if (!name && given.startsWith("--") && given.length > 2) {
      const matches = [...names, "--help"].filter((n) => n.startsWith(given));
      if (matches.length > 1) fail(`ambiguous option: ${given} could match ${matches.join(", ")}`);
      if (matches.length === 1) name = matches[0];
    }
    if (!name) {
      unrecognized.push(arg);
      continue;
    }
    if (name === "-h" || name === "--help") {
      if (eq >= 0) fail(`argument -h/--help: ignored explicit argument ${pyRepr(arg.slice(eq + 1))}`);
      process.stdout.write(`${usage}\n\n${description}\n\noptions:\n  -h, --help            show this help message and exit\n`);
      for (const n of names) {
        const head = options[n].type === "flag" ? n : `${n} ${metavar(n)}`;
        process.stdout.write(`  ${head.padEnd(20)}  ${options[n].help || ""}`.trimEnd() + "\n");
      }
      process.exit(0);
    }
    const opt = options[name];
    if (opt.type === "flag") {
      if (eq >= 0) fail(`argument ${name}: ignored explicit argument ${pyRepr(arg.slice(eq + 1))}`);
      values[camel(name)] = true;
      continue;
    }
    let text;
    if (eq >= 0) text = arg.slice(eq + 1);
    else if (i < argv.length && (!argv[i].startsWith("-") || argv[i] === "-" || negativeNumber.test(argv[i]))) text = argv[i++];
    else fail(`argument ${name}: expected one argument`);
    try {
      if (opt.type === "int") values[camel(name)] = Number(pyInt(text));
      else if (opt.type === "float") values[camel(name)] = pyFloat(text);
      else values[camel(name)] = text;
    } catch (e) {
      if (!(e instanceof PyError)) throw e;
      fail(`argument ${name}: invalid ${opt.type} value: ${pyRepr(text)}`);
    }
  }
  if (unrecognized.length) fail(`unrecognized arguments: ${unrecognized.join(" ")}`);
  return values;
}

// time.sleep() refuses what setTimeout would quietly round: a negative, NaN or infinite time.
function checkSleep(ms) {
  if (Number.isNaN(ms) || ms < 0) throw new PyError("ValueError", "sleep length must be non-negative");
  if (!Number.isFinite(ms)) throw new PyError("OverflowError", "timestamp too large to convert to C _PyTime_t");
}

module.exports = {
  Seen,
  wellFormed,
  keyAndSeq,
  shouldFail,
  hasState,
  nextCount,
  PyError,
  pyInt,
  pyFloat,
  pyStr,
  dumps,
  parseArgs,
  checkSleep,
};
