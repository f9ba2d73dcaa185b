//! The runtime of `keyshift experiment`, the real-broker counterpart of `keyshift simulate`:
//! for each chosen strategy in turn, open-loop load → keyshift producer(s) → Kafka → N ordered
//! workers on a fresh topic, gathered into one report. A library so that tests and other
//! programs run the same experiment the command does; the command parses flags into a
//! [`Plan`] and prints.
//!
//! - [`plan`]: the validated experiment;
//! - [`run`]: the orchestration (broker, topic, workers, producers, open-loop load, drain, lag
//!   sampling);
//! - [`report`]: the figures as data, the table's rows, the verdict and the JSON;
//! - [`html`]: the self-contained page with inline SVG plots;
//! - [`trace`]: with `--trace`, where each record's latency went (producer wait, broker,
//!   queueing, parked, service);
//! - [`loadgen`]: the open-loop load generator of `keyshift loadgen`, to the keyshift producer
//!   or to gateways over HTTP.

pub mod html;
pub mod loadgen;
pub mod plan;
pub mod report;
pub mod run;
pub mod trace;

pub use plan::Plan;
pub use report::ExperimentReport;
pub use run::{run, DashboardUnavailable};
