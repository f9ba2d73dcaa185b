//! `keyshift trace` (being built).

/// Flags of `keyshift trace`.
#[derive(Debug, clap::Args)]
pub struct TraceArgs {}

/// Runs `keyshift trace`.
pub fn run(_args: TraceArgs) -> anyhow::Result<()> {
    anyhow::bail!("keyshift trace is being built")
}
