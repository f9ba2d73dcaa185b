//! The route table: where each routed (hot) key goes instead of its hash partition.
//!
//! Ordered strategies keep one entry per key they have moved away from its hash ("home")
//! partition. Every record looks its key up here, so the lookup takes `&[u8]` and never
//! allocates; only inserting a new key copies its bytes. The table holds at most `capacity`
//! keys, so its memory is bounded by configuration, never by the key cardinality: when it is
//! full, a strategy must send a key home (remove it) before it can route another.
//!
//! Keys are filed under [`key_hash`], Kafka's murmur2 of the key, which a strategy computes
//! anyway for the home partition of the keys it does not route: with
//! [`RouteTable::partition_hashed`] a record costs one hash for both the lookup and the
//! fallback. Entries are still matched on the exact key bytes, so two keys whose hashes collide
//! never share a route (a shared route would move one key without fencing it).

use hashbrown::HashTable;

use crate::hash::murmur2;
use crate::ParamError;

/// The hash the table files `key` under: Kafka's murmur2 as an unsigned number, so
/// `(key_hash(key) & 0x7fff_ffff) % partitions` is the key's Kafka partition.
#[inline]
pub fn key_hash(key: &[u8]) -> u32 {
    murmur2(key) as u32
}

/// Spreads a 32-bit hash over 64 bits: the table picks a slot from the low bits and filters
/// candidates with the top 7, and a multiply by an odd constant feeds both from all 32.
#[inline]
fn spread(hash: u32) -> u64 {
    u64::from(hash).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// Where a routed key goes, and since when.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Route {
    /// Partition every record of the key goes to.
    pub partition: u32,
    /// When (seconds) the key started going there; strategies use it for their cooldown.
    pub since: f64,
}

#[derive(Debug, Clone)]
struct Entry {
    hash: u32,
    key: Box<[u8]>,
    route: Route,
}

/// Bounded map from key to [`Route`]; keys absent from it follow the strategy's hash.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: HashTable<Entry>,
    capacity: usize,
}

/// The route table was full, so a new key could not be routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("route table is full ({capacity} keys)")]
pub struct RouteTableFull {
    /// The table's capacity.
    pub capacity: usize,
}

impl RouteTable {
    /// An empty table holding at most `capacity` (> 0) keys.
    pub fn new(capacity: usize) -> Result<Self, ParamError> {
        if capacity == 0 {
            return Err(ParamError::new(
                "route-capacity",
                "must be at least 1 (the number of hot keys that can be routed)",
            ));
        }
        Ok(Self {
            // Reserve up front so the table never rehashes while records flow.
            routes: HashTable::with_capacity(capacity),
            capacity,
        })
    }

    #[inline]
    fn find(&self, key: &[u8], hash: u32) -> Option<&Entry> {
        self.routes
            .find(spread(hash), |e| e.hash == hash && *e.key == *key)
    }

    /// The route of `key`, if it is routed.
    #[inline]
    pub fn get(&self, key: &[u8]) -> Option<Route> {
        self.find(key, key_hash(key)).map(|e| e.route)
    }

    /// The partition of `key`, if it is routed.
    #[inline]
    pub fn partition(&self, key: &[u8]) -> Option<u32> {
        self.partition_hashed(key, key_hash(key))
    }

    /// The partition of `key` whose [`key_hash`] the caller already computed (`hash`), if it is
    /// routed: the per-record lookup without hashing the key a second time. A `hash` that is
    /// not `key_hash(key)` finds nothing.
    #[inline]
    pub fn partition_hashed(&self, key: &[u8], hash: u32) -> Option<u32> {
        debug_assert_eq!(hash, key_hash(key), "hash must be key_hash(key)");
        self.find(key, hash).map(|e| e.route.partition)
    }

    /// Routes `key` to `partition` from `now` on; returns the previous route, if any.
    ///
    /// Updating an existing key always succeeds; a new key needs a free slot.
    pub fn insert(
        &mut self,
        key: &[u8],
        partition: u32,
        now: f64,
    ) -> Result<Option<Route>, RouteTableFull> {
        let route = Route {
            partition,
            since: now,
        };
        let hash = key_hash(key);
        if let Some(existing) = self
            .routes
            .find_mut(spread(hash), |e| e.hash == hash && *e.key == *key)
        {
            return Ok(Some(std::mem::replace(&mut existing.route, route)));
        }
        if self.routes.len() >= self.capacity {
            return Err(RouteTableFull {
                capacity: self.capacity,
            });
        }
        let entry = Entry {
            hash,
            key: key.into(),
            route,
        };
        self.routes
            .insert_unique(spread(hash), entry, |e| spread(e.hash));
        Ok(None)
    }

    /// Removes `key` (it goes back to its hash partition); returns its route, if it had one.
    pub fn remove(&mut self, key: &[u8]) -> Option<Route> {
        let hash = key_hash(key);
        match self
            .routes
            .find_entry(spread(hash), |e| e.hash == hash && *e.key == *key)
        {
            Ok(entry) => Some(entry.remove().0.route),
            Err(_) => None,
        }
    }

    /// Number of routed keys (never above [`RouteTable::capacity`]).
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether no key is routed.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Whether a new key can be routed only after another is removed.
    pub fn is_full(&self) -> bool {
        self.routes.len() >= self.capacity
    }

    /// The most keys the table holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Every routed key with its route, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], Route)> + '_ {
        self.routes.iter().map(|e| (&*e.key, e.route))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_capacity_is_rejected() {
        assert_eq!(RouteTable::new(0).unwrap_err().name, "route-capacity");
    }

    #[test]
    fn full_table_refuses_new_keys_but_updates_known_ones() {
        let mut t = RouteTable::new(2).unwrap();
        assert_eq!(t.insert(b"a", 1, 0.0), Ok(None));
        assert_eq!(t.insert(b"b", 2, 0.0), Ok(None));
        assert!(t.is_full());
        assert_eq!(t.insert(b"c", 3, 1.0), Err(RouteTableFull { capacity: 2 }));
        let prev = t.insert(b"a", 4, 2.0).unwrap().unwrap();
        assert_eq!(prev.partition, 1);
        assert_eq!(
            t.get(b"a"),
            Some(Route {
                partition: 4,
                since: 2.0
            })
        );
        assert_eq!(t.remove(b"b").map(|r| r.partition), Some(2));
        assert_eq!(t.insert(b"c", 3, 3.0), Ok(None));
        assert_eq!(t.len(), 2);
        assert_eq!(t.partition(b"zz"), None);
    }

    #[test]
    fn colliding_hashes_keep_separate_routes() {
        // Two keys filed under the same slot and hash must still be told apart by their bytes:
        // plant an entry whose stored hash is another key's.
        let mut t = RouteTable::new(4).unwrap();
        t.insert(b"a", 1, 0.0).unwrap();
        let hash = key_hash(b"a");
        t.routes.insert_unique(
            spread(hash),
            Entry {
                hash,
                key: b"impostor"[..].into(),
                route: Route {
                    partition: 3,
                    since: 0.0,
                },
            },
            |e| spread(e.hash),
        );
        assert_eq!(t.partition_hashed(b"a", hash), Some(1));
        assert_eq!(
            t.find(b"impostor", hash).map(|e| e.route.partition),
            Some(3)
        );
        assert_eq!(t.remove(b"a").map(|r| r.partition), Some(1));
        assert_eq!(t.partition_hashed(b"a", hash), None);
        assert_eq!(
            t.find(b"impostor", hash).map(|e| e.route.partition),
            Some(3)
        );
    }

    #[test]
    fn hashed_lookup_matches_plain_lookup() {
        let mut t = RouteTable::new(64).unwrap();
        for n in 0..64u32 {
            t.insert(format!("location_{n}").as_bytes(), n % 7, 0.0)
                .unwrap();
        }
        for n in 0..200u32 {
            let key = format!("location_{n}");
            let key = key.as_bytes();
            let expected = (n < 64).then_some(n % 7);
            assert_eq!(t.partition(key), expected);
            assert_eq!(t.partition_hashed(key, key_hash(key)), expected);
            assert_eq!(
                (key_hash(key) & 0x7fff_ffff) % 13,
                crate::hash::kafka_partition(key, 13)
            );
        }
    }
}
