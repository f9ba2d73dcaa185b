//! The `keyshift` command line: thin wiring from flags to the libraries.
//!
//! Each subcommand lives in its own module under [`cmd`] with three steps: clap parses raw
//! flags (rejecting malformed values with the flag's name), the module resolves them into the
//! core's typed configuration (which validates once more, naming the parameter), and a printer
//! renders what the library returned. Usage errors exit with status 2, like clap's own.

mod cmd;
mod exit;
mod http;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// keyshift: keep skewed keyed Kafka workloads fast without breaking per-key order.
#[derive(Debug, Parser)]
#[command(name = "keyshift", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Simulate producer → partitions → consumers for several strategies, side by side.
    Simulate(cmd::simulate::SimulateArgs),
    /// Run the embedded Kafka-compatible broker until interrupted.
    Broker(cmd::broker::BrokerArgs),
    /// Run loadgen → producer → broker → workers for each strategy and compare them.
    Experiment(cmd::experiment::ExperimentArgs),
    /// Grow a keyed topic's partitions without breaking per-key order.
    Expand(cmd::expand::ExpandArgs),
    /// HTTP gateway: POST /new {"key","body"} → keyshift producer → Kafka.
    Gateway(cmd::gateway::GatewayArgs),
    /// Open-loop load generator (the seed's client) to the gateway or straight to Kafka.
    Loadgen(cmd::loadgen::LoadgenArgs),
    /// Ordered consumer with a simulated service time and /metrics (a group member).
    Worker(cmd::worker::WorkerArgs),
    /// Transparent Kafka protocol proxy that decodes every request and exports metrics.
    Proxy(cmd::proxy::ProxyArgs),
    /// Consumer-group lag in records and seconds, with Burrow-style status.
    Lag(cmd::lag::LagArgs),
    /// Scale consumers on lag, like Kubernetes' HPA (dry-run, Kubernetes, or metrics for KEDA).
    Autoscale(cmd::autoscale::AutoscaleArgs),
    /// Record tracing tools: aggregate `_tracing` events, export traces from Jaeger.
    Trace(cmd::trace::TraceArgs),
    /// Live web dashboard: partitions, hot keys, moves, lag, consumers, autoscaler, proxy.
    Dashboard(cmd::dashboard::DashboardArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Simulate(args) => cmd::simulate::run(args),
        Command::Broker(args) => cmd::broker::run(args),
        Command::Experiment(args) => cmd::experiment::run(args),
        Command::Expand(args) => cmd::expand::run(args),
        Command::Gateway(args) => cmd::gateway::run(args),
        Command::Loadgen(args) => cmd::loadgen::run(args),
        Command::Worker(args) => cmd::worker::run(args),
        Command::Proxy(args) => cmd::proxy::run(args),
        Command::Lag(args) => cmd::lag::run(args),
        Command::Autoscale(args) => cmd::autoscale::run(args),
        Command::Trace(args) => cmd::trace::run(args),
        Command::Dashboard(args) => cmd::dashboard::run(args),
    };
    exit::code(result)
}
