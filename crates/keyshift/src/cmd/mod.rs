//! One module per subcommand: its flags, their resolution into core configuration, and its
//! output. Later subcommands (gateway, worker, experiment, proxy, lag, ...) slot in here.

pub mod simulate;
pub mod strategy_flags;
