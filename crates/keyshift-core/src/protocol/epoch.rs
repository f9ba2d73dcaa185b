//! Partition epochs: growing a keyed topic from N to M partitions without breaking per-key
//! order, with one fence per old partition instead of one per key.
//!
//! Why: a key's home is `hash(key) % partitions`, so adding partitions changes the home of
//! most keys. A plain producer then sends a key's new records to its new home while its older
//! records still wait on the old one, and a consumer of the new home processes them first.
//!
//! How: growth is a change of *epoch*. The producer writes an epoch fence on every old
//! partition — behind every record it sent there — and learns their offsets ([`Growth`]).
//! From then on a key is homed `% M`; a record of a key whose home changed (`% N ≠ % M`)
//! carries the route header `{set 0, from: its old home, fence: that partition's epoch fence}`
//! ([`Epoch::header`]), so the ordered consumer parks it until the group has committed the
//! old home past the fence — the same rule as for a moved key
//! ([`crate::protocol::OrderGate`]), so consumers need nothing new. Keys whose home did not
//! change carry nothing and never wait. Set index 0 says "the key's home set, after an epoch"
//! (a moved key's sets count from 1), which lets a consumer tell parking caused by growth from
//! parking caused by a move.
//!
//! # Chains of epochs
//!
//! A key silent through a whole epoch has no record at its intermediate home, so the next
//! epoch's fence there would not order anything after the key's records on the home before.
//! Every epoch fence therefore has the same key, [`EPOCH_KEY`] (one per-key FIFO on each
//! partition for the consumer's gate), and on partition `q` the new epoch first writes one
//! fence per *preimage* `p ≠ q` of the previous epoch (the old homes of keys whose home became
//! `q`), each carrying the route header of the previous epoch's fence on `p`. The gate releases
//! a fence only after its key's earlier records on its partition and its own barrier, so `q`'s
//! last epoch fence — the one records wait for — comes after every barrier of every earlier
//! epoch that led there. Keys of `q` whose home did not change last time were on `q` already,
//! behind the previous epoch's fence on `q` (same key, earlier offset).
//!
//! So a key whose home changed in an *earlier* epoch but not in the last one still carries a
//! header, `{from: q, fence: q's last epoch fence}` — a barrier on its own partition, earlier
//! in it, which the gate passes once `q` is committed past that fence, and which chains back to
//! the key's older homes. Only a key whose home never changed carries nothing: the epoch keeps
//! the active counts of every earlier epoch (`earlier`) to tell.
//! `h ≡ q (mod to)` and `h ≡ p (mod from)` have a solution exactly when
//! `p ≡ q (mod gcd(from, to))`, which gives the preimages without enumerating keys.
//!
//! # Durable form
//!
//! The epoch is kept in the producer's route state under the reserved key [`EPOCH_KEY`],
//! written before any record is homed by it, so a restarted producer resumes `% M` with the
//! same headers. Value (the layout rules of [`RouteHeader`]):
//!
//! ```text
//! 0x01 | number (u32) | from (u32) | to (u32) | from × fence_offset (u64, ≤ i64::MAX)
//!      | count (u32) | count × earlier active partitions (u32), oldest first
//! ```
//!
//! Test vector: `Epoch { number: 1, from: 2, to: 4, fences: vec![5, 300], earlier: vec![] }`
//! encodes as `[0x01, 0x01, 0x02, 0x04, 0x05, 0xAC, 0x02, 0x00]`.

use super::header::{put_varint, FenceHeader, HeaderError, Reader, RouteHeader};
use crate::hash::Hasher;
use crate::ParamError;

/// Record key of every epoch fence, and of the epoch in the route state. It starts with a NUL
/// byte so no application key is likely to collide; a producer refuses to send a record with
/// this key (see the adapter).
pub const EPOCH_KEY: &[u8] = b"\0keyshift-epoch";

/// Name used in decoding errors of the epoch value.
pub const EPOCH_STATE: &str = "keyshift-routes epoch value";

/// The set index of a route header that an epoch puts on a key whose home changed.
pub const EPOCH_SET_INDEX: u32 = 0;

/// A completed growth of the topic's active partitions from `from` to `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Epoch {
    /// 1 for the first growth, then one more per growth.
    pub number: u32,
    /// Active partitions before.
    pub from: u32,
    /// Active partitions after.
    pub to: u32,
    /// Per old partition (index = partition, `from` of them): the offset of its last epoch
    /// fence, which records of keys homed there before wait for.
    pub fences: Vec<i64>,
    /// The active partition counts before `from`, oldest first (empty for the first epoch).
    pub earlier: Vec<u32>,
}

impl Epoch {
    /// The header every record of `key` carries in this epoch: `None` when its home did not
    /// change, else the barrier of its old home.
    /// (A key whose home changed in an earlier epoch only waits on its own partition's epoch
    /// fence; see the module docs.)
    #[inline]
    pub fn header(&self, hasher: Hasher, key: &[u8]) -> Option<RouteHeader> {
        let h = hasher.positive_hash(key);
        let (old, new) = (h % self.from, h % self.to);
        let moved = old != new || self.earlier.iter().any(|&n| h % n != new);
        moved.then(|| RouteHeader {
            set_index: EPOCH_SET_INDEX,
            from_partition: old,
            fence_offset: self.fences[old as usize],
        })
    }

    /// The encoded route-state value.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + 5 * self.fences.len());
        out.push(super::header::VERSION);
        put_varint(&mut out, u64::from(self.number));
        put_varint(&mut out, u64::from(self.from));
        put_varint(&mut out, u64::from(self.to));
        for &f in &self.fences {
            debug_assert!(f >= 0, "negative fence offset");
            put_varint(&mut out, f as u64);
        }
        put_varint(&mut out, self.earlier.len() as u64);
        for &n in &self.earlier {
            put_varint(&mut out, u64::from(n));
        }
        out
    }

    /// Decodes a value written by [`Epoch::encode`]; an epoch that does not grow, or whose
    /// fence count is not its old partition count, is refused like a malformed one.
    pub fn decode(bytes: &[u8]) -> Result<Self, HeaderError> {
        let mut r = Reader::new(EPOCH_STATE, bytes)?;
        let number = r.u32("number")?;
        let from = r.u32("from")?;
        let to = r.u32("to")?;
        if from == 0 || to <= from {
            return Err(HeaderError::Invalid {
                header: EPOCH_STATE,
                reason: format!("partition counts must grow from at least 1, got {from} → {to}"),
            });
        }
        let mut fences = Vec::with_capacity(counted(&r, from, "fence_offset")?);
        for _ in 0..from {
            let raw = r.u64("fence_offset")?;
            fences.push(i64::try_from(raw).map_err(|_| HeaderError::NegativeOffset(raw as i64))?);
        }
        let count = r.u32("earlier")?;
        let mut earlier = Vec::with_capacity(counted(&r, count, "earlier")?);
        for _ in 0..count {
            let n = r.u32("earlier")?;
            if n == 0 {
                return Err(HeaderError::Invalid {
                    header: EPOCH_STATE,
                    reason: "an earlier partition count is 0".into(),
                });
            }
            earlier.push(n);
        }
        r.finish()?;
        Ok(Self {
            number,
            from,
            to,
            fences,
            earlier,
        })
    }
}

/// `count` varints of `field` follow: each takes at least one byte, so a count beyond the bytes
/// left is truncated input — checked before anything is reserved, so a hostile count cannot
/// reserve memory.
fn counted(r: &Reader<'_>, count: u32, field: &'static str) -> Result<usize, HeaderError> {
    if count as usize > r.remaining() {
        return Err(HeaderError::Truncated {
            header: EPOCH_STATE,
            field,
        });
    }
    Ok(count as usize)
}

/// Whether `key`'s home differs between `from` and `to` partitions.
#[inline]
pub fn remaps(hasher: Hasher, key: &[u8], from: u32, to: u32) -> bool {
    let h = hasher.positive_hash(key);
    h % from != h % to
}

/// One epoch fence to write: a record of [`EPOCH_KEY`] with value
/// [`super::FENCE_VALUE`], header [`super::FENCE_HEADER`] = `header` and, if set,
/// [`super::ROUTE_HEADER`] = `route` (the previous epoch's barrier it chains to).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochFence {
    /// The old partition it goes to.
    pub partition: u32,
    /// Its fence header: set index = the new epoch's number, to = its own partition.
    pub header: FenceHeader,
    /// The previous epoch's fence it waits for, if any.
    pub route: Option<RouteHeader>,
}

/// A growth in progress: the epoch fences to write, and their offsets as they are
/// acknowledged. The adapter writes every fence (in order per partition, through one
/// idempotent producer, after every record already sent), holds the records of keys whose home
/// changes ([`Growth::remaps`]) meanwhile, and reports each offset; the last report yields the
/// [`Epoch`].
#[derive(Debug, Clone)]
pub struct Growth {
    number: u32,
    from: u32,
    to: u32,
    earlier: Vec<u32>,
    fences: Vec<EpochFence>,
    offsets: Vec<Option<i64>>,
}

impl Growth {
    /// Plans the growth from `from` to `to` active partitions after `previous` (the epoch in
    /// force, whose `to` must be `from`).
    pub fn start(previous: Option<&Epoch>, from: u32, to: u32) -> Result<Self, ParamError> {
        if from == 0 || to <= from {
            return Err(ParamError::new(
                "partitions",
                format!(
                    "a topic can only grow: {to} partitions is not more than the {from} in use"
                ),
            ));
        }
        if let Some(p) = previous {
            if p.to != from {
                return Err(ParamError::new(
                    "epoch",
                    format!(
                        "the epoch in force homes keys on {} partitions, not {from}",
                        p.to
                    ),
                ));
            }
        }
        let number = previous.map_or(1, |p| p.number.saturating_add(1));
        let mut fences = Vec::with_capacity(from as usize);
        for q in 0..from {
            let header = FenceHeader {
                set_index: number,
                to_partition: q,
            };
            let mut chained = false;
            if let Some(p) = previous {
                let g = gcd(p.from, p.to);
                for pre in (q % g..p.from).step_by(g as usize) {
                    if pre != q {
                        chained = true;
                        fences.push(EpochFence {
                            partition: q,
                            header,
                            route: Some(RouteHeader {
                                set_index: EPOCH_SET_INDEX,
                                from_partition: pre,
                                fence_offset: p.fences[pre as usize],
                            }),
                        });
                    }
                }
            }
            if !chained {
                fences.push(EpochFence {
                    partition: q,
                    header,
                    route: None,
                });
            }
        }
        let offsets = vec![None; fences.len()];
        let earlier = previous.map_or_else(Vec::new, |p| {
            let mut e = p.earlier.clone();
            e.push(p.from);
            e
        });
        Ok(Self {
            number,
            from,
            to,
            earlier,
            fences,
            offsets,
        })
    }

    /// The fences to write, in order (grouped by partition, ascending).
    pub fn fences(&self) -> &[EpochFence] {
        &self.fences
    }

    /// Active partitions before and after.
    pub fn counts(&self) -> (u32, u32) {
        (self.from, self.to)
    }

    /// The new epoch's number.
    pub fn number(&self) -> u32 {
        self.number
    }

    /// Whether `key`'s home changes in this growth (its records wait until it completes).
    pub fn remaps(&self, hasher: Hasher, key: &[u8]) -> bool {
        remaps(hasher, key, self.from, self.to)
    }

    /// Fence `index` (of [`Growth::fences`]) was written at `offset`. Returns the epoch once
    /// every fence is acknowledged; a negative offset or an index out of range is ignored.
    pub fn acked(&mut self, index: usize, offset: i64) -> Option<Epoch> {
        if offset < 0 {
            return None;
        }
        *self.offsets.get_mut(index)? = Some(offset);
        if self.offsets.iter().any(Option::is_none) {
            return None;
        }
        let mut fences = vec![-1i64; self.from as usize];
        for (f, o) in self.fences.iter().zip(&self.offsets) {
            let slot = &mut fences[f.partition as usize];
            *slot = (*slot).max(o.expect("all acknowledged"));
        }
        Some(self.epoch_with(fences))
    }

    /// The epoch this growth yields with the barrier `fences` (index = old partition).
    /// Coordinated producers each write their own epoch fences and the decider combines their
    /// barriers with [`max_fences`] before it commits this.
    pub fn epoch_with(&self, fences: Vec<i64>) -> Epoch {
        Epoch {
            number: self.number,
            from: self.from,
            to: self.to,
            fences,
            earlier: self.earlier.clone(),
        }
    }
}

/// Per old partition, the highest of several producers' epoch fence offsets: the barrier that
/// is behind every one of their records there (each wrote its fences after its own records,
/// and every epoch fence has the same key, so a consumer passes them in offset order). `None`
/// unless every list has `from` entries.
pub fn max_fences(from: u32, per_member: &[Vec<i64>]) -> Option<Vec<i64>> {
    let mut out = vec![-1i64; from as usize];
    for fences in per_member {
        if fences.len() != out.len() {
            return None;
        }
        for (slot, &f) in out.iter_mut().zip(fences) {
            *slot = (*slot).max(f);
        }
    }
    Some(out)
}

/// The share of keys (of uniformly spread hashes) whose home changes from `from` to `to`
/// partitions: exact over one period of both remainders (`lcm`), or over its first ten
/// million hashes when the period is longer (then within about 0.03 %).
pub fn remapped_share(from: u32, to: u32) -> f64 {
    if from == 0 || to == 0 {
        return 0.0;
    }
    let lcm = u64::from(from) / u64::from(gcd(from, to)) * u64::from(to);
    let n = lcm.min(10_000_000);
    let same = (0..n)
        .filter(|h| h % u64::from(from) == h % u64::from(to))
        .count();
    1.0 - same as f64 / n as f64
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epoch_of(growth: &mut Growth, base: i64) -> Epoch {
        let n = growth.fences().len();
        let mut out = None;
        for i in 0..n {
            out = growth.acked(i, base + i as i64);
        }
        out.expect("every fence acknowledged")
    }

    #[test]
    fn remapped_share_counts_the_keys_whose_home_changes() {
        assert_eq!(remapped_share(8, 16), 0.5);
        assert_eq!(remapped_share(8, 8), 0.0);
        assert!(
            (remapped_share(10, 16) - 0.875).abs() < 1e-9,
            "{}",
            remapped_share(10, 16)
        );
        // Against real keys.
        let h = Hasher::Murmur2;
        let moved = (0..20_000)
            .filter(|i| remaps(h, format!("k{i}").as_bytes(), 10, 16))
            .count() as f64
            / 20_000.0;
        assert!((moved - remapped_share(10, 16)).abs() < 0.01, "{moved}");
    }

    #[test]
    fn test_vector_and_round_trip() {
        let e = Epoch {
            number: 1,
            from: 2,
            to: 4,
            fences: vec![5, 300],
            earlier: vec![],
        };
        assert_eq!(e.encode(), [0x01, 0x01, 0x02, 0x04, 0x05, 0xAC, 0x02, 0x00]);
        assert_eq!(Epoch::decode(&e.encode()), Ok(e));
        let later = Epoch {
            number: 3,
            from: 6,
            to: 9,
            fences: vec![1, 2, 3, 4, 5, i64::MAX],
            earlier: vec![2, 4],
        };
        assert_eq!(Epoch::decode(&later.encode()), Ok(later));
    }

    #[test]
    fn bad_values_are_named_errors() {
        assert!(matches!(
            Epoch::decode(&[0x01, 0x01, 0x04, 0x02]),
            Err(HeaderError::Invalid { .. })
        ));
        assert_eq!(
            Epoch::decode(&[0x01, 0x01, 0x02, 0x04, 0x05]),
            Err(HeaderError::Truncated {
                header: EPOCH_STATE,
                field: "fence_offset"
            })
        );
        // A huge partition count with few bytes is refused before anything is reserved.
        assert!(matches!(
            Epoch::decode(&[0x01, 0x01, 0xff, 0xff, 0xff, 0xff, 0x0e, 0x02]),
            Err(HeaderError::Invalid { .. }) | Err(HeaderError::Truncated { .. })
        ));
        assert_eq!(
            Epoch::decode(&[0x01, 0x01, 0x01, 0x02, 0x05, 0x00, 0x00]),
            Err(HeaderError::TrailingBytes {
                header: EPOCH_STATE,
                extra: 1
            })
        );
        assert!(matches!(
            Epoch::decode(&[0x01, 0x01, 0x01, 0x02, 0x05, 0x01, 0x00]),
            Err(HeaderError::Invalid { .. })
        ));
    }

    #[test]
    fn only_remapped_keys_carry_the_barrier_of_their_old_home() {
        let mut g = Growth::start(None, 8, 16).unwrap();
        assert_eq!(g.fences().len(), 8, "one fence per old partition");
        assert!(g.fences().iter().all(|f| f.route.is_none()));
        let e = epoch_of(&mut g, 100);
        let h = Hasher::Murmur2;
        let (mut moved, mut stayed) = (0, 0);
        for i in 0..2000 {
            let key = format!("location_{i}");
            let (old, new) = (
                h.partition(key.as_bytes(), 8),
                h.partition(key.as_bytes(), 16),
            );
            match e.header(h, key.as_bytes()) {
                None => {
                    assert_eq!(old, new);
                    stayed += 1;
                }
                Some(r) => {
                    assert_ne!(old, new);
                    assert_eq!(r.from_partition, old);
                    assert_eq!(r.fence_offset, 100 + i64::from(old));
                    assert_eq!(r.set_index, EPOCH_SET_INDEX);
                    moved += 1;
                }
            }
        }
        // Doubling moves about half of the keys.
        assert!(
            (800..1200).contains(&moved),
            "{moved} moved, {stayed} stayed"
        );
    }

    #[test]
    fn a_second_epoch_chains_to_every_old_home_of_the_keys_it_receives() {
        let h = Hasher::Murmur2;
        let mut first = Growth::start(None, 8, 12).unwrap();
        let e1 = epoch_of(&mut first, 1000);
        let mut second = Growth::start(Some(&e1), 12, 20).unwrap();
        assert_eq!(second.number(), 2);
        // For every key that changed home in epoch 1, the fences on its epoch-1 home include one
        // waiting for the epoch-1 barrier of its original home.
        for i in 0..3000 {
            let key = format!("k{i}");
            let Some(r) = e1.header(h, key.as_bytes()) else {
                continue;
            };
            let q = h.partition(key.as_bytes(), 12);
            assert!(
                second
                    .fences()
                    .iter()
                    .any(|f| f.partition == q && f.route == Some(r)),
                "key {key}: no fence on {q} waits for {r:?}"
            );
        }
        // No fence waits for its own partition, and every old partition gets one.
        assert!(second
            .fences()
            .iter()
            .all(|f| f.route.is_none_or(|r| r.from_partition != f.partition)));
        for q in 0..12 {
            assert!(second.fences().iter().any(|f| f.partition == q));
        }
        // The barrier of a partition is its last fence (the highest offset).
        let e2 = epoch_of(&mut second, 5000);
        for q in 0..12u32 {
            let last = second
                .fences()
                .iter()
                .rposition(|f| f.partition == q)
                .unwrap();
            assert_eq!(e2.fences[q as usize], 5000 + last as i64);
        }
    }

    #[test]
    fn a_key_that_moved_in_an_earlier_epoch_waits_on_its_own_partitions_fence() {
        let h = Hasher::Murmur2;
        let e1 = epoch_of(&mut Growth::start(None, 4, 6).unwrap(), 100);
        let e2 = epoch_of(&mut Growth::start(Some(&e1), 6, 7).unwrap(), 500);
        assert_eq!(e2.earlier, vec![4]);
        let (mut own, mut never) = (0, 0);
        for i in 0..3000 {
            let key = format!("k{i}");
            let b = key.as_bytes();
            let homes = [4, 6, 7].map(|n| h.partition(b, n));
            match e2.header(h, b) {
                None => {
                    assert!(
                        homes.iter().all(|&p| p == homes[2]),
                        "{key} moved: {homes:?}"
                    );
                    never += 1;
                }
                Some(r) if homes[1] == homes[2] => {
                    assert_ne!(homes[0], homes[1]);
                    assert_eq!(r.from_partition, homes[2], "its own partition");
                    assert_eq!(r.fence_offset, e2.fences[homes[2] as usize]);
                    own += 1;
                }
                Some(r) => assert_eq!(r.from_partition, homes[1]),
            }
        }
        assert!(
            own > 0 && never > 0,
            "{own} own-partition barriers, {never} never moved"
        );
    }

    #[test]
    fn growth_is_refused_unless_it_grows_from_the_epoch_in_force() {
        assert!(Growth::start(None, 8, 8).is_err());
        assert!(Growth::start(None, 0, 4).is_err());
        let e = Epoch {
            number: 1,
            from: 4,
            to: 8,
            fences: vec![0; 4],
            earlier: vec![],
        };
        assert!(Growth::start(Some(&e), 4, 16).is_err());
        assert!(Growth::start(Some(&e), 8, 16).is_ok());
    }

    #[test]
    fn acknowledgements_out_of_range_or_negative_are_ignored() {
        let mut g = Growth::start(None, 2, 3).unwrap();
        assert_eq!(g.acked(7, 1), None);
        assert_eq!(g.acked(0, -1), None);
        assert_eq!(g.acked(0, 4), None);
        assert_eq!(
            g.acked(1, 9),
            Some(Epoch {
                number: 1,
                from: 2,
                to: 3,
                fences: vec![4, 9],
                earlier: vec![],
            })
        );
    }
}
