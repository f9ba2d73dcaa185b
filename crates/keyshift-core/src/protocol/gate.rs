//! Consumer side of the fenced migration: the [`OrderGate`], a pure state machine that decides
//! which consumed records may be processed now and how far each partition may commit.
//!
//! The caller (a simulator or a real Kafka consumer) drives it with events:
//!
//! - [`OrderGate::assign`] / [`OrderGate::revoke`] when it gains or loses a partition; a new
//!   assignment starts at the group's committed offset, so a crash or rebalance redelivers
//!   everything not committed and the gate decides about it afresh;
//! - [`OrderGate::offer`] for each consumed record, in offset order per partition;
//! - [`OrderGate::processed`] when the application finished a released record;
//! - [`OrderGate::observe_committed`] with the group's committed offsets of the partitions
//!   [`OrderGate::barriers`] names (OffsetFetch on a short interval).
//!
//! It answers with [`OrderGate::poll`] (records the application may process now),
//! [`OrderGate::poll_fence`] (fences just passed — commit their partition promptly, and hand
//! over per-key state there) and [`OrderGate::commit_offset`].
//!
//! # Release rule
//!
//! A record `r` of key K on partition P is released iff every earlier offered record of K on P
//! is processed (per-key FIFO inside the partition), and, if `r` carries a
//! [`RouteHeader`] `{from A, fence f}`, A is known done past the fence: the greatest committed
//! offset observed for A, or this gate's own processed prefix of A when it owns A (or owned it),
//! is greater than `f`. Only K waits ("parks"); other keys on P keep flowing. Chains A → B → C
//! hold transitively because C waits for B's fence, which waits for A's fence.
//!
//! Fence records are never released to the application: a fence counts as processed as soon as
//! it would be released (its key's earlier records on its partition are processed and its own
//! route barrier, if any, is passed).
//!
//! The commit offset of P is its lowest offered-but-unprocessed offset (parked records
//! included), or one past the last offered record when all are processed: a commit never passes
//! an unprocessed record, so the barrier other partitions wait on is durable group state.
//!
//! # Why it cannot deadlock
//!
//! Every wait points strictly back in produce time: a record waits for earlier records of its
//! key on its partition, or for records appended to A before the fence `f`, which was
//! acknowledged before the waiting record was written. Offsets in a partition follow append
//! time, so the waits form no cycle; as long as every partition is owned and processing
//! continues, every record is released eventually.
//!
//! # Cost
//!
//! Per partition, a FIFO queue per key with unprocessed records (an `FxHashMap`) and a deque of
//! unprocessed offsets; per barrier partition, an ordered map from fence offset to the parked
//! keys. Every event costs O(1) amortized plus O(log n) for the offset lookup; nothing scans
//! all records. Memory is proportional to records offered and not yet processed.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::header::RouteHeader;

/// One consumed record as the gate needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateRecord {
    /// Partition it was consumed from.
    pub partition: u32,
    /// Its offset.
    pub offset: i64,
    /// Its key (records without a key use the empty key).
    pub key: Box<[u8]>,
    /// Its decoded [`super::ROUTE_HEADER`], if present and readable. A header of an unknown
    /// version is passed as `None`: the record is then ordered only inside its partition.
    pub route: Option<RouteHeader>,
    /// Whether it carries [`super::FENCE_HEADER`] (a fence: never given to the application).
    pub fence: bool,
}

/// A record the application may process now; report it back with [`OrderGate::processed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Released {
    /// Partition of the record.
    pub partition: u32,
    /// Offset of the record.
    pub offset: i64,
    /// Its key.
    pub key: Arc<[u8]>,
    /// Its route header (the set it belongs to), if it had one.
    pub route: Option<RouteHeader>,
    /// Whether it waited for a migration barrier (its own, or one its key was parked on when
    /// it was offered). The caller measures park time from offer to release.
    pub parked: bool,
}

/// A fence record the gate counted as processed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassedFence {
    /// Partition of the fence (the key's old partition): commit it promptly.
    pub partition: u32,
    /// Offset of the fence.
    pub offset: i64,
    /// The key that moved away.
    pub key: Arc<[u8]>,
}

/// What [`OrderGate::offer`] did with a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offered {
    /// New record, now tracked.
    Accepted,
    /// Its offset was already offered since the partition was assigned; ignored.
    Duplicate,
    /// Its partition is not assigned to this gate; ignored.
    Unassigned,
}

/// A record waiting in its key's queue.
#[derive(Debug, Clone)]
struct Pending {
    offset: i64,
    route: Option<RouteHeader>,
    fence: bool,
    parked: bool,
}

/// What the front record of a key queue is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Head {
    /// Not yet examined (or just woken): `try_release` decides.
    Queued,
    /// Parked on its route barrier.
    Waiting,
    /// Given to the application, not yet processed.
    Released,
}

/// The unprocessed records of one key on one partition, in offset order.
#[derive(Debug)]
struct KeyQueue {
    items: VecDeque<Pending>,
    head: Head,
}

/// An offered offset, kept until it and every lower offset are processed.
#[derive(Debug)]
struct Slot {
    offset: i64,
    key: Arc<[u8]>,
    done: bool,
}

/// State of one assigned partition.
#[derive(Debug)]
struct Part {
    /// Offers below this offset are duplicates (start offset, then last offered + 1).
    next: i64,
    /// Offered offsets from the lowest unprocessed one on; the front is never done.
    log: VecDeque<Slot>,
    keys: FxHashMap<Arc<[u8]>, KeyQueue>,
    /// Offered, not yet processed.
    pending: usize,
}

impl Part {
    fn commit_offset(&self) -> i64 {
        self.log.front().map_or(self.next, |s| s.offset)
    }
}

/// A key parked on a partition: (partition, key).
type ParkedKey = (u32, Arc<[u8]>);

/// Consumer-side order gate of fenced migration. See the module docs.
#[derive(Debug, Default)]
pub struct OrderGate {
    parts: FxHashMap<u32, Part>,
    /// Greatest committed offset seen per partition (observed, or this gate's own processed
    /// prefix when it gave the partition up).
    known: FxHashMap<u32, i64>,
    /// Barrier partition A → fence offset → parked (partition, key) whose head waits for it.
    waiting: FxHashMap<u32, BTreeMap<i64, Vec<ParkedKey>>>,
    ready: VecDeque<Released>,
    fences: VecDeque<PassedFence>,
    /// Partitions whose known-done offset may have grown since their waiters were checked.
    wake: Vec<u32>,
    parked: usize,
    duplicates: u64,
}

impl OrderGate {
    /// An empty gate owning no partition.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes ownership of `partition`; consumption starts at `start_offset` (the group's
    /// committed offset). Reassigning an owned partition first revokes it.
    pub fn assign(&mut self, partition: u32, start_offset: i64) {
        self.revoke(partition);
        self.parts.insert(
            partition,
            Part {
                next: start_offset,
                log: VecDeque::new(),
                keys: FxHashMap::default(),
                pending: 0,
            },
        );
        self.wake.push(partition);
        self.run_wakes();
    }

    /// Gives up `partition`: its unprocessed records, released or not, are forgotten (the next
    /// owner gets them again from the committed offset) and later `processed` reports of them
    /// are ignored. What this gate processed on it still counts as done for barriers.
    pub fn revoke(&mut self, partition: u32) {
        let Some(part) = self.parts.remove(&partition) else {
            return;
        };
        let done = part.commit_offset();
        let known = self.known.entry(partition).or_insert(done);
        *known = (*known).max(done);
        for q in part.keys.values() {
            if q.head == Head::Waiting {
                self.parked -= q.items.len();
            }
        }
        self.waiting.retain(|_, fences| {
            fences.retain(|_, keys| {
                keys.retain(|(p, _)| *p != partition);
                !keys.is_empty()
            });
            !fences.is_empty()
        });
        self.ready.retain(|r| r.partition != partition);
        self.fences.retain(|f| f.partition != partition);
    }

    /// Whether `partition` is assigned to this gate.
    pub fn owns(&self, partition: u32) -> bool {
        self.parts.contains_key(&partition)
    }

    /// Takes in one consumed record. Records of a partition must come in increasing offset
    /// order; an offset already offered since the assignment is a [`Offered::Duplicate`].
    pub fn offer(&mut self, rec: GateRecord) -> Offered {
        let Some(part) = self.parts.get_mut(&rec.partition) else {
            return Offered::Unassigned;
        };
        if rec.offset < part.next {
            self.duplicates += 1;
            return Offered::Duplicate;
        }
        let was_empty = part.log.is_empty();
        part.next = rec.offset + 1;
        part.pending += 1;
        let key: Arc<[u8]> = Arc::from(rec.key);
        part.log.push_back(Slot {
            offset: rec.offset,
            key: Arc::clone(&key),
            done: false,
        });
        let q = part
            .keys
            .entry(Arc::clone(&key))
            .or_insert_with(|| KeyQueue {
                items: VecDeque::new(),
                head: Head::Queued,
            });
        let parked = q.head == Head::Waiting;
        if parked {
            self.parked += 1;
        }
        q.items.push_back(Pending {
            offset: rec.offset,
            route: rec.route,
            fence: rec.fence,
            parked,
        });
        let first = q.items.len() == 1;
        if was_empty {
            // Everything below this offset is done (gaps are compacted or control records).
            self.wake.push(rec.partition);
        }
        if first {
            self.try_release(rec.partition, &key);
        }
        self.run_wakes();
        Offered::Accepted
    }

    /// The application finished the released record at (`partition`, `offset`). Returns false
    /// (and changes nothing) if that record is not currently released by this gate, e.g. after
    /// its partition was revoked.
    pub fn processed(&mut self, partition: u32, offset: i64) -> bool {
        let Some(part) = self.parts.get(&partition) else {
            return false;
        };
        let Ok(i) = part.log.binary_search_by_key(&offset, |s| s.offset) else {
            return false;
        };
        let key = Arc::clone(&part.log[i].key);
        let q = &part.keys[&key];
        if q.head != Head::Released || q.items.front().map(|p| p.offset) != Some(offset) {
            return false;
        }
        self.complete_head(partition, &key);
        self.try_release(partition, &key);
        self.run_wakes();
        true
    }

    /// The group's committed offset of `partition` (the next offset to consume), from
    /// OffsetFetch. Any partition, owned or not; older (smaller) values are ignored.
    pub fn observe_committed(&mut self, partition: u32, committed: i64) {
        let known = self.known.entry(partition).or_insert(committed);
        if committed >= *known {
            *known = committed;
            self.wake.push(partition);
            self.run_wakes();
        }
    }

    /// The next record the application may process, in release order.
    pub fn poll(&mut self) -> Option<Released> {
        self.ready.pop_front()
    }

    /// The next fence counted as processed. Its partition's commit offset just moved past it:
    /// committing promptly shortens the wait of the key's parked records elsewhere.
    pub fn poll_fence(&mut self) -> Option<PassedFence> {
        self.fences.pop_front()
    }

    /// The offset this gate may commit for `partition`: its lowest unprocessed offered offset,
    /// or one past the last offered one (the start offset if none). `None` if not owned.
    pub fn commit_offset(&self, partition: u32) -> Option<i64> {
        self.parts.get(&partition).map(Part::commit_offset)
    }

    /// The partitions this gate does not own whose committed offset parked records wait on,
    /// each with the lowest fence offset waited for (sorted by partition). Poll their
    /// committed offsets and report them with [`OrderGate::observe_committed`]; a parked
    /// record is released once the committed offset is greater than its fence offset.
    /// Partitions this gate owns are checked locally and never listed.
    pub fn barriers(&self) -> Vec<(u32, i64)> {
        let mut out: Vec<(u32, i64)> = self
            .waiting
            .iter()
            .filter(|(a, _)| !self.parts.contains_key(a))
            .filter_map(|(a, fences)| fences.keys().next().map(|f| (*a, *f)))
            .collect();
        out.sort_unstable();
        out
    }

    /// Records currently parked: held because their key waits for a migration barrier.
    pub fn parked(&self) -> usize {
        self.parked
    }

    /// Records offered and not yet processed (parked, queued, released or ready).
    pub fn pending(&self) -> usize {
        self.parts.values().map(|p| p.pending).sum()
    }

    /// Offers ignored because their offset had been offered already.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// The greatest offset of `partition` known done: the observed committed offset, or this
    /// gate's own processed prefix where that is further.
    fn known_done(&self, partition: u32) -> Option<i64> {
        let local = self.parts.get(&partition).map(Part::commit_offset);
        match (self.known.get(&partition).copied(), local) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    /// Examines the front of `key`'s queue on `partition` and moves it as far as it can go:
    /// park it, release it, or (a fence) count it processed and look at the next one.
    fn try_release(&mut self, partition: u32, key: &Arc<[u8]>) {
        loop {
            let Some(part) = self.parts.get(&partition) else {
                return;
            };
            let Some(q) = part.keys.get(key) else {
                return;
            };
            if q.head != Head::Queued {
                return;
            }
            let Some(front) = q.items.front() else {
                return;
            };
            let (offset, route, fence, was_parked) =
                (front.offset, front.route, front.fence, front.parked);
            if let Some(r) = route {
                let blocked = !matches!(
                    self.known_done(r.from_partition),
                    Some(done) if done > r.fence_offset
                );
                if blocked {
                    let q = self
                        .parts
                        .get_mut(&partition)
                        .and_then(|p| p.keys.get_mut(key))
                        .expect("queue checked above");
                    q.head = Head::Waiting;
                    self.parked += q.items.len();
                    for item in &mut q.items {
                        item.parked = true;
                    }
                    self.waiting
                        .entry(r.from_partition)
                        .or_default()
                        .entry(r.fence_offset)
                        .or_default()
                        .push((partition, Arc::clone(key)));
                    return;
                }
            }
            if fence {
                self.complete_head(partition, key);
                self.fences.push_back(PassedFence {
                    partition,
                    offset,
                    key: Arc::clone(key),
                });
                continue;
            }
            let q = self
                .parts
                .get_mut(&partition)
                .and_then(|p| p.keys.get_mut(key))
                .expect("queue checked above");
            q.head = Head::Released;
            self.ready.push_back(Released {
                partition,
                offset,
                key: Arc::clone(key),
                route,
                parked: was_parked,
            });
            return;
        }
    }

    /// Marks the front record of `key` on `partition` processed and advances the partition's
    /// processed prefix; the key's queue is dropped when empty.
    fn complete_head(&mut self, partition: u32, key: &Arc<[u8]>) {
        let part = self.parts.get_mut(&partition).expect("owned partition");
        let q = part.keys.get_mut(key).expect("queued key");
        let item = q.items.pop_front().expect("non-empty queue");
        q.head = Head::Queued;
        if q.items.is_empty() {
            part.keys.remove(key);
        }
        part.pending -= 1;
        if let Ok(i) = part.log.binary_search_by_key(&item.offset, |s| s.offset) {
            part.log[i].done = true;
        }
        let mut advanced = false;
        while part.log.front().is_some_and(|s| s.done) {
            part.log.pop_front();
            advanced = true;
        }
        if advanced {
            self.wake.push(partition);
        }
    }

    /// Releases the parked keys whose barrier partitions became known done past their fence.
    fn run_wakes(&mut self) {
        while let Some(a) = self.wake.pop() {
            let Some(done) = self.known_done(a) else {
                continue;
            };
            let Some(fences) = self.waiting.get_mut(&a) else {
                continue;
            };
            // Fences below `done` are passed: split them off, keep the rest waiting.
            let still = fences.split_off(&done);
            let passed = std::mem::replace(fences, still);
            if fences.is_empty() {
                self.waiting.remove(&a);
            }
            for (p, key) in passed.into_values().flatten() {
                if let Some(q) = self
                    .parts
                    .get_mut(&p)
                    .and_then(|part| part.keys.get_mut(&key))
                {
                    if q.head == Head::Waiting {
                        q.head = Head::Queued;
                        self.parked -= q.items.len();
                    }
                }
                self.try_release(p, &key);
            }
        }
    }
}
