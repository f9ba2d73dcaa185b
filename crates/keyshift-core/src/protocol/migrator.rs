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
//! set back at home the entry is dropped once a record of the set that carried the header is
//! *acknowledged* by the broker ([`Migrator::record_acked`]) — not when it is decided: a headed
//! record that is then refused (too large) or fails delivery must not let the next record of
//! the key go home bare, ahead of records still unprocessed on the old partition. Until an
//! acknowledgement arrives every record of the set keeps the header (harmless: the gate releases
//! it at once when the fence is long passed). Dropping the entry after the acknowledgement is
//! safe because:
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
//! # Durable routes
//!
//! A migrator made by [`Migrator::restore`] also keeps the route state durable (see
//! [`super::route_state`]): when a fence is acknowledged it queues a [`RouteChange`] with the
//! key's new set ([`Migrator::poll_change`]) and holds the key's records ([`Step::Hold`]) until
//! the adapter reports the change written with [`Migrator::route_saved`]; no record of a set is
//! sent before the set is on record. When a home set's entry is dropped it queues a tombstone.
//! A producer that restarts restores the last recorded entries and continues each key's set,
//! fencing it again before it goes anywhere else. A change whose write fails is simply retried
//! by the adapter; the key's records wait (the fence is written, but whether the new set was
//! recorded is unknown, so neither set may get records). [`Migrator::new`] keeps routes in
//! memory only: a restart then forgets moved keys (unsafe across restarts).
//!
//! # Epochs
//!
//! After the topic grew ([`Migrator::grow`], see [`super::epoch`]) a key's home is its hash
//! over the new partition count, and a key without an entry whose home changed carries the
//! epoch's header ([`super::epoch::Epoch::header`]) on every record, and on a fence that
//! moves it away before any record reached its new home. No entry is kept for it: the header
//! is a function of the key and the epoch.
//!
//! The fence record itself belongs to the set it closes: it carries that set's route header
//! (if any) next to its [`FenceHeader`]. Without it a key that moves A → B → C before any record
//! reached B would leave C waiting only for B's fence, which nothing orders after A's records.

use std::collections::VecDeque;

use rustc_hash::FxHashMap;

use super::epoch::Epoch;
use super::header::{FenceHeader, RouteHeader};
use super::route_state::{RouteChange, RouteEntry};
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
    /// Write a fence first: a record of `key` with value [`super::FENCE_VALUE`] on
    /// `fence_partition`, with
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
    /// The current set is decided but not yet recorded in the route state (durable mode): its
    /// records are held until [`Migrator::route_saved`].
    saving: bool,
}

/// Producer-side state machine of fenced migration. See the module docs.
#[derive(Debug, Clone)]
pub struct Migrator {
    partitions: u32,
    hasher: Hasher,
    entries: FxHashMap<Box<[u8]>, Entry>,
    migrations: u64,
    /// Whether route changes are queued for the route state ([`Migrator::restore`]).
    durable: bool,
    changes: VecDeque<RouteChange>,
    /// The last growth of the topic, if it grew while keyshift routed it.
    epoch: Option<Epoch>,
}

impl Migrator {
    /// A migrator for a topic of `partitions` partitions whose keys' home is `hasher`'s choice,
    /// with routes in memory only (no [`RouteChange`]s; forgotten on restart).
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
            durable: false,
            changes: VecDeque::new(),
            epoch: None,
        })
    }

    /// A migrator with durable routes, continuing the sets recorded in the route state:
    /// `entries` are the last recorded value of every key that has one (tombstoned keys left
    /// out). Every later route change is queued for [`Migrator::poll_change`]. An entry naming
    /// a partition the topic does not have is refused (the topic shrank or the state belongs to
    /// another topic): guessing would send the key without its fence.
    pub fn restore(
        partitions: u32,
        hasher: Hasher,
        entries: impl IntoIterator<Item = (Box<[u8]>, RouteEntry)>,
    ) -> Result<Self, ParamError> {
        let mut m = Self::new(partitions, hasher)?;
        m.durable = true;
        for (key, e) in entries {
            m.install(&key, Some(e))
                .map_err(|e| ParamError::new("route state", e.reason))?;
        }
        Ok(m)
    }

    /// Installs a route decided elsewhere — the commit of a move in the control log of
    /// coordinated producers, whose fences the members wrote themselves: the key's current set
    /// becomes `entry` (`None`: home without a header). Any fence in flight or unsaved set of
    /// the key is forgotten (coordinated producers never start fences through the migrator).
    /// An entry naming a partition the topic does not have is refused, as in
    /// [`Migrator::restore`].
    pub fn install(&mut self, key: &[u8], entry: Option<RouteEntry>) -> Result<(), ParamError> {
        let Some(e) = entry else {
            self.entries.remove(key);
            return Ok(());
        };
        if e.partition >= self.partitions || e.route.from_partition >= self.partitions {
            return Err(ParamError::new(
                "route",
                format!(
                    "key '{}' is recorded on partition {} (fence on {}), but the topic has {} \
                     partitions",
                    String::from_utf8_lossy(key),
                    e.partition,
                    e.route.from_partition,
                    self.partitions
                ),
            ));
        }
        self.entries.insert(
            key.into(),
            Entry {
                partition: e.partition,
                set_index: e.route.set_index,
                route: Some(e.route),
                fence: None,
                saving: false,
            },
        );
        Ok(())
    }

    /// Whether route changes are recorded ([`Migrator::restore`]) or kept in memory only.
    pub fn is_durable(&self) -> bool {
        self.durable
    }

    /// The key's home partition (where records go with no entry).
    pub fn home(&self, key: &[u8]) -> u32 {
        self.hasher.partition(key, self.partitions)
    }

    /// Partitions keys are homed on (the active count: the topic may have more).
    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// The epoch in force, if the topic grew.
    pub fn epoch(&self) -> Option<&Epoch> {
        self.epoch.as_ref()
    }

    /// The header a key without an entry carries: its epoch barrier if its home changed.
    fn epoch_header(&self, key: &[u8]) -> Option<RouteHeader> {
        self.epoch.as_ref().and_then(|e| e.header(self.hasher, key))
    }

    /// The topic grew to `epoch.to` partitions and every fence of `epoch` is written: keys
    /// are homed over the new count from now on (see [`super::epoch`]). Entries keep their
    /// sets (an entry at its old home is simply a routed key now). Refused unless the epoch
    /// grows from the current count; refused in durable mode until the caller recorded the
    /// epoch ([`Self::resume_epoch`] is for restoring it).
    pub fn grow(&mut self, epoch: Epoch) -> Result<(), ParamError> {
        if epoch.from != self.partitions
            || epoch.to <= epoch.from
            || epoch.fences.len() != epoch.from as usize
        {
            return Err(ParamError::new(
                "epoch",
                format!(
                    "epoch {} grows {} → {} partitions with {} fences, but keys are homed on {}",
                    epoch.number,
                    epoch.from,
                    epoch.to,
                    epoch.fences.len(),
                    self.partitions
                ),
            ));
        }
        self.partitions = epoch.to;
        self.epoch = Some(epoch);
        Ok(())
    }

    /// Homes keys on `to` partitions with no fence and no header: what a plain Kafka producer
    /// does when partitions are added (records of a key whose home changed may be processed
    /// before its older ones). For comparisons only (`keyshift experiment`'s `hash` baseline).
    pub fn grow_unfenced(&mut self, to: u32) -> Result<(), ParamError> {
        if to <= self.partitions {
            return Err(ParamError::new(
                "partitions",
                format!("{to} is not more than the {} in use", self.partitions),
            ));
        }
        self.partitions = to;
        self.epoch = None;
        Ok(())
    }

    /// Restores the epoch recorded in the route state into a migrator built for `epoch.to`
    /// partitions (at restart). Refused when the counts differ.
    pub fn resume_epoch(&mut self, epoch: Epoch) -> Result<(), ParamError> {
        if epoch.to != self.partitions || epoch.fences.len() != epoch.from as usize {
            return Err(ParamError::new(
                "route state",
                format!(
                    "the recorded epoch {} homes keys on {} partitions, not {}",
                    epoch.number, epoch.to, self.partitions
                ),
            ));
        }
        self.epoch = Some(epoch);
        Ok(())
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
            let header = self.epoch_header(key);
            if partition == home {
                return Step::Send { partition, header };
            }
            return self.start_fence(key, home, 0, header, partition);
        };
        if entry.fence.is_some() || entry.saving {
            return Step::Hold;
        }
        if partition != entry.partition {
            let (from, set, route) = (entry.partition, entry.set_index, entry.route);
            return self.start_fence(key, from, set, route, partition);
        }
        // A set back at home keeps its entry (and its header) until a headed record of it is
        // acknowledged: see `record_acked` and the module docs.
        Step::Send {
            partition,
            header: entry.route,
        }
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
            saving: false,
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
    /// be offered again — in durable mode only after [`Migrator::route_saved`] of the change
    /// this queues ([`Migrator::poll_change`]). Returns false (and changes nothing) when no fence of `key` is in
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
        if self.durable {
            entry.saving = true;
            self.changes.push_back(RouteChange {
                key: key.into(),
                entry: Some(RouteEntry {
                    partition: to,
                    route: entry.route.expect("set just above"),
                }),
            });
        }
        true
    }

    /// The route change of `key` whose new set has index `set_index` is written to the route
    /// state: the set's records may go (offer the held ones again). Returns false (and changes
    /// nothing) when that set of `key` is not waiting to be recorded (e.g. a stale report).
    pub fn route_saved(&mut self, key: &[u8], set_index: u32) -> bool {
        match self.entries.get_mut(key) {
            Some(e) if e.saving && e.set_index == set_index => {
                e.saving = false;
                true
            }
            _ => false,
        }
    }

    /// A record of `key` sent with route header `header` (as [`Step::Send`] gave it) was
    /// acknowledged by the broker. When that is the key's current set at its home partition,
    /// the entry goes (later records are ordered behind this one; see the module docs) and, in
    /// durable mode, a tombstone is queued. Returns whether the entry went. Records that fail
    /// or are refused need no report: the entry simply stays and the next record carries the
    /// header again.
    pub fn record_acked(&mut self, key: &[u8], header: RouteHeader) -> bool {
        let home = self.home(key);
        let done = self.entries.get(key).is_some_and(|e| {
            e.partition == home && e.fence.is_none() && !e.saving && e.route == Some(header)
        });
        if done {
            self.entries.remove(key);
            if self.durable {
                self.changes.push_back(RouteChange {
                    key: key.into(),
                    entry: None,
                });
            }
        }
        done
    }

    /// Whether a record sent to `partition` with `header` must be reported with
    /// [`Migrator::record_acked`] once acknowledged: a headed record at the key's home (the
    /// only ones whose acknowledgement drops an entry). Lets an adapter watch just those.
    pub fn wants_ack(&self, key: &[u8], partition: u32, header: Option<RouteHeader>) -> bool {
        // An epoch header on a key without an entry drops nothing: no need to watch it.
        header.is_some() && partition == self.home(key) && self.entries.contains_key(key)
    }

    /// The next route change to write to the route state, in the order they must be written
    /// (always `None` for [`Migrator::new`]).
    pub fn poll_change(&mut self) -> Option<RouteChange> {
        self.changes.pop_front()
    }

    /// Whether `key`'s current set waits to be recorded (its records are held).
    pub fn is_saving(&self, key: &[u8]) -> bool {
        self.entries.get(key).is_some_and(|e| e.saving)
    }

    /// The fence of `key` could not be written: the key stays in its current set, and the next
    /// [`Migrator::on_record`] decides again (a new fence if the strategy still moves it).
    pub fn fence_failed(&mut self, key: &[u8]) {
        let home = self.home(key);
        let bare = self.epoch_header(key);
        if let Some(entry) = self.entries.get_mut(key) {
            entry.fence = None;
            // Back to what the key had without an entry: its home, with the epoch's header.
            if entry.route == bare && entry.partition == home {
                self.entries.remove(key);
            }
        }
    }

    /// Keys whose current set is away from their home, with its partition (what a strategy
    /// rebuilt for another partition count must keep).
    pub fn routed(&self) -> impl Iterator<Item = (&[u8], u32)> + '_ {
        self.entries
            .iter()
            .filter(|(k, e)| e.partition != self.home(k))
            .map(|(k, e)| (&**k, e.partition))
    }

    /// Whether `key` has an entry (it is away from home, or its set needs a header or a fence
    /// of it is in flight).
    pub fn has_entry(&self, key: &[u8]) -> bool {
        self.entries.contains_key(key)
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
    fn move_away_and_back_home_drops_the_entry_after_a_headed_record_is_acked() {
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
        for _ in 0..2 {
            assert_eq!(
                m.on_record(key, home),
                Step::Send {
                    partition: home,
                    header: Some(h2)
                }
            );
        }
        assert!(m.wants_ack(key, home, Some(h2)));
        assert!(!m.wants_ack(key, away, Some(h1)));
        assert!(!m.record_acked(key, h1), "an older set's ack drops nothing");
        assert_eq!(m.len(), 1);
        assert!(m.record_acked(key, h2));
        assert!(
            m.is_empty(),
            "entry dropped once a headed record of the home set is acknowledged"
        );
        assert!(m.poll_change().is_none(), "ephemeral: no route changes");
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

    /// Moves `key` to `away` and back home with fences acked at offsets 10 and 4; returns the
    /// home set's header.
    fn away_and_back(m: &mut Migrator, key: &[u8], home: u32, away: u32) -> RouteHeader {
        assert!(matches!(m.on_record(key, away), Step::Fence { .. }));
        assert!(m.fence_acked(key, 10));
        if m.is_durable() {
            assert!(m.route_saved(key, 1));
        }
        assert!(matches!(m.on_record(key, away), Step::Send { .. }));
        assert!(matches!(m.on_record(key, home), Step::Fence { .. }));
        assert!(m.fence_acked(key, 4));
        if m.is_durable() {
            assert!(m.route_saved(key, 2));
        }
        RouteHeader {
            set_index: 2,
            from_partition: away,
            fence_offset: 4,
        }
    }

    /// Issue 10 item 1: a headed record back home that is refused or fails is never
    /// acknowledged, so the next record of the key must still carry the header (the old code
    /// dropped the entry when the first one was decided and sent the next one bare).
    #[test]
    fn a_refused_headed_record_at_home_keeps_the_header_for_the_next() {
        let (key, home, away) = key_away();
        let mut m = Migrator::new(4, Hasher::Murmur2).unwrap();
        let h2 = away_and_back(&mut m, key, home, away);
        let headed = Step::Send {
            partition: home,
            header: Some(h2),
        };
        assert_eq!(m.on_record(key, home), headed, "decided, then refused");
        assert_eq!(m.on_record(key, home), headed, "still headed");
        assert!(m.record_acked(key, h2));
        assert_eq!(
            m.on_record(key, home),
            Step::Send {
                partition: home,
                header: None
            }
        );
    }

    #[test]
    fn durable_routes_hold_the_new_set_until_recorded_and_restore() {
        let (key, home, away) = key_away();
        let mut m = Migrator::restore(4, Hasher::Murmur2, []).unwrap();
        assert!(matches!(m.on_record(key, away), Step::Fence { .. }));
        assert!(m.fence_acked(key, 10));
        let e1 = RouteEntry {
            partition: away,
            route: RouteHeader {
                set_index: 1,
                from_partition: home,
                fence_offset: 10,
            },
        };
        assert_eq!(
            m.poll_change(),
            Some(RouteChange {
                key: key.into(),
                entry: Some(e1)
            })
        );
        assert!(m.is_saving(key));
        assert_eq!(m.on_record(key, away), Step::Hold, "not recorded yet");
        assert!(!m.route_saved(key, 7), "stale report");
        assert!(m.route_saved(key, 1));
        assert_eq!(
            m.on_record(key, away),
            Step::Send {
                partition: away,
                header: Some(e1.route)
            }
        );

        // A restarted producer continues the recorded set, and fences it before going home.
        let mut r = Migrator::restore(4, Hasher::Murmur2, [(Box::from(key), e1)]).unwrap();
        assert_eq!(r.current(key), away);
        assert_eq!(
            r.on_record(key, away),
            Step::Send {
                partition: away,
                header: Some(e1.route)
            }
        );
        let Step::Fence {
            fence_partition,
            route,
            ..
        } = r.on_record(key, home)
        else {
            panic!("going home from a restored set must fence");
        };
        assert_eq!((fence_partition, route), (away, Some(e1.route)));

        // Back home: recorded, then a tombstone once a headed record is acknowledged.
        let mut m = Migrator::restore(4, Hasher::Murmur2, []).unwrap();
        let h2 = away_and_back(&mut m, key, home, away);
        while m.poll_change().is_some() {}
        assert!(m.record_acked(key, h2));
        assert_eq!(
            m.poll_change(),
            Some(RouteChange {
                key: key.into(),
                entry: None
            })
        );
        assert!(m.is_empty());
    }

    #[test]
    fn restore_refuses_partitions_the_topic_lacks() {
        let entry = RouteEntry {
            partition: 5,
            route: RouteHeader {
                set_index: 1,
                from_partition: 0,
                fence_offset: 0,
            },
        };
        let err =
            Migrator::restore(4, Hasher::Murmur2, [(Box::from(&b"k"[..]), entry)]).unwrap_err();
        assert_eq!(err.name, "route state");
        assert!(err.reason.contains("'k'"), "{}", err.reason);
    }

    #[test]
    fn zero_partitions_is_refused() {
        assert_eq!(
            Migrator::new(0, Hasher::Murmur2).unwrap_err().name,
            "partitions"
        );
    }

    #[test]
    fn after_growth_only_keys_whose_home_changed_carry_the_epoch_barrier() {
        use crate::protocol::epoch::Growth;
        let mut m = Migrator::new(4, Hasher::Murmur2).unwrap();
        let key_at = |pred: &dyn Fn(u32, u32) -> bool| -> Vec<u8> {
            (0..)
                .map(|i| format!("location_{i}").into_bytes())
                .find(|k| {
                    pred(
                        Hasher::Murmur2.partition(k, 4),
                        Hasher::Murmur2.partition(k, 8),
                    )
                })
                .unwrap()
        };
        let (stays, moves) = (key_at(&|a, b| a == b && a != 0), key_at(&|a, b| a != b));
        let routed = key_at(&|a, _| a == 0);
        // A key moved before the growth keeps its set across it.
        assert!(matches!(m.on_record(&routed, 1), Step::Fence { .. }));
        assert!(m.fence_acked(&routed, 3));
        let mut g = Growth::start(m.epoch(), 4, 8).unwrap();
        let epoch = (0..g.fences().len())
            .map(|i| g.acked(i, 10 + i as i64))
            .last()
            .flatten()
            .unwrap();
        m.grow(epoch.clone()).unwrap();
        assert_eq!(m.partitions(), 8);
        let home = |k: &[u8]| Hasher::Murmur2.partition(k, 8);
        assert_eq!(
            m.on_record(&stays, home(&stays)),
            Step::Send {
                partition: home(&stays),
                header: None
            }
        );
        let old = Hasher::Murmur2.partition(&moves, 4);
        let barrier = RouteHeader {
            set_index: 0,
            from_partition: old,
            fence_offset: 10 + i64::from(old),
        };
        assert_eq!(
            m.on_record(&moves, home(&moves)),
            Step::Send {
                partition: home(&moves),
                header: Some(barrier)
            }
        );
        assert!(
            !m.wants_ack(&moves, home(&moves), Some(barrier)),
            "no entry to drop"
        );
        assert_eq!(m.len(), 1, "only the routed key has an entry");
        // Moved away before any record reached its new home: the fence there carries the
        // barrier, so the next partition waits for the old home too.
        let away = (home(&moves) + 1) % 8;
        match m.on_record(&moves, away) {
            Step::Fence {
                fence_partition,
                route,
                ..
            } => assert_eq!((fence_partition, route), (home(&moves), Some(barrier))),
            other => panic!("expected a fence, got {other:?}"),
        }
        assert_eq!(m.current(&routed), 1);
        assert!(
            m.grow(epoch).is_err(),
            "an epoch from 4 when keys are homed on 8"
        );
    }
}
