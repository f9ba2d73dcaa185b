//! The control log of coordinated producers: its records and the rules every member applies.
//!
//! Producers of one topic (members) coordinate moves through one single-partition, compacted
//! Kafka topic (design: `docs/routing.md`, "Many producers"). Kafka orders every write to it;
//! every member reads it from the beginning and then tails it, and applies each record with
//! [`ControlLog::apply`] — a pure function of the state and the record — so all members reach
//! the same state without any other agreement. What the rules guarantee:
//!
//! - **One decider per term.** A [`Control::Claim`] of term `n` is valid only as the first
//!   claim of `n` after term `n − 1`; its member decides from there on. Claims are never
//!   compacted away (one log key per term and member, and a member claims a term at most
//!   once), so the term in force at any position can always be recomputed.
//! - **A stale decider's writes are ignored by everyone.** A propose, commit or abort counts
//!   only if its move's term is the term in force at its position and its author is that
//!   term's decider. A decider that was replaced while it was stopped (a zombie) may still write;
//!   the log orders those writes after the claim that replaced it, so every reader ignores them.
//!   Timing decides only *when* someone claims, never whether a record counts.
//! - **A new term aborts what the old one left open.** At a valid claim every pending move is
//!   aborted (its key's held records go back to the old partition). A fence the old decider had
//!   already written is harmless: no route ever names it.
//! - **Compaction keeps the answer.** Each record has a log key ([`Control::log_key`]): a
//!   propose and its commit or abort share `move/<term>/<seq>`, so compaction keeps the last
//!   state of each move (its decider writes one commit or one abort, never both); a commit
//!   carries the key's whole new route, so it needs nothing
//!   before it. A decider may tombstone a move record once a later commit of the same key is in
//!   the log. Reading the compacted log gives the same routes, term and decider as reading the
//!   full log (checked by the model test `control_log_model.rs`).
//!
//! - **Growth is a move of every remapped key at once.** [`Control::Want`] (any member) records
//!   a partition count wanted; the decider answers with [`Control::Grow`], every member writes
//!   its own epoch fences and [`Control::GrowReady`] with their offsets, and the decider's
//!   [`Control::Grown`] carries the whole [`Epoch`] (the highest fence per old partition), so
//!   it needs nothing before it. A grow and its grown or abort share the move log key, the
//!   abort of a growth names [`EPOCH_KEY`], and a new term aborts a pending growth as it aborts
//!   moves. Wants are keyed by their count, so compaction keeps the highest.
//!
//! Liveness (heartbeats, the member timeout, who should claim) is the adapter's business and
//! deliberately not part of validity.

use rustc_hash::FxHashMap;

use super::epoch::{Epoch, EPOCH_KEY};
use super::header::{put_varint, HeaderError, Reader, RouteHeader, VERSION};
use super::route_state::RouteEntry;

/// Name used in decoding errors of control records.
pub const CONTROL_RECORD: &str = "keyshift-control";

/// A producer taking part in the coordination.
pub type MemberId = u64;

/// A move: the term of the decider that proposed it, and that decider's sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MoveId {
    /// Term of the decider that proposed it.
    pub term: u64,
    /// Its number within the term.
    pub seq: u64,
}

/// What one member sent since its previous heartbeat: the decider adds it to what it sees
/// itself, so it balances the traffic of every member, not a sample.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Load {
    /// Records sent per partition (index = partition).
    pub partitions: Vec<u64>,
    /// Its busiest keys and their records, busiest first (a bounded summary, not every key).
    pub keys: Vec<(Box<[u8]>, u64)>,
}

/// One record of the control log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// `member` decides from term `term` on (valid iff `term` is the current term + 1).
    Claim {
        /// The new term.
        term: u64,
        /// The claimant.
        member: MemberId,
    },
    /// The decider moves `key` to partition `to`: members hold its records and answer ready.
    Propose {
        /// The move.
        id: MoveId,
        /// Its author.
        member: MemberId,
        /// The key that moves.
        key: Box<[u8]>,
        /// Where it goes.
        to: u32,
    },
    /// `member` sends no more records of the move's key to the old partition, and wrote its own
    /// fence of the key there, after every record of the key it sent there, at `fence_offset`.
    Ready {
        /// The move.
        id: MoveId,
        /// The member that is ready.
        member: MemberId,
        /// Offset of the member's fence on the old partition.
        fence_offset: i64,
    },
    /// `member` is alive (written every heartbeat interval; liveness only, never validity),
    /// with what it sent since its previous heartbeat.
    Heartbeat {
        /// The member.
        member: MemberId,
        /// Its load since its previous heartbeat.
        load: Load,
        /// When the member wrote it, in microseconds of the member's own clock. Only the member
        /// itself interprets it: having read back its heartbeat written at `t`, it has read
        /// every record written before `t` (the log's order is the order of writes).
        written_us: u64,
    },
    /// The fence is written: the key's route is now `entry` (`None`: home, no header).
    Commit {
        /// The move.
        id: MoveId,
        /// Its author.
        member: MemberId,
        /// The key that moved.
        key: Box<[u8]>,
        /// The key's new route.
        entry: Option<RouteEntry>,
    },
    /// `member` closed cleanly: every record it sent is acknowledged or failed and it sends no
    /// more. Liveness only, like a heartbeat, whose log key it shares, so compaction keeps the
    /// departure rather than an older heartbeat.
    Leave {
        /// The member.
        member: MemberId,
    },
    /// The move is called off: the key stays where it was. With key [`EPOCH_KEY`], the
    /// pending growth is called off: keys stay homed on the partitions in use.
    Abort {
        /// The move.
        id: MoveId,
        /// Its author.
        member: MemberId,
        /// The key that stays.
        key: Box<[u8]>,
    },
    /// Some member wants keys homed on `partitions` partitions (`keyshift expand`, the
    /// gateway's `/admin/grow`). Any member may write it; the decider grows the topic to the
    /// highest count wanted once nothing else is pending (see [`super::coordinator`]).
    Want {
        /// The member that asked.
        member: MemberId,
        /// Partitions wanted.
        partitions: u32,
    },
    /// The decider grows the partitions keys are homed on from `from` to `to`: every member
    /// holds the records of keys whose home changes (and that have no route), writes its own
    /// epoch fence on every old partition ([`super::epoch::Growth`]) and answers
    /// [`Control::GrowReady`]. Shares the move ids and log keys of moves.
    Grow {
        /// The growth.
        id: MoveId,
        /// Its author.
        member: MemberId,
        /// Partitions in use.
        from: u32,
        /// Partitions wanted.
        to: u32,
    },
    /// `member`'s epoch fences of the growth are written: per old partition (index), the
    /// offset of its last one, behind every record it sent there.
    GrowReady {
        /// The growth.
        id: MoveId,
        /// The member that is ready.
        member: MemberId,
        /// Its barrier per old partition.
        fences: Vec<i64>,
    },
    /// Every member known at the growth's start is ready: keys are homed on `epoch.to` from
    /// here on, with the barriers of `epoch` (the highest of every member's fences).
    Grown {
        /// The growth.
        id: MoveId,
        /// Its author.
        member: MemberId,
        /// The epoch in force from here on (it carries the earlier counts, so it needs nothing
        /// before it).
        epoch: Epoch,
    },
}

impl Control {
    /// The record's key in the control topic, which decides what compaction keeps.
    pub fn log_key(&self) -> String {
        match self {
            Control::Claim { term, member } => format!("term/{term}/{member}"),
            Control::Propose { id, .. }
            | Control::Commit { id, .. }
            | Control::Abort { id, .. }
            | Control::Grow { id, .. }
            | Control::Grown { id, .. } => move_key(*id),
            Control::GrowReady { id, member, .. } => {
                format!("grow-ready/{}/{}/{member}", id.term, id.seq)
            }
            Control::Want { partitions, .. } => want_key(*partitions),
            Control::Ready { id, member, .. } => {
                format!("ready/{}/{}/{member}", id.term, id.seq)
            }
            Control::Heartbeat { member, .. } | Control::Leave { member } => member_key(*member),
        }
    }
}

impl Control {
    /// The record's value, version 1: `0x01 | tag | fields` with unsigned LEB128 varints and
    /// byte strings as a varint length then the bytes. Tags and fields:
    /// claim `0 | term | member`; propose `1 | term | seq | member | key | to`;
    /// ready `2 | term | seq | member | fence_offset`; heartbeat `5 | member | partitions |
    /// records per partition … | keys | (key | records) … | written_us`; leave `6 | member`;
    /// commit `3 | term | seq | member | key | 0` (home) or
    /// `… | 1 | partition | set_index | from_partition | fence_offset`;
    /// abort `4 | term | seq | member | key`; want `10 | member | partitions`;
    /// grow `7 | term | seq | member | from | to`; grow-ready `8 | term | seq | member |
    /// count | fence_offset …`; grown `9 | term | seq | member | epoch` (the epoch's route-state
    /// value, [`Epoch::encode`], as a byte string).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![VERSION];
        let id = |out: &mut Vec<u8>, id: &MoveId, member: MemberId| {
            put_varint(out, id.term);
            put_varint(out, id.seq);
            put_varint(out, member);
        };
        let key = |out: &mut Vec<u8>, key: &[u8]| {
            put_varint(out, key.len() as u64);
            out.extend_from_slice(key);
        };
        match self {
            Control::Claim { term, member } => {
                out.push(0);
                put_varint(&mut out, *term);
                put_varint(&mut out, *member);
            }
            Control::Propose {
                id: i,
                member,
                key: k,
                to,
            } => {
                out.push(1);
                id(&mut out, i, *member);
                key(&mut out, k);
                put_varint(&mut out, u64::from(*to));
            }
            Control::Ready {
                id: i,
                member,
                fence_offset,
            } => {
                out.push(2);
                id(&mut out, i, *member);
                debug_assert!(*fence_offset >= 0, "negative fence offset");
                put_varint(&mut out, *fence_offset as u64);
            }
            Control::Heartbeat {
                member,
                load,
                written_us,
            } => {
                out.push(5);
                put_varint(&mut out, *member);
                put_varint(&mut out, load.partitions.len() as u64);
                for n in &load.partitions {
                    put_varint(&mut out, *n);
                }
                put_varint(&mut out, load.keys.len() as u64);
                for (k, n) in &load.keys {
                    key(&mut out, k);
                    put_varint(&mut out, *n);
                }
                put_varint(&mut out, *written_us);
            }
            Control::Leave { member } => {
                out.push(6);
                put_varint(&mut out, *member);
            }
            Control::Commit {
                id: i,
                member,
                key: k,
                entry,
            } => {
                out.push(3);
                id(&mut out, i, *member);
                key(&mut out, k);
                match entry {
                    None => out.push(0),
                    Some(e) => {
                        out.push(1);
                        put_varint(&mut out, u64::from(e.partition));
                        put_varint(&mut out, u64::from(e.route.set_index));
                        put_varint(&mut out, u64::from(e.route.from_partition));
                        debug_assert!(e.route.fence_offset >= 0, "negative fence offset");
                        put_varint(&mut out, e.route.fence_offset as u64);
                    }
                }
            }
            Control::Abort {
                id: i,
                member,
                key: k,
            } => {
                out.push(4);
                id(&mut out, i, *member);
                key(&mut out, k);
            }
            Control::Want { member, partitions } => {
                out.push(10);
                put_varint(&mut out, *member);
                put_varint(&mut out, u64::from(*partitions));
            }
            Control::Grow {
                id: i,
                member,
                from,
                to,
            } => {
                out.push(7);
                id(&mut out, i, *member);
                put_varint(&mut out, u64::from(*from));
                put_varint(&mut out, u64::from(*to));
            }
            Control::GrowReady {
                id: i,
                member,
                fences,
            } => {
                out.push(8);
                id(&mut out, i, *member);
                put_varint(&mut out, fences.len() as u64);
                for &f in fences {
                    debug_assert!(f >= 0, "negative fence offset");
                    put_varint(&mut out, f as u64);
                }
            }
            Control::Grown {
                id: i,
                member,
                epoch,
            } => {
                out.push(9);
                id(&mut out, i, *member);
                key(&mut out, &epoch.encode());
            }
        }
        out
    }

    /// Decodes a value written by [`Control::encode`]; anything else is a named error.
    pub fn decode(bytes: &[u8]) -> Result<Self, HeaderError> {
        let mut r = Reader::new(CONTROL_RECORD, bytes)?;
        let tag = r.u32("tag")?;
        let id = |r: &mut Reader<'_>| -> Result<(MoveId, MemberId), HeaderError> {
            let term = r.u64("term")?;
            let seq = r.u64("seq")?;
            Ok((MoveId { term, seq }, r.u64("member")?))
        };
        let record = match tag {
            0 => Control::Claim {
                term: r.u64("term")?,
                member: r.u64("member")?,
            },
            1 => {
                let (id, member) = id(&mut r)?;
                Control::Propose {
                    id,
                    member,
                    key: r.bytes("key")?.into(),
                    to: r.u32("to")?,
                }
            }
            2 => {
                let (id, member) = id(&mut r)?;
                let fence = r.u64("fence_offset")?;
                let fence_offset =
                    i64::try_from(fence).map_err(|_| HeaderError::NegativeOffset(fence as i64))?;
                Control::Ready {
                    id,
                    member,
                    fence_offset,
                }
            }
            5 => {
                let member = r.u64("member")?;
                // Counts are bounded by what the rest of the value can hold (one byte each at
                // least), so a forged count cannot make the decoder allocate without bound.
                let parts = r.u32("partitions")? as usize;
                let mut partitions = Vec::with_capacity(parts.min(r.remaining()));
                for _ in 0..parts {
                    partitions.push(r.u64("partition_records")?);
                }
                let keys = r.u32("keys")? as usize;
                let mut load_keys = Vec::with_capacity(keys.min(r.remaining()));
                for _ in 0..keys {
                    let k: Box<[u8]> = r.bytes("key")?.into();
                    load_keys.push((k, r.u64("key_records")?));
                }
                Control::Heartbeat {
                    member,
                    load: Load {
                        partitions,
                        keys: load_keys,
                    },
                    written_us: r.u64("written_us")?,
                }
            }
            3 => {
                let (id, member) = id(&mut r)?;
                let key = r.bytes("key")?.into();
                let entry = match r.u32("entry")? {
                    0 => None,
                    1 => {
                        let partition = r.u32("partition")?;
                        let set_index = r.u32("set_index")?;
                        let from_partition = r.u32("from_partition")?;
                        let fence = r.u64("fence_offset")?;
                        let fence_offset = i64::try_from(fence)
                            .map_err(|_| HeaderError::NegativeOffset(fence as i64))?;
                        Some(RouteEntry {
                            partition,
                            route: RouteHeader {
                                set_index,
                                from_partition,
                                fence_offset,
                            },
                        })
                    }
                    _ => {
                        return Err(HeaderError::Overflow {
                            header: CONTROL_RECORD,
                            field: "entry",
                        })
                    }
                };
                Control::Commit {
                    id,
                    member,
                    key,
                    entry,
                }
            }
            6 => Control::Leave {
                member: r.u64("member")?,
            },
            4 => {
                let (id, member) = id(&mut r)?;
                Control::Abort {
                    id,
                    member,
                    key: r.bytes("key")?.into(),
                }
            }
            10 => Control::Want {
                member: r.u64("member")?,
                partitions: r.u32("partitions")?,
            },
            7 => {
                let (id, member) = id(&mut r)?;
                Control::Grow {
                    id,
                    member,
                    from: r.u32("from")?,
                    to: r.u32("to")?,
                }
            }
            8 => {
                let (id, member) = id(&mut r)?;
                let count = r.u32("fences")? as usize;
                // Bounded by the bytes left (one at least per offset), as in a heartbeat.
                let mut fences = Vec::with_capacity(count.min(r.remaining()));
                for _ in 0..count {
                    let raw = r.u64("fence_offset")?;
                    fences.push(
                        i64::try_from(raw).map_err(|_| HeaderError::NegativeOffset(raw as i64))?,
                    );
                }
                Control::GrowReady { id, member, fences }
            }
            9 => {
                let (id, member) = id(&mut r)?;
                let epoch = Epoch::decode(r.bytes("epoch")?)?;
                Control::Grown { id, member, epoch }
            }
            _ => {
                return Err(HeaderError::Overflow {
                    header: CONTROL_RECORD,
                    field: "tag",
                })
            }
        };
        r.finish()?;
        Ok(record)
    }
}

/// Records `member`'s ready at `fence_offset` among a move's `ready` members and their
/// `fences`, and answers the highest fence offset (−1 with none). A member's later ready
/// replaces its earlier one: compaction keeps only the last record per log key, so the state
/// must depend on the last one alone.
pub fn note_ready(
    ready: &mut Vec<MemberId>,
    fences: &mut Vec<i64>,
    member: MemberId,
    fence_offset: i64,
) -> i64 {
    match ready.iter().position(|&m| m == member) {
        Some(i) => fences[i] = fence_offset,
        None => {
            ready.push(member);
            fences.push(fence_offset);
        }
    }
    fences.iter().copied().max().unwrap_or(-1)
}

/// The log key of a move's records (a tombstone of it removes the move after compaction).
pub fn move_key(id: MoveId) -> String {
    format!("move/{}/{}", id.term, id.seq)
}

/// The log key of a want of `partitions` (one per count, so compaction keeps every count
/// wanted, and the highest one, which is what counts, survives lower later ones).
pub fn want_key(partitions: u32) -> String {
    format!("want/{partitions}")
}

/// The log key of a member's heartbeats and leave (a tombstone of it forgets the member).
pub fn member_key(member: MemberId) -> String {
    format!("hb/{member}")
}

/// The member whose heartbeats [`member_key`] names, if `log_key` is such a key (a tombstone
/// carries only its key).
pub fn member_of_key(log_key: &str) -> Option<MemberId> {
    log_key.strip_prefix("hb/")?.parse().ok()
}

/// The count whose wants [`want_key`] names, if `log_key` is such a key.
pub fn want_of_key(log_key: &str) -> Option<u32> {
    log_key.strip_prefix("want/")?.parse().ok()
}

/// Why a record did not count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// A claim of a term other than the current + 1.
    NotNextTerm,
    /// A move record of another term than the one in force.
    StaleTerm,
    /// A move record by a member that is not the decider of its term.
    NotDecider,
    /// A propose for a key that already has a move pending, or a commit or abort of a move
    /// other than the key's pending one.
    Conflict,
    /// A ready for a move that is not pending.
    NotPending,
    /// A growth whose counts do not grow, or a grow-ready whose fences do not cover the old
    /// partitions.
    BadGrowth,
}

/// What a valid record changed, for the adapter to act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// `member` decides from `term` on; `aborted` lists the keys of the moves it called off
    /// (their held records go back to the old partition).
    Decider {
        /// The new term.
        term: u64,
        /// The new decider.
        member: MemberId,
        /// Keys whose pending moves were aborted.
        aborted: Vec<Box<[u8]>>,
        /// Whether a pending growth was aborted too (held keys stay homed as before).
        growth_aborted: bool,
    },
    /// Hold the key's new records, write a fence of it on its current partition (after the
    /// records sent there so far) and answer ready with that fence's offset.
    Hold {
        /// The move.
        id: MoveId,
        /// The key.
        key: Box<[u8]>,
        /// Where it will go.
        to: u32,
    },
    /// A member is ready for a pending move.
    Ready {
        /// The move.
        id: MoveId,
        /// The member.
        member: MemberId,
    },
    /// `member` is alive.
    Heartbeat {
        /// The member.
        member: MemberId,
        /// When it wrote the heartbeat, in microseconds of its own clock.
        written_us: u64,
    },
    /// `member` left cleanly.
    Left {
        /// The member.
        member: MemberId,
    },
    /// The key's route changed: release its held records along `entry`.
    Moved {
        /// The key.
        key: Box<[u8]>,
        /// Its new route (`None`: home).
        entry: Option<RouteEntry>,
    },
    /// The key's pending move was called off: release its held records where they went before.
    Released {
        /// The key.
        key: Box<[u8]>,
    },
    /// Some member wants keys homed on `partitions` (the highest count wanted so far).
    Wanted {
        /// The highest count wanted.
        partitions: u32,
    },
    /// Hold the records of keys whose home changes from `from` to `to` partitions, write this
    /// member's epoch fences and answer grow-ready.
    Grow {
        /// The growth.
        id: MoveId,
        /// Partitions in use.
        from: u32,
        /// Partitions it grows to.
        to: u32,
    },
    /// A member is ready for the pending growth.
    GrowReady {
        /// The growth.
        id: MoveId,
        /// The member.
        member: MemberId,
    },
    /// Keys are homed on the epoch's count from here on: release the held keys to their new
    /// home with the barrier of their old one.
    Grown {
        /// The epoch in force.
        epoch: Epoch,
    },
    /// The pending growth was called off: release the held keys where they went before.
    GrowthReleased,
    /// The record did not count.
    Ignored(Rejected),
}

/// A growth between its grow and its grown or abort.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingGrowth {
    /// The growth.
    pub id: MoveId,
    /// Partitions in use.
    pub from: u32,
    /// Partitions it grows to.
    pub to: u32,
    /// Members that answered ready, in answer order.
    pub ready: Vec<MemberId>,
    /// Each ready member's barrier per old partition (same order as `ready`).
    pub fences: Vec<Vec<i64>>,
}

impl PendingGrowth {
    /// Records `member`'s barriers (a later grow-ready replaces its earlier one, as for a
    /// move's ready).
    pub fn note_ready(&mut self, member: MemberId, fences: &[i64]) {
        match self.ready.iter().position(|&m| m == member) {
            Some(i) => self.fences[i] = fences.to_vec(),
            None => {
                self.ready.push(member);
                self.fences.push(fences.to_vec());
            }
        }
    }
}

/// A move between its propose and its commit or abort.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingMove {
    /// The move.
    pub id: MoveId,
    /// Where the key goes.
    pub to: u32,
    /// Members that answered ready, in answer order.
    pub ready: Vec<MemberId>,
    /// Each ready member's fence offset (same order as `ready`).
    pub fences: Vec<i64>,
    /// The highest of `fences` (−1 before the first ready): the commit's route waits for it,
    /// so it waits for every ready member's records on the old partition.
    pub fence_offset: i64,
}

/// The state every member derives from the control log; see the module docs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ControlLog {
    term: u64,
    decider: Option<MemberId>,
    pending: FxHashMap<Box<[u8]>, PendingMove>,
    routes: FxHashMap<Box<[u8]>, RouteEntry>,
    epoch: Option<Epoch>,
    growth: Option<PendingGrowth>,
    wanted: u32,
    /// Counts with a want record in the log (not tombstoned): a decider that starts from the
    /// log tombstones those the epoch in force satisfies, or they would stay forever.
    want_records: std::collections::BTreeSet<u32>,
}

impl ControlLog {
    /// The state before the first record: term 0, no decider, every key at home.
    pub fn new() -> Self {
        Self::default()
    }

    /// The state before the first record when keys were already routed before the log began:
    /// by durable single producers, whose route topic coordinated members read at start (an
    /// upgrade from `--routes durable`). Every member must seed the same routes, so the seed
    /// must not change while members run (nothing writes a route topic once its producers are
    /// coordinated); a commit in the log replaces the seeded route of its key.
    pub fn with_routes(routes: impl IntoIterator<Item = (Box<[u8]>, RouteEntry)>) -> Self {
        Self {
            routes: routes.into_iter().collect(),
            ..Self::default()
        }
    }

    /// Seeds the epoch a durable producer recorded (an upgrade from `--routes durable` of a
    /// topic that grew): keys are homed on its count, as the durable producer homed them.
    pub fn with_epoch(mut self, epoch: Option<Epoch>) -> Self {
        self.epoch = epoch;
        self
    }

    /// The next record of the log is a tombstone of `log_key`. Only want records are tracked
    /// as records (the state a tombstone of a move or ready record removes was already
    /// superseded by the record that made the decider write it).
    pub fn forget(&mut self, log_key: &str) {
        if let Some(partitions) = want_of_key(log_key) {
            self.want_records.remove(&partitions);
        }
    }

    /// Applies the next record of the log.
    pub fn apply(&mut self, record: &Control) -> Effect {
        match record {
            Control::Claim { term, member } => {
                if *term != self.term + 1 {
                    return Effect::Ignored(Rejected::NotNextTerm);
                }
                self.term = *term;
                self.decider = Some(*member);
                let mut aborted: Vec<Box<[u8]>> = self.pending.drain().map(|(k, _)| k).collect();
                aborted.sort();
                Effect::Decider {
                    term: *term,
                    member: *member,
                    aborted,
                    growth_aborted: self.growth.take().is_some(),
                }
            }
            Control::Propose {
                id,
                member,
                key,
                to,
            } => {
                if let Some(reject) = self.authority(*id, *member) {
                    return Effect::Ignored(reject);
                }
                if self.pending.contains_key(key) {
                    return Effect::Ignored(Rejected::Conflict);
                }
                self.pending.insert(
                    key.clone(),
                    PendingMove {
                        id: *id,
                        to: *to,
                        ready: Vec::new(),
                        fences: Vec::new(),
                        fence_offset: -1,
                    },
                );
                Effect::Hold {
                    id: *id,
                    key: key.clone(),
                    to: *to,
                }
            }
            Control::Ready {
                id,
                member,
                fence_offset,
            } => {
                let Some(p) = self.pending.values_mut().find(|p| p.id == *id) else {
                    return Effect::Ignored(Rejected::NotPending);
                };
                p.fence_offset = note_ready(&mut p.ready, &mut p.fences, *member, *fence_offset);
                Effect::Ready {
                    id: *id,
                    member: *member,
                }
            }
            Control::Commit {
                id,
                member,
                key,
                entry,
            } => {
                if let Some(reject) = self.finish(*id, *member, key) {
                    return Effect::Ignored(reject);
                }
                match entry {
                    Some(e) => self.routes.insert(key.clone(), *e),
                    None => self.routes.remove(key),
                };
                Effect::Moved {
                    key: key.clone(),
                    entry: *entry,
                }
            }
            Control::Heartbeat {
                member, written_us, ..
            } => Effect::Heartbeat {
                member: *member,
                written_us: *written_us,
            },
            Control::Leave { member } => Effect::Left { member: *member },
            Control::Abort { id, member, key } if **key == *EPOCH_KEY => {
                if let Some(reject) = self.finish_growth(*id, *member) {
                    return Effect::Ignored(reject);
                }
                Effect::GrowthReleased
            }
            Control::Abort { id, member, key } => {
                if let Some(reject) = self.finish(*id, *member, key) {
                    return Effect::Ignored(reject);
                }
                Effect::Released { key: key.clone() }
            }
            Control::Want { partitions, .. } => {
                self.wanted = self.wanted.max(*partitions);
                self.want_records.insert(*partitions);
                Effect::Wanted {
                    partitions: self.wanted,
                }
            }
            Control::Grow {
                id,
                member,
                from,
                to,
            } => {
                if let Some(reject) = self.authority(*id, *member) {
                    return Effect::Ignored(reject);
                }
                if self.growth.is_some() {
                    return Effect::Ignored(Rejected::Conflict);
                }
                if *from == 0 || to <= from {
                    return Effect::Ignored(Rejected::BadGrowth);
                }
                self.growth = Some(PendingGrowth {
                    id: *id,
                    from: *from,
                    to: *to,
                    ready: Vec::new(),
                    fences: Vec::new(),
                });
                Effect::Grow {
                    id: *id,
                    from: *from,
                    to: *to,
                }
            }
            Control::GrowReady { id, member, fences } => {
                let Some(g) = self.growth.as_mut().filter(|g| g.id == *id) else {
                    return Effect::Ignored(Rejected::NotPending);
                };
                if fences.len() != g.from as usize {
                    return Effect::Ignored(Rejected::BadGrowth);
                }
                g.note_ready(*member, fences);
                Effect::GrowReady {
                    id: *id,
                    member: *member,
                }
            }
            Control::Grown { id, member, epoch } => {
                if let Some(reject) = self.finish_growth(*id, *member) {
                    return Effect::Ignored(reject);
                }
                self.epoch = Some(epoch.clone());
                Effect::Grown {
                    epoch: epoch.clone(),
                }
            }
        }
    }

    /// Checks a grown or abort of growth `id` and removes the pending growth; as for a move,
    /// one whose grow compaction removed finds nothing pending, which is allowed.
    fn finish_growth(&mut self, id: MoveId, member: MemberId) -> Option<Rejected> {
        if let Some(reject) = self.authority(id, member) {
            return Some(reject);
        }
        match &self.growth {
            Some(g) if g.id != id => Some(Rejected::Conflict),
            _ => {
                self.growth = None;
                None
            }
        }
    }

    /// Why `member` may not write records of move `id` now, if it may not.
    fn authority(&self, id: MoveId, member: MemberId) -> Option<Rejected> {
        if id.term != self.term {
            Some(Rejected::StaleTerm)
        } else if self.decider != Some(member) {
            Some(Rejected::NotDecider)
        } else {
            None
        }
    }

    /// Checks a commit or abort of move `id` of `key` and removes the key's pending move. A
    /// commit whose propose compaction removed finds nothing pending, which is allowed.
    fn finish(&mut self, id: MoveId, member: MemberId, key: &[u8]) -> Option<Rejected> {
        if let Some(reject) = self.authority(id, member) {
            return Some(reject);
        }
        match self.pending.get(key) {
            Some(p) if p.id != id => Some(Rejected::Conflict),
            _ => {
                self.pending.remove(key);
                None
            }
        }
    }

    /// The term in force.
    pub fn term(&self) -> u64 {
        self.term
    }

    /// The decider of the term in force, if any term was claimed.
    pub fn decider(&self) -> Option<MemberId> {
        self.decider
    }

    /// The key's pending move, if it has one.
    pub fn pending(&self, key: &[u8]) -> Option<&PendingMove> {
        self.pending.get(key)
    }

    /// Keys with a pending move.
    pub fn pending_keys(&self) -> impl Iterator<Item = &[u8]> {
        self.pending.keys().map(|k| &**k)
    }

    /// The key's route (`None`: home, no header).
    pub fn route(&self, key: &[u8]) -> Option<&RouteEntry> {
        self.routes.get(key)
    }

    /// Every key away from home (or in a headed set at home), with its route.
    pub fn routes(&self) -> impl Iterator<Item = (&[u8], &RouteEntry)> {
        self.routes.iter().map(|(k, e)| (&**k, e))
    }

    /// The epoch in force, if the topic grew.
    pub fn epoch(&self) -> Option<&Epoch> {
        self.epoch.as_ref()
    }

    /// The growth pending, if any.
    pub fn growth(&self) -> Option<&PendingGrowth> {
        self.growth.as_ref()
    }

    /// The highest partition count any member wanted (0: none); it is done once the epoch in
    /// force homes keys on at least that many.
    pub fn wanted(&self) -> u32 {
        self.wanted
    }

    /// The counts whose want records are in the log, not tombstoned ([`ControlLog::forget`]).
    pub fn want_records(&self) -> impl Iterator<Item = u32> + '_ {
        self.want_records.iter().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(term: u64, seq: u64) -> MoveId {
        MoveId { term, seq }
    }

    #[test]
    fn test_vectors_and_round_trips() {
        let claim = Control::Claim { term: 2, member: 7 };
        assert_eq!(claim.encode(), [0x01, 0x00, 0x02, 0x07]);
        let commit = Control::Commit {
            id: id(2, 5),
            member: 7,
            key: b"k".as_slice().into(),
            entry: Some(RouteEntry {
                partition: 3,
                route: RouteHeader {
                    set_index: 4,
                    from_partition: 1,
                    fence_offset: 300,
                },
            }),
        };
        assert_eq!(
            commit.encode(),
            [0x01, 0x03, 0x02, 0x05, 0x07, 0x01, b'k', 0x01, 0x03, 0x04, 0x01, 0xAC, 0x02]
        );
        let all = [
            claim,
            commit,
            Control::Propose {
                id: id(u64::MAX, 0),
                member: u64::MAX,
                key: vec![0xff; 300].into(),
                to: u32::MAX,
            },
            Control::Ready {
                id: id(1, 2),
                member: 3,
                fence_offset: i64::MAX,
            },
            Control::Heartbeat {
                member: u64::MAX,
                load: Load::default(),
                written_us: u64::MAX,
            },
            Control::Heartbeat {
                member: 7,
                load: Load {
                    partitions: vec![0, 1, u64::MAX],
                    keys: vec![(b"hot".as_slice().into(), 900), (b"".as_slice().into(), 1)],
                },
                written_us: 1_500_000,
            },
            Control::Leave { member: u64::MAX },
            Control::Commit {
                id: id(1, 2),
                member: 3,
                key: b"".as_slice().into(),
                entry: None,
            },
            Control::Abort {
                id: id(1, 2),
                member: 3,
                key: b"x".as_slice().into(),
            },
            Control::Want {
                member: 3,
                partitions: u32::MAX,
            },
            Control::Grow {
                id: id(1, 2),
                member: 3,
                from: 8,
                to: 16,
            },
            Control::GrowReady {
                id: id(1, 2),
                member: 3,
                fences: vec![0, i64::MAX, 5],
            },
            Control::Grown {
                id: id(1, 2),
                member: 3,
                epoch: Epoch {
                    number: 2,
                    from: 3,
                    to: 6,
                    fences: vec![1, 2, 3],
                    earlier: vec![2],
                },
            },
        ];
        for r in all {
            assert_eq!(Control::decode(&r.encode()), Ok(r));
        }
        // Growth records: want, grow, grow-ready, and a grown that embeds the epoch's value.
        assert_eq!(
            Control::Want {
                member: 7,
                partitions: 16
            }
            .encode(),
            [0x01, 0x0A, 0x07, 0x10]
        );
        let grown = Control::Grown {
            id: id(2, 5),
            member: 7,
            epoch: Epoch {
                number: 1,
                from: 2,
                to: 4,
                fences: vec![5, 300],
                earlier: vec![],
            },
        };
        assert_eq!(
            grown.encode(),
            [0x01, 0x09, 0x02, 0x05, 0x07, 0x08, 0x01, 0x01, 0x02, 0x04, 0x05, 0xAC, 0x02, 0x00]
        );
        assert_eq!(grown.log_key(), "move/2/5");
        // A grow-ready whose count exceeds the bytes left is refused before anything is
        // reserved.
        assert!(Control::decode(&[0x01, 0x08, 0x01, 0x01, 0x01, 0xFF, 0xFF, 0xFF, 0x0F]).is_err());
        let leave = Control::Leave { member: 7 };
        assert_eq!(member_of_key(&leave.log_key()), Some(7));
        assert_eq!(member_of_key("term/1/7"), None);
        assert_eq!(member_of_key("hb/x"), None);
    }

    #[test]
    fn bad_values_are_named_errors() {
        let h = CONTROL_RECORD;
        assert_eq!(Control::decode(&[]), Err(HeaderError::Empty { header: h }));
        assert_eq!(
            Control::decode(&[0x01, 0x0B]),
            Err(HeaderError::Overflow {
                header: h,
                field: "tag"
            })
        );
        // A propose whose key claims 5 bytes and has 1.
        assert_eq!(
            Control::decode(&[0x01, 0x01, 0x01, 0x01, 0x01, 0x05, b'k']),
            Err(HeaderError::Truncated {
                header: h,
                field: "key"
            })
        );
        assert_eq!(
            Control::decode(&[0x01, 0x00, 0x02, 0x07, 0x00]),
            Err(HeaderError::TrailingBytes {
                header: h,
                extra: 1
            })
        );
    }

    #[test]
    fn a_new_term_aborts_open_moves_and_silences_the_old_decider() {
        let mut log = ControlLog::new();
        let k: Box<[u8]> = b"k".as_slice().into();
        assert!(matches!(
            log.apply(&Control::Claim { term: 1, member: 1 }),
            Effect::Decider { .. }
        ));
        let propose = Control::Propose {
            id: id(1, 1),
            member: 1,
            key: k.clone(),
            to: 2,
        };
        assert!(matches!(log.apply(&propose), Effect::Hold { .. }));
        // Member 2 is not the decider; a second claim of term 1 does not count.
        assert_eq!(
            log.apply(&Control::Claim { term: 1, member: 2 }),
            Effect::Ignored(Rejected::NotNextTerm)
        );
        assert_eq!(
            log.apply(&Control::Claim { term: 2, member: 2 }),
            Effect::Decider {
                term: 2,
                member: 2,
                aborted: vec![k.clone()],
                growth_aborted: false,
            }
        );
        // The old decider's commit, written after the claim, counts for nobody.
        let late = Control::Commit {
            id: id(1, 1),
            member: 1,
            key: k.clone(),
            entry: None,
        };
        assert_eq!(log.apply(&late), Effect::Ignored(Rejected::StaleTerm));
        assert_eq!(log.pending(&k), None);
        let forged = Control::Propose {
            id: id(2, 1),
            member: 1,
            key: k,
            to: 0,
        };
        assert_eq!(log.apply(&forged), Effect::Ignored(Rejected::NotDecider));
    }
}
