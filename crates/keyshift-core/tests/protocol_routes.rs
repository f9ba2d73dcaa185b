//! Model test of the producer side of fenced migration: the real [`Migrator`] driven through
//! random interleavings of records, moves, asynchronous delivery reports (acknowledged, failed,
//! refused at enqueue), route-state writes (acknowledged, failed and retried) and producer
//! crashes that lose everything in memory — then restart from what the route state holds.
//!
//! The checker is the consumer's barrier rule, not an implementation: a record of key K on
//! partition P is ordered after every earlier record of K on P, and a record carrying route
//! header {from A, fence f} after everything of K on A up to offset f; both transitively. For
//! every two consecutive delivered records of a key (in the order the application produced
//! them) the later one must be ordered after the earlier one — otherwise a consumer could
//! process them in the wrong order.
//!
//! Negative controls: the same histories with routes kept in memory only (a restarted producer
//! forgets moved keys, today's `--routes ephemeral`) must produce violations, and so must a
//! migrator that forgets a home set's header as soon as its first record is decided (issue 10
//! item 1), simulated here by acknowledging every headed record the moment it is decided.

use std::collections::{HashMap, VecDeque};

use keyshift_core::hash::Hasher;
use keyshift_core::protocol::{FenceHeader, Migrator, RouteChange, RouteEntry, RouteHeader, Step};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Durable routes, acknowledgements reported when they happen (as designed).
    Durable,
    /// Routes in memory only: a restart starts from an empty migrator.
    Ephemeral,
    /// Broken on purpose: headed records are reported acknowledged when decided.
    AckOnDecide,
}

/// A record or fence handed to the "client", waiting for its delivery report.
#[derive(Debug, Clone)]
struct Item {
    key: usize,
    seq: u32,
    route: Option<RouteHeader>,
    fence: Option<FenceHeader>,
}

/// A delivered record or fence of one key, as the checker sees it.
#[derive(Debug, Clone, Copy)]
struct Logged {
    seq: u32,
    partition: u32,
    offset: i64,
    route: Option<RouteHeader>,
    fence: bool,
}

#[derive(Debug, Default)]
struct Stats {
    migrations: u64,
    crashes: u64,
    refused: u64,
    failed: u64,
    saves_failed: u64,
    tombstones: u64,
    restored: u64,
}

struct World {
    mode: Mode,
    partitions: u32,
    rng: ChaCha8Rng,
    keys: Vec<Vec<u8>>,
    mig: Migrator,
    /// Where the "strategy" sends each key now.
    target: Vec<u32>,
    /// Records of each key not yet decided (held behind a fence or a route write).
    held: Vec<VecDeque<u32>>,
    /// Per partition, items in the client's queue in enqueue order.
    inflight: Vec<VecDeque<Item>>,
    /// Route-state writes in flight, in write order (one state partition).
    saving: VecDeque<RouteChange>,
    /// The route topic's content: the last value per key.
    store: HashMap<Vec<u8>, RouteEntry>,
    /// Next offset per partition.
    ends: Vec<i64>,
    key_seq: Vec<u32>,
    delivered: Vec<Vec<Logged>>,
    stats: Stats,
}

impl World {
    fn new(mode: Mode, keys: usize, partitions: u32, seed: u64) -> Self {
        let keys: Vec<Vec<u8>> = (0..keys)
            .map(|k| format!("location_{k}").into_bytes())
            .collect();
        let mig = Self::migrator(mode, partitions, &HashMap::new());
        let target = keys.iter().map(|k| mig.home(k)).collect();
        Self {
            mode,
            partitions,
            rng: ChaCha8Rng::seed_from_u64(seed),
            mig,
            target,
            held: vec![VecDeque::new(); keys.len()],
            inflight: vec![VecDeque::new(); partitions as usize],
            saving: VecDeque::new(),
            store: HashMap::new(),
            ends: vec![0; partitions as usize],
            key_seq: vec![0; keys.len()],
            delivered: vec![Vec::new(); keys.len()],
            stats: Stats::default(),
            keys,
        }
    }

    fn migrator(mode: Mode, partitions: u32, store: &HashMap<Vec<u8>, RouteEntry>) -> Migrator {
        match mode {
            Mode::Ephemeral => Migrator::new(partitions, Hasher::Murmur2).unwrap(),
            Mode::Durable | Mode::AckOnDecide => Migrator::restore(
                partitions,
                Hasher::Murmur2,
                store
                    .iter()
                    .map(|(k, e)| (k.clone().into_boxed_slice(), *e)),
            )
            .unwrap(),
        }
    }

    fn key_index(&self, key: &[u8]) -> usize {
        self.keys.iter().position(|k| k == key).expect("known key")
    }

    fn next_seq(&mut self, key: usize) -> u32 {
        let s = self.key_seq[key];
        self.key_seq[key] += 1;
        s
    }

    fn take_changes(&mut self) {
        while let Some(change) = self.mig.poll_change() {
            if change.entry.is_none() {
                self.stats.tombstones += 1;
            }
            self.saving.push_back(change);
        }
    }

    fn produce(&mut self, key: usize, retarget: u16) {
        if retarget.is_multiple_of(4) {
            self.target[key] = u32::from(retarget / 4) % self.partitions;
        }
        self.held[key].push_back(self.target[key]);
        self.pump(key);
    }

    /// Offers the key's undecided records to the migrator in order until one must wait.
    fn pump(&mut self, key: usize) {
        while let Some(&partition) = self.held[key].front() {
            match self.mig.on_record(&self.keys[key], partition) {
                Step::Send { partition, header } => {
                    self.held[key].pop_front();
                    let seq = self.next_seq(key);
                    if self.rng.gen_ratio(1, 10) {
                        // Refused by the client (too large): never written, never reported.
                        self.stats.refused += 1;
                        continue;
                    }
                    if let (Mode::AckOnDecide, Some(h)) = (self.mode, header) {
                        self.mig.record_acked(&self.keys[key], h);
                        self.take_changes();
                    }
                    self.inflight[partition as usize].push_back(Item {
                        key,
                        seq,
                        route: header,
                        fence: None,
                    });
                }
                Step::Fence {
                    fence_partition,
                    header,
                    route,
                    ..
                } => {
                    let seq = self.next_seq(key);
                    self.inflight[fence_partition as usize].push_back(Item {
                        key,
                        seq,
                        route,
                        fence: Some(header),
                    });
                    return;
                }
                Step::Hold => return,
            }
        }
    }

    fn append(&mut self, partition: u32, item: &Item) -> i64 {
        let offset = self.ends[partition as usize];
        self.ends[partition as usize] += 1;
        self.delivered[item.key].push(Logged {
            seq: item.seq,
            partition,
            offset,
            route: item.route,
            fence: item.fence.is_some(),
        });
        offset
    }

    /// The client reports the oldest item of `partition`: written, or failed.
    fn report(&mut self, partition: u32, fail: bool) {
        let Some(item) = self.inflight[partition as usize].pop_front() else {
            return;
        };
        let key = item.key;
        if fail {
            self.stats.failed += 1;
            if item.fence.is_some() {
                self.mig.fence_failed(&self.keys[key]);
                self.pump(key);
            }
            return;
        }
        let offset = self.append(partition, &item);
        if item.fence.is_some() {
            assert!(self.mig.fence_acked(&self.keys[key], offset));
            self.stats.migrations += 1;
            self.take_changes();
            self.pump(key);
        } else if let Some(h) = item.route {
            if self.mode != Mode::AckOnDecide
                && self.mig.wants_ack(&self.keys[key], partition, Some(h))
            {
                self.mig.record_acked(&self.keys[key], h);
                self.take_changes();
            }
        }
    }

    /// The route topic answers the oldest write: stored, or failed (then retried unless a
    /// newer change of the same key is queued, as the adapter does).
    fn save(&mut self, fail: bool) {
        let Some(change) = self.saving.pop_front() else {
            return;
        };
        if fail {
            self.stats.saves_failed += 1;
            if !self.saving.iter().any(|c| c.key == change.key) {
                self.saving.push_back(change);
            }
            return;
        }
        self.apply(&change);
        if let Some(e) = change.entry {
            assert!(self.mig.route_saved(&change.key, e.route.set_index));
            let key = self.key_index(&change.key);
            self.pump(key);
        }
    }

    fn apply(&mut self, change: &RouteChange) {
        match change.entry {
            Some(e) => self.store.insert(change.key.to_vec(), e),
            None => self.store.remove(&change.key[..]),
        };
    }

    /// kill -9: a prefix of each partition's queue and of the route writes made it out; the
    /// rest and everything held is lost. The new producer restores what the route topic holds
    /// and its strategy starts afresh (cold keys go home).
    fn crash(&mut self, reset_targets: bool) {
        self.stats.crashes += 1;
        for p in 0..self.partitions {
            let queue = std::mem::take(&mut self.inflight[p as usize]);
            let written = self.rng.gen_range(0..=queue.len());
            for item in queue.iter().take(written) {
                self.append(p, item);
            }
        }
        let saving = std::mem::take(&mut self.saving);
        let written = self.rng.gen_range(0..=saving.len());
        for change in saving.iter().take(written) {
            self.apply(change);
        }
        for h in &mut self.held {
            h.clear();
        }
        self.stats.restored += self.store.len() as u64;
        self.mig = Self::migrator(self.mode, self.partitions, &self.store);
        if reset_targets {
            for k in 0..self.keys.len() {
                self.target[k] = self.mig.home(&self.keys[k]);
            }
        }
    }

    fn step(&mut self, (kind, a, b): (u8, u16, u16)) {
        let key = a as usize % self.keys.len();
        let p = u32::from(a) % self.partitions;
        match kind % 16 {
            0..=5 => self.produce(key, b),
            6..=9 => self.report(p, b.is_multiple_of(8)),
            10..=12 => self.save(b.is_multiple_of(8)),
            13 if b.is_multiple_of(6) => self.crash(b.is_multiple_of(12)),
            _ => {
                for p in 0..self.partitions {
                    self.report(p, false);
                }
            }
        }
    }

    /// Everything reported and recorded, without further faults.
    fn drain(&mut self) {
        for _ in 0..10_000 {
            let idle = self.inflight.iter().all(VecDeque::is_empty)
                && self.saving.is_empty()
                && self.held.iter().all(VecDeque::is_empty);
            if idle {
                return;
            }
            for p in 0..self.partitions {
                self.report(p, false);
            }
            self.save(false);
            for k in 0..self.keys.len() {
                self.pump(k);
            }
        }
        panic!("the producer did not drain: a key stays held");
    }

    /// Consecutive delivered records (fences excluded) of every key that a consumer applying
    /// the barrier rule could process out of order.
    fn violations(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (key, log) in self.delivered.iter().enumerate() {
            let mut by_seq = log.clone();
            by_seq.sort_by_key(|l| l.seq);
            let records: Vec<&Logged> = by_seq.iter().filter(|l| !l.fence).collect();
            for pair in records.windows(2) {
                let (earlier, later) = (pair[0], pair[1]);
                if !ordered_after(log, self.partitions, later, earlier) {
                    out.push(format!(
                        "key {key}: seq {} at {}/{} may be processed before seq {} at {}/{} \
                         (route {:?})",
                        later.seq,
                        later.partition,
                        later.offset,
                        earlier.seq,
                        earlier.partition,
                        earlier.offset,
                        later.route
                    ));
                }
            }
        }
        out
    }
}

/// Whether the barrier rule orders `later` after `earlier` (both of one key whose delivered
/// items are `log`): a fixed point of "everything of the key on P up to offset o is before".
fn ordered_after(log: &[Logged], partitions: u32, later: &Logged, earlier: &Logged) -> bool {
    let mut before = vec![-1i64; partitions as usize];
    before[later.partition as usize] = later.offset - 1;
    if let Some(h) = later.route {
        let b = &mut before[h.from_partition as usize];
        *b = (*b).max(h.fence_offset);
    }
    loop {
        let mut changed = false;
        for item in log {
            if item.offset > before[item.partition as usize] {
                continue;
            }
            if let Some(h) = item.route {
                let b = &mut before[h.from_partition as usize];
                if h.fence_offset > *b {
                    *b = h.fence_offset;
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
    earlier.offset <= before[earlier.partition as usize]
}

fn run(mode: Mode, keys: usize, partitions: u32, seed: u64, actions: &[(u8, u16, u16)]) -> World {
    let mut w = World::new(mode, keys, partitions, seed);
    for &action in actions {
        w.step(action);
    }
    w.drain();
    w
}

fn random_actions(rng: &mut ChaCha8Rng, n: usize) -> Vec<(u8, u16, u16)> {
    (0..n).map(|_| (rng.gen(), rng.gen(), rng.gen())).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn durable_routes_keep_per_key_order_through_failures_and_restarts(
        keys in 1usize..5,
        partitions in 2u32..5,
        seed in any::<u64>(),
        actions in prop::collection::vec((any::<u8>(), any::<u16>(), any::<u16>()), 0..400),
    ) {
        let w = run(Mode::Durable, keys, partitions, seed, &actions);
        let v = w.violations();
        prop_assert!(v.is_empty(), "{:#?}\n{:?}", v, w.stats);
    }
}

/// Runs many random histories of `mode`; returns (histories with a violation, summed stats).
fn broken_runs(mode: Mode) -> (usize, Stats) {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut caught = 0;
    let mut total = Stats::default();
    for i in 0..300 {
        let actions = random_actions(&mut rng, 400);
        let w = run(mode, 3, 3, i, &actions);
        caught += usize::from(!w.violations().is_empty());
        total.migrations += w.stats.migrations;
        total.crashes += w.stats.crashes;
        total.refused += w.stats.refused;
        total.failed += w.stats.failed;
        total.saves_failed += w.stats.saves_failed;
        total.tombstones += w.stats.tombstones;
        total.restored += w.stats.restored;
    }
    (caught, total)
}

#[test]
fn random_histories_cover_failures_restarts_and_restored_routes() {
    let (caught, s) = broken_runs(Mode::Durable);
    assert_eq!(caught, 0);
    for (what, n) in [
        ("migrations", s.migrations),
        ("crashes", s.crashes),
        ("refused records", s.refused),
        ("failed deliveries", s.failed),
        ("failed route writes", s.saves_failed),
        ("tombstones", s.tombstones),
        ("restored entries", s.restored),
    ] {
        assert!(n > 0, "no {what} in the random histories: {s:?}");
    }
}

#[test]
fn the_check_catches_routes_forgotten_on_restart() {
    let (caught, _) = broken_runs(Mode::Ephemeral);
    assert!(
        caught > 0,
        "ephemeral routes across restarts went unnoticed"
    );
}

#[test]
fn the_check_catches_a_home_header_dropped_before_its_record_is_safe() {
    let (caught, _) = broken_runs(Mode::AckOnDecide);
    assert!(caught > 0, "a header dropped on decision went unnoticed");
}

// ---------------------------------------------------------------------------------------------
// The control log of coordinated producers (`keyshift_core::protocol::control`).
//
// Three members write to one log while each reads it with its own lag: a member acts on the
// state of the prefix it has read, so stale deciders (zombies) write proposes, commits and
// aborts after the claim that replaced them, several members claim the same term, and deciders
// tombstone move records that a later commit of the same key superseded. The property: the
// log compacted as Kafka would (last record per log key, tombstoned keys gone) reads to the same
// term, decider, pending moves and routes as the full log — so a member that starts after
// compaction agrees with every member that read everything. Growths run through the same log
// (want, grow, grow-ready, grown, and aborts of the epoch key), so the epoch in force, the
// pending growth and the count wanted must agree too. Negative control: keying move
// records by the user key instead of by the move lets a zombie's record replace a valid commit,
// and the check catches it.

mod control_model {
    use std::collections::BTreeMap;

    use keyshift_core::protocol::control::{want_key, Control, ControlLog, Effect, MoveId};
    use keyshift_core::protocol::epoch::{Epoch, EPOCH_KEY};
    use keyshift_core::protocol::{RouteEntry, RouteHeader};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// (log key, record; `None` is a tombstone).
    type Log = Vec<(String, Option<Control>)>;

    const MEMBERS: u64 = 3;
    const KEYS: [&[u8]; 3] = [b"a", b"b", b"c"];
    /// Histories per test (each 300 writes by three members).
    const SEEDS: u64 = 300;

    /// Reads `log` in order; returns the state and the position of each key's valid commit.
    fn read(log: &[(String, Option<Control>)]) -> (ControlLog, BTreeMap<Vec<u8>, usize>) {
        let mut state = ControlLog::new();
        let mut committed = BTreeMap::new();
        for (pos, (log_key, record)) in log.iter().enumerate() {
            match record {
                Some(r) => {
                    if let Effect::Moved { key, .. } = state.apply(r) {
                        committed.insert(key.to_vec(), pos);
                    }
                }
                None => state.forget(log_key),
            }
        }
        (state, committed)
    }

    /// What Kafka's compaction leaves: the last record of each log key, tombstoned keys removed.
    fn compact(log: &Log, key_of: fn(&Control) -> String) -> Log {
        let mut last: BTreeMap<String, usize> = BTreeMap::new();
        for (pos, (key, record)) in log.iter().enumerate() {
            let key = record.as_ref().map_or_else(|| key.clone(), key_of);
            last.insert(key, pos);
        }
        let mut keep: Vec<usize> = last
            .values()
            .copied()
            .filter(|&p| log[p].1.is_some())
            .collect();
        keep.sort_unstable();
        keep.into_iter().map(|p| log[p].clone()).collect()
    }

    /// Everything a reader derives, comparable: term, decider, pending moves, routes, and the
    /// epoch in force, pending growth (with its sorted ready members), the count wanted beyond
    /// the epoch (a want the epoch satisfies may be tombstoned, so its count is gone after
    /// compaction) and the counts whose want records are live.
    type Summary = (
        u64,
        Option<u64>,
        Vec<(Vec<u8>, MoveId, Vec<u64>, i64)>,
        Vec<(Vec<u8>, RouteEntry)>,
        (Option<Epoch>, Option<(MoveId, Vec<u64>)>, u32, Vec<u32>),
    );

    fn summary(s: &ControlLog) -> Summary {
        let mut pending: Vec<_> = s
            .pending_keys()
            .map(|k| {
                let p = s.pending(k).unwrap();
                let mut ready = p.ready.clone();
                ready.sort_unstable();
                (k.to_vec(), p.id, ready, p.fence_offset)
            })
            .collect();
        pending.sort();
        let mut routes: Vec<_> = s.routes().map(|(k, e)| (k.to_vec(), *e)).collect();
        routes.sort_by(|a, b| a.0.cmp(&b.0));
        let growth = s.growth().map(|g| {
            let mut ready = g.ready.clone();
            ready.sort_unstable();
            (g.id, ready)
        });
        let beyond = s.wanted() > s.epoch().map_or(0, |e| e.to);
        let growing = (
            s.epoch().cloned(),
            growth,
            if beyond { s.wanted() } else { 0 },
            s.want_records().collect(),
        );
        (s.term(), s.decider(), pending, routes, growing)
    }

    /// An epoch homing keys on at least `floor` partitions (a topic never shrinks).
    fn random_epoch(rng: &mut ChaCha8Rng, floor: u32) -> Epoch {
        let from = rng.gen_range(1..4);
        Epoch {
            number: rng.gen_range(1..5),
            from,
            to: floor.max(from + rng.gen_range(1..4)),
            fences: (0..from).map(|_| rng.gen_range(0..1000)).collect(),
            earlier: Vec::new(),
        }
    }

    fn random_entry(rng: &mut ChaCha8Rng) -> Option<RouteEntry> {
        rng.gen_bool(0.8).then(|| RouteEntry {
            partition: rng.gen_range(0..4),
            route: RouteHeader {
                set_index: rng.gen_range(1..100),
                from_partition: rng.gen_range(0..4),
                fence_offset: rng.gen_range(0..1000),
            },
        })
    }

    /// One random history of `steps` writes, with the log-key scheme `key_of` used by writers
    /// (for tombstones) and by compaction.
    fn history(seed: u64, steps: usize, key_of: fn(&Control) -> String) -> Log {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut log: Log = Vec::new();
        // How much of the log each member has read.
        let mut seen = [0usize; MEMBERS as usize];
        let mut next_seq = 0u64;
        // Terms each member claimed and moves finished: a member claims a term once and a
        // decider finishes a move once (it remembers what it wrote, whatever it has read).
        let mut claimed = std::collections::HashSet::new();
        let mut finished = std::collections::HashSet::new();
        // Each member's unfinished proposals: (member, user key) → move. A decider proposes a
        // key only when it has no unfinished move of it in its term.
        let mut open: std::collections::HashMap<(u64, &[u8]), MoveId> = Default::default();
        let mut open_growth: std::collections::HashMap<u64, MoveId> = Default::default();
        // (log key, user key, position of its last record) of every move written.
        let mut moves: Vec<(String, Vec<u8>, usize)> = Vec::new();
        while log.len() < steps {
            let m = rng.gen_range(0..MEMBERS);
            let me = m as usize;
            if rng.gen_bool(0.3) {
                seen[me] = rng.gen_range(seen[me]..=log.len());
                continue;
            }
            let (view, committed) = read(&log[..seen[me]]);
            let record = match rng.gen_range(0..9) {
                0 if claimed.insert((m, view.term() + 1)) => Some(Control::Claim {
                    term: view.term() + 1,
                    member: m,
                }),
                1 | 2 if view.decider() == Some(m) => {
                    let key = KEYS[rng.gen_range(0..KEYS.len())];
                    let mine = open.get(&(m, key)).filter(|id| id.term == view.term());
                    if let Some(p) = view.pending(key) {
                        let id = p.id;
                        open.remove(&(m, key));
                        if !finished.insert(id) {
                            None
                        } else if rng.gen_bool(0.75) {
                            Some(Control::Commit {
                                id,
                                member: m,
                                key: key.into(),
                                entry: random_entry(&mut rng),
                            })
                        } else {
                            Some(Control::Abort {
                                id,
                                member: m,
                                key: key.into(),
                            })
                        }
                    } else if mine.is_some() {
                        None
                    } else {
                        next_seq += 1;
                        let id = MoveId {
                            term: view.term(),
                            seq: next_seq,
                        };
                        open.insert((m, key), id);
                        Some(Control::Propose {
                            id,
                            member: m,
                            key: key.into(),
                            to: rng.gen_range(0..4),
                        })
                    }
                }
                3 => {
                    let pending: Vec<MoveId> = KEYS
                        .iter()
                        .filter_map(|k| view.pending(k).map(|p| p.id))
                        .collect();
                    (!pending.is_empty()).then(|| Control::Ready {
                        id: pending[rng.gen_range(0..pending.len())],
                        member: m,
                        fence_offset: rng.gen_range(0..1000),
                    })
                }
                4 if view.decider() == Some(m) => {
                    // Tombstone a move record superseded by a later commit of its key (as this
                    // member has read the log).
                    let stale: Vec<String> = moves
                        .iter()
                        .filter(|(_, key, last)| {
                            *last < seen[me] && committed.get(key).is_some_and(|c| c > last)
                        })
                        .map(|(k, _, _)| k.clone())
                        .collect();
                    if let Some(k) = stale.get(rng.gen_range(0..stale.len().max(1))) {
                        log.push((k.clone(), None));
                    }
                    None
                }
                // A decider tombstones wants the epoch in force satisfies.
                5 if view.decider() == Some(m) => {
                    let done: Vec<u32> = view
                        .want_records()
                        .filter(|&n| view.epoch().is_some_and(|e| n <= e.to))
                        .collect();
                    if let Some(n) = done.get(rng.gen_range(0..done.len().max(1))) {
                        log.push((want_key(*n), None));
                    }
                    None
                }
                6 => Some(Control::Want {
                    member: m,
                    partitions: rng.gen_range(2..8),
                }),
                7 if view.decider() == Some(m) => match view.growth() {
                    Some(g) if finished.insert(g.id) => {
                        Some(if open_growth.remove(&m).is_some() && rng.gen_bool(0.75) {
                            Control::Grown {
                                id: g.id,
                                member: m,
                                epoch: random_epoch(&mut rng, view.epoch().map_or(0, |e| e.to)),
                            }
                        } else {
                            Control::Abort {
                                id: g.id,
                                member: m,
                                key: EPOCH_KEY.into(),
                            }
                        })
                    }
                    Some(_) => None,
                    // Like a key's moves: a decider proposes no growth while its own previous
                    // one of this term is unfinished.
                    None if open_growth.get(&m).is_some_and(|id| id.term == view.term()) => None,
                    None => {
                        next_seq += 1;
                        let id = MoveId {
                            term: view.term(),
                            seq: next_seq,
                        };
                        open_growth.insert(m, id);
                        let from = rng.gen_range(1..4);
                        Some(Control::Grow {
                            id,
                            member: m,
                            from,
                            to: from + rng.gen_range(1..4),
                        })
                    }
                },
                8 => view.growth().map(|g| Control::GrowReady {
                    id: g.id,
                    member: m,
                    fences: (0..g.from).map(|_| rng.gen_range(0..1000)).collect(),
                }),
                _ => None,
            };
            if let Some(r) = record {
                let key = key_of(&r);
                if let Control::Propose { key: user, .. }
                | Control::Commit { key: user, .. }
                | Control::Abort { key: user, .. } = &r
                {
                    let pos = log.len();
                    match moves.iter_mut().find(|(k, _, _)| *k == key) {
                        Some(mv) => mv.2 = pos,
                        None => moves.push((key.clone(), user.to_vec(), pos)),
                    }
                }
                log.push((key, Some(r)));
            }
        }
        log
    }

    fn agree(log: &Log, key_of: fn(&Control) -> String) -> Result<(), String> {
        let full = summary(&read(log).0);
        let compacted = summary(&read(&compact(log, key_of)).0);
        if full == compacted {
            Ok(())
        } else {
            Err(format!(
                "full {full:?}\ncompacted {compacted:?}\nlog {log:?}"
            ))
        }
    }

    /// Move records keyed by the user key: one record per key survives compaction.
    fn by_user_key(r: &Control) -> String {
        match r {
            Control::Propose { key, .. }
            | Control::Commit { key, .. }
            | Control::Abort { key, .. } => {
                format!("move/{}", String::from_utf8_lossy(key))
            }
            other => other.log_key(),
        }
    }

    #[test]
    fn a_compacted_control_log_reads_like_the_full_one() {
        let mut stats = [0usize; 7];
        for seed in 0..SEEDS {
            let log = history(seed, 300, Control::log_key);
            agree(&log, Control::log_key).unwrap();
            let mut state = ControlLog::new();
            for r in log.iter().filter_map(|(_, r)| r.as_ref()) {
                match state.apply(r) {
                    Effect::Moved { .. } => stats[0] += 1,
                    Effect::Ignored(_) => stats[1] += 1,
                    Effect::Decider { aborted, .. } => stats[2] += aborted.len(),
                    Effect::Grown { .. } => stats[4] += 1,
                    Effect::GrowthReleased => stats[5] += 1,
                    _ => {}
                }
            }
            stats[3] += log.iter().filter(|(_, r)| r.is_none()).count();
            stats[6] += log
                .iter()
                .filter(|(k, r)| r.is_none() && k.starts_with("want/"))
                .count();
        }
        // The histories exercise commits, ignored (stale or conflicting) records, moves aborted
        // by a new term, tombstones, growths, aborted growths and tombstoned wants.
        assert!(stats.iter().all(|&n| n > 0), "{stats:?}");
    }

    #[test]
    fn the_check_catches_move_records_keyed_by_user_key() {
        let caught = (0..SEEDS)
            .filter(|&s| agree(&history(s, 300, by_user_key), by_user_key).is_err())
            .count();
        assert!(caught > 0, "compaction by user key went unnoticed");
    }
}
