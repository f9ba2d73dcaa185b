//! The fenced-migration protocol that keeps per-key order when a key changes partition.
//!
//! Producer side: the [`Migrator`] sees the partition a strategy chose for each record. When a
//! key's partition changes from A to B it asks for a fence record on A (header
//! [`FENCE_HEADER`]); once the fence's offset `f` is known, the key's records go to B carrying
//! a [`RouteHeader`] `{set, from A, fence f}` ([`ROUTE_HEADER`]). Records of other keys never
//! wait. A fence also carries the route header of the set it closes, so a set that never got a
//! record (A → B → C while the key's records were held) still orders C after A.
//!
//! Consumer side: the [`OrderGate`] releases a record of key K only when every earlier record
//! of K is processed: earlier ones in its own partition, and, for a routed record, everything
//! on A up to and including the fence (the group's committed offset of A is > f). It never lets
//! a partition commit past an unprocessed record, so crashes and rebalances redeliver parked
//! records and gate them again.
//!
//! Route state: with durable routes ([`Migrator::restore`]) every route change is a
//! [`RouteChange`] the adapter writes to a compacted topic before the new set's records go
//! ([`route_state`] has the value format), so a restarted producer continues each key's set.
//!
//! Many producers: [`control`] holds the records of the control log through which the
//! producers of one topic agree on one decider and on every move, and the rules each applies;
//! [`membership`] holds each member's own judgement of who is alive and when to claim;
//! [`coordinator`] is one member's side of a move (hold, own fence, ready, the decider's
//! commit or abort) around those rules.
//!
//! Growing the topic: [`epoch`] turns a change of the partition count into one fence per old
//! partition and a route header on the records of keys whose home changed.

pub mod control;
pub mod coordinator;
pub mod epoch;
mod gate;
mod header;
pub mod membership;
mod migrator;
pub mod route_state;

pub use gate::{GateRecord, Offered, OrderGate, ParkedKey, PassedFence, Released};
pub use header::{
    is_fence, FenceHeader, HeaderError, RouteHeader, FENCE_HEADER, FENCE_VALUE, ROUTE_HEADER,
};
pub use migrator::{Migrator, Step};
pub use route_state::{RouteChange, RouteEntry};
