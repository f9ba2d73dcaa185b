//! Measurement records of experiments: what a load generator puts in a record's value so that
//! the consumer can tell how long it took and whether its key's records came in order.
//!
//! A [`Probe`] is a small JSON object (`{"seq":7,"sent_us":1700000000000000,"body":"..."}`) so
//! that any client — kafka-python, kcat, a Java producer — can write and read one. The
//! [`SequenceCheck`] consumes `(key, seq)` pairs in processing order and classifies each as in
//! order, a duplicate (a redelivery of something already processed) or an order violation (a
//! record processed after a later record of its key).

use std::collections::BTreeSet;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

/// The value of an experiment record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    /// Per-key sequence number, from 0, without gaps, in send order.
    pub seq: u64,
    /// When the load generator sent it: microseconds since the Unix epoch.
    pub sent_us: u64,
    /// The application payload (the seed sends `"<key> message body"`).
    #[serde(default)]
    pub body: String,
}

/// Why bytes are not a [`Probe`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("record value is not a keyshift probe ({0}); expected JSON like {{\"seq\":0,\"sent_us\":0,\"body\":\"\"}}")]
pub struct ProbeError(String);

impl Probe {
    /// The JSON bytes of this probe.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a probe always serialises")
    }

    /// Parses a record value written by [`Probe::encode`] or by any client following the format.
    pub fn decode(bytes: &[u8]) -> Result<Self, ProbeError> {
        serde_json::from_slice(bytes).map_err(|e| ProbeError(e.to_string()))
    }
}

/// What [`SequenceCheck::observe`] concluded about one processed record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqVerdict {
    /// The next record of its key, or the first one seen.
    InOrder,
    /// Already processed once: over-consumption, harmless for order.
    Duplicate,
    /// Processed after a later record of its key had been processed.
    Violation,
    /// Ahead of the next expected one: earlier records of the key were skipped (so far).
    Gap,
}

/// Per-key sequence bookkeeping for order checking.
///
/// Memory is one entry per key seen plus the sequence numbers skipped by gaps; gaps wider than
/// `max_gap` are recorded only up to `max_gap` numbers, so a corrupt sequence number cannot
/// exhaust memory (late arrivals beyond that window count as duplicates, never as in order).
#[derive(Debug, Clone)]
pub struct SequenceCheck {
    keys: FxHashMap<Box<[u8]>, KeySeq>,
    max_gap: u64,
    violations: u64,
    duplicates: u64,
}

#[derive(Debug, Clone, Default)]
struct KeySeq {
    next: u64,
    missing: BTreeSet<u64>,
}

impl Default for SequenceCheck {
    fn default() -> Self {
        Self::new(100_000)
    }
}

impl SequenceCheck {
    /// A check that remembers at most `max_gap` skipped numbers per gap.
    pub fn new(max_gap: u64) -> Self {
        Self {
            keys: FxHashMap::default(),
            max_gap,
            violations: 0,
            duplicates: 0,
        }
    }

    /// Records that `key`'s record `seq` was processed and classifies it.
    ///
    /// When `expect_from_zero` is true the key's first expected number is 0 (a single consumer
    /// of the whole stream); when false the first record seen starts the key's sequence (a
    /// consumer that sees only part of the stream, e.g. one worker of several).
    pub fn observe(&mut self, key: &[u8], seq: u64, expect_from_zero: bool) -> SeqVerdict {
        let entry = match self.keys.get_mut(key) {
            Some(e) => e,
            None => {
                let start = if expect_from_zero { 0 } else { seq };
                self.keys.entry(key.into()).or_insert(KeySeq {
                    next: start,
                    missing: BTreeSet::new(),
                })
            }
        };
        let verdict = if seq == entry.next {
            entry.next += 1;
            SeqVerdict::InOrder
        } else if seq > entry.next {
            let from = entry.next.max(seq.saturating_sub(self.max_gap));
            entry.missing.extend(from..seq);
            entry.next = seq + 1;
            SeqVerdict::Gap
        } else if entry.missing.remove(&seq) {
            SeqVerdict::Violation
        } else {
            SeqVerdict::Duplicate
        };
        match verdict {
            SeqVerdict::Violation => self.violations += 1,
            SeqVerdict::Duplicate => self.duplicates += 1,
            _ => {}
        }
        verdict
    }

    /// Records processed after a later record of their key.
    pub fn violations(&self) -> u64 {
        self.violations
    }

    /// Records processed more than once.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// Sequence numbers skipped and not (yet) processed, over all keys: records still missing.
    pub fn missing(&self) -> u64 {
        self.keys.values().map(|k| k.missing.len() as u64).sum()
    }

    /// Keys seen.
    pub fn keys(&self) -> usize {
        self.keys.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_round_trips_and_rejects_garbage() {
        let p = Probe {
            seq: 7,
            sent_us: 1_700_000_000_000_000,
            body: "location_3 message body".into(),
        };
        assert_eq!(Probe::decode(&p.encode()).unwrap(), p);
        // Written by hand, as another client would; body is optional.
        let q = Probe::decode(br#"{"seq":1,"sent_us":2}"#).unwrap();
        assert_eq!((q.seq, q.sent_us, q.body.as_str()), (1, 2, ""));
        let err = Probe::decode(b"\xff\x00").unwrap_err().to_string();
        assert!(err.contains("not a keyshift probe"), "{err}");
    }

    #[test]
    fn classifies_in_order_duplicates_gaps_and_violations() {
        let mut c = SequenceCheck::default();
        assert_eq!(c.observe(b"k", 0, true), SeqVerdict::InOrder);
        assert_eq!(c.observe(b"k", 1, true), SeqVerdict::InOrder);
        assert_eq!(c.observe(b"k", 1, true), SeqVerdict::Duplicate);
        assert_eq!(c.observe(b"k", 4, true), SeqVerdict::Gap);
        assert_eq!(c.missing(), 2);
        assert_eq!(c.observe(b"k", 2, true), SeqVerdict::Violation);
        assert_eq!(c.observe(b"k", 2, true), SeqVerdict::Duplicate);
        assert_eq!(c.observe(b"k", 3, true), SeqVerdict::Violation);
        assert_eq!(c.observe(b"k", 5, true), SeqVerdict::InOrder);
        assert_eq!((c.violations(), c.duplicates(), c.missing()), (2, 2, 0));
        // Another key, seen mid-stream by a consumer of part of it.
        assert_eq!(c.observe(b"j", 40, false), SeqVerdict::InOrder);
        assert_eq!(c.observe(b"j", 39, false), SeqVerdict::Duplicate);
        // From zero, a first record that is not 0 is a gap.
        assert_eq!(c.observe(b"z", 3, true), SeqVerdict::Gap);
        assert_eq!(c.keys(), 3);
    }

    #[test]
    fn huge_gaps_are_bounded() {
        let mut c = SequenceCheck::new(10);
        assert_eq!(c.observe(b"k", u64::MAX - 1, true), SeqVerdict::Gap);
        assert_eq!(c.missing(), 10);
    }
}
