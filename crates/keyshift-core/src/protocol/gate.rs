//! Consumer side of the fenced migration: the [`OrderGate`], a pure state machine that decides
//! which consumed records may be processed now and how far each partition may commit.
//!
//! The caller (a simulator or a real Kafka consumer) drives it with events:
//!
//! - [`OrderGate::assign`] / [`OrderGate::revoke`] when it gains or loses a partition; a new
//!   assignment starts at the group's committed offset, so a crash or rebalance redelivers
//!   everything not committed and the gate decides about it afresh
//!   ([`OrderGate::assign_unknown_start`] when that offset could not be read);
//! - [`OrderGate::offer`] for each consumed record, in offset order per partition;
//! - [`OrderGate::processed`] when the application finished a released record;
//! - [`OrderGate::observe_committed`] with the group's committed offsets: of the partitions
//!   [`OrderGate::barriers`] names (OffsetFetch on a short interval), and of every commit of its
//!   own that succeeded.
//!
//! It answers with [`OrderGate::poll`] (records the application may process now),
//! [`OrderGate::poll_fence`] (fences just passed — commit their partition promptly, and hand
//! over per-key state there), [`OrderGate::unconfirmed_barriers`] (owned partitions whose
//! progress would release a parked key once its commit is known — commit them synchronously)
//! and [`OrderGate::commit_offset`].
//!
//! # Release rule
//!
//! A record `r` of key K on partition P is released iff every earlier offered record of K on P
//! is processed (per-key FIFO inside the partition), and, if `r` carries a
//! [`RouteHeader`] `{from A, fence f}`, the group's committed offset of A is known to be
//! greater than `f`. Only K waits ("parks"); other keys on P keep flowing. Chains A → B → C
//! hold transitively because C waits for B's fence, which waits for A's fence.
//!
//! The barrier is *committed* progress, never this gate's own processed prefix of A, even when
//! it owns A: progress that is not committed can be lost (a failed commit before a revoke, a
//! crash), and the next owner of A would then replay K's old records after K's newer records
//! were processed — and committed — on P, leaving the application with a stale value. So the
//! owner of A commits A past the fence (promptly, see [`OrderGate::poll_fence`]) and reports
//! its own successful commit with [`OrderGate::observe_committed`]; a replay then only ever
//! repeats a suffix of a key's records, in order.
//!
//! A record without a key (a null key, `None` — not the empty key) has no order to keep: it is
//! released at once, never queued behind another record and never parked (a route header on it
//! is not waited on, and a fence flag on it is ignored: fences always have a key). It still
//! holds its partition's commit offset until it is processed.
//!
//! Fence records are never released to the application: a fence counts as processed as soon as
//! it would be released (its key's earlier records on its partition are processed and its own
//! route barrier, if any, is passed).
//!
//! The commit offset of P is its lowest offered-but-unprocessed offset (parked records
//! included), or one past the last offered record when all are processed: a commit never passes
//! an unprocessed record, so the barrier other partitions wait on is durable group state.
//!
//! # Offsets below the start: a rewritten log is reported, never skipped
//!
//! Within one assignment a Kafka client delivers each partition's offsets in increasing order
//! from the group's committed offset. An offer below the assignment's start offset means the
//! client's position was reset below the committed offset: the log no longer holds the committed
//! offset (truncated by an unclean leader election, or deleted and recreated), and the client's
//! `auto.offset.reset` restarted it lower. Those records are new records that nobody
//! processed, yet processing them would replay keys' positions the group already committed
//! past. The gate neither skips them silently nor reorders: it answers
//! [`Offered::BelowStart`], tracks nothing, and counts them ([`OrderGate::below_start`]); the
//! runtime stops consuming that partition and reports it, so an operator resets the group's
//! offset deliberately. Offers between the start and the last offered offset are
//! [`Offered::Duplicate`] (a client re-delivery). Not detectable here: a truncation above the
//! start that rewrites records this member already offered.
//!
//! # Keys parked too long
//!
//! A barrier can fail to pass: its partition is not consumed by anyone, or a bogus route header
//! names a fence that will never be committed. [`OrderGate::parked_keys`] lists every parked
//! key with its partition, barrier and record count, so the caller can measure how long each has
//! waited and alert; [`OrderGate::release_parked`] lets the caller give up on a key's barrier
//! after its own timeout: the key's records are released as if the barrier had passed, and each
//! one counts as an order exception ([`OrderGate::order_exceptions`], [`Released::forced`]).
//! [`OrderGate::parked_on`] counts parked records per partition, so backpressure can leave
//! them out and never stop other keys because one key is parked.
//!
//! # Why it cannot deadlock
//!
//! Every wait points strictly back in produce time: a record waits for earlier records of its
//! key on its partition, or for records appended to A before the fence `f`, which was
//! acknowledged before the waiting record was written. Offsets in a partition follow append
//! time, so the waits form no cycle; as long as every partition is owned, processing continues
//! and commits succeed, every record is released eventually.
//!
//! # Cost
//!
//! Per partition, a FIFO queue per key with unprocessed records (an `FxHashMap`) and a deque of
//! unprocessed offsets; per barrier partition, an ordered map from fence offset to the parked
//! keys. Every event costs O(1) amortized plus O(log n) for the offset lookup; nothing scans
//! all records ([`OrderGate::parked_keys`] visits the parked keys). Memory is proportional to
//! records offered and not yet processed.

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
    /// Its key; `None` for a record without one (null key), which is released unordered.
    pub key: Option<Box<[u8]>>,
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
    /// Its key (`None`: a null key, released unordered).
    pub key: Option<Arc<[u8]>>,
    /// Its route header (the set it belongs to), if it had one.
    pub route: Option<RouteHeader>,
    /// Whether it waited for a migration barrier (its own, or one its key was parked on when
    /// it was offered). The caller measures park time from offer to release.
    pub parked: bool,
    /// Whether it was released by [`OrderGate::release_parked`] before its barrier passed: an
    /// order exception.
    pub forced: bool,
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
    /// Its offset is below the assignment's start offset: the client's position was reset
    /// below the group's committed offset (see the module docs); ignored and counted.
    BelowStart,
    /// Its partition is not assigned to this gate; ignored.
    Unassigned,
}

/// A key whose records wait for a migration barrier, from [`OrderGate::parked_keys`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParkedKey {
    /// Partition its records are parked on.
    pub partition: u32,
    /// The key.
    pub key: Arc<[u8]>,
    /// The partition whose committed offset it waits for (the key's old partition).
    pub barrier_partition: u32,
    /// The fence offset there: it waits until the committed offset is greater.
    pub fence_offset: i64,
    /// Offset of its first parked record.
    pub first_offset: i64,
    /// Its records parked now.
    pub records: usize,
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
    key: Option<Arc<[u8]>>,
    done: bool,
}

/// State of one assigned partition.
#[derive(Debug)]
struct Part {
    /// Offers below this offset are [`Offered::BelowStart`] (None: learnt from the first offer).
    start: Option<i64>,
    /// Offers below this offset are duplicates (start offset, then last offered + 1).
    next: Option<i64>,
    /// Offered offsets from the lowest unprocessed one on; the front is never done.
    log: VecDeque<Slot>,
    keys: FxHashMap<Arc<[u8]>, KeyQueue>,
    /// Offered, not yet processed.
    pending: usize,
    /// Parked now.
    parked: usize,
    /// Keys whose barrier the caller gave up on: key → (barrier partition, fence offset).
    forced: FxHashMap<Arc<[u8]>, (u32, i64)>,
}

impl Part {
    fn new(start: Option<i64>) -> Self {
        Part {
            start,
            next: start,
            log: VecDeque::new(),
            keys: FxHashMap::default(),
            pending: 0,
            parked: 0,
            forced: FxHashMap::default(),
        }
    }

    fn commit_offset(&self) -> Option<i64> {
        self.log.front().map(|s| s.offset).or(self.next)
    }
}

/// A key parked on a partition: (partition, key).
type ParkedAt = (u32, Arc<[u8]>);

/// Consumer-side order gate of fenced migration. See the module docs.
#[derive(Debug, Default)]
pub struct OrderGate {
    parts: FxHashMap<u32, Part>,
    /// Greatest committed offset of the group seen per partition (observed or assigned at).
    known: FxHashMap<u32, i64>,
    /// Barrier partition A → fence offset → parked (partition, key) whose head waits for it.
    waiting: FxHashMap<u32, BTreeMap<i64, Vec<ParkedAt>>>,
    ready: VecDeque<Released>,
    fences: VecDeque<PassedFence>,
    /// Partitions whose committed offset may have grown since their waiters were checked.
    wake: Vec<u32>,
    parked: usize,
    duplicates: u64,
    below_start: u64,
    order_exceptions: u64,
}

impl OrderGate {
    /// An empty gate owning no partition.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes ownership of `partition`; consumption starts at `start_offset`, the group's
    /// committed offset (which also counts as observed committed). Reassigning an owned
    /// partition first revokes it.
    pub fn assign(&mut self, partition: u32, start_offset: i64) {
        self.revoke(partition);
        self.parts.insert(partition, Part::new(Some(start_offset)));
        self.observe_committed(partition, start_offset);
    }

    /// Takes ownership of `partition` when the group's committed offset could not be read: the
    /// client starts from the committed offset it read itself, so the first offered offset is
    /// taken as the start. Until a record is offered, [`OrderGate::commit_offset`] is `None`:
    /// committing a guessed start could move the group's offset backwards.
    pub fn assign_unknown_start(&mut self, partition: u32) {
        self.revoke(partition);
        self.parts.insert(partition, Part::new(None));
    }

    /// Gives up `partition`: its unprocessed records, released or not, are forgotten (the next
    /// owner gets them again from the committed offset) and later `processed` reports of them
    /// are ignored. Its processed but uncommitted progress is forgotten too: it is not a
    /// barrier for anyone.
    pub fn revoke(&mut self, partition: u32) {
        let Some(part) = self.parts.remove(&partition) else {
            return;
        };
        self.parked -= part.parked;
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
    /// order; an offset already offered since the assignment is a [`Offered::Duplicate`], one
    /// below the assignment's start is [`Offered::BelowStart`].
    pub fn offer(&mut self, rec: GateRecord) -> Offered {
        let Some(part) = self.parts.get_mut(&rec.partition) else {
            return Offered::Unassigned;
        };
        if part.start.is_some_and(|s| rec.offset < s) {
            self.below_start += 1;
            return Offered::BelowStart;
        }
        if part.next.is_some_and(|n| rec.offset < n) {
            self.duplicates += 1;
            return Offered::Duplicate;
        }
        part.start.get_or_insert(rec.offset);
        part.next = Some(rec.offset + 1);
        part.pending += 1;
        let Some(key) = rec.key else {
            part.log.push_back(Slot {
                offset: rec.offset,
                key: None,
                done: false,
            });
            self.ready.push_back(Released {
                partition: rec.partition,
                offset: rec.offset,
                key: None,
                route: rec.route,
                parked: false,
                forced: false,
            });
            return Offered::Accepted;
        };
        let key: Arc<[u8]> = Arc::from(key);
        part.log.push_back(Slot {
            offset: rec.offset,
            key: Some(Arc::clone(&key)),
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
            part.parked += 1;
        }
        q.items.push_back(Pending {
            offset: rec.offset,
            route: rec.route,
            fence: rec.fence,
            parked,
        });
        if q.items.len() == 1 {
            self.try_release(rec.partition, &key);
        }
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
        let slot = &part.log[i];
        if slot.done {
            return false;
        }
        let Some(key) = slot.key.clone() else {
            // A null-key record is released as soon as it is offered.
            self.complete_slot(partition, offset);
            return true;
        };
        let q = &part.keys[&key];
        if q.head != Head::Released || q.items.front().map(|p| p.offset) != Some(offset) {
            return false;
        }
        self.complete_head(partition, &key);
        self.try_release(partition, &key);
        true
    }

    /// The group's committed offset of `partition` (the next offset to consume): from
    /// OffsetFetch, or from a commit of this gate's caller that succeeded. Any partition, owned
    /// or not; older (smaller) values are ignored.
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
    /// committing promptly (and reporting the commit with [`OrderGate::observe_committed`])
    /// shortens the wait of the key's parked records elsewhere, on this gate too.
    pub fn poll_fence(&mut self) -> Option<PassedFence> {
        self.fences.pop_front()
    }

    /// The offset this gate may commit for `partition`: its lowest unprocessed offered offset,
    /// or one past the last offered one (the start offset if none). `None` if not owned, or if
    /// assigned with an unknown start and nothing was offered yet.
    pub fn commit_offset(&self, partition: u32) -> Option<i64> {
        self.parts.get(&partition).and_then(Part::commit_offset)
    }

    /// The partitions this gate owns whose own progress would release a parked key, but whose
    /// commit of that progress is not known to have succeeded: the commit offset is past the
    /// lowest fence a key waits for there, the observed committed offset is not (sorted).
    /// Commit them now and report a success with [`OrderGate::observe_committed`]; until then
    /// the keys stay parked. [`OrderGate::poll_fence`] alone does not cover this: when a fence
    /// passes, an earlier record of another key may still hold the commit offset below it, and
    /// the progress past the fence comes later with no fence to announce it.
    pub fn unconfirmed_barriers(&self) -> Vec<u32> {
        let mut out: Vec<u32> = self
            .waiting
            .iter()
            .filter_map(|(a, fences)| {
                let lowest = *fences.keys().next()?;
                let commit = self.parts.get(a)?.commit_offset()?;
                let known = self.known.get(a).copied().unwrap_or(i64::MIN);
                (commit > lowest && known <= lowest).then_some(*a)
            })
            .collect();
        out.sort_unstable();
        out
    }

    /// The partitions this gate does not own whose committed offset parked records wait on,
    /// each with the lowest fence offset waited for (sorted by partition). Poll their
    /// committed offsets and report them with [`OrderGate::observe_committed`]; a parked
    /// record is released once the committed offset is greater than its fence offset.
    /// Partitions this gate owns are never listed: their committed offset is what the caller
    /// itself commits and reports (see [`OrderGate::unconfirmed_barriers`]).
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

    /// Every key parked now, with its barrier and parked records, sorted by partition and
    /// first parked offset.
    pub fn parked_keys(&self) -> Vec<ParkedKey> {
        let mut out: Vec<ParkedKey> = self
            .waiting
            .iter()
            .flat_map(|(a, fences)| {
                fences
                    .iter()
                    .flat_map(move |(f, keys)| keys.iter().map(move |(p, key)| (*a, *f, *p, key)))
            })
            .filter_map(|(a, f, p, key)| {
                let q = self.parts.get(&p)?.keys.get(key)?;
                Some(ParkedKey {
                    partition: p,
                    key: Arc::clone(key),
                    barrier_partition: a,
                    fence_offset: f,
                    first_offset: q.items.front()?.offset,
                    records: q.items.len(),
                })
            })
            .collect();
        out.sort_unstable_by_key(|k| (k.partition, k.first_offset));
        out
    }

    /// Gives up waiting for the barrier `key` is parked on in `partition`: its records are
    /// released as if the barrier had passed (later records of the key with the same route
    /// too), each counted as an order exception. Returns false if the key is not parked there.
    pub fn release_parked(&mut self, partition: u32, key: &[u8]) -> bool {
        let Some(part) = self.parts.get_mut(&partition) else {
            return false;
        };
        let Some((key, q)) = part.keys.get_key_value(key) else {
            return false;
        };
        if q.head != Head::Waiting {
            return false;
        }
        let key = Arc::clone(key);
        let q = part.keys.get_mut(&key).expect("looked up above");
        let route = q
            .items
            .front()
            .and_then(|p| p.route)
            .expect("a parked key's head has a route");
        q.head = Head::Queued;
        self.parked -= q.items.len();
        part.parked -= q.items.len();
        part.forced
            .insert(Arc::clone(&key), (route.from_partition, route.fence_offset));
        if let Some(fences) = self.waiting.get_mut(&route.from_partition) {
            if let Some(keys) = fences.get_mut(&route.fence_offset) {
                keys.retain(|(p, k)| !(*p == partition && *k == key));
                if keys.is_empty() {
                    fences.remove(&route.fence_offset);
                }
            }
            if fences.is_empty() {
                self.waiting.remove(&route.from_partition);
            }
        }
        self.try_release(partition, &key);
        true
    }

    /// Records currently parked: held because their key waits for a migration barrier.
    pub fn parked(&self) -> usize {
        self.parked
    }

    /// Records of `partition` parked now (0 if not owned).
    pub fn parked_on(&self, partition: u32) -> usize {
        self.parts.get(&partition).map_or(0, |p| p.parked)
    }

    /// Records offered and not yet processed (parked, queued, released or ready).
    pub fn pending(&self) -> usize {
        self.parts.values().map(|p| p.pending).sum()
    }

    /// Offers ignored because their offset had been offered already.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// Offers ignored because their offset was below their assignment's start offset.
    pub fn below_start(&self) -> u64 {
        self.below_start
    }

    /// Records released by [`OrderGate::release_parked`] before their barrier passed.
    pub fn order_exceptions(&self) -> u64 {
        self.order_exceptions
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
            let mut forced = false;
            if let Some(r) = route {
                let passed = self
                    .known
                    .get(&r.from_partition)
                    .is_some_and(|&done| done > r.fence_offset);
                forced = !passed
                    && part
                        .forced
                        .get(key)
                        .is_some_and(|&(a, f)| a == r.from_partition && r.fence_offset <= f);
                if !passed && !forced {
                    let part = self.parts.get_mut(&partition).expect("checked above");
                    let q = part.keys.get_mut(key).expect("checked above");
                    q.head = Head::Waiting;
                    self.parked += q.items.len();
                    part.parked += q.items.len();
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
            if forced {
                self.order_exceptions += 1;
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
                key: Some(Arc::clone(key)),
                route,
                parked: was_parked,
                forced,
            });
            return;
        }
    }

    /// Marks the front record of `key` on `partition` processed; the key's queue is dropped
    /// when empty.
    fn complete_head(&mut self, partition: u32, key: &Arc<[u8]>) {
        let part = self.parts.get_mut(&partition).expect("owned partition");
        let q = part.keys.get_mut(key).expect("queued key");
        let item = q.items.pop_front().expect("non-empty queue");
        q.head = Head::Queued;
        if q.items.is_empty() {
            part.keys.remove(key);
        }
        self.complete_slot(partition, item.offset);
    }

    /// Marks `offset` of `partition` processed and advances the partition's processed prefix.
    fn complete_slot(&mut self, partition: u32, offset: i64) {
        let part = self.parts.get_mut(&partition).expect("owned partition");
        part.pending -= 1;
        if let Ok(i) = part.log.binary_search_by_key(&offset, |s| s.offset) {
            part.log[i].done = true;
        }
        while part.log.front().is_some_and(|s| s.done) {
            part.log.pop_front();
        }
    }

    /// Releases the parked keys whose barrier partitions became known committed past their
    /// fence.
    fn run_wakes(&mut self) {
        while let Some(a) = self.wake.pop() {
            let Some(&done) = self.known.get(&a) else {
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
                if let Some(part) = self.parts.get_mut(&p) {
                    if let Some(q) = part.keys.get_mut(&key) {
                        if q.head == Head::Waiting {
                            q.head = Head::Queued;
                            self.parked -= q.items.len();
                            part.parked -= q.items.len();
                        }
                    }
                }
                self.try_release(p, &key);
            }
        }
    }
}
