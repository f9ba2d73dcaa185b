//! The pure core of keyshift: every decision, no I/O, no async.
//!
//! A record's journey through the core, in the order the modules appear:
//!
//! - [`workload`] generates keys (`location_<n>`, Zipf exactly like Go's `rand.NewZipf`, the
//!   seed's targeted generator) on an open-loop [`workload::Schedule`].
//! - [`hash`] is Kafka's own default partitioner (murmur2, bit-exact with the Java client) and
//!   the seed's FNV-1a; cold keys land where any Kafka client would put them.
//! - [`sketch`] finds the hot keys: [`sketch::SpaceSaving`] (O(1) stream-summary) and the seed's
//!   [`sketch::LossyCounter`], both with a rate view that follows a shifting workload.
//! - [`strategy`] turns a key into a partition: `hash`, `slops`, `keyshift`, `pkg`,
//!   `unordered`, each behind the [`strategy::Strategy`] trait, with hot keys held in a
//!   [`strategy::RouteTable`].
//! - [`protocol`] keeps per-key order when a key moves: the producer side
//!   ([`protocol::Migrator`] decides when to write a fence and which records carry a
//!   [`protocol::RouteHeader`]) and the consumer side ([`protocol::OrderGate`] decides which
//!   records may be processed and how far each partition may commit); for several producers of
//!   one topic, [`protocol::control`] is the log through which they agree on one decider and
//!   on every move, and [`protocol::membership`] each one's judgement of who is alive;
//!   [`keystate`] decides when a worker's per-key state is current and when a redelivered
//!   record was already applied, so that state follows its key across migrations.
//! - [`sim`] runs all of the above as a deterministic discrete-event simulation and reports
//!   latency, balance, migrations and order; [`stats`] holds the shared measures, and
//!   [`probe`] the payload experiments use to measure latency and check per-key order;
//!   [`serial`] checks that no key is processed by two workers at once; [`key_demand`]
//!   measures, from a running consumer, how many consumers each hot key needs.
//! - [`scaling`] decides how many consumers a group should run from its lag and rates (HPA
//!   rule or predictive, with the HPA's damping), and holds the closed-loop lag simulator
//!   that tests it.
//!
//! # Example: a moved key keeps its order
//!
//! Key `k` had a record at offset 0 of partition 0, then moved to partition 1: the producer
//! wrote a fence at offset 1 of partition 0 and sent the key's next record to partition 1 with
//! a route header naming that fence. A consumer that sees the new record first must not
//! process it before the old one — the gate holds it until partition 0's committed offset
//! passes the fence:
//!
//! ```
//! use keyshift_core::protocol::{GateRecord, OrderGate, RouteHeader};
//!
//! let record = |partition, offset, route, fence| GateRecord {
//!     partition,
//!     offset,
//!     key: Some(b"k".to_vec().into_boxed_slice()),
//!     route,
//!     fence,
//! };
//! let moved = RouteHeader { set_index: 1, from_partition: 0, fence_offset: 1 };
//! let mut gate = OrderGate::new();
//! gate.assign(0, 0);
//! gate.assign(1, 0);
//!
//! // The new partition's record arrives first: it parks.
//! gate.offer(record(1, 0, Some(moved), false));
//! assert!(gate.poll().is_none());
//!
//! // The old record is released and processed, the fence arrives...
//! gate.offer(record(0, 0, None, false));
//! let old = gate.poll().expect("the old record goes first");
//! assert_eq!((old.partition, old.offset), (0, 0));
//! gate.processed(0, 0);
//! gate.offer(record(0, 1, None, true));
//! assert!(gate.poll().is_none(), "still parked: the fence is not committed yet");
//!
//! // ...and once partition 0 is committed past the fence, the new record may run.
//! gate.observe_committed(0, 2);
//! let new = gate.poll().expect("released after the barrier");
//! assert_eq!((new.partition, new.offset, new.parked), (1, 0, true));
//! ```

pub mod error;
pub mod hash;
pub mod key_demand;
pub mod keystate;
pub mod lag;
pub mod probe;
pub mod protocol;
pub mod scaling;
pub mod serial;
pub mod sim;
pub mod sketch;
pub mod stats;
pub mod strategy;
pub mod workload;

pub use error::ParamError;
