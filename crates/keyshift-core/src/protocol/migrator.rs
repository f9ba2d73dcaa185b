//! Producer side of the fenced migration: when to write a fence and which header a record carries.
//!
//! The [`Migrator`] sits between an ordered strategy and the producer. For every record the
//! strategy has placed, [`Migrator::on_record`] answers with a [`Step`]: send it (with the
//! route header of the key's current message set, if that set needs one), write a fence first,
//! or hold it because a fence of its key is still in flight. Only the moving key waits, for
//! about one produce round trip; every other key is answered [`Step::Send`] at once.
//!
//! # Message sets, entries and when an entry may go
//!
//! A key's records form message sets: the maximal runs that went to one partition. The set at
//! the key's home (hash) partition needs no header while the key never left. A key has an
//! entry only while its current set needs a header or a fence of it is in flight, so the map
//! holds the keys a strategy keeps away from home (bounded by its route table) plus the keys
//! between a fence and their next record — not every key ever seen. A key that moved away and
//! then falls silent keeps its entry until its next record: forgetting it would send that
//! record home without a fence, ahead of records still unprocessed on the old partition.
//!
//! While an entry exists, every record of the key's current set carries the set's
//! [`RouteHeader`]. For a set on a non-home partition this lasts until the key moves again. For a
//! set back at home the entry is dropped as soon as the set's first record is sent with its
//! header. That is safe because:
//!
//! - later records of the key go to the same partition after it, and the consumer's
//!   [`crate::protocol::OrderGate`] releases a key's records on a partition strictly in offset
//!   order (per-key FIFO): they cannot pass the headed record, which waits for the fence;
//! - the consumer never commits past an unprocessed record, so after a crash or rebalance
//!   redelivery restarts at or before the headed record, which is gated again; a later record
//!   without header is only ever delivered first if the headed one was already processed, and
//!   that happened after the fence was;
//! - it relies on the producer writing a partition's records in order without gaps (an
//!   idempotent producer), the same assumption per-key order inside one partition needs.
//!
//! The fence record itself belongs to the set it closes: it carries that set's route header
//! (if any) next to its [`FenceHeader`]. Without it a key that moves A → B → C before any record
//! reached B would leave C waiting only for B's fence, which nothing orders after A's records.

use rustc_hash::FxHashMap;

use super::header::{FenceHeader, RouteHeader};
use crate::hash::Hasher;
use crate::ParamError;

/// What the producer must do with one record, answered by [`Migrator::on_record`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send the record to `partition`, with header [`super::ROUTE_HEADER`] = `header` if any.
    Send {
        /// Partition to send to.
        partition: u32,
        /// Route header the record must carry.
        header: Option<RouteHeader>,
    },
    /// Write a fence first: a record of `key` with an empty value on `fence_partition`, with
    /// header [`super::FENCE_HEADER`] = `header` and, if `route` is set, header
    /// [`super::ROUTE_HEADER`] = `route`. Then report its offset with [`Migrator::fence_acked`]
    /// (or [`Migrator::fence_failed`]). The triggering record and every later record of the key
    /// must be held and offered again, in order, after that report.
    Fence {
        /// The key that moves.
        key: Box<[u8]>,
        /// The key's old partition, where the fence goes.
        fence_partition: u32,
        /// The fence header: the set the key moves into and its new partition.
        header: FenceHeader,
        /// The route header of the set the fence closes, which the fence record also carries.
        route: Option<RouteHeader>,
    },
    /// A fence of this key is in flight: queue the record and offer it again after the report.
    Hold,
}

/// Per-key state of a key whose current set needs a header or whose fence is in flight.
#[derive(Debug, Clone)]
struct Entry {
    /// Partition of the key's current set.
    partition: u32,
    /// Index of the current set (0 = the home set the key started in).
    set_index: u32,
    /// Header every record of the current set carries.
    route: Option<RouteHeader>,
    /// A fence written (or being written) to close the current set: (new partition, new set).
    fence: Option<(u32, u32)>,
}

/// Producer-side state machine of fenced migration. See the module docs.
#[derive(Debug, Clone)]
pub struct Migrator {
    partitions: u32,
    hasher: Hasher,
    entries: FxHashMap<Box<[u8]>, Entry>,
    migrations: u64,
}

impl Migrator {
    /// A migrator for a topic of `partitions` partitions whose keys' home is `hasher`'s choice.
    pub fn new(partitions: u32, hasher: Hasher) -> Result<Self, ParamError> {
        if partitions == 0 {
            return Err(ParamError::new(
                "partitions",
                "must be at least 1 to place records",
            ));
        }
        Ok(Self {
            partitions,
            hasher,
            entries: FxHashMap::default(),
            migrations: 0,
        })
    }

    /// The key's home partition (where records go with no entry).
    pub fn home(&self, key: &[u8]) -> u32 {
        self.hasher.partition(key, self.partitions)
    }

    /// The partition of the key's current set (its last records went there).
    pub fn current(&self, key: &[u8]) -> u32 {
        match self.entries.get(key) {
            Some(e) => e.partition,
            None => self.home(key),
        }
    }

    /// Decides what to do with the next record of `key`, which the strategy placed on
    /// `partition` (< the partition count).
    pub fn on_record(&mut self, key: &[u8], partition: u32) -> Step {
        debug_assert!(partition < self.partitions, "partition out of range");
        let home = self.home(key);
        let Some(entry) = self.entries.get_mut(key) else {
            if partition == home {
                return Step::Send {
                    partition,
                    header: None,
                };
            }
            return self.start_fence(key, home, 0, None, partition);
        };
        if entry.fence.is_some() {
            return Step::Hold;
        }
        if partition != entry.partition {
            let (from, set, route) = (entry.partition, entry.set_index, entry.route);
            return self.start_fence(key, from, set, route, partition);
        }
        let header = entry.route;
        if partition == home {
            // First record of a set back at home: it carries the header, the gate's per-key FIFO
            // orders every later record of the key behind it (see the module docs).
            self.entries.remove(key);
        }
        Step::Send { partition, header }
    }

    fn start_fence(
        &mut self,
        key: &[u8],
        from: u32,
        set: u32,
        route: Option<RouteHeader>,
        to: u32,
    ) -> Step {
        let next_set = set.wrapping_add(1);
        let entry = self.entries.entry(key.into()).or_insert(Entry {
            partition: from,
            set_index: set,
            route,
            fence: None,
        });
        entry.fence = Some((to, next_set));
        Step::Fence {
            key: key.into(),
            fence_partition: from,
            header: FenceHeader {
                set_index: next_set,
                to_partition: to,
            },
            route,
        }
    }

    /// The fence of `key` was written at `offset`: the key's next set starts. Held records may
    /// be offered again. Returns false (and changes nothing) when no fence of `key` is in
    /// flight; a negative offset (no valid delivery report) counts as [`Migrator::fence_failed`].
    pub fn fence_acked(&mut self, key: &[u8], offset: i64) -> bool {
        if offset < 0 {
            self.fence_failed(key);
            return false;
        }
        let Some(entry) = self.entries.get_mut(key) else {
            return false;
        };
        let Some((to, set)) = entry.fence.take() else {
            return false;
        };
        entry.route = Some(RouteHeader {
            set_index: set,
            from_partition: entry.partition,
            fence_offset: offset,
        });
        entry.partition = to;
        entry.set_index = set;
        self.migrations += 1;
        true
    }

    /// The fence of `key` could not be written: the key stays in its current set, and the next
    /// [`Migrator::on_record`] decides again (a new fence if the strategy still moves it).
    pub fn fence_failed(&mut self, key: &[u8]) {
        let home = self.home(key);
        if let Some(entry) = self.entries.get_mut(key) {
            entry.fence = None;
            if entry.route.is_none() && entry.partition == home {
                self.entries.remove(key);
            }
        }
    }

    /// Whether a fence of `key` is in flight (its records are held).
    pub fn is_fencing(&self, key: &[u8]) -> bool {
        self.entries.get(key).is_some_and(|e| e.fence.is_some())
    }

    /// Number of keys with an entry (keys away from home or mid-migration).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no key has an entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Completed migrations (fences acknowledged) so far.
    pub fn migrations(&self) -> u64 {
        self.migrations
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key and a partition that is not its home among 4.
    fn key_away() -> (&'static [u8], u32, u32) {
        let key: &[u8] = b"location_1";
        let home = Hasher::Murmur2.partition(key, 4);
        (key, home, (home + 1) % 4)
    }

    #[test]
    fn move_away_and_back_home_drops_the_entry_after_one_headed_record() {
        let (key, home, away) = key_away();
        let mut m = Migrator::new(4, Hasher::Murmur2).unwrap();
        assert_eq!(
            m.on_record(key, home),
            Step::Send {
                partition: home,
                header: None
            }
        );
        assert!(m.is_empty());

        let Step::Fence {
            fence_partition,
            header,
            route,
            ..
        } = m.on_record(key, away)
        else {
            panic!("a move must fence");
        };
        assert_eq!(
            (fence_partition, header, route),
            (
                home,
                FenceHeader {
                    set_index: 1,
                    to_partition: away
                },
                None
            )
        );
        assert_eq!(m.on_record(key, away), Step::Hold);
        assert!(m.fence_acked(key, 10));
        let h1 = RouteHeader {
            set_index: 1,
            from_partition: home,
            fence_offset: 10,
        };
        for _ in 0..2 {
            assert_eq!(
                m.on_record(key, away),
                Step::Send {
                    partition: away,
                    header: Some(h1)
                }
            );
        }
        assert_eq!(m.len(), 1);

        let Step::Fence {
            fence_partition,
            header,
            route,
            ..
        } = m.on_record(key, home)
        else {
            panic!("a move home must fence");
        };
        assert_eq!(
            (fence_partition, header, route),
            (
                away,
                FenceHeader {
                    set_index: 2,
                    to_partition: home
                },
                Some(h1)
            )
        );
        assert!(m.fence_acked(key, 4));
        let h2 = RouteHeader {
            set_index: 2,
            from_partition: away,
            fence_offset: 4,
        };
        assert_eq!(
            m.on_record(key, home),
            Step::Send {
                partition: home,
                header: Some(h2)
            }
        );
        assert!(
            m.is_empty(),
            "entry dropped after the first record of the home set"
        );
        assert_eq!(
            m.on_record(key, home),
            Step::Send {
                partition: home,
                header: None
            }
        );
        assert_eq!(m.migrations(), 2);
    }

    #[test]
    fn failed_fence_is_reissued_or_abandoned() {
        let (key, home, away) = key_away();
        let mut m = Migrator::new(4, Hasher::Murmur2).unwrap();
        assert!(matches!(m.on_record(key, away), Step::Fence { .. }));
        m.fence_failed(key);
        assert!(m.is_empty());
        assert!(matches!(m.on_record(key, away), Step::Fence { .. }));
        assert!(!m.fence_acked(key, -1), "an invalid offset is a failure");
        assert!(!m.is_fencing(key));
        // The strategy changed its mind meanwhile: no fence needed any more.
        assert_eq!(
            m.on_record(key, home),
            Step::Send {
                partition: home,
                header: None
            }
        );
        assert_eq!(m.migrations(), 0);
        assert!(!m.fence_acked(key, 3), "no fence in flight");
    }

    #[test]
    fn zero_partitions_is_refused() {
        assert_eq!(
            Migrator::new(0, Hasher::Murmur2).unwrap_err().name,
            "partitions"
        );
    }
}
