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
//!   on every move, and [`protocol::membership`] each one's judgement of who is alive.
//! - [`sim`] runs all of the above as a deterministic discrete-event simulation and reports
//!   latency, balance, migrations and order; [`stats`] holds the shared measures, and
//!   [`probe`] the payload experiments use to measure latency and check per-key order;
//!   [`serial`] checks that no key is processed by two workers at once; [`key_demand`]
//!   measures, from a running consumer, how many consumers each hot key needs.
//! - [`scaling`] decides how many consumers a group should run from its lag and rates (HPA
//!   rule or predictive, with the HPA's damping), and holds the closed-loop lag simulator
//!   that tests it.

pub mod error;
pub mod hash;
pub mod key_demand;
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
