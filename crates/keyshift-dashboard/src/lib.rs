//! keyshift's live web dashboard: what the other subcommands measure, on one page.
//!
//! The pieces, from the outside in:
//! - [`server`]: [`Dashboard`] binds, then runs a round every interval and serves the page,
//!   its server-sent event stream, `/healthz` and its own `/metrics`;
//! - [`kafka`]: background threads that read the topic's end offsets and the groups' lag
//!   (`keyshift_kafka::lag`, the rules of `keyshift lag`) and tail the topic for fence records;
//! - [`scrape`]: the `/metrics` endpoints of gateways, workers, proxies and autoscalers,
//!   recognised by the metric names they export;
//! - [`prom`]: the Prometheus text parser those scrapes go through;
//! - [`background`]: the dashboard served inside another command (`keyshift experiment
//!   --dashboard`), following its runs' topics;
//! - [`board`]: the state — readings in, a snapshot, a bounded history and events out — with
//!   no I/O, so every derivation is unit-tested.
//!
//! The page (`src/page/`) is embedded in the binary: plain HTML, CSS and JavaScript whose
//! charts are hand-written SVG, so nothing is fetched from the network at run time.

pub mod background;
pub mod board;
pub mod kafka;
pub mod prom;
pub mod scrape;
pub mod server;

pub use background::Background;
pub use kafka::KafkaOptions;
pub use server::{Dashboard, DashboardConfig, DashboardError, Source};
