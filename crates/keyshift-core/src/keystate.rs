//! Per-key state that follows its key across migrations and rebalances: the pure half.
//!
//! Why: a handler that keeps state per key (a counter, a running total, a session) must see, on
//! whichever worker processes a key's record, the state left by that key's previous record —
//! also when the previous record ran on another worker because the key moved to another
//! partition or the partition moved to another member — and a record redelivered after a crash
//! must not be applied twice. The order gate already guarantees that a key's record is released
//! only after the key's previous record is processed (the fence, then the old partition's
//! commit); this module decides what a worker must know at that moment.
//!
//! How: a key's state is one [`StateEntry`] in a compacted changelog topic keyed by the user
//! key, written (and acknowledged) before the record that produced it counts as processed. The
//! entry names that record (its partition and offset), so:
//! - **Already applied**: a record at or below the entry's offset on the entry's partition was
//!   applied before — a redelivery after a crash or a lost commit — and is not applied again
//!   ([`StateEntry::covers`]). Records of a key never go back to an earlier offset of a
//!   partition after the key moved on: the gate releases the new partition's records only once
//!   the old partition's commit passed the fence, so nothing before it is redelivered.
//! - **Fresh or stale**: a worker's cached entry is trusted only when this worker wrote it for
//!   the key's previous record ([`Provenance::vouches_for`]): same partition, same assignment
//!   of that partition to this worker (nobody else owned it meanwhile), same message set (the
//!   record's route header; a key that left and came back is in a new set, since every move
//!   writes a fence and starts one). Otherwise — first sight of a key, a key that arrived by a
//!   migration, a partition newly assigned — the worker reads the changelog up to its end first:
//!   the previous record's entry was acknowledged before that record counted as processed, so
//!   it is there.
//!
//! # Entry format (version 1)
//!
//! ```text
//! byte 0       version, 0x01
//! byte 1       flags: bit 0 set when the key has a state (clear: deleted, only the marker kept)
//! bytes 2..6   partition of the record that wrote it (u32, big-endian)
//! bytes 6..14  offset of that record (i64, big-endian, never negative)
//! bytes 14..   the state's bytes (none when deleted)
//! ```
//!
//! A deleted state keeps its marker (rather than a Kafka tombstone), so a redelivered record of
//! a key whose state was deleted is still recognised as applied. Decoding is strict: anything
//! else is a [`StateEntryError`], never a guess.

use crate::protocol::RouteHeader;

/// The layout version this build writes and reads.
pub const STATE_ENTRY_VERSION: u8 = 1;
const HEADER_LEN: usize = 14;

/// A key's state as written to the changelog, with the record that wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateEntry {
    /// Partition of the record whose processing wrote this entry.
    pub partition: u32,
    /// That record's offset.
    pub offset: i64,
    /// The key's state after it; `None` when the handler deleted it.
    pub value: Option<Vec<u8>>,
}

/// Why bytes are not a state entry; each names what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateEntryError {
    /// Fewer bytes than the fixed part.
    #[error("state entry too short: {len} bytes, expected at least {HEADER_LEN}")]
    Truncated {
        /// Bytes received.
        len: usize,
    },
    /// A version this build does not read.
    #[error("state entry has unknown version {version} (this build reads version {STATE_ENTRY_VERSION})")]
    UnknownVersion {
        /// The version byte.
        version: u8,
    },
    /// Flag bits this version does not define, or bytes after a deleted state's marker.
    #[error("state entry is malformed: {reason}")]
    Malformed {
        /// What is wrong.
        reason: &'static str,
    },
}

impl StateEntry {
    /// Its changelog value (see the [module docs](self) for the layout).
    pub fn encode(&self) -> Vec<u8> {
        let value = self.value.as_deref().unwrap_or_default();
        let mut out = Vec::with_capacity(HEADER_LEN + value.len());
        out.push(STATE_ENTRY_VERSION);
        out.push(u8::from(self.value.is_some()));
        out.extend_from_slice(&self.partition.to_be_bytes());
        out.extend_from_slice(&self.offset.to_be_bytes());
        out.extend_from_slice(value);
        out
    }

    /// Reads a changelog value written by [`encode`](Self::encode).
    pub fn decode(bytes: &[u8]) -> Result<Self, StateEntryError> {
        if let Some(&version) = bytes.first() {
            if version != STATE_ENTRY_VERSION {
                return Err(StateEntryError::UnknownVersion { version });
            }
        }
        if bytes.len() < HEADER_LEN {
            return Err(StateEntryError::Truncated { len: bytes.len() });
        }
        let flags = bytes[1];
        if flags & !1 != 0 {
            return Err(StateEntryError::Malformed {
                reason: "unknown flag bits",
            });
        }
        let partition = u32::from_be_bytes(bytes[2..6].try_into().expect("4 bytes"));
        let offset = i64::from_be_bytes(bytes[6..14].try_into().expect("8 bytes"));
        if offset < 0 {
            return Err(StateEntryError::Malformed {
                reason: "negative offset",
            });
        }
        let rest = &bytes[HEADER_LEN..];
        let value = if flags & 1 == 1 {
            Some(rest.to_vec())
        } else if rest.is_empty() {
            None
        } else {
            return Err(StateEntryError::Malformed {
                reason: "bytes after a deleted state's marker",
            });
        };
        Ok(Self {
            partition,
            offset,
            value,
        })
    }

    /// Whether the record at `partition`/`offset` was already applied to this state (it is the
    /// record that wrote it, or an earlier one of the same partition): a redelivery.
    pub fn covers(&self, partition: u32, offset: i64) -> bool {
        self.partition == partition && offset <= self.offset
    }
}

/// Where a worker's cached entry came from, when the worker wrote it itself: what it needs to
/// trust the entry for the key's next record without reading the changelog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Provenance {
    /// Partition of the record that wrote it.
    pub partition: u32,
    /// Which assignment of that partition to this worker the record was consumed under.
    pub assignment: u64,
    /// The record's route header: its message set (`None` for a key's home set).
    pub route: Option<RouteHeader>,
}

impl Provenance {
    /// Whether an entry this worker wrote for a record with this provenance is the key's
    /// latest state when the key's next record is at `partition`, consumed under `assignment`,
    /// with `route`: only the owner of a partition processes its records, and a key's message
    /// set changes whenever it moves, so same partition, same unbroken ownership and same set
    /// mean no other worker processed the key in between.
    pub fn vouches_for(&self, partition: u32, assignment: u64, route: Option<RouteHeader>) -> bool {
        self.partition == partition && self.assignment == assignment && self.route == route
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_hostile_bytes_are_errors() {
        for value in [None, Some(vec![]), Some(b"42".to_vec())] {
            let e = StateEntry {
                partition: 7,
                offset: 300,
                value,
            };
            assert_eq!(StateEntry::decode(&e.encode()), Ok(e.clone()));
        }
        let good = StateEntry {
            partition: 1,
            offset: 2,
            value: None,
        }
        .encode();
        assert_eq!(
            StateEntry::decode(&good[..5]),
            Err(StateEntryError::Truncated { len: 5 })
        );
        assert!(matches!(
            StateEntry::decode(&[2, 0]),
            Err(StateEntryError::UnknownVersion { version: 2 })
        ));
        let mut flags = good.clone();
        flags[1] = 4;
        assert!(matches!(
            StateEntry::decode(&flags),
            Err(StateEntryError::Malformed { .. })
        ));
        let mut trailing = good.clone();
        trailing.push(9);
        assert!(StateEntry::decode(&trailing).is_err());
        let mut negative = good;
        negative[6] = 0x80;
        assert!(StateEntry::decode(&negative).is_err());
        assert_eq!(
            StateEntry::decode(&[]),
            Err(StateEntryError::Truncated { len: 0 })
        );
    }

    #[test]
    fn covers_only_the_writer_and_earlier_records_of_its_partition() {
        let e = StateEntry {
            partition: 3,
            offset: 10,
            value: None,
        };
        assert!(e.covers(3, 10) && e.covers(3, 0));
        assert!(!e.covers(3, 11) && !e.covers(4, 5));
    }

    #[test]
    fn provenance_vouches_only_for_the_same_partition_ownership_and_set() {
        let route = RouteHeader {
            set_index: 1,
            from_partition: 2,
            fence_offset: 40,
        };
        let p = Provenance {
            partition: 5,
            assignment: 3,
            route: Some(route),
        };
        assert!(p.vouches_for(5, 3, Some(route)));
        assert!(!p.vouches_for(6, 3, Some(route)), "another partition");
        assert!(!p.vouches_for(5, 4, Some(route)), "reassigned meanwhile");
        assert!(!p.vouches_for(5, 3, None), "another message set");
        let back = RouteHeader {
            set_index: 3,
            from_partition: 8,
            fence_offset: 90,
        };
        assert!(!p.vouches_for(5, 3, Some(back)), "left and came back");
    }
}
