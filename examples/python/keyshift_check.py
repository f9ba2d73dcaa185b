"""What keyshift promises an application, checked from inside its handler.

Shared by the example handlers (`forward_handler.py` behind `keyshift worker --forward`,
`exec_handler.py` behind `keyshift worker --exec`): never two records of one key at once, and
each key's records in order (a value that is an integer is read as the key's sequence number).
Also the `--count-state` counter over the key's state (`next_count`). Standard library only.
`examples/node/keyshift_check.js` is the same in Node.js; both write the same reports.
"""

import json
import threading

FIELDS = ("topic", "partition", "offset", "timestamp_ms", "headers")


class Seen:
    """What the handler saw, under one lock (requests run on many threads)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.inside = set()  # keys being processed now
        self.in_flight = 0
        self.max_in_flight = 0
        self.received = 0
        self.overlaps = 0  # a record arrived while its key was inside another request
        self.out_of_order = 0  # a key's sequence number went backwards
        self.repeats = 0  # a (key, seq) seen before: a redelivery
        self.malformed = 0  # a body without the documented fields
        self.failed = 0  # answers that said the record failed
        self.with_state = 0  # records that arrived with a state ("state" not null, or "state_base64")
        self.attempts = {}  # (key, seq) -> times received, for --fail-first
        self.last = {}  # key -> highest sequence number seen
        self.done = set()

    def enter(self, key, seq=None, with_state=False):
        """The handler starts a record; returns how many times it has received it."""
        with self.lock:
            self.received += 1
            if with_state:
                self.with_state += 1
            n = self.attempts.get((key, seq), 0) + 1
            self.attempts[(key, seq)] = n
            if key in self.inside:
                self.overlaps += 1
            self.inside.add(key)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            return n

    def leave(self, key, seq, failed):
        """The handler finished a record; a failed one is not done (the worker retries it)."""
        with self.lock:
            self.inside.discard(key)
            self.in_flight -= 1
            if failed:
                self.failed += 1
                return
            if seq is None:
                return
            if (key, seq) in self.done:
                self.repeats += 1
            elif seq < self.last.get(key, -1):
                self.out_of_order += 1
            self.done.add((key, seq))
            self.last[key] = max(seq, self.last.get(key, -1))

    def report(self):
        with self.lock:
            return {
                "received": self.received,
                "distinct": len(self.done),
                "keys": len(self.last),
                "overlaps": self.overlaps,
                "out_of_order": self.out_of_order,
                "repeats": self.repeats,
                "malformed": self.malformed,
                "failed": self.failed,
                "max_in_flight": self.max_in_flight,
                "with_state": self.with_state,
            }


def well_formed(record):
    """Whether a record carries the documented fields of the worker's JSON body."""
    return all(f in record for f in FIELDS) and (
        ("key" in record or "key_base64" in record)
        and ("value" in record or "value_base64" in record)
    )


def key_and_seq(record):
    """The record's key (text or base64) and its sequence number, if its value is one."""
    key = record.get("key") or record.get("key_base64") or ""
    try:
        seq = int(record.get("value", ""))
    except (TypeError, ValueError):
        seq = None
    return key, seq


def should_fail(key, attempt, fail_key, fail_first):
    """--fail-key K fails every attempt of K's records; --fail-first K only the first one."""
    return key == fail_key or (key == fail_first and attempt == 1)


def has_state(record):
    """Whether a record arrived with its key's state (`"state": null` means the key has none)."""
    return record.get("state") is not None or "state_base64" in record


def next_count(record):
    """--count-state: the key's new state, the decimal string of int(state or "0") + 1.

    Raises ValueError when the state is not an integer (or not UTF-8 text: `"state_base64"`);
    the handler then fails the attempt.
    """
    if "state_base64" in record:
        raise ValueError("state is not UTF-8 text (state_base64), so not a count")
    state = record.get("state")
    try:
        return str(int(state or "0") + 1)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"state is not a decimal integer: {json.dumps(state)}") from None
