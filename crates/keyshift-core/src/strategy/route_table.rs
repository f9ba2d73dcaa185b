//! The route table: where each routed (hot) key goes instead of its hash partition.
//!
//! Ordered strategies keep one entry per key they have moved away from its hash ("home")
//! partition. Every record looks its key up here, so the lookup takes `&[u8]` and never
//! allocates; only inserting a new key copies its bytes. The table holds at most `capacity`
//! keys, so its memory is bounded by configuration, never by the key cardinality: when it is
//! full, a strategy must send a key home (remove it) before it can route another.

use rustc_hash::FxHashMap;

use crate::ParamError;

/// Where a routed key goes, and since when.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Route {
    /// Partition every record of the key goes to.
    pub partition: u32,
    /// When (seconds) the key started going there; strategies use it for their cooldown.
    pub since: f64,
}

/// Bounded map from key to [`Route`]; keys absent from it follow the strategy's hash.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: FxHashMap<Box<[u8]>, Route>,
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
            routes: FxHashMap::with_capacity_and_hasher(capacity, Default::default()),
            capacity,
        })
    }

    /// The route of `key`, if it is routed.
    #[inline]
    pub fn get(&self, key: &[u8]) -> Option<Route> {
        self.routes.get(key).copied()
    }

    /// The partition of `key`, if it is routed.
    #[inline]
    pub fn partition(&self, key: &[u8]) -> Option<u32> {
        self.routes.get(key).map(|r| r.partition)
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
        if let Some(existing) = self.routes.get_mut(key) {
            return Ok(Some(std::mem::replace(existing, route)));
        }
        if self.routes.len() >= self.capacity {
            return Err(RouteTableFull {
                capacity: self.capacity,
            });
        }
        self.routes.insert(key.into(), route);
        Ok(None)
    }

    /// Removes `key` (it goes back to its hash partition); returns its route, if it had one.
    pub fn remove(&mut self, key: &[u8]) -> Option<Route> {
        self.routes.remove(key)
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
        self.routes.iter().map(|(k, r)| (&**k, *r))
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
}
