//! One module per subcommand: its flags, their resolution into core configuration, and its
//! output. Later subcommands (gateway, worker, experiment, proxy, lag, ...) slot in here.

pub mod autoscale;
pub mod broker;
pub mod client_config;
pub mod dashboard;
pub mod expand;
pub mod experiment;
pub mod gateway;
pub mod lag;
pub mod loadgen;
pub mod proxy;
pub mod simulate;
pub mod strategy_flags;
pub mod table;
pub mod trace;
pub mod trace_flags;
pub mod worker;
pub mod workload_flags;
