//! `keyshift trace`: tools around record tracing.
//!
//! - `aggregate` joins the SEND/ACK/CONSUME/COMMIT events in `_tracing` (written by keyshift's
//!   producer and worker, or by the Java kafka-tracing-interceptor) into the enriched records
//!   of kafka-tracing-aggregator on `_aggregatedTrace`, with latency histograms on `/metrics`.
//! - `export` pulls traces from a Jaeger query API and prints per-key and per-partition
//!   latency tables (the seed's analysis step).

use clap::{Args, Subcommand};

pub mod aggregate;
pub mod export;

/// Flags of `keyshift trace`.
#[derive(Debug, Args)]
pub struct TraceArgs {
    #[command(subcommand)]
    command: TraceCommand,
}

#[derive(Debug, Subcommand)]
enum TraceCommand {
    /// Join `_tracing` events into `_aggregatedTrace` records (kafka-tracing-aggregator).
    Aggregate(aggregate::AggregateArgs),
    /// Fetch traces from Jaeger and print per-key and per-partition latency tables.
    Export(export::ExportArgs),
}

/// Runs `keyshift trace <command>`.
pub fn run(args: TraceArgs) -> anyhow::Result<()> {
    match args.command {
        TraceCommand::Aggregate(args) => aggregate::run(args),
        TraceCommand::Export(args) => export::run(args),
    }
}
