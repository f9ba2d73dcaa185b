//! The durable route state of a producer: which message set each moved key is in, as one
//! record per route change in a compacted Kafka topic keyed by the user key.
//!
//! The [`crate::protocol::Migrator`] emits a [`RouteChange`] whenever a key's route changes in a
//! way a restarted producer must know: a fence was acknowledged and the key's next set starts
//! (`entry: Some(..)`, written *before* any record of that set is sent), or a set back at the
//! key's home partition is safely started — a headed record of it is acknowledged — so the key
//! needs no entry any more (`entry: None`, a tombstone). A starting producer reads the topic to
//! its end, keeps the last value per key, and hands the live entries to
//! [`crate::protocol::Migrator::restore`]. The adapter does the I/O; this module only defines
//! the value and its codec.
//!
//! # Value format (version 1)
//!
//! The record key is the user key, unchanged. The value uses the layout rules of
//! [`crate::protocol::RouteHeader`] (a version byte, then unsigned LEB128 varints):
//!
//! ```text
//! 0x01 | set_index (u32) | partition (u32) | from_partition (u32) | fence_offset (u64, ≤ i64::MAX)
//! ```
//!
//! `partition` is where the key's current set goes; `set_index`, `from_partition` and
//! `fence_offset` are the [`RouteHeader`] every record of that set carries. A null value (a
//! Kafka tombstone) means "the key is at its home partition and needs no header".
//!
//! Worked test vector: `RouteEntry { partition: 2, route: RouteHeader { set_index: 3,
//! from_partition: 7, fence_offset: 300 } }` encodes as `[0x01, 0x03, 0x02, 0x07, 0xAC, 0x02]`.
//!
//! Decoding is as strict as the headers' (overflow, truncation and trailing bytes are errors);
//! an unknown version is [`HeaderError::UnknownVersion`] so that an older build refuses to start
//! on state it cannot read rather than guessing routes.

use super::header::{put_varint, HeaderError, Reader, RouteHeader};

/// Name used in decoding errors of route-state values.
pub const ROUTE_STATE: &str = "keyshift-routes value";

/// Layout version written by this build.
const VERSION: u8 = 1;

/// A key's current message set as recorded in the route state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RouteEntry {
    /// The partition the key's current set goes to.
    pub partition: u32,
    /// The header every record of the current set carries (its set index, the partition of
    /// the previous set and the fence that closed it).
    pub route: RouteHeader,
}

/// One change of the route state, to be written (in the order given) as a record keyed by
/// `key` with value [`RouteEntry::encode`], or a tombstone when `entry` is `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteChange {
    /// The user key.
    pub key: Box<[u8]>,
    /// The key's new current set, or `None`: back home, no entry needed.
    pub entry: Option<RouteEntry>,
}

impl RouteEntry {
    /// The encoded value.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + 5 * 3 + 10);
        out.push(VERSION);
        put_varint(&mut out, u64::from(self.route.set_index));
        put_varint(&mut out, u64::from(self.partition));
        put_varint(&mut out, u64::from(self.route.from_partition));
        debug_assert!(self.route.fence_offset >= 0, "negative fence offset");
        put_varint(&mut out, self.route.fence_offset as u64);
        out
    }

    /// Decodes a value written by [`RouteEntry::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, HeaderError> {
        let mut r = Reader::new(ROUTE_STATE, bytes)?;
        let set_index = r.u32("set_index")?;
        let partition = r.u32("partition")?;
        let from_partition = r.u32("from_partition")?;
        let fence_offset = r.last_offset("fence_offset")?;
        Ok(Self {
            partition,
            route: RouteHeader {
                set_index,
                from_partition,
                fence_offset,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_vector_and_round_trip() {
        let entry = RouteEntry {
            partition: 2,
            route: RouteHeader {
                set_index: 3,
                from_partition: 7,
                fence_offset: 300,
            },
        };
        assert_eq!(entry.encode(), [0x01, 0x03, 0x02, 0x07, 0xAC, 0x02]);
        assert_eq!(RouteEntry::decode(&entry.encode()), Ok(entry));
        let max = RouteEntry {
            partition: u32::MAX,
            route: RouteHeader {
                set_index: u32::MAX,
                from_partition: u32::MAX,
                fence_offset: i64::MAX,
            },
        };
        assert_eq!(RouteEntry::decode(&max.encode()), Ok(max));
    }

    #[test]
    fn bad_values_are_named_errors() {
        assert_eq!(
            RouteEntry::decode(&[]),
            Err(HeaderError::Empty {
                header: ROUTE_STATE
            })
        );
        assert_eq!(
            RouteEntry::decode(&[0x02, 0x00]),
            Err(HeaderError::UnknownVersion {
                header: ROUTE_STATE,
                version: 2
            })
        );
        assert_eq!(
            RouteEntry::decode(&[0x01, 0x03, 0x02, 0x07]),
            Err(HeaderError::Truncated {
                header: ROUTE_STATE,
                field: "fence_offset"
            })
        );
        assert_eq!(
            RouteEntry::decode(&[0x01, 0x03, 0x02, 0x07, 0x01, 0x00]),
            Err(HeaderError::TrailingBytes {
                header: ROUTE_STATE,
                extra: 1
            })
        );
        let negative = [
            0x01, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ];
        assert_eq!(
            RouteEntry::decode(&negative),
            Err(HeaderError::NegativeOffset(-1))
        );
    }
}
